"""``mulfree report --build DIR`` and ``--clock-from DIR``: a Vivado build folder read back.

The build folder is a real one (``write_build`` of a 4x4 core for the ZC706); Vivado's
``timing.rpt`` / ``utilization.rpt`` are the recorded reports of ``tests/data/vivado`` copied
in, as a Vivado run would leave them. The core's Yosys resources come through the synthesis
cache (no synthesis here; ``tests/test_report.py`` runs a real one).
"""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from mulfree.flows.clock import core_clock, read_clock_file
from mulfree.flows.options import UsageError
from mulfree.gen import core_resources
from mulfree.gen.build_folder import write_build
from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig


DATA = Path(__file__).parent / "data" / "vivado"
SMALL = CoreConfig(engine=ArrayConfig(rows=4, cols=4))
CELLS = {"LUT6": 3_000, "LUT3": 1_000, "FDRE": 2_500, "RAMB36E1": 4}
# The recorded reports: clk_fpga_0 at 10 ns with WNS 1.873 ns; 24,871 LUT of 218,600.
FMAX = 1000 / (10.0 - 1.873)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out, _ = write_build(SMALL, "zc706", tmp_path_factory.mktemp("b") / "build")
    return out


@pytest.fixture
def cache(tmp_path):
    cache = tmp_path / "cache"
    (cache / "index").mkdir(parents=True)
    (cache / "fake.json").write_text(json.dumps({"top": SMALL.top_name, "cells": CELLS,
                                                 "params": SMALL.params(), "synth_seconds": 1}))
    key = core_resources.index_key(SMALL)
    (cache / "index" / f"{key}.json").write_text(json.dumps({"key": "fake"}))
    return cache


def _ran_vivado(folder, tmp_path):
    """A copy of ``folder`` as Vivado leaves it: the two reports beside the sources."""
    ran = tmp_path / "ran"
    shutil.copytree(folder, ran)
    for name in ("timing.rpt", "utilization.rpt"):
        shutil.copy(DATA / name, ran / name)
    return ran


def test_a_build_vivado_ran_in_reports_its_clock_and_sites(folder, cache, tmp_path, run_main,
                                                           capsys):
    ran = _ran_vivado(folder, tmp_path)
    status, out, err = run_main(["report", "--build", str(ran), "--cache-dir", str(cache),
                                 "-o", str(tmp_path / "out")], capsys)
    assert status == 0, err
    assert SMALL.top_name in out and "zc706" in out
    assert f"the worst path meets {FMAX:.2f} MHz" in out and "timing met" in out
    assert "WNS +1.873 ns" in out
    assert "24,871 / 218,600" in out and f"{24871 / 218600:.2%}" in out
    assert "31.5 / 545" in out and f"{31.5 / 545:.2%}" in out
    assert f"{4000:>20,}" in out                       # Yosys's LUT of the core beside it
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert doc["board"] == "zc706" and doc["top"] == SMALL.top_name
    v = doc["build"]["vivado"]
    assert v["timing"]["fmax_mhz"] == pytest.approx(FMAX, abs=1e-3)
    assert v["utilization"]["used"]["lut"] == 24871
    assert doc["resources"]["lut"] == 4000


def test_a_build_not_yet_run_says_so(folder, cache, tmp_path, run_main, capsys):
    status, out, err = run_main(["report", "--build", str(folder), "--cache-dir", str(cache),
                                 "-o", str(tmp_path / "out")], capsys)
    assert status == 0, err
    assert "Vivado has not run there yet" in out
    doc = json.loads((tmp_path / "out" / "report.json").read_text())
    assert doc["build"]["vivado"] is None


def test_bad_build_folders_are_one_line(folder, tmp_path, run_main, capsys):
    ran = _ran_vivado(folder, tmp_path)
    half = tmp_path / "half"
    shutil.copytree(folder, half)
    shutil.copy(DATA / "timing.rpt", half / "timing.rpt")
    bad_timing = tmp_path / "bad"
    shutil.copytree(ran, bad_timing)
    (bad_timing / "timing.rpt").write_text("nothing Vivado writes\n")
    tampered = tmp_path / "tampered"
    shutil.copytree(folder, tampered)
    doc = json.loads((tampered / "build.json").read_text())
    doc["manifest"] = "../../etc/passwd"
    (tampered / "build.json").write_text(json.dumps(doc))
    cases = [
        (["--build", str(tmp_path / "none")], "--build"),
        (["--build", str(tmp_path)], "holds no build.json"),
        (["--build", str(ran), "--config", str(ran)], "give --build or --config, not both"),
        (["--build", str(ran), "--board", "zedboard"], "is not the --build folder's board"),
        (["--build", str(half)], "has timing.rpt but not utilization.rpt"),
        (["--build", str(bad_timing)], "timing.rpt"),
        (["--build", str(tampered)], "manifest"),
    ]
    for argv, message in cases:
        status, out, err = run_main(["report", *argv, "-o", str(tmp_path / "out")], capsys)
        assert status == 2, (argv, err)
        assert message in err and err.count("\n") == 1, (argv, err)
        assert not (tmp_path / "out").exists()


def test_clock_from_a_vivado_build(folder, tmp_path):
    ran = _ran_vivado(folder, tmp_path)
    table = read_clock_file(ran)
    assert list(table) == [SMALL.top_name]
    args = SimpleNamespace(core_clock_mhz=None, clock_table=table, clock_from=str(ran))
    clock = core_clock(args, SMALL.top_name)
    assert clock["measured"] and clock["mhz"] == pytest.approx(FMAX, abs=1e-3)
    assert "placed and routed, Vivado xc7z045" in clock["source"]
    with pytest.raises(UsageError, match="Vivado has not run in"):
        read_clock_file(folder)
