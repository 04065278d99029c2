"""``amaranth.sim`` runs of the address-shift unit and of the ShiftNet / AddressNet block.

* :func:`preload_shift_unit` — inside a testbench, fill the buffer and the shift table;
* :func:`simulate_shift_unit` — write, fill the table, issue read commands, collect every
  output element with its cycle;
* :func:`pack_tile` and :func:`simulate_shift_block` — the same for the block, with weight
  tiles on its array.

The netlist simulated is the one :mod:`mulfree.gen.shift_emit` and
:mod:`mulfree.gen.block_emit` emit as Verilog.
"""

from ..params.config import ArrayConfig
from ..params.shift_config import ShiftUnitConfig, MODES, ORDERS
from ..gen.block_emit import build_shift_block
from ..gen.shift_emit import build_shift_unit


__all__ = ["preload_shift_unit", "simulate_shift_unit", "pack_tile", "simulate_shift_block"]


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


def pack_tile(cfg: ArrayConfig, weights):
    """The ``rows`` beats of the weight tile ``weights[rows, cols]`` (codes), row 0 first."""
    cw = cfg.code_width
    mask = (1 << cw) - 1
    return [sum((int(w) & mask) << (c * cw) for c, w in enumerate(row)) for row in weights]


def simulate_shift_block(shift_cfg, array_cfg, *, writes=(), table=(), commands=(), tiles=(),
                         y_ready=None, max_cycles=None, **kwargs):
    """Run :class:`~mulfree.rtl.block.ShiftBlock` in ``amaranth.sim``.

    Parameters
    ----------
    writes : iterable of (addr, value)
        Written through ``w0`` with ``seek`` before anything else.
    table : iterable of (channel, dy, dx)
        Shift-table writes, after the writes.
    commands : iterable of dict
        Block command fields (``mode`` by name or code), issued back to back.
    tiles : iterable of array ``[rows, cols]``
        Weight tiles (codes), one per command, streamed on ``w`` as the array takes them.
    y_ready : callable or None
        ``y_ready(cycle) -> bool``; always ready when ``None``.
    kwargs
        Passed to :class:`~mulfree.rtl.block.ShiftBlock` (``engine``, ``psum``).

    Returns
    -------
    dict
        ``outputs``: per command, a list of ``(cycle, [cols sums], last)``; ``accepted``:
        the cycle each command was accepted in; ``status``: the flags at the end.
    """
    from amaranth.sim import Simulator

    dut = build_shift_block(shift_cfg, array_cfg, **kwargs)
    commands = [dict(c, mode=MODES.get(c["mode"], c["mode"])) for c in commands]
    beats = [b for tile in tiles for b in pack_tile(array_cfg, tile)]
    sizes = [c["height"] * c["width"] for c in commands]
    max_cycles = max_cycles or 4 * array_cfg.rows * sum(sizes) + 100 * (len(commands) + 1)
    result = {"outputs": [[] for _ in commands], "accepted": [], "status": None}
    acc = array_cfg.acc_width

    def signed(v):
        return v - (1 << acc) if v >> (acc - 1) else v

    async def bench(ctx):
        await preload_shift_unit(ctx, dut, shift_cfg, writes, table)
        pending, weights, current = list(commands), list(beats), 0
        for cycle in range(max_cycles):
            if pending:
                ctx.set(dut.cmd.payload, pending[0])
            ctx.set(dut.cmd.valid, bool(pending))
            if weights:
                ctx.set(dut.w.payload, weights[0])
            ctx.set(dut.w.valid, bool(weights))
            ready = y_ready(cycle) if y_ready else True
            ctx.set(dut.y.ready, ready)
            if pending and ctx.get(dut.cmd.ready):
                result["accepted"].append(cycle)
                pending.pop(0)
            if weights and ctx.get(dut.w.ready):
                weights.pop(0)
            if ctx.get(dut.y.valid) and ready:
                p = ctx.get(dut.y.payload)
                sums = [signed((p["data"] >> (c * acc)) & ((1 << acc) - 1))
                        for c in range(array_cfg.cols)]
                if current < len(commands):
                    result["outputs"][current].append((cycle, sums, p["last"]))
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
