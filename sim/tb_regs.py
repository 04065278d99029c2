"""cocotb testbench of the core's register block on its generated Verilog.

The design is the register block alone (:func:`mulfree.gen.core_manifest.write_regs_design`):
its AXI4-Lite slave driven by cocotbext-axi's ``AxiLiteMaster`` (ports ``s_axil__*``, bound
with ``bus_separator="__"``), its core-side signals as top-level ports the testbench drives.
Every address, reset value, constant and error code comes from the manifest
(``MULFREE_MANIFEST``), as a host driver would take them.

An :class:`~mulfree.sim.checkers.AxiLiteChecker` watches the bus on every cycle of every
scenario (built in the constructor): channel stability, one response per transaction and
only after it; each scenario ends with :meth:`TB.check_protocol`.
"""

import itertools
import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, SimTimeoutError, with_timeout
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from .checkers import AxiLiteChecker


__all__ = ["TB"]

OKAY, SLVERR = 0, 2


class TB:
    """Clock, reset, the AXI4-Lite master and the manifest's register map."""

    def __init__(self, dut, master=True):
        self.dut = dut
        self.manifest = json.loads(open(os.environ["MULFREE_MANIFEST"]).read())
        section = self.manifest["registers"]
        self.regs = {r["name"]: r for r in section["registers"]}
        self.errors = {name: e["code"] for name, e in section["reg_errors"].items()}
        # Without the master, the scenario drives the AXI ports itself.
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__"),
                                  dut.clk, dut.rst) if master else None
        self.axil_check = AxiLiteChecker(dut.clk, dut.rst, dut, "s_axil")
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    def check_protocol(self):
        """Raise the first bus-rule violation; fail if a transaction is left unanswered."""
        idle = self.axil is None or (self.axil.write_if.idle() and self.axil.read_if.idle())
        self.axil_check.check(idle=idle)

    def addr(self, name):
        return self.regs[name]["offset"]

    def bit(self, reg, field):
        return next(f for f in self.regs[reg]["fields"] if f["name"] == field)["bits"][1]

    async def reset(self):
        for port in ("status_idle", "status_busy", "status_done", "error_core_code",
                     "busy_cycles_inc", "stall_in_cycles_inc", "stall_out_cycles_inc",
                     "terms_inc"):
            getattr(self.dut, port).value = 0
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    async def write(self, name_or_addr, value, nbytes=4):
        addr = self.addr(name_or_addr) if isinstance(name_or_addr, str) else name_or_addr
        resp = await self.axil.write(addr, int(value).to_bytes(4, "little")[:nbytes])
        return int(resp.resp)

    async def read(self, name_or_addr):
        addr = self.addr(name_or_addr) if isinstance(name_or_addr, str) else name_or_addr
        resp = await self.axil.read(addr, 4)
        return int.from_bytes(resp.data, "little"), int(resp.resp)

    async def read_counter(self, name):
        lo, r1 = await self.read(f"{name}_LO")
        hi, r2 = await self.read(f"{name}_HI")
        assert r1 == r2 == OKAY
        return hi << 32 | lo


def _pause(pattern):
    return itertools.cycle(pattern)


@cocotb.test()
async def identity(dut):
    """Every register reads its documented reset value; constants equal the config."""
    tb = TB(dut)
    await tb.reset()
    for name, reg in tb.regs.items():
        got, resp = await tb.read(name)
        assert resp == OKAY, f"{name}: resp {resp}"
        assert got == reg["reset"], f"{name}@{reg['offset']:#x}: got {got:#x}, " \
                                    f"want {reg['reset']:#x}"
    p = tb.manifest["parameters"]
    arr, _ = await tb.read("ARRAY")
    assert (arr & 0xFFFF, arr >> 16) == (p["engine"]["rows"], p["engine"]["cols"])
    assert (await tb.read("STREAM_WIDTH"))[0] == p["stream_width"]
    assert (await tb.read("ID"))[0] == 0x4D554C46
    tb.check_protocol()


@cocotb.test()
async def write_read_orders(dut):
    """SCRATCH write/read back with AW before W, W before AW, together; B/R backpressure."""
    tb = TB(dut)
    await tb.reset()
    wif, rif = tb.axil.write_if, tb.axil.read_if
    patterns = [([0], [0]), ([1, 1, 1, 0], [0]), ([0], [1, 1, 1, 0]), ([1, 0], [0, 1])]
    value = 0x1234_5678
    for (aw_pat, w_pat), (b_pat, r_pat) in itertools.product(
            patterns, [([0], [0]), ([1, 1, 0], [1, 1, 1, 0])]):
        wif.aw_channel.set_pause_generator(_pause(aw_pat))
        wif.w_channel.set_pause_generator(_pause(w_pat))
        wif.b_channel.set_pause_generator(_pause(b_pat))
        rif.r_channel.set_pause_generator(_pause(r_pat))
        rif.ar_channel.set_pause_generator(_pause(w_pat))
        value = (value * 1103515245 + 12345) & 0xFFFF_FFFF
        assert await tb.write("SCRATCH", value) == OKAY
        got = await tb.read("SCRATCH")
        assert got == (value, OKAY), f"AW {aw_pat} W {w_pat} B {b_pat}: got {got[0]:#x}, " \
                                     f"want {value:#x}"
        assert int(dut.scratch_value.value) == value
    # Back-to-back writes and reads queued at once.
    values = [(i * 0x0101_0101) & 0xFFFF_FFFF for i in range(8)]
    for v in values:
        await tb.write("SCRATCH", v)
        assert (await tb.read("SCRATCH"))[0] == v
    for ch in (wif.aw_channel, wif.w_channel, wif.b_channel, rif.ar_channel, rif.r_channel):
        ch.clear_pause_generator()
    tb.check_protocol()


@cocotb.test()
async def manual_backpressure(dut):
    """bready/rready held low by hand: the response waits, and the slave accepts nothing new."""
    tb = TB(dut, master=False)
    for port in ("awvalid", "wvalid", "arvalid", "bready", "rready", "awprot", "arprot"):
        getattr(dut, f"s_axil__{port}").value = 0
    await tb.reset()
    dut.s_axil__bready.value = 0
    dut.s_axil__awaddr.value = tb.addr("SCRATCH")
    dut.s_axil__awvalid.value = 1
    dut.s_axil__wdata.value = 0xCAFE
    dut.s_axil__wstrb.value = 0xF
    dut.s_axil__wvalid.value = 1
    await RisingEdge(dut.clk)
    dut.s_axil__awvalid.value = 0
    dut.s_axil__wvalid.value = 0
    for _ in range(10):
        await RisingEdge(dut.clk)
    assert int(dut.s_axil__bvalid.value) == 1
    assert int(dut.scratch_value.value) == 0xCAFE
    dut.s_axil__bready.value = 1
    await RisingEdge(dut.clk)
    dut.s_axil__bready.value = 0
    await RisingEdge(dut.clk)
    assert int(dut.s_axil__bvalid.value) == 0
    dut.s_axil__rready.value = 0
    dut.s_axil__araddr.value = tb.addr("SCRATCH")
    dut.s_axil__arvalid.value = 1
    await RisingEdge(dut.clk)
    dut.s_axil__arvalid.value = 0
    for _ in range(10):
        await RisingEdge(dut.clk)
        assert int(dut.s_axil__rvalid.value) == 1 and int(dut.s_axil__arready.value) == 0
    assert int(dut.s_axil__rdata.value) == 0xCAFE
    dut.s_axil__rready.value = 1
    await RisingEdge(dut.clk)
    dut.s_axil__rready.value = 0
    await RisingEdge(dut.clk)
    assert int(dut.s_axil__rvalid.value) == 0
    tb.check_protocol()


@cocotb.test()
async def bad_writes(dut):
    """Out-of-range writes: SLVERR, nothing changes, the first error is recorded."""
    tb = TB(dut)
    await tb.reset()
    await tb.write("SCRATCH", 77)
    err_bit = 1 << tb.bit("STATUS", "reg_error")
    size = tb.manifest["registers"]["size"]
    cases = [("UNMAPPED", size, 1, 4), ("UNMAPPED", 0x3C, 5, 4), ("STROBE", "SCRATCH", 1, 2),
             ("READ_ONLY", "ID", 0, 4), ("READ_ONLY", "TERMS_LO", 0, 4),
             ("RESERVED", "CONTROL", 1 << 31, 4)]
    for code, where, value, nbytes in cases:
        addr = tb.addr(where) if isinstance(where, str) else where
        assert await tb.write(addr, value, nbytes) == SLVERR, f"{code} at {addr:#x}"
        status, _ = await tb.read("STATUS")
        assert status & err_bit, f"{code}: STATUS.reg_error not set ({status:#x})"
        err, _ = await tb.read("ERROR")
        assert err >> 8 == tb.errors[code], f"{code}: ERROR.reg_code = {err >> 8}"
        assert (await tb.read("ERROR_ADDR"))[0] == addr
        assert await tb.write("STATUS", err_bit) == OKAY
        assert (await tb.read("STATUS"))[0] & err_bit == 0
    assert (await tb.read("SCRATCH"))[0] == 77
    assert (await tb.read("ID"))[0] == tb.regs["ID"]["reset"]
    # An unmapped read answers SLVERR with 0; status stays readable afterwards.
    assert await tb.read(size) == (0, SLVERR)
    assert (await tb.read("STATUS"))[1] == OKAY
    tb.check_protocol()


@cocotb.test()
async def soft_reset_and_start(dut):
    """Start and soft reset pulse one cycle each; soft reset works while busy, start does not."""
    tb = TB(dut)
    await tb.reset()
    pulses = {"start": 0, "soft_reset": 0}

    async def watch():
        while True:
            await RisingEdge(dut.clk)
            pulses["start"] += int(dut.control_start.value)
            pulses["soft_reset"] += int(dut.control_soft_reset.value)
    cocotb.start_soon(watch())
    start = 1 << tb.bit("CONTROL", "start")
    soft = 1 << tb.bit("CONTROL", "soft_reset")
    irq_en = 1 << tb.bit("CONTROL", "irq_enable")
    assert await tb.write("CONTROL", start | irq_en) == OKAY
    await ClockCycles(dut.clk, 3)
    assert pulses == {"start": 1, "soft_reset": 0}
    dut.status_busy.value = 1
    assert await tb.write("CONTROL", start | irq_en) == SLVERR
    assert (await tb.read("ERROR"))[0] >> 8 == tb.errors["BUSY"]
    # done -> irq; status readable while busy.
    dut.status_done.value = 1
    await RisingEdge(dut.clk)
    dut.status_done.value = 0
    await ClockCycles(dut.clk, 2)
    assert int(dut.irq.value) == 1
    status, resp = await tb.read("STATUS")
    assert resp == OKAY and status >> tb.bit("STATUS", "busy") & 1
    dut.terms_inc.value = 1
    assert await tb.write("CONTROL", soft | irq_en) == OKAY
    dut.terms_inc.value = 0
    await ClockCycles(dut.clk, 3)
    assert pulses == {"start": 1, "soft_reset": 1}
    assert int(dut.irq.value) == 0
    assert int(dut.control_irq_enable.value) == 1
    status, _ = await tb.read("STATUS")
    assert status & ((1 << tb.bit("STATUS", "done")) | (1 << tb.bit("STATUS", "reg_error"))) \
        == 0, f"STATUS {status:#x} after soft reset"
    assert await tb.read_counter("TERMS") <= 3
    tb.check_protocol()


@cocotb.test()
async def counters(dut):
    """Exact counts, and the 64-bit read rule: _HI returns what reading _LO latched."""
    tb = TB(dut)
    await tb.reset()
    for port, name, n in [("busy_cycles_inc", "BUSY_CYCLES", 37),
                          ("stall_in_cycles_inc", "STALL_IN_CYCLES", 5),
                          ("stall_out_cycles_inc", "STALL_OUT_CYCLES", 11)]:
        getattr(dut, port).value = 1
        await ClockCycles(dut.clk, n)
        getattr(dut, port).value = 0
        assert await tb.read_counter(name) == n, name
    inc = (1 << len(dut.terms_inc)) - 1
    dut.terms_inc.value = inc
    await ClockCycles(dut.clk, 4)
    lo, _ = await tb.read("TERMS_LO")
    # Keep counting long enough for the live counter to carry into its high half, if this
    # design's increment is wide enough to get there in a few thousand cycles.
    wait = min((1 << 32) // inc + 50, 3000)
    await ClockCycles(dut.clk, wait)
    hi, _ = await tb.read("TERMS_HI")
    assert hi == 0, f"TERMS_HI = {hi}: not the half latched with TERMS_LO = {lo:#x}"
    snap = await tb.read_counter("TERMS")
    assert snap % inc == 0 and snap > lo, f"torn snapshot {snap:#x}"
    if inc * wait >= 1 << 32:
        assert snap >> 32 >= 1, f"expected a carry into the high half, got {snap:#x}"
    dut.terms_inc.value = 0
    await ClockCycles(dut.clk, 2)
    final = await tb.read_counter("TERMS")
    assert final == await tb.read_counter("TERMS") and final % inc == 0
    tb.check_protocol()


async def _all(dut, coros, what):
    tasks = [c if hasattr(c, "done") else cocotb.start_soon(c) for c in coros]
    try:
        return [await with_timeout(t, 20_000, "ns") for t in tasks]
    except SimTimeoutError:
        raise AssertionError(f"{what}: a transaction got no response within 2000 cycles") \
            from None


@cocotb.test()
async def transactions_in_flight(dut):
    """Writes issued while a B waits (bready held low): none takes effect before the B ahead
    of it is accepted; reads issued while an R waits; then random stalls on all channels."""
    tb = TB(dut)
    await tb.reset()
    rng = random.Random(int(os.environ.get("MULFREE_SEED", "1")))
    wif, rif = tb.axil.write_if, tb.axil.read_if
    scratch, ident = tb.addr("SCRATCH"), tb.addr("ID")
    values = [rng.getrandbits(32) for _ in range(3)]
    await tb.write("SCRATCH", values[0])
    # OKAY and SLVERR alternate: a write overtaking a waiting B changes bresp under bvalid.
    wif.b_channel.set_pause_generator(_pause([1] * 50 + [0]))
    writes = [(ident, 5), (scratch, values[1]), (ident, 6), (scratch, values[2])]
    tasks = [cocotb.start_soon(tb.axil.write(a, v.to_bytes(4, "little"))) for a, v in writes]
    # While the first B waits, the next write sits in the slave's buffers, not in SCRATCH.
    for _ in range(40):
        await RisingEdge(dut.clk)
        await ReadOnly()
        assert int(dut.scratch_value.value) == values[0], \
            "a write took effect while the B response ahead of it waited"
    resps = await _all(dut, tasks, "writes with bready held low")
    want = [SLVERR, OKAY, SLVERR, OKAY]
    assert [int(r.resp) for r in resps] == want, [int(r.resp) for r in resps]
    assert [w[3] for w in tb.axil_check.writes[-4:]] == want
    wif.b_channel.clear_pause_generator()
    wif.b_channel.pause = False
    await tb.write("STATUS", 1 << tb.bit("STATUS", "reg_error"))
    # Reads queued behind an R held by rready.
    rif.r_channel.set_pause_generator(_pause([1] * 50 + [0]))
    size = tb.manifest["registers"]["size"]
    reads = [scratch, ident, size, scratch]
    got = await _all(dut, [tb.axil.read(a, 4) for a in reads], "reads with rready held low")
    got = [(int.from_bytes(r.data, "little"), int(r.resp)) for r in got]
    want = [(values[2], OKAY), (tb.regs["ID"]["reset"], OKAY), (0, SLVERR), (values[2], OKAY)]
    assert got == want, f"reads {got}, expected {want}"
    rif.r_channel.clear_pause_generator()
    rif.r_channel.pause = False
    # Random stalls on all five channels, writes and reads interleaved.
    channels = (wif.aw_channel, wif.w_channel, wif.b_channel, rif.ar_channel, rif.r_channel)
    for ch in channels:
        ch.set_pause_generator(iter(lambda: int(rng.random() < 0.4), 2))
    for i in range(12):
        v = rng.getrandbits(32)
        w = cocotb.start_soon(tb.axil.write(scratch, v.to_bytes(4, "little")))
        r = cocotb.start_soon(tb.axil.read(scratch, 4))
        await _all(dut, [w], f"random stalls: write {i}")
        data = int.from_bytes((await _all(dut, [r], f"random stalls: read {i}"))[0].data,
                              "little")
        # The read raced the write: it sees the old or the new value, nothing else.
        assert data in (v, values[2]), f"random stalls: read {data:#x} during write of {v:#x}"
        values[2] = v
        assert (await tb.read("SCRATCH"))[0] == v
    for ch in channels:
        ch.clear_pause_generator()
        ch.pause = False
    tb.check_protocol()
