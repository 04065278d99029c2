"""Host side of mulfree.

The PyTorch layers, converters, the networks users bring (ResNet-20/8, ShiftNet / AddressNet,
MobileNet-style; :mod:`mulfree.host.zoo`), the quantizer and exporter
(:mod:`mulfree.host.layers`, :mod:`mulfree.host.convert`, :mod:`mulfree.host.quant`,
:mod:`mulfree.host.export`) and the CIFAR-10 reader are exported lazily: importing
:mod:`mulfree.host` does not import torch.

``export`` is both a module and its main function: ``mulfree.host.export`` is always the
module, which is callable (calling it calls :func:`mulfree.host.export.export`), so it is the
same object whether or not the module was imported before.
"""

_LAZY = {
    "ShiftLinear": "shift_layers", "ShiftConv2d": "shift_layers", "AdderLinear": "adder_layers",
    "AdderConv2d": "adder_layers", "AdderLRScaler": "adder_layers", "Shift2d": "zero_flop_layers",
    "AddressShift2d": "zero_flop_layers", "ChannelShift": "zero_flop_layers",
    "convert_to_shift": "convert", "convert_to_adder": "convert",
    "convert_to_shiftadd": "convert", "resnet_cifar": "zoo", "resnet20": "zoo", "resnet8": "zoo",
    "shiftnet": "zoo", "addressnet": "zoo", "mobilenet_dws": "zoo", "to_form": "zoo",
    "build_zoo_model": "zoo", "load_cifar10": "cifar",
    "quantize": "ptq", "int_forward": "int_inference", "dequantize_output": "int_inference",
    "quantized_forward": "int_inference", "QuantizeError": "quant_parse", "QATWrapper": "qat",
    "export": "export", "save_float": "export", "load_float": "export",
    "FloatWeightsError": "export",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        # "export" names the (callable) module itself: importing it binds that name here.
        return module if name == "export" else getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
