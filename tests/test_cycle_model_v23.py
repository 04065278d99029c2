"""Window runs (interface 2.3) in the cycle model, and on the simulated board.

Without a simulator: a max or sum run's stream carries no WEIGHTS, a depthwise run's
``NT*kk`` rows; the lane unit's walk is ``NT*kk*M`` vectors, one per cycle; its latency is
``WINDOW_LATENCY``, not the engine's. On the board (a 4x4 shift core with the lane unit, two
banks, a 64-bit stream, Verilator): max, sum and depthwise runs of several shapes (short
blocks, strides, padding, a residual, a pool, kept and quiet, reused weights) equal the golden
output of :mod:`mulfree.params.window_golden` and the tail; ``BUSY_CYCLES`` exactly
:func:`~mulfree.host.cycle_model.run_cycles`; ``TERMS`` grows by ``NT*kk*M*C``; ``WINDOW``
reads the lanes.

The board tests need Verilator and the lane unit's RTL: without them they fail
(``SimulatorMissing``), never skip.
"""

import json
from dataclasses import replace

import numpy as np
import pytest

from cores import SMALL_BUFFERS, generated
from test_window_layer import gold, window

from mulfree.gen.core_manifest import core_manifest
from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import WINDOW_LATENCY, CoreConfig
from mulfree.params.layer_golden import PostParams, ResidualParams
from mulfree.host import layer_stream as ls
from mulfree.host import stream_pack
from mulfree.host.cycle_model import (START_CYCLES, run_cycles, run_terms, setup_cycles,
                                      stream_layout)
from mulfree.host.runtime import Device
from mulfree.host.stream_format import first_block_acts
from mulfree.sim.backend import SimBackend
from mulfree.sim.board import SimCore, build_sim_core


LANE_CORE = CoreConfig(ArrayConfig(pe="shift", rows=4, cols=4, act_bits=6, weight_bits=5,
                                   max_k=64), shortcut_vectors=256, pool_pixels=64,
                       **SMALL_BUFFERS)


def estimate(cfg, layer):
    g = ls.layer_geometry(cfg, layer)
    return run_cycles(cfg, g, reuse=layer.reuse_weights, shift=layer.shifts is not None,
                      first_acts=first_block_acts(layer, g))


def test_the_stream_of_a_window_run():
    rng = np.random.default_rng(0)
    for kind, weights in (("max", 0), ("sum", 0), ("depthwise", 2 * 9)):
        layer = window(rng, kind, cfg=LANE_CORE)
        g = ls.layer_geometry(LANE_CORE, layer)
        layout, _ = stream_layout(LANE_CORE, g, False, first_block_acts(layer, g))
        assert sum(n for _, n, _ in layout.get("WEIGHTS", [])) == weights, kind
        assert "SHIFT" not in layout and sum(n for _, n, _ in layout["PARAMS"]) == 6


def test_the_walk_is_one_vector_per_cycle():
    """With every activation in place (resident) and no weights (max), one more output tile
    of the same map costs ``kk*M`` cycles after the setup: one vector per cycle through the
    lane unit, the passes back to back (blocks no shorter than the hazard window)."""
    rng = np.random.default_rng(1)
    cost = {}
    for c in (4, 8):
        layer = window(rng, "max", c=c, h=8, w=8, cfg=LANE_CORE, acts_resident=True,
                       keep=True, quiet=True, m_block=32)
        g = ls.layer_geometry(LANE_CORE, layer)
        t_run = START_CYCLES + 1 + LANE_CORE.beats(256) + setup_cycles(LANE_CORE, g)
        cost[c] = estimate(LANE_CORE, layer) - t_run       # the setup differs too
        assert cost[c] >= g["NT"] * 9 * 64
    assert cost[8] - cost[4] == 9 * 64


def test_the_lane_units_latency():
    """A run of short blocks waits for each pass to leave the lane unit: its estimate grows by
    the blocks' passes times a latency change (``WINDOW_LATENCY``, not the engine's)."""
    import mulfree.host.cycle_model as cm
    rng = np.random.default_rng(2)
    layer = window(rng, "sum", c=4, h=4, w=4, cfg=LANE_CORE, m_block=4, padding=1)
    base = estimate(LANE_CORE, layer)
    try:
        cm.WINDOW_LATENCY = WINDOW_LATENCY + 1
        later = estimate(LANE_CORE, layer)
    finally:
        cm.WINDOW_LATENCY = WINDOW_LATENCY
    # 4 blocks x 9 passes, the first of each tile reads no partial sum: 4 * 8 waits.
    assert later - base >= 4 * 8 - 1, (base, later)


# On the board -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def device(board_cache):
    cfg = LANE_CORE
    assert cfg.window_ops and cfg.fmap_banks == 2
    _, j_path = generated(cfg)
    lib = build_sim_core(j_path, build_dir=board_cache)
    core = SimCore(lib, core_manifest(cfg))
    core.reset()
    manifest = json.loads(j_path.read_text())
    with Device(SimBackend(core, manifest), manifest, timeout=20.0) as dev:
        yield cfg, dev


def run(cfg, dev, layer):
    """Execute ``layer``; its result beats, ``BUSY_CYCLES`` and ``TERMS`` deltas."""
    bb = cfg.stream_width // 8
    g = ls.layer_geometry(cfg, layer)
    packets = stream_pack.layer_packets(cfg, layer, dev.max_packet_bytes)
    nbytes = 0 if layer.quiet else g["results"] * cfg.beats(cfg.vector_bits["OUT"]) * bb
    before = dev.counters()
    data = np.asarray(dev.execute(packets, nbytes), np.uint8)
    after = dev.counters()
    return ([int.from_bytes(data[k:k + bb].tobytes(), "little")
             for k in range(0, len(data), bb)],
            after["BUSY_CYCLES"] - before["BUSY_CYCLES"], after["TERMS"] - before["TERMS"])


def _runs(cfg, rng):
    """Window runs of every kind: shapes, short blocks, the tail, reuse."""
    lo, hi = cfg.engine.act_range
    out = []
    for kind in ("max", "sum", "depthwise"):
        out += [window(rng, kind, cfg=cfg),
                window(rng, kind, c=9, kernel=(3, 2), stride=(2, 1), padding=(1, 1),
                       cfg=cfg, m_block=5),
                window(rng, kind, c=4, h=6, w=6, kernel=2, stride=2, padding=0, cfg=cfg),
                window(rng, kind, c=5, h=4, w=4, cfg=cfg, pool=3, clamp=(0, 20))]
    res = ResidualParams(1, 0, 1, True, stride=2, offset=2)
    out.append(window(rng, "depthwise", c=6, h=6, w=6, cfg=cfg, m_block=7, residual=res,
                      shortcut=rng.integers(lo, hi, (4, 12, 12))))
    dw = window(rng, "depthwise", c=8, h=5, w=5, cfg=cfg)
    out += [dw, replace(dw, x=rng.integers(lo, hi, (8, 5, 5)), reuse_weights=True)]
    # Blocks of one pixel (passes of one vector: the lane unit's pending weight row binds),
    # 1x1 windows, a first pass wholly in the padding (it needs nothing).
    out += [window(rng, "depthwise", c=8, h=5, w=5, cfg=cfg, m_block=4),
            window(rng, "depthwise", c=8, h=3, w=3, cfg=cfg, m_block=1),
            window(rng, "max", c=8, h=3, w=3, cfg=cfg, m_block=1),
            window(rng, "depthwise", c=8, h=4, w=4, cfg=cfg, kernel=1, padding=0, m_block=1),
            window(rng, "max", c=4, h=6, w=6, cfg=cfg, stride=2, padding=1, m_block=2)]
    return out


def test_window_runs_on_the_board(device):
    """Every run's beats equal the golden model's; ``BUSY_CYCLES`` exactly the model's;
    ``TERMS`` is ``NT*kk*M*C``."""
    cfg, dev = device
    report = []
    for i, layer in enumerate(_runs(cfg, np.random.default_rng(3))):
        beats, busy, terms = run(cfg, dev, layer)
        want = gold(cfg, layer)
        assert np.array_equal(ls.unpack_results(cfg, layer, beats), want), (i, layer.window)
        g = ls.layer_geometry(cfg, layer)
        assert terms == g["NT"] * g["KT"] * g["M"] * cfg.engine.cols == run_terms(cfg, g), \
            (i, terms)
        report.append((i, layer.window, busy, estimate(cfg, layer)))
    bad = [r for r in report if r[2] != r[3]]
    assert not bad, f"(run, kind, BUSY_CYCLES, estimate) not exact: {bad} of {report}"


def test_a_chain_with_window_runs_on_the_board(device):
    """conv (keep, quiet) -> 2x2 max pool from the bank (keep, quiet) -> depthwise adding the
    conv's output from the bank in place (keep) -> sum from the bank: the sent results equal
    the golden chain's, ``BUSY_CYCLES`` exactly the model's."""
    cfg, dev = device
    rng = np.random.default_rng(4)
    lo, hi = cfg.engine.act_range
    x0 = rng.integers(lo, hi + 1, (6, 6, 6))
    conv = ls.Layer(x0, rng.integers(0, 32, (6, 6, 3, 3)),
                    PostParams(rng.integers(-9, 9, 6), np.full(6, 4), True), padding=1,
                    keep=True, quiet=True)
    y1 = gold(cfg, conv)
    pool = replace(window(rng, "max", kernel=2, padding=0, stride=2, cfg=cfg), x=y1,
                   in_bank=1, acts_resident=True, keep=True, quiet=True)
    y2 = gold(cfg, pool)
    dw = replace(window(rng, "depthwise", h=3, w=3, cfg=cfg), x=y2, acts_resident=True,
                 keep=True, short_resident=True, shortcut=y1,
                 residual=ResidualParams(1, 0, 1, True, stride=2))
    y3 = gold(cfg, dw)
    last = replace(window(rng, "sum", h=3, w=3, cfg=cfg), x=y3, in_bank=1, acts_resident=True)
    report = []
    for i, layer in enumerate((conv, pool, dw, last)):
        beats, busy, _ = run(cfg, dev, layer)
        if not layer.quiet:
            assert np.array_equal(ls.unpack_results(cfg, layer, beats), gold(cfg, layer)), i
        report.append((i, busy, estimate(cfg, layer)))
    assert all(r[1] == r[2] for r in report), report


def test_window_is_an_identity_register(device):
    cfg, dev = device
    assert dev.read("WINDOW") == cfg.engine.cols
    assert dev.field("VERSION", "minor", dev.read("VERSION")) >= 3     # 2.4 kept WINDOW


# A core of three engines: a depthwise run on each kind's terms ---------------------------------

MULTI_LANES = CoreConfig(ArrayConfig(pe="shift", rows=4, cols=4, act_bits=6, weight_bits=5,
                                     max_k=64),
                         extra_engines=(ArrayConfig(pe="adder", rows=4, cols=4, act_bits=6,
                                                    max_k=64),
                                        ArrayConfig(pe="mult", rows=4, cols=4, act_bits=6,
                                                    weight_bits=4, max_k=64)),
                         engine_cols=(4, 4, 2), stream_width=32, shortcut_vectors=64,
                         pool_pixels=64, **SMALL_BUFFERS)


def test_depthwise_on_every_engine_on_the_board(board_cache):
    """Shift, adder (padding adds -|w|) and a mult engine folded to 2 columns (the lane unit
    has its own term circuits: one vector per cycle whatever the engine's folding), a 32-bit
    stream (two beats per weight row): the golden results, ``BUSY_CYCLES`` exactly the model's;
    max and sum on engine 2 too. A depthwise run's weights loaded on one engine are refused
    (REUSE) on another."""
    cfg = MULTI_LANES
    assert cfg.window_ops
    _, j_path = generated(cfg)
    core = SimCore(build_sim_core(j_path, build_dir=board_cache), core_manifest(cfg))
    core.reset()
    manifest = json.loads(j_path.read_text())
    rng = np.random.default_rng(6)
    report = []
    with Device(SimBackend(core, manifest), manifest, timeout=20.0) as dev:
        for engine in (0, 1, 2):
            for kw in (dict(), dict(c=9, m_block=3, stride=2)):
                layer = window(rng, "depthwise", cfg=cfg, engine=engine, **kw)
                beats, busy, _ = run(cfg, dev, layer)
                assert np.array_equal(ls.unpack_results(cfg, layer, beats), gold(cfg, layer)), \
                    (engine, kw)
                report.append((engine, kw, busy, estimate(cfg, layer)))
        for kind in ("max", "sum"):
            layer = window(rng, kind, cfg=cfg, engine=2, m_block=4)
            beats, busy, _ = run(cfg, dev, layer)
            assert np.array_equal(ls.unpack_results(cfg, layer, beats), gold(cfg, layer))
            report.append((2, kind, busy, estimate(cfg, layer)))
        from mulfree.host.runtime import CoreRunError
        dw = window(rng, "depthwise", cfg=cfg, engine=1)
        run(cfg, dev, dw)
        with pytest.raises(CoreRunError) as info:
            run(cfg, dev, replace(dw, engine=2, w_codes=np.asarray(dw.w_codes) & 7,
                                  reuse_weights=True))
        assert info.value.name == "REUSE"
    assert all(r[2] == r[3] for r in report), report


def test_serializer_bound_window_runs_on_the_board(board_cache):
    """An 8x8 core on a 32-bit stream: a result vector takes two beats, so 1x1 windows and
    short passes are bound by the serializer (the output FIFO fills and stalls the lane unit):
    golden results, ``BUSY_CYCLES`` exactly the model's."""
    cfg = CoreConfig(ArrayConfig(pe="shift", rows=8, cols=8, act_bits=8, weight_bits=5,
                                 max_k=64), stream_width=32, shortcut_vectors=64,
                     pool_pixels=64, **SMALL_BUFFERS)
    assert cfg.beats(cfg.vector_bits["OUT"]) == 2
    _, j_path = generated(cfg)
    core = SimCore(build_sim_core(j_path, build_dir=board_cache), core_manifest(cfg))
    core.reset()
    manifest = json.loads(j_path.read_text())
    rng = np.random.default_rng(7)
    report = []
    with Device(SimBackend(core, manifest), manifest, timeout=20.0) as dev:
        for kind in ("max", "sum", "depthwise"):
            for kw in (dict(c=8, h=8, w=8, kernel=1, padding=0),
                       dict(c=12, h=6, w=6, stride=2, m_block=3),
                       dict(c=16, h=6, w=6, m_block=9)):
                layer = window(rng, kind, cfg=cfg, **kw)
                beats, busy, _ = run(cfg, dev, layer)
                assert np.array_equal(ls.unpack_results(cfg, layer, beats),
                                      gold(cfg, layer)), (kind, kw)
                report.append((kind, kw, busy, estimate(cfg, layer)))
    assert all(r[2] == r[3] for r in report), report
