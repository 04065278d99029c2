"""Property-based tests of the packers: bit fields, vectors, beats, packets, strict JSON.

Every packer is checked against an independent bit-by-bit reference written here from
``docs/numerics.md`` (section 8) and ``docs/interface.md`` ("Stream formats"): element ``i`` of
``n``-bit elements occupies bits ``[i n, (i + 1) n)`` in two's complement, a vector takes whole
``S``-bit beats, byte ``i`` of a beat is ``tdata[8i+7:8i]``. The reference builds strings of
bits, so it shares no shift-and-mask code with the packers. Round trips (pack, then unpack)
cover widths at their limits and lengths 0, 1 and more; the vectorised byte packing of the
runtime (``host/stream_pack.py``) must equal the scalar formats (``host/stream_format.py``)
for drawn layers.
"""

from dataclasses import replace
import json

import numpy as np
import pytest
from hypothesis import assume, given, strategies as st

from mulfree.host import stream_pack
from mulfree.host.core_layer import Layer, layer_geometry
from mulfree.host.stream_format import (act_rows, beats_vector, descriptor_words, pack_layer,
                                        pack_vector, unpack_vector, vector_beats, weight_rows)
from mulfree.params.core_config import PACKET_TYPES, STREAM_WIDTHS, CoreConfig
from mulfree.params.layer_golden import PostParams
from mulfree.params.safe_io import strict_loads
from mulfree.sim.vectors import StructPacker, pack, unpack

from prop_strategies import array_configs, codes_of, ends_or_any


# The reference: strings of bits, least significant first ---------------------------------------

def _bits(value, width):
    """``value`` mod ``2^width`` as ``width`` characters, bit 0 first."""
    return format(value % 2 ** width, f"0{width}b")[::-1] if width else ""


def _word(bits):
    """The integer whose bit ``i`` is ``bits[i]``."""
    return int(bits[::-1], 2) if bits else 0


def _ref_vector(values, width):
    return "".join(_bits(v, width) for v in values)


def _ref_bytes(vectors, width, stream_width):
    """Bytes of whole-beat vectors: each vector zero-padded to its beats, 8 bits a byte."""
    out = bytearray()
    for values in vectors:
        bits = _ref_vector(values, width)
        beats = -(-len(bits) // stream_width)
        bits += "0" * (beats * stream_width - len(bits))
        out += bytes(_word(bits[i:i + 8]) for i in range(0, len(bits), 8))
    return bytes(out)


@st.composite
def _elements(draw, max_count=12, min_count=0):
    """``(width, signed, values)``: ``values`` anywhere in the ``width``-bit range. Widths go
    up to 64 signed (an engine's widest partial sum) and 63 unsigned (elements come back as
    int64)."""
    signed = draw(st.booleans())
    width = draw(ends_or_any(1, 64 if signed else 63))
    lo, hi = (-(2 ** (width - 1)), 2 ** (width - 1) - 1) if signed else (0, 2 ** width - 1)
    values = draw(st.lists(ends_or_any(lo, hi), min_size=min_count, max_size=max_count))
    return width, signed, values


# sim/vectors.py -----------------------------------------------------------------------------

@given(_elements())
def test_vectors_pack_round_trip(case):
    """``pack`` lays element ``i`` in bits ``[i w, (i+1) w)`` (two's complement) and
    ``unpack`` reads it back, for widths 1..64 (signed; 63 unsigned) and 0..12 elements."""
    width, signed, values = case
    word = pack(np.array(values, dtype=object), width)
    assert word == _word(_ref_vector(values, width))
    assert unpack(word, width, len(values), signed=signed).tolist() == values


@given(st.data())
def test_struct_packer_round_trip(data):
    """``StructPacker`` puts each field at its manifest offset and reads it back; the fields
    are drawn with gaps between them, widths 1..64."""
    n = data.draw(st.integers(1, 6))
    fields, offset, values = [], 0, {}
    for i in range(n):
        offset += data.draw(st.integers(0, 5))
        width = data.draw(ends_or_any(1, 64))
        fields.append({"name": f"f{i}", "offset": offset, "width": width})
        values[f"f{i}"] = data.draw(ends_or_any(0, 2 ** width - 1))
        offset += width
    packer = StructPacker(fields)
    word = packer.pack(**values)
    bits = ["0"] * offset
    for f in fields:
        bits[f["offset"]:f["offset"] + f["width"]] = _bits(values[f["name"]], f["width"])
    assert word == _word("".join(bits))
    for name, value in values.items():
        assert packer.field(word, name) == value


# host/stream_format.py -----------------------------------------------------------------------

@given(_elements(), st.sampled_from(STREAM_WIDTHS))
def test_stream_format_vectors_and_beats(case, stream_width):
    """``pack_vector`` equals the reference (and ``sim.vectors.pack``); ``unpack_vector``
    inverts it; ``vector_beats`` cuts it into ``ceil(bits / S)`` beats, bit ``i`` in beat
    ``i div S``, and ``beats_vector`` joins them back, ignoring bits above the vector."""
    width, signed, values = case
    bits = len(values) * width
    vector = pack_vector(values, width)
    assert vector == _word(_ref_vector(values, width)) == pack(np.array(values, object), width)
    assert unpack_vector(vector, len(values), width, signed).tolist() == values
    assume(bits > 0)
    cfg = CoreConfig(stream_width=stream_width)
    beats = vector_beats(cfg, vector, bits)
    ref = _ref_vector(values, width)
    ref += "0" * (len(beats) * stream_width - bits)
    assert len(beats) == -(-bits // stream_width)
    assert beats == [_word(ref[i:i + stream_width]) for i in range(0, len(ref), stream_width)]
    noisy = beats[:-1] + [beats[-1] | (2 ** stream_width - 1) ^ (2 ** (bits % stream_width
                                                                     or stream_width) - 1)]
    assert beats_vector(cfg, noisy, bits) == vector


# host/stream_pack.py -------------------------------------------------------------------------

@given(st.sampled_from(STREAM_WIDTHS), st.integers(1, 20), st.integers(0, 4), st.data())
def test_pack_elements_equals_the_reference(stream_width, elements, n, data):
    """``pack_elements`` equals the bit-by-bit reference for every stream width, element
    widths 1..64 (63 unsigned) and 0..4 vectors; ``unpack_elements`` reads the values back
    with no bit above a vector, and flags a vector with one set."""
    cfg = CoreConfig(stream_width=stream_width)
    signed = data.draw(st.booleans())
    width = data.draw(ends_or_any(1, 64 if signed else 63))
    lo, hi = (-(2 ** (width - 1)), 2 ** (width - 1) - 1) if signed else (0, 2 ** width - 1)
    values = [data.draw(st.lists(ends_or_any(lo, hi), min_size=elements, max_size=elements))
              for _ in range(n)]
    array = np.array(values, dtype=np.int64).reshape(n, elements)
    packed = stream_pack.pack_elements(cfg, array, width)
    assert packed.tobytes() == _ref_bytes(values, width, stream_width)
    back, extra = stream_pack.unpack_elements(cfg, packed, elements, width, signed=signed)
    assert back.tolist() == values and not extra.any()
    bits = elements * width
    room = cfg.beats(bits) * stream_width - bits
    if n and room:
        spoiled = packed.copy().reshape(n, -1)
        where = bits + data.draw(st.integers(0, room - 1))
        victim = data.draw(st.integers(0, n - 1))
        spoiled[victim, where // 8] |= 1 << (where % 8)
        _, extra = stream_pack.unpack_elements(cfg, spoiled.reshape(packed.shape), elements,
                                               width, signed=signed)
        assert extra.tolist() == [i == victim for i in range(n)]


@given(st.sampled_from(STREAM_WIDTHS), st.sampled_from(sorted(PACKET_TYPES)),
       st.one_of(st.sampled_from((0, 1, stream_pack.MAX_PACKET_VECTORS,
                                  stream_pack.MAX_PACKET_VECTORS + 1)),
                 st.integers(-2, stream_pack.MAX_PACKET_VECTORS + 2)))
def test_header_beat(stream_width, type_name, count):
    """A header is ``{count[31:8], type[3:0]}`` in the low 32 bits of one beat, the rest 0;
    a count outside ``[1, 2^24 - 1]`` is refused."""
    cfg = CoreConfig(stream_width=stream_width)
    if 1 <= count <= stream_pack.MAX_PACKET_VECTORS:
        beat = stream_pack.header_beat(cfg, type_name, count)
        assert beat.shape == (1, stream_width // 8)
        assert int.from_bytes(beat.tobytes(), "little") == \
            _word(_bits(PACKET_TYPES[type_name], 8) + _bits(count, 24))
    else:
        with pytest.raises(ValueError, match="count must be in"):
            stream_pack.header_beat(cfg, type_name, count)


@given(st.sampled_from(STREAM_WIDTHS), st.integers(0, 40), st.data())
def test_packets_cut_whole_vectors(stream_width, n, data):
    """``packets`` splits ``n`` vectors into packets of whole vectors no larger than
    ``max_bytes``, each with its count in the header; their payloads joined are the input."""
    cfg = CoreConfig(stream_width=stream_width)
    per = cfg.beats(cfg.vector_bits["ACTS"])
    beat_bytes = stream_width // 8
    beats = np.arange(n * per * beat_bytes, dtype=np.int64).astype(np.uint8) \
        .reshape(n * per, beat_bytes)
    max_bytes = data.draw(st.one_of(st.none(), st.integers((per + 1) * beat_bytes,
                                                           (n + 2) * (per + 1) * beat_bytes)))
    out = stream_pack.packets(cfg, "ACTS", beats, max_bytes)
    assert sum(len(p) - 1 for p in out) == n * per
    joined = [p[1:] for p in out]
    assert np.array_equal(np.concatenate(joined) if joined else beats[:0], beats)
    for p in out:
        count = (len(p) - 1) // per
        assert count >= 1 and (len(p) - 1) % per == 0
        assert int.from_bytes(p[0].tobytes(), "little") == count << 8 | PACKET_TYPES["ACTS"]
        if max_bytes is not None:
            assert p.size <= max_bytes
    if max_bytes is not None and n:
        fit = (max_bytes // beat_bytes - 1) // per           # packets are as full as allowed
        assert len(out) == -(-n // fit)


@st.composite
def _layers(draw):
    """A small layer the default core accepts: any PE kind and widths, any kernel, stride,
    padding (< kernel), optional shifts."""
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    in_c = draw(st.integers(1, 6))
    e = draw(array_configs(max_rows=4, max_cols=4, max_acc_width=63,
                           max_k=max(4, in_c * kh * kw)))
    e = replace(e, max_k=max(e.max_k, in_c * kh * kw))
    cfg = CoreConfig(e, stream_width=draw(st.sampled_from(STREAM_WIDTHS)))
    in_h, in_w = draw(st.integers(kh, 6)), draw(st.integers(kw, 6))
    out_c = draw(st.integers(1, 6))
    lo, hi = e.act_range
    x = np.array(draw(st.lists(st.integers(lo, hi), min_size=in_c * in_h * in_w,
                               max_size=in_c * in_h * in_w))).reshape(in_c, in_h, in_w)
    w = np.array(draw(st.lists(codes_of(e), min_size=out_c * in_c * kh * kw,
                               max_size=out_c * in_c * kh * kw))).reshape(out_c, in_c, kh, kw)
    post = PostParams(np.zeros(out_c, np.int64), np.zeros(out_c, np.int64), False)
    shifts = draw(st.one_of(st.none(), st.lists(st.tuples(st.integers(-1, 1), st.integers(-1, 1)),
                                                min_size=in_c, max_size=in_c)))
    layer = Layer(x, w, post, stride=(draw(st.integers(1, 2)), draw(st.integers(1, 2))),
                  padding=(draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1))),
                  shifts=None if shifts is None else np.array(shifts, np.int64))
    return cfg, layer


@given(_layers())
def test_vectorised_packing_equals_the_scalar_formats(case):
    """For a drawn layer, the runtime's byte packing (``pack_elements`` of ``act_rows``,
    ``weight_rows`` and the descriptor words, ``header_beat``) gives the bytes of
    ``pack_layer``'s Python-integer beats, packet by packet."""
    cfg, layer = case
    e = cfg.engine
    g = layer_geometry(cfg, layer)
    beat_bytes = cfg.stream_width // 8
    payload = {"DESC": b"", "ACTS": b"", "WEIGHTS": b""}
    for p in pack_layer(cfg, layer):
        data = b"".join(int(b).to_bytes(beat_bytes, "little") for b in p.beats)
        assert data[:beat_bytes] == stream_pack.header_beat(cfg, p.type, p.count).tobytes()
        if p.type in payload:
            payload[p.type] += data[beat_bytes:]
    expect = {
        "DESC": stream_pack.pack_elements(cfg, np.array([descriptor_words(cfg, layer)]), 32),
        "ACTS": stream_pack.pack_elements(cfg, act_rows(cfg, layer.x, g), e.act_bits),
        "WEIGHTS": stream_pack.pack_elements(cfg, weight_rows(cfg, layer.w_codes, g),
                                             e.code_width),
    }
    for name, packed in expect.items():
        assert payload[name] == packed.tobytes(), name


# params/safe_io.py ---------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2 ** 70), 2 ** 70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=4),
    max_leaves=20)


@given(_json)
def test_strict_loads_round_trip(doc):
    """Every JSON document ``json.dumps`` writes (finite floats, unique keys) reads back equal."""
    assert strict_loads(json.dumps(doc)) == doc


@given(st.text(max_size=40) | _json.map(json.dumps).map(lambda s: s.replace("1", "NaN")))
def test_strict_loads_refuses_in_one_way(text):
    """Any text either parses or raises ``ValueError`` (``RecursionError`` only for deep
    nesting): never another exception type."""
    try:
        strict_loads(text)
    except ValueError:
        pass
