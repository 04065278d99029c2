"""The core's output stream for one layer: the golden results, and reading result beats.

What the core must answer on ``m_axis`` (``docs/interface.md``, "Stream formats"):
:func:`expected_output` computes the layer with the layer golden model
(:func:`mulfree.params.shift_golden.table_shift`, then
:func:`mulfree.params.layer_golden.conv2d_layer` (a window run:
:func:`mulfree.params.window_golden.window_acc` and post-processing), then
:func:`mulfree.params.layer_golden.fused_tail`), :func:`expected_beats` lays the result out in
beats in the order the core sends them, and :func:`unpack_results` reads result beats back,
checking the bits the format says are 0. NumPy only.
"""

import numpy as np

from ..params.config import int_range
from ..params.core_config import CoreConfig
from ..params.layer_golden import conv2d_layer, fused_tail, postprocess, shortcut_source
from ..params.shift_golden import table_shift
from ..params.window_golden import window_acc
from .core_layer import Layer, check_layer, layer_engine, layer_geometry
from .stream_format import beats_vector, pack_vector, unpack_vector, vector_beats


__all__ = ["expected_output", "expected_beats", "unpack_results", "result_shape"]


def expected_output(cfg: CoreConfig, layer: Layer):
    """What the core computes: ``[out_c, out_h, out_w]`` int64 activations.

    The golden model of ``docs/interface.md`` ("The layer the core computes"): the map shifted
    per channel (:func:`~mulfree.params.shift_golden.table_shift`, zero fill) if ``layer.shifts``,
    then :func:`~mulfree.params.layer_golden.conv2d_layer`'s accumulators on the layer's
    engine (``cfg.engines[layer.engine]``: its PE kind and widths), post-processed with
    ``layer.post`` by :func:`~mulfree.params.layer_golden.postprocess` of ``cfg.post_engine``
    (the core's post-processing: the widest accumulator's bias and shift ranges; the result
    does not depend on the width an accumulator in range is held in; on a single-engine core
    it is ``conv2d_layer(cfg.engine, ..., post=layer.post)``); a window run's accumulators
    are :func:`~mulfree.params.window_golden.window_acc`'s (interface 2.3: max, sum or
    depthwise with the layer's engine's terms), then
    :func:`~mulfree.params.layer_golden.fused_tail`: the residual add of
    :func:`~mulfree.params.layer_golden.shortcut_source` of ``layer.shortcut`` (if
    ``layer.residual``; its ``stride`` and ``offset``), the clamp (if ``layer.clamp``) and the
    global pool (if ``layer.pool``: the result is ``[out_c, 1, 1]``).
    """
    check_layer(cfg, layer)
    x = np.asarray(layer.x, dtype=np.int64)
    if layer.shifts is not None:
        shifts = np.asarray(layer.shifts, dtype=np.int64)
        x = table_shift(x, shifts[:, 0], shifts[:, 1])
    if layer.window is not None:
        codes = np.asarray(layer.w_codes)[:, 0] if layer.window == "depthwise" else None
        kernel = np.shape(layer.w_codes)[2:]
        acc = window_acc(layer_engine(cfg, layer), layer.window, x, kernel, layer.stride,
                         layer.padding, codes)
    else:
        acc = conv2d_layer(layer_engine(cfg, layer), x, layer.w_codes, layer.stride,
                           layer.padding)
    # postprocess works on the last axis: channels last, then back (as conv2d_layer does).
    # Maxima and window sums are no engine's sums: any acc_width-bit value.
    lanes = int_range(cfg.acc_width) if layer.window in ("max", "sum") else None
    out = np.moveaxis(postprocess(cfg.post_engine, np.moveaxis(acc, 0, -1), layer.post,
                                  acc_range=lanes), -1, 0)
    clamp = None if layer.clamp is None else tuple(int(v) for v in layer.clamp)
    shortcut, res = None, layer.residual
    if res is not None:
        shortcut = shortcut_source(layer.shortcut, out.shape[0], res.stride, res.offset)
    pool = None if layer.pool is None else int(layer.pool)
    return fused_tail(cfg.engine.act_bits, out, shortcut=shortcut, residual=res, clamp=clamp,
                      pool=pool)


def result_shape(g):
    """``(out_c, out_h, out_w)`` of a run's result, ``(out_c, 1, 1)`` with a global pool."""
    return (g["out_c"], 1, 1) if g["global_pool"] else (g["out_c"], g["out_h"], g["out_w"])


def _result_order(g):
    """``(m, nt)`` of the result vectors in the order ``m_axis`` sends them (with a global
    pool: the one pixel's ``NT`` vectors, ``m = 0``)."""
    if g["global_pool"]:
        return [(0, nt) for nt in range(g["NT"])]
    order = []
    for start in range(0, g["M"], g["m_block"]):
        block = range(start, min(start + g["m_block"], g["M"]))
        order += [(m, nt) for nt in range(g["NT"]) for m in block]
    return order


def expected_beats(cfg: CoreConfig, layer: Layer):
    """``tdata`` of the result beats exactly as ``m_axis`` sends them (``tlast`` on the last).

    ``M * NT`` vectors of ``cols * act_bits`` bits: for each block, for each output tile
    ``nt``, for each pixel ``m`` of the block, the activations of channels
    ``nt*cols .. nt*cols + cols - 1`` (0 beyond ``out_c``). With a global pool: the one
    pixel's ``NT`` vectors, ``nt`` in order. None with ``quiet`` (interface 2.2: the results
    stay in a bank).
    """
    e = cfg.engine
    out = expected_output(cfg, layer)
    g = layer_geometry(cfg, layer)
    if layer.quiet:
        return []
    pixels = out.shape[1] * out.shape[2]
    lanes = np.zeros((g["NT"] * e.cols, pixels), dtype=np.int64)
    lanes[:g["out_c"]] = out.reshape(g["out_c"], pixels)
    beats = []
    for m, nt in _result_order(g):
        vector = pack_vector(lanes[nt * e.cols:(nt + 1) * e.cols, m], e.act_bits)
        beats += vector_beats(cfg, vector, cfg.vector_bits["OUT"])
    return beats


def unpack_results(cfg: CoreConfig, layer: Layer, beats):
    """The activations ``[out_c, out_h, out_w]`` (``[out_c, 1, 1]`` with a global pool)
    carried by the result ``beats`` (``tdata``).

    Raises
    ------
    ValueError
        If the number of beats is not ``results * ceil(cols * act_bits / S)`` (``results``:
        ``M * NT``, or ``NT`` with a global pool), or a bit the
        format says is 0 on output is not (above the vector in its last beat, or a lane of a
        channel at or beyond ``out_c``).
    """
    e = cfg.engine
    g = layer_geometry(cfg, layer)
    if layer.quiet:
        raise ValueError("a quiet layer sends no results (they stay in bank "
                         f"{1 - int(layer.in_bank)}): nothing to unpack")
    bits = cfg.vector_bits["OUT"]
    per = cfg.beats(bits)
    order = _result_order(g)
    if len(beats) != len(order) * per:
        raise ValueError(f"the results of this layer are {len(order)} vectors of {per} beats "
                         f"= {len(order) * per} beats, not {len(beats)}")
    shape = result_shape(g)
    lanes = np.zeros((g["NT"] * e.cols, shape[1] * shape[2]), dtype=np.int64)
    for i, (m, nt) in enumerate(order):
        chunk = beats[i * per:(i + 1) * per]
        if beats_vector(cfg, chunk, per * cfg.stream_width) >> bits:
            raise ValueError(f"result vector {i} (pixel {m}, tile {nt}) has bits set above "
                             f"bit {bits - 1}: {[hex(b) for b in chunk]}")
        lanes[nt * e.cols:(nt + 1) * e.cols, m] = unpack_vector(
            beats_vector(cfg, chunk, bits), e.cols, e.act_bits, signed=True)
    if np.any(lanes[g["out_c"]:]):
        c, m = np.argwhere(lanes[g["out_c"]:])[0]
        raise ValueError(f"result lane of channel {g['out_c'] + c} >= out_c = {g['out_c']} "
                         f"(pixel {m}) is {lanes[g['out_c'] + c, m]}, not 0")
    return lanes[:g["out_c"]].reshape(shape)

