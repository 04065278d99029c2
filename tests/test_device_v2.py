"""Core interface 2.0 on the simulated board: layers with an aligned shortcut and with a global
pool, packed by the runtime's byte packer (``stream_pack.layer_packets``), run through
``Device.execute`` on the Verilog under Verilator, read back and compared with the golden
output; ``BUSY_CYCLES`` against the cycle model's estimate.

The tests need Verilator: without it they fail (``SimulatorMissing``), they never skip.
"""

import json
from dataclasses import replace

import numpy as np
import pytest

from cores import ADDER_3X5_S128, SHIFT_4X4
from test_layer_stream import random_layer
from test_layer_stream_v2 import with_tail

from mulfree.gen.core_manifest import core_manifest, write_core_design
from mulfree.host import layer_stream as ls
from mulfree.host import stream_pack
from mulfree.host.cycle_model import run_cycles
from mulfree.host.runtime import Device
from mulfree.host.stream_format import first_block_acts
from mulfree.sim.backend import SimBackend
from mulfree.sim.board import SimCore, build_sim_core


CORES = {"shift4x4": SHIFT_4X4, "adder3x5_s128": ADDER_3X5_S128}
#: The cycle model's tolerance (``tests/test_run_graph.py``'s).
TOLERANCE = 0.05


@pytest.fixture(scope="module", params=list(CORES))
def device(request, tmp_path_factory, board_cache):
    cfg = CORES[request.param]
    _, j_path = write_core_design(cfg, tmp_path_factory.mktemp(f"v2-{request.param}"))
    lib = build_sim_core(j_path, build_dir=board_cache)
    core = SimCore(lib, core_manifest(cfg))
    core.reset()
    manifest = json.loads(j_path.read_text())
    with Device(SimBackend(core, manifest), manifest, timeout=20.0) as dev:
        yield cfg, dev


def layers(cfg, rng):
    """Aligned shortcuts (offsets within a vector, strides 1 to 3), pools, both, reusing."""
    e = cfg.engine
    c = e.cols
    out = [
        with_tail(e, rng, random_layer(e, rng, 3, 8, 8, 2 * c, (3, 3), 2, 1),
                  short_c=c, offset=c // 2, stride=2),
        with_tail(e, rng, random_layer(e, rng, 4, 6, 6, 2 * c + 1, (3, 3), 1, 1, m_block=7),
                  short_c=c + 1, offset=1, stride=1, clamp=True),
        with_tail(e, rng, random_layer(e, rng, 5, 9, 7, c + 2, (3, 3), 2, 1, shifts=True),
                  short_c=2, offset=c - 1, stride=3),
        with_tail(e, rng, random_layer(e, rng, 4, 8, 8, 2 * c, (1, 1)), pool=True),
        with_tail(e, rng, random_layer(e, rng, 3, 8, 8, 2 * c, (3, 3), 2, 1),
                  short_c=c, offset=c // 2, stride=2, pool=True),
        with_tail(e, rng, random_layer(e, rng, 4, 4, 4, 3 * c, (3, 3), 1, 1),
                  short_c=3 * c, pool=True, clamp=True),
    ]
    # Bound by the stream: a 1x1 layer whose shortcut source is four times its map, its
    # offset half a vector (the aligner holds after every kept pixel), reusing its weights.
    stream_bound = with_tail(e, rng, random_layer(e, rng, 2, 12, 12, 2 * c), short_c=c,
                             offset=c // 2, stride=2)
    return out + [replace(out[-1], reuse_weights=True,
                          x=rng.integers(*e.act_range, out[-1].x.shape)),
                  stream_bound, replace(stream_bound, reuse_weights=True),
                  replace(stream_bound, reuse_weights=True, pool=3)]


def test_aligned_shortcuts_and_pools_on_the_board(device):
    cfg, dev = device
    rng = np.random.default_rng(cfg.engine.cols)
    bb = cfg.stream_width // 8
    report = []
    for i, layer in enumerate(layers(cfg, rng)):
        g = ls.layer_geometry(cfg, layer)
        packets = stream_pack.layer_packets(cfg, layer, dev.max_packet_bytes)
        nbytes = g["results"] * cfg.beats(cfg.vector_bits["OUT"]) * bb
        before = dev.counters()["BUSY_CYCLES"]
        data = np.asarray(dev.execute(packets, nbytes), np.uint8)
        busy = dev.counters()["BUSY_CYCLES"] - before
        beats = [int.from_bytes(data[k:k + bb].tobytes(), "little")
                 for k in range(0, len(data), bb)]
        want = ls.expected_output(cfg, layer)
        got = ls.unpack_results(cfg, layer, beats)
        assert np.array_equal(got, want), (i, np.argwhere(got != want)[:4].tolist())
        estimate = run_cycles(cfg, g, reuse=layer.reuse_weights,
                              shift=layer.shifts is not None,
                              first_acts=first_block_acts(layer, g))
        report.append((i, busy, estimate))
    bad = [r for r in report if abs(r[2] - r[1]) > TOLERANCE * r[1]]
    assert not bad, f"(layer, BUSY_CYCLES, estimate) beyond {TOLERANCE:.0%}: {bad} of {report}"
