"""Tests of :class:`mulfree.rtl.postproc.PostProcess` in ``amaranth.sim`` against the golden
:func:`mulfree.params.layer_golden.postprocess` and :func:`~mulfree.params.layer_golden.fused_tail`:
random vectors, every corner of the parameter ranges, the residual add and the clamp at their
ends, idle cycles and backpressure, throughput. A unit with a shortcut buffer reads it from a
real ``Memory`` (:class:`WithShortcut`), as the core does.
"""

import itertools

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, unsigned
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from mulfree.params.config import ArrayConfig, ConfigError
from mulfree.params.core_config import RES_MAX_SHIFT, res_shift_range
from mulfree.params.post_config import bias_range, shift_range
from mulfree.rtl.postproc import PostProcess
from mulfree.params.layer_golden import PostParams, ResidualParams, fused_tail, postprocess


def _signed(value, bits):
    return value - (1 << bits) if value >> (bits - 1) else value


def _pack(values, bits):
    return sum((int(v) & ((1 << bits) - 1)) << (l * bits) for l, v in enumerate(values))


class WithShortcut(Elaboratable):
    """``dut`` reading its shortcut from a Memory holding ``vectors`` (lists of lane values)
    through its read interface."""

    def __init__(self, dut, vectors):
        self.dut, self.vectors = dut, vectors

    def elaborate(self, platform):
        m = Module()
        dut, a = self.dut, self.dut.cfg.act_bits
        m.submodules.dut = dut
        m.submodules.mem = mem = Memory(
            shape=unsigned(dut.lanes * a), depth=dut.shortcut_vectors,
            init=[_pack(v, a) for v in self.vectors])
        rd = mem.read_port()
        m.d.comb += [rd.addr.eq(dut.s_addr), rd.en.eq(dut.s_en), dut.s_data.eq(rd.data)]
        return m


def tail_value(tail):
    """``tail`` (a dict of some of ``tail_layout``'s fields) with the others 0."""
    fields = ("residual", "res_relu", "clamp", "clamp_lo", "clamp_hi", "main_shift",
              "short_shift", "res_shift")
    return {f: int((tail or {}).get(f, 0)) for f in fields}


def run_segments(dut, params, segments, *, shortcut=(), i_valid=None, o_ready=None,
                 max_cycles=200_000):
    """Write ``params`` (``(channel, bias, shift, relu)``), then for each segment
    ``(tail, beats)`` set ``tail`` and stream its ``beats`` (``(group, [acc per lane], last)``
    or ``(..., zero, short_addr)``), draining the pipeline before the next segment's tail;
    return the output beats and the cycles (from each segment's start) they left in."""
    cfg, lanes = dut.cfg, dut.lanes
    acc_w, a = cfg.acc_width, cfg.act_bits
    out = {"beats": [], "cycles": []}
    top = WithShortcut(dut, list(shortcut)) if dut.shortcut_vectors else dut

    async def bench(ctx):
        for channel, bias, shift, relu in params:
            ctx.set(dut.p.payload, {"group": channel // lanes, "lane": channel % lanes,
                                    "bias": bias, "shift": shift, "relu": relu})
            ctx.set(dut.p.valid, 1)
            await ctx.tick()
        ctx.set(dut.p.valid, 0)
        cycle = 0
        for tail, beats in segments:
            ctx.set(dut.tail, tail_value(tail))
            queue, want, start = list(beats), len(out["beats"]) + len(beats), cycle
            while len(out["beats"]) < want:
                assert cycle < max_cycles, "the beats did not all come out"
                offer = bool(queue) and (i_valid(cycle) if i_valid else True)
                if offer:
                    group, accs, last, *more = queue[0]
                    zero, addr = (more + [0, 0])[:2]
                    payload = {"data": _pack(accs, acc_w), "group": group, "last": last,
                               "zero": zero}
                    if dut.shortcut_vectors:
                        payload["short_addr"] = addr
                    ctx.set(dut.i.payload, payload)
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
                    out["cycles"].append(cycle - start)
                await ctx.tick()
                cycle += 1
            ctx.set(dut.i.valid, 0)

    sim = Simulator(top)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def run(dut, params, beats, *, tail=None, shortcut=(), **kw):
    """One segment of :func:`run_segments`."""
    return run_segments(dut, params, [(tail, beats)], shortcut=shortcut, **kw)


def expected(cfg, lanes, params, beats):
    channels = max(c for c, *_ in params) + 1
    table = {c: (b, s, r) for c, b, s, r in params}
    bias = np.array([table.get(c, (0, 0, 0))[0] for c in range(channels)])
    shift = np.array([table.get(c, (0, 0, 0))[1] for c in range(channels)])
    relu = np.array([table.get(c, (0, 0, 0))[2] for c in range(channels)], dtype=bool)
    result = []
    for group, accs, last, *_ in beats:
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
    for bad in (-1, True, 2.0):
        with pytest.raises(ConfigError, match="shortcut_vectors"):
            PostProcess(cfg, shortcut_vectors=bad)


@pytest.mark.parametrize("shortcut_vectors", [0, 100])
def test_no_multiplier_or_divider_in_netlist(shortcut_vectors):
    from amaranth.back import rtlil
    cfg = ArrayConfig(pe="mult", rows=2, cols=3, act_bits=8, weight_bits=8, max_k=64)
    text = rtlil.convert(PostProcess(cfg, lanes=3, channels=7,
                                     shortcut_vectors=shortcut_vectors))
    for cell in ("$mul", "$div", "$mod", "$divfloor", "$modfloor"):
        assert f"cell {cell} " not in text, cell
    # The rounding shifts are windows of multiplexers (rounding_window), not full-width
    # right shifters; only the residual sum shifts left.
    for cell in ("$sshr", "$shr", "$shift", "$shiftx"):
        assert f"cell {cell} " not in text, cell


def _window_outputs(yw, a, top, cases):
    """``window_value(rounding_window(y, window_amount(shift)))`` of each ``(y, shift)``,
    simulated."""
    from amaranth.hdl import Module, Signal, signed
    from amaranth.sim import Simulator
    from mulfree.rtl.postproc import rounding_window, window_amount, window_value
    m = Module()
    y = Signal(signed(yw))
    shift = Signal(signed(max(top, a).bit_length() + 1))
    out = Signal(signed(a + 2))
    m.d.comb += out.eq(window_value(*rounding_window(y, window_amount(shift, a, top), a), a))
    got = []

    async def bench(ctx):
        for yv, sv in cases:
            ctx.set(y, yv)
            ctx.set(shift, sv)
            got.append(ctx.get(out))
    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    return got


def _window_want(a, cases):
    from mulfree.params.layer_golden import round_shift
    ys, shifts = (np.array(c, dtype=np.int64) for c in zip(*cases))
    return np.clip(round_shift(ys, shifts), -(1 << a), 1 << a).tolist()


def test_rounding_window_exhaustive_small():
    """Every 9-bit ``y`` and every shift in ``[-a, 9]`` (a = 3): the window's value is the
    golden round_shift clamped to ``[-2^a, 2^a]`` (what saturation cannot tell apart)."""
    cases = [(y, s) for y in range(-256, 256) for s in range(-3, 10)]
    assert _window_outputs(9, 3, 9, cases) == _window_want(3, cases)


@pytest.mark.parametrize("yw,top", [(26, 26), (24, 24)], ids=["main", "residual"])
def test_rounding_window_random_shipped(yw, top):
    """The shipped widths (a = 8; the shift core's y of 26 bits, shift in [-8, 26]; the
    residual sum of 24 bits, res_shift in [-8, 24]): random and edge ``y`` at every shift."""
    rng = np.random.default_rng(yw)
    ys = [int(v) for v in rng.integers(-(1 << (yw - 1)), 1 << (yw - 1), 120)]
    ys += [int(rng.choice([-1, 1])) * (1 << int(k)) + int(d)
           for k, d in zip(rng.integers(0, yw - 1, 120), rng.integers(-2, 3, 120))]
    ys += [-(1 << (yw - 1)), (1 << (yw - 1)) - 1, 0, -1, 1, 255, 256, -256, -257, 127, -128]
    ys = [min(max(v, -(1 << (yw - 1))), (1 << (yw - 1)) - 1) for v in ys]
    cases = [(y, s) for y in ys for s in range(-8, top + 1)]
    assert _window_outputs(yw, 8, top, cases) == _window_want(8, cases)


# The fused tail: residual add and clamp ------------------------------------------------------

def expected_tail(cfg, lanes, params, beats, tail, shortcut, *, residual_built=True):
    """:func:`expected`, then :func:`fused_tail` with ``tail`` and each beat's shortcut
    vector; lanes flagged ``zero`` are 0."""
    t = tail_value(tail)
    res = (ResidualParams(t["main_shift"], t["short_shift"], t["res_shift"],
                          bool(t["res_relu"])) if t["residual"] and residual_built else None)
    clamp = (t["clamp_lo"], t["clamp_hi"]) if t["clamp"] else None
    result = []
    for (values, last), beat in zip(expected(cfg, lanes, params, beats), beats):
        zero, addr = (list(beat[3:]) + [0, 0])[:2]
        s = np.array(shortcut[addr]) if res is not None else None
        v = fused_tail(cfg.act_bits, np.array(values), shortcut=s, residual=res, clamp=clamp)
        result.append(([0 if zero >> l & 1 else int(x) for l, x in enumerate(v)], last))
    return result


def random_tail(cfg, rng, *, residual=True):
    """Random tail settings within the descriptor's ranges (clamp half the time)."""
    a = cfg.act_bits
    lo, hi = cfg.act_range
    slo, shi = res_shift_range(a)
    c_lo, c_hi = sorted(int(v) for v in rng.integers(lo, hi + 1, 2))
    return {"residual": int(residual), "res_relu": int(rng.integers(0, 2)) * residual,
            "clamp": int(rng.integers(0, 2)), "clamp_lo": c_lo, "clamp_hi": c_hi,
            # Shifts that keep the sum in range half the time, any the other half.
            "main_shift": int(rng.integers(0, RES_MAX_SHIFT + 1) if rng.random() < 0.5
                              else rng.integers(0, 3)),
            "short_shift": int(rng.integers(0, RES_MAX_SHIFT + 1) if rng.random() < 0.5
                               else rng.integers(0, 3)),
            "res_shift": int(rng.integers(slo, shi + 1) if rng.random() < 0.5
                             else rng.integers(-1, 4))}


def random_shortcut(cfg, lanes, n, rng):
    lo, hi = cfg.act_range
    return [[int(v) for v in rng.integers(lo, hi + 1, lanes)] for _ in range(n)]


def with_addrs(beats, n, rng, *, zero_every=7, lanes=1):
    """``beats`` with a random shortcut address each, and some lanes flagged ``zero``."""
    return [(g, accs, last, (int(rng.integers(1, 1 << lanes)) if i % zero_every == 3 else 0),
             int(rng.integers(0, n))) for i, (g, accs, last) in enumerate(beats)]


@pytest.mark.parametrize("cfg,lanes,groups", CONFIGS, ids=[c[0].pe + str(c[1]) for c in CONFIGS])
def test_tail_random_against_golden(cfg, lanes, groups):
    """Random tails (with and without the residual, the clamp) on random beats reading random
    shortcut vectors; full rate at RESIDUAL_LATENCY."""
    rng = np.random.default_rng(lanes * 11 + groups)
    n = 37
    shortcut = random_shortcut(cfg, lanes, n, rng)
    dut = PostProcess(cfg, lanes=lanes, channels=lanes * groups, shortcut_vectors=n)
    assert dut.latency == PostProcess.RESIDUAL_LATENCY == 7
    params, beats = random_case(cfg, lanes, groups, 60, seed=lanes * 5 + groups)
    tails = [random_tail(cfg, rng, residual=k % 4 != 3) for k in range(8)]
    segments = [(t, with_addrs(beats, n, rng, lanes=lanes)) for t in tails]
    out = run_segments(dut, params, segments, shortcut=shortcut)
    want = [b for t, bs in segments for b in expected_tail(cfg, lanes, params, bs, t, shortcut)]
    assert out["beats"] == want
    assert out["cycles"][:len(beats)] == list(range(dut.latency, dut.latency + len(beats)))


@pytest.mark.parametrize("cfg,lanes,groups", CONFIGS[:3], ids=[c[0].pe for c in CONFIGS[:3]])
def test_tail_backpressure_and_idle(cfg, lanes, groups):
    """The shortcut read stays with its beat through input gaps and output stalls."""
    rng = np.random.default_rng(7 + lanes)
    n = 50
    shortcut = random_shortcut(cfg, lanes, n, rng)
    dut = PostProcess(cfg, lanes=lanes, channels=lanes * groups, shortcut_vectors=n)
    params, beats = random_case(cfg, lanes, groups, 100, seed=98)
    tail = dict(random_tail(cfg, rng), main_shift=1, short_shift=0, res_shift=1)
    beats = with_addrs(beats, n, rng, lanes=lanes)
    v_pattern = [int(b) for b in rng.random(5000) < 0.7]
    r_pattern = [int(b) for b in rng.random(5000) < 0.5]
    out = run(dut, params, beats, tail=tail, shortcut=shortcut,
              i_valid=lambda c: v_pattern[c], o_ready=lambda c: r_pattern[c])
    assert out["beats"] == expected_tail(cfg, lanes, params, beats, tail, shortcut)


def _identity_params(groups, lanes):
    """bias 0, shift 0, no ReLU: post-processing passes a saturated accumulator through."""
    return [(c, 0, 0, 0) for c in range(groups * lanes)]


def test_tail_corners_every_shift():
    """Every res_shift of the range, the add's shifts at their ends, ReLU on and off, each
    with the activations and shortcuts at and next to both ends of act_range."""
    cfg = ArrayConfig(pe="mult", rows=2, cols=2, act_bits=4, weight_bits=4, max_k=4)
    lo, hi = cfg.act_range
    slo, shi = res_shift_range(cfg.act_bits)
    edges = [lo, lo + 1, -1, 0, 1, hi - 1, hi]
    shortcut = [[s, s] for s in edges]
    pairs = list(itertools.product(edges, range(len(edges))))
    beats = [(0, [v, -v if v != lo else hi], 0, 0, addr) for v, addr in pairs]
    segments = []
    for shift, main, short, relu in itertools.product(range(slo, shi + 1), (0, 1, 4, 15),
                                                      (0, 3, 15), (0, 1)):
        tail = {"residual": 1, "res_relu": relu, "main_shift": main, "short_shift": short,
                "res_shift": shift}
        segments.append((tail, beats[(shift + main) % 5::5]))
    dut = PostProcess(cfg, lanes=2, channels=2, shortcut_vectors=len(shortcut))
    params = _identity_params(1, 2)
    out = run_segments(dut, params, segments, shortcut=shortcut)
    want = [b for t, bs in segments for b in expected_tail(cfg, 2, params, bs, t, shortcut)]
    assert out["beats"] == want


@pytest.mark.parametrize("shortcut_vectors", [0, 7])
def test_clamp_corners(shortcut_vectors):
    """The clamp at the range's ends, lo = hi, ReLU6-like, and lo > hi (min(max(v, lo), hi)
    is then hi); after the residual add and without it; on a unit without a shortcut buffer
    ``residual`` is ignored."""
    cfg = ArrayConfig(pe="shift", rows=2, cols=3, act_bits=5, weight_bits=4, max_k=16)
    lo, hi = cfg.act_range
    rng = np.random.default_rng(5)
    shortcut = random_shortcut(cfg, 3, 7, rng)
    values = [lo, lo + 1, -3, -1, 0, 1, 5, 6, 7, hi - 1, hi]
    beats = [(0, [v, v + 1 if v < hi else lo, -v if v > lo else hi], k % 3 == 2, 0, k % 7)
             for k, v in enumerate(values * 2)]
    clamps = [(lo, hi), (0, 6), (0, 0), (-3, -3), (hi, hi), (lo, lo), (lo, lo + 1), (3, -2),
              (hi, lo)]
    segments = []
    for (c_lo, c_hi), residual in itertools.product(clamps, (0, 1)):
        # Without flags.residual its fields (ReLU included) are ignored.
        tail = {"clamp": 1, "clamp_lo": c_lo, "clamp_hi": c_hi, "residual": residual,
                "res_relu": 1, "main_shift": 1, "short_shift": 2, "res_shift": 1}
        segments.append((tail, beats))
    # No clamp: the fields are ignored.
    segments.append(({"clamp": 0, "clamp_lo": 3, "clamp_hi": -2, "res_relu": 1,
                      "res_shift": -2}, beats))
    dut = PostProcess(cfg, lanes=3, channels=3, shortcut_vectors=shortcut_vectors)
    params = _identity_params(1, 3)
    out = run_segments(dut, params, segments, shortcut=shortcut)
    want = [b for t, bs in segments
            for b in expected_tail(cfg, 3, params, bs, t, shortcut,
                                   residual_built=bool(shortcut_vectors))]
    assert out["beats"] == want
    assert dut.latency == (7 if shortcut_vectors else 4)


def test_clamp_without_shortcut_buffer_random():
    """A unit without a shortcut buffer: random parameters and clamps, some lanes flagged
    ``zero`` (the flag travels beside the beat), full rate at LATENCY."""
    cfg, lanes, groups = CONFIGS[0]
    rng = np.random.default_rng(17)
    dut = PostProcess(cfg, lanes=lanes, channels=lanes * groups)
    params, beats = random_case(cfg, lanes, groups, 80, seed=4)
    beats = with_addrs(beats, 1, rng, zero_every=4, lanes=lanes)
    segments = [(random_tail(cfg, rng, residual=False), beats) for _ in range(6)]
    out = run_segments(dut, params, segments)
    want = [b for t, bs in segments for b in expected_tail(cfg, lanes, params, bs, t, [])]
    assert out["beats"] == want
    assert out["cycles"][:len(beats)] == list(range(dut.latency, dut.latency + len(beats)))
