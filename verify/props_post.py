"""Formal properties of post-processing (``rtl/postproc.py``) and of its streams.

**Arithmetic** (``postproc_<design>``): one lane, one channel, at a design's ``acc_width`` and
``act_bits``. The harness writes free parameters (``bias`` in its range, ``shift`` in
``[-a, acc_width + 1]``, ``relu``) through the ``p`` stream whenever it likes and sends free
accumulators (in ``acc_range``) on ``i`` with the output always ready; three cycles after each
accepted beat, the output must equal ``docs/numerics.md``'s definition applied to that
accumulator and the parameters in force when it was accepted::

    y = acc + bias
    v = floor((y + 2^(s-1)) / 2^s)  (s > 0),  y  (s = 0),  y * 2^-s  (s < 0)
    v = max(v, 0) if relu;  out = clamp(v, -2^(a-1), 2^(a-1) - 1)

written as one case per shift amount, in widened arithmetic (no barrel shifter, no rounding
bit trick). Checked by bounded model check from reset over ``POST_BMC_DEPTH`` cycles: every
value of every input in each of those cycles, so a parameter write followed by a beat (or both
in one cycle) with every accumulator, bias, shift and relu, and the result three cycles later.
The arithmetic holds no state but the table and the pipeline, so that is every input.

**Streams** (``postproc_stream``): with free inputs and a free ``o.ready``, the output is an
AXI-Stream-style master: ``valid``, ``data`` and ``last`` held while ``valid`` and not
``ready``; no ``valid`` in the cycle after a reset. The ``i`` side needs nothing of its master.
Its cover reaches a beat leaving and a beat with ``last`` leaving. This block is what drives the
core's ``m_axis`` (through the output FIFO): the whole core is too large for the solver at the
depth its first result needs (a descriptor, setup and every packet of a layer).

The designs: the default core's engines (a = 8, K = 1024): shift (25-bit accumulators),
adder (19 bits), mult (26 bits).
"""

from amaranth.hdl import Assert, Assume, Cover, Module, Mux, ResetSignal, Signal, signed

from ..params.config import ArrayConfig
from ..params.post_config import bias_range, shift_range
from ..rtl.postproc import PostProcess


__all__ = ["PROPERTIES", "DESIGNS", "spec_postprocess", "post_harness", "stream_harness"]


DESIGNS = {
    "shift": ArrayConfig(pe="shift", act_bits=8, weight_bits=4, max_k=1024),
    "adder": ArrayConfig(pe="adder", act_bits=8, max_k=1024),
    "mult": ArrayConfig(pe="mult", act_bits=8, weight_bits=8, max_k=1024),
}
POST_BMC_DEPTH = 6
STREAM_BMC_DEPTH = 12
STREAM_COVER_DEPTH = 8


def spec_postprocess(cfg, acc, bias, shift, relu):
    """numerics.md's post-processing of one accumulator, in widened arithmetic."""
    y = acc + bias
    v = y
    slo, shi = shift_range(cfg)
    for s in range(slo, shi + 1):
        if s > 0:
            case = (y + (1 << (s - 1))) >> s            # floor: >> of a signed value
        else:
            case = y * (1 << -s)
        v = Mux(shift == s, case, v)
    v = Mux(relu & (v < 0), 0, v)
    lo, hi = cfg.act_range
    return Mux(v < lo, lo, Mux(v > hi, hi, v))


def post_harness(cfg):
    """The output of :class:`PostProcess` equals :func:`spec_postprocess`, 3 cycles later."""
    m = Module()
    m.submodules.dut = dut = PostProcess(cfg, lanes=1, channels=1)
    a = cfg.act_bits
    acc = Signal(signed(cfg.acc_width), name="acc")
    bias = Signal(signed(cfg.acc_width), name="bias")
    shift = Signal(signed(len(dut.p.payload.shift)), name="shift")
    relu = Signal(name="relu")
    p_valid, i_valid, zero = Signal(name="p_valid"), Signal(name="i_valid"), Signal(name="zero")
    lo, hi = cfg.acc_range
    slo, shi = shift_range(cfg)
    blo, bhi = bias_range(cfg)
    m.d.comb += [
        Assume((acc >= lo) & (acc <= hi)),
        Assume((shift >= slo) & (shift <= shi)),
        Assume((bias >= blo) & (bias <= bhi)),
        dut.p.valid.eq(p_valid),
        dut.p.payload.bias.eq(bias), dut.p.payload.shift.eq(shift), dut.p.payload.relu.eq(relu),
        dut.i.valid.eq(i_valid),
        dut.i.payload.data.eq(acc), dut.i.payload.zero.eq(zero),
        dut.o.ready.eq(1),
    ]
    # The parameters in force: the last ones written (a write counts for a beat accepted in
    # the same cycle: the table is read after it).
    held = [Signal(signed(cfg.acc_width), name="bias_q"), Signal(signed(len(shift)),
            name="shift_q"), Signal(name="relu_q")]
    written = Signal()
    with m.If(p_valid):
        m.d.sync += [held[0].eq(bias), held[1].eq(shift), held[2].eq(relu), written.eq(1)]
    now = [Mux(p_valid, new, old) for new, old in zip((bias, shift, relu), held)]
    expected = Mux(zero, 0, spec_postprocess(cfg, acc, *now))
    # The expectation travels 3 cycles beside the beat (the output is always ready).
    pipe_valid = [Signal(name=f"exp_valid_{s}") for s in range(3)]
    pipe = [Signal(signed(a), name=f"exp_{s}") for s in range(3)]
    m.d.sync += [pipe_valid[0].eq(i_valid & (p_valid | written)), pipe[0].eq(expected)]
    m.d.sync += [pipe_valid[s].eq(pipe_valid[s - 1]) for s in (1, 2)]
    m.d.sync += [pipe[s].eq(pipe[s - 1]) for s in (1, 2)]
    m.d.comb += [
        Assert(~pipe_valid[2] | dut.o.valid),
        Assert(~pipe_valid[2] | (dut.o.payload.data.as_signed() == pipe[2])),
    ]
    return m, [acc, bias, shift, relu, p_valid, i_valid, zero]


def stream_harness(dut=None, *, cover=False):
    """Stream rules of ``dut``'s ``o`` (default: the shift design's :class:`PostProcess`)."""
    dut = PostProcess(DESIGNS["shift"], lanes=2, channels=2) if dut is None else dut
    m = Module()
    m.submodules.dut = dut
    o = dut.o
    inputs = [dut.p.valid, dut.p.payload.as_value(), dut.i.valid, dut.i.payload.as_value(),
              o.ready]
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


def _post(key):
    def build():
        cfg = DESIGNS[key]
        m, ports = post_harness(cfg)
        return m, ports, "bmc", POST_BMC_DEPTH, (f"post-processing = numerics.md for every input, "
                                      f"acc_width={cfg.acc_width} act_bits={cfg.act_bits}")
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
PROPERTIES = {f"postproc_{key}": _post(key) for key in DESIGNS}
PROPERTIES["postproc_stream"] = _stream
PROPERTIES["postproc_stream_cover"] = _stream_cover
