"""The stream loader: parses the host's packets and writes them into the core's buffers.

Packets (``docs/interface.md``, "Stream formats"): a header beat ``{count, type}``, then
``count`` vectors, each ``ceil(V / S)`` beats for a ``V``-bit vector of the packet's type;
``tlast`` on the packet's last beat. Each data type has a running pointer — the number of its
vectors loaded so far — which is both the buffer's write address and the watermark the
controller reads behind. The loader takes one beat per cycle and never waits on the buffers,
so a host may send a layer's tensors in any order without a deadlock.
"""

from amaranth.hdl import Signal, Module, Cat, Const, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..params.core_config import CoreConfig, PACKET_TYPES, SHIFT_ENTRY_BITS
from .layer_setup import SIZE_BITS, error_code, desc_layout
from .postproc import param_layout


__all__ = ["StreamLoader", "beat_layout", "DATA_TYPES"]

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
    totals : In
        Vectors of each data type the layer has (``<type>_total``), valid after setup.
    desc, desc_valid : Out
        The descriptor vector and its one-cycle strobe.
    error : Out(8)
        A protocol error's code, for one cycle (0: none).
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
            "desc": Out(desc_layout()),
            "desc_valid": Out(1),
            "error": Out(8),
            "act_we": Out(1), "act_data": Out(vb["ACTS"]),
            "w_we": Out(1), "w_data": Out(vb["WEIGHTS"]),
            "sh_we": Out(1), "sh_data": Out(vb["SHIFT"]),
            "sc_we": Out(1), "sc_data": Out(vb["SHORTCUT"]),
            "p": Out(stream.Signature(param_layout(e, e.cols, post_groups))),
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
        beat = Signal(range(max(max_beats, 2)))
        buf = Signal(max_beats * S)     # the beats of the current vector received so far

        s = self.s
        take = Signal()
        m.d.comb += [s.ready.eq(self.accept), take.eq(s.valid & s.ready)]

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
        vec_end = Signal()
        pkt_end = Signal()
        m.d.comb += [vec_end.eq(beat == n_beats - 1), pkt_end.eq(vec_end & (remaining == 1))]

        ptrs = {t: getattr(self, f"{t.lower()}_ptr") for t in DATA_TYPES}
        totals = {t: getattr(self, f"{t.lower()}_total") for t in DATA_TYPES}
        err = self.error

        hdr = s.payload.data
        h_type, h_count = hdr[0:4], hdr[8:32]
        h_reserved = hdr[4:8].any()
        if S > 32:
            h_reserved = h_reserved | hdr[32:].any()

        # Post-processing table writes: channel = group * cols + lane, counted as it goes.
        p_group = Signal.like(self.p.payload.group)
        p_lane = Signal.like(self.p.payload.lane)
        pv = vec[:vb["PARAMS"]]
        aw = e.acc_width
        m.d.comb += [
            self.p.payload.group.eq(p_group), self.p.payload.lane.eq(p_lane),
            self.p.payload.bias.eq(pv[:aw]), self.p.payload.shift.eq(pv[aw:-1]),
            self.p.payload.relu.eq(pv[-1]),
            self.act_data.eq(vec[:vb["ACTS"]]), self.w_data.eq(vec[:vb["WEIGHTS"]]),
            self.sh_data.eq(vec[:vb["SHIFT"]]), self.sc_data.eq(vec[:vb["SHORTCUT"]]),
            self.desc.eq(vec[:vb["DESC"]]),
        ]
        # A shift entry (dy, dx) in {-1, 0, 1}: the 2-bit pattern 0b10 (-2) is refused.
        bad_shift = Cat(vec[SHIFT_ENTRY_BITS * j + 2 * h + 1] & ~vec[SHIFT_ENTRY_BITS * j + 2 * h]
                        for j in range(e.rows) for h in range(2)).any()

        with m.FSM():
            with m.State("HEADER"):
                with m.If(take):
                    m.d.sync += [typ.eq(h_type), remaining.eq(h_count), beat.eq(0)]
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
                            m.d.sync += [beat.eq(0), remaining.eq(remaining - 1)]
                            self._store(m, typ, ptrs, p_group, p_lane)
                            with m.If(pkt_end):
                                m.next = "HEADER"
                        with m.Else():
                            m.d.sync += beat.eq(beat + 1)
        return m

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
