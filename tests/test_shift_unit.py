"""Tests of the address-shift unit's golden models, configuration, manifest, options and bench.

The golden models are checked against independent element-by-element loops written from
``docs/numerics.md`` (section 9) and against hand-worked examples; the RTL against the golden
models in ``amaranth.sim`` (the cocotb runs are in ``test_shift_unit_sim.py``).
"""

import argparse
import json
import re

import numpy as np
import pytest

from mulfree.params.config import ConfigError
from mulfree.gen.emit import OutputError
from mulfree.params.config import ArrayConfig
from mulfree.params.shift_config import ShiftUnitConfig, MODES, ORDERS
from mulfree.flows.generate import add_shift_unit_options, shift_unit_config_from_args
from mulfree.flows.bench_shift_unit import bench_shift_unit
from mulfree.gen.shift_emit import convert_shift_unit_verilog, shift_unit_manifest, write_shift_unit
from mulfree.sim.shift_sim import simulate_shift_unit
from mulfree.params.golden import array_forward
from mulfree.params.shift_golden import (address_shift, channel_shift, element_order, read_command,
                                      read_stream, shift_block_forward, shift_cvpr,
                                      shift_directions, shortcut_concat, table_shift)


# Independent references: plain loops over every element ------------------------------------

def ref_groups(C, directions, g):
    """Direction of each channel: group c // g while groups last, then the centre."""
    out = []
    for c in range(C):
        if g > 0 and c // g < len(directions):
            out.append(directions[c // g])
        else:
            out.append((0, 0))
    return out


def ref_zero_fill(fmap, offsets):
    C, H, W = fmap.shape
    out = np.zeros((C, H, W), dtype=np.int64)
    for c in range(C):
        dy, dx = offsets[c]
        for y in range(H):
            for x in range(W):
                if 0 <= y + dy < H and 0 <= x + dx < W:
                    out[c, y, x] = fmap[c, y + dy, x + dx]
    return out


def ref_linear(memory, base, shape, offsets):
    C, H, W = shape
    out = np.zeros(shape, dtype=np.int64)
    for c in range(C):
        dy, dx = offsets[c]
        for y in range(H):
            for x in range(W):
                a = base + (c * H + y) * W + x + dy * W + dx
                out[c, y, x] = memory[a] if 0 <= a < len(memory) else 0
    return out


def rand_map(rng, C, H, W):
    return rng.integers(-128, 128, size=(C, H, W))


# Golden models -------------------------------------------------------------------------------

def test_directions_row_major():
    assert shift_directions(1) == [(0, 0)]
    assert shift_directions(3) == [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 0), (0, 1),
                                   (1, -1), (1, 0), (1, 1)]
    assert len(shift_directions(5)) == 25 and shift_directions(5)[0] == (-2, -2)
    with pytest.raises(ValueError, match="odd"):
        shift_directions(4)


def test_shift_sign_convention_by_hand():
    # One channel per direction (C = 9, k = 3): channel 0 reads (y - 1, x - 1), so its
    # content moves down-right; channel 5 reads (y, x + 1): content moves left.
    fmap = np.arange(9 * 3 * 3).reshape(9, 3, 3)
    out = shift_cvpr(fmap, 3)
    assert out[0].tolist() == [[0, 0, 0], [0, 0, 1], [0, 3, 4]]
    assert (out[4] == fmap[4]).all()                       # the centre direction (0, 0)
    assert out[5].tolist() == [[46, 47, 0], [49, 50, 0], [52, 53, 0]]


@pytest.mark.parametrize("C,H,W,k", [(9, 4, 5, 3), (10, 3, 3, 3), (20, 2, 7, 3), (4, 3, 3, 3),
                                     (1, 1, 1, 3), (26, 5, 5, 5), (7, 6, 2, 1), (50, 3, 4, 5)])
def test_shift_cvpr_against_loops(C, H, W, k):
    fmap = rand_map(np.random.default_rng(C * 100 + H), C, H, W)
    dirs = shift_directions(k)
    want = ref_zero_fill(fmap, ref_groups(C, dirs, C // (k * k)))
    assert (shift_cvpr(fmap, k) == want).all()
    for g in (0, 1, 2, C):
        assert (shift_cvpr(fmap, k, group=g) == ref_zero_fill(fmap, ref_groups(C, dirs, g))).all()


def test_shift_leftover_channels_are_centre():
    fmap = rand_map(np.random.default_rng(1), 11, 3, 3)
    out = shift_cvpr(fmap, 3)                              # g = 1: channels 9, 10 unshifted
    assert (out[9:] == fmap[9:]).all()
    assert (shift_cvpr(fmap[:8], 3) == fmap[:8]).all()     # C < k^2: g = 0, nothing moves


def test_shift_larger_than_map_is_zero():
    fmap = rand_map(np.random.default_rng(2), 3, 1, 1)
    assert (table_shift(fmap, [1, -1, 0], [0, 0, 2]) == 0).all()


def test_address_shift_by_hand():
    # Buffer: a word before, the map 1 x 2 x 3 = [[1, 2, 3], [4, 5, 6]] at base 1, a word after.
    memory = np.array([100, 1, 2, 3, 4, 5, 6, 200])
    assert address_shift(memory, 1, (1, 2, 3), group=1).tolist() == [[[2, 3, 4], [5, 6, 200]]]
    four = np.arange(1, 4 * 2 * 2 + 1)                     # 4 channels of 2 x 2, base 0
    out = address_shift(four, 0, (4, 2, 2))                # g = 1: left, right, up, down
    assert out[0].tolist() == [[2, 3], [4, 5]]             # left: the next word, across rows
    assert out[1].tolist() == [[4, 5], [6, 7]]             # right: the previous word
    assert out[2].tolist() == [[11, 12], [13, 14]]         # up: the next row, into channel 3
    assert out[3].tolist() == [[11, 12], [13, 14]]         # down: the previous row
    first = address_shift(four, 0, (4, 2, 2), group=4)     # all channels left
    assert first[3, 1, 1] == 0                             # past the buffer's end: 0
    right = address_shift(four, 0, (1, 2, 2), group=1)[0]
    assert right.tolist() == [[2, 3], [4, 5]]


def test_address_shift_before_buffer_start_is_zero():
    memory = np.arange(1, 13)
    out = address_shift(memory, 0, (2, 2, 3), group=0)
    assert (out.ravel() == memory).all()
    # Channel 0 "right" (dx = -1) at base 0: element (0, 0, 0) reads address -1.
    out = read_command(memory, "address", 0, (4, 1, 3), group=1)
    assert out[1, 0, 0] == memory[3 - 1] and address_shift(memory, 0, (1, 1, 12), 0)[0, 0, 0] == 1


@pytest.mark.parametrize("C,H,W,base,g", [(8, 3, 4, 5, None), (5, 1, 1, 0, None),
                                          (9, 2, 3, 7, 2), (3, 4, 4, 0, 1), (6, 2, 2, 40, 0)])
def test_address_shift_against_loops(C, H, W, base, g):
    rng = np.random.default_rng(C + base)
    memory = rng.integers(-8, 8, size=C * H * W + 60)
    dirs = [(0, 1), (0, -1), (1, 0), (-1, 0)]
    want = ref_linear(memory, base, (C, H, W), ref_groups(C, dirs, C // 4 if g is None else g))
    assert (address_shift(memory, base, (C, H, W), g) == want).all()


def test_channel_shift_direction():
    fmap = np.arange(5)[:, None, None] * np.ones((5, 2, 2), dtype=np.int64)
    for r in range(6):
        out = channel_shift(fmap, r)
        assert [int(out[c, 0, 0]) for c in range(5)] == [(c + r) % 5 for c in range(5)]
    assert (channel_shift(fmap, 0) == fmap).all() and (channel_shift(fmap, 5) == fmap).all()
    with pytest.raises(ValueError, match=r"r must be in \[0, C\]"):
        channel_shift(fmap, 6)


def test_shortcut_concat():
    a, b = np.ones((2, 3, 3), dtype=np.int64), np.zeros((3, 3, 3), dtype=np.int64)
    assert shortcut_concat(a, b).shape == (5, 3, 3)
    memory = np.concatenate([a.ravel(), b.ravel()])
    assert (read_command(memory, "plain", 0, (5, 3, 3)) == shortcut_concat(a, b)).all()
    with pytest.raises(ValueError, match="one H x W"):
        shortcut_concat(a, np.zeros((1, 2, 3), dtype=np.int64))


def test_table_shift_against_loops():
    rng = np.random.default_rng(5)
    fmap = rand_map(rng, 6, 4, 5)
    dy, dx = rng.integers(-3, 4, size=6), rng.integers(-3, 4, size=6)
    assert (table_shift(fmap, dy, dx) == ref_zero_fill(fmap, list(zip(dy, dx)))).all()


def test_element_order_by_hand():
    assert element_order((2, 1, 2)).tolist() == [[0, 0, 0], [0, 0, 1], [1, 0, 0], [1, 0, 1]]
    assert element_order((2, 1, 2), "pixel_major").tolist() == [[0, 0, 0], [1, 0, 0],
                                                                [0, 0, 1], [1, 0, 1]]
    with pytest.raises(ValueError, match="order must be one of channel_major, pixel_major"):
        element_order((1, 1, 1), "yxc")


@pytest.mark.parametrize("mode", list(MODES))
def test_read_stream_pixel_major_against_loops(mode):
    # Pixel-major is the same map, visited pixel by pixel: element i is (c, y, x) with
    # i = (y*W + x)*C + c.
    rng = np.random.default_rng(3)
    C, H, W = 5, 3, 4
    memory = rng.integers(-8, 8, size=100)
    kw = dict(rotate=2, radius=1, group=1, table=(rng.integers(-1, 2, 5), rng.integers(-1, 2, 5)))
    fmap = read_command(memory, mode, 7, (C, H, W), **kw)
    stream = read_stream(memory, mode, 7, (C, H, W), order="pixel_major", **kw)
    for y in range(H):
        for x in range(W):
            for c in range(C):
                assert stream[(y * W + x) * C + c] == fmap[c, y, x]
    assert (read_stream(memory, mode, 7, (C, H, W), **kw) == fmap.ravel()).all()


def test_shift_block_forward_by_hand():
    cfg = ArrayConfig(pe="adder", rows=2, cols=1, act_bits=4, max_k=2)
    # Map 2 x 1 x 2 = [[[1, 2]], [[3, 4]]]; plain read; weights [[1], [0]]: per pixel
    # -|x0 - 1| - |x1 - 0| = (-0 - 3, -1 - 4).
    memory = np.array([1, 2, 3, 4])
    y = shift_block_forward(cfg, np.array([[1], [0]]), memory, "plain", 0, (2, 1, 2))
    assert y.tolist() == [[-3], [-5]]
    # Channel rotation by 1 swaps the channels: (-|3 - 1| - 1, -|4 - 1| - 2).
    y = shift_block_forward(cfg, np.array([[1], [0]]), memory, "channel", 0, (2, 1, 2),
                            rotate=1)
    assert y.tolist() == [[-3], [-5]]
    y = shift_block_forward(cfg, np.array([[0], [1]]), memory, "channel", 0, (2, 1, 2),
                            rotate=1)
    assert y.tolist() == [[-3 - 0], [-4 - 1]]
    assert (y == array_forward(cfg, np.array([[0], [1]]), np.array([[3, 1], [4, 2]]))).all()
    with pytest.raises(ConfigError, match=r"channels must equal the array's rows = 2") as e:
        shift_block_forward(cfg, np.array([[1], [0]]), memory, "plain", 0, (1, 2, 2))
    assert e.value.param == "channels"


def test_golden_rejects_non_integers():
    with pytest.raises(TypeError, match="integer array"):
        shift_cvpr(np.zeros((1, 2, 2)), 3)


# Configuration -------------------------------------------------------------------------------

def test_defaults_and_derived():
    cfg = ShiftUnitConfig()
    assert (cfg.channels, cfg.height, cfg.width, cfg.act_bits, cfg.depth) == (16, 8, 8, 8, 1024)
    assert cfg.top_name == "mulfree_shiftunit_c16h8w8_a8"
    assert cfg.addr_width == 10 and cfg.count_width == 5 and cfg.max_radius == 1
    assert cfg.table_entry_width == 3 and cfg.table_channel_width == 5
    assert cfg.prep_cycles == 4 + 4 and cfg.read_latency == 11
    big = ShiftUnitConfig(channels=12, height=5, width=5, depth=1000, kernel=5, max_shift=3)
    assert big.top_name == "mulfree_shiftunit_c12h5w5_a8_d1000_k5s3"
    assert big.offset_range == 3 and big.table_entry_width == 4


@pytest.mark.parametrize("kwargs,param,message", [
    (dict(channels=0), "channels", "channels must be an integer in [1, 4096], not 0"),
    (dict(channels=True), "channels", "channels must be an integer in [1, 4096], not True"),
    (dict(height=0), "height", "height must be an integer in [1, 1024], not 0"),
    (dict(width=2000), "width", "width must be an integer in [1, 1024], not 2000"),
    (dict(act_bits=1), "act_bits", "act_bits must be an integer in [2, 16], not 1"),
    (dict(depth=1023), "depth", "depth must be an integer (words; at least channels * height "
                                "* width) in [1024, 4194304], not 1023"),
    (dict(channels=4096, height=1024, width=2), "channels", "channels * height * width = 4096 "
                                                            "* 1024 * 2 = 8388608 words"),
    (dict(kernel=4), "kernel", "kernel must be an odd integer in [1, 17], not 4"),
    (dict(kernel=19), "kernel", "kernel must be an odd integer (radius (kernel-1)/2 <= min(15, "
                                "max(height, width)) = 8) in [1, 17], not 19"),
    (dict(height=1, width=1, kernel=5), "kernel", "= 1) in [1, 3], not 5"),
    (dict(max_shift=9), "max_shift", "max_shift must be an integer (at most min(15, max(height, "
                                     "width)) = 8) in [0, 8], not 9"),
    (dict(max_shift=-1), "max_shift", "in [0, 8], not -1"),
    (dict(name="1x"), "name", "name must be a Verilog identifier (letters, digits and _, not "
                              "starting with a digit), not '1x'"),
])
def test_config_errors(kwargs, param, message):
    with pytest.raises(ConfigError) as e:
        ShiftUnitConfig(**kwargs)
    assert e.value.param == param
    assert message in str(e.value)
    assert "\n" not in str(e.value)


# Manifest, emission, options ---------------------------------------------------------------

def test_manifest_ports_match_verilog():
    cfg = ShiftUnitConfig(channels=5, height=3, width=4, depth=100)
    text = convert_shift_unit_verilog(cfg)
    man = shift_unit_manifest(cfg)
    assert man["kind"] == "shift_unit" and man["modes"] == MODES and man["orders"] == ORDERS
    declared = {}
    for direction, width, name in re.findall(r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?"
                                             r"(?:\[(\d+):0\]\s+)?\\?(\w+)", text, re.M):
        declared[name] = (direction, int(width) + 1 if width else 1)
    for port in man["ports"]:
        assert declared.pop(port["name"]) == (port["direction"], port["width"]), port["name"]
        assert port["meaning"], port["name"]
        for f in port.get("fields", []):
            assert f["meaning"], (port["name"], f["name"])
    assert not declared
    cmd = next(p for p in man["ports"] if p["name"] == "cmd__payload")
    assert sum(f["width"] for f in cmd["fields"]) == cmd["width"]


def test_write_shift_unit(tmp_path):
    cfg = ShiftUnitConfig(channels=2, height=2, width=2)
    v, j = write_shift_unit(cfg, tmp_path / "out")
    assert v.name == f"{cfg.top_name}.v" and f"module {cfg.top_name}" in v.read_text()
    assert json.loads(j.read_text())["parameters"] == cfg.params()
    (tmp_path / "file").write_text("")
    with pytest.raises(OutputError, match="is not a folder"):
        write_shift_unit(cfg, tmp_path / "file" / "sub")


def test_options_defaults_and_errors():
    parser = argparse.ArgumentParser()
    add_shift_unit_options(parser)
    assert shift_unit_config_from_args(parser.parse_args([])) == ShiftUnitConfig()
    cfg = shift_unit_config_from_args(parser.parse_args(
        ["--channels", "4", "--height", "3", "--max-shift", "2", "--depth", "100"]))
    assert (cfg.channels, cfg.height, cfg.max_shift, cfg.depth) == (4, 3, 2, 100)
    with pytest.raises(ConfigError) as e:
        shift_unit_config_from_args(parser.parse_args(["--max-shift", "99"]))
    assert str(e.value).startswith("--max-shift must be") and e.value.param == "max_shift"
    help_text = parser.format_help()
    assert "1..4096" in help_text and "default: 16" in help_text


# RTL in amaranth.sim -------------------------------------------------------------------------

@pytest.mark.parametrize("order", list(ORDERS))
def test_rtl_matches_golden_with_backpressure(order):
    cfg = ShiftUnitConfig(channels=7, height=3, width=4, act_bits=5, depth=120, kernel=3,
                          max_shift=2)
    rng = np.random.default_rng(9)
    memory = rng.integers(-16, 16, size=cfg.depth)
    dy, dx = rng.integers(-2, 3, size=7), rng.integers(-2, 3, size=7)
    dy[0], dx[0] = 1, -2
    commands = [
        dict(mode="shift", base=3, channels=7, height=3, width=4, rotate=0, radius=1, group=0),
        dict(mode="shift", base=3, channels=7, height=3, width=4, rotate=0, radius=1, group=1),
        dict(mode="address", base=0, channels=6, height=2, width=3, rotate=0, radius=0, group=1),
        dict(mode="channel", base=10, channels=7, height=1, width=4, rotate=3, radius=0, group=0),
        dict(mode="channel", base=10, channels=7, height=1, width=4, rotate=7, radius=0, group=0),
        dict(mode="table", base=36, channels=7, height=3, width=4, rotate=0, radius=0, group=0),
        dict(mode="plain", base=119, channels=1, height=1, width=1, rotate=0, radius=0, group=0),
        dict(mode="channel", base=5, channels=1, height=2, width=3, rotate=1, radius=0, group=0),
        # Fewer channels than the table has entries: each pixel must restart at entry 0.
        dict(mode="table", base=40, channels=5, height=3, width=4, rotate=0, radius=0, group=0),
    ]
    commands = [dict(c, order=order) for c in commands]
    res = simulate_shift_unit(cfg, writes=list(enumerate(memory.tolist())),
                              table=list(zip(range(7), dy.tolist(), dx.tolist())),
                              commands=commands, out_ready=lambda cycle: cycle % 3 != 1)
    for cmd, out in zip(commands, res["outputs"]):
        shape = (cmd["channels"], cmd["height"], cmd["width"])
        want = read_command(memory, cmd["mode"], cmd["base"], shape, rotate=cmd["rotate"],
                            radius=cmd["radius"], group=cmd["group"], table=(dy, dx))
        positions = element_order(shape, order)
        assert [tuple(o[2:5]) for o in out] == [tuple(p) for p in positions.tolist()], cmd
        got = np.zeros(shape, dtype=np.int64)
        got[tuple(positions.T)] = [o[1] for o in out]
        assert (got == want).all(), f"{cmd}: got {got.tolist()}, expected {want.tolist()}"
        assert [o[5] for o in out] == [0] * (len(out) - 1) + [1]
    assert res["status"] == {"table_error": 0, "cmd_error": 0, "write_error": 0}


def test_bench_small():
    cfg = ShiftUnitConfig(channels=5, height=3, width=3, max_shift=1)
    result = bench_shift_unit(cfg, file=None)
    assert all(c["pass"] for c in result["checks"]), result["checks"]
    assert {r["mode"] for r in result["runs"]} == set(MODES)
    assert all(r["cycles"] == cfg.read_latency + 45 - 1 + 1 for r in result["runs"])
