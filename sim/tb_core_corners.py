"""Directed corner scenarios of the core's layer controller, on its generated Verilog.

Where :mod:`mulfree.sim.tb_core` runs random layers in the packer's order, this module pins
down the corners of ``docs/interface.md`` one by one, each result bit-exact against the golden
model (:func:`mulfree.host.layer_stream.expected_beats`):

* ``packet_orders``: every order of the four data packets after the descriptor (PARAMS last
  included; SHIFT last on one tile), each layer with new post-processing parameters, so a
  result that retires before its PARAMS arrived reads the previous layer's table;
* ``chunkings``: every data packet cut into one-vector packets, interleaved; packet cuts at
  the first block's last activation and one vector either side; tensors exactly filling the
  feature-map and weight buffers, cut at block and tile boundaries; results exactly filling
  the output buffer under backpressure;
* ``block_sizes``: ``m_block`` at 1, the hazard window and one either side, ``acc_entries``;
  pixel counts a multiple of ``m_block`` and one more or less; output backpressure piling
  vectors up behind the final passes;
* ``tile_loads``: one-pixel blocks, so weight tiles follow each other as fast as the engine
  takes them, with a tile's input rows exactly ``rows`` and ``rows - 1``;
* ``descriptor_fields``: each field of the descriptor at its limit (a correct run) and one past
  it (``DESCRIPTOR`` or ``TOO_BIG``), one field at a time, the fused tail's (clamp, residual
  shifts, fields without their flag, reserved bits, an engine the core lacks (``ENGINE``),
  the shortcut buffer's size) included, and on a one-bank core each chaining flag (RESIDENT);
* ``stream_errors``: ``PACKET``, ``SHORT``, ``LONG``, ``OVERRUN``, ``DESC_IN_RUN`` and
  ``SHIFT_VALUE`` by each rule and each packet type (SHORTCUT's ``OVERRUN`` too), ``REUSE``
  by each remembered size; after every error a correct layer.

``MULFREE_SEED`` varies the data, never the corners.
"""

import itertools

import numpy as np

import cocotb
from cocotb.triggers import ClockCycles, SimTimeoutError, with_timeout

from mulfree.params.core_config import (DESC_FIELDS, DESC_FLAGS, ISSUE_FIFO_DEPTH,
                                        PACKET_TYPES, res_shift_range)
from mulfree.params.layer_golden import PostParams, ResidualParams
from mulfree.host.layer_stream import Layer, Packet, expected_beats, layer_geometry
from mulfree.host.stream_format import (act_rows, descriptor_words_unchecked, first_block_acts,
                                        pack_vector, params_vectors, shift_vectors,
                                        shortcut_vectors, vector_beats, weight_rows)
from mulfree.sim.tb_core import TB, random_layer
from mulfree.sim.tb_core_layers import with_tail


__all__ = ["SCENARIOS", "layer_vectors", "packets_of", "run_packets", "expect_error"]

#: The data packet types, in the packer's order.
DATA = ("PARAMS", "SHIFT", "WEIGHTS", "ACTS")
#: The cocotb tests of this module.
SCENARIOS = ("packet_orders", "chunkings", "block_sizes", "tile_loads", "descriptor_fields",
             "stream_errors")


# Packets -------------------------------------------------------------------------------------

def layer_vectors(cfg, layer, g=None):
    """``{type: [vector, ...]}`` of every packet type ``layer`` sends (DESC unchecked, so a
    test may change ``g``'s fields to make a bad descriptor)."""
    g = layer_geometry(cfg, layer) if g is None else g
    e = cfg.engine
    out = {"DESC": [pack_vector(descriptor_words_unchecked(layer, g), 32)]}
    if not layer.reuse_weights:
        out["PARAMS"] = params_vectors(cfg, layer, g)
        if layer.shifts is not None:
            out["SHIFT"] = shift_vectors(cfg, layer, g)
        out["WEIGHTS"] = [pack_vector(r, e.code_width)
                          for r in weight_rows(cfg, np.asarray(layer.w_codes), g)]
    out["ACTS"] = [pack_vector(v, e.act_bits) for v in act_rows(cfg, layer.x, g)]
    if layer.residual is not None:
        out["SHORTCUT"] = [pack_vector(v, e.act_bits) for v in shortcut_vectors(cfg, layer, g)]
    return out


def packet(cfg, kind, vectors, *, count=None):
    """One packet of ``kind`` carrying ``vectors``; ``count`` overrides the header's count."""
    beats = [PACKET_TYPES[kind] | (len(vectors) if count is None else count) << 8]
    for v in vectors:
        beats += vector_beats(cfg, v, cfg.vector_bits[kind])
    return Packet(kind, len(vectors), beats)


def packets_of(cfg, vectors, kind, cuts=()):
    """The vectors of ``kind`` as packets cut before each index of ``cuts``."""
    vs = vectors.get(kind, [])
    bounds = [0] + sorted(c for c in set(cuts) if 0 < c < len(vs)) + [len(vs)]
    return [packet(cfg, kind, vs[a:b]) for a, b in zip(bounds, bounds[1:]) if b > a]


def singles(cfg, vectors, kind):
    """The vectors of ``kind``, one packet each."""
    return [packet(cfg, kind, [v]) for v in vectors.get(kind, [])]


# Runs ----------------------------------------------------------------------------------------

#: Idle cycles before a run's last packet: long enough for everything the other packets
#: allow to be computed, so a result that does not wait for the last packet shows.
LATE = 120


async def send_late(tb, packets, late):
    """Send ``packets``, the last one ``late`` cycles after the others have gone."""
    await tb.send_packets(packets[:-1])
    if late:
        await tb.source.wait()
        await ClockCycles(tb.dut.clk, late)
    await tb.send_packets(packets[-1:])


async def run_packets(tb, layer, packets, *, what, late=LATE):
    """Start, send ``packets`` (the last one ``late`` cycles after the others), receive and
    compare every result beat with the golden model."""
    cfg = tb.cfg
    assert await tb.control("start") == 0, f"{what}: start refused"
    cocotb.start_soon(send_late(tb, packets, late))
    try:
        frame = await with_timeout(tb.sink.recv(), 4_000_000, "ns")
    except SimTimeoutError:
        raise AssertionError(f"{what}: no result packet within 400000 cycles (STATUS "
                             f"0x{await tb.read('STATUS'):x}, ERROR 0x{await tb.read('ERROR'):x}"
                             f")") from None
    got = tb.beats_of(frame)
    await tb.wait_done()
    code = await tb.get("ERROR", "core_code")
    assert code == 0, f"{what}: the core stopped with error {code}"
    want = expected_beats(cfg, layer)
    assert len(got) == len(want), f"{what}: {len(got)} result beats, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"{what}: result beat {i} of {len(want)}: got 0x{g:x}, expected 0x{w:x}"


async def run_in_order(tb, layer, order, *, what, cuts=None):
    """``layer`` with its data packets in the type order ``order`` (cut at ``cuts[type]``)."""
    vs = layer_vectors(tb.cfg, layer)
    packets = [packet(tb.cfg, "DESC", vs["DESC"])]
    for kind in order:
        packets += packets_of(tb.cfg, vs, kind, (cuts or {}).get(kind, ()))
    await run_packets(tb, layer, packets, what=what)


async def expect_error(tb, frames, name, what):
    """Send raw ``frames`` (lists of beats, tlast on each one's last); expect error ``name``,
    done and idle; the rest of the bad layer is dropped, never stuck."""
    assert await tb.control("start") == 0
    for beats in frames:
        await tb.source.send(tb.frame(beats))
    await tb.wait_done(timeout_cycles=20_000)
    code = await tb.get("ERROR", "core_code")
    assert code == tb.core_errors[name], \
        f"{what}: error {code}, expected {name} ({tb.core_errors[name]})"
    assert await tb.get("STATUS", "error") == 1, f"{what}: STATUS.error not set"
    assert await tb.get("STATUS", "idle") == 1, f"{what}: not idle after the error"
    await with_timeout(tb.source.wait(), 200_000, "ns")
    await ClockCycles(tb.dut.clk, 4)
    tb.sink.clear()


def new_post(rng, n):
    """Post-processing parameters unlike the previous layer's (a stale table shows)."""
    return PostParams(bias=rng.integers(-200, 200, n), shift=rng.integers(0, 4, n),
                      relu=np.zeros(n, dtype=bool))


def matmul(cfg, rng, m, k, n, **over):
    layer = random_layer(cfg, rng, kind="matmul", m=m, k=k, n=n, **over)
    return Layer(x=layer.x, w_codes=layer.w_codes, post=new_post(rng, n), stride=layer.stride,
                 padding=layer.padding, shifts=layer.shifts, m_block=layer.m_block,
                 reuse_weights=layer.reuse_weights)


async def start(dut):
    tb = TB(dut)
    await tb.reset()
    return tb, np.random.default_rng(tb.seed + 100)


# Scenarios -----------------------------------------------------------------------------------

@cocotb.test()
async def packet_orders(dut):
    """All 24 orders of PARAMS, SHIFT, WEIGHTS, ACTS after the descriptor (PARAMS last in 6:
    each layer's new post-processing table shows a result retired before it is complete)."""
    tb, rng = await start(dut)
    R, C = tb.cfg.engine.rows, tb.cfg.engine.cols
    # Then one channel tile with SHIFT last: the table's only row is written in the cycle
    # before the first read may use it (the issue unit reads the table a cycle ahead).
    for order, in_c in ([(o, R + 1) for o in itertools.permutations(DATA)]
                        + [(o, R) for o in itertools.permutations(DATA) if o[-1] == "SHIFT"]):
        layer = random_layer(tb.cfg, rng, kind="shift", in_c=in_c, h=3, w=3, out_c=C + 1)
        layer = Layer(x=layer.x, w_codes=layer.w_codes, post=new_post(rng, C + 1),
                      shifts=layer.shifts)
        await run_in_order(tb, layer, order, what=f"order {'/'.join(order)}, in_c {in_c}")
    # PARAMS cut: all but the last channel early, the last one after everything else.
    layer = matmul(tb.cfg, rng, 6, R + 1, C)
    vs = layer_vectors(tb.cfg, layer)
    packets = ([packet(tb.cfg, "DESC", vs["DESC"])] + packets_of(tb.cfg, vs, "PARAMS", [C - 1])
               [:1] + packets_of(tb.cfg, vs, "WEIGHTS") + packets_of(tb.cfg, vs, "ACTS")
               + [packet(tb.cfg, "PARAMS", vs["PARAMS"][C - 1:])])
    await run_packets(tb, layer, packets, what="last PARAMS channel last")


@cocotb.test()
async def chunkings(dut):
    """One-vector packets; cuts at the first block's end; buffers filled exactly."""
    tb, rng = await start(dut)
    cfg = tb.cfg
    R, C = cfg.engine.rows, cfg.engine.cols
    layer = random_layer(cfg, rng, kind="shift", in_c=R + 1, h=3, w=4, out_c=C + 1,
                         m_block=5)
    vs = layer_vectors(cfg, layer)
    desc = packet(cfg, "DESC", vs["DESC"])
    single = {k: singles(cfg, vs, k) for k in DATA}
    # Round robin over the types, one vector at a time, in both type orders; the second with
    # an idle cycle after every beat.
    for order, idle in ((DATA, None), (DATA[::-1], [0, 1])):
        rr = [p for group in itertools.zip_longest(*(single[k] for k in order)) for p in group
              if p is not None]
        tb.pause_streams(idle, None)
        await run_packets(tb, layer, [desc] + rr, what=f"one-vector packets {order}, idle "
                                                       f"{idle}")
    tb.pause_streams()
    # Activations cut at the first block's last vector and one either side, weights between.
    conv = random_layer(cfg, rng, kind="conv", in_c=R + 1, h=5, w=5, out_c=C + 1,
                        padding=(1, 1), m_block=7)
    first = first_block_acts(conv, layer_geometry(cfg, conv))
    for cut in (first - 1, first, first + 1):
        cvs = layer_vectors(cfg, conv)
        acts = packets_of(cfg, cvs, "ACTS", [cut])
        packets = ([packet(cfg, "DESC", cvs["DESC"])] + packets_of(cfg, cvs, "PARAMS")
                   + acts[:1] + packets_of(cfg, cvs, "WEIGHTS") + acts[1:])
        await run_packets(tb, conv, packets, what=f"ACTS cut at {cut} (first block {first})")
    # The feature-map buffer exactly full, ACTS cut at every block (acc_entries pixels).
    full = matmul(cfg, rng, cfg.fmap_vectors, R, 1, m_block=cfg.acc_entries)
    await run_in_order(tb, full, DATA, what="fmap_vectors activations",
                       cuts={"ACTS": range(0, cfg.fmap_vectors, cfg.acc_entries)})
    # The weight buffer as full as whole tiles make it, one tile per packet.
    wl = weight_limit_layer(cfg, rng, fit=True)
    rows = layer_geometry(cfg, wl)["counts"]["WEIGHTS"]
    await run_in_order(tb, wl, DATA[::-1], what=f"{rows} weight rows of {cfg.weight_rows}",
                       cuts={"WEIGHTS": range(0, rows, R)})
    # Results exactly filling the output buffer, and one more, held back by the host.
    for n_out in (cfg.out_vectors, cfg.out_vectors + 1):
        lay = matmul(cfg, rng, n_out, R + 1, C)
        tb.pause_streams(None, [1] * 3 * n_out + [0] * 2)
        await run_in_order(tb, lay, DATA, what=f"{n_out} result vectors, out_vectors "
                                               f"{cfg.out_vectors}")
        tb.pause_streams()


@cocotb.test()
async def block_sizes(dut):
    """m_block at 1, the hazard window and one either side, acc_entries; M a multiple of it
    and one more or less; two reduction and two output tiles; bursts of output backpressure."""
    tb, rng = await start(dut)
    cfg = tb.cfg
    R, C = cfg.engine.rows, cfg.engine.cols
    window = cfg.hazard_window
    # Vectors the pipeline holds at most (engine and issue FIFO): blocks this long and
    # shorter are where the hazard check matters.
    held = cfg.engine.latency + ISSUE_FIFO_DEPTH
    sizes = sorted({1, 2, held - 1, held, held + 1, window - 1, window, window + 1,
                    cfg.acc_entries})
    for mb, sink in itertools.product([s for s in sizes if s <= cfg.acc_entries],
                                      (None, [1] * 12 + [0] * 4)):
        for m in (2 * mb - 1, 2 * mb, 2 * mb + 1):
            layer = matmul(cfg, rng, m, R + 1, C + 1, m_block=mb)
            tb.pause_streams(None, sink)
            await run_in_order(tb, layer, DATA, what=f"m_block {mb}, M {m}, sink {sink}")
    tb.pause_streams()
    # A 3x3 convolution whose blocks cut rows unevenly (window pixels, 7 x 6 map).
    conv = random_layer(cfg, rng, kind="conv", in_c=R + 1, h=7, w=6, out_c=C + 1,
                        padding=(1, 1), m_block=min(window, cfg.acc_entries))
    await run_in_order(tb, conv, DATA, what="3x3 conv, window-sized blocks")


@cocotb.test()
async def tile_loads(dut):
    """Weight tiles back to back, each with exactly rows or rows - 1 input rows.

    One-pixel blocks make every vector a new tile; blocks of ``2 * rows + 2`` pixels keep the
    engine busy while the next tile loads, so it starts right behind the current one. Irregular
    output backpressure stalls the engine at every phase of a tile's load: a row whose shadow
    weights are overwritten before the tile's token reached it shows.
    """
    tb, rng = await start(dut)
    cfg = tb.cfg
    R, C = cfg.engine.rows, cfg.engine.cols
    irregular = [int(b) for b in np.random.default_rng(5).random(23) < 0.6]
    for k, mb, sink in itertools.product((R, R - 1, 2 * R - 1), (1, 2 * R + 2),
                                         (None, irregular)):
        if k < 1 or mb > cfg.acc_entries:
            continue
        layer = matmul(cfg, rng, 2 * mb + 1, k, 3 * C, m_block=mb)
        tb.pause_streams(None, sink)
        await run_in_order(tb, layer, ("PARAMS", "ACTS", "WEIGHTS"),
                           what=f"K {k}, rows {R}, blocks of {mb}, sink {sink}")
    tb.pause_streams()
    conv = random_layer(cfg, rng, kind="conv", in_c=R, h=3, w=3, out_c=2 * C, kh=2, kw=2,
                        m_block=1)
    await run_in_order(tb, conv, DATA, what="2x2 conv, one-pixel blocks")


# Descriptor fields ---------------------------------------------------------------------------

def weight_limit_layer(cfg, rng, *, fit):
    """A 1x1 layer with the most weight rows that fit (``fit``), or the fewest that do not,
    within every other limit; a kernel of kh x 1 multiplies the reduction tiles."""
    e = cfg.engine
    best = None
    for kh in range(1, 256):
        for ct in range(1, -(-e.max_k // e.rows) + 1):
            in_c = (ct - 1) * e.rows + 1
            if in_c * kh > e.max_k:
                break
            for nt in range(1, -(-cfg.max_channels // e.cols) + 1):
                rows = nt * kh * ct * e.rows
                ok = rows <= cfg.weight_rows
                if ok != fit:
                    continue
                key = -rows if fit else rows
                if best is None or key < best[0]:
                    best = (key, kh, in_c, (nt - 1) * e.cols + 1)
    _, kh, in_c, out_c = best
    layer = random_layer(cfg, rng, kind="conv", in_c=in_c, h=kh, w=1, out_c=out_c, kh=kh, kw=1)
    return layer


def desc_frame(cfg, layer, **fields):
    """The descriptor packet of ``layer`` with ``fields`` overridden (unchecked); ``flags``
    are OR'd in, the fused tail's fields and ``engine`` (two's complement if negative)
    written over the layer's."""
    g = dict(layer_geometry(cfg, layer))
    flags = fields.pop("flags", 0)
    words_of = {name: (w, lo, width) for w, lo, width, name in DESC_FIELDS}
    raw = {n: fields.pop(n) for n in list(fields) if n in TAIL_FIELDS}
    g.update(fields)
    words = descriptor_words_unchecked(layer, g)
    words[4] |= flags << 16         # the flags field: bits [31:16] of word 4
    for name, value in raw.items():
        w, lo, width = words_of[name]
        mask = (1 << width) - 1
        words[w] = words[w] & ~(mask << lo) | (value & mask) << lo
    return packet(cfg, "DESC", [pack_vector(words, 32)]).beats


#: Descriptor fields of words 5 to 7 (the fused tail and the pool), written raw by
#: :func:`desc_frame`.
TAIL_FIELDS = ("clamp_lo", "clamp_hi", "res_main_shift", "res_short_shift", "res_shift",
               "pool_shift", "engine")
#: Bits of ``flags`` (word 4, bit 16 + n).
RESIDUAL, RES_RELU, CLAMP = 1 << 2, 1 << 3, 1 << 4


@cocotb.test()
async def descriptor_fields(dut):
    """Each descriptor field at its limit (a correct run) and one past it (its error)."""
    tb, rng = await start(dut)
    cfg = tb.cfg
    e = cfg.engine
    R, C = e.rows, e.cols
    good = lambda: matmul(cfg, rng, 2, R + 1, C + 1)      # noqa: E731

    async def refused(layer, name, what, **fields):
        await expect_error(tb, [desc_frame(cfg, layer, **fields)], name, what)
        await run_in_order(tb, good(), DATA, what=f"after {what}")

    base = random_layer(cfg, rng, kind="conv", in_c=2, h=5, w=6, out_c=3, padding=(1, 1),
                        stride=(2, 1), m_block=4)
    g = layer_geometry(cfg, base)
    # Zero sizes, one field at a time (the other fields consistent).
    for name in ("in_h", "in_w", "in_c", "out_c", "out_h", "out_w", "kernel_h", "kernel_w",
                 "stride_h", "stride_w", "m_block"):
        await refused(base, "DESCRIPTOR", f"{name} = 0", **{name: 0})
    # Output sizes one off the convolution's.
    for name in ("out_h", "out_w"):
        for d in (-1, 1):
            await refused(base, "DESCRIPTOR", f"{name} {d:+d}", **{name: g[name] + d})
    # Padding: kernel - 1 runs, kernel is refused.
    await run_in_order(tb, random_layer(cfg, rng, kind="conv", in_c=2, h=4, w=5, out_c=3,
                                        padding=(2, 2)), DATA, what="pad = kernel - 1")
    await refused(base, "DESCRIPTOR", "pad_h = kernel_h", pad_h=g["kernel_h"])
    await refused(base, "DESCRIPTOR", "pad_w = kernel_w", pad_w=g["kernel_w"])
    # Stride at its 4-bit limit runs.
    await run_in_order(tb, random_layer(cfg, rng, kind="conv", in_c=2, h=16, w=17, out_c=3,
                                        kh=1, kw=2, stride=(15, 15)), DATA, what="stride 15")
    # Reserved flag bits, the lowest and the highest; a one-bank core refuses chaining flags.
    for bit in (max(DESC_FLAGS.values()) + 1, 15):
        await refused(base, "DESCRIPTOR", f"reserved flag bit {bit}", flags=1 << bit)
    for bit in range(DESC_FLAGS["in_bank"], (DESC_FLAGS["short_resident"] + 1) * (
            cfg.fmap_banks < 2)):
        await refused(base, "RESIDENT", f"chaining flag bit {bit}, one bank", flags=1 << bit)
    # Sizes against the core's limits: at the limit runs, one past is TOO_BIG.
    await run_in_order(tb, matmul(cfg, rng, 1, e.max_k, 1), DATA, what=f"K = max_k {e.max_k}")
    over = matmul(cfg, rng, 1, e.max_k + 1, 1)
    await refused(over, "TOO_BIG", "K = max_k + 1")
    await run_in_order(tb, matmul(cfg, rng, 2, 1, cfg.max_channels), DATA,
                       what=f"out_c = max_channels {cfg.max_channels}")
    await refused(matmul(cfg, rng, 2, 1, cfg.max_channels + 1), "TOO_BIG",
                  "out_c = max_channels + 1")
    await run_in_order(tb, random_layer(cfg, rng, kind="shift", in_c=cfg.max_channels, h=1,
                                        w=2, out_c=2), DATA, what="in_c = max_channels, shift")
    await refused(random_layer(cfg, rng, kind="shift", in_c=cfg.max_channels + 1, h=1, w=2,
                               out_c=2), "TOO_BIG", "in_c = max_channels + 1 with a shift")
    await run_in_order(tb, matmul(cfg, rng, cfg.acc_entries + 1, 1, 1,
                                  m_block=cfg.acc_entries), DATA, what="m_block = acc_entries")
    await refused(base, "TOO_BIG", "m_block = acc_entries + 1", m_block=cfg.acc_entries + 1)
    # The feature-map buffer: exactly full runs in chunkings; one vector more is refused.
    await refused(matmul(cfg, rng, cfg.fmap_vectors + 1, 1, 1), "TOO_BIG",
                  "fmap_vectors + 1 activations")
    await refused(weight_limit_layer(cfg, rng, fit=False), "TOO_BIG",
                  "more weight rows than weight_rows")
    await tail_fields(tb, rng, refused)


async def tail_fields(tb, rng, refused):
    """The fused tail's fields at their ends (correct runs) and one past (DESCRIPTOR), its
    fields and res_relu without their flag, word 7's engine field (ENGINE), and the shortcut buffer
    exactly full (runs) and one vector over (TOO_BIG)."""
    cfg = tb.cfg
    e = cfg.engine
    lo, hi = e.act_range
    s_lo, s_hi = res_shift_range(e.act_bits)
    base = random_layer(cfg, rng, kind="conv", in_c=2, h=4, w=5, out_c=e.cols + 1,
                        padding=(1, 1), m_block=6)
    ends = (("clamp at the range's ends", (lo, hi), ResidualParams(15, 15, s_hi, True)),
            ("clamp lo = hi", (hi, hi), ResidualParams(0, 15, s_lo, False)),
            ("residual shifts at their ends", None, ResidualParams(15, 0, s_lo, True)))
    for what, clamp, res in ends:
        await run_in_order(tb, with_tail(cfg, base, rng, clamp=clamp, residual=res),
                           DATA + ("SHORTCUT",), what=what)
    clamp = with_tail(cfg, base, rng, clamp=(0, 6))
    res = with_tail(cfg, base, rng, residual=ResidualParams(1, 1, 1))
    for what, layer, fields in (
            ("clamp_lo > clamp_hi", clamp, {"clamp_lo": 7}),
            ("clamp_lo below the activations", clamp, {"clamp_lo": lo - 1}),
            ("clamp_hi above the activations", clamp, {"clamp_hi": hi + 1}),
            ("clamp_lo without flags.clamp", base, {"clamp_lo": -1}),
            ("clamp_hi without flags.clamp", base, {"clamp_hi": 1}),
            ("res_main_shift 16", res, {"res_main_shift": 16}),
            ("res_short_shift 16", res, {"res_short_shift": 16}),
            ("res_shift below -act_bits", res, {"res_shift": s_lo - 1}),
            ("res_shift above act_bits + 16", res, {"res_shift": s_hi + 1}),
            ("res_main_shift without flags.residual", base, {"res_main_shift": 1}),
            ("res_short_shift without flags.residual", base, {"res_short_shift": 1}),
            ("res_shift without flags.residual", base, {"res_shift": -1}),
            ("res_relu without flags.residual", base, {"flags": RES_RELU})):
        await refused(layer, "DESCRIPTOR", what, **fields)
    # Word 7's bits 31:28 are the engine (interface 2.1): engines the core lacks are ENGINE,
    # a descriptor error is reported first.
    n = len(cfg.engines)
    for what, layer, fields, name in (
            (f"engine {n}", base, {"engine": n}, "ENGINE"),
            ("engine 15", res, {"engine": 0xF}, "ENGINE"),
            ("engine 15 and res_shift out of range", res,
             {"engine": 0xF, "res_shift": s_hi + 1}, "DESCRIPTOR")):
        await refused(layer, name, what, **fields)
    # The shortcut buffer: M * NT = shortcut_vectors runs (the shortcut in packets of 7
    # vectors), one pixel more is TOO_BIG.
    nt = 2 if cfg.shortcut_vectors % 2 == 0 else 1
    m = cfg.shortcut_vectors // nt
    full = with_tail(cfg, matmul(cfg, rng, m, 1, (nt - 1) * e.cols + 1,
                                 m_block=cfg.acc_entries), rng,
                     residual=ResidualParams(2, 0, 2, True))
    await run_in_order(tb, full, DATA + ("SHORTCUT",), what=f"{cfg.shortcut_vectors} "
                       f"shortcut vectors", cuts={"SHORTCUT": range(0, cfg.shortcut_vectors, 7)})
    over = with_tail(cfg, matmul(cfg, rng, m + 1, 1, (nt - 1) * e.cols + 1), rng,
                     residual=ResidualParams(2, 0, 2, True))
    await refused(over, "TOO_BIG", "shortcut_vectors + NT shortcut vectors")


# Stream errors -------------------------------------------------------------------------------

@cocotb.test()
async def stream_errors(dut):
    """Every stream error by each rule and each packet type; a correct layer after each."""
    tb, rng = await start(dut)
    cfg = tb.cfg
    e = cfg.engine
    R, C, S = e.rows, e.cols, cfg.stream_width

    def good():
        return matmul(cfg, rng, 2, R + 1, C + 1)

    async def bad(frames, name, what):
        await expect_error(tb, frames, name, what)
        await run_in_order(tb, good(), DATA, what=f"after {what}")

    layer = random_layer(cfg, rng, kind="shift", in_c=R + 1, h=2, w=3, out_c=C + 1)
    vs = layer_vectors(cfg, layer)
    desc = packet(cfg, "DESC", vs["DESC"]).beats
    full = {k: packet(cfg, k, vs[k]).beats for k in DATA}
    before = {k: [full[t] for t in DATA if t != k] for k in DATA}

    # PACKET: unknown types, reserved header bits, count 0, data first, descriptor count.
    for t in (0, 7, 15):
        await bad([desc, [t | 1 << 8, 0]], "PACKET", f"type {t}")
    for bit in (4, 7) + ((32, S - 1) if S > 32 else ()):
        await bad([desc, [full["ACTS"][0] | 1 << bit] + full["ACTS"][1:]], "PACKET",
                  f"reserved header bit {bit}")
    await bad([desc, [PACKET_TYPES["ACTS"], 0]], "PACKET", "data count 0")
    await bad([[PACKET_TYPES["DESC"]] + desc[1:]], "PACKET", "descriptor count 0")
    await bad([[PACKET_TYPES["DESC"] | 2 << 8] + desc[1:] + desc[1:]], "PACKET",
              "descriptor count 2")
    for k in DATA:
        await bad([full[k]], "PACKET", f"{k} before the descriptor")
    # DESC_IN_RUN: a second descriptor after data.
    await bad([desc, full["PARAMS"], desc], "DESC_IN_RUN", "descriptor after PARAMS")
    # SHORT: tlast on a header, on the last beat but one of each type, mid-vector.
    for k in ("DESC",) + DATA:
        beats = desc if k == "DESC" else full[k]
        pre = [] if k == "DESC" else [desc] + before[k]
        await bad(pre + [beats[:1]], "SHORT", f"{k} header with tlast")
        await bad(pre + [beats[:-1]], "SHORT", f"{k} one beat short")
    if cfg.beats(cfg.vector_bits["DESC"]) > 2:
        await bad([desc[:2]], "SHORT", "descriptor cut mid-vector")
    # LONG: no tlast on each type's last beat.
    for k in ("DESC",) + DATA:
        beats = desc if k == "DESC" else full[k]
        pre = [] if k == "DESC" else [desc] + before[k]
        await bad(pre + [beats + beats[1:2]], "LONG", f"{k} without tlast at its end")
    # OVERRUN: one vector more than the layer has of each type, in one packet or in two.
    for k in DATA:
        extra = packet(cfg, k, vs[k] + vs[k][:1]).beats
        await bad([desc] + before[k] + [extra], "OVERRUN", f"{k} + 1 vector")
        await bad([desc] + before[k] + [full[k], packet(cfg, k, vs[k][:1]).beats], "OVERRUN",
                  f"{k} then 1 more vector")
    plain = good()
    pvs = layer_vectors(cfg, plain)
    await bad([packet(cfg, "DESC", pvs["DESC"]).beats, packet(cfg, "SHIFT", [0]).beats],
              "OVERRUN", "SHIFT without flags.shift")
    await bad([packet(cfg, "DESC", pvs["DESC"]).beats, packet(cfg, "SHORTCUT", [0]).beats],
              "OVERRUN", "SHORTCUT without flags.residual")
    # SHORTCUT: one vector more in one packet, or in a packet after all of it.
    res = with_tail(cfg, plain, rng, residual=ResidualParams(1, 1, 1))
    rvs = layer_vectors(cfg, res)
    rest = [packet(cfg, k, rvs[k]).beats for k in ("DESC",) + DATA if k in rvs]
    await bad(rest + [packet(cfg, "SHORTCUT", rvs["SHORTCUT"] + rvs["SHORTCUT"][:1]).beats],
              "OVERRUN", "SHORTCUT + 1 vector")
    await bad(rest + [packet(cfg, "SHORTCUT", rvs["SHORTCUT"]).beats,
                      packet(cfg, "SHORTCUT", rvs["SHORTCUT"][-1:]).beats],
              "OVERRUN", "SHORTCUT then 1 more vector")
    sc = packet(cfg, "SHORTCUT", rvs["SHORTCUT"]).beats
    await bad(rest + [sc[:-1]], "SHORT", "SHORTCUT one beat short")
    await bad(rest + [sc + sc[1:2]], "LONG", "SHORTCUT without tlast at its end")
    # SHIFT_VALUE: dy alone, dx alone, in the first and the last lane, in the second vector.
    for lane, half, vec in ((0, 0, 0), (0, 1, 0), (R - 1, 0, 0), (R - 1, 1, 1)):
        sv = list(vs["SHIFT"])
        field = 4 * lane + 2 * half
        sv[vec] = (sv[vec] & ~(3 << field)) | (2 << field)
        frames = [desc, full["PARAMS"], packet(cfg, "SHIFT", sv).beats]
        await bad(frames, "SHIFT_VALUE", f"{'dx' if half else 'dy'} = -2 in lane {lane} of "
                                         f"vector {vec}")
    # Every accepted entry: (dy, dx) in {-1, 0, 1}^2 on nine channels.
    nine = random_layer(cfg, rng, kind="shift", in_c=9, h=3, w=3, out_c=2)
    nine = Layer(x=nine.x, w_codes=nine.w_codes, post=nine.post,
                 shifts=np.array(list(itertools.product((-1, 0, 1), repeat=2))))
    await run_in_order(tb, nine, DATA, what="all nine shift entries")
    # REUSE: after an error, after a soft reset, and each remembered size differing.
    lay = matmul(cfg, rng, 3, R + 1, C + 1)
    await run_in_order(tb, lay, DATA, what="before reuse")

    def reuse(src, **over):
        return Layer(x=rng.integers(*e.act_range, src.x.shape) if "x" not in over else over["x"],
                     w_codes=over.get("w_codes", src.w_codes), post=over.get("post", src.post),
                     shifts=over.get("shifts", src.shifts), reuse_weights=True)

    async def reuse_frames(layer):
        rv = layer_vectors(cfg, layer)
        return [packet(cfg, "DESC", rv["DESC"]).beats, packet(cfg, "ACTS", rv["ACTS"]).beats]

    await run_in_order(tb, reuse(lay), ("ACTS",), what="reuse of the same sizes")
    # out_c differs, weight rows equal (same output tiles).
    fewer = matmul(cfg, rng, 3, R + 1, C + 1)
    wider = matmul(cfg, rng, 3, R + 1, C + 2)
    await run_in_order(tb, wider, DATA, what="before reuse with other out_c")
    await bad(await reuse_frames(reuse(fewer)), "REUSE", "reuse with out_c - 1, same rows")
    await run_in_order(tb, wider, DATA, what="before reuse with other rows")
    await bad(await reuse_frames(reuse(matmul(cfg, rng, 3, 2 * R + 1, C + 1))), "REUSE",
              "reuse with more weight rows")
    # Shift tiles differ, weight rows equal: a 2x1 kernel on one channel tile against a 1x1
    # kernel on two, with and without a shift.
    one = random_layer(cfg, rng, kind="shift", in_c=R + 1, h=2, w=2, out_c=C)
    await run_in_order(tb, one, DATA, what="before reuse with other shift tiles")
    two = random_layer(cfg, rng, kind="conv", in_c=R, h=3, w=2, out_c=C, kh=2, kw=1)
    await bad(await reuse_frames(reuse(two)), "REUSE", "reuse without the loaded shift table")
    await run_in_order(tb, two, DATA, what="before reuse with a shift table")
    shifted = random_layer(cfg, rng, kind="shift", in_c=R, h=3, w=2, out_c=C, kh=2, kw=1)
    await bad(await reuse_frames(reuse(shifted)), "REUSE", "reuse with a shift table not loaded")
    # After an error and after a soft reset nothing may be reused.
    await run_in_order(tb, lay, DATA, what="before reuse after an error")
    await expect_error(tb, [[9 | 1 << 8, 0]], "PACKET", "error before a reuse")
    await bad(await reuse_frames(reuse(lay)), "REUSE", "reuse after an error")
    await run_in_order(tb, lay, DATA, what="before reuse after a soft reset")
    assert await tb.control("soft_reset") == 0
    await ClockCycles(dut.clk, 4)
    await bad(await reuse_frames(reuse(lay)), "REUSE", "reuse after a soft reset")
