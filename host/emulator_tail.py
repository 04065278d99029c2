"""The core's fused tail in NumPy, for :mod:`mulfree.host.core_emulator`: the shortcut the
aligner fills from the SHORTCUT vectors, the residual add and clamp after post-processing, and
the global pool's results (``docs/interface.md``; interfaces 2.0 to 2.3). Written from the
spec, not from the RTL, and sharing no code with the golden output. NumPy only.
"""

import numpy as np


__all__ = ["align_shortcut", "fused_tail_lanes", "pool_out"]


def align_shortcut(cfg, d, source):
    """The aligned shortcut buffer ``[M*NT, C]`` the core fills from the SHORTCUT vectors
    (``source``, ``[scv, C]`` in the source layout): lane ``j`` of vector ``m*NT + nt`` is
    output channel ``c = nt*C + j``, which reads source channel ``c - short_off`` (when in
    ``[0, short_c)`` and ``c < out_c``, else 0) at pixel ``(oy*s, ox*s)`` of the
    ``out_h*s x out_w*s`` map: vector ``((oy*s)*out_w*s + ox*s)*nts + src // C``, lane
    ``src % C``. Source lanes beyond ``short_c`` are never read."""
    c_n, nt_n, s = cfg.engine.cols, d["NT"], d["short_stride"]
    m = np.arange(d["out_h"] * d["out_w"])
    pixel = (m // d["out_w"] * s) * (d["out_w"] * s) + m % d["out_w"] * s       # [M]
    c = np.arange(nt_n * c_n)                                                   # [NT*C]
    src = c - d["short_off"]
    valid = (src >= 0) & (src < d["short_c"]) & (c < d["out_c"])
    src = np.where(valid, src, 0)
    addr = pixel[:, None] * d["nts"] + (src // c_n)[None, :]                     # [M, NT*C]
    values = np.where(valid[None, :], source[addr, (src % c_n)[None, :]], 0)
    return values.reshape(len(m) * nt_n, c_n)


def fused_tail_lanes(cfg, d, v, s):
    """The fused tail on post-processed results ``v`` with their shortcut lanes ``s``: the
    residual add in ``act_bits + RES_MAX_SHIFT + 1`` bits, its rounding shift (half up), ReLU
    and saturation, then the clamp."""
    a = cfg.engine.act_bits
    if d["residual"]:
        y = (v << d["res_main_shift"]) + (s << d["res_short_shift"])
        shift = d["res_shift"]
        if shift < 0:
            r = np.clip(y, -(1 << a), 1 << a) << -shift
        elif shift > 0:
            r = (y + (1 << (shift - 1))) >> shift
        else:
            r = y
        if d["res_relu"]:
            r = np.maximum(r, 0)
        v = np.clip(r, -(1 << (a - 1)), (1 << (a - 1)) - 1)
    if d["clamp"]:
        v = np.clip(v, d["clamp_lo"], d["clamp_hi"])
    return v


def pool_out(a, sums, shift):
    """The pool unit's results from its per-channel sums: ``round_shift`` (half up; a left
    shift clamps the sum to ``[-2^a, 2^a]`` first), saturated to ``a`` bits."""
    if shift < 0:
        r = np.clip(sums, -(1 << a), 1 << a) << -shift
    elif shift > 0:
        r = (sums + (1 << (shift - 1))) >> shift
    else:
        r = sums
    return np.clip(r, -(1 << (a - 1)), (1 << (a - 1)) - 1)
