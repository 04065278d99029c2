"""Formal properties of the PE operators (``rtl/pe.py``) against ``docs/numerics.md``.

For one PE kind and its widths, a harness places ``PE.accumulate`` at several depths of a
reduction, exactly as the array does (``psum_out = accumulate(psum_in, x, code)`` truncated to
``sum_shape(depth + 1)``), with ``x``, ``code`` and ``psum_in`` free over their whole ranges,
and asserts

* ``psum_out == psum_in + term(x, code)`` with ``term`` computed in unbounded (widened)
  arithmetic from the numerics definition (shift: a case per exponent, ``x * 2^p`` with the
  sign applied; adder: ``-|x - w|``; mult: ``x * w``) — so the exact-width result never wraps;
* that sum lies in ``sum_range(depth + 1)``, the range the output width was derived from;
* the same of the chain form the array's columns use (``PE.chain_accumulate``; an adder chain
  holds the magnitude ``-sum`` in ``chain_shape``), where a class has its own.

A second harness (mode ``cover``) reaches both ends of ``sum_range(depth + 1)`` at every depth:
the declared range, and with it the width, is tight.

The widths: each kind at the ``ArrayConfig`` defaults (``act_bits = 8``; shift ``weight_bits =
4``, mult 8; ``max_k = 1024``, also what ``mulfree gen``/``demo``/``core`` use by default), plus
the small cores of the simulation tests (adder ``act_bits = 6``, mult ``weight_bits = 5``) and
the widest shift code (``weight_bits = 6``, shifts up to 30).
"""

from amaranth.hdl import Assert, Assume, Cover, Module, Mux, ResetSignal, Signal, signed, unsigned

from ..params.config import ArrayConfig
from ..rtl.pe import PE, pe_class
from ..rtl.tree import TreeEngine


__all__ = ["PROPERTIES", "SHIPPED", "TREES", "spec_term", "pe_harness", "tree_harness",
           "narrow_difference_harness"]


#: The widths proven, by property name suffix.
SHIPPED = {
    "shift_a8w4": ArrayConfig(pe="shift", act_bits=8, weight_bits=4, max_k=1024),
    "shift_a8w6": ArrayConfig(pe="shift", act_bits=8, weight_bits=6, max_k=256),
    "adder_a8": ArrayConfig(pe="adder", act_bits=8, max_k=1024),
    "adder_a6": ArrayConfig(pe="adder", act_bits=6, max_k=256),
    "mult_a8w8": ArrayConfig(pe="mult", act_bits=8, weight_bits=8, max_k=1024),
    "mult_a8w5": ArrayConfig(pe="mult", act_bits=8, weight_bits=5, max_k=256),
}


#: Adder trees (``arch="tree"``, one lane) whose node arithmetic (``rtl/tree.py``: the leaf,
#: its value and carry, a level's adder absorbing the left carry, the odd node passing through
#: with its carry, the root's add or subtract absorbing the last one) is proven. Three leaves
#: use every one of those operators; the shift tree has two (every operator but the pass-through,
#: which is the same for every kind): its sum of three is beyond the solver in minutes.
TREES = {
    "shift_a8w4": ArrayConfig(pe="shift", arch="tree", rows=2, cols=1, act_bits=8,
                              weight_bits=4, max_k=1024),
    "adder_a8": ArrayConfig(pe="adder", arch="tree", rows=3, cols=1, act_bits=8, max_k=1024),
    "mult_a8w8": ArrayConfig(pe="mult", arch="tree", rows=3, cols=1, act_bits=8,
                             weight_bits=8, max_k=1024),
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
    """The harness of ``cfg``'s PE kind (or of the class ``pe``): asserts, or covers.

    A class with its own chain form (:meth:`~mulfree.rtl.pe.PE.chain_accumulate`, what the
    array's and the folded engine's columns use) is proven in that form too, at the same
    depths: ``chain_out = chain_in + term`` (``chain_in - term`` for a negated chain, which
    stands for ``-sum``), ``chain_in`` free over :meth:`~mulfree.rtl.pe.PE.chain_shape`'s
    range, the result exactly in it.
    """
    pe = pe_class(cfg.pe) if pe is None else pe
    chained = pe.chain_accumulate.__func__ is not PE.chain_accumulate.__func__
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
        term = spec_term(cfg, x, code)
        expected = psum + term
        if cover:
            m.d.comb += [Cover(psum_out == lo), Cover(psum_out == hi)]
        else:
            m.d.comb += [Assert(psum_out == expected), Assert((expected >= lo) & (expected <= hi))]
        if not chained:
            continue
        sign = -1 if pe.chain_negated else 1
        chain_in = Signal(pe.chain_shape(cfg, max(depth, 1)), name=f"chain_in_{depth}")
        chain_out = Signal(pe.chain_shape(cfg, depth + 1), name=f"chain_out_{depth}")
        ports.append(chain_in)
        c_lo_in, c_hi_in = sorted((sign * lo_in, sign * hi_in))
        c_lo, c_hi = sorted((sign * lo, sign * hi))
        chain = chain_in if depth else 0
        m.d.comb += Assume((chain_in >= c_lo_in) & (chain_in <= c_hi_in))
        m.d.comb += chain_out.eq(pe.chain_accumulate(cfg, chain, x, code))
        expected = chain + sign * term
        if cover:
            m.d.comb += [Cover(chain_out == c_lo), Cover(chain_out == c_hi)]
        else:
            m.d.comb += [Assert(chain_out == expected),
                         Assert((expected >= c_lo) & (expected <= c_hi))]
    return m, ports


def tree_harness(cfg):
    """A tile of free weights, then one free input vector with a free partial sum: the lane's
    result, ``latency`` cycles after the vector, is ``psum + sum_i term(x_i, w_i)``.

    The harness drives the protocol (rows ``0 .. rows-1`` in the first ``rows`` cycles, the
    vector with ``last`` in the next, the output always ready, no reset); the values are free.
    """
    rows, a, cw, acc = cfg.rows, cfg.act_bits, cfg.code_width, cfg.acc_width
    m = Module()
    m.submodules.dut = dut = TreeEngine(cfg)
    w_in = Signal(cw, name="w_in")
    x_in = Signal(rows * a, name="x_in")
    psum_in = Signal(signed(acc), name="psum_in")
    t = Signal(range(rows + cfg.latency + 2), name="t")
    with m.If(t < rows + cfg.latency + 1):
        m.d.sync += t.eq(t + 1)
    m.d.comb += [
        Assume(~ResetSignal()),
        dut.w.valid.eq(t < rows), dut.w.payload.eq(w_in),
        dut.x.valid.eq(t == rows), dut.x.payload.data.eq(x_in),
        dut.x.payload.psum.eq(psum_in), dut.x.payload.last.eq(1),
        dut.y.ready.eq(1),
    ]
    # The partial sum holds at most max_k - rows terms, so the result fits the accumulator.
    plo, phi = cfg.sum_range(cfg.max_k - rows)
    m.d.comb += Assume(~(t == rows) | ((psum_in >= plo) & (psum_in <= phi)))
    weights = [Signal(cw, name=f"w_{i}") for i in range(rows)]
    xs = Signal(rows * a, name="x_q")
    psum = Signal(signed(acc), name="psum_q")
    for i in range(rows):
        with m.If(t == i):
            m.d.sync += weights[i].eq(w_in)
    with m.If(t == rows):
        m.d.sync += [xs.eq(x_in), psum.eq(psum_in)]
    expected = psum
    for i in range(rows):
        expected = expected + spec_term(cfg, xs[i * a:(i + 1) * a].as_signed(), weights[i])
    at_output = t == rows + cfg.latency
    m.d.comb += [
        Assert(dut.w.ready | ~dut.w.valid),
        Assert(~(t == rows) | dut.x.ready),
        Assert(~at_output | dut.y.valid),
        Assert(~at_output | (dut.y.payload.data.as_signed() == expected)),
    ]
    return m, [w_in, x_in, psum_in]


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


def _tree(key):
    def build():
        cfg = TREES[key]
        m, ports = tree_harness(cfg)
        return m, ports, "bmc", cfg.rows + cfg.latency + 1, (
            f"{cfg.pe} adder tree of {cfg.rows} leaves: psum + sum of terms (numerics.md), "
            f"a={cfg.act_bits} b={cfg.weight_bits}")
    return build


#: name -> build(): (module, ports, mode, depth, description)
PROPERTIES = {}
for _key in SHIPPED:
    PROPERTIES[f"pe_{_key}"] = _prove(_key)
    PROPERTIES[f"pe_{_key}_range"] = _cover(_key)
for _key in TREES:
    PROPERTIES[f"tree_{_key}"] = _tree(_key)
