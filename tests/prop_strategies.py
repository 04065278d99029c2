"""Hypothesis strategies and an independent reading of ``docs/numerics.md`` for the
property-based tests (``tests/test_prop_*.py``).

The ``spec_*`` functions restate the numeric specification in plain Python integers, without
calling :class:`~mulfree.params.config.ArrayConfig`'s derived properties, so that a property
comparing the two checks the config and the golden model against the document, not against
themselves. The strategies draw designs anywhere in their allowed ranges (``docs/numerics.md``,
section 1), extremes included: ``st.integers`` with the exact bounds lets hypothesis shrink a
counterexample towards them.
"""

from fractions import Fraction
import math

from hypothesis import strategies as st

from mulfree.params.config import ArrayConfig


__all__ = [
    "spec_act_range", "spec_max_shift", "spec_term", "spec_term_range", "spec_signed_width",
    "spec_largest_k", "round_half_up", "spec_round_shift", "array_configs", "codes_of",
    "code_range", "act_values", "ends_or_any",
]

PE_WEIGHT_BITS = {"shift": (2, 6), "mult": (2, 16)}
INT64 = (-(1 << 63), (1 << 63) - 1)


# The specification, in Python integers -------------------------------------------------------

def spec_act_range(a):
    """A signed ``a``-bit activation: ``[-2^(a-1), 2^(a-1) - 1]`` (section 2)."""
    return -(1 << (a - 1)), (1 << (a - 1)) - 1


def spec_max_shift(b):
    """``2^(b-1) - 2``: the largest shift a ``b``-bit shift code holds (section 3)."""
    return 2 ** (b - 1) - 2


def spec_term(pe, b, x, code):
    """The term of one PE (sections 3 and 4), from the code's bit fields."""
    if pe == "shift":
        e = code % 2 ** (b - 1)
        s = code // 2 ** (b - 1)
        return 0 if e == 0 else (-1) ** s * x * 2 ** (e - 1)
    if pe == "adder":
        return -abs(x - code)
    return x * code


def spec_term_range(pe, a, b):
    """``[t_lo, t_hi]`` of section 5's table."""
    xlo, xhi = spec_act_range(a)
    if pe == "shift":
        bound = 2 ** (a - 1 + spec_max_shift(b))
        return -bound, bound
    if pe == "adder":
        return -(2 ** a - 1), 0
    wlo, whi = -(2 ** (b - 1)), 2 ** (b - 1) - 1
    return min(xlo * whi, xhi * wlo), xlo * wlo


def spec_signed_width(lo, hi):
    """The smallest ``w`` with ``-2^(w-1) <= lo`` and ``hi <= 2^(w-1) - 1``, by bit lengths."""
    need_lo = (-lo - 1).bit_length() + 1 if lo < 0 else 1
    need_hi = hi.bit_length() + 1 if hi > 0 else 1
    return max(need_lo, need_hi)


def spec_largest_k(pe, a, b, width):
    """The largest ``max_k`` whose ``max_k`` extreme terms fit a signed ``width``-bit register."""
    lo, hi = spec_term_range(pe, a, b)
    bounds = [2 ** 31]
    if lo < 0:
        bounds.append(2 ** (width - 1) // -lo)
    if hi > 0:
        bounds.append((2 ** (width - 1) - 1) // hi)
    return min(bounds)


def round_half_up(q: Fraction):
    """``q`` rounded to an integer, ties towards +infinity: ``floor(q + 1/2)``."""
    return math.floor(q + Fraction(1, 2))


def spec_round_shift(y, s):
    """The post-processing's shift: ``y / 2^s`` rounded half up, or ``y * 2^-s`` exactly."""
    return round_half_up(Fraction(y, 2 ** s)) if s > 0 else y * 2 ** -s


# Strategies ----------------------------------------------------------------------------------

@st.composite
def array_configs(draw, pe=None, max_rows=6, max_cols=6, max_k=None, max_acc_width=64):
    """An :class:`ArrayConfig` anywhere in the allowed ranges (small ``rows``/``cols``).

    ``max_k`` lies in ``[rows, the largest value whose accumulator fits max_acc_width]``
    (``spec_largest_k``), or at most ``max_k`` if given; drawn on a log scale so that both
    small reductions and the extreme ones near the 64-bit limit come up.
    """
    pe = draw(st.sampled_from(("shift", "adder", "mult"))) if pe is None else pe
    a = draw(st.integers(2, 16))
    b = a if pe == "adder" else draw(st.integers(*PE_WEIGHT_BITS[pe]))
    rows = draw(st.integers(1, max_rows))
    cols = draw(st.integers(1, max_cols))
    top = spec_largest_k(pe, a, b, max_acc_width)
    if max_k is not None:
        top = min(top, max_k)
    top = max(top, rows)
    exp = draw(st.integers(0, top.bit_length()))
    k = draw(st.one_of(st.just(top), st.just(rows),
                       st.integers(rows, max(rows, min(top, 1 << exp)))))
    return ArrayConfig(pe=pe, rows=rows, cols=cols, act_bits=a,
                       weight_bits=None if pe == "adder" else b, max_k=k)


def code_range(cfg):
    """Inclusive range of the weight codes the weight stream may carry."""
    if cfg.pe == "shift":
        return 0, 2 ** cfg.weight_bits - 1
    return -(2 ** (cfg.weight_bits - 1)), 2 ** (cfg.weight_bits - 1) - 1


def ends_or_any(lo, hi):
    """An integer in ``[lo, hi]``, one of the two ends half the time: sums of several drawn
    values reach their extremes often enough to test the widths sized for them."""
    return st.one_of(st.sampled_from((lo, hi)), st.integers(lo, hi))


def codes_of(cfg):
    """One weight code of ``cfg``, anywhere in its range (the ends and, for shift codes, the
    largest power of either sign often)."""
    lo, hi = code_range(cfg)
    if cfg.pe == "shift":
        top = 2 ** (cfg.weight_bits - 1) - 1                  # e = max_shift + 1
        return st.one_of(st.sampled_from((top, top | 2 ** (cfg.weight_bits - 1))),
                         st.integers(lo, hi))
    return ends_or_any(lo, hi)


def act_values(cfg):
    """One activation of ``cfg``, anywhere in its range, the ends often."""
    return ends_or_any(*spec_act_range(cfg.act_bits))
