"""One run of the core as the host describes it: :class:`Layer`, and :class:`LayerError`.

The description only (the fields and their meaning); :mod:`mulfree.host.core_layer` derives
the geometry and holds the core's checks, and re-exports both names. NumPy only.
"""

from dataclasses import dataclass

import numpy as np

from ..params.layer_golden import PostParams, ResidualParams


__all__ = ["Layer", "LayerError", "WINDOW_RUNS"]

#: ``Layer.window``'s values (interface 2.3): a window run on the lane unit, by the name of
#: its operation, and its descriptor flag.
WINDOW_RUNS = {"max": "win_max", "sum": "win_sum", "depthwise": "depthwise"}


class LayerError(ValueError):
    """A layer the core would refuse, or one the stream formats cannot carry.

    The message names the parameter, the value and what is allowed. ``param`` holds the
    parameter's name; ``core_error`` the name of the ``CORE_ERRORS`` code the core would stop
    with (``"DESCRIPTOR"``, ``"TOO_BIG"``, ``"WINDOW"``, ...), or ``None`` for a value the host
    cannot encode.
    """

    def __init__(self, param, message, core_error=None):
        super().__init__(message)
        self.param = param
        self.core_error = core_error


def _pair(name, value):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value), int(value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                                  for v in value):
        raise LayerError(name, f"{name} must be an integer or a pair of integers, "
                               f"not {value!r}")
    return int(value[0]), int(value[1])


@dataclass(frozen=True, eq=False)
class Layer:
    """One layer the core runs: a convolution (or matrix product) with post-processing, or a
    window run (interface 2.3: max pooling, the sums of an average pool, a depthwise
    convolution; ``window``).

    Attributes
    ----------
    x : array of shape ``(in_c, in_h, in_w)``
        Input activations, signed ``act_bits``.
    w_codes : array of shape ``(out_c, in_c, kernel_h, kernel_w)``
        Weight codes as the engine takes them (``mulfree.params.golden``). A window run's are
        ``(C, 1, kernel_h, kernel_w)``: a depthwise run's codes of each channel; for ``max``
        and ``sum`` they only give the kernel's size (all zeros; not sent).
    post : PostParams
        Per-output-channel bias, shift and relu.
    stride, padding : int or pair of int
        ``(vertical, horizontal)``; an integer means both.
    shifts : array of shape ``(in_c, 2)`` or None
        Per-input-channel ``(dy, dx)``, each in {-1, 0, 1}: the map is shifted
        (``xs[c, y, x] = x[c, y + dy, x + dx]``, 0 outside) before the convolution. ``None``
        leaves ``flags.shift`` clear.
    m_block : int or None
        Output pixels per block; ``None`` lets :func:`~mulfree.host.core_layer.choose_m_block` pick.
    reuse_weights : bool
        Set ``flags.reuse_weights``: send no PARAMS, SHIFT or WEIGHTS, the previous run's stay
        in use (``w_codes``, ``post`` and ``shifts`` must still be those of that run: the
        golden output is computed from them).
    shortcut : array of shape ``(short_c, out_h*s, out_w*s)`` or None
        The residual's shortcut *source*, signed ``act_bits`` (SHORTCUT packets), ``s =
        residual.stride``: the core adds
        :func:`~mulfree.params.layer_golden.shortcut_source` of it (channel ``c`` of the output
        adds source channel ``c - residual.offset`` at pixel ``(oy*s, ox*s)``, 0 outside
        ``[offset, offset + short_c)``). Given exactly when ``residual`` is. Sent with every
        run (never reused).
    residual : ResidualParams or None
        Add the aligned ``shortcut`` after post-processing (``flags.residual``, ``res_*`` and
        ``short_*`` fields; :func:`~mulfree.params.layer_golden.residual_add`). ``None``: no
        add.
    clamp : pair of int or None
        ``(lo, hi)``: clamp every output to ``[lo, hi]`` after the add (``flags.clamp``; ReLU6
        is ``(0, six)``), both in the activation range, ``lo <= hi``. ``None``: no clamp.
    pool : int or None
        ``pool_shift``: the run's output is the global average pool of the map after the add
        and the clamp (``flags.global_pool``;
        :func:`~mulfree.params.layer_golden.global_pool`), one pixel ``(out_c, 1, 1)``.
        ``None``: no pool.
    engine : int
        The engine of a multi-engine core the layer runs on (the descriptor's ``engine``
        field; ``CoreConfig.engines[engine]``): ``w_codes`` are codes of that engine's PE
        kind. 0, the only engine of a single-engine core, by default.
    in_bank : int
        Layer chaining (interface 2.2, a core with ``fmap_banks = 2``; ``docs/runtime.md``):
        the feature-map bank (0 or 1) the run's input is in: its ACTS are written there, or
        with ``acts_resident`` read from there.
    acts_resident : bool
        No ACTS packets: the input is the tensor bank ``in_bank`` holds (``x`` is still given,
        for the golden output, and must be that tensor).
    keep : bool
        Every result vector is also written into the other bank, ``1 - in_bank``, at ``pixel
        * NT + nt`` (a global pool's at ``0 .. NT - 1``): the next run's input or shortcut.
    quiet : bool
        With ``keep``: no result beats are sent.
    short_resident : bool
        With ``residual``: no SHORTCUT packets, the shortcut source is the tensor the other
        bank holds (``shortcut`` is still given and must be that tensor). With ``keep`` too
        the output is written in place over it.
    window : str or None
        A window run on the lane unit of a core with ``window_ops`` (interface 2.3,
        ``params/window_golden.py``): ``"max"`` (``flags.win_max``: the maximum of each
        channel over the ``kernel_h x kernel_w`` window; padding never wins), ``"sum"``
        (``flags.win_sum``: the window's sum, padding 0; an average pool divides with
        ``post``'s shift, :func:`~mulfree.params.window_golden.avgpool_post_shift`) or
        ``"depthwise"`` (``flags.depthwise``: a convolution with ``groups = C`` on engine
        ``engine``'s terms). Channel by channel: ``in_c = out_c = C``; ``shifts`` must be
        None; ``max`` and ``sum`` never reuse weights (they have none). The fused tail and
        the chaining fields as for a convolution. ``None``: a convolution.
    taps : bool
        With ``window="depthwise"``: a taps run (interface 2.4, ``flags.taps``) on a core with
        a tap window (``CoreConfig.taps``): the same convolution on engine ``engine``'s
        array, kernel taps on rows and channels on columns (:mod:`mulfree.params.tap_walk`),
        one block (``m_block = out_h*out_w``), no residual and no global pool.
    """

    x: np.ndarray
    w_codes: np.ndarray
    post: PostParams
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    shifts: np.ndarray | None = None
    m_block: int | None = None
    reuse_weights: bool = False
    shortcut: np.ndarray | None = None
    residual: ResidualParams | None = None
    clamp: tuple | None = None
    pool: int | None = None
    engine: int = 0
    in_bank: int = 0
    acts_resident: bool = False
    keep: bool = False
    quiet: bool = False
    short_resident: bool = False
    window: str | None = None
    taps: bool = False

    def __post_init__(self):
        object.__setattr__(self, "stride", _pair("stride", self.stride))
        object.__setattr__(self, "padding", _pair("padding", self.padding))
        if self.window is not None and (not isinstance(self.window, str)
                                        or self.window not in WINDOW_RUNS):
            raise LayerError("window", f"window must be None or one of "
                                       f"{', '.join(map(repr, WINDOW_RUNS))}, not "
                                       f"{self.window!r}")
        if not isinstance(self.taps, (bool, np.bool_)):
            raise LayerError("taps", f"taps must be a bool, not {self.taps!r}")
        if self.taps and self.window != "depthwise":
            raise LayerError("taps", f"taps must be False unless window is 'depthwise' (a "
                                     f"taps run is a depthwise convolution), not True with "
                                     f"window {self.window!r}")

    @classmethod
    def matmul(cls, x, w_codes, post, *, m_block=None, reuse_weights=False, shortcut=None,
               residual=None, clamp=None, pool=None, engine=0):
        """The matrix product ``[M, K] . [K, N]`` as the core runs it.

        It is the 1x1 convolution of a ``1 x M`` image with ``K`` channels: ``in_h = 1``,
        ``in_w = M``, ``in_c = K``, ``out_c = N``. The result
        (:func:`~mulfree.host.stream_results.expected_output`) has shape ``(N, 1, M)``; a
        ``shortcut`` is given as ``[M, N]``, like the product (stride 1, offset 0); ``pool``
        averages over the ``M`` rows (result ``(N, 1, 1)``).
        """
        x, w_codes = np.asarray(x), np.asarray(w_codes)
        if x.ndim != 2 or w_codes.ndim != 2:
            raise LayerError("x", f"x must be [M, K] and w_codes [K, N], not {x.shape} and "
                                  f"{w_codes.shape}")
        if shortcut is not None:
            shortcut = np.asarray(shortcut)
            if shortcut.ndim != 2:
                raise LayerError("shortcut", f"shortcut must be [M, N] like the product, not "
                                             f"{shortcut.shape}")
            shortcut = np.ascontiguousarray(shortcut.T[:, None, :])
        return cls(np.ascontiguousarray(x.T[:, None, :]),
                   np.ascontiguousarray(w_codes.T[:, :, None, None]), post,
                   m_block=m_block, reuse_weights=reuse_weights, shortcut=shortcut,
                   residual=residual, clamp=clamp, pool=pool, engine=engine)


