"""Formal properties of the PE operators (``rtl/pe.py``) against ``docs/numerics.md``.

For one PE kind and its widths, a harness places ``PE.accumulate`` at several depths of a
reduction, exactly as the array does (``psum_out = accumulate(psum_in, x, code)`` truncated to
``sum_shape(depth + 1)``), with ``x``, ``code`` and ``psum_in`` free over their whole ranges,
and asserts

* ``psum_out == psum_in + term(x, code)`` with ``term`` computed in unbounded (widened)
  arithmetic from the numerics definition (shift: a case per exponent, ``x * 2^p`` with the
  sign applied; adder: ``-|x - w|``; mult: ``x * w``) — so the exact-width result never wraps;
* that sum lies in ``sum_range(depth + 1)``, the range the output width was derived from.

A second harness (mode ``cover``) reaches both ends of ``sum_range(depth + 1)`` at every depth:
the declared range, and with it the width, is tight.

The widths: each kind at the ``ArrayConfig`` defaults (``act_bits = 8``; shift ``weight_bits =
4``, mult 8; ``max_k = 1024``, also what ``mulfree gen``/``demo``/``core`` use by default), plus
the small cores of the simulation tests (adder ``act_bits = 6``, mult ``weight_bits = 5``) and
the widest shift code (``weight_bits = 6``, shifts up to 30).
"""

from amaranth.hdl import Assert, Assume, Cover, Module, Mux, Signal, signed, unsigned

from ..params.config import ArrayConfig
from ..rtl.pe import PE, pe_class


__all__ = ["PROPERTIES", "SHIPPED", "spec_term", "pe_harness", "narrow_difference_harness"]


#: The widths proven, by property name suffix.
SHIPPED = {
    "shift_a8w4": ArrayConfig(pe="shift", act_bits=8, weight_bits=4, max_k=1024),
    "shift_a8w6": ArrayConfig(pe="shift", act_bits=8, weight_bits=6, max_k=256),
    "adder_a8": ArrayConfig(pe="adder", act_bits=8, max_k=1024),
    "adder_a6": ArrayConfig(pe="adder", act_bits=6, max_k=256),
    "mult_a8w8": ArrayConfig(pe="mult", act_bits=8, weight_bits=8, max_k=1024),
    "mult_a8w5": ArrayConfig(pe="mult", act_bits=8, weight_bits=5, max_k=256),
}


def spec_term(cfg, x, code):
    """``term(x, code)`` as numerics.md defines it, in widened (never wrapping) arithmetic."""
    if cfg.pe == "shift":
        s, e = code[-1], code[:-1]
        # term = 0 for e = 0, else (-1)^s * x * 2^(e - 1): one case per exponent.
        magnitude = 0
        for ev in range(1, 1 << (cfg.weight_bits - 1)):
            magnitude = Mux(e == ev, x * (1 << (ev - 1)), magnitude)
        return Mux(s, -magnitude, magnitude)
    w = code.as_signed()
    if cfg.pe == "adder":
        d = x - w
        return -Mux(d < 0, -d, d)
    return x * w


def _depths(cfg):
    """Depths proven: the first few (the output grows or not), a row's last, the deepest."""
    return sorted({0, 1, 2, 3, cfg.rows - 1, cfg.max_k - 1})


def pe_harness(cfg, *, pe=None, cover=False):
    """The harness of ``cfg``'s PE kind (or of the class ``pe``): asserts, or covers."""
    pe = pe_class(cfg.pe) if pe is None else pe
    m = Module()
    ports = []
    for depth in _depths(cfg):
        x = Signal(signed(cfg.act_bits), name=f"x_{depth}")
        code = Signal(unsigned(cfg.code_width), name=f"code_{depth}")
        psum_in = Signal(PE.sum_shape(cfg, max(depth, 1)), name=f"psum_in_{depth}")
        psum_out = Signal(PE.sum_shape(cfg, depth + 1), name=f"psum_out_{depth}")
        ports += [x, code, psum_in]
        lo_in, hi_in = cfg.sum_range(depth)
        lo, hi = cfg.sum_range(depth + 1)
        psum = psum_in if depth else 0
        m.d.comb += Assume((psum_in >= lo_in) & (psum_in <= hi_in))
        m.d.comb += psum_out.eq(pe.accumulate(cfg, psum, x, code))
        expected = psum + spec_term(cfg, x, code)
        if cover:
            m.d.comb += [Cover(psum_out == lo), Cover(psum_out == hi)]
        else:
            m.d.comb += [Assert(psum_out == expected), Assert((expected >= lo) & (expected <= hi))]
    return m, ports


def narrow_difference_harness(cfg):
    """Whether ``d = x - w`` of the adder PE fits ``act_bits`` bits (it does not: a FAIL here,
    with its counterexample, is the evidence that the ``a + 1``-th bit is needed)."""
    m = Module()
    x = Signal(signed(cfg.act_bits), name="x")
    code = Signal(unsigned(cfg.code_width), name="code")
    narrow = Signal(signed(cfg.act_bits), name="narrow")
    m.d.comb += narrow.eq(x - code.as_signed())
    m.d.comb += Assert(narrow == x - code.as_signed())
    return m, [x, code]


def _prove(key):
    def build():
        cfg = SHIPPED[key]
        m, ports = pe_harness(cfg)
        return m, ports, "prove", 1, (f"{cfg.pe} PE = psum + term (numerics.md) at depths "
                                      f"{_depths(cfg)}, a={cfg.act_bits} b={cfg.weight_bits}")
    return build


def _cover(key):
    def build():
        cfg = SHIPPED[key]
        m, ports = pe_harness(cfg, cover=True)
        return m, ports, "cover", 1, (f"{cfg.pe} PE reaches both ends of sum_range(depth + 1) "
                                      f"at depths {_depths(cfg)}")
    return build


#: name -> build(): (module, ports, mode, depth, description)
PROPERTIES = {}
for _key in SHIPPED:
    PROPERTIES[f"pe_{_key}"] = _prove(_key)
    PROPERTIES[f"pe_{_key}_range"] = _cover(_key)
