"""Window runs in a program: pooling and depthwise nodes the core's lane unit computes.

A core with ``window_ops`` (interface 2.3, ``docs/interface.md``, "Window runs") reduces each
channel over a window on its lane unit. The compiler lowers three kinds of node to such runs:

* ``maxpool2d``: a ``win_max`` run; post-processing passes the maxima through (bias 0, shift 0,
  no ReLU);
* ``avgpool2d`` over ``N = 2^k`` positions: a ``win_sum`` run whose post-processing shift
  ``k + shift`` is the node's exact division (``IntAvgPool2d``'s rule; other ``N`` are no shift
  and stay on the host);
* ``conv2d`` with ``groups == in_c == out_c`` (depthwise, channel multiplier 1) of one of the
  core's PE kinds: a ``depthwise`` run on that engine's terms, with the node's own
  post-processing.

:func:`window_placement` says whether a node can run so (or why not), :func:`window_parts` gives
the :class:`~mulfree.host.steps.CoreStep` fields of its run. NumPy only.

A depthwise run goes to the array instead of the lane unit (a *taps* run, interface 2.4,
:mod:`mulfree.params.tap_walk`) when :func:`taps_fit` says the core's tap window takes it:
its engine has one, the kernel fits the window's side, its padded line fits the line
buffers, and nothing is fused that a taps run refuses (a residual add, a global pool).
"""

import numpy as np

from ..params.layer_golden import PostParams
from ..params.post_config import shift_range
from ..params.window_golden import avgpool_post_shift


__all__ = ["WINDOW_KINDS", "window_op", "window_placement", "window_parts", "taps_fit",
           "tap_line_needed"]

#: Node kinds that may become window runs.
WINDOW_KINDS = ("maxpool2d", "avgpool2d", "conv2d")


def window_op(info, layer):
    """The window run of a node (``"max"``, ``"sum"``, ``"depthwise"``), or None when the node
    is no pooling or depthwise node at all."""
    if info.kind == "maxpool2d":
        return "max"
    if info.kind == "avgpool2d":
        return "sum"
    if info.kind == "conv2d" and layer.groups != 1:
        return "depthwise"
    return None


def window_placement(info, layer, pes, window_ops):
    """``("core", "")`` when the lane unit can run the node, else ``("host", reason)``; None
    for a node that is no window node (placed by the usual rules)."""
    op = window_op(info, layer)
    if op is None:
        return None
    label = "depthwise" if op == "depthwise" else "no weights"
    if not window_ops:
        return ("host", label if op == "depthwise" else "no weights (the core has no lane unit)")
    if op == "depthwise":
        c = info.in_shapes[0][0]
        if layer.groups != c or np.shape(layer.codes)[0] != c:
            return ("host", f"depthwise with a channel multiplier of "
                            f"{np.shape(layer.codes)[0] // max(1, layer.groups)}: the lane unit "
                            f"takes 1")
        if layer.pe not in pes:
            return ("host", f"{layer.pe} PEs, host fallback")
        if layer.shifts is not None:
            return ("host", "depthwise with a shift table")
    if op == "sum" and avgpool_post_shift(layer.kernel, layer.shift) is None:
        kh, kw = layer.kernel
        return ("host", f"a {kh}x{kw} average: {kh * kw} is no power of two, the division no "
                        f"shift")
    return ("core", "")


def window_parts(cfg, info, layer, engine, codes):
    """The fields of a window node's :class:`~mulfree.host.steps.CoreStep`: ``(window,
    w_codes, post, stride, padding)``.

    ``codes`` are a depthwise node's codes in engine ``engine``'s encoding (None for a pool);
    ``w_codes`` is ``[C, 1, kh, kw]`` (zeros for a pool: no weights are sent).

    Raises
    ------
    ValueError
        If an average pool's post-processing shift is outside the core's range (the
        compiler then runs the node on the host).
    """
    op = window_op(info, layer)
    c = info.in_shapes[0][0]
    if op == "depthwise":
        w = np.asarray(codes, dtype=np.int64)
        post = PostParams(np.asarray(layer.bias, dtype=np.int64),
                          np.asarray(layer.shift, dtype=np.int64),
                          np.asarray(layer.relu, dtype=bool))
        return op, w, post, tuple(layer.stride), tuple(layer.padding)
    kh, kw = layer.kernel
    w = np.zeros((c, 1, kh, kw), dtype=np.int64)
    shift = 0
    if op == "sum":
        shift = avgpool_post_shift(layer.kernel, layer.shift)
        lo, hi = shift_range(cfg.post_engine)
        if not lo <= shift <= hi:
            raise ValueError(f"the average's post-processing shift {shift} is outside the "
                             f"core's [{lo}, {hi}]")
    post = PostParams(np.zeros(c, dtype=np.int64), np.full(c, shift, dtype=np.int64),
                      np.zeros(c, dtype=bool))
    return op, w, post, tuple(layer.stride), tuple(layer.padding)


def tap_line_needed(kernel, stride, out_hw):
    """The padded line a taps run reads: ``(out_w - 1)*stride_w + kernel_w`` pixels."""
    return (out_hw[1] - 1) * stride[1] + kernel[1]


def taps_fit(cfg, engine, kernel, stride, out_hw, fused_residual=False, fused_pool=False):
    """Whether a depthwise run on engine ``engine`` of ``cfg`` may be a taps run (on the
    array, interface 2.4) rather than a lane-unit run: the core has a tap window on that
    engine (``cfg.tap_engines``), ``kernel`` fits ``cfg.tap_side`` in both dimensions, the
    padded line fits ``cfg.tap_line``, and no residual add or global pool is fused (a taps run
    refuses them)."""
    kh, kw = kernel
    return (cfg.taps > 0 and engine in cfg.tap_engines and kh <= cfg.tap_side
            and kw <= cfg.tap_side and not fused_residual and not fused_pool
            and tap_line_needed(kernel, stride, out_hw) <= cfg.tap_line)
