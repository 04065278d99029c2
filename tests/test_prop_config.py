"""Property-based tests of the configs' validation and derived widths.

* Every drawn valid config constructs, and each derived width satisfies its definition
  (``docs/numerics.md``, sections 3-6, computed here independently in ``prop_strategies``):
  the extreme values fit it and one bit less would not.
* The largest allowed ``max_k`` (64-bit accumulator; 63 bits with post-processing) is
  accepted and one more is refused.
* Every drawn invalid value of every parameter raises the module's ``ConfigError`` (no other
  exception type) whose one-line message names the parameter and the value.
"""

from dataclasses import replace
import re

import numpy as np
import pytest
from hypothesis import given, strategies as st

from mulfree.params import config as array_config
from mulfree.params.config import ArrayConfig, ConfigError, LIMITS, tree_level_counts
from mulfree.params.core_config import CORE_LIMITS, STREAM_WIDTHS, CoreConfig
from mulfree.params.post_config import check_post_config, max_post_k
from mulfree.params.safe_io import VERILOG_KEYWORDS
from mulfree.params.shift_config import MAX_OFFSET, SHIFT_LIMITS, ShiftUnitConfig

from prop_strategies import (PE_WEIGHT_BITS, array_configs, ends_or_any, spec_act_range,
                             spec_largest_k, spec_max_shift, spec_signed_width, spec_term,
                             spec_term_range)


def _fits(width, lo, hi):
    return -(2 ** (width - 1)) <= lo and hi <= 2 ** (width - 1) - 1


def _tight(width, lo, hi):
    """``width`` holds ``[lo, hi]`` and ``width - 1`` would not."""
    return _fits(width, lo, hi) and (width == 1 or not _fits(width - 1, lo, hi))


def _unsigned_tight(width, hi):
    """``width`` unsigned bits hold ``[0, hi]`` and one bit less would not (``width >= 1``)."""
    return hi < 2 ** width and (width == 1 or hi >= 2 ** (width - 1))


# Valid configs and their widths ----------------------------------------------------------------

@given(array_configs(max_rows=1024, max_cols=1024))
def test_array_widths_satisfy_their_definitions(cfg):
    """Term and accumulator ranges are section 5's; ``term_width`` and ``acc_width`` are the
    exact signed widths of those ranges: the extreme sum of ``max_k`` terms fits, one bit less
    would not; ``acc_width <= 64``."""
    a, b, k = cfg.act_bits, cfg.weight_bits, cfg.max_k
    lo, hi = spec_term_range(cfg.pe, a, b)
    assert cfg.act_range == spec_act_range(a)
    assert cfg.term_range == (lo, hi)
    assert cfg.acc_range == (k * lo, k * hi)
    assert _tight(cfg.term_width, lo, hi)
    assert _tight(cfg.acc_width, k * lo, k * hi)
    assert cfg.acc_width == spec_signed_width(k * lo, k * hi) <= 64
    if cfg.pe == "shift":
        assert cfg.max_shift == spec_max_shift(b)
        assert cfg.weight_range == (-(2 ** spec_max_shift(b)), 2 ** spec_max_shift(b))
    else:
        assert cfg.weight_range == spec_act_range(b)
    assert ArrayConfig(**cfg.params()) == cfg


@given(st.sampled_from(("shift", "adder", "mult")), st.integers(2, 6), st.data())
def test_term_range_is_reached(pe, a, data):
    """Brute force over every activation and code of small widths: the terms' minimum and
    maximum are exactly ``term_range`` (no bit of ``term_width`` is wasted)."""
    b = a if pe == "adder" else data.draw(st.integers(PE_WEIGHT_BITS[pe][0],
                                                      min(PE_WEIGHT_BITS[pe][1], 5)))
    cfg = ArrayConfig(pe=pe, act_bits=a, weight_bits=None if pe == "adder" else b, rows=1,
                      cols=1, max_k=1)
    codes = range(2 ** b) if pe == "shift" else range(-(2 ** (b - 1)), 2 ** (b - 1))
    xlo, xhi = spec_act_range(a)
    values = [spec_term(pe, b, x, c) for x in range(xlo, xhi + 1) for c in codes]
    assert (min(values), max(values)) == cfg.term_range


@given(st.sampled_from(("shift", "adder", "mult")), st.integers(2, 16), st.integers(1, 1024),
       st.data())
def test_largest_max_k_is_the_boundary(pe, a, rows, data):
    """The largest ``max_k`` whose accumulator fits 64 bits is accepted, one more is refused
    naming ``max_k`` and the value; likewise 63 bits for a core (post-processing)."""
    b = a if pe == "adder" else data.draw(st.integers(*PE_WEIGHT_BITS[pe]))
    wb = None if pe == "adder" else b
    # check_post_config is what CoreConfig and every layer call (a CoreConfig per example
    # would build its register map each time).
    for width, build in ((64, lambda k: ArrayConfig(pe, rows, 1, a, wb, k)),
                         (63, lambda k: check_post_config(ArrayConfig(pe, rows, 1, a, wb, k)))):
        top = spec_largest_k(pe, a, b, width)
        if top >= rows:
            build(top)
        if top < 2 ** 31 and top + 1 >= rows:
            with pytest.raises(ConfigError) as info:
                build(top + 1)
            assert info.value.param == "max_k"
            assert str(top + 1) in str(info.value) and "\n" not in str(info.value)
    if spec_largest_k(pe, a, b, 63) >= rows:    # max_post_k itself is not capped at 2^31
        cfg = ArrayConfig(pe, rows, 1, a, wb, rows)
        assert min(max_post_k(cfg), 2 ** 31) == spec_largest_k(pe, a, b, 63)


@given(st.integers(1, 1024))
def test_tree_levels_pair_adjacent_nodes(k):
    """An adder tree over ``k`` leaves: level 0 is ``k`` ones, each level sums adjacent pairs
    of the one below (an odd last node passes), the top is ``[k]`` after ``ceil(log2 k)``
    levels."""
    levels = tree_level_counts(k)
    assert levels[0] == [1] * k and levels[-1] == [k]
    for below, above in zip(levels, levels[1:]):
        assert above == [sum(below[i:i + 2]) for i in range(0, len(below), 2)]
    assert len(levels) - 1 == (k - 1).bit_length()


@given(st.integers(1, 64), st.integers(1, 256), st.integers(1, 64), st.integers(2, 16),
       st.data())
def test_shift_unit_widths_satisfy_their_definitions(channels, height, width, act_bits, data):
    """Every field of the address-shift unit is the exact width of the values it carries:
    addresses ``[0, depth)``, counts up to ``channels``, rotations ``[0, channels)``, offsets
    ``[-R, R]``."""
    limit = min(MAX_OFFSET, max(height, width))
    size = channels * height * width
    cfg = ShiftUnitConfig(channels, height, width, act_bits,
                          depth=data.draw(st.integers(size, size + 99)),
                          kernel=2 * data.draw(st.integers(0, limit)) + 1,
                          max_shift=data.draw(st.integers(0, limit)))
    power = 1 << (size - 1).bit_length()            # depths at and around a power of two
    for depth in (cfg.depth, power, power + 1):
        assert _unsigned_tight(replace(cfg, depth=depth).addr_width, depth - 1), depth
    assert _unsigned_tight(cfg.count_width, channels)
    assert _unsigned_tight(cfg.rotate_width, channels - 1)
    r = max((cfg.kernel - 1) // 2, cfg.max_shift, 1)
    assert cfg.offset_range == r and _tight(cfg.offset_width, -r, r)


# Invalid values ----------------------------------------------------------------------------------

def _not_an_int():
    """Values of the wrong type: bools, floats, strings, None, NumPy integers."""
    return st.one_of(st.booleans(), st.floats(allow_nan=False), st.text(max_size=3),
                     st.none(), st.integers(-3, 3).map(np.int64))


def _outside(lo, hi):
    """A value just outside ``[lo, hi]`` (often the neighbours of the ends), or of a wrong type."""
    return st.one_of(st.sampled_from((lo - 1, hi + 1)), st.integers(max_value=lo - 1),
                     st.integers(min_value=hi + 1), _not_an_int())


def _refused(build, param, value):
    """``build()`` raises ``ConfigError`` for ``param`` whose one-line message names the
    parameter and the value (any other exception propagates and fails the test)."""
    with pytest.raises(ConfigError) as info:
        build()
    message = str(info.value)
    assert info.value.param == param, message
    assert "\n" not in message and param in message, message
    assert repr(value) in message or str(value) in message, message


@st.composite
def _bad_array_param(draw):
    base = draw(array_configs(max_rows=16, max_cols=16))
    param = draw(st.sampled_from(("pe", "arch", "rows", "cols", "act_bits", "weight_bits",
                                  "max_k", "tree_levels_per_stage", "name")))
    if param in ("pe", "arch"):
        allowed = array_config.PE_KINDS if param == "pe" else array_config.ARCHS
        value = draw(st.one_of(st.text(max_size=6), st.none(), st.integers())
                     .filter(lambda v: v not in allowed))
    elif param in ("rows", "cols", "act_bits"):
        value = draw(_outside(*LIMITS[param]))
    elif param == "weight_bits":
        if base.pe == "adder":
            value = draw(st.one_of(st.integers(), _not_an_int())
                         .filter(lambda v: v is not None and v != base.act_bits))
        else:
            value = draw(_outside(*PE_WEIGHT_BITS[base.pe]).filter(lambda v: v is not None))
    elif param == "max_k":
        value = draw(_outside(base.rows, LIMITS["max_k"][1]))
    elif param == "tree_levels_per_stage":
        value = draw(st.one_of(st.integers(), _not_an_int()).filter(lambda v: v != 1))
    else:
        value = draw(st.one_of(st.sampled_from(sorted(VERILOG_KEYWORDS)),
                               st.text(max_size=12).filter(
                                   lambda t: not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", t))))
    return base, param, value


@given(_bad_array_param())
def test_array_config_refuses_in_one_line(case):
    """``ArrayConfig`` with one parameter outside its range: ``ConfigError`` naming it."""
    base, param, value = case
    _refused(lambda: replace(base, **{param: value}), param, value)


@given(st.sampled_from(("shift", "mult")), st.data())
def test_tree_levels_per_stage_range(pe, data):
    """A tree's ``tree_levels_per_stage`` outside 1..64 is refused the same way."""
    value = data.draw(_outside(*LIMITS["tree_levels_per_stage"]))
    _refused(lambda: ArrayConfig(pe=pe, arch="tree", tree_levels_per_stage=value),
             "tree_levels_per_stage", value)


@given(st.sampled_from(("stream_width",) + tuple(CORE_LIMITS)), st.data())
def test_core_config_refuses_in_one_line(param, data):
    """``CoreConfig`` with one parameter outside its range (``stream_width`` not one of
    ``STREAM_WIDTHS``): ``ConfigError`` naming it."""
    if param == "stream_width":
        value = data.draw(st.one_of(st.integers(), _not_an_int())
                          .filter(lambda v: v not in STREAM_WIDTHS or isinstance(v, bool)))
    else:
        # None is a derived default (fmap_banks), not a value outside the range.
        value = data.draw(_outside(*CORE_LIMITS[param]).filter(
            lambda v: v is not None or getattr(CoreConfig, param) is not None))
    _refused(lambda: CoreConfig(**{param: value}), param, value)


@given(st.data())
def test_shift_unit_config_refuses_in_one_line(data):
    """``ShiftUnitConfig`` with one parameter outside its range: sizes, ``depth`` below the
    map, an even or too large ``kernel``, a ``max_shift`` beyond ``min(15, max(H, W))``."""
    height, width = data.draw(st.integers(1, 64)), data.draw(st.integers(1, 64))
    base = dict(channels=data.draw(st.integers(1, 16)), height=height, width=width)
    limit = min(MAX_OFFSET, max(height, width))
    param = data.draw(st.sampled_from(("channels", "height", "width", "act_bits", "depth",
                                       "kernel", "max_shift")))
    if param in SHIFT_LIMITS:
        value = data.draw(_outside(*SHIFT_LIMITS[param]))
    elif param == "depth":
        size = base["channels"] * height * width
        value = data.draw(st.one_of(st.just(size - 1), st.integers(max_value=size - 1),
                                    _not_an_int())
                          .filter(lambda v: v is not None))
    elif param == "kernel":
        value = data.draw(st.one_of(_outside(1, 2 * limit + 1),
                                    ends_or_any(1, limit).map(lambda r: 2 * r)))
    else:
        value = data.draw(_outside(0, limit))
    _refused(lambda: ShiftUnitConfig(**{**base, param: value}), param, value)


@given(st.integers(1, 64), st.integers(1, 64), st.data())
def test_shift_unit_kernel_is_odd(height, width, data):
    """Every odd ``kernel`` up to ``2 min(15, max(H, W)) + 1`` is accepted, every even one
    refused naming ``kernel``."""
    limit = min(MAX_OFFSET, max(height, width))
    kernel = data.draw(st.integers(1, 2 * limit + 1))
    build = lambda: ShiftUnitConfig(4, height, width, kernel=kernel)   # noqa: E731
    if kernel % 2:
        assert build().max_radius == (kernel - 1) // 2
    else:
        _refused(build, "kernel", kernel)
