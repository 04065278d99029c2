"""Property-based tests of the golden models against ``docs/numerics.md``.

Each property compares a golden function (``params/golden.py``, ``layer_golden.py``,
``graph_golden.py``, ``shift_golden.py``) with an independent computation written here from the
document, in Python integers and ``Fraction``s, over designs and data that hypothesis draws
anywhere in their allowed ranges (``tests/prop_strategies.py``). The profile (derandomized,
``max_examples``) is set in ``tests/conftest.py``.
"""

from dataclasses import replace
from fractions import Fraction
import math
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import assume, example, given, strategies as st

from mulfree.params import golden, graph_golden, layer_golden, model_golden, shift_golden
from mulfree.params.post_config import bias_range, shift_range

from prop_strategies import (INT64, act_values, array_configs, codes_of, ends_or_any,
                             round_half_up, spec_act_range, spec_round_shift,
                             spec_signed_width, spec_term, spec_term_range)


def _sat(v, bits):
    lo, hi = spec_act_range(bits)
    return min(max(v, lo), hi)


# Terms and weight codes ----------------------------------------------------------------------

@given(st.data())
def test_terms_equal_the_definition(data):
    """``terms`` is ``±x * 2^p`` (shift), ``-|x - w|`` (adder), ``x * w`` (mult) in Python
    integers, for every activation and code, and lies in the term range of section 5."""
    cfg = data.draw(array_configs())
    n = data.draw(st.integers(1, 16))
    x = data.draw(st.lists(act_values(cfg), min_size=n, max_size=n))
    codes = data.draw(st.lists(codes_of(cfg), min_size=n, max_size=n))
    got = golden.terms(cfg, np.array(x), np.array(codes))
    lo, hi = spec_term_range(cfg.pe, cfg.act_bits, cfg.weight_bits)
    for i, (xi, ci) in enumerate(zip(x, codes)):
        want = spec_term(cfg.pe, cfg.weight_bits, xi, ci)
        assert int(got[i]) == want, f"term(x={xi}, code={ci}) = {int(got[i])}, not {want}"
        assert lo <= want <= hi


@given(st.integers(2, 6), st.data())
def test_shift_codes_round_trip(b, data):
    """``decode_shift(encode_shift(sign, p)) == (sign, p)`` (p read as 0 for the zero weight);
    both zero codes, ``0`` and ``2^(b-1)``, decode to the weight 0."""
    max_shift = 2 ** (b - 1) - 2
    n = data.draw(st.integers(1, 12))
    sign = np.array(data.draw(st.lists(st.integers(-1, 1), min_size=n, max_size=n)))
    shift = np.array(data.draw(st.lists(st.integers(0, max_shift), min_size=n, max_size=n)))
    codes = golden.encode_shift(sign, shift, b)
    assert ((codes >= 0) & (codes < 2 ** b)).all()
    back_sign, back_shift = golden.decode_shift(codes, b)
    assert np.array_equal(back_sign, sign)
    assert np.array_equal(back_shift, np.where(sign == 0, 0, shift))
    assert (codes[sign == 0] == 0).all()                # the canonical zero code
    zero_sign, _ = golden.decode_shift(np.array([0, 2 ** (b - 1)]), b)
    assert (zero_sign == 0).all()


# The array and its accumulator ----------------------------------------------------------------

@st.composite
def _tile(draw, cfg, m_max=4):
    m = draw(st.integers(1, m_max))
    w = draw(st.lists(st.lists(codes_of(cfg), min_size=cfg.cols, max_size=cfg.cols),
                      min_size=cfg.rows, max_size=cfg.rows))
    x = draw(st.lists(st.lists(act_values(cfg), min_size=cfg.rows, max_size=cfg.rows),
                      min_size=m, max_size=m))
    return w, x


def _tile_sums(cfg, w, x):
    return [[sum(spec_term(cfg.pe, cfg.weight_bits, x[m][r], w[r][c]) for r in range(cfg.rows))
             for c in range(cfg.cols)] for m in range(len(x))]


@given(st.data())
def test_accumulator_holds_every_allowed_reduction(data):
    """The derived-width claim: a partial sum of at most ``max_k - rows`` terms plus any tile
    never leaves ``acc_range``, so ``array_forward`` never raises for it; the result is the
    exact sum and fits ``acc_width`` bits (widths computed here from section 5)."""
    cfg = data.draw(array_configs())
    w, x = data.draw(_tile(cfg))
    lo, hi = spec_term_range(cfg.pe, cfg.act_bits, cfg.weight_bits)
    k = cfg.max_k
    width = spec_signed_width(k * lo, k * hi)
    before = k - cfg.rows
    psum = data.draw(st.lists(st.lists(ends_or_any(before * lo, before * hi),
                                       min_size=cfg.cols, max_size=cfg.cols),
                              min_size=len(x), max_size=len(x)))
    got = golden.array_forward(cfg, np.array(w), np.array(x), np.array(psum))
    sums = _tile_sums(cfg, w, x)
    for m in range(len(x)):
        for c in range(cfg.cols):
            want = psum[m][c] + sums[m][c]
            assert int(got[m, c]) == want
            assert -(1 << (width - 1)) <= want <= (1 << (width - 1)) - 1


@given(st.data())
def test_array_forward_is_exact_or_refuses(data):
    """For any partial sum in ``acc_range`` the result is the exact Python sum when that lies
    in ``acc_range`` and ``OverflowError`` otherwise, even where the sum leaves int64 (64-bit
    accumulators: ``exact_add``)."""
    cfg = data.draw(array_configs(max_rows=3, max_cols=3))
    w, x = data.draw(_tile(cfg, m_max=2))
    lo, hi = spec_term_range(cfg.pe, cfg.act_bits, cfg.weight_bits)
    alo, ahi = cfg.max_k * lo, cfg.max_k * hi
    psum = data.draw(st.lists(st.lists(ends_or_any(alo, ahi), min_size=cfg.cols,
                                       max_size=cfg.cols), min_size=len(x), max_size=len(x)))
    sums = _tile_sums(cfg, w, x)
    want = [[psum[m][c] + sums[m][c] for c in range(cfg.cols)] for m in range(len(x))]
    if all(alo <= v <= ahi for row in want for v in row):
        got = golden.array_forward(cfg, np.array(w), np.array(x), np.array(psum))
        assert got.tolist() == want
    else:
        with pytest.raises(OverflowError, match="leaves the accumulator range"):
            golden.array_forward(cfg, np.array(w), np.array(x), np.array(psum))


def _extreme_pairs(cfg):
    """``(x, code)`` giving the smallest and the largest term (section 5's table)."""
    (xlo, xhi), b = spec_act_range(cfg.act_bits), cfg.weight_bits
    if cfg.pe == "shift":
        top = 2 ** (b - 1) - 1                                  # +2^max_shift
        return (xlo, top), (xlo, top | 2 ** (b - 1))
    if cfg.pe == "adder":
        return (xlo, xhi), (0, 0)
    wlo, whi = -(2 ** (b - 1)), 2 ** (b - 1) - 1
    low = (xlo, whi) if xlo * whi <= xhi * wlo else (xhi, wlo)
    return low, (xlo, wlo)


@given(array_configs(max_rows=4, max_cols=1))
def test_extreme_sums_are_exact_or_refused(cfg):
    """The corners: a tile of only the smallest (or largest) terms on a partial sum at either
    end of ``acc_range``, where a 64-bit accumulator's sum leaves int64 on both sides: the
    exact Python sum when it lies in ``acc_range``, ``OverflowError`` otherwise."""
    alo, ahi = cfg.acc_range
    for x, code in _extreme_pairs(cfg):
        tile = cfg.rows * spec_term(cfg.pe, cfg.weight_bits, x, code)
        for p in (alo, ahi):
            args = (cfg, np.full((cfg.rows, 1), code), np.full((1, cfg.rows), x),
                    np.array([[p]]))
            if alo <= p + tile <= ahi:
                assert int(golden.array_forward(*args)[0, 0]) == p + tile
            else:
                with pytest.raises(OverflowError, match="leaves the accumulator range"):
                    golden.array_forward(*args)


@given(st.data())
def test_matmul_equals_a_loop_and_its_tiling(data):
    """``matmul_acc`` is ``sum_k term(x[m, k], w[k, n])`` written as a loop, and
    ``tiled_matmul`` (rows/cols tiles, zero-padded edges, chained partial sums) equals it."""
    cfg = data.draw(array_configs(max_rows=4, max_cols=4, max_k=24))
    m = data.draw(st.integers(1, 3))
    k = data.draw(st.integers(1, cfg.max_k))
    n = data.draw(st.integers(1, 7))
    x = data.draw(st.lists(st.lists(act_values(cfg), min_size=k, max_size=k),
                           min_size=m, max_size=m))
    w = data.draw(st.lists(st.lists(codes_of(cfg), min_size=n, max_size=n),
                           min_size=k, max_size=k))
    want = [[sum(spec_term(cfg.pe, cfg.weight_bits, x[i][j], w[j][o]) for j in range(k))
             for o in range(n)] for i in range(m)]
    assert layer_golden.matmul_acc(cfg, np.array(x), np.array(w)).tolist() == want
    assert layer_golden.tiled_matmul(cfg, np.array(x), np.array(w)).tolist() == want


@given(st.data())
def test_conv_equals_a_loop(data):
    """``conv2d_acc`` is the six-fold loop of section "Convolution", a padded pixel being
    ``x = 0`` (which adds ``-|w|`` for adder PEs)."""
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    c, h, wd = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 5)), \
        data.draw(st.integers(1, 5))
    sy, sx = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    py, px = data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2))
    oh, ow = (h + 2 * py - kh) // sy + 1, (wd + 2 * px - kw) // sx + 1
    assume(oh >= 1 and ow >= 1)
    cfg = replace(data.draw(array_configs(max_k=c * kh * kw, max_rows=min(4, c * kh * kw))),
                  max_k=c * kh * kw)
    kout = data.draw(st.integers(1, 3))
    x = np.array(data.draw(st.lists(act_values(cfg), min_size=c * h * wd,
                                    max_size=c * h * wd))).reshape(c, h, wd)
    w = np.array(data.draw(st.lists(codes_of(cfg), min_size=kout * c * kh * kw,
                                    max_size=kout * c * kh * kw))).reshape(kout, c, kh, kw)

    def pixel(ci, yy, xx):
        return int(x[ci, yy, xx]) if 0 <= yy < h and 0 <= xx < wd else 0

    got = layer_golden.conv2d_acc(cfg, x, w, (sy, sx), (py, px))
    assert got.shape == (kout, oh, ow)
    for o in range(kout):
        for oy in range(oh):
            for ox in range(ow):
                want = sum(spec_term(cfg.pe, cfg.weight_bits,
                                     pixel(ci, oy * sy - py + ky, ox * sx - px + kx),
                                     int(w[o, ci, ky, kx]))
                           for ci in range(c) for ky in range(kh) for kx in range(kw))
                assert int(got[o, oy, ox]) == want, f"acc[{o}, {oy}, {ox}]"


# Post-processing and rescaling ---------------------------------------------------------------

@pytest.mark.filterwarnings("error")
@given(st.integers(*INT64), st.integers(-70, 70))
@example(INT64[1], 0)                   # y + 1 must not be formed without a right shift
@example(INT64[0], 64)
@example(INT64[1], -1)
def test_round_shift_is_exact(y, s):
    """``round_shift`` is ``y / 2^s`` rounded half up (Fractions) for every int64 ``y`` and
    every amount, and an exact left shift or ``OverflowError`` when that leaves int64; no
    intermediate wraps (a NumPy overflow warning is an error here)."""
    want = spec_round_shift(y, s)
    if INT64[0] <= want <= INT64[1]:
        assert int(layer_golden.round_shift(np.int64(y), s)) == want
    else:
        with pytest.raises(OverflowError):
            layer_golden.round_shift(np.int64(y), s)


@given(st.data())
def test_postprocess_equals_the_definition(data):
    """``postprocess`` is ``sat(relu?(round_shift(acc + bias, shift)))`` for every acc, bias and
    shift in their ranges (``[-a, acc_width + 1]``), in Python integers."""
    cfg = data.draw(array_configs(max_acc_width=63))
    n = data.draw(st.integers(1, 4))
    lo, hi = spec_term_range(cfg.pe, cfg.act_bits, cfg.weight_bits)
    width = spec_signed_width(cfg.max_k * lo, cfg.max_k * hi)
    assert bias_range(cfg) == (-(1 << (width - 1)), (1 << (width - 1)) - 1)
    assert shift_range(cfg) == (-cfg.act_bits, width + 1)
    acc = data.draw(st.lists(st.integers(cfg.max_k * lo, cfg.max_k * hi), min_size=n,
                             max_size=n))
    bias = data.draw(st.lists(st.integers(*bias_range(cfg)), min_size=n, max_size=n))
    shift = data.draw(st.lists(st.integers(-cfg.act_bits, width + 1), min_size=n, max_size=n))
    relu = data.draw(st.lists(st.booleans(), min_size=n, max_size=n))
    got = layer_golden.postprocess(cfg, np.array([acc]),
                                   layer_golden.PostParams(np.array(bias), np.array(shift),
                                                           np.array(relu)))
    for c in range(n):
        v = spec_round_shift(acc[c] + bias[c], shift[c])
        v = max(v, 0) if relu[c] else v
        assert int(got[0, c]) == _sat(v, cfg.act_bits), f"channel {c}"


@given(st.integers(-(1 << 56), 1 << 56), st.integers(1, 1 << 28))
def test_div_round_is_rational_rounding(s, d):
    """``div_round(s, d)`` is ``s / d`` rounded half up, computed with ``Fraction``."""
    assert int(graph_golden.div_round(np.int64(s), d)) == round_half_up(Fraction(s, d))


@given(st.integers(-(1 << 40), 1 << 40), st.integers(-16, 32), st.integers(2, 16))
def test_rescale_equals_the_definition(y, shift, bits):
    """``rescale`` is ``sat_bits(y * 2^-shift rounded half up)``: the early clamp of a left
    shift changes no output."""
    want = _sat(spec_round_shift(y, shift), bits)
    assert int(graph_golden.rescale(np.int64(y), shift, bits)) == want


# Graph nodes ---------------------------------------------------------------------------------

@given(st.data())
def test_add_node_equals_the_definition(data):
    """Add: ``sat(relu?(round_shift(sum_i x_i * 2^in_shifts[i], shift)))``."""
    bits = data.draw(st.integers(2, 16))
    n = data.draw(st.integers(2, 8))
    size = data.draw(st.integers(1, 6))
    xs = [data.draw(st.lists(st.integers(*spec_act_range(bits)), min_size=size,
                             max_size=size)) for _ in range(n)]
    in_shifts = data.draw(st.lists(st.integers(0, 32), min_size=n, max_size=n))
    shift = data.draw(st.integers(-16, 48))
    relu = data.draw(st.booleans())
    layer = SimpleNamespace(in_shifts=in_shifts, act_bits=bits, shift=shift, relu=relu)
    got = graph_golden.NODE_FUNCTIONS["add"](layer, *[np.array(x) for x in xs])
    for j in range(size):
        v = spec_round_shift(sum(x[j] * 2 ** s for x, s in zip(xs, in_shifts)), shift)
        assert int(got[j]) == _sat(max(v, 0) if relu else v, bits)


@st.composite
def _pool(draw):
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    sy, sx = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    py, px = draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2))
    h, w = draw(st.integers(kh, 6)), draw(st.integers(kw, 6))
    bits = draw(st.integers(2, 16))
    c = draw(st.integers(1, 2))
    x = np.array(draw(st.lists(st.integers(*spec_act_range(bits)), min_size=c * h * w,
                               max_size=c * h * w))).reshape(1, c, h, w)
    return SimpleNamespace(kernel=(kh, kw), stride=(sy, sx), padding=(py, px), act_bits=bits,
                           shift=draw(st.integers(-16, 32))), x


def _windows(layer, x):
    """Every window of ``x[0]`` as a list of values, ``None`` for a padded position."""
    (kh, kw), (sy, sx), (py, px) = layer.kernel, layer.stride, layer.padding
    _, c, h, w = x.shape
    oh, ow = (h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1
    for ci in range(c):
        for oy in range(oh):
            for ox in range(ow):
                yield (ci, oy, ox), [
                    int(x[0, ci, y, xx]) if 0 <= y < h and 0 <= xx < w else None
                    for y in range(oy * sy - py, oy * sy - py + kh)
                    for xx in range(ox * sx - px, ox * sx - px + kw)]


@given(_pool())
def test_pooling_equals_the_definition(pool):
    """Max pooling: the largest real value of each window (padding never wins). Average
    pooling: ``sat(div_round(S, N 2^shift))`` with padded zeros counted in ``S`` and ``N``."""
    layer, x = pool
    top = graph_golden.NODE_FUNCTIONS["maxpool2d"](layer, x)
    avg = graph_golden.NODE_FUNCTIONS["avgpool2d"](layer, x)
    n = layer.kernel[0] * layer.kernel[1]
    for (ci, oy, ox), window in _windows(layer, x):
        real = [v for v in window if v is not None]
        assert int(top[0, ci, oy, ox]) == max(real)
        total = sum(real)
        want = round_half_up(Fraction(total, n) / Fraction(2) ** layer.shift)
        assert int(avg[0, ci, oy, ox]) == _sat(want, layer.act_bits)


@given(st.data())
def test_concat_and_clamp_equal_the_definition(data):
    """Concat: ``sat(round_shift(x_i, shifts[i]))`` per input, joined along the channels;
    clamp: ``min(max(x, lo), hi)``."""
    bits = data.draw(st.integers(2, 16))
    n = data.draw(st.integers(1, 4))
    inputs = [np.array(data.draw(st.lists(ends_or_any(*spec_act_range(16)), min_size=c,
                                          max_size=c))).reshape(1, c, 1, 1)
              for c in data.draw(st.lists(st.integers(1, 3), min_size=n, max_size=n))]
    shifts = data.draw(st.lists(st.integers(-16, 32), min_size=n, max_size=n))
    layer = SimpleNamespace(shifts=shifts, act_bits=bits)
    got = graph_golden.NODE_FUNCTIONS["concat"](layer, *inputs).ravel().tolist()
    want = [_sat(spec_round_shift(int(v), s), bits)
            for x, s in zip(inputs, shifts) for v in x.ravel()]
    assert got == want
    lo, hi = sorted(data.draw(st.lists(ends_or_any(*spec_act_range(bits)), min_size=2,
                                       max_size=2)))
    x = inputs[0]
    clamp = graph_golden.NODE_FUNCTIONS["clamp"](SimpleNamespace(lo=lo, hi=hi), x)
    assert clamp.ravel().tolist() == [min(max(int(v), lo), hi) for v in x.ravel()]


@given(st.data())
def test_graph_address_shift_reads_the_sample_buffer(data):
    """The graph's ``address_shift``: channel ``c`` of a sample reads
    ``buf[(c H + y) W + x + dy[c] W + dx[c]]`` of that sample's buffer, 0 outside it; the
    graph's ``channel_shift`` is ``out[c] = in[(c + r) mod C]``."""
    b, c, h, w = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 5)),
                  data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4)))
    x = np.array(data.draw(st.lists(st.integers(-99, 99), min_size=b * c * h * w,
                                    max_size=b * c * h * w))).reshape(b, c, h, w)
    offsets = data.draw(st.lists(st.tuples(st.integers(-1, 1), st.integers(-1, 1)),
                                 min_size=c, max_size=c))
    got = graph_golden.NODE_FUNCTIONS["address_shift"](SimpleNamespace(offsets=offsets), x)
    r = data.draw(st.integers(0, c))
    rotated = graph_golden.NODE_FUNCTIONS["channel_shift"](SimpleNamespace(r=r), x)
    for i in range(b):
        buf = x[i].ravel().tolist()
        for ci in range(c):
            assert np.array_equal(rotated[i, ci], x[i, (ci + r) % c])
            dy, dx = offsets[ci]
            for y in range(h):
                for xx in range(w):
                    addr = (ci * h + y) * w + xx + dy * w + dx
                    want = buf[addr] if 0 <= addr < len(buf) else 0
                    assert int(got[i, ci, y, xx]) == want


@given(st.integers(2, 16), st.integers(-40, 40), st.data())
def test_quantize_input_rounds_the_exact_value(bits, scale_exp, data):
    """``quantize_input`` is ``clamp(floor(x 2^-scale_exp + 1/2))`` decided on the float's
    exact value (``Fraction``), infinities saturating, for every float64; ties ``k + 1/2``
    and their float neighbours are drawn often."""
    def near_tie(k, side):
        tie = (k + 0.5) * 2.0 ** scale_exp
        return float(np.nextafter(tie, side * math.inf)) if side else tie

    lo, hi = spec_act_range(bits)
    ties = st.builds(near_tie, st.integers(lo - 1, hi), st.sampled_from((-1, 0, 1)))
    xs = data.draw(st.lists(st.one_of(st.floats(allow_nan=False), ties), min_size=1,
                            max_size=6))
    model = SimpleNamespace(input=SimpleNamespace(shape=(len(xs),), act_bits=bits,
                                                  scale_exp=scale_exp))
    got = model_golden.quantize_input(model, np.array(xs)).tolist()
    want = [lo if v == -math.inf else hi if v == math.inf else
            min(max(round_half_up(Fraction(v) / Fraction(2) ** scale_exp), lo), hi)
            for v in xs]
    assert got == want


# Shift primitives ----------------------------------------------------------------------------

@st.composite
def _fmap(draw, max_c=5, max_hw=5):
    c, h, w = draw(st.integers(1, max_c)), draw(st.integers(1, max_hw)), \
        draw(st.integers(1, max_hw))
    values = draw(st.lists(st.integers(-(1 << 15), (1 << 15) - 1), min_size=c * h * w,
                           max_size=c * h * w))
    return np.array(values, dtype=np.int64).reshape(c, h, w)


@given(_fmap(), st.data())
def test_table_shift_moves_or_zero_fills(fmap, data):
    """``out[c, y, x] = in[c, y + dy[c], x + dx[c]]``, 0 for a source outside the map."""
    c, h, w = fmap.shape
    dy = data.draw(st.lists(st.integers(-7, 7), min_size=c, max_size=c))
    dx = data.draw(st.lists(st.integers(-7, 7), min_size=c, max_size=c))
    got = shift_golden.table_shift(fmap, dy, dx)
    for ci in range(c):
        for y in range(h):
            for x in range(w):
                sy, sx = y + dy[ci], x + dx[ci]
                want = int(fmap[ci, sy, sx]) if 0 <= sy < h and 0 <= sx < w else 0
                assert int(got[ci, y, x]) == want


@given(_fmap(), st.data())
def test_channel_shift_is_a_rotation(fmap, data):
    """``out[c] = in[(c + r) mod C]``: a permutation of the channels; ``r = 0, C`` identities."""
    c = fmap.shape[0]
    r = data.draw(st.integers(0, c))
    got = shift_golden.channel_shift(fmap, r)
    for ci in range(c):
        assert np.array_equal(got[ci], fmap[(ci + r) % c])
    assert sorted(got.ravel().tolist()) == sorted(fmap.ravel().tolist())


@given(st.data())
def test_address_shift_reads_linear_memory(data):
    """Channel ``c`` reads ``memory[base + (c H + y) W + x + dy W + dx]`` with its group's
    direction (left, right, up, down, then centre), 0 outside the buffer only."""
    c, h, w = (data.draw(st.integers(1, 9)), data.draw(st.integers(1, 4)),
               data.draw(st.integers(1, 4)))
    depth = data.draw(st.integers(1, 2 * c * h * w + 4))
    memory = data.draw(st.lists(st.integers(-99, 99), min_size=depth, max_size=depth))
    base = data.draw(st.integers(-3, depth))
    group = data.draw(st.one_of(st.none(), st.integers(0, c)))
    got = shift_golden.address_shift(np.array(memory), base, (c, h, w), group)
    g = c // 4 if group is None else group
    directions = [(0, 1), (0, -1), (1, 0), (-1, 0)]
    for ci in range(c):
        i = ci // g if g else 4
        dy, dx = directions[i] if i < 4 else (0, 0)
        for y in range(h):
            for x in range(w):
                addr = base + (ci * h + y) * w + x + dy * w + dx
                want = memory[addr] if 0 <= addr < depth else 0
                assert int(got[ci, y, x]) == want


@given(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6))
def test_read_orders_are_permutations(c, h, w):
    """Both orders visit every ``(c, y, x)`` once; pixel-major element ``i`` is ``(c, y, x)``
    with ``i = (y W + x) C + c``, channel-major ``i = (c H + y) W + x``."""
    pixel = shift_golden.element_order((c, h, w), "pixel_major").tolist()
    channel = shift_golden.element_order((c, h, w), "channel_major").tolist()
    assert sorted(map(tuple, pixel)) == sorted(map(tuple, channel))
    assert len(set(map(tuple, pixel))) == c * h * w
    for i, (ci, y, x) in enumerate(pixel):
        assert i == (y * w + x) * c + ci
    for i, (ci, y, x) in enumerate(channel):
        assert i == (ci * h + y) * w + x

