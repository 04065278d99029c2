"""The register block's generated Verilog under cocotbext-axi, on Verilator and Icarus.

A missing simulator fails the test (``SimulatorMissing``), never skips it.
"""

import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.gen.core_manifest import write_regs_design
from mulfree.sim.runner import build_verilog, run_cocotb


# The default core; a 1024x1024 tree whose 21-bit terms increment carries the 64-bit counter
# into its high half within a few thousand cycles, with a wider address and stream.
DESIGNS = {
    "default": CoreConfig(),
    "wide": CoreConfig(engine=ArrayConfig(pe="adder", rows=1024, cols=1024, arch="tree"),
                       stream_width=256, axil_addr_width=16, fmap_vectors=1 << 20),
}
SCENARIOS = 7


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_regs(design, simulator, tmp_path_factory):
    cfg = DESIGNS[design]
    build_dir = tmp_path_factory.mktemp(f"regs-{simulator}-{design}")
    v_path, j_path = write_regs_design(cfg, build_dir)
    # Amaranth splits the address decode into one case statement per signal, each without the
    # cases that leave its signal alone: incomplete by construction, not a missed address.
    runner = build_verilog(v_path, f"{cfg.top_name}_regs", simulator, build_dir,
                           verilator_args=["-Wno-CASEINCOMPLETE"])
    result = run_cocotb(runner, j_path, "mulfree.sim.tb_regs", seed=1234)
    assert result.ok, result.summary()
    assert len(result.tests) == SCENARIOS, f"ran {sorted(result.tests)}"
