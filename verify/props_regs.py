"""Formal properties of the AXI4-Lite register block (``rtl/regs.py``), from ``docs/interface.md``.

The block is built as ``gen.core_manifest.write_regs_design`` builds it: an
:class:`~mulfree.rtl.regs.AxiLiteRegisters` of a core's register map, every core-side port free.
The master is free too, except that it obeys AXI (``Assume``): a valid, once raised, stays
raised with the same payload until its ready (a reset releases it). Every property is checked
from the reset state, by bounded model check (``bmc``), and ``rst`` is free in every cycle.

Asserted ("Bus rules" of ``docs/interface.md``):

* ``bvalid`` and ``bresp`` held until ``bready``; ``rvalid``, ``rdata`` and ``rresp`` held until
  ``rready``; no ``bvalid``/``rvalid`` in the cycle after a reset;
* a B only for a write whose AW and W were both accepted, one B per such write; the write takes
  effect (its B rises) in the cycle after both are held and no B is pending;
* AW and W each held in a one-entry buffer: ``awready``/``wready`` low exactly while their
  buffer holds an address / data not yet written, so at most one write waits besides the
  pending B;
* one read outstanding: ``arready`` low exactly while an R waits; an R only for an accepted AR,
  one per AR, in the cycle after it.

Covered: a write completes (OKAY), a read completes, a write whose B waited on ``bready`` and
then a second write completes, a write and a read answered SLVERR.
"""

from amaranth.hdl import Assert, Assume, Cover, Module, ResetSignal, Signal
from amaranth.lib.wiring import In

from ..params.core_config import CoreConfig
from ..params.regmap import RESP_OKAY, RESP_SLVERR
from ..rtl.regs import AxiLiteRegisters


__all__ = ["PROPERTIES", "BMC_DEPTH", "COVER_DEPTH", "regs_harness"]


BMC_DEPTH = 20
COVER_DEPTH = 12
_COUNT = 6          # bits of the harness's event counters: more than either depth


def _inputs(dut):
    """Every signal flowing into ``dut`` (the free inputs of the harness)."""
    return [value for _path, member, value in dut.signature.flatten(dut) if member.flow == In]


def regs_harness(dut=None, *, cover=False):
    """The harness around ``dut`` (default: the register block of the default core)."""
    dut = AxiLiteRegisters(CoreConfig().register_map) if dut is None else dut
    m = Module()
    m.submodules.dut = dut
    bus = dut.s_axil

    def past(value, name):
        """``value`` one cycle ago; 0 after a reset."""
        reg = Signal(len(value), name=name)
        m.d.sync += reg.eq(value)
        return reg

    past_rst = Signal(reset_less=True)
    m.d.sync += past_rst.eq(ResetSignal())

    # The master obeys AXI: valid and payload held until ready.
    for ch, payload in (("aw", ("awaddr", "awprot")), ("w", ("wdata", "wstrb")),
                        ("ar", ("araddr", "arprot"))):
        valid, ready = getattr(bus, f"{ch}valid"), getattr(bus, f"{ch}ready")
        waited = past(valid & ~ready, f"{ch}_waited")
        held = valid
        for name in payload:
            sig = getattr(bus, name)
            held = held & (sig == past(sig, f"past_{name}"))
        m.d.comb += Assume(~waited | held)

    aw_hs = bus.awvalid & bus.awready
    w_hs = bus.wvalid & bus.wready
    ar_hs = bus.arvalid & bus.arready
    b_hs = bus.bvalid & bus.bready
    r_hs = bus.rvalid & bus.rready
    b_waited = past(bus.bvalid & ~bus.bready, "b_waited")
    r_waited = past(bus.rvalid & ~bus.rready, "r_waited")
    b_new = bus.bvalid & ~b_waited          # a B that was not already pending: a new response
    r_new = bus.rvalid & ~r_waited

    # Event counts since the last reset (handshakes of earlier cycles, responses until now).
    counts = {n: Signal(_COUNT, name=f"n_{n}") for n in ("aw", "w", "ar", "b", "r", "bh")}
    m.d.sync += [counts["aw"].eq(counts["aw"] + aw_hs), counts["w"].eq(counts["w"] + w_hs),
                 counts["ar"].eq(counts["ar"] + ar_hs), counts["b"].eq(counts["b"] + b_new),
                 counts["r"].eq(counts["r"] + r_new), counts["bh"].eq(counts["bh"] + b_hs)]
    b_issued = counts["b"] + b_new
    r_issued = counts["r"] + r_new
    held_aw = counts["aw"] - b_issued       # accepted addresses not yet written
    held_w = counts["w"] - b_issued
    held_ar = counts["ar"] - r_issued
    # Negative differences wrap to large unsigned values, so "<= 1" also says ">= 0".
    held_aw, held_w, held_ar = (v[:_COUNT] for v in (held_aw, held_w, held_ar))
    both_free = past((held_aw == 1) & (held_w == 1) & ~bus.bvalid, "write_due")

    if cover:
        b_stalled = Signal()
        with m.If(b_waited):
            m.d.sync += b_stalled.eq(1)
        m.d.comb += [
            Cover(b_hs & (bus.bresp == RESP_OKAY)),
            Cover(r_hs),
            Cover(b_stalled & b_hs & (counts["bh"] >= 1)),
            Cover(bus.bvalid & (bus.bresp == RESP_SLVERR)),
            Cover(bus.rvalid & (bus.rresp == RESP_SLVERR)),
        ]
        return m, _inputs(dut)

    m.d.comb += [
        # Responses held until taken.
        Assert(~b_waited | (bus.bvalid & (bus.bresp == past(bus.bresp, "past_bresp")))),
        Assert(~r_waited | (bus.rvalid & (bus.rdata == past(bus.rdata, "past_rdata")) &
                            (bus.rresp == past(bus.rresp, "past_rresp")))),
        # A reset clears both responses.
        Assert(~past_rst | (~bus.bvalid & ~bus.rvalid)),
        # Writes: a B per accepted AW + W, never one without; one-entry buffers.
        Assert((held_aw <= 1) & (held_w <= 1)),
        Assert(bus.awready == (held_aw == 0)),
        Assert(bus.wready == (held_w == 0)),
        Assert(~both_free | b_new),
        # Reads: one outstanding, an R per accepted AR in the next cycle, never one without.
        Assert(held_ar == 0),
        Assert(bus.arready == ~bus.rvalid),
    ]
    return m, _inputs(dut)


def _bmc():
    m, ports = regs_harness()
    return m, ports, "bmc", BMC_DEPTH, ("AXI4-Lite slave: responses held, one B per AW+W, one R "
                                        "per AR, one-entry buffers, reset clears valids")


def _cover():
    m, ports = regs_harness(cover=True)
    return m, ports, "cover", COVER_DEPTH, ("AXI4-Lite: write and read complete, a stalled B "
                                            "then a second write, SLVERR on B and R")


#: name -> build(): (module, ports, mode, depth, description)
PROPERTIES = {"axil_regs": _bmc, "axil_regs_cover": _cover}
