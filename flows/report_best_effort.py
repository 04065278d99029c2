"""``mulfree report --max-fit``: the best-effort multiplier array and the shift + mult hybrid.

The plain multiplier array (one DSP48E1 per PE) stops at the device's DSPs with most of its
LUTs unused. The *best-effort* multiplier array spends both: its first ``d`` columns pack two
products per DSP (``mult_pack=2``, ``ArrayConfig.dsp_cols = d``), the remaining ``n - d``
columns build their products from LUTs (``rtl/mult_pack.py``). Its resources at ``n x n``
with ``d`` DSP columns are modelled as

    R(n, d) = P(n, n) + n (n - d) delta          (LUT, FF, CARRY4, BRAM; DSP exactly)

with ``P`` the linear model (:func:`~mulfree.flows.report_max_fit.fit_linear`) of an
all-packed core fitted on the fit sizes, ``delta`` the per-PE difference between an
all-LUT core (``dsp_cols=0``) and an all-packed core of one size (``delta_size``), and
``DSP(n, d) = P_dsp(n, n) - n^2/2 + n ceil(d/2)`` (the core's other DSPs, e.g. of its
post-processing, stay as fitted). For each ``n`` the widest ``d`` the DSP limit allows is
taken (a packed PE costs ~18 LUT + 0.5 DSP, a LUT one ~100 LUT).

The *hybrid* is a multi-engine core (``CoreConfig.extra_engines``, interface 2.1): a shift
engine and a packed multiplier engine of the same ``n x n`` (engines share rows and cols),
fitted like any kind. The compiler runs each layer on its kind's engine and a run occupies
one engine, so the hybrid's engines take turns: its peak is one engine's PEs, and what it
buys is that layers needing multipliers (first and last layers, attention products: the
ShiftAddViT mix) run on DSPs at full size beside a shift engine, not that both count at once.
"""

from dataclasses import replace

from ..gen.devices import FIT_LIMITS, RESOURCES, Device
from ..params.core_config import CoreConfig
from .report_compare import kind_config, run_all
from .report_max_fit import fit_linear, largest_square


__all__ = ["BEST_EFFORT", "HYBRID", "DELTA_SIZE", "best_effort_config", "hybrid_config",
           "best_effort_columns", "dsp_budget", "best_effort_resources", "largest_best_effort",
           "fit_best_effort", "fit_hybrid", "add_best_effort"]

#: Names of the two extra entries of a max-fit result's ``kinds``.
BEST_EFFORT, HYBRID = "mult-best", "hybrid"
#: Size of the all-LUT and all-packed cores whose difference gives the LUT multiplier's cost.
DELTA_SIZE = 16


def best_effort_config(cfg: CoreConfig, rows, cols, dsp_cols=None):
    """``cfg`` as a mult core of ``rows x cols`` with packed DSP columns ``0 .. dsp_cols-1``
    (all when ``None``) and LUT multipliers beyond."""
    base = kind_config(cfg, "mult", rows, cols)
    engine = replace(base.engine, mult_pack=2, dsp_cols=dsp_cols)
    name = None if base.name is None else f"{base.name}_p2" + (
        "" if dsp_cols is None else f"_d{dsp_cols}")
    return replace(base, engine=engine, name=name, taps=0)


def hybrid_config(cfg: CoreConfig, n):
    """A two-engine core: shift PEs ``n x n`` (engine 0) and packed mult PEs ``n x n``."""
    base = kind_config(cfg, "shift", n, n)
    e = base.engine
    mult = replace(e, pe="mult", weight_bits=None, mult_pack=2, name=None)
    name = None if base.name is None else f"{base.name}_hybrid"
    return replace(base, extra_engines=(mult,), name=name)


def best_effort_columns(n, dsp_budget):
    """DSP columns of an ``n x n`` best-effort array: the most with ``n ceil(d/2)`` DSPs
    within ``dsp_budget``, at most ``n``."""
    d = min(n, 2 * int(dsp_budget // n)) if n else 0
    # An odd last DSP column is a lone (unpacked) DSP: one more DSP per row, if it fits.
    if d < n and n * ((d + 2) // 2) <= dsp_budget:
        d += 1
    return d


def dsp_budget(packed, n, allowed):
    """DSPs an ``n x n`` best-effort array's products may use: ``allowed`` less the core's
    other DSPs (the packed model at ``n x n`` less its ``n^2 / 2`` product DSPs: it is fitted
    on even sizes, where a row of ``n`` packed PEs has ``n / 2`` DSPs)."""
    other = packed["dsp"]["predict"](n, n) - n * n / 2
    return max(0.0, allowed - other)


def best_effort_resources(packed, delta, n, d):
    """Every resource of the ``n x n`` best-effort core with ``d`` DSP columns.

    ``packed``: models (:func:`fit_linear`) of the all-packed core per resource key; ``delta``:
    per-PE change of each resource from a packed PE to a LUT one (``dsp`` ignored).
    """
    out = {}
    for key, model in packed.items():
        base = model["predict"](n, n)
        if key == "dsp":
            out[key] = base - n * n / 2 + n * ((d + 1) // 2)
        else:
            out[key] = base + n * (n - d) * delta.get(key, 0.0)
    return out


def largest_best_effort(packed, delta, device: Device, limits=None, n_max=1024):
    """The largest ``n`` whose best-effort core fits: ``(n, d, binding)``; ``binding`` is the
    resource that stops ``n + 1``."""
    limits = {**FIT_LIMITS, **(limits or {})}
    fields = {key: field for key, _, field in RESOURCES}
    allowed = {k: limits[k] * getattr(device, fields[k]) * (1 + 1e-9) for k in packed}

    def over(n):
        d = best_effort_columns(n, dsp_budget(packed, n, allowed["dsp"]))
        got = best_effort_resources(packed, delta, n, d)
        return d, [k for k in packed if got[k] > allowed[k]]

    n = 0
    while n < n_max and not over(n + 1)[1]:
        n += 1
    binding = over(n + 1)[1] if n < n_max else []
    return n, over(n)[0] if n else 0, (binding[0] if binding else None)


def _models(runs, sizes, terms, keys):
    points = {k: [(n, n, runs[n]["resources"][k]) for n in sizes] for k in keys}
    return {k: fit_linear(points[k], terms) for k in keys}, [
        {"rows": n, "cols": n, **{k: runs[n]["resources"][k] for k in keys}} for n in sizes]


def _coef(models, terms):
    return {k: {"coef": dict(zip(terms, m["coef"])), "residual_max": m["residual_max"]}
            for k, m in models.items()}


def fit_best_effort(cfg: CoreConfig, device: Device, *, sizes, terms, limits=None,
                    delta_size=DELTA_SIZE, jobs=1, cache_dir=None, progress=None,
                    timeout=7200):
    """The largest best-effort multiplier core on ``device`` (see the module's text).

    Returns the entry of ``kinds[BEST_EFFORT]``: ``n``, ``pes``, ``dsp_cols``, ``pes_dsp``
    (packed and lone-DSP PEs), ``pes_lut``, ``binding``, ``predicted``, ``points``, ``models``,
    ``delta`` (per PE, with the two cores it came from).
    """
    keys = [key for key, _, _ in RESOURCES]
    plan = [best_effort_config(cfg, n, n) for n in sizes]
    plan += [best_effort_config(cfg, delta_size, delta_size, dsp_cols=0)]
    if delta_size not in sizes:
        plan += [best_effort_config(cfg, delta_size, delta_size)]
    done = run_all(plan, jobs=jobs, cache_dir=cache_dir, progress=progress, timeout=timeout)
    runs = {c.engine.rows: r for c, r in zip(plan, done) if c.engine.dsp_cols is None}
    lut_run = done[len(sizes)]
    models, points = _models(runs, sizes, terms, keys)
    m2 = delta_size * delta_size
    delta = {k: (lut_run["resources"][k] - runs[delta_size]["resources"][k]) / m2
             for k in keys if k != "dsp"}
    n, d, binding = largest_best_effort(models, delta, device, limits)
    return {"n": n, "pes": n * n, "dsp_cols": d, "pes_dsp": n * d, "pes_lut": n * (n - d),
            "binding": binding, "predicted": best_effort_resources(models, delta, n, d),
            "points": points, "models": _coef(models, terms),
            "delta": {"per_pe": delta, "size": delta_size,
                      "lut_core": lut_run["resources"],
                      "packed_core": runs[delta_size]["resources"]},
            "rectangles": []}


def fit_hybrid(cfg: CoreConfig, device: Device, *, sizes, terms, limits=None, jobs=1,
               cache_dir=None, progress=None, timeout=7200):
    """The largest shift + packed-mult two-engine core on ``device``: ``n`` and the PEs of
    each engine (``pes_shift``, ``pes_mult``, ``pes`` their sum), fitted like a kind."""
    keys = [key for key, _, _ in RESOURCES]
    plan = [hybrid_config(cfg, n) for n in sizes]
    done = run_all(plan, jobs=jobs, cache_dir=cache_dir, progress=progress, timeout=timeout)
    runs = {c.engine.rows: r for c, r in zip(plan, done)}
    models, points = _models(runs, sizes, terms, keys)
    n, binding = largest_square(models, device, limits)
    return {"n": n, "pes": 2 * n * n, "pes_shift": n * n, "pes_mult": n * n,
            "peak_pes": n * n, "binding": binding,
            "predicted": {k: models[k]["predict"](n, n) for k in keys},
            "points": points, "models": _coef(models, terms), "rectangles": []}


def _curve(resources_at, n_top, pes_of):
    return [{"pes": pes_of(n), **resources_at(n)} for n in range(1, n_top + 1)]


def _confirm(entry, plan, device, limits, *, jobs, cache_dir, progress, timeout):
    """Synthesize ``plan`` (``[(n, config)]``: the predicted n and n + 1) and record each as
    the plain max-fit records its confirming runs; set ``n_confirmed``."""
    from ..gen.devices import FitError, check_fit
    from .report_compare import design_entry
    done = run_all([c for _, c in plan], jobs=jobs, cache_dir=cache_dir, progress=progress,
                   timeout=timeout)
    ok = {}
    for (n, c), run in zip(plan, done):
        design = design_entry(c, run, device)
        try:
            check_fit(run["resources"], device, limits, what=c.top_name)
            design["within_limits"], design["limit_overflow"] = True, None
        except FitError as exc:
            design["within_limits"], design["limit_overflow"] = False, str(exc)
        predicted = entry["_predict"](n)
        design["predicted"] = predicted
        design["prediction_error"] = {
            k: (predicted[k] - run["resources"][k]) / run["resources"][k]
            if run["resources"][k] else None for k in predicted}
        entry.setdefault("confirm", []).append(design)
        ok[n] = design["within_limits"]
    n = entry["n"]
    if ok.get(n) and not ok.get(n + 1, True):
        entry["n_confirmed"], entry["confirm_note"] = n, "confirmed: n fits, n+1 not"
    elif ok.get(n) and ok.get(n + 1):
        entry["n_confirmed"], entry["confirm_note"] = n + 1, ("the model is conservative: "
                                                               "n+1 fits as well")
    else:
        entry["n_confirmed"] = None
        entry["confirm_note"] = "the predicted n does not fit: the model is optimistic"


def add_best_effort(result, cfg: CoreConfig, device: Device, *, terms, limits=None,
                    confirm=False, confirm_max_pes=None, confirm_kinds=None, jobs=1,
                    cache_dir=None, progress=None, timeout=7200):
    """Add :data:`BEST_EFFORT` and :data:`HYBRID` to a :func:`max_fit` ``result`` (fitted on
    its ``sizes``) and the ratios ``shift_over_best_effort`` and ``hybrid`` (PEs of each
    engine, their sum and the peak); confirm the best-effort ``n`` (and ``n + 1``) by
    synthesis when ``confirm`` allows it as it allows a kind."""
    limits = {**FIT_LIMITS, **(limits or {})}
    progress = progress or (lambda message: None)
    kw = dict(jobs=jobs, cache_dir=cache_dir, progress=progress, timeout=timeout)
    sizes = result["sizes"]
    keys = [key for key, _, _ in RESOURCES]
    best = fit_best_effort(cfg, device, sizes=sizes, terms=terms, limits=limits, **kw)
    packed = {k: fit_linear([(p["rows"], p["cols"], p[k]) for p in best["points"]], terms)
              for k in keys}
    allowed = limits["dsp"] * device.dsp * (1 + 1e-9)

    def columns(n):
        return best_effort_columns(n, dsp_budget(packed, n, allowed))

    def at(n, d=None):
        d = columns(n) if d is None else d
        return best_effort_resources(packed, best["delta"]["per_pe"], n, d)

    best["_predict"] = at
    best["curve"] = _curve(at, best["n"] + 2, lambda n: n * n)
    result["kinds"][BEST_EFFORT] = best
    n = best["n"]
    wanted = confirm and (confirm_kinds is None or BEST_EFFORT in confirm_kinds)
    if wanted and (confirm_max_pes is None or (n + 1) ** 2 <= confirm_max_pes):
        plan = [(m, best_effort_config(cfg, m, m, columns(m)))
                for m in (n, n + 1) if m >= 1]
        progress("confirming the best-effort multiplier: "
                 + ", ".join(f"{m}x{m} ({c.engine.dsp_cols} DSP columns)" for m, c in plan))
        _confirm(best, plan, device, limits, **kw)
    elif confirm:
        best["confirm_note"] = ("not confirmed by synthesis" + (
            "" if wanted else " (not asked)") + (
            f": {n + 1}x{n + 1} = {(n + 1) ** 2:,} PEs is above the {confirm_max_pes:,} PEs "
            f"a confirming synthesis may have" if wanted else ""))
    best.pop("_predict")

    hyb = fit_hybrid(cfg, device, sizes=sizes, terms=terms, limits=limits, **kw)
    hmodels = {k: fit_linear([(p["rows"], p["cols"], p[k]) for p in hyb["points"]], terms)
               for k in keys}
    hyb["curve"] = _curve(lambda m: {k: hmodels[k]["predict"](m, m) for k in keys},
                          hyb["n"] + 2, lambda m: 2 * m * m)
    for p in hyb["points"]:
        p["pes"] = 2 * p["rows"] * p["cols"]
    result["kinds"][HYBRID] = hyb

    def pes(kind):
        e = result["kinds"].get(kind)
        return None if e is None else (e.get("n_confirmed") or e["n"]) ** 2
    shift, be = pes("shift"), (best.get("n_confirmed") or n) ** 2
    result["shift_over_best_effort"] = shift / be if shift and be else None
    result["hybrid"] = {"n": hyb["n"], "pes_shift": hyb["pes_shift"],
                        "pes_mult": hyb["pes_mult"], "pes_total": hyb["pes"],
                        "peak_pes": hyb["peak_pes"],
                        "total_over_best_effort": hyb["pes"] / be if be else None,
                        "total_over_shift": hyb["pes"] / shift if shift else None}
    return result
