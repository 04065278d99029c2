""":class:`mulfree.rtl.stream_loader.StreamLoader` in ``amaranth.sim``: SHORTCUT packets.

The loader writes each type's vectors at its running pointer and refuses more vectors than the
layer's total (``OVERRUN``, at the header). Here: the shortcut's vectors of two beats each
(40 bits on a 32-bit stream), sent in chunks, land at addresses 0, 1, ... with their data;
one vector past the total is OVERRUN, and so is any SHORTCUT packet when the total is 0 (a
layer without ``flags.residual``); type 7 is still an unknown type (PACKET).
"""

import numpy as np
from amaranth.sim import Simulator

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CORE_ERRORS, PACKET_TYPES, CoreConfig
from mulfree.rtl.stream_loader import StreamLoader


ERRORS = {name: code for code, name, _ in CORE_ERRORS}
CFG = CoreConfig(engine=ArrayConfig(pe="shift", rows=2, cols=5, max_k=16), stream_width=32,
                 fmap_vectors=16, weight_rows=16, acc_entries=4, max_channels=10,
                 out_vectors=2, shortcut_vectors=32)


def frame(kind, vectors, count=None):
    """Beats ``(tdata, tlast)`` of one packet of ``kind`` carrying ``vectors`` (integers)."""
    bits = CFG.vector_bits[kind]
    per, s = CFG.beats(bits), CFG.stream_width
    beats = [PACKET_TYPES[kind] | (len(vectors) if count is None else count) << 8]
    for v in vectors:
        beats += [(v >> (k * s)) & ((1 << s) - 1) for k in range(per)]
    return [(b, i == len(beats) - 1) for i, b in enumerate(beats)]


def run(frames, shortcut_total):
    """Send ``frames`` (after a descriptor); return the shortcut writes ``(address, data)``,
    the pointer at the end and the first error code (0: none)."""
    dut = StreamLoader(CFG, post_groups=2)
    out = {"writes": [], "error": 0, "ptr": None}
    beats = frame("DESC", [0]) + [b for f in frames for b in f]

    async def bench(ctx):
        ctx.set(dut.accept, 1)
        ctx.set(dut.expect_desc, 1)
        ctx.set(dut.shortcut_total, shortcut_total)
        ctx.set(dut.acts_total, 1)
        for data, last in beats + [(None, None)]:
            if ctx.get(dut.error):              # registered: the cycle after the bad beat
                out["error"] = ctx.get(dut.error)
                assert not ctx.get(dut.s.ready)
                break
            if data is None:
                break
            ctx.set(dut.s.payload, {"data": data, "last": last})
            ctx.set(dut.s.valid, 1)
            assert ctx.get(dut.s.ready)
            if ctx.get(dut.sc_we):
                out["writes"].append((ctx.get(dut.shortcut_ptr), ctx.get(dut.sc_data)))
            if ctx.get(dut.desc_valid):
                ctx.set(dut.expect_desc, 0)
            await ctx.tick()
        ctx.set(dut.s.valid, 0)
        out["ptr"] = ctx.get(dut.shortcut_ptr)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def vectors(n, seed):
    rng = np.random.default_rng(seed)
    return [int(v) for v in rng.integers(0, 1 << CFG.vector_bits["SHORTCUT"], n,
                                          dtype=np.int64)]


def test_shortcut_chunks_written_in_order():
    vs = vectors(7, 1)
    out = run([frame("SHORTCUT", vs[:3]), frame("ACTS", [5]), frame("SHORTCUT", vs[3:4]),
               frame("SHORTCUT", vs[4:])], 7)
    assert out["error"] == 0
    assert out["writes"] == list(enumerate(vs))
    assert out["ptr"] == 7


def test_shortcut_overrun():
    vs = vectors(5, 2)
    # One vector past the total, in the last packet or in a packet of its own.
    assert run([frame("SHORTCUT", vs[:2]), frame("SHORTCUT", vs[2:])], 4)["error"] == \
        ERRORS["OVERRUN"]
    out = run([frame("SHORTCUT", vs[:4]), frame("SHORTCUT", vs[4:])], 4)
    assert out["error"] == ERRORS["OVERRUN"] and out["ptr"] == 4
    assert len(out["writes"]) == 4
    # A layer without flags.residual: total 0.
    out = run([frame("SHORTCUT", vs[:1])], 0)
    assert out["error"] == ERRORS["OVERRUN"] and out["writes"] == []
    # Exactly the total is fine.
    assert run([frame("SHORTCUT", vs[:4])], 4)["error"] == 0


def test_unknown_type_after_shortcut():
    beats = frame("SHORTCUT", vectors(1, 3))
    beats[0] = (beats[0][0] & ~0xF | 7, beats[0][1])
    assert run([beats], 4)["error"] == ERRORS["PACKET"]


def test_sc_hold_holds_only_shortcut_vector_ends():
    """``sc_hold`` (the aligner writing): the beat that would complete a SHORTCUT vector waits,
    every other beat (headers, a SHORTCUT vector's first beat, ACTS) is taken; the vectors
    still land in order with their data."""
    vs = vectors(4, 4)
    beats = frame("DESC", [0]) + frame("SHORTCUT", vs[:3]) + frame("ACTS", [5]) \
        + frame("SHORTCUT", vs[3:])
    dut = StreamLoader(CFG, post_groups=2)
    out = {"writes": [], "held": [], "error": 0}

    async def bench(ctx):
        ctx.set(dut.accept, 1)
        ctx.set(dut.expect_desc, 1)
        ctx.set(dut.shortcut_total, 4)
        ctx.set(dut.acts_total, 1)
        k, cycle = 0, 0
        while k < len(beats):
            hold = cycle % 3 != 2
            ctx.set(dut.sc_hold, hold)
            ctx.set(dut.s.payload, {"data": beats[k][0], "last": beats[k][1]})
            ctx.set(dut.s.valid, 1)
            if ctx.get(dut.sc_we):
                out["writes"].append((ctx.get(dut.shortcut_ptr), ctx.get(dut.sc_data)))
                assert not hold, "a SHORTCUT vector completed under sc_hold"
            out["error"] |= ctx.get(dut.error)
            if ctx.get(dut.desc_valid):
                ctx.set(dut.expect_desc, 0)
            if ctx.get(dut.s.ready):
                k += 1
            else:
                out["held"].append(k)
            cycle += 1
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert out["error"] == 0
    assert out["writes"] == list(enumerate(vs))
    # Held beats: the second (last) beat of each SHORTCUT vector, 40 bits on 32-bit beats.
    per = CFG.beats(CFG.vector_bits["SHORTCUT"])
    assert per == 2
    d = len(frame("DESC", [0]))
    ends = {d + 1 + 2 * i + 1 for i in range(3)} | {d + 7 + 2 + 2}
    assert set(out["held"]) <= ends and set(out["held"]), out["held"]
