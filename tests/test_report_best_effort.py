"""The best-effort multiplier's and the hybrid's max-fit arithmetic on synthetic models.

The expected figures are worked out here by brute force from the same linear formulas, not
through the module's helpers.
"""

import math

import pytest

from mulfree.flows.report_best_effort import (best_effort_columns, best_effort_resources,
                                              largest_best_effort)
from mulfree.flows.report_max_fit import fit_linear
from mulfree.gen.devices import Device


TOY = Device(name="toy", lut=100_000, ff=10**7, slices=10**6, bram36=1000, dsp=300)
# All-packed core: LUT 1000 + 20/PE + 10/(rows+cols); DSP 0.5/PE + 1/(rows+cols) (other DSPs).
PACKED = {
    "lut": lambda r, c: 1000 + 20 * r * c + 10 * (r + c),
    "ff": lambda r, c: 500 + 30 * r * c,
    "carry4": lambda r, c: 100 + 5 * r * c,
    "bram36": lambda r, c: 10 + 1 * (r + c),
    "dsp": lambda r, c: 0.5 * r * c + 1 * (r + c),
}
DELTA = {"lut": 80.0, "ff": 0.0, "carry4": 6.0, "bram36": 0.0}


def _models():
    terms = ("fixed", "per_pe", "per_edge")
    return {k: fit_linear([(n, n, f(n, n)) for n in (8, 12, 16)], terms)
            for k, f in PACKED.items()}


def _expected():
    """Largest n: every d from n down, the first whose DSPs fit, then the LUT check."""
    best = None
    for n in range(1, 200):
        other = 2 * n
        d = next(d for d in range(n, -1, -1) if other + n * math.ceil(d / 2) <= 300)
        lut = PACKED["lut"](n, n) + n * (n - d) * 80
        carry = PACKED["carry4"](n, n) + n * (n - d) * 6
        if lut <= 70_000 and carry <= 10**6 and PACKED["bram36"](n, n) <= 800:
            best = (n, d)
        else:
            return best, ("lut" if lut > 70_000 else "other")
    return best, None


def test_largest_best_effort_matches_brute_force():
    (n_exp, d_exp), binding = _expected()
    n, d, stop = largest_best_effort(_models(), DELTA, TOY)
    assert (n, d) == (n_exp, d_exp)
    assert stop == binding == "lut"
    # Independent check of the figures at the answer: DSP within the device, LUT within 70 %.
    got = best_effort_resources(_models(), DELTA, n, d)
    assert got["dsp"] == pytest.approx(2 * n + n * math.ceil(d / 2))
    assert got["dsp"] <= 300 and got["lut"] <= 70_000
    assert got["lut"] == pytest.approx(1000 + 20 * n * n + 20 * n + n * (n - d) * 80)


def test_best_effort_columns():
    assert best_effort_columns(48, 900) == 36      # 48 rows x 18 DSPs = 864; 19 would be 912
    assert best_effort_columns(10, 1000) == 10     # every column packed
    assert best_effort_columns(10, 55) == 11 - 1   # 5 DSPs per row: 10 packed columns
    assert best_effort_columns(9, 36) == 8         # 4 DSPs per row: 8 columns (4 pairs)
    assert best_effort_columns(9, 45) == 9         # 5 per row: 4 pairs and a lone DSP column
    assert best_effort_columns(5, 4) == 0


def test_more_dsps_never_shrink_the_array():
    small = largest_best_effort(_models(), DELTA, TOY)[0]
    big = Device(name="toy2", lut=100_000, ff=10**7, slices=10**6, bram36=1000, dsp=900)
    assert largest_best_effort(_models(), DELTA, big)[0] >= small


def _fake_core_resources(cfg, **kw):
    """A stand-in for core_resources: exact per-PE costs of each kind of core."""
    e, n = cfg.engine, cfg.engine.pe_count
    if cfg.extra_engines:                                   # shift + packed mult (hybrid)
        lut, dsp = 6000 + 40 * n + 18 * n, n / 2
    elif e.pe == "mult" and e.mult_pack == 2:
        lut_pes = n - e.rows * e.dsp_columns
        lut, dsp = 6000 + 18 * n + 82 * lut_pes, e.dsp_count
    elif e.pe == "mult":
        lut, dsp = 500 + 2 * n, n
    else:
        lut, dsp = 6000 + 40 * n, 0
    res = {"lut": lut, "lut_logic": lut, "lut_srl": 0, "lut_ram": 0, "ff": 3000 + 30 * n,
           "carry4": 800 + 6 * n, "bram36": 10, "ramb36": 10, "ramb18": 0, "dsp": dsp}
    return {"resources": res, "cached": True, "synth_seconds": 0.0}


def test_max_fit_with_best_effort_and_hybrid(monkeypatch, tmp_path):
    from mulfree.flows import report_compare, report_max_fit, report_plots, report_text
    from mulfree.flows.report_best_effort import add_best_effort
    from mulfree.gen.devices import DEVICES
    from mulfree.params.config import ArrayConfig
    from mulfree.params.core_config import CoreConfig
    monkeypatch.setattr(report_compare, "core_resources", _fake_core_resources)
    dev = DEVICES["xc7z045"]
    cfg = CoreConfig(engine=ArrayConfig(pe="shift", rows=16, cols=16))
    terms = ("fixed", "per_pe", "per_edge")
    result = report_max_fit.max_fit(cfg, dev, sizes=(8, 12, 16), holdout=None, terms=terms,
                                    confirm=False, jobs=1)
    add_best_effort(result, cfg, dev, terms=terms, confirm=True, jobs=1)
    # Brute force: d DSP columns, n ceil(d/2) <= 900, LUT 6000 + 18 n^2 + 82 n (n - d).
    want = None
    for n in range(1, 200):
        d = next(d for d in range(n, -1, -1) if n * math.ceil(d / 2) <= 900)
        if 6000 + 18 * n * n + 82 * n * (n - d) > 0.7 * 218_600:
            break
        want = (n, d)
    best = result["kinds"]["mult-best"]
    assert (best["n"], best["dsp_cols"]) == want
    assert best["pes_dsp"] + best["pes_lut"] == best["pes"] == want[0] ** 2
    assert best["delta"]["per_pe"]["lut"] == pytest.approx(82)
    assert best["n_confirmed"] == want[0]          # the stand-in is exact: n fits, n+1 not
    # Hybrid: LUT 6000 + 58 n^2 allows 50x50, DSP n^2/2 <= 900 stops it at 42x42.
    hyb = result["kinds"]["hybrid"]
    assert (hyb["n"], hyb["binding"]) == (42, "dsp")
    assert result["hybrid"]["pes_total"] == 2 * 42 * 42
    shift_n = result["kinds"]["shift"]["n"]        # 6000 + 40 n^2 <= 153,020: 60
    assert shift_n == 60
    assert result["shift_over_best_effort"] == pytest.approx(3600 / want[0] ** 2)
    text = report_text.format_max_fit(result)
    assert f"best-effort multiplier {want[0]}x{want[0]}" in text
    assert "42x42 each: 1,764 shift + 1,764 mult = 3,528 PEs" in text
    assert "largest shift array / best-effort multiplier array = " in text
    assert report_plots.plot_max_fit(result, tmp_path / "fit.png", dev).stat().st_size > 10_000
