"""Directed corner scenarios of the address-shift unit (:mod:`mulfree.sim.tb_shift_corners`).

Two designs of ``tests/test_shift_unit_sim.py`` on Icarus: the default unit (a buffer of 2^10
words, so a wrapped address would land on word 0) and the odd one (200 words, an address
field that can name words past the end). A missing simulator fails the test.
"""

import pytest

from mulfree.params.shift_config import ShiftUnitConfig
from mulfree.gen.shift_emit import write_shift_unit
from mulfree.sim.runner import build_verilog, run_cocotb
from mulfree.sim.tb_shift_corners import SCENARIOS

from test_shift_unit_sim import DESIGNS


@pytest.mark.parametrize("design", DESIGNS, ids=lambda d: "c{}h{}w{}a{}d{}k{}s{}".format(*d))
def test_shift_corners(design, tmp_path_factory):
    c, h, w, a, d, k, s = design
    cfg = ShiftUnitConfig(channels=c, height=h, width=w, act_bits=a, depth=d, kernel=k,
                          max_shift=s)
    build_dir = tmp_path_factory.mktemp(f"shift-corners-c{c}h{h}w{w}")
    v_path, j_path = write_shift_unit(cfg, build_dir)
    runner = build_verilog(v_path, cfg.top_name, "icarus", build_dir)
    result = run_cocotb(runner, j_path, "mulfree.sim.tb_shift_corners", seed=4321)
    assert result.ok, result.summary()
    assert sorted(result.tests) == sorted(SCENARIOS), f"ran {sorted(result.tests)}"
