"""Integer-exact PyTorch inference of the export format: :func:`int_forward` and its pieces.

:func:`int_forward` runs an :class:`~mulfree.host.export_format.IntModel` in PyTorch on
``int64`` tensors. It is written independently of the NumPy golden model
(:func:`mulfree.params.model_golden.run_int_model`) and equals it bit for bit.
:func:`dequantize_output` maps final integer activations back to reals;
:func:`quantized_forward` is quantize-input, :func:`int_forward`, dequantize in one call.
:func:`layer_acc`, :func:`postprocess_torch` and :func:`run_layer` are the steps of one layer,
which the quantizer (:mod:`mulfree.host.ptq`) also uses to calibrate on the integer network.
Part of :mod:`mulfree.host.quant`, which re-exports it.
"""

import numpy as np
import torch
from torch.nn import functional as F

from .export_format import IntModel


__all__ = ["int_forward", "dequantize_output", "quantized_forward", "output_scale_exp",
           "layer_acc", "postprocess_torch", "run_layer"]


#: Largest number of elements of one ``[rows, N, K]`` adder intermediate.
_CHUNK = 1 << 22


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
    """``acc[m, n] = sum_k term(x[m, k], w[k, n])`` on int64 tensors."""
    if pe != "adder":
        return x @ w                      # integer matmul: exact (acc fits acc_width <= 63)
    m, k = x.shape
    n = w.shape[1]
    out = torch.empty((m, n), dtype=torch.int64)
    step = max(1, _CHUNK // max(1, n * k))
    for lo in range(0, m, step):
        out[lo:lo + step] = -(x[lo:lo + step, :, None] - w[None]).abs().sum(1)
    return out


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


def _im2col(x, kh, kw, stride, padding):
    """``[B, C, H, W] -> [B, OH, OW, C*kh*kw]``, column ``(c*kh + ky)*kw + kx``, zero padded."""
    (sy, sx), (py, px) = stride, padding
    b, c, h, w = x.shape
    oh, ow = (h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1
    xp = F.pad(x, (px, px, py, py))
    cols = torch.empty((b, oh, ow, c, kh, kw), dtype=x.dtype)
    for ky in range(kh):
        for kx in range(kw):
            cols[..., ky, kx] = xp[:, :, ky:ky + sy * (oh - 1) + 1:sy,
                                   kx:kx + sx * (ow - 1) + 1:sx].permute(0, 2, 3, 1)
    return cols.reshape(b, oh, ow, c * kh * kw)


def layer_acc(layer, x):
    """Accumulators of an ``IntLinear`` / ``IntConv2d`` for int64 inputs ``x`` (batched).

    Linear: ``[B, K] -> [B, N]``; conv: ``[B, C, H, W] -> [B, OH, OW, O]`` (channels last).
    """
    w = _decode(layer)
    if layer.kind == "linear":
        return _reduce(layer.pe, x, w)
    if layer.shifts is not None:
        x = _table_shift(x, layer.shifts)
    o, c, kh, kw = w.shape
    cols = _im2col(x, kh, kw, tuple(layer.stride), tuple(layer.padding))
    b, oh, ow, k = cols.shape
    return _reduce(layer.pe, cols.reshape(-1, k), w.reshape(o, k).T).reshape(b, oh, ow, o)


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
    return v.clamp(-(1 << (act_bits - 1)), (1 << (act_bits - 1)) - 1)


def run_layer(layer, x):
    """One layer of an ``IntModel`` on a batch of int64 activations (channels first)."""
    if layer.kind == "flatten":
        return x.reshape(x.shape[0], -1)
    if layer.kind == "maxpool2d":
        return _maxpool(x)
    acc = layer_acc(layer, x)
    out = postprocess_torch(acc, layer.bias, layer.shift, layer.relu, int(layer.act_bits))
    return out if layer.kind == "linear" else out.permute(0, 3, 1, 2).contiguous()


def _maxpool(x):
    b, c, h, w = x.shape
    x = x[:, :, :h // 2 * 2, :w // 2 * 2].reshape(b, c, h // 2, 2, w // 2, 2)
    return x.amax(dim=(3, 5))


def int_forward(int_model: IntModel, x_int):
    """Final integer activations of ``int_model`` for integer inputs, in PyTorch (int64).

    Bit for bit :func:`mulfree.params.model_golden.run_int_model`. ``x_int`` (tensor or array)
    has the input's shape or a batch ``(B, *shape)``; the result (an int64 tensor) is batched
    the same way.

    Raises
    ------
    ExportError
        If the model is invalid.
    ValueError
        If ``x_int`` has the wrong shape or lies outside the input's ``act_bits``.
    """
    int_model.validate()
    x = torch.as_tensor(np.asarray(x_int) if not torch.is_tensor(x_int) else x_int)
    if x.dtype.is_floating_point or x.dtype == torch.bool:
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
        raise ValueError(f"x_int must lie in [{lo}, {hi}] (input act_bits = {a})")
    for layer in int_model.layers:
        x = run_layer(layer, x)
    return x if batched else x[0]


def output_scale_exp(int_model: IntModel):
    """The exponent of the final activations: ``q`` stands for ``q * 2^exp``."""
    exp = int(int_model.input.scale_exp)
    for layer in int_model.layers:
        if layer.kind in ("linear", "conv2d"):
            exp = int(layer.out_scale_exp)
    return exp


def dequantize_output(int_model: IntModel, y_int):
    """Real values (float64 tensor) of final integer activations: ``y * 2^out_scale_exp``."""
    y = torch.as_tensor(np.asarray(y_int) if not torch.is_tensor(y_int) else y_int)
    return torch.ldexp(y.to(torch.float64),
                       torch.tensor(output_scale_exp(int_model), dtype=torch.int64))


def quantized_forward(int_model: IntModel, x_float):
    """Quantize real inputs (the format's rule), :func:`int_forward`, dequantize."""
    from ..params.model_golden import quantize_input
    x = x_float.detach().cpu().numpy() if torch.is_tensor(x_float) else x_float
    return dequantize_output(int_model, int_forward(int_model, quantize_input(int_model, x)))
