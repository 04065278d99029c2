"""Convert a PyTorch model's ``nn.Linear`` / ``nn.Conv2d`` layers into shift or adder layers.

Three converters, all **in place** (each also returns the model):

* :func:`convert_to_shift` — DeepShift: every selected layer becomes :class:`ShiftLinear` /
  :class:`ShiftConv2d`, its weights rounded to the nearest ``±2^p`` (mode ``"ps"``) or copied
  to be rounded in every forward pass (mode ``"q"``).
* :func:`convert_to_adder` — AdderNet: :class:`AdderLinear` / :class:`AdderConv2d`, weights
  copied unchanged (the model then computes ``-sum |x - w|`` and needs retraining).
* :func:`convert_to_shiftadd` — ShiftAddNet (You et al., NeurIPS 2020): every selected
  ``nn.Conv2d(in, out, k, stride, padding)`` becomes ``nn.Sequential(ShiftConv2d(in, out, k,
  stride, padding, bias=False), AdderConv2d(out, out, k, 1, k // 2, bias=<old bias>))``, the
  authors' ``conv3x3`` (a shift conv, then an adder conv keeping the size); a depthwise conv
  becomes a depthwise shift conv followed by a depthwise adder conv (``groups=out``). Every
  selected ``nn.Linear`` becomes a :class:`ShiftLinear` (ShiftAddNet keeps a shift
  classifier).

Every replacement has the same shape, stride, padding, groups, bias, device and dtype as the
layer it replaces; all other modules, parameters and buffers are left as they are.

Which layers
------------
Layers are selected in module order (``model.named_modules()``, the order in which they were
registered, which need not be the order of execution): all of them, or the first ``depth``
(counting skipped ones). ``skip`` names module paths to leave alone (``("conv1", "fc")``): a
path of a layer, or of a module whose layers are all left alone; a path that names no such
module raises ``ValueError`` naming it. Only layers of exactly the types ``nn.Linear`` and
``nn.Conv2d`` count; subclasses (e.g. the out-projection inside ``nn.MultiheadAttention``, which
is used through its weight, not called) are left alone.

Convolutions must be dense (``groups=1``) or depthwise (``groups == in_channels``), with
dilation 1 and zero padding. Every selected layer is checked before any is replaced: an
unsupported one raises ``ValueError`` naming its path (``"features.3"``) and the model is
unchanged.
"""

import torch
from torch import nn

from .adder_layers import AdderConv2d, AdderLinear
from .layer_args import check_mode, check_weight_bits
from .shift_layers import ShiftConv2d, ShiftLinear, ps_params_from_weight


__all__ = ["convert_to_shift", "convert_to_adder", "convert_to_shiftadd", "convertible_layers"]


def convertible_layers(model, depth=None, skip=()):
    """The ``(path, module)`` pairs the converters replace, in module order.

    Parameters
    ----------
    model : torch.nn.Module
    depth : int, optional
        Only the first ``depth`` layers of type ``nn.Linear`` or ``nn.Conv2d`` (default: all;
        skipped layers count).
    skip : iterable of str
        Module paths left alone: a layer's path, or a module's (all its layers are left
        alone). A path naming no layer and no module holding one raises ``ValueError``.

    Returns
    -------
    list of ``(str, torch.nn.Module)``
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
    skip = _skip_paths(model, skip, [path for path, _ in found])
    found = found if depth is None else found[:depth]
    return [(path, m) for path, m in found
            if not any(path == s or path.startswith(s + ".") for s in skip)]


def _skip_paths(model, skip, layers):
    """``skip`` as a tuple of paths, each a layer's or a module's holding one."""
    if isinstance(skip, (str, bytes)) or not hasattr(skip, "__iter__"):
        raise ValueError(f"skip must be an iterable of module paths such as ('conv1', 'fc'), "
                         f"not {skip!r}")
    skip = tuple(skip)
    modules = dict(model.named_modules())
    unknown = [s for s in skip
               if not isinstance(s, str) or not s or s not in modules
               or not any(p == s or p.startswith(s + ".") for p in layers)]
    if unknown:
        raise ValueError(f"skip names no nn.Linear / nn.Conv2d layer (nor a module holding one) "
                         f"of the model: {', '.join(repr(s) for s in unknown)}")
    return skip


def _check_conv(path, conv):
    problems = []
    if conv.groups != 1 and conv.groups != conv.in_channels:
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
                         f"only for odd kernels), or groups=in_channels={conv.in_channels} "
                         f"(depthwise)")


def _conv_kwargs(conv):
    return dict(in_channels=conv.in_channels, out_channels=conv.out_channels,
                kernel_size=tuple(conv.kernel_size), stride=tuple(conv.stride),
                padding=conv.padding if isinstance(conv.padding, str) else tuple(conv.padding),
                groups=conv.groups, bias=conv.bias is not None)


def _replace(model, path, new):
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, new)


def _like(new, old):
    """Give ``new`` the device and dtype of ``old`` *before* any weight is copied: copying a
    float64 weight into a fresh float32 parameter would round it (and DeepShift-Q would then
    round the rounded weight, possibly to the other power of two)."""
    new.to(device=old.weight.device, dtype=old.weight.dtype)


def _convert(model, depth, skip, make, check=None):
    targets = convertible_layers(model, depth, skip)
    for path, m in targets:
        if isinstance(m, nn.Conv2d):
            _check_conv(path, m)
        if check is not None:
            check(path, m)
    for path, old in targets:
        new = make(old)
        new.to(device=old.weight.device, dtype=old.weight.dtype)
        new.train(old.training)
        with torch.no_grad():
            # A ShiftAddNet pair (nn.Sequential) has no bias of its own: ``make`` put the old
            # one into its adder conv.
            if old.bias is not None and not isinstance(new, nn.Sequential):
                new.bias.copy_(old.bias)
        _replace(model, path, new)
    return model


def _shift_from(old, mode, weight_bits, **kwargs):
    """The shift layer of ``old``'s shape (``kwargs`` override its arguments), its weights
    rounded from ``old``'s (mode ``"ps"``) or copied (mode ``"q"``)."""
    if isinstance(old, nn.Linear):
        new = ShiftLinear(old.in_features, old.out_features, old.bias is not None,
                          mode=mode, weight_bits=weight_bits)
    else:
        new = ShiftConv2d(**{**_conv_kwargs(old), **kwargs}, mode=mode, weight_bits=weight_bits)
    _like(new, old)
    with torch.no_grad():
        if mode == "q":
            new.weight.copy_(old.weight)
        else:
            shift, sign = ps_params_from_weight(old.weight, weight_bits)
            new.shift.copy_(shift)
            new.sign.copy_(sign)
    return new


def convert_to_shift(model, mode="ps", weight_bits=5, depth=None, skip=()):
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
    skip : iterable of str
        Module paths left alone, e.g. ``("conv1", "fc")`` (see the module's docstring).

    Returns
    -------
    torch.nn.Module
        ``model`` itself.

    Raises
    ------
    ValueError
        A bad argument, an unknown ``skip`` path, or a ``Conv2d`` with groups, dilation or a
        padding mode the shift layers do not support (the message names its path).
    """
    check_mode(mode)
    check_weight_bits(weight_bits)
    return _convert(model, depth, skip, lambda old: _shift_from(old, mode, weight_bits))


def _adder_from(old, **kwargs):
    """The adder layer of ``old``'s shape and weights (``kwargs`` override its arguments)."""
    if isinstance(old, nn.Linear):
        new = AdderLinear(old.in_features, old.out_features, old.bias is not None)
    else:
        new = AdderConv2d(**{**_conv_kwargs(old), **kwargs})
    _like(new, old)
    with torch.no_grad():
        new.weight.copy_(old.weight)
    return new


def convert_to_adder(model, depth=None, skip=()):
    """Replace ``nn.Linear`` / ``nn.Conv2d`` by :class:`AdderLinear` / :class:`AdderConv2d`.

    The weights and biases are copied unchanged. Note that an adder layer computes
    ``-sum |x - w|``, not ``x · w``: the converted model computes something else and needs
    (re)training, with a BatchNorm after every adder layer (SEEDS.md section 2). AdderNet's
    usual practice keeps the first convolution and the classifier as multiplications: pass
    their paths in ``skip``.

    Parameters
    ----------
    model : torch.nn.Module
        Converted in place.
    depth : int, optional
        Convert only the first ``depth`` layers in module order (default: all).
    skip : iterable of str
        Module paths left alone, e.g. ``("conv1", "fc")`` (see the module's docstring).

    Returns
    -------
    torch.nn.Module
        ``model`` itself.

    Raises
    ------
    ValueError
        A bad argument, an unknown ``skip`` path, or an unsupported ``Conv2d`` (the message
        names its path).
    """
    return _convert(model, depth, skip, _adder_from)


def _check_odd_kernel(path, m):
    if isinstance(m, nn.Conv2d) and any(k % 2 == 0 for k in m.kernel_size):
        raise ValueError(f"Conv2d at {path!r} has kernel_size={tuple(m.kernel_size)}; the "
                         f"ShiftAddNet form needs odd kernel sizes (its adder conv keeps the "
                         f"map's size with padding k // 2)")


def convert_to_shiftadd(model, mode="ps", weight_bits=5, skip=()):
    """ShiftAddNet's form: every conv a shift conv followed by an adder conv, linear shift.

    Each selected ``nn.Conv2d(in, out, k, stride, padding, groups)`` becomes
    ``nn.Sequential(ShiftConv2d(in, out, k, stride, padding, groups, bias=False),
    AdderConv2d(out, out, k, 1, k // 2, groups=1 or out, bias=<old bias is not None>))``: the
    shift conv takes the old weights (rounded as :func:`convert_to_shift` does), the adder conv
    is freshly initialised (as :class:`torch.nn.Conv2d`) and takes the old bias. A depthwise
    conv gives a depthwise shift conv and a depthwise adder conv (``groups=out``). Each
    selected ``nn.Linear`` becomes a :class:`ShiftLinear` (ShiftAddNet keeps a shift
    classifier). The result needs training (You et al., NeurIPS 2020).

    Parameters
    ----------
    model : torch.nn.Module
        Converted in place.
    mode : ``"ps"`` or ``"q"``
        The shift layers' mode (ShiftAddNet uses DeepShift-PS).
    weight_bits : int
        2..6, the shift layers' width (ShiftAddNet: 5).
    skip : iterable of str
        Module paths left alone; ShiftAddNet keeps the first conv and the classifier as
        multiplications, e.g. ``("conv1", "fc")``.

    Returns
    -------
    torch.nn.Module
        ``model`` itself.

    Raises
    ------
    ValueError
        A bad argument, an unknown ``skip`` path, an unsupported ``Conv2d`` or one with an even
        kernel size (the message names its path).
    """
    check_mode(mode)
    check_weight_bits(weight_bits)

    def make(old):
        if isinstance(old, nn.Linear):
            return _shift_from(old, mode, weight_bits)
        shift = _shift_from(old, mode, weight_bits, bias=False)
        kh, kw = old.kernel_size
        out = old.out_channels
        adder = AdderConv2d(out, out, (kh, kw), 1, (kh // 2, kw // 2),
                            groups=1 if old.groups == 1 else out, bias=old.bias is not None)
        _like(adder, old)
        if old.bias is not None:
            with torch.no_grad():
                adder.bias.copy_(old.bias)
        return nn.Sequential(shift, adder)

    return _convert(model, None, skip, make, _check_odd_kernel)
