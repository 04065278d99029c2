"""Tests of the NumPy golden model against a pure-Python reference.

The reference is written from ``SEEDS.md`` and ``docs/numerics.md`` with loops over Python
integers (which never overflow); it calls nothing from :mod:`mulfree.params.golden`.
"""

import random

import numpy as np
import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params import golden


# Independent reference ----------------------------------------------------------------------

def ref_shift_decode(code, weight_bits):
    """``(sign, p)`` of a shift code ``{s, e}``: sign bit on top, ``e = 0`` is zero."""
    s = code >> (weight_bits - 1)
    e = code % 2 ** (weight_bits - 1)
    if e == 0:
        return 0, 0
    return (-1 if s else 1), e - 1


def ref_term(pe, weight_bits, x, code):
    if pe == "shift":
        sign, p = ref_shift_decode(code, weight_bits)
        return sign * x * 2 ** p
    if pe == "adder":
        return -abs(x - code)
    return x * code


def ref_forward(pe, weight_bits, weights, inputs, psums):
    """``y[m][c] = psums[m][c] + sum_r term(inputs[m][r], weights[r][c])`` in Python ints."""
    rows, cols = len(weights), len(weights[0])
    out = []
    for m, x in enumerate(inputs):
        y = []
        for c in range(cols):
            acc = psums[m][c]
            for r in range(rows):
                acc += ref_term(pe, weight_bits, x[r], weights[r][c])
            y.append(acc)
        out.append(y)
    return out


def code_bounds(cfg):
    """Inclusive bounds of a weight code as the weight stream carries it."""
    if cfg.pe == "shift":
        return 0, 2 ** cfg.weight_bits - 1
    bits = cfg.act_bits if cfg.pe == "adder" else cfg.weight_bits
    return -2 ** (bits - 1), 2 ** (bits - 1) - 1


def act_bounds(cfg):
    return -2 ** (cfg.act_bits - 1), 2 ** (cfg.act_bits - 1) - 1


def ref_term_bounds(cfg):
    """Inclusive range of one term, from the spec (extremes sit at the operands' corners)."""
    xlo, xhi = act_bounds(cfg)
    if cfg.pe == "shift":
        bound = -xlo * 2 ** (2 ** (cfg.weight_bits - 1) - 2)
        return -bound, bound
    if cfg.pe == "adder":
        return -(xhi - xlo), 0
    wlo, whi = code_bounds(cfg)
    corners = [x * w for x in (xlo, xhi) for w in (wlo, whi)]
    return min(corners), max(corners)


def max_abs_term(cfg):
    """Largest |term|."""
    return max(-ref_term_bounds(cfg)[0], ref_term_bounds(cfg)[1])


CONFIGS = [
    ArrayConfig(pe="shift", rows=4, cols=3, act_bits=8, weight_bits=4, max_k=64),
    ArrayConfig(pe="shift", rows=7, cols=2, act_bits=2, weight_bits=2, max_k=7),
    ArrayConfig(pe="shift", rows=3, cols=5, act_bits=5, weight_bits=3, max_k=1000),
    ArrayConfig(pe="shift", rows=16, cols=4, act_bits=16, weight_bits=6, max_k=2 ** 18 - 1),
    ArrayConfig(pe="shift", rows=5, cols=5, act_bits=12, weight_bits=5, max_k=2 ** 31),
    ArrayConfig(pe="adder", rows=4, cols=3, act_bits=8, max_k=1024),
    ArrayConfig(pe="adder", rows=6, cols=2, act_bits=2, max_k=6),
    ArrayConfig(pe="adder", rows=9, cols=7, act_bits=16, max_k=2 ** 31),
    ArrayConfig(pe="mult", rows=4, cols=3, act_bits=8, weight_bits=8, max_k=1024),
    ArrayConfig(pe="mult", rows=3, cols=3, act_bits=3, weight_bits=2, max_k=3),
    ArrayConfig(pe="mult", rows=8, cols=6, act_bits=16, weight_bits=16, max_k=2 ** 31),
    ArrayConfig(pe="mult", rows=2, cols=9, act_bits=4, weight_bits=11, max_k=100),
]


def cfg_id(cfg):
    return f"{cfg.pe}-r{cfg.rows}c{cfg.cols}-a{cfg.act_bits}w{cfg.weight_bits}k{cfg.max_k}"


# Forward against the reference --------------------------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS, ids=cfg_id)
@pytest.mark.parametrize("seed", range(4))
def test_forward_random(cfg, seed):
    rng = random.Random(seed)
    n = 20
    wlo, whi = code_bounds(cfg)
    xlo, xhi = act_bounds(cfg)
    # A psum is any sum of at most max_k - rows terms.
    tlo, thi = ref_term_bounds(cfg)
    plo, phi = (cfg.max_k - cfg.rows) * tlo, (cfg.max_k - cfg.rows) * thi
    weights = [[rng.randint(wlo, whi) for _ in range(cfg.cols)] for _ in range(cfg.rows)]
    # Mix uniform values with the extremes, which random draws rarely hit.
    inputs = [[rng.choice([rng.randint(xlo, xhi), xlo, xhi, 0]) for _ in range(cfg.rows)]
              for _ in range(n)]
    psums = [[rng.choice([rng.randint(plo, phi), 0, plo, phi]) for _ in range(cfg.cols)]
             for _ in range(n)]
    expected = ref_forward(cfg.pe, cfg.weight_bits, weights, inputs, psums)
    got = golden.array_forward(cfg, np.array(weights), np.array(inputs), np.array(psums))
    assert got.dtype == np.int64
    assert got.shape == (n, cfg.cols)
    for m in range(n):
        for c in range(cfg.cols):
            assert int(got[m, c]) == expected[m][c], f"y[{m}, {c}]"


@pytest.mark.parametrize("cfg", CONFIGS, ids=cfg_id)
def test_forward_without_psums(cfg):
    rng = random.Random(1)
    wlo, whi = code_bounds(cfg)
    xlo, xhi = act_bounds(cfg)
    weights = [[rng.randint(wlo, whi) for _ in range(cfg.cols)] for _ in range(cfg.rows)]
    inputs = [[rng.randint(xlo, xhi) for _ in range(cfg.rows)] for _ in range(5)]
    zeros = [[0] * cfg.cols for _ in range(5)]
    expected = ref_forward(cfg.pe, cfg.weight_bits, weights, inputs, zeros)
    assert golden.array_forward(cfg, weights, inputs).tolist() == expected


@pytest.mark.parametrize("pe, act_bits, weight_bits", [
    ("shift", 4, 2), ("shift", 5, 3), ("shift", 6, 4), ("shift", 3, 5), ("shift", 4, 6),
    ("adder", 2, None), ("adder", 5, None), ("adder", 7, None),
    ("mult", 3, 2), ("mult", 6, 5), ("mult", 5, 7),
])
def test_terms_exhaustive(pe, act_bits, weight_bits):
    cfg = ArrayConfig(pe=pe, rows=1, cols=1, act_bits=act_bits, weight_bits=weight_bits,
                      max_k=1)
    xlo, xhi = act_bounds(cfg)
    wlo, whi = code_bounds(cfg)
    xs, codes = np.meshgrid(np.arange(xlo, xhi + 1), np.arange(wlo, whi + 1), indexing="ij")
    got = golden.terms(cfg, xs, codes)
    for i, x in enumerate(range(xlo, xhi + 1)):
        for j, code in enumerate(range(wlo, whi + 1)):
            assert int(got[i, j]) == ref_term(pe, cfg.weight_bits, x, code), (x, code)


# Shift codes --------------------------------------------------------------------------------

@pytest.mark.parametrize("weight_bits", range(2, 7))
def test_shift_codes_round_trip(weight_bits):
    codes = np.arange(2 ** weight_bits)
    sign, shift = golden.decode_shift(codes, weight_bits)
    zero_codes = {0, 2 ** (weight_bits - 1)}
    for code in range(2 ** weight_bits):
        ref_sign, ref_p = ref_shift_decode(code, weight_bits)
        assert (int(sign[code]), int(shift[code])) == (ref_sign, ref_p), code
        if code in zero_codes:
            assert ref_sign == 0
    # Encoding the decoded pair gives the code back, the negative zero canonicalized to 0.
    again = golden.encode_shift(sign, shift, weight_bits)
    for code in range(2 ** weight_bits):
        assert int(again[code]) == (0 if code in zero_codes else code), code
    # Every (sign, shift) pair encodes to a code that decodes to it.
    max_shift = 2 ** (weight_bits - 1) - 2
    for s in (-1, 1):
        for p in range(max_shift + 1):
            code = int(golden.encode_shift(s, p, weight_bits))
            assert code == (2 ** (weight_bits - 1) if s < 0 else 0) + p + 1
            assert ref_shift_decode(code, weight_bits) == (s, p)
    assert int(golden.encode_shift(0, 0, weight_bits)) == 0
    assert int(golden.encode_shift(0, max_shift + 5, weight_bits)) == 0   # shift ignored


@pytest.mark.parametrize("weight_bits", range(2, 7))
def test_both_zero_codes_decode_to_zero(weight_bits):
    cfg = ArrayConfig(pe="shift", rows=1, cols=1, act_bits=8, weight_bits=weight_bits, max_k=1)
    zeros = [0, 2 ** (weight_bits - 1)]
    assert golden.weight_values(cfg, zeros).tolist() == [0, 0]
    assert golden.terms(cfg, [-128, -128], zeros).tolist() == [0, 0]
    assert golden.terms(cfg, [127, 127], zeros).tolist() == [0, 0]


def test_weight_values():
    cfg = ArrayConfig(pe="shift", rows=1, cols=1, act_bits=8, weight_bits=4, max_k=1)
    codes = list(range(16))
    expected = [ref_term("shift", 4, 1, c) for c in codes]
    assert golden.weight_values(cfg, codes).tolist() == expected
    assert expected[7] == 64 and expected[15] == -64
    mult = ArrayConfig(pe="mult", rows=1, cols=1, weight_bits=3, max_k=1)
    assert golden.weight_values(mult, [-4, 3]).tolist() == [-4, 3]


# Errors -------------------------------------------------------------------------------------

def test_encode_decode_out_of_range():
    with pytest.raises(ValueError, match=r"shift\[1\] = 7 is outside \[0, 6\]"):
        golden.encode_shift([1, -1], [0, 7], 4)
    with pytest.raises(ValueError, match=r"shift\[0\] = -1"):
        golden.encode_shift([1], [-1], 4)
    with pytest.raises(ValueError, match=r"sign\[2\] = 2 is outside \[-1, 1\]"):
        golden.encode_shift([1, 0, 2], [0, 0, 0], 4)
    with pytest.raises(ValueError, match=r"codes\[1\] = 16 is outside \[0, 15\]"):
        golden.decode_shift([0, 16], 4)
    with pytest.raises(ValueError, match=r"codes\[0\] = -1"):
        golden.decode_shift([-1], 4)


@pytest.mark.parametrize("pe", ["shift", "adder", "mult"])
def test_forward_out_of_range_inputs(pe):
    cfg = ArrayConfig(pe=pe, rows=3, cols=2, act_bits=6, weight_bits=None, max_k=30)
    wlo, whi = code_bounds(cfg)
    weights = np.zeros((3, 2), dtype=np.int64)
    inputs = np.zeros((4, 3), dtype=np.int64)

    bad = inputs.copy()
    bad[2, 1] = 32
    with pytest.raises(ValueError, match=r"inputs\[2, 1\] = 32 is outside \[-32, 31\]"):
        golden.array_forward(cfg, weights, bad)
    bad[2, 1] = -33
    with pytest.raises(ValueError, match=r"inputs\[2, 1\] = -33"):
        golden.array_forward(cfg, weights, bad)

    for value in (wlo - 1, whi + 1):
        bad = weights.copy()
        bad[1, 0] = value
        with pytest.raises(ValueError, match=rf"weights\[1, 0\] = {value} is outside "
                                             rf"\[{wlo}, {whi}\]"):
            golden.array_forward(cfg, bad, inputs)

    lo, hi = cfg.acc_range
    for value in (lo - 1, hi + 1):
        psums = np.zeros((4, 2), dtype=np.int64)
        psums[3, 1] = value
        with pytest.raises(ValueError, match=rf"psums\[3, 1\] = {value} is outside"):
            golden.array_forward(cfg, weights, inputs, psums)


def test_forward_bad_shapes():
    cfg = ArrayConfig(rows=3, cols=2, max_k=30)
    with pytest.raises(ValueError, match="weights must have shape"):
        golden.array_forward(cfg, np.zeros((2, 3), dtype=int), np.zeros((1, 3), dtype=int))
    with pytest.raises(ValueError, match="inputs must have shape"):
        golden.array_forward(cfg, np.zeros((3, 2), dtype=int), np.zeros((1, 2), dtype=int))
    with pytest.raises(ValueError, match="psums must have shape"):
        golden.array_forward(cfg, np.zeros((3, 2), dtype=int), np.zeros((1, 3), dtype=int),
                             np.zeros((2, 2), dtype=int))


def test_terms_out_of_range():
    cfg = ArrayConfig(pe="mult", rows=1, cols=1, act_bits=4, weight_bits=3, max_k=1)
    with pytest.raises(ValueError, match=r"x\[1\] = 8 is outside \[-8, 7\]"):
        golden.terms(cfg, [0, 8], [0, 0])
    with pytest.raises(ValueError, match=r"weights\[0\] = 4 is outside \[-4, 3\]"):
        golden.terms(cfg, [0, 0], [4, 0])


@pytest.mark.parametrize("pe", ["shift", "adder", "mult"])
def test_overflow(pe):
    cfg = ArrayConfig(pe=pe, rows=2, cols=2, act_bits=5, max_k=10)
    lo, hi = cfg.acc_range
    weights, inputs, psums = extreme_operands(cfg, m=3)
    # The extreme terms push y to the bound of max_k = rows terms; a psum beyond the remaining
    # max_k - rows terms leaves acc_range.
    room = (cfg.max_k - cfg.rows) * max_abs_term(cfg)
    sign = 1 if pe != "adder" else -1
    psums[1][0] = sign * room
    expected = ref_forward(pe, cfg.weight_bits, weights, inputs, psums)
    assert expected[1][0] in (lo, hi)
    assert golden.array_forward(cfg, weights, inputs, psums).tolist() == expected
    psums[1][0] = sign * (room + 1)
    assert lo <= psums[1][0] <= hi
    with pytest.raises(OverflowError, match=r"y\[1, 0\] = -?\d+ leaves the accumulator range"):
        golden.array_forward(cfg, weights, inputs, psums)


# Extreme case -------------------------------------------------------------------------------

def extreme_operands(cfg, m=1):
    """All x at the most negative value, all weights of the largest magnitude.

    shift: code s=1, e=all ones, i.e. ``-2^max_shift``, so each term is ``+2^(a-1+max_shift)``;
    adder: ``w = 2^(a-1) - 1``, each term ``-(2^a - 1)``; mult: ``w = -2^(wb-1)``, each term
    ``+2^(a-1+wb-1)``.
    """
    if cfg.pe == "shift":
        w = 2 ** cfg.weight_bits - 1
    elif cfg.pe == "adder":
        w = 2 ** (cfg.act_bits - 1) - 1
    else:
        w = -2 ** (cfg.weight_bits - 1)
    weights = [[w] * cfg.cols for _ in range(cfg.rows)]
    inputs = [[-2 ** (cfg.act_bits - 1)] * cfg.rows for _ in range(m)]
    psums = [[0] * cfg.cols for _ in range(m)]
    return weights, inputs, psums


@pytest.mark.parametrize("pe, act_bits, weight_bits", [
    ("shift", 8, 4), ("shift", 16, 6), ("shift", 2, 2), ("adder", 8, None), ("adder", 16, None),
    ("mult", 8, 8), ("mult", 16, 16), ("mult", 2, 2),
])
@pytest.mark.parametrize("rows", [1, 5, 64])
def test_extreme_reaches_bound(pe, act_bits, weight_bits, rows):
    cfg = ArrayConfig(pe=pe, rows=rows, cols=3, act_bits=act_bits, weight_bits=weight_bits,
                      max_k=rows)
    weights, inputs, psums = extreme_operands(cfg)
    bound = rows * max_abs_term(cfg)
    expected = ref_forward(pe, cfg.weight_bits, weights, inputs, psums)
    assert expected == [[-bound if pe == "adder" else bound] * 3]
    got = golden.array_forward(cfg, weights, inputs)
    assert got.tolist() == expected
    # Exactly at the accumulator's bound, which fits acc_width.
    lo, hi = cfg.acc_range
    assert int(got[0, 0]) == (lo if pe == "adder" else hi)
    assert -2 ** (cfg.acc_width - 1) <= int(got[0, 0]) <= 2 ** (cfg.acc_width - 1) - 1


def test_extreme_shift_positive_weight_reaches_lower_bound():
    cfg = ArrayConfig(pe="shift", rows=4, cols=1, act_bits=8, weight_bits=4, max_k=4)
    # +2^6 (code 0b0111) times -128: every term is -2^13.
    got = golden.array_forward(cfg, [[7]] * 4, [[-128] * 4])
    assert got.tolist() == [[-4 * 2 ** 13]] == [[cfg.acc_range[0]]]


def test_model_golden_refuses_an_empty_batch():
    """A batch of 0 images is named, not a NumPy reshape error."""
    from types import SimpleNamespace
    from mulfree.params.model_golden import _batch
    model = SimpleNamespace(input=SimpleNamespace(shape=(1, 2, 2)))
    with pytest.raises(ValueError, match="holds no images"):
        _batch(model, np.zeros((0, 1, 2, 2), np.int64))
    assert _batch(model, np.zeros((3, 1, 2, 2), np.int64))[0].shape == (3, 1, 2, 2)
