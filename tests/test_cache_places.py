"""Where builds are cached and what their keys name: ``$MULFREE_CACHE``, else
``$XDG_CACHE_HOME/mulfree``, else ``~/.cache/mulfree``; the simulated board's key names the
C++ compiler and the machine besides Verilator."""

import os
import platform
import subprocess

from mulfree.gen.cache import cache_root
from mulfree.sim import board_build
from mulfree.sim.runner import compiler_id


def test_mulfree_cache_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("MULFREE_CACHE", str(tmp_path / "mine"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "mine"
    assert not (tmp_path / "xdg").exists()


def test_xdg_cache_home_is_honoured(tmp_path, monkeypatch):
    monkeypatch.delenv("MULFREE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "mulfree"


def test_relative_or_empty_xdg_cache_home_is_ignored(tmp_path, monkeypatch):
    """The XDG specification: a relative path in the variable is invalid and ignored."""
    monkeypatch.delenv("MULFREE_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    for value in ("relative/cache", ""):
        monkeypatch.setenv("XDG_CACHE_HOME", value)
        assert cache_root() == tmp_path / "home" / ".cache" / "mulfree"
    assert not (tmp_path / "relative").exists()


def test_board_key_names_compiler_and_machine():
    line = subprocess.run(["c++", "--version"], capture_output=True, text=True,
                          check=True).stdout.splitlines()[0]
    assert line in compiler_id() and platform.machine() in compiler_id()
    chain = board_build.toolchain()
    assert chain.startswith(board_build.verilator_version()) and compiler_id() in chain


# Shared caches: entries are the user's alone unless the folder they go into is group-writable.

def _mode(path):
    return path.stat().st_mode & 0o777


def test_entry_modes_follow_the_folder(tmp_path):
    from mulfree.gen.cache import entry_modes
    private, shared = tmp_path / "private", tmp_path / "shared"
    private.mkdir(mode=0o700)
    shared.mkdir()
    shared.chmod(0o2770)
    assert entry_modes(private) == (0o700, 0o600)
    assert entry_modes(shared) == (0o770, 0o660)
    # A folder not made yet: the nearest one above it decides.
    assert entry_modes(shared / "sim" / "deeper") == (0o770, 0o660)
    assert entry_modes(private / "sim") == (0o700, 0o600)


def test_a_shared_cache_gives_the_group_its_entries(tmp_path, monkeypatch):
    """A generated design (designs/) and a test build with its lock (a builds folder) in a
    group-writable cache are the group's too, whatever the umask; in a private one the
    user's alone."""
    from mulfree.gen.emit import write_design
    from mulfree.params.config import ArrayConfig
    from mulfree.params.core_config import CoreConfig
    from mulfree.sim.backend import design_for
    from mulfree.sim.runner import build_verilog
    monkeypatch.delenv("MULFREE_SIM_BUILDS", raising=False)
    old = os.umask(0o022)
    try:
        tiny = ArrayConfig(pe="shift", rows=1, cols=1, act_bits=2, weight_bits=2, max_k=1)
        core = CoreConfig(engine=ArrayConfig(pe="shift", rows=2, cols=2, max_k=16),
                          fmap_vectors=64, weight_rows=64, acc_entries=16, max_channels=8,
                          out_vectors=4)
        for name, (dmode, fmode) in (("shared", (0o770, 0o660)), ("private", (0o700, 0o600))):
            root = tmp_path / name
            root.mkdir()
            root.chmod(0o2770 if name == "shared" else 0o700)
            design = design_for(core, cache_dir=root)
            assert _mode(root / "designs") == dmode and _mode(design) == dmode, name
            v_path, _ = write_design(tiny, tmp_path / f"{name}-design")
            build = build_verilog(v_path, tiny.top_name, "icarus", tmp_path / f"{name}-run",
                                  builds=root / "builds")
            assert _mode(root / "builds") == dmode and _mode(build.build_dir) == dmode, name
            (lock,) = (root / "builds").glob(".*.lock")
            assert _mode(lock) == fmode, name
    finally:
        os.umask(old)


def test_quick_board_builds_have_their_own_flags_and_key(monkeypatch):
    """$MULFREE_SIM_QUICK=1 (the suite's) builds the per-cycle code at -O1, under another key
    than a full (-O2) build of the same core."""
    from mulfree.sim.board_build import QUICK_ENV, VERILATOR_FLAGS, build_key, verilator_flags
    monkeypatch.delenv(QUICK_ENV, raising=False)
    assert verilator_flags() == VERILATOR_FLAGS
    assert "OPT_FAST=-O2 OPT_SLOW=-O0 OPT_GLOBAL=-O1" in VERILATOR_FLAGS
    monkeypatch.setenv(QUICK_ENV, "1")
    quick = verilator_flags()
    assert "OPT_FAST=-O1 OPT_SLOW=-O0 OPT_GLOBAL=-O1" in quick
    assert [f for f in quick if "OPT_" not in f] == [f for f in VERILATOR_FLAGS if "OPT_" not in f]
    assert build_key("v", "h", "t", quick) != build_key("v", "h", "t", VERILATOR_FLAGS)


def test_a_relative_build_folder_is_made_absolute(tmp_path, monkeypatch):
    """``mulfree run --build-dir cache``: the simulated board is built into the absolute
    folder (Verilator runs inside the build folder; a relative path given to it pointed
    nowhere). ``_build`` is replaced by a recorder: nothing is compiled."""
    from mulfree.params.config import ArrayConfig
    from mulfree.params.core_config import CoreConfig
    from mulfree.sim.backend import design_for
    core = CoreConfig(engine=ArrayConfig(pe="shift", rows=2, cols=2, max_k=16),
                      fmap_vectors=64, weight_rows=64, acc_entries=16, max_channels=8,
                      out_vectors=4)
    design = design_for(core, cache_dir=tmp_path / "designs")
    seen = {}

    def record(*args):
        seen["root"], seen["final"] = args[-6], args[-5]
        return seen["final"] / "lib.so"

    monkeypatch.setattr(board_build, "_build", record)
    monkeypatch.chdir(tmp_path)
    board_build.build_sim_core(design, build_dir="cache")
    assert seen["root"] == tmp_path / "cache" and seen["final"].is_absolute()
    assert seen["final"].parent == tmp_path / "cache"
