"""PE operators, simulated bit-exactly against the golden model's terms.

Every PE kind, at a few depths and widths, with random operands and the corners: most negative
and largest activations, the largest shift, both zero codes of a shift weight (``0`` and the
negative zero ``1 << (weight_bits - 1)``), extreme weights and the extremes of the incoming
partial sum; and the chain form of the array's columns (an adder chain holds ``-sum``).
"""

import itertools

import numpy as np
import pytest
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.sim import Simulator

from mulfree.params.config import ArrayConfig, int_range, signed_width, unsigned_width
from mulfree.rtl.pe import pe_class
from mulfree.params.golden import terms


CONFIGS = [
    ArrayConfig(pe="shift", rows=16, cols=1, act_bits=8, weight_bits=4, max_k=1024),
    ArrayConfig(pe="shift", rows=4, cols=1, act_bits=5, weight_bits=2, max_k=8),
    ArrayConfig(pe="shift", rows=4, cols=1, act_bits=6, weight_bits=3, max_k=64),
    ArrayConfig(pe="shift", rows=4, cols=1, act_bits=8, weight_bits=6, max_k=4),
    ArrayConfig(pe="adder", rows=16, cols=1, act_bits=8, max_k=1024),
    ArrayConfig(pe="adder", rows=4, cols=1, act_bits=3, max_k=4),
    ArrayConfig(pe="mult", rows=16, cols=1, act_bits=8, weight_bits=8, max_k=1024),
    ArrayConfig(pe="mult", rows=4, cols=1, act_bits=5, weight_bits=3, max_k=7),
]
DEPTHS = [0, 1, 2, 3, 7, 15]


def _codes(cfg):
    """Every weight code of ``cfg`` (all of them: at most 2^16)."""
    if cfg.pe == "shift":
        return np.arange(1 << cfg.weight_bits)
    lo, hi = cfg.weight_range
    return np.arange(lo, hi + 1)


def _cases(cfg, depth, rng, n_random=150):
    """(x, code, psum_in) triples: corners crossed, then random ones."""
    xlo, xhi = cfg.act_range
    codes = _codes(cfg)
    if cfg.pe == "shift":
        top = 1 << (cfg.weight_bits - 1)
        corner_codes = sorted({0, top, 1, top + 1, top - 1, 2 * top - 1})
    else:
        corner_codes = sorted({int(codes[0]), int(codes[-1]), 0, 1, -1})
    corner_x = sorted({xlo, xlo + 1, -1, 0, 1, xhi})
    plo, phi = cfg.sum_range(depth)
    corner_p = sorted({plo, 0, phi}) if depth else [0]
    cases = list(itertools.product(corner_x, corner_codes, corner_p))
    xs = rng.integers(xlo, xhi + 1, n_random)
    cs = rng.choice(codes, n_random)
    ps = rng.integers(plo, phi + 1, n_random) if depth else np.zeros(n_random, np.int64)
    cases += [(int(x), int(c), int(p)) for x, c, p in zip(xs, cs, ps)]
    return cases


# A PE at depth d holds d + 1 terms: only depths below max_k exist in a design.
CASES = [(cfg, depth) for cfg in CONFIGS for depth in DEPTHS if depth < cfg.max_k]


@pytest.mark.parametrize(("cfg", "depth"), CASES,
                         ids=[f"{c.pe}-a{c.act_bits}w{c.weight_bits}-d{d}" for c, d in CASES])
def test_pe_matches_golden(cfg, depth):
    rng = np.random.default_rng(1000 * depth + len(cfg.top_name))
    cases = _cases(cfg, depth, rng)
    dut = pe_class(cfg.pe)(cfg, depth)
    out_lo, out_hi = cfg.sum_range(depth + 1)
    assert dut.psum_out.shape() == signed(signed_width(out_lo, out_hi))
    code_bits = cfg.code_width

    async def bench(ctx):
        for i, (x, code, psum) in enumerate(cases):
            ctx.set(dut.x, x)
            ctx.set(dut.code, code & ((1 << code_bits) - 1))
            if depth:
                ctx.set(dut.psum_in, psum)
            ctx.set(dut.en, 1)
            await ctx.tick()
            got = ctx.get(dut.psum_out)
            expected = psum + int(terms(cfg, np.array([x]), np.array([code]))[0])
            assert got == expected, (
                f"{cfg.pe} depth {depth} case {i}: x={x} code={code} psum_in={psum}: "
                f"got {got}, expected {expected}")
        # en low holds the register.
        ctx.set(dut.en, 0)
        ctx.set(dut.x, int_range(cfg.act_bits)[0])
        await ctx.tick()
        assert ctx.get(dut.psum_out) == expected, f"{cfg.pe} depth {depth}: en=0 changed psum"

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize(("cfg", "depth"), CASES,
                         ids=[f"{c.pe}-a{c.act_bits}w{c.weight_bits}-d{d}" for c, d in CASES])
def test_chain_matches_golden(cfg, depth):
    """The chain form the array's columns use (``PE.chain_accumulate``): the sum, or for adder
    PEs its magnitude ``-sum`` in an unsigned register one bit narrower than the sum's."""
    pe = pe_class(cfg.pe)
    sign = -1 if pe.chain_negated else 1
    lo, hi = cfg.sum_range(depth + 1)
    assert pe.chain_shape(cfg, depth + 1) == (
        unsigned(unsigned_width(-lo)) if pe.chain_negated else signed(signed_width(lo, hi)))
    assert pe.chain_negated == (cfg.pe == "adder")
    rng = np.random.default_rng(1000 * depth + len(cfg.top_name) + 7)
    cases = _cases(cfg, depth, rng)
    m = Module()
    x = Signal(signed(cfg.act_bits))
    code = Signal(cfg.code_width)
    chain_in = Signal(pe.chain_shape(cfg, max(depth, 1)))
    chain_out = Signal(pe.chain_shape(cfg, depth + 1))
    m.d.comb += chain_out.eq(pe.chain_accumulate(cfg, chain_in if depth else 0, x, code))

    async def bench(ctx):
        for i, (xv, c, psum) in enumerate(cases):
            ctx.set(x, xv)
            ctx.set(code, c & ((1 << cfg.code_width) - 1))
            if depth:
                ctx.set(chain_in, sign * psum)
            expected = sign * (psum + int(terms(cfg, np.array([xv]), np.array([c]))[0]))
            got = ctx.get(chain_out)
            assert got == expected, (
                f"{cfg.pe} depth {depth} case {i}: x={xv} code={c} chain_in={sign * psum}: "
                f"got {got}, expected {expected}")

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
