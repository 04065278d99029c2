"""cocotb scenarios of the core's aligned shortcut (interface 2.0) on its generated Verilog.

A residual layer's SHORTCUT packets carry the shortcut's *source* ``(short_c, out_h*s,
out_w*s)``; the core adds ``shortcut_source(x, out_c, s, short_off)``. Every result beat is
compared with the golden model (:func:`mulfree.host.layer_stream.expected_beats`:
``shortcut_source`` then ``fused_tail``), never with the RTL.

Scenarios (:data:`SCENARIOS`):

* ``aligned_shortcuts``: strides 1, 2 and 3; offsets 0, multiples of the lanes and not (lanes
  moving across two aligned vectors, ResNet's ``cols / 2``), ``short_c < out_c`` and over
  several source tiles; the SHORTCUT stream in chunks of 3 vectors with random pauses on
  ``s_axis``, random backpressure on ``m_axis``, junk in the lanes beyond ``short_c`` (the
  core ignores them), and again with the whole shortcut last; an identity residual first,
  so that aligned vectors a later layer leaves unwritten hold stale data (they must read 0).
* ``aligned_reset_mid_run``: a soft reset while a misaligned layer is half loaded and half
  computed; the next aligned layer is correct.
* ``aligned_errors``: DESCRIPTOR for every ``short_*`` rule (and each field without
  ``flags.residual``), TOO_BIG on the aligned size ``out_h*out_w*NT`` (a source twice the
  buffer runs), SHORTCUT's OVERRUN at ``scv + 1`` vectors and at the aligned count ``M*NT``
  when the source is smaller, SHORT and LONG on the source's last packet; a correct layer
  after each.
"""

import dataclasses

import numpy as np

import cocotb
from cocotb.triggers import ClockCycles

from mulfree.params.core_config import DESC_BITS, DESC_FIELDS
from mulfree.params.layer_golden import ResidualParams
from mulfree.host.layer_stream import Packet, layer_geometry, pack_layer
from mulfree.host.stream_format import beats_vector, vector_beats
from mulfree.sim.tb_core import TB, random_layer, run_layer
from mulfree.sim.tb_core_corners import expect_error, packet
from mulfree.sim.tb_core_layers import chunked, random_pauses, shortcut_last


__all__ = ["SCENARIOS", "aligned", "junk_lanes", "with_fields"]

#: The cocotb tests of this module.
SCENARIOS = ("aligned_shortcuts", "aligned_reset_mid_run", "aligned_errors")


def aligned(cfg, layer, rng, *, stride, offset, short_c, res=None, clamp=None):
    """``layer`` with a residual whose shortcut is a random source ``(short_c, out_h*stride,
    out_w*stride)`` added at output channel ``offset``."""
    g = layer_geometry(cfg, layer)
    lo, hi = cfg.engine.act_range
    res = res or ResidualParams(1, 1, 1, True)
    return dataclasses.replace(
        layer, residual=dataclasses.replace(res, stride=stride, offset=offset), clamp=clamp,
        shortcut=rng.integers(lo, hi + 1, (short_c, g["out_h"] * stride, g["out_w"] * stride)))


def junk_lanes(cfg, packets, short_c, rng):
    """``packets`` with the SHORTCUT lanes at or beyond ``short_c`` (0 on the wire) random."""
    e = cfg.engine
    C, a, bits = e.cols, e.act_bits, cfg.vector_bits["SHORTCUT"]
    nts, per = -(-short_c // C), cfg.beats(bits)
    out, k = [], 0
    for p in packets:
        if p.type != "SHORTCUT":
            out.append(p)
            continue
        beats = list(p.beats[:1])
        for i in range(p.count):
            v = beats_vector(cfg, p.beats[1 + i * per:1 + (i + 1) * per], bits)
            t = (k + i) % nts
            for lane in range(C):
                if t * C + lane >= short_c:
                    v |= int(rng.integers(0, 1 << a)) << (lane * a)
            beats += vector_beats(cfg, v, bits)
        k += p.count
        out.append(Packet("SHORTCUT", p.count, beats))
    return out


def with_fields(cfg, packets, **fields):
    """``packets`` with descriptor ``fields`` written over the packer's (unchecked)."""
    desc = packets[0]
    bits = beats_vector(cfg, desc.beats[1:], DESC_BITS)
    for word, lo, width, name in DESC_FIELDS:
        if name in fields:
            pos, mask = word * 32 + lo, (1 << width) - 1
            bits = bits & ~(mask << pos) | (fields[name] & mask) << pos
    return [Packet("DESC", 1, desc.beats[:1] + vector_beats(cfg, bits, DESC_BITS))] \
        + list(packets[1:])


def conv(cfg, rng, out_c, *, h=4, w=5, m_block=None):
    """A 3x3 convolution (padding 1) of a ``h x w`` map onto ``out_c`` channels."""
    return random_layer(cfg, rng, kind="conv", in_c=cfg.engine.rows + 1, h=h, w=w,
                        out_c=out_c, padding=(1, 1), m_block=m_block)


def cases(cfg):
    """``(what, out_c, stride, offset, short_c)`` for ``cfg``'s lanes ``C``, the identity
    first (it fills every aligned vector the later layers may leave unwritten)."""
    C = cfg.engine.cols
    return [
        ("identity", C + 1, 1, 0, C + 1),
        (f"ResNet-like: stride 2, {C} channels at {C // 2 or 1}", 2 * C, 2, C // 2 or 1, C),
        ("stride 2, offset 0, short_c < out_c", 2 * C + 1, 2, 0, C - 1 or 1),
        ("stride 1, offset 1, 2 source tiles", 2 * C + 2, 1, 1, C + 1),
        (f"stride 2, offset {C} (aligned, tile 0 unwritten)", 2 * C + 1, 2, C, C + 1),
        ("stride 3, offset C + 1", 3 * C, 3, C + 1, C - 1 or 1),
        ("stride 1, one channel at the top", 2 * C, 1, 2 * C - 1, 1),
    ]


@cocotb.test()
async def aligned_shortcuts(dut):
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    assert cfg.shortcut_vectors, "a design with a shortcut buffer"
    rng = np.random.default_rng(tb.seed + 20)
    lo, hi = cfg.engine.act_range
    for k, (what, out_c, stride, offset, short_c) in enumerate(cases(cfg)):
        m_block = (3, 7, None)[k % 3]
        layer = aligned(cfg, conv(cfg, rng, out_c, m_block=m_block), rng, stride=stride,
                        offset=offset, short_c=short_c,
                        clamp=(lo // 2, hi // 2) if k % 2 else None,
                        res=ResidualParams(k % 3, 1, 1 + k % 2, bool(k % 2)))
        g = layer_geometry(cfg, layer)
        assert g["counts"]["SHORTCUT"] == g["M"] * stride * stride * -(-short_c // cfg.engine.cols)
        tb.pause_streams(random_pauses(tb.seed * 10 + k, busy=0.3),
                         random_pauses(tb.seed * 10 + k + 1, busy=0.4, hold=12))
        packets = junk_lanes(cfg, chunked(cfg, pack_layer(cfg, layer), "SHORTCUT", 3),
                             short_c, rng)
        await run_layer(tb, layer, what=what, packets=packets)
        tb.pause_streams(None, [0, 1])
        await run_layer(tb, layer, what=f"{what}, shortcut last",
                        packets=shortcut_last(packets))
    tb.pause_streams()
    tb.check_protocol()


@cocotb.test()
async def aligned_reset_mid_run(dut):
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    C = cfg.engine.cols
    rng = np.random.default_rng(tb.seed + 21)
    for cut in (2, -3):
        layer = aligned(cfg, conv(cfg, rng, 2 * C + 1, m_block=4), rng, stride=2,
                        offset=1, short_c=C + 1)
        packets = chunked(cfg, pack_layer(cfg, layer), "SHORTCUT", 5)
        await tb.control("start")
        tb.pause_streams(None, [1])         # results held back: the run stops half done
        await tb.send_packets(packets[:cut])
        await tb.source.wait()
        await ClockCycles(dut.clk, 40)
        assert await tb.get("STATUS", "busy") == 1
        assert await tb.control("soft_reset") == 0
        await ClockCycles(dut.clk, 2)
        assert await tb.get("STATUS", "idle") == 1, "not idle after a soft reset"
        tb.pause_streams()
        await ClockCycles(dut.clk, 20)
        tb.sink.clear()
        again = aligned(cfg, conv(cfg, rng, 2 * C, m_block=5), rng, stride=2,
                        offset=C // 2 or 1, short_c=C)
        await run_layer(tb, again, what=f"after a soft reset at packet {cut}")
    tb.check_protocol()


@cocotb.test()
async def aligned_errors(dut):
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    C, depth = cfg.engine.cols, cfg.shortcut_vectors
    rng = np.random.default_rng(tb.seed + 22)

    def good():
        return aligned(cfg, conv(cfg, rng, C + 2, h=3, w=3), rng, stride=2, offset=1,
                       short_c=C)

    async def refused(frames, name, what):
        await expect_error(tb, frames, name, what)
        await run_layer(tb, good(), what=f"after {what}")

    layer = good()
    packets = pack_layer(cfg, layer)
    frames = [p.beats for p in packets]
    for what, fields in (("short_c = 0", {"short_c": 0}),
                         ("short_stride = 0", {"short_stride": 0}),
                         ("short_off + short_c = out_c + 1", {"short_off": 3}),
                         ("short_c = out_c at offset 1", {"short_c": C + 2})):
        await refused([p.beats for p in with_fields(cfg, packets, **fields)], "DESCRIPTOR",
                      what)
    plain = pack_layer(cfg, dataclasses.replace(layer, residual=None, shortcut=None,
                                                clamp=None))
    for name in ("short_c", "short_off", "short_stride"):
        await refused([p.beats for p in with_fields(cfg, plain, **{name: 1})], "DESCRIPTOR",
                      f"{name} without flags.residual")

    # The buffer holds the aligned shortcut (M * NT), not the source: M = shortcut_vectors / 4
    # pixels on NT = 4 tiles fill it exactly while their stride-2 source of 2 tiles is twice
    # as large.
    nt = 4
    m = depth // nt
    fits = aligned(cfg, random_layer(cfg, rng, kind="matmul", m=m, k=2, n=nt * C,
                                     m_block=min(m, cfg.acc_entries)), rng,
                   stride=2, offset=C - 1, short_c=C + 1)
    g = layer_geometry(cfg, fits)
    assert g["dcv"] == depth and g["counts"]["SHORTCUT"] == 2 * depth, g["counts"]
    await run_layer(tb, fits, what=f"aligned shortcut of {depth} = shortcut_vectors",
                    packets=chunked(cfg, pack_layer(cfg, fits), "SHORTCUT", 16))
    over = aligned(cfg, random_layer(cfg, rng, kind="matmul", m=m + 1, k=2, n=nt * C), rng,
                   stride=1, offset=0, short_c=1)
    assert layer_geometry(cfg, over)["counts"]["SHORTCUT"] <= depth
    bigger = dataclasses.replace(cfg, shortcut_vectors=2 * depth)     # the packer checks
    await refused([p.beats for p in pack_layer(bigger, over)], "TOO_BIG",
                  f"aligned shortcut of {depth + nt} vectors, its source {m + 1}")

    # SHORTCUT counts are the source's: scv + 1 is OVERRUN, and so is M*NT > scv.
    rest = [p.beats for p in packets if p.type != "SHORTCUT"]
    short = [p for p in packets if p.type == "SHORTCUT"]
    scv = sum(p.count for p in short)
    g = layer_geometry(cfg, layer)
    assert scv == g["counts"]["SHORTCUT"] and scv != g["dcv"]
    await refused(rest + [packet(cfg, "SHORTCUT", [0] * (scv + 1)).beats], "OVERRUN",
                  f"SHORTCUT of scv + 1 = {scv + 1} vectors")
    small = aligned(cfg, conv(cfg, rng, 2 * C + 1, h=3, w=3), rng, stride=1, offset=2,
                    short_c=1)
    sg = layer_geometry(cfg, small)
    assert sg["counts"]["SHORTCUT"] < sg["dcv"]
    sp = pack_layer(cfg, small)
    await refused([p.beats for p in sp if p.type != "SHORTCUT"]
                  + [packet(cfg, "SHORTCUT", [0] * sg["dcv"]).beats], "OVERRUN",
                  f"SHORTCUT of the aligned count M*NT = {sg['dcv']} (source {scv})")
    sc = packet(cfg, "SHORTCUT", [0] * scv).beats
    await refused(rest + [sc[:-1]], "SHORT", "SHORTCUT one beat short")
    await refused(rest + [sc + sc[1:2]], "LONG", "SHORTCUT without tlast at its end")
    tb.check_protocol()
