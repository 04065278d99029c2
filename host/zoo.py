"""Models users bring: float PyTorch networks of the papers, their multiplication-free forms.

Plain ``torch.nn`` modules written the way users and the papers' code write them, so a
:mod:`torch.fx` tracer sees what real models hold: residual ``+``, ``F.relu``, ``torch.cat``,
slicing, ``F.pad``, ``mean`` and adaptive average pooling, max and average pooling.

* :func:`resnet_cifar` (:func:`resnet20`, :func:`resnet8`) — He et al.'s CIFAR ResNet
  ``6n+2``: a 3x3 stem, three stages of BasicBlocks (``F.relu(out + self.shortcut(x))``),
  global average pooling, a linear classifier. Shortcut ``"A"`` (the paper's option A, as the
  widely used akamaster/pytorch_resnet_cifar10 code) subsamples and zero-pads the channels
  (``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))``, parameter-free);
  ``"B"`` is a strided 1x1 conv and BN. ResNet-20 option A with 10 classes has 269,722
  parameters (the paper's "0.27M").
* :func:`shiftnet` (:func:`addressnet`) — ShiftNet's CSC block (Wu et al., CVPR 2018):
  ``1x1 conv - BN - ReLU - Shift2d - 1x1 conv - BN`` plus the input when the shapes match;
  AddressNet (He et al., WACV 2019) uses the address shift and a channel shift instead.
* :func:`mobilenet_dws` — MobileNet's depthwise-separable blocks (depthwise 3x3, pointwise
  1x1, BN and ReLU6 after each), a 3x3/2 max pooling after the stem and ShuffleNet's stride-2
  unit ``torch.cat([AvgPool2d(2)(x), block(x)])`` between stages.

:func:`to_form` converts a model in place into one of :data:`FORMS`: ``"float"`` / ``"mult"``
(unchanged), ``"shift"`` (DeepShift: every conv and linear layer), ``"adder"`` (AdderNet: the
first conv and the classifier stay multiplications, the papers' usual practice) and
``"shiftadd"`` (ShiftAddNet: shift conv then adder conv, first conv and classifier kept).
:data:`ZOO` names the builders, :func:`build_zoo_model` builds and converts one.
:class:`LeafTracer` traces any of them with the mulfree layers as leaves.
"""

import torch
import torch.fx
from torch import nn
from torch.nn import functional as F

from .capture import LEAF_TYPES, CaptureTracer
from .convert import convert_to_adder, convert_to_shift, convert_to_shiftadd
from .layer_args import check_mode, check_positive_int, check_weight_bits
from .layers import AddressShift2d, ChannelShift, Shift2d


__all__ = ["FORMS", "ZOO", "LEAF_TYPES", "LeafTracer", "trace", "resnet_cifar", "resnet20",
           "resnet8", "shiftnet", "addressnet", "mobilenet_dws", "mult_ends", "to_form",
           "build_zoo_model", "PadShortcut", "BasicBlock", "ResNetCifar", "ShiftBlock",
           "ShiftNet", "DepthwiseSeparable", "ConcatDown", "MobileNetDWS"]


#: The forms :func:`to_form` makes.
FORMS = ("float", "mult", "shift", "adder", "shiftadd")

#: The mulfree layers :class:`LeafTracer` keeps whole.
#: The tracer of :mod:`mulfree.host.capture` (the quantizer's), which keeps mulfree's layers
#: (:data:`LEAF_TYPES`) whole; the zoo's models are written so that it traces them.
LeafTracer = CaptureTracer


def trace(model):
    """``model`` traced by :class:`LeafTracer`, as a :class:`torch.fx.GraphModule`.

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    torch.fx.GraphModule
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {model!r}")
    graph = LeafTracer().trace(model)
    return torch.fx.GraphModule(model, graph, type(model).__name__)


# Arguments ------------------------------------------------------------------------------------

def _check_widths(widths, increasing=False):
    if (not isinstance(widths, (tuple, list)) or len(widths) != 3
            or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in widths)):
        raise ValueError(f"widths must be three positive integers (one per stage), "
                         f"not {widths!r}")
    if increasing and not widths[0] < widths[1] < widths[2]:
        raise ValueError(f"widths must increase stage by stage (the stride-2 units "
                         f"concatenate new channels to the pooled input), not {widths!r}")
    return tuple(widths)


def _check_bool(name, value):
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, not {value!r}")
    return value


def _conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride, 1, bias=False)


# ResNet for CIFAR -----------------------------------------------------------------------------

class PadShortcut(nn.Module):
    """Option A's parameter-free shortcut: subsample by ``stride``, zero-pad the channels.

    ``F.pad(x[:, :, ::s, ::s], (0, 0, 0, 0, lo, hi))`` with ``lo = (planes - in_planes) // 2``
    and ``hi`` the rest: for ``planes = 2 * in_planes``, akamaster's ``planes // 4`` on
    each side.
    """

    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.stride = stride
        self.pad = ((planes - in_planes) // 2, planes - in_planes - (planes - in_planes) // 2)

    def forward(self, x):
        return F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, *self.pad))

    def extra_repr(self):
        return f"stride={self.stride}, pad={self.pad}"


class BasicBlock(nn.Module):
    """conv3x3 - BN - ReLU - conv3x3 - BN, ``F.relu(out + self.shortcut(x))``."""

    def __init__(self, in_planes, planes, stride=1, shortcut="A"):
        super().__init__()
        self.conv1 = _conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()                     # the identity
        if stride != 1 or in_planes != planes:
            if shortcut == "A":
                self.shortcut = PadShortcut(in_planes, planes, stride)
            else:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    """The CIFAR ResNet of :func:`resnet_cifar`; its stem is ``conv1``, its classifier ``fc``."""

    #: The paths :func:`to_form` keeps as multiplications (first conv, classifier).
    mulfree_ends = ("conv1", "fc")

    def __init__(self, n, num_classes, in_channels, widths, shortcut):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        planes, stages = widths[0], []
        for i, width in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if i > 0 and j == 0 else 1
                blocks.append(BasicBlock(planes, width, stride, shortcut))
                planes = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(widths[2], num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1)
        return self.fc(torch.flatten(out, 1))


def resnet_cifar(depth, num_classes=10, in_channels=3, widths=(16, 32, 64), shortcut="A"):
    """He et al.'s CIFAR ResNet of ``depth = 6n + 2`` layers (ResNet-20: n = 3).

    Parameters
    ----------
    depth : int
        8, 14, 20, 32, 44, 56, 110, ... (``6n + 2``, ``n >= 1`` BasicBlocks per stage).
    num_classes, in_channels : int
    widths : three ints
        The stages' channels; stages 2 and 3 start with stride 2. Shortcut ``"A"`` pads
        channels, so the widths must not decrease.
    shortcut : ``"A"`` or ``"B"``
        Where the shape changes: ``"A"`` subsample and zero-pad (:class:`PadShortcut`), ``"B"``
        a strided 1x1 conv and BN.

    Returns
    -------
    ResNetCifar
        Float, freshly initialised (PyTorch's defaults).
    """
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2 with n >= 1 (8, 14, 20, 32, ...), not {depth!r}")
    check_positive_int("num_classes", num_classes)
    check_positive_int("in_channels", in_channels)
    widths = _check_widths(widths)
    if shortcut not in ("A", "B"):
        raise ValueError(f"shortcut must be 'A' or 'B', not {shortcut!r}")
    if shortcut == "A" and not widths[0] <= widths[1] <= widths[2]:
        raise ValueError(f"widths must not decrease with shortcut 'A' (it zero-pads channels), "
                         f"not {widths!r}")
    return ResNetCifar((depth - 2) // 6, int(num_classes), int(in_channels), widths, shortcut)


def resnet20(**kw):
    """ResNet-20 (:func:`resnet_cifar` with ``depth=20``); ``kw`` go to it."""
    return resnet_cifar(20, **kw)


def resnet8(**kw):
    """ResNet-8 (:func:`resnet_cifar` with ``depth=8``); ``kw`` go to it."""
    return resnet_cifar(8, **kw)


# ShiftNet and AddressNet ----------------------------------------------------------------------

class ShiftBlock(nn.Module):
    """ShiftNet's CSC block: ``1x1 conv - BN - ReLU - shift - 1x1 conv - BN``, ``+ x`` when
    the shapes match, then ReLU.

    The shift is :class:`Shift2d` (``kernel`` x ``kernel`` directions, zero filled) or, with
    ``address=True``, AddressNet's :class:`AddressShift2d` followed by a
    :class:`ChannelShift` by half the channels (AddressNet's pointer move in place of a
    shuffle).
    """

    def __init__(self, cin, cout, expansion, kernel, address):
        super().__init__()
        mid = cin * expansion
        self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.shift = AddressShift2d(mid) if address else Shift2d(mid, kernel)
        self.channel = ChannelShift(mid, mid // 2) if address else None
        self.conv2 = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.residual = cin == cout

    def forward(self, x):
        out = self.shift(F.relu(self.bn1(self.conv1(x))))
        if self.channel is not None:
            out = self.channel(out)
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + x
        return F.relu(out)


class ShiftNet(nn.Module):
    """The network of :func:`shiftnet`; its stem is ``conv1``, its classifier ``fc``."""

    #: The paths :func:`to_form` keeps as multiplications (first conv, classifier).
    mulfree_ends = ("conv1", "fc")

    def __init__(self, num_classes, in_channels, widths, kernel, address, expansion, blocks):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        planes, stages = widths[0], []
        for width in widths:
            stage = []
            for _ in range(blocks):
                stage.append(ShiftBlock(planes, width, expansion, kernel, address))
                planes = width
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.MaxPool2d(2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(widths[2], num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(self.pool(out))
        out = self.layer3(self.pool(out))
        return self.fc(self.avgpool(out).flatten(1))


def shiftnet(num_classes=10, in_channels=3, widths=(16, 32, 64), kernel=3, address=False, *,
             expansion=3, blocks=2):
    """A ShiftNet (Wu et al., CVPR 2018) or AddressNet (He et al., WACV 2019) network.

    A 3x3 stem (conv, BN, ReLU), three stages of ``blocks`` :class:`ShiftBlock` each with a
    2x2 max pooling before stages 2 and 3, global average pooling, a linear classifier.

    Parameters
    ----------
    num_classes, in_channels : int
    widths : three ints
        The stages' output channels.
    kernel : 3 or 5
        The :class:`Shift2d` kernel (its ``kernel^2`` directions); AddressNet's shift moves by
        one element, so ``address=True`` needs 3.
    address : bool
        AddressNet: :class:`AddressShift2d` and a :class:`ChannelShift` in every block.
    expansion : int
        The blocks' middle width is ``expansion`` times their input width (ShiftNet's ``E``);
        with 3, a 16-channel block shifts 48 channels, five per direction of a 3x3 kernel.
    blocks : int
        Blocks per stage.

    Returns
    -------
    ShiftNet
        Float, freshly initialised.
    """
    check_positive_int("num_classes", num_classes)
    check_positive_int("in_channels", in_channels)
    widths = _check_widths(widths)
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel not in (3, 5):
        raise ValueError(f"kernel must be 3 or 5, not {kernel!r}")
    _check_bool("address", address)
    if address and kernel != 3:
        raise ValueError(f"kernel must be 3 with address=True (the address shift moves by one "
                         f"element), not {kernel!r}")
    return ShiftNet(int(num_classes), int(in_channels), widths, kernel, address,
                    check_positive_int("expansion", expansion),
                    check_positive_int("blocks", blocks))


def addressnet(**kw):
    """AddressNet: :func:`shiftnet` with ``address=True``; ``kw`` go to it."""
    return shiftnet(address=True, **kw)


# MobileNet-style depthwise-separable network --------------------------------------------------

def _act(relu6):
    return nn.ReLU6() if relu6 else nn.ReLU()


class DepthwiseSeparable(nn.Module):
    """MobileNet's block: depthwise 3x3 (``groups = cin``) - BN - act - pointwise 1x1 - BN -
    act."""

    def __init__(self, cin, cout, stride, relu6):
        super().__init__()
        self.dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.act1 = _act(relu6)
        self.pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = _act(relu6)

    def forward(self, x):
        return self.act2(self.bn2(self.pw(self.act1(self.bn1(self.dw(x))))))


class ConcatDown(nn.Module):
    """ShuffleNet's stride-2 unit: ``torch.cat([AvgPool2d(2)(x), block(x)], 1)``, ``block``
    a stride-2 :class:`DepthwiseSeparable` making the ``cout - cin`` new channels.

    The 2x2 average divides by 4, a shift; the map's side must be even.
    """

    def __init__(self, cin, cout, relu6):
        super().__init__()
        self.pool = nn.AvgPool2d(2)
        self.block = DepthwiseSeparable(cin, cout - cin, 2, relu6)

    def forward(self, x):
        return torch.cat([self.pool(x), self.block(x)], 1)


class MobileNetDWS(nn.Module):
    """The network of :func:`mobilenet_dws`; its stem is ``conv1``, its classifier ``fc``."""

    #: The paths :func:`to_form` keeps as multiplications (first conv, classifier).
    mulfree_ends = ("conv1", "fc")

    def __init__(self, num_classes, in_channels, widths, relu6):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = _act(relu6)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = DepthwiseSeparable(widths[0], widths[0], 1, relu6)
        self.layer2 = nn.Sequential(ConcatDown(widths[0], widths[1], relu6),
                                    DepthwiseSeparable(widths[1], widths[1], 1, relu6))
        self.layer3 = nn.Sequential(ConcatDown(widths[1], widths[2], relu6),
                                    DepthwiseSeparable(widths[2], widths[2], 1, relu6))
        self.fc = nn.Linear(widths[2], num_classes)

    def forward(self, x):
        out = self.pool(self.act1(self.bn1(self.conv1(x))))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.fc(out.mean((2, 3)))


def mobilenet_dws(num_classes=10, in_channels=3, widths=(16, 32, 64), relu6=True):
    """A MobileNet-style depthwise-separable network.

    A 3x3 stem (conv, BN, ReLU6) and a 3x3/2 max pooling; a :class:`DepthwiseSeparable`
    block; twice a :class:`ConcatDown` (stride 2) and a block; the spatial mean; a linear
    classifier. A 32x32 input reaches the pooling as 4x4, a 16x16 one as 2x2; the input's side
    must be a multiple of 8 (the 2x2 average poolings need even sides).

    Parameters
    ----------
    num_classes, in_channels : int
    widths : three increasing ints
        The stages' channels (a stride-2 unit concatenates ``widths[i+1] - widths[i]`` new
        channels to the pooled input).
    relu6 : bool
        ReLU6 (MobileNet's) or ReLU after every BN.

    Returns
    -------
    MobileNetDWS
        Float, freshly initialised.
    """
    check_positive_int("num_classes", num_classes)
    check_positive_int("in_channels", in_channels)
    widths = _check_widths(widths, increasing=True)
    _check_bool("relu6", relu6)
    return MobileNetDWS(int(num_classes), int(in_channels), widths, relu6)


# Forms ----------------------------------------------------------------------------------------

def mult_ends(model):
    """The paths of the first convolution and of the classifier: what AdderNet and ShiftAddNet
    keep as multiplications.

    A zoo model knows them (its class's ``mulfree_ends``, ``("conv1", "fc")``). For any other
    model they are the first ``nn.Conv2d`` and the last ``nn.Linear`` in
    ``model.named_modules()`` order (registration order, usually but not necessarily the order
    of execution); an end the model lacks (or that is no longer a plain ``nn.Conv2d`` /
    ``nn.Linear``, e.g. already converted) is left out.

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    tuple of str
        Zero, one or two paths.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {model!r}")
    known = getattr(type(model), "mulfree_ends", None)
    if known is not None:
        modules = dict(model.named_modules())
        return tuple(p for p in known if type(modules.get(p)) in (nn.Conv2d, nn.Linear))
    convs = [p for p, m in model.named_modules() if type(m) is nn.Conv2d]
    linears = [p for p, m in model.named_modules() if type(m) is nn.Linear]
    return tuple(convs[:1]) + tuple(linears[-1:])


def to_form(model, form, *, weight_bits=5, mode="ps"):
    """Convert ``model`` in place into a form of :data:`FORMS` and return it.

    Parameters
    ----------
    model : torch.nn.Module
        A float model (a zoo model or any other).
    form : str
        ``"float"`` or ``"mult"``: unchanged. ``"shift"``: DeepShift, every ``nn.Conv2d`` and
        ``nn.Linear`` (:func:`~mulfree.host.convert.convert_to_shift`). ``"adder"``: AdderNet,
        every layer but the first convolution and the classifier (:func:`mult_ends`), which
        stay multiplications (the AdderNet paper's usual practice;
        :func:`~mulfree.host.convert.convert_to_adder`). ``"shiftadd"``: ShiftAddNet, each conv
        a shift conv followed by an adder conv, the first conv and the classifier kept
        (:func:`~mulfree.host.convert.convert_to_shiftadd`).
    weight_bits : int
        The shift layers' width, 2..6 (``"shift"``, ``"shiftadd"``).
    mode : ``"ps"`` or ``"q"``
        The shift layers' DeepShift mode.

    Returns
    -------
    torch.nn.Module
        ``model`` itself.
    """
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, not {form!r}")
    check_weight_bits(weight_bits)
    check_mode(mode)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, not {model!r}")
    if form == "shift":
        return convert_to_shift(model, mode=mode, weight_bits=weight_bits)
    if form == "adder":
        return convert_to_adder(model, skip=mult_ends(model))
    if form == "shiftadd":
        return convert_to_shiftadd(model, mode=mode, weight_bits=weight_bits,
                                   skip=mult_ends(model))
    return model


#: Name -> builder of the zoo's models (keyword arguments as the builders').
ZOO = {"resnet20": resnet20, "resnet8": resnet8, "shiftnet": shiftnet,
       "addressnet": addressnet, "mobilenet_dws": mobilenet_dws}


def build_zoo_model(name, form="float", *, weight_bits=5, mode="ps", **kw):
    """A zoo model built by ``ZOO[name](**kw)`` and converted by :func:`to_form`.

    Parameters
    ----------
    name : str
        A key of :data:`ZOO`.
    form : str
        One of :data:`FORMS`.
    weight_bits, mode
        As :func:`to_form`.
    **kw
        The builder's arguments (``num_classes``, ``in_channels``, ``widths``, ...).

    Returns
    -------
    torch.nn.Module
    """
    if name not in ZOO:
        raise ValueError(f"name must be one of {', '.join(ZOO)}, not {name!r}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {', '.join(FORMS)}, not {form!r}")
    return to_form(ZOO[name](**kw), form, weight_bits=weight_bits, mode=mode)
