"""Running Vivado on a finished build folder and recording what it made.

:func:`run_vivado` runs the folder's Vivado command
(:data:`~mulfree.gen.vivado_project.VIVADO_ARGS`) only on a folder exactly as
:func:`~mulfree.gen.build_folder.write_build` wrote it (every file checked against
``build.json``), then records the ``.bit``, ``.bit.bin`` and ``.xsa`` with their digests in
``build.json``. Without Vivado on PATH it says what to run
where (:class:`VivadoMissing`); a failed run names the log's first ``ERROR:`` line
(:class:`VivadoFailed`, :func:`first_error`).
"""

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

from ..params.safe_io import write_atomic
from .build_record import BUILD_MARKER, check_build_file, read_build, sha256_file
from .vivado_plan import BuildError
from .vivado_project import VIVADO_ARGS


__all__ = ["VivadoMissing", "VivadoFailed", "first_error", "run_vivado"]


class VivadoMissing(RuntimeError):
    """``vivado`` is not on PATH. ``command`` is what to run, ``folder`` where."""

    def __init__(self, message, command, folder):
        super().__init__(message)
        self.command = command
        self.folder = folder


class VivadoFailed(RuntimeError):
    """Vivado ran and failed. ``error`` is the log's first ``ERROR:`` line (or None)."""

    def __init__(self, message, error, log):
        super().__init__(message)
        self.error = error
        self.log = log


_ERROR_LINE = re.compile(r"^ERROR:.*$", re.MULTILINE)


def first_error(log_path):
    """The first line of ``log_path`` starting with ``ERROR:``, or ``None``."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return None
    match = _ERROR_LINE.search(text)
    return match.group(0).strip() if match else None


def run_vivado(folder, *, vivado="vivado"):
    """Run Vivado on a finished build folder and record its products in ``build.json``.

    Parameters
    ----------
    folder : path
        A folder written by :func:`write_build`.
    vivado : str
        The Vivado executable (looked up on PATH).

    Returns
    -------
    dict
        ``{kind: path}`` of the products (``bit``, ``bin``, ``xsa``).

    Raises
    ------
    BuildError
        If ``folder`` is not a finished build folder.
    VivadoMissing
        If ``vivado`` is not on PATH (the message says what to run where).
    VivadoFailed
        If Vivado fails or does not write every product (the message holds the log's first
        ``ERROR:`` line).
    """
    folder = Path(folder).resolve()
    doc = read_build(folder, "output")
    if doc is None:
        raise BuildError("output", f"output {str(folder)!r} is not a finished mulfree build "
                                   f"folder (no {BUILD_MARKER})")
    # Vivado runs the folder's Tcl: run it only as mulfree build wrote it.
    for name, entry in doc["files"].items():
        check_build_file(folder, name, "output", entry=entry)
    exe = shutil.which(vivado)
    command = " ".join([vivado, *VIVADO_ARGS])
    if exe is None:
        raise VivadoMissing(f"{vivado} is not on PATH. On a machine with Vivado 2020.2 or "
                            f"newer, run in {shlex.quote(str(folder))}: {command}  (or: "
                            f"make, or ./run_vivado.sh); then mulfree deploy "
                            f"{shlex.quote(str(folder))}",
                            command, str(folder))
    log = folder / "vivado.log"
    result = subprocess.run([exe, *VIVADO_ARGS], cwd=folder)
    products = {kind: folder / name for kind, name in doc["products"].items()}
    missing = [p.name for p in products.values() if os.path.islink(p) or not p.is_file()]
    if result.returncode != 0 or missing:
        error = first_error(log)
        what = (f"exit status {result.returncode}" if result.returncode != 0
                else f"it did not write {', '.join(missing)}")
        detail = error if error else f"no ERROR: line in {log}"
        raise VivadoFailed(f"Vivado failed ({what}): {detail} (log: {log})", error, str(log))
    doc["vivado"] = {"returncode": 0, "log": log.name,
                     "products": {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size}
                                  for p in products.values()}}
    # A fresh temporary name (a fixed one could be a planted link to a file elsewhere).
    write_atomic(folder / BUILD_MARKER, json.dumps(doc, indent=2) + "\n")
    return products
