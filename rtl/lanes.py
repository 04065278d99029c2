"""The lane unit: window runs (interface 2.3) — max and sum pooling, depthwise convolutions.

A window run reduces every channel over its output pixel's window, channel by channel: the
issue unit sends, per pass (one ``(ky, kx)`` of the window for the ``C`` channels of tile
``nt``), one input vector per pixel whose lane ``j`` is channel ``nt*C + j``, with the pixel's
partial sums. Lane ``j`` of the result is::

    max(psum_j, x_j)                 win_max    (the first pass's psum is act_min)
    psum_j + x_j                     win_sum    (the first pass's psum is 0)
    psum_j + term_k(x_j, w_j)        depthwise  (term of the running engine k)

with ``term_k`` the operator of :mod:`.pe` (:meth:`~.pe.PE.accumulate`) for each engine kind
of the core, ``C`` lanes each; every result is sign-extended to the core's ``acc_width``
(``params/window_golden.py`` is the specification).

The ports are :class:`~.array.PEArray`'s (the input layout and the output layout of the
core's ``post_engine``; the weight stream holds ``C`` slots of the core-wide ``code_width``,
engine ``k``'s code in the low bits), so the core routes its streams here instead of the
engine on a window run. A depthwise run takes **one weight row per tile** (a tile = a pass,
ended by ``last``): a row is *pending* once it is in; the input beat that starts a tile waits
for a pending row and takes it, as the array takes its tile. Max and sum take no weights.

Pipeline: a handshake loads the input registers (the tile's row with a tile's first beat),
the lanes' results are registered one cycle later: the result is valid
:data:`~mulfree.params.core_config.WINDOW_LATENCY` = 2 cycles after the handshake.
Backpressure stalls both registers; at most two vectors are inside.
"""

from amaranth.hdl import Signal, Module, Cat, Mux, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..params.core_config import CoreConfig, WINDOW_FLAGS, WINDOW_LATENCY
from .array import input_layout, output_layout
from .pe import pe_class


__all__ = ["LaneUnit", "lane_signature", "LANE_OPS"]

#: The lane unit's operations, in the order of :data:`~mulfree.params.core_config.
#: WINDOW_FLAGS` (bit ``i`` of ``op`` is operation ``i``).
LANE_OPS = ("max", "sum", "depthwise")
assert len(LANE_OPS) == len(WINDOW_FLAGS)

#: Registers from the input handshake to a valid result (input registers, result register).
_STAGES = 2
assert _STAGES == WINDOW_LATENCY


def lane_signature(cfg: CoreConfig):
    """The lane unit's streams: :func:`~.array.array_signature` of ``cfg.post_engine``, with
    the core-wide weight slots (``cfg.code_width``)."""
    e = cfg.post_engine
    return wiring.Signature({
        "w": In(stream.Signature(unsigned(cfg.engine.cols * cfg.code_width))),
        "x": In(stream.Signature(input_layout(e))),
        "y": Out(stream.Signature(output_layout(e))),
    })


class LaneUnit(wiring.Component):
    """``cols`` lanes computing a window run's partial sums.

    Attributes
    ----------
    w, x, y : streams
        See :func:`lane_signature`; ``x`` carries ``rows == cols`` activations per vector.
    op : In(3)
        The run's window flags (:func:`~.layer_setup.window_flags`: bit 0 max, bit 1 sum,
        bit 2 depthwise); held for the run. With none set the lanes compute sums.
    engine : In(4)
        The running engine (depthwise): its PE kind's terms; held for the run.
    """

    def __init__(self, cfg: CoreConfig):
        if cfg.engine.rows != cfg.engine.cols:
            raise ValueError(f"the lane unit needs rows == cols, not {cfg.engine.rows}x"
                             f"{cfg.engine.cols}")
        self._cfg = cfg
        sig = lane_signature(cfg).members
        super().__init__({**sig, "op": In(len(LANE_OPS)), "engine": In(4)})

    def elaborate(self, platform):
        cfg = self._cfg
        C, a, A, W = cfg.engine.cols, cfg.engine.act_bits, cfg.acc_width, cfg.code_width
        m = Module()
        is_max, depthwise = self.op[0], self.op[2]

        advance = Signal()
        m.d.comb += advance.eq(self.y.ready | ~self.y.valid)

        # One weight row per tile (depthwise): pending once in, taken by the tile's first beat.
        starts_tile = Signal(init=1)
        pending = Signal()
        shadow = Signal(C * W, reset_less=True)
        need = depthwise & starts_tile
        take, swap = Signal(), Signal()
        m.d.comb += [
            self.x.ready.eq(advance & (~need | pending)),
            take.eq(self.x.valid & self.x.ready),
            swap.eq(take & need),
            self.w.ready.eq(~pending),
        ]
        with m.If(take):
            m.d.sync += starts_tile.eq(self.x.payload.last)
        with m.If(self.w.valid & self.w.ready):
            m.d.sync += [shadow.eq(self.w.payload), pending.eq(1)]
        with m.If(swap):
            m.d.sync += pending.eq(0)

        # Stage 1: the input registers; the active weight row changes with a tile's first beat.
        valid1, last1 = Signal(), Signal()
        x1 = Signal(C * a, reset_less=True)
        p1 = Signal(C * A, reset_less=True)
        w1 = Signal(C * W, reset_less=True)
        with m.If(advance):
            m.d.sync += [valid1.eq(take), last1.eq(self.x.payload.last),
                         x1.eq(self.x.payload.data), p1.eq(self.x.payload.psum)]
        with m.If(swap):
            m.d.sync += w1.eq(shadow)

        # Stage 2: the lanes.
        valid2, last2 = Signal(), Signal()
        result = Signal(C * A, reset_less=True)
        lanes = []
        for j in range(C):
            x = x1.word_select(j, a).as_signed()
            p = p1.word_select(j, A).as_signed()
            code = w1.word_select(j, W)
            value = Mux(is_max, Mux(x > p, x, p), p + x)
            for k, e in enumerate(cfg.engines):
                term = pe_class(e.pe).accumulate(e, p, x, code[:e.code_width])
                value = Mux(depthwise & (self.engine == k), term, value)
            lanes.append(value[:A])
        with m.If(advance):
            m.d.sync += [valid2.eq(valid1), last2.eq(last1), result.eq(Cat(lanes))]
        m.d.comb += [
            self.y.valid.eq(valid2),
            self.y.payload.data.eq(result),
            self.y.payload.last.eq(last2),
        ]
        return m
