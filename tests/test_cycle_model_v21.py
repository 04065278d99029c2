"""Tests of :mod:`mulfree.host.cycle_model` for core interface 2.1 that need no simulator: the
stream layout of a multi-engine core's runs against the packer's, the engine a geometry
names, and a folded engine's pace worked out by hand. The model is checked against
``BUSY_CYCLES`` of multi-engine cores on the simulated board in ``tests/test_device_v21.py``.
"""

from dataclasses import replace

import numpy as np
import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.params.layer_golden import PostParams, ResidualParams
from mulfree.host import layer_stream as ls
from mulfree.host.cycle_model import run_cycles, stream_layout
from mulfree.host.stream_format import first_block_acts


SHIFT = ArrayConfig(pe="shift", rows=4, cols=8, act_bits=8, weight_bits=5, max_k=256)
ADDER = ArrayConfig(pe="adder", rows=4, cols=8, act_bits=8, max_k=256)
MULT = ArrayConfig(pe="mult", rows=4, cols=8, act_bits=8, weight_bits=3, max_k=256)


def core(cols=(), width=64):
    return CoreConfig(SHIFT, extra_engines=(ADDER, MULT), engine_cols=cols, stream_width=width,
                      shortcut_vectors=1024, pool_pixels=256)


def zero_layer(in_c, size, out_c, kernel, engine, *, short=None, pool=None, m_block=None,
               reuse=False):
    x = np.zeros((in_c, size, size), np.int64)
    w = np.zeros((out_c, in_c, kernel, kernel), np.int64)
    post = PostParams(np.zeros(out_c, np.int64), np.zeros(out_c, np.int64))
    layer = ls.Layer(x, w, post, padding=kernel // 2, m_block=m_block, pool=pool,
                     reuse_weights=reuse, engine=engine)
    if short is not None:
        c, off, s = short
        layer = replace(layer, shortcut=np.zeros((c, size * s, size * s), np.int64),
                        residual=ResidualParams(1, 0, 1, stride=s, offset=off))
    return layer


@pytest.mark.parametrize("width", [32, 128])
@pytest.mark.parametrize("k", [0, 1, 2])
def test_stream_layout_is_the_packers_on_each_engine(k, width):
    """WEIGHTS of ``code_width``-bit slots and PARAMS of the widest accumulator: every
    segment starts at the beat where ``pack_layer`` puts it, whichever engine runs."""
    cfg = core((8, 8, 2), width)
    for layer in (zero_layer(6, 7, 11, 3, k, m_block=9),
                  zero_layer(5, 6, 12, 1, k, short=(6, 3, 2), pool=3),
                  zero_layer(6, 7, 11, 3, k, reuse=True)):
        g = ls.layer_geometry(cfg, layer)
        layout, total = stream_layout(cfg, g, layer.reuse_weights, first_block_acts(layer, g))
        want, beat, seen = {}, 0, {}
        for p in ls.pack_layer(cfg, layer)[1:]:
            start = seen.get(p.type, 0)
            want.setdefault(p.type, []).append((start, p.count, beat + 1))
            seen[p.type] = start + p.count
            beat += len(p.beats)
        assert layout == want and total == beat


def test_the_geometry_names_the_engine():
    """``layer_geometry`` carries the layer's engine; ``run_cycles`` takes it from there, or
    from ``engine=``; a geometry without one (an older caller's) is engine 0's."""
    cfg = core((8, 8, 2))
    layer = zero_layer(6, 7, 11, 3, 2, m_block=9)
    g = ls.layer_geometry(cfg, layer)
    assert g["engine"] == 2
    folded = run_cycles(cfg, g)
    assert folded == run_cycles(cfg, dict(g, engine=0), engine=2)
    plain = dict(g)
    del plain["engine"]
    assert run_cycles(cfg, plain) == run_cycles(cfg, g, engine=0) < folded


@pytest.mark.parametrize("phys", [4, 2, 1])
def test_a_folded_engine_takes_a_vector_every_folds_cycles(phys):
    """One compute-bound pass (a 1x1 layer of one tile each way, weights reused, one block):
    folded ``f = 8 / phys`` times, the engine takes its ``M`` vectors ``f`` cycles apart and
    its result leaves ``fold_latency`` after the last: ``(M - 1)(f - 1)`` cycles and the
    latencies' difference more than the same engine unfolded."""
    full, fold = core((8, 8, 8)), core((8, 8, phys))
    f = fold.folds(2)
    assert f == 8 // phys and fold.engine_latency(2) == 4 + f + 1
    layer = zero_layer(4, 12, 8, 1, 2, m_block=144, reuse=True)
    g_full, g_fold = ls.layer_geometry(full, layer), ls.layer_geometry(fold, layer)
    assert g_full["M"] == 144 and g_full["KT"] == g_full["NT"] == 1
    first = first_block_acts(layer, g_full)
    base = run_cycles(full, g_full, reuse=True, first_acts=first)
    slow = run_cycles(fold, g_fold, reuse=True, first_acts=first)
    assert slow - base == 143 * (f - 1) + fold.engine_latency(2) - full.engine_latency(2)
    # Engine 0 on the same cores: no change.
    g0 = ls.layer_geometry(full, replace(layer, engine=0))
    assert run_cycles(full, g0, reuse=True, first_acts=first) == \
        run_cycles(fold, g0, reuse=True, first_acts=first)
