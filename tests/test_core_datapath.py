"""The core's datapath (:class:`mulfree.rtl.core.LayerDatapath`) in ``amaranth.sim``: whole
runs of the fused tail in seconds, every result beat against the golden model
(:func:`mulfree.host.layer_stream.expected_beats`).

The cocotb scenarios (``sim/tb_core.py``, ``sim/tb_core_corners.py``) run the generated Verilog
behind the AXI shell; these drive ``run``, ``s`` and ``m`` directly, so the corners of the
shortcut's address and watermark are cheap to reach: blocks that cut the output tiles, a
shortcut sent long after the activations (every final vector waits), one vector at a time
between results, backpressure, and a core without a shortcut buffer.
"""

import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CORE_ERRORS, DESC_BITS, DESC_FIELDS, CoreConfig
from mulfree.params.layer_golden import PostParams, ResidualParams
from mulfree.host.layer_stream import Layer, Packet, expected_beats, layer_geometry, pack_layer
from mulfree.host.stream_format import beats_vector, stream_beats, vector_beats
from mulfree.rtl.core import LayerDatapath
from mulfree.sim.tb_core_layers import pooled_beats


ERRORS = {name: code for code, name, _ in CORE_ERRORS}


def small_core(shortcut_vectors=64, **over):
    params = dict(engine=ArrayConfig(pe="shift", rows=4, cols=3, max_k=64), stream_width=64,
                  fmap_vectors=64, weight_rows=256, acc_entries=16, max_channels=16,
                  out_vectors=4, shortcut_vectors=shortcut_vectors)
    params.update(over)
    return CoreConfig(**params)


def run_datapath(cfg, packets, *, ready=None, gaps=None, max_cycles=60_000):
    """Feed ``packets`` (``(tdata, tlast)`` beats; ``gaps(cycle)`` withholds a beat) with
    ``m.ready = ready(cycle)``; return ``(result beats, error code, finished)``."""
    dp = LayerDatapath(cfg)
    beats = stream_beats(packets)
    out = {"beats": [], "error": 0, "finished": False}

    async def bench(ctx):
        ctx.set(dp.run, 1)
        k = 0
        for cycle in range(max_cycles):
            offer = k < len(beats) and not (gaps and gaps(cycle))
            if offer:
                ctx.set(dp.s.payload, {"data": beats[k][0], "last": beats[k][1]})
            ctx.set(dp.s.valid, offer)
            r = ready(cycle) if ready else True
            ctx.set(dp.m.ready, r)
            if offer and ctx.get(dp.s.ready):
                k += 1
            if ctx.get(dp.m.valid) and r:
                out["beats"].append(ctx.get(dp.m.payload.data))
            if ctx.get(dp.error):
                out["error"] = ctx.get(dp.error)
                return
            if ctx.get(dp.finished):
                out["finished"] = True
                return
            await ctx.tick()

    sim = Simulator(dp)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def residual_layer(cfg, rng, *, in_c=5, out_c=5, h=4, w=5, k=3, m_block=7, relu=True,
                   clamp=(-20, 60), shifts=(1, 2, 2)):
    """A k x k convolution (padding k // 2) with a residual add and a clamp."""
    lo, hi = cfg.engine.act_range
    pad = k // 2
    x = rng.integers(lo, hi + 1, (in_c, h, w))
    wc = rng.integers(0, 1 << cfg.engine.weight_bits, (out_c, in_c, k, k))
    post = PostParams(bias=rng.integers(-100, 100, out_c), shift=rng.integers(0, 5, out_c),
                      relu=rng.integers(0, 2, out_c).astype(bool))
    out_h, out_w = h + 2 * pad - k + 1, w + 2 * pad - k + 1
    main, short, shift = shifts
    return Layer(x=x, w_codes=wc, post=post, padding=(pad, pad), m_block=m_block,
                 shortcut=rng.integers(lo, hi + 1, (out_c, out_h, out_w)),
                 residual=ResidualParams(main, short, shift, relu), clamp=clamp)


def check_run(cfg, layer, packets=None, **kw):
    packets = pack_layer(cfg, layer) if packets is None else packets
    out = run_datapath(cfg, packets, **kw)
    assert out["error"] == 0, f"error {out['error']}"
    assert out["finished"], "the run did not finish"
    want = expected_beats(cfg, layer)
    assert len(out["beats"]) == len(want)
    bad = [i for i, (g, w) in enumerate(zip(out["beats"], want)) if g != w]
    assert not bad, f"{len(bad)} of {len(want)} result beats differ, first {bad[0]}"


def split(cfg, packets, kind, size):
    """``packets`` with those of ``kind`` cut into packets of ``size`` vectors."""
    out = []
    for p in packets:
        if p.type != kind:
            out.append(p)
            continue
        per = cfg.beats(cfg.vector_bits[kind])
        vectors = [p.beats[1 + i * per:1 + (i + 1) * per] for i in range(p.count)]
        for a in range(0, p.count, size):
            chunk = vectors[a:a + size]
            out.append(Packet(kind, len(chunk),
                              [p.beats[0] & 0xFF | len(chunk) << 8] + sum(chunk, [])))
    return out


def test_residual_in_packer_order():
    """Blocks of 7 pixels over 20 pixels and 2 output tiles: the address runs through
    passes and blocks; the packer's order (first block's shortcut early, the rest last)."""
    cfg = small_core()
    rng = np.random.default_rng(1)
    layer = residual_layer(cfg, rng)
    assert layer_geometry(cfg, layer)["counts"]["SHORTCUT"] == 40
    check_run(cfg, layer)


@pytest.mark.parametrize("m_block", [1, 3, 16])
def test_residual_shortcut_last_in_single_vectors(m_block):
    """The whole shortcut after every other packet, one vector per packet with gaps between
    beats and backpressure on the results: every final vector waits for its own vector."""
    cfg = small_core()
    rng = np.random.default_rng(m_block)
    layer = residual_layer(cfg, rng, m_block=m_block, out_c=7, clamp=None, relu=False,
                           shifts=(0, 3, 1))
    packets = pack_layer(cfg, layer)
    short = [p for p in packets if p.type == "SHORTCUT"]
    rest = [p for p in packets if p.type != "SHORTCUT"]
    packets = rest + split(cfg, short, "SHORTCUT", 1)
    ready = (np.random.default_rng(9).random(60_000) < 0.6).tolist()
    check_run(cfg, layer, packets, ready=lambda c: ready[c], gaps=lambda c: c % 5 == 2)


def test_clamp_without_shortcut_buffer():
    """A core without a shortcut buffer runs plain layers and clamps; a residual layer is
    TOO_BIG."""
    cfg = small_core(shortcut_vectors=0)
    rng = np.random.default_rng(2)
    layer = residual_layer(cfg, rng)
    plain = Layer(x=layer.x, w_codes=layer.w_codes, post=layer.post, padding=layer.padding,
                  m_block=layer.m_block)
    check_run(cfg, plain)
    clamped = Layer(x=layer.x, w_codes=layer.w_codes, post=layer.post, padding=layer.padding,
                    m_block=layer.m_block, clamp=(-5, 6))
    check_run(cfg, clamped)
    with_buffer = small_core()
    out = run_datapath(cfg, pack_layer(with_buffer, layer))
    assert out["error"] == ERRORS["TOO_BIG"]


def pool_layer(cfg, rng, pool, *, residual=True, **kw):
    """:func:`residual_layer` (or its plain convolution) with a global pool of shift ``pool``."""
    layer = residual_layer(cfg, rng, **kw)
    if not residual:
        layer = dataclasses.replace(layer, shortcut=None, residual=None, clamp=None)
    return dataclasses.replace(layer, pool=pool)


def check_pool_run(cfg, layer, packets=None, **kw):
    """A run with a global pool against the golden model's pool of the layer's output
    (:func:`mulfree.sim.tb_core_layers.pooled_beats`)."""
    packets = pack_layer(cfg, layer) if packets is None else packets
    out = run_datapath(cfg, packets, **kw)
    assert out["error"] == 0, f"error {out['error']}"
    assert out["finished"], "the run did not finish"
    want = pooled_beats(cfg, layer)
    assert len(out["beats"]) == len(want), f"{len(out['beats'])} beats, expected {len(want)}"
    bad = [i for i, (g, w) in enumerate(zip(out["beats"], want)) if g != w]
    assert not bad, f"{len(bad)} of {len(want)} result beats differ, first {bad[0]}: " \
                    f"got 0x{out['beats'][bad[0]]:x}, expected 0x{want[bad[0]]:x}"


@pytest.mark.parametrize("pool", [-8, -3, 0, 1, 4, 5, 12, 13])
def test_global_pool_shift_range(pool):
    """A 3x3 convolution over 20 pixels (blocks of 7, 3 output tiles of 3 lanes) pooled with
    shifts across ``pool_shift_range(8, 20) = [-8, 13]``: left shifts that saturate, the
    rounding of every right shift up to the whole sum."""
    cfg = small_core(pool_pixels=20)
    rng = np.random.default_rng(100 + pool)
    layer = pool_layer(cfg, rng, pool, residual=False, out_c=8)
    check_pool_run(cfg, layer)


@pytest.mark.parametrize("m_block", [1, 3, 16])
def test_global_pool_after_residual_and_clamp(m_block):
    """The residual add, the clamp and the pool together, the shortcut last in single
    vectors, gaps on the input and backpressure on the output."""
    cfg = small_core(pool_pixels=20)
    rng = np.random.default_rng(200 + m_block)
    layer = pool_layer(cfg, rng, 4, out_c=7, m_block=m_block)
    packets = pack_layer(cfg, layer)
    packets = ([p for p in packets if p.type != "SHORTCUT"]
               + split(cfg, [p for p in packets if p.type == "SHORTCUT"], "SHORTCUT", 1))
    ready = (np.random.default_rng(m_block).random(60_000) < 0.3).tolist()
    check_pool_run(cfg, layer, packets, ready=lambda c: ready[c], gaps=lambda c: c % 3 == 1)


def test_global_pool_limits():
    """out_h * out_w = pool_pixels runs, one more pixel is TOO_BIG, and so is any pool on a
    core without a pool unit (which still runs layers without one); a pool shift one past
    either end of its range is DESCRIPTOR, and so is a pool shift without the flag."""
    rng = np.random.default_rng(5)
    cfg = small_core(pool_pixels=20)
    layer = pool_layer(cfg, rng, 2, residual=False, h=4, w=5)         # 20 pixels
    check_pool_run(cfg, layer)
    for over, packets_cfg, want in ((dict(pool_pixels=19), cfg, "TOO_BIG"),
                                    (dict(pool_pixels=0), cfg, "TOO_BIG")):
        small = small_core(**over)
        out = run_datapath(small, pack_layer(packets_cfg, layer))
        assert out["error"] == ERRORS[want], (over, out)
    none = small_core(pool_pixels=0)
    check_run(none, dataclasses.replace(layer, pool=None))
    for shift in (-9, 14):
        out = run_datapath(cfg, with_words(cfg, pack_layer(cfg, layer), pool_shift=shift))
        assert out["error"] == ERRORS["DESCRIPTOR"], (shift, out)
    plain = dataclasses.replace(layer, pool=None)
    out = run_datapath(cfg, with_words(cfg, pack_layer(cfg, plain), pool_shift=1))
    assert out["error"] == ERRORS["DESCRIPTOR"], out
    out = run_datapath(cfg, with_words(cfg, pack_layer(cfg, plain), pool_shift=-1))
    assert out["error"] == ERRORS["DESCRIPTOR"], out


def with_words(cfg, packets, **fields):
    """``packets`` with descriptor ``fields`` replaced (two's complement in their width)."""
    desc = packets[0]
    assert desc.type == "DESC"
    bits = beats_vector(cfg, desc.beats[1:], DESC_BITS)
    for word, lo, width, name in DESC_FIELDS:
        if name in fields:
            pos = word * 32 + lo
            bits = bits & ~(((1 << width) - 1) << pos) | (fields[name] & ((1 << width) - 1)) << pos
    return [Packet("DESC", desc.count, desc.beats[:1] + vector_beats(cfg, bits, DESC_BITS))] \
        + list(packets[1:])


# Aligned shortcuts (interface 2.0): the SHORTCUT tensor in its source layout ----------------

def aligned_layer(cfg, rng, *, stride, offset, short_c, out_c, h=4, w=5, **kw):
    """:func:`residual_layer` whose shortcut is a source tensor ``(short_c, out_h*stride,
    out_w*stride)`` added at channel ``offset`` (``shortcut_source``)."""
    layer = residual_layer(cfg, rng, out_c=out_c, h=h, w=w, **kw)
    _, out_h, out_w = layer.shortcut.shape
    lo, hi = cfg.engine.act_range
    res = dataclasses.replace(layer.residual, stride=stride, offset=offset)
    return dataclasses.replace(layer, residual=res, shortcut=rng.integers(
        lo, hi + 1, (short_c, out_h * stride, out_w * stride)))


def with_junk_lanes(cfg, packets, short_c, rng):
    """``packets`` with the SHORTCUT lanes at or beyond ``short_c`` (0 on the wire) random:
    the core must ignore them."""
    e = cfg.engine
    C, a, bits = e.cols, e.act_bits, cfg.vector_bits["SHORTCUT"]
    nts = -(-short_c // C)
    per = cfg.beats(bits)
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


#: (stride, offset, short_c, out_c) on 3 lanes: the identity; strides 2 and 3; offsets that
#: are multiples of the lanes and not (lanes moving across two aligned vectors, the pixel's
#: last aligned vector from the carry alone, or beyond NT); short_c of one lane.
ALIGNED = [(1, 0, 5, 5), (2, 0, 2, 5), (2, 1, 3, 5), (1, 4, 3, 8), (2, 3, 3, 7),
           (3, 2, 5, 9), (1, 2, 1, 3), (2, 5, 4, 9), (1, 1, 5, 6)]


@pytest.mark.parametrize("stride,offset,short_c,out_c", ALIGNED)
def test_aligned_shortcut(stride, offset, short_c, out_c):
    """Every result against the golden model (shortcut_source + fused_tail); the shortcut in
    the packer's order, then last in single vectors with gaps, backpressure and junk in the
    lanes beyond short_c."""
    cfg = small_core(max_channels=16)
    rng = np.random.default_rng(100 * stride + 10 * offset + short_c)
    layer = aligned_layer(cfg, rng, stride=stride, offset=offset, short_c=short_c,
                          out_c=out_c, m_block=6)
    g = layer_geometry(cfg, layer)
    assert g["counts"]["SHORTCUT"] == 20 * stride * stride * -(-short_c // 3)
    check_run(cfg, layer)
    packets = pack_layer(cfg, layer)
    short = [p for p in packets if p.type == "SHORTCUT"]
    rest = [p for p in packets if p.type != "SHORTCUT"]
    packets = with_junk_lanes(cfg, rest + split(cfg, short, "SHORTCUT", 1), short_c, rng)
    ready = (np.random.default_rng(5).random(60_000) < 0.6).tolist()
    check_run(cfg, layer, packets, ready=lambda c: ready[c], gaps=lambda c: c % 4 != 0)


def test_aligned_shortcut_resnet_lanes():
    """ResNet-20's downsampling shortcut on 4 lanes (a power of two: the offset is split by
    bits): 2 source tiles, offset 2 (lanes move), stride 2, in one packet at the end."""
    cfg = small_core(engine=ArrayConfig(pe="shift", rows=4, cols=4, max_k=64),
                     max_channels=16)
    rng = np.random.default_rng(20)
    for offset, short_c, out_c in ((2, 6, 8), (4, 4, 8), (1, 8, 12)):
        layer = aligned_layer(cfg, rng, stride=2, offset=offset, short_c=short_c,
                              out_c=out_c, m_block=4, h=3, w=4)
        packets = pack_layer(cfg, layer)
        check_run(cfg, layer, with_junk_lanes(
            cfg, [p for p in packets if p.type != "SHORTCUT"]
            + [p for p in packets if p.type == "SHORTCUT"], short_c, rng))


def test_aligned_shortcut_refused():
    """DESCRIPTOR for the short_* fields (short_c 0, stride 0, short_off + short_c > out_c,
    any of them without flags.residual); TOO_BIG when the aligned shortcut (M*NT) outgrows
    the buffer though the source vectors sent would fit, not the other way round."""
    cfg = small_core(max_channels=16)
    rng = np.random.default_rng(7)
    layer = aligned_layer(cfg, rng, stride=2, offset=1, short_c=3, out_c=5)
    packets = pack_layer(cfg, layer)
    for fields in ({"short_c": 0}, {"short_stride": 0}, {"short_off": 3},
                   {"short_c": 5}):
        out = run_datapath(cfg, with_words(cfg, packets, **fields))
        assert out["error"] == ERRORS["DESCRIPTOR"], (fields, out)
    plain = dataclasses.replace(layer, residual=None, shortcut=None)
    for fields in ({"short_c": 1}, {"short_off": 1}, {"short_stride": 1}):
        out = run_datapath(cfg, with_words(cfg, pack_layer(cfg, plain), **fields))
        assert out["error"] == ERRORS["DESCRIPTOR"], (fields, out)
    # 20 pixels * 2 tiles = 40 aligned vectors; the source sends 20*4*1 = 80.
    assert layer_geometry(cfg, layer)["counts"]["SHORTCUT"] == 80
    check_run(small_core(max_channels=16, shortcut_vectors=40), layer)
    out = run_datapath(small_core(max_channels=16, shortcut_vectors=39), packets)
    assert out["error"] == ERRORS["TOO_BIG"], out


# Multi-engine cores (interface 2.1) ----------------------------------------------------------

def engines_core(**over):
    """A shift array with a mult array beside it (the mult engine's codes and sums are the
    wider: the core's code_width and acc_width)."""
    params = dict(engine=ArrayConfig(pe="shift", rows=4, cols=3, max_k=64),
                  extra_engines=(ArrayConfig(pe="mult", rows=4, cols=3, weight_bits=8,
                                             max_k=64),),
                  fmap_vectors=64, weight_rows=256, acc_entries=16, max_channels=16,
                  out_vectors=4, shortcut_vectors=64)
    params.update(over)
    return CoreConfig(**params)


@pytest.mark.parametrize("k", [0, 1])
def test_engines_each_kind(k):
    """Each engine of a shift + mult core runs a convolution with a residual and a clamp and
    a 1x1 shift layer, equal to the golden model of that engine (packets from the spec:
    :func:`mulfree.sim.tb_core_engines.pack_engine_layer`)."""
    from mulfree.sim.tb_core_engines import engine_layer, engine_view, pack_engine_layer
    cfg = engines_core()
    assert cfg.code_width == 8 and cfg.acc_width == cfg.engines[1].acc_width
    rng = np.random.default_rng(40 + k)
    view = engine_view(cfg, k)
    conv = residual_layer(view, rng) if k == 0 else dataclasses.replace(
        residual_layer(view, rng), w_codes=rng.integers(-128, 128, (5, 5, 3, 3)))
    for layer in (conv, engine_layer(cfg, rng, k, "shift", in_c=6, h=3, w=4, out_c=4)):
        out = run_datapath(cfg, pack_engine_layer(cfg, layer, k), ready=lambda c: c % 3 != 1)
        assert out["error"] == 0 and out["finished"], out["error"]
        want = expected_beats(view, layer)
        assert len(out["beats"]) == len(want)
        bad = [i for i, (g, w) in enumerate(zip(out["beats"], want)) if g != w]
        assert not bad, f"engine {k}: {len(bad)} of {len(want)} beats differ, first {bad[0]}"


def test_engines_missing_engine():
    """A descriptor naming engine 2 (or 15) of a two-engine core stops the run: ENGINE."""
    from mulfree.sim.tb_core_engines import engine_layer, pack_engine_layer
    cfg = engines_core()
    layer = engine_layer(cfg, np.random.default_rng(3), 0, "conv", padding=(1, 1))
    for bad in (2, 15):
        out = run_datapath(cfg, pack_engine_layer(cfg, layer, 0, engine=bad))
        assert out["error"] == ERRORS["ENGINE"], out
        assert out["beats"] == []
