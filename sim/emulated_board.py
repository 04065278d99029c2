"""An emulated Zynq board: the simulated core behind a model of the Xilinx AXI DMA.

:class:`EmulatedBoard` wraps a :class:`mulfree.sim.board.SimCore` (the core's Verilog under
Verilator) with what :mod:`mulfree.host.zynq` finds on a real board:

* ``core_window``: the core's AXI4-Lite registers (``read32`` / ``write32`` become
  ``SimCore.axil_read`` / ``axil_write``);
* ``dma_window``: a register-level model of an AXI DMA (PG021) in simple mode
  (:class:`AxiDmaModel`), whose MM2S channel feeds the core's ``s_axis`` from the buffer memory
  and whose S2MM channel writes the core's ``m_axis`` into it;
* ``buffer``: a :class:`mulfree.host.zynq.DmaBuffer` over a NumPy array with a fake physical
  base.

So ``ZynqBackend(board.core_window, board.dma_window, board.buffer, manifest=...)`` runs the
driver's exact register sequences against the simulated core. Every access is recorded in
:attr:`EmulatedBoard.accesses` as ``(window, "r" | "w", offset, value)``, ``window`` being
``"core"`` or ``"dma"``.

Time. The simulated clock runs only when the driver polls: each read of a DMASR or of the
core's STATUS runs it for up to ``cycles_per_poll`` cycles (stopping early when the polled
condition can have changed: the MM2S data drained, the S2MM packet complete, ``irq`` high);
register accesses take the few cycles of their AXI4-Lite handshakes.
"""

import numpy as np

from ..host.zynq import (DMA_REGS, DMACR_BITS, DMASR_BITS, DmaBuffer, ZynqConfig)


__all__ = ["EmulatedBoard", "EmulatedCoreWindow", "AxiDmaModel", "DmaModelError"]


class DmaModelError(AssertionError):
    """The driver used the DMA model in a way PG021 leaves undefined (a driver bug): a length
    written while the channel is halted or busy, a write to a read-only register."""


def _check_offset(offset, size, label):
    if not isinstance(offset, (int, np.integer)) or isinstance(offset, bool) \
            or offset % 4 or not 0 <= offset < size:
        raise ValueError(f"offset must be a multiple of 4 in [0, {size:#x}) of {label}, "
                         f"not {offset!r}")
    return int(offset)


def _check_value(offset, value, label):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) \
            or not 0 <= value <= 0xFFFF_FFFF:
        raise ValueError(f"value must be an integer in [0, 0xffffffff], not {value!r} (write "
                         f"to {offset:#x} of {label})")
    return int(value)


class EmulatedCoreWindow:
    """The core's register window on the emulated board (``read32`` / ``write32``).

    A read of ``STATUS`` first runs the clock (up to ``cycles_per_poll`` cycles, until ``irq``).
    Responses other than OKAY are appended to :attr:`EmulatedBoard.bus_errors`; the read data
    (0 for SLVERR) is returned as the bus gives it.
    """

    def __init__(self, board, size, status_offset):
        self._board = board
        self.size = size
        self.label = "the emulated core window"
        self.lock_id = None             # nothing to lock: the runtime takes no lock file
        self._status = status_offset

    def read32(self, offset):
        offset = _check_offset(offset, self.size, self.label)
        if offset == self._status:
            self._board.advance(("irq",))
        data, resp = self._board.sim.axil_read(offset)
        self._board._record("core", "r", offset, data, resp)
        return data

    def write32(self, offset, value):
        offset = _check_offset(offset, self.size, self.label)
        value = _check_value(offset, value, self.label)
        resp = self._board.sim.axil_write(offset, value)
        self._board._record("core", "w", offset, value, resp)

    def close(self):
        """Nothing to release (the board owns the simulated core)."""


class _Channel:
    """State of one DMA channel."""

    def __init__(self, name, sg):
        self.name = name
        self.sg = sg
        self.reset()

    def reset(self):
        self.dmacr = 0              # RS, IOC_IrqEn, Dly_IrqEn, Err_IrqEn as written
        self.halted = True
        self.idle = False           # 0 before the first transfer in simple mode (PG021)
        self.errors = 0             # DMAIntErr / DMASlvErr / DMADecErr bits
        self.irqs = 0               # IOC_Irq / Dly_Irq / Err_Irq bits (W1C)
        self.addr = 0
        self.addr_msb = 0
        self.length = 0
        self.busy = False
        self.target = None          # S2MM: (buffer offset, bytes)

    @property
    def dmasr(self):
        return (self.halted << DMASR_BITS["Halted"] | self.idle << DMASR_BITS["Idle"]
                | self.sg << DMASR_BITS["SGIncld"] | self.errors | self.irqs)

    def fail(self, error_bit):
        """An error: the channel halts (RS cleared), Err_Irq is raised."""
        self.errors |= 1 << DMASR_BITS[error_bit]
        self.irqs |= 1 << DMASR_BITS["Err_Irq"]
        self.dmacr &= ~(1 << DMACR_BITS["RS"])
        self.halted, self.idle, self.busy, self.target = True, False, False, None

    def complete(self):
        self.busy, self.idle, self.target = False, True, None
        self.irqs |= 1 << DMASR_BITS["IOC_Irq"]


_DMACR_WRITABLE = (1 << DMACR_BITS["RS"] | 1 << DMACR_BITS["Reset"]
                   | 1 << DMACR_BITS["IOC_IrqEn"] | 1 << 13 | 1 << DMACR_BITS["Err_IrqEn"]
                   | 0xFFFF_0000)      # Dly_IrqEn, IRQThreshold, IRQDelay (kept, unused)
_DMASR_W1C = (1 << DMASR_BITS["IOC_Irq"] | 1 << DMASR_BITS["Dly_Irq"]
              | 1 << DMASR_BITS["Err_Irq"])
_REG_NAMES = {offset: name for name, offset in DMA_REGS.items()}


class AxiDmaModel:
    """A register-level model of a Xilinx AXI DMA (PG021) in simple mode, over a SimCore.

    Behaviour, per channel (``MM2S``, ``S2MM``):

    * After reset every register is 0 and the channel is halted (DMASR.Halted = 1, Idle = 0).
      Writing DMACR.Reset (of either channel) resets both; DMACR reads with Reset = 1 for the
      next ``reset_reads`` reads, then 0. The reset drops the data the MM2S channel had not
      delivered and stops S2MM taking beats.
    * DMACR.RS = 1 runs the channel (Halted = 0); RS = 0 halts it.
    * Writing LENGTH starts a transfer (Idle = 0). Refused with an error bit, the channel
      halting (RS cleared, Halted = 1, Err_Irq): a length of 0 or wider than
      ``length_bits`` (DMAIntErr; the real register would drop the high bits), an address
      range outside the buffer (DMADecErr). The address is SA/DA (plus the _MSB register).
    * MM2S pushes the bytes into the core's ``s_axis`` as one packet (``tlast`` on the last
      beat; a partial last beat is padded with zeros, the core has no ``tkeep``) and
      completes when the core has taken every beat.
    * S2MM takes ``m_axis`` beats and completes at ``tlast``: the bytes go to the buffer at
      DA and S2MM_LENGTH reads back the bytes received. A packet longer than the length
      written is DMAIntErr (only the length's bytes are written).
    * Completion sets Idle and IOC_Irq; IOC_Irq, Dly_Irq and Err_Irq are write-1-to-clear.
    * ``sg=True`` makes DMASR.SGIncld read 1 (a scatter-gather build, for the driver's check).

    Writing LENGTH while the channel is halted or busy raises :class:`DmaModelError`.
    """

    def __init__(self, board, *, length_bits=26, sg=False, size=0x1_0000, reset_reads=1):
        self._board = board
        self.size = size
        self.length_bits = length_bits
        self.label = "the emulated AXI DMA window"
        self.reset_reads = reset_reads
        self.channels = {"MM2S": _Channel("MM2S", bool(sg)), "S2MM": _Channel("S2MM", bool(sg))}
        self._resetting = 0

    # Register access

    def read32(self, offset):
        offset = _check_offset(offset, self.size, self.label)
        name = _REG_NAMES.get(offset)
        if name is not None and name.endswith("DMASR"):
            ch = self.channels[name[:4]]
            until = None
            if ch.busy:
                until = ("input_empty",) if ch.name == "MM2S" else ("sink_done",)
            self._board.advance(until)
        value = self._value(name)
        self._board._record("dma", "r", offset, value)
        return value

    def _value(self, name):
        if name is None:
            return 0
        ch = self.channels[name[:4]]
        reg = name[5:]
        if reg == "DMACR":
            value = ch.dmacr
            if self._resetting:
                self._resetting -= 1
                value |= 1 << DMACR_BITS["Reset"]
            return value
        if reg == "DMASR":
            return ch.dmasr
        if reg in ("SA", "DA"):
            return ch.addr
        if reg.endswith("MSB"):
            return ch.addr_msb
        return ch.length                                        # LENGTH

    def write32(self, offset, value):
        offset = _check_offset(offset, self.size, self.label)
        value = _check_value(offset, value, self.label)
        self._board._record("dma", "w", offset, value)
        name = _REG_NAMES.get(offset)
        if name is None:
            return
        ch = self.channels[name[:4]]
        reg = name[5:]
        if reg == "DMACR":
            if value >> DMACR_BITS["Reset"] & 1:
                self._reset()
                return
            ch.dmacr = value & _DMACR_WRITABLE & ~(1 << DMACR_BITS["Reset"])
            if value >> DMACR_BITS["RS"] & 1:
                if not ch.errors:
                    ch.halted = False
            else:
                ch.halted, ch.idle = True, False
        elif reg == "DMASR":
            ch.irqs &= ~(value & _DMASR_W1C)
        elif reg in ("SA", "DA"):
            ch.addr = value
        elif reg.endswith("MSB"):
            ch.addr_msb = value
        else:
            self._start(ch, value)

    def close(self):
        """Nothing to release."""

    # Behaviour

    def _reset(self):
        sim = self._board.sim
        for ch in self.channels.values():
            ch.reset()
        sim.clear_input()
        sim.disarm_sink()
        sim.pop()
        self._resetting = self.reset_reads

    def _start(self, ch, nbytes):
        if ch.halted:
            raise DmaModelError(f"{ch.name}_LENGTH written while the channel is halted "
                                f"(DMACR.RS = 0 or after an error): PG021 starts no transfer")
        if ch.busy:
            raise DmaModelError(f"{ch.name}_LENGTH written while a transfer of {ch.length} "
                                f"bytes is in progress")
        ch.length = nbytes
        ch.idle = False
        if nbytes == 0 or nbytes >> self.length_bits:
            ch.fail("DMAIntErr")
            return
        board = self._board
        start = (ch.addr_msb << 32 | ch.addr) - board.buffer.phys_addr
        if start < 0 or start + nbytes > board.buffer.size:
            ch.fail("DMADecErr")
            return
        bb = board.sim.beat_bytes
        ch.busy = True
        if ch.name == "MM2S":
            beats = -(-nbytes // bb)
            data = np.zeros(beats * bb, dtype=np.uint8)
            data[:nbytes] = board.memory[start:start + nbytes]
            last = np.zeros(beats, dtype=bool)
            last[-1] = True
            board.sim.push(data.reshape(beats, bb), last)
        else:
            ch.target = (start, nbytes)
            # One beat more than fits: a longer packet shows as that extra beat.
            board.sim.arm_sink(nbytes // bb + 1)

    def update(self):
        """Complete the transfers the simulated core has finished (called after each run)."""
        sim = self._board.sim
        mm2s, s2mm = self.channels["MM2S"], self.channels["S2MM"]
        if mm2s.busy and sim.in_pending() == 0:
            mm2s.complete()
        if s2mm.busy and not sim.sink_armed():
            data, last = sim.pop()
            start, nbytes = s2mm.target
            flat = data.reshape(-1)
            got = min(flat.size, nbytes)
            self._board.memory[start:start + got] = flat[:got]
            if flat.size > nbytes or not (last.size and last[-1]):
                s2mm.fail("DMAIntErr")
            else:
                s2mm.length = int(flat.size)
                s2mm.complete()


class EmulatedBoard:
    """The simulated core with an AXI DMA model and a DMA buffer, as a Zynq board shows them.

    Parameters
    ----------
    sim_core : mulfree.sim.board.SimCore
        The simulated core (its manifest gives the register map and the stream width). The
        board does not close it.
    buffer_size : int
        Bytes of the DMA buffer.
    phys_base : int
        The buffer's fake physical address.
    cycles_per_poll : int
        Clock cycles one poll of a status register may run.
    dma_length_bits : int
        Width of the model's length register.
    sg : bool
        Model a scatter-gather build (DMASR.SGIncld = 1).

    Attributes
    ----------
    core_window : EmulatedCoreWindow
    dma_window : AxiDmaModel
    buffer : mulfree.host.zynq.DmaBuffer
    memory : 1-D uint8 array
        The buffer's bytes (``buffer.array``).
    accesses : list of (str, str, int, int)
        Every register access: ``(window, "r" | "w", offset, value)``.
    bus_errors : list of (str, str, int, int)
        Core accesses answered with a response other than OKAY: ``(window, "r" | "w",
        offset, resp)``.
    """

    def __init__(self, sim_core, *, buffer_size=1 << 20, phys_base=0x1F00_0000,
                 cycles_per_poll=2000, dma_length_bits=26, sg=False):
        if not isinstance(cycles_per_poll, int) or cycles_per_poll < 1:
            raise ValueError(f"cycles_per_poll must be a positive integer, not "
                             f"{cycles_per_poll!r}")
        if not isinstance(buffer_size, int) or buffer_size < 256:
            raise ValueError(f"buffer_size must be an integer >= 256, not {buffer_size!r}")
        self.sim = sim_core
        self.manifest = sim_core.manifest
        self.cycles_per_poll = cycles_per_poll
        self.accesses = []
        self.bus_errors = []
        regs = self.manifest["registers"]
        status = next(r["offset"] for r in regs["registers"] if r["name"] == "STATUS")
        self.core_window = EmulatedCoreWindow(self, 1 << int(regs["addr_width"]), status)
        self.dma_window = AxiDmaModel(self, length_bits=dma_length_bits, sg=sg,
                                      size=ZynqConfig().dma_size)
        self.memory = np.zeros(buffer_size, dtype=np.uint8)
        self.buffer = DmaBuffer(self.memory, phys_base)

    def advance(self, until=None):
        """Run the clock for up to ``cycles_per_poll`` cycles (until ``until`` holds), then let
        the DMA model see what the core did. Returns the cycles run."""
        cycles, _ = self.sim.run(self.cycles_per_poll, until=until)
        self.dma_window.update()
        return cycles

    def _record(self, window, rw, offset, value, resp=0):
        self.accesses.append((window, rw, offset, value))
        if resp:
            self.bus_errors.append((window, rw, offset, resp))

    def clear_log(self):
        """Forget the recorded accesses and bus errors."""
        self.accesses.clear()
        self.bus_errors.clear()
