"""Quantization-aware fine-tuning: :class:`QATWrapper` and :func:`fake_quant`.

The float model trained with everything :func:`~mulfree.host.ptq.quantize` will do simulated
(straight-through gradients), so that the quantized model loses less. Part of
:mod:`mulfree.host.quant`, which re-exports it.
"""

import torch
from torch import nn
from torch.nn import functional as F

from .ptq import exp_for, quantize, round_half_up
from .quant_parse import parse_model
from .shift_layers import round_log2


__all__ = ["QATWrapper", "fake_quant"]


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
    move, and at the end); :meth:`to_int` gives the
    :class:`~mulfree.host.export_format.IntModel`. Biases are rounded onto the accumulator grid
    as :func:`quantize` does, so the float output equals
    :func:`~mulfree.host.int_inference.quantized_forward` of ``self.int_model`` up to float
    summation order (in float64: exactly, or a rare one-LSB difference at a rounding tie).
    Clamps pass the gradient unchanged (plain straight-through).

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
        self._items = parse_model(model)
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
            w_exp = exp_for(w.detach().abs().max(), 127)
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
            # Weights beyond the activations' range are clipped and the constant they lose
            # goes into the bias, as quantize() does.
            v = torch.ldexp(m.weight, torch.tensor(-in_exp))
            excess = F.relu(v - qmax) + F.relu(-qmax - 1 - v)
            b = b - torch.ldexp(excess.reshape(excess.shape[0], -1).sum(1), torch.tensor(in_exp))
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
    from .adder_layers import adder_matmul
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
