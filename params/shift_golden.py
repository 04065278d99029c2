"""NumPy golden models of the shift primitives: the executable form of ``docs/numerics.md``.

Written from the papers' definitions (``../shared/SEEDS.md`` sections 3 and 4), not from the
RTL. A feature map is an integer array ``fmap[C, H, W]``; in the buffer it is stored
channel-major at ``base + (c*H + y)*W + x``.

One sign convention throughout, the Shift paper's own (its eq. for ``G~``: a one-hot kernel at
``(i, j)`` gives ``out[k, l] = in[k + i - h, l + j - h]``): a shift ``(dy, dx)`` is the
**sampling offset**,

    out[c, y, x] = in[c, y + dy, x + dx]

so ``dx = +1`` moves the picture one pixel to the *left*. In the zero-fill modes (Shift,
table) a source outside ``[0, H) x [0, W)`` reads 0. In the AddressNet mode the source is the
linear address ``base + (c*H + y)*W + x + dy*W + dx`` with no clipping: across a row or channel
border it reads the neighbouring word of the buffer; only an address outside the whole buffer
``[0, depth)`` reads 0.
"""

import numpy as np


__all__ = [
    "ADDRESS_DIRECTIONS", "shift_directions", "group_offsets", "shift_groups",
    "address_groups", "shift_cvpr", "address_shift", "channel_shift", "shortcut_concat",
    "table_shift", "read_map", "read_command", "ORDERS", "element_order", "read_stream",
    "shift_block_forward",
]


#: Output orders of a read: ``channel_major`` is ``(c, y, x)`` with x fastest, ``pixel_major``
#: is ``(y, x, c)`` with c fastest (all channels of a pixel, then the next pixel).
ORDERS = ("channel_major", "pixel_major")

#: AddressNet's four directions in group order, as sampling offsets ``(dy, dx)``: a map moved
#: left reads its right neighbour (``+1``), up reads the next row (``+W``).
ADDRESS_DIRECTIONS = (("left", (0, 1)), ("right", (0, -1)), ("up", (1, 0)), ("down", (-1, 0)))


def _int_map(fmap):
    fmap = np.asarray(fmap)
    if fmap.ndim != 3 or fmap.dtype.kind not in "iu":
        raise TypeError(f"fmap must be an integer array [C, H, W], not {fmap.dtype} "
                        f"of shape {fmap.shape}")
    return fmap.astype(np.int64)


def shift_directions(k):
    """The ``k^2`` directions of a ``k x k`` Shift kernel, row-major over ``(dy, dx)``.

    ``(dy, dx)`` runs over ``[-h, h]^2``, ``h = (k - 1) / 2``, ``dy`` the slow index: for
    ``k = 3`` that is ``(-1,-1), (-1,0), (-1,1), (0,-1), (0,0), (0,1), (1,-1), (1,0), (1,1)``.
    The centre ``(0, 0)`` is one of them, as in the paper's one-hot kernels.
    """
    if not isinstance(k, (int, np.integer)) or k < 1 or k % 2 == 0:
        raise ValueError(f"k must be an odd positive integer, not {k!r}")
    h = (k - 1) // 2
    return [(dy, dx) for dy in range(-h, h + 1) for dx in range(-h, h + 1)]


def group_offsets(channels, directions, group=None):
    """Per-channel offsets when channels are split into groups of one direction each.

    Channels ``[i*g, (i+1)*g)`` take ``directions[i]`` for ``i < len(directions)``; the
    remaining ``channels - len(directions)*g`` channels (the centre group) are not shifted.
    ``g`` defaults to ``channels // len(directions)`` (equal groups, the paper's split); with
    ``g = 0`` (fewer channels than directions) nothing is shifted.

    Returns
    -------
    dy, dx : ndarray of int64, shape ``[channels]``
    """
    n = len(directions)
    g = channels // n if group is None else int(group)
    if g < 0:
        raise ValueError(f"group must be >= 0, not {group!r}")
    dy = np.zeros(channels, dtype=np.int64)
    dx = np.zeros(channels, dtype=np.int64)
    for c in range(channels):
        i = c // g if g else n
        if i < n:
            dy[c], dx[c] = directions[i]
    return dy, dx


def shift_groups(channels, k, group=None):
    """Per-channel ``(dy, dx)`` of the Shift (CVPR 2018) mode with a ``k x k`` kernel."""
    return group_offsets(channels, shift_directions(k), group)


def address_groups(channels, group=None):
    """Per-channel ``(dy, dx)`` of the AddressNet mode: left, right, up, down, then centre."""
    return group_offsets(channels, [d for _, d in ADDRESS_DIRECTIONS], group)


def table_shift(fmap, dy, dx):
    """Per-channel integer shifts with zero fill: ``out[c,y,x] = in[c, y+dy[c], x+dx[c]]`` or 0."""
    fmap = _int_map(fmap)
    C, H, W = fmap.shape
    dy = np.broadcast_to(np.asarray(dy, dtype=np.int64), (C,))
    dx = np.broadcast_to(np.asarray(dx, dtype=np.int64), (C,))
    out = np.zeros_like(fmap)
    ys = np.arange(H)[:, None]
    xs = np.arange(W)[None, :]
    for c in range(C):
        sy, sx = ys + dy[c], xs + dx[c]
        inside = (sy >= 0) & (sy < H) & (sx >= 0) & (sx < W)
        out[c] = np.where(inside, fmap[c, np.clip(sy, 0, H - 1), np.clip(sx, 0, W - 1)], 0)
    return out


def shift_cvpr(fmap, k, group=None):
    """Shift (Wu et al., CVPR 2018): ``k^2`` direction groups, zero fill at the border.

    See :func:`shift_directions` for the direction order and :func:`group_offsets` for the
    group assignment (``group`` defaults to ``C // k^2``; leftover channels stay in place).
    """
    fmap = _int_map(fmap)
    dy, dx = shift_groups(fmap.shape[0], k, group)
    return table_shift(fmap, dy, dx)


def read_map(memory, base, shape):
    """The map ``[C, H, W]`` stored at ``base``; words outside the buffer read 0."""
    memory = np.asarray(memory, dtype=np.int64)
    C, H, W = shape
    addr = base + np.arange(C * H * W)
    inside = (addr >= 0) & (addr < len(memory))
    return np.where(inside, memory[np.clip(addr, 0, len(memory) - 1)], 0).reshape(C, H, W)


def address_shift(memory, base, shape, group=None):
    """AddressNet (He et al., WACV 2019): read the map at a start address moved by ``±1, ±W``.

    Channel ``c`` of the map ``shape = (C, H, W)`` stored at ``base`` in the 1-D buffer
    ``memory`` takes the direction of its group (:func:`address_groups`) and reads

        out[c, y, x] = memory[base + (c*H + y)*W + x + dy*W + dx]

    whatever lies there: the next row's first element, the previous channel's last one, or a
    word of another map. An address outside ``[0, len(memory))`` reads 0.
    """
    memory = np.asarray(memory, dtype=np.int64)
    C, H, W = shape
    dy, dx = address_groups(C, group)
    offset = (dy * W + dx)[:, None]
    addr = base + np.arange(C * H * W).reshape(C, H * W) + offset
    inside = (addr >= 0) & (addr < len(memory))
    return np.where(inside, memory[np.clip(addr, 0, len(memory) - 1)], 0).reshape(C, H, W)


def channel_shift(fmap, r):
    """AddressNet's channel shift: cyclic rotation, ``out[c] = in[(c + r) mod C]``, ``0 <= r <= C``.

    Output channel 0 is input channel ``r``: the channel base pointer moved forward by ``r``
    channels. ``r = 0`` and ``r = C`` are the identity.
    """
    fmap = _int_map(fmap)
    C = fmap.shape[0]
    if not 0 <= r <= C:
        raise ValueError(f"r must be in [0, C] = [0, {C}], not {r!r}")
    return fmap[(np.arange(C) + r) % C]


def shortcut_concat(a, b):
    """AddressNet's shortcut shift: the channel concatenation ``[a; b]``.

    In the buffer it costs no copy: ``a`` is written at ``base`` and ``b`` right after it, at
    ``base + C_a*H*W``; reading ``C_a + C_b`` channels from ``base`` yields this.
    """
    a, b = _int_map(a), _int_map(b)
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"maps of a concatenation must have one H x W, not {a.shape[1:]} "
                         f"and {b.shape[1:]}")
    return np.concatenate([a, b], axis=0)


def read_command(memory, mode, base, shape, *, rotate=0, radius=0, group=None, table=None):
    """What the unit outputs for one read command, as ``[C, H, W]`` int64.

    ``mode`` is one of ``plain``, ``shift`` (``k = 2*radius + 1``), ``address``, ``channel``
    (rotation ``rotate``), ``table`` (``table = (dy[C'], dx[C'])`` indexed by channel,
    ``C' >= C``). ``group`` is the group size of the ``shift`` and ``address`` modes (default:
    the paper's equal split).
    """
    C, H, W = shape
    if mode == "address":
        return address_shift(memory, base, shape, group)
    fmap = read_map(memory, base, shape)
    if mode == "plain":
        return fmap
    if mode == "shift":
        return shift_cvpr(fmap, 2 * radius + 1, group)
    if mode == "channel":
        return channel_shift(fmap, rotate)
    if mode == "table":
        dy, dx = table
        return table_shift(fmap, np.asarray(dy)[:C], np.asarray(dx)[:C])
    raise ValueError(f"mode must be plain, shift, address, channel or table, not {mode!r}")


def element_order(shape, order="channel_major"):
    """The positions ``(c, y, x)`` of a ``[C, H, W]`` map in the order a read emits them.

    Returns an int64 array of shape ``(C*H*W, 3)``. The order changes only the sequence, never
    a value: element ``(c, y, x)`` is the same in both orders.
    """
    C, H, W = shape
    c, y, x = np.meshgrid(np.arange(C), np.arange(H), np.arange(W), indexing="ij")
    pos = np.stack([c, y, x], axis=-1)                   # [C, H, W, 3]
    if order == "channel_major":
        return pos.reshape(-1, 3)
    if order == "pixel_major":
        return pos.transpose(1, 2, 0, 3).reshape(-1, 3)  # [H, W, C, 3]
    raise ValueError(f"order must be one of {', '.join(ORDERS)}, not {order!r}")


def read_stream(memory, mode, base, shape, *, order="channel_major", **kwargs):
    """The elements of :func:`read_command` as a 1-D int64 array, in the read's ``order``."""
    fmap = read_command(memory, mode, base, shape, **kwargs)
    c, y, x = element_order(shape, order).T
    return fmap[c, y, x]


def shift_block_forward(cfg, weights, memory, mode, base, shape, **kwargs):
    """The ShiftNet / AddressNet block: a shifted read, then a 1x1 convolution on the array.

    The map ``shape = (C, H, W)`` read with ``mode`` (see :func:`read_command`) is a sequence
    of ``H*W`` pixel vectors of ``C = cfg.rows`` channels; the array (``cfg``, an
    :class:`~mulfree.params.config.ArrayConfig`) applies the weight tile ``weights[rows, cols]``
    to each: ``y[y*W + x, j] = sum_c term(shifted[c, y, x], weights[c, j])``. Returns
    ``[H*W, cols]`` int64 in pixel order (row-major).

    Raises :class:`~mulfree.params.config.ConfigError` (parameter ``channels``) when ``C`` is not
    ``cfg.rows``: one pixel's channels are one input vector.
    """
    from .config import ConfigError
    from .golden import array_forward

    C, H, W = shape
    if C != cfg.rows:
        raise ConfigError("channels", f"channels must equal the array's rows = {cfg.rows} "
                                      f"(one pixel's channels are one input vector), not {C}")
    shifted = read_command(memory, mode, base, shape, **kwargs)
    return array_forward(cfg, weights, shifted.reshape(C, H * W).T)
