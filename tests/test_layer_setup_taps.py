"""Taps runs' setup rules (interface 2.4): DESCRIPTOR's taps rules, WINDOW for a core or an
engine without the tap window, TOO_BIG's line rule and its missing m_block rule, REUSE's taps
flag, and the sizes ``ntr`` and ``wrows``; ``LayerSetup`` in the Amaranth simulator against
``ref_error`` / ``ref_sizes`` (written from ``CORE_ERRORS`` and the spec,
``tests/test_layer_setup.py``) and against the codes listed here.
"""

import random

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig

from test_layer_setup import (CLAMP, DEPTHWISE, DESCRIPTOR, ENGINE, GLOBAL_POOL, REUSE,
                              REUSE_FLAG, RESIDUAL, SHIFT, TAPS, TOO_BIG, WINDOW, WIN_MAX,
                              WIN_SUM, check, conv_out, matching_reuse, mutate, pick, ref_error,
                              ref_sizes, run_setup)

_BUFFERS = dict(fmap_vectors=512, acc_entries=16, weight_rows=256, max_channels=32,
                shortcut_vectors=64, pool_pixels=64)
#: A 4x4 shift array with a 2x2 tap window beside a 4x4 adder tree (no tap ports).
SIDE2 = CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=4, max_k=64),
                   extra_engines=(ArrayConfig(pe="adder", rows=4, cols=4, arch="tree",
                                              max_k=64),),
                   taps=4, tap_line=12, **_BUFFERS)
#: A 9x9 adder array with a 3x3 tap window.
SIDE3 = CoreConfig(engine=ArrayConfig(pe="adder", rows=9, cols=9, max_k=81), taps=9,
                   tap_line=16, **_BUFFERS)
#: The same 4x4 core without a tap window, and without the lane unit.
NO_TAPS = CoreConfig(engine=SIDE2.engine, extra_engines=SIDE2.extra_engines, taps=0,
                     **_BUFFERS)
NO_LANES = CoreConfig(engine=SIDE2.engine, window_ops=False, **_BUFFERS)
TAP_RUN = DEPTHWISE | TAPS

def t(d=None, **fields):
    """``d`` with ``fields``, out_h/out_w recomputed and m_block = out_h*out_w unless given."""
    d = dict(BASE if d is None else d, **fields)
    d["out_h"] = conv_out(d["in_h"], d["kernel_h"], d["stride_h"], d["pad_h"])
    d["out_w"] = conv_out(d["in_w"], d["kernel_w"], d["stride_w"], d["pad_w"])
    if "m_block" not in fields:
        d["m_block"] = d["out_h"] * d["out_w"]
    return d


#: A 5x6 map of 6 channels (NT = 2 on a 4x4 core), 2x2 kernel, stride 1, pad 1: out 6x7.
BASE = {"in_h": 5, "in_w": 6, "in_c": 6, "out_c": 6, "kernel_h": 2, "kernel_w": 2,
        "stride_h": 1, "stride_w": 1, "pad_h": 1, "pad_w": 1, "flags": TAP_RUN}
BASE = t()


def run(cfg, cases):
    results = run_setup(cfg, [(d, r) for d, r, _ in cases])
    assert [ref_error(cfg, d, r) for d, r, _ in cases] == [x for _, _, x in cases]
    check(cfg, [(d, r) for d, r, _ in cases], results, expected=[x for _, _, x in cases])
    return results


def test_sizes():
    """ntr = NT*rows; wrows = ntr for a taps run, nkk for a depthwise run on the lane unit."""
    results = run(SIDE2, [(BASE, None, 0), (t(flags=DEPTHWISE, m_block=16), None, 0)])
    got = [(r.sizes["ntr"], r.sizes["wrows"], r.sizes["nkk"]) for r in results]
    assert got == [(8, 8, 8), (8, 8, 8)]
    results = run(SIDE3, [(t(kernel_h=3, kernel_w=1, pad_w=0, in_c=10, out_c=10), None, 0),
                          (t(kernel_h=3, kernel_w=1, pad_w=0, in_c=10, out_c=10,
                             flags=DEPTHWISE, m_block=16), None, 0)])
    assert [(r.sizes["ntr"], r.sizes["wrows"]) for r in results] == [(18, 18), (18, 6)]


def test_descriptor_rules():
    m = t()["m_block"]
    cases = [(t(flags=TAPS), None, DESCRIPTOR),
             (t(flags=TAPS | WIN_MAX), None, DESCRIPTOR),
             (t(flags=TAPS | WIN_SUM), None, DESCRIPTOR),
             (t(m_block=m - 1), None, DESCRIPTOR),
             (t(m_block=m + 1), None, DESCRIPTOR),
             (t(m_block=1), None, DESCRIPTOR),
             (t(flags=TAP_RUN | RESIDUAL, short_c=6, short_stride=1), None, DESCRIPTOR),
             (t(flags=TAP_RUN | GLOBAL_POOL, pool_shift=6), None, DESCRIPTOR),
             (t(flags=TAP_RUN | SHIFT), None, DESCRIPTOR),
             (t(out_c=5), None, DESCRIPTOR),
             # The kernel fits the 2x2 window in each dimension, or not.
             (t(kernel_h=3), None, DESCRIPTOR), (t(kernel_w=3), None, DESCRIPTOR),
             (t(kernel_h=1, pad_h=0), None, 0), (t(kernel_w=1, pad_w=0), None, 0),
             (t(kernel_h=1, kernel_w=1, pad_h=0, pad_w=0), None, 0),
             # A tail is a layer's; stride 2.
             (t(flags=TAP_RUN | CLAMP, clamp_lo=0, clamp_hi=6), None, 0),
             (t(stride_h=2, stride_w=2), None, 0)]
    run(SIDE2, cases)
    run(SIDE3, [(t(kernel_h=3, kernel_w=3), None, 0), (t(kernel_h=4, in_h=6), None, DESCRIPTOR),
                (t(kernel_w=4, in_w=6), None, DESCRIPTOR)])


def test_window_rules():
    """WINDOW: taps on a core without a tap window (or without a lane unit), or on an engine
    without tap ports (the tree); the lane unit's depthwise run is fine there."""
    run(NO_TAPS, [(BASE, None, WINDOW), (dict(BASE, engine=1), None, WINDOW),
                  (t(flags=DEPTHWISE, m_block=16), None, 0)])
    run(NO_LANES, [(BASE, None, WINDOW)])
    run(SIDE2, [(dict(BASE, engine=1), None, WINDOW), (dict(BASE, engine=2), None, ENGINE),
                (BASE, None, 0)])


def test_too_big_rules():
    """The padded line (out_w-1)*stride_w + kernel_w fits tap_line (12) at the edge; a taps
    run has no m_block limit (acc_entries 16), a lane-unit depthwise run has."""
    line = t(in_w=12, pad_w=0, in_h=3, pad_h=0)              # Wp = 12, M = 22
    over = t(in_w=13, pad_w=0, in_h=2, pad_h=0)              # Wp = 13
    strided = t(in_w=11, pad_w=1, stride_w=2, in_h=2, pad_h=0)   # out_w 6: Wp = 12
    assert ref_sizes(SIDE2, over)["ew"] + 2 == 13 and line["m_block"] > 16
    run(SIDE2, [(line, None, 0), (over, None, TOO_BIG), (strided, None, 0),
                (t(strided, in_w=12), None, TOO_BIG),
                (dict(line, flags=DEPTHWISE), None, TOO_BIG),
                (dict(line, flags=DEPTHWISE, m_block=16), None, 0)])


def test_reuse_compares_the_taps_flag():
    """A taps run reuses a taps run's weights; a lane-unit depthwise run's (the same rows on
    a 2x2 kernel) or a convolution's are REUSE, and the other way round."""
    d = dict(BASE, flags=TAP_RUN | REUSE_FLAG)
    good = matching_reuse(SIDE2, d)
    assert good["window"] == 0b1100 and good["rows"] == 8
    lane = t(flags=DEPTHWISE | REUSE_FLAG, m_block=16)
    cases = [(d, good, 0), (d, dict(good, window=0b0100), REUSE),
             (d, dict(good, window=0), REUSE), (lane, good, REUSE),
             (lane, dict(good, window=0b0100), 0)]
    run(SIDE2, cases)


def random_taps_desc(cfg, rng):
    """A taps descriptor ``cfg`` accepts."""
    s = cfg.tap_side
    while True:
        kh, kw = pick(rng, s), pick(rng, s)
        c = pick(rng, min(cfg.max_channels, 20))
        d = t({"in_c": c, "out_c": c, "kernel_h": kh, "kernel_w": kw,
               "pad_h": rng.randint(0, kh - 1), "pad_w": rng.randint(0, kw - 1),
               "stride_h": pick(rng, 3), "stride_w": pick(rng, 3), "in_h": pick(rng, 10),
               "in_w": pick(rng, 14), "flags": TAP_RUN,
               "engine": rng.choice(cfg.tap_engines)})
        if d["out_h"] < 1 or d["out_w"] < 1:
            continue
        sz = ref_sizes(cfg, d)
        if sz["acts"] > cfg.fmap_vectors or sz["ew"] + kw > cfg.tap_line:
            continue
        if rng.random() < 0.3:
            d["flags"] |= REUSE_FLAG
        if rng.random() < 0.3:
            d["flags"] |= CLAMP
            d["clamp_lo"], d["clamp_hi"] = 0, 6
        assert ref_error(cfg, d, matching_reuse(cfg, d)) == 0, d
        return d


def test_random_taps_descriptors():
    """Random taps runs, valid and mutated (a field or two, the flags often), on the cores
    with and without a tap window: the code the reference gives and, when 0, every size."""
    for name, cfg, src in (("side2", SIDE2, SIDE2), ("side3", SIDE3, SIDE3),
                           ("no_taps", NO_TAPS, SIDE2)):
        rng = random.Random(f"taps-{name}")
        cases = []
        for i in range(150):
            d = random_taps_desc(src, rng)
            if i % 3:
                d = mutate(cfg, d, rng)
                if rng.random() < 0.5:
                    d["flags"] ^= rng.choice((TAPS, DEPTHWISE, REUSE_FLAG, GLOBAL_POOL))
            reuse = matching_reuse(cfg, d) if rng.random() < 0.7 else None
            if reuse and rng.random() < 0.3:
                reuse["window"] = rng.randrange(16)
            cases.append((d, reuse))
        results = run_setup(cfg, cases)
        codes = [ref_error(cfg, d, r) for d, r in cases]
        want = {0, DESCRIPTOR} if name != "no_taps" else {WINDOW, DESCRIPTOR}
        assert want <= set(codes), (name, codes)
        check(cfg, cases, results)
