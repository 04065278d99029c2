"""``mulfree report --compare``: the same array as shift, adder and multiplier PEs side by side.

:func:`kind_config` makes a core's twin of another PE kind or size, :func:`run_all`
synthesizes a list of cores (:func:`mulfree.gen.core_resources.core_resources`, several at
once), :func:`design_entry` sets one result against the device, and :func:`compare_kinds`
puts the three kinds side by side with their arithmetic energy.
"""

from dataclasses import replace

from ..gen.core_resources import core_resources
from ..gen.devices import Device, FitError, check_fit, device_share
from ..gen.energy import energy_estimate, energy_per_terms
from ..params.config import PE_KINDS
from ..params.core_config import CoreConfig


__all__ = ["kind_config", "run_all", "design_entry", "compare_kinds"]


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
    # The tap window is kept (or left out) as asked while the new array can hold it; else the
    # new size's default.
    fits = cfg.taps <= rows and rows == cols and engine.arch == "array"
    return replace(cfg, engine=engine, name=name,
                   taps=cfg.taps if cfg.taps == 0 or fits else None)


def run_all(configs, *, jobs, cache_dir, progress, timeout):
    """:func:`core_resources` of every config, ``jobs`` at once, in the given order."""
    from ..gen.synth import run_parallel
    return run_parallel(lambda c: core_resources(c, cache_dir=cache_dir, progress=progress,
                                                 timeout=timeout), configs, jobs)


def design_entry(cfg, run, device):
    """One design's line of a comparison: its array, resources, device share and whether it
    fits ``device`` (``fits``, and ``overflow``: the :class:`FitError` text when it does not).
    """
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
        ``device``, ``kinds`` (per PE kind: :func:`design_entry` fields and ``energy``: per
        inference of ``model`` counted as that kind, else per million terms).
    """
    configs = [kind_config(cfg, pe) for pe in PE_KINDS]
    runs = run_all(configs, jobs=jobs, cache_dir=cache_dir, progress=progress,
                    timeout=timeout)
    kinds = {}
    for c, run in zip(configs, runs):
        entry = design_entry(c, run, device)
        if model is not None:
            entry["energy"] = energy_estimate(model, table, pe=c.engine.pe)
            entry["energy_basis"] = "per inference"
        else:
            entry["energy"] = energy_per_terms(c.engine.pe, c.engine.act_bits, table)
            entry["energy_basis"] = "per 1,000,000 terms"
        kinds[c.engine.pe] = entry
    return {"device": device.name, "kinds": kinds}
