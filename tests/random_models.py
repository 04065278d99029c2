"""Random integer models of every layer kind, for the compiler and runtime tests."""

import numpy as np

from mulfree.host.export_format import (IntConv2d, IntFlatten, IntInput, IntLinear,
                                        IntMaxPool2d, IntModel)


__all__ = ["conv_model", "random_codes", "random_post"]


SHIFTS = {"shift": (4, 9), "adder": (0, 3), "mult": (3, 7)}


def random_codes(rng, pe, wb, ab, shape):
    if pe == "shift":
        return rng.integers(0, 1 << wb, shape)
    bits = ab if pe == "adder" else wb
    return rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), shape)


def random_post(rng, pe, n, k, ab):
    center = k * (1 << ab) // 3 if pe == "adder" else 0
    return dict(bias=center + rng.integers(-60, 60, n), shift=rng.integers(*SHIFTS[pe], n),
                relu=rng.integers(0, 2, n).astype(bool))


def conv_model(seed, pe, *, wb=None, ab=6):
    """Every layer kind and tiling case: 7 input channels (several channel tiles on a 4-row
    core), 6 output channels (several output tiles on 4 columns), per-channel shifts, padding,
    a rectangular kernel with unequal strides, max pooling, flatten, two linear layers."""
    rng = np.random.default_rng(seed)
    wb = wb or {"shift": 4, "adder": None, "mult": 5}[pe]
    return IntModel(IntInput((7, 6, 5), ab, -3), [
        IntConv2d(pe, random_codes(rng, pe, wb, ab, (6, 7, 3, 3)), padding=1, act_bits=ab,
                  weight_bits=wb, shifts=rng.integers(-1, 2, (7, 2)),
                  **random_post(rng, pe, 6, 63, ab)),
        IntMaxPool2d(),
        IntConv2d(pe, random_codes(rng, pe, wb, ab, (5, 6, 2, 1)), stride=(2, 1), padding=(1, 0),
                  act_bits=ab, weight_bits=wb, **random_post(rng, pe, 5, 12, ab)),
        IntFlatten(),
        IntLinear(pe, random_codes(rng, pe, wb, ab, (5 * 2 * 2, 9)), act_bits=ab, weight_bits=wb,
                  **random_post(rng, pe, 9, 20, ab)),
        IntLinear(pe, random_codes(rng, pe, wb, ab, (9, 3)), act_bits=ab, weight_bits=wb,
                  **random_post(rng, pe, 3, 9, ab)),
    ], name=f"conv_{pe}")
