"""The whole core's generated Verilog under cocotbext-axi, on Verilator and Icarus.

Every PE kind, both engine organisations, odd array shapes and three stream widths; each design
runs every scenario of :mod:`mulfree.sim.tb_core`. The shift and adder-tree designs have a
shortcut buffer (residual layers run on both simulators) and a pool unit of 30 pixels; the
mult design has neither (``shortcut_vectors = 0``, ``pool_pixels = 0``: plain layers and clamps
run, a residual or a pool is refused). A missing
simulator fails the test (``SimulatorMissing``), never skips it.
"""

import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.sim.runner import build_verilog, run_cocotb

from cores import generated


_SMALL = dict(fmap_vectors=512, weight_rows=512, acc_entries=64, max_channels=32,
              out_vectors=8, shortcut_vectors=96, pool_pixels=30)
DESIGNS = {
    "shift_4x3_s64": CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=3, max_k=256),
                                **_SMALL),
    "adder_tree_5x4_s32": CoreConfig(engine=ArrayConfig(pe="adder", rows=5, cols=4, act_bits=6,
                                                        arch="tree", max_k=256),
                                     stream_width=32, **_SMALL),
    "mult_3x5_s128": CoreConfig(engine=ArrayConfig(pe="mult", rows=3, cols=5, weight_bits=5,
                                                   max_k=256), stream_width=128,
                                **dict(_SMALL, shortcut_vectors=0, pool_pixels=0)),
}
SCENARIOS = 7
# Icarus is slower: the designs it runs.
ICARUS = ("shift_4x3_s64", "adder_tree_5x4_s32")


@pytest.mark.parametrize("design,simulator",
                         [(d, "verilator") for d in DESIGNS] + [(d, "icarus") for d in ICARUS])
def test_core(design, simulator, tmp_path_factory):
    cfg = DESIGNS[design]
    build_dir = tmp_path_factory.mktemp(f"core-{simulator}-{design}")
    v_path, j_path = generated(cfg)
    runner = build_verilog(v_path, cfg.top_name, simulator, build_dir,
                           verilator_args=["-Wno-CASEINCOMPLETE"])
    result = run_cocotb(runner, j_path, "mulfree.sim.tb_core", seed=1234)
    assert result.ok, result.summary()
    assert len(result.tests) == SCENARIOS, f"ran {sorted(result.tests)}"
