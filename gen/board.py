"""Zynq-7000 boards the build flow targets: Amaranth platforms plus what Vivado and Linux need.

Each board is an Amaranth :class:`~amaranth.vendor.XilinxPlatform` in the style of
amaranth-boards (``device``, ``package``, ``speed``, ``default_clk``, ``resources``), so a plain
PL design can be built for it with ``platform.build(top)``, plus the facts
:mod:`mulfree.flows.build` needs for a processing-system design: the Vivado part and board
part, the PS7 preset, which PS ports the accelerator uses, and the Linux side (device tree
labels, interrupt numbers, DMA buffer size). :data:`BOARDS` is the registry; :func:`get_board`
looks a board up by name.

The mulfree core is not clocked from a board pin: its clock and reset are the processing
system's ``FCLK_CLK0`` and ``FCLK_RESET0_N``, which exist only inside the Vivado block design
(the PS7 has no pins in the PL's package-pin sense). The platforms therefore describe the PL
pins (oscillator, LEDs, buttons, switches) for standalone PL designs, and the block design
(:mod:`mulfree.flows.build`) is what provides ``FCLK_CLK0`` / ``FCLK_RESET0_N`` to the core.

amaranth-boards 0.0.21 has no ZC706 file, so :class:`ZC706Platform` is written here; the Arty
Z7-20 reuses amaranth-boards' file through a thin subclass.
"""

import re
from dataclasses import dataclass, field

from amaranth.build import Attrs, Clock, DiffPairs, Resource
from amaranth.vendor import XilinxPlatform
from amaranth_boards.arty_z7 import ArtyZ720Platform as _ArtyZ720Platform
from amaranth_boards.resources import ButtonResources, LEDResources, SwitchResources


__all__ = ["ZC706Platform", "ArtyZ720Platform", "ZynqLinux", "Board", "BOARDS", "BoardError",
           "get_board", "PL_CLOCK", "PL_RESET", "irq_f2p_spi"]

#: The core's clock and reset in the block design: PS7 outputs, not package pins.
PL_CLOCK = "FCLK_CLK0"
PL_RESET = "FCLK_RESET0_N"


class BoardError(ValueError):
    """An unknown board or a bad board parameter; ``param`` names the parameter."""

    def __init__(self, param, message):
        super().__init__(message)
        self.param = param


class ZC706Platform(XilinxPlatform):
    """Xilinx ZC706 evaluation board (XC7Z045-2FFG900C).

    Pins and I/O standards follow the net names of the ZC706 user guide (UG954): SYSCLK_P/N,
    GPIO_LED_LEFT/CENTER/RIGHT, GPIO_LED_0, GPIO_SW_LEFT/CENTER/RIGHT, GPIO_DIP_SW0..3. UG954
    itself could not be read here; the pins were taken from two public ZC706 constraint files
    that use those net names (Analog Devices' ``projects/common/zc706/zc706_system_constr.xdc``
    for the GPIOs, a ZC706 MIG/user XDC for SYSCLK on H9/G9), which agree with each other.
    **Not checked on hardware.** Banks 9/10/11 at 2.5 V (LVCMOS25) and banks 33/34/35 at 1.5 V
    (LVCMOS15, the 200 MHz SYSCLK as LVDS) as those files say.

    The accelerator design does not use these pins: its clock and reset are the PS7's
    ``FCLK_CLK0`` / ``FCLK_RESET0_N`` inside the block design (see the module docstring).
    FMC, PMOD and the PL DDR3 are not described.
    """

    device      = "xc7z045"
    package     = "ffg900"
    speed       = "2"
    default_clk = "clk200"
    resources   = [
        # SYSCLK_P/N: 200 MHz LVDS oscillator (SiT9102) on bank 34.
        Resource("clk200", 0, DiffPairs("H9", "G9", dir="i"),
                 Clock(200e6), Attrs(IOSTANDARD="LVDS")),

        # User LEDs: 0 GPIO_LED_LEFT, 1 GPIO_LED_CENTER, 2 GPIO_LED_RIGHT, 3 GPIO_LED_0.
        *LEDResources(pins={0: "Y21", 2: "W21"}, attrs=Attrs(IOSTANDARD="LVCMOS25")),
        *LEDResources(pins={1: "G2", 3: "A17"}, attrs=Attrs(IOSTANDARD="LVCMOS15")),

        # Push buttons: 0 GPIO_SW_LEFT, 1 GPIO_SW_CENTER, 2 GPIO_SW_RIGHT (active high).
        *ButtonResources(pins={0: "AK25", 2: "R27"}, attrs=Attrs(IOSTANDARD="LVCMOS25")),
        *ButtonResources(pins={1: "K15"}, attrs=Attrs(IOSTANDARD="LVCMOS15")),

        # DIP switch SW12: GPIO_DIP_SW0..3.
        *SwitchResources(pins="AB17 AC16 AC17 AJ13", attrs=Attrs(IOSTANDARD="LVCMOS25")),
    ]
    connectors  = []


class ArtyZ720Platform(_ArtyZ720Platform):
    """Digilent Arty Z7-20 (XC7Z020-1CLG400C): amaranth-boards' platform, unchanged pins.

    The build flow's additions (Vivado part, PS7 preset, Linux side) live in its
    :data:`BOARDS` entry; this subclass only names the board in mulfree's registry.
    """


@dataclass(frozen=True)
class ZynqLinux:
    """What the Linux side of a Zynq-7000 board provides to the device tree overlay.

    The defaults are those of the Xilinx kernel's ``zynq-7000.dtsi`` (and of PetaLinux-built
    base device trees, compiled with ``-@`` so overlays can refer to their labels).

    Parameters
    ----------
    fpga_region : str
        Label of the full-reconfiguration FPGA region (its FPGA manager is the devcfg/PCAP).
    bus : str
        Label of the AXI bus the PL's peripherals hang off.
    intc : str
        Label of the GIC.
    clkc : str
        Label of the clock controller.
    fclk0_clock : int
        Index of ``fclk0`` in ``clkc``'s clock outputs (Linux's zynq-7000 clock binding).
    udmabuf_size : int
        Bytes of the u-dma-buf DMA buffer the overlay asks for (must fit the CMA area).
    console : str
        Where the board's Linux console is, for the README.
    """

    fpga_region: str = "fpga_full"
    bus: str = "amba"
    intc: str = "intc"
    clkc: str = "clkc"
    fclk0_clock: int = 15
    udmabuf_size: int = 16 << 20
    console: str = "the USB-UART (PS UART1), 115200 baud"

    def __post_init__(self):
        for name in ("fpga_region", "bus", "intc", "clkc"):
            _match(name, _LABEL, getattr(self, name), "a device tree label (letters, digits, "
                                                      "_; not starting with a digit)")
        _int("fclk0_clock", self.fclk0_clock, 0, 63)
        _int("udmabuf_size", self.udmabuf_size, 1 << 12, 1 << 30)
        if self.udmabuf_size % (1 << 12):
            raise BoardError("udmabuf_size", f"udmabuf_size must be a multiple of the page "
                                             f"size 4096, not {self.udmabuf_size}")
        _text("console", self.console)


# Allow-lists for the registry's text. Board fields are written into Tcl (block_design.tcl),
# a device tree source (mulfree.dtso), a Makefile and a README; a misspelt entry must fail
# here, when the board is defined, instead of producing a script that means something else.
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_BOARD_NAME = re.compile(r"[a-z0-9][a-z0-9_]{0,31}")
_BOARD_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:*-]{0,127}")
_PART_FIELD = re.compile(r"[a-z0-9]{1,16}")
_PCW_KEY = re.compile(r"PCW_[A-Z0-9_]{1,60}")
_PCW_VALUE = re.compile(r"[A-Za-z0-9_. -]{1,64}")
_PORT = {"gp_port": re.compile(r"M_AXI_GP[01]"), "hp_port": re.compile(r"S_AXI_HP[0-3]"),
         "hp_segment": re.compile(r"HP[0-3]_DDR_[A-Z]{1,16}")}


def _text(param, value, limit=120):
    """Refuse a free-text field with control characters (newlines would start new lines of
    the generated files' comments) or longer than ``limit``."""
    if not isinstance(value, str) or not value or len(value) > limit \
            or not value.isprintable():
        raise BoardError(param, f"{param} must be 1..{limit} printable characters, not "
                                f"{value!r}")


def _match(param, pattern, value, allowed):
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise BoardError(param, f"{param} must be {allowed}, not {value!r}")


def _int(param, value, lo, hi):
    if type(value) is not int or not lo <= value <= hi:
        raise BoardError(param, f"{param} must be an integer in [{lo}, {hi}], not {value!r}")


def irq_f2p_spi(index):
    """The GIC shared peripheral interrupt (device tree ``<0 N 4>``) of ``IRQ_F2P[index]``.

    Zynq-7000 TRM (UG585), "Interrupts": IRQ_F2P[7:0] are interrupt IDs 61..68 and
    IRQ_F2P[15:8] are IDs 84..91; an SPI's number in the device tree is its ID minus 32.
    """
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 16:
        raise BoardError("index", f"index must be an integer in [0, 15] (IRQ_F2P has 16 "
                                  f"lines), not {index!r}")
    return (61 + index if index < 8 else 84 + index - 8) - 32


@dataclass(frozen=True)
class Board:
    """A board of the registry: its platform and what the build flow and Linux need.

    Parameters
    ----------
    name : str
        Registry key (``mulfree build --board NAME``).
    title : str
        Human-readable name.
    platform : type
        The Amaranth platform class; the Vivado part comes from its ``device``, ``package``
        and ``speed``.
    board_part : str
        Vivado board-file pattern (``get_board_parts``). When the installed Vivado has the
        board files, the block design applies the board's PS7 preset; otherwise it uses
        :attr:`ps7_preset`.
    ps7_preset : tuple of (str, str)
        PS7 ``CONFIG.*`` values used without board files: the PS reference clock and the DDR.
        A bitstream loaded from Linux does not reconfigure the PS (the boot loader already
        did), so these matter for an FSBL built from the XSA, not for the PL image.
    fclk0_mhz : float
        Default ``FCLK_CLK0`` frequency, the core's clock.
    gp_port, hp_port, hp_segment : str
        The PS7 ports used: the general-purpose master for the registers, the high-performance
        slave for the DMA, and that port's DDR address segment.
    linux : ZynqLinux
        Device-tree labels and buffer size for the overlay.
    """

    name: str
    title: str
    platform: type
    board_part: str
    ps7_preset: tuple
    fclk0_mhz: float = 100.0
    gp_port: str = "M_AXI_GP0"
    hp_port: str = "S_AXI_HP0"
    hp_segment: str = "HP0_DDR_LOWOCM"
    linux: ZynqLinux = field(default_factory=ZynqLinux)

    def __post_init__(self):
        _match("name", _BOARD_NAME, self.name, "lowercase letters, digits and _")
        _text("title", self.title)
        for attr in ("device", "package", "speed"):
            _match(f"platform.{attr}", _PART_FIELD, getattr(self.platform, attr, None),
                   "lowercase letters and digits")
        _match("board_part", _BOARD_PART, self.board_part, "a Vivado board part pattern "
                                                           "(letters, digits, _ . : * -)")
        if not isinstance(self.ps7_preset, tuple):
            raise BoardError("ps7_preset", f"ps7_preset must be a tuple of (key, value) pairs, "
                                           f"not {self.ps7_preset!r}")
        for pair in self.ps7_preset:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise BoardError("ps7_preset", f"ps7_preset must hold (key, value) "
                                               f"pairs, not {pair!r}")
            _match("ps7_preset key", _PCW_KEY, pair[0], "PCW_ and capitals, digits, _")
            _match("ps7_preset value", _PCW_VALUE, pair[1], "letters, digits, space, _ . -")
        if type(self.fclk0_mhz) not in (int, float) or not 10 <= self.fclk0_mhz <= 250:
            raise BoardError("fclk0_mhz", f"fclk0_mhz must be a number in [10, 250], not "
                                          f"{self.fclk0_mhz!r}")
        for attr, pattern in _PORT.items():
            _match(attr, pattern, getattr(self, attr), f"like {pattern.pattern}")
        if not isinstance(self.linux, ZynqLinux):
            raise BoardError("linux", f"linux must be a ZynqLinux, not {self.linux!r}")

    @property
    def device(self):
        """The FPGA device, e.g. ``"xc7z045"`` (from the platform)."""
        return self.platform.device

    @property
    def part(self):
        """The Vivado part name, e.g. ``"xc7z045ffg900-2"``."""
        p = self.platform
        return f"{p.device}{p.package}-{p.speed}"

    def as_dict(self):
        """JSON-ready summary (for ``build.json``)."""
        return {"name": self.name, "title": self.title, "part": self.part,
                "board_part": self.board_part, "ps7_preset": dict(self.ps7_preset),
                "fclk0_mhz": self.fclk0_mhz, "gp_port": self.gp_port,
                "hp_port": self.hp_port, "hp_segment": self.hp_segment,
                "linux": {k: getattr(self.linux, k) for k in self.linux.__dataclass_fields__}}


BOARDS = {
    "zc706": Board(
        name="zc706", title="Xilinx ZC706 (XC7Z045-2FFG900)", platform=ZC706Platform,
        board_part="xilinx.com:zc706:part0:*",
        # UG954: PS_CLK 33.333 MHz; PS DDR3 1 GB, four MT41J256M8HX-15E on a 32-bit bus.
        ps7_preset=(("PCW_CRYSTAL_PERIPHERAL_FREQMHZ", "33.333333"),
                    ("PCW_UIPARAM_DDR_PARTNO", "MT41J256M8 HX-15E"),
                    ("PCW_UIPARAM_DDR_BUS_WIDTH", "32 Bit")),
        linux=ZynqLinux(udmabuf_size=64 << 20)),
    "arty_z7_20": Board(
        name="arty_z7_20", title="Digilent Arty Z7-20 (XC7Z020-1CLG400)",
        platform=ArtyZ720Platform,
        board_part="digilentinc.com:arty-z7-20:part0:*",
        # Digilent's reference manual: PS_CLK 50 MHz; 512 MB DDR3L (MT41K256M16) on 16 bits.
        ps7_preset=(("PCW_CRYSTAL_PERIPHERAL_FREQMHZ", "50"),
                    ("PCW_UIPARAM_DDR_PARTNO", "MT41K256M16 RE-125"),
                    ("PCW_UIPARAM_DDR_BUS_WIDTH", "16 Bit")),
        linux=ZynqLinux(udmabuf_size=16 << 20)),
}


def get_board(name):
    """The :class:`Board` called ``name``.

    Raises
    ------
    BoardError
        If there is none; the message lists the known boards.
    """
    try:
        return BOARDS[name]
    except (KeyError, TypeError):
        raise BoardError("board", f"board must be one of {', '.join(sorted(BOARDS))}, "
                                  f"not {name!r}") from None
