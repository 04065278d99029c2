"""Layer chaining (interface 2.2) in the cycle model, and on the simulated board.

Without a simulator: a resident input or shortcut takes no beats in the stream layout, a
quiet run no serializer. On the board (a 4x4 shift core with two feature-map banks, a 64-bit
stream, Verilator): a chain of layers passing its tensors through the banks, run by
``Device.execute`` with the runtime's byte packer, equals the golden output of every layer
that sends its results, the last one included; ``BUSY_CYCLES`` against
:func:`~mulfree.host.cycle_model.run_cycles`; a resident run after a core error stops with
error 11 RESIDENT, named by the device (whose bank model the reset cleared).

The board tests need Verilator: without it they fail (``SimulatorMissing``), never skip.
"""

import json
from dataclasses import replace

import numpy as np
import pytest

from cores import SMALL_BUFFERS, generated
from test_bank_state import chain

from mulfree.gen.core_manifest import core_manifest
from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.host import layer_stream as ls
from mulfree.host import stream_pack
from mulfree.host.cycle_model import run_cycles, stream_layout
from mulfree.host.runtime import CoreRunError, Device
from mulfree.host.stream_format import first_block_acts, stream_order
from mulfree.sim.backend import SimBackend
from mulfree.sim.board import SimCore, build_sim_core


CHAIN_CORE = CoreConfig(ArrayConfig(pe="shift", rows=4, cols=4, act_bits=8, weight_bits=5,
                                    max_k=256), shortcut_vectors=256, pool_pixels=64,
                        **SMALL_BUFFERS)


def estimate(cfg, layer):
    g = ls.layer_geometry(cfg, layer)
    return run_cycles(cfg, g, reuse=layer.reuse_weights, shift=layer.shifts is not None,
                      first_acts=first_block_acts(layer, g))


def test_resident_tensors_take_no_beats():
    layers = chain(np.random.default_rng(0), CHAIN_CORE)
    l2 = layers[1]                                   # acts_resident, short_resident, keep
    g = ls.layer_geometry(CHAIN_CORE, l2)
    layout, total = stream_layout(CHAIN_CORE, g, False, first_block_acts(l2, g))
    assert set(layout) == {"PARAMS", "WEIGHTS"}
    streamed = replace(l2, acts_resident=False, short_resident=False)
    gs = ls.layer_geometry(CHAIN_CORE, streamed)
    _, more = stream_layout(CHAIN_CORE, gs, False, first_block_acts(streamed, gs))
    per = CHAIN_CORE.beats(CHAIN_CORE.vector_bits["ACTS"])
    segments = sum(k in ("ACTS", "SHORTCUT") for k, _, _ in stream_order(
        gs, reuse=False, first_acts=first_block_acts(streamed, gs)))
    assert more - total == (gs["counts"]["ACTS"] + gs["counts"]["SHORTCUT"]) * per + segments
    assert estimate(CHAIN_CORE, l2) <= estimate(CHAIN_CORE, streamed)


def test_quiet_has_no_serializer():
    """A run whose results take 2 beats per vector (a 32-bit stream): quiet, it ends sooner
    than sending them by at least the beats the last block's results take beyond one per
    cycle."""
    cfg = CoreConfig(ArrayConfig(pe="shift", rows=8, cols=8, act_bits=8, weight_bits=5,
                                 max_k=256), stream_width=32, shortcut_vectors=256,
                     pool_pixels=64)
    layer = chain(np.random.default_rng(1), cfg)[0]
    sent = replace(layer, quiet=False)
    g = ls.layer_geometry(cfg, layer)
    assert cfg.beats(cfg.vector_bits["OUT"]) == 2
    assert estimate(cfg, layer) + g["results"] // 2 <= estimate(cfg, sent)


# On the board -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def device(board_cache):
    cfg = CHAIN_CORE
    assert cfg.fmap_banks == 2
    _, j_path = generated(cfg)
    lib = build_sim_core(j_path, build_dir=board_cache)
    core = SimCore(lib, core_manifest(cfg))
    core.reset()
    manifest = json.loads(j_path.read_text())
    with Device(SimBackend(core, manifest), manifest, timeout=20.0) as dev:
        yield cfg, dev


def run(cfg, dev, layer):
    """Execute ``layer``; its result beats and the ``BUSY_CYCLES`` it took."""
    bb = cfg.stream_width // 8
    g = ls.layer_geometry(cfg, layer)
    packets = stream_pack.layer_packets(cfg, layer, dev.max_packet_bytes)
    nbytes = 0 if layer.quiet else g["results"] * cfg.beats(cfg.vector_bits["OUT"]) * bb
    before = dev.counters()["BUSY_CYCLES"]
    data = np.asarray(dev.execute(packets, nbytes), np.uint8)
    busy = dev.counters()["BUSY_CYCLES"] - before
    return [int.from_bytes(data[k:k + bb].tobytes(), "little")
            for k in range(0, len(data), bb)], busy


def test_a_chain_on_the_board(device):
    """Four chains of six layers (conv, residual in place, stride 2, option-A residual in
    place, pool, linear; the last chain's pool quiet): every sent result equals the golden
    beats; ``BUSY_CYCLES`` exactly the model's."""
    cfg, dev = device
    report = []
    for seed in range(4):
        layers = chain(np.random.default_rng(seed), cfg)
        if seed == 3:                   # the pool kept and not sent: read by the linear
            layers[4] = replace(layers[4], quiet=True)
        for i, layer in enumerate(layers):
            beats, busy = run(cfg, dev, layer)
            assert beats == ls.expected_beats(cfg, layer), (seed, i)
            report.append((seed, i, busy, estimate(cfg, layer)))
    bad = [r for r in report if r[2] != r[3]]
    assert not bad, f"(chain, layer, BUSY_CYCLES, estimate) not exact: {bad} of {report}"


def test_resident_after_an_error_is_refused_on_the_board(device):
    """A chain's first layer keeps its output; a run stopped by an error (OVERRUN) clears the
    banks: the next resident layer stops with error 11, named RESIDENT by the device; the
    device's bank model was cleared by its reset too; the chain then runs again."""
    cfg, dev = device
    l1, l2, *_ = chain(np.random.default_rng(7), cfg)
    run(cfg, dev, l1)
    packets = stream_pack.layer_packets(cfg, replace(l1, keep=False, quiet=False))
    acts = [p for p in packets if int(p[0, 0]) & 0xF == ls.PACKET_TYPES["ACTS"]]
    with pytest.raises(CoreRunError) as info:
        dev.execute(packets + acts[-1:], 0)
    assert info.value.name == "OVERRUN"
    assert dev.banks.shapes == [None, None]
    with pytest.raises(CoreRunError) as info:
        run(cfg, dev, l2)
    message = str(info.value)
    assert info.value.code == 11 and info.value.name == "RESIDENT", message
    assert "chaining flag the core cannot honour" in message and "\n" not in message
    with pytest.raises(ls.LayerError, match="holds nothing valid"):
        dev.banks.check(cfg, l2)
    run(cfg, dev, l1)
    beats, _ = run(cfg, dev, l2)
    assert beats == ls.expected_beats(cfg, l2)


def test_fmap_banks_is_an_identity_register(device):
    cfg, dev = device
    assert dev.identity()["FMAP_BANKS"] == 2
    assert dev.field("VERSION", "minor", dev.read("VERSION")) >= 2          # 2.2 or later


def test_a_resident_shortcut_that_binds_on_the_board(device):
    """1x1 stride-2 runs whose resident shortcut source (12x12, stride 2) is four times their
    output: the bank's reader, one source vector per cycle with the aligner's holds (offset 2
    of 4 lanes), bounds the run; the model is exact, and a reader one cycle later is not."""
    from test_bank_state import conv
    from mulfree.params.layer_golden import ResidualParams
    import mulfree.host.cycle_model as cm
    cfg, dev = device
    rng = np.random.default_rng(11)
    e = cfg.engine
    x0 = rng.integers(*e.act_range, (4, 12, 12))
    l1 = conv(rng, x0, 4, engine=e, keep=True, quiet=True)
    y1 = ls.expected_output(cfg, l1)
    report = []
    for offset, out_c in ((0, 4), (2, 8), (0, 8)):
        run(cfg, dev, l1)
        res = ResidualParams(1, 0, 1, True, stride=2, offset=offset)
        l2 = conv(rng, x0, out_c, kernel=1, engine=e, stride=2, acts_resident=True,
                  short_resident=True, shortcut=y1, residual=res)
        beats, busy = run(cfg, dev, l2)
        assert beats == ls.expected_beats(cfg, l2), offset
        report.append((offset, out_c, busy, estimate(cfg, l2)))
        start = cm.RESIDENT_SHORTCUT_START
        try:
            cm.RESIDENT_SHORTCUT_START = start + 1
            assert estimate(cfg, l2) != busy
        finally:
            cm.RESIDENT_SHORTCUT_START = start
    assert all(r[2] == r[3] for r in report), report


def test_quiet_pools_on_the_board(device):
    """A kept global pool of 1 to 4 output tiles, sent or quiet: the pooled vectors are
    written one per cycle; ``BUSY_CYCLES`` exactly the model's (a quiet pool 2 cycles sooner
    than a sent one of one beat per vector)."""
    cfg, dev = device
    rng = np.random.default_rng(12)
    e = cfg.engine
    x0 = rng.integers(*e.act_range, (4, 6, 6))
    from test_bank_state import conv
    report = []
    for out_c in (4, 8, 12, 16):
        busy = {}
        for quiet in (False, True):
            layer = conv(rng, x0, out_c, kernel=1, engine=e, keep=True, quiet=quiet, pool=3)
            beats, busy[quiet] = run(cfg, dev, layer)
            assert beats == ls.expected_beats(cfg, layer)
            report.append((out_c, quiet, busy[quiet], estimate(cfg, layer)))
        assert busy[True] == busy[False] - 2
    assert all(r[2] == r[3] for r in report), report
