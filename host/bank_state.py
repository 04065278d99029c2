"""What the core's two feature-map banks hold between runs: a host model of layer chaining.

A core with ``fmap_banks = 2`` (interface 2.2, ``params/core_config.py``) keeps, per bank, a
valid bit and the shape ``(c, h, w)`` of the tensor it holds. The rules (error ``RESIDENT``,
``DESC_FLAGS``):

* a run with ``acts_resident`` needs bank ``in_bank`` to hold a tensor of shape ``(in_c, in_h,
  in_w)``; one with ``short_resident`` needs the other bank to hold one of shape ``(short_c,
  out_h*short_stride, out_w*short_stride)`` (the core checks after ENGINE, before TOO_BIG);
* at its start the banks the run writes become invalid: ``in_bank`` when its ACTS are
  streamed, the other bank with ``keep``;
* a run that ends well leaves bank ``in_bank`` holding its input ``(in_c, in_h, in_w)`` and,
  with ``keep``, the other bank its output ``(out_c, out_h, out_w)`` (``(out_c, 1, 1)`` with a
  global pool); a bank it did not write keeps what it held;
* an error or a soft reset invalidates both.

:class:`BankState` follows these rules for the host (:func:`~mulfree.host.core_layer.
check_layer` with ``banks=``, the compiler's plan, a device) and for the emulator
(:mod:`mulfree.host.core_emulator`), which keeps the banks' contents in :attr:`BankState.data`
too. NumPy only.
"""

import numpy as np

from .layer_spec import Layer, LayerError


__all__ = ["BankState", "layer_shapes"]


def layer_shapes(layer: Layer):
    """``(input, output, shortcut source)`` shapes ``(c, h, w)`` of ``layer`` (the output
    ``(out_c, 1, 1)`` with a pool; the shortcut ``None`` without a residual)."""
    x, w = np.shape(layer.x), np.shape(layer.w_codes)
    (sh, sw), (ph, pw) = layer.stride, layer.padding
    out_h = (x[1] + 2 * ph - w[2]) // sh + 1
    out_w = (x[2] + 2 * pw - w[3]) // sw + 1
    out = (w[0], 1, 1) if layer.pool is not None else (w[0], out_h, out_w)
    short = None if layer.shortcut is None else tuple(int(v) for v in np.shape(layer.shortcut))
    return tuple(int(v) for v in x), tuple(int(v) for v in out), short


class BankState:
    """The two banks' valid bits and shapes (``shapes[b]``: ``(c, h, w)`` or ``None``), and
    for the emulator their contents (``data[b]``: ``[fmap_vectors, rows]`` int64, or
    ``None``: not modelled)."""

    def __init__(self):
        self.shapes = [None, None]
        self.data = [None, None]

    def clear(self):
        """Both banks invalid: after an error or a soft reset (the contents stay, unread)."""
        self.shapes = [None, None]

    def problem(self, in_bank, acts_resident, short_resident, in_shape, short_shape):
        """``None`` if a run with these fields finds its resident tensors, else ``(param,
        message)`` for error RESIDENT (the input's bank first)."""
        if acts_resident and self.shapes[in_bank] != tuple(in_shape):
            return "acts_resident", (f"acts_resident needs bank {in_bank} to hold the input "
                                     f"(in_c, in_h, in_w) = {tuple(in_shape)}, but it holds "
                                     f"{self._what(in_bank)}")
        other = 1 - in_bank
        if short_resident and self.shapes[other] != tuple(short_shape):
            return "short_resident", (f"short_resident needs bank {other} to hold the "
                                      f"shortcut source (short_c, out_h*s, out_w*s) = "
                                      f"{tuple(short_shape)}, but it holds "
                                      f"{self._what(other)}")
        return None

    def _what(self, b):
        return "nothing valid" if self.shapes[b] is None else f"{self.shapes[b]}"

    def check(self, cfg, layer: Layer, g=None):
        """Raise :class:`~mulfree.host.core_layer.LayerError` (``core_error="RESIDENT"``,
        ``param`` ``"acts_resident"`` or ``"short_resident"``) when the banks do not hold what
        ``layer``'s resident flags read. ``cfg`` and ``g`` (its geometry) are accepted for the
        caller's convenience; the shapes come from the layer."""
        if not (layer.acts_resident or layer.short_resident):
            return
        in_shape, _, short = layer_shapes(layer)
        found = self.problem(int(layer.in_bank), bool(layer.acts_resident),
                             bool(layer.short_resident), in_shape, short)
        if found:
            raise LayerError(found[0], found[1], "RESIDENT")

    def start(self, in_bank, acts_resident, keep):
        """A run starts: the banks it writes become invalid."""
        if not acts_resident:
            self.shapes[in_bank] = None
        if keep:
            self.shapes[1 - in_bank] = None

    def finish(self, in_bank, keep, in_shape, out_shape):
        """A run ended well: bank ``in_bank`` holds its input, with ``keep`` the other bank
        its output."""
        self.shapes[in_bank] = tuple(in_shape)
        if keep:
            self.shapes[1 - in_bank] = tuple(out_shape)

    def after(self, layer: Layer, ok):
        """Update for a run of ``layer`` that ended well (``ok``) or with an error."""
        if not ok:
            self.clear()
            return
        in_shape, out_shape, _ = layer_shapes(layer)
        self.start(int(layer.in_bank), bool(layer.acts_resident), bool(layer.keep))
        self.finish(int(layer.in_bank), bool(layer.keep), in_shape, out_shape)

    def bank(self, b, fmap_vectors, lanes):
        """Bank ``b``'s contents ``[fmap_vectors, lanes]`` (made, zero, on first use)."""
        if self.data[b] is None or self.data[b].shape != (fmap_vectors, lanes):
            self.data[b] = np.zeros((fmap_vectors, lanes), dtype=np.int64)
        return self.data[b]
