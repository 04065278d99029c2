"""The lane unit's passes in NumPy: one output tile of a window run (interface 2.3).

A window run (``DESC_FLAGS`` ``win_max``, ``win_sum``, ``depthwise``) reduces every channel
over the ``kernel_h x kernel_w`` window of each output pixel on the core's lane unit, lane by
lane: lane ``j`` of output tile ``nt`` is channel ``nt*C + j`` and reads lane ``j`` of the
feature-map vectors of channel tile ``ct = nt``, at ``(iy*in_w + ix)*CT + nt``. The walk of
one tile is ``kernel_h * kernel_w`` passes (``ky``, ``kx``) over the block's pixels; a pass
starts from 0 (sum, depthwise) or ``act_min`` (max) and every vector updates each lane's
partial sum with ``max(p, x)``, ``p + x`` or ``p + term(x, w)`` (the run's engine's term of
the pass's weight row, lane ``j``'s code). A lane whose pixel is padding reads ``act_min``
in a max run, else 0.

Written from the spec of interface 2.3 (``params/core_config.py``), not from the RTL;
:mod:`mulfree.host.core_emulator` runs it. NumPy only.
"""

import numpy as np

from ..params.golden import terms


__all__ = ["window_kind", "window_tile"]


def window_kind(d):
    """The window run a parsed descriptor ``d`` names (``"max"``, ``"sum"``, ``"depthwise"``)
    or None (a convolution); for a descriptor with at most one window flag."""
    for kind, flag in (("max", "win_max"), ("sum", "win_sum"), ("depthwise", "depthwise")):
        if d.get(flag):
            return kind
    return None


def window_tile(cfg, d, fmap, codes, oy, ox, nt):
    """The lane unit's sums ``[pixels, C]`` of output tile ``nt`` for the output pixels
    ``(oy, ox)`` (int arrays) of a block.

    Parameters
    ----------
    cfg : CoreConfig
    d : dict
        The parsed descriptor, with ``CT`` (the feature map's vectors per pixel).
    fmap : array ``[vectors, R]``
        The feature-map buffer.
    codes : array ``[wrows, C]``
        The weight rows as codes of the run's engine (depthwise; unread otherwise).
    """
    e = cfg.engines[d["engine"]]
    kind = window_kind(d)
    lo = e.act_range[0]
    h, w, c = d["in_h"], d["in_w"], cfg.engine.cols
    kk = d["kernel_h"] * d["kernel_w"]
    psum = np.full((len(oy), c), lo if kind == "max" else 0, dtype=np.int64)
    for ky in range(d["kernel_h"]):
        for kx in range(d["kernel_w"]):
            iy = oy * d["stride_h"] - d["pad_h"] + ky
            ix = ox * d["stride_w"] - d["pad_w"] + kx
            inside = (iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)
            addr = (np.clip(iy, 0, h - 1) * w + np.clip(ix, 0, w - 1)) * d["CT"] + nt
            fill = lo if kind == "max" else 0
            x = np.where(inside[:, None], fmap[addr][:, :c], fill)
            if kind == "max":
                psum = np.maximum(psum, x)
            elif kind == "sum":
                psum = psum + x
            else:
                row = codes[nt * kk + ky * d["kernel_w"] + kx]
                psum = psum + terms(e, x, np.broadcast_to(row, x.shape))
    return psum
