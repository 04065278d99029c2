"""Every images/s figure of the core names its clock and where that clock came from."""

import json
from types import SimpleNamespace

import pytest

from mulfree.flows.clock import ASSUMED_MHZ, check_clock_options, clock_note, core_clock
from mulfree.flows.options import UsageError
from mulfree.flows.run_report import format_report

TOP = "mulfree_core_array_shift_16x16_a8w4k1024_s64"


def _args(**kw):
    return SimpleNamespace(**{"core_clock_mhz": None, "clock_from": None, **kw})


def _report(clock=None):
    doc = {"model": {"path": "m", "input": [1, 8, 8]}, "device": "sim",
           "core": {"top": TOP, "pe": "shift", "rows": 16, "cols": 16, "act_bits": 8,
                    "weight_bits": 4}, "open_seconds": 1.0, "images": 10, "inputs": "digits",
           "cycles_per_image": 1000.0, "images_per_second": 3.0,
           "images_per_second_at_100mhz": 100_000.0, "pe_utilization": 0.5, "nodes": []}
    if clock is not None:
        doc["core_clock"] = clock
        doc["images_per_second_at_core_clock"] = clock["mhz"] * 1e6 / 1000
    return doc


def _speed_line(report):
    return next(line for line in format_report(report).splitlines()
                if "images/s for the core alone" in line)


def test_default_is_labelled_assumed():
    clock = core_clock(_args(), TOP)
    assert clock["mhz"] == ASSUMED_MHZ and not clock["measured"]
    assert "100 MHz assumed, not measured" in clock_note(clock)
    assert "100,000 images/s for the core alone at 100 MHz assumed" in _speed_line(_report())


def test_clock_from_bench_pnr_json(tmp_path):
    path = tmp_path / "pnr.json"
    path.write_text(json.dumps({"pnr": {"params": {"date": "2026-12-06"}, "runs": {
        "16x16": {"top": TOP, "fmax_mhz": 52.5, "seed": 1}}}}))
    args = _args(clock_from=str(path))
    check_clock_options(args)
    clock = core_clock(args, TOP)
    assert clock["mhz"] == 52.5 and clock["measured"]
    line = _speed_line(_report(clock))
    assert "52,500 images/s" in line and "52.5 MHz placed and routed, nextpnr-ecp5 85F " \
        "speed 8 (seed 1, mulfree bench pnr 2026-12-06" in line
    other = core_clock(args, "mulfree_core_other")
    assert other["mhz"] == ASSUMED_MHZ and "has no result for mulfree_core_other" in \
        other["source"]


def test_clock_from_ecp5_build_folder(tmp_path):
    (tmp_path / "ecp5_build.json").write_text(json.dumps({
        "kind": "mulfree_ecp5_build", "core": {"top": TOP}, "fmax_mhz": 40.0, "seed": 1,
        "date": "2026-12-06T18:00:00Z",
        "board": {"name": "ecp5_5g_evn", "device": "LFE5UM5G-85F-8BG381"}}))
    args = _args(clock_from=str(tmp_path))
    check_clock_options(args)
    assert "40 MHz placed and routed, nextpnr-ecp5 LFE5UM5G-85F-8BG381 on ecp5_5g_evn" in \
        clock_note(core_clock(args, TOP))


def test_given_clock_is_labelled_given():
    assert clock_note(core_clock(_args(core_clock_mhz=80.0), TOP)) == \
        "80 MHz (given with --clock-mhz)"


@pytest.mark.parametrize("kw, message", [
    ({"core_clock_mhz": 0.0}, "--clock-mhz must be"),
    ({"core_clock_mhz": float("nan")}, "--clock-mhz must be"),
    ({"clock_from": "/nonexistent/pnr.json"}, "--clock-from .* cannot be read"),
])
def test_bad_clock_refused(kw, message):
    with pytest.raises(UsageError, match=message):
        check_clock_options(_args(**kw))


def test_file_without_result_refused(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"runs": {}}))
    with pytest.raises(UsageError, match="holds no place-and-route result"):
        check_clock_options(_args(clock_from=str(path)))
