"""The control and status registers of the accelerator core, as data (no Amaranth).

Registers are small description objects (:class:`Field`, :class:`Register`) collected by a
:class:`RegisterMap` builder that assigns their byte offsets, in the manner of amaranth-soc's
CSR registers (copied, not depended on). The same map drives the RTL
(:class:`~mulfree.rtl.regs.AxiLiteRegisters`), the manifest's ``registers`` section, the C header and the
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


__all__ = [
    "ACCESS", "RESP_OKAY", "RESP_SLVERR", "REG_ERRORS", "Field", "Register", "Counter",
    "RegisterMap",
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


# Fields the register block computes itself (the register-error bookkeeping and the summary
# error bit), so no port exists for them.
_INTERNAL = {
    ("STATUS", "error"), ("STATUS", "reg_error"), ("ERROR", "reg_code"), ("ERROR_ADDR", "addr"),
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
