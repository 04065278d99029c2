"""``mulfree.rtl.engines.skid_buffer`` alone in the Amaranth simulator.

The buffer between the engines and retire must (1) pass every vector once, in order, under any
pattern of valid and ready; (2) add no latency: while it is empty a vector offered is taken the
same cycle the consumer is ready; (3) drive ``y.ready`` from a register: the consumer's ready
must not reach it in the same cycle (the point of the buffer: the engines' enables do not
wait for retire's decision). Expectations come from a model written here: a queue of at most
one kept vector.
"""

import random

import pytest
from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import data, stream
from amaranth.sim import Simulator

from mulfree.rtl.engines import skid_buffer


LAYOUT = data.StructLayout({"data": unsigned(12), "last": unsigned(1)})


def _design():
    m = Module()
    y = stream.Signature(LAYOUT).create()
    out = skid_buffer(m, y, LAYOUT)
    return m, y, out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("valid_p, ready_p", [(1.0, 1.0), (1.0, 0.5), (0.5, 1.0), (0.7, 0.3),
                                              (0.3, 0.8)])
def test_every_vector_once_in_order_without_latency(seed, valid_p, ready_p):
    m, y, out = _design()
    rng = random.Random(seed)
    sent = [rng.randrange(1 << 12) for _ in range(120)]
    got, log = [], []

    async def bench(ctx):
        i, offering, kept = 0, False, None      # kept: the model's buffered vector
        for cycle in range(2000):
            offering = i < len(sent) and (offering or rng.random() < valid_p)
            ready = rng.random() < ready_p
            ctx.set(y.valid, offering)
            ctx.set(y.payload.data, sent[i] if offering else 0)
            ctx.set(y.payload.last, int(offering and i == len(sent) - 1))
            ctx.set(out.ready, ready)
            y_ready = ctx.get(y.ready)
            # Model: ready towards the engine iff nothing is kept; the kept one goes first,
            # else the offered one passes straight through.
            assert y_ready == (kept is None), cycle
            head = kept if kept is not None else (sent[i] if offering else None)
            assert ctx.get(out.valid) == (head is not None), cycle
            if head is not None:
                assert ctx.get(out.payload.data) == head, cycle
            if head is not None and ready:
                got.append(ctx.get(out.payload.data))
                log.append(cycle)
            took = offering and y_ready
            if kept is not None:
                kept = None if ready else kept
            elif took and not ready:
                kept = sent[i]
            await ctx.tick()
            if took:
                i, offering = i + 1, False
            if len(got) == len(sent):
                break

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert got == sent
    if valid_p == ready_p == 1.0:
        assert log == list(range(len(sent)))        # one a cycle from the first: no latency


def test_ready_towards_the_engines_is_a_register():
    """Toggling the consumer's ready within a cycle never changes ``y.ready`` in that cycle."""
    m, y, out = _design()

    async def bench(ctx):
        ctx.set(y.valid, 1)
        for cycle in range(20):
            before = ctx.get(y.ready)
            for ready in (0, 1, 0):
                ctx.set(out.ready, ready)
                assert ctx.get(y.ready) == before, cycle
            ctx.set(out.ready, cycle % 3 == 0)
            await ctx.tick()

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
