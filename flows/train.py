"""``mulfree train`` and ``mulfree export``: the digits demo networks, trained, quantized and
exported.

Both flows check every option before torch is imported, then call
:func:`mulfree.host.train.run_train` or :func:`mulfree.host.export.run_export` and spell
their errors as options.
"""

import os
import sys

from ..params.int_model import MODEL_JSON, MODEL_TENSORS
from ..params.safe_io import check_output_dir
from .options import (UsageError, add_json_option, check_input_file, check_int, show_progress,
                      write_json_document)


__all__ = ["add_parser", "command", "train_command", "export_command", "TRAIN_MODELS",
           "MAX_EPOCHS", "MAX_SEED", "TRAIN_JSON", "EXPORT_JSON"]


#: The networks ``mulfree train`` and ``mulfree export`` know (``mulfree.host.train.MODELS``;
#: named here so that a bad name is refused before torch is imported).
TRAIN_MODELS = ("deepshift_mlp", "deepshift_cnn", "adder_cnn", "shiftadd_cnn",
                "resnet8_shift", "resnet8_adder", "resnet8_shiftadd")
#: What ``mulfree train --json`` adds to the common keys (its help text says it).
TRAIN_JSON = ("models: per model the numbers of its metrics.json (model, seed, epochs, "
              "float_train_accuracy, float_accuracy, int_accuracy, golden_accuracy, "
              "int_golden_agreement, seconds, ...)")
#: What ``mulfree export --json`` adds to the common keys.
EXPORT_JSON = ("accuracies on the test split (float_accuracy, int_accuracy, golden_accuracy, "
               "int_golden_agreement)")
#: Most training epochs accepted (the demo networks converge in 15-20).
MAX_EPOCHS = 10_000
#: Largest seed: torch and NumPy both take 32-bit seeds.
MAX_SEED = 2**32 - 1


def add_parser(subparsers):
    """Add the ``train`` and ``export`` commands to the ``mulfree`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``add_subparsers`` of the ``mulfree`` parser returned.

    Returns
    -------
    tuple of argparse.ArgumentParser
        The ``train`` and the ``export`` parser; the ``func`` default of both is
        :func:`command`.
    """
    train = subparsers.add_parser(
        "train", help="train the digits demo networks (float), quantize and export them",
        description="Train the demo networks on scikit-learn's digits (8x8; the ResNet-8 "
                    "models on the digits upsampled to 16x16) and print their "
                    "float test accuracy. When mulfree.host.quant is available, also quantize "
                    "each (calibrated on the training images), export it to DIR/<model>/ and "
                    "measure the integer and golden-model accuracies. DIR/<model>/metrics.json "
                    "holds the numbers.")
    train.add_argument("--model", default="all", metavar="NAME",
                       help="deepshift_mlp, deepshift_cnn, adder_cnn, shiftadd_cnn, "
                            "resnet8_shift, resnet8_adder, resnet8_shiftadd or all "
                            "(default: all)")
    train.add_argument("--epochs", type=int, default=None, metavar="N",
                       help="training epochs (>= 1, default: per model, 15-20)")
    train.add_argument("--seed", type=int, default=0, metavar="S",
                       help="seed of initialisation and minibatch order (>= 0, default: 0)")
    train.add_argument("-o", "--output", default="out/train", metavar="DIR",
                       help="output folder, created if missing (default: out/train)")
    add_json_option(train, TRAIN_JSON)
    train.set_defaults(func=command)

    export = subparsers.add_parser(
        "export", help="quantize saved float weights of a demo network and export them",
        description="Load the float weights of a digits demo network (the float.safetensors "
                    "'mulfree train' writes next to its metrics), quantize it calibrated on the "
                    "training images, write the integer export (DIR/model.safetensors and "
                    "DIR/model.json), and print the float, integer and golden-model accuracies "
                    "on the test images. Nothing is written if an input is bad.")
    export.add_argument("--model", required=True, metavar="NAME",
                        help="one of " + ", ".join(TRAIN_MODELS))
    export.add_argument("--float", required=True, dest="float_path", metavar="FILE",
                        help="float weights of that model (safetensors, e.g. "
                             "out/train/<model>/float.safetensors)")
    export.add_argument("--act-bits", type=int, default=8, metavar="N",
                        help="signed activation width (2..16, default: 8)")
    export.add_argument("-o", "--output", required=True, metavar="DIR",
                        help="export folder, created if missing")
    add_json_option(export, EXPORT_JSON)
    export.set_defaults(func=command)
    return train, export


def command(args):
    """``mulfree train`` or ``mulfree export``, as ``args.command`` names.

    Parameters
    ----------
    args : argparse.Namespace
        The options of the command :func:`add_parser` defines.

    Returns
    -------
    int
        Exit status 0 (every failure raises).

    Raises
    ------
    mulfree.flows.options.UsageError, mulfree.params.safe_io.FileCheckError
        A bad option, or an output folder that cannot be written.
    """
    return export_command(args) if args.command == "export" else train_command(args)


def train_command(args):
    """``mulfree train``: train (and, with the quantizer, export) the demo networks.

    Parameters
    ----------
    args : argparse.Namespace
        ``model``, ``epochs``, ``seed`` and ``output``.

    Returns
    -------
    int
        Exit status 0.

    Raises
    ------
    mulfree.flows.options.UsageError, mulfree.params.safe_io.FileCheckError
        A bad option (refused before torch is imported), or an output that cannot be written.
    """
    _check_train_model("--model", args.model, allow_all=True)
    if args.epochs is not None:
        check_int("--epochs", args.epochs, 1, MAX_EPOCHS)
    check_int("--seed", args.seed, 0, MAX_SEED)
    check_output_dir(args.output, "-o/--output")
    # Imported here: torch loads only for this command.
    from ..host.train import run_train
    try:
        # The progress bar only on a terminal: in a log it is noise around the one line an
        # interruption or an error leaves.
        results = run_train(args.model, epochs=args.epochs, seed=args.seed,
                            output=args.output,
                            progress=sys.stderr.isatty() and show_progress(args))
    except ValueError as e:
        raise UsageError(_with_train_option(str(e))) from None
    except OSError as e:
        raise UsageError(f"-o/--output {str(args.output)!r} cannot be written: "
                         f"{e.strerror or e}") from None
    files = [os.path.join(args.output, m["model"], name) for m in results
             for name in (m["float_weights"], "metrics.json", MODEL_JSON, MODEL_TENSORS)
             if os.path.isfile(os.path.join(args.output, m["model"], name))]
    write_json_document(args, {"model": args.model, "models": [m["model"] for m in results],
                               "epochs": args.epochs,
                               "epochs_per_model": {m["model"]: m["epochs"] for m in results},
                               "seed": args.seed,
                               "output": str(args.output)},
                        files, models=results)
    return 0


def export_command(args):
    """``mulfree export``: quantize saved float weights of a demo network and export them.

    Parameters
    ----------
    args : argparse.Namespace
        ``model``, ``float_path``, ``act_bits`` and ``output``.

    Returns
    -------
    int
        Exit status 0.

    Raises
    ------
    mulfree.flows.options.UsageError, mulfree.params.safe_io.FileCheckError
        A bad option (refused before torch is imported), unusable float weights, or an
        output that cannot be written.
    """
    _check_train_model("--model", args.model)
    check_input_file(args.float_path, "--float", "safetensors file")
    check_int("--act-bits", args.act_bits, 2, 16)
    check_output_dir(args.output, "-o/--output")
    # Imported here: torch loads only for this command.
    from ..host.export import FloatWeightsError, run_export
    try:
        result = run_export(args.model, args.float_path, args.output,
                            act_bits=args.act_bits)
    except FloatWeightsError as e:
        raise UsageError(f"--float {e.path!r}: {e.reason}") from None
    except ValueError as e:
        message = str(e)
        for param, option in (("model", "--model"), ("act_bits", "--act-bits")):
            if message.startswith(param + " "):
                message = option + message[len(param):]
        raise UsageError(message) from None
    except OSError as e:
        raise UsageError(f"-o/--output {str(args.output)!r} cannot be written: "
                         f"{e.strerror or e}") from None
    keys = ("float_accuracy", "int_accuracy", "golden_accuracy", "int_golden_agreement")
    write_json_document(args, {"model": args.model, "float": str(args.float_path),
                               "act_bits": args.act_bits, "output": str(args.output)},
                        result["paths"], accuracies={k: result[k] for k in keys})
    return 0


def _check_train_model(option, name, allow_all=False):
    names = TRAIN_MODELS + (("all",) if allow_all else ())
    if name not in names:
        raise UsageError(f"{option} must be one of {', '.join(names)}, not {name!r}")


def _with_train_option(message):
    for param, option in (("model", "--model"), ("epochs", "--epochs"), ("seed", "--seed")):
        if message.startswith(param + " "):
            return option + message[len(param):]
    return message
