"""The golden model of a whole integer model (:mod:`mulfree.host.export_format`).

Input quantization, and the model's graph run node by node by
:func:`mulfree.params.graph_golden.run_graph` (each node kind's golden function). Everything
is ``np.int64``; every node saturates to its ``act_bits``, and the golden functions refuse any
input outside its range, so nothing overflows or wraps silently.
"""

import numpy as np

from .int_model import ExportError, IntModel
from .golden import as_int64
from .graph_golden import run_graph


__all__ = ["quantize_input", "run_int_model", "predict"]


def quantize_input(model: IntModel, x_float):
    """Quantize real inputs: ``q = clamp(floor(x * 2^-scale_exp + 1/2), act_range)``.

    Round half up (ties towards +infinity), saturating to the input's signed ``act_bits``;
    ``+-inf`` saturate. ``x * 2^-scale_exp`` is exact in float64 (a power-of-two scaling), and
    the fraction ``v - floor(v)`` is exact too, so the rounding is exact for every float64
    (``floor(v + 0.5)`` is not: it rounds 0.49999999999999994 up).

    Parameters
    ----------
    x_float : float array of shape ``input.shape`` or ``(B, *input.shape)``

    Returns
    -------
    int64 array of the same shape.

    Raises
    ------
    ValueError
        If ``x_float`` holds NaN or has the wrong shape.
    """
    inp = model.input
    x = np.asarray(x_float, dtype=np.float64)
    if x.shape[-len(inp.shape):] != tuple(inp.shape) or x.ndim > len(inp.shape) + 1:
        raise ValueError(f"x must have shape {tuple(inp.shape)} or (B, "
                         f"{', '.join(map(str, inp.shape))}), not {x.shape}")
    if np.isnan(x).any():
        raise ValueError("x holds NaN, which has no integer code")
    lo, hi = -(1 << (inp.act_bits - 1)), (1 << (inp.act_bits - 1)) - 1
    # A scaling that overflows to +-inf (or underflows to 0) is exact here: it saturates.
    with np.errstate(over="ignore", under="ignore"):
        v = np.ldexp(x, -int(inp.scale_exp))
    # Clamping first is the same as clamping after (the ends are integers), and keeps the
    # values small and finite.
    v = np.clip(v, lo, hi)
    f = np.floor(v)
    q = f + (v - f >= 0.5)
    return q.astype(np.int64)


def _batch(model, x_int):
    shape = tuple(model.input.shape)
    # as_int64 refuses a uint64 >= 2^63 instead of wrapping it into the input range.
    x = as_int64("x_int", x_int)
    if x.shape == shape:
        return x[None], False
    if x.ndim == len(shape) + 1 and x.shape[1:] == shape:
        if not len(x):
            raise ValueError("x_int holds no images (a batch of 0)")
        return x, True
    raise ValueError(f"x_int must have shape {shape} or (B, {', '.join(map(str, shape))}), "
                     f"not {x.shape}")


def run_int_model(model: IntModel, x_int):
    """The final integer activations of ``model`` for integer inputs ``x_int``.

    ``x_int`` has the input's shape or a batch ``(B, *shape)``; the result is batched the same
    way. Inputs outside the input's ``act_bits`` are refused (quantize with
    :func:`quantize_input`).

    Raises
    ------
    ExportError
        If the model is invalid.
    ValueError
        If an input lies outside its range or has the wrong shape.
    """
    infos = model.graph()
    x, batched = _batch(model, x_int)
    lo, hi = -(1 << (model.input.act_bits - 1)), (1 << (model.input.act_bits - 1)) - 1
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"x_int must lie in [{lo}, {hi}] (input act_bits = "
                         f"{model.input.act_bits}), not [{x.min()}, {x.max()}]")
    x = run_graph(model, x, infos=infos)
    return x if batched else x[0]


def predict(model: IntModel, x_int):
    """Classes: the index of the first largest final activation (``np.argmax``).

    Needs ``model.output == "argmax"``. Returns an int64 array ``(B,)`` for a batch, an int64
    scalar for a single input.
    """
    if model.output != "argmax":
        raise ExportError("output", f"predict needs output = 'argmax', not {model.output!r}")
    y = run_int_model(model, x_int)
    return np.argmax(y, axis=-1).astype(np.int64)
