"""The accelerator core: an AXI4-Lite / AXI4-Stream shell around the layer datapath.

::

    s_axil ──► AxiLiteRegisters ── start, soft reset, status, counters
    s_axis ──► StreamLoader ──► feature-map buffer (a memory per lane) ─┐
                            ──► weight buffer ──► WeightFeeder ──────┐  │
                            ──► shift table ───────────────────────┐ │  │
                            ──► PostProcess table                  ▼ ▼  ▼
                                LayerSetup ──► IssueUnit ─► engines (array, tree, folded),
                                                            lane unit (window runs)
                                                   ▲  tags      │
                                 accumulator buffer ◄───────────┤ partial sums
                            ──► shortcut buffer ──► PostProcess ◄┘ final sums
    m_axis ◄── serializer ◄── output FIFO ◄── GlobalPool ◄┘

The datapath (:class:`LayerDatapath`) holds one run; the shell (:class:`Core`) resets it at
every start, soft reset and error, so a bad run never leaks into the next one. AXI names
appear only on the shell's ports. ``docs/interface.md`` is the normative description of the
registers and the stream formats.

The fused tail (residual add, clamp) is post-processing's: its settings come from the
descriptor, and each final result vector carries the address of its SHORTCUT vector,
``pixel * NT + nt``, kept by adders as the results come (per block, per ``nt``, per pixel of
the block); a final vector enters post-processing only once that vector is complete (the
shortcut watermark). The host sends the shortcut in its source layout (``short_c`` channels,
a map ``short_stride`` times the output's); the loader's ``ShortcutAligner`` keeps the source
pixels on the stride grid and moves their lanes by ``short_off`` into the buffer's aligned
vectors, whole output pixels at a time. A core with ``shortcut_vectors = 0`` builds neither the buffer nor the
residual datapath.

A multi-engine core (``cfg.extra_engines``, interface 2.1) holds one engine per PE kind behind
the same buffers: the descriptor's ``engine`` field routes the issue unit's input vectors and
the feeder's weight rows to that engine only and takes the results from it. The weight buffer
holds ``cols * cfg.code_width`` bits per row (engine ``k`` takes the low ``code_width`` bits of
each slot), the accumulator buffer ``cols * cfg.acc_width`` (engine ``k`` reads the low bits of
each partial-sum lane; its result lanes are sign-extended), and post-processing is built for
``cfg.post_engine``.

With ``flags.global_pool`` the results go through the global pool (:mod:`.pool`), which sums
them per channel group and sends the ``NT`` pooled vectors after the run's last result; without
the flag it passes them on. ``pool_pixels = 0`` builds no pool unit.

With ``cfg.fmap_banks == 2`` (interface 2.2, layer chaining) the feature-map buffer is
:class:`~.fmap_banks.FmapBanks`: the results fork to the output FIFO (unless ``quiet``) and,
with ``keep``, to the other bank (:func:`~.fmap_banks.fork_results`); ``acts_resident`` and
``short_resident`` read the banks instead of ACTS and SHORTCUT packets, and the shell keeps the
banks' state for setup's RESIDENT checks (:func:`~.fmap_banks.bank_state`).

With ``cfg.window_ops`` (interface 2.3) the core holds the lane unit (:mod:`.lanes`): a window
run (``win_max``, ``win_sum``, ``depthwise``) sends the issue unit's vectors and the feeder's
rows there instead of to an engine (:func:`~.engines.route_engines`); TERMS grows by ``cols``
per vector it takes. The rest of the run (post-processing, the tail, chaining) is a layer's.

With ``cfg.taps`` (interface 2.4) a taps run (``depthwise | taps``) goes to the engine
``engine`` instead, fed by the issue unit's tap window (its vectors carry the taps on the
sideband ``x_taps``); TERMS grows by ``rows * cols`` per vector the engine takes, as for a
convolution.
"""

from amaranth.hdl import Signal, Module, Cat, Const, Mux, ResetInserter, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..params.core_config import CoreConfig, DESC_FLAGS
from .array import output_layout
from .engines import (build_engine, column_modules, ready_copy_count, route_engines,
                      skid_buffer)
from .lanes import LaneUnit
from .layer_setup import (LayerSetup, SIZE_BITS, REUSE_FLAG_BITS, desc_layout, shape_layout,
                          reuse_flags, window_flags)
from .fmap_banks import FmapBanks, fork_results, bank_state
from .layer_issue import IssueUnit, WeightFeeder, tag_layout, hazard_window
from .postproc import PostProcess, shortcut_addr_bits
from .pool import GlobalPool
from .regs import AxiLiteRegisters, AxiLiteSignature
from .stream_loader import StreamLoader, ShortcutAligner, beat_layout


__all__ = ["Core", "LayerDatapath", "AxiStreamSignature", "core_signature", "build_engine",
           "column_modules"]


def AxiStreamSignature(width):
    """AXI4-Stream with ``tdata``, ``tvalid``, ``tready``, ``tlast``, seen from the master."""
    return wiring.Signature({"tdata": Out(width), "tvalid": Out(1), "tready": In(1),
                             "tlast": Out(1)})


def core_signature(cfg: CoreConfig):
    """The ports of :class:`Core`: ``s_axil``, ``s_axis``, ``m_axis`` and ``irq``."""
    return wiring.Signature({
        "s_axil": In(AxiLiteSignature(cfg.register_map.addr_width)),
        "s_axis": In(AxiStreamSignature(cfg.stream_width)),
        "m_axis": Out(AxiStreamSignature(cfg.stream_width)),
        "irq": Out(1),
    })


class LayerDatapath(wiring.Component):
    """One run: packets in, results out; reset between runs by the shell.

    Attributes
    ----------
    run : In(1)
        A run is in progress (the shell's ``busy``).
    s, m : the input and output beat streams.
    reuse_valid, reuse_rows, reuse_channels, reuse_tiles, reuse_engine, reuse_window : In
        What the previous successful run loaded (for ``flags.reuse_weights``).
    rows, channels, tiles, engine, window : Out
        What this run uses, for the shell to remember.
    bank_valid, bank_shape_0, bank_shape_1 : In
        The feature-map banks' state, for setup's RESIDENT checks (interface 2.2).
    started : Out(1)
        Pulse: setup passed (the shell invalidates the banks the run writes).
    in_bank, acts_resident, keep : Out(1)
        The run's chaining flags (valid from ``started`` on).
    in_shape, out_shape : Out(shape_layout())
        The run's input ``(in_c, in_h, in_w)`` and output ``(out_c, out_h, out_w)``,
        ``(out_c, 1, 1)`` with a global pool.
    finished : Out(1)
        Pulse: the run ended well.
    error : Out(8)
        An error's code (0: none); the shell takes it in the first cycle it is not 0 (the
        loader's stays until the reset that follows).
    stall_in, stall_out, terms : Out
        Counter increments.
    """

    def __init__(self, cfg: CoreConfig, *, column_module=None):
        self._cfg = cfg
        self._column_modules = column_modules(cfg, column_module)
        e = cfg.engine
        self._post = PostProcess(cfg.post_engine, channels=cfg.max_channels,
                                 shortcut_vectors=cfg.shortcut_vectors)
        super().__init__({
            "run": In(1),
            "s": In(stream.Signature(beat_layout(cfg))),
            "m": Out(stream.Signature(beat_layout(cfg))),
            "reuse_valid": In(1),
            "reuse_rows": In(SIZE_BITS),
            "reuse_channels": In(16),
            "reuse_tiles": In(SIZE_BITS),
            "reuse_engine": In(4),
            "reuse_window": In(REUSE_FLAG_BITS),
            "bank_valid": In(2),
            "bank_shape_0": In(shape_layout()),
            "bank_shape_1": In(shape_layout()),
            "rows": Out(SIZE_BITS),
            "channels": Out(16),
            "tiles": Out(SIZE_BITS),
            "engine": Out(4),
            "window": Out(REUSE_FLAG_BITS),
            "started": Out(1),
            "in_bank": Out(1), "acts_resident": Out(1), "keep": Out(1),
            "in_shape": Out(shape_layout()), "out_shape": Out(shape_layout()),
            "finished": Out(1),
            "error": Out(8),
            "stall_in": Out(1),
            "stall_out": Out(1),
            "terms": Out(max(1, e.pe_count.bit_length())),
        })

    def elaborate(self, platform):
        cfg, e = self._cfg, self._cfg.engine
        R, C, a, S = e.rows, e.cols, e.act_bits, cfg.stream_width
        m = Module()
        post = m.submodules.post = self._post
        groups = post.groups
        m.submodules.loader = loader = StreamLoader(cfg, groups)
        m.submodules.setup = setup = LayerSetup(cfg)
        m.submodules.issue = issue = IssueUnit(cfg, groups)
        m.submodules.feeder = feeder = WeightFeeder(cfg)

        desc = Signal(desc_layout())
        sz = setup.sizes
        shift = desc.flags[DESC_FLAGS["shift"]]
        reuse = desc.flags[DESC_FLAGS["reuse_weights"]]
        residual = desc.flags[DESC_FLAGS["residual"]]
        chain = {name: desc.flags[DESC_FLAGS[name]] if cfg.fmap_banks == 2 else Const(0)
                 for name in ("in_bank", "acts_resident", "keep", "quiet", "short_resident")}
        pooled = desc.flags[DESC_FLAGS["global_pool"]]

        # ---- Phases of the run ---------------------------------------------------------------
        running = Signal()          # setup passed: issue, feed, retire
        wait_desc = Signal()
        with m.FSM():
            with m.State("DESC"):
                m.d.comb += wait_desc.eq(self.run)
                with m.If(loader.desc_valid):
                    m.d.sync += desc.eq(loader.desc)
                    m.next = "SETUP"
            with m.State("SETUP"):
                with m.If(setup.done & (setup.error == 0)):
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.comb += running.eq(1)
        m.d.comb += [
            setup.start.eq(loader.desc_valid),
            setup.desc.eq(desc),         # registered: setup reads it from the cycle after start
            setup.reuse_valid.eq(self.reuse_valid), setup.reuse_rows.eq(self.reuse_rows),
            setup.reuse_channels.eq(self.reuse_channels),
            setup.reuse_tiles.eq(self.reuse_tiles), setup.reuse_engine.eq(self.reuse_engine),
            setup.reuse_window.eq(self.reuse_window),
            setup.bank_valid.eq(self.bank_valid),
            setup.bank_shape_0.eq(self.bank_shape_0), setup.bank_shape_1.eq(self.bank_shape_1),
        ]
        go = Signal()
        m.d.comb += go.eq(setup.done & (setup.error == 0))

        # Totals of each data type: set when setup passes, 0 before (nothing is accepted).
        totals = {"params": Signal(SIZE_BITS), "shift": Signal(SIZE_BITS),
                  "weights": Signal(SIZE_BITS), "acts": Signal(SIZE_BITS),
                  "shortcut": Signal(SIZE_BITS)}
        new_totals = {"params": Mux(reuse, 0, desc.out_c),
                      "shift": Mux(reuse | ~shift, 0, sz.ct),
                      "weights": Mux(reuse, 0, sz.wrows),
                      "acts": Mux(chain["acts_resident"], 0, sz.acts),
                      "shortcut": Mux(residual & ~chain["short_resident"], sz.scv, 0)}
        # "pointer == total" of each type, kept in a register (timing: the flags feed the
        # issue unit's, the feeder's and retire's handshakes): at go every pointer is 0 (the
        # loader takes no data before), after it a pointer moves only by its strobe's +1.
        stores = {"params": loader.p.valid, "shift": loader.sh_we, "weights": loader.w_we,
                  "acts": loader.act_we, "shortcut": loader.sc_we}
        complete = {}
        for t, v in totals.items():
            at_total = Signal(name=f"{t}_at_total")
            before = Signal(SIZE_BITS, name=f"{t}_total_m1")
            with m.If(go):
                m.d.sync += [v.eq(new_totals[t]), before.eq(new_totals[t] - 1),
                             at_total.eq(new_totals[t] == 0)]
            with m.Elif(stores[t]):
                m.d.sync += at_total.eq(getattr(loader, f"{t}_ptr") == before)
            m.d.comb += getattr(loader, f"{t}_total").eq(v)
            complete[t] = running & at_total
        m.d.comb += [
            self.rows.eq(sz.wrows), self.channels.eq(desc.out_c),
            self.tiles.eq(Mux(shift, sz.ct, 0)), self.engine.eq(desc.engine),
            self.window.eq(reuse_flags(desc.flags)),
            self.started.eq(go),
            self.in_bank.eq(chain["in_bank"]), self.acts_resident.eq(chain["acts_resident"]),
            self.keep.eq(chain["keep"]),
            self.in_shape.c.eq(desc.in_c), self.in_shape.h.eq(desc.in_h),
            self.in_shape.w.eq(desc.in_w),
            self.out_shape.c.eq(desc.out_c), self.out_shape.h.eq(Mux(pooled, 1, desc.out_h)),
            self.out_shape.w.eq(Mux(pooled, 1, desc.out_w)),
        ]

        # ---- Input ---------------------------------------------------------------------------
        wiring.connect(m, wiring.flipped(self.s), loader.s)
        m.d.comb += [loader.accept.eq(self.run & (wait_desc | running)),
                     loader.expect_desc.eq(wait_desc)]

        # Buffers. Reads never meet a write of the same address (the watermarks), so the read
        # ports need not be transparent.
        banks = None
        if cfg.fmap_banks == 2:
            banks = m.submodules.banks = FmapBanks(cfg, res_below=True)
            m.d.comb += [
                banks.in_bank.eq(chain["in_bank"]), banks.keep.eq(chain["keep"]),
                banks.short_resident.eq(chain["short_resident"]),
                banks.short_vectors.eq(sz.scv), banks.start.eq(go),
                banks.acts_we.eq(loader.act_we), banks.acts_addr.eq(loader.acts_ptr),
                banks.acts_data.eq(loader.act_data),
                banks.rd_addr.eq(issue.fmap_addr), banks.rd_en.eq(issue.fmap_en),
                issue.fmap_data.eq(banks.rd_data),
            ]
        else:
            fmap = []
            fa = len(issue.fmap_addr) // R
            for j in range(R):
                mem = Memory(shape=unsigned(a), depth=cfg.fmap_vectors, init=[])
                m.submodules[f"fmap_{j}"] = mem
                wr, rd = mem.write_port(), mem.read_port()
                m.d.comb += [
                    wr.addr.eq(loader.acts_ptr), wr.en.eq(loader.act_we),
                    wr.data.eq(loader.act_data.word_select(j, a)),
                    rd.addr.eq(issue.fmap_addr.word_select(j, fa)), rd.en.eq(issue.fmap_en),
                ]
                fmap.append(rd.data)
            m.d.comb += issue.fmap_data.eq(Cat(fmap))

        m.submodules.weights = wmem = Memory(shape=unsigned(C * cfg.code_width),
                                             depth=cfg.weight_rows, init=[])
        wwr, wrd = wmem.write_port(), wmem.read_port()
        m.d.comb += [wwr.addr.eq(loader.weights_ptr), wwr.en.eq(loader.w_we),
                     wwr.data.eq(loader.w_data),
                     wrd.addr.eq(feeder.rd_addr), feeder.rd_data.eq(wrd.data)]

        m.submodules.shift_table = smem = Memory(shape=unsigned(R * cfg.shift_entry_bits),
                                                 depth=-(-cfg.max_channels // R), init=[])
        swr, srd = smem.write_port(), smem.read_port()
        m.d.comb += [swr.addr.eq(loader.shift_ptr), swr.en.eq(loader.sh_we),
                     swr.data.eq(loader.sh_data),
                     srd.addr.eq(issue.sh_addr), issue.sh_data.eq(srd.data)]

        m.submodules.acc = amem = Memory(shape=unsigned(C * cfg.acc_width),
                                         depth=cfg.acc_entries, init=[])
        awr, ard = amem.write_port(), amem.read_port()
        m.d.comb += [ard.addr.eq(issue.acc_addr), issue.acc_data.eq(ard.data)]

        wiring.connect(m, loader.p, post.p)
        t = post.tail
        m.d.comb += [
            t.residual.eq(residual), t.res_relu.eq(desc.flags[DESC_FLAGS["res_relu"]]),
            t.clamp.eq(desc.flags[DESC_FLAGS["clamp"]]),
            # Setup has checked the ranges: the fields fit the narrower settings.
            t.clamp_lo.eq(desc.clamp_lo), t.clamp_hi.eq(desc.clamp_hi),
            t.main_shift.eq(desc.res_main_shift), t.short_shift.eq(desc.res_short_shift),
            t.res_shift.eq(desc.res_shift),
        ]

        # ---- Issue and weights ---------------------------------------------------------------
        for unit in (issue, feeder):
            m.d.comb += [unit.go.eq(go), unit.desc.eq(desc), unit.sizes.eq(sz)]
        m.d.comb += [
            issue.act_ptr.eq(loader.acts_ptr), issue.act_complete.eq(complete["acts"]),
            issue.shift_ready.eq(reuse | ~shift | complete["shift"]),
            feeder.w_ptr.eq(loader.weights_ptr),
            feeder.w_complete.eq(reuse | complete["weights"]),
        ]
        lanes, windowed, taps_run = None, Const(0), Const(0)
        if cfg.window_ops:
            lanes = m.submodules.lanes = LaneUnit(cfg)
            windowed = window_flags(desc.flags).any()
            m.d.comb += [lanes.op.eq(window_flags(desc.flags)), lanes.engine.eq(desc.engine)]
        if cfg.taps:
            taps_run = desc.flags[DESC_FLAGS["depthwise"]] & desc.flags[DESC_FLAGS["taps"]]
        # The engines advance on a registered ready: retire's decision stays out of them; each
        # copy of an array's enable has its own copy of that register.
        ready = Signal(ready_copy_count(cfg), name="engine_ready")
        y = route_engines(m, cfg, self._column_modules, issue.x, feeder.w, desc.engine,
                          lanes, windowed, issue.x_taps if cfg.taps else None, taps_run, ready)
        y = skid_buffer(m, y, output_layout(cfg.post_engine), ready_copies=ready)

        # ---- Retire: partial sums back to the accumulator, final sums to post-processing ----
        window = hazard_window(cfg)
        m.submodules.tags = tags = SyncFIFOBuffered(width=len(issue.tag.payload.as_value()),
                                                    depth=window + 2)
        m.d.comb += [tags.w_data.eq(issue.tag.payload), tags.w_en.eq(issue.tag.valid),
                     issue.tag.ready.eq(tags.w_rdy)]
        tag = Signal(tag_layout(cfg, groups))
        m.d.comb += tag.eq(tags.r_data)
        # A final vector waits for its parameters and its shortcut vector.
        short_ready, short_complete = self._shortcut(m, loader, banks, post, tag, sz, desc,
                                                     chain["short_resident"])
        params_ready = reuse | complete["params"]
        post_ready = params_ready & short_ready
        retire = Signal()
        m.d.comb += [
            y.ready.eq(~tag.final | (post.i.ready & post_ready)),
            retire.eq(y.valid & y.ready),
            tags.r_en.eq(retire),
            issue.retired.eq(retire),
            awr.addr.eq(tag.index), awr.data.eq(y.payload.data),
            awr.en.eq(retire & ~tag.final),
            post.i.valid.eq(y.valid & tag.final & post_ready),
            post.i.payload.data.eq(y.payload.data),
            post.i.payload.group.eq(tag.group),
            post.i.payload.zero.eq(tag.zero),
            post.i.payload.last.eq(tag.last),
        ]

        # ---- Output: a FIFO of result vectors, each sent as whole beats ---------------------
        out_bits = C * a
        m.submodules.out = out = SyncFIFOBuffered(width=out_bits + 1, depth=cfg.out_vectors)
        # The fork decides late (the output FIFO, the banks' write address): behind a skid
        # buffer the pool's, post-processing's and retire's enables do not wait for it.
        pooled_o = self._pool(m, post, desc, sz)
        layout = post.o.payload.shape()
        results = stream.Signature(layout).create()
        m.d.comb += [results.valid.eq(pooled_o.valid), pooled_o.ready.eq(results.ready),
                     results.payload.data.eq(pooled_o.payload.data),
                     results.payload.last.eq(pooled_o.payload.last),
                     results.payload.group.eq(post.o.payload.group)]
        results = skid_buffer(m, results, layout, name="results_skid")
        written_last = fork_results(m, cfg, results, out, banks, results.payload.group, sz.nt,
                                    pooled, chain["quiet"])
        nbeats = cfg.beats(out_bits)
        beat = Signal(range(max(nbeats, 2)))
        padded = Signal(nbeats * S)
        m.d.comb += padded.eq(out.r_data[:out_bits])
        vec_last = out.r_data[out_bits]
        sent_last = Signal()
        m.d.comb += [
            self.m.valid.eq(out.r_rdy),
            self.m.payload.data.eq(padded.word_select(beat, S)),
            self.m.payload.last.eq(vec_last & (beat == nbeats - 1)),
        ]
        with m.If(self.m.valid & self.m.ready):
            with m.If(beat == nbeats - 1):
                m.d.comb += out.r_en.eq(1)
                m.d.sync += beat.eq(0)
                with m.If(vec_last):
                    m.d.sync += sent_last.eq(1)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)

        # ---- End of the run, errors, counters -----------------------------------------------
        all_in = Cat(complete.values()).all() & short_complete
        with m.If(running & Mux(chain["quiet"], written_last, sent_last) & all_in):
            m.d.comb += self.finished.eq(1)     # the shell resets the datapath for the next run
        m.d.comb += self.error.eq(Mux(loader.error != 0, loader.error,
                                      Mux(setup.done, setup.error, 0)))
        x_take = issue.x.valid & issue.x.ready
        m.d.comb += [
            # rows * cols terms per accepted vector, whatever the engine (a folded one too,
            # a taps run's); cols (one per lane) on a window run on the lane unit.
            self.terms.eq(Mux(x_take, Mux(windowed & ~taps_run, C, e.pe_count), 0)),
            self.stall_in.eq(self.run & ~x_take & (issue.waiting | feeder.waiting
                                                   | (wait_desc & ~self.s.valid))),
            self.stall_out.eq(self.run & self.m.valid & ~self.m.ready),
        ]
        return m

    def _pool(self, m, post, desc, sz):
        """The global pool after post-processing (``pool_pixels > 0``); returns the stream of
        result vectors for the output FIFO: the pool's, or post-processing's without a pool
        unit (then ``flags.global_pool`` never runs: setup refuses it, TOO_BIG)."""
        if not self._cfg.pool_pixels:
            return post.o
        e = self._cfg.engine
        m.submodules.pool = pool = GlobalPool(e, lanes=e.cols, groups=post.groups,
                                              pool_pixels=self._cfg.pool_pixels)
        wiring.connect(m, post.o, pool.i)
        # Setup has checked pool_shift's range and nt <= groups.
        m.d.comb += [pool.on.eq(desc.flags[DESC_FLAGS["global_pool"]]),
                     pool.shift.eq(desc.pool_shift), pool.nt.eq(sz.nt)]
        return pool.o

    def _shortcut(self, m, loader, banks, post, tag, sz, desc, short_resident):
        """The shortcut buffer, written aligned by :class:`~.stream_loader.ShortcutAligner`
        from the loader's SHORTCUT vectors and read by post-processing, and the address of the
        final vector at the head of the retire queue; returns "its aligned shortcut vector is
        complete (or the layer has none)", and "every source vector is in" (the resident
        reader's ``sc_done``; always 1 when the loader brings them, whose total says it).

        With ``short_resident`` the aligner is fed by the banks' reader (``sc_we``,
        ``sc_data``) instead of the loader's SHORTCUT vectors.

        Final vectors come per block, per ``nt``, per pixel ``i`` of the block, so the address
        ``pixel * NT + nt`` is the previous one plus ``NT`` within a pass; a pass with
        ``nt > 0`` starts one after the previous pass's start, and a block (``nt = 0``) one
        after the vector before it (the previous block's last pixel at ``nt = NT - 1``).

        The watermark is the aligner's ``done``: whole output pixels, each complete once the
        last source vector of its source pixel is written; it never waits on the engine, so
        the loader never stalls on it. Aligned tiles the shortcut does not reach (channels
        below ``short_off`` or from ``short_off + NTS*C`` on) are never written: their reads
        are zeroed here, by a flag that follows post-processing's read address (its two
        registers and the read port, all enabled by ``s_en``).
        """
        residual = desc.flags[DESC_FLAGS["residual"]]
        depth = self._cfg.shortcut_vectors
        if not depth:
            return ~residual, Const(1)  # never residual: setup refuses it (TOO_BIG)
        e = self._cfg.engine
        m.submodules.shortcut = smem = Memory(shape=unsigned(e.cols * e.act_bits), depth=depth,
                                              init=[])
        m.submodules.align = align = ShortcutAligner(self._cfg)
        wr, rd = smem.write_port(), smem.read_port()
        m.d.comb += [
            align.short_c.eq(desc.short_c), align.short_off.eq(desc.short_off),
            align.short_stride.eq(desc.short_stride), align.out_w.eq(desc.out_w),
            align.nt.eq(sz.nt), align.nts.eq(sz.nts),
            loader.sc_hold.eq(align.hold),
            wr.addr.eq(align.wr_addr), wr.en.eq(align.wr_en), wr.data.eq(align.wr_data),
            rd.addr.eq(post.s_addr), rd.en.eq(post.s_en),
        ]
        # The group of the vector being read, two registers behind the input like its address.
        g = [Signal.like(post.i.payload.group, name=f"short_group_{k}") for k in range(2)]
        outside = Signal()
        with m.If(post.s_en):
            m.d.sync += [g[0].eq(post.i.payload.group), g[1].eq(g[0]),
                         outside.eq((g[1] < align.lo_tile) | (g[1] > align.hi_tile))]
        m.d.comb += post.s_data.eq(Mux(outside, 0, rd.data))

        width = shortcut_addr_bits(depth) + 1
        addr = Signal(width)
        block_next, pass_next, step_next = Signal(width), Signal(width), Signal(width)
        first = tag.index == 0
        m.d.comb += [addr.eq(Mux(first, Mux(tag.group == 0, block_next, pass_next), step_next)),
                     post.i.payload.short_addr.eq(addr)]
        # addr < done, compared for each of its three sources before the choice (timing:
        # it gates retire, the engine's handshake).
        below = Mux(first, Mux(tag.group == 0, block_next < align.done, pass_next < align.done),
                    step_next < align.done)
        with m.If(post.i.valid & post.i.ready):
            m.d.sync += [block_next.eq(addr + 1), step_next.eq(addr + sz.nt)]
            with m.If(first):
                m.d.sync += pass_next.eq(addr + 1)
        if banks is None:
            m.d.comb += [align.we.eq(loader.sc_we), align.data.eq(loader.sc_data)]
            return ~residual | below, Const(1)
        m.d.comb += [
            align.we.eq(Mux(short_resident, banks.sc_we, loader.sc_we)),
            align.data.eq(Mux(short_resident, banks.sc_data, loader.sc_data)),
            banks.sc_hold.eq(align.hold),
        ]
        return ~residual | below, ~short_resident | banks.sc_done


class Core(wiring.Component):
    """The core's top level: AXI4-Lite registers, AXI4-Stream slave and master.

    Parameters
    ----------
    cfg : CoreConfig
    column_module : str or tuple, optional
        Name of the separately emitted PE column module (arrays; see
        :class:`~mulfree.rtl.array.PEArray`): engine 0's, or one name (or None) per engine of
        a multi-engine core.
    """

    def __init__(self, cfg: CoreConfig, *, column_module=None):
        self._cfg = cfg
        self._column_module = column_module
        super().__init__(core_signature(cfg))

    @property
    def cfg(self):
        return self._cfg

    def elaborate(self, platform):
        cfg = self._cfg
        m = Module()
        regs = m.submodules.regs = AxiLiteRegisters(cfg.register_map)
        wiring.connect(m, wiring.flipped(self.s_axil), regs.s_axil)
        m.d.comb += self.irq.eq(regs.irq)

        dp = LayerDatapath(cfg, column_module=self._column_module)
        start, soft = regs.control_start, regs.control_soft_reset
        busy = Signal()
        discard = Signal()          # after an error: drop the rest of the bad layer's beats
        code = Signal(8)
        flush = Signal()
        # The end of a run (an error or its finish) resets the datapath one cycle later, from
        # a register: the datapath's error and finish logic then drives no reset of every
        # register (timing). The shell still reacts in the same cycle (busy falls); in the
        # cycle between, busy is low, so the datapath takes and sends nothing. ``busy``
        # gates it: a start in that cycle is never followed by a second reset.
        end_q = Signal()
        m.d.sync += end_q.eq(busy & ((dp.error != 0) | dp.finished))
        m.d.comb += flush.eq(start | soft | end_q)
        m.submodules.datapath = ResetInserter({"sync": flush})(dp)

        reuse_valid = Signal()
        reuse_rows, reuse_tiles = Signal(SIZE_BITS), Signal(SIZE_BITS)
        reuse_channels = Signal(16)
        reuse_engine = Signal(4)
        reuse_window = Signal(REUSE_FLAG_BITS)
        m.d.comb += [dp.reuse_valid.eq(reuse_valid), dp.reuse_rows.eq(reuse_rows),
                     dp.reuse_channels.eq(reuse_channels), dp.reuse_tiles.eq(reuse_tiles),
                     dp.reuse_engine.eq(reuse_engine), dp.reuse_window.eq(reuse_window)]
        bank_state(m, cfg, dp, soft, busy)

        with m.If(soft):
            m.d.sync += [busy.eq(0), discard.eq(0), code.eq(0), reuse_valid.eq(0)]
        with m.Elif(start):
            m.d.sync += [busy.eq(1), discard.eq(0), code.eq(0)]
        with m.Elif(busy & (dp.error != 0)):
            m.d.sync += [busy.eq(0), discard.eq(1), code.eq(dp.error), reuse_valid.eq(0)]
        with m.Elif(busy & dp.finished):
            m.d.sync += [busy.eq(0), reuse_valid.eq(1), reuse_rows.eq(dp.rows),
                         reuse_channels.eq(dp.channels), reuse_tiles.eq(dp.tiles),
                         reuse_engine.eq(dp.engine), reuse_window.eq(dp.window)]

        m.d.comb += [
            dp.run.eq(busy),
            dp.s.valid.eq(self.s_axis.tvalid & busy),
            dp.s.payload.data.eq(self.s_axis.tdata),
            dp.s.payload.last.eq(self.s_axis.tlast),
            self.s_axis.tready.eq(Mux(busy, dp.s.ready, discard)),
            self.m_axis.tvalid.eq(dp.m.valid & busy),
            self.m_axis.tdata.eq(dp.m.payload.data),
            self.m_axis.tlast.eq(dp.m.payload.last),
            dp.m.ready.eq(self.m_axis.tready & busy),

            regs.status_idle.eq(~busy),
            regs.status_busy.eq(busy),
            regs.status_done.eq(busy & ((dp.error != 0) | dp.finished)),
            regs.error_core_code.eq(code),
            regs.busy_cycles_inc.eq(busy),
        ]
        # The datapath's counters take their increments a cycle late (registered): stall_in
        # and terms come from the array's handshake chain, which then drives no 64-bit adder.
        # A run's totals are the same, complete one cycle after busy falls.
        stall_in_inc, stall_out_inc = Signal(), Signal()
        terms_inc = Signal.like(regs.terms_inc)
        m.d.sync += [stall_in_inc.eq(busy & dp.stall_in), stall_out_inc.eq(busy & dp.stall_out),
                     terms_inc.eq(Mux(busy, dp.terms, 0))]
        m.d.comb += [
            regs.stall_in_cycles_inc.eq(stall_in_inc),
            regs.stall_out_cycles_inc.eq(stall_out_inc),
            regs.terms_inc.eq(terms_inc),
        ]
        return m
