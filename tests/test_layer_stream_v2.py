"""Tests of core interface 2.0 in :mod:`mulfree.host.layer_stream`: the aligned shortcut and
the global pool.

Random layers whose residual adds a shortcut the core aligns (``short_c`` channels of a map
``stride`` times the output's, ``offset`` zero channels in front; offsets no multiple of the
columns, so lanes move across vectors) and layers ending in a global pool run three ways: the
golden output (``shortcut_source``, then ``fused_tail(pool=)``), a composition written here
from the graph golden (MaxPool2d 1x1 with the stride, Pad, Add, Clamp, GlobalAvgPool), and the
emulator that parses the packed stream and aligns the shortcut by address. The SHORTCUT layout,
the descriptor's word 7 and the pooled results are checked against values worked out by hand;
every refusal of ``check_layer`` is one line naming its parameter, and the emulator stops with
the same core error on the descriptor the host would have sent.
"""

from dataclasses import replace

import numpy as np
import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import DESC_FIELDS, DESC_SIGNED, CoreConfig, pool_shift_range
from mulfree.params.graph_golden import node_forward
from mulfree.params.int_layers import (IntAdd, IntClamp, IntGlobalAvgPool, IntMaxPool2d,
                                       IntPad)
from mulfree.params.layer_golden import PostParams, ResidualParams, conv2d_layer
from mulfree.params.shift_golden import table_shift
from mulfree.host import layer_stream as ls
from mulfree.host import stream_pack
from mulfree.host.core_layer import tail_fields
from mulfree.host.stream_format import (descriptor_words_unchecked, first_block_shortcut,
                                        shortcut_vectors)

from test_layer_stream import ENGINES, random_layer, random_matmul, rechunk, seed
from test_layer_stream_tail import _desc_beats, _stream_with


WIDTHS = (32, 64)


def with_tail(e, rng, layer, *, short_c=None, offset=0, stride=1, clamp=False, pool=False,
              relu=True):
    """``layer`` with a random aligned shortcut (``short_c`` channels, ``offset``,
    ``stride``; ``short_c=None``: no residual), a clamp inside the values and a pool whose
    shift keeps the averages varied; ``relu=False`` clears the post-processing's ReLU."""
    lo, hi = e.act_range
    if not relu:
        layer = replace(layer, post=PostParams(layer.post.bias, layer.post.shift, False))
    cfg = CoreConfig(e, max_channels=1 << 16)
    g = ls.layer_geometry(cfg, layer)
    if short_c is not None:
        ms = int(rng.integers(0, 3))
        res = ResidualParams(ms, ms + int(rng.integers(0, 2)), ms + int(rng.integers(1, 3)),
                             bool(rng.integers(0, 2)), stride, offset)
        short = rng.integers(lo, hi + 1, (short_c, g["out_h"] * stride, g["out_w"] * stride))
        layer = replace(layer, shortcut=short, residual=res)
    if clamp:
        u = np.unique(ls.expected_output(cfg, layer))
        n = max(1, len(u) // 8)
        layer = replace(layer, clamp=(int(u[rng.integers(1, n + 1)]),
                                      int(u[len(u) - 1 - rng.integers(1, n + 1)])))
    if pool:
        # The sums' spread scaled to about the activations' range (a plain average of
        # post-processed values is often nearly constant), within pool_shift_range.
        sums = ls.expected_output(cfg, layer).reshape(g["out_c"], -1).sum(axis=1)
        shift = int(np.abs(sums).max()).bit_length() - (e.act_bits - 1)
        lo, hi = pool_shift_range(e.act_bits, cfg.pool_pixels)
        layer = replace(layer, pool=min(max(shift, lo), hi))
    return layer


def composed(cfg, layer):
    """The independent composition: ``conv2d_layer``, then the graph golden's option-A
    shortcut (MaxPool2d with a 1x1 kernel and the stride, Pad of the channels), Add, Clamp
    and GlobalAvgPool (``shift = pool_shift - log2(M)``; ``M`` a power of two)."""
    e = cfg.engine
    x = np.asarray(layer.x)
    if layer.shifts is not None:
        x = table_shift(x, layer.shifts[:, 0], layer.shifts[:, 1])
    v = conv2d_layer(e, x, layer.w_codes, layer.stride, layer.padding, post=layer.post)
    if layer.residual is not None:
        r = layer.residual
        s = np.asarray(layer.shortcut)[None]
        s = node_forward(IntMaxPool2d(kernel=1, stride=r.stride), [s])
        after = v.shape[0] - r.offset - s.shape[1]
        s = node_forward(IntPad(pads=(r.offset, after, 0, 0, 0, 0)), [s])
        add = IntAdd(in_shifts=(r.main_shift, r.short_shift), shift=r.shift, relu=r.relu,
                     act_bits=e.act_bits)
        v = node_forward(add, [v[None], s])[0]
    if layer.clamp is not None:
        v = node_forward(IntClamp(lo=layer.clamp[0], hi=layer.clamp[1]), [v[None]])[0]
    if layer.pool is not None:
        m = v.shape[1] * v.shape[2]
        assert m & (m - 1) == 0, "the composition needs a power-of-two map"
        gap = IntGlobalAvgPool(shift=layer.pool - (m.bit_length() - 1), act_bits=e.act_bits)
        v = node_forward(gap, [v[None]])[0]
    return v


V2_LAYERS = {
    # (layer, composable: the map is a power of two when pooled)
    # out 8 x 4 x 4 (M 16); shortcut 3 channels at offset 2 of a 8x8 map.
    "conv3x3_s2_align2_pool": (lambda e, rng: with_tail(
        e, rng, random_layer(e, rng, 4, 8, 8, 8, (3, 3), 2, 1), short_c=3, offset=2,
        stride=2, pool=True), True),
    # out 9 x 5 x 4, shortcut 4 of a 15x12 map (stride 3) at offset 3, clamp, shift table.
    "conv3x3_s2_align3_clamp": (lambda e, rng: with_tail(
        e, rng, random_layer(e, rng, 5, 9, 7, 9, (3, 3), 2, 1, shifts=True, m_block=7),
        short_c=4, offset=3, stride=3, clamp=True), True),
    # out 7 x 4 x 8 (M 32), identity-sized shortcut but offset 1, pool, clamp, m_block 5.
    "conv1x1_offset_pool_clamp": (lambda e, rng: with_tail(
        e, rng, random_layer(e, rng, 6, 4, 8, 7, m_block=5), short_c=5, offset=1,
        clamp=True, pool=True), True),
    # out 6 x 5 x 3 (M 15, no power of two): pool without a residual.
    "conv2x2_pool_m15": (lambda e, rng: with_tail(
        e, rng, random_layer(e, rng, 3, 6, 4, 6, (2, 2), 1, 0), pool=True, relu=False), False),
    # A matrix product averaged over its 16 rows.
    "matmul_pool": (lambda e, rng: with_tail(e, rng, random_matmul(e, rng, 16, 9, 7),
                                             pool=True), True),
    # The 1.0 residual: short_c = out_c, stride 1, offset 0, with a pool.
    "conv3x3_identity_pool": (lambda e, rng: with_tail(
        e, rng, random_layer(e, rng, 4, 4, 4, 5, (3, 3), 1, 1), short_c=5, pool=True), True),
}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", V2_LAYERS)
def test_v2_emulator_golden_and_composition(kind, engine, width):
    e = ENGINES[engine]
    cfg = CoreConfig(e, stream_width=width)
    make, composable = V2_LAYERS[kind]
    layer = make(e, np.random.default_rng(seed("v2", kind, engine, width)))
    want = ls.expected_output(cfg, layer)
    if layer.pool is not None:
        assert want.shape == (layer.w_codes.shape[0], 1, 1)
    assert len(np.unique(want)) > 2, "degenerate outputs would hide errors"
    if composable:
        np.testing.assert_array_equal(composed(cfg, layer), want)
    beats = ls.expected_beats(cfg, layer)
    g = ls.layer_geometry(cfg, layer)
    assert len(beats) == g["results"] * cfg.beats(cfg.vector_bits["OUT"])
    got = ls.emulate_core(cfg, ls.pack_layer(cfg, layer))
    assert len(got) == len(beats)
    bad = [i for i, (a, b) in enumerate(zip(got, beats)) if a != b]
    assert not bad, f"beat {bad[0]}: emulator 0x{got[bad[0]]:x}, golden 0x{beats[bad[0]]:x}"
    np.testing.assert_array_equal(ls.unpack_results(cfg, layer, got), want)
    # The byte packer: pack_layer's bytes.
    n = width // 8
    ints = [b"".join(int(b).to_bytes(n, "little") for b in p.beats)
            for p in ls.pack_layer(cfg, layer)]
    assert [p.tobytes() for p in stream_pack.layer_packets(cfg, layer)] == ints


@pytest.mark.parametrize("out_c, offset", [(32, 8), (64, 16)])
def test_resnet20_downsampling_shortcuts(out_c, offset):
    """ResNet-20's option-A blocks on 16 columns: ``out_c // 2`` channels of a map twice the
    output's, ``offset`` = a quarter of ``out_c`` (8 is half a vector: lanes cross vectors);
    with and without the final pool."""
    e = ArrayConfig(pe="shift", rows=16, cols=16, act_bits=8, weight_bits=5)
    cfg = CoreConfig(e, stream_width=128)
    rng = np.random.default_rng(out_c)
    for pool in (False, True):
        base = random_layer(e, rng, 4, 8, 8, out_c, (3, 3), 2, 1)
        layer = with_tail(e, rng, base, short_c=out_c // 2, offset=offset, stride=2,
                          pool=pool)
        g = ls.layer_geometry(cfg, layer)
        assert (g["short_c"], g["short_off"], g["short_stride"], g["nts"]) == \
            (out_c // 2, offset, 2, out_c // 32)
        assert (g["scv"], g["dcv"]) == (64 * (out_c // 32), 16 * (out_c // 16))
        want = ls.expected_output(cfg, layer)
        np.testing.assert_array_equal(composed(cfg, layer), want)
        assert ls.emulate_core(cfg, ls.pack_layer(cfg, layer)) == ls.expected_beats(cfg, layer)


# Formats by hand ------------------------------------------------------------------------------

HAND_CFG = CoreConfig(ArrayConfig(pe="mult", rows=2, cols=3, act_bits=8), stream_width=64)


def hand_case(**kwargs):
    """in_c 2, a 3x4 map, out_c 7 on 3 columns (NT 3), 1x1 kernel: M = 12."""
    x = np.zeros((2, 3, 4), np.int64)
    w = np.zeros((7, 2, 1, 1), np.int64)
    post = PostParams(np.zeros(7, np.int64), np.zeros(7, np.int64))
    return ls.Layer(x, w, post, **kwargs)


def test_source_layout_by_hand():
    """A shortcut of 4 channels (nts 2) on a 6x8 map (stride 2): vector ``(y*8 + x)*2 + t``,
    lane ``j`` = ``s[t*3 + j, y, x]``, 0 beyond channel 3; word 7 and the counts."""
    short = (np.arange(4 * 48).reshape(4, 6, 8) % 250) - 125
    layer = hand_case(shortcut=short, residual=ResidualParams(stride=2, offset=2), m_block=5)
    g = ls.layer_geometry(HAND_CFG, layer)
    assert (g["nts"], g["SH"], g["SW"], g["scv"], g["dcv"]) == (2, 6, 8, 96, 36)
    assert g["counts"]["SHORTCUT"] == 96
    vectors = shortcut_vectors(HAND_CFG, layer, g)
    assert vectors.shape == (96, 3)
    for y in range(6):
        for x in range(8):
            for t in range(2):
                for j in range(3):
                    c = t * 3 + j
                    want = short[c, y, x] if c < 4 else 0
                    assert vectors[(y * 8 + x) * 2 + t, j] == want, (y, x, t, j)
    words = ls.descriptor_words(HAND_CFG, layer)
    assert words[7] == 0x0202_0004                 # short_stride 2, short_off 2, short_c 4
    assert words[4] == 0x0004_0005                 # flags.residual, m_block 5
    # The first block (pixels 0..4: oy 1, ox 0 last) reads source pixel (2, 0) = 16: 17 * 2.
    assert first_block_shortcut(g) == 34
    # Block 1 (pixels 5..9, (2, 1) last) reads source pixel (4, 2) = 34: 70 in all, and ACTS
    # up to (2, 2) (one row and one pixel further, in the map): 11; block 2 the rest.
    assert [(p.type, p.count) for p in ls.pack_layer(HAND_CFG, layer)][-6:] == \
        [("SHORTCUT", 34), ("WEIGHTS", 4), ("ACTS", 6), ("SHORTCUT", 36), ("ACTS", 1),
         ("SHORTCUT", 26)]


def test_pooled_results_by_hand():
    """A pooled run answers one pixel: NT = 3 vectors, channel ``nt*3 + j`` in lane ``j``,
    read back as ``(7, 1, 1)``; word 6's pool_shift (signed) and flags.global_pool."""
    x = np.zeros((2, 3, 4), np.int64)
    x[0] = np.arange(12).reshape(3, 4)             # sum 66
    w = np.zeros((7, 2, 1, 1), np.int64)
    w[:, 0, 0, 0] = np.arange(7) - 3               # channel c: (c - 3) * 66 over the map
    post = PostParams(np.zeros(7, np.int64), np.zeros(7, np.int64))
    layer = ls.Layer(x, w, post, pool=3)
    want = np.array([-198, -132, -66, 0, 66, 132, 198]) + 4 >> 3   # round half up
    want = np.clip(want, -128, 127)
    out = ls.expected_output(HAND_CFG, layer)
    assert out.shape == (7, 1, 1)
    np.testing.assert_array_equal(out[:, 0, 0], want)
    beats = ls.expected_beats(HAND_CFG, layer)
    lanes = np.append(want, [0, 0]) & 0xFF
    assert beats == [int(lanes[3 * nt] | lanes[3 * nt + 1] << 8 | lanes[3 * nt + 2] << 16)
                     for nt in range(3)]
    np.testing.assert_array_equal(ls.unpack_results(HAND_CFG, layer, beats), out)
    assert ls.emulate_core(HAND_CFG, ls.pack_layer(HAND_CFG, layer)) == beats
    words = ls.descriptor_words(HAND_CFG, layer)
    assert words[4] >> 16 == 1 << 5 and words[6] == 0x0300_0000 and words[7] == 0
    assert ls.descriptor_words(HAND_CFG, replace(layer, pool=-8))[6] == 0xF800_0000
    with pytest.raises(ValueError, match="3 vectors"):
        ls.unpack_results(HAND_CFG, layer, beats + beats[:1])


def test_v2_any_order_any_chunks_and_reuse():
    """The source SHORTCUT in chunks, shuffled among the other types; a reusing run with a new
    shortcut, a new alignment and a pool."""
    e = ENGINES["adder4x4"]
    cfg = CoreConfig(e, stream_width=32)
    rng = np.random.default_rng(5)
    layer = V2_LAYERS["conv3x3_s2_align3_clamp"][0](e, rng)
    packets = ls.pack_layer(cfg, layer)
    pieces = [q for p in packets[1:] for q in rechunk(cfg, p, [1, 5, 2])]
    types = [p.type for p in pieces]
    rng.shuffle(types)
    queues = {t: [p for p in pieces if p.type == t] for t in set(types)}
    stream = [packets[0]] + [queues[t].pop(0) for t in types]
    assert sum(p.type == "SHORTCUT" for p in stream) > 5
    assert ls.emulate_core(cfg, stream) == ls.expected_beats(cfg, layer)
    state = ls.CoreState()
    ls.emulate_core(cfg, packets, state=state)
    again = replace(layer, shortcut=rng.integers(*e.act_range, (7, 5, 4)), clamp=None,
                    residual=ResidualParams(1, 0, 1, True, 1, 2), reuse_weights=True, pool=2)
    assert ls.emulate_core(cfg, ls.pack_layer(cfg, again), state=state) == \
        ls.expected_beats(cfg, again)


# Refusals -------------------------------------------------------------------------------------

def v2_case(**kwargs):
    """Default core (8-bit activations, 16 columns): out 6 x 5 x 4 (M 20) with a 4-channel
    shortcut of a 10x8 map at offset 1, and a pool."""
    x = np.zeros((5, 9, 7), np.int64)
    w = np.zeros((6, 5, 3, 3), np.int64)
    post = PostParams(np.zeros(6, np.int64), np.zeros(6, np.int64))
    fields = dict(stride=2, padding=1, shortcut=np.zeros((4, 10, 8), np.int64),
                  residual=ResidualParams(1, 2, 3, True, 2, 1), pool=5)
    fields.update(kwargs)
    return ls.Layer(x, w, post, **fields)


def _res(**kwargs):
    return ResidualParams(**{"main_shift": 1, "short_shift": 2, "shift": 3, "relu": True,
                             "stride": 2, "offset": 1, **kwargs})


BAD_V2 = [
    # (what, cfg kwargs, layer changes, param, core error, text in the message)
    ("stride 0", {}, dict(residual=_res(stride=0)), "residual.stride", "DESCRIPTOR",
     "[1, 15], not 0"),
    ("stride 16", {}, dict(residual=_res(stride=16)), "residual.stride", "DESCRIPTOR",
     "[1, 15], not 16"),
    ("stride float", {}, dict(residual=_res(stride=2.0)), "residual.stride", None, "not 2.0"),
    ("offset -1", {}, dict(residual=_res(offset=-1)), "residual.offset", "DESCRIPTOR",
     "[0, 255], not -1"),
    ("offset 256", {}, dict(residual=_res(offset=256)), "residual.offset", "DESCRIPTOR",
     "[0, 255], not 256"),
    ("offset bool", {}, dict(residual=_res(offset=True)), "residual.offset", None, "not True"),
    ("short_c 0", {}, dict(shortcut=np.zeros((0, 10, 8), np.int64)), "shortcut",
     "DESCRIPTOR", "(short_c) must be at least 1, not 0"),
    ("short_c + offset > out_c", {}, dict(shortcut=np.zeros((6, 10, 8), np.int64)),
     "shortcut", "DESCRIPTOR", "residual.offset 1 + its channels (short_c) 6 must be at most "
                               "out_c = 6"),
    ("offset beyond out_c", {}, dict(residual=_res(offset=7)), "shortcut", "DESCRIPTOR",
     "residual.offset 7 + its channels (short_c) 4 must be at most out_c = 6"),
    ("shortcut map", {}, dict(shortcut=np.zeros((4, 5, 4), np.int64)), "shortcut", None,
     "(4, 10, 8) (short_c, out_h*2, out_w*2)"),
    ("shortcut map stride 1", {}, dict(residual=_res(stride=1)), "shortcut", None,
     "(4, 5, 4) (short_c, out_h*1, out_w*1)"),
    ("shortcut 2-d", {}, dict(shortcut=np.zeros((4, 80), np.int64)), "shortcut", None,
     "must have shape (4, 10, 8)"),
    ("pool high", {}, dict(pool=pool_shift_range(8, 4096)[1] + 1), "pool", "DESCRIPTOR",
     "[-8, 20]"),
    ("pool low", {}, dict(pool=-9), "pool", "DESCRIPTOR", "not -9"),
    ("pool float", {}, dict(pool=1.0), "pool", None, "not 1.0"),
    ("pool bool", {}, dict(pool=True), "pool", None, "not True"),
    ("pool range of a small unit", {"pool_pixels": 20}, dict(pool=14), "pool", "DESCRIPTOR",
     "[-8, 13]"),
    ("pool_pixels 0", {"pool_pixels": 0}, {}, "pool", "TOO_BIG", "no pool unit"),
    ("map > pool_pixels", {"pool_pixels": 19}, {}, "pool", "TOO_BIG",
     "20 pixels, must be at most pool_pixels = 19"),
    ("aligned shortcut > buffer", {"shortcut_vectors": 19}, {}, "shortcut", "TOO_BIG",
     "shortcut_vectors = 19, not 20"),
    # DESCRIPTOR before TOO_BIG, as in the core.
    ("descriptor before pool TOO_BIG", {"pool_pixels": 0}, dict(residual=_res(stride=0)),
     "residual.stride", "DESCRIPTOR", "not 0"),
    ("pool DESCRIPTOR before buffer", {"shortcut_vectors": 0}, dict(pool=-9), "pool",
     "DESCRIPTOR", "not -9"),
]


@pytest.mark.parametrize("what, cfg_kwargs, change, param, core_error, text", BAD_V2,
                         ids=[case[0] for case in BAD_V2])
def test_check_layer_v2_errors(what, cfg_kwargs, change, param, core_error, text):
    cfg = CoreConfig(**cfg_kwargs)
    good = v2_case()
    ls.check_layer(CoreConfig(), good)
    assert ls.emulate_core(CoreConfig(), ls.pack_layer(CoreConfig(), good)) == \
        ls.expected_beats(CoreConfig(), good)
    bad = replace(good, **change)
    with pytest.raises(ls.LayerError) as info:
        ls.check_layer(cfg, bad)
    message = str(info.value)
    assert info.value.param == param and message.startswith(param), message
    assert info.value.core_error == core_error, message
    assert text in message and "\n" not in message, message
    with pytest.raises(ls.LayerError):
        stream_pack.layer_packets(cfg, bad)
    if core_error is not None:
        # The descriptor the host would send: the emulated core stops with the same code.
        g = ls.layer_geometry(cfg, bad)
        fields = {**g, **tail_fields(bad)}
        if any(name not in DESC_SIGNED and not 0 <= fields.get(name, 0) < 1 << width
               for _, _, width, name in DESC_FIELDS):
            return                   # a field wider than its bits: no descriptor to send
        words = descriptor_words_unchecked(bad, g)
        desc = ls.Packet("DESC", 1, [0x101] + _desc_beats(cfg, words))
        with pytest.raises(ls.CoreError) as stop:
            ls.emulate_core(cfg, [desc])
        assert stop.value.name == core_error, str(stop.value)


def test_good_v2_edges_pass():
    """The ends of every range are accepted, on the emulated core too."""
    lo, hi = pool_shift_range(8, 20)
    for cfg_kwargs, change in [({"pool_pixels": 20}, dict(pool=hi)),
                               ({"pool_pixels": 20}, dict(pool=lo)),
                               ({}, dict(shortcut=np.zeros((5, 10, 8), np.int64))),
                               ({}, dict(residual=_res(offset=0),
                                         shortcut=np.zeros((6, 10, 8), np.int64))),
                               ({}, dict(residual=_res(stride=15),
                                         shortcut=np.zeros((1, 75, 60), np.int64))),
                               ({"shortcut_vectors": 20}, dict(pool=None))]:
        cfg = CoreConfig(**cfg_kwargs)
        layer = v2_case(**change)
        ls.check_layer(cfg, layer)
        assert ls.emulate_core(cfg, ls.pack_layer(cfg, layer)) == ls.expected_beats(cfg, layer)


def test_emulator_v2_descriptor_errors():
    """Word 7 edited under a residual: short_c 0, short_stride 0, short_off + short_c > out_c
    (DESCRIPTOR); pool_shift out of range with its flag (DESCRIPTOR); the pool flag on a core
    without a pool unit (TOO_BIG); SHORTCUT counted in source vectors (OVERRUN one past)."""
    cfg = CoreConfig(stream_width=64)
    layer = v2_case()
    packets = ls.pack_layer(cfg, layer)
    words = ls.descriptor_words(cfg, layer)
    assert words[7] == 0x0201_0004
    for value, text in [(0x0201_0000, "short_c = 0"), (0x0001_0004, "short_stride = 0"),
                        (0x0203_0004, "short_c = 4 outside [1, 3]"),
                        (0x0200_0007, "short_c = 7 outside [1, 6]")]:
        with pytest.raises(ls.CoreError, match="^DESCRIPTOR ") as info:
            ls.emulate_core(cfg, _stream_with(cfg, packets, 7, value))
        assert text in str(info.value), (hex(value), str(info.value))
    for shift in (-9, 21):
        with pytest.raises(ls.CoreError, match=f"^DESCRIPTOR .*pool_shift = {shift} outside"):
            ls.emulate_core(cfg, _stream_with(cfg, packets, 6, words[6] & 0xFF_FFFF
                                              | (shift & 0xFF) << 24))
    with pytest.raises(ls.CoreError, match="^TOO_BIG .*pooled map"):
        ls.emulate_core(CoreConfig(stream_width=64, pool_pixels=0), packets)
    with pytest.raises(ls.CoreError, match="^TOO_BIG .*aligned shortcut"):
        ls.emulate_core(CoreConfig(stream_width=64, shortcut_vectors=19), packets)
    shortcut = [p for p in packets if p.type == "SHORTCUT"]
    assert sum(p.count for p in shortcut) == 80 * 1            # 10 x 8 pixels, nts 1
    with pytest.raises(ls.CoreError, match="^OVERRUN .*SHORTCUT"):
        ls.emulate_core(cfg, packets + shortcut[-1:])


@pytest.mark.parametrize("kind", ["conv1x1_offset_pool_clamp", "conv3x3_s2_align3_clamp"])
def test_decode_run_reads_pooled_and_aligned_results(kind):
    """The runtime's byte decoder (``step_packets.decode_run``) reads the golden result beats
    back to the golden output: one pixel ``(out_c, 1, 1)`` with a pool, the map without."""
    from types import SimpleNamespace
    from mulfree.host.step_packets import decode_run
    e = ENGINES["shift3x5"]
    cfg = CoreConfig(e, stream_width=64)
    layer = V2_LAYERS[kind][0](e, np.random.default_rng(seed("decode", kind)))
    beats = ls.expected_beats(cfg, layer)
    data = np.frombuffer(b"".join(b.to_bytes(8, "little") for b in beats), np.uint8)
    program = SimpleNamespace(core=cfg)
    got = decode_run(program, layer, data)
    np.testing.assert_array_equal(got, ls.expected_output(cfg, layer))
    with pytest.raises(ValueError, match="bytes"):
        decode_run(program, layer, data[8:])
