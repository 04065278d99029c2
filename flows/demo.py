"""``mulfree demo``: a digits network classified on the simulated accelerator, end to end.

1. the demo network (DeepShift CNN by default): loaded from ``<out>/<model>`` if it was
   trained before, else trained on scikit-learn's digits, quantized and exported (torch);
2. a 16x16 core of its PE kind that fits it, generated and compiled with Verilator once
   (cached in ``$MULFREE_CACHE`` or ``~/.cache/mulfree``);
3. the whole digits test split (360 images) through the core's Verilog, every output compared
   with the golden model; accuracy, cycles per image, images per second and PE use printed,
   and ``<out>/run.json`` written.
"""

import argparse
import sys
import time

from ..params.config import ConfigError, LIMITS
from ..params.safe_io import check_output_dir
from .core_options import add_array_options, config_from_args, core_error_message
from .options import UsageError, check_int


__all__ = ["add_parser", "command", "run_network_demo", "DEMO_MODELS"]

#: The demo networks a single core runs (shiftadd_cnn mixes shift and adder layers).
DEMO_MODELS = ("deepshift_cnn", "deepshift_mlp", "adder_cnn")


def add_parser(subparsers):
    """Add the ``demo`` command to the ``mulfree`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``add_subparsers`` of the ``mulfree`` parser returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``demo`` parser; its ``func`` default is :func:`command`.
    """
    p = subparsers.add_parser(
        "demo", help="classify the digits on the simulated accelerator (or check an engine)",
        description="network (the default): train (or reuse) the digits demo network, "
                    "generate a core that fits it, compile its Verilog with Verilator, "
                    "classify the 360 test images on it, compare every output with the "
                    "golden model and print accuracy and speed. engine: generate a PE array, "
                    "simulate it with random and corner-case data on Verilator (or Icarus) "
                    "and compare every output with the golden model.")
    p.add_argument("what", nargs="?", default="network", choices=["network", "engine"],
                   help="network (default) or engine")
    p.add_argument("--model", default=DEMO_MODELS[0], choices=DEMO_MODELS,
                   help=f"network: the demo network (default: {DEMO_MODELS[0]})")
    p.add_argument("--retrain", action="store_true",
                   help="network: train the network again even if the output folder has it")
    add_array_options(p, size=None, size_text="16 for network, 8 for engine")
    p.add_argument("--simulator", default="verilator", choices=["verilator", "icarus"],
                   help="engine: HDL simulator (default: verilator)")
    p.add_argument("--vectors", type=int, default=2000,
                   help="engine: random input vectors per tile (default: 2000)")
    p.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="output folder (default: out/demo, engine: out/demo-engine)")
    p.set_defaults(func=command)
    return p


def array_size(args):
    """``(rows, cols)`` of the demo's core: the options, else 16x16 for the network (the
    digits CNN's core) and 8x8 for an engine (what ``--help`` says)."""
    size = 8 if args.what == "engine" else 16
    return (size if args.rows is None else args.rows, size if args.cols is None else args.cols)


def command(args):
    """``mulfree demo``: the network demo (:func:`run_network_demo`) or, with ``engine``, the
    engine check (:func:`mulfree.flows.engine_demo.run_demo`).

    Every option is checked before a network is trained or a simulator compiled.

    Parameters
    ----------
    args : argparse.Namespace
        The options :func:`add_parser` defines; ``rows``, ``cols`` and ``output`` get their
        defaults (16, 16, ``out/demo``; for the engine 8, 8, ``out/demo-engine``) here.

    Returns
    -------
    int
        Exit status: 0 if every output is bit-exact, 1 if one differs or the simulator or
        device fails.

    Raises
    ------
    mulfree.flows.options.UsageError, mulfree.params.safe_io.FileCheckError
        A bad option; one line naming it.
    """
    args.rows, args.cols = array_size(args)
    if args.output is None:
        args.output = "out/demo-engine" if args.what == "engine" else "out/demo"
    check_int("--rows", args.rows, *LIMITS["rows"])
    check_int("--cols", args.cols, *LIMITS["cols"])
    from .engine_demo import MAX_VECTORS
    check_int("--vectors", args.vectors, 1, MAX_VECTORS)
    config_from_args(args)
    check_output_dir(args.output, "-o/--output")
    if args.what == "engine":
        from .engine_demo import run_demo
        return run_demo(args)
    from .run import RunUsageError
    from ..host.runtime import DeviceError
    from ..sim.runner import SimulatorMissing
    try:
        return run_network_demo(args)
    except RunUsageError as e:
        raise UsageError(str(e)) from None
    except ConfigError as e:
        raise UsageError(core_error_message(e, "the core: ")) from None
    except (DeviceError, SimulatorMissing, RuntimeError, OSError) as e:
        print(f"mulfree demo: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


def _say(message):
    print(f"[mulfree demo] {message}", file=sys.stderr, flush=True)


def _model_dir(name, out, retrain):
    """The export folder of the demo model ``name``: reused, or trained now."""
    from ..host.export_format import ExportError, load_export
    folder = out / name
    if not retrain and (folder / "model.json").is_file():
        try:
            load_export(folder)
            _say(f"using the trained {name} in {folder} (--retrain trains it again)")
            return folder
        except (ExportError, ValueError, OSError) as exc:
            _say(f"{folder} holds no usable export ({exc}); training again")
    try:
        from ..host.train import run_train
    except ImportError as exc:
        raise RuntimeError(f"training the demo model needs torch ({exc}): "
                           f"pip install 'mulfree[torch]', or make demo") from None
    _say(f"training {name} on the digits (float, then quantized and exported to {folder})")
    run_train(name, output=str(out), echo=lambda line: _say(line))
    return folder


def _float_accuracy(path):
    """The float accuracy ``metrics.json`` records, or None if it is missing or unusable
    (it is a figure to print, not an input anything depends on)."""
    import math
    from ..params.safe_io import FileCheckError, read_json
    if not path.is_file():
        return None
    try:
        value = read_json(path, "metrics.json", what="metrics file").get("float_accuracy")
    except FileCheckError as exc:
        _say(f"ignoring {path}: {exc}")
        return None
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value) and 0 <= value <= 1
    return float(value) if ok else None


def run_network_demo(args):
    """Train or load, generate, build, classify; print the report. Returns the exit status."""
    from ..gen.cache import cache_root
    from .run import format_report, run_model, write_json
    # Before the training: a folder that cannot be written is refused now, not after it.
    out = check_output_dir(args.output, "-o/--output")
    cache_root()            # the simulator is built there: refused now if it cannot be
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    folder = _model_dir(args.model, out, args.retrain)
    run_args = argparse.Namespace(
        model=str(folder), device="sim", config=None, rows=args.rows, cols=args.cols,
        stream_width="auto",
        input=None, dataset="digits", labels=None, limit=None, batch=512, timeout=60.0,
        no_check=False, json=None, build_dir=None, zynq_config=None, quiet=args.quiet)
    _say(f"generating a {args.rows}x{args.cols} core for it and compiling its Verilog with "
         f"Verilator (once; about a minute for 16x16, then cached)")
    report = run_model(run_args, say=_say)
    report.pop("_predictions", None)
    report["float_accuracy"] = _float_accuracy(folder / "metrics.json")
    report["demo_seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out / "run.json", report)
    print(format_report(report))
    if report.get("float_accuracy") is not None:
        print(f"float       {100 * report['float_accuracy']:.2f} % for the float network "
              f"before quantization")
    print(f"total       {report['demo_seconds']:.1f} s; figures in {out / 'run.json'}")
    return 0 if report["golden"]["bit_exact"] else 1
