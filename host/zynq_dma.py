"""The driver of a Xilinx AXI DMA (PG021) in simple (direct register) mode, and its errors.

On the board a Xilinx AXI DMA in **simple (direct register) mode, without scatter-gather**,
on a high-performance (HP) port moves bytes between a physically contiguous buffer and the
core's streams: MM2S feeds the core's ``s_axis``, S2MM takes its ``m_axis``. :class:`AxiDma`
drives its register map (:mod:`mulfree.host.zynq_dma_regs`) through any register window with
``read32`` / ``write32``; :class:`DmaError` and :class:`TransferTimeout` are what it raises,
and :func:`poll_until` is the wait loop it and the backend poll registers with.

NumPy and the standard library only: this module runs on the board.
"""

import time

import numpy as np

from .zynq_config import check_uint
from .zynq_dma_regs import (DMA_CHANNELS, DMA_REGS, DMACR_BITS, DMASR_BITS, DMASR_ERROR_MASK,
                            DMASR_ERRORS, decode_dmasr, format_dmasr)


__all__ = ["DmaError", "TransferTimeout", "AxiDma", "poll_until"]


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


#: Polls spent spinning before the wait loops start sleeping between reads.
_SPIN_POLLS = 1000
_POLL_SLEEP = 100e-6


def poll_until(read, done, deadline):
    """Call ``read()`` until ``done(value)`` or the deadline passes.

    The first polls spin; after :data:`_SPIN_POLLS` of them the loop sleeps between reads.

    Parameters
    ----------
    read : callable
        Returns the value to test (a register read).
    done : callable
        Takes a value, true when the wait is over.
    deadline : float
        A :func:`time.monotonic` time.

    Returns
    -------
    tuple
        ``(value, done?)``: the last value read, and whether ``done`` held for it.
    """
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
        self.length_bits = check_uint("length_bits", length_bits, 8, 26)
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
        return self._r(DMA_CHANNELS[self._channel(channel)][1])

    @staticmethod
    def _channel(channel):
        if channel not in DMA_CHANNELS:
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
        for channel in DMA_CHANNELS:
            cr, ok = poll_until(lambda: self._r(f"{channel}_DMACR"), lambda v: not v & reset,
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
        for channel in DMA_CHANNELS:
            sr = self.status(channel)
            self._check_sr(channel, sr, "after start")

    def _check_sr(self, channel, sr, when):
        if sr >> DMASR_BITS["SGIncld"] & 1:
            raise DmaError(f"AXI DMA {channel}: the DMA was built with scatter-gather "
                           f"(DMASR.SGIncld = 1, {format_dmasr(sr)}); mulfree drives it in simple "
                           f"(direct register) mode: rebuild it with c_include_sg = 0",
                           channel, sr)
        self._check_errors(channel, sr, when)
        if sr >> DMASR_BITS["Halted"] & 1:
            raise DmaError(f"AXI DMA {channel}: the channel is halted {when} ({format_dmasr(sr)})"
                           f"; reset() and start() it", channel, sr)

    @staticmethod
    def _check_errors(channel, sr, when):
        errors = [n for n in DMASR_ERRORS if sr >> DMASR_BITS[n] & 1]
        if errors:
            why = "; ".join(f"{n}: {DMASR_ERRORS[n]}" for n in errors)
            raise DmaError(f"AXI DMA {channel} error {when}: {format_dmasr(sr)}; {why}. The "
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
        _, _, addr, addr_msb, length = DMA_CHANNELS[channel]
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
        sr, ok = poll_until(lambda: self.status(channel),
                            lambda v: v & (idle | DMASR_ERROR_MASK), deadline)
        if not ok:
            raise TransferTimeout(f"AXI DMA {channel}: the transfer of {nbytes} bytes did not "
                                  f"complete within {timeout:g} s ({format_dmasr(sr)})",
                                  channel, {channel: sr})
        self._pending[channel] = None
        self._check_errors(channel, sr, f"during a transfer of {nbytes} bytes")
        self._w(DMA_CHANNELS[channel][1], ioc)

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

