"""One layer the core runs: its description, its geometry, and the core's checks.

:class:`Layer` describes one run of the core (``docs/interface.md``, "The layer the
core computes"): the activations, the weight codes, the post-processing, the stride, padding
and per-channel shifts, the block size, whether the previous run's weights are reused, and the
fused tail after post-processing (a residual add of a shortcut the core aligns to the output,
a clamp, a global average pool), and the engine of a multi-engine core it runs on
(interface 2.1, ``Layer.engine``).
:func:`layer_geometry` derives its sizes and tile counts, :func:`choose_m_block` its block
size, and :func:`check_layer` refuses (:class:`LayerError`) what the core would stop on (errors
``DESCRIPTOR``, ``ENGINE``, ``WINDOW``, ``RESIDENT`` and ``TOO_BIG``) or the stream formats
cannot carry. A window run (interface 2.3, ``Layer.window``) reduces each channel over its
kernel window on the lane unit: max pooling, the sums of an average pool, a depthwise
convolution. The numbers
come from :class:`~mulfree.params.core_config.CoreConfig` and ``DESC_FIELDS``.

The stream packer (:mod:`mulfree.host.stream_format`), the golden results
(:mod:`mulfree.host.stream_results`) and the compiler build on these;
:mod:`mulfree.host.layer_stream` is their public face. NumPy only.
"""

import numpy as np

from ..params.core_config import (CoreConfig, DESC_FIELDS, RES_MAX_SHIFT, pool_shift_range,
                                  res_shift_range)
from ..params.post_config import bias_range, shift_range
from ..params.golden import check_range
from ..params.layer_golden import PostParams, ResidualParams
from .layer_spec import WINDOW_RUNS, Layer, LayerError
from .window_checks import check_taps_fit, check_window_descriptor, check_window_unit


__all__ = [
    "Layer", "LayerError", "TARGET_BLOCK_PIXELS", "hazard_window", "layer_geometry",
    "check_layer", "choose_m_block", "ceil_div", "tail_fields", "layer_engine", "CHAIN_FLAGS",
    "WINDOW_RUNS", "weight_key",
]


#: The chaining fields of a :class:`Layer` (interface 2.2), each a descriptor flag.
CHAIN_FLAGS = ("in_bank", "acts_resident", "keep", "quiet", "short_resident")
#: :func:`choose_m_block` aims at blocks of at least this many output pixels.
TARGET_BLOCK_PIXELS = 32
_FIELD_WIDTHS = {name: width for _, _, width, name in DESC_FIELDS}


def layer_engine(cfg: CoreConfig, layer: Layer):
    """The :class:`~mulfree.params.config.ArrayConfig` of the engine ``layer`` runs on
    (``cfg.engines[layer.engine]``), for a layer whose engine :func:`check_layer` accepts."""
    return cfg.engines[layer.engine]


def hazard_window(cfg: CoreConfig):
    """Shortest block (pixels) whose passes follow each other without waiting.

    A pass's first pixel needs the partial sum the previous pass wrote for it; with a shorter
    block the core waits between passes (``docs/interface.md``, "Order of work"). The value is
    ``CoreConfig.hazard_window``, the vectors in flight between the issue and the accumulator write:
    the engine's pipeline, the 4-entry input FIFO and 4 more. It repeats
    ``mulfree.rtl.layer_issue.hazard_window`` (the manifest's ``core.hazard_window``) so that
    host code needs no Amaranth; a test checks they agree.
    """
    return cfg.hazard_window


def ceil_div(a, b):
    """``ceil(a / b)`` for integers, ``b > 0``: the tiles of ``b`` lanes that ``a`` fill."""
    return -(-a // b)


def _conv_size(size, kernel, stride, pad):
    return (size + 2 * pad - kernel) // stride + 1 if stride > 0 else 0


def layer_geometry(cfg: CoreConfig, layer: Layer):
    """Sizes, tile counts and vectors per packet type of ``layer`` on ``cfg``.

    Returns
    -------
    dict
        ``in_c, in_h, in_w, out_c, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w,
        pad_h, pad_w``; the tile counts ``CT, NT, KT``; ``K = in_c * kernel_h * kernel_w``
        (terms per sum); ``M = out_h * out_w``; ``m_block`` (the layer's, or
        :func:`choose_m_block`'s); ``counts``: the vectors of each data type this run's stream
        carries (``PARAMS``, ``SHIFT``, ``WEIGHTS`` are 0 with ``reuse_weights``, ``ACTS``
        with ``acts_resident``; ``SHORTCUT``, ``scv`` with a ``residual`` and no
        ``short_resident``, else 0). The chaining flags ``in_bank, acts_resident, keep,
        quiet, short_resident`` (ints; 0 for a value :func:`check_layer` refuses). The shortcut's
        (``SETUP_STEPS``): ``short_c, short_off, short_stride`` (the descriptor's, 0 without a
        residual), ``nts = ceil(short_c / C)``, ``SH, SW`` (its map, ``out_h*s, out_w*s``),
        ``scv = SH*SW*nts`` (the source's vectors), ``dcv = M*NT`` (aligned vectors the
        buffer holds; 0 without a residual). ``global_pool`` (0 or 1), ``pool_shift`` (0
        without a pool) and ``results``: the result vectors, ``NT`` with a pool (one pixel),
        else ``M * NT``. ``engine``: the layer's engine (0 for a value that is no integer,
        refused by :func:`check_layer`). ``window``: the window run (interface 2.3,
        ``Layer.window``: ``"max"``, ``"sum"``, ``"depthwise"``) or None; a window run has
        ``in_c = C`` and ``out_c`` from ``w_codes``' ``(out_c, 1, kernel_h, kernel_w)``, ``K =
        KT = kernel_h * kernel_w`` (no channel tiles in a pass: lane ``j`` of output tile
        ``nt`` reads lane ``j`` of channel tile ``nt``), no SHIFT. ``wrows``: the weight rows
        the run uses (the feeder's): ``NT * KT * rows`` (a convolution), ``NT * kernel_h *
        kernel_w`` (depthwise: one row of ``C`` codes per pass), 0 (max, sum); the WEIGHTS
        count unless reused. ``taps``: 1 for a taps run (interface 2.4, ``Layer.taps``),
        else 0; a taps run has ``KT = 1`` (one pass per output tile), ``wrows = NT * rows``
        (:func:`~mulfree.params.tap_walk.tap_weight_tiles`) and by default ``m_block = M``.

    Raises
    ------
    LayerError
        If ``x`` or ``w_codes`` do not have the shapes of a layer (nothing else is checked:
        see :func:`check_layer`).
    """
    x, w = np.asarray(layer.x), np.asarray(layer.w_codes)
    window = layer.window
    if x.ndim != 3:
        raise LayerError("x", f"x must have shape (in_c, in_h, in_w), not {x.shape}")
    if window is not None and (w.ndim != 4 or w.shape[1] != 1):
        raise LayerError("w_codes", f"w_codes of a {window} window run must have shape "
                                    f"(C={x.shape[0]}, 1, kernel_h, kernel_w), not {w.shape}")
    if window is None and (w.ndim != 4 or w.shape[1] != x.shape[0]):
        raise LayerError("w_codes", f"w_codes must have shape (out_c, in_c={x.shape[0]}, "
                                    f"kernel_h, kernel_w), not {w.shape}")
    e = cfg.engine
    (in_c, in_h, in_w), (out_c, _, kh, kw) = x.shape, w.shape
    (sh, sw), (ph, pw) = layer.stride, layer.padding
    g = {"in_c": in_c, "in_h": in_h, "in_w": in_w, "out_c": out_c,
         "out_h": _conv_size(in_h, kh, sh, ph), "out_w": _conv_size(in_w, kw, sw, pw),
         "kernel_h": kh, "kernel_w": kw, "stride_h": sh, "stride_w": sw,
         "pad_h": ph, "pad_w": pw, "CT": ceil_div(in_c, e.rows), "NT": ceil_div(out_c, e.cols),
         "K": in_c * kh * kw if window is None else kh * kw, "window": window,
         "taps": int(bool(layer.taps))}
    g["KT"] = 1 if g["taps"] else kh * kw * (g["CT"] if window is None else 1)
    g["wrows"] = g["NT"] * g["KT"] * e.rows if window is None or g["taps"] else \
        g["NT"] * g["KT"] if window == "depthwise" else 0
    g["M"] = max(g["out_h"], 0) * max(g["out_w"], 0)
    g["m_block"] = layer.m_block if layer.m_block is not None else \
        max(g["M"], 1) if g["taps"] else choose_m_block(cfg, g)
    g.update(_short_fields(layer))
    g["nts"] = ceil_div(g["short_c"], e.cols)
    g["SH"] = max(g["out_h"], 0) * g["short_stride"]
    g["SW"] = max(g["out_w"], 0) * g["short_stride"]
    g["scv"] = g["SH"] * g["SW"] * g["nts"]
    g["dcv"] = g["M"] * g["NT"] if layer.residual is not None else 0
    g["global_pool"] = int(layer.pool is not None)
    g["pool_shift"] = int(layer.pool) if _is_int(layer.pool) else 0
    g["results"] = g["NT"] if layer.pool is not None else g["M"] * g["NT"]
    g["engine"] = int(layer.engine) if _is_int(layer.engine) else 0
    for name in CHAIN_FLAGS:
        value = getattr(layer, name)
        g[name] = int(value) if _is_int(value) or isinstance(value, (bool, np.bool_)) else 0
    sent = not layer.reuse_weights
    g["counts"] = {"PARAMS": out_c if sent else 0,
                   "SHIFT": g["CT"] if sent and layer.shifts is not None and window is None
                   else 0,
                   "WEIGHTS": g["wrows"] if sent else 0,
                   "ACTS": 0 if g["acts_resident"] else in_h * in_w * g["CT"],
                   "SHORTCUT": 0 if g["short_resident"] else g["scv"]}
    return g


def _short_fields(layer):
    """``short_c`` (the shortcut source's channels), ``short_off``, ``short_stride`` of
    ``layer`` as the descriptor carries them: 0 without a residual; a value that is no
    integer (refused by :func:`check_layer`) as 0."""
    res = layer.residual
    if res is None:
        return {"short_c": 0, "short_off": 0, "short_stride": 0}
    shape = np.shape(layer.shortcut) if layer.shortcut is not None else ()
    stride, offset = getattr(res, "stride", 0), getattr(res, "offset", 0)
    return {"short_c": int(shape[0]) if len(shape) else 0,
            "short_off": int(offset) if _is_int(offset) else 0,
            "short_stride": int(stride) if _is_int(stride) else 0}


def choose_m_block(cfg: CoreConfig, geometry):
    """A block size: long enough to keep the engine busy, short enough to start early.

    The rule: take ``target``, the smallest multiple of :func:`hazard_window` that is at least
    :data:`TARGET_BLOCK_PIXELS` (32) pixels; cut the ``M`` output pixels into
    ``ceil(M / target)`` blocks of equal length (rounded up), so the last block is not a short
    tail that would stall; never go below the hazard window; cap at ``acc_entries`` and at
    ``M``. So a small layer is one block, and the first results of a large one come after one
    block's worth of activations (about ``target`` pixels' rows) rather than the whole map.

    Parameters
    ----------
    geometry : dict
        At least ``M`` (see :func:`layer_geometry`).
    """
    window = hazard_window(cfg)
    target = window * ceil_div(TARGET_BLOCK_PIXELS, window)
    m = max(int(geometry["M"]), 1)
    even = ceil_div(m, ceil_div(m, target))
    cap = min(cfg.acc_entries, (1 << _FIELD_WIDTHS["m_block"]) - 1, m)
    return max(1, min(max(even, window), cap))


# Checks ---------------------------------------------------------------------------------------

def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _check_field(g, name, lo, hi, core_error="DESCRIPTOR", why=""):
    value = g[name]
    if not _is_int(value) or not lo <= value <= hi:
        raise LayerError(name, f"{name} must be in [{lo}, {hi}]{why}, not {value!r}",
                         core_error)


def _check_descriptor(cfg, layer, g, banks):
    """The conditions of error DESCRIPTOR, and the field widths of the descriptor; then
    ENGINE, RESIDENT (``banks``: a :class:`~mulfree.host.bank_state.BankState` or None) and
    ``m_block``'s TOO_BIG, in the core's order."""
    for name in ("in_h", "in_w", "in_c", "out_c", "kernel_h", "kernel_w", "stride_h",
                 "stride_w"):
        _check_field(g, name, 1, (1 << _FIELD_WIDTHS[name]) - 1)
    for pad, kernel in (("pad_h", "kernel_h"), ("pad_w", "kernel_w")):
        hi = min(g[kernel] - 1, (1 << _FIELD_WIDTHS[pad]) - 1)
        _check_field(g, pad, 0, hi, why=f" (< {kernel} = {g[kernel]})")
    for out, size, kernel, pad in (("out_h", "in_h", "kernel_h", "pad_h"),
                                   ("out_w", "in_w", "kernel_w", "pad_w")):
        if g[out] < 1:
            raise LayerError(kernel, f"{kernel} must be at most {size} + 2 {pad} = "
                                     f"{g[size] + 2 * g[pad]} (the kernel must fit the padded "
                                     f"map), not {g[kernel]}", "DESCRIPTOR")
        _check_field(g, out, 1, (1 << _FIELD_WIDTHS[out]) - 1)
    _check_tail(cfg, layer, g)
    check_window_descriptor(cfg, layer, g)
    _check_engine(cfg, layer)
    check_window_unit(cfg, layer)
    _check_chaining(cfg, layer)
    if banks is not None:
        banks.check(cfg, layer, g)
    # The core checks m_block > acc_entries (TOO_BIG) after every DESCRIPTOR, ENGINE and
    # RESIDENT condition; a taps run has no such limit (it takes no partial sums).
    m_block = g["m_block"]
    most = (1 << _FIELD_WIDTHS["m_block"]) - 1
    if _is_int(m_block) and m_block > cfg.acc_entries and not layer.taps:
        raise LayerError("m_block", f"m_block must be in [1, acc_entries = {cfg.acc_entries}],"
                                    f" not {m_block!r}", "TOO_BIG")
    _check_field(g, "m_block", 1, most if layer.taps else min(cfg.acc_entries, most))


def _check_engine(cfg, layer):
    """The descriptor's ``engine`` field: an integer the field holds (error ENGINE for an
    engine the core does not have, checked by the core after DESCRIPTOR, before TOO_BIG)."""
    engine, n = layer.engine, len(cfg.engines)
    width = _FIELD_WIDTHS["engine"]
    if not _is_int(engine) or not 0 <= engine < 1 << width:
        raise LayerError("engine", f"engine must be an integer in [0, {n - 1}] (the engines "
                                   f"of this core), not {engine!r}")
    if engine >= n:
        kinds = ", ".join(f"{k} {e.pe}" for k, e in enumerate(cfg.engines))
        raise LayerError("engine", f"engine must be in [0, {n - 1}] (this core's engines: "
                                   f"{kinds}), not {engine}", "ENGINE")


def _check_chaining(cfg, layer):
    """The chaining flags' values, and error RESIDENT's conditions that need no bank state:
    a chaining flag on a core with one bank, ``short_resident`` without a residual, ``quiet``
    without ``keep`` (checked by the core after ENGINE, before TOO_BIG)."""
    if not _is_int(layer.in_bank) or layer.in_bank not in (0, 1):
        raise LayerError("in_bank", f"in_bank must be 0 or 1, not {layer.in_bank!r}")
    for name in CHAIN_FLAGS[1:]:
        if not isinstance(getattr(layer, name), (bool, np.bool_)):
            raise LayerError(name, f"{name} must be a bool, not {getattr(layer, name)!r}")
    if cfg.fmap_banks < 2:
        for name in ("in_bank", "keep", "acts_resident", "short_resident"):
            if getattr(layer, name):
                raise LayerError(name, f"{name} must be off on a core with fmap_banks = "
                                       f"{cfg.fmap_banks} (layer chaining needs 2 banks), not "
                                       f"{getattr(layer, name)!r}", "RESIDENT")
    if layer.short_resident and layer.residual is None:
        raise LayerError("short_resident", "short_resident must be off without a residual "
                                           "(the shortcut it reads), not True", "RESIDENT")
    if layer.quiet and not layer.keep:
        raise LayerError("quiet", "quiet must be off without keep (the results would be "
                                  "lost), not True", "RESIDENT")


def _is_flag(value):
    return isinstance(value, (bool, np.bool_)) or (_is_int(value) and value in (0, 1))


def _check_tail(cfg, layer, g):
    """The descriptor's residual, clamp and pool fields (error DESCRIPTOR for their
    ranges)."""
    a = cfg.engine.act_bits
    res = layer.residual
    if res is not None:
        if not isinstance(res, ResidualParams):
            raise LayerError("residual", f"residual must be a ResidualParams or None, "
                                         f"not {res!r}")
        lo, hi = res_shift_range(a)
        for name, value, low, high in (("main_shift", res.main_shift, 0, RES_MAX_SHIFT),
                                       ("short_shift", res.short_shift, 0, RES_MAX_SHIFT),
                                       ("shift", res.shift, lo, hi)):
            if not _is_int(value) or not low <= value <= high:
                raise LayerError(f"residual.{name}", f"residual.{name} must be an integer in "
                                                     f"[{low}, {high}], not {value!r}",
                                 "DESCRIPTOR" if _is_int(value) else None)
        if not _is_flag(res.relu):
            raise LayerError("residual.relu", f"residual.relu must be a bool, not {res.relu!r}")
        _check_alignment(layer, res, g)
    if layer.clamp is not None:
        pair = _clamp_pair(layer.clamp)
        lo, hi = cfg.engine.act_range
        if pair is None:
            raise LayerError("clamp", f"clamp must be a pair (lo, hi) of integers or None, "
                                      f"not {layer.clamp!r}")
        if not lo <= pair[0] <= pair[1] <= hi:
            raise LayerError("clamp", f"clamp must be (lo, hi) with {lo} <= lo <= hi <= {hi} "
                                      f"(the activation range), not {pair}", "DESCRIPTOR")
    if layer.pool is not None:
        lo, hi = pool_shift_range(a, cfg.pool_pixels)
        if not _is_int(layer.pool) or not lo <= layer.pool <= hi:
            raise LayerError("pool", f"pool (pool_shift) must be an integer in [{lo}, {hi}] "
                                     f"(pool_shift_range for act_bits {a}, pool_pixels "
                                     f"{cfg.pool_pixels}) or None, not {layer.pool!r}",
                             "DESCRIPTOR" if _is_int(layer.pool) else None)


def _check_alignment(layer, res, g):
    """The residual's ``short_*`` fields (error DESCRIPTOR): ``short_stride`` in
    ``[1, 15]``, ``short_off`` in ``[0, 255]``, ``short_c`` (the shortcut's channels) at
    least 1 and ``short_off + short_c <= out_c``."""
    widths = _FIELD_WIDTHS
    for name, value, low in (("stride", res.stride, 1), ("offset", res.offset, 0)):
        high = (1 << widths["short_" + ("stride" if name == "stride" else "off")]) - 1
        if not _is_int(value) or not low <= value <= high:
            raise LayerError(f"residual.{name}", f"residual.{name} must be an integer in "
                                                 f"[{low}, {high}], not {value!r}",
                             "DESCRIPTOR" if _is_int(value) else None)
    if layer.shortcut is None or np.ndim(layer.shortcut) != 3:
        return                        # refused by _check_contents, which names the shape
    short_c, out_c = g["short_c"], g["out_c"]
    if short_c < 1:
        raise LayerError("shortcut", f"shortcut: its channels (short_c) must be at least 1, "
                                     f"not {short_c}", "DESCRIPTOR")
    if res.offset + short_c > out_c:
        raise LayerError("shortcut", f"shortcut: residual.offset {res.offset} + its channels "
                                     f"(short_c) {short_c} must be at most out_c = {out_c}",
                         "DESCRIPTOR")


def _clamp_pair(clamp):
    """``clamp`` as ``(lo, hi)`` Python integers, or None if it is no pair of integers."""
    try:
        pair = tuple(clamp)
    except TypeError:
        return None
    if len(pair) != 2 or not all(_is_int(v) for v in pair):
        return None
    return int(pair[0]), int(pair[1])


def tail_fields(layer: Layer):
    """The descriptor's fields of ``layer``'s fused tail: the flags ``residual``, ``res_relu``,
    ``clamp`` and ``global_pool`` (0 or 1), and ``clamp_lo``, ``clamp_hi``,
    ``res_main_shift``, ``res_short_shift``, ``res_shift``, ``short_c``, ``short_off``,
    ``short_stride``, ``pool_shift`` (integers; 0 without their flag). For a layer
    :func:`check_layer` accepts."""
    res, clamp = layer.residual, layer.clamp
    lo, hi = _clamp_pair(clamp) if clamp is not None else (0, 0)
    return {"residual": int(res is not None), "res_relu": int(res is not None and bool(res.relu)),
            "clamp": int(clamp is not None), "clamp_lo": lo, "clamp_hi": hi,
            "res_main_shift": int(res.main_shift) if res is not None else 0,
            "res_short_shift": int(res.short_shift) if res is not None else 0,
            "res_shift": int(res.shift) if res is not None else 0,
            **_short_fields(layer), "global_pool": int(layer.pool is not None),
            "pool_shift": int(layer.pool) if layer.pool is not None else 0}


def _check_fits(cfg, layer, g):
    """The conditions of error TOO_BIG (m_block is checked with the descriptor).

    ``max_channels`` bounds ``in_c`` only for a layer with a shift (the shift table's size).
    """
    shift_c = g["in_c"] if layer.shifts is not None else 0
    limits = (
        ("K", g["K"], cfg.engine.max_k, "max_k", "terms per sum, in_c * kernel_h * kernel_w"
         if g["window"] is None else "terms per sum of a window run, kernel_h * kernel_w"),
        ("in_c", shift_c, cfg.max_channels, "max_channels", "input channels of a layer with "
                                                            "a shift"),
        ("out_c", g["out_c"], cfg.max_channels, "max_channels", "output channels"),
        ("x", g["in_h"] * g["in_w"] * g["CT"], cfg.fmap_vectors, "fmap_vectors",
         "ACTS vectors, in_h * in_w * ceil(in_c / rows)"),
        ("w_codes", g["wrows"], cfg.weight_rows, "weight_rows",
         "WEIGHTS rows, ceil(out_c / cols) * kernel_h * kernel_w * ceil(in_c / rows) * rows"
         if g["window"] is None else "WEIGHTS rows of a taps run, ceil(out_c / cols) * rows"
         if g["taps"] else "WEIGHTS rows of a depthwise run, ceil(out_c / cols) * "
                           "kernel_h * kernel_w"),
    )
    for param, value, limit, limit_name, what in limits:
        if value > limit:
            raise LayerError(param, f"{param}: {what} must be at most {limit_name} = {limit}, "
                                    f"not {value}", "TOO_BIG")
    check_taps_fit(cfg, layer, g)
    vectors = g["dcv"]
    if layer.residual is not None and g["SW"] > (1 << 16) - 1:
        # The setup computes sm = sh * sw with sw as the multiplier's 16-bit operand (sh is
        # its wide one: out_h * short_stride has no such limit).
        raise LayerError("shortcut", f"shortcut: the source map's width out_w * "
                                     f"residual.stride = {g['out_w']} * {g['short_stride']} = "
                                     f"{g['SW']} must be at most {(1 << 16) - 1} (a 16-bit "
                                     f"operand in the core's setup)", "TOO_BIG")
    if vectors > cfg.shortcut_vectors:
        raise LayerError("shortcut", f"shortcut: the aligned shortcut of a residual, out_h * "
                                     f"out_w * ceil(out_c / cols) vectors, must be at most "
                                     f"shortcut_vectors = {cfg.shortcut_vectors}, not "
                                     f"{vectors}", "TOO_BIG")
    if layer.keep and g["results"] > cfg.fmap_vectors:
        raise LayerError("keep", f"keep: the kept output, {g['results']} result vectors, must "
                                 f"be at most fmap_vectors = {cfg.fmap_vectors}", "TOO_BIG")
    if layer.short_resident and g["scv"] > cfg.fmap_vectors:
        raise LayerError("short_resident", f"short_resident: the resident shortcut source, "
                                           f"{g['scv']} vectors, must be at most fmap_vectors "
                                           f"= {cfg.fmap_vectors}", "TOO_BIG")
    if layer.pool is not None and g["M"] > cfg.pool_pixels:
        raise LayerError("pool", f"pool: a global pool's map, out_h * out_w = {g['M']} pixels, "
                                 f"must be at most pool_pixels = {cfg.pool_pixels}"
                                 + (" (this core has no pool unit)" if not cfg.pool_pixels
                                    else ""), "TOO_BIG")


def _check_values(param, values, lo, hi, shape, why="", range_why=""):
    values = np.asarray(values)
    if values.dtype.kind not in "iu":
        raise LayerError(param, f"{param} must hold integers, not {values.dtype}")
    if values.shape != shape:
        raise LayerError(param, f"{param} must have shape {shape}{why}, not {values.shape}")
    try:
        check_range(param, values, lo, hi)
    except ValueError as error:
        raise LayerError(param, str(error) + range_why) from None


def _check_contents(cfg, layer, g):
    """Value ranges of the activations, weight codes, post-processing and shifts."""
    e, p = layer_engine(cfg, layer), cfg.post_engine
    _check_values("x", layer.x, *e.act_range, (g["in_c"], g["in_h"], g["in_w"]))
    codes = (0, (1 << e.code_width) - 1) if e.pe == "shift" else e.weight_range
    if layer.window in ("max", "sum"):
        # Only their shape counts (the kernel's size): not sent, never read.
        codes = (np.iinfo(np.int64).min, np.iinfo(np.int64).max)
    why = f" ({e.pe} codes of engine {layer.engine})" if cfg.extra_engines else ""
    if e.mult_pack == 2 and layer.window not in ("max", "sum"):
        why += (f" (mult_pack=2: two weights share one DSP multiplication, so the range is "
                f"symmetric; docs/numerics.md, 'Packed multipliers')")
    _check_values("w_codes", layer.w_codes, *codes, np.shape(layer.w_codes), range_why=why)
    if not isinstance(layer.post, PostParams):
        raise LayerError("post", f"post must be a PostParams, not {layer.post!r}")
    n = (g["out_c"],)
    # Post-processing is the core's, shared by its engines: the widest accumulator's widths.
    _check_values("post.bias", layer.post.bias, *bias_range(p), n)
    _check_values("post.shift", layer.post.shift, *shift_range(p), n)
    relu = np.asarray(layer.post.relu)
    if relu.dtype.kind not in "biu" or relu.shape not in ((), n) or np.any((relu != 0)
                                                                            & (relu != 1)):
        raise LayerError("post.relu", f"post.relu must be a bool or {n[0]} bools, "
                                      f"not {layer.post.relu!r}")
    if layer.shifts is not None:
        r = cfg.shift_reach
        _check_values("shifts", layer.shifts, -r, r, (g["in_c"], 2),
                      range_why=f" (the core's shift_reach {r})")
    if not isinstance(layer.reuse_weights, (bool, np.bool_)):
        raise LayerError("reuse_weights", f"reuse_weights must be a bool, "
                                          f"not {layer.reuse_weights!r}")
    if (layer.shortcut is None) != (layer.residual is None):
        raise LayerError("shortcut", f"shortcut must be given exactly when residual is: "
                                     f"residual is {layer.residual!r}, shortcut "
                                     f"{'None' if layer.shortcut is None else 'an array'}")
    if layer.shortcut is not None:
        s = g["short_stride"]
        _check_values("shortcut", layer.shortcut, *e.act_range,
                      (g["short_c"], g["SH"], g["SW"]), f" (short_c, out_h*{s}, out_w*{s}) "
                                                         f"with residual.stride {s}")


def weight_key(cfg: CoreConfig, layer: Layer):
    """What the core compares for ``reuse_weights`` (error REUSE): the engine, the window run
    (interface 2.3), the taps flag (2.4), the weight rows, ``out_c`` and the shift-table tiles of ``layer`` (a
    layer :func:`check_layer` accepts)."""
    g = layer_geometry(cfg, layer)
    return {"engine": g["engine"], "window": g["window"], "taps": g["taps"],
            "weight rows": g["wrows"], "out_c": g["out_c"],
            "shift tiles": g["CT"] if layer.shifts is not None else 0}


def _check_reuse(cfg, layer, previous):
    if previous is None or not layer.reuse_weights:
        return
    want, have = weight_key(cfg, layer), weight_key(cfg, previous)
    if want != have:
        diff = ", ".join(f"{k} {want[k]!r} (loaded: {have[k]!r})" for k in want
                         if want[k] != have[k])
        raise LayerError("reuse_weights", f"reuse_weights needs the loaded weights to be "
                                          f"this layer's: {diff}", "REUSE")


def check_layer(cfg: CoreConfig, layer: Layer, banks=None, previous=None):
    """Raise :class:`LayerError` if the core would refuse ``layer`` or the stream cannot carry it.

    Checked: the descriptor's conditions (error ``DESCRIPTOR``: a zero size, padding >= kernel,
    a kernel larger than the padded map, a field too wide for the descriptor, a residual's
    shifts outside ``[0, RES_MAX_SHIFT]`` and ``res_shift_range``, its ``stride`` outside
    ``[1, 15]`` or ``offset`` outside ``[0, 255]``, a shortcut of 0 channels or more than
    ``out_c - offset``, a clamp outside the activation range or with ``lo > hi``, a pool shift
    outside ``pool_shift_range``), the engine (error ``ENGINE``: an index the core does not
    have), the core's sizes (error ``TOO_BIG``: ``K > max_k``,
    ``in_c`` or ``out_c > max_channels``, ``m_block > acc_entries``, a tensor larger than its
    buffer, a residual's aligned shortcut ``M * NT`` larger than ``shortcut_vectors`` or its
    source map's width ``out_w * s`` more than 16 bits, a
    pooled map ``M`` larger than ``pool_pixels``), and the ranges of every value
    (activations, the weight codes of the layer's engine's PE kind, bias and shift in the
    ranges of the core's post-processing, ``cfg.post_engine``: the widest accumulator's,
    relu, the per-channel shifts, the shortcut,
    given exactly with a residual, of shape ``(short_c, out_h*s, out_w*s)``). The message
    names the parameter (``exc.param``: ``"residual.shift"``, ``"clamp"``, ``"shortcut"``,
    ``"pool"``, ...), the value and
    what is allowed. Whether weights can be reused (error ``REUSE``, after TOO_BIG) depends
    on the previous run: checked only with ``previous``, the layer of the last run that ended
    well (whose weights are loaded): ``reuse_weights`` needs its :func:`weight_key` (engine,
    window run, weight rows, ``out_c``, shift tiles) to be this layer's.

    Window runs (interface 2.3, ``layer.window``): error ``DESCRIPTOR`` also for ``w_codes``
    of other than ``in_c`` channels, ``shifts``, ``reuse_weights`` with ``"max"`` or
    ``"sum"`` and, with ``"max"``, ``pad_h > kernel_h / 2`` or ``pad_w > kernel_w / 2``;
    error ``WINDOW`` (after ENGINE, before RESIDENT) on a core without ``window_ops``;
    ``TOO_BIG`` for ``K = kernel_h * kernel_w > max_k`` and a depthwise run's ``NT *
    kernel_h * kernel_w`` weight rows over ``weight_rows``.

    Taps runs (interface 2.4, ``layer.taps``): error ``DESCRIPTOR`` also for a residual, a
    global pool, a kernel wider or taller than the tap window's side, ``m_block != out_h *
    out_w``; error ``WINDOW`` on a core without the tap window or on an engine not in
    ``cfg.tap_engines``; ``TOO_BIG`` for a padded line ``(out_w-1)*stride_w + kernel_w`` over
    ``tap_line`` and ``NT * rows`` weight rows over ``weight_rows``, none for ``m_block``
    over ``acc_entries`` (:mod:`mulfree.host.window_checks`).

    Layer chaining (interface 2.2): error ``RESIDENT``, after ENGINE and before TOO_BIG, for
    ``in_bank``, ``keep``, ``acts_resident`` or ``short_resident`` on a core with one bank,
    ``short_resident`` without a residual, ``quiet`` without ``keep``, and with ``banks`` (a
    :class:`~mulfree.host.bank_state.BankState`: what the banks hold before the run) a bank
    that does not hold the resident input's or shortcut's shape; ``TOO_BIG`` for a kept
    output of more than ``fmap_vectors`` vectors or a resident shortcut source of more.

    ``in_c > max_channels`` is refused only with ``shifts`` (the shift table has
    ``max_channels`` entries), as ``CoreConfig.max_channels`` and the RTL's check say.
    """
    g = layer_geometry(cfg, layer)
    _check_descriptor(cfg, layer, g, banks)
    _check_fits(cfg, layer, g)
    _check_reuse(cfg, layer, previous)
    _check_contents(cfg, layer, g)

