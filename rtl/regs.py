"""The AXI4-Lite slave of the core's control and status registers.

The registers themselves are described by :mod:`mulfree.params.regmap`; this is the RTL that
implements such a map.
"""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..params.regmap import RESP_OKAY, RESP_SLVERR, REG_ERRORS


__all__ = ["AxiLiteSignature", "AxiLiteRegisters"]


def AxiLiteSignature(addr_width):
    """AXI4-Lite with 32-bit data, seen from the master (``In(...)`` of it is a slave port).

    Member names are the AXI names without the channel prefix, so a slave port ``s_axil``
    appears in Verilog as ``s_axil__awaddr`` and so on (Amaranth's ``__`` separator).
    """
    return wiring.Signature({
        "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
        "wdata": Out(32), "wstrb": Out(4), "wvalid": Out(1), "wready": In(1),
        "bresp": In(2), "bvalid": In(1), "bready": Out(1),
        "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
        "rdata": In(32), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
    })


class AxiLiteRegisters(wiring.Component):
    """The AXI4-Lite slave of a :class:`RegisterMap`, with the core's side as plain ports.

    Ports: ``s_axil`` (AXI4-Lite slave); for every field with a port (see
    :meth:`RegisterMap.field_ports`) ``<register>_<field>`` — ``In`` for RO values and W1C set
    strobes, ``Out`` for RW values and W1S pulses; ``<counter>_inc`` per counter; ``irq``.

    Behaviour (``docs/interface.md`` is the normative text):

    * AW and W are each held in a one-entry buffer, so they may arrive in either order or
      together; the write happens once both are held and no B response is pending. One read
      and one write may be outstanding at a time.
    * A write that is ignored (see :data:`REG_ERRORS`) answers SLVERR and, if
      ``STATUS.reg_error`` is clear, sets it and records the code and the byte address; the
      first error is kept until ``reg_error`` is cleared or a soft reset. Any other write
      answers OKAY. A read of an unmapped address answers SLVERR with data 0.
    * ``CONTROL.soft_reset`` is accepted in every state. It pulses ``control_soft_reset`` and
      clears the W1C flags, the register-error record and the counters; RW fields keep their
      values.
    * ``CONTROL.start`` clears ``STATUS.done`` (a new run begins).
    * ``irq = STATUS.done & CONTROL.irq_enable``.

    Parameters
    ----------
    regmap : RegisterMap
    """

    def __init__(self, regmap):
        self._map = regmap
        members = {"s_axil": In(AxiLiteSignature(regmap.addr_width))}
        for reg, f, port, direction in regmap.field_ports():
            members[port] = (Out if direction == "out" else In)(f.width)
        for c in regmap.counters:
            members[c.port_name] = In(c.inc_width)
        members["irq"] = Out(1)
        super().__init__(members)

    @property
    def regmap(self):
        return self._map

    def elaborate(self, platform):
        m = Module()
        rmap = self._map
        bus = self.s_axil
        ports = {(reg.name, f.name): getattr(self, port)
                 for reg, f, port, _ in rmap.field_ports()}

        # Storage of every field that holds state.
        state = {}
        for reg in rmap:
            for f in reg.fields:
                if f.access in ("RW", "W1C"):
                    state[reg.name, f.name] = Signal(f.width, init=f.reset,
                                                     name=f"{reg.name.lower()}_{f.name}_q")
        pulses = {}
        counters = {c.name: Signal(64, name=f"{c.name.lower()}_count") for c in rmap.counters}
        shadows = {c.name: Signal(32, name=f"{c.name.lower()}_shadow") for c in rmap.counters}
        reg_error_code = Signal(8)
        reg_error_addr = Signal(rmap.addr_width)

        def has(reg, fld):
            try:
                rmap[reg].field(fld)
                return True
            except KeyError:
                return False

        # Values read back, field by field.
        def value(reg, f):
            key = (reg.name, f.name)
            if f.const is not None:
                return Const(f.const, f.width)
            if f.access == "W1S":
                return Const(0, f.width)
            if key in state:
                return state[key]
            # The record is kept until the next error after a clear; reads show it only while
            # the flag is set.
            flag = state.get(("STATUS", "reg_error"), Const(0, 1))
            if key == ("ERROR", "reg_code"):
                return Mux(flag, reg_error_code, 0)
            if key == ("ERROR_ADDR", "addr"):
                return Mux(flag, reg_error_addr, 0)
            if key == ("STATUS", "error"):
                core = ports.get(("ERROR", "core_code"))
                return Const(0, 1) if core is None else core.any()
            return ports[key]

        for (reg_name, f_name), sig in state.items():
            if (reg_name, f_name) in ports:
                if rmap[reg_name].field(f_name).access == "RW":
                    m.d.comb += ports[reg_name, f_name].eq(sig)

        def read_word(reg):
            word = 0
            for f in reg.fields:
                word = word | (value(reg, f).as_unsigned() << f.offset)
            return word

        if has("STATUS", "done") and has("CONTROL", "irq_enable"):
            m.d.comb += self.irq.eq(state["STATUS", "done"] & state["CONTROL", "irq_enable"])

        # Counters: the core's increments, every cycle (soft reset below has priority).
        for c in rmap.counters:
            m.d.sync += counters[c.name].eq(counters[c.name] + getattr(self, c.port_name))

        # W1C flags: the host's clear and the hardware's set combine in one update, the set
        # winning, so that an event in the cycle of a clear is not lost.
        clears = {}
        for (reg_name, f_name), sig in state.items():
            if rmap[reg_name].field(f_name).access == "W1C":
                clears[reg_name, f_name] = Signal(len(sig), name=f"{reg_name.lower()}_"
                                                                 f"{f_name}_clear")

        def hw_set_w1c():
            for key, clear in clears.items():
                sig = state[key]
                hw_set = ports[key] if key in ports else 0
                if key == ("STATUS", "reg_error"):
                    hw_set = do_write & (werr != 0)
                m.d.sync += sig.eq((sig & ~clear) | hw_set)

        # Write channel ---------------------------------------------------------------------
        aw_full = Signal()
        aw_addr = Signal(rmap.addr_width)
        w_full = Signal()
        w_data = Signal(32)
        w_strb = Signal(4)
        m.d.comb += [bus.awready.eq(~aw_full), bus.wready.eq(~w_full)]
        with m.If(bus.awvalid & bus.awready):
            m.d.sync += [aw_full.eq(1), aw_addr.eq(bus.awaddr)]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += [w_full.eq(1), w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)

        do_write = Signal()
        m.d.comb += do_write.eq(aw_full & w_full & ~bus.bvalid)
        werr = Signal(8)        # the code of an ignored write, 0 when the write applies
        busy = ports.get(("STATUS", "busy"), Const(0, 1))
        soft_reset = Signal()
        with m.Switch(aw_addr[2:]):
            for reg in rmap:
                with m.Case(reg.offset >> 2):
                    checks = [("STROBE", w_strb != 0b1111)]
                    # Only conditions that can vary: constant ones make Verilator warn about
                    # overlapping cases in the priority chain.
                    if reg.writable and reg.reserved_mask:
                        checks.append(("RESERVED", (w_data & reg.reserved_mask).any()))
                    for f in reg.fields:
                        if f.access == "RW":
                            lo, hi = f.allowed_range
                            v = w_data[f.offset:f.offset + f.width]
                            # Only the bounds that can fail: a full-range comparison is
                            # constant, and Verilator rightly warns about it.
                            if lo > 0:
                                checks.append(("RANGE", v < lo))
                            if hi < (1 << f.width) - 1:
                                checks.append(("RANGE", v > hi))
                    if reg.name == "CONTROL" and has("CONTROL", "start"):
                        start = w_data[reg.field("start").offset]
                        checks.append(("BUSY", start & busy))
                    first = True
                    for code_name, cond in checks:
                        cm = m.If if first else m.Elif
                        first = False
                        with cm(cond):
                            m.d.comb += werr.eq(REG_ERRORS[code_name][0])
                    with m.Else():
                        if not reg.writable:
                            m.d.comb += werr.eq(REG_ERRORS["READ_ONLY"][0])
                        with m.If(do_write):
                            self._apply(m, reg, w_data, state, clears, pulses, soft_reset)
            with m.Default():
                m.d.comb += werr.eq(REG_ERRORS["UNMAPPED"][0])

        with m.If(do_write):
            m.d.sync += [aw_full.eq(0), w_full.eq(0), bus.bvalid.eq(1),
                         bus.bresp.eq(Mux(werr != 0, RESP_SLVERR, RESP_OKAY))]
        for key, sig in pulses.items():
            m.d.comb += ports[key].eq(sig)

        # Read channel ----------------------------------------------------------------------
        m.d.comb += bus.arready.eq(~bus.rvalid)
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [bus.rvalid.eq(1), bus.rresp.eq(RESP_OKAY), bus.rdata.eq(0)]
            with m.Switch(bus.araddr[2:]):
                for reg in rmap:
                    with m.Case(reg.offset >> 2):
                        if reg.counter is not None:
                            c, half = reg.counter
                            if half == "lo":
                                m.d.sync += [bus.rdata.eq(counters[c.name][:32]),
                                             shadows[c.name].eq(counters[c.name][32:])]
                            else:
                                m.d.sync += bus.rdata.eq(shadows[c.name])
                        else:
                            m.d.sync += bus.rdata.eq(read_word(reg))
                with m.Default():
                    m.d.sync += bus.rresp.eq(RESP_SLVERR)

        # Register-error record: the first ignored write since the last clear.
        if has("STATUS", "reg_error"):
            flag = state["STATUS", "reg_error"]
            with m.If(do_write & (werr != 0) & ~flag):
                m.d.sync += [reg_error_code.eq(werr), reg_error_addr.eq(aw_addr)]

        hw_set_w1c()

        # Soft reset last: it wins over every other update of the state it clears.
        with m.If(soft_reset):
            for (reg_name, f_name), sig in state.items():
                if rmap[reg_name].field(f_name).access == "W1C":
                    m.d.sync += sig.eq(0)
            for c in rmap.counters:
                m.d.sync += [counters[c.name].eq(0), shadows[c.name].eq(0)]
        return m

    def _apply(self, m, reg, w_data, state, clears, pulses, soft_reset):
        """The effect of an accepted write of ``w_data`` to ``reg`` (inside ``If(do_write)``)."""
        for f in reg.fields:
            v = w_data[f.offset:f.offset + f.width]
            key = (reg.name, f.name)
            if f.access == "RW":
                m.d.sync += state[key].eq(v)
            elif f.access == "W1C":
                m.d.comb += clears[key].eq(v)
            elif f.access == "W1S":
                if key not in pulses:
                    pulses[key] = Signal(f.width, name=f"{reg.name.lower()}_{f.name}_pulse")
                m.d.comb += pulses[key].eq(v)
                if key == ("CONTROL", "soft_reset"):
                    m.d.comb += soft_reset.eq(v)
                if key == ("CONTROL", "start") and ("STATUS", "done") in state:
                    m.d.comb += clears["STATUS", "done"].eq(v)
