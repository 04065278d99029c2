"""cocotb benchmark of the core: whole layers through the generated Verilog, cycle counts read
from the core's own performance counters.

Driven by :func:`mulfree.flows.core_bench.bench_core`: ``MULFREE_BENCH_SPEC`` names a JSON file
with the workloads, ``MULFREE_BENCH_OUT`` the JSON file this writes. Every workload's results
are also checked bit for bit against the golden model, so a fast wrong core scores nothing.
"""

import json
import os
import time

import numpy as np

import cocotb
from cocotb.triggers import ClockCycles, with_timeout

from mulfree.host.layer_stream import Layer, layer_geometry, pack_layer, expected_beats
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


@cocotb.test()
async def bench(dut):
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    specs = json.loads(open(os.environ["MULFREE_BENCH_SPEC"]).read())
    rng = np.random.default_rng(1)
    results = []
    for spec in specs:
        layer = make_layer(cfg, spec, rng)
        g = layer_geometry(cfg, layer)
        packets = pack_layer(cfg, layer)
        want = expected_beats(cfg, layer)
        assert await tb.control("soft_reset") == 0      # clears the counters
        t0 = time.perf_counter()
        assert await tb.control("start") == 0
        cocotb.start_soon(tb.send_packets(packets))
        frame = await with_timeout(tb.sink.recv(), 50_000_000, "ns")
        await tb.wait_done(timeout_cycles=5_000_000)
        wall = time.perf_counter() - t0
        code = await tb.get("ERROR", "core_code")
        got = tb.beats_of(frame)
        counters = {n.lower(): await tb.counter(n) for n in
                    ("BUSY_CYCLES", "STALL_IN_CYCLES", "STALL_OUT_CYCLES", "TERMS")}
        results.append({
            "spec": spec, "geometry": {k: v for k, v in g.items() if k != "counts"},
            "counts": g["counts"], "counters": counters, "error": code,
            "bit_exact": got == want, "result_beats": len(got),
            "input_beats": sum(len(p.beats) for p in packets), "wall_seconds": wall,
        })
        await ClockCycles(dut.clk, 5)
    with open(os.environ["MULFREE_BENCH_OUT"], "w") as f:
        json.dump(results, f, indent=2)
