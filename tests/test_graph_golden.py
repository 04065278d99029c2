"""The golden model of graph nodes against an independent oracle, and the graph's validation.

Every oracle here is written from ``docs/numerics.md`` ("Graphs") with Python integers and
``fractions.Fraction`` over the *real* values a node's integers stand for, never with the code
under test: an add is ``sat(round_half_up(sum_i x_i 2^e_i / 2^e_out))``, an average pooling
``sat(round_half_up(mean / 2^shift))``, a depthwise convolution a loop per channel.
"""

import math
from fractions import Fraction

import numpy as np
import pytest

from mulfree.params import graph_golden as gg
from mulfree.params.config import ArrayConfig
from mulfree.params.golden import terms
from mulfree.params.int_model import (
    ExportError, IntAdd, IntAddressShift, IntAvgPool2d, IntChannelShift, IntClamp, IntConcat,
    IntConv2d, IntFlatten, IntGlobalAvgPool, IntInput, IntLinear, IntMaxPool2d, IntModel,
    IntPad, IntShift2d, graph_nodes)
from mulfree.params.model_golden import run_int_model


def half_up(q: Fraction) -> int:
    return math.floor(q + Fraction(1, 2))


def sat(v, bits):
    return max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, v))


def test_div_round_is_round_half_up_of_the_exact_quotient():
    rng = np.random.default_rng(0)
    s = rng.integers(-(1 << 40), 1 << 40, 2000)
    s[:6] = [-3, -2, -1, 1, 2, 3]
    for d in (1, 2, 3, 7, 9, 49, 64, 1000003):
        got = gg.div_round(s, d)
        want = [half_up(Fraction(int(v), d)) for v in s]
        assert got.tolist() == want


def _x(rng, shape, bits=8, b=2):
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return rng.integers(lo, hi + 1, (b,) + tuple(shape))


@pytest.mark.parametrize("exps,out_exp,relu,bits", [
    ((-5, -5), -5, False, 8), ((-6, -4), -5, True, 8), ((-3, -7, -4), -2, False, 6),
    ((0, 2), -3, False, 8), ((-7, -7), -9, True, 8)])
def test_add_is_the_rounded_real_sum(exps, out_exp, relu, bits):
    rng = np.random.default_rng(len(exps) + 10 * abs(out_exp))
    g = min(exps)
    shape = (3, 4, 5)
    layer = IntAdd(in_shifts=tuple(e - g for e in exps), shift=out_exp - g, relu=relu,
                   act_bits=bits, out_scale_exp=out_exp)
    xs = [_x(rng, shape) for _ in exps]
    got = gg.node_forward(layer, xs)
    want = np.empty_like(got)
    for idx in np.ndindex(got.shape):
        real = sum(Fraction(int(x[idx])) * Fraction(2) ** e for x, e in zip(xs, exps))
        v = half_up(real / Fraction(2) ** out_exp)
        want[idx] = sat(max(v, 0) if relu else v, bits)
    assert np.array_equal(got, want)


def test_concat_rescales_each_input_then_joins():
    rng = np.random.default_rng(3)
    layer = IntConcat(shifts=(2, -1), act_bits=8, out_scale_exp=-3)
    exps = (-5, -2)
    a, b = _x(rng, (2, 3, 3)), _x(rng, (3, 3, 3))
    got = gg.node_forward(layer, [a, b])
    assert got.shape == (2, 5, 3, 3)
    for x, e, part in ((a, exps[0], got[:, :2]), (b, exps[1], got[:, 2:])):
        for idx in np.ndindex(x.shape):
            want = sat(half_up(Fraction(int(x[idx])) * Fraction(2) ** (e + 3)), 8)
            assert part[idx] == want


def _windows_oracle(x, kh, kw, sy, sx, py, px, reduce):
    b, c, h, w = x.shape
    oh, ow = (h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1
    out = np.zeros((b, c, oh, ow), dtype=np.int64)
    for n, ch, oy, ox in np.ndindex(b, c, oh, ow):
        vals = []
        for ky in range(kh):
            for kx in range(kw):
                y, xx = oy * sy - py + ky, ox * sx - px + kx
                inside = 0 <= y < h and 0 <= xx < w
                vals.append(int(x[n, ch, y, xx]) if inside else None)
        out[n, ch, oy, ox] = reduce(vals)
    return out


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, 1), (1, 2, 0), ((2, 3), (1, 2), (1, 0))])
def test_maxpool_ignores_padding(k, s, p):
    rng = np.random.default_rng(4)
    layer = IntMaxPool2d(kernel=k, stride=s, padding=p)
    x = _x(rng, (2, 7, 6)) - 100            # mostly negative: a zero pad would win
    (kh, kw), (sy, sx), (py, px) = layer.kernel, layer.stride, layer.padding
    want = _windows_oracle(x, kh, kw, sy, sx, py, px,
                           lambda v: max(t for t in v if t is not None))
    assert np.array_equal(gg.node_forward(layer, [x]), want)


@pytest.mark.parametrize("k,s,p,shift", [(2, 2, 0, 0), (3, 1, 1, 0), (3, 2, 1, 2), (3, 3, 0, -2),
                                         ((2, 4), 2, (1, 2), 1)])
def test_avgpool_is_the_rounded_mean_counting_pads(k, s, p, shift):
    rng = np.random.default_rng(5)
    layer = IntAvgPool2d(kernel=k, stride=s, padding=p, shift=shift, act_bits=8)
    x = _x(rng, (2, 8, 9))
    (kh, kw), (sy, sx), (py, px) = layer.kernel, layer.stride, layer.padding
    n = kh * kw

    def mean(v):
        total = sum(t for t in v if t is not None)          # pads count as zeros
        return sat(half_up(Fraction(total, n) / Fraction(2) ** shift), 8)
    want = _windows_oracle(x, kh, kw, sy, sx, py, px, mean)
    assert np.array_equal(gg.node_forward(layer, [x]), want)


@pytest.mark.parametrize("hw,shift", [((4, 4), 0), ((7, 7), 0), ((3, 5), 1), ((8, 8), -1)])
def test_global_avgpool(hw, shift):
    rng = np.random.default_rng(6)
    x = _x(rng, (3,) + hw, b=3)
    got = gg.node_forward(IntGlobalAvgPool(shift=shift, act_bits=8), [x])
    assert got.shape == (3, 3, 1, 1)
    for n, c in np.ndindex(3, 3):
        mean = Fraction(int(x[n, c].sum()), hw[0] * hw[1])
        assert got[n, c, 0, 0] == sat(half_up(mean / Fraction(2) ** shift), 8)


@pytest.mark.parametrize("pe", ["shift", "adder", "mult"])
def test_depthwise_conv_is_one_convolution_per_channel(pe):
    rng = np.random.default_rng(7)
    c, mult, k = 3, 2, 3
    wb = {"shift": 4, "adder": 6, "mult": 5}[pe]
    cfg = ArrayConfig(pe=pe, rows=1, cols=1, act_bits=6, weight_bits=None if pe == "adder" else wb,
                      max_k=k * k)
    lo, hi = (0, (1 << wb) - 1) if pe == "shift" else cfg.weight_range
    codes = rng.integers(lo, hi + 1, (c * mult, 1, k, k))
    layer = IntConv2d(pe, codes, np.zeros(c * mult, np.int64), np.zeros(c * mult, np.int64),
                      stride=1, padding=1, act_bits=6, groups=c,
                      weight_bits=None if pe == "adder" else wb)
    x = _x(rng, (c, 5, 4), bits=6, b=1)
    got = gg.node_forward(layer, [x])[0]
    for o, oy, ox in np.ndindex(got.shape):
        ch = o // mult
        acc = 0
        for ky in range(k):
            for kx in range(k):
                y, xx = oy - 1 + ky, ox - 1 + kx
                v = int(x[0, ch, y, xx]) if 0 <= y < 5 and 0 <= xx < 4 else 0
                acc += int(terms(cfg, np.int64(v), np.int64(codes[o, 0, ky, kx])))
        assert got[o, oy, ox] == sat(acc, 6)


def test_shift_kinds_pad_and_clamp():
    rng = np.random.default_rng(8)
    x = _x(rng, (3, 4, 5))
    off = np.array([[2, -1], [0, 0], [-3, 3]])
    got = gg.node_forward(IntShift2d(offsets=off), [x])
    for n, c, y, xx in np.ndindex(got.shape):
        sy, sx = y + off[c, 0], xx + off[c, 1]
        assert got[n, c, y, xx] == (x[n, c, sy, sx] if 0 <= sy < 4 and 0 <= sx < 5 else 0)
    aoff = np.array([[1, 0], [0, -1], [-1, 1]])
    got = gg.node_forward(IntAddressShift(offsets=aoff), [x])
    for n, c, y, xx in np.ndindex(got.shape):
        a = (c * 4 + y) * 5 + xx + aoff[c, 0] * 5 + aoff[c, 1]
        assert got[n, c, y, xx] == (x[n].reshape(-1)[a] if 0 <= a < 60 else 0)
    got = gg.node_forward(IntChannelShift(r=1), [x])
    assert np.array_equal(got[:, 0], x[:, 1]) and np.array_equal(got[:, 2], x[:, 0])
    got = gg.node_forward(IntPad(pads=(1, 2, 0, 1, 2, 0)), [x])
    assert got.shape == (2, 6, 5, 7) and got[:, 0].sum() == 0 and got[:, 4:].sum() == 0
    assert np.array_equal(got[:, 1:4, :4, 2:], x) and not got[:, :, 4].any()
    got = gg.node_forward(IntClamp(lo=0, hi=48), [x])
    assert np.array_equal(got, np.clip(x, 0, 48))


def _residual(**add):
    """conv -> conv -> add(input of the block) -> flatten -> linear."""
    rng = np.random.default_rng(9)
    codes = rng.integers(0, 8, (4, 4, 3, 3))
    z = np.zeros(4, np.int64)
    fields = dict(in_shifts=(0, 0), shift=0, relu=True, act_bits=8, out_scale_exp=-4,
                  name="sum", inputs=("c2", "c0"))
    fields.update(add)
    return IntModel(IntInput((4, 5, 5), 8, -4), [
        IntConv2d("shift", codes, z, z + 4, relu=True, padding=1, weight_bits=4,
                  out_scale_exp=-4, name="c0"),
        IntConv2d("shift", codes, z, z + 5, relu=True, padding=1, weight_bits=4,
                  out_scale_exp=-4, name="c1"),
        IntConv2d("adder", rng.integers(-9, 9, (4, 4, 3, 3)), z, z + 3, padding=1,
                  out_scale_exp=-4, name="c2"),
        IntAdd(**fields),
        IntFlatten(name="flat"),
        IntLinear("mult", rng.integers(-50, 50, (100, 10)), np.zeros(10, np.int64),
                  np.full(10, 6), weight_bits=8, name="fc"),
    ])


def test_a_residual_graph_runs_node_by_node():
    model = _residual()
    infos = graph_nodes(model)
    assert [i.name for i in infos] == ["c0", "c1", "c2", "sum", "flat", "fc"]
    assert infos[3].sources == (2, 0) and infos[0].consumers == (1, 3)
    x = np.random.default_rng(1).integers(-128, 128, (3, 4, 5, 5))
    y, kept = gg.run_graph(model, x, keep=True)
    s = gg.node_forward(model.layers[3], [kept["c2"], kept["c0"]])
    assert np.array_equal(s, np.clip(kept["c2"] + kept["c0"], 0, 127))
    assert np.array_equal(y, run_int_model(model, x))
    assert np.array_equal(run_int_model(model, x[0]), y[0])


@pytest.mark.parametrize("edit,param,fragment", [
    (lambda m: setattr(m.layers[3], "inputs", ("c2", "fc")), "layers.3.inputs", "a cycle"),
    (lambda m: setattr(m.layers[3], "inputs", ("c2", "nope")), "layers.3.inputs", "dangling"),
    (lambda m: setattr(m.layers[3], "inputs", ("c2",)), "layers.3.inputs", "2..8 inputs"),
    (lambda m: setattr(m.layers[1], "inputs", ("c0", "input")), "layers.1.inputs",
     "exactly one input"),
    (lambda m: setattr(m.layers[2], "inputs", ("c0",)), "layers.1", "never read"),
    (lambda m: setattr(m.layers[3], "in_shifts", (1, 0)), "layers.3.in_shifts", "one grid"),
    (lambda m: setattr(m.layers[3], "out_scale_exp", -3), "layers.3.out_scale_exp", "grid"),
    (lambda m: setattr(m.layers[3], "relu", 1), "layers.3.relu", "true or false"),
    (lambda m: setattr(m.layers[1], "name", "c0"), "layers.1.name", "unique"),
    (lambda m: setattr(m.layers[1], "name", "input"), "layers.1.name", "letters"),
    (lambda m: setattr(m.layers[1], "name", "layers.4"), "layers.1.name", "letters"),
    (lambda m: setattr(m.layers[1], "groups", 2), "layers.1.groups", "depthwise"),
])
def test_graph_errors_name_the_node(edit, param, fragment):
    model = _residual()
    edit(model)
    with pytest.raises(ExportError) as info:
        model.validate()
    assert info.value.param == param and fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_the_format_limits_of_the_new_kinds():
    def check(layer, shape=(4, 6, 6)):
        m = IntModel(IntInput(shape, 8, 0), [layer], output="none")
        with pytest.raises(ExportError) as info:
            m.validate()
        return info.value.param
    assert check(IntMaxPool2d(kernel=3, stride=2, padding=2)) == "layers.0.padding"
    assert check(IntAvgPool2d(kernel=2, shift=33)) == "layers.0.shift"
    assert check(IntAvgPool2d(kernel=7)) == "layers.0.kernel"
    assert check(IntShift2d(offsets=np.full((4, 2), 8))) == "layers.0.offsets"
    assert check(IntAddressShift(offsets=np.full((4, 2), 2))) == "layers.0.offsets"
    assert check(IntChannelShift(r=5)) == "layers.0.r"
    assert check(IntClamp(lo=5, hi=4)) == "layers.0.hi"
    assert check(IntClamp(lo=-129, hi=4)) == "layers.0.lo"
    assert check(IntPad(pads=(0, 0, 16, 0, 0, 0))) == "layers.0.pads"
    assert check(IntGlobalAvgPool(act_bits=17)) == "layers.0.act_bits"
    assert check(IntFlatten(), shape=(8,)) == "layers.0"
