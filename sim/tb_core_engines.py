"""cocotb scenarios of a multi-engine core (interface 2.1) on its generated Verilog.

A multi-engine core (``CoreConfig.extra_engines``) has one engine per PE kind behind the same
buffers; the descriptor's ``engine`` field (word 7, bits [31:28]) chooses the engine of a run.
Every result beat is compared with the golden model of the layer on *that* engine
(:func:`mulfree.host.layer_stream.expected_beats` of :func:`engine_view`, the single-engine
core of engine ``k``), never with the RTL.

The packets are built here from the specification (``docs/interface.md``: the descriptor with
its ``engine`` field, PARAMS at the core's ``acc_width`` and the post-processing engine's
shift width, WEIGHTS in ``cfg.code_width``-bit slots holding engine ``k``'s code in the low
bits, the rest as a single-engine core's) by :func:`pack_engine_layer`, independently of the
host's packer.

* ``engines_in_turn``: random layers on each engine one after another and back again (0, 1,
  0, 1, ...), with random pauses on ``s_axis`` and backpressure on ``m_axis``; the identity
  registers ``ENGINES`` / ``ENGINE_j`` equal the config;
* ``engine_refused``: a descriptor naming a missing engine (``len(engines)`` and 15) stops the
  run with ``ERROR.core_code`` 10 (``ENGINE``), the rest of the layer is dropped, the next
  good layer runs; a soft reset in the middle of a run on engine 1, then a layer on engine 0;
  weights reused on another engine than the one that loaded them are ``REUSE`` (interface
  2.2), reused on the same engine they run.

``MULFREE_SEED`` varies the data, never the corners.
"""

import dataclasses

import numpy as np

import cocotb
from cocotb.triggers import ClockCycles, SimTimeoutError, with_timeout

from mulfree.params.core_config import (DESC_FIELDS, DESC_FLAGS, DESC_SIGNED, PACKET_TYPES,
                                        engine_register_value)
from mulfree.params.post_config import shift_width
from mulfree.host.layer_stream import Packet, expected_beats, layer_geometry
from mulfree.host.core_layer import check_layer, tail_fields
from mulfree.host.stream_format import (act_rows, bit_mask, first_block_acts, pack_vector,
                                        shift_vectors, shortcut_vectors, stream_order,
                                        vector_beats, weight_rows)
from mulfree.sim.tb_core import TB
from mulfree.sim.tb_core_layers import random_layer, random_pauses


__all__ = ["SCENARIOS", "engine_view", "pack_engine_layer", "engine_layer", "run_on_engine",
           "soft_reset_mid_run"]

#: The cocotb tests of this module.
SCENARIOS = ("engines_in_turn", "engine_refused")
#: Vectors per packet of :func:`pack_engine_layer`.
PACKET_VECTORS = 64


def engine_view(cfg, k):
    """The single-engine core of engine ``k`` of ``cfg`` (same buffers and stream): what the
    golden model and the layer checks of a run on engine ``k`` see."""
    return dataclasses.replace(cfg, engine=cfg.engines[k], extra_engines=(), engine_cols=(),
                               name=None)


def _packets(cfg, kind, vectors):
    bits = cfg.vector_bits[kind]
    out = []
    for a in range(0, len(vectors), PACKET_VECTORS):
        chunk = vectors[a:a + PACKET_VECTORS]
        beats = [PACKET_TYPES[kind] | len(chunk) << 8]
        for v in chunk:
            beats += vector_beats(cfg, v, bits)
        out.append(Packet(kind, len(chunk), beats))
    return out


def descriptor_vector(layer, g, engine, chain=None):
    """The DESC vector of ``layer`` (geometry ``g``) with ``engine`` in word 7 [31:28] and
    the layer-chaining flags ``chain`` (``{"in_bank": 1, "keep": 1, ...}``, interface 2.2;
    absent flags 0)."""
    tail = tail_fields(layer)
    flags = {"shift": int(layer.shifts is not None),
             "reuse_weights": int(bool(layer.reuse_weights)),
             **{n: tail[n] for n in ("residual", "res_relu", "clamp", "global_pool")},
             **(chain or {})}
    values = dict(g, **tail, engine=engine,
                  flags=sum(int(flags.get(name, 0)) << bit for name, bit in DESC_FLAGS.items()))
    vector = 0
    for word, lo, width, name in DESC_FIELDS:
        value = int(values[name])
        assert name in DESC_SIGNED or 0 <= value < 1 << width, f"{name} = {value}"
        vector |= (value & bit_mask(width)) << (word * 32 + lo)
    return vector


def pack_engine_layer(cfg, layer, k, *, engine=None, chain=None):
    """The packets of ``layer`` run on engine ``k`` of the multi-engine core ``cfg``, in the
    host's order (:func:`~mulfree.host.stream_format.stream_order`); ``engine`` overrides the
    descriptor's field (a missing engine). ``chain``: layer chaining's flags (interface 2.2):
    with ``acts_resident`` no ACTS packets, with ``short_resident`` no SHORTCUT packets."""
    view = engine_view(cfg, k)
    check_layer(view, layer)
    g = layer_geometry(view, layer)
    e, p = cfg.engines[k], cfg.post_engine
    a, sw = cfg.acc_width, shift_width(p)
    n = g["out_c"]
    relu = np.broadcast_to(np.asarray(layer.post.relu, dtype=bool), (n,))
    params = [(int(b) & bit_mask(a)) | (int(s) & bit_mask(sw)) << a | int(r) << (a + sw)
              for b, s, r in zip(layer.post.bias, layer.post.shift, relu)]
    # Engine k's code in the low code_width bits of each cfg.code_width-bit slot.
    codes = weight_rows(view, np.asarray(layer.w_codes), g) & bit_mask(e.code_width)
    vectors = {
        "PARAMS": params,
        "SHIFT": shift_vectors(view, layer, g) if layer.shifts is not None else [],
        "WEIGHTS": [pack_vector(row, cfg.code_width) for row in codes],
        "ACTS": [pack_vector(v, e.act_bits) for v in act_rows(view, layer.x, g)],
        "SHORTCUT": [pack_vector(v, e.act_bits) for v in shortcut_vectors(view, layer, g)],
    }
    chain = chain or {}
    if chain.get("acts_resident"):
        vectors["ACTS"] = []
    if chain.get("short_resident"):
        vectors["SHORTCUT"] = []
    packets = _packets(cfg, "DESC", [descriptor_vector(layer, g, k if engine is None
                                                       else engine, chain)])
    for kind, start, count in stream_order(g, reuse=layer.reuse_weights,
                                           first_acts=first_block_acts(layer, g)):
        packets += _packets(cfg, kind, vectors[kind][start:start + count])
    return packets


def engine_layer(cfg, rng, index, kind, **over):
    """A random layer (:func:`~mulfree.sim.tb_core_layers.random_layer`) for engine
    ``index``: its weight codes of that engine's kind and width."""
    return random_layer(engine_view(cfg, index), rng, kind=kind, **over)


async def soft_reset_mid_run(tb, packets):
    """Start a run, send ``packets`` (a run's first packets) with its results held back, check
    it is busy, soft-reset it and check the core is idle again; the streams and their checkers
    are then cleared for the next run."""
    assert await tb.control("start") == 0
    tb.pause_streams(None, [1])
    await tb.send_packets(packets)
    await tb.source.wait()
    await ClockCycles(tb.dut.clk, 40)
    assert await tb.get("STATUS", "busy") == 1, "the held-back run is not busy"
    await tb.control("soft_reset")
    await ClockCycles(tb.dut.clk, 4)
    assert await tb.get("STATUS", "idle") == 1, "not idle after the soft reset"
    tb.pause_streams(None, None)
    tb.sink.clear()
    tb.in_check.take()
    tb.out_check.take()


async def run_packets(tb, packets, want, what, leftover="beats after the result packet"):
    """Start a run, send ``packets`` and check it: the core ends without an error, and its
    result packet (none when ``want`` is empty: a quiet run) is exactly the beats
    ``want``, as the m_axis checker saw them. ``leftover`` names a beat after it."""
    assert await tb.control("start") == 0, f"{what}: start refused"
    if want:
        tb.out_check.expect(len(want))
    tb.out_check.take()
    cocotb.start_soon(tb.send_packets(packets))
    got = []
    if want:
        try:
            frame = await with_timeout(tb.sink.recv(), 4_000_000, "ns")
        except SimTimeoutError:
            raise AssertionError(f"{what}: no result packet within 400000 cycles (STATUS "
                                 f"0x{await tb.read('STATUS'):x}, ERROR "
                                 f"0x{await tb.read('ERROR'):x})") from None
        got = tb.beats_of(frame)
    await tb.wait_done(timeout_cycles=400_000)
    code = await tb.get("ERROR", "core_code")
    assert code == 0, f"{what}: the core stopped with error {code}"
    await tb.source.wait()
    assert len(got) == len(want), f"{what}: {len(got)} result beats, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, (f"{what}: result beat {i} of {len(want)}: got 0x{g:x}, expected "
                        f"0x{w:x}")
    seen = [b[0] for b in tb.out_check.take()]
    assert seen == got, f"{what}: m_axis carried {len(seen)} beats, the sink got {len(got)}"
    assert tb.sink.empty(), f"{what}: {leftover}"


async def run_on_engine(tb, layer, k, *, what):
    """Start, send the packets of ``layer`` on engine ``k``, receive and compare every result
    beat with the golden model of engine ``k``."""
    cfg = tb.cfg
    packets = pack_engine_layer(cfg, layer, k)
    want = expected_beats(engine_view(cfg, k), layer)
    before = {n: await tb.counter(n) for n in ("BUSY_CYCLES", "TERMS")}
    assert await tb.control("start") == 0, f"{what}: start refused"
    tb.out_check.expect(len(want))
    tb.in_check.expect(*(len(p.beats) for p in packets))
    tb.in_check.take()
    tb.out_check.take()
    cocotb.start_soon(tb.send_packets(packets))
    try:
        frame = await with_timeout(tb.sink.recv(), 4_000_000, "ns")
    except SimTimeoutError:
        raise AssertionError(f"{what}: no result packet within 400000 cycles (STATUS "
                             f"0x{await tb.read('STATUS'):x}, ERROR 0x{await tb.read('ERROR'):x}"
                             f")") from None
    got = tb.beats_of(frame)
    await tb.wait_done()
    code = await tb.get("ERROR", "core_code")
    assert code == 0, f"{what}: the core stopped with error {code}"
    assert len(got) == len(want), f"{what}: {len(got)} result beats, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"{what}: result beat {i} of {len(want)}: got 0x{g:x}, expected 0x{w:x}"
    seen = [b[0] for b in tb.out_check.take()]
    assert seen == got, f"{what}: m_axis carried {len(seen)} beats, the sink got {len(got)}"
    tb.check_protocol()
    # TERMS: rows * cols per input vector of the walk, folded or not; a folded engine takes
    # one vector every folds(k) cycles, so the run lasts at least that many per vector.
    d = {n: await tb.counter(n) - before[n] for n in before}
    g = layer_geometry(engine_view(cfg, k), layer)
    vectors = g["M"] * g["NT"] * g["KT"]
    assert d["TERMS"] == vectors * cfg.engine.pe_count, \
        f"{what}: TERMS {d['TERMS']}, expected {vectors} vectors x {cfg.engine.pe_count}"
    assert d["BUSY_CYCLES"] >= vectors * cfg.folds(k), \
        f"{what}: BUSY_CYCLES {d['BUSY_CYCLES']} < {vectors} vectors x {cfg.folds(k)} passes"


def _layers(cfg, rng, k):
    """A few layers of every kind for engine ``k``."""
    R, C = cfg.engine.rows, cfg.engine.cols
    yield "matmul", engine_layer(cfg, rng, k, "matmul", m=2 * R + 1, k=2 * R + 1, n=C + 2)
    yield "conv 3x3 p1", engine_layer(cfg, rng, k, "conv", in_c=R + 1, h=5, w=6, out_c=C + 1,
                                      padding=(1, 1), m_block=7)
    yield "shift 1x1", engine_layer(cfg, rng, k, "shift", in_c=R + 2, h=4, w=5, out_c=C)


async def _identity(tb):
    """ENGINES and ENGINE_j read back as the config says."""
    cfg = tb.cfg
    n = len(cfg.engines)
    assert await tb.get("ENGINES", "count") == n
    assert await tb.get("ENGINES", "code_width") == cfg.code_width
    assert await tb.get("ENGINES", "acc_width") == cfg.acc_width
    for j in range(3):
        for f in ("pe", "arch", "weight_bits", "acc_width", "cols"):
            got = await tb.get(f"ENGINE_{j}", f)
            want = engine_register_value(cfg, j, f)
            assert got == want, f"ENGINE_{j}.{f}: got {got}, expected {want}"


@cocotb.test()
async def engines_in_turn(dut):
    """Layers on engine 0, 1, 0, 1, ... (every engine, and back), under random pauses on both
    streams; each against the golden model of its engine."""
    tb = TB(dut)
    await tb.reset()
    await _identity(tb)
    cfg = tb.cfg
    rng = np.random.default_rng(tb.seed)
    n = len(cfg.engines)
    order = list(range(n)) + list(range(n))[::-1] + list(range(n))
    for step, k in enumerate(order):
        if step == len(order) // 2:
            tb.pause_streams(random_pauses(tb.seed + 1, 0.3), random_pauses(tb.seed + 2, 0.4, 9))
        for name, layer in _layers(cfg, rng, k):
            await run_on_engine(tb, layer, k, what=f"step {step}, engine {k} "
                                                    f"({cfg.engines[k].pe}): {name}")
    tb.pause_streams(None, None)


@cocotb.test()
async def engine_refused(dut):
    """A missing engine is ENGINE (10): the rest of the layer is dropped and the core idles; a
    good layer runs next. A soft reset in the middle of a run on the last engine, then a layer
    on engine 0."""
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    rng = np.random.default_rng(tb.seed + 5)
    n = len(cfg.engines)
    code = tb.core_errors["ENGINE"]
    assert code == 10
    for bad in (n, 15):
        layer = engine_layer(cfg, rng, 0, "conv", in_c=3, h=4, w=4, out_c=2, padding=(1, 1))
        packets = pack_engine_layer(cfg, layer, 0, engine=bad)
        assert await tb.control("start") == 0
        for p in packets:
            await tb.source.send(tb.frame(p.beats))
        await tb.wait_done(timeout_cycles=20_000)
        got = await tb.get("ERROR", "core_code")
        assert got == code, f"engine {bad} of {n}: error {got}, expected ENGINE ({code})"
        assert await tb.get("STATUS", "error") == 1, f"engine {bad}: STATUS.error not set"
        assert await tb.get("STATUS", "idle") == 1, f"engine {bad}: not idle after the error"
        await with_timeout(tb.source.wait(), 400_000, "ns")
        await ClockCycles(dut.clk, 4)
        assert tb.sink.empty(), f"engine {bad}: results of a refused layer"
        tb.in_check.take()
        tb.out_check.take()
        k = (bad + 1) % n
        await run_on_engine(tb, engine_layer(cfg, rng, k, "conv", in_c=3, h=4, w=5, out_c=3,
                                             padding=(1, 1)), k,
                            what=f"engine {k} after the refused engine {bad}")
    # A soft reset mid-run on the last engine (results held back), then engine 0.
    last = n - 1
    layer = engine_layer(cfg, rng, last, "conv", in_c=3, h=6, w=6, out_c=cfg.engine.cols + 1,
                         padding=(1, 1))
    await soft_reset_mid_run(tb, pack_engine_layer(cfg, layer, last)[:3])
    await run_on_engine(tb, engine_layer(cfg, rng, 0, "conv", in_c=3, h=4, w=5, out_c=4,
                                         padding=(1, 1)), 0, what="engine 0 after a soft reset")
    await run_on_engine(tb, engine_layer(cfg, rng, last, "matmul", m=5, k=4, n=3), last,
                        what=f"engine {last} after a soft reset")
    # Interface 2.2: REUSE compares the engine. Weights of the same sizes loaded on engine
    # `last` are not reusable on engine 0; reused on `last` itself they are.
    other = dataclasses.replace(engine_layer(cfg, rng, 0, "matmul", m=5, k=4, n=3),
                                reuse_weights=True)
    assert await tb.control("start") == 0
    await tb.send_packets(pack_engine_layer(cfg, other, 0))
    await tb.wait_done(timeout_cycles=20_000)
    got = await tb.get("ERROR", "core_code")
    assert got == tb.core_errors["REUSE"], f"reuse on another engine: error {got}, not REUSE"
    await with_timeout(tb.source.wait(), 400_000, "ns")
    tb.in_check.take()
    tb.out_check.take()
    layer = engine_layer(cfg, rng, last, "matmul", m=5, k=4, n=3)
    await run_on_engine(tb, layer, last, what=f"engine {last} after REUSE")
    lo, hi = cfg.engine.act_range
    await run_on_engine(tb, dataclasses.replace(layer, reuse_weights=True,
                                                x=rng.integers(lo, hi + 1, layer.x.shape)),
                        last, what=f"engine {last} reusing its own weights")
