"""Graphs: the PyTorch integer forward of every node kind against the NumPy golden model, and
post-training quantization of captured models (residuals, depthwise, ReLU6, pooling, concat,
the shift kinds, mixed PE kinds): bit-exact integer inference, closeness to the float model,
and the scale rules of ``mulfree.host.ptq`` ("Graphs") checked on the quantized nodes."""

from fractions import Fraction

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mulfree.host.export_format import (IntAdd, IntAddressShift, IntAvgPool2d,
                                        IntChannelShift, IntClamp, IntConcat, IntConv2d,
                                        IntFlatten, IntGlobalAvgPool, IntInput, IntLinear,
                                        IntMaxPool2d, IntModel, IntPad, IntShift2d,
                                        layer_config, load_export, write_export)
from mulfree.host.int_inference import layer_acc, run_node
from mulfree.host.layers import (AdderConv2d, AdderLinear, AddressShift2d, ChannelShift,
                                 Shift2d, ShiftConv2d, ShiftLinear)
from mulfree.host.quant import (dequantize_output, int_forward, output_scale_exp, quantize,
                                quantized_forward)
from mulfree.params.graph_golden import node_forward, run_graph
from mulfree.params.model_golden import quantize_input, run_int_model
from mulfree.params.post_config import bias_range, shift_range


PES = ("shift", "adder", "mult")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Random integer graphs of every kind -----------------------------------------------------------

def _codes(rng, pe, wb, a, shape):
    if pe == "shift":
        return rng.integers(0, 1 << wb, shape)
    bits = a if pe == "adder" else wb
    return rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), shape)


def _weight(rng, kind, pe, a, shape_in, exp, **kw):
    """A weight node of random codes whose bias and shifts spread its outputs over the range
    on its actual input (fitted with the accumulators; the check is the golden model)."""
    wb = {"shift": int(rng.integers(2, 7)), "adder": None, "mult": int(rng.integers(2, 9))}[pe]
    if kind == "linear":
        n = int(rng.integers(3, 8))
        layer = IntLinear(pe, _codes(rng, pe, wb, a, (shape_in[0], n)), np.zeros(n, int),
                          np.zeros(n, int), False, a, wb, exp, **kw)
    else:
        groups, mult, kernel = kw.pop("groups", 1), kw.pop("multiplier", 1), kw.pop("kernel")
        c = shape_in[0]
        o = c * mult if groups != 1 else int(rng.integers(2, 6))
        per = 1 if groups != 1 else c
        layer = IntConv2d(pe, _codes(rng, pe, wb, a, (o, per) + kernel), np.zeros(o, int),
                          np.zeros(o, int), False, act_bits=a, weight_bits=wb,
                          out_scale_exp=exp, groups=groups, **kw)
    return layer


def _fit(rng, layer, x):
    acc = layer_acc(layer, torch.as_tensor(x)).numpy()
    n = acc.shape[-1]
    flat = acc.reshape(-1, n)
    spread = np.maximum(flat.max(0) - flat.min(0), 1)
    cfg = layer_config(layer)
    layer.bias = np.clip(-np.round(flat.mean(0)).astype(np.int64)
                         + rng.integers(-spread // 4, spread // 4 + 1), *bias_range(cfg))
    shift = np.ceil(np.log2(spread)).astype(np.int64) - (layer.act_bits - 1) \
        + rng.integers(-1, 2, n)
    layer.shift = np.clip(shift, *shift_range(cfg))
    layer.relu = rng.random(n) < 0.5


def _random_graph(seed, pes, batch=6):
    """Every node kind in one graph, each weight node of its own PE kind (``pes`` cycles):
    a dense conv with table shifts, a depthwise conv, a residual add, a concat, a clamp,
    padding, the three shift kinds, max and average pooling, a strided depthwise conv with
    two filters per channel, global pooling, flatten and a linear layer."""
    rng = np.random.default_rng(seed)
    a_in = int(rng.integers(4, 8))
    a = int(rng.integers(a_in, 9))
    shape = (int(rng.integers(2, 4)), int(rng.integers(6, 9)), int(rng.integers(6, 9)))
    inp = IntInput(shape, a_in, -4)
    x = rng.integers(-(1 << (a_in - 1)), 1 << (a_in - 1), (batch,) + shape)
    pe = iter(pes * 4)
    layers = []

    def add(layer, name, inputs):
        layer.name, layer.inputs = name, inputs
        if layer.kind in ("linear", "conv2d"):
            src = x if inputs[0] == "input" else \
                run_graph(IntModel(inp, list(layers), output="none"), x, keep=True)[1][inputs[0]]
            _fit(rng, layer, src)
        layers.append(layer)
        return IntModel(inp, list(layers), output="none").graph()[-1]

    def exp_of(name):
        return next(i.scale_exp for i in IntModel(inp, list(layers), output="none").graph()
                    if i.name == name)

    c1 = add(_weight(rng, "conv2d", next(pe), a, shape, -3, kernel=(3, 3), padding=1,
                     shifts=rng.integers(-1, 2, (shape[0], 2))), "c1", ("input",))
    add(_weight(rng, "conv2d", next(pe), a, c1.out_shape, -5, kernel=(3, 3), padding=1,
                groups=c1.out_shape[0]), "dw", ("c1",))
    e1, e2 = exp_of("c1"), exp_of("dw")
    g = min(e1, e2)
    shift = int(rng.integers(-1, 4))
    add(IntAdd(in_shifts=(e1 - g, e2 - g), shift=shift, relu=bool(rng.integers(0, 2)),
               act_bits=a, out_scale_exp=g + shift), "sum", ("c1", "dw"))
    e3 = exp_of("sum")
    out = max(e3, e2) + int(rng.integers(-2, 2))
    add(IntConcat(shifts=(out - e3, out - e2), act_bits=a, out_scale_exp=out), "cat",
              ("sum", "dw"))
    lim = (1 << (a - 1)) - 1
    lo = int(rng.integers(-lim, 0))
    add(IntClamp(lo=lo, hi=int(rng.integers(lo, lim))), "clamp", ("cat",))
    pads = tuple(int(v) for v in rng.integers(0, 3, 6))
    pad = add(IntPad(pads=pads), "pad", ("clamp",))
    c = pad.out_shape[0]
    add(IntShift2d(offsets=rng.integers(-7, 8, (c, 2))), "sh", ("pad",))
    add(IntAddressShift(offsets=rng.integers(-1, 2, (c, 2))), "addr", ("sh",))
    add(IntChannelShift(r=int(rng.integers(0, c + 1))), "chan", ("addr",))
    add(IntMaxPool2d(kernel=3, stride=2, padding=1), "mp", ("chan",))
    ap = add(IntAvgPool2d(kernel=(3, 2), stride=1, padding=(1, 1),
                          shift=int(rng.integers(-2, 3)), act_bits=a), "ap", ("mp",))
    dw2 = add(_weight(rng, "conv2d", next(pe), a, ap.out_shape, -2, kernel=(2, 3), stride=2,
                      padding=(1, 1), groups=ap.out_shape[0], multiplier=2), "dw2", ("ap",))
    add(IntGlobalAvgPool(shift=int(rng.integers(-2, 3)), act_bits=a), "gap", ("dw2",))
    fl = add(IntFlatten(), "fl", ("gap",))
    add(_weight(rng, "linear", next(pe), a, fl.out_shape, -1), "fc", ("fl",))
    assert dw2.out_shape[0] == 2 * ap.out_shape[0]
    return IntModel(inp, layers, output="argmax"), x


@pytest.mark.parametrize("pes", [("shift",), ("adder",), ("mult",), ("mult", "adder", "shift"),
                                 ("shift", "adder")])
def test_int_forward_equals_golden_on_random_graphs_of_every_kind(pes):
    for seed in range(3):
        model, x = _random_graph([seed, len(pes), PES.index(pes[0])], pes)
        want, kept = run_graph(model, x, keep=True)
        got = int_forward(model, torch.as_tensor(x))
        assert got.dtype == torch.int64
        np.testing.assert_array_equal(got.numpy(), want)
        # The graph is exercised: no node's output is constant.
        assert all(len(np.unique(v)) > 1 for v in kept.values()), \
            [k for k, v in kept.items() if len(np.unique(v)) <= 1]
        np.testing.assert_array_equal(int_forward(model, x[0]).numpy(), want[0])


def test_large_batches_go_through_im2col_in_pieces(monkeypatch):
    from mulfree.host import int_inference
    model, x = _random_graph(7, ("adder", "mult", "shift"), batch=9)
    want = run_int_model(model, x)
    monkeypatch.setattr(int_inference, "_CHUNK", 700)         # a few samples per piece
    np.testing.assert_array_equal(int_forward(model, x).numpy(), want)


def _xs(rng, shape, bits, n=1, batch=3):
    return [rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), (batch,) + shape)
            for _ in range(n)]


EXTREMES = [
    ("add left 16", IntAdd(in_shifts=(0, 32), shift=-16, relu=False, act_bits=8), 2),
    ("add right 62 relu", IntAdd(in_shifts=(3, 0, 0), shift=62, relu=True, act_bits=8), 3),
    ("add ties", IntAdd(in_shifts=(0, 0), shift=1, relu=False, act_bits=4), 2),
    ("add wide", IntAdd(in_shifts=(1, 0), shift=2, relu=True, act_bits=16), 2),
    ("add wide left 16", IntAdd(in_shifts=(32, 32, 32), shift=-16, relu=False, act_bits=16), 3),
    ("concat ends", IntConcat(shifts=(-16, 62, 1), act_bits=8), 3),
    ("concat ties", IntConcat(shifts=(1, 2), act_bits=6), 2),
    ("avg 7x7 shift -16", IntAvgPool2d(kernel=7, stride=1, padding=3, shift=-16, act_bits=16),
     1),
    ("avg 3x3 shift 32", IntAvgPool2d(kernel=3, stride=2, padding=1, shift=32, act_bits=8), 1),
    ("avg 3x1 ties", IntAvgPool2d(kernel=(3, 1), stride=(1, 2), padding=(1, 0), shift=0,
                                  act_bits=4), 1),
    ("avg 2x2", IntAvgPool2d(kernel=2, shift=-1, act_bits=8), 1),
    ("global 7x7", IntGlobalAvgPool(shift=0, act_bits=8), 1),
    ("global -16", IntGlobalAvgPool(shift=-16, act_bits=12), 1),
    ("max 3/2/1", IntMaxPool2d(kernel=3, stride=2, padding=1), 1),
    ("max 15", IntMaxPool2d(kernel=(7, 5), stride=(3, 1), padding=(3, 2)), 1),
    ("subsample", IntMaxPool2d(kernel=1, stride=(2, 3)), 1),
    ("clamp point", IntClamp(lo=5, hi=5), 1),
    ("pad", IntPad(pads=(3, 0, 2, 1, 0, 4)), 1),
    ("shift2d 7", IntShift2d(offsets=np.array([[7, -7], [-7, 0], [0, 7], [3, -2]])), 1),
    ("address ends", IntAddressShift(offsets=np.array([[-1, -1], [1, 1], [0, 1], [-1, 0]])),
     1),
    ("channel 0", IntChannelShift(r=0), 1),
    ("channel C", IntChannelShift(r=4), 1),
    ("channel 3", IntChannelShift(r=3), 1),
    ("flatten", IntFlatten(), 1),
]


@pytest.mark.parametrize("name, layer, n", EXTREMES, ids=[e[0] for e in EXTREMES])
def test_node_kinds_equal_golden_at_their_extremes(name, layer, n):
    rng = np.random.default_rng(len(name))
    bits = 8 if "wide" not in name else 16
    for shape in ((4, 7, 7), (4, 9, 6)):
        xs = _xs(rng, shape, bits, n)
        if "ties" in name:                 # every value odd: many exact halves to round
            xs = [2 * (x // 2) + 1 for x in xs]
        want = node_forward(layer, xs)
        got = run_node(layer, [torch.as_tensor(x) for x in xs])
        np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("pe", PES)
@pytest.mark.parametrize("multiplier", [1, 3])
def test_depthwise_conv_equals_golden(pe, multiplier):
    rng = np.random.default_rng([PES.index(pe), multiplier])
    for stride, padding, kernel in (((1, 1), (1, 1), (3, 3)), ((2, 1), (0, 1), (2, 3))):
        layer = _weight(rng, "conv2d", pe, 8, (5, 7, 6), -3, kernel=kernel, stride=stride,
                        padding=padding, groups=5, multiplier=multiplier,
                        shifts=rng.integers(-1, 2, (5, 2)))
        (x,) = _xs(rng, (5, 7, 6), 8, batch=4)
        _fit(rng, layer, x)
        want = node_forward(layer, [x])
        np.testing.assert_array_equal(run_node(layer, [torch.as_tensor(x)]).numpy(), want)
        assert len(np.unique(want)) > 2


def test_output_scale_is_the_last_nodes():
    # The last node is an add: its out_scale_exp, not the last weight layer's.
    conv = IntConv2d("mult", np.ones((2, 2, 1, 1), int), [0, 0], [0, 0], act_bits=8,
                     weight_bits=8, out_scale_exp=-4, name="c")
    model = IntModel(IntInput((2, 3, 3), 8, -3), [
        conv, IntAdd(in_shifts=(1, 0), shift=2, act_bits=8, out_scale_exp=-2, name="s",
                     inputs=("input", "c")),
        IntFlatten(name="f", inputs=("s",))], output="none")
    assert output_scale_exp(model) == -2
    y = torch.tensor([[4, -1]])
    assert dequantize_output(model, y).tolist() == [[1.0, -0.25]]


# Captured models ---------------------------------------------------------------------------

def _calibrate(model, x, seed=0):
    """BatchNorm statistics of ``x`` exactly (one cumulative batch) and power-of-two BN scales
    ``gamma / sigma`` (``1 / sigma`` rounded to a power of two, times ``2^-1 .. 2^1``), so that
    shift and adder layers fold their BN exactly and the float model is what the integer model
    approximates with rounding only."""
    bns = [m for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    for m in bns:
        m.momentum = None
        m.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in bns:
            sd = torch.sqrt(m.running_var + m.eps)
            p = torch.round(-torch.log2(sd)) + torch.randint(-1, 2, sd.shape, generator=g)
            m.weight.copy_(sd * torch.exp2(p))
            m.bias.copy_(torch.rand(sd.shape, generator=g) * 0.4 - 0.1)
    return model


def _check(model, x, im, err_max, agree_min, golden=8):
    """Integer forward equals the golden model; the dequantized outputs are close to the float
    model (a wrong scale anywhere doubles or halves a tensor: far beyond ``err_max``)."""
    xq = quantize_input(im, x.numpy())
    y = int_forward(im, xq)
    np.testing.assert_array_equal(y[:golden].numpy(), run_int_model(im, xq[:golden]))
    got = dequantize_output(im, y)
    np.testing.assert_array_equal(got.numpy(), quantized_forward(im, x).numpy())
    with torch.no_grad():
        want = model(x).double()
    err = ((got - want).abs().max() / want.abs().max()).item()
    agree = (got.argmax(1) == want.argmax(1)).double().mean().item()
    assert err < err_max and agree >= agree_min, (err, agree)
    return err, agree


CONV = {"mult": nn.Conv2d, "adder": AdderConv2d,
        "shift": lambda *a, **k: ShiftConv2d(*a, mode="q", weight_bits=5, **k)}


class _Block(nn.Module):
    def __init__(self, cin, cout, stride, shortcut, conv):
        super().__init__()
        self.conv1, self.bn1 = conv(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv(cout, cout, 3, padding=1), nn.BatchNorm2d(cout)
        self.pad, self.short = (cout - cin) // 2, None
        if shortcut == "B" and (stride != 1 or cin != cout):
            self.short = nn.Sequential(conv(cin, cout, 1, stride=stride), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.short is not None:
            sc = self.short(x)
        elif self.pad:
            sc = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        else:
            sc = x
        return F.relu(out + sc)


class _ResNet(nn.Module):
    """A CIFAR ResNet in miniature: multiplier stem and classifier, a body of ``body``."""

    def __init__(self, shortcut, body="mult"):
        super().__init__()
        torch.manual_seed(5)
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.layers = nn.Sequential(_Block(8, 8, 1, shortcut, CONV[body]),
                                    _Block(8, 16, 2, shortcut, CONV[body]))
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.layers(F.relu(self.bn(self.conv(x))))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(x.view(x.size(0), -1))


@pytest.mark.parametrize("shortcut, body", [("A", "mult"), ("B", "mult"), ("A", "shift"),
                                            ("B", "adder"), ("A", "adder")])
def test_resnet_blocks(shortcut, body):
    torch.manual_seed(11)
    x = torch.randn(80, 3, 12, 12)
    model = _calibrate(_ResNet(shortcut, body), x)
    im = quantize(model, x)
    kinds = [layer.kind for layer in im.layers]
    assert kinds.count("add") == 2 and "global_avgpool" in kinds
    assert ("pad" in kinds) == (shortcut == "A")
    pes = {layer.pe for layer in im.layers if layer.kind in ("conv2d", "linear")}
    assert pes == {"mult", body}
    _check(model, x, im, 0.15, 0.85)
    # The scale rules of an add, on the integer tensors the quantizer calibrated on.
    xq = quantize_input(im, x.numpy())
    _, kept = run_graph(im, xq, keep=True)
    for info in im.graph():
        layer = im.layers[info.index]
        if layer.kind != "add":
            continue
        g = min(info.in_exps)
        assert layer.in_shifts == tuple(e - g for e in info.in_exps)
        assert layer.out_scale_exp == g + layer.shift
        real = sum(kept[name].astype(object) * Fraction(2) ** e
                   for name, e in zip(info.inputs, info.in_exps))
        top = max(max(v, 0) if layer.relu else abs(v) for v in real.flatten())
        assert top <= 127 * Fraction(2) ** info.scale_exp < 2 * top, (top, info.scale_exp)


class _DWS(nn.Module):
    """Depthwise-separable blocks with ReLU6, MaxPool2d(3, 2, 1), AvgPool2d(3, 1, 1) and a
    ``torch.cat`` of a pooled and a convolved branch; ``pe`` for the depthwise and pointwise
    convolutions (``"shiftadd"``: a shift then an adder pointwise convolution)."""

    def __init__(self, pe):
        super().__init__()
        torch.manual_seed(6)
        dw = CONV["adder" if pe == "shiftadd" else pe]
        self.conv, self.bn = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.dw, self.bn1 = dw(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8)
        if pe == "shiftadd":
            self.pw = nn.Sequential(CONV["shift"](8, 8, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                    CONV["adder"](8, 8, 1))
        else:
            self.pw = dw(8, 8, 1, bias=False)
        self.bn2, self.avg = nn.BatchNorm2d(8), nn.AvgPool2d(3, 1, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        x = self.pool(F.relu6(self.bn(self.conv(x))))
        y = nn.functional.hardtanh(self.bn1(self.dw(x)), 0.0, 6.0)
        y = torch.clamp(self.bn2(self.pw(y)), 0, 6)
        return self.fc(torch.cat([self.avg(x), y], 1).mean((2, 3)))


@pytest.mark.parametrize("pe", ["mult", "shift", "adder", "shiftadd"])
def test_depthwise_separable_relu6_pools_and_concat(pe):
    torch.manual_seed(12)
    x = torch.randn(80, 3, 12, 12)
    model = _calibrate(_DWS(pe), x)
    im = quantize(model, x)
    by_kind = {}
    for layer in im.layers:
        by_kind.setdefault(layer.kind, []).append(layer)
    assert by_kind["maxpool2d"][0].kernel == (3, 3) and by_kind["maxpool2d"][0].padding == (1, 1)
    assert by_kind["avgpool2d"][0].kernel == (3, 3) and len(by_kind["concat"]) == 1
    assert by_kind["conv2d"][1].groups == 8
    assert len(by_kind["clamp"]) == 3
    _check(model, x, im, 0.15, 0.85)
    infos = {i.name: i for i in im.graph()}
    _, kept = run_graph(im, quantize_input(im, x.numpy()), keep=True)
    for layer in im.layers:
        info = infos[layer.name]
        if layer.kind == "clamp":                      # ReLU6 on the input's grid
            hi = int(np.floor(6 * 2.0 ** -info.in_exps[0] + 0.5))
            assert (layer.lo, layer.hi) == (0, min(hi, (1 << (info.in_bits[0] - 1)) - 1))
        if layer.kind == "concat":
            assert layer.shifts == tuple(info.scale_exp - e for e in info.in_exps)
            top = max(int(np.abs(kept[name]).max()) * Fraction(2) ** e
                      for name, e in zip(info.inputs, info.in_exps))
            assert top <= 127 * Fraction(2) ** info.scale_exp < 2 * top
        if layer.kind in ("avgpool2d", "global_avgpool"):
            assert info.scale_exp == info.in_exps[0] + layer.shift
            # The smallest exponent holding the largest real average S 2^E / N.
            src = torch.as_tensor(kept[info.inputs[0]], dtype=torch.float64)
            if layer.kind == "avgpool2d":
                sums = F.avg_pool2d(src, layer.kernel, layer.stride, layer.padding,
                                    divisor_override=1)
                n = layer.kernel[0] * layer.kernel[1]
            else:
                sums, n = src.sum((2, 3)), src.shape[2] * src.shape[3]
            top = Fraction(int(sums.abs().max()), n) * Fraction(2) ** info.in_exps[0]
            assert top <= 127 * Fraction(2) ** info.scale_exp < 2 * top


class _Clamp(nn.Module):
    def __init__(self, lo, hi):
        super().__init__()
        torch.manual_seed(15)
        self.conv, self.lo, self.hi = nn.Conv2d(2, 3, 3, padding=1), lo, hi

    def forward(self, x):
        y = self.conv(x)
        return torch.clamp(y, self.lo, self.hi) + y        # the conv has a second reader


@pytest.mark.parametrize("lo, hi", [(-0.3, 0.71), (-100.0, 0.05), (0.2, 1e6), (-0.5, None)])
def test_clamp_bounds_round_half_up_on_the_grid_and_saturate(lo, hi):
    torch.manual_seed(16)
    x = torch.randn(30, 2, 5, 5)
    model = _Clamp(lo, hi).eval()
    im = quantize(model, x)
    info, layer = im.graph()[1], im.layers[1]
    assert layer.kind == "clamp" and info.in_exps[0] == im.layers[0].out_scale_exp
    e = info.in_exps[0]

    def bound(v, default):
        if v is None:
            return default
        return max(-128, min(127, (Fraction(v) * Fraction(2) ** -e + Fraction(1, 2)).__floor__()))
    assert (layer.lo, layer.hi) == (bound(lo, -128), bound(hi, 127))
    _check(model, x, im, 0.05, 0.9)


class _Shifts(nn.Module):
    """Shift2d(5) and Shift2d(3) folded into the 1x1 convolutions after them, the address and
    channel shifts, a residual add; ``pe`` for the 1x1 convolutions."""

    def __init__(self, pe):
        super().__init__()
        torch.manual_seed(7)
        conv = CONV[pe]
        self.conv, self.bn = nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12)
        self.s5, self.c1, self.bn1 = Shift2d(12, 5, 1), conv(12, 12, 1), nn.BatchNorm2d(12)
        self.s3, self.c2, self.bn2 = Shift2d(12, 3), conv(12, 12, 1), nn.BatchNorm2d(12)
        self.addr, self.chan = AddressShift2d(12), ChannelShift(12, 5)
        self.fc = ShiftLinear(12, 4, mode="q", weight_bits=5)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))
        y = F.relu(self.bn1(self.c1(self.s5(x))))
        y = self.bn2(self.c2(self.s3(y)))
        y = self.chan(self.addr(F.relu(y + x)))
        return self.fc(y.mean((2, 3)))


@pytest.mark.parametrize("pe", ["mult", "shift", "adder"])
def test_shift_address_and_channel_shift_blocks(pe):
    torch.manual_seed(13)
    x = torch.randn(80, 3, 10, 10)
    model = _calibrate(_Shifts(pe), x)
    im = quantize(model, x)
    kinds = [layer.kind for layer in im.layers]
    assert {"address_shift", "channel_shift", "add"} <= set(kinds) and "shift2d" not in kinds
    folded = [layer for layer in im.layers if layer.kind == "conv2d" and layer.shifts is not None]
    assert len(folded) == 2
    np.testing.assert_array_equal(folded[0].shifts, np.array(model.s5.offsets))
    np.testing.assert_array_equal(folded[1].shifts, np.array(model.s3.offsets))
    _check(model, x, im, 0.15, 0.85)


class _Wrap(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)


@pytest.mark.parametrize("pe", PES)
def test_a_chain_captured_by_fx_is_the_sequential_chain(pe):
    torch.manual_seed(8)
    lin = {"mult": nn.Linear, "adder": AdderLinear,
           "shift": lambda i, o: ShiftLinear(i, o, mode="q", weight_bits=5)}[pe]
    seq = nn.Sequential(
        nn.Sequential(Shift2d(3, 3, group=1), CONV[pe](3, 6, 3, padding=1)),
        nn.BatchNorm2d(6), nn.ReLU(), nn.Identity(), CONV[pe](6, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Dropout(),
        lin(8 * 2 * 2, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.Linear(10, 7))
    x = torch.randn(60, 3, 9, 9)
    _calibrate(seq, x)
    chain = quantize(seq, x)
    graph = quantize(_Wrap(seq), x)
    assert graph == chain
    assert all(layer.name is None and layer.inputs is None for layer in graph.layers)


def test_adder_layers_raise_the_exponent_that_sets_their_input():
    from mulfree.host.quant_weights import adder_weight_exp
    torch.manual_seed(9)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.conv2 = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(2, 4, 3, padding=1)
            self.a1 = AdderConv2d(4, 4, 3, padding=1)          # through max pooling and pad
            self.a2 = AdderConv2d(4, 4, 1)                     # after an add
            self.a0 = AdderConv2d(2, 4, 1)                     # on the model's input
            with torch.no_grad():
                for m, k in ((self.a1, 4e4), (self.a2, 6e4), (self.a0, 3e4)):
                    m.weight.mul_(k)

        def forward(self, x):
            y = F.pad(F.max_pool2d(self.conv(x), 2), (1, 1, 1, 1))
            z = self.a2(self.conv(x) + self.conv2(x))
            return self.a1(y).mean((2, 3)) + self.a0(x).mean((2, 3)) + z.mean((2, 3))

    model = Net().eval()
    x = torch.randn(40, 2, 6, 6) * 0.1
    im = quantize(model, x)
    infos = {i.name: i for i in im.graph()}
    for name, src in (("a1", "conv"), ("a2", "add"), ("a0", "input")):
        w = getattr(model, name).weight.detach().double()
        e = infos[name].in_exps[0]
        # The lowest exponent at which the clipped weights' folded biases fit.
        item = {"module": getattr(model, name), "pe": "adder", "conv": True, "bn": None,
                "path": name}
        assert e == adder_weight_exp(item, 8), (name, e)
        codes = im.layers[infos[name].index].codes
        np.testing.assert_array_equal(
            codes, torch.floor(w * 2.0 ** -e + 0.5).clamp(-128, 127).numpy())
        exp = im.input.scale_exp if src == "input" else infos[src].scale_exp
        assert exp == e
    add = im.layers[infos["add"].index]                 # the add's inputs keep their scales
    assert add.in_shifts == tuple(e - min(infos["add"].in_exps) for e in infos["add"].in_exps)
    assert infos["conv"].scale_exp < infos["add"].scale_exp
    _check(model, x, im, 0.05, 0.9)


def test_graph_export_round_trip(tmp_path):
    torch.manual_seed(14)
    x = torch.randn(40, 3, 12, 12)
    model = _calibrate(_ResNet("A", "shift"), x)
    im = quantize(model, x)
    write_export(im, tmp_path / "m")
    loaded = load_export(tmp_path / "m")
    assert loaded == im
    xq = quantize_input(im, x[:4].numpy())
    np.testing.assert_array_equal(run_int_model(loaded, xq), int_forward(im, xq).numpy())


@pytest.mark.parametrize("name, form, kw", [
    ("resnet8", "adder", {}), ("resnet8", "shift", dict(shortcut="B")),
    ("shiftnet", "mult", dict(kernel=5, blocks=1)), ("addressnet", "shiftadd", dict(blocks=1)),
    ("mobilenet_dws", "shift", {})])
def test_zoo_models(name, form, kw):
    from mulfree.host import zoo
    torch.manual_seed(10)
    model = zoo.build_zoo_model(name, form, widths=(8, 16, 32), **kw)
    x = torch.randn(48, 3, 16, 16)
    _calibrate(model, x)
    im = quantize(model, x)
    xq = quantize_input(im, x[:4].numpy())
    np.testing.assert_array_equal(int_forward(im, xq).numpy(), run_int_model(im, xq))
    pes = {layer.pe for layer in im.layers if layer.kind in ("conv2d", "linear")}
    assert form in pes or (form == "shiftadd" and pes >= {"shift", "adder"})
