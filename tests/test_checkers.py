"""The protocol checkers (``mulfree.sim.checkers``) catch broken protocols and pass good ones.

A small Verilog DUT, a stream master and an AXI4-Lite slave whose ``mode`` input switches on
one protocol bug at a time (``mulfree.sim.tb_checkers.MODES``), runs under Icarus with the
scenarios of ``mulfree.sim.tb_checkers``: the correct mode must pass, every bug must fail its
scenario with the checker's message naming the rule. A missing simulator fails the test.
"""

import json

from mulfree.sim.runner import build_verilog, run_cocotb
from mulfree.sim.tb_checkers import MODES, PACKET


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
    "payload_change": "m_axis: cycle 3: payload changed while stalled: m_axis__tdata",
    "early_last": "last on beat 1 of packet 0",
    "valid_drop": "tvalid fell before its handshake",
    "missing_last": "no last on beat 2",
    "drop_b": "1 write(s) without B",
    "b_before_w": "B: bvalid with no write to answer (AW 1, W 0",
    "rdata_change": "R: payload changed while stalled: s_axil__rdata",
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
