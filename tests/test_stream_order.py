"""The order of a run's packets (:func:`~mulfree.host.stream_format.stream_order`) for a
residual layer: the first block's shortcut right after the first output tile's weights, then
each further block's activations and shortcut; pre-packed weights follow it (no simulator).

The order's cycles are measured on the simulated board by ``tests/test_device_v2.py`` and
``tests/test_device_v21.py`` (``BUSY_CYCLES`` against :func:`~mulfree.host.cycle_model.
run_cycles`, which reads the same order).
"""

from dataclasses import replace

import numpy as np
import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.params.layer_golden import PostParams, ResidualParams
from mulfree.host import layer_stream as ls
from mulfree.host import stream_pack
from mulfree.host.cycle_model import run_cycles
from mulfree.host.stream_format import (first_block_acts, params_vectors, stream_order,
                                        weight_slots)


CFG = CoreConfig(ArrayConfig(pe="shift", rows=16, cols=16), stream_width=64,
                 fmap_vectors=4096, weight_rows=4096, acc_entries=1024)


def resnet_layer(c, size, *, residual, seed=0):
    """A 3x3 convolution of ResNet-20 (``c`` channels on a ``size`` map), random values."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-128, 128, (c, size, size))
    w = rng.integers(0, 16, (c, c, 3, 3))
    post = PostParams(rng.integers(-50, 50, c), np.full(c, 6))
    layer = ls.Layer(x, w, post, padding=1)
    if residual:
        layer = replace(layer, shortcut=rng.integers(-128, 128, (c, size, size)),
                        residual=ResidualParams(1, 0, 1, True))
    return layer


def test_first_block_shortcut_follows_the_first_tiles_weights():
    layer = resnet_layer(64, 8, residual=True)
    g = ls.layer_geometry(CFG, layer)
    order = stream_order(g, reuse=False, first_acts=first_block_acts(layer, g))
    kinds = [(k, n) for k, _, n in order]
    rows = g["KT"] * CFG.engine.rows                   # nt = 0: 36 tiles of 16 rows
    assert kinds[:2] == [("PARAMS", 64), ("ACTS", first_block_acts(layer, g))]
    assert kinds[2:5] == [("WEIGHTS", rows), ("SHORTCUT", 32 * 4),
                          ("WEIGHTS", g["counts"]["WEIGHTS"] - rows)]
    # Every vector of every type once, in rising order.
    for kind, total in g["counts"].items():
        got = [(s, n) for k, s, n in order if k == kind]
        assert sum(n for _, n in got) == total
        assert all(a[0] + a[1] == b[0] for a, b in zip(got, got[1:]))


@pytest.mark.parametrize("c, size", [(16, 32), (32, 16), (64, 8)])
def test_a_residual_costs_little_more_than_its_plain_twin(c, size):
    """ResNet-20's residual convolutions on a 16x16 core: sent after all the weights and all
    the activations, the shortcut held the first stage's final passes back (12 % more cycles
    than the plain convolution); block by block it costs at most 3 %."""
    plain, res = resnet_layer(c, size, residual=False), resnet_layer(c, size, residual=True)
    gp, gr = ls.layer_geometry(CFG, plain), ls.layer_geometry(CFG, res)
    a = run_cycles(CFG, gp, first_acts=first_block_acts(plain, gp))
    b = run_cycles(CFG, gr, first_acts=first_block_acts(res, gr))
    assert a <= b <= 1.03 * a, (a, b)


@pytest.mark.parametrize("max_bytes", [None, 200, 136])
def test_prepacked_weights_follow_the_order(max_bytes):
    """``layer_packets`` with PARAMS and WEIGHTS packed beforehand in two pieces (the first
    tile's rows, the rest; as ``step_packets.weight_packets``) sends the bytes it packs
    itself; a pre-packed packet across a segment's end goes whole (the next segment is that
    much shorter), every vector still sent once in order."""
    layer = replace(resnet_layer(8, 6, residual=True, seed=3), m_block=9,
                    w_codes=np.random.default_rng(1).integers(0, 16, (8, 8, 3, 3)))
    layer = replace(layer, x=np.clip(layer.x, -8, 7), shortcut=np.clip(layer.shortcut, -8, 7),
                    post=PostParams(np.arange(8) - 4, np.full(8, 2)))
    cfg = CoreConfig(ArrayConfig(pe="shift", rows=4, cols=4, act_bits=4), stream_width=64)
    g = ls.layer_geometry(cfg, layer)
    own = stream_pack.layer_packets(cfg, layer, max_bytes)
    params = stream_pack.packets(cfg, "PARAMS", stream_pack.int_vectors(
        cfg, params_vectors(cfg, layer, g), "PARAMS"), max_bytes)
    slots = stream_pack.pack_elements(cfg, weight_slots(cfg, layer.w_codes, g), cfg.code_width)
    cut = g["KT"] * cfg.engine.rows * cfg.beats(cfg.vector_bits["WEIGHTS"])
    two = params + stream_pack.packets(cfg, "WEIGHTS", slots[:cut], max_bytes) + \
        stream_pack.packets(cfg, "WEIGHTS", slots[cut:], max_bytes)
    given = stream_pack.layer_packets(cfg, layer, max_bytes, weights=two)
    assert [p.tobytes() for p in given] == [p.tobytes() for p in own]
    # One packet of all the weights: it goes whole where the first piece would.
    one = params + stream_pack.packets(cfg, "WEIGHTS", slots)
    sent = stream_pack.layer_packets(cfg, layer, max_bytes, weights=one)
    types = [int(p[0, 0]) & 0xF for p in sent]
    assert types.count(ls.PACKET_TYPES["WEIGHTS"]) == 1
    assert types.index(ls.PACKET_TYPES["WEIGHTS"]) < types.index(ls.PACKET_TYPES["SHORTCUT"])
    beats = [(int.from_bytes(b.tobytes(), "little"), i == len(p) - 1)
             for p in sent for i, b in enumerate(p)]
    want = ls.expected_beats(cfg, layer)
    assert ls.emulate_core(cfg, beats) == want
