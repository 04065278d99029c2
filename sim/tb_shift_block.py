"""cocotb testbench of a ShiftBlock's Verilog: drives pre-packed beats, compares the array's
output words with the golden ones.

``MULFREE_MANIFEST`` names a JSON file written by ``tests/test_shift_block_sim.py``: ``top``,
``writes`` / ``table`` / ``commands`` / ``weights`` (packed payload words, in order) and
``expected`` (per command, the packed ``y`` data words from
``shift_golden.shift_block_forward``). All streams are driven at once, with random idle cycles
on the command and weight inputs and random stalls of ``y`` (seeded by cocotb's seed).

Protocol checkers (:mod:`mulfree.sim.checkers`) watch all six streams on every cycle: stable
beats while stalled, every accepted beat recorded, ``y``'s ``last`` on each command's last
vector.
"""

import json
import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from mulfree.sim.checkers import StreamChecker


@cocotb.test()
async def block_matches_golden(dut):
    spec = json.loads(open(os.environ["MULFREE_MANIFEST"]).read())
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    checks = {k: StreamChecker(dut.clk, dut.rst, getattr(dut, f"{k}__valid"),
                               getattr(dut, f"{k}__ready"), getattr(dut, f"{k}__payload"),
                               name=k) for k in ("w0", "w1", "tab", "cmd", "w")}
    width = spec["data_width"]
    checks["y"] = StreamChecker(
        dut.clk, dut.rst, dut.y__valid, dut.y__ready, dut.y__payload, name="y",
        last=lambda beat: beat[0] & 1 if spec["last_first"] else beat[0] >> width,
        packets=[len(words) for words in spec["expected"]])
    dut.rst.value = 1
    for s in (dut.w0__valid, dut.w1__valid, dut.tab__valid, dut.cmd__valid, dut.w__valid,
              dut.y__ready, dut.status_clear):
        s.value = 0
    for _ in range(2):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    # The map and the table first (reads must follow accepted writes), then the rest.
    for stream, words in (("w0", spec["writes"]), ("tab", spec["table"])):
        for word in words:
            getattr(dut, f"{stream}__payload").value = word
            getattr(dut, f"{stream}__valid").value = 1
            while True:
                await ReadOnly()
                accepted = getattr(dut, f"{stream}__ready").value
                await RisingEdge(dut.clk)
                if accepted:
                    break
        getattr(dut, f"{stream}__valid").value = 0
    queues = {"cmd": list(spec["commands"]), "w": list(spec["weights"])}
    expected = [w for words in spec["expected"] for w in words]
    lasts = [int(i == len(words) - 1) for words in spec["expected"] for i in range(len(words))]
    got = []
    rng = random.Random(cocotb.RANDOM_SEED)
    show = dict.fromkeys(queues, False)
    for cycle in range(40 * len(expected) + 200):
        for k, q in queues.items():
            # A beat once shown stays until accepted (AXI rule); new beats skip random cycles.
            show[k] = bool(q) and (show[k] or rng.random() < 0.7)
            getattr(dut, f"{k}__valid").value = int(show[k])
            if show[k]:
                getattr(dut, f"{k}__payload").value = q[0]
        ready = int(rng.random() < 0.7)
        dut.y__ready.value = ready
        await ReadOnly()
        for k, q in queues.items():
            if show[k] and getattr(dut, f"{k}__ready").value:
                q.pop(0)
                show[k] = False
        if dut.y__valid.value and ready:
            word = dut.y__payload.value.to_unsigned()
            got.append((word >> 1, word & 1) if spec["last_first"] else
                       (word & ((1 << spec["data_width"]) - 1), word >> spec["data_width"]))
        await RisingEdge(dut.clk)
        if len(got) == len(expected):
            break
    assert len(got) == len(expected), f"{len(got)} output vectors, expected {len(expected)}"
    for i, ((data, last), want, want_last) in enumerate(zip(got, expected, lasts)):
        assert data == want, f"vector {i}: got {data:#x}, expected {want:#x}"
        assert last == want_last, f"vector {i}: last={last}"
    assert len(checks["y"].beats) == len(got), \
        f"y carried {len(checks['y'].beats)} vectors, the testbench took {len(got)}"
    for checker in checks.values():
        checker.check()
