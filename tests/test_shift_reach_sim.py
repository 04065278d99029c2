"""Shift tables beyond one pixel (``CoreConfig.shift_reach``, interface 2.4) in the generated
RTL: under cocotb and on the simulated board.

cocotb (Verilator and Icarus): a 4x3 shift core of reach 3 runs every scenario of
:mod:`mulfree.sim.tb_core` — random shifted convolutions with offsets in ``[-3, 3]`` (1x1, 3x3
with padding, a strided 3x3 on a map wider than the reach in blocks of 5 pixels) bit-exact
against the golden model, with idle and backpressure inserters, and ``SHIFT_VALUE`` for an
entry of ``-4``. The simulated board (a 4x4 shift core of reach 2, Verilator): shifted
convolutions of several shapes equal :func:`~mulfree.host.stream_results.expected_output`
(``table_shift`` then ``conv2d_layer``), ``BUSY_CYCLES`` equals
:func:`~mulfree.host.cycle_model.run_cycles` exactly (the activation watermark reaches
``reach*row + reach*CT`` further), and ``SHIFT_TABLE`` reads the reach. A missing simulator
fails these tests (``SimulatorMissing``), never skips them.
"""

import json
from dataclasses import replace

import numpy as np
import pytest

from cores import SMALL_BUFFERS, generated

from mulfree.gen.core_manifest import core_manifest
from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.params.layer_golden import PostParams
from mulfree.host import layer_stream as ls
from mulfree.host import stream_pack
from mulfree.host.cycle_model import run_cycles
from mulfree.host.runtime import Device
from mulfree.host.stream_format import first_block_acts
from mulfree.sim.backend import SimBackend
from mulfree.sim.board import SimCore, build_sim_core
from mulfree.sim.runner import build_verilog, run_cocotb


#: The cocotb core: tb_core's scenarios with shift tables of reach 3 (6-bit entries).
REACH3 = CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=3, max_k=256),
                    fmap_vectors=512, weight_rows=512, acc_entries=64, max_channels=32,
                    out_vectors=8, shortcut_vectors=96, pool_pixels=30, shift_reach=3)
#: The board's core: reach 2 (6-bit entries, offsets of two rows and two pixels).
REACH2 = CoreConfig(ArrayConfig(pe="shift", rows=4, cols=4, act_bits=6, weight_bits=5,
                                max_k=256), shift_reach=2, **SMALL_BUFFERS)


@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_tb_core_with_reach_3(simulator, tmp_path_factory):
    cfg = REACH3
    build_dir = tmp_path_factory.mktemp(f"reach3-{simulator}")
    v_path, j_path = generated(cfg)
    runner = build_verilog(v_path, cfg.top_name, simulator, build_dir,
                           verilator_args=["-Wno-CASEINCOMPLETE"])
    result = run_cocotb(runner, j_path, "mulfree.sim.tb_core", seed=4321)
    assert result.ok, result.summary()
    assert len(result.tests) == 7, f"ran {sorted(result.tests)}"


@pytest.fixture(scope="module")
def device(board_cache):
    cfg = REACH2
    _, j_path = generated(cfg)
    core = SimCore(build_sim_core(j_path, build_dir=board_cache), core_manifest(cfg))
    core.reset()
    manifest = json.loads(j_path.read_text())
    with Device(SimBackend(core, manifest), manifest, timeout=20.0) as dev:
        yield cfg, dev


def shifted_conv(cfg, rng, *, c, h, w, out_c, kernel=1, stride=1, padding=0, m_block=None,
                 shifts=None):
    """A random convolution after a per-channel shift of up to ``cfg.shift_reach`` pixels."""
    e = cfg.engine
    lo, hi = e.act_range
    r = cfg.shift_reach
    if shifts is None:
        shifts = rng.integers(-r, r + 1, (c, 2))
    return ls.Layer(x=rng.integers(lo, hi + 1, (c, h, w)),
                    w_codes=rng.integers(0, 1 << e.code_width, (out_c, c, kernel, kernel)),
                    post=PostParams(bias=rng.integers(-300, 300, out_c),
                                    shift=rng.integers(0, 6, out_c),
                                    relu=rng.integers(0, 2, out_c).astype(bool)),
                    stride=(stride, stride), padding=(padding, padding),
                    shifts=np.asarray(shifts), m_block=m_block)


def run(cfg, dev, layer):
    """Execute ``layer``; its result beats and the ``BUSY_CYCLES`` delta."""
    bb = cfg.stream_width // 8
    g = ls.layer_geometry(cfg, layer)
    packets = stream_pack.layer_packets(cfg, layer, dev.max_packet_bytes)
    before = dev.counters()
    data = np.asarray(dev.execute(packets, g["results"] * cfg.beats(cfg.vector_bits["OUT"])
                                  * bb), np.uint8)
    busy = dev.counters()["BUSY_CYCLES"] - before["BUSY_CYCLES"]
    return [int.from_bytes(data[k:k + bb].tobytes(), "little")
            for k in range(0, len(data), bb)], busy


def _runs(cfg, rng):
    r = cfg.shift_reach
    corners = np.array([[-r, -r], [r, r], [-r, r], [r, -r], [0, r], [r, 0], [-r, 0]])
    first = shifted_conv(cfg, rng, c=7, h=6, w=7, out_c=5, kernel=3, padding=1)
    return [
        shifted_conv(cfg, rng, c=4, h=5, w=6, out_c=4),
        # Every corner of the reach, on a map the reach crosses; three channel tiles.
        shifted_conv(cfg, rng, c=7, h=5, w=5, out_c=3, shifts=corners),
        first,
        replace(first, x=rng.integers(*cfg.engine.act_range, (7, 6, 7)), reuse_weights=True),
        shifted_conv(cfg, rng, c=9, h=8, w=9, out_c=6, kernel=3, stride=2, padding=1,
                     m_block=5),
        # Blocks of one and three pixels: the watermark and the hazard together.
        shifted_conv(cfg, rng, c=5, h=4, w=5, out_c=4, m_block=1),
        shifted_conv(cfg, rng, c=6, h=7, w=4, out_c=9, kernel=2, m_block=3),
        # A map narrower than the reach: every shifted read beyond it is 0.
        shifted_conv(cfg, rng, c=4, h=2, w=1, out_c=2),
    ]


def test_shifted_convolutions_on_the_board(device):
    """Every run equals the golden model, and ``BUSY_CYCLES`` is exactly the cycle model's."""
    cfg, dev = device
    report = []
    for i, layer in enumerate(_runs(cfg, np.random.default_rng(5))):
        beats, busy = run(cfg, dev, layer)
        assert np.array_equal(ls.unpack_results(cfg, layer, beats),
                              ls.expected_output(cfg, layer)), i
        g = ls.layer_geometry(cfg, layer)
        want = run_cycles(cfg, g, reuse=layer.reuse_weights, shift=True,
                          first_acts=first_block_acts(layer, g))
        report.append((i, busy, want))
    bad = [r for r in report if r[1] != r[2]]
    assert not bad, f"(run, BUSY_CYCLES, estimate) not exact: {bad} of {report}"


def test_shift_table_register_on_the_board(device):
    cfg, dev = device
    value = dev.read("SHIFT_TABLE")
    assert dev.field("SHIFT_TABLE", "reach", value) == 2
    assert dev.field("SHIFT_TABLE", "entry_bits", value) == 6 == cfg.shift_entry_bits
