"""Host side of mulfree.

The PyTorch layers, converters and quantizer (:mod:`mulfree.host.layers`,
:mod:`mulfree.host.convert`, :mod:`mulfree.host.quant`) are exported lazily: importing
:mod:`mulfree.host` does not import torch.
"""

_LAZY = {
    "ShiftLinear": "layers", "ShiftConv2d": "layers", "AdderLinear": "layers",
    "AdderConv2d": "layers", "AdderLRScaler": "layers", "Shift2d": "layers",
    "AddressShift2d": "layers", "ChannelShift": "layers",
    "convert_to_shift": "convert", "convert_to_adder": "convert",
    "quantize": "quant", "int_forward": "quant", "dequantize_output": "quant",
    "quantized_forward": "quant", "QuantizeError": "quant",
}

__all__ = list(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
