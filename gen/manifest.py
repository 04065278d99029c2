"""The machine-readable manifest of a generated design.

Built from the same :class:`ArrayConfig` and component signature as the Verilog, so the host
runtime and the tests never restate a width, an offset or a latency. The format is described in
``docs/manifest.md``; ``MANIFEST_VERSION`` changes when a field changes meaning.
"""

from amaranth.hdl import Shape
from amaranth.lib import data, wiring

from ..spec.config import ArrayConfig
from .. import __version__


__all__ = ["MANIFEST_VERSION", "manifest", "port_list"]

MANIFEST_VERSION = 1

_MEANING = {
    "clk": "clock, rising edge",
    "rst": "synchronous reset, active high: empties the pipeline and forgets loaded weights",
    "w__payload": "one weight tile row: code of column c in bits [c*code_width, "
                  "(c+1)*code_width); rows beats make a tile, row 0 first",
    "w__valid": "weight beat valid",
    "w__ready": "weight beat accepted (low while a complete tile waits to be used)",
    "x__payload": "input vector, its incoming partial sums and the tile's end (see fields)",
    "x__valid": "input beat valid",
    "x__ready": "input beat accepted (low on backpressure, or while a tile's first beat "
                "waits for its weights)",
    "y__payload": "result vector and the tile's end (see fields)",
    "y__valid": "result beat valid",
    "y__ready": "result beat accepted; low stalls the whole pipeline",
}

_FIELD_MEANING = {
    ("x", "data"): "x[r] (signed act_bits) in bits [r*act_bits, (r+1)*act_bits)",
    ("x", "psum"): "incoming partial sum p[c] (signed acc_width) in bits "
                   "[c*acc_width, (c+1)*acc_width)",
    ("x", "last"): "last vector of the current weight tile; the next beat uses the next tile",
    ("y", "data"): "y[c] = p[c] + sum_r term(x[r], W[r, c]) (signed acc_width) in bits "
                   "[c*acc_width, (c+1)*acc_width)",
    ("y", "last"): "copied from the input beat",
}


def _fields(port, shape):
    if not isinstance(shape, data.StructLayout):
        return None
    return [{"name": name, "offset": f.offset, "width": Shape.cast(f.shape).width,
             "meaning": _FIELD_MEANING.get((port, name), "")}
            for name, f in shape]


def port_list(signature: wiring.Signature):
    """Top-level ports as Amaranth names them in Verilog: ``clk``, ``rst``, then the signature."""
    ports = [
        {"name": "clk", "direction": "input", "width": 1, "meaning": _MEANING["clk"]},
        {"name": "rst", "direction": "input", "width": 1, "meaning": _MEANING["rst"]},
    ]
    for path, member in signature.members.flatten():
        if not member.is_port:
            continue
        name = "__".join(str(p) for p in path)
        entry = {
            "name": name,
            "direction": "input" if member.flow == wiring.In else "output",
            "width": Shape.cast(member.shape).width,
            "meaning": _MEANING.get(name, ""),
        }
        fields = _fields(path[0], member.shape)
        if fields:
            entry["fields"] = fields
        ports.append(entry)
    return ports


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


def manifest(cfg: ArrayConfig):
    """The manifest of the design ``cfg`` (an array or a tree) as a JSON-ready dict."""
    from ..rtl.array import array_signature
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
        "ports": port_list(array_signature(cfg)),
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
    return doc


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
