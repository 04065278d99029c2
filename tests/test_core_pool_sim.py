"""The global pool's cocotb scenarios (:mod:`mulfree.sim.tb_core_pool`) on the generated
Verilog of the designs of ``tests/test_core_sim.py``: the shift array (a pool unit of 30
pixels, a shortcut buffer) on Verilator, the adder tree (32-bit stream) on Icarus, and the
mult array without a pool unit (``pool_pixels = 0``: a pool is refused) on Verilator. A missing
simulator fails the test.
"""

import pytest

from mulfree.sim.runner import build_verilog, run_cocotb
from mulfree.sim.tb_core_pool import SCENARIOS

from cores import generated
from test_core_sim import DESIGNS


@pytest.mark.parametrize("design,simulator", [("shift_4x3_s64", "verilator"),
                                              ("adder_tree_5x4_s32", "icarus"),
                                              ("mult_3x5_s128", "verilator")])
def test_core_pool(design, simulator, tmp_path_factory):
    cfg = DESIGNS[design]
    build_dir = tmp_path_factory.mktemp(f"pool-{simulator}-{design}")
    v_path, j_path = generated(cfg)
    runner = build_verilog(v_path, cfg.top_name, simulator, build_dir,
                           verilator_args=["-Wno-CASEINCOMPLETE"])
    result = run_cocotb(runner, j_path, "mulfree.sim.tb_core_pool", seed=1234)
    assert result.ok, result.summary()
    assert sorted(result.tests) == sorted(SCENARIOS), f"ran {sorted(result.tests)}"
