"""The manifests of the generated designs, from their configs alone.

A manifest is what a host needs to drive a design: its parameters, derived widths, ports,
register map, stream formats and latencies (``docs/manifest.md``). Everything here is computed
from the same config objects the RTL is built from, with NumPy-free plain Python, so the board
runtime checks a manifest without Amaranth (:mod:`mulfree.host.manifest_check`), and the
generator writes the very same document next to the Verilog (:mod:`mulfree.gen.manifest`,
:mod:`mulfree.gen.core_manifest`). ``MANIFEST_VERSION`` changes when a field changes meaning.
"""

from .config import ArrayConfig
from .core_config import (CoreConfig, CORE_ERRORS, PACKET_TYPES, DESC_FIELDS, DESC_FLAGS,
                          DESC_BITS, DESC_SIGNED, ISSUE_FIFO_DEPTH, RES_MAX_SHIFT, SETUP_STEPS,
                          WINDOW_LATENCY, pool_shift_range, pool_sum_width,
                          res_shift_range, res_sum_width)
from .ports import array_ports, core_ports
from .post_config import shift_width
from .regmap import REG_ERRORS, RESP_OKAY, RESP_SLVERR
from .version import __version__


__all__ = ["MANIFEST_VERSION", "engine_manifest", "registers_section", "stream_section",
           "core_manifest", "post_latency", "pool_buffer", "pool_latency", "engines_section",
           "window_section", "taps_fields"]

MANIFEST_VERSION = 1


def post_latency(cfg: CoreConfig):
    """Cycles from a final sum entering post-processing to its result vector leaving it, when
    nothing stalls: 4 (:attr:`~mulfree.rtl.postproc.PostProcess.LATENCY`), 7 with a shortcut
    buffer (``RESIDUAL_LATENCY``: the residual add's three stages)."""
    return 7 if cfg.shortcut_vectors else 4


def pool_buffer(cfg: CoreConfig):
    """The global pool's sums: one word of ``cols`` sums of ``sum_width`` bits per channel
    group (``ceil(max_channels / cols)`` words); depth 0 without a pool unit."""
    e = cfg.engine
    sw = pool_sum_width(e.act_bits, cfg.pool_pixels) if cfg.pool_pixels else 0
    depth = -(-cfg.max_channels // e.cols) if cfg.pool_pixels else 0
    return {"depth": depth, "width": e.cols * sw, "sum_width": sw}


def pool_latency(cfg: CoreConfig):
    """Cycles from a global pool's last result vector leaving post-processing to its first
    pooled vector entering the output FIFO, when nothing stalls: 4 (the sum's write, then
    :attr:`~mulfree.rtl.pool.GlobalPool.STAGES` = 3 registers: the sums' read, the rounding
    shift, the saturation); the others follow one per cycle. 0 without a pool unit (the
    results pass through it without a register whether or not a layer pools)."""
    return 4 if cfg.pool_pixels else 0


def _weight_encoding(cfg: ArrayConfig):
    if cfg.pe == "shift":
        return {
            "kind": "shift",
            "code_width": cfg.code_width,
            "layout": f"bit {cfg.code_width - 1}: sign s (1 = negative); bits "
                      f"[0, {cfg.code_width - 1}): e",
            "value": "0 if e == 0 else (-1)**s * 2**(e - 1)",
            "max_shift": cfg.max_shift,
            "zero_codes": [0, 1 << (cfg.code_width - 1)],
            "scale_log2": cfg.weight_scale_log2,
            "scale_meaning": "real weight = value * 2**scale_log2 (DeepShift p = e - 1 - "
                             "max_shift in [-max_shift, 0]); not applied in the array",
        }
    return {
        "kind": cfg.pe,
        "code_width": cfg.code_width,
        "layout": "two's complement",
        "value": "the signed code",
        "range": list(cfg.weight_range),
        "scale_log2": 0,
        "scale_meaning": ("weights share the activations' scale" if cfg.pe == "adder"
                          else "integer weights"),
    }


def engine_manifest(cfg: ArrayConfig):
    """The manifest of the design ``cfg`` (an array or a tree) as a JSON-ready dict."""
    term = {"shift": "sign * (x << p)", "adder": "-|x - w|", "mult": "x * w"}[cfg.pe]
    doc = {
        "mulfree_version": __version__,
        "manifest_version": MANIFEST_VERSION,
        "kind": cfg.arch,
        "top": cfg.top_name,
        "files": {"verilog": f"{cfg.top_name}.v"},
        "parameters": cfg.params(),
        "derived": {
            "max_shift": cfg.max_shift,
            "code_width": cfg.code_width,
            "act_range": list(cfg.act_range),
            "weight_range": list(cfg.weight_range),
            "term": term,
            "term_range": list(cfg.term_range),
            "term_width": cfg.term_width,
            "acc_range": list(cfg.acc_range),
            "acc_width": cfg.acc_width,
            "pe_count": cfg.pe_count,
        },
        "weight_encoding": _weight_encoding(cfg),
        "ports": array_ports(cfg),
        "streams": {
            "w": {"direction": "input", "beats_per_tile": cfg.rows},
            "x": {"direction": "input"},
            "y": {"direction": "output"},
        },
        "timing": {
            "latency": cfg.latency,
            "latency_meaning": "an input beat accepted in cycle t is valid on the output in "
                               "cycle t + latency when nothing stalls",
            "throughput": "one input vector per cycle",
            "weight_load_cycles": cfg.rows,
            # A tree swaps tiles at one edge; the array's swap travels down the rows.
            "tile_swap_blocks_weight_load_cycles":
                0 if cfg.arch == "tree" else max(cfg.rows - 1, 0),
        },
    }
    if cfg.arch == "tree":
        doc["tree"] = _tree(cfg)
    if cfg.mult_pack != 1 or cfg.dsp_cols is not None:
        doc["multipliers"] = _multipliers(cfg)
    return doc


def _multipliers(cfg: ArrayConfig):
    """How a best-effort mult array maps its products (docs/numerics.md, "Packed multipliers")."""
    return {
        "mult_pack": cfg.mult_pack,
        "pack_shift": cfg.pack_shift,
        "dsp_columns": cfg.dsp_columns,
        "dsp_count": cfg.dsp_count,
        "lut_columns": cfg.cols - cfg.dsp_columns,
        "weight_rule": ("weights in [-(2^(b-1) - 1), 2^(b-1) - 1]: two products share one "
                        "DSP as x * (w_lo + w_hi * 2^pack_shift)" if cfg.mult_pack == 2 else
                        "two's complement weights"),
    }


def _tree(cfg: ArrayConfig):
    return {
        "inputs": cfg.rows,
        "lanes": cfg.cols,
        "depth": cfg.tree_depth,
        "levels_per_stage": cfg.tree_levels_per_stage,
        "stages": cfg.tree_stages,
        "node_leaves": cfg.tree_level_counts,
        "level_widths": cfg.tree_level_widths,
        "leaf_register_width": cfg.tree_leaf_width,
        "node_signed": cfg.tree_signed,
        "node_meaning": ("sum of |x - w| over the node's leaves minus one pending carry bit "
                         "(unsigned); the root computes psum - node - carry"
                         if cfg.pe == "adder" else
                         "sum of the node's terms minus one pending carry bit (signed)"
                         if cfg.pe == "shift" else "sum of the node's terms (signed)"),
        "registered_levels": cfg.tree_registered_levels,
        "levels_meaning": "level 0 computes the terms, levels 1..depth add pairs (an odd "
                          "node passes through), level depth+1 adds the incoming partial "
                          "sum at acc_width; a register follows each listed level",
        "root_width": cfg.acc_width,
    }


def _field_entry(f):
    entry = {"name": f.name, "bits": [f.offset + f.width - 1, f.offset], "width": f.width,
             "access": f.access, "reset": f.reset, "meaning": f.meaning}
    if f.const is not None:
        entry["value"] = f.const
    if f.access == "RW":
        entry["allowed"] = list(f.allowed_range)
    return entry


def registers_section(rmap):
    """The manifest's ``registers`` section: every register, its fields and the access rules."""
    regs = []
    for r in rmap:
        entry = {"name": r.name, "offset": r.offset, "access": r.access, "reset": r.reset,
                 "reserved_mask": r.reserved_mask, "meaning": r.meaning,
                 "fields": [_field_entry(f) for f in r.fields]}
        if r.counter is not None:
            entry["counter"] = {"name": r.counter[0].name, "half": r.counter[1]}
        regs.append(entry)
    return {
        "bus": "AXI4-Lite, 32-bit data, byte addresses, 4-byte aligned registers",
        "addr_width": rmap.addr_width,
        "size": rmap.size,
        "resp": {"OKAY": RESP_OKAY, "SLVERR": RESP_SLVERR},
        "reg_errors": {name: {"code": code, "meaning": meaning}
                       for name, (code, meaning) in REG_ERRORS.items()},
        "core_errors": {name: {"code": code, "meaning": meaning}
                        for code, name, meaning in CORE_ERRORS},
        "counter_read_rule": "read <NAME>_LO, then <NAME>_HI: reading _LO latches the high half "
                             "that _HI returns, so the pair is one 64-bit snapshot",
        "registers": regs,
    }


def stream_section(cfg: CoreConfig):
    """The manifest's ``stream`` section: packet types, vector sizes, the descriptor's fields."""
    e, p = cfg.engine, cfg.post_engine
    vb = cfg.vector_bits
    return {
        "width": cfg.stream_width,
        "header": {"type_bits": [3, 0], "count_bits": [31, 8],
                   "reserved": "bits [7:4] and above 31 are 0"},
        "packet_types": dict(PACKET_TYPES),
        "vector_bits": vb,
        "vector_beats": {t: cfg.beats(b) for t, b in vb.items()},
        "descriptor": {
            "bits": DESC_BITS,
            "fields": [{"name": n, "word": w, "bits": [lo + width - 1, lo],
                        "signed": n in DESC_SIGNED}
                       for w, lo, width, n in DESC_FIELDS],
            "flags": dict(DESC_FLAGS),
        },
        "tail": {"res_max_shift": RES_MAX_SHIFT,
                 "res_shift_range": list(res_shift_range(e.act_bits)),
                 "res_sum_width": res_sum_width(e.act_bits),
                 "clamp_range": list(e.act_range),
                 "pool_shift_range": list(pool_shift_range(e.act_bits, cfg.pool_pixels)),
                 "pool_sum_width": pool_sum_width(e.act_bits, cfg.pool_pixels)},
        # PARAMS at the post-processing engine's widths (a multi-engine core's widest).
        "params_vector": {"bias": [p.acc_width - 1, 0],
                          "shift": [p.acc_width + shift_width(p) - 1, p.acc_width],
                          "relu": p.acc_width + shift_width(p)},
        "shift_entry_bits": cfg.shift_entry_bits,
        "order": "docs/interface.md, 'Stream formats'",
    }


def engines_section(cfg: CoreConfig):
    """The manifest's ``engines`` section (interface 2.1): the core-wide ``code_width`` (bits
    of a WEIGHTS slot) and ``acc_width`` (accumulator buffer lanes, PARAMS bias), the engine
    whose widths post-processing takes (``post_engine``), and every engine: its index (the
    descriptor's ``engine`` field), kind, organisation, weight bits, code and accumulator
    widths, physical columns, passes per vector (``folds``) and latency."""
    post = cfg.engines.index(cfg.post_engine)
    return {
        "count": len(cfg.engines),
        "code_width": cfg.code_width,
        "acc_width": cfg.acc_width,
        "post_engine": post,
        "list": [{"index": k, "pe": e.pe, "arch": e.arch, "weight_bits": e.weight_bits,
                  "code_width": e.code_width, "acc_width": e.acc_width,
                  "physical_cols": cfg.physical_cols(k), "folds": cfg.folds(k),
                  "latency": cfg.engine_latency(k)}
                 for k, e in enumerate(cfg.engines)],
    }


def window_section(cfg: CoreConfig):
    """The manifest's ``core.window`` (interface 2.3): the lane unit's ``lanes`` (``cols``,
    0 without ``window_ops``: a window flag is error WINDOW) and its ``latency``
    (``WINDOW_LATENCY``, cycles from an input handshake to its result)."""
    return {"lanes": cfg.engine.cols if cfg.window_ops else 0, "latency": WINDOW_LATENCY}


def taps_fields(cfg: CoreConfig):
    """The manifest's ``core.taps``, ``core.tap_side``, ``core.tap_line`` and
    ``core.tap_engines`` (interface 2.4): the tap window's rows (0: none, ``flags.taps`` is
    error WINDOW), the largest kernel side of a taps run, its line buffers' pixels (0 without
    a tap window, as register ``TAPS``) and the engines that take taps runs."""
    return {"taps": cfg.taps, "tap_side": cfg.tap_side,
            "tap_line": cfg.tap_line if cfg.taps else 0, "tap_engines": list(cfg.tap_engines)}


def core_manifest(cfg: CoreConfig):
    """The manifest of a generated core: what a host needs to drive it."""
    e = cfg.engine
    eng = engine_manifest(e)
    return {
        "mulfree_version": __version__,
        "manifest_version": MANIFEST_VERSION,
        "kind": "core",
        "top": cfg.top_name,
        "files": {"verilog": f"{cfg.top_name}.v"},
        "parameters": cfg.params(),
        "engine": {k: eng[k] for k in ("parameters", "derived", "weights", "timing")
                   if k in eng},
        "engines": engines_section(cfg),
        "ports": core_ports(cfg),
        "clock": "clk", "reset": "rst (synchronous, active high)",
        "registers": registers_section(cfg.register_map),
        "stream": stream_section(cfg),
        "core": {
            "hazard_window": cfg.hazard_window,
            "x_fifo_depth": ISSUE_FIFO_DEPTH,
            "setup_cycles": len(SETUP_STEPS) * 18 + 2,
            "post_latency": post_latency(cfg),
            "buffers": {
                # banks: a memory per lane; count: feature-map banks (2: layer chaining).
                "fmap": {"depth": cfg.fmap_vectors, "width": e.rows * e.act_bits,
                         "banks": e.rows, "count": cfg.fmap_banks},
                "weights": {"depth": cfg.weight_rows, "width": e.cols * cfg.code_width},
                "acc": {"depth": cfg.acc_entries, "width": e.cols * cfg.acc_width},
                "post_table": {"channels": cfg.max_channels},
                "shift_table": {"depth": -(-cfg.max_channels // e.rows),
                                "width": e.rows * cfg.shift_entry_bits},
                "out": {"depth": cfg.out_vectors, "width": e.cols * e.act_bits},
                "shortcut": {"depth": cfg.shortcut_vectors, "width": e.cols * e.act_bits},
                "pool": pool_buffer(cfg),
            },
            "pool_latency": pool_latency(cfg),
            # Interface 2.3: the lane unit of window runs (lanes 0: none).
            "window": window_section(cfg),
            # Interface 2.4: the tap window of taps runs (taps 0: none), the shift table's
            # reach (register SHIFT_TABLE; entries of stream.shift_entry_bits).
            **taps_fields(cfg),
            "shift_reach": cfg.shift_reach,
        },
    }
