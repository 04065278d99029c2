"""The simulated board (:mod:`mulfree.sim.board`): a core's Verilog under Verilator, driven
through ctypes.

Two small cores are built once per session (a 4x4 shift core with a 64-bit stream and a 3x5
adder core with a 128-bit stream, which the harness holds as a ``VlWide``), into a folder of
pytest's temporary tree shared by the xdist workers, so CI really builds them. A missing
Verilator fails these tests (``SimulatorMissing``); it never skips them.
"""

import os
import shutil
import time

import numpy as np
import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CORE_MAGIC, CoreConfig
from mulfree.gen.core_manifest import core_manifest, write_core_design
from mulfree.host.layer_stream import Layer, expected_beats, pack_layer, stream_beats
from mulfree.sim import board_build
from mulfree.sim.board import (MARKER, BuildError, SimCore, beats_to_bytes, build_sim_core,
                               bytes_to_beats)
from mulfree.params.layer_golden import PostParams
from mulfree.sim.runner import SimulatorMissing


_SMALL = dict(fmap_vectors=512, weight_rows=512, acc_entries=64, max_channels=64,
              out_vectors=8)
DESIGNS = {
    "shift_4x4_s64": CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=4, act_bits=8,
                                                   weight_bits=5, max_k=256), **_SMALL),
    "adder_3x5_s128": CoreConfig(engine=ArrayConfig(pe="adder", rows=3, cols=5, act_bits=8,
                                                    max_k=256), stream_width=128, **_SMALL),
}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """A build cache shared by the xdist workers of this session (builds lock per key)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    path = base / "board-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def built(tmp_path_factory, cache_dir):
    """``{design: (cfg, manifest path, library)}``, built on first use."""
    done = {}

    def get(name):
        if name not in done:
            cfg = DESIGNS[name]
            _, j_path = write_core_design(cfg, tmp_path_factory.mktemp(f"board-{name}"))
            done[name] = (cfg, j_path, build_sim_core(j_path, build_dir=cache_dir))
        return done[name]
    return get


def _core(built, name):
    cfg, j_path, lib = built(name)
    return cfg, SimCore(lib, core_manifest(cfg))


def _random_layer(cfg, rng, *, kind, **over):
    """A random layer: ``matmul`` (m, k, n) or ``conv`` (in_c, h, w, out_c, k, stride, pad)."""
    e = cfg.engine
    lo, hi = e.act_range
    if kind == "matmul":
        in_c, h, w, out_c, k = over["k"], 1, over["m"], over["n"], 1
    else:
        in_c, h, w, out_c, k = (over.get(n, d) for n, d in
                                (("in_c", 3), ("h", 5), ("w", 6), ("out_c", 4), ("k", 3)))
    x = rng.integers(lo, hi + 1, (in_c, h, w))
    if e.pe == "shift":
        w_codes = rng.integers(0, 1 << e.weight_bits, (out_c, in_c, k, k))
    else:
        w_codes = rng.integers(-(1 << (e.act_bits - 1)), 1 << (e.act_bits - 1),
                               (out_c, in_c, k, k))
    post = PostParams(bias=rng.integers(-200, 200, out_c), shift=rng.integers(0, 7, out_c),
                      relu=rng.integers(0, 2, out_c).astype(bool))
    pad = over.get("pad", 0)
    return Layer(x=x, w_codes=w_codes, post=post, stride=over.get("stride", 1),
                 padding=(pad, pad), m_block=over.get("m_block"))


def _layers(cfg, rng):
    r, c = cfg.engine.rows, cfg.engine.cols
    return [
        ("matmul odd", _random_layer(cfg, rng, kind="matmul", m=2 * r + 3, k=2 * r + 1,
                                     n=c + 2)),
        ("matmul 1x1x1", _random_layer(cfg, rng, kind="matmul", m=1, k=1, n=1)),
        ("conv 3x3 s2 p1", _random_layer(cfg, rng, kind="conv", in_c=r + 1, h=7, w=9,
                                         out_c=c + 1, stride=2, pad=1)),
        ("conv 3x3 p1, short blocks", _random_layer(cfg, rng, kind="conv", in_c=2, h=6, w=5,
                                                    out_c=3, pad=1, m_block=4)),
    ]


def _input(cfg, layer, beat_bytes):
    beats = stream_beats(pack_layer(cfg, layer))
    return (beats_to_bytes([b for b, _ in beats], beat_bytes),
            np.array([last for _, last in beats], dtype=bool))


def _counter(core, name):
    lo = core.read_reg(f"{name}_LO")
    return core.read_reg(f"{name}_HI") << 32 | lo


def _start(core):
    irq_enable, start = 1 << 2, 1 << 0
    assert core.write_reg("CONTROL", irq_enable | start) == 0, "start refused"


def _finish(core, what):
    """After a run: no core error; acknowledge done and see irq fall."""
    assert core.read_reg("ERROR") & 0xFF == 0, f"{what}: core error"
    assert core.irq
    assert core.write_reg("STATUS", 1 << 2) == 0
    assert not core.irq, f"{what}: irq still high after acknowledging done"


def _run_layer(cfg, core, layer, what, max_cycles=200_000):
    """Start, push, arm the sink for the whole result, run until irq and sink_done."""
    want = expected_beats(cfg, layer)
    _start(core)
    core.push(*_input(cfg, layer, core.beat_bytes))
    core.arm_sink(len(want))
    n, reason = core.run(max_cycles, until=("irq", "sink_done"))
    assert reason == "irq+sink_done", f"{what}: stopped by {reason} after {n} cycles"
    assert core.in_pending() == 0
    data, last = core.pop()
    got = bytes_to_beats(data)
    assert len(got) == len(want), f"{what}: {len(got)} result beats, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"{what}: result beat {i} of {len(want)}: got {g:#x}, expected {w:#x}"
    assert last[-1] and not last[:-1].any(), f"{what}: tlast on beats {np.flatnonzero(last)}"
    _finish(core, what)
    return n


# Registers ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(DESIGNS))
def test_identity_registers(built, name):
    cfg, core = _core(built, name)
    with core:
        assert core.stream_width == cfg.stream_width
        assert core.beat_bytes == cfg.stream_width // 8
        assert core.axil_read(0x000) == (CORE_MAGIC, 0)
        checked = 0
        for reg in core.manifest["registers"]["registers"]:
            fields = [f for f in reg["fields"] if "value" in f]
            if reg["offset"] >= 0x40 or reg["name"] in ("ID", "VERSION"):
                if reg["offset"] >= 0x80:
                    continue                    # counters
                want = sum(f["value"] << f["bits"][1] for f in fields)
                assert core.axil_read(reg["offset"]) == (want, 0), reg["name"]
                checked += 1
        assert checked >= 11
        assert core.read_reg("STREAM_WIDTH") == cfg.stream_width
        assert core.read_reg("ARRAY") == cfg.engine.cols << 16 | cfg.engine.rows


def test_scratch_and_errors(built):
    cfg, core = _core(built, "shift_4x4_s64")
    with core:
        assert core.axil_write(core.register_offset("SCRATCH"), 0xDEADBEEF) == 0
        assert core.axil_read(core.register_offset("SCRATCH")) == (0xDEADBEEF, 0)
        unmapped = 0x020
        assert unmapped not in {r["offset"] for r in core.manifest["registers"]["registers"]}
        assert core.axil_read(unmapped) == (0, 2)
        assert core.axil_write(unmapped, 1) == 2
        codes = {n: e["code"] for n, e in core.manifest["registers"]["reg_errors"].items()}
        assert core.read_reg("ERROR") >> 8 & 0xFF == codes["UNMAPPED"]
        assert core.read_reg("ERROR_ADDR") == unmapped
        assert core.read_reg("STATUS") >> 4 & 1 == 1        # reg_error
        assert core.write_reg("STATUS", 1 << 4) == 0        # clear it
        assert core.axil_write(core.register_offset("SCRATCH"), 5, strb=0b0011) == 2
        assert core.read_reg("ERROR") >> 8 & 0xFF == codes["STROBE"]
        assert core.read_reg("SCRATCH") == 0xDEADBEEF
        with pytest.raises(ValueError, match="addr"):
            core.axil_read(1 << 12)
        with pytest.raises(ValueError, match="data"):
            core.axil_write(0x18, -1)


# Layers ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(DESIGNS))
def test_layers(built, name):
    """Whole layers, every result beat equal to expected_beats, back to back on one core."""
    cfg, core = _core(built, name)
    rng = np.random.default_rng(7)
    with core:
        for what, layer in _layers(cfg, rng):
            cycles = _run_layer(cfg, core, layer, what)
            assert cycles > 0
        busy = _counter(core, "BUSY_CYCLES")
        assert 0 < busy < core.cycles


def test_backpressure(built):
    """A sink armed for fewer beats than the result: the core stalls, then completes."""
    cfg, core = _core(built, "shift_4x4_s64")
    rng = np.random.default_rng(3)
    layer = _random_layer(cfg, rng, kind="conv", in_c=5, h=6, w=7, out_c=9, pad=1)
    want = expected_beats(cfg, layer)
    with core:
        _start(core)
        core.push(*_input(cfg, layer, core.beat_bytes))
        core.arm_sink(3)
        n, reason = core.run(100_000, until="sink_done")
        assert reason == "sink_done" and not core.sink_armed()
        n, reason = core.run(2_000, until="irq")
        assert reason == "max_cycles" and not core.irq, "finished without its results taken"
        assert _counter(core, "STALL_OUT_CYCLES") > 0
        first, _ = core.pop()
        assert len(first) == 3
        # The rest, one beat at a time: tready toggles, the results stay exact.
        rest, last = [], []
        for _ in range(len(want) - 3):
            core.arm_sink(1)
            assert core.sink_armed()
            core.run(10_000, until="sink_done")
            data, flags = core.pop()
            rest.append(data)
            last.append(flags)
        core.run(1_000, until="irq")
        got = bytes_to_beats(np.concatenate([first, *rest]))
        assert got == want
        assert np.concatenate(last)[-1]
        _finish(core, "backpressure")
        # tlast ends the sink's arming even with beats left: a DMA buffer larger than the
        # packet.
        _start(core)
        core.push(*_input(cfg, layer, core.beat_bytes))
        core.arm_sink(len(want) + 10)
        _, reason = core.run(100_000, until="sink_done")
        assert reason == "sink_done" and not core.sink_armed()
        data, last = core.pop()
        assert bytes_to_beats(data) == want and last[-1]
        core.run(1_000, until="irq")
        _finish(core, "large sink")


def test_run_conditions(built):
    cfg, core = _core(built, "shift_4x4_s64")
    rng = np.random.default_rng(4)
    layer = _random_layer(cfg, rng, kind="matmul", m=9, k=6, n=5)
    with core:
        assert core.run(100) == (100, "max_cycles")
        assert core.run(100, until="input_empty") == (0, "input_empty")
        data, last = _input(cfg, layer, core.beat_bytes)
        # Idle, the core does not take beats: they stay queued.
        core.push(data, last)
        assert core.run(50, until="input_empty") == (50, "max_cycles")
        assert core.in_pending() == len(data)
        core.clear_input()
        assert core.in_pending() == 0
        _start(core)
        core.push(data[:4], last[:4])
        core.push(data[4:], last[4:])
        n, reason = core.run(10_000, until="input_empty")
        assert reason == "input_empty" and n > 0 and core.in_pending() == 0
        assert not core.sink_armed()
        core.arm_sink(1000)
        _, reason = core.run(10_000, until=["sink_done", "irq"])
        assert reason == "sink_done+irq"
        assert bytes_to_beats(core.pop()[0]) == expected_beats(cfg, layer)
        core.disarm_sink()
        assert not core.sink_armed()
        with pytest.raises(ValueError, match="until"):
            core.run(10, until="done")
        with pytest.raises(ValueError, match="data"):
            core.push(np.zeros((2, 4), np.uint8), np.zeros(2, bool))
        with pytest.raises(ValueError, match="last"):
            core.push(np.zeros((2, 8), np.uint8), np.zeros(3, bool))


def test_reset_mid_layer(built):
    """reset() empties the queues in the middle of a layer; the next layer is exact."""
    cfg, core = _core(built, "shift_4x4_s64")
    rng = np.random.default_rng(5)
    layer = _random_layer(cfg, rng, kind="conv", in_c=5, h=6, w=6, out_c=6, pad=1)
    with core:
        _start(core)
        core.push(*_input(cfg, layer, core.beat_bytes))
        core.arm_sink(2)
        core.run(60)
        assert core.in_pending() > 0 and core.read_reg("STATUS") >> 1 & 1   # busy
        before = core.cycles
        core.reset(cycles=6)
        assert core.cycles == before + 6
        assert core.in_pending() == 0 and not core.sink_armed()
        assert core.pop()[0].shape == (0, core.beat_bytes)
        assert core.read_reg("STATUS") & 0b11 == 0b01       # idle, not busy
        _run_layer(cfg, core, layer, "after reset")


def test_two_instances(built):
    """Two cores of one library and one of another, interleaved in one process."""
    cfg, a = _core(built, "shift_4x4_s64")
    _, b = _core(built, "shift_4x4_s64")
    cfg_c, c = _core(built, "adder_3x5_s128")
    rng = np.random.default_rng(6)
    with a, b, c:
        a.write_reg("SCRATCH", 111)
        b.write_reg("SCRATCH", 222)
        c.write_reg("SCRATCH", 333)
        la = _random_layer(cfg, rng, kind="conv", in_c=5, h=6, w=6, out_c=6, pad=1)
        lb = _random_layer(cfg, rng, kind="matmul", m=11, k=9, n=7)
        lc = _random_layer(cfg_c, rng, kind="conv", in_c=4, h=5, w=5, out_c=6, pad=1)
        for core, conf, layer in ((a, cfg, la), (b, cfg, lb), (c, cfg_c, lc)):
            _start(core)
            core.push(*_input(conf, layer, core.beat_bytes))
            core.arm_sink(len(expected_beats(conf, layer)))
        cycles_b = b.cycles
        # Step the three alternately, a few hundred cycles each.
        for _ in range(200):
            for core in (a, b, c):
                core.run(37, until=("irq", "sink_done"))
        assert b.cycles > cycles_b
        for core, conf, layer in ((a, cfg, la), (b, cfg, lb), (c, cfg_c, lc)):
            _, reason = core.run(100_000, until=("irq", "sink_done"))
            assert reason == "irq+sink_done"
            assert bytes_to_beats(core.pop()[0]) == expected_beats(conf, layer)
        before = a.cycles
        b.run(1000)
        assert a.cycles == before
        assert (a.read_reg("SCRATCH"), b.read_reg("SCRATCH"), c.read_reg("SCRATCH")) == \
            (111, 222, 333)
    with pytest.raises(ValueError, match="closed"):
        a.run(1)


def test_library_must_match_manifest(built):
    cfg, _, lib = built("shift_4x4_s64")
    other = core_manifest(DESIGNS["adder_3x5_s128"])
    with pytest.raises(ValueError, match="lib_path"):
        SimCore(lib, other)


# Beats ----------------------------------------------------------------------------------------

def test_beat_bytes_roundtrip():
    beats = [0, 1, 0x0102030405060708, (1 << 64) - 1]
    data = beats_to_bytes(beats, 8)
    assert data.shape == (4, 8) and data.dtype == np.uint8
    assert list(data[2]) == [8, 7, 6, 5, 4, 3, 2, 1]     # byte i = tdata[8i+7:8i]
    assert bytes_to_beats(data) == beats
    wide = [(1 << 127) | 5, 3 << 64]
    assert bytes_to_beats(beats_to_bytes(wide, 16)) == wide
    with pytest.raises(ValueError, match="beats"):
        beats_to_bytes([1 << 64], 8)


# Building -------------------------------------------------------------------------------------

def test_build_cache(built, cache_dir, tmp_path, monkeypatch):
    """A finished build is returned at once; a folder without the marker is rebuilt."""
    cfg, j_path, lib = built("shift_4x4_s64")
    t0 = time.perf_counter()
    assert build_sim_core(j_path.parent, build_dir=cache_dir) == lib
    assert time.perf_counter() - t0 < 2.0
    assert (lib.parent / MARKER).is_file()
    # A copy of the finished build in a fresh cache is taken as finished ...
    copy = tmp_path / "cache" / lib.parent.name
    shutil.copytree(lib.parent, copy)

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt")
    monkeypatch.setattr(board_build, "_build", no_build)
    assert build_sim_core(j_path, build_dir=tmp_path / "cache") == copy / lib.name
    # ... but not without its marker (a build killed before it finished).
    (copy / MARKER).unlink()
    with pytest.raises(AssertionError, match="rebuilt"):
        build_sim_core(j_path, build_dir=tmp_path / "cache")


def test_verilator_missing(built, monkeypatch):
    _, j_path, _ = built("shift_4x4_s64")
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(SimulatorMissing, match="Verilator"):
        build_sim_core(j_path, build_dir=j_path.parent / "never")


def test_build_error(tmp_path):
    manifest = core_manifest(DESIGNS["shift_4x4_s64"])
    manifest["top"] = "broken"
    manifest["files"] = {"verilog": "broken.v"}
    (tmp_path / "broken.v").write_text("module broken(input clk);\n  wire x = ;\nendmodule\n")
    (tmp_path / "broken.json").write_text(__import__("json").dumps(manifest))
    with pytest.raises(BuildError, match="%Error") as info:
        build_sim_core(tmp_path, build_dir=tmp_path / "cache")
    assert info.value.log_path.is_file()
    assert str(info.value.log_path) in str(info.value)
    # The log quotes the Verilog: it is the user's alone, and so is the build folder.
    assert info.value.log_path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "cache").stat().st_mode & 0o077 == 0
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "cache").iterdir())


def test_design_argument(tmp_path):
    with pytest.raises(ValueError, match="no core manifest"):
        build_sim_core(tmp_path, build_dir=tmp_path / "cache")
    with pytest.raises(ValueError, match="design_dir_or_manifest_path .*nothing.json.*: no "
                                         "such core manifest"):
        build_sim_core(tmp_path / "nothing.json")
    assert not (tmp_path / "cache").exists()


# The benchmark --------------------------------------------------------------------------------

def test_bench_board(built, cache_dir, tmp_path):
    """``mulfree bench board`` on the small core: every run bit-exact, the report complete."""
    from mulfree.flows.board_bench import bench_board, format_board
    built("shift_4x4_s64")                  # the library is in the cache
    workloads = {"conv": {"kind": "conv", "in_c": 5, "h": 6, "w": 6, "out_c": 6, "kernel": 3,
                          "padding": 1},
                 "matmul": {"kind": "matmul", "m": 20, "k": 9, "n": 7},
                 "shift": {"kind": "conv", "in_c": 6, "h": 5, "w": 4, "out_c": 5, "kernel": 1,
                           "shift": True}}
    result = bench_board(core=DESIGNS["shift_4x4_s64"], workloads=workloads,
                         target_cycles=20_000, clock_cycles=1_000, build_dir=cache_dir,
                         work_dir=tmp_path, progress=lambda message: None)
    assert result["build"]["cached"]
    assert result["checks"][0]["pass"], result["checks"][0]
    assert result["cycles"]["total"] >= 20_000
    assert all(w["runs"] >= 1 and not w["mismatched_runs"] and not w["errors"]
               for w in result["layers"].values())
    assert set(result["speed"]) == {"run", "run_cpu", "loop", "with_packing", "clock_only"}
    text = format_board(result)
    assert "cycles/s" in text and "shift" in text
