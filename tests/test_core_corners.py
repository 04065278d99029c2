"""Directed corner scenarios of the core (:mod:`mulfree.sim.tb_core_corners`) on two designs.

The shift array on Verilator and the adder tree (32-bit stream: five beats per descriptor) on
Icarus, the designs of ``tests/test_core_sim.py``: packet orders, chunkings, block sizes at
the hazard window and the buffers' ends, back-to-back weight tiles, and every error by each
field it covers. A missing simulator fails the test.
"""

import pytest

from mulfree.gen.core_manifest import write_core_design
from mulfree.sim.runner import build_verilog, run_cocotb
from mulfree.sim.tb_core_corners import SCENARIOS

from test_core_sim import DESIGNS


@pytest.mark.parametrize("design,simulator", [("shift_4x3_s64", "verilator"),
                                              ("adder_tree_5x4_s32", "icarus")])
def test_core_corners(design, simulator, tmp_path_factory):
    cfg = DESIGNS[design]
    build_dir = tmp_path_factory.mktemp(f"corners-{simulator}-{design}")
    v_path, j_path = write_core_design(cfg, build_dir)
    runner = build_verilog(v_path, cfg.top_name, simulator, build_dir,
                           verilator_args=["-Wno-CASEINCOMPLETE"])
    result = run_cocotb(runner, j_path, "mulfree.sim.tb_core_corners", seed=1234)
    assert result.ok, result.summary()
    assert sorted(result.tests) == sorted(SCENARIOS), f"ran {sorted(result.tests)}"
