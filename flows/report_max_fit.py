"""``mulfree report --max-fit``: the largest array of each PE kind that fits a device.

Each resource of a few synthesized sizes is fitted as a linear model of the array size
(:func:`fit_linear`); the largest square the models keep within the limits
(:func:`largest_square`, :data:`mulfree.gen.devices.FIT_LIMITS`) is found and confirmed by
synthesis (:func:`max_fit`).
"""

from ..gen.devices import FIT_LIMITS, RESOURCES, Device, FitError, ReportError, check_fit
from ..params.config import PE_KINDS
from ..params.core_config import CoreConfig
from .report_compare import design_entry, kind_config, run_all


__all__ = ["fit_linear", "largest_square", "largest_rectangles", "FIT_SIZES", "HOLDOUT_SIZE",
           "FIT_TERMS", "max_fit"]


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
    runs = dict(zip(plan, run_all([configs[p] for p in plan], jobs=jobs,
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
        done = run_all([kind_config(cfg, pe, m, m) for pe, m in plan], jobs=jobs,
                        cache_dir=cache_dir, progress=progress, timeout=timeout)
        for (pe, m), run in zip(plan, done):
            entry = result["kinds"][pe]
            c = kind_config(cfg, pe, m, m)
            design = design_entry(c, run, device)
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
