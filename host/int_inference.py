"""Integer-exact PyTorch inference of the export format: :func:`int_forward` and its pieces.

:func:`int_forward` runs an :class:`~mulfree.host.export_format.IntModel` (a graph of nodes,
``docs/numerics.md`` "Graphs") in PyTorch on ``int64`` tensors, node by node. It is written
independently of the NumPy golden model (:func:`mulfree.params.model_golden.run_int_model`)
and equals it bit for bit. :func:`dequantize_output` maps final integer activations back to
reals; :func:`quantized_forward` is quantize-input, :func:`int_forward`, dequantize in one call.
:func:`layer_acc`, :func:`postprocess_torch` and :func:`run_node` are the steps of one node,
which the quantizers (:mod:`mulfree.host.ptq`, :mod:`mulfree.host.graph_quant`) also use to
calibrate on the integer network. Part of :mod:`mulfree.host.quant`, which re-exports it.

How each kind is computed here (the golden model's loops are not reused):

* weight nodes: im2col by strided slices, then an ``int64`` matrix product (shift and mult;
  exact, the accumulator fits 63 bits) or ``-cdist(x, w, p=1)`` in float64 (adder: every
  ``|x - w| < 2^16`` and ``K <= 2^31``, so every partial sum is an integer below ``2^53`` and
  exact); a depthwise convolution is the batched form, one batch per channel;
* rounding shifts: ``(y >> s) + bit_(s-1)(y)`` (round half up), left shifts after clamping
  to ``[-2^a, 2^a]``; pooling's division ``floor((2 S + d) / (2 d))`` with ``torch.div``'s
  floor mode;
* pooling windows, padding and the shift kinds by slicing, ``torch.roll`` and index maps.
"""

import numpy as np
import torch
from torch.nn import functional as F

from ..params.int_model import IntModel, graph_nodes


__all__ = ["int_forward", "dequantize_output", "quantized_forward", "output_scale_exp",
           "layer_acc", "postprocess_torch", "round_shift_torch", "pool_sums", "run_node",
           "run_layer"]


#: Most elements of one im2col tensor (128 MiB of int64); larger batches go in pieces.
_CHUNK = 1 << 24


def _decode(layer):
    """The integer weights of a layer as int64 (shift codes decoded: ``sign * 2^(e-1)``)."""
    codes = torch.as_tensor(np.asarray(layer.codes), dtype=torch.int64)
    if layer.pe != "shift":
        return codes
    b = int(layer.weight_bits)
    e = codes & ((1 << (b - 1)) - 1)
    sign = 1 - 2 * (codes >> (b - 1))
    mag = torch.bitwise_left_shift(torch.ones_like(codes), (e - 1).clamp(min=0))
    return torch.where(e == 0, torch.zeros_like(codes), sign * mag)


def _reduce(pe, x, w):
    """``acc[..., m, n] = sum_k term(x[..., m, k], w[..., k, n])`` on int64 tensors.

    ``x`` ``[M, K]`` and ``w`` ``[K, N]``, or batched ``[G, M, K]`` and ``[G, K, N]``.
    """
    if pe != "adder":
        return x @ w                      # integer matmul: exact (acc fits acc_width <= 63)
    # sum |x - w| < K 2^16 <= 2^47: every float64 partial sum is an exact integer.
    dist = torch.cdist(x.to(torch.float64), w.transpose(-1, -2).to(torch.float64), p=1)
    return -dist.to(torch.int64)


def _table_shift(x, shifts):
    """``out[:, c, y, x] = in[:, c, y + dy[c], x + dx[c]]``, zero fill (torch.roll + mask)."""
    shifts = torch.as_tensor(np.asarray(shifts), dtype=torch.int64)
    _, _, h, w = x.shape
    out = torch.zeros_like(x)
    ys = torch.arange(h)[:, None]
    xs = torch.arange(w)[None, :]
    for dy, dx in {(int(a), int(b)) for a, b in shifts.tolist()}:
        chans = ((shifts[:, 0] == dy) & (shifts[:, 1] == dx)).nonzero().flatten()
        rolled = torch.roll(x[:, chans], shifts=(-dy, -dx), dims=(2, 3))
        valid = (ys + dy >= 0) & (ys + dy < h) & (xs + dx >= 0) & (xs + dx < w)
        out[:, chans] = torch.where(valid, rolled, torch.zeros_like(rolled))
    return out


def _patches(x, kernel, stride, padding, fill=0):
    """``[B, C, OH, OW, kh*kw]``: the windows of ``x`` padded with ``fill``, ``ky*kw + kx``."""
    (kh, kw), (sy, sx), (py, px) = kernel, stride, padding
    b, c, h, w = x.shape
    oh, ow = (h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1
    xp = F.pad(x, (px, px, py, py), value=fill) if py or px else x
    out = torch.empty((b, c, oh, ow, kh * kw), dtype=x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            out[..., ky * kw + kx] = xp[:, :, ky:ky + sy * (oh - 1) + 1:sy,
                                        kx:kx + sx * (ow - 1) + 1:sx]
    return out


def layer_acc(layer, x):
    """Accumulators of an ``IntLinear`` / ``IntConv2d`` for int64 inputs ``x`` (batched).

    Linear: ``[B, K] -> [B, N]``; conv: ``[B, C, H, W] -> [B, OH, OW, O]`` (channels last),
    dense (``groups = 1``) or depthwise (``groups = C``: output channel ``o`` reads input
    channel ``o // (O / C)``).
    """
    w = _decode(layer)
    if layer.kind == "linear":
        return _reduce(layer.pe, x, w)
    o, per, kh, kw = w.shape
    (sy, sx), (py, px) = tuple(layer.stride), tuple(layer.padding)
    c, h, wd = x.shape[1:]
    per_sample = c * kh * kw * ((h + 2 * py - kh) // sy + 1) * ((wd + 2 * px - kw) // sx + 1)
    step = max(1, _CHUNK // per_sample)
    if x.shape[0] > step:                 # im2col of a large batch: a piece at a time
        return torch.cat([layer_acc(layer, x[i:i + step]) for i in range(0, x.shape[0], step)])
    if layer.shifts is not None:
        x = _table_shift(x, layer.shifts)
    cols = _patches(x, (kh, kw), tuple(layer.stride), tuple(layer.padding))
    b, c, oh, ow, kk = cols.shape
    if int(layer.groups) == 1:
        # Column (c*kh + ky)*kw + kx, the im2col order of the format's weights.
        cols = cols.permute(0, 2, 3, 1, 4).reshape(b * oh * ow, c * kk)
        acc = _reduce(layer.pe, cols, w.reshape(o, per * kh * kw).T)
        return acc.reshape(b, oh, ow, o)
    m = o // c                                        # filters per input channel
    cols = cols.permute(1, 0, 2, 3, 4).reshape(c, b * oh * ow, kk)
    acc = _reduce(layer.pe, cols, w.reshape(c, m, kk).transpose(1, 2))   # [C, B*OH*OW, m]
    return acc.reshape(c, b, oh, ow, m).permute(1, 2, 3, 0, 4).reshape(b, oh, ow, o)


def _sat(v, bits):
    return v.clamp(-(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def postprocess_torch(acc, bias, shift, relu, act_bits):
    """``sat(relu?(round_half_up((acc + bias) * 2^-shift)))`` over the last axis (channels).

    ``shift > 0``: ``(y >> s) + bit_(s-1)(y)`` = ``floor((y + 2^(s-1)) / 2^s)`` (round half
    up); ``shift < 0``: ``y << -shift`` after clamping ``y`` to ``[-2^a, 2^a]`` (every larger
    value saturates anyway). Exact for every shift amount (``acc + bias`` must fit int64, which
    a validated model guarantees: ``acc_width <= 63``).
    """
    bias = torch.as_tensor(np.asarray(bias), dtype=torch.int64)
    shift = torch.as_tensor(np.asarray(shift), dtype=torch.int64)
    relu = torch.as_tensor(np.asarray(relu, dtype=bool))
    y = acc + bias
    s = shift.clamp(min=0)
    # Both amounts clamp at 63, not s itself: for s >= 64, y >> 63 is already floor(y / 2^s)
    # (0 or -1), and bit s-1 >= 63 of the sign-extended y is bit 63 (the sign). Clamping s to
    # 63 first would round a shift of 64 on bit 62.
    down = (y >> s.clamp(max=63)) + ((y >> (s - 1).clamp(0, 63)) & 1)
    down = torch.where(s > 0, down, y)
    bound = 1 << act_bits
    # |y| <= 2^a after the clamp: any left amount >= a saturates every nonzero y, so amounts
    # beyond a need not (and, beyond 63 - a, must not) be applied.
    up = y.clamp(-bound, bound) << (-shift).clamp(0, act_bits)
    v = torch.where(shift < 0, up, down)
    v = torch.where(relu, v.clamp(min=0), v)
    return _sat(v, act_bits)


def round_shift_torch(y, shift, act_bits):
    """``sat(round_half_up(y * 2^-shift))`` for one integer ``shift`` (any sign), int64.

    The rescaling of an add, a concat's inputs: a right shift rounds half up
    (``(y >> s) + bit_(s-1)(y)``), a left shift is exact after clamping ``y`` to
    ``[-2^a, 2^a]`` (every larger value saturates anyway).
    """
    s = int(shift)
    if s > 0:
        y = (y >> min(s, 63)) + ((y >> min(s - 1, 63)) & 1)
    elif s < 0:
        y = y.clamp(-(1 << act_bits), 1 << act_bits) << min(-s, act_bits)
    return _sat(y, act_bits)


def _divide(sums, n, shift, bits):
    """``sat(round_half_up(sums / (n 2^shift)))``, exactly: ``floor((2 S + d) / (2 d))``."""
    if shift >= 0:
        num, d = sums, n << shift
    else:
        num, d = sums << -shift, n
    return _sat(torch.div(2 * num + d, 2 * d, rounding_mode="floor"), bits)


def _address_shift(x, offsets):
    """Each sample one channel-major buffer; channel ``c`` reads ``(c H + y) W + x + dy W +
    dx``, 0 outside the buffer."""
    b, c, h, w = x.shape
    off = torch.as_tensor(np.asarray(offsets), dtype=torch.int64)
    n = c * h * w
    src = torch.arange(n).reshape(c, h * w) + (off[:, 0] * w + off[:, 1])[:, None]
    src = src.reshape(-1)
    inside = (src >= 0) & (src < n)
    flat = x.reshape(b, n)[:, src.clamp(0, n - 1)]
    return torch.where(inside, flat, torch.zeros_like(flat)).reshape(b, c, h, w)


def _weight_node(layer, x):
    acc = layer_acc(layer, x)
    out = postprocess_torch(acc, layer.bias, layer.shift, layer.relu, int(layer.act_bits))
    return out if layer.kind == "linear" else out.permute(0, 3, 1, 2).contiguous()


def _add(layer, *xs):
    y = xs[0] << int(layer.in_shifts[0])
    for x, s in zip(xs[1:], layer.in_shifts[1:]):
        y = y + (x << int(s))
    bits = int(layer.act_bits)
    s = int(layer.shift)
    if s > 0:
        v = (y >> s) + ((y >> (s - 1)) & 1)
    else:
        v = y.clamp(-(1 << bits), 1 << bits) << -s
    if layer.relu:
        v = v.clamp(min=0)
    return _sat(v, bits)


def _maxpool(layer, x):
    # A padded position never wins: the window always holds a real value, the fill is lower.
    windows = _patches(x, layer.kernel, layer.stride, layer.padding, fill=-(1 << 62))
    return windows.amax(dim=-1)


def pool_sums(layer, x):
    """``(S, N)``: the window sums ``[B, C, OH, OW]`` of an average pooling node (global or
    not) on int64 ``x`` (padded positions add 0) and its window size ``N``."""
    if layer.kind == "global_avgpool":
        return x.sum(dim=(2, 3), keepdim=True), int(x.shape[2] * x.shape[3])
    kh, kw = layer.kernel
    return _patches(x, layer.kernel, layer.stride, layer.padding).sum(dim=-1), kh * kw


def _avgpool(layer, x):
    sums, n = pool_sums(layer, x)
    return _divide(sums, n, int(layer.shift), int(layer.act_bits))


def _pad(layer, x):
    c0, c1, t, b, le, r = (int(p) for p in layer.pads)
    return F.pad(x, (le, r, t, b, c0, c1))


_NODES = {
    "linear": _weight_node,
    "conv2d": _weight_node,
    "flatten": lambda layer, x: x.reshape(x.shape[0], -1),
    "maxpool2d": _maxpool,
    "avgpool2d": _avgpool,
    "global_avgpool": _avgpool,
    "add": _add,
    "concat": lambda layer, *xs: torch.cat(
        [round_shift_torch(x, s, int(layer.act_bits)) for x, s in zip(xs, layer.shifts)], 1),
    "clamp": lambda layer, x: x.clamp(int(layer.lo), int(layer.hi)),
    "pad": _pad,
    "shift2d": lambda layer, x: _table_shift(x, layer.offsets),
    "address_shift": lambda layer, x: _address_shift(x, layer.offsets),
    "channel_shift": lambda layer, x: torch.roll(x, -int(layer.r), dims=1),
}


def run_node(layer, inputs):
    """One node of an ``IntModel`` on its int64 input batches ``inputs`` (a list, channels
    first); the node must be valid for them (:func:`~mulfree.params.int_model.graph_nodes`).
    """
    return _NODES[layer.kind](layer, *inputs)


def run_layer(layer, x):
    """One single-input node on a batch of int64 activations: ``run_node(layer, [x])``."""
    return run_node(layer, [x])


def _as_batch(int_model, x_int):
    x = torch.as_tensor(np.asarray(x_int) if not torch.is_tensor(x_int) else x_int)
    if x.dtype.is_floating_point or x.dtype == torch.bool or x.is_complex():
        raise TypeError(f"x_int must hold integers, not {x.dtype}")
    x = x.to(torch.int64)
    shape = tuple(int_model.input.shape)
    batched = tuple(x.shape[1:]) == shape and x.dim() == len(shape) + 1
    if not batched:
        if tuple(x.shape) != shape:
            raise ValueError(f"x_int must have shape {shape} or (B, "
                             f"{', '.join(map(str, shape))}), not {tuple(x.shape)}")
        x = x[None]
    a = int(int_model.input.act_bits)
    lo, hi = -(1 << (a - 1)), (1 << (a - 1)) - 1
    if x.numel() and (int(x.min()) < lo or int(x.max()) > hi):
        raise ValueError(f"x_int must lie in [{lo}, {hi}] (input act_bits = {a}), not "
                         f"[{int(x.min())}, {int(x.max())}]")
    return x, batched


def int_forward(int_model: IntModel, x_int):
    """Final integer activations of ``int_model`` for integer inputs, in PyTorch (int64).

    Bit for bit :func:`mulfree.params.model_golden.run_int_model`: the graph's nodes run in
    order, each on the outputs of the nodes it reads; a tensor is dropped once its last reader
    has run.

    Parameters
    ----------
    int_model : IntModel
    x_int : int tensor or array
        The input's shape or a batch ``(B, *shape)``, every value in the input's
        ``act_bits``.

    Returns
    -------
    int64 tensor, batched as ``x_int``.

    Raises
    ------
    ExportError
        If the model is invalid.
    TypeError
        If ``x_int`` does not hold integers.
    ValueError
        If ``x_int`` has the wrong shape or lies outside the input's ``act_bits``.
    """
    infos = graph_nodes(int_model)
    x, batched = _as_batch(int_model, x_int)
    last_use = {}
    for info in infos:
        for j in info.sources:
            last_use[j] = info.index
    values = {-1: x}
    for info in infos:
        out = run_node(int_model.layers[info.index], [values[j] for j in info.sources])
        for j in set(info.sources):
            if last_use[j] == info.index:
                del values[j]
        values[info.index] = out
    y = values[infos[-1].index]
    return y if batched else y[0]


def output_scale_exp(int_model: IntModel):
    """The exponent of the final activations (the last node's): ``q`` stands for
    ``q * 2^exp``.

    Raises
    ------
    ExportError
        If the model is invalid.
    """
    return int(graph_nodes(int_model)[-1].scale_exp)


def dequantize_output(int_model: IntModel, y_int):
    """Real values (float64 tensor) of final integer activations: ``y * 2^out_scale_exp``
    (:func:`output_scale_exp`)."""
    y = torch.as_tensor(np.asarray(y_int) if not torch.is_tensor(y_int) else y_int)
    return torch.ldexp(y.to(torch.float64),
                       torch.tensor(output_scale_exp(int_model), dtype=torch.int64))


def quantized_forward(int_model: IntModel, x_float):
    """Quantize real inputs (the format's rule), :func:`int_forward`, dequantize."""
    from ..params.model_golden import quantize_input
    x = x_float.detach().cpu().numpy() if torch.is_tensor(x_float) else x_float
    return dequantize_output(int_model, int_forward(int_model, quantize_input(int_model, x)))
