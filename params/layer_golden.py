"""The NumPy golden model of a whole layer: matrix products, convolutions, post-processing.

Written from the definitions of ``docs/numerics.md`` (section "Post-processing and layers"),
on top of :mod:`mulfree.params.golden` (``terms``, ``array_forward``). All values are
``np.int64``; every intermediate is bounded by the config (see
:mod:`mulfree.params.post_config`), so nothing overflows silently.

A layer is ``out = postprocess(acc)`` with ``acc[m, n] = sum_k term(X[m, k], W[k, n])``:

* the sum is exact for any ``K <= max_k`` (the accumulator is sized for ``max_k`` terms);
* tiling ``K`` into chunks of ``rows`` with partial sums and ``N`` into chunks of ``cols``
  (:func:`tiled_matmul`) gives the same ``acc``: edge tiles are padded with ``x = 0`` and weight
  code 0, whose term is 0 for every PE kind (shift code 0 is the zero weight; adder
  ``-|0 - 0| = 0``; mult ``0 * 0 = 0``);
* a convolution is the matrix product of its patches (im2col, zero padding) and its flattened
  kernels, the reduction index being ``k = (c*kh + ky)*kw + kx``. For AdderNet a padded pixel
  is ``x = 0`` and contributes ``-|0 - w| = -|w|``, as the AdderNet code's ``unfold`` does.
"""

from dataclasses import dataclass

import numpy as np

from .config import ArrayConfig
from .post_config import bias_range, shift_range, check_post_config
from .golden import array_forward, as_int64, check_range, exact_add, terms


__all__ = [
    "PostParams", "postprocess", "round_shift", "matmul_acc", "matmul_layer", "tiled_matmul",
    "conv_output_size", "im2col", "conv2d_acc", "conv2d_layer", "ResidualParams",
    "residual_add", "clamp_output", "fused_tail", "shortcut_source", "global_pool",
]


#: Largest number of terms :func:`matmul_acc` computes at once.
_CHUNK_ELEMENTS = 1 << 20


def _as_int64(name, values):
    return as_int64(name, values, bools=True)


@dataclass(frozen=True)
class PostParams:
    """Per-output-channel post-processing parameters of a layer with ``N`` channels.

    Attributes
    ----------
    bias : array of shape ``(N,)``
        Added to the accumulator; signed ``acc_width`` bits.
    shift : array of shape ``(N,)``
        Signed: ``> 0`` divides by ``2^shift`` rounding half up, ``< 0`` multiplies by
        ``2^-shift`` (exact). A requantization is ``shift = r >= 0``; an AdderNet BatchNorm
        with power-of-two scale ``2^e`` folds in as ``shift = r - e``.
    relu : bool or array of shape ``(N,)``
        Clamp negative results to 0, per channel.
    """

    bias: object
    shift: object
    relu: object = False


def round_shift(y, shift):
    """``y * 2^-shift`` rounded half up for ``shift > 0``; ``y << -shift`` for ``shift <= 0``.

    Exact for every int64 ``y`` and every shift amount. ``floor((y + 2^(s-1)) / 2^s)`` is
    computed as ``(y >> s) + bit_(s-1)(y)``: the same value (write ``y = q 2^s + r``), but it
    never adds to ``y``, so it cannot overflow int64. A left shift whose result leaves int64
    raises ``OverflowError`` (:func:`postprocess` clamps ``y`` first, so it never does).
    """
    y = _as_int64("y", y)
    shift = np.broadcast_to(_as_int64("shift", shift), y.shape)
    right = np.maximum(shift, 0)
    # For s >= 64 an int64 shifted right by 63 is already floor(y / 2^s) (0 or -1), and bit
    # s-1 >= 63 of the sign-extended y is its sign bit, bit 63: clamping both amounts to 63 is
    # exact. (NumPy's own result for amounts of 64 or more is not something to rely on.)
    q = y >> np.minimum(right, 63)
    # No half bit without a right shift: q + half would then be y + 1, which wraps (and warns)
    # for y = 2^63 - 1 even though np.where discards it.
    half = np.where(right > 0, (y >> np.clip(right - 1, 0, 63)) & 1, 0)
    rounded = np.where(right > 0, q + half, y)
    left = np.maximum(-shift, 0)
    # y << n is exact iff n <= 63 and shifting back gives y again; 0 stays 0 for any n.
    n = np.minimum(left, 63)
    up = rounded << n
    lost = (left > 0) & (rounded != 0) & ((left > 63) | ((up >> n) != rounded))
    if np.any(lost):
        i = tuple(int(j) for j in np.argwhere(lost)[0])
        raise OverflowError(f"y{list(i)} = {int(rounded[i])} << {int(left[i])} leaves int64")
    return np.where(shift < 0, up, rounded)


def postprocess(cfg: ArrayConfig, acc, post: PostParams, *, acc_range=None):
    """The next layer's activations from accumulators ``acc[..., N]``.

    ``out = sat(relu?(round_shift(acc + bias, shift)))``, saturating to ``cfg.act_range``.
    ``acc_range``: the range ``acc`` must lie in (default ``cfg.acc_range``, the engine's
    sums; a window run's maxima and window sums are any ``acc_width``-bit value).

    Raises
    ------
    ValueError
        If a value or a shape is outside its range.
    """
    check_post_config(cfg)
    acc = _as_int64("acc", acc)
    n = acc.shape[-1]
    bias = _as_int64("bias", post.bias)
    shift = _as_int64("shift", post.shift)
    relu = np.broadcast_to(np.asarray(post.relu, dtype=bool), (n,))
    for name, value in (("bias", bias), ("shift", shift)):
        if value.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), not {value.shape}")
    check_range("acc", acc, *(cfg.acc_range if acc_range is None else acc_range))
    check_range("bias", bias, *bias_range(cfg))
    check_range("shift", shift, *shift_range(cfg))
    lo, hi = cfg.act_range
    # At most acc_width + 1 <= 64 bits (check_post_config), so int64 holds it; exact_add
    # checks it all the same, since a wrap here would silently change an output.
    y, wrapped = exact_add(acc, bias)
    if np.any(wrapped):
        i = tuple(int(j) for j in np.argwhere(wrapped)[0])
        raise OverflowError(f"acc + bias at {list(i)} leaves int64")
    # A left shift only grows |y|: any |y| >= 2^a saturates whatever the amount, so clamping
    # to [-2^a, 2^a] first changes no output and keeps y << (<= a) within 2a + 2 bits.
    y = np.where(shift < 0, np.clip(y, -(1 << cfg.act_bits), 1 << cfg.act_bits), y)
    v = round_shift(y, shift)
    v = np.where(relu, np.maximum(v, 0), v)
    return np.clip(v, lo, hi)


def matmul_acc(cfg: ArrayConfig, x, w_codes):
    """``acc[m, n] = sum_k term(x[m, k], w_codes[k, n])``, exact, for ``K <= max_k``."""
    x = _as_int64("x", x)
    w_codes = _as_int64("w_codes", w_codes)
    if x.ndim != 2 or w_codes.ndim != 2 or x.shape[1] != w_codes.shape[0]:
        raise ValueError(f"x [M, K] and w_codes [K, N] do not match: {x.shape}, "
                         f"{w_codes.shape}")
    k = x.shape[1]
    if not 1 <= k <= cfg.max_k:
        raise ValueError(f"K = {k} must be in [1, max_k = {cfg.max_k}]: the accumulator holds "
                         f"at most max_k terms")
    m, n = x.shape[0], w_codes.shape[1]
    acc = np.zeros((m, n), dtype=np.int64)
    # Chunks of k (memory O(M N chunk)). Integer addition is exact in any order, and every
    # partial sum is a sum of <= K <= max_k terms, inside acc_range, which the config keeps
    # within 64 bits: int64 never wraps here.
    step = max(1, _CHUNK_ELEMENTS // max(1, m * n))
    for i in range(0, k, step):
        acc += terms(cfg, x[:, i:i + step, None], w_codes[None, i:i + step, :]).sum(axis=1)
    return acc


def matmul_layer(cfg: ArrayConfig, x, w_codes, post: PostParams | None = None):
    """A fully connected layer ``[M, K] . [K, N]``: ``postprocess(matmul_acc(...))``.

    With ``post=None`` the accumulators are returned unprocessed.
    """
    acc = matmul_acc(cfg, x, w_codes)
    return acc if post is None else postprocess(cfg, acc, post)


def tiled_matmul(cfg: ArrayConfig, x, w_codes):
    """:func:`matmul_acc` computed as the engine does: tile by tile through ``array_forward``.

    ``K`` is cut into chunks of ``rows`` (partial sums carried from chunk to chunk), ``N`` into
    chunks of ``cols``; the edge tiles are padded with activation 0 and weight code 0, which
    adds a zero term for every PE kind.
    """
    x = _as_int64("x", x)
    w_codes = _as_int64("w_codes", w_codes)
    if x.ndim != 2 or w_codes.ndim != 2 or x.shape[1] != w_codes.shape[0]:
        raise ValueError(f"x [M, K] and w_codes [K, N] do not match: {x.shape}, "
                         f"{w_codes.shape}")
    (m, k), n = x.shape, w_codes.shape[1]
    if not 1 <= k <= cfg.max_k:
        raise ValueError(f"K = {k} must be in [1, max_k = {cfg.max_k}]")
    kt, nt = -(-k // cfg.rows), -(-n // cfg.cols)
    xp = np.zeros((m, kt * cfg.rows), dtype=np.int64)
    xp[:, :k] = x
    wp = np.zeros((kt * cfg.rows, nt * cfg.cols), dtype=np.int64)
    wp[:k, :n] = w_codes
    acc = np.zeros((m, nt * cfg.cols), dtype=np.int64)
    for j in range(nt):
        cs = slice(j * cfg.cols, (j + 1) * cfg.cols)
        psum = np.zeros((m, cfg.cols), dtype=np.int64)
        for i in range(kt):
            rs = slice(i * cfg.rows, (i + 1) * cfg.rows)
            psum = array_forward(cfg, wp[rs, cs], xp[:, rs], psum)
        acc[:, cs] = psum
    return acc[:, :n]


def _pair(name, value):
    if isinstance(value, (int, np.integer)):
        value = (value, value)
    value = tuple(int(v) for v in value)
    if len(value) != 2:
        raise ValueError(f"{name} must be an integer or a pair, not {value!r}")
    return value


def conv_output_size(size, kernel, stride, padding):
    """``floor((size + 2*padding - kernel) / stride) + 1``, the output length along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


def im2col(x, kh, kw, stride=1, padding=0):
    """Patches of ``x[C, H, W]``: ``[OH*OW, C*kh*kw]``, zero padded.

    Row ``oy*OW + ox`` is the patch of output pixel ``(oy, ox)``; column
    ``(c*kh + ky)*kw + kx`` holds ``x[c, oy*sy - py + ky, ox*sx - px + kx]``, or 0 outside the
    map. This column order is the reduction order of the hardware's address generation.
    """
    x = _as_int64("x", x)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (C, H, W), not {x.shape}")
    (sy, sx), (py, px) = _pair("stride", stride), _pair("padding", padding)
    if sy < 1 or sx < 1 or py < 0 or px < 0:
        raise ValueError(f"stride must be >= 1 and padding >= 0, not {stride!r}, {padding!r}")
    c, h, w = x.shape
    oh, ow = conv_output_size(h, kh, sy, py), conv_output_size(w, kw, sx, px)
    if oh < 1 or ow < 1:
        raise ValueError(f"a {kh}x{kw} kernel does not fit a padded {h}x{w} map "
                         f"(padding {padding!r})")
    padded = np.zeros((c, h + 2 * py, w + 2 * px), dtype=np.int64)
    padded[:, py:py + h, px:px + w] = x
    cols = np.empty((oh, ow, c, kh, kw), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            cols[:, :, :, ky, kx] = padded[:, ky:ky + sy * oh:sy, kx:kx + sx * ow:sx] \
                .transpose(1, 2, 0)
    return cols.reshape(oh * ow, c * kh * kw)


def conv2d_acc(cfg: ArrayConfig, x, w_codes, stride=1, padding=0):
    """Accumulators ``[Kout, OH, OW]`` of a convolution of ``x[C, H, W]`` by ``w[Kout, C, kh, kw]``.

    ``acc[o, oy, ox] = sum_{c, ky, kx} term(xpad[c, oy*sy + ky, ox*sx + kx], w[o, c, ky, kx])``
    with ``xpad`` the map zero padded by ``padding`` (AdderNet: a padded pixel adds ``-|w|``).
    """
    x = _as_int64("x", x)
    w_codes = _as_int64("w_codes", w_codes)
    if w_codes.ndim != 4 or x.ndim != 3 or w_codes.shape[1] != x.shape[0]:
        raise ValueError(f"w_codes [Kout, C, kh, kw] does not match x [C, H, W]: "
                         f"{w_codes.shape}, {x.shape}")
    kout, c, kh, kw = w_codes.shape
    (sy, sx), (py, px) = _pair("stride", stride), _pair("padding", padding)
    oh = conv_output_size(x.shape[1], kh, sy, py)
    ow = conv_output_size(x.shape[2], kw, sx, px)
    patches = im2col(x, kh, kw, (sy, sx), (py, px))
    acc = matmul_acc(cfg, patches, w_codes.reshape(kout, c * kh * kw).T)
    return acc.T.reshape(kout, oh, ow)


def conv2d_layer(cfg: ArrayConfig, x, w_codes, stride=1, padding=0,
                 post: PostParams | None = None):
    """A convolution layer: ``[Kout, OH, OW]`` outputs (raw accumulators if ``post=None``)."""
    acc = conv2d_acc(cfg, x, w_codes, stride, padding)
    if post is None:
        return acc
    # postprocess works on the last axis: channels last, then back.
    return np.moveaxis(postprocess(cfg, np.moveaxis(acc, 0, -1), post), -1, 0)


# The fused tail: a residual add and a clamp after post-processing -----------------------------

@dataclass(frozen=True)
class ResidualParams:
    """A residual add fused after a layer's post-processing (``docs/numerics.md``, "Graphs",
    **Add** of two inputs: the layer's output ``v`` and a shortcut ``s`` of the same shape).

    Attributes
    ----------
    main_shift, short_shift : int
        Left shifts of ``v`` and of ``s`` (the Add node's ``in_shifts``), each in
        ``[0, RES_MAX_SHIFT]``.
    shift : int
        The Add node's ``shift``: ``round_shift`` of the sum, in ``res_shift_range``.
    relu : bool
        ReLU after the add.
    stride, offset : int
        How the shortcut tensor the core receives (``short_c`` channels, a map ``stride``
        times the output's) lines up with the output: :func:`shortcut_source`
        (``short_stride``, ``short_off``). ``stride=1, offset=0``: the identity.
    """

    main_shift: int = 0
    short_shift: int = 0
    shift: int = 0
    relu: bool = False
    stride: int = 1
    offset: int = 0


def residual_add(act_bits, v, shortcut, res: ResidualParams):
    """``sat(relu?(round_shift((v << main_shift) + (s << short_shift), shift)))``.

    The Add node of ``docs/numerics.md`` with two inputs; a left ``shift`` first clamps the
    sum to ``[-2^act_bits, 2^act_bits]`` (every larger value saturates anyway).
    """
    v, s = _as_int64("v", v), _as_int64("shortcut", shortcut)
    if v.shape != s.shape:
        raise ValueError(f"shortcut must have shape {v.shape}, not {s.shape}")
    y = (v << np.int64(res.main_shift)) + (s << np.int64(res.short_shift))
    if res.shift < 0:
        y = np.clip(y, -(1 << act_bits), 1 << act_bits)
    out = round_shift(y, np.int64(res.shift))
    if res.relu:
        out = np.maximum(out, 0)
    return np.clip(out, -(1 << (act_bits - 1)), (1 << (act_bits - 1)) - 1)


def clamp_output(v, lo, hi):
    """``min(max(v, lo), hi)``: the Clamp node (ReLU6 is ``lo = 0``)."""
    return np.minimum(np.maximum(_as_int64("v", v), np.int64(lo)), np.int64(hi))


def shortcut_source(x, out_c, stride=1, offset=0):
    """The shortcut a residual adds, from the tensor the core receives (``[C, H, W]``).

    Output channel ``c`` at pixel ``(oy, ox)`` is ``x[c - offset, oy*stride, ox*stride]`` when
    ``offset <= c < offset + C``, else 0: He et al.'s option-A shortcut (``x[:, ::2, ::2]``
    padded with ``offset`` zero channels in front) for ``stride = 2``, the identity for
    ``stride = 1, offset = 0, C = out_c``. ``H`` and ``W`` are multiples of ``stride``.
    """
    x = _as_int64("x", x)
    c, h, w = x.shape
    if h % stride or w % stride:
        raise ValueError(f"the shortcut's map {h}x{w} is not a multiple of stride {stride}")
    if offset < 0 or offset + c > out_c:
        raise ValueError(f"offset {offset} + {c} channels exceeds out_c {out_c}")
    out = np.zeros((out_c, h // stride, w // stride), dtype=np.int64)
    out[offset:offset + c] = x[:, ::stride, ::stride]
    return out


def global_pool(act_bits, v, shift):
    """The global average pool of ``v`` (``[C, H, W]`` -> ``[C, 1, 1]``) as the core does it:
    ``sat(round_shift(sum, shift))`` of each channel's sum over the map, a left shift first
    clamping the sum to ``[-2^act_bits, 2^act_bits]``.

    The graph's GlobalAvgPool of ``docs/numerics.md`` (``div_round(sum, H*W * 2^s)``, or
    ``div_round(sum * 2^-s, H*W)`` for ``s < 0``) is this with ``shift = log2(H*W) + s`` when
    ``H*W`` is a power of two.
    """
    v = _as_int64("v", v)
    y = v.reshape(v.shape[0], -1).sum(axis=1).reshape(v.shape[0], 1, 1)
    if shift < 0:
        y = np.clip(y, -(1 << act_bits), 1 << act_bits)
    out = round_shift(y, np.int64(shift))
    return np.clip(out, -(1 << (act_bits - 1)), (1 << (act_bits - 1)) - 1)


def fused_tail(act_bits, v, *, shortcut=None, residual=None, clamp=None, pool=None):
    """What the core does after post-processing: the residual add (if ``residual``), then the
    clamp ``(lo, hi)`` (if ``clamp``), then the global pool with shift ``pool`` (if not
    ``None``; ``v`` is ``[C, H, W]``). ``v`` and ``shortcut`` (already aligned:
    :func:`shortcut_source`) have one shape."""
    if residual is not None:
        v = residual_add(act_bits, v, shortcut, residual)
    if clamp is not None:
        v = clamp_output(v, *clamp)
    if pool is not None:
        v = global_pool(act_bits, v, pool)
    return _as_int64("v", v)
