"""Tests of :mod:`mulfree.host.quant`: integer-exact PyTorch inference against the NumPy golden
model, post-training quantization of float models, its errors, and the export round trip."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from mulfree.params.post_config import bias_range, shift_range
from mulfree.host.export_format import (IntConv2d, IntFlatten, IntInput, IntLinear,
                                        IntMaxPool2d, IntModel, layer_config, load_export,
                                        write_export)
from mulfree.host.layers import (AdderConv2d, AdderLinear, Shift2d, ShiftConv2d, ShiftLinear)
from mulfree.host.quant import (QATWrapper, QuantizeError, dequantize_output, int_forward,
                                layer_acc, postprocess_torch, quantize, quantized_forward)
from mulfree.params.layer_golden import PostParams, postprocess
from mulfree.params.model_golden import predict, quantize_input, run_int_model


PES = ("shift", "adder", "mult")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Random integer models ----------------------------------------------------------------------

def _random_codes(rng, pe, wb, ab, shape):
    if pe == "shift":
        return rng.integers(0, 1 << wb, shape)          # both zero codes included
    bits = ab if pe == "adder" else wb
    return rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), shape)


def _fit_post(rng, layer, x):
    """Random bias, relu and shifts that keep the outputs spread over the range (not all 0
    or saturated), from the layer's accumulators on its actual input ``x``."""
    from mulfree.params.layer_golden import conv2d_acc, matmul_acc
    from mulfree.params.shift_golden import table_shift
    cfg = layer_config(layer)
    if layer.kind == "linear":
        acc = matmul_acc(cfg, x, layer.codes)
    else:
        accs = []
        for s in x:
            if layer.shifts is not None:
                s = table_shift(s, layer.shifts[:, 0], layer.shifts[:, 1])
            accs.append(np.moveaxis(conv2d_acc(cfg, s, layer.codes, layer.stride,
                                               layer.padding), 0, -1))
        acc = np.stack(accs)
    n = acc.shape[-1]
    flat = acc.reshape(-1, n)
    spread = np.maximum(flat.max(0) - flat.min(0), 1)
    blo, bhi = bias_range(cfg)
    bias = np.clip(-np.round(flat.mean(0)).astype(np.int64)
                   + rng.integers(-spread // 4, spread // 4 + 1), blo, bhi)
    shift = np.ceil(np.log2(spread)).astype(np.int64) - (layer.act_bits - 1) \
        + rng.integers(-1, 2, n)
    slo, shi = shift_range(cfg)
    # A few channels at the ends of the shift range, the rest spread.
    if n > 3:
        shift[0], shift[1] = slo, shi
    layer.bias = bias
    layer.shift = np.clip(shift, slo, shi)
    layer.relu = rng.random(n) < 0.5


def _random_model(rng, pe, kind, batch=8):
    """A random valid IntModel of one PE kind and its random full-range inputs.

    kind: "linear" (linear, linear), "conv" (conv with table shift and stride/padding, pool,
    flatten, linear), "mixed" (conv, conv, flatten, linear with widening act_bits).
    """
    wb = {"shift": int(rng.integers(2, 7)), "adder": None, "mult": int(rng.integers(2, 9))}[pe]
    a_in = int(rng.integers(4, 9))
    a = int(rng.integers(a_in, 10))
    if kind == "linear":
        shape = (int(rng.integers(3, 20)),)
    else:
        shape = (int(rng.integers(1, 4)), int(rng.integers(5, 9)), int(rng.integers(5, 9)))
    inp = IntInput(shape, a_in, -3)
    x = rng.integers(-(1 << (a_in - 1)), 1 << (a_in - 1), (batch,) + shape)
    layers = []
    cur = x
    plan = {"linear": ["linear", "linear"],
            "conv": ["conv_shift", "pool", "flatten", "linear"],
            "mixed": ["conv", "conv_stride", "flatten", "linear"]}[kind]
    for step in plan:
        if step == "pool":
            layer = IntMaxPool2d()
        elif step == "flatten":
            layer = IntFlatten()
        elif step == "linear":
            k = cur.shape[1]
            n = int(rng.integers(3, 8))
            layer = IntLinear(pe, _random_codes(rng, pe, wb, a, (k, n)), np.zeros(n, int),
                              np.zeros(n, int), False, a, wb, -2)
        else:
            c = cur.shape[1]
            o = int(rng.integers(2, 5))
            kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
            stride = (2, 1) if step == "conv_stride" else 1
            # Padding below the kernel size: a window of nothing but padding is refused.
            padding = (int(rng.integers(0, min(2, kh))), int(rng.integers(0, min(2, kw))))
            shifts = rng.integers(-1, 2, (c, 2)) if step == "conv_shift" else None
            layer = IntConv2d(pe, _random_codes(rng, pe, wb, a, (o, c, kh, kw)),
                              np.zeros(o, int), np.zeros(o, int), False, stride, padding,
                              shifts, a, wb, -2)
        if layer.kind in ("linear", "conv2d"):
            _fit_post(rng, layer, cur)
        layers.append(layer)
        model = IntModel(inp, list(layers), output="none")
        cur = run_int_model(model, x)
    out = "argmax" if cur.ndim == 2 else "none"
    return IntModel(inp, layers, output=out), x


@pytest.mark.parametrize("kind", ["linear", "conv", "mixed"])
@pytest.mark.parametrize("pe", PES)
def test_int_forward_equals_golden_random_models(pe, kind):
    rng = np.random.default_rng([PES.index(pe), len(kind)])
    for _ in range(3):
        model, x = _random_model(rng, pe, kind)
        want = run_int_model(model, x)
        got = int_forward(model, torch.as_tensor(x))
        assert got.dtype == torch.int64
        np.testing.assert_array_equal(got.numpy(), want)
        # Not trivially all zero or all saturated.
        assert len(np.unique(want)) > 2
        # Unbatched input, NumPy input.
        np.testing.assert_array_equal(int_forward(model, x[0]).numpy(), want[0])


def test_postprocess_matches_golden_on_ties_and_extremes():
    rng = np.random.default_rng(1)
    layer = IntLinear("shift", np.zeros((1024, 8), int), np.zeros(8, int), np.zeros(8, int),
                      False, 8, 5)
    cfg = layer_config(layer)
    lo, hi = cfg.acc_range
    blo, bhi = bias_range(cfg)
    slo, shi = shift_range(cfg)
    shift = np.array([slo, -1, 0, 1, 2, 5, shi - 1, shi])
    # Exact ties (odd multiples of 2^(s-1)), extremes and random values.
    ties = (2 * rng.integers(-50, 50, (64, 8)) + 1) << np.maximum(shift - 1, 0)
    acc = np.concatenate([np.clip(ties, lo, hi), rng.integers(lo, hi + 1, (64, 8)),
                          np.full((1, 8), lo), np.full((1, 8), hi)])
    for bias in (np.zeros(8, int), np.full(8, blo), np.full(8, bhi),
                 rng.integers(-1000, 1000, 8)):
        for relu in (False, True):
            want = postprocess(cfg, acc, PostParams(bias, shift, relu))
            got = postprocess_torch(torch.as_tensor(acc), bias, shift, np.full(8, relu), 8)
            np.testing.assert_array_equal(got.numpy(), want)


def test_round_half_up_known_values():
    # 5/2 = 2.5 -> 3, -5/2 = -2.5 -> -2, -1/2 -> 0, 3/4 -> 1, -3/4 -> -1
    acc = torch.tensor([[5, -5, -1, 3, -3]])
    got = postprocess_torch(acc, np.zeros(5, int), np.array([1, 1, 1, 2, 2]),
                            np.zeros(5, bool), 8)
    assert got.tolist() == [[3, -2, 0, 1, -1]]


# Float models -------------------------------------------------------------------------------

def _calibrate_bn(model, x):
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.weight.uniform_(0.5, 2.0)
                m.bias.uniform_(-0.3, 0.3)


def _compare(model, x, int_model):
    with torch.no_grad():
        want = model(x).double()
    xq = quantize_input(int_model, x.numpy())
    y = int_forward(int_model, xq)
    np.testing.assert_array_equal(y[:40].numpy(), run_int_model(int_model, xq[:40]))
    got = dequantize_output(int_model, y)
    np.testing.assert_array_equal(got.numpy(), quantized_forward(int_model, x).numpy())
    err = (got - want).abs().max().item() / want.abs().max().item()
    agree = (got.argmax(1) == want.argmax(1)).double().mean().item()
    return err, agree


def _mlp(pe):
    torch.manual_seed(0)
    lin = {"mult": nn.Linear, "adder": AdderLinear,
           "shift": lambda i, o: ShiftLinear(i, o, mode="q", weight_bits=5)}[pe]
    return nn.Sequential(lin(20, 32), nn.ReLU(), lin(32, 16), nn.ReLU(), lin(16, 6))


def _cnn(pe, bn=True):
    torch.manual_seed(1)
    conv = {"mult": nn.Conv2d, "adder": AdderConv2d,
            "shift": lambda i, o, k, padding: ShiftConv2d(i, o, k, padding=padding, mode="ps",
                                                          weight_bits=5)}[pe]
    lin = {"mult": nn.Linear, "adder": AdderLinear,
           "shift": lambda i, o: ShiftLinear(i, o, mode="q", weight_bits=5)}[pe]
    norm2 = nn.BatchNorm2d if bn else (lambda c: nn.Identity())
    norm1 = nn.BatchNorm1d if bn else (lambda c: nn.Identity())
    return nn.Sequential(
        conv(3, 8, 3, padding=1), norm2(8), nn.ReLU(), nn.MaxPool2d(2),
        conv(8, 8, 3, padding=1), norm2(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), lin(8 * 2 * 2, 16), norm1(16), nn.ReLU(), nn.Dropout(0.5),
        lin(16, 5))


@pytest.mark.parametrize("pe", PES)
def test_quantize_mlp_close_to_float(pe):
    model = _mlp(pe).eval()
    torch.manual_seed(5)
    x = torch.randn(400, 20)
    im = quantize(model, x[:200])
    assert im.output == "argmax" and im.input.act_bits == 8
    err, agree = _compare(model, x[:200], im)
    assert err < 0.05, err
    assert agree > 0.85, agree
    # Unseen data may exceed the calibration maxima and saturate; the classes still agree.
    _, agree = _compare(model, x[200:], im)
    assert agree > 0.85, agree


def test_quantize_mult_cnn_with_bn_close_to_float():
    # Multiplier layers fold BN exactly into the weights: only rounding errors remain.
    model = _cnn("mult")
    x = torch.randn(300, 3, 8, 8)
    _calibrate_bn(model, x)
    im = quantize(model, x)
    err, agree = _compare(model, x, im)
    assert err < 0.05, err
    assert agree > 0.9, agree


@pytest.mark.parametrize("pe", ["shift", "adder"])
def test_quantize_cnn_without_bn_close_to_float(pe):
    model = _cnn(pe, bn=False).eval()
    x = torch.randn(300, 3, 8, 8)
    im = quantize(model, x)
    err, agree = _compare(model, x, im)
    assert err < 0.08, err
    assert agree > 0.85, agree


def _pow2_bn(model):
    """Set every BN's scale gamma/sigma to an exact power of two (times a sign)."""
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                sigma = torch.sqrt(m.running_var + m.eps)
                p = torch.randint(-2, 3, sigma.shape).float()
                m.weight.copy_(sigma * torch.exp2(p))


@pytest.mark.parametrize("pe", ["shift", "adder"])
def test_bn_power_of_two_folding(pe):
    # With BN scales that are powers of two the folding is exact: the quantized model is as
    # close as without BN. With arbitrary scales it is within the sqrt(2) approximation.
    model = _cnn(pe)
    x = torch.randn(300, 3, 8, 8)
    _calibrate_bn(model, x)
    _pow2_bn(model)
    im = quantize(model, x)
    err, agree = _compare(model, x, im)
    assert err < 0.08, err
    assert agree > 0.85, agree
    # Per-channel shifts differ: the BN scales went into them (a layer whose outputs need a
    # left shift beyond act_bits has them all clamped there).
    assert any(len(set(l.shift.tolist())) > 1 for l in im.layers if hasattr(l, "shift"))


def test_bn_negative_scale_negates_shift_codes():
    torch.manual_seed(3)
    lin = ShiftLinear(10, 6, mode="q", weight_bits=5)
    bn = nn.BatchNorm1d(6)
    model = nn.Sequential(lin, bn, nn.ReLU(), ShiftLinear(6, 4, mode="q", weight_bits=5))
    x = torch.randn(300, 10)
    _calibrate_bn(model, x)
    with torch.no_grad():
        sigma = torch.sqrt(bn.running_var + bn.eps)
        bn.weight.copy_(sigma * torch.tensor([1., -1., 2., -0.5, 1., -4.]))
    im = quantize(model, x)
    codes = im.layers[0].codes                       # [K, N]
    ref = lin.weight_codes().T
    flip = 1 << 4
    for n, neg in enumerate([0, 1, 0, 1, 0, 1]):
        want = np.where((ref[:, n] & (flip - 1)) != 0, ref[:, n] ^ (flip * neg), ref[:, n])
        np.testing.assert_array_equal(codes[:, n], want)
    err, agree = _compare(model, x, im)
    assert err < 0.05, err


def test_adder_weights_beyond_the_range_are_clipped_exactly():
    # Weights on the grid 2^-3, some far beyond the activations' range [-128, 127] * 2^-3:
    # they are clipped to its ends and the constant they lose is in the bias, so the layer
    # computes -sum|x - w| + b exactly (Python integers on the grid).
    layer = AdderLinear(6, 3)
    w = torch.tensor([[1, 30, -2, 5, 0, -40], [3, 3, 3, 3, 3, 3], [100, -100, 7, 0, 1, 2]],
                     dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(torch.tensor([0.5, -1.25, 2.0]))
    model = nn.Sequential(layer).double()
    x = torch.tensor([[1.0, -2.5, 15.875, -16.0, 0.125, 3.0],
                      [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    im = quantize(model, x, input_scale_exp=-3)
    codes = im.layers[0].codes
    assert codes.max() == 127 and codes.min() == -128          # clipped
    xq = torch.round(x * 8).to(torch.int64)
    acc = layer_acc(im.layers[0], xq) + torch.as_tensor(im.layers[0].bias)
    want = [[-sum(abs(int(xi) - int(wi) * 8) for xi, wi in zip(row, wrow)) + int(bi * 8)
             for wrow, bi in zip(w.tolist(), [0.5, -1.25, 2.0])] for row in xq.tolist()]
    assert acc.tolist() == want


def test_adder_exponent_is_raised_until_the_folded_bias_fits():
    # Weights 10^4 times the inputs: clipped at the inputs' grid their excess would not fit
    # the bias register, so the input exponent rises to adder_weight_exp's: the lowest at
    # which every folded bias fits.
    torch.manual_seed(4)
    layer = AdderLinear(12, 5)
    with torch.no_grad():
        layer.weight.mul_(1e4)
    model = nn.Sequential(layer, nn.BatchNorm1d(5), nn.ReLU(), AdderLinear(5, 3))
    x = torch.randn(200, 12) * 0.1
    _calibrate_bn(model, x)
    im = quantize(model, x)
    from mulfree.host.quant_weights import adder_weight_exp
    item = {"module": layer, "pe": "adder", "conv": False, "bn": ("model.1", model[1]),
            "path": "model.0"}
    need = adder_weight_exp(item, 8)
    assert im.input.scale_exp == need
    assert need > math.ceil(math.log2(x.abs().max().item() / 127))
    cfg = quant_parse_cfg(im.layers[0])
    lo, hi = bias_range(cfg)
    assert lo < im.layers[0].bias.min() and im.layers[0].bias.max() < hi
    want = torch.floor(layer.weight.detach().double() * 2.0 ** -need + 0.5) \
        .clamp(-128, 127).T.numpy()
    np.testing.assert_array_equal(im.layers[0].codes, want)
    _compare(model, x, im)


def quant_parse_cfg(layer):
    from mulfree.params.int_model import layer_config
    return layer_config(layer)


def test_adder_negative_bn_scale_is_an_error():
    model = nn.Sequential(AdderLinear(4, 3), nn.BatchNorm1d(3))
    model.eval()
    with torch.no_grad():
        model[1].weight.copy_(torch.tensor([1.0, -1.0, 1.0]))
    with pytest.raises(QuantizeError, match=r"model\.1 .*channels \[1\].*model\.0"):
        quantize(model, torch.randn(10, 4))


def test_whole_model_every_kind_nested_and_export_round_trip(tmp_path):
    torch.manual_seed(7)
    model = nn.Sequential(
        nn.Sequential(Shift2d(3, 3, group=1), ShiftConv2d(3, 6, 3, padding=1, mode="q",
                                                          weight_bits=4)),
        nn.BatchNorm2d(6), nn.ReLU(), nn.Identity(),
        nn.Sequential(AdderConv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8)),
        nn.ReLU(), nn.MaxPool2d(2),
        Shift2d(8, 3), nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Flatten(), nn.Dropout(),
        AdderLinear(8 * 2 * 2, 10), nn.BatchNorm1d(10), nn.ReLU(),
        nn.Linear(10, 7), nn.ReLU(), ShiftLinear(7, 4))
    x = torch.randn(120, 3, 10, 9)
    _calibrate_bn(model, x)
    im = quantize(model, x, act_bits=7)
    kinds = [(l.kind, getattr(l, "pe", None)) for l in im.layers]
    assert kinds == [("conv2d", "shift"), ("conv2d", "adder"), ("maxpool2d", None),
                     ("conv2d", "mult"), ("flatten", None), ("linear", "adder"),
                     ("linear", "mult"), ("linear", "shift")]
    assert im.layers[0].shifts is not None and np.abs(im.layers[0].shifts).sum() > 0
    np.testing.assert_array_equal(im.layers[0].shifts, np.array(model[0][0].offsets))
    assert [bool(l.relu.all()) for l in im.layers if hasattr(l, "relu")] == \
        [True, True, True, True, True, False]
    xq = quantize_input(im, x.numpy())
    y = int_forward(im, xq)
    np.testing.assert_array_equal(y.numpy(), run_int_model(im, xq))
    write_export(im, tmp_path / "m")
    loaded = load_export(tmp_path / "m")
    assert loaded == im
    np.testing.assert_array_equal(run_int_model(loaded, xq), y.numpy())
    np.testing.assert_array_equal(predict(loaded, xq), y.argmax(1).numpy())
    # The float model and the integer one agree roughly (power-of-two BN approximations).
    with torch.no_grad():
        want = model(x).double()
    got = dequantize_output(im, y)
    assert torch.corrcoef(torch.stack([got.flatten(), want.flatten()]))[0, 1] > 0.8


def test_input_scale_exp_and_act_bits():
    model = _mlp("mult").eval()
    x = torch.randn(50, 20)
    im = quantize(model, x, act_bits=12, input_scale_exp=-5)
    assert im.input.scale_exp == -5 and im.input.act_bits == 12
    assert all(l.act_bits == 12 for l in im.layers)
    err, _ = _compare(model, x, im)
    assert err < 0.03
    with pytest.raises(ValueError, match="act_bits"):
        quantize(model, x, act_bits=1)


def test_dequantize_output_scale():
    im = IntModel(IntInput((2,), 8, -3), [IntLinear("mult", [[1], [1]], [0], [0], False, 8,
                                                    8, -6)])
    assert dequantize_output(im, torch.tensor([[64, -3]])).tolist() == [[1.0, -3 / 64]]


# Errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("model, path, words", [
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Identity(), nn.Sigmoid())),
     "model.1.1", "Sigmoid"),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.BatchNorm1d(4)),
     "model.2", "directly follow"),
    (lambda: nn.Sequential(nn.Flatten(), nn.BatchNorm1d(4)), "model.1", "directly follow"),
    # A BatchNorm1d on a map: PyTorch itself refuses it on the calibration sample.
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm1d(2)), "model.1",
     "fails on the calibration sample"),
    (lambda: nn.Sequential(nn.Conv2d(1, 4, 1), nn.Conv2d(4, 4, 1, groups=2)), "model.1",
     "groups=2"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 1), nn.MaxPool2d(2, dilation=2)), "model.1",
     "dilation 1"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 1), nn.AvgPool2d(2, count_include_pad=False)),
     "model.1", "count_include_pad True"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 1), nn.Flatten(0)), "model.1", "flatten of"),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 1), nn.Upsample(scale_factor=2)), "model.1",
     "Upsample"),
    (lambda: nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.GELU())), "model.1.0", "GELU"),
])
def test_unsupported_modules_name_their_path(model, path, words):
    with pytest.raises(QuantizeError) as info:
        quantize(model(), torch.randn(3, 1, 4, 4) if "Conv" in repr(model()) or
                 "Shift2d" in repr(model()) else torch.randn(3, 4))
    msg = str(info.value)
    assert msg.startswith(path + " ("), msg
    assert words in msg, msg
    assert "quantize supports: ShiftLinear" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("model, channels", [
    (lambda: nn.Sequential(Shift2d(1), nn.ReLU(), nn.Conv2d(1, 2, 1)), 1),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 1), Shift2d(2)), 1),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 1), nn.MaxPool2d(3)), 1),
    (lambda: nn.Sequential(nn.Conv2d(1, 2, 1), nn.AvgPool2d(2)), 1),
    (lambda: nn.Sequential(nn.Conv2d(2, 2, 1, groups=2)), 2),
    (lambda: nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(36, 4)), 1),
])
def test_sequentials_the_chain_reader_refuses_become_graphs(model, channels):
    # What the chain reader (parse_model) refuses goes through torch.fx: these arrangements
    # were errors before and now quantize, equal to the golden model.
    from mulfree.host.quant_parse import parse_model
    torch.manual_seed(3)
    model = model().eval()
    x = torch.randn(40, channels, 6, 6)
    with pytest.raises(QuantizeError):
        parse_model(model)
    im = quantize(model, x)
    xq = quantize_input(im, x.numpy())
    np.testing.assert_array_equal(int_forward(im, xq).numpy(), run_int_model(im, xq))


def test_not_a_module_or_no_weight_layer_is_an_error():
    with pytest.raises(QuantizeError, match="torch.nn.Module, not function"):
        quantize(lambda x: x, torch.randn(2, 3))
    with pytest.raises(QuantizeError, match="no weight layer"):
        quantize(nn.Sequential(nn.Flatten()), torch.randn(2, 3, 2, 2))
    # A lone layer is a model too: the same chain as its Sequential.
    torch.manual_seed(2)
    lin = nn.Linear(3, 3)
    x = torch.randn(20, 3)
    assert quantize(lin, x) == quantize(nn.Sequential(lin), x)


# Quantization-aware fine-tuning -------------------------------------------------------------

@pytest.mark.parametrize("pe", PES)
def test_qat_forward_matches_integer_model(pe):
    model = _cnn(pe)
    x = torch.randn(200, 3, 8, 8)
    _calibrate_bn(model, x)
    model.double()
    x = x.double()
    qat = QATWrapper(model, x)
    with torch.no_grad():
        got = qat(x)
    want = quantized_forward(qat.int_model, x)
    lsb = (got - want).abs() / 2.0 ** qat.out_exps[-1]
    # Every rounding is simulated: equal up to float summation order (a rare LSB).
    assert lsb.max().item() <= 1
    assert (lsb == 0).double().mean().item() > 0.99


def test_qat_fine_tuning_trains_and_exports():
    torch.manual_seed(11)
    model = nn.Sequential(ShiftLinear(8, 32, mode="q", weight_bits=5), nn.BatchNorm1d(32),
                          nn.ReLU(), nn.Linear(32, 3))
    x = torch.randn(256, 8)
    labels = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    model.train()
    with torch.no_grad():
        model(x)
    model.eval()
    qat = QATWrapper(model, x)
    opt = torch.optim.Adam(qat.parameters(), lr=0.05)
    losses = []
    for step in range(40):
        if step % 10 == 9:
            qat.recalibrate(x)                  # the ranges move while training
        opt.zero_grad()
        loss = nn.functional.cross_entropy(qat(x), labels)
        loss.backward()
        losses.append(loss.item())
        opt.step()
    assert losses[-1] < 0.3 * losses[0], losses
    im = qat.to_int(x)
    xq = quantize_input(im, x.numpy())
    assert (predict(im, xq) == labels.numpy()).mean() > 0.9
    with torch.no_grad():
        assert (qat(x).argmax(1) == torch.as_tensor(predict(im, xq))).double().mean() > 0.95


def test_qat_gradients_reach_every_parameter():
    torch.manual_seed(12)
    model = nn.Sequential(Shift2d(3), ShiftConv2d(3, 4, 3, padding=1, mode="ps"),
                          nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          AdderConv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), AdderLinear(16, 5), nn.BatchNorm1d(5), nn.ReLU(),
                          nn.Linear(5, 3))
    x = torch.randn(32, 3, 4, 4)
    _calibrate_bn(model, x)
    qat = QATWrapper(model, x)
    qat(x).square().sum().backward()
    for name, p in qat.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
