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


__all__ = ["run_network_demo", "DEMO_MODELS"]

#: The demo networks a single core runs (shiftadd_cnn mixes shift and adder layers).
DEMO_MODELS = ("deepshift_cnn", "deepshift_mlp", "adder_cnn")


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
    from ..spec.safe_io import FileCheckError, read_json
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
    from ..spec.safe_io import check_output_dir
    from .run import format_report, run_model, write_json
    # Before the training: a folder that cannot be written is refused now, not after it.
    out = check_output_dir(args.output, "-o/--output")
    cache_root()            # the simulator is built there: refused now if it cannot be
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    folder = _model_dir(args.model, out, args.retrain)
    run_args = argparse.Namespace(
        model=str(folder), device="sim", config=None, rows=args.rows, cols=args.cols,
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
