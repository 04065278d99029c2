"""Window runs (interface 2.3) under cocotbext-axi: the scenarios of
:mod:`mulfree.sim.tb_core_window` on the generated Verilog, on Verilator and Icarus: a 4x4
shift array (64-bit stream) and an 8x8 adder tree with a mult engine folded to 2 columns
(32-bit stream; depthwise runs on each engine), and the ``no_lane_unit`` scenario on a 4x4
core built with ``window_ops=False``. Every result is compared with the golden model
(``params.window_golden`` and the fused tail). A missing simulator fails the test.
"""

import dataclasses

import numpy as np
import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.sim.runner import build_verilog, run_cocotb
from mulfree.sim.tb_core_window import SCENARIOS

from cores import generated


_SMALL = dict(fmap_vectors=128, weight_rows=1024, acc_entries=32, max_channels=32,
              out_vectors=8, shortcut_vectors=128, pool_pixels=16)
DESIGNS = {
    "shift_4x4_s64": CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=4, max_k=256),
                                **_SMALL),
    "adder_tree_multc2_8x8_s32": CoreConfig(
        engine=ArrayConfig(pe="adder", rows=8, cols=8, act_bits=6, arch="tree", max_k=256),
        extra_engines=(ArrayConfig(pe="mult", rows=8, cols=8, act_bits=6, weight_bits=6,
                                   max_k=256),),
        engine_cols=(8, 2), stream_width=32, **_SMALL),
}
NO_LANES = CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=4, max_k=256),
                      window_ops=False, **_SMALL)


def _build(cfg, simulator, tmp_path_factory, name):
    build_dir = tmp_path_factory.mktemp(f"window-{simulator}-{name}")
    v_path, j_path = generated(cfg)
    runner = build_verilog(v_path, cfg.top_name, simulator, build_dir,
                           verilator_args=["-Wno-CASEINCOMPLETE"])
    return runner, j_path


@pytest.mark.parametrize("design,simulator", [(d, s) for d in DESIGNS
                                              for s in ("verilator", "icarus")])
def test_core_window(design, simulator, tmp_path_factory):
    cfg = DESIGNS[design]
    assert cfg.window_ops
    runner, j_path = _build(cfg, simulator, tmp_path_factory, design)
    result = run_cocotb(runner, j_path, "mulfree.sim.tb_core_window", seed=1234,
                        testcase=list(SCENARIOS))
    assert result.ok, result.summary()
    assert sorted(result.tests) == sorted(SCENARIOS), f"ran {sorted(result.tests)}"


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_core_without_lane_unit(simulator, tmp_path_factory):
    runner, j_path = _build(NO_LANES, simulator, tmp_path_factory, "nolanes")
    result = run_cocotb(runner, j_path, "mulfree.sim.tb_core_window", seed=1234,
                        testcase="no_lane_unit")
    assert result.ok, result.summary()
    assert sorted(result.tests) == ["no_lane_unit"], f"ran {sorted(result.tests)}"


@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_spec_packer_equals_host_packer(design):
    """The testbench's packets (built from the spec by ``pack_window``) carry the same
    descriptor and the same vectors of every type as the host's
    (:func:`mulfree.host.layer_stream.pack_layer` of a ``Layer`` with ``window``), and the
    testbench's golden beats (``window_layer`` + ``fused_tail``) are the host's
    (``expected_beats``): two packers and two result paths written apart."""
    from mulfree.host.layer_stream import Layer, expected_beats, pack_layer
    from mulfree.sim.tb_core_window import (pack_window, window_beats, window_output,
                                            window_runs_of)

    cfg = DESIGNS[design]
    rng = np.random.default_rng(11)

    def data(packets):
        out = {}
        for p in packets:
            out.setdefault(p.type, []).extend(p.beats[1:])
        return out

    for k in range(len(cfg.engines)):
        for what, run in window_runs_of(cfg, rng, k):
            c = run.x.shape[0]
            codes = (np.zeros((c, 1) + run.kernel, dtype=np.int64) if run.w_codes is None
                     else run.w_codes[:, None])
            layer = Layer(x=run.x, w_codes=codes, post=run.post, stride=run.stride,
                          padding=run.padding, m_block=run.m_block, clamp=run.clamp,
                          engine=run.engine, window=run.op)
            mine, host = pack_window(cfg, run), pack_layer(cfg, layer)
            assert mine[0].beats == host[0].beats, f"engine {k}, {what}: descriptor"
            assert data(mine) == data(host), f"engine {k}, {what}"
            want = window_beats(cfg, window_output(cfg, run), run.m_block)
            assert want == expected_beats(cfg, layer), f"engine {k}, {what}: results"


def test_datapath_window_runs():
    """The window runs of the 4x4 shift core through ``LayerDatapath`` in ``amaranth.sim``
    (seconds, no simulator: what mutation testing of the walk and the lane unit can afford),
    under m_axis backpressure, against the golden beats; and WEIGHTS sent to a max run are
    OVERRUN."""
    from test_core_datapath import ERRORS, run_datapath
    from mulfree.sim.tb_core_window import (pack_window, window_beats, window_output,
                                            window_runs_of)

    cfg = DESIGNS["shift_4x4_s64"]
    rng = np.random.default_rng(21)
    for what, run in window_runs_of(cfg, rng, 0):
        out = run_datapath(cfg, pack_window(cfg, run), ready=lambda c: c % 3 != 1)
        assert out["error"] == 0 and out["finished"], f"{what}: {out['error']}"
        want = window_beats(cfg, window_output(cfg, run), run.m_block)
        assert len(out["beats"]) == len(want), f"{what}: {len(out['beats'])} of {len(want)}"
        bad = [i for i, (g, w) in enumerate(zip(out["beats"], want)) if g != w]
        assert not bad, f"{what}: {len(bad)} of {len(want)} beats differ, first {bad[0]}"
    mx = dataclasses.replace(run, op="max", w_codes=None)
    out = run_datapath(cfg, pack_window(cfg, mx, weights=[0]))
    assert out["error"] == ERRORS["OVERRUN"], out["error"]
