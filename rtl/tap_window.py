"""The tap window of taps runs (interface 2.4): line buffers and a register window.

A taps run (``params/tap_walk.py`` is the specification) reads every input vector of an
output tile once, one per cycle, in padded raster order; the tap window turns that stream into
the ``kernel_h*kernel_w`` taps of each output pixel. It keeps ``side - 1`` line buffers of
``tap_line`` vectors (line ``k`` holds, at column ``px``, the vector ``k + 1`` rows above the
one being read) and a ``side x side`` register window whose bottom-right corner is the vector
just read. A read at column ``px``::

    column = (line[side-2][px], ..., line[0][px], read)      top first
    line[k][px] <- line[k-1][px] (k >= 1),  line[0][px] <- read
    window <- window shifted left by one column, ``column`` entering on the right

and the taps are the window's bottom-right ``kernel_h x kernel_w`` corner: tap row ``r =
ky*kernel_w + kx`` of column ``c`` is channel ``c`` of window cell ``(side - kernel_h + ky,
side - kernel_w + kx)``; rows from ``kernel_h*kernel_w`` on are 0.

Timing (the issue unit's S1 and S2): ``rd_px`` addresses the line buffers one cycle before
the read's data arrives on ``data`` with ``enter``; ``taps`` is the corner *with* that read
entered (combinational from the registers and ``data``), so the issue unit writes it into its
FIFO in the same cycle. The line buffers' read ports are transparent: with a one-column padded
line (``Wp == 1``) the next read's line data is the one being written.
"""

from amaranth.hdl import Signal, Module, Cat, unsigned
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..params.core_config import CoreConfig


__all__ = ["TapWindow"]


class TapWindow(wiring.Component):
    """Line buffers and the ``side x side`` register window of a core with ``cfg.taps``.

    Attributes
    ----------
    kernel_h, kernel_w : In(8)
        The run's kernel (``1 .. side``; setup refuses larger ones), held for the run.
    rd_px : In(range(tap_line))
        Column of the next read (S1): the line buffers' read address.
    rd_en : In(1)
        ``rd_px`` is a read's (S1 valid).
    enter : In(1)
        ``data`` is a read's vector (S2 valid): enter it into the window and the lines.
    wr_px : In(range(tap_line))
        Column of the read entering (``rd_px`` one cycle before).
    data : In(cols * act_bits)
        The read vector (0 for padding).
    taps : Out(cols * taps * act_bits)
        Tap row ``r`` of column ``c`` at bits ``[(c*taps + r)*act_bits, ...)``, the read on
        ``data`` entered.
    """

    def __init__(self, cfg: CoreConfig):
        if not cfg.taps:
            raise ValueError(f"taps must be at least 4 for a tap window, not {cfg.taps!r}")
        self._cfg = cfg
        e = cfg.engine
        super().__init__({
            "kernel_h": In(8),
            "kernel_w": In(8),
            "rd_px": In(range(cfg.tap_line)),
            "rd_en": In(1),
            "enter": In(1),
            "wr_px": In(range(cfg.tap_line)),
            "data": In(e.cols * e.act_bits),
            "taps": Out(e.cols * cfg.taps * e.act_bits),
        })

    def elaborate(self, platform):
        cfg, e = self._cfg, self._cfg.engine
        side, C, a, T = cfg.tap_side, e.cols, e.act_bits, cfg.taps
        m = Module()
        # Line k's vector at column wr_px, read one cycle earlier (k + 1 rows above the read).
        above = []
        for k in range(side - 1):
            mem = Memory(shape=unsigned(C * a), depth=cfg.tap_line, init=[])
            m.submodules[f"line_{k}"] = mem
            wr = mem.write_port()
            rd = mem.read_port(transparent_for=(wr,))
            m.d.comb += [rd.addr.eq(self.rd_px), rd.en.eq(self.rd_en),
                         wr.addr.eq(self.wr_px), wr.en.eq(self.enter),
                         wr.data.eq(self.data if k == 0 else above[k - 1])]
            above.append(rd.data)
        # window[y][x]: row y (0 the top), column x (side - 1 the newest).
        window = [[Signal(C * a, name=f"window_{y}_{x}", reset_less=True) for x in range(side)]
                  for y in range(side)]
        column = [above[side - 2 - y] for y in range(side - 1)] + [self.data]
        nxt = [[window[y][x + 1] for x in range(side - 1)] + [column[y]] for y in range(side)]
        with m.If(self.enter):
            m.d.sync += [window[y][x].eq(nxt[y][x]) for y in range(side) for x in range(side)]

        # Tap row r of a kh x kw kernel: cell (side - kh + r // kw, side - kw + r % kw).
        rows = [Signal(C * a, name=f"tap_{r}") for r in range(T)]
        with m.Switch(Cat(self.kernel_w[:4], self.kernel_h[:4])):
            for kh in range(1, side + 1):
                for kw in range(1, side + 1):
                    with m.Case(kw | kh << 4):
                        for r in range(kh * kw):
                            y, x = side - kh + r // kw, side - kw + r % kw
                            m.d.comb += rows[r].eq(nxt[y][x])
        m.d.comb += self.taps.eq(Cat(rows[r].word_select(c, a) for c in range(C)
                                     for r in range(T)))
        return m
