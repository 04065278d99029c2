"""Ranges and widths of the post-processing step, derived from an :class:`ArrayConfig`.

Post-processing turns an accumulator into the next layer's activation (``docs/numerics.md``,
section "Post-processing and layers")::

    y = acc + bias[c]                       bias: signed acc_width bits
    v = y * 2^-shift[c]                     shift > 0: arithmetic right shift, round half up
                                            shift < 0: exact left shift by -shift
    v = max(v, 0) if relu[c]
    out = clamp(v, act_range)               saturation to signed act_bits

The golden model (:mod:`mulfree.params.layer_golden`) and the RTL
(:class:`mulfree.rtl.postproc.PostProcess`) both read their numbers from here.
"""

from .config import ArrayConfig, ConfigError, int_range, signed_width


__all__ = ["bias_range", "shift_range", "sum_width", "shift_width", "check_post_config",
           "max_post_k", "MAX_POST_ACC_WIDTH"]


#: Widest accumulator post-processing supports: ``y = acc + bias`` (``acc_width + 1`` bits)
#: must fit the golden model's int64 and the RTL's 64-bit datapath.
MAX_POST_ACC_WIDTH = 63


def max_post_k(cfg: ArrayConfig):
    """The largest ``max_k`` whose accumulator post-processing supports, for ``cfg``'s widths."""
    return cfg._max_k_for_width(MAX_POST_ACC_WIDTH)


def check_post_config(cfg: ArrayConfig):
    """Raise :class:`ConfigError` if ``acc + bias`` would not fit 64 bits (``acc_width = 64``).

    The message is one line naming ``max_k``, its value and the allowed range for these
    widths (an engine alone may have a 64-bit accumulator; a layer or a core may not).
    """
    if cfg.acc_width > MAX_POST_ACC_WIDTH:
        raise ConfigError(
            "max_k", f"max_k must be in [{cfg.rows}, {max_post_k(cfg)}] for post-processing "
                     f"with {cfg.pe} PEs, act_bits={cfg.act_bits}, "
                     f"weight_bits={cfg.weight_bits}, not {cfg.max_k}: it needs a "
                     f"{cfg.acc_width}-bit accumulator, and acc + bias must fit 64 bits "
                     f"(acc_width <= {MAX_POST_ACC_WIDTH})")


def bias_range(cfg: ArrayConfig):
    """Inclusive range of a per-channel bias: a signed ``acc_width``-bit integer."""
    return int_range(cfg.acc_width)


def sum_width(cfg: ArrayConfig):
    """Width of ``y = acc + bias``: ``acc_width + 1`` (two signed ``acc_width`` operands)."""
    return cfg.acc_width + 1


def shift_range(cfg: ArrayConfig):
    """Inclusive range of a per-channel signed shift: ``[-act_bits, acc_width + 1]``.

    Why these ends: a right shift by ``sum_width`` turns every ``y`` into 0 (round half up of
    ``|y| <= 2^(sum_width-1)`` over ``2^sum_width``), and a left shift by ``act_bits`` saturates
    every nonzero ``y``; larger amounts would mean nothing new.
    """
    return -cfg.act_bits, sum_width(cfg)


def shift_width(cfg: ArrayConfig):
    """Width of the signed shift field."""
    return signed_width(*shift_range(cfg))
