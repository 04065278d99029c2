"""Graphs: the PyTorch integer forward of every node kind against the NumPy golden model, and
post-training quantization of captured models (residuals, depthwise, ReLU6, pooling, concat,
the shift kinds, mixed PE kinds): bit-exact integer inference, closeness to the float model,
and the scale rules of ``mulfree.host.ptq`` ("Graphs") checked on the quantized nodes."""

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


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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
