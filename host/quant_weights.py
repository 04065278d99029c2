"""One weight layer quantized: codes, bias, shift and output exponent, and the exact roundings.

Shared by both quantizers (:mod:`mulfree.host.ptq` for ``nn.Sequential`` chains and
:mod:`mulfree.host.graph_quant` for captured graphs), which state the rules (``ptq``'s
docstring, "Quantization rules"). A weight layer is an item of
:func:`~mulfree.host.quant_parse.parse_model` (or a captured graph's weight op, the same
dict): ``module``, ``pe``, ``conv``, ``geometry``, ``bn``, ``relu``, ``shift2d``, ``path``.
Part of :mod:`mulfree.host.quant`.
"""

import math
from fractions import Fraction

import numpy as np
import torch

from ..params.config import ArrayConfig
from ..params.post_config import bias_range, shift_range
from .export_format import IntConv2d, IntLinear, layer_config
from .int_inference import layer_acc, postprocess_torch
from .quant_parse import QuantizeError
from .shift_layers import round_log2


__all__ = ["exp_for", "round_half_up", "bn_affine", "weight_arrays",
           "adder_weight_exp", "weight_node"]


def exp_for(maxabs, qmax):
    """Smallest integer ``e`` with ``maxabs <= qmax * 2^e`` (``None`` for ``maxabs == 0``).

    ``maxabs`` is a float, an integer or a ``Fraction``; compared in exact rationals:
    ``qmax * 2^e`` is not a float for every ``e`` (it underflows for tiny ``maxabs``), and a
    float ``log2`` only gives a first guess.
    """
    if not isinstance(maxabs, (Fraction, int)):
        maxabs = float(maxabs)
        if not math.isfinite(maxabs):
            raise QuantizeError(f"calibration produced a non-finite value ({maxabs})")
    if maxabs <= 0:
        return None
    exact = Fraction(maxabs)
    e = math.frexp(float(exact))[1] - math.frexp(qmax)[1] if exact < 2 ** 1000 else 1000
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


def bn_affine(bn):
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


def weight_arrays(item, in_exp, act_bits):
    """``(codes in the format layout, weight_bits, w_exp, sigma, e, bias_u)`` of a weight item.

    ``bias_u`` is the real bias on the grid before the power-of-two BN scale ``2^e``
    (``sigma b + t 2^-e``); ``sigma`` in {-1, +1} is the sign folded into the weights.

    Raises
    ------
    QuantizeError
        For a BN scale ``<= 0`` after an adder layer.
    """
    m, pe, path = item["module"], item["pe"], item["path"]
    n = m.out_channels if item["conv"] else m.out_features
    b = m.bias.detach().to(torch.float64) if m.bias is not None \
        else torch.zeros(n, dtype=torch.float64)
    s = t = None
    if item["bn"] is not None:
        s, t = bn_affine(item["bn"][1])
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
        codes = round_half_up(torch.ldexp(w, torch.tensor(-w_exp))).clamp(-qmax, qmax)
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
            lo, hi = -(1 << (act_bits - 1)), (1 << (act_bits - 1)) - 1
            v = torch.ldexp(m.weight.detach().to(torch.float64), torch.tensor(-in_exp))
            codes = round_half_up(v).clamp(lo, hi).to(torch.int64).numpy()
            # A weight beyond the activations' range is clipped to its end, and what it loses
            # is a constant: every x lies in [lo, hi], so -|x - v| = -|x - hi| - (v - hi) for
            # v > hi and -|x - lo| - (lo - v) for v < lo (a padded x = 0 too). The sum of
            # those constants per output channel goes into the bias, exactly.
            excess = (v - hi).clamp(min=0) + (lo - v).clamp(min=0)
            corr = -excess.reshape(n, -1).sum(dim=1)
            bias_u = bias_u + torch.ldexp(corr, torch.tensor(in_exp))
            weight_bits = act_bits
            w_exp = 0
    if not item["conv"]:
        codes = codes.T                                     # torch [N, K] -> format [K, N]
    return np.ascontiguousarray(codes), weight_bits, w_exp, sigma, e, bias_u


def adder_weight_exp(item, act_bits):
    """The smallest input exponent at which an adder layer's clipped weights leave biases that
    fit (``None``: all weights 0).

    At the exponent holding the largest weight (``max|w| <= (2^(a-1) - 1) 2^E``) nothing is
    clipped; each exponent below clips more weights and folds more into the bias
    (:func:`weight_arrays`). The answer is the lowest exponent, going down from the holding
    one, at which every channel's bias still lies in the layer's bias range (signed
    ``acc_width`` bits): there the folding is exact.
    """
    w = item["module"].weight.detach().to(torch.float64)
    hold = exp_for(w.abs().max(), (1 << (act_bits - 1)) - 1)
    if hold is None:
        return None
    k = int(np.prod(w.shape[1:]))
    blo, bhi = bias_range(ArrayConfig(pe="adder", rows=1, cols=1, act_bits=act_bits, max_k=k))

    def fits(exp):
        bias_u = weight_arrays(item, exp, act_bits)[5]
        bias = round_half_up(torch.ldexp(bias_u, torch.tensor(-exp)))
        return bool(((bias >= blo) & (bias <= bhi)).all())

    exp = hold
    while exp > hold - 64 and fits(exp - 1):
        exp -= 1
    return exp


def weight_node(item, xq, in_exp, act_bits, pick, clip=None):
    """Quantize one weight layer on its integer input ``xq``; ``(node, its int64 output)``.

    Parameters
    ----------
    item : dict
        A weight item (module docstring).
    xq : int64 tensor
        The layer's integer input batch (channels first), on the scale ``2^in_exp``.
    in_exp, act_bits : int
    pick : callable
        ``pick(maxabs)`` -> the output exponent for the largest real output magnitude.
    clip : pair of float or None, optional
        Real bounds a clamp after the layer applies (``None`` ends unbounded): the output
        exponent is chosen for the clamped values (what saturates beyond them is clamped
        anyway).

    Returns
    -------
    (IntLinear or IntConv2d, int64 tensor)
        The node (without name and inputs) and its output, channels first.
    """
    codes, wb, w_exp, sigma, e, bias_u = weight_arrays(item, in_exp, act_bits)
    acc_exp = in_exp + w_exp
    n = codes.shape[0] if item["conv"] else codes.shape[1]
    bias = round_half_up(torch.ldexp(bias_u, torch.tensor(-acc_exp)))
    common = dict(pe=item["pe"], codes=codes, bias=np.zeros(n, np.int64),
                  shift=np.zeros(n, np.int64), relu=item["relu"], act_bits=act_bits,
                  weight_bits=wb)
    if item["conv"]:
        (_, _), stride, padding = item["geometry"]
        shifts = None
        if item["shift2d"] is not None:
            shifts = np.asarray(item["shift2d"][1].offsets, dtype=np.int64)
        layer = IntConv2d(stride=stride, padding=padding, shifts=shifts,
                          groups=int(getattr(item["module"], "groups", 1)), **common)
    else:
        layer = IntLinear(**common)
    cfg = layer_config(layer, item["path"])
    blo, bhi = bias_range(cfg)
    if bool(torch.isnan(bias).any()):
        raise QuantizeError(f"{item['path']} has a bias (with its BatchNorm) that is "
                            f"NaN: {bias_u.tolist()[:8]}")
    # Saturate while still a float (+-inf included): a float beyond int64 has no defined
    # int64 conversion (it wraps to -2^63 in practice, the wrong end).
    bias = bias.clamp(blo, bhi).to(torch.int64).clamp(blo, bhi)
    acc = layer_acc(layer, xq)                     # channels last
    real = torch.ldexp((acc + bias).to(torch.float64), (acc_exp + e).to(torch.int64))
    if item["relu"]:
        real = real.clamp(min=0)
    if clip is not None:
        real = real.clamp(*clip)
    out_exp = pick(real.abs().max())
    slo, shi = shift_range(cfg)
    shift = (out_exp - acc_exp - e).to(torch.int64).clamp(slo, shi)
    layer.bias = bias.numpy()
    layer.shift = shift.numpy()
    layer.out_scale_exp = int(out_exp)
    out = postprocess_torch(acc, layer.bias, layer.shift, layer.relu, act_bits)
    if item["conv"]:
        out = out.permute(0, 3, 1, 2).contiguous()
    return layer, out
