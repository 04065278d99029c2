"""Taps runs (interface 2.4) under cocotbext-axi: the scenarios of
:mod:`mulfree.sim.tb_core_taps` on the generated Verilog, on Verilator and Icarus: a 4x4 shift
array with taps=4 (2x2 kernels) and a 4x4 adder tree beside it (no tap ports: WINDOW), and a
9x9 adder array with a mult array (both tap engines, not folded) and taps=9 (3x3 kernels),
small buffers and 16-pixel lines. Every result is compared with the golden model
(``params.window_golden.window_layer`` and the fused tail). A missing simulator fails the test.

``test_datapath_taps_runs`` runs the shapes through ``LayerDatapath`` in ``amaranth.sim``
(seconds, no simulator) under m_axis backpressure.
"""

import numpy as np
import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.sim.runner import build_verilog, run_cocotb
from mulfree.sim.tb_core_taps import SCENARIOS

from cores import generated


_SMALL = dict(fmap_vectors=128, weight_rows=1024, acc_entries=32, max_channels=32,
              out_vectors=8, shortcut_vectors=128, pool_pixels=16, tap_line=16)
DESIGNS = {
    "shift_4x4_taps4_tree_s64": CoreConfig(
        engine=ArrayConfig(pe="shift", rows=4, cols=4, max_k=256),
        extra_engines=(ArrayConfig(pe="adder", rows=4, cols=4, arch="tree", max_k=256),),
        taps=4, **_SMALL),
    "adder_mult_9x9_taps9_s32": CoreConfig(
        engine=ArrayConfig(pe="adder", rows=9, cols=9, act_bits=6, max_k=256),
        extra_engines=(ArrayConfig(pe="mult", rows=9, cols=9, act_bits=6, weight_bits=6,
                                   max_k=256),),
        taps=9, stream_width=32, **_SMALL),
}


@pytest.mark.parametrize("design,simulator", [(d, s) for d in DESIGNS
                                              for s in ("verilator", "icarus")])
def test_core_taps(design, simulator, tmp_path_factory):
    cfg = DESIGNS[design]
    assert cfg.taps and cfg.tap_engines
    build_dir = tmp_path_factory.mktemp(f"taps-{simulator}-{design}")
    v_path, j_path = generated(cfg)
    runner = build_verilog(v_path, cfg.top_name, simulator, build_dir,
                           verilator_args=["-Wno-CASEINCOMPLETE"])
    result = run_cocotb(runner, j_path, "mulfree.sim.tb_core_taps", seed=1234,
                        testcase=list(SCENARIOS))
    assert result.ok, result.summary()
    assert sorted(result.tests) == sorted(SCENARIOS), f"ran {sorted(result.tests)}"


@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_datapath_taps_runs(design):
    """Every shape of ``taps_runs_of`` on each tap engine through ``LayerDatapath`` under
    m_axis backpressure, against the golden beats."""
    from test_core_datapath import run_datapath
    from mulfree.sim.tb_core_taps import pack_taps, taps_runs_of
    from mulfree.sim.tb_core_window import window_beats, window_output

    cfg = DESIGNS[design]
    rng = np.random.default_rng(5)
    for k in cfg.tap_engines:
        for what, run in taps_runs_of(cfg, rng, k):
            out = run_datapath(cfg, pack_taps(cfg, run), ready=lambda c: c % 3 != 1)
            assert out["error"] == 0 and out["finished"], f"{k} {what}: {out['error']}"
            want = window_beats(cfg, window_output(cfg, run), run.m_block)
            assert len(out["beats"]) == len(want), f"{k} {what}: {len(out['beats'])} beats"
            bad = [i for i, (g, w) in enumerate(zip(out["beats"], want)) if g != w]
            assert not bad, f"{k} {what}: {len(bad)} of {len(want)} beats differ, first {bad[0]}"
