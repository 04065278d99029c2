"""Verilog and ``amaranth.sim`` runs of the ShiftNet / AddressNet block (:mod:`mulfree.rtl.block`).

* :func:`convert_shift_block_verilog` — one Verilog file, columns as submodules;
* :func:`pack_tile` — a weight tile as the ``w`` stream's beats;
* :func:`simulate_shift_block` — write a map and a table, then issue commands and weight tiles
  and collect the array's output vectors.
"""

from amaranth.back import verilog

from ..params.config import ArrayConfig
from ..params.shift_config import ShiftUnitConfig, MODES
from .shift_emit import preload_shift_unit


__all__ = ["build_shift_block", "shift_block_name", "convert_shift_block_verilog", "pack_tile",
           "simulate_shift_block"]


def build_shift_block(shift_cfg: ShiftUnitConfig, array_cfg: ArrayConfig, **kwargs):
    from ..rtl.block import ShiftBlock
    return ShiftBlock(shift_cfg, array_cfg, **kwargs)


def shift_block_name(shift_cfg: ShiftUnitConfig, array_cfg: ArrayConfig):
    """Top module name: the two components' names joined."""
    return f"mulfree_shiftblock__{shift_cfg.top_name}__{array_cfg.top_name}"


def convert_shift_block_verilog(shift_cfg: ShiftUnitConfig, array_cfg: ArrayConfig, *,
                                name=None, **kwargs):
    block = build_shift_block(shift_cfg, array_cfg, **kwargs)
    return verilog.convert(block, name=name or shift_block_name(shift_cfg, array_cfg),
                           emit_src=False)


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
