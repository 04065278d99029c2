"""Tests of :class:`mulfree.params.config.ArrayConfig`: validation and derived widths.

Derived widths are checked against brute force: every activation with every weight code, in
plain Python integers, written from ``docs/numerics.md`` and not from the config's formulas.
"""

import random
import re

import pytest

from mulfree.params.config import ArrayConfig, ConfigError


# Independent reference ----------------------------------------------------------------------

def ref_term(pe, act_bits, weight_bits, x, code):
    """One term from the spec, in Python integers."""
    if pe == "shift":
        s = code >> (weight_bits - 1)
        e = code & ((1 << (weight_bits - 1)) - 1)
        if e == 0:
            return 0
        return (-1) ** s * x * 2 ** (e - 1)
    if pe == "adder":
        return -abs(x - code)
    return x * code


def ref_codes(pe, act_bits, weight_bits):
    """Every weight code of a kind: shift codes unsigned, adder/mult weights signed."""
    if pe == "shift":
        return range(2 ** weight_bits)
    bits = act_bits if pe == "adder" else weight_bits
    return range(-2 ** (bits - 1), 2 ** (bits - 1))


def brute_term_range(pe, act_bits, weight_bits):
    xs = range(-2 ** (act_bits - 1), 2 ** (act_bits - 1))
    values = {ref_term(pe, act_bits, weight_bits, x, c)
              for x in xs for c in ref_codes(pe, act_bits, weight_bits)}
    return min(values), max(values)


def fits(lo, hi, width):
    """Whether every integer in ``[lo, hi]`` is a ``width``-bit two's complement number."""
    return width >= 1 and -2 ** (width - 1) <= lo and hi <= 2 ** (width - 1) - 1


def ref_max_k_64(lo, hi):
    """The largest k with ``k * lo >= -2^63`` and ``k * hi <= 2^63 - 1``."""
    return min(2 ** 63 // -lo if lo else 2 ** 64, (2 ** 63 - 1) // hi if hi else 2 ** 64)


def shift_term_range(act_bits, weight_bits):
    """Shift term range without enumeration (for act_bits too wide to enumerate)."""
    if act_bits <= 8:
        return brute_term_range("shift", act_bits, weight_bits)
    # The extreme is |x| = 2^(a-1) (x = -2^(a-1)) at the largest shift, with either sign.
    bound = 2 ** (act_bits - 1) * 2 ** (2 ** (weight_bits - 1) - 2)
    return -bound, bound


def random_configs(n, seed):
    """``n`` random valid configs small enough to enumerate (act <= 8 bits, weights <= 8)."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        pe = rng.choice(["shift", "adder", "mult"])
        act_bits = rng.randint(2, 8)
        weight_bits = {"shift": rng.randint(2, 6), "adder": None, "mult": rng.randint(2, 8)}[pe]
        rows = rng.randint(1, 64)
        # Keep max_k within both its own limit and the 64-bit accumulator (computed here).
        lo, hi = brute_term_range(pe, act_bits, weight_bits or act_bits)
        k_limit = min(2 ** 31, ref_max_k_64(lo, hi))
        max_k = rng.choice([rows, rows + 1, rng.randint(rows, 5000), rng.randint(rows, k_limit),
                            k_limit, min(k_limit, 2 ** rng.randint(6, 31))])
        out.append(ArrayConfig(pe=pe, rows=rows, cols=rng.randint(1, 64), act_bits=act_bits,
                               weight_bits=weight_bits, max_k=max_k))
    return out


# Validation -----------------------------------------------------------------------------------

def check_error(excinfo, param, value, allowed):
    """The message names the parameter, the value and every string of ``allowed``."""
    err = excinfo.value
    assert err.param == param
    message = str(err)
    assert "\n" not in message
    assert re.search(rf"\b{param}\b", message), message
    assert repr(value) in message or str(value) in message, message
    for text in allowed:
        assert text in message, f"{text!r} not in {message!r}"


@pytest.mark.parametrize("param", ["rows", "cols"])
@pytest.mark.parametrize("value", [0, -1, -3, 1025, 10 ** 6, 2.0, 8.5, "8", None, True, False])
def test_rows_cols_invalid(param, value):
    with pytest.raises(ConfigError) as excinfo:
        ArrayConfig(**{param: value, "max_k": 2 ** 20})
    check_error(excinfo, param, value, ["[1, 1024]"])


@pytest.mark.parametrize("value", [1, 17, 0, -8, 8.0, "8", True])
def test_act_bits_invalid(value):
    with pytest.raises(ConfigError) as excinfo:
        ArrayConfig(act_bits=value)
    check_error(excinfo, "act_bits", value, ["[2, 16]"])


@pytest.mark.parametrize("pe, value, allowed", [
    ("shift", 1, "[2, 6]"), ("shift", 7, "[2, 6]"), ("shift", 9, "[2, 6]"),
    ("shift", 0, "[2, 6]"), ("shift", 4.0, "[2, 6]"), ("shift", True, "[2, 6]"),
    ("mult", 1, "[2, 16]"), ("mult", 17, "[2, 16]"), ("mult", -8, "[2, 16]"),
    ("mult", "8", "[2, 16]"),
])
def test_weight_bits_invalid(pe, value, allowed):
    with pytest.raises(ConfigError) as excinfo:
        ArrayConfig(pe=pe, weight_bits=value)
    check_error(excinfo, "weight_bits", value, [allowed])


@pytest.mark.parametrize("act_bits, value", [(8, 4), (8, 9), (6, 8), (16, 2)])
def test_adder_weight_bits_differs(act_bits, value):
    with pytest.raises(ConfigError) as excinfo:
        ArrayConfig(pe="adder", act_bits=act_bits, weight_bits=value)
    # The only allowed value is act_bits itself.
    check_error(excinfo, "weight_bits", value, [f"act_bits={act_bits}"])


@pytest.mark.parametrize("act_bits", [2, 8, 16])
def test_adder_weight_bits_equal_or_unset(act_bits):
    for weight_bits in (None, act_bits):
        cfg = ArrayConfig(pe="adder", act_bits=act_bits, weight_bits=weight_bits)
        assert cfg.weight_bits == act_bits


@pytest.mark.parametrize("value", ["foo", "Shift", "", None, 1])
def test_pe_unknown(value):
    with pytest.raises(ConfigError) as excinfo:
        ArrayConfig(pe=value)
    check_error(excinfo, "pe", value, ["shift", "adder", "mult"])


@pytest.mark.parametrize("rows, value", [(8, 0), (8, 7), (8, -1), (1, 0), (16, 15),
                                         (8, 2 ** 31 + 1), (8, 12.0), (8, True)])
def test_max_k_invalid(rows, value):
    with pytest.raises(ConfigError) as excinfo:
        ArrayConfig(rows=rows, max_k=value)
    check_error(excinfo, "max_k", value, [f"[{rows}, {2 ** 31}]"])


def test_max_k_equal_rows_and_limit():
    assert ArrayConfig(rows=16, max_k=16).max_k == 16
    assert ArrayConfig(rows=16, max_k=2 ** 31).max_k == 2 ** 31


@pytest.mark.parametrize("pe, act_bits, weight_bits", [
    ("shift", 16, 6), ("shift", 12, 6), ("shift", 8, 6), ("shift", 3, 6),
])
def test_max_k_too_large_for_64_bits(pe, act_bits, weight_bits):
    k_max = ref_max_k_64(*shift_term_range(act_bits, weight_bits))
    assert k_max < 2 ** 31, "pick a config whose 64-bit limit is below the max_k limit"
    cfg = ArrayConfig(pe=pe, rows=4, act_bits=act_bits, weight_bits=weight_bits, max_k=k_max)
    assert cfg.acc_width == 64
    for value in (k_max + 1, 2 ** 31):
        with pytest.raises(ConfigError) as excinfo:
            ArrayConfig(pe=pe, rows=4, act_bits=act_bits, weight_bits=weight_bits, max_k=value)
        check_error(excinfo, "max_k", value, [f"[4, {k_max}]", "64"])


def test_widest_mult_fits_64_bits():
    # x * w with 16-bit operands is at most 2^30; 2^31 of them need 63 bits.
    cfg = ArrayConfig(pe="mult", act_bits=16, weight_bits=16, max_k=2 ** 31)
    assert cfg.acc_width == 63


@pytest.mark.parametrize("name", ["1abc", "a-b", "a b", "", "é"])
def test_name_invalid(name):
    with pytest.raises(ConfigError) as excinfo:
        ArrayConfig(name=name)
    check_error(excinfo, "name", name, ["identifier"])


def test_defaults():
    assert ArrayConfig(pe="shift").weight_bits == 4
    assert ArrayConfig(pe="mult").weight_bits == 8
    assert ArrayConfig(pe="adder", act_bits=5).weight_bits == 5


# Derived widths -----------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(12))
def test_derived_widths_brute_force(seed):
    for cfg in random_configs(10, seed):
        lo, hi = brute_term_range(cfg.pe, cfg.act_bits, cfg.weight_bits)
        assert cfg.term_range == (lo, hi), cfg
        assert fits(lo, hi, cfg.term_width) and not fits(lo, hi, cfg.term_width - 1), cfg

        acc_lo, acc_hi = cfg.max_k * lo, cfg.max_k * hi
        assert cfg.acc_range == (acc_lo, acc_hi), cfg
        assert fits(acc_lo, acc_hi, cfg.acc_width), cfg
        assert not fits(acc_lo, acc_hi, cfg.acc_width - 1), cfg
        for n in (1, cfg.rows):
            assert cfg.sum_range(n) == (n * lo, n * hi)

        assert cfg.act_range == (-2 ** (cfg.act_bits - 1), 2 ** (cfg.act_bits - 1) - 1)
        if cfg.pe == "shift":
            assert cfg.max_shift == 2 ** (cfg.weight_bits - 1) - 2
            weights = {ref_term("shift", cfg.act_bits, cfg.weight_bits, 1, c)
                       for c in ref_codes("shift", cfg.act_bits, cfg.weight_bits)}
            assert cfg.weight_range == (min(weights), max(weights))
            assert cfg.weight_scale_log2 == -cfg.max_shift
        else:
            assert cfg.max_shift is None
            codes = ref_codes(cfg.pe, cfg.act_bits, cfg.weight_bits)
            assert cfg.weight_range == (min(codes), max(codes))


@pytest.mark.parametrize("pe, act_bits, weight_bits, max_k, acc_width", [
    # The examples of docs/numerics.md.
    ("shift", 8, 4, 1024, 25),
    ("adder", 8, None, 1024, 19),
    ("mult", 8, 8, 1024, 26),
])
def test_documented_examples(pe, act_bits, weight_bits, max_k, acc_width):
    cfg = ArrayConfig(pe=pe, act_bits=act_bits, weight_bits=weight_bits, max_k=max_k)
    assert cfg.acc_width == acc_width


def test_small_exhaustive_widths():
    # Every kind and width up to 6 bits, max_k a few values around powers of two.
    for pe in ("shift", "adder", "mult"):
        for act_bits in range(2, 7):
            for weight_bits in {"shift": range(2, 7), "adder": [None],
                                "mult": range(2, 7)}[pe]:
                for max_k in (1, 2, 3, 4, 5, 7, 8, 9, 1000):
                    cfg = ArrayConfig(pe=pe, rows=1, cols=1, act_bits=act_bits,
                                      weight_bits=weight_bits, max_k=max_k)
                    lo, hi = brute_term_range(pe, act_bits, cfg.weight_bits)
                    assert cfg.term_range == (lo, hi)
                    assert fits(max_k * lo, max_k * hi, cfg.acc_width)
                    assert not fits(max_k * lo, max_k * hi, cfg.acc_width - 1)


def test_top_name_and_params():
    cfg = ArrayConfig(pe="adder", rows=5, cols=3, act_bits=6, max_k=40)
    assert cfg.top_name == "mulfree_array_adder_5x3_a6w6k40"
    assert ArrayConfig(name="top").top_name == "top"
    assert cfg.params() == {"pe": "adder", "rows": 5, "cols": 3, "act_bits": 6,
                            "weight_bits": 6, "max_k": 40}
