"""Formal properties of the core's AXI4-Stream master ``m_axis`` (``rtl/core.py``).

The whole core of a small configuration (a 2x2 shift array, small buffers), every input free:
the AXI4-Lite master (obeying AXI, as in ``props_regs``), the ``s_axis`` master (nothing is
required of it), ``m_axis.tready`` and ``rst``. Asserted:

* ``tdata`` and ``tlast`` held while ``tvalid`` stays high and ``tready`` is low; ``tvalid``
  itself may fall without ``tready`` only when the run ends abnormally (an error or a soft
  reset discards the run, ``docs/interface.md`` "Run lifecycle and errors") — so that part is
  left to ``postproc_stream``, whose block feeds the output FIFO;
* no ``tvalid`` in the cycle after a reset, nor before a write has been accepted on the
  AXI4-Lite bus (a run needs ``CONTROL.start``).

Mode ``prove`` (k-induction): the stability is one-step inductive, so the proof holds for every
reachable state, including those long after the depth a bounded check could reach (the first
result beat of a layer needs a descriptor, its setup and every packet: hundreds of cycles).
"""

from amaranth.hdl import Assert, Assume, Cat, Module, ResetSignal, Signal
from amaranth.lib.wiring import In

from ..params.config import ArrayConfig
from ..params.core_config import CoreConfig
from ..rtl.core import Core


__all__ = ["PROPERTIES", "SMALL_CORE", "core_stream_harness"]


#: A core that elaborates fast: 2x2 shift array, the smallest buffers the tests use.
SMALL_CORE = CoreConfig(engine=ArrayConfig(pe="shift", rows=2, cols=2, max_k=16),
                        stream_width=32, fmap_vectors=16, weight_rows=16, acc_entries=4,
                        max_channels=4, out_vectors=2)
DEPTH = 4
IDLE_DEPTH = 12


def core_stream_harness(cfg=SMALL_CORE, *, idle=False):
    """The ``m_axis`` rules of :class:`Core` ``cfg``; ``idle``: only "no ``tvalid`` before the
    first register write" (true from reset only, so checked by ``bmc``)."""
    m = Module()
    m.submodules.dut = dut = Core(cfg)
    bus, out = dut.s_axil, dut.m_axis

    def past(value, name):
        reg = Signal(len(value), name=name)
        m.d.sync += reg.eq(value)
        return reg

    for ch, payload in (("aw", ("awaddr", "awprot")), ("w", ("wdata", "wstrb")),
                        ("ar", ("araddr", "arprot"))):
        valid, ready = getattr(bus, f"{ch}valid"), getattr(bus, f"{ch}ready")
        waited = past(valid & ~ready, f"{ch}_waited")
        held = valid
        for name in payload:
            sig = getattr(bus, name)
            held = held & (sig == past(sig, f"past_{name}"))
        m.d.comb += Assume(~waited | held)

    past_rst = Signal(reset_less=True)
    m.d.sync += past_rst.eq(ResetSignal())
    written = Signal()
    with m.If(bus.wvalid & bus.wready):
        m.d.sync += written.eq(1)
    waited = past(out.tvalid & ~out.tready, "t_waited")
    payload = past(Cat(out.tdata, out.tlast), "past_payload")
    if idle:
        m.d.comb += Assert(written | ~out.tvalid)
    else:
        m.d.comb += [
            Assert(~(waited & out.tvalid) | (Cat(out.tdata, out.tlast) == payload)),
            Assert(~past_rst | ~out.tvalid),
        ]
    ports = [v for _p, member, v in dut.signature.flatten(dut) if member.flow == In]
    return m, ports


def _build():
    m, ports = core_stream_harness()
    return m, ports, "prove", DEPTH, ("core m_axis: tdata/tlast held while tvalid stays and "
                                      "tready is low, no tvalid after reset")


def _idle():
    m, ports = core_stream_harness(idle=True)
    return m, ports, "bmc", IDLE_DEPTH, "core m_axis: no tvalid before a register write"


#: name -> build(): (module, ports, mode, depth, description)
PROPERTIES = {"core_m_axis": _build, "core_m_axis_idle": _idle}
