"""Post-training integer quantization of PyTorch models into the export format, and an
integer-exact PyTorch inference of that format.

* :func:`quantize` turns an ``nn.Sequential`` of mulfree / PyTorch layers into an
  :class:`~mulfree.host.export_format.IntModel` (``docs/export_format.md``), choosing every
  scale from calibration data.
* :func:`int_forward` runs an ``IntModel`` in PyTorch on ``int64`` tensors. It is written
  independently of the NumPy golden model (:func:`mulfree.spec.model_golden.run_int_model`)
  and equals it bit for bit.
* :func:`dequantize_output` maps final integer activations back to reals;
  :func:`quantized_forward` is quantize-input, :func:`int_forward`, dequantize in one call.

Quantization rules
------------------
Every scale is a power of two, so every rescale in the network is a shift (the hardware has
no multiplier anywhere, ``docs/numerics.md``, "Post-processing and layers").

**Activations** are signed ``act_bits`` integers; the tensor after layer ``i`` stands for
``q * 2^O_i``. ``O_i`` is the smallest integer with ``max|v| <= (2^(a-1) - 1) * 2^O_i`` over
the calibration data, ``v`` being the real value the *integer* network produces at that point
(calibration runs through the already-quantized layers, so rounding and the BN approximation
below are accounted for). The input exponent comes from ``calib_x`` the same way unless
``input_scale_exp`` is given. Max pooling, flattening and table shifts keep the scale.

**Weights and accumulators.** With input exponent ``E`` and weight exponent ``w_exp`` the
accumulator counts units of ``2^A``, ``A = E + w_exp``:

* shift layers (:class:`~mulfree.host.layers.ShiftLinear`, ``ShiftConv2d``): the layer's own
  codes (``weight_codes()``), exact; ``w_exp = -max_shift``;
* multiplier baseline (``nn.Linear``, ``nn.Conv2d``): signed 8-bit weights in
  ``[-127, 127]`` (symmetric, so a negation is exact), ``w_exp`` the smallest exponent with
  ``max|w| <= 127 * 2^w_exp`` per layer, rounding half up;
* adder layers (``AdderLinear``, ``AdderConv2d``): AdderNet's L1 distance needs ``x`` and
  ``w`` on the *same* scale, so the weights are quantized with the input's exponent
  (``A = E``, term ``-|x - w|`` on ``2^E``), as signed ``act_bits`` integers. The exponent of
  the tensor feeding an adder layer is raised, if needed, to the smallest one holding the
  layer's largest weight (``max|w| <= (2^(a-1) - 1) * 2^E``), so no weight saturates (unless
  ``input_scale_exp`` pins the input's exponent: then weights saturate).

**Post-processing.** ``out = sat(relu?(round_half_up(acc + bias) >> shift))`` per output
channel (:func:`mulfree.spec.layer_golden.postprocess`). The float bias ``b`` becomes
``round_half_up(b * 2^-A)`` on the accumulator grid and ``shift = O - A``. Shifts beyond the
format's range ``[-act_bits, acc_width + 1]`` are clamped (which changes nothing: those ends
already give 0 / saturate every nonzero value); a bias beyond ``acc_width`` bits saturates.

**BatchNorm folding** (BN directly after a weight layer, eval statistics):
``BN(z) = s z + t`` with ``s = gamma / sqrt(var + eps)``, ``t = beta - s * mean`` per channel.

* multiplier layers: folded exactly into the float weights and bias (``w' = s w``,
  ``b' = s b + t``) before weight quantization, the usual BN folding;
* shift and adder layers: a shift weight cannot absorb an arbitrary factor and ``|x - w|``
  does not commute with one, so ``s`` is approximated by ``sign(s) * 2^e``,
  ``e = round(log2|s|)`` (nearest in the log domain, decided exactly by
  :func:`~mulfree.host.layers.round_log2`; relative error of the scale at most
  ``2^(1/2)``), and ``t`` recentred as ``beta - sign(s) 2^e mean`` so the rounding moves no
  channel's centre. That is AdderNet's "BN as a per-channel power-of-two scale plus bias":
  ``bias = round_half_up((sign(s) b + t 2^-e) 2^-A)``, ``shift = O - A - e``. A negative
  ``s`` of a shift layer negates that channel's codes (exact: flip the sign bit); an adder
  layer cannot negate ``-sum|x - w|``, so a BN scale ``<= 0`` on an adder layer is an error.
  A BN scale of exactly 0 on a shift layer zeroes the channel's codes (the output is ``t``).

ReLU sets the ``relu`` flag of the preceding weight layer (through max pooling and
flattening, which commute with it). ``Shift2d`` directly before a convolution becomes the
convolution's per-input-channel table ``shifts`` (kernel 1 or 3 only: the format moves a
channel by at most one pixel). ``nn.Identity`` and dropout are skipped.
"""

import math
from fractions import Fraction

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..spec.post_config import bias_range, shift_range
from .export_format import (IntConv2d, IntFlatten, IntInput, IntLinear, IntMaxPool2d,
                            IntModel, layer_config)
from .layers import AdderConv2d, AdderLinear, Shift2d, ShiftConv2d, ShiftLinear, round_log2


__all__ = ["QuantizeError", "SUPPORTED", "quantize", "int_forward", "dequantize_output",
           "quantized_forward", "output_scale_exp", "layer_acc", "postprocess_torch",
           "QATWrapper", "fake_quant", "round_half_up"]


#: What :func:`quantize` accepts, for error messages.
SUPPORTED = ("ShiftLinear", "ShiftConv2d", "AdderLinear", "AdderConv2d", "nn.Linear",
             "nn.Conv2d", "nn.BatchNorm1d/2d (directly after a weight layer)", "nn.ReLU",
             "nn.Flatten", "nn.MaxPool2d(2)", "Shift2d (kernel 1 or 3, directly before a "
             "convolution)", "nn.Identity", "nn.Dropout", "nested nn.Sequential")

_SKIPPED = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
            nn.AlphaDropout, nn.FeatureAlphaDropout)
_LINEAR = (ShiftLinear, AdderLinear, nn.Linear)
_CONV = (ShiftConv2d, AdderConv2d, nn.Conv2d)

#: Largest number of elements of one ``[rows, N, K]`` adder intermediate.
_CHUNK = 1 << 22


class QuantizeError(ValueError):
    """A model :func:`quantize` cannot convert; the message names the module's path."""


# Integer inference (torch, int64) -----------------------------------------------------------

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


def _run_layer(layer, x):
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

    Bit for bit :func:`mulfree.spec.model_golden.run_int_model`. ``x_int`` (tensor or array)
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
        x = _run_layer(layer, x)
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
    from ..spec.model_golden import quantize_input
    x = x_float.detach().cpu().numpy() if torch.is_tensor(x_float) else x_float
    return dequantize_output(int_model, int_forward(int_model, quantize_input(int_model, x)))


# Parsing the model --------------------------------------------------------------------------

def _flatten_modules(module, prefix):
    for name, child in module.named_children():
        path = f"{prefix}.{name}"
        if isinstance(child, nn.Sequential):
            yield from _flatten_modules(child, path)
        else:
            yield path, child


def _unsupported(path, module, why=None):
    what = f"{path} ({type(module).__name__})"
    reason = why or "is not supported"
    return QuantizeError(f"{what} {reason}; quantize supports: {', '.join(SUPPORTED)}")


def _conv_geometry(path, m):
    """``(kh, kw), stride, padding`` of a convolution, checked against what the format holds."""
    if isinstance(m, nn.Conv2d):
        if m.groups != 1 or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros":
            raise _unsupported(path, m, "must have groups=1, dilation=1 and padding_mode "
                                        "'zeros'")
        kh, kw = m.kernel_size
        stride = tuple(m.stride)
        padding = m.padding
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            if stride != (1, 1) or kh % 2 == 0 or kw % 2 == 0:
                raise _unsupported(path, m, "has padding 'same' with an even kernel or stride")
            padding = (kh // 2, kw // 2)
        return (kh, kw), stride, tuple(padding)
    return tuple(m.kernel_size), tuple(m.stride), tuple(m.padding)


def _parse(model):
    if not isinstance(model, nn.Sequential):
        raise QuantizeError(f"model must be an nn.Sequential, not {type(model).__name__}; "
                            f"quantize supports: {', '.join(SUPPORTED)}")
    items, pending = [], None
    for path, m in _flatten_modules(model, "model"):
        if isinstance(m, _SKIPPED):
            continue
        if pending is not None and not isinstance(m, _CONV):
            raise _unsupported(pending[0], pending[1], f"must be directly followed by a "
                                                       f"convolution, not {type(m).__name__} "
                                                       f"({path})")
        if isinstance(m, Shift2d):
            if m.kernel not in (1, 3):
                raise _unsupported(path, m, f"has kernel {m.kernel}; the format shifts a "
                                            f"channel by at most one pixel (kernel 1 or 3)")
            pending = (path, m)
        elif isinstance(m, _LINEAR + _CONV):
            pe = ("shift" if isinstance(m, (ShiftLinear, ShiftConv2d)) else
                  "adder" if isinstance(m, (AdderLinear, AdderConv2d)) else "mult")
            item = dict(kind="weight", path=path, module=m, pe=pe,
                        conv=isinstance(m, _CONV), bn=None, relu=False, shift2d=pending)
            if item["conv"]:
                item["geometry"] = _conv_geometry(path, m)
            if pending is not None and pending[1].channels != m.in_channels:
                raise _unsupported(pending[0], pending[1], f"has {pending[1].channels} "
                                                           f"channels, {path} takes "
                                                           f"{m.in_channels}")
            pending = None
            items.append(item)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            prev = items[-1] if items else None
            want = nn.BatchNorm2d if prev is not None and prev.get("conv") else nn.BatchNorm1d
            if prev is None or prev["kind"] != "weight" or prev["bn"] is not None \
                    or prev["relu"] or type(m) is not want:
                raise _unsupported(path, m, "must directly follow a weight layer (BatchNorm1d "
                                            "a linear one, BatchNorm2d a convolution)")
            if m.running_mean is None or m.running_var is None:
                raise _unsupported(path, m, "has no running statistics "
                                            "(track_running_stats=False)")
            n = m.num_features
            out = prev["module"].out_features if not prev["conv"] \
                else prev["module"].out_channels
            if n != out:
                raise _unsupported(path, m, f"has {n} features, {prev['path']} gives {out}")
            prev["bn"] = (path, m)
        elif isinstance(m, nn.ReLU):
            target = next((it for it in reversed(items) if it["kind"] == "weight"), None)
            if target is None:
                raise _unsupported(path, m, "has no weight layer before it to fold into")
            target["relu"] = True
        elif isinstance(m, nn.MaxPool2d):
            def two(v):
                return v if isinstance(v, tuple) else (v, v)
            stride = m.stride if m.stride is not None else m.kernel_size
            if two(m.kernel_size) != (2, 2) or two(stride) != (2, 2) \
                    or two(m.padding) != (0, 0) or two(m.dilation) != (1, 1) \
                    or m.ceil_mode or m.return_indices:
                raise _unsupported(path, m, "must be MaxPool2d(2) (kernel 2, stride 2, no "
                                            "padding, dilation 1, ceil_mode False)")
            items.append(dict(kind="maxpool2d", path=path))
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise _unsupported(path, m, "must flatten from dimension 1 to the end")
            items.append(dict(kind="flatten", path=path))
        else:
            raise _unsupported(path, m)
    if pending is not None:
        raise _unsupported(pending[0], pending[1], "must be directly followed by a "
                                                   "convolution, not the end of the model")
    if not any(it["kind"] == "weight" for it in items):
        raise QuantizeError("model has no weight layer; quantize supports: "
                            + ", ".join(SUPPORTED))
    return items


# Quantization -------------------------------------------------------------------------------

def _exp_for(maxabs, qmax):
    """Smallest integer ``e`` with ``maxabs <= qmax * 2^e`` (``None`` for ``maxabs == 0``).

    Compared in exact rationals (``Fraction``): ``qmax * 2^e`` is not a float for every ``e``
    (it underflows for tiny ``maxabs``), and a float ``log2`` only gives a first guess.
    """
    maxabs = float(maxabs)
    if not math.isfinite(maxabs):
        raise QuantizeError(f"calibration produced a non-finite value ({maxabs})")
    if maxabs <= 0:
        return None
    exact = Fraction(maxabs)
    e = math.frexp(maxabs)[1] - math.frexp(qmax)[1]
    while exact > qmax * Fraction(2) ** e:
        e += 1
    while exact <= qmax * Fraction(2) ** (e - 1):
        e -= 1
    return e


def round_half_up(v):
    """``floor(v + 1/2)`` exactly, element-wise, in ``v``'s floating dtype.

    ``v + 0.5`` itself rounds: it turns 0.49999999999999994 into 1.0 (and, in float32,
    0.49999997 into 1.0). ``f = floor(v)`` and the fraction ``v - f`` are exact for every
    finite float (the fraction's bits are a subset of ``v``'s), so ``f + (v - f >= 1/2)`` is
    the exact round half up (ties towards +infinity) of :func:`mulfree.spec.model_golden.
    quantize_input`. Infinities stay infinite, NaN stays NaN.
    """
    f = torch.floor(v)
    # For an infinite v, v - f is NaN and the comparison False: f = v stays.
    return f + (v - f >= 0.5).to(f.dtype)


_round_half_up = round_half_up


def _bn_affine(bn):
    """``(s, t)`` float64 with ``BN(z) = s z + t`` (eval statistics)."""
    var = bn.running_var.detach().to(torch.float64)
    mean = bn.running_mean.detach().to(torch.float64)
    s = 1.0 / torch.sqrt(var + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight.detach().to(torch.float64)
    t = -s * mean
    if bn.bias is not None:
        t = t + bn.bias.detach().to(torch.float64)
    return s, t


def _weight_arrays(item, in_exp, act_bits):
    """``(codes in the format layout, weight_bits, w_exp, sigma, e, bias_u)``.

    ``bias_u`` is the real bias on the grid before the power-of-two BN scale ``2^e``
    (``sigma b + t 2^-e``); ``sigma`` in {-1, +1} is the sign folded into the weights.
    """
    m, pe, path = item["module"], item["pe"], item["path"]
    n = m.out_channels if item["conv"] else m.out_features
    b = m.bias.detach().to(torch.float64) if m.bias is not None \
        else torch.zeros(n, dtype=torch.float64)
    s = t = None
    if item["bn"] is not None:
        s, t = _bn_affine(item["bn"][1])
    sigma = torch.ones(n, dtype=torch.float64)
    e = torch.zeros(n, dtype=torch.float64)
    if pe == "mult":
        w = m.weight.detach().to(torch.float64)
        if s is not None:                      # exact BN folding into the float weights
            w = w * s.reshape(-1, *([1] * (w.dim() - 1)))
            b = s * b + t
        qmax = 127
        w_exp = _exp_for(w.abs().max(), qmax)
        w_exp = 0 if w_exp is None else w_exp
        codes = _round_half_up(torch.ldexp(w, torch.tensor(-w_exp))).clamp(-qmax, qmax)
        codes = codes.to(torch.int64).numpy()
        weight_bits = 8
        bias_u = b
    else:
        if s is not None:
            if pe == "adder" and bool((s <= 0).any()):
                bad = (s <= 0).nonzero().flatten().tolist()
                raise QuantizeError(
                    f"{item['bn'][0]} (BatchNorm) has a scale gamma/sigma <= 0 on channels "
                    f"{bad[:8]} after the adder layer {path}: -sum|x - w| cannot be negated "
                    f"by the shift-only post-processing")
            sigma = torch.where(s < 0, -1.0, 1.0).to(torch.float64)
            nonzero = s != 0
            # round(log2|s|) exactly (a float log2 picks the wrong power near 2^(k+1/2)).
            e = torch.where(nonzero, round_log2(s).to(s.dtype), torch.zeros_like(s))
            # BN(z) = s (z - mean) + beta: with s replaced by s_q = sign(s) 2^e the bias keeps
            # the centre, t_q = beta - s_q mean (not beta - s mean, which after an adder
            # layer's large negative mean would shift every output far off).
            s_q = torch.where(nonzero, sigma * torch.exp2(e), torch.zeros_like(s))
            mean = item["bn"][1].running_mean.detach().to(torch.float64)
            t = t + (s - s_q) * mean
            bias_u = sigma * b + t * torch.exp2(-e)
            bias_u = torch.where(nonzero, bias_u, t)       # a zero scale: the output is t
        else:
            nonzero = torch.ones(n, dtype=torch.bool)
            bias_u = b
        if pe == "shift":
            weight_bits = int(m.weight_bits)
            codes = np.asarray(m.weight_codes(), dtype=np.int64)
            e_field = codes & ((1 << (weight_bits - 1)) - 1)
            view = (-1,) + (1,) * (codes.ndim - 1)
            neg = (sigma < 0).numpy().reshape(view)
            codes = np.where(neg & (e_field != 0), codes ^ (1 << (weight_bits - 1)), codes)
            codes = np.where(nonzero.numpy().reshape(view), codes, 0)
            w_exp = -m.max_shift
        else:                                               # adder: the input's scale
            qmax = (1 << (act_bits - 1)) - 1
            w = m.weight.detach().to(torch.float64)
            codes = _round_half_up(torch.ldexp(w, torch.tensor(-in_exp))) \
                .clamp(-qmax - 1, qmax).to(torch.int64).numpy()
            weight_bits = act_bits
            w_exp = 0
    if not item["conv"]:
        codes = codes.T                                     # torch [N, K] -> format [K, N]
    return np.ascontiguousarray(codes), weight_bits, w_exp, sigma, e, bias_u


def _adder_weight_exp(item, act_bits):
    w = item["module"].weight.detach().to(torch.float64)
    return _exp_for(w.abs().max(), (1 << (act_bits - 1)) - 1)


def quantize(model, calib_x, *, act_bits=8, input_scale_exp=None) -> IntModel:
    """Post-training integer quantization of ``model`` into an :class:`IntModel`.

    Parameters
    ----------
    model : torch.nn.Sequential
        Of the modules listed in :data:`SUPPORTED` (nested ``Sequential`` are flattened);
        BatchNorm uses its running statistics. The model is not modified.
    calib_x : float tensor ``[B, C, H, W]`` or ``[B, features]``
        Calibration inputs; every activation exponent is chosen from them (module docstring).
    act_bits : int
        Width of every activation (2..16).
    input_scale_exp : int, optional
        The input's exponent; default: from ``calib_x``.

    Returns
    -------
    IntModel
        Validated; ``output`` is ``"argmax"`` if the model ends with a vector, else ``"none"``.

    Raises
    ------
    QuantizeError
        For an unsupported module or arrangement (naming the module's path, e.g.
        ``model.2.1``) or a BN that cannot be folded.
    """
    if isinstance(act_bits, bool) or not isinstance(act_bits, int) or not 2 <= act_bits <= 16:
        raise ValueError(f"act_bits must be an integer in 2..16, not {act_bits!r}")
    items = _parse(model)
    x = torch.as_tensor(calib_x).detach().to(torch.float64)
    if x.dim() not in (2, 4) or x.shape[0] < 1:
        raise ValueError(f"calib_x must be a batch [B, features] or [B, C, H, W], "
                         f"not {tuple(x.shape)}")
    qmax = (1 << (act_bits - 1)) - 1

    # The exponent each producer must at least give its output: an adder consumer's weights.
    required = {}                       # item index (-1 = the input) -> minimal exponent
    producer = -1
    for i, it in enumerate(items):
        if it["kind"] != "weight":
            continue
        if it["pe"] == "adder":
            need = _adder_weight_exp(it, act_bits)
            if need is not None:
                required[producer] = max(required.get(producer, need), need)
        producer = i

    def pick(maxabs, idx):
        e = _exp_for(maxabs, qmax)
        need = required.get(idx)
        if e is None:
            e = need if need is not None else 0
        return e if need is None else max(e, need)

    if input_scale_exp is None:
        in_exp = pick(x.abs().max(), -1)
    else:
        in_exp = int(input_scale_exp)
    model_input = IntInput(tuple(x.shape[1:]), act_bits, in_exp)
    from ..spec.model_golden import quantize_input
    probe = IntModel(model_input, [IntFlatten()])       # only its input is used
    xq = torch.as_tensor(quantize_input(probe, x.numpy()))

    layers, exp = [], in_exp
    for i, it in enumerate(items):
        if it["kind"] == "flatten":
            layer = IntFlatten()
        elif it["kind"] == "maxpool2d":
            layer = IntMaxPool2d()
        else:
            codes, wb, w_exp, sigma, e, bias_u = _weight_arrays(it, exp, act_bits)
            acc_exp = exp + w_exp
            n = codes.shape[0] if it["conv"] else codes.shape[1]
            bias = _round_half_up(torch.ldexp(bias_u, torch.tensor(-acc_exp)))
            common = dict(pe=it["pe"], codes=codes, bias=np.zeros(n, np.int64),
                          shift=np.zeros(n, np.int64), relu=it["relu"], act_bits=act_bits,
                          weight_bits=wb)
            if it["conv"]:
                (_, _), stride, padding = it["geometry"]
                shifts = None
                if it["shift2d"] is not None:
                    shifts = np.asarray(it["shift2d"][1].offsets, dtype=np.int64)
                layer = IntConv2d(stride=stride, padding=padding, shifts=shifts, **common)
            else:
                layer = IntLinear(**common)
            cfg = layer_config(layer, it["path"])
            blo, bhi = bias_range(cfg)
            if bool(torch.isnan(bias).any()):
                raise QuantizeError(f"{it['path']} has a bias (with its BatchNorm) that is "
                                    f"NaN: {bias_u.tolist()[:8]}")
            # Saturate while still a float (+-inf included): a float beyond int64 has no
            # defined int64 conversion (it wraps to -2^63 in practice, the wrong end).
            bias = bias.clamp(blo, bhi).to(torch.int64).clamp(blo, bhi)
            acc = layer_acc(layer, xq)                     # channels last
            real = torch.ldexp((acc + bias).to(torch.float64),
                               (acc_exp + e).to(torch.int64))
            if it["relu"]:
                real = real.clamp(min=0)
            out_exp = pick(real.abs().max(), i)
            slo, shi = shift_range(cfg)
            shift = (out_exp - acc_exp - e).to(torch.int64).clamp(slo, shi)
            layer.bias = bias.numpy()
            layer.shift = shift.numpy()
            layer.out_scale_exp = int(out_exp)
            exp = out_exp
        layers.append(layer)
        xq = _run_layer(layer, xq)

    int_model = IntModel(model_input, layers, output="argmax" if xq.dim() == 2 else "none")
    int_model.validate()
    return int_model


# Quantization-aware fine-tuning ------------------------------------------------------------

def _ste(value, like):
    """``value`` forward, identity gradient to ``like``."""
    return like + (value - like).detach()


def fake_quant(x, exp, act_bits):
    """``clamp(round_half_up(x 2^-exp), act_range) * 2^exp`` with a straight-through gradient."""
    lo, hi = -(1 << (act_bits - 1)), (1 << (act_bits - 1)) - 1
    q = torch.ldexp(round_half_up(torch.ldexp(x.detach(), torch.tensor(-exp))).clamp(lo, hi),
                    torch.tensor(exp))
    return _ste(q, x)


class QATWrapper(nn.Module):
    """Quantization-aware fine-tuning of a model :func:`quantize` accepts (straight-through).

    The forward pass is the float model with everything :func:`quantize` will do simulated:
    the input and every weight layer's output (after its BN and ReLU) fake-quantized to
    ``act_bits`` with the exponents of the quantized model; multiplier weights (BN folded in)
    fake-quantized to 8 bits with their power-of-two scale; adder weights fake-quantized on
    their input's scale; the BN scale of shift and adder layers replaced by its power of two
    ``sign(s) 2^round(log2|s|)``. Every rounding has a straight-through (identity) gradient.

    Keep it simple: BatchNorm always uses its *running* statistics (frozen BN, as usual when
    fine-tuning a quantized model; ``gamma`` and ``beta`` still learn) and the activation
    exponents are fixed until :meth:`recalibrate` (call it every few steps while the ranges
    move, and at the end); :meth:`to_int` gives the :class:`IntModel`. Biases are rounded
    onto the accumulator grid as :func:`quantize` does, so the float output equals
    :func:`quantized_forward` of ``self.int_model`` up to float summation order (in float64:
    exactly, or a rare one-LSB difference at a rounding tie). Clamps pass the gradient
    unchanged (plain straight-through).

    Parameters
    ----------
    model : nn.Sequential
        Trained in place (the wrapper holds it as ``self.model``).
    calib_x : tensor
        Calibration inputs for the exponents.
    act_bits, input_scale_exp
        As :func:`quantize`.
    """

    def __init__(self, model, calib_x, *, act_bits=8, input_scale_exp=None):
        super().__init__()
        self.model = model
        self.act_bits = act_bits
        self.input_scale_exp = input_scale_exp
        self._items = _parse(model)
        self.recalibrate(calib_x)

    def recalibrate(self, calib_x):
        """Choose the exponents again (:func:`quantize` on ``calib_x``); returns the model."""
        self.int_model = quantize(self.model, calib_x, act_bits=self.act_bits,
                                  input_scale_exp=self.input_scale_exp)
        self.in_exp = int(self.int_model.input.scale_exp)
        self.out_exps = [getattr(layer, "out_scale_exp", None)
                         for layer in self.int_model.layers]
        return self.int_model

    def to_int(self, calib_x):
        """The :class:`IntModel` of the current weights: :meth:`recalibrate` on ``calib_x``."""
        return self.recalibrate(calib_x)

    def forward(self, x):
        a = self.act_bits
        x = fake_quant(x, self.in_exp, a)
        exp = self.in_exp
        for item, out_exp in zip(self._items, self.out_exps):
            if item["kind"] == "maxpool2d":
                x = F.max_pool2d(x, 2)
            elif item["kind"] == "flatten":
                x = x.flatten(1)
            else:
                if item["shift2d"] is not None:
                    x = item["shift2d"][1](x)
                x = self._weight_layer(item, x, exp)
                if item["relu"]:
                    x = F.relu(x)
                x = fake_quant(x, out_exp, a)
                exp = out_exp
        return x

    def _weight_layer(self, item, x, in_exp):
        m, pe = item["module"], item["pe"]
        bn = item["bn"][1] if item["bn"] is not None else None
        b = m.bias if m.bias is not None else m.weight.new_zeros(m.weight.shape[0])
        if pe == "mult":
            w = m.weight
            if bn is not None:                  # exact folding, as quantize() does
                s, t = _bn_affine_grad(bn)
                w = w * s.reshape(-1, *([1] * (w.dim() - 1)))
                b = s * b + t
            w_exp = _exp_for(w.detach().abs().max(), 127)
            w_exp = 0 if w_exp is None else w_exp
            wq = _grid(w, w_exp, -127, 127)
            z = _weight_only(item, x, wq)
            return z + _grid(b, in_exp + w_exp).reshape((1, -1) + (1,) * (z.dim() - 2))
        if pe == "shift":
            z = _weight_only(item, x, m._weight())
            acc_exp = in_exp - m.max_shift
        else:
            qmax = (1 << (self.act_bits - 1)) - 1
            z = _adder_forward(m, x, _grid(m.weight, in_exp, -qmax - 1, qmax), item["conv"])
            acc_exp = in_exp
        view = (1, -1) + (1,) * (z.dim() - 2)
        if bn is None:
            return z + _grid(b, acc_exp).reshape(view)
        # BN as sign(s) 2^e (power of two per channel) plus a bias on the accumulator grid:
        # y = sign(s) 2^e z + 2^e round(sign(s) b + t 2^-e), exactly what quantize() encodes.
        s, t = _bn_affine_grad(bn)
        with torch.no_grad():
            nonzero = s != 0
            sigma = torch.where(s < 0, -1.0, 1.0).to(s.dtype)
            e = torch.where(nonzero, round_log2(s).to(s.dtype), torch.zeros_like(s))
        s_q = _ste(torch.where(nonzero, sigma * torch.exp2(e), torch.zeros_like(s)), s)
        t = t + (s - s_q.detach()) * bn.running_mean      # keep the centre (see quantize)
        bias_u = torch.where(nonzero, sigma * b + t * torch.exp2(-e), t)
        return z * s_q.reshape(view) + (torch.exp2(e) * _grid(bias_u, acc_exp)).reshape(view)

def _grid(v, exp, lo=None, hi=None):
    """``v`` rounded half up onto the grid ``2^exp`` (optionally clamped to ``[lo, hi]``
    steps), straight-through."""
    q = round_half_up(torch.ldexp(v.detach(), torch.tensor(-exp)))
    if lo is not None:
        q = q.clamp(lo, hi)
    return _ste(torch.ldexp(q, torch.tensor(exp)), v)


def _weight_only(item, x, w):
    """The weight layer's float product with weights ``w`` and no bias."""
    if item["conv"]:
        _, stride, padding = item["geometry"]
        return F.conv2d(x, w, None, stride, padding)
    return F.linear(x, w)


def _bn_affine_grad(bn):
    """``(s, t)`` of a BN with its running statistics, differentiable in gamma and beta."""
    s = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight
    t = -s * bn.running_mean
    if bn.bias is not None:
        t = t + bn.bias
    return s, t


def _adder_forward(m, x, w, conv):
    """An adder layer's float product ``-sum|x - w|`` with the weights ``w``, no bias."""
    from .layers import adder_matmul
    if not conv:
        lead = x.shape[:-1]
        return adder_matmul(x.reshape(-1, m.in_features), w).reshape(*lead, m.out_features)
    n, _, h, wd = x.shape
    kh, kw = m.kernel_size
    (sy, sx), (py, px) = m.stride, m.padding
    oh, ow = (h + 2 * py - kh) // sy + 1, (wd + 2 * px - kw) // sx + 1
    cols = F.unfold(x, m.kernel_size, padding=m.padding, stride=m.stride)
    cols = cols.transpose(1, 2).reshape(n * oh * ow, -1)
    y = adder_matmul(cols, w.reshape(m.out_channels, -1))
    return y.reshape(n, oh, ow, m.out_channels).permute(0, 3, 1, 2)
