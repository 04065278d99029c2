"""Kernel taps on the array's rows: a convolution run as a 1x1 convolution of its patches.

A convolution's reduction runs over ``C`` input channels and ``kh x kw`` kernel positions.
The core puts channels on the array's rows and walks the kernel positions in time: a layer
with fewer channels than rows leaves rows idle (the digits' first layer, one channel on
sixteen rows, keeps one row in sixteen busy). Expanding the input on the host into its
patches, ``C * kh * kw`` channels per output pixel, turns the layer into a 1x1 convolution
(stride 1, no padding) whose reduction fills the rows: the taps sit on the rows, next to the
channels. The core computes the same sums (the reduction is the same terms; a padding pixel
is a zero in the patch exactly as it is a zero of the padded map, for AdderNet too); the
weights ``[O, C, kh, kw]`` become ``[O, C*kh*kw, 1, 1]`` in the patch order below.

The price is traffic: the patches are ``kh * kw / (sy * sx)`` times the map's bytes. The
compiler expands a layer only when its cycle estimate (stream and array) is lower
(:func:`~mulfree.host.compiler.compile_model`); the program's description says so.

Patch channel ``(c * kh + ky) * kw + kx`` of output pixel ``(oy, ox)`` holds
``x[c, oy*sy - py + ky, ox*sx - px + kx]``, or 0 outside the map. NumPy only.
"""

import numpy as np


__all__ = ["PATCH_MODES", "Patches", "patch_shape", "patch_weights", "expand_patches"]

#: ``compile_model(patches=...)``: weigh them, use them where the core takes them, never.
PATCH_MODES = ("auto", "on", "off")


class Patches(tuple):
    """``(kh, kw, stride, padding)`` of the convolution a patch step stands for."""

    __slots__ = ()

    def __new__(cls, kh, kw, stride, padding):
        return super().__new__(cls, (int(kh), int(kw), tuple(map(int, stride)),
                                     tuple(map(int, padding))))

    @property
    def kernel(self):
        return self[0], self[1]

    @property
    def stride(self):
        return self[2]

    @property
    def padding(self):
        return self[3]


def patch_shape(in_shape, patches: Patches):
    """``(C * kh * kw, OH, OW)``: the patches of one ``(C, H, W)`` image."""
    c, h, w = in_shape
    (kh, kw), (sy, sx), (py, px) = patches.kernel, patches.stride, patches.padding
    return (c * kh * kw, (h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1)


def patch_weights(w_codes):
    """``[O, C, kh, kw]`` codes as the ``[O, C*kh*kw, 1, 1]`` codes of the 1x1 convolution."""
    w = np.asarray(w_codes)
    return np.ascontiguousarray(w.reshape(w.shape[0], -1, 1, 1))


def expand_patches(x, patches: Patches):
    """The patches ``[B, C*kh*kw, OH, OW]`` of the images ``x`` ``[B, C, H, W]``."""
    x = np.asarray(x, dtype=np.int64)
    b, c, h, w = x.shape
    (kh, kw), (sy, sx), (py, px) = patches.kernel, patches.stride, patches.padding
    _, oh, ow = patch_shape((c, h, w), patches)
    padded = np.zeros((b, c, h + 2 * py, w + 2 * px), dtype=np.int64)
    padded[:, :, py:py + h, px:px + w] = x
    out = np.empty((b, c, kh, kw, oh, ow), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            out[:, :, ky, kx] = padded[:, :, ky:ky + sy * (oh - 1) + 1:sy,
                                       kx:kx + sx * (ow - 1) + 1:sx]
    return out.reshape(b, c * kh * kw, oh, ow)
