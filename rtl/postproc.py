"""Post-processing: accumulators in, the next layer's saturated activations out.

For every lane ``l`` of a beat whose channels are ``[group*lanes, (group+1)*lanes)``, with the
parameters ``bias, shift, relu`` of channel ``c = group*lanes + l``::

    y   = acc[l] + bias                     (acc_width + 1 bits)
    v   = shift >= 0 ? (y >> shift) + y[shift-1]        round half up (y[-1] := 0)
                     : clamp(y, -2^a, 2^a) << -shift    exact; the clamp changes no output
    v   = clamp(relu ? max(v, 0) : v, act_range)

exactly :func:`mulfree.params.layer_golden.postprocess` (``docs/numerics.md``, "Post-processing
and layers"), then the fused tail of :func:`mulfree.params.layer_golden.fused_tail` with the
layer's settings (``tail``) and the beat's shortcut lanes ``s``::

    if residual:  y2 = (v << main_shift) + (s[l] << short_shift)       (a + 16 bits, exact)
                  v  = clamp(relu? (round_shift(y2, res_shift)), act_range)   as above
    if clamp:     v  = min(max(v, clamp_lo), clamp_hi)

No multiplier: an adder for the bias, shifters that keep only the ``a + 1`` bits the result
needs (``q``'s low bits above the rounding bit) and a flag for a ``q`` out of range
(:func:`rounding_window`), incrementers, comparators and multiplexers. The clamp costs no
comparator of its own: it replaces the saturation's bounds (``[clamp_lo, clamp_hi]`` lies in
``act_range``, so saturating and then clamping is clamping).

Parameters live in a per-channel table (one memory word per group of ``lanes`` channels, one
write-enable per lane), written one channel per beat on the ``p`` stream. The layer controller
emits its output vectors for channels ``[n0, n0 + lanes)`` and sends ``group = n0 / lanes``
with each beat, and, with a shortcut buffer, the address of the beat's shortcut vector: the
unit reads it through ``s_addr``/``s_en``/``s_data`` (a synchronous read port) two stages
later, beside the beat's window, and keeps it one more stage, beside the beat's ``v``.

Pipeline (stall-all, like the PE array): input register + table read, bias add (and the
shift's window amount), the shift's window, round / ReLU / saturation (and the clamp) into the
output register: latency 4. With a shortcut buffer (``shortcut_vectors > 0``) three more
stages follow the saturation: the residual sum, its window, then its round / ReLU / saturation
and the clamp: latency 7. One vector per cycle.
"""

from amaranth.hdl import Signal, Module, Cat, Const, Mux, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..params.config import ArrayConfig, ConfigError, signed_width
from ..params.core_config import RES_MAX_SHIFT, res_shift_range, res_sum_width
from ..params.post_config import check_post_config, shift_range, shift_width, sum_width


__all__ = ["PostProcess", "param_layout", "acc_layout", "act_layout", "tail_layout",
           "shortcut_addr_bits", "clip", "window_amount", "rounding_window",
           "window_value"]


def param_layout(cfg: ArrayConfig, lanes, groups):
    """One table write: channel ``group*lanes + lane`` gets ``bias``, ``shift``, ``relu``."""
    return data.StructLayout({
        "group": unsigned(max(1, (groups - 1).bit_length())),
        "lane": unsigned(max(1, (lanes - 1).bit_length())),
        "bias": signed(cfg.acc_width),
        "shift": signed(shift_width(cfg)),
        "relu": unsigned(1),
    })


def shortcut_addr_bits(shortcut_vectors):
    """Bits of an address of a shortcut buffer of ``shortcut_vectors`` vectors."""
    return max(1, (shortcut_vectors - 1).bit_length())


def acc_layout(cfg: ArrayConfig, lanes, groups, shortcut_vectors=0):
    """Input beat: ``lanes`` accumulators (flat), their channel group, lanes to output as 0
    (``zero``: channels beyond a layer's last), ``last``, and with a shortcut buffer the
    address of the beat's shortcut vector (``short_addr``)."""
    fields = {
        "data": unsigned(lanes * cfg.acc_width),
        "group": unsigned(max(1, (groups - 1).bit_length())),
        "zero": unsigned(lanes),
        "last": unsigned(1),
    }
    if shortcut_vectors:
        fields["short_addr"] = unsigned(shortcut_addr_bits(shortcut_vectors))
    return data.StructLayout(fields)


def act_layout(cfg: ArrayConfig, lanes, groups=None):
    """Output beat: ``lanes`` activations of ``act_bits`` (flat) and ``last``; with ``groups``
    also the beat's channel ``group`` (post-processing's output, read by the global pool)."""
    fields = {"data": unsigned(lanes * cfg.act_bits), "last": unsigned(1)}
    if groups is not None:
        fields["group"] = unsigned(max(1, (groups - 1).bit_length()))
    return data.StructLayout(fields)


def tail_layout(cfg: ArrayConfig):
    """A layer's fused tail (the descriptor's ``flags.residual``, ``flags.res_relu``,
    ``flags.clamp`` and its ``clamp_*``, ``res_*`` fields): ``clamp_lo``, ``clamp_hi`` signed
    ``act_bits``, the add's left shifts ``0..RES_MAX_SHIFT``, ``res_shift`` signed in
    ``res_shift_range``. Fields without their flag are ignored."""
    a = cfg.act_bits
    return data.StructLayout({
        "residual": unsigned(1),
        "res_relu": unsigned(1),
        "clamp": unsigned(1),
        "clamp_lo": signed(a),
        "clamp_hi": signed(a),
        "main_shift": unsigned(RES_MAX_SHIFT.bit_length()),
        "short_shift": unsigned(RES_MAX_SHIFT.bit_length()),
        "res_shift": signed(signed_width(*res_shift_range(a))),
    })


def clip(v, lo, hi, empty=0):
    """``min(max(v, lo), hi)``; ``empty``: ``lo > hi``, whose answer is ``hi``."""
    return Mux(empty | (v > hi), hi, Mux(v < lo, lo, v))


def window_amount(shift, a, top):
    """The amount :func:`rounding_window` takes for a signed ``shift`` in ``[-a, top]``:
    ``shift + a``, unsigned, ``(top + a).bit_length()`` bits (a small adder, meant to be
    computed a stage ahead of the window)."""
    return (shift + a)[:max(1, (top + a).bit_length())]


def rounding_window(y, amount, a):
    """What :func:`window_value` needs of ``round_shift(y, amount - a)`` (half up), without
    shifting all of ``y``: ``(window, over, sign)``.

    With ``q = floor(y * 2^(a - amount))`` (exact for a left shift): ``window`` (``a + 1``
    bits) is ``q``'s low ``a`` bits above the rounding bit ``y[amount - a - 1]`` (0 for a
    left shift or none), ``over`` is 1 when ``q`` leaves ``[-2^a, 2^a - 1]`` (a bit of ``y``
    at or above ``amount`` differs from its sign), ``sign`` is ``y``'s sign. One right shifter
    of ``{y, 0^(a+1)}`` by ``amount``, largest step first so that each step keeps only the bits
    the later ones can still reach; a step not taken ORs the bits it leaves above the window
    into ``over``. No left shifter, no clamp, no full-width result.
    """
    y = y.as_signed()
    sign = y[-1]
    width = a + 1
    e = Cat(Const(0, a + 1), y)                 # e[k] = y[k - a - 1], 0 below
    steps = len(amount)
    span = width + (1 << steps) - 1
    bits = [e[k] if k < len(e) else sign for k in range(span)]
    over = Const(0, 1)
    for k in range(span, len(e)):               # beyond any amount's reach
        over = over | (e[k] ^ sign)
    for k in reversed(range(steps)):
        step, take = 1 << k, amount[k]
        keep = width + step - 1
        left = Const(0, 1)
        for bit in bits[keep:]:
            left = left | (bit ^ sign)
        over = over | (~take & left)
        bits = [Mux(take, bits[i + step], bits[i]) for i in range(keep)]
    return Cat(bits), over, sign


def window_value(window, over, sign, a):
    """``clamp(round_shift(y, shift), -2^a, 2^a)`` (``a + 2`` bits, signed) from
    :func:`rounding_window`'s ``(window, over, sign)``: ``q + rounding bit``, or the bound on
    ``y``'s side when ``q`` is out of range. Saturating it (after ReLU or not) to any bounds
    inside ``act_range`` gives what saturating ``round_shift(y, shift)`` gives."""
    q = Cat(window[1:], sign).as_signed()
    return Mux(over, Mux(sign, -(1 << a), 1 << a), q + window[0])


class PostProcess(wiring.Component):
    """Bias, rounding shift, ReLU, saturation, residual add and clamp of ``lanes``
    accumulators per cycle.

    Parameters
    ----------
    cfg : ArrayConfig
        Sets ``acc_width`` (input), ``act_bits`` (output) and the parameter ranges.
    lanes : int, optional
        Accumulators per beat; ``cfg.cols`` by default.
    channels : int, optional
        Channels the parameter table holds; rounded up to a multiple of ``lanes``.
        ``4 * lanes`` by default.
    shortcut_vectors : int, optional
        Depth of the shortcut buffer the unit reads (``s_addr``); 0 (the default) builds no
        residual datapath (``tail.residual`` is then ignored).

    Attributes
    ----------
    p : In(stream.Signature(param_layout(...)))
        Table writes, always ready. A write takes effect for beats read from the table in the
        same cycle or later.
    i : In(stream.Signature(acc_layout(...)))
        Accumulator vectors, lane ``l`` in bits ``[l*acc_width, (l+1)*acc_width)``.
    tail : In(tail_layout(cfg))
        The layer's fused tail; stable from the cycle a beat is accepted until it leaves
        (static during a run).
    o : Out(stream.Signature(act_layout(..., groups)))
        Activation vectors in input order, ``last`` and ``group`` copied; lanes flagged
        ``zero`` are 0.
    s_addr, s_en : Out
        With a shortcut buffer: a synchronous read of the beat's ``short_addr``, ``s_en`` high
        in the cycles the read port may load (the pipeline advances).
    s_data : In(lanes * act_bits)
        The read's data, in the cycle after ``s_en``; held while ``s_en`` is low. Lane ``l``
        in bits ``[l*act_bits, (l+1)*act_bits)``, signed.
    stage_v, stage_sum : Signal
        With a shortcut buffer, read-only views of the pipeline: the register of stage 4's
        saturated lanes (``act_bits`` each) and of stage 5's residual sums divided by
        ``2^min(main_shift, short_shift)`` (``act_bits + RES_MAX_SHIFT + 1`` each, signed),
        for proofs that check one stage at a time.
    """

    #: Cycles from a beat accepted to its result on ``o`` without a shortcut buffer, and with.
    LATENCY = 4
    RESIDUAL_LATENCY = 7

    def __init__(self, cfg: ArrayConfig, *, lanes=None, channels=None, shortcut_vectors=0):
        try:
            lanes, channels = self._check(cfg, lanes, channels, shortcut_vectors)
        except ConfigError:
            self._MustUse__silence = True       # refused: no "created but never used" warning
            raise
        self._cfg = cfg
        self._lanes = lanes
        self._groups = -(-channels // lanes)
        self._shortcut_vectors = shortcut_vectors
        members = {
            "p": In(stream.Signature(param_layout(cfg, lanes, self._groups))),
            "i": In(stream.Signature(acc_layout(cfg, lanes, self._groups, shortcut_vectors))),
            "tail": In(tail_layout(cfg)),
            "o": Out(stream.Signature(act_layout(cfg, lanes, self._groups))),
        }
        if shortcut_vectors:
            members.update({"s_addr": Out(shortcut_addr_bits(shortcut_vectors)),
                            "s_en": Out(1), "s_data": In(lanes * cfg.act_bits)})
        super().__init__(members)
        if shortcut_vectors:
            # Observation points of the residual stages (the formal proofs read them).
            a = cfg.act_bits
            self.stage_v = Signal(lanes * a, name="v", reset_less=True)
            self.stage_sum = Signal(lanes * res_sum_width(a), name="res_sum")

    @staticmethod
    def _check(cfg, lanes, channels, shortcut_vectors):
        check_post_config(cfg)
        lanes = cfg.cols if lanes is None else lanes
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise ConfigError("lanes", f"lanes must be a positive integer, not {lanes!r}")
        channels = 4 * lanes if channels is None else channels
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ConfigError("channels", f"channels must be a positive integer, "
                                          f"not {channels!r}")
        if (isinstance(shortcut_vectors, bool) or not isinstance(shortcut_vectors, int)
                or shortcut_vectors < 0):
            raise ConfigError("shortcut_vectors", f"shortcut_vectors must be a non-negative "
                                                  f"integer, not {shortcut_vectors!r}")
        return lanes, channels

    @property
    def cfg(self):
        return self._cfg

    @property
    def lanes(self):
        return self._lanes

    @property
    def groups(self):
        """Words of the parameter table: ``channels`` rounded up, divided by ``lanes``."""
        return self._groups

    @property
    def channels(self):
        return self._groups * self._lanes

    @property
    def shortcut_vectors(self):
        return self._shortcut_vectors

    @property
    def latency(self):
        """:attr:`LATENCY`, or :attr:`RESIDUAL_LATENCY` with a shortcut buffer."""
        return self.RESIDUAL_LATENCY if self._shortcut_vectors else self.LATENCY

    def elaborate(self, platform):
        cfg, lanes = self._cfg, self._lanes
        acc, a, sw, yw = cfg.acc_width, cfg.act_bits, shift_width(cfg), sum_width(cfg)
        entry = acc + sw + 1                    # {relu, shift, bias}, bias in the low bits
        lo, hi = cfg.act_range
        res = self._shortcut_vectors > 0
        n = self.latency
        m = Module()

        # Parameter table: one word per channel group, one write enable per lane.
        m.submodules.table = table = Memory(shape=unsigned(lanes * entry), depth=self._groups,
                                            init=[])
        wr = table.write_port(granularity=entry)
        rd = table.read_port(transparent_for=(wr,))
        p = self.p.payload
        m.d.comb += [
            self.p.ready.eq(1),
            wr.addr.eq(p.group),
            wr.data.eq(Cat(p.bias, p.shift, p.relu).replicate(lanes)),
        ]
        for lane in range(lanes):
            m.d.comb += wr.en[lane].eq(self.p.valid & (p.lane == lane))

        # The tail's settings, registered (static during a run: a beat accepted in a cycle
        # reaches them two cycles later at the earliest). Without the clamp its bounds are the
        # activation range.
        t = self.tail
        c_lo = Signal(signed(a), name="clamp_lo_q", reset_less=True)
        c_hi = Signal(signed(a), name="clamp_hi_q", reset_less=True)
        c_empty = Signal(name="clamp_empty_q", reset_less=True)
        m.d.sync += [c_lo.eq(Mux(t.clamp, t.clamp_lo, lo)), c_hi.eq(Mux(t.clamp, t.clamp_hi, hi)),
                     c_empty.eq(t.clamp & (t.clamp_lo > t.clamp_hi))]

        # Pipeline control: every register advances when the output register is free.
        advance = Signal()
        valid = [Signal(name=f"valid_{s}") for s in range(n)]
        last = [Signal(name=f"last_{s}", reset_less=True) for s in range(n)]
        zero = [Signal(lanes, name=f"zero_{s}", reset_less=True) for s in range(n - 1)]
        group = [Signal.like(self.i.payload.group, name=f"group_{s}", reset_less=True)
                 for s in range(n)]
        m.d.comb += [
            advance.eq(self.o.ready | ~self.o.valid),
            self.i.ready.eq(advance),
            rd.addr.eq(self.i.payload.group),
            rd.en.eq(advance),
        ]
        with m.If(advance):
            m.d.sync += [valid[0].eq(self.i.valid), last[0].eq(self.i.payload.last),
                         zero[0].eq(self.i.payload.zero), group[0].eq(self.i.payload.group)]
            m.d.sync += [group[s].eq(group[s - 1]) for s in range(1, n)]
            m.d.sync += [valid[s].eq(valid[s - 1]) for s in range(1, n)]
            m.d.sync += [last[s].eq(last[s - 1]) for s in range(1, n)]
            m.d.sync += [zero[s].eq(zero[s - 1]) for s in range(1, n - 1)]

        # Stage 1: the accumulators, alongside the table word read for their group.
        acc1 = Signal(lanes * acc, reset_less=True)
        with m.If(advance):
            m.d.sync += acc1.eq(self.i.payload.data)

        # The shortcut's address travels to stage 2; its read lands beside stage 3's window
        # and is registered beside stage 4's v (the read's timing, which the core's aligner
        # follows, is the interface's: two registers and the read port).
        if res:
            ab = shortcut_addr_bits(self._shortcut_vectors)
            addr = [Signal(ab, name=f"short_addr_{s}", reset_less=True) for s in range(2)]
            with m.If(advance):
                m.d.sync += [addr[0].eq(self.i.payload.short_addr), addr[1].eq(addr[0])]
            m.d.comb += [self.s_addr.eq(addr[1]), self.s_en.eq(advance)]

        results = []
        _, top = shift_range(cfg)
        for lane in range(lanes):
            word = rd.data[lane * entry:(lane + 1) * entry]
            bias, shift, relu = word[:acc].as_signed(), word[acc:acc + sw].as_signed(), word[-1]

            # Stage 2: y = acc + bias, and the window's shift amount.
            y = Signal(signed(yw), name=f"y_{lane}", reset_less=True)
            amount = window_amount(shift, a, top)
            amount2 = Signal(len(amount), name=f"amount_{lane}", reset_less=True)
            relu2 = Signal(name=f"relu_{lane}", reset_less=True)
            with m.If(advance):
                m.d.sync += [
                    y.eq(acc1[lane * acc:(lane + 1) * acc].as_signed() + bias),
                    amount2.eq(amount), relu2.eq(relu),
                ]

            # Stage 3: the shift, down to the bits the result needs and an out-of-range flag.
            window, over, sign = self._window(m, f"{lane}", y, amount2, advance)
            relu3 = Signal(name=f"relu3_{lane}", reset_less=True)
            with m.If(advance):
                m.d.sync += relu3.eq(relu2)

            # Stage 4 (into its register): round, ReLU, saturation (v < 0 iff sign, or v = 0).
            v = window_value(window, over, sign, a)
            v = Mux(relu3 & sign, 0, v)
            if not res:
                # Saturation and clamp in one: the clamp's bounds lie in act_range.
                results.append(Mux(zero[2][lane], 0, clip(v, c_lo, c_hi, c_empty))[:a])
                continue
            results.append(clip(v, lo, hi)[:a])

        if not res:
            out = Signal(lanes * a, reset_less=True)
            with m.If(advance):
                m.d.sync += out.eq(Cat(results))
        else:
            out = self._residual(m, Cat(results), advance, zero[n - 2], c_lo, c_hi, c_empty)
        m.d.comb += [
            self.o.valid.eq(valid[n - 1]),
            self.o.payload.data.eq(out),
            self.o.payload.last.eq(last[n - 1]),
            self.o.payload.group.eq(group[n - 1]),
        ]
        return m

    def _window(self, m, name, y, amount, advance):
        """:func:`rounding_window` of ``y`` by ``amount`` into registers (a stage)."""
        a = self._cfg.act_bits
        window, over, sign = rounding_window(y, amount, a)
        regs = (Signal(a + 1, name=f"window_{name}", reset_less=True),
                Signal(name=f"over_{name}", reset_less=True),
                Signal(name=f"sign_{name}", reset_less=True))
        with m.If(advance):
            m.d.sync += [r.eq(x) for r, x in zip(regs, (window, over, sign))]
        return regs

    def _residual(self, m, v4, advance, zero7, c_lo, c_hi, c_empty):
        """Stages 5 to 7: ``v4`` (stage 4's saturated lanes) registered beside the shortcut's
        read, the residual sum, its window (as stage 3), then its rounding, ReLU, saturation
        and the clamp.

        The sum is kept divided by ``2^m``, ``m = min(main_shift, short_shift)``: ``y' = (v <<
        main - m) + (s << short - m)`` shifts one operand only (one shifter per lane), and
        ``round_shift(y' * 2^m, res_shift) = round_shift(y', res_shift - m)`` (exact: the bits
        below ``2^m`` are 0, so the rounding bit is the same). A left shift past ``a``
        saturates every nonzero value as a shift by ``a`` does, so the amount is clamped at
        ``-a``."""
        cfg, lanes, a = self._cfg, self._lanes, self._cfg.act_bits
        t = self.tail
        _, top = res_shift_range(a)
        on = Signal(name="residual_q", reset_less=True)
        v_first = Signal(name="main_ge_short_q", reset_less=True)     # v is the one shifted
        apart = Signal.like(t.main_shift, name="res_apart_q", reset_less=True)
        amount = Signal(max(1, (top + a).bit_length()), name="res_amount_q", reset_less=True)
        relu = Signal(name="res_relu_q", reset_less=True)
        ge = t.main_shift >= t.short_shift
        low = Mux(ge, t.short_shift, t.main_shift)
        res_shift = t.res_shift - low
        res_shift = Mux(res_shift < -a, -a, res_shift)
        m.d.sync += [on.eq(t.residual), v_first.eq(ge),
                     apart.eq(Mux(ge, t.main_shift - t.short_shift,
                                  t.short_shift - t.main_shift)),
                     amount.eq(window_amount(Mux(t.residual, res_shift, 0), a, top)),
                     relu.eq(t.residual & t.res_relu)]

        v = self.stage_v
        s_data = Signal.like(self.s_data, name="s_data_q", reset_less=True)
        with m.If(advance):
            m.d.sync += [v.eq(v4), s_data.eq(self.s_data)]
        out = Signal(lanes * a, reset_less=True)
        results = []
        for lane in range(lanes):
            vl = v.word_select(lane, a).as_signed()
            sl = s_data.word_select(lane, a).as_signed()
            # Stage 5: the sum over 2^m, exact in act_bits + RES_MAX_SHIFT + 1 bits.
            y = Signal(signed(res_sum_width(a)), name=f"res_y_{lane}", reset_less=True)
            far, near = Mux(v_first, vl, sl), Mux(v_first, sl, vl)
            with m.If(advance):
                m.d.sync += y.eq(Mux(on, (far << apart) + near, vl))
            m.d.comb += self.stage_sum.word_select(lane, res_sum_width(a)).eq(y)
            # Stage 6: its window; stage 7: round, ReLU, saturation and clamp.
            window, over, sign = self._window(m, f"res_{lane}", y, amount, advance)
            r = window_value(window, over, sign, a)
            r = Mux(relu & sign, 0, r)
            results.append(Mux(zero7[lane], 0, clip(r, c_lo, c_hi, c_empty))[:a])
        with m.If(advance):
            m.d.sync += out.eq(Cat(results))
        return out
