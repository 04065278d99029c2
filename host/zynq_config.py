"""The configuration of a Zynq-7000 board: where the core and the DMA are, how Linux names them.

:class:`ZynqConfig` holds the addresses and device names the Vivado block design and the
device tree overlay use (:data:`ZYNQ_DEFAULTS`), so the build flow and the runtime agree; every
field is checked when a config is built, since with ``use_devmem`` its numbers become mappings
of physical memory. :func:`load_zynq_config` reads one from a JSON file (``zynq.json`` of a
build folder). The checks it is built from, :func:`check_uint` and :func:`check_device_name`,
serve the register windows, the DMA buffer and the DMA driver too.

NumPy and the standard library only: this module runs on the board.
"""

import mmap
import re
from dataclasses import dataclass, fields, replace

import numpy as np

from .zynq_dma_regs import DMA_SPAN


__all__ = [
    "ZynqConfig", "ZynqConfigError", "load_zynq_config", "check_device_name", "check_uint",
    "manifest_registers", "PL_WINDOWS", "MAX_WINDOW", "ZYNQ_DEFAULTS", "PAGE_SIZE",
]

#: Bytes of a memory page: a mapping starts at a multiple of it.
PAGE_SIZE = mmap.PAGESIZE


class ZynqConfigError(ValueError):
    """A :class:`ZynqConfig` field that cannot be right; ``param`` names it."""

    def __init__(self, param, message):
        super().__init__(message)
        self.param = param


def check_uint(param, value, lo, hi, error=ValueError):
    """``value`` as an ``int`` if it is an integer (not a bool) in ``[lo, hi]``, else raise.

    Parameters
    ----------
    param : str
        The name the message gives the value.
    value
        What to check.
    lo, hi : int
        The allowed range, both ends included.
    error : type
        ``ValueError`` (raised with the message alone), or an exception class taking
        ``(param, message)`` such as :class:`ZynqConfigError`.

    Returns
    -------
    int
    """
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


def manifest_registers(manifest):
    """The ``registers`` section of a core manifest.

    Parameters
    ----------
    manifest : dict
        A core manifest.

    Returns
    -------
    dict

    Raises
    ------
    ValueError
        If ``manifest`` has no ``registers`` object.
    """
    try:
        regs = manifest["registers"]
    except (TypeError, KeyError):
        regs = None
    if not isinstance(regs, dict):
        raise ValueError("manifest must be a core manifest with a 'registers' section "
                         "(mulfree gen --core writes <top>.json)")
    return regs


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
            s = check_uint(size, getattr(self, size), 4, MAX_WINDOW, err)
            if s & (s - 1):
                raise err(size, f"{size} must be a power of two, not {s:#x}")
            b = check_uint(base, getattr(self, base), 0, (1 << 32) - 1, err)
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
        check_uint("dma_length_bits", self.dma_length_bits, 8, 26, err)
        if self.dma_size < DMA_SPAN:
            raise err("dma_size", f"dma_size must be at least {DMA_SPAN:#x} (the last "
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
        width = manifest_registers(manifest).get("addr_width")
        check_uint("registers.addr_width", width, 2, 32)
        return cls(**{"core_size": 1 << int(width), **overrides})

    def check_manifest(self, manifest):
        """Raise :class:`ZynqConfigError` unless the core's window covers ``manifest``'s
        register map (``registers.size`` bytes)."""
        need = manifest_registers(manifest).get("size")
        check_uint("registers.size", need, 4, 1 << 32)
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
    """``value`` if it is a plain device name (see :data:`_DEVICE_NAME`), else ``error``.

    Parameters
    ----------
    param : str
        The name the message gives the value.
    value
        What to check.
    error : type
        ``ValueError``, or an exception class taking ``(param, message)``.

    Returns
    -------
    str
    """
    if not isinstance(value, str) or not _DEVICE_NAME.fullmatch(value):
        message = (f"{param} must be a device name (a letter or digit, then letters, digits "
                   f"and _ . , + -; at most 31 characters), not {value!r}")
        raise error(param, message) if error is not ValueError else ValueError(message)
    return value


def load_zynq_config(path, param="--zynq-config"):
    """The :class:`ZynqConfig` of a JSON file (``zynq.json`` of a build folder).

    The file is read strictly (:func:`mulfree.params.safe_io.read_json`: bounded size and
    nesting, no NaN, no duplicate keys) and must be an object of :class:`ZynqConfig` fields
    only; missing fields take the defaults.

    Parameters
    ----------
    path : str or Path
        The JSON file.
    param : str
        The option the messages name.

    Returns
    -------
    ZynqConfig

    Raises
    ------
    mulfree.params.safe_io.FileCheckError
        A ``ValueError`` whose one-line message names ``param``, the file, the field and
        what is allowed.
    """
    from ..params.safe_io import FileCheckError, read_json
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


#: The defaults the block design and the device tree overlay are generated with.
ZYNQ_DEFAULTS = ZynqConfig()
