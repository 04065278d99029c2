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

from cores import ADDER_3X5_S128, SHIFT_4X4, generated
from test_layer_stream import random_layer
from test_layer_stream_v2 import with_tail

from mulfree.gen.core_manifest import core_manifest
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
def design(request, board_cache):
    """``(config, manifest path, library)`` of a board core, built on first use."""
    cfg = CORES[request.param]
    _, j_path = generated(cfg)
    return cfg, j_path, build_sim_core(j_path, build_dir=board_cache)


@pytest.fixture(scope="module")
def device(design):
    cfg, j_path, lib = design
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


def test_the_core_refuses_what_check_layer_refuses(device):
    """Every refusal of the 2.0 fields that the board's core can see (its own sizes): the
    descriptor the host would send stops the run with the code ``check_layer`` names, and the
    emulator agrees; the device stays usable."""
    from test_layer_stream_v2 import BAD_V2, v2_case
    from mulfree.host.core_layer import tail_fields
    from mulfree.host.runtime import CoreRunError
    from mulfree.host.stream_format import descriptor_words_unchecked
    from mulfree.params.core_config import DESC_FIELDS, DESC_SIGNED
    cfg, dev = device
    bb = cfg.stream_width // 8
    seen = set()
    for what, cfg_kwargs, change, param, core_error, text in BAD_V2:
        if cfg_kwargs or core_error is None:
            continue
        bad = replace(v2_case(), **change)
        with pytest.raises(ls.LayerError) as info:
            ls.check_layer(cfg, bad)
        assert info.value.core_error == core_error, what
        g = ls.layer_geometry(cfg, bad)
        fields = {**g, **tail_fields(bad)}
        if any(name not in DESC_SIGNED and not 0 <= fields.get(name, 0) < 1 << width
               for _, _, width, name in DESC_FIELDS):
            continue                 # a field wider than its bits: no descriptor to send
        words = descriptor_words_unchecked(bad, g)
        desc = stream_pack.packets(cfg, "DESC", stream_pack.pack_elements(
            cfg, np.array([words]), 32))
        with pytest.raises(ls.CoreError) as stop:
            ls.emulate_core(cfg, [ls.Packet("DESC", 1, [0x101] + [
                int.from_bytes(b.tobytes(), "little") for b in desc[0][1:]])])
        assert stop.value.name == core_error, (what, str(stop.value))
        with pytest.raises(CoreRunError) as run:
            dev.execute(desc, 0)
        assert run.value.name == core_error, (what, str(run.value))
        seen.add(what)
    assert {"stride 0", "short_c 0", "short_c + offset > out_c", "pool high",
            "pool low"} <= seen, seen
    # Still usable: a good layer runs.
    good = v2_case()
    g = ls.layer_geometry(cfg, good)
    data = np.asarray(dev.execute(stream_pack.layer_packets(cfg, good),
                                  g["results"] * cfg.beats(cfg.vector_bits["OUT"]) * bb))
    beats = [int.from_bytes(data[k:k + bb].tobytes(), "little") for k in range(0, len(data), bb)]
    assert np.array_equal(ls.unpack_results(cfg, good, beats), ls.expected_output(cfg, good))


def test_identity_names_the_pool_and_shortcut_sizes(design, device):
    """A manifest whose pool unit or shortcut buffer is not the device's is refused when the
    device opens (registers POOL_PIXELS, SHORTCUT_VECTORS), nothing sent."""
    from mulfree.host.runtime import DeviceMismatch
    cfg, _, lib = design
    assert device[1].identity()["POOL_PIXELS"] == cfg.pool_pixels == 4096
    for field, value, reg in (("pool_pixels", 1024, "POOL_PIXELS"),
                              ("shortcut_vectors", 512, "SHORTCUT_VECTORS")):
        other = replace(cfg, **{field: value})
        core = SimCore(lib, core_manifest(cfg))
        core.reset()
        with pytest.raises(DeviceMismatch, match=f"register {reg} .* reads 0x"):
            Device(SimBackend(core, core_manifest(other)), core_manifest(other))
