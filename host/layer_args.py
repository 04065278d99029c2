"""Argument checks shared by the PyTorch layers of :mod:`mulfree.host.layers`.

Each check returns the value in the form the layers keep (plain ``int``, a pair) or raises
``ValueError`` naming the argument, the value and what is allowed. NumPy only: the converters
(:mod:`mulfree.host.convert`) check their arguments with them before touching a model.

Convolutions are dense (``groups=1``) or depthwise (``groups == in_channels``, ``out_channels``
a multiple of ``in_channels``, PyTorch's weight shape ``[O, 1, kh, kw]``); other group counts
are refused (:func:`check_groups`).
"""

import numpy as np


__all__ = ["check_positive_int", "check_weight_bits", "check_mode", "check_groups", "conv_args"]


def check_positive_int(name, value):
    """``value`` as an ``int`` if it is an integer >= 1 (not a bool), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")
    return int(value)


def check_weight_bits(weight_bits):
    """``weight_bits`` as an ``int`` if it is an integer in 2..6 (a shift code's width)."""
    if (isinstance(weight_bits, bool) or not isinstance(weight_bits, (int, np.integer))
            or not 2 <= weight_bits <= 6):
        raise ValueError(f"weight_bits must be an integer in 2..6, not {weight_bits!r}")
    return int(weight_bits)


def check_mode(mode):
    """``mode`` if it is ``"q"`` (DeepShift-Q) or ``"ps"`` (DeepShift-PS)."""
    if mode not in ("q", "ps"):
        raise ValueError(f"mode must be 'q' or 'ps', not {mode!r}")
    return mode


def _pair(name, value, minimum):
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (int(value), int(value))
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum
                   for v in value)):
        raise ValueError(f"{name} must be an integer >= {minimum} or a pair of them, "
                         f"not {value!r}")
    return (int(value[0]), int(value[1]))


def check_groups(groups, in_channels, out_channels):
    """``groups`` as an ``int`` if the convolution is dense or depthwise, else ``ValueError``.

    Parameters
    ----------
    groups : int
        1 (dense) or ``in_channels`` (depthwise: each input channel has its own
        ``out_channels // in_channels`` filters).
    in_channels, out_channels : int
        Positive integers (checked by the caller); for a depthwise convolution
        ``out_channels`` must be a multiple of ``in_channels``.

    Returns
    -------
    int
    """
    if isinstance(groups, bool) or not isinstance(groups, (int, np.integer)) or (
            groups != 1 and groups != in_channels):
        raise ValueError(f"groups must be 1 or in_channels = {in_channels} (depthwise), "
                         f"not {groups!r}")
    if groups != 1 and out_channels % groups:
        raise ValueError(f"out_channels must be a multiple of in_channels = {in_channels} for "
                         f"a depthwise convolution (groups = in_channels), not {out_channels}")
    return int(groups)


def conv_args(kernel_size, stride, padding, dilation, groups, padding_mode, *,
              in_channels=None, out_channels=None):
    """``(kernel_size, stride, padding)`` as pairs, from :class:`torch.nn.Conv2d`'s arguments.

    ``padding`` may be ``"valid"``, or ``"same"`` for stride 1 and odd kernels; ``dilation``
    and ``padding_mode`` must be 1 and ``"zeros"`` (what the hardware does). ``groups`` is
    checked by :func:`check_groups` (1 or ``in_channels``) when ``in_channels`` and
    ``out_channels`` are given, and must be 1 when they are not.

    Parameters
    ----------
    kernel_size, stride, padding, dilation, groups, padding_mode
        As :class:`torch.nn.Conv2d`.
    in_channels, out_channels : int, optional
        The layer's channels, checked positive by the caller; they allow a depthwise
        ``groups``.

    Returns
    -------
    tuple
        ``(kernel_size, stride, padding)``, each a pair of ``int``.
    """
    kernel_size = _pair("kernel_size", kernel_size, 1)
    stride = _pair("stride", stride, 1)
    if padding == "valid":
        padding = 0
    elif padding == "same":
        if stride != (1, 1) or any(k % 2 == 0 for k in kernel_size):
            raise ValueError(f"padding 'same' is supported for stride 1 and odd kernel sizes "
                             f"only, not kernel_size={kernel_size}, stride={stride}")
        padding = (kernel_size[0] // 2, kernel_size[1] // 2)
    padding = _pair("padding", padding, 0)
    if _pair("dilation", dilation, 1) != (1, 1):
        raise ValueError(f"dilation must be 1 (the hardware's im2col has no dilation), "
                         f"not {dilation!r}")
    if in_channels is not None and out_channels is not None:
        check_groups(groups, in_channels, out_channels)
    elif groups != 1:
        raise ValueError(f"groups must be 1 (grouped convolutions are not supported), "
                         f"not {groups!r}")
    if padding_mode != "zeros":
        raise ValueError(f"padding_mode must be 'zeros' (the hardware pads with x = 0), "
                         f"not {padding_mode!r}")
    return kernel_size, stride, padding
