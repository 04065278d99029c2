"""Directed corner scenarios of the core (:mod:`mulfree.sim.tb_core_corners`) on two designs.

The shift array on Verilator and the adder tree (32-bit stream: five beats per descriptor) on
Icarus, the designs of ``tests/test_core_sim.py``: packet orders, chunkings, block sizes at
the hazard window and the buffers' ends, back-to-back weight tiles, and every error by each
field it covers. A missing simulator fails the test.
"""

import pytest

from mulfree.sim.runner import build_verilog, run_cocotb
from mulfree.sim.tb_core_corners import SCENARIOS

from cores import generated
from test_core_sim import DESIGNS


@pytest.mark.parametrize("design,simulator", [("shift_4x3_s64", "verilator"),
                                              ("adder_tree_5x4_s32", "icarus")])
def test_core_corners(design, simulator, tmp_path_factory):
    cfg = DESIGNS[design]
    build_dir = tmp_path_factory.mktemp(f"corners-{simulator}-{design}")
    v_path, j_path = generated(cfg)
    runner = build_verilog(v_path, cfg.top_name, simulator, build_dir,
                           verilator_args=["-Wno-CASEINCOMPLETE"])
    result = run_cocotb(runner, j_path, "mulfree.sim.tb_core_corners", seed=1234)
    assert result.ok, result.summary()
    assert sorted(result.tests) == sorted(SCENARIOS), f"ran {sorted(result.tests)}"


def test_stream_errors_two_beat_shift_vector(tmp_path_factory):
    """A SHIFT vector of two beats (9 rows x 4 bits on a 32-bit stream): the loader checks it
    on its last beat from the beat held and the beat arriving (``StreamLoader._bad_shift``),
    so an entry beyond the reach is refused in either beat, in the first and the last lane
    (``stream_errors``, Verilator)."""
    from mulfree.params.config import ArrayConfig
    from mulfree.params.core_config import CoreConfig
    from test_core_sim import _SMALL

    cfg = CoreConfig(engine=ArrayConfig(pe="shift", rows=9, cols=2, max_k=256),
                     stream_width=32, **_SMALL)
    assert cfg.beats(cfg.vector_bits["SHIFT"]) == 2
    build_dir = tmp_path_factory.mktemp("corners-two-beat-shift")
    v_path, j_path = generated(cfg)
    runner = build_verilog(v_path, cfg.top_name, "verilator", build_dir,
                           verilator_args=["-Wno-CASEINCOMPLETE"])
    result = run_cocotb(runner, j_path, "mulfree.sim.tb_core_corners", testcase="stream_errors",
                        seed=1234)
    assert result.ok, result.summary()
    assert list(result.tests) == ["stream_errors"], f"ran {result.tests}"


def test_post_table_written_and_read_in_one_cycle():
    """A PostProcess table write and a beat reading the same entry in the same cycle: the
    beat sees the new parameters (``PostProcess.p``: a write takes effect for beats read in
    the same cycle or later). In the core the retire waits for the last PARAMS vector a cycle
    longer, so only the unit itself reaches this corner."""
    import numpy as np
    from amaranth.sim import Simulator
    from mulfree.params.config import ArrayConfig
    from mulfree.params.layer_golden import PostParams, postprocess
    from mulfree.rtl.postproc import PostProcess

    cfg = ArrayConfig(pe="shift", rows=2, cols=3, max_k=16)
    lanes, a, acc_w = 3, cfg.act_bits, cfg.acc_width
    dut = PostProcess(cfg, lanes=lanes, channels=2 * lanes)
    rng = np.random.default_rng(3)
    old = [(int(b), int(s), 0) for b, s in zip(rng.integers(-90, 90, lanes),
                                             rng.integers(0, 3, lanes))]
    accs = [int(v) for v in rng.integers(-300, 300, lanes)]
    got = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        for lane in range(lanes):
            for c, (b, s, r) in enumerate(old):     # the table before: every lane old
                ctx.set(dut.p.payload, {"group": 0, "lane": c, "bias": b, "shift": s,
                                        "relu": r})
                ctx.set(dut.p.valid, 1)
                await ctx.tick()
            # Lane ``lane`` rewritten in the very cycle a beat of its group is taken.
            ctx.set(dut.p.payload, {"group": 0, "lane": lane, "bias": 77, "shift": 1,
                                    "relu": 0})
            packed = sum((v & ((1 << acc_w) - 1)) << (j * acc_w) for j, v in enumerate(accs))
            ctx.set(dut.i.payload, {"data": packed, "group": 0, "zero": 0, "last": 1})
            ctx.set(dut.i.valid, 1)
            assert ctx.get(dut.i.ready)
            await ctx.tick()
            ctx.set(dut.p.valid, 0)
            ctx.set(dut.i.valid, 0)
            for _ in range(PostProcess.LATENCY + 2):
                if ctx.get(dut.o.valid):
                    data = ctx.get(dut.o.payload.data)
                    got.append([((data >> (j * a)) & ((1 << a) - 1)) for j in range(lanes)])
                    break
                await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert len(got) == lanes, f"{len(got)} output beats, expected {lanes}"
    for lane, values in enumerate(got):
        params = [p if j != lane else (77, 1, 0) for j, p in enumerate(old)]
        post = PostParams(np.array([p[0] for p in params]), np.array([p[1] for p in params]),
                          np.zeros(lanes, dtype=bool))
        want = postprocess(cfg, np.array([accs]), post)[0]
        want = [int(v) & ((1 << a) - 1) for v in want]
        assert values == want, f"lane {lane} rewritten in the reading cycle: got {values}, " \
                               f"expected {want} (new parameters in lane {lane})"
