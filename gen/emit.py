"""Verilog, RTLIL and manifest emission, written atomically.

An array is emitted as its top module plus the column module it instantiates ``cols`` times
(see :class:`~mulfree.rtl.array.PEColumn`), in one file; a tree (``arch="tree"``,
:class:`~mulfree.rtl.tree.TreeEngine`) is one module.
"""

import json

from amaranth.back import rtlil, verilog

from ..params.config import ArrayConfig
from .manifest import manifest
from ..params import safe_io
from ..params.safe_io import write_atomic
from ..rtl.array import PEArray, column_components
from ..rtl.tree import TreeEngine


__all__ = ["build_array", "design_modules", "convert_verilog", "convert_rtlil", "write_outputs",
           "write_design", "check_output_dir", "OutputError"]


class OutputError(ValueError):
    """The output location cannot be used; ``param`` names the parameter."""

    def __init__(self, param, message):
        super().__init__(message)
        self.param = param


def build_array(cfg: ArrayConfig):
    """The top component and the column components it instantiates by name.

    Returns ``(top, [(column component, module name), ...])``: one column module, or one per
    column variant of a mult array with packed or LUT columns (:func:`column_components`).
    """
    column_name = f"{cfg.top_name}_column"
    columns = [(c, name) for c, _, name in column_components(cfg, column_name)]
    return PEArray(cfg, column_module=column_name), columns


def design_modules(cfg: ArrayConfig):
    """The design's modules as ``[(component, module name), ...]``, the top first."""
    if cfg.arch == "tree":
        return [(TreeEngine(cfg), cfg.top_name)]
    top, columns = build_array(cfg)
    return [(top, cfg.top_name), *columns]


def convert_verilog(cfg: ArrayConfig):
    """The design's Verilog source: the top module, then any module it instantiates."""
    return "".join(verilog.convert(component, name=name, emit_src=False)
                   for component, name in design_modules(cfg))


def convert_rtlil(cfg: ArrayConfig):
    """The design as RTLIL, for Yosys (its Verilog reader trips on some of Amaranth's output)."""
    return "".join(rtlil.convert(component, name=name, emit_src=False)
                   for component, name in design_modules(cfg))


def check_output_dir(out_dir, param="output"):
    """Refuse an output folder that cannot be created or written, before any work is done."""
    try:
        return safe_io.check_output_dir(out_dir, param)
    except safe_io.FileCheckError as exc:
        raise OutputError(param, str(exc)) from None


def write_outputs(out_dir, top_name, make_verilog, make_manifest):
    """Write ``<top_name>.v`` and ``<top_name>.json`` into ``out_dir``; return both paths.

    ``make_verilog()`` and ``make_manifest()`` run first, in memory; the two files are then
    each replaced atomically, the manifest last, so a manifest never describes a Verilog file
    that was not written and a failure leaves the folder as it was.
    """
    out_dir = check_output_dir(out_dir)
    text = make_verilog()
    doc = json.dumps(make_manifest(), indent=2) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    v_path = out_dir / f"{top_name}.v"
    j_path = out_dir / f"{top_name}.json"
    write_atomic(v_path, text)
    write_atomic(j_path, doc)
    return v_path, j_path


def write_design(cfg: ArrayConfig, out_dir):
    """Write the engine ``cfg`` as ``<top>.v`` and ``<top>.json`` (see :func:`write_outputs`)."""
    return write_outputs(out_dir, cfg.top_name, lambda: convert_verilog(cfg),
                         lambda: manifest(cfg))
