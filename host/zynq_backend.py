"""The Zynq-7000 backend of the host runtime: the core behind an AXI DMA, found and opened.

On the board the core's AXI4-Lite registers sit on a general-purpose (GP) port, and a Xilinx
AXI DMA in simple mode (:mod:`mulfree.host.zynq_dma`) moves bytes between a physically
contiguous buffer (:mod:`mulfree.host.zynq_mmio`) and the core's streams. The DMA ends each
MM2S transfer with ``tlast``, and the core wants ``tlast`` exactly at each packet's end, so
every input packet is one MM2S transfer; a layer's result is one packet, one S2MM transfer.

:class:`ZynqBackend` is the runtime's backend (:mod:`mulfree.host.runtime`), and
:func:`open_zynq` finds and opens the core's and the DMA's register windows and the buffer as
a :class:`~mulfree.host.zynq_config.ZynqConfig` says.

NumPy and the standard library only: this module runs on the board.
"""

import os
import stat
import tempfile
import time
from pathlib import Path

import numpy as np

from .zynq_config import ZynqConfig, manifest_registers
from .zynq_dma import AxiDma, DmaError, TransferTimeout, poll_until
from .zynq_dma_regs import DMA_SPAN, DMASR_BITS, DMASR_ERROR_MASK, format_dmasr
from .zynq_mmio import DevMemWindow, UdmaBuf, UioWindow


__all__ = ["BUFFER_ALIGN", "ZynqBackend", "open_zynq"]


def _field(manifest, reg_name, field_name):
    """``(offset, bit, width)`` of a register field in the manifest's ``registers`` section."""
    for reg in manifest_registers(manifest)["registers"]:
        if reg["name"] == reg_name:
            for f in reg["fields"]:
                if f["name"] == field_name:
                    hi, lo = f["bits"]
                    return reg["offset"], lo, hi - lo + 1
    raise ValueError(f"manifest: the registers section has no field {reg_name}.{field_name}")


def _safe_shared_dir(folder):
    """Whether ``folder`` is a folder we may write to that only trusted users can replace
    files in: owned by root or us, and sticky if others may write to it."""
    try:
        st = os.stat(folder)
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (0, os.geteuid()):
        return False
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def _lock_dir():
    """Where lock files go: ``/run/lock`` (shared by every user of the board, sticky) or the
    temporary folder, whichever is safe (:func:`_safe_shared_dir`); else a folder of this
    user's own."""
    for folder in (Path("/run/lock"), Path(tempfile.gettempdir())):
        if _safe_shared_dir(folder):
            return folder
    return Path.home() / ".cache" / "mulfree" / "lock"


#: Alignment of every transfer inside the buffer (bytes; raised to the beat size if larger):
#: a cache line, and a multiple of the DMA's memory-map width so it needs no realignment engine.
BUFFER_ALIGN = 64


class ZynqBackend:
    """The runtime backend of a core behind an AXI DMA on a Zynq-7000.

    Implements the backend protocol of :mod:`mulfree.host.runtime`: ``read32`` / ``write32``
    (the core's registers), :meth:`transfer`, :meth:`wait_done`, :meth:`abort`,
    :meth:`close`, and ``name``, ``lock_path``, ``beat_bytes``, ``max_packet_bytes``,
    ``cycles``.

    The buffer is cut in two halves: the **input area** ``[0, size/2)`` takes the packets of
    a run (in rounds when they do not all fit), the **output area** ``[size/2, size)`` the
    result. Each area and each packet starts at a multiple of :data:`BUFFER_ALIGN` bytes.

    Creating the backend resets and starts the DMA (:meth:`AxiDma.reset`, :meth:`AxiDma.start`).

    Parameters
    ----------
    core
        The core's register window (``read32`` / ``write32``).
    dma
        The DMA's register window, or an :class:`AxiDma`.
    buffer : DmaBuffer
        The DMA buffer.
    manifest : dict
        The core's manifest (its ``registers`` and ``stream`` sections).
    config : ZynqConfig
        ``dma_length_bits`` sets the longest transfer.
    """

    name = "zynq"
    cycles = None

    def __init__(self, core, dma, buffer, *, manifest, config=ZynqConfig()):
        from .manifest_check import check_manifest
        manifest, _ = check_manifest(manifest, param="manifest")
        if not isinstance(config, ZynqConfig):
            raise ValueError(f"config must be a ZynqConfig, not {type(config).__name__}")
        self.core = core
        self.dma = dma if isinstance(dma, AxiDma) else AxiDma(
            dma, length_bits=config.dma_length_bits)
        self.buffer = buffer
        self.manifest = manifest
        self.config = config
        try:
            width = int(manifest["stream"]["width"])
        except (TypeError, KeyError):
            raise ValueError("manifest must be a core manifest with a 'stream' section "
                             "(mulfree gen --core writes <top>.json)") from None
        self.beat_bytes = width // 8
        self._status = _field(manifest, "STATUS", "done")[:2]
        self._error = _field(manifest, "STATUS", "error")[:2]
        self._align = max(BUFFER_ALIGN, self.beat_bytes)
        if buffer.phys_addr % self._align:
            raise ValueError(f"buffer: phys_addr must be a multiple of {self._align}, not "
                             f"{buffer.phys_addr:#x}")
        half = buffer.size // 2 // self._align * self._align
        if half < self.beat_bytes:
            raise ValueError(f"buffer: size must be at least {2 * self._align} bytes, not "
                             f"{buffer.size}")
        self.input_area = (0, half)
        self.output_area = (half, (buffer.size - half) // self._align * self._align)
        limit = self.dma.max_transfer_bytes
        self.max_packet_bytes = min(limit, half) // self.beat_bytes * self.beat_bytes
        self.max_out_bytes = min(limit, self.output_area[1]) // self.beat_bytes \
            * self.beat_bytes
        self._closed = False
        self.dma.reset()
        self.dma.start()

    # Registers

    def read32(self, offset):
        """The core's register at byte ``offset``."""
        return self.core.read32(offset)

    def write32(self, offset, value):
        """Write the core's register at byte ``offset``."""
        self.core.write32(offset, value)

    @property
    def lock_path(self):
        """The file the runtime locks (``fcntl.flock``) for exclusive use of this device.

        ``/run/lock/mulfree-<id>.lock`` (the temporary folder if ``/run/lock`` is not
        writable), ``<id>`` naming the core's window: its ``lock_id``, the UIO name or
        ``mem-<base>``. ``None`` (nothing to lock) for a window without a ``lock_id``, such
        as the emulated board's.
        """
        ident = getattr(self.core, "lock_id", None)
        return None if ident is None else str(_lock_dir() / f"mulfree-{ident}.lock")

    # Data

    def _check_idle(self):
        busy = {c: self.dma.pending(c) for c in ("MM2S", "S2MM")}
        busy = {c: n for c, n in busy.items() if n is not None}
        if busy:
            what = ", ".join(f"{c} ({n} bytes)" for c, n in busy.items())
            raise DmaError(f"transfer: the previous transfer did not finish ({what} still "
                           f"pending after a timeout); abort() before the next transfer",
                           next(iter(busy)))

    def _as_packets(self, packets):
        out = []
        n = len(packets)
        for i, p in enumerate(packets):
            if isinstance(p, (bytes, bytearray, memoryview)):
                p = np.frombuffer(p, dtype=np.uint8)
            p = np.asarray(p)
            if p.dtype != np.uint8 or p.ndim != 1:
                raise ValueError(f"packets[{i}] must be a 1-D uint8 array, not {p.dtype} "
                                 f"{p.shape}")
            if not p.size or p.size % self.beat_bytes:
                raise ValueError(f"packets[{i}] has {p.size} bytes; a packet must be a positive "
                                 f"number of {self.beat_bytes}-byte beats")
            if p.size > self.max_packet_bytes:
                raise ValueError(
                    f"packets[{i}] (packet {i + 1} of {n}) has {p.size} bytes; this device moves "
                    f"at most max_packet_bytes = {self.max_packet_bytes} bytes in one packet "
                    f"(one DMA transfer: the length register's 2**{self.dma.length_bits} - 1 "
                    f"bytes, the buffer's input area {self.input_area[1]} bytes); cut the "
                    f"layer into smaller packets (compile with max_packet_bytes="
                    f"{self.max_packet_bytes})")
            out.append(p)
        return out

    def _rounds(self, packets):
        """Groups of ``(index, offset)``: the packets that fit the input area together."""
        rounds, current, used = [], [], 0
        for i, p in enumerate(packets):
            size = -(-p.size // self._align) * self._align
            if current and used + p.size > self.input_area[1]:
                rounds.append(current)
                current, used = [], 0
            current.append((i, used))
            used += size
        if current:
            rounds.append(current)
        return rounds

    def _timeout(self, stage, timeout):
        dmasr = {}
        for channel in ("MM2S", "S2MM"):
            try:
                dmasr[channel] = self.dma.status(channel)
            except Exception:
                dmasr[channel] = None
        regs = ", ".join(f"{c} {format_dmasr(v)}" if v is not None else f"{c} unreadable"
                         for c, v in dmasr.items())
        return TransferTimeout(f"transfer: {stage} did not complete within {timeout:g} s "
                               f"({regs})", stage, dmasr)

    def transfer(self, packets, out_nbytes, timeout):
        """Send one run's packets and return its result bytes.

        S2MM is armed for ``out_nbytes`` first; then each packet is copied into the input
        area and sent as one MM2S transfer (``tlast`` at its end), waiting for each; then the
        result is awaited and its length checked. The caller has written ``CONTROL.start``.
        One deadline, ``timeout`` seconds from the call, covers every wait, and no packet is
        started after it.

        Parameters
        ----------
        packets : list of 1-D uint8 arrays (or bytes)
            Each one packet of whole beats, byte ``i`` of a beat being ``tdata[8i+7:8i]``.
        out_nbytes : int
            Bytes of the result packet (whole beats); 0 for a run that sends none (a quiet
            chained run keeps its output on-chip): S2MM is then not armed.
        timeout : float
            Seconds for the whole transfer.

        Returns
        -------
        1-D uint8 array
            The ``out_nbytes`` result bytes (a copy); empty if the core stopped with an error
            (``STATUS.error``) before sending them all — the caller reads the error code, and
            resets the core and calls :meth:`abort`.

        Raises
        ------
        ValueError
            Before touching the DMA, for a packet that is empty, not whole beats or longer than
            :attr:`max_packet_bytes`, or an ``out_nbytes`` that is not whole beats or does not
            fit the output area.
        TransferTimeout
            If the deadline passes; ``stage`` says which wait (``"send packet i of n"``,
            ``"receive"``). Call :meth:`abort` before the next transfer.
        DmaError
            If the DMA reports an error, or the result packet's length is not ``out_nbytes``.
        """
        deadline = time.monotonic() + float(timeout)
        packets = self._as_packets(packets)
        if not isinstance(out_nbytes, (int, np.integer)) or isinstance(out_nbytes, bool) \
                or not 0 <= out_nbytes <= self.max_out_bytes or out_nbytes % self.beat_bytes:
            raise ValueError(f"out_nbytes must be a multiple of {self.beat_bytes} "
                             f"(whole beats) up to {self.max_out_bytes} (the output area and "
                             f"the DMA's length register), not {out_nbytes!r}")
        out_nbytes = int(out_nbytes)
        self._check_idle()
        base, out_off, in_off = self.buffer.phys_addr, self.output_area[0], self.input_area[0]
        if out_nbytes:
            self.buffer.sync_for_device(out_off, out_nbytes)
            self.dma.recv(base + out_off, out_nbytes)
        n = len(packets)
        for group in self._rounds(packets):
            for i, off in group:
                self.buffer.array[in_off + off:in_off + off + packets[i].size] = packets[i]
            last_i, last_off = group[-1]
            self.buffer.sync_for_device(in_off, last_off + packets[last_i].size)
            for i, off in group:
                stage = f"send packet {i + 1} of {n}"
                if time.monotonic() >= deadline:
                    raise self._timeout(stage, timeout)
                self.dma.send(base + in_off + off, packets[i].size)
                try:
                    self.dma.wait_send(max(0.0, deadline - time.monotonic()))
                except TransferTimeout:
                    raise self._timeout(stage, timeout) from None
        if not out_nbytes:
            return np.zeros(0, dtype=np.uint8)  # the caller waits for STATUS.done
        # Wait for the result, or for the core to stop with an error (it then sends no more
        # result beats, and the caller reads the error and resets core and DMA).
        offset, bit = self._error
        idle = (1 << DMASR_BITS["Idle"]) | DMASR_ERROR_MASK
        value, ok = poll_until(lambda: (self.dma.status("S2MM"), self.core.read32(offset)),
                               lambda v: v[0] & idle or v[1] >> bit & 1, deadline)
        if ok and not value[0] & idle:
            return np.zeros(0, dtype=np.uint8)
        try:
            got = self.dma.wait_recv(max(0.0, deadline - time.monotonic()))
        except TransferTimeout:
            raise self._timeout("receive", timeout) from None
        if got != out_nbytes:
            raise DmaError(f"AXI DMA S2MM: the core's result packet had {got} bytes, "
                           f"{out_nbytes} expected (tlast came early); abort() before the "
                           f"next transfer", "S2MM")
        self.buffer.sync_for_cpu(out_off, out_nbytes)
        return self.buffer.array[out_off:out_off + out_nbytes].copy()

    def wait_done(self, timeout):
        """Poll ``STATUS.done`` (offset and bit from the manifest) until set or ``timeout``
        seconds pass; return whether it is set."""
        offset, bit = self._status
        deadline = time.monotonic() + max(0.0, float(timeout))
        _, ok = poll_until(lambda: self.core.read32(offset), lambda v: v >> bit & 1, deadline)
        return ok

    def abort(self):
        """Reset the DMA (both channels) and run it again, so the next transfer starts clean.

        The runtime soft-resets the core first (``CONTROL.soft_reset``); the core keeps beats
        it has not taken, the DMA reset drops what it still held.
        """
        self.dma.reset()
        self.dma.start()

    def close(self):
        """Release the windows and the buffer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for part in (self.core, self.dma.window, self.buffer):
            close = getattr(part, "close", None)
            if close is not None:
                close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_zynq(manifest, config=None, *, sysfs_root="/sys/class", dev_root="/dev"):
    """Open the core, its DMA and the DMA buffer on this board.

    Parameters
    ----------
    manifest : dict
        The core's manifest.
    config : ZynqConfig, optional
        Default: :meth:`ZynqConfig.for_manifest` of ``manifest``.
    sysfs_root : str or Path
        The sysfs class folder: UIO devices under ``<sysfs_root>/uio``, the buffer under
        ``<sysfs_root>/u-dma-buf`` (or ``udmabuf``).
    dev_root : str or Path
        Where the device files are (``uioN``, the buffer, ``mem``).

    Returns
    -------
    ZynqBackend

    Raises
    ------
    FileNotFoundError, PermissionError
        Naming what was looked for and where, when a device is missing or not accessible.
    ValueError
        If the core's window is smaller than its register map.
    """
    from .manifest_check import check_manifest
    # Everything is checked before a device is opened or mapped: the manifest against its
    # own parameters, the config against the manifest's register map.
    manifest, _ = check_manifest(manifest, param="manifest")
    regs = manifest_registers(manifest)
    if config is None:
        config = ZynqConfig.for_manifest(manifest)
    elif not isinstance(config, ZynqConfig):
        raise ValueError(f"config must be a ZynqConfig, not {type(config).__name__}")
    config.check_manifest(manifest)
    opened = []
    try:
        if config.use_devmem:
            mem = Path(dev_root) / "mem"
            core = DevMemWindow(config.core_base, config.core_size, mem)
            opened.append(core)
            dma = DevMemWindow(config.dma_base, config.dma_size, mem)
            opened.append(dma)
        else:
            uio = Path(sysfs_root) / "uio"
            core = UioWindow(config.core_uio, sysfs_root=uio, dev_root=dev_root)
            opened.append(core)
            dma = UioWindow(config.dma_uio, sysfs_root=uio, dev_root=dev_root)
            opened.append(dma)
        if core.size < regs["size"]:
            raise ValueError(f"the core's window ({core.label}) is {core.size:#x} bytes; its "
                             f"register map needs {regs['size']:#x}")
        if dma.size < DMA_SPAN:
            raise ValueError(f"the DMA's window ({dma.label}) is {dma.size:#x} bytes; the "
                             f"simple-mode registers need {DMA_SPAN:#x}")
        buffer = UdmaBuf(config.udmabuf, sysfs_root=sysfs_root, dev_root=dev_root)
        opened.append(buffer)
        return ZynqBackend(core, dma, buffer, manifest=manifest, config=config)
    except BaseException:
        for part in reversed(opened):
            part.close()
        raise
