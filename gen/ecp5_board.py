"""Lattice ECP5 boards a core can be built for with open tools, and the standalone top built.

A board here is an amaranth-boards platform with an LFE5*-85F (:data:`ECP5_BOARDS`). Unlike the
Zynq boards of :mod:`mulfree.gen.board`, no processor drives the core's AXI4-Lite registers and
AXI4-Stream ports, and the core has more ports than a package has pins. The bitstream therefore
holds :class:`SelfTestTop`: the core with every input driven on chip by a pseudo-random bit
stream (a 31-bit LFSR shifted through a register as wide as the core's inputs) and every output
bit XOR-reduced into a register on a board LED, so that synthesis keeps the whole core. It is a
place-and-route and bitstream vehicle (the core's real paths, clocked by the board's
oscillator), not a functional test: the random register writes run random layers.
"""

from dataclasses import dataclass

from amaranth.hdl import Cat, ClockDomain, ClockSignal, Elaboratable, Module, Signal
from amaranth.lib import wiring
from amaranth_boards.ecp5_5g_evn import ECP55GEVNPlatform
from amaranth_boards.ulx3s import ULX3S_85F_Platform

from ..rtl.core import Core


__all__ = ["Ecp5Board", "ECP5_BOARDS", "is_ecp5_board", "get_ecp5_board", "SelfTestTop",
           "LFSR_TAPS"]


@dataclass(frozen=True)
class Ecp5Board:
    """An ECP5 board of the registry.

    Parameters
    ----------
    name : str
        Registry key (``mulfree build --board NAME``).
    title : str
        Human-readable name.
    platform : type
        The amaranth-boards platform class (device, package, speed grade, clock, LEDs).
    """

    name: str
    title: str
    platform: type

    @property
    def device(self):
        """The device with speed grade and package, e.g. ``"LFE5UM5G-85F-8BG381"``."""
        p = self.platform
        return f"{p.device}-{p.speed}{p.package}"

    @property
    def clock_hz(self):
        """The frequency of the board's default clock (the oscillator the core runs on)."""
        platform = self.platform()
        return platform.lookup(platform.default_clk).clock.frequency

    def as_dict(self):
        """JSON-ready summary (for the build record)."""
        return {"name": self.name, "title": self.title, "device": self.device,
                "clock_mhz": self.clock_hz / 1e6}


#: The ECP5 boards with an 85F (the device of ``mulfree bench pnr``).
ECP5_BOARDS = {
    "ecp5_5g_evn": Ecp5Board("ecp5_5g_evn", "Lattice ECP5-5G Evaluation Board "
                                            "(LFE5UM5G-85F-8BG381, 12 MHz)", ECP55GEVNPlatform),
    "ulx3s_85f": Ecp5Board("ulx3s_85f", "Radiona ULX3S 85F (LFE5U-85F-6BG381, 25 MHz)",
                           ULX3S_85F_Platform),
}


def is_ecp5_board(name):
    """Whether ``name`` is a board of :data:`ECP5_BOARDS`."""
    return isinstance(name, str) and name in ECP5_BOARDS


def get_ecp5_board(name):
    """The :class:`Ecp5Board` called ``name`` (``KeyError`` if none)."""
    return ECP5_BOARDS[name]


#: Feedback taps of the 31-bit Fibonacci LFSR (x^31 + x^28 + 1, maximal length).
LFSR_TAPS = (30, 27)


class SelfTestTop(Elaboratable):
    """The core with on-chip stimulus: see the module docstring.

    Parameters
    ----------
    cfg : CoreConfig
        The core.
    column_module : sequence
        The PE column module names the core instantiates
        (:func:`mulfree.gen.core_manifest.column_module_names`); their RTLIL is added to the
        build as separate files.
    """

    def __init__(self, cfg, column_module):
        self.cfg = cfg
        self.column_module = column_module

    def elaborate(self, platform):
        m = Module()
        # The core's domain on the board's oscillator, held in reset for 255 cycles after
        # configuration (and while the board's reset button, if any, is pressed).
        m.domains.sync = sync = ClockDomain("sync")
        m.domains.por = ClockDomain("por", reset_less=True)
        if platform is not None:
            clk = platform.request(platform.default_clk, 0).i
            m.d.comb += [sync.clk.eq(clk), ClockSignal("por").eq(clk)]
        por = Signal(8)
        with m.If(~por.all()):
            m.d.por += por.eq(por + 1)
        button = Signal()
        if platform is not None and platform.default_rst is not None:
            m.d.comb += button.eq(platform.request(platform.default_rst, 0).i)
        m.d.comb += sync.rst.eq(~por.all() | button)
        m.submodules.core = core = Core(self.cfg, column_module=self.column_module)
        inputs, outputs = [], []
        for _, member, value in core.signature.flatten(core):
            (inputs if member.flow == wiring.In else outputs).append(value)
        width = sum(len(v) for v in inputs)

        lfsr = Signal(31, init=1)
        m.d.sync += lfsr.eq(Cat(lfsr[LFSR_TAPS[0]] ^ lfsr[LFSR_TAPS[1]], lfsr[:-1]))
        stimulus = Signal(width)
        m.d.sync += stimulus.eq(Cat(lfsr[-1], stimulus[:-1]))
        m.d.comb += Cat(*inputs).eq(stimulus)

        signature = Signal()
        m.d.sync += signature.eq(Cat(*outputs).xor())
        heartbeat = Signal(24)
        m.d.sync += heartbeat.eq(heartbeat + 1)
        if platform is not None:
            m.d.comb += [platform.request("led", 0).o.eq(signature),
                         platform.request("led", 1).o.eq(heartbeat[-1])]
        return m
