"""How many cycles the core is busy with one run: a model of its schedule, no simulation.

:func:`run_cycles` estimates ``BUSY_CYCLES`` of one run (``CONTROL.start`` to ``STATUS.done``)
from the layer's geometry (:func:`~mulfree.host.core_layer.layer_geometry`) and the core's
configuration, following the order of work of ``docs/interface.md`` ("Order of work") and the
blocks of ``docs/architecture.md`` ("The accelerator core"). It walks the run pass by pass
(a pass: one weight tile over one block's pixels), not vector by vector, so a layer of a
ResNet costs microseconds to milliseconds to estimate. The model:

1. **Descriptor and setup.** The descriptor packet (a header and ``ceil(256 / S)`` beats)
   arrives at one beat per cycle; the layer setup then runs its sequential steps
   (:data:`~mulfree.params.core_config.SETUP_STEPS`): a multiplication takes one cycle per bit
   of its second operand up to its highest set bit (at least one, at most 16), a division by a
   power of two one cycle, any other division 17; every step stores its result in one more
   cycle, plus one cycle to start and one to check. No data beat is taken before the setup
   has passed (``t_run``).
2. **The stream.** From ``t_run`` the core takes one beat per cycle, in the order
   :func:`~mulfree.host.stream_format.stream_order` gives (``pack_layer``'s and the
   compiler's): PARAMS, SHIFT, the first block's ACTS, WEIGHTS, the first block's SHORTCUT,
   the other ACTS, the other SHORTCUT (a run that reuses its weights sends no PARAMS, SHIFT or
   WEIGHTS; a run without a residual no SHORTCUT). A vector is usable the cycle after its last
   beat (the loader's watermark). The SHORTCUT vectors are the shortcut's source (``scv`` of
   them, core interface 2.0), aligned as they arrive (``rtl/stream_loader.py``,
   ``ShortcutAligner``): when ``short_off`` is no multiple of the columns and the pixel's
   last aligned tile holds only the carried lanes (``q + nts < NT``), the aligner writes that
   tile in the cycle after a kept source pixel's last vector and the loader holds the next
   SHORTCUT vector back :data:`SHORTCUT_HOLD_CYCLES` cycle (:func:`shortcut_holds`).
3. **Passes.** For every block of ``m_block`` pixels, for ``nt``, for ``kt``, one pass of the
   block's pixels enters the engine at one vector per cycle, three cycles after its issue. A
   pass starts no earlier than

   * the previous pass's end (one vector per cycle);
   * its weight tile: the weight feeder loads the tile's ``rows`` rows into the engine's
     shadow registers at one row per cycle, once they have arrived and once the previous tile
     is in use (an array frees its shadow ``rows - 1`` cycles after a tile is taken into use,
     a tree the cycle after);
   * the activations: every vector of the pass is issued only once the farthest activation
     its lanes read (with a shift table: ``shift_reach`` rows and pixels further) has
     arrived;
   * a short block (fewer pixels than ``hazard_window``) whose pass reads partial sums
     (``kt > 0``) waits until the previous pass has left the engine: its first vector is
     issued ``latency + 4`` cycles after the previous pass's last;
   * the engine: the layer's (``g["engine"]``, a multi-engine core's descriptor field); a
     folded engine (``CoreConfig.folds(k) = f > 1``) takes one input vector every ``f``
     cycles, its ``CoreConfig.engine_latency`` after each; while its output waits, the whole
     engine waits, so the vectors behind it follow ``f`` cycles apart. The shadow tile of a
     folded engine is freed as an array's (it is a column chain, whatever its ``arch``);
   * the output: a final pass (``kt = KT - 1``) sends its vectors through the
     post-processing (:func:`~mulfree.params.manifest.post_latency` stages: 4, 7 on a core
     with a shortcut buffer), the output FIFO (``out_vectors``) and a serializer of
     ``ceil(C a / S)`` beats per vector. When the serializer is slower than one vector per
     cycle the FIFO fills and the engine, whose pipeline stalls as a whole, waits until the
     pass's last vector can retire;
   * the shortcut (a residual layer): a final vector ``(m, nt)`` leaves the engine for the
     post-processing only once its output pixel is aligned: the last SHORTCUT vector of its
     source pixel ``(oy*s, ox*s)`` has arrived (the aligner's watermark counts whole pixels:
     from the cycle after its last beat, :data:`SHORTCUT_TO_RETIRE`, and one cycle later when
     the pixel's carried tile is written after it); the engine stalls as a whole until then,
     delaying the pass's other vectors and the next pass;
   * with a global pool the final vectors go into the pool's sums, one per cycle, and not to
     the output: no serializer holds the engine back.
4. **The end.** The run ends when the last result beat has left: the last vector's entry,
   the engine's ``latency``, the post-processing, the serializer's beats and
   :data:`END_CYCLES`; with a global pool, :func:`~mulfree.params.manifest.pool_latency`
   cycles after the last vector left the post-processing, the ``NT`` pooled vectors' beats.
   Never before the cycle after the stream's last beat, nor, with a resident shortcut, after
   the bank reader's last source vector (a strided shortcut's source pixels after the last
   one an output reads are still taken: measured on the board, interface 2.2).

5. **Layer chaining** (interface 2.2, :func:`~mulfree.host.core_layer.layer_geometry`'s
   chaining flags). ``acts_resident``: no ACTS beats, the input is in its bank at ``t_run``.
   ``short_resident``: no SHORTCUT beats; the bank's reader feeds the aligner one source
   vector per cycle from ``t_run + RESIDENT_SHORTCUT_START``, with the aligner's holds.
   ``quiet``: no result beats, no serializer (the run ends :data:`QUIET_END_CYCLES` after the
   last vector has left the post-processing; with a pool, the ``NT`` pooled vectors are
   written one per cycle, then :data:`QUIET_POOL_END_CYCLES`). ``keep``: the results are also written into the other bank;
   the interlock that keeps an in-place write behind the shortcut reader is assumed never to
   bind. Measured on the simulated board (``tests/test_cycle_model_v22.py``: a 4x4 shift
   core, 64-bit stream, chains of six layers with resident inputs and shortcuts, kept,
   quiet, in place, pooled (quiet too); 24 runs; reader-bound resident shortcuts, 3 runs;
   pools of 1 to 4 tiles, quiet or not, 8 runs): exact.

6. **Window runs** (interface 2.3, ``g["window"]``). The lane unit takes the engine's
   place: ``KT = kernel_h*kernel_w`` passes per output tile, lane ``j`` of tile ``nt``
   reading channel tile ``nt`` (the activations a pass waits for: ``(iy*in_w + ix)*CT +
   nt``), one vector per cycle, latency ``WINDOW_LATENCY`` (the short-block wait and the end
   count it instead of the engine's); a depthwise pass waits for its one weight row (read by
   the feeder behind the watermark like a tile's rows; the lane unit's pending row, taken by
   a pass's first vector, reloads the cycle after, so passes start at least 2 cycles apart),
   max and sum for none; a first pass that needs no weight row and no activation (all
   padding) enters one cycle sooner than a convolution's first vector could. The rest (stream, post-processing, tail, banks, pool, serializer) is a
   convolution's. Measured on the simulated board (``tests/test_cycle_model_v23.py``: a 4x4
   shift core, a three-engine core with a folded mult engine on a 32-bit stream, an 8x8 core
   whose results take two beats; 37 runs of every kind, short and 1-pixel blocks, 1x1
   windows, the tail, reuse, and a chain of 4 through the banks): exact.

7. **Taps runs** (interface 2.4, ``g["taps"]``: :func:`taps_cycles`). Per output tile the
   issue unit reads the ``Hp*Wp`` padded pixels of :func:`~mulfree.params.tap_walk.tap_reads`
   at one per cycle from ``t_run`` (a cycle before a convolution's first issue could), each
   once its vector has arrived (the watermark of its address ``(iy*in_w + ix)*CT + nt``,
   padding included, as a convolution's reads); a read that emits enters the array
   ``ISSUE_TO_ENGINE`` cycles later at the earliest, one per cycle, the others only pass S1
   and S2. The credit (the FIFO's vectors, those the engine takes this cycle included, and
   the reads in S1 and S2, below ``ISSUE_FIFO_DEPTH``) stops the reads while emitted vectors
   wait for the engine. Tile ``nt``'s first emitted vector waits for its ``rows`` weight rows,
   loaded into the shadow registers as a convolution's tiles are; every emitted vector is
   final and goes through post-processing and the serializer (a result FIFO of
   ``out_vectors`` holding the engine back when a result takes more beats than a cycle). The
   end is a convolution's. Measured on the simulated board (``tests/test_cycle_model_v24.py``:
   a 4x4 shift core with a 2x2 tap window on a 64-bit stream, 49 runs of 1x1 to 2x2 kernels,
   strides, padding, 1 to 3 tiles, reused weights, and a chain through the banks; a 9x9 mult
   core with a 3x3 tap window on a 32-bit stream, results of two beats): exact.

The model ignores backpressure on ``m_axis`` and splits no packet (a DMA's packet limit adds
a header beat per packet). **Accuracy**, measured against ``BUSY_CYCLES`` on the simulated
board (174 runs: 18 layer shapes, with and without weights, on a 4x4 shift, a 3x5 adder with a
128-bit stream, an 8x4 adder tree, a 16x16 shift and an 8x8 mult core with a 32-bit stream):
157 exact; within 1 % on the tree's short blocks; within 3.6 % where a result vector takes
two beats (the 8x8 core on its 32-bit stream). With the fused tail (core 1.0: 7 shapes, each
plain, with a residual, with a residual, clamp and shift table, with a clamp; sent whole and
reusing its weights): the 4x4 shift and the 3x5 adder cores, 112 runs, all exact; the 8x8 mult
core on a 32-bit stream within 4.6 %, as without a residual. ``tests/test_run_graph.py``
checks a tolerance of 5 % per node. The aligned shortcut's and the pool's terms of core 2.0
(the aligner's holds and watermark, the pool's ``pool_latency`` and ``NT`` vectors), measured
against ``BUSY_CYCLES`` on the 4x4 shift core (64-bit stream) and the 3x5 adder core (128-bit):
20 runs (aligned shortcuts with offsets inside a vector and strides 1 to 3, pools, both,
compute- and stream-bound, reusing), all exact (``tests/test_device_v2.py``; without the
holds the stream-bound ones are 15 % short). A layer with neither costs what it did under
core 1.0 but the setup's five new steps (``tests/test_run_graph.py``'s 5 % holds). Multi-engine
cores (interface 2.1, ``tests/test_device_v21.py``: a shift array, an adder tree and a mult
array folded to 2 of 4 columns on a 64-bit stream; a 12-column shift array, an adder folded
to 6 and a mult tree folded to 3 on a 32-bit stream; 6 layer kinds, 72 runs): exact on every
array and folded engine whose result vector takes no more beats than its cycles per vector,
the folded ones included (36 runs); the tree and the serializer-bound runs carry the
single-engine model's errors (within 0.5 % and 1.8 %).

NumPy only.
"""

import numpy as np

from ..params.core_config import (CoreConfig, DESC_BITS, ISSUE_FIFO_DEPTH, SETUP_STEPS,
                                  WINDOW_LATENCY)
from ..params.tap_walk import tap_reads
from ..params.manifest import pool_latency, post_latency
from .stream_format import stream_order


__all__ = ["setup_cycles", "run_cycles", "run_terms", "ISSUE_TO_ENGINE",
           "END_CYCLES", "START_CYCLES", "SHORTCUT_TO_RETIRE", "SHORTCUT_HOLD_CYCLES", "RESIDENT_SHORTCUT_START",
           "QUIET_END_CYCLES", "QUIET_POOL_END_CYCLES",
           "stream_layout", "shortcut_needs", "shortcut_holds", "taps_cycles"]

#: Cycles from a vector's issue to its handshake with the engine (S1, S2, the FIFO).
ISSUE_TO_ENGINE = 3
#: Cycles after the last result beat's stage until ``STATUS.busy`` falls (output FIFO,
#: serializer register, the end of the run).
END_CYCLES = 3
#: Interface 2.2, ``quiet``: cycles after the last result's write into the bank until
#: ``STATUS.busy`` falls (no output FIFO or serializer; measured on the simulated board).
QUIET_END_CYCLES = END_CYCLES - 1
#: Interface 2.2, ``quiet`` with a global pool: cycles after the ``NT`` pooled vectors' writes
#: (one per cycle) until ``STATUS.busy`` falls (measured on the simulated board).
QUIET_POOL_END_CYCLES = 1
#: The core's start, after ``CONTROL.start``, before the first beat is taken.
START_CYCLES = 1
#: Earliest retire of a final vector relative to the ready time of its SHORTCUT vector (the
#: cycle an issue could use an ACTS vector arriving there): one cycle sooner, since the retire
#: compares the loader's pointer combinationally, with no issue stage (measured on the
#: simulated board).
SHORTCUT_TO_RETIRE = -1
#: Cycles the loader holds the next SHORTCUT vector after a kept source pixel's last one
#: while the shortcut aligner writes the pixel's carried tile (``short_off % cols != 0`` and
#: ``short_off // cols + nts < NT``): ``ShortcutAligner.hold`` of ``rtl/stream_loader.py``.
SHORTCUT_HOLD_CYCLES = 1
#: Interface 2.2, ``short_resident``: the cycle (from ``t_run``) at which the bank's reader
#: delivers the shortcut source's first vector to the aligner; one more per cycle after it,
#: with the aligner's holds (not yet measured on the board).
RESIDENT_SHORTCUT_START = 1
#: Largest operand bit the setup's multiplier walks (16-bit second operands).
_MUL_BITS = 16


def _setup_operands(cfg, g):
    e = cfg.engine
    return {"in_h": g["in_h"], "in_w": g["in_w"], "in_c": g["in_c"], "out_c": g["out_c"],
            "out_h": g["out_h"], "out_w": g["out_w"], "kernel_h": g["kernel_h"],
            "kernel_w": g["kernel_w"], "stride_h": g["stride_h"], "stride_w": g["stride_w"],
            "short_c": g["short_c"], "short_stride": g["short_stride"], "R": e.rows,
            "C": e.cols}


def setup_cycles(cfg: CoreConfig, g):
    """Cycles of the layer setup for geometry ``g``: the sequential unit of
    ``rtl/layer_setup.py``, step by step (module docstring, item 1)."""
    e = cfg.engine
    v = _setup_operands(cfg, g)

    def operand(name):
        if name.endswith("+R-1"):
            return operand(name[:-4]) + e.rows - 1
        if name.endswith("+C-1"):
            return operand(name[:-4]) + e.cols - 1
        if name.endswith("-1"):
            return operand(name[:-2]) - 1
        return v[name]

    cycles = 2                                   # IDLE -> RUN, and CHECK
    for result, op, a, b in SETUP_STEPS:
        bv = operand(b)
        if op == "mul":
            cycles += max(1, min(int(bv).bit_length(), _MUL_BITS)) + 1
            v[result] = operand(a) * bv
        else:
            cycles += (1 if bv & (bv - 1) == 0 else 17) + 1
            v[result] = operand(a) // bv
    return cycles


def stream_layout(cfg, g, reuse, first_acts, *, cycles=False):
    """Beat offsets of the segments the run's stream carries after the descriptor (in
    :func:`~mulfree.host.stream_format.stream_order`; ``first_acts`` ACTS before the weights),
    and the beats they take in all (headers included).

    With ``cycles`` the offsets count cycles instead: a SHORTCUT segment takes its beats and
    the aligner's holds (:func:`shortcut_holds`).

    Returns
    -------
    (dict, int)
        ``{type: [(first vector, vectors, offset)]}``, ``offset`` the beat (counted from 0
        after the descriptor, the segment's header at ``offset - 1``) of the segment's first
        vector's first beat; and the total.
    """
    per = {t: cfg.beats(b) for t, b in cfg.vector_bits.items()}
    layout, beat = {}, 0
    for kind, start, count in stream_order(g, reuse=reuse, first_acts=first_acts):
        layout.setdefault(kind, []).append((start, count, beat + 1))
        beat += 1 + count * per[kind]
        if cycles and kind == "SHORTCUT":
            beat += int(shortcut_holds(cfg, g, start, count))
    return layout, beat


def _holding(cfg, g):
    """Whether the aligner writes a carried tile after each kept source pixel."""
    c = cfg.engine.cols
    return bool(g["scv"]) and g["short_off"] % c != 0 and \
        g["short_off"] // c + g["nts"] < g["NT"]


def _kept_below(g, p):
    """Kept source pixels (``(oy*s, ox*s)``: those an output pixel reads) among the source
    pixels ``0 .. p - 1`` (``p`` an int array), in the pixel-major source order."""
    s, sw = g["short_stride"], g["SW"]
    y, x = np.asarray(p, dtype=np.int64) // sw, np.asarray(p, dtype=np.int64) % sw
    rows = np.minimum((y + s - 1) // s, g["out_h"])
    in_row = (y % s == 0) & (y // s < g["out_h"])
    return rows * g["out_w"] + np.where(in_row, np.minimum((x + s - 1) // s, g["out_w"]), 0)


def shortcut_holds(cfg, g, start, count):
    """Hold cycles among the SHORTCUT vectors ``start .. start + count - 1`` (ints or int
    arrays): one (:data:`SHORTCUT_HOLD_CYCLES`) after every kept source pixel's last vector
    that another of them follows; 0 when the aligner never holds."""
    start = np.asarray(start, dtype=np.int64)
    if not _holding(cfg, g):
        return np.zeros(start.shape, dtype=np.int64)
    end = np.maximum(start + np.asarray(count, dtype=np.int64) - 1, start)
    nts = g["nts"]
    return SHORTCUT_HOLD_CYCLES * (_kept_below(g, end // nts) - _kept_below(g, start // nts))


def shortcut_needs(cfg, g, pix):
    """SHORTCUT vectors that must have arrived before the output pixels ``pix`` (an int
    array) are aligned: all ``nts`` of their source pixel ``(oy*s, ox*s)`` (the aligner's
    watermark counts whole pixels)."""
    pix = np.asarray(pix, dtype=np.int64)
    s = g["short_stride"]
    oy, ox = pix // g["out_w"], pix % g["out_w"]
    return ((oy * s) * g["SW"] + ox * s + 1) * g["nts"]


def _ready_time(layout, kind, per, need, holds=None):
    """Cycle (from ``t_run``) at which the first ``need`` vectors of ``kind`` are loaded
    (``need`` an int array; 0 or less: at once); ``holds(start, n)``: extra cycles among a
    segment's first ``n`` vectors (the SHORTCUT aligner's)."""
    need = np.asarray(need, dtype=np.int64)
    out = np.zeros(need.shape, dtype=np.int64)
    for start, count, offset in layout.get(kind, []):
        inside = (need > start) & (need <= start + count)
        ready = offset + (need - start) * per
        if holds is not None:
            ready = ready + holds(start, np.clip(need - start, 0, count))
        out = np.where(inside, ready, out)
    return out


def run_terms(cfg: CoreConfig, g):
    """``TERMS`` of one run of geometry ``g``: ``rows*cols`` per vector the engine takes on a
    convolution (``NT*KT*M`` vectors) and per emitted vector of a taps run (``NT*M``, ``KT``
    1), ``cols`` (the lanes) per vector the lane unit takes on a window run
    (``NT*kernel_h*kernel_w*M``)."""
    lanes = g.get("window") and not g.get("taps")
    per = cfg.engine.cols if lanes else cfg.engine.rows * cfg.engine.cols
    return g["NT"] * g["KT"] * g["M"] * per


def run_cycles(cfg: CoreConfig, g, *, reuse=False, shift=False, first_acts=None, engine=None):
    """Estimated ``BUSY_CYCLES`` of one run of a layer with geometry ``g`` on ``cfg``.

    Parameters
    ----------
    cfg : CoreConfig
    g : dict
        :func:`~mulfree.host.core_layer.layer_geometry` of the run's layer.
    reuse : bool
        The run reuses the previous run's weights (sends no PARAMS, SHIFT or WEIGHTS).
    shift : bool
        The layer has a shift table.
    first_acts : int or None
        ACTS vectors sent before the weights (``stream_format.first_block_acts``); ``None``:
        all of them.
    engine : int or None
        The engine the run uses; ``None``: ``g["engine"]`` (0 if ``g`` has none).

    Returns
    -------
    int
        The estimate (module docstring, which gives its measured accuracy).
    """
    k = g.get("engine", 0) if engine is None else engine
    if g.get("taps"):
        return taps_cycles(cfg, g, reuse=reuse, first_acts=first_acts, engine=k)
    e = cfg.engines[k]
    lanes = g.get("window")                   # a window run: the lane unit, not the engine
    f = 1 if lanes else cfg.folds(k)          # cycles per input vector
    acts = g["counts"]["ACTS"]
    first_acts = acts if first_acts is None else int(first_acts)
    per = {t: cfg.beats(b) for t, b in cfg.vector_bits.items()}
    layout, stream_end = stream_layout(cfg, g, reuse, first_acts, cycles=True)
    residual = g["scv"] > 0
    if residual and g.get("short_resident"):
        # The bank's reader feeds the aligner one source vector per cycle from t_run.
        layout["SHORTCUT"] = [(0, g["scv"], RESIDENT_SHORTCUT_START)]
        per = dict(per, SHORTCUT=1)
    pool = bool(g.get("global_pool"))
    quiet = bool(g.get("quiet"))
    # The aligner's holds, and its watermark one cycle after a pixel's carried tile.
    holds = lambda start, n: shortcut_holds(cfg, g, start, n)          # noqa: E731
    late = SHORTCUT_HOLD_CYCLES if _holding(cfg, g) else 0
    t_run = START_CYCLES + 1 + cfg.beats(DESC_BITS) + setup_cycles(cfg, g)
    # Weight rows per tile: a depthwise pass takes one row, max and sum none.
    rows = (1 if lanes == "depthwise" else 0) if lanes else e.rows
    mb, m = g["m_block"], g["M"]
    nt_count, kt_count, ct = g["NT"], g["KT"], g["CT"]
    window = cfg.hazard_window
    lat = WINDOW_LATENCY if lanes else cfg.engine_latency(k)
    post = post_latency(cfg)
    # Result beats per vector on m_axis: none when quiet (the serializer never binds).
    nb = 0 if quiet else cfg.beats(cfg.vector_bits["OUT"])
    queue = cfg.out_vectors + post + 1
    free_delay = rows - 1 if e.arch != "tree" or f > 1 else 1
    row = g["in_w"] * ct
    extra = cfg.shift_reach * (row + ct) if shift else 0
    # Per pass of a block: the kernel offset of its reads; a convolution's passes read the
    # same offsets for every nt (kt: ky, kx, ct), a window run's pass (nt, ky, kx) lane j
    # reads channel tile nt.
    kts = np.arange(nt_count * kt_count if lanes else kt_count)
    if lanes:
        kyx, cts = kts % kt_count, kts // kt_count
    else:
        kyx, cts = kts // ct, kts % ct
    ky, kx = kyx // g["kernel_w"], kyx % g["kernel_w"]
    acts_done = int(_ready_time(layout, "ACTS", per["ACTS"], [acts])[0]) if acts else 0
    # Per weight tile (pass order within a block): when its first and last rows are loaded.
    tiles = np.arange(nt_count * kt_count)
    if reuse or rows == 0:
        w_first = w_last = np.zeros(len(tiles), dtype=np.int64)
    else:
        w_first = _ready_time(layout, "WEIGHTS", per["WEIGHTS"], tiles * rows + 1)
        w_last = _ready_time(layout, "WEIGHTS", per["WEIGHTS"], (tiles + 1) * rows)
    # The first vector's earliest entry; a window run's first pass may need neither a weight
    # row (max, sum) nor an activation (all padding), and enters one cycle sooner than a
    # convolution's could (measured on the simulated board).
    entry = t_run + ISSUE_TO_ENGINE + (0 if lanes else 1)
    last_end = entry                           # engine entry after the last vector so far
    tile_free = t_run + 1                      # when the engine's shadow tile may load
    feeder = t_run + 1                         # when the weight feeder may push a row
    out_free = 0                               # when the serializer has sent everything
    tile = 0
    for b0 in range(0, m, mb):
        blen = min(mb, m - b0)
        pix = np.arange(b0, b0 + blen)
        oy, ox = pix // g["out_w"], pix % g["out_w"]
        if t_run + acts_done + ISSUE_TO_ENGINE > last_end:
            iy = oy[None, :] * g["stride_h"] - g["pad_h"] + ky[:, None]
            ix = ox[None, :] * g["stride_w"] - g["pad_w"] + kx[:, None]
            far = iy * row + ix * ct + cts[:, None] + extra
            need = np.minimum(far + 1, acts)
            ready = _ready_time(layout, "ACTS", per["ACTS"], need)
            act_start = (ready - np.arange(blen)[None, :] * f).max(axis=1)
            act_first = ready[:, 0]
        else:
            act_start = act_first = np.zeros(len(kts), dtype=np.int64) - (1 << 40)
        for nt in range(nt_count):
            for kt in range(kt_count):
                pi = nt * kt_count + kt if lanes else kt
                # The weight tile: rows k*R .. k*R + R - 1 of the pass order (a depthwise
                # pass: row k, taken by the lane unit with the pass's first vector, no shadow
                # tile; max and sum: none).
                k = tile % len(tiles)
                pending = -(1 << 40)
                if rows:
                    load = max(tile_free, feeder, t_run + int(w_first[k]) + 1)
                    pending = max(load + rows, t_run + int(w_last[k]) + 2)
                    feeder = pending
                first = max(last_end, pending + 1, t_run + int(act_first[pi]) + ISSUE_TO_ENGINE)
                if kt > 0 and blen < window:
                    # The previous pass's last vector (entered at last_end - f) has left.
                    first = max(first, last_end - f + lat + ISSUE_TO_ENGINE + 2)
                start = max(first, t_run + int(act_start[pi]) + ISSUE_TO_ENGINE)
                end = start + blen * f               # the next vector's earliest entry
                if kt == kt_count - 1:
                    o_start = max(out_free, first + lat + post)
                    if residual:
                        # Vector i retires once its pixel is aligned, and after the one before
                        # it: the engine stalls as a whole.
                        sc = t_run + SHORTCUT_TO_RETIRE + late + _ready_time(
                            layout, "SHORTCUT", per["SHORTCUT"], shortcut_needs(cfg, g, pix),
                            holds)
                        o_start = max(o_start, int(sc[0]) + post)
                        sc_last = int((sc + np.arange(blen - 1, -1, -1) * f).max())
                        end = max(end, sc_last - lat + f)
                    out_free = max(o_start + blen * nb, end - f + lat + post + nb)
                    if nb > f and not pool:
                        # The output FIFO is full: the engine stalls until the pass's last
                        # vector can retire.
                        retire_last = o_start + (blen - 1 - queue) * nb
                        end = max(end, retire_last - lat + f)
                # The engine's shadow tile frees free_delay cycles after the tile is taken;
                # the lane unit's pending row reloads in the cycle after the pass's first
                # vector took it (two 1-pixel passes are 2 cycles apart).
                tile_free = start if lanes else first + free_delay
                last_end = end
                tile += 1
    if pool:
        # The sums take one vector per cycle; the NT pooled vectors then leave serially.
        # Quiet: the NT pooled vectors are written into the bank, one per cycle.
        done = last_end - f + lat + post + pool_latency(cfg) + \
            (nt_count + QUIET_POOL_END_CYCLES if quiet else nt_count * nb + END_CYCLES)
    else:
        done = max(last_end - f + lat + post + nb, out_free) + \
            (QUIET_END_CYCLES if quiet else END_CYCLES)
    # Nor before the stream's last beat, or the bank reader's last shortcut vector (the source
    # pixels after the last one an output reads are taken too).
    last_short = int(_ready_time(layout, "SHORTCUT", per["SHORTCUT"], [g["scv"]], holds)[0]) \
        if residual else 0
    done = max(done, t_run + stream_end, t_run + last_short)
    return int(done)


def taps_cycles(cfg: CoreConfig, g, *, reuse=False, first_acts=None, engine=None):
    """Estimated ``BUSY_CYCLES`` of a taps run (``g["taps"]``; module docstring, item 7):
    read by read, each emitted vector's entry into the array and its result's serializer
    slot. Parameters as :func:`run_cycles`."""
    k = g.get("engine", 0) if engine is None else engine
    e = cfg.engines[k]
    acts = g["counts"]["ACTS"]
    first_acts = acts if first_acts is None else int(first_acts)
    per = {t: cfg.beats(b) for t, b in cfg.vector_bits.items()}
    layout, stream_end = stream_layout(cfg, g, reuse, first_acts, cycles=True)
    quiet = bool(g.get("quiet"))
    t_run = START_CYCLES + 1 + cfg.beats(DESC_BITS) + setup_cycles(cfg, g)
    rows, nt_count = e.rows, g["NT"]
    lat, post = cfg.engine_latency(k), post_latency(cfg)
    nb = 0 if quiet else cfg.beats(cfg.vector_bits["OUT"])
    queue = cfg.out_vectors + post + 1
    free_delay = rows - 1
    kernel, stride = (g["kernel_h"], g["kernel_w"]), (g["stride_h"], g["stride_w"])
    walk = list(tap_reads(kernel, stride, (g["pad_h"], g["pad_w"]), (g["out_h"], g["out_w"])))
    iy = np.array([r[0] for r in walk], dtype=np.int64)
    ix = np.array([r[1] for r in walk], dtype=np.int64)
    emits = [r[2] is not None for r in walk]
    tiles = np.arange(nt_count)
    if reuse:
        w_first = w_last = np.zeros(nt_count, dtype=np.int64)
    else:
        w_first = _ready_time(layout, "WEIGHTS", per["WEIGHTS"], tiles * rows + 1)
        w_last = _ready_time(layout, "WEIGHTS", per["WEIGHTS"], (tiles + 1) * rows)
    feeder = tile_free = t_run + 1
    t = t_run                            # the next read's earliest cycle
    reads = []                           # (cycle, entry or None) of the reads in flight
    entry = out = -(1 << 40)             # the last vector's entry, its result's serializer start
    outs = []                            # serializer starts of every result so far
    for nt in range(nt_count):
        need = np.minimum((iy * g["in_w"] + ix) * g["CT"] + nt + 1, acts)
        ready = t_run + _ready_time(layout, "ACTS", per["ACTS"], need)
        gate = None
        for i, emit in enumerate(emits):
            t = max(t, int(ready[i]))
            # The credit: the reads in S1 and S2, and the emitted vectors in the FIFO (read
            # before them, entering the array at or after t), below the FIFO's depth.
            while sum(1 for c, n in reads if c >= t - 2 or n is not None and n >= t - 1) \
                    >= ISSUE_FIFO_DEPTH:
                t += 1
            n = None
            if emit:
                first = gate is None
                if first:
                    # The tile's weights: loaded into the shadow once arrived and free.
                    load = max(tile_free, feeder, t_run + int(w_first[nt]) + 1)
                    feeder = max(load + rows, t_run + int(w_last[nt]) + 2)
                    gate = feeder + 1
                n = max(t + ISSUE_TO_ENGINE, entry + 1, gate)
                if nb > 1 and len(outs) >= queue:
                    # The result FIFO is full: the engine waits for a result to leave.
                    n = max(n, outs[-queue] - lat)
                if first:
                    tile_free = n + free_delay
                entry = n
                out = max(out + nb, n + lat + post)
                outs.append(out)
            reads = [(c, m) for c, m in reads if c >= t - 1 or m is not None and m >= t] + \
                [(t, n)]
            t += 1
    if quiet:
        done = entry + lat + post + QUIET_END_CYCLES
    else:
        done = max(entry + lat + post + nb, out + nb) + END_CYCLES
    return int(max(done, t_run + stream_end))
