"""The zero-FLOP, zero-parameter shifts as PyTorch layers: :class:`Shift2d` (Shift, CVPR 2018),
:class:`AddressShift2d` and :class:`ChannelShift` (AddressNet, WACV 2019).

Exactly the conventions of :mod:`mulfree.params.shift_golden` (sampling offset
``out[c, y, x] = in[c, y + dy, x + dx]``). Part of :mod:`mulfree.host.layers`, which
re-exports it.
"""

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..params import shift_golden
from .layer_args import check_positive_int


__all__ = ["Shift2d", "AddressShift2d", "ChannelShift"]


class Shift2d(nn.Module):
    """The zero-FLOP, zero-parameter shift of Wu et al. (CVPR 2018), zero filled.

    Channel ``c`` takes direction ``i = c // g`` of
    :func:`mulfree.params.shift_golden.shift_directions` (row-major over ``(dy, dx)`` in
    ``[-h, h]^2``, ``h = (kernel-1)/2``) when ``g > 0`` and ``i < kernel^2``, and is not
    shifted otherwise; ``g = group`` or the paper's equal split
    ``channels // kernel^2``. The shift is a sampling offset:
    ``out[c, y, x] = in[c, y + dy, x + dx]``, 0 outside the map — exactly
    :func:`mulfree.params.shift_golden.shift_cvpr`.

    Parameters
    ----------
    channels : int
    kernel : int
        Odd, >= 1.
    group : int, optional
        Channels per direction (default ``channels // kernel^2``).
    """

    def __init__(self, channels, kernel=3, group=None):
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        if isinstance(kernel, bool) or not isinstance(kernel, (int, np.integer)) \
                or kernel < 1 or kernel % 2 == 0:
            raise ValueError(f"kernel must be an odd positive integer, not {kernel!r}")
        if group is not None and (isinstance(group, bool) or not isinstance(group, int)
                                  or group < 0):
            raise ValueError(f"group must be None or an integer >= 0, not {group!r}")
        self.kernel = int(kernel)
        self.group = group
        dy, dx = shift_golden.shift_groups(self.channels, self.kernel, group)
        self.offsets = [(int(a), int(b)) for a, b in zip(dy, dx)]

    def forward(self, x):
        return _table_shift(x, self.channels, self.offsets)

    def extra_repr(self):
        return f"{self.channels}, kernel={self.kernel}, group={self.group}"


def _table_shift(x, channels, offsets):
    """``out[:, c, y, x] = in[:, c, y + dy[c], x + dx[c]]``, zero filled; slices only."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(f"input must have shape [N, {channels}, H, W], not {tuple(x.shape)}")
    h, w = x.shape[2:]
    out = torch.zeros_like(x)
    # Runs of equal offsets are one slice each (the groups are contiguous).
    start = 0
    while start < channels:
        end = start
        while end < channels and offsets[end] == offsets[start]:
            end += 1
        dy, dx = offsets[start]
        ys, ye = max(0, -dy), min(h, h - dy)        # output rows whose source is inside
        xs, xe = max(0, -dx), min(w, w - dx)
        if ys < ye and xs < xe:
            out[:, start:end, ys:ye, xs:xe] = x[:, start:end, ys + dy:ye + dy, xs + dx:xe + dx]
        start = end
    return out


class AddressShift2d(nn.Module):
    """AddressNet's address shift (He et al., WACV 2019): the map read from a moved address.

    Channels are split into the four groups left ``(0, +1)``, right ``(0, -1)``, up ``(+1, 0)``,
    down ``(-1, 0)`` (:data:`mulfree.params.shift_golden.ADDRESS_DIRECTIONS`; ``g = group`` or
    ``channels // 4``, leftover channels unshifted). Each sample's map ``[C, H, W]`` is one
    channel-major buffer and channel ``c`` reads

        out[c, y, x] = buf[(c*H + y)*W + x + dy*W + dx]

    whatever lies there (the neighbouring row's or channel's element); only an address outside
    the sample's buffer reads 0 — :func:`mulfree.params.shift_golden.address_shift` with the map
    alone in memory at base 0.
    """

    def __init__(self, channels, group=None):
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        if group is not None and (isinstance(group, bool) or not isinstance(group, int)
                                  or group < 0):
            raise ValueError(f"group must be None or an integer >= 0, not {group!r}")
        self.group = group
        dy, dx = shift_golden.address_groups(self.channels, group)
        self.register_buffer("_dy", torch.as_tensor(dy), persistent=False)
        self.register_buffer("_dx", torch.as_tensor(dx), persistent=False)

    def forward(self, x):
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"input must have shape [N, {self.channels}, H, W], "
                             f"not {tuple(x.shape)}")
        n, c, h, w = x.shape
        # Offsets are at most W words, so W zeros on each side stand for "outside the buffer".
        flat = F.pad(x.reshape(n, c * h * w), (w, w))
        offset = (self._dy * w + self._dx).to(x.device)
        index = (torch.arange(c * h * w, device=x.device).reshape(c, h * w)
                 + offset[:, None] + w).reshape(-1)
        return flat[:, index].reshape(n, c, h, w)

    def extra_repr(self):
        return f"{self.channels}, group={self.group}"


class ChannelShift(nn.Module):
    """AddressNet's channel shift: ``out[:, c] = in[:, (c + r) mod C]``, ``0 <= r <= C``.

    Output channel 0 is input channel ``r`` (the channel base pointer moved forward by ``r``):
    :func:`mulfree.params.shift_golden.channel_shift`. A replacement for ShuffleNet's shuffle.
    """

    def __init__(self, channels, r):
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= self.channels:
            raise ValueError(f"r must be an integer in [0, channels] = [0, {self.channels}], "
                             f"not {r!r}")
        self.r = r

    def forward(self, x):
        if x.dim() < 2 or x.shape[1] != self.channels:
            raise ValueError(f"input must have {self.channels} channels in dimension 1, "
                             f"not shape {tuple(x.shape)}")
        return torch.roll(x, -self.r, dims=1)

    def extra_repr(self):
        return f"{self.channels}, r={self.r}"
