"""The NumPy golden model: the executable form of ``docs/numerics.md``.

Written from the papers' arithmetic (DeepShift, AdderNet), not from the RTL. All values are
``np.int64``; :class:`~mulfree.params.config.ArrayConfig` refuses designs whose accumulator would
not fit 64 bits, and every function here checks that its inputs lie in their ranges and that no
result leaves the accumulator's range, so nothing overflows silently. The one addition whose
true result can exceed int64 (a partial sum of a 64-bit accumulator plus a tile's terms) goes
through :func:`exact_add`, which detects the wrap instead of returning it.

Weight codes are what the weight stream carries:

* ``shift``: the unsigned ``weight_bits``-wide code ``{s, e}`` (sign bit on top); ``e = 0`` is
  the zero weight, otherwise the weight is ``(-1)^s * 2^(e-1)``;
* ``adder`` and ``mult``: the signed weight itself.
"""

import numpy as np

from .config import ArrayConfig


__all__ = [
    "encode_shift", "decode_shift", "weight_values", "terms", "array_forward",
    "check_range", "exact_add", "as_int64",
]


def check_range(name, values, lo, hi):
    """Raise ``ValueError`` naming the first element of ``values`` outside ``[lo, hi]``."""
    values = np.asarray(values)
    bad = np.argwhere((values < lo) | (values > hi))
    if bad.size:
        index = tuple(int(i) for i in bad[0])
        raise ValueError(f"{name}{list(index)} = {int(values[index])} is outside "
                         f"[{lo}, {hi}] ({bad.shape[0]} element(s) out of range)")


def exact_add(a, b):
    """``a + b`` on int64 arrays and a mask of the elements whose true sum leaves int64.

    Two's complement addition wraps only when both operands have the same sign and the sum's
    sign differs; that test is exact, so the returned sum is the true one wherever the mask is
    False (and meaningless where it is True).
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    with np.errstate(over="ignore"):
        total = a + b
    wrapped = ((a < 0) == (b < 0)) & ((total < 0) != (a < 0))
    return total, wrapped


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1


def as_int64(name, values, *, bools=False):
    """``values`` as an int64 array, refusing anything that would change on the way.

    Integer dtypes (and ``bool`` if ``bools``) are accepted; so are object arrays of Python
    integers (what ``np.asarray`` makes of integers beyond 64 bits). A value outside int64 (a
    ``uint64`` of ``2^63`` or more, a Python integer beyond 64 bits) raises ``ValueError``
    naming it: ``astype`` would wrap it silently into a different, possibly in-range, number.
    """
    values = np.asarray(values)
    kinds = "iub" if bools else "iu"
    if values.dtype.kind == "O" and all(isinstance(v, (int, np.integer))
                                        and not isinstance(v, (bool, np.bool_))
                                        for v in values.flat):
        ints = [int(v) for v in values.flat]
    elif values.dtype.kind not in kinds:
        raise TypeError(f"{name} must hold integers, not {values.dtype}")
    elif values.dtype == np.uint64:
        ints = values.ravel()
    else:
        return values.astype(np.int64)
    for i, v in enumerate(ints):
        if not _INT64_MIN <= int(v) <= _INT64_MAX:
            index = list(np.unravel_index(i, values.shape)) if values.shape else []
            raise ValueError(f"{name}{[int(j) for j in index]} = {int(v)} is outside int64 "
                             f"[{_INT64_MIN}, {_INT64_MAX}]")
    return np.array(ints, dtype=np.int64).reshape(values.shape)


_as_int64 = as_int64


def encode_shift(sign, shift, weight_bits):
    """Codes for the shift weights ``sign * 2^shift``.

    ``sign`` is in {-1, 0, +1}; ``shift`` in ``[0, 2^(weight_bits-1) - 2]`` (ignored where
    ``sign`` is 0). Returns unsigned codes: ``s << (weight_bits-1) | e`` with ``e = shift + 1``,
    and the canonical zero code 0.
    """
    sign = _as_int64("sign", sign)
    shift = _as_int64("shift", np.broadcast_to(shift, sign.shape))
    max_shift = (1 << (weight_bits - 1)) - 2
    check_range("sign", sign, -1, 1)
    check_range("shift", np.where(sign == 0, 0, shift), 0, max_shift)
    e = np.where(sign == 0, 0, shift + 1)
    s = (sign < 0).astype(np.int64)
    return (s << (weight_bits - 1)) | e


def decode_shift(codes, weight_bits):
    """``(sign, shift)`` of shift codes; ``sign`` is 0 where the field ``e`` is 0."""
    codes = _as_int64("codes", codes)
    check_range("codes", codes, 0, (1 << weight_bits) - 1)
    e = codes & ((1 << (weight_bits - 1)) - 1)
    s = codes >> (weight_bits - 1)
    sign = np.where(e == 0, 0, 1 - 2 * s)
    shift = np.where(e == 0, 0, e - 1)
    return sign, shift


def weight_values(cfg: ArrayConfig, codes):
    """The integers the weight codes stand for (shift: ``sign * 2^p``, on the array's scale)."""
    if cfg.pe == "shift":
        sign, shift = decode_shift(codes, cfg.weight_bits)
        return sign * (np.int64(1) << shift)
    codes = _as_int64("weights", codes)
    check_range("weights", codes, *cfg.weight_range)
    return codes


def terms(cfg: ArrayConfig, x, codes):
    """Element-wise contribution of activation ``x`` with weight code ``codes`` to a sum.

    shift: ``sign * (x << p)`` (exact); adder: ``-|x - w|``; mult: ``x * w``.
    """
    x = _as_int64("x", x)
    check_range("x", x, *cfg.act_range)
    if cfg.pe == "shift":
        sign, shift = decode_shift(codes, cfg.weight_bits)
        return sign * np.left_shift(x, shift)
    w = weight_values(cfg, codes)
    if cfg.pe == "adder":
        return -np.abs(x - w)
    return x * w


def array_forward(cfg: ArrayConfig, weights, inputs, psums=None):
    """What the array computes for one weight tile and a stream of input vectors.

    Parameters
    ----------
    weights : array of shape ``(rows, cols)``
        Weight codes ``W[r, c]``.
    inputs : array of shape ``(M, rows)``
        Input vectors ``x_m``.
    psums : array of shape ``(M, cols)``, optional
        Incoming partial sums (0 if omitted).

    Returns
    -------
    array of shape ``(M, cols)``, int64
        ``y[m, c] = psums[m, c] + sum_r term(inputs[m, r], weights[r, c])``.

    Raises
    ------
    ValueError
        If a shape is wrong or a value lies outside its range.
    OverflowError
        If a result leaves ``cfg.acc_range``: the partial sum was not that of a reduction of at
        most ``max_k - rows`` terms.
    """
    weights = _as_int64("weights", weights)
    inputs = _as_int64("inputs", inputs)
    if weights.shape != (cfg.rows, cfg.cols):
        raise ValueError(f"weights must have shape ({cfg.rows}, {cfg.cols}), "
                         f"not {weights.shape}")
    if inputs.ndim != 2 or inputs.shape[1] != cfg.rows:
        raise ValueError(f"inputs must have shape (M, {cfg.rows}), not {inputs.shape}")
    if psums is None:
        psums = np.zeros((inputs.shape[0], cfg.cols), dtype=np.int64)
    psums = _as_int64("psums", psums)
    if psums.shape != (inputs.shape[0], cfg.cols):
        raise ValueError(f"psums must have shape ({inputs.shape[0]}, {cfg.cols}), "
                         f"not {psums.shape}")
    check_range("psums", psums, *cfg.acc_range)
    # Checked here too so that an error names the caller's element, not a broadcast one.
    check_range("inputs", inputs, *cfg.act_range)
    if cfg.pe == "shift":
        check_range("weights", weights, 0, (1 << cfg.code_width) - 1)
    else:
        check_range("weights", weights, *cfg.weight_range)
    # The tile's own sum is exact in int64: a sum of rows <= max_k terms lies in
    # sum_range(rows), inside acc_range, which the config keeps within 64 bits.
    tile = terms(cfg, inputs[:, :, None], weights[None, :, :]).sum(axis=1)
    # psums + tile is not: with a 64-bit accumulator psums may lie anywhere in acc_range, and
    # the true sum may leave int64. exact_add reports that wrap; a wrapped element lies outside
    # acc_range by definition.
    result, wrapped = exact_add(psums, tile)
    lo, hi = cfg.acc_range
    bad = wrapped | (result < lo) | (result > hi)
    if np.any(bad):
        m, c = (int(i) for i in np.argwhere(bad)[0])
        true = int(psums[m, c]) + int(tile[m, c])          # Python integers: never wraps
        raise OverflowError(f"y[{m}, {c}] = {true} leaves the accumulator range "
                            f"[{lo}, {hi}] of max_k={cfg.max_k}")
    return result
