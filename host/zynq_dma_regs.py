"""The register map of a Xilinx AXI DMA (PG021) in simple (direct register) mode.

What the DMA's registers are and what their bits mean: the byte offsets of the simple-mode
registers (:data:`DMA_REGS`), the control and status bits (:data:`DMACR_BITS`,
:data:`DMASR_BITS`), the status register's error bits and what they mean in simple mode
(:data:`DMASR_ERRORS`), and :func:`decode_dmasr` / :func:`format_dmasr` to read a status
value. The driver (:mod:`mulfree.host.zynq_dma`), the configuration's check of the DMA's window
(:mod:`mulfree.host.zynq_config`) and the emulated board's DMA model
(:mod:`mulfree.sim.emulated_board`) share this one map.

The standard library only: this module runs on the board.
"""

__all__ = [
    "DMA_REGS", "DMA_SPAN", "DMACR_BITS", "DMASR_BITS", "DMASR_ERRORS", "DMASR_ERROR_MASK",
    "DMA_CHANNELS", "decode_dmasr", "format_dmasr",
]


#: Byte offsets of the simple-mode registers (PG021, "Register Space").
DMA_REGS = {
    "MM2S_DMACR": 0x00, "MM2S_DMASR": 0x04, "MM2S_SA": 0x18, "MM2S_SA_MSB": 0x1C,
    "MM2S_LENGTH": 0x28,
    "S2MM_DMACR": 0x30, "S2MM_DMASR": 0x34, "S2MM_DA": 0x48, "S2MM_DA_MSB": 0x4C,
    "S2MM_LENGTH": 0x58,
}
#: Bytes of register window the simple-mode registers need (the last, S2MM_LENGTH, at 0x58).
DMA_SPAN = DMA_REGS["S2MM_LENGTH"] + 4
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
#: The bits of :data:`DMASR_ERRORS` as one mask of a DMASR value.
DMASR_ERROR_MASK = sum(1 << DMASR_BITS[n] for n in DMASR_ERRORS)
#: Each channel's registers: ``(DMACR, DMASR, address, address MSB, length)``.
DMA_CHANNELS = {"MM2S": ("MM2S_DMACR", "MM2S_DMASR", "MM2S_SA", "MM2S_SA_MSB", "MM2S_LENGTH"),
                "S2MM": ("S2MM_DMACR", "S2MM_DMASR", "S2MM_DA", "S2MM_DA_MSB", "S2MM_LENGTH")}


def decode_dmasr(value):
    """The names of the bits set in a DMASR value (among :data:`DMASR_BITS`), low bit first.

    Parameters
    ----------
    value : int
        A DMASR value.

    Returns
    -------
    list of str
    """
    return [name for name, bit in DMASR_BITS.items() if value >> bit & 1]


def format_dmasr(value):
    """``DMASR=0x... (bit, bit)``: a DMASR value and its set bits, for error messages.

    Parameters
    ----------
    value : int
        A DMASR value.

    Returns
    -------
    str
    """
    return f"DMASR={value:#010x} ({', '.join(decode_dmasr(value)) or 'no bits set'})"
