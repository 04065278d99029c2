"""The adder-tree engine: one pipelined adder tree per output lane (``arch="tree"``).

The dot-product organisation beside the 2-D array. An input vector ``x`` of ``k = rows``
activations meets ``n = cols`` weight vectors at once: lane ``j`` computes all ``k`` terms
``term(x[i], W[i, j])`` in the same cycle and reduces them in a pipelined adder tree, then adds
the incoming partial sum at the root::

    x ─▶[reg]─┬─ term(x0,W0j) ─┐
              ├─ term(x1,W1j) ─┴(+)─┐            one tree per lane j; a register after
              ├─ term(x2,W2j) ─┐    ├(+)─ ...    every `tree_levels_per_stage` levels;
              └─ term(x3,W3j) ─┴(+)─┘            odd nodes pass through (registered)
    psum ──▶[delay: latency - 1]────────────(+)──▶[reg]──▶ y[j]

The component has exactly the signature and protocol of :class:`~mulfree.rtl.array.PEArray`
(:func:`~mulfree.rtl.array.array_signature`): weight tiles of ``rows`` beats, input vectors with
partial sums and ``last``, one result vector per input vector, a global stall on backpressure.
The golden model :func:`~mulfree.params.golden.array_forward` is its specification too.

Exact widths: a node over ``m`` leaves is :meth:`ArrayConfig.tree_node_width(m)
<mulfree.params.config.ArrayConfig.tree_node_width>` bits wide; only the root is ``acc_width``.

Negations become carries (``docs/numerics.md``, section 9). Each leaf yields a value ``v`` and a
carry bit ``c`` with ``term = v + c`` (shift: ``v = t XOR S``, ``c = s``) or
``|x - w| = v + c`` (adder: ``v = d XOR N``, ``c = N``, ``d = x - w``, ``N`` its sign): the XOR
needs no adder of its own (it is the level-1 adder's input inversion), and every adder absorbs
one pending carry as an extra bit below its operands. A tree of ``k`` leaves has ``k - 1``
adders plus the root: exactly one adder per carry.

Weights: all lanes compute a vector's terms in the same cycle (the cycle after its handshake),
so the double buffer needs no token: the weight stream shifts rows into a shadow tile; when a
tile's first input beat is accepted the shadow tile is copied into the active tile at that same
clock edge, which also registers the vector. Vectors of the previous tile have already computed
their terms by then. The next tile may start loading in the following cycle.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring

from ..params.config import ArrayConfig
from .array import array_signature
from .pe import mux_tree
from .tiles import tile_sequencer


__all__ = ["TreeEngine"]


def _extend(value, width, is_signed):
    """``value`` sign- or zero-extended to ``width`` bits, as a bit vector for :func:`Cat`."""
    value = Value.cast(value)
    if len(value) >= width:
        return value[:width]
    fill = value[-1] if is_signed else Const(0, 1)
    return Cat(value, fill.replicate(width - len(value)))


def _add_carry(a, b, carry, width, is_signed):
    """``a + b + carry`` in ``width`` bits (the caller guarantees the sum fits), one adder.

    Why this form: Yosys maps a three-operand sum, even with a one-bit operand, to a carry-save
    row plus an adder; a bit appended below the operands makes the carry the adder's own. And
    it is written as a subtraction, ``a + b + c = a - ~b - ~c = ({a, 0} - {~b, ~c}) >> 1``:
    Yosys inverts a subtrahend inside the carry chain's LUTs, and the appended bit then needs
    no inverter (measured on the 16x16 adder tree: 22.5 instead of 23.4 LUTs per term).
    """
    a, b = _extend(a, width, is_signed), _extend(b, width, is_signed)
    if carry is None:
        return (a.as_unsigned() + b.as_unsigned())[:width]
    total = Cat(Const(0, 1), a).as_unsigned() - Cat(~carry, ~b).as_unsigned()
    return total[1:width + 1]


def _sub_borrow(a, b, borrow, width, a_signed, b_signed):
    """``a - b - borrow`` in ``width`` bits as one subtractor (see :func:`_add_carry`)."""
    if borrow is None:
        borrow = Const(0, 1)
    total = (Cat(Const(0, 1), _extend(a, width, a_signed)).as_unsigned() -
             Cat(borrow, _extend(b, width, b_signed)).as_unsigned())
    return total[1:width + 1]


class _Node:
    """A tree node: a value (``m`` leaves' terms minus the pending carry) and that carry."""

    def __init__(self, value, carry, leaves):
        self.value = value
        self.carry = carry
        self.leaves = leaves


class TreeEngine(wiring.Component):
    """``cols`` lanes, each reducing ``rows`` terms in a pipelined adder tree.

    Vectors are flat: element ``i`` of a vector of ``b``-bit values is bits ``[i*b, (i+1)*b)``.

    Parameters
    ----------
    cfg : ArrayConfig
        A configuration with ``arch="tree"``.

    Attributes
    ----------
    w : In(stream.Signature(unsigned(cols * code_width)))
        Weight tile rows ``W[i, :]``, row 0 first; ``rows`` beats make a tile.
    x : In(stream.Signature(input_layout(cfg)))
        Input vectors with their incoming partial sums; ``last`` ends a tile's vectors.
    y : Out(stream.Signature(output_layout(cfg)))
        Result vectors ``y[j] = psum[j] + sum_i term(x[i], W[i, j])``, in input order,
        ``last`` copied from the input.
    """

    def __init__(self, cfg: ArrayConfig):
        if cfg.arch != "tree":
            raise ValueError(f"TreeEngine needs a config with arch='tree', not {cfg.arch!r}")
        self._cfg = cfg
        super().__init__(array_signature(cfg))

    @property
    def cfg(self):
        return self._cfg

    # Leaves ---------------------------------------------------------------------------------

    def _leaf_raw(self, x, code):
        """What a leaf computes from ``x`` and its weight code, before any register."""
        cfg = self._cfg
        if cfg.pe == "adder":
            return (x - code.as_signed())[:cfg.tree_leaf_width]        # d, a + 1 bits
        if cfg.pe == "shift":
            s, e = code[-1], code[:-1]
            low, high = e[0], e[1:]
            # x << p as in ShiftPE: x << 2h for every h, then one more halving step.
            wide = mux_tree(high, [x << (2 * h) for h in range(1 << len(high))])
            magnitude = Mux(low, wide, Mux(high == 0, 0, wide >> 1))
            return Cat(magnitude[:cfg.act_bits + cfg.max_shift], s)   # {s, t}
        return (x * code.as_signed())[:cfg.tree_leaf_width]

    def _leaf_node(self, raw):
        """The leaf's ``(value, carry)`` from its (possibly registered) raw bits."""
        cfg = self._cfg
        if cfg.pe == "adder":
            # |d| = (d XOR N) + N with N the sign of d: the XOR is the next adder's input
            # inversion, N its carry.
            a = cfg.act_bits
            negative = raw[a]
            return _Node(raw[:a] ^ negative.replicate(a), negative, 1)
        if cfg.pe == "shift":
            # sign * t = (t XOR S) + s: the same trick, signed.
            width = cfg.act_bits + cfg.max_shift
            s = raw[width]
            return _Node((raw[:width] ^ s.replicate(width)).as_signed(), s, 1)
        return _Node(raw.as_signed(), None, 1)

    # Elaboration ----------------------------------------------------------------------------

    def elaborate(self, platform):
        cfg = self._cfg
        k, n, a, cw, acc = cfg.rows, cfg.cols, cfg.act_bits, cfg.code_width, cfg.acc_width
        latency = cfg.latency
        registered = set(cfg.tree_registered_levels)
        is_signed = cfg.tree_signed
        m = Module()

        # Pipeline control: stage s holds what was accepted s + 1 advances ago; the last
        # entry is the output register.
        advance = Signal()
        valid = [Signal(name=f"valid_{s}") for s in range(latency)]
        last = [Signal(name=f"last_{s}", reset_less=True) for s in range(latency)]
        m.d.comb += advance.eq(self.y.ready | ~self.y.valid)

        take, swap, w_shift = tile_sequencer(m, w=self.w, x=self.x, advance=advance, beats=k)

        # Weights: beats enter the shadow tile at the bottom and move up (row 0, sent first,
        # ends at the top). Every bit is a plain flip-flop with an enable: no LUTs.
        shadow = [Signal(n * cw, name=f"shadow_{i}", reset_less=True) for i in range(k)]
        active = [Signal(n * cw, name=f"weight_{i}", reset_less=True) for i in range(k)]
        with m.If(w_shift):
            m.d.sync += shadow[k - 1].eq(self.w.payload)
            m.d.sync += [shadow[i].eq(shadow[i + 1]) for i in range(k - 1)]
        with m.If(swap):
            m.d.sync += [active[i].eq(shadow[i]) for i in range(k)]

        # Input register, valid and last.
        x_reg = Signal(k * a, reset_less=True)
        with m.If(advance):
            m.d.sync += [x_reg.eq(self.x.payload.data),
                         valid[0].eq(take), last[0].eq(self.x.payload.last)]
            m.d.sync += [valid[s].eq(valid[s - 1]) for s in range(1, latency)]
            m.d.sync += [last[s].eq(last[s - 1]) for s in range(1, latency)]

        # Incoming partial sums wait latency - 1 edges, to meet their tree at the root's stage.
        psum = [Signal(n * acc, name=f"psum_{s}", reset_less=True) for s in range(latency - 1)]
        with m.If(advance):
            m.d.sync += psum[0].eq(self.x.payload.psum)
            m.d.sync += [psum[s].eq(psum[s - 1]) for s in range(1, latency - 1)]
        psum_root = psum[-1]

        def register(value, shape, name):
            reg = Signal(shape, name=name, reset_less=True)
            with m.If(advance):
                m.d.sync += reg.eq(value)
            return reg

        def wire(value, shape, name):
            # A named net per node: an unregistered level's expression would otherwise be
            # inlined into every use, and the Verilog grows exponentially with the levels.
            net = Signal(shape, name=name)
            m.d.comb += net.eq(value)
            return net

        def hold(registered_here, value, shape, name):
            return (register if registered_here else wire)(value, shape, name)

        node_shape = signed if is_signed else unsigned
        results = []
        for j in range(n):
            nodes = []
            for i in range(k):
                x = x_reg[i * a:(i + 1) * a].as_signed()
                raw = self._leaf_raw(x, active[i][j * cw:(j + 1) * cw])
                raw = hold(0 in registered, raw, cfg.tree_leaf_width, f"leaf_{j}_{i}")
                nodes.append(self._leaf_node(raw))
            for level in range(1, cfg.tree_depth + 1):
                paired = []
                for p in range(0, len(nodes), 2):
                    if p + 1 == len(nodes):
                        paired.append(nodes[p])          # odd node: passes through
                        continue
                    left, right = nodes[p], nodes[p + 1]
                    leaves = left.leaves + right.leaves
                    width = cfg.tree_node_width(leaves)
                    # Absorb the left carry, pass the right one on: one carry per adder.
                    value = _add_carry(left.value, right.value, left.carry, width, is_signed)
                    paired.append(_Node(value, right.carry, leaves))
                here = level in registered
                for p, node in enumerate(paired):
                    width = cfg.tree_node_width(node.leaves)
                    node.value = hold(here, node.value, node_shape(width),
                                      f"node_{j}_{level}_{p}")
                    if node.carry is not None:
                        node.carry = hold(here, node.carry, 1, f"carry_{j}_{level}_{p}")
                nodes = paired
            (top,) = nodes
            p_j = psum_root[j * acc:(j + 1) * acc]
            if cfg.pe == "adder":
                # y = psum - sum|d| = psum - value - carry: one subtractor.
                root = _sub_borrow(p_j, top.value, top.carry, acc, True, False)
            else:
                root = _add_carry(p_j.as_signed(), top.value, top.carry, acc, True)
            results.append(register(root, acc, f"result_{j}"))

        m.d.comb += [
            self.y.valid.eq(valid[latency - 1]),
            self.y.payload.data.eq(Cat(results)),
            self.y.payload.last.eq(last[latency - 1]),
        ]
        return m
