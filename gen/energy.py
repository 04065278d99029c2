"""The arithmetic energy of a model: operation counts and a table of unit energies.

:func:`energy_estimate` counts the operations of one inference of an exported integer model
(:func:`op_counts`) and prices them with a unit-energy table (:data:`ENERGY_45NM`, the 45 nm
figures of ShiftAddNet's code, or a JSON file read by :func:`load_energy_table`);
:func:`energy_per_terms` does the same for a number of terms of one PE kind.

The energy is of the arithmetic only: no memory access or data movement is counted, so it is
a lower bound of a real inference's energy and a fair comparison of the PE kinds only.
"""

import math
import os

from .devices import ReportError


__all__ = ["ENERGY_45NM", "ENERGY_SOURCE", "WIDTH_CLASSES", "TERM_OPS", "OUTPUT_OPS",
           "width_class", "load_energy_table", "op_counts", "energy_estimate",
           "energy_per_terms"]


#: Energy of one operation in pJ at 45 nm, by operation and number format. These are the unit
#: energies of ShiftAddNet's code (You et al., "ShiftAddNet: A Hardware-Inspired Deep
#: Network", NeurIPS 2020), whose add and multiply figures are Horowitz's ("Computing's
#: energy problem", ISSCC 2014); see shared/SEEDS.md, section 5.
ENERGY_45NM = {
    "mult": {"FIX8": 0.2, "FIX32": 3.1, "FP32": 3.7},
    "add": {"FIX8": 0.03, "FIX32": 0.1, "FP32": 0.9},
    "shift": {"FIX8": 0.024, "FIX32": 0.13},
}
ENERGY_SOURCE = ("45 nm unit energies (pJ) of ShiftAddNet's code (You et al., NeurIPS 2020; "
                 "adds and multiplies after Horowitz, ISSCC 2014)")
#: The number formats an integer width is counted in: the narrowest class holding it.
WIDTH_CLASSES = (("FIX8", 8), ("FIX32", 32))
#: Operations of one term (one weight applied to one activation, accumulated) per PE kind.
#: An AdderNet term ``-|x - w|`` is a subtraction and an absolute value, counted as two adds
#: as AdderNet's paper (Chen et al., CVPR 2020) counts it; every term adds one accumulation.
TERM_OPS = {"shift": {"shift": 1, "add": 1}, "mult": {"mult": 1, "add": 1},
            "adder": {"add": 3}}
#: Operations of one output's post-processing: the bias add and the power-of-two rescale.
OUTPUT_OPS = {"add": 1, "shift": 1}


def width_class(bits):
    """The number format of a ``bits``-wide integer: ``"FIX8"`` (<= 8) or ``"FIX32"`` (<= 32)."""
    for name, width in WIDTH_CLASSES:
        if bits <= width:
            return name
    raise ReportError("act_bits", f"act_bits must be at most 32 for the energy table's "
                                  f"formats, not {bits!r}")


def load_energy_table(source=None):
    """The unit-energy table: :data:`ENERGY_45NM` updated by ``source``.

    Parameters
    ----------
    source : path-like, dict or None
        A JSON file (or its decoded object) of the same shape as :data:`ENERGY_45NM`, e.g.
        ``{"add": {"FIX8": 0.05}}``; the entries it gives replace the default ones.

    Raises
    ------
    ReportError
        Naming the key (``energy_table.add.FIX8``), the value and what is allowed.
    """
    table = {op: dict(values) for op, values in ENERGY_45NM.items()}
    if source is None:
        return table
    where = "energy_table"
    if isinstance(source, (str, os.PathLike)):
        from ..params.safe_io import FileCheckError, read_json
        if not str(source):
            raise ReportError(where, f"{where} must name a JSON file, not ''")
        try:
            # Strict and bounded (size, nesting, no NaN); any top level, refused below.
            source = read_json(source, where, what="energy table", kind=None)
        except FileCheckError as exc:
            raise ReportError(where, str(exc)) from None
    if not isinstance(source, dict):
        raise ReportError(where, f"{where} must be a JSON object of operations "
                                 f"({', '.join(ENERGY_45NM)}), not {type(source).__name__}")
    formats = ("FIX8", "FIX32", "FP32")
    for op, values in source.items():
        if op not in ENERGY_45NM:
            raise ReportError(f"{where}.{op}", f"{where} key {op!r} must be one of "
                                               f"{', '.join(ENERGY_45NM)}")
        if not isinstance(values, dict):
            raise ReportError(f"{where}.{op}", f"{where}.{op} must be an object of formats "
                                               f"({', '.join(formats)}) to pJ, not {values!r}")
        for fmt, value in values.items():
            key = f"{where}.{op}.{fmt}"
            if fmt not in formats:
                raise ReportError(key, f"{where}.{op} key {fmt!r} must be one of "
                                       f"{', '.join(formats)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value) or value < 0:
                raise ReportError(key, f"{key} must be a finite number of pJ >= 0, "
                                       f"not {value!r}")
            table[op][fmt] = float(value)
    return table


def _unit(table, op, fmt):
    try:
        return table[op][fmt]
    except KeyError:
        raise ReportError(f"energy_table.{op}.{fmt}", f"energy_table.{op}.{fmt} is needed "
                                                      f"(a {fmt} {op}) but not given") from None


def op_counts(model, pe=None):
    """Operations per inference of each layer with weights of an integer model.

    Parameters
    ----------
    model : mulfree.host.export_format.IntModel
    pe : str or None
        Count every layer as this PE kind (for a comparison); ``None``: each layer's own.

    Returns
    -------
    list of dict
        One per linear or conv2d layer: ``layer`` (index), ``kind``, ``pe``, ``k`` (reduction
        length), ``out_c``, ``out_pixels``, ``terms`` (``out_pixels * out_c * k``),
        ``outputs`` (``out_pixels * out_c``), ``format`` (``FIX8``/``FIX32`` of the layer's
        ``act_bits``) and ``ops`` (``{"shift"|"add"|"mult": count}``).
    """
    import numpy as np
    shapes = model.validate()
    counts = []
    for i, (layer, (_, out_shape, _)) in enumerate(zip(model.layers, shapes)):
        if layer.kind not in ("linear", "conv2d"):
            continue
        codes = np.shape(layer.codes)
        if layer.kind == "conv2d":
            k, out_c, out_pixels = int(np.prod(codes[1:])), codes[0], out_shape[1] * out_shape[2]
        else:
            k, out_c, out_pixels = codes[0], codes[1], 1
        kind = pe or layer.pe
        terms = out_pixels * out_c * k
        outputs = out_pixels * out_c
        ops = {}
        for per_op, n in ((TERM_OPS[kind], terms), (OUTPUT_OPS, outputs)):
            for op, per in per_op.items():
                ops[op] = ops.get(op, 0) + per * n
        counts.append({"layer": i, "kind": layer.kind, "pe": kind, "k": int(k),
                       "out_c": int(out_c), "out_pixels": int(out_pixels), "terms": int(terms),
                       "outputs": int(outputs), "format": width_class(layer.act_bits),
                       "ops": ops})
    return counts


def _energy_of(ops, fmt, table):
    return sum(n * _unit(table, op, fmt) for op, n in ops.items())


def energy_estimate(model, table=None, pe=None):
    """Arithmetic energy of one inference of ``model`` (pJ), per layer and in total.

    Each term is one shift, multiplication or AdderNet subtraction and absolute value (two
    adds) plus one accumulating add; each output adds its bias and shifts once. Every
    operation is counted at the format of the layer's activation width (:func:`width_class`).
    Memory and data movement are not counted.

    Returns
    -------
    dict
        ``pe`` (the override or ``None``), ``layers`` (:func:`op_counts` entries with
        ``energy_pj``), ``terms``, ``ops`` (totals), ``energy_pj``, ``energy_uj``.
    """
    table = table or load_energy_table()
    layers = op_counts(model, pe)
    total, ops = 0.0, {}
    for entry in layers:
        entry["energy_pj"] = _energy_of(entry["ops"], entry["format"], table)
        total += entry["energy_pj"]
        for op, n in entry["ops"].items():
            ops[op] = ops.get(op, 0) + n
    return {"pe": pe, "layers": layers, "terms": sum(e["terms"] for e in layers), "ops": ops,
            "energy_pj": total, "energy_uj": total * 1e-6}


def energy_per_terms(pe, act_bits, table=None, terms=1_000_000):
    """Arithmetic energy (pJ) of ``terms`` terms of a ``pe`` array (no post-processing)."""
    table = table or load_energy_table()
    fmt = width_class(act_bits)
    ops = {op: per * terms for op, per in TERM_OPS[pe].items()}
    energy = _energy_of(ops, fmt, table)
    return {"pe": pe, "terms": terms, "format": fmt, "ops": ops, "energy_pj": energy,
            "energy_uj": energy * 1e-6}
