"""cocotb scenarios of taps runs (interface 2.4) on a core with a tap window.

A taps run (descriptor flags ``depthwise | taps``) computes a depthwise convolution on an array
engine, kernel taps on rows, channels on columns, fed by the issue unit's tap window; its
numbers are the lane unit's depthwise run's. Every result beat is compared with the golden
model — :func:`mulfree.params.window_golden.window_layer` then
:func:`mulfree.params.layer_golden.fused_tail` — never with the RTL's own numbers; TERMS
(``rows*cols`` per output vector: ``NT*M*rows*cols``) and BUSY_CYCLES (at least one cycle per
read of the walk, ``NT*Hp*Wp``) are read back after every run and BUSY_CYCLES logged.

The packets follow the specification: the descriptor with ``depthwise`` and ``taps`` and
``m_block = out_h*out_w``, PARAMS, the ``NT*rows`` WEIGHTS rows of
:func:`mulfree.params.tap_walk.tap_weight_tiles`, and the ACTS of a depthwise run
(:func:`~mulfree.sim.tb_core_window.pack_window` with those rows).

* ``taps_runs``: on every tap engine, kernels up to the window's side: ``side x side`` at
  stride 1 pad 1 and stride 2 pad 1, ``1 x side``, ``side x 1``, 2x2 stride 1 pad 0, two
  output tiles with a partial last one, a 1-pixel-wide map (``Wp = 1``), ReLU and a clamp,
  a run reusing the previous one's weights; the second half under random pauses on
  ``s_axis`` and backpressure on ``m_axis``; TAPS reads the core's tap window;
* ``taps_mixed``: a taps run, the same layer on the lane unit (no ``taps``), a convolution,
  then the taps run again: routing between the engine and the lane unit, run after run; a
  chain (a max pool kept, a taps run on it resident, kept and quiet, a 1x1 convolution on
  that): the taps run's results written to the other bank in their order;
* ``taps_refused``: DESCRIPTOR (taps without depthwise, ``m_block != out_h*out_w``, a kernel
  beyond the side, taps with a global pool), TOO_BIG (a padded line beyond TAPS.line), WINDOW
  (taps on an engine without the tap ports, when the core has one), REUSE (a lane-unit
  depthwise run reusing a taps run's weights); a soft reset in the middle of a taps run; each
  followed by a good taps run.

``MULFREE_SEED`` varies the data, never the corners.
"""

import dataclasses

import numpy as np

import cocotb

from mulfree.params.tap_walk import tap_span, tap_weight_tiles
from mulfree.host.stream_format import bit_mask, pack_vector
from mulfree.sim.tb_core import TB
from mulfree.sim.tb_core_engines import (engine_layer, engine_view, pack_engine_layer,
                                         run_packets, soft_reset_mid_run)
from mulfree.sim.tb_core_layers import random_pauses
from mulfree.sim.tb_core_window import (expect_refused, make_run, pack_window, run_window,
                                        window_beats, window_output)
from mulfree.host.layer_stream import expected_beats


__all__ = ["SCENARIOS", "pack_taps", "taps_runs_of"]

#: The cocotb tests of this module.
SCENARIOS = ("taps_runs", "taps_mixed", "taps_refused")


def pack_taps(cfg, run, *, flags=(), acts=True, **fields):
    """The packets of the depthwise ``run`` as a taps run: the descriptor with ``taps`` (and
    ``flags``; ``fields`` override), PARAMS, the ``NT*rows`` weight rows of
    :func:`tap_weight_tiles` (engine ``run.engine``'s codes), ACTS (none with ``acts=False``:
    a resident input)."""
    e = cfg.engines[run.engine]
    codes = np.asarray(run.w_codes) & bit_mask(e.code_width)
    tiles = tap_weight_tiles(codes, cfg.engine.rows, cfg.engine.cols)
    rows = [pack_vector(row, cfg.code_width) for row in tiles]
    return pack_window(cfg, run, flags=("taps",) + tuple(flags), acts=acts, weights=rows,
                       **fields)


def taps_run(cfg, rng, *, c, hw, kernel, stride=1, padding=0, engine=0, clamp=None, x=None):
    """A random depthwise run on engine ``engine`` with ``m_block = out_h*out_w``."""
    run = make_run(cfg, rng, "depthwise", c=c, hw=hw, kernel=kernel, stride=stride,
                   padding=padding, engine=engine, clamp=clamp, x=x)
    oh, ow = run.out_hw
    return dataclasses.replace(run, m_block=oh * ow)


def taps_runs_of(cfg, rng, engine):
    """The scenario's runs on engine ``engine``, for the core's tap window side."""
    C, s = cfg.engine.cols, cfg.tap_side
    relu6 = (0, min(6, cfg.engine.act_range[1]))
    one = dict(engine=engine)
    return [
        (f"{s}x{s}/s1/p1 relu6", taps_run(cfg, rng, c=C, hw=(5, 6), kernel=s, padding=1,
                                          clamp=relu6, **one)),
        (f"{s}x{s}/s2/p1", taps_run(cfg, rng, c=C - 1, hw=(6, 7), kernel=s, stride=2,
                                    padding=1, **one)),
        (f"1x{s}/s1/p(0,1)", taps_run(cfg, rng, c=C, hw=(4, 5), kernel=(1, s),
                                      padding=(0, 1), **one)),
        (f"{s}x1/s(2,1)/p(1,0)", taps_run(cfg, rng, c=C, hw=(6, 4), kernel=(s, 1),
                                          stride=(2, 1), padding=(1, 0), **one)),
        ("2x2/s1/p0", taps_run(cfg, rng, c=C, hw=(4, 5), kernel=2, **one)),
        (f"{s}x{s}/s1/p1, NT 2 with a partial tile",
         taps_run(cfg, rng, c=C + 2, hw=(4, 4), kernel=s, padding=1, **one)),
        (f"{s}x1 on a 1-wide map (Wp 1)", taps_run(cfg, rng, c=C, hw=(5, 1), kernel=(s, 1),
                                                   padding=(1, 0), **one)),
        (f"{s}x{s}/s1/p1 clamp", taps_run(cfg, rng, c=C - 1, hw=(4, 5), kernel=s, padding=1,
                                          clamp=(-3, 5), **one)),
    ]


async def run_taps(tb, run, *, what, flags=(), acts=True, quiet=False):
    """Start, send ``run`` as a taps run, compare every result beat with the golden model
    (none when ``quiet``) and the counters' increments (TERMS = NT*M*rows*cols, BUSY_CYCLES
    >= NT*Hp*Wp); return BUSY_CYCLES' increment."""
    cfg = tb.cfg
    R, C = cfg.engine.rows, cfg.engine.cols
    packets = pack_taps(cfg, run, flags=flags, acts=acts)
    want = [] if quiet else window_beats(cfg, window_output(cfg, run), run.m_block)
    before = {n: await tb.counter(n) for n in ("BUSY_CYCLES", "TERMS")}
    await run_packets(tb, packets, want, what)
    d = {n: await tb.counter(n) - v for n, v in before.items()}
    nt = -(-run.x.shape[0] // C)
    oh, ow = run.out_hw
    hp, wp = tap_span(run.kernel, run.stride, run.out_hw)
    assert d["TERMS"] == nt * oh * ow * R * C, \
        f"{what}: TERMS {d['TERMS']}, expected {nt * oh * ow} vectors x {R * C} terms"
    assert d["BUSY_CYCLES"] >= nt * hp * wp, \
        f"{what}: BUSY_CYCLES {d['BUSY_CYCLES']} < {nt * hp * wp} reads"
    tb.dut._log.info(f"{what}: map {run.x.shape}, kernel {run.kernel}, stride {run.stride}, "
                     f"NT {nt}, reads {nt * hp * wp}, vectors {nt * oh * ow}: "
                     f"BUSY_CYCLES {d['BUSY_CYCLES']}")
    return d["BUSY_CYCLES"]


@cocotb.test()
async def taps_runs(dut):
    """Every shape on every tap engine, the second half under random pauses; a run reusing
    the previous one's weights; TAPS reads the core's tap window."""
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    assert await tb.get("TAPS", "taps") == cfg.taps
    assert await tb.get("TAPS", "side") == cfg.tap_side
    assert await tb.get("TAPS", "engines") == sum(1 << k for k in cfg.tap_engines)
    assert await tb.get("TAPS", "line") == cfg.tap_line
    rng = np.random.default_rng(tb.seed)
    runs = [(k, name, run) for k in cfg.tap_engines for name, run in taps_runs_of(cfg, rng, k)]
    for i, (k, name, run) in enumerate(runs):
        if i == len(runs) // 2:
            tb.pause_streams(random_pauses(tb.seed + 1, 0.3, hold=10),
                             random_pauses(tb.seed + 2, 0.4, hold=16))
        what = f"engine {k} ({cfg.engines[k].pe}): {name}"
        await run_taps(tb, run, what=what)
        if name.startswith("2x2"):
            # New activations, the same weights.
            lo, hi = cfg.engine.act_range
            again = dataclasses.replace(run, x=rng.integers(lo, hi + 1, run.x.shape),
                                        reuse_weights=True)
            await run_taps(tb, again, what=f"{what}, reusing its weights")
    tb.pause_streams()
    tb.check_protocol()


@cocotb.test()
async def taps_mixed(dut):
    """A taps run, the same depthwise layer on the lane unit, a convolution, the taps run
    again; then a chain: a max pool kept in bank 1, a taps run on that resident input kept
    in bank 0 and quiet, a 1x1 convolution on its output: each against the golden model (of
    the chain so far)."""
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    rng = np.random.default_rng(tb.seed + 3)
    C, s = cfg.engine.cols, cfg.tap_side
    tb.pause_streams(random_pauses(tb.seed + 4, 0.2), random_pauses(tb.seed + 5, 0.3))
    k = cfg.tap_engines[-1]
    run = taps_run(cfg, rng, c=C + 1, hw=(5, 5), kernel=s, padding=1, engine=k)
    await run_taps(tb, run, what="taps run")
    await run_window(tb, dataclasses.replace(run, m_block=4), what="the same on the lane unit")
    conv = engine_layer(cfg, rng, 0, "conv", in_c=3, h=4, w=5, out_c=C + 1, padding=(1, 1))
    await run_packets(tb, pack_engine_layer(cfg, conv, 0), expected_beats(engine_view(cfg, 0),
                                                                          conv), "conv")
    await run_taps(tb, run, what="the taps run again")
    pool = make_run(cfg, rng, "max", c=C + 2, hw=(8, 6), kernel=2, stride=2, m_block=5)
    await run_window(tb, pool, flags=("keep",), what="max pool, kept")
    y1 = window_output(cfg, pool)
    dw = taps_run(cfg, rng, c=C + 2, hw=y1.shape[1:], kernel=s, padding=1, engine=k,
                  clamp=(0, min(6, cfg.engine.act_range[1])), x=y1)
    await run_taps(tb, dw, flags=("in_bank", "acts_resident", "keep", "quiet"), acts=False,
                   quiet=True, what="taps run on the resident pool, kept, quiet")
    y2 = window_output(cfg, dw)
    conv = engine_layer(cfg, rng, 0, "conv", in_c=C + 2, h=y2.shape[1], w=y2.shape[2],
                        out_c=C + 1, kh=1, kw=1)
    conv = dataclasses.replace(conv, x=y2)
    await run_packets(tb, pack_engine_layer(cfg, conv, 0, chain={"in_bank": 0,
                                                                 "acts_resident": 1}),
                      expected_beats(engine_view(cfg, 0), conv), "1x1 conv on the taps run's")
    tb.pause_streams()
    tb.check_protocol()


@cocotb.test()
async def taps_refused(dut):
    """Bad taps descriptors are refused with their code; a soft reset in the middle of a taps
    run; each followed by a good taps run."""
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    rng = np.random.default_rng(tb.seed + 7)
    C, s, k = cfg.engine.cols, cfg.tap_side, cfg.tap_engines[0]

    def good():
        return taps_run(cfg, rng, c=C + 1, hw=(4, 5), kernel=s, padding=1, engine=k)

    run = good()
    wide = taps_run(cfg, rng, c=C, hw=(s, cfg.tap_line + 1), kernel=s, engine=k)
    big = make_run(cfg, rng, "depthwise", c=C, hw=(s + 1, s + 1), kernel=s + 1, engine=k)
    big = dataclasses.replace(big, m_block=1)
    cases = [
        ("taps without depthwise", pack_window(cfg, dataclasses.replace(run, op="sum"),
                                               flags=("taps",), weights=[]), "DESCRIPTOR"),
        ("m_block != out_h*out_w", pack_taps(cfg, run, m_block=run.m_block - 1),
         "DESCRIPTOR"),
        (f"a {s + 1}x{s + 1} kernel", pack_window(cfg, big, flags=("taps",)), "DESCRIPTOR"),
        ("taps with a global pool", pack_taps(cfg, run, flags=("global_pool",)),
         "DESCRIPTOR"),
        (f"a padded line of {cfg.tap_line + 1}", pack_taps(cfg, wide), "TOO_BIG"),
    ]
    others = [j for j in range(len(cfg.engines)) if j not in cfg.tap_engines]
    if others:
        cases.append((f"taps on engine {others[0]}", pack_taps(cfg, run, engine=others[0]),
                      "WINDOW"))
    for what, packets, name in cases:
        await expect_refused(tb, packets, name, what)
        await run_taps(tb, good(), what=f"after {what}")
    # A lane-unit depthwise run may not reuse a taps run's weights (other rows, other order).
    await run_taps(tb, run, what="taps run before REUSE")
    lane = dataclasses.replace(run, reuse_weights=True)
    await expect_refused(tb, pack_window(cfg, lane), "REUSE", "lane unit reusing taps weights")
    # A soft reset in the middle of a taps run (results held back), then a good run.
    await soft_reset_mid_run(tb, pack_taps(cfg, good())[:4])  # DESC, PARAMS, WEIGHTS, ACTS
    await run_taps(tb, good(), what="after a soft reset")
    tb.check_protocol()
