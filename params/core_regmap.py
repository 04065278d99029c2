"""The register map of a core (``docs/interface.md``, "Register map"), from its
:class:`~mulfree.params.core_config.CoreConfig`: identity, control and status, the parameters
the host reads back, the performance counters. :func:`core_register_map` builds it (with
``cfg=None``, the layout alone); :mod:`mulfree.params.core_config` re-exports it, with the identity
constants (``CORE_MAGIC``, ``CORE_VERSION``, ``MAX_ENGINES``) that live here.
"""

from .config import ARCHS, PE_KINDS, unsigned_width
from .regmap import Field, Register, RegisterMap


__all__ = ["core_register_map", "engine_register_value", "CORE_MAGIC", "CORE_VERSION",
           "MAX_ENGINES"]

#: ``ID.magic``: ASCII "MULF", so a host can tell it is talking to a mulfree core at all.
CORE_MAGIC = 0x4D55_4C46
#: ``VERSION``: (major, minor) of the register interface. The major number changes when an
#: existing register or field changes meaning; the minor one when registers are added.
CORE_VERSION = (2, 4)
#: Most engines one core holds (one per PE kind).
MAX_ENGINES = 3


def _ro(name, offset, width, value, meaning):
    return Field(name, offset, width, "RO", const=value, meaning=meaning)


def core_register_map(cfg, *, addr_width=None):
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
                                               "(see CORE_ERRORS)"),
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
    rmap.add(Register("FMAP_VECTORS", [
        _ro("value", 0, 32, k(cfg and cfg.fmap_vectors), "feature-map buffer depth in "
                                                         "vectors of rows activations"),
    ], "feature-map buffer size"))
    rmap.add(Register("ACC_ENTRIES", [
        _ro("value", 0, 32, k(cfg and cfg.acc_entries), "accumulator buffer depth in "
                                                        "entries of cols sums (m_block limit)"),
    ], "accumulator buffer size"))
    rmap.add(Register("WEIGHT_ROWS", [
        _ro("value", 0, 32, k(cfg and cfg.weight_rows), "weight buffer depth in rows of "
                                                        "cols codes"),
    ], "weight buffer size"))
    rmap.add(Register("MAX_CHANNELS", [
        _ro("value", 0, 32, k(cfg and cfg.max_channels), "largest out_c (and in_c of a "
                                                         "layer with a shift)"),
    ], "channel tables size"))
    rmap.add(Register("SHORTCUT_VECTORS", [
        _ro("value", 0, 32, k(cfg and cfg.shortcut_vectors), "shortcut buffer depth in "
                                                             "vectors of cols activations "
                                                             "(0: no residual add)"),
    ], "shortcut buffer size"))
    rmap.add(Register("POOL_PIXELS", [
        _ro("value", 0, 32, k(cfg and cfg.pool_pixels), "largest out_h*out_w of a global "
                                                        "pool (0: no pool unit)"),
    ], "global pool size"))
    # Interface 2.1: the engines of a multi-engine core.
    n = len(cfg.engines) if cfg is not None else 0
    rmap.add(Register("ENGINES", [
        _ro("count", 0, 4, n, "engines in this core (a descriptor's engine field is below "
                              "it)"),
        _ro("code_width", 8, 8, k(cfg and cfg.code_width), "bits of a weight-code slot in "
                                                           "the WEIGHTS stream"),
        _ro("acc_width", 16, 8, k(cfg and cfg.acc_width), "bits of a bias in the PARAMS "
                                                          "stream (the widest accumulator)"),
    ], "number of engines and the shared widths"))
    for j in range(MAX_ENGINES):
        rmap.add(Register(f"ENGINE_{j}", [
            _ro("pe", 0, 4, engine_register_value(cfg, j, "pe"), "PE kind: 0 shift, 1 adder, "
                                                                  "2 mult"),
            _ro("arch", 4, 4, engine_register_value(cfg, j, "arch"), "0 array, 1 tree"),
            _ro("weight_bits", 8, 6, engine_register_value(cfg, j, "weight_bits"),
                "weight code bits"),
            _ro("acc_width", 14, 6, engine_register_value(cfg, j, "acc_width"),
                "signed accumulator bits"),
            _ro("cols", 20, 12, engine_register_value(cfg, j, "cols"),
                "physical PE columns (below ARRAY.cols: folded)"),
        ], f"engine {j}: kind and size (all 0: no engine {j})"))
    # Interface 2.2: layer chaining.
    rmap.add(Register("FMAP_BANKS", [
        _ro("count", 0, 2, k(cfg and cfg.fmap_banks), "feature-map banks of FMAP_VECTORS "
                                                      "each (2: layer chaining)"),
    ], "feature-map banks"))
    # Performance counters: 0x080.
    terms = unsigned_width(e.pe_count) if e else 1
    rmap.add_counter("BUSY_CYCLES", 1, "cycles with STATUS.busy set", offset=0x80)
    rmap.add_counter("STALL_IN_CYCLES", 1, "busy cycles no vector entered the engine because "
                                           "the descriptor, activations or weights it needed "
                                           "had not arrived")
    rmap.add_counter("STALL_OUT_CYCLES", 1, "busy cycles a result beat waited for "
                                            "m_axis.tready")
    rmap.add_counter("TERMS", terms, "terms computed (one per PE operation)")
    # Interface 2.3: window runs.
    rmap.add(Register("WINDOW", [
        _ro("lanes", 0, 12, (cfg.engine.cols if cfg.window_ops else 0) if cfg else 0,
            "lanes of the lane unit (cols); 0: no lane unit, a window flag is error WINDOW"),
    ], "the lane unit of window runs (max and sum pooling, depthwise convolutions)"),
        offset=0xA0)
    # Interface 2.4: taps runs.
    rmap.add(Register("TAPS", [
        _ro("taps", 0, 8, cfg.taps if cfg else 0,
            "rows of the tap window (side*side); 0: none, flags.taps is error WINDOW"),
        _ro("side", 8, 4, cfg.tap_side if cfg else 0,
            "largest kernel_h and kernel_w of a taps run"),
        _ro("engines", 12, 4, sum(1 << k for k in cfg.tap_engines) if cfg else 0,
            "bit k: engine k takes taps runs (an array engine that is not folded)"),
        _ro("line", 16, 16, (cfg.tap_line if cfg.taps else 0) if cfg else 0,
            "pixels of the line buffers: a taps run's (out_w-1)*stride_w + kernel_w limit"),
    ], "the tap window of taps runs (depthwise convolutions on an array engine)"))
    rmap.add(Register("SHIFT_TABLE", [
        _ro("reach", 0, 4, cfg.shift_reach if cfg else 0,
            "largest magnitude of a shift-table entry's dy and dx (a Shift2d of kernel "
            "2*reach+1); an entry beyond it is error SHIFT_VALUE"),
        _ro("entry_bits", 8, 8, cfg.shift_entry_bits if cfg else 0,
            "bits per channel of a SHIFT vector: dy in the low half, dx in the high half, "
            "each signed"),
    ], "the shift table's entries (flags.shift)"))
    return rmap


def engine_register_value(cfg, j, name):
    """Field ``name`` of register ``ENGINE_<j>``: 0 when the core has no engine ``j``."""
    if cfg is None or j >= len(cfg.engines):
        return 0
    e = cfg.engines[j]
    if name == "pe":
        return PE_KINDS.index(e.pe)
    if name == "arch":
        return ARCHS.index(e.arch)
    if name == "cols":
        return cfg.physical_cols(j)
    return getattr(e, name)
