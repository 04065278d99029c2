"""The core's checks of window runs (interface 2.3) and taps runs (interface 2.4) on a host
:class:`~mulfree.host.layer_spec.Layer`: what :func:`mulfree.host.core_layer.check_layer`
refuses for them, in the core's order (DESCRIPTOR, then WINDOW after ENGINE, then TOO_BIG).

The conditions are ``CORE_ERRORS``' (``params/core_config.py``); the geometry ``g`` is
:func:`~mulfree.host.core_layer.layer_geometry`'s. NumPy only.
"""

import numpy as np

from ..params.core_config import CoreConfig
from ..params.tap_walk import tap_span
from .layer_spec import LayerError


__all__ = ["check_window_descriptor", "check_window_unit", "check_taps_fit"]


def check_window_descriptor(cfg: CoreConfig, layer, g):
    """A window run's descriptor conditions (error DESCRIPTOR): ``in_c = out_c``, no shift
    table, no ``reuse_weights`` for max and sum (they load no weights), ``2 * pad <= kernel``
    for max (a window wholly in the padding has no maximum); a taps run's: no residual, no
    global pool, a kernel within the tap window's side (``cfg.tap_side``; checked on a core
    with a tap window, the others refuse ``taps`` with error WINDOW) and ``m_block = out_h *
    out_w`` (one block: a taps run takes no partial sums)."""
    window = layer.window
    if window is None:
        return
    if g["in_c"] != g["out_c"]:
        raise LayerError("w_codes", f"w_codes of a {window} window run must have as many "
                                    f"channels as x (in_c = out_c = {g['in_c']}), not "
                                    f"{g['out_c']}", "DESCRIPTOR")
    if layer.shifts is not None:
        raise LayerError("shifts", f"shifts must be None in a {window} window run (no shift "
                                   f"table), not an array", "DESCRIPTOR")
    if window != "depthwise" and isinstance(layer.reuse_weights, (bool, np.bool_)) \
            and layer.reuse_weights:
        raise LayerError("reuse_weights", f"reuse_weights must be False in a {window} window "
                                          f"run (it loads no weights), not True", "DESCRIPTOR")
    if window == "max":
        for pad, kernel in (("pad_h", "kernel_h"), ("pad_w", "kernel_w")):
            if 2 * g[pad] > g[kernel]:
                raise LayerError(pad, f"{pad} must be at most {kernel} / 2 = {g[kernel] // 2} "
                                      f"in a max window run (a window wholly in the padding "
                                      f"has no maximum), not {g[pad]}", "DESCRIPTOR")
    if layer.taps:
        _check_taps_descriptor(cfg, layer, g)


def _check_taps_descriptor(cfg, layer, g):
    for name, value in (("residual", layer.residual), ("pool", layer.pool)):
        if value is not None:
            raise LayerError(name, f"{name} must be None in a taps run (its results leave the "
                                   f"array per pixel, no fused residual or pool), not "
                                   f"{value!r}", "DESCRIPTOR")
    side = cfg.tap_side
    for kernel in ("kernel_h", "kernel_w"):
        if cfg.taps and g[kernel] > side:
            raise LayerError("w_codes", f"w_codes: {kernel} of a taps run must be at most the "
                                        f"tap window's side {side} (TAPS.side), not "
                                        f"{g[kernel]}", "DESCRIPTOR")
    if g["m_block"] != g["M"]:
        raise LayerError("m_block", f"m_block of a taps run must be out_h * out_w = {g['M']} "
                                    f"(one block), not {g['m_block']!r}", "DESCRIPTOR")


def check_window_unit(cfg: CoreConfig, layer):
    """Error WINDOW (after ENGINE, before RESIDENT): a window run on a core without the lane
    unit; a taps run on a core without the tap window or on an engine without one (a tree or
    a folded engine: not in ``cfg.tap_engines``)."""
    if layer.window is not None and not cfg.window_ops:
        raise LayerError("window", f"window must be None on a core without the lane unit "
                                   f"(window_ops False, WINDOW.lanes = 0), not "
                                   f"{layer.window!r}", "WINDOW")
    if layer.taps and not cfg.taps:
        raise LayerError("taps", "taps must be False on a core without the tap window (taps "
                                 "0, TAPS.taps = 0), not True", "WINDOW")
    if layer.taps and layer.engine not in cfg.tap_engines:
        raise LayerError("taps", f"taps must be False on engine {layer.engine} (its bit of "
                                 f"TAPS.engines is 0: the tap window feeds engines "
                                 f"{list(cfg.tap_engines)}), not True", "WINDOW")


def check_taps_fit(cfg: CoreConfig, layer, g):
    """A taps run's error TOO_BIG: its padded line ``(out_w-1)*stride_w + kernel_w`` longer
    than the line buffers (``cfg.tap_line``)."""
    if not layer.taps:
        return
    _, line = tap_span((g["kernel_h"], g["kernel_w"]), (g["stride_h"], g["stride_w"]),
                       (g["out_h"], g["out_w"]))
    if line > cfg.tap_line:
        raise LayerError("x", f"x: a taps run's padded line (out_w-1)*stride_w + kernel_w = "
                              f"{line} must be at most tap_line = {cfg.tap_line} (TAPS.line)",
                         "TOO_BIG")
