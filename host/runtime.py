"""The host runtime: open an accelerator, check it, load a program, run batches.

One API for every backend::

    from mulfree.host.runtime import open_device
    from mulfree.host.compiler import compile_model

    with open_device("sim", manifest) as dev:          # or "zynq" on the board
        program = compile_model(model, dev.core, max_packet_bytes=dev.max_packet_bytes)
        dev.load(program)
        result = dev.run(x_int)                         # or dev.infer(x_float)
        result.predictions, result.cycles_per_image, result.utilization

A :class:`~mulfree.host.device.Device` talks to a *backend* that moves words and bytes:

* ``"sim"`` (:mod:`mulfree.sim.backend`): the core's generated Verilog compiled by
  Verilator with a C++ harness (:mod:`mulfree.sim.board`), the default when no board is there;
* ``"zynq"`` (:mod:`mulfree.host.zynq`): Linux on a Zynq-7000, registers through UIO (or
  ``/dev/mem`` restricted to the core's window), data through a Xilinx AXI DMA over a
  contiguous buffer (udmabuf).

A backend provides ``read32(offset)``, ``write32(offset, value)`` (the core's registers),
``transfer(packets, out_nbytes, timeout)`` (send a run's packets, return its result bytes),
``wait_done(timeout)``, ``abort()`` (reset its data movers), ``close()``, and the attributes
``name``, ``lock_path`` (a file to lock for exclusive use, or ``None``), ``beat_bytes``,
``max_packet_bytes`` and ``cycles`` (a simulator's clock count, or ``None``).

The backend table
-----------------
:data:`BACKENDS` maps each device kind to a :class:`BackendEntry`: the dotted name of the
module holding its backend, the name of the function there that opens it, the one-line
message for a missing install, the optional packages whose absence that message covers, and
whether the function reads the ``manifest`` argument itself. The module is imported with
:mod:`importlib` only when :func:`open_device` opens that kind (the way fsspec finds its
implementations), so importing the runtime never imports a backend: the board's runtime never
imports the simulator, and this module imports nothing above its own floor. When the module,
or one of the entry's packages while it opens, cannot be imported, :func:`open_device` raises
:class:`BackendMissing` (a :class:`DeviceError`) with the entry's message::

    the simulated board needs the [sim] extra: pip install 'mulfree[sim]' (missing: amaranth)

The device itself (:mod:`mulfree.host.device`) checks the manifest, the identity registers,
the program and the inputs before anything is sent, and stays usable after a failed run; what
a batch reports is in :mod:`mulfree.host.run_result`, the errors in
:mod:`mulfree.host.device_errors`.
"""

import importlib
from typing import NamedTuple

from .device import COUNTERS, IDENTITY, Device
from .device_checks import check_timeout
from .device_errors import (BackendMissing, CoreRunError, DeviceBusy, DeviceError,
                            DeviceMismatch, DeviceTimeout, InputError)
from .device_lock import DeviceLock
from . import manifest_check
from .manifest_check import ManifestError
from .run_result import NodeStats, RunResult, StepStats


__all__ = ["DeviceError", "DeviceBusy", "DeviceMismatch", "DeviceTimeout", "CoreRunError",
           "InputError", "BackendMissing", "DeviceLock", "Device", "RunResult", "StepStats",
           "NodeStats",
           "open_device", "DEVICES", "BACKENDS", "BackendEntry", "COUNTERS", "IDENTITY",
           "load_manifest", "ManifestError"]


class BackendEntry(NamedTuple):
    """Where the backend of one device kind lives, and what a missing install says.

    Attributes
    ----------
    module : str
        The dotted name of the module, imported when the kind is opened.
    opener : str
        The function of ``module`` that opens the backend: ``opener(manifest, **options)``.
    missing : str
        The one-line message when ``module`` or one of ``packages`` is not installed; it names
        the extra to install.
    packages : tuple of str
        Optional packages the opener imports while it opens (top-level names): their absence
        is reported with ``missing`` too.
    reads_manifest : bool
        True: the opener takes the caller's ``manifest`` as given (a ``CoreConfig`` too) and
        returns ``(backend, manifest dict)``. False: the runtime loads and checks the manifest
        first (:func:`load_manifest`) and the opener returns the backend.
    """

    module: str
    opener: str
    missing: str
    packages: tuple = ()
    reads_manifest: bool = False


#: The backend of each device kind (see the module docstring, "The backend table").
BACKENDS = {
    "sim": BackendEntry("mulfree.sim.backend", "open_sim",
                        "the simulated board needs the [sim] extra: pip install 'mulfree[sim]'",
                        packages=("amaranth",), reads_manifest=True),
    "zynq": BackendEntry("mulfree.host.zynq", "open_zynq",
                         "the Zynq board's backend needs the core install (NumPy, "
                         "safetensors): pip install mulfree"),
}

#: The device kinds :func:`open_device` knows.
DEVICES = tuple(BACKENDS)


def load_manifest(manifest, *, param="--config"):
    """A checked core manifest from a dict, a ``.json`` path, or a design folder holding one.

    See :func:`mulfree.host.manifest_check.load_manifest`: the file is read strictly and every
    section must be what its ``parameters`` give.

    Parameters
    ----------
    manifest : dict, str or Path
        The manifest, its ``.json`` file, or the design folder holding it.
    param : str
        The argument's name in messages.

    Returns
    -------
    dict

    Raises
    ------
    ManifestError
        A :class:`mulfree.params.safe_io.FileCheckError` (a ``ValueError``) with a one-line
        message naming ``param``, the file and the first field that is wrong.
    """
    return manifest_check.load_manifest(manifest, param=param)


def _missing(entry, exc):
    """The :class:`BackendMissing` of ``entry`` for the ``ImportError`` ``exc``."""
    what = exc.name or " ".join(str(exc).split())
    return BackendMissing(f"{entry.missing} (missing: {what})")


def _opener(entry):
    """The opening function of ``entry``, its module imported now."""
    try:
        module = importlib.import_module(entry.module)
    except ImportError as exc:
        raise _missing(entry, exc) from exc
    return getattr(module, entry.opener)


def open_device(kind="sim", manifest=None, *, timeout=10.0, **options):
    """Open a device.

    Parameters
    ----------
    kind : str
        ``"sim"`` (the simulated board, default) or ``"zynq"``: a key of :data:`BACKENDS`.
    manifest : dict, path or CoreConfig
        The core: its manifest (dict, ``.json`` file or design folder). For ``"sim"`` a
        :class:`CoreConfig` is generated and built too.
    timeout : float
        Seconds a run may take.
    options
        Backend options: ``"sim"``: ``build_dir``, ``progress`` (see
        :func:`mulfree.sim.backend.open_sim`); ``"zynq"``: ``config`` (a
        :class:`mulfree.host.zynq.ZynqConfig`), ``sysfs_root``, ``dev_root``.

    Returns
    -------
    Device
        The open device; a context manager that closes it.

    Raises
    ------
    InputError
        For an unknown ``kind`` or a bad ``timeout`` (nothing is built or opened).
    BackendMissing
        If the kind's backend, or a package it needs, is not installed: the message names the
        extra to install.
    ManifestError, DeviceError
        See :class:`Device`; the backend is closed again.
    """
    if not isinstance(kind, str) or kind not in BACKENDS:
        raise InputError("kind", f"device must be one of {', '.join(BACKENDS)}, not {kind!r}")
    # Everything the caller gave is checked before a backend is built or opened.
    check_timeout("timeout", timeout)
    entry = BACKENDS[kind]
    opener = _opener(entry)
    try:
        if entry.reads_manifest:
            backend, manifest = opener(manifest, **options)
        else:
            manifest = load_manifest(manifest, param="manifest")
            backend = opener(manifest, **options)
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in entry.packages:
            raise
        raise _missing(entry, exc) from exc
    try:
        return Device(backend, manifest, timeout=timeout)
    except BaseException:
        backend.close()
        raise
