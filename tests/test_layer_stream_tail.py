"""Tests of the fused tail (residual add, clamp) in :mod:`mulfree.host.layer_stream`.

Random residual and clamp layers run three independent ways: the golden output
(``expected_output``: ``conv2d_layer``, then ``fused_tail``), a composition written here from
the graph golden (``conv2d_layer``, then the Add and Clamp nodes of
``params/graph_golden.py``), and the emulator that parses the packed stream (SHORTCUT vectors
included) and applies the tail the way the core does. The descriptor's new words, the SHORTCUT
layout and the packet order are checked against values worked out by hand from
``docs/interface.md``; every refusal of ``check_layer`` is one line naming its parameter, and
the emulator stops with the same core error on the descriptor the host would have sent.
"""

from dataclasses import replace

import numpy as np
import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import PACKET_TYPES, RES_MAX_SHIFT, CoreConfig, res_shift_range
from mulfree.params.graph_golden import node_forward
from mulfree.params.int_layers import IntAdd, IntClamp
from mulfree.params.layer_golden import PostParams, ResidualParams, conv2d_layer
from mulfree.params.shift_golden import table_shift
from mulfree.host import layer_stream as ls
from mulfree.host import stream_pack
from mulfree.host.stream_format import descriptor_words_unchecked, shortcut_vectors, stream_order

from test_layer_stream import ENGINES, random_layer, random_matmul, rechunk, seed


WIDTHS = (32, 64, 128)


def random_tail(e, rng, layer, *, residual=True, clamp=True):
    """``layer`` with a random shortcut, residual and clamp, chosen to keep the outputs
    varied: the sum's rounding shift about its left shifts, the clamp inside the values."""
    lo, hi = e.act_range
    cfg = CoreConfig(e, max_channels=1 << 16)
    out = ls.expected_output(cfg, layer)
    res = short = box = None
    if residual:
        # The shortcut weighs at least as much as the layer's output (often saturated).
        ms = int(rng.integers(0, 3))
        ss = ms + int(rng.integers(0, 2))
        shift = ss + int(rng.integers(0, 2))
        res = ResidualParams(ms, ss, shift, bool(rng.integers(0, 2)))
        short = rng.integers(lo, hi + 1, out.shape)
        layer = replace(layer, shortcut=short, residual=res)
        out = ls.expected_output(cfg, layer)
    if clamp:
        # Inside the outputs' values: they stay varied, and the clamp bites at both ends.
        u = np.unique(out)
        n = max(1, len(u) // 4)
        box = (int(u[rng.integers(1, n + 1)]), int(u[len(u) - 1 - rng.integers(1, n + 1)]))
    return replace(layer, clamp=box)


def composed(cfg, layer):
    """The independent composition: the (shifted) map through ``conv2d_layer``, then the
    graph golden's Add (two inputs) and Clamp nodes."""
    e = cfg.engine
    x = np.asarray(layer.x)
    if layer.shifts is not None:
        x = table_shift(x, layer.shifts[:, 0], layer.shifts[:, 1])
    v = conv2d_layer(e, x, layer.w_codes, layer.stride, layer.padding, post=layer.post)
    if layer.residual is not None:
        r = layer.residual
        add = IntAdd(in_shifts=(r.main_shift, r.short_shift), shift=r.shift, relu=r.relu,
                     act_bits=e.act_bits)
        v = node_forward(add, [v[None], np.asarray(layer.shortcut)[None]])[0]
    if layer.clamp is not None:
        v = node_forward(IntClamp(lo=layer.clamp[0], hi=layer.clamp[1]), [v[None]])[0]
    return v


TAIL_LAYERS = {
    # out_c 7, 6, 9, 4 are no multiple of the engines' 5, 4, 8, 3 columns (except 9 on 3).
    "conv3x3_s2_p1_res_clamp": lambda e, rng: random_tail(
        e, rng, random_layer(e, rng, 5, 9, 7, 7, (3, 3), 2, 1)),
    "conv1x1_shift_res": lambda e, rng: random_tail(
        e, rng, random_layer(e, rng, 7, 6, 5, 6, shifts=True, m_block=7), clamp=False),
    "conv2x3_s12_p12_clamp": lambda e, rng: random_tail(
        e, rng, random_layer(e, rng, 4, 5, 8, 9, (2, 3), (1, 2), (1, 2)), residual=False),
    "conv3x3_mblock5_res_clamp": lambda e, rng: random_tail(
        e, rng, random_layer(e, rng, 6, 5, 6, 4, (3, 3), 1, 1, shifts=True, m_block=5)),
    "matmul_res_clamp": lambda e, rng: random_tail(e, rng, random_matmul(e, rng, 23, 11, 6)),
}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", TAIL_LAYERS)
def test_tail_emulator_golden_and_composition(kind, engine, width):
    e = ENGINES[engine]
    cfg = CoreConfig(e, stream_width=width)
    layer = TAIL_LAYERS[kind](e, np.random.default_rng(seed("tail", kind, engine, width)))
    want = ls.expected_output(cfg, layer)
    assert len(np.unique(want)) > 3, "degenerate outputs would hide errors"
    np.testing.assert_array_equal(composed(cfg, layer), want)
    untailed = ls.expected_output(cfg, replace(layer, shortcut=None, residual=None, clamp=None))
    assert np.any(untailed != want), "the tail must change something"
    beats = ls.expected_beats(cfg, layer)
    got = ls.emulate_core(cfg, ls.pack_layer(cfg, layer))
    assert len(got) == len(beats)
    bad = [i for i, (g, b) in enumerate(zip(got, beats)) if g != b]
    assert not bad, f"beat {bad[0]}: emulator 0x{got[bad[0]]:x}, golden 0x{beats[bad[0]]:x}"
    np.testing.assert_array_equal(ls.unpack_results(cfg, layer, got), want)


@pytest.mark.parametrize("engine", ["adder4x4", "mult3x5"])
def test_tail_extremes(engine):
    """The widest sums (both shifts 15), the most negative and positive shifts, the clamp at
    the activation range's ends, a one-value clamp: emulator = golden = composition."""
    e = ENGINES[engine]
    cfg = CoreConfig(e, stream_width=32)
    rng = np.random.default_rng(seed("extremes", engine))
    base = random_layer(e, rng, 3, 4, 5, 6, (3, 3), 1, 1)
    lo, hi = e.act_range
    s_lo, s_hi = res_shift_range(e.act_bits)
    short = rng.integers(lo, hi + 1, (6, 4, 5))
    short.flat[:2] = lo, hi
    cases = [(ResidualParams(RES_MAX_SHIFT, RES_MAX_SHIFT, s_hi - 1, False), (lo, hi)),
             (ResidualParams(RES_MAX_SHIFT, 0, RES_MAX_SHIFT, True), None),
             (ResidualParams(0, RES_MAX_SHIFT, s_lo, False), (-1, 1)),
             (ResidualParams(0, 0, s_hi, True), (2, 2)),
             (ResidualParams(3, 0, -1, False), (lo, lo))]
    for res, clamp in cases:
        layer = replace(base, shortcut=short, residual=res, clamp=clamp)
        want = composed(cfg, layer)
        np.testing.assert_array_equal(ls.expected_output(cfg, layer), want)
        assert ls.emulate_core(cfg, ls.pack_layer(cfg, layer)) == ls.expected_beats(cfg, layer)


def test_tail_any_order_any_chunks_and_reuse():
    """SHORTCUT packets in chunks, shuffled among the other types; a reusing run sends its own
    shortcut (never reused) with the loaded weights."""
    e = ENGINES["shift3x5"]
    cfg = CoreConfig(e, stream_width=32)
    rng = np.random.default_rng(11)
    layer = TAIL_LAYERS["conv3x3_mblock5_res_clamp"](e, rng)
    packets = ls.pack_layer(cfg, layer)
    pieces = [q for p in packets[1:] for q in rechunk(cfg, p, [1, 4, 2])]
    types = [p.type for p in pieces]
    rng.shuffle(types)
    queues = {t: [p for p in pieces if p.type == t] for t in set(types)}
    stream = [packets[0]] + [queues[t].pop(0) for t in types]
    assert sum(p.type == "SHORTCUT" for p in stream) > 5
    assert ls.emulate_core(cfg, stream) == ls.expected_beats(cfg, layer)
    state = ls.CoreState()
    ls.emulate_core(cfg, packets, state=state)
    again = replace(layer, x=rng.integers(*e.act_range, layer.x.shape),
                    shortcut=rng.integers(*e.act_range, layer.shortcut.shape),
                    residual=ResidualParams(0, 2, 1, False), clamp=None, reuse_weights=True)
    order = [(p.type, p.count) for p in ls.pack_layer(cfg, again)]
    assert order[0] == ("DESC", 1) and order[2] == ("SHORTCUT", 5)      # m_block 5, NT 1
    assert ls.emulate_core(cfg, ls.pack_layer(cfg, again), state=state) == \
        ls.expected_beats(cfg, again)


# Formats by hand ------------------------------------------------------------------------------

def hand_case(**kwargs):
    """in_c 2, a 3x4 map, out_c 7 on 3 columns (NT 3), 1x1 kernel: M = 12."""
    x = np.zeros((2, 3, 4), np.int64)
    w = np.zeros((7, 2, 1, 1), np.int64)
    post = PostParams(np.zeros(7, np.int64), np.zeros(7, np.int64))
    return ls.Layer(x, w, post, **kwargs)


HAND_CFG = CoreConfig(ArrayConfig(pe="mult", rows=2, cols=3, act_bits=8), stream_width=64)


def test_descriptor_tail_words_by_hand():
    short = np.zeros((7, 3, 4), np.int64)
    layer = hand_case(m_block=5, shortcut=short, residual=ResidualParams(3, 15, -8, True),
                      clamp=(-128, 6))
    words = ls.descriptor_words(HAND_CFG, layer)
    assert len(words) == 8
    # flags: residual (bit 18), res_relu (19), clamp (20); m_block 5.
    assert words[4] == 0x001C_0005
    assert words[5] == 0x0006_FF80              # clamp_hi 6, clamp_lo -128 = 0xFF80
    assert words[6] == 0x00F8_0F03             # res_shift -8 = 0xF8, short 15, main 3
    assert words[7] == 0x0100_0007             # short_stride 1, short_off 0, short_c 7
    relu_off = replace(layer, residual=ResidualParams(0, 1, 24, False), clamp=None)
    words = ls.descriptor_words(HAND_CFG, relu_off)
    assert (words[4], words[5], words[6], words[7]) == (0x0004_0005, 0, 0x0018_0100,
                                                        0x0100_0007)
    clamp_only = hand_case(m_block=5, clamp=(-1, -1))
    assert ls.descriptor_words(HAND_CFG, clamp_only)[4:] == [0x0010_0005, 0xFFFF_FFFF, 0, 0]


def test_shortcut_vectors_by_hand():
    """Vector ``(oy*out_w + ox)*NT + nt``, lane ``j`` = ``s[nt*C + j, oy, ox]``, 0 beyond
    ``out_c``; each element distinct to find it back."""
    short = (np.arange(7 * 12).reshape(7, 3, 4) % 200) - 100
    layer = hand_case(shortcut=short, residual=ResidualParams())
    g = ls.layer_geometry(HAND_CFG, layer)
    assert (g["NT"], g["M"], g["counts"]["SHORTCUT"]) == (3, 12, 36)
    vectors = shortcut_vectors(HAND_CFG, layer, g)
    assert vectors.shape == (36, 3)
    for oy in range(3):
        for ox in range(4):
            for nt in range(3):
                for j in range(3):
                    c = nt * 3 + j
                    want = short[c, oy, ox] if c < 7 else 0
                    assert vectors[(oy * 4 + ox) * 3 + nt, j] == want, (oy, ox, nt, j)
    # One vector's beat: 3 x 8 bits, lane 0 low.
    packets = [p for p in ls.pack_layer(HAND_CFG, layer) if p.type == "SHORTCUT"]
    first = packets[0].beats[1]
    assert first == (short[0, 0, 0] & 0xFF) | (short[1, 0, 0] & 0xFF) << 8 | \
        (short[2, 0, 0] & 0xFF) << 16
    assert shortcut_vectors(HAND_CFG, hand_case(), g).shape == (0, 3)


def test_packet_order_with_the_shortcut():
    """DESC, PARAMS, SHIFT, ACTS(first block), WEIGHTS(nt = 0), SHORTCUT(first block's
    pixels), WEIGHTS(rest), then per further block its ACTS (its last pixel's window, one row
    and one pixel further) and its SHORTCUT; with reuse the same without PARAMS, SHIFT and
    WEIGHTS."""
    short = np.zeros((7, 3, 4), np.int64)
    layer = hand_case(m_block=5, shortcut=short, residual=ResidualParams(),
                      shifts=np.zeros((2, 2), np.int64))
    # 1x1 kernel, CT 1: the first block (pixels 0..4) reads ACTS 0..4; NT 3: 15 SHORTCUT;
    # KT 1, R 2: nt = 0's weights are 2 rows. Block 1 (pixels 5..9) ends at (2, 1): ACTS up
    # to (2, 2), 11 in all; SHORTCUT up to pixel 9, 30. Block 2: the rest.
    assert [(p.type, p.count) for p in ls.pack_layer(HAND_CFG, layer)] == \
        [("DESC", 1), ("PARAMS", 7), ("SHIFT", 1), ("ACTS", 5), ("WEIGHTS", 2),
         ("SHORTCUT", 15), ("WEIGHTS", 4), ("ACTS", 6), ("SHORTCUT", 15), ("ACTS", 1),
         ("SHORTCUT", 6)]
    reuse = replace(layer, reuse_weights=True)
    assert [(p.type, p.count) for p in ls.pack_layer(HAND_CFG, reuse)] == \
        [("DESC", 1), ("ACTS", 5), ("SHORTCUT", 15), ("ACTS", 6), ("SHORTCUT", 15),
         ("ACTS", 1), ("SHORTCUT", 6)]
    whole = replace(layer, m_block=12)                   # one block: nothing left after
    assert [p.type for p in ls.pack_layer(HAND_CFG, whole)] == \
        ["DESC", "PARAMS", "SHIFT", "ACTS", "WEIGHTS", "SHORTCUT", "WEIGHTS"]
    plain = replace(reuse, shortcut=None, residual=None)  # no residual: ACTS in one piece
    assert [(p.type, p.count) for p in ls.pack_layer(HAND_CFG, plain)] == \
        [("DESC", 1), ("ACTS", 12)]
    g = ls.layer_geometry(HAND_CFG, layer)
    assert stream_order(g, reuse=False, first_acts=5) == \
        [("PARAMS", 0, 7), ("SHIFT", 0, 1), ("ACTS", 0, 5), ("WEIGHTS", 0, 2),
         ("SHORTCUT", 0, 15), ("WEIGHTS", 2, 4), ("ACTS", 5, 6), ("SHORTCUT", 15, 15),
         ("ACTS", 11, 1), ("SHORTCUT", 30, 6)]
    assert stream_order(ls.layer_geometry(HAND_CFG, replace(layer, shortcut=None,
                                                            residual=None)),
                        reuse=False, first_acts=5) == \
        [("PARAMS", 0, 7), ("SHIFT", 0, 1), ("ACTS", 0, 5), ("WEIGHTS", 0, 6), ("ACTS", 5, 7)]


# The vectorised byte packing ------------------------------------------------------------------

def _beat_bytes(cfg, packets):
    n = cfg.stream_width // 8
    return [b"".join(int(b).to_bytes(n, "little") for b in p.beats) for p in packets]


@pytest.mark.parametrize("width", WIDTHS + (256,))
@pytest.mark.parametrize("engine", ["shift3x5", "adder4x4", "mult_tree5x3"])
@pytest.mark.parametrize("kind", TAIL_LAYERS)
def test_layer_packets_equal_pack_layer(kind, engine, width):
    """``stream_pack.layer_packets`` gives ``pack_layer``'s packets byte for byte (also
    reusing, and with PARAMS, SHIFT and WEIGHTS packed beforehand); with ``max_bytes`` the
    same payload cut into more packets."""
    e = ENGINES[engine]
    cfg = CoreConfig(e, stream_width=width)
    layer = TAIL_LAYERS[kind](e, np.random.default_rng(seed("bytes", kind, engine, width)))
    for run in (layer, replace(layer, reuse_weights=True)):
        want = _beat_bytes(cfg, ls.pack_layer(cfg, run))
        got = [p.tobytes() for p in stream_pack.layer_packets(cfg, run)]
        assert got == want
    ints = ls.pack_layer(cfg, layer)
    weights = [np.frombuffer(b, np.uint8).reshape(-1, width // 8) for p, b in
               zip(ints, _beat_bytes(cfg, ints)) if p.type in ("PARAMS", "SHIFT", "WEIGHTS")]
    got = stream_pack.layer_packets(cfg, layer, weights=weights, check=False)
    assert [p.tobytes() for p in got] == _beat_bytes(cfg, ints)
    beat = width // 8
    limit = (1 + 3 * cfg.beats(max(cfg.vector_bits[t] for t in ("ACTS", "SHORTCUT",
                                                                 "WEIGHTS", "PARAMS")))) * beat
    cut = stream_pack.layer_packets(cfg, layer, limit)
    assert all(p.size <= limit for p in cut[1:]) and len(cut) > len(ints)
    payload = {t: b"" for t in PACKET_TYPES}
    for p in cut:
        name = {v: k for k, v in PACKET_TYPES.items()}[int(p[0, 0]) & 0xF]
        payload[name] += p[1:].tobytes()
    for p, b in zip(ints, _beat_bytes(cfg, ints)):
        payload[p.type] = payload[p.type].replace(b[beat:], b"", 1)
    assert not any(payload.values()), "the cut packets carry the same vectors"


# Refusals -------------------------------------------------------------------------------------

def tail_case(**kwargs):
    """A residual and clamp layer on the default core (8-bit activations): out 6 x 5 x 4."""
    x = np.zeros((5, 9, 7), np.int64)
    w = np.zeros((6, 5, 3, 3), np.int64)
    post = PostParams(np.zeros(6, np.int64), np.zeros(6, np.int64))
    fields = dict(stride=2, padding=1, shortcut=np.zeros((6, 5, 4), np.int64),
                  residual=ResidualParams(1, 2, 3, True), clamp=(0, 96))
    fields.update(kwargs)
    return ls.Layer(x, w, post, **fields)


BAD_TAILS = [
    # (what, cfg kwargs, layer changes, param, core error, text in the message)
    ("main_shift 16", {}, dict(residual=ResidualParams(16, 0, 0)), "residual.main_shift",
     "DESCRIPTOR", "[0, 15], not 16"),
    ("main_shift -1", {}, dict(residual=ResidualParams(-1, 0, 0)), "residual.main_shift",
     "DESCRIPTOR", "[0, 15], not -1"),
    ("short_shift 16", {}, dict(residual=ResidualParams(0, 16, 0)), "residual.short_shift",
     "DESCRIPTOR", "[0, 15], not 16"),
    ("res shift high", {}, dict(residual=ResidualParams(0, 0, 25)), "residual.shift",
     "DESCRIPTOR", "[-8, 24], not 25"),
    ("res shift low", {}, dict(residual=ResidualParams(0, 0, -9)), "residual.shift",
     "DESCRIPTOR", "[-8, 24], not -9"),
    ("res shift float", {}, dict(residual=ResidualParams(0, 0, 1.0)), "residual.shift",
     None, "not 1.0"),
    ("main_shift bool", {}, dict(residual=ResidualParams(True, 0, 0)), "residual.main_shift",
     None, "not True"),
    ("res relu", {}, dict(residual=ResidualParams(0, 0, 0, 2)), "residual.relu", None,
     "bool, not 2"),
    ("residual type", {}, dict(residual=(0, 0, 0)), "residual", None, "ResidualParams"),
    ("clamp lo > hi", {}, dict(clamp=(5, 3)), "clamp", "DESCRIPTOR", "not (5, 3)"),
    ("clamp lo low", {}, dict(clamp=(-129, 3)), "clamp", "DESCRIPTOR", "-128 <= lo"),
    ("clamp hi high", {}, dict(clamp=(0, 128)), "clamp", "DESCRIPTOR", "hi <= 127"),
    ("clamp one int", {}, dict(clamp=6), "clamp", None, "pair (lo, hi)"),
    ("clamp three", {}, dict(clamp=(0, 1, 2)), "clamp", None, "pair (lo, hi)"),
    ("clamp floats", {}, dict(clamp=(0.0, 6.0)), "clamp", None, "pair (lo, hi)"),
    ("shortcut buffer", {"shortcut_vectors": 19}, {}, "shortcut", "TOO_BIG",
     "shortcut_vectors = 19, not 20"),
    ("no shortcut buffer", {"shortcut_vectors": 0}, {}, "shortcut", "TOO_BIG",
     "shortcut_vectors = 0, not 20"),
    ("shortcut without residual", {}, dict(residual=None), "shortcut", None, "exactly when"),
    ("residual without shortcut", {}, dict(shortcut=None), "shortcut", None, "exactly when"),
    ("shortcut shape", {}, dict(shortcut=np.zeros((6, 4, 5), np.int64)), "shortcut", None,
     "(6, 5, 4)"),
    ("shortcut range", {}, dict(shortcut=np.full((6, 5, 4), -129)), "shortcut", None,
     "[-128, 127]"),
    ("shortcut floats", {}, dict(shortcut=np.zeros((6, 5, 4))), "shortcut", None, "integers"),
    # DESCRIPTOR comes before TOO_BIG, as in the core.
    ("descriptor first", {"shortcut_vectors": 0}, dict(clamp=(1, 0)), "clamp", "DESCRIPTOR",
     "not (1, 0)"),
    ("descriptor before m_block", {"acc_entries": 4}, dict(m_block=5, clamp=(1, 0)), "clamp",
     "DESCRIPTOR", "not (1, 0)"),
]


@pytest.mark.parametrize("what, cfg_kwargs, change, param, core_error, text", BAD_TAILS,
                         ids=[case[0] for case in BAD_TAILS])
def test_check_layer_tail_errors(what, cfg_kwargs, change, param, core_error, text):
    cfg = CoreConfig(**cfg_kwargs)
    good = tail_case()
    ls.check_layer(CoreConfig(), good)
    bad = replace(good, **change)
    with pytest.raises(ls.LayerError) as info:
        ls.check_layer(cfg, bad)
    message = str(info.value)
    assert info.value.param == param and message.startswith(param), message
    assert info.value.core_error == core_error
    assert text in message and "\n" not in message, message
    with pytest.raises(ls.LayerError):
        ls.pack_layer(cfg, bad)
    with pytest.raises(ls.LayerError):
        stream_pack.layer_packets(cfg, bad)
    if core_error is not None:
        # The descriptor the host would send: the emulated core stops with the same code.
        g = ls.layer_geometry(cfg, bad)
        words = descriptor_words_unchecked(bad, g)
        desc = ls.Packet("DESC", 1, [0x101] + _desc_beats(cfg, words))
        with pytest.raises(ls.CoreError) as stop:
            ls.emulate_core(cfg, [desc])
        assert stop.value.name == core_error, str(stop.value)


def _desc_beats(cfg, words):
    vector = sum(w << (32 * i) for i, w in enumerate(words))
    s = cfg.stream_width
    return [(vector >> (s * i)) & ((1 << s) - 1) for i in range(cfg.beats(32 * len(words)))]


def test_good_tails_pass():
    """The edges of every range are accepted, on the emulated core too."""
    cfg = CoreConfig(shortcut_vectors=20)
    for res, clamp in [(ResidualParams(15, 15, 24, True), (-128, 127)),
                       (ResidualParams(0, 0, -8, False), (3, 3)),
                       (ResidualParams(0, 0, 0, np.bool_(True)), None), (None, (-128, -128))]:
        layer = tail_case(residual=res, clamp=clamp,
                          shortcut=None if res is None else tail_case().shortcut)
        ls.check_layer(cfg, layer)
        assert ls.emulate_core(cfg, ls.pack_layer(cfg, layer)) == ls.expected_beats(cfg, layer)


# Malformed streams ----------------------------------------------------------------------------

def _stream_with(cfg, packets, word, value):
    """``packets`` with descriptor word ``word`` replaced by ``value``."""
    vector = sum(b << (cfg.stream_width * i) for i, b in enumerate(packets[0].beats[1:]))
    vector = vector & ~(0xFFFF_FFFF << (32 * word)) | value << (32 * word)
    words = [(vector >> (32 * w)) & 0xFFFF_FFFF for w in range(8)]
    return [ls.Packet("DESC", 1, [0x101] + _desc_beats(cfg, words))] + packets[1:]


def test_emulator_tail_descriptor_errors():
    """DESCRIPTOR for a tail field set without its flag (pool_shift, short_*), a clamp
    out of order; OVERRUN for SHORTCUT without flags.residual or beyond M*NT; the run waits
    for missing SHORTCUT vectors; ENGINE for bits 31:28 of word 7 (the engine field) on a
    single-engine core."""
    cfg = CoreConfig(stream_width=64)
    plain = tail_case(residual=None, shortcut=None, clamp=None)
    packets = ls.pack_layer(cfg, plain)
    assert ls.emulate_core(cfg, packets) == ls.expected_beats(cfg, plain)
    flags_word = ls.descriptor_words(cfg, plain)[4]
    cases = [(5, 0x0000_0001, "without flags.clamp"), (5, 0x0001_0000, "without flags.clamp"),
             (6, 0x0000_0001, "without flags.residual"), (6, 0x0000_0100, "without"),
             (6, 0x0001_0000, "without"),
             (6, 0x0100_0000, "pool_shift = 1 without flags.global_pool"),
             (6, 0xFF00_0000, "pool_shift = -1 without flags.global_pool"),
             (7, 0x0000_0001, "'short_c': 1"), (7, 0x0001_0000, "'short_off': 1"),
             (7, 0x0100_0000, "'short_stride': 1"),
             (4, flags_word | 1 << 19, "res_relu = 1 without"),
             (4, flags_word | 1 << 30, "taps without depthwise"),    # flags bit 14 (2.4)
             (4, flags_word | 1 << 31, "reserved flag")]
    for word, value, text in cases:
        with pytest.raises(ls.CoreError, match="^DESCRIPTOR ") as info:
            ls.emulate_core(cfg, _stream_with(cfg, packets, word, value))
        assert text in str(info.value), (word, hex(value), str(info.value))
    # Word 7's bits 31:28 are the engine field of interface 2.1: one engine here.
    for value in (0x1000_0000, 0x8000_0000, 0xF000_0000):
        with pytest.raises(ls.CoreError, match="^ENGINE .*engine = "):
            ls.emulate_core(cfg, _stream_with(cfg, packets, 7, value))
    clamped = ls.pack_layer(cfg, tail_case(residual=None, shortcut=None, clamp=(0, 5)))
    with pytest.raises(ls.CoreError, match="^DESCRIPTOR .*clamp_lo <= clamp_hi"):
        ls.emulate_core(cfg, _stream_with(cfg, clamped, 5, 0x0000_0006))   # lo 6 > hi 0
    with pytest.raises(ls.CoreError, match="^DESCRIPTOR .*res_shift = 25"):
        ls.emulate_core(cfg, _stream_with(cfg, ls.pack_layer(cfg, tail_case()), 6, 0x19_0000))
    residual = tail_case()
    res_packets = ls.pack_layer(cfg, residual)
    shortcut = [p for p in res_packets if p.type == "SHORTCUT"]
    with pytest.raises(ls.CoreError, match="^OVERRUN .*SHORTCUT"):
        ls.emulate_core(cfg, packets + shortcut[:1])
    with pytest.raises(ls.CoreError, match="^OVERRUN .*SHORTCUT"):
        ls.emulate_core(cfg, res_packets + shortcut[-1:])
    with pytest.raises(ValueError, match="SHORTCUT"):
        ls.emulate_core(cfg, res_packets[:-1])
    assert ls.emulate_core(cfg, res_packets) == ls.expected_beats(cfg, residual)


def test_matmul_with_a_shortcut():
    """``Layer.matmul`` takes the shortcut as ``[M, N]``, like the product: the result is
    ``fused_tail`` of ``matmul_layer``'s."""
    from mulfree.params.layer_golden import fused_tail, matmul_layer
    e = ENGINES["mult3x5"]
    cfg = CoreConfig(e)
    rng = np.random.default_rng(12)
    x, w = rng.integers(-64, 64, (13, 10)), rng.integers(-16, 16, (10, 7))
    post = PostParams(rng.integers(-9, 9, 7), np.full(7, 5), False)
    short = rng.integers(-64, 64, (13, 7))
    res = ResidualParams(1, 1, 2, True)
    layer = ls.Layer.matmul(x, w, post, shortcut=short, residual=res, clamp=(-20, 30))
    want = fused_tail(e.act_bits, matmul_layer(e, x, w, post), shortcut=short, residual=res,
                      clamp=(-20, 30))
    got = ls.expected_output(cfg, layer)
    assert got.shape == (7, 1, 13) and len(np.unique(want)) > 5
    np.testing.assert_array_equal(got[:, 0, :], want.T)
    assert ls.emulate_core(cfg, ls.pack_layer(cfg, layer)) == ls.expected_beats(cfg, layer)
    with pytest.raises(ls.LayerError, match="^shortcut must be \\[M, N\\]"):
        ls.Layer.matmul(x, w, post, shortcut=short[None], residual=res)
