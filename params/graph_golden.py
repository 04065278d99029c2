"""The golden model of an integer graph: what every node kind computes, on batches.

Written from ``docs/numerics.md`` ("Post-processing and layers", "Graphs"). Everything is
``np.int64``; each node saturates its output to its width, and every intermediate is bounded
by the format's limits (:mod:`mulfree.params.int_layers`), so nothing overflows or wraps.

* weight nodes: :func:`~mulfree.params.layer_golden.matmul_layer` and
  :func:`~mulfree.params.layer_golden.conv2d_layer` on the node's
  :func:`~mulfree.params.node_check.layer_config` (``max_k = K``), per group for a depthwise
  convolution, after :func:`~mulfree.params.shift_golden.table_shift` for a convolution's
  input shifts;
* :func:`div_round` is the one rounding rule of average pooling: ``round_half_up(s / d)``,
  exact, by floor division (a shift-and-subtract divider in hardware, no multiplier);
* add: ``sat(relu?(round_shift(sum_i x_i << in_shifts[i], shift)))``; concat:
  ``sat(round_shift(x_i, shifts[i]))`` per input, joined; clamp, padding, pooling and the
  shift kinds only select, compare and move integers.
"""

import numpy as np

from .int_layers import INPUT_NAME
from .layer_golden import PostParams, conv2d_layer, matmul_layer, round_shift
from .node_check import layer_config
from .shift_golden import table_shift


__all__ = ["node_forward", "run_graph", "div_round", "rescale", "NODE_FUNCTIONS"]


def div_round(s, d):
    """``floor((2 s + d) / (2 d))``: ``s / d`` rounded half up (ties towards +infinity), exact.

    ``s`` an int64 array, ``d >= 1`` an integer (``2 s + d`` and ``2 d`` must fit int64: the
    format's limits keep them below ``2^58``).
    """
    s = np.asarray(s, dtype=np.int64)
    return np.floor_divide(2 * s + d, 2 * d)


def _sat(v, bits):
    return np.clip(v, -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def rescale(y, shift, bits):
    """``round_shift(y, shift)`` saturated to signed ``bits``; a left shift first clamps ``y``
    to ``[-2^bits, 2^bits]`` (every larger value saturates anyway), so it stays exact."""
    y = np.asarray(y, dtype=np.int64)
    if shift < 0:
        y = np.clip(y, -(1 << bits), 1 << bits)
    return _sat(round_shift(y, np.int64(shift)), bits)


def _weight(layer, x, where):
    cfg = layer_config(layer, where)
    post = PostParams(layer.bias, layer.shift, layer.relu)
    if layer.kind == "linear":
        return matmul_layer(cfg, x, layer.codes, post)
    groups = int(layer.groups)
    codes = np.asarray(layer.codes)
    per_out = codes.shape[0] // groups
    outs = []
    for sample in x:
        if layer.shifts is not None:
            sample = table_shift(sample, layer.shifts[:, 0], layer.shifts[:, 1])
        if groups == 1:
            outs.append(conv2d_layer(cfg, sample, codes, layer.stride, layer.padding, post))
            continue
        per_in = sample.shape[0] // groups
        parts = []
        for g in range(groups):
            sl = slice(g * per_out, (g + 1) * per_out)
            part_post = PostParams(np.asarray(layer.bias)[sl], np.asarray(layer.shift)[sl],
                                   np.asarray(layer.relu)[sl])
            parts.append(conv2d_layer(cfg, sample[g * per_in:(g + 1) * per_in], codes[sl],
                                      layer.stride, layer.padding, part_post))
        outs.append(np.concatenate(parts))
    return np.stack(outs)


def _windows(x, kernel, stride, padding, fill):
    """``[B, C, OH, OW, kh*kw]`` windows of ``x`` padded with ``fill``."""
    (kh, kw), (sy, sx), (py, px) = kernel, stride, padding
    b, c, h, w = x.shape
    oh, ow = (h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1
    padded = np.full((b, c, h + 2 * py, w + 2 * px), fill, dtype=np.int64)
    padded[:, :, py:py + h, px:px + w] = x
    out = np.empty((b, c, oh, ow, kh * kw), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            out[..., ky * kw + kx] = padded[:, :, ky:ky + sy * (oh - 1) + 1:sy,
                                            kx:kx + sx * (ow - 1) + 1:sx]
    return out


def _maxpool(layer, x):
    # A padded position never wins: every window holds at least one real value (padding is
    # at most half the kernel), and the fill is below every activation.
    return _windows(x, layer.kernel, layer.stride, layer.padding, -(1 << 62)).max(axis=-1)


def _avgpool(layer, x):
    (kh, kw) = layer.kernel
    sums = _windows(x, layer.kernel, layer.stride, layer.padding, 0).sum(axis=-1)
    return _pool_divide(sums, kh * kw, layer.shift, layer.act_bits)


def _pool_divide(sums, n, shift, bits):
    if shift >= 0:
        v = div_round(sums, n << shift)
    else:
        v = div_round(sums << -shift, n)
    return _sat(v, bits)


def _global_avgpool(layer, x):
    b, c, h, w = x.shape
    sums = x.reshape(b, c, h * w).sum(axis=-1).reshape(b, c, 1, 1)
    return _pool_divide(sums, h * w, layer.shift, layer.act_bits)


def _add(layer, *xs):
    y = sum(np.asarray(x, dtype=np.int64) << s for x, s in zip(xs, layer.in_shifts))
    bits = layer.act_bits
    if layer.shift < 0:
        y = np.clip(y, -(1 << bits), 1 << bits)
    v = round_shift(y, np.int64(layer.shift))
    if layer.relu:
        v = np.maximum(v, 0)
    return _sat(v, bits)


def _concat(layer, *xs):
    return np.concatenate([rescale(x, s, layer.act_bits) for x, s in zip(xs, layer.shifts)],
                          axis=1)


def _pad(layer, x):
    c0, c1, t, b, le, r = layer.pads
    return np.pad(x, ((0, 0), (c0, c1), (t, b), (le, r)))


def _shift2d(layer, x):
    off = np.asarray(layer.offsets)
    return np.stack([table_shift(s, off[:, 0], off[:, 1]) for s in x])


def _address_shift(layer, x):
    b, c, h, w = x.shape
    off = np.asarray(layer.offsets, dtype=np.int64)
    flat = x.reshape(b, c * h * w)
    addr = np.arange(c * h * w).reshape(c, h * w) + (off[:, 0] * w + off[:, 1])[:, None]
    addr = addr.reshape(-1)
    inside = (addr >= 0) & (addr < c * h * w)
    return np.where(inside, flat[:, np.clip(addr, 0, c * h * w - 1)], 0).reshape(b, c, h, w)


def _channel_shift(layer, x):
    c = x.shape[1]
    return x[:, (np.arange(c) + int(layer.r)) % c]


#: Node kind -> golden function ``f(layer, *inputs)`` on batches (weight kinds excepted).
NODE_FUNCTIONS = {
    "flatten": lambda layer, x: x.reshape(x.shape[0], -1),
    "maxpool2d": _maxpool,
    "avgpool2d": _avgpool,
    "global_avgpool": _global_avgpool,
    "add": _add,
    "concat": _concat,
    "clamp": lambda layer, x: np.clip(x, layer.lo, layer.hi),
    "pad": _pad,
    "shift2d": _shift2d,
    "address_shift": _address_shift,
    "channel_shift": _channel_shift,
}


def node_forward(layer, inputs, where="layer"):
    """The output of node ``layer`` for its input batches ``inputs`` (a list, int64).

    The node must be valid for those inputs (:func:`mulfree.params.int_model.graph_nodes`).
    """
    if layer.kind in ("linear", "conv2d"):
        return _weight(layer, inputs[0], where)
    return NODE_FUNCTIONS[layer.kind](layer, *inputs)


def run_graph(model, x, *, infos=None, keep=False):
    """The final activations of ``model`` for an int64 batch ``x`` ``[B, *input.shape]``.

    With ``keep=True``, also a dict of every node's output by name (and ``"input"``).
    ``infos`` is :func:`~mulfree.params.int_model.graph_nodes` of the model (computed if
    None). Tensors are dropped once their last reader has run (unless ``keep``).
    """
    infos = model.graph() if infos is None else infos
    last_use = {}
    for info in infos:
        for j in info.sources:
            last_use[j] = info.index
    values = {-1: x}
    kept = {INPUT_NAME: x} if keep else None
    for info in infos:
        layer = model.layers[info.index]
        out = node_forward(layer, [values[j] for j in info.sources], f"layers.{info.index}")
        for j in set(info.sources):
            if last_use.get(j) == info.index and not keep:
                del values[j]
        values[info.index] = out
        if keep:
            kept[info.name] = out
    y = values[infos[-1].index]
    return (y, kept) if keep else y
