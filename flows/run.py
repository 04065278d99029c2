"""``mulfree run``: an exported model on the simulated accelerator or a Zynq board.

Loads the export (a graph), picks the core (``--config``: a core's manifest; without it, a
16x16 core of the model's dominant PE kind that fits it, generated and built once into the
cache), compiles the model for it (``--host-fallback``: nodes of another PE kind on the host),
opens the device, runs the inputs in batches with a progress bar, and prints the predictions'
accuracy when labels are known, the comparison with the golden model, cycles per image,
images per second and PE utilization from the core's counters, and per node where it ran and
what it cost (:mod:`mulfree.flows.run_report`). ``--json`` writes it all. ``mulfree compile``
prints the placement table (:meth:`mulfree.host.program.Program.describe`).
"""

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

from ..host.datasets import DATASETS
from .run_report import format_report


log = logging.getLogger(__name__)


__all__ = ["add_parser", "command", "add_run_options", "add_compile_options", "run_model",
           "format_report", "check_run_options", "check_compile_options", "run_command",
           "compile_command", "RunUsageError", "MAX_PACKET_BYTES", "write_json"]


class RunUsageError(ValueError):
    """A bad option of ``mulfree run`` (the message names it)."""


#: Largest ``--max-packet-bytes``: a DMA transfer length register holds at most 32 bits.
MAX_PACKET_BYTES = 2**32 - 1


def add_parser(subparsers):
    """Add the ``run`` and ``compile`` commands to the ``mulfree`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``add_subparsers`` of the ``mulfree`` parser returned.

    Returns
    -------
    tuple of argparse.ArgumentParser
        The ``run`` and the ``compile`` parser; the ``func`` default of both is
        :func:`command`.
    """
    run = subparsers.add_parser(
        "run", help="run an exported model on the simulated accelerator or a Zynq board",
        description="Compile an exported model for a core, run inputs through it on the "
                    "simulated accelerator (the core's Verilog under Verilator, the default) "
                    "or on a Zynq board, and print the accuracy, the comparison with the "
                    "golden model, cycles per image, images per second and PE utilization "
                    "from the core's counters, and per node where it ran and what it cost. "
                    "The default core has an engine per PE kind of the model (--engines); "
                    "layers of a kind the core lacks run on the host with --host-fallback. Exit status 1 if an output differs from the golden "
                    "model or the device fails.")
    add_run_options(run)
    run.set_defaults(func=command)
    compile_ = subparsers.add_parser(
        "compile", help="check that an exported model fits a core and list its program",
        description="Compile an exported model for a core (its manifest, or a default core "
                    "that fits) and print the program: every node, where it runs (core or "
                    "host), its shapes, the core cycles the cycle model expects, its useful "
                    "terms and the elements the host computes, with totals. A layer that "
                    "does not fit is named with the parameter and the core's limit, and on "
                    "a core without an engine of its PE kind a layer needs --host-fallback "
                    "(exit status 2).")
    add_compile_options(compile_)
    compile_.set_defaults(func=command)
    return run, compile_


def command(args):
    """``mulfree run`` or ``mulfree compile``, as ``args.command`` names, with their errors
    as one-line usage errors.

    Parameters
    ----------
    args : argparse.Namespace
        The options of the command :func:`add_parser` defines.

    Returns
    -------
    int
        Exit status: 0; for ``run`` 1 if an output differs from the golden model or the
        device or simulator fails.

    Raises
    ------
    mulfree.flows.options.UsageError, mulfree.params.safe_io.FileCheckError
        A bad option, model or input, or a model that does not fit the core.
    """
    from .core_options import core_error_message
    from .options import UsageError
    from ..params.config import ConfigError
    from ..host.compiler import CompileError
    if args.command == "compile":
        try:
            return compile_command(args)
        except (RunUsageError, CompileError) as e:
            raise UsageError(str(e)) from None
        except ConfigError as e:
            raise UsageError(core_error_message(e, "the core: ")) from None
    from ..host.runtime import DeviceError
    from ..sim.runner import SimulatorMissing
    try:
        return run_command(args)
    except (RunUsageError, CompileError) as e:
        raise UsageError(str(e)) from None
    except ConfigError as e:
        raise UsageError(core_error_message(e, "the core: ")) from None
    except (DeviceError, SimulatorMissing, OSError) as e:
        print(f"mulfree run: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except RuntimeError as e:           # a simulator build that failed (its log is named)
        print(f"mulfree run: {e}", file=sys.stderr)
        return 1


def add_default_core_options(p):
    """The options of the default core (``--rows``, ``--cols``, ``--engines``, ``--taps``) and
    of chaining (``--chain``), shared by ``mulfree run`` and ``mulfree compile``."""
    p.add_argument("--rows", type=int, default=16, metavar="N",
                   help="rows of the default core (default: 16)")
    p.add_argument("--cols", type=int, default=16, metavar="N",
                   help="columns of the default core (default: 16)")
    p.add_argument("--engines", default="all", choices=["all", "one"],
                   help="engines of the default core: all (default): one per PE kind of the "
                        "model's layers (a multi-engine core; a kind with few terms gets a "
                        "folded, narrower engine); one: the most-used kind only, the other "
                        "layers need --host-fallback")
    p.add_argument("--taps", type=int, default=None, metavar="N",
                   help="rows of the default core's tap window (depthwise convolutions on the "
                        "array, interface 2.4): 0 runs them on the lane unit (default: the "
                        "core's, 9 on a square array of 9 rows or more)")
    p.add_argument("--stream-width", default="64", metavar="BITS",
                   help="AXI4-Stream width of the default core: 32, 64 (default), 128, 256, "
                        "or auto: the narrowest whose cycle-model estimate for --batch images "
                        "is within 2%% of the fastest's (a width the board's memory port cannot "
                        "feed at the core clock gives its cycles only with a faster DMA)")
    p.add_argument("--chain", default="auto", choices=["auto", "on", "off"],
                   help="layer chaining on a core with two feature-map banks: keep a layer's "
                        "output on-chip as the next layer's input and a later residual's "
                        "shortcut, running those layers image by image. auto (default): "
                        "where that moves fewer bytes for --batch images; on: wherever the "
                        "core can; off: never")


def add_run_options(p):
    """The options of ``mulfree run`` (MODEL, the core, the inputs, the device)."""
    p.add_argument("model", metavar="MODEL",
                   help="an exported model: the folder holding model.json and "
                        "model.safetensors (mulfree train / mulfree export)")
    p.add_argument("--device", default="sim", choices=["sim", "zynq"],
                   help="sim: the core's Verilog under Verilator (default, no board needed); "
                        "zynq: the accelerator on this Zynq board (UIO + AXI DMA)")
    p.add_argument("--config", metavar="MANIFEST",
                   help="the core: its manifest (<top>.json from mulfree gen --core or "
                        "mulfree build) or the folder holding it. Default for sim: a "
                        "--rows x --cols core that fits the model; required for zynq")
    add_default_core_options(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", metavar="FILE",
                     help=".npy array of inputs [B, *input_shape] (float: quantized as the "
                          "model says; integer: already quantized), or .npz with x and "
                          "optionally y (labels)")
    src.add_argument("--dataset", choices=DATASETS,
                     help="a test split with labels: digits (360 8x8 images), digits16 and "
                          "digits32x3 (the same enlarged to 1x16x16 and 3x32x32), cifar10 "
                          "(10,000 3x32x32 images, from --data-dir)")
    p.add_argument("--data-dir", metavar="DIR",
                   help="--dataset cifar10: the folder of CIFAR-10's binary files "
                        "(cifar-10-batches-bin, or the folder holding it)")
    p.add_argument("--host-fallback", action="store_true",
                   help="run the layers whose PE kind is not the core's on the host (exact "
                        "integers, NumPy); without it a model that mixes PE kinds is refused")
    p.add_argument("--labels", metavar="FILE", help=".npy int labels [B] for --input")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N inputs")
    p.add_argument("--batch", type=int, default=512, metavar="N",
                   help="images per batch: each layer's weights are sent once per batch "
                        "(default: 512)")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="seconds one core run may take before it is aborted (default: 30)")
    p.add_argument("--no-check", action="store_true",
                   help="do not compare the outputs with the golden model")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--build-dir", metavar="DIR",
                   help="sim: where the simulator is compiled and cached "
                        "(default: $MULFREE_CACHE/sim or ~/.cache/mulfree/sim)")
    p.add_argument("--zynq-config", metavar="FILE",
                   help="zynq: JSON with the board's addresses and device names "
                        "(mulfree.host.zynq.ZynqConfig fields); default: the built design's")
    from .clock import add_clock_options
    add_clock_options(p)


def _usage(call):
    """``call()`` with a :class:`~mulfree.flows.options.UsageError` turned into a
    :class:`RunUsageError` (the message is the same one line)."""
    from .options import UsageError
    try:
        return call()
    except UsageError as exc:
        raise RunUsageError(str(exc)) from None


def _check_core_options(args):
    from .options import check_int
    from ..params.config import LIMITS
    for option, value, param in (("--rows", args.rows, "rows"), ("--cols", args.cols, "cols")):
        _usage(lambda: check_int(option, value, *LIMITS[param]))
    from ..host.stream_choice import STREAM_CANDIDATES
    width = getattr(args, "stream_width", "64")
    allowed = [str(w) for w in STREAM_CANDIDATES] + ["auto"]
    if str(width) not in allowed:
        raise RunUsageError(f"--stream-width must be one of {', '.join(allowed)}, not "
                            f"{width!r}")


def check_run_options(args):
    """Refuse a bad option of ``mulfree run`` before anything is loaded, built or run.

    Numbers in range, ``--labels`` only with ``--input``, ``--data-dir`` a folder and only
    with (and always with) ``--dataset cifar10``, the output file (``--json``) and
    the simulator's folder (``--build-dir``) writable, ``--zynq-config`` a valid
    :class:`~mulfree.host.zynq.ZynqConfig` file.

    Raises
    ------
    RunUsageError, mulfree.params.safe_io.FileCheckError
        One line naming the option, the value and what is allowed.
    """
    from .options import check_int, check_seconds
    from ..params.safe_io import check_output_dir, check_output_file
    _check_core_options(args)
    if args.limit is not None:
        _usage(lambda: check_int("--limit", args.limit, 1))
    _usage(lambda: check_int("--batch", args.batch, 1))
    _usage(lambda: check_seconds("--timeout", args.timeout))
    for option, value in (("--config", args.config), ("--labels", args.labels),
                          ("--zynq-config", args.zynq_config)):
        if value is not None and not str(value):
            raise RunUsageError(f"{option} must name a file, not ''")
    if args.labels is not None and args.input is None:
        raise RunUsageError("--labels goes with --input (the --dataset has its own labels)")
    check_data_dir(args)
    if args.json is not None:
        check_output_file(args.json, "--json")
    if args.build_dir is not None:
        check_output_dir(args.build_dir, "--build-dir")
    if args.zynq_config is not None:
        args.zynq_config_loaded = _zynq_config(args.zynq_config)
    from .clock import check_clock_options
    _usage(lambda: check_clock_options(args))


#: The data sets read from a folder the user names (``--data-dir``).
DATA_DIR_DATASETS = ("cifar10",)


def check_data_dir(args):
    """``--data-dir``: a folder, given with a ``--dataset`` that reads one, and only then.

    Raises
    ------
    RunUsageError
        One line naming the option, the value and what is allowed.
    """
    data_dir = getattr(args, "data_dir", None)
    dataset = getattr(args, "dataset", None)
    if dataset in DATA_DIR_DATASETS and data_dir is None:
        raise RunUsageError(f"--dataset {dataset} needs --data-dir DIR: the folder of its "
                            f"files (CIFAR-10's binary version, cifar-10-batches-bin)")
    if data_dir is None:
        return
    if dataset not in DATA_DIR_DATASETS:
        raise RunUsageError(f"--data-dir goes with --dataset "
                            f"{' or '.join(DATA_DIR_DATASETS)}, not with "
                            f"{'--dataset ' + dataset if dataset else '--input'}")
    if not str(data_dir) or not Path(data_dir).is_dir():
        raise RunUsageError(f"--data-dir must be a folder (holding CIFAR-10's binary files), "
                            f"not {str(data_dir)!r}")


def _zynq_config(path):
    from ..host.zynq import load_zynq_config
    # Strict JSON, known fields only, every value checked: one line naming --zynq-config.
    return load_zynq_config(path, param="--zynq-config")


def _load_inputs(args, model):
    from ..host.datasets import InputFileError, open_inputs
    shape = tuple(model.input.shape)
    if args.dataset:
        x, y = _load_dataset(args)
        if tuple(x.shape[1:]) != shape:
            raise RunUsageError(f"--dataset {args.dataset}: its images have shape "
                                f"{tuple(x.shape[1:])}, MODEL {args.model!r} takes {shape}")
        source = f"{args.dataset} test split"
    else:
        try:
            x, y, count = open_inputs(args.input, "--input", limit=args.limit,
                                      item_shape=shape)
            if args.labels is not None:
                y, _, n = open_inputs(args.labels, "--labels", limit=args.limit, kinds="iu",
                                      labels=False)
                if y.ndim != 1 or n != count:
                    raise RunUsageError(f"--labels {args.labels!r}: must be {count} integers "
                                        f"(one per image of --input), not shape "
                                        f"{(n, *y.shape[1:])}")
        except InputFileError as exc:
            raise RunUsageError(str(exc)) from None
        source = str(args.input)
        if count == 0:
            raise RunUsageError(f"--input {args.input!r} holds 0 images; there is nothing to "
                                f"run")
    if y is not None:
        _check_labels(args, model, y)
    return x, y, source


def _load_dataset(args):
    """``(x, y)`` of ``--dataset``'s test split (the first ``--limit`` images)."""
    from ..params.safe_io import FileCheckError
    from ..host.datasets import load_dataset
    data_dir = getattr(args, "data_dir", None)
    try:
        if args.dataset in DATA_DIR_DATASETS:
            from ..host.cifar import load_cifar10
            return load_cifar10(data_dir, "test", args.limit, param="--data-dir")
        return load_dataset(args.dataset, limit=args.limit)
    except FileCheckError as exc:
        raise RunUsageError(str(exc)) from None
    except (ImportError, ValueError, OSError) as exc:
        raise RunUsageError(f"--dataset {args.dataset}: {exc}") from None


def _check_labels(args, model, y):
    option = "--labels" if args.labels is not None else \
        f"--dataset {args.dataset}" if args.dataset else "--input"
    if model.output != "argmax":
        raise RunUsageError(f"{option}: labels need a model whose output is an argmax; "
                            f"MODEL {args.model!r} outputs {model.output!r}")
    classes = int(model.validate()[-1][1][-1])
    if y.size and (y.min() < 0 or y.max() >= classes):
        bad = int(np.argmax((y < 0) | (y >= classes)))
        raise RunUsageError(f"{option}: labels must be classes in 0..{classes - 1} (the "
                            f"model's {classes} outputs), not {y[bad]} (image {bad})")


def _quantize(model, x):
    from ..params.model_golden import quantize_input
    if x.dtype.kind == "f":
        bad = ~np.isfinite(x)
        if bad.any():
            first = int(np.argmax(bad.reshape(len(x), -1).any(axis=1)))
            raise RunUsageError(f"--input: float inputs must be finite numbers; image "
                                f"{first} holds {'NaN' if np.isnan(x[first]).any() else 'inf'}")
        try:
            return quantize_input(model, x)
        except ValueError as exc:
            raise RunUsageError(f"--input: {exc}") from None
    bits = model.input.act_bits
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    if x.size and (x.min() < lo or x.max() > hi):
        raise RunUsageError(f"--input: integer inputs are taken as quantized and must lie in "
                            f"[{lo}, {hi}] (the model's {bits}-bit input), not "
                            f"[{x.min()}, {x.max()}]")
    return x.astype(np.int64)


def _core(args, model):
    """The core to run on: the manifest of ``--config``, or a default that fits the model."""
    from .core_options import core_error_message
    from ..params.config import ConfigError
    from ..host.compiler import CompileError, core_for_model
    from ..host.runtime import load_manifest
    if args.device == "zynq" and args.config is None:
        raise RunUsageError("--device zynq needs --config: the manifest of the design the "
                            "board runs (mulfree build writes it)")
    try:
        if args.config is not None:
            return load_manifest(args.config)
        taps = getattr(args, "taps", None)
        options = dict(rows=args.rows, cols=args.cols, engines=getattr(args, "engines", "all"),
                       **({} if taps is None else {"taps": taps}))
        width = str(getattr(args, "stream_width", "64"))
        if width == "auto":
            from ..host.stream_choice import choose_stream_width
            width, _ = choose_stream_width(model, batch=getattr(args, "batch", 1), **options)
        return core_for_model(model, stream_width=int(width), **options)
    except CompileError as exc:
        text = str(exc)
        if args.config is None and exc.param == "core.taps" and text.startswith("taps"):
            raise RunUsageError(f"--taps{text[len('taps'):]}") from None   # the option given
        option = "--config" if args.config is not None else "the default core"
        raise RunUsageError(f"{option}: {text}") from None
    except ConfigError as exc:
        # The model asks for a core the generator cannot make (or --rows/--cols do).
        raise RunUsageError(core_error_message(exc, f"the default core for MODEL "
                                                    f"{args.model!r}: ")) from None


def _compile(args, model, core, max_packet_bytes):
    from ..host.compiler import CompileError, compile_model
    try:
        return compile_model(model, core, max_packet_bytes=max_packet_bytes,
                             host_fallback=getattr(args, "host_fallback", False),
                             chain=getattr(args, "chain", "auto"),
                             batch=getattr(args, "batch", 1))
    except CompileError as exc:
        top = core.get("top") if isinstance(core, dict) else core.top_name
        raise RunUsageError(f"MODEL {args.model!r} does not fit the core {top}: {exc}") \
            from None


def _open(args, core, say):
    from ..host.runtime import open_device
    if args.device == "zynq":
        options = {}
        if args.zynq_config is not None:
            config = getattr(args, "zynq_config_loaded", None)
            options["config"] = config if config is not None else \
                _zynq_config(args.zynq_config)
        return open_device("zynq", core, timeout=args.timeout, **options)
    return open_device("sim", core, timeout=args.timeout, build_dir=args.build_dir,
                       progress=say)


def run_model(args, *, say=None):
    """Everything ``mulfree run`` does; returns the report dict (see :func:`format_report`)."""
    from ..params.model_golden import run_int_model
    from .run_report import build_report
    say = say or log.info
    check_run_options(args)
    model = _load_model(args.model)
    x, y, source = _load_inputs(args, model)
    xq = _quantize(model, x)
    core = _core(args, model)
    # Refused before anything is built, opened or sent.
    _compile(args, model, core, None)
    t0 = time.perf_counter()
    device = _open(args, core, say)
    open_seconds = time.perf_counter() - t0
    with device:
        program = _compile(args, model, device.core, device.max_packet_bytes)
        device.load(program)
        bar = _progress(program.runs_for(len(xq)), getattr(args, "quiet", False))
        results = []
        try:
            for start in range(0, len(xq), args.batch):
                results.append(device.run(xq[start:start + args.batch],
                                          progress=bar.update if bar else None))
        finally:
            if bar:
                bar.close()
        ident = device.identity()
    outputs = np.concatenate([r.outputs for r in results])
    report = build_report(args, model, program, source, results, outputs, y, open_seconds)
    report["identity"] = {k: f"0x{v:08x}" for k, v in ident.items()}
    if not args.no_check:
        golden = run_int_model(model, xq)
        bad = np.argwhere((outputs != golden).reshape(len(xq), -1).any(axis=1)).ravel()
        report["golden"] = {"images": int(len(xq)), "integers": int(golden.size),
                            "mismatched_images": bad.tolist()[:20],
                            "mismatches": int(len(bad)), "bit_exact": not len(bad)}
        if model.output == "argmax":
            report["golden"]["predictions_equal"] = bool(
                np.array_equal(np.argmax(golden, axis=-1), report["_predictions"]))
    return report


def _progress(total, quiet):
    if quiet:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="run", desc="core runs", file=sys.stderr, leave=False,
                dynamic_ncols=True)


def _load_model(path):
    from ..params.safe_io import FileCheckError
    from ..host.export_format import ExportError, load_export
    if not str(path):
        raise RunUsageError("MODEL must name an exported model's folder, not ''")
    try:
        return load_export(path)
    except ExportError as exc:
        raise RunUsageError(f"MODEL {str(path)!r}: {exc}") from None
    except FileCheckError:
        raise
    except OSError as exc:
        raise RunUsageError(f"MODEL {str(path)!r} cannot be read: "
                            f"{exc.strerror or exc}") from None


def write_json(path, doc):
    """Write ``doc`` as JSON to ``path`` atomically (folders created): an interrupted run
    leaves the old file or none, never half of one."""
    from ..params.safe_io import write_atomic
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(doc, indent=2) + "\n")
    return path


def run_command(args):
    """``mulfree run``: returns the exit status (1 when the golden check fails)."""
    report = run_model(args)
    print(format_report(report))
    report.pop("_predictions", None)
    if args.json:
        write_json(args.json, report)
    g = report.get("golden")
    return 1 if g and not g["bit_exact"] else 0


def add_compile_options(p):
    """The options of ``mulfree compile`` (MODEL and the core)."""
    p.add_argument("model", metavar="MODEL", help="an exported model folder")
    p.add_argument("--config", metavar="MANIFEST",
                   help="the core's manifest (or its folder); default: a --rows x --cols core "
                        "that fits the model")
    add_default_core_options(p)
    p.add_argument("--max-packet-bytes", type=int, default=None, metavar="N",
                   help="largest packet a transfer may carry (a DMA's limit; default: none)")
    p.add_argument("--host-fallback", action="store_true",
                   help="run the layers whose PE kind is not the core's on the host; without "
                        "it a model that mixes PE kinds is refused")
    p.add_argument("--batch", type=int, default=1, metavar="N",
                   help="list the costs of a batch of N images (default: 1)")
    from .options import add_json_option
    from .run_report import COMPILE_JSON
    add_json_option(p, COMPILE_JSON)


def check_compile_options(args):
    """Refuse a bad option of ``mulfree compile`` before the model is read."""
    from .options import check_int
    _check_core_options(args)
    _usage(lambda: check_int("--batch", args.batch, 1))
    if args.max_packet_bytes is not None:
        _usage(lambda: check_int("--max-packet-bytes", args.max_packet_bytes, 1,
                                 MAX_PACKET_BYTES))


def compile_command(args):
    """``mulfree compile``: check that a model fits a core and list the program's steps."""
    check_compile_options(args)
    model = _load_model(args.model)
    args.device = "sim"
    core = _core(args, model)
    program = _compile(args, model, core, args.max_packet_bytes)
    print(program.describe(args.batch))
    from .options import write_json_document
    from .run_report import compile_document
    parameters = {k: getattr(args, k, None) for k in (
        "model", "config", "rows", "cols", "engines", "taps", "stream_width", "chain",
        "max_packet_bytes", "host_fallback", "batch")}
    write_json_document(args, parameters, **compile_document(program, args.batch))
    return 0
