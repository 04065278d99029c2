"""The feature-map banks for layer chaining: two banks, a result writer, a shortcut reader.

A layer's output may stay on chip as the next layer's input, and a block's input as a later
residual's shortcut, instead of a round trip through the host (issue 16, layer chaining). The
feature-map buffer becomes two banks of ``fmap_vectors`` vectors of ``rows`` activations,
each a memory per lane (the issue unit reads every lane at its own address). A run has an
input bank ``b`` (``in_bank``)::

                     in_bank = b                           the other bank, 1 - b
    acts_we/addr/data ──► write port                       write port ◄── res (keep) ◄── results
    rd_addr/en ─────────► read port ──► rd_data            read port ──► shortcut reader
                                                                          ──► sc_we/sc_data

- ``keep``: every result vector (``addr = pixel * NT + nt``, the next layer's ACTS layout) is
  also written into bank ``1 - b``.
- ``short_resident``: the residual's shortcut source is bank ``1 - b``'s tensor (a kept output
  of an earlier run, ``SH*SW`` source pixels of ``NTS`` vectors at ``pixel * NTS + t``). The
  reader streams it in source order, which is address order ``0, 1, ..., short_vectors - 1``,
  into the :class:`~.stream_loader.ShortcutAligner`, one vector per cycle unless the aligner
  holds (``sc_hold``), as the loader's SHORTCUT vectors would come.
- In place: a residual run with ``keep`` and ``short_resident`` writes its output over its
  shortcut. The interlock: a result write to address ``a`` waits (``res.ready`` low) until
  the reader has read every address ``<= a`` (``a < rd_ptr``) or has read them all. The
  reader reads each address once, in increasing order, and never waits on the results, so a
  source vector is always read before anything overwrites it, and every wait ends.

Each bank's memories keep one write and one read port (simple dual port): the in-bank's
serve the loader and the issue unit, the other bank's the result writer and the reader. The
unit is meant to sit inside the datapath the shell resets between runs: a reset clears the
reader, never the memories (the kept tensor survives into the next run).
"""

from amaranth.hdl import Signal, Module, Cat, Const, Mux, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..params.config import ConfigError
from ..params.core_config import CoreConfig
from .layer_setup import SIZE_BITS, shape_layout


__all__ = ["FmapBanks", "fmap_addr_bits", "result_layout", "fork_results", "bank_state"]


def fmap_addr_bits(cfg: CoreConfig):
    """Bits of a feature-map address (a vector of one bank), as the issue unit's."""
    return max(1, (cfg.fmap_vectors - 1).bit_length())


def result_layout(cfg: CoreConfig):
    """A result vector for the banks: ``data`` (``cols`` activations) and its address
    ``addr`` in the other bank (``pixel * NT + nt``; ``nt`` for a global pool's vectors)."""
    e = cfg.engine
    return data.StructLayout({"data": unsigned(e.cols * e.act_bits),
                              "addr": unsigned(fmap_addr_bits(cfg))})


class FmapBanks(wiring.Component):
    """Two feature-map banks with the loader's and issue unit's ports on the run's input bank,
    and a result writer and a shortcut reader on the other bank.

    Parameters
    ----------
    cfg : CoreConfig
        Needs ``rows == cols`` (a result vector is then an activation vector); depth
        ``fmap_vectors`` per bank.

    Attributes
    ----------
    in_bank : In(1)
        The run's input bank ``b``; static during a run.
    keep : In(1)
        Write every accepted result into bank ``1 - b``; static during a run. While 0,
        ``res.ready`` is 1 and nothing is written.
    short_resident : In(1)
        The shortcut source is bank ``1 - b``'s first ``short_vectors`` vectors: the reader
        runs from ``start``, and results wait for it (the interlock). Static during a run.
    short_vectors : In(SIZE_BITS)
        Source vectors of the shortcut, ``SH * SW * NTS``; at most ``fmap_vectors`` (setup's
        check: a larger total never completes).
    start : In(1)
        Strobe: the run's setup has passed (the sizes are valid); the reader starts.
    acts_we, acts_addr, acts_data : In
        The loader's ACTS writes into bank ``b``.
    rd_addr, rd_en, rd_data : In, In, Out
        The issue unit's read of bank ``b``: ``rows`` per-lane addresses (lane ``j`` at
        ``rd_addr.word_select(j, fmap_addr_bits(cfg))``), data the cycle after ``rd_en``
        and held while ``rd_en`` is low (the single buffer's read port).
    res : In(stream.Signature(result_layout(cfg)))
        Result vectors with their addresses in bank ``1 - b``. ``res.ready`` never depends on
        ``res.valid`` (only on ``res.addr``, the settings and the reader), so a core may fork
        the result stream: ``res.valid = valid & other.ready``, consumed when
        ``valid & res.ready & other.ready``.
    sc_hold : In(1)
        The aligner's ``hold``: no shortcut vector may be delivered in this cycle.
    sc_we, sc_data : Out
        A shortcut source vector for the aligner (its ``we``, ``data``): one per cycle while
        not held. ``sc_we`` is never high while ``sc_hold`` is.
    sc_ptr : Out(fmap_vectors.bit_length())
        Shortcut vectors delivered so far (replaces the loader's SHORTCUT pointer,
        zero-extended).
    sc_done : Out(1)
        Every one of the ``short_vectors`` has been delivered (``short_resident`` runs).
    rd_ptr : Out
        Addresses of bank ``1 - b`` the reader has read (the interlock's watermark).
    res_below : In(1)
        Only with ``res_below=True``: ``res.addr < rd_ptr``, compared by the caller (each
        candidate address before its choice: timing), instead of here.
    """

    def __init__(self, cfg: CoreConfig, *, res_below=False):
        e = cfg.engine
        if e.rows != e.cols:
            self._MustUse__silence = True       # refused: no "created but never used" warning
            raise ConfigError("rows", f"feature-map banks need rows == cols (a result vector "
                              f"is the next layer's activation vector), not rows={e.rows}, "
                              f"cols={e.cols}")
        self._cfg = cfg
        self._res_below = res_below
        fa = fmap_addr_bits(cfg)
        vbits = e.rows * e.act_bits
        pbits = cfg.fmap_vectors.bit_length()     # a count of 0..fmap_vectors vectors
        super().__init__({**({"res_below": In(1)} if res_below else {}),
            "in_bank": In(1), "keep": In(1), "short_resident": In(1),
            "short_vectors": In(SIZE_BITS), "start": In(1),
            "acts_we": In(1), "acts_addr": In(fa), "acts_data": In(vbits),
            "rd_addr": In(e.rows * fa), "rd_en": In(1), "rd_data": Out(vbits),
            "res": In(stream.Signature(result_layout(cfg))),
            "sc_hold": In(1),
            "sc_we": Out(1), "sc_data": Out(vbits),
            "sc_ptr": Out(pbits), "sc_done": Out(1),
            "rd_ptr": Out(pbits),
        })

    def elaborate(self, platform):
        cfg, e = self._cfg, self._cfg.engine
        R, a = e.rows, e.act_bits
        fa = fmap_addr_bits(cfg)
        m = Module()

        # ---- The shortcut reader: addresses 0, 1, ... of the other bank ----------------------
        # rd_ptr counts the reads issued; `full` says the read port holds a vector not yet
        # delivered (held by the aligner: the port's enable stays low, so its data stays).
        active = Signal()               # short_resident run, started
        full = Signal()
        rd_ptr = self.rd_ptr
        total = self.short_vectors
        with m.If(self.start & self.short_resident):
            m.d.sync += active.eq(1)
        deliver = Signal()
        fetch = Signal()
        m.d.comb += [
            deliver.eq(full & ~self.sc_hold),
            fetch.eq(active & (rd_ptr < total) & (~full | deliver)),
            self.sc_we.eq(deliver),
            self.sc_done.eq(active & (self.sc_ptr == total)),
        ]
        with m.If(fetch):
            m.d.sync += [rd_ptr.eq(rd_ptr + 1), full.eq(1)]
        with m.Elif(deliver):
            m.d.sync += full.eq(0)
        with m.If(deliver):
            m.d.sync += self.sc_ptr.eq(self.sc_ptr + 1)

        # ---- The result writer and its interlock ---------------------------------------------
        # A write to `addr` waits until the reader has read every address <= addr (strictly
        # before: never a read and a write of one address on the same edge), or all of them.
        res = self.res
        read_all = active & (rd_ptr == total)
        below = self.res_below if self._res_below else res.payload.addr < rd_ptr
        safe = ~self.short_resident | read_all | below
        m.d.comb += res.ready.eq(~self.keep | safe)
        res_we = Signal()
        m.d.comb += res_we.eq(self.keep & res.valid & res.ready)

        # ---- The banks: a memory per lane, one write and one read port each ------------------
        b = self.in_bank
        bank_data = [[], []]
        for k in range(2):
            mine = b == k               # bank k is the run's input bank
            for j in range(R):
                mem = Memory(shape=unsigned(a), depth=cfg.fmap_vectors, init=[])
                m.submodules[f"bank{k}_{j}"] = mem
                wr, rd = mem.write_port(), mem.read_port()
                m.d.comb += [
                    wr.addr.eq(Mux(mine, self.acts_addr, res.payload.addr)),
                    wr.en.eq(Mux(mine, self.acts_we, res_we)),
                    wr.data.eq(Mux(mine, self.acts_data, res.payload.data).word_select(j, a)),
                    rd.addr.eq(Mux(mine, self.rd_addr.word_select(j, fa), rd_ptr[:fa])),
                    rd.en.eq(Mux(mine, self.rd_en, fetch)),
                ]
                bank_data[k].append(rd.data)
        # The in-bank's lanes to the issue unit, the other bank's to the aligner.
        m.d.comb += [
            self.rd_data.eq(Mux(b, Cat(bank_data[1]), Cat(bank_data[0]))),
            self.sc_data.eq(Mux(b, Cat(bank_data[0]), Cat(bank_data[1]))),
        ]
        return m


def fork_results(m, cfg, results, out, banks, group, nt, pooled, quiet):
    """Layer chaining in the core's datapath: the result vectors to the output FIFO (unless
    ``quiet``) and, with ``keep``, to the banks at ``pixel * NT + nt``: a vector is consumed
    when both that need it take it. Returns "the run's last result has been consumed" (a
    quiet run's end).

    The address is counted on the output side, as post-processing's ``short_addr`` on
    its input: vectors come per block, per ``nt`` (post-processing's ``group``), per
    pixel, so the next vector of a pass is ``NT`` further on, a pass's first (the group
    changes) one after the previous pass's first, and a block's (group 0 after group
    ``NT - 1``) one after the vector before it. A global pool's ``NT`` vectors are
    ``0 .. NT - 1``.

    ``results`` is the stream after the global pool, ``out`` the output FIFO, ``banks`` the
    :class:`FmapBanks` (None on a one-bank core), ``group`` post-processing's output group
    (the pool passes post-processing's vectors through, combinationally), ``nt`` the layer's
    output tiles."""
    bank_ok = banks.res.ready if banks is not None else Const(1)
    out_ok = quiet | out.w_rdy
    m.d.comb += [out.w_data.eq(Cat(results.payload.data, results.payload.last)),
                 out.w_en.eq(results.valid & bank_ok & ~quiet),
                 results.ready.eq(out_ok & bank_ok)]
    written_last = Signal()
    take = results.valid & results.ready
    with m.If(take & results.payload.last):
        m.d.sync += written_last.eq(1)
    if banks is None:
        return written_last
    width = fmap_addr_bits(cfg) + 1
    addr = Signal(width)
    count = Signal(width)           # vectors consumed: a global pool's addresses
    block_next, pass_next, step_next = Signal(width), Signal(width), Signal(width)
    prev_group = Signal.like(group)
    taken = Signal()                # count != 0 as a flag (timing: it feeds res.ready)
    first = ~taken | (group != prev_group)

    def choose(count, block_next, pass_next, step_next):
        return Mux(pooled, count, Mux(first, Mux(group == 0, block_next, pass_next), step_next))

    # The interlock's addr < rd_ptr, compared for each candidate (registers) before the choice:
    # it decides the fork's ready.
    below = [v < banks.rd_ptr for v in (count, block_next, pass_next, step_next)]
    m.d.comb += [
        banks.res_below.eq(choose(*below)),
        addr.eq(choose(count, block_next, pass_next, step_next)),
        banks.res.valid.eq(results.valid & out_ok),
        banks.res.payload.data.eq(results.payload.data),
        banks.res.payload.addr.eq(addr),
    ]
    with m.If(take):
        m.d.sync += [count.eq(count + 1), prev_group.eq(group), taken.eq(1),
                     block_next.eq(addr + 1), step_next.eq(addr + nt)]
        with m.If(first):
            m.d.sync += pass_next.eq(addr + 1)
    return written_last


def bank_state(m, cfg, dp, soft, busy):
    """The shell's record of the feature-map banks' state (interface 2.2): per bank, valid
    and the shape ``(c, h, w)`` of the tensor it holds. When setup passes, the banks the run writes
    become invalid (bank ``in_bank`` when its ACTS are streamed, the other one with
    ``keep``); a run that ends well leaves bank ``in_bank`` holding its input and, with
    ``keep``, the other bank its output; an error or a soft reset invalidates both. A
    one-bank core keeps nothing (setup refuses every chaining flag). ``dp`` is the
    :class:`~.core.LayerDatapath` (its ``bank_*`` inputs are driven here)."""
    valid = Signal(2)
    shapes = [Signal(shape_layout(), name=f"bank_shape_{k}") for k in range(2)]
    m.d.comb += [dp.bank_valid.eq(valid), dp.bank_shape_0.eq(shapes[0]),
                 dp.bank_shape_1.eq(shapes[1])]
    if cfg.fmap_banks == 1:
        return valid
    b = dp.in_bank
    with m.If(soft | (busy & (dp.error != 0))):
        m.d.sync += valid.eq(0)
    with m.Elif(busy & dp.started):
        m.d.sync += [valid.bit_select(b, 1).eq(valid.bit_select(b, 1) & dp.acts_resident),
                     valid.bit_select(~b, 1).eq(valid.bit_select(~b, 1) & ~dp.keep)]
    with m.Elif(busy & dp.finished):
        for k in range(2):
            with m.If(b == k):
                m.d.sync += [valid.bit_select(k, 1).eq(1), shapes[k].eq(dp.in_shape)]
            with m.Elif(dp.keep):
                m.d.sync += [valid.bit_select(k, 1).eq(1), shapes[k].eq(dp.out_shape)]
    return valid
