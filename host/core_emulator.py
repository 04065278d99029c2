"""A NumPy model of the core's dataflow: one layer's input stream in, the result beats out.

:func:`emulate_core` parses a packed stream beat by beat like the hardware (headers, ``tlast``,
the descriptor's fields), fills the feature-map, weight and shortcut buffers, and runs the
"Order of work" (``docs/interface.md``) block by block and tile by tile through
:func:`mulfree.params.golden.array_forward`, then post-processing and its fused tail (the
residual add of the shortcut aligned from the SHORTCUT vectors' source layout by address, the
clamp, the global pool's sums), written here from ``docs/interface.md`` and the spec of core
interfaces 2.0 and 2.1 (``params/core_config.py``): a multi-engine core runs each layer on
the engine its descriptor names, reading the weight buffer's ``code_width``-bit slots as that
engine's codes, and post-processes at the widest accumulator's widths; with interface 2.2's
layer chaining it keeps the two feature-map banks' contents from run to run
(:class:`~mulfree.host.bank_state.BankState`) and computes from them; interface 2.3's window
runs (max, sum, depthwise) go through the lane unit's model
(:mod:`mulfree.host.lane_model`) instead of the engine. Where the core would
stop it raises :class:`CoreError`; :class:`CoreState` carries the loaded weights from one run
to the next.
It shares no code with the golden output (:mod:`mulfree.host.stream_results`), so a test
comparing the two checks the formats and the tiling. NumPy only.
"""

from dataclasses import dataclass, field

import numpy as np

from ..params.core_config import (CoreConfig, CORE_ERRORS, DESC_BITS, DESC_FIELDS, DESC_FLAGS,
                                  DESC_SIGNED, PACKET_TYPES, RES_MAX_SHIFT,
                                  TAP_FLAG, WINDOW_FLAGS, pool_shift_range, res_shift_range)
from ..params.config import int_range
from ..params.post_config import shift_width
from ..params.golden import array_forward
from ..params.layer_golden import PostParams, postprocess
from .bank_state import BankState
from .core_layer import CHAIN_FLAGS, ceil_div
from .emulator_tail import align_shortcut, fused_tail_lanes, pool_out
from .lane_model import window_kind, window_tile
from .tap_model import taps_descriptor_problem, taps_line_problem, taps_tile, taps_unit_problem
from .stream_format import (Packet, beats_vector, bit_mask, pack_vector, stream_beats,
                            unpack_vector, vector_beats)


__all__ = ["CoreError", "CoreState", "emulate_core"]


#: Packet types in the order :func:`~mulfree.host.stream_format.pack_layer` first sends
#: them.
_DATA_TYPES = ("PARAMS", "SHIFT", "WEIGHTS", "ACTS", "SHORTCUT")
_ERROR_CODES = {name: code for code, name, _ in CORE_ERRORS}
#: Descriptor fields that are sizes: 0 is error DESCRIPTOR.
_SIZE_FIELDS = ("in_h", "in_w", "in_c", "out_c", "out_h", "out_w", "kernel_h", "kernel_w",
                "stride_h", "stride_w", "m_block")


class CoreError(ValueError):
    """A malformed stream: the run would stop with ``ERROR.core_code = code``.

    ``name`` is the code's name in ``CORE_ERRORS`` (``"PACKET"``, ``"SHORT"``, ...); the
    message starts with it.
    """

    def __init__(self, name, detail):
        self.name = name
        self.code = _ERROR_CODES[name]
        super().__init__(f"{name} (core error {self.code}): {detail}")



@dataclass
class CoreState:
    """What the core keeps from one run to the next: the loaded PARAMS, SHIFT and WEIGHTS,
    and the feature-map banks (interface 2.2).

    Pass one object to successive :func:`emulate_core` calls to emulate
    ``flags.reuse_weights`` and layer chaining. ``loaded`` is ``None`` after reset and after a
    run that stopped with an error. Like the core, a reusing run is refused (error REUSE)
    unless its engine, weight rows, ``out_c`` and shift-table tiles (``CT`` with
    ``flags.shift``, else 0) equal the loaded ones. ``banks`` (a
    :class:`~mulfree.host.bank_state.BankState` with contents) holds what the two banks hold;
    an error clears it, as :meth:`reset` (the soft reset) does. ``terms`` counts as the
    ``TERMS`` counter does (never reset): ``rows * cols`` per input vector the engine takes
    on a convolution and per emitted vector of a taps run, ``cols`` (the lanes) per vector the
    lane unit takes on a window run.
    """

    loaded: dict | None = field(default=None)
    banks: BankState = field(default_factory=BankState)
    terms: int = 0

    def reset(self):
        """A soft reset: no weights loaded, both banks invalid."""
        self.loaded = None
        self.banks.clear()


def _as_beats(stream):
    """``(tdata, tlast)`` pairs from a list of :class:`Packet` or of pairs."""
    stream = list(stream)
    if all(isinstance(item, Packet) for item in stream):
        return stream_beats(stream)
    return [(int(tdata), bool(tlast)) for tdata, tlast in stream]


def _parse_header(beat):
    type_code, count = beat & 0xF, (beat >> 8) & bit_mask(24)
    names = {code: name for name, code in PACKET_TYPES.items()}
    if type_code not in names:
        raise CoreError("PACKET", f"header 0x{beat:x} has the unknown type {type_code}")
    if (beat >> 4) & 0xF or beat >> 32:
        raise CoreError("PACKET", f"header 0x{beat:x} has reserved bits set")
    if count == 0:
        raise CoreError("PACKET", f"header 0x{beat:x} announces 0 vectors")
    return names[type_code], count


def _read_packet(cfg, beats, start, type_name, count, first_index):
    """The vectors of the packet whose header is ``beats[start]``, and the next beat's index.

    Beat by beat, as the core: SHORT (``tlast`` before the end, the header included), LONG
    (none on the last beat), then at each vector's last beat SHIFT_VALUE for a SHIFT vector
    (``first_index``: the index of the packet's first vector in its type).
    """
    bits = cfg.vector_bits[type_name]
    per = cfg.beats(bits)
    end = start + count * per
    vectors = []
    for i in range(start, end + 1):
        if i >= len(beats):
            raise ValueError(f"the stream ends inside a {type_name} packet (beat {i}): the "
                             f"core would wait for the rest")
        if beats[i][1] and i < end:
            raise CoreError("SHORT", f"tlast on beat {i}, but the {type_name} packet of "
                                     f"{count} vectors started at beat {start} ends at {end}")
        if i == end and not beats[i][1]:
            raise CoreError("LONG", f"no tlast on beat {end}, the last of the {type_name} "
                                    f"packet of {count} vectors that started at beat {start}")
        if i > start and (i - start) % per == 0:
            vector = beats_vector(cfg, [b for b, _ in beats[i - per + 1:i + 1]], bits)
            if type_name == "SHIFT":
                _check_shift_vector(cfg, vector, first_index + len(vectors))
            vectors.append(vector)
    return vectors, end + 1


def _parse_descriptor(cfg, vector):
    words = [(vector >> (32 * w)) & bit_mask(32) for w in range(DESC_BITS // 32)]
    d = {}
    for word, lo, width, name in DESC_FIELDS:
        value = (words[word] >> lo) & bit_mask(width)
        if name in DESC_SIGNED and value >> (width - 1):
            value -= 1 << width
        d[name] = value
    flags = d.pop("flags")
    known = sum(1 << bit for bit in DESC_FLAGS.values())
    if flags & ~known:
        raise CoreError("DESCRIPTOR", f"reserved flag bits set: flags = 0x{flags:x}")
    for name, key in (("shift", "shift"), ("reuse_weights", "reuse"), ("residual", "residual"),
                      ("res_relu", "res_relu"), ("clamp", "clamp"), ("global_pool", "pool")):
        d[key] = bool(flags >> DESC_FLAGS[name] & 1)
    for name in CHAIN_FLAGS + WINDOW_FLAGS + (TAP_FLAG,):
        d[name] = int(flags >> DESC_FLAGS[name] & 1)
    return d


def _check_tail(cfg, d):
    """The descriptor's clamp, residual, shortcut and pool fields (error DESCRIPTOR)."""
    lo, hi = cfg.engine.act_range
    clamp = (d["clamp_lo"], d["clamp_hi"])
    if d["clamp"] and not lo <= clamp[0] <= clamp[1] <= hi:
        raise CoreError("DESCRIPTOR", f"clamp_lo, clamp_hi = {clamp}: must be in [{lo}, {hi}] "
                                      f"with clamp_lo <= clamp_hi")
    if not d["clamp"] and clamp != (0, 0):
        raise CoreError("DESCRIPTOR", f"clamp_lo, clamp_hi = {clamp} without flags.clamp")
    a = cfg.engine.act_bits
    p_lo, p_hi = pool_shift_range(a, cfg.pool_pixels)
    if d["pool"] and not p_lo <= d["pool_shift"] <= p_hi:
        raise CoreError("DESCRIPTOR", f"pool_shift = {d['pool_shift']} outside [{p_lo}, {p_hi}]")
    if not d["pool"] and d["pool_shift"]:
        raise CoreError("DESCRIPTOR", f"pool_shift = {d['pool_shift']} without "
                                      f"flags.global_pool")
    res = {name: d[name] for name in ("res_main_shift", "res_short_shift", "res_shift",
                                      "short_c", "short_off", "short_stride")}
    if not d["residual"]:
        if any(res.values()) or d["res_relu"]:
            raise CoreError("DESCRIPTOR", f"{res}, res_relu = {int(d['res_relu'])} without "
                                          f"flags.residual")
        return
    s_lo, s_hi = res_shift_range(a)
    for name, low, high in (("res_main_shift", 0, RES_MAX_SHIFT),
                            ("res_short_shift", 0, RES_MAX_SHIFT), ("res_shift", s_lo, s_hi),
                            ("short_c", 1, d["out_c"] - d["short_off"]),
                            ("short_stride", 1, 15)):
        if not low <= res[name] <= high:
            raise CoreError("DESCRIPTOR", f"{name} = {res[name]} outside [{low}, {high}]"
                                          + (" (out_c - short_off)" if name == "short_c"
                                             else ""))


def _check_window(cfg, d):
    """A window run's descriptor conditions (error DESCRIPTOR, interface 2.3) and a taps
    run's (2.4)."""
    taps = taps_descriptor_problem(cfg, d)
    if taps:
        raise CoreError("DESCRIPTOR", taps)
    on = [name for name in WINDOW_FLAGS if d[name]]
    if len(on) > 1:
        raise CoreError("DESCRIPTOR", f"more than one window flag: {', '.join(on)}")
    if not on:
        return
    if d["in_c"] != d["out_c"]:
        raise CoreError("DESCRIPTOR", f"{on[0]} with in_c = {d['in_c']} != out_c = "
                                      f"{d['out_c']}")
    if d["shift"]:
        raise CoreError("DESCRIPTOR", f"{on[0]} with flags.shift")
    if d["reuse"] and on[0] != "depthwise":
        raise CoreError("DESCRIPTOR", f"{on[0]} with reuse_weights (no weights)")
    for pad, kernel in (("pad_h", "kernel_h"), ("pad_w", "kernel_w")):
        if on[0] == "win_max" and 2 * d[pad] > d[kernel]:
            raise CoreError("DESCRIPTOR", f"win_max with 2*{pad} = {2 * d[pad]} > {kernel} = "
                                          f"{d[kernel]}")


def _check_resident(cfg, d, banks):
    """Error RESIDENT (interface 2.2): a chaining flag on a one-bank core, ``short_resident``
    without a residual, ``quiet`` without ``keep``, a resident tensor the banks do not hold."""
    if cfg.fmap_banks < 2:
        on = [n for n in ("in_bank", "keep", "acts_resident", "short_resident") if d[n]]
        if on:
            raise CoreError("RESIDENT", f"{', '.join(on)} on a core with one feature-map bank")
    if d["short_resident"] and not d["residual"]:
        raise CoreError("RESIDENT", "short_resident without flags.residual")
    if d["quiet"] and not d["keep"]:
        raise CoreError("RESIDENT", "quiet without keep")
    s = d["short_stride"]
    found = banks.problem(d["in_bank"], d["acts_resident"], d["short_resident"],
                          (d["in_c"], d["in_h"], d["in_w"]),
                          (d["short_c"], d["out_h"] * s, d["out_w"] * s))
    if found:
        raise CoreError("RESIDENT", found[1])


def _check_desc(cfg, d, banks):
    """The core's descriptor checks: DESCRIPTOR, then ENGINE (an engine the core does not
    have), WINDOW (a window flag without the lane unit), RESIDENT (``banks``: what the banks
    hold), then TOO_BIG. Adds the tile counts and ``wrows`` (the weight rows the run uses) to
    ``d``."""
    e = cfg.engine
    zero = [name for name in _SIZE_FIELDS if d[name] == 0]
    if zero:
        raise CoreError("DESCRIPTOR", f"zero size: {', '.join(zero)}")
    for pad, kernel in (("pad_h", "kernel_h"), ("pad_w", "kernel_w")):
        if d[pad] >= d[kernel]:
            raise CoreError("DESCRIPTOR", f"{pad} = {d[pad]} >= {kernel} = {d[kernel]}")
    for out, size, k, s, p in (("out_h", "in_h", "kernel_h", "stride_h", "pad_h"),
                               ("out_w", "in_w", "kernel_w", "stride_w", "pad_w")):
        want = (d[size] + 2 * d[p] - d[k]) // d[s] + 1
        if d[out] != want:
            raise CoreError("DESCRIPTOR", f"{out} = {d[out]} is not the convolution's "
                                          f"{want}")
    _check_tail(cfg, d)
    _check_window(cfg, d)
    if d["engine"] >= len(cfg.engines):
        raise CoreError("ENGINE", f"engine = {d['engine']}, but the core has "
                                  f"{len(cfg.engines)} engine(s)")
    kind = window_kind(d)
    if kind is not None and not cfg.window_ops:
        raise CoreError("WINDOW", f"{kind} window run on a core without the lane unit")
    taps = taps_unit_problem(cfg, d)
    if taps:
        raise CoreError("WINDOW", taps)
    _check_resident(cfg, d, banks)
    d["CT"], d["NT"] = ceil_div(d["in_c"], e.rows), ceil_div(d["out_c"], e.cols)
    kk = d["kernel_h"] * d["kernel_w"]
    # A taps run: one pass per output tile of a weight tile of R rows.
    d["KT"] = 1 if d["taps"] else kk * d["CT"] if kind is None else kk
    d["wrows"] = d["NT"] * d["KT"] * e.rows if kind is None or d["taps"] else \
        d["NT"] * kk if kind == "depthwise" else 0
    m = d["out_h"] * d["out_w"]
    d["nts"] = ceil_div(d["short_c"], e.cols)
    d["scv"] = m * d["short_stride"] ** 2 * d["nts"]
    d["dcv"] = m * d["NT"]
    too_big = (("K", d["in_c"] * kk if kind is None else kk, e.max_k),
               ("in_c (flags.shift)", d["in_c"] if d["shift"] else 0, cfg.max_channels),
               ("out_c", d["out_c"], cfg.max_channels),
               # A taps run takes no partial sums: no m_block limit.
               ("m_block", 0 if d["taps"] else d["m_block"], cfg.acc_entries),
               ("ACTS", d["in_h"] * d["in_w"] * d["CT"], cfg.fmap_vectors),
               ("WEIGHTS", d["wrows"], cfg.weight_rows),
               ("aligned shortcut (flags.residual), out_h*out_w*NT",
                d["dcv"] if d["residual"] else 0, cfg.shortcut_vectors),
               ("pooled map (flags.global_pool), out_h*out_w", m if d["pool"] else 0,
                cfg.pool_pixels),
               # The setup's sm = sh * sw: sw is the multiplier's 16-bit operand.
               ("shortcut source map's width (flags.residual), out_w*short_stride",
                d["out_w"] * d["short_stride"] if d["residual"] else 0, (1 << 16) - 1),
               ("kept results (keep)", (d["NT"] if d["pool"] else d["dcv"]) if d["keep"]
                else 0, cfg.fmap_vectors),
               ("resident shortcut source (short_resident)",
                d["scv"] if d["short_resident"] else 0, cfg.fmap_vectors))
    for what, value, limit in too_big:
        if value > limit:
            raise CoreError("TOO_BIG", f"{what} = {value} > {limit}")
    taps = taps_line_problem(cfg, d)
    if taps:
        raise CoreError("TOO_BIG", taps)


def _layer_sizes(cfg, d):
    """What the core compares for ``reuse_weights``: the engine, the window flags, the taps
    flag, weight rows, ``out_c``, shift tiles."""
    return {"engine": d["engine"], "window": window_kind(d), "taps": d["taps"],
            "weight rows": d["wrows"], "out_c": d["out_c"],
            "shift tiles": d["CT"] if d["shift"] else 0}


def _check_reuse(cfg, d, state):
    if not d["reuse"]:
        return
    loaded = state.loaded if state is not None else None
    if loaded is None:
        raise CoreError("REUSE", "reuse_weights, but no weights are loaded")
    if loaded["sizes"] != _layer_sizes(cfg, d):
        raise CoreError("REUSE", f"reuse_weights with {_layer_sizes(cfg, d)}, but the loaded "
                                 f"ones are {loaded['sizes']}")


def _left_counts(cfg, d):
    sent = not d["reuse"]
    return {"PARAMS": d["out_c"] if sent else 0,
            "SHIFT": d["CT"] if sent and d["shift"] else 0,
            "WEIGHTS": d["wrows"] if sent else 0,
            "ACTS": 0 if d["acts_resident"] else d["in_h"] * d["in_w"] * d["CT"],
            "SHORTCUT": d["scv"] if d["residual"] and not d["short_resident"] else 0}


def _shift_entries(cfg, vectors):
    """``(dy, dx)`` of every entry of the SHIFT ``vectors``: the low and high signed halves of
    each ``cfg.shift_entry_bits``-bit entry."""
    half = cfg.shift_entry_bits // 2
    entries = np.concatenate([unpack_vector(v, cfg.engine.rows, cfg.shift_entry_bits, False)
                              for v in vectors])
    dy, dx = entries & bit_mask(half), entries >> half
    sign = 1 << (half - 1)
    return (dy ^ sign) - sign, (dx ^ sign) - sign


def _check_shift_vector(cfg, vector, index):
    r, halves = cfg.shift_reach, np.stack(_shift_entries(cfg, [vector]), axis=1)
    for j, h in zip(*np.nonzero(np.abs(halves) > r)):
        channel = index * cfg.engine.rows + j
        raise CoreError("SHIFT_VALUE", f"SHIFT vector {index}, channel {channel}: "
                                       f"{'dx' if h else 'dy'} = {halves[j, h]}, outside "
                                       f"[-{r}, {r}]")


def _parse_run(cfg, beats, state):
    """Walk the beats like the core: the descriptor, then data packets of any type and order.

    Returns the descriptor (with tile counts) and the vectors of each data type.
    """
    d, left, data, i = None, None, {t: [] for t in _DATA_TYPES}, 0
    while i < len(beats):
        type_name, count = _parse_header(beats[i][0])
        if type_name == "DESC" and count != 1:
            raise CoreError("PACKET", f"a descriptor of {count} vectors at beat {i}")
        if type_name != "DESC" and d is None:
            raise CoreError("PACKET", f"a {type_name} packet at beat {i} before the descriptor")
        if type_name == "DESC" and d is not None:
            raise CoreError("DESC_IN_RUN", f"a descriptor at beat {i}")
        if type_name != "DESC" and count > left[type_name]:
            raise CoreError("OVERRUN", f"a {type_name} packet of {count} vectors at beat {i}, "
                                       f"{left[type_name]} left")
        first = len(data[type_name]) if type_name != "DESC" else 0
        vectors, i = _read_packet(cfg, beats, i, type_name, count, first)
        if type_name == "DESC":
            d = _parse_descriptor(cfg, vectors[0])
            _check_desc(cfg, d, state.banks)
            _check_reuse(cfg, d, state)
            left = _left_counts(cfg, d)
            continue
        data[type_name] += vectors
        left[type_name] -= count
    if d is None:
        raise ValueError("the stream has no descriptor: the core would wait for one")
    missing = {t: n for t, n in left.items() if n}
    if missing:
        raise ValueError(f"the stream ends before the layer's last vector: the core would wait "
                         f"for {missing} more")
    return d, data


def _decode_buffers(cfg, d, data, state):
    """The buffers the vectors fill: fmap ``[vectors, R]``, shortcut ``[vectors, C]`` (or
    None), and the loaded weight rows, params, shift table. The input is bank ``in_bank``'s
    contents (the ACTS written there, or resident); a resident shortcut source the other
    bank's."""
    e, b = cfg.engine, d["in_bank"]
    n_acts = d["in_h"] * d["in_w"] * d["CT"]
    bank = state.banks.bank(b, cfg.fmap_vectors, e.rows)
    if not d["acts_resident"]:
        bank[:n_acts] = [unpack_vector(v, e.rows, e.act_bits, True) for v in data["ACTS"]]
    fmap = bank[:n_acts].copy()
    shortcut = None
    if d["residual"]:
        if d["short_resident"]:
            source = state.banks.bank(1 - b, cfg.fmap_vectors, e.cols)[:d["scv"]].copy()
        else:
            source = np.array([unpack_vector(v, e.cols, e.act_bits, True)
                               for v in data["SHORTCUT"]])
        shortcut = align_shortcut(cfg, d, source)
    if d["reuse"]:
        return (fmap, shortcut), state.loaded
    post = cfg.post_engine
    a, sw = post.acc_width, shift_width(post)
    p = data["PARAMS"]
    loaded = {
        "sizes": _layer_sizes(cfg, d),
        # The weight buffer's slots as they arrived: each run reads them as its engine's
        # codes (_engine_weights).
        "weights": np.array([unpack_vector(v, e.cols, cfg.code_width, False)
                             for v in data["WEIGHTS"]]),
        "bias": np.array([unpack_vector(v, 1, a, True)[0] for v in p]),
        "post_shift": np.array([unpack_vector(v >> a, 1, sw, True)[0] for v in p]),
        "relu": np.array([bool(v >> (a + sw) & 1) for v in p]),
        "shift": None,
    }
    if d["shift"]:
        loaded["shift"] = _shift_entries(cfg, data["SHIFT"])
    return (fmap, shortcut), loaded


def _engine_weights(cfg, d, slots):
    """The loaded weight slots ``[rows, C]`` (``cfg.code_width`` bits) as codes of the run's
    engine: the low ``code_width`` bits of engine ``d["engine"]``, two's complement for a
    signed kind; the bits above are not read."""
    e = cfg.engines[d["engine"]]
    codes = np.asarray(slots, dtype=np.int64) & bit_mask(e.code_width)
    if e.pe != "shift":
        codes = np.where(codes >> (e.code_width - 1), codes - (1 << e.code_width), codes)
    return codes


def _gather(cfg, d, fmap, iy, ix, ct, dy, dx):
    """Input vectors ``[pixels, R]`` of channel tile ``ct`` at map positions ``(iy, ix)``.

    Lane ``j`` reads the buffer at ``(iy + dy[j], ix + dx[j])``; 0 where ``(iy, ix)`` is
    padding or the shifted source lies outside the map.
    """
    h, w = d["in_h"], d["in_w"]
    sy, sx = iy[:, None] + dy[None, :], ix[:, None] + dx[None, :]
    inside = (((iy >= 0) & (iy < h) & (ix >= 0) & (ix < w))[:, None]
              & (sy >= 0) & (sy < h) & (sx >= 0) & (sx < w))
    addr = (np.clip(sy, 0, h - 1) * w + np.clip(sx, 0, w - 1)) * d["CT"] + ct
    return np.where(inside, fmap[addr, np.arange(cfg.engine.rows)[None, :]], 0)


def _post_lanes(cfg, d, loaded, psum, nt, short):
    """Post-processed results ``[pixels, C]`` of tile ``nt``; 0 in lanes beyond ``out_c``.

    ``short``: the pixels' SHORTCUT vectors ``[pixels, C]`` of tile ``nt`` (None without
    ``flags.residual``)."""
    c = cfg.engine.cols
    valid = slice(nt * c, min((nt + 1) * c, d["out_c"]))
    n = valid.stop - valid.start
    out = np.zeros_like(psum)
    post = PostParams(loaded["bias"][valid], loaded["post_shift"][valid], loaded["relu"][valid])
    # A max or sum run's lanes hold any acc_width-bit value (no engine's sums).
    lanes = int_range(cfg.acc_width) if window_kind(d) in ("max", "sum") else None
    v = postprocess(cfg.post_engine, psum[:, :n], post, acc_range=lanes)
    out[:, :n] = fused_tail_lanes(cfg, d, v, None if short is None else short[:, :n])
    return out


def _run_blocks(cfg, d, buffers, loaded, banks):
    """The "Order of work": blocks, output tiles, reduction tiles; the result beats (none
    with ``quiet``), and with ``keep`` the results written into bank ``1 - in_bank`` at
    ``m * NT + nt`` (pooled: ``nt``). The engine is the descriptor's (``d["engine"]``)."""
    e = cfg.engines[d["engine"]]
    weights = _engine_weights(cfg, d, loaded["weights"])
    fmap, shortcut = buffers
    kept = banks.bank(1 - d["in_bank"], cfg.fmap_vectors, e.cols) if d["keep"] else None
    r, kw, ct_n = e.rows, d["kernel_w"], d["CT"]
    m_all = d["out_h"] * d["out_w"]
    dy, dx = loaded["shift"] if d["shift"] else (np.zeros(ct_n * r, np.int64),) * 2
    beats = []
    pool = np.zeros((d["NT"], e.cols), dtype=np.int64) if d["pool"] else None
    for start in range(0, m_all, d["m_block"]):
        m = np.arange(start, min(start + d["m_block"], m_all))
        oy, ox = m // d["out_w"], m % d["out_w"]
        for nt in range(d["NT"]):
            if d["taps"]:
                # One block of every pixel (m_block = out_h*out_w): the walk's emits in order.
                psum = taps_tile(cfg, d, fmap, weights, nt)
            elif window_kind(d) is not None:
                psum = window_tile(cfg, d, fmap, weights, oy, ox, nt)
            kts = 0 if window_kind(d) is not None else d["KT"]
            if kts:
                psum = np.zeros((len(m), e.cols), dtype=np.int64)
            for kt in range(kts):
                ky, rest = divmod(kt, kw * ct_n)
                kx, ct = divmod(rest, ct_n)
                lanes = slice(ct * r, (ct + 1) * r)
                x = _gather(cfg, d, fmap, oy * d["stride_h"] - d["pad_h"] + ky,
                            ox * d["stride_w"] - d["pad_w"] + kx, ct, dy[lanes], dx[lanes])
                row = (nt * d["KT"] + kt) * r
                psum = array_forward(e, weights[row:row + r], x, psum)
            short = None if shortcut is None else shortcut[m * d["NT"] + nt]
            results = _post_lanes(cfg, d, loaded, psum, nt, short)
            if pool is not None:
                pool[nt] += results.sum(axis=0)
                continue
            if d["keep"]:
                kept[m * d["NT"] + nt] = results
            for values in results:
                beats += vector_beats(cfg, pack_vector(values, e.act_bits),
                                       cfg.vector_bits["OUT"])
    if pool is not None:
        for nt, values in enumerate(pool_out(e.act_bits, pool, d["pool_shift"])):
            if d["keep"]:
                kept[nt] = values
            beats += vector_beats(cfg, pack_vector(values, e.act_bits), cfg.vector_bits["OUT"])
    return [] if d["quiet"] else beats


def emulate_core(cfg: CoreConfig, stream, *, state: CoreState | None = None):
    """Run one layer's input stream through a NumPy model of the core; return the result beats.

    The model parses the stream beat by beat as the hardware does: headers (type, count,
    reserved bits), ``tlast`` on each packet's last beat only, the descriptor's fields and
    checks; data packets of any type in any order and number of chunks, each continuing its
    type. Errors are found in stream order, and at one beat in the core's order: at a header
    PACKET, DESC_IN_RUN, OVERRUN, SHORT; at a data beat SHORT, LONG, SHIFT_VALUE; after the
    descriptor DESCRIPTOR, ENGINE, WINDOW, RESIDENT, TOO_BIG, REUSE. It fills the buffers as the vector contents
    say (feature map at ``(iy*in_w + ix)*CT + ct``, weight rows, PARAMS, SHIFT, the SHORTCUT
    source at ``(y*out_w*s + x)*nts + t`` aligned into ``(oy*out_w + ox)*NT + nt``) and runs
    the order of work: for each block of ``m_block`` pixels, each output tile ``nt``, each
    reduction tile ``kt = (ky*kernel_w + kx)*CT + ct``, it gathers every pixel's ``rows``
    activations by address (0 outside the map, per-lane ``dy, dx`` with ``flags.shift``) and
    calls :func:`~mulfree.params.golden.array_forward` of the descriptor's engine with the
    block's partial sums; after
    ``kt = KT-1`` it post-processes the ``cols`` lanes, adds the shortcut (``flags.residual``),
    clamps (``flags.clamp``) and emits the result vectors, or with ``flags.global_pool`` adds
    them to per-channel sums and emits, after the last pass, the one pooled pixel's ``NT``
    vectors. Layer chaining (interface 2.2, ``state.banks``): the ACTS are written into bank
    ``in_bank`` and the engine reads that bank, its contents with ``acts_resident``; a
    ``short_resident`` shortcut source is the other bank's contents; with ``keep`` every result
    vector is also written into the other bank at ``m*NT + nt`` (pooled: ``nt``), after the
    shortcut was read (in place is safe); ``quiet`` sends no beats. RESIDENT comes after
    ENGINE, before TOO_BIG; an error clears the banks' state. A window run (interface 2.3,
    ``win_max``, ``win_sum`` or ``depthwise``) walks, per output tile ``nt``, the
    ``kernel_h*kernel_w`` passes of the lane unit (:func:`~mulfree.host.lane_model.
    window_tile`: lane ``j`` reads channel tile ``nt``'s lane ``j``), then post-processes and
    runs the tail as a convolution does. A taps run (interface 2.4, ``depthwise | taps``)
    computes each output tile through the tap window and the array
    (:func:`~mulfree.host.tap_model.taps_tile`); its setup adds error DESCRIPTOR, WINDOW and
    TOO_BIG conditions (:mod:`mulfree.host.tap_model`). ``state.terms`` grows as ``TERMS``
    (a taps run: ``rows*cols`` per emitted vector).

    Parameters
    ----------
    stream : list of Packet, or list of (tdata, tlast)
        One run's input: a :func:`~mulfree.host.stream_format.pack_layer` result or
        :func:`~mulfree.host.stream_format.stream_beats`-style pairs (needed to model a
        misplaced ``tlast``).
    state : CoreState, optional
        The weights kept from the previous run, for ``flags.reuse_weights``; updated after a
        successful run and cleared by an error. ``None``: a core fresh out of reset.

    Returns
    -------
    list of int
        ``tdata`` of the result beats (``tlast`` belongs on the last one), as
        :func:`~mulfree.host.stream_results.expected_beats`.

    Raises
    ------
    CoreError
        Where the core would stop with an error; ``exc.name`` is the ``CORE_ERRORS`` name.
    ValueError
        If the stream ends before the layer is complete (the core would wait), or a
        PARAMS vector holds a shift outside ``shift_range``.
    """
    state = CoreState() if state is None else state
    try:
        d, data = _parse_run(cfg, _as_beats(stream), state)
    except CoreError:
        state.reset()
        raise
    banks = state.banks
    banks.start(d["in_bank"], d["acts_resident"], d["keep"])
    buffers, loaded = _decode_buffers(cfg, d, data, state)
    beats = _run_blocks(cfg, d, buffers, loaded, banks)
    # Input vectors: KT passes of M pixels per output tile; a lane unit's are C lanes wide (a
    # taps run's one pass per tile counts the emitted vectors, R*C terms each).
    per = cfg.engine.cols if window_kind(d) and not d["taps"] else \
        cfg.engine.rows * cfg.engine.cols
    state.terms += d["NT"] * d["KT"] * d["out_h"] * d["out_w"] * per
    out = (d["out_c"], 1, 1) if d["pool"] else (d["out_c"], d["out_h"], d["out_w"])
    banks.finish(d["in_bank"], d["keep"], (d["in_c"], d["in_h"], d["in_w"]), out)
    state.loaded = loaded
    return beats
