"""The board registry and its Amaranth platforms (mulfree.gen.board)."""

import re

import pytest
from amaranth import Elaboratable, Module, Signal
from amaranth.lib import io

from mulfree.gen.board import (BOARDS, ArtyZ720Platform, BoardError, ZC706Platform, get_board,
                               irq_f2p_spi)


class Blinky(Elaboratable):
    """LEDs follow a counter, button 0 inverts them: uses clock, LEDs and a button."""

    def elaborate(self, platform):
        m = Module()
        count = Signal(24)
        m.d.sync += count.eq(count + 1)
        m.submodules.button = button = io.Buffer("i", platform.request("button", 0, dir="-"))
        for i in range(4):
            m.submodules[f"led{i}"] = led = io.Buffer("o", platform.request("led", i, dir="-"))
            m.d.comb += led.o.eq(count[-1] ^ button.i)
        return m


def test_registry_parts_and_devices():
    assert set(BOARDS) == {"zc706", "arty_z7_20"}
    assert BOARDS["zc706"].part == "xc7z045ffg900-2"
    assert BOARDS["arty_z7_20"].part == "xc7z020clg400-1"
    assert BOARDS["zc706"].platform is ZC706Platform
    assert BOARDS["arty_z7_20"].platform is ArtyZ720Platform
    for name, board in BOARDS.items():
        assert board.name == name and board.device == board.platform.device
        assert board.fclk0_mhz == 100 and board.gp_port == "M_AXI_GP0"
        assert board.hp_port == "S_AXI_HP0"
        preset = dict(board.ps7_preset)
        assert {"PCW_UIPARAM_DDR_PARTNO", "PCW_CRYSTAL_PERIPHERAL_FREQMHZ"} <= set(preset)


def test_unknown_board_lists_the_known_ones():
    with pytest.raises(BoardError, match=r"board must be one of arty_z7_20, zc706, not "
                                         r"'zedboard'") as info:
        get_board("zedboard")
    assert info.value.param == "board"


def test_zc706_resources():
    p = ZC706Platform()
    clk = p.lookup("clk200", 0)
    assert clk.clock.frequency == 200e6 and p.default_clk == "clk200"
    assert (clk.ios[0].p.names, clk.ios[0].n.names) == (["H9"], ["G9"])
    leds = [p.lookup("led", i).ios[0].names[0] for i in range(4)]
    assert leds == ["Y21", "G2", "W21", "A17"]
    buttons = [p.lookup("button", i).ios[0].names[0] for i in range(3)]
    assert buttons == ["AK25", "K15", "R27"]
    assert [p.lookup("switch", i).ios[0].names[0] for i in range(4)] == \
        ["AB17", "AC16", "AC17", "AJ13"]


@pytest.mark.parametrize("name, clock_pins, period", [
    ("zc706", ["H9", "G9"], 5.0),
    ("arty_z7_20", ["H16"], 8.0),
])
def test_platform_build_scripts(name, clock_pins, period):
    board = get_board(name)
    plan = board.platform().build(Blinky(), do_build=False)
    files = plan.files
    xdc = files["top.xdc"]
    tcl = files["top.tcl"]
    assert f"-part {board.part}" in tcl
    for pin in clock_pins:
        assert f"set_property LOC {pin} " in xdc
    assert re.search(rf"create_clock -name \S+ -period {period} ", xdc)
    assert len(re.findall(r"set_property LOC \S+ \[get_ports \"led_\d__io\"\]", xdc)) == 4


def test_irq_f2p_to_gic_spi():
    # UG585: IRQ_F2P[7:0] are IDs 61..68, [15:8] are 84..91; SPI = ID - 32.
    assert [irq_f2p_spi(i) for i in (0, 1, 2, 7, 8, 15)] == [29, 30, 31, 36, 52, 59]
    with pytest.raises(BoardError, match=r"index must be an integer in \[0, 15\]"):
        irq_f2p_spi(16)


def test_report_uses_the_registry():
    from mulfree.gen.devices import device_for
    assert device_for(board="zc706").name == "xc7z045"
    assert device_for(board="arty_z7_20").dsp == 220


# The registry's text is written into Tcl, a device tree source and a Makefile: allow-listed. --

def _board(**changes):
    import dataclasses
    return dataclasses.replace(BOARDS["zc706"], **changes)


def _linux(**changes):
    import dataclasses
    return dataclasses.replace(BOARDS["zc706"].linux, **changes)


class _BadPlatform(ZC706Platform):
    package = "ffg900; exit"


@pytest.mark.parametrize("make, param", [
    (lambda: _board(name="zc706; exec sh"), "name"),
    (lambda: _board(name="ZC706"), "name"),
    (lambda: _board(name=""), "name"),
    (lambda: _board(title="ZC706\nexec rm -rf /"), "title"),
    (lambda: _board(title="x" * 200), "title"),
    (lambda: _board(board_part="xilinx.com:zc706:part0:*] ; exec sh ;#"), "board_part"),
    (lambda: _board(board_part="-x"), "board_part"),
    (lambda: _board(ps7_preset=(("PCW_X", "1} ; exec sh ; {"),)), "ps7_preset value"),
    (lambda: _board(ps7_preset=(("PCW_X", "a\\"),)), "ps7_preset value"),
    (lambda: _board(ps7_preset=(("X [exec sh]", "1"),)), "ps7_preset key"),
    (lambda: _board(ps7_preset=(("PCW_X",),)), "ps7_preset"),
    (lambda: _board(ps7_preset=[("PCW_X", "1")]), "ps7_preset"),
    (lambda: _board(fclk0_mhz=float("nan")), "fclk0_mhz"),
    (lambda: _board(fclk0_mhz="100"), "fclk0_mhz"),
    (lambda: _board(fclk0_mhz=1000), "fclk0_mhz"),
    (lambda: _board(gp_port="M_AXI_GP0 ; exec sh"), "gp_port"),
    (lambda: _board(hp_port="S_AXI_HP9"), "hp_port"),
    (lambda: _board(hp_segment="HP0_DDR_LOWOCM]"), "hp_segment"),
    (lambda: _board(platform=_BadPlatform), "platform.package"),
    (lambda: _board(linux="amba"), "linux"),
    (lambda: _linux(fpga_region="fpga_full>; evil = <1"), "fpga_region"),
    (lambda: _linux(bus="amba\n"), "bus"),
    (lambda: _linux(intc="1intc"), "intc"),
    (lambda: _linux(clkc='clkc"'), "clkc"),
    (lambda: _linux(fclk0_clock=-1), "fclk0_clock"),
    (lambda: _linux(fclk0_clock="15"), "fclk0_clock"),
    (lambda: _linux(udmabuf_size=1 << 40), "udmabuf_size"),
    (lambda: _linux(udmabuf_size=4097), "udmabuf_size"),
    (lambda: _linux(udmabuf_size=True), "udmabuf_size"),
    (lambda: _linux(console="uart\x1b[2J"), "console"),
])
def test_board_fields_are_allow_listed(make, param):
    with pytest.raises(BoardError, match=re.escape(param) + " must") as info:
        make()
    assert info.value.param == param and "\n" not in str(info.value)


def test_registry_boards_pass_their_own_checks():
    import dataclasses
    for board in BOARDS.values():
        assert dataclasses.replace(board) == board
        assert dataclasses.replace(board.linux) == board.linux
