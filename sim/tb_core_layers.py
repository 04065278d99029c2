"""Layers and packets for the core's cocotb testbenches (:mod:`mulfree.sim.tb_core`,
:mod:`mulfree.sim.tb_core_corners`): random layers of each kind, the fused tail (a residual add
and a clamp) on a layer, a run's packets of one type cut into chunks, random pause patterns, the
golden result beats of a layer with a global pool (:func:`pooled_beats`).

No cocotb test lives here; the scenarios that use these are listed in those modules.
"""

import dataclasses

import numpy as np

from mulfree.host.layer_stream import Layer, Packet, expected_output, layer_geometry
from mulfree.host.stream_format import pack_vector, vector_beats
from mulfree.params.layer_golden import PostParams, global_pool


__all__ = ["random_pauses", "random_layer", "with_tail", "chunked", "shortcut_last",
           "pooled_beats"]


def random_pauses(seed, busy=0.3, hold=0):
    """An endless pause pattern: each cycle paused with probability ``busy``, and, with
    ``hold``, a pause of ``hold`` cycles in a row now and then (one in 50 cycles)."""
    rng = np.random.default_rng(seed)
    while True:
        if hold and rng.random() < 0.02:
            yield from [1] * hold
        yield int(rng.random() < busy)


def random_layer(cfg, rng, *, kind, **over):
    """A random layer of ``kind``: matmul, conv (k x k, stride, padding), or shift (a conv
    after random per-channel shifts within the core's ``shift_reach``; 1x1 unless
    ``kh``/``kw`` say otherwise)."""
    e = cfg.engine
    lo, hi = e.act_range
    if kind == "matmul":
        m, k, n = over.get("m", 7), over.get("k", 5), over.get("n", 4)
        geom = dict(in_c=k, in_h=1, in_w=m, out_c=n, kh=1, kw=1)
    else:
        geom = dict(in_c=over.get("in_c", 3), in_h=over.get("h", 5), in_w=over.get("w", 6),
                    out_c=over.get("out_c", 4), kh=over.get("kh", 1 if kind == "shift" else 3),
                    kw=over.get("kw", 1 if kind == "shift" else 3))
    x = rng.integers(lo, hi + 1, (geom["in_c"], geom["in_h"], geom["in_w"]))
    if e.pe == "shift":
        w = rng.integers(0, 1 << e.weight_bits, (geom["out_c"], geom["in_c"], geom["kh"],
                                                 geom["kw"]))
    else:
        # The engine's weight range: [-127, 127] on a packed mult engine (mult_pack=2).
        wlo, whi = e.weight_range
        w = rng.integers(wlo, whi + 1, (geom["out_c"], geom["in_c"], geom["kh"], geom["kw"]))
    n = geom["out_c"]
    post = PostParams(bias=rng.integers(-200, 200, n), shift=rng.integers(-1, 7, n),
                      relu=rng.integers(0, 2, n).astype(bool))
    shifts = None
    if kind == "shift":
        shifts = rng.integers(-cfg.shift_reach, cfg.shift_reach + 1, (geom["in_c"], 2))
    return Layer(x=x, w_codes=w, post=post, stride=over.get("stride", (1, 1)),
                 padding=over.get("padding", (0, 0)), shifts=shifts,
                 m_block=over.get("m_block"), reuse_weights=over.get("reuse", False))


def with_tail(cfg, layer, rng, *, residual=None, clamp=None, **over):
    """``layer`` with a fused tail: a ``residual`` (a ``ResidualParams``) with a random
    shortcut of the layer's output shape, a ``clamp`` ``(lo, hi)``; ``over`` replaces other
    fields (``x``, ``reuse_weights``, ...)."""
    shortcut = None
    if residual is not None:
        g = layer_geometry(cfg, layer)
        lo, hi = cfg.engine.act_range
        shortcut = rng.integers(lo, hi + 1, (g["out_c"], g["out_h"], g["out_w"]))
    return dataclasses.replace(layer, residual=residual, clamp=clamp, shortcut=shortcut, **over)


def chunked(cfg, packets, kind, size):
    """``packets`` with every packet of ``kind`` cut into packets of at most ``size``
    vectors, in place."""
    per = cfg.beats(cfg.vector_bits[kind])
    out = []
    for p in packets:
        if p.type != kind:
            out.append(p)
            continue
        vectors = [p.beats[1 + i * per:1 + (i + 1) * per] for i in range(p.count)]
        for a in range(0, p.count, size):
            chunk = vectors[a:a + size]
            out.append(Packet(kind, len(chunk), [p.beats[0] & 0xFF | len(chunk) << 8]
                              + [b for v in chunk for b in v]))
    return out


def shortcut_last(packets):
    """``packets`` with the SHORTCUT packets moved after all the others (every final result
    waits for its shortcut vector)."""
    return ([p for p in packets if p.type != "SHORTCUT"]
            + [p for p in packets if p.type == "SHORTCUT"])


def pooled_beats(cfg, layer):
    """The result beats of ``layer`` with its global pool (``layer.pool``, the pool shift),
    from the golden model alone: the layer without the pool
    (:func:`mulfree.host.layer_stream.expected_output`: the convolution, post-processing, the
    fused tail), then :func:`mulfree.params.layer_golden.global_pool`, laid out as the core
    sends one pixel: ``ceil(out_c / cols)`` vectors, lanes beyond ``out_c`` 0."""
    e = cfg.engine
    out = expected_output(cfg, dataclasses.replace(layer, pool=None))
    pooled = global_pool(e.act_bits, out, int(layer.pool)).reshape(-1)
    nt = -(-len(pooled) // e.cols)
    lanes = np.zeros(nt * e.cols, dtype=np.int64)
    lanes[:len(pooled)] = pooled
    return [b for t in range(nt)
            for b in vector_beats(cfg, pack_vector(lanes[t * e.cols:(t + 1) * e.cols],
                                                   e.act_bits), cfg.vector_bits["OUT"])]
