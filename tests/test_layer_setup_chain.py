"""Layer chaining's setup rules (interface 2.2): error RESIDENT, the chaining TOO_BIG sizes and
REUSE's engine, ``LayerSetup`` in the Amaranth simulator against ``ref_error`` (written from
``CORE_ERRORS``, ``tests/test_layer_setup.py``) and against the expected codes listed here."""

import random

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig

from test_layer_setup import (ACTS_RESIDENT, BASE, DESCRIPTOR, ENGINE, GLOBAL_POOL, IN_BANK,
                               KEEP, QUIET, RESIDENT, RESIDUAL, REUSE, REUSE_FLAG,
                               SHORT_RESIDENT, TOO_BIG, check, core, matching_reuse, ref_error,
                               run_setup)

NONE = (0, (0, 0, 0))
#: BASE's input (in_c, in_h, in_w) = (7, 4, 5); its output (5, 4, 5).
IN_SHAPE = (1, (7, 4, 5))
#: BASE with a residual of stride 2 from 3 channels: the source map is 8 x 10.
RES2 = dict(BASE, flags=RESIDUAL, short_c=3, short_off=1, short_stride=2)
SHORT_SHAPE = (1, (3, 8, 10))


def banks(b0=NONE, b1=NONE, **reuse):
    return dict(reuse, banks=[b0, b1])


def rule_cases():
    """``(desc, state, expected)``: each RESIDENT rule alone, on each bank, and at its edge."""
    f = lambda d, flags: dict(d, flags=d["flags"] | flags)      # noqa: E731
    cases = [
        # Flags that need nothing resident run on an empty core.
        (f(BASE, IN_BANK), None, 0), (f(BASE, KEEP), None, 0), (f(BASE, KEEP | QUIET), None, 0),
        (f(BASE, KEEP | IN_BANK | GLOBAL_POOL), None, 0),
        # quiet without keep.
        (f(BASE, QUIET), None, RESIDENT), (f(BASE, QUIET | IN_BANK), None, RESIDENT),
    ]
    for b, flag in ((0, 0), (1, IN_BANK)):
        mine = lambda s: banks(s, NONE) if b == 0 else banks(NONE, s)     # noqa: E731
        other = lambda s: banks(NONE, s) if b == 0 else banks(s, NONE)    # noqa: E731
        d = f(BASE, flag | ACTS_RESIDENT)
        cases += [(d, mine(IN_SHAPE), 0), (d, None, RESIDENT), (d, other(IN_SHAPE), RESIDENT),
                  (d, mine((0, IN_SHAPE[1])), RESIDENT)]
        for k in range(3):          # one dimension off by one
            shape = list(IN_SHAPE[1])
            shape[k] += 1
            cases.append((d, mine((1, tuple(shape))), RESIDENT))
        d = f(RES2, flag | SHORT_RESIDENT)
        cases += [(d, other(SHORT_SHAPE), 0), (d, mine(SHORT_SHAPE), RESIDENT),
                  (d, other((0, SHORT_SHAPE[1])), RESIDENT), (d, None, RESIDENT),
                  (d, other((1, (3, 4, 5))), RESIDENT),       # the output's map, not the source's
                  (d, other((1, (4, 8, 10))), RESIDENT),
                  # in place: resident input and shortcut, kept output.
                  (f(d, ACTS_RESIDENT | KEEP), banks(IN_SHAPE, SHORT_SHAPE) if b == 0
                   else banks(SHORT_SHAPE, IN_SHAPE), 0)]
        # short_resident without a residual.
        cases.append((f(BASE, flag | SHORT_RESIDENT), other(SHORT_SHAPE), RESIDENT))
    return cases


def test_resident_rules():
    cfg = CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=4, max_k=4096),
                     fmap_vectors=1 << 12, acc_entries=64, weight_rows=1 << 12,
                     max_channels=64, shortcut_vectors=1024)
    cases = rule_cases()
    results = run_setup(cfg, [(d, r) for d, r, _ in cases])
    assert [ref_error(cfg, d, r) for d, r, _ in cases] == [w for _, _, w in cases]
    check(cfg, [(d, r) for d, r, _ in cases], results, expected=[w for _, _, w in cases])


def test_one_bank_core():
    """A 2.1-style core (one bank) refuses every chaining flag, whatever the state says."""
    cfg = core(5, 3, shortcut_vectors=1024)
    assert cfg.fmap_banks == 1
    full = banks(IN_SHAPE, SHORT_SHAPE)
    cases = [(dict(BASE, flags=flag), full, RESIDENT) for flag in (IN_BANK, KEEP, ACTS_RESIDENT)]
    cases += [(dict(RES2, flags=RESIDUAL | SHORT_RESIDENT), banks(NONE, SHORT_SHAPE), RESIDENT),
              (dict(BASE, flags=KEEP | QUIET), None, RESIDENT), (BASE, full, 0)]
    results = run_setup(cfg, [(d, r) for d, r, _ in cases])
    check(cfg, [(d, r) for d, r, _ in cases], results, expected=[w for _, _, w in cases])


def test_sizes_and_order():
    """TOO_BIG for kept results (M*NT, NT with a global pool) and a resident shortcut
    (SH*SW*NTS) beyond fmap_vectors, at the edge; RESIDENT after DESCRIPTOR and ENGINE,
    before TOO_BIG and REUSE; REUSE compares the engine."""
    # BASE on 4x4: in 4*5*2 = 40 vectors, out M*NT = 20*2 = 40; RES2's source 8*10*1 = 80.
    small = dict(engine=ArrayConfig(pe="shift", rows=4, cols=4, max_k=4096), acc_entries=64,
                 weight_rows=1 << 12, max_channels=64, shortcut_vectors=1024, pool_pixels=64)
    at = CoreConfig(fmap_vectors=80, **small)
    below = CoreConfig(fmap_vectors=79, **small)
    keep = dict(BASE, out_c=9, flags=KEEP)        # NT = 3: 60 results
    res = dict(RES2, flags=RESIDUAL | SHORT_RESIDENT)
    for cfg, want in ((at, 0), (below, TOO_BIG)):
        cases = [(dict(res, out_c=16, in_c=4), banks(NONE, SHORT_SHAPE), want),
                 (dict(keep, out_c=16), None, want),                    # 20 * 4 = 80
                 (dict(keep, out_c=16, flags=KEEP | GLOBAL_POOL), None, 0),
                 (keep, None, 0)]
        results = run_setup(cfg, [(d, r) for d, r, _ in cases])
        check(cfg, [(d, r) for d, r, _ in cases], results, expected=[w for _, _, w in cases])
    cfg = below
    big = dict(BASE, out_c=16, flags=KEEP | QUIET)
    cases = [(dict(big, flags=QUIET), None, RESIDENT),                     # before TOO_BIG
             (dict(big, flags=QUIET, m_block=0), None, DESCRIPTOR),
             (dict(big, flags=QUIET, engine=1), None, ENGINE),
             (dict(BASE, flags=QUIET | REUSE_FLAG), None, RESIDENT),       # before REUSE
             (big, None, TOO_BIG),
             (dict(BASE, flags=REUSE_FLAG), matching_reuse(cfg, BASE), 0),
             (dict(BASE, flags=REUSE_FLAG), dict(matching_reuse(cfg, BASE), engine=1), REUSE)]
    results = run_setup(cfg, [(d, r) for d, r, _ in cases])
    assert [ref_error(cfg, d, r) for d, r, _ in cases] == [w for _, _, w in cases]
    check(cfg, [(d, r) for d, r, _ in cases], results, expected=[w for _, _, w in cases])


def test_random_states():
    """Random chaining flags against random bank states near the right shapes."""
    rng = random.Random(22)
    cfg = CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=4, max_k=4096),
                     fmap_vectors=96, acc_entries=64, weight_rows=1 << 12, max_channels=64,
                     shortcut_vectors=1024)
    flags = (IN_BANK, ACTS_RESIDENT, KEEP, QUIET, SHORT_RESIDENT, RESIDUAL, GLOBAL_POOL)
    cases = []
    for _ in range(300):
        d = dict(RES2 if rng.random() < 0.5 else BASE)
        d["flags"] = d["flags"] | sum(f for f in flags[:5] if rng.random() < 0.4)
        d["out_c"] = rng.choice((5, 9, 16, 20))
        state = []
        for _ in range(2):
            shape = rng.choice((IN_SHAPE[1], SHORT_SHAPE[1], (7, 4, 6), (3, 8, 11)))
            state.append((int(rng.random() < 0.7), shape))
        cases.append((d, {"banks": state}))
    assert {ref_error(cfg, d, r) for d, r in cases} >= {0, RESIDENT, TOO_BIG}
    check(cfg, cases, run_setup(cfg, cases))
