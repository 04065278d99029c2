"""The register block in amaranth.sim: identity, RW, W1C/W1S, ignored writes, counters, AXI."""

import pytest
from amaranth.sim import Simulator

from mulfree.params.config import ArrayConfig, ConfigError
from mulfree.params.core_config import CORE_MAGIC, CoreConfig
from mulfree.rtl.regs import AxiLiteRegisters
from mulfree.params.regmap import REG_ERRORS, RESP_OKAY, RESP_SLVERR, Field, Register, RegisterMap


CFG = CoreConfig(engine=ArrayConfig(pe="adder", rows=5, cols=3, act_bits=6, max_k=100),
                 stream_width=128, fmap_vectors=300, acc_entries=17, weight_rows=99)
ERR = {name: code for name, (code, _) in REG_ERRORS.items()}


async def write(ctx, bus, addr, data, strb=0xF, order="together"):
    """One AXI4-Lite write; ``order``: AW and W together, AW first or W first."""
    chans = {"aw": [(bus.awaddr, addr), (bus.awvalid, 1)],
             "w": [(bus.wdata, data), (bus.wstrb, strb), (bus.wvalid, 1)]}
    steps = {"together": [["aw", "w"]], "aw_first": [["aw"], ["w"]],
             "w_first": [["w"], ["aw"]]}[order]
    pending = {}
    for step in steps:
        for ch in step:
            for sig, v in chans[ch]:
                ctx.set(sig, v)
            pending[ch] = getattr(bus, f"{ch}valid"), getattr(bus, f"{ch}ready")
        # Hold each channel valid until its handshake edge, then drop it.
        for _ in range(20):
            done = [ch for ch, (valid, ready) in pending.items()
                    if ctx.get(valid) and ctx.get(ready)]
            await ctx.tick()
            for ch in done:
                ctx.set(pending.pop(ch)[0], 0)
            if step is not steps[-1] or not pending:
                break
    assert not pending, f"write to {addr:#x}: {sorted(pending)} never accepted"
    ctx.set(bus.bready, 1)
    for _ in range(20):
        if ctx.get(bus.bvalid):
            break
        await ctx.tick()
    assert ctx.get(bus.bvalid), f"write to {addr:#x}: no B response"
    resp = ctx.get(bus.bresp)
    await ctx.tick()
    ctx.set(bus.bready, 0)
    return resp


async def read(ctx, bus, addr):
    ctx.set(bus.araddr, addr)
    ctx.set(bus.arvalid, 1)
    while not ctx.get(bus.arready):
        await ctx.tick()
    await ctx.tick()
    ctx.set(bus.arvalid, 0)
    ctx.set(bus.rready, 1)
    while not ctx.get(bus.rvalid):
        await ctx.tick()
    data, resp = ctx.get(bus.rdata), ctx.get(bus.rresp)
    await ctx.tick()
    ctx.set(bus.rready, 0)
    return data, resp


def run(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_identity_registers_equal_config():
    rmap = CFG.register_map
    dut = AxiLiteRegisters(rmap)
    e = CFG.engine
    expect = {"ID": CORE_MAGIC, "VERSION": 2 << 16 | 4, "ENGINE": 1 | (0 << 4) | (1 << 8),
              "ARRAY": 5 | (3 << 16),
              "WIDTHS": e.act_bits | (e.weight_bits << 8) | (e.acc_width << 16),
              "MAX_K": 100, "STREAM_WIDTH": 128, "FMAP_VECTORS": 300, "ACC_ENTRIES": 17,
              "WEIGHT_ROWS": 99, "MAX_CHANNELS": 512, "SHORTCUT_VECTORS": 1024,
              "POOL_PIXELS": 4096,
              # Interface 2.1: one engine; its code and accumulator are the core's.
              "ENGINES": 1 | 6 << 8 | e.acc_width << 16,
              "ENGINE_0": 1 | 0 << 4 | 6 << 8 | e.acc_width << 14 | 3 << 20,
              "ENGINE_1": 0, "ENGINE_2": 0,
              # Interface 2.2: a 5x3 engine cannot chain layers: one bank.
              "FMAP_BANKS": 1,
              # Interface 2.3: nor run windows (a lane of an input vector is a result lane).
              "WINDOW": 0,
              # Interface 2.4: nor taps runs (they need the lane unit's window_ops).
              "TAPS": 0}
    assert [rmap[f"ENGINE_{j}"].offset for j in range(3)] == [0x070, 0x074, 0x078]
    assert rmap["FMAP_BANKS"].offset == 0x07C
    assert rmap["ENGINES"].offset == 0x06C
    assert rmap["WINDOW"].offset == 0x0A0
    assert rmap["TAPS"].offset == 0x0A4

    async def bench(ctx):
        for name, value in expect.items():
            data, resp = await read(ctx, dut.s_axil, rmap[name].offset)
            assert (data, resp) == (value, RESP_OKAY), f"{name}: got {data:#x}, want {value:#x}"
    run(dut, bench)


def test_engine_registers_of_three_engines():
    """ENGINES and ENGINE_0..2 of an adder tree, a shift array and a mult engine folded to 2
    of 6 columns: the kinds, organisations, widths and physical columns as the config says,
    the core-wide code and accumulator widths the widest engine's."""
    kinds = dict(rows=4, cols=6, act_bits=8, max_k=64)
    adder = ArrayConfig(pe="adder", arch="tree", **kinds)
    shift = ArrayConfig(pe="shift", weight_bits=4, **kinds)
    mult = ArrayConfig(pe="mult", weight_bits=12, **kinds)
    cfg = CoreConfig(engine=adder, extra_engines=(shift, mult), engine_cols=(6, 6, 2))
    # Accumulators of 64 terms: adder -|x - w| >= -255, shift x << 6 (max_shift 6), mult x*w
    # up to 2^18: 15, 21 and 26 bits.
    widths = [e.acc_width for e in (adder, shift, mult)]
    assert widths == [15, 21, 26] and cfg.acc_width == 26 and cfg.code_width == 12
    rmap = cfg.register_map
    dut = AxiLiteRegisters(rmap)
    expect = {"ENGINES": 3 | 12 << 8 | 26 << 16,
              "ENGINE_0": 1 | 1 << 4 | 8 << 8 | 15 << 14 | 6 << 20,
              "ENGINE_1": 0 | 0 << 4 | 4 << 8 | 21 << 14 | 6 << 20,
              "ENGINE_2": 2 | 0 << 4 | 12 << 8 | 26 << 14 | 2 << 20,
              "VERSION": 2 << 16 | 4,
              # The 2.0 registers still describe engine 0.
              "ENGINE": 1 | 1 << 4 | 1 << 8, "WIDTHS": 8 | 8 << 8 | 15 << 16}

    async def bench(ctx):
        for name, value in expect.items():
            data, resp = await read(ctx, dut.s_axil, rmap[name].offset)
            assert (data, resp) == (value, RESP_OKAY), f"{name}: got {data:#x}, want {value:#x}"
    run(dut, bench)


@pytest.mark.parametrize("banks, want", [(None, 2), (2, 2), (1, 1)])
def test_fmap_banks_register(banks, want):
    """FMAP_BANKS (0x07C, interface 2.2): 2 by default on a square engine, 1 when asked."""
    cfg = CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=4, max_k=64), fmap_banks=banks)
    assert cfg.fmap_banks == want
    rmap = cfg.register_map
    dut = AxiLiteRegisters(rmap)

    async def bench(ctx):
        for name, value in (("FMAP_BANKS", want), ("VERSION", 2 << 16 | 4)):
            data, resp = await read(ctx, dut.s_axil, rmap[name].offset)
            assert (data, resp) == (value, RESP_OKAY), f"{name}: got {data:#x}, want {value:#x}"
    run(dut, bench)


@pytest.mark.parametrize("ops, lanes", [(None, 4), (True, 4), (False, 0)])
def test_window_register(ops, lanes):
    """WINDOW (0x0A0, interface 2.3): the lane unit's lanes (cols), 0 without it."""
    cfg = CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=4, max_k=64), window_ops=ops)
    rmap = cfg.register_map
    dut = AxiLiteRegisters(rmap)

    async def bench(ctx):
        data, resp = await read(ctx, dut.s_axil, rmap["WINDOW"].offset)
        assert (data, resp) == (lanes, RESP_OKAY), f"WINDOW: got {data:#x}, want {lanes:#x}"
    run(dut, bench)


def _taps_value(taps, side, engines, line):
    """TAPS from its fields as interface 2.4 defines them (``docs/interface.md``)."""
    return taps | side << 8 | engines << 12 | line << 16


SQUARE9 = dict(rows=9, cols=9, max_k=64)


@pytest.mark.parametrize("cfg, want", [
    # A 9x9 array with the lane unit: 9 tap rows (3x3 kernels) by default, line 64.
    (CoreConfig(engine=ArrayConfig(pe="shift", **SQUARE9)), _taps_value(9, 3, 1, 64)),
    (CoreConfig(engine=ArrayConfig(pe="shift", **SQUARE9), taps=4, tap_line=100),
     _taps_value(4, 2, 1, 100)),
    # A 4x4 array: fewer than 9 rows, none by default; 4 rows (2x2 kernels) when asked.
    (CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=4, max_k=64)), 0),
    (CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=4, max_k=64), taps=4),
     _taps_value(4, 2, 1, 64)),
    # No lane unit: no tap window, and the line reads 0 whatever tap_line says.
    (CoreConfig(engine=ArrayConfig(pe="shift", **SQUARE9), window_ops=False, tap_line=9), 0),
    # A tree engine 0, an array engine 1, a folded array engine 2: only engine 1 takes taps.
    (CoreConfig(engine=ArrayConfig(pe="adder", arch="tree", **SQUARE9),
                extra_engines=(ArrayConfig(pe="shift", **SQUARE9),
                               ArrayConfig(pe="mult", **SQUARE9)), engine_cols=(9, 9, 3)),
     _taps_value(9, 3, 0b010, 64)),
])
def test_taps_register(cfg, want):
    """TAPS (0x0A4, interface 2.4): the tap window's rows, side, engines and line, 0 without
    one."""
    rmap = cfg.register_map
    assert rmap["TAPS"].offset == 0x0A4
    dut = AxiLiteRegisters(rmap)

    async def bench(ctx):
        data, resp = await read(ctx, dut.s_axil, rmap["TAPS"].offset)
        assert (data, resp) == (want, RESP_OKAY), f"TAPS: got {data:#x}, want {want:#x}"
    run(dut, bench)


@pytest.mark.parametrize("order", ["together", "aw_first", "w_first"])
def test_rw_and_status(order):
    rmap = CFG.register_map
    dut = AxiLiteRegisters(rmap)
    scratch, control, status = (rmap[n].offset for n in ("SCRATCH", "CONTROL", "STATUS"))

    async def bench(ctx):
        assert await write(ctx, dut.s_axil, scratch, 0xDEADBEEF, order=order) == RESP_OKAY
        assert await read(ctx, dut.s_axil, scratch) == (0xDEADBEEF, RESP_OKAY)
        assert ctx.get(dut.scratch_value) == 0xDEADBEEF
        assert await write(ctx, dut.s_axil, control, 0b100, order=order) == RESP_OKAY
        assert ctx.get(dut.control_irq_enable) == 1
        # done: set by a one-cycle strobe, sticky, drives irq, cleared by writing 1.
        ctx.set(dut.status_done, 1)
        await ctx.tick()
        ctx.set(dut.status_done, 0)
        ctx.set(dut.status_idle, 1)
        await ctx.tick()
        assert ctx.get(dut.irq) == 1
        data, _ = await read(ctx, dut.s_axil, status)
        assert data == 0b101
        # Writing back what was read clears done; the RO idle bit is ignored, not an error.
        assert await write(ctx, dut.s_axil, status, data, order=order) == RESP_OKAY
        assert await read(ctx, dut.s_axil, status) == (0b001, RESP_OKAY)
        assert ctx.get(dut.irq) == 0
    run(dut, bench)


def test_ignored_writes_are_flagged():
    rmap = CFG.register_map
    dut = AxiLiteRegisters(rmap)
    off = {r.name: r.offset for r in rmap}

    async def bench(ctx):
        bus = dut.s_axil
        await write(ctx, bus, off["SCRATCH"], 7)
        cases = [
            ("UNMAPPED", 0x30, 1, 0xF),
            ("UNMAPPED", 0xFFC, 1, 0xF),
            ("STROBE", off["SCRATCH"], 1, 0x3),
            ("READ_ONLY", off["ID"], 1, 0xF),
            ("RESERVED", off["CONTROL"], 1 << 5, 0xF),
        ]
        for name, addr, data, strb in cases:
            assert await write(ctx, bus, addr, data, strb) == RESP_SLVERR, name
            status, _ = await read(ctx, bus, off["STATUS"])
            assert status >> 4 & 1, f"{name}: reg_error not set"
            err, _ = await read(ctx, bus, off["ERROR"])
            assert err >> 8 == ERR[name], f"{name}: code {err >> 8}"
            assert await read(ctx, bus, off["ERROR_ADDR"]) == (addr, RESP_OKAY)
            # A second error keeps the first record.
            await write(ctx, bus, off["ID"], 0)
            assert (await read(ctx, bus, off["ERROR"]))[0] >> 8 == ERR[name]
            assert await write(ctx, bus, off["STATUS"], 1 << 4) == RESP_OKAY
            assert (await read(ctx, bus, off["ERROR"]))[0] == 0
        # None of them changed anything.
        assert await read(ctx, bus, off["SCRATCH"]) == (7, RESP_OKAY)
        assert ctx.get(dut.control_irq_enable) == 0
        # start while busy is refused; soft reset is accepted while busy.
        ctx.set(dut.status_busy, 1)
        assert await write(ctx, bus, off["CONTROL"], 1) == RESP_SLVERR
        assert (await read(ctx, bus, off["ERROR"]))[0] >> 8 == ERR["BUSY"]
        assert await read(ctx, bus, 0x30) == (0, RESP_SLVERR)
    run(dut, bench)


def test_range_check():
    rmap = RegisterMap(8)
    rmap.add(Register("MODE", [Field("level", 0, 8, "RW", reset=3, allowed=(1, 100))]))
    dut = AxiLiteRegisters(rmap)

    async def bench(ctx):
        assert await read(ctx, dut.s_axil, 0) == (3, RESP_OKAY)
        for value, resp in [(0, RESP_SLVERR), (1, RESP_OKAY), (100, RESP_OKAY),
                            (101, RESP_SLVERR), (255, RESP_SLVERR)]:
            before = ctx.get(dut.mode_level)
            assert await write(ctx, dut.s_axil, 0, value) == resp, value
            assert ctx.get(dut.mode_level) == (value if resp == RESP_OKAY else before)
    run(dut, bench)


def test_pulses_soft_reset_and_counters():
    rmap = CFG.register_map
    dut = AxiLiteRegisters(rmap)
    off = {r.name: r.offset for r in rmap}

    async def bench(ctx):
        bus = dut.s_axil
        seen = []

        # Watch the pulses while a write happens.
        ctx.set(bus.awaddr, off["CONTROL"])
        ctx.set(bus.wdata, 0b11)
        ctx.set(bus.wstrb, 0xF)
        ctx.set(bus.awvalid, 1)
        ctx.set(bus.wvalid, 1)
        ctx.set(bus.bready, 1)
        for _ in range(6):
            await ctx.tick()
            ctx.set(bus.awvalid, 0)
            ctx.set(bus.wvalid, 0)
            seen.append((ctx.get(dut.control_start), ctx.get(dut.control_soft_reset)))
        assert seen.count((1, 1)) == 1 and seen.count((0, 0)) == 5, seen
        ctx.set(bus.bready, 0)
        await ctx.tick()

        # The terms counter adds up to pe_count per cycle.
        assert len(dut.terms_inc) == 4
        ctx.set(dut.terms_inc, 15)
        await ctx.tick().repeat(10)
        ctx.set(dut.terms_inc, 0)
        lo, _ = await read(ctx, bus, off["TERMS_LO"])
        hi, _ = await read(ctx, bus, off["TERMS_HI"])
        assert (hi << 32 | lo) == 150
        ctx.set(dut.busy_cycles_inc, 1)
        await ctx.tick().repeat(3)
        lo1, _ = await read(ctx, bus, off["BUSY_CYCLES_LO"])
        ctx.set(dut.busy_cycles_inc, 0)
        hi1, _ = await read(ctx, bus, off["BUSY_CYCLES_HI"])
        assert hi1 == 0 and 3 <= lo1 < 10

        # Soft reset clears counters and W1C flags, keeps RW fields.
        await write(ctx, bus, off["SCRATCH"], 5)
        await write(ctx, bus, off["ID"], 0)     # flag an error
        await write(ctx, bus, off["CONTROL"], 0b110)
        assert await read(ctx, bus, off["TERMS_LO"]) == (0, RESP_OKAY)
        assert await read(ctx, bus, off["STATUS"]) == (0, RESP_OKAY)
        assert await read(ctx, bus, off["ERROR"]) == (0, RESP_OKAY)
        assert await read(ctx, bus, off["SCRATCH"]) == (5, RESP_OKAY)
        assert ctx.get(dut.control_irq_enable) == 1
    run(dut, bench)


def test_counter_high_half():
    """Carry into the high half, and _HI returns the half latched by _LO even as it counts."""
    rmap = RegisterMap(8)
    c = rmap.add_counter("N", 32)
    dut = AxiLiteRegisters(rmap)

    async def bench(ctx):
        ctx.set(dut.n_inc, 0xFFFF_FFFF)
        await ctx.tick().repeat(3)
        lo, _ = await read(ctx, dut.s_axil, c.lo.offset)
        hi, _ = await read(ctx, dut.s_axil, c.hi.offset)
        # The counter kept counting between the two reads; the pair is one snapshot.
        total = hi << 32 | lo
        assert total % 0xFFFF_FFFF == 0 and hi >= 2, (hi, lo)
    run(dut, bench)


@pytest.mark.parametrize("kwargs, param", [
    ({"stream_width": 48}, "stream_width"),
    ({"fmap_vectors": 8}, "fmap_vectors"),
    ({"axil_addr_width": 7}, "axil_addr_width"),
    ({"engine": "shift"}, "engine"),
])
def test_config_errors(kwargs, param):
    with pytest.raises(ConfigError) as e:
        CoreConfig(**kwargs)
    assert e.value.param == param and "\n" not in str(e.value)
