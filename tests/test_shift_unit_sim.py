"""The generated Verilog of the address-shift unit, simulated by cocotb on Verilator and Icarus.

Each configuration builds its own design and runs every scenario of
``mulfree.sim.tb_shift_unit`` (random reads in every mode, corner cases, shortcut
concatenation, idle and backpressure, reset mid-stream, refused requests, cycle counts), each
element checked bit-exactly against the golden model. A missing simulator fails the test.
"""

import pytest

from mulfree.params.shift_config import ShiftUnitConfig
from mulfree.gen.shift_emit import write_shift_unit
from mulfree.sim.runner import build_verilog, run_cocotb


# (channels, height, width, act_bits, depth, kernel, max_shift): the default; an odd geometry
# with a non-power-of-two buffer larger than one map, a 5x5 kernel and table range 2; the
# smallest unit (one word, every shift larger than the map).
DESIGNS = [
    (16, 8, 8, 8, None, 3, 1),
    (11, 3, 5, 4, 200, 5, 2),
]
# Tiny: Icarus runs it in seconds; a Verilator build would cost more than it adds.
ICARUS_ONLY = [
    (1, 1, 1, 2, None, 3, 1),
]
SCENARIOS = 7


def _id(design):
    c, h, w, a, d, k, s = design
    return f"c{c}h{h}w{w}a{a}" + (f"d{d}" if d else "") + f"k{k}s{s}"


def _build(cfg, simulator, build_dir):
    v_path, j_path = write_shift_unit(cfg, build_dir.resolve())
    return build_verilog(v_path, cfg.top_name, simulator, build_dir), j_path


def _run(design, simulator, tmp_path_factory, reads):
    c, h, w, a, d, k, s = design
    cfg = ShiftUnitConfig(channels=c, height=h, width=w, act_bits=a, depth=d, kernel=k,
                          max_shift=s)
    build_dir = tmp_path_factory.mktemp(f"{simulator}-{_id(design)}")
    runner, manifest = _build(cfg, simulator, build_dir)
    result = run_cocotb(runner, manifest, "mulfree.sim.tb_shift_unit", seed=4321,
                        extra_env={"MULFREE_TB_READS": str(reads)})
    assert result.ok, result.summary()
    assert len(result.tests) == SCENARIOS, \
        f"expected {SCENARIOS} scenarios, ran {sorted(result.tests)}"


@pytest.mark.parametrize("design", DESIGNS, ids=_id)
def test_verilator(design, tmp_path_factory):
    _run(design, "verilator", tmp_path_factory, reads=60)


@pytest.mark.parametrize("design", DESIGNS + ICARUS_ONLY, ids=_id)
def test_icarus(design, tmp_path_factory):
    _run(design, "icarus", tmp_path_factory, reads=20)
