"""Several images per run of a convolution: images stacked along the height.

A run pays a fixed price (the descriptor, the setup, the first weights, the pipeline's drain)
and a small map pays another: a block of fewer pixels than the engine's hazard window waits
for its partial sums between passes (``docs/architecture.md``). A convolution over the
digits' 4x4 maps is all price. Stacking ``n`` images into one map, one above the other with
``gap`` zero rows between them, makes one run of ``n`` images: the core sees a taller map
and the same layer (weights, padding, post-processing), nothing changes in the core.

Why it is exact. Image ``i`` starts at row ``i * period`` (``period = H + gap``). Output
row ``j`` of image ``i`` is the stacked output row ``i * period / s + j`` when the stride
``s`` divides ``period``, and it reads the stacked input rows ``i * period + j*s - p`` to
``... + kh - 1``: relative to the image the rows a single-image run reads. Those outside the
image (its padding: ``p`` rows above, ``last - H + 1`` below, ``last = (OH-1)*s - p + kh -
1``) fall into the gap or the core's own padding, all zeros, as long as ``gap`` covers them.
The rows of the stacked output between images read rows of two images: they are computed and
thrown away (the useful utilization, :mod:`mulfree.host.schedule`, never counts them).

Not stacked (``images_per_run`` stays 1): a linear node (its images are already its pixels),
a run with a fused residual add or global pool (the shortcut and the pool sum see the whole
map), a run of a chained segment unless every step of it :func:`concatenates` (then the
segment runs ``chain_images`` images at a time, its banks holding stacked maps), a max pool with padding
(its padding is the smallest activation, not zero) and a convolution whose shift table moves
rows (a shifted read of the gap would see the next image where a single image sees zero).
NumPy only.
"""

import numpy as np


__all__ = ["MAX_STACK", "stack_gap", "stacked_height", "stack_images", "unstack_output",
           "concatenates"]

#: The most images one run takes: enough that a run's fixed price is a few percent of a small
#: layer's work, few enough that a batch's last, shorter run wastes little.
MAX_STACK = 64


def _kernel_h(step):
    return int(step.w_codes.shape[2])


def stack_gap(step):
    """Zero rows between stacked images of ``step``, or ``None`` if it cannot be stacked.

    ``step`` is a :class:`~mulfree.host.steps.CoreStep` (anything with its fields).
    """
    if step.kind == "linear" or step.residual is not None or step.pool is not None:
        return None
    if getattr(step, "per_image", False) and getattr(step, "chain_images", 1) == 1:
        return None
    ph = int(step.padding[0])
    if step.window == "max" and ph > 0:
        return None
    if step.shifts is not None and np.any(np.asarray(step.shifts)[:, 0] != 0):
        return None
    h = int(step.in_shape[1])
    s, kh = int(step.stride[0]), _kernel_h(step)
    oh = int(step.out_shape[1])
    below = max(0, (oh - 1) * s - ph + kh - h)        # zero rows the last output row reads
    gap = max(ph, below)
    while (h + gap) % s:
        gap += 1
    return gap


def concatenates(step):
    """Whether ``step``'s stacked input and output are the plain concatenations of its images
    along the height (no gap rows, no rows between images in the output): a run of a chained
    segment can then read a stacked map another run kept in a bank as its own input.
    ``step.in_shape[1]`` a multiple of the stride, ``out_shape[1]`` the quotient, no gap."""
    if step.kind == "linear" or stack_gap(step) != 0:
        return False
    h, s = int(step.in_shape[1]), int(step.stride[0])
    return h % s == 0 and h // s == int(step.out_shape[1])


def stacked_height(step, n):
    """The height of ``n`` images of ``step`` stacked (``in_shape[1]`` for one)."""
    h = int(step.in_shape[1])
    if n == 1:
        return h
    return n * h + (n - 1) * stack_gap(step)


def stack_images(step, x):
    """``x`` ``[n, C, H, W]`` as one map ``[C, stacked_height, W]``, zero rows between."""
    x = np.asarray(x, dtype=np.int64)
    n, c, h, w = x.shape
    if n == 1:
        return x[0]
    period = h + stack_gap(step)
    out = np.zeros((c, stacked_height(step, n), w), dtype=np.int64)
    for i in range(n):
        out[:, i * period:i * period + h] = x[i]
    return out


def unstack_output(step, y, n):
    """The ``[n, C, OH, OW]`` outputs of the images of a stacked run's output ``y``."""
    y = np.asarray(y)
    if n == 1:
        return y[None]
    oh = int(step.out_shape[1])
    step_rows = (int(step.in_shape[1]) + stack_gap(step)) // int(step.stride[0])
    return np.stack([y[:, i * step_rows:i * step_rows + oh] for i in range(n)])
