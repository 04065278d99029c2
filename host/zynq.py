"""The Zynq-7000 backend of the host runtime: Linux on the board, UIO or ``/dev/mem``, no PYNQ.

On the board the core's AXI4-Lite registers sit on a general-purpose (GP) port, and a Xilinx
AXI DMA (PG021) in **simple (direct register) mode, without scatter-gather**, on a high-
performance (HP) port moves bytes between a physically contiguous buffer (u-dma-buf) and the
core's streams: MM2S feeds the core's ``s_axis``, S2MM takes its ``m_axis``. The DMA ends each
MM2S transfer with ``tlast``, and the core wants ``tlast`` exactly at each packet's end, so
every input packet is one MM2S transfer; a layer's result is one packet, one S2MM transfer.

Pieces, from the bottom up:

* memory-mapped register windows with ``read32`` / ``write32``: :class:`UioWindow` (a UIO
  device found by name) and :class:`DevMemWindow` (``/dev/mem``, restricted to one window);
* :class:`DmaBuffer`, the physically contiguous buffer, and :class:`UdmaBuf` that opens a
  u-dma-buf (or the older udmabuf) device;
* :class:`AxiDma`, the driver of the AXI DMA's simple-mode register map;
* :class:`ZynqBackend`, the runtime's backend (:mod:`mulfree.host.runtime`), and
  :func:`open_zynq` that finds and opens all of the above.

:data:`ZYNQ_DEFAULTS` (:class:`ZynqConfig`) holds the addresses and names the Vivado block
design and the device tree overlay use, so the build flow and this runtime agree.

Register accesses go through a NumPy ``uint32`` view of the mapping, so every access is one
aligned 32-bit load or store (AXI4-Lite registers must be written as whole words; a byte-wise
``memcpy`` would be refused by the core's STROBE check).

NumPy and the standard library only: this module runs on the board.
"""

import mmap
import os
import re
import stat
import tempfile
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np


__all__ = [
    "ZynqConfig", "ZynqConfigError", "load_zynq_config", "check_device_name", "PL_WINDOWS",
    "ZYNQ_DEFAULTS", "PAGE_SIZE", "DmaError", "TransferTimeout",
    "UioWindow", "DevMemWindow", "find_uio", "DmaBuffer", "UdmaBuf", "AxiDma",
    "DMA_REGS", "DMACR_BITS", "DMASR_BITS", "DMASR_ERRORS", "decode_dmasr",
    "BUFFER_ALIGN", "ZynqBackend", "open_zynq", "check_main",
]

PAGE_SIZE = mmap.PAGESIZE


# Configuration --------------------------------------------------------------------------------

class ZynqConfigError(ValueError):
    """A :class:`ZynqConfig` field that cannot be right; ``param`` names it."""

    def __init__(self, param, message):
        super().__init__(message)
        self.param = param


def _check_uint(param, value, lo, hi, error=ValueError):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) \
            or not lo <= value <= hi:
        span = f"[{lo:#x}, {hi:#x}]" if hi > 0xFFFF else f"[{lo}, {hi}]"
        message = f"{param} must be an integer in {span}, not {value!r}"
        raise error(param, message) if error is not ValueError else ValueError(message)
    return int(value)


#: Where a Zynq-7000's PS reaches the programmable logic (TRM UG585, "System Addresses"):
#: the M_AXI_GP0 and M_AXI_GP1 ports. The core's and the DMA's register windows lie inside
#: one of them; anything else (address 0, DDR, the PS's own registers) is refused.
PL_WINDOWS = {"M_AXI_GP0": (0x4000_0000, 0x8000_0000), "M_AXI_GP1": (0x8000_0000, 0xC000_0000)}
#: Largest register window: a GP port's whole range.
MAX_WINDOW = 0x4000_0000
#: A device name: a device tree node name (UIO names its devices after their nodes, and the
#: build flow's overlay writes them as nodes): a letter or digit, then letters, digits and
#: ``_ . , + -``, at most 31 characters; never a path, never ``.``/``..``, no ``@`` (it would
#: start the node's unit address).
_DEVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.,+-]{0,30}")


def _close_map(mm):
    """Unmap ``mm``; if a caller still holds a view of it, leave that to the garbage collector."""
    try:
        mm.close()
    except BufferError:
        pass


@dataclass(frozen=True)
class ZynqConfig:
    """Where the core and the DMA are on a Zynq-7000 board, and how Linux exposes them.

    The Vivado block design (issue 7's build flow) takes its addresses from
    :data:`ZYNQ_DEFAULTS`, and its device tree overlay names the UIO devices after
    ``core_uio`` and ``dma_uio``, so both ends agree.

    Parameters
    ----------
    core_base : int
        Physical address of the core's AXI4-Lite registers (GP port).
    core_size : int
        Bytes of the core's register window: ``1 << axil_addr_width`` of its manifest
        (:meth:`for_manifest`). A power of two; the block design's address range is the larger
        of this and 4 KiB (Vivado's smallest range), the core decodes ``axil_addr_width`` bits.
    dma_base : int
        Physical address of the AXI DMA's register block.
    dma_size : int
        Bytes of the DMA's register window (64 KiB, PG021's address range).
    dma_length_bits : int
        Width of the DMA's buffer length register (``c_sg_length_width``, 8..26): a transfer
        moves at most ``2**dma_length_bits - 1`` bytes.
    core_uio, dma_uio : str
        Names of the UIO devices (``/sys/class/uio/uio*/name``) of the core and the DMA.
    udmabuf : str
        Name of the u-dma-buf device (``/dev/<udmabuf>``) that holds the DMA buffer.
    use_devmem : bool
        Map ``/dev/mem`` (restricted to exactly the core's and the DMA's windows) instead of
        the UIO devices; needs root.
    """

    core_base: int = 0x43C0_0000
    core_size: int = 0x1000
    dma_base: int = 0x4040_0000
    dma_size: int = 0x1_0000
    dma_length_bits: int = 26
    core_uio: str = "mulfree-core"
    dma_uio: str = "mulfree-dma"
    udmabuf: str = "udmabuf0"
    use_devmem: bool = False

    def __post_init__(self):
        # Every field is checked here, whoever builds the config (the build flow, a JSON file,
        # a caller): with use_devmem these numbers become mappings of physical memory.
        err = ZynqConfigError
        windows = []
        for base, size in (("core_base", "core_size"), ("dma_base", "dma_size")):
            s = _check_uint(size, getattr(self, size), 4, MAX_WINDOW, err)
            if s & (s - 1):
                raise err(size, f"{size} must be a power of two, not {s:#x}")
            b = _check_uint(base, getattr(self, base), 0, (1 << 32) - 1, err)
            if b % s and b % PAGE_SIZE:
                raise err(base, f"{base} must be a multiple of {size} ({s:#x}) or of the page "
                                f"size ({PAGE_SIZE:#x}), not {b:#x}")
            if not any(lo <= b and b + s <= hi for lo, hi in PL_WINDOWS.values()):
                ports = " or ".join(f"{n} [{lo:#x}, {hi:#x})" for n, (lo, hi)
                                    in PL_WINDOWS.items())
                raise err(base, f"{base} {b:#x} with {size} {s:#x} must lie inside the "
                                f"programmable logic's address range, {ports}; not at "
                                f"address 0, in DDR or in the PS's registers")
            windows.append((base, b, s))
        (n0, b0, s0), (n1, b1, s1) = windows
        if b0 < b1 + s1 and b1 < b0 + s0:
            raise err("dma_base", f"the core's window {b0:#x}+{s0:#x} overlaps the DMA's "
                                  f"{b1:#x}+{s1:#x}; they must be disjoint")
        _check_uint("dma_length_bits", self.dma_length_bits, 8, 26, err)
        if self.dma_size < _DMA_SPAN:
            raise err("dma_size", f"dma_size must be at least {_DMA_SPAN:#x} (the last "
                                  f"simple-mode register, S2MM_LENGTH, is at 0x58), not "
                                  f"{self.dma_size:#x}")
        for name in ("core_uio", "dma_uio", "udmabuf"):
            check_device_name(name, getattr(self, name), err)
        if self.core_uio == self.dma_uio and not self.use_devmem:
            raise err("dma_uio", f"dma_uio must name another UIO device than core_uio, not "
                                 f"{self.dma_uio!r} for both")
        if not isinstance(self.use_devmem, bool):
            raise err("use_devmem", f"use_devmem must be True or False, "
                                    f"not {self.use_devmem!r}")

    @property
    def max_transfer_bytes(self):
        """The longest single DMA transfer: ``2**dma_length_bits - 1`` bytes."""
        return (1 << self.dma_length_bits) - 1

    @classmethod
    def for_manifest(cls, manifest, **overrides):
        """The defaults with ``core_size = 1 << axil_addr_width`` of ``manifest``'s core."""
        width = _registers(manifest).get("addr_width")
        _check_uint("registers.addr_width", width, 2, 32)
        return cls(**{"core_size": 1 << int(width), **overrides})

    def check_manifest(self, manifest):
        """Raise :class:`ZynqConfigError` unless the core's window covers ``manifest``'s
        register map (``registers.size`` bytes)."""
        need = _registers(manifest).get("size")
        _check_uint("registers.size", need, 4, 1 << 32)
        if self.core_size < need:
            raise ZynqConfigError("core_size", f"core_size {self.core_size:#x} does not cover "
                                               f"the core's register map of {need:#x} bytes "
                                               f"(its manifest's registers.size)")

    def replace(self, **changes):
        """A copy with ``changes`` applied (validated)."""
        return replace(self, **changes)

    def as_dict(self):
        """The fields as a JSON-ready dict."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_device_name(param, value, error=ValueError):
    """``value`` if it is a plain device name (see :data:`_DEVICE_NAME`), else ``error``."""
    if not isinstance(value, str) or not _DEVICE_NAME.fullmatch(value):
        message = (f"{param} must be a device name (a letter or digit, then letters, digits "
                   f"and _ . , + -; at most 31 characters), not {value!r}")
        raise error(param, message) if error is not ValueError else ValueError(message)
    return value


def load_zynq_config(path, param="--zynq-config"):
    """The :class:`ZynqConfig` of a JSON file (``zynq.json`` of a build folder).

    The file is read strictly (:func:`mulfree.spec.safe_io.read_json`: bounded size and
    nesting, no NaN, no duplicate keys) and must be an object of :class:`ZynqConfig` fields
    only; missing fields take the defaults.

    Raises
    ------
    mulfree.spec.safe_io.FileCheckError
        A ``ValueError`` whose one-line message names ``param``, the file, the field and
        what is allowed.
    """
    from ..spec.safe_io import FileCheckError, read_json
    doc = read_json(path, param, what="Zynq config")
    known = [f.name for f in fields(ZynqConfig)]
    for key in doc:
        if key not in known:
            raise FileCheckError(param, f"{param} {str(path)!r}: {str(key)[:40]!r} is not a "
                                        f"ZynqConfig field (allowed: {', '.join(known)})")
    try:
        return ZynqConfig(**doc)
    except ZynqConfigError as exc:
        raise FileCheckError(param, f"{param} {str(path)!r}: {exc}") from None


# Errors ---------------------------------------------------------------------------------------

class DmaError(RuntimeError):
    """The AXI DMA reported an error, refused a request, or is not the DMA this driver drives.

    Attributes
    ----------
    channel : str or None
        ``"MM2S"`` or ``"S2MM"`` (``None`` when not about one channel).
    dmasr : int or None
        The channel's status register when the error was seen.
    bits : list of str
        The set bits of ``dmasr``, by name (:func:`decode_dmasr`).
    """

    def __init__(self, message, channel=None, dmasr=None):
        super().__init__(message)
        self.channel = channel
        self.dmasr = dmasr
        self.bits = decode_dmasr(dmasr) if dmasr is not None else []


class TransferTimeout(TimeoutError):
    """A DMA transfer did not complete before its deadline.

    Attributes
    ----------
    stage : str
        What was waited for: ``"send packet i of n"`` (1-based), ``"receive"``, or for the
        bare driver ``"MM2S"`` / ``"S2MM"``.
    dmasr : dict
        ``{"MM2S": int, "S2MM": int}``: the status registers read after the deadline (a value
        is ``None`` if it could not be read).
    """

    def __init__(self, message, stage, dmasr):
        super().__init__(message)
        self.stage = stage
        self.dmasr = dict(dmasr)


# Register windows -----------------------------------------------------------------------------

class _MappedWindow:
    """A ``size``-byte register window at ``delta`` bytes into an mmap, as 32-bit words."""

    def __init__(self, mm, delta, size, label):
        self._mm = mm
        self.size = size
        self.label = label
        self._words = np.frombuffer(mm, dtype=np.uint32, count=size // 4, offset=delta)

    def _index(self, offset):
        if not isinstance(offset, (int, np.integer)) or isinstance(offset, bool):
            raise ValueError(f"offset must be an integer, not {offset!r} ({self.label})")
        if self._words is None:
            raise ValueError(f"{self.label} is closed")
        if offset % 4 or not 0 <= offset < self.size:
            raise ValueError(f"offset must be a multiple of 4 in [0, {self.size:#x}) of "
                             f"{self.label}, not {int(offset):#x}")
        return int(offset) >> 2

    def read32(self, offset):
        """The 32-bit word at byte ``offset`` (one aligned 32-bit load)."""
        return int(self._words[self._index(offset)])

    def write32(self, offset, value):
        """Store ``value`` (an unsigned 32-bit integer) at byte ``offset`` (one 32-bit store)."""
        index = self._index(offset)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) \
                or not 0 <= value <= 0xFFFF_FFFF:
            raise ValueError(f"value must be an integer in [0, 0xffffffff], not {value!r} "
                             f"(write to {int(offset):#x} of {self.label})")
        self._words[index] = np.uint32(value)

    def close(self):
        """Unmap the window (idempotent)."""
        self._words = None
        if self._mm is not None:
            _close_map(self._mm)
            self._mm = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"<{type(self).__name__} {self.label}, {self.size:#x} bytes>"


def _read_text(path):
    return Path(path).read_text().strip()


def find_uio(name, sysfs_root="/sys/class/uio"):
    """The ``uioN`` whose ``name`` file reads ``name``.

    Raises
    ------
    FileNotFoundError
        If no such device exists (the message lists the devices found), or several do.
    """
    root = Path(sysfs_root)
    if not root.is_dir():
        raise FileNotFoundError(f"no UIO device named {name!r}: {root} does not exist (no UIO "
                                f"devices at all: is the overlay loaded? mulfree deploy)")
    found = {}
    for entry in sorted(root.iterdir()):
        try:
            found[entry.name] = _read_text(entry / "name")
        except OSError:
            continue
    matches = [dev for dev, dev_name in found.items() if dev_name == name]
    if not matches:
        listing = ", ".join(f"{dev} {n!r}" for dev, n in found.items()) or "none"
        raise FileNotFoundError(f"no UIO device named {name!r} under {root} (found: "
                                f"{listing}); load the overlay: mulfree deploy")
    if len(matches) > 1:
        raise FileNotFoundError(f"several UIO devices named {name!r} under {root}: "
                                f"{', '.join(matches)}; the overlay must name each once")
    return matches[0]


def _open_device(path, what, flags=os.O_RDWR | os.O_SYNC):
    try:
        return os.open(path, flags)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist ({what})") from None
    except PermissionError:
        raise PermissionError(f"cannot open {path} ({what}): permission denied; run as root "
                              f"or give your user access to it (a udev rule)") from None


class UioWindow(_MappedWindow):
    """The register window of a UIO device, found by its name.

    Parameters
    ----------
    name : str
        The device's name (``/sys/class/uio/uioN/name``, from the device tree).
    sysfs_root : str or Path
        Where the ``uioN`` folders are.
    dev_root : str or Path
        Where the ``uioN`` device files are.
    map_index : int
        Which of the device's memory maps (``maps/mapN``); UIO maps map ``N`` at file offset
        ``N * PAGE_SIZE``.

    Attributes
    ----------
    name, device : str
        The UIO name and the device (``uioN``).
    size : int
        Bytes of the map (``maps/mapN/size``).
    phys_addr : int or None
        The map's physical address (``maps/mapN/addr``), if sysfs gives it.
    lock_id : str
        Identifies the hardware for the runtime's lock file: the UIO name.
    """

    def __init__(self, name, *, sysfs_root="/sys/class/uio", dev_root="/dev", map_index=0):
        _check_uint("map_index", map_index, 0, 4)
        self.name = name
        self.device = find_uio(name, sysfs_root)
        map_dir = Path(sysfs_root) / self.device / "maps" / f"map{map_index}"
        try:
            size = int(_read_text(map_dir / "size"), 0)
        except (OSError, ValueError) as exc:
            raise FileNotFoundError(f"UIO device {name!r} ({self.device}) has no readable "
                                    f"{map_dir / 'size'}: {exc}") from None
        try:
            self.phys_addr = int(_read_text(map_dir / "addr"), 0)
        except (OSError, ValueError):
            self.phys_addr = None
        if size < 4 or size % 4:
            raise ValueError(f"UIO device {name!r} ({self.device}) reports a map size of "
                             f"{size:#x}; a register window must be a positive multiple of 4")
        path = Path(dev_root) / self.device
        fd = _open_device(path, f"UIO device {name!r}")
        try:
            mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                           offset=map_index * PAGE_SIZE)
        except (OSError, ValueError) as exc:
            raise OSError(f"cannot map {size:#x} bytes of {path} (UIO device {name!r}): "
                          f"{exc}") from None
        finally:
            os.close(fd)
        self.lock_id = name
        super().__init__(mm, 0, size, f"UIO device {name!r} ({path})")


class DevMemWindow(_MappedWindow):
    """A register window mapped from ``/dev/mem``: exactly ``[base, base + size)``.

    The mapping starts at the page holding ``base``; offsets are checked against ``size``, so
    nothing outside the window is reachable through this object.

    Parameters
    ----------
    base : int
        Physical address of the window (4-byte aligned).
    size : int
        Bytes (a positive multiple of 4).
    dev : str or Path
        The memory device (a regular file in tests).
    """

    def __init__(self, base, size, dev="/dev/mem"):
        base = _check_uint("base", base, 0, (1 << 64) - 1)
        size = _check_uint("size", size, 4, 1 << 31)
        if base % 4 or size % 4:
            raise ValueError(f"base and size must be multiples of 4, not {base:#x} and "
                             f"{size:#x}")
        self.base = base
        start = base - base % PAGE_SIZE
        delta = base - start
        length = -(-(delta + size) // PAGE_SIZE) * PAGE_SIZE
        fd = _open_device(dev, f"physical memory, window {base:#x}+{size:#x}")
        try:
            mm = mmap.mmap(fd, length, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE,
                           offset=start)
        except (OSError, ValueError) as exc:
            raise OSError(f"cannot map {dev} at {base:#x}+{size:#x}: {exc}") from None
        finally:
            os.close(fd)
        self.lock_id = f"mem-{base:08x}"
        super().__init__(mm, delta, size, f"{dev} window {base:#010x}+{size:#x}")


# The DMA buffer -------------------------------------------------------------------------------

class DmaBuffer:
    """A physically contiguous buffer the DMA reads and writes.

    This base class wraps any byte array with a physical address (the emulated board uses it
    over a NumPy array); its syncs only check their ranges. :class:`UdmaBuf` opens the real one.

    Parameters
    ----------
    array : 1-D uint8 array
        The CPU's view of the buffer.
    phys_addr : int
        The bus address of ``array[0]``.

    Attributes
    ----------
    phys_addr, size : int
    array : 1-D uint8 array
    """

    def __init__(self, array, phys_addr):
        if not isinstance(array, np.ndarray) or array.dtype != np.uint8 or array.ndim != 1:
            raise ValueError(f"array must be a 1-D uint8 NumPy array, not "
                             f"{getattr(array, 'dtype', type(array))} "
                             f"{getattr(array, 'shape', '')}")
        self.array = array
        self.size = int(array.size)
        self.phys_addr = _check_uint("phys_addr", phys_addr, 0, (1 << 64) - 1)

    def _check_range(self, offset, n):
        if not isinstance(offset, (int, np.integer)) or not isinstance(n, (int, np.integer)) \
                or offset < 0 or n < 0 or offset + n > self.size:
            raise ValueError(f"offset and n must be integers with 0 <= offset and offset + n <= "
                             f"{self.size:#x} (the buffer's size), not {offset!r} and {n!r}")

    def sync_for_device(self, offset, n):
        """Make the CPU's writes to ``[offset, offset + n)`` visible to the DMA (no-op here)."""
        self._check_range(offset, n)

    def sync_for_cpu(self, offset, n):
        """Make the DMA's writes to ``[offset, offset + n)`` visible to the CPU (no-op here)."""
        self._check_range(offset, n)

    def close(self):
        """Release the buffer (nothing to do for a plain array)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


#: sysfs class folders of u-dma-buf and of its predecessor udmabuf, newest first.
_UDMABUF_CLASSES = ("u-dma-buf", "udmabuf")
_SYNC_TO_DEVICE, _SYNC_FROM_DEVICE = 1, 2


class UdmaBuf(DmaBuffer):
    """A u-dma-buf (or older udmabuf) device mapped into this process.

    The buffer's physical address and size come from sysfs
    (``<sysfs_root>/u-dma-buf/<name>/phys_addr`` and ``size``, else the older
    ``<sysfs_root>/udmabuf/<name>/``); the device file is ``<dev_root>/<name>``.

    Cache coherency. With ``o_sync=True`` (the default, and the simplest correct choice) the
    device is opened with ``O_SYNC``: u-dma-buf then maps it uncached on ARM, the DMA and the
    CPU always see the same bytes, and :meth:`sync_for_device` / :meth:`sync_for_cpu` do
    nothing. Copies into an uncached buffer are slower than into a cached one; with
    ``o_sync=False`` the mapping is cached and the syncs write u-dma-buf's ``sync_offset``,
    ``sync_size``, ``sync_direction`` and ``sync_for_device`` / ``sync_for_cpu`` files (the
    driver's manual cache maintenance).

    Parameters
    ----------
    name : str
        The device's name, e.g. ``"udmabuf0"``.
    sysfs_root : str or Path
        The sysfs class folder holding ``u-dma-buf/`` (or ``udmabuf/``).
    dev_root : str or Path
        Where the device file is.
    o_sync : bool
        Open uncached (see above).
    """

    def __init__(self, name="udmabuf0", *, sysfs_root="/sys/class", dev_root="/dev",
                 o_sync=True):
        # The name becomes a path under dev_root and sysfs_root: a plain name only.
        check_device_name("name", name)
        self.name = name
        self.o_sync = bool(o_sync)
        tried = [Path(sysfs_root) / cls / name for cls in _UDMABUF_CLASSES]
        sysdir = next((d for d in tried if d.is_dir()), None)
        if sysdir is None:
            raise FileNotFoundError(f"no u-dma-buf device named {name!r} (looked for "
                                    f"{' and '.join(map(str, tried))}); load the u-dma-buf "
                                    f"module with a buffer named {name!r} (mulfree deploy)")
        self.sysfs_dir = sysdir
        try:
            phys = int(_read_text(sysdir / "phys_addr"), 0)
            size = int(_read_text(sysdir / "size"), 0)
        except (OSError, ValueError) as exc:
            raise FileNotFoundError(f"u-dma-buf device {name!r}: cannot read phys_addr and "
                                    f"size in {sysdir}: {exc}") from None
        if size <= 0:
            raise ValueError(f"u-dma-buf device {name!r} has size {size}; it must be positive")
        path = Path(dev_root) / name
        flags = os.O_RDWR | (os.O_SYNC if self.o_sync else 0)
        fd = _open_device(path, f"u-dma-buf device {name!r}", flags)
        try:
            self._mm = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except (OSError, ValueError) as exc:
            raise OSError(f"cannot map {size:#x} bytes of {path}: {exc}") from None
        finally:
            os.close(fd)
        super().__init__(np.frombuffer(self._mm, dtype=np.uint8, count=size), phys)

    def _sync(self, offset, n, direction, command):
        self._check_range(offset, n)
        if self.o_sync or n == 0:
            return
        for attr, value in (("sync_offset", offset), ("sync_size", n),
                            ("sync_direction", direction), (command, 1)):
            (self.sysfs_dir / attr).write_text(f"{value}\n")

    def sync_for_device(self, offset, n):
        """Write back the CPU cache over ``[offset, offset + n)`` before the DMA reads it
        (no-op with ``o_sync``)."""
        self._sync(offset, n, _SYNC_TO_DEVICE, "sync_for_device")

    def sync_for_cpu(self, offset, n):
        """Invalidate the CPU cache over ``[offset, offset + n)`` after the DMA wrote it
        (no-op with ``o_sync``)."""
        self._sync(offset, n, _SYNC_FROM_DEVICE, "sync_for_cpu")

    def close(self):
        """Unmap the buffer (idempotent)."""
        self.array = None
        if getattr(self, "_mm", None) is not None:
            _close_map(self._mm)
            self._mm = None


# The AXI DMA (PG021, simple mode) -------------------------------------------------------------

#: Byte offsets of the simple-mode registers (PG021, "Register Space").
DMA_REGS = {
    "MM2S_DMACR": 0x00, "MM2S_DMASR": 0x04, "MM2S_SA": 0x18, "MM2S_SA_MSB": 0x1C,
    "MM2S_LENGTH": 0x28,
    "S2MM_DMACR": 0x30, "S2MM_DMASR": 0x34, "S2MM_DA": 0x48, "S2MM_DA_MSB": 0x4C,
    "S2MM_LENGTH": 0x58,
}
_DMA_SPAN = DMA_REGS["S2MM_LENGTH"] + 4
#: DMACR bits.
DMACR_BITS = {"RS": 0, "Reset": 2, "IOC_IrqEn": 12, "Err_IrqEn": 14}
#: DMASR bits.
DMASR_BITS = {"Halted": 0, "Idle": 1, "SGIncld": 3, "DMAIntErr": 4, "DMASlvErr": 5,
              "DMADecErr": 6, "IOC_Irq": 12, "Dly_Irq": 13, "Err_Irq": 14}
#: The error bits of DMASR and what they mean in simple mode.
DMASR_ERRORS = {
    "DMAIntErr": "internal error: a transfer of 0 bytes, or (S2MM) a packet longer than the "
                 "length written",
    "DMASlvErr": "slave error: the memory answered SLVERR",
    "DMADecErr": "decode error: the buffer address is not mapped on the DMA's memory port",
}
_ERROR_MASK = sum(1 << DMASR_BITS[n] for n in DMASR_ERRORS)
_CHANNELS = {"MM2S": ("MM2S_DMACR", "MM2S_DMASR", "MM2S_SA", "MM2S_SA_MSB", "MM2S_LENGTH"),
             "S2MM": ("S2MM_DMACR", "S2MM_DMASR", "S2MM_DA", "S2MM_DA_MSB", "S2MM_LENGTH")}


def decode_dmasr(value):
    """The names of the bits set in a DMASR value (among :data:`DMASR_BITS`), low bit first."""
    return [name for name, bit in DMASR_BITS.items() if value >> bit & 1]


def _fmt_dmasr(value):
    return f"DMASR={value:#010x} ({', '.join(decode_dmasr(value)) or 'no bits set'})"


#: Polls spent spinning before the wait loops start sleeping between reads.
_SPIN_POLLS = 1000
_POLL_SLEEP = 100e-6


def _poll(read, done, deadline):
    """Read until ``done(value)`` or the deadline; return ``(value, done?)``."""
    polls = 0
    while True:
        value = read()
        if done(value):
            return value, True
        if time.monotonic() >= deadline:
            return value, False
        polls += 1
        if polls > _SPIN_POLLS:
            time.sleep(_POLL_SLEEP)


class AxiDma:
    """Driver of a Xilinx AXI DMA (PG021) in simple (direct register) mode.

    Register sequences (``w`` write, ``r`` read; offsets in :data:`DMA_REGS`):

    * :meth:`reset`: ``w MM2S_DMACR = Reset``, ``w S2MM_DMACR = Reset``, then ``r MM2S_DMACR``
      and ``r S2MM_DMACR`` until the Reset bit reads 0 (either reset resets the whole DMA).
    * :meth:`start`: ``w MM2S_DMACR = RS``, ``w S2MM_DMACR = RS``, ``r MM2S_DMASR``,
      ``r S2MM_DMASR`` (scatter-gather refused, running, no error).
    * :meth:`send` / :meth:`recv`: ``r DMASR`` (running, no error), ``w SA|DA`` (and the
      ``_MSB`` register with ``addr64``), ``w LENGTH`` (which starts the transfer).
    * :meth:`wait_send` / :meth:`wait_recv`: ``r DMASR`` until Idle or an error bit, then
      ``w DMASR = IOC_Irq`` (acknowledge); :meth:`wait_recv` then ``r S2MM_LENGTH``.

    Interrupts stay disabled (IOC_IrqEn, Err_IrqEn = 0): completion is polled.

    Parameters
    ----------
    window
        The DMA's register window (``read32`` / ``write32``).
    length_bits : int
        Width of the buffer length register (8..26).
    addr64 : bool
        The DMA has 64-bit addresses (``_MSB`` registers); a Zynq-7000's has 32.
    """

    def __init__(self, window, *, length_bits=26, addr64=False):
        self.window = window
        self.length_bits = _check_uint("length_bits", length_bits, 8, 26)
        self.addr64 = bool(addr64)
        self._pending = {"MM2S": None, "S2MM": None}

    @property
    def max_transfer_bytes(self):
        """``2**length_bits - 1``: the longest transfer the length register holds."""
        return (1 << self.length_bits) - 1

    def _r(self, reg):
        return self.window.read32(DMA_REGS[reg])

    def _w(self, reg, value):
        self.window.write32(DMA_REGS[reg], value)

    def status(self, channel):
        """The DMASR of ``channel`` (``"MM2S"`` or ``"S2MM"``)."""
        return self._r(_CHANNELS[self._channel(channel)][1])

    @staticmethod
    def _channel(channel):
        if channel not in _CHANNELS:
            raise ValueError(f"channel must be 'MM2S' or 'S2MM', not {channel!r}")
        return channel

    def reset(self, timeout=1.0):
        """Soft-reset the DMA (both channels) and wait until the reset completes.

        Afterwards both channels are halted (DMACR.RS = 0) with every register at its reset
        value; :meth:`start` runs them.

        Raises
        ------
        DmaError
            If the Reset bit is still set after ``timeout`` seconds.
        """
        reset = 1 << DMACR_BITS["Reset"]
        self._pending = {"MM2S": None, "S2MM": None}
        self._w("MM2S_DMACR", reset)
        self._w("S2MM_DMACR", reset)
        deadline = time.monotonic() + timeout
        for channel in _CHANNELS:
            cr, ok = _poll(lambda: self._r(f"{channel}_DMACR"), lambda v: not v & reset,
                           deadline)
            if not ok:
                raise DmaError(f"AXI DMA {channel}: the soft reset did not complete within "
                               f"{timeout:g} s (DMACR={cr:#010x}; is the DMA clocked and its "
                               f"stream side out of reset?)", channel)

    def start(self):
        """Run both channels (DMACR.RS = 1) and check they left the halted state.

        Raises
        ------
        DmaError
            If the DMA was built with scatter-gather (DMASR.SGIncld), a channel stays halted,
            or an error bit is set.
        """
        rs = 1 << DMACR_BITS["RS"]
        self._w("MM2S_DMACR", rs)
        self._w("S2MM_DMACR", rs)
        for channel in _CHANNELS:
            sr = self.status(channel)
            self._check_sr(channel, sr, "after start")

    def _check_sr(self, channel, sr, when):
        if sr >> DMASR_BITS["SGIncld"] & 1:
            raise DmaError(f"AXI DMA {channel}: the DMA was built with scatter-gather "
                           f"(DMASR.SGIncld = 1, {_fmt_dmasr(sr)}); mulfree drives it in simple "
                           f"(direct register) mode: rebuild it with c_include_sg = 0",
                           channel, sr)
        self._check_errors(channel, sr, when)
        if sr >> DMASR_BITS["Halted"] & 1:
            raise DmaError(f"AXI DMA {channel}: the channel is halted {when} ({_fmt_dmasr(sr)})"
                           f"; reset() and start() it", channel, sr)

    @staticmethod
    def _check_errors(channel, sr, when):
        errors = [n for n in DMASR_ERRORS if sr >> DMASR_BITS[n] & 1]
        if errors:
            why = "; ".join(f"{n}: {DMASR_ERRORS[n]}" for n in errors)
            raise DmaError(f"AXI DMA {channel} error {when}: {_fmt_dmasr(sr)}; {why}. The "
                           f"channel halted: reset() and start() the DMA", channel, sr)

    def _check_transfer(self, channel, phys, nbytes):
        limit = self.max_transfer_bytes
        if not isinstance(nbytes, (int, np.integer)) or isinstance(nbytes, bool) \
                or not 1 <= nbytes <= limit:
            raise DmaError(f"AXI DMA {channel}: nbytes must be an integer in [1, {limit}] (the "
                           f"length register has {self.length_bits} bits), not {nbytes!r}",
                           channel)
        top = (1 << (64 if self.addr64 else 32)) - 1
        if not isinstance(phys, (int, np.integer)) or isinstance(phys, bool) \
                or not 0 <= phys or phys + nbytes - 1 > top:
            raise DmaError(f"AXI DMA {channel}: phys must be an address with phys + nbytes - 1 "
                           f"<= {top:#x} ({64 if self.addr64 else 32}-bit addressing), not "
                           f"{phys!r} (nbytes {nbytes})", channel)
        if self._pending[channel] is not None:
            raise DmaError(f"AXI DMA {channel}: a transfer of {self._pending[channel]} bytes "
                           f"is in progress; wait for it first", channel)

    def _begin(self, channel, phys, nbytes):
        self._check_transfer(channel, phys, nbytes)
        _, _, addr, addr_msb, length = _CHANNELS[channel]
        self._check_sr(channel, self.status(channel), "before a transfer")
        self._w(addr, int(phys) & 0xFFFF_FFFF)
        if self.addr64:
            self._w(addr_msb, int(phys) >> 32)
        self._pending[channel] = int(nbytes)
        self._w(length, int(nbytes))

    def send(self, phys, nbytes):
        """Start an MM2S transfer of ``nbytes`` bytes from bus address ``phys``.

        The stream side sends them as one packet, ``tlast`` on the last beat.

        Raises
        ------
        DmaError
            Before touching the DMA if ``nbytes`` is 0 or longer than
            :attr:`max_transfer_bytes`, the address does not fit, or a transfer is pending;
            after reading DMASR if the channel is halted or in error.
        """
        self._begin("MM2S", phys, nbytes)

    def recv(self, phys, nbytes):
        """Start an S2MM transfer into ``nbytes`` bytes at bus address ``phys``; it completes at
        the incoming packet's ``tlast`` (see :meth:`send` for the errors)."""
        self._begin("S2MM", phys, nbytes)

    def _wait(self, channel, timeout):
        nbytes = self._pending[channel]
        if nbytes is None:
            raise DmaError(f"AXI DMA {channel}: no transfer to wait for", channel)
        idle, ioc = 1 << DMASR_BITS["Idle"], 1 << DMASR_BITS["IOC_Irq"]
        deadline = time.monotonic() + max(0.0, float(timeout))
        sr, ok = _poll(lambda: self.status(channel), lambda v: v & (idle | _ERROR_MASK),
                       deadline)
        if not ok:
            raise TransferTimeout(f"AXI DMA {channel}: the transfer of {nbytes} bytes did not "
                                  f"complete within {timeout:g} s ({_fmt_dmasr(sr)})",
                                  channel, {channel: sr})
        self._pending[channel] = None
        self._check_errors(channel, sr, f"during a transfer of {nbytes} bytes")
        self._w(_CHANNELS[channel][1], ioc)

    def wait_send(self, timeout):
        """Wait until the MM2S transfer completes (DMASR.Idle), then acknowledge IOC_Irq.

        Raises
        ------
        TransferTimeout
            If it does not complete within ``timeout`` seconds (the transfer stays pending:
            :meth:`reset` the DMA).
        DmaError
            If an error bit is set.
        """
        self._wait("MM2S", timeout)

    def wait_recv(self, timeout):
        """Wait until the S2MM transfer completes; return the bytes received (S2MM_LENGTH).

        Raises as :meth:`wait_send`.
        """
        self._wait("S2MM", timeout)
        return self._r("S2MM_LENGTH")

    def pending(self, channel):
        """Bytes of the transfer started on ``channel`` and not yet waited for, or ``None``."""
        return self._pending[self._channel(channel)]


# The backend ----------------------------------------------------------------------------------

def _registers(manifest):
    try:
        regs = manifest["registers"]
    except (TypeError, KeyError):
        regs = None
    if not isinstance(regs, dict):
        raise ValueError("manifest must be a core manifest with a 'registers' section "
                         "(mulfree gen --core writes <top>.json)")
    return regs


def _field(manifest, reg_name, field_name):
    """``(offset, bit, width)`` of a register field in the manifest's ``registers`` section."""
    for reg in _registers(manifest)["registers"]:
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
        regs = ", ".join(f"{c} {_fmt_dmasr(v)}" if v is not None else f"{c} unreadable"
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
            Bytes of the result packet (whole beats).
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
                or not 0 < out_nbytes <= self.max_out_bytes or out_nbytes % self.beat_bytes:
            raise ValueError(f"out_nbytes must be a positive multiple of {self.beat_bytes} "
                             f"(whole beats) up to {self.max_out_bytes} (the output area and "
                             f"the DMA's length register), not {out_nbytes!r}")
        out_nbytes = int(out_nbytes)
        self._check_idle()
        base, out_off, in_off = self.buffer.phys_addr, self.output_area[0], self.input_area[0]
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
        # Wait for the result, or for the core to stop with an error (it then sends no more
        # result beats, and the caller reads the error and resets core and DMA).
        offset, bit = self._error
        idle = (1 << DMASR_BITS["Idle"]) | _ERROR_MASK
        value, ok = _poll(lambda: (self.dma.status("S2MM"), self.core.read32(offset)),
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
        _, ok = _poll(lambda: self.core.read32(offset), lambda v: v >> bit & 1, deadline)
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
    regs = _registers(manifest)
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
        if dma.size < _DMA_SPAN:
            raise ValueError(f"the DMA's window ({dma.label}) is {dma.size:#x} bytes; the "
                             f"simple-mode registers need {_DMA_SPAN:#x}")
        buffer = UdmaBuf(config.udmabuf, sysfs_root=sysfs_root, dev_root=dev_root)
        opened.append(buffer)
        return ZynqBackend(core, dma, buffer, manifest=manifest, config=config)
    except BaseException:
        for part in reversed(opened):
            part.close()
        raise


def _one_line(exc):
    return " ".join(str(exc).split())


#: The defaults the block design and the device tree overlay are generated with.
ZYNQ_DEFAULTS = ZynqConfig()


def check_main(argv=None):
    """``python3 -m mulfree.host.zynq --check``: is the core on this board the manifest's?

    Opens the device (``open_device("zynq", manifest)``, which reads the identity registers and
    compares them with the manifest) and prints what it found. ``mulfree deploy`` runs it on
    the board after loading a build.

    Returns
    -------
    int
        0 if the identity registers match, 1 if they do not or a device is missing, 2 for bad
        arguments.
    """
    import argparse
    import sys
    # Imported by package name: run as __main__, this file is not the module the runtime
    # knows, and open_zynq checks ``isinstance(config, ZynqConfig)`` against that one.
    from mulfree.spec.safe_io import FileCheckError
    from mulfree.host import runtime
    from mulfree.host.zynq import ZynqConfigError as ConfigError, load_zynq_config
    parser = argparse.ArgumentParser(
        prog="python3 -m mulfree.host.zynq",
        description="Check that the core on this Zynq board is the one a manifest describes.")
    parser.add_argument("--check", action="store_true", required=True,
                        help="open the core and compare its identity registers with the manifest")
    parser.add_argument("--manifest", required=True, metavar="FILE",
                        help="the core's manifest (<top>.json of the build folder)")
    parser.add_argument("--zynq-config", default=None, metavar="FILE",
                        help="ZynqConfig fields as JSON (zynq.json of the build folder); default: "
                             "the defaults for the manifest")
    args = parser.parse_args(argv)
    prog = parser.prog
    options = {}
    if args.zynq_config is not None:
        try:
            options["config"] = load_zynq_config(args.zynq_config, "--zynq-config")
        except FileCheckError as exc:
            print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
            return 2
    try:
        with runtime.open_device("zynq", args.manifest, **options) as dev:
            ident = dev.identity()
            top = dev.manifest.get("top")
    except (FileCheckError, ConfigError) as exc:        # a manifest or config refused
        print(f"{prog}: error: --manifest: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (runtime.DeviceError, OSError, ValueError) as exc:
        print(f"{prog}: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1
    version = ident["VERSION"]
    print(f"{prog}: the core is {top}: ID {ident['ID']:#010x}, version "
          f"{version >> 16}.{version & 0xFFFF}, identity registers match the manifest")
    return 0


if __name__ == "__main__":
    raise SystemExit(check_main())
