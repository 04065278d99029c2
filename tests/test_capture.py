"""Tests of :mod:`mulfree.host.capture`: what a torch.fx capture maps each form to, what is
folded, that every pass-through op means what its PyTorch original computes, and the errors."""

import operator

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mulfree.host.capture import CaptureTracer, capture
from mulfree.host.layers import (AdderConv2d, AddressShift2d, ChannelShift, Shift2d,
                                 ShiftConv2d, ShiftLinear)
from mulfree.host.quant import QuantizeError, int_forward, quantize
from mulfree.params.graph_golden import run_graph
from mulfree.params.model_golden import quantize_input, run_int_model


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Fn(nn.Module):
    """A model whose forward is ``f(self, x)``, holding the modules ``mods`` as attributes."""

    def __init__(self, f, **mods):
        super().__init__()
        for name, m in mods.items():
            setattr(self, name, m)
        self.f = f

    def forward(self, x):
        return self.f(self, x)


def _conv(cin=3, cout=4, **kw):
    torch.manual_seed(0)
    return nn.Conv2d(cin, cout, 3, padding=1, **kw)


def _ops(model, x):
    return capture(model, x).ops


def _kinds(model, x):
    return [op["kind"] for op in _ops(model, x)]


X = torch.randn(6, 3, 8, 8)


# What each form maps to ------------------------------------------------------------------

RELU_FORMS = {
    "nn.ReLU": lambda s, x: s.act(s.bn(s.conv(x))),
    "F.relu": lambda s, x: F.relu(s.bn(s.conv(x))),
    "F.relu inplace": lambda s, x: F.relu(s.bn(s.conv(x)), inplace=True),
    "torch.relu": lambda s, x: torch.relu(s.bn(s.conv(x))),
    "x.relu()": lambda s, x: s.bn(s.conv(x)).relu(),
    "torch.clamp min 0": lambda s, x: torch.clamp(s.bn(s.conv(x)), min=0),
    "x.clamp(min=0)": lambda s, x: s.bn(s.conv(x)).clamp(min=0),
}


@pytest.mark.parametrize("form", RELU_FORMS)
def test_relu_forms_fold_into_the_layer(form):
    model = Fn(RELU_FORMS[form], conv=_conv(), bn=nn.BatchNorm2d(4), act=nn.ReLU())
    (op,) = _ops(model, X)
    assert op["kind"] == "weight" and op["relu"] and op["bn"][1] is model.bn
    assert op["path"] == "model.conv" and op["pe"] == "mult" and op["conv"]


def test_relu_of_a_tensor_read_twice_is_a_clamp():
    model = Fn(lambda s, x: (lambda y: F.relu(y) + y)(s.conv(x)), conv=_conv())
    ops = _ops(model, X)
    assert [op["kind"] for op in ops] == ["weight", "clamp", "add"]
    assert not ops[0]["relu"] and ops[1]["lo_real"] == 0.0 and ops[1]["hi_real"] is None
    assert ops[2]["inputs"] == [ops[1]["name"], ops[0]["name"]]
    im = quantize(model, X)
    clamp = im.layers[1]
    assert (clamp.lo, clamp.hi) == (0, 127)


def test_readers_are_counted_through_identities_and_dead_code_is_dropped():
    # The conv's output reaches two readers through a dropout: the ReLU cannot fold.
    model = Fn(lambda s, x: (lambda y: F.relu(y) + y)(s.drop(s.conv(x))), conv=_conv(),
               drop=nn.Dropout())
    ops = _ops(model, X)
    assert [op["kind"] for op in ops] == ["weight", "clamp", "add"] and not ops[0]["relu"]
    # A dead branch (even one of an unsupported op) reads nothing: the ReLU folds.
    model = Fn(lambda s, x: (lambda y: (torch.sigmoid(y), F.relu(y))[1])(s.conv(x)),
               conv=_conv())
    (op,) = _ops(model, X)
    assert op["relu"]


class _Optional(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _conv()

    def forward(self, x, mask=None):
        y = self.conv(x)
        return y if mask is None else y * mask


def test_an_unused_optional_argument_is_no_second_input():
    assert _kinds(_Optional(), X) == ["weight"]


def test_relu_folds_through_ops_that_only_move_values():
    model = Fn(lambda s, x: F.relu(F.pad(s.pool(s.conv(x)), (1, 1, 1, 1))),
               conv=_conv(), pool=nn.MaxPool2d(3, 2, 1))
    ops = _ops(model, X)
    assert [op["kind"] for op in ops] == ["weight", "maxpool2d", "pad"]
    assert ops[0]["relu"]
    # Not through an average (it does not commute with the ReLU).
    model = Fn(lambda s, x: F.relu(F.avg_pool2d(s.conv(x), 2)), conv=_conv())
    assert _kinds(model, X) == ["weight", "avgpool2d", "clamp"]


CLAMP_FORMS = {
    "nn.ReLU6": lambda s, x: s.r6(s.conv(x)),
    "F.relu6": lambda s, x: F.relu6(s.conv(x)),
    "nn.Hardtanh(0, 6)": lambda s, x: s.ht(s.conv(x)),
    "F.hardtanh": lambda s, x: F.hardtanh(s.conv(x), 0.0, 6.0),
    "torch.clamp": lambda s, x: torch.clamp(s.conv(x), 0, 6),
    "x.clamp": lambda s, x: s.conv(x).clamp(0, 6),
    "torch.clip": lambda s, x: torch.clip(s.conv(x), 0, 6),
}


@pytest.mark.parametrize("form", CLAMP_FORMS)
def test_relu6_forms_are_a_clamp_and_calibrate_the_layer(form):
    model = Fn(CLAMP_FORMS[form], conv=_conv(), r6=nn.ReLU6(), ht=nn.Hardtanh(0, 6))
    conv, clamp = _ops(model, X)
    assert clamp["kind"] == "clamp" and (clamp["lo_real"], clamp["hi_real"]) == (0.0, 6.0)
    assert conv["relu"] and conv["clip"] == (0.0, 6.0)


FLATTEN_FORMS = {
    "nn.Flatten": lambda s, x: s.fc(s.flat(s.conv(x))),
    "torch.flatten": lambda s, x: s.fc(torch.flatten(s.conv(x), 1)),
    "x.flatten(1)": lambda s, x: s.fc(s.conv(x).flatten(1)),
    "x.view(x.size(0), -1)": lambda s, x: (lambda y: s.fc(y.view(y.size(0), -1)))(s.conv(x)),
    "x.reshape(x.shape[0], -1)":
        lambda s, x: (lambda y: s.fc(y.reshape(y.shape[0], -1)))(s.conv(x)),
    "x.view(-1, 256)": lambda s, x: s.fc(s.conv(x).view(-1, 4 * 8 * 8)),
    "torch.reshape(x, (6, -1))": lambda s, x: s.fc(torch.reshape(s.conv(x), (6, -1))),
}


@pytest.mark.parametrize("form", FLATTEN_FORMS)
def test_flatten_forms(form):
    model = Fn(FLATTEN_FORMS[form], conv=_conv(), flat=nn.Flatten(), fc=nn.Linear(256, 5))
    assert _kinds(model, X) == ["weight", "flatten", "weight"]


GLOBAL_FORMS = {
    "nn.AdaptiveAvgPool2d(1)": lambda s, x: s.gap(s.conv(x)).flatten(1),
    "F.adaptive_avg_pool2d": lambda s, x: torch.flatten(F.adaptive_avg_pool2d(s.conv(x), 1), 1),
    "x.mean((2, 3))": lambda s, x: s.conv(x).mean((2, 3)),
    "x.mean(dim=(-1, -2))": lambda s, x: s.conv(x).mean(dim=(-1, -2)),
    "torch.mean": lambda s, x: torch.mean(s.conv(x), (2, 3)),
    "whole-map avg_pool2d": lambda s, x: (lambda y: F.avg_pool2d(y, y.shape[2]).flatten(1))(
        s.conv(x)),
    "keepdim then view": lambda s, x: (lambda y: y.view(y.size(0), -1))(
        s.conv(x).mean((2, 3), keepdim=True)),
}


@pytest.mark.parametrize("form", GLOBAL_FORMS)
def test_global_average_pooling_forms(form):
    model = Fn(GLOBAL_FORMS[form], conv=_conv(), gap=nn.AdaptiveAvgPool2d(1))
    assert _kinds(model, X) == ["weight", "global_avgpool", "flatten"]


@pytest.mark.parametrize("add", [operator.add, torch.add, lambda a, b: a.add(b)])
def test_add_forms_read_both_tensors(add):
    model = Fn(lambda s, x: F.relu(add(s.conv(x), s.conv2(x))), conv=_conv(), conv2=_conv())
    ops = _ops(model, X)
    assert [op["kind"] for op in ops] == ["weight", "weight", "add"]
    assert ops[2]["inputs"] == ["conv", "conv2"] and ops[2]["relu"]
    assert not ops[0]["relu"] and not ops[1]["relu"]


@pytest.mark.parametrize("cat", [lambda a, b: torch.cat([a, b], 1),
                                 lambda a, b: torch.cat((a, b), dim=-3),
                                 lambda a, b: torch.concat([a, b], dim=1)])
def test_concat_forms(cat):
    model = Fn(lambda s, x: cat(s.conv(x), s.conv2(x)), conv=_conv(), conv2=_conv(3, 2))
    ops = _ops(model, X)
    assert ops[-1]["kind"] == "concat" and ops[-1]["inputs"] == ["conv", "conv2"]


def test_identities_are_skipped():
    model = Fn(lambda s, x: s.fc(F.dropout(s.drop(s.idn(s.conv(x))).contiguous(), 0.3)
                                 .flatten(1).view(6, -1)),
               conv=_conv(), idn=nn.Identity(), drop=nn.Dropout2d(), fc=nn.Linear(256, 3))
    assert _kinds(model, X) == ["weight", "flatten", "weight"]


def test_shift2d_folds_into_its_only_reader_else_is_a_node():
    folded = Fn(lambda s, x: s.conv2(s.shift(s.conv(x))), conv=_conv(), shift=Shift2d(4),
                conv2=nn.Conv2d(4, 4, 1))
    ops = _ops(folded, X)
    assert [op["kind"] for op in ops] == ["weight", "weight"]
    assert ops[1]["shift2d"][1] is folded.shift and ops[1]["inputs"] == ["conv"]
    im = quantize(folded, X)
    np.testing.assert_array_equal(im.layers[1].shifts, np.array(folded.shift.offsets))
    twice = Fn(lambda s, x: (lambda y: s.conv2(y) + y)(s.shift(s.conv(x))), conv=_conv(),
               shift=Shift2d(4), conv2=nn.Conv2d(4, 4, 1))
    assert _kinds(twice, X) == ["weight", "shift2d", "weight", "add"]
    # A kernel of 5 (offsets of two pixels) folds too: the convolution's shift table holds
    # offsets up to MAX_SHIFT2D, and the compiler runs it where the core's reach allows.
    wide = Fn(lambda s, x: s.conv2(s.shift(s.conv(x))), conv=_conv(), shift=Shift2d(4, 5, 1),
              conv2=nn.Conv2d(4, 4, 1))
    ops = _ops(wide, X)
    assert [op["kind"] for op in ops] == ["weight", "weight"]
    im = quantize(wide, X)
    np.testing.assert_array_equal(im.layers[1].shifts, np.array(wide.shift.offsets))
    assert np.abs(im.layers[1].shifts).max() == 2


MOVES = {
    "maxpool(3, 2, 1)": (lambda s, x: s.pool(s.conv(x)), "maxpool2d"),
    "F.max_pool2d(2, 1)": (lambda s, x: F.max_pool2d(s.conv(x), 2, 1), "maxpool2d"),
    "subsample ::2": (lambda s, x: s.conv(x)[:, :, ::2, ::2], "maxpool2d"),
    "subsample ...,::3,::2": (lambda s, x: s.conv(x)[..., ::3, ::2], "maxpool2d"),
    "subsample rows": (lambda s, x: s.conv(x)[:, :, ::2], "maxpool2d"),
    "F.pad channels": (lambda s, x: F.pad(s.conv(x), (0, 0, 0, 0, 2, 1)), "pad"),
    "F.pad width": (lambda s, x: F.pad(s.conv(x), (1, 2)), "pad"),
    "F.pad all": (lambda s, x: F.pad(s.conv(x), (1, 0, 2, 3, 0, 1), value=0.0), "pad"),
    "nn.ZeroPad2d": (lambda s, x: s.zpad(s.conv(x)), "pad"),
    "Shift2d(5)": (lambda s, x: s.shift5(s.conv(x)), "shift2d"),
    "AddressShift2d": (lambda s, x: s.addr(s.conv(x)), "address_shift"),
    "ChannelShift": (lambda s, x: s.chan(s.conv(x)), "channel_shift"),
    "flatten": (lambda s, x: s.conv(x).flatten(1), "flatten"),
}


@pytest.mark.parametrize("form", MOVES)
def test_pass_through_ops_compute_what_pytorch_computes(form):
    # Each op that moves or selects values, applied by PyTorch itself to the integer output
    # of the layer before it (as floats, exactly), gives the integer model's next tensor.
    f, kind = MOVES[form]
    model = Fn(f, conv=_conv(3, 6), pool=nn.MaxPool2d(3, 2, 1), zpad=nn.ZeroPad2d((1, 0, 2, 3)),
               shift5=Shift2d(6, 5, 1), addr=AddressShift2d(6, 1), chan=ChannelShift(6, 4))
    x = torch.randn(6, 3, 9, 8)
    im = quantize(model, x)
    assert [layer.kind for layer in im.layers] == ["conv2d", kind]
    xq = quantize_input(im, x.numpy())
    _, kept = run_graph(im, xq, keep=True)
    conv_out = torch.as_tensor(kept[im.graph()[0].name], dtype=torch.float64)
    want = f(_Replace(model, conv_out), None)
    np.testing.assert_array_equal(kept[im.graph()[1].name], want.numpy())
    np.testing.assert_array_equal(int_forward(im, xq).numpy(), run_int_model(im, xq))


class _Replace:
    """Stands for a model in ``f(self, x)`` with ``conv`` returning a fixed tensor."""

    def __init__(self, model, out):
        self.model, self.out = model, out

    def __getattr__(self, name):
        if name == "conv":
            return lambda x: self.out
        return getattr(self.model, name)


def test_mulfree_layers_stay_whole_and_pick_their_pe():
    model = Fn(lambda s, x: s.fc(s.b(s.a(s.shift(x))).mean((2, 3))), shift=Shift2d(3),
               a=ShiftConv2d(3, 4, 3, padding=1), b=AdderConv2d(4, 4, 3, padding=1, groups=4),
               fc=ShiftLinear(4, 2))
    graph = CaptureTracer().trace(model)
    modules = [n.target for n in graph.nodes if n.op == "call_module"]
    assert modules == ["shift", "a", "b", "fc"]
    ops = _ops(model, X)
    assert [(op["kind"], op.get("pe")) for op in ops] == [
        ("weight", "shift"), ("weight", "adder"), ("global_avgpool", None), ("flatten", None),
        ("weight", "shift")]
    assert ops[0]["shift2d"][1] is model.shift


def test_capture_does_not_modify_the_model():
    model = Fn(lambda s, x: s.fc(s.drop(F.relu(s.bn(s.conv(x)))).mean((2, 3))),
               conv=_conv(), bn=nn.BatchNorm2d(4), drop=nn.Dropout(), fc=nn.Linear(4, 2))
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    quantize(model, X)
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_node_names_are_the_fx_names_and_valid():
    model = Fn(lambda s, x: s.input(x) + s.conv(x), input=_conv(), conv=_conv())
    im = quantize(model, X)
    names = [layer.name for layer in im.layers]
    assert "input" not in names and len(set(names)) == 3
    assert names[1] == "conv" and im.layers[2].inputs == (names[0], "conv")


# Errors ------------------------------------------------------------------------------------

ERRORS = {
    "sigmoid": (lambda s, x: torch.sigmoid(s.conv(x)), "sigmoid (torch.sigmoid) is not"),
    "x * 2": (lambda s, x: s.conv(x) * 2, "mul (operator.mul) is not"),
    "GELU": (lambda s, x: s.gelu(s.conv(x)), "model.gelu (GELU, fx node gelu) is not"),
    "Upsample": (lambda s, x: s.up(s.conv(x)), "model.up (Upsample, fx node up) is not"),
    "groups=2": (lambda s, x: s.g2(s.conv(x)), "model.g2 (Conv2d, fx node g2) has groups=2"),
    "x + 1": (lambda s, x: s.conv(x) + 1, "add (operator.add) adds the constant 1"),
    "broadcast": (lambda s, x: (lambda y: y + y.mean((2, 3), keepdim=True))(s.conv(x)),
                  "add (operator.add) adds tensors of shapes [B, 4, 8, 8] and [B, 4, 1, 1]"),
    "cat dim 2": (lambda s, x: torch.cat([s.conv(x), s.conv(x)], 2),
                  "cat (torch.cat) joins along dimension 2"),
    "channel slice": (lambda s, x: s.conv(x)[:, :2], "getitem (operator.getitem) indexes"),
    "reflect pad": (lambda s, x: F.pad(s.conv(x), (1, 1, 1, 1), mode="reflect"),
                    "pad (F.pad) pads by (1, 1, 1, 1) (mode 'reflect'"),
    "mean over channels": (lambda s, x: s.conv(x).mean(1), "mean (Tensor.mean) averages over 1"),
    "adaptive 2": (lambda s, x: F.adaptive_avg_pool2d(s.conv(x), 2),
                   "adaptive_avg_pool2d (F.adaptive_avg_pool2d) pools to 2"),
    "ceil_mode": (lambda s, x: F.max_pool2d(s.conv(x), 2, ceil_mode=True),
                  "max_pool2d (F.max_pool2d) must have dilation 1, ceil_mode False"),
    "avg no pad count": (lambda s, x: F.avg_pool2d(s.conv(x), 3, 1, 1, False, False),
                         "avg_pool2d (F.avg_pool2d) must have ceil_mode False, "
                         "count_include_pad True"),
    "bn after add": (lambda s, x: s.bn(s.conv(x) + s.conv(x)),
                     "model.bn (BatchNorm2d, fx node bn) must directly follow a weight layer"),
    "bn of a shared conv": (lambda s, x: (lambda y: s.bn(y) + y)(s.conv(x)),
                            "model.bn (BatchNorm2d, fx node bn) must directly follow"),
    "relu_ on a shared tensor": (lambda s, x: (lambda y: y.relu_() + y)(s.conv(x)),
                                 "relu_ (Tensor.relu_) works in place on conv"),
    "F.conv2d with a parameter": (lambda s, x: F.conv2d(x, s.conv.weight),
                                  "conv_weight (get_attr conv.weight) is a parameter"),
    "linear on a map": (lambda s, x: s.fc(s.conv(x)),
                        "model.fc (Linear, fx node fc) reads a tensor of shape"),
    "pad beyond 15": (lambda s, x: F.pad(s.conv(x), (16, 0)), "pad (F.pad) pads by [16, 0]"),
    "clamp lo > hi": (lambda s, x: s.conv(x).clamp(3, 2), "clamp (Tensor.clamp) clamps to [3, 2]"),
}


@pytest.mark.parametrize("case", ERRORS)
def test_unsupported_ops_name_the_node_its_target_and_the_list(case):
    f, start = ERRORS[case]
    model = Fn(f, conv=_conv(), gelu=nn.GELU(), up=nn.Upsample(scale_factor=2),
               g2=nn.Conv2d(4, 4, 1, groups=2), bn=nn.BatchNorm2d(4), fc=nn.Linear(8, 2))
    with pytest.raises(QuantizeError) as info:
        quantize(model, X)
    msg = str(info.value)
    assert msg.startswith(start), msg
    assert "\n" not in msg
    assert msg.endswith("Shift2d, AddressShift2d, ChannelShift, nn.Identity, nn.Dropout, "
                        "nested nn.Sequential"), msg


class _Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _conv()

    def forward(self, x):
        y = self.conv(x)
        if y.sum() > 0:                   # data-dependent control flow
            return y
        return -y


class _TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _conv()

    def forward(self, x, y):
        return self.conv(x) + self.conv(y)


class _Pair(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = _conv()

    def forward(self, x):
        y = self.conv(x)
        return y, y


@pytest.mark.parametrize("model, want", [
    (_Branchy, r"^model \(_Branchy\) cannot be traced by torch.fx \(TraceError: symbolically "
               r"traced variables cannot be used as inputs to control flow\)"),
    (_TwoInputs, r"^y \(placeholder y\) is a second input; the model must take one tensor"),
    (_Pair, r"^the model must return one tensor computed from its input, not \(conv, conv\)"),
])
def test_models_that_are_no_single_tensor_graph(model, want):
    with pytest.raises(QuantizeError, match=want) as info:
        quantize(model(), X)
    assert "\n" not in str(info.value)
