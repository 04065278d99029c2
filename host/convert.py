"""Convert a PyTorch model's ``nn.Linear`` / ``nn.Conv2d`` layers into shift or adder layers.

Both converters work **in place** and also return the model: every selected layer is
replaced, in its parent module, by the layer of :mod:`mulfree.host.layers` with the same
shape, stride, padding, bias, device and dtype; all other modules, parameters and buffers are
left as they are. Layers are selected in module order (``model.named_modules()``, the order in
which they were registered, which need not be the order of execution): all of them, or the
first ``depth``. Only layers of exactly the types ``nn.Linear`` and ``nn.Conv2d`` count;
subclasses (e.g. the out-projection inside ``nn.MultiheadAttention``, which is used through its
weight, not called) are left alone.

Every selected layer is checked before any is replaced: an unsupported one raises
``ValueError`` naming its path (``"features.3"``) and the model is unchanged.
"""

import torch
from torch import nn

from .adder_layers import AdderConv2d, AdderLinear
from .layer_args import check_mode, check_weight_bits
from .shift_layers import ShiftConv2d, ShiftLinear, ps_params_from_weight


__all__ = ["convert_to_shift", "convert_to_adder", "convertible_layers"]


def convertible_layers(model, depth=None):
    """The ``(path, module)`` pairs the converters replace, in module order.

    Parameters
    ----------
    model : torch.nn.Module
    depth : int, optional
        Only the first ``depth`` layers of type ``nn.Linear`` or ``nn.Conv2d`` (default: all).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {model!r}")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)
                              or depth < 0):
        raise ValueError(f"depth must be None or an integer >= 0, not {depth!r}")
    found = [(path, m) for path, m in model.named_modules()
             if type(m) in (nn.Linear, nn.Conv2d)]
    if model in [m for _, m in found]:
        raise ValueError("model must contain the layers to convert, not be one: wrap it "
                         "(e.g. nn.Sequential(layer)) so the converter can replace it")
    return found if depth is None else found[:depth]


def _check_conv(path, conv):
    problems = []
    if conv.groups != 1:
        problems.append(f"groups={conv.groups}")
    if tuple(conv.dilation) != (1, 1):
        problems.append(f"dilation={tuple(conv.dilation)}")
    if conv.padding_mode != "zeros":
        problems.append(f"padding_mode={conv.padding_mode!r}")
    if isinstance(conv.padding, str) and conv.padding == "same" and (
            tuple(conv.stride) != (1, 1) or any(k % 2 == 0 for k in conv.kernel_size)):
        problems.append(f"padding='same' with kernel_size={tuple(conv.kernel_size)}")
    if problems:
        raise ValueError(f"Conv2d at {path!r} has {', '.join(problems)}; supported are "
                         f"groups=1, dilation=1, padding_mode='zeros' (and padding 'same' "
                         f"only for odd kernels)")


def _conv_kwargs(conv):
    return dict(in_channels=conv.in_channels, out_channels=conv.out_channels,
                kernel_size=tuple(conv.kernel_size), stride=tuple(conv.stride),
                padding=conv.padding if isinstance(conv.padding, str) else tuple(conv.padding),
                bias=conv.bias is not None)


def _replace(model, path, new):
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)


def _like(new, old):
    """Give ``new`` the device and dtype of ``old`` *before* any weight is copied: copying a
    float64 weight into a fresh float32 parameter would round it (and DeepShift-Q would then
    round the rounded weight, possibly to the other power of two)."""
    new.to(device=old.weight.device, dtype=old.weight.dtype)


def _convert(model, depth, make):
    targets = convertible_layers(model, depth)
    for path, m in targets:
        if isinstance(m, nn.Conv2d):
            _check_conv(path, m)
    for path, old in targets:
        new = make(old)
        new.to(device=old.weight.device, dtype=old.weight.dtype)
        new.train(old.training)
        with torch.no_grad():
            if old.bias is not None:
                new.bias.copy_(old.bias)
        _replace(model, path, new)
    return model


def convert_to_shift(model, mode="ps", weight_bits=5, depth=None):
    """Replace ``nn.Linear`` / ``nn.Conv2d`` by :class:`ShiftLinear` / :class:`ShiftConv2d`.

    Parameters
    ----------
    model : torch.nn.Module
        Converted in place.
    mode : ``"ps"`` or ``"q"``
        ``"ps"``: ``shift = clamp(round(log2|w|), -max_shift, 0)``, ``sign = sign(w)`` (an exact
        0 gets sign 0); ``"q"``: the float weights are copied and rounded in every forward.
        Either way a weight with ``|w| > 1`` saturates at ``±1`` and one below
        ``2^-(max_shift + 1/2)`` becomes ``±2^-max_shift`` (DeepShift's clamp, see
        :mod:`mulfree.host.layers`).
    weight_bits : int
        2..6.
    depth : int, optional
        Convert only the first ``depth`` layers in module order (default: all).

    Returns
    -------
    torch.nn.Module
        ``model`` itself.

    Raises
    ------
    ValueError
        A bad argument, or a ``Conv2d`` with groups, dilation or a padding mode the shift
        layers do not support (the message names its path).
    """
    check_mode(mode)
    check_weight_bits(weight_bits)

    def make(old):
        if isinstance(old, nn.Linear):
            new = ShiftLinear(old.in_features, old.out_features, old.bias is not None,
                              mode=mode, weight_bits=weight_bits)
        else:
            new = ShiftConv2d(**_conv_kwargs(old), mode=mode, weight_bits=weight_bits)
        _like(new, old)
        with torch.no_grad():
            if mode == "q":
                new.weight.copy_(old.weight)
            else:
                shift, sign = ps_params_from_weight(old.weight, weight_bits)
                new.shift.copy_(shift)
                new.sign.copy_(sign)
        return new

    return _convert(model, depth, make)


def convert_to_adder(model, depth=None):
    """Replace ``nn.Linear`` / ``nn.Conv2d`` by :class:`AdderLinear` / :class:`AdderConv2d`.

    The weights and biases are copied unchanged. Note that an adder layer computes
    ``-sum |x - w|``, not ``x · w``: the converted model computes something else and needs
    (re)training, with a BatchNorm after every adder layer (SEEDS.md section 2).

    Parameters
    ----------
    model : torch.nn.Module
        Converted in place.
    depth : int, optional
        Convert only the first ``depth`` layers in module order (default: all).

    Returns
    -------
    torch.nn.Module
        ``model`` itself.

    Raises
    ------
    ValueError
        A bad argument, or an unsupported ``Conv2d`` (the message names its path).
    """
    def make(old):
        if isinstance(old, nn.Linear):
            new = AdderLinear(old.in_features, old.out_features, old.bias is not None)
        else:
            new = AdderConv2d(**_conv_kwargs(old))
        _like(new, old)
        with torch.no_grad():
            new.weight.copy_(old.weight)
        return new

    return _convert(model, depth, make)
