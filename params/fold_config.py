"""Timing of a folded engine (:class:`~mulfree.rtl.fold.FoldedEngine`).

A folded engine has fewer PE columns than the core's ``cols`` and computes a result vector in
``cols / physical_cols`` passes. Its latency is defined here, once, for the core's hazard
window (:attr:`~mulfree.params.core_config.CoreConfig.hazard_window`), the host's cycle model
and the engine's tests.
"""

from .config import ArrayConfig


__all__ = ["fold_latency"]


def fold_latency(e: ArrayConfig, physical_cols: int) -> int:
    """Cycles from an input beat's handshake to its output beat being valid, with no stall,
    for a folded engine of kind ``e`` with ``physical_cols`` columns."""
    raise NotImplementedError("the folded engine's latency is defined with rtl/fold.py")
