"""``mulfree bench gen``: elaboration time of square shift arrays of growing size.

Wall-clock time of :func:`~mulfree.gen.emit.convert_verilog` for square shift arrays of growing
size. Every size runs in a fresh Python process (:func:`gen_child`), after one warm-up
conversion of a tiny design, so that imports and Amaranth's first-call costs are not charged to
any size. The growth exponent between the smallest and the largest array says whether the time
grows faster than the PE count.
"""

import json
import math
import subprocess
import sys
import time

from ..params.config import ArrayConfig
from .bench_text import fmt_number, stderr_progress
from .options import save_figure, table


__all__ = ["GEN_SIZES", "GEN_TIME_LIMIT", "gen_child", "growth_exponent", "bench_gen",
           "plot_gen", "format_gen"]


#: Default square array sizes (rows = cols) of the elaboration benchmark.
GEN_SIZES = (16, 32, 48, 64)
#: The largest default array must elaborate within this many seconds.
GEN_TIME_LIMIT = 30.0


def gen_child(params):
    """Time one conversion in this (fresh) process; print the result as one JSON line.

    The entry of the child process :func:`bench_gen` starts per size (``python -c``, by this
    module's name): keep its name and module in step with ``_run_gen_child``.

    Parameters
    ----------
    params : dict
        Keyword arguments of the :class:`~mulfree.params.config.ArrayConfig` to convert.
    """
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
    """The JSON line of :func:`gen_child` run on ``params`` in a fresh Python process."""
    code = ("import json, sys; from mulfree.flows.bench_gen import gen_child; "
            "gen_child(json.loads(sys.argv[1]))")
    proc = subprocess.run([sys.executable, "-c", code, json.dumps(params)],
                          capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"elaboration of {params} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def growth_exponent(n1, t1, n2, t2):
    """``log(t2 / t1) / log(n2 / n1)``: 1 means time grows as fast as the PE count.

    Parameters
    ----------
    n1, t1 : float
        PE count and seconds of the smaller array.
    n2, t2 : float
        The same of the larger array.

    Returns
    -------
    float or None
        None when the counts are equal or a time is not positive.
    """
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
              time_limit=GEN_TIME_LIMIT, timeout=1800, progress=stderr_progress):
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


def plot_gen(result, path):
    """Save elapsed time against PE count (log-log, with a linear-growth reference).

    Parameters
    ----------
    result : dict
        What :func:`bench_gen` returned.
    path : path-like
        The figure, in the format of its suffix (PNG without one).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    from matplotlib.figure import Figure

    runs = result["runs"]
    pes = [r["pes"] for r in runs]
    secs = [r["seconds"] for r in runs]
    fig = Figure(figsize=(6, 4.2))
    ax = fig.subplots()
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


def format_gen(result):
    """The gen result as a text table.

    Parameters
    ----------
    result : dict
        What :func:`bench_gen` returned.

    Returns
    -------
    str
        One row per size, then the growth exponents.
    """
    rows = [(f"{r['rows']}x{r['cols']}", r["pes"], fmt_number(r["seconds"], 2),
             fmt_number(r["seconds_per_pe"] * 1e3, 3),
             fmt_number(r["verilog_bytes"] / 1e6, 2), fmt_number(r["peak_rss_mb"], 0))
            for r in result["runs"]]
    text = table(("array", "PEs", "seconds", "ms/PE", "Verilog MB", "peak MB"), rows)
    text += (f"\ngrowth exponent (smallest -> largest): {fmt_number(result['exponent'], 3)}; "
             f"least-squares fit: {fmt_number(result['fit_exponent'], 3)}")
    return text
