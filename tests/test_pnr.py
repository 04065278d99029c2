"""nextpnr-ecp5 log reading on a recorded log (4x4 shift core, seed 1)."""

from pathlib import Path

import pytest

from mulfree.gen.pnr import PnrError, parse_pnr_log

LOG = (Path(__file__).parent / "fixtures" / "pnr_ecp5_4x4.log").read_text()


def test_fmax_after_routing():
    r = parse_pnr_log(LOG)
    assert r["clock"] == "clk"
    assert r["fmax_mhz"] == 43.01          # after routing; 32.13 is the placement estimate


def test_utilization_and_path():
    r = parse_pnr_log(LOG)
    assert r["utilization"]["TRELLIS_FF"] == (6220, 83640, 7)
    assert r["utilization"]["DP16KD"][0] == 15
    assert r["critical_path"]["logic_ns"] == 5.99
    assert r["critical_path"]["routing_ns"] == 17.26


def test_missing_line_is_one_error():
    with pytest.raises(PnrError, match="Max frequency"):
        parse_pnr_log("Info: nothing here\n")
