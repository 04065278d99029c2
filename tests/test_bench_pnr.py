"""``mulfree bench pnr``: its options refused before any work, its table and checks on results
read from a recorded nextpnr log (the place and route itself is run by ``mulfree bench pnr``,
not here: 10-20 minutes at 16x16)."""

from pathlib import Path

import pytest

import mulfree.flows.bench_pnr as bench_pnr_module
from mulfree.flows.bench_pnr import bench_pnr, format_pnr, pnr_config
from mulfree.gen.pnr import parse_pnr_log

LOG = (Path(__file__).parent / "fixtures" / "pnr_ecp5_4x4.log").read_text()


def _fake_pnr(fmax):
    """A stand-in for place_and_route: the recorded log's figures with Fmax per size."""
    def run(cfg, *, cache_dir=None, seed=1, progress=None):
        return {**parse_pnr_log(LOG), "fmax_mhz": fmax[cfg.engine.rows], "seed": seed,
                "top": cfg.top_name, "cached": False, "versions": {}}
    return run


def test_table_and_checks(monkeypatch):
    monkeypatch.setattr(bench_pnr_module, "place_and_route", _fake_pnr({8: 110.0, 16: 101.0}))
    result = bench_pnr(((8, 8), (16, 16)), progress=None)
    assert [c["pass"] for c in result["checks"]] == [True, True]
    assert result["checks"][1]["value"] == pytest.approx(101 / 110)
    text = format_pnr(result)
    assert "101.00" in text and "6220 (7 %)" in text and "15 (7 %)" in text
    assert "regs.stall_in_cycles_count" in text and "datapath.post.group_4 ->" in text
    assert "Fmax 16x16 / 8x8 = 0.918" in text


def test_checks_fail_below_target(monkeypatch):
    monkeypatch.setattr(bench_pnr_module, "place_and_route", _fake_pnr({8: 55.3, 16: 50.2}))
    result = bench_pnr(((8, 8), (16, 16)), progress=None)
    assert [c["pass"] for c in result["checks"]] == [False, True]
    monkeypatch.setattr(bench_pnr_module, "place_and_route", _fake_pnr({8: 120.0, 16: 100.0}))
    result = bench_pnr(((8, 8), (16, 16)), progress=None)
    assert [c["pass"] for c in result["checks"]] == [True, False]


def test_config_is_the_shift_core():
    cfg = pnr_config(4, 4)
    assert cfg.engine.pe == "shift" and cfg.engine.rows == 4 and cfg.engine.max_k == 1024


@pytest.mark.parametrize("value", ["0", "8x8,abc", "4x0", ""])
def test_bad_sizes_refused_before_work(value, monkeypatch, capsys, run_main):
    def boom(*args, **kwargs):
        raise AssertionError("place and route ran for a bad option")
    monkeypatch.setattr(bench_pnr_module, "place_and_route", boom)
    status, out, err = run_main(["bench", "pnr", "--sizes", value], capsys)
    assert status == 2
    assert "--sizes" in err and len(err.strip().splitlines()) == 1
