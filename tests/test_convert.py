"""Tests of :mod:`mulfree.host.convert`: which modules are replaced, what is copied, errors."""

import subprocess
import sys

import numpy as np
import pytest

import torch
nn = torch.nn

from mulfree.host import convert_to_adder, convert_to_shift
from mulfree.host.convert import convertible_layers
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
