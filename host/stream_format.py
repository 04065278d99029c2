"""The core's input stream as Python integers: vectors, beats and the packets of one layer.

Everything follows ``docs/interface.md``, section "Stream formats"; the numbers come from
:class:`~mulfree.params.core_config.CoreConfig` (``PACKET_TYPES``, ``DESC_FIELDS``,
``DESC_FLAGS``, ``CoreConfig.vector_bits``).

* bits, beats and vectors (:func:`pack_vector`, :func:`unpack_vector`, :func:`vector_beats`,
  :func:`beats_vector`): how a vector of elements lies in the ``S``-bit beats;
* the vectors of each packet type of a :class:`~mulfree.host.core_layer.Layer`
  (:func:`descriptor_words`, :func:`params_vectors`, :func:`shift_vectors`,
  :func:`weight_rows`, :func:`act_rows`, :func:`shortcut_vectors`), which the compiler
  (:mod:`mulfree.host.compiler`) turns into bytes with :mod:`mulfree.host.stream_pack`;
* the order of a run's packets (:func:`stream_order`), shared by both packers and the cycle
  model (:mod:`mulfree.host.cycle_model`);
* the packer (:func:`pack_layer`, :func:`stream_beats`): what a host sends on ``s_axis``,
  one vector at a time, clear and exact.

NumPy only: a host script needs nothing else.
"""

from dataclasses import dataclass

import numpy as np

from ..params.core_config import (CoreConfig, DESC_BITS, DESC_FIELDS, DESC_FLAGS, DESC_SIGNED,
                                  PACKET_TYPES, TAP_FLAG)
from ..params.post_config import shift_width
from ..params.tap_walk import tap_weight_tiles
from .core_layer import (CHAIN_FLAGS, WINDOW_RUNS, Layer, check_layer, layer_geometry,
                         tail_fields)


__all__ = [
    "Packet", "MAX_PACKET_VECTORS", "bit_mask", "pack_vector", "unpack_vector", "vector_beats",
    "beats_vector", "descriptor_words", "descriptor_words_unchecked", "params_vectors",
    "shift_vectors", "weight_rows", "weight_slots", "act_rows", "shortcut_rows",
    "shortcut_vectors", "first_block_acts",
    "first_block_shortcut", "stream_order", "pack_layer", "stream_beats",
]


#: Bits [31:8] of a header beat: the largest ``count`` one packet can announce.
MAX_PACKET_VECTORS = (1 << 24) - 1


@dataclass
class Packet:
    """One packet of the input stream.

    Attributes
    ----------
    type : str
        A key of ``PACKET_TYPES``: ``"DESC"``, ``"PARAMS"``, ``"SHIFT"``, ``"WEIGHTS"``,
        ``"ACTS"`` or ``"SHORTCUT"``.
    count : int
        Vectors that follow the header.
    beats : list of int
        ``tdata`` of every beat, the header beat first; ``tlast`` goes on the last one.
    """

    type: str
    count: int
    beats: list


# Bits, beats and vectors ----------------------------------------------------------------------

def bit_mask(bits):
    """``2^bits - 1``: the low ``bits`` bits set."""
    return (1 << bits) - 1


def pack_vector(values, bits):
    """Elements ``values`` of ``bits`` bits each, element ``j`` in bits ``[j*bits, ...)``."""
    vector = 0
    for j, value in enumerate(values):
        vector |= (int(value) & bit_mask(bits)) << (j * bits)
    return vector


def unpack_vector(vector, n, bits, signed):
    """The ``n`` elements of ``bits`` bits each of ``vector`` (int64; two's complement if
    ``signed``): the inverse of :func:`pack_vector`."""
    values = [(vector >> (j * bits)) & bit_mask(bits) for j in range(n)]
    if signed:
        # In Python integers: 2^bits is no int64 for bits >= 63 (a core's widest accumulator).
        values = [v - (1 << bits) if v >> (bits - 1) else v for v in values]
    return np.array(values, dtype=np.int64)


def vector_beats(cfg, vector, bits):
    """The ``ceil(bits / S)`` beats of a vector: bit ``i`` is bit ``i mod S`` of beat ``i div S``.

    Bits above ``bits`` in the last beat are 0 (output rule).
    """
    s = cfg.stream_width
    return [(vector >> (i * s)) & bit_mask(s) for i in range(cfg.beats(bits))]


def beats_vector(cfg, beats, bits):
    """The vector carried by ``beats``; bits above ``bits`` are ignored (input rule)."""
    vector = 0
    for i, beat in enumerate(beats):
        vector |= int(beat) << (i * cfg.stream_width)
    return vector & bit_mask(bits)


def _header(type_name, count):
    return PACKET_TYPES[type_name] | count << 8


# The packer -----------------------------------------------------------------------------------

def descriptor_words(cfg: CoreConfig, layer: Layer):
    """The eight 32-bit words of ``layer``'s descriptor (the DESC vector's ``[32w, 32w+32)``);
    the signed fields (``DESC_SIGNED``) in two's complement in their width.

    Raises
    ------
    LayerError
        If :func:`~mulfree.host.core_layer.check_layer` does.
    """
    check_layer(cfg, layer)
    return descriptor_words_unchecked(layer, layer_geometry(cfg, layer))


def descriptor_words_unchecked(layer, g):
    """:func:`descriptor_words` without the checks, from ``layer``'s geometry ``g``
    (:func:`~mulfree.host.core_layer.layer_geometry`): for a layer already checked."""
    tail = tail_fields(layer)
    flags = {"shift": int(layer.shifts is not None),
             "reuse_weights": int(bool(layer.reuse_weights)),
             "residual": tail["residual"], "res_relu": tail["res_relu"], "clamp": tail["clamp"],
             "global_pool": tail["global_pool"],
             **{name: int(bool(getattr(layer, name))) for name in CHAIN_FLAGS},
             **{flag: int(layer.window == op) for op, flag in WINDOW_RUNS.items()},
             TAP_FLAG: int(bool(layer.taps))}
    values = dict(g, **tail, engine=int(layer.engine),
                  flags=sum(flags[name] << bit for name, bit in DESC_FLAGS.items()))
    words = [0] * (DESC_BITS // 32)
    for word, lo, width, name in DESC_FIELDS:
        value = int(values[name])
        words[word] |= (value & bit_mask(width) if name in DESC_SIGNED else value) << lo
    return words


def params_vectors(cfg, layer, g):
    """PARAMS vectors, one per output channel: ``bias`` in bits ``[0, acc_width)``, ``shift``
    in the next ``shift_width`` bits, ``relu`` in the bit above; the widths of the core's
    post-processing (``cfg.post_engine``: the widest accumulator's, whichever engine the layer
    runs on)."""
    p = cfg.post_engine
    a, sw = p.acc_width, shift_width(p)
    bias = np.asarray(layer.post.bias, dtype=np.int64)
    shift = np.asarray(layer.post.shift, dtype=np.int64)
    relu = np.broadcast_to(np.asarray(layer.post.relu, dtype=bool), (g["out_c"],))
    return [(int(b) & bit_mask(a)) | (int(s) & bit_mask(sw)) << a | int(r) << (a + sw)
            for b, s, r in zip(bias, shift, relu)]


def shift_vectors(cfg, layer, g):
    """SHIFT vectors, one per channel tile: ``rows`` entries of ``cfg.shift_entry_bits`` bits,
    channels beyond ``in_c`` not shifted."""
    r, eb = cfg.engine.rows, cfg.shift_entry_bits
    half = eb // 2
    table = np.zeros((g["CT"] * r, 2), dtype=np.int64)
    table[:g["in_c"]] = layer.shifts
    # One entry per channel: dy in the low half, dx in the high half, each signed.
    entries = (table[:, 0] & bit_mask(half)) | (table[:, 1] & bit_mask(half)) << half
    return [pack_vector(entries[ct * r:(ct + 1) * r], eb) for ct in range(g["CT"])]


def weight_rows(cfg, w_codes, g):
    """Weight rows ``[NT*KT*R, C]``: row ``(nt*KT + kt)*R + r``, ``kt = (ky*kw + kx)*CT + ct``.

    A window run's (``g["window"]``, interface 2.3): depthwise, ``[NT*kk, C]``, row ``nt*kk
    + ky*kernel_w + kx`` holding in lane ``j`` the code of channel ``nt*C + j`` at ``(ky,
    kx)`` (0 beyond ``out_c``); max and sum, none (``[0, C]``). A taps run's (``g["taps"]``,
    interface 2.4): :func:`~mulfree.params.tap_walk.tap_weight_tiles`, ``[NT*R, C]``."""
    e = cfg.engine
    nt, ct, kh, kw = g["NT"], g["CT"], g["kernel_h"], g["kernel_w"]
    if g.get("taps"):
        return tap_weight_tiles(np.asarray(w_codes, dtype=np.int64)[:, 0], e.rows, e.cols)
    if g.get("window") is not None:
        if g["window"] != "depthwise":
            return np.zeros((0, e.cols), dtype=np.int64)
        padded = np.zeros((nt * e.cols, kh, kw), dtype=np.int64)
        padded[:g["out_c"]] = np.asarray(w_codes, dtype=np.int64)[:, 0]
        return padded.reshape(nt, e.cols, kh * kw).transpose(0, 2, 1).reshape(-1, e.cols)
    padded = np.zeros((nt * e.cols, ct * e.rows, kh, kw), dtype=np.int64)
    padded[:g["out_c"], :g["in_c"]] = w_codes
    tiles = padded.reshape(nt, e.cols, ct, e.rows, kh, kw)
    return tiles.transpose(0, 4, 5, 2, 3, 1).reshape(nt * g["KT"] * e.rows, e.cols)


def weight_slots(cfg, w_codes, g, engine=0):
    """The WEIGHTS vectors' slots ``[wrows, C]`` (:func:`weight_rows`) of ``cfg.code_width``
    bits each: engine ``engine``'s code in its low ``code_width`` bits (two's complement for
    the signed kinds), the bits above 0. On a single-engine core the slot is the code's
    ``code_width`` bits, as before interface 2.1."""
    rows = weight_rows(cfg, w_codes, g)
    return rows & bit_mask(cfg.engines[engine].code_width)


def act_rows(cfg, x, g):
    """Activation vectors ``[in_h*in_w*CT, R]``: vector ``(iy*in_w + ix)*CT + ct``."""
    r, ct = cfg.engine.rows, g["CT"]
    padded = np.zeros((ct * r, g["in_h"], g["in_w"]), dtype=np.int64)
    padded[:g["in_c"]] = x
    return padded.reshape(ct, r, g["in_h"], g["in_w"]).transpose(2, 3, 0, 1).reshape(-1, r)


def shortcut_rows(cfg, shortcut, g):
    """SHORTCUT vectors ``[scv, C]`` of the shortcut source ``[short_c, SH, SW]`` (``SH =
    out_h * short_stride``, ``SW = out_w * short_stride``): vector ``(y*SW + x)*nts + t``,
    lane ``j`` the source channel ``t*C + j`` at ``(y, x)`` (0 beyond ``short_c``)."""
    c, nts, pixels = cfg.engine.cols, g["nts"], g["SH"] * g["SW"]
    padded = np.zeros((nts * c, pixels), dtype=np.int64)
    padded[:g["short_c"]] = np.asarray(shortcut, dtype=np.int64).reshape(g["short_c"], pixels)
    return padded.reshape(nts, c, pixels).transpose(2, 0, 1).reshape(-1, c)


def shortcut_vectors(cfg, layer, g):
    """SHORTCUT vectors ``[scv, C]`` of ``layer`` (:func:`shortcut_rows` of its shortcut
    source); ``[0, C]`` without a residual."""
    if layer.residual is None:
        return np.zeros((0, cfg.engine.cols), dtype=np.int64)
    return shortcut_rows(cfg, layer.shortcut, g)


def first_block_acts(layer, g):
    """ACTS vectors up to the last pixel the first block reads (0 if it reads none).

    A taps run (interface 2.4) has one block, the whole map, but its walk reads the map in
    raster order and its first output pixel needs only the first ``kernel_h - pad_h`` rows:
    the ACTS up to that pixel's last read of tile 0 come before the weights, the rest after,
    so the first tile's weights are in when its first vector is."""
    if g.get("taps"):
        iy = min(g["kernel_h"] - 1 - g["pad_h"], g["in_h"] - 1)
        ix = min(g["kernel_w"] - 1 - g["pad_w"], g["in_w"] - 1)
        return (iy * g["in_w"] + ix) * g["CT"] + 1
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


def first_block_shortcut(g):
    """SHORTCUT vectors up to the source pixel of the first block's last output pixel: ``(p +
    1) * nts`` with ``p = (oy*s)*SW + ox*s`` (the block's pixels read source pixels in rising
    order); 0 without a residual, whose ``counts["SHORTCUT"]`` is 0."""
    if not g["counts"]["SHORTCUT"]:
        return 0
    return _shortcut_upto(g, min(g["m_block"], g["M"]) - 1)


def _shortcut_upto(g, p):
    """SHORTCUT vectors up to the source pixel of output pixel ``p``."""
    oy, ox = divmod(p, g["out_w"])
    s = g["short_stride"]
    return ((oy * s) * g["SW"] + ox * s + 1) * g["nts"]


def _acts_upto(g, p):
    """ACTS vectors up to the last pixel output pixel ``p``'s window reads, one row and one
    pixel further (a shift table's reach), within the map."""
    oy, ox = divmod(p, g["out_w"])
    iy = min(oy * g["stride_h"] - g["pad_h"] + g["kernel_h"], g["in_h"] - 1)
    ix = min(ox * g["stride_w"] - g["pad_w"] + g["kernel_w"], g["in_w"] - 1)
    return max(iy * g["in_w"] + ix + 1, 0) * g["CT"]


def stream_order(g, *, reuse, first_acts, first_shortcut=None, first_weights=None):
    """The segments of a run's stream after the descriptor, in the order that overlaps loading
    and computing best: ``[(type, first vector, vectors)]``.

    PARAMS; SHIFT; the ACTS the first block reads (``first_acts`` vectors); the WEIGHTS of the
    first output tile (``first_weights`` rows, by default ``KT * R``: the rows of ``nt = 0``);
    the SHORTCUT of the first block's pixels (``first_shortcut``, by default
    :func:`first_block_shortcut`); the rest of the WEIGHTS; then block by block, for each
    further block, the ACTS up to its last pixel's window (one row and one pixel further, a
    shift table's reach) and the SHORTCUT of its pixels; what is left of each. A block's final
    passes retire only once its pixels' shortcut has arrived: sent after all the weights, or
    after all the activations, it stalled residual layers (ResNet-20's first stage by 12 %).
    With ``reuse`` PARAMS, SHIFT and WEIGHTS are left out. The counts are ``g["counts"]``
    (:func:`~mulfree.host.core_layer.layer_geometry`); empty segments are left out and two
    neighbouring segments of one type joined (a run without a residual sends its WEIGHTS in
    one piece, and its ACTS too when it reuses its weights).
    """
    counts = g["counts"]
    acts, short, weights = counts["ACTS"], counts["SHORTCUT"], counts["WEIGHTS"]
    first_acts = min(max(int(first_acts), 0), acts)
    first_short = first_block_shortcut(g) if first_shortcut is None else int(first_shortcut)
    first_short = min(max(first_short, 0), short)
    first_w = weights // max(g["NT"], 1) if first_weights is None else int(first_weights)
    first_w = min(max(first_w, 0), weights)
    order = [] if reuse else [("PARAMS", 0, counts["PARAMS"]), ("SHIFT", 0, counts["SHIFT"])]
    order.append(("ACTS", 0, first_acts))
    if not reuse:
        order.append(("WEIGHTS", 0, first_w))
    order.append(("SHORTCUT", 0, first_short))
    if not reuse:
        order.append(("WEIGHTS", first_w, weights - first_w))
    a, s = first_acts, first_short
    if short:
        for start in range(g["m_block"], g["M"], max(g["m_block"], 1)):
            last = min(start + g["m_block"], g["M"]) - 1
            na = min(max(a, _acts_upto(g, last)), acts)
            ns = min(max(s, _shortcut_upto(g, last)), short)
            order += [("ACTS", a, na - a), ("SHORTCUT", s, ns - s)]
            a, s = na, ns
    order += [("ACTS", a, acts - a), ("SHORTCUT", s, short - s)]
    out = []
    for kind, start, count in order:
        if count <= 0:
            continue
        if out and out[-1][0] == kind and out[-1][1] + out[-1][2] == start:
            out[-1] = (kind, out[-1][1], out[-1][2] + count)
        else:
            out.append((kind, start, count))
    return out


def _packets(cfg, type_name, vectors):
    """``vectors`` of one type as packets of at most :data:`MAX_PACKET_VECTORS` vectors."""
    bits = cfg.vector_bits[type_name]
    packets = []
    for start in range(0, len(vectors), MAX_PACKET_VECTORS):
        chunk = vectors[start:start + MAX_PACKET_VECTORS]
        beats = [_header(type_name, len(chunk))]
        for vector in chunk:
            beats += vector_beats(cfg, vector, bits)
        packets.append(Packet(type_name, len(chunk), beats))
    return packets


def pack_layer(cfg: CoreConfig, layer: Layer):
    """The packets of one run, in the order that overlaps loading and computing best.

    DESC, then :func:`stream_order`: PARAMS; SHIFT (if ``layer.shifts``); the ACTS the first
    block reads; the WEIGHTS of the first output tile; the SHORTCUT of the first block's pixels
    (with a ``residual``); the rest of the WEIGHTS; block by block, each further block's ACTS
    and SHORTCUT. With ``reuse_weights`` PARAMS, SHIFT and
    WEIGHTS are left out. Empty packets are omitted; a type with more than
    :data:`MAX_PACKET_VECTORS` vectors is split.

    Returns
    -------
    list of Packet

    Raises
    ------
    LayerError
        If :func:`~mulfree.host.core_layer.check_layer` does.
    """
    check_layer(cfg, layer)
    g = layer_geometry(cfg, layer)
    e = cfg.engine
    words = descriptor_words_unchecked(layer, g)
    vectors = {
        "ACTS": lambda: [pack_vector(v, e.act_bits) for v in act_rows(cfg, layer.x, g)],
        "PARAMS": lambda: params_vectors(cfg, layer, g),
        "SHIFT": lambda: shift_vectors(cfg, layer, g),
        "WEIGHTS": lambda: [pack_vector(row, cfg.code_width) for row in
                            weight_slots(cfg, np.asarray(layer.w_codes), g, layer.engine)],
        "SHORTCUT": lambda: [pack_vector(v, e.act_bits) for v in shortcut_vectors(cfg, layer, g)],
    }
    packets, made = _packets(cfg, "DESC", [pack_vector(words, 32)]), {}
    for kind, start, count in stream_order(g, reuse=layer.reuse_weights,
                                           first_acts=first_block_acts(layer, g)):
        if kind not in made:
            made[kind] = vectors[kind]()
        packets += _packets(cfg, kind, made[kind][start:start + count])
    return packets


def stream_beats(packets):
    """``(tdata, tlast)`` of every beat of ``packets``, ``tlast`` on each packet's last beat."""
    return [(beat, i == len(p.beats) - 1) for p in packets for i, beat in enumerate(p.beats)]
