"""The folded engine: a few PE columns computing a ``cols``-wide result vector in passes.

A multi-engine core (interface 2.1) may give an engine fewer physical PE columns than the
core's ``cols`` (``CoreConfig.engine_cols``): a small multiplier engine for the first and last
layers of an AdderNet or DeepShift network. :class:`FoldedEngine` has exactly the signature and
the tile protocol of :class:`~mulfree.rtl.array.PEArray` (:func:`~mulfree.rtl.array.
array_signature`), so the core puts it where an array or a tree goes, and the golden model
:func:`~mulfree.params.golden.array_forward` is its specification too.

With ``PC = physical_cols`` and ``P = cols / PC`` passes, pass ``p`` computes tile columns
``p*PC .. p*PC + PC - 1``::

    x, psum ─▶[hold]──┬─ x[0] ─┬────────┬─ ...          the input is held for P cycles;
      (handshake       │      PE00     PE01             pass p = 0 .. P-1 enters one per
       every P cycles) │       │        │               cycle, its index travelling with it
                       ├─ x[1]─┼─PE10───┼─PE11          (skewed like the activations)
                       ⋮       ⋮        ⋮
    W[r, p*PC + j] ─▶ P-way multiplexer per PE, chosen one stage ahead ─▶[code register]
    psum[p*PC ...] ─▶[delay: rows]──────(+)──▶ output shift register of P slices ──▶ y

Each physical column is a chain of ``rows`` PEs (:meth:`~mulfree.rtl.pe.PE.chain_accumulate`,
one carry chain each, partial sums exactly as wide as their depth needs, an adder chain's as
the magnitude ``-sum``), as in the array. Why a
chain and not a registered adder tree per column: the PE functions of :mod:`~mulfree.rtl.pe`
are ``psum + term`` as one carry chain, which is what a chain needs (a tree would need the
term and the additions as separate operators, or :mod:`~mulfree.rtl.tree`'s own leaf
arithmetic), and the chain keeps the array's proven tile-swap token. Timing: the code a PE
uses is chosen from the ``P`` columns of its pass one stage ahead, into a register per PE, so
the path through a PE is the array's (weight register, operator, partial-sum register); the
multiplexer (one LUT6 for ``P <= 4``) lies between two registers of its own.

Passes of one vector leave the chain on consecutive advances; the result slices shift into an
output register of ``P`` slices, whose valid bit is set when the last pass lands. Resources
scale with ``PC``: ``rows * PC`` PEs, code registers and weight multiplexers, a
``PC * acc_width`` partial-sum delay; only the weight tile (``rows x cols`` codes, shadow and
active), the held partial sums and the output register are ``cols`` wide, as flip-flops with
an enable.

Weights: as in the array, rows shift up a shadow tile; after ``rows`` beats the tile is
pending; the input beat that starts a tile takes it and sends a token down the rows with its
pass 0. Row ``r`` copies its shadow row as the token enters stage ``r - 1`` (rows 0 and 1 on
the swap; row 0's codes of that pass come from the shadow row directly), one stage before the
token's vector needs it, when the vector ahead (the old tile's) has chosen its codes of row
``r``. So vectors of the old and new tile can be in flight together; the next tile loads once
the token has left the shadow rows.

Backpressure stalls the whole pipeline, the pass counter included.
"""

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory

from ..params.config import ArrayConfig
from ..params.fold_config import check_fold, fold_latency
from .array import array_signature
from .pe import mux_tree, pe_class
from .tiles import tile_sequencer


__all__ = ["FoldedEngine"]


def _select(index, values):
    """``values[index]`` (``len(values) <= 2 ** len(index)``) as a multiplexer tree."""
    values = list(values)
    if len(values) == 1:
        return values[0]
    values += values[-1:] * ((1 << len(index)) - len(values))
    return mux_tree(index, values)


class FoldedEngine(wiring.Component):
    """``rows x physical_cols`` PEs of one kind computing ``rows x cols`` tiles in passes.

    Vectors are flat: element ``i`` of a vector of ``b``-bit values is bits ``[i*b, (i+1)*b)``.
    An input vector is accepted every ``cols / physical_cols`` cycles (``x.ready`` is low in
    between); its result leaves :func:`~mulfree.params.fold_config.fold_latency` cycles after
    the handshake when ``y`` is not stalled. ``cfg.arch`` does not matter: the engine is
    always a column chain.

    Attributes
    ----------
    w : In(stream.Signature(unsigned(cols * code_width)))
        Weight tile rows, row 0 first; ``rows`` beats make a tile.
    x : In(stream.Signature(input_layout(cfg)))
        Input vectors with their incoming partial sums; ``last`` ends a tile's vectors.
    y : Out(stream.Signature(output_layout(cfg)))
        Result vectors ``y[c] = psum[c] + sum_r term(x[r], W[r, c])``, in input order,
        ``last`` copied from the input.

    Parameters
    ----------
    cfg : ArrayConfig
    physical_cols : int
        PE columns, a divisor of ``cfg.cols`` (:class:`~mulfree.params.config.ConfigError`
        with ``param="physical_cols"`` otherwise).
    """

    def __init__(self, cfg: ArrayConfig, physical_cols: int):
        check_fold(cfg, physical_cols)
        self._cfg = cfg
        self._physical_cols = physical_cols
        super().__init__(array_signature(cfg))

    @property
    def cfg(self):
        return self._cfg

    @property
    def physical_cols(self):
        return self._physical_cols

    @property
    def passes(self):
        """Passes per input vector: ``cols / physical_cols``."""
        return self._cfg.cols // self._physical_cols

    @property
    def latency(self):
        """Cycles from an input handshake to its output being valid, no stall."""
        return fold_latency(self._cfg, self._physical_cols)

    def elaborate(self, platform):
        cfg, pc, passes = self._cfg, self._physical_cols, self.passes
        rows, cols, a, cw, acc = cfg.rows, cfg.cols, cfg.act_bits, cfg.code_width, cfg.acc_width
        m = Module()

        # Pipeline tags. Stage s holds the pass issued s advances after stage 0; row r computes
        # the pass at stage r; stage rows feeds the output register.
        advance = Signal()
        valid = [Signal(name=f"valid_{s}") for s in range(rows + 1)]
        last = [Signal(name=f"last_{s}", reset_less=True) for s in range(rows + 1)]
        pass_ = [Signal(range(passes), name=f"pass_{s}", reset_less=True)
                 for s in range(rows + 1)]
        token = [Signal(name=f"token_{s}") for s in range(rows)]
        m.d.comb += advance.eq(self.y.ready | ~self.y.valid)

        # Issue: the handshake issues pass 0, the next advances passes 1 .. P-1 of the held
        # vector; a new vector is accepted only when no pass is left (phase 0).
        phase = Signal(range(passes))
        idle = Signal()
        issue = Signal()
        m.d.comb += idle.eq(phase == 0)
        token_in_flight = Cat(token[:rows - 1]).any() if rows > 1 else 0
        take, swap, w_shift = tile_sequencer(m, w=self.w, x=self.x, advance=advance & idle,
                                             beats=rows, load_blocked=token_in_flight)
        m.d.comb += issue.eq(take | ~idle)
        with m.If(advance & issue):
            m.d.sync += phase.eq(Mux(phase == passes - 1, 0, phase + 1))

        x_hold = Signal(rows * a, reset_less=True)
        psum_hold = Signal(cols * acc, reset_less=True)
        with m.If(take):
            m.d.sync += [x_hold.eq(self.x.payload.data), psum_hold.eq(self.x.payload.psum),
                         last[0].eq(self.x.payload.last)]
        with m.If(advance):
            # phase is the issued pass's index (0 on a handshake, which needs phase 0).
            m.d.sync += [valid[0].eq(issue), pass_[0].eq(phase)]
            m.d.sync += [valid[s].eq(valid[s - 1]) for s in range(1, rows + 1)]
            m.d.sync += [last[s].eq(last[s - 1]) for s in range(1, rows + 1)]
            m.d.sync += [pass_[s].eq(pass_[s - 1]) for s in range(1, rows + 1)]
            m.d.sync += token[0].eq(swap)
            m.d.sync += [token[s].eq(token[s - 1]) for s in range(1, rows)]

        # Row r's activation: the held vector, r advances later.
        x_rows = []
        for r in range(rows):
            value = x_hold[r * a:(r + 1) * a]
            for s in range(r):
                reg = Signal(a, name=f"x_{r}_{s}", reset_less=True)
                with m.If(advance):
                    m.d.sync += reg.eq(value)
                value = reg
            x_rows.append(value.as_signed())

        # The weight tile: shadow rows shift up on w_shift (row 0, sent first, ends at the
        # top). Row r's codes are chosen one stage ahead, into a register per PE: as its pass
        # moves from stage r - 1 to stage r, from the active row r as it is then. So row r
        # takes its shadow row one stage early, as the tile's token enters stage r - 1 (row 1
        # on the swap itself), and row 0 chooses from the shadow row on the swap.
        shadow = [Signal(cols * cw, name=f"shadow_{r}", reset_less=True) for r in range(rows)]
        active = [Signal(cols * cw, name=f"weight_{r}", reset_less=True) for r in range(rows)]
        with m.If(w_shift):
            m.d.sync += shadow[rows - 1].eq(self.w.payload)
            m.d.sync += [shadow[r].eq(shadow[r + 1]) for r in range(rows - 1)]
        for r in range(rows):
            with m.If(swap if r < 2 else advance & token[r - 2]):
                m.d.sync += active[r].eq(shadow[r])

        # The column chains: physical column j, at row r, uses tile column pass*PC + j.
        pe = pe_class(cfg.pe)
        column_sums = []
        for j in range(pc):
            psum = 0
            for r in range(rows):
                tile = Mux(swap, shadow[0], active[0]) if r == 0 else active[r]
                code = Signal(cw, name=f"code_{r}_{j}", reset_less=True)
                with m.If(advance):
                    m.d.sync += code.eq(_select(phase if r == 0 else pass_[r - 1], [
                        tile[(p * pc + j) * cw:(p * pc + j + 1) * cw] for p in range(passes)]))
                out = Signal(pe.chain_shape(cfg, r + 1), name=f"psum_{r}_{j}", reset_less=True)
                with m.If(advance):
                    m.d.sync += out.eq(pe.chain_accumulate(cfg, psum, x_rows[r], code))
                psum = out
            column_sums.append(psum)

        # The pass's incoming partial sums, chosen at stage 0, wait rows advances in a memory
        # (written every advance, read rows - 1 entries behind: a synchronous read port).
        width = pc * acc
        chosen = Signal(width)
        m.d.comb += chosen.eq(_select(pass_[0], [psum_hold[p * width:(p + 1) * width]
                                                 for p in range(passes)]))
        depth = 1 << max(1, rows.bit_length())          # a power of two > rows
        m.submodules.psum_delay = delay = Memory(shape=width, depth=depth, init=[])
        wr = delay.write_port()
        # With one row the read is of the entry written in the same cycle: transparent.
        rd = delay.read_port(transparent_for=(wr,) if rows == 1 else ())
        wr_addr = Signal(range(depth))
        rd_addr = Signal(range(depth), init=(1 - rows) % depth)
        m.d.comb += [
            wr.addr.eq(wr_addr), wr.data.eq(chosen), wr.en.eq(advance),
            rd.addr.eq(rd_addr), rd.en.eq(advance),
        ]
        with m.If(advance):
            m.d.sync += [wr_addr.eq(wr_addr + 1), rd_addr.eq(rd_addr + 1)]

        # The output: P slices; each advance shifts the newest pass in at the top, so when the
        # last pass lands the slices hold passes 0 .. P-1 in order.
        slices = [Signal(width, name=f"out_{p}", reset_less=True) for p in range(passes)]
        out_valid = Signal()
        out_last = Signal(reset_less=True)
        with m.If(advance):
            m.d.sync += slices[passes - 1].eq(Cat(
                pe.chain_result(rd.data.word_select(j, acc).as_signed(), column_sums[j])[:acc]
                for j in range(pc)))
            m.d.sync += [slices[p].eq(slices[p + 1]) for p in range(passes - 1)]
            m.d.sync += [out_valid.eq(valid[rows] & (pass_[rows] == passes - 1)),
                         out_last.eq(last[rows])]

        m.d.comb += [
            self.y.valid.eq(out_valid),
            self.y.payload.data.eq(Cat(slices)),
            self.y.payload.last.eq(out_last),
        ]
        return m
