"""The export format: an integer model in ``model.safetensors`` + ``model.json``.

The public face of exports. The model itself (:class:`IntModel`, its nodes, constants and
validation) is :mod:`mulfree.params.int_model`'s and :mod:`mulfree.params.int_layers`'s; the
files are :mod:`mulfree.host.export_check`'s (each node kind's JSON:
:mod:`mulfree.host.export_nodes`). All are re-exported here, so ``mulfree.host.export_format``
is the one module a user imports.

**Files.** :func:`write_export` writes a directory holding ``model.safetensors`` (every
integer array, named ``layers.<i>.<field>``) and ``model.json`` (format 3.0: the graph, every
node with its kind, name, inputs, fields and derived facts, the tensors' names, dtypes and
shapes, the sha256 of the safetensors file, and a digest of the graph and the tensors
together); :func:`load_export` reads it back, or a 2.0 export (a chain), and checks every
field it reads. Nothing is pickled. ``docs/export_format.md`` is the specification.
"""

from ..params.int_model import (
    ADD_SHIFT_LIMITS, ALIGN_SHIFT_LIMITS, DTYPES, FORMAT_NAME, FORMAT_VERSION, FORMAT_VERSIONS,
    INPUT_NAME, LAYER_KINDS, MAX_DIM, MAX_INPUTS, MAX_KERNEL, MAX_NAME_LENGTH, MAX_PADDING,
    MAX_POOL_KERNEL, MAX_POOL_WINDOW, MAX_SHIFT2D, MAX_STRIDE, MODEL_JSON, MODEL_TENSORS,
    OUTPUTS, POOL_SHIFT_LIMITS, SCALE_EXP_LIMITS, WEIGHT_KINDS, ExportError, IntAdd,
    IntAddressShift, IntAvgPool2d, IntChannelShift, IntClamp, IntConcat, IntConv2d, IntFlatten,
    IntGlobalAvgPool, IntInput, IntLinear, IntMaxPool2d, IntModel, IntPad, IntShift2d,
    NodeInfo, graph_nodes, layer_config, layer_shapes, node_name)
from .export_check import load_export, write_export


__all__ = [
    "ExportError", "FORMAT_NAME", "FORMAT_VERSION", "FORMAT_VERSIONS", "MODEL_JSON",
    "MODEL_TENSORS", "OUTPUTS", "INPUT_NAME",
    "IntInput", "IntModel", "NodeInfo", "IntLinear", "IntConv2d", "IntFlatten", "IntMaxPool2d",
    "IntAvgPool2d", "IntGlobalAvgPool", "IntAdd", "IntConcat", "IntClamp", "IntPad",
    "IntShift2d", "IntAddressShift", "IntChannelShift",
    "layer_config", "layer_shapes", "graph_nodes", "node_name", "write_export", "load_export",
    "DTYPES", "LAYER_KINDS", "WEIGHT_KINDS", "SCALE_EXP_LIMITS", "MAX_DIM", "MAX_KERNEL",
    "MAX_STRIDE", "MAX_PADDING", "MAX_NAME_LENGTH", "MAX_INPUTS", "MAX_SHIFT2D",
    "MAX_POOL_KERNEL", "MAX_POOL_WINDOW", "ADD_SHIFT_LIMITS", "ALIGN_SHIFT_LIMITS",
    "POOL_SHIFT_LIMITS",
]
