"""Vivado's timing and utilization reports read back from a build folder (gen/vivado_reports)."""

import os
import shutil
from pathlib import Path

import pytest

from mulfree.gen.vivado_reports import (TIMING_REPORT, UTILIZATION_REPORT, parse_timing_report,
                                        parse_utilization_report, read_vivado_reports)
from mulfree.params.safe_io import FileCheckError


DATA = Path(__file__).parent / "data" / "vivado"


def _text(name):
    return (DATA / name).read_text()


def test_timing_summary_gives_the_clock_the_worst_path_meets():
    t = parse_timing_report(_text(TIMING_REPORT))
    assert (t.clock, t.period_ns, t.wns_ns, t.met) == ("clk_fpga_0", 10.0, 1.873, True)
    assert t.constrained_mhz == pytest.approx(100.0)
    # 1000 / (10 - 1.873), computed here independently of the module.
    assert t.fmax_mhz == pytest.approx(123.047, abs=1e-3)
    assert t.as_dict()["fmax_mhz"] == pytest.approx(123.047, abs=1e-3)


def test_a_failing_build_reads_as_not_met_with_its_negative_slack():
    text = _text(TIMING_REPORT).replace("      1.873        0.000", "     -0.412      -35.120") \
        .replace("All user specified timing constraints are met.",
                 "Timing constraints are not met.")
    t = parse_timing_report(text)
    assert t.wns_ns == -0.412 and not t.met
    assert t.fmax_mhz == pytest.approx(1000 / 10.412)


def test_utilization_counts_the_sites_of_a_7_series_device():
    u = parse_utilization_report(_text(UTILIZATION_REPORT))
    assert u.used == {"lut": 24871, "ff": 14218, "bram36": 31.5, "dsp": 0}
    assert u.available == {"lut": 218600, "ff": 437200, "bram36": 545.0, "dsp": 900}
    assert u.share("lut") == pytest.approx(24871 / 218600)
    # The sub-rows ("LUT as Logic", "RAMB36/FIFO*") are not taken for the totals.
    assert u.as_dict()["share"]["bram36"] == pytest.approx(31.5 / 545, abs=1e-6)


def test_ultrascale_names_are_read_too():
    text = _text(UTILIZATION_REPORT).replace("Slice LUTs      ", "CLB LUTs        ") \
        .replace("Slice Registers ", "CLB Registers   ")
    assert parse_utilization_report(text).used["lut"] == 24871


@pytest.mark.parametrize("broken, message", [
    (lambda t: t.replace("WNS(ns)", "XNS(ns)"), "Design Timing Summary"),
    (lambda t: t.replace("clk_fpga_0  {0.000 5.000}", "clk_fpga_0  {0.000 x}"), "Clock Summary"),
    (lambda t: t.replace("      1.873        0.000", "      1e999        0.000", 1), "Design"),
    (lambda t: t.replace("10.000          100.000", "0.000          100.000"), "Period(ns)"),
    (lambda t: t.replace("      1.873        0.000", "     12.000        0.000", 1), "below"),
])
def test_a_timing_report_without_its_tables_is_refused_in_one_line(broken, message):
    with pytest.raises(FileCheckError) as e:
        parse_timing_report(broken(_text(TIMING_REPORT)), "build/timing.rpt")
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("broken, message", [
    (lambda t: t.replace("| DSPs      |", "| Dsp       |"), "'DSPs' row"),
    (lambda t: t.replace("| Slice LUTs                 | 24871 |",
                         "| Slice LUTs                 | 999999 |"), "exceeds available"),
    (lambda t: t.replace("| Block RAM Tile    | 31.5 |", "| Block RAM Tile    | nan |"),
     "'Block RAM Tile' row"),
])
def test_a_utilization_report_without_its_rows_is_refused_in_one_line(broken, message):
    with pytest.raises(FileCheckError) as e:
        parse_utilization_report(broken(_text(UTILIZATION_REPORT)), "build/utilization.rpt")
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_build_folder_reads_both_reports_or_none(tmp_path):
    assert read_vivado_reports(tmp_path) is None
    shutil.copy(DATA / TIMING_REPORT, tmp_path / TIMING_REPORT)
    with pytest.raises(FileCheckError, match="did not finish"):
        read_vivado_reports(tmp_path)
    shutil.copy(DATA / UTILIZATION_REPORT, tmp_path / UTILIZATION_REPORT)
    got = read_vivado_reports(tmp_path)
    assert got["timing"].fmax_mhz == pytest.approx(123.047, abs=1e-3)
    assert got["utilization"].used["lut"] == 24871


def test_a_report_that_is_a_link_out_of_the_folder_is_refused(tmp_path):
    outside = tmp_path / "elsewhere.rpt"
    shutil.copy(DATA / TIMING_REPORT, outside)
    build = tmp_path / "build"
    build.mkdir()
    os.symlink(outside, build / TIMING_REPORT)
    shutil.copy(DATA / UTILIZATION_REPORT, build / UTILIZATION_REPORT)
    with pytest.raises(FileCheckError, match="outside|regular file"):
        read_vivado_reports(build)
