"""Host side of the core's AXI4-Stream formats: packing a layer, unpacking its results.

Everything follows ``docs/interface.md``, section "Stream formats"; the numbers come from
:class:`~mulfree.spec.core_config.CoreConfig` (``PACKET_TYPES``, ``DESC_FIELDS``,
``DESC_FLAGS``, ``CoreConfig.vector_bits``). Three views of one layer live here:

* the **packer** (:func:`pack_layer`, :func:`descriptor_words`, :func:`stream_beats`): what a
  host sends on ``s_axis``;
* the **golden output** (:func:`expected_output`, :func:`expected_beats`,
  :func:`unpack_results`): what the core must answer on ``m_axis``, computed with the layer
  golden model (:func:`mulfree.spec.shift_golden.table_shift`, then
  :func:`mulfree.spec.layer_golden.conv2d_layer`);
* the **emulator** (:func:`emulate_core`): a NumPy model of the core's dataflow that parses a
  packed stream beat by beat like the hardware (headers, ``tlast``, the descriptor's fields),
  fills the feature-map and weight buffers, and runs the "Order of work" block by block and
  tile by tile through :func:`mulfree.spec.golden.array_forward`. It shares no code with the
  golden output path, so a test comparing the two checks the formats and the tiling.

NumPy only: a host script needs nothing else.
"""

from dataclasses import dataclass, field

import numpy as np

from ..spec.core_config import (CoreConfig, CORE_ERRORS, DESC_FIELDS, DESC_FLAGS,
                               PACKET_TYPES, SHIFT_ENTRY_BITS)
from ..spec.post_config import bias_range, shift_range, shift_width
from ..spec.golden import array_forward, check_range
from ..spec.layer_golden import PostParams, conv2d_layer, postprocess
from ..spec.shift_golden import table_shift


__all__ = [
    "Layer", "Packet", "LayerError", "CoreError", "CoreState", "TARGET_BLOCK_PIXELS",
    "MAX_PACKET_VECTORS", "hazard_window", "layer_geometry", "check_layer", "choose_m_block",
    "descriptor_words", "pack_layer", "stream_beats", "expected_output", "expected_beats",
    "unpack_results", "emulate_core",
]


#: Bits [31:8] of a header beat: the largest ``count`` one packet can announce.
MAX_PACKET_VECTORS = (1 << 24) - 1
#: :func:`choose_m_block` aims at blocks of at least this many output pixels.
TARGET_BLOCK_PIXELS = 32
#: Packet types in the order :func:`pack_layer` first sends them.
_DATA_TYPES = ("PARAMS", "SHIFT", "WEIGHTS", "ACTS")
_ERROR_CODES = {name: code for code, name, _ in CORE_ERRORS}
_FIELD_WIDTHS = {name: width for _, _, width, name in DESC_FIELDS}
#: Descriptor fields that are sizes: 0 is error DESCRIPTOR.
_SIZE_FIELDS = ("in_h", "in_w", "in_c", "out_c", "out_h", "out_w", "kernel_h", "kernel_w",
                "stride_h", "stride_w", "m_block")


class LayerError(ValueError):
    """A layer the core would refuse, or one the stream formats cannot carry.

    The message names the parameter, the value and what is allowed. ``param`` holds the
    parameter's name; ``core_error`` the name of the ``CORE_ERRORS`` code the core would stop
    with (``"DESCRIPTOR"``, ``"TOO_BIG"``), or ``None`` for a value the host cannot encode.
    """

    def __init__(self, param, message, core_error=None):
        super().__init__(message)
        self.param = param
        self.core_error = core_error


class CoreError(ValueError):
    """A malformed stream: the run would stop with ``ERROR.core_code = code``.

    ``name`` is the code's name in ``CORE_ERRORS`` (``"PACKET"``, ``"SHORT"``, ...); the
    message starts with it.
    """

    def __init__(self, name, detail):
        self.name = name
        self.code = _ERROR_CODES[name]
        super().__init__(f"{name} (core error {self.code}): {detail}")


@dataclass
class Packet:
    """One packet of the input stream.

    Attributes
    ----------
    type : str
        A key of ``PACKET_TYPES``: ``"DESC"``, ``"PARAMS"``, ``"SHIFT"``, ``"WEIGHTS"`` or
        ``"ACTS"``.
    count : int
        Vectors that follow the header.
    beats : list of int
        ``tdata`` of every beat, the header beat first; ``tlast`` goes on the last one.
    """

    type: str
    count: int
    beats: list


def _pair(name, value):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                  for v in value):
        raise LayerError(name, f"{name} must be an integer or a pair of integers, "
                               f"not {value!r}")
    return int(value[0]), int(value[1])


@dataclass(frozen=True, eq=False)
class Layer:
    """One layer the core runs: a convolution (or matrix product) with post-processing.

    Attributes
    ----------
    x : array of shape ``(in_c, in_h, in_w)``
        Input activations, signed ``act_bits``.
    w_codes : array of shape ``(out_c, in_c, kernel_h, kernel_w)``
        Weight codes as the engine takes them (``mulfree.spec.golden``).
    post : PostParams
        Per-output-channel bias, shift and relu.
    stride, padding : int or pair of int
        ``(vertical, horizontal)``; an integer means both.
    shifts : array of shape ``(in_c, 2)`` or None
        Per-input-channel ``(dy, dx)``, each in {-1, 0, 1}: the map is shifted
        (``xs[c, y, x] = x[c, y + dy, x + dx]``, 0 outside) before the convolution. ``None``
        leaves ``flags.shift`` clear.
    m_block : int or None
        Output pixels per block; ``None`` lets :func:`choose_m_block` pick.
    reuse_weights : bool
        Set ``flags.reuse_weights``: send no PARAMS, SHIFT or WEIGHTS, the previous run's stay
        in use (``w_codes``, ``post`` and ``shifts`` must still be those of that run: the
        golden output is computed from them).
    """

    x: np.ndarray
    w_codes: np.ndarray
    post: PostParams
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    shifts: np.ndarray | None = None
    m_block: int | None = None
    reuse_weights: bool = False

    def __post_init__(self):
        object.__setattr__(self, "stride", _pair("stride", self.stride))
        object.__setattr__(self, "padding", _pair("padding", self.padding))

    @classmethod
    def matmul(cls, x, w_codes, post, *, m_block=None, reuse_weights=False):
        """The matrix product ``[M, K] . [K, N]`` as the core runs it.

        It is the 1x1 convolution of a ``1 x M`` image with ``K`` channels: ``in_h = 1``,
        ``in_w = M``, ``in_c = K``, ``out_c = N``. The result (:func:`expected_output`) has
        shape ``(N, 1, M)``.
        """
        x, w_codes = np.asarray(x), np.asarray(w_codes)
        if x.ndim != 2 or w_codes.ndim != 2:
            raise LayerError("x", f"x must be [M, K] and w_codes [K, N], not {x.shape} and "
                                  f"{w_codes.shape}")
        return cls(np.ascontiguousarray(x.T[:, None, :]),
                   np.ascontiguousarray(w_codes.T[:, :, None, None]), post,
                   m_block=m_block, reuse_weights=reuse_weights)


def hazard_window(cfg: CoreConfig):
    """Shortest block (pixels) whose passes follow each other without waiting.

    A pass's first pixel needs the partial sum the previous pass wrote for it; with a shorter
    block the core waits between passes (``docs/interface.md``, "Order of work"). The value is
    ``CoreConfig.hazard_window``, the vectors in flight between the issue and the accumulator write:
    the engine's pipeline, the 4-entry input FIFO and 4 more. It repeats
    ``mulfree.rtl.layer_issue.hazard_window`` (the manifest's ``core.hazard_window``) so that
    host code needs no Amaranth; a test checks they agree.
    """
    return cfg.hazard_window


def _cdiv(a, b):
    return -(-a // b)


def _conv_size(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1 if stride > 0 else 0


def layer_geometry(cfg: CoreConfig, layer: Layer):
    """Sizes, tile counts and vectors per packet type of ``layer`` on ``cfg``.

    Returns
    -------
    dict
        ``in_c, in_h, in_w, out_c, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w,
        pad_h, pad_w``; the tile counts ``CT, NT, KT``; ``K = in_c * kernel_h * kernel_w``
        (terms per sum); ``M = out_h * out_w``; ``m_block`` (the layer's, or
        :func:`choose_m_block`'s); ``counts``: the vectors of each data type this run's stream
        carries (``PARAMS``, ``SHIFT``, ``WEIGHTS`` are 0 with ``reuse_weights``).

    Raises
    ------
    LayerError
        If ``x`` or ``w_codes`` do not have the shapes of a layer (nothing else is checked:
        see :func:`check_layer`).
    """
    x, w = np.asarray(layer.x), np.asarray(layer.w_codes)
    if x.ndim != 3:
        raise LayerError("x", f"x must have shape (in_c, in_h, in_w), not {x.shape}")
    if w.ndim != 4 or w.shape[1] != x.shape[0]:
        raise LayerError("w_codes", f"w_codes must have shape (out_c, in_c={x.shape[0]}, "
                                    f"kernel_h, kernel_w), not {w.shape}")
    e = cfg.engine
    (in_c, in_h, in_w), (out_c, _, kh, kw) = x.shape, w.shape
    (sh, sw), (ph, pw) = layer.stride, layer.padding
    g = {"in_c": in_c, "in_h": in_h, "in_w": in_w, "out_c": out_c,
         "out_h": _conv_size(in_h, kh, sh, ph), "out_w": _conv_size(in_w, kw, sw, pw),
         "kernel_h": kh, "kernel_w": kw, "stride_h": sh, "stride_w": sw,
         "pad_h": ph, "pad_w": pw, "CT": _cdiv(in_c, e.rows), "NT": _cdiv(out_c, e.cols),
         "K": in_c * kh * kw}
    g["KT"] = kh * kw * g["CT"]
    g["M"] = max(g["out_h"], 0) * max(g["out_w"], 0)
    g["m_block"] = layer.m_block if layer.m_block is not None else choose_m_block(cfg, g)
    sent = not layer.reuse_weights
    g["counts"] = {"PARAMS": out_c if sent else 0,
                   "SHIFT": g["CT"] if sent and layer.shifts is not None else 0,
                   "WEIGHTS": g["NT"] * g["KT"] * e.rows if sent else 0,
                   "ACTS": in_h * in_w * g["CT"]}
    return g


def choose_m_block(cfg: CoreConfig, geometry):
    """A block size: long enough to keep the engine busy, short enough to start early.

    The rule: take ``target``, the smallest multiple of :func:`hazard_window` that is at least
    :data:`TARGET_BLOCK_PIXELS` (32) pixels; cut the ``M`` output pixels into
    ``ceil(M / target)`` blocks of equal length (rounded up), so the last block is not a short
    tail that would stall; never go below the hazard window; cap at ``acc_entries`` and at
    ``M``. So a small layer is one block, and the first results of a large one come after one
    block's worth of activations (about ``target`` pixels' rows) rather than the whole map.

    Parameters
    ----------
    geometry : dict
        At least ``M`` (see :func:`layer_geometry`).
    """
    window = hazard_window(cfg)
    target = window * _cdiv(TARGET_BLOCK_PIXELS, window)
    m = max(int(geometry["M"]), 1)
    even = _cdiv(m, _cdiv(m, target))
    cap = min(cfg.acc_entries, (1 << _FIELD_WIDTHS["m_block"]) - 1, m)
    return max(1, min(max(even, window), cap))


# Checks ---------------------------------------------------------------------------------------

def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_field(g, name, lo, hi, core_error="DESCRIPTOR", why=""):
    value = g[name]
    if not _is_int(value) or not lo <= value <= hi:
        raise LayerError(name, f"{name} must be in [{lo}, {hi}]{why}, not {value!r}",
                         core_error)


def _check_descriptor(cfg, g):
    """The conditions of error DESCRIPTOR, and the field widths of the descriptor."""
    for name in ("in_h", "in_w", "in_c", "out_c", "kernel_h", "kernel_w", "stride_h",
                 "stride_w"):
        _check_field(g, name, 1, (1 << _FIELD_WIDTHS[name]) - 1)
    for pad, kernel in (("pad_h", "kernel_h"), ("pad_w", "kernel_w")):
        hi = min(g[kernel] - 1, (1 << _FIELD_WIDTHS[pad]) - 1)
        _check_field(g, pad, 0, hi, why=f" (< {kernel} = {g[kernel]})")
    for out, size, kernel, pad in (("out_h", "in_h", "kernel_h", "pad_h"),
                                   ("out_w", "in_w", "kernel_w", "pad_w")):
        if g[out] < 1:
            raise LayerError(kernel, f"{kernel} must be at most {size} + 2 {pad} = "
                                     f"{g[size] + 2 * g[pad]} (the kernel must fit the padded "
                                     f"map), not {g[kernel]}", "DESCRIPTOR")
        _check_field(g, out, 1, (1 << _FIELD_WIDTHS[out]) - 1)
    m_block = g["m_block"]
    if _is_int(m_block) and m_block > cfg.acc_entries:
        raise LayerError("m_block", f"m_block must be in [1, acc_entries = {cfg.acc_entries}],"
                                    f" not {m_block!r}", "TOO_BIG")
    _check_field(g, "m_block", 1, min(cfg.acc_entries, (1 << _FIELD_WIDTHS["m_block"]) - 1))


def _check_fits(cfg, layer, g):
    """The conditions of error TOO_BIG (m_block is checked with the descriptor).

    ``max_channels`` bounds ``in_c`` only for a layer with a shift (the shift table's size).
    """
    shift_c = g["in_c"] if layer.shifts is not None else 0
    limits = (
        ("K", g["K"], cfg.engine.max_k, "max_k", "terms per sum, in_c * kernel_h * kernel_w"),
        ("in_c", shift_c, cfg.max_channels, "max_channels", "input channels of a layer with "
                                                            "a shift"),
        ("out_c", g["out_c"], cfg.max_channels, "max_channels", "output channels"),
        ("x", g["in_h"] * g["in_w"] * g["CT"], cfg.fmap_vectors, "fmap_vectors",
         "ACTS vectors, in_h * in_w * ceil(in_c / rows)"),
        ("w_codes", g["NT"] * g["KT"] * cfg.engine.rows, cfg.weight_rows, "weight_rows",
         "WEIGHTS rows, ceil(out_c / cols) * kernel_h * kernel_w * ceil(in_c / rows) * rows"),
    )
    for param, value, limit, limit_name, what in limits:
        if value > limit:
            raise LayerError(param, f"{param}: {what} must be at most {limit_name} = {limit}, "
                                    f"not {value}", "TOO_BIG")


def _check_values(param, values, lo, hi, shape):
    values = np.asarray(values)
    if values.dtype.kind not in "iu":
        raise LayerError(param, f"{param} must hold integers, not {values.dtype}")
    if values.shape != shape:
        raise LayerError(param, f"{param} must have shape {shape}, not {values.shape}")
    try:
        check_range(param, values, lo, hi)
    except ValueError as error:
        raise LayerError(param, str(error)) from None


def _check_contents(cfg, layer, g):
    """Value ranges of the activations, weight codes, post-processing and shifts."""
    e = cfg.engine
    _check_values("x", layer.x, *e.act_range, (g["in_c"], g["in_h"], g["in_w"]))
    codes = (0, (1 << e.code_width) - 1) if e.pe == "shift" else e.weight_range
    _check_values("w_codes", layer.w_codes, *codes, np.shape(layer.w_codes))
    if not isinstance(layer.post, PostParams):
        raise LayerError("post", f"post must be a PostParams, not {layer.post!r}")
    n = (g["out_c"],)
    _check_values("post.bias", layer.post.bias, *bias_range(e), n)
    _check_values("post.shift", layer.post.shift, *shift_range(e), n)
    relu = np.asarray(layer.post.relu)
    if relu.dtype.kind not in "biu" or relu.shape not in ((), n) or np.any((relu != 0)
                                                                            & (relu != 1)):
        raise LayerError("post.relu", f"post.relu must be a bool or {n[0]} bools, "
                                      f"not {layer.post.relu!r}")
    if layer.shifts is not None:
        _check_values("shifts", layer.shifts, -1, 1, (g["in_c"], 2))
    if not isinstance(layer.reuse_weights, (bool, np.bool_)):
        raise LayerError("reuse_weights", f"reuse_weights must be a bool, "
                                          f"not {layer.reuse_weights!r}")


def check_layer(cfg: CoreConfig, layer: Layer):
    """Raise :class:`LayerError` if the core would refuse ``layer`` or the stream cannot carry it.

    Checked: the descriptor's conditions (error ``DESCRIPTOR``: a zero size, padding >= kernel,
    a kernel larger than the padded map, a field too wide for the descriptor), the core's sizes
    (error ``TOO_BIG``: ``K > max_k``, ``in_c`` or ``out_c > max_channels``,
    ``m_block > acc_entries``, a tensor larger than its buffer), and the ranges of every value
    (activations, weight codes, bias, shift, relu, the per-channel shifts). The message names
    the parameter (``exc.param``), the value and what is allowed. Whether weights can be
    reused (error ``REUSE``) depends on the previous run and is not checked.

    ``in_c > max_channels`` is refused only with ``shifts`` (the shift table has
    ``max_channels`` entries), as ``CoreConfig.max_channels`` and the RTL's check say.
    """
    g = layer_geometry(cfg, layer)
    _check_descriptor(cfg, g)
    _check_fits(cfg, layer, g)
    _check_contents(cfg, layer, g)


# Bits, beats and vectors ----------------------------------------------------------------------

def _mask(bits):
    return (1 << bits) - 1


def _pack_vector(values, bits):
    """Elements ``values`` of ``bits`` bits each, element ``j`` in bits ``[j*bits, ...)``."""
    vector = 0
    for j, value in enumerate(values):
        vector |= (int(value) & _mask(bits)) << (j * bits)
    return vector


def _unpack_vector(vector, n, bits, signed):
    values = np.array([(vector >> (j * bits)) & _mask(bits) for j in range(n)], dtype=np.int64)
    if signed:
        values = np.where(values >> (bits - 1) != 0, values - (1 << bits), values)
    return values


def _vector_beats(cfg, vector, bits):
    """The ``ceil(bits / S)`` beats of a vector: bit ``i`` is bit ``i mod S`` of beat ``i div S``.

    Bits above ``bits`` in the last beat are 0 (output rule).
    """
    s = cfg.stream_width
    return [(vector >> (i * s)) & _mask(s) for i in range(cfg.beats(bits))]


def _beats_vector(cfg, beats, bits):
    """The vector carried by ``beats``; bits above ``bits`` are ignored (input rule)."""
    vector = 0
    for i, beat in enumerate(beats):
        vector |= int(beat) << (i * cfg.stream_width)
    return vector & _mask(bits)


def _header(type_name, count):
    return PACKET_TYPES[type_name] | count << 8


# The packer -----------------------------------------------------------------------------------

def descriptor_words(cfg: CoreConfig, layer: Layer):
    """The five 32-bit words of ``layer``'s descriptor (the DESC vector's ``[32w, 32w+32)``).

    Raises
    ------
    LayerError
        If :func:`check_layer` does.
    """
    check_layer(cfg, layer)
    return _descriptor_words(layer, layer_geometry(cfg, layer))


def _descriptor_words(layer, g):
    values = dict(g, flags=(int(layer.shifts is not None) << DESC_FLAGS["shift"]
                            | int(bool(layer.reuse_weights)) << DESC_FLAGS["reuse_weights"]))
    words = [0] * 5
    for word, lo, _, name in DESC_FIELDS:
        words[word] |= int(values[name]) << lo
    return words


def _params_vectors(cfg, layer, g):
    e = cfg.engine
    a, sw = e.acc_width, shift_width(e)
    bias = np.asarray(layer.post.bias, dtype=np.int64)
    shift = np.asarray(layer.post.shift, dtype=np.int64)
    relu = np.broadcast_to(np.asarray(layer.post.relu, dtype=bool), (g["out_c"],))
    return [(int(b) & _mask(a)) | (int(s) & _mask(sw)) << a | int(r) << (a + sw)
            for b, s, r in zip(bias, shift, relu)]


def _shift_vectors(cfg, layer, g):
    r = cfg.engine.rows
    table = np.zeros((g["CT"] * r, 2), dtype=np.int64)
    table[:g["in_c"]] = layer.shifts
    # One 4-bit entry per channel: dy in the low 2 bits, dx in the high 2 bits.
    entries = (table[:, 0] & 3) | (table[:, 1] & 3) << 2
    return [_pack_vector(entries[ct * r:(ct + 1) * r], SHIFT_ENTRY_BITS)
            for ct in range(g["CT"])]


def _weight_rows(cfg, w_codes, g):
    """Weight rows ``[NT*KT*R, C]``: row ``(nt*KT + kt)*R + r``, ``kt = (ky*kw + kx)*CT + ct``."""
    e = cfg.engine
    nt, ct, kh, kw = g["NT"], g["CT"], g["kernel_h"], g["kernel_w"]
    padded = np.zeros((nt * e.cols, ct * e.rows, kh, kw), dtype=np.int64)
    padded[:g["out_c"], :g["in_c"]] = w_codes
    tiles = padded.reshape(nt, e.cols, ct, e.rows, kh, kw)
    return tiles.transpose(0, 4, 5, 2, 3, 1).reshape(nt * g["KT"] * e.rows, e.cols)


def _act_rows(cfg, x, g):
    """Activation vectors ``[in_h*in_w*CT, R]``: vector ``(iy*in_w + ix)*CT + ct``."""
    r, ct = cfg.engine.rows, g["CT"]
    padded = np.zeros((ct * r, g["in_h"], g["in_w"]), dtype=np.int64)
    padded[:g["in_c"]] = x
    return padded.reshape(ct, r, g["in_h"], g["in_w"]).transpose(2, 3, 0, 1).reshape(-1, r)


def _first_block_acts(layer, g):
    """ACTS vectors up to the last pixel the first block reads (0 if it reads none)."""
    pixels = np.arange(min(g["m_block"], g["M"]))
    oy, ox = pixels // g["out_w"], pixels % g["out_w"]
    iy = (oy[:, None] * g["stride_h"] - g["pad_h"] + np.arange(g["kernel_h"]))[:, :, None]
    ix = (ox[:, None] * g["stride_w"] - g["pad_w"] + np.arange(g["kernel_w"]))[:, None, :]
    offsets = {(0, 0)} if layer.shifts is None else \
        {(int(dy), int(dx)) for dy, dx in np.asarray(layer.shifts)}
    last = -1
    for dy, dx in offsets:
        sy, sx = iy + dy, ix + dx
        read = ((iy >= 0) & (iy < g["in_h"]) & (ix >= 0) & (ix < g["in_w"])
                & (sy >= 0) & (sy < g["in_h"]) & (sx >= 0) & (sx < g["in_w"]))
        if read.any():
            last = max(last, int(np.broadcast_to(sy * g["in_w"] + sx, read.shape)[read].max()))
    return (last + 1) * g["CT"]


def _packets(cfg, type_name, vectors):
    """``vectors`` of one type as packets of at most :data:`MAX_PACKET_VECTORS` vectors."""
    bits = cfg.vector_bits[type_name]
    packets = []
    for start in range(0, len(vectors), MAX_PACKET_VECTORS):
        chunk = vectors[start:start + MAX_PACKET_VECTORS]
        beats = [_header(type_name, len(chunk))]
        for vector in chunk:
            beats += _vector_beats(cfg, vector, bits)
        packets.append(Packet(type_name, len(chunk), beats))
    return packets


def pack_layer(cfg: CoreConfig, layer: Layer):
    """The packets of one run, in the order that overlaps loading and computing best.

    DESC; PARAMS; SHIFT (if ``layer.shifts``); the ACTS the first block reads; WEIGHTS; the
    rest of the ACTS. With ``reuse_weights`` PARAMS, SHIFT and WEIGHTS are left out and the
    ACTS go in one packet. Empty packets are omitted; a type with more than
    :data:`MAX_PACKET_VECTORS` vectors is split.

    Returns
    -------
    list of Packet

    Raises
    ------
    LayerError
        If :func:`check_layer` does.
    """
    check_layer(cfg, layer)
    g = layer_geometry(cfg, layer)
    words = _descriptor_words(layer, g)
    acts = [_pack_vector(v, cfg.engine.act_bits) for v in _act_rows(cfg, layer.x, g)]
    first = _first_block_acts(layer, g)
    packets = _packets(cfg, "DESC", [_pack_vector(words, 32)])
    if not layer.reuse_weights:
        packets += _packets(cfg, "PARAMS", _params_vectors(cfg, layer, g))
        if layer.shifts is not None:
            packets += _packets(cfg, "SHIFT", _shift_vectors(cfg, layer, g))
    if layer.reuse_weights:
        return packets + _packets(cfg, "ACTS", acts)
    rows = _weight_rows(cfg, np.asarray(layer.w_codes), g)
    packets += _packets(cfg, "ACTS", acts[:first])
    packets += _packets(cfg, "WEIGHTS", [_pack_vector(row, cfg.engine.code_width) for row in rows])
    return packets + _packets(cfg, "ACTS", acts[first:])


def stream_beats(packets):
    """``(tdata, tlast)`` of every beat of ``packets``, ``tlast`` on each packet's last beat."""
    return [(beat, i == len(p.beats) - 1) for p in packets for i, beat in enumerate(p.beats)]


# The golden output ----------------------------------------------------------------------------

def expected_output(cfg: CoreConfig, layer: Layer):
    """What the core computes: ``[out_c, out_h, out_w]`` int64 activations.

    The golden model of ``docs/interface.md`` ("The layer the core computes"): the map shifted
    per channel (:func:`~mulfree.spec.shift_golden.table_shift`, zero fill) if ``layer.shifts``,
    then :func:`~mulfree.spec.layer_golden.conv2d_layer` with ``layer.post``.
    """
    check_layer(cfg, layer)
    x = np.asarray(layer.x, dtype=np.int64)
    if layer.shifts is not None:
        shifts = np.asarray(layer.shifts, dtype=np.int64)
        x = table_shift(x, shifts[:, 0], shifts[:, 1])
    return conv2d_layer(cfg.engine, x, layer.w_codes, layer.stride, layer.padding,
                        post=layer.post)


def _result_order(g):
    """``(m, nt)`` of the result vectors in the order ``m_axis`` sends them."""
    order = []
    for start in range(0, g["M"], g["m_block"]):
        block = range(start, min(start + g["m_block"], g["M"]))
        order += [(m, nt) for nt in range(g["NT"]) for m in block]
    return order


def expected_beats(cfg: CoreConfig, layer: Layer):
    """``tdata`` of the result beats exactly as ``m_axis`` sends them (``tlast`` on the last).

    ``M * NT`` vectors of ``cols * act_bits`` bits: for each block, for each output tile
    ``nt``, for each pixel ``m`` of the block, the activations of channels
    ``nt*cols .. nt*cols + cols - 1`` (0 beyond ``out_c``).
    """
    e = cfg.engine
    out = expected_output(cfg, layer)
    g = layer_geometry(cfg, layer)
    lanes = np.zeros((g["NT"] * e.cols, g["M"]), dtype=np.int64)
    lanes[:g["out_c"]] = out.reshape(g["out_c"], g["M"])
    beats = []
    for m, nt in _result_order(g):
        vector = _pack_vector(lanes[nt * e.cols:(nt + 1) * e.cols, m], e.act_bits)
        beats += _vector_beats(cfg, vector, cfg.vector_bits["OUT"])
    return beats


def unpack_results(cfg: CoreConfig, layer: Layer, beats):
    """The activations ``[out_c, out_h, out_w]`` carried by the result ``beats`` (``tdata``).

    Raises
    ------
    ValueError
        If the number of beats is not ``M * NT * ceil(cols * act_bits / S)``, or a bit the
        format says is 0 on output is not (above the vector in its last beat, or a lane of a
        channel at or beyond ``out_c``).
    """
    e = cfg.engine
    g = layer_geometry(cfg, layer)
    bits = cfg.vector_bits["OUT"]
    per = cfg.beats(bits)
    order = _result_order(g)
    if len(beats) != len(order) * per:
        raise ValueError(f"the results of this layer are {len(order)} vectors of {per} beats "
                         f"= {len(order) * per} beats, not {len(beats)}")
    lanes = np.zeros((g["NT"] * e.cols, g["M"]), dtype=np.int64)
    for i, (m, nt) in enumerate(order):
        chunk = beats[i * per:(i + 1) * per]
        if _beats_vector(cfg, chunk, per * cfg.stream_width) >> bits:
            raise ValueError(f"result vector {i} (pixel {m}, tile {nt}) has bits set above "
                             f"bit {bits - 1}: {[hex(b) for b in chunk]}")
        lanes[nt * e.cols:(nt + 1) * e.cols, m] = _unpack_vector(
            _beats_vector(cfg, chunk, bits), e.cols, e.act_bits, signed=True)
    if np.any(lanes[g["out_c"]:]):
        c, m = np.argwhere(lanes[g["out_c"]:])[0]
        raise ValueError(f"result lane of channel {g['out_c'] + c} >= out_c = {g['out_c']} "
                         f"(pixel {m}) is {lanes[g['out_c'] + c, m]}, not 0")
    return lanes[:g["out_c"]].reshape(g["out_c"], g["out_h"], g["out_w"])


# The emulator ---------------------------------------------------------------------------------

@dataclass
class CoreState:
    """What the core keeps from one run to the next: the loaded PARAMS, SHIFT and WEIGHTS.

    Pass one object to successive :func:`emulate_core` calls to emulate
    ``flags.reuse_weights``. ``loaded`` is ``None`` after reset and after a run that stopped
    with an error. Like the core, a reusing run is refused (error REUSE) unless its weight
    rows, ``out_c`` and shift-table tiles (``CT`` with ``flags.shift``, else 0) equal the
    loaded ones.
    """

    loaded: dict | None = field(default=None)


def _as_beats(stream):
    """``(tdata, tlast)`` pairs from a list of :class:`Packet` or of pairs."""
    stream = list(stream)
    if all(isinstance(item, Packet) for item in stream):
        return stream_beats(stream)
    return [(int(tdata), bool(tlast)) for tdata, tlast in stream]


def _parse_header(beat):
    type_code, count = beat & 0xF, (beat >> 8) & _mask(24)
    names = {code: name for name, code in PACKET_TYPES.items()}
    if type_code not in names:
        raise CoreError("PACKET", f"header 0x{beat:x} has the unknown type {type_code}")
    if (beat >> 4) & 0xF or beat >> 32:
        raise CoreError("PACKET", f"header 0x{beat:x} has reserved bits set")
    if count == 0:
        raise CoreError("PACKET", f"header 0x{beat:x} announces 0 vectors")
    return names[type_code], count


def _read_packet(cfg, beats, start, type_name, count, first_index):
    """The vectors of the packet whose header is ``beats[start]``, and the next beat's index.

    Beat by beat, as the core: SHORT (``tlast`` before the end, the header included), LONG
    (none on the last beat), then at each vector's last beat SHIFT_VALUE for a SHIFT vector
    (``first_index``: the index of the packet's first vector in its type).
    """
    bits = cfg.vector_bits[type_name]
    per = cfg.beats(bits)
    end = start + count * per
    vectors = []
    for i in range(start, end + 1):
        if i >= len(beats):
            raise ValueError(f"the stream ends inside a {type_name} packet (beat {i}): the "
                             f"core would wait for the rest")
        if beats[i][1] and i < end:
            raise CoreError("SHORT", f"tlast on beat {i}, but the {type_name} packet of "
                                     f"{count} vectors started at beat {start} ends at {end}")
        if i == end and not beats[i][1]:
            raise CoreError("LONG", f"no tlast on beat {end}, the last of the {type_name} "
                                    f"packet of {count} vectors that started at beat {start}")
        if i > start and (i - start) % per == 0:
            vector = _beats_vector(cfg, [b for b, _ in beats[i - per + 1:i + 1]], bits)
            if type_name == "SHIFT":
                _check_shift_vector(cfg, vector, first_index + len(vectors))
            vectors.append(vector)
    return vectors, end + 1


def _parse_descriptor(cfg, vector):
    words = [(vector >> (32 * w)) & _mask(32) for w in range(5)]
    d = {name: (words[word] >> lo) & _mask(width) for word, lo, width, name in DESC_FIELDS}
    flags = d.pop("flags")
    known = sum(1 << bit for bit in DESC_FLAGS.values())
    if flags & ~known:
        raise CoreError("DESCRIPTOR", f"reserved flag bits set: flags = 0x{flags:x}")
    d["shift"] = bool(flags >> DESC_FLAGS["shift"] & 1)
    d["reuse"] = bool(flags >> DESC_FLAGS["reuse_weights"] & 1)
    return d


def _check_desc(cfg, d):
    """The core's descriptor checks: DESCRIPTOR, then TOO_BIG. Adds the tile counts to ``d``."""
    e = cfg.engine
    zero = [name for name in _SIZE_FIELDS if d[name] == 0]
    if zero:
        raise CoreError("DESCRIPTOR", f"zero size: {', '.join(zero)}")
    for pad, kernel in (("pad_h", "kernel_h"), ("pad_w", "kernel_w")):
        if d[pad] >= d[kernel]:
            raise CoreError("DESCRIPTOR", f"{pad} = {d[pad]} >= {kernel} = {d[kernel]}")
    for out, size, k, s, p in (("out_h", "in_h", "kernel_h", "stride_h", "pad_h"),
                               ("out_w", "in_w", "kernel_w", "stride_w", "pad_w")):
        want = (d[size] + 2 * d[p] - d[k]) // d[s] + 1
        if d[out] != want:
            raise CoreError("DESCRIPTOR", f"{out} = {d[out]} is not the convolution's "
                                          f"{want}")
    d["CT"], d["NT"] = _cdiv(d["in_c"], e.rows), _cdiv(d["out_c"], e.cols)
    d["KT"] = d["kernel_h"] * d["kernel_w"] * d["CT"]
    too_big = (("K", d["in_c"] * d["kernel_h"] * d["kernel_w"], e.max_k),
               ("in_c (flags.shift)", d["in_c"] if d["shift"] else 0, cfg.max_channels),
               ("out_c", d["out_c"], cfg.max_channels),
               ("m_block", d["m_block"], cfg.acc_entries),
               ("ACTS", d["in_h"] * d["in_w"] * d["CT"], cfg.fmap_vectors),
               ("WEIGHTS", d["NT"] * d["KT"] * e.rows, cfg.weight_rows))
    for what, value, limit in too_big:
        if value > limit:
            raise CoreError("TOO_BIG", f"{what} = {value} > {limit}")


def _layer_sizes(cfg, d):
    """What the core compares for ``reuse_weights``: weight rows, ``out_c``, shift tiles."""
    return {"weight rows": d["NT"] * d["KT"] * cfg.engine.rows, "out_c": d["out_c"],
            "shift tiles": d["CT"] if d["shift"] else 0}


def _check_reuse(cfg, d, state):
    if not d["reuse"]:
        return
    loaded = state.loaded if state is not None else None
    if loaded is None:
        raise CoreError("REUSE", "reuse_weights, but no weights are loaded")
    if loaded["sizes"] != _layer_sizes(cfg, d):
        raise CoreError("REUSE", f"reuse_weights with {_layer_sizes(cfg, d)}, but the loaded "
                                 f"ones are {loaded['sizes']}")


def _left_counts(cfg, d):
    sent = not d["reuse"]
    return {"PARAMS": d["out_c"] if sent else 0,
            "SHIFT": d["CT"] if sent and d["shift"] else 0,
            "WEIGHTS": d["NT"] * d["KT"] * cfg.engine.rows if sent else 0,
            "ACTS": d["in_h"] * d["in_w"] * d["CT"]}


def _check_shift_vector(cfg, vector, index):
    for j in range(cfg.engine.rows):
        entry = vector >> (SHIFT_ENTRY_BITS * j) & _mask(SHIFT_ENTRY_BITS)
        for name, value in (("dy", entry & 3), ("dx", entry >> 2)):
            if value == 2:
                raise CoreError("SHIFT_VALUE", f"SHIFT vector {index}, channel "
                                               f"{index * cfg.engine.rows + j}: {name} = -2")


def _parse_run(cfg, beats, state):
    """Walk the beats like the core: the descriptor, then data packets of any type and order.

    Returns the descriptor (with tile counts) and the vectors of each data type.
    """
    d, left, data, i = None, None, {t: [] for t in _DATA_TYPES}, 0
    while i < len(beats):
        type_name, count = _parse_header(beats[i][0])
        if type_name == "DESC" and count != 1:
            raise CoreError("PACKET", f"a descriptor of {count} vectors at beat {i}")
        if type_name != "DESC" and d is None:
            raise CoreError("PACKET", f"a {type_name} packet at beat {i} before the descriptor")
        if type_name == "DESC" and d is not None:
            raise CoreError("DESC_IN_RUN", f"a descriptor at beat {i}")
        if type_name != "DESC" and count > left[type_name]:
            raise CoreError("OVERRUN", f"a {type_name} packet of {count} vectors at beat {i}, "
                                       f"{left[type_name]} left")
        first = len(data[type_name]) if type_name != "DESC" else 0
        vectors, i = _read_packet(cfg, beats, i, type_name, count, first)
        if type_name == "DESC":
            d = _parse_descriptor(cfg, vectors[0])
            _check_desc(cfg, d)
            _check_reuse(cfg, d, state)
            left = _left_counts(cfg, d)
            continue
        data[type_name] += vectors
        left[type_name] -= count
    if d is None:
        raise ValueError("the stream has no descriptor: the core would wait for one")
    missing = {t: n for t, n in left.items() if n}
    if missing:
        raise ValueError(f"the stream ends before the layer's last vector: the core would wait "
                         f"for {missing} more")
    return d, data


def _decode_buffers(cfg, d, data, state):
    """The buffers the vectors fill: fmap ``[vectors, R]``, weight rows, params, shift table."""
    e = cfg.engine
    fmap = np.array([_unpack_vector(v, e.rows, e.act_bits, True) for v in data["ACTS"]])
    if d["reuse"]:
        return fmap, state.loaded
    a, sw = e.acc_width, shift_width(e)
    p = data["PARAMS"]
    loaded = {
        "sizes": _layer_sizes(cfg, d),
        "weights": np.array([_unpack_vector(v, e.cols, e.code_width, e.pe != "shift")
                             for v in data["WEIGHTS"]]),
        "bias": np.array([_unpack_vector(v, 1, a, True)[0] for v in p]),
        "post_shift": np.array([_unpack_vector(v >> a, 1, sw, True)[0] for v in p]),
        "relu": np.array([bool(v >> (a + sw) & 1) for v in p]),
        "shift": None,
    }
    if d["shift"]:
        entries = np.concatenate([_unpack_vector(v, e.rows, SHIFT_ENTRY_BITS, False)
                                  for v in data["SHIFT"]])
        dy = np.where(entries & 2, (entries & 3) - 4, entries & 3)
        dx = np.where(entries & 8, (entries >> 2) - 4, entries >> 2)
        loaded["shift"] = (dy, dx)
    return fmap, loaded


def _gather(cfg, d, fmap, iy, ix, ct, dy, dx):
    """Input vectors ``[pixels, R]`` of channel tile ``ct`` at map positions ``(iy, ix)``.

    Lane ``j`` reads the buffer at ``(iy + dy[j], ix + dx[j])``; 0 where ``(iy, ix)`` is
    padding or the shifted source lies outside the map.
    """
    h, w = d["in_h"], d["in_w"]
    sy, sx = iy[:, None] + dy[None, :], ix[:, None] + dx[None, :]
    inside = (((iy >= 0) & (iy < h) & (ix >= 0) & (ix < w))[:, None]
              & (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w))
    addr = (np.clip(sy, 0, h - 1) * w + np.clip(sx, 0, w - 1)) * d["CT"] + ct
    return np.where(inside, fmap[addr, np.arange(cfg.engine.rows)[None, :]], 0)


def _post_lanes(cfg, d, loaded, psum, nt):
    """Post-processed results ``[pixels, C]`` of tile ``nt``; 0 in lanes beyond ``out_c``."""
    c = cfg.engine.cols
    valid = slice(nt * c, min((nt + 1) * c, d["out_c"]))
    n = valid.stop - valid.start
    out = np.zeros_like(psum)
    post = PostParams(loaded["bias"][valid], loaded["post_shift"][valid], loaded["relu"][valid])
    out[:, :n] = postprocess(cfg.engine, psum[:, :n], post)
    return out


def _run_blocks(cfg, d, fmap, loaded):
    """The "Order of work": blocks, output tiles, reduction tiles; the result beats."""
    e = cfg.engine
    r, kw, ct_n = e.rows, d["kernel_w"], d["CT"]
    m_all = d["out_h"] * d["out_w"]
    dy, dx = loaded["shift"] if d["shift"] else (np.zeros(ct_n * r, np.int64),) * 2
    beats = []
    for start in range(0, m_all, d["m_block"]):
        m = np.arange(start, min(start + d["m_block"], m_all))
        oy, ox = m // d["out_w"], m % d["out_w"]
        for nt in range(d["NT"]):
            psum = np.zeros((len(m), e.cols), dtype=np.int64)
            for kt in range(d["KT"]):
                ky, rest = divmod(kt, kw * ct_n)
                kx, ct = divmod(rest, ct_n)
                lanes = slice(ct * r, (ct + 1) * r)
                x = _gather(cfg, d, fmap, oy * d["stride_h"] - d["pad_h"] + ky,
                            ox * d["stride_w"] - d["pad_w"] + kx, ct, dy[lanes], dx[lanes])
                row = (nt * d["KT"] + kt) * r
                psum = array_forward(e, loaded["weights"][row:row + r], x, psum)
            for values in _post_lanes(cfg, d, loaded, psum, nt):
                beats += _vector_beats(cfg, _pack_vector(values, e.act_bits),
                                       cfg.vector_bits["OUT"])
    return beats


def emulate_core(cfg: CoreConfig, stream, *, state: CoreState | None = None):
    """Run one layer's input stream through a NumPy model of the core; return the result beats.

    The model parses the stream beat by beat as the hardware does: headers (type, count,
    reserved bits), ``tlast`` on each packet's last beat only, the descriptor's fields and
    checks; data packets of any type in any order and number of chunks, each continuing its
    type. Errors are found in stream order, and at one beat in the core's order: at a header
    PACKET, DESC_IN_RUN, OVERRUN, SHORT; at a data beat SHORT, LONG, SHIFT_VALUE; after the
    descriptor DESCRIPTOR, TOO_BIG, REUSE. It fills the buffers as the vector contents say (feature map at
    ``(iy*in_w + ix)*CT + ct``, weight rows, PARAMS, SHIFT) and runs the order of work: for
    each block of ``m_block`` pixels, each output tile ``nt``, each reduction tile
    ``kt = (ky*kernel_w + kx)*CT + ct``, it gathers every pixel's ``rows`` activations by
    address (0 outside the map, per-lane ``dy, dx`` with ``flags.shift``) and calls
    :func:`~mulfree.spec.golden.array_forward` with the block's partial sums; after
    ``kt = KT-1`` it post-processes the ``cols`` lanes and emits the result vectors.

    Parameters
    ----------
    stream : list of Packet, or list of (tdata, tlast)
        One run's input: a :func:`pack_layer` result or :func:`stream_beats`-style pairs
        (needed to model a misplaced ``tlast``).
    state : CoreState, optional
        The weights kept from the previous run, for ``flags.reuse_weights``; updated after a
        successful run and cleared by an error. ``None``: a core fresh out of reset.

    Returns
    -------
    list of int
        ``tdata`` of the result beats (``tlast`` belongs on the last one), as
        :func:`expected_beats`.

    Raises
    ------
    CoreError
        Where the core would stop with an error; ``exc.name`` is the ``CORE_ERRORS`` name.
    ValueError
        If the stream ends before the layer is complete (the core would wait), or a
        PARAMS vector holds a shift outside ``shift_range``.
    """
    try:
        d, data = _parse_run(cfg, _as_beats(stream), state)
    except CoreError:
        if state is not None:
            state.loaded = None
        raise
    fmap, loaded = _decode_buffers(cfg, d, data, state)
    beats = _run_blocks(cfg, d, fmap, loaded)
    if state is not None:
        state.loaded = loaded
    return beats
