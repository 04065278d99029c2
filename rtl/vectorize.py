"""Width adapter: packs a stream of scalar elements into the PE array's input vectors.

:class:`Vectorizer` takes one element per beat (a payload with ``data`` and ``last``, such as
:class:`~mulfree.rtl.shift_unit.ShiftUnit`'s output) and emits one beat per ``rows`` elements,
shaped exactly as :class:`~mulfree.rtl.array.PEArray`'s ``x`` payload
(:func:`~mulfree.rtl.array.input_layout`)::

    e0 e1 ... e(rows-1) │ e(rows) ...        ─▶  {data: e(rows-1) .. e1 e0   (lane r = element r)
    (one per cycle)     │                          psum: cols copies of the constant psum
                                                   last: last of the vector's final element}

Fed by a pixel-major read (``(y, x, c)`` order) of a map with ``C = rows`` channels, each beat
is one pixel's channel vector, and the map's final pixel carries ``last``: the whole map is one
weight tile of the array, a 1x1 convolution.

A ``last`` in the middle of a vector ends it early: the lanes after it are 0. (A stream whose
length is a multiple of ``rows`` never does this; :class:`~mulfree.rtl.block.ShiftBlock`
guarantees it.)

Throughput: one element per cycle in, so one vector per ``rows`` cycles out; the output
register frees itself in the cycle it is taken, so a consumer that is always ready never
stalls the producer.
"""

from amaranth.hdl import Signal, Module, Cat, Const, Mux, Shape, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..params.config import ArrayConfig, ConfigError
from .array import input_layout


__all__ = ["Vectorizer", "element_layout"]


def element_layout(cfg: ArrayConfig):
    """The smallest element payload a :class:`Vectorizer` takes: ``{data, last}``."""
    return data.StructLayout({"data": unsigned(cfg.act_bits), "last": unsigned(1)})


class Vectorizer(wiring.Component):
    """Packs ``cfg.rows`` consecutive elements into one input vector of the array ``cfg``.

    Parameters
    ----------
    cfg : ArrayConfig
        The array fed; ``rows`` elements make a vector.
    layout : data.StructLayout, optional
        The element payload: it must have a ``data`` field of ``cfg.act_bits`` bits and a
        ``last`` field of one bit; other fields (e.g. the shift unit's position fields) are
        ignored. Defaults to :func:`element_layout`.
    psum : int
        The partial sum sent with every vector (the same in every column), in
        ``cfg.acc_range``; 0 by default.

    Attributes
    ----------
    i : In(stream.Signature(layout))
        Elements; element ``k`` of a vector goes to lane (row) ``k``.
    o : Out(stream.Signature(input_layout(cfg)))
        Vectors, ``last`` set on the one holding an element with ``last``.

    Raises
    ------
    ConfigError
        ``act_bits`` if the element's ``data`` is not ``cfg.act_bits`` wide, ``psum`` if the
        constant is out of the accumulator's range.
    """

    def __init__(self, cfg: ArrayConfig, layout=None, *, psum=0):
        try:
            layout = self._check(cfg, layout, psum)
        except ConfigError:
            self._MustUse__silence = True       # refused: no "created but never used" warning
            raise
        self._cfg = cfg
        self._psum = psum
        super().__init__({
            "i": In(stream.Signature(layout)),
            "o": Out(stream.Signature(input_layout(cfg))),
        })

    @staticmethod
    def _check(cfg, layout, psum):
        layout = element_layout(cfg) if layout is None else data.StructLayout(
            {name: f.shape for name, f in layout})
        fields = dict(layout)
        if "data" not in fields or "last" not in fields:
            raise ConfigError("layout", f"the element layout must have data and last fields, "
                                        f"not {', '.join(fields) or 'none'}")
        width = Shape.cast(fields["data"].shape).width
        if width != cfg.act_bits:
            raise ConfigError("act_bits", f"act_bits of the elements ({width}) must equal the "
                                          f"array's act_bits = {cfg.act_bits}")
        lo, hi = cfg.acc_range
        if isinstance(psum, bool) or not isinstance(psum, int) or not lo <= psum <= hi:
            raise ConfigError("psum", f"psum must be an integer in the accumulator's range "
                                      f"[{lo}, {hi}], not {psum!r}")
        return layout

    @property
    def cfg(self):
        return self._cfg

    def elaborate(self, platform):
        cfg = self._cfg
        rows, a, acc = cfg.rows, cfg.act_bits, cfg.acc_width
        m = Module()

        lane = Signal(range(max(rows, 2)))
        held = [Signal(a, name=f"lane_{r}") for r in range(rows - 1)]
        vector = Signal(rows * a)
        vector_last = Signal()
        out_valid = Signal()

        element = self.i.payload.data
        take = Signal()
        complete = Signal()
        out_free = ~out_valid | self.o.ready
        m.d.comb += [
            self.i.ready.eq(out_free),
            take.eq(self.i.valid & self.i.ready),
            complete.eq((lane == rows - 1) | self.i.payload.last),
        ]
        # Lane r of the finished vector: the element arriving now, an element held earlier,
        # or 0 after an early last.
        lanes = [_lane(lane, r, element, held[r] if r < rows - 1 else None)
                 for r in range(rows)]
        with m.If(take & complete):
            m.d.sync += [vector.eq(Cat(lanes)), vector_last.eq(self.i.payload.last),
                         out_valid.eq(1), lane.eq(0)]
        with m.Else():
            with m.If(self.o.ready):
                m.d.sync += out_valid.eq(0)
            with m.If(take):
                m.d.sync += lane.eq(lane + 1)
                for r in range(rows - 1):
                    with m.If(lane == r):
                        m.d.sync += held[r].eq(element)

        psum = Const(sum((self._psum % (1 << acc)) << (c * acc) for c in range(cfg.cols)),
                     cfg.cols * acc)
        m.d.comb += [
            self.o.valid.eq(out_valid),
            self.o.payload.data.eq(vector),
            self.o.payload.psum.eq(psum),
            self.o.payload.last.eq(vector_last),
        ]
        return m


def _lane(lane, r, element, held):
    """Lane ``r`` of a vector finished while ``lane`` elements were held."""
    if held is None:
        return Mux(lane == r, element, 0)
    return Mux(lane == r, element, Mux(lane > r, held, 0))
