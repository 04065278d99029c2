"""The integer model: what a quantized network is exported to, and its validation.

An integer model (:class:`IntModel`) is an input quantization followed by a directed acyclic
graph of nodes (:mod:`mulfree.params.int_layers`), listed so that every node comes after the
nodes it reads; the last node's output is the model's. A node without ``inputs`` reads the
previous node (the first: the input), so a plain chain is written as a list. Every number in
it is an integer that the golden model (:mod:`mulfree.params.graph_golden`) and the engine
consume as is; the real-number scales say how the host quantizes inputs and dequantizes
results.

**Input quantization.** A real input ``x`` stands for ``q * 2^scale_exp``. The host computes

    q = clamp(floor(x * 2^-scale_exp + 1/2), -2^(a-1), 2^(a-1) - 1)        a = input act_bits

(round half up, ties towards +infinity: 2.5 -> 3, -2.5 -> -2, like the post-processing;
``+-inf`` saturate; NaN is refused). See :func:`mulfree.params.model_golden.quantize_input`.

**Edges.** Every tensor has a shape, a width (``act_bits``) and a power-of-two scale
``2^exp``: the input's are the input's; a weight node, an add, a concat and an average
pooling set their output's width and scale (``out_scale_exp``; average pooling: the input's
exponent plus its ``shift``); every other node keeps its input's. An add's ``in_shifts`` and
a concat's ``shifts`` must align its inputs' scales exactly (:func:`graph_nodes` checks).

**Layers with weights** (``docs/numerics.md``, "Post-processing and layers") run on the
:class:`~mulfree.params.config.ArrayConfig` of :func:`layer_config`: their ``pe``,
``act_bits``, ``weight_bits`` and ``max_k = K`` (the reduction length). Their bias and shift
ranges (:mod:`mulfree.params.post_config`) are those of that config, the narrowest an engine
able to run the layer can have, so a valid model runs unchanged on any engine with
``max_k >= K``. A layer's input must fit its ``act_bits`` (the incoming width at most the
layer's: widening is exact, narrowing would need a requantization that is not there).

The model ends with ``output = "argmax"`` (the class is the index of the first largest final
activation, which must be a vector) or ``"none"`` (the final activations are the result).

**Limits.** Besides the arithmetic's own ranges, the format holds what every engine's layer
descriptor can carry (``mulfree.params.core_config.DESC_FIELDS``): every dimension of every
activation tensor at most :data:`MAX_DIM`, kernels at most :data:`MAX_KERNEL`, strides in
``[1, MAX_STRIDE]``, padding in ``[0, min(MAX_PADDING, kernel - 1)]``; and scale exponents in
:data:`SCALE_EXP_LIMITS`, where ``q * 2^exp`` is an exact, finite float64 for every 16-bit
``q``. A valid model so computes the same in the golden model, the compiler and the core, or
is refused by the compiler for a core too small for it.

The files an export is written to and read back from are :mod:`mulfree.host.export_format`'s.
"""

import re
from dataclasses import dataclass, field

from .int_layers import (ADD_SHIFT_LIMITS, ALIGN_SHIFT_LIMITS, DTYPES, INPUT_NAME, LAYER_KINDS,
                         MAX_DIM, MAX_INPUTS, MAX_KERNEL, MAX_NAME_LENGTH, MAX_PADDING,
                         MAX_POOL_KERNEL, MAX_POOL_WINDOW, MAX_SHIFT2D, MAX_STRIDE,
                         MULTI_INPUT_KINDS, POOL_SHIFT_LIMITS, SCALE_EXP_LIMITS, SHIFT_OFFSETS,
                         WEIGHT_KINDS, ExportError, IntAdd, IntAddressShift, IntAvgPool2d,
                         IntChannelShift, IntClamp, IntConcat, IntConv2d, IntFlatten,
                         IntGlobalAvgPool, IntLinear, IntMaxPool2d, IntPad, IntShift2d,
                         norm_pair)
from .node_check import check_int, check_node, check_shape, code_range, is_int, layer_config


__all__ = [
    "ExportError", "FORMAT_NAME", "FORMAT_VERSION", "FORMAT_VERSIONS", "MODEL_JSON",
    "MODEL_TENSORS", "OUTPUTS", "IntInput", "IntModel", "NodeInfo", "INPUT_NAME",
    "IntLinear", "IntConv2d", "IntFlatten", "IntMaxPool2d", "IntAvgPool2d", "IntGlobalAvgPool",
    "IntAdd", "IntConcat", "IntClamp", "IntPad", "IntShift2d", "IntAddressShift",
    "IntChannelShift", "LAYER_KINDS", "WEIGHT_KINDS",
    "layer_config", "layer_shapes", "graph_nodes", "node_name", "code_range",
    "SCALE_EXP_LIMITS", "MAX_DIM", "MAX_KERNEL", "MAX_STRIDE", "MAX_PADDING", "MAX_NAME_LENGTH",
    "MAX_INPUTS", "MAX_SHIFT2D", "ADD_SHIFT_LIMITS", "ALIGN_SHIFT_LIMITS", "POOL_SHIFT_LIMITS",
    "MAX_POOL_WINDOW", "MAX_POOL_KERNEL", "DTYPES", "SHIFT_OFFSETS",
]


FORMAT_NAME = "mulfree-export"
#: 3.0: a graph (named nodes with named inputs, mixed PE kinds, the graph kinds).
#: 2.0 (a chain of linear / conv2d / flatten / maxpool2d) still loads; 1.x is refused.
FORMAT_VERSION = "3.0"
FORMAT_VERSIONS = ("2.0", "3.0")
MODEL_JSON = "model.json"
MODEL_TENSORS = "model.safetensors"
#: What the model does with its final activations.
OUTPUTS = ("argmax", "none")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]*\Z")
_AUTO_NAME = re.compile(r"layers\.(\d+)\Z")


# The model ------------------------------------------------------------------------------

class _Eq:
    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        return vars(self) == vars(other)

    __hash__ = None


@dataclass(eq=False)
class IntInput(_Eq):
    """The model's input: ``shape`` ``(C, H, W)`` or ``(features,)``, ``act_bits`` and scale.

    A real input ``x`` is quantized to ``q ≈ x * 2^-scale_exp`` (round half up, saturating to
    signed ``act_bits``; see the module docstring).
    """

    shape: tuple
    act_bits: int = 8
    scale_exp: int = 0

    def __post_init__(self):
        self.shape = norm_pair(self.shape) if not isinstance(self.shape, int) \
            else (self.shape,)


@dataclass(eq=False)
class IntModel:
    """An integer model: ``input``, then the nodes ``layers`` in order, then ``output``.

    Call :meth:`validate` (``write_export`` and ``load_export`` do) before trusting it.
    """

    input: IntInput
    layers: list = field(default_factory=list)
    output: str = "argmax"
    name: str | None = None

    def __eq__(self, other):
        """Equal inputs, outputs, names and nodes; a node's name and inputs compare by what
        they mean (``None`` equals the ``layers.<i>`` name and the previous-node input it
        stands for)."""
        if type(other) is not IntModel:
            return NotImplemented
        if not (self.input == other.input and self.output == other.output
                and self.name == other.name and len(self.layers) == len(other.layers)):
            return False
        for i, (a, b) in enumerate(zip(self.layers, other.layers)):
            if type(a) is not type(b):
                return False
            if (_effective(self, i) != _effective(other, i)
                    or _strip(a) != _strip(b)):
                return False
        return True

    __hash__ = None

    def validate(self):
        """Check the whole model; return the list of ``(in_shape, out_shape, act_bits)``.

        ``in_shape`` is the shape of the node's first input. :func:`graph_nodes` gives all of
        each node's facts.

        Raises
        ------
        ExportError
            Naming the first wrong field (``layers.<i>.<field>``), its value, and what is
            allowed.
        """
        return layer_shapes(self)

    def graph(self):
        """The validated graph: one :class:`NodeInfo` per node (:func:`graph_nodes`)."""
        return graph_nodes(self)

    @property
    def is_chain(self):
        """True if every node reads the previous one and only kinds of format 2.0 occur."""
        return all(l.inputs is None and l.name is None for l in self.layers) and all(
            l.kind in ("linear", "conv2d", "flatten") or
            (l.kind == "maxpool2d" and l.kernel == (2, 2) and l.stride == (2, 2)
             and l.padding == (0, 0)) for l in self.layers) and all(
            l.kind != "conv2d" or l.groups == 1 for l in self.layers) and \
            len({l.pe for l in self.layers if l.kind in WEIGHT_KINDS}) <= 1


def _effective(model, i):
    """``(name, inputs)`` of node ``i`` with the defaults spelled out."""
    layer = model.layers[i]
    inputs = getattr(layer, "inputs", None)
    if inputs is None:
        inputs = (INPUT_NAME if i == 0 else node_name(model, i - 1),)
    return node_name(model, i), tuple(inputs) if isinstance(inputs, (tuple, list)) else inputs


def _strip(layer):
    """A copy of ``layer`` without its name and inputs (for comparing the rest)."""
    import copy
    other = copy.copy(layer)
    other.name = other.inputs = None
    return other


@dataclass(frozen=True)
class NodeInfo:
    """What validation knows about one node.

    Attributes
    ----------
    index : int
    name : str
        Its name (``layers.<index>`` when it has none).
    kind : str
    inputs : tuple of str
        The names it reads (``"input"``: the model's input).
    sources : tuple of int
        Their indices (``-1``: the model's input).
    in_shapes : tuple of tuple
    out_shape : tuple
    in_bits, in_exps : tuple of int
        Width and scale exponent of each input.
    act_bits, scale_exp : int
        Width and scale exponent of its output.
    consumers : tuple of int
        The nodes that read its output (empty for the last node, the model's output).
    """

    index: int
    name: str
    kind: str
    inputs: tuple
    sources: tuple
    in_shapes: tuple
    out_shape: tuple
    in_bits: tuple
    in_exps: tuple
    act_bits: int
    scale_exp: int
    consumers: tuple = ()


# Validation --------------------------------------------------------------------------------

def _check_name(name):
    if name is None:
        return
    if not isinstance(name, str) or not name.isprintable() or len(name) > MAX_NAME_LENGTH:
        shown = repr(name)[:2 * MAX_NAME_LENGTH]
        raise ExportError("name", f"name must be None or a printable string of at most "
                                  f"{MAX_NAME_LENGTH} characters, not {shown}")


def node_name(model, i):
    """The name node ``i`` goes by: its ``name``, or ``layers.<i>``."""
    name = getattr(model.layers[i], "name", None)
    return f"layers.{i}" if name is None else name


def _node_names(model):
    names = {}
    for i, layer in enumerate(model.layers):
        where = f"layers.{i}"
        name = getattr(layer, "name", None)
        if name is not None:
            auto = _AUTO_NAME.match(name) if isinstance(name, str) else None
            if not isinstance(name, str) or not _NAME.match(name) \
                    or len(name) > MAX_NAME_LENGTH or name == INPUT_NAME \
                    or (auto and int(auto.group(1)) != i):
                raise ExportError(f"{where}.name",
                                  f"{where}.name must be None or a name of letters, digits, "
                                  f"'_', '.', '-' (not starting with a digit, at most "
                                  f"{MAX_NAME_LENGTH} characters, not {INPUT_NAME!r} nor "
                                  f"another node's layers.<i>), not {name!r:.160}")
        name = node_name(model, i)
        if name in names:
            raise ExportError(f"{where}.name", f"{where}.name {name!r} is also the name of "
                                               f"layers.{names[name]}; names must be unique")
        names[name] = i
    return names


def _sources(model, i, names):
    """``(input names, source indices)`` of node ``i``: only earlier nodes (so no cycle)."""
    layer, where = model.layers[i], f"layers.{i}"
    kind = layer.kind
    inputs = layer.inputs
    if inputs is None:
        inputs = (INPUT_NAME if i == 0 else node_name(model, i - 1),)
    if not isinstance(inputs, tuple) or not all(isinstance(n, str) for n in inputs):
        raise ExportError(f"{where}.inputs", f"{where}.inputs must be None or a list of node "
                                             f"names, not {inputs!r:.160}")
    lo, hi = (2, MAX_INPUTS) if kind in MULTI_INPUT_KINDS else (1, 1)
    if not lo <= len(inputs) <= hi:
        want = f"{lo}..{hi} inputs" if hi > 1 else "exactly one input"
        raise ExportError(f"{where}.inputs", f"{where} ({kind}) takes {want}, not "
                                             f"{len(inputs)} ({list(inputs)})")
    sources = []
    for name in inputs:
        if name == INPUT_NAME:
            sources.append(-1)
            continue
        j = names.get(name)
        if j is None:
            raise ExportError(f"{where}.inputs", f"{where} reads {name!r:.160}, which is no "
                                                 f"node's name (a dangling input)")
        if j >= i:
            raise ExportError(f"{where}.inputs", f"{where} reads {name!r}, which is "
                                                 f"layers.{j}: a node may only read nodes "
                                                 f"before it (a cycle, or nodes out of order)")
        sources.append(j)
    return tuple(inputs), tuple(sources)


def graph_nodes(model: "IntModel"):
    """Validate ``model``; return one :class:`NodeInfo` per node, in order.

    Raises
    ------
    ExportError
        Naming the first wrong field (``layers.<i>.<field>``), its value, and what is
        allowed: a dangling input, a cycle, an unused node, shapes, widths, value ranges,
        scales that do not align.
    """
    if not isinstance(model, IntModel):
        raise ExportError("model", f"model must be an IntModel, not {type(model).__name__}")
    if not isinstance(model.input, IntInput):
        raise ExportError("input", f"input must be an IntInput, not {model.input!r}")
    shape = model.input.shape
    if not (isinstance(shape, tuple) and len(shape) in (1, 3)
            and all(is_int(s) and s >= 1 for s in shape)):
        raise ExportError("input.shape", f"input.shape must be (C, H, W) or (features,) of "
                                         f"positive integers, not {shape!r}")
    shape = tuple(int(s) for s in shape)
    check_shape("input.shape", shape, "input")
    bits = check_int("input.act_bits", model.input.act_bits, 2, 16)
    exp = check_int("input.scale_exp", model.input.scale_exp, *SCALE_EXP_LIMITS)
    if not isinstance(model.output, str) or model.output not in OUTPUTS:
        raise ExportError("output", f"output must be one of {', '.join(OUTPUTS)}, "
                                    f"not {model.output!r}")
    _check_name(model.name)
    if not isinstance(model.layers, (list, tuple)) or not model.layers:
        raise ExportError("layers", f"layers must be a non-empty list of nodes "
                                    f"({', '.join(LAYER_KINDS)})")
    for i, layer in enumerate(model.layers):
        kind = getattr(layer, "kind", None)
        if LAYER_KINDS.get(kind) is not type(layer):
            raise ExportError(f"layers.{i}", f"layers.{i} must be a node of a kind in "
                                             f"{', '.join(LAYER_KINDS)}, not "
                                             f"{type(layer).__name__}")
    names = _node_names(model)
    facts = {-1: (shape, bits, exp)}
    infos = []
    for i, layer in enumerate(model.layers):
        where = f"layers.{i}"
        inputs, sources = _sources(model, i, names)
        in_shapes = tuple(facts[j][0] for j in sources)
        in_bits = tuple(facts[j][1] for j in sources)
        in_exps = tuple(facts[j][2] for j in sources)
        out, out_bits, out_exp = check_node(where, layer, in_shapes, in_bits, in_exps)
        check_shape(where, out, f"output of {layer.kind}")
        facts[i] = (out, out_bits, out_exp)
        infos.append(NodeInfo(i, node_name(model, i), layer.kind, inputs, sources, in_shapes,
                              tuple(out), in_bits, in_exps, out_bits, out_exp))
    consumers = {i: [] for i in range(len(infos))}
    for info in infos:
        for j in info.sources:
            if j >= 0 and info.index not in consumers[j]:
                consumers[j].append(info.index)
    for info in infos[:-1]:
        if not consumers[info.index]:
            raise ExportError(f"layers.{info.index}",
                              f"layers.{info.index} ({info.name}, {info.kind}): its output is "
                              f"never read; only the last node's output is the model's")
    infos = [NodeInfo(**{**vars(info), "consumers": tuple(consumers[info.index])})
             for info in infos]
    if model.output == "argmax" and len(infos[-1].out_shape) != 1:
        raise ExportError("output", f"output = 'argmax' needs a vector at the end, "
                                    f"not the shape {infos[-1].out_shape}; flatten first or "
                                    f"use 'none'")
    return infos


def layer_shapes(model: "IntModel"):
    """Validate ``model``; return ``[(in_shape, out_shape, act_bits), ...]`` per node.

    ``in_shape`` is the shape of the node's first input, ``act_bits`` the width of its output.
    """
    return [(info.in_shapes[0], info.out_shape, info.act_bits) for info in graph_nodes(model)]
