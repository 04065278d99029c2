"""Window runs' setup rules (interface 2.3): DESCRIPTOR's window rules, error WINDOW, TOO_BIG's
K rule of a window run, REUSE's window flags and the sizes ``nkk`` and ``wrows``;
``LayerSetup`` in the Amaranth simulator against ``ref_error`` / ``ref_sizes`` (written from
``CORE_ERRORS`` and the spec, ``tests/test_layer_setup.py``) and against the codes listed here.
"""

import random

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig

from test_layer_setup import (CLAMP, DEPTHWISE, DESCRIPTOR, ENGINE, KEEP, QUIET, REUSE,
                              REUSE_FLAG, SHIFT, TOO_BIG, WINDOW, WIN_MAX, WIN_SUM, check, conv_out,
                              core, matching_reuse, mutate, pick, ref_error, ref_sizes,
                              run_setup, window_of)

#: A 5x6 map of 6 channels (NT = CT = 2 on a 4x4 core), 3x3 window, stride 2, pad 1: out 3x3.
BASE = {"in_h": 5, "in_w": 6, "in_c": 6, "out_c": 6, "out_h": 3, "out_w": 3, "kernel_h": 3,
        "kernel_w": 3, "stride_h": 2, "stride_w": 2, "pad_h": 1, "pad_w": 1, "m_block": 4,
        "flags": 0}
SQUARE = core(4, 4)
NO_LANES = CoreConfig(engine=SQUARE.engine, fmap_vectors=1 << 16, acc_entries=1 << 10,
                      weight_rows=1 << 16, max_channels=1 << 12, window_ops=False)
MULTI = CoreConfig(engine=ArrayConfig(pe="adder", rows=4, cols=4, max_k=64),
                   extra_engines=(ArrayConfig(pe="mult", rows=4, cols=4, max_k=64),),
                   engine_cols=(4, 1), fmap_vectors=256, acc_entries=16, weight_rows=64,
                   max_channels=16)
OPS = (WIN_MAX, WIN_SUM, DEPTHWISE)


def w(d=BASE, **fields):
    """``d`` with ``fields`` and out_h/out_w recomputed."""
    d = dict(d, **fields)
    d["out_h"] = conv_out(d["in_h"], d["kernel_h"], d["stride_h"], d["pad_h"])
    d["out_w"] = conv_out(d["in_w"], d["kernel_w"], d["stride_w"], d["pad_w"])
    return d


def run(cfg, cases):
    results = run_setup(cfg, [(d, r) for d, r, _ in cases])
    assert [ref_error(cfg, d, r) for d, r, _ in cases] == [x for _, _, x in cases]
    check(cfg, [(d, r) for d, r, _ in cases], results, expected=[x for _, _, x in cases])
    return results


def test_sizes_of_each_op():
    """nkk = kk*NT; wrows nkk (depthwise), 0 (max, sum), NT*KT*rows (a convolution)."""
    cases = [(dict(BASE, flags=op), None, 0) for op in (0, *OPS)]
    results = run(SQUARE, cases)
    got = [(r.sizes["nkk"], r.sizes["wrows"]) for r in results]
    assert got == [(18, 2 * 9 * 2 * 4), (18, 0), (18, 0), (18, 18)]


def test_descriptor_rules():
    cases = []
    for op in OPS:
        cases += [(dict(BASE, flags=op), None, 0),
                  (dict(BASE, flags=op, out_c=5), None, DESCRIPTOR),
                  (dict(BASE, flags=op, in_c=7), None, DESCRIPTOR),
                  (dict(BASE, flags=op | SHIFT), None, DESCRIPTOR)]
        for other in OPS:
            if other != op:
                cases.append((dict(BASE, flags=op | other), None, DESCRIPTOR))
    cases.append((dict(BASE, flags=WIN_MAX | WIN_SUM | DEPTHWISE), None, DESCRIPTOR))
    # No weights: reuse_weights is inconsistent (depthwise may reuse: REUSE without them).
    cases += [(dict(BASE, flags=WIN_MAX | REUSE_FLAG), None, DESCRIPTOR),
              (dict(BASE, flags=WIN_SUM | REUSE_FLAG), None, DESCRIPTOR),
              (dict(BASE, flags=DEPTHWISE | REUSE_FLAG), None, REUSE)]
    # Max pooling: 2*pad <= kernel in both dimensions (the edge accepted).
    for dim in "hw":
        for k, pad, want in ((3, 1, 0), (2, 1, 0), (4, 2, 0), (3, 2, DESCRIPTOR),
                             (5, 3, DESCRIPTOR), (1, 0, 0)):
            d = w(**{f"kernel_{dim}": k, f"pad_{dim}": pad})
            cases.append((dict(d, flags=WIN_MAX), None, want))
            cases += [(dict(d, flags=op), None, 0) for op in (WIN_SUM, DEPTHWISE)]
    # The usual rules apply unchanged: out_h wrong, pad >= kernel.
    cases += [(dict(BASE, flags=WIN_SUM, out_h=4), None, DESCRIPTOR),
              (w(flags=DEPTHWISE, pad_w=3), None, DESCRIPTOR),
              # A tail on a window run is a layer's tail: accepted.
              (dict(BASE, flags=DEPTHWISE | CLAMP, clamp_lo=0, clamp_hi=6), None, 0)]
    run(SQUARE, cases)


def test_window_error_and_order():
    """WINDOW (12) on a core without the lane unit, after DESCRIPTOR and ENGINE, before
    RESIDENT and TOO_BIG; a convolution runs on it as before."""
    cases = [(BASE, None, 0)]
    cases += [(dict(BASE, flags=op), None, WINDOW) for op in OPS]
    cases += [
        (dict(BASE, flags=WIN_MAX | WIN_SUM), None, DESCRIPTOR),
        (dict(BASE, flags=DEPTHWISE, out_c=5), None, DESCRIPTOR),
        (dict(BASE, flags=DEPTHWISE, engine=1), None, ENGINE),
        (dict(BASE, flags=WIN_SUM | QUIET), None, WINDOW),          # quiet without keep
        (dict(BASE, flags=WIN_SUM, m_block=5000), None, WINDOW),    # > acc_entries
        (dict(BASE, flags=DEPTHWISE | REUSE_FLAG), None, WINDOW),
    ]
    run(NO_LANES, cases)


def test_too_big_kk_rule():
    """K of a window run is kernel_h*kernel_w (in_c does not count); the other limits hold:
    a depthwise run's nkk weight rows, a max run's none."""
    # 8x8 window, 16 channels: K = 64 = max_k (a convolution's 1024 would be TOO_BIG).
    big = w(in_c=16, out_c=16, in_h=8, in_w=8, kernel_h=8, kernel_w=8, pad_h=0, pad_w=0,
            stride_h=1, stride_w=1, m_block=1)
    cases = [(dict(big, flags=op), None, 0) for op in (WIN_MAX, WIN_SUM)]
    cases += [(dict(big, flags=0), None, TOO_BIG),
              # depthwise: nkk = 64 * 4 = 256 rows > 64
              (dict(big, flags=DEPTHWISE), None, TOO_BIG),
              (dict(big, flags=DEPTHWISE, in_c=4, out_c=4), None, 0),     # 64 rows
              (dict(big, flags=DEPTHWISE, in_c=5, out_c=5), None, TOO_BIG),  # 128 rows
              (dict(w(big, kernel_w=9, in_w=9), flags=WIN_SUM), None, TOO_BIG),  # kk = 72
              (w(big, flags=WIN_MAX, out_c=17, in_c=17, in_h=2, in_w=2, kernel_h=2,
                 kernel_w=2), None, TOO_BIG),                       # > max_channels
              (w(big, flags=WIN_MAX, out_c=16, in_c=16, in_h=2, in_w=2, kernel_h=2,
                 kernel_w=2), None, 0)
              ]
    run(MULTI, cases)


def test_reuse_compares_window_flags():
    """A depthwise run reuses a depthwise run's weights of the same engine, rows and out_c;
    any other mix (a convolution's, another engine's) is REUSE."""
    d = dict(BASE, flags=DEPTHWISE | REUSE_FLAG, m_block=2)
    good = matching_reuse(MULTI, d)
    assert good == {"valid": 1, "rows": 18, "channels": 6, "tiles": 0, "window": 4,
                    "engine": 0}
    conv1 = w(BASE, in_c=1, kernel_h=1, kernel_w=1, pad_h=0, pad_w=0, flags=REUSE_FLAG,
              m_block=2)
    cases = [(d, good, 0), (dict(d, engine=1), dict(good, engine=1), 0),
             (d, dict(good, window=0), REUSE), (d, dict(good, window=1), REUSE),
             (d, dict(good, window=2), REUSE), (d, dict(good, window=5), REUSE),
             (d, dict(good, engine=1), REUSE), (d, dict(good, rows=19), REUSE),
             (d, dict(good, valid=0), REUSE),
             # a 1x1 convolution (8 rows) after a depthwise run of 8 rows is REUSE
             (conv1, dict(good, rows=8), REUSE), (conv1, dict(good, rows=8, window=0), 0)]
    run(MULTI, cases)


def random_window_desc(cfg, rng):
    """A window descriptor ``cfg`` accepts."""
    e = cfg.engine
    while True:
        op = rng.choice(OPS)
        kh, kw = pick(rng, 7), pick(rng, 7)
        pads = [rng.randint(0, (k // 2) if op == WIN_MAX else k - 1) for k in (kh, kw)]
        c = pick(rng, min(cfg.max_channels, 40))
        d = w({"in_c": c, "out_c": c, "kernel_h": kh, "kernel_w": kw, "pad_h": pads[0],
               "pad_w": pads[1], "stride_h": pick(rng, 4), "stride_w": pick(rng, 4),
               "in_h": pick(rng, 12), "in_w": pick(rng, 12),
               "m_block": pick(rng, cfg.acc_entries), "flags": op,
               "engine": rng.randrange(len(cfg.engines)) if op == DEPTHWISE else 0})
        if d["out_h"] < 1 or d["out_w"] < 1 or kh * kw > e.max_k:
            continue
        s = ref_sizes(cfg, d)
        if s["acts"] > cfg.fmap_vectors or s["wrows"] > cfg.weight_rows:
            continue
        if op == DEPTHWISE and rng.random() < 0.3:
            d["flags"] |= REUSE_FLAG
        if rng.random() < 0.3:
            d["flags"] |= CLAMP
            d["clamp_lo"], d["clamp_hi"] = 0, 6
        if cfg.fmap_banks == 2 and rng.random() < 0.2:
            d["flags"] |= KEEP
        assert ref_error(cfg, d, matching_reuse(cfg, d)) == 0, d
        return d


def test_random_window_descriptors():
    """Random window runs, valid and mutated (a field or two, the flags often), on the three
    cores: the code the reference gives and, when 0, every size."""
    for name, cfg in (("square", SQUARE), ("no_lanes", NO_LANES), ("multi", MULTI)):
        rng = random.Random(f"window-{name}")
        cases = []
        for i in range(150):
            d = random_window_desc(MULTI if name == "multi" else SQUARE, rng)
            if i % 3:
                d = mutate(cfg, d, rng)
                if rng.random() < 0.5:
                    d["flags"] ^= rng.choice((*OPS, REUSE_FLAG, SHIFT))
            reuse = matching_reuse(cfg, d) if rng.random() < 0.7 else None
            if reuse and rng.random() < 0.3:
                reuse["window"] = rng.randrange(8)
            cases.append((d, reuse))
        results = run_setup(cfg, cases)
        codes = [ref_error(cfg, d, r) for d, r in cases]
        want = {0, DESCRIPTOR} if name != "no_lanes" else {WINDOW, DESCRIPTOR}
        assert want <= set(codes), (name, codes)
        check(cfg, cases, results)
        if name != "no_lanes":
            assert sum(window_of(d) != 0 and c == 0 for (d, _), c in zip(cases, codes)) > 30
