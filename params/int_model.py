"""The integer model: what a quantized network is exported to, and its validation.

An integer model (:class:`IntModel`) is an input quantization followed by an ordered list of
layers over a single tensor. Every number in it is an integer that the golden model
(:mod:`mulfree.params.model_golden`) and the engine consume as is; the real-number scales
(``scale_exp``, ``out_scale_exp``) say how the host quantizes inputs and dequantizes results.

**Input quantization.** A real input ``x`` stands for ``q * 2^scale_exp``. The host computes

    q = clamp(floor(x * 2^-scale_exp + 1/2), -2^(a-1), 2^(a-1) - 1)        a = input act_bits

(round half up, ties towards +infinity: 2.5 -> 3, -2.5 -> -2, like the post-processing;
``+-inf`` saturate; NaN is refused). See :func:`mulfree.params.model_golden.quantize_input`.

**Layers** (``docs/numerics.md``, "Post-processing and layers"):

* :class:`IntLinear`: ``[features=K] -> [N]``, weight codes ``[K, N]`` in the engine encoding
  of its ``pe`` (shift: unsigned ``{s, e}`` codes; adder, mult: the signed weight), then
  post-processing (``bias``, ``shift``, ``relu`` per output).
* :class:`IntConv2d`: ``[C, H, W] -> [O, OH, OW]``, codes ``[O, C, kh, kw]``, stride, zero
  padding, an optional per-input-channel table shift ``(dy, dx)`` in ``{-1, 0, 1}`` applied to
  the input map first (``out[c, y, x] = in[c, y + dy[c], x + dx[c]]``, zero fill), then
  post-processing per output channel.
* :class:`IntMaxPool2d`: kernel 2, stride 2, no padding, ``floor`` output size (a trailing odd
  row or column is dropped, as PyTorch's default ``ceil_mode=False``). Exact on integers.
* :class:`IntFlatten`: ``[C, H, W] -> [C*H*W]`` in C-major order (``(c*H + y)*W + x``).

A layer with weights runs on the :class:`~mulfree.params.config.ArrayConfig` of
:func:`layer_config`: its ``pe``, ``act_bits``, ``weight_bits`` and ``max_k = K`` (its
reduction length). Its bias and shift ranges (:mod:`mulfree.params.post_config`) are those of
that config, the narrowest an engine able to run the layer can have, so a valid model runs
unchanged on any engine with ``max_k >= K``. A layer's input must fit its ``act_bits``: the
incoming tensor's ``act_bits`` must be at most the layer's (widening is exact; narrowing would
need a requantization that is not there).

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

from dataclasses import dataclass, field, fields

import numpy as np

from .config import (ArrayConfig, ConfigError, DEFAULT_WEIGHT_BITS, PE_KINDS,
                          WEIGHT_BITS_LIMITS)
from .post_config import bias_range, check_post_config, shift_range


__all__ = [
    "ExportError", "FORMAT_NAME", "FORMAT_VERSION", "MODEL_JSON", "MODEL_TENSORS", "OUTPUTS",
    "IntInput", "IntLinear", "IntConv2d", "IntFlatten", "IntMaxPool2d", "IntModel",
    "layer_config", "layer_shapes", "code_range",
    "SCALE_EXP_LIMITS", "MAX_DIM", "MAX_KERNEL", "MAX_STRIDE", "MAX_PADDING", "MAX_NAME_LENGTH",
]


FORMAT_NAME = "mulfree-export"
#: 2.0: model.json carries ``integrity.sha256`` and is read strictly (1.x files are refused).
FORMAT_VERSION = "2.0"
MODEL_JSON = "model.json"
MODEL_TENSORS = "model.safetensors"
#: What the model does with its final activations.
OUTPUTS = ("argmax", "none")
#: The dtypes a tensor may be stored in; the writer picks the narrowest holding its range.
DTYPES = ("int8", "int16", "int32", "int64")
#: The table shift of a convolution's input moves each channel by at most one pixel.
SHIFT_OFFSETS = (-1, 1)
#: ``input.scale_exp`` and ``out_scale_exp``: ``q * 2^exp`` is an exact finite float64 for
#: every ``|q| <= 2^15`` (``2^-1074`` is the smallest subnormal, ``2^15 * 2^1008 = 2^1023``).
SCALE_EXP_LIMITS = (-1074, 1008)
#: Largest dimension of an activation tensor (the descriptor's ``in_h``... fields are 16 bits).
MAX_DIM = (1 << 16) - 1
#: Largest kernel side (``kernel_h``/``kernel_w``: 8 bits), stride (4 bits), padding (4 bits).
MAX_KERNEL, MAX_STRIDE, MAX_PADDING = (1 << 8) - 1, (1 << 4) - 1, (1 << 4) - 1
#: Longest model name (it ends up in reports and log lines).
MAX_NAME_LENGTH = 128


class ExportError(ValueError):
    """An invalid integer model or export directory.

    The message names the layer and field, the rejected value and what is allowed, in one
    line. ``param`` holds the field's path (``"layers.3.codes"``, ``"input.act_bits"``,
    ``"model.json"``...).
    """

    def __init__(self, param, message):
        super().__init__(message)
        self.param = param


# Dataclasses -------------------------------------------------------------------------------

def _norm_array(value, dtype=np.int64):
    """Integer (or bool) arrays become ``dtype``; anything else is kept for validate()."""
    arr = np.asarray(value)
    if arr.dtype.kind in "iub":
        return arr.astype(dtype)
    return arr


def _norm_pair(value):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return (int(value), int(value))
    try:
        return tuple(int(v) if isinstance(v, (int, np.integer)) else v for v in value)
    except TypeError:
        return value


class _ArraysEq:
    """Field-wise equality that compares arrays by shape and value."""

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


@dataclass(eq=False)
class IntInput(_ArraysEq):
    """The model's input: ``shape`` ``(C, H, W)`` or ``(features,)``, ``act_bits`` and scale.

    A real input ``x`` is quantized to ``q ≈ x * 2^-scale_exp`` (round half up, saturating to
    signed ``act_bits``; see the module docstring).
    """

    shape: tuple
    act_bits: int = 8
    scale_exp: int = 0

    def __post_init__(self):
        self.shape = _norm_pair(self.shape) if not isinstance(self.shape, int) \
            else (self.shape,)


@dataclass(eq=False)
class _PostLayer(_ArraysEq):
    """Fields shared by the layers with weights (see :class:`IntLinear`)."""

    def _normalize(self, n):
        if self.weight_bits is None:
            if self.pe == "adder":
                self.weight_bits = self.act_bits
            elif self.pe in DEFAULT_WEIGHT_BITS:
                self.weight_bits = DEFAULT_WEIGHT_BITS[self.pe]
        self.codes = _norm_array(self.codes)
        self.bias = _norm_array(self.bias)
        self.shift = _norm_array(self.shift)
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
        Width of the layer's input and output activations.
    weight_bits : int or None
        Width of a code; ``None`` picks the kind's default (adder: ``act_bits``).
    out_scale_exp : int
        The outputs' scale: an output ``q`` stands for the real ``q * 2^out_scale_exp``.
    """

    pe: str
    codes: object
    bias: object
    shift: object
    relu: object = False
    act_bits: int = 8
    weight_bits: int | None = None
    out_scale_exp: int = 0

    kind = "linear"

    def __post_init__(self):
        codes = np.asarray(self.codes)
        self._normalize(codes.shape[1] if codes.ndim == 2 else None)


@dataclass(eq=False)
class IntConv2d(_PostLayer):
    """A convolution ``[C, H, W] -> [O, OH, OW]``, optionally after a per-channel table shift.

    ``codes`` is ``[O, C, kh, kw]``; ``stride`` and ``padding`` are integers or ``(y, x)``
    pairs (zero padding; AdderNet: a padded pixel adds ``-|w|``). ``shifts``, if given, is an
    int array ``[C, 2]`` of ``(dy, dx)`` in ``{-1, 0, 1}``: the input map is first read as
    ``in[c, y + dy[c], x + dx[c]]`` with zero fill (``shift_golden.table_shift``). The other
    fields are those of :class:`IntLinear`, per output channel ``O``.
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

    kind = "conv2d"

    def __post_init__(self):
        codes = np.asarray(self.codes)
        self._normalize(codes.shape[0] if codes.ndim == 4 else None)
        self.stride = _norm_pair(self.stride)
        self.padding = _norm_pair(self.padding)
        if self.shifts is not None:
            self.shifts = _norm_array(self.shifts)


@dataclass(eq=False)
class IntFlatten(_ArraysEq):
    """``[C, H, W] -> [C*H*W]``, C-major: element ``(c, y, x)`` goes to ``(c*H + y)*W + x``."""

    kind = "flatten"


@dataclass(eq=False)
class IntMaxPool2d(_ArraysEq):
    """2x2 max pooling, stride 2, no padding: ``[C, H, W] -> [C, H // 2, W // 2]``."""

    kind = "maxpool2d"


LAYER_KINDS = {cls.kind: cls for cls in (IntLinear, IntConv2d, IntFlatten, IntMaxPool2d)}


@dataclass(eq=False)
class IntModel(_ArraysEq):
    """An integer model: ``input``, then ``layers`` in order, then ``output``.

    Call :meth:`validate` (``write_export`` and ``load_export`` do) before trusting it.
    """

    input: IntInput
    layers: list = field(default_factory=list)
    output: str = "argmax"
    name: str | None = None

    def validate(self):
        """Check the whole model; return the list of ``(in_shape, out_shape, act_bits)``.

        Raises
        ------
        ExportError
            Naming the first wrong field (``layers.<i>.<field>``), its value, and what is
            allowed.
        """
        return layer_shapes(self)


# Validation --------------------------------------------------------------------------------

def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_int(param, value, lo=None, hi=None):
    if not _is_int(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ExportError(param, f"{param} must be an integer in [{lo_s}, {hi_s}], "
                                 f"not {value!r}")
    return int(value)


def _check_array(param, arr, shape, lo, hi):
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iu":
        raise ExportError(param, f"{param} must hold integers, not {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ExportError(param, f"{param} must have shape {tuple(shape)}, not {arr.shape}")
    bad = np.argwhere((arr < lo) | (arr > hi))
    if bad.size:
        index = tuple(int(i) for i in bad[0])
        raise ExportError(param, f"{param}{list(index)} = {int(arr[index])} is outside the "
                                 f"allowed [{lo}, {hi}] ({bad.shape[0]} element(s) out of "
                                 f"range)")


def code_range(cfg: ArrayConfig):
    """Allowed codes: shift codes are unsigned ``weight_bits`` wide (both zero codes)."""
    if cfg.pe == "shift":
        return 0, (1 << cfg.code_width) - 1
    return cfg.weight_range


def layer_config(layer, where="layer"):
    """The :class:`ArrayConfig` a layer with weights runs on: ``max_k = K``, a 1x1 array.

    ``K`` is the reduction length (linear: ``codes.shape[0]``; conv: ``C*kh*kw``). Raises
    :class:`ExportError` (naming ``where``) when the config is invalid.
    """
    if layer.pe not in PE_KINDS:
        raise ExportError(f"{where}.pe", f"{where}.pe must be one of {', '.join(PE_KINDS)}, "
                                         f"not {layer.pe!r}")
    codes = np.asarray(layer.codes)
    k = int(codes.shape[0]) if layer.kind == "linear" else int(np.prod(codes.shape[1:]))
    try:
        cfg = ArrayConfig(pe=layer.pe, rows=1, cols=1, act_bits=layer.act_bits,
                          weight_bits=layer.weight_bits, max_k=k)
        check_post_config(cfg)
    except ConfigError as exc:
        raise ExportError(f"{where}.{exc.param}", f"{where}: {exc}") from None
    return cfg


def _check_post(where, layer, n):
    cfg = layer_config(layer, where)
    _check_array(f"{where}.bias", layer.bias, (n,), *bias_range(cfg))
    _check_array(f"{where}.shift", layer.shift, (n,), *shift_range(cfg))
    relu = np.asarray(layer.relu)
    if relu.dtype != bool or relu.shape != (n,):
        raise ExportError(f"{where}.relu", f"{where}.relu must be a bool or a bool array of "
                                           f"shape ({n},), not {relu.dtype} {relu.shape}")
    _check_int(f"{where}.out_scale_exp", layer.out_scale_exp, *SCALE_EXP_LIMITS)
    return cfg


def _check_pair(param, value, lo, hi):
    if not (isinstance(value, tuple) and len(value) == 2
            and all(_is_int(v) and lo <= v <= hi for v in value)):
        raise ExportError(param, f"{param} must be an integer in [{lo}, {hi}] or a pair of "
                                 f"them, not {value!r}")


def _check_shape(param, shape, what):
    """Every dimension of an activation tensor fits the descriptor's 16-bit fields."""
    if max(shape) > MAX_DIM:
        raise ExportError(param, f"{param}: the {what} {tuple(shape)} has a dimension larger "
                                 f"than {MAX_DIM} (what a layer descriptor can carry)")


def _check_name(name):
    if name is None:
        return
    if not isinstance(name, str) or not name.isprintable() or len(name) > MAX_NAME_LENGTH:
        shown = repr(name)[:2 * MAX_NAME_LENGTH]
        raise ExportError("name", f"name must be None or a printable string of at most "
                                  f"{MAX_NAME_LENGTH} characters, not {shown}")


def layer_shapes(model: IntModel):
    """Validate ``model``; return ``[(in_shape, out_shape, act_bits), ...]`` per layer.

    ``act_bits`` is the width of the layer's output (for flatten and max pooling, the width of
    their input).
    """
    if not isinstance(model.input, IntInput):
        raise ExportError("input", f"input must be an IntInput, not {model.input!r}")
    shape = model.input.shape
    if not (isinstance(shape, tuple) and len(shape) in (1, 3)
            and all(_is_int(s) and s >= 1 for s in shape)):
        raise ExportError("input.shape", f"input.shape must be (C, H, W) or (features,) of "
                                         f"positive integers, not {shape!r}")
    shape = tuple(int(s) for s in shape)
    _check_shape("input.shape", shape, "input")
    bits = _check_int("input.act_bits", model.input.act_bits, 2, 16)
    _check_int("input.scale_exp", model.input.scale_exp, *SCALE_EXP_LIMITS)
    if not isinstance(model.output, str) or model.output not in OUTPUTS:
        raise ExportError("output", f"output must be one of {', '.join(OUTPUTS)}, "
                                    f"not {model.output!r}")
    _check_name(model.name)
    if not isinstance(model.layers, (list, tuple)) or not model.layers:
        raise ExportError("layers", "layers must be a non-empty list of IntLinear, IntConv2d, "
                                    "IntFlatten or IntMaxPool2d")
    result = []
    for i, layer in enumerate(model.layers):
        where = f"layers.{i}"
        kind = getattr(layer, "kind", None)
        if LAYER_KINDS.get(kind) is not type(layer):
            raise ExportError(where, f"{where} must be an IntLinear, IntConv2d, IntFlatten or "
                                     f"IntMaxPool2d, not {type(layer).__name__}")
        if kind in ("flatten", "maxpool2d") and len(shape) != 3:
            raise ExportError(where, f"{where} ({kind}) needs a (C, H, W) input, "
                                     f"not {shape}")
        if kind == "flatten":
            out = (shape[0] * shape[1] * shape[2],)
        elif kind == "maxpool2d":
            if shape[1] < 2 or shape[2] < 2:
                raise ExportError(where, f"{where} (maxpool2d) needs H, W >= 2, not {shape}")
            out = (shape[0], shape[1] // 2, shape[2] // 2)
        else:
            if layer.pe not in PE_KINDS:
                raise ExportError(f"{where}.pe", f"{where}.pe must be one of "
                                                 f"{', '.join(PE_KINDS)}, not {layer.pe!r}")
            a = _check_int(f"{where}.act_bits", layer.act_bits, 2, 16)
            if a < bits:
                raise ExportError(f"{where}.act_bits",
                                  f"{where}.act_bits = {a} is narrower than its input's "
                                  f"{bits} bits; it must be in [{bits}, 16]")
            codes = np.asarray(layer.codes)
            if codes.dtype.kind not in "iu":
                raise ExportError(f"{where}.codes", f"{where}.codes must hold integers, "
                                                    f"not {codes.dtype}")
            if kind == "linear":
                if len(shape) != 1 or codes.ndim != 2 or codes.shape[0] != shape[0] \
                        or codes.shape[1] < 1:
                    k_in = shape[0] if len(shape) == 1 else "K"
                    raise ExportError(f"{where}.codes",
                                      f"{where}.codes must have shape ({k_in}, N) "
                                      f"for the input {shape}, not {codes.shape}"
                                      + ("" if len(shape) == 1 else
                                         " (a linear layer needs a vector: flatten first)"))
                n = codes.shape[1]
                out = (n,)
            else:
                if len(shape) != 3 or codes.ndim != 4 or codes.shape[1] != shape[0] \
                        or min(codes.shape) < 1:
                    c_in = shape[0] if len(shape) == 3 else "C"
                    raise ExportError(f"{where}.codes",
                                      f"{where}.codes must have shape (O, {c_in}, kh, kw) for "
                                      f"the input {shape}, not {codes.shape}")
                n, _, kh, kw = codes.shape
                if max(kh, kw) > MAX_KERNEL:
                    raise ExportError(f"{where}.codes", f"{where}: a {kh}x{kw} kernel is larger "
                                                        f"than {MAX_KERNEL} (what a layer "
                                                        f"descriptor can carry)")
                _check_pair(f"{where}.stride", layer.stride, 1, MAX_STRIDE)
                _check_pair(f"{where}.padding", layer.padding, 0, MAX_PADDING)
                (sy, sx), (py, px) = layer.stride, layer.padding
                if py >= kh or px >= kw:
                    # A pixel of nothing but padding: the engine's descriptor refuses it.
                    raise ExportError(f"{where}.padding", f"{where}.padding = {[py, px]} must "
                                                          f"be smaller than the {kh}x{kw} "
                                                          f"kernel")
                oh = (shape[1] + 2 * py - kh) // sy + 1
                ow = (shape[2] + 2 * px - kw) // sx + 1
                if oh < 1 or ow < 1:
                    raise ExportError(f"{where}.codes",
                                      f"{where}: a {kh}x{kw} kernel does not fit the "
                                      f"{shape[1]}x{shape[2]} input padded by {(py, px)}")
                if layer.shifts is not None:
                    _check_array(f"{where}.shifts", layer.shifts, (shape[0], 2),
                                 *SHIFT_OFFSETS)
                out = (int(n), int(oh), int(ow))
            if layer.pe != "adder":
                _check_int(f"{where}.weight_bits", layer.weight_bits,
                           *WEIGHT_BITS_LIMITS[layer.pe])
            elif layer.weight_bits != a:
                raise ExportError(f"{where}.weight_bits",
                                  f"{where}.weight_bits of an adder layer must equal its "
                                  f"act_bits = {a} (or be None), not {layer.weight_bits!r}")
            cfg = _check_post(where, layer, n)
            _check_array(f"{where}.codes", codes, codes.shape, *code_range(cfg))
            bits = a
        _check_shape(where, out, f"output of {kind}")
        result.append((shape, out, bits))
        shape = out
    if model.output == "argmax" and len(shape) != 1:
        raise ExportError("output", f"output = 'argmax' needs a vector at the end, "
                                    f"not the shape {shape}; flatten first or use 'none'")
    return result
