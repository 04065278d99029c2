"""cocotb scenarios that check the protocol checkers themselves, on a small Verilog DUT.

The DUT (``tests/test_checkers.py`` writes it) has a stream master ``m_axis`` sending packets
of :data:`PACKET` beats and an AXI4-Lite slave ``s_axil`` with one register. Its ``mode``
input picks a protocol bug (:data:`MODES`); mode 0 is correct. Each scenario drives one mode
with stalls, and must fail through the checker, with the checker's one-line message, when the
mode is a bug; ``correct_*`` must pass.
"""

import itertools

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge, SimTimeoutError, with_timeout
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from .checkers import AxiLiteChecker, StreamChecker


__all__ = ["MODES", "PACKET"]

#: Beats per packet of the DUT's stream.
PACKET = 3

#: The DUT's modes: the misbehaviour each one adds.
MODES = {
    "correct": 0,
    "payload_change": 1,        # tdata counts up while valid is high and ready low
    "early_last": 2,            # tlast on the second beat of each packet
    "valid_drop": 3,            # valid falls while stalled
    "missing_last": 4,          # no tlast at all
    "drop_b": 5,                # every second write gets no B
    "b_before_w": 6,            # B after AW alone, before W is accepted
    "rdata_change": 7,          # rdata counts up while R is stalled
    "double_b": 8,              # the first write gets two B
}


async def _start(dut, mode):
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.mode.value = MODES[mode]
    dut.m_axis__tready.value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0


async def _stream(dut, mode):
    """Receive 8 packets with ``tready`` low two cycles in five; check them."""
    await _start(dut, mode)
    check = StreamChecker(dut.clk, dut.rst, dut.m_axis__tvalid, dut.m_axis__tready,
                          dut.m_axis__tdata, dut.m_axis__tlast, name="m_axis",
                          last=dut.m_axis__tlast, packets=lambda index: PACKET)
    ready = itertools.cycle([1, 0, 1, 1, 0])
    for _ in range(8 * PACKET * 3):
        await RisingEdge(dut.clk)
        dut.m_axis__tready.value = next(ready)
    check.check()
    assert check.handshakes >= 8 * PACKET, f"only {check.handshakes} beats"
    beats = [b[0] for b in check.beats]
    assert beats == list(range(len(beats))), "beats lost or repeated"


async def _axil(dut, mode):
    """Writes then reads of the register, B and R stalled; check every answer."""
    await _start(dut, mode)
    master = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__"),
                           dut.clk, dut.rst)
    check = AxiLiteChecker(dut.clk, dut.rst, dut, "s_axil")
    master.write_if.b_channel.set_pause_generator(itertools.cycle([1, 1, 1, 0]))
    master.read_if.r_channel.set_pause_generator(itertools.cycle([1, 1, 0]))
    try:
        for value in (0x11, 0x22, 0x33):
            tasks = [cocotb.start_soon(master.write(0, bytes([value, 0, 0, 0])))
                     for _ in range(2)]
            for task in tasks:
                await with_timeout(task, 2000, "ns")
            got = await with_timeout(master.read(0, 4), 2000, "ns")
            assert got.data[0] == value, f"read {got.data[0]:#x}, wrote {value:#x}"
    except SimTimeoutError:
        pass                    # a lost response: the checker says which
    check.check(idle=True)
    assert [w[1] for w in check.writes] == [v for v in (0x11, 0x22, 0x33) for _ in range(2)]
    assert all(w[3] == 0 for w in check.writes), check.writes


@cocotb.test()
async def correct_stream(dut):
    await _stream(dut, "correct")


@cocotb.test()
async def correct_axil(dut):
    await _axil(dut, "correct")


@cocotb.test()
async def payload_change(dut):
    await _stream(dut, "payload_change")


@cocotb.test()
async def early_last(dut):
    await _stream(dut, "early_last")


@cocotb.test()
async def valid_drop(dut):
    await _stream(dut, "valid_drop")


@cocotb.test()
async def missing_last(dut):
    await _stream(dut, "missing_last")


@cocotb.test()
async def drop_b(dut):
    await _axil(dut, "drop_b")


@cocotb.test()
async def b_before_w(dut):
    await _axil(dut, "b_before_w")


@cocotb.test()
async def rdata_change(dut):
    await _axil(dut, "rdata_change")


@cocotb.test()
async def double_b(dut):
    await _axil(dut, "double_b")
