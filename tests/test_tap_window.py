"""``mulfree.rtl.tap_window.TapWindow`` alone in the Amaranth simulator against the model of
the walk, :func:`mulfree.params.tap_walk.tap_windows`.

The test plays the issue unit: it walks :func:`~mulfree.params.tap_walk.tap_reads` of several
output tiles in a row (nothing is cleared between tiles), gives the read's column on ``rd_px``
one cycle before its vector arrives on ``data`` with ``enter`` (S1, S2), with random idle
cycles between reads, and takes ``taps`` on every emitting read. Every emitted vector must be
the model's taps of that output pixel (rows from ``kernel_h*kernel_w`` on 0). Geometries cover
the strides, the paddings, kernels narrower than the window, 1-pixel-wide padded lines
(``Wp == 1``: the line buffers' read meets their write) and a line of exactly ``tap_line``.
"""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.params.tap_walk import tap_reads, tap_windows
from mulfree.rtl.tap_window import TapWindow


_SMALL = dict(fmap_vectors=64, weight_rows=64, acc_entries=16, max_channels=32,
              out_vectors=8, shortcut_vectors=16, pool_pixels=16)
SIDE2 = CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=4, max_k=64), taps=4,
                   tap_line=8, **_SMALL)
SIDE3 = CoreConfig(engine=ArrayConfig(pe="adder", rows=9, cols=9, act_bits=5, max_k=64),
                   taps=9, tap_line=16, **_SMALL)

#: (name, core, map (H, W), kernel, stride, padding).
CASES = [
    ("2x2 s1 p0", SIDE2, (4, 5), (2, 2), (1, 1), (0, 0)),
    ("2x2 s2 p1", SIDE2, (5, 5), (2, 2), (2, 2), (1, 1)),
    ("1x2 s1 p(0,1)", SIDE2, (3, 4), (1, 2), (1, 1), (0, 1)),
    ("2x1 on a 1-wide map (Wp 1)", SIDE2, (4, 1), (2, 1), (1, 1), (0, 0)),
    ("1x1 on a 1-wide map", SIDE2, (3, 1), (1, 1), (1, 1), (0, 0)),
    ("2x2 a full line (Wp 8)", SIDE2, (3, 8), (2, 2), (1, 1), (0, 0)),
    ("3x3 s1 p1", SIDE3, (5, 6), (3, 3), (1, 1), (1, 1)),
    ("3x3 s2 p1", SIDE3, (6, 7), (3, 3), (2, 2), (1, 1)),
    ("1x3 s1 p(0,1)", SIDE3, (3, 5), (1, 3), (1, 1), (0, 1)),
    ("3x1 s(2,1) p(1,0)", SIDE3, (6, 4), (3, 1), (2, 1), (1, 0)),
    ("2x2 s1 p0 in a 3x3 window", SIDE3, (4, 4), (2, 2), (1, 1), (0, 0)),
    ("3x2 s(1,3) p0", SIDE3, (4, 8), (3, 2), (1, 3), (0, 0)),
    ("3x1 on a 1-wide map (Wp 1)", SIDE3, (5, 1), (3, 1), (1, 1), (1, 0)),
]


def out_hw(hw, kernel, stride, padding):
    return tuple((n + 2 * p - k) // s + 1 for n, k, s, p in zip(hw, kernel, stride, padding))


def pack(values, bits):
    return sum((int(v) & ((1 << bits) - 1)) << (j * bits) for j, v in enumerate(values))


def unpack(value, n, bits):
    out = [(value >> (j * bits)) & ((1 << bits) - 1) for j in range(n)]
    return [v - (1 << bits) if v >> (bits - 1) else v for v in out]


def simulate(cfg, maps, kernel, stride, padding, *, idle, seed):
    """Walk the tiles ``maps`` (each ``[C, H, W]``) through a TapWindow; return the taps of
    every emitting read, in order, as ``[C][taps]`` lists."""
    e = cfg.engine
    C, a, T = e.cols, e.act_bits, cfg.taps
    h, w = maps[0].shape[1:]
    ohw = out_hw((h, w), kernel, stride, padding)
    reads = []
    for x in maps:
        for iy, ix, emit in tap_reads(kernel, stride, padding, ohw):
            inside = 0 <= iy < h and 0 <= ix < w
            v = x[:, iy, ix] if inside else np.zeros(C, dtype=np.int64)
            reads.append((ix + padding[1], pack(v, a), emit is not None))
    dut = TapWindow(cfg)
    rng = random.Random(seed)
    got = []

    async def bench(ctx):
        ctx.set(dut.kernel_h, kernel[0])
        ctx.set(dut.kernel_w, kernel[1])
        s2 = None                               # the read issued in the previous cycle
        pending = list(reads)
        while pending or s2 is not None:
            s1 = pending.pop(0) if pending and rng.random() >= idle else None
            ctx.set(dut.rd_en, s1 is not None)
            ctx.set(dut.rd_px, s1[0] if s1 else rng.randrange(cfg.tap_line))
            ctx.set(dut.enter, s2 is not None)
            if s2 is not None:
                ctx.set(dut.wr_px, s2[0])
                ctx.set(dut.data, s2[1])
                if s2[2]:
                    taps = unpack(ctx.get(dut.taps), C * T, a)
                    got.append([taps[c * T:(c + 1) * T] for c in range(C)])
            await ctx.tick()
            s2 = s1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got


@pytest.mark.parametrize("name,cfg,hw,kernel,stride,padding", CASES,
                         ids=[c[0] for c in CASES])
@pytest.mark.parametrize("idle", [0.0, 0.4])
def test_tap_window(name, cfg, hw, kernel, stride, padding, idle):
    e = cfg.engine
    C, T = e.cols, cfg.taps
    lo, hi = e.act_range
    rng = np.random.default_rng(len(name) * 7 + int(idle * 10))
    maps = [rng.integers(lo, hi + 1, (C,) + hw) for _ in range(3)]
    ohw = out_hw(hw, kernel, stride, padding)
    got = simulate(cfg, maps, kernel, stride, padding, idle=idle, seed=len(name))
    kk = kernel[0] * kernel[1]
    want = []
    for x in maps:
        model = tap_windows(x, kernel, stride, padding, ohw, cfg.tap_side)   # (M, C, kk)
        for pixel in model:
            want.append([list(pixel[c]) + [0] * (T - kk) for c in range(C)])
    assert len(got) == len(want) == 3 * ohw[0] * ohw[1], f"{len(got)} emits of {len(want)}"
    for k, (g, w) in enumerate(zip(got, want)):
        for c in range(C):
            assert g[c] == w[c], (f"{name}: emit {k} (tile {k // (ohw[0] * ohw[1])}), "
                                  f"column {c}: got {g[c]}, expected {w[c]}")

