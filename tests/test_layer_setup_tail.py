"""The fused tail's descriptor rules in :class:`mulfree.rtl.layer_setup.LayerSetup`.

Every rule of ``docs/interface.md`` ("The descriptor", words 5 to 7, ``flags.residual``,
``flags.res_relu``, ``flags.clamp``) at its ends and one past, and the shortcut buffer's limit
(``TOO_BIG``), against the references of :mod:`test_layer_setup` (``ref_error``,
``tail_error``), which share no code with the RTL.
"""

from mulfree.params.core_config import pool_shift_range, res_shift_range

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig

from test_layer_setup import (BASE, BASE_CFG, CLAMP, DESCRIPTOR, ENGINE, GLOBAL_POOL, REUSE,
                              REUSE_FLAG, RESIDUAL, RES_RELU, SHIFT, TOO_BIG, check, core,
                              matching_reuse, ref_error, ref_sizes, run_setup)

#: The identity shortcut of BASE (5 output channels): word 7 of a plain residual.
IDENTITY = {"short_c": 5, "short_off": 0, "short_stride": 1}


def tail_cases():
    """``(desc, reuse, expected)`` for every rule of the fused tail's fields and flags, each
    at its ends and one past (``BASE_CFG``: act_bits 8, shortcut_vectors 1024)."""
    lo, hi = -128, 127
    s_lo, s_hi = res_shift_range(8)
    res = dict(BASE, flags=RESIDUAL, **IDENTITY)
    cases = [(res, None, 0), (dict(BASE, flags=RESIDUAL | RES_RELU, **IDENTITY), None, 0),
             (dict(BASE, flags=RES_RELU), None, DESCRIPTOR),
             (dict(BASE, flags=CLAMP), None, 0),
             (dict(BASE, flags=CLAMP | RESIDUAL | RES_RELU | SHIFT, **IDENTITY), None, 0)]
    # The clamp's bounds: in act_range, lo <= hi; both 0 without the flag.
    for c_lo, c_hi, want in ((lo, hi, 0), (lo - 1, hi, DESCRIPTOR), (lo, hi + 1, DESCRIPTOR),
                             (0, 6, 0), (4, 4, 0), (5, 4, DESCRIPTOR), (hi, hi, 0),
                             (lo, lo, 0), (hi, lo, DESCRIPTOR), (-32768, 32767, DESCRIPTOR),
                             (32767, 32767, DESCRIPTOR), (-32768, -32768, DESCRIPTOR)):
        cases.append((dict(BASE, flags=CLAMP, clamp_lo=c_lo, clamp_hi=c_hi), None, want))
    for c_lo, c_hi in ((1, 0), (0, 1), (-1, 0), (0, -1), (lo, hi)):
        cases.append((dict(BASE, clamp_lo=c_lo, clamp_hi=c_hi), None, DESCRIPTOR))
    # The residual's shifts: 0..15 and [-a, a + 16]; all 0 without the flag.
    for name in ("res_main_shift", "res_short_shift"):
        cases += [(dict(res, **{name: 15}), None, 0), (dict(res, **{name: 16}), None, DESCRIPTOR),
                  (dict(res, **{name: 255}), None, DESCRIPTOR),
                  (dict(BASE, **{name: 1}), None, DESCRIPTOR),
                  (dict(BASE, flags=CLAMP, **{name: 15}), None, DESCRIPTOR)]
    for shift, want in ((s_lo, 0), (s_lo - 1, DESCRIPTOR), (s_hi, 0), (s_hi + 1, DESCRIPTOR),
                        (-1, 0), (-128, DESCRIPTOR), (127, DESCRIPTOR)):
        cases.append((dict(res, res_shift=shift), None, want))
    for shift in (-1, 1, s_hi):
        cases.append((dict(BASE, res_shift=shift), None, DESCRIPTOR))
    # The shortcut's source (word 7): short_c >= 1, short_stride >= 1, short_off + short_c
    # <= out_c (5); all 0 without the flag.
    for fields, want in (({"short_c": 1}, 0), ({"short_c": 0}, DESCRIPTOR),
                         ({"short_stride": 0}, DESCRIPTOR), ({"short_stride": 15}, 0),
                         ({"short_c": 4, "short_off": 1}, 0),
                         ({"short_c": 4, "short_off": 2}, DESCRIPTOR),
                         ({"short_c": 1, "short_off": 4}, 0),
                         ({"short_c": 1, "short_off": 5}, DESCRIPTOR),
                         ({"short_c": 5, "short_off": 255}, DESCRIPTOR),
                         ({"short_c": 65535}, DESCRIPTOR)):
        cases.append((dict(res, **fields), None, want))
    for name, value in (("short_c", 1), ("short_off", 1), ("short_stride", 1),
                        ("short_c", 65535), ("short_stride", 15)):
        cases.append((dict(BASE, **{name: value}), None, DESCRIPTOR))
        cases.append((dict(BASE, flags=CLAMP, **{name: value}), None, DESCRIPTOR))
    # Word 7's bits 31:28 are the engine (interface 2.1): a one-engine core has engine 0
    # only (ENGINE), a descriptor error is reported first.
    for engine in (1, 0x8, 0xF):
        cases += [(dict(BASE, engine=engine), None, ENGINE),
                  (dict(res, engine=engine, res_shift=1), None, ENGINE),
                  (dict(res, engine=engine, res_shift=-128), None, DESCRIPTOR)]
    return cases


def test_tail_checks():
    cases = tail_cases()
    results = run_setup(BASE_CFG, [(d, r) for d, r, _ in cases])
    assert [ref_error(BASE_CFG, d, r) for d, r, _ in cases] == [w for _, _, w in cases]
    check(BASE_CFG, [(d, r) for d, r, _ in cases], results, expected=[w for _, _, w in cases])


def test_shortcut_limit():
    """A residual's shortcut (out_h*out_w*NT = 20*2 = 40 vectors for BASE) against
    shortcut_vectors: at the limit runs, one less and 0 (no buffer) are TOO_BIG; a layer
    without the flag runs on any core."""
    res = dict(BASE, flags=RESIDUAL | RES_RELU, res_shift=2, **IDENTITY)
    # The source of a stride-2 shortcut of 2 channels at offset 3: 80 SHORTCUT vectors sent,
    # the aligned shortcut still 40.
    wide = dict(res, short_c=2, short_off=3, short_stride=2)
    for at, d, want in ((40, res, 0), (39, res, TOO_BIG), (0, res, TOO_BIG), (0, BASE, 0),
                        (1, dict(BASE, flags=CLAMP), 0),
                        (40, wide, 0), (39, wide, TOO_BIG),
                        # Wider: NT = 3 on 3 columns, 60 vectors.
                        (60, dict(res, out_c=7), 0), (59, dict(res, out_c=7), TOO_BIG)):
        cfg = core(5, 3, shortcut_vectors=at)
        assert ref_error(cfg, d) == want
        [r] = run_setup(cfg, [(d, None)])
        assert r.error == want, f"shortcut_vectors = {at}: error {r.error}, expected {want}"
        if want == 0:
            for size in ("scv", "dcv"):
                assert r.sizes[size] == ref_sizes(cfg, d)[size]
    assert ref_sizes(cfg, wide)["scv"] == 80


def test_pool_checks():
    """The global pool's fields (word 6 bits 31:24, flags.global_pool): ``pool_shift`` in
    ``pool_shift_range(8, pool_pixels)`` with the flag (ends run, one past is DESCRIPTOR), 0
    without it; the map (BASE: 20 pixels) at most ``pool_pixels`` (TOO_BIG above, and on a
    core without a pool unit); a bad pool_shift is DESCRIPTOR before a map that is too big."""
    pool = dict(BASE, flags=GLOBAL_POOL)
    for pixels in (20, 21, 4096):
        cfg = core(5, 3, pool_pixels=pixels)
        p_lo, p_hi = pool_shift_range(8, pixels)
        assert (p_lo, p_hi) == (-8, {20: 13, 21: 13, 4096: 20}[pixels])
        cases = [(dict(pool, pool_shift=s), w) for s, w in
                 ((p_lo, 0), (p_hi, 0), (0, 0), (p_lo - 1, DESCRIPTOR), (p_hi + 1, DESCRIPTOR),
                  (-128, DESCRIPTOR), (127, DESCRIPTOR))]
        cases += [(dict(BASE, pool_shift=s), DESCRIPTOR) for s in (1, -1, p_hi, -128)]
        cases += [(dict(BASE, flags=CLAMP | RESIDUAL, pool_shift=1, **IDENTITY), DESCRIPTOR),
                  (dict(pool, flags=GLOBAL_POOL | CLAMP | RESIDUAL | RES_RELU, pool_shift=p_hi,
                        **IDENTITY), 0)]
        results = run_setup(cfg, [(d, None) for d, _ in cases])
        assert [ref_error(cfg, d) for d, _ in cases] == [w for _, w in cases]
        check(cfg, [(d, None) for d, _ in cases], results, expected=[w for _, w in cases])
    for pixels, d, want in ((19, pool, TOO_BIG), (0, pool, TOO_BIG), (1, pool, TOO_BIG),
                            (0, BASE, 0), (19, BASE, 0),
                            (19, dict(pool, pool_shift=100), DESCRIPTOR),
                            (0, dict(pool, flags=GLOBAL_POOL | CLAMP), TOO_BIG)):
        cfg = core(5, 3, pool_pixels=pixels)
        assert ref_error(cfg, d) == want
        [r] = run_setup(cfg, [(d, None)])
        assert r.error == want, f"pool_pixels = {pixels}: error {r.error}, expected {want}"


def test_engine_field():
    """A core of three engines (interface 2.1): engines 0..2 run, 3 and 15 are ENGINE; the
    order DESCRIPTOR, ENGINE, TOO_BIG, REUSE; K > max_k stays TOO_BIG (max_k is shared);
    REUSE when the previous run's engine is another."""
    kinds = [ArrayConfig(pe=pe, rows=5, cols=3, max_k=300) for pe in ("adder", "shift", "mult")]
    cfg = CoreConfig(engine=kinds[0], extra_engines=tuple(kinds[1:]), fmap_vectors=200,
                     acc_entries=40, weight_rows=600, max_channels=24, shortcut_vectors=60)
    res = dict(BASE, flags=RESIDUAL, **IDENTITY)
    big_k = dict(BASE, in_c=34)                 # K = 306 > max_k = 300
    cases = [(dict(BASE, engine=k), None, 0) for k in range(3)]
    cases += [(dict(res, engine=2), None, 0), (dict(BASE, engine=3), None, ENGINE),
              (dict(BASE, engine=15), None, ENGINE),
              (dict(BASE, engine=3, stride_h=0), None, DESCRIPTOR),
              (dict(res, engine=4, short_c=0), None, DESCRIPTOR),
              (dict(big_k, engine=2), None, TOO_BIG), (dict(big_k, engine=3), None, ENGINE),
              (dict(BASE, engine=2, m_block=41), None, TOO_BIG),
              (dict(BASE, engine=3, m_block=41), None, ENGINE),
              (dict(BASE, engine=1, flags=REUSE_FLAG), None, REUSE),
              (dict(BASE, engine=3, flags=REUSE_FLAG), None, ENGINE),
              # REUSE compares the engine too (interface 2.2).
              (dict(BASE, engine=1, flags=REUSE_FLAG), matching_reuse(cfg, BASE), REUSE),
              (dict(BASE, engine=1, flags=REUSE_FLAG), dict(matching_reuse(cfg, BASE),
                                                            engine=1), 0),
              (dict(BASE, engine=0, flags=REUSE_FLAG), dict(matching_reuse(cfg, BASE),
                                                            engine=2), REUSE)]
    results = run_setup(cfg, [(d, r) for d, r, _ in cases])
    assert [ref_error(cfg, d, r) for d, r, _ in cases] == [w for _, _, w in cases]
    check(cfg, [(d, r) for d, r, _ in cases], results, expected=[w for _, _, w in cases])


def test_shortcut_map_width():
    """``sm = sh * sw`` takes ``sw = out_w * short_stride`` as the multiplier's 16-bit
    operand: a residual whose ``sw`` reaches 65536 is TOO_BIG (it would truncate), 65535 and
    below run with exact sizes."""
    cfg = core(1, 4, max_k=64, fmap_vectors=1 << 17, acc_entries=16, weight_rows=64,
               max_channels=16, shortcut_vectors=1 << 17)
    row = {"in_h": 1, "in_c": 1, "out_c": 1, "out_h": 1, "kernel_h": 1, "kernel_w": 1,
           "stride_h": 1, "stride_w": 1, "pad_h": 0, "pad_w": 0, "m_block": 16,
           "flags": RESIDUAL, "short_c": 1, "short_off": 0}
    cases = []
    for out_w, stride, want in ((32767, 2, 0), (32768, 2, TOO_BIG), (65535, 1, 0),
                                (21845, 3, 0), (21846, 3, TOO_BIG), (4369, 15, 0),
                                (4370, 15, TOO_BIG), (65535, 15, TOO_BIG)):
        cases.append((dict(row, in_w=out_w, out_w=out_w, short_stride=stride), None, want))
    assert [ref_error(cfg, d) for d, _, _ in cases] == [w for _, _, w in cases]
    results = run_setup(cfg, [(d, r) for d, r, _ in cases])
    check(cfg, [(d, r) for d, r, _ in cases], results, expected=[w for _, _, w in cases])
