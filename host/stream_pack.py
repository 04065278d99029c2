"""The core's stream formats as bytes: fast NumPy packing for the runtime.

:mod:`mulfree.host.stream_format` packs a layer into Python-integer beats, one vector at a
time: clear and exact, the reference the tests check this module against. A runtime sending
thousands of layers needs the same bytes without a Python loop per vector. Here every vector is
built with NumPy bit operations, and a beat is ``beat_bytes = stream_width / 8`` little-endian
bytes: byte ``i`` of a beat is ``tdata[8i+7:8i]``, which is how an AXI DMA lays a stream out in
memory.

The formats (``docs/interface.md``, "Stream formats"): a packet is a header beat
``{count[31:8], type[3:0]}`` and ``count`` vectors; a vector of ``V`` bits takes
``ceil(V / S)`` whole beats, its elements packed from bit 0 up in two's complement.

:func:`layer_packets` packs a whole run in the order of
:func:`~mulfree.host.stream_format.pack_layer` (:func:`~mulfree.host.stream_format.stream_order`),
optionally with PARAMS, SHIFT and WEIGHTS packed once beforehand (a compiled step's).
"""

import numpy as np

from ..params.core_config import PACKET_TYPES, CoreConfig
from .core_layer import Layer, check_layer, layer_geometry
from .stream_format import (act_rows, descriptor_words_unchecked, first_block_acts,
                            params_vectors, shift_vectors, shortcut_vectors, stream_order,
                            weight_slots)


__all__ = ["pack_elements", "unpack_elements", "header_beat", "packet", "packets",
           "int_vectors", "packet_count", "layer_packets", "MAX_PACKET_VECTORS"]

#: Largest ``count`` of a header (24 bits).
MAX_PACKET_VECTORS = (1 << 24) - 1


def pack_elements(cfg: CoreConfig, values, elem_bits):
    """Vectors of ``elem_bits``-bit elements as the beats that carry them.

    Parameters
    ----------
    values : int array ``[n, elements]``
        One vector per row; signed values are taken modulo ``2^elem_bits`` (two's complement).
    elem_bits : int

    Returns
    -------
    uint8 array ``[n * beats, beat_bytes]``
        ``beats = ceil(elements * elem_bits / stream_width)``; the bits above the vector in its
        last beat are 0.
    """
    values = np.asarray(values, dtype=np.int64)
    n, elements = values.shape
    bits = elements * elem_bits
    beats = cfg.beats(bits)
    beat_bytes = cfg.stream_width // 8
    shifts = np.arange(elem_bits, dtype=np.int64)
    flat = ((values[:, :, None] >> shifts) & 1).astype(np.uint8).reshape(n, bits)
    padded = np.zeros((n, beats * cfg.stream_width), dtype=np.uint8)
    padded[:, :bits] = flat
    return np.packbits(padded, axis=1, bitorder="little").reshape(n * beats, beat_bytes)


def unpack_elements(cfg: CoreConfig, data, elements, elem_bits, *, signed=True):
    """The inverse of :func:`pack_elements`: ``[n, elements]`` int64 from whole-vector beats.

    Returns ``(values, extra)`` where ``extra`` is a bool array ``[n]``: True where a bit above
    the vector (in its last beat) is set, which the formats say must be 0.
    """
    bits = elements * elem_bits
    beats = cfg.beats(bits)
    data = np.asarray(data, dtype=np.uint8)
    n = data.shape[0] // beats
    # The row length spelled out: reshape(0, -1) cannot infer it for zero vectors.
    flat = np.unpackbits(data.reshape(n, beats * cfg.stream_width // 8), axis=1,
                         bitorder="little")
    extra = flat[:, bits:].any(axis=1)
    weights = np.int64(1) << np.arange(elem_bits, dtype=np.int64)
    values = (flat[:, :bits].reshape(n, elements, elem_bits).astype(np.int64) * weights).sum(-1)
    if signed:
        # Sign extension by shifts: 2^elem_bits is no int64 for elem_bits >= 63.
        values = (values << (64 - elem_bits)) >> (64 - elem_bits)
    return values, extra


def header_beat(cfg: CoreConfig, type_name, count):
    """The header beat of a packet of ``count`` vectors of ``type_name``: ``[1, beat_bytes]``."""
    if not 1 <= count <= MAX_PACKET_VECTORS:
        raise ValueError(f"count must be in [1, {MAX_PACKET_VECTORS}], not {count}")
    word = (count << 8) | PACKET_TYPES[type_name]
    beat = np.zeros((1, cfg.stream_width // 8), dtype=np.uint8)
    beat[0, :4] = np.frombuffer(word.to_bytes(4, "little"), dtype=np.uint8)
    return beat


def packet(cfg: CoreConfig, type_name, vector_beats):
    """One packet: the header and the beats of ``count`` vectors, as ``[beats, beat_bytes]``."""
    per = cfg.beats(cfg.vector_bits[type_name])
    count = len(vector_beats) // per
    return np.concatenate([header_beat(cfg, type_name, count), vector_beats])


def packets(cfg: CoreConfig, type_name, vector_beats, max_bytes=None):
    """``vector_beats`` of one type cut into packets of whole vectors.

    Each packet holds at most :data:`MAX_PACKET_VECTORS` vectors and, if ``max_bytes`` is given,
    at most ``max_bytes`` bytes with its header (a DMA transfer's limit). Returns a list of
    uint8 arrays ``[beats, beat_bytes]``; an empty list for no vectors.
    """
    per = cfg.beats(cfg.vector_bits[type_name])
    beat_bytes = cfg.stream_width // 8
    n = len(vector_beats) // per
    limit = MAX_PACKET_VECTORS
    if max_bytes is not None:
        fit = (max_bytes // beat_bytes - 1) // per
        if fit < 1:
            raise ValueError(f"max_bytes = {max_bytes} cannot hold a header and one "
                             f"{type_name} vector ({(per + 1) * beat_bytes} bytes)")
        limit = min(limit, fit)
    return [packet(cfg, type_name, vector_beats[start * per:min(n, start + limit) * per])
            for start in range(0, n, limit)]


def int_vectors(cfg: CoreConfig, vectors, type_name):
    """Python-integer vectors of ``type_name`` (the few of a descriptor, PARAMS or SHIFT) as
    their beats ``[n * beats, beat_bytes]``."""
    beats = cfg.beats(cfg.vector_bits[type_name])
    nbytes = beats * cfg.stream_width // 8
    data = b"".join(int(v).to_bytes(nbytes, "little") for v in vectors)
    return np.frombuffer(data, dtype=np.uint8).reshape(len(vectors) * beats,
                                                       cfg.stream_width // 8).copy()


def _type_of(packet_beats):
    return int(packet_beats[0, 0]) & 0xF


def packet_count(packet_beats):
    """The vectors a packet (``[beats, beat_bytes]``) announces: its header's ``count``."""
    return int.from_bytes(bytes(packet_beats[0, :4]), "little") >> 8


def layer_packets(cfg: CoreConfig, layer: Layer, max_bytes=None, *, weights=None, check=True):
    """The packets of one run as bytes, in :func:`~mulfree.host.stream_format.pack_layer`'s
    order and with its vectors: the same bytes as its beats, packed with NumPy.

    Parameters
    ----------
    max_bytes : int, optional
        A packet's limit in bytes with its header (not applied to the descriptor), as
        :func:`packets`.
    weights : list of uint8 arrays, optional
        PARAMS, SHIFT and WEIGHTS packets packed beforehand (a compiled step's,
        :func:`~mulfree.host.step_packets.weight_packets`): sent in their places instead of
        packing ``layer``'s, each segment of a type taking the type's next packets until its
        vectors are sent (WEIGHTS packed in two pieces, the first output tile's rows and the
        rest, follow :func:`~mulfree.host.stream_format.stream_order` exactly). Ignored with
        ``reuse_weights``.
    check : bool
        Run :func:`~mulfree.host.core_layer.check_layer` first (a caller that has checked the
        layer's step already may skip it).

    Returns
    -------
    list of uint8 arrays ``[beats, beat_bytes]``
    """
    if check:
        check_layer(cfg, layer)
    g = layer_geometry(cfg, layer)
    e = cfg.engine
    desc = pack_elements(cfg, np.array([descriptor_words_unchecked(layer, g)]), 32)
    out = packets(cfg, "DESC", desc)
    given = {}
    if weights is not None:
        for p in weights:
            given.setdefault(_type_of(p), []).append(p)
    make = {
        "PARAMS": lambda: int_vectors(cfg, params_vectors(cfg, layer, g), "PARAMS"),
        "SHIFT": lambda: int_vectors(cfg, shift_vectors(cfg, layer, g), "SHIFT"),
        "WEIGHTS": lambda: pack_elements(cfg, weight_slots(cfg, np.asarray(layer.w_codes), g,
                                                           layer.engine), cfg.code_width),
        "ACTS": lambda: pack_elements(cfg, act_rows(cfg, layer.x, g), e.act_bits),
        "SHORTCUT": lambda: pack_elements(cfg, shortcut_vectors(cfg, layer, g), e.act_bits),
    }
    made, owed = {}, {}
    for kind, start, count in stream_order(g, reuse=layer.reuse_weights,
                                           first_acts=first_block_acts(layer, g)):
        if weights is not None and kind in ("PARAMS", "SHIFT", "WEIGHTS"):
            # The given packets in order, whole, until the segment's vectors are sent (a
            # packet across the segment's end goes whole: the next segment is that much
            # shorter).
            queue, sent = given.get(PACKET_TYPES[kind], []), owed.get(kind, 0)
            while queue and sent < count:
                out.append(queue.pop(0))
                sent += packet_count(out[-1])
            owed[kind] = sent - count
            continue
        if kind not in made:
            made[kind] = make[kind]()
        per = cfg.beats(cfg.vector_bits[kind])
        out += packets(cfg, kind, made[kind][start * per:(start + count) * per], max_bytes)
    return out
