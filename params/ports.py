"""The top-level ports of the generated designs, as data.

Amaranth names a top-level port after its path in the component's signature, joined by ``__``
(``x__payload``), after ``clk`` and ``rst``. These functions list the same ports from a config
alone, so a host can check a manifest with NumPy and no Amaranth. The generator compares them
with the elaborated signatures before it writes a design (:mod:`mulfree.gen.manifest`), and the
tests do the same over many configs: the two descriptions cannot drift apart silently.
"""

from .config import ArrayConfig


__all__ = ["PORT_MEANING", "FIELD_MEANING", "clock_ports", "stream_ports", "array_ports",
           "axi_lite_ports", "axi_stream_ports", "core_ports"]

#: What each port of an engine means (``docs/manifest.md``).
PORT_MEANING = {
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

#: What each field of a structured payload means, by ``(port, field)``.
FIELD_MEANING = {
    ("x", "data"): "x[r] (signed act_bits) in bits [r*act_bits, (r+1)*act_bits)",
    ("x", "psum"): "incoming partial sum p[c] (signed acc_width) in bits "
                   "[c*acc_width, (c+1)*acc_width)",
    ("x", "last"): "last vector of the current weight tile; the next beat uses the next tile",
    ("y", "data"): "y[c] = p[c] + sum_r term(x[r], W[r, c]) (signed acc_width) in bits "
                   "[c*acc_width, (c+1)*acc_width)",
    ("y", "last"): "copied from the input beat",
}


def _port(name, direction, width, fields=None):
    entry = {"name": name, "direction": direction, "width": width,
             "meaning": PORT_MEANING.get(name, "")}
    if fields:
        entry["fields"] = fields
    return entry


def clock_ports():
    """``clk`` and ``rst``, the first two ports of every design."""
    return [_port("clk", "input", 1), _port("rst", "input", 1)]


def _flip(direction, inward):
    return direction if inward else {"input": "output", "output": "input"}[direction]


def stream_ports(name, inward, payload):
    """The ports of an ``amaranth.lib.stream`` interface: payload, valid, ready.

    Parameters
    ----------
    name : str
        The interface's name in the signature (``"x"``).
    inward : bool
        The design receives the stream (``In(stream.Signature(...))``).
    payload : int or list of (str, int)
        The payload's width, or its struct fields ``(name, width)`` from bit 0 up.
    """
    fields = None
    if isinstance(payload, int):
        width = payload
    else:
        fields, offset = [], 0
        for field, field_width in payload:
            fields.append({"name": field, "offset": offset, "width": field_width,
                           "meaning": FIELD_MEANING.get((name, field), "")})
            offset += field_width
        width = offset
    return [_port(f"{name}__payload", _flip("input", inward), width, fields),
            _port(f"{name}__valid", _flip("input", inward), 1),
            _port(f"{name}__ready", _flip("output", inward), 1)]


def array_ports(cfg: ArrayConfig):
    """The ports of an engine (an array or a tree: they share one signature)."""
    return (clock_ports()
            + stream_ports("w", True, cfg.cols * cfg.code_width)
            + stream_ports("x", True, [("data", cfg.rows * cfg.act_bits),
                                       ("psum", cfg.cols * cfg.acc_width), ("last", 1)])
            + stream_ports("y", False, [("data", cfg.cols * cfg.acc_width), ("last", 1)]))


#: AXI4-Lite members as the master drives them (``True``) or receives them; 0 width = address.
_AXI_LITE = (("awaddr", True, 0), ("awprot", True, 3), ("awvalid", True, 1),
             ("awready", False, 1), ("wdata", True, 32), ("wstrb", True, 4),
             ("wvalid", True, 1), ("wready", False, 1), ("bresp", False, 2),
             ("bvalid", False, 1), ("bready", True, 1), ("araddr", True, 0),
             ("arprot", True, 3), ("arvalid", True, 1), ("arready", False, 1),
             ("rdata", False, 32), ("rresp", False, 2), ("rvalid", False, 1),
             ("rready", True, 1))


def axi_lite_ports(name, addr_width):
    """An AXI4-Lite slave port ``name`` (32-bit data) with ``addr_width`` address bits."""
    return [_port(f"{name}__{member}", "input" if from_master else "output",
                  width or addr_width)
            for member, from_master, width in _AXI_LITE]


def axi_stream_ports(name, inward, width):
    """An AXI4-Stream port ``name``: ``tdata``, ``tvalid``, ``tready``, ``tlast``."""
    members = (("tdata", True, width), ("tvalid", True, 1), ("tready", False, 1),
               ("tlast", True, 1))
    return [_port(f"{name}__{member}", _flip("input" if from_master else "output", inward), w)
            for member, from_master, w in members]


def core_ports(cfg):
    """The ports of the accelerator core ``cfg`` (a :class:`~mulfree.params.core_config.CoreConfig`):
    ``s_axil``, ``s_axis``, ``m_axis`` and ``irq``."""
    return (clock_ports()
            + axi_lite_ports("s_axil", cfg.register_map.addr_width)
            + axi_stream_ports("s_axis", True, cfg.stream_width)
            + axi_stream_ports("m_axis", False, cfg.stream_width)
            + [_port("irq", "output", 1)])
