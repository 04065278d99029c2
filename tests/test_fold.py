"""The folded engine (:class:`mulfree.rtl.fold.FoldedEngine`) in ``amaranth.sim``, and its
Verilog on Icarus and Verilator through cocotb (:func:`fold_in_verilog`, the cocotb test of this
module; a missing simulator fails the test).

Every result vector is compared with the golden model's
:func:`~mulfree.params.golden.array_forward` (what a ``rows x cols`` array computes), for every
PE kind, ``physical_cols`` from 1 to ``cols``, several tiles back to back, random gaps on
``x`` and ``w`` and random backpressure on ``y``. The timing tests measure the latency against
:func:`~mulfree.params.fold_config.fold_latency` and the accepted rate (one input vector every
``cols / physical_cols`` cycles).
"""

import json
import os

import cocotb
import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import Module, ResetInserter, Signal
from amaranth.sim import Simulator
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from mulfree.params.config import ArrayConfig, ConfigError
from mulfree.params.core_config import CoreConfig
from mulfree.params.fold_config import check_fold, fold_latency, fold_passes
from mulfree.params.golden import array_forward
from mulfree.rtl.fold import FoldedEngine
from mulfree.sim.checkers import StreamChecker
from mulfree.sim.runner import build_verilog, run_cocotb


def _pack(values, bits):
    return sum((int(v) & ((1 << bits) - 1)) << (i * bits) for i, v in enumerate(values))


def _unpack(word, bits, n):
    values = [(word >> (i * bits)) & ((1 << bits) - 1) for i in range(n)]
    return [v - (1 << bits) if v >> (bits - 1) else v for v in values]


def random_tile(cfg, n, rng):
    """``(weights, inputs, psums)`` of one tile of ``n`` vectors, the ranges' ends included."""
    rows, cols = cfg.rows, cfg.cols
    if cfg.pe == "shift":
        wlo, whi = 0, (1 << cfg.code_width) - 1
    else:
        wlo, whi = cfg.weight_range
    weights = rng.integers(wlo, whi, (rows, cols), endpoint=True)
    weights[rng.random((rows, cols)) < 0.15] = whi
    weights[rng.random((rows, cols)) < 0.15] = wlo
    xlo, xhi = cfg.act_range
    inputs = rng.integers(xlo, xhi, (n, rows), endpoint=True)
    inputs[rng.random((n, rows)) < 0.15] = xlo
    inputs[rng.random((n, rows)) < 0.1] = xhi
    # Incoming partial sums whose result stays in the accumulator's range, its ends included.
    (alo, ahi), (slo, shi) = cfg.acc_range, cfg.sum_range(cfg.rows)
    plo, phi = alo - slo, ahi - shi
    psums = rng.integers(plo, phi, (n, cols), endpoint=True)
    psums[rng.random((n, cols)) < 0.1] = plo
    psums[rng.random((n, cols)) < 0.1] = phi
    return weights, inputs, psums


def run(dut, tiles, *, x_gap=0.0, w_gap=0.0, y_stall=0.0, seed=0, reset=None):
    """Stream ``tiles`` (``(weights, inputs, psums)``) through ``dut``.

    Weight beats and input beats are offered independently (each withheld with probability
    ``w_gap`` / ``x_gap`` per cycle), ``y.ready`` is low with probability ``y_stall``. Returns
    ``{"out": [(vector, last)], "x_cycles": [...], "y_cycles": [...]}``: the results in order
    and the cycles of every input and output handshake. Checks the stream rules on ``y``: a
    beat offered and not taken stays, unchanged; and that no beat comes after the last one.

    ``reset=(cycle, first_tiles)`` streams ``first_tiles`` the same way until ``cycle``, then
    resets the engine's ``sync`` domain for one cycle (every input idle) and starts
    ``tiles``; only what follows the reset is returned, and checked.
    """
    cfg = dut.cfg
    rows, cols, a, cw, acc = cfg.rows, cfg.cols, cfg.act_bits, cfg.code_width, cfg.acc_width
    rng = np.random.default_rng(seed)

    def beats(tiles):
        return ([_pack(t[0][r], cw) for t in tiles for r in range(rows)],
                [{"data": _pack(x, a), "psum": _pack(p, acc), "last": int(m == len(t[1]) - 1)}
                 for t in tiles for m, (x, p) in enumerate(zip(t[1], t[2]))])

    reset_cycle, first = reset if reset is not None else (None, tiles)
    w_beats, x_beats = beats(first)
    total = len(beats(tiles)[1])
    now = [len(x_beats)]                # results expected of the tiles being streamed
    # Far more than the slowest legal run needs (every beat waits for a free cycle): a hang
    # fails quickly.
    max_cycles = 200 + 20 * (len(w_beats) + total * dut.passes + dut.latency)
    max_cycles += reset_cycle or 0
    res = {"out": [], "x_cycles": [], "y_cycles": []}
    rst = Signal()
    top = Module()
    top.submodules.dut = ResetInserter(rst)(dut)

    async def bench(ctx):
        held = None
        cycle = 0
        tail = 0
        while tail < 3 * dut.latency + 10:          # after the last result: nothing more
            assert cycle < max_cycles, f"{len(res['out'])} of {total} results after {cycle}"
            if cycle == reset_cycle:
                assert x_beats or len(res["out"]) < now[0], "nothing in flight to reset"
                ctx.set(rst, 1)
                for s in (dut.w.valid, dut.x.valid, dut.y.ready):
                    ctx.set(s, 0)
                await ctx.tick()
                ctx.set(rst, 0)
                cycle += 1
                w_beats[:], x_beats[:] = beats(tiles)
                now[0] = total
                res.update(out=[], x_cycles=[], y_cycles=[])
                held = None
                assert not ctx.get(dut.y.valid), "a result right after the reset"
            if len(res["out"]) >= now[0] and (reset_cycle is None or cycle > reset_cycle):
                tail += 1
            w_offer = bool(w_beats) and rng.random() >= w_gap
            x_offer = bool(x_beats) and rng.random() >= x_gap
            ready = bool(rng.random() >= y_stall)
            if w_offer:
                ctx.set(dut.w.payload, w_beats[0])
            if x_offer:
                ctx.set(dut.x.payload, x_beats[0])
            ctx.set(dut.w.valid, w_offer)
            ctx.set(dut.x.valid, x_offer)
            ctx.set(dut.y.ready, ready)
            valid = ctx.get(dut.y.valid)
            payload = (ctx.get(dut.y.payload.data), ctx.get(dut.y.payload.last))
            if held is not None:
                assert valid and payload == held, f"cycle {cycle}: a stalled y beat changed"
            if valid:
                assert len(res["out"]) < now[0], f"cycle {cycle}: a result beyond the last"
            if w_offer and ctx.get(dut.w.ready):
                w_beats.pop(0)
            if x_offer and ctx.get(dut.x.ready):
                x_beats.pop(0)
                res["x_cycles"].append(cycle)
            held = payload if valid and not ready else None
            if valid and ready:
                res["out"].append((_unpack(payload[0], acc, cols), payload[1]))
                res["y_cycles"].append(cycle)
            await ctx.tick()
            cycle += 1

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return res


def expected(cfg, tiles):
    """The golden results of ``tiles``: ``[(vector, last)]``."""
    out = []
    for weights, inputs, psums in tiles:
        y = array_forward(cfg, weights, inputs, psums)
        out += [(row.tolist(), int(m == len(y) - 1)) for m, row in enumerate(y)]
    return out


def check(res, want):
    got = res["out"]
    assert len(got) == len(want), f"{len(got)} results, expected {len(want)}"
    for m, ((g, gl), (w, wl)) in enumerate(zip(got, want)):
        for c, (gv, wv) in enumerate(zip(g, w)):
            assert gv == wv, f"vector {m}, column {c}: got {gv}, expected {wv}"
        assert gl == wl, f"vector {m}: last {gl}, expected {wl}"


# Configuration and latency --------------------------------------------------------------------

@pytest.mark.parametrize("cols, value", [(4, 3), (4, 0), (4, 5), (6, 4), (4, True), (4, "2"),
                                         (4, 2.0), (4, None)])
def test_physical_cols_invalid(cols, value):
    cfg = ArrayConfig(rows=3, cols=cols)
    for make in (lambda: check_fold(cfg, value), lambda: FoldedEngine(cfg, value),
                 lambda: fold_latency(cfg, value)):
        with pytest.raises(ConfigError) as excinfo:
            make()
        err = excinfo.value
        assert err.param == "physical_cols"
        assert "\n" not in str(err) and str(err).startswith("physical_cols"), str(err)
        assert repr(value) in str(err) and f"cols={cols}" in str(err), str(err)


@pytest.mark.parametrize("rows, cols, pc, latency", [
    (3, 4, 1, 8), (3, 4, 2, 6), (3, 4, 4, 5), (16, 16, 4, 21), (1, 3, 1, 5), (5, 6, 3, 8)])
def test_fold_latency(rows, cols, pc, latency):
    cfg = ArrayConfig(pe="mult", rows=rows, cols=cols, max_k=64)
    assert fold_latency(cfg, pc) == latency == rows + fold_passes(cfg, pc) + 1
    # One pass: the array's latency, whatever the arch.
    assert fold_latency(cfg, cols) == cfg.latency
    tree = ArrayConfig(pe="mult", rows=rows, cols=cols, max_k=64, arch="tree")
    assert fold_latency(tree, pc) == latency


def test_core_engine_latency():
    e = ArrayConfig(pe="adder", rows=16, cols=16)
    core = CoreConfig(engine=e, extra_engines=(ArrayConfig(pe="mult", rows=16, cols=16),),
                      engine_cols=(16, 4))
    assert core.folds(1) == 4
    assert core.engine_latency(1) == fold_latency(core.engines[1], 4) == 21
    assert core.engine_latency(0) == e.latency


# Random tiles against the golden model ----------------------------------------------------------

# (pe, rows, cols, physical_cols, act_bits, weight_bits, max_k): every kind with
# physical_cols 1, 2, cols / 2 and cols; cols 4 and 8, rows 3 and 4, odd sizes.
DESIGNS = [
    ("shift", 3, 4, 1, 6, 3, 32),
    ("shift", 4, 8, 2, 8, 4, 64),
    ("shift", 3, 8, 4, 5, 4, 3),
    ("shift", 5, 6, 3, 8, 4, 1024),
    ("adder", 4, 4, 2, 6, None, 16),
    ("adder", 3, 8, 1, 5, None, 3),
    ("adder", 4, 8, 8, 8, None, 1024),
    ("adder", 1, 3, 1, 4, None, 5),
    ("mult", 4, 8, 4, 8, 8, 64),
    ("mult", 3, 4, 4, 5, 3, 9),
    ("mult", 4, 8, 2, 6, 5, 4),
    ("mult", 5, 9, 3, 4, 4, 17),
    ("mult", 2, 6, 1, 5, 4, 8),          # rows 0 and 1 both take their row on the swap
    ("shift", 1, 1, 1, 4, 3, 1),         # one PE, one pass
    ("adder", 2, 8, 2, 3, None, 2),
]


def _id(design):
    pe, rows, cols, pc, *_ = design
    return f"{pe}-{rows}x{cols}-pc{pc}"


def _config(design):
    pe, rows, cols, pc, a, w, k = design
    return ArrayConfig(pe=pe, rows=rows, cols=cols, act_bits=a, weight_bits=w, max_k=k), pc


@pytest.mark.parametrize("design", DESIGNS, ids=_id)
def test_random_tiles(design):
    cfg, pc = _config(design)
    rng = np.random.default_rng(DESIGNS.index(design))
    # Tiles of 1 to 5 vectors: a one-vector tile swaps again while its token still travels.
    tiles = [random_tile(cfg, int(n), rng) for n in rng.integers(1, 6, 6)]
    want = expected(cfg, tiles)
    res = run(FoldedEngine(cfg, pc), tiles, x_gap=0.3, w_gap=0.3, y_stall=0.35, seed=1)
    check(res, want)
    # However the streams stall, two input handshakes are at least one pass count apart.
    gaps = np.diff(res["x_cycles"])
    assert gaps.min() >= cfg.cols // pc


@pytest.mark.parametrize("design", DESIGNS[:3] + DESIGNS[8:9], ids=_id)
def test_streams_free(design):
    """No gaps and no backpressure, then heavy backpressure: the same results."""
    cfg, pc = _config(design)
    rng = np.random.default_rng(7)
    tiles = [random_tile(cfg, n, rng) for n in (4, 1, 2, 6)]
    want = expected(cfg, tiles)
    check(run(FoldedEngine(cfg, pc), tiles), want)
    check(run(FoldedEngine(cfg, pc), tiles, y_stall=0.8, seed=3), want)


@pytest.mark.parametrize("design", DESIGNS[1:2] + DESIGNS[5:6] + DESIGNS[11:12], ids=_id)
@pytest.mark.parametrize("at", [9, 23, 40])
def test_reset_mid_stream(design, at):
    """A reset in the middle of tiles, passes and stalled results: the engine starts afresh
    (no stale pending tile, pass, token or result), the next tiles come out right."""
    cfg, pc = _config(design)
    rng = np.random.default_rng(at)
    before = [random_tile(cfg, n, rng) for n in (3, 2, 4)]
    tiles = [random_tile(cfg, n, rng) for n in (2, 3)]
    res = run(FoldedEngine(cfg, pc), tiles, x_gap=0.2, w_gap=0.2, y_stall=0.4, seed=at,
              reset=(at, before))
    check(res, expected(cfg, tiles))


# Timing -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("pe, rows, cols, pc", [
    ("mult", 3, 4, 1), ("mult", 4, 8, 2), ("shift", 4, 8, 4), ("adder", 3, 4, 4),
    ("adder", 1, 6, 3), ("shift", 5, 6, 2)])
def test_latency_and_rate(pe, rows, cols, pc):
    cfg = ArrayConfig(pe=pe, rows=rows, cols=cols, act_bits=6, max_k=64)
    rng = np.random.default_rng(11)
    # The next tile is in long before the current one ends: no swap waits for weights.
    tiles = [random_tile(cfg, 12, rng), random_tile(cfg, 12, rng)]
    dut = FoldedEngine(cfg, pc)
    res = run(dut, tiles)
    check(res, expected(cfg, tiles))
    passes = cols // pc
    latency = [y - x for x, y in zip(res["x_cycles"], res["y_cycles"])]
    assert latency == [fold_latency(cfg, pc)] * 24 and dut.latency == latency[0]
    # One input every `passes` cycles, across the tile boundary too, and the first one as
    # soon as the first tile is in (rows weight beats, one per cycle).
    assert res["x_cycles"][0] == rows
    assert np.diff(res["x_cycles"]).tolist() == [passes] * 23
    assert np.diff(res["y_cycles"]).tolist() == [passes] * 23


# The Verilog on Icarus and Verilator ----------------------------------------------------------

@cocotb.test()
async def fold_in_verilog(dut):
    """cocotb: the stimulus file (``MULFREE_MANIFEST``) streamed with random gaps and
    backpressure (a beat once shown stays until taken), every result compared with the
    expected one, the stream rules checked by :class:`~mulfree.sim.checkers.StreamChecker`
    on ``x`` and ``y`` (stable while stalled, ``last`` on each tile's last vector)."""
    with open(os.environ["MULFREE_MANIFEST"]) as f:
        doc = json.load(f)
    x_last, y_last = doc["x_last_bit"], doc["y_last_bit"]
    checks = [StreamChecker(dut.clk, dut.rst, dut.x__valid, dut.x__ready, dut.x__payload,
                            name="x", last=lambda b: b[0] >> x_last & 1, packets=doc["tiles"]),
              StreamChecker(dut.clk, dut.rst, dut.y__valid, dut.y__ready, dut.y__payload,
                            name="y", last=lambda b: b[0] >> y_last & 1, packets=doc["tiles"])]
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    rng = np.random.default_rng(doc["seed"])
    dut.rst.value = 1
    for s in (dut.w__valid, dut.x__valid, dut.y__ready):
        s.value = 0
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    w, x, want, got = list(doc["w"]), list(doc["x"]), doc["want"], []
    w_show = x_show = False
    for cycle in range(doc["max_cycles"]):
        await RisingEdge(dut.clk)
        w_show = bool(w) and (w_show or rng.random() < 0.7)
        x_show = bool(x) and (x_show or rng.random() < 0.7)
        dut.w__valid.value = int(w_show)
        dut.x__valid.value = int(x_show)
        if w_show:
            dut.w__payload.value = w[0]
        if x_show:
            dut.x__payload.value = x[0]
        dut.y__ready.value = int(rng.random() < 0.6)
        await ReadOnly()
        if w_show and dut.w__ready.value:
            w.pop(0)
            w_show = False
        if x_show and dut.x__ready.value:
            x.pop(0)
            x_show = False
        if dut.y__valid.value and dut.y__ready.value:
            got.append(dut.y__payload.value.to_unsigned())
            m = len(got) - 1
            assert got[m] == want[m], f"vector {m}: got {got[m]:#x}, expected {want[m]:#x}"
            if len(got) == len(want):
                break
    else:
        raise AssertionError(f"timeout: {len(got)} of {len(want)} results")
    await RisingEdge(dut.clk)
    for checker in checks:
        checker.check()


@pytest.mark.parametrize("simulator, design", [("icarus", DESIGNS[1]), ("icarus", DESIGNS[7]),
                                               ("verilator", DESIGNS[11])],
                         ids=lambda v: v if isinstance(v, str) else _id(v))
def test_verilog(simulator, design, tmp_path):
    cfg, pc = _config(design)
    rng = np.random.default_rng(5)
    tiles = [random_tile(cfg, int(n), rng) for n in rng.integers(1, 6, 5)]
    a, cw, acc = cfg.act_bits, cfg.code_width, cfg.acc_width
    top = "fold_under_test"
    (tmp_path / f"{top}.v").write_text(verilog.convert(FoldedEngine(cfg, pc), name=top))
    vector_bits = cfg.rows * a + cfg.cols * acc
    n_x = sum(len(t[1]) for t in tiles)
    doc = {
        "top": top, "seed": 5, "tiles": [len(t[1]) for t in tiles],
        "w": [_pack(t[0][r], cw) for t in tiles for r in range(cfg.rows)],
        "x": [_pack(x, a) | _pack(p, acc) << (cfg.rows * a) | int(m == len(t[1]) - 1) << vector_bits
              for t in tiles for m, (x, p) in enumerate(zip(t[1], t[2]))],
        "want": [_pack(v, acc) | last << (cfg.cols * acc) for v, last in expected(cfg, tiles)],
        "x_last_bit": vector_bits, "y_last_bit": cfg.cols * acc,
        "max_cycles": 100 + 20 * (n_x * cfg.cols // pc + cfg.rows * len(tiles)),
    }
    (tmp_path / "stimulus.json").write_text(json.dumps(doc))
    runner = build_verilog(tmp_path / f"{top}.v", top, simulator, tmp_path)
    result = run_cocotb(runner, tmp_path / "stimulus.json", "test_fold", seed=1)
    assert result.ok, result.summary()
    assert len(result.tests) == 1, f"expected 1 cocotb test, ran {sorted(result.tests)}"
