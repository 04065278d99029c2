"""``mulfree.rtl.lanes.LaneUnit`` alone in the Amaranth simulator against the golden model.

Each scenario is a whole window run on one channel tile: ``x[C, H, W]`` is walked pass by pass
(``(ky, kx)``, every output pixel), the test playing the accumulator buffer (a pass's results
are the next pass's partial sums; the first pass's are ``act_min`` for max, 0 otherwise) and
the issue unit's padding (``act_min`` on a max run, 0 otherwise). The final partial sums must
equal :func:`mulfree.params.window_golden.window_acc`, computed from the operations'
definitions (numpy max/sum over the window, the convolution for depthwise) — never from the
unit. Depthwise runs take one weight row per pass (``rows[p][j]`` = channel ``j``'s code at
tap ``p``) on each engine kind of a three-engine core. Valid and ready pauses are random; a
run without pauses checks the latency (``WINDOW_LATENCY``) and one vector per cycle.
"""

import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig, ISSUE_FIFO_DEPTH, WINDOW_LATENCY
from mulfree.params.golden import terms
from mulfree.params.node_check import code_range
from mulfree.params.window_golden import window_acc
from mulfree.rtl.lanes import LANE_OPS, LaneUnit


#: Three engines of 4 lanes (shift, adder, mult), and a one-engine adder core of 3 lanes with
#: 4-bit activations (other widths).
MULTI = CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=4, weight_bits=4),
                   extra_engines=(ArrayConfig(pe="adder", rows=4, cols=4),
                                  ArrayConfig(pe="mult", rows=4, cols=4, weight_bits=6)),
                   fmap_vectors=64, weight_rows=64, acc_entries=16)
SMALL = CoreConfig(engine=ArrayConfig(pe="adder", rows=3, cols=3, act_bits=4, weight_bits=4,
                                      max_k=32), fmap_vectors=64, weight_rows=64,
                   acc_entries=16)


def lane_vector(values, bits):
    out = 0
    for j, v in enumerate(values):
        out |= (int(v) & ((1 << bits) - 1)) << (j * bits)
    return out


def lanes_of(value, n, bits):
    out = []
    for j in range(n):
        v = (value >> (j * bits)) & ((1 << bits) - 1)
        out.append(v - (1 << bits) if v >> (bits - 1) else v)
    return out


def simulate(cfg, op, engine, beats, rows, *, x_pause=0.0, y_pause=0.0, seed=0):
    """Feed ``beats`` (``(lanes x, lanes psum, last)``) and weight ``rows`` (lists of C codes,
    one per tile) to a LaneUnit under random pauses (a valid stays up until taken); return
    the results (lists of C lanes), the cycle of each input and of each output handshake."""
    dut = LaneUnit(cfg)
    C, a, A, W = cfg.engine.cols, cfg.engine.act_bits, cfg.acc_width, cfg.code_width
    rng = random.Random(seed)
    got, t_in, t_out = [], [], []

    async def bench(ctx):
        ctx.set(dut.op, 1 << LANE_OPS.index(op))
        ctx.set(dut.engine, engine)
        xi = wi = 0
        x_on = w_on = False
        for cycle in range(40 * len(beats) + 200):
            x_on = xi < len(beats) and (x_on or rng.random() >= x_pause)
            w_on = wi < len(rows) and (w_on or rng.random() >= x_pause)
            y_ready = rng.random() >= y_pause
            if x_on:
                x, p, last = beats[xi]
                ctx.set(dut.x.payload.data, lane_vector(x, a))
                ctx.set(dut.x.payload.psum, lane_vector(p, A))
                ctx.set(dut.x.payload.last, last)
            if w_on:
                ctx.set(dut.w.payload, lane_vector(rows[wi], W))
            ctx.set(dut.x.valid, x_on)
            ctx.set(dut.w.valid, w_on)
            ctx.set(dut.y.ready, y_ready)
            x_take = x_on and ctx.get(dut.x.ready)
            w_take = w_on and ctx.get(dut.w.ready)
            if ctx.get(dut.y.valid) and y_ready:
                got.append(lanes_of(ctx.get(dut.y.payload.data), C, A))
                t_out.append(cycle)
            await ctx.tick()
            if x_take:
                xi, x_on = xi + 1, False
                t_in.append(cycle)
            if w_take:
                wi, w_on = wi + 1, False
            if len(got) == len(beats):
                break

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got, t_in, t_out


def random_run(cfg, op, engine, rng, shape=(5, 6), kernel=(3, 3), stride=(1, 1), pad=(1, 1)):
    """A random map of C channels and its window run's beats, rows and golden result."""
    e = cfg.engines[engine]
    C, (lo, hi) = cfg.engine.cols, cfg.engine.act_range
    x = rng.integers(lo, hi + 1, (C,) + shape)
    x[:, 0, 0] = lo                                     # act_min inside the map
    (kh, kw), (sy, sx), (py, px) = kernel, stride, pad
    codes = None
    if op == "depthwise":
        clo, chi = code_range(e)
        codes = rng.integers(clo, chi + 1, (C, kh, kw))
    want = window_acc(e if op == "depthwise" else cfg.engine, op, x, kernel, stride, pad,
                      codes)
    oh, ow = want.shape[1:]
    fill = lo if op == "max" else 0                     # act_min = -2^(act_bits-1)
    xp = np.full((C, shape[0] + 2 * py, shape[1] + 2 * px), fill, dtype=np.int64)
    xp[:, py:py + shape[0], px:px + shape[1]] = x
    passes = [(ky, kx) for ky in range(kh) for kx in range(kw)]
    taps = [[xp[:, oy * sy + ky, ox * sx + kx] for oy in range(oh) for ox in range(ow)]
            for ky, kx in passes]
    rows = [] if codes is None else [list(codes[:, ky, kx]) for ky, kx in passes]
    return want, taps, rows, fill


def run_window(cfg, op, engine, rng, *, x_pause=0.3, y_pause=0.3, **geom):
    """The whole run, pass by pass through the unit; returns (got, want) as [C, OH, OW]."""
    want, taps, rows, fill = random_run(cfg, op, engine, rng, **geom)
    C, A, W = cfg.engine.cols, cfg.acc_width, cfg.code_width
    e = cfg.engines[engine]
    psum = [[fill if op == "max" else 0] * C for _ in taps[0]]
    for p, pixels in enumerate(taps):
        beats = [(list(v), psum[i], i == len(pixels) - 1) for i, v in enumerate(pixels)]
        row = [[int(c) & ((1 << e.code_width) - 1) for c in rows[p]]] if rows else []
        psum, _, _ = simulate(cfg, op, engine, beats, row, x_pause=x_pause, y_pause=y_pause,
                              seed=int(rng.integers(1 << 30)))
        assert len(psum) == len(pixels), f"pass {p}: {len(psum)} results of {len(pixels)}"
    got = np.array(psum, dtype=np.int64).T.reshape(want.shape)
    return got, want


CASES = [(op, k) for op in ("max", "sum") for k in (0,)] + [("depthwise", k) for k in range(3)]


@pytest.mark.parametrize("op,engine", CASES)
def test_window_ops(op, engine):
    rng = np.random.default_rng(LANE_OPS.index(op) * 10 + engine)
    for geom in ({"kernel": (3, 3), "stride": (1, 1), "pad": (1, 1)},
                 {"kernel": (2, 3), "stride": (2, 1), "pad": (1, 0), "shape": (4, 5)}):
        got, want = run_window(MULTI, op, engine, rng, **geom)
        assert np.array_equal(got, want), f"{op} on engine {engine} {geom}:\n{got}\n{want}"


@pytest.mark.parametrize("op", LANE_OPS)
def test_small_core(op):
    rng = np.random.default_rng(7 + LANE_OPS.index(op))
    got, want = run_window(SMALL, op, 0, rng, kernel=(3, 2), stride=(2, 2), pad=(1, 1),
                           shape=(5, 4))
    assert np.array_equal(got, want), f"{op}:\n{got}\n{want}"


def test_latency_and_throughput():
    """Without pauses: one vector per cycle, each result WINDOW_LATENCY cycles after its
    handshake; a depthwise tile's first beat waits for its row."""
    rng = np.random.default_rng(3)
    C = MULTI.engine.cols
    beats = [([int(v) for v in rng.integers(-128, 128, C)], [0] * C, i % 4 == 3)
             for i in range(12)]
    for op, rows in (("sum", []), ("depthwise", [[1] * C] * 3)):
        got, t_in, t_out = simulate(MULTI, op, 2, beats, rows)
        assert len(got) == 12
        assert t_out == [t + WINDOW_LATENCY for t in t_in], (op, t_in, t_out)
        assert t_in == list(range(t_in[0], t_in[0] + 12)), (op, t_in)
        if op == "sum":
            assert got == [b[0] for b in beats]
        else:
            assert got == [b[0] for b in beats]          # mult by 1


@pytest.mark.parametrize("op,engine", CASES)
def test_tiles_back_to_back(op, engine):
    """Many tiles streamed without a gap, each with its own row, random partial sums, under
    pauses: each beat's lanes are ``max``, ``+`` or ``+ term`` of the tile's row (the
    golden model's :func:`~mulfree.params.golden.terms`). The rows arrive ahead of their
    tiles (a row is pending while the previous tile still runs)."""
    rng = np.random.default_rng(100 + LANE_OPS.index(op) * 10 + engine)
    e = MULTI.engines[engine]
    C, (lo, hi) = MULTI.engine.cols, MULTI.engine.act_range
    clo, chi = code_range(e)
    for x_pause, y_pause in ((0.0, 0.0), (0.4, 0.2), (0.1, 0.6)):
        tiles = [int(n) for n in rng.integers(1, 5, 8)]
        rows = [[int(c) for c in rng.integers(clo, chi + 1, C)] for _ in tiles]
        beats, want = [], []
        for t, n in enumerate(tiles):
            for i in range(n):
                x = rng.integers(lo, hi + 1, C)
                p = rng.integers(-5000, 5000, C)
                beats.append(([int(v) for v in x], [int(v) for v in p], i == n - 1))
                if op == "max":
                    want.append(list(np.maximum(p, x)))
                elif op == "sum":
                    want.append(list(p + x))
                else:
                    want.append(list(p + terms(e, x, np.array(rows[t]))))
        sent = [[c & ((1 << e.code_width) - 1) for c in r] for r in rows]
        got, _, _ = simulate(MULTI, op, engine, beats, sent if op == "depthwise" else [],
                             x_pause=x_pause, y_pause=y_pause, seed=int(rng.integers(1 << 30)))
        want = [[int(v) for v in w] for w in want]
        assert got == want, f"{op} engine {engine} pauses {x_pause, y_pause}"


def test_holds_at_most_latency_vectors():
    """With ``y`` never ready the unit takes ``WINDOW_LATENCY`` vectors and no more: what
    ``CoreConfig.hazard_window`` counts for it (the issue FIFO and pipeline registers
    besides)."""
    C = MULTI.engine.cols
    beats = [([1] * C, [0] * C, i % 2 == 1) for i in range(6)]
    for op, rows in (("max", []), ("depthwise", [[1] * C] * 3)):
        got, t_in, _ = simulate(MULTI, op, 1, beats, rows, y_pause=1.0)
        assert got == [] and len(t_in) == WINDOW_LATENCY, (op, t_in)
    assert MULTI.hazard_window >= WINDOW_LATENCY + ISSUE_FIFO_DEPTH + 4
