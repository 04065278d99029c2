"""Formal properties of post-processing (``rtl/postproc.py``) and of its streams.

**Arithmetic** (``postproc_<design>``): one lane, one channel, at a design's ``acc_width`` and
``act_bits``, with a shortcut buffer (the shipped core's default), so the whole fused tail is
built. The harness writes free parameters (``bias`` in its range, ``shift`` in
``[-a, acc_width + 1]``, ``relu``) through the ``p`` stream whenever it likes and sends free
accumulators (in ``acc_range``) on ``i`` with the output always ready; the tail's settings are
free but constant (as during a run): ``residual``, ``res_relu``, ``clamp``, both add shifts
(``0..15``), ``res_shift`` in ``res_shift_range``, and ``clamp_lo``, ``clamp_hi`` anything
(``lo > hi`` included). The shortcut buffer is a memory whose every word holds its own
address: a beat's shortcut value is its free ``short_addr``, so a read of the wrong address,
or at the wrong time, shows. The definition (``docs/numerics.md``,
:func:`mulfree.params.layer_golden.fused_tail`)::

    y = acc + bias
    v = floor((y + 2^(s-1)) / 2^s)  (s > 0),  y  (s = 0),  y * 2^-s  (s < 0)
    v = max(v, 0) if relu;  v = clamp(v, -2^(a-1), 2^(a-1) - 1)
    if residual:  y2 = v * 2^main + s * 2^short;  v = sat(relu?(round_shift(y2, res_shift)))
    if clamp:     v = min(max(v, clamp_lo), clamp_hi)

is written as one case per shift amount, in widened arithmetic (no barrel shifter, no
rounding bit trick, no clamp before a left shift), and checked stage by stage, each stage's
register against the definition applied to the register before it: four cycles after an
accepted beat stage 4's ``v`` (``PostProcess.stage_v``) is post-processing of its accumulator
with the parameters in force when it was accepted, a cycle later stage 5's sum (``stage_sum``,
kept divided by ``2^min(main, short)``, scaled back) is ``y2`` of that ``v`` and the beat's
shortcut, and two cycles later the output is the rest of the tail of that sum (0 in a ``zero``
lane); by composition the output is the definition of the beat. (One comparison of the whole
composition did not finish in 25 minutes: the solver would have to match two rounding
structures on a sum of two barrel shifts.)
Checked by bounded model check from reset over ``POST_BMC_DEPTH`` cycles: every value of every
input in each of those cycles, so a parameter write followed by a beat (or both in one cycle)
with every accumulator, bias, shift, relu, tail and shortcut. The arithmetic holds no state but
the table and the pipeline, so that is every input.

``postproc_<design>_no_shortcut``: the same without a shortcut buffer (``shortcut_vectors =
0``: the residual is not built, ``residual`` must be ignored; the clamp is the saturation's
bounds): the output four cycles after a beat against the whole definition.

**Streams** (``postproc_stream``): with free inputs and a free ``o.ready``, the output is an
AXI-Stream-style master: ``valid``, ``data`` and ``last`` held while ``valid`` and not
``ready``; no ``valid`` in the cycle after a reset. The ``i`` side needs nothing of its master.
Its cover reaches a beat leaving and a beat with ``last`` leaving. This block is what drives the
core's ``m_axis`` (through the output FIFO): the whole core is too large for the solver at the
depth its first result needs (a descriptor, setup and every packet of a layer).

**The global pool** (``pool``, :func:`pool_harness`): the unit after post-processing
(``rtl/pool.py``) on free vectors, settings and ``ready``, its sums and its rounding checked
one stage at a time against :func:`mulfree.params.layer_golden.global_pool`.

The designs: the default core's engines (a = 8, K = 1024): shift (25-bit accumulators),
adder (19 bits), mult (26 bits).
"""

from amaranth.hdl import Assert, Assume, Cat, Cover, Module, Mux, ResetSignal, Signal, signed

from ..params.config import ArrayConfig
from ..params.core_config import RES_MAX_SHIFT, res_shift_range
from ..params.post_config import bias_range, shift_range
from ..rtl.postproc import PostProcess


__all__ = ["PROPERTIES", "DESIGNS", "spec_postprocess", "spec_sum", "spec_final",
           "post_harness", "stream_harness", "pool_harness"]


DESIGNS = {
    "shift": ArrayConfig(pe="shift", act_bits=8, weight_bits=4, max_k=1024),
    "adder": ArrayConfig(pe="adder", act_bits=8, max_k=1024),
    "mult": ArrayConfig(pe="mult", act_bits=8, weight_bits=8, max_k=1024),
}
#: Cycles checked: a write and a beat, then the pipeline (7 stages with the tail, 4 without).
POST_BMC_DEPTH = 10
POST_PLAIN_BMC_DEPTH = 7
STREAM_BMC_DEPTH = 12
STREAM_COVER_DEPTH = 11


def _sat(cfg, v):
    lo, hi = cfg.act_range
    return Mux(v < lo, lo, Mux(v > hi, hi, v))


def _named(m, value, name):
    """``value`` through a signal of its own shape: later expressions refer to the signal, not
    to a copy of ``value``'s tree (a nested case analysis would otherwise grow the netlist)."""
    sig = Signal(value.shape(), name=name)
    m.d.comb += sig.eq(value)
    return sig


def _shifted(m, y, shift, lo, hi, name):
    """``y * 2^-shift`` rounded half up, one case per amount in ``[lo, hi]``."""
    y = _named(m, y, f"{name}_y")
    v = y
    for s in range(lo, hi + 1):
        if s > 0:
            case = (y + (1 << (s - 1))) >> s            # floor: >> of a signed value
        else:
            case = y * (1 << -s)
        v = Mux(shift == s, case, v)
    return _named(m, v, f"{name}_shifted")


def spec_postprocess(m, cfg, acc, bias, shift, relu):
    """numerics.md's post-processing of one accumulator, in widened arithmetic."""
    v = _shifted(m, acc + bias, shift, *shift_range(cfg), "spec_post")
    return _named(m, _sat(cfg, Mux(relu & (v < 0), 0, v)), "spec_post_v")


def spec_sum(cfg, v, s, tail):
    """The residual add's sum ``v * 2^main_shift + s * 2^short_shift`` (``v`` alone without
    ``tail.residual``), one case per amount."""
    scaled = [v, s]
    for k, amount in enumerate((tail.main_shift, tail.short_shift)):
        for n in range(1, RES_MAX_SHIFT + 1):
            scaled[k] = Mux(amount == n, (v, s)[k] * (1 << n), scaled[k])
    return Mux(tail.residual, scaled[0] + scaled[1], v)


def spec_final(m, cfg, y, tail):
    """The rest of the tail on a residual sum ``y``: ``sat(relu?(y * 2^-res_shift))`` rounded
    half up (``y`` itself without ``tail.residual``), then the clamp."""
    r = _shifted(m, y, Mux(tail.residual, tail.res_shift, 0), *res_shift_range(cfg.act_bits),
                 "spec_res")
    return _clamp(m, _sat(cfg, Mux(tail.residual & tail.res_relu & (r < 0), 0, r)), tail)


def _clamp(m, v, tail):
    clamped = _named(m, Mux(v < tail.clamp_lo, tail.clamp_lo, v), "spec_clamp_lo")
    clamped = Mux(clamped > tail.clamp_hi, tail.clamp_hi, clamped)
    return _named(m, Mux(tail.clamp, clamped, v), "spec_clamp")


def _pipe(m, value, n, name):
    """``value`` delayed by 1..n cycles: ``[value one cycle ago, two, ...]``."""
    regs = [Signal.like(value, name=f"{name}_{k}") for k in range(n)]
    m.d.sync += [regs[0].eq(value)] + [regs[k].eq(regs[k - 1]) for k in range(1, n)]
    return regs


def post_harness(cfg, *, residual=True):
    """:class:`PostProcess` (with a shortcut buffer if ``residual``) against the spec.

    Without the buffer its output, 4 cycles after a beat, equals :func:`spec_postprocess`
    then the clamp. With it, stage by stage, each against the spec applied to the stage
    before it: stage 4's register (``stage_v``) equals :func:`spec_postprocess` of the beat,
    stage 5's sum (``stage_sum``) :func:`spec_sum` of ``stage_v`` a cycle earlier and the
    beat's shortcut, the output :func:`spec_final` of ``stage_sum`` two cycles earlier; so the
    output is the composition, ``fused_tail`` of post-processing (one comparison of the whole
    composition is beyond the solver: it would have to match two rounding structures on a
    sum of two barrel shifts).
    """
    m = Module()
    a = cfg.act_bits
    dut = PostProcess(cfg, lanes=1, channels=1, shortcut_vectors=(1 << a) if residual else 0)
    m.submodules.dut = dut
    n = dut.latency
    acc = Signal(signed(cfg.acc_width), name="acc")
    bias = Signal(signed(cfg.acc_width), name="bias")
    shift = Signal(signed(len(dut.p.payload.shift)), name="shift")
    relu = Signal(name="relu")
    p_valid, i_valid, zero = Signal(name="p_valid"), Signal(name="i_valid"), Signal(name="zero")
    tail = Signal.like(dut.tail, name="tail")
    lo, hi = cfg.acc_range
    slo, shi = shift_range(cfg)
    blo, bhi = bias_range(cfg)
    rlo, rhi = res_shift_range(a)
    m.d.comb += [
        Assume((acc >= lo) & (acc <= hi)),
        Assume((shift >= slo) & (shift <= shi)),
        Assume((bias >= blo) & (bias <= bhi)),
        Assume((tail.res_shift >= rlo) & (tail.res_shift <= rhi)),
        dut.p.valid.eq(p_valid),
        dut.p.payload.bias.eq(bias), dut.p.payload.shift.eq(shift), dut.p.payload.relu.eq(relu),
        dut.i.valid.eq(i_valid),
        dut.i.payload.data.eq(acc), dut.i.payload.zero.eq(zero),
        dut.tail.eq(tail),
        dut.o.ready.eq(1),
    ]
    # The tail is static: whatever it is in the first cycle, it stays.
    past_tail = Signal.like(tail, name="past_tail")
    started = Signal(name="started")
    m.d.sync += [past_tail.eq(tail), started.eq(1)]
    m.d.comb += Assume(~started | (tail.as_value() == past_tail.as_value()))
    short = Signal(signed(a), name="short")
    if residual:
        # The shortcut memory: word k holds k, read synchronously when s_en.
        word = Signal(a, name="short_word")
        with m.If(dut.s_en):
            m.d.sync += word.eq(dut.s_addr)
        m.d.comb += [dut.i.payload.short_addr.eq(short), dut.s_data.eq(word)]
    # The parameters in force: the last ones written (a write counts for a beat accepted in
    # the same cycle: the table is read after it).
    held = [Signal(signed(cfg.acc_width), name="bias_q"), Signal(signed(len(shift)),
            name="shift_q"), Signal(name="relu_q")]
    written = Signal()
    with m.If(p_valid):
        m.d.sync += [held[0].eq(bias), held[1].eq(shift), held[2].eq(relu), written.eq(1)]
    now = [Mux(p_valid, new, old) for new, old in zip((bias, shift, relu), held)]
    v = spec_postprocess(m, cfg, acc, *now)
    # The expectations travel beside the beat (the output is always ready).
    valid = _pipe(m, i_valid & (p_valid | written), n, "exp_valid")
    zeros = _pipe(m, zero, n, "exp_zero")
    out = dut.o.payload.data.as_signed()
    m.d.comb += Assert(~valid[n - 1] | dut.o.valid)
    if not residual:
        want = _pipe(m, Mux(zero, 0, _clamp(m, v, tail)), n, "exp")
        m.d.comb += Assert(~valid[n - 1] | (out == want[n - 1]))
        return m, [acc, bias, shift, relu, p_valid, i_valid, zero, tail.as_value()]
    fronts = _pipe(m, v, 4, "exp_v")
    shorts = _pipe(m, short, 4, "exp_short")
    stage_v, stage_sum = dut.stage_v.as_signed(), dut.stage_sum.as_signed()
    # The unit keeps the sum divided by 2^min(main_shift, short_shift): scaled back here.
    least = Mux(tail.main_shift < tail.short_shift, tail.main_shift, tail.short_shift)
    scaled = stage_sum
    for k in range(1, RES_MAX_SHIFT + 1):
        scaled = Mux(tail.residual & (least == k), stage_sum * (1 << k), scaled)
    stage_sum = _named(m, scaled, "stage_sum_scaled")
    want_sum = _pipe(m, spec_sum(cfg, stage_v, shorts[3], tail), 1, "exp_sum")[0]
    want_out = _pipe(m, spec_final(m, cfg, stage_sum, tail), 2, "exp_out")[1]
    m.d.comb += [
        Assert(~valid[3] | (stage_v == fronts[3])),
        Assert(~valid[4] | (stage_sum == want_sum)),
        Assert(~valid[6] | (out == Mux(zeros[6], 0, want_out))),
    ]
    return m, [acc, bias, shift, relu, p_valid, i_valid, zero, tail.as_value(), short]


def stream_harness(dut=None, *, cover=False):
    """Stream rules of ``dut``'s ``o`` (default: the shift design's :class:`PostProcess`
    with a shortcut buffer, its seven stages)."""
    if dut is None:
        dut = PostProcess(DESIGNS["shift"], lanes=2, channels=2, shortcut_vectors=16)
    m = Module()
    m.submodules.dut = dut
    o = dut.o
    inputs = [dut.p.valid, dut.p.payload.as_value(), dut.i.valid, dut.i.payload.as_value(),
              o.ready, dut.tail.as_value()]
    if dut.shortcut_vectors:
        inputs.append(dut.s_data)
    frees = [Signal(len(v), name=f"free_{n}") for n, v in enumerate(inputs)]
    m.d.comb += [v.eq(f) for v, f in zip(inputs, frees)]
    past_rst = Signal(reset_less=True)
    m.d.sync += past_rst.eq(ResetSignal())
    waited = Signal()
    past_data = Signal(len(o.payload.as_value()))
    m.d.sync += [waited.eq(o.valid & ~o.ready), past_data.eq(o.payload.as_value())]
    if cover:
        m.d.comb += [Cover(o.valid & o.ready), Cover(o.valid & o.ready & o.payload.last),
                     Cover(waited & o.valid & o.ready)]
    else:
        m.d.comb += [
            Assert(~waited | (o.valid & (o.payload.as_value() == past_data))),
            Assert(~past_rst | ~o.valid),
        ]
    return m, frees


def _post(key, residual):
    def build():
        cfg = DESIGNS[key]
        m, ports = post_harness(cfg, residual=residual)
        what = ("post-processing and its fused tail (residual add, clamp)" if residual else
                "post-processing and the clamp, no shortcut buffer")
        return m, ports, "bmc", POST_BMC_DEPTH if residual else POST_PLAIN_BMC_DEPTH, (
            f"{what} = numerics.md for every input, acc_width={cfg.acc_width} "
            f"act_bits={cfg.act_bits}")
    return build


def _stream():
    m, ports = stream_harness()
    return m, ports, "prove", STREAM_BMC_DEPTH, ("post-processing output stream: valid and "
                                                 "payload held until ready, none after reset")


def _stream_cover():
    m, ports = stream_harness(cover=True)
    return m, ports, "cover", STREAM_COVER_DEPTH, ("post-processing output: a beat leaves, "
                                                   "a last beat leaves, after a stall")


#: name -> build(): (module, ports, mode, depth, description)
PROPERTIES = {f"postproc_{key}": _post(key, True) for key in DESIGNS}
PROPERTIES.update({f"postproc_{key}_no_shortcut": _post(key, False) for key in DESIGNS})
PROPERTIES["postproc_stream"] = _stream
PROPERTIES["postproc_stream_cover"] = _stream_cover


# The global pool -------------------------------------------------------------------------------

#: The pool harness: 2 channel groups of one lane, sums of up to 3 pixels (a + 2 bits).
POOL_GROUPS, POOL_PIXELS = 2, 3
#: A whole run, 6 vectors, the sum's write and the unit's 3 stages, 2 outputs (12 cycles),
#: and 2 cycles of stalls.
POOL_BMC_DEPTH = 14


def pool_harness(cfg):
    """:class:`~mulfree.rtl.pool.GlobalPool` (one lane, :data:`POOL_GROUPS` groups,
    :data:`POOL_PIXELS` pixels) against :func:`mulfree.params.layer_golden.global_pool`.

    Free and static during the run: ``on``, ``shift`` (in ``pool_shift_range``), ``nt``
    (``1..groups``); free every cycle: the input beat (any activation, any group below ``nt``,
    ``last``) and ``o.ready``. Assumed as in the core: at most ``pool_pixels`` vectors per
    group (setup's TOO_BIG), nothing after the vector with ``last``. Checked: with ``on``, no
    output before ``last`` is taken, then exactly ``nt`` outputs, output ``k`` being
    ``sat(round_shift(sum of group k, shift))`` (widened arithmetic, one case per amount; 0
    for a group no vector reached) with ``last`` on the ``nt``-th, each held until ``ready``;
    without ``on`` the unit is a wire.
    """
    from ..params.core_config import pool_shift_range, pool_sum_width
    from ..rtl.pool import GlobalPool
    m = Module()
    a = cfg.act_bits
    dut = GlobalPool(cfg, lanes=1, groups=POOL_GROUPS, pool_pixels=POOL_PIXELS)
    m.submodules.dut = dut
    i, o = dut.i, dut.o
    x = Signal(signed(a), name="x")
    group = Signal.like(i.payload.group, name="group")
    i_valid, last, ready = Signal(name="i_valid"), Signal(name="last"), Signal(name="ready")
    on, shift, nt = Signal(name="on"), Signal.like(dut.shift, name="pool_shift"), \
        Signal.like(dut.nt, name="nt")
    m.d.comb += [i.valid.eq(i_valid), i.payload.data.eq(x), i.payload.group.eq(group),
                 i.payload.last.eq(last), o.ready.eq(ready), dut.on.eq(on),
                 dut.shift.eq(shift), dut.nt.eq(nt)]
    s_lo, s_hi = pool_shift_range(a, POOL_PIXELS)
    static = Cat(on, shift, nt)
    past = Signal.like(static, name="past_settings")
    started = Signal(name="started")
    m.d.sync += [past.eq(static), started.eq(1)]
    m.d.comb += [Assume(~started | (static == past)),
                 Assume((shift >= s_lo) & (shift <= s_hi)),
                 Assume((nt >= 1) & (nt <= POOL_GROUPS)), Assume(group < nt)]

    # The reference sums and counts, per group, of the vectors taken.
    width = pool_sum_width(a, POOL_PIXELS) + 2
    sums = [Signal(signed(width), name=f"spec_sum_{g}") for g in range(POOL_GROUPS)]
    counts = [Signal(range(POOL_PIXELS + 2), name=f"count_{g}") for g in range(POOL_GROUPS)]
    ended = Signal(name="ended")
    take = i.valid & i.ready
    m.d.comb += Assume(~ended | ~i_valid)
    for g in range(POOL_GROUPS):
        m.d.comb += Assume(~(on & i_valid & (group == g)) | (counts[g] < POOL_PIXELS))
        with m.If(on & take & (group == g)):
            m.d.sync += [sums[g].eq(sums[g] + x), counts[g].eq(counts[g] + 1)]
    with m.If(on & take & last):
        m.d.sync += ended.eq(1)

    # The outputs: the k-th against group k's spec, last on the nt-th, held until ready.
    k = Signal(range(POOL_GROUPS + 1), name="sent")
    with m.If(o.valid & o.ready):
        m.d.sync += k.eq(k + 1)
    # Stage by stage (as post-processing's: one comparison of the rounding of the reference
    # sums is beyond the solver): the sums the first stage takes are the reference sums of
    # its group, and the output is the spec's rounding of the sums taken GlobalPool.STAGES
    # advances earlier (the unit's stages advance together when the output is taken or
    # empty), of group k for the k-th output.
    loaded = _named(m, sums[0], "spec_loaded")
    for g in range(1, POOL_GROUPS):
        loaded = Mux(dut.stage_group == g, sums[g], loaded)
    m.d.comb += Assert(~dut.stage_load | (dut.stage_sum.as_signed() == loaded))
    want = [Signal(signed(a), name=f"spec_pool_out_{n}") for n in range(dut.STAGES)]
    want_group = [Signal.like(dut.stage_group, name=f"spec_pool_group_{n}")
                  for n in range(dut.STAGES)]
    with m.If(~o.valid | o.ready):
        m.d.sync += [want[0].eq(_sat(cfg, _shifted(m, dut.stage_sum.as_signed(), shift, s_lo,
                                                   s_hi, "spec_pool"))),
                     want_group[0].eq(dut.stage_group)]
        m.d.sync += [w.eq(v) for w, v in zip(want[1:] + want_group[1:],
                                             want[:-1] + want_group[:-1])]
    want = want[-1]
    m.d.comb += Assert(~(on & o.valid) | (want_group[-1] == k))
    out = o.payload.data.as_signed()
    waited = Signal(name="waited")
    past_out = Signal(len(o.payload.as_value()), name="past_out")
    m.d.sync += [waited.eq(on & o.valid & ~o.ready), past_out.eq(o.payload.as_value())]
    with m.If(on):
        m.d.comb += [
            Assert(~o.valid | (ended & (k < nt))),
            Assert(~o.valid | (out == want)),
            Assert(~o.valid | (o.payload.last == (k == nt - 1))),
            Assert(~waited | (o.valid & (o.payload.as_value() == past_out))),
        ]
    with m.Else():
        m.d.comb += Assert((o.valid == i_valid) & (out == x) & (o.payload.last == last)
                           & (i.ready == ready))
    return m, [x, group, i_valid, last, ready, on, shift, nt]


def _pool():
    cfg = DESIGNS["shift"]
    m, ports = pool_harness(cfg)
    return m, ports, "bmc", POOL_BMC_DEPTH, (
        f"global pool = layer_golden.global_pool of the group sums, nt outputs after last, "
        f"held until ready; a wire without flags.global_pool (act_bits={cfg.act_bits}, "
        f"{POOL_GROUPS} groups, pool_pixels={POOL_PIXELS})")


PROPERTIES["pool"] = _pool
