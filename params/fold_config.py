"""Timing of a folded engine (:class:`~mulfree.rtl.fold.FoldedEngine`).

A folded engine has fewer PE columns than the core's ``cols`` and computes a result vector in
``cols / physical_cols`` passes. Its latency is defined here, once, for the core's hazard
window (:attr:`~mulfree.params.core_config.CoreConfig.hazard_window`), the host's cycle model
and the engine's tests.
"""

from .config import ArrayConfig, ConfigError


__all__ = ["check_fold", "fold_passes", "fold_latency"]


def check_fold(e: ArrayConfig, physical_cols):
    """Raise :class:`ConfigError` (``param="physical_cols"``) unless ``physical_cols`` is an
    integer dividing ``e.cols``."""
    divisors = [d for d in range(1, e.cols + 1) if e.cols % d == 0]
    if (isinstance(physical_cols, bool) or not isinstance(physical_cols, int)
            or physical_cols not in divisors):
        raise ConfigError("physical_cols", f"physical_cols must divide cols={e.cols} (one of "
                          f"{', '.join(map(str, divisors))}), not {physical_cols!r}")


def fold_passes(e: ArrayConfig, physical_cols: int) -> int:
    """Passes per input vector: ``cols / physical_cols`` (the engine takes one input vector
    every that many cycles)."""
    check_fold(e, physical_cols)
    return e.cols // physical_cols


def fold_latency(e: ArrayConfig, physical_cols: int) -> int:
    """Cycles from an input beat's handshake to its output beat being valid, with no stall,
    for a folded engine of kind ``e`` with ``physical_cols`` columns: ``rows + passes + 1``.

    The handshake edge (ending cycle ``t``) registers the input and issues pass 0; pass ``p``
    follows ``p`` cycles later. A pass crosses ``rows`` PE registers (one per row of the
    column chain) and the output register, which adds its incoming partial sums; the output is
    valid once the last pass (``passes - 1``) is in: cycle ``t + rows + passes + 1``. With
    one pass this is the array's ``rows + 2`` (:attr:`ArrayConfig.latency`), whatever
    ``e.arch``: a folded engine is always a column chain.
    """
    return e.rows + fold_passes(e, physical_cols) + 1
