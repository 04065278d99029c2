"""The address-shift pointer unit: a feature-map buffer whose reads shift by address arithmetic.

Two write streams fill one memory; read commands stream a whole map out of it, one element per
cycle, shifted on the way by the address the generator computes, never by moving data:

* ``shift``   — Shift (CVPR 2018): ``(2h+1)^2`` direction groups, zero fill at the border;
* ``address`` — AddressNet: left, right, up, down by ``±1``/``±W`` in the linear memory;
* ``channel`` — AddressNet's channel shift: start at channel ``r``, wrap to channel 0;
* ``table``   — per-channel ``(dy, dx)`` from a table the host writes, zero fill;
* ``plain``   — no shift. Shortcut concatenation is a plain read of two adjacent maps.

Organisation (see ``docs/shift_unit.md``)::

    cmd ─▶ [prep: check, base + (r mod C)*H*W, serial shift-add] ─▶ [address generator]
                                                                            │ c, y, x, q
    w0 ─┐                                                 src = q + dy*W + dx, zero flag
        ├─[round robin]─▶ write port ┐                                      │
    w1 ─┘                            ▼                                      ▼
                               [ memory C*H*W words ] ◀───────── read port (1 cycle)
                                                                            │
    tab ─▶ [range check] ─▶ shift table (dy, dx per channel)          out (zero → 0)

Two read orders: channel-major ``(c, y, x)`` and pixel-major ``(y, x, c)`` (every channel of a
pixel, then the next pixel: the input vectors of a 1x1 convolution).

No multiplier: the generator keeps a running pointer ``q`` (channel-major: ``+1`` per element,
back to ``base`` when the rotation wraps; pixel-major: ``+H*W`` per channel, back to the
pixel's pointer when the rotation wraps, and two pixel pointers step ``+1`` per pixel); ``dy * W`` (``|dy| <= 15``) is a sum of at most four shifted ``W``;
the one real product of a command, ``(r mod C) * H * W``, is a fixed-length serial
shift-and-add that runs while the previous command's map is being read. Every command, whatever
its mode, spends the same cycles: a shifted read costs exactly what a plain read costs.
"""

from amaranth.hdl import Signal, Module, Mux, Cat, Const, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..params.config import signed_width, unsigned_width
from ..params.shift_config import ShiftUnitConfig, MODES, ORDERS
from .shift_layouts import (command_layout, write_layout, table_layout, output_layout,
                            status_layout)
from ..params.shift_golden import ADDRESS_DIRECTIONS


__all__ = ["ShiftUnit", "shift_unit_signature", "times_by_shift_add"]


def shift_unit_signature(cfg: ShiftUnitConfig):
    """The signature of :class:`ShiftUnit` for ``cfg``."""
    return wiring.Signature({
        "w0": In(stream.Signature(write_layout(cfg))),
        "w1": In(stream.Signature(write_layout(cfg))),
        "cmd": In(stream.Signature(command_layout(cfg))),
        "tab": In(stream.Signature(table_layout(cfg))),
        "out": Out(stream.Signature(output_layout(cfg))),
        "status": Out(status_layout()),
        "status_clear": In(1),
    })


def times_by_shift_add(value, operand, bits):
    """``value * operand`` for a signed ``value`` with ``|value| < 2^bits``, without a multiplier.

    The sum of ``operand << j`` over the set bits ``j`` of ``|value|``, negated for a negative
    ``value``: ``bits`` adders at most.
    """
    magnitude = Mux(value < 0, -value, value)
    total = 0
    for j in range(bits):
        total = total + Mux(magnitude[j], operand << j, 0)
    return Mux(value < 0, -total, total)


def _at_most(value, limit):
    """``value <= limit``, or a constant 1 where the field cannot exceed ``limit``.

    Emitting the constant comparison would be correct, but lint tools flag it.
    """
    if (1 << len(value)) - 1 <= limit:
        return Const(1)
    return value <= limit


class ShiftUnit(wiring.Component):
    """A ``depth``-word feature-map buffer with shifting reads.

    Attributes
    ----------
    w0, w1 : In(stream.Signature(write_layout(cfg)))
        Write streams, served round-robin (one element per cycle in total). A beat with
        ``seek`` writes at ``addr`` and moves the port's pointer there; without, it writes at
        the pointer; either way the pointer then moves one word on. An address outside the
        buffer is not written and sets ``status.write_error``.
    cmd : In(stream.Signature(command_layout(cfg)))
        Read commands. A command with a field out of range is consumed, produces nothing and
        sets ``status.cmd_error``.
    tab : In(stream.Signature(table_layout(cfg)))
        Shift-table writes, always ready. An entry out of range is refused (the table keeps
        its old entry) and sets ``status.table_error``.
    out : Out(stream.Signature(output_layout(cfg)))
        The elements of each command's map in ``(c, y, x)`` order (``order = channel_major``)
        or ``(y, x, c)`` order (``pixel_major``), ``last`` on the final one.
    status : Out(status_layout())
        Sticky error flags.
    status_clear : In(1)
        Clears the flags (an error in the same cycle still sets its flag).
    """

    def __init__(self, cfg: ShiftUnitConfig):
        self._cfg = cfg
        super().__init__(shift_unit_signature(cfg))

    @property
    def cfg(self):
        return self._cfg

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        aw = cfg.addr_width
        pw = aw + 1                     # pointers: base + C*H*W < 2 * 2^aw
        ow = cfg.offset_width
        set_table_error = Signal()
        set_cmd_error = Signal()
        set_write_error = Signal()

        # Status: a refusal in the clearing cycle still shows.
        for name, flag in (("table_error", set_table_error), ("cmd_error", set_cmd_error),
                           ("write_error", set_write_error)):
            reg = getattr(self.status, name)
            with m.If(flag):
                m.d.sync += reg.eq(1)
            with m.Elif(self.status_clear):
                m.d.sync += reg.eq(0)

        # At least two words: a one-word memory has a zero-width address, which Verilog cannot
        # declare. The spare word is never written (addresses >= depth are refused).
        m.submodules.buffer = buffer = Memory(shape=unsigned(cfg.act_bits),
                                              depth=max(cfg.depth, 2), init=[])
        wp = buffer.write_port()
        rp = buffer.read_port()

        # Writes ---------------------------------------------------------------------------
        ports = [self.w0, self.w1]
        pointers = [Signal(pw, name=f"w{i}_pointer") for i in range(2)]
        targets = [Signal(pw, name=f"w{i}_target") for i in range(2)]
        grants = [Signal(name=f"w{i}_grant") for i in range(2)]
        turn = Signal()                 # which port wins when both are valid
        m.d.comb += [
            grants[0].eq(self.w0.valid & (~self.w1.valid | (turn == 0))),
            grants[1].eq(self.w1.valid & ~grants[0]),
        ]
        for i, port in enumerate(ports):
            m.d.comb += [
                port.ready.eq(grants[i]),
                targets[i].eq(Mux(port.payload.seek, port.payload.addr, pointers[i])),
            ]
            with m.If(grants[i]):
                m.d.sync += turn.eq(1 - i)
                with m.If(targets[i] < cfg.depth):
                    m.d.sync += pointers[i].eq(targets[i] + 1)
                with m.Else():
                    # Stay out of range: later sequential beats are refused too, never wrapped.
                    m.d.sync += pointers[i].eq(targets[i])
                    m.d.comb += set_write_error.eq(1)
        chosen = Mux(grants[1], 1, 0)
        m.d.comb += [
            wp.addr.eq(Mux(chosen, targets[1], targets[0])),
            wp.data.eq(Mux(chosen, self.w1.payload.data, self.w0.payload.data)),
            wp.en.eq((grants[0] & (targets[0] < cfg.depth)) |
                     (grants[1] & (targets[1] < cfg.depth))),
        ]

        # Shift table ----------------------------------------------------------------------
        R = cfg.max_shift
        tw = max(ow, 1)
        m.submodules.table = table = Memory(shape=unsigned(2 * tw), depth=max(cfg.channels, 2),
                                            init=[])
        tab_wp = table.write_port()
        tab_rp = table.read_port(domain="comb")
        t_dy = self.tab.payload.dy.as_signed()
        t_dx = self.tab.payload.dx.as_signed()
        t_ok = ((self.tab.payload.channel < cfg.channels) &
                (t_dy >= -R) & (t_dy <= R) & (t_dx >= -R) & (t_dx <= R))
        store_dy = Signal(signed(tw))
        store_dx = Signal(signed(tw))
        m.d.comb += [
            store_dy.eq(t_dy), store_dx.eq(t_dx),       # exact: in range when written
            self.tab.ready.eq(1),
            tab_wp.addr.eq(self.tab.payload.channel),
            tab_wp.data.eq(Cat(store_dy, store_dx)),
            tab_wp.en.eq(self.tab.valid & t_ok),
            set_table_error.eq(self.tab.valid & ~t_ok),
        ]

        # Command preparation --------------------------------------------------------------
        # One command waits here while its start pointer is formed; the previous one is read
        # meanwhile. Every command takes prep_cycles, so every mode costs the same.
        c = self.cmd.payload
        cmd_ok = ((c.mode <= max(MODES.values())) &
                  (c.channels >= 1) & _at_most(c.channels, cfg.channels) &
                  (c.height >= 1) & _at_most(c.height, cfg.height) &
                  (c.width >= 1) & _at_most(c.width, cfg.width) &
                  (c.rotate <= c.channels) & _at_most(c.radius, cfg.max_radius))
        pend = Signal(command_layout(cfg))
        pend_valid = Signal()
        pend_done = Signal()
        step = Signal(range(cfg.prep_cycles + 1))
        mcand = Signal(pw)
        mplier = Signal(max(cfg.width_width, cfg.rotate_width))
        acc = Signal(pw)
        pend_hw = Signal(pw)            # H * W, the pixel-major channel stride
        take_pend = Signal()
        m.d.comb += self.cmd.ready.eq(~pend_valid)
        with m.If(self.cmd.valid & self.cmd.ready):
            with m.If(cmd_ok):
                # Only the channel mode rotates; r = C is the identity, as r = 0.
                rot = Mux((c.mode == MODES["channel"]) & (c.rotate != c.channels), c.rotate, 0)
                m.d.sync += [
                    pend.eq(c), pend.rotate.eq(rot), pend_valid.eq(1), pend_done.eq(0),
                    step.eq(0), mcand.eq(c.height), mplier.eq(c.width), acc.eq(0),
                ]
            with m.Else():
                m.d.comb += set_cmd_error.eq(1)
        with m.Elif(pend_valid & ~pend_done):
            # Serial shift-and-add: H * W over the bits of W, then base + r * (H * W) over the
            # bits of r.
            partial = Signal(pw)
            m.d.comb += partial.eq(acc + Mux(mplier[0], mcand, 0))
            m.d.sync += [step.eq(step + 1), mcand.eq(mcand << 1), mplier.eq(mplier >> 1),
                         acc.eq(partial)]
            with m.If(step == cfg.width_width - 1):
                m.d.sync += [mcand.eq(partial), mplier.eq(pend.rotate), acc.eq(pend.base),
                             pend_hw.eq(partial)]
            with m.If(step == cfg.prep_cycles - 1):
                m.d.sync += pend_done.eq(1)
        with m.If(take_pend):
            m.d.sync += [pend_valid.eq(0), pend_done.eq(0)]

        # Address generator ----------------------------------------------------------------
        mode = Signal(3)
        active = Signal()
        base = Signal(aw)
        n_c = Signal(cfg.count_width)
        n_h = Signal(cfg.height_width)
        n_w = Signal(cfg.width_width)
        radius = Signal(cfg.radius_width)
        group = Signal(cfg.count_width)
        ch = Signal(cfg.rotate_width)           # output channel
        src_ch = Signal(cfg.rotate_width)       # source channel (differs under rotation)
        y = Signal(unsigned_width(cfg.height - 1))
        x = Signal(unsigned_width(cfg.width - 1))
        q = Signal(pw)                          # address of (src_ch, y, x), unshifted
        # Pixel-major order: the channel stride H*W, the rotation, and two pixel pointers,
        # base + y*W + x and that plus r*H*W (where the pixel's first source channel lies).
        pixel_major = Signal()
        hw = Signal(pw)
        rot = Signal(cfg.rotate_width)
        p0 = Signal(pw)
        pr = Signal(pw)
        # Group walk of the shift and address modes.
        g_count = Signal(cfg.count_width)
        centre = Signal()
        s_dy = Signal(signed(ow))
        s_dx = Signal(signed(ow))
        a_idx = Signal(2)
        # Table entry of the current channel.
        tdy = Signal(signed(tw))
        tdx = Signal(signed(tw))

        dy = Signal(signed(ow))
        dx = Signal(signed(ow))
        a_dy = Mux(a_idx[1], Mux(a_idx[0], ADDRESS_DIRECTIONS[3][1][0],
                                 ADDRESS_DIRECTIONS[2][1][0]),
                   Mux(a_idx[0], ADDRESS_DIRECTIONS[1][1][0], ADDRESS_DIRECTIONS[0][1][0]))
        a_dx = Mux(a_idx[1], Mux(a_idx[0], ADDRESS_DIRECTIONS[3][1][1],
                                 ADDRESS_DIRECTIONS[2][1][1]),
                   Mux(a_idx[0], ADDRESS_DIRECTIONS[1][1][1], ADDRESS_DIRECTIONS[0][1][1]))
        with m.Switch(mode):
            with m.Case(MODES["shift"]):
                m.d.comb += [dy.eq(Mux(centre, 0, s_dy)), dx.eq(Mux(centre, 0, s_dx))]
            with m.Case(MODES["address"]):
                m.d.comb += [dy.eq(Mux(centre, 0, a_dy)), dx.eq(Mux(centre, 0, a_dx))]
            with m.Case(MODES["table"]):
                m.d.comb += [dy.eq(tdy), dx.eq(tdx)]
            with m.Default():
                m.d.comb += [dy.eq(0), dx.eq(0)]

        # src = q + dy*W + dx: the whole shift is this one addition.
        S = cfg.offset_range
        offset = Signal(signed(signed_width(-S * (cfg.width + 1), S * (cfg.width + 1))))
        src = Signal(signed(max(pw + 1, len(offset)) + 1))
        sy = Signal(signed(max(len(y), ow) + 2))
        sx = Signal(signed(max(len(x), ow) + 2))
        zero = Signal()
        m.d.comb += [
            offset.eq(times_by_shift_add(dy, n_w, unsigned_width(cfg.offset_range)) + dx),
            src.eq(q + offset),
            sy.eq(y + dy),
            sx.eq(x + dx),
        ]
        clipped = (sy < 0) | (sy >= n_h) | (sx < 0) | (sx >= n_w)
        zero_fill = (mode == MODES["shift"]) | (mode == MODES["table"])
        m.d.comb += zero.eq((src < 0) | (src >= cfg.depth) | (zero_fill & clipped))

        # Pipeline: the memory's read register is the one stage; it advances when the output
        # is free, so the output respects ready and nothing is read ahead.
        advance = Signal()
        issue = Signal()
        end_x = x == n_w - 1
        end_y = y == n_h - 1
        end_c = ch == n_c - 1
        last = end_x & end_y & end_c
        out_valid = Signal()
        out_zero = Signal()
        out_last = Signal()
        out_ch = Signal.like(ch)
        out_y = Signal.like(y)
        out_x = Signal.like(x)
        m.d.comb += [
            advance.eq(~out_valid | self.out.ready),
            issue.eq(active & advance),
            rp.addr.eq(src[:aw]),
            rp.en.eq(advance),
            take_pend.eq(pend_done & (~active | (issue & last))),
        ]
        with m.If(advance):
            m.d.sync += [out_valid.eq(issue), out_zero.eq(zero), out_last.eq(last),
                         out_ch.eq(ch), out_y.eq(y), out_x.eq(x)]
        m.d.comb += [
            self.out.valid.eq(out_valid),
            self.out.payload.data.eq(Mux(out_zero, 0, rp.data)),
            self.out.payload.last.eq(out_last),
            self.out.payload.channel.eq(out_ch),
            self.out.payload.y.eq(out_y),
            self.out.payload.x.eq(out_x),
        ]

        # The table entry of the channel that starts next.
        next_ch = Signal.like(ch)
        m.d.comb += [next_ch.eq(Mux(take_pend | (pixel_major & end_c), 0, ch + 1)),
                     tab_rp.addr.eq(next_ch)]
        entry_dy = tab_rp.data[:tw].as_signed()
        entry_dx = tab_rp.data[tw:].as_signed()

        def walk_next_channel():
            """The group walk's step from one channel to the next."""
            with m.If(~centre):
                with m.If(g_count == group - 1):
                    m.d.sync += g_count.eq(0)
                    # Shift: next direction in row-major order; after (h, h) the centre.
                    with m.If(s_dx == radius):
                        m.d.sync += s_dx.eq(-radius)
                        with m.If(s_dy == radius):
                            m.d.sync += centre.eq(mode == MODES["shift"])
                        with m.Else():
                            m.d.sync += s_dy.eq(s_dy + 1)
                    with m.Else():
                        m.d.sync += s_dx.eq(s_dx + 1)
                    # AddressNet: left, right, up, down, then the centre.
                    m.d.sync += a_idx.eq(a_idx + 1)
                    with m.If((mode == MODES["address"]) & (a_idx == 3)):
                        m.d.sync += centre.eq(1)
                with m.Else():
                    m.d.sync += g_count.eq(g_count + 1)

        def walk_start(h, g):
            """The group walk at channel 0, for radius ``h`` and group size ``g``."""
            return [g_count.eq(0), centre.eq(g == 0), s_dy.eq(-h), s_dx.eq(-h), a_idx.eq(0)]

        with m.If(issue & pixel_major):
            with m.If(~end_c):
                # Next channel of the same pixel: one channel stride on, or back to the
                # pixel's channel 0 when the rotation wraps.
                m.d.sync += [ch.eq(ch + 1), tdy.eq(entry_dy), tdx.eq(entry_dx)]
                with m.If(src_ch == n_c - 1):
                    m.d.sync += [src_ch.eq(0), q.eq(p0)]
                with m.Else():
                    m.d.sync += [src_ch.eq(src_ch + 1), q.eq(q + hw)]
                walk_next_channel()
            with m.Else():
                # Next pixel: channel 0 again, the pixel pointers one word on.
                m.d.sync += [ch.eq(0), src_ch.eq(rot), tdy.eq(entry_dy), tdx.eq(entry_dx),
                             p0.eq(p0 + 1), pr.eq(pr + 1), q.eq(pr + 1)]
                m.d.sync += walk_start(radius, group)
                with m.If(~end_x):
                    m.d.sync += x.eq(x + 1)
                with m.Else():
                    m.d.sync += [x.eq(0), y.eq(y + 1)]
        with m.Elif(issue):
            with m.If(~end_x):
                m.d.sync += [x.eq(x + 1), q.eq(q + 1)]
            with m.Elif(~end_y):
                m.d.sync += [x.eq(0), y.eq(y + 1), q.eq(q + 1)]
            with m.Else():
                # Next channel: the rotation wraps the source back to the map's base.
                m.d.sync += [x.eq(0), y.eq(0), ch.eq(ch + 1), tdy.eq(entry_dy),
                             tdx.eq(entry_dx)]
                with m.If(src_ch == n_c - 1):
                    m.d.sync += [src_ch.eq(0), q.eq(base)]
                with m.Else():
                    m.d.sync += [src_ch.eq(src_ch + 1), q.eq(q + 1)]
                walk_next_channel()
        with m.If(issue & last):
            m.d.sync += active.eq(0)

        with m.If(take_pend):
            m.d.sync += [
                active.eq(1), mode.eq(pend.mode), base.eq(pend.base),
                n_c.eq(pend.channels), n_h.eq(pend.height), n_w.eq(pend.width),
                radius.eq(pend.radius), group.eq(pend.group),
                ch.eq(0), src_ch.eq(pend.rotate), y.eq(0), x.eq(0), q.eq(acc),
                tdy.eq(entry_dy), tdx.eq(entry_dx),
                pixel_major.eq(pend.order == ORDERS["pixel_major"]), hw.eq(pend_hw),
                rot.eq(pend.rotate), p0.eq(pend.base), pr.eq(acc),
            ]
            m.d.sync += walk_start(pend.radius, pend.group)
        return m
