"""cocotb testbench of a generated address-shift unit, checked bit-exactly against the golden model.

The design under test is described by its manifest (``MULFREE_MANIFEST``): configuration,
field offsets and timing come from it. ``MULFREE_TB_SEED`` sets the data seed (default:
cocotb's), ``MULFREE_TB_READS`` the number of random read commands (default 40).

The testbench keeps its own model of the buffer, the write pointers and the shift table,
updated from the handshakes it sees and written from ``docs/shift_unit.md``, and computes every
expected map with :mod:`mulfree.params.shift_golden`. One coroutine drives all streams cycle by
cycle: after each rising edge it drives the next beats, then samples in the read-only phase
which handshakes happen at the next edge.

Protocol checkers (:mod:`mulfree.sim.checkers`, built in the constructor) watch the five
streams on every cycle: stable beats while stalled, every accepted beat recorded, and the
output's ``last`` on the last element of each command's map.
"""

import itertools
import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from ..params.shift_config import ShiftUnitConfig, MODES, ORDERS
from ..params.shift_golden import element_order, read_command, shortcut_concat
from .checkers import StreamChecker
from .vectors import StructPacker


__all__ = ["TB", "Command"]

IDLE_PATTERNS = {
    "none": [1],
    "light": [1, 1, 1, 0],
    "heavy": [1, 0, 0, 1, 0],
}


def pattern(name, salt=0):
    """An endless 1/0 pattern (1 = offer / ready): a named one repeated, or ``"random"``
    (each cycle 1 with probability 0.6, seeded by ``MULFREE_TB_SEED`` and ``salt``)."""
    if name != "random":
        return itertools.cycle(IDLE_PATTERNS[name])
    rng = random.Random(int(os.environ.get("MULFREE_TB_SEED", cocotb.RANDOM_SEED)) * 7 + salt)
    return iter(lambda: int(rng.random() < 0.6), 2)


class Command(dict):
    """A read command's fields; ``mode`` by name."""

    @property
    def size(self):
        return self["channels"] * self["height"] * self["width"]

    def label(self):
        return (f"{self['mode']} C={self['channels']} H={self['height']} W={self['width']} "
                f"base={self['base']} r={self['rotate']} h={self['radius']} g={self['group']} "
                f"{self['order']}")


def command(mode, channels, height, width, base=0, rotate=0, radius=0, group=None,
            order="channel_major"):
    """A command; ``group`` defaults to the papers' equal split for ``shift``/``address``."""
    if group is None:
        n = {"shift": (2 * radius + 1) ** 2, "address": 4}.get(mode)
        group = channels // n if n else 0
    return Command(mode=mode, channels=channels, height=height, width=width, base=base,
                   rotate=rotate, radius=radius, group=group, order=order)


class TB:
    """Clock, reset, the five streams, and the model of the buffer and the table."""

    def __init__(self, dut):
        self.dut = dut
        self.manifest = json.loads(open(os.environ["MULFREE_MANIFEST"]).read())
        self.cfg = ShiftUnitConfig(**self.manifest["parameters"])
        ports = {p["name"]: p for p in self.manifest["ports"]}
        self.w_fields = StructPacker(ports["w0__payload"]["fields"])
        self.cmd_fields = StructPacker(ports["cmd__payload"]["fields"])
        self.tab_fields = StructPacker(ports["tab__payload"]["fields"])
        self.out_fields = StructPacker(ports["out__payload"]["fields"])
        self.status_fields = StructPacker(ports["status"]["fields"])
        cfg = self.cfg
        # The buffer and table as the design holds them after its initial (zero) contents.
        self.memory = np.zeros(cfg.depth, dtype=np.int64)
        self.table = np.zeros((2, cfg.channels), dtype=np.int64)
        self.pointers = [0, 0]
        self.expected_status = {"table_error": 0, "cmd_error": 0, "write_error": 0}
        self.cycle = 0
        # The bus rules on every cycle; run() queues each valid command's map size for out's last.
        self.checks = {k: StreamChecker(dut.clk, dut.rst, getattr(dut, f"{k}__valid"),
                                        getattr(dut, f"{k}__ready"),
                                        getattr(dut, f"{k}__payload"), name=k)
                       for k in ("w0", "w1", "tab", "cmd")}
        self.checks["out"] = StreamChecker(
            dut.clk, dut.rst, dut.out__valid, dut.out__ready, dut.out__payload, name="out",
            last=lambda beat: self.out_fields.field(beat[0], "last"))
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    def check_protocol(self):
        """Raise the first violation of any stream checker."""
        for checker in self.checks.values():
            checker.check()

    async def reset(self, cycles=2):
        d = self.dut
        d.rst.value = 1
        for s in (d.w0__valid, d.w1__valid, d.cmd__valid, d.tab__valid, d.out__ready,
                  d.status_clear):
            s.value = 0
        for _ in range(cycles):
            await RisingEdge(d.clk)
            self.cycle += 1
        d.rst.value = 0
        self.pointers = [0, 0]
        self.expected_status = {k: 0 for k in self.expected_status}

    # Beats -----------------------------------------------------------------------------------

    def write_beat(self, value, addr=None):
        a = self.cfg.act_bits
        return {"value": int(value), "addr": addr, "word": self.w_fields.pack(
            data=int(value) & ((1 << a) - 1), addr=addr or 0, seek=int(addr is not None))}

    def table_beat(self, channel, dy, dx):
        mask = (1 << self.cfg.table_entry_width) - 1
        return {"entry": (channel, dy, dx), "word": self.tab_fields.pack(
            channel=channel, dy=dy & mask, dx=dx & mask)}

    def cmd_word(self, cmd):
        return self.cmd_fields.pack(**{**cmd, "mode": MODES.get(cmd["mode"], cmd["mode"]),
                                       "order": ORDERS[cmd["order"]]})

    def valid_command(self, cmd):
        cfg = self.cfg
        return (cmd["mode"] in MODES and 1 <= cmd["channels"] <= cfg.channels
                and 1 <= cmd["height"] <= cfg.height and 1 <= cmd["width"] <= cfg.width
                and cmd["rotate"] <= cmd["channels"] and cmd["radius"] <= cfg.max_radius)

    def write_map(self, fmap, base, port=0):
        """Beats writing ``fmap`` at ``base``: a seek, then sequential beats."""
        values = np.asarray(fmap).ravel()
        return [self.write_beat(v, base if i == 0 else None) for i, v in enumerate(values)]

    def _accept_write(self, port, beat):
        target = beat["addr"] if beat["addr"] is not None else self.pointers[port]
        if target < self.cfg.depth:
            self.memory[target] = beat["value"]
            self.pointers[port] = target + 1
        else:
            self.pointers[port] = target
            self.expected_status["write_error"] = 1

    def _accept_table(self, beat):
        channel, dy, dx = beat["entry"]
        R = self.cfg.max_shift
        if channel < self.cfg.channels and -R <= dy <= R and -R <= dx <= R:
            self.table[:, channel] = dy, dx
        else:
            self.expected_status["table_error"] = 1

    def expected(self, cmd):
        shape = (cmd["channels"], cmd["height"], cmd["width"])
        return read_command(self.memory, cmd["mode"], cmd["base"], shape,
                            rotate=cmd["rotate"], radius=cmd["radius"], group=cmd["group"],
                            table=(self.table[0], self.table[1]))

    # The cycle loop ----------------------------------------------------------------------------

    async def run(self, *, w0=(), w1=(), tab=(), cmds=(), in_idle="none", out_stall="none",
                  stop_after=None, max_cycles=None):
        """Drive the beats; return the output elements of each valid command.

        Each output is ``(cycle, data, channel, y, x, last)``. ``self.accepted`` holds the
        cycle each command was accepted in. ``stop_after``: return after this many cycles
        (for a reset mid-stream) with whatever arrived.
        """
        d = self.dut
        queues = {"w0": list(w0), "w1": list(w1), "tab": list(tab), "cmd": list(cmds)}
        n_out = sum(c.size for c in cmds if self.valid_command(c))
        max_cycles = max_cycles or 4 * (n_out + sum(len(q) for q in queues.values())) + 200
        patterns = {k: pattern(in_idle, i + self.cycle) for i, k in enumerate(queues)}
        out_pat = pattern(out_stall, 9 + self.cycle)
        show = {k: False for k in queues}
        for k in queues:
            self.checks[k].tolerate_drop = False
        self.checks["out"].expect(*(c.size for c in cmds if self.valid_command(c)))
        out_before = len(self.checks["out"].beats)
        outputs, self.accepted = [], []
        a = self.cfg.act_bits
        for cycle in range(max_cycles):
            await RisingEdge(d.clk)
            self.cycle += 1
            if stop_after is not None and cycle >= stop_after:
                break
            for k, q in queues.items():
                # A beat once shown stays until accepted (AXI rule).
                show[k] = bool(q) and (show[k] or bool(next(patterns[k])))
                getattr(d, f"{k}__valid").value = int(show[k])
                if show[k]:
                    word = q[0]["word"] if k != "cmd" else self.cmd_word(q[0])
                    getattr(d, f"{k}__payload").value = word
            d.out__ready.value = next(out_pat)
            await ReadOnly()
            for i in (0, 1):
                k = f"w{i}"
                if show[k] and getattr(d, f"{k}__ready").value:
                    self._accept_write(i, queues[k].pop(0))
                    show[k] = False
            if show["tab"] and d.tab__ready.value:
                self._accept_table(queues["tab"].pop(0))
                show["tab"] = False
            if show["cmd"] and d.cmd__ready.value:
                cmd = queues["cmd"].pop(0)
                if not self.valid_command(cmd):
                    self.expected_status["cmd_error"] = 1
                self.accepted.append(self.cycle)
                show["cmd"] = False
            if d.out__valid.value and d.out__ready.value:
                word = d.out__payload.value.to_unsigned()
                data = self.out_fields.field(word, "data")
                data -= (data >> (a - 1)) << a
                outputs.append((self.cycle, data, *(self.out_fields.field(word, f)
                                                     for f in ("channel", "y", "x", "last"))))
            if not any(queues.values()) and len(outputs) >= n_out:
                break
        else:
            if stop_after is None:
                raise AssertionError(f"timeout after {max_cycles} cycles: {len(outputs)} of "
                                     f"{n_out} outputs, queues left "
                                     f"{ {k: len(q) for k, q in queues.items()} }")
        # Stopped early, the shown beats are withdrawn: a reset follows (an abort).
        for k in queues:
            self.checks[k].tolerate_drop = stop_after is not None
        await RisingEdge(d.clk)
        self.cycle += 1
        for k in queues:
            getattr(d, f"{k}__valid").value = 0
        if stop_after is None:
            # Once every command's map is out, nothing more may come: not a repeated command,
            # not a stray element.
            d.out__ready.value = 1
            for _ in range(self.cfg.read_latency + 2):
                await ReadOnly()
                assert not d.out__valid.value, \
                    f"element after the last command's map (cycle {self.cycle})"
                await RisingEdge(d.clk)
                self.cycle += 1
            seen = len(self.checks["out"].beats) - out_before
            assert seen == len(outputs), \
                f"out carried {seen} elements, the testbench took {len(outputs)}"
            self.check_protocol()
        # Split the element stream per command.
        per_cmd, start = [], 0
        for c in cmds:
            if self.valid_command(c):
                per_cmd.append(outputs[start:start + c.size])
                start += c.size
        self.extra_outputs = outputs[start:]
        return per_cmd

    async def check_status(self, label):
        await ReadOnly()
        word = self.dut.status.value.to_unsigned()
        got = {k: self.status_fields.field(word, k) for k in self.expected_status}
        assert got == self.expected_status, \
            f"{label}: status {got}, expected {self.expected_status}"
        await RisingEdge(self.dut.clk)
        self.cycle += 1

    async def clear_status(self):
        self.dut.status_clear.value = 1
        await RisingEdge(self.dut.clk)
        self.cycle += 1
        self.dut.status_clear.value = 0
        self.expected_status = {k: 0 for k in self.expected_status}
        await self.check_status("after status_clear")


def check(tb, cmds, outputs, label=""):
    """Compare every element; the message names mode, channel, y, x, got and expected."""
    valid = [c for c in cmds if tb.valid_command(c)]
    assert len(outputs) == len(valid), f"{label}: {len(outputs)} maps, expected {len(valid)}"
    assert not tb.extra_outputs, f"{label}: {len(tb.extra_outputs)} unexpected elements"
    for cmd, out in zip(valid, outputs):
        want = tb.expected(cmd)
        C, H, W = want.shape
        assert len(out) == want.size, \
            f"{label}: {cmd.label()}: {len(out)} elements, expected {want.size}"
        order = element_order(want.shape, cmd["order"])
        for i, (cycle, got, ch, y, x, last) in enumerate(out):
            c, yy, xx = (int(v) for v in order[i])
            where = f"{label}: {cmd.label()}: channel {c}, y {yy}, x {xx} (cycle {cycle})"
            assert (ch, y, x) == (c, yy, xx), f"{where}: position fields ({ch}, {y}, {x})"
            assert got == want[c, yy, xx], f"{where}: got {got}, expected {int(want[c, yy, xx])}"
            assert last == int(i == want.size - 1), f"{where}: last={last}"


# Stimulus -----------------------------------------------------------------------------------

def _rng():
    seed = int(os.environ.get("MULFREE_TB_SEED", cocotb.RANDOM_SEED))
    return np.random.default_rng(seed)


def _reads():
    return int(os.environ.get("MULFREE_TB_READS", "40"))


def random_memory_beats(tb, rng):
    """Fill the whole buffer with random values, half through each write port."""
    lo, hi = tb.cfg.act_range
    values = rng.integers(lo, hi + 1, size=tb.cfg.depth)
    half = tb.cfg.depth // 2
    return (tb.write_map(values[:half], 0) if half else [],
            tb.write_map(values[half:], half))


def random_table_beats(tb, rng):
    R, C = tb.cfg.max_shift, tb.cfg.channels
    return [tb.table_beat(c, int(rng.integers(-R, R + 1)), int(rng.integers(-R, R + 1)))
            for c in range(C)]


def random_command(tb, rng, mode=None):
    cfg = tb.cfg
    mode = mode or rng.choice(list(MODES))
    C = int(rng.integers(1, cfg.channels + 1))
    H = int(rng.integers(1, cfg.height + 1))
    W = int(rng.integers(1, cfg.width + 1))
    base = int(rng.integers(0, cfg.depth - C * H * W + 1))
    h = int(rng.integers(0, cfg.max_radius + 1))
    group = None if rng.random() < 0.7 else int(rng.integers(0, C + 1))
    return command(str(mode), C, H, W, base=base, rotate=int(rng.integers(0, C + 1)),
                   radius=h, group=group, order=str(rng.choice(list(ORDERS))))


async def fill(tb, rng, **kw):
    w0, w1 = random_memory_beats(tb, rng)
    await tb.run(w0=w0, w1=w1, tab=random_table_beats(tb, rng), **kw)


# Scenarios ----------------------------------------------------------------------------------

@cocotb.test()
async def random_reads(dut):
    """Random maps, geometries, bases, radii, groups, rotations, table entries; every mode."""
    tb = TB(dut)
    await tb.reset()
    rng = _rng()
    await fill(tb, rng)
    cmds = [Command(random_command(tb, rng, mode), order=order)
            for order in ORDERS for mode in MODES]
    cmds += [random_command(tb, rng) for _ in range(_reads())]
    check(tb, cmds, await tb.run(cmds=cmds), "random")
    await tb.check_status("random")


@cocotb.test()
async def corner_cases(dut):
    """1x1 maps, shifts larger than the map, uneven groups, r = 0 and r = C, buffer ends."""
    tb = TB(dut)
    await tb.reset()
    rng = _rng()
    await fill(tb, rng)
    cfg = tb.cfg
    C, H, W, h = cfg.channels, cfg.height, cfg.width, cfg.max_radius
    end = cfg.depth - C * H * W
    cmds = []
    for mode in MODES:
        cmds.append(command(mode, 1, 1, 1, base=0, radius=h))               # 1-pixel map
        cmds.append(command(mode, 1, 1, 1, base=cfg.depth - 1, radius=h))   # last word
        cmds.append(command(mode, C, H, W, base=0, radius=h))               # whole map at 0
        cmds.append(command(mode, C, H, W, base=end, radius=h))             # buffer's end
        cmds.append(command(mode, C, 1, 1, base=0, radius=h))               # shift > map
        cmds.append(command(mode, C, 1, W, base=0, radius=h))
        cmds.append(command(mode, C, H, 1, base=0, radius=h))
    for mode in MODES:                                                      # pixel-major
        p = dict(radius=h, order="pixel_major")
        cmds.append(command(mode, 1, 1, 1, base=cfg.depth - 1, **p))
        cmds.append(command(mode, C, H, W, base=end, **p))
        cmds.append(command(mode, C, 1, 1, base=0, **p))
        cmds.append(command(mode, C, H, 1, base=0, **p))
    for r in sorted({0, 1, C - 1, C}):                                      # r = 0 and r = C
        for order in ORDERS:
            cmds.append(command("channel", C, H, W, base=end // 2, rotate=r, order=order))
    for c in sorted({1, 2, 3, 5, 7, 9, 10, 11, C}):
        if c > C:
            continue
        # Channel counts that the groups do not divide, explicit groups, g = 0.
        for radius in sorted({0, h}):
            cmds.append(command("shift", c, H, W, base=0, radius=radius))
            cmds.append(command("shift", c, H, W, base=0, radius=radius, group=1))
        cmds.append(command("address", c, H, W, base=0))
        cmds.append(command("address", c, H, W, base=0, group=c))
        cmds.append(command("address", c, H, W, base=0, group=0))
    check(tb, cmds, await tb.run(cmds=cmds), "corners")
    # Table entries at the range's ends, on a map smaller than the shift.
    R = cfg.max_shift
    tab = [tb.table_beat(c, R if c % 2 else -R, -R if c % 3 else R) for c in range(C)]
    cmds = [command("table", C, 1, 1), command("table", C, min(H, R + 1), min(W, R + 1)),
            command("table", C, H, W, base=end)]
    check(tb, cmds, await tb.run(tab=tab, cmds=cmds), "table extremes")
    await tb.check_status("corners")


@cocotb.test()
async def shortcut_concatenation(dut):
    """Two producers write adjacent regions at once; one plain read yields their concatenation."""
    tb = TB(dut)
    await tb.reset()
    rng = _rng()
    cfg = tb.cfg
    lo, hi = cfg.act_range
    for in_idle in ("none", "heavy"):
        H = int(rng.integers(1, cfg.height + 1))
        W = int(rng.integers(1, cfg.width + 1))
        ca = int(rng.integers(1, cfg.channels)) if cfg.channels > 1 else 1
        cb = cfg.channels - ca
        a = rng.integers(lo, hi + 1, size=(ca, H, W))
        b = rng.integers(lo, hi + 1, size=(cb, H, W))
        base = int(rng.integers(0, cfg.depth - (ca + cb) * H * W + 1))
        # Both producers stream at the same time; each knows only where its part begins.
        await tb.run(w0=tb.write_map(a, base), w1=tb.write_map(b, base + ca * H * W),
                     in_idle=in_idle)
        want = shortcut_concat(a, b)
        cmd = command("plain", ca + cb, H, W, base=base)
        out = await tb.run(cmds=[cmd], out_stall=in_idle)
        check(tb, [cmd], out, f"concat {ca}+{cb} channels")
        got = np.array([o[1] for o in out[0]]).reshape(want.shape)
        bad = np.argwhere(got != want)
        assert not bad.size, (f"concat: channel {bad[0][0]}, y {bad[0][1]}, x {bad[0][2]}: got "
                              f"{got[tuple(bad[0])]}, expected {want[tuple(bad[0])]}")


@cocotb.test()
async def idle_and_backpressure(dut):
    """Idle cycles on every input, backpressure on the output, in several combinations."""
    tb = TB(dut)
    await tb.reset()
    rng = _rng()
    for in_idle, out_stall in [("light", "none"), ("none", "light"), ("heavy", "heavy"),
                               ("none", "heavy"), ("random", "random")]:
        await fill(tb, rng, in_idle=in_idle)
        cmds = [random_command(tb, rng, mode) for mode in MODES]
        cmds += [random_command(tb, rng) for _ in range(max(4, _reads() // 4))]
        check(tb, cmds, await tb.run(cmds=cmds, in_idle=in_idle, out_stall=out_stall),
              f"in={in_idle} out={out_stall}")


@cocotb.test()
async def reset_mid_stream(dut):
    """A reset during preparation or reading drops the command; the unit then works."""
    tb = TB(dut)
    await tb.reset()
    rng = _rng()
    await fill(tb, rng)
    cfg = tb.cfg
    for stop_after in (2, cfg.prep_cycles + 1, cfg.read_latency + 3, cfg.map_words // 2 + 5):
        cmds = [random_command(tb, rng, mode) for mode in ("shift", "channel", "table")]
        await tb.run(cmds=cmds, out_stall="light", stop_after=stop_after)
        await tb.reset(cycles=1 + stop_after % 3)
        # Nothing may come out after a reset until a new command goes in.
        for _ in range(cfg.read_latency + 2):
            await RisingEdge(dut.clk)
            await ReadOnly()
            assert not dut.out__valid.value, f"output valid after reset at cycle {stop_after}"
            assert dut.cmd__ready.value, f"command not accepted after reset at {stop_after}"
        cmds = [random_command(tb, rng, mode) for mode in MODES]
        check(tb, cmds, await tb.run(cmds=cmds, out_stall="light"),
              f"after reset at cycle {stop_after}")


@cocotb.test()
async def refused_requests(dut):
    """Out-of-range table writes, commands and writes are refused and flagged, never wrapped."""
    tb = TB(dut)
    await tb.reset()
    rng = _rng()
    await fill(tb, rng)
    cfg = tb.cfg
    C, H, W, R = cfg.channels, cfg.height, cfg.width, cfg.max_shift
    # Table: a good entry, then refused ones aimed at the same channel; it must keep the good one.
    good = tb.table_beat(0, R, -R)
    tb_bits = cfg.table_entry_width
    top = (1 << (tb_bits - 1)) - 1           # the largest dy the field can carry
    bad = [tb.table_beat(0, R + 1, 0), tb.table_beat(0, 0, -R - 1), tb.table_beat(0, top, top),
           tb.table_beat(C, 0, 0)]
    if (1 << cfg.table_channel_width) - 1 > C:
        bad.append(tb.table_beat((1 << cfg.table_channel_width) - 1, 0, 0))
    await tb.run(tab=[good])
    await tb.check_status("good table write")
    for beat in bad:
        await tb.run(tab=[beat])
        await tb.check_status(f"table write {beat['entry']}")
        cmd = command("table", C, H, W)
        check(tb, [cmd], await tb.run(cmds=[cmd]), f"after refused table write {beat['entry']}")
        assert tb.table[0, 0] == R and tb.table[1, 0] == -R
        await tb.clear_status()
    # Commands: each refused one produces nothing; the good one after it is read normally.
    bad_cmds = [command("plain", 0, H, W), command("plain", C, 0, W), command("plain", C, H, 0),
                Command(command("plain", C, H, W), mode=7)]
    # Fields one past their range, where the field can carry the value.
    if C + 1 < (1 << cfg.count_width):
        bad_cmds += [command("plain", C + 1, H, W), command("channel", C, H, W, rotate=C + 1)]
    if H + 1 < (1 << cfg.height_width):
        bad_cmds.append(command("plain", C, H + 1, W))
    if W + 1 < (1 << cfg.width_width):
        bad_cmds.append(command("plain", C, H, W + 1))
    if C > 1:
        bad_cmds.append(command("channel", C - 1, H, W, rotate=C))
    if cfg.max_radius + 1 < (1 << cfg.radius_width):
        bad_cmds.append(command("shift", C, H, W, radius=cfg.max_radius + 1))
    for cmd in bad_cmds:
        cmds = [cmd, command("plain", C, H, W)]
        check(tb, cmds, await tb.run(cmds=cmds), f"refused command {dict(cmd)}")
        await tb.check_status(f"refused command {dict(cmd)}")
        await tb.clear_status()
    # Writes: past the end of the buffer, by address and by a running pointer.
    lo, hi = cfg.act_range
    beats = [tb.write_beat(hi, cfg.depth - 1), tb.write_beat(lo)]
    if cfg.depth < (1 << cfg.addr_width):
        beats.append(tb.write_beat(lo, cfg.depth))
    await tb.run(w0=beats)
    await tb.check_status("writes past the end")
    # The last word holds hi; address 0 must not have been overwritten by a wrapped write.
    cmds = [command("plain", 1, 1, 1, base=cfg.depth - 1), command("plain", 1, 1, 1, base=0)]
    check(tb, cmds, await tb.run(cmds=cmds), "after refused writes")
    await tb.clear_status()


@cocotb.test()
async def cycle_counts(dut):
    """A shifted read takes as many cycles as a plain one, in either order; one per cycle."""
    tb = TB(dut)
    await tb.reset()
    rng = _rng()
    await fill(tb, rng)
    cfg = tb.cfg
    C, H, W = cfg.channels, cfg.height, cfg.width
    latency = tb.manifest["timing"]["read_latency"]
    cycles = {}
    for order in ORDERS:
        for mode in MODES:
            cmd = command(mode, C, H, W, rotate=C // 3, radius=cfg.max_radius, order=order)
            out = await tb.run(cmds=[cmd])
            check(tb, [cmd], out, f"cycles {mode} {order}")
            cycles[mode, order] = out[0][-1][0] - tb.accepted[0] + 1
            first = out[0][0][0] - tb.accepted[0]
            assert first == latency, f"{mode} {order}: first element {first} cycles after " \
                                     f"the command, manifest says {latency}"
    plain = cycles["plain", "channel_major"]
    assert all(v == plain for v in cycles.values()), f"read cycles by mode and order: {cycles}"
    assert plain == latency + C * H * W, f"plain read took {plain} cycles"
    # Back to back: the next command's preparation hides behind the current read.
    cmds = [command(mode, C, H, W, rotate=1, radius=cfg.max_radius, order=order)
            for mode in MODES for order in ORDERS]
    out = await tb.run(cmds=cmds)
    check(tb, cmds, out, "back to back")
    if cfg.map_words > cfg.prep_cycles + 1:
        span = out[-1][-1][0] - out[0][0][0] + 1
        assert span == len(cmds) * C * H * W, \
            f"{len(cmds)} maps of {C * H * W} took {span} cycles, expected one element per cycle"
