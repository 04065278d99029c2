"""Configuration of a generated PE array: the single source of every number.

One frozen :class:`ArrayConfig` describes a design. The Amaranth elaboration, the NumPy golden
model, the manifest the host reads and the tests all take their widths, ranges and latencies
from it; nothing is computed twice.

The arithmetic it encodes is written down in ``docs/numerics.md``.
"""

from dataclasses import dataclass, field, asdict

from .safe_io import FileCheckError, check_verilog_name


__all__ = [
    "ConfigError", "PE_KINDS", "ARCHS", "ArrayConfig", "signed_width", "unsigned_width",
    "int_range", "tree_level_counts", "check_name", "check_int_range", "MULT_PACKS",
    "DSP_A_BITS", "DSP_B_BITS",
]


#: The operators a processing element can compute.
PE_KINDS = ("shift", "adder", "mult")
#: The organisations of the terms: a 2-D weight-stationary array, or one adder tree per lane.
ARCHS = ("array", "tree")

#: Allowed ranges of the integer parameters, inclusive, shared with the CLI's help text.
LIMITS = {
    "rows": (1, 1024),
    "cols": (1, 1024),
    "act_bits": (2, 16),
    "max_k": (1, 2**31),
    "tree_levels_per_stage": (1, 64),
}
WEIGHT_BITS_LIMITS = {"shift": (2, 6), "mult": (2, 16)}
#: Products per DSP block a mult array may pack: 1, or 2 (two weights sharing one activation).
MULT_PACKS = (1, 2)
#: The DSP48E1 multiplier's operand widths (signed): the packed weight on A, the activation
#: on B (7 series; docs/numerics.md, "Packed multipliers").
DSP_A_BITS, DSP_B_BITS = 25, 18
DEFAULT_WEIGHT_BITS = {"shift": 4, "mult": 8}
#: Widest accumulator the golden model (int64) and the generated RTL support.
MAX_ACC_WIDTH = 64


class ConfigError(ValueError):
    """An invalid design parameter.

    The message names the parameter, the rejected value and what is allowed, in one line.
    ``param`` holds the parameter's name so that a CLI can map it to its option.
    """

    def __init__(self, param, message):
        super().__init__(message)
        self.param = param


def check_name(name):
    """Raise :class:`ConfigError` unless ``name`` can name a Verilog module (no keyword)."""
    try:
        check_verilog_name(name, "name")
    except FileCheckError as exc:
        raise ConfigError("name", str(exc)) from None


def signed_width(lo, hi):
    """Width of the smallest two's complement type holding every integer in ``[lo, hi]``."""
    width = 1
    while not (-(1 << (width - 1)) <= lo and hi <= (1 << (width - 1)) - 1):
        width += 1
    return width


def unsigned_width(hi):
    """Width of the smallest unsigned type holding every integer in ``[0, hi]``."""
    return max(1, int(hi).bit_length())


def int_range(bits):
    """The inclusive range ``(lo, hi)`` of a signed ``bits``-wide integer."""
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def tree_level_counts(k):
    """Leaf counts of the nodes of each level of a ``k``-input adder tree.

    Level 0 holds the ``k`` leaves (one term each). Each further level adds adjacent pairs of
    the level below, ``(0, 1), (2, 3), ...``; an odd node at the end passes through unchanged.
    The last level has one node holding all ``k`` terms; there are ``ceil(log2 k)`` adder
    levels above the leaves.

    >>> tree_level_counts(5)
    [[1, 1, 1, 1, 1], [2, 2, 1], [4, 1], [5]]
    """
    levels = [[1] * k]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([sum(below[i:i + 2]) for i in range(0, len(below), 2)])
    return levels


def check_int_range(param, value, lo, hi):
    """Raise :class:`ConfigError` unless ``value`` is an integer (not a bool) in ``lo..hi``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(param, f"{param} must be an integer in [{lo}, {hi}], not {value!r}")
    if not lo <= value <= hi:
        raise ConfigError(param, f"{param} must be an integer in [{lo}, {hi}], not {value!r}")


@dataclass(frozen=True)
class ArrayConfig:
    """A ``rows x cols`` array of processing elements of one kind.

    Parameters
    ----------
    pe : str
        ``"shift"`` (DeepShift, weights ``±2^p`` or 0), ``"adder"`` (AdderNet, ``-|x - w|``)
        or ``"mult"`` (the multiplier baseline).
    rows : int
        Input vector length: the reduction length of one tile.
    cols : int
        Output vector length.
    act_bits : int
        Width of the signed activations, 2..16.
    weight_bits : int or None
        Width of a weight code. Shift: 2..6, sets ``max_shift = 2^(weight_bits-1) - 2``.
        Mult: 2..16 (signed weights). Adder: weights share the activations' scale and width, so
        it must be left ``None`` (or equal ``act_bits``). ``None`` picks the kind's default.
    max_k : int
        The longest reduction (over chained tiles with partial sums) the accumulator must hold
        without overflow; at least ``rows``.
    arch : str
        ``"array"`` (the 2-D weight-stationary array of PEs) or ``"tree"`` (the dot-product
        engine: every lane reduces its ``rows`` terms in a pipelined adder tree). Both have the
        same ports and protocol; ``rows`` is the input vector length and ``cols`` the number of
        outputs either way.
    tree_levels_per_stage : int
        Tree only: how many combinational levels (term, adder levels, root) lie between two
        pipeline registers; 1 registers every level. Must stay 1 for ``arch="array"``.
    mult_pack : int
        Mult arrays only: products per DSP block. 2 packs columns ``2j`` and ``2j + 1`` (which
        share row ``r``'s activation) into one multiplication ``x * (w_lo + w_hi 2^k)``
        (:attr:`pack_shift`); weights then lie in ``[-(2^(b-1) - 1), 2^(b-1) - 1]``, so that
        the lower field cannot reach the upper one (docs/numerics.md, "Packed multipliers").
    dsp_cols : int or None
        Mult arrays only: columns ``0 .. dsp_cols - 1`` multiply on DSP blocks, the rest on a
        LUT multiplier; ``None`` (all columns on DSPs) is the default.
    """

    pe: str = "shift"
    rows: int = 8
    cols: int = 8
    act_bits: int = 8
    weight_bits: int | None = None
    max_k: int = 1024
    name: str | None = field(default=None, compare=False)
    arch: str = "array"
    tree_levels_per_stage: int = 1
    mult_pack: int = 1
    dsp_cols: int | None = None

    def __post_init__(self):
        if self.pe not in PE_KINDS:
            raise ConfigError("pe", f"pe must be one of {', '.join(PE_KINDS)}, not {self.pe!r}")
        if self.arch not in ARCHS:
            raise ConfigError("arch", f"arch must be one of {', '.join(ARCHS)}, "
                                      f"not {self.arch!r}")
        if self.arch == "tree":
            check_int_range("tree_levels_per_stage", self.tree_levels_per_stage,
                       *LIMITS["tree_levels_per_stage"])
        elif self.tree_levels_per_stage != 1:
            raise ConfigError(
                "tree_levels_per_stage",
                f"tree_levels_per_stage applies to arch='tree' only, so it must be 1 for "
                f"arch={self.arch!r}, not {self.tree_levels_per_stage!r}")
        for param in ("rows", "cols", "act_bits"):
            check_int_range(param, getattr(self, param), *LIMITS[param])
        if self.pe == "adder":
            if self.weight_bits is not None and self.weight_bits != self.act_bits:
                raise ConfigError(
                    "weight_bits",
                    f"weight_bits does not apply to adder PEs (weights share act_bits="
                    f"{self.act_bits}), not {self.weight_bits!r}; leave it unset")
            object.__setattr__(self, "weight_bits", self.act_bits)
        else:
            if self.weight_bits is None:
                object.__setattr__(self, "weight_bits", DEFAULT_WEIGHT_BITS[self.pe])
            check_int_range("weight_bits", self.weight_bits, *WEIGHT_BITS_LIMITS[self.pe])
        check_int_range("max_k", self.max_k, self.rows, LIMITS["max_k"][1])
        if self.acc_width > MAX_ACC_WIDTH:
            raise ConfigError(
                "max_k",
                f"max_k={self.max_k} needs a {self.acc_width}-bit accumulator with these "
                f"widths; at most {MAX_ACC_WIDTH} bits are supported, so max_k must be in "
                f"[{self.rows}, {self._max_k_for_width(MAX_ACC_WIDTH)}]")
        self._check_mult_mapping()
        if self.name is not None:
            check_name(self.name)

    def _check_mult_mapping(self):
        """``mult_pack`` and ``dsp_cols``: mult arrays only, within the DSP's operand widths."""
        if type(self.mult_pack) is not int or self.mult_pack not in MULT_PACKS:
            raise ConfigError("mult_pack", f"mult_pack must be one of "
                                           f"{', '.join(map(str, MULT_PACKS))}, "
                                           f"not {self.mult_pack!r}")
        plain = self.pe != "mult" or self.arch != "array"
        if plain and self.mult_pack != 1:
            raise ConfigError("mult_pack", f"mult_pack applies to pe='mult' arch='array' only, "
                                           f"so it must be 1 here, not {self.mult_pack!r}")
        if self.dsp_cols is not None:
            if plain:
                raise ConfigError("dsp_cols", f"dsp_cols applies to pe='mult' arch='array' "
                                              f"only; leave it unset, not {self.dsp_cols!r}")
            check_int_range("dsp_cols", self.dsp_cols, 0, self.cols)
        if self.mult_pack == 2:
            if self.act_bits > DSP_B_BITS:
                raise ConfigError("mult_pack", f"mult_pack=2 needs act_bits <= {DSP_B_BITS} "
                                               f"(the DSP's B port), not {self.act_bits!r}")
            if self.pack_width > DSP_A_BITS:
                raise ConfigError(
                    "mult_pack", f"mult_pack=2 needs weight_bits + pack_shift <= {DSP_A_BITS} "
                                 f"(the DSP's A port), not {self.weight_bits} + "
                                 f"{self.pack_shift}; narrow act_bits or weight_bits")

    # Operands -------------------------------------------------------------------------------

    @property
    def act_range(self):
        """Inclusive range of an activation."""
        return int_range(self.act_bits)

    @property
    def max_shift(self):
        """Largest shift ``p`` of a shift weight code (shift PEs only)."""
        if self.pe != "shift":
            return None
        return (1 << (self.weight_bits - 1)) - 2

    @property
    def weight_scale_log2(self):
        """The weight code ``c`` stands for the real weight ``c * 2^weight_scale_log2``."""
        return -self.max_shift if self.pe == "shift" else 0

    @property
    def weight_range(self):
        """Inclusive range of the integer a weight code stands for."""
        if self.pe == "shift":
            return -(1 << self.max_shift), 1 << self.max_shift
        lo, hi = int_range(self.weight_bits)
        # Packed: symmetric, so that x * w_lo fits pack_shift bits (docs/numerics.md).
        return (-hi if self.mult_pack == 2 else lo), hi

    # Multiplier mapping (pe="mult") ------------------------------------------------------------

    @property
    def pack_shift(self):
        """``k``: the upper weight's offset in a packed DSP operand ``w_lo + w_hi 2^k``.

        The lower product ``x * w_lo`` must fit a signed ``k``-bit field: ``k`` is the width
        of the term range. With weights in ``[-127, 127]`` and ``x`` in ``[-128, 127]`` the
        products lie in ``[-16256, 16256]``: ``k = 15``; a weight of -128 would allow
        ``(-128)(-128) = 16384``, which needs 16 bits and would carry into the upper field.
        ``None`` unless ``mult_pack == 2``.
        """
        return self.term_width if self.mult_pack == 2 else None

    @property
    def pack_width(self):
        """Width of a packed DSP operand ``w_lo + w_hi 2^k`` (``None`` unless packed)."""
        if self.mult_pack != 2:
            return None
        _, hi = self.weight_range
        bound = hi * ((1 << self.pack_shift) + 1)
        return signed_width(-bound, bound)

    @property
    def dsp_columns(self):
        """Columns whose products use DSP blocks (mult arrays; 0 for other kinds)."""
        if self.pe != "mult":
            return 0
        return self.cols if self.dsp_cols is None else self.dsp_cols

    @property
    def column_groups(self):
        """The columns as ``(variant, first column, count)``, left to right.

        ``"dsp"``: one column, one DSP per PE (every column of a non-mult array is one of
        these); ``"pair"``: two packed columns, one DSP per two PEs; ``"lut"``: one column
        whose products are built from LUTs.
        """
        groups, c, d = [], 0, self.dsp_columns if self.pe == "mult" else self.cols
        while c < d:
            n = 2 if self.mult_pack == 2 and c + 1 < d else 1
            groups.append(("pair" if n == 2 else "dsp", c, n))
            c += n
        groups += [("lut", c, 1) for c in range(c, self.cols)]
        return groups

    @property
    def dsp_count(self):
        """DSP blocks the array's products need (mult arrays)."""
        if self.pe != "mult":
            return 0
        return self.rows * sum(1 for v, _, _ in self.column_groups if v != "lut")

    # Terms and accumulators -----------------------------------------------------------------

    @property
    def term_range(self):
        """Inclusive range of one PE's contribution to a sum.

        shift: ``sign * (x << p)``; adder: ``-|x - w|``; mult: ``x * w``.
        """
        xlo, xhi = self.act_range
        if self.pe == "shift":
            bound = -xlo << self.max_shift          # -(-2^(a-1)) << max_shift
            return -bound, bound
        if self.pe == "adder":
            return -(xhi - xlo), 0                  # |x - w| <= 2^a - 1
        wlo, whi = self.weight_range
        corners = [x * w for x in (xlo, xhi) for w in (wlo, whi)]
        return min(corners), max(corners)

    def sum_range(self, n):
        """Inclusive range of a sum of ``n`` terms."""
        lo, hi = self.term_range
        return n * lo, n * hi

    @property
    def term_width(self):
        return signed_width(*self.term_range)

    @property
    def acc_range(self):
        """Inclusive range of any reduction of at most ``max_k`` terms."""
        return self.sum_range(self.max_k)

    @property
    def acc_width(self):
        """Width of partial sums and results: exactly wide enough for ``max_k`` terms."""
        return signed_width(*self.acc_range)

    def _max_k_for_width(self, width):
        lo, hi = self.term_range
        limit = 1 << (width - 1)
        return min(limit // -lo if lo else limit, (limit - 1) // hi if hi else limit)

    # Hardware --------------------------------------------------------------------------------

    @property
    def code_width(self):
        """Width of one weight code in the weight stream and the weight registers."""
        return self.weight_bits

    @property
    def pe_count(self):
        return self.rows * self.cols

    @property
    def latency(self):
        """Cycles from an input beat's handshake to its output beat being valid, with no stall.

        Array: the handshake edge (ending cycle ``t``) registers the input, the next ``rows``
        edges register each row's partial sums, one more registers their sum with the incoming
        partial sum: an input accepted in cycle ``t`` is on the output in cycle ``t + rows + 2``.

        Tree: the handshake edge registers the input, then one edge per pipeline stage
        (:attr:`tree_stages`), the last one being the output register: ``1 + tree_stages``.
        """
        if self.arch == "tree":
            return 1 + self.tree_stages
        return self.rows + 2

    # Adder tree (arch="tree") ----------------------------------------------------------------

    @property
    def tree_level_counts(self):
        """Leaf counts of the tree's nodes, level by level (see :func:`tree_level_counts`)."""
        return tree_level_counts(self.rows)

    @property
    def tree_depth(self):
        """Adder levels above the leaves: ``ceil(log2 rows)``."""
        return len(self.tree_level_counts) - 1

    @property
    def tree_signed(self):
        """Whether tree nodes are signed. Adder trees sum magnitudes ``|x - w|`` (unsigned)."""
        return self.pe != "adder"

    def tree_node_range(self, m):
        """Inclusive range of the value a tree node over ``m`` leaves holds.

        A node holds the sum of its ``m`` terms *minus one pending carry bit* (the identities
        of ``docs/numerics.md``, section 9, fold each term's negation into a carry that a later
        adder absorbs). Adder: the sum of ``m`` magnitudes ``|x - w|``, ``[0, m(2^a - 1)]``
        (the tree works on magnitudes; the root subtracts). Shift: ``[m t_lo, m t_hi - 1]``
        (``t XOR S`` reaches ``t_lo`` but not ``t_hi``). Mult: ``sum_range(m)``, no carries.
        """
        lo, hi = self.term_range
        if self.pe == "adder":
            return 0, -lo * m
        if self.pe == "shift":
            return m * lo, m * hi - 1
        return m * lo, m * hi

    def tree_node_width(self, m):
        """Exact width of a tree node over ``m`` leaves (unsigned for adder trees)."""
        lo, hi = self.tree_node_range(m)
        return signed_width(lo, hi) if self.tree_signed else unsigned_width(hi)

    @property
    def tree_leaf_width(self):
        """Bits a leaf computes before its value: what a level-0 register holds.

        Adder: ``d = x - w`` (``a + 1`` bits; the value ``d XOR N`` is formed in the next
        adder's LUTs). Shift: ``{s, x << p}`` (``1 + a + max_shift``). Mult: the product.
        """
        if self.pe == "adder":
            return self.act_bits + 1
        if self.pe == "shift":
            return self.act_bits + self.max_shift + 1
        return self.term_width

    @property
    def tree_level_widths(self):
        """Widths of every node, level by level; level 0 are the leaves' values."""
        return [[self.tree_node_width(m) for m in level] for level in self.tree_level_counts]

    @property
    def tree_registered_levels(self):
        """Levels followed by a pipeline register.

        Levels ``0 .. tree_depth + 1``: 0 computes the terms, ``1 .. tree_depth`` are adder
        levels, ``tree_depth + 1`` is the root (the incoming partial sum is added). A register
        follows every ``tree_levels_per_stage``-th level and always the root (the output
        register).
        """
        g, root = self.tree_levels_per_stage, self.tree_depth + 1
        return [lv for lv in range(root + 1) if (lv + 1) % g == 0 or lv == root]

    @property
    def tree_stages(self):
        """Pipeline stages after the input register: ``ceil((tree_depth + 2) / levels)``."""
        return len(self.tree_registered_levels)

    @property
    def top_name(self):
        if self.name is not None:
            return self.name
        stages = f"_l{self.tree_levels_per_stage}" if self.tree_levels_per_stage != 1 else ""
        mapping = (f"_p{self.mult_pack}" if self.mult_pack != 1 else "") + (
            f"_d{self.dsp_cols}" if self.dsp_cols is not None else "")
        return (f"mulfree_{self.arch}_{self.pe}_{self.rows}x{self.cols}"
                f"_a{self.act_bits}w{self.weight_bits}k{self.max_k}{stages}{mapping}")

    def params(self):
        """The user-set parameters, as a JSON-ready dict.

        ``arch`` and ``tree_levels_per_stage`` appear only for trees, so an array's parameters
        are what they were before trees existed; ``ArrayConfig(**params())`` rebuilds the design
        either way.
        """
        params = {k: v for k, v in asdict(self).items() if k != "name"}
        if self.arch == "array":
            del params["arch"], params["tree_levels_per_stage"]
        # The multiplier mapping appears only when set, so other designs keep their params.
        if self.mult_pack == 1:
            del params["mult_pack"]
        if self.dsp_cols is None:
            del params["dsp_cols"]
        return params
