"""Tests of :mod:`mulfree.host.convert`: which modules are replaced, what is copied, errors."""

import subprocess
import sys

import numpy as np
import pytest

import torch
nn = torch.nn

from mulfree.host import convert_to_adder, convert_to_shift
from mulfree.host.convert import convert_to_shiftadd, convertible_layers
from mulfree.host.layers import (AdderConv2d, AdderLinear, ShiftConv2d, ShiftLinear,
                                 max_shift)


class Net(nn.Module):
    def __init__(self, groups=1, dilation=1):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
            nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=groups, dilation=dilation,
                      bias=False),
            nn.ReLU())
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.ReLU())
        self.out = nn.Linear(8, 3)

    def forward(self, x):
        return self.out(self.head(self.features(x)))


def test_host_imports_without_torch():
    code = ("import sys, mulfree.host as h; assert 'torch' not in sys.modules; "
            "assert 'convert_to_shift' in h.__all__")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("convert,kinds", [
    (lambda m, **kw: convert_to_shift(m, **kw), (ShiftConv2d, ShiftLinear)),
    (lambda m, **kw: convert_to_adder(m, **kw), (AdderConv2d, AdderLinear)),
])
@pytest.mark.parametrize("depth", [None, 0, 1, 3])
def test_replaces_the_first_depth_layers(convert, kinds, depth):
    torch.manual_seed(0)
    model = Net()
    paths = ["features.0", "features.3", "head.1", "out"]
    before = {p: model.get_submodule(p) for p in paths}
    bn = model.features[1]
    assert convert(model, depth=depth) is model
    n = len(paths) if depth is None else depth
    for i, path in enumerate(paths):
        new = model.get_submodule(path)
        if i < n:
            conv = isinstance(before[path], nn.Conv2d)
            assert type(new) is kinds[0 if conv else 1]
            assert (new.bias is None) == (before[path].bias is None)
            if new.bias is not None:
                assert torch.equal(new.bias, before[path].bias)
        else:
            assert new is before[path]
    assert model.features[1] is bn
    if n >= 2:
        assert model.features[3].stride == (2, 2) and model.features[3].padding == (1, 1)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_shift_ps_copies_rounded_weights():
    torch.manual_seed(1)
    model = Net()
    w = model.features[0].weight.detach().clone()
    with torch.no_grad():
        model.features[0].weight[0, 0, 0, 0] = 0.0
        w[0, 0, 0, 0] = 0.0
    convert_to_shift(model, mode="ps", weight_bits=4)
    layer = model.features[0]
    m = max_shift(4)
    with np.errstate(divide="ignore"):                      # log2(0) = -inf -> -m
        expected_shift = np.clip(np.round(np.log2(np.abs(w.numpy()))), -m, 0)
    np.testing.assert_array_equal(layer.shift.detach().numpy(), expected_shift)
    np.testing.assert_array_equal(layer.sign.detach().numpy(), np.sign(w.numpy()))
    assert layer.effective_weight()[0, 0, 0, 0].item() == 0.0
    assert layer.weight_bits == 4 and layer.mode == "ps"


def test_shift_q_keeps_powers_of_two_exactly():
    torch.manual_seed(2)
    model = Net()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                p = torch.randint(-5, 1, m.weight.shape).float()
                m.weight.copy_(torch.exp2(p) * torch.sign(torch.randn(m.weight.shape)))
    model.eval()
    x = torch.randn(3, 1, 8, 8)
    before = model(x)
    convert_to_shift(model, mode="q")
    assert isinstance(model.out, ShiftLinear) and model.out.mode == "q"
    torch.testing.assert_close(model(x), before)


def test_adder_copies_weights():
    torch.manual_seed(3)
    model = Net()
    weights = [m.weight.detach().clone() for m in model.modules()
               if isinstance(m, (nn.Linear, nn.Conv2d))]
    convert_to_adder(model)
    converted = [m.weight for m in model.modules() if isinstance(m, (AdderLinear, AdderConv2d))]
    assert len(converted) == 4
    for a, b in zip(weights, converted):
        assert torch.equal(a, b)


def test_keeps_training_mode_and_dtype():
    model = Net().double().eval()
    convert_to_adder(model)
    assert not model.out.training and model.out.weight.dtype == torch.float64
    assert model(torch.randn(1, 1, 8, 8, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize("kwargs,problem", [
    (dict(groups=2), "groups=2"), (dict(dilation=2), r"dilation=\(2, 2\)"),
])
@pytest.mark.parametrize("convert", [convert_to_shift, convert_to_adder])
def test_unsupported_conv_names_its_path(kwargs, problem, convert):
    model = Net(**kwargs)
    first = model.features[0]
    with pytest.raises(ValueError, match=rf"Conv2d at 'features.3' has {problem}; supported "
                                         r"are groups=1, dilation=1"):
        convert(model)
    assert model.features[0] is first                        # nothing replaced
    convert(model, depth=1)                                  # the unsupported one not selected
    assert model.features[0] is not first


def test_bad_arguments():
    with pytest.raises(ValueError, match="mode must be 'q' or 'ps', not 'p'"):
        convert_to_shift(Net(), mode="p")
    with pytest.raises(ValueError, match="weight_bits must be an integer in 2..6, not 1"):
        convert_to_shift(Net(), weight_bits=1)
    with pytest.raises(ValueError, match="depth must be None or an integer >= 0, not -1"):
        convert_to_adder(Net(), depth=-1)
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        convert_to_adder("net")
    with pytest.raises(ValueError, match="not be one"):
        convert_to_adder(nn.Linear(2, 2))


def test_subclasses_are_not_converted():
    model = nn.Sequential(nn.MultiheadAttention(4, 1), nn.Linear(4, 4))
    assert [p for p, _ in convertible_layers(model)] == ["1"]


def test_converted_model_trains():
    torch.manual_seed(4)
    model = convert_to_shift(Net(), mode="ps")
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, t = torch.randn(32, 1, 8, 8), torch.randint(0, 3, (32,))
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), t)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


# Depthwise convolutions, skip, the ShiftAddNet form -----------------------------------------

class DwNet(nn.Module):
    """A stem, a depthwise conv (multiplier 2), a pointwise conv, a classifier."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.block = nn.Sequential(
            nn.Conv2d(4, 8, 3, stride=2, padding=1, groups=4), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.block(self.conv1(x)).mean((2, 3)))


@pytest.mark.parametrize("mode", ["q", "ps"])
def test_shift_converts_depthwise_convs(mode):
    torch.manual_seed(5)
    model = DwNet()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                p = torch.randint(-5, 1, m.weight.shape).float()
                m.weight.copy_(torch.exp2(p) * torch.sign(torch.randn(m.weight.shape)))
    model.eval()
    x = torch.randn(2, 1, 8, 8)
    before = model(x)
    convert_to_shift(model, mode=mode)
    dw = model.block[0]
    assert type(dw) is ShiftConv2d and dw.groups == 4 and dw.out_channels == 8
    assert dw.weight_codes().shape == (8, 1, 3, 3) and dw.stride == (2, 2)
    torch.testing.assert_close(model(x), before)            # powers of two stay exact


def test_adder_converts_depthwise_convs():
    torch.manual_seed(6)
    model = DwNet()
    weight = model.block[0].weight.detach().clone()
    convert_to_adder(model)
    dw = model.block[0]
    assert type(dw) is AdderConv2d and dw.groups == 4 and torch.equal(dw.weight, weight)
    assert torch.equal(dw.bias, model.block[0].bias)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


@pytest.mark.parametrize("convert", [convert_to_shift, convert_to_adder, convert_to_shiftadd])
def test_skip_leaves_layers_alone(convert):
    model = DwNet()
    conv1, fc = model.conv1, model.fc
    convert(model, skip=("conv1", "fc"))
    assert model.conv1 is conv1 and model.fc is fc
    assert type(model.block[3]) is not nn.Conv2d
    model = DwNet()
    block = list(model.block)
    convert(model, skip=["block"])                          # a module: all its layers
    assert list(model.block) == block and type(model.conv1) is not nn.Conv2d
    assert model(torch.randn(1, 1, 8, 8)).shape == (1, 3)


def test_skip_an_unsupported_layer():
    model = Net(dilation=2)
    convert_to_adder(model, skip=("features.3",))
    assert type(model.features[3]) is nn.Conv2d and type(model.features[0]) is AdderConv2d


@pytest.mark.parametrize("convert", [convert_to_shift, convert_to_adder, convert_to_shiftadd])
def test_unknown_skip_paths_are_named(convert):
    model = DwNet()
    conv1 = model.conv1
    with pytest.raises(ValueError, match=r"skip names no nn.Linear / nn.Conv2d layer \(nor a "
                                         r"module holding one\) of the model: 'conv2', "
                                         r"'block.1', ''$"):
        convert(model, skip=("fc", "conv2", "block.1", ""))
    with pytest.raises(ValueError, match=r"skip must be an iterable of module paths such as "
                                         r"\('conv1', 'fc'\), not 'fc'"):
        convert(model, skip="fc")
    assert model.conv1 is conv1


def test_depth_counts_skipped_layers():
    model = DwNet()
    assert [p for p, _ in convertible_layers(model, depth=2, skip=("conv1",))] == ["block.0"]


def test_shiftadd_form():
    torch.manual_seed(7)
    model = DwNet()
    old_dw, old_pw = model.block[0], model.block[3]
    convert_to_shiftadd(model, mode="ps", weight_bits=4, skip=("conv1",))
    assert type(model.conv1) is nn.Conv2d
    dw, pw = model.block[0], model.block[3]
    assert isinstance(dw, nn.Sequential) and [type(m) for m in dw] == [ShiftConv2d, AdderConv2d]
    shift, adder = dw
    assert (shift.in_channels, shift.out_channels, shift.groups) == (4, 8, 4)
    assert shift.stride == (2, 2) and shift.padding == (1, 1) and shift.bias is None
    assert shift.weight_bits == 4 and shift.mode == "ps"
    assert (adder.in_channels, adder.out_channels, adder.groups) == (8, 8, 8)
    assert adder.stride == (1, 1) and adder.padding == (1, 1)
    assert torch.equal(adder.bias, old_dw.bias)             # the old bias, after the adder
    torch.testing.assert_close(shift.effective_weight(),
                               convert_to_shift(nn.Sequential(old_dw), weight_bits=4)[0]
                               .effective_weight())
    shift, adder = pw
    assert (shift.kernel_size, adder.kernel_size, adder.padding) == ((1, 1), (1, 1), (0, 0))
    assert adder.groups == 1 and adder.bias is None and old_pw.bias is None
    assert type(model.fc) is ShiftLinear                    # ShiftAddNet's shift classifier
    x = torch.randn(2, 1, 8, 8)
    assert model(x).shape == (2, 3)
    assert model.block[0](torch.randn(1, 4, 7, 7)).shape == (1, 8, 4, 4)


def test_shiftadd_refuses_even_kernels_and_bad_arguments():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 2))
    first = model[0]
    with pytest.raises(ValueError, match=r"Conv2d at '1' has kernel_size=\(2, 2\); the "
                                         r"ShiftAddNet form needs odd kernel sizes"):
        convert_to_shiftadd(model)
    assert model[0] is first
    convert_to_shiftadd(model, skip=("1",))
    assert isinstance(model[0], nn.Sequential)
    with pytest.raises(ValueError, match="mode must be 'q' or 'ps', not 'x'"):
        convert_to_shiftadd(Net(), mode="x")
    with pytest.raises(ValueError, match="weight_bits must be an integer in 2..6, not 9"):
        convert_to_shiftadd(Net(), weight_bits=9)
    with pytest.raises(ValueError, match="Conv2d at 'features.3' has groups=2"):
        convert_to_shiftadd(Net(groups=2))


def test_shiftadd_keeps_dtype_and_trains():
    torch.manual_seed(8)
    model = convert_to_shiftadd(DwNet().double(), skip=("conv1", "fc"))
    assert model.block[0][1].weight.dtype == torch.float64
    model.float()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    x, t = torch.randn(32, 1, 8, 8), torch.randint(0, 3, (32,))
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), t)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses
