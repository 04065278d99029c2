// A simulated board: one Verilated mulfree core with an AXI4-Lite master and two AXI4-Stream
// queues around it, driven from Python (mulfree.sim.board) through a C ABI.
//
// harness_config.h, written by mulfree.sim.board.build_sim_core next to this file, defines
//   MF_TOP_CLASS   the Verilated model class (V<top>)
//   MF_TOP_HEADER  its header ("V<top>.h")
//   MF_TOP_NAME    the top module's name, a string
//   MF_BEAT_BYTES  stream_width / 8
//   MF_SEP         Verilator's spelling of Amaranth's "__" separator in port names
//
// One clock cycle (step()):
//   1. drive every input from the harness state (clk low), eval: the outputs settle;
//   2. sample the handshakes (valid && ready) on the settled values;
//   3. clk high, eval: the rising edge;
//   4. update the harness state with the transfers sampled in 2.
// So a transfer happens exactly at the rising edge where valid and ready were both high, every
// valid is held until its ready, and data do not change while valid waits.
//
// The core's side of the buses is checked in step 2 of every cycle out of reset (the same rules
// as mulfree.sim.checkers): m_axis tdata/tlast stable while tvalid waits for tready (tvalid
// itself may fall: an error or a soft reset ends a run at once); tlast exactly on the last beat
// of each result packet whose length was given (mf_expect_packets); bvalid only for a write
// whose AW and W were both accepted, rvalid only for an accepted AR, one response each. The
// first violation is kept as a one-line message (mf_violation) that the Python side raises.

#include "harness_config.h"
#include MF_TOP_HEADER

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <vector>

#define MF_CAT3_(a, b, c) a##b##c
#define MF_CAT3(a, b, c) MF_CAT3_(a, b, c)
// A port of the core: MF_PORT(s_axis, tdata) is the model's member for "s_axis__tdata".
#define MF_PORT(bus, sig) MF_CAT3(bus, MF_SEP, sig)

namespace {

// tdata of <= 8/16/32/64 bits is a CData/SData/IData/QData, wider a VlWide<N> of 32-bit words.
// Stream widths are multiples of 32 and the host is little-endian: byte i of a beat is
// tdata[8i+7:8i] in both representations.
template <typename T>
inline void load_beat(T& port, const uint8_t* src) {
    static_assert(sizeof(T) == MF_BEAT_BYTES, "tdata width does not match MF_BEAT_BYTES");
    std::memcpy(&port, src, MF_BEAT_BYTES);
}
template <typename T>
inline void store_beat(const T& port, uint8_t* dst) {
    static_assert(sizeof(T) == MF_BEAT_BYTES, "tdata width does not match MF_BEAT_BYTES");
    std::memcpy(dst, &port, MF_BEAT_BYTES);
}
template <std::size_t N>
inline void load_beat(VlWide<N>& port, const uint8_t* src) {
    static_assert(N * 4 == MF_BEAT_BYTES, "tdata width does not match MF_BEAT_BYTES");
    std::memcpy(port.data(), src, MF_BEAT_BYTES);
}
template <std::size_t N>
inline void store_beat(const VlWide<N>& port, uint8_t* dst) {
    static_assert(N * 4 == MF_BEAT_BYTES, "tdata width does not match MF_BEAT_BYTES");
    std::memcpy(dst, port.data(), MF_BEAT_BYTES);
}

// Stop conditions of mf_run (flags; all given ones must hold).
constexpr int UNTIL_IRQ = 1;
constexpr int UNTIL_INPUT_EMPTY = 2;
constexpr int UNTIL_SINK_DONE = 4;

struct Board {
    std::unique_ptr<VerilatedContext> ctx;
    std::unique_ptr<MF_TOP_CLASS> top;
    uint64_t cycles = 0;
    bool rst = false;

    // s_axis input queue: beats [in_head, in_last.size()) are pending; in_head is driven.
    std::vector<uint8_t> in_data;
    std::vector<uint8_t> in_last;
    size_t in_head = 0;

    // m_axis sink: accepts while sink_left > 0; a beat with tlast disarms it.
    uint64_t sink_left = 0;
    std::vector<uint8_t> out_data;
    std::vector<uint8_t> out_last;

    // AXI4-Lite master: one write and one read at a time.
    bool aw_valid = false, w_valid = false, b_ready = false;
    bool ar_valid = false, r_ready = false;
    uint32_t awaddr = 0, wdata = 0, wstrb = 0, araddr = 0;
    uint32_t bresp = 0, rdata = 0, rresp = 0;

    // Protocol checks: the m_axis beat waiting for tready, expected result packet lengths
    // (0 = unknown), the position in the current packet, the violations.
    bool out_held = false;
    std::vector<uint8_t> held_data = std::vector<uint8_t>(MF_BEAT_BYTES);
    bool held_last = false;
    std::deque<uint64_t> packet_lengths;
    uint64_t packet_length = 0, packet_beat = 0, packets_seen = 0;
    uint64_t violations = 0;
    char violation[256] = "";

    void fail(const char* rule) {
        if (violations++ == 0)
            std::snprintf(violation, sizeof violation, "cycle %llu: %s",
                          static_cast<unsigned long long>(cycles), rule);
    }

    void forget_packets() {
        packet_lengths.clear();
        packet_length = packet_beat = packets_seen = 0;
        out_held = false;
    }

    // The core's outputs, settled before the edge (step 2).
    inline void check(MF_TOP_CLASS* t, bool sink_ready) {
        const bool valid = t->MF_PORT(m_axis, tvalid);
        const bool last = t->MF_PORT(m_axis, tlast);
        uint8_t beat[MF_BEAT_BYTES];
        if (valid && (out_held || !sink_ready)) store_beat(t->MF_PORT(m_axis, tdata), beat);
        if (out_held && valid &&
            (last != held_last || std::memcmp(beat, held_data.data(), MF_BEAT_BYTES) != 0))
            fail("m_axis: tdata/tlast changed while tvalid waited for tready");
        out_held = valid && !sink_ready;
        if (out_held) {
            std::memcpy(held_data.data(), beat, MF_BEAT_BYTES);
            held_last = last;
        }
        if (valid && sink_ready) {
            if (packet_beat == 0) {
                packet_length = 0;
                if (!packet_lengths.empty()) {
                    packet_length = packet_lengths.front();
                    packet_lengths.pop_front();
                }
            }
            if (packet_length != 0 && last != (packet_beat + 1 == packet_length)) {
                char rule[160];
                std::snprintf(rule, sizeof rule,
                              "m_axis: %s on beat %llu of result packet %llu (length %llu)",
                              last ? "tlast" : "no tlast",
                              static_cast<unsigned long long>(packet_beat),
                              static_cast<unsigned long long>(packets_seen),
                              static_cast<unsigned long long>(packet_length));
                fail(rule);
            }
            ++packet_beat;
            if (last) {
                packet_beat = 0;
                ++packets_seen;
            }
        }
        // A write is in progress while b_ready; its AW and W are accepted once their valids fell.
        if (t->MF_PORT(s_axil, bvalid) && (!b_ready || aw_valid || w_valid))
            fail(b_ready ? "s_axil: bvalid before the write's AW and W were accepted"
                         : "s_axil: bvalid with no write to answer");
        if (t->MF_PORT(s_axil, rvalid) && (!r_ready || ar_valid))
            fail(r_ready ? "s_axil: rvalid before the read's AR was accepted"
                         : "s_axil: rvalid with no read to answer");
    }

    Board() : ctx(new VerilatedContext), top(new MF_TOP_CLASS(ctx.get(), "")) {
        ctx->fatalOnError(false);
    }

    size_t in_pending() const { return in_last.size() - in_head; }

    void compact_input() {
        if (in_head == in_last.size()) {
            in_data.clear();
            in_last.clear();
            in_head = 0;
        } else if (in_head > 4096 && in_head * 2 > in_last.size()) {
            in_data.erase(in_data.begin(), in_data.begin() + in_head * MF_BEAT_BYTES);
            in_last.erase(in_last.begin(), in_last.begin() + in_head);
            in_head = 0;
        }
    }

    // One clock cycle; returns nothing, updates the state.
    inline void step() {
        MF_TOP_CLASS* t = top.get();
        const bool in_valid = !rst && in_head < in_last.size();
        t->rst = rst;
        t->MF_PORT(s_axis, tvalid) = in_valid;
        if (in_valid) {
            load_beat(t->MF_PORT(s_axis, tdata), &in_data[in_head * MF_BEAT_BYTES]);
            t->MF_PORT(s_axis, tlast) = in_last[in_head];
        }
        const bool sink_ready = !rst && sink_left > 0;
        t->MF_PORT(m_axis, tready) = sink_ready;
        t->MF_PORT(s_axil, awvalid) = aw_valid;
        t->MF_PORT(s_axil, awaddr) = awaddr;
        t->MF_PORT(s_axil, awprot) = 0;
        t->MF_PORT(s_axil, wvalid) = w_valid;
        t->MF_PORT(s_axil, wdata) = wdata;
        t->MF_PORT(s_axil, wstrb) = wstrb;
        t->MF_PORT(s_axil, bready) = b_ready;
        t->MF_PORT(s_axil, arvalid) = ar_valid;
        t->MF_PORT(s_axil, araddr) = araddr;
        t->MF_PORT(s_axil, arprot) = 0;
        t->MF_PORT(s_axil, rready) = r_ready;
        t->clk = 0;
        t->eval();
        if (!rst) check(t, sink_ready);

        // Handshakes, sampled before the edge.
        const bool in_fire = in_valid && t->MF_PORT(s_axis, tready);
        const bool out_fire = sink_ready && t->MF_PORT(m_axis, tvalid);
        if (out_fire) {
            const size_t n = out_last.size();
            out_data.resize((n + 1) * MF_BEAT_BYTES);
            store_beat(t->MF_PORT(m_axis, tdata), &out_data[n * MF_BEAT_BYTES]);
            out_last.push_back(t->MF_PORT(m_axis, tlast) ? 1 : 0);
        }
        const bool aw_fire = aw_valid && t->MF_PORT(s_axil, awready);
        const bool w_fire = w_valid && t->MF_PORT(s_axil, wready);
        const bool b_fire = b_ready && t->MF_PORT(s_axil, bvalid);
        if (b_fire) bresp = t->MF_PORT(s_axil, bresp);
        const bool ar_fire = ar_valid && t->MF_PORT(s_axil, arready);
        const bool r_fire = r_ready && t->MF_PORT(s_axil, rvalid);
        if (r_fire) {
            rdata = t->MF_PORT(s_axil, rdata);
            rresp = t->MF_PORT(s_axil, rresp);
        }

        t->clk = 1;
        t->eval();
        ++cycles;

        if (in_fire) {
            ++in_head;
            if (in_head == in_last.size() || (in_head & 4095) == 0) compact_input();
        }
        if (out_fire) {
            --sink_left;
            if (out_last.back()) sink_left = 0;
        }
        if (aw_fire) aw_valid = false;
        if (w_fire) w_valid = false;
        if (b_fire) b_ready = false;
        if (ar_fire) ar_valid = false;
        if (r_fire) r_ready = false;
    }

    bool holds(int until) const {
        if ((until & UNTIL_IRQ) && !top->irq) return false;
        if ((until & UNTIL_INPUT_EMPTY) && in_pending() != 0) return false;
        if ((until & UNTIL_SINK_DONE) && sink_left != 0) return false;
        return true;
    }
};

}  // namespace

extern "C" {

const char* mf_top_name() { return MF_TOP_NAME; }
int mf_beat_bytes() { return MF_BEAT_BYTES; }

void* mf_create() {
    Board* b = new Board;
    // Settle the model's initial values with every input low.
    b->top->clk = 0;
    b->top->eval();
    return b;
}

void mf_destroy(void* h) {
    Board* b = static_cast<Board*>(h);
    if (b == nullptr) return;
    b->top->final();
    delete b;
}

uint64_t mf_cycles(void* h) { return static_cast<Board*>(h)->cycles; }
int mf_irq(void* h) { return static_cast<Board*>(h)->top->irq ? 1 : 0; }

// Hold rst high for n cycles with every valid and ready low; empty the queues and the sink,
// abandon any AXI4-Lite transaction.
void mf_reset(void* h, uint64_t n) {
    Board* b = static_cast<Board*>(h);
    b->in_data.clear();
    b->in_last.clear();
    b->in_head = 0;
    b->sink_left = 0;
    b->out_data.clear();
    b->out_last.clear();
    b->aw_valid = b->w_valid = b->b_ready = b->ar_valid = b->r_ready = false;
    b->forget_packets();
    b->rst = true;
    for (uint64_t i = 0; i < n; ++i) b->step();
    b->rst = false;
    // Drive the idle inputs (rst low) so the outputs show the state after reset.
    b->top->rst = 0;
    b->top->clk = 0;
    b->top->eval();
}

// A complete write: AW and W together, then B. Returns BRESP, or -1 if the transaction did
// not complete within max_cycles (the valids stay up; mf_reset abandons it).
int mf_axil_write(void* h, uint32_t addr, uint32_t data, uint32_t strb, uint64_t max_cycles,
                  uint64_t* used) {
    Board* b = static_cast<Board*>(h);
    const uint64_t start = b->cycles;
    b->awaddr = addr;
    b->wdata = data;
    b->wstrb = strb;
    b->aw_valid = b->w_valid = b->b_ready = true;
    while (b->b_ready && b->cycles - start < max_cycles) b->step();
    *used = b->cycles - start;
    return b->b_ready ? -1 : static_cast<int>(b->bresp);
}

// A complete read: AR, then R. Returns RRESP (data in *data), or -1 on a timeout.
int mf_axil_read(void* h, uint32_t addr, uint32_t* data, uint64_t max_cycles, uint64_t* used) {
    Board* b = static_cast<Board*>(h);
    const uint64_t start = b->cycles;
    b->araddr = addr;
    b->ar_valid = b->r_ready = true;
    while (b->r_ready && b->cycles - start < max_cycles) b->step();
    *used = b->cycles - start;
    if (b->r_ready) return -1;
    *data = b->rdata;
    return static_cast<int>(b->rresp);
}

// Append n beats (n * MF_BEAT_BYTES bytes, little-endian beats) to the s_axis queue.
void mf_push(void* h, const uint8_t* data, const uint8_t* last, uint64_t n) {
    Board* b = static_cast<Board*>(h);
    b->compact_input();
    b->in_data.insert(b->in_data.end(), data, data + n * MF_BEAT_BYTES);
    for (uint64_t i = 0; i < n; ++i) b->in_last.push_back(last[i] ? 1 : 0);
}

uint64_t mf_in_pending(void* h) { return static_cast<Board*>(h)->in_pending(); }

void mf_clear_input(void* h) {
    Board* b = static_cast<Board*>(h);
    b->in_data.clear();
    b->in_last.clear();
    b->in_head = 0;
}

void mf_arm_sink(void* h, uint64_t max_beats) { static_cast<Board*>(h)->sink_left = max_beats; }
uint64_t mf_sink_left(void* h) { return static_cast<Board*>(h)->sink_left; }
void mf_disarm_sink(void* h) { static_cast<Board*>(h)->sink_left = 0; }
uint64_t mf_out_count(void* h) { return static_cast<Board*>(h)->out_last.size(); }

// Move the first n captured beats into data / last (n <= mf_out_count).
void mf_pop(void* h, uint8_t* data, uint8_t* last, uint64_t n) {
    Board* b = static_cast<Board*>(h);
    if (n > b->out_last.size()) n = b->out_last.size();
    std::memcpy(data, b->out_data.data(), n * MF_BEAT_BYTES);
    std::memcpy(last, b->out_last.data(), n);
    b->out_data.erase(b->out_data.begin(), b->out_data.begin() + n * MF_BEAT_BYTES);
    b->out_last.erase(b->out_last.begin(), b->out_last.begin() + n);
}

// Expect the next n result packets on m_axis to be lengths[0..n) beats long (tlast checked
// beat by beat); packets beyond the given ones are not checked.
void mf_expect_packets(void* h, const uint64_t* lengths, uint64_t n) {
    Board* b = static_cast<Board*>(h);
    for (uint64_t i = 0; i < n; ++i) b->packet_lengths.push_back(lengths[i]);
}

// Forget the expected lengths and the packet under way (after an aborted run).
void mf_forget_packets(void* h) { static_cast<Board*>(h)->forget_packets(); }

// The number of protocol violations seen since the last clear, and the first one's message.
uint64_t mf_violations(void* h) { return static_cast<Board*>(h)->violations; }
const char* mf_violation(void* h) { return static_cast<Board*>(h)->violation; }
void mf_clear_violations(void* h) {
    Board* b = static_cast<Board*>(h);
    b->violations = 0;
    b->violation[0] = 0;
}

// Run up to max_cycles; stop early when every condition in `until` holds (checked after each
// cycle; until = 0 runs max_cycles). Returns the cycles run; *stopped = 1 if the conditions
// held, 0 if max_cycles ran out.
uint64_t mf_run(void* h, uint64_t max_cycles, int until, int* stopped) {
    Board* b = static_cast<Board*>(h);
    uint64_t n = 0;
    *stopped = 0;
    if (until != 0 && b->holds(until)) {
        *stopped = 1;
        return 0;
    }
    while (n < max_cycles) {
        b->step();
        ++n;
        if (until != 0 && b->holds(until)) {
            *stopped = 1;
            break;
        }
    }
    return n;
}

}  // extern "C"
