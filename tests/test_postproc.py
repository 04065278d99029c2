"""Tests of :class:`mulfree.rtl.postproc.PostProcess` in ``amaranth.sim`` against the golden
:func:`mulfree.params.layer_golden.postprocess`: random vectors, every corner of the parameter
ranges, idle cycles and backpressure, throughput.
"""

import itertools

import numpy as np
import pytest
from amaranth.sim import Simulator

from mulfree.params.config import ArrayConfig, ConfigError
from mulfree.params.post_config import bias_range, shift_range
from mulfree.rtl.postproc import PostProcess
from mulfree.params.layer_golden import PostParams, postprocess


def _signed(value, bits):
    return value - (1 << bits) if value >> (bits - 1) else value


def run(dut, params, beats, *, i_valid=None, o_ready=None, max_cycles=5000):
    """Write ``params`` (``(channel, bias, shift, relu)``), then stream ``beats``
    (``(group, [acc per lane], last)``); return the output beats and their cycles."""
    cfg, lanes = dut.cfg, dut.lanes
    acc_w, a = cfg.acc_width, cfg.act_bits
    out = {"beats": [], "cycles": []}

    async def bench(ctx):
        for channel, bias, shift, relu in params:
            ctx.set(dut.p.payload, {"group": channel // lanes, "lane": channel % lanes,
                                    "bias": bias, "shift": shift, "relu": relu})
            ctx.set(dut.p.valid, 1)
            await ctx.tick()
        ctx.set(dut.p.valid, 0)
        queue = list(beats)
        for cycle in range(max_cycles):
            offer = bool(queue) and (i_valid(cycle) if i_valid else True)
            if offer:
                group, accs, last = queue[0]
                packed = sum((v & ((1 << acc_w) - 1)) << (l * acc_w) for l, v in enumerate(accs))
                ctx.set(dut.i.payload, {"data": packed, "group": group, "last": last})
            ctx.set(dut.i.valid, offer)
            ready = o_ready(cycle) if o_ready else True
            ctx.set(dut.o.ready, ready)
            if offer and ctx.get(dut.i.ready):
                queue.pop(0)
            if ctx.get(dut.o.valid) and ready:
                p = ctx.get(dut.o.payload)
                values = [_signed((p["data"] >> (l * a)) & ((1 << a) - 1), a)
                          for l in range(lanes)]
                out["beats"].append((values, p["last"]))
                out["cycles"].append(cycle)
                if len(out["beats"]) == len(beats):
                    break
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def expected(cfg, lanes, params, beats):
    channels = max(c for c, *_ in params) + 1
    table = {c: (b, s, r) for c, b, s, r in params}
    bias = np.array([table.get(c, (0, 0, 0))[0] for c in range(channels)])
    shift = np.array([table.get(c, (0, 0, 0))[1] for c in range(channels)])
    relu = np.array([table.get(c, (0, 0, 0))[2] for c in range(channels)], dtype=bool)
    result = []
    for group, accs, last in beats:
        chans = slice(group * lanes, (group + 1) * lanes)
        post = PostParams(bias[chans], shift[chans], relu[chans])
        result.append((postprocess(cfg, np.array([accs]), post)[0].tolist(), last))
    return result


def random_case(cfg, lanes, groups, n_beats, seed):
    rng = np.random.default_rng(seed)
    alo, ahi = cfg.acc_range
    blo, bhi = bias_range(cfg)
    slo, shi = shift_range(cfg)
    params = []
    for c in range(groups * lanes):
        small = c % 2 == 0      # half the channels near the output range, not all saturated
        lim = 1 << (cfg.act_bits + 3)
        bias = int(rng.integers(max(blo, -lim), min(bhi, lim) + 1) if small
                   else rng.integers(blo, bhi + 1))
        shift = int(rng.integers(max(slo, -2), min(shi, cfg.act_bits) + 1) if small
                    else rng.integers(slo, shi + 1))
        params.append((c, bias, shift, int(rng.integers(0, 2))))
    beats = []
    for i in range(n_beats):
        lim = 1 << (cfg.act_bits + 4)
        accs = [int(rng.integers(max(alo, -lim), min(ahi, lim) + 1) if i % 3
                    else rng.integers(alo, ahi + 1)) for _ in range(lanes)]
        beats.append((int(rng.integers(0, groups)), accs, int(i % 5 == 4)))
    return params, beats


CONFIGS = [
    (ArrayConfig(pe="shift", rows=4, cols=3, act_bits=8, weight_bits=4, max_k=64), 3, 4),
    (ArrayConfig(pe="adder", rows=3, cols=2, act_bits=4, max_k=7), 2, 3),
    (ArrayConfig(pe="mult", rows=2, cols=4, act_bits=6, weight_bits=5, max_k=1000), 4, 2),
    (ArrayConfig(pe="adder", rows=1, cols=1, act_bits=2, max_k=1), 1, 1),
]


@pytest.mark.parametrize("cfg,lanes,groups", CONFIGS, ids=[c[0].pe + str(c[1]) for c in CONFIGS])
def test_random_against_golden(cfg, lanes, groups):
    dut = PostProcess(cfg, lanes=lanes, channels=lanes * groups)
    params, beats = random_case(cfg, lanes, groups, 120, seed=lanes * 7 + groups)
    out = run(dut, params, beats)
    assert out["beats"] == expected(cfg, lanes, params, beats)
    # Full rate: one beat per cycle after the pipeline's latency.
    assert out["cycles"] == list(range(PostProcess.LATENCY, PostProcess.LATENCY + len(beats)))


@pytest.mark.parametrize("cfg,lanes,groups", CONFIGS[:3], ids=[c[0].pe for c in CONFIGS[:3]])
def test_backpressure_and_idle(cfg, lanes, groups):
    dut = PostProcess(cfg, lanes=lanes, channels=lanes * groups)
    params, beats = random_case(cfg, lanes, groups, 80, seed=99)
    valid = itertools.cycle([1, 1, 0, 1, 0, 0, 1])
    ready = itertools.cycle([1, 1, 1, 0, 0, 1, 0, 1])
    v_pattern = [next(valid) for _ in range(5000)]
    r_pattern = [next(ready) for _ in range(5000)]
    out = run(dut, params, beats, i_valid=lambda c: v_pattern[c], o_ready=lambda c: r_pattern[c])
    assert out["beats"] == expected(cfg, lanes, params, beats)


def test_corners_every_parameter_end():
    # One lane per corner value: acc extremes, ties at every shift, both saturation ends.
    cfg = ArrayConfig(pe="mult", rows=2, cols=2, act_bits=4, weight_bits=4, max_k=4)
    alo, ahi = cfg.acc_range
    blo, bhi = bias_range(cfg)
    slo, shi = shift_range(cfg)
    shifts = sorted({slo, -2, -1, 0, 1, 2, 3, shi - 1, shi})
    biases = [blo, -1, 0, 1, bhi]
    params = [(g * 2 + r, b, s, r) for g, (b, s) in enumerate(itertools.product(biases, shifts))
              for r in (0, 1)]
    groups = len(params) // 2
    values = sorted({alo, -17, -9, -8, -7, -3, -2, -1, 0, 1, 2, 3, 7, 8, 9, 17, ahi})
    beats = [(g, [v, v], 0) for g in range(groups) for v in values]
    dut = PostProcess(cfg, lanes=2, channels=2 * groups)
    out = run(dut, params, beats)
    assert out["beats"] == expected(cfg, 2, params, beats)


def test_parameter_rewrite_between_beats():
    cfg = ArrayConfig(pe="shift", rows=2, cols=2, act_bits=8, weight_bits=4, max_k=8)
    dut = PostProcess(cfg, lanes=2, channels=2)
    beats = [(0, [100, -100], 1)]
    first = run(dut, [(0, 0, 0, 0), (1, 0, 0, 0)], beats)
    assert first["beats"] == [([100, -100], 1)]
    second = run(PostProcess(cfg, lanes=2, channels=2), [(0, 5, 1, 0), (1, 0, -1, 1)], beats)
    assert second["beats"] == [([53, 0], 1)]


def test_rejects_bad_parameters():
    cfg = ArrayConfig(pe="adder", rows=2, cols=2, act_bits=4, max_k=2)
    with pytest.raises(ConfigError, match="lanes"):
        PostProcess(cfg, lanes=0)
    with pytest.raises(ConfigError, match="channels"):
        PostProcess(cfg, channels=True)


def test_no_multiplier_or_divider_in_netlist():
    from amaranth.back import rtlil
    cfg = ArrayConfig(pe="mult", rows=2, cols=3, act_bits=8, weight_bits=8, max_k=64)
    text = rtlil.convert(PostProcess(cfg, lanes=3, channels=7))
    for cell in ("$mul", "$div", "$mod", "$divfloor", "$modfloor"):
        assert f"cell {cell} " not in text, cell
    assert "cell $sshr " in text or "cell $shr " in text or "cell $shift" in text
