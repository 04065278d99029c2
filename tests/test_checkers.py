"""The protocol checkers (``mulfree.sim.checkers``) catch broken protocols and pass good ones.

A small Verilog DUT, a stream master and an AXI4-Lite slave whose ``mode`` input switches on
one protocol bug at a time (``mulfree.sim.tb_checkers.MODES``), runs under Icarus with the
scenarios of ``mulfree.sim.tb_checkers``: the correct mode must pass, every bug must fail its
scenario with the checker's message naming the rule. The simulated board's C++ checks
(``sim/harness.cpp``) are run on a correct core against right and wrong packet lengths. A
missing simulator fails the test.
"""

import json

import numpy as np
import pytest

from mulfree.gen.core_manifest import core_manifest
from mulfree.host.layer_stream import Layer, expected_beats, pack_layer, stream_beats
from mulfree.params.layer_golden import PostParams
from mulfree.sim.board import SimCore, beats_to_bytes, build_sim_core, bytes_to_beats
from mulfree.sim.runner import build_verilog, run_cocotb
from mulfree.sim.sim_core import ProtocolError
from mulfree.sim.tb_checkers import MODES, PACKET

from cores import SHIFT_4X4, generated


DUT = """
module checker_dut (
    input clk, input rst, input [3:0] mode,
    output reg m_axis__tvalid, input m_axis__tready, output reg [7:0] m_axis__tdata,
    output reg m_axis__tlast,
    input [7:0] s_axil__awaddr, input [2:0] s_axil__awprot, input s_axil__awvalid,
    output s_axil__awready,
    input [31:0] s_axil__wdata, input [3:0] s_axil__wstrb, input s_axil__wvalid,
    output s_axil__wready,
    output reg [1:0] s_axil__bresp, output reg s_axil__bvalid, input s_axil__bready,
    input [7:0] s_axil__araddr, input [2:0] s_axil__arprot, input s_axil__arvalid,
    output s_axil__arready,
    output reg [31:0] s_axil__rdata, output reg [1:0] s_axil__rresp, output reg s_axil__rvalid,
    input s_axil__rready
);
    // Stream: packets of PACKET beats, tdata counting 0, 1, 2...
    reg [7:0] beat;
    reg [7:0] count;
    always @(posedge clk) begin
        if (rst) begin
            m_axis__tvalid <= 0; m_axis__tdata <= 0; m_axis__tlast <= 0;
            beat <= 0; count <= 0;
        end else if (!m_axis__tvalid || m_axis__tready) begin
            m_axis__tvalid <= 1;
            m_axis__tdata <= count;
            count <= count + 1;
            m_axis__tlast <= mode == 2 ? beat == 1 : mode == 4 ? 0 : beat == PACKET - 1;
            beat <= beat == PACKET - 1 ? 0 : beat + 1;
        end else begin
            if (mode == 1) m_axis__tdata <= m_axis__tdata + 1;
            if (mode == 3) begin
                m_axis__tvalid <= 0; count <= m_axis__tdata;   // re-sent later
                beat <= beat == 0 ? PACKET - 1 : beat - 1;
            end
        end
    end

    // AXI4-Lite: one register; AW and W each in a one-entry buffer.
    reg aw_full, w_full, early, extra;
    reg [31:0] w_data, value;
    reg [7:0] writes;
    wire do_write = aw_full && (w_full || mode == 6) && !s_axil__bvalid;
    assign s_axil__awready = !aw_full;
    assign s_axil__wready = !w_full && (mode != 6 || early);
    assign s_axil__arready = !s_axil__rvalid;
    always @(posedge clk) begin
        if (rst) begin
            aw_full <= 0; w_full <= 0; early <= 0; extra <= 0; writes <= 0; value <= 0;
            s_axil__bvalid <= 0; s_axil__bresp <= 0;
            s_axil__rvalid <= 0; s_axil__rdata <= 0; s_axil__rresp <= 0;
        end else begin
            if (s_axil__awvalid && s_axil__awready) aw_full <= 1;
            if (s_axil__wvalid && s_axil__wready) begin
                w_full <= 1; w_data <= s_axil__wdata;
            end
            if (s_axil__bvalid && s_axil__bready) begin
                if (mode == 8 && !extra) extra <= 1;        // a second B for the same write
                else s_axil__bvalid <= 0;
            end
            if (do_write) begin
                aw_full <= 0; w_full <= 0; early <= 1; writes <= writes + 1;
                value <= mode == 6 ? s_axil__wdata : w_data;
                s_axil__bvalid <= !(mode == 5 && writes[0]);
                s_axil__bresp <= 0;
            end
            if (s_axil__arvalid && s_axil__arready) begin
                s_axil__rvalid <= 1; s_axil__rdata <= value; s_axil__rresp <= 0;
            end else if (s_axil__rvalid && s_axil__rready) begin
                s_axil__rvalid <= 0;
            end else if (s_axil__rvalid && mode == 7) begin
                s_axil__rdata <= s_axil__rdata + 1;
            end
        end
    end
endmodule
""".replace("PACKET", str(PACKET))

# The message each bug must fail with (a part of it).
EXPECTED = {
    "payload_change": "m_axis: cycle 3: payload changed while stalled: m_axis__tdata 0x1->0x2",
    "early_last": "last on beat 1 of packet 0",
    "valid_drop": "tvalid fell before its handshake",
    "missing_last": "no last on beat 2",
    "drop_b": "1 write(s) without B",
    "b_before_w": "B: bvalid with no write to answer (AW 1, W 0",
    "rdata_change": "R: payload changed while stalled: s_axil__rdata 0x11->0x12",
    "double_b": "B: bvalid with no write to answer",
}


def test_checkers_catch_broken_protocols(tmp_path):
    (tmp_path / "checker_dut.v").write_text(DUT)
    (tmp_path / "manifest.json").write_text(json.dumps({"top": "checker_dut"}))
    runner = build_verilog(tmp_path / "checker_dut.v", "checker_dut", "icarus", tmp_path)
    result = run_cocotb(runner, tmp_path / "manifest.json", "mulfree.sim.tb_checkers",
                        seed=1)
    assert set(result.tests) == {"correct_stream", "correct_axil", *EXPECTED}, \
        f"ran {sorted(result.tests)}"
    assert set(MODES) == {"correct", *EXPECTED}
    for name in ("correct_stream", "correct_axil"):
        assert result.tests[name] is None, f"{name} failed: {result.tests[name]}"
    for name, phrase in EXPECTED.items():
        message = result.tests[name]
        assert message is not None, f"{name}: the broken protocol passed the checkers"
        assert phrase in message, f"{name}: failed with {message!r}, expected {phrase!r}"
        assert "\n" not in message.strip(), f"{name}: message of several lines: {message!r}"


def test_board_harness_checks(board_cache, tmp_path):
    """The simulated board's C++ checks: a correct run passes them; a result packet length
    other than the core's makes the run raise ProtocolError naming the beat."""
    cfg = SHIFT_4X4
    _, j_path = generated(cfg)
    core = SimCore(build_sim_core(j_path, build_dir=board_cache), core_manifest(cfg))
    rng = np.random.default_rng(5)
    e = cfg.engine
    layer = Layer(x=rng.integers(*e.act_range, (e.rows + 1, 1, 6), endpoint=True),
                  w_codes=rng.integers(0, 1 << e.weight_bits, (e.cols + 2, e.rows + 1, 1, 1)),
                  post=PostParams(bias=np.zeros(e.cols + 2, dtype=np.int64),
                                  shift=np.zeros(e.cols + 2, dtype=np.int64),
                                  relu=np.zeros(e.cols + 2, dtype=bool)))
    want = expected_beats(cfg, layer)
    assert len(want) > 2
    beats = stream_beats(pack_layer(cfg, layer))
    data = beats_to_bytes([b for b, _ in beats], core.beat_bytes)
    last = np.array([t for _, t in beats], dtype=bool)

    def run(lengths, stalled=False):
        core.reset()
        core.expect_packets(lengths)
        assert core.write_reg("CONTROL", 1) == 0
        core.push(data, last)
        if stalled:
            # One beat at a time, the sink closed for 7 cycles after each: m_axis waits.
            for _ in range(len(want)):
                core.arm_sink(1)
                core.run(100_000, until=("sink_done",))
                core.run(7)
        else:
            core.arm_sink(len(want) + 4)
            core.run(100_000, until=("sink_done",))
        return bytes_to_beats(core.pop()[0])

    assert run([len(want)]) == want
    assert run([len(want)], stalled=True) == want
    with pytest.raises(ProtocolError, match=rf"no tlast on beat {len(want) - 2} of result "
                                            rf"packet 0 \(length {len(want) - 1}\)"):
        run([len(want) - 1])
    with pytest.raises(ProtocolError, match=rf"tlast on beat {len(want) - 1} of result "
                                            rf"packet 0 \(length {len(want) + 1}\)"):
        run([len(want) + 1])
    core.close()
