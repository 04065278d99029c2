"""Layer chaining (interface 2.2) under cocotbext-axi: the scenarios of
:mod:`mulfree.sim.tb_core_chain` on the generated Verilog of two cores with two feature-map
banks, on Verilator and Icarus: a 4x4 shift array (64-bit stream) and an 8x8 adder tree with
a mult engine folded to 2 columns (32-bit stream; the chain's first and last layers run on
the folded engine). Every result is compared with the golden model of the whole chain. A
missing simulator fails the test.
"""

import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.gen.core_manifest import write_core_design
from mulfree.sim.runner import build_verilog, run_cocotb
from mulfree.sim.tb_core_chain import SCENARIOS


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


@pytest.mark.parametrize("design,simulator", [(d, s) for d in DESIGNS
                                              for s in ("verilator", "icarus")])
def test_core_chain(design, simulator, tmp_path_factory):
    cfg = DESIGNS[design]
    assert cfg.fmap_banks == 2
    build_dir = tmp_path_factory.mktemp(f"chain-{simulator}-{design}")
    v_path, j_path = write_core_design(cfg, build_dir)
    runner = build_verilog(v_path, cfg.top_name, simulator, build_dir,
                           verilator_args=["-Wno-CASEINCOMPLETE"])
    result = run_cocotb(runner, j_path, "mulfree.sim.tb_core_chain", seed=1234)
    assert result.ok, result.summary()
    assert sorted(result.tests) == sorted(SCENARIOS), f"ran {sorted(result.tests)}"
