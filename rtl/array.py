"""The 2-D PE array: a weight-stationary grid with double-buffered weight tiles.

For a weight tile ``W[rows, cols]`` and a stream of input vectors ``x_m`` with partial sums
``p_m``, the array produces ``y_m[c] = p_m[c] + sum_r term(x_m[r], W[r, c])``, one vector per
cycle.

Organisation (see ``docs/architecture.md``)::

    x_m[0] ─┬──────┬──────┬─ ...     row r sees x_m[r] r cycles after the handshake
          PE00   PE01   PE02         (input skew registers), broadcast along the row
            │      │      │
    x_m[1] ─┼PE10──┼PE11──┼PE12      partial sums flow down each column, one register
            │      │      │          per row, each exactly as wide as its depth needs
            ⋮      ⋮      ⋮
            └─(+p_m[c])──┘           the incoming partial sum, delayed in a small memory,
                 y_m                 is added once at the bottom at full accumulator width
                                 (adder PEs: the chains hold -sum, which is subtracted)

Weights: the weight stream carries one tile row per beat (row 0 first), shifted up a chain of
shadow registers; after ``rows`` beats the tile is *pending*. An input beat that starts a tile
(the first beat after reset or after a beat with ``last``) waits for a pending tile and sends a
token down the rows with the data; each row copies its shadow row into its active row as the
token arrives, so vectors of the old and new tile can be in flight together. The next tile may
start loading as soon as the token has left the shadow chain.

Backpressure stalls the whole pipeline: every register advances when the output is free. That
enable is not one net: each group of registers (a column, a column's tap rows, a few skew rows;
:func:`enable_plan`, at most about ``ENABLE_FANOUT`` flip-flops each) has its own copy,
``ready | ~valid_out`` from its own duplicate of the output-valid register (and, with
``ready_copies``, its own copy of ``ready``, which a core drives from duplicates of its skid
buffer's register), so every copy is the same value in the same cycle and none drives the whole
array.

Taps runs (interface 2.4, an array built with ``taps``): while ``taps_on``, column ``c`` row
``r`` takes its own activation, tap ``r`` of column ``c`` from the ``taps`` input (sampled with
the ``x`` handshake and skewed like ``x``), instead of ``x[r]`` broadcast along the row; rows
from ``taps`` on see 0. The columns then get per-column inputs.
"""

from amaranth.hdl import (Signal, Module, Cat, Mux, Instance, ClockSignal, ResetSignal, Shape,
                          signed, unsigned)
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..params.config import ArrayConfig
from .mult_pack import PairColumn, lut_accumulate
from .pe import pe_class
from .tiles import tile_sequencer


__all__ = ["PEColumn", "PEArray", "array_signature", "input_layout", "output_layout",
           "column_components", "enable_plan", "ENABLE_FANOUT"]

#: Flip-flops one copy of the array's enable drives, about, at most (a group larger than this
#: alone, e.g. a 53-row column, gets a copy of its own).
ENABLE_FANOUT = 256


def input_layout(cfg: ArrayConfig):
    """Payload of the input stream: an input vector, its partial sums, and the tile's end."""
    return data.StructLayout({
        "data": unsigned(cfg.rows * cfg.act_bits),
        "psum": unsigned(cfg.cols * cfg.acc_width),
        "last": unsigned(1),
    })


def output_layout(cfg: ArrayConfig):
    """Payload of the output stream: a result vector and the tile's end."""
    return data.StructLayout({
        "data": unsigned(cfg.cols * cfg.acc_width),
        "last": unsigned(1),
    })


def enable_plan(cfg: ArrayConfig, taps=0):
    """The copies of the array's enable: ``({group: copy}, copies)``.

    Groups are ``("x", r)`` (row ``r``'s skew registers), ``("column", c)`` (the column group
    starting at column ``c`` of ``cfg.column_groups``: its partial-sum registers, its share of
    the output register and of the partial-sum memory) and ``("tap", c, r)`` (column ``c``'s
    tap ``r`` skew registers). Consecutive groups share a copy while their flip-flops add up to
    at most ``ENABLE_FANOUT``.
    """
    pe = pe_class(cfg.pe)
    a, acc = cfg.act_bits, cfg.acc_width
    column = sum(Shape.cast(pe.chain_shape(cfg, r + 1)).width for r in range(cfg.rows))
    groups = [(("x", r), (r + 1) * a) for r in range(cfg.rows)]
    for _, c, n in cfg.column_groups:
        groups.append((("column", c), n * (column + 2 * acc)))
        groups += [(("tap", c + i, r), (r + 1) * a) for i in range(n) for r in range(taps)]
    plan, copy, loads = {}, -1, ENABLE_FANOUT
    for group, n in groups:
        if loads + n > ENABLE_FANOUT:
            copy, loads = copy + 1, 0
        plan[group] = copy
        loads += n
    return plan, copy + 1


def array_signature(cfg: ArrayConfig):
    """The signature of :class:`PEArray` for ``cfg``."""
    return wiring.Signature({
        "w": In(stream.Signature(unsigned(cfg.cols * cfg.code_width))),
        "x": In(stream.Signature(input_layout(cfg))),
        "y": Out(stream.Signature(output_layout(cfg))),
    })


class PEColumn(wiring.Component):
    """One column of the array: ``rows`` PEs, their weights, and the partial-sum chain.

    Every column of an array is the same circuit, so the generator emits it as one module and
    instantiates it ``cols`` times: elaboration then costs ``O(rows + cols)``, not
    ``O(rows * cols)``.

    Attributes
    ----------
    x : In(rows * act_bits)
        Row ``r``'s activation, already skewed to the cycle row ``r`` computes it.
    w_in : In(code_width)
        The weight code entering the bottom of the shadow chain.
    w_shift : In(1)
        Shift the shadow chain up by one row.
    load : In(rows)
        Copy shadow row ``r`` into active row ``r``.
    en : In(1)
        Advance the partial-sum pipeline.
    sum : Out(PE.chain_shape(cfg, rows))
        The column's sum of ``rows`` terms in chain form (an adder column holds its magnitude;
        :meth:`~mulfree.rtl.pe.PE.chain_shape`), ``rows`` advances after row 0 saw it.

    Parameters
    ----------
    cfg : ArrayConfig
    lut : bool
        Mult only: build the products from LUTs (:func:`~mulfree.rtl.mult_pack.lut_accumulate`,
        the columns past ``cfg.dsp_cols``), not with ``*``.
    """

    def __init__(self, cfg: ArrayConfig, *, lut=False):
        self._cfg = cfg
        self._lut = lut
        super().__init__({
            "x": In(cfg.rows * cfg.act_bits),
            "w_in": In(cfg.code_width),
            "w_shift": In(1),
            "load": In(cfg.rows),
            "en": In(1),
            "sum": Out(pe_class(cfg.pe).chain_shape(cfg, cfg.rows)),
        })

    def elaborate(self, platform):
        cfg = self._cfg
        rows, a, cw = cfg.rows, cfg.act_bits, cfg.code_width
        m = Module()
        shadow = [Signal(cw, name=f"shadow_{r}", reset_less=True) for r in range(rows)]
        active = [Signal(cw, name=f"weight_{r}", reset_less=True) for r in range(rows)]
        # Beats enter at the bottom and move up: row 0, sent first, ends at the top.
        with m.If(self.w_shift):
            m.d.sync += shadow[rows - 1].eq(self.w_in)
            m.d.sync += [shadow[r].eq(shadow[r + 1]) for r in range(rows - 1)]
        for r in range(rows):
            with m.If(self.load[r]):
                m.d.sync += active[r].eq(shadow[r])

        pe = pe_class(cfg.pe)
        accumulate = lut_accumulate if self._lut else pe.chain_accumulate
        psum = 0
        with m.If(self.en):
            for r in range(rows):
                out = Signal(pe.chain_shape(cfg, r + 1), name=f"psum_{r}", reset_less=True)
                x = self.x[r * a:(r + 1) * a].as_signed()
                m.d.sync += out.eq(accumulate(cfg, psum, x, active[r]))
                psum = out
        m.d.comb += self.sum.eq(psum)
        return m


class PEArray(wiring.Component):
    """A ``rows x cols`` array of PEs of one kind.

    Vectors are flat: element ``i`` of a vector of ``b``-bit values is bits ``[i*b, (i+1)*b)``.

    Attributes
    ----------
    w : In(stream.Signature(unsigned(cols * code_width)))
        Weight tile rows, row 0 first; ``rows`` beats make a tile.
    x : In(stream.Signature(input_layout(cfg)))
        Input vectors with their incoming partial sums; ``last`` ends a tile's vectors.
    y : Out(stream.Signature(output_layout(cfg)))
        Result vectors, in input order, ``last`` copied from the input.

    Parameters
    ----------
    cfg : ArrayConfig
    column_module : str, optional
        Instantiate the columns as ``Instance(column_module)`` (emitted separately from a
        :class:`PEColumn`) instead of as submodules; the generator does this for speed. A mult
        array with packed or LUT columns instantiates one module per column variant, named as
        :func:`column_components` names them.
    taps : int, optional
        Rows that take per-column activations on a taps run (a core's ``CoreConfig.taps``);
        adds the ports ``taps: In(cols * taps * act_bits)`` (tap ``r`` of column ``c`` at
        bits ``[(c*taps + r)*act_bits, ...)``, with the ``x`` payload) and ``taps_on: In(1)``
        (held for the run). 0: neither.
    ready_copies : bool
        Add ``y_ready_copies: In(enable_copies)``: copy ``k`` of the enable takes bit ``k``
        instead of ``y.ready``. The driver keeps every bit equal to ``y.ready`` in every cycle
        (a core drives them from duplicated registers, so ``y.ready`` itself fans out to none
        of the copies).
    """

    def __init__(self, cfg: ArrayConfig, *, column_module=None, taps=0, ready_copies=False):
        if not 0 <= taps <= cfg.rows:
            raise ValueError(f"taps must be 0 .. rows={cfg.rows}, not {taps!r}")
        self._cfg = cfg
        self._column_module = column_module
        self._taps = taps
        self._plan, copies = enable_plan(cfg, taps)
        self._ready_copies = ready_copies
        # The control logic's enable, then one per copy (enable_plan); made here so that tests
        # can watch them.
        self._enables = [Signal(name="advance")] + [Signal(name=f"advance_{k}")
                                                     for k in range(copies)]
        signature = array_signature(cfg)
        if taps:
            signature = wiring.Signature({**dict(signature.members),
                                          "taps": In(cfg.cols * taps * cfg.act_bits),
                                          "taps_on": In(1)})
        if ready_copies:
            signature = wiring.Signature({**dict(signature.members),
                                          "y_ready_copies": In(copies)})
        super().__init__(signature)

    @property
    def enable_copies(self):
        """How many copies of the enable drive the array's registers (:func:`enable_plan`)."""
        return len(self._enables) - 1

    @property
    def enables(self):
        """The control logic's enable, then each copy's: equal in every cycle."""
        return list(self._enables)

    @property
    def cfg(self):
        return self._cfg

    @property
    def column_module(self):
        """Name of the column module instantiated by name, or ``None`` for submodules."""
        return self._column_module

    def elaborate(self, platform):
        cfg = self._cfg
        rows, cols, a, cw, acc = cfg.rows, cfg.cols, cfg.act_bits, cfg.code_width, cfg.acc_width
        m = Module()

        # Pipeline control. Stage s holds what was accepted s advances ago; stage rows + 1 is
        # the output register.
        advance = self._enables[0]
        valid = [Signal(name=f"valid_{s}") for s in range(rows + 2)]
        last = [Signal(name=f"last_{s}", reset_less=True) for s in range(rows + 2)]
        token = [Signal(name=f"token_{s}") for s in range(rows)]
        m.d.comb += advance.eq(self.y.ready | ~self.y.valid)
        # Each copy of the enable: its own duplicate of the output-valid register (kept apart
        # by synthesis) and its own ready, so no one net drives the array's registers.
        copies = self._enables[1:]
        for k, enable in enumerate(copies):
            valid_out = Signal(name=f"valid_out_{k}", attrs={"keep": 1})
            with m.If(enable):
                m.d.sync += valid_out.eq(valid[rows])
            ready = self.y_ready_copies[k] if self._ready_copies else self.y.ready
            m.d.comb += enable.eq(ready | ~valid_out)
        plan = {group: copies[k] for group, k in self._plan.items()}

        # Tile bookkeeping; the shadow chains (in the columns) shift a row in on w_shift.
        # Loading waits while a token still needs the shadow rows below it.
        token_in_flight = Cat(token[:rows - 1]).any() if rows > 1 else 0
        take, swap, w_shift = tile_sequencer(m, w=self.w, x=self.x, advance=advance, beats=rows,
                                             load_blocked=token_in_flight)

        # Input skew: row r's activation reaches stage r through r + 1 registers.
        x_rows = Signal(rows * a)
        for r in range(rows):
            chain = [Signal(signed(a), name=f"x_{r}_{s}", reset_less=True) for s in range(r + 1)]
            with m.If(plan["x", r]):
                m.d.sync += chain[0].eq(self.x.payload.data[r * a:(r + 1) * a])
                m.d.sync += [chain[s].eq(chain[s - 1]) for s in range(1, r + 1)]
            m.d.comb += x_rows[r * a:(r + 1) * a].eq(chain[-1])

        with m.If(advance):
            m.d.sync += [valid[0].eq(take), last[0].eq(self.x.payload.last)]
            m.d.sync += [valid[s].eq(valid[s - 1]) for s in range(1, rows + 2)]
            m.d.sync += [last[s].eq(last[s - 1]) for s in range(1, rows + 2)]
            if rows:
                m.d.sync += token[0].eq(swap)
                m.d.sync += [token[s].eq(token[s - 1]) for s in range(1, rows)]

        # Row r takes its shadow weights as the tile's first vector enters it.
        load = Signal(rows)
        m.d.comb += load[0].eq(swap)
        for r in range(1, rows):
            m.d.comb += load[r].eq(advance & token[r - 1])

        # The columns: identical, so emitted once and instantiated cols times (see
        # PEColumn) unless a flat netlist is asked for.
        column_sums = []
        pe = pe_class(cfg.pe)
        if self._taps and cfg.mult_pack == 2:
            raise ValueError("taps runs give every column its own activations; a packed mult "
                             "array (mult_pack=2) cannot take them")
        x_cols = self._tap_inputs(m, plan, x_rows) if self._taps else [x_rows] * cols
        names = (None if self._column_module is None else
                 _variant_names(cfg, self._column_module))
        for variant, c, n in cfg.column_groups:
            ports = dict(x=x_cols[c], w_in=self.w.payload[c * cw:(c + n) * cw],
                         w_shift=w_shift, load=load, en=plan["column", c])
            totals = [Signal(pe.chain_shape(cfg, rows), name=f"column_sum_{c + i}")
                      for i in range(n)]
            outs = dict(zip(("sum_lo", "sum_hi") if n == 2 else ("sum",), totals))
            if names is None:
                column = m.submodules[f"column_{c}"] = _column(cfg, variant)
                m.d.comb += [getattr(column, k).eq(v) for k, v in ports.items()]
                m.d.comb += [v.eq(getattr(column, k)) for k, v in outs.items()]
            else:
                # An Instance gets no implicit clock or reset: the column's sync domain must
                # be wired by hand, or its registers have no clock.
                m.submodules[f"column_{c}"] = Instance(
                    names[variant], **{f"i_{k}": v for k, v in ports.items()},
                    **{f"o_{k}": v for k, v in outs.items()},
                    i_clk=ClockSignal(), i_rst=ResetSignal())
            column_sums += totals

        # Incoming partial sums wait in a memory until their vector reaches the bottom: one
        # memory per copy of the enable, for the columns it drives.
        depth = 1 << rows.bit_length()          # a power of two > rows
        wr_addr = Signal(range(depth))
        rd_addr = Signal(range(depth), init=(-rows) % depth)
        with m.If(advance):
            m.d.sync += [wr_addr.eq(wr_addr + 1), rd_addr.eq(rd_addr + 1)]
        parts = {}
        for _, c, n in cfg.column_groups:
            parts.setdefault(self._plan["column", c], []).append((c, n))
        psum = [None] * cols
        for k, groups in sorted(parts.items()):
            first, end = groups[0][0], groups[-1][0] + groups[-1][1]
            delay = Memory(shape=unsigned((end - first) * acc), depth=depth, init=[])
            m.submodules[f"psum_delay_{k}" if len(parts) > 1 else "psum_delay"] = delay
            wr = delay.write_port()
            rd = delay.read_port()
            m.d.comb += [
                wr.addr.eq(wr_addr), wr.data.eq(self.x.payload.psum[first * acc:end * acc]),
                wr.en.eq(copies[k]), rd.addr.eq(rd_addr), rd.en.eq(copies[k]),
            ]
            for c in range(first, end):
                psum[c] = rd.data.word_select(c - first, acc).as_signed()

        result = Signal(cols * acc, reset_less=True)
        for _, c, n in cfg.column_groups:
            with m.If(plan["column", c]):
                m.d.sync += result[c * acc:(c + n) * acc].eq(Cat(
                    pe.chain_result(psum[j], column_sums[j])[:acc] for j in range(c, c + n)))

        m.d.comb += [
            self.y.valid.eq(valid[rows + 1]),
            self.y.payload.data.eq(result),
            self.y.payload.last.eq(last[rows + 1]),
        ]
        return m

    def _tap_inputs(self, m, plan, x_rows):
        """Each column's activations: ``x_rows`` (the rows' broadcast), or with ``taps_on``
        the column's taps, tap ``r`` through ``r + 1`` registers as ``x[r]`` (enabled by
        ``plan["tap", c, r]``)."""
        cfg, T = self._cfg, self._taps
        a = cfg.act_bits
        out = []
        for c in range(cfg.cols):
            rows = []
            for r in range(T):
                chain = [Signal(signed(a), name=f"tap_{c}_{r}_{s}", reset_less=True)
                         for s in range(r + 1)]
                with m.If(plan["tap", c, r]):
                    m.d.sync += chain[0].eq(self.taps.word_select(c * T + r, a))
                    m.d.sync += [chain[s].eq(chain[s - 1]) for s in range(1, r + 1)]
                rows.append(chain[-1])
            x = Signal(cfg.rows * a, name=f"x_column_{c}")
            m.d.comb += x.eq(Mux(self.taps_on, Cat(*rows), x_rows))
            out.append(x)
        return out


def _column(cfg, variant):
    return PairColumn(cfg) if variant == "pair" else PEColumn(cfg, lut=variant == "lut")


def column_components(cfg: ArrayConfig, name):
    """The column modules an array of ``cfg`` instantiates: ``[(component, variant, name)]``.

    ``name`` names the plain column (``"dsp"``, every column of a shift or adder array);
    packed pairs and LUT columns (``cfg.column_groups``) are ``name + "_pair"`` / ``"_lut"``.
    """
    return [(_column(cfg, v), v, module) for v, module in _variant_names(cfg, name).items()]


def _variant_names(cfg, name):
    variants = dict.fromkeys(v for v, _, _ in cfg.column_groups)
    return {v: name if v == "dsp" else f"{name}_{v}" for v in variants}
