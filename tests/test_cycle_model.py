"""Tests of :mod:`mulfree.host.cycle_model` that need no simulator: its stream layout against
the packer's, and what the shortcut of a residual layer costs.

The model's accuracy against ``BUSY_CYCLES`` is measured on the simulated board
(``tests/test_run_graph.py``, ``test_cycle_model_matches_busy_cycles``).
"""

from dataclasses import replace

import numpy as np
import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import DESC_BITS, CoreConfig
from mulfree.params.layer_golden import PostParams, ResidualParams
from mulfree.params.manifest import post_latency
from mulfree.host import layer_stream as ls
from mulfree.host.cycle_model import (END_CYCLES, START_CYCLES, run_cycles, setup_cycles,
                                      stream_layout)
from mulfree.host.stream_format import first_block_acts


ENGINES = {
    "shift4x4": ArrayConfig(pe="shift", rows=4, cols=4),
    "adder8x8": ArrayConfig(pe="adder", rows=8, cols=8, act_bits=8),
    "mult_tree5x3": ArrayConfig(pe="mult", arch="tree", rows=5, cols=3, act_bits=6),
}


def zero_layer(in_c, size, out_c, kernel, stride=1, *, residual=False, clamp=False,
               shifts=False, m_block=None):
    x = np.zeros((in_c, size, size), np.int64)
    w = np.zeros((out_c, in_c, kernel, kernel), np.int64)
    post = PostParams(np.zeros(out_c, np.int64), np.zeros(out_c, np.int64))
    layer = ls.Layer(x, w, post, stride=stride, padding=kernel // 2, m_block=m_block,
                     shifts=np.zeros((in_c, 2), np.int64) if shifts else None)
    out = (size + 2 * (kernel // 2) - kernel) // stride + 1
    if residual:
        layer = replace(layer, shortcut=np.zeros((out_c, out, out), np.int64),
                        residual=ResidualParams(1, 0, 1))
    return replace(layer, clamp=(0, 6) if clamp else None)


SHAPES = [(8, 16, 8, 3, 1), (16, 8, 16, 1, 1), (4, 12, 4, 1, 1), (6, 9, 11, 3, 2)]


@pytest.mark.parametrize("width", [32, 128])
@pytest.mark.parametrize("engine", ENGINES)
def test_stream_layout_is_the_packers(engine, width):
    """Every segment of the model's stream starts at the beat where ``pack_layer`` puts it."""
    cfg = CoreConfig(ENGINES[engine], stream_width=width)
    for shape in SHAPES:
        for residual, shifts, reuse in [(False, False, False), (True, False, False),
                                        (True, True, False), (True, False, True),
                                        (False, True, True)]:
            layer = replace(zero_layer(*shape, residual=residual, shifts=shifts, m_block=7),
                            reuse_weights=reuse)
            g = ls.layer_geometry(cfg, layer)
            layout, total = stream_layout(cfg, g, reuse, first_block_acts(layer, g))
            packets = ls.pack_layer(cfg, layer)[1:]
            want, beat, seen = {}, 0, {}
            for p in packets:
                start = seen.get(p.type, 0)
                want.setdefault(p.type, []).append((start, p.count, beat + 1))
                seen[p.type] = start + p.count
                beat += len(p.beats)
            assert layout == want, (shape, residual, shifts, reuse)
            assert total == beat


def _t_run(cfg, g):
    return START_CYCLES + 1 + cfg.beats(DESC_BITS) + setup_cycles(cfg, g)


@pytest.mark.parametrize("engine", ENGINES)
def test_shortcut_costs_its_beats_when_the_stream_bounds(engine):
    """A 1x1 layer is bound by its stream: its last result waits for the last SHORTCUT
    vector, so a residual adds about the shortcut's beats and headers; the run never ends before the
    stream does. A clamp costs nothing."""
    cfg = CoreConfig(ENGINES[engine], stream_width=64)
    cols = cfg.engine.cols                    # one output tile: one pass per block
    plain, res = zero_layer(4, 24, cols, 1), zero_layer(4, 24, cols, 1, residual=True)
    g, gr = ls.layer_geometry(cfg, plain), ls.layer_geometry(cfg, res)
    for reuse in (False, True):
        a = run_cycles(cfg, g, reuse=reuse, first_acts=first_block_acts(plain, g))
        b = run_cycles(cfg, gr, reuse=reuse, first_acts=first_block_acts(res, gr))
        _, total = stream_layout(cfg, gr, reuse, first_block_acts(res, gr))
        beats = gr["counts"]["SHORTCUT"] * cfg.beats(cfg.vector_bits["SHORTCUT"])
        assert b >= _t_run(cfg, gr) + total + post_latency(cfg) + END_CYCLES
        # Each further block's ACTS and SHORTCUT come in their own packets: two headers.
        headers = 2 * (-(-gr["M"] // gr["m_block"]) - 1)
        assert 0.85 * beats <= b - a <= beats + headers + 4, (a, b, beats)
        clamped = zero_layer(4, 24, cols, 1, clamp=True)
        assert run_cycles(cfg, ls.layer_geometry(cfg, clamped), reuse=reuse,
                          first_acts=first_block_acts(clamped, g)) == a


@pytest.mark.parametrize("engine", ENGINES)
def test_shortcut_is_free_when_the_engine_bounds(engine):
    """A 3x3 layer with many channels computes longer than its stream takes: the shortcut
    arrives before its results need it and costs only the beats that delay the weights and
    activations behind the first block's shortcut (nothing when reusing)."""
    cfg = CoreConfig(ENGINES[engine], stream_width=64)
    plain, res = zero_layer(16, 10, 16, 3), zero_layer(16, 10, 16, 3, residual=True)
    g, gr = ls.layer_geometry(cfg, plain), ls.layer_geometry(cfg, res)
    # Core 2.0's setup multiplies by the shortcut's sizes: a residual's setup is longer.
    setup = setup_cycles(cfg, gr) - setup_cycles(cfg, g)
    assert 0 < setup < 20
    a = run_cycles(cfg, g, reuse=True, first_acts=first_block_acts(plain, g))
    b = run_cycles(cfg, gr, reuse=True, first_acts=first_block_acts(res, gr))
    assert a + setup == b
    a = run_cycles(cfg, g, first_acts=first_block_acts(plain, g))
    b = run_cycles(cfg, gr, first_acts=first_block_acts(res, gr))
    first = min(gr["m_block"], gr["M"]) * gr["NT"] * cfg.beats(cfg.vector_bits["SHORTCUT"])
    assert a + setup <= b <= a + setup + first + 1


def test_reuse_without_residual_sends_acts_in_one_piece():
    """Without a residual a reusing run's ACTS are one segment, whatever ``first_acts``."""
    cfg = CoreConfig(ENGINES["shift4x4"], stream_width=32)
    for shape in SHAPES:
        layer = zero_layer(*shape, m_block=5)
        g = ls.layer_geometry(cfg, layer)
        assert run_cycles(cfg, g, reuse=True, first_acts=first_block_acts(layer, g)) == \
            run_cycles(cfg, g, reuse=True)
        layout, _ = stream_layout(cfg, g, True, first_block_acts(layer, g))
        assert layout == {"ACTS": [(0, g["counts"]["ACTS"], 1)]}


@pytest.mark.parametrize("engine", ENGINES)
def test_post_processing_latency_follows_the_shortcut_buffer(engine):
    """A core with a shortcut buffer post-processes in 7 stages, one without in 4: the same
    run ends three cycles later (one result beat per vector: nothing else moves)."""
    e = ENGINES[engine]
    for shape in SHAPES:
        layer = zero_layer(*shape)
        with_buffer, without = CoreConfig(e, stream_width=256), \
            CoreConfig(e, stream_width=256, shortcut_vectors=0)
        assert (post_latency(with_buffer), post_latency(without)) == (7, 4)
        g = ls.layer_geometry(with_buffer, layer)
        first = first_block_acts(layer, g)
        assert run_cycles(with_buffer, g, first_acts=first) == \
            run_cycles(without, g, first_acts=first) + 3
