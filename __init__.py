"""mulfree: generator of multiplication-free neural-network accelerators.

The public API, importable from here and loaded lazily: ``import mulfree`` imports neither
Amaranth nor torch, and a name's module is imported the first time the name is used (so the
board runtime, ``mulfree.open_device``, needs only NumPy and safetensors).

=========================  ===========================================================
describe a design          :class:`ArrayConfig`, :class:`CoreConfig`,
                           :class:`ShiftUnitConfig`, :class:`ConfigError`,
                           :func:`engine_manifest`, :func:`core_manifest`
generate it (Amaranth)     :func:`write_design`, :func:`write_core_design`,
                           :func:`write_shift_unit`
the numeric specification  :class:`IntModel`, :func:`run_int_model`, :func:`quantize_input`,
                           :func:`predict`
networks (torch)           :class:`ShiftLinear`, :class:`ShiftConv2d`, :class:`AdderLinear`,
                           :class:`AdderConv2d`, :class:`AddressShift2d`,
                           :class:`ChannelShift`, :func:`convert_to_shift`,
                           :func:`convert_to_adder`, :func:`quantize`, :func:`export`
exports                    :func:`load_export`, :class:`ExportError`
compile and run            :func:`compile_model`, :class:`Program`, :class:`CompileError`,
                           :func:`open_device`, :class:`Device`, :class:`DeviceError`
untrusted files            :class:`FileCheckError`
=========================  ===========================================================

The folders are floors, imports running down only (``docs/architecture.md``):
:mod:`mulfree.params` (parameters and the numeric specification, NumPy only) under
:mod:`mulfree.rtl` (Amaranth components) and :mod:`mulfree.host` (PyTorch, export, compiler,
runtime), under :mod:`mulfree.gen` (Verilog, manifests, synthesis, the Vivado plan), under
:mod:`mulfree.sim` (testbenches, simulated boards), under :mod:`mulfree.flows` (the
``mulfree`` command).
"""

from .params.version import __version__

#: Public name -> ``(module, attribute)``; the module is imported on first use.
_API = {
    "ArrayConfig": ("mulfree.params.config", "ArrayConfig"),
    "ConfigError": ("mulfree.params.config", "ConfigError"),
    "CoreConfig": ("mulfree.params.core_config", "CoreConfig"),
    "ShiftUnitConfig": ("mulfree.params.shift_config", "ShiftUnitConfig"),
    "engine_manifest": ("mulfree.params.manifest", "engine_manifest"),
    "core_manifest": ("mulfree.params.manifest", "core_manifest"),
    "write_design": ("mulfree.gen.emit", "write_design"),
    "write_core_design": ("mulfree.gen.core_manifest", "write_core_design"),
    "write_shift_unit": ("mulfree.gen.shift_emit", "write_shift_unit"),
    "IntModel": ("mulfree.params.int_model", "IntModel"),
    "ExportError": ("mulfree.params.int_model", "ExportError"),
    "run_int_model": ("mulfree.params.model_golden", "run_int_model"),
    "quantize_input": ("mulfree.params.model_golden", "quantize_input"),
    "predict": ("mulfree.params.model_golden", "predict"),
    "ShiftLinear": ("mulfree.host", "ShiftLinear"),
    "ShiftConv2d": ("mulfree.host", "ShiftConv2d"),
    "AdderLinear": ("mulfree.host", "AdderLinear"),
    "AdderConv2d": ("mulfree.host", "AdderConv2d"),
    "AddressShift2d": ("mulfree.host", "AddressShift2d"),
    "ChannelShift": ("mulfree.host", "ChannelShift"),
    "convert_to_shift": ("mulfree.host", "convert_to_shift"),
    "convert_to_adder": ("mulfree.host", "convert_to_adder"),
    "convert_to_shiftadd": ("mulfree.host", "convert_to_shiftadd"),
    "resnet20": ("mulfree.host", "resnet20"),
    "resnet8": ("mulfree.host", "resnet8"),
    "to_form": ("mulfree.host", "to_form"),
    "quantize": ("mulfree.host", "quantize"),
    "export": ("mulfree.host.export", "export"),
    "load_export": ("mulfree.host.export_format", "load_export"),
    "compile_model": ("mulfree.host.compiler", "compile_model"),
    "Program": ("mulfree.host.compiler", "Program"),
    "CompileError": ("mulfree.host.compiler", "CompileError"),
    "open_device": ("mulfree.host.runtime", "open_device"),
    "Device": ("mulfree.host.runtime", "Device"),
    "DeviceError": ("mulfree.host.device_errors", "DeviceError"),
    "FileCheckError": ("mulfree.params.safe_io", "FileCheckError"),
}

__all__ = ["__version__", *_API]


def __getattr__(name):
    try:
        module, attribute = _API[name]
    except KeyError:
        raise AttributeError(f"module 'mulfree' has no attribute {name!r}") from None
    import importlib
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value             # later uses skip this function
    return value


def __dir__():
    return sorted({*globals(), *_API})
