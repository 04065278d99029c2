"""``mulfree formal``: the formal proofs of ``rtl/`` (``verify/formal.py``), one line each.

Runs every property (or those ``--only`` names) with yowasp-sby and prints its name, mode,
depth, status and seconds; a property that does not pass prints where its counterexample
trace and its log are. Exit status 1 when any property does not pass.
"""

import sys
import time

from ..params.safe_io import check_output_dir
from .options import UsageError


__all__ = ["add_parser", "command"]


def add_parser(subparsers):
    """Add the ``formal`` command to the ``mulfree`` parser."""
    p = subparsers.add_parser(
        "formal", help="prove the PE operators, post-processing and the bus rules (yowasp-sby)",
        description="Formal proofs with yowasp-sby and a pip solver: every PE operator and "
                    "post-processing against docs/numerics.md for all inputs at the shipped "
                    "widths, the AXI4-Lite register block and the core's m_axis against "
                    "docs/interface.md. docs/verification.md lists the properties.")
    p.add_argument("--list", action="store_true", help="list the properties and exit")
    p.add_argument("--only", nargs="+", default=None, metavar="NAME",
                   help="run only these properties (default: all)")
    p.add_argument("--out", default="out/formal", metavar="DIR",
                   help="work folder: each property's RTLIL, .sby and traces (default: "
                        "out/formal)")
    p.add_argument("--solver", default=None, metavar="NAME",
                   help="smtbmc solver: boolector or z3 (default: boolector)")
    p.set_defaults(func=command)
    return p


def command(args):
    """Run the selected properties; 0 when all pass, 1 otherwise."""
    from ..verify import formal
    try:
        props = formal.select(args.only)
    except ValueError as e:
        raise UsageError(f"--only: {e}") from None
    solver = formal.DEFAULT_SOLVER if args.solver is None else args.solver
    if solver not in formal.SOLVERS:
        raise UsageError(f"--solver must be one of {', '.join(formal.SOLVERS)}, not {solver!r}")
    if args.list:
        for prop in props:
            mode, depth, description = formal.describe(prop)
            print(f"{prop.name:24} {mode:5} {depth:3}  {description}")
        return 0
    out = check_output_dir(args.out, "--out")
    out.mkdir(parents=True, exist_ok=True)

    def report(r):
        print(f"{r.name:24} {r.mode:5} depth {r.depth:3}  {r.status:7} {r.seconds:7.1f} s",
              flush=True)
        if r.status != "PASS":
            print(f"    trace: {r.trace or '(none)'}\n    log:   {r.log or '(none)'}",
                  flush=True)

    start = time.monotonic()
    try:
        results = formal.run_properties(props, out, solver=solver, report=report)
    except formal.FormalToolMissing as e:
        print(f"mulfree formal: {e}", file=sys.stderr)
        return 1
    failed = [r for r in results if r.status != "PASS"]
    print(f"{len(results) - len(failed)}/{len(results)} passed in "
          f"{time.monotonic() - start:.1f} s")
    return 1 if failed else 0
