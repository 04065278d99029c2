"""Validation of one node of an integer model: its fields, its inputs, its output.

:func:`check_node` is what :func:`mulfree.params.int_model.graph_nodes` calls for every node,
given the shapes, widths and scale exponents of the tensors the node reads; it returns those of
its output, or raises :class:`~mulfree.params.int_layers.ExportError` naming the field
(``layers.3.kernel``), the value and what is allowed.
"""

import numpy as np

from .config import ArrayConfig, ConfigError, PE_KINDS, WEIGHT_BITS_LIMITS
from .int_layers import (ADD_SHIFT_LIMITS, ALIGN_SHIFT_LIMITS, MAX_DIM, MAX_KERNEL,
                         MAX_PADDING, MAX_POOL_KERNEL, MAX_POOL_WINDOW, MAX_SHIFT2D,
                         MAX_STRIDE, POOL_SHIFT_LIMITS, SCALE_EXP_LIMITS, SHIFT_OFFSETS,
                         ExportError)
from .post_config import bias_range, check_post_config, shift_range


__all__ = ["check_node", "check_int", "check_array", "check_pair", "check_shape", "is_int",
           "code_range", "layer_config", "check_post", "pool_output"]


def is_int(value):
    """An integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def check_int(param, value, lo=None, hi=None):
    """``int(value)`` if it is an integer in ``[lo, hi]``, else :class:`ExportError`."""
    if not is_int(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ExportError(param, f"{param} must be an integer in [{lo_s}, {hi_s}], "
                                 f"not {value!r:.80}")
    return int(value)


def check_array(param, arr, shape, lo, hi):
    """An integer array of ``shape`` with every element in ``[lo, hi]``."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "iu":
        raise ExportError(param, f"{param} must hold integers, not {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ExportError(param, f"{param} must have shape {tuple(shape)}, not {arr.shape}")
    bad = np.argwhere((arr < lo) | (arr > hi))
    if bad.size:
        index = tuple(int(i) for i in bad[0])
        raise ExportError(param, f"{param}{list(index)} = {int(arr[index])} is outside the "
                                 f"allowed [{lo}, {hi}] ({bad.shape[0]} element(s) out of "
                                 f"range)")


def check_pair(param, value, lo, hi):
    """A pair of integers in ``[lo, hi]``."""
    if not (isinstance(value, tuple) and len(value) == 2
            and all(is_int(v) and lo <= v <= hi for v in value)):
        raise ExportError(param, f"{param} must be an integer in [{lo}, {hi}] or a pair of "
                                 f"them, not {value!r:.80}")
    return tuple(int(v) for v in value)


def check_shape(param, shape, what):
    """Every dimension of an activation tensor fits the descriptor's 16-bit fields."""
    if max(shape) > MAX_DIM:
        raise ExportError(param, f"{param}: the {what} {tuple(shape)} has a dimension larger "
                                 f"than {MAX_DIM} (what a layer descriptor can carry)")


def code_range(cfg: ArrayConfig):
    """Allowed codes: shift codes are unsigned ``weight_bits`` wide (both zero codes)."""
    if cfg.pe == "shift":
        return 0, (1 << cfg.code_width) - 1
    return cfg.weight_range


def layer_config(layer, where="layer"):
    """The :class:`ArrayConfig` a layer with weights runs on: ``max_k = K``, a 1x1 array.

    ``K`` is the reduction length (linear: ``codes.shape[0]``; conv: ``C/groups * kh * kw``).
    Raises :class:`ExportError` (naming ``where``) when the config is invalid.
    """
    if layer.pe not in PE_KINDS:
        raise ExportError(f"{where}.pe", f"{where}.pe must be one of {', '.join(PE_KINDS)}, "
                                         f"not {layer.pe!r:.80}")
    codes = np.asarray(layer.codes)
    k = int(codes.shape[0]) if layer.kind == "linear" else int(np.prod(codes.shape[1:]))
    try:
        cfg = ArrayConfig(pe=layer.pe, rows=1, cols=1, act_bits=layer.act_bits,
                          weight_bits=layer.weight_bits, max_k=k)
        check_post_config(cfg)
    except ConfigError as exc:
        raise ExportError(f"{where}.{exc.param}", f"{where}: {exc}") from None
    return cfg


def check_post(where, layer, n):
    """Bias, shift, relu and ``out_scale_exp`` of a layer with ``n`` outputs."""
    cfg = layer_config(layer, where)
    check_array(f"{where}.bias", layer.bias, (n,), *bias_range(cfg))
    check_array(f"{where}.shift", layer.shift, (n,), *shift_range(cfg))
    relu = np.asarray(layer.relu)
    if relu.dtype != bool or relu.shape != (n,):
        raise ExportError(f"{where}.relu", f"{where}.relu must be a bool or a bool array of "
                                           f"shape ({n},), not {relu.dtype} {relu.shape}")
    check_int(f"{where}.out_scale_exp", layer.out_scale_exp, *SCALE_EXP_LIMITS)
    return cfg


def pool_output(size, kernel, stride, padding):
    """``(size + 2 padding - kernel) // stride + 1`` (PyTorch's ``ceil_mode=False``)."""
    return (size + 2 * padding - kernel) // stride + 1


def _need_map(where, kind, shape):
    if len(shape) != 3:
        raise ExportError(where, f"{where} ({kind}) needs a (C, H, W) input, not {shape}")


def _weight_node(where, layer, shape, bits):
    kind = layer.kind
    if layer.pe not in PE_KINDS:
        raise ExportError(f"{where}.pe", f"{where}.pe must be one of {', '.join(PE_KINDS)}, "
                                         f"not {layer.pe!r:.80}")
    a = check_int(f"{where}.act_bits", layer.act_bits, 2, 16)
    if a < bits:
        raise ExportError(f"{where}.act_bits", f"{where}.act_bits = {a} is narrower than its "
                                               f"input's {bits} bits; it must be in [{bits}, 16]")
    codes = np.asarray(layer.codes)
    if codes.dtype.kind not in "iu":
        raise ExportError(f"{where}.codes", f"{where}.codes must hold integers, "
                                            f"not {codes.dtype}")
    if kind == "linear":
        if len(shape) != 1 or codes.ndim != 2 or codes.shape[0] != shape[0] \
                or codes.shape[1] < 1:
            k_in = shape[0] if len(shape) == 1 else "K"
            raise ExportError(f"{where}.codes",
                              f"{where}.codes must have shape ({k_in}, N) for the input "
                              f"{shape}, not {codes.shape}"
                              + ("" if len(shape) == 1 else
                                 " (a linear layer needs a vector: flatten first)"))
        n = codes.shape[1]
        out = (int(n),)
    else:
        groups = layer.groups
        c_in = shape[0] if len(shape) == 3 else None
        if len(shape) == 3 and not (is_int(groups) and groups in (1, c_in)):
            raise ExportError(f"{where}.groups", f"{where}.groups must be 1 or the input's "
                                                 f"{c_in} channels (depthwise), not "
                                                 f"{groups!r:.80}")
        per = None if c_in is None else c_in // groups
        if len(shape) != 3 or codes.ndim != 4 or codes.shape[1] != per \
                or min(codes.shape) < 1 or codes.shape[0] % groups:
            raise ExportError(f"{where}.codes",
                              f"{where}.codes must have shape (O, {per if per else 'C'}, kh, kw)"
                              f"{' with O a multiple of ' + str(groups) if groups != 1 else ''} "
                              f"for the input {shape}, not {codes.shape}")
        n, _, kh, kw = codes.shape
        if max(kh, kw) > MAX_KERNEL:
            raise ExportError(f"{where}.codes", f"{where}: a {kh}x{kw} kernel is larger than "
                                                f"{MAX_KERNEL} (what a layer descriptor can "
                                                f"carry)")
        check_pair(f"{where}.stride", layer.stride, 1, MAX_STRIDE)
        check_pair(f"{where}.padding", layer.padding, 0, MAX_PADDING)
        (sy, sx), (py, px) = layer.stride, layer.padding
        if py >= kh or px >= kw:
            # A pixel of nothing but padding: the engine's descriptor refuses it.
            raise ExportError(f"{where}.padding", f"{where}.padding = {[py, px]} must be "
                                                  f"smaller than the {kh}x{kw} kernel")
        oh, ow = pool_output(shape[1], kh, sy, py), pool_output(shape[2], kw, sx, px)
        if oh < 1 or ow < 1:
            raise ExportError(f"{where}.codes", f"{where}: a {kh}x{kw} kernel does not fit the "
                                                f"{shape[1]}x{shape[2]} input padded by "
                                                f"{(py, px)}")
        if layer.shifts is not None:
            check_array(f"{where}.shifts", layer.shifts, (shape[0], 2), *SHIFT_OFFSETS)
        out = (int(n), int(oh), int(ow))
    if layer.pe != "adder":
        check_int(f"{where}.weight_bits", layer.weight_bits, *WEIGHT_BITS_LIMITS[layer.pe])
    elif layer.weight_bits != a:
        raise ExportError(f"{where}.weight_bits", f"{where}.weight_bits of an adder layer must "
                                                  f"equal its act_bits = {a} (or be None), not "
                                                  f"{layer.weight_bits!r:.80}")
    cfg = check_post(where, layer, n)
    check_array(f"{where}.codes", codes, codes.shape, *code_range(cfg))
    return out, a, int(layer.out_scale_exp)


def _window(where, layer, shape, kernel_max, pad_rule):
    kh, kw = check_pair(f"{where}.kernel", layer.kernel, 1, kernel_max)
    sy, sx = check_pair(f"{where}.stride", layer.stride, 1, MAX_STRIDE)
    py, px = check_pair(f"{where}.padding", layer.padding, 0, MAX_PADDING)
    if py > kh // 2 or px > kw // 2:
        raise ExportError(f"{where}.padding", f"{where}.padding = {[py, px]} must be at most "
                                              f"half the {kh}x{kw} kernel ({pad_rule})")
    oh, ow = pool_output(shape[1], kh, sy, py), pool_output(shape[2], kw, sx, px)
    if oh < 1 or ow < 1:
        raise ExportError(f"{where}.kernel", f"{where}: a {kh}x{kw} window does not fit the "
                                             f"{shape[1]}x{shape[2]} input padded by "
                                             f"{(py, px)}")
    return (shape[0], oh, ow), kh * kw


def _same_shapes(where, kind, shapes):
    for j, s in enumerate(shapes[1:], 1):
        if s != shapes[0]:
            raise ExportError(f"{where}.inputs", f"{where} ({kind}) reads tensors of different "
                                                 f"shapes: input 0 is {shapes[0]}, input {j} "
                                                 f"is {s}")


def check_node(where, layer, in_shapes, in_bits, in_exps):
    """Check node ``layer`` (at ``where``) on its inputs; ``(out_shape, act_bits, exp)``.

    Parameters
    ----------
    where : str
        ``layers.<i>``, the prefix of every message.
    layer : a node of :mod:`mulfree.params.int_layers`
    in_shapes, in_bits, in_exps : tuple
        Shape, width and scale exponent of each tensor the node reads.
    """
    kind = layer.kind
    shape, bits, exp = in_shapes[0], in_bits[0], in_exps[0]
    if kind in ("linear", "conv2d"):
        return _weight_node(where, layer, shape, bits)
    if kind == "flatten":
        _need_map(where, kind, shape)
        return (shape[0] * shape[1] * shape[2],), bits, exp
    if kind == "maxpool2d":
        _need_map(where, kind, shape)
        out, _ = _window(where, layer, shape, MAX_POOL_KERNEL, "PyTorch's rule")
        return out, bits, exp
    if kind in ("avgpool2d", "global_avgpool"):
        _need_map(where, kind, shape)
        if kind == "avgpool2d":
            out, n = _window(where, layer, shape, MAX_POOL_KERNEL, "PyTorch's rule")
        else:
            out, n = (shape[0], 1, 1), shape[1] * shape[2]
            if n > MAX_POOL_WINDOW:
                raise ExportError(where, f"{where} (global_avgpool): the {shape[1]}x{shape[2]} "
                                         f"window is larger than {MAX_POOL_WINDOW} pixels")
        shift = check_int(f"{where}.shift", layer.shift, *POOL_SHIFT_LIMITS)
        a = check_int(f"{where}.act_bits", layer.act_bits, 2, 16)
        out_exp = exp + shift
        if not SCALE_EXP_LIMITS[0] <= out_exp <= SCALE_EXP_LIMITS[1]:
            raise ExportError(f"{where}.shift", f"{where}: the output exponent {exp} + shift "
                                                f"{shift} is outside {list(SCALE_EXP_LIMITS)}")
        return out, a, out_exp
    if kind in ("add", "concat"):
        a = check_int(f"{where}.act_bits", layer.act_bits, 2, 16)
        out_exp = check_int(f"{where}.out_scale_exp", layer.out_scale_exp, *SCALE_EXP_LIMITS)
        field = "in_shifts" if kind == "add" else "shifts"
        shifts = getattr(layer, field)
        lo, hi = ADD_SHIFT_LIMITS if kind == "add" else ALIGN_SHIFT_LIMITS
        if not (isinstance(shifts, tuple) and len(shifts) == len(in_shapes)
                and all(is_int(s) and lo <= s <= hi for s in shifts)):
            raise ExportError(f"{where}.{field}", f"{where}.{field} must be {len(in_shapes)} "
                                                  f"integers in [{lo}, {hi}] (one per input), "
                                                  f"not {shifts!r:.80}")
        if kind == "add":
            _same_shapes(where, kind, in_shapes)
            grid = {e - s for e, s in zip(in_exps, shifts)}
            if len(grid) != 1:
                raise ExportError(f"{where}.in_shifts",
                                  f"{where}.in_shifts {list(shifts)} do not align the inputs' "
                                  f"scale exponents {list(in_exps)} onto one grid "
                                  f"(exp - in_shift must be equal for every input)")
            shift = check_int(f"{where}.shift", layer.shift, *ALIGN_SHIFT_LIMITS)
            if not isinstance(layer.relu, (bool, np.bool_)):
                raise ExportError(f"{where}.relu", f"{where}.relu must be true or false, not "
                                                   f"{layer.relu!r:.80}")
            if grid.pop() + shift != out_exp:
                raise ExportError(f"{where}.out_scale_exp",
                                  f"{where}.out_scale_exp = {out_exp} is not the inputs' grid "
                                  f"{min(e - s for e, s in zip(in_exps, shifts))} + shift "
                                  f"{shift}")
            return shape, a, out_exp
        ranks = {len(s) for s in in_shapes}
        if len(ranks) != 1 or any(s[1:] != shape[1:] for s in in_shapes):
            raise ExportError(f"{where}.inputs", f"{where} (concat) joins along the channels "
                                                 f"tensors whose other dimensions agree, not "
                                                 f"{[tuple(s) for s in in_shapes]}")
        for j, (e, s) in enumerate(zip(in_exps, shifts)):
            if e + s != out_exp:
                raise ExportError(f"{where}.shifts", f"{where}.shifts[{j}] = {s}: input {j}'s "
                                                     f"exponent {e} + shift must be the "
                                                     f"out_scale_exp {out_exp}")
        return (sum(s[0] for s in in_shapes),) + tuple(shape[1:]), a, out_exp
    if kind == "clamp":
        lo_a, hi_a = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        lo = check_int(f"{where}.lo", layer.lo, lo_a, hi_a)
        check_int(f"{where}.hi", layer.hi, lo, hi_a)
        return shape, bits, exp
    if kind == "pad":
        _need_map(where, kind, shape)
        pads = layer.pads
        limits = (MAX_DIM,) * 2 + (MAX_PADDING,) * 4
        if not (isinstance(pads, tuple) and len(pads) == 6
                and all(is_int(p) and 0 <= p <= m for p, m in zip(pads, limits))):
            raise ExportError(f"{where}.pads", f"{where}.pads must be 6 integers (channels "
                                               f"before, after in [0, {MAX_DIM}], top, bottom, "
                                               f"left, right in [0, {MAX_PADDING}]), not "
                                               f"{pads!r:.80}")
        c0, c1, t, b, le, r = (int(p) for p in pads)
        return (shape[0] + c0 + c1, shape[1] + t + b, shape[2] + le + r), bits, exp
    if kind in ("shift2d", "address_shift"):
        _need_map(where, kind, shape)
        m = MAX_SHIFT2D if kind == "shift2d" else 1
        check_array(f"{where}.offsets", layer.offsets, (shape[0], 2), -m, m)
        return shape, bits, exp
    if kind == "channel_shift":
        check_int(f"{where}.r", layer.r, 0, shape[0])
        return shape, bits, exp
    raise ExportError(where, f"{where}: unknown kind {kind!r}")
