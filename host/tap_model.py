"""Taps runs in NumPy (interface 2.4), for :mod:`mulfree.host.core_emulator`: the setup's
checks of ``flags.taps`` and one output tile through the tap window and the array.

A taps run (``DESC_FLAGS`` ``depthwise | taps``) computes a depthwise convolution on an array
engine: the tap window (:func:`~mulfree.params.tap_walk.tap_windows`, line buffers and a
``side x side`` register window) sends, per output pixel of tile ``nt``, a vector whose row
``r = ky*kernel_w + kx`` of column ``c`` is channel ``nt*C + c`` of the pixel's ``(ky, kx)``
input (rows from ``kernel_h*kernel_w`` on: 0); PE ``(r, c)`` holds row ``nt*R + r`` of the
weight buffer, lane ``c`` (:func:`~mulfree.params.tap_walk.tap_weight_tiles`), and column
``c``'s sum is the sum of its ``R`` terms. Written from the spec of interface 2.4
(``params/core_config.py``, ``params/tap_walk.py``), not from the RTL. NumPy only.
"""

import numpy as np

from ..params.core_config import CoreConfig
from ..params.golden import terms
from ..params.tap_walk import tap_span, tap_windows


__all__ = ["taps_descriptor_problem", "taps_unit_problem", "taps_line_problem", "taps_tile"]


def taps_descriptor_problem(cfg: CoreConfig, d):
    """Why a parsed descriptor ``d`` with ``flags.taps`` is error DESCRIPTOR (a message), or
    None: taps without depthwise, with residual or global_pool, a kernel larger than the tap
    window's side (on a core with one), ``m_block != out_h*out_w``."""
    if not d["taps"]:
        return None
    if not d["depthwise"]:
        return "taps without depthwise"
    for flag, key in (("residual", "residual"), ("global_pool", "pool")):
        if d[key]:
            return f"taps with flags.{flag}"
    for kernel in ("kernel_h", "kernel_w"):
        if cfg.taps and d[kernel] > cfg.tap_side:
            return f"taps with {kernel} = {d[kernel]} > TAPS.side = {cfg.tap_side}"
    if d["m_block"] != d["out_h"] * d["out_w"]:
        return (f"taps with m_block = {d['m_block']} != out_h*out_w = "
                f"{d['out_h'] * d['out_w']}")
    return None


def taps_unit_problem(cfg: CoreConfig, d):
    """Why ``flags.taps`` is error WINDOW on this core (a message), or None: no tap window
    (``TAPS.taps = 0``), or an engine whose bit of ``TAPS.engines`` is 0."""
    if not d["taps"]:
        return None
    if not cfg.taps:
        return "flags.taps on a core without the tap window"
    if d["engine"] not in cfg.tap_engines:
        return f"flags.taps on engine {d['engine']}, which has no tap window"
    return None


def taps_line_problem(cfg: CoreConfig, d):
    """Why a taps run is error TOO_BIG for its line buffers (a message), or None."""
    if not d["taps"]:
        return None
    _, line = tap_span((d["kernel_h"], d["kernel_w"]), (d["stride_h"], d["stride_w"]),
                       (d["out_h"], d["out_w"]))
    if line > cfg.tap_line:
        return f"padded line (out_w-1)*stride_w + kernel_w = {line} > TAPS.line = {cfg.tap_line}"
    return None


def taps_tile(cfg: CoreConfig, d, fmap, codes, nt):
    """The array's sums ``[out_h*out_w, C]`` of output tile ``nt`` of a taps run, pixels in
    raster order.

    Parameters
    ----------
    d : dict
        The parsed descriptor, with ``CT`` (the feature map's vectors per pixel).
    fmap : array ``[vectors, R]``
        The feature-map buffer: channel tile ``nt`` of pixel ``(iy, ix)`` at ``(iy*in_w +
        ix)*CT + nt``.
    codes : array ``[wrows, C]``
        The weight rows as codes of the run's engine.
    """
    e = cfg.engines[d["engine"]]
    r, c = cfg.engine.rows, cfg.engine.cols
    h, w = d["in_h"], d["in_w"]
    kernel = (d["kernel_h"], d["kernel_w"])
    pixels = np.arange(h * w)
    x = fmap[pixels * d["CT"] + nt][:, :c].T.reshape(c, h, w)
    sent = tap_windows(x, kernel, (d["stride_h"], d["stride_w"]), (d["pad_h"], d["pad_w"]),
                       (d["out_h"], d["out_w"]), cfg.tap_side)         # [M, C, kh*kw]
    rows = np.zeros((len(sent), c, r), dtype=np.int64)
    rows[:, :, :sent.shape[2]] = sent
    tile = codes[nt * r:(nt + 1) * r].T                                  # [C, R]
    return terms(e, rows, np.broadcast_to(tile, rows.shape)).sum(axis=2)
