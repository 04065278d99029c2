"""The Zynq-7000 backend of the host runtime: Linux on the board, UIO or ``/dev/mem``, no PYNQ.

On the board the core's AXI4-Lite registers sit on a general-purpose (GP) port, and a Xilinx
AXI DMA (PG021) in **simple (direct register) mode, without scatter-gather**, on a high-
performance (HP) port moves bytes between a physically contiguous buffer (u-dma-buf) and the
core's streams: MM2S feeds the core's ``s_axis``, S2MM takes its ``m_axis``. The DMA ends each
MM2S transfer with ``tlast``, and the core wants ``tlast`` exactly at each packet's end, so
every input packet is one MM2S transfer; a layer's result is one packet, one S2MM transfer.

The public face of the backend: the one module a user imports, and the on-board self-check
``python3 -m mulfree.host.zynq --check --manifest <top>.json`` (:func:`check_main`, run by
``mulfree deploy``). The pieces, from the bottom up, each re-exported here:

* :class:`ZynqConfig` (:mod:`mulfree.host.zynq_config`): the addresses and names the Vivado
  block design and the device tree overlay use (:data:`ZYNQ_DEFAULTS`), so the build flow and
  this runtime agree; :func:`load_zynq_config` reads one from ``zynq.json``;
* the simple-mode register map of the AXI DMA (:mod:`mulfree.host.zynq_dma_regs`):
  :data:`DMA_REGS`, :data:`DMACR_BITS`, :data:`DMASR_BITS`, :func:`decode_dmasr`;
* memory-mapped register windows with ``read32`` / ``write32`` (:mod:`mulfree.host.zynq_mmio`):
  :class:`UioWindow` (a UIO device found by name) and :class:`DevMemWindow` (``/dev/mem``,
  restricted to one window); :class:`DmaBuffer`, the physically contiguous buffer, and
  :class:`UdmaBuf` that opens a u-dma-buf (or the older udmabuf) device;
* :class:`AxiDma`, the driver of the AXI DMA's simple-mode register map
  (:mod:`mulfree.host.zynq_dma`);
* :class:`ZynqBackend`, the runtime's backend (:mod:`mulfree.host.runtime`), and
  :func:`open_zynq` that finds and opens all of the above (:mod:`mulfree.host.zynq_backend`);
* :func:`check_main`, the self-check (:mod:`mulfree.host.zynq_check`).

Register accesses go through a NumPy ``uint32`` view of the mapping, so every access is one
aligned 32-bit load or store (AXI4-Lite registers must be written as whole words; a byte-wise
``memcpy`` would be refused by the core's STROBE check).

NumPy and the standard library only: this module runs on the board. It defines nothing of its
own, so run as ``__main__`` it checks against the very classes the runtime uses.
"""

from .zynq_backend import BUFFER_ALIGN, ZynqBackend, open_zynq
from .zynq_check import check_main
from .zynq_config import (PAGE_SIZE, PL_WINDOWS, ZYNQ_DEFAULTS, ZynqConfig, ZynqConfigError,
                          check_device_name, load_zynq_config)
from .zynq_dma import AxiDma, DmaError, TransferTimeout
from .zynq_dma_regs import DMA_REGS, DMACR_BITS, DMASR_BITS, DMASR_ERRORS, decode_dmasr
from .zynq_mmio import DevMemWindow, DmaBuffer, UdmaBuf, UioWindow, find_uio


__all__ = [
    "ZynqConfig", "ZynqConfigError", "load_zynq_config", "check_device_name", "PL_WINDOWS",
    "ZYNQ_DEFAULTS", "PAGE_SIZE", "DmaError", "TransferTimeout",
    "UioWindow", "DevMemWindow", "find_uio", "DmaBuffer", "UdmaBuf", "AxiDma",
    "DMA_REGS", "DMACR_BITS", "DMASR_BITS", "DMASR_ERRORS", "decode_dmasr",
    "BUFFER_ALIGN", "ZynqBackend", "open_zynq", "check_main",
]


if __name__ == "__main__":
    raise SystemExit(check_main())
