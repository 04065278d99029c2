"""Taps runs (interface 2.4): the tap window's walk and a taps run's weight tiles.

A taps run (descriptor ``flags.depthwise | flags.taps``) computes the depthwise convolution of
:func:`~mulfree.params.window_golden.window_acc` (the same numbers as on the lane unit) on an
array engine, kernel taps on rows and channels on columns. This module says *in which order*
the core reads and sends; what it computes is the golden model's.

The walk, per output tile ``nt`` (channels ``nt*C .. nt*C + C - 1``)::

    for py in 0 .. Hp-1:            Hp = (out_h-1)*stride_h + kernel_h   (padded rows)
        for px in 0 .. Wp-1:        Wp = (out_w-1)*stride_w + kernel_w   (padded columns)
            read vector (iy, ix) = (py - pad_h, px - pad_w) of tile nt     (0 outside the map)
            emit iff py >= kernel_h-1, px >= kernel_w-1 and both
                     (py-kernel_h+1) % stride_h == 0 and (px-kernel_w+1) % stride_w == 0

one read per cycle. An emitted vector is output pixel ``((py-kernel_h+1)/stride_h,
(px-kernel_w+1)/stride_w)``: row ``r = ky*kernel_w + kx`` of column ``c`` is channel ``nt*C + c``
of input pixel ``(py - kernel_h + 1 + ky - pad_h, px - kernel_w + 1 + kx - pad_w)``; rows from
``kernel_h*kernel_w`` on are 0. The walk of a tile ends with its last read, which is its last
emit (``(Hp-1, Wp-1)``); emits come in raster order, ``out_h*out_w`` per tile.

The hardware keeps ``side - 1`` line buffers of ``tap_line`` vectors (the rows above the one
being read, at column ``px``) and a ``side x side`` register window whose bottom-right corner
is the vector just read: a read shifts the window left by one column and enters the column
``(line[side-2][px], ..., line[0][px], read)``; the kernel is the window's bottom-right
``kernel_h x kernel_w`` corner. Nothing is cleared between tiles: a row is emitted only once
the ``kernel_h - 1`` rows above it were read in the same tile.

Weights: tile ``nt`` is ``rows`` rows of ``C`` codes, row ``r`` column ``c`` the code of
``w[nt*C + c, ky, kx]`` (``r = ky*kernel_w + kx``), rows ``kernel_h*kernel_w .. rows-1`` code 0;
the weight buffer holds the ``NT`` tiles in order (``NT*rows`` rows, setup's ``ntr``).
"""

import numpy as np


__all__ = ["tap_span", "tap_reads", "tap_emits", "tap_weight_tiles", "tap_windows"]


def tap_span(kernel, stride, out_hw):
    """``(Hp, Wp)``: the padded rows and columns a taps run reads per output tile."""
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_hw
    return (oh - 1) * sh + kh, (ow - 1) * sw + kw


def tap_reads(kernel, stride, padding, out_hw):
    """Every read of one output tile's walk, in order: ``(iy, ix, emit)`` with ``emit`` the
    output pixel ``(oy, ox)`` the read completes, or None."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    hp, wp = tap_span(kernel, stride, out_hw)
    for py in range(hp):
        for px in range(wp):
            dy, dx = py - kh + 1, px - kw + 1
            emit = (dy // sh, dx // sw) if (dy >= 0 and dx >= 0 and dy % sh == 0
                                            and dx % sw == 0) else None
            yield py - ph, px - pw, emit


def tap_emits(kernel, stride, padding, out_hw):
    """Index (within one tile's walk) of every read that emits, in emit order: an ``int64``
    array of ``out_h*out_w`` entries."""
    return np.array([i for i, (_, _, e) in enumerate(tap_reads(kernel, stride, padding, out_hw))
                     if e is not None], dtype=np.int64)


def tap_weight_tiles(codes, rows, cols):
    """The weight rows of a taps run: ``codes[out_c, kernel_h, kernel_w]`` (integer codes of
    the run's engine) laid out as ``NT`` tiles of ``rows`` rows of ``cols`` codes, an
    ``(NT*rows, cols)`` ``int64`` array (rows past the kernel and columns past ``out_c``:
    code 0)."""
    codes = np.asarray(codes, dtype=np.int64)
    n, kh, kw = codes.shape
    if kh * kw > rows:
        raise ValueError(f"a {kh}x{kw} kernel has {kh * kw} taps, more than rows={rows}")
    nt = -(-n // cols)
    out = np.zeros((nt * rows, cols), dtype=np.int64)
    flat = codes.reshape(n, kh * kw)
    for t in range(nt):
        block = flat[t * cols:(t + 1) * cols]               # (channels of the tile, taps)
        out[t * rows:t * rows + kh * kw, :block.shape[0]] = block.T
    return out


def tap_windows(x, kernel, stride, padding, out_hw, side):
    """What the tap window sends, modelled as the hardware keeps it (line buffers and a
    ``side x side`` register window): for a map ``x[C, H, W]`` (one output tile's channels),
    the ``(out_h*out_w, C, kernel_h*kernel_w)`` taps of the emitted vectors in emit order.

    A model of the datapath for tests of the walk; the golden model of the numbers is
    :func:`~mulfree.params.window_golden.window_acc`.
    """
    x = np.asarray(x, dtype=np.int64)
    c, h, w = x.shape
    (kh, kw) = kernel
    if kh > side or kw > side:
        raise ValueError(f"a {kh}x{kw} kernel does not fit a {side}x{side} tap window")
    _, wp = tap_span(kernel, stride, out_hw)
    lines = np.zeros((max(side - 1, 0), wp, c), dtype=np.int64)   # line[0]: the row above
    window = np.zeros((side, side, c), dtype=np.int64)            # [row, column, channel]
    px = 0
    out = []
    for iy, ix, emit in tap_reads(kernel, stride, padding, out_hw):
        v = x[:, iy, ix] if 0 <= iy < h and 0 <= ix < w else np.zeros(c, dtype=np.int64)
        column = [lines[side - 2 - k, px].copy() for k in range(side - 1)] + [v]  # top first
        for k in range(side - 2, 0, -1):
            lines[k, px] = lines[k - 1, px]
        if side > 1:
            lines[0, px] = v
        window[:, :-1] = window[:, 1:]
        window[:, -1] = np.stack(column)
        if emit is not None:
            corner = window[side - kh:, side - kw:]                  # (kh, kw, C)
            out.append(corner.reshape(kh * kw, c).T.copy())
        px = px + 1 if px + 1 < wp else 0
    return np.stack(out) if out else np.zeros((0, c, kh * kw), dtype=np.int64)
