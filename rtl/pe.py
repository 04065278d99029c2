"""Processing elements: one operator each, one interface for all.

A PE adds its term ``term(x, w)`` to an incoming partial sum and registers the result::

    psum_out <= psum_in + term(x, code)        (when en)

with ``term`` = ``sign * (x << p)`` (shift), ``-|x - w|`` (adder) or ``x * w`` (mult), as
specified in ``docs/numerics.md``. Every width is exact: a PE at depth ``depth`` of a reduction
receives a sum of ``depth`` terms and produces a sum of ``depth + 1`` terms, each held in the
narrowest two's complement type for its range (see :meth:`ArrayConfig.sum_range`).

A column of the array (and of a folded engine) chains the same arithmetic in *chain* form
(:meth:`PE.chain_accumulate`, :meth:`PE.chain_shape`, :meth:`PE.chain_result`): the sum itself
for shift and mult PEs; for adder PEs, whose terms are never positive, its magnitude
``-sum``, unsigned, one bit narrower than the signed sum at every depth (the adder tree
sums magnitudes for the same reason).

The arithmetic lives in :meth:`PE.accumulate`, a pure function of Amaranth values, so that an
array can inline thousands of PEs without a submodule each (Amaranth elaboration cost grows
faster than linearly with the number of submodules).
"""

from amaranth.hdl import Cat, Const, Mux, Module, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..params.config import ArrayConfig, signed_width, unsigned_width


__all__ = ["PE", "ShiftPE", "AdderPE", "MultPE", "pe_class", "mux_tree"]


class PE(wiring.Component):
    """A processing element at position ``depth`` of a reduction chain.

    Parameters
    ----------
    cfg : ArrayConfig
        The design; sets the operator and the operand widths.
    depth : int
        How many terms the incoming partial sum holds (0 for the first PE of a chain).

    Attributes
    ----------
    x : In(signed(act_bits))
        The activation.
    code : In(unsigned(code_width))
        The weight code.
    psum_in : In(signed(...))
        Sum of ``depth`` terms.
    en : In(1)
        Register the new partial sum.
    psum_out : Out(signed(...))
        Sum of ``depth + 1`` terms, registered.
    """

    kind = None
    #: Whether a chain holds ``-sum`` (unsigned) instead of the sum (see :meth:`chain_shape`).
    chain_negated = False

    def __init__(self, cfg: ArrayConfig, depth=0):
        if cfg.pe != self.kind:
            raise ValueError(f"{type(self).__name__} needs a config with pe={self.kind!r}, "
                             f"not {cfg.pe!r}")
        self._cfg = cfg
        self._depth = depth
        super().__init__({
            "x": In(signed(cfg.act_bits)),
            "code": In(unsigned(cfg.code_width)),
            "psum_in": In(self.sum_shape(cfg, depth)),
            "en": In(1),
            "psum_out": Out(self.sum_shape(cfg, depth + 1)),
        })

    @property
    def cfg(self):
        return self._cfg

    @property
    def depth(self):
        return self._depth

    @staticmethod
    def sum_shape(cfg, n):
        """Shape of a sum of ``n`` terms."""
        return signed(signed_width(*cfg.sum_range(n)))

    @classmethod
    def accumulate(cls, cfg, psum, x, code):
        """``psum + term(x, code)`` as an Amaranth value (callers truncate to the exact width)."""
        raise NotImplementedError

    @classmethod
    def chain_shape(cls, cfg, n):
        """Shape of a chain value after ``n`` terms: :meth:`sum_shape`, or for a negated chain
        the unsigned magnitude ``[0, -sum_range(n)[0]]``."""
        if cls.chain_negated:
            return unsigned(unsigned_width(-cfg.sum_range(n)[0]))
        return cls.sum_shape(cfg, n)

    @classmethod
    def chain_accumulate(cls, cfg, chain, x, code):
        """The chain value after one more term: ``chain + term(x, code)``, or ``chain -
        term(x, code)`` for a negated chain (callers truncate to :meth:`chain_shape`)."""
        return cls.accumulate(cfg, chain, x, code)

    @classmethod
    def chain_result(cls, psum, chain):
        """``psum`` plus the sum a chain value ``chain`` stands for (``psum - chain`` when the
        chain is negated)."""
        return psum - chain if cls.chain_negated else psum + chain

    def elaborate(self, platform):
        m = Module()
        psum = self.psum_in if self._depth else 0
        with m.If(self.en):
            m.d.sync += self.psum_out.eq(self.accumulate(self._cfg, psum, self.x, self.code))
        return m


def _sign_extend(value, width):
    """``value`` (signed) widened to ``width`` bits, as a bit vector for :func:`Cat`."""
    value = Value.cast(value)
    if len(value) >= width:
        return value
    return Cat(value, value[-1].replicate(width - len(value)))


def _sub_with_borrow(a, b, borrow):
    """``a - b - borrow`` (signed ``a``, ``b``; 1-bit ``borrow``) as one subtractor.

    Why this form: Yosys (``alumacc``) maps a sum of three operands, even when one is a single
    bit, to a carry-save row plus an adder; and for an addition it puts the narrower operand on
    the carry chain's ``DI`` input, so the operator's term, not the registered partial sum,
    must exist as a net of its own: a second LUT per bit. A subtraction keeps the minuend on
    ``DI`` and inverts the subtrahend inside the carry LUT. The borrow is appended below both
    operands: ``({a, 0} - {b, c}) >> 1 = a - b - c``, one carry chain.

    Width: with ``a`` and ``b`` of at most ``w`` bits, ``a - b - c`` lies in
    ``[-2^(w-1) - (2^(w-1) - 1) - 1, 2^(w-1) - 1 + 2^(w-1)] = [-2^w, 2^w - 1]``: ``w + 1``
    bits, exactly what the difference of the two ``w + 1``-bit operands below leaves once the
    appended bit is dropped (``verify/props_pe.py`` proves every PE kind at its widths).
    """
    a, b = Value.cast(a), Value.cast(b)
    width = max(len(a), len(b))
    total = (Cat(Const(0, 1), _sign_extend(a, width)).as_signed() -
             Cat(borrow, _sign_extend(b, width)).as_signed())
    return total[1:].as_signed()


def mux_tree(index, values):
    """``values[index]`` as a balanced tree of two-way multiplexers, ``index[0]`` at the leaves."""
    values = list(values)
    for bit in range(len(index)):
        values = [Mux(index[bit], values[i + 1], values[i]) for i in range(0, len(values), 2)]
    return values[0]


class ShiftPE(PE):
    """DeepShift: ``term = sign * (x << p)``; code ``{s, e}``, ``e = 0`` is zero, ``p = e - 1``.

    The shift is split on ``e = 4h + l`` (``l`` the two low bits): ``w = x << l`` (a 4-way
    multiplexer, one LUT6 per bit), then ``t = h ? w << (4h - 1) : (l == 0 ? 0 : w >> 1)``.
    The sign is folded into the accumulator as one subtractor, ``psum - (s ? t : ~t) - ~s``
    (see :func:`_sub_with_borrow`): one carry chain and no separate negator. For 3-bit ``e``
    each term bit is then a function of six nets (``psum[i]``, ``s``, ``h``, ``l == 0``,
    ``w[i + 1]``, ``w[i - 3]``), which synthesis packs into the carry chain's propagate LUT:
    about one multiplexer LUT per term bit plus one LUT per sum bit (``mulfree bench synth``).
    """

    kind = "shift"

    @classmethod
    def accumulate(cls, cfg, psum, x, code):
        s = code[-1]
        e = code[:-1]
        low, high = e[:2], e[2:]
        # w = x << e[1:0]: one 4-way multiplexer (a LUT6) per bit, shared by two term bits.
        # Its tree takes e[1] at the leaves: with e[0] there, synthesis shares the 2-way
        # multiplexers of x[i] / x[i - 1] between w[i] and w[i + 2] and splits most bits
        # into a LUT3 and a LUT5 (16-row column: 32.9 -> 29.9 LUT per PE).
        n = len(low)
        wide = mux_tree(low[::-1], [x << int(f"{k:0{n}b}"[::-1], 2) for k in range(1 << n)])
        # p = e - 1 = 4h + l - 1: for h = 1 the term is w << 3; for h = 0 it is w >> 1, which
        # drops only a zero bit of w when l > 0, and l = 0 (e = 0) is the zero weight. Per
        # term bit this is a 2-way choice of w[i + 1] / w[i - 3] and a zero flag: with the
        # sign and the partial-sum bit six inputs, one carry-chain LUT.
        # Wider codes (h > 1) add candidates w << (4h - 1) to the same tree.
        terms = [Mux(low == 0, 0, wide >> 1)]
        terms += [wide << (4 * h - 1) for h in range(1, 1 << len(high))]
        magnitude = mux_tree(high, terms)
        # psum + (s ? -t : t) = psum - (s ? t : ~t) - ~s, since -t = ~t + 1.
        return _sub_with_borrow(psum, Mux(s, magnitude, ~magnitude), ~s)


class AdderPE(PE):
    """AdderNet: ``term = -|x - w|``, with ``d = x - w``.

    The PE computes ``nd = w - x - 1 = ~d`` (one subtractor with a constant borrow), whose sign
    bit is ``d >= 0``; then ``psum - |d|`` is one subtractor, ``psum - (d >= 0 ? ~nd : nd) -
    (d < 0)`` (see :func:`_sub_with_borrow`): the negation of ``d`` costs no adder of its own,
    and the borrow's complement, which the subtractor's lowest bit needs, is ``nd``'s sign bit
    itself, so no inverter LUT sits between the two carry chains.
    """

    kind = "adder"
    chain_negated = True

    @classmethod
    def accumulate(cls, cfg, psum, x, code):
        # nd = w - x - 1 = ~d, so its sign bit is d >= 0 (the complement of d's sign, free).
        nd = _sub_with_borrow(code.as_signed(), x, Const(1, 1))
        positive = nd[-1]
        # psum - |d| = psum - (d >= 0 ? ~nd : nd) - (d < 0), since |d| = ~nd or nd + 1.
        return _sub_with_borrow(psum, Mux(positive, ~nd, nd), ~positive)

    @classmethod
    def chain_accumulate(cls, cfg, chain, x, code):
        # The magnitude chain wants the carry-in d < 0, so here d = x - w itself: its sign bit
        # is that carry (the sum form wants d >= 0, hence nd there). chain + |d| = chain -
        # (d < 0 ? d : ~d) - (d >= 0): the subtrahend is -|d| or -|d| - 1, whose bits above
        # d's are all ones, so the chain's upper bits enter the carry chain as they are (the
        # signed sum's would be inverted, a LUT each).
        d = x - code.as_signed()
        negative = d[-1]
        chain = Cat(Value.cast(chain), Const(0, 1)).as_signed()
        return _sub_with_borrow(chain, Mux(negative, d, ~d), ~negative)


class MultPE(PE):
    """The multiplier baseline: ``term = x * w``."""

    kind = "mult"

    @classmethod
    def accumulate(cls, cfg, psum, x, code):
        return psum + x * code.as_signed()


def pe_class(kind):
    """The PE class computing operator ``kind``."""
    return {"shift": ShiftPE, "adder": AdderPE, "mult": MultPE}[kind]
