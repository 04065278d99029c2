"""The stream loader: parses the host's packets and writes them into the core's buffers.

Packets (``docs/interface.md``, "Stream formats"): a header beat ``{count, type}``, then
``count`` vectors, each ``ceil(V / S)`` beats for a ``V``-bit vector of the packet's type;
``tlast`` on the packet's last beat. Each data type has a running pointer — the number of its
vectors loaded so far — which is both the buffer's write address and the watermark the
controller reads behind. The loader takes one beat per cycle and never waits on the buffers,
so a host may send a layer's tensors in any order without a deadlock.

SHORTCUT vectors come in the shortcut's source layout; :class:`ShortcutAligner` writes them
into the shortcut buffer aligned to the output (stride and channel offset). Its only wait is
its own: with a channel offset that is no multiple of ``cols``, a kept source pixel's last
aligned vector takes one more write cycle, in which the next SHORTCUT vector's last beat is
held back (``sc_hold``); it never depends on the engine, so the host still cannot deadlock
the core. Cost: a carry register and a lane shifter of ``cols * act_bits`` bits, a few
counters, no per-lane write enables (the buffer keeps one write and one read port).
"""

from amaranth.hdl import Signal, Module, Cat, Const, Mux, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..params.core_config import CoreConfig, PACKET_TYPES
from .layer_setup import SIZE_BITS, error_code, desc_layout
from .postproc import param_layout


__all__ = ["StreamLoader", "ShortcutAligner", "beat_layout", "DATA_TYPES"]

#: The data packet types, in the order of the loader's pointers.
DATA_TYPES = ("PARAMS", "SHIFT", "WEIGHTS", "ACTS", "SHORTCUT")


def beat_layout(cfg: CoreConfig):
    return data.StructLayout({"data": unsigned(cfg.stream_width), "last": unsigned(1)})


class StreamLoader(wiring.Component):
    """Packet parser and buffer writer.

    Attributes
    ----------
    s : In(stream.Signature(beat_layout(cfg)))
        The host's beats.
    accept : In(1)
        Take beats (the run is loading); while low ``s.ready`` is 0.
    expect_desc : In(1)
        The next packet must be the descriptor; afterwards a descriptor is ``DESC_IN_RUN``.
    sc_hold : In(1)
        No SHORTCUT vector may complete in this cycle (:class:`ShortcutAligner` is writing):
        the beat that would complete one waits (``s.ready`` low).
    totals : In
        Vectors of each data type the layer has (``<type>_total``), valid after setup.
    desc, desc_valid : Out
        The descriptor vector and its one-cycle strobe.
    error : Out(8)
        The first protocol error's code (0: none), from a register: it appears the cycle
        after the beat that caused it and stays until reset; from then on ``s.ready`` is 0.
    <type>_ptr : Out(SIZE_BITS)
        Vectors of each type loaded; the write address of the next one.
    act_we/act_data, w_we/w_data, sh_we/sh_data, sc_we/sc_data : Out
        Buffer writes at the type's pointer (``sc``: the shortcut buffer).
    p : Out(stream.Signature(param_layout(...)))
        Post-processing table writes (always accepted by the table).
    """

    def __init__(self, cfg: CoreConfig, post_groups):
        self._cfg = cfg
        e = cfg.engine
        self._post_groups = post_groups
        vb = cfg.vector_bits
        members = {
            "s": In(stream.Signature(beat_layout(cfg))),
            "accept": In(1),
            "expect_desc": In(1),
            "sc_hold": In(1),
            "desc": Out(desc_layout()),
            "desc_valid": Out(1),
            "error": Out(8),
            "act_we": Out(1), "act_data": Out(vb["ACTS"]),
            "w_we": Out(1), "w_data": Out(vb["WEIGHTS"]),
            "sh_we": Out(1), "sh_data": Out(vb["SHIFT"]),
            "sc_we": Out(1), "sc_data": Out(vb["SHORTCUT"]),
            "p": Out(stream.Signature(param_layout(cfg.post_engine, e.cols, post_groups))),
        }
        for t in DATA_TYPES:
            members[f"{t.lower()}_total"] = In(SIZE_BITS)
            members[f"{t.lower()}_ptr"] = Out(SIZE_BITS)
        super().__init__(members)

    def elaborate(self, platform):
        cfg, e = self._cfg, self._cfg.engine
        S = cfg.stream_width
        m = Module()
        vb = cfg.vector_bits
        beats = {t: cfg.beats(vb[t]) for t in vb}
        max_beats = max(beats[t] for t in ("DESC",) + DATA_TYPES)

        typ = Signal(4)
        remaining = Signal(24)          # vectors left in the packet, counting the current one
        last_vec = Signal()             # remaining == 1, registered with remaining (timing)
        beat = Signal(range(max(max_beats, 2)))
        buf = Signal(max_beats * S)     # the beats of the current vector received so far

        s = self.s
        take = Signal()
        held = Signal()                 # a SHORTCUT vector's last beat waits for the aligner
        # The error is registered (timing: it gates the shell's registers); once it is
        # reported the loader takes nothing more.
        err = Signal.like(self.error, name="error_now")
        with m.If((err != 0) & (self.error == 0)):
            m.d.sync += self.error.eq(err)
        m.d.comb += [s.ready.eq(self.accept & ~held & (self.error == 0)),
                     take.eq(s.valid & s.ready)]

        # The current vector with this beat in place: complete on the vector's last beat.
        vec = Signal(max_beats * S)
        m.d.comb += vec.eq(buf)
        with m.Switch(beat):
            for k in range(max_beats):
                with m.Case(k):
                    m.d.comb += vec.word_select(k, S).eq(s.payload.data)

        n_beats = Signal(range(max_beats + 1))
        with m.Switch(typ):
            for t in ("DESC",) + DATA_TYPES:
                with m.Case(PACKET_TYPES[t]):
                    m.d.comb += n_beats.eq(beats[t])
        # The vector's last beat (beat == n_beats - 1) and the packet's single-beat vectors,
        # registered with beat (timing: they gate every store).
        vec_end = Signal()
        single = Signal()
        pkt_end = Signal()
        m.d.comb += pkt_end.eq(vec_end & last_vec)

        ptrs = {t: getattr(self, f"{t.lower()}_ptr") for t in DATA_TYPES}
        totals = {t: getattr(self, f"{t.lower()}_total") for t in DATA_TYPES}

        hdr = s.payload.data
        h_type, h_count = hdr[0:4], hdr[8:32]
        h_reserved = hdr[4:8].any()
        if S > 32:
            h_reserved = h_reserved | hdr[32:].any()

        # Post-processing table writes: channel = group * cols + lane, counted as it goes.
        p_group = Signal.like(self.p.payload.group)
        p_lane = Signal.like(self.p.payload.lane)
        pv = vec[:vb["PARAMS"]]
        aw = cfg.acc_width              # PARAMS: the post-processing engine's widths
        m.d.comb += [
            self.p.payload.group.eq(p_group), self.p.payload.lane.eq(p_lane),
            self.p.payload.bias.eq(pv[:aw]), self.p.payload.shift.eq(pv[aw:-1]),
            self.p.payload.relu.eq(pv[-1]),
            self.act_data.eq(vec[:vb["ACTS"]]), self.w_data.eq(vec[:vb["WEIGHTS"]]),
            self.sh_data.eq(vec[:vb["SHIFT"]]), self.sc_data.eq(vec[:vb["SHORTCUT"]]),
            self.desc.eq(vec[:vb["DESC"]]),
        ]
        # A SHIFT vector is checked on its last beat, where ``beat`` is known: its words are the
        # beats held in ``buf`` and this beat's data, with no multiplexer on ``beat`` (timing:
        # the check feeds ``error``, which gates the shell's registers).
        n_sh = beats["SHIFT"]
        bad_shift = self._bad_shift(Cat(buf[:(n_sh - 1) * S], s.payload.data))

        with m.FSM():
            with m.State("HEADER"):
                with m.If(take):
                    one = Cat(h_type == PACKET_TYPES[t] for t in ("DESC",) + DATA_TYPES
                              if beats[t] == 1)
                    m.d.sync += [typ.eq(h_type), remaining.eq(h_count), beat.eq(0),
                                 last_vec.eq(h_count == 1), vec_end.eq(one.any()),
                                 single.eq(one.any())]
                    known = Cat(h_type == PACKET_TYPES[t] for t in DATA_TYPES).any()
                    is_desc = h_type == PACKET_TYPES["DESC"]
                    room = Const(0)
                    for t in DATA_TYPES:
                        room = room | ((h_type == PACKET_TYPES[t])
                                       & (ptrs[t] + h_count > totals[t]))
                    with m.If(h_reserved | (h_count == 0) | ~(known | is_desc)
                              | (is_desc & (h_count != 1))
                              | (self.expect_desc & ~is_desc)):
                        m.d.comb += err.eq(error_code("PACKET"))
                    with m.Elif(is_desc & ~self.expect_desc):
                        m.d.comb += err.eq(error_code("DESC_IN_RUN"))
                    with m.Elif(room):
                        m.d.comb += err.eq(error_code("OVERRUN"))
                    with m.Elif(s.payload.last):
                        m.d.comb += err.eq(error_code("SHORT"))
                    with m.Else():
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += held.eq(self.sc_hold & (typ == PACKET_TYPES["SHORTCUT"]) & vec_end)
                with m.If(take):
                    with m.If(s.payload.last & ~pkt_end):
                        m.d.comb += err.eq(error_code("SHORT"))
                    with m.Elif(pkt_end & ~s.payload.last):
                        m.d.comb += err.eq(error_code("LONG"))
                    with m.Elif((typ == PACKET_TYPES["SHIFT"]) & vec_end & bad_shift):
                        m.d.comb += err.eq(error_code("SHIFT_VALUE"))
                    with m.Else():
                        m.d.sync += buf.eq(vec)
                        with m.If(vec_end):
                            m.d.sync += [beat.eq(0), remaining.eq(remaining - 1),
                                         last_vec.eq(remaining == 2), vec_end.eq(single)]
                            self._store(m, typ, ptrs, p_group, p_lane)
                            with m.If(pkt_end):
                                m.next = "HEADER"
                        with m.Else():
                            m.d.sync += [beat.eq(beat + 1), vec_end.eq(beat == n_beats - 2)]
        return m

    def _bad_shift(self, vec):
        """A SHIFT vector holds an entry with ``dy`` or ``dx`` outside ``[-reach, reach]``
        (``cfg.shift_reach``; each half of an entry is signed). Reach 1: the 2-bit pattern
        0b10 (-2) is the only one refused."""
        cfg = self._cfg
        eb, half, reach = cfg.shift_entry_bits, cfg.shift_entry_bits // 2, cfg.shift_reach
        if reach == 1:
            return Cat(vec[eb * j + 2 * h + 1] & ~vec[eb * j + 2 * h]
                       for j in range(cfg.engine.rows) for h in range(2)).any()
        values = [vec[eb * j + half * h:eb * j + half * (h + 1)].as_signed()
                  for j in range(cfg.engine.rows) for h in range(2)]
        return Cat((v > reach) | (v < -reach) for v in values).any()

    def _store(self, m, typ, ptrs, p_group, p_lane):
        """Write the completed vector of type ``typ`` and advance its pointer."""
        cols = self._cfg.engine.cols
        with m.Switch(typ):
            with m.Case(PACKET_TYPES["DESC"]):
                m.d.comb += self.desc_valid.eq(1)
            for t, strobe in (("ACTS", self.act_we), ("WEIGHTS", self.w_we),
                              ("SHIFT", self.sh_we), ("SHORTCUT", self.sc_we),
                              ("PARAMS", self.p.valid)):
                with m.Case(PACKET_TYPES[t]):
                    m.d.comb += strobe.eq(1)
                    m.d.sync += ptrs[t].eq(ptrs[t] + 1)
                    if t == "PARAMS":
                        with m.If(p_lane == cols - 1):
                            m.d.sync += [p_lane.eq(0), p_group.eq(p_group + 1)]
                        with m.Else():
                            m.d.sync += p_lane.eq(p_lane + 1)


def _lane_shift(lo, hi, r, lanes, a):
    """The ``lanes`` lanes ``[lanes - r, 2*lanes - r)`` of ``Cat(lo, hi)`` (``a`` bits each):
    lane ``l < r`` is ``lo``'s lane ``lanes - r + l``, lane ``l >= r`` is ``hi``'s ``l - r``.
    A logarithmic shifter of constant lane shifts, one stage per bit of ``r``."""
    x = Cat(lo, hi)
    width = 2 * lanes * a
    for k in range(len(r)):
        x = Mux(r[k], x.shift_left((1 << k) * a)[:width], x)
    return x[lanes * a:width]


class ShortcutAligner(wiring.Component):
    """Writes the SHORTCUT vectors, sent in the shortcut's source layout, into the shortcut
    buffer aligned to the output: the word at ``pixel * NT + nt`` holds output channels
    ``[nt*C, nt*C + C)`` of output pixel ``pixel`` (``docs/interface.md``, SHORTCUT).

    Source vector ``(y*SW + x)*NTS + t`` holds source channels ``[t*C, t*C + C)`` of source
    pixel ``(y, x)``; output channel ``c`` at ``(oy, ox)`` adds source channel ``c - off`` of
    source pixel ``(oy*s, ox*s)`` (:func:`~mulfree.params.layer_golden.shortcut_source`).
    With ``off = q*C + r`` the source vector ``t`` of a kept pixel (``y, x`` multiples of
    ``s``; the others are dropped) fills lanes ``[r, C)`` of aligned tile ``q + t``, whose
    lanes ``[0, r)`` come from source vector ``t - 1`` (a carry register; zeros for ``t =
    0``): each aligned word is written whole, in the cycle its second half arrives, so the
    buffer needs no per-lane write enables. With ``r > 0`` the pixel's last tile ``q + NTS``
    holds only the carry: it is written in the next cycle, in which the loader holds the
    next SHORTCUT vector back (``hold``; one cycle per kept pixel). Source lanes at or beyond
    ``short_c`` are written as 0 whatever the host sent; tiles outside ``[lo_tile,
    hi_tile]`` are never written (the reader zeroes them), nor tiles at or beyond ``NT``.

    Attributes
    ----------
    short_c, short_off, short_stride, out_w : In
        The descriptor's fields (static during a run).
    nt, nts : In(SIZE_BITS)
        Output tiles and source tiles (setup's sizes).
    we, data : In
        The loader's SHORTCUT vector writes (``sc_we``, ``sc_data``).
    hold : Out(1)
        The loader must not complete a SHORTCUT vector (``StreamLoader.sc_hold``).
    wr_en, wr_addr, wr_data : Out
        The buffer's write port.
    done : Out
        Aligned vectors complete: every address below it holds its final value (the
        watermark, a whole output pixel at a time).
    lo_tile, hi_tile : Out(17)
        The aligned tiles a pixel's writes cover, ``q`` and ``q + NTS - 1 + (r > 0)``.
    """

    def __init__(self, cfg: CoreConfig):
        self._cfg = cfg
        e = cfg.engine
        depth = max(cfg.shortcut_vectors, 1)
        self._abits = max(1, (depth - 1).bit_length())
        super().__init__({
            "short_c": In(16), "short_off": In(8), "short_stride": In(4), "out_w": In(16),
            "nt": In(SIZE_BITS), "nts": In(SIZE_BITS),
            "we": In(1), "data": In(e.cols * e.act_bits),
            "hold": Out(1),
            "wr_en": Out(1), "wr_addr": Out(self._abits), "wr_data": Out(e.cols * e.act_bits),
            "done": Out(self._abits + 1),
            "lo_tile": Out(17), "hi_tile": Out(17),
        })

    def elaborate(self, platform):
        e = self._cfg.engine
        C, a = e.cols, e.act_bits
        m = Module()

        # off = q*C + r, registered (the descriptor is static long before SHORTCUT data).
        rbits = max(1, (C - 1).bit_length())
        q, r = Signal(8), Signal(rbits)
        if C & (C - 1) == 0:
            m.d.sync += [q.eq(self.short_off >> (C.bit_length() - 1)),
                         r.eq(self.short_off & (C - 1))]
        else:
            # A table of the 256 offsets: no divider.
            with m.Switch(self.short_off):
                for v in range(256):
                    with m.Case(v):
                        m.d.sync += [q.eq(v // C), r.eq(v % C)]
        nt, nts = self.nt[:17], self.nts[:17]
        m.d.sync += [self.lo_tile.eq(q), self.hi_tile.eq(q + nts - 1 + (r != 0))]

        # Where the next source vector belongs.
        t = Signal(17)                  # its source tile
        rem = Signal(17)                # source channels from tile t on: short_c - t*C
        px, py = Signal(4), Signal(4)   # source column and row modulo the stride
        ox = Signal(16)                 # output column of the source column
        base = Signal(self._abits + 1)  # aligned address of the output pixel: pixel * NT
        carry = Signal(C * a)           # the previous source vector of the pixel, else 0
        pending = Signal()              # the pixel's last tile, from the carry alone
        p_addr = Signal(self._abits)
        m.d.comb += [self.hold.eq(pending), self.done.eq(base)]

        # Source lanes at or beyond short_c read 0 (all of them in the carry's own write).
        left = Mux(pending, 0, Mux(t == 0, self.short_c, rem))
        src = Cat(Mux(left > l, self.data.word_select(l, a), 0) for l in range(C))
        n = q + t                       # the aligned tile whose lanes [r, C) this vector fills
        keep = (px == 0) & (py == 0)
        last_tile = t == nts - 1
        split = (r != 0) & (n + 1 < nt)     # the pixel's last tile holds only the carry
        m.d.comb += [
            self.wr_data.eq(_lane_shift(carry, src, r, C, a)),
            self.wr_en.eq(pending | (self.we & keep & (n < nt))),
            self.wr_addr.eq(Mux(pending, p_addr, base + n)),
        ]
        with m.If(pending):
            m.d.sync += [pending.eq(0), base.eq(base + nt), carry.eq(0)]
        with m.If(self.we):
            # The carry is 0 for a pixel's first tile: cleared after its last (a reset of the
            # register, no multiplexer), unless the carry-only write still needs it.
            m.d.sync += carry.eq(Mux(last_tile & ~(keep & split), 0, src))
            with m.If(last_tile):
                m.d.sync += t.eq(0)
                with m.If(keep):
                    with m.If(split):
                        m.d.sync += [pending.eq(1), p_addr.eq(base + n + 1)]
                    with m.Else():
                        m.d.sync += base.eq(base + nt)
                # The next source pixel: column, then row, modulo the stride.
                with m.If(px == self.short_stride - 1):
                    m.d.sync += px.eq(0)
                    with m.If(ox == self.out_w - 1):
                        m.d.sync += [ox.eq(0),
                                     py.eq(Mux(py == self.short_stride - 1, 0, py + 1))]
                    with m.Else():
                        m.d.sync += ox.eq(ox + 1)
                with m.Else():
                    m.d.sync += px.eq(px + 1)
            with m.Else():
                m.d.sync += [t.eq(t + 1), rem.eq(left - C)]
        return m
