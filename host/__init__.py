"""Host side of mulfree.

The PyTorch layers, converters, quantizer and exporter (:mod:`mulfree.host.layers`,
:mod:`mulfree.host.convert`, :mod:`mulfree.host.quant`, :mod:`mulfree.host.export`) are
exported lazily: importing :mod:`mulfree.host` does not import torch.

``export`` is both a module and its main function: ``mulfree.host.export`` is always the
module, which is callable (calling it calls :func:`mulfree.host.export.export`), so it is the
same object whether or not the module was imported before.
"""

_LAZY = {
    "ShiftLinear": "layers", "ShiftConv2d": "layers", "AdderLinear": "layers",
    "AdderConv2d": "layers", "AdderLRScaler": "layers", "Shift2d": "layers",
    "AddressShift2d": "layers", "ChannelShift": "layers",
    "convert_to_shift": "convert", "convert_to_adder": "convert",
    "quantize": "quant", "int_forward": "quant", "dequantize_output": "quant",
    "quantized_forward": "quant", "QuantizeError": "quant",
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
