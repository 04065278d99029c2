"""The numerics against an independent oracle: Python integers, ``fractions.Fraction`` and
``math.frexp``, never the code under test.

Each group pins one class of fault at its exact edges (``docs/numerics.md``):

* 64-bit accumulators: a partial sum at the edge of ``acc_range`` plus a tile's terms, where
  int64 itself wraps (sometimes back into ``acc_range``);
* golden inputs beyond int64 (``uint64``, Python integers), which ``astype`` would wrap;
* post-processing shifts over the whole documented range (0, 62, 63, 64 = the maximum) in the
  golden model and in the PyTorch emulation, at the bias and accumulator extremes;
* powers of two picked from floats a few ulps either side of ``2^(k+1/2)`` (DeepShift-Q, PS,
  the converters, the BatchNorm scale);
* round half up of 0.49999999999999994 and its neighbours (``quantize``, ``fake_quant``);
* the core's refusal of a 64-bit accumulator, in one line naming the largest ``max_k``.
"""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn

from mulfree.params.config import ArrayConfig, ConfigError
from mulfree.params.core_config import CoreConfig
from mulfree.params.post_config import bias_range, check_post_config, max_post_k, shift_range
from mulfree.host import ptq, qat, quant, quant_parse, quant_weights
from mulfree.host.convert import convert_to_shift
from mulfree.host.export_format import IntConv2d, IntFlatten, IntInput, IntModel
from mulfree.host.layers import ShiftLinear, ps_params_from_weight, round_log2
from mulfree.host.shift_layers import _q_quantize
from mulfree.host.train import snap_bn_scales
from mulfree.params import golden
from mulfree.params import layer_golden as lg
from mulfree.params.model_golden import run_int_model


INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


# The oracle --------------------------------------------------------------------------------

def ref_term(cfg, x, code):
    """One term from the definitions of docs/numerics.md, in Python integers."""
    x, code = int(x), int(code)
    if cfg.pe == "shift":
        b = cfg.weight_bits
        e, s = code & ((1 << (b - 1)) - 1), code >> (b - 1)
        return 0 if e == 0 else (-1) ** s * x * 2 ** (e - 1)
    if cfg.pe == "adder":
        return -abs(x - code)
    return x * code


def ref_forward(cfg, weights, inputs, psums):
    """``y[m][c] = p[m][c] + sum_r term(x[m][r], W[r][c])`` as Python integers."""
    return [[int(psums[m][c]) + sum(ref_term(cfg, inputs[m][r], weights[r][c])
                                    for r in range(cfg.rows))
             for c in range(cfg.cols)] for m in range(len(inputs))]


def ref_acc_range(cfg):
    """``acc_range`` recomputed: ``max_k`` times the extreme term, found by brute force over
    the extreme operands."""
    xs = (-(1 << (cfg.act_bits - 1)), (1 << (cfg.act_bits - 1)) - 1)
    if cfg.pe == "shift":
        codes = range(1 << cfg.weight_bits)
    else:
        codes = (-(1 << (cfg.weight_bits - 1)), (1 << (cfg.weight_bits - 1)) - 1)
    ts = [ref_term(cfg, x, w) for x in xs for w in codes]
    return cfg.max_k * min(ts), cfg.max_k * max(ts)


def ref_round_shift(y, s):
    """``floor((y + 2^(s-1)) / 2^s)`` for ``s > 0``, ``y`` for 0, ``y * 2^-s`` for ``s < 0``."""
    if s > 0:
        return (y + (1 << (s - 1))) >> s          # Python's >> is an exact floor division
    return y * 2 ** -s


def ref_postprocess(acc, bias, s, relu, a):
    v = ref_round_shift(acc + bias, s)
    if relu:
        v = max(v, 0)
    return min(max(v, -(1 << (a - 1))), (1 << (a - 1)) - 1)


def ref_round_log2(w):
    """The integer ``p`` with ``2^(p-1/2) < |w| < 2^(p+1/2)``, by comparing squares exactly."""
    w = abs(Fraction(w))
    p = math.frexp(float(w))[1] - 1             # 2^p <= |w| < 2^(p+1)
    return p + 1 if w * w > Fraction(2) ** (2 * p + 1) else p


def ref_round_half_up(v):
    return math.floor(Fraction(v) + Fraction(1, 2))


def near_sqrt2_midpoint(k, mant_bits, ulps):
    """Floats of ``mant_bits`` bits ``ulps`` ulps either side of ``2^(k+1/2)``: (below, above).

    ``2^(k+1/2) = sqrt(2^105) * 2^(k-52)``; ``isqrt`` gives the integer mantissas around it.
    """
    n = 2 * mant_bits - 1                       # sqrt(2^n) has mant_bits bits
    m = math.isqrt(1 << n)                      # m < sqrt(2^n) < m + 1
    scale = k + 1 - mant_bits + (n + 1 - 2 * mant_bits) // 2
    below = [math.ldexp(m - i, scale) for i in range(ulps)]
    above = [math.ldexp(m + 1 + i, scale) for i in range(ulps)]
    return below, above


def test_oracle_midpoints_straddle_the_irrational_midpoint():
    for bits in (53, 24):
        for k in (-20, -3, 0):
            below, above = near_sqrt2_midpoint(k, bits, 3)
            mid_sq = Fraction(2) ** (2 * k + 1)
            assert all(Fraction(v) ** 2 < mid_sq for v in below)
            assert all(Fraction(v) ** 2 > mid_sq for v in above)
            if bits == 24:
                assert all(float(np.float32(v)) == v for v in below + above)


# 1. 64-bit accumulators -----------------------------------------------------------------------

def _widest(rows, cols, a):
    """The shift config (6-bit weights) with the largest max_k: a 64-bit accumulator."""
    t = 1 << (a - 1 + 30)                              # the largest |term|
    k = min(2 ** 31, ((1 << 63) - 1) // t)             # k t <= 2^63 - 1 (symmetric range)
    return ArrayConfig(pe="shift", rows=rows, cols=cols, act_bits=a, weight_bits=6, max_k=k)


WIDE = [_widest(4, 2, 16), _widest(3, 1, 8), _widest(2, 2, 2)]


@pytest.mark.parametrize("cfg", WIDE, ids=lambda c: c.top_name)
def test_wide_configs_are_64_bits(cfg):
    assert cfg.acc_width == 64
    assert cfg.acc_range == ref_acc_range(cfg)


def _all_max(cfg, sign):
    """Weights and inputs making every term +-2^(a-1+max_shift) (x = -2^(a-1))."""
    b = cfg.weight_bits
    code = (1 if sign > 0 else 0) << (b - 1) | ((1 << (b - 1)) - 1)   # -(2^max) for sign > 0
    weights = np.full((cfg.rows, cfg.cols), code, dtype=np.int64)
    inputs = np.full((1, cfg.rows), -(1 << (cfg.act_bits - 1)), dtype=np.int64)
    return weights, inputs


@pytest.mark.parametrize("cfg", WIDE, ids=lambda c: c.top_name)
@pytest.mark.parametrize("sign", [1, -1])
def test_64_bit_partial_sum_at_the_edges(cfg, sign):
    lo, hi = cfg.acc_range
    weights, inputs = _all_max(cfg, sign)
    tile = ref_forward(cfg, weights, inputs, [[0] * cfg.cols])[0][0]
    assert tile == sign * cfg.rows * ref_acc_range(cfg)[1] // cfg.max_k
    edge = hi if sign > 0 else lo
    # Reaching the edge exactly is fine and exact.
    ps = np.full((1, cfg.cols), edge - tile, dtype=np.int64)
    got = golden.array_forward(cfg, weights, inputs, ps)
    assert got.tolist() == ref_forward(cfg, weights, inputs, ps.tolist())
    assert got[0, 0] == edge
    # From the edge itself, the same tile leaves the range; int64 wraps (into the range when
    # the tile is larger than the gap between acc_range and int64) but the golden model must
    # raise, naming the true sum.
    ps = np.full((1, cfg.cols), edge, dtype=np.int64)
    true = edge + tile
    if cfg.act_bits > 2:                              # a = 2: acc_range is only +-2^62
        assert not INT64_MIN <= true <= INT64_MAX
    with pytest.raises(OverflowError, match=rf"y\[0, 0\] = {true} leaves"):
        golden.array_forward(cfg, weights, inputs, ps)
    # One step inside the edge by the smallest term: still out of range, no int64 wrap.
    smallest = np.zeros((cfg.rows, cfg.cols), dtype=np.int64)
    smallest[0, :] = (0 if sign > 0 else 1) << (cfg.weight_bits - 1) | 1    # +1 or -1
    ones = np.ones((1, cfg.rows), dtype=np.int64)
    with pytest.raises(OverflowError, match=rf"= {edge + sign} leaves"):
        golden.array_forward(cfg, smallest, ones, ps)


def test_64_bit_wrap_back_into_range_is_caught():
    """psum = hi and four terms of +2^45: the int64 sum wraps to -2^63 + 3 * 2^45, which lies
    inside acc_range; only a true overflow check sees it."""
    cfg = WIDE[0]
    lo, hi = cfg.acc_range
    weights, inputs = _all_max(cfg, 1)
    wrapped = hi + (4 << 45) - (1 << 64)                 # what int64 addition returns
    assert lo <= wrapped <= hi
    with pytest.raises(OverflowError):
        golden.array_forward(cfg, weights, inputs, np.full((1, cfg.cols), hi, np.int64))


@pytest.mark.parametrize("cfg", WIDE + [
    ArrayConfig(pe="mult", rows=3, cols=2, act_bits=16, weight_bits=16, max_k=2 ** 31),
    ArrayConfig(pe="adder", rows=3, cols=2, act_bits=16, max_k=2 ** 31),
    ArrayConfig(pe="shift", rows=2, cols=3, act_bits=5, weight_bits=3, max_k=7),
], ids=lambda c: c.top_name)
def test_array_forward_random_near_edges(cfg):
    rng = np.random.default_rng(cfg.acc_width * 7 + cfg.rows)
    lo, hi = cfg.acc_range
    xlo, xhi = cfg.act_range
    m = 64
    if cfg.pe == "shift":
        weights = rng.integers(0, 1 << cfg.weight_bits, (cfg.rows, cfg.cols))
    else:
        weights = rng.integers(cfg.weight_range[0], cfg.weight_range[1] + 1,
                               (cfg.rows, cfg.cols))
    inputs = rng.integers(xlo, xhi + 1, (m, cfg.rows))
    tmax = cfg.rows * max(-cfg.term_range[0], cfg.term_range[1])
    offsets = rng.integers(0, tmax + 1, (m, cfg.cols))
    edges = rng.integers(0, 4, (m, cfg.cols))
    psums = [[[lo + int(o), hi - int(o), lo, hi][int(e)] for o, e in zip(orow, erow)]
             for orow, erow in zip(offsets, edges)]
    ref = ref_forward(cfg, weights, inputs, psums)
    for i in range(m):
        row_ok = all(lo <= v <= hi for v in ref[i])
        ps = np.array([psums[i]], dtype=np.int64)
        if row_ok:
            got = golden.array_forward(cfg, weights, inputs[i:i + 1], ps)
            assert got.tolist() == [ref[i]]
        else:
            with pytest.raises(OverflowError):
                golden.array_forward(cfg, weights, inputs[i:i + 1], ps)


# 2. Inputs beyond int64 ------------------------------------------------------------------------

def test_golden_refuses_values_beyond_int64():
    cfg = ArrayConfig(pe="mult", rows=1, cols=1, act_bits=8, weight_bits=8, max_k=4)
    w, x = np.ones((1, 1), np.int64), np.ones((1, 1), np.int64)
    # 2^64 - 1 as uint64 would be -1 after astype: inside acc_range, silently accepted.
    with pytest.raises(ValueError, match="18446744073709551615 is outside int64"):
        golden.array_forward(cfg, w, x, np.array([[2 ** 64 - 1]], dtype=np.uint64))
    with pytest.raises(ValueError, match="outside int64"):
        golden.array_forward(cfg, w, np.array([[2 ** 64 + 1]], dtype=object))
    with pytest.raises(ValueError, match="outside int64"):
        lg.matmul_acc(cfg, np.array([[2 ** 63]], dtype=np.uint64), w)
    # In range, uint64 and Python integers are fine.
    got = golden.array_forward(cfg, w, np.array([[3]], np.uint64), np.array([[2]], object))
    assert got.tolist() == [[5]]


# 3. Post-processing over the whole shift range ---------------------------------------------------

EDGE_Y = [INT64_MIN, INT64_MIN + 1, -(1 << 62) - 1, -(1 << 62), -(1 << 62) + 1, -3, -2, -1, 0,
          1, 2, 3, (1 << 62) - 1, 1 << 62, (1 << 62) + 1, INT64_MAX - 1, INT64_MAX]


def test_round_shift_every_right_amount():
    rng = np.random.default_rng(5)
    ys = EDGE_Y + [int(v) for v in rng.integers(INT64_MIN, INT64_MAX, 40, dtype=np.int64)]
    for s in range(0, 71):
        got = lg.round_shift(np.array(ys, np.int64), np.full(len(ys), s))
        assert got.tolist() == [ref_round_shift(y, s) for y in ys], s


def test_round_shift_left_exact_or_overflow():
    for n in (1, 2, 31, 62, 63, 64, 100):
        for y in EDGE_Y:
            want = y << n
            if y == 0 or INT64_MIN <= want <= INT64_MAX:
                assert lg.round_shift(np.array([y]), np.array([-n])).tolist() == [want]
            else:
                with pytest.raises(OverflowError, match="leaves int64"):
                    lg.round_shift(np.array([y]), np.array([-n]))


def _post_configs():
    """For every act_bits 2..16: a config with the widest accumulator post-processing allows
    (63 bits where max_k <= 2^31 reaches it) and a small one."""
    out = []
    for a in range(2, 17):
        base = ArrayConfig(pe="shift", rows=1, cols=1, act_bits=a, weight_bits=6, max_k=1)
        k = min(2 ** 31, max_post_k(base))
        out.append(ArrayConfig(pe="shift", rows=1, cols=1, act_bits=a, weight_bits=6, max_k=k))
        out.append(ArrayConfig(pe="adder", rows=1, cols=1, act_bits=a, max_k=3))
    return out


POST_CONFIGS = _post_configs()


def test_post_configs_reach_acc_width_63():
    assert {c.act_bits for c in POST_CONFIGS if c.acc_width == 63} >= set(range(4, 17))
    for c in POST_CONFIGS:
        assert shift_range(c) == (-c.act_bits, c.acc_width + 1)


@pytest.mark.parametrize("cfg", POST_CONFIGS, ids=lambda c: c.top_name)
def test_postprocess_golden_and_torch_equal_the_oracle(cfg):
    rng = np.random.default_rng(cfg.acc_width * 17 + cfg.act_bits)
    a = cfg.act_bits
    lo, hi = cfg.acc_range
    blo, bhi = bias_range(cfg)
    slo, shi = shift_range(cfg)
    shifts = sorted({slo, slo + 1, -1, 0, 1, 2, a, shi - 2, shi - 1, shi}
                    | ({62, 63, 64} & set(range(slo, shi + 1))))
    accs = [v for v in (lo, lo + 1, -1, 0, 1, hi - 1, hi) if lo <= v <= hi]
    accs += [int(v) for v in rng.integers(lo, hi, 6)]
    biases = [blo, blo + 1, -1, 0, 1, bhi - 1, bhi] + [int(v) for v in rng.integers(blo, bhi, 6)]
    n = len(shifts) * len(biases)
    shift_vec = np.repeat(shifts, len(biases))
    bias_vec = np.tile(biases, len(shifts))
    relu = np.arange(n) % 3 == 0
    acc = np.array([[v] * n for v in accs], dtype=np.int64)
    post = lg.PostParams(bias_vec, shift_vec, relu)
    want = [[ref_postprocess(acc_v, int(bias_vec[j]), int(shift_vec[j]), bool(relu[j]), a)
             for j in range(n)] for acc_v in accs]
    assert lg.postprocess(cfg, acc, post).tolist() == want
    got = quant.postprocess_torch(torch.as_tensor(acc), bias_vec, shift_vec, relu, a)
    assert got.tolist() == want


def test_int_forward_shift_64_at_the_edge_of_a_63_bit_accumulator():
    """A real exported layer with a 63-bit accumulator (K = 16384 * 2 * 2) and shifts 64, 63:
    int_forward, the golden model and the oracle agree. y = 2^62 and y = -2^62 - 1 have bit 62
    different from bit 63, so rounding on bit 62 (a shift of 64 clamped to 63) is caught."""
    c = 16384
    codes = np.zeros((4, c, 2, 2), np.int64)
    codes[:, 0, 0, 0] = [1, 33, 1, 33]                    # +1, -1, +1, -1
    layer = IntConv2d("shift", codes, bias=np.zeros(4, np.int64), shift=np.zeros(4, np.int64),
                      act_bits=16, weight_bits=6)
    model = IntModel(IntInput((c, 2, 2), 16, 0), [layer, IntFlatten()], output="none")
    from mulfree.host.export_format import layer_config
    cfg = layer_config(layer)
    assert cfg.acc_width == 63 and shift_range(cfg)[1] == 64
    blo, bhi = bias_range(cfg)
    layer.bias = np.array([bhi, blo, bhi, blo])
    layer.shift = np.array([64, 64, 63, 63])
    x = np.zeros((1, c, 2, 2), np.int64)
    x[0, 0, 0, 0] = 1
    accs = [1, -1, 1, -1]
    want = [ref_postprocess(accs[i], int(layer.bias[i]), int(layer.shift[i]), False, 16)
            for i in range(4)]
    assert want == [0, 0, 1, -1]
    assert run_int_model(model, x).tolist() == [want]
    assert quant.int_forward(model, x).tolist() == [want]


def test_check_post_config_names_the_largest_max_k():
    for a, b in ((16, 6), (8, 6), (2, 6)):
        base = ArrayConfig(pe="shift", rows=2, cols=1, act_bits=a, weight_bits=b, max_k=2)
        t = 1 << (a - 1 + 30)
        kmax = min((1 << 62) // t, ((1 << 62) - 1) // t)   # k t must fit signed 63 bits
        assert max_post_k(base) == kmax
        if kmax + 1 > 2 ** 31:
            continue
        ok = ArrayConfig(pe="shift", rows=2, cols=1, act_bits=a, weight_bits=b, max_k=kmax)
        assert ok.acc_width == 63
        check_post_config(ok)
        CoreConfig(engine=ok)
        bad = ArrayConfig(pe="shift", rows=2, cols=1, act_bits=a, weight_bits=b,
                          max_k=kmax + 1)
        for call in (lambda: check_post_config(bad), lambda: CoreConfig(engine=bad)):
            with pytest.raises(ConfigError) as info:
                call()
            msg = str(info.value)
            assert info.value.param == "max_k" and "\n" not in msg
            assert f"[2, {kmax}]" in msg and str(kmax + 1) in msg


def test_gen_core_64_bit_accumulator_one_line(run_main, capsys, tmp_path):
    out = tmp_path / "out"
    status, stdout, stderr = run_main(
        ["gen", "--core", "--rows", "1", "--cols", "1", "--act-bits", "16",
         "--weight-bits", "6", "--max-k", "131072", "-o", str(out)], capsys)
    assert status == 2
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "max_k" in lines[0] and "131071" in lines[0] and "131072" in lines[0]
    assert "Traceback" not in stderr and "internal error" not in stderr
    assert not out.exists() or not any(out.iterdir())


# 4. Powers of two from floats ------------------------------------------------------------------

def _midpoint_weights(max_shift, dtype):
    """Weights 1..4 ulps either side of every midpoint 2^(k+1/2), k in [-max_shift, -1], both
    signs, and the oracle's power for each."""
    bits = 53 if dtype == torch.float64 else 24
    ws = []
    for k in range(-max_shift, 0):
        below, above = near_sqrt2_midpoint(k, bits, 4)
        ws += below + above
    ws += [-w for w in ws]
    return ws


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("weight_bits", [2, 3, 4, 5, 6])
def test_deepshift_q_midpoints(weight_bits, dtype):
    m = (1 << (weight_bits - 1)) - 2
    ws = _midpoint_weights(m, dtype) + [1.0, -1.0, 1.5, 0.0, 2.0 ** -(m + 3), -(2.0 ** -m)]
    want = []
    for w in ws:
        if w == 0:
            want.append(0.0)
            continue
        p = min(0, max(-m, ref_round_log2(min(abs(w), 1.0))))
        want.append(math.copysign(2.0 ** p, w))
    t = torch.tensor(ws, dtype=dtype)
    assert _q_quantize(t, weight_bits).tolist() == want
    layer = ShiftLinear(1, len(ws), bias=False, mode="q", weight_bits=weight_bits).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(t[:, None])
    assert layer.effective_weight()[:, 0].tolist() == want
    assert layer._weight().detach()[:, 0].tolist() == want
    sign, shift = golden.decode_shift(layer.weight_codes()[:, 0], weight_bits)
    assert [int(s) * 2.0 ** (int(p) - m) if s else 0.0
            for s, p in zip(sign, shift)] == want
    # The converter in mode q copies the weights: the same powers.
    lin = nn.Linear(1, len(ws), bias=False).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(t[:, None])
    model = convert_to_shift(nn.Sequential(lin), mode="q", weight_bits=weight_bits)
    assert model[0].effective_weight()[:, 0].tolist() == want


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("weight_bits", [2, 4, 6])
def test_deepshift_ps_midpoints(weight_bits, dtype):
    m = (1 << (weight_bits - 1)) - 2
    ws = _midpoint_weights(m, dtype) + [0.0, 3.0, 2.0 ** -(m + 5)]
    want_shift = [float(-m) if w == 0 else float(min(0, max(-m, ref_round_log2(w))))
                  for w in ws]
    t = torch.tensor(ws, dtype=dtype)
    shift, sign = ps_params_from_weight(t, weight_bits)
    assert shift.dtype == dtype and shift.tolist() == want_shift
    assert sign.tolist() == [math.copysign(1.0, w) if w else 0.0 for w in ws]
    lin = nn.Linear(1, len(ws), bias=False).to(dtype)
    with torch.no_grad():
        lin.weight.copy_(t[:, None])
    model = convert_to_shift(nn.Sequential(lin), mode="ps", weight_bits=weight_bits)
    assert model[0].shift[:, 0].tolist() == want_shift
    want = [0.0 if w == 0 else math.copysign(2.0 ** p, w) for w, p in zip(ws, want_shift)]
    assert model[0].effective_weight()[:, 0].tolist() == want


def test_round_log2_random_and_extreme():
    rng = np.random.default_rng(11)
    ws = np.exp2(rng.uniform(-60, 60, 20000)) * rng.choice([-1, 1], 20000)
    ws = np.concatenate([ws, [5e-324, 1e-310, 2.0 ** -1022, 1.7e308, 1.0, 0.75]])
    got = round_log2(torch.tensor(ws, dtype=torch.float64)).tolist()
    assert got == [ref_round_log2(w) for w in ws]
    ws32 = ws[(np.abs(ws) > 1e-37) & (np.abs(ws) < 1e37)].astype(np.float32)
    got32 = round_log2(torch.tensor(ws32)).tolist()
    assert got32 == [ref_round_log2(float(w)) for w in ws32]


def _bn_after_shift(scales):
    """A shift layer and a BN whose scale s = gamma / sqrt(var + eps) is exactly ``scales``."""
    n = len(scales)
    layer = ShiftLinear(2, n, bias=False, mode="q", weight_bits=4).double()
    bn = nn.BatchNorm1d(n, eps=0.0).double().eval()
    with torch.no_grad():
        bn.running_var.fill_(1.0)
        bn.running_mean.zero_()
        bn.weight.copy_(torch.tensor(scales, dtype=torch.float64))
        bn.bias.zero_()
    return nn.Sequential(layer, bn)


def test_bn_power_of_two_midpoints():
    scales = []
    for k in (-5, -1, 0, 3):
        below, above = near_sqrt2_midpoint(k, 53, 2)
        scales += below + above
    want = [ref_round_log2(s) for s in scales]
    model = _bn_after_shift(scales)
    items = quant_parse.parse_model(model)
    *_, e, _ = quant_weights.weight_arrays(items[0], 0, 8)
    assert e.tolist() == [float(p) for p in want]
    snap_bn_scales(model)
    assert model[1].weight.tolist() == [2.0 ** p for p in want]


# 5. Round half up ------------------------------------------------------------------------------

HALF_EDGES = [0.49999999999999994, 0.5, np.nextafter(0.5, 1.0), -0.49999999999999994, -0.5,
              np.nextafter(-0.5, -1.0), 1.5, 2.5, -1.5, -2.5, 1.4999999999999998,
              -1.4999999999999998, 2.0 ** 52 - 0.5, 2.0 ** 52 + 1, -(2.0 ** 52) + 0.5, 0.0,
              -0.0, 1e-300, -1e-300]


def test_round_half_up_exact():
    v = torch.tensor(HALF_EDGES, dtype=torch.float64)
    assert quant.round_half_up(v).tolist() == [ref_round_half_up(x) for x in HALF_EDGES]
    v32 = np.array([0.49999997, np.nextafter(np.float32(0.5), np.float32(1)), -0.50000006,
                    2.0 ** 23 - 0.5, 2.5, -2.5], dtype=np.float32)
    assert quant.round_half_up(torch.tensor(v32)).tolist() == \
        [ref_round_half_up(float(x)) for x in v32]
    inf = torch.tensor([math.inf, -math.inf], dtype=torch.float64)
    assert quant.round_half_up(inf).tolist() == [math.inf, -math.inf]


@pytest.mark.parametrize("exp", [-7, 0, 5])
def test_fake_quant_half_edges(exp):
    vals = [math.ldexp(v, exp) for v in HALF_EDGES]
    x = torch.tensor(vals, dtype=torch.float64, requires_grad=True)
    q = quant.fake_quant(x, exp, 8)
    want = [math.ldexp(min(max(ref_round_half_up(v), -128), 127), exp) for v in HALF_EDGES]
    assert q.tolist() == want
    q.sum().backward()
    assert x.grad.tolist() == [1.0] * len(vals)


def test_quantize_weights_and_bias_half_edges():
    """A mult layer: the weight 127 * 2^-3 sets w_exp = -3; the other weights sit a hair under
    and on the half steps; the bias lands on 0.49999999999999994 accumulator steps."""
    half = 0.49999999999999994
    w_units = [127.0, half, -half, 0.5, -0.5, 1.5, -1.5]
    lin = nn.Linear(1, len(w_units)).double()
    in_exp = 0
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([math.ldexp(u, -3) for u in w_units],
                                      dtype=torch.float64)[:, None])
        lin.bias.copy_(torch.tensor([math.ldexp(u, in_exp - 3) for u in w_units],
                                    dtype=torch.float64))
    calib = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    int_model = quant.quantize(nn.Sequential(lin), calib, act_bits=8, input_scale_exp=in_exp)
    layer = int_model.layers[0]
    want = [ref_round_half_up(u) for u in w_units]
    assert layer.codes[0].tolist() == want
    assert layer.bias.tolist() == want


def test_quantize_saturates_huge_bias_to_the_right_end():
    lin = nn.Linear(1, 2).double()
    with torch.no_grad():
        lin.weight.fill_(1.0)
        lin.bias.copy_(torch.tensor([1e30, -1e30], dtype=torch.float64))
    calib = torch.tensor([[1.0], [-1.0]], dtype=torch.float64)
    int_model = quant.quantize(nn.Sequential(lin), calib, act_bits=8, input_scale_exp=0)
    from mulfree.host.export_format import layer_config
    blo, bhi = bias_range(layer_config(int_model.layers[0]))
    assert int_model.layers[0].bias.tolist() == [bhi, blo]


def test_exp_for_is_exact():
    for maxabs, qmax in ((5e-324, 127), (1e-310, 7), (127 * 2.0 ** -20, 127),
                         (np.nextafter(127 * 2.0 ** -20, 1.0), 127), (1.7e308, 1),
                         (0.1, 127), (3.0, 1)):
        e = ptq.exp_for(maxabs, qmax)
        exact = Fraction(float(maxabs))
        assert exact <= qmax * Fraction(2) ** e
        assert not exact <= qmax * Fraction(2) ** (e - 1)


def test_qat_grid_half_edges():
    for exp in (-4, 0, 3):
        v = torch.tensor([math.ldexp(x, exp) for x in HALF_EDGES], dtype=torch.float64)
        want = [math.ldexp(ref_round_half_up(x), exp) for x in HALF_EDGES]
        assert qat._grid(v, exp).tolist() == want


def test_qat_bn_power_of_two_matches_the_integer_model():
    """QATWrapper's BN scale must be the power quantize() encodes, also for scales a few ulps
    from 2^(k+1/2): its float forward then equals quantized_forward exactly here (float64,
    small integers)."""
    scales = []
    for k in (-2, 0, 1):
        below, above = near_sqrt2_midpoint(k, 53, 1)
        scales += below + above
    model = _bn_after_shift(scales)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.5, -0.25]] * len(scales), dtype=torch.float64))
    calib = torch.tensor([[1.0, -1.0], [0.5, 0.25], [-1.0, 1.0]], dtype=torch.float64)
    qat = quant.QATWrapper(model, calib, act_bits=8)
    got = qat(calib).detach()
    want = quant.quantized_forward(qat.int_model, calib)
    assert got.tolist() == want.tolist()
    # And the powers are the oracle's: shift = O - A - e, one output exponent O for the layer.
    shift = qat.int_model.layers[0].shift
    e = [ref_round_log2(v) for v in scales]
    assert (shift + np.array(e)).tolist() == [shift[0] + e[0]] * len(scales)


def test_quantize_bias_infinite_saturates_nan_refused():
    """A BN scale of 2^-1000 after a shift layer makes the bias t 2^1000 2^-A: +inf, which
    saturates to the right end; a NaN bias has no integer and is refused."""
    model = _bn_after_shift([2.0 ** -1000, 2.0 ** -1000])
    with torch.no_grad():
        model[1].bias.copy_(torch.tensor([1e300, -1e300], dtype=torch.float64))
    calib = torch.tensor([[1.0, -1.0]], dtype=torch.float64)
    int_model = quant.quantize(model, calib, act_bits=8, input_scale_exp=0)
    from mulfree.host.export_format import layer_config
    blo, bhi = bias_range(layer_config(int_model.layers[0]))
    assert int_model.layers[0].bias.tolist() == [bhi, blo]
    with torch.no_grad():
        model[1].bias.fill_(math.nan)
    with pytest.raises(quant.QuantizeError, match="NaN"):
        quant.quantize(model, calib, act_bits=8, input_scale_exp=0)
