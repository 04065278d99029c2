"""The checks a device applies to what its caller gives, before anything is sent.

Each returns the value in the form the device uses, or raises
:class:`mulfree.host.device_errors.InputError` naming the argument with a one-line message.
"""

import math

import numpy as np

from .device_errors import InputError


__all__ = ["check_timeout", "check_word", "as_array"]


def check_timeout(param, value):
    """``value`` as seconds: a finite number > 0.

    Parameters
    ----------
    param : str
        The argument's name, for the message.
    value : int or float
        The number of seconds.

    Returns
    -------
    float

    Raises
    ------
    InputError
        Naming ``param`` for a bool, a non-number, a non-finite number or one <= 0.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not math.isfinite(value) or value <= 0:
        raise InputError(param, f"{param} must be a finite number of seconds > 0, "
                                f"not {value!r}")
    return float(value)


def check_word(param, value):
    """``value`` as a 32-bit register word.

    Parameters
    ----------
    param : str
        The argument's name, for the message.
    value : int
        An integer in ``[0, 0xffffffff]``.

    Returns
    -------
    int

    Raises
    ------
    InputError
        Naming ``param`` for a bool, a non-integer or an integer out of range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not 0 <= value <= 0xFFFF_FFFF:
        raise InputError(param, f"{param} must be an integer in [0, 0xffffffff], not {value!r}")
    return int(value)


def as_array(x):
    """``x`` as a NumPy array.

    Parameters
    ----------
    x : array_like
        The inputs of a batch.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    InputError
        Naming ``x`` when NumPy cannot make an array of it (ragged lists, objects).
    """
    try:
        x = np.asarray(x)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InputError("x", f"x must be an array of numbers: "
                              f"{' '.join(str(exc).split())}") from None
    return x
