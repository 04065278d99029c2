"""Processing elements: one operator each, one interface for all.

A PE adds its term ``term(x, w)`` to an incoming partial sum and registers the result::

    psum_out <= psum_in + term(x, code)        (when en)

with ``term`` = ``sign * (x << p)`` (shift), ``-|x - w|`` (adder) or ``x * w`` (mult), as
specified in ``docs/numerics.md``. Every width is exact: a PE at depth ``depth`` of a reduction
receives a sum of ``depth`` terms and produces a sum of ``depth + 1`` terms, each held in the
narrowest two's complement type for its range (see :meth:`ArrayConfig.sum_range`).

The arithmetic lives in :meth:`PE.accumulate`, a pure function of Amaranth values, so that an
array can inline thousands of PEs without a submodule each (Amaranth elaboration cost grows
faster than linearly with the number of submodules).
"""

from amaranth.hdl import Mux, Signal, Module, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..gen.config import ArrayConfig, signed_width


__all__ = ["PE", "ShiftPE", "AdderPE", "MultPE", "pe_class"]


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

    def elaborate(self, platform):
        m = Module()
        psum = self.psum_in if self._depth else 0
        with m.If(self.en):
            m.d.sync += self.psum_out.eq(self.accumulate(self._cfg, psum, self.x, self.code))
        return m


class ShiftPE(PE):
    """DeepShift: ``term = sign * (x << p)``; code ``{s, e}``, ``e = 0`` is zero, ``p = e - 1``.

    The negation is folded into the accumulator's adder as ``psum + (t ^ s) + s``, so the PE
    holds one barrel shifter and one adder, no separate negator.
    """

    kind = "shift"

    @classmethod
    def accumulate(cls, cfg, psum, x, code):
        s = code[-1]
        e = code[:-1]
        # (x << e) drops its lowest bit: x << (e - 1) for e >= 1; e = 0 selects zero.
        shifted = (x << e)[1:cfg.act_bits + cfg.max_shift + 1].as_signed()
        magnitude = Mux(e == 0, 0, shifted)
        return psum + Mux(s, ~magnitude, magnitude) + s


class AdderPE(PE):
    """AdderNet: ``term = -|x - w|``, computed as ``psum + (d < 0 ? d : ~d + 1)``, ``d = x - w``."""

    kind = "adder"

    @classmethod
    def accumulate(cls, cfg, psum, x, code):
        d = x - code.as_signed()
        negative = d[-1]
        return psum + Mux(negative, d, ~d) + ~negative


class MultPE(PE):
    """The multiplier baseline: ``term = x * w``."""

    kind = "mult"

    @classmethod
    def accumulate(cls, cfg, psum, x, code):
        return psum + x * code.as_signed()


def pe_class(kind):
    """The PE class computing operator ``kind``."""
    return {"shift": ShiftPE, "adder": AdderPE, "mult": MultPE}[kind]
