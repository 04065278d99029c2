"""Tests of :mod:`mulfree.host.layer_stream`: stream packer, golden output, core emulator.

The main check runs random layers two independent ways: the golden output (shift, then
``conv2d_layer``) packed as result beats, against the emulator that parses the packed input
stream and computes tile by tile through ``array_forward``. The bit layout and the descriptor
are also checked against values worked out by hand from ``docs/interface.md``.
"""

import numpy as np
import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CORE_ERRORS, PACKET_TYPES, CoreConfig
from mulfree.params.post_config import shift_width
from mulfree.host import layer_stream as ls
from mulfree.params.layer_golden import PostParams, conv2d_acc, matmul_layer
from mulfree.params.shift_golden import table_shift


ENGINES = {
    "shift3x5": ArrayConfig(pe="shift", rows=3, cols=5, act_bits=6),
    "adder4x4": ArrayConfig(pe="adder", rows=4, cols=4, act_bits=5),
    "mult3x5": ArrayConfig(pe="mult", rows=3, cols=5, act_bits=7, weight_bits=5),
    "shift8x8": ArrayConfig(pe="shift", rows=8, cols=8, act_bits=8, weight_bits=5),
    "mult_tree5x3": ArrayConfig(pe="mult", arch="tree", rows=5, cols=3, act_bits=6),
}
WIDTHS = (32, 64, 128)


# Random layers --------------------------------------------------------------------------------

def random_codes(e, rng, shape):
    lo, hi = (0, (1 << e.code_width) - 1) if e.pe == "shift" else e.weight_range
    return rng.integers(lo, hi + 1, shape)


def random_post(e, rng, acc):
    """Post-processing that keeps the outputs varied: the shift scales the accumulators' spread
    to about the activations' range, so few results saturate."""
    out_c = acc.shape[0]
    spread = int(np.abs(acc).max()) + 1
    base = max(0, spread.bit_length() - (e.act_bits - 1))
    shift = np.clip(base + rng.integers(-1, 2, out_c), -e.act_bits, None)
    bias = rng.integers(-(1 << base + 2), (1 << base + 2) + 1, out_c)
    return PostParams(bias, shift, rng.integers(0, 2, out_c).astype(bool))


def random_layer(e, rng, in_c, in_h, in_w, out_c, kernel=(1, 1), stride=1, padding=0,
                 shifts=False, m_block=None):
    lo, hi = e.act_range
    x = rng.integers(lo, hi + 1, (in_c, in_h, in_w))
    w = random_codes(e, rng, (out_c, in_c, *kernel))
    table = rng.integers(-1, 2, (in_c, 2)) if shifts else None
    xs = x if table is None else table_shift(x, table[:, 0], table[:, 1])
    post = random_post(e, rng, conv2d_acc(e, xs, w, stride, padding))
    return ls.Layer(x, w, post, stride=stride, padding=padding, shifts=table, m_block=m_block)


def random_matmul(e, rng, m, k, n, m_block=None):
    lo, hi = e.act_range
    x = rng.integers(lo, hi + 1, (m, k))
    w = random_codes(e, rng, (k, n))
    post = random_post(e, rng, conv2d_acc(e, x.T[:, None, :], w.T[:, :, None, None]))
    return ls.Layer.matmul(x, w, post, m_block=m_block)


LAYERS = {
    "matmul_37x11x7": lambda e, rng: random_matmul(e, rng, 37, 11, 7),
    "conv3x3_s2_p1": lambda e, rng: random_layer(e, rng, 5, 9, 7, 6, (3, 3), 2, 1),
    "conv1x1_shift": lambda e, rng: random_layer(e, rng, 7, 6, 5, 4, shifts=True),
    "conv2x3_s12_p12": lambda e, rng: random_layer(e, rng, 4, 5, 8, 9, (2, 3), (1, 2), (1, 2)),
    "conv3x3_shift_mblock5": lambda e, rng: random_layer(e, rng, 6, 5, 6, 5, (3, 3), 1, 1,
                                                         shifts=True, m_block=5),
}


def seed(*names):
    return sum(ord(c) * (i + 1) for i, c in enumerate("/".join(map(str, names))))


# The emulator against the golden output -------------------------------------------------------

@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind", LAYERS)
def test_emulator_matches_golden(kind, engine, width):
    e = ENGINES[engine]
    cfg = CoreConfig(e, stream_width=width)
    layer = LAYERS[kind](e, np.random.default_rng(seed(kind, engine, width)))
    want = ls.expected_output(cfg, layer)
    assert len(np.unique(want)) > 3, "degenerate outputs would hide errors"
    beats = ls.expected_beats(cfg, layer)
    got = ls.emulate_core(cfg, ls.pack_layer(cfg, layer))
    assert len(got) == len(beats)
    bad = [i for i, (g, b) in enumerate(zip(got, beats)) if g != b]
    assert not bad, f"beat {bad[0]}: emulator 0x{got[bad[0]]:x}, golden 0x{beats[bad[0]]:x}"
    np.testing.assert_array_equal(ls.unpack_results(cfg, layer, beats), want)


@pytest.mark.parametrize("m_block", [1, 2, 7, 18, 40])
def test_block_sizes(m_block):
    """Any block length gives the same results, in the block order of the doc."""
    e = ENGINES["adder4x4"]
    cfg = CoreConfig(e, stream_width=32, acc_entries=64)
    layer = random_layer(e, np.random.default_rng(m_block), 6, 7, 5, 7, (3, 3), 1, 1,
                         m_block=m_block)
    assert ls.emulate_core(cfg, ls.pack_layer(cfg, layer)) == ls.expected_beats(cfg, layer)


def test_matmul_is_a_1x1_convolution():
    e = ENGINES["mult3x5"]
    cfg = CoreConfig(e)
    rng = np.random.default_rng(1)
    x, w = rng.integers(-64, 64, (13, 10)), rng.integers(-16, 16, (10, 6))
    post = PostParams(rng.integers(-9, 9, 6), np.full(6, 4), True)
    layer = ls.Layer.matmul(x, w, post)
    g = ls.layer_geometry(cfg, layer)
    assert (g["in_c"], g["in_h"], g["in_w"], g["out_c"], g["out_h"], g["out_w"]) == \
        (10, 1, 13, 6, 1, 13)
    want = matmul_layer(e, x, w, post)                      # [M, N]
    np.testing.assert_array_equal(ls.expected_output(cfg, layer)[:, 0, :], want.T)


def rechunk(cfg, packet, sizes):
    """``packet`` cut into packets of ``sizes`` vectors (cycled), same vectors."""
    per = cfg.beats(cfg.vector_bits[packet.type])
    body, out, start, i = packet.beats[1:], [], 0, 0
    while start < packet.count:
        n = min(sizes[i % len(sizes)], packet.count - start)
        header = PACKET_TYPES[packet.type] | n << 8
        out.append(ls.Packet(packet.type, n, [header] + body[start * per:(start + n) * per]))
        start, i = start + n, i + 1
    return out


@pytest.mark.parametrize("width", [32, 128])
def test_any_order_any_chunks(width):
    """Data packets may come in any order and chunks: each continues its type."""
    e = ENGINES["shift3x5"]
    cfg = CoreConfig(e, stream_width=width)
    layer = LAYERS["conv3x3_shift_mblock5"](e, np.random.default_rng(width))
    packets = ls.pack_layer(cfg, layer)
    pieces = [q for p in packets[1:] for q in rechunk(cfg, p, [1, 3, 2, 7])]
    types = [p.type for p in pieces]
    np.random.default_rng(2).shuffle(types)
    # The types come shuffled; the chunks of one type keep their order.
    queues = {t: [p for p in pieces if p.type == t] for t in set(types)}
    stream = [packets[0]] + [queues[t].pop(0) for t in types]
    assert [p.type for p in stream[1:]] != [p.type for p in pieces]
    assert len(stream) > 20
    assert ls.emulate_core(cfg, stream) == ls.expected_beats(cfg, layer)


def test_reuse_weights():
    e = ENGINES["mult3x5"]
    cfg = CoreConfig(e, stream_width=64)
    rng = np.random.default_rng(3)
    first = random_layer(e, rng, 5, 6, 6, 7, (3, 3), 1, 1, shifts=True)
    x2 = rng.integers(*e.act_range, first.x.shape)
    second = ls.Layer(x2, first.w_codes, first.post, first.stride, first.padding,
                      first.shifts, reuse_weights=True)
    packets = ls.pack_layer(cfg, second)
    assert [p.type for p in packets] == ["DESC", "ACTS"]
    with pytest.raises(ls.CoreError, match="REUSE") as info:
        ls.emulate_core(cfg, packets)
    assert info.value.name == "REUSE" and info.value.code == 7
    state = ls.CoreState()
    assert ls.emulate_core(cfg, ls.pack_layer(cfg, first), state=state) == \
        ls.expected_beats(cfg, first)
    assert ls.emulate_core(cfg, packets, state=state) == ls.expected_beats(cfg, second)
    assert ls.emulate_core(cfg, packets, state=state) == ls.expected_beats(cfg, second)
    # The core compares the weight rows, out_c and the shift table's tiles.
    no_shift = ls.Layer(x2, first.w_codes, first.post, 1, 1, reuse_weights=True)
    fewer = ls.Layer(x2, first.w_codes[:6], PostParams(first.post.bias[:6],
                     first.post.shift[:6], first.post.relu[:6]), 1, 1, first.shifts,
                     reuse_weights=True)
    for other in (no_shift, fewer):
        state = ls.CoreState()
        ls.emulate_core(cfg, ls.pack_layer(cfg, first), state=state)
        with pytest.raises(ls.CoreError, match="REUSE"):
            ls.emulate_core(cfg, ls.pack_layer(cfg, other), state=state)
        assert state.loaded is None, "an error discards the loaded weights"


# Formats by hand ------------------------------------------------------------------------------

def conv_case(**kwargs):
    """in_c 5, a 9x7 map, 6 output channels, 3x3 kernel, stride 2, padding 1."""
    x = np.zeros((5, 9, 7), dtype=np.int64)
    w = np.zeros((6, 5, 3, 3), dtype=np.int64)
    post = PostParams(np.zeros(6, np.int64), np.zeros(6, np.int64))
    return ls.Layer(x, w, post, stride=2, padding=1, **kwargs)


def test_descriptor_words_by_hand():
    cfg = CoreConfig()
    layer = conv_case(shifts=np.zeros((5, 2), np.int64), m_block=7)
    # out_h = (9 + 2 - 3) // 2 + 1 = 5, out_w = (7 + 2 - 3) // 2 + 1 = 4
    assert ls.descriptor_words(cfg, layer) == [
        0x0007_0009,        # in_w 7, in_h 9
        0x0006_0005,        # out_c 6, in_c 5
        0x0004_0005,        # out_w 4, out_h 5
        0x1122_0303,        # pad_w 1, pad_h 1, stride_w 2, stride_h 2, kernel_w 3, kernel_h 3
        0x0001_0007,        # flags.shift, m_block 7
        0,                  # clamp_hi, clamp_lo: no clamp
        0,                  # pool_shift, res_shift, res_short_shift, res_main_shift: 0
        0,                  # reserved, short_stride, short_off, short_c: no residual
    ]
    mm = ls.Layer.matmul(np.zeros((37, 11), np.int64), np.zeros((11, 7), np.int64),
                         PostParams(np.zeros(7, np.int64), np.zeros(7, np.int64)),
                         m_block=9, reuse_weights=True)
    assert ls.descriptor_words(cfg, mm) == [37 << 16 | 1, 7 << 16 | 11, 37 << 16 | 1,
                                            0x0011_0101, 2 << 16 | 9, 0, 0, 0]
    desc = ls.pack_layer(cfg, layer)[0]           # S = 64: 4 beats
    assert desc.type == "DESC" and desc.count == 1
    assert desc.beats == [0x101, 0x0006_0005_0007_0009, 0x1122_0303_0004_0005, 0x0001_0007,
                          0]


def tiny_case():
    """S = 32, rows 3, cols 2, act_bits 12: an ACTS vector (36 bits) straddles two beats."""
    e = ArrayConfig(pe="mult", rows=3, cols=2, act_bits=12, weight_bits=5)
    cfg = CoreConfig(e, stream_width=32)
    x = np.array([[[0x123, 5]], [[-1, -2048]], [[0x7FF, 0]]])          # [3, 1, 2]
    w = np.array([[1, -1, 15], [-16, 2, 0]])[:, :, None, None]         # [2, 3, 1, 1]
    post = PostParams(np.array([3, -1]), np.array([-1, 2]), np.array([True, False]))
    return cfg, ls.Layer(x, w, post)


def test_bit_layout_by_hand():
    cfg, layer = tiny_case()
    assert (cfg.engine.acc_width, shift_width(cfg.engine)) == (27, 6)  # PARAMS: 34 bits
    packets = ls.pack_layer(cfg, layer)
    assert [(p.type, p.count) for p in packets] == \
        [("DESC", 1), ("PARAMS", 2), ("ACTS", 2), ("WEIGHTS", 3)]
    assert packets[0].beats == [0x101, 0x0002_0001, 0x0002_0003, 0x0002_0001, 0x0011_0101,
                                0x0000_0002, 0, 0, 0]
    # PARAMS: bias [0, 27), shift [27, 33), relu bit 33.
    # ch 0: bias 3, shift -1 = 0b111111, relu 1; ch 1: bias -1 = 27 ones, shift 2, relu 0.
    assert packets[1].beats == [0x202, 0xF800_0003, 0x3, 0x17FF_FFFF, 0x0]
    # ACTS: pixel 0 = (0x123, -1, 0x7FF) = 0x7_FFF_FF_123; pixel 1 = (5, -2048, 0) = 0x800005.
    assert packets[2].beats == [0x205, 0xFFFF_F123, 0x7, 0x0080_0005, 0x0]
    # WEIGHTS row r = codes of (out 0, out 1) for input channel r, 5 bits each.
    assert packets[3].beats == [0x304, 1 | 0x10 << 5, 0x1F | 2 << 5, 15]
    assert ls.stream_beats(packets)[:3] == [(0x101, False), (0x2_0001, False),
                                            (0x2_0003, False)]
    assert [last for _, last in ls.stream_beats(packets)].count(True) == 4


def test_result_layout_by_hand():
    cfg, layer = tiny_case()
    # acc = x . w per pixel: pixel 0 = (0x123 + 1 + 15*0x7FF, -16*0x123 - 2) = (30997, -4658)
    # ch 0: (30997 + 3) << 1 saturates to 2047; ch 1: (-4658 - 1) / 4 = -1164.75 -> -1165
    # pixel 1 = (5 + 2048, -80 - 4096) = (2053, -4176); ch 0: 4112 -> 2047; ch 1: -1044.25 -> -1044
    want = np.array([[[2047, 2047]], [[-1165, -1044]]])
    np.testing.assert_array_equal(ls.expected_output(cfg, layer), want)
    beats = ls.expected_beats(cfg, layer)     # OUT: 2 x 12 bits, one beat per pixel
    assert beats == [(-1165 & 0xFFF) << 12 | 0x7FF, (-1044 & 0xFFF) << 12 | 0x7FF]
    assert ls.emulate_core(cfg, ls.pack_layer(cfg, layer)) == beats
    np.testing.assert_array_equal(ls.unpack_results(cfg, layer, [0x800123, 0xFFF]),
                                  [[[0x123, -1]], [[-2048, 0]]])
    with pytest.raises(ValueError, match="bits set above bit 23"):
        ls.unpack_results(cfg, layer, [0x1800123, 0xFFF])
    with pytest.raises(ValueError, match="2 vectors of 1 beats = 2 beats, not 3"):
        ls.unpack_results(cfg, layer, beats + [0])


def test_unpack_checks_lanes_beyond_out_c():
    e = ArrayConfig(pe="mult", rows=2, cols=4, act_bits=4)
    cfg = CoreConfig(e, stream_width=32)
    layer = ls.Layer(np.zeros((2, 1, 1), np.int64), np.zeros((3, 2, 1, 1), np.int64),
                     PostParams(np.zeros(3, np.int64), np.zeros(3, np.int64)))
    np.testing.assert_array_equal(ls.unpack_results(cfg, layer, [0x0321]), [[[1]], [[2]], [[3]]])
    with pytest.raises(ValueError, match="channel 3 >= out_c = 3"):
        ls.unpack_results(cfg, layer, [0x5321])


def test_packet_order_and_first_block():
    """DESC, PARAMS, SHIFT, the ACTS the first block reads, WEIGHTS, the rest of the ACTS."""
    e = ENGINES["shift3x5"]                      # rows 3: one channel tile for 2 channels
    cfg = CoreConfig(e, stream_width=64)
    rng = np.random.default_rng(4)
    layer = random_layer(e, rng, 2, 10, 6, 4, (3, 3), 1, 1, m_block=8)
    # Block 0 = pixels 0..7, the last (oy, ox) = (1, 1) reads up to (2, 2): address 2*6+2.
    assert [(p.type, p.count) for p in ls.pack_layer(cfg, layer)] == \
        [("DESC", 1), ("PARAMS", 4), ("ACTS", 15), ("WEIGHTS", 9 * 3), ("ACTS", 45)]
    shifted = ls.Layer(layer.x, layer.w_codes, layer.post, 1, 1,
                       shifts=np.array([[0, 0], [1, 1]]), m_block=8)
    # Channel 1 reads one pixel down and right: up to (3, 3) = address 21.
    assert [(p.type, p.count) for p in ls.pack_layer(cfg, shifted)] == \
        [("DESC", 1), ("PARAMS", 4), ("SHIFT", 1), ("ACTS", 22), ("WEIGHTS", 27), ("ACTS", 38)]
    g = ls.layer_geometry(cfg, shifted)
    assert (g["CT"], g["NT"], g["KT"], g["M"], g["K"]) == (1, 1, 9, 60, 18)
    assert g["counts"] == {"PARAMS": 4, "SHIFT": 1, "WEIGHTS": 27, "ACTS": 60, "SHORTCUT": 0}


def test_weight_rows_order():
    """Row ``(nt*KT + kt)*R + r`` with ``kt = (ky*kw + kx)*CT + ct``: code ``j`` is
    ``w[nt*C + j, ct*R + r, ky, kx]``. Each weight gets a distinct code to find it back."""
    e = ArrayConfig(pe="mult", rows=2, cols=2, act_bits=8, weight_bits=8)
    cfg = CoreConfig(e, stream_width=32)
    out_c, in_c, kh, kw = 3, 3, 2, 3
    w = np.arange(out_c * in_c * kh * kw).reshape(out_c, in_c, kh, kw) + 1
    layer = ls.Layer(np.zeros((in_c, 4, 4), np.int64), w,
                     PostParams(np.zeros(out_c, np.int64), np.zeros(out_c, np.int64)))
    packets = [p for p in ls.pack_layer(cfg, layer) if p.type == "WEIGHTS"]
    rows = [b for p in packets for b in p.beats[1:]]
    ct_n, kt_n = 2, kh * kw * 2
    assert len(rows) == 2 * kt_n * 2
    for nt in range(2):
        for ky in range(kh):
            for kx in range(kw):
                for ct in range(ct_n):
                    for r in range(2):
                        row = rows[(nt * kt_n + (ky * kw + kx) * ct_n + ct) * 2 + r]
                        for j in range(2):
                            o, c = nt * 2 + j, ct * 2 + r
                            want = w[o, c, ky, kx] if o < out_c and c < in_c else 0
                            assert (row >> 8 * j) & 0xFF == want, (nt, ky, kx, ct, r, j)


# Block size -----------------------------------------------------------------------------------

@pytest.mark.parametrize("engine", ENGINES)
def test_hazard_window(engine):
    """The host's number (NumPy only) is the one the RTL's issue unit uses."""
    from mulfree.rtl.layer_issue import hazard_window as rtl_hazard_window
    cfg = CoreConfig(ENGINES[engine])
    assert ls.hazard_window(cfg) == cfg.engine.latency + 12 == rtl_hazard_window(cfg)
    assert ls.hazard_window(CoreConfig(ArrayConfig(rows=8))) == 8 + 2 + 12


@pytest.mark.parametrize("m, acc_entries, want", [
    (1000, 256, 44),       # window 22: target 44, 23 blocks of 44 (the last 32)
    (40, 256, 40),         # one block: shorter than the target
    (90, 256, 30),         # three even blocks of 30, not 44 + 44 + a short tail of 2
    (50, 256, 25),
    (36, 256, 36),
    (10, 256, 10),         # one block: M
    (1000, 16, 16),        # capped by the accumulator
])
def test_choose_m_block(m, acc_entries, want):
    cfg = CoreConfig(ArrayConfig(rows=8), acc_entries=acc_entries)
    assert ls.choose_m_block(cfg, {"M": m}) == want


def test_choose_m_block_bounds():
    for rows in (2, 8, 40):
        cfg = CoreConfig(ArrayConfig(rows=rows, max_k=max(rows, 64)), acc_entries=200)
        window = ls.hazard_window(cfg)
        for m in range(1, 400, 7):
            b = ls.choose_m_block(cfg, {"M": m})
            assert 1 <= b <= min(m, cfg.acc_entries)
            assert b >= min(window, m, cfg.acc_entries)


# Layer checks ---------------------------------------------------------------------------------

def _replace(layer, **kwargs):
    fields = dict(x=layer.x, w_codes=layer.w_codes, post=layer.post, stride=layer.stride,
                  padding=layer.padding, shifts=layer.shifts, m_block=layer.m_block,
                  reuse_weights=layer.reuse_weights, shortcut=layer.shortcut,
                  residual=layer.residual, clamp=layer.clamp)
    fields.update(kwargs)
    return ls.Layer(**fields)


BAD_LAYERS = [
    # (what, cfg kwargs, layer changes, param, core error, text in the message)
    ("stride 0", {}, dict(stride=(0, 1)), "stride_h", "DESCRIPTOR", "[1, 15], not 0"),
    ("stride 16", {}, dict(stride=(1, 16)), "stride_w", "DESCRIPTOR", "[1, 15], not 16"),
    ("pad >= kernel", {}, dict(padding=(3, 0)), "pad_h", "DESCRIPTOR", "kernel_h = 3"),
    ("kernel > map", {}, dict(x=np.zeros((5, 1, 7), np.int64), padding=0), "kernel_h",
     "DESCRIPTOR", "not 3"),
    ("m_block 0", {}, dict(m_block=0), "m_block", "DESCRIPTOR", "not 0"),
    ("m_block > acc", {}, dict(m_block=257), "m_block", "TOO_BIG", "acc_entries = 256"),
    ("in_h too wide", {"fmap_vectors": 1 << 20}, dict(x=np.zeros((5, 70000, 1), np.int8),
                                                      padding=(1, 1)),
     "in_h", "DESCRIPTOR", "[1, 65535], not 70000"),
    ("in_c > channels", {"max_channels": 6, "engine": ArrayConfig(max_k=4096)},
     dict(x=np.zeros((7, 9, 7), np.int64), w_codes=np.zeros((6, 7, 3, 3), np.int64),
          shifts=np.zeros((7, 2), np.int64)), "in_c", "TOO_BIG", "max_channels = 6, not 7"),
    ("out_c > channels", {"max_channels": 5}, {}, "out_c", "TOO_BIG", "not 6"),
    ("K > max_k", {"engine": ArrayConfig(max_k=44)}, {}, "K", "TOO_BIG", "max_k = 44, not 45"),
    ("fmap", {"fmap_vectors": 62}, {}, "x", "TOO_BIG", "fmap_vectors = 62, not 63"),
    ("weights", {"weight_rows": 71}, {}, "w_codes", "TOO_BIG", "weight_rows = 71, not 72"),
    ("x range", {}, dict(x=np.full((5, 9, 7), 128)), "x", None, "[-128, 127]"),
    ("code range", {}, dict(w_codes=np.full((6, 5, 3, 3), 16)), "w_codes", None, "[0, 15]"),
    ("w shape", {}, dict(w_codes=np.zeros((6, 4, 3, 3), np.int64)), "w_codes", None,
     "in_c=5"),
    ("bias range", {}, dict(post=PostParams(np.full(6, 1 << 40), np.zeros(6, np.int64))),
     "post.bias", None, "outside"),
    ("post shift", {}, dict(post=PostParams(np.zeros(6, np.int64), np.full(6, -9))),
     "post.shift", None, "[-8,"),
    ("relu", {}, dict(post=PostParams(np.zeros(6, np.int64), np.zeros(6, np.int64),
                                      np.ones(5, bool))), "post.relu", None, "6 bools"),
    ("shift value", {}, dict(shifts=np.full((5, 2), -2)), "shifts", None, "[-1, 1]"),
    ("shift shape", {}, dict(shifts=np.zeros((4, 2), np.int64)), "shifts", None, "(5, 2)"),
]


@pytest.mark.parametrize("what, cfg_kwargs, change, param, core_error, text", BAD_LAYERS,
                         ids=[case[0] for case in BAD_LAYERS])
def test_check_layer_errors(what, cfg_kwargs, change, param, core_error, text):
    cfg = CoreConfig(**cfg_kwargs)
    good = conv_case()
    with pytest.raises(ls.LayerError) as info:
        ls.check_layer(cfg, _replace(good, **change))
    assert isinstance(info.value, ValueError)
    assert info.value.param == param and param in str(info.value)
    assert info.value.core_error == core_error
    assert text in str(info.value), str(info.value)
    with pytest.raises(ls.LayerError):
        ls.pack_layer(cfg, _replace(good, **change))


def test_good_layer_passes():
    cfg = CoreConfig(fmap_vectors=63, weight_rows=72, max_channels=6,
                     engine=ArrayConfig(max_k=45))
    ls.check_layer(cfg, conv_case(shifts=np.ones((5, 2), np.int64), m_block=256))
    # max_channels bounds in_c only for a layer with a shift (the shift table's size).
    wide = _replace(conv_case(), x=np.zeros((7, 9, 7), np.int64),
                    w_codes=np.zeros((6, 7, 3, 3), np.int64))
    ls.check_layer(CoreConfig(max_channels=6), wide)


# Malformed streams ----------------------------------------------------------------------------

def small_case(width=32):
    e = ENGINES["shift3x5"]
    cfg = CoreConfig(e, stream_width=width)
    layer = random_layer(e, np.random.default_rng(5), 4, 6, 5, 6, (3, 3), 1, 1, shifts=True,
                         m_block=5)
    return cfg, layer, ls.pack_layer(cfg, layer)


def beats_of(packets):
    return [list(pair) for pair in ls.stream_beats(packets)]


def index_of(packets, type_name, which=0):
    """Beat index of the header of the ``which``-th packet of ``type_name``."""
    starts, at = [], 0
    for p in packets:
        if p.type == type_name:
            starts.append(at)
        at += len(p.beats)
    return starts[which]


def with_descriptor(cfg, packets, change):
    """``packets`` with descriptor word ``w`` replaced by ``change(words)[w]``."""
    value = sum(b << (cfg.stream_width * i) for i, b in enumerate(packets[0].beats[1:]))
    words = [(value >> (32 * w)) & 0xFFFF_FFFF for w in range(7)]
    words = change(words)
    vector = sum(wd << (32 * w) for w, wd in enumerate(words))
    s = cfg.stream_width
    body = [(vector >> (s * i)) & ((1 << s) - 1) for i in range(len(packets[0].beats) - 1)]
    return [ls.Packet("DESC", 1, [packets[0].beats[0]] + body)] + packets[1:]


def _set(words, w, lo, width, value):
    words = list(words)
    words[w] = words[w] & ~(((1 << width) - 1) << lo) | value << lo
    return words


def corrupt(name, cfg, packets):
    """The stream of ``packets`` broken so that the core stops with error ``name``."""
    beats = beats_of(packets)
    if name == "PACKET type":
        beats[index_of(packets, "PARAMS")][0] = beats[index_of(packets, "PARAMS")][0] & ~0xF | 7
    elif name == "PACKET reserved":
        beats[index_of(packets, "ACTS")][0] |= 1 << 4
    elif name == "PACKET before descriptor":
        beats = beats[len(packets[0].beats):]
    elif name == "PACKET descriptor count":
        beats[0][0] = 0x201
    elif name == "PACKET count 0":
        beats[index_of(packets, "WEIGHTS")][0] &= 0xFF
        beats[index_of(packets, "WEIGHTS")][1] = True
    elif name == "SHORT":
        end = index_of(packets, "PARAMS") + len(packets[1].beats) - 1
        beats[end - 1][1] = True
        del beats[end]
    elif name == "LONG":
        beats[index_of(packets, "SHIFT") + len(packets[2].beats) - 1][1] = False
    elif name == "OVERRUN":
        beats += beats_of([packets[-1]])
    elif name == "DESC_IN_RUN":
        beats += beats_of([packets[0]])
    elif name == "SHIFT_VALUE":
        beats[index_of(packets, "SHIFT") + 1][0] &= ~(0b11 << 4)
        beats[index_of(packets, "SHIFT") + 1][0] |= 0b10 << 4      # channel 1: dy = -2
    elif name == "SHIFT_VALUE before LONG":
        beats[index_of(packets, "SHIFT") + 1][0] &= ~0xF
        beats[index_of(packets, "SHIFT") + 1][0] |= 0b1010                # channel 0: -2, -2
        beats[index_of(packets, "SHIFT") + len(packets[2].beats) - 1][1] = False
    elif name == "SHORT header":
        beats[index_of(packets, "WEIGHTS")][1] = True
    elif name == "PACKET second descriptor of 2":
        beats += [[0x201, False]] + beats[1:len(packets[0].beats)]
    elif name == "SHIFT_VALUE dx":
        beats[index_of(packets, "SHIFT") + 1][0] &= ~(0b11 << 10)
        beats[index_of(packets, "SHIFT") + 1][0] |= 0b10 << 10     # channel 2: dx = -2
    elif name.startswith("DESCRIPTOR") or name.startswith("TOO_BIG"):
        change = {
            "DESCRIPTOR pad": lambda w: _set(w, 3, 24, 4, 3),
            "DESCRIPTOR zero": lambda w: _set(w, 1, 0, 16, 0),
            "DESCRIPTOR out_w": lambda w: _set(w, 2, 16, 16, 4),
            "DESCRIPTOR flags": lambda w: _set(w, 4, 27, 1, 1),   # flag 11: reserved
            "DESCRIPTOR reserved word 4": lambda w: _set(w, 4, 31, 1, 1),
            "TOO_BIG m_block": lambda w: _set(w, 4, 0, 16, 300),
            "TOO_BIG in_c": lambda w: _set(w, 1, 0, 16, 600),
        }[name]
        beats = beats_of(with_descriptor(cfg, packets, change))
    return [tuple(b) for b in beats]


ERRORS = ["PACKET type", "PACKET reserved", "PACKET before descriptor",
          "PACKET descriptor count", "PACKET count 0", "SHORT", "LONG", "OVERRUN",
          "DESC_IN_RUN", "SHIFT_VALUE", "SHIFT_VALUE dx", "SHIFT_VALUE before LONG",
          "SHORT header", "PACKET second descriptor of 2", "DESCRIPTOR pad", "DESCRIPTOR zero",
          "DESCRIPTOR out_w", "DESCRIPTOR flags", "DESCRIPTOR reserved word 4",
          "TOO_BIG m_block", "TOO_BIG in_c"]


@pytest.mark.parametrize("width", [32, 64])
@pytest.mark.parametrize("error", ERRORS)
def test_emulator_errors(error, width):
    cfg, layer, packets = small_case(width)
    assert [p.type for p in packets] == ["DESC", "PARAMS", "SHIFT", "ACTS", "WEIGHTS", "ACTS"]
    good = [tuple(b) for b in beats_of(packets)]
    assert ls.emulate_core(cfg, good) == ls.expected_beats(cfg, layer)
    name = error.split()[0]
    state = ls.CoreState(loaded={"stale": True})
    with pytest.raises(ls.CoreError, match=f"^{name} ") as info:
        ls.emulate_core(cfg, corrupt(error, cfg, packets), state=state)
    assert info.value.name == name
    assert info.value.code == {c[1]: c[0] for c in CORE_ERRORS}[name]
    assert state.loaded is None


def test_emulator_incomplete_stream():
    cfg, layer, packets = small_case()
    with pytest.raises(ValueError, match="ACTS"):
        ls.emulate_core(cfg, packets[:-1])
    beats = ls.stream_beats(packets)
    with pytest.raises(ValueError, match="ends inside"):
        ls.emulate_core(cfg, beats[:-1])
    with pytest.raises(ValueError, match="no descriptor"):
        ls.emulate_core(cfg, [])
