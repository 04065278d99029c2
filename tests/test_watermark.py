"""``mulfree.rtl.watermark.watermark_ahead`` alone in the Amaranth simulator.

The registered comparison must equal ``far < ptr`` in every cycle (the unregistered check it
replaces in the issue unit: no cycle may change), where ``far`` is a signed register that jumps
to one of a few candidate values or holds, and ``ptr`` an unsigned pointer from 0 moving by +1
on its strobe. Expectations come from Python integers: ``far`` against ``ptr`` read as a signed
number of its own width (a pointer beyond ``far``'s range included).
"""

import random

import pytest
from amaranth.hdl import Module, Signal, signed
from amaranth.sim import Simulator

from mulfree.rtl.watermark import watermark_ahead


A, PTR = 8, 12          # far's width (signed) and the pointer's (unsigned, read as signed)


def _design():
    m = Module()
    far, ptr = Signal(signed(A)), Signal(PTR)
    we, go, issue = Signal(), Signal(), Signal()
    go_val, iss_val = Signal(signed(A)), Signal(signed(A))
    arrived = watermark_ahead(m, far, ptr, we, [(go, go_val), (issue, iss_val)])
    with m.If(go):
        m.d.sync += far.eq(go_val)
    with m.Elif(issue):
        m.d.sync += far.eq(iss_val)
    with m.If(we):
        m.d.sync += ptr.eq(ptr + 1)
    return m, dict(far=far, ptr=ptr, we=we, go=go, issue=issue, go_val=go_val,
                   iss_val=iss_val, arrived=arrived)


def _signed(v, bits):
    return v - (1 << bits) if v >> (bits - 1) else v


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("we_p", [0.2, 0.9])
def test_equals_far_below_ptr_every_cycle(seed, we_p):
    m, s = _design()
    rng = random.Random(seed)
    checked = []

    async def bench(ctx):
        # The pointer runs past far's range (2^(A-1)) and past its own sign bit (2^(PTR-1)):
        # both ends of the range logic are crossed.
        for cycle in range(3 * (1 << (PTR - 1)) // 2 if we_p > 0.5 else 900):
            far, ptr = ctx.get(s["far"]), ctx.get(s["ptr"])
            expect = far < _signed(ptr, PTR)
            assert ctx.get(s["arrived"]) == expect, (cycle, far, ptr)
            checked.append(expect)
            near = _signed(ptr, PTR) + rng.randrange(-3, 3)
            pick = (lambda: max(-(1 << (A - 1)), min((1 << (A - 1)) - 1, near))
                    if rng.random() < 0.7 else rng.randrange(-(1 << (A - 1)), 1 << (A - 1)))
            ctx.set(s["go"], rng.random() < 0.05)
            ctx.set(s["issue"], rng.random() < 0.5)
            ctx.set(s["go_val"], pick())
            ctx.set(s["iss_val"], pick())
            ctx.set(s["we"], rng.random() < we_p)
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    # Both answers occurred many times (the check could not pass on a constant).
    assert checked.count(True) > 50 and checked.count(False) > 50
