"""Configuration of the accelerator core: the compute engine, the AXI shell and its buffers.

One frozen :class:`CoreConfig` describes a core. Its register map (:attr:`CoreConfig.
register_map`) is derived from it and is the single source of the RTL register block, the
manifest's ``registers`` section, the C header and the table in ``docs/interface.md``.
"""

from dataclasses import dataclass, field
from functools import cached_property

from .config import ArrayConfig, ConfigError, check_name, check_int_range
from .int_layers import MAX_SHIFT2D
from .post_config import check_post_config
from .core_regmap import (CORE_MAGIC, CORE_VERSION, MAX_ENGINES, core_register_map,
                          engine_register_value)


__all__ = ["SETUP_STEPS", "CoreConfig", "CORE_MAGIC", "CORE_VERSION", "STREAM_WIDTHS", "CORE_LIMITS",
           "core_register_map", "PACKET_TYPES", "CORE_ERRORS", "DESC_FIELDS", "DESC_FLAGS",
           "DESC_BITS", "SHIFT_ENTRY_BITS", "ISSUE_FIFO_DEPTH", "DESC_SIGNED", "RES_MAX_SHIFT",
           "res_sum_width", "res_shift_range", "pool_sum_width", "pool_shift_range",
           "MAX_ENGINES", "engine_register_value", "WINDOW_FLAGS", "WINDOW_LATENCY",
           "TAP_FLAG", "shift_entry_bits"]

STREAM_WIDTHS = (32, 64, 128, 256, 512, 1024)
#: Allowed ranges of the integer parameters, inclusive.
CORE_LIMITS = {
    "fmap_vectors": (16, 1 << 20),
    "acc_entries": (1, 1 << 16),
    "weight_rows": (1, 1 << 20),
    "max_channels": (1, 1 << 16),
    "out_vectors": (2, 1 << 12),
    "shortcut_vectors": (0, 1 << 20),
    "pool_pixels": (0, 1 << 16),
    "fmap_banks": (1, 2),
    "tap_line": (2, 4095),
    "shift_reach": (1, MAX_SHIFT2D),
    "axil_addr_width": (8, 32),
}

#: Packet types of the AXI4-Stream slave: bits [3:0] of a packet's header beat.
PACKET_TYPES = {"DESC": 1, "PARAMS": 2, "SHIFT": 3, "WEIGHTS": 4, "ACTS": 5, "SHORTCUT": 6}

#: ``ERROR.core_code``: why a run stopped. ``(code, name, meaning)``.
CORE_ERRORS = (
    (1, "PACKET", "a header with an unknown type, reserved bits set or count 0, a data packet "
                  "before the descriptor, or a descriptor whose count is not 1"),
    (2, "DESCRIPTOR", "the descriptor is inconsistent: a zero size, reserved bits set, "
                      "padding >= kernel, out_h/out_w not the convolution's output size, "
                      "clamp_lo > clamp_hi or either outside the activation range, a residual "
                      "shift out of range, a residual's short_c = 0, short_stride = 0 or "
                      "short_off + short_c > out_c, pool_shift out of range, a clamp, "
                      "residual or pool field set without its flag, or (window runs) more "
                      "than one window flag, a window flag with in_c != out_c or with "
                      "flags.shift, win_max or win_sum with reuse_weights, or win_max with "
                      "2*pad_h > kernel_h or 2*pad_w > kernel_w; (taps runs) taps without "
                      "depthwise, with residual or global_pool, kernel_h or kernel_w larger "
                      "than the tap window's side (TAPS.side), or m_block != out_h*out_w"),
    (3, "TOO_BIG", "the layer does not fit the core: K = in_c*kernel_h*kernel_w (a window "
                   "run: kernel_h*kernel_w) > max_k, "
                   "out_c > max_channels, in_c > max_channels with a shift, m_block > "
                   "acc_entries, a tensor larger than its buffer (a residual's shortcut: "
                   "out_h*out_w*ceil(out_c/cols) > shortcut_vectors), a residual whose "
                   "shortcut map is 65536 or more pixels wide (out_w*short_stride >= 65536), "
                   "a global pool over out_h*out_w > pool_pixels, or (chaining) kept results "
                   "(out_h*out_w*ceil(out_c/cols), ceil(out_c/cols) with a pool) or a "
                   "resident shortcut source larger than fmap_vectors, or (taps runs) a "
                   "padded line (out_w-1)*stride_w + kernel_w longer than TAPS.line (a taps "
                   "run has no m_block limit: it takes no partial sums)"),
    (4, "SHORT", "tlast on a beat before the end of the packet its header announced"),
    (5, "LONG", "no tlast on the last beat of the packet its header announced"),
    (6, "OVERRUN", "a packet carries more vectors than the layer has left of its type"),
    (7, "REUSE", "reuse_weights, but the previous run did not end well, or its engine, "
                 "window flags, weight rows, out_c or shift-table vectors differ from this "
                 "layer's"),
    (8, "DESC_IN_RUN", "a descriptor packet in the middle of a run (one descriptor per "
                       "start)"),
    (9, "SHIFT_VALUE", "a shift-table entry with dy or dx outside [-reach, reach] "
                       "(SHIFT_TABLE.reach)"),
    (10, "ENGINE", "the descriptor's engine field names an engine the core does not have "
                   "(engine >= ENGINES.count)"),
    (11, "RESIDENT", "a chaining flag the core cannot honour: in_bank, keep, acts_resident "
                     "or short_resident on a core with one feature-map bank; acts_resident "
                     "but bank in_bank does not hold a tensor of shape (in_c, in_h, in_w); "
                     "short_resident but the other bank does not hold one of shape (short_c, "
                     "out_h*short_stride, out_w*short_stride), or without flags.residual; "
                     "quiet without keep"),
    (12, "WINDOW", "a window flag (win_max, win_sum, depthwise) on a core without the lane "
                   "unit (WINDOW.lanes = 0), or flags.taps on a core without the tap window "
                   "(TAPS.taps = 0) or on an engine that has none (a tree or folded "
                   "engine: its bit of TAPS.engines is 0)"),
)

#: Entries of the FIFO between the buffers and the engine's input: at least the issue
#: pipeline's round trip (issue, address, read, FIFO write, FIFO output), so the credit never
#: leaves a bubble.
ISSUE_FIFO_DEPTH = 8
#: Cycles from the lane unit's input handshake to its result (interface 2.3, window runs).
WINDOW_LATENCY = 2

#: The descriptor: one vector of 32-bit words, ``(word, low bit, width, name)``.
DESC_FIELDS = (
    (0, 0, 16, "in_h"), (0, 16, 16, "in_w"),
    (1, 0, 16, "in_c"), (1, 16, 16, "out_c"),
    (2, 0, 16, "out_h"), (2, 16, 16, "out_w"),
    (3, 0, 8, "kernel_h"), (3, 8, 8, "kernel_w"),
    (3, 16, 4, "stride_h"), (3, 20, 4, "stride_w"),
    (3, 24, 4, "pad_h"), (3, 28, 4, "pad_w"),
    (4, 0, 16, "m_block"), (4, 16, 16, "flags"),
    (5, 0, 16, "clamp_lo"), (5, 16, 16, "clamp_hi"),
    (6, 0, 8, "res_main_shift"), (6, 8, 8, "res_short_shift"), (6, 16, 8, "res_shift"),
    (6, 24, 8, "pool_shift"),
    (7, 0, 16, "short_c"), (7, 16, 8, "short_off"), (7, 24, 4, "short_stride"),
    (7, 28, 4, "engine"),
)
#: Bits of the descriptor's ``flags`` field; the other bits are reserved (0).
#: ``residual``: SHORTCUT packets follow and post-processing adds them (``res_*`` and
#: ``short_*`` fields); ``res_relu``: ReLU after the residual add; ``clamp``: clamp every
#: output to ``[clamp_lo, clamp_hi]`` (ReLU6); ``global_pool``: the layer's output is the
#: global average pool of the map (``pool_shift``): one pixel of ``out_c`` channels.
DESC_FLAGS = {"shift": 0, "reuse_weights": 1, "residual": 2, "res_relu": 3, "clamp": 4,
              "global_pool": 5, "in_bank": 6, "acts_resident": 7, "keep": 8, "quiet": 9,
              "short_resident": 10, "win_max": 11, "win_sum": 12, "depthwise": 13,
              "taps": 14}
#: Interface 2.3, window runs on the lane unit (a core with ``window_ops``): at most one of
#: ``win_max`` (max pooling), ``win_sum`` (the window sums of an average pool; PARAMS' shift
#: divides) and ``depthwise`` (a depthwise convolution, ``groups = in_c = out_c``, with the
#: engine ``engine``'s terms). Lane ``j`` of the run's ``nt``-th output tile reduces channel
#: ``nt*C + j`` over the ``kernel_h*kernel_w`` window of its output pixel.
WINDOW_FLAGS = ("win_max", "win_sum", "depthwise")
#: Interface 2.4, taps runs (a core with ``taps``): ``flags.taps`` with ``flags.depthwise`` runs
#: the depthwise convolution on engine ``engine``'s array instead of the lane unit, kernel
#: taps on rows and channels on columns: PE ``(r, c)`` of output tile ``nt`` holds
#: ``w[nt*C + c, ky, kx]`` with ``r = ky*kernel_w + kx`` (rows from ``kernel_h*kernel_w`` on hold
#: code 0 and see activation 0) and sees channel ``nt*C + c`` of input pixel ``(oy*stride_h -
#: pad_h + ky, ox*stride_w - pad_w + kx)``. The tap window (line buffers and a ``side x side``
#: register window in the issue unit, :mod:`~mulfree.params.tap_walk`) reads every input
#: vector once per output tile, one per cycle, so an output pixel of ``C`` channels and
#: ``kernel_h*kernel_w`` taps enters the array per cycle of a stride-1 row. The run takes one
#: pass per output tile (``NT`` weight tiles of ``rows`` rows, no partial sums) and one block
#: (``m_block = out_h*out_w``): results come per ``nt``, per pixel in raster order.
TAP_FLAG = "taps"
#: Interface 2.2, layer chaining (a core with ``fmap_banks = 2``): ``in_bank``: the bank the
#: run's input is in (ACTS packets are written there, the engine reads it); ``acts_resident``:
#: no ACTS packets, the input is the tensor bank ``in_bank`` holds; ``keep``: every result
#: vector (pixel ``p``, tile ``nt``; a global pool's ``NT`` vectors as pixel 0) is also
#: written into the other bank at ``p * NT + nt``, the next layer's ACTS layout; ``quiet``
#: (with ``keep``): the results are not sent; ``short_resident`` (with ``residual``): no
#: SHORTCUT packets, the shortcut source is the tensor the other bank holds (a residual that
#: keeps its output writes it in place over its shortcut, never over a vector not yet read).
#: Descriptor fields that hold two's-complement signed values.
DESC_SIGNED = ("clamp_lo", "clamp_hi", "res_shift", "pool_shift")
#: Largest left shift of either input of a residual add (``res_main_shift``,
#: ``res_short_shift``): the sum then needs ``act_bits + RES_MAX_SHIFT + 1`` bits.
RES_MAX_SHIFT = 15
#: Bits of the descriptor vector.
DESC_BITS = 8 * 32
#: Bits per channel of a shift-table vector of a reach-1 core (:func:`shift_entry_bits`):
#: dy in [1:0], dx in [3:2], both signed.
SHIFT_ENTRY_BITS = 4


def shift_entry_bits(reach):
    """Bits per channel of a shift-table vector of a core of reach ``reach``: dy in the low
    half, dx in the high half, each signed in ``reach.bit_length() + 1`` bits (4 for reach
    1, 6 for 2 and 3, 8 for 4 to 7)."""
    return 2 * (reach.bit_length() + 1)


#: The layer setup program (:class:`~mulfree.rtl.layer_setup.LayerSetup`): ``(result, op, a, b)`` with ``a`` up to 48 bits and ``b`` up to 16 bits
#: (the multiplier iterates over ``b``). Operands name descriptor fields, earlier results, or
#: the constants ``R``/``C`` (rows, cols); ``"x-1"`` is ``x - 1``, ``"x+R-1"`` is ``x + R - 1``.
SETUP_STEPS = (
    ("kk", "mul", "kernel_h", "kernel_w"),
    ("k", "mul", "in_c", "kk"),
    ("ct", "div", "in_c+R-1", "R"),
    ("nt", "div", "out_c+C-1", "C"),
    ("kt", "mul", "kk", "ct"),
    ("nkt", "mul", "kt", "nt"),
    ("wrows", "mul", "nkt", "R"),
    ("row", "mul", "in_w", "ct"),
    ("acts", "mul", "row", "in_h"),
    ("sct", "mul", "ct", "stride_w"),
    ("srow", "mul", "row", "stride_h"),
    ("m", "mul", "out_h", "out_w"),
    ("eh", "mul", "out_h-1", "stride_h"),
    ("ew", "mul", "out_w-1", "stride_w"),
    ("nts", "div", "short_c+C-1", "C"),
    ("sh", "mul", "out_h", "short_stride"),
    ("sw", "mul", "out_w", "short_stride"),
    ("sm", "mul", "sh", "sw"),
    ("scv", "mul", "sm", "nts"),
    ("dcv", "mul", "m", "nt"),
    ("nkk", "mul", "kk", "nt"),
    ("ntr", "mul", "nt", "R"),
)


def res_sum_width(act_bits):
    """Bits of a residual add's sum ``(v << res_main_shift) + (s << res_short_shift)`` of two
    signed ``act_bits`` values: ``act_bits + RES_MAX_SHIFT + 1``."""
    return act_bits + RES_MAX_SHIFT + 1


def pool_sum_width(act_bits, pool_pixels):
    """Bits of a global pool's per-channel sum of up to ``pool_pixels`` signed ``act_bits``
    values: ``act_bits + ceil(log2(pool_pixels))``."""
    return act_bits + max(0, (pool_pixels - 1).bit_length())


def pool_shift_range(act_bits, pool_pixels):
    """Inclusive range of ``pool_shift``: ``[-act_bits, pool_sum_width]`` (as ``res_shift``)."""
    return -act_bits, pool_sum_width(act_bits, pool_pixels)


def res_shift_range(act_bits):
    """Inclusive range of ``res_shift``: ``[-act_bits, res_sum_width]`` (as the layer's shift:
    a right shift by the sum's width gives 0, a left shift by ``act_bits`` saturates)."""
    return -act_bits, res_sum_width(act_bits)


@dataclass(frozen=True)
class CoreConfig:
    """An accelerator core: one compute engine behind an AXI4-Lite / AXI4-Stream shell.

    Parameters
    ----------
    engine : ArrayConfig
        The compute engine (``arch="array"`` or ``"tree"``): engine 0.
    extra_engines : tuple of ArrayConfig
        More engines sharing the buffers, streams and registers (a multi-engine core): engine
        1, 2. Each has a PE kind of its own and the same ``rows``, ``cols``, ``act_bits`` and
        ``max_k`` as ``engine``; ``weight_bits``, ``arch`` and ``tree_levels_per_stage`` are
        its own. A layer's descriptor chooses its engine (field ``engine``).
    engine_cols : tuple of int
        Physical PE columns of each engine, in the order of :attr:`engines`; empty: every
        engine has ``cols``. An engine with fewer columns (a divisor of ``cols``) is *folded*:
        it computes a ``cols``-wide result vector in ``cols / engine_cols[k]`` passes, taking
        one input vector every that many cycles (a small mult engine for first and last
        layers). Engine 0 is never folded.
    stream_width : int
        ``tdata`` bits of the AXI4-Stream slave and master: 32, 64, 128, 256, 512 or 1024.
    fmap_vectors : int
        Depth of the feature-map buffer (of each bank, :attr:`fmap_banks`) in vectors of
        ``rows`` activations: a layer's input of ``in_h * in_w * ceil(in_c / rows)`` vectors
        must fit, and with ``flags.keep`` its output of ``out_h * out_w * ceil(out_c / cols)``.
    acc_entries : int
        Depth of the accumulator buffer in entries of ``cols`` partial sums: the largest
        ``m_block`` (output pixels per block) a layer may use.
    weight_rows : int
        Depth of the weight buffer in rows of ``cols`` codes: a layer's
        ``ceil(out_c / cols) * kernel_h * kernel_w * ceil(in_c / rows) * rows`` rows must fit.
    max_channels : int
        Entries of the post-processing table (``out_c`` limit) and of the shift table
        (``in_c`` limit of a layer with a shift).
    out_vectors : int
        Depth of the output buffer in result vectors of ``cols`` activations.
    shortcut_vectors : int
        Depth of the shortcut buffer in vectors of ``cols`` activations: a residual layer's
        shortcut of ``out_h * out_w * ceil(out_c / cols)`` vectors must fit. 0 builds no
        buffer (a layer with ``flags.residual`` is then ``TOO_BIG``).
    fmap_banks : int or None
        Feature-map banks of ``fmap_vectors`` each: 2 lets a layer's output stay on-chip as
        the next layer's input or a later residual's shortcut (layer chaining, interface
        2.2; needs ``rows == cols``), 1 builds one buffer. ``None``: 2 when ``rows == cols``,
        else 1.
    window_ops : bool or None
        Build the lane unit (interface 2.3): ``cols`` lanes that run window runs (max
        pooling, the sums of average pooling, depthwise convolutions with each engine's
        terms) at one input vector per cycle; needs ``rows == cols``. ``None``: when
        ``rows == cols``.
    taps : int or None
        Rows of the tap window (interface 2.4): a depthwise run with ``flags.taps`` puts its
        kernel taps on this many rows of an array engine (``side = sqrt(taps)``: kernels up to
        ``side x side``). A square number from 4 to ``rows``, or 0 (no tap window); needs
        ``window_ops`` and an array engine that is not folded (:attr:`tap_engines`).
        ``None``: 9 when those hold and ``rows >= 9``, else 0.
    tap_line : int
        Pixels of the tap window's line buffers: a taps run's padded line
        ``(out_w-1)*stride_w + kernel_w`` must fit.
    shift_reach : int
        Largest ``|dy|`` and ``|dx|`` of a shift-table entry (1 to ``MAX_SHIFT2D`` = 7): a
        Shift2d of kernel ``2*shift_reach + 1`` folds into the convolution after it. Each
        entry is :attr:`shift_entry_bits` wide; an entry beyond the reach is error
        ``SHIFT_VALUE``. The lanes' offsets ``dy*row + dx*CT`` are shifts and adds.
    pool_pixels : int
        Largest map (``out_h * out_w``) a layer with ``flags.global_pool`` may average: the
        width of the pool unit's per-channel sums (:func:`pool_sum_width`). 0 builds no pool
        unit (a layer with ``flags.global_pool`` is then ``TOO_BIG``).
    axil_addr_width : int
        Byte-address width of the AXI4-Lite slave, at least what the register map needs.
    """

    engine: ArrayConfig = field(default_factory=ArrayConfig)
    extra_engines: tuple = ()
    engine_cols: tuple = ()
    stream_width: int = 64
    fmap_vectors: int = 4096
    acc_entries: int = 256
    weight_rows: int = 4096
    max_channels: int = 512
    out_vectors: int = 64
    shortcut_vectors: int = 1024
    pool_pixels: int = 4096
    fmap_banks: int | None = None
    window_ops: bool | None = None
    taps: int | None = None
    tap_line: int = 64
    shift_reach: int = 1
    axil_addr_width: int = 12
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        if not isinstance(self.engine, ArrayConfig):
            raise ConfigError("engine", f"engine must be an ArrayConfig, not {self.engine!r}")
        self._check_engines()
        square = self.engine.rows == self.engine.cols
        if self.fmap_banks is None:
            object.__setattr__(self, "fmap_banks", 2 if square else 1)
        if self.fmap_banks == 2 and not square:
            raise ConfigError("fmap_banks", f"fmap_banks=2 (layer chaining) needs rows == cols "
                              f"(a result vector is the next layer's input vector), not "
                              f"{self.engine.rows}x{self.engine.cols}; use fmap_banks=1")
        if self.window_ops is None:
            object.__setattr__(self, "window_ops", square)
        if not isinstance(self.window_ops, bool):
            raise ConfigError("window_ops", f"window_ops must be True, False or None, not "
                              f"{self.window_ops!r}")
        if self.window_ops and not square:
            raise ConfigError("window_ops", f"window_ops (pooling and depthwise runs on the "
                              f"lane unit) needs rows == cols (lane j of an input vector is "
                              f"lane j of its result), not {self.engine.rows}x"
                              f"{self.engine.cols}; use window_ops=False")
        self._check_taps()
        if self.stream_width not in STREAM_WIDTHS or isinstance(self.stream_width, bool):
            raise ConfigError("stream_width", f"stream_width must be one of "
                              f"{', '.join(map(str, STREAM_WIDTHS))}, not {self.stream_width!r}")
        for param, (lo, hi) in CORE_LIMITS.items():
            check_int_range(param, getattr(self, param), lo, hi)
        # The core post-processes every result: refuse an accumulator too wide for it here,
        # in one line, rather than deep in the elaboration.
        check_post_config(self.engine)
        need = _map_bits()
        if self.axil_addr_width < need:
            raise ConfigError("axil_addr_width", f"axil_addr_width must be an integer in "
                              f"[{need}, {CORE_LIMITS['axil_addr_width'][1]}] (the register "
                              f"map needs {need} bits), not {self.axil_addr_width!r}")
        if self.name is not None:
            check_name(self.name)

    def _check_taps(self):
        can = self.window_ops and bool(self.tap_engines)
        if self.taps is None:
            object.__setattr__(self, "taps", 9 if can and self.engine.rows >= 9 else 0)
        t = self.taps
        squares = [s * s for s in range(2, self.engine.rows + 1) if s * s <= self.engine.rows]
        if not isinstance(t, int) or isinstance(t, bool) or (t != 0 and t not in squares):
            allowed = ", ".join(map(str, [0] + squares))
            raise ConfigError("taps", f"taps must be one of {allowed} (a square number of "
                              f"rows, at most rows={self.engine.rows}), not {t!r}")
        if t and not can:
            raise ConfigError("taps", f"taps={t} (depthwise runs on the array) needs "
                              f"window_ops and an array engine that is not folded (nor packed, "
                              f"mult_pack=2); use taps=0")

    @property
    def shift_entry_bits(self):
        """Bits per channel of a SHIFT vector: ``2*(shift_reach.bit_length() + 1)``
        (:func:`shift_entry_bits`)."""
        return shift_entry_bits(self.shift_reach)

    @property
    def tap_side(self):
        """Side of the tap window's register window: ``sqrt(taps)`` (0 without one)."""
        return next((s for s in range(self.taps + 1) if s * s == self.taps), 0)

    @property
    def tap_engines(self):
        """Engines a taps run may use: the array engines that are not folded (their columns
        take per-column inputs on the tap rows); none without :attr:`taps`."""
        if self.taps == 0:
            return ()
        # A packed mult array shares each row's activation between two columns: no taps.
        return tuple(k for k, e in enumerate(self.engines)
                     if e.arch == "array" and self.folds(k) == 1 and e.mult_pack == 1)

    def _check_engines(self):
        extra = self.extra_engines
        if not isinstance(extra, tuple) or not all(isinstance(e, ArrayConfig) for e in extra):
            raise ConfigError("extra_engines", f"extra_engines must be a tuple of "
                              f"ArrayConfig, not {extra!r}")
        if len(extra) + 1 > MAX_ENGINES:
            raise ConfigError("extra_engines", f"a core has at most {MAX_ENGINES} engines, "
                              f"not {len(extra) + 1}")
        kinds = [e.pe for e in self.engines]
        if len(set(kinds)) != len(kinds):
            raise ConfigError("extra_engines", f"the engines' PE kinds must differ (one "
                              f"engine per kind), not {', '.join(kinds)}")
        e0 = self.engine
        for k, e in enumerate(extra, 1):
            for shared in ("rows", "cols", "act_bits", "max_k"):
                if getattr(e, shared) != getattr(e0, shared):
                    raise ConfigError("extra_engines", f"engine {k} ({e.pe}) must share "
                                      f"{shared}={getattr(e0, shared)} with engine 0, not "
                                      f"{getattr(e, shared)}")
            check_post_config(e)
        cols = self.engine_cols
        if cols == ():
            return
        if (not isinstance(cols, tuple) or len(cols) != len(self.engines)
                or not all(isinstance(c, int) and not isinstance(c, bool) for c in cols)):
            raise ConfigError("engine_cols", f"engine_cols must be empty or one integer per "
                              f"engine ({len(self.engines)}), not {cols!r}")
        if cols[0] != e0.cols:
            raise ConfigError("engine_cols", f"engine 0 is never folded: engine_cols[0] must "
                              f"be cols={e0.cols}, not {cols[0]}")
        divisors = [d for d in range(1, e0.cols + 1) if e0.cols % d == 0]
        for k, c in enumerate(cols):
            if c not in divisors:
                raise ConfigError("engine_cols", f"engine_cols[{k}] must divide cols="
                                  f"{e0.cols} (one of {', '.join(map(str, divisors))}), "
                                  f"not {c}")

    @property
    def engines(self):
        """Every engine, engine 0 first: ``(engine, *extra_engines)``."""
        return (self.engine, *self.extra_engines)

    def physical_cols(self, k):
        """PE columns engine ``k`` has (``cols`` unless it is folded)."""
        return self.engine_cols[k] if self.engine_cols else self.engine.cols

    def folds(self, k):
        """Passes engine ``k`` takes per input vector: ``cols / physical_cols(k)``."""
        return self.engine.cols // self.physical_cols(k)

    def engine_index(self, pe):
        """The index of the engine of PE kind ``pe``, or None."""
        return next((k for k, e in enumerate(self.engines) if e.pe == pe), None)

    @property
    def code_width(self):
        """Bits of one weight-code slot in the WEIGHTS stream and the weight buffer: the
        widest engine's code. Engine ``k``'s code sits in the low ``code_width`` bits of its
        engine, the bits above are 0."""
        return max(e.code_width for e in self.engines)

    @property
    def post_engine(self):
        """The engine with the widest accumulator (the first of equals): post-processing,
        the accumulator buffer and the PARAMS stream take its widths. Post-processing of a
        value in range does not depend on the width it is held in, so every engine's results
        go through the same unit, sign-extended."""
        return max(self.engines, key=lambda e: e.acc_width)

    @property
    def acc_width(self):
        """Bits of an accumulator entry (per column) in the core: the widest engine's."""
        return self.post_engine.acc_width

    @property
    def top_name(self):
        if self.name is not None:
            return self.name
        base = self.engine.top_name.removeprefix('mulfree_')
        for k, e in enumerate(self.extra_engines, 1):
            fold = "" if self.physical_cols(k) == e.cols else f"c{self.physical_cols(k)}"
            mapping = (f"p{e.mult_pack}" if e.mult_pack != 1 else "") + (
                f"d{e.dsp_cols}" if e.dsp_cols is not None else "")
            base += f"_{e.pe}{fold}{mapping}"
        return f"mulfree_core_{base}_s{self.stream_width}"

    @cached_property
    def register_map(self):
        """The :class:`~mulfree.rtl.regs.RegisterMap` of this core (built once)."""
        return core_register_map(self)

    def params(self):
        """The user-set parameters, as a JSON-ready dict (``engine`` nested)."""
        return {"engine": self.engine.params(),
                "extra_engines": [e.params() for e in self.extra_engines],
                "engine_cols": list(self.engine_cols), "stream_width": self.stream_width,
                "fmap_vectors": self.fmap_vectors, "acc_entries": self.acc_entries,
                "weight_rows": self.weight_rows, "max_channels": self.max_channels,
                "out_vectors": self.out_vectors, "shortcut_vectors": self.shortcut_vectors,
                "pool_pixels": self.pool_pixels, "fmap_banks": self.fmap_banks,
                "window_ops": self.window_ops, "taps": self.taps, "tap_line": self.tap_line,
                "shift_reach": self.shift_reach, "axil_addr_width": self.axil_addr_width}

    @property
    def hazard_window(self):
        """Vectors in flight between the issue and the accumulator write, at most.

        The engine's latency, the issue FIFO and four pipeline registers. A block of at least
        this many output pixels never reads a partial sum before it is written; a shorter
        block waits at each pass for the previous one to drain.
        """
        return max(max(self.engine_latency(k) for k in range(len(self.engines))),
                   WINDOW_LATENCY) + ISSUE_FIFO_DEPTH + 4

    def engine_latency(self, k):
        """Cycles from engine ``k``'s input handshake to its output being valid, no stall:
        the engine's own, or a folded engine's (:func:`fold_latency`)."""
        e = self.engines[k]
        if self.folds(k) == 1:
            return e.latency
        return fold_latency(e, self.physical_cols(k))

    @classmethod
    def from_params(cls, params):
        """The config whose :meth:`params` are ``params`` (a manifest's ``parameters``)."""
        params = dict(params)
        extra = tuple(ArrayConfig(**p) for p in params.pop("extra_engines", []))
        return cls(engine=ArrayConfig(**params.pop("engine")), extra_engines=extra,
                   engine_cols=tuple(params.pop("engine_cols", [])), **params)

    # Stream formats (docs/interface.md, "Stream formats"): every vector occupies whole beats.

    def beats(self, bits):
        """Beats of ``stream_width`` bits that one vector of ``bits`` bits occupies."""
        return -(-bits // self.stream_width)

    @property
    def vector_bits(self):
        """Bits of one vector of each packet type, and of a result vector (``"OUT"``)."""
        e, p = self.engine, self.post_engine
        from .post_config import shift_width
        return {"DESC": DESC_BITS, "PARAMS": p.acc_width + shift_width(p) + 1,
                "SHIFT": e.rows * self.shift_entry_bits, "WEIGHTS": e.cols * self.code_width,
                "ACTS": e.rows * e.act_bits, "SHORTCUT": e.cols * e.act_bits,
                "OUT": e.cols * e.act_bits}


def fold_latency(e, physical_cols):
    """Latency of a folded engine of kind ``e`` with ``physical_cols`` columns: see
    :class:`~mulfree.rtl.fold.FoldedEngine`."""
    from .fold_config import fold_latency as latency
    return latency(e, physical_cols)


def _map_bits():
    """Address bits the register map needs (its layout does not depend on the parameters)."""
    rmap = core_register_map(None, addr_width=32)
    return max(1, (rmap.size - 1).bit_length())

