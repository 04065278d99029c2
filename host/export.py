"""Exporting a trained model: quantize it into the integer format, and keep its float weights.

* :func:`export` quantizes a model (:func:`mulfree.host.quant.quantize`) and writes the
  integer export directory (:func:`mulfree.host.export_format.write_export`:
  ``model.safetensors`` + ``model.json``).
* :func:`save_float` / :func:`load_float` keep the *float* weights of a demo model
  (:data:`mulfree.host.models.MODELS`) as one safetensors file (``state_dict`` tensors plus
  the metadata ``format = "mulfree-float"``, ``model = <name>``), so a model trained once can
  be exported again later, e.g. with another ``act_bits``. Nothing is pickled: the file is
  read with :func:`safetensors.safe_open`, never ``torch.load``.
* :func:`run_export` is what ``mulfree export`` runs.

Naming: this module and its main function are both called ``export``. ``mulfree.host.export``
is this module, made callable (calling it calls :func:`export`), so
``from mulfree.host import export; export(model, path, calib_x)`` works whether or not the
module was imported before, and ``mulfree.host.export.save_float`` works too.
"""

import inspect
import logging
import os
import sys
import tempfile
import types

import numpy as np
import torch

from .export_format import MODEL_JSON, MODEL_TENSORS, load_export, write_export


__all__ = ["FLOAT_FORMAT", "FLOAT_FILE", "FloatWeightsError", "export", "save_float",
           "load_float", "identify_model", "measure_accuracies", "run_export"]


log = logging.getLogger(__name__)

#: ``format`` metadata of a float-weights file.
FLOAT_FORMAT = "mulfree-float"
#: File name ``mulfree train`` gives the float weights in ``DIR/<model>/``.
FLOAT_FILE = "float.safetensors"


class FloatWeightsError(ValueError):
    """A float-weights file that cannot be loaded (missing, not safetensors, another model,
    wrong tensors). ``path`` is the file, ``reason`` the message without it."""

    def __init__(self, path, reason):
        super().__init__(f"float weights {os.fspath(path)!r}: {reason}")
        self.path = os.fspath(path)
        self.reason = reason


# Integer export ------------------------------------------------------------------------------

def export(model, path, calib_x, *, act_bits=8, input_scale_exp=None):
    """Quantize ``model`` and write the integer export directory ``path``.

    :func:`~mulfree.host.quant.quantize` (same parameters) then
    :func:`~mulfree.host.export_format.write_export` (``path/model.safetensors`` and
    ``path/model.json``, the directory created if missing).

    Returns
    -------
    IntModel
        The quantized model, as written.

    Raises
    ------
    QuantizeError
        Unchanged from ``quantize`` (an unsupported module, named with its path); nothing is
        written.
    ValueError
        A bad ``act_bits`` or ``calib_x``; nothing is written.
    """
    from .quant import quantize
    int_model = quantize(model, calib_x, act_bits=act_bits, input_scale_exp=input_scale_exp)
    write_export(int_model, path)
    return int_model


# Float weights ------------------------------------------------------------------------------

def _signature(model):
    """What identifies an architecture: module types in order, tensor names and shapes."""
    return ([type(m).__name__ for m in model.modules()],
            {k: tuple(v.shape) for k, v in model.state_dict().items()})


def _fresh(name):
    """``build_model(name)`` without touching the caller's random state."""
    from .models import build_model
    with torch.random.fork_rng(devices=[]):
        return build_model(name)


def identify_model(model):
    """The name of the demo model (:data:`~mulfree.host.models.MODELS`) ``model`` is an
    instance of (same modules, tensor names and shapes), or None."""
    from .models import MODELS
    sig = _signature(model)
    for name in MODELS:
        if _signature(_fresh(name)) == sig:
            return name
    return None


def save_float(model, path, *, name=None):
    """Write the float weights (``state_dict``) of a demo model to the safetensors ``path``.

    Parameters
    ----------
    model : torch.nn.Module
        One of the demo models (:func:`mulfree.host.models.build_model`), trained or not.
    path : str or path
        The file, replaced atomically (a temporary file renamed over it).
    name : str, optional
        The model's name in :data:`~mulfree.host.models.MODELS`; default: recognised from the
        model's modules and tensors (:func:`identify_model`). If given it must match.

    Raises
    ------
    ValueError
        If ``model`` is not a demo model (or not the ``name`` one).
    """
    from safetensors.torch import save_file
    from .models import check_model_name
    found = identify_model(model)
    if name is not None:
        check_model_name(name)
        if found != name:
            raise ValueError(f"model is not a {name} (its modules or tensors differ from "
                             f"build_model({name!r}))")
    elif found is None:
        raise ValueError("model is not one of the demo models of mulfree.host.models.MODELS "
                         "(its modules or tensors differ from each)")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path = os.fspath(path)
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=directory)
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"format": FLOAT_FORMAT, "model": found})
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _read_float(path):
    """``(metadata, tensors)`` of a safetensors file, every failure a FloatWeightsError."""
    from safetensors import SafetensorError, safe_open
    if not os.path.exists(path):
        raise FloatWeightsError(path, "no such file")
    if not os.path.isfile(path):
        raise FloatWeightsError(path, "not a file")
    try:
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise FloatWeightsError(path, f"not a readable safetensors file ({e})") from None
    return metadata, tensors


def load_float(name, path):
    """A demo model ``name`` with the float weights of the file ``path`` (:func:`save_float`).

    Checks, in order: ``name`` is a demo model; the file exists and is safetensors; its
    metadata says ``format = "mulfree-float"`` and ``model = name``; its tensors are exactly
    the model's (names, shapes, dtypes) and the floating ones are finite.

    Returns
    -------
    torch.nn.Module
        In eval mode. The caller's random state is left alone.

    Raises
    ------
    ValueError
        An unknown ``name`` (``"model must be one of ..."``).
    FloatWeightsError
        Naming the file and the first mismatch.
    """
    from .models import check_model_name
    check_model_name(name)
    path = os.fspath(path)
    metadata, tensors = _read_float(path)
    if metadata.get("format") != FLOAT_FORMAT:
        raise FloatWeightsError(path, f"not mulfree float weights (metadata format is "
                                      f"{metadata.get('format')!r}, expected {FLOAT_FORMAT!r})")
    saved = metadata.get("model")
    if saved != name:
        raise FloatWeightsError(path, f"holds the weights of {saved!r}, not {name!r}")
    model = _fresh(name)
    want = model.state_dict()
    missing = [k for k in want if k not in tensors]
    if missing:
        raise FloatWeightsError(path, f"lacks tensor {missing[0]!r} of {name} "
                                      f"({len(missing)} missing)")
    extra = sorted(k for k in tensors if k not in want)
    if extra:
        raise FloatWeightsError(path, f"holds tensor {extra[0]!r}, which {name} does not have")
    for key, ref in want.items():
        got = tensors[key]
        if tuple(got.shape) != tuple(ref.shape):
            raise FloatWeightsError(path, f"tensor {key!r} has shape {list(got.shape)}, "
                                          f"{name} needs {list(ref.shape)}")
        if got.dtype != ref.dtype:
            raise FloatWeightsError(path, f"tensor {key!r} has dtype {got.dtype}, "
                                          f"{name} needs {ref.dtype}")
        if got.is_floating_point() and not torch.isfinite(got).all():
            raise FloatWeightsError(path, f"tensor {key!r} holds NaN or infinity")
    model.load_state_dict(tensors, strict=True)
    model.eval()
    return model


# mulfree export ------------------------------------------------------------------------------

def _classes(y):
    y = np.asarray(y)
    return y if y.ndim == 1 else np.argmax(y, axis=-1)


def measure_accuracies(int_model, path, x, y):
    """Integer and golden-model accuracies on real inputs ``x`` with labels ``y``.

    ``int_model`` runs in :func:`~mulfree.host.quant.int_forward`; the export directory
    ``path`` is loaded back (:func:`~mulfree.host.export_format.load_export`) and run by the
    golden model (:func:`mulfree.params.model_golden.predict`).

    Returns
    -------
    dict
        ``int_accuracy``, ``golden_accuracy`` and ``int_golden_agreement`` (fractions).
    """
    from ..params import model_golden
    from .quant import int_forward
    loaded = load_export(path)
    shape = tuple(loaded.input.shape)
    x = np.asarray(x)
    x_int = model_golden.quantize_input(loaded, x.reshape(len(x), *shape))
    y = np.asarray(y)
    int_pred = _classes(int_forward(int_model, x_int))
    golden_pred = model_golden.predict(loaded, x_int)
    return {"int_accuracy": float(np.mean(int_pred == y)),
            "golden_accuracy": float(np.mean(golden_pred == y)),
            "int_golden_agreement": float(np.mean(int_pred == golden_pred))}


def run_export(name, float_path, output, *, act_bits=8, echo=print):
    """Load the float weights of demo model ``name``, export it to ``output``, measure it.

    Calibrates on the training split of the model's data set
    (:func:`~mulfree.host.models.model_data`),
    writes ``output/model.safetensors`` and ``output/model.json``, and reports the float,
    integer and golden accuracies on the test split through ``echo``.

    Returns
    -------
    dict
        ``model``, ``act_bits``, ``float_accuracy``, ``int_accuracy``, ``golden_accuracy``,
        ``int_golden_agreement``, ``paths``.

    Raises
    ------
    ValueError
        An unknown ``name`` or ``act_bits`` outside 2..16 (messages start with the parameter
        name); nothing is written.
    FloatWeightsError
        A bad float file; nothing is written.
    OSError
        If ``output`` cannot be written.
    """
    from .models import check_model_name, evaluate, model_data
    check_model_name(name)
    if isinstance(act_bits, bool) or not isinstance(act_bits, (int, np.integer)) \
            or not 2 <= act_bits <= 16:
        raise ValueError(f"act_bits must be an integer in 2..16, not {act_bits!r}")
    model = load_float(name, float_path)
    data = model_data(name)
    int_model = export(model, output, torch.as_tensor(data["x_train"]), act_bits=int(act_bits))
    result = {"model": name, "act_bits": int(act_bits),
              "float_accuracy": evaluate(model, data["x_test"], data["y_test"])}
    result.update(measure_accuracies(int_model, output, data["x_test"], data["y_test"]))
    result["paths"] = [os.path.join(os.fspath(output), f) for f in (MODEL_TENSORS, MODEL_JSON)]
    n = len(data["y_test"])
    from .models import MODEL_DATASETS
    echo(f"{name} ({act_bits}-bit activations), {MODEL_DATASETS[name]} test split ({n} images): float "
         f"{100 * result['float_accuracy']:.2f}%, integer {100 * result['int_accuracy']:.2f}%, "
         f"golden {100 * result['golden_accuracy']:.2f}%")
    for p in result["paths"]:
        log.info(f"wrote {p}")
    return result


# The module is callable: ``mulfree.host.export(...)`` is :func:`export` (module docstring).

class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
__signature__ = inspect.signature(export)
