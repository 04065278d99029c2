"""The best-effort multiplier columns: two products per DSP block, and LUT multipliers.

A weight-stationary array broadcasts row ``r``'s activation ``x`` to every column, so columns
``c`` and ``c + 1`` of a row multiply the same ``x`` by two weights. :class:`PairColumn`
computes both with one multiplication (Xilinx WP486's packing, on the DSP48E1's 25x18
multiplier)::

    P = x * (w_lo + w_hi 2^k)  =  x w_lo + (x w_hi) 2^k          k = cfg.pack_shift

and splits ``P``: the lower product is the signed field ``P[0:k]``, the upper one
``P[k:] + P[k-1]`` (the *sign correction*: a negative lower product borrowed one from the
upper field). This is exact because every product fits ``k`` signed bits, which is why packed
weights lie in ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` (``docs/numerics.md``, "Packed multipliers").
The packed operand costs no adder: ``w_lo + w_hi 2^k`` is the bit vector
``{w_hi - s, s, ..., s, w_lo}`` (``s`` the sign of ``w_lo``), and ``w_hi - s`` is formed once
per column pair where the weight stream enters the shadow chain (it fits ``b`` bits since
``w_hi > -2^(b-1)``). The partial sums stay in fabric adders, one per PE, as in
:class:`~mulfree.rtl.array.PEColumn`.

:func:`lut_accumulate` is the LUT multiplier of the columns past the DSP budget
(``cfg.dsp_cols``): radix-4 Booth partial products summed with the partial sum. Yosys'
``synth_xilinx`` maps every ``$mul`` it can onto a DSP and honours no per-cell attribute to
keep one off, so the product is written without ``*``.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..params.config import ArrayConfig
from .pe import PE


__all__ = ["PairColumn", "upper_field", "packed_operand", "pair_terms", "pair_accumulate",
           "add_with_carry", "booth_digits", "lut_accumulate"]


def add_with_carry(a, b, carry):
    """``a + b + carry`` (signed ``a``, ``b``; 1-bit ``carry``) as one adder.

    ``({a, 1} + {b, carry}) >> 1 = a + b + carry``: the carry enters the chain's first bit
    instead of a third operand (Yosys maps three operands to a carry-save row and an adder).
    """
    a, b = _operand(a), _operand(b)
    width = max(len(a), len(b)) + 1
    total = (Cat(Const(1, 1), _sext(a, width)).as_signed() +
             Cat(carry, _sext(b, width)).as_signed())
    return total[1:].as_signed()


def _operand(value):
    """A signed value, the integer 0 (a chain's first partial sum) as one bit."""
    return Const(0, signed(1)) if isinstance(value, int) and value == 0 else Value.cast(value)


def _sext(value, width):
    value = Value.cast(value)
    return Cat(value, value[-1].replicate(width - len(value))) if len(value) < width else value


def upper_field(cfg: ArrayConfig, w_lo, w_hi):
    """``w_hi - s`` (``s`` the sign of ``w_lo``) in ``code_width`` bits: the packed operand's
    upper field. It fits because ``w_hi >= -(2^(b-1) - 1)``."""
    return (Value.cast(w_hi).as_signed() - Value.cast(w_lo)[-1])[:cfg.code_width]


def packed_operand(cfg: ArrayConfig, w_lo, field):
    """``w_lo + w_hi 2^k`` as the bit vector ``{field, s, ..., s, w_lo}`` (signed, ``b + k``
    bits), ``field`` = :func:`upper_field`: no adder."""
    w_lo = Value.cast(w_lo)
    k = cfg.pack_shift
    return Cat(w_lo, w_lo[-1].replicate(k - len(w_lo)), field).as_signed()


def pair_terms(cfg: ArrayConfig, x, packed):
    """``(x * w_lo, P[k:], P[k - 1])`` for a packed operand ``packed = w_lo + w_hi 2^k``.

    The upper product is ``P[k:] + P[k - 1]``; the caller adds the carry where it accumulates.
    """
    k = cfg.pack_shift
    product = x.as_signed() * packed.as_signed()
    return product[:k].as_signed(), product[k:].as_signed(), product[k - 1]


def pair_accumulate(cfg: ArrayConfig, psum_lo, psum_hi, x, w_lo, field):
    """``(psum_lo + x * w_lo, psum_hi + x * w_hi)`` with one multiplication (callers truncate
    to the exact widths); ``field`` is :func:`upper_field` of the two weights."""
    term_lo, upper, carry = pair_terms(cfg, Value.cast(x), packed_operand(cfg, w_lo, field))
    return psum_lo + term_lo, add_with_carry(psum_hi, upper, carry)


class PairColumn(wiring.Component):
    """Columns ``c`` and ``c + 1`` of a packed mult array: one multiplier per row.

    Same ports as :class:`~mulfree.rtl.array.PEColumn` but two weight codes in and two sums
    out.

    Attributes
    ----------
    x : In(rows * act_bits)
        Row ``r``'s activation, already skewed to the cycle row ``r`` computes it.
    w_in : In(2 * code_width)
        Column ``c``'s weight code (low bits) and column ``c + 1``'s.
    w_shift, load, en : In
        As in :class:`~mulfree.rtl.array.PEColumn`.
    sum_lo, sum_hi : Out(signed(...))
        Column ``c``'s and column ``c + 1``'s sums of ``rows`` terms.
    """

    def __init__(self, cfg: ArrayConfig):
        if cfg.mult_pack != 2:
            raise ValueError(f"PairColumn needs a config with mult_pack=2, not "
                             f"{cfg.mult_pack!r}")
        self._cfg = cfg
        super().__init__({
            "x": In(cfg.rows * cfg.act_bits),
            "w_in": In(2 * cfg.code_width),
            "w_shift": In(1),
            "load": In(cfg.rows),
            "en": In(1),
            "sum_lo": Out(PE.sum_shape(cfg, cfg.rows)),
            "sum_hi": Out(PE.sum_shape(cfg, cfg.rows)),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        rows, a, cw = cfg.rows, cfg.act_bits, cfg.code_width
        m = Module()
        lo_in, hi_in = self.w_in[:cw], self.w_in[cw:]
        # w_hi - s, s = the sign of w_lo: the upper field of the packed operand.
        hi_field = Signal(cw, name="hi_field")
        m.d.comb += hi_field.eq(upper_field(cfg, lo_in, hi_in))
        shadow = [Signal(2 * cw, name=f"shadow_{r}", reset_less=True) for r in range(rows)]
        active = [Signal(2 * cw, name=f"weight_{r}", reset_less=True) for r in range(rows)]
        with m.If(self.w_shift):
            m.d.sync += shadow[rows - 1].eq(Cat(lo_in, hi_field))
            m.d.sync += [shadow[r].eq(shadow[r + 1]) for r in range(rows - 1)]
        for r in range(rows):
            with m.If(self.load[r]):
                m.d.sync += active[r].eq(shadow[r])

        psum_lo = psum_hi = 0
        with m.If(self.en):
            for r in range(rows):
                x = self.x[r * a:(r + 1) * a].as_signed()
                new_lo, new_hi = pair_accumulate(cfg, psum_lo, psum_hi, x, active[r][:cw],
                                                 active[r][cw:])
                out_lo = Signal(PE.sum_shape(cfg, r + 1), name=f"psum_lo_{r}", reset_less=True)
                out_hi = Signal(PE.sum_shape(cfg, r + 1), name=f"psum_hi_{r}", reset_less=True)
                m.d.sync += [out_lo.eq(new_lo), out_hi.eq(new_hi)]
                psum_lo, psum_hi = out_lo, out_hi
        m.d.comb += [self.sum_lo.eq(psum_lo), self.sum_hi.eq(psum_hi)]
        return m


def booth_digits(code):
    """Radix-4 Booth digits of the signed ``code``: ``(neg, one, two)`` per digit, low first.

    Digit ``j`` is ``-2 c[2j+1] + c[2j] + c[2j-1]`` (``c[-1] = 0``, ``c`` sign-extended to an
    even width); ``code = sum_j d_j 4^j``, ``d_j`` in ``-2..2``.
    """
    code = Value.cast(code)
    bits = _sext(code, len(code) + len(code) % 2)
    digits = []
    for j in range(len(bits) // 2):
        below = bits[2 * j - 1] if j else Const(0, 1)
        mid, top = bits[2 * j], bits[2 * j + 1]
        one = mid ^ below
        two = (top & ~mid & ~below) | (~top & mid & below)
        digits.append((top, one, two))
    return digits


def lut_accumulate(cfg: ArrayConfig, psum, x, code):
    """``psum + x * code`` from LUTs: radix-4 Booth partial products, no ``$mul`` cell.

    Digit ``j``'s partial product is ``±m_j 4^j``, ``m_j`` in ``{0, x, 2x}``; a negative one is
    ``~m_j + 1``. Partial products are added in pairs, each pair's two ``+1`` bits riding in
    a sparse third operand (``{n_hi, 0, n_lo}``), then the pairs, then the partial sum: a
    balanced tree of short adders, which Yosys maps to carry chains (one flat sum of all five
    operands became a carry-save tree in LUTs, 20 % larger).
    """
    x = Value.cast(x).as_signed()
    width = cfg.act_bits + 1
    terms = []
    for neg, one, two in booth_digits(code):
        mag = _sext(Mux(two, x << 1, Mux(one, x, 0)), width)[:width].as_signed()
        terms.append((Mux(neg, ~mag, mag).as_signed(), neg))
    # Pairs of digits (4^j, 4^(j+1)), then pairs of pairs, ...: (value, weight shift).
    level = []
    for i in range(0, len(terms), 2):
        (a, na), *rest = terms[i:i + 2]
        if rest:
            (b, nb), = rest
            level.append((a + (b << 2) + Cat(na, Const(0, 1), nb).as_unsigned(), 4 * i // 2))
        else:
            level.append((a + na, 4 * i // 2))
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            if i + 1 < len(level):
                (a, sa), (b, sb) = level[i], level[i + 1]
                nxt.append((a + (b << (sb - sa)), sa))
            else:
                nxt.append(level[i])
        level = nxt
    product = level[0][0][:cfg.term_width + 1].as_signed()
    return psum + product
