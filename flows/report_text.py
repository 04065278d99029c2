"""The text of ``mulfree report``: the resource table, the energy estimate, the PE kinds
compared and the largest array of each."""

from ..gen.devices import FIT_LIMITS, RESOURCES, Device, device_share, format_number
from ..gen.energy import ENERGY_SOURCE
from .options import table


__all__ = ["format_resources", "format_energy", "ENERGY_NOTE", "format_compare",
           "format_max_fit"]


def format_resources(resources, device: Device, title):
    """A table of the resources, the device's amount and the share."""
    share = device_share(resources, device)
    rows = []
    for key, label, field in RESOURCES:
        rows.append((label, format_number(resources[key]), f"{getattr(device, field):,}",
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
    """The PE kinds side by side: each resource with its share of ``device``, the energy and
    whether the design fits (``result`` as :func:`mulfree.flows.report_compare.compare_kinds`
    returns)."""
    rows = []
    for pe, e in result["kinds"].items():
        r, s = e["resources"], e["share"]
        rows.append((pe, *(f"{format_number(r[k])} ({s[k]:.1%})" for k, _, _ in RESOURCES),
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
    """The largest array per PE kind, the fit's held-out errors, the confirming syntheses and
    the shift / multiplier ratio (``result`` as :func:`mulfree.flows.report_max_fit.max_fit`
    returns)."""
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
                 f"{', '.join(f'{n}x{n}' for n in result['sizes'])}, "
                 + (f"held out {result['holdout_size']}x{result['holdout_size']}"
                    if result["holdout_size"] else "no held-out size"))
    lines.append(table(("PE", "largest n x n", "PEs", "stops at", "LUT model",
                         "held-out LUT err", "worst held-out err", "confirmed",
                         "rectangles that fit"), rows))
    for pe, e in result["kinds"].items():
        for d in e.get("confirm", []):
            pred = d["predicted"]
            err = d["prediction_error"]["lut"]
            lines.append(f"  confirm {pe} {d['rows']}x{d['cols']}"
                         + (f" (LUT model error {err:+.1%})" if err is not None else "") + ": "
                         + ", ".join(f"{k} {format_number(d['resources'][k])} "
                                     f"(pred {pred[k]:,.0f}, {d['share'][k]:.1%})"
                                     for k, _, _ in RESOURCES)
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
    lines += _best_effort_lines(result)
    return "\n".join(lines)


def _best_effort_lines(result):
    """The best-effort multiplier's split, the hybrid and their ratios (``report --max-fit``,
    :func:`mulfree.flows.report_best_effort.add_best_effort`)."""
    from .report_best_effort import BEST_EFFORT, HYBRID
    if "best_effort_note" in result:
        return [result["best_effort_note"]]
    be, hyb = result["kinds"].get(BEST_EFFORT), result["kinds"].get(HYBRID)
    if be is None:
        return []
    delta = be["delta"]
    n = be["n"]
    lines = [f"{BEST_EFFORT}: best-effort multiplier {n}x{n} = {be['pes']:,} PEs: "
             f"{be['pes_dsp']:,} on {be['dsp_cols']} DSP columns (two int8 products per "
             f"DSP48E1, weights in [-127, 127]) + {be['pes_lut']:,} on LUT multipliers; a LUT "
             f"PE costs {delta['per_pe']['lut']:+.1f} LUT over a packed one (all-LUT vs "
             f"all-packed {delta['size']}x{delta['size']} core)"]
    if hyb is not None:
        h = result["hybrid"]
        lines.append(f"{HYBRID}: shift engine + packed mult engine (CoreConfig.extra_engines), "
                     f"{h['n']}x{h['n']} each: {h['pes_shift']:,} shift + {h['pes_mult']:,} "
                     f"mult = {h['pes_total']:,} PEs; a run uses one engine, so at most "
                     f"{h['peak_pes']:,} work at once")
    confirmed = result["kinds"].get("shift", {}).get("n_confirmed") and be.get("n_confirmed")
    how = "confirmed by synthesis" if confirmed else "by the models' predictions"
    ratio = result.get("shift_over_best_effort")
    if ratio is not None:
        lines.append(f"largest shift array / best-effort multiplier array = {ratio:.2f}x PEs "
                     f"(target >= 1.5x: {'holds' if ratio >= 1.5 else 'does NOT hold'}, "
                     f"{how})")
    if hyb is not None and result["hybrid"]["total_over_best_effort"] is not None:
        h = result["hybrid"]
        lines.append(f"hybrid PEs / best-effort multiplier = {h['total_over_best_effort']:.2f}x "
                     f"in total, {h['peak_pes'] / be['pes']:.2f}x at once; hybrid / largest "
                     f"shift = {h['total_over_shift']:.2f}x in total")
    return lines
