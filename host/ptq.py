"""Post-training integer quantization of PyTorch models into the export format.

:func:`quantize` turns an ``nn.Sequential`` of mulfree / PyTorch layers
(:func:`~mulfree.host.quant_parse.parse_model` says which) into an
:class:`~mulfree.host.export_format.IntModel` (``docs/export_format.md``), choosing every
scale from calibration data run through the integer network
(:mod:`mulfree.host.int_inference`). Part of :mod:`mulfree.host.quant`, which re-exports it.

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
channel (:func:`mulfree.params.layer_golden.postprocess`). The float bias ``b`` becomes
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

from ..params.post_config import bias_range, shift_range
from .export_format import (IntConv2d, IntFlatten, IntInput, IntLinear, IntMaxPool2d,
                            IntModel, layer_config)
from .int_inference import layer_acc, run_layer
from .quant_parse import QuantizeError, parse_model
from .shift_layers import round_log2


__all__ = ["quantize", "round_half_up", "exp_for"]


def exp_for(maxabs, qmax):
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
    the exact round half up (ties towards +infinity) of :func:`mulfree.params.model_golden.
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
        w_exp = exp_for(w.abs().max(), qmax)
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
    return exp_for(w.abs().max(), (1 << (act_bits - 1)) - 1)


def quantize(model, calib_x, *, act_bits=8, input_scale_exp=None) -> IntModel:
    """Post-training integer quantization of ``model`` into an :class:`IntModel`.

    Parameters
    ----------
    model : torch.nn.Sequential
        Of the modules listed in :data:`~mulfree.host.quant_parse.SUPPORTED` (nested
        ``Sequential`` are flattened); BatchNorm uses its running statistics. The model is not
        modified.
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
    items = parse_model(model)
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
        e = exp_for(maxabs, qmax)
        need = required.get(idx)
        if e is None:
            e = need if need is not None else 0
        return e if need is None else max(e, need)

    if input_scale_exp is None:
        in_exp = pick(x.abs().max(), -1)
    else:
        in_exp = int(input_scale_exp)
    model_input = IntInput(tuple(x.shape[1:]), act_bits, in_exp)
    from ..params.model_golden import quantize_input
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
        xq = run_layer(layer, xq)

    int_model = IntModel(model_input, layers, output="argmax" if xq.dim() == 2 else "none")
    int_model.validate()
    return int_model

