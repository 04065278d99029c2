"""The aligned shortcut of interface 2.0 (:mod:`mulfree.sim.tb_core_shortcut`) on the
generated Verilog: the shift array of ``tests/test_core_sim.py`` (3 lanes: every offset but 0
moves lanes) on Verilator and Icarus, the adder tree (4 lanes, a 32-bit stream) on Icarus, and
a 16-lane core on Verilator running ResNet-20's downsampling shortcut (16 channels at offset
8, stride 2). A missing simulator fails the test.
"""

import dataclasses

import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.sim.runner import build_verilog, run_cocotb
from mulfree.sim.tb_core_shortcut import SCENARIOS

from cores import generated
from test_core_sim import DESIGNS


SHORTCUT_DESIGNS = {
    "shift_4x3_s64": DESIGNS["shift_4x3_s64"],
    "adder_tree_5x4_s32": DESIGNS["adder_tree_5x4_s32"],
    "shift_2x16_s128": dataclasses.replace(
        DESIGNS["shift_4x3_s64"], engine=ArrayConfig(pe="shift", rows=2, cols=16, max_k=256),
        stream_width=128, max_channels=64),
}


@pytest.mark.parametrize("design,simulator", [("shift_4x3_s64", "verilator"),
                                              ("shift_4x3_s64", "icarus"),
                                              ("adder_tree_5x4_s32", "icarus"),
                                              ("shift_2x16_s128", "verilator")])
def test_core_aligned_shortcut(design, simulator, tmp_path_factory):
    cfg = SHORTCUT_DESIGNS[design]
    assert isinstance(cfg, CoreConfig) and cfg.shortcut_vectors
    build_dir = tmp_path_factory.mktemp(f"shortcut-{simulator}-{design}")
    v_path, j_path = generated(cfg)
    runner = build_verilog(v_path, cfg.top_name, simulator, build_dir,
                           verilator_args=["-Wno-CASEINCOMPLETE"])
    result = run_cocotb(runner, j_path, "mulfree.sim.tb_core_shortcut", seed=1234)
    assert result.ok, result.summary()
    assert sorted(result.tests) == sorted(SCENARIOS), f"ran {sorted(result.tests)}"
