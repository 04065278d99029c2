"""The ShiftNet / AddressNet block: a shifted read feeding a 1x1 convolution on the PE array.

:class:`ShiftBlock` composes three components, stream to stream, with nothing in between::

    cmd ─▶ ShiftUnit ──(one element per cycle, pixel-major)──▶ Vectorizer ──▶ PEArray ─▶ y
    w0, w1, tab ─┘      (rows channels per pixel)           (rows per vector)   ▲
                                                                      w ──────┘

For a map of ``C = rows`` channels the array computes, per pixel ``(y, x)``,
``y[j] = sum_c term(shift(x)[c, y, x], W[c, j])``: the block ``y = W^T * shift(x)`` of ShiftNet
and AddressNet (``sim.shift_golden.shift_block_forward``). A whole map is one weight tile:
its final pixel's vector carries ``last``, so each command needs one weight tile on ``w``.
"""

from amaranth.hdl import Module
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..params.config import ArrayConfig, ConfigError
from ..params.shift_config import ShiftUnitConfig, ORDERS
from .shift_layouts import command_layout, output_layout, status_layout
from .array import PEArray, array_signature
from .shift_unit import ShiftUnit, shift_unit_signature
from .vectorize import Vectorizer


__all__ = ["ShiftBlock", "block_command_layout", "block_signature"]


def block_command_layout(cfg: ShiftUnitConfig):
    """The unit's command without ``channels`` and ``order``: the block fixes both."""
    return data.StructLayout({name: f.shape for name, f in command_layout(cfg)
                              if name not in ("channels", "order")})


def block_signature(shift_cfg: ShiftUnitConfig, array_cfg: ArrayConfig):
    """The signature of :class:`ShiftBlock`."""
    unit = shift_unit_signature(shift_cfg).members
    engine = array_signature(array_cfg).members
    return wiring.Signature({
        "w0": unit["w0"], "w1": unit["w1"], "tab": unit["tab"],
        "cmd": In(stream.Signature(block_command_layout(shift_cfg))),
        "w": engine["w"], "y": engine["y"],
        "status": Out(status_layout()), "status_clear": In(1),
    })


class ShiftBlock(wiring.Component):
    """A :class:`ShiftUnit` whose pixel-major reads feed the array through a :class:`Vectorizer`.

    Every command reads ``array_cfg.rows`` channels in pixel-major order (the command has no
    ``channels`` or ``order`` field); everything else (mode, base, ``H``, ``W``, rotation,
    radius, group, the table) is as for the unit.

    Parameters
    ----------
    shift_cfg : ShiftUnitConfig
        The buffer; ``channels >= array_cfg.rows`` and the same ``act_bits`` as the array.
    array_cfg : ArrayConfig
        The array (its ``rows`` is the number of channels per pixel).
    engine : wiring.Component, optional
        The engine fed, with the signature ``array_signature(array_cfg)``; by default a
        :class:`PEArray` with its columns as submodules. The tree engine has the same
        signature and protocol.
    psum : int
        The partial sum every vector carries (see :class:`Vectorizer`).

    Raises
    ------
    ConfigError
        ``act_bits`` if the two widths differ, ``channels`` if the buffer's largest map has
        fewer channels than the array has rows.
    """

    def __init__(self, shift_cfg: ShiftUnitConfig, array_cfg: ArrayConfig, *, engine=None,
                 psum=0):
        try:
            self._check(shift_cfg, array_cfg)
            # Checked now, so that a bad psum fails at construction.
            self._vectorizer = Vectorizer(array_cfg, output_layout(shift_cfg), psum=psum)
        except ConfigError:
            self._MustUse__silence = True       # refused: no "created but never used" warning
            raise
        self._shift_cfg = shift_cfg
        self._array_cfg = array_cfg
        self._engine = engine
        super().__init__(block_signature(shift_cfg, array_cfg))

    @staticmethod
    def _check(shift_cfg, array_cfg):
        if shift_cfg.act_bits != array_cfg.act_bits:
            raise ConfigError("act_bits", f"act_bits of the shift unit ({shift_cfg.act_bits}) "
                                          f"must equal the array's act_bits = "
                                          f"{array_cfg.act_bits}")
        if shift_cfg.channels < array_cfg.rows:
            raise ConfigError("channels", f"channels must be at least the array's rows = "
                                          f"{array_cfg.rows} (one pixel's channels are one "
                                          f"input vector), not {shift_cfg.channels}")

    @property
    def shift_cfg(self):
        return self._shift_cfg

    @property
    def array_cfg(self):
        return self._array_cfg

    def elaborate(self, platform):
        m = Module()
        m.submodules.unit = unit = ShiftUnit(self._shift_cfg)
        m.submodules.vectorizer = vec = self._vectorizer
        engine = self._engine if self._engine is not None else PEArray(self._array_cfg)
        m.submodules.engine = engine

        for name in ("w0", "w1", "tab"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(unit, name))
        wiring.connect(m, unit.out, vec.i)
        wiring.connect(m, vec.o, engine.x)
        wiring.connect(m, wiring.flipped(self.w), engine.w)
        wiring.connect(m, engine.y, wiring.flipped(self.y))

        m.d.comb += [
            unit.cmd.valid.eq(self.cmd.valid),
            self.cmd.ready.eq(unit.cmd.ready),
            unit.cmd.payload.channels.eq(self._array_cfg.rows),
            unit.cmd.payload.order.eq(ORDERS["pixel_major"]),
            self.status.eq(unit.status),
            unit.status_clear.eq(self.status_clear),
        ]
        for name, _ in block_command_layout(self._shift_cfg):
            m.d.comb += getattr(unit.cmd.payload, name).eq(getattr(self.cmd.payload, name))
        return m

