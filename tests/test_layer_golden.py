"""Tests of the layer golden model (:mod:`mulfree.params.layer_golden`) against pure Python.

The references below use Python integers and loops, written from ``docs/numerics.md``
("Post-processing and layers"); the rounding reference uses :class:`fractions.Fraction`, so
it does not share the golden model's bit trick.
"""

import itertools
import math
import random
from fractions import Fraction

import numpy as np
import pytest

from mulfree.params.config import ArrayConfig, ConfigError
from mulfree.params.post_config import bias_range, shift_range
from mulfree.params import layer_golden as lg
from mulfree.params.golden import encode_shift


# Independent reference ----------------------------------------------------------------------

def ref_post(acc, bias, shift, relu, act_bits):
    """``sat(relu?(round_half_up((acc + bias) / 2^shift)))`` on Python integers."""
    value = Fraction(acc + bias, 1) / Fraction(2) ** shift
    v = math.floor(value + Fraction(1, 2))      # round half up (exact for left shifts too)
    if relu:
        v = max(v, 0)
    lo, hi = -2 ** (act_bits - 1), 2 ** (act_bits - 1) - 1
    return min(max(v, lo), hi)


def ref_term(cfg, x, code):
    if cfg.pe == "shift":
        s, e = code >> (cfg.weight_bits - 1), code % 2 ** (cfg.weight_bits - 1)
        return 0 if e == 0 else (-1 if s else 1) * x * 2 ** (e - 1)
    if cfg.pe == "adder":
        return -abs(x - code)
    return x * code


def ref_matmul(cfg, x, w):
    m, k, n = len(x), len(w), len(w[0])
    return [[sum(ref_term(cfg, x[i][t], w[t][j]) for t in range(k)) for j in range(n)]
            for i in range(m)]


def ref_conv(cfg, x, w, stride, padding):
    """Direct convolution: loops over output pixels and the kernel, 0 outside the map."""
    kout, c_in, kh, kw = len(w), len(w[0]), len(w[0][0]), len(w[0][0][0])
    h, wd = len(x[0]), len(x[0][0])
    oh = (h + 2 * padding - kh) // stride + 1
    ow = (wd + 2 * padding - kw) // stride + 1
    out = [[[0] * ow for _ in range(oh)] for _ in range(kout)]
    for o, oy, ox in itertools.product(range(kout), range(oh), range(ow)):
        total = 0
        for c, ky, kx in itertools.product(range(c_in), range(kh), range(kw)):
            yy, xx = oy * stride - padding + ky, ox * stride - padding + kx
            pixel = x[c][yy][xx] if 0 <= yy < h and 0 <= xx < wd else 0
            total += ref_term(cfg, pixel, w[o][c][ky][kx])
        out[o][oy][ox] = total
    return out


def random_codes(cfg, rng, shape):
    if cfg.pe == "shift":
        return rng.integers(0, 1 << cfg.code_width, size=shape)
    lo, hi = cfg.weight_range
    return rng.integers(lo, hi + 1, size=shape)


def random_acts(cfg, rng, shape):
    lo, hi = cfg.act_range
    return rng.integers(lo, hi + 1, size=shape)


CONFIGS = [
    ArrayConfig(pe="shift", rows=3, cols=2, act_bits=5, weight_bits=4, max_k=64),
    ArrayConfig(pe="adder", rows=4, cols=3, act_bits=4, max_k=64),
    ArrayConfig(pe="mult", rows=2, cols=5, act_bits=6, weight_bits=5, max_k=64),
]
IDS = [c.pe for c in CONFIGS]


# Post-processing -----------------------------------------------------------------------------

def test_round_half_up_every_tie():
    # Every tie rounds towards +inf: -2.5 -> -2, -0.5 -> 0, 0.5 -> 1, 2.5 -> 3.
    y = np.arange(-40, 41)
    for s in range(0, 6):
        got = lg.round_shift(y, np.full(y.shape, s))
        want = [math.floor(Fraction(int(v), 2 ** s) + Fraction(1, 2)) for v in y]
        assert got.tolist() == want, s
    assert lg.round_shift(np.array([-5, -3, -1, 1, 3, 5]), 1).tolist() == [-2, -1, 0, 1, 2, 3]


def test_round_shift_extreme_values_do_not_overflow():
    big = np.array([-(1 << 63), (1 << 63) - 1, -1, 0, 1], dtype=np.int64)
    for s in (1, 2, 62, 63, 64, 65):
        want = [math.floor(Fraction(int(v), 2 ** s) + Fraction(1, 2)) for v in big]
        assert lg.round_shift(big, s).tolist() == want, s


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_postprocess_random_against_reference(cfg):
    rng = np.random.default_rng(7)
    n = 6
    lo, hi = cfg.acc_range
    blo, bhi = bias_range(cfg)
    slo, shi = shift_range(cfg)
    for trial in range(40):
        # Small accumulators half of the time, so that results are not all saturated.
        scale = hi if trial % 2 else 1 << (cfg.act_bits + 2)
        acc = rng.integers(max(lo, -scale), min(hi, scale) + 1, size=(5, n))
        bias = rng.integers(max(blo, -scale), min(bhi, scale) + 1, size=n)
        shift = rng.integers(slo, shi + 1, size=n)
        relu = rng.integers(0, 2, size=n).astype(bool)
        got = lg.postprocess(cfg, acc, lg.PostParams(bias, shift, relu))
        want = [[ref_post(int(acc[i, c]), int(bias[c]), int(shift[c]), relu[c], cfg.act_bits)
                 for c in range(n)] for i in range(5)]
        assert got.tolist() == want


def test_postprocess_corners():
    cfg = ArrayConfig(pe="mult", rows=2, cols=2, act_bits=4, weight_bits=4, max_k=4)
    alo, ahi = cfg.acc_range
    blo, bhi = bias_range(cfg)
    slo, shi = shift_range(cfg)
    values = sorted({alo, alo + 1, -9, -8, -7, -2, -1, 0, 1, 2, 7, 8, 9, ahi - 1, ahi})
    biases = sorted({blo, -3, 0, 1, bhi})
    shifts = sorted({slo, -2, -1, 0, 1, 2, 3, shi - 1, shi})
    for acc, bias, shift, relu in itertools.product(values, biases, shifts, (False, True)):
        got = lg.postprocess(cfg, np.array([[acc]]),
                             lg.PostParams(np.array([bias]), np.array([shift]), relu))
        assert int(got[0, 0]) == ref_post(acc, bias, shift, relu, 4), (acc, bias, shift, relu)


def test_postprocess_saturates_both_ends_and_shift_zero_is_identity():
    cfg = ArrayConfig(pe="mult", rows=2, cols=2, act_bits=8, weight_bits=8, max_k=16)
    post = lg.PostParams(np.zeros(5, dtype=int), np.zeros(5, dtype=int), False)
    acc = np.array([[-1000, -128, 5, 127, 1000]])
    assert lg.postprocess(cfg, acc, post).tolist() == [[-128, -128, 5, 127, 127]]
    relu = lg.PostParams(np.zeros(5, dtype=int), np.zeros(5, dtype=int), True)
    assert lg.postprocess(cfg, acc, relu).tolist() == [[0, 0, 5, 127, 127]]


def test_postprocess_rejects_out_of_range():
    cfg = ArrayConfig(pe="shift", rows=2, cols=2, act_bits=4, weight_bits=3, max_k=2)
    slo, shi = shift_range(cfg)
    with pytest.raises(ValueError, match="shift"):
        lg.postprocess(cfg, np.zeros((1, 1), dtype=int), lg.PostParams([0], [shi + 1]))
    with pytest.raises(ValueError, match="acc"):
        lg.postprocess(cfg, np.array([[cfg.acc_range[1] + 1]]), lg.PostParams([0], [0]))
    base = ArrayConfig(pe="shift", rows=1, cols=1, act_bits=16, weight_bits=6, max_k=1)
    wide = ArrayConfig(pe="shift", rows=1, cols=1, act_bits=16, weight_bits=6,
                       max_k=base._max_k_for_width(63))
    assert wide.acc_width == 63
    got = lg.postprocess(wide, np.array([[wide.acc_range[0]]]),
                         lg.PostParams([bias_range(wide)[0]], [1]))   # 64-bit y: still exact
    assert got[0, 0] == -(1 << 15)
    widest = ArrayConfig(pe="shift", rows=1, cols=1, act_bits=16, weight_bits=6,
                         max_k=base._max_k_for_width(64))
    assert widest.acc_width == 64
    with pytest.raises(ConfigError, match="acc_width <= 63"):
        lg.postprocess(widest, np.zeros((1, 1), dtype=int), lg.PostParams([0], [0]))


def test_batchnorm_power_of_two_folds_into_signed_shift():
    # AdderNet BN with scale 2^e and bias beta (on the acc grid, before scaling), followed by
    # a requantization by 2^-r: (acc + beta) * 2^e * 2^-r == postprocess with shift = r - e.
    cfg = ArrayConfig(pe="adder", rows=4, cols=4, act_bits=8, max_k=64)
    rng = np.random.default_rng(3)
    acc = rng.integers(-2000, 1, size=(50, 4))
    beta = np.array([1500, 900, 40, 3])
    e = np.array([-3, 0, 2, 5])
    r = np.array([2, 4, 1, 2])
    got = lg.postprocess(cfg, acc, lg.PostParams(beta, r - e, True))
    for i, c in itertools.product(range(50), range(4)):
        bn = Fraction(int(acc[i, c] + beta[c])) * Fraction(2) ** int(e[c])
        v = max(math.floor(bn / 2 ** int(r[c]) + Fraction(1, 2)), 0)
        assert got[i, c] == min(v, 127)


# Layers -------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_matmul_against_loops(cfg):
    rng = np.random.default_rng(11)
    for m, k, n in [(1, 1, 1), (3, 7, 5), (4, 13, 2)]:
        x, w = random_acts(cfg, rng, (m, k)), random_codes(cfg, rng, (k, n))
        assert lg.matmul_acc(cfg, x, w).tolist() == ref_matmul(cfg, x.tolist(), w.tolist())


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("mkn", [(1, 1, 1), (5, 7, 3), (3, 11, 7), (2, 1, 9), (7, 12, 6)])
def test_tiled_equals_direct_for_odd_sizes(cfg, mkn):
    rng = np.random.default_rng(sum(mkn))
    m, k, n = mkn
    x, w = random_acts(cfg, rng, (m, k)), random_codes(cfg, rng, (k, n))
    assert np.array_equal(lg.tiled_matmul(cfg, x, w), lg.matmul_acc(cfg, x, w))


def test_tiled_with_extreme_values_adder():
    # Pad tiles with x = 0, w = 0 add -|0 - 0| = 0 even next to extreme operands.
    cfg = ArrayConfig(pe="adder", rows=4, cols=3, act_bits=4, max_k=16)
    lo, hi = cfg.act_range
    x = np.array([[lo] * 5, [hi] * 5])
    w = np.array([[hi] * 4, [lo] * 4, [hi] * 4, [lo] * 4, [0] * 4])
    assert np.array_equal(lg.tiled_matmul(cfg, x, w), lg.matmul_acc(cfg, x, w))


def test_matmul_k_limit():
    cfg = ArrayConfig(pe="mult", rows=2, cols=2, act_bits=4, weight_bits=4, max_k=5)
    lo, hi = cfg.act_range
    x, w = np.full((1, 5), lo), np.full((5, 1), lo)
    assert lg.matmul_acc(cfg, x, w)[0, 0] == 5 * lo * lo       # the largest sum fits exactly
    with pytest.raises(ValueError, match="max_k"):
        lg.matmul_acc(cfg, np.zeros((1, 6), dtype=int), np.zeros((6, 1), dtype=int))


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
@pytest.mark.parametrize("shape", [
    # (C, H, W, Kout, kh, kw, stride, padding)
    (1, 5, 5, 2, 3, 3, 1, 1), (2, 6, 5, 3, 3, 3, 2, 1), (3, 4, 7, 1, 1, 1, 1, 0),
    (2, 5, 4, 2, 2, 3, 2, 0), (1, 3, 3, 2, 3, 3, 3, 2),
])
def test_conv_against_direct_loops(cfg, shape):
    c, h, w, kout, kh, kw, stride, padding = shape
    rng = np.random.default_rng(c * h * w + kout)
    x = random_acts(cfg, rng, (c, h, w))
    wt = random_codes(cfg, rng, (kout, c, kh, kw))
    got = lg.conv2d_acc(cfg, x, wt, stride, padding)
    assert got.tolist() == ref_conv(cfg, x.tolist(), wt.tolist(), stride, padding)
    oh = lg.conv_output_size(h, kh, stride, padding)
    assert got.shape == (kout, oh, lg.conv_output_size(w, kw, stride, padding))


def test_conv_reduction_index_order():
    # Column (c*kh + ky)*kw + kx of the patch matrix is x[c, oy*s - p + ky, ox*s - p + kx].
    x = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    cols = lg.im2col(x, 2, 3, stride=1, padding=0)
    assert cols.shape == (2 * 2, 2 * 2 * 3)
    for c, ky, kx in itertools.product(range(2), range(2), range(3)):
        assert cols[1 * 2 + 1, (c * 2 + ky) * 3 + kx] == x[c, 1 + ky, 1 + kx]


def test_adder_padding_contributes_minus_abs_w():
    # A 1x1 map of value 0 under a 3x3 kernel with padding 1: every kernel tap but the centre
    # reads a padded pixel, and x = 0 there as well, so acc = -sum |w| over the whole kernel;
    # with a nonzero centre pixel v only the centre term changes.
    cfg = ArrayConfig(pe="adder", rows=4, cols=4, act_bits=6, max_k=64)
    w = np.array([[[[3, -7, 1], [-2, 5, 4], [-9, 0, 6]]]])
    acc = lg.conv2d_acc(cfg, np.zeros((1, 1, 1), dtype=int), w, 1, 1)
    assert acc.tolist() == [[[-int(np.abs(w).sum())]]]
    v = 11
    acc = lg.conv2d_acc(cfg, np.full((1, 1, 1), v), w, 1, 1)
    assert acc[0, 0, 0] == -(int(np.abs(w).sum()) - abs(5)) - abs(v - 5)


def test_shift_padding_contributes_zero():
    cfg = ArrayConfig(pe="shift", rows=4, cols=4, act_bits=6, weight_bits=4, max_k=64)
    w = encode_shift(np.ones((1, 1, 3, 3), dtype=int), np.full((1, 1, 3, 3), 2), 4)
    assert lg.conv2d_acc(cfg, np.full((1, 1, 1), 3), w, 1, 1).tolist() == [[[12]]]


def test_conv_layer_postprocess_channels_first():
    cfg = ArrayConfig(pe="mult", rows=4, cols=4, act_bits=8, weight_bits=4, max_k=64)
    rng = np.random.default_rng(5)
    x, w = random_acts(cfg, rng, (2, 4, 4)), random_codes(cfg, rng, (3, 2, 3, 3))
    post = lg.PostParams(np.array([5, -100, 0]), np.array([3, 4, 0]), np.array([1, 0, 1]))
    acc = lg.conv2d_acc(cfg, x, w, 1, 1)
    got = lg.conv2d_layer(cfg, x, w, 1, 1, post)
    for o, y, xx in itertools.product(range(3), range(4), range(4)):
        assert got[o, y, xx] == ref_post(int(acc[o, y, xx]), int(post.bias[o]),
                                         int(post.shift[o]), post.relu[o], 8)


def test_matmul_layer_postprocess():
    cfg = CONFIGS[0]
    rng = random.Random(2)
    x = np.array([[rng.randint(-16, 15) for _ in range(9)] for _ in range(3)])
    w = np.array([[rng.randint(0, 15) for _ in range(4)] for _ in range(9)])
    post = lg.PostParams(np.array([0, 1, -1, 7]), np.array([1, 2, 0, -1]), False)
    acc = ref_matmul(cfg, x.tolist(), w.tolist())
    got = lg.matmul_layer(cfg, x, w, post)
    assert got.tolist() == [[ref_post(acc[i][j], int(post.bias[j]), int(post.shift[j]), False,
                                      cfg.act_bits) for j in range(4)] for i in range(3)]


# The fused tail: residual add and clamp --------------------------------------------------------

def ref_residual(v, s, main_shift, short_shift, shift, relu, act_bits):
    """The Add node of ``docs/numerics.md`` on Python integers: the exact sum rounded half up
    by ``Fraction`` (no clamp before a left shift: saturation gives the same), relu, sat."""
    total = (v << main_shift) + (s << short_shift)
    r = math.floor(Fraction(total) / Fraction(2) ** shift + Fraction(1, 2))
    if relu:
        r = max(r, 0)
    return min(max(r, -2 ** (act_bits - 1)), 2 ** (act_bits - 1) - 1)


def _tail_case(rng, act_bits):
    lo, hi = -(1 << act_bits - 1), (1 << act_bits - 1) - 1
    v = rng.integers(lo, hi + 1, (3, 4, 5))
    s = rng.integers(lo, hi + 1, (3, 4, 5))
    v.flat[:2], s.flat[:2] = (lo, hi), (lo, hi)            # the extremes, both signs
    return v, s


@pytest.mark.parametrize("act_bits", [2, 5, 8, 16])
def test_fused_tail_against_the_graph_golden(act_bits):
    """``fused_tail`` = the graph golden's Add (two inputs, ``in_shifts`` = the residual's
    shifts) then Clamp, and ``residual_add`` = the Python-integer reference, over shifts
    across ``res_shift_range`` (left shifts included), relu, and random clamps."""
    from mulfree.params.core_config import RES_MAX_SHIFT, res_shift_range
    from mulfree.params.graph_golden import node_forward
    from mulfree.params.int_layers import IntAdd, IntClamp
    rng = np.random.default_rng(act_bits)
    s_lo, s_hi = res_shift_range(act_bits)
    a_lo, a_hi = -(1 << act_bits - 1), (1 << act_bits - 1) - 1
    shifts = sorted({s_lo, s_hi, -1, 0, 1, *rng.integers(s_lo, s_hi + 1, 6).tolist()})
    for shift in shifts:
        v, s = _tail_case(rng, act_bits)
        ms, ss = (int(t) for t in rng.integers(0, RES_MAX_SHIFT + 1, 2))
        if shift == shifts[0]:
            ms, ss = RES_MAX_SHIFT, RES_MAX_SHIFT              # the widest sum
        relu = bool(rng.integers(0, 2))
        res = lg.ResidualParams(ms, ss, shift, relu)
        clamp = tuple(sorted(int(c) for c in rng.integers(a_lo, a_hi + 1, 2)))
        add = node_forward(IntAdd(in_shifts=(ms, ss), shift=shift, relu=relu,
                                  act_bits=act_bits), [v[None], s[None]])[0]
        want = node_forward(IntClamp(lo=clamp[0], hi=clamp[1]), [add[None]])[0]
        np.testing.assert_array_equal(lg.residual_add(act_bits, v, s, res), add)
        np.testing.assert_array_equal(
            lg.fused_tail(act_bits, v, shortcut=s, residual=res, clamp=clamp), want)
        np.testing.assert_array_equal(lg.fused_tail(act_bits, v, shortcut=s, residual=res),
                                      add)
        ref = [ref_residual(int(a), int(b), ms, ss, shift, relu, act_bits)
               for a, b in zip(v.flat, s.flat)]
        assert add.reshape(-1).tolist() == ref, (ms, ss, shift, relu)
        assert len(np.unique(add)) > 1 or shift > act_bits + 2, "a degenerate case"


def test_clamp_output_and_tail_without_add():
    """``clamp_output`` is the Clamp node; ``fused_tail`` with neither part is the identity;
    the clamp alone (ReLU6 on a grid of 2^-4: (0, 96))."""
    from mulfree.params.graph_golden import node_forward
    from mulfree.params.int_layers import IntClamp
    v = np.arange(-128, 128).reshape(16, 16)
    np.testing.assert_array_equal(lg.clamp_output(v, 0, 96),
                                  node_forward(IntClamp(lo=0, hi=96), [v[None]])[0])
    assert lg.clamp_output(v, 0, 96).min() == 0 and lg.clamp_output(v, 0, 96).max() == 96
    np.testing.assert_array_equal(lg.fused_tail(8, v), v)
    np.testing.assert_array_equal(lg.fused_tail(8, v, clamp=(-3, 5)), np.clip(v, -3, 5))
    with pytest.raises(ValueError, match="shortcut must have shape"):
        lg.residual_add(8, v, v[:3], lg.ResidualParams())
