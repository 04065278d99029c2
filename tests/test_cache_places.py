"""Where builds are cached and what their keys name: ``$MULFREE_CACHE``, else
``$XDG_CACHE_HOME/mulfree``, else ``~/.cache/mulfree``; the simulated board's key names the
C++ compiler and the machine besides Verilator."""

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
