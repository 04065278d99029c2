"""cocotb testbench of the whole accelerator core on its generated Verilog.

A host's view: cocotbext-axi's ``AxiLiteMaster`` on the registers, ``AxiStreamSource`` and
``AxiStreamSink`` on the data streams, every address, code and size taken from the manifest
(``MULFREE_MANIFEST``). Layers are packed by :mod:`mulfree.host.layer_stream` and every result
beat is compared with the golden model of the whole layer (convolution or matrix product,
shift, post-processing) — bit for bit, in order.

Scenarios: random layers of every kind; the same under idle and backpressure inserters on
both streams; the fused tail (residual add, clamp) with its shortcut in chunks; a soft reset in the middle of a layer followed by a correct layer; malformed
input (every documented core error, and ``start`` while busy) that sets the error status and
never hangs the core or corrupts the next layer; the performance counters against
independent counts; random stalls on every AXI4-Lite channel and both streams, with several
register transactions in flight while ``bready``/``rready`` are held low. ``MULFREE_SEED``
varies the random layers and the stalls.

Protocol checkers (:mod:`mulfree.sim.checkers`) watch ``s_axil``, ``s_axis`` and ``m_axis``
on every cycle of every scenario, from the constructor on: a violation fails the scenario at
once, and :meth:`TB.check_protocol` ends each scenario.
"""

import dataclasses
import itertools
import json
import os

import numpy as np

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, SimTimeoutError, with_timeout
from cocotbext.axi import (AxiLiteBus, AxiLiteMaster, AxiStreamBus, AxiStreamFrame,
                           AxiStreamSink, AxiStreamSource)

from mulfree.params.core_config import DESC_BITS, CoreConfig
from mulfree.host.layer_stream import Layer, expected_beats, layer_geometry, pack_layer
from mulfree.params.layer_golden import ResidualParams
from mulfree.sim.checkers import AxiLiteChecker, StreamChecker
from mulfree.sim.tb_core_layers import (chunked, random_layer, random_pauses,
                                       shortcut_last, with_tail)


__all__ = ["TB", "random_layer", "random_pauses", "run_layer"]


class TB:
    """Clock, reset, the bus functional models and the manifest."""

    def __init__(self, dut):
        self.dut = dut
        self.manifest = json.loads(open(os.environ["MULFREE_MANIFEST"]).read())
        self.cfg = CoreConfig.from_params(self.manifest["parameters"])
        section = self.manifest["registers"]
        self.regs = {r["name"]: r for r in section["registers"]}
        self.core_errors = {n: e["code"] for n, e in section["core_errors"].items()}
        self.reg_errors = {n: e["code"] for n, e in section["reg_errors"].items()}
        self.width = self.cfg.stream_width
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil", bus_separator="__"),
                                  dut.clk, dut.rst)
        self.source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis",
                                                               bus_separator="__"),
                                      dut.clk, dut.rst)
        self.sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis", bus_separator="__"),
                                  dut.clk, dut.rst)
        self.seed = int(os.environ.get("MULFREE_SEED", "1"))
        # The bus rules, every cycle. A result packet's length is known once its run starts
        # (run_layer queues it); a core error or a soft reset may cut the packet under way.
        self.axil_check = AxiLiteChecker(dut.clk, dut.rst, dut, "s_axil")
        self.in_check = StreamChecker(dut.clk, dut.rst, dut.s_axis__tvalid, dut.s_axis__tready,
                                      dut.s_axis__tdata, dut.s_axis__tlast, name="s_axis",
                                      last=dut.s_axis__tlast)
        self.out_check = StreamChecker(dut.clk, dut.rst, dut.m_axis__tvalid, dut.m_axis__tready,
                                       dut.m_axis__tdata, dut.m_axis__tlast, name="m_axis",
                                       last=dut.m_axis__tlast)
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    def check_protocol(self):
        """Raise the first bus-rule violation; fail if a register transaction is unanswered."""
        self.in_check.check()
        self.out_check.check()
        self.axil_check.check(idle=self.axil.write_if.idle() and self.axil.read_if.idle())

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    def field(self, reg, name):
        f = next(f for f in self.regs[reg]["fields"] if f["name"] == name)
        hi, lo = f["bits"]
        return lo, (1 << (hi - lo + 1)) - 1

    async def write(self, reg, value):
        resp = await self.axil.write(self.regs[reg]["offset"], int(value).to_bytes(4, "little"))
        return int(resp.resp)

    async def read(self, reg):
        resp = await self.axil.read(self.regs[reg]["offset"], 4)
        return int.from_bytes(resp.data, "little")

    async def get(self, reg, name):
        lo, mask = self.field(reg, name)
        return (await self.read(reg)) >> lo & mask

    async def counter(self, name):
        lo = await self.read(f"{name}_LO")
        return (await self.read(f"{name}_HI")) << 32 | lo

    async def control(self, name):
        """Pulse a CONTROL bit, keeping irq_enable (a RW field in the same register)."""
        lo, _ = self.field("CONTROL", name)
        irq, _ = self.field("CONTROL", "irq_enable")
        keep = await self.read("CONTROL") & (1 << irq)
        if name == "start":
            # A new run: a result packet an error or a soft reset cut short is over.
            self.out_check.abort()
        elif name == "soft_reset":
            # The aborted run's pending result beat may vanish (m_axis.tvalid falls).
            self.out_check.tolerate_drop = True
        resp = await self.write("CONTROL", keep | 1 << lo)
        if name == "soft_reset":
            cocotb.start_soon(self._after_abort())
        return resp

    async def _after_abort(self):
        await ClockCycles(self.dut.clk, 3)
        self.out_check.abort()
        self.out_check.tolerate_drop = False

    async def wait_done(self, timeout_cycles=200_000):
        """Poll ``STATUS`` until ``done``; fail (no hang) after ``timeout_cycles``."""
        for _ in range(timeout_cycles // 20):
            if await self.get("STATUS", "done"):
                return
            await ClockCycles(self.dut.clk, 20)
        raise AssertionError(f"the core did not finish within {timeout_cycles} cycles "
                             f"(STATUS 0x{await self.read('STATUS'):x}, ERROR "
                             f"0x{await self.read('ERROR'):x})")

    def frame(self, beats):
        nbytes = self.width // 8
        return AxiStreamFrame(b"".join(int(b).to_bytes(nbytes, "little") for b in beats))

    def beats_of(self, frame):
        nbytes = self.width // 8
        data = bytes(frame.tdata)
        assert len(data) % nbytes == 0, f"result frame of {len(data)} bytes"
        return [int.from_bytes(data[i:i + nbytes], "little")
                for i in range(0, len(data), nbytes)]

    async def send_packets(self, packets):
        for p in packets:
            await self.source.send(self.frame(p.beats))

    def pause_streams(self, source=None, sink=None):
        """Repeat each pattern (1 = pause) on the source / sink; ``None`` removes it.
        An iterator is used as it is (e.g. :func:`random_pauses`)."""
        for bfm, pattern in ((self.source, source), (self.sink, sink)):
            if pattern is not None and isinstance(pattern, (list, tuple)):
                pattern = itertools.cycle(pattern)
            bfm.set_pause_generator(pattern)
            if pattern is None:
                bfm.pause = False       # removing the generator keeps its last value

    def axil_channels(self):
        """The AXI4-Lite master's five channel BFMs, by name."""
        w, r = self.axil.write_if, self.axil.read_if
        return {"aw": w.aw_channel, "w": w.w_channel, "b": w.b_channel, "ar": r.ar_channel,
                "r": r.r_channel}

    def pause_axil(self, **patterns):
        """Pause generators on the AXI4-Lite channels (``aw=...``, ``b=...``; ``None``
        removes one; a list repeats, an iterator is used as it is)."""
        for ch, pattern in patterns.items():
            bfm = self.axil_channels()[ch]
            if pattern is None:
                bfm.clear_pause_generator()
                bfm.pause = False
            else:
                bfm.set_pause_generator(itertools.cycle(pattern)
                                        if isinstance(pattern, (list, tuple)) else pattern)


async def run_layer(tb, layer, *, what="", packets=None):
    """Start, send (``packets``, by default the packer's), receive and check one layer; return
    the counters' increments."""
    cfg = tb.cfg
    before = {n: await tb.counter(n) for n in ("BUSY_CYCLES", "TERMS")}
    assert await tb.control("start") == 0, f"{what}: start refused"
    packets = pack_layer(cfg, layer) if packets is None else packets
    want = expected_beats(cfg, layer)
    tb.out_check.expect(len(want))
    tb.in_check.expect(*(len(p.beats) for p in packets))
    tb.in_check.take()
    tb.out_check.take()
    cocotb.start_soon(tb.send_packets(packets))
    try:
        frame = await with_timeout(tb.sink.recv(), 2_000_000, "ns")
    except SimTimeoutError:
        raise AssertionError(f"{what}: no result packet within 200000 cycles (STATUS "
                             f"0x{await tb.read('STATUS'):x}, ERROR 0x{await tb.read('ERROR'):x}"
                             f", {tb.source.count()} frames unsent, "
                             f"{tb.sink.count()} received)") from None
    got = tb.beats_of(frame)
    await tb.wait_done()
    code = await tb.get("ERROR", "core_code")
    assert code == 0, f"{what}: the core stopped with error {code}"
    assert len(got) == len(want), f"{what}: {len(got)} result beats, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"{what}: result beat {i} of {len(want)}: got 0x{g:x}, expected 0x{w:x}"
    # No beat lost or duplicated between the bus and the BFMs.
    seen = [b[0] for b in tb.out_check.take()]
    assert seen == got, f"{what}: m_axis carried {len(seen)} beats, the sink got {len(got)}"
    sent = [b for p in packets for b in p.beats]
    seen = [b[0] for b in tb.in_check.take()]
    assert seen == sent, f"{what}: s_axis carried {len(seen)} beats, {len(sent)} were sent"
    tb.check_protocol()
    after = {n: await tb.counter(n) for n in ("BUSY_CYCLES", "TERMS")}
    return {n: after[n] - before[n] for n in after}


def _layers(cfg, rng):
    """Random layers covering the layer kinds and odd sizes, for ``cfg``'s engine."""
    R, C = cfg.engine.rows, cfg.engine.cols
    yield "matmul odd", random_layer(cfg, rng, kind="matmul", m=2 * R + 3, k=2 * R + 1,
                                     n=C + 2)
    yield "matmul small", random_layer(cfg, rng, kind="matmul", m=1, k=1, n=1)
    yield "conv 3x3 s2 p1", random_layer(cfg, rng, kind="conv", in_c=R + 1, h=7, w=9,
                                         out_c=C + 1, stride=(2, 2), padding=(1, 1))
    yield "conv 2x3 s(1,2) p(1,0)", random_layer(cfg, rng, kind="conv", in_c=2, h=5, w=7,
                                                 out_c=3, kh=2, kw=3, stride=(1, 2),
                                                 padding=(1, 0), m_block=3)
    yield "shift + 1x1", random_layer(cfg, rng, kind="shift", in_c=R + 2, h=4, w=5, out_c=C)
    # The shifted map is zero-padded like any map: padding reads 0 whatever the shift.
    yield "shift + 3x3 p1", random_layer(cfg, rng, kind="shift", in_c=R + 1, h=4, w=5,
                                         out_c=C + 1, kh=3, kw=3, padding=(1, 1))
    if cfg.shift_reach > 1:
        # Shifts beyond one pixel: the map wider than the reach, so most reads stay inside;
        # blocks of 5 pixels start mid-row.
        r = cfg.shift_reach
        yield "shift reach + 3x3 s2 p1", random_layer(
            cfg, rng, kind="shift", in_c=2 * R + 1, h=2 * r + 3, w=2 * r + 4, out_c=C + 1,
            kh=3, kw=3, stride=(2, 2), padding=(1, 1), m_block=5)


@cocotb.test()
async def random_layers(dut):
    """Random layers of every kind, bit-exact; then a run reusing the loaded weights."""
    tb = TB(dut)
    await tb.reset()
    rng = np.random.default_rng(tb.seed)
    layer = None
    for what, layer in _layers(tb.cfg, rng):
        await run_layer(tb, layer, what=what)
    # Same weights, parameters and shifts; new activations.
    lo, hi = tb.cfg.engine.act_range
    again = Layer(x=rng.integers(lo, hi + 1, layer.x.shape), w_codes=layer.w_codes,
                  post=layer.post, stride=layer.stride, padding=layer.padding,
                  shifts=layer.shifts, m_block=layer.m_block, reuse_weights=True)
    await run_layer(tb, again, what="reuse_weights")
    tb.check_protocol()


@cocotb.test()
async def backpressure(dut):
    """Idle cycles on the input and backpressure on the output, in four combinations."""
    tb = TB(dut)
    await tb.reset()
    rng = np.random.default_rng(tb.seed + 1)
    patterns = [([0, 1], None), (None, [1, 1, 0]), ([1, 0, 0], [0, 1]), ([0, 0, 1], [1, 0, 1])]
    layers = list(_layers(tb.cfg, rng))
    for (source, sink), (what, layer) in zip(patterns, itertools.cycle(layers)):
        tb.pause_streams(source, sink)
        await run_layer(tb, layer, what=f"{what}, pauses {source}/{sink}")
    tb.pause_streams()
    tb.check_protocol()


@cocotb.test()
async def soft_reset_mid_layer(dut):
    """A soft reset while a layer is half sent, half computed; the next layer is correct."""
    tb = TB(dut)
    await tb.reset()
    rng = np.random.default_rng(tb.seed + 2)
    cfg = tb.cfg
    for cut in (1, 3, -2):
        layer = random_layer(cfg, rng, kind="conv", in_c=3, h=6, w=6, out_c=cfg.engine.cols + 1,
                             padding=(1, 1))
        await tb.control("start")
        packets = pack_layer(cfg, layer)
        # The output is held back, so the layer stops half computed with results pending.
        tb.pause_streams(None, [1])
        await tb.send_packets(packets[:cut])
        await tb.source.wait()
        await ClockCycles(dut.clk, 40)
        assert await tb.get("STATUS", "busy") == 1
        assert await tb.control("soft_reset") == 0
        await ClockCycles(dut.clk, 2)
        assert await tb.get("STATUS", "idle") == 1, "not idle after a soft reset"
        assert await tb.get("STATUS", "busy") == 0
        assert await tb.get("ERROR", "core_code") == 0
        tb.pause_streams()
        await ClockCycles(dut.clk, 20)
        tb.sink.clear()
        await run_layer(tb, random_layer(cfg, rng, kind="matmul", m=5, k=cfg.engine.rows + 1,
                                         n=3), what=f"after a soft reset at packet {cut}")
    tb.check_protocol()


async def _expect_error(tb, packets, name, what, *, raw=None):
    """Send ``packets`` (or ``raw`` frames); expect error ``name``, done, idle, no hang."""
    assert await tb.control("start") == 0
    # The error ends the run at once: a pending result beat may vanish.
    tb.out_check.tolerate_drop = True
    if raw is not None:
        for beats in raw:
            await tb.source.send(tb.frame(beats))
    else:
        await tb.send_packets(packets)
    await tb.wait_done(timeout_cycles=20_000)
    code = await tb.get("ERROR", "core_code")
    assert code == tb.core_errors[name], f"{what}: error {code}, expected {name} " \
                                         f"({tb.core_errors[name]})"
    assert await tb.get("STATUS", "error") == 1, f"{what}: STATUS.error not set"
    assert await tb.get("STATUS", "idle") == 1, f"{what}: not idle after the error"
    # Whatever the host still sends of the bad layer is dropped, never stuck.
    await with_timeout(tb.source.wait(), 200_000, "ns")
    await ClockCycles(tb.dut.clk, 10)
    tb.sink.clear()
    tb.out_check.tolerate_drop = False


@cocotb.test()
async def malformed_input(dut):
    """Every documented core error; each followed by a correct layer."""
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    R, C = cfg.engine.rows, cfg.engine.cols
    rng = np.random.default_rng(tb.seed + 3)

    def good():
        return random_layer(cfg, rng, kind="matmul", m=6, k=R + 1, n=C + 1)

    async def then_good(what):
        await run_layer(tb, good(), what=f"after {what}")

    layer = good()
    packets = pack_layer(cfg, layer)
    desc, rest = packets[0], packets[1:]
    hdr = desc.beats[0]

    # A descriptor whose out_w is not the convolution's output size.
    words = _desc_words(tb, desc)
    bad = list(words)
    bad[2] += 1 << 16
    await _expect_error(tb, None, "DESCRIPTOR", "wrong out_w",
                        raw=[[hdr] + _words_beats(tb, bad)])
    await then_good("a wrong out_w")

    # A layer larger than the feature-map buffer.
    big = list(words)
    big[0] = 0xFFFF | (0xFFFF << 16)
    big[2] = 0xFFFF | (0xFFFF << 16)
    await _expect_error(tb, None, "TOO_BIG", "huge map", raw=[[hdr] + _words_beats(tb, big)])
    await then_good("a huge map")

    # Unknown packet type; a data packet first.
    await _expect_error(tb, None, "PACKET", "type 9", raw=[[9 | 1 << 8] + [0] * 4])
    await then_good("a type-9 packet")
    await _expect_error(tb, None, "PACKET", "ACTS first", raw=[rest[-1].beats])
    await then_good("activations before the descriptor")

    # A tensor shorter / longer than its header announced.
    acts = next(p for p in rest if p.type == "ACTS")
    others = [p for p in rest if p is not acts]
    await _expect_error(tb, None, "SHORT", "short ACTS",
                        raw=[desc.beats] + [p.beats for p in others] + [acts.beats[:-1]])
    await then_good("a short tensor")
    await _expect_error(tb, None, "LONG", "long ACTS",
                        raw=[desc.beats] + [p.beats for p in others]
                        + [acts.beats + acts.beats[1:]])
    await then_good("a long tensor")

    # More vectors of a type than the layer has.
    await _expect_error(tb, None, "OVERRUN", "ACTS twice",
                        raw=[desc.beats] + [p.beats for p in rest] + [acts.beats])
    await then_good("an overrun")

    # A second descriptor within a run.
    await _expect_error(tb, None, "DESC_IN_RUN", "two descriptors",
                        raw=[desc.beats, desc.beats])
    await then_good("a descriptor in a run")

    # reuse_weights of other sizes than the loaded ones, and after an error.
    other = random_layer(cfg, rng, kind="matmul", m=6, k=R + 1, n=C + 3, reuse=True)
    await _expect_error(tb, pack_layer(cfg, other), "REUSE", "reuse of other sizes")
    await _expect_error(tb, pack_layer(cfg, Layer(x=layer.x, w_codes=layer.w_codes,
                                                  post=layer.post, reuse_weights=True)),
                        "REUSE", "reuse after an error")
    await then_good("a refused reuse")

    # A shift-table entry beyond the reach: channel 0's dy = -(reach + 1) (-2 at reach 1).
    sl = random_layer(cfg, rng, kind="shift", in_c=R, h=3, w=3, out_c=2)
    sp = pack_layer(cfg, sl)
    sh = next(p for p in sp if p.type == "SHIFT")
    half, bad = cfg.shift_entry_bits // 2, -(cfg.shift_reach + 1)
    mask = (1 << half) - 1
    sh.beats[1] = (sh.beats[1] & ~mask) | (bad & mask)
    await _expect_error(tb, sp, "SHIFT_VALUE", f"dy = {bad}")
    await then_good("a bad shift entry")

    # start while busy: refused with the register error BUSY, the run goes on.
    assert await tb.control("start") == 0
    resp = await tb.control("start")
    assert resp == 2, f"start while busy answered {resp}, expected SLVERR"
    assert await tb.get("ERROR", "reg_code") == tb.reg_errors["BUSY"]
    lo, _ = tb.field("STATUS", "reg_error")
    await tb.write("STATUS", 1 << lo)
    l2 = good()
    await tb.send_packets(pack_layer(cfg, l2))
    got = tb.beats_of(await with_timeout(tb.sink.recv(), 1_000_000, "ns"))
    await tb.wait_done()
    assert got == expected_beats(cfg, l2), "the run disturbed by start-while-busy is wrong"
    tb.check_protocol()


def _desc_words(tb, desc):
    bits = 0
    for k, b in enumerate(desc.beats[1:]):
        bits |= b << (k * tb.width)
    return [(bits >> (32 * i)) & 0xFFFF_FFFF for i in range(DESC_BITS // 32)]


def _words_beats(tb, words):
    bits = sum(w << (32 * i) for i, w in enumerate(words))
    n = -(-DESC_BITS // tb.width)
    return [(bits >> (k * tb.width)) & ((1 << tb.width) - 1) for k in range(n)]


@cocotb.test()
async def residual(dut):
    """The fused tail: residual adds (ReLU, rounding right and left shifts) and clamps on
    random layers, the shortcut in chunks of 3 vectors (the packer's order, then all of it
    last), random backpressure on m_axis, a run reusing the weights with a new shortcut. A
    core without a shortcut buffer clamps and refuses a residual (TOO_BIG)."""
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    R, C = cfg.engine.rows, cfg.engine.cols
    rng = np.random.default_rng(tb.seed + 6)
    conv = random_layer(cfg, rng, kind="conv", in_c=R + 1, h=5, w=6, out_c=C + 2,
                        padding=(1, 1), m_block=7)
    if not cfg.shortcut_vectors:
        await run_layer(tb, with_tail(cfg, conv, rng, clamp=(0, 6)), what="ReLU6 clamp")
        buffered = dataclasses.replace(cfg, shortcut_vectors=1024)
        res = with_tail(cfg, conv, rng, residual=ResidualParams(1, 1, 1))
        await _expect_error(tb, pack_layer(buffered, res), "TOO_BIG", "residual, no buffer")
        await run_layer(tb, conv, what="after a residual on a core without its buffer")
        tb.check_protocol()
        return
    lo, hi = cfg.engine.act_range
    matmul = random_layer(cfg, rng, kind="matmul", m=11, k=2 * R + 1, n=C, m_block=4)
    shift = random_layer(cfg, rng, kind="shift", in_c=R + 2, h=4, w=5, out_c=2 * C + 1)
    cases = [
        ("conv, residual + ReLU + clamp", with_tail(cfg, conv, rng, clamp=(lo // 4, hi // 2),
                                                    residual=ResidualParams(1, 2, 2, True))),
        ("matmul, left shift, ReLU6", with_tail(cfg, matmul, rng, clamp=(0, 6),
                                                residual=ResidualParams(0, 0, -1, True))),
        ("shift, residual alone", with_tail(cfg, shift, rng,
                                            residual=ResidualParams(3, 0, 4, False))),
    ]
    for k, (what, layer) in enumerate(cases):
        tb.pause_streams(None, random_pauses(tb.seed * 10 + k, busy=0.4, hold=12))
        packets = chunked(cfg, pack_layer(cfg, layer), "SHORTCUT", 3)
        await run_layer(tb, layer, what=what, packets=packets)
        await run_layer(tb, layer, what=f"{what}, shortcut last",
                        packets=shortcut_last(packets))
    layer = cases[-1][1]            # the weights last loaded
    again = with_tail(cfg, layer, rng, residual=layer.residual, clamp=layer.clamp,
                      x=rng.integers(lo, hi + 1, layer.x.shape), reuse_weights=True)
    await run_layer(tb, again, what="reuse_weights, a new shortcut",
                    packets=chunked(cfg, pack_layer(cfg, again), "SHORTCUT", 3))
    tb.pause_streams()
    tb.check_protocol()


@cocotb.test()
async def counters(dut):
    """TERMS = PEs x vectors of the walk; BUSY covers them; STALL_OUT counts backpressure."""
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    e = cfg.engine
    rng = np.random.default_rng(tb.seed + 4)
    layer = random_layer(cfg, rng, kind="conv", in_c=e.rows + 1, h=5, w=5, out_c=e.cols + 1,
                         padding=(1, 1))
    await tb.control("soft_reset")
    tb.pause_streams(None, [1, 0])
    d = await run_layer(tb, layer, what="counters")
    tb.pause_streams()
    g = layer_geometry(cfg, layer)
    vectors = g["M"] * g["NT"] * g["KT"]
    assert d["TERMS"] == vectors * e.pe_count, f"TERMS {d['TERMS']}, expected " \
                                               f"{vectors} vectors x {e.pe_count} PEs"
    assert d["BUSY_CYCLES"] >= vectors, f"BUSY_CYCLES {d['BUSY_CYCLES']} < {vectors} vectors"
    stall_out = await tb.counter("STALL_OUT_CYCLES")
    assert stall_out > 0, "the output backpressure was not counted"
    assert await tb.counter("STALL_IN_CYCLES") > 0, "waiting for the descriptor not counted"
    assert stall_out + await tb.counter("STALL_IN_CYCLES") < d["BUSY_CYCLES"]

    # The interrupt follows STATUS.done when enabled; writing 1 to done acknowledges it.
    lo, _ = tb.field("CONTROL", "irq_enable")
    await tb.write("CONTROL", 1 << lo)
    assert dut.irq.value == 1, "irq low with done set and irq_enable"
    done_bit, _ = tb.field("STATUS", "done")
    await tb.write("STATUS", 1 << done_bit)
    await ClockCycles(dut.clk, 1)
    assert dut.irq.value == 0, "irq still high after acknowledging done"
    await run_layer(tb, random_layer(cfg, rng, kind="matmul", m=3, k=2, n=2), what="irq run")
    assert dut.irq.value == 1, "irq low after a run with irq_enable"
    await tb.write("CONTROL", 0)
    tb.check_protocol()


async def _in_flight(tb, coros, what, held):
    """Run register transactions concurrently (several in flight at once) while the master
    holds ``bready`` or ``rready`` low for ``held`` cycles; return their results in order."""
    tasks = [cocotb.start_soon(c) for c in coros]
    await ClockCycles(tb.dut.clk, held)
    try:
        results = [await with_timeout(t, 20_000, "ns") for t in tasks]
    except SimTimeoutError:
        raise AssertionError(f"{what}: a transaction got no response within 2000 cycles "
                             f"({tb.axil_check.summary()})") from None
    return results


@cocotb.test()
async def bus_stress(dut):
    """Several writes in flight while bready is held low, several reads while rready is;
    then layers with random stalls on all five AXI4-Lite channels and both streams."""
    tb = TB(dut)
    await tb.reset()
    rng = np.random.default_rng(tb.seed + 5)
    scratch, ident = tb.regs["SCRATCH"]["offset"], tb.regs["ID"]["offset"]
    values = [int(v) for v in rng.integers(0, 1 << 32, 4)]
    # Writes: OKAY and SLVERR (ID is read-only) answers alternate, so a response overtaken by
    # the next write changes bresp under a stalled bvalid.
    tb.pause_axil(b=[1] * 60 + [0])
    writes = [(scratch, values[0]), (ident, 1), (scratch, values[1]), (ident, 2),
              (scratch, values[2])]
    resps = await _in_flight(tb, [tb.axil.write(a, v.to_bytes(4, "little"))
                                  for a, v in writes], "writes with bready held low", 40)
    want = [0 if a == scratch else 2 for a, _ in writes]
    assert [int(r.resp) for r in resps] == want, \
        f"write responses {[int(r.resp) for r in resps]}, expected {want}"
    recorded = tb.axil_check.writes[-len(writes):]
    assert [(w[0], w[1], w[3]) for w in recorded] == [(a, v, r) for (a, v), r in
                                                      zip(writes, want)], recorded
    tb.pause_axil(b=None)
    lo, _ = tb.field("STATUS", "reg_error")
    await tb.write("STATUS", 1 << lo)
    # Reads: SCRATCH, ID, an unmapped address (SLVERR, 0) while rready is held low.
    size = tb.manifest["registers"]["size"]
    tb.pause_axil(r=[1] * 60 + [0])
    reads = [scratch, ident, size, scratch]
    got = await _in_flight(tb, [tb.axil.read(a, 4) for a in reads],
                           "reads with rready held low", 40)
    want = [(values[2], 0), (tb.regs["ID"]["reset"], 0), (0, 2), (values[2], 0)]
    got = [(int.from_bytes(r.data, "little"), int(r.resp)) for r in got]
    assert got == want, f"reads {got}, expected {want}"
    tb.pause_axil(r=None)
    tb.check_protocol()
    # Layers under random stalls everywhere.
    for k, (what, layer) in enumerate(itertools.islice(_layers(tb.cfg, rng), 3)):
        s = tb.seed * 100 + 10 * k
        tb.pause_axil(**{ch: random_pauses(s + i, hold=8) for i, ch in
                         enumerate(("aw", "w", "b", "ar", "r"))})
        tb.pause_streams(random_pauses(s + 6, busy=0.4), random_pauses(s + 7, hold=20))
        await run_layer(tb, layer, what=f"{what}, random stalls")
    tb.pause_axil(aw=None, w=None, b=None, ar=None, r=None)
    tb.pause_streams()
    tb.check_protocol()
