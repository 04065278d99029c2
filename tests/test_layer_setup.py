"""``mulfree.rtl.layer_setup.LayerSetup`` in the Amaranth simulator.

The unit checks a layer descriptor and derives the sizes the controller walks by, with a
sequential adder (shift-add multiplication, restoring division). Its answers are compared with
two references that share no code with it:

* the definitions of ``docs/interface.md`` ("Stream formats", "The descriptor"), written out
  below as plain Python arithmetic (:func:`ref_sizes`, :func:`ref_error`);
* the host's :mod:`mulfree.host.layer_stream` (``layer_geometry``, ``check_layer``,
  ``descriptor_words``) on random :class:`~mulfree.host.layer_stream.Layer` objects.

Many descriptors run back to back in one simulation (:func:`run_setup`), so the file stays
fast; the results are compared outside the simulator so that a failure names the descriptor.
"""

import dataclasses
import math
import random

import numpy as np
import pytest
from amaranth.sim import Simulator

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import (CORE_ERRORS, DESC_FIELDS, DESC_FLAGS, DESC_SIGNED,
                                        RES_MAX_SHIFT, CoreConfig, res_shift_range)
from mulfree.gen.core_manifest import core_manifest
from mulfree.host import layer_stream as ls
from mulfree.host.core_layer import tail_fields
from mulfree.rtl.layer_setup import SIZES, STEPS, LayerSetup, desc_layout
from mulfree.params.layer_golden import PostParams, ResidualParams


CODES = {name: code for code, name, _ in CORE_ERRORS}
DESCRIPTOR, TOO_BIG, REUSE = CODES["DESCRIPTOR"], CODES["TOO_BIG"], CODES["REUSE"]
WIDTHS = {name: width for _, _, width, name in DESC_FIELDS}
ZERO_CHECKED = ("in_h", "in_w", "in_c", "out_c", "out_h", "out_w", "kernel_h", "kernel_w",
                "stride_h", "stride_w", "m_block")
SHIFT, REUSE_FLAG = 1 << DESC_FLAGS["shift"], 1 << DESC_FLAGS["reuse_weights"]
RESIDUAL, RES_RELU, CLAMP = (1 << DESC_FLAGS[n] for n in ("residual", "res_relu", "clamp"))
KNOWN_FLAGS = SHIFT | REUSE_FLAG | RESIDUAL | RES_RELU | CLAMP
TAIL_FIELDS = ("clamp_lo", "clamp_hi", "res_main_shift", "res_short_shift", "res_shift")
SIZE_BITS = 48


def core(rows, cols, *, pe="shift", max_k=None, arch="array", act_bits=8, weight_bits=None,
         **buffers):
    """A CoreConfig whose engine is ``rows x cols``; unlisted buffers are generous."""
    engine = ArrayConfig(pe=pe, rows=rows, cols=cols, act_bits=act_bits,
                         weight_bits=weight_bits, arch=arch,
                         max_k=max_k if max_k is not None else max(rows, 1 << 12))
    params = dict(fmap_vectors=1 << 16, acc_entries=1 << 10, weight_rows=1 << 16,
                  max_channels=1 << 12)
    params.update(buffers)
    return CoreConfig(engine=engine, **params)


#: Small and odd engines with tight buffers (power-of-two divisors are shifts in the RTL,
#: others a restoring division; shortcut buffers of 60, 0 and 8 vectors), a 1-row engine, a wide 7x16 adder, a tree, a
#: 1x1 engine with the largest buffers (fields reach 65535) and a 1024x1000 one (large
#: divisors). ``max_k`` stays below 65537 everywhere, see ``test_weight_rows_beyond_32_bits``.
CONFIGS = {
    "r5c3": core(5, 3, max_k=300, fmap_vectors=200, acc_entries=40, weight_rows=600,
                 max_channels=24, shortcut_vectors=60),
    "r8c6": core(8, 6, max_k=500, fmap_vectors=300, acc_entries=32, weight_rows=2000,
                 max_channels=40),
    "r1c4": core(1, 4, max_k=64, fmap_vectors=500, acc_entries=7, weight_rows=100,
                 max_channels=20, shortcut_vectors=0),
    "r7c16": core(7, 16, pe="adder", max_k=2000, fmap_vectors=1024, acc_entries=256,
                  weight_rows=4096, max_channels=100),
    "tree3x2": core(3, 2, pe="mult", arch="tree", max_k=50, fmap_vectors=16, acc_entries=1,
                    weight_rows=30, max_channels=1, shortcut_vectors=8),
    "big1x1": core(1, 1, act_bits=2, weight_bits=2, max_k=1 << 16, fmap_vectors=1 << 20,
                   acc_entries=1 << 16, weight_rows=1 << 20, max_channels=1 << 16),
    "r1024c1000": core(1024, 1000, max_k=1 << 15, fmap_vectors=1 << 20, acc_entries=1 << 16,
                       weight_rows=1 << 20, max_channels=1 << 16),
}


# The references -------------------------------------------------------------------------------

def cdiv(a, b):
    return -(-a // b)


def conv_out(size, kernel, stride, pad):
    """``(in + 2 pad - kernel) div stride + 1`` (floor division: <= 0 if the kernel does not
    fit the padded map)."""
    return (size + 2 * pad - kernel) // stride + 1


def ref_sizes(cfg, d):
    """Every entry of ``SIZES`` from its definition in ``docs/interface.md``."""
    r, c = cfg.engine.rows, cfg.engine.cols
    kk = d["kernel_h"] * d["kernel_w"]
    ct, nt = cdiv(d["in_c"], r), cdiv(d["out_c"], c)
    s = {"kk": kk, "k": kk * d["in_c"], "ct": ct, "nt": nt, "kt": kk * ct,
         "nkt": nt * kk * ct, "wrows": nt * kk * ct * r, "row": d["in_w"] * ct,
         "acts": d["in_h"] * d["in_w"] * ct, "sct": d["stride_w"] * ct,
         "srow": d["stride_h"] * d["in_w"] * ct, "m": d["out_h"] * d["out_w"],
         "eh": (d["out_h"] - 1) * d["stride_h"], "ew": (d["out_w"] - 1) * d["stride_w"]}
    s["scv"] = s["m"] * nt
    assert set(s) == set(SIZES)
    return s


def sval(d, name):
    """Field ``name`` of ``d`` as an integer: a signed field may be held in two's complement
    (as the words carry it) or as a negative number."""
    v = d.get(name, 0)
    w = WIDTHS[name]
    if name in DESC_SIGNED and v >= 1 << (w - 1):
        v -= 1 << w
    return v


def tail_error(cfg, d):
    """``docs/interface.md``'s rules of the descriptor's word 5 and 6 fields and the tail's
    flags: True if they make the descriptor inconsistent."""
    a = cfg.engine.act_bits
    lo, hi = -(1 << (a - 1)), (1 << (a - 1)) - 1
    c_lo, c_hi = sval(d, "clamp_lo"), sval(d, "clamp_hi")
    if d["flags"] & CLAMP:
        if not lo <= c_lo <= c_hi <= hi:
            return True
    elif (c_lo, c_hi) != (0, 0):
        return True
    main, short, shift = (sval(d, n) for n in ("res_main_shift", "res_short_shift",
                                               "res_shift"))
    if d["flags"] & RESIDUAL:
        s_lo, s_hi = res_shift_range(a)
        return not (0 <= main <= RES_MAX_SHIFT and 0 <= short <= RES_MAX_SHIFT
                    and s_lo <= shift <= s_hi)
    return (main, short, shift) != (0, 0, 0) or bool(d["flags"] & RES_RELU)


def ref_error(cfg, d, reuse=None):
    """The error code the descriptor deserves: DESCRIPTOR, then TOO_BIG, then REUSE, else 0."""
    e, reuse = cfg.engine, reuse or {}
    if any(d[name] == 0 for name in ZERO_CHECKED) or d["flags"] & ~KNOWN_FLAGS:
        return DESCRIPTOR
    if d.get("reserved", 0) or tail_error(cfg, d):
        return DESCRIPTOR
    if d["pad_h"] >= d["kernel_h"] or d["pad_w"] >= d["kernel_w"]:
        return DESCRIPTOR
    if (d["out_h"] != conv_out(d["in_h"], d["kernel_h"], d["stride_h"], d["pad_h"])
            or d["out_w"] != conv_out(d["in_w"], d["kernel_w"], d["stride_w"], d["pad_w"])):
        return DESCRIPTOR
    s, shift = ref_sizes(cfg, d), bool(d["flags"] & SHIFT)
    if (s["k"] > e.max_k or d["out_c"] > cfg.max_channels
            or (shift and d["in_c"] > cfg.max_channels) or d["m_block"] > cfg.acc_entries
            or s["acts"] > cfg.fmap_vectors or s["wrows"] > cfg.weight_rows
            or (d["flags"] & RESIDUAL and s["scv"] > cfg.shortcut_vectors)):
        return TOO_BIG
    if d["flags"] & REUSE_FLAG and (
            not reuse.get("valid", 0) or reuse.get("rows", 0) != s["wrows"]
            or reuse.get("channels", 0) != d["out_c"]
            or reuse.get("tiles", 0) != (s["ct"] if shift else 0)):
        return REUSE
    return 0


def matching_reuse(cfg, d):
    """Reuse inputs that match ``d``: what a previous run of the same weights loaded."""
    s = ref_sizes(cfg, d)
    return {"valid": 1, "rows": s["wrows"], "channels": d["out_c"],
            "tiles": s["ct"] if d["flags"] & SHIFT else 0}


# The simulation -------------------------------------------------------------------------------

_LAYOUT = desc_layout()


def pack_desc(d):
    """The descriptor vector of the fields ``d`` (signed ones raw or negative)."""
    value = 0
    for name, f in _LAYOUT:
        v, w = d.get(name, 0), f.shape.width
        lo = -(1 << (w - 1)) if name in DESC_SIGNED else 0
        assert lo <= v < 1 << w, f"{name} = {v} does not fit {w} bits"
        value |= (v & ((1 << w) - 1)) << f.offset
    return value


def desc_from_words(words):
    """The descriptor fields of its seven 32-bit words (``descriptor_words``' format);
    signed fields raw."""
    return {name: (words[w] >> lo) & ((1 << width) - 1) for w, lo, width, name in DESC_FIELDS}


def words_with(words, **fields):
    """``words`` with ``fields`` overwritten (each must fit its width)."""
    words = list(words)
    for w, lo, width, name in DESC_FIELDS:
        if name in fields:
            assert 0 <= fields[name] < 1 << width, (name, fields[name])
            words[w] = words[w] & ~(((1 << width) - 1) << lo) | fields[name] << lo
    return words


@dataclasses.dataclass
class Result:
    error: int
    sizes: dict
    cycles: int         # ticks from the cycle start is high to the cycle done is high
    pulse_ok: bool      # done was low before start and fell after one cycle


def run_setup(cfg, cases):
    """Run ``cases`` (``(desc, reuse)`` pairs; ``reuse`` a dict of ``valid, rows, channels,
    tiles`` or None) back to back through one LayerSetup; return a :class:`Result` each."""
    dut = LayerSetup(cfg)
    results = []

    async def bench(ctx):
        for d, reuse in cases:
            reuse = reuse or {}
            ctx.set(dut.desc.as_value(), pack_desc(d))
            ctx.set(dut.reuse_valid, reuse.get("valid", 0))
            ctx.set(dut.reuse_rows, reuse.get("rows", 0))
            ctx.set(dut.reuse_channels, reuse.get("channels", 0))
            ctx.set(dut.reuse_tiles, reuse.get("tiles", 0))
            pulse_ok = ctx.get(dut.done) == 0
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            cycles = 1
            while not ctx.get(dut.done):
                await ctx.tick()
                cycles += 1
                assert cycles < 2000, "done never came"
            error = ctx.get(dut.error)
            sizes = {name: ctx.get(getattr(dut.sizes, name)) for name in SIZES}
            await ctx.tick()
            pulse_ok &= ctx.get(dut.done) == 0
            results.append(Result(error, sizes, cycles, pulse_ok))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(results) == len(cases)
    return results


def check(cfg, cases, results, *, sizes_when_ok=True, expected=None):
    """Compare each result with :func:`ref_error` (or ``expected[i]``) and, for error 0, every
    size with :func:`ref_sizes`. Collect all mismatches, then fail once."""
    bad = []
    for i, ((d, reuse), res) in enumerate(zip(cases, results)):
        want = ref_error(cfg, d, reuse) if expected is None else expected[i]
        if res.error != want:
            bad.append(f"error {res.error}, expected {want}: {d} reuse={reuse}")
            continue
        if want == 0 and sizes_when_ok:
            ref = ref_sizes(cfg, d)
            diff = {k: (res.sizes[k], ref[k]) for k in SIZES if res.sizes[k] != ref[k]}
            if diff:
                bad.append(f"sizes (rtl, ref) {diff}: {d}")
        if not res.pulse_ok:
            bad.append(f"done not a one-cycle pulse: {d}")
    assert not bad, f"{len(bad)} of {len(cases)} wrong:\n" + "\n".join(bad[:20])


# Random descriptors ---------------------------------------------------------------------------

def pick(rng, hi, lo=1):
    """An integer in ``[lo, hi]``: often an end, else log-uniform (small and large values)."""
    if hi <= lo:
        return lo
    u = rng.random()
    if u < 0.1:
        return hi
    if u < 0.2:
        return lo
    return min(hi, max(lo, int(math.exp(rng.uniform(math.log(lo), math.log(hi + 1))))))


def random_valid_desc(cfg, rng):
    """A descriptor the core must accept, drawn within ``cfg``'s limits."""
    e, fmax = cfg.engine, (1 << 16) - 1
    while True:
        shift = rng.random() < 0.5
        kh = pick(rng, min(255, e.max_k))
        kw = pick(rng, min(255, e.max_k // kh))
        kk = kh * kw
        in_c_max = min(fmax, e.max_k // kk, cfg.max_channels if shift else fmax)
        if in_c_max < 1:
            continue
        in_c = pick(rng, in_c_max)
        ct = cdiv(in_c, e.rows)
        nt_max = cfg.weight_rows // (kk * ct * e.rows)
        if nt_max < 1 or ct > cfg.fmap_vectors:
            continue
        out_c = pick(rng, min(fmax, cfg.max_channels, nt_max * e.cols))
        pixels = cfg.fmap_vectors // ct
        d = {"in_c": in_c, "out_c": out_c, "kernel_h": kh, "kernel_w": kw,
             "m_block": pick(rng, min(cfg.acc_entries, fmax))}
        dims = ["h", "w"]
        rng.shuffle(dims)
        for dim in dims:
            k = d[f"kernel_{dim}"]
            size = pick(rng, min(fmax, pixels))
            pixels //= size
            lo, hi = max(0, cdiv(k - size, 2)), min(k - 1, 15)     # the kernel must fit
            pad = rng.randint(lo, hi) if lo <= hi else None
            d.update({f"in_{dim}": size, f"pad_{dim}": pad, f"stride_{dim}": pick(rng, 15)})
        if d["pad_h"] is None or d["pad_w"] is None:
            continue
        d["out_h"] = conv_out(d["in_h"], kh, d["stride_h"], d["pad_h"])
        d["out_w"] = conv_out(d["in_w"], kw, d["stride_w"], d["pad_w"])
        if max(d["out_h"], d["out_w"]) > fmax:
            continue
        d["flags"] = SHIFT * shift | REUSE_FLAG * (rng.random() < 0.3)
        d.update(random_valid_tail(cfg, d, rng))
        assert ref_error(cfg, d, matching_reuse(cfg, d)) == 0, d
        return d


def random_valid_tail(cfg, d, rng):
    """Fields of a valid fused tail for ``d`` (``flags`` with the tail's bits added): a clamp
    a third of the time, a residual a third of the time if its shortcut fits."""
    a = cfg.engine.act_bits
    lo, hi = -(1 << (a - 1)), (1 << (a - 1)) - 1
    out = {name: 0 for name in TAIL_FIELDS}
    flags = d["flags"]
    if rng.random() < 0.35:
        ends = rng.choice(((lo, hi), (0, min(6, hi)), (lo, lo), (hi, hi),
                           tuple(sorted(rng.randint(lo, hi) for _ in range(2)))))
        out["clamp_lo"], out["clamp_hi"] = ends
        flags |= CLAMP
    if rng.random() < 0.35 and ref_sizes(cfg, d)["scv"] <= cfg.shortcut_vectors:
        s_lo, s_hi = res_shift_range(a)
        out.update(res_main_shift=rng.choice((0, RES_MAX_SHIFT, rng.randint(0, RES_MAX_SHIFT))),
                   res_short_shift=rng.choice((0, RES_MAX_SHIFT,
                                               rng.randint(0, RES_MAX_SHIFT))),
                   res_shift=rng.choice((s_lo, s_hi, 0, rng.randint(s_lo, s_hi))))
        flags |= RESIDUAL | RES_RELU * (rng.random() < 0.5)
    out["flags"] = flags
    return out


def mutate(cfg, d, rng):
    """``d`` with one or two fields replaced by random values, often near a limit."""
    d = dict(d)
    e = cfg.engine
    for _ in range(rng.choice((1, 1, 2))):
        name = rng.choice([n for n in WIDTHS if n != "flags"] + ["flags", "limit", "out"])
        if name == "flags":
            d["flags"] = rng.choice((0, 1, 2, 3, RESIDUAL, RES_RELU, CLAMP, CLAMP | RESIDUAL,
                                     d["flags"] ^ rng.choice((RESIDUAL, RES_RELU, CLAMP)),
                                     1 << 5, 1 << 15, rng.getrandbits(16)))
        elif name == "out":
            dim = rng.choice("hw")
            d[f"out_{dim}"] = max(0, d[f"out_{dim}"] + rng.choice((-1, 1)))
        elif name == "limit":
            target = rng.choice(("in_c", "out_c", "m_block"))
            limit = {"in_c": e.max_k // max(1, d["kernel_h"] * d["kernel_w"]),
                     "out_c": cfg.max_channels, "m_block": cfg.acc_entries}[target]
            d[target] = max(0, min(limit + rng.choice((-1, 0, 1)), (1 << 16) - 1))
        else:
            d[name] = rng.choice((0, 1, rng.getrandbits(WIDTHS[name]), d.get(name, 0) + 1,
                                  max(0, d.get(name, 0) - 1))) & ((1 << WIDTHS[name]) - 1)
    return d


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_random_valid(name):
    """Accepted descriptors (half with reuse_weights and matching reuse inputs): error 0 and
    every size as ``docs/interface.md`` defines it."""
    cfg, rng = CONFIGS[name], random.Random(f"valid-{name}")
    cases = []
    for _ in range(120):
        d = random_valid_desc(cfg, rng)
        cases.append((d, matching_reuse(cfg, d) if d["flags"] & REUSE_FLAG or
                      rng.random() < 0.5 else None))
    results = run_setup(cfg, cases)
    assert all(ref_error(cfg, d, r) == 0 for d, r in cases)
    check(cfg, cases, results)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_random_mutated(name):
    """Valid descriptors with a field or two changed: the code the reference gives."""
    cfg, rng = CONFIGS[name], random.Random(f"mutated-{name}")
    cases = []
    for _ in range(120):
        d = random_valid_desc(cfg, rng)
        reuse = matching_reuse(cfg, d) if rng.random() < 0.8 else None
        cases.append((mutate(cfg, d, rng), reuse))
    results = run_setup(cfg, cases)
    codes = [ref_error(cfg, d, r) for d, r in cases]
    # The draw covers every outcome.
    assert {0, DESCRIPTOR} <= set(codes) and (name == "big1x1" or TOO_BIG in codes), codes
    check(cfg, cases, results)


# Each check alone -----------------------------------------------------------------------------

#: 4x5 input, 7 channels (CT = 2 on 5 rows), 5 outputs (NT = 2 on 3 columns), 3x3 kernel,
#: pad 1, stride 1: out 4x5, K = 63, acts 40, weight rows 2 * 18 * 5 = 180.
BASE = {"in_h": 4, "in_w": 5, "in_c": 7, "out_c": 5, "out_h": 4, "out_w": 5, "kernel_h": 3,
        "kernel_w": 3, "stride_h": 1, "stride_w": 1, "pad_h": 1, "pad_w": 1, "m_block": 10,
        "flags": 0}
BASE_CFG = core(5, 3)


def with_out(d):
    """``d`` with out_h, out_w recomputed from the other fields."""
    d = dict(d)
    d["out_h"] = conv_out(d["in_h"], d["kernel_h"], d["stride_h"], d["pad_h"])
    d["out_w"] = conv_out(d["in_w"], d["kernel_w"], d["stride_w"], d["pad_w"])
    return d


def descriptor_cases():
    """``(desc, reuse, expected)`` for every DESCRIPTOR condition alone, and its boundary."""
    cases = [(BASE, None, 0)]
    cases += [(dict(BASE, **{name: 0}), None, DESCRIPTOR) for name in ZERO_CHECKED]
    cases += [(dict(BASE, flags=1 << b), None, DESCRIPTOR) for b in range(5, 16)]
    cases.append((dict(BASE, flags=SHIFT), None, 0))
    cases += tail_cases()
    for dim in "hw":
        k = f"kernel_{dim}"
        for pad, want in ((2, 0), (3, DESCRIPTOR), (4, DESCRIPTOR), (15, DESCRIPTOR)):
            cases.append((with_out(dict(BASE, **{f"pad_{dim}": pad})), None, want))
        for delta in (-1, 1):
            cases.append((dict(BASE, **{f"out_{dim}": BASE[f"out_{dim}"] + delta}), None,
                          DESCRIPTOR))
        # The kernel must fit the padded map: 2 + 2*1 = 4 < 5 whatever out says; = 5 fits.
        cases.append((dict(BASE, **{f"in_{dim}": 2, k: 5, f"out_{dim}": 1}), None,
                      DESCRIPTOR))
        cases.append((dict(BASE, **{f"in_{dim}": 3, k: 5, f"out_{dim}": 1}), None, 0))
        # A stride that skips: (9 + 2 - 3) div 3 + 1 = 3; 2 and 4 are wrong.
        strided = dict(BASE, **{f"in_{dim}": 9, f"stride_{dim}": 3})
        for out, want in ((2, DESCRIPTOR), (3, 0), (4, DESCRIPTOR)):
            cases.append((dict(strided, **{f"out_{dim}": out}), None, want))
        # Largest fields that still fit: 255-wide kernel, stride 15, pad 15.
        wide = dict(BASE, **{f"in_{dim}": 1000, k: 255, f"stride_{dim}": 15,
                             f"pad_{dim}": 15, "in_c": 1})
        cases.append((with_out(wide), None, 0))
        cases.append((dict(with_out(wide), **{f"out_{dim}": with_out(wide)[f"out_{dim}"] + 1}),
                      None, DESCRIPTOR))
    return cases


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


def test_descriptor_checks():
    cases = descriptor_cases()
    results = run_setup(BASE_CFG, [(d, r) for d, r, _ in cases])
    assert [ref_error(BASE_CFG, d, r) for d, r, _ in cases] == [w for _, _, w in cases]
    check(BASE_CFG, [(d, r) for d, r, _ in cases], results, expected=[w for _, _, w in cases])


def test_out_size_exhaustive():
    """Every small (in, kernel, pad, stride) and out = the right size, one less, one more,
    in both dimensions."""
    cases = []
    for size in range(1, 9):
        for k in range(1, 4):
            for pad in range(k):
                for stride in range(1, 4):
                    right = conv_out(size, k, stride, pad)
                    for out in (right - 1, right, right + 1):
                        if out < 1:
                            continue
                        dim = "hw"[len(cases) % 2]
                        d = with_out(dict(BASE, **{f"in_{dim}": size, f"kernel_{dim}": k,
                                                   f"pad_{dim}": pad,
                                                   f"stride_{dim}": stride}))
                        d[f"out_{dim}"] = out
                        cases.append((d, None, 0 if out == right else DESCRIPTOR))
    results = run_setup(BASE_CFG, [(d, r) for d, r, _ in cases])
    check(BASE_CFG, [(d, r) for d, r, _ in cases], results, expected=[w for _, _, w in cases])


#: ``(limit, value of BASE)``: a core whose limit is the value accepts BASE, one less refuses.
LIMITS = (("max_k", 63), ("max_channels", 5), ("acc_entries", 10), ("fmap_vectors", 40),
          ("weight_rows", 180))


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


@pytest.mark.parametrize("limit,value", LIMITS)
def test_too_big_limit(limit, value):
    for at, want in ((value, 0), (value - 1, TOO_BIG)):
        if limit == "fmap_vectors" and at < 16:
            continue
        cfg = core(5, 3, **{limit: at}) if limit != "max_k" else core(5, 3, max_k=at)
        assert ref_error(cfg, BASE) == want
        [res] = run_setup(cfg, [(BASE, None)])
        assert res.error == want, f"{limit} = {at}: error {res.error}, expected {want}"


def test_too_big_descriptor_side():
    """The same limits crossed by the descriptor, one step each way, on one core."""
    cfg = core(5, 3, max_k=63, max_channels=8, acc_entries=10, fmap_vectors=60,
               weight_rows=270)
    cases = [
        (BASE, 0),
        (dict(BASE, in_c=8), TOO_BIG),                      # K = 72 > 63 (acts, rows fit)
        (dict(BASE, kernel_w=2, pad_w=0, out_w=4, in_c=10), 0),    # K = 60; CT = 2
        (dict(BASE, kernel_w=2, pad_w=0, out_w=4, in_c=11), TOO_BIG),  # K = 66
        (dict(BASE, out_c=8), 0),                           # NT = 3: 270 rows
        (dict(BASE, out_c=9), TOO_BIG),                     # > max_channels
        (dict(BASE, m_block=11), TOO_BIG),
        (dict(BASE, in_w=7, out_w=7), 0),                   # acts 4*7*2 = 56
        (dict(BASE, in_w=8, out_w=8), TOO_BIG),             # acts 64
        (dict(BASE, in_h=7, out_h=7, in_w=4, out_w=4), 0),  # acts 56
        (dict(BASE, in_h=8, out_h=8, in_w=4, out_w=4), TOO_BIG),
    ]
    cfg_w = core(5, 3, max_k=63, weight_rows=269)
    results = run_setup(cfg, [(d, None) for d, _ in cases])
    check(cfg, [(d, None) for d, _ in cases], results, expected=[w for _, w in cases])
    [res] = run_setup(cfg_w, [(dict(BASE, out_c=8), None)])    # 270 rows > 269
    assert res.error == TOO_BIG


def test_in_c_limit_only_with_shift():
    """``in_c > max_channels`` is TOO_BIG with flags.shift only; out_c is bounded always."""
    for max_channels, shift, want in ((7, SHIFT, 0), (6, SHIFT, TOO_BIG), (6, 0, 0),
                                      (5, 0, 0), (4, 0, TOO_BIG), (4, SHIFT, TOO_BIG)):
        cfg = core(5, 3, max_channels=max_channels)
        [res] = run_setup(cfg, [(dict(BASE, flags=shift), None)])
        assert ref_error(cfg, dict(BASE, flags=shift)) == want
        assert res.error == want, (max_channels, shift, res.error)


def test_precedence():
    """DESCRIPTOR wins over TOO_BIG, which wins over REUSE."""
    cfg = core(5, 3, max_channels=5, shortcut_vectors=100)
    bad_desc = {"out_h": 5}                 # out_h off by one
    too_big = {"out_c": 6}                  # > max_channels
    reuse = {"flags": REUSE_FLAG}           # reuse_weights without valid weights
    cases = [
        (dict(BASE, **bad_desc, **too_big), DESCRIPTOR),
        (dict(BASE, **bad_desc, **reuse), DESCRIPTOR),
        (dict(BASE, **too_big, **reuse), TOO_BIG),
        (dict(BASE, **bad_desc, **too_big, **reuse), DESCRIPTOR),
        (dict(BASE, flags=REUSE_FLAG | 1 << 5, out_c=6), DESCRIPTOR),  # reserved bit + the rest
        (dict(BASE, m_block=0, out_c=6, flags=REUSE_FLAG), DESCRIPTOR),
        (dict(BASE, **reuse), REUSE),
        # The tail: its fields before any size, its shortcut among the sizes.
        (dict(BASE, **too_big, res_shift=1), DESCRIPTOR),
        (dict(BASE, **too_big, flags=REUSE_FLAG | CLAMP, clamp_lo=3, clamp_hi=2), DESCRIPTOR),
        (dict(BASE, flags=REUSE_FLAG | RESIDUAL, in_h=40, out_h=40), TOO_BIG),
        (dict(BASE, flags=REUSE_FLAG | RESIDUAL), REUSE),
    ]
    results = run_setup(cfg, [(d, None) for d, _ in cases])
    check(cfg, [(d, None) for d, _ in cases], results, expected=[w for _, w in cases])


# Reuse ----------------------------------------------------------------------------------------

def test_reuse():
    cfg = BASE_CFG
    cases = []
    for flags in (REUSE_FLAG, REUSE_FLAG | SHIFT):
        d = dict(BASE, flags=flags)
        good = matching_reuse(cfg, d)
        tiles = 2 if flags & SHIFT else 0
        assert good == {"valid": 1, "rows": 180, "channels": 5, "tiles": tiles}
        cases += [(d, dict(good, valid=0), REUSE), (d, None, REUSE), (d, good, 0)]
        for key, values in (("rows", (179, 181, 0, 180 + (1 << 40), 180 * 2)),
                            ("channels", (4, 6, 5 + (1 << 15))),
                            ("tiles", (tiles + 1, (2 if tiles == 0 else 0), 1 << 47))):
            cases += [(d, dict(good, **{key: v}), REUSE) for v in values]
        # Without the flag the reuse inputs do not matter.
        plain = dict(d, flags=flags & ~REUSE_FLAG)
        cases += [(plain, dict(good, valid=0), 0), (plain, {"rows": 1, "tiles": 9}, 0)]
    # Another layer with the same weight rows, out_c and tiles may reuse them.
    other = with_out(dict(BASE, in_h=9, in_w=3, stride_h=2, m_block=3, flags=REUSE_FLAG))
    cases.append((other, matching_reuse(cfg, dict(BASE, flags=REUSE_FLAG)), 0))
    results = run_setup(cfg, [(d, r) for d, r, _ in cases])
    assert [ref_error(cfg, d, r) for d, r, _ in cases] == [w for _, _, w in cases]
    check(cfg, [(d, r) for d, r, _ in cases], results, expected=[w for _, _, w in cases])


# Against the host's layer_stream --------------------------------------------------------------

def random_layer(cfg, rng, mode):
    """A random small :class:`Layer`. ``mode``: ``"valid"`` keeps it within ``cfg`` (mostly),
    ``"big"`` then crosses one of the core's limits, ``"random"`` draws sizes from 0 up,
    ``"tail"`` is a valid layer with a tail field out of range. Half have a fused tail."""
    e = cfg.engine
    shift = rng.random() < 0.4
    if mode in ("valid", "big", "tail"):
        kh, kw = rng.randint(1, 4), rng.randint(1, 3)
        in_c = rng.randint(1, max(1, min(3 * e.rows + 2, e.max_k // (kh * kw))))
        out_c = rng.randint(1, min(3 * e.cols + 2, cfg.max_channels))
        in_h, in_w = rng.randint(kh, kh + 5), rng.randint(kw, kw + 5)
        pad = (rng.randint(0, kh - 1), rng.randint(0, kw - 1))
        stride = (rng.randint(1, 4), rng.randint(1, 4))
        m_block = rng.choice((None, rng.randint(1, cfg.acc_entries)))
    else:
        kh, kw = rng.randint(0, 6), rng.randint(0, 6)
        in_c, out_c = rng.randint(0, 4 * e.rows + 3), rng.randint(0, 4 * e.cols + 3)
        in_h, in_w = rng.randint(0, 12), rng.randint(0, 12)
        pad = (rng.randint(0, 6), rng.randint(0, 6))
        stride = (rng.randint(0, 4), rng.randint(0, 4))
        m_block = rng.choice((None, rng.randint(0, cfg.acc_entries + 2)))
    if mode == "big":
        limit = rng.choice(("max_k", "max_channels", "shift", "acc_entries", "fmap_vectors",
                            "weight_rows", "shortcut_vectors"))
        if limit == "max_k":
            in_c = e.max_k // (kh * kw) + 1
        elif limit == "max_channels":
            out_c = cfg.max_channels + 1
        elif limit == "shift":
            in_c, shift = cfg.max_channels + 1, True
        elif limit == "acc_entries":
            m_block = cfg.acc_entries + 1
        elif limit == "fmap_vectors":
            in_h = cfg.fmap_vectors // (in_w * cdiv(in_c, e.rows)) + 1
        elif limit == "weight_rows":
            out_c = (cfg.weight_rows // (kh * kw * cdiv(in_c, e.rows) * e.rows) + 1) * e.cols
        else:
            # A residual whose shortcut (out_h*out_w*NT vectors) outgrows its buffer.
            out_w = conv_out(in_w, kw, stride[1], pad[1])
            in_h = stride[0] * (cfg.shortcut_vectors // (out_w * cdiv(out_c, e.cols))) + kh
    shifts = np.zeros((in_c, 2), np.int64) if shift else None
    layer = ls.Layer(np.zeros((in_c, in_h, in_w), np.int64),
                     np.zeros((out_c, in_c, kh, kw), np.int64),
                     PostParams(np.zeros(out_c, np.int64), np.zeros(out_c, np.int64), False),
                     stride=stride, padding=pad, shifts=shifts, m_block=m_block,
                     reuse_weights=rng.random() < 0.3)
    if mode == "big" and limit == "shortcut_vectors":
        return dataclasses.replace(layer, residual=ResidualParams(), shortcut=np.zeros(
            [ls.layer_geometry(cfg, layer)[k] for k in ("out_c", "out_h", "out_w")], np.int64))
    return random_tail_layer(cfg, layer, rng, bad=mode == "tail")


def random_tail_layer(cfg, layer, rng, *, bad=False):
    """``layer`` with a random fused tail: often none, a residual (its shortcut of the layer's
    output shape), a clamp; ``bad``: one of the tail's fields out of its range."""
    a = cfg.engine.act_bits
    lo, hi = cfg.engine.act_range
    s_lo, s_hi = res_shift_range(a)
    out = [ls.layer_geometry(cfg, layer)[k] for k in ("out_c", "out_h", "out_w")]
    if min(out) < 1 or (rng.random() < 0.5 and not bad):
        return layer
    residual = clamp = shortcut = None
    if rng.random() < 0.6 or bad:
        residual = ResidualParams(rng.randint(0, RES_MAX_SHIFT), rng.randint(0, RES_MAX_SHIFT),
                                  rng.randint(s_lo, s_hi), rng.random() < 0.5)
        shortcut = np.zeros(out, np.int64)
    if rng.random() < 0.6:
        clamp = tuple(sorted(rng.randint(lo, hi) for _ in range(2)))
    if bad:
        which = rng.choice(("main_shift", "short_shift", "shift", "clamp"))
        if which == "clamp":
            clamp = rng.choice(((lo - 1, hi), (lo, hi + 1), (1, 0)))
        else:
            value = rng.choice((-1, RES_MAX_SHIFT + 1) if which != "shift"
                               else (s_lo - 1, s_hi + 1))
            residual = dataclasses.replace(residual, **{which: value})
    return dataclasses.replace(layer, residual=residual, clamp=clamp, shortcut=shortcut)


def layer_cases(cfg, rng, n_valid, n_refused):
    """``(desc, reuse, geometry or None, host code)``: layers check_layer accepts (words from
    descriptor_words) and layers it refuses with DESCRIPTOR or TOO_BIG (their fields written
    over the words of an accepted layer)."""
    valid, refused, template = [], [], None
    while len(valid) < n_valid or len(refused) < n_refused:
        mode = "valid" if len(valid) < n_valid and rng.random() < 0.6 else rng.choice(
            ("big", "random", "tail"))
        layer = random_layer(cfg, rng, mode)
        try:
            ls.check_layer(cfg, layer)
        except ls.LayerError as exc:
            if len(refused) >= n_refused or template is None:
                continue
            assert exc.core_error in ("DESCRIPTOR", "TOO_BIG"), exc
            g = ls.layer_geometry(cfg, layer)
            fields = {name: g[name] for name in WIDTHS if name in g}
            for out in ("out_h", "out_w"):
                fields[out] = max(fields[out], 1)   # the kernel does not fit: claim 1
            tail = tail_fields(layer)
            fields["flags"] = (SHIFT * (layer.shifts is not None)
                               | REUSE_FLAG * layer.reuse_weights | RESIDUAL * tail["residual"]
                               | RES_RELU * tail["res_relu"] | CLAMP * tail["clamp"])
            fields["reserved"] = 0
            for name in TAIL_FIELDS:            # two's complement, as the words carry them
                fields[name] = tail[name] + (tail[name] < 0 and name in DESC_SIGNED) * (
                    1 << WIDTHS[name])
            if any(not 0 <= v < 1 << WIDTHS[k] for k, v in fields.items()):
                continue
            d = desc_from_words(words_with(template, **fields))
            assert d == fields
            refused.append((d, None, None, CODES[exc.core_error]))
            continue
        if len(valid) >= n_valid:
            continue
        words = ls.descriptor_words(cfg, layer)
        template = template or words
        d = desc_from_words(words)
        g = ls.layer_geometry(cfg, layer)
        sent = ls.layer_geometry(cfg, dataclasses.replace(layer, reuse_weights=False))
        # With reuse_weights, the previous run loaded this layer's weights and shift table.
        reuse = ({"valid": 1, "rows": sent["counts"]["WEIGHTS"], "channels": g["out_c"],
                  "tiles": sent["counts"]["SHIFT"]} if layer.reuse_weights else None)
        valid.append((d, reuse, dict(g, counts=sent["counts"]), 0))
    return valid + refused


@pytest.mark.parametrize("name", ["r5c3", "r8c6", "r1c4", "r7c16", "tree3x2"])
def test_against_layer_stream(name):
    cfg, rng = CONFIGS[name], random.Random(f"layers-{name}")
    cases = layer_cases(cfg, rng, 60, 60)
    results = run_setup(cfg, [(d, r) for d, r, _, _ in cases])
    bad = []
    for (d, reuse, g, want), res in zip(cases, results):
        if res.error != want:
            bad.append(f"error {res.error}, layer_stream says {want}: {d}")
            continue
        assert ref_error(cfg, d, reuse) == want, d     # the two references agree
        if g is None:
            continue
        s = res.sizes
        got = {"CT": s["ct"], "NT": s["nt"], "KT": s["kt"], "K": s["k"], "M": s["m"],
               "WEIGHTS": s["wrows"], "ACTS": s["acts"]}
        ref = {"CT": g["CT"], "NT": g["NT"], "KT": g["KT"], "K": g["K"], "M": g["M"],
               "WEIGHTS": g["counts"]["WEIGHTS"], "ACTS": g["counts"]["ACTS"]}
        if got != ref:
            bad.append(f"sizes {got}, layer_geometry {ref}: {d}")
    assert not bad, "\n".join(bad[:20])
    assert {w for _, _, _, w in cases} == {0, DESCRIPTOR, TOO_BIG}


# Arithmetic widths and timing -----------------------------------------------------------------

def test_extreme_fields():
    """The largest field values: every product and quotient exact (weight rows aside, see
    ``test_weight_rows_beyond_32_bits``)."""
    fmax = (1 << 16) - 1
    d = {"in_h": fmax, "in_w": fmax, "in_c": fmax, "out_c": fmax, "kernel_h": 255,
         "kernel_w": 255, "stride_h": 15, "stride_w": 15, "pad_h": 15, "pad_w": 15,
         "m_block": fmax, "flags": SHIFT | REUSE_FLAG}
    d = with_out(d)
    small = dict(d, in_h=1, in_w=1, in_c=1, out_c=1, kernel_h=1, kernel_w=1, pad_h=0, pad_w=0,
                 stride_h=1, stride_w=1)
    small = with_out(small)
    odd = with_out(dict(d, in_c=fmax - 1, out_c=fmax - 2, kernel_h=254, kernel_w=253,
                        stride_h=14, stride_w=13, in_h=40000, in_w=50000))
    for cfg in (CONFIGS["big1x1"], CONFIGS["r1024c1000"], core(7, 3), core(1023, 1024)):
        results = run_setup(cfg, [(x, None) for x in (d, small, odd)])
        for x, res in zip((d, small, odd), results):
            ref = ref_sizes(cfg, x)
            skip = {"wrows"} if ref["nkt"] >= 1 << 32 else set()
            diff = {k: (res.sizes[k], ref[k]) for k in SIZES
                    if k not in skip and res.sizes[k] != ref[k]}
            assert not diff, f"rows={cfg.engine.rows}: (rtl, ref) {diff} for {x}"
            assert res.error == ref_error(cfg, x), (res.error, x)


def test_weight_rows_beyond_32_bits():
    """A 1x1 core with max_k >= 65538: kernel 1x2, in_c 32769, out_c 65535 gives
    NT*KT = 65535 * 65538 = 2^32 + 65534 weight tiles, far more than weight_rows = 2^20. The
    other limits hold (K = 65538, acts = 65538, out_c <= max_channels), so only the weight
    rows make the layer TOO_BIG."""
    cfg = core(1, 1, act_bits=2, weight_bits=2, max_k=1 << 17, fmap_vectors=1 << 20,
               weight_rows=1 << 20, max_channels=1 << 16)
    d = with_out({"in_h": 1, "in_w": 2, "in_c": 32769, "out_c": 65535, "kernel_h": 1,
                  "kernel_w": 2, "stride_h": 1, "stride_w": 1, "pad_h": 0, "pad_w": 0,
                  "m_block": 1, "flags": 0})
    assert ref_sizes(cfg, d)["wrows"] == (1 << 32) + 65534
    assert ref_error(cfg, d) == TOO_BIG
    [res] = run_setup(cfg, [(d, None)])
    assert (res.error, res.sizes["wrows"]) == (TOO_BIG, (1 << 32) + 65534)


def test_setup_cycles():
    """Start to done within the manifest's ``setup_cycles`` (and a few hundred), whatever the
    descriptor: random ones, errors, and the largest fields on engines whose divisions are
    not shifts (the slowest case)."""
    fmax = (1 << 16) - 1
    extreme = with_out({"in_h": fmax, "in_w": fmax, "in_c": fmax, "out_c": fmax,
                        "kernel_h": 255, "kernel_w": 255, "stride_h": 15, "stride_w": 15,
                        "pad_h": 15, "pad_w": 15, "m_block": fmax, "flags": SHIFT})
    measured = {}
    for name, cfg in (("r5c3", CONFIGS["r5c3"]), ("r7c16", CONFIGS["r7c16"]),
                      ("r1023c1000", core(1023, 1000)), ("r1c1", CONFIGS["big1x1"])):
        rng = random.Random(f"cycles-{name}")
        cases = [(random_valid_desc(cfg, rng), None) for _ in range(10)]
        cases += [(dict(BASE, in_h=0), None), (dict(BASE, out_c=1000), None),
                  (extreme, None), (dict(extreme, kernel_h=1, kernel_w=1, pad_h=0, pad_w=0),
                                    None)]
        results = run_setup(cfg, cases)
        bound = core_manifest(cfg)["core"]["setup_cycles"]
        measured[name] = max(res.cycles for res in results)
        assert measured[name] <= min(bound, len(STEPS) * 18 + 2) < 300, (name, measured, bound)
        assert all(res.pulse_ok for res in results)
