"""The nodes of an integer model: what each computes is :mod:`mulfree.params.graph_golden`'s.

An :class:`~mulfree.params.int_model.IntModel` is a directed acyclic graph of these nodes,
listed in an order where every node comes after the nodes it reads. Every node has a ``name``
(``None``: ``layers.<index>``) and ``inputs``, the names of the tensors it reads (``None``: the
previous node's output, or the model's input ``"input"`` for the first node), so a plain
chain needs neither.

Nodes with weights (PE kind ``shift``, ``adder`` or ``mult`` each, so one model may mix them):

* :class:`IntLinear` ``[K] -> [N]``;
* :class:`IntConv2d` ``[C, H, W] -> [O, OH, OW]``, ``groups`` 1 or ``C`` (depthwise).

Nodes without weights: :class:`IntFlatten`, :class:`IntMaxPool2d`, :class:`IntAvgPool2d`,
:class:`IntGlobalAvgPool`, :class:`IntAdd` (residual), :class:`IntConcat`, :class:`IntClamp`
(ReLU, ReLU6), :class:`IntPad` (zero padding of channels and borders), :class:`IntShift2d`,
:class:`IntAddressShift`, :class:`IntChannelShift`.

``docs/numerics.md`` ("Graphs") gives the arithmetic of each; the validation (shapes, ranges,
scales) is :mod:`mulfree.params.int_model`'s.
"""

from dataclasses import dataclass, fields

import numpy as np

from .config import DEFAULT_WEIGHT_BITS


__all__ = [
    "ExportError", "IntLinear", "IntConv2d", "IntFlatten", "IntMaxPool2d", "IntAvgPool2d",
    "IntGlobalAvgPool", "IntAdd", "IntConcat", "IntClamp", "IntPad", "IntShift2d",
    "IntAddressShift", "IntChannelShift", "LAYER_KINDS", "WEIGHT_KINDS", "MULTI_INPUT_KINDS",
    "norm_array", "norm_pair", "DTYPES", "SHIFT_OFFSETS", "SCALE_EXP_LIMITS", "MAX_DIM",
    "MAX_KERNEL", "MAX_STRIDE", "MAX_PADDING", "MAX_NAME_LENGTH", "MAX_INPUTS", "MAX_SHIFT2D",
    "ADD_SHIFT_LIMITS", "ALIGN_SHIFT_LIMITS", "POOL_SHIFT_LIMITS", "MAX_POOL_WINDOW",
    "MAX_POOL_KERNEL", "INPUT_NAME",
]


#: The dtypes a tensor may be stored in; the writer picks the narrowest holding its range.
DTYPES = ("int8", "int16", "int32", "int64")
#: Largest offset of a :class:`IntShift2d` (a kernel of up to 15).
MAX_SHIFT2D = 7
#: The table shift of a convolution's input moves each channel by at most ``MAX_SHIFT2D``
#: pixels (a Shift2d of any odd kernel up to 15 folded into it; a core's ``shift_reach``
#: says how far its shift table goes).
SHIFT_OFFSETS = (-MAX_SHIFT2D, MAX_SHIFT2D)
#: ``input.scale_exp`` and ``out_scale_exp``: ``q * 2^exp`` is an exact finite float64 for
#: every ``|q| <= 2^15`` (``2^-1074`` is the smallest subnormal, ``2^15 * 2^1008 = 2^1023``).
SCALE_EXP_LIMITS = (-1074, 1008)
#: Largest dimension of an activation tensor (the descriptor's ``in_h``... fields are 16 bits).
MAX_DIM = (1 << 16) - 1
#: Largest kernel side (``kernel_h``/``kernel_w``: 8 bits), stride (4 bits), padding (4 bits).
MAX_KERNEL, MAX_STRIDE, MAX_PADDING = (1 << 8) - 1, (1 << 4) - 1, (1 << 4) - 1
#: Longest model or node name (it ends up in reports and log lines).
MAX_NAME_LENGTH = 128
#: The model's input, as a node's ``inputs`` name it.
INPUT_NAME = "input"
#: Most tensors an add or a concat reads.
MAX_INPUTS = 8
#: An add's ``in_shifts`` and ``shift``; a concat's ``shifts``; a pooling's ``shift``: every
#: intermediate stays far inside int64 (numerics.md, "Graphs").
ADD_SHIFT_LIMITS = (0, 32)
ALIGN_SHIFT_LIMITS = (-16, 62)
POOL_SHIFT_LIMITS = (-16, 32)
#: Largest pooling window ``N = kh * kw`` (a global pooling's ``H * W``).
MAX_POOL_WINDOW = 1 << 24
#: Largest pooling kernel side.
MAX_POOL_KERNEL = MAX_PADDING


class ExportError(ValueError):
    """An invalid integer model or export directory.

    The message names the layer and field, the rejected value and what is allowed, in one
    line. ``param`` holds the field's path (``"layers.3.codes"``, ``"input.act_bits"``,
    ``"model.json"``...).
    """

    def __init__(self, param, message):
        super().__init__(message)
        self.param = param


def norm_array(value, dtype=np.int64):
    """Integer (or bool) arrays become ``dtype``; anything else is kept for validation."""
    arr = np.asarray(value)
    if arr.dtype.kind in "iub":
        return arr.astype(dtype)
    return arr


def norm_pair(value):
    """An integer ``v`` becomes ``(v, v)``; a sequence becomes a tuple (kept for validation)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value), int(value))
    try:
        return tuple(int(v) if isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                     else v for v in value)
    except TypeError:
        return value


def _norm_inputs(value):
    if value is None or isinstance(value, str):
        return (value,) if isinstance(value, str) else None
    try:
        return tuple(value)
    except TypeError:
        return value


class _Node:
    """Field-wise equality that compares arrays by shape and value; names and inputs."""

    def __eq__(self, other):
        if type(other) is not type(self):
            return NotImplemented
        for f in fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
                if a is None or b is None or not np.array_equal(a, b) \
                        or np.shape(a) != np.shape(b):
                    return False
            elif a != b:
                return False
        return True

    __hash__ = None

    def _norm_graph(self):
        self.inputs = _norm_inputs(self.inputs)


@dataclass(eq=False)
class _PostLayer(_Node):
    """Fields shared by the layers with weights (see :class:`IntLinear`)."""

    def _normalize(self, n):
        self._norm_graph()
        if self.weight_bits is None:
            if self.pe == "adder":
                self.weight_bits = self.act_bits
            elif self.pe in DEFAULT_WEIGHT_BITS:
                self.weight_bits = DEFAULT_WEIGHT_BITS[self.pe]
        self.codes = norm_array(self.codes)
        self.bias = norm_array(self.bias)
        self.shift = norm_array(self.shift)
        relu = np.asarray(self.relu)
        if relu.ndim == 0 and relu.dtype.kind in "iub" and n is not None:
            relu = np.full(n, bool(relu))
        self.relu = relu.astype(bool) if relu.dtype.kind in "iub" else relu


@dataclass(eq=False)
class IntLinear(_PostLayer):
    """A fully connected layer ``[K] -> [N]``: ``postprocess(sum_k term(x[k], codes[k, n]))``.

    Parameters
    ----------
    pe : str
        ``"shift"``, ``"adder"`` or ``"mult"``.
    codes : int array ``[K, N]``
        Weight codes in the engine encoding (shift: unsigned ``weight_bits``-wide ``{s, e}``;
        adder, mult: the signed weight).
    bias, shift : int arrays ``[N]``
        Post-processing (:class:`mulfree.params.layer_golden.PostParams`).
    relu : bool or bool array ``[N]``
    act_bits : int
        Width of the layer's output activations (its input must be at most as wide).
    weight_bits : int or None
        Width of a code; ``None`` picks the kind's default (adder: ``act_bits``).
    out_scale_exp : int
        The outputs' scale: an output ``q`` stands for the real ``q * 2^out_scale_exp``.
    name, inputs
        The node's name and the one tensor it reads (module docstring).
    """

    pe: str
    codes: object
    bias: object
    shift: object
    relu: object = False
    act_bits: int = 8
    weight_bits: int | None = None
    out_scale_exp: int = 0
    name: str | None = None
    inputs: tuple | None = None

    kind = "linear"

    def __post_init__(self):
        codes = np.asarray(self.codes)
        self._normalize(codes.shape[1] if codes.ndim == 2 else None)


@dataclass(eq=False)
class IntConv2d(_PostLayer):
    """A convolution ``[C, H, W] -> [O, OH, OW]``, optionally after a per-channel table shift.

    ``codes`` is ``[O, C / groups, kh, kw]``; ``groups`` is 1 or ``C`` (depthwise: output
    channel ``o`` reads input channel ``o // (O / C)``). ``stride`` and ``padding`` are
    integers or ``(y, x)`` pairs (zero padding; AdderNet: a padded pixel adds ``-|w|``).
    ``shifts``, if given, is an int array ``[C, 2]`` of ``(dy, dx)`` in ``SHIFT_OFFSETS``: the
    input map is first read as ``in[c, y + dy[c], x + dx[c]]`` with zero fill
    (``shift_golden.table_shift``). The other fields are those of :class:`IntLinear`, per
    output channel ``O``.
    """

    pe: str
    codes: object
    bias: object
    shift: object
    relu: object = False
    stride: object = 1
    padding: object = 0
    shifts: object = None
    act_bits: int = 8
    weight_bits: int | None = None
    out_scale_exp: int = 0
    groups: int = 1
    name: str | None = None
    inputs: tuple | None = None

    kind = "conv2d"

    def __post_init__(self):
        codes = np.asarray(self.codes)
        self._normalize(codes.shape[0] if codes.ndim == 4 else None)
        self.stride = norm_pair(self.stride)
        self.padding = norm_pair(self.padding)
        if self.shifts is not None:
            self.shifts = norm_array(self.shifts)


@dataclass(eq=False)
class IntFlatten(_Node):
    """``[C, H, W] -> [C*H*W]``, C-major: element ``(c, y, x)`` goes to ``(c*H + y)*W + x``."""

    name: str | None = None
    inputs: tuple | None = None

    kind = "flatten"

    def __post_init__(self):
        self._norm_graph()


@dataclass(eq=False)
class _Window(_Node):
    def _norm_window(self):
        self._norm_graph()
        self.kernel = norm_pair(self.kernel)
        self.stride = self.kernel if self.stride is None else norm_pair(self.stride)
        self.padding = norm_pair(self.padding)


@dataclass(eq=False)
class IntMaxPool2d(_Window):
    """Max pooling ``[C, H, W] -> [C, OH, OW]``, ``OH = (H + 2 py - kh) // sy + 1``.

    ``kernel``, ``stride`` (default: the kernel) and ``padding`` (at most half the kernel, as
    PyTorch) are integers or pairs; a padded position never wins (PyTorch pads with
    ``-inf``). The default is the 2x2, stride 2 pooling of format 2.0.
    """

    kernel: object = 2
    stride: object = None
    padding: object = 0
    name: str | None = None
    inputs: tuple | None = None

    kind = "maxpool2d"

    def __post_init__(self):
        self._norm_window()


@dataclass(eq=False)
class IntAvgPool2d(_Window):
    """Average pooling without a multiplier: a window sum, then an exact rounded division.

    ``out = sat(round_half_up(sum / (N * 2^shift)))`` with ``N = kh * kw`` (padded positions
    count as zeros, PyTorch's ``count_include_pad=True``); for ``N = 2^k`` that is the rounding
    shift by ``k + shift``. The output stands for ``q * 2^out_scale_exp`` with
    ``out_scale_exp`` = the input's exponent ``+ shift``, saturated to ``act_bits``.
    """

    kernel: object = 2
    stride: object = None
    padding: object = 0
    shift: int = 0
    act_bits: int = 8
    name: str | None = None
    inputs: tuple | None = None

    kind = "avgpool2d"

    def __post_init__(self):
        self._norm_window()


@dataclass(eq=False)
class IntGlobalAvgPool(_Node):
    """Global average pooling ``[C, H, W] -> [C, 1, 1]``: :class:`IntAvgPool2d` with the
    whole map as its window (``N = H * W``)."""

    shift: int = 0
    act_bits: int = 8
    name: str | None = None
    inputs: tuple | None = None

    kind = "global_avgpool"

    def __post_init__(self):
        self._norm_graph()


@dataclass(eq=False)
class IntAdd(_Node):
    """The element-wise sum of 2..8 tensors of one shape (a residual connection).

    Input ``i`` (scale ``2^e_i``) is moved onto the common grid ``2^g`` by the left shift
    ``in_shifts[i] = e_i - g >= 0``; then ``out = sat(relu?(round_shift(sum, shift)))`` on the
    scale ``2^(g + shift)`` = ``out_scale_exp``. Shifts only: no multiplier.
    """

    in_shifts: tuple = (0, 0)
    shift: int = 0
    relu: bool = False
    act_bits: int = 8
    out_scale_exp: int = 0
    name: str | None = None
    inputs: tuple | None = None

    kind = "add"

    def __post_init__(self):
        self._norm_graph()
        self.in_shifts = norm_pair(self.in_shifts) if not isinstance(self.in_shifts, tuple) \
            else self.in_shifts


@dataclass(eq=False)
class IntConcat(_Node):
    """2..8 tensors joined along the channels (axis 0): input ``i`` is first rescaled to the
    output's scale, ``sat(round_shift(x_i, shifts[i]))`` with ``e_i + shifts[i] =
    out_scale_exp``."""

    shifts: tuple = (0, 0)
    act_bits: int = 8
    out_scale_exp: int = 0
    name: str | None = None
    inputs: tuple | None = None

    kind = "concat"

    def __post_init__(self):
        self._norm_graph()
        self.shifts = norm_pair(self.shifts) if not isinstance(self.shifts, tuple) \
            else self.shifts


@dataclass(eq=False)
class IntClamp(_Node):
    """``out = min(max(x, lo), hi)``: ReLU (``lo = 0``) and ReLU6 (``hi`` = 6 on the
    input's grid). Scale and width are the input's."""

    lo: int = 0
    hi: int = 127
    name: str | None = None
    inputs: tuple | None = None

    kind = "clamp"

    def __post_init__(self):
        self._norm_graph()


@dataclass(eq=False)
class IntPad(_Node):
    """Zero padding of a map ``[C, H, W]``: ``pads = (c_before, c_after, top, bottom, left,
    right)``, ``F.pad``'s order reversed per axis (ResNet's option-A shortcut pads channels)."""

    pads: tuple = (0, 0, 0, 0, 0, 0)
    name: str | None = None
    inputs: tuple | None = None

    kind = "pad"

    def __post_init__(self):
        self._norm_graph()
        try:
            self.pads = tuple(self.pads)
        except TypeError:
            pass


@dataclass(eq=False)
class IntShift2d(_Node):
    """Shift (Wu et al., CVPR 2018): ``out[c, y, x] = in[c, y + dy[c], x + dx[c]]``, zero
    fill; ``offsets`` is an int array ``[C, 2]`` of ``(dy, dx)`` in ``[-7, 7]`` (any odd
    kernel up to 15)."""

    offsets: object = None
    name: str | None = None
    inputs: tuple | None = None

    kind = "shift2d"

    def __post_init__(self):
        self._norm_graph()
        self.offsets = norm_array(self.offsets)


@dataclass(eq=False)
class IntAddressShift(_Node):
    """AddressNet's address shift: the map is one channel-major buffer and channel ``c``
    reads ``buf[(c*H + y)*W + x + dy[c]*W + dx[c]]`` (0 outside the buffer);
    ``offsets [C, 2]`` in ``{-1, 0, 1}``."""

    offsets: object = None
    name: str | None = None
    inputs: tuple | None = None

    kind = "address_shift"

    def __post_init__(self):
        self._norm_graph()
        self.offsets = norm_array(self.offsets)


@dataclass(eq=False)
class IntChannelShift(_Node):
    """AddressNet's channel shift: ``out[c] = in[(c + r) mod C]``, ``0 <= r <= C``."""

    r: int = 0
    name: str | None = None
    inputs: tuple | None = None

    kind = "channel_shift"

    def __post_init__(self):
        self._norm_graph()


LAYER_KINDS = {cls.kind: cls for cls in (
    IntLinear, IntConv2d, IntFlatten, IntMaxPool2d, IntAvgPool2d, IntGlobalAvgPool, IntAdd,
    IntConcat, IntClamp, IntPad, IntShift2d, IntAddressShift, IntChannelShift)}
#: Kinds with weights (and a PE kind).
WEIGHT_KINDS = ("linear", "conv2d")
#: Kinds that read 2..8 tensors.
MULTI_INPUT_KINDS = ("add", "concat")
