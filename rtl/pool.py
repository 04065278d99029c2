"""The global pool: per-channel sums of a run's whole output map, then one pixel out.

After post-processing and its fused tail, with ``flags.global_pool``, every result vector
(channels ``[group*lanes, (group+1)*lanes)`` of one pixel) is added lane by lane into the
sums of its channel group; after the run's last vector the unit sends ``nt`` result vectors,
group ``0`` to ``nt - 1``, lane ``l`` of group ``g`` being::

    y = sum over the map of channel g*lanes + l          (pool_sum_width bits, exact)
    v = pool_shift >= 0 ? (y >> pool_shift) + y[pool_shift-1]     round half up
                        : clamp(y, -2^a, 2^a) << -pool_shift   exact (the clamp changes no output)
    v = clamp(v, act_range)

exactly :func:`mulfree.params.layer_golden.global_pool` (``docs/numerics.md``), ``last`` on the
final vector. Lanes beyond ``out_c`` arrive as 0 and leave as 0. Without the flag the unit
passes post-processing's vectors through (a multiplexer, no register).

The sums live in a memory of ``groups`` words of ``lanes * pool_sum_width`` bits with an
asynchronous read (distributed RAM): a vector's read-add-write takes one cycle, so the unit
takes one vector per cycle whatever the order of groups; a bit per group (``seen``, reset
with the run) says whether the word already holds this run's sum, so the memory needs no
clearing. The results go through a pipeline of :attr:`GlobalPool.STAGES` registers, each
with its valid bit, all advancing together when the output is taken or empty (as
post-processing's): (1) the group's sums (the memory's read, 0 for a group no vector
reached), (2) each lane's rounding shift, (3) each lane saturated, the output register. The
first pooled vector leaves ``1 + STAGES`` cycles after the last vector came in when nothing
stalls (``pool_latency``), then one per cycle; a stalled output holds every stage.

No multiplier: ``lanes`` adders, a narrow rounding window, an incrementer and comparators per
lane (:func:`mulfree.rtl.postproc.rounding_window`, as post-processing's).
"""

from amaranth.hdl import Signal, Module, Mux, Cat, signed, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..params.config import ArrayConfig, ConfigError, signed_width
from ..params.core_config import pool_shift_range, pool_sum_width
from .postproc import act_layout, clip, rounding_window, window_amount, window_value


__all__ = ["GlobalPool"]


class GlobalPool(wiring.Component):
    """Global average pool of a run's result vectors (``flags.global_pool``), or a
    pass-through.

    Parameters
    ----------
    cfg : ArrayConfig
        Sets ``act_bits``.
    lanes : int
        Activations per vector.
    groups : int
        Channel groups the sums hold (``ceil(max_channels / lanes)``).
    pool_pixels : int
        Largest map summed: the sums are ``pool_sum_width(act_bits, pool_pixels)`` bits.

    Attributes
    ----------
    i : In(stream.Signature(act_layout(cfg, lanes, groups)))
        Post-processing's vectors with their channel ``group``, ``last`` on a run's final one.
    o : Out(stream.Signature(act_layout(cfg, lanes)))
        With ``on``: the ``nt`` pooled vectors; without: ``i`` unchanged.
    on, shift, nt : In
        The run's ``flags.global_pool``, ``pool_shift`` (in ``pool_shift_range``) and output
        tiles ``ceil(out_c / lanes)`` (``1..groups``); static during a run.
    stage_sum, stage_group, stage_load : Signal
        Read-only views: the sums of group ``stage_group`` the first stage's register takes in
        a cycle with ``stage_load`` (their rounding and saturation leave ``STAGES - 1``
        advances later), for proofs that check the sums and the rounding one at a time.
    """

    #: Registers from the sums' read to the output: the sums, the rounding shift, the
    #: saturation (``params.manifest.pool_latency`` is ``1 + STAGES``: the last sum's write).
    STAGES = 3

    def __init__(self, cfg: ArrayConfig, *, lanes, groups, pool_pixels):
        if (isinstance(pool_pixels, bool) or not isinstance(pool_pixels, int)
                or pool_pixels < 1):
            self._MustUse__silence = True
            raise ConfigError("pool_pixels", f"pool_pixels of a pool unit must be a positive "
                                             f"integer, not {pool_pixels!r}")
        self._cfg, self._lanes, self._groups = cfg, lanes, groups
        self._pixels = pool_pixels
        a = cfg.act_bits
        super().__init__({
            "i": In(stream.Signature(act_layout(cfg, lanes, groups))),
            "o": Out(stream.Signature(act_layout(cfg, lanes))),
            "on": In(1),
            "shift": In(signed(signed_width(*pool_shift_range(a, pool_pixels)))),
            "nt": In(range(groups + 1)),
        })
        # Observation points for proofs that check one stage at a time.
        self.stage_sum = Signal(lanes * self.sum_width, name="pool_total")
        self.stage_group = Signal(range(groups), name="pool_group")
        self.stage_load = Signal(name="pool_load")

    @property
    def sum_width(self):
        """Bits of each lane's sum: :func:`~mulfree.params.core_config.pool_sum_width`."""
        return pool_sum_width(self._cfg.act_bits, self._pixels)

    @property
    def groups(self):
        return self._groups

    def elaborate(self, platform):
        cfg, lanes, groups = self._cfg, self._lanes, self._groups
        a, sw = cfg.act_bits, self.sum_width
        lo, hi = cfg.act_range
        m = Module()

        m.submodules.sums = sums = Memory(shape=unsigned(lanes * sw), depth=groups, init=[])
        wr = sums.write_port()
        rd = sums.read_port(domain="comb")
        seen = Signal(groups)           # the word holds this run's sum (reset with the run)
        emit = Signal()                 # the last vector is in: sending the results
        g = Signal(range(groups))
        i, o = self.i, self.o

        # Accumulate: read the group's word, add the vector's lanes, write it back.
        take = Signal()
        m.d.comb += [take.eq(self.on & i.valid & ~emit),
                     rd.addr.eq(Mux(emit, g, i.payload.group))]
        old = Mux(seen.bit_select(i.payload.group, 1), rd.data, 0)
        new = [old[l * sw:(l + 1) * sw].as_signed()
               + i.payload.data.word_select(l, a).as_signed() for l in range(lanes)]
        m.d.comb += [wr.addr.eq(i.payload.group), wr.data.eq(Cat(v[:sw] for v in new)),
                     wr.en.eq(take)]
        with m.If(take):
            m.d.sync += seen.bit_select(i.payload.group, 1).eq(1)
            with m.If(i.payload.last):
                m.d.sync += [emit.eq(1), g.eq(0)]

        # Send: three stages, each a register and its valid bit, advancing together when the
        # output is taken or empty: (1) the group's sums (0 for a group no vector reached:
        # none in the core, every pixel has every group), (2) the rounding shift, (3) the
        # saturation into the output register. A stalled output holds all three.
        advance = Signal()
        s1_valid, s2_valid, o_valid = Signal(), Signal(), Signal()
        s1_last, s2_last, o_last = (Signal(reset_less=True, name=f"pool_last_{n}")
                                    for n in (1, 2, 3))
        s1_sum = Signal(lanes * sw, reset_less=True, name="pool_sum")
        o_data = Signal(lanes * a, reset_less=True)
        total = Mux(seen.bit_select(g, 1), rd.data, 0)
        # Post-processing's narrow rounding window (pool_shift_range is its [-a, top]).
        amount = window_amount(self.shift, a, pool_shift_range(a, self._pixels)[1])
        shifted = [Cat(*rounding_window(s1_sum.word_select(l, sw), amount, a))
                   for l in range(lanes)]
        s2_shifted = [Signal(len(v), reset_less=True, name=f"pool_shifted_{l}")
                      for l, v in enumerate(shifted)]
        pooled = [clip(window_value(v[:a + 1], v[a + 1], v[a + 2], a), lo, hi)[:a]
                  for v in s2_shifted]
        m.d.comb += [advance.eq(o.ready | ~o_valid),
                     self.stage_sum.eq(total), self.stage_group.eq(g),
                     self.stage_load.eq(advance & emit)]
        with m.If(advance):
            done = g == self.nt - 1
            m.d.sync += [s1_valid.eq(emit), s1_sum.eq(total), s1_last.eq(done),
                         s2_valid.eq(s1_valid), s2_last.eq(s1_last),
                         [r.eq(v) for r, v in zip(s2_shifted, shifted)],
                         o_valid.eq(s2_valid), o_last.eq(s2_last), o_data.eq(Cat(pooled))]
            with m.If(emit):
                m.d.sync += g.eq(g + 1)
                with m.If(done):
                    m.d.sync += emit.eq(0)

        with m.If(self.on):
            m.d.comb += [i.ready.eq(~emit), o.valid.eq(o_valid), o.payload.data.eq(o_data),
                         o.payload.last.eq(o_last)]
        with m.Else():
            m.d.comb += [i.ready.eq(o.ready), o.valid.eq(i.valid),
                         o.payload.data.eq(i.payload.data), o.payload.last.eq(i.payload.last)]
        return m
