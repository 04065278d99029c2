"""cocotb benchmark of the core: whole layers through the generated Verilog, cycle counts read
from the core's own performance counters.

Driven by :func:`mulfree.flows.core_bench.bench_core`: ``MULFREE_BENCH_SPEC`` names a JSON file
with the workloads, ``MULFREE_BENCH_OUT`` the JSON file this writes. Every workload's results
are also checked bit for bit against the golden model, so a fast wrong core scores nothing.
"""

import dataclasses
import json
import os
import time

import numpy as np

import cocotb
from cocotb.triggers import ClockCycles, with_timeout

from mulfree.host.layer_stream import (Layer, expected_beats, expected_output, layer_geometry,
                                      pack_layer)
from mulfree.params.layer_golden import PostParams
from mulfree.sim.tb_core import TB


__all__ = ["make_layer"]


def make_layer(cfg, spec, rng):
    """The random layer of a workload ``params`` (``kind``, sizes) for ``cfg``'s engine."""
    e = cfg.engine
    lo, hi = e.act_range
    if spec["kind"] == "matmul":
        shape_x = (spec["k"], 1, spec["m"])
        shape_w = (spec["n"], spec["k"], 1, 1)
    else:
        shape_x = (spec["in_c"], spec["h"], spec["w"])
        per_group = 1 if spec["kind"] == "depthwise" else spec["in_c"]
        shape_w = (spec["out_c"], per_group, spec["kernel"], spec["kernel"])
    x = rng.integers(lo, hi + 1, shape_x)
    if e.pe == "shift":
        w = rng.integers(0, 1 << e.weight_bits, shape_w)
    else:
        wb = e.weight_bits if e.pe == "mult" else e.act_bits
        w = rng.integers(-(1 << (wb - 1)), 1 << (wb - 1), shape_w)
    n = shape_w[0]
    post = PostParams(bias=rng.integers(-100, 100, n), shift=np.full(n, 6), relu=True)
    shifts = rng.integers(-1, 2, (shape_x[0], 2)) if spec.get("shift") else None
    pad = spec.get("padding", 0)
    window = {"window": "depthwise", "taps": spec["taps"]} if spec["kind"] == "depthwise" \
        else {}
    return Layer(x=x, w_codes=w, post=post, stride=(spec.get("stride", 1),) * 2,
                 padding=(pad, pad), shifts=shifts, m_block=spec.get("m_block"), **window)


_COUNTERS = ("BUSY_CYCLES", "STALL_IN_CYCLES", "STALL_OUT_CYCLES", "TERMS")


async def _run(tb, cfg, layer):
    """One run of ``layer``: ``(counters it added, error code, result beats equal the golden
    model's, result beats, input beats, wall seconds)``; a quiet run sends none."""
    packets = pack_layer(cfg, layer)
    want = [] if layer.quiet else expected_beats(cfg, layer)
    before = {n: await tb.counter(n) for n in _COUNTERS}
    t0 = time.perf_counter()
    assert await tb.control("start") == 0
    cocotb.start_soon(tb.send_packets(packets))
    got = [] if layer.quiet else \
        tb.beats_of(await with_timeout(tb.sink.recv(), 50_000_000, "ns"))
    await tb.wait_done(timeout_cycles=5_000_000)
    wall = time.perf_counter() - t0
    code = await tb.get("ERROR", "core_code")
    counters = {n.lower(): await tb.counter(n) - before[n] for n in _COUNTERS}
    return counters, code, got == want, len(got), sum(len(p.beats) for p in packets), wall


@cocotb.test()
async def bench(dut):
    """Every workload of the spec, each after a soft reset. A ``resident`` workload runs twice
    in a chain: the first run keeps its output in bank 1 and sends nothing, the second (the
    one measured) reads it there (``acts_resident``: no ACTS over the stream, as a layer in
    the middle of a chained network)."""
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    specs = json.loads(open(os.environ["MULFREE_BENCH_SPEC"]).read())
    rng = np.random.default_rng(1)
    results = []
    for spec in specs:
        layer = make_layer(cfg, spec, rng)
        assert await tb.control("soft_reset") == 0      # clears the counters
        if spec.get("resident"):
            first = dataclasses.replace(layer, in_bank=0, keep=True, quiet=True)
            counters, code, *_ = await _run(tb, cfg, first)
            assert code == 0, f"{spec['name']}: the first run stopped with error {code}"
            layer = dataclasses.replace(make_layer(cfg, spec, rng),
                                        x=expected_output(cfg, first), in_bank=1,
                                        acts_resident=True)
        g = layer_geometry(cfg, layer)
        counters, code, exact, beats, inputs, wall = await _run(tb, cfg, layer)
        results.append({
            "spec": spec, "geometry": {k: v for k, v in g.items() if k != "counts"},
            "counts": g["counts"], "counters": counters, "error": code,
            "bit_exact": exact, "result_beats": beats, "input_beats": inputs,
            "wall_seconds": wall,
        })
        await ClockCycles(dut.clk, 5)
    with open(os.environ["MULFREE_BENCH_OUT"], "w") as f:
        json.dump(results, f, indent=2)
