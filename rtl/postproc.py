"""Post-processing: accumulators in, the next layer's saturated activations out.

For every lane ``l`` of a beat whose channels are ``[group*lanes, (group+1)*lanes)``, with the
parameters ``bias, shift, relu`` of channel ``c = group*lanes + l``::

    y   = acc[l] + bias                     (acc_width + 1 bits)
    v   = shift >= 0 ? (y >> shift) + y[shift-1]        round half up (y[-1] := 0)
                     : clamp(y, -2^a, 2^a) << -shift    exact; the clamp changes no output
    out = clamp(relu ? max(v, 0) : v, act_range)

exactly :func:`mulfree.params.layer_golden.postprocess` (``docs/numerics.md``, "Post-processing
and layers"). No multiplier: an adder for the bias, a barrel shifter whose one extra bit below
``y`` yields the rounding bit, one incrementer, comparators and multiplexers.

Parameters live in a per-channel table (one memory word per group of ``lanes`` channels, one
write-enable per lane), written one channel per beat on the ``p`` stream. The layer controller
emits its output vectors for channels ``[n0, n0 + lanes)`` and sends ``group = n0 / lanes``
with each beat.

Pipeline (stall-all, like the PE array): input register + table read, bias add, shift /
round / ReLU / saturation into the output register; latency 3, one vector per cycle.
"""

from amaranth.hdl import Signal, Module, Cat, Const, Mux, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..params.config import ArrayConfig, ConfigError
from ..params.post_config import check_post_config, shift_width, sum_width


__all__ = ["PostProcess", "param_layout", "acc_layout", "act_layout"]


def param_layout(cfg: ArrayConfig, lanes, groups):
    """One table write: channel ``group*lanes + lane`` gets ``bias``, ``shift``, ``relu``."""
    return data.StructLayout({
        "group": unsigned(max(1, (groups - 1).bit_length())),
        "lane": unsigned(max(1, (lanes - 1).bit_length())),
        "bias": signed(cfg.acc_width),
        "shift": signed(shift_width(cfg)),
        "relu": unsigned(1),
    })


def acc_layout(cfg: ArrayConfig, lanes, groups):
    """Input beat: ``lanes`` accumulators (flat), their channel group, lanes to output as 0
    (``zero``: channels beyond a layer's last), and ``last``."""
    return data.StructLayout({
        "data": unsigned(lanes * cfg.acc_width),
        "group": unsigned(max(1, (groups - 1).bit_length())),
        "zero": unsigned(lanes),
        "last": unsigned(1),
    })


def act_layout(cfg: ArrayConfig, lanes):
    """Output beat: ``lanes`` activations of ``act_bits`` (flat) and ``last``."""
    return data.StructLayout({"data": unsigned(lanes * cfg.act_bits), "last": unsigned(1)})


class PostProcess(wiring.Component):
    """Bias, rounding shift, ReLU and saturation of ``lanes`` accumulators per cycle.

    Parameters
    ----------
    cfg : ArrayConfig
        Sets ``acc_width`` (input), ``act_bits`` (output) and the parameter ranges.
    lanes : int, optional
        Accumulators per beat; ``cfg.cols`` by default.
    channels : int, optional
        Channels the parameter table holds; rounded up to a multiple of ``lanes``.
        ``4 * lanes`` by default.

    Attributes
    ----------
    p : In(stream.Signature(param_layout(...)))
        Table writes, always ready. A write takes effect for beats read from the table in the
        same cycle or later.
    i : In(stream.Signature(acc_layout(...)))
        Accumulator vectors, lane ``l`` in bits ``[l*acc_width, (l+1)*acc_width)``.
    o : Out(stream.Signature(act_layout(...)))
        Activation vectors in input order, ``last`` copied; lanes flagged ``zero`` are 0.
    """

    LATENCY = 3

    def __init__(self, cfg: ArrayConfig, *, lanes=None, channels=None):
        try:
            lanes, channels = self._check(cfg, lanes, channels)
        except ConfigError:
            self._MustUse__silence = True       # refused: no "created but never used" warning
            raise
        self._cfg = cfg
        self._lanes = lanes
        self._groups = -(-channels // lanes)
        super().__init__({
            "p": In(stream.Signature(param_layout(cfg, lanes, self._groups))),
            "i": In(stream.Signature(acc_layout(cfg, lanes, self._groups))),
            "o": Out(stream.Signature(act_layout(cfg, lanes))),
        })

    @staticmethod
    def _check(cfg, lanes, channels):
        check_post_config(cfg)
        lanes = cfg.cols if lanes is None else lanes
        if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
            raise ConfigError("lanes", f"lanes must be a positive integer, not {lanes!r}")
        channels = 4 * lanes if channels is None else channels
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ConfigError("channels", f"channels must be a positive integer, "
                                          f"not {channels!r}")
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

    def elaborate(self, platform):
        cfg, lanes = self._cfg, self._lanes
        acc, a, sw, yw = cfg.acc_width, cfg.act_bits, shift_width(cfg), sum_width(cfg)
        entry = acc + sw + 1                    # {relu, shift, bias}, bias in the low bits
        lo, hi = cfg.act_range
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

        # Pipeline control: every register advances when the output register is free.
        advance = Signal()
        valid = [Signal(name=f"valid_{s}") for s in range(3)]
        last = [Signal(name=f"last_{s}", reset_less=True) for s in range(3)]
        zero = [Signal(lanes, name=f"zero_{s}", reset_less=True) for s in range(2)]
        m.d.comb += [
            advance.eq(self.o.ready | ~self.o.valid),
            self.i.ready.eq(advance),
            rd.addr.eq(self.i.payload.group),
            rd.en.eq(advance),
        ]
        with m.If(advance):
            m.d.sync += [valid[0].eq(self.i.valid), last[0].eq(self.i.payload.last)]
            m.d.sync += [valid[s].eq(valid[s - 1]) for s in (1, 2)]
            m.d.sync += [last[s].eq(last[s - 1]) for s in (1, 2)]
            m.d.sync += [zero[0].eq(self.i.payload.zero), zero[1].eq(zero[0])]

        # Stage 1: the accumulators, alongside the table word read for their group.
        acc1 = Signal(lanes * acc, reset_less=True)
        with m.If(advance):
            m.d.sync += acc1.eq(self.i.payload.data)

        results = []
        for lane in range(lanes):
            word = rd.data[lane * entry:(lane + 1) * entry]
            bias, shift, relu = word[:acc].as_signed(), word[acc:acc + sw].as_signed(), word[-1]

            # Stage 2: y = acc + bias.
            y = Signal(signed(yw), name=f"y_{lane}", reset_less=True)
            shift2 = Signal(signed(sw), name=f"shift_{lane}", reset_less=True)
            relu2 = Signal(name=f"relu_{lane}", reset_less=True)
            with m.If(advance):
                m.d.sync += [
                    y.eq(acc1[lane * acc:(lane + 1) * acc].as_signed() + bias),
                    shift2.eq(shift), relu2.eq(relu),
                ]

            # Stage 3 (combinational into the output register). Right: shifting {y, 0} leaves
            # y's bit shift-1 as the lowest bit, the rounding increment (0 for shift = 0).
            z = Cat(Const(0, 1), y).as_signed() >> shift2.as_unsigned()
            right = z[1:].as_signed() + z[0]
            # Left: |y| >= 2^a saturates for any amount, so clamping first bounds the shifter.
            clamped = Mux(y > (1 << a), 1 << a, Mux(y < -(1 << a), -(1 << a), y))
            clamped = clamped.as_signed()[:a + 2].as_signed()
            amount = (-shift2)[:max(1, a.bit_length())]
            left = clamped << amount
            v = Mux(shift2 < 0, left, right)
            v = Mux(relu2 & (v < 0), 0, v)
            results.append(Mux(zero[1][lane], 0, Mux(v > hi, hi, Mux(v < lo, lo, v)))[:a])

        out = Signal(lanes * a, reset_less=True)
        with m.If(advance):
            m.d.sync += out.eq(Cat(results))
        m.d.comb += [
            self.o.valid.eq(valid[2]),
            self.o.payload.data.eq(out),
            self.o.payload.last.eq(last[2]),
        ]
        return m
