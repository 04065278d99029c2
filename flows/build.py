"""``mulfree build``: write a Vivado project that puts a core on a Zynq-7000 board, or build an
ECP5 bitstream with open tools (:mod:`~mulfree.flows.build_ecp5`).

The flow checks every option first (the board, the output folder, ``--config`` or the core
options, the clock, the fit of the core on the board's device), so nothing is generated for a
bad one; then writes the build folder (:func:`~mulfree.gen.build_folder.write_build`, whose
module says what it holds) and, with ``--run``, runs Vivado on it
(:func:`~mulfree.gen.vivado_run.run_vivado`). The plan and every generated file are made in
:mod:`mulfree.gen` (:mod:`~mulfree.gen.vivado_plan`, :mod:`~mulfree.gen.vivado_project`,
:mod:`~mulfree.gen.overlay`, :mod:`~mulfree.gen.build_record`); this module is the command.
"""

import logging
import shlex
import sys

from ..params.safe_io import FileCheckError
from ..gen.build_folder import check_build_output, write_build
from ..gen.vivado_plan import CLOCK_MHZ_RANGE, BuildError, core_config_from_manifest, plan_build
from ..gen.vivado_project import format_mhz, hex_address, vivado_command, vivado_range
from ..gen.vivado_run import VivadoFailed, VivadoMissing, run_vivado
from .options import UsageError, add_json_option, option_message, write_json_document


__all__ = ["add_parser", "command", "add_build_options", "run_build", "BUILD_OPTIONS",
           "BUILD_JSON"]


log = logging.getLogger(__name__)

#: What ``mulfree build --json`` adds to the common keys (its help text says it).
BUILD_JSON = ("build: kind (zynq or ecp5), board, part or device, top (the core's), and for "
              "zynq clock_mhz, resources_estimate, addresses (core_base, core_range, "
              "dma_base, dma_range), products (with --run); for ecp5 the numbers of "
              "ecp5_build.json (fmax_mhz, constraint_mhz, critical_path, utilization, seed, "
              "versions)")


def add_parser(subparsers):
    """Add the ``build`` command to the ``mulfree`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``add_subparsers`` of the ``mulfree`` parser returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``build`` parser; its defaults hold ``func`` (:func:`command`) and
        ``build_parser`` (itself, to tell the options given from their defaults).
    """
    from .core_options import add_array_options, add_core_options
    p = subparsers.add_parser(
        "build", help="write a Vivado project that puts a core on a Zynq board",
        description="Write a self-contained Vivado batch project for a core on a Zynq-7000 "
                    "board (zc706, arty_z7_20): the core's Verilog and manifest, a block "
                    "design (PS7, AXI DMA, interconnects, interrupts, the addresses of "
                    "mulfree.host.zynq.ZynqConfig), constraints, build.tcl (bitstream, XSA, "
                    ".bit.bin), the device tree overlay, zynq.json for the runtime and a README; "
                    "build.json, written last, marks a finished folder. A core that does not "
                    "fit the board (DSPs, block RAM) is refused before anything is written. "
                    "--run then runs Vivado if it is on PATH. An ECP5 board (ecp5_5g_evn, "
                    "ulx3s_85f) instead gets a bitstream at once from the open yowasp tools: "
                    "the core in an on-chip self-test top, its routed Fmax in "
                    "ecp5_build.json.")
    add_build_options(p)
    add_array_options(p, size=16)
    add_core_options(p)
    p.set_defaults(func=command)
    p.set_defaults(build_parser=p)
    return p


def command(args):
    """``mulfree build`` with its errors as one-line usage errors.

    Parameters
    ----------
    args : argparse.Namespace
        The options of the command :func:`add_parser` defines.

    Returns
    -------
    int
        Exit status: 0, or 1 if Vivado (``--run``) is missing or fails.

    Raises
    ------
    mulfree.flows.options.UsageError
        A bad option, a core that does not fit the board, or an output that cannot be
        written.
    """
    from .core_options import core_config_from_args
    try:
        return run_build(args, args.build_parser, core_config_from_args)
    except BuildError as e:
        raise UsageError(option_message(e, BUILD_OPTIONS)) from None
    except OSError as e:
        raise UsageError(f"-o/--output {str(args.output)!r} cannot be written: "
                         f"{e.strerror or e}") from None


def add_build_options(parser):
    """Options of ``mulfree build`` (the core options come from
    :mod:`mulfree.flows.core_options`)."""
    parser.add_argument("--board", required=True, metavar="NAME",
                        help="target board: zc706 or arty_z7_20 (Vivado project), or "
                             "ecp5_5g_evn or ulx3s_85f (a bitstream built at once with the "
                             "yowasp open tools, see mulfree.gen.ecp5_build)")
    parser.add_argument("--config", default=None, metavar="MANIFEST",
                        help="the core's manifest (mulfree gen --core); default: the core the "
                             "options below describe (default: a 16x16 shift core)")
    parser.add_argument("--clock-mhz", type=float, default=None, metavar="MHZ",
                        help=f"FCLK_CLK0, the core's clock ({CLOCK_MHZ_RANGE[0]:g}.."
                             f"{CLOCK_MHZ_RANGE[1]:g}, default: 100)")
    parser.add_argument("--run", action="store_true",
                        help="then run Vivado (must be on PATH) and collect the .bit, .bit.bin "
                             "and .xsa; without Vivado, print the command to run and fail")
    parser.add_argument("-o", "--output", default="build", metavar="DIR",
                        help="build folder (default: build); an earlier build folder there is "
                             "replaced, any other non-empty folder refused")
    add_json_option(parser, BUILD_JSON)


#: Parameter of a :class:`~mulfree.gen.vivado_plan.BuildError` -> the option that set it.
BUILD_OPTIONS = {"board": "--board", "config": "--config", "clock_mhz": "--clock-mhz",
                 "output": "-o/--output", "axil_addr_width": "--axil-addr-width"}


def run_build(args, parser, core_config_from_args):
    """``mulfree build``: returns the exit status; raises
    :class:`~mulfree.gen.vivado_plan.BuildError` for bad input.

    ``parser`` is the sub-command's parser (to tell options given from defaults) and
    ``core_config_from_args`` the CLI's maker of a :class:`CoreConfig` from core options.
    """
    # The cheap checks of every option come first, so nothing is generated for a bad one.
    from ..gen.board import BOARDS, BoardError, get_board
    from ..gen.ecp5_board import ECP5_BOARDS, is_ecp5_board
    ecp5 = is_ecp5_board(args.board)
    if ecp5:
        from .build_ecp5 import check_ecp5_options
        check_ecp5_options(args)
    else:
        try:
            board = get_board(args.board)
        except BoardError:
            raise BuildError("board", f"board must be one of "
                                      f"{', '.join(sorted({*BOARDS, *ECP5_BOARDS}))}, not "
                                      f"{args.board!r}") from None
        check_build_output(args.output)
    if args.config is not None:
        changed = [a.option_strings[-1] for a in parser._actions
                   if a.dest.startswith("core_") or a.dest in (
                       "pe", "rows", "cols", "act_bits", "weight_bits", "max_k", "arch",
                       "levels_per_stage", "name")
                   if getattr(args, a.dest, None) != parser.get_default(a.dest)]
        if changed:
            raise BuildError("config", f"--config takes the core from its manifest; it cannot "
                                       f"be combined with {', '.join(changed)}")
        # The Verilog and manifest are generated again from the manifest's parameters, so
        # the folder's files all come from this generator.
        cfg, _ = core_config_from_manifest(args.config)
    else:
        cfg = core_config_from_args(args)
    if ecp5:
        from .build_ecp5 import run_ecp5_build
        return run_ecp5_build(args, cfg)
    plan = plan_build(cfg, board, args.clock_mhz)
    folder, plan = write_build(None, None, args.output, plan=plan)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    for path in files:
        log.debug(f"wrote {path}")
    figures = {"kind": "zynq", "board": board.name, "part": board.part, "top": plan.top,
               "clock_mhz": plan.clock_mhz, "resources_estimate": plan.resources,
               "addresses": {"core_base": plan.zynq.core_base, "core_range": plan.core_range,
                             "dma_base": plan.zynq.dma_base, "dma_range": plan.dma_range},
               "products": None}
    from .build_ecp5 import build_parameters
    parameters = build_parameters(args, cfg, plan.clock_mhz)
    res = plan.resources
    print(f"build folder {folder} for {board.name} ({board.part}): core {plan.top}, "
          f"FCLK_CLK0 {format_mhz(plan.clock_mhz)} MHz; estimate {res['dsp']} DSP48E1, "
          f"{-(-res['ramb18'] // 2)} BRAM36")
    print(f"core registers at {hex_address(plan.zynq.core_base)} "
          f"(+{vivado_range(plan.core_range)}), AXI DMA at {hex_address(plan.zynq.dma_base)} "
          f"(+{vivado_range(plan.dma_range)})")
    # Commands shown to be pasted into a shell: the folder quoted for it.
    shown = shlex.quote(str(folder))
    if not args.run:
        print(f"next: cd {shown} && {vivado_command()}  (or mulfree build ... --run), then "
              f"mulfree deploy {shown}")
        write_json_document(args, parameters, files, build=figures)
        return 0
    try:
        products = run_vivado(folder)
    except FileCheckError as exc:
        raise BuildError("output", str(exc)) from None
    except (VivadoMissing, VivadoFailed) as exc:
        print(f"mulfree build: {exc}", file=sys.stderr)
        return 1
    for path in products.values():
        log.info(f"wrote {path}")
    print(f"next: mulfree deploy {shown} --host root@BOARD")
    figures["products"] = {k: str(v) for k, v in products.items()}
    write_json_document(args, parameters, [*files, *products.values()], build=figures)
    return 0
