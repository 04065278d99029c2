"""The ShiftBlock's Verilog (ShiftUnit -> Vectorizer -> PEArray) on Icarus via cocotb, every
shift mode, shift and adder PEs, checked word for word against the golden block
``shift_golden.shift_block_forward``. A missing simulator fails the test."""

import json

import numpy as np
import pytest

from mulfree.gen.block_emit import convert_shift_block_verilog
from mulfree.sim.shift_sim import pack_tile
from mulfree.params.config import ArrayConfig
from mulfree.params.shift_config import ShiftUnitConfig, MODES
from mulfree.rtl.array import output_layout
from mulfree.rtl.block import block_command_layout
from mulfree.rtl.shift_layouts import table_layout, write_layout
from mulfree.sim.runner import build_verilog, check_simulator, run_cocotb
from mulfree.params.golden import encode_shift
from mulfree.params.shift_golden import shift_block_forward


def random_tile(cfg, rng):
    if cfg.pe == "shift":
        return encode_shift(rng.integers(-1, 2, (cfg.rows, cfg.cols)),
                            rng.integers(0, cfg.max_shift + 1, (cfg.rows, cfg.cols)),
                            cfg.weight_bits)
    lo, hi = cfg.weight_range
    return rng.integers(lo, hi + 1, (cfg.rows, cfg.cols))


def pack(layout, **values):
    word = 0
    for name, f in layout:
        width = f.shape.width
        word |= (int(values.get(name, 0)) & ((1 << width) - 1)) << f.offset
    return word


@pytest.mark.parametrize("pe", ["shift", "adder"])
def test_block_icarus(pe, tmp_path):
    check_simulator("icarus")
    shift_cfg = ShiftUnitConfig(channels=4, height=3, width=3, act_bits=6, depth=60, kernel=3,
                                max_shift=1)
    array_cfg = ArrayConfig(pe=pe, rows=4, cols=3, act_bits=6, max_k=4)
    rng = np.random.default_rng(11)
    memory = rng.integers(-32, 32, size=shift_cfg.depth)
    dy, dx = rng.integers(-1, 2, 4), rng.integers(-1, 2, 4)
    commands = [dict(mode=mode, base=base, height=3, width=3, rotate=r, radius=1, group=g)
                for mode, base, r, g in [("plain", 0, 0, 0), ("shift", 5, 0, 1),
                                         ("address", 9, 0, 1), ("channel", 12, 3, 0),
                                         ("table", 20, 0, 0)]]
    assert {c["mode"] for c in commands} == set(MODES)
    tiles = [random_tile(array_cfg, rng) for _ in commands]
    acc, cols = array_cfg.acc_width, array_cfg.cols
    expected = []
    for cmd, tile in zip(commands, tiles):
        y = shift_block_forward(array_cfg, tile, memory, cmd["mode"], cmd["base"], (4, 3, 3),
                                rotate=cmd["rotate"], radius=cmd["radius"], group=cmd["group"],
                                table=(dy, dx))
        expected.append([sum((int(v) & ((1 << acc) - 1)) << (c * acc) for c, v in enumerate(row))
                         for row in y])
    y_layout = output_layout(array_cfg)
    te = (1 << shift_cfg.table_entry_width) - 1
    spec = {
        "top": "shift_block",
        "writes": [pack(write_layout(shift_cfg), data=v, addr=a, seek=1)
                   for a, v in enumerate(memory.tolist())],
        "table": [pack(table_layout(shift_cfg), channel=c, dy=int(dy[c]) & te, dx=int(dx[c]) & te)
                  for c in range(4)],
        "commands": [pack(block_command_layout(shift_cfg), **dict(c, mode=MODES[c["mode"]]))
                     for c in commands],
        "weights": [b for tile in tiles for b in pack_tile(array_cfg, tile)],
        "expected": expected,
        "data_width": cols * acc,
        "last_first": y_layout["last"].offset == 0,
    }
    assert y_layout["data"].offset == (1 if spec["last_first"] else 0)
    v_path = tmp_path / "shift_block.v"
    v_path.write_text(convert_shift_block_verilog(shift_cfg, array_cfg, name="shift_block"))
    manifest = tmp_path / "spec.json"
    manifest.write_text(json.dumps(spec))
    runner = build_verilog(v_path, "shift_block", "icarus", tmp_path)
    result = run_cocotb(runner, manifest, "mulfree.sim.tb_shift_block", seed=1)
    assert result.ok, result.summary()
