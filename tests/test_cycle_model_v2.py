"""Tests of :mod:`mulfree.host.cycle_model` for core interface 2.0 that need no simulator:
the stream layout of aligned shortcuts and pooled layers against the packer's, which SHORTCUT
source vectors an aligned vector waits for, what a misaligned offset and a pool cost.
"""

from dataclasses import replace

import numpy as np
import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.params.layer_golden import PostParams, ResidualParams
from mulfree.host import layer_stream as ls
from mulfree.params.manifest import pool_latency
from mulfree.host.cycle_model import (SHORTCUT_HOLD_CYCLES, run_cycles, shortcut_holds,
                                      shortcut_needs, stream_layout)
from mulfree.host.stream_format import first_block_acts


ENGINES = {
    "shift4x4": ArrayConfig(pe="shift", rows=4, cols=4),
    "adder8x8": ArrayConfig(pe="adder", rows=8, cols=8, act_bits=8),
    "mult_tree5x3": ArrayConfig(pe="mult", arch="tree", rows=5, cols=3, act_bits=6),
}


def zero_layer(in_c, size, out_c, kernel, stride=1, *, short=None, pool=None, m_block=None):
    """A layer of zeros; ``short = (short_c, offset, s)`` adds an aligned shortcut."""
    x = np.zeros((in_c, size, size), np.int64)
    w = np.zeros((out_c, in_c, kernel, kernel), np.int64)
    post = PostParams(np.zeros(out_c, np.int64), np.zeros(out_c, np.int64))
    layer = ls.Layer(x, w, post, stride=stride, padding=kernel // 2, m_block=m_block,
                     pool=pool)
    out = (size + 2 * (kernel // 2) - kernel) // stride + 1
    if short is not None:
        c, off, s = short
        layer = replace(layer, shortcut=np.zeros((c, out * s, out * s), np.int64),
                        residual=ResidualParams(1, 0, 1, stride=s, offset=off))
    return layer


SHAPES = [(8, 16, 8, 3, 1), (16, 8, 16, 1, 1), (6, 9, 11, 3, 2)]


@pytest.mark.parametrize("width", [32, 128])
@pytest.mark.parametrize("engine", ENGINES)
def test_stream_layout_is_the_packers_v2(engine, width):
    """Aligned shortcuts (source maps twice the output's, offsets inside a vector) and pools:
    every segment starts at the beat where ``pack_layer`` puts it."""
    cfg = CoreConfig(ENGINES[engine], stream_width=width)
    for in_c, size, out_c, k, st in SHAPES:
        for short, pool, reuse in [((out_c // 2, 1, 2), None, False), ((3, 2, 1), 4, False),
                                   ((out_c // 2, out_c // 4, 2), None, True),
                                   (None, 3, True)]:
            layer = replace(zero_layer(in_c, size, out_c, k, st, short=short, pool=pool,
                                       m_block=7), reuse_weights=reuse)
            g = ls.layer_geometry(cfg, layer)
            layout, total = stream_layout(cfg, g, reuse, first_block_acts(layer, g))
            want, beat, seen = {}, 0, {}
            for p in ls.pack_layer(cfg, layer)[1:]:
                start = seen.get(p.type, 0)
                want.setdefault(p.type, []).append((start, p.count, beat + 1))
                seen[p.type] = start + p.count
                beat += len(p.beats)
            assert layout == want and total == beat, (in_c, size, out_c, short, pool)


def test_shortcut_needs_and_holds_by_hand():
    """out 7 channels on 3 columns (NT 3), a 4-channel source (nts 2) at offset 2 (q 0, r 2)
    on a map twice the output's 3x4: an output pixel waits for both vectors of its source
    pixel; the aligner holds one cycle after each kept pixel's last vector (its carried tile
    q + nts = 2 < NT), never with an offset of whole vectors or when that tile is past NT."""
    cfg = CoreConfig(ArrayConfig(pe="mult", rows=2, cols=3, act_bits=8))

    def geometry(short_c, offset, out_c=7):
        layer = ls.Layer(np.zeros((2, 3, 4), np.int64), np.zeros((out_c, 2, 1, 1), np.int64),
                         PostParams(np.zeros(out_c, np.int64), np.zeros(out_c, np.int64)),
                         shortcut=np.zeros((short_c, 6, 8), np.int64),
                         residual=ResidualParams(stride=2, offset=offset))
        return ls.layer_geometry(cfg, layer)
    g = geometry(4, 2)
    pix = np.array([0, 1, 5, 11])                # (0,0) (0,1) (1,1) (2,3)
    source = np.array([0, 2, 18, 38])            # (oy*2)*8 + ox*2
    np.testing.assert_array_equal(shortcut_needs(cfg, g, pix), (source + 1) * 2)
    assert SHORTCUT_HOLD_CYCLES == 1
    # Kept pixels 0, 2, 4, 6 (row 0), 16, ... : last vectors 1, 5, 9, 13, 33, ...
    for start, count, holds in [(0, 96, 12), (0, 2, 0), (0, 3, 1), (2, 4, 0), (3, 3, 0),
                                (4, 3, 1), (0, 34, 4), (0, 35, 5)]:
        assert shortcut_holds(cfg, g, start, count) == holds, (start, count)
    np.testing.assert_array_equal(shortcut_holds(cfg, g, 0, np.array([2, 3, 96])), [0, 1, 12])
    assert shortcut_holds(cfg, geometry(4, 3), 0, 96) == 0        # r = 0
    assert shortcut_holds(cfg, geometry(2, 5), 0, 48) == 12       # q 1 + nts 1 = 2 < NT 3
    assert shortcut_holds(cfg, geometry(4, 4, 9), 0, 96) == 0     # q 1 + nts 2 = NT 3
    assert shortcut_holds(cfg, geometry(3, 4, 9), 0, 48) == 12    # q 1 + nts 1 = 2 < 3


@pytest.mark.parametrize("engine", ENGINES)
def test_misaligned_offset_costs_the_split_cycles_when_the_stream_bounds(engine):
    """A 1x1 layer bound by its stream (256-bit: one beat per SHORTCUT vector): an offset that
    is no multiple of the columns costs the aligner's hold after each kept source pixel, about
    ``M`` cycles more than one that is; the stride multiplies the source vectors sent."""
    cfg = CoreConfig(ENGINES[engine], stream_width=256)
    cols = cfg.engine.cols
    out_c = 2 * cols
    even = zero_layer(4, 12, out_c, 1, short=(cols, cols, 2))
    odd = zero_layer(4, 12, out_c, 1, short=(cols, 1, 2))
    g_even, g_odd = ls.layer_geometry(cfg, even), ls.layer_geometry(cfg, odd)
    assert g_even["scv"] == g_odd["scv"] == 24 * 24
    a = run_cycles(cfg, g_even, reuse=True, first_acts=first_block_acts(even, g_even))
    b = run_cycles(cfg, g_odd, reuse=True, first_acts=first_block_acts(odd, g_odd))
    extra = g_odd["M"] * SHORTCUT_HOLD_CYCLES
    assert 0.85 * extra <= b - a <= extra + 4, (a, b, extra)
    _, total = stream_layout(cfg, g_even, True, first_block_acts(even, g_even))
    assert total >= g_even["scv"] + g_even["counts"]["ACTS"]
    assert total <= a <= total + 300, "bound by the stream of the source's 4 M vectors"


@pytest.mark.parametrize("engine", ENGINES)
def test_pool_costs(engine):
    """Bound by the engine, a pooled run ends ``pool_latency + (NT - 1) * beats`` after the
    plain one (its last pixel's results replaced by the NT pooled vectors); bound by the
    output (a 32-bit stream, several beats per result), it ends far sooner: no result leaves
    but the pixel."""
    e = ENGINES[engine]
    cfg = CoreConfig(e, stream_width=256)
    plain, pooled = zero_layer(16, 8, 16, 3), zero_layer(16, 8, 16, 3, pool=6)
    g, gp = ls.layer_geometry(cfg, plain), ls.layer_geometry(cfg, pooled)
    nb = cfg.beats(cfg.vector_bits["OUT"])
    for reuse in (False, True):
        a = run_cycles(cfg, g, reuse=reuse, first_acts=first_block_acts(plain, g))
        b = run_cycles(cfg, gp, reuse=reuse, first_acts=first_block_acts(pooled, gp))
        assert pool_latency(cfg) == 4
        assert b - a == pool_latency(cfg) + (g["NT"] - 1) * nb, (a, b)
    # Results of 8 lanes x 8 bits: two beats each on 32 bits.
    narrow = CoreConfig(ArrayConfig(pe=e.pe, arch=e.arch, rows=4, cols=8, act_bits=8),
                        stream_width=32)
    plain, pooled = zero_layer(4, 16, 32, 1), zero_layer(4, 16, 32, 1, pool=8)
    g, gp = ls.layer_geometry(narrow, plain), ls.layer_geometry(narrow, pooled)
    nb = narrow.beats(narrow.vector_bits["OUT"])
    assert nb == 2
    a = run_cycles(narrow, g, reuse=True)
    b = run_cycles(narrow, gp, reuse=True)
    passes = g["M"] * g["NT"] * g["KT"]
    assert a >= g["M"] * g["NT"] * nb and passes <= b <= 0.6 * a, (a, b)
