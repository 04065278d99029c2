"""The formal proofs (``verify/formal.py``): every property passes, and they can fail.

Every property of ``mulfree formal`` runs here (the CI runs them), each must PASS. The
negative checks build a broken PE, a broken AXI4-Lite slave and a too narrow adder-PE
difference and expect the same harnesses to FAIL, with a counterexample that the test checks
by an independent computation. A missing tool (yowasp-sby, a solver) fails, it does not skip.
"""

import pytest

from mulfree.flows.cli import main
from mulfree.params.config import ArrayConfig, int_range
from mulfree.rtl.pe import AdderPE
from mulfree.rtl.regs import AxiLiteRegisters
from mulfree.params.core_config import CoreConfig
from mulfree.verify import formal, props_pe, props_regs


def _run(name, build, tmp_path):
    return formal.run_property(formal.Property(name, build), tmp_path)


@pytest.mark.parametrize("prop", formal.PROPERTIES, ids=[p.name for p in formal.PROPERTIES])
def test_property_passes(prop, tmp_path):
    result = formal.run_property(prop, tmp_path)
    assert result.status == "PASS", (
        f"{prop.name} ({result.mode}, depth {result.depth}): {result.status}; "
        f"trace {result.trace}, log {result.log}")


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
