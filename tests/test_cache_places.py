"""Where builds are cached and what their keys name: ``$MULFREE_CACHE``, else
``$XDG_CACHE_HOME/mulfree``, else ``~/.cache/mulfree``; the simulated board's key names the
C++ compiler and the machine besides Verilator; entries are built once, whole or not at all
(``gen/cache.build_once``)."""

import multiprocessing
import os
import platform
import subprocess
import time

import pytest

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
        seen["root"], seen["tmp"] = args[9], args[-2]

    monkeypatch.setattr(board_build, "_build", record)
    monkeypatch.chdir(tmp_path)
    lib = board_build.build_sim_core(design, build_dir="cache")
    assert seen["root"] == tmp_path / "cache" and seen["tmp"].is_absolute()
    assert seen["tmp"].parent == tmp_path / "cache"
    assert lib.is_absolute() and lib.parent.parent == tmp_path / "cache"


def _slow_build(counter):
    def build(tmp, modes):
        with open(counter, "a") as f:
            f.write("built\n")
        time.sleep(0.5)
        (tmp / "done").write_text("ok")
    return build


def _builder(root, counter, queue):
    from mulfree.gen.cache import build_once
    path, built = build_once(root, "entry", lambda p: (p / "done").is_file(),
                             _slow_build(counter))
    queue.put((str(path), built))


def test_build_once_builds_an_entry_once_for_concurrent_builders(tmp_path):
    # The helper behind cocotb builds, simulated boards and generated cores: two processes
    # asking for one entry at once get the same folder, built by one of them.
    ctx = multiprocessing.get_context("fork")
    queue, counter = ctx.Queue(), tmp_path / "count"
    procs = [ctx.Process(target=_builder, args=(tmp_path / "cache", counter, queue))
             for _ in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=60)
    assert counter.read_text() == "built\n"
    assert [r[0] for r in results] == [str(tmp_path / "cache" / "entry")] * 2
    assert sorted(r[1] for r in results) == [False, True]
    assert (tmp_path / "cache" / "entry" / "done").read_text() == "ok"


def test_build_once_leaves_nothing_of_a_failed_build_and_replaces_a_leftover(tmp_path):
    from mulfree.gen.cache import build_once
    root = tmp_path / "cache"

    def fail(tmp, modes):
        (tmp / "half").write_text("half")
        raise RuntimeError("compiler failed")

    with pytest.raises(RuntimeError, match="compiler failed"):
        build_once(root, "entry", lambda p: (p / "done").is_file(), fail)
    assert sorted(p.name for p in root.iterdir()) == [".entry.lock"]
    (root / "entry").mkdir()
    (root / "entry" / "stale").write_text("from a killed build")
    path, built = build_once(root, "entry", lambda p: (p / "done").is_file(),
                             _slow_build(tmp_path / "count"))
    assert built and sorted(p.name for p in path.iterdir()) == ["done"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o700)
    assert build_once(root, "entry", lambda p: (p / "done").is_file(), fail) == (path, False)
