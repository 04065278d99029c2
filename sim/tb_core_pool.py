"""cocotb scenarios of the core's global pool (``flags.global_pool``) on its generated Verilog.

Every pooled result is compared bit for bit with the golden model's pool of the layer's output
(:func:`mulfree.sim.tb_core_layers.pooled_beats`: :func:`~mulfree.params.layer_golden.global_pool`
of the layer computed without the pool), never with the RTL:

* ``global_pool``: random layers of each kind pooled, alone and after the residual add and the
  clamp, ``pool_shift`` at both ends of ``pool_shift_range`` and between, random backpressure on
  ``m_axis``, a layer without the pool after a pooled one, a pooled run reusing the weights; a
  core without a pool unit (``pool_pixels = 0``) refuses the flag (``TOO_BIG``) and runs the
  next layer;
* ``pool_reset``: a soft reset while the sums are half accumulated and one while the pooled
  vectors are held back by ``m_axis``; the next pooled layer is correct (no sum of the aborted
  run survives);
* ``pool_fields``: ``pool_shift`` at its ends (runs) and one past (``DESCRIPTOR``), non-zero
  without the flag (``DESCRIPTOR``), the map at ``pool_pixels`` (runs) and one pixel over
  (``TOO_BIG``).

``MULFREE_SEED`` varies the data, never the corners.
"""

import dataclasses

import numpy as np

import cocotb
from cocotb.triggers import ClockCycles, SimTimeoutError, with_timeout

from mulfree.params.core_config import DESC_FLAGS, pool_shift_range
from mulfree.params.layer_golden import ResidualParams
from mulfree.host.layer_stream import layer_geometry, pack_layer
from mulfree.sim.tb_core import TB, run_layer
from mulfree.sim.tb_core_corners import desc_frame, expect_error
from mulfree.sim.tb_core_layers import (chunked, pooled_beats, random_layer, random_pauses,
                                       with_tail)


__all__ = ["SCENARIOS", "run_pooled"]

#: The cocotb tests of this module.
SCENARIOS = ("global_pool", "pool_reset", "pool_fields")
POOL = 1 << DESC_FLAGS["global_pool"]


async def run_pooled(tb, layer, *, what, packets=None):
    """Start, send (``packets``, by default the packer's), receive one pooled result packet
    and compare it with :func:`pooled_beats`."""
    cfg = tb.cfg
    want = pooled_beats(cfg, layer)
    packets = pack_layer(cfg, layer) if packets is None else packets
    assert await tb.control("start") == 0, f"{what}: start refused"
    tb.out_check.expect(len(want))
    tb.in_check.expect(*(len(p.beats) for p in packets))
    tb.in_check.take()
    tb.out_check.take()
    cocotb.start_soon(tb.send_packets(packets))
    try:
        frame = await with_timeout(tb.sink.recv(), 2_000_000, "ns")
    except SimTimeoutError:
        raise AssertionError(f"{what}: no result packet within 200000 cycles (STATUS "
                             f"0x{await tb.read('STATUS'):x}, ERROR 0x{await tb.read('ERROR'):x}"
                             f")") from None
    got = tb.beats_of(frame)
    await tb.wait_done()
    code = await tb.get("ERROR", "core_code")
    assert code == 0, f"{what}: the core stopped with error {code}"
    assert len(got) == len(want), f"{what}: {len(got)} result beats, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"{what}: pooled beat {i} of {len(want)}: got 0x{g:x}, expected 0x{w:x}"
    seen = [b[0] for b in tb.out_check.take()]
    assert seen == got, f"{what}: m_axis carried {len(seen)} beats, the sink got {len(got)}"
    tb.check_protocol()


def pool_conv(cfg, rng, **over):
    """A 3x3 convolution (padding 1) of ``cols + 2`` output channels (two output tiles) on a
    map of at most ``pool_pixels`` (30 when the core has no pool unit) pixels."""
    e = cfg.engine
    pixels = cfg.pool_pixels or 30
    h = over.pop("h", min(5, pixels))
    w = over.pop("w", max(1, min(6, pixels // h)))
    return random_layer(cfg, rng, kind="conv", in_c=over.pop("in_c", e.rows + 1), h=h, w=w,
                        out_c=over.pop("out_c", e.cols + 2), padding=(1, 1), **over)


async def start(dut):
    tb = TB(dut)
    await tb.reset()
    return tb, np.random.default_rng(tb.seed + 200)


@cocotb.test()
async def global_pool(dut):
    """Pooled layers of each kind (with the residual add and the clamp too), the pool shift at
    both ends of its range, backpressure on m_axis; a core without a pool unit refuses one."""
    tb, rng = await start(dut)
    cfg = tb.cfg
    e = cfg.engine
    lo, hi = e.act_range
    conv = pool_conv(cfg, rng, m_block=7)
    if not cfg.pool_pixels:
        await expect_error(tb, [desc_frame(cfg, conv, flags=POOL, pool_shift=2)], "TOO_BIG",
                           "a pool on a core without a pool unit")
        await run_layer(tb, conv, what="after a refused pool")
        res = with_tail(cfg, conv, rng, clamp=(0, hi // 2))
        await expect_error(tb, [desc_frame(cfg, res, flags=POOL, pool_shift=-1)], "TOO_BIG",
                           "a pool after a clamp, no pool unit")
        await run_layer(tb, res, what="a clamp after a refused pool")
        tb.check_protocol()
        return
    p_lo, p_hi = pool_shift_range(e.act_bits, cfg.pool_pixels)
    g = layer_geometry(cfg, conv)
    k = (g["M"] - 1).bit_length()           # log2 of the map, rounded up: an average
    matmul = random_layer(cfg, rng, kind="matmul", m=min(11, cfg.pool_pixels), k=2 * e.rows + 1,
                          n=e.cols, m_block=4)
    shift = random_layer(cfg, rng, kind="shift", in_c=e.rows + 2, h=min(4, cfg.pool_pixels),
                         w=1, out_c=2 * e.cols + 1)
    cases = [("conv, average", conv, None, None, k)]
    if cfg.shortcut_vectors:
        cases += [
            ("conv, residual + ReLU + clamp, pool_shift at its top", conv,
             ResidualParams(1, 2, 2, True), (lo // 4, hi // 2), p_hi),
            ("matmul, residual, ReLU6, pool_shift at its bottom", matmul,
             ResidualParams(0, 0, -1, True), (0, 6), p_lo),
            ("shift, residual alone, a left shift", shift, ResidualParams(3, 0, 4, False), None,
             -1),
        ]
    cases += [("matmul, clamp, pool_shift 0", matmul, None, (lo // 2, hi // 2), 0),
              ("shift, pool_shift at its bottom", shift, None, None, p_lo),
              ("conv, pool_shift at its top", conv, None, None, p_hi),
              ("conv, a right shift by one", conv, None, None, 1)]
    layer = None
    for n, (what, base, res, clamp, pool) in enumerate(cases):
        layer = dataclasses.replace(with_tail(cfg, base, rng, residual=res, clamp=clamp),
                                    pool=pool)
        tb.pause_streams(None, random_pauses(tb.seed * 10 + n, busy=0.5, hold=12))
        packets = pack_layer(cfg, layer)
        if res is not None:
            packets = chunked(cfg, packets, "SHORTCUT", 3)
        await run_pooled(tb, layer, what=what, packets=packets)
    # The same layer without its pool, then a run reusing the weights with the pool again.
    plain = dataclasses.replace(layer, pool=None)
    await run_layer(tb, plain, what="after pooled layers, no pool")
    again = dataclasses.replace(layer, x=rng.integers(lo, hi + 1, layer.x.shape),
                                reuse_weights=True, pool=k)
    await run_pooled(tb, again, what="reuse_weights, pooled")
    tb.pause_streams()
    tb.check_protocol()


@cocotb.test()
async def pool_reset(dut):
    """A soft reset with the sums half accumulated, and one with the pooled vectors held back
    by m_axis; each time the next pooled layer is correct."""
    tb, rng = await start(dut)
    cfg = tb.cfg
    if not cfg.pool_pixels:
        return
    for hold in (False, True):
        layer = dataclasses.replace(pool_conv(cfg, rng, m_block=3), pool=2)
        packets = pack_layer(cfg, layer)
        await tb.control("start")
        if hold:
            # Everything sent, the pooled vectors pile up in the output FIFO behind m_axis.
            tb.pause_streams(None, [1])
            await tb.send_packets(packets)
        else:
            # The last ACTS vector withheld: some results are summed, the rest never come.
            acts = chunked(cfg, packets, "ACTS", 1)
            cut = max(i for i, p in enumerate(acts) if p.type == "ACTS")
            await tb.send_packets(acts[:cut])
        await tb.source.wait()
        await ClockCycles(dut.clk, 200)
        assert await tb.get("STATUS", "busy") == 1
        assert await tb.control("soft_reset") == 0
        await ClockCycles(dut.clk, 2)
        assert await tb.get("STATUS", "idle") == 1, "not idle after a soft reset"
        tb.pause_streams()
        await ClockCycles(dut.clk, 20)
        tb.sink.clear()
        # Same shapes, new data: a sum left from the aborted run would show.
        again = dataclasses.replace(pool_conv(cfg, rng, m_block=5), pool=3)
        await run_pooled(tb, again, what=f"after a soft reset ({'held' if hold else 'summing'})")
    tb.check_protocol()


@cocotb.test()
async def pool_fields(dut):
    """pool_shift at its ends and one past, pool_shift without the flag, the map at
    pool_pixels and one pixel over."""
    tb, rng = await start(dut)
    cfg = tb.cfg
    e = cfg.engine
    if not cfg.pool_pixels:
        return
    p_lo, p_hi = pool_shift_range(e.act_bits, cfg.pool_pixels)
    base = pool_conv(cfg, rng, m_block=4)

    async def refused(layer, name, what, **fields):
        await expect_error(tb, [desc_frame(cfg, layer, **fields)], name, what)
        await run_layer(tb, base, what=f"after {what}")

    for what, fields in (("pool_shift below -act_bits", dict(flags=POOL, pool_shift=p_lo - 1)),
                         ("pool_shift above pool_sum_width",
                          dict(flags=POOL, pool_shift=p_hi + 1)),
                         ("pool_shift 1 without the flag", dict(pool_shift=1)),
                         ("pool_shift -1 without the flag", dict(pool_shift=-1)),
                         ("pool_shift -128 without the flag", dict(pool_shift=-128))):
        await refused(base, "DESCRIPTOR", what, **fields)
    # The map: pool_pixels pixels run (a matrix product of pool_pixels rows), one more is
    # TOO_BIG; with both ends of the shift.
    for pool in (p_lo, p_hi):
        full = dataclasses.replace(random_layer(cfg, rng, kind="matmul", m=cfg.pool_pixels,
                                                k=e.rows + 1, n=e.cols + 1,
                                                m_block=min(cfg.acc_entries, 8)), pool=pool)
        await run_pooled(tb, full, what=f"M = pool_pixels, pool_shift {pool}")
    over = random_layer(cfg, rng, kind="matmul", m=cfg.pool_pixels + 1, k=e.rows + 1,
                        n=e.cols + 1, m_block=min(cfg.acc_entries, 8))
    await refused(over, "TOO_BIG", "M = pool_pixels + 1", flags=POOL, pool_shift=0)
    tb.check_protocol()
