"""DeepShift's PyTorch layers: :class:`ShiftLinear`, :class:`ShiftConv2d` (float, not yet
quantized; the convolution is dense or depthwise, ``groups`` 1 or ``in_channels``).

The arithmetic is the paper's (``../shared/SEEDS.md``) and the hardware's
(``docs/numerics.md``): every weight is ``s * 2^p`` with ``s`` in {-1, 0, +1} and an integer
``p`` in ``[-max_shift, 0]``, ``max_shift = 2^(weight_bits-1) - 2``. Mode ``"q"`` trains
ordinary weights and rounds them in the forward pass, mode ``"ps"`` trains ``shift`` and
``sign`` directly.

Shift codes and the hardware scale
----------------------------------
DeepShift's ``p`` is ``<= 0``; the hardware's code ``{s, e}`` holds a non-negative left shift
``p_hw = e - 1`` in ``[0, max_shift]`` on the scale ``2^-max_shift``
(``docs/numerics.md`` section 3). The mapping used by :meth:`ShiftLinear.weight_codes` is

    p_hw = p + max_shift,   e = p_hw + 1 = p + max_shift + 1,   e = 0 for a zero weight

so the integer the array multiplies by, ``sign * 2^p_hw``, is ``effective_weight() *
2^max_shift`` exactly, and the array's results carry the scale ``2^-max_shift``.

DeepShift-Q and zero
--------------------
DeepShift-Q clamps ``|w|`` into ``[2^-(2^(b-1)-1), 1]``, one power more than the code holds
(the code spends ``e = 0`` on zero). Here the clamp is ``[2^-max_shift, 1]``, the
representable range: a small nonzero weight becomes ``±2^-max_shift`` (DeepShift-Q's rule
"no zero except an exact 0", moved one power up), and only an exact 0 stays 0.

Part of :mod:`mulfree.host.layers`, which re-exports it.
"""

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..params import golden
from .layer_args import check_mode, check_positive_int, check_weight_bits, conv_args


__all__ = ["max_shift", "ShiftLinear", "ShiftConv2d", "ps_params_from_weight", "round_log2",
           "SQRT_HALF_ABOVE"]


# Straight-through helpers -------------------------------------------------------------------

def _ste(value, like):
    """``value`` in the forward pass, the identity gradient to ``like`` in the backward pass."""
    return like + (value - like).detach()


def max_shift(weight_bits):
    """The largest hardware shift ``2^(weight_bits-1) - 2``; DeepShift's ``p`` lies in
    ``[-max_shift, 0]``."""
    return (1 << (check_weight_bits(weight_bits) - 1)) - 2


#: The smallest float64 above ``sqrt(1/2)``: ``m / 2^53`` with ``m`` the smallest integer whose
#: square exceeds ``2^105``, computed with integers (``isqrt``), not with a floating ``sqrt``.
#: ``sqrt(1/2)`` is irrational, so no float equals it, and a float mantissa ``f`` in
#: ``[1/2, 1)`` is ``>= sqrt(1/2)`` exactly when ``f >= SQRT_HALF_ABOVE``.
SQRT_HALF_ABOVE = math.ldexp(math.isqrt(1 << 105) + 1, -53)


def round_log2(x):
    """``round(log2|x|)`` for ``x != 0``, exactly: the exponent of the power of two nearest
    ``|x|`` in the log domain.

    The boundary between ``2^(p-1)`` and ``2^p`` is the midpoint ``2^(p-1/2)`` (SEEDS.md,
    DeepShift-Q). It is irrational, so no float lies on it and the rule "ties to even" of
    ``torch.round`` never applies; what matters is on which side a float falls, and a
    floating-point ``log2`` gets that wrong for floats a few ulps from it. Here ``|x| = f 2^e``
    with ``f`` in ``[1/2, 1)`` (``frexp``, exact) and ``p = e`` if ``f > 2^-1/2`` else ``e - 1``,
    compared against :data:`SQRT_HALF_ABOVE` in float64 (every float16/32/64 converts to
    float64 exactly). Subnormals are exact too.

    Parameters
    ----------
    x : tensor of floats
        Zero, infinities and NaN have no nearest power; their entries are meaningless (callers
        mask or clamp them first).

    Returns
    -------
    int64 tensor of ``x``'s shape.
    """
    mantissa, exponent = torch.frexp(x.detach().abs().to(torch.float64))
    exponent = exponent.to(torch.int64)
    return exponent - (mantissa < SQRT_HALF_ABOVE).to(torch.int64)


def _q_sign_and_p(weight, weight_bits):
    """DeepShift-Q's ``(sign, p)`` of float weights: ``sign(w)`` and
    ``round(log2 clamp(|w|, 2^-max_shift, 1))`` (exact, :func:`round_log2`), float tensors of
    ``weight``'s dtype; ``p = -max_shift`` where the sign is 0 (an exact 0 stays 0)."""
    m = max_shift(weight_bits)
    w = weight.detach()
    # Clamp in float64: 2^-30 is not a float16, and the comparison must see the exact weight.
    magnitude = w.abs().to(torch.float64).clamp(min=math.ldexp(1.0, -m), max=1.0)
    p = round_log2(magnitude).clamp(-m, 0).to(w.dtype)
    return torch.sign(w), p


def _q_quantize(weight, weight_bits):
    """DeepShift-Q: ``sign(w) * 2^round(log2 clamp(|w|, 2^-max_shift, 1))``, exact 0 stays 0."""
    sign, p = _q_sign_and_p(weight, weight_bits)
    return sign * torch.exp2(p)


def ps_params_from_weight(weight, weight_bits):
    """DeepShift-PS parameters ``(shift, sign)`` nearest to the float weights ``weight``.

    ``shift = clamp(round(log2|w|), -max_shift, 0)`` (exact, :func:`round_log2`) and
    ``sign = sign(w)`` (0 for an exact 0, whose shift is then ``-max_shift``). Both are float
    tensors like ``weight``.
    """
    m = max_shift(weight_bits)
    weight = weight.detach()
    with torch.no_grad():
        p = round_log2(weight).clamp(-m, 0)
        # A zero weight (and NaN, which has no power) gets the smallest shift.
        p = torch.where(weight.abs() > 0, p, torch.full_like(p, -m))
        shift = p.to(weight.dtype)
        sign = torch.sign(weight)
    return shift.clone(), sign.clone()


class _ShiftWeight(nn.Module):
    """The DeepShift weight of shape ``shape`` and the methods shared by the shift layers."""

    def _init_shift_weight(self, shape, mode, weight_bits, fan_in):
        self.mode = check_mode(mode)
        self.weight_bits = check_weight_bits(weight_bits)
        self._shape = tuple(shape)
        self._fan_in = fan_in
        if mode == "q":
            self.weight = nn.Parameter(torch.empty(shape))
        else:
            self.shift = nn.Parameter(torch.empty(shape))
            self.sign = nn.Parameter(torch.empty(shape))

    @property
    def max_shift(self):
        """``2^(weight_bits-1) - 2``: DeepShift's ``p`` is in ``[-max_shift, 0]``."""
        return max_shift(self.weight_bits)

    def _reset_shift_weight(self):
        # nn.Linear / nn.Conv2d's own initialisation, then (PS) the nearest shift parameters:
        # a fresh layer is what the converter makes of a fresh nn layer.
        float_weight = torch.empty(self._shape)
        nn.init.kaiming_uniform_(float_weight, a=math.sqrt(5))
        with torch.no_grad():
            if self.mode == "q":
                self.weight.copy_(float_weight)
            else:
                shift, sign = ps_params_from_weight(float_weight, self.weight_bits)
                self.shift.copy_(shift)
                self.sign.copy_(sign)
        if self.bias is not None:
            bound = 1 / math.sqrt(self._fan_in)
            nn.init.uniform_(self.bias, -bound, bound)

    def _weight(self):
        """The weight used in the forward pass, with the straight-through gradients."""
        if self.mode == "q":
            return _ste(_q_quantize(self.weight, self.weight_bits), self.weight)
        # DeepShift-PS clamps the stored shift in place (outside autograd), so the parameter
        # never drifts out of the representable range.
        with torch.no_grad():
            self.shift.data.clamp_(-self.max_shift, 0)
        p = _ste(torch.round(self.shift), self.shift)
        s = _ste(torch.sign(torch.round(self.sign)), self.sign)
        # Gradients: d/dshift = s * ln2 * 2^p through the rounding; d/dsign = grad unscaled
        # (DeepShift's "unsymmetric" product): a sign of a tiny weight still learns.
        return _unsym(s, torch.exp2(p))

    def effective_weight(self):
        """The float weight ``s * 2^p`` (``s`` in {-1, 0, 1}, ``p`` in ``[-max_shift, 0]``)."""
        with torch.no_grad():
            sign, p = self._sign_and_p()
            return sign * torch.exp2(p)

    def _sign_and_p(self):
        m = self.max_shift
        if self.mode == "q":
            sign, p = _q_sign_and_p(self.weight, self.weight_bits)
            return sign, torch.where(sign == 0, torch.full_like(p, -m), p)
        # DeepShift-PS rounds the real-valued shift parameter with torch.round (half to
        # even), which is exact.
        shift = torch.round(self.shift.detach().clamp(-m, 0))
        return torch.sign(torch.round(self.sign.detach())), shift

    def weight_codes(self):
        """The weights as hardware shift codes (``docs/numerics.md`` section 3).

        Returns
        -------
        ndarray of int64, shape of the weight (``[O, C/groups, kh, kw]`` for a convolution)
            ``s << (weight_bits-1) | e`` with ``e = p + max_shift + 1`` for a nonzero weight
            ``s * 2^p`` and the canonical zero code 0 for a zero weight, encoded by
            :func:`mulfree.params.golden.encode_shift`. Decoded, a code is the integer
            ``effective_weight() * 2^max_shift`` (the array's scale is ``2^-max_shift``).
        """
        with torch.no_grad():
            sign, p = self._sign_and_p()
        sign = sign.cpu().numpy().astype(np.int64)
        p_hw = p.cpu().numpy().astype(np.int64) + self.max_shift
        return golden.encode_shift(sign, np.where(sign == 0, 0, p_hw), self.weight_bits)


class _UnsymMul(torch.autograd.Function):
    """``a * b`` whose gradient is ``grad * b`` for ``a`` and ``grad`` (unscaled) for ``b``."""

    @staticmethod
    def forward(ctx, sign, magnitude):
        ctx.save_for_backward(sign)
        return sign * magnitude

    @staticmethod
    def backward(ctx, grad):
        (sign,) = ctx.saved_tensors
        return grad, grad * sign


def _unsym(sign, magnitude):
    return _UnsymMul.apply(sign, magnitude)


class ShiftLinear(_ShiftWeight):
    """DeepShift linear layer: ``y = x · (s ⊙ 2^p)ᵀ + b``.

    Parameters
    ----------
    in_features, out_features : int
        As :class:`torch.nn.Linear`.
    bias : bool
        Whether to add a (float) bias.
    mode : ``"q"`` or ``"ps"``
        ``"q"``: a float parameter ``weight``, rounded to ``±2^p`` in the forward pass
        (``p = round(log2 |w|)``, exactly (:func:`round_log2`), after clamping ``|w|`` into
        ``[2^-max_shift, 1]``, an exact 0 stays 0), straight-through gradient. ``"ps"``:
        parameters ``shift`` (clamped in place to ``[-max_shift, 0]`` at every forward) and
        ``sign``; the forward pass uses ``p = round(shift)`` and ``s = sign(round(sign))`` in
        {-1, 0, +1}, straight-through for the roundings.
    weight_bits : int
        2..6: 1 sign bit and ``weight_bits - 1`` shift bits, ``max_shift = 2^(b-1) - 2``.
    """

    def __init__(self, in_features, out_features, bias=True, *, mode="ps", weight_bits=5):
        super().__init__()
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
        self._init_shift_weight((self.out_features, self.in_features), mode, weight_bits,
                                self.in_features)
        self.bias = nn.Parameter(torch.empty(self.out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        """nn.Linear's initialisation (PS: rounded to the nearest shift parameters)."""
        self._reset_shift_weight()

    def forward(self, x):
        return F.linear(x, self._weight(), self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, mode={self.mode!r}, "
                f"weight_bits={self.weight_bits}")


class ShiftConv2d(_ShiftWeight):
    """DeepShift 2-D convolution: :class:`torch.nn.Conv2d` with weights ``s * 2^p``.

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, bias
        As :class:`torch.nn.Conv2d` (``padding`` may be ``"valid"``, or ``"same"`` for stride 1
        and odd kernels).
    groups
        1 (dense) or ``in_channels`` (depthwise, ``out_channels`` a multiple of
        ``in_channels``); the weight has PyTorch's shape ``[O, C/groups, kh, kw]`` and the
        forward pass is ``F.conv2d(..., groups=groups)`` with the shift weights. Anything else
        raises ``ValueError``.
    dilation, padding_mode
        Accepted for signature compatibility; only 1 and ``"zeros"`` are supported (what
        the hardware's im2col computes), anything else raises ``ValueError``.
    mode, weight_bits
        See :class:`ShiftLinear`.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", *, mode="ps",
                 weight_bits=5):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.kernel_size, self.stride, self.padding = conv_args(
            kernel_size, stride, padding, dilation, groups, padding_mode,
            in_channels=self.in_channels, out_channels=self.out_channels)
        self.groups = int(groups)
        kh, kw = self.kernel_size
        per_group = self.in_channels // self.groups
        self._init_shift_weight((self.out_channels, per_group, kh, kw), mode,
                                weight_bits, per_group * kh * kw)
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        """nn.Conv2d's initialisation (PS: rounded to the nearest shift parameters)."""
        self._reset_shift_weight()

    def forward(self, x):
        return F.conv2d(x, self._weight(), self.bias, self.stride, self.padding,
                        groups=self.groups)

    def extra_repr(self):
        groups = f", groups={self.groups}" if self.groups != 1 else ""
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}{groups}, "
                f"bias={self.bias is not None}, mode={self.mode!r}, "
                f"weight_bits={self.weight_bits}")
