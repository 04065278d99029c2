"""Configuration of the address-shift pointer unit: the single source of its numbers.

One frozen :class:`ShiftUnitConfig` describes a generated
:class:`~mulfree.rtl.shift_unit.ShiftUnit`:
the largest feature map it serves, the buffer's capacity, the activation width and the shift
ranges. The geometry of the map actually read (``C x H x W``, at most the maxima), its base
address and the shift mode are fields of each read command, so one unit serves layers of
different shapes. The field layouts of every stream live here too, so the RTL, the manifest,
the host's packers and the testbench read them from one place.

The semantics are written down in ``docs/numerics.md`` (section "Address-shift unit") and the
interface in ``docs/shift_unit.md``.
"""

from dataclasses import dataclass, field, asdict


from .config import ConfigError, check_name, signed_width, unsigned_width


__all__ = [
    "ShiftUnitConfig", "MODES", "ORDERS", "SHIFT_LIMITS", "MAX_OFFSET", "MAX_CAPACITY",
]


#: Read modes, by name, with their code in the command's ``mode`` field.
MODES = {"plain": 0, "shift": 1, "address": 2, "channel": 3, "table": 4}

#: Read orders, by name, with their code in the command's ``order`` field: ``channel_major``
#: streams ``(c, y, x)``, x fastest (a whole channel after another); ``pixel_major`` streams
#: ``(y, x, c)``, c fastest (every channel of a pixel, then the next pixel), which is what a
#: 1x1 convolution on the PE array consumes.
ORDERS = {"channel_major": 0, "pixel_major": 1}

#: Allowed ranges of the integer parameters, inclusive, shared with the CLI's help text.
SHIFT_LIMITS = {
    "channels": (1, 4096),
    "height": (1, 1024),
    "width": (1, 1024),
    "act_bits": (2, 16),
}
#: Largest spatial shift in any mode: ``dy * W`` is a shift-and-add of the bits of ``|dy|``,
#: one adder per bit, so the range is kept to four bits.
MAX_OFFSET = 15
#: Largest buffer, in words (4 Mi words of 16 bits = 64 Mb, over three ZC706s' worth of BRAM).
MAX_CAPACITY = 1 << 22


def _check_int(param, value, lo, hi, what="an integer"):
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(param, f"{param} must be {what} in [{lo}, {hi}], not {value!r}")


@dataclass(frozen=True)
class ShiftUnitConfig:
    """A feature-map buffer whose read side shifts by address arithmetic.

    Parameters
    ----------
    channels, height, width : int
        The largest map a read command may ask for: ``C <= channels``, ``H <= height``,
        ``W <= width``.
    act_bits : int
        Width of a stored activation (two's complement), 2..16.
    depth : int or None
        Words of the buffer, at least ``channels * height * width`` (the default), so that
        several maps (e.g. the two halves of a shortcut concatenation, or a map and the next
        layer's) can live in it at once.
    kernel : int
        Largest ``k`` of the Shift (CVPR 2018) mode, odd; a command asks for ``k = 2h + 1``
        with ``h <= (kernel - 1) / 2``.
    max_shift : int
        Range ``R`` of the shift table: every entry ``(dy, dx)`` lies in ``[-R, R]^2``.
    name : str or None
        Top module name; derived from the parameters when ``None``.
    """

    channels: int = 16
    height: int = 8
    width: int = 8
    act_bits: int = 8
    depth: int | None = None
    kernel: int = 3
    max_shift: int = 1
    name: str | None = field(default=None, compare=False)

    def __post_init__(self):
        for param in ("channels", "height", "width", "act_bits"):
            _check_int(param, getattr(self, param), *SHIFT_LIMITS[param])
        size = self.channels * self.height * self.width
        if size > MAX_CAPACITY:
            raise ConfigError(
                "channels", f"channels * height * width = {self.channels} * {self.height} * "
                            f"{self.width} = {size} words must be at most {MAX_CAPACITY}")
        if self.depth is None:
            object.__setattr__(self, "depth", size)
        _check_int("depth", self.depth, size, MAX_CAPACITY,
                   "an integer (words; at least channels * height * width)")
        # A shift by max(height, width) already moves every element out of any map; a larger
        # one cannot mean anything more, and the address arithmetic is sized for this bound.
        limit = min(MAX_OFFSET, max(self.height, self.width))
        _check_int("kernel", self.kernel, 1, 2 * limit + 1,
                   f"an odd integer (radius (kernel-1)/2 <= min({MAX_OFFSET}, max(height, "
                   f"width)) = {limit})")
        if self.kernel % 2 == 0:
            raise ConfigError("kernel", f"kernel must be an odd integer in [1, {2 * limit + 1}]"
                                        f", not {self.kernel!r}")
        _check_int("max_shift", self.max_shift, 0, limit,
                   f"an integer (at most min({MAX_OFFSET}, max(height, width)) = {limit})")
        if self.name is not None:
            check_name(self.name)

    # Geometry ----------------------------------------------------------------------------

    @property
    def map_words(self):
        """Words of the largest map, ``channels * height * width``."""
        return self.channels * self.height * self.width

    @property
    def act_range(self):
        return -(1 << (self.act_bits - 1)), (1 << (self.act_bits - 1)) - 1

    @property
    def max_radius(self):
        """Largest radius ``h`` of the Shift mode's ``(2h + 1)^2`` directions."""
        return (self.kernel - 1) // 2

    @property
    def offset_range(self):
        """Largest ``|dy|`` or ``|dx|`` of any mode (AddressNet needs 1)."""
        return max(self.max_radius, self.max_shift, 1)

    # Widths --------------------------------------------------------------------------------

    @property
    def addr_width(self):
        """Width of a buffer address, ``0 .. depth - 1``."""
        return unsigned_width(self.depth - 1)

    @property
    def count_width(self):
        """Width of a command's ``channels``, ``rotate`` and ``group`` fields, ``0..channels``."""
        return unsigned_width(self.channels)

    @property
    def height_width(self):
        return unsigned_width(self.height)

    @property
    def width_width(self):
        return unsigned_width(self.width)

    @property
    def radius_width(self):
        return unsigned_width(self.max_radius)

    @property
    def offset_width(self):
        """Width of a signed spatial offset inside the unit, ``[-offset_range, offset_range]``."""
        return signed_width(-self.offset_range, self.offset_range)

    @property
    def table_entry_width(self):
        """Width of the table write's ``dy`` and ``dx`` fields.

        One bit wider than ``[-max_shift, max_shift]`` needs, so that values just outside the
        range reach the unit (which refuses them) instead of wrapping in the host's packer.
        """
        return signed_width(-self.max_shift, self.max_shift) + 1

    @property
    def table_channel_width(self):
        """Width of the table write's ``channel`` field; ``channels`` itself is representable."""
        return unsigned_width(self.channels)

    # Timing --------------------------------------------------------------------------------

    @property
    def rotate_width(self):
        """Bits of a rotation ``r mod C``, in ``[0, channels - 1]``."""
        return unsigned_width(self.channels - 1)

    @property
    def prep_cycles(self):
        """Cycles of the serial shift-and-add that forms ``base + (r mod C) * H * W``.

        One per bit of ``W`` (``H * W``), then one per bit of ``r mod C``; the same for every
        command and mode, and overlapped with the previous command's read.
        """
        return self.width_width + self.rotate_width

    @property
    def read_latency(self):
        """Cycles from a command's handshake to its first element on the output, idle unit.

        The handshake edge (ending cycle ``t``) registers the command; ``prep_cycles`` edges
        form the start pointer, the last of them marking it done; one edge hands it to the
        address generator; one edge reads the memory: the first element is valid in cycle
        ``t + prep_cycles + 3``.
        """
        return self.prep_cycles + 3

    @property
    def top_name(self):
        if self.name is not None:
            return self.name
        name = f"mulfree_shiftunit_c{self.channels}h{self.height}w{self.width}_a{self.act_bits}"
        if self.depth != self.map_words:
            name += f"_d{self.depth}"
        if (self.kernel, self.max_shift) != (3, 1):
            name += f"_k{self.kernel}s{self.max_shift}"
        return name

    def params(self):
        """The user-set parameters (``depth`` resolved), as a JSON-ready dict."""
        return {k: v for k, v in asdict(self).items() if k != "name"}
