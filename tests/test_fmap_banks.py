""":class:`mulfree.rtl.fmap_banks.FmapBanks` in ``amaranth.sim``: two feature-map banks, the
result writer and the resident shortcut's reader (layer chaining, issue 16).

Each scenario is two or three runs of the unit, reset in between as the core's shell resets its
datapath (a reset clears the reader, never the memories):

1. *Preload*: bank ``1 - b`` gets the shortcut's source tensor, through the loader's port
   (``in_bank = 1 - b``) or through the result writer (``in_bank = b``, ``keep``, as a
   previous layer's kept output would come, in a random address order); bank ``b`` gets the
   first part of the run's input through the loader's port.
2. *Run* (``in_bank = b``): the reader streams the source into a model of the aligner (random
   ``sc_hold``), the results come in the core's output order (per block, per ``nt``, per pixel
   of the block, random block sizes; or a global pool's ``NT`` vectors) with random gaps and
   a random head start over ``start``, the loader writes the rest of the input, and the issue
   port reads written addresses of bank ``b`` at random per-lane addresses.
3. *Read back* both banks through the issue port (``in_bank`` set to each).

Checked against a Python model of the two banks: the reader delivers exactly the source
vectors, in order, with their original values (a result written over one before it was read
shows up); the results sit at ``pixel * NT + nt``; the issue port returns the in-bank's
contents; with ``keep = 0`` the result stream is never back-pressured and no bank changes.
Last, ResNet's second convolution: the reader drives the real
:class:`~mulfree.rtl.stream_loader.ShortcutAligner` (its ``hold`` included) while the results,
as early as post-processing's shortcut watermark lets the core produce them, are written in
place: the aligned shortcut equals the golden ``shortcut_source``, at the aligner's full rate,
and the interlock waits exactly where docs/architecture.md says (never for the identity).
"""

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, ResetInserter, Signal
from amaranth.sim import Simulator

from mulfree.params.config import ArrayConfig, ConfigError
from mulfree.params.core_config import CoreConfig
from mulfree.params.layer_golden import shortcut_source
from mulfree.rtl.fmap_banks import FmapBanks, fmap_addr_bits
from mulfree.rtl.stream_loader import ShortcutAligner

DEPTH = 1024


def config(lanes):
    return CoreConfig(engine=ArrayConfig(pe="shift", rows=lanes, cols=lanes, max_k=16),
                      fmap_vectors=DEPTH, weight_rows=16, acc_entries=4, max_channels=64,
                      out_vectors=2, shortcut_vectors=DEPTH)


def random_word(rng, bits):
    """A uniformly random ``bits``-bit integer (wider than NumPy's int64)."""
    return int.from_bytes(rng.bytes((bits + 7) // 8), "little") & ((1 << bits) - 1)


def geometry(rng, lanes):
    """A residual layer's sizes: the identity shortcut (stride 1, ``NT = NTS``) or option A
    (stride 1 or 2, twice the channels), a source map up to 12x12."""
    c_in = int(rng.integers(1, 3 * lanes + 1))
    nts = -(-c_in // lanes)
    if rng.random() < 0.4:
        stride, nt = 1, nts
    else:
        stride, nt = int(rng.choice([1, 2])), -(-2 * c_in // lanes)
    oh, ow = (int(v) for v in rng.integers(1, 12 // stride + 1, 2))
    return {"src": oh * ow * stride * stride * nts, "pixels": oh * ow, "nt": nt}


def result_order(rng, pixels, nt, pool):
    """Result addresses in the core's output order: per block (random sizes), per ``nt``,
    per pixel of the block; a global pool's ``NT`` vectors at ``0..NT-1``."""
    if pool:
        return list(range(nt))
    order, p = [], 0
    while p < pixels:
        m_block = int(rng.integers(1, pixels + 1))
        block = range(p, min(p + m_block, pixels))
        order += [q * nt + t for t in range(nt) for q in block]
        p = block.stop
    return order


class Bench:
    """One simulator per lane count, running any number of scenarios one after another."""

    def __init__(self, lanes):
        self.cfg = config(lanes)
        self.lanes = lanes
        self.fa = fmap_addr_bits(self.cfg)
        self.dut = FmapBanks(self.cfg)
        self.rst = Signal()
        self.top = ResetInserter({"sync": self.rst})(self.dut)
        self.scenarios = []

    def run(self):
        async def bench(ctx):
            for sc in self.scenarios:
                await self.scenario(ctx, sc)

        sim = Simulator(self.top)
        sim.add_clock(1e-8)
        sim.add_testbench(bench)
        sim.run()

    async def reset(self, ctx):
        d = self.dut
        for port in (d.start, d.acts_we, d.rd_en, d.res.valid, d.keep, d.short_resident,
                     d.sc_hold):
            ctx.set(port, 0)
        ctx.set(self.rst, 1)
        await ctx.tick()
        ctx.set(self.rst, 0)

    async def acts(self, ctx, writes):
        """Loader writes ``(address, value)``, one per cycle, into bank ``in_bank``."""
        d = self.dut
        for addr, value in writes:
            ctx.set(d.acts_we, 1)
            ctx.set(d.acts_addr, addr)
            ctx.set(d.acts_data, value)
            await ctx.tick()
        ctx.set(d.acts_we, 0)

    async def results(self, ctx, writes):
        """Result writes ``(address, value)`` into bank ``1 - in_bank`` (keep, no reader)."""
        d = self.dut
        ctx.set(d.keep, 1)
        for addr, value in writes:
            ctx.set(d.res.valid, 1)
            ctx.set(d.res.payload, {"addr": addr, "data": value})
            assert ctx.get(d.res.ready)
            await ctx.tick()
        ctx.set(d.res.valid, 0)
        ctx.set(d.keep, 0)

    async def read_back(self, ctx, rng, bank, model):
        """Read every address of ``model`` through the issue port, lane ``j`` at its own
        address, with ``in_bank = bank``; compare lane by lane."""
        d, R, a = self.dut, self.lanes, self.cfg.engine.act_bits
        await self.reset(ctx)
        ctx.set(d.in_bank, bank)
        addrs = sorted(model)
        if not addrs:
            return
        pending = None
        for i in range(len(addrs) + 1):
            if pending is not None:
                got = ctx.get(d.rd_data)
                for j, addr in enumerate(pending):
                    lane = (got >> (j * a)) & ((1 << a) - 1)
                    want = (model[addr] >> (j * a)) & ((1 << a) - 1)
                    assert lane == want, f"bank {bank} address {addr} lane {j}: {lane} != {want}"
            if i == len(addrs):
                break
            pending = [addrs[(i + int(rng.integers(len(addrs)))) % len(addrs)] if j else addrs[i]
                       for j in range(R)]
            ctx.set(d.rd_addr, sum(ad << (j * self.fa) for j, ad in enumerate(pending)))
            ctx.set(d.rd_en, 1)
            await ctx.tick()
            ctx.set(d.rd_en, 0)

    async def scenario(self, ctx, sc):
        d, rng, R, a = self.dut, sc["rng"], self.lanes, self.cfg.engine.act_bits
        b, keep, resident = sc["in_bank"], sc["keep"], sc["resident"]

        def vec():
            return random_word(rng, R * a)
        banks = [{}, {}]
        # ---- 1. Preload: the source tensor into bank 1 - b, the first inputs into bank b.
        src = [vec() for _ in range(sc["src"])]
        pre = list(enumerate(src)) + [(sc["src"] + k, vec()) for k in range(4)]
        await self.reset(ctx)
        if sc["preload_by_results"]:
            rng.shuffle(pre)
            ctx.set(d.in_bank, b)
            await self.results(ctx, pre)
        else:
            ctx.set(d.in_bank, 1 - b)
            await self.acts(ctx, pre)
        banks[1 - b].update(pre)
        inputs = [vec() for _ in range(int(rng.integers(1, 200)))]
        split = int(rng.integers(1, len(inputs) + 1))
        ctx.set(d.in_bank, b)
        await self.acts(ctx, list(enumerate(inputs[:split])))
        banks[b].update(enumerate(inputs[:split]))
        written = split                         # inputs in bank b before this cycle

        # ---- 2. The run.
        await self.reset(ctx)
        ctx.set(d.in_bank, b)
        ctx.set(d.keep, keep)
        ctx.set(d.short_resident, resident)
        ctx.set(d.short_vectors, sc["src"] if resident else 0)
        order = result_order(rng, sc["pixels"], sc["nt"], sc["pool"])
        res = [(addr, vec()) for addr in order]
        head = int(rng.integers(0, 40))         # results presented this many cycles early
        held = sc.get("held", 0)                # sc_hold high for the run's first cycles
        p_hold, p_gap = rng.random() * 0.6, rng.random() * 0.6
        delivered, r_next, valid, issue_pending = [], 0, False, None
        blocked = 0                             # cycles a valid result waited
        budget = 50 * (sc["src"] + len(res) + len(inputs)) + 2000
        for cycle in range(budget):
            if cycle == head:
                ctx.set(d.start, 1)
            elif cycle == head + 1:
                ctx.set(d.start, 0)
            # The aligner: its hold, then a delivered vector is taken.
            hold = cycle < head + held or rng.random() < p_hold
            ctx.set(d.sc_hold, hold)
            if ctx.get(d.sc_we):
                assert not hold, "sc_we while sc_hold"
                delivered.append(ctx.get(d.sc_data))
            # The results: valid stays until accepted (the stream rule), gaps otherwise.
            if not valid and r_next < len(res) and rng.random() >= p_gap:
                valid = True
                ctx.set(d.res.payload, {"addr": res[r_next][0], "data": res[r_next][1]})
            ctx.set(d.res.valid, valid)
            if not keep:
                assert ctx.get(d.res.ready), "keep = 0 back-pressured the results"
            blocked += valid and not ctx.get(d.res.ready)
            if valid and ctx.get(d.res.ready):
                if keep:
                    banks[1 - b][res[r_next][0]] = res[r_next][1]
                r_next, valid = r_next + 1, False
            # The issue port: the data of last cycle's read (held when rd_en was low).
            if issue_pending is not None:
                got = ctx.get(d.rd_data)
                want = sum(((banks[b][ad] >> (j * a)) & ((1 << a) - 1)) << (j * a)
                           for j, ad in enumerate(issue_pending))
                assert got == want, f"issue read of bank {b} at {issue_pending}"
            if rng.random() < 0.7:
                issue_pending = [int(rng.integers(written)) for _ in range(R)]
                ctx.set(d.rd_addr, sum(ad << (j * self.fa)
                                       for j, ad in enumerate(issue_pending)))
                ctx.set(d.rd_en, 1)
            else:                               # the port holds: any address now
                ctx.set(d.rd_addr, sum(int(rng.integers(DEPTH)) << (j * self.fa)
                                       for j in range(R)))
                ctx.set(d.rd_en, 0)
            # The loader streams the rest of the input into bank b.
            stream_act = written < len(inputs) and rng.random() < 0.5
            ctx.set(d.acts_we, stream_act)
            if stream_act:
                ctx.set(d.acts_addr, written)
                ctx.set(d.acts_data, inputs[written])
            await ctx.tick()
            if stream_act:
                banks[b][written] = inputs[written]
                written += 1
            reader_done = not resident or ctx.get(d.sc_done)
            if reader_done and r_next == len(res) and written == len(inputs) and cycle > head:
                break
        else:
            raise AssertionError(f"no progress in {budget} cycles: {len(delivered)} of "
                                 f"{sc['src']} shortcut vectors, {r_next} of {len(res)} results")
        if resident:
            assert delivered == src, "shortcut vectors delivered differ from the source"
            assert ctx.get(d.sc_ptr) == len(src)
        else:
            assert delivered == [] and ctx.get(d.sc_ptr) == 0
        sc["stats"] = {"cycles": cycle + 1, "delivered": len(delivered), "results": len(res),
                       "blocked": blocked}

        # ---- 3. Both banks, read back through the issue port.
        await self.read_back(ctx, rng, 1 - b, banks[1 - b])
        await self.read_back(ctx, rng, b, banks[b])


def scenario(rng, lanes, **fixed):
    sc = geometry(rng, lanes)
    sc.update(rng=rng, in_bank=int(rng.integers(2)), keep=int(rng.random() < 0.75),
              resident=int(rng.random() < 0.8), pool=rng.random() < 0.2,
              preload_by_results=rng.random() < 0.5)
    sc.update(fixed)
    return sc


@pytest.mark.parametrize("lanes", range(2, 9))
def test_random_runs(lanes):
    """Random geometries, both input banks, keep and resident on and off."""
    rng = np.random.default_rng(100 + lanes)
    bench = Bench(lanes)
    bench.scenarios = [scenario(rng, lanes) for _ in range(6)]
    bench.scenarios.append(scenario(rng, lanes, keep=1, resident=1, pool=False))
    bench.run()


def test_interlock_in_place():
    """In place, results started early and the reader held back for 60 cycles: without the
    interlock the first results overwrite source vectors before they are read."""
    rng = np.random.default_rng(7)
    bench = Bench(4)
    for b in (0, 1):
        bench.scenarios.append(dict(rng=rng, in_bank=b, keep=1, resident=1, pool=False,
                                    preload_by_results=False, src=8 * 8 * 2, pixels=64,
                                    nt=2, held=60))
    bench.run()


def test_keep_off_never_blocks():
    """keep = 0 with a resident shortcut held back: results flow, both banks unchanged."""
    rng = np.random.default_rng(8)
    bench = Bench(3)
    bench.scenarios = [dict(rng=rng, in_bank=b, keep=0, resident=1, pool=False,
                            preload_by_results=True, src=6 * 6, pixels=36, nt=1, held=50)
                       for b in (0, 1)]
    bench.run()


def test_rows_must_equal_cols():
    cfg = CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=3, max_k=16))
    with pytest.raises(ConfigError) as err:
        FmapBanks(cfg)
    assert err.value.param == "rows" and "rows=4, cols=3" in str(err.value)


class Chained(Elaboratable):
    """The reader wired to the real aligner as the core would: ``we``, ``data``, ``hold``."""

    def __init__(self, cfg):
        self.banks, self.align = FmapBanks(cfg), ShortcutAligner(cfg)

    def elaborate(self, platform):
        m = Module()
        m.submodules.banks, m.submodules.align = banks, align = self.banks, self.align
        m.d.comb += [align.we.eq(banks.sc_we), align.data.eq(banks.sc_data),
                     banks.sc_hold.eq(align.hold)]
        return m


@pytest.mark.parametrize("lanes", [2, 3, 4, 8])
def test_in_place_residual_with_the_aligner(lanes):
    """ResNet's second convolution on the banks: the kept tensor in bank ``1 - b`` is the
    shortcut source, read into the real ShortcutAligner (its ``hold`` included), while the
    results are written over it in place (``keep``), in the core's order, each as soon as the
    core could produce it: once its aligned shortcut vector is complete (the aligner's
    ``done``, post-processing's watermark). The aligned shortcut equals the golden
    ``shortcut_source`` (identity; option A, stride 1 or 2, channel offsets), bank ``1 - b``
    then holds the results at ``pixel * NT + nt`` (and the source past them), the reader
    loses no cycle (one vector per cycle, plus the aligner's one hold per kept pixel when the
    offset is no multiple of ``cols``), and the interlock waits as docs/architecture.md says:
    never for the identity, only in the first output row for a stride-2 option A, and for a
    stride-1 option A."""
    cfg = config(lanes)
    a = cfg.engine.act_bits
    rng = np.random.default_rng(200 + lanes)
    cases = []
    for kind in ("identity", "A1", "A2", "A1", "A2"):
        c_in = int(rng.integers(max(2, lanes // 2 + 1), 3 * lanes + 1))
        stride = 2 if kind == "A2" else 1
        out_c, off = (c_in, 0) if kind == "identity" else \
            (2 * c_in, int(rng.integers(0, c_in + 1)))
        oh, ow = (int(v) for v in rng.integers(2, 12 // stride + 1, 2))
        x = rng.integers(0, 1 << a, (c_in, oh * stride, ow * stride))
        cases.append((kind, x, out_c, stride, off, int(rng.integers(2))))
    dut = Chained(cfg)
    rst = Signal()
    banks, align = dut.banks, dut.align

    async def reset(ctx):
        ctx.set(rst, 1)
        await ctx.tick()
        ctx.set(rst, 0)

    async def bench(ctx):
        for kind, x, out_c, stride, off, b in cases:
            c_in, sh, sw = x.shape
            nts, nt = -(-c_in // lanes), -(-out_c // lanes)
            oh, ow = sh // stride, sw // stride
            # The source in ACTS layout, garbage in the lanes past c_in (the aligner zeroes).
            src = []
            for p in range(sh * sw):
                for t in range(nts):
                    lanes_v = [int(x[c, p // sw, p % sw]) if c < c_in else
                               int(rng.integers(1 << a))
                               for c in range(t * lanes, (t + 1) * lanes)]
                    src.append(sum(v << (j * a) for j, v in enumerate(lanes_v)))
            await reset(ctx)
            ctx.set(banks.in_bank, 1 - b)
            for addr, v in enumerate(src):
                ctx.set(banks.acts_we, 1)
                ctx.set(banks.acts_addr, addr)
                ctx.set(banks.acts_data, v)
                await ctx.tick()
            ctx.set(banks.acts_we, 0)
            # The run: in bank b, shortcut resident in 1 - b, results kept in place.
            await reset(ctx)
            ctx.set(banks.in_bank, b)
            ctx.set(banks.short_resident, 1)
            ctx.set(banks.keep, 1)
            ctx.set(banks.short_vectors, len(src))
            for port, v in (("short_c", c_in), ("short_off", off), ("short_stride", stride),
                            ("out_w", ow), ("nt", nt), ("nts", nts)):
                ctx.set(getattr(align, port), v)
            await ctx.tick()                    # the aligner registers its offset
            ctx.set(banks.start, 1)
            await ctx.tick()
            ctx.set(banks.start, 0)
            res = [(addr, random_word(rng, lanes * a))
                   for addr in result_order(rng, oh * ow, nt, False)]
            writes, cycles, reader_cycles, r_next, blocked = {}, 0, None, 0, 0
            waited = set()                      # output pixels of results that waited
            while r_next < len(res) or reader_cycles is None or ctx.get(align.hold):
                if ctx.get(align.wr_en):
                    writes[ctx.get(align.wr_addr)] = ctx.get(align.wr_data)
                if reader_cycles is None and ctx.get(banks.sc_done) and not ctx.get(align.hold):
                    reader_cycles = cycles
                valid = r_next < len(res) and res[r_next][0] < ctx.get(align.done)
                ctx.set(banks.res.valid, valid)
                if valid:
                    ctx.set(banks.res.payload, {"addr": res[r_next][0], "data": res[r_next][1]})
                    if ctx.get(banks.res.ready):
                        r_next += 1
                    else:
                        blocked += 1
                        waited.add(res[r_next][0] // nt)
                cycles += 1
                assert cycles < 4 * (len(src) + len(res)) + 10, "no progress"
                await ctx.tick()
            ctx.set(banks.res.valid, 0)
            split = off % lanes and off // lanes + nts < nt    # a carry-only last tile
            holds = oh * ow if split else 0
            assert reader_cycles == len(src) + holds + 1, (reader_cycles, len(src), holds)
            assert ctx.get(align.done) == oh * ow * nt
            # The aligned shortcut: the tiles it reaches, from the golden model.
            gold = shortcut_source(x, out_c, stride, off)
            lo = off // lanes
            hi = min(nt - 1, lo + nts - 1 + (off % lanes > 0))
            want = {}
            for p in range(oh * ow):
                for n in range(lo, hi + 1):
                    vals = [int(gold[c, p // ow, p % ow]) if c < out_c else 0
                            for c in range(n * lanes, (n + 1) * lanes)]
                    want[p * nt + n] = sum(v << (j * a) for j, v in enumerate(vals))
            assert writes == want, f"aligned shortcut differs ({kind}, {c_in}->{out_c}, " \
                                   f"offset {off})"
            if kind == "identity":
                assert blocked == 0, f"identity: the interlock waited {blocked} cycles"
            elif kind == "A1":
                assert blocked > 0, "stride-1 option A: the interlock never waited"
            else:
                assert all(p < ow for p in waited), f"stride 2: pixels {sorted(waited)} waited"
            # Bank 1 - b now: the results in place, the source past them.
            bank = dict(enumerate(src))
            bank.update(res)
            await reset(ctx)
            ctx.set(banks.in_bank, 1 - b)
            for addr in range(len(bank) + 1):
                if addr:
                    assert ctx.get(banks.rd_data) == bank[addr - 1], f"{kind}: address {addr - 1}"
                if addr == len(bank):
                    break
                ctx.set(banks.rd_addr, sum(addr << (j * fmap_addr_bits(cfg))
                                           for j in range(lanes)))
                ctx.set(banks.rd_en, 1)
                await ctx.tick()
            ctx.set(banks.rd_en, 0)

    sim = Simulator(ResetInserter({"sync": rst})(dut))
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
