"""``mulfree.rtl.watermark.below``, the issue unit's watermark check, against Python integers.

``below(far, ptr)`` must equal ``far < ptr`` for a signed ``far`` of ``A`` bits and a pointer
whose bits are read as a signed number of its own (wider) width, for every pair: the check
compares on ``A`` bits only, so pointers beyond ``far``'s range (above and below) are where
it can go wrong. Exhaustive at A = 5, PTR = 8.
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.sim import Simulator

from mulfree.rtl.watermark import below


A, PTR = 5, 8


def _signed(v, bits):
    return v - (1 << bits) if v >> (bits - 1) else v


def test_equals_far_below_ptr_for_every_pair():
    m = Module()
    far, ptr = Signal(signed(A)), Signal(PTR)
    out = Signal()
    m.d.comb += out.eq(below(far, ptr))
    seen = set()

    async def bench(ctx):
        for f in range(-(1 << (A - 1)), 1 << (A - 1)):
            for p in range(1 << PTR):
                ctx.set(far, f)
                ctx.set(ptr, p)
                got = ctx.get(out)
                assert got == (f < _signed(p, PTR)), (f, p, got)
                seen.add(got)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert seen == {0, 1}
