"""AdderNet's PyTorch layers: :class:`AdderLinear`, :class:`AdderConv2d` (float, not yet
quantized), and :class:`AdderLRScaler`, the adaptive learning rate.

``y = -sum |x - w|`` with the full-precision weight gradient ``x - w`` and the
HardTanh-clipped input gradient ``HardTanh(w - x)`` (``../shared/SEEDS.md`` section 2,
``docs/numerics.md``). Part of :mod:`mulfree.host.layers`, which re-exports it.

:class:`AdderConv2d` is dense (``groups=1``) or depthwise (``groups == in_channels``): a
depthwise output channel ``o`` sums ``|x - w|`` over its own input channel ``o // m``'s
``kh*kw`` window only (``m = out_channels // in_channels``), computed on the same zero-padded
``unfold`` by :func:`adder_bmm`, the L1 layer batched over groups, with the same gradients.
"""

import math

import torch
from torch import nn
from torch.nn import functional as F

from .layer_args import check_positive_int, conv_args


__all__ = ["AdderFunction", "adder_matmul", "AdderBatchFunction", "adder_bmm", "AdderLinear",
           "AdderConv2d", "AdderLRScaler"]


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


class AdderBatchFunction(torch.autograd.Function):
    """:class:`AdderFunction` batched over groups:
    ``Y[g, n, o] = -sum_k |X[g, n, k] - W[g, o, k]|``.

    Group ``g`` of ``X`` (``[G, N, K]``) meets only group ``g`` of ``W`` (``[G, O, K]``); the
    gradients are AdderNet's, group by group: ``dY/dW = X - W``, ``dY/dX = HardTanh(W - X)``.
    """

    @staticmethod
    def forward(ctx, x, weight):
        ctx.save_for_backward(x, weight)
        groups, rows, k = x.shape
        y = x.new_empty(groups, rows, weight.shape[1])
        for lo, hi in _row_chunks(rows, groups * weight.shape[1], k):
            y[:, lo:hi] = -(x[:, lo:hi, None, :] - weight[:, None]).abs().sum(-1)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        groups, rows, k = x.shape
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.empty_like(x)
        if ctx.needs_input_grad[1]:
            grad_w = torch.zeros_like(weight)
        for lo, hi in _row_chunks(rows, groups * weight.shape[1], k):
            diff = x[:, lo:hi, None, :] - weight[:, None]       # [G, n, out, K]: x - w
            g = grad[:, lo:hi, :, None]
            if grad_w is not None:
                grad_w += (diff * g).sum(1)
            if grad_x is not None:
                grad_x[:, lo:hi] = ((-diff).clamp(-1, 1) * g).sum(2)
        return grad_x, grad_w


def adder_bmm(x, weight):
    """``-sum_k |x[g, n, k] - weight[g, o, k]|`` with AdderNet's gradients, per group ``g``.

    Parameters
    ----------
    x : tensor ``[G, N, K]``
    weight : tensor ``[G, O, K]``

    Returns
    -------
    tensor ``[G, N, O]`` (:class:`AdderBatchFunction`).
    """
    if x.dim() != 3 or weight.dim() != 3 or x.shape[0] != weight.shape[0] \
            or x.shape[2] != weight.shape[2]:
        raise ValueError(f"x and weight must have shapes [G, N, K] and [G, O, K], not "
                         f"{tuple(x.shape)} and {tuple(weight.shape)}")
    return AdderBatchFunction.apply(x, weight)


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
        self.in_features = check_positive_int("in_features", in_features)
        self.out_features = check_positive_int("out_features", out_features)
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
    groups
        1 (dense) or ``in_channels`` (depthwise, ``out_channels`` a multiple of
        ``in_channels``, weight ``[O, 1, kh, kw]`` as PyTorch's): output channel ``o`` is
        ``-sum |Xpad[o // m, m s + i, n s + j] - W[o, 0, i, j]|`` over that channel's window
        only, ``m = out_channels // in_channels``. Anything else raises ``ValueError``.
    dilation, padding_mode
        Only 1 and ``"zeros"`` are supported; anything else raises ``ValueError``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True, padding_mode="zeros"):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.out_channels = check_positive_int("out_channels", out_channels)
        self.kernel_size, self.stride, self.padding = conv_args(
            kernel_size, stride, padding, dilation, groups, padding_mode,
            in_channels=self.in_channels, out_channels=self.out_channels)
        self.groups = int(groups)
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(self.out_channels,
                                               self.in_channels // self.groups, kh, kw))
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
        if self.groups == 1:
            cols = cols.transpose(1, 2).reshape(n * oh * ow, -1)
            y = adder_matmul(cols, self.weight.reshape(self.out_channels, -1))
            y = y.reshape(n, oh, ow, self.out_channels).permute(0, 3, 1, 2)
        else:
            # Depthwise: the unfold's rows of channel c are its own kh*kw window; group c
            # meets its m filters (output channels c*m .. c*m + m - 1) only.
            c, m = self.in_channels, self.out_channels // self.in_channels
            cols = cols.reshape(n, c, kh * kw, oh * ow).permute(1, 0, 3, 2)
            y = adder_bmm(cols.reshape(c, n * oh * ow, kh * kw),
                          self.weight.reshape(c, m, kh * kw))          # [c, n*oh*ow, m]
            y = y.reshape(c, n, oh, ow, m).permute(1, 0, 4, 2, 3)
            y = y.reshape(n, self.out_channels, oh, ow)
        return y if self.bias is None else y + self.bias[:, None, None]

    def extra_repr(self):
        groups = f", groups={self.groups}" if self.groups != 1 else ""
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}{groups}, "
                f"bias={self.bias is not None}")


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

