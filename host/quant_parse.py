"""What the quantizer accepts (:data:`SUPPORTED`), and reading an ``nn.Sequential`` chain
into the layers it quantizes.

Any other model (and a ``Sequential`` :func:`parse_model` refuses) is captured with
:mod:`torch.fx` by :mod:`mulfree.host.capture`, which shares :class:`QuantizeError`,
:func:`unsupported`, :func:`conv_geometry` and :func:`weight_pe` with this module.

:func:`parse_model` flattens nested ``nn.Sequential``, skips identities and dropout, and folds
what follows a weight layer into it (BatchNorm, ReLU; ``Shift2d`` before a convolution);
anything else raises :class:`QuantizeError` naming the module's path and :data:`SUPPORTED`.
Both the post-training quantizer (:mod:`mulfree.host.ptq`) and the quantization-aware wrapper
(:mod:`mulfree.host.qat`) work on its items. Part of :mod:`mulfree.host.quant`, which
re-exports it.
"""

from torch import nn

from ..params.int_layers import MAX_SHIFT2D
from .adder_layers import AdderConv2d, AdderLinear
from .shift_layers import ShiftConv2d, ShiftLinear
from .zero_flop_layers import Shift2d


__all__ = ["QuantizeError", "SUPPORTED", "parse_model", "unsupported", "conv_geometry",
           "weight_pe", "SKIPPED", "LINEAR_TYPES", "CONV_TYPES"]


#: What :func:`~mulfree.host.ptq.quantize` accepts, for error messages: an ``nn.Sequential``
#: of these modules, or any model :mod:`torch.fx` traces (:mod:`mulfree.host.capture`) made of
#: these modules and functions.
SUPPORTED = ("ShiftLinear", "ShiftConv2d", "AdderLinear", "AdderConv2d", "nn.Linear",
             "nn.Conv2d (groups 1 or depthwise, dilation 1, zeros padding)",
             "nn.BatchNorm1d/2d (directly after a weight layer)",
             "ReLU (nn.ReLU, F.relu, torch.relu, x.relu())",
             "ReLU6 and clamps (nn.ReLU6, F.relu6, nn.Hardtanh, F.hardtanh, torch.clamp, "
             "x.clamp)",
             "residual + of two tensors (operator.add, torch.add, x.add)",
             "torch.cat(dim=1)", "nn.MaxPool2d / F.max_pool2d",
             "nn.AvgPool2d / F.avg_pool2d (count_include_pad=True)",
             "nn.AdaptiveAvgPool2d(1) / F.adaptive_avg_pool2d(x, 1) / x.mean((2, 3))",
             "flatten to [B, -1] (nn.Flatten, torch.flatten(x, 1), x.flatten(1), x.view, "
             "x.reshape)", "x[:, :, ::s, ::s]", "F.pad / nn.ZeroPad2d (zeros)",
             "Shift2d", "AddressShift2d", "ChannelShift", "nn.Identity", "nn.Dropout",
             "nested nn.Sequential")

#: Modules the quantizer skips (identities at inference).
SKIPPED = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d,
            nn.AlphaDropout, nn.FeatureAlphaDropout)
LINEAR_TYPES = (ShiftLinear, AdderLinear, nn.Linear)
CONV_TYPES = (ShiftConv2d, AdderConv2d, nn.Conv2d)


class QuantizeError(ValueError):
    """A model :func:`~mulfree.host.ptq.quantize` cannot convert; the message names the
    module's path."""


def _flatten_modules(module, prefix):
    for name, child in module.named_children():
        path = f"{prefix}.{name}"
        if isinstance(child, nn.Sequential):
            yield from _flatten_modules(child, path)
        else:
            yield path, child


def unsupported(path, module, why=None, node=None):
    """The :class:`QuantizeError` for ``module`` at ``path`` (and fx ``node``, a name):
    ``why`` (default: "is not supported") and :data:`SUPPORTED`."""
    fx = "" if node is None else f", fx node {node}"
    what = f"{path} ({type(module).__name__}{fx})"
    reason = why or "is not supported"
    return QuantizeError(f"{what} {reason}; quantize supports: {', '.join(SUPPORTED)}")


def weight_pe(m):
    """The PE kind of a weight module: ``"shift"``, ``"adder"`` or ``"mult"``."""
    return ("shift" if isinstance(m, (ShiftLinear, ShiftConv2d)) else
            "adder" if isinstance(m, (AdderLinear, AdderConv2d)) else "mult")


def conv_geometry(path, m, depthwise=False, node=None):
    """``(kh, kw), stride, padding`` of a convolution, checked against what the format holds.

    ``groups`` must be 1, or with ``depthwise=True`` also the input's channels (``path`` and
    the fx ``node`` name the module in the :class:`QuantizeError`).
    """
    if isinstance(m, nn.Conv2d):
        ok_groups = m.groups == 1 or (depthwise and m.groups == m.in_channels)
        if not ok_groups or tuple(m.dilation) != (1, 1) or m.padding_mode != "zeros":
            what = "groups 1 or in_channels (depthwise)" if depthwise else "groups=1"
            raise unsupported(path, m, f"has groups={m.groups}, dilation="
                                       f"{tuple(m.dilation)}, padding_mode="
                                       f"{m.padding_mode!r}; it must have {what}, "
                                       f"dilation=1 and padding_mode 'zeros'", node)
        kh, kw = m.kernel_size
        stride = tuple(m.stride)
        padding = m.padding
        if padding == "valid":
            padding = (0, 0)
        elif padding == "same":
            if stride != (1, 1) or kh % 2 == 0 or kw % 2 == 0:
                raise unsupported(path, m, "has padding 'same' with an even kernel or "
                                           "stride", node)
            padding = (kh // 2, kw // 2)
        return (kh, kw), stride, tuple(padding)
    if m.groups != 1 and not depthwise:
        raise unsupported(path, m, f"has groups={m.groups}; it must have groups=1", node)
    return tuple(m.kernel_size), tuple(m.stride), tuple(m.padding)


def parse_model(model):
    """The layers :func:`~mulfree.host.ptq.quantize` quantizes, as dicts, in model order.

    A weight layer is ``kind="weight"`` with ``path``, ``module``, ``pe`` (``"shift"``,
    ``"adder"`` or ``"mult"``), ``conv``, ``geometry`` (a convolution's
    ``(kh, kw), stride, padding``), ``bn`` (``(path, BatchNorm)`` or None), ``relu`` and
    ``shift2d`` (``(path, Shift2d)`` before it, or None); max pooling and flattening are
    ``kind="maxpool2d"`` and ``"flatten"`` with their ``path``.

    Raises
    ------
    QuantizeError
        For an unsupported module or arrangement, naming its path.
    """
    if not isinstance(model, nn.Sequential):
        raise QuantizeError(f"model must be an nn.Sequential, not {type(model).__name__}; "
                            f"quantize supports: {', '.join(SUPPORTED)}")
    items, pending = [], None
    for path, m in _flatten_modules(model, "model"):
        if isinstance(m, SKIPPED):
            continue
        if pending is not None and not isinstance(m, CONV_TYPES):
            raise unsupported(pending[0], pending[1], f"must be directly followed by a "
                                                       f"convolution, not {type(m).__name__} "
                                                       f"({path})")
        if isinstance(m, Shift2d):
            if m.kernel > 2 * MAX_SHIFT2D + 1:
                raise unsupported(path, m, f"has kernel {m.kernel}; the format shifts a "
                                            f"channel by at most {MAX_SHIFT2D} pixels (an odd "
                                            f"kernel up to {2 * MAX_SHIFT2D + 1})")
            pending = (path, m)
        elif isinstance(m, LINEAR_TYPES + CONV_TYPES):
            pe = weight_pe(m)
            item = dict(kind="weight", path=path, module=m, pe=pe,
                        conv=isinstance(m, CONV_TYPES), bn=None, relu=False, shift2d=pending)
            if item["conv"]:
                item["geometry"] = conv_geometry(path, m)
            if pending is not None and pending[1].channels != m.in_channels:
                raise unsupported(pending[0], pending[1], f"has {pending[1].channels} "
                                                           f"channels, {path} takes "
                                                           f"{m.in_channels}")
            pending = None
            items.append(item)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            prev = items[-1] if items else None
            want = nn.BatchNorm2d if prev is not None and prev.get("conv") else nn.BatchNorm1d
            if prev is None or prev["kind"] != "weight" or prev["bn"] is not None \
                    or prev["relu"] or type(m) is not want:
                raise unsupported(path, m, "must directly follow a weight layer (BatchNorm1d "
                                            "a linear one, BatchNorm2d a convolution)")
            if m.running_mean is None or m.running_var is None:
                raise unsupported(path, m, "has no running statistics "
                                            "(track_running_stats=False)")
            n = m.num_features
            out = prev["module"].out_features if not prev["conv"] \
                else prev["module"].out_channels
            if n != out:
                raise unsupported(path, m, f"has {n} features, {prev['path']} gives {out}")
            prev["bn"] = (path, m)
        elif isinstance(m, nn.ReLU):
            target = next((it for it in reversed(items) if it["kind"] == "weight"), None)
            if target is None:
                raise unsupported(path, m, "has no weight layer before it to fold into")
            target["relu"] = True
        elif isinstance(m, nn.MaxPool2d):
            def two(v):
                return v if isinstance(v, tuple) else (v, v)
            stride = m.stride if m.stride is not None else m.kernel_size
            if two(m.kernel_size) != (2, 2) or two(stride) != (2, 2) \
                    or two(m.padding) != (0, 0) or two(m.dilation) != (1, 1) \
                    or m.ceil_mode or m.return_indices:
                raise unsupported(path, m, "must be MaxPool2d(2) (kernel 2, stride 2, no "
                                            "padding, dilation 1, ceil_mode False)")
            items.append(dict(kind="maxpool2d", path=path))
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise unsupported(path, m, "must flatten from dimension 1 to the end")
            items.append(dict(kind="flatten", path=path))
        else:
            raise unsupported(path, m)
    if pending is not None:
        raise unsupported(pending[0], pending[1], "must be directly followed by a "
                                                   "convolution, not the end of the model")
    if not any(it["kind"] == "weight" for it in items):
        raise QuantizeError("model has no weight layer; quantize supports: "
                            + ", ".join(SUPPORTED))
    return items

