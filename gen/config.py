"""Configuration of a generated PE array: the single source of every number.

One frozen :class:`ArrayConfig` describes a design. The Amaranth elaboration, the NumPy golden
model, the manifest the host reads and the tests all take their widths, ranges and latencies
from it; nothing is computed twice.

The arithmetic it encodes is written down in ``docs/numerics.md``.
"""

from dataclasses import dataclass, field, asdict


__all__ = [
    "ConfigError", "PE_KINDS", "ArrayConfig", "signed_width", "unsigned_width", "int_range",
]


#: The operators a processing element can compute.
PE_KINDS = ("shift", "adder", "mult")

#: Allowed ranges of the integer parameters, inclusive, shared with the CLI's help text.
LIMITS = {
    "rows": (1, 1024),
    "cols": (1, 1024),
    "act_bits": (2, 16),
    "max_k": (1, 2**31),
}
WEIGHT_BITS_LIMITS = {"shift": (2, 6), "mult": (2, 16)}
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


def _check_int(param, value, lo, hi):
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
    """

    pe: str = "shift"
    rows: int = 8
    cols: int = 8
    act_bits: int = 8
    weight_bits: int | None = None
    max_k: int = 1024
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        if self.pe not in PE_KINDS:
            raise ConfigError("pe", f"pe must be one of {', '.join(PE_KINDS)}, not {self.pe!r}")
        for param in ("rows", "cols", "act_bits"):
            _check_int(param, getattr(self, param), *LIMITS[param])
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
            _check_int("weight_bits", self.weight_bits, *WEIGHT_BITS_LIMITS[self.pe])
        _check_int("max_k", self.max_k, self.rows, LIMITS["max_k"][1])
        if self.acc_width > MAX_ACC_WIDTH:
            raise ConfigError(
                "max_k",
                f"max_k={self.max_k} needs a {self.acc_width}-bit accumulator with these "
                f"widths; at most {MAX_ACC_WIDTH} bits are supported, so max_k must be in "
                f"[{self.rows}, {self._max_k_for_width(MAX_ACC_WIDTH)}]")
        if self.name is not None and not (self.name.isidentifier() and self.name.isascii()):
            raise ConfigError("name", f"name must be a Verilog identifier, not {self.name!r}")

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
        return int_range(self.weight_bits)

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

        The handshake edge (ending cycle ``t``) registers the input, the next ``rows`` edges
        register each row's partial sums, one more registers their sum with the incoming
        partial sum: an input accepted in cycle ``t`` is on the output in cycle ``t + rows + 2``.
        """
        return self.rows + 2

    @property
    def top_name(self):
        if self.name is not None:
            return self.name
        return (f"mulfree_array_{self.pe}_{self.rows}x{self.cols}"
                f"_a{self.act_bits}w{self.weight_bits}k{self.max_k}")

    def params(self):
        """The user-set parameters, as a JSON-ready dict."""
        return {k: v for k, v in asdict(self).items() if k != "name"}
