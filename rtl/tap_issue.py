"""The issue unit's walk of a taps run (interface 2.4), its stage S0.

A taps run (``flags.depthwise | flags.taps``) reads, per output tile ``nt``, every padded pixel
``(py, px)``, ``py < Hp = eh + kernel_h``, ``px < Wp = ew + kernel_w``, once, in raster order:
the vector ``(iy, ix) = (py - pad_h, px - pad_w)`` of tile ``nt`` (0 outside the map), at
``iy*row + ix*CT + nt``. A read *emits* (completes an output pixel) when ``py >= kernel_h - 1``,
``px >= kernel_w - 1`` and both are on the stride grid from there
(:mod:`mulfree.params.tap_walk`, the specification). No multiplier and no modulo: the address
is a running pointer (``CT`` per column, ``row`` per row, from a tile base that steps by 1), and
the stride phases are two down-counters, reloaded with ``kernel - 1`` at a row's (a tile's)
start and with ``stride - 1`` after each emitting column (row).

The issue unit takes a read with ``read`` (one per cycle at most); every output describes the
read S0 offers now.
"""

from amaranth.hdl import Signal, Module, Mux
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..params.core_config import CoreConfig
from .layer_setup import desc_layout, sizes_layout


__all__ = ["TapWalk"]


class TapWalk(wiring.Component):
    """S0 of a taps run: the read pointer, its coordinates, and when it emits.

    Attributes
    ----------
    go : In(1)
        Pulse: start a taps run with ``desc``, ``sizes`` and ``corner`` (held for the run).
    corner : In(addr_shape)
        Address of the padded map's corner ``(-pad_h, -pad_w)`` of tile 0.
    read : In(1)
        The issue unit takes the read offered now.
    active : Out(1)
        A read is offered (the run has reads left).
    px : Out(16)
        Its padded column (the tap window's line address).
    iy, ix, addr : Out
        Its map coordinates (negative or past the map: padding) and buffer address.
    emit : Out(1)
        It completes an output pixel.
    emitted : Out(1)
        An earlier read of the same tile emitted (the emit is not the pass's first).
    tile_end, run_end : Out(1)
        It is its tile's (the run's) last read, which always emits.
    nt : Out(16)
        Its output tile.
    zero_from : Out(range(cols + 1))
        First lane of the tile beyond ``out_c``.
    """

    def __init__(self, cfg: CoreConfig, addr_shape, coord_shape):
        self._cfg = cfg
        C = cfg.engine.cols
        super().__init__({
            "go": In(1),
            "desc": In(desc_layout()),
            "sizes": In(sizes_layout()),
            "corner": In(addr_shape),
            "read": In(1),
            "active": Out(1),
            "px": Out(16),
            "iy": Out(coord_shape),
            "ix": Out(coord_shape),
            "addr": Out(addr_shape),
            "emit": Out(1),
            "emitted": Out(1),
            "tile_end": Out(1),
            "run_end": Out(1),
            "nt": Out(16),
            "zero_from": Out(range(C + 1)),
        })

    def elaborate(self, platform):
        C = self._cfg.engine.cols
        m = Module()
        d, sz = self.desc, self.sizes
        py = Signal(16)
        ycount, xcount = Signal(8), Signal(8)   # rows (columns) to the next emitting one
        rowaddr, base = Signal.like(self.addr), Signal.like(self.addr)
        out_left = Signal(17)                   # out_c - nt*C
        end_col = self.px == sz.ew + d.kernel_w - 1
        end_row = py == sz.eh + d.kernel_h - 1
        last_nt = self.nt == sz.nt - 1
        top, left = (-d.pad_h).as_signed(), (-d.pad_w).as_signed()
        m.d.comb += [
            self.emit.eq((ycount == 0) & (xcount == 0)),
            self.tile_end.eq(end_row & end_col),
            self.run_end.eq(end_row & end_col & last_nt),
            self.zero_from.eq(Mux(out_left < C, out_left, C)),
        ]

        with m.If(self.go):
            m.d.sync += [
                self.active.eq(1), self.nt.eq(0), out_left.eq(d.out_c), py.eq(0),
                self.px.eq(0), self.iy.eq(top), self.ix.eq(left), ycount.eq(d.kernel_h - 1),
                xcount.eq(d.kernel_w - 1), self.emitted.eq(0), base.eq(self.corner),
                rowaddr.eq(self.corner), self.addr.eq(self.corner),
            ]
        with m.Elif(self.read):
            with m.If(self.emit):
                m.d.sync += self.emitted.eq(1)
            with m.If(~end_col):
                m.d.sync += [self.px.eq(self.px + 1), self.ix.eq(self.ix + 1),
                             self.addr.eq(self.addr + sz.ct),
                             xcount.eq(Mux(xcount == 0, d.stride_w - 1, xcount - 1))]
            with m.Else():
                m.d.sync += [self.px.eq(0), self.ix.eq(left), xcount.eq(d.kernel_w - 1)]
                with m.If(~end_row):
                    m.d.sync += [py.eq(py + 1), self.iy.eq(self.iy + 1),
                                 rowaddr.eq(rowaddr + sz.row), self.addr.eq(rowaddr + sz.row),
                                 ycount.eq(Mux(ycount == 0, d.stride_h - 1, ycount - 1))]
                with m.Else():
                    # The tile's last read: the next tile restarts at the corner, one
                    # channel tile on.
                    m.d.sync += [py.eq(0), self.iy.eq(top), ycount.eq(d.kernel_h - 1),
                                 self.emitted.eq(0), base.eq(base + 1),
                                 rowaddr.eq(base + 1), self.addr.eq(base + 1),
                                 self.nt.eq(self.nt + 1), out_left.eq(out_left - C)]
                    with m.If(last_nt):
                        m.d.sync += self.active.eq(0)
        return m
