"""Layer setup: check a descriptor and derive the sizes the controller walks by.

The descriptor (``docs/interface.md``, "The descriptor") gives the convolution's shape; the
controller needs products and quotients of it (channel tiles, weight rows, buffer strides).
They are computed once per layer by a small sequential unit — one adder, shift-add
multiplication and restoring division, a bit per cycle — so the core holds no multiplier
outside the engine (and none at all for shift and adder engines). A layer's setup takes
at most ``len(STEPS) * 18 + 2`` cycles; a multiplication stops after its second operand's
highest set bit and a division by a power of two is a shift, so a typical layer's setup takes
under a hundred cycles.

Every check of the descriptor lives here; the result is an error code from
:data:`~mulfree.params.core_config.CORE_ERRORS` or 0.

Window runs (interface 2.3, one of the flags ``win_max``, ``win_sum``, ``depthwise``): the
walk takes ``nkk = kk * nt`` passes per block, and the weight rows are ``nkk`` for a depthwise
run (one row of ``cols`` codes per pass) and 0 for max and sum; the last step's store puts
them into ``wrows`` (which holds ``nkt * rows`` before), so the program's cycle bound stays.

Taps runs (interface 2.4, ``flags.depthwise | flags.taps``): one pass per output tile of
``rows`` weight rows, so ``wrows = ntr = nt * rows`` (the last step's store); the checks of
:meth:`LayerSetup._tap_checks`. REUSE compares the window flags and ``flags.taps``
(:func:`reuse_flags`).
"""

from amaranth.hdl import Signal, Module, Const, Cat, Mux, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from ..params.core_config import (CoreConfig, DESC_FIELDS, DESC_FLAGS, DESC_BITS, DESC_SIGNED,
                                  CORE_ERRORS, RES_MAX_SHIFT, res_shift_range, pool_shift_range,
                                  WINDOW_FLAGS, TAP_FLAG, SETUP_STEPS as STEPS)


__all__ = ["LayerSetup", "desc_layout", "sizes_layout", "shape_layout", "STEPS", "error_code",
           "window_flags", "reuse_flags", "REUSE_FLAG_BITS"]


def error_code(name):
    """``ERROR.core_code`` of the error ``name``."""
    return {n: c for c, n, _ in CORE_ERRORS}[name]


def window_flags(flags):
    """The descriptor ``flags``' window bits ``(win_max, win_sum, depthwise)`` as one value
    (bit 0 ``win_max``); the bits are contiguous (:data:`WINDOW_FLAGS`)."""
    lo = DESC_FLAGS[WINDOW_FLAGS[0]]
    assert [DESC_FLAGS[n] for n in WINDOW_FLAGS] == list(range(lo, lo + len(WINDOW_FLAGS)))
    return flags[lo:lo + len(WINDOW_FLAGS)]


#: Bits of :func:`reuse_flags`.
REUSE_FLAG_BITS = len(WINDOW_FLAGS) + 1


def reuse_flags(flags):
    """What kind of run loaded the weights, as REUSE compares it: the window bits
    (:func:`window_flags`) and, above them, ``flags.taps`` (the bit after ``depthwise``)."""
    lo = DESC_FLAGS[WINDOW_FLAGS[0]]
    assert DESC_FLAGS[TAP_FLAG] == lo + len(WINDOW_FLAGS)
    return flags[lo:lo + REUSE_FLAG_BITS]


def desc_layout():
    """The descriptor vector as a struct; its fields are contiguous from bit 0, those of
    ``DESC_SIGNED`` signed."""
    fields, pos = {}, 0
    for word, lo, width, name in DESC_FIELDS:
        assert word * 32 + lo == pos
        fields[name] = signed(width) if name in DESC_SIGNED else unsigned(width)
        pos += width
    assert pos == DESC_BITS
    return data.StructLayout(fields)


#: Width of every derived size (products of a 32-bit and a 16-bit operand).
SIZE_BITS = 48

#: The derived sizes, as ``name: meaning``.
SIZES = {
    "kk": "kernel_h * kernel_w",
    "k": "kernel_h * kernel_w * in_c, the reduction length",
    "ct": "channel tiles, ceil(in_c / rows)",
    "nt": "output tiles, ceil(out_c / cols)",
    "kt": "reduction tiles, kk * ct",
    "nkt": "weight tiles, nt * kt",
    "wrows": "weight rows: nkt * rows (a convolution), nkk (depthwise), 0 (max, sum)",
    "row": "feature-map vectors per input row, in_w * ct",
    "acts": "feature-map vectors, in_h * row",
    "sct": "address step per output column, stride_w * ct",
    "srow": "address step per output row, stride_h * row",
    "m": "output pixels, out_h * out_w",
    "eh": "(out_h - 1) * stride_h",
    "ew": "(out_w - 1) * stride_w",
    "nts": "shortcut tiles, ceil(short_c / cols)",
    "sh": "rows of the shortcut's map, out_h * short_stride",
    "sw": "columns of the shortcut's map, out_w * short_stride",
    "sm": "pixels of the shortcut's map, sh * sw",
    "scv": "SHORTCUT vectors the host sends, sm * nts",
    "dcv": "aligned shortcut vectors the buffer holds, m * nt",
    "nkk": "a window run's passes per block, kk * nt (a depthwise run's weight rows)",
    "ntr": "a taps run's weight rows, nt * rows",
}


def sizes_layout():
    return data.StructLayout({name: unsigned(SIZE_BITS) for name in SIZES})


def shape_layout():
    """The shape of the tensor a feature-map bank holds: channels ``c``, rows ``h``, columns
    ``w`` (a linear layer's map is ``(in_c, 1, images)``)."""
    return data.StructLayout({"c": unsigned(16), "h": unsigned(16), "w": unsigned(16)})


_B_BITS = 16


class LayerSetup(wiring.Component):
    """Checks a descriptor and computes its :data:`SIZES`.

    Attributes
    ----------
    start : In(1)
        Pulse: ``desc`` holds a new descriptor.
    desc : In(desc_layout())
    reuse_rows, reuse_channels, reuse_tiles, reuse_engine, reuse_window : In(...)
        The weight rows, ``out_c``, shift-table vectors (0 without shift), engine and window
        and taps flags (:func:`reuse_flags`) of the previous run; ``reuse_valid`` says they
        may be reused.
    bank_valid, bank_shape_0, bank_shape_1 : In
        The feature-map banks' state (interface 2.2, kept by the shell): bit ``k`` of
        ``bank_valid`` says bank ``k`` holds a tensor, of shape ``bank_shape_k``.
    done : Out(1)
        Pulse: ``sizes`` and ``error`` are valid (``error`` 0: the layer may run).
    """

    def __init__(self, cfg: CoreConfig):
        self._cfg = cfg
        super().__init__({
            "start": In(1),
            "desc": In(desc_layout()),
            "reuse_valid": In(1),
            "reuse_rows": In(SIZE_BITS),
            "reuse_channels": In(16),
            "reuse_tiles": In(SIZE_BITS),
            "reuse_engine": In(4),
            "reuse_window": In(REUSE_FLAG_BITS),
            "bank_valid": In(2),
            "bank_shape_0": In(shape_layout()),
            "bank_shape_1": In(shape_layout()),
            "done": Out(1),
            "error": Out(8),
            "sizes": Out(sizes_layout()),
        })

    def elaborate(self, platform):
        e = self._cfg.engine
        m = Module()
        d, sz = self.desc, self.sizes
        flags = d.flags
        shift, reuse = flags[DESC_FLAGS["shift"]], flags[DESC_FLAGS["reuse_weights"]]

        def operand(name, stored=None):
            """Operand ``name``; ``stored``: ``(size, value)`` being stored this cycle."""
            if name == "R":
                return Const(e.rows, 16)
            if name == "C":
                return Const(e.cols, 16)
            if name.endswith("+R-1"):
                return operand(name[:-4], stored) + (e.rows - 1)
            if name.endswith("+C-1"):
                return operand(name[:-4], stored) + (e.cols - 1)
            if name.endswith("-1"):
                return operand(name[:-2], stored) - 1
            if name in SIZES:
                return stored[1] if stored and stored[0] == name else getattr(sz, name)
            return getattr(d, name)

        def divisor(i):
            return {"R": e.rows, "C": e.cols}[STEPS[i][3]]

        # The sequential unit: mul accumulates a << i for every set bit i of b (LSB first);
        # div is restoring division of a (< 2^17) by b, MSB first, quotient in acc. The
        # operands are registers, loaded in the STORE before their step (the size stored in
        # that cycle forwarded) and shifted as the step runs: no multiplexer over the steps
        # and no barrel shifter before the adder (timing). Step 0's come from the descriptor,
        # registered in the cycle after start, so its first cycle reads them directly.
        assert all(n not in SIZES for n in STEPS[0][2:]), "step 0 reads the descriptor only"
        step = Signal(range(len(STEPS) + 1))
        bit = Signal(range(_B_BITS + 1))
        acc = Signal(SIZE_BITS)
        rem = Signal(18)
        a_reg, b_reg = Signal(SIZE_BITS), Signal(_B_BITS)
        loaded = Signal()               # a_reg/b_reg hold the step's operands
        a_val, b_val = Signal(SIZE_BITS), Signal(_B_BITS)   # a << bit, b >> bit
        m.d.comb += [a_val.eq(Mux(loaded, a_reg, operand(STEPS[0][2]))),
                     b_val.eq(Mux(loaded, b_reg, operand(STEPS[0][3])))]

        # The checks are registered (timing: they feed every unit's start): evaluated in the
        # last STORE, with the size that cycle stores (a taps run's wrows) as it will be,
        # and read in CHECK, the cycle after. Descriptor, reuse and bank inputs are static.
        last_store = Signal()
        taps_flag = d.flags[DESC_FLAGS[TAP_FLAG]]
        szc = Signal(sizes_layout())
        m.d.comb += [szc.eq(sz),
                     szc.wrows.eq(Mux(last_store & window_flags(d.flags)[2] & taps_flag, acc,
                                      sz.wrows))]
        errors = self._checks(m, d, szc, shift, reuse)
        first = Const(0, 8)
        for name, cond in reversed(errors):     # the first failing check wins
            first = Mux(cond, error_code(name), first)
        error_q = Signal(8)
        m.d.sync += error_q.eq(first)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [step.eq(0), bit.eq(0), acc.eq(0), rem.eq(0), loaded.eq(0)]
                    m.next = "RUN"
            with m.State("RUN"):
                m.d.sync += loaded.eq(1)
                with m.Switch(step):
                    for i, (result, op, _, _) in enumerate(STEPS):
                        with m.Case(i):
                            if op == "mul":
                                # Done after b's highest set bit: most operands are small.
                                with m.If(b_val[0]):
                                    m.d.sync += acc.eq(acc + a_val)
                                m.d.sync += [a_reg.eq(a_val << 1), b_reg.eq(b_val >> 1)]
                                done = (bit == _B_BITS - 1) | (b_val <= 1)
                            elif divisor(i) & (divisor(i) - 1) == 0:
                                # A power-of-two divisor is a shift.
                                m.d.sync += acc.eq(a_val >> (divisor(i).bit_length() - 1))
                                done = 1
                            else:
                                # Shift the next numerator bit (MSB first) into the remainder.
                                nbits = 17
                                r = Cat(a_val[nbits - 1], rem)
                                m.d.sync += a_reg.eq(a_val << 1)
                                with m.If(r >= b_val):
                                    m.d.sync += [rem.eq(r - b_val), acc.eq((acc << 1) | 1)]
                                with m.Else():
                                    m.d.sync += [rem.eq(r), acc.eq(acc << 1)]
                                done = bit == nbits - 1
                            with m.If(done):
                                m.next = "STORE"
                            with m.Else():
                                m.d.sync += bit.eq(bit + 1)
            with m.State("STORE"):
                win = window_flags(d.flags)
                taps = d.flags[DESC_FLAGS[TAP_FLAG]]
                with m.Switch(step):
                    for i, (result, _, _, _) in enumerate(STEPS):
                        with m.Case(i):
                            m.d.sync += getattr(sz, result).eq(acc)
                            if i + 1 < len(STEPS):
                                a, b = STEPS[i + 1][2:]
                                m.d.sync += [a_reg.eq(operand(a, (result, acc))),
                                             b_reg.eq(operand(b, (result, acc)))]
                            # A window run's weight rows: nkk (depthwise), 0 (max, sum), ntr
                            # (a taps run, a later step); a convolution keeps nkt * rows.
                            if result == "nkk":
                                with m.If(win[2]):
                                    m.d.sync += sz.wrows.eq(acc)
                                with m.Elif(win[0] | win[1]):
                                    m.d.sync += sz.wrows.eq(0)
                            if result == "ntr":
                                with m.If(win[2] & taps):
                                    m.d.sync += sz.wrows.eq(acc)
                m.d.sync += [step.eq(step + 1), bit.eq(0), acc.eq(0), rem.eq(0)]
                with m.If(step == len(STEPS) - 1):
                    m.d.comb += last_store.eq(1)
                    m.next = "CHECK"
                with m.Else():
                    m.next = "RUN"
            with m.State("CHECK"):
                m.d.comb += [self.done.eq(1), self.error.eq(error_q)]
                m.next = "IDLE"
        return m

    def _checks(self, m, d, sz, shift, reuse):
        """``[(error name, condition)]``, the first true one being reported: DESCRIPTOR, then
        ENGINE (``engine >= len(cfg.engines)``), WINDOW (a window flag without the lane
        unit), RESIDENT (:meth:`_chain_checks`), TOO_BIG, REUSE."""
        cfg = self._cfg
        reserved_flags = d.flags & ~sum(1 << b for b in DESC_FLAGS.values())
        zero = [d.in_h == 0, d.in_w == 0, d.in_c == 0, d.out_c == 0, d.out_h == 0,
                d.out_w == 0, d.kernel_h == 0, d.kernel_w == 0, d.stride_h == 0,
                d.stride_w == 0, d.m_block == 0]
        span_h = d.in_h + 2 * d.pad_h           # the padded map
        span_w = d.in_w + 2 * d.pad_w
        bad = (Cat(*zero).any() | (reserved_flags != 0)
               | (d.pad_h >= d.kernel_h) | (d.pad_w >= d.kernel_w)
               # out = (span - kernel) div stride + 1  <=>  eh + kernel <= span < eh + s + k
               | (sz.eh + d.kernel_h > span_h) | (sz.eh + d.stride_h + d.kernel_h <= span_h)
               | (sz.ew + d.kernel_w > span_w) | (sz.ew + d.stride_w + d.kernel_w <= span_w))
        bad = bad | self._tail_checks(d)
        pool_bad, pool_big = self._pool_checks(d, sz)
        win = window_flags(d.flags)
        windowed = win.any()
        bad = bad | pool_bad | self._shortcut_checks(d) | self._window_checks(d, win)
        taps_bad, taps_window, taps_big, taps_run = self._tap_checks(d, sz)
        bad = bad | taps_bad
        residual = d.flags[DESC_FLAGS["residual"]]
        # K: the reduction of one output, kk for a window run (one channel's window). A taps
        # run takes no partial sums: no m_block limit.
        too_big = ((Mux(windowed, sz.kk, sz.k) > cfg.engine.max_k)
                   | (d.out_c > cfg.max_channels)
                   | (shift & (d.in_c > cfg.max_channels))
                   | (~taps_run & (d.m_block > cfg.acc_entries)) | taps_big
                   | (sz.acts > cfg.fmap_vectors) | (sz.wrows > cfg.weight_rows)
                   | (residual & (sz.dcv > cfg.shortcut_vectors)) | pool_big
                   # sm = sh * sw takes sw as the 16-bit operand of the multiplier.
                   | (sz.sw >= 1 << _B_BITS) | self._chain_big(d, sz))
        tiles = Mux(shift, sz.ct, 0)
        bad_reuse = reuse & (~self.reuse_valid | (self.reuse_rows != sz.wrows)
                             | (self.reuse_channels != d.out_c) | (self.reuse_tiles != tiles)
                             | (self.reuse_engine != d.engine)
                             | (self.reuse_window != reuse_flags(d.flags)))
        bad_engine = d.engine >= len(cfg.engines)
        bad_window = (windowed if not cfg.window_ops else Const(0)) | taps_window
        return [("DESCRIPTOR", bad), ("ENGINE", bad_engine), ("WINDOW", bad_window),
                ("RESIDENT", self._chain_checks(d, sz)), ("TOO_BIG", too_big),
                ("REUSE", bad_reuse)]

    def _tap_checks(self, d, sz):
        """A taps run's rules: ``(DESCRIPTOR, WINDOW, TOO_BIG, taps run)`` conditions.
        DESCRIPTOR: ``flags.taps`` without ``depthwise``, or with ``residual`` or
        ``global_pool``, ``m_block != out_h*out_w``, and (on a core with a tap window)
        ``kernel_h`` or ``kernel_w`` beyond its side; WINDOW: ``flags.taps`` on a core
        without a tap window or on an engine not in ``cfg.tap_engines``; TOO_BIG: the padded
        line ``ew + kernel_w`` beyond ``tap_line``."""
        cfg = self._cfg
        flag = {name: d.flags[bit] for name, bit in DESC_FLAGS.items()}
        taps = flag[TAP_FLAG]
        run = taps & flag["depthwise"]
        bad = taps & (~flag["depthwise"] | flag["residual"] | flag["global_pool"]
                      | (d.m_block != sz.m))
        if not cfg.taps:
            return bad, taps, Const(0), run
        bad = bad | (taps & ((d.kernel_h > cfg.tap_side) | (d.kernel_w > cfg.tap_side)))
        engine_ok = Cat(d.engine == k for k in cfg.tap_engines).any()
        return bad, taps & ~engine_ok, run & (sz.ew + d.kernel_w > cfg.tap_line), run

    def _window_checks(self, d, win):
        """A window run's descriptor rules (error DESCRIPTOR): at most one window flag; with
        one, ``in_c == out_c`` and no ``flags.shift``; ``win_max`` and ``win_sum`` (no
        weights) without ``reuse_weights``; ``win_max`` with ``2*pad <= kernel`` in both
        dimensions (every window holds a pixel of the map)."""
        flag = {name: d.flags[bit] for name, bit in DESC_FLAGS.items()}
        several = (win[0] & win[1]) | (win[0] & win[2]) | (win[1] & win[2])
        pad_out = (d.pad_h << 1 > d.kernel_h) | (d.pad_w << 1 > d.kernel_w)
        return (several | (win.any() & ((d.in_c != d.out_c) | flag["shift"]))
                | ((win[0] | win[1]) & flag["reuse_weights"]) | (win[0] & pad_out))

    def _chain_checks(self, d, sz):
        """Layer chaining's flags against the banks' state (error RESIDENT): any of
        ``in_bank``, ``keep``, ``acts_resident``, ``short_resident`` on a one-bank core;
        ``acts_resident`` but bank ``in_bank`` not valid or not ``(in_c, in_h, in_w)``;
        ``short_resident`` without ``residual``, or the other bank not valid or not
        ``(short_c, out_h*short_stride, out_w*short_stride)``; ``quiet`` without ``keep``."""
        flag = {name: d.flags[bit] for name, bit in DESC_FLAGS.items()}
        if self._cfg.fmap_banks == 1:
            one_bank = (flag["in_bank"] | flag["keep"] | flag["acts_resident"]
                        | flag["short_resident"])
        else:
            one_bank = Const(0)
        b = flag["in_bank"]
        mine = Mux(b, self.bank_shape_1.as_value(), self.bank_shape_0.as_value())
        other = Mux(b, self.bank_shape_0.as_value(), self.bank_shape_1.as_value())
        mine, other = shape_layout()(mine), shape_layout()(other)
        bad_acts = flag["acts_resident"] & (
            ~self.bank_valid.bit_select(b, 1) | (mine.c != d.in_c) | (mine.h != d.in_h)
            | (mine.w != d.in_w))
        bad_short = flag["short_resident"] & (
            ~flag["residual"] | ~self.bank_valid.bit_select(~b, 1) | (other.c != d.short_c)
            | (other.h != sz.sh) | (other.w != sz.sw))
        return one_bank | bad_acts | bad_short | (flag["quiet"] & ~flag["keep"])

    def _chain_big(self, d, sz):
        """Layer chaining's sizes (error TOO_BIG): a resident shortcut of ``SH*SW*NTS``
        vectors, or kept results (``M*NT``, ``NT`` with a global pool), beyond
        ``fmap_vectors``."""
        n = self._cfg.fmap_vectors
        flag = {name: d.flags[bit] for name, bit in DESC_FLAGS.items()}
        results = Mux(flag["global_pool"], sz.nt, sz.dcv)
        return ((flag["short_resident"] & (sz.scv > n)) | (flag["keep"] & (results > n)))

    def _tail_checks(self, d):
        """The fused tail's fields (error DESCRIPTOR): with ``flags.clamp``,
        ``act_lo <= clamp_lo <= clamp_hi <= act_hi``, else both 0; with ``flags.residual``, the
        add's shifts in ``0..RES_MAX_SHIFT`` and ``res_shift`` in ``res_shift_range``, else the
        three 0 and ``flags.res_relu`` 0."""
        e = self._cfg.engine
        flag = {name: d.flags[bit] for name, bit in DESC_FLAGS.items()}
        a_lo, a_hi = e.act_range
        c_lo, c_hi = d.clamp_lo, d.clamp_hi
        bad_clamp = Mux(flag["clamp"], (c_lo < a_lo) | (c_hi > a_hi) | (c_lo > c_hi),
                        (c_lo != 0) | (c_hi != 0))
        s_lo, s_hi = res_shift_range(e.act_bits)
        bad_res = Mux(flag["residual"],
                      (d.res_main_shift > RES_MAX_SHIFT) | (d.res_short_shift > RES_MAX_SHIFT)
                      | (d.res_shift < s_lo) | (d.res_shift > s_hi),
                      (d.res_main_shift != 0) | (d.res_short_shift != 0) | (d.res_shift != 0)
                      | flag["res_relu"])
        return bad_clamp | bad_res

    def _pool_checks(self, d, sz):
        """The global pool's fields: ``(DESCRIPTOR, TOO_BIG)`` conditions. With
        ``flags.global_pool``, ``pool_shift`` in ``pool_shift_range`` and the map ``m =
        out_h * out_w`` at most ``pool_pixels`` (always TOO_BIG without a pool unit); without
        the flag ``pool_shift`` 0."""
        cfg = self._cfg
        pool = d.flags[DESC_FLAGS["global_pool"]]
        p_lo, p_hi = pool_shift_range(cfg.engine.act_bits, cfg.pool_pixels)
        bad = Mux(pool, (d.pool_shift < p_lo) | (d.pool_shift > p_hi), d.pool_shift != 0)
        return bad, pool & (sz.m > cfg.pool_pixels)

    def _shortcut_checks(self, d):
        """The shortcut's source fields (error DESCRIPTOR): with ``flags.residual``,
        ``short_c >= 1``, ``short_stride >= 1`` and ``short_off + short_c <= out_c``; without
        it ``short_c``, ``short_off`` and ``short_stride`` all 0."""
        residual = d.flags[DESC_FLAGS["residual"]]
        return Mux(residual,
                   (d.short_c == 0) | (d.short_stride == 0) | (d.short_off + d.short_c > d.out_c),
                   (d.short_c != 0) | (d.short_off != 0) | (d.short_stride != 0))
