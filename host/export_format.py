"""The export format: an integer model in ``model.safetensors`` + ``model.json``.

The public face of exports. The model itself (:class:`IntModel`, its layers, constants and
validation) is :mod:`mulfree.params.int_model`'s; the files are :mod:`mulfree.host.export_check`'s.
Both are re-exported here, so ``mulfree.host.export_format`` is the one module a user imports.

**Files.** :func:`write_export` writes a directory holding ``model.safetensors`` (every
integer array, named ``layers.<i>.<field>``) and ``model.json`` (the graph, the tensors'
names, dtypes and shapes, the sha256 of the safetensors file, and a digest of the graph and
the tensors together); :func:`load_export` (:mod:`mulfree.host.export_check`) reads it back
and checks every field it reads. Nothing is pickled.
"""

from ..params.int_model import (DTYPES, FORMAT_NAME, FORMAT_VERSION, LAYER_KINDS, MAX_DIM, MAX_KERNEL,
                        MAX_NAME_LENGTH, MAX_PADDING, MAX_STRIDE, MODEL_JSON, MODEL_TENSORS,
                        OUTPUTS, SCALE_EXP_LIMITS, ExportError, IntConv2d, IntFlatten, IntInput,
                        IntLinear, IntMaxPool2d, IntModel, layer_config, layer_shapes)
from .export_check import load_export, write_export


__all__ = [
    "ExportError", "FORMAT_NAME", "FORMAT_VERSION", "MODEL_JSON", "MODEL_TENSORS", "OUTPUTS",
    "IntInput", "IntLinear", "IntConv2d", "IntFlatten", "IntMaxPool2d", "IntModel",
    "layer_config", "layer_shapes", "write_export", "load_export", "DTYPES", "LAYER_KINDS",
    "SCALE_EXP_LIMITS", "MAX_DIM", "MAX_KERNEL", "MAX_STRIDE", "MAX_PADDING", "MAX_NAME_LENGTH",
]
