"""What the torch.fx capture (:mod:`mulfree.host.capture`) recognises, as registries.

Every fx node the capture meets is a module call, a function call or a method call. Its
*rule* (the :class:`~mulfree.host.capture_ops.OpBuilder` builder it goes to) is looked up
here: :data:`MODULE_OPS` (by the module's type), :data:`FUNCTION_OPS` (by the function) and
:data:`METHOD_OPS` (by the method's name). A node found in none of them, and not skipped
(:data:`~mulfree.host.quant_parse.SKIPPED` modules, :data:`DROPOUT_FNS`,
:data:`ALIAS_METHODS`, a reshape that keeps the shape) nor shape arithmetic
(:data:`SHAPE_METHODS`, :data:`SHAPE_ATTRS`), is refused naming the node.
:mod:`mulfree.host.ops_table` renders the same registries as ``docs/supported_ops.md``.
Part of :mod:`mulfree.host.quant`.
"""

import operator

import torch
from torch import nn
from torch.nn import functional as F

from .quant_parse import CONV_TYPES, LINEAR_TYPES
from .zero_flop_layers import AddressShift2d, ChannelShift, Shift2d


__all__ = ["DROPOUT_FNS", "ALIAS_METHODS", "SHAPE_METHODS", "SHAPE_ATTRS", "RESHAPE_FNS",
           "RESHAPE_METHODS", "CAT_FNS", "FUNCTION_OPS", "METHOD_OPS", "MODULE_OPS", "RULES",
           "module_rule", "function_rule", "method_rule", "function_name",
           "module_name"]


#: Functions skipped at inference (identities).
DROPOUT_FNS = (F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout,
               F.feature_alpha_dropout)
#: Methods that return their input's values (skipped).
ALIAS_METHODS = ("contiguous", "clone", "detach")
#: Methods and attributes that read a tensor's shape only (shape arithmetic).
SHAPE_METHODS = ("size", "dim", "numel", "ndimension")
SHAPE_ATTRS = ("shape", "ndim", "dtype", "device")
RESHAPE_FNS = (torch.flatten, torch.reshape, torch.squeeze)
RESHAPE_METHODS = ("view", "reshape", "flatten", "squeeze")
CAT_FNS = (torch.cat, torch.concat, torch.concatenate)

#: The rules, in the order ``docs/supported_ops.md`` lists them.
RULES = ("weight", "batchnorm", "relu", "relu6", "hardtanh", "clamp", "add", "concat",
         "maxpool", "avgpool", "adaptive", "mean", "reshape", "subsample", "pad", "shift")

#: ``call_module`` nodes: ``(module types, rule, exact)``; ``exact``: the type itself, not a
#: subclass (a subclass of ``nn.ReLU`` may compute something else).
MODULE_OPS = (
    (LINEAR_TYPES + CONV_TYPES, "weight", False),
    ((nn.BatchNorm1d, nn.BatchNorm2d), "batchnorm", False),
    ((nn.ReLU,), "relu", True),
    ((nn.Hardtanh,), "hardtanh", False),                    # nn.ReLU6 is one
    ((nn.MaxPool2d,), "maxpool", True),
    ((nn.AvgPool2d,), "avgpool", True),
    ((nn.AdaptiveAvgPool2d,), "adaptive", True),
    ((nn.Flatten,), "reshape", False),
    ((nn.ConstantPad2d,), "pad", False),                    # nn.ZeroPad2d is one
    ((Shift2d, AddressShift2d, ChannelShift), "shift", False),
)

#: ``call_function`` nodes: function -> rule.
FUNCTION_OPS = {
    F.relu: "relu", torch.relu: "relu", torch.relu_: "relu", F.relu_: "relu",
    F.relu6: "relu6", F.hardtanh: "hardtanh", torch.clamp: "clamp", torch.clip: "clamp",
    operator.add: "add", operator.iadd: "add", torch.add: "add",
    **dict.fromkeys(CAT_FNS, "concat"),
    F.max_pool2d: "maxpool", torch.max_pool2d: "maxpool", F.avg_pool2d: "avgpool",
    F.adaptive_avg_pool2d: "adaptive", torch.mean: "mean",
    **dict.fromkeys(RESHAPE_FNS, "reshape"),
    F.pad: "pad", operator.getitem: "subsample",
}

#: ``call_method`` nodes: ``Tensor`` method name -> rule.
METHOD_OPS = {
    "relu": "relu", "relu_": "relu",
    **dict.fromkeys(("clamp", "clamp_", "clip", "clip_"), "clamp"),
    "add": "add", "add_": "add", "mean": "mean",
    **dict.fromkeys(RESHAPE_METHODS, "reshape"),
}


def module_rule(m):
    """The rule of module ``m`` (:data:`MODULE_OPS`), or None."""
    for types, rule, exact in MODULE_OPS:
        if (type(m) in types) if exact else isinstance(m, types):
            return rule
    return None


def function_rule(f):
    """The rule of function ``f`` (:data:`FUNCTION_OPS`), or None (also for an unhashable
    target)."""
    try:
        return FUNCTION_OPS.get(f)
    except TypeError:
        return None


def method_rule(name):
    """The rule of the ``Tensor`` method ``name`` (:data:`METHOD_OPS`), or None."""
    return METHOD_OPS.get(name) if isinstance(name, str) else None


_FN_NAMES = {F.max_pool2d: "F.max_pool2d", F.avg_pool2d: "F.avg_pool2d", F.pad: "F.pad",
             getattr: "getattr"}


def function_name(f):
    """How a message or the table names function ``f``: ``F.relu``, ``torch.cat``,
    ``operator.add``."""
    if f in _FN_NAMES:
        return _FN_NAMES[f]
    mod = getattr(f, "__module__", None) or ""
    name = getattr(f, "__name__", repr(f))
    if mod in ("_operator", "operator"):
        return f"operator.{name}"
    if mod.startswith("torch.nn.functional") or mod.startswith("torch._C._nn"):
        return f"F.{name}"
    if mod.startswith("torch"):
        return f"torch.{name}"
    return f"{mod}.{name}" if mod else name


def module_name(t):
    """How the table names module type ``t``: ``nn.Conv2d``, or the mulfree layer's name."""
    return f"nn.{t.__name__}" if t.__module__.startswith("torch.nn") else t.__name__
