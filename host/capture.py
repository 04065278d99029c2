"""Capture any PyTorch model as a graph of quantizable ops, with :mod:`torch.fx`.

:func:`capture` traces the model with :class:`CaptureTracer` (the mulfree layers and the
standard ``torch.nn`` modules stay whole: ``call_module`` nodes), runs
:class:`torch.fx.passes.shape_prop.ShapeProp` on a sample of the calibration input, and maps
every fx node to an *op* of the integer graph (:class:`CapturedGraph`), the nodes of
:mod:`mulfree.params.int_layers` before their scales are chosen. Which module, function or
method goes to which builder is :mod:`mulfree.host.capture_registry`'s; what is supported, in
:data:`~mulfree.host.quant_parse.SUPPORTED`; the propagated shapes recognise flattening
(``nn.Flatten``, ``torch.flatten(x, 1)``, ``x.view(x.size(0), -1)``, ``x.reshape(B, -1)``),
``x[:, :, ::s, ::s]`` (a subsample: max pooling with kernel 1, stride ``s``) and identities.

Folding (a node merged into the op it reads, when that op has no other reader):

* BatchNorm1d/2d directly after a linear / convolution (folded as ``ptq`` says);
* ReLU into the weight op or add it follows, also through ops that only move or select values
  with zero fill (:data:`MOVES`: pooling by max, flattening, padding, the shifts), which
  commute with it; otherwise a ``clamp`` op with ``lo = 0``;
* a clamp (ReLU6, Hardtanh, ``torch.clamp``) stays a ``clamp`` op, and the op that sets its
  input's scale (found the same way) calibrates on the clamped values (``clip``) and, for a
  lower bound ``>= 0``, takes the ReLU;
* ``Shift2d`` of any odd kernel the format holds (offsets up to ``MAX_SHIFT2D``) into the
  convolution that is its only reader (the convolution's ``shifts`` table; the compiler runs
  it on a core whose ``shift_reach`` covers the offsets).

Identities, dropout, ``contiguous`` and shape arithmetic (``x.size(0)``, ``x.shape``) are
skipped. Anything else raises :class:`~mulfree.host.quant_parse.QuantizeError` naming the fx
node, its target and what is supported. Part of :mod:`mulfree.host.quant`.
"""

import contextlib
import inspect
import io
import operator
from dataclasses import dataclass

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata
from torch.nn import functional as F

from ..params.int_layers import INPUT_NAME
from .adder_layers import AdderConv2d, AdderLinear
from .capture_ops import MOVES, RESCALING, OpBuilder, supported
from .capture_registry import (ALIAS_METHODS, CAT_FNS, DROPOUT_FNS, RESHAPE_FNS,
                               RESHAPE_METHODS, SHAPE_ATTRS, SHAPE_METHODS, function_name,
                               function_rule, method_rule, module_rule)
from .quant_parse import SKIPPED, QuantizeError
from .shift_layers import ShiftConv2d, ShiftLinear
from .zero_flop_layers import AddressShift2d, ChannelShift, Shift2d


__all__ = ["LEAF_TYPES", "MOVES", "RESCALING", "CaptureTracer", "CapturedGraph",
           "trace_model", "capture"]


#: The mulfree layers :class:`CaptureTracer` keeps whole (with the standard ``torch.nn`` ones).
LEAF_TYPES = (ShiftConv2d, ShiftLinear, AdderConv2d, AdderLinear, Shift2d, AddressShift2d,
              ChannelShift)

_POOL = ("input", "kernel_size", "stride", "padding")
#: Parameter names of the functions and methods the capture reads (``input`` first).
_FN_PARAMS = {
    F.relu: ("input", "inplace"), torch.relu: ("input",), torch.relu_: ("input",),
    F.relu_: ("input",), F.relu6: ("input", "inplace"),
    F.hardtanh: ("input", "min_val", "max_val", "inplace"),
    torch.clamp: ("input", "min", "max"), torch.clip: ("input", "min", "max"),
    operator.add: ("input", "other"), operator.iadd: ("input", "other"),
    torch.add: ("input", "other"),
    F.max_pool2d: _POOL + ("dilation", "ceil_mode", "return_indices"),
    torch.max_pool2d: _POOL + ("dilation", "ceil_mode"),
    F.avg_pool2d: _POOL + ("ceil_mode", "count_include_pad", "divisor_override"),
    F.adaptive_avg_pool2d: ("input", "output_size"), torch.mean: ("input", "dim", "keepdim"),
    F.pad: ("input", "pad", "mode", "value"), operator.getitem: ("input", "index"),
}
_FN_PARAMS.update({f: ("tensors", "dim") for f in CAT_FNS})
_FN_PARAMS.update({f: ("input",) for f in RESHAPE_FNS})
_METHOD_PARAMS = {"relu": ("input",), "relu_": ("input",), "add": ("input", "other"),
                  "add_": ("input", "other"), "mean": ("input", "dim", "keepdim")}
_METHOD_PARAMS.update({m: ("input", "min", "max") for m in ("clamp", "clamp_", "clip",
                                                             "clip_")})
_METHOD_PARAMS.update({m: ("input",) for m in RESHAPE_METHODS})

class CaptureTracer(torch.fx.Tracer):
    """A :class:`torch.fx.Tracer` that keeps the mulfree layers (:data:`LEAF_TYPES`) whole.

    They appear as ``call_module`` nodes, as do the standard ``torch.nn`` leaves (everything
    in ``torch.nn`` but ``nn.Sequential``); the shifts' Python loops are never traced.
    """

    def is_leaf_module(self, m, module_qualified_name):
        """True for :data:`LEAF_TYPES` and the tracer's standard leaves."""
        return isinstance(m, LEAF_TYPES) or super().is_leaf_module(m, module_qualified_name)


@dataclass
class CapturedGraph:
    """A model captured for quantization.

    Attributes
    ----------
    input_shape : tuple
        One sample's shape (``(C, H, W)`` or ``(features,)``).
    ops : list of dict
        In topological order. Every op has ``kind`` (``"weight"``, :data:`RESCALING`,
        :data:`MOVES`, ``"clamp"``), ``name``, ``inputs`` (op names; ``"input"`` is the
        model's input), ``where`` (the fx node for messages), ``relu`` and ``clip`` (real
        bounds to calibrate on, or None), and its kind's fields: a weight op is a
        :func:`~mulfree.host.quant_parse.parse_model` item (``module``, ``pe``, ``conv``,
        ``geometry``, ``bn``, ``shift2d``, ``path``); pooling ``kernel``, ``stride``,
        ``padding``; clamp ``lo_real``, ``hi_real`` (None: unbounded); pad ``pads``
        (the format's order); shift2d / address_shift ``offsets``; channel_shift ``r``.
    output : str
        The op whose output is the model's (the last one).
    """

    input_shape: tuple
    ops: list
    output: str


def _first_line(exc):
    cause = exc.__cause__ or exc
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0] if text else ''}"


@contextlib.contextmanager
def _eval_mode(model):
    """Inference mode (BatchNorm's running statistics, no dropout) while capturing; the
    modules' own modes are restored afterwards, so the model is not modified."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def trace_model(model):
    """``model`` traced by :class:`CaptureTracer`, as a :class:`torch.fx.GraphModule`.

    Raises
    ------
    QuantizeError
        One line, if ``model`` is not an ``nn.Module`` or cannot be traced (data-dependent
        control flow, ``len`` of a tensor...).
    """
    if not isinstance(model, nn.Module):
        raise QuantizeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    # Arguments after the input that have defaults keep them (``forward(x, mask=None)``).
    try:
        params = list(inspect.signature(model.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        params = []
    concrete = {p.name: p.default for p in params
                if p.default is not inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    try:
        graph = CaptureTracer().trace(model, concrete_args=concrete or None)
    except Exception as exc:          # what fx raises varies: TraceError, TypeError...
        raise QuantizeError(f"model ({type(model).__name__}) cannot be traced by torch.fx "
                            f"({_first_line(exc)}); quantize needs a model without "
                            f"data-dependent control flow") from None
    return torch.fx.GraphModule(model, graph, type(model).__name__)


class _Shapes(ShapeProp):
    """ShapeProp that also keeps the Python values of non-tensor nodes (sizes) and remembers
    the node that failed (ShapeProp prints a traceback; the capture says one line)."""

    def __init__(self, gm):
        super().__init__(gm)
        self.values = {}
        self.failed = None

    def run_node(self, n):
        try:
            with contextlib.redirect_stderr(io.StringIO()):
                result = super().run_node(n)
        except Exception as exc:
            self.failed = (n, exc)
            raise
        if not isinstance(result, torch.Tensor):
            self.values[n] = result
        return result


class _Capture(OpBuilder):
    """The walk over the fx graph that builds the ops (see the module docstring)."""

    def __init__(self, gm):
        super().__init__()
        self.gm = gm
        self.modules = dict(gm.named_modules())
        self.values = {}
        self.roles = {}
        self.reader_counts = {}

    # Facts about fx nodes --------------------------------------------------------------

    def where(self, n):
        """The fx node in a message: module path, type and fx name, or name and target."""
        if n.op == "call_module":
            return f"model.{n.target} ({type(self.modules[n.target]).__name__}, fx node " \
                   f"{n.name})"
        if n.op == "call_method":
            return f"{n.name} (Tensor.{n.target})"
        if n.op == "call_function":
            return f"{n.name} ({function_name(n.target)})"
        return f"{n.name} ({n.op} {n.target})"

    def shape(self, n):
        meta = n.meta.get("tensor_meta") if isinstance(n, torch.fx.Node) else None
        return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None

    def module(self, n):
        return self.modules[n.target] if n.op == "call_module" else None

    def bound(self, n):
        """``n``'s arguments by parameter name, sizes replaced by their values."""
        if n.op == "call_function":
            names = _FN_PARAMS.get(n.target, ("input",))
        else:
            names = _METHOD_PARAMS.get(n.target, ("input",))
        args = torch.fx.node.map_arg(n.args, lambda a: self.values.get(a, a))
        kwargs = torch.fx.node.map_arg(n.kwargs, lambda a: self.values.get(a, a))
        out = dict(zip(names, args))
        if len(args) > len(names):
            out["*rest"] = tuple(args[len(names):])
        out.update(kwargs)
        return out

    def role(self, n):
        """``"meta"`` (shape arithmetic), ``"skip"`` (an identity) or ``"op"``."""
        if n not in self.roles:
            self.roles[n] = self._role(n)
        return self.roles[n]

    def _role(self, n):
        if n.op == "output" or (self.shape(n) is None and "tensor_meta" in n.meta):
            return "op"                    # the output, or tensors in a tuple (torch.chunk...)
        if self.shape(n) is None:
            return "meta"
        m = self.module(n)
        if m is not None and isinstance(m, SKIPPED):
            return "skip"
        if n.op == "call_function" and n.target in DROPOUT_FNS:
            return "skip"
        if n.op == "call_method" and n.target in ALIAS_METHODS:
            return "skip"
        src = n.args[0] if n.args else None
        same = isinstance(src, torch.fx.Node) and self.shape(src) == self.shape(n)
        reshape = (isinstance(m, nn.Flatten) or
                   (n.op == "call_function" and n.target in RESHAPE_FNS) or
                   (n.op == "call_method" and n.target in RESHAPE_METHODS))
        if reshape and same:
            return "skip"
        if n.op == "call_function" and n.target is operator.getitem and same and \
                self.subsample_steps(n) == (1, 1):
            return "skip"
        if n.op == "call_function" and n.target in CAT_FNS:
            tensors = self.bound(n).get("tensors")
            if isinstance(tensors, (list, tuple)) and len(tensors) == 1:
                return "skip"
        return "op"

    def readers(self, n):
        """How many ops read ``n``'s value (through identities; shape arithmetic does not
        count; the model's output does)."""
        if n not in self.reader_counts:
            count = 0
            for u in n.users:
                role = self.role(u)
                if role == "skip":
                    count += self.readers(u)
                elif role == "op":
                    count += 1
            self.reader_counts[n] = count
        return self.reader_counts[n]

    def is_inplace(self, n):
        m = self.module(n)
        if m is not None:
            return bool(getattr(m, "inplace", False)) and not isinstance(m, SKIPPED)
        if n.op == "call_function":
            return n.kwargs.get("inplace") is True or n.target in (torch.relu_, F.relu_,
                                                                   operator.iadd)
        return n.op == "call_method" and n.target.endswith("_") \
            and not n.target.startswith("_")

    def check_inputs(self):
        """One input tensor: a further placeholder must be unused or hold its default."""
        placeholders = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        for n in placeholders[1:]:
            if n.users and not n.args:          # n.args: a default the trace kept
                raise self.fail(n, "is a second input; the model must take one tensor")

    def check_inplace(self):
        """An in-place op must be the only reader of what it overwrites: the graph's values
        are immutable, so another reader would see the wrong one."""
        for n in self.gm.graph.nodes:
            if self.role(n) != "op" or n.op == "output" or not self.is_inplace(n) \
                    or not n.args or not isinstance(n.args[0], torch.fx.Node):
                continue
            src = n.args[0]
            while self.role(src) == "skip" and src.args and isinstance(src.args[0],
                                                                       torch.fx.Node):
                src = src.args[0]
            if self.readers(src) > 1:
                raise self.fail(n, f"works in place on {src.name}, which other nodes also "
                                   f"read (write it out of place)")

    # The walk ----------------------------------------------------------------------------

    def run(self):
        self.check_inplace()
        self.gm.graph.eliminate_dead_code()
        self.roles.clear()
        self.reader_counts.clear()
        input_shape, output = None, None
        for n in self.gm.graph.nodes:
            if n.op == "placeholder":
                if input_shape is None and self.shape(n) is not None:
                    input_shape = self.shape(n)[1:]
                    self.handle[n] = INPUT_NAME
                elif n.users and not n.args:
                    raise self.fail(n, "is a second input; the model must take one tensor")
            elif n.op == "output":
                out = n.args[0]
                if not isinstance(out, torch.fx.Node) or out not in self.handle:
                    raise QuantizeError(f"the model must return one tensor computed from its "
                                        f"input, not {out!r:.80}")
                output = self.handle[out]
            elif self.role(n) == "meta":
                self.meta(n)
            elif self.role(n) == "skip":
                bound = self.bound(n)
                src = bound.get("tensors", [bound.get("input")])[0] \
                    if "tensors" in bound else bound.get("input")
                self.alias(n, self.tensor_in(n, src))
            else:
                self.visit(n)
        if output == INPUT_NAME or not any(op["kind"] == "weight" for op in self.ops.values()):
            raise QuantizeError(f"model has no weight layer; {supported()}")
        keep, todo = set(), [output]
        while todo:
            name = todo.pop()
            if name in self.ops and name not in keep:
                keep.add(name)
                todo.extend(self.ops[name]["inputs"])
        ops = [op for op in self.ops.values() if op["name"] in keep]
        return CapturedGraph(tuple(input_shape), ops, output)

    def meta(self, n):
        """Shape arithmetic may read a tensor's shape, never its values."""
        reads_tensor = any(self.shape(a) is not None for a in n.all_input_nodes)
        shape_only = (n.op == "call_method" and n.target in SHAPE_METHODS) or (
            n.op == "call_function" and n.target is getattr and len(n.args) > 1
            and n.args[1] in SHAPE_ATTRS)
        if reads_tensor and not shape_only:
            raise self.fail(n, "turns a tensor's values into a Python value")

    def visit(self, n):
        if n.op == "get_attr":
            raise self.fail(n, "is a parameter or buffer computed with directly (F.linear, "
                               "F.conv2d...); use the layer modules")
        m = self.module(n)
        if m is not None:
            rule = module_rule(m)
            if rule is None:
                raise self.fail(n)
            return _MODULE_CALLS[rule](self, n, m, n.args[0] if n.args
                                       else n.kwargs.get("input"))
        rule = function_rule(n.target) if n.op == "call_function" else \
            method_rule(n.target) if n.op == "call_method" else None
        if rule is None or rule not in _CALLS:
            raise self.fail(n)
        return _CALLS[rule](self, n, self.bound(n))

    def index(self, n, x):
        """``x[...]``: a subsample of a tensor (:meth:`subsample`); indexing anything else
        (a tuple of tensors) is refused."""
        if self.shape(x) is None:
            raise self.fail(n)
        return self.subsample(n, x)


# The registries' rules (mulfree.host.capture_registry) as calls of the builders: a function
# or method with its bound arguments, a module with its attributes.
_CALLS = {
    "relu": lambda c, n, b: c.relu(n, b["input"]),
    "relu6": lambda c, n, b: c.clamp(n, b["input"], 0.0, 6.0),
    "hardtanh": lambda c, n, b: c.clamp(n, b["input"], b.get("min_val", -1.0),
                                        b.get("max_val", 1.0)),
    "clamp": lambda c, n, b: c.clamp(n, b["input"], b.get("min"), b.get("max")),
    "add": lambda c, n, b: c.add(n, b),
    "concat": lambda c, n, b: c.concat(n, b),
    "maxpool": lambda c, n, b: c.maxpool(n, b["input"], b.get("kernel_size"), b.get("stride"),
                                         b.get("padding", 0), b.get("dilation", 1),
                                         b.get("ceil_mode", False),
                                         b.get("return_indices", False)),
    "avgpool": lambda c, n, b: c.avgpool(n, b["input"], b.get("kernel_size"), b.get("stride"),
                                         b.get("padding", 0), b.get("ceil_mode", False),
                                         b.get("count_include_pad", True),
                                         b.get("divisor_override")),
    "adaptive": lambda c, n, b: c.adaptive(n, b["input"], b.get("output_size")),
    "mean": lambda c, n, b: c.mean(n, b),
    "reshape": lambda c, n, b: c.reshape(n, b["input"]),
    "pad": lambda c, n, b: c.pad(n, b["input"], b.get("pad"), b.get("mode", "constant"),
                                 b.get("value")),
    "subsample": lambda c, n, b: c.index(n, b["input"]),
}
_MODULE_CALLS = {
    "weight": lambda c, n, m, x: c.weight(n, m, x),
    "batchnorm": lambda c, n, m, x: c.batchnorm(n, m, x),
    "relu": lambda c, n, m, x: c.relu(n, x),
    "hardtanh": lambda c, n, m, x: c.clamp(n, x, m.min_val, m.max_val),
    "maxpool": lambda c, n, m, x: c.maxpool(n, x, m.kernel_size, m.stride, m.padding,
                                            m.dilation, m.ceil_mode, m.return_indices),
    "avgpool": lambda c, n, m, x: c.avgpool(n, x, m.kernel_size, m.stride, m.padding,
                                            m.ceil_mode, m.count_include_pad,
                                            m.divisor_override),
    "adaptive": lambda c, n, m, x: c.adaptive(n, x, m.output_size),
    "reshape": lambda c, n, m, x: c.reshape(n, x),
    "pad": lambda c, n, m, x: c.pad(n, x, m.padding, "constant", m.value),
    "shift": lambda c, n, m, x: c.shift_op(n, m, x),
}


def _model_dtype(model):
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def capture(model, sample):
    """Trace ``model`` with :mod:`torch.fx` and map it to quantizable ops.

    Parameters
    ----------
    model : torch.nn.Module
        Not modified (it runs in eval mode during the capture, its modes are restored).
    sample : float tensor ``[B, C, H, W]`` or ``[B, features]``
        A few calibration inputs for :class:`~torch.fx.passes.shape_prop.ShapeProp` (the
        shapes recognise flattening and subsampling).

    Returns
    -------
    CapturedGraph

    Raises
    ------
    QuantizeError
        One line naming the fx node (module path and type, or name and function), what is
        wrong and :data:`~mulfree.host.quant_parse.SUPPORTED`; or that the model cannot be
        traced.
    """
    if isinstance(model, nn.Module) and CaptureTracer().is_leaf_module(model, ""):
        model = nn.Sequential(model)        # fx traces the root's own forward: keep it whole
    with _eval_mode(model), torch.no_grad():
        gm = trace_model(model)
        walk = _Capture(gm)
        walk.check_inputs()
        shapes = _Shapes(gm)
        try:
            shapes.propagate(torch.as_tensor(sample).to(_model_dtype(model)))
        except Exception as exc:
            if shapes.failed is None:
                raise QuantizeError(f"model ({type(model).__name__}) fails on the "
                                    f"calibration sample ({_first_line(exc)})") from None
            n, cause = shapes.failed
            raise QuantizeError(f"{walk.where(n)} fails on the calibration sample "
                                f"({_first_line(cause)}); {supported()}") from None
        walk.values = shapes.values
        return walk.run()
