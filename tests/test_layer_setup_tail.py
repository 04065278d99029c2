"""The fused tail's descriptor rules in :class:`mulfree.rtl.layer_setup.LayerSetup`.

Every rule of ``docs/interface.md`` ("The descriptor", words 5 and 6, ``flags.residual``,
``flags.res_relu``, ``flags.clamp``) at its ends and one past, and the shortcut buffer's limit
(``TOO_BIG``), against the references of :mod:`test_layer_setup` (``ref_error``,
``tail_error``), which share no code with the RTL.
"""

from mulfree.params.core_config import res_shift_range

from test_layer_setup import (BASE, BASE_CFG, CLAMP, DESCRIPTOR, RESIDUAL, RES_RELU, SHIFT,
                              TOO_BIG, check, core, ref_error, ref_sizes, run_setup)


def tail_cases():
    """``(desc, reuse, expected)`` for every rule of the fused tail's fields and flags, each
    at its ends and one past (``BASE_CFG``: act_bits 8, shortcut_vectors 1024)."""
    lo, hi = -128, 127
    s_lo, s_hi = res_shift_range(8)
    res = dict(BASE, flags=RESIDUAL)
    cases = [(res, None, 0), (dict(BASE, flags=RESIDUAL | RES_RELU), None, 0),
             (dict(BASE, flags=RES_RELU), None, DESCRIPTOR),
             (dict(BASE, flags=CLAMP), None, 0),
             (dict(BASE, flags=CLAMP | RESIDUAL | RES_RELU | SHIFT), None, 0)]
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
    # Reserved bits 31:24 of word 6, alone and with a valid residual.
    for reserved in (1, 0x80, 0xFF):
        cases += [(dict(BASE, reserved=reserved), None, DESCRIPTOR),
                  (dict(res, reserved=reserved, res_shift=1), None, DESCRIPTOR)]
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
    res = dict(BASE, flags=RESIDUAL | RES_RELU, res_shift=2)
    for at, d, want in ((40, res, 0), (39, res, TOO_BIG), (0, res, TOO_BIG), (0, BASE, 0),
                        (1, dict(BASE, flags=CLAMP), 0),
                        # Wider: NT = 3 on 3 columns, 60 vectors.
                        (60, dict(res, out_c=7), 0), (59, dict(res, out_c=7), TOO_BIG)):
        cfg = core(5, 3, shortcut_vectors=at)
        assert ref_error(cfg, d) == want
        [r] = run_setup(cfg, [(d, None)])
        assert r.error == want, f"shortcut_vectors = {at}: error {r.error}, expected {want}"
        if want == 0:
            assert r.sizes["scv"] == ref_sizes(cfg, d)["scv"]
