"""Tests of :mod:`mulfree.host.zoo`: the builders' shapes and sizes, the forms' layer types,
tracing with :class:`LeafTracer`, the arguments' errors."""

import operator

import pytest

import torch
from torch import nn
from torch.nn import functional as F

from mulfree.host import zoo
from mulfree.host.layers import (AdderConv2d, AdderLinear, AddressShift2d, ChannelShift,
                                 Shift2d, ShiftConv2d, ShiftLinear)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(zoo.ZOO))
@pytest.mark.parametrize("form", zoo.FORMS)
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 1, 16, 16)])
def test_output_shapes(name, form, shape):
    torch.manual_seed(0)
    model = zoo.build_zoo_model(name, form, in_channels=shape[1], num_classes=7)
    with torch.no_grad():
        assert model(torch.randn(*shape)).shape == (2, 7)


def test_resnet20_has_the_papers_parameter_count():
    # Counted by hand: stem 3*16*9 = 432; stage 1: six 16->16 3x3 convs, 6 * 2304 = 13,824;
    # stage 2: 16*32*9 + 5 * 32*32*9 = 4,608 + 46,080 = 50,688; stage 3: 32*64*9 + 5 * 64*64*9
    # = 18,432 + 184,320 = 202,752; BatchNorm weight and bias: 2 * (16 + 6*16 + 6*32 + 6*64)
    # = 1,376; classifier 64*10 + 10 = 650. Option A's shortcuts have no parameters.
    expected = 432 + 13_824 + 50_688 + 202_752 + 1_376 + 650
    assert expected == 269_722                              # "0.27M" (He et al., Table 6)
    assert n_params(zoo.resnet20()) == 269_722
    assert n_params(zoo.resnet_cifar(20, num_classes=10)) == 269_722
    # ResNet-8: one block per stage; option B adds two 1x1 convs with their BN.
    r8 = 432 + 2 * 2304 + (4608 + 9216) + (18432 + 36864) + 2 * (16 + 2 * (16 + 32 + 64)) + 650
    assert n_params(zoo.resnet8()) == r8 == 75_290
    assert n_params(zoo.resnet8(shortcut="B")) == r8 + 16 * 32 + 64 + 32 * 64 + 128


def test_resnet_structure_and_option_a_shortcut():
    model = zoo.resnet20()
    assert [len(s) for s in (model.layer1, model.layer2, model.layer3)] == [3, 3, 3]
    assert model.conv1.bias is None and model.fc.in_features == 64
    assert [b.conv1.stride for b in model.layer2] == [(2, 2), (1, 1), (1, 1)]
    short = model.layer2[0].shortcut
    assert isinstance(short, zoo.PadShortcut)
    x = torch.randn(2, 16, 9, 9)
    akamaster = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 32 // 4, 32 // 4), "constant", 0)
    assert torch.equal(short(x), akamaster)
    assert len(model.layer1[0].shortcut) == 0                # the identity
    b = zoo.resnet8(shortcut="B").layer3[0].shortcut
    assert [type(m) for m in b] == [nn.Conv2d, nn.BatchNorm2d] and b[0].stride == (2, 2)


def test_resnet_block_is_the_papers():
    torch.manual_seed(1)
    block = zoo.BasicBlock(16, 32, 2).eval()
    x = torch.randn(1, 16, 8, 8)
    out = block.bn2(block.conv2(F.relu(block.bn1(block.conv1(x)))))
    assert torch.equal(block(x), F.relu(out + F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 8, 8))))


@pytest.mark.parametrize("address,kernel", [(False, 3), (False, 5), (True, 3)])
def test_shiftnet_blocks(address, kernel):
    model = zoo.shiftnet(address=address, kernel=kernel)
    block = model.layer1[0]
    assert block.residual and not model.layer2[0].residual and model.layer2[1].residual
    assert (block.conv1.kernel_size, block.conv2.kernel_size) == ((1, 1), (1, 1))
    assert block.conv1.out_channels == 48
    if address:
        assert type(block.shift) is AddressShift2d and type(block.channel) is ChannelShift
        assert block.channel.r == 24
    else:
        assert type(block.shift) is Shift2d and block.shift.kernel == kernel
        assert block.channel is None
        # Every direction of the kernel is used by some channel of the widest block.
        offsets = set(model.layer3[1].shift.offsets)
        assert len(offsets) == kernel * kernel
    assert type(model.pool) is nn.MaxPool2d
    assert model(torch.randn(1, 3, 16, 16)).shape == (1, 10)


def test_mobilenet_structure():
    model = zoo.mobilenet_dws()
    dw = model.layer1.dw
    assert dw.groups == 16 and dw.in_channels == dw.out_channels == 16
    assert model.layer2[0].block.dw.stride == (2, 2) and model.layer2[0].block.pw.out_channels == 16
    assert type(model.layer1.act1) is nn.ReLU6
    assert type(zoo.mobilenet_dws(relu6=False).layer1.act1) is nn.ReLU
    assert (model.pool.kernel_size, model.pool.stride, model.pool.padding) == (3, 2, 1)
    x = torch.randn(1, 16, 8, 8)
    unit = model.layer2[0]
    assert torch.equal(unit(x), torch.cat([F.avg_pool2d(x, 2), unit.block(x)], 1))


def _types(model, paths):
    return [type(model.get_submodule(p)) for p in paths]


@pytest.mark.parametrize("name,inner", [
    ("resnet20", "layer2.1.conv1"), ("resnet8", "layer3.0.conv2"),
    ("shiftnet", "layer1.0.conv1"), ("addressnet", "layer3.1.conv2"),
    ("mobilenet_dws", "layer2.0.block.pw"),
])
def test_forms_layer_types(name, inner):
    ends = ["conv1", inner, "fc"]
    assert _types(zoo.build_zoo_model(name, "float"), ends) == [nn.Conv2d, nn.Conv2d, nn.Linear]
    assert _types(zoo.build_zoo_model(name, "mult"), ends) == [nn.Conv2d, nn.Conv2d, nn.Linear]
    shift = zoo.build_zoo_model(name, "shift", weight_bits=4, mode="q")
    assert _types(shift, ends) == [ShiftConv2d, ShiftConv2d, ShiftLinear]
    assert shift.fc.weight_bits == 4 and shift.fc.mode == "q"
    assert not any(type(m) in (nn.Conv2d, nn.Linear) for m in shift.modules())
    adder = zoo.build_zoo_model(name, "adder")
    assert _types(adder, ends) == [nn.Conv2d, AdderConv2d, nn.Linear]
    assert sum(type(m) in (nn.Conv2d, nn.Linear) for m in adder.modules()) == 2
    shiftadd = zoo.build_zoo_model(name, "shiftadd")
    assert _types(shiftadd, ends) == [nn.Conv2d, nn.Sequential, nn.Linear]
    assert _types(shiftadd, [inner + ".0", inner + ".1"]) == [ShiftConv2d, AdderConv2d]
    assert sum(type(m) in (nn.Conv2d, nn.Linear) for m in shiftadd.modules()) == 2


def test_depthwise_convs_keep_their_groups_in_every_form():
    assert zoo.build_zoo_model("mobilenet_dws", "shift").layer1.dw.groups == 16
    assert zoo.build_zoo_model("mobilenet_dws", "adder").layer1.dw.groups == 16
    shift, adder = zoo.build_zoo_model("mobilenet_dws", "shiftadd").layer1.dw
    assert (shift.groups, adder.groups) == (16, 16)


def test_to_form_is_in_place():
    model = zoo.resnet8()
    conv1 = model.conv1
    assert zoo.to_form(model, "float") is model and model.conv1 is conv1
    assert zoo.to_form(model, "adder") is model and model.conv1 is conv1
    assert type(model.layer1[0].conv1) is AdderConv2d


def test_mult_ends_of_any_model():
    class UserNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Linear(8, 3))

        def forward(self, x):
            return self.head(self.body(x))

    model = UserNet()
    assert zoo.mult_ends(model) == ("body.0", "head.2")
    zoo.to_form(model, "adder")
    assert _types(model, ["body.0", "body.2", "head.1", "head.2"]) == [
        nn.Conv2d, AdderConv2d, AdderLinear, nn.Linear]
    assert model(torch.randn(2, 1, 6, 6)).shape == (2, 3)
    assert zoo.mult_ends(nn.Sequential(nn.Linear(2, 2))) == ("0",)
    assert zoo.mult_ends(zoo.resnet8()) == ("conv1", "fc")
    assert zoo.mult_ends(zoo.to_form(zoo.resnet8(), "shift")) == ()


def _node_kinds(graph_module):
    kinds = set()
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            kinds.add(type(graph_module.get_submodule(node.target)))
        elif node.op in ("call_function", "call_method"):
            kinds.add(node.target)
    return kinds


@pytest.mark.parametrize("name,expected", [
    ("resnet20", {operator.add, F.pad, F.relu, F.adaptive_avg_pool2d}),
    ("resnet8", {F.pad}),
    ("shiftnet", {Shift2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, operator.add}),
    ("addressnet", {AddressShift2d, ChannelShift}),
    ("mobilenet_dws", {torch.cat, "mean", nn.AvgPool2d, nn.MaxPool2d, nn.ReLU6}),
])
def test_float_models_trace(name, expected):
    torch.manual_seed(2)
    model = zoo.ZOO[name]().eval()
    traced = zoo.trace(model)
    assert isinstance(traced, torch.fx.GraphModule)
    assert expected <= _node_kinds(traced)
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(traced(x), model(x))
    if not any(isinstance(m, zoo.LEAF_TYPES) for m in model.modules()):
        # Plain torch.fx traces them too; the shifts' Python checks need LeafTracer.
        assert torch.equal(torch.fx.symbolic_trace(model)(x), model(x))


@pytest.mark.parametrize("name", list(zoo.ZOO))
@pytest.mark.parametrize("form", ["shift", "adder", "shiftadd"])
def test_converted_models_trace_with_mulfree_leaves(name, form):
    torch.manual_seed(3)
    model = zoo.build_zoo_model(name, form).eval()
    traced = zoo.trace(model)
    kinds = _node_kinds(traced)
    wanted = {"shift": {ShiftConv2d, ShiftLinear}, "adder": {AdderConv2d, nn.Conv2d, nn.Linear},
              "shiftadd": {ShiftConv2d, AdderConv2d, nn.Linear}}[form]
    assert wanted <= kinds
    x = torch.randn(1, 3, 16, 16)
    torch.testing.assert_close(traced(x), model(x))


def test_leaf_tracer_leaves():
    tracer = zoo.LeafTracer()
    for layer in (ShiftConv2d(2, 2, 1), ShiftLinear(2, 2), AdderConv2d(2, 2, 1),
                  AdderLinear(2, 2), Shift2d(9), AddressShift2d(4), ChannelShift(4, 1),
                  nn.Conv2d(2, 2, 1), nn.ReLU()):
        assert tracer.is_leaf_module(layer, "x")
    assert not tracer.is_leaf_module(nn.Sequential(), "x")
    assert not tracer.is_leaf_module(zoo.BasicBlock(4, 4), "x")


@pytest.mark.parametrize("make,message", [
    (lambda: zoo.resnet_cifar(10), r"depth must be 6n\+2 with n >= 1 \(8, 14, 20, 32, ...\), "
                                   r"not 10"),
    (lambda: zoo.resnet_cifar(2), r"depth must be 6n\+2"),
    (lambda: zoo.resnet20(shortcut="C"), r"shortcut must be 'A' or 'B', not 'C'"),
    (lambda: zoo.resnet20(widths=(32, 16, 64)),
     r"widths must not decrease with shortcut 'A' \(it zero-pads channels\), not \(32, 16, 64\)"),
    (lambda: zoo.resnet8(widths=(16, 32)), r"widths must be three positive integers"),
    (lambda: zoo.resnet8(num_classes=0), r"num_classes must be a positive integer, not 0"),
    (lambda: zoo.shiftnet(kernel=4), r"kernel must be 3 or 5, not 4"),
    (lambda: zoo.addressnet(kernel=5), r"kernel must be 3 with address=True"),
    (lambda: zoo.shiftnet(address=1), r"address must be True or False, not 1"),
    (lambda: zoo.shiftnet(expansion=0), r"expansion must be a positive integer, not 0"),
    (lambda: zoo.mobilenet_dws(widths=(16, 16, 32)), r"widths must increase stage by stage"),
    (lambda: zoo.mobilenet_dws(relu6="yes"), r"relu6 must be True or False, not 'yes'"),
    (lambda: zoo.build_zoo_model("vgg", "float"),
     r"name must be one of resnet20, resnet8, shiftnet, addressnet, mobilenet_dws, not 'vgg'"),
    (lambda: zoo.build_zoo_model("resnet8", "int8"),
     r"form must be one of float, mult, shift, adder, shiftadd, not 'int8'"),
    (lambda: zoo.to_form(zoo.resnet8(), "shift", weight_bits=8),
     r"weight_bits must be an integer in 2..6, not 8"),
    (lambda: zoo.to_form(zoo.resnet8(), "shiftadd", mode="x"), r"mode must be 'q' or 'ps'"),
])
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()
