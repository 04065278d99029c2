"""cocotb scenarios of window runs (interface 2.3) on a core with the lane unit.

A window run (descriptor flag ``win_max``, ``win_sum`` or ``depthwise``) reduces every channel
over its output pixel's window on the lane unit; post-processing, the fused tail and chaining
are a layer's. Every result beat is compared with the golden model —
:func:`mulfree.params.window_golden.window_layer` then
:func:`mulfree.params.layer_golden.fused_tail` — never with the RTL's own numbers; TERMS
(``cols`` per vector: ``NT*kk*M*cols``) and BUSY_CYCLES (at least one cycle per vector) are
read back after every run.

The packets are built here from the specification (``docs/interface.md``, the interface 2.3
spec: the descriptor with the window flag, PARAMS ``out_c`` vectors, a depthwise run's
``NT*kk`` WEIGHTS rows — row ``nt*kk + ky*kernel_w + kx``, code ``j`` channel ``nt*C + j``'s
weight at ``(ky, kx)`` in the low bits of a ``code_width`` slot — none for max and sum, and the
ACTS of a convolution) by :func:`pack_window`, independently of the host's packer.

* ``window_runs``: max 2x2/s2, max 3x3/s2/p1, sum 2x2/s2 (AvgPool2d: PARAMS shift
  ``avgpool_post_shift``), depthwise 3x3/s1/p1 and 3x3/s2/p1 with a clamp (ReLU6) and
  2x3/s(1,2)/p(1,0) without on every engine, channels no multiple of ``cols`` (zero lanes), ``m_block`` below the hazard window;
  the second half under random pauses on ``s_axis`` and backpressure on ``m_axis``; a
  depthwise run reusing the previous one's weights; WINDOW.lanes reads ``cols``;
* ``window_chain``: a max pool kept in bank 1 (sent too), a depthwise run on that resident
  input with a clamp, kept and quiet, then a 1x1 convolution on its resident output (sent):
  each compared with the golden model of the chain so far;
* ``window_refused``: DESCRIPTOR for ``in_c != out_c``, two window flags, max with
  ``2*pad > kernel``; OVERRUN for WEIGHTS sent to a max run; a soft reset in the middle of a
  window run; each followed by a good window run;
* ``no_lane_unit`` (a core built with ``window_ops=False``): each window flag is WINDOW (12),
  WINDOW.lanes reads 0, and a convolution runs after each.

``MULFREE_SEED`` varies the data, never the corners.
"""

import dataclasses

import numpy as np

import cocotb
from cocotb.triggers import ClockCycles, with_timeout

from mulfree.params.core_config import (DESC_FIELDS, DESC_FLAGS, DESC_SIGNED, PACKET_TYPES,
                                        WINDOW_FLAGS)
from mulfree.params.layer_golden import PostParams, fused_tail
from mulfree.params.node_check import code_range
from mulfree.params.post_config import bias_range, shift_range, shift_width
from mulfree.params.window_golden import avgpool_post_shift, window_acc, window_layer
from mulfree.host.layer_stream import Packet, expected_beats
from mulfree.host.stream_format import bit_mask, pack_vector, vector_beats
from mulfree.sim.tb_core import TB
from mulfree.sim.tb_core_engines import (engine_layer, engine_view, pack_engine_layer,
                                         run_packets, soft_reset_mid_run)
from mulfree.sim.tb_core_layers import random_pauses


__all__ = ["SCENARIOS", "WindowRun", "pack_window", "window_output", "window_beats",
           "window_runs_of", "make_run", "run_window", "expect_refused"]

#: The cocotb tests of this module (``no_lane_unit`` runs on a core without the lane unit).
SCENARIOS = ("window_runs", "window_chain", "window_refused")
#: Vectors per packet of :func:`pack_window` (ACTS come in several packets).
PACKET_VECTORS = 16
#: The descriptor flag of each window operation.
FLAG = dict(zip(("max", "sum", "depthwise"), WINDOW_FLAGS))


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


@dataclasses.dataclass
class WindowRun:
    """One window run: ``op`` over ``x[C, H, W]`` with its geometry, the depthwise codes
    ``w_codes[C, kh, kw]`` (engine ``engine``'s encoding, signed values for adder and mult),
    post-processing ``post`` and a clamp ``(lo, hi)``."""
    op: str
    x: np.ndarray
    kernel: tuple
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    m_block: int = 8
    engine: int = 0
    w_codes: np.ndarray | None = None
    post: PostParams | None = None
    clamp: tuple | None = None
    reuse_weights: bool = False

    def __post_init__(self):
        self.kernel, self.stride, self.padding = (_pair(self.kernel), _pair(self.stride),
                                                  _pair(self.padding))

    @property
    def out_hw(self):
        (h, w), (kh, kw) = self.x.shape[1:], self.kernel
        (sy, sx), (py, px) = self.stride, self.padding
        return (h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1


def golden_config(cfg, run):
    """The engine whose terms and ranges the golden model takes: the running engine for a
    depthwise run, the post-processing engine (widest accumulator) for max and sum."""
    return cfg.engines[run.engine] if run.op == "depthwise" else cfg.post_engine


def window_output(cfg, run):
    """The run's output ``[C, OH, OW]`` from the golden model: the window run, then the
    tail (the clamp)."""
    e = golden_config(cfg, run)
    v = window_layer(e, run.op, run.x, run.kernel, run.stride, run.padding, run.w_codes,
                     run.post)
    return fused_tail(e.act_bits, v, clamp=run.clamp)


def window_beats(cfg, out, m_block):
    """The result beats of an output ``out[c, OH, OW]`` (``docs/interface.md``, "Results"):
    per block of ``m_block`` pixels, per tile ``nt``, per pixel, ``cols`` lanes of
    ``act_bits`` (0 beyond ``c``)."""
    C, a = cfg.engine.cols, cfg.engine.act_bits
    n, oh, ow = out.shape
    nt = -(-n // C)
    flat = np.zeros((nt * C, oh * ow), dtype=np.int64)
    flat[:n] = out.reshape(n, -1)
    beats = []
    for b in range(0, oh * ow, m_block):
        for t in range(nt):
            for m in range(b, min(oh * ow, b + m_block)):
                beats += vector_beats(cfg, pack_vector(flat[t * C:(t + 1) * C, m], a), C * a)
    return beats


def _packets(cfg, kind, vectors, per=PACKET_VECTORS):
    bits = cfg.vector_bits[kind]
    out = []
    for s in range(0, len(vectors), per):
        chunk = vectors[s:s + per]
        beats = [PACKET_TYPES[kind] | len(chunk) << 8]
        for v in chunk:
            beats += vector_beats(cfg, v, bits)
        out.append(Packet(kind, len(chunk), beats))
    return out


def descriptor(cfg, run, *, flags=(), engine=None, **fields):
    """The DESC vector of ``run`` (``docs/interface.md``, "The descriptor"): its window flag,
    the clamp, ``reuse_weights`` and the further ``flags`` (names); ``fields`` override."""
    c, h, w = run.x.shape
    oh, ow = run.out_hw
    names = {FLAG[run.op], *flags}
    if run.clamp is not None:
        names.add("clamp")
    if run.reuse_weights:
        names.add("reuse_weights")
    lo, hi = run.clamp if run.clamp is not None else (0, 0)
    values = {"in_h": h, "in_w": w, "in_c": c, "out_c": c, "out_h": oh, "out_w": ow,
              "kernel_h": run.kernel[0], "kernel_w": run.kernel[1],
              "stride_h": run.stride[0], "stride_w": run.stride[1],
              "pad_h": run.padding[0], "pad_w": run.padding[1], "m_block": run.m_block,
              "flags": sum(1 << DESC_FLAGS[n] for n in names), "clamp_lo": lo,
              "clamp_hi": hi, "engine": run.engine if engine is None else engine}
    values.update(fields)
    vector = 0
    for word, lo_bit, width, name in DESC_FIELDS:
        value = int(values.get(name, 0))
        assert name in DESC_SIGNED or 0 <= value < 1 << width, f"{name} = {value}"
        vector |= (value & bit_mask(width)) << (word * 32 + lo_bit)
    return vector


def pack_window(cfg, run, *, flags=(), acts=True, weights=None, engine=None, **fields):
    """The packets of ``run``: DESC, PARAMS (``out_c``), WEIGHTS (depthwise: ``NT*kk``
    rows; ``weights`` forces rows of a max or sum run), ACTS (none with ``acts=False``: a
    resident input), in several chunks."""
    C, R = cfg.engine.cols, cfg.engine.rows
    c, h, w = run.x.shape
    nt = -(-c // C)
    e = cfg.engines[run.engine]
    A, sw = cfg.acc_width, shift_width(cfg.post_engine)
    relu = np.broadcast_to(np.asarray(run.post.relu, dtype=bool), (c,))
    params = [(int(b) & bit_mask(A)) | (int(s) & bit_mask(sw)) << A | int(r) << (A + sw)
              for b, s, r in zip(run.post.bias, run.post.shift, relu)]
    rows = []
    if run.op == "depthwise":
        kh, kw = run.kernel
        codes = np.zeros((nt * C, kh, kw), dtype=np.int64)
        codes[:c] = np.asarray(run.w_codes) & bit_mask(e.code_width)
        rows = [pack_vector(codes[t * C:(t + 1) * C, ky, kx], cfg.code_width)
                for t in range(nt) for ky in range(kh) for kx in range(kw)]
    if weights is not None:
        rows = weights
    xs = np.zeros((nt * R, h, w), dtype=np.int64)
    xs[:c] = run.x
    act = [pack_vector(xs[t * R:(t + 1) * R, iy, ix], cfg.engine.act_bits)
           for iy in range(h) for ix in range(w) for t in range(nt)]
    packets = _packets(cfg, "DESC", [descriptor(cfg, run, flags=flags, engine=engine,
                                                **fields)])
    if not run.reuse_weights:
        packets += _packets(cfg, "PARAMS", params, per=64)
        packets += _packets(cfg, "WEIGHTS", rows, per=64)
    if acts:
        packets += _packets(cfg, "ACTS", act)
    return packets


def random_post(cfg, rng, run, *, shift=None):
    """Post-processing for ``run``'s channels in the running engine's ranges: a small bias,
    a right shift bringing its sums near the activation range (``shift`` forces one)."""
    e = golden_config(cfg, run)
    c = run.x.shape[0]
    b_lo, b_hi = bias_range(e)
    s_lo, s_hi = shift_range(e)
    if shift is None and run.op == "depthwise":
        # Centre each channel's sums (AdderNet's are <= 0) and bring their spread to about
        # 2^(act_bits-1), or 8 with a clamp, so the outputs are no constant.
        acc = window_acc(e, run.op, run.x, run.kernel, run.stride, run.padding, run.w_codes)
        acc = acc.reshape(c, -1)
        bias = np.clip(-np.round(np.median(acc, axis=1)).astype(np.int64), b_lo, b_hi)
        spread = np.abs(acc + bias[:, None]).max(axis=1)
        top = 3 if run.clamp is not None else e.act_bits - 1
        shift = np.clip([int(v).bit_length() - top for v in spread], max(s_lo, 0), s_hi)
    elif shift is None:
        bias = rng.integers(max(b_lo, -20), min(b_hi, 20) + 1, c)
        shift = np.clip(rng.integers(-1, 2 + 2 * (run.op == "sum"), c), max(s_lo, 0), s_hi)
    else:
        bias, shift = np.zeros(c, dtype=np.int64), np.full(c, shift)
    return PostParams(bias=np.asarray(bias), shift=np.asarray(shift),
                      relu=rng.integers(0, 2, c).astype(bool) if run.op != "sum"
                      else np.zeros(c, dtype=bool))


def make_run(cfg, rng, op, *, c, hw, kernel, stride=1, padding=0, m_block=8, engine=0,
             clamp=None, x=None, shift=None, negative=False):
    """A random :class:`WindowRun` of ``c`` channels on a map ``hw``; ``negative``: every
    activation below 0 and no ReLU (a padded position that read more than ``act_min`` would
    win a max)."""
    lo, hi = cfg.engine.act_range
    if x is None:
        x = rng.integers(lo, 0 if negative else hi + 1, (c,) + _pair(hw))
        x.flat[rng.integers(0, x.size, 3)] = lo          # act_min inside the map
    run = WindowRun(op, x, kernel, stride, padding, m_block, engine, clamp=clamp)
    if op == "depthwise":
        clo, chi = code_range(cfg.engines[engine])
        run.w_codes = rng.integers(clo, chi + 1, (c,) + run.kernel)
    run.post = random_post(cfg, rng, run, shift=shift)
    if negative:
        run.post = dataclasses.replace(run.post, relu=np.zeros(c, dtype=bool))
    return run


def window_runs_of(cfg, rng, engine):
    """The scenario's runs for engine ``engine`` (the depthwise ones run on it)."""
    C = cfg.engine.cols
    short = max(1, min(cfg.acc_entries, 3))                 # below the hazard window
    relu6 = (0, min(6, cfg.engine.act_range[1]))
    return [
        ("max 2x2/s2", make_run(cfg, rng, "max", c=C + 3, hw=(6, 5), kernel=2, stride=2,
                                m_block=5)),
        ("max 3x3/s2/p1", make_run(cfg, rng, "max", c=C, hw=(5, 6), kernel=3, stride=2,
                                   padding=1, m_block=short)),
        ("max 3x3/s1/p1 of a negative map", make_run(cfg, rng, "max", c=C, hw=(4, 5),
                                                     kernel=3, padding=1, negative=True)),
        ("sum 3x3/s1/p1", make_run(cfg, rng, "sum", c=C + 1, hw=(4, 4), kernel=3, padding=1,
                                   shift=3)),
        ("sum 2x2/s2 (avg)", make_run(cfg, rng, "sum", c=2 * C - 1, hw=(4, 6), kernel=2,
                                      stride=2, shift=avgpool_post_shift(2, 0), m_block=4)),
        ("depthwise 3x3/s1/p1 relu6", make_run(cfg, rng, "depthwise", c=C + 1, hw=(5, 4),
                                               kernel=3, padding=1, engine=engine,
                                               clamp=relu6, m_block=7)),
        ("depthwise 3x3/s2/p1 relu6, short blocks",
         make_run(cfg, rng, "depthwise", c=C - 1, hw=(6, 6), kernel=3, stride=2, padding=1,
                  engine=engine, clamp=relu6, m_block=short)),
        ("depthwise 2x3/s(1,2)/p(1,0)", make_run(cfg, rng, "depthwise", c=2 * C, hw=(3, 7),
                                                 kernel=(2, 3), stride=(1, 2),
                                                 padding=(1, 0), engine=engine, m_block=9)),
    ]


async def counters(tb):
    return {n: await tb.counter(n) for n in ("BUSY_CYCLES", "TERMS")}


async def run_window(tb, run, *, what, flags=(), acts=True, quiet=False):
    """Start, send ``run``'s packets, compare every result beat with the golden model, and
    the counters' increments: TERMS = NT*kk*M*cols, BUSY_CYCLES >= NT*kk*M."""
    cfg = tb.cfg
    packets = pack_window(cfg, run, flags=flags, acts=acts)
    want = [] if quiet else window_beats(cfg, window_output(cfg, run), run.m_block)
    before = await counters(tb)
    await run_packets(tb, packets, want, what)
    d = {n: v - before[n] for n, v in (await counters(tb)).items()}
    C = cfg.engine.cols
    oh, ow = run.out_hw
    vectors = -(-run.x.shape[0] // C) * run.kernel[0] * run.kernel[1] * oh * ow
    assert d["TERMS"] == vectors * C, \
        f"{what}: TERMS {d['TERMS']}, expected {vectors} vectors x {C} lanes"
    assert d["BUSY_CYCLES"] >= vectors, f"{what}: BUSY_CYCLES {d['BUSY_CYCLES']} < {vectors}"


async def expect_refused(tb, packets, name, what):
    """Start, send ``packets``; expect error ``name``, done and idle, the rest dropped."""
    assert await tb.control("start") == 0
    tb.out_check.tolerate_drop = True
    await tb.send_packets(packets)
    await tb.wait_done(timeout_cycles=20_000)
    code = await tb.get("ERROR", "core_code")
    assert code == tb.core_errors[name], \
        f"{what}: error {code}, expected {name} ({tb.core_errors[name]})"
    assert await tb.get("STATUS", "idle") == 1, f"{what}: not idle after the error"
    await with_timeout(tb.source.wait(), 200_000, "ns")
    await ClockCycles(tb.dut.clk, 10)
    tb.sink.clear()
    tb.out_check.take()
    tb.out_check.tolerate_drop = False


@cocotb.test()
async def window_runs(dut):
    """Every window run on every engine, the second half under random pauses; a depthwise
    run reusing the previous one's weights."""
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    assert await tb.get("WINDOW", "lanes") == cfg.engine.cols
    rng = np.random.default_rng(tb.seed)
    n = len(cfg.engines)
    for k in range(n):
        if k == (n + 1) // 2:
            tb.pause_streams(random_pauses(tb.seed + 1, 0.3, hold=10),
                             random_pauses(tb.seed + 2, 0.4, hold=16))
        for name, run in window_runs_of(cfg, rng, k):
            await run_window(tb, run, what=f"engine {k} ({cfg.engines[k].pe}): {name}")
        # The last run was depthwise on engine k: new activations, the same weights.
        again = dataclasses.replace(run, x=make_run(cfg, rng, "max", c=run.x.shape[0],
                                                    hw=run.x.shape[1:], kernel=1).x,
                                    reuse_weights=True)
        await run_window(tb, again, what=f"engine {k}: depthwise reusing its weights")
    if n == 1:
        tb.pause_streams(random_pauses(tb.seed + 1, 0.3, hold=10),
                         random_pauses(tb.seed + 2, 0.4, hold=16))
        for name, run in window_runs_of(cfg, rng, 0):
            await run_window(tb, run, what=f"paused: {name}")
    tb.pause_streams()
    tb.check_protocol()


@cocotb.test()
async def window_chain(dut):
    """max pool (streamed into bank 0, kept in bank 1 and sent) -> depthwise 3x3 ReLU6 on the
    resident input (kept in bank 0, quiet) -> 1x1 convolution on that (sent); each result
    against the golden model of the chain so far."""
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    rng = np.random.default_rng(tb.seed + 3)
    C = cfg.engine.cols
    last = len(cfg.engines) - 1
    tb.pause_streams(random_pauses(tb.seed + 4, 0.2), random_pauses(tb.seed + 5, 0.3))
    for image in range(2):
        c = C + 2
        pool = make_run(cfg, rng, "max", c=c, hw=(8, 6), kernel=2, stride=2, m_block=5)
        await run_window(tb, pool, flags=("keep",), what=f"image {image}: max pool, kept")
        y1 = window_output(cfg, pool)
        dw = make_run(cfg, rng, "depthwise", c=c, hw=y1.shape[1:], kernel=3, padding=1,
                      engine=last, clamp=(0, min(6, cfg.engine.act_range[1])), x=y1,
                      m_block=4)
        await run_window(tb, dw, flags=("in_bank", "acts_resident", "keep", "quiet"),
                         acts=False, quiet=True,
                         what=f"image {image}: depthwise on the resident pool, quiet")
        y2 = window_output(cfg, dw)
        conv = engine_layer(cfg, rng, 0, "conv", in_c=c, h=y2.shape[1], w=y2.shape[2],
                            out_c=C + 1, kh=1, kw=1)
        conv = dataclasses.replace(conv, x=y2)
        packets = pack_engine_layer(cfg, conv, 0, chain={"in_bank": 0, "acts_resident": 1})
        want = expected_beats(engine_view(cfg, 0), conv)
        assert await tb.control("start") == 0
        tb.out_check.expect(len(want))
        tb.out_check.take()
        cocotb.start_soon(tb.send_packets(packets))
        frame = await with_timeout(tb.sink.recv(), 4_000_000, "ns")
        got = tb.beats_of(frame)
        await tb.wait_done()
        assert await tb.get("ERROR", "core_code") == 0, f"image {image}: 1x1 conv error"
        assert len(got) == len(want), f"image {image}: {len(got)} beats of {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert g == w, f"image {image}: 1x1 conv beat {i}: got 0x{g:x}, expected 0x{w:x}"
        tb.out_check.take()
    tb.pause_streams()
    tb.check_protocol()


@cocotb.test()
async def window_refused(dut):
    """Inconsistent window descriptors are DESCRIPTOR; WEIGHTS sent to a max run OVERRUN; a
    soft reset mid-run; each followed by a good window run."""
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    rng = np.random.default_rng(tb.seed + 7)
    C = cfg.engine.cols

    def good():
        return make_run(cfg, rng, "depthwise", c=C + 1, hw=(4, 5), kernel=3, padding=1,
                        engine=len(cfg.engines) - 1, m_block=6)

    mx = make_run(cfg, rng, "max", c=C, hw=(5, 5), kernel=3, padding=1, m_block=6)
    cases = [
        ("in_c != out_c", pack_window(cfg, mx, out_c=C + 1), "DESCRIPTOR"),
        ("two window flags", pack_window(cfg, mx, flags=("win_sum",)), "DESCRIPTOR"),
        ("max with 2*pad > kernel", pack_window(cfg, make_run(
            cfg, rng, "max", c=C, hw=(5, 5), kernel=3, padding=2)), "DESCRIPTOR"),
        ("WEIGHTS to a max run", pack_window(cfg, mx, weights=[0]), "OVERRUN"),
    ]
    for what, packets, name in cases:
        await expect_refused(tb, packets, name, what)
        await run_window(tb, good(), what=f"after {what}")
    # A soft reset in the middle of a window run (results held back), then a good run.
    await soft_reset_mid_run(tb, pack_window(cfg, good())[:4])  # DESC, PARAMS, WEIGHTS, ACTS
    await run_window(tb, good(), what="after a soft reset")
    await run_window(tb, mx, what="max after a soft reset")
    tb.check_protocol()


@cocotb.test()
async def no_lane_unit(dut):
    """A core built with ``window_ops=False``: WINDOW.lanes is 0 and each window flag is
    WINDOW (12); a convolution runs after each."""
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    assert not cfg.window_ops
    assert await tb.get("WINDOW", "lanes") == 0
    assert tb.core_errors["WINDOW"] == 12
    rng = np.random.default_rng(tb.seed + 9)
    C = cfg.engine.cols
    for op in ("max", "sum", "depthwise"):
        run = make_run(cfg, rng, op, c=C, hw=(4, 4), kernel=2, stride=2)
        await expect_refused(tb, pack_window(cfg, run), "WINDOW", f"{op} without a lane unit")
        conv = engine_layer(cfg, rng, 0, "conv", in_c=3, h=4, w=4, out_c=C, padding=(1, 1))
        packets = pack_engine_layer(cfg, conv, 0)
        want = expected_beats(engine_view(cfg, 0), conv)
        assert await tb.control("start") == 0
        tb.out_check.expect(len(want))
        tb.out_check.take()
        cocotb.start_soon(tb.send_packets(packets))
        got = tb.beats_of(await with_timeout(tb.sink.recv(), 4_000_000, "ns"))
        await tb.wait_done()
        assert await tb.get("ERROR", "core_code") == 0
        assert got == want, f"conv after the refused {op} run"
        tb.out_check.take()
    tb.check_protocol()
