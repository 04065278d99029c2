"""The formal proofs (``verify/formal.py``): every property passes, and they can fail.

Every property of ``mulfree formal`` runs here (the CI runs them), each must PASS. The
negative checks build a broken PE, a broken AXI4-Lite slave, a too narrow adder-PE
difference and broken lane units (a max that ignores the partial sum, an adder engine's
depthwise term off by one, an output that withdraws ``valid`` under backpressure) and expect
the same harnesses to FAIL, with a counterexample that the test checks by an independent
computation. A missing tool (yowasp-sby, a solver) fails, it does not skip. The properties'
table in docs/verification.md names every property.
"""

import fnmatch
import re
from pathlib import Path

import pytest
from amaranth.hdl import Module, Mux, Signal

from mulfree.flows.cli import main
from mulfree.params.config import ArrayConfig, int_range
from mulfree.rtl import lanes as lanes_module
from mulfree.rtl.lanes import LaneUnit
from mulfree.rtl.pe import AdderPE, pe_class
from mulfree.rtl.regs import AxiLiteRegisters
from mulfree.params.core_config import CoreConfig
from mulfree.verify import formal, props_lanes, props_pe, props_regs


def _run(name, build, tmp_path):
    return formal.run_property(formal.Property(name, build), tmp_path)


@pytest.mark.parametrize("prop", formal.PROPERTIES, ids=[p.name for p in formal.PROPERTIES])
def test_property_passes(prop, tmp_path):
    result = formal.run_property(prop, tmp_path)
    assert result.status == "PASS", (
        f"{prop.name} ({result.mode}, depth {result.depth}): {result.status}; "
        f"trace {result.trace}, log {result.log}")


@pytest.mark.parametrize("late", [False, True])
def test_a_vacuous_bounded_proof_fails(late, tmp_path):
    """A bmc runs without smtbmc's per-step check of the assumptions; the check afterwards
    (``check_not_vacuous``) fails a proof whose assumptions cannot all hold, from the first
    step or (``late``) from step 3 on, where every assertion, even a false one, would hold."""
    from amaranth.hdl import Assert, Assume, ResetSignal

    def build():
        m = Module()
        x, count = Signal(4, name="x"), Signal(4, name="count")
        m.d.sync += count.eq(count + 1)
        m.d.comb += Assert((count < 3) | (x == 7))      # false whenever x is free
        if late:
            m.d.comb += [Assume(~ResetSignal()), Assume(count < 3)]
        else:
            m.d.comb += [Assume(x == 0), Assume(x == 1)]
        return m, [x], "bmc", 6, "vacuous"

    result = _run("vacuous", build, tmp_path)
    assert result.status == "FAIL", result
    text = Path(result.log).read_text()
    assert "the proof is vacuous" in text and "Status: PASSED" not in text


def test_broken_pe_fails(tmp_path):
    """An adder PE whose operator is off by one for the most negative activation."""
    class OffByOne(AdderPE):
        @classmethod
        def accumulate(cls, cfg, psum, x, code):
            return super().accumulate(cfg, psum, x, code) + (x == cfg.act_range[0])

    cfg = props_pe.SHIPPED["adder_a8"]

    def build():
        m, ports = props_pe.pe_harness(cfg, pe=OffByOne)
        return m, ports, "prove", 1, "broken adder PE"

    result = _run("broken_pe", build, tmp_path)
    assert result.status == "FAIL", (result.status, result.log)
    assert result.trace and result.trace.endswith(".vcd")
    # Some depth's counterexample has the most negative activation.
    xs = [f"x_{d}" for d in (0, 1, 2, 3, 7, 1023)]
    values = formal.read_trace(result.trace, xs)
    lo = cfg.act_range[0] & ((1 << cfg.act_bits) - 1)
    assert any(v[0] == lo for v in values.values()), values


def test_broken_axi_fails(tmp_path):
    """A slave that withdraws BVALID while BREADY is low breaks "held until BREADY"."""
    class Impatient(AxiLiteRegisters):
        def elaborate(self, platform):
            m = super().elaborate(platform)
            bus = self.s_axil
            with m.If(bus.bvalid & ~bus.bready):
                m.d.sync += bus.bvalid.eq(0)
            return m

    def build():
        m, ports = props_regs.regs_harness(Impatient(CoreConfig().register_map))
        return m, ports, "bmc", props_regs.BMC_DEPTH, "impatient slave"

    result = _run("broken_axi", build, tmp_path)
    assert result.status == "FAIL", (result.status, result.log)
    assert result.trace and result.trace.endswith(".vcd")


@pytest.mark.parametrize("act_bits", [8, 6])
def test_adder_difference_needs_its_extra_bit(act_bits, tmp_path):
    """``d = x - w`` in ``act_bits`` bits is wrong for some input: the solver names one, and it
    is an input whose difference leaves the signed ``act_bits`` range (numerics.md, section 4)."""
    cfg = ArrayConfig(pe="adder", act_bits=act_bits)

    def build():
        m, ports = props_pe.narrow_difference_harness(cfg)
        return m, ports, "prove", 1, "adder PE difference in act_bits bits"

    result = _run("narrow_difference", build, tmp_path)
    assert result.status == "FAIL", (result.status, result.log)
    trace = formal.read_trace(result.trace, ["x", "code"])
    x, code = trace["x"][0], trace["code"][0]
    x -= (x >> (act_bits - 1)) << act_bits           # the bits as signed integers
    w = code - ((code >> (act_bits - 1)) << act_bits)
    lo, hi = int_range(act_bits)
    assert not lo <= x - w <= hi, (x, w)


def _signed(value, bits):
    return value - ((value >> (bits - 1)) << bits)


def _lanes(value, n, bits):
    return [_signed((value >> (j * bits)) & ((1 << bits) - 1), bits) for j in range(n)]


class _Wrapped(LaneUnit):
    """A lane unit around a correct one, its streams passed through ``self._wire``."""

    def elaborate(self, platform):
        m = Module()
        m.submodules.inner = inner = LaneUnit(self._cfg)
        m.d.comb += [
            inner.op.eq(self.op), inner.engine.eq(self.engine),
            inner.x.valid.eq(self.x.valid), self.x.ready.eq(inner.x.ready),
            inner.x.payload.data.eq(self.x.payload.data),
            inner.x.payload.psum.eq(self.x.payload.psum),
            inner.x.payload.last.eq(self.x.payload.last),
            inner.w.valid.eq(self.w.valid), self.w.ready.eq(inner.w.ready),
            inner.w.payload.eq(self.w.payload),
            self.y.payload.eq(inner.y.payload), inner.y.ready.eq(self.y.ready),
        ]
        self._wire(m, inner)
        return m


class MaxIgnoresPsum(_Wrapped):
    """A max run's lanes see partial sums of 0: ``max(0, x)`` instead of ``max(psum, x)``."""

    def _wire(self, m, inner):
        m.d.comb += [inner.x.payload.psum.eq(Mux(self.op[0], 0, self.x.payload.psum)),
                     self.y.valid.eq(inner.y.valid)]


class Impatient(_Wrapped):
    """``y.valid`` withdrawn after one cycle of backpressure."""

    def _wire(self, m, inner):
        waited = Signal()
        m.d.sync += waited.eq(self.y.valid & ~self.y.ready)
        m.d.comb += self.y.valid.eq(inner.y.valid & ~waited)


def test_broken_lanes_max_fails(tmp_path):
    """A max that ignores the partial sum: the data property fails on a max run, and the
    counterexample has a beat on which ``max(psum, x) != max(0, x)`` in some lane."""
    cfg = props_lanes.DESIGNS["shift2"]

    def build():
        m, ports = props_lanes.lanes_harness(cfg, dut=MaxIgnoresPsum(cfg))
        return m, ports, "bmc", props_lanes.BMC_DEPTH, "max ignores psum"

    result = _run("broken_lanes_max", build, tmp_path)
    assert result.status == "FAIL", (result.status, result.log)
    t = formal.read_trace(result.trace, ["op", "x_valid", "x_data", "x_psum"])
    assert set(t["op"]) == {1}, t["op"]
    C, a, A = cfg.engine.cols, cfg.engine.act_bits, cfg.acc_width
    differs = [
        step for step, valid in enumerate(t["x_valid"]) if valid and any(
            max(p, x) != max(0, x) for x, p in zip(_lanes(t["x_data"][step], C, a),
                                                    _lanes(t["x_psum"][step], C, A)))]
    assert differs, t


def test_broken_lanes_depthwise_term_fails(tmp_path, monkeypatch):
    """The adder engine's term off by one for the most negative activation, in the lane unit
    of the three-engine core only: the data property fails on a depthwise run of engine 1
    (adder) with that activation in some lane of some beat."""
    class OffByOne(AdderPE):
        @classmethod
        def accumulate(cls, cfg, psum, x, code):
            return super().accumulate(cfg, psum, x, code) + (x == cfg.act_range[0])

    monkeypatch.setattr(lanes_module, "pe_class",
                        lambda kind: OffByOne if kind == "adder" else pe_class(kind))
    cfg = props_lanes.DESIGNS["multi2"]
    assert [e.pe for e in cfg.engines] == ["shift", "adder", "mult"]

    def build():
        m, ports = props_lanes.lanes_harness(cfg)
        return m, ports, "bmc", props_lanes.BMC_DEPTH, "adder term off by one"

    result = _run("broken_lanes_term", build, tmp_path)
    assert result.status == "FAIL", (result.status, result.log)
    t = formal.read_trace(result.trace, ["op", "engine", "x_valid", "x_data"])
    assert set(t["op"]) == {4} and set(t["engine"]) == {1}, t
    C, a = cfg.engine.cols, cfg.engine.act_bits
    lo = cfg.engine.act_range[0]
    assert any(valid and lo in _lanes(t["x_data"][step], C, a)
               for step, valid in enumerate(t["x_valid"])), t


def test_broken_lanes_stream_fails(tmp_path):
    """An output that withdraws ``valid`` under backpressure: the stream proof fails, and
    its counterexample holds ``ready`` low."""
    cfg = props_lanes.DESIGNS["shift2"]

    def build():
        m, ports = props_lanes.stream_harness(cfg, dut=Impatient(cfg))
        return m, ports, "prove", props_lanes.STREAM_PROVE_DEPTH, "impatient lane unit"

    result = _run("broken_lanes_stream", build, tmp_path)
    assert result.status == "FAIL", (result.status, result.log)
    assert result.trace and result.trace.endswith("trace.vcd")
    ready = formal.read_trace(result.trace, ["free_4"])["free_4"]
    assert 0 in ready, ready


def test_lanes_properties_registered():
    names = {p.name for p in formal.PROPERTIES}
    assert set(props_lanes.PROPERTIES) <= names
    assert {"lanes_shift2", "lanes_multi2", "lanes_shift2_stream", "lanes_multi2_stream",
            "lanes_multi2_cover"} <= names


def test_verification_table_names_every_property():
    """Every property is a row (or matches a pattern such as ``pe_*_range``) of the table
    in docs/verification.md, and every name there is a property."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "verification.md").read_text()
    start = text.index("| property | mode | depth |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows += re.findall(r"`([^`]+)`", line.split("|")[1])
    names = [p.name for p in formal.PROPERTIES]
    missing = [n for n in names if not any(fnmatch.fnmatchcase(n, r) for r in rows)]
    assert not missing, missing
    unknown = [r for r in rows if not fnmatch.filter(names, r)]
    assert not unknown, unknown


def test_missing_tool_raises():
    with pytest.raises(formal.FormalToolMissing, match="no-such-formal-tool"):
        formal.find_tool("no-such-formal-tool")


def test_cli(capsys):
    assert main(["formal", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(p.name in out for p in formal.PROPERTIES)
    assert main(["formal", "--only", "no_such_property"]) == 2
    err = capsys.readouterr().err
    assert "--only" in err and "no_such_property" in err and len(err.strip().splitlines()) == 1
    assert main(["formal", "--solver", "minisat", "--list"]) == 2
