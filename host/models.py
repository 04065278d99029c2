"""The demo networks ``mulfree train`` knows, the data each trains on, and top-1 accuracy.

* Four small ``nn.Sequential`` stacks on scikit-learn's 8x8 digits (``digits``):
  ``deepshift_mlp``, ``deepshift_cnn``, ``adder_cnn``, ``shiftadd_cnn``.
* Three residual networks on the digits upsampled to 16x16 (``digits16``): ResNet-8
  (:func:`mulfree.host.zoo.resnet8`, CIFAR-style, option-A shortcuts, global average pooling)
  in DeepShift form (``resnet8_shift``: every convolution and the classifier DeepShift-Q),
  AdderNet form (``resnet8_adder``: adder convolutions, the first convolution and the
  classifier kept as multiplications, as the AdderNet paper does) and ShiftAddNet form
  (``resnet8_shiftadd``: each inner convolution a DeepShift-PS convolution then an adder
  convolution, the ends kept as multiplications).

:mod:`mulfree.host.train` trains them and :mod:`mulfree.host.export` saves and exports them.
"""

from functools import partial

import torch
from torch import nn

from ..params.config import DEFAULT_WEIGHT_BITS
from .layers import AdderConv2d, AdderLinear, ShiftConv2d, ShiftLinear


__all__ = ["MODELS", "MODEL_DATASETS", "SHIFT_WEIGHT_BITS", "check_model_name", "build_model",
           "model_data", "evaluate"]


#: The weight width of every DeepShift layer here: the default shift core's (4 bits: a sign and
#: shifts 0..6), so that what ``mulfree train`` makes runs on what ``mulfree gen --core`` and
#: ``mulfree build`` make with their defaults. The paper's default (and the layers') is 5.
SHIFT_WEIGHT_BITS = DEFAULT_WEIGHT_BITS["shift"]

_shift_conv = partial(ShiftConv2d, weight_bits=SHIFT_WEIGHT_BITS)
_shift_linear = partial(ShiftLinear, weight_bits=SHIFT_WEIGHT_BITS)


def _deepshift_mlp():
    return nn.Sequential(
        nn.Flatten(),
        _shift_linear(64, 64, bias=False, mode="q"), nn.BatchNorm1d(64), nn.ReLU(),
        nn.Dropout(0.1),
        _shift_linear(64, 10, mode="q"),
    )


def _deepshift_cnn():
    return nn.Sequential(
        _shift_conv(1, 16, 3, padding=1, bias=False, mode="q"), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(2),                                                    # 16 x 4 x 4
        _shift_conv(16, 32, 3, padding=1, bias=False, mode="q"), nn.BatchNorm2d(32), nn.ReLU(),
        nn.MaxPool2d(2),                                                    # 32 x 2 x 2
        nn.Flatten(),
        _shift_linear(128, 10, mode="q"),
    )


# Adder layers cost an [rows, out, K] intermediate on the CPU: the adder models stay narrow.

def _adder_cnn():
    return nn.Sequential(
        AdderConv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(2),                                                    # 8 x 4 x 4
        AdderConv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(2),                                                    # 16 x 2 x 2
        nn.Flatten(),
        AdderLinear(64, 10, bias=False), nn.BatchNorm1d(10),
    )


def _shiftadd_cnn():
    # ShiftAddNet: every convolution is a DeepShift-PS layer followed by an adder layer.
    return nn.Sequential(
        _shift_conv(1, 8, 3, padding=1, bias=False, mode="ps"), nn.BatchNorm2d(8), nn.ReLU(),
        AdderConv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.MaxPool2d(2),                                                    # 8 x 4 x 4
        _shift_conv(8, 16, 3, padding=1, bias=False, mode="ps"), nn.BatchNorm2d(16), nn.ReLU(),
        AdderConv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(2),                                                    # 16 x 2 x 2
        nn.Flatten(),
        _shift_linear(64, 10, mode="ps"),
    )


#: Channels of the three stages of the digits ResNet-8 models: half of CIFAR's 16/32/64 (the
#: 16x16 digits need no more, and AdderNet layers train slowly on a CPU).
RESNET8_WIDTHS = (8, 16, 32)


def _resnet8(form, **options):
    def build():
        from .zoo import resnet8, to_form
        return to_form(resnet8(num_classes=10, in_channels=1, widths=RESNET8_WIDTHS), form,
                       weight_bits=SHIFT_WEIGHT_BITS, **options)
    return build


#: Model name -> builder of a fresh (randomly initialised) model.
MODELS = {"deepshift_mlp": _deepshift_mlp, "deepshift_cnn": _deepshift_cnn,
          "adder_cnn": _adder_cnn, "shiftadd_cnn": _shiftadd_cnn,
          "resnet8_shift": _resnet8("shift", mode="q"),
          "resnet8_adder": _resnet8("adder"),
          "resnet8_shiftadd": _resnet8("shiftadd")}

#: Model name -> the data set it trains on (:data:`mulfree.host.datasets.DATASETS`).
MODEL_DATASETS = {name: "digits16" if name.startswith("resnet") else "digits"
                  for name in MODELS}


def check_model_name(name):
    """``name`` if it is one of :data:`MODELS`, else :class:`ValueError` naming them."""
    if name not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, not {name!r}")
    return name


def build_model(name):
    """A fresh ``nn.Sequential`` of the demo model ``name`` (one of :data:`MODELS`).

    Initialised from torch's global random state; :func:`train_model` seeds it.
    """
    return MODELS[check_model_name(name)]()


def model_data(name, seed=0):
    """The training and test split model ``name`` uses (a :func:`~mulfree.host.datasets.
    digits_split` dict: ``x_train``, ``y_train``, ``x_test``, ``y_test``)."""
    from .datasets import digits_split
    size = 16 if MODEL_DATASETS[check_model_name(name)] == "digits16" else 8
    return digits_split(seed, size=size)


@torch.no_grad()
def evaluate(model, x, y, batch=512):
    """Top-1 accuracy (a float in [0, 1]) of ``model`` in eval mode on arrays ``x``, ``y``."""
    was_training = model.training
    model.eval()
    try:
        correct = 0
        for i in range(0, len(x), batch):
            logits = model(torch.as_tensor(x[i:i + batch]))
            correct += int((logits.argmax(1) == torch.as_tensor(y[i:i + batch])).sum())
    finally:
        model.train(was_training)
    return correct / len(x)
