"""Tests of the Vectorizer and of the ShiftNet / AddressNet block (ShiftUnit -> Vectorizer ->
PEArray), in ``amaranth.sim``, against the golden models.

The block's reference is independent of the RTL's composition: the golden shifted map
(``read_command``), reshaped to one vector of ``C = rows`` channels per pixel, through the
golden array (``array_forward``): ``y = W^T * shift(x)`` per pixel, bit-exact.
"""

import numpy as np
import pytest
from amaranth.sim import Simulator

from mulfree.gen.block_emit import convert_shift_block_verilog
from mulfree.sim.shift_sim import simulate_shift_block
from mulfree.params.config import ArrayConfig, ConfigError
from mulfree.params.shift_config import ShiftUnitConfig, MODES
from mulfree.rtl.block import ShiftBlock
from mulfree.rtl.vectorize import Vectorizer
from mulfree.params.golden import array_forward, encode_shift
from mulfree.params.shift_golden import read_command


# Vectorizer ------------------------------------------------------------------------------

def run_vectorizer(cfg, elements, *, psum=0, o_ready=None, max_cycles=400):
    """Feed ``(value, last)`` elements one per cycle; return vectors and input stalls."""
    dut = Vectorizer(cfg, psum=psum)
    a, acc = cfg.act_bits, cfg.acc_width
    out = {"vectors": [], "stalls": 0}

    async def bench(ctx):
        queue = list(elements)
        n_last = sum(last for _, last in elements)
        for cycle in range(max_cycles):
            if queue:
                value, last = queue[0]
                ctx.set(dut.i.payload, {"data": value & ((1 << a) - 1), "last": last})
            ctx.set(dut.i.valid, bool(queue))
            ready = o_ready(cycle) if o_ready else True
            ctx.set(dut.o.ready, ready)
            if queue:
                if ctx.get(dut.i.ready):
                    queue.pop(0)
                else:
                    out["stalls"] += 1
            if ctx.get(dut.o.valid) and ready:
                p = ctx.get(dut.o.payload)
                lanes = [(p["data"] >> (r * a)) & ((1 << a) - 1) for r in range(cfg.rows)]
                lanes = [v - (1 << a) if v >> (a - 1) else v for v in lanes]
                psums = [(p["psum"] >> (c * acc)) & ((1 << acc) - 1) for c in range(cfg.cols)]
                psums = [v - (1 << acc) if v >> (acc - 1) else v for v in psums]
                out["vectors"].append((cycle, lanes, psums, p["last"]))
                if sum(v[3] for v in out["vectors"]) == n_last and not queue:
                    break
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return out


def test_vectorizer_packs_rows_elements_at_full_rate():
    cfg = ArrayConfig(pe="adder", rows=4, cols=3, act_bits=5, max_k=4)
    values = np.random.default_rng(0).integers(-16, 16, size=12).tolist()
    elements = [(v, int(i == 11)) for i, v in enumerate(values)]
    out = run_vectorizer(cfg, elements)
    assert [v[1] for v in out["vectors"]] == [values[0:4], values[4:8], values[8:12]]
    assert [v[3] for v in out["vectors"]] == [0, 0, 1]      # the map is one tile
    assert all(v[2] == [0, 0, 0] for v in out["vectors"])
    # One element per cycle in, never stalled: one vector per rows cycles out.
    assert out["stalls"] == 0
    cycles = [v[0] for v in out["vectors"]]
    assert [b - a for a, b in zip(cycles, cycles[1:])] == [4, 4]


def test_vectorizer_early_last_pads_with_zero_and_psum_constant():
    cfg = ArrayConfig(pe="shift", rows=3, cols=2, act_bits=4, max_k=3)
    lo = cfg.acc_range[0]
    elements = [(1, 0), (-2, 0), (3, 0), (-8, 0), (7, 1), (2, 1), (5, 0), (4, 0), (6, 0)]
    out = run_vectorizer(cfg, elements, psum=lo)
    # The vector after an early last starts again at lane 0; lanes after a last are 0, never
    # an element held from an earlier vector.
    assert [(v[1], v[3]) for v in out["vectors"]] == [([1, -2, 3], 0), ([-8, 7, 0], 1),
                                                      ([2, 0, 0], 1), ([5, 4, 6], 0)]
    assert all(v[2] == [lo, lo] for v in out["vectors"])


def test_vectorizer_backpressure_loses_nothing():
    cfg = ArrayConfig(pe="adder", rows=2, cols=1, act_bits=6, max_k=2)
    values = np.random.default_rng(1).integers(-32, 32, size=20).tolist()
    elements = [(v, int(i == 19)) for i, v in enumerate(values)]
    out = run_vectorizer(cfg, elements, o_ready=lambda c: c % 5 in (0, 3))
    assert [x for v in out["vectors"] for x in v[1]] == values
    assert [v[3] for v in out["vectors"]] == [0] * 9 + [1]
    assert out["stalls"] > 0


def expected_vectors(elements, rows):
    """The grouping of ``(value, last)`` elements into vectors, computed directly: a vector
    ends after ``rows`` elements or at a ``last``, its missing lanes 0."""
    vectors, lanes = [], []
    for value, last in elements:
        lanes.append(value)
        if len(lanes) == rows or last:
            vectors.append((lanes + [0] * (rows - len(lanes)), last))
            lanes = []
    return vectors


@pytest.mark.parametrize("rows", [2, 3, 4])
def test_vectorizer_input_gaps_and_backpressure(rows):
    # An input gap (valid low, the payload garbage with a random last) before every position of
    # a vector, in particular before its final element, while the output is stalled at random:
    # a vector is finished only by an element taken, and the input is refused only while the
    # output register is full and not being taken.
    cfg = ArrayConfig(pe="adder", rows=rows, cols=2, act_bits=5, max_k=rows)
    a = cfg.act_bits
    rng = np.random.default_rng(rows)
    n = 12 * rows
    values = rng.integers(-16, 16, size=n).tolist()
    lasts = (rng.random(n) < 0.1).astype(int).tolist()
    lasts[-1] = 1
    elements = list(zip(values, lasts))
    # Element k waits gaps[k] idle cycles: every position inside a vector gets gaps, the final
    # lane of every full vector always (1 to 3 cycles).
    gaps = [int(rng.integers(1, 4)) if k % rows == rows - 1 else int(rng.integers(0, 3))
            for k in range(n)]
    dut = Vectorizer(cfg)
    got, errors = [], []

    async def bench(ctx):
        k, wait, held = 0, gaps[0], None
        for cycle in range(40 * n):
            offer = k < n and wait == 0
            value, last = elements[k] if offer else (int(rng.integers(-16, 16)),
                                                     int(rng.integers(0, 2)))
            ctx.set(dut.i.payload, {"data": value & ((1 << a) - 1), "last": last})
            ctx.set(dut.i.valid, offer)
            ready = bool(rng.random() < 0.5)
            ctx.set(dut.o.ready, ready)
            o_valid, i_ready = ctx.get(dut.o.valid), ctx.get(dut.i.ready)
            if i_ready != (not o_valid or ready):
                errors.append(f"cycle {cycle}: i.ready={i_ready} with o.valid={o_valid}, "
                              f"o.ready={ready}")
            payload = ctx.get(dut.o.payload)
            if held is not None and o_valid and payload != held:
                errors.append(f"cycle {cycle}: output changed while stalled")
            held = payload if o_valid and not ready else None
            if o_valid and ready:
                lanes = [(payload["data"] >> (r * a)) & ((1 << a) - 1) for r in range(rows)]
                got.append(([v - (1 << a) if v >> (a - 1) else v for v in lanes],
                            payload["last"]))
            if offer and i_ready:
                k += 1
                wait = gaps[k] if k < n else 0
            elif not offer and k < n:
                wait -= 1
            if k == n and len(got) >= len(expected_vectors(elements, rows)) and not o_valid:
                break
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert not errors, errors[:3]
    want = expected_vectors(elements, rows)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"vector {i}: got {g}, expected {w}"
    assert len(got) == len(want), f"{len(got)} vectors, expected {len(want)}"


def test_vectorizer_errors():
    cfg = ArrayConfig(pe="adder", rows=2, cols=1, act_bits=6, max_k=2)
    lo, hi = cfg.acc_range
    with pytest.raises(ConfigError, match=r"psum must be an integer in the accumulator's "
                                          rf"range \[{lo}, {hi}\], not {hi + 1}") as e:
        Vectorizer(cfg, psum=hi + 1)
    assert e.value.param == "psum"
    shift_out = ShiftUnitConfig(channels=2, height=2, width=2, act_bits=8)
    from mulfree.rtl.shift_layouts import output_layout, write_layout
    with pytest.raises(ConfigError, match=r"act_bits of the elements \(8\) must equal the "
                                          r"array's act_bits = 6") as e:
        Vectorizer(cfg, output_layout(shift_out))
    assert e.value.param == "act_bits"
    with pytest.raises(ConfigError, match="must have data and last fields"):
        Vectorizer(cfg, write_layout(shift_out))


# The block ---------------------------------------------------------------------------------

def test_block_errors():
    array = ArrayConfig(pe="shift", rows=4, cols=3, act_bits=6, max_k=4)
    with pytest.raises(ConfigError, match=r"act_bits of the shift unit \(8\) must equal the "
                                          r"array's act_bits = 6") as e:
        ShiftBlock(ShiftUnitConfig(channels=4, height=3, width=3), array)
    assert e.value.param == "act_bits"
    with pytest.raises(ConfigError, match=r"channels must be at least the array's rows = 4 "
                                          r"\(one pixel's channels are one input vector\), "
                                          r"not 3") as e:
        ShiftBlock(ShiftUnitConfig(channels=3, height=3, width=3, act_bits=6), array)
    assert e.value.param == "channels"


def random_tile(cfg, rng):
    if cfg.pe == "shift":
        return encode_shift(rng.integers(-1, 2, (cfg.rows, cfg.cols)),
                            rng.integers(0, cfg.max_shift + 1, (cfg.rows, cfg.cols)),
                            cfg.weight_bits)
    lo, hi = cfg.weight_range
    return rng.integers(lo, hi + 1, (cfg.rows, cfg.cols))


@pytest.mark.parametrize("pe", ["shift", "adder"])
def test_block_matches_golden_in_every_mode(pe):
    # C = rows = 4, cols = 3, H = W = 3; a buffer holding several maps.
    shift_cfg = ShiftUnitConfig(channels=4, height=3, width=3, act_bits=6, depth=60, kernel=3,
                                max_shift=1)
    array_cfg = ArrayConfig(pe=pe, rows=4, cols=3, act_bits=6, max_k=4)
    rng = np.random.default_rng(7)
    memory = rng.integers(-32, 32, size=shift_cfg.depth)
    dy, dx = rng.integers(-1, 2, 4), rng.integers(-1, 2, 4)
    commands = [dict(mode=mode, base=base, height=h, width=w, rotate=r, radius=1, group=g)
                for mode, base, h, w, r, g in [
                    ("plain", 0, 3, 3, 0, 0), ("shift", 5, 3, 3, 0, 0), ("shift", 5, 3, 3, 0, 1),
                    ("address", 9, 3, 3, 0, 1), ("channel", 12, 3, 3, 1, 0),
                    ("channel", 12, 3, 3, 3, 0), ("table", 20, 3, 3, 0, 0),
                    ("shift", 2, 2, 1, 0, 1)]]
    assert {c["mode"] for c in commands} == set(MODES)
    tiles = [random_tile(array_cfg, rng) for _ in commands]
    res = simulate_shift_block(shift_cfg, array_cfg, writes=list(enumerate(memory.tolist())),
                               table=list(zip(range(4), dy.tolist(), dx.tolist())),
                               commands=commands, tiles=tiles, y_ready=lambda c: c % 4 != 2)
    for cmd, tile, out in zip(commands, tiles, res["outputs"]):
        H, W = cmd["height"], cmd["width"]
        shifted = read_command(memory, cmd["mode"], cmd["base"], (4, H, W), rotate=cmd["rotate"],
                               radius=cmd["radius"], group=cmd["group"], table=(dy, dx))
        want = array_forward(array_cfg, tile, shifted.reshape(4, H * W).T)
        got = np.array([o[1] for o in out])
        assert got.shape == want.shape and (got == want).all(), \
            f"{cmd}: got {got.tolist()}, expected {want.tolist()}"
        assert [o[2] for o in out] == [0] * (H * W - 1) + [1], f"{cmd}: last flags"
    assert res["status"] == {"table_error": 0, "cmd_error": 0, "write_error": 0}


def test_block_converts_to_verilog():
    shift_cfg = ShiftUnitConfig(channels=4, height=3, width=3, act_bits=6)
    array_cfg = ArrayConfig(pe="adder", rows=4, cols=3, act_bits=6, max_k=4)
    text = convert_shift_block_verilog(shift_cfg, array_cfg, name="block_top")
    assert "module block_top" in text and "cmd__payload" in text and "y__payload" in text
