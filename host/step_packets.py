"""A core step's runs as bytes: the packets ``s_axis`` takes and the results ``m_axis`` gives.

:func:`weight_packets` packs a step's PARAMS, SHIFT and WEIGHTS once, when the program is
compiled; :func:`encode_run` and :func:`decode_run` turn one run into the packets the core
takes and the result bytes it gives back (``docs/interface.md``, "Stream formats"), with the
fast byte packing of :mod:`mulfree.host.stream_pack`. NumPy only.
"""

import numpy as np

from . import stream_pack
from .core_layer import Layer, layer_geometry
from .program import Program
from .steps import CoreStep, run_x_shape, step_layer
from .stream_format import params_vectors, shift_vectors, weight_slots
from .stream_results import result_shape


__all__ = ["weight_packets", "encode_run", "decode_run"]


def weight_packets(cfg, step: CoreStep, max_bytes):
    """PARAMS, SHIFT and WEIGHTS packets of ``step`` (sent by its first run of a batch); a
    step with a streamed shortcut's WEIGHTS in two pieces, the first output tile's rows
    (``KT * R``; a depthwise window run's ``kernel_h * kernel_w``) and the rest
    (:func:`~mulfree.host.stream_format.stream_order` sends the first block's SHORTCUT
    between them).

    Raises
    ------
    ValueError
        If ``max_bytes`` cannot hold a header and one vector.
    """
    layer = step_layer(step, np.zeros(run_x_shape(step, 1), dtype=np.int64), reuse=False)
    g = layer_geometry(cfg, layer)
    params = stream_pack.int_vectors(cfg, params_vectors(cfg, layer, g), "PARAMS")
    out = stream_pack.packets(cfg, "PARAMS", params, max_bytes)
    if step.shifts is not None:
        vectors = shift_vectors(cfg, layer, g)
        out += stream_pack.packets(cfg, "SHIFT", stream_pack.int_vectors(cfg, vectors, "SHIFT"),
                                   max_bytes)
    slots = stream_pack.pack_elements(cfg, weight_slots(cfg, step.w_codes, g, layer.engine),
                                      cfg.code_width)
    # A residual's in two pieces, the first output tile's rows and the rest: stream_order
    # sends the first block's SHORTCUT between them.
    cut = g["wrows"] // max(g["NT"], 1) * cfg.beats(cfg.vector_bits["WEIGHTS"])
    if step.residual is None or getattr(step, "short_resident", False):
        cut = len(slots)
    for piece in (slots[:cut], slots[cut:]):
        out += stream_pack.packets(cfg, "WEIGHTS", piece, max_bytes)
    return out


def encode_run(program: Program, step: CoreStep, x, *, reuse, shortcut=None):
    """The packets of one run of ``step`` on ``x``, and the bytes of its result.

    The packets are :func:`~mulfree.host.stream_pack.layer_packets`' (the order of
    ``stream_format.stream_order``, which overlaps loading and computing), with the step's
    PARAMS, SHIFT and WEIGHTS packed at compile time; with ``reuse`` (weights kept from the
    previous run of the same step) they are left out. ``shortcut`` is the image's shortcut
    source (``step.short_shape``: ``[short_c, out_h*s, out_w*s]``, which the core aligns) of a
    step with a fused residual add; a step with a fused global pool (``step.pool``) answers
    one pixel. A chained step's run (:mod:`mulfree.host.chaining`) sends no ACTS with
    ``acts_resident``, no SHORTCUT with ``short_resident``, and expects 0 result bytes when
    ``quiet``.

    Returns
    -------
    (list of uint8 arrays, int, Layer)
        The packets (``[beats, beat_bytes]`` each), the result's size in bytes, and the run's
        :class:`~mulfree.host.core_layer.Layer` (for :func:`decode_run`).
    """
    cfg = program.core
    layer = step_layer(step, x, reuse=reuse, shortcut=shortcut)
    g = layer_geometry(cfg, layer)
    packets = stream_pack.layer_packets(cfg, layer, program.max_packet_bytes,
                                        weights=step.weight_packets, check=False)
    out_beats = 0 if layer.quiet else g["results"] * cfg.beats(cfg.vector_bits["OUT"])
    return packets, out_beats * cfg.stream_width // 8, layer


def decode_run(program: Program, layer: Layer, data):
    """The run's outputs ``[out_c, out_h, out_w]`` (int64; ``[out_c, 1, 1]`` for a layer
    with a global pool) from its result bytes.

    Raises
    ------
    ValueError
        If ``data`` has the wrong size, or a bit the format says is 0 (above a vector, or a
        lane of a channel at or beyond ``out_c``) is set.
    """
    cfg = program.core
    e = cfg.engine
    g = layer_geometry(cfg, layer)
    per = cfg.beats(cfg.vector_bits["OUT"])
    beat_bytes = cfg.stream_width // 8
    n = g["results"]
    data = np.asarray(data, dtype=np.uint8).reshape(-1)
    if data.size != n * per * beat_bytes:
        raise ValueError(f"the results of this run are {n} vectors of {per * beat_bytes} "
                         f"bytes = {n * per * beat_bytes} bytes, not {data.size}")
    values, extra = stream_pack.unpack_elements(cfg, data.reshape(n * per, beat_bytes),
                                                e.cols, e.act_bits)
    if extra.any():
        raise ValueError(f"result vector {int(np.argmax(extra))} has bits set above its "
                         f"{cfg.vector_bits['OUT']} bits")
    # Result order: for each block, for nt, for each pixel of the block; pooled: nt.
    pixels = 1 if g["global_pool"] else g["M"]
    lanes = np.zeros((g["NT"], e.cols, pixels), dtype=np.int64)
    i = 0
    for start in range(0, pixels, g["m_block"]):
        stop = min(start + g["m_block"], pixels)
        block = values[i:i + g["NT"] * (stop - start)].reshape(g["NT"], stop - start, e.cols)
        lanes[:, :, start:stop] = block.transpose(0, 2, 1)
        i += g["NT"] * (stop - start)
    lanes = lanes.reshape(g["NT"] * e.cols, pixels)
    if np.any(lanes[g["out_c"]:]):
        c, m = np.argwhere(lanes[g["out_c"]:])[0]
        raise ValueError(f"result lane of channel {g['out_c'] + c} >= out_c = {g['out_c']} "
                         f"(pixel {m}) is {lanes[g['out_c'] + c, m]}, not 0")
    return lanes[:g["out_c"]].reshape(result_shape(g))
