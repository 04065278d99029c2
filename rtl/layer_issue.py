"""Address generation: the engine's input vectors and weight tiles, read from on-chip buffers.

The walk (``docs/interface.md``, "Order of work")::

    for each block of m_block output pixels (raster order, the last block shorter):
        for nt in 0..NT-1:                       output tile: weight columns
            for ky, kx, ct:                      reduction tile kt = (ky*kernel_w + kx)*CT + ct
                for each pixel (oy, ox) of the block:
                    lane j reads xs[ct*R + j, iy, ix],  iy = oy*sh - ph + ky, ix = ox*sw - pw + kx
                    with xs[c, y, x] = x[c, y + dy_c, x + dx_c], 0 outside the map

is done with running pointers and no multiplier: the feature-map address of a pixel is
``iy*row + ix*CT + ct`` (``row = in_w*CT``), kept as a register that steps by ``stride_w*CT``
along an output row and restarts from a row pointer stepping by ``stride_h*row``; the kernel
offset ``ky*row + kx*CT + ct`` steps by 1 through ``(kx, ct)`` and by ``row`` per ``ky``. Every
pass restarts from a snapshot taken at the block's start, plus the kernel offset, so a block's
activations are read ``NT*KT`` times from the buffer and sent once by the host.

The feature-map buffer is one memory per lane, so lane ``j`` may read its own address: the
shift table's ``(dy_j, dx_j)``, each in ``[-reach, reach]`` (``cfg.shift_reach``), adds
``dy_j*row + dx_j*CT`` (Shift and AddressNet shifts, done by moving read pointers), a sum of
``row`` and ``CT`` shifted by the entry's bits (:func:`shift_offset`: no multiplier). A lane
reads 0 when the pixel ``(iy, ix)`` is outside the map (padding) or its shifted read
``(iy + dy_j, ix + dx_j)`` is.

A window run (interface 2.3, one of ``win_max``, ``win_sum``, ``depthwise``) has no ``ct``
loop: channel tile ``ct`` is tied to ``nt`` (lane ``j`` of tile ``nt`` is channel ``nt*C + j``,
``CT = NT`` on the square core), and each ``nt`` takes ``kk`` passes, one per ``(ky, kx)``, the
kernel offset ``ky*row + kx*CT + nt`` stepping by ``CT`` per ``kx`` and starting at ``nt``. A
padded lane reads ``act_min`` on a max run (so it never wins) and 0 otherwise; the first pass's
partial sums are ``act_min`` in every lane on a max run, 0 otherwise.

Pipeline: S0 walks and issues (checking the activation watermark and the credit), S1 computes
the lanes' addresses from the shift table (read a cycle ahead, registered), S2 has the buffer
data and enters a small FIFO in front of the engine. The credit counts FIFO entries and S1/S2,
so a read is never lost when the engine stalls. Timing: S0 compares no register with a run
constant (the walk's conditions are flags registered with their counters), and ``addr`` and
the watermark's farthest address ``far`` move to values computed from registers alone.

A taps run (interface 2.4, ``flags.depthwise | flags.taps`` on a core with ``cfg.taps``) walks
differently (:class:`~.tap_issue.TapWalk` in S0): per output tile, every padded pixel once, one
read per cycle under the same credit; S1 gives the read's column to the tap window
(:class:`~.tap_window.TapWindow`), S2 enters the read into it and writes the FIFO only when the
read emits, with the window's taps on the sideband ``x_taps``. Tags, ``inflight`` and
``issued`` count emitted vectors only: each is final (``index`` 0 for a tile's first, 1 after;
no partial sums), ``x.last`` on a tile's last (the array swaps weight tiles there).
"""

from types import SimpleNamespace

from amaranth.hdl import Array, Signal, Module, Cat, Const, Mux, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from ..params.core_config import CoreConfig, DESC_FLAGS, ISSUE_FIFO_DEPTH
from .array import input_layout
from .layer_setup import SIZE_BITS, desc_layout, sizes_layout, window_flags
from .tap_issue import TapWalk
from .tap_window import TapWindow
from .watermark import below


__all__ = ["IssueUnit", "WeightFeeder", "tag_layout", "X_FIFO_DEPTH", "hazard_window",
           "shift_offset", "times_const"]

#: Entries of the FIFO between the buffers and the engine's input (see ISSUE_FIFO_DEPTH).
X_FIFO_DEPTH = ISSUE_FIFO_DEPTH
#: Bits of a pixel coordinate of the walk (signed: padding makes it negative; in_h, in_w
#: < 2^16 plus the kernel's and the stride's overshoot past the map).
COORD_BITS = 18


def addr_bits(cfg: CoreConfig):
    """Bits of a signed feature-map address of the walk.

    Every address is ``iy*row + ix*CT + ct`` with ``-15 <= iy <= in_h + 14`` and likewise
    ``ix`` (padding < 16, and the descriptor's checks make ``out_h`` the convolution's output
    size, so ``(out_h-1)*stride_h - pad_h + kernel_h - 1 <= in_h + pad_h - 1``); a lane's
    shifted read and the watermark add at most ``reach*row + reach*CT`` with ``reach <=
    MAX_SHIFT2D = 7``. With ``CT <= row <= acts`` its magnitude stays below ``(31 + 2*7) *
    acts < 64 * fmap_vectors``: 6 bits above the buffer's address and a sign, at every reach.
    (Padded pixels' addresses are never read; they only need not wrap onto a real pixel in
    the watermark check.)
    """
    return max(1, (cfg.fmap_vectors - 1).bit_length()) + 7


def times_const(n, value):
    """``n * value`` for a constant ``n >= 1``: ``value`` shifted by each set bit of ``n``,
    added (``value`` itself for ``n = 1``)."""
    terms = [value << b if b else value for b in range(n.bit_length()) if n >> b & 1]
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total


def shift_offset(v, stride, reach):
    """``v * stride`` for a shift-table value ``v`` (signed, ``|v| <= reach``, checked by the
    loader) and an unsigned ``stride`` (``row`` or ``CT``), without a multiplier.

    Reach 1: ``±stride`` or 0 by two comparisons. Wider: the bits of ``|v|`` select ``stride
    << i``, and the sum is negated for a negative ``v``.
    """
    s = stride.as_signed()
    if reach == 1:
        return Mux(v == 1, s, Mux(v == -1, -s, 0))
    mag = Mux(v < 0, -v, v).as_unsigned()
    total = 0
    for b in range(reach.bit_length()):
        total = total + Mux(mag[b], stride << b if b else stride, 0)
    return Mux(v < 0, -total, total)


def hazard_window(cfg: CoreConfig):
    """:attr:`CoreConfig.hazard_window`: vectors in flight from issue to accumulator write."""
    return cfg.hazard_window


def tag_layout(cfg: CoreConfig, post_groups):
    """What the retire side needs of each vector, in issue order."""
    return data.StructLayout({
        "index": unsigned(max(1, (cfg.acc_entries - 1).bit_length())),
        "final": unsigned(1),           # kt = KT - 1: the vector's results leave the core
        "group": unsigned(max(1, (post_groups - 1).bit_length())),
        "zero": unsigned(cfg.engine.cols),  # lanes beyond out_c
        "last": unsigned(1),            # the layer's last result vector
    })


class IssueUnit(wiring.Component):
    """The walk over blocks, tiles and pixels, feeding the engine's input stream.

    Attributes
    ----------
    go : In(1)
        Pulse: start a layer with ``desc`` and ``sizes`` (held for the run).
    act_ptr, act_complete : In
        Feature-map vectors loaded (the watermark), and all of them.
    shift_ready : In(1)
        The shift table is loaded (or not used).
    fmap_addr, fmap_en, fmap_data : per-lane read ports of the feature-map buffer.
    sh_addr, sh_data : read port of the shift table (read at ``ct``'s next value, the data
        registered here: S1 selects from a register, not from the memory's output).
    acc_addr, acc_data : read port of the accumulator buffer.
    x : Out(stream.Signature(input_layout(cfg.post_engine)))
        To the engine (the core routes it to the run's engine); partial sums at the core's
        ``acc_width``.
    x_taps : Out(cols * taps * act_bits)
        With ``cfg.taps`` only: the taps of the vector on ``x`` (a taps run's), tap row ``r``
        of column ``c`` at bits ``[(c*taps + r)*act_bits, ...)``.
    tag : Out(stream.Signature(tag_layout(...)))
        One per vector, in the same order, to the retire side.
    retired : In(1)
        A vector left the engine (``in flight`` decreases).
    issued : Out(1)
        A vector was issued this cycle (for the counters).
    waiting : Out(1)
        S0 has a vector to issue but its activations have not arrived.
    done : Out(1)
        Every vector of the layer has been issued.
    """

    def __init__(self, cfg: CoreConfig, post_groups):
        self._cfg = cfg
        e = cfg.engine
        fa = max(1, (cfg.fmap_vectors - 1).bit_length())
        sa = max(1, (-(-cfg.max_channels // e.rows) - 1).bit_length())
        self._post_groups = post_groups
        taps = {"x_taps": Out(e.cols * cfg.taps * e.act_bits)} if cfg.taps else {}
        super().__init__({
            "go": In(1),
            "desc": In(desc_layout()),
            "sizes": In(sizes_layout()),
            "act_ptr": In(SIZE_BITS),
            "act_complete": In(1),
            "shift_ready": In(1),
            "fmap_addr": Out(e.rows * fa),
            "fmap_en": Out(1),
            "fmap_data": In(e.rows * e.act_bits),
            "sh_addr": Out(sa),
            "sh_data": In(e.rows * cfg.shift_entry_bits),
            "acc_addr": Out(max(1, (cfg.acc_entries - 1).bit_length())),
            # Core-wide widths: a multi-engine core's widest accumulator (cfg.post_engine).
            "acc_data": In(e.cols * cfg.acc_width),
            "x": Out(stream.Signature(input_layout(cfg.post_engine))),
            "tag": Out(stream.Signature(tag_layout(cfg, post_groups))),
            "retired": In(1),
            "issued": Out(1),
            "waiting": Out(1),
            "done": Out(1),
            **taps,
        })

    def elaborate(self, platform):
        cfg, e = self._cfg, self._cfg.engine
        R, C, a = e.rows, e.cols, e.act_bits
        m = Module()
        d, sz = self.desc, self.sizes
        A = signed(addr_bits(cfg))
        P = signed(COORD_BITS)

        # ---- S0: the walk -------------------------------------------------------------------
        active = Signal()
        nt, ky, kx, ct = Signal(16), Signal(8), Signal(8), Signal(16)
        koff, koff_row = Signal(A), Signal(A)       # ky*row + kx*CT + ct, ky*row
        i = Signal(16)                              # pixel of the block
        blen = Signal(17)                           # pixels in this block
        rem = Signal(SIZE_BITS)                     # pixels from this block's start to the end
        zero_from = Signal(range(C + 1))            # first lane beyond out_c in this tile
        out_left = Signal(17)                       # out_c - nt*C
        # The pixel walk, and its snapshot at the block's start (kernel offset 0).
        ox, iy, ix, addr, rowaddr = (Signal(16), Signal(P), Signal(P), Signal(A), Signal(A))
        b_ox, b_iy, b_ix, b_addr, b_rowaddr = (Signal(16), Signal(P), Signal(P), Signal(A),
                                               Signal(A))

        # A window run: no ct loop (ct stays 0; its channel tile is nt, in the kernel offset).
        # (Setup refuses window flags on a core without the lane unit: no window logic there.)
        win = window_flags(d.flags) if cfg.window_ops else Const(0, 3)
        windowed = win.any()
        # The walk's conditions are registered flags, each updated with its register from the
        # register's next value (the sizes are held for the run and S0 issues at the earliest
        # the cycle after go), so S0's decision to issue compares no register with a run
        # constant:
        #   last_ct = (ct == sz.ct - 1) | windowed, last_kx = kx == kernel_w - 1,
        #   last_ky = ky == kernel_h - 1, first_kt = ct == kx == ky == 0,
        #   last_nt = nt == sz.nt - 1, end_pass = i == blen - 1, last_block = rem == blen,
        #   i0 = i == 0, short = blen < hazard window.
        last_ct, last_kx, last_ky, first_kt = Signal(), Signal(), Signal(), Signal()
        last_nt, end_pass, last_block, i0, short = (Signal(), Signal(), Signal(), Signal(),
                                                    Signal())
        final_kt = last_ct & last_kx & last_ky
        # The run constants the flags compare with (registered at go).
        ct_m1 = Signal((sz.ct - 1).shape())
        nt_m1 = Signal((sz.nt - 1).shape())
        kw_m1 = Signal((d.kernel_w - 1).shape())
        kh_m1 = Signal((d.kernel_h - 1).shape())
        blen_m1 = Signal((blen - 1).shape())        # blen - 1, updated with blen

        # Credit: FIFO entries plus S1 and S2 never exceed the FIFO's depth.
        x_bits = len(self.x.payload.as_value())
        m.submodules.fifo = fifo = SyncFIFOBuffered(
            width=x_bits + (len(self.x_taps) if cfg.taps else 0), depth=X_FIFO_DEPTH)
        valid1, valid2 = Signal(), Signal()
        credit = fifo.level + valid1 + valid2 < X_FIFO_DEPTH
        # In flight from issue to retire (bounds the tag FIFO and the accumulator hazard).
        window = hazard_window(cfg)
        inflight = Signal(range(window + 2))
        room = inflight < window
        # A short block waits for the previous pass to leave the engine before reading sums.
        hazard = Signal()
        m.d.comb += hazard.eq(~first_kt & i0 & short & (inflight != 0))
        # The farthest vector this pixel's lanes may read must have arrived (the offset
        # reach*row + reach*CT of a shifted run is registered at go).
        reach = cfg.shift_reach
        far_off_v = Mux(d.flags[0], times_const(reach, sz.row) + times_const(reach, sz.ct), 0)
        # Both fit A (addr_bits: an address plus the watermark's reach stays within it).
        far_off, far = Signal(A), Signal(A)         # far = addr + far_off, updated with addr
        issue = Signal()
        arrived = self.act_complete | below(far, self.act_ptr)
        # The table's last write precedes the read S1's register takes: shift_ready a cycle
        # late (the stream sends SHIFT long before ACTS and WEIGHTS).
        shift_ok = Signal()
        m.d.sync += shift_ok.eq(self.shift_ready)
        can = active & credit & room & ~hazard & shift_ok & self.tag.ready
        m.d.comb += issue.eq(can & arrived)
        # S0's read (issue or a taps run's read) and whether it sends a vector and a tag.
        read, tagged, waiting = issue, issue, can & ~arrived
        if cfg.taps:
            taps_run = d.flags[DESC_FLAGS["depthwise"]] & d.flags[DESC_FLAGS["taps"]]
            m.submodules.tap_walk = tw = TapWalk(cfg, A, P)
            t_can = tw.active & credit & room & self.tag.ready
            t_arrived = self.act_complete | (tw.addr < self.act_ptr.as_signed())
            t_read = Signal()
            m.d.comb += [tw.go.eq(self.go & taps_run), tw.desc.eq(d), tw.sizes.eq(sz),
                         tw.corner.eq(self._corner), t_read.eq(t_can & t_arrived),
                         tw.read.eq(t_read)]
            read, tagged = issue | t_read, issue | (t_read & tw.emit)
            waiting = waiting | (t_can & ~t_arrived)
        m.d.comb += [self.waiting.eq(waiting), self.issued.eq(tagged)]
        with m.If(tagged & ~self.retired):
            m.d.sync += inflight.eq(inflight + 1)
        with m.Elif(~tagged & self.retired):
            m.d.sync += inflight.eq(inflight - 1)

        # Next pixel of the raster walk.
        wrap, ow_m1 = Signal(), Signal(16)          # ox == out_w - 1 (with ox), out_w - 1
        s_ox = Mux(wrap, 0, ox + 1)
        s_iy = Mux(wrap, iy + d.stride_h, iy)
        s_ix = Mux(wrap, kx - d.pad_w, ix + d.stride_w)
        s_row = Mux(wrap, rowaddr + sz.srow, rowaddr)
        s_addr = Mux(wrap, rowaddr + sz.srow, addr + sz.sct)

        # The kernel offset of the next pass.
        n_koff = Signal(A)
        n_koff_row = Signal(A)
        n_kx, n_ky = Signal(8), Signal(8)
        with m.If(final_kt):
            # A window run's next tile starts at kernel offset nt + 1 (its channel tile).
            start = Mux(windowed & ~last_nt, nt + 1, 0)
            m.d.comb += [n_koff.eq(start), n_koff_row.eq(start), n_kx.eq(0), n_ky.eq(0)]
        with m.Elif(last_ct & last_kx):
            m.d.comb += [n_koff.eq(koff_row + sz.row), n_koff_row.eq(koff_row + sz.row),
                         n_kx.eq(0), n_ky.eq(ky + 1)]
        with m.Else():
            m.d.comb += [n_koff.eq(koff + Mux(windowed, sz.ct, 1)), n_koff_row.eq(koff_row),
                         n_kx.eq(Mux(last_ct, kx + 1, kx)), n_ky.eq(ky)]

        # addr and far = addr + far_off at go and on issue, from registers alone (the
        # watermark compares far's next values a cycle ahead). On issue: the next pixel within
        # a pass, else the block's start plus the next pass's kernel offset, else the next
        # block's start (where this pass's walk stops, without its offset).
        go_addr, iss_addr, iss_far = Signal(A), Signal(A), Signal(A)
        m.d.comb += [
            go_addr.eq(self._corner),
            iss_addr.eq(Mux(~end_pass, s_addr,
                            Mux(~final_kt | ~last_nt, b_addr + n_koff, s_addr - koff))),
            iss_far.eq(iss_addr + far_off),
        ]

        def start_pass(m, base_ox, base_iy, base_ix, base_row, koff_v, kx_v, ky_v):
            m.d.sync += [i.eq(0), ox.eq(base_ox), iy.eq(base_iy + ky_v), ix.eq(base_ix + kx_v),
                         rowaddr.eq(base_row + koff_v), wrap.eq(base_ox == ow_m1)]

        # Next values of the flagged registers (comb, truncated as the registers are).
        i_inc, ct_adv = Signal(16), Signal(16)
        m.d.comb += [i_inc.eq(i + 1), ct_adv.eq(Mux(last_ct, 0, ct + 1))]
        g_blen, g_rem = Signal(17), Signal(SIZE_BITS)   # at go
        m.d.comb += [g_blen.eq(Mux(sz.m < d.m_block, sz.m, d.m_block)), g_rem.eq(sz.m)]
        n_rem, n_blen = Signal(SIZE_BITS), Signal(17)   # at the next block
        nrem = rem - blen
        m.d.comb += [n_rem.eq(nrem), n_blen.eq(Mux(nrem < d.m_block, nrem, d.m_block))]
        n_nt = Signal(16)
        m.d.comb += n_nt.eq(nt + 1)

        def blen_flags(m, blen_v, rem_v):
            # blen and rem take new values; the pass restarts at pixel 0.
            m.d.sync += [blen_m1.eq(blen_v - 1), end_pass.eq(0 == blen_v - 1),
                         short.eq(blen_v < window), last_block.eq(rem_v == blen_v)]

        with m.If(self.go):
            top = (-d.pad_h).as_signed()
            left = (-d.pad_w).as_signed()
            m.d.sync += [ct_m1.eq(sz.ct - 1), nt_m1.eq(sz.nt - 1), kw_m1.eq(d.kernel_w - 1),
                         kh_m1.eq(d.kernel_h - 1),
                         far_off.eq(far_off_v),
                         last_ct.eq((0 == sz.ct - 1) | windowed), last_kx.eq(0 == d.kernel_w - 1),
                         last_ky.eq(0 == d.kernel_h - 1), first_kt.eq(1),
                         last_nt.eq(0 == sz.nt - 1), i0.eq(1)]
            blen_flags(m, g_blen, g_rem)
            # A taps run leaves this walk to the tap walk.
            m.d.sync += [active.eq(~taps_run if cfg.taps else 1), nt.eq(0), ky.eq(0),
                         kx.eq(0), ct.eq(0), koff.eq(0), koff_row.eq(0), i.eq(0), rem.eq(sz.m),
                         out_left.eq(d.out_c)]
            m.d.sync += [blen.eq(Mux(sz.m < d.m_block, sz.m, d.m_block))]
            m.d.sync += [b_ox.eq(0), ox.eq(0), ow_m1.eq(d.out_w - 1), wrap.eq(d.out_w == 1),
                         b_iy.eq(top), iy.eq(top), b_ix.eq(left), ix.eq(left)]
            m.d.sync += [b_addr.eq(self._corner), b_rowaddr.eq(self._corner),
                         rowaddr.eq(self._corner)]
            m.d.sync += [addr.eq(go_addr), far.eq(go_addr + far_off_v)]
        with m.Elif(issue):
            m.d.sync += [addr.eq(iss_addr), far.eq(iss_far)]
            with m.If(~end_pass):
                m.d.sync += [i.eq(i_inc), ox.eq(s_ox), wrap.eq(s_ox == ow_m1), iy.eq(s_iy),
                             ix.eq(s_ix), rowaddr.eq(s_row),
                             end_pass.eq(i_inc == blen_m1), i0.eq(i_inc == 0)]
            with m.Else():
                m.d.sync += [ct.eq(ct_adv), kx.eq(n_kx), ky.eq(n_ky),
                             koff.eq(n_koff), koff_row.eq(n_koff_row),
                             last_ct.eq((ct_adv == ct_m1) | windowed),
                             last_kx.eq(n_kx == kw_m1), last_ky.eq(n_ky == kh_m1),
                             first_kt.eq((ct_adv == 0) & (n_kx == 0) & (n_ky == 0))]
                with m.If(~final_kt):
                    start_pass(m, b_ox, b_iy, b_ix, b_rowaddr, n_koff, n_kx, n_ky)
                    m.d.sync += [end_pass.eq(0 == blen_m1), i0.eq(1)]
                with m.Elif(~last_nt):
                    m.d.sync += [nt.eq(n_nt), out_left.eq(out_left - C),
                                 last_nt.eq(n_nt == nt_m1)]
                    start_pass(m, b_ox, b_iy, b_ix, b_rowaddr, n_koff, 0, 0)
                    m.d.sync += [end_pass.eq(0 == blen_m1), i0.eq(1)]
                with m.Elif(~last_block):
                    # The next block starts where this pass's walk stops, without its offset.
                    nb = [s_ox, s_iy - ky, s_ix - kx, s_addr - koff, s_row - koff]
                    m.d.sync += [nt.eq(0), out_left.eq(d.out_c), rem.eq(n_rem),
                                 last_nt.eq(0 == nt_m1)]
                    m.d.sync += [b_ox.eq(nb[0]), b_iy.eq(nb[1]), b_ix.eq(nb[2]),
                                 b_addr.eq(nb[3]), b_rowaddr.eq(nb[4])]
                    m.d.sync += blen.eq(n_blen)
                    start_pass(m, nb[0], nb[1], nb[2], nb[4], 0, 0, 0)
                    m.d.sync += i0.eq(1)
                    blen_flags(m, n_blen, n_rem)
                with m.Else():
                    m.d.sync += active.eq(0)
        m.d.comb += self.done.eq(~active & ~tw.active if cfg.taps else ~active)
        m.d.comb += zero_from.eq(Mux(out_left < C, out_left, C))

        # The tag of the issued vector.
        t = self.tag.payload
        m.d.comb += [
            self.tag.valid.eq(issue),
            t.index.eq(i), t.final.eq(final_kt), t.group.eq(nt),
            t.zero.eq(Cat(Const(j, range(C + 1)) >= zero_from for j in range(C))),
            t.last.eq(final_kt & last_nt & last_block & end_pass),
        ]
        if cfg.taps:
            with m.If(taps_run):
                m.d.comb += [
                    self.tag.valid.eq(t_read & tw.emit),
                    t.index.eq(tw.emitted), t.final.eq(1), t.group.eq(tw.nt),
                    t.zero.eq(Cat(Const(j, range(C + 1)) >= tw.zero_from for j in range(C))),
                    t.last.eq(tw.run_end),
                ]

        # ---- S1: the lanes' addresses -------------------------------------------------------
        # The read takes ct's next value, so the registered entry is ct's in S1.
        m.d.comb += self.sh_addr.eq(Mux(self.go, 0, Mux(issue & end_pass, ct_adv, ct)))
        m.d.sync += (sh_entry := Signal.like(self.sh_data)).eq(self.sh_data)
        iy1, ix1, addr1 = Signal(P), Signal(P), Signal(A)
        index1, first1, last1 = Signal(16), Signal(), Signal()
        m.d.sync += valid1.eq(read)
        near = self._near_reads(m, reach, A, sz) if reach == 1 else None
        with m.If(issue):
            m.d.sync += [iy1.eq(iy), ix1.eq(ix), addr1.eq(addr), index1.eq(i),
                         first1.eq(first_kt), last1.eq(end_pass)]
            if near:
                near.load(m, iy, ix, addr)
        if cfg.taps:
            px1, emit1 = Signal(16), Signal()
            with m.If(t_read):
                # x.last on the tile's last read (its last emit): the array swaps tiles.
                m.d.sync += [iy1.eq(tw.iy), ix1.eq(tw.ix), addr1.eq(tw.addr), px1.eq(tw.px),
                             emit1.eq(tw.emit), last1.eq(tw.tile_end)]
                if near:
                    near.load(m, tw.iy, tw.ix, tw.addr)
        fa = len(self.fmap_addr) // R
        # The shifted map xs[c, y, x] = x[c, y + dy, x + dx] is itself zero-padded: a pixel
        # outside the map reads 0 whatever the lane's shift, and so does a shifted read that
        # leaves the map.
        base_ok = (iy1 >= 0) & (iy1 < d.in_h) & (ix1 >= 0) & (ix1 < d.in_w)
        lane_ok = []
        eb = cfg.shift_entry_bits
        for j in range(R):
            entry = sh_entry[eb * j:eb * (j + 1)]
            if near:
                # Reach 1: S1 selects among S0's registered sums and flags by the entry.
                code = entry & Mux(d.flags[0], 0b1111, 0)
                lane_ok.append(near.ok(code))
                m.d.comb += self.fmap_addr.word_select(j, fa).eq(near.addr(code))
                continue
            dy = Mux(d.flags[0], entry[:eb // 2].as_signed(), 0)
            dx = Mux(d.flags[0], entry[eb // 2:].as_signed(), 0)
            ly, lx = iy1 + dy, ix1 + dx
            lane_ok.append(base_ok & (ly >= 0) & (ly < d.in_h) & (lx >= 0) & (lx < d.in_w))
            off_y = shift_offset(dy, sz.row, reach)
            off_x = shift_offset(dx, sz.ct, reach)
            m.d.comb += self.fmap_addr.word_select(j, fa).eq(addr1 + off_y + off_x)
        m.d.comb += [self.fmap_en.eq(1), self.acc_addr.eq(index1)]

        # ---- S2: the data -------------------------------------------------------------------
        ok2 = Signal(R)
        first2, last2 = Signal(), Signal()
        m.d.sync += valid2.eq(valid1)
        m.d.sync += [ok2.eq(Cat(lane_ok)), first2.eq(first1), last2.eq(last1)]
        x = Signal(input_layout(cfg.post_engine))
        # A max run: padding reads act_min, and the first pass starts from act_min.
        pad = Mux(win[0], Const(1 << (a - 1), a), 0)
        first_psum = Mux(win[0], Cat(Const(-(1 << (a - 1)), signed(cfg.acc_width))
                                     for _ in range(C)), 0)
        m.d.comb += [
            x.data.eq(Cat(Mux(ok2[j], self.fmap_data.word_select(j, a), pad)
                          for j in range(R))),
            x.psum.eq(Mux(first2, first_psum, self.acc_data)),
            x.last.eq(last2),
            fifo.w_data.eq(x.as_value()),
            fifo.w_en.eq(valid2),
            self.x.valid.eq(fifo.r_rdy),
            self.x.payload.eq(fifo.r_data[:x_bits]),
            fifo.r_en.eq(self.x.ready),
        ]
        if cfg.taps:
            self._tap_window(m, x, fifo, taps_run, valid1, valid2, px1, emit1)
        return m

    def _near_reads(self, m, reach, A, sz):
        """Reach 1: S1 without adders between the shift table's read and the banks' addresses
        (timing). S0 registers with the read the nine sums ``addr + dy*row + dx*CT`` and the
        in-map flags of ``iy + dy``, ``ix + dx`` (``dy, dx`` in ``{-1, 0, 1}``); S1 selects by
        a lane's entry. ``-2`` never reaches the table (the loader refuses it): it selects 0."""
        d = self.desc
        offs = {(dy, dx): Signal(A, name=f"near_off_{dy + 1}{dx + 1}")
                for dy in (-1, 0, 1) for dx in (-1, 0, 1)}
        with m.If(self.go):                 # run constants: the sizes are held for the run
            signs = {-1: lambda v: -v, 0: lambda v: 0, 1: lambda v: v}
            m.d.sync += [o.eq(signs[dy](sz.row.as_signed()) + signs[dx](sz.ct.as_signed()))
                         for (dy, dx), o in offs.items()]
        sums = {k: Signal(A, name=f"near_addr_{k[0] + 1}{k[1] + 1}") for k in offs}
        y_ok = {k: Signal(name=f"near_y_ok_{k + 1}") for k in (-1, 0, 1)}
        x_ok = {k: Signal(name=f"near_x_ok_{k + 1}") for k in (-1, 0, 1)}
        value = {0: 0, 1: 1, 2: 0, 3: -1}   # a 2-bit signed half of an entry; -2 -> 0

        def load(m, iy, ix, addr):
            m.d.sync += [sums[k].eq(addr + offs[k]) for k in offs]
            m.d.sync += [y_ok[k].eq((iy + k >= 0) & (iy + k < d.in_h)) for k in y_ok]
            m.d.sync += [x_ok[k].eq((ix + k >= 0) & (ix + k < d.in_w)) for k in x_ok]

        def ok(code):
            ys, xs = (Array(flags[value[c]] for c in range(4)) for flags in (y_ok, x_ok))
            return y_ok[0] & x_ok[0] & ys[code[:2]] & xs[code[2:]]
        return SimpleNamespace(load=load, ok=ok, addr=lambda code: Array(
            sums[value[c & 3], value[c >> 2]] for c in range(16))[code])

    def _tap_window(self, m, x, fifo, taps_run, valid1, valid2, px1, emit1):
        """S1 and S2 of a taps run: the tap window reads its lines at the read's column in
        S1 and takes the read (``x.data``, padding 0) in S2, when the FIFO takes the vector
        with its taps if the read emits; no partial sums."""
        m.submodules.tap_window = win = TapWindow(self._cfg)
        px2, emit2 = Signal(16), Signal()
        m.d.sync += [px2.eq(px1), emit2.eq(emit1)]
        m.d.comb += [
            win.kernel_h.eq(self.desc.kernel_h), win.kernel_w.eq(self.desc.kernel_w),
            win.rd_px.eq(px1), win.rd_en.eq(valid1 & taps_run),
            win.wr_px.eq(px2), win.enter.eq(valid2 & taps_run), win.data.eq(x.data),
            self.x_taps.eq(fifo.r_data[len(x.as_value()):]),
        ]
        with m.If(taps_run):
            m.d.comb += [x.psum.eq(0), fifo.w_data.eq(Cat(x.as_value(), win.taps)),
                         fifo.w_en.eq(valid2 & emit2)]

    @property
    def _corner(self):
        """Address of the padded map's corner pixel ``(-pad_h, -pad_w)``: no multiplier.

        ``-(pad_h*row + pad_w*CT)`` with pad < 16: a sum of shifted copies selected by the
        pads' bits.
        """
        d, sz = self.desc, self.sizes
        total = 0
        for b in range(4):
            total = total + Mux(d.pad_h[b], sz.row << b, 0) + Mux(d.pad_w[b], sz.ct << b, 0)
        return -total


class WeightFeeder(wiring.Component):
    """Sends the weight rows of every pass to the engine, in the order the walk uses them.

    For each block the passes take the weight buffer's rows ``0 .. NT*KT*rows - 1`` in order,
    so the feeder is a pointer that wraps once per block, ``blocks`` times, reading behind the
    loader's weight watermark. A depthwise window run's passes take one row each (``wrows =
    NT*kk``, in the walk's order: the same pointer); a max or sum run has no weight rows
    (``wrows = 0``): the feeder never starts, never reads and never waits.
    """

    def __init__(self, cfg: CoreConfig):
        self._cfg = cfg
        e = cfg.engine
        wa = max(1, (cfg.weight_rows - 1).bit_length())
        super().__init__({
            "go": In(1),
            "desc": In(desc_layout()),
            "sizes": In(sizes_layout()),
            "w_ptr": In(SIZE_BITS),
            "w_complete": In(1),
            "rd_addr": Out(wa),
            "rd_data": In(e.cols * cfg.code_width),
            "w": Out(stream.Signature(unsigned(e.cols * cfg.code_width))),
            "waiting": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        d, sz = self.desc, self.sizes
        active = Signal()
        ptr = Signal(SIZE_BITS)
        rem = Signal(SIZE_BITS)         # output pixels from this block's start to the end
        valid1 = Signal()
        m.submodules.fifo = fifo = SyncFIFOBuffered(width=len(self.w.payload),
                                                     depth=X_FIFO_DEPTH)
        credit = fifo.level + valid1 < X_FIFO_DEPTH
        arrived = self.w_complete | (ptr < self.w_ptr)
        can = active & credit
        read = Signal()
        m.d.comb += [read.eq(can & arrived), self.waiting.eq(can & ~arrived),
                     self.rd_addr.eq(ptr)]
        with m.If(self.go):
            m.d.sync += [active.eq(sz.wrows != 0), ptr.eq(0), rem.eq(sz.m)]
        with m.Elif(read):
            with m.If(ptr == sz.wrows - 1):
                m.d.sync += [ptr.eq(0), rem.eq(rem - d.m_block)]
                with m.If(rem <= d.m_block):
                    m.d.sync += active.eq(0)
            with m.Else():
                m.d.sync += ptr.eq(ptr + 1)
        m.d.sync += valid1.eq(read)
        m.d.comb += [
            fifo.w_data.eq(self.rd_data), fifo.w_en.eq(valid1),
            self.w.valid.eq(fifo.r_rdy), self.w.payload.eq(fifo.r_data),
            fifo.r_en.eq(self.w.ready),
        ]
        return m
