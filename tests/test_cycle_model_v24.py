"""Taps runs (interface 2.4) in the cycle model, and on the simulated board.

Without a simulator: a taps run's stream carries ``NT*rows`` weight rows; its walk reads the
``Hp*Wp`` padded pixels of each output tile at one per cycle; a tile whose single output
pixel comes right after the previous tile's waits for its ``rows`` weight rows; ``TERMS``
(:func:`~mulfree.host.cycle_model.run_terms`) is ``rows*cols`` per emitted vector. On the
board (a 4x4 shift core with a 2x2 tap window and two banks, a 64-bit stream; a 9x9 mult core
with a 3x3 tap window on a 32-bit stream, where a result takes two beats; Verilator): taps
runs of several shapes (strides, padding, 1x1 and 1x2 kernels, one output pixel per tile,
the clamp, kept and quiet, reused weights, an input from the bank) equal the golden output of
:func:`mulfree.params.window_golden.window_acc` and post-processing; ``BUSY_CYCLES`` exactly
:func:`~mulfree.host.cycle_model.run_cycles`; ``TERMS`` grows by ``NT*M*rows*cols``; the
register ``TAPS`` reads the tap window.

The board tests need Verilator and the tap window's RTL: without them they fail
(``SimulatorMissing``), never skip.
"""

import json
from dataclasses import replace

import numpy as np
import pytest

from cores import SMALL_BUFFERS, generated
from test_cycle_model_v23 import run
from test_taps_layer import taps
from test_window_layer import gold

from mulfree.gen.core_manifest import core_manifest
from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.params.layer_golden import PostParams
from mulfree.params.tap_walk import tap_span
from mulfree.host import layer_stream as ls
from mulfree.host import stream_pack
from mulfree.host.cycle_model import (START_CYCLES, run_cycles, run_terms, setup_cycles,
                                      stream_layout)
from mulfree.host.runtime import Device
from mulfree.host.stream_format import first_block_acts
from mulfree.sim.backend import SimBackend
from mulfree.sim.board import SimCore, build_sim_core


TAP_CORE = CoreConfig(ArrayConfig(pe="shift", rows=4, cols=4, act_bits=6, weight_bits=5,
                                  max_k=64), taps=4, tap_line=16, **SMALL_BUFFERS)
NINE = CoreConfig(ArrayConfig(pe="mult", rows=9, cols=9, act_bits=6, weight_bits=4,
                              max_k=64), stream_width=32, tap_line=24, **SMALL_BUFFERS)


def estimate(cfg, layer):
    g = ls.layer_geometry(cfg, layer)
    return run_cycles(cfg, g, reuse=layer.reuse_weights, shift=layer.shifts is not None,
                      first_acts=first_block_acts(layer, g))


def _t_run(cfg, g):
    return START_CYCLES + 1 + cfg.beats(256) + setup_cycles(cfg, g)


def test_the_stream_of_a_taps_run():
    rng = np.random.default_rng(0)
    for cfg, c, rows in ((TAP_CORE, 6, 2 * 4), (NINE, 11, 2 * 9), (NINE, 9, 9)):
        layer = taps(rng, cfg, c=c, kernel=2 if cfg is TAP_CORE else 3)
        g = ls.layer_geometry(cfg, layer)
        layout, _ = stream_layout(cfg, g, False, first_block_acts(layer, g))
        assert sum(n for _, n, _ in layout["WEIGHTS"]) == rows
        assert sum(n for _, n, _ in layout["PARAMS"]) == c and "SHIFT" not in layout


def test_the_walk_is_one_read_per_cycle():
    """With every activation in place (resident) and the weights loaded (reused), one more
    output tile of the same map costs ``Hp*Wp`` cycles after the setup: one read per cycle,
    emitting or not."""
    rng = np.random.default_rng(1)
    for kernel, stride, padding in ((2, 1, 0), (2, 2, 1), ((1, 2), (2, 1), (0, 1))):
        cost = {}
        for c in (4, 8):
            layer = taps(rng, TAP_CORE, c=c, h=8, w=9, kernel=kernel, stride=stride,
                         padding=padding, acts_resident=True, keep=True, quiet=True,
                         reuse_weights=True)
            g = ls.layer_geometry(TAP_CORE, layer)
            cost[c] = estimate(TAP_CORE, layer) - _t_run(TAP_CORE, g)
        hp, wp = tap_span(np.shape(layer.w_codes)[2:], layer.stride, (g["out_h"], g["out_w"]))
        assert cost[8] - cost[4] == hp * wp, (kernel, stride, padding)


def test_one_pixel_tiles_wait_for_their_weights():
    """A 3x3 map, a 3x3 kernel: one output pixel per tile, 9 reads apart; a tile's 9 weight
    rows load at one per cycle once the previous tile's are in use (the shadow frees rows - 1
    cycles after), so each further tile costs more than its 9 reads."""
    rng = np.random.default_rng(2)
    cost = {}
    for c in (18, 27):
        layer = taps(rng, NINE, c=c, h=3, w=3, padding=0)
        cost[c] = estimate(NINE, layer) - _t_run(NINE, ls.layer_geometry(NINE, layer))
    assert cost[27] - cost[18] >= 2 * 9 - 1 > 9


def test_terms_of_a_taps_run():
    rng = np.random.default_rng(3)
    layer = taps(rng, NINE, c=11, h=5, w=7, stride=2)            # NT 2, out 3x4
    g = ls.layer_geometry(NINE, layer)
    assert run_terms(NINE, g) == 2 * 12 * 9 * 9
    assert run_terms(NINE, ls.layer_geometry(NINE, replace(layer, taps=False))) == \
        2 * 9 * 12 * 9


# On the board -----------------------------------------------------------------------------------

def _open(cfg, board_cache):
    _, j_path = generated(cfg)
    core = SimCore(build_sim_core(j_path, build_dir=board_cache), core_manifest(cfg))
    core.reset()
    manifest = json.loads(j_path.read_text())
    return Device(SimBackend(core, manifest), manifest, timeout=20.0)


@pytest.fixture(scope="module")
def device(board_cache):
    cfg = TAP_CORE
    assert cfg.taps == 4 and cfg.tap_side == 2 and cfg.fmap_banks == 2
    with _open(cfg, board_cache) as dev:
        yield cfg, dev


def _check_runs(cfg, dev, layers):
    """Every run's results equal the golden model's, ``TERMS`` is ``NT*M*rows*cols``;
    ``BUSY_CYCLES`` and the estimate of each run, which must all be equal."""
    report = []
    for i, layer in enumerate(layers):
        beats, busy, terms = run(cfg, dev, layer)
        g = ls.layer_geometry(cfg, layer)
        if not layer.quiet:
            got = ls.unpack_results(cfg, layer, beats)
            assert np.array_equal(got, gold(cfg, layer)), (i, layer.taps)
        lanes = layer.window is not None and not layer.taps        # the lane unit's vectors
        per = cfg.engine.cols if lanes else cfg.engine.rows * cfg.engine.cols
        assert terms == g["NT"] * g["KT"] * g["M"] * per == run_terms(cfg, g), (i, terms)
        report.append((i, busy, estimate(cfg, layer)))
    bad = [r for r in report if r[1] != r[2]]
    assert not bad, f"(run, BUSY_CYCLES, estimate) not exact: {bad} of {report}"


def _runs(cfg, rng):
    lo, hi = cfg.engine.act_range
    dw = taps(rng, cfg, c=8, h=5, w=5, kernel=2)
    return [
        taps(rng, cfg, c=6, h=5, w=7, kernel=2),
        taps(rng, cfg, c=9, h=6, w=7, kernel=(2, 1), stride=(2, 1), padding=(1, 0)),
        taps(rng, cfg, c=4, h=6, w=6, kernel=2, stride=2, padding=0),
        taps(rng, cfg, c=10, h=4, w=4, kernel=1, padding=0, clamp=(0, 20)),
        taps(rng, cfg, c=5, h=1, w=9, kernel=(1, 2), padding=(0, 1)),
        # One output pixel per tile: each tile waits for its weights.
        taps(rng, cfg, c=12, h=2, w=2, kernel=2, padding=0),
        # The longest line the buffers take: (out_w-1)*stride_w + kernel_w = tap_line.
        taps(rng, cfg, c=4, h=2, w=cfg.tap_line - 2, kernel=2, padding=1),
        dw, replace(dw, x=rng.integers(lo, hi, (8, 5, 5)), reuse_weights=True),
    ]


def test_taps_runs_on_the_board(device):
    cfg, dev = device
    _check_runs(cfg, dev, _runs(cfg, np.random.default_rng(4)))


def test_a_chain_with_taps_runs_on_the_board(device):
    """conv (keep, quiet) -> taps run from the bank (keep, quiet) -> lane depthwise from the
    bank (keep) -> taps run from the bank: the sent results equal the golden chain's,
    ``BUSY_CYCLES`` exactly the model's; a taps run's weights are REUSE for a lane run."""
    cfg, dev = device
    rng = np.random.default_rng(5)
    lo, hi = cfg.engine.act_range
    x0 = rng.integers(lo, hi + 1, (6, 6, 6))
    conv = ls.Layer(x0, rng.integers(0, 32, (6, 6, 3, 3)),
                    PostParams(rng.integers(-9, 9, 6), np.full(6, 4), True), padding=1,
                    keep=True, quiet=True)
    first = replace(taps(rng, cfg, c=6, h=6, w=6, kernel=2, stride=2, padding=0), x=gold(cfg, conv),
                    in_bank=1, acts_resident=True, keep=True, quiet=True)
    lanes = replace(taps(rng, cfg, c=6, h=3, w=3, kernel=2, padding=1), x=gold(cfg, first),
                    taps=False, acts_resident=True, keep=True)
    last = replace(taps(rng, cfg, c=6, h=4, w=4, kernel=2), x=gold(cfg, lanes), in_bank=1,
                   acts_resident=True)
    _check_runs(cfg, dev, [conv, first, lanes, last])
    from mulfree.host.runtime import CoreRunError
    with pytest.raises(CoreRunError) as info:
        run(cfg, dev, replace(last, x=x0[:, :4, :4], in_bank=0, acts_resident=False,
                              taps=False, reuse_weights=True))
    assert info.value.name == "REUSE"


def test_taps_is_an_identity_register(device):
    cfg, dev = device
    assert dev.read("TAPS") == 4 | 2 << 8 | 1 << 12 | cfg.tap_line << 16
    assert dev.field("VERSION", "minor", dev.read("VERSION")) == 4


def test_serializer_bound_taps_runs_on_the_board(board_cache):
    """A 9x9 mult core with a 3x3 tap window on a 32-bit stream: a result vector takes two
    beats, so 1x1 kernels are bound by the serializer (the output FIFO fills and stalls the
    array), weight rows take two beats each; golden results, ``BUSY_CYCLES`` exactly the
    model's, the errors of a taps run the core refuses."""
    cfg = NINE
    assert cfg.taps == 9 and cfg.beats(cfg.vector_bits["OUT"]) == 2
    rng = np.random.default_rng(6)
    layers = [taps(rng, cfg, c=11, h=6, w=7),
              taps(rng, cfg, c=9, h=8, w=8, kernel=1, padding=0),
              taps(rng, cfg, c=20, h=7, w=6, kernel=(3, 2), stride=2, padding=(1, 0)),
              taps(rng, cfg, c=18, h=3, w=3, padding=0)]
    from mulfree.host.runtime import CoreRunError
    with _open(cfg, board_cache) as dev:
        assert dev.read("TAPS") == 9 | 3 << 8 | 1 << 12 | cfg.tap_line << 16
        _check_runs(cfg, dev, layers)
        long_line = taps(rng, cfg, c=9, h=3, w=cfg.tap_line)
        with pytest.raises(ls.LayerError):
            ls.check_layer(cfg, long_line)
        with pytest.raises(CoreRunError) as info:
            dev.execute(stream_pack.layer_packets(cfg, long_line, dev.max_packet_bytes,
                                                  check=False), 0)
        assert info.value.name == "TOO_BIG"
