"""Window runs (interface 2.3): what the core's lane unit computes, from the layers' arithmetic.

``cfg`` below is the engine whose widths post-process the run (a core's ``post_engine``; a
depthwise run's terms are those of the engine it runs on).

A window run reduces every channel over the ``kernel_h x kernel_w`` window of each output
pixel, channel by channel (``in_c = out_c``; lane ``j`` of output tile ``nt`` is channel
``nt*C + j``):

- **max** (``flags.win_max``): ``acc[c, oy, ox] = max`` of the window's activations. Padded
  positions take no part (PyTorch's ``MaxPool2d``): with ``2*pad <= kernel`` every window
  holds at least one pixel of the map.
- **sum** (``flags.win_sum``): the window's sum, a padded position counting 0
  (``AvgPool2d`` with ``count_include_pad=True``). The division is post-processing's: an
  average over ``N = 2^k`` positions with the graph's output shift ``s`` is
  ``postprocess(sum)`` with bias 0 and shift ``k + s`` (``docs/numerics.md``, AvgPool2d).
- **depthwise** (``flags.depthwise``): ``acc[c, oy, ox] = sum_{ky, kx} term(xpad[c, ...],
  w[c, ky, kx])``, a convolution with ``groups = in_c``; a padded pixel is activation 0 (so
  AdderNet's term adds ``-|w|``, as in :func:`~mulfree.params.layer_golden.conv2d_acc`).

Then the run goes on like any layer: ``postprocess`` with the PARAMS of each channel, and the
fused tail (residual, clamp, global pool). Written from the definitions above, not from the
RTL. NumPy, ``int64``.
"""

import numpy as np

from .config import ArrayConfig, int_range
from .golden import as_int64 as _as_int64
from .layer_golden import PostParams, conv2d_acc, conv_output_size, postprocess


__all__ = ["WINDOW_OPS", "window_acc", "window_layer", "avgpool_post_shift"]

#: The window runs, by the name of their descriptor flag's operation.
WINDOW_OPS = ("max", "sum", "depthwise")


def _pair(name, value):
    """``(v, v)`` for an integer, else the pair of integers ``value``."""
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an integer or a pair, not {value!r}")
    return value


def _geometry(x, kernel, stride, padding):
    (kh, kw), (sy, sx), (py, px) = _pair("kernel", kernel), _pair("stride", stride), \
        _pair("padding", padding)
    if min(kh, kw, sy, sx) < 1 or min(py, px) < 0 or py >= kh or px >= kw:
        raise ValueError(f"kernel {kernel!r}, stride {stride!r}, padding {padding!r}: a "
                         f"kernel and stride of at least 1 and 0 <= padding < kernel")
    c, h, w = x.shape
    oh, ow = conv_output_size(h, kh, sy, py), conv_output_size(w, kw, sx, px)
    if oh < 1 or ow < 1:
        raise ValueError(f"a {kh}x{kw} window does not fit the padded {h}x{w} map")
    return (kh, kw), (sy, sx), (py, px), (oh, ow)


def window_acc(cfg: ArrayConfig, op, x, kernel, stride=1, padding=0, w_codes=None):
    """The lane unit's result ``[C, OH, OW]`` of window run ``op`` on ``x[C, H, W]``, before
    post-processing.

    Parameters
    ----------
    cfg : ArrayConfig
        The engine whose terms a depthwise run uses (its ``pe``) and whose ranges apply.
    op : str
        One of :data:`WINDOW_OPS`.
    w_codes : array ``[C, kernel_h, kernel_w]``
        A depthwise run's weight codes (``None`` for max and sum).
    """
    if op not in WINDOW_OPS:
        raise ValueError(f"op must be one of {', '.join(WINDOW_OPS)}, not {op!r}")
    x = _as_int64("x", x)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (C, H, W), not {x.shape}")
    (kh, kw), (sy, sx), (py, px), (oh, ow) = _geometry(x, kernel, stride, padding)
    lo, hi = cfg.act_range
    if x.size and (x.min() < lo or x.max() > hi):
        raise ValueError(f"x must lie in the activation range [{lo}, {hi}]")
    c, h, w = x.shape
    if op == "depthwise":
        if w_codes is None:
            raise ValueError("a depthwise run needs w_codes [C, kernel_h, kernel_w]")
        w_codes = _as_int64("w_codes", w_codes)
        if w_codes.shape != (c, kh, kw):
            raise ValueError(f"w_codes must have shape ({c}, {kh}, {kw}), not {w_codes.shape}")
        # Channel c alone through the convolution's definition (one input, one output channel).
        return np.stack([conv2d_acc(cfg, x[ch:ch + 1], w_codes[ch][None, None], (sy, sx),
                                    (py, px))[0] for ch in range(c)]) \
            if c else np.zeros((0, oh, ow), dtype=np.int64)
    if w_codes is not None:
        raise ValueError(f"a {op} run has no weights")
    fill = lo - 1 if op == "max" else 0
    if op == "max" and (2 * py > kh or 2 * px > kw):
        raise ValueError(f"max pooling needs 2*padding <= kernel (a window wholly in the "
                         f"padding has no maximum), not padding {padding!r}, kernel {kernel!r}")
    padded = np.full((c, h + 2 * py, w + 2 * px), fill, dtype=np.int64)
    padded[:, py:py + h, px:px + w] = x
    taps = np.stack([padded[:, ky:ky + sy * (oh - 1) + 1:sy, kx:kx + sx * (ow - 1) + 1:sx]
                     for ky in range(kh) for kx in range(kw)])
    return taps.max(axis=0) if op == "max" else taps.sum(axis=0)


def window_layer(cfg: ArrayConfig, op, x, kernel, stride=1, padding=0, w_codes=None,
                 post: PostParams | None = None):
    """:func:`window_acc`, then ``postprocess`` per channel (raw results if ``post=None``)."""
    acc = window_acc(cfg, op, x, kernel, stride, padding, w_codes)
    if post is None:
        return acc
    # Maxima and window sums are no engine sums (an AdderNet engine's are <= 0): they are
    # post-processed as any acc_width-bit value.
    lanes = None if op == "depthwise" else int_range(cfg.acc_width)
    return np.moveaxis(postprocess(cfg, np.moveaxis(acc, 0, -1), post, acc_range=lanes), -1, 0)


def avgpool_post_shift(kernel, shift):
    """Post-processing's shift that turns a ``win_sum`` run into ``AvgPool2d``: ``k + shift``
    for a window of ``N = 2^k`` positions (``IntAvgPool2d.shift``); ``None`` when ``N`` is no
    power of two (the division is not a shift: the run stays on the host)."""
    kh, kw = _pair("kernel", kernel)
    n = kh * kw
    if n & (n - 1):
        return None
    return (n.bit_length() - 1) + int(shift)
