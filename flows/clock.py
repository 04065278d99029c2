"""The core clock an images/s figure assumes, and where that clock came from.

Every images/s figure of the core alone is ``clock / cycles per image``: the cycles are
measured (the core's counters), the clock is either assumed (:data:`ASSUMED_MHZ`, the Zynq
builds' default ``FCLK_CLK0``; not a timing result), given (``--clock-mhz``), or read from a
place-and-route result (``--clock-from``: the JSON of ``mulfree bench pnr``, an ECP5 build
folder's ``ecp5_build.json``, or a Vivado build folder Vivado has run in: the clock its
``timing.rpt``'s worst path meets), matched to the core by its top module's name.
"""

import json
import math
from pathlib import Path

from .options import UsageError


__all__ = ["ASSUMED_MHZ", "add_clock_options", "check_clock_options", "read_clock_file",
           "core_clock", "clock_note"]

#: The clock assumed when none is given: the Zynq builds' default FCLK_CLK0, not measured.
ASSUMED_MHZ = 100.0
#: Largest file ``--clock-from`` reads.
_MAX_BYTES = 16 << 20


def add_clock_options(parser):
    """``--clock-mhz`` and ``--clock-from`` (one or the other)."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("--clock-mhz", dest="core_clock_mhz", type=float, default=None,
                   metavar="MHZ",
                   help=f"the core clock images/s are given at (default: {ASSUMED_MHZ:g} MHz, "
                        f"assumed, not measured)")
    g.add_argument("--clock-from", dest="clock_from", default=None, metavar="FILE",
                   help="the core clock from a place-and-route result: the JSON of mulfree "
                        "bench pnr --json, an ECP5 build folder (or its ecp5_build.json), or "
                        "a Vivado build folder with timing.rpt; the entry for the core run is "
                        "used")


def read_clock_file(path):
    """``{core top name: {"mhz", "source"}}`` of a place-and-route result file.

    Raises
    ------
    UsageError
        One line naming ``--clock-from``: unreadable, not JSON, or holding no result.
    """
    path = Path(path)
    if path.is_dir() and (path / "build.json").exists():
        return _vivado_clock(path)
    if path.is_dir():
        path = path / "ecp5_build.json"
    try:
        if path.stat().st_size > _MAX_BYTES:
            raise UsageError(f"--clock-from {str(path)!r} is larger than {_MAX_BYTES} bytes")
        doc = json.loads(path.read_text())
    except OSError as exc:
        raise UsageError(f"--clock-from {str(path)!r} cannot be read: "
                         f"{exc.strerror or exc}") from None
    except ValueError:
        raise UsageError(f"--clock-from {str(path)!r} is not JSON") from None
    table = {}
    if isinstance(doc, dict) and doc.get("kind") == "mulfree_ecp5_build":
        board = doc.get("board") or {}
        table[(doc.get("core") or {}).get("top")] = {
            "mhz": doc.get("fmax_mhz"),
            "source": f"placed and routed, nextpnr-ecp5 {board.get('device')} on "
                      f"{board.get('name')} (seed {doc.get('seed')}, {doc.get('date')}, "
                      f"{path})"}
    elif isinstance(doc, dict):
        pnr = doc.get("pnr", doc)
        params = pnr.get("params", {}) if isinstance(pnr, dict) else {}
        runs = pnr.get("runs", {}) if isinstance(pnr, dict) else {}
        for run in runs.values() if isinstance(runs, dict) else ():
            if isinstance(run, dict):
                table[run.get("top")] = {
                    "mhz": run.get("fmax_mhz"),
                    "source": f"placed and routed, nextpnr-ecp5 85F speed 8 (seed "
                              f"{run.get('seed')}, mulfree bench pnr {params.get('date', '')}"
                              f", {path})".replace(" ,", ",")}
    table = {top: entry for top, entry in table.items()
             if isinstance(top, str) and isinstance(entry["mhz"], (int, float))
             and math.isfinite(entry["mhz"]) and entry["mhz"] > 0}
    if not table:
        raise UsageError(f"--clock-from {str(path)!r} holds no place-and-route result "
                         f"(mulfree bench pnr --json, or an ECP5 build's ecp5_build.json)")
    return table


def _vivado_clock(folder):
    from ..gen.devices import ReportError
    from .report_build import load_build_folder, vivado_clock
    try:
        build = load_build_folder(folder, "--clock-from")
    except ReportError as exc:
        raise UsageError(str(exc)) from None
    clock = vivado_clock(build)
    if clock is None:
        raise UsageError(f"--clock-from {str(folder)!r} is a build folder Vivado has not run "
                         f"in (no timing.rpt): no measured clock yet")
    return {build["record"]["top"]: clock}


def check_clock_options(args):
    """Refuse a bad ``--clock-mhz`` / ``--clock-from`` before any work; keep the file's table
    in ``args.clock_table``."""
    mhz = getattr(args, "core_clock_mhz", None)
    if mhz is not None and not (math.isfinite(mhz) and 1 <= mhz <= 1000):
        raise UsageError(f"--clock-mhz must be a number of MHz in [1, 1000], not {mhz!r}")
    args.clock_table = None
    if getattr(args, "clock_from", None) is not None:
        args.clock_table = read_clock_file(args.clock_from)


def core_clock(args, top):
    """``{"mhz", "source", "measured"}``: the clock of the core ``top`` the options name."""
    mhz = getattr(args, "core_clock_mhz", None)
    if mhz is not None:
        return {"mhz": float(mhz), "source": "given with --clock-mhz", "measured": False}
    table = getattr(args, "clock_table", None)
    if table:
        if top in table:
            return {"mhz": float(table[top]["mhz"]), "source": table[top]["source"],
                    "measured": True}
        return {"mhz": ASSUMED_MHZ, "measured": False,
                "source": f"assumed, not measured: --clock-from {args.clock_from} has no "
                          f"result for {top} (it has {', '.join(sorted(table))})"}
    return {"mhz": ASSUMED_MHZ, "measured": False,
            "source": "assumed, not measured (mulfree bench pnr measures it)"}


def clock_note(clock):
    """``"100 MHz assumed, not measured ..."`` / ``"48.30 MHz placed and routed, ..."``."""
    source = clock["source"]
    return f"{clock['mhz']:g} MHz " + (source if not source.startswith("given") else
                                       f"({source})")
