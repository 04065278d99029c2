"""Packing of vectors into the flat stream payloads (element ``i`` in bits ``[i*b, (i+1)*b)``)."""

import numpy as np


__all__ = ["pack", "unpack", "StructPacker"]


def pack(values, width):
    """Pack integers (signed or unsigned) into one unsigned integer, two's complement."""
    mask = (1 << width) - 1
    word = 0
    for i, v in enumerate(np.asarray(values).ravel().tolist()):
        word |= (int(v) & mask) << (i * width)
    return word


def unpack(word, width, count, signed=True):
    """The ``count`` elements of ``width`` bits packed in ``word``, as an int64 array."""
    mask = (1 << width) - 1
    out = np.empty(count, dtype=np.int64)
    for i in range(count):
        v = (word >> (i * width)) & mask
        if signed and v >> (width - 1):
            v -= 1 << width
        out[i] = v
    return out


class StructPacker:
    """Packs and unpacks a struct payload described by a manifest port's ``fields``."""

    def __init__(self, fields):
        self._fields = {f["name"]: (f["offset"], f["width"]) for f in fields}

    def pack(self, **values):
        word = 0
        for name, value in values.items():
            offset, width = self._fields[name]
            word |= (int(value) & ((1 << width) - 1)) << offset
        return word

    def field(self, word, name):
        offset, width = self._fields[name]
        return (word >> offset) & ((1 << width) - 1)
