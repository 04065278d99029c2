"""Training-time PyTorch layers of multiplication-free networks (float, not yet quantized).

The arithmetic is the papers' (``../shared/SEEDS.md``) and the hardware's
(``docs/numerics.md``):

* :class:`ShiftLinear`, :class:`ShiftConv2d` — DeepShift: every weight is ``s * 2^p`` with
  ``s`` in {-1, 0, +1} and an integer ``p`` in ``[-max_shift, 0]``,
  ``max_shift = 2^(weight_bits-1) - 2``. Mode ``"q"`` trains ordinary weights and rounds them
  in the forward pass, mode ``"ps"`` trains ``shift`` and ``sign`` directly.
* :class:`AdderLinear`, :class:`AdderConv2d` — AdderNet: ``y = -sum |x - w|`` with the
  full-precision weight gradient ``x - w`` and the HardTanh-clipped input gradient
  ``HardTanh(w - x)``; :class:`AdderLRScaler` applies the adaptive per-layer learning rate.
* :class:`Shift2d`, :class:`AddressShift2d`, :class:`ChannelShift` — the zero-FLOP,
  zero-parameter shifts of Shift (CVPR 2018) and AddressNet (WACV 2019), with exactly the
  conventions of :mod:`mulfree.spec.shift_golden` (sampling offset
  ``out[c, y, x] = in[c, y + dy, x + dx]``).

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

Torch is imported by this module only; :mod:`mulfree.host` stays importable without it.
"""

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..spec import golden, shift_golden


__all__ = [
    "max_shift", "ShiftLinear", "ShiftConv2d", "AdderLinear", "AdderConv2d", "AdderLRScaler",
    "Shift2d", "AddressShift2d", "ChannelShift", "ps_params_from_weight", "AdderFunction",
    "adder_matmul", "round_log2", "SQRT_HALF_ABOVE",
]


# Argument checks ----------------------------------------------------------------------------

def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def _check_weight_bits(weight_bits):
    if (isinstance(weight_bits, bool) or not isinstance(weight_bits, (int, np.integer))
            or not 2 <= weight_bits <= 6):
        raise ValueError(f"weight_bits must be an integer in 2..6, not {weight_bits!r}")
    return int(weight_bits)


def _check_mode(mode):
    if mode not in ("q", "ps"):
        raise ValueError(f"mode must be 'q' or 'ps', not {mode!r}")
    return mode


def _pair(name, value, minimum):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum
                   for v in value)):
        raise ValueError(f"{name} must be an integer >= {minimum} or a pair of them, "
                         f"not {value!r}")
    return (int(value[0]), int(value[1]))


def _conv_args(kernel_size, stride, padding, dilation, groups, padding_mode):
    kernel_size = _pair("kernel_size", kernel_size, 1)
    stride = _pair("stride", stride, 1)
    if padding == "valid":
        padding = 0
    elif padding == "same":
        if stride != (1, 1) or any(k % 2 == 0 for k in kernel_size):
            raise ValueError(f"padding 'same' is supported for stride 1 and odd kernel sizes "
                             f"only, not kernel_size={kernel_size}, stride={stride}")
        padding = (kernel_size[0] // 2, kernel_size[1] // 2)
    padding = _pair("padding", padding, 0)
    if _pair("dilation", dilation, 1) != (1, 1):
        raise ValueError(f"dilation must be 1 (the hardware's im2col has no dilation), "
                         f"not {dilation!r}")
    if groups != 1:
        raise ValueError(f"groups must be 1 (grouped convolutions are not supported), "
                         f"not {groups!r}")
    if padding_mode != "zeros":
        raise ValueError(f"padding_mode must be 'zeros' (the hardware pads with x = 0), "
                         f"not {padding_mode!r}")
    return kernel_size, stride, padding


# Straight-through helpers -------------------------------------------------------------------

def _ste(value, like):
    """``value`` in the forward pass, the identity gradient to ``like`` in the backward pass."""
    return like + (value - like).detach()


def max_shift(weight_bits):
    """The largest hardware shift ``2^(weight_bits-1) - 2``; DeepShift's ``p`` lies in
    ``[-max_shift, 0]``."""
    return (1 << (_check_weight_bits(weight_bits) - 1)) - 2


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
        self.mode = _check_mode(mode)
        self.weight_bits = _check_weight_bits(weight_bits)
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
        ndarray of int64, shape of the weight
            ``s << (weight_bits-1) | e`` with ``e = p + max_shift + 1`` for a nonzero weight
            ``s * 2^p`` and the canonical zero code 0 for a zero weight, encoded by
            :func:`mulfree.spec.golden.encode_shift`. Decoded, a code is the integer
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
        self.in_features = _check_positive_int("in_features", in_features)
        self.out_features = _check_positive_int("out_features", out_features)
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
    dilation, groups, padding_mode
        Accepted for signature compatibility; only 1, 1 and ``"zeros"`` are supported (what
        the hardware's im2col computes), anything else raises ``ValueError``.
    mode, weight_bits
        See :class:`ShiftLinear`.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros", *, mode="ps",
                 weight_bits=5):
        super().__init__()
        self.in_channels = _check_positive_int("in_channels", in_channels)
        self.out_channels = _check_positive_int("out_channels", out_channels)
        self.kernel_size, self.stride, self.padding = _conv_args(
            kernel_size, stride, padding, dilation, groups, padding_mode)
        kh, kw = self.kernel_size
        self._init_shift_weight((self.out_channels, self.in_channels, kh, kw), mode,
                                weight_bits, self.in_channels * kh * kw)
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        """nn.Conv2d's initialisation (PS: rounded to the nearest shift parameters)."""
        self._reset_shift_weight()

    def forward(self, x):
        return F.conv2d(x, self._weight(), self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}, "
                f"mode={self.mode!r}, weight_bits={self.weight_bits}")


# AdderNet -----------------------------------------------------------------------------------

#: Largest number of elements of the ``[rows, out, K]`` intermediate of one chunk.
_CHUNK_ELEMENTS = 1 << 22


def _row_chunks(rows, out, k):
    step = max(1, _CHUNK_ELEMENTS // max(1, out * k))
    return [(i, min(rows, i + step)) for i in range(0, rows, step)]


class AdderFunction(torch.autograd.Function):
    """AdderNet's L1 layer on matrices: ``Y[n, o] = -sum_k |X[n, k] - W[o, k]|``.

    Backward (AdderNet, SEEDS.md section 2): ``dY/dW = X - W`` (the full-precision gradient,
    not the sign) and ``dY/dX = HardTanh(W - X)`` (clipped to ``[-1, 1]``). Neither is the
    true derivative of ``-|x - w|``; these are the paper's training rules. The adaptive
    learning rate is not applied here but by :class:`AdderLRScaler`.
    """

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        y = x.new_empty(x.shape[0], weight.shape[0])
        for lo, hi in _row_chunks(x.shape[0], weight.shape[0], weight.shape[1]):
            y[lo:hi] = -(x[lo:hi, None, :] - weight[None]).abs().sum(-1)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty_like(x)
        if ctx.needs_input_grad[1]:
            grad_w = torch.zeros_like(weight)
        for lo, hi in _row_chunks(x.shape[0], weight.shape[0], weight.shape[1]):
            diff = x[lo:hi, None, :] - weight[None]             # [n, out, K]: x - w
            g = grad[lo:hi, :, None]
            if grad_w is not None:
                grad_w += (diff * g).sum(0)
            if grad_x is not None:
                grad_x[lo:hi] = ((-diff).clamp(-1, 1) * g).sum(1)
        return grad_x, grad_w


def adder_matmul(x, weight):
    """``-sum_k |x[n, k] - weight[o, k]|`` with AdderNet's gradients (:class:`AdderFunction`)."""
    return AdderFunction.apply(x, weight)


class AdderLinear(nn.Module):
    """AdderNet fully connected layer: ``y[o] = -sum_i |x[i] - w[o, i]| + b[o]``.

    Parameters
    ----------
    in_features, out_features, bias
        As :class:`torch.nn.Linear` (the weight is initialised like it; AdderNet's own layers
        have no bias, and a BatchNorm should follow, SEEDS.md section 2).
    """

    def __init__(self, in_features, out_features, bias=True):
        super().__init__()
        self.in_features = _check_positive_int("in_features", in_features)
        self.out_features = _check_positive_int("out_features", out_features)
        self.weight = nn.Parameter(torch.empty(self.out_features, self.in_features))
        self.bias = nn.Parameter(torch.empty(self.out_features)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        """nn.Linear's initialisation."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.in_features)
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        lead = x.shape[:-1]
        y = adder_matmul(x.reshape(-1, self.in_features), self.weight)
        y = y.reshape(*lead, self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class AdderConv2d(nn.Module):
    """AdderNet convolution, ``Y[o, m, n] = -sum |Xpad[c, m s + i, n s + j] - W[o, c, i, j]|``.

    Computed as AdderNet's code does, on the zero-padded ``unfold``: a padded pixel is
    ``x = 0`` and contributes ``-|w|`` (``docs/numerics.md``, Convolution).

    Parameters
    ----------
    in_channels, out_channels, kernel_size, stride, padding, bias
        As :class:`torch.nn.Conv2d`.
    dilation, groups, padding_mode
        Only 1, 1 and ``"zeros"`` are supported; anything else raises ``ValueError``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros"):
        super().__init__()
        self.in_channels = _check_positive_int("in_channels", in_channels)
        self.out_channels = _check_positive_int("out_channels", out_channels)
        self.kernel_size, self.stride, self.padding = _conv_args(
            kernel_size, stride, padding, dilation, groups, padding_mode)
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(self.out_channels, self.in_channels, kh, kw))
        self.bias = nn.Parameter(torch.empty(self.out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self):
        """nn.Conv2d's initialisation."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"input must have shape [N, {self.in_channels}, H, W], "
                             f"not {tuple(x.shape)}")
        n, _, h, w = x.shape
        kh, kw = self.kernel_size
        (sy, sx), (py, px) = self.stride, self.padding
        oh = (h + 2 * py - kh) // sy + 1
        ow = (w + 2 * px - kw) // sx + 1
        # Columns in im2col order k = (c*kh + ky)*kw + kx, the order of the weight's flatten.
        cols = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)
        cols = cols.transpose(1, 2).reshape(n * oh * ow, -1)
        y = adder_matmul(cols, self.weight.reshape(self.out_channels, -1))
        y = y.reshape(n, oh, ow, self.out_channels).permute(0, 3, 1, 2)
        return y if self.bias is None else y + self.bias[:, None, None]

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


class AdderLRScaler:
    """AdderNet's adaptive learning rate, one factor per adder layer.

    ``alpha_l = eta * sqrt(k) / ||dL/dF_l||_2`` (``k`` the number of elements of the weight
    ``F_l``), applied by multiplying the weight gradient in place; call :meth:`scale_grads`
    after ``loss.backward()`` and before ``optimizer.step()``. Biases and every other
    parameter keep their gradients.

    Parameters
    ----------
    model : torch.nn.Module
        Its :class:`AdderLinear` / :class:`AdderConv2d` modules (at construction) are scaled.
    eta : float
        ``η``, 0.2 in AdderNet's code.
    """

    def __init__(self, model, eta=0.2):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, not {model!r}")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta > 0:
            raise ValueError(f"eta must be a positive number, not {eta!r}")
        self.eta = float(eta)
        self.layers = [m for m in model.modules() if isinstance(m, (AdderLinear, AdderConv2d))]

    def scale_grads(self):
        """Scale each adder layer's weight gradient by ``eta * sqrt(k) / ||grad||``."""
        with torch.no_grad():
            for layer in self.layers:
                grad = layer.weight.grad
                if grad is None:
                    continue
                norm = grad.norm(p=2).clamp(min=1e-12)
                grad.mul_(self.eta * math.sqrt(grad.numel()) / norm)

    __call__ = scale_grads


# Shift (CVPR 2018) and AddressNet -----------------------------------------------------------

class Shift2d(nn.Module):
    """The zero-FLOP, zero-parameter shift of Wu et al. (CVPR 2018), zero filled.

    Channel ``c`` takes direction ``i = c // g`` of
    :func:`mulfree.spec.shift_golden.shift_directions` (row-major over ``(dy, dx)`` in
    ``[-h, h]^2``, ``h = (kernel-1)/2``) when ``g > 0`` and ``i < kernel^2``, and is not
    shifted otherwise; ``g = group`` or the paper's equal split
    ``channels // kernel^2``. The shift is a sampling offset:
    ``out[c, y, x] = in[c, y + dy, x + dx]``, 0 outside the map — exactly
    :func:`mulfree.spec.shift_golden.shift_cvpr`.

    Parameters
    ----------
    channels : int
    kernel : int
        Odd, >= 1.
    group : int, optional
        Channels per direction (default ``channels // kernel^2``).
    """

    def __init__(self, channels, kernel=3, group=None):
        super().__init__()
        self.channels = _check_positive_int("channels", channels)
        if isinstance(kernel, bool) or not isinstance(kernel, (int, np.integer)) \
                or kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd positive integer, not {kernel!r}")
        if group is not None and (isinstance(group, bool) or not isinstance(group, int)
                                  or group < 0):
            raise ValueError(f"group must be None or an integer >= 0, not {group!r}")
        self.kernel = int(kernel)
        self.group = group
        dy, dx = shift_golden.shift_groups(self.channels, self.kernel, group)
        self.offsets = [(int(a), int(b)) for a, b in zip(dy, dx)]

    def forward(self, x):
        return _table_shift(x, self.channels, self.offsets)

    def extra_repr(self):
        return f"{self.channels}, kernel={self.kernel}, group={self.group}"


def _table_shift(x, channels, offsets):
    """``out[:, c, y, x] = in[:, c, y + dy[c], x + dx[c]]``, zero filled; slices only."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"input must have shape [N, {channels}, H, W], not {tuple(x.shape)}")
    h, w = x.shape[2:]
    out = torch.zeros_like(x)
    # Runs of equal offsets are one slice each (the groups are contiguous).
    start = 0
    while start < channels:
        end = start
        while end < channels and offsets[end] == offsets[start]:
            end += 1
        dy, dx = offsets[start]
        ys, ye = max(0, -dy), min(h, h - dy)        # output rows whose source is inside
        xs, xe = max(0, -dx), min(w, w - dx)
        if ys < ye and xs < xe:
            out[:, start:end, ys:ye, xs:xe] = x[:, start:end, ys + dy:ye + dy, xs + dx:xe + dx]
        start = end
    return out


class AddressShift2d(nn.Module):
    """AddressNet's address shift (He et al., WACV 2019): the map read from a moved address.

    Channels are split into the four groups left ``(0, +1)``, right ``(0, -1)``, up ``(+1, 0)``,
    down ``(-1, 0)`` (:data:`mulfree.spec.shift_golden.ADDRESS_DIRECTIONS`; ``g = group`` or
    ``channels // 4``, leftover channels unshifted). Each sample's map ``[C, H, W]`` is one
    channel-major buffer and channel ``c`` reads

        out[c, y, x] = buf[(c*H + y)*W + x + dy*W + dx]

    whatever lies there (the neighbouring row's or channel's element); only an address outside
    the sample's buffer reads 0 — :func:`mulfree.spec.shift_golden.address_shift` with the map
    alone in memory at base 0.
    """

    def __init__(self, channels, group=None):
        super().__init__()
        self.channels = _check_positive_int("channels", channels)
        if group is not None and (isinstance(group, bool) or not isinstance(group, int)
                                  or group < 0):
            raise ValueError(f"group must be None or an integer >= 0, not {group!r}")
        self.group = group
        dy, dx = shift_golden.address_groups(self.channels, group)
        self.register_buffer("_dy", torch.as_tensor(dy), persistent=False)
        self.register_buffer("_dx", torch.as_tensor(dx), persistent=False)

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"input must have shape [N, {self.channels}, H, W], "
                             f"not {tuple(x.shape)}")
        n, c, h, w = x.shape
        # Offsets are at most W words, so W zeros on each side stand for "outside the buffer".
        flat = F.pad(x.reshape(n, c * h * w), (w, w))
        offset = (self._dy * w + self._dx).to(x.device)
        index = (torch.arange(c * h * w, device=x.device).reshape(c, h * w)
                 + offset[:, None] + w).reshape(-1)
        return flat[:, index].reshape(n, c, h, w)

    def extra_repr(self):
        return f"{self.channels}, group={self.group}"


class ChannelShift(nn.Module):
    """AddressNet's channel shift: ``out[:, c] = in[:, (c + r) mod C]``, ``0 <= r <= C``.

    Output channel 0 is input channel ``r`` (the channel base pointer moved forward by ``r``):
    :func:`mulfree.spec.shift_golden.channel_shift`. A replacement for ShuffleNet's shuffle.
    """

    def __init__(self, channels, r):
        super().__init__()
        self.channels = _check_positive_int("channels", channels)
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= self.channels:
            raise ValueError(f"r must be an integer in [0, channels] = [0, {self.channels}], "
                             f"not {r!r}")
        self.r = r

    def forward(self, x):
        if x.dim() < 2 or x.shape[1] != self.channels:
            raise ValueError(f"input must have {self.channels} channels in dimension 1, "
                             f"not shape {tuple(x.shape)}")
        return torch.roll(x, -self.r, dims=1)

    def extra_repr(self):
        return f"{self.channels}, r={self.r}"
