"""Control and status registers of the accelerator core, and their AXI4-Lite slave.

Registers are small description objects (:class:`Field`, :class:`Register`) collected by a
:class:`RegisterMap` builder that assigns their byte offsets, in the manner of amaranth-soc's
CSR registers (copied, not depended on). The same map drives the RTL
(:class:`AxiLiteRegisters`), the manifest's ``registers`` section, the C header and the
register table of ``docs/interface.md``: an offset or a reset value is written down once.

Field access kinds:

``RO``
    Read-only. Either a constant (``const=``: identity and parameters) or a value the core
    drives (an ``In`` port of :class:`AxiLiteRegisters`).
``RW``
    Read-write storage with a reset value and an allowed range; an ``Out`` port.
``W1S``
    Write 1 to pulse: a one-cycle ``Out`` pulse; reads as 0.
``W1C``
    Sticky flag set by the hardware (an ``In`` set strobe), cleared by writing 1.

A 64-bit counter (:meth:`RegisterMap.add_counter`) is a ``_LO``/``_HI`` pair of RO registers and
an increment input; reading ``_LO`` latches the high half, which a read of ``_HI`` returns.
"""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


__all__ = [
    "ACCESS", "RESP_OKAY", "RESP_SLVERR", "REG_ERRORS", "Field", "Register", "Counter",
    "RegisterMap", "AxiLiteSignature", "AxiLiteRegisters",
]

ACCESS = ("RO", "RW", "W1S", "W1C")
WRITABLE = ("RW", "W1S", "W1C")
RESP_OKAY = 0
RESP_SLVERR = 2

#: Codes of ``ERROR.reg_code``: why a write was ignored. 0 means no error. Listed in the order
#: they are checked; the first that applies is reported.
REG_ERRORS = {
    "UNMAPPED": (1, "write to an address with no register"),
    "STROBE": (2, "write with wstrb not 0b1111 (registers are written as whole 32-bit words)"),
    "READ_ONLY": (3, "write to a register that has no writable field"),
    "RESERVED": (4, "a 1 written to a reserved bit (a bit in no field)"),
    "RANGE": (5, "a value outside a RW field's allowed range"),
    "BUSY": (6, "CONTROL.start written while STATUS.busy is set"),
}


class Field:
    """A bit field of a register.

    Parameters
    ----------
    name : str
        Lower-case identifier, unique within its register.
    offset : int
        Lowest bit of the field.
    width : int
        Bits, ``offset + width <= 32``.
    access : str
        ``"RO"``, ``"RW"``, ``"W1S"`` or ``"W1C"`` (see the module's docstring).
    reset : int
        Value after reset (``RW``, ``W1C``); the value of a constant ``RO`` field.
    const : int or None
        ``RO`` only: the field is this constant rather than a value the core drives.
    allowed : (int, int) or None
        ``RW`` only: the inclusive range a write may set; ``None`` allows every value.
    meaning : str
        One sentence for the manifest and the documentation.
    """

    def __init__(self, name, offset, width, access, *, reset=0, const=None, allowed=None,
                 meaning=""):
        if not (isinstance(name, str) and name.isidentifier() and name == name.lower()):
            raise ValueError(f"field name must be a lower-case identifier, not {name!r}")
        if access not in ACCESS:
            raise ValueError(f"access must be one of {', '.join(ACCESS)}, not {access!r}")
        if not (0 <= offset and 1 <= width and offset + width <= 32):
            raise ValueError(f"field {name}: bits [{offset}, {offset + width}) must lie in "
                             f"[0, 32)")
        if const is not None:
            if access != "RO":
                raise ValueError(f"field {name}: only RO fields can be constants, not {access}")
            reset = const
        if allowed is not None:
            if access != "RW":
                raise ValueError(f"field {name}: only RW fields have an allowed range")
            lo, hi = allowed
            if not 0 <= lo <= hi < (1 << width):
                raise ValueError(f"field {name}: allowed range {allowed!r} does not fit "
                                 f"{width} bits")
        if not 0 <= reset < (1 << width):
            raise ValueError(f"field {name}: reset value {reset!r} does not fit {width} bits")
        if allowed is not None and access == "RW" and not allowed[0] <= reset <= allowed[1]:
            raise ValueError(f"field {name}: reset value {reset!r} outside {allowed!r}")
        self.name = name
        self.offset = offset
        self.width = width
        self.access = access
        self.reset = reset
        self.const = const
        self.allowed = allowed
        self.meaning = meaning

    @property
    def mask(self):
        return ((1 << self.width) - 1) << self.offset

    @property
    def allowed_range(self):
        """Inclusive range of values a write may set (RW), or ``None`` for other kinds."""
        if self.access != "RW":
            return None
        return self.allowed if self.allowed is not None else (0, (1 << self.width) - 1)

    def __repr__(self):
        return f"Field({self.name!r}, [{self.offset + self.width - 1}:{self.offset}], " \
               f"{self.access})"


class Register:
    """A 32-bit register: a name and non-overlapping fields. The map assigns its offset.

    Parameters
    ----------
    name : str
        Upper-case identifier, unique in the map.
    fields : list of Field
    meaning : str
    """

    def __init__(self, name, fields, meaning=""):
        if not (isinstance(name, str) and name.isidentifier() and name == name.upper()):
            raise ValueError(f"register name must be an upper-case identifier, not {name!r}")
        used = 0
        for f in fields:
            if used & f.mask:
                raise ValueError(f"register {name}: field {f.name} overlaps another field")
            used |= f.mask
        if len({f.name for f in fields}) != len(fields):
            raise ValueError(f"register {name}: field names must be unique")
        self.name = name
        self.fields = list(fields)
        self.meaning = meaning
        self.offset = None          # byte offset, set by RegisterMap.add
        self.counter = None         # (Counter, "lo" | "hi") for counter halves

    @property
    def access(self):
        """``"RO"`` if no field is writable, else the writable kinds joined by ``/``."""
        kinds = [a for a in WRITABLE if any(f.access == a for f in self.fields)]
        return "/".join(kinds) if kinds else "RO"

    @property
    def writable(self):
        return any(f.access in WRITABLE for f in self.fields)

    @property
    def reserved_mask(self):
        """Bits in no field: they read as 0 and must be written as 0."""
        used = 0
        for f in self.fields:
            used |= f.mask
        return ~used & 0xFFFF_FFFF

    @property
    def reset(self):
        """The value read after reset, with the core's inputs at 0."""
        return sum(f.reset << f.offset for f in self.fields if f.access in ("RO", "RW", "W1C"))

    def field(self, name):
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name!r}")

    def __repr__(self):
        return f"Register({self.name!r}, offset={self.offset!r}, {self.access})"


class Counter:
    """A 64-bit counter read as two registers, ``<NAME>_LO`` and ``<NAME>_HI``.

    The core adds ``inc`` (``inc_width`` bits, unsigned) every cycle; it wraps modulo 2^64.
    """

    def __init__(self, name, inc_width, meaning=""):
        self.name = name
        self.inc_width = inc_width
        self.meaning = meaning
        self.lo = Register(f"{name}_LO", [Field("value", 0, 32, "RO",
                                                meaning=f"bits [31:0] of {name}; reading "
                                                        f"latches bits [63:32]")],
                           meaning=f"{meaning} (low half; read first)")
        self.hi = Register(f"{name}_HI", [Field("value", 0, 32, "RO",
                                                meaning=f"bits [63:32] of {name} latched "
                                                        f"by the last read of {name}_LO")],
                           meaning=f"{meaning} (high half, as latched by reading {name}_LO)")
        self.lo.counter = (self, "lo")
        self.hi.counter = (self, "hi")

    @property
    def port_name(self):
        return f"{self.name.lower()}_inc"


class RegisterMap:
    """Builder of the register map: registers in address order, 4-byte aligned.

    Parameters
    ----------
    addr_width : int
        Width of the AXI4-Lite byte address; the map must fit ``2**addr_width`` bytes.
    """

    def __init__(self, addr_width):
        self.addr_width = addr_width
        self.registers = []
        self.counters = []
        self._next = 0

    def add(self, register, *, offset=None):
        """Place ``register`` at byte ``offset`` (default: after the last one); return it."""
        if offset is None:
            offset = self._next
        if offset % 4 or offset < self._next:
            raise ValueError(f"register {register.name}: offset {offset:#x} must be 4-byte "
                             f"aligned and after {self._next - 4:#x}")
        if offset + 4 > (1 << self.addr_width):
            raise ValueError(f"register {register.name} at {offset:#x} does not fit a "
                             f"{self.addr_width}-bit address")
        if any(r.name == register.name for r in self.registers):
            raise ValueError(f"register name {register.name} is used twice")
        register.offset = offset
        self.registers.append(register)
        self._next = offset + 4
        return register

    def add_counter(self, name, inc_width, meaning="", *, offset=None):
        """Add a 64-bit :class:`Counter` as two consecutive registers; return it."""
        counter = Counter(name, inc_width, meaning)
        self.add(counter.lo, offset=offset)
        self.add(counter.hi)
        self.counters.append(counter)
        return counter

    @property
    def size(self):
        """Bytes spanned by the map (the end of its last register)."""
        return self._next

    def __getitem__(self, name):
        for r in self.registers:
            if r.name == name:
                return r
        raise KeyError(f"no register {name!r}")

    def __iter__(self):
        return iter(self.registers)

    def field_ports(self):
        """``(register, field, port name, direction)`` of every field with a port.

        Constant fields and the fields :class:`AxiLiteRegisters` computes itself have none.
        """
        ports = []
        for reg in self.registers:
            if reg.counter is not None:
                continue
            for f in reg.fields:
                if (reg.name, f.name) in _INTERNAL or f.const is not None:
                    continue
                direction = "out" if f.access in ("RW", "W1S") else "in"
                ports.append((reg, f, f"{reg.name.lower()}_{f.name}", direction))
        return ports


# Fields the register block computes itself (the register-error bookkeeping and the summary
# error bit), so no port exists for them.
_INTERNAL = {
    ("STATUS", "error"), ("STATUS", "reg_error"), ("ERROR", "reg_code"), ("ERROR_ADDR", "addr"),
}


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
