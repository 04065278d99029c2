"""Memory-mapped I/O on a Zynq board: register windows and the DMA buffer.

* register windows with ``read32`` / ``write32``: :class:`UioWindow` (a UIO device found by
  name, :func:`find_uio`) and :class:`DevMemWindow` (``/dev/mem``, restricted to one window);
* :class:`DmaBuffer`, the physically contiguous buffer the DMA reads and writes, and
  :class:`UdmaBuf` that opens a u-dma-buf (or the older udmabuf) device.

Register accesses go through a NumPy ``uint32`` view of the mapping, so every access is one
aligned 32-bit load or store (AXI4-Lite registers must be written as whole words; a byte-wise
``memcpy`` would be refused by the core's STROBE check).

NumPy and the standard library only: this module runs on the board.
"""

import mmap
import os
from pathlib import Path

import numpy as np

from .zynq_config import PAGE_SIZE, check_device_name, check_uint


__all__ = ["UioWindow", "DevMemWindow", "find_uio", "DmaBuffer", "UdmaBuf"]


def _close_map(mm):
    """Unmap ``mm``; if a caller still holds a view of it, leave that to the garbage collector."""
    try:
        mm.close()
    except BufferError:
        pass


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
        check_uint("map_index", map_index, 0, 4)
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
        base = check_uint("base", base, 0, (1 << 64) - 1)
        size = check_uint("size", size, 4, 1 << 31)
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
        self.phys_addr = check_uint("phys_addr", phys_addr, 0, (1 << 64) - 1)

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

