"""The figures of ``mulfree report``: the PE kinds compared (:func:`plot_compare`) and the
largest array of each (:func:`plot_max_fit`)."""

import math

from ..gen.devices import RESOURCES, Device
from .options import save_figure


__all__ = ["plot_compare", "plot_max_fit"]


_KIND_COLORS = {"shift": "tab:blue", "adder": "tab:green", "mult": "tab:red",
                "mult-best": "tab:orange", "hybrid": "tab:purple"}


def plot_compare(result, path):
    """Grouped bars: each resource's share of the device per PE kind, and the energy."""
    from matplotlib.figure import Figure
    kinds = list(result["kinds"])
    labels = [label for _, label, _ in RESOURCES]
    fig = Figure(figsize=(10, 4.2))
    ax, ax_e = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 1.2]})
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
    from matplotlib.figure import Figure
    fields = {key: field for key, _, field in RESOURCES}
    shown = ("lut", "dsp", "bram36", "carry4")
    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, len(shown))
    for ax, key in zip(axes, shown):
        limit = result["limits"][key] * 100
        largest = 1
        for pe, entry in result["kinds"].items():
            color = _KIND_COLORS.get(pe)
            avail = getattr(device, fields[key])
            pts = [(p.get("pes", p["rows"] * p["cols"]), p[key] / avail * 100)
                   for p in entry["points"]]
            if "curve" in entry:
                # Best effort and hybrid: their own resources against their PEs.
                xs = [c["pes"] for c in entry["curve"]]
                ys = [c[key] / avail * 100 for c in entry["curve"]]
                largest = max(largest, xs[-1], *(x for x, _ in pts))
            else:
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
        ax.set_xlabel("PEs (n x n; hybrid: 2 n x n)")
        ax.set_ylabel(f"% of {result['device']}")
        ax.set_title(f"{dict((k, l) for k, l, _ in RESOURCES)[key]} (limit {limit:.0f} %)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("largest array per PE kind: o fit points, □ held out, * confirming "
                 "synthesis, dotted: predicted largest n x n", fontsize=9)
    return save_figure(fig, path)
