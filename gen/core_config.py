"""Configuration of the accelerator core: the compute engine, the AXI shell and its buffers.

One frozen :class:`CoreConfig` describes a core. Its register map (:attr:`CoreConfig.
register_map`) is derived from it and is the single source of the RTL register block, the
manifest's ``registers`` section, the C header and the table in ``docs/interface.md``.
"""

from dataclasses import dataclass, field
from functools import cached_property

from .config import ArrayConfig, ConfigError, PE_KINDS, ARCHS, unsigned_width, _check_int
from ..rtl.regs import Field, Register, RegisterMap


__all__ = ["CoreConfig", "CORE_MAGIC", "CORE_VERSION", "STREAM_WIDTHS", "CORE_LIMITS",
           "core_register_map"]

#: ``ID.magic``: ASCII "MULF", so a host can tell it is talking to a mulfree core at all.
CORE_MAGIC = 0x4D55_4C46
#: ``VERSION``: (major, minor) of the register interface. The major number changes when an
#: existing register or field changes meaning; the minor one when registers are added.
CORE_VERSION = (0, 1)
STREAM_WIDTHS = (32, 64, 128, 256, 512, 1024)
#: Allowed ranges of the integer parameters, inclusive.
CORE_LIMITS = {
    "fmap_words": (16, 1 << 20),
    "acc_entries": (1, 1 << 20),
    "weight_words": (1, 1 << 20),
    "axil_addr_width": (8, 32),
}


@dataclass(frozen=True)
class CoreConfig:
    """An accelerator core: one compute engine behind an AXI4-Lite / AXI4-Stream shell.

    Parameters
    ----------
    engine : ArrayConfig
        The compute engine (``arch="array"`` or ``"tree"``).
    stream_width : int
        ``tdata`` bits of the AXI4-Stream slave and master: 32, 64, 128, 256, 512 or 1024.
    fmap_words : int
        Depth of the feature-map buffer in ``stream_width``-bit words.
    acc_entries : int
        Depth of the accumulator buffer in entries of ``cols`` partial sums.
    weight_words : int
        Depth of the weight buffer in ``stream_width``-bit words.
    axil_addr_width : int
        Byte-address width of the AXI4-Lite slave, at least what the register map needs.
    """

    engine: ArrayConfig = field(default_factory=ArrayConfig)
    stream_width: int = 64
    fmap_words: int = 4096
    acc_entries: int = 1024
    weight_words: int = 4096
    axil_addr_width: int = 12
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        if not isinstance(self.engine, ArrayConfig):
            raise ConfigError("engine", f"engine must be an ArrayConfig, not {self.engine!r}")
        if self.stream_width not in STREAM_WIDTHS or isinstance(self.stream_width, bool):
            raise ConfigError("stream_width", f"stream_width must be one of "
                              f"{', '.join(map(str, STREAM_WIDTHS))}, not {self.stream_width!r}")
        for param, (lo, hi) in CORE_LIMITS.items():
            _check_int(param, getattr(self, param), lo, hi)
        need = _map_bits()
        if self.axil_addr_width < need:
            raise ConfigError("axil_addr_width", f"axil_addr_width must be an integer in "
                              f"[{need}, {CORE_LIMITS['axil_addr_width'][1]}] (the register "
                              f"map needs {need} bits), not {self.axil_addr_width!r}")
        if self.name is not None and not (self.name.isidentifier() and self.name.isascii()):
            raise ConfigError("name", f"name must be a Verilog identifier, not {self.name!r}")

    @property
    def top_name(self):
        if self.name is not None:
            return self.name
        return f"mulfree_core_{self.engine.top_name.removeprefix('mulfree_')}_s{self.stream_width}"

    @cached_property
    def register_map(self):
        """The :class:`~mulfree.rtl.regs.RegisterMap` of this core (built once)."""
        return core_register_map(self)

    def params(self):
        """The user-set parameters, as a JSON-ready dict (``engine`` nested)."""
        return {"engine": self.engine.params(), "stream_width": self.stream_width,
                "fmap_words": self.fmap_words, "acc_entries": self.acc_entries,
                "weight_words": self.weight_words, "axil_addr_width": self.axil_addr_width}


def _ro(name, offset, width, value, meaning):
    return Field(name, offset, width, "RO", const=value, meaning=meaning)


def core_register_map(cfg: CoreConfig, *, addr_width=None):
    """The register map of ``cfg`` (``cfg=None`` builds the layout with zero parameters)."""
    e = cfg.engine if cfg is not None else None
    addr_width = addr_width if addr_width is not None else cfg.axil_addr_width
    k = (lambda v: v) if cfg is not None else (lambda v: 0)
    rmap = RegisterMap(addr_width)
    # Control and status: 0x000.
    rmap.add(Register("ID", [_ro("magic", 0, 32, CORE_MAGIC, "0x4D554C46, ASCII 'MULF'")],
                      "identifies a mulfree core"))
    rmap.add(Register("VERSION", [
        _ro("minor", 0, 16, CORE_VERSION[1], "register-interface minor version: registers "
                                             "added"),
        _ro("major", 16, 16, CORE_VERSION[0], "register-interface major version: meanings "
                                              "changed"),
    ], "version of this register interface"))
    rmap.add(Register("CONTROL", [
        Field("start", 0, 1, "W1S", meaning="write 1: start the loaded program; refused "
                                            "(error BUSY) while STATUS.busy; clears "
                                            "STATUS.done"),
        Field("soft_reset", 1, 1, "W1S", meaning="write 1: abort and return the core to idle; "
                                                 "accepted in every state"),
        Field("irq_enable", 2, 1, "RW", meaning="1: irq follows STATUS.done"),
    ], "starts runs, resets the core, enables the interrupt"))
    rmap.add(Register("STATUS", [
        Field("idle", 0, 1, "RO", meaning="1: the core waits for start"),
        Field("busy", 1, 1, "RO", meaning="1: a run is in progress"),
        Field("done", 2, 1, "W1C", meaning="set when a run ends; write 1 (or start) to clear"),
        Field("error", 3, 1, "RO", meaning="ERROR.core_code is not 0"),
        Field("reg_error", 4, 1, "W1C", meaning="a register write was ignored (ERROR.reg_code, "
                                                "ERROR_ADDR); write 1 to clear"),
    ], "state of the core; readable at any time"))
    rmap.add(Register("ERROR", [
        Field("core_code", 0, 8, "RO", meaning="why the core stopped; 0: no error "
                                               "(codes defined with the layer controller)"),
        Field("reg_code", 8, 8, "RO", meaning="first ignored register write since "
                                              "STATUS.reg_error was cleared; 0: none"),
    ], "error codes"))
    rmap.add(Register("ERROR_ADDR", [
        Field("addr", 0, addr_width, "RO", meaning="byte address of the write ERROR.reg_code "
                                                   "describes"),
    ], "address of the first ignored register write"))
    rmap.add(Register("SCRATCH", [
        Field("value", 0, 32, "RW", meaning="no effect; for the host's bus checks"),
    ], "scratch register"))
    # Identity and parameters: 0x040.
    pe = PE_KINDS.index(e.pe) if e else 0
    arch = ARCHS.index(e.arch) if e else 0
    rmap.add(Register("ENGINE", [
        _ro("pe", 0, 4, pe, "PE kind: 0 shift, 1 adder, 2 mult"),
        _ro("arch", 4, 4, arch, "engine: 0 array, 1 tree"),
        _ro("tree_levels_per_stage", 8, 8, k(e and e.tree_levels_per_stage),
            "tree: combinational levels per pipeline stage (1 for arrays)"),
    ], "compute engine kind"), offset=0x40)
    rmap.add(Register("ARRAY", [
        _ro("rows", 0, 16, k(e and e.rows), "input vector length (reduction per tile)"),
        _ro("cols", 16, 16, k(e and e.cols), "output vector length"),
    ], "engine size"))
    rmap.add(Register("WIDTHS", [
        _ro("act_bits", 0, 8, k(e and e.act_bits), "signed activation bits"),
        _ro("weight_bits", 8, 8, k(e and e.weight_bits), "weight code bits"),
        _ro("acc_width", 16, 8, k(e and e.acc_width), "signed accumulator bits"),
    ], "operand widths"))
    rmap.add(Register("MAX_K", [
        _ro("value", 0, 32, k(e and e.max_k), "longest reduction the accumulator holds"),
    ], "accumulator depth in terms"))
    rmap.add(Register("STREAM_WIDTH", [
        _ro("value", 0, 16, k(cfg and cfg.stream_width), "AXI4-Stream tdata bits"),
    ], "stream width"))
    rmap.add(Register("FMAP_WORDS", [
        _ro("value", 0, 32, k(cfg and cfg.fmap_words), "feature-map buffer depth in "
                                                       "stream words"),
    ], "feature-map buffer size"))
    rmap.add(Register("ACC_ENTRIES", [
        _ro("value", 0, 32, k(cfg and cfg.acc_entries), "accumulator buffer depth in "
                                                        "entries of cols sums"),
    ], "accumulator buffer size"))
    rmap.add(Register("WEIGHT_WORDS", [
        _ro("value", 0, 32, k(cfg and cfg.weight_words), "weight buffer depth in stream "
                                                         "words"),
    ], "weight buffer size"))
    # Performance counters: 0x080.
    terms = unsigned_width(e.pe_count) if e else 1
    rmap.add_counter("BUSY_CYCLES", 1, "cycles with STATUS.busy set", offset=0x80)
    rmap.add_counter("STALL_IN_CYCLES", 1, "busy cycles the core waited for input stream data")
    rmap.add_counter("STALL_OUT_CYCLES", 1, "busy cycles the output stream was not ready")
    rmap.add_counter("TERMS", terms, "terms computed (one per PE operation)")
    return rmap


def _map_bits():
    """Address bits the register map needs (its layout does not depend on the parameters)."""
    rmap = core_register_map(None, addr_width=32)
    return max(1, (rmap.size - 1).bit_length())
