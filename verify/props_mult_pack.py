"""Formal properties of the best-effort multiplier (``rtl/mult_pack.py``, ``docs/numerics.md``
section 4, "Packed multipliers").

* ``pack_a8w8``: a packed pair, as :class:`~mulfree.rtl.mult_pack.PairColumn` computes it (the
  upper field formed from the two codes, the packed operand, one multiplication, the split with
  its sign correction), with ``x`` free over ``act_range``, both weights free over
  ``weight_range`` = [-127, 127] and both partial sums free over ``sum_range(depth)``:
  ``psum_lo + x w_lo`` and ``psum_hi + x w_hi`` exactly, at the exact output widths, at the
  depths of the PE proofs.
* ``pack_a8w8_minus128``: the same with ``w_lo`` or ``w_hi`` allowed to be -128; expected to
  FAIL (its counterexample is why the range is symmetric), so ``mulfree formal`` does not run it.
* ``lut_a8w8``: the LUT multiplier (:func:`~mulfree.rtl.mult_pack.lut_accumulate`, radix-4
  Booth) equals ``psum + x * w`` for every int8 ``x`` and ``w``, -128 included.
"""

from amaranth.hdl import Assert, Assume, Module, Signal, signed, unsigned

from ..params.config import ArrayConfig
from ..rtl.mult_pack import lut_accumulate, pair_accumulate, upper_field
from ..rtl.pe import PE


__all__ = ["PROPERTIES", "EXPECTED_FAIL", "PACKED", "LUT", "pair_harness", "lut_harness"]


PACKED = ArrayConfig(pe="mult", act_bits=8, weight_bits=8, max_k=1024, mult_pack=2)
LUT = ArrayConfig(pe="mult", act_bits=8, weight_bits=8, max_k=1024, dsp_cols=0)
DEPTHS = (0, 1, 7, 1023)


def pair_harness(cfg, *, weight_range=None, depths=DEPTHS):
    """Both sums of a packed pair at each depth in ``depths`` against ``psum + x * w``."""
    wlo, whi = cfg.weight_range if weight_range is None else weight_range
    m = Module()
    ports = []
    for depth in depths:
        x = Signal(signed(cfg.act_bits), name=f"x_{depth}")
        codes = [Signal(unsigned(cfg.code_width), name=f"w_{h}_{depth}") for h in ("lo", "hi")]
        psums = [Signal(PE.sum_shape(cfg, max(depth, 1)), name=f"psum_{h}_{depth}")
                 for h in ("lo", "hi")]
        outs = [Signal(PE.sum_shape(cfg, depth + 1), name=f"out_{h}_{depth}")
                for h in ("lo", "hi")]
        ports += [x, *codes, *psums]
        plo, phi = cfg.sum_range(depth)
        for code, psum in zip(codes, psums):
            w = code.as_signed()
            m.d.comb += Assume((w >= wlo) & (w <= whi))
            m.d.comb += Assume((psum >= plo) & (psum <= phi))
        inputs = [p if depth else 0 for p in psums]
        field = Signal(cfg.code_width, name=f"field_{depth}")
        m.d.comb += field.eq(upper_field(cfg, codes[0], codes[1]))
        new_lo, new_hi = pair_accumulate(cfg, inputs[0], inputs[1], x, codes[0], field)
        m.d.comb += [outs[0].eq(new_lo), outs[1].eq(new_hi)]
        for out, psum, code in zip(outs, inputs, codes):
            m.d.comb += Assert(out == psum + x * code.as_signed())
    return m, ports


def lut_harness(cfg, *, depths=DEPTHS):
    """The LUT multiplier's ``psum + x * w`` at each depth, every code."""
    m = Module()
    ports = []
    for depth in depths:
        x = Signal(signed(cfg.act_bits), name=f"x_{depth}")
        code = Signal(unsigned(cfg.code_width), name=f"w_{depth}")
        psum = Signal(PE.sum_shape(cfg, max(depth, 1)), name=f"psum_{depth}")
        out = Signal(PE.sum_shape(cfg, depth + 1), name=f"out_{depth}")
        ports += [x, code, psum]
        plo, phi = cfg.sum_range(depth)
        m.d.comb += Assume((psum >= plo) & (psum <= phi))
        value = psum if depth else 0
        m.d.comb += out.eq(lut_accumulate(cfg, value, x, code))
        m.d.comb += Assert(out == value + x * code.as_signed())
    return m, ports


def _pair(weight_range=None):
    def build():
        m, ports = pair_harness(PACKED, weight_range=weight_range)
        lo, hi = PACKED.weight_range if weight_range is None else weight_range
        return m, ports, "prove", 1, (
            f"packed mult pair (one multiplication, k={PACKED.pack_shift}) = psum + x*w for "
            f"both columns, weights in [{lo}, {hi}], depths {list(DEPTHS)}")
    return build


def _lut():
    m, ports = lut_harness(LUT)
    return m, ports, "prove", 1, (f"LUT (Booth) multiplier = psum + x*w, every int8 x and w, "
                                  f"depths {list(DEPTHS)}")


#: name -> build(): (module, ports, mode, depth, description)
PROPERTIES = {
    "pack_a8w8": _pair(),
    "lut_a8w8": _lut,
}
#: Properties whose FAIL is the evidence (not run by ``mulfree formal``).
EXPECTED_FAIL = {"pack_a8w8_minus128": _pair((-128, 127))}
