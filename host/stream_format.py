"""The core's input stream as Python integers: vectors, beats and the packets of one layer.

Everything follows ``docs/interface.md``, section "Stream formats"; the numbers come from
:class:`~mulfree.params.core_config.CoreConfig` (``PACKET_TYPES``, ``DESC_FIELDS``,
``DESC_FLAGS``, ``CoreConfig.vector_bits``).

* bits, beats and vectors (:func:`pack_vector`, :func:`unpack_vector`, :func:`vector_beats`,
  :func:`beats_vector`): how a vector of elements lies in the ``S``-bit beats;
* the vectors of each packet type of a :class:`~mulfree.host.core_layer.Layer`
  (:func:`descriptor_words`, :func:`params_vectors`, :func:`shift_vectors`,
  :func:`weight_rows`, :func:`act_rows`), which the compiler
  (:mod:`mulfree.host.compiler`) turns into bytes with :mod:`mulfree.host.stream_pack`;
* the packer (:func:`pack_layer`, :func:`stream_beats`): what a host sends on ``s_axis``,
  one vector at a time, clear and exact.

NumPy only: a host script needs nothing else.
"""

from dataclasses import dataclass

import numpy as np

from ..params.core_config import (CoreConfig, DESC_FIELDS, DESC_FLAGS, PACKET_TYPES,
                               SHIFT_ENTRY_BITS)
from ..params.post_config import shift_width
from .core_layer import Layer, check_layer, layer_geometry


__all__ = [
    "Packet", "MAX_PACKET_VECTORS", "bit_mask", "pack_vector", "unpack_vector", "vector_beats",
    "beats_vector", "descriptor_words", "descriptor_words_unchecked", "params_vectors",
    "shift_vectors", "weight_rows", "act_rows", "first_block_acts", "pack_layer",
    "stream_beats",
]


#: Bits [31:8] of a header beat: the largest ``count`` one packet can announce.
MAX_PACKET_VECTORS = (1 << 24) - 1


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
    """The five 32-bit words of ``layer``'s descriptor (the DESC vector's ``[32w, 32w+32)``).

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
    values = dict(g, flags=(int(layer.shifts is not None) << DESC_FLAGS["shift"]
                            | int(bool(layer.reuse_weights)) << DESC_FLAGS["reuse_weights"]))
    words = [0] * 5
    for word, lo, _, name in DESC_FIELDS:
        words[word] |= int(values[name]) << lo
    return words


def params_vectors(cfg, layer, g):
    """PARAMS vectors, one per output channel: ``bias`` in bits ``[0, acc_width)``, ``shift``
    in the next ``shift_width`` bits, ``relu`` in the bit above."""
    e = cfg.engine
    a, sw = e.acc_width, shift_width(e)
    bias = np.asarray(layer.post.bias, dtype=np.int64)
    shift = np.asarray(layer.post.shift, dtype=np.int64)
    relu = np.broadcast_to(np.asarray(layer.post.relu, dtype=bool), (g["out_c"],))
    return [(int(b) & bit_mask(a)) | (int(s) & bit_mask(sw)) << a | int(r) << (a + sw)
            for b, s, r in zip(bias, shift, relu)]


def shift_vectors(cfg, layer, g):
    """SHIFT vectors, one per channel tile: ``rows`` entries of ``SHIFT_ENTRY_BITS`` bits,
    channels beyond ``in_c`` not shifted."""
    r = cfg.engine.rows
    table = np.zeros((g["CT"] * r, 2), dtype=np.int64)
    table[:g["in_c"]] = layer.shifts
    # One 4-bit entry per channel: dy in the low 2 bits, dx in the high 2 bits.
    entries = (table[:, 0] & 3) | (table[:, 1] & 3) << 2
    return [pack_vector(entries[ct * r:(ct + 1) * r], SHIFT_ENTRY_BITS)
            for ct in range(g["CT"])]


def weight_rows(cfg, w_codes, g):
    """Weight rows ``[NT*KT*R, C]``: row ``(nt*KT + kt)*R + r``, ``kt = (ky*kw + kx)*CT + ct``."""
    e = cfg.engine
    nt, ct, kh, kw = g["NT"], g["CT"], g["kernel_h"], g["kernel_w"]
    padded = np.zeros((nt * e.cols, ct * e.rows, kh, kw), dtype=np.int64)
    padded[:g["out_c"], :g["in_c"]] = w_codes
    tiles = padded.reshape(nt, e.cols, ct, e.rows, kh, kw)
    return tiles.transpose(0, 4, 5, 2, 3, 1).reshape(nt * g["KT"] * e.rows, e.cols)


def act_rows(cfg, x, g):
    """Activation vectors ``[in_h*in_w*CT, R]``: vector ``(iy*in_w + ix)*CT + ct``."""
    r, ct = cfg.engine.rows, g["CT"]
    padded = np.zeros((ct * r, g["in_h"], g["in_w"]), dtype=np.int64)
    padded[:g["in_c"]] = x
    return padded.reshape(ct, r, g["in_h"], g["in_w"]).transpose(2, 3, 0, 1).reshape(-1, r)


def first_block_acts(layer, g):
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
            beats += vector_beats(cfg, vector, bits)
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
        If :func:`~mulfree.host.core_layer.check_layer` does.
    """
    check_layer(cfg, layer)
    g = layer_geometry(cfg, layer)
    words = descriptor_words_unchecked(layer, g)
    acts = [pack_vector(v, cfg.engine.act_bits) for v in act_rows(cfg, layer.x, g)]
    first = first_block_acts(layer, g)
    packets = _packets(cfg, "DESC", [pack_vector(words, 32)])
    if not layer.reuse_weights:
        packets += _packets(cfg, "PARAMS", params_vectors(cfg, layer, g))
        if layer.shifts is not None:
            packets += _packets(cfg, "SHIFT", shift_vectors(cfg, layer, g))
    if layer.reuse_weights:
        return packets + _packets(cfg, "ACTS", acts)
    rows = weight_rows(cfg, np.asarray(layer.w_codes), g)
    packets += _packets(cfg, "ACTS", acts[:first])
    packets += _packets(cfg, "WEIGHTS", [pack_vector(row, cfg.engine.code_width) for row in rows])
    return packets + _packets(cfg, "ACTS", acts[first:])


def stream_beats(packets):
    """``(tdata, tlast)`` of every beat of ``packets``, ``tlast`` on each packet's last beat."""
    return [(beat, i == len(p.beats) - 1) for p in packets for i, beat in enumerate(p.beats)]
