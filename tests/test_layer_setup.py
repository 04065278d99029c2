"""``mulfree.rtl.layer_setup.LayerSetup`` in the Amaranth simulator.

The unit checks a layer descriptor and derives the sizes the controller walks by, with a
sequential adder (shift-add multiplication, restoring division). Its answers are compared with
two references that share no code with it:

* the definitions of ``docs/interface.md`` ("Stream formats", "The descriptor"), written out
  below as plain Python arithmetic (:func:`ref_sizes`, :func:`ref_error`), used here and by
  ``test_layer_setup_tail.py`` (the fused tail's rules);
* the host's :mod:`mulfree.host.layer_stream` (``layer_geometry``, ``check_layer``,
  ``descriptor_words``) on random :class:`~mulfree.host.layer_stream.Layer` objects, in
  ``test_layer_setup_sizes.py`` (with the arithmetic's ends and the setup's cycles).

Many descriptors run back to back in one simulation (:func:`run_setup`), so the file stays
fast; the results are compared outside the simulator so that a failure names the descriptor.
"""

import dataclasses
import math
import random

import pytest
from amaranth.sim import Simulator

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import (CORE_ERRORS, DESC_FIELDS, DESC_FLAGS, DESC_SIGNED,
                                        RES_MAX_SHIFT, CoreConfig, pool_shift_range,
                                        res_shift_range)
from mulfree.rtl.layer_setup import SIZES, LayerSetup, desc_layout


CODES = {name: code for code, name, _ in CORE_ERRORS}
DESCRIPTOR, TOO_BIG, REUSE = CODES["DESCRIPTOR"], CODES["TOO_BIG"], CODES["REUSE"]
ENGINE, RESIDENT, WINDOW = CODES["ENGINE"], CODES["RESIDENT"], CODES["WINDOW"]
WIDTHS = {name: width for _, _, width, name in DESC_FIELDS}
ZERO_CHECKED = ("in_h", "in_w", "in_c", "out_c", "out_h", "out_w", "kernel_h", "kernel_w",
                "stride_h", "stride_w", "m_block")
SHIFT, REUSE_FLAG = 1 << DESC_FLAGS["shift"], 1 << DESC_FLAGS["reuse_weights"]
RESIDUAL, RES_RELU, CLAMP = (1 << DESC_FLAGS[n] for n in ("residual", "res_relu", "clamp"))
GLOBAL_POOL = 1 << DESC_FLAGS["global_pool"]
IN_BANK, ACTS_RESIDENT, KEEP, QUIET, SHORT_RESIDENT = (
    1 << DESC_FLAGS[n] for n in ("in_bank", "acts_resident", "keep", "quiet", "short_resident"))
#: Interface 2.3's window flags: a max pool, a sum (average) pool, a depthwise convolution.
WIN_MAX, WIN_SUM, DEPTHWISE = (1 << DESC_FLAGS[n] for n in ("win_max", "win_sum", "depthwise"))
WINDOW_BITS = (WIN_MAX, WIN_SUM, DEPTHWISE)
#: Interface 2.4's taps flag: a depthwise run on an array engine through the tap window.
TAPS = 1 << DESC_FLAGS["taps"]
KNOWN_FLAGS = (SHIFT | REUSE_FLAG | RESIDUAL | RES_RELU | CLAMP | GLOBAL_POOL | IN_BANK
               | ACTS_RESIDENT | KEEP | QUIET | SHORT_RESIDENT | WIN_MAX | WIN_SUM | DEPTHWISE
               | TAPS)
TAIL_FIELDS = ("clamp_lo", "clamp_hi", "res_main_shift", "res_short_shift", "res_shift")
#: The shortcut's source fields (word 7), set with flags.residual.
SHORT_FIELDS = ("short_c", "short_off", "short_stride")
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
    stride = d.get("short_stride", 0)
    s["nts"] = cdiv(d.get("short_c", 0), c)
    s["sh"], s["sw"] = d["out_h"] * stride, d["out_w"] * stride
    s["sm"] = s["sh"] * s["sw"]
    s["scv"] = s["sm"] * s["nts"]
    s["dcv"] = s["m"] * nt
    # Interface 2.3: a window run's passes per block; its weight rows are nkk (depthwise),
    # 0 (max, sum).
    s["nkk"] = kk * nt
    # Interface 2.4: a taps run's weight rows, NT tiles of rows.
    s["ntr"] = nt * r
    if d["flags"] & DEPTHWISE and d["flags"] & TAPS:
        s["wrows"] = s["ntr"]
    elif d["flags"] & DEPTHWISE:
        s["wrows"] = s["nkk"]
    elif d["flags"] & (WIN_MAX | WIN_SUM):
        s["wrows"] = 0
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


def short_error(d):
    """``docs/interface.md``'s rules of word 7 (the shortcut's source): with flags.residual
    ``short_c >= 1``, ``short_stride >= 1``, ``short_off + short_c <= out_c``; else all 0."""
    c, off, stride = (d.get(n, 0) for n in SHORT_FIELDS)
    if d["flags"] & RESIDUAL:
        return c == 0 or stride == 0 or off + c > d["out_c"]
    return (c, off, stride) != (0, 0, 0)


def pool_error(cfg, d):
    """``pool_shift`` in ``pool_shift_range`` with flags.global_pool, else 0."""
    shift = sval(d, "pool_shift")
    if d["flags"] & GLOBAL_POOL:
        lo, hi = pool_shift_range(cfg.engine.act_bits, cfg.pool_pixels)
        return not lo <= shift <= hi
    return shift != 0


def window_of(d):
    """The window flags of ``d`` as ``REUSE`` compares them: bit 0 win_max, 1 win_sum,
    2 depthwise, 3 taps."""
    return sum(1 << i for i, bit in enumerate(WINDOW_BITS + (TAPS,)) if d["flags"] & bit)


def taps_errors(cfg, d, s):
    """Interface 2.4's rules of flags.taps (``CORE_ERRORS``): ``(DESCRIPTOR, WINDOW,
    TOO_BIG)``. DESCRIPTOR: taps without depthwise, with residual or global_pool,
    m_block != out_h*out_w, or (a core with a tap window) a kernel side beyond its side;
    WINDOW: no tap window, or an engine without one; TOO_BIG: the padded line
    (out_w-1)*stride_w + kernel_w beyond tap_line."""
    f = d["flags"]
    if not f & TAPS:
        return False, False, False
    bad = (not f & DEPTHWISE or f & (RESIDUAL | GLOBAL_POOL) or d["m_block"] != s["m"]
           or (cfg.taps and max(d["kernel_h"], d["kernel_w"]) > cfg.tap_side))
    window = d.get("engine", 0) not in cfg.tap_engines
    return bool(bad), window, s["ew"] + d["kernel_w"] > cfg.tap_line


def window_error(d):
    """Interface 2.3's DESCRIPTOR rules of a window run (``CORE_ERRORS``): more than one
    window flag; a window flag with in_c != out_c or with flags.shift; win_max or win_sum with
    reuse_weights; win_max with 2*pad > kernel in either dimension."""
    f, n = d["flags"], bin(window_of(d) & 7).count("1")     # taps (bit 3) is no window flag
    if n > 1 or (n and (d["in_c"] != d["out_c"] or f & SHIFT)):
        return True
    if f & (WIN_MAX | WIN_SUM) and f & REUSE_FLAG:
        return True
    return bool(f & WIN_MAX and (2 * d["pad_h"] > d["kernel_h"]
                                 or 2 * d["pad_w"] > d["kernel_w"]))


def ref_error(cfg, d, reuse=None):
    """The error code the descriptor deserves: DESCRIPTOR, then ENGINE, then WINDOW, then
    RESIDENT, then TOO_BIG, then REUSE, else 0. ``reuse`` also holds the previous run's
    ``engine`` and ``window`` flags (:func:`window_of`) and the banks' state, ``banks``:
    ``[(valid, (c, h, w)), ...]`` (none valid when absent)."""
    e, reuse = cfg.engine, reuse or {}
    if any(d[name] == 0 for name in ZERO_CHECKED) or d["flags"] & ~KNOWN_FLAGS:
        return DESCRIPTOR
    s, shift = ref_sizes(cfg, d), bool(d["flags"] & SHIFT)
    taps_bad, taps_window, taps_big = taps_errors(cfg, d, s)
    if window_error(d) or taps_bad:
        return DESCRIPTOR
    if tail_error(cfg, d) or short_error(d) or pool_error(cfg, d):
        return DESCRIPTOR
    if d["pad_h"] >= d["kernel_h"] or d["pad_w"] >= d["kernel_w"]:
        return DESCRIPTOR
    if (d["out_h"] != conv_out(d["in_h"], d["kernel_h"], d["stride_h"], d["pad_h"])
            or d["out_w"] != conv_out(d["in_w"], d["kernel_w"], d["stride_w"], d["pad_w"])):
        return DESCRIPTOR
    if d.get("engine", 0) >= len(cfg.engines):
        return ENGINE
    if (window_of(d) & 7 and not cfg.window_ops) or taps_window:
        return WINDOW
    if chain_error(cfg, d, s, reuse.get("banks", [(0, (0, 0, 0))] * 2)):
        return RESIDENT
    taps_run = d["flags"] & TAPS and d["flags"] & DEPTHWISE
    # K of a window run is one channel's window, kk; a taps run has no m_block limit.
    if ((s["kk"] if window_of(d) else s["k"]) > e.max_k or d["out_c"] > cfg.max_channels
            or (shift and d["in_c"] > cfg.max_channels) or taps_big
            or (not taps_run and d["m_block"] > cfg.acc_entries)
            or s["acts"] > cfg.fmap_vectors or s["wrows"] > cfg.weight_rows
            or (d["flags"] & RESIDUAL and s["dcv"] > cfg.shortcut_vectors)
            or (d["flags"] & GLOBAL_POOL and s["m"] > cfg.pool_pixels)
            # The shortcut's map width out_w * short_stride must fit 16 bits.
            or s["sw"] >= 1 << 16
            # Layer chaining: a resident shortcut, kept results (NT with a global pool).
            or (d["flags"] & SHORT_RESIDENT and s["scv"] > cfg.fmap_vectors)
            or (d["flags"] & KEEP and (s["nt"] if d["flags"] & GLOBAL_POOL else s["dcv"])
                > cfg.fmap_vectors)):
        return TOO_BIG
    if d["flags"] & REUSE_FLAG and (
            not reuse.get("valid", 0) or reuse.get("rows", 0) != s["wrows"]
            or reuse.get("channels", 0) != d["out_c"]
            or reuse.get("tiles", 0) != (s["ct"] if shift else 0)
            or reuse.get("engine", 0) != d.get("engine", 0)
            or reuse.get("window", 0) != window_of(d)):
        return REUSE
    return 0


def chain_error(cfg, d, s, banks):
    """RESIDENT's rules (``CORE_ERRORS``), written from the interface."""
    f = d["flags"]
    if cfg.fmap_banks == 1 and f & (IN_BANK | KEEP | ACTS_RESIDENT | SHORT_RESIDENT):
        return True
    b = 1 if f & IN_BANK else 0
    if f & ACTS_RESIDENT and banks[b] != (1, (d["in_c"], d["in_h"], d["in_w"])):
        return True
    if f & SHORT_RESIDENT and (not f & RESIDUAL or banks[1 - b] != (
            1, (d["short_c"], s["sh"], s["sw"]))):
        return True
    return bool(f & QUIET and not f & KEEP)


def matching_reuse(cfg, d):
    """Reuse inputs that match ``d``: what a previous run of the same weights loaded."""
    s = ref_sizes(cfg, d)
    return {"valid": 1, "rows": s["wrows"], "channels": d["out_c"],
            "tiles": s["ct"] if d["flags"] & SHIFT else 0, "window": window_of(d),
            "engine": d.get("engine", 0)}


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
            ctx.set(dut.reuse_engine, reuse.get("engine", 0))
            ctx.set(dut.reuse_window, reuse.get("window", 0))
            banks = reuse.get("banks", [(0, (0, 0, 0))] * 2)
            ctx.set(dut.bank_valid, banks[0][0] | banks[1][0] << 1)
            for k, (_, (c, h, w)) in enumerate(banks):
                ctx.set(getattr(dut, f"bank_shape_{k}").as_value(), c | h << 16 | w << 32)
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
    if rng.random() < 0.35 and ref_sizes(cfg, d)["dcv"] <= cfg.shortcut_vectors:
        s_lo, s_hi = res_shift_range(a)
        out["short_stride"] = rng.choice((1, 1, 2, 15, rng.randint(1, 15)))
        out["short_c"] = pick(rng, d["out_c"])
        out["short_off"] = rng.randint(0, min(255, d["out_c"] - out["short_c"]))
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
    cases += [(dict(BASE, flags=1 << b), None, DESCRIPTOR) for b in range(11, 16)]
    cases.append((dict(BASE, flags=SHIFT), None, 0))
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
        (dict(BASE, flags=REUSE_FLAG | 1 << 11, out_c=6), DESCRIPTOR),  # reserved bit + the rest
        (dict(BASE, m_block=0, out_c=6, flags=REUSE_FLAG), DESCRIPTOR),
        (dict(BASE, **reuse), REUSE),
        # The tail: its fields before any size, its shortcut among the sizes.
        (dict(BASE, **too_big, res_shift=1), DESCRIPTOR),
        (dict(BASE, **too_big, flags=REUSE_FLAG | CLAMP, clamp_lo=3, clamp_hi=2), DESCRIPTOR),
        (dict(BASE, flags=REUSE_FLAG | RESIDUAL, in_h=40, out_h=40, short_c=5,
              short_stride=1), TOO_BIG),
        (dict(BASE, flags=REUSE_FLAG | RESIDUAL, short_c=5, short_stride=1), REUSE),
        (dict(BASE, flags=REUSE_FLAG | RESIDUAL, short_c=5, short_stride=0, out_c=6),
         DESCRIPTOR),
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
        assert good == {"valid": 1, "rows": 180, "channels": 5, "tiles": tiles, "window": 0,
                        "engine": 0}
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
