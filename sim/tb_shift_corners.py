"""Directed corner scenarios of the address-shift unit, on its generated Verilog.

Every refusal and every bound ``docs/shift_unit.md`` documents, one field at a time, each value
at its limit (accepted) and one past it (refused and flagged), with the map read back and
compared with the golden model (:mod:`mulfree.sim.tb_shift_unit`'s model of the buffer, the
pointers and the table):

* ``write_pointer_bound``: a region written up to exactly the buffer's last word (no error),
  then one sequential beat past it, a second one, and seeks at and past the end, on each port:
  refused, ``write_error`` set, nothing wrapped; a seek afterwards writes again;
* ``table_fields``: channel, ``dy`` and ``dx`` each at ``±R`` and ``channels - 1`` (written),
  one past (refused, the entry keeps its value, ``table_error``), and the fields' largest codes;
* ``command_fields``: ``C``, ``H``, ``W``, ``rotate``, ``radius`` and ``mode`` each at their
  limit (a map read) and one past it (no output, ``cmd_error``), a map running past the buffer's
  end (not refused: words past the end read 0);
* ``clear_and_refuse``: a refusal in the cycle ``status_clear`` is high still sets its flag,
  for each of the three flags.
"""

import numpy as np

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

from mulfree.sim.tb_shift_unit import TB, Command, check, command


__all__ = ["SCENARIOS"]

#: The cocotb tests of this module.
SCENARIOS = ("write_pointer_bound", "table_fields", "command_fields", "clear_and_refuse")


async def start(dut):
    """The testbench after reset, with the shift table zeroed: the table survives reset (and
    so the previous scenario), the testbench's model starts at 0."""
    tb = TB(dut)
    await tb.reset()
    await tb.run(tab=[tb.table_beat(c, 0, 0) for c in range(tb.cfg.channels)])
    return tb, np.random.default_rng(77)


async def read_back(tb, base, n, label):
    """Read ``n`` words from ``base`` (a plain 1 x 1 x n map) and compare with the model."""
    cmd = command("plain", 1, 1, n, base=base)
    check(tb, [cmd], await tb.run(cmds=[cmd]), label)


@cocotb.test()
async def write_pointer_bound(dut):
    """Exactly full, then one past: refused and flagged, never wrapped, on both ports."""
    tb, rng = await start(dut)
    cfg = tb.cfg
    lo, hi = cfg.act_range
    depth, n = cfg.depth, min(cfg.width, cfg.depth)
    for port in ("w0", "w1"):
        # Known words at the start: a wrapped write would land there.
        await tb.run(**{port: tb.write_map(rng.integers(lo, hi + 1, n), 0)})
        # A region ending exactly at the last word: no error.
        await tb.run(**{port: tb.write_map(rng.integers(lo, hi + 1, n), depth - n)})
        await tb.check_status(f"{port}: written up to the last word")
        await read_back(tb, depth - n, n, f"{port}: the buffer's last {n} words")
        # One sequential beat past the end, then a second: each refused and flagged.
        for k in range(2):
            await tb.run(**{port: [tb.write_beat(hi if k else lo)]})
            await tb.check_status(f"{port}: sequential beat {k + 1} past the end")
            await read_back(tb, 0, n, f"{port}: after beat {k + 1} past the end")
            await tb.clear_status()
        # Seeks at and beyond the end, where the address field can carry them.
        for addr in sorted({depth, (1 << cfg.addr_width) - 1}):
            if depth <= addr < 1 << cfg.addr_width:
                await tb.run(**{port: [tb.write_beat(lo, addr), tb.write_beat(hi)]})
                await tb.check_status(f"{port}: seek to {addr} (depth {depth})")
                await read_back(tb, 0, n, f"{port}: after a seek to {addr}")
                await tb.clear_status()
        # A seek inside the buffer writes again, sequential beats after it too.
        await tb.run(**{port: tb.write_map(rng.integers(lo, hi + 1, 2), depth - 2)})
        await tb.check_status(f"{port}: seek back inside the buffer")
        await read_back(tb, depth - 2, 2, f"{port}: written again after a refusal")


@cocotb.test()
async def table_fields(dut):
    """Table writes: each field at its limit (written) and one past it (refused)."""
    tb, rng = await start(dut)
    cfg = tb.cfg
    C, R = cfg.channels, cfg.max_shift
    w0, w1 = _fill(tb, rng)
    await tb.run(w0=w0, w1=w1)
    top = (1 << (cfg.table_entry_width - 1)) - 1        # the largest code the fields carry
    low = -(1 << (cfg.table_entry_width - 1))
    last = C - 1
    good = [(last, R, 0), (last, -R, 0), (last, 0, R), (last, 0, -R), (last, R, -R),
            (0, -R, R)]
    bad = [(last, R + 1, 0), (last, -R - 1, 0), (last, 0, R + 1), (last, 0, -R - 1),
           (last, top, 0), (last, low, 0), (last, 0, top), (last, 0, low)]
    bad += [(ch, 0, 0) for ch in sorted({C, (1 << cfg.table_channel_width) - 1}) if ch >= C]
    table_read = command("table", C, cfg.height, cfg.width)
    for entry in good:
        await tb.run(tab=[tb.table_beat(*entry)])
        await tb.check_status(f"table entry {entry} at the limits")
        check(tb, [table_read], await tb.run(cmds=[table_read]), f"after table entry {entry}")
    kept = tuple(int(v) for v in tb.table[:, last])
    for entry in bad:
        await tb.run(tab=[tb.table_beat(*entry)])
        await tb.check_status(f"table entry {entry} one past the limits")
        assert tuple(int(v) for v in tb.table[:, last]) == kept
        check(tb, [table_read], await tb.run(cmds=[table_read]),
              f"after refused table entry {entry}")
        await tb.clear_status()


def _fill(tb, rng):
    lo, hi = tb.cfg.act_range
    values = rng.integers(lo, hi + 1, size=tb.cfg.depth)
    return tb.write_map(values[:tb.cfg.depth // 2], 0), \
        tb.write_map(values[tb.cfg.depth // 2:], tb.cfg.depth // 2)


@cocotb.test()
async def command_fields(dut):
    """Commands: each field at its limit (read) and one past it (refused, no output)."""
    tb, rng = await start(dut)
    cfg = tb.cfg
    C, H, W, h = cfg.channels, cfg.height, cfg.width, cfg.max_radius
    w0, w1 = _fill(tb, rng)
    await tb.run(w0=w0, w1=w1)
    good = [command("plain", C, H, W), command("plain", 1, 1, 1),
            command("channel", C, H, W, rotate=C), command("channel", C, 2, 2, rotate=C - 1),
            command("shift", C, H, W, radius=h), command("table", C, H, W),
            command("plain", C, H, W, base=cfg.depth - 1)]      # past the end: reads 0
    bad = [command("plain", 0, H, W), command("plain", C, 0, W), command("plain", C, H, 0)]
    if C + 1 < 1 << cfg.count_width:
        bad.append(command("plain", C + 1, H, W))
    if H + 1 < 1 << cfg.height_width:
        bad.append(command("plain", C, H + 1, W))
    if W + 1 < 1 << cfg.width_width:
        bad.append(command("plain", C, H, W + 1))
    bad += [command("channel", C, H, W, rotate=C + 1)]
    if C > 1:
        bad.append(command("plain", C - 1, H, W, rotate=C))     # rotate is checked in any mode
    if h + 1 < 1 << cfg.radius_width:
        bad.append(command("shift", C, H, W, radius=h + 1))
    bad += [Command(command("plain", 1, 1, 1), mode=m) for m in (5, 7)]
    for cmd in good:
        check(tb, [cmd], await tb.run(cmds=[cmd]), f"command {cmd.label()} at the limits")
        await tb.check_status(f"command {cmd.label()}")
    for cmd in bad:
        cmds = [cmd, command("plain", C, H, W)]
        check(tb, cmds, await tb.run(cmds=cmds), f"refused command {dict(cmd)}")
        await tb.check_status(f"refused command {dict(cmd)}")
        await tb.clear_status()


@cocotb.test()
async def clear_and_refuse(dut):
    """A refusal in the same cycle as ``status_clear`` still sets its flag, for each flag."""
    tb, _ = await start(dut)
    cfg = tb.cfg
    d = dut
    refused = {
        "table_error": ("tab", tb.table_beat(cfg.channels - 1, cfg.max_shift + 1, 0)),
        "cmd_error": ("cmd", command("plain", 0, 1, 1)),
        "write_error": ("w0", tb.write_beat(0)),        # sequential, the pointer at the end
    }
    await tb.run(w0=[tb.write_beat(0, cfg.depth - 1)])
    await tb.check_status("pointer at the end")
    for flag, (port, beat) in refused.items():
        # The flag set by a first refusal, then cleared in the cycle of a second one.
        await tb.run(**{port: [beat]} if port != "cmd" else {"cmds": [beat]})
        await tb.check_status(f"{flag} set")
        word = tb.cmd_word(beat) if port == "cmd" else beat["word"]
        await RisingEdge(d.clk)
        getattr(d, f"{port}__payload").value = word
        getattr(d, f"{port}__valid").value = 1
        d.status_clear.value = 1
        await ReadOnly()
        assert getattr(d, f"{port}__ready").value, f"{port} not ready"
        await RisingEdge(d.clk)
        getattr(d, f"{port}__valid").value = 0
        d.status_clear.value = 0
        tb.expected_status = {k: int(k == flag) for k in tb.expected_status}
        await tb.check_status(f"{flag} refused in the clearing cycle")
        await tb.clear_status()
