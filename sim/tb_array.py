"""cocotb testbench of a generated PE array, checked bit-exactly against the golden model.

The design under test is described by its manifest (``MULFREE_MANIFEST``): the testbench takes
the configuration, port widths and field offsets from it, like the host runtime will. Scale and
patterns come from the environment:

* ``MULFREE_TB_VECTORS``: random vectors per scenario (default 400);
* ``MULFREE_TB_SEED``: seed of the data generator (default: cocotb's seed);
* ``MULFREE_TB_REPORT``: a file to which each scenario appends a JSON line with the number of
  outputs it checked and the cycles it simulated.

One coroutine drives all three streams cycle by cycle: after each rising edge it drives the
next beats, then samples in the read-only phase which handshakes will happen at the next edge.

Protocol checkers (:mod:`mulfree.sim.checkers`, built in the constructor) watch ``w``, ``x`` and
``y`` on every cycle: stable beats while stalled, ``last`` of ``x`` and ``y`` on each tile's last
vector; :class:`PipelineRoom` checks that the array takes an input whenever its pipeline has
room (the output register free or leaving, the tile's weights there) and never while the
output is stalled.
"""

import itertools
import json
import os
import random

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

from ..params.config import ArrayConfig
from ..params.golden import array_forward, encode_shift
from .checkers import Monitor, StreamChecker
from .vectors import StructPacker, pack, unpack


__all__ = ["Stimulus", "PipelineRoom", "random_tiles", "corner_tiles"]

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


class Stimulus:
    """A sequence of weight tiles, each with its input vectors and partial sums."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.tiles = []     # (weights[rows, cols], inputs[M, rows], psums[M, cols])

    def add(self, weights, inputs, psums):
        self.tiles.append((np.asarray(weights), np.asarray(inputs), np.asarray(psums)))

    def expected(self):
        """Golden outputs, one ``(tile, vector, y[cols])`` per input vector, in order."""
        out = []
        for t, (w, x, p) in enumerate(self.tiles):
            y = array_forward(self.cfg, w, x, p)
            out += [(t, m, y[m]) for m in range(len(y))]
        return out


def random_codes(cfg, rng, shape):
    """Uniformly random weight codes, every code value possible (both shift zeros included)."""
    if cfg.pe == "shift":
        return rng.integers(0, 1 << cfg.code_width, size=shape)
    lo, hi = cfg.weight_range
    return rng.integers(lo, hi + 1, size=shape)


def random_psums(cfg, rng, shape):
    """Partial sums of reductions of up to ``max_k - rows`` terms: any value the design must hold."""
    lo, hi = cfg.sum_range(cfg.max_k - cfg.rows)
    return rng.integers(lo, hi + 1, size=shape)


def random_tiles(cfg, rng, vectors, tiles=3):
    stim = Stimulus(cfg)
    xlo, xhi = cfg.act_range
    counts = [1] + list(rng.integers(1, max(2, 2 * vectors // tiles), size=tiles - 1))
    for m in counts:
        stim.add(random_codes(cfg, rng, (cfg.rows, cfg.cols)),
                 rng.integers(xlo, xhi + 1, size=(m, cfg.rows)),
                 random_psums(cfg, rng, (m, cfg.cols)))
    return stim


def _extreme_weights(cfg):
    """Weight codes of the largest term magnitude: (positive-weight code, negative-weight code)."""
    if cfg.pe == "shift":
        return (int(encode_shift(1, cfg.max_shift, cfg.weight_bits)),
                int(encode_shift(-1, cfg.max_shift, cfg.weight_bits)))
    lo, hi = cfg.weight_range
    return hi, lo


def corner_tiles(cfg):
    """Tiles whose sums reach the accumulator's bounds exactly, and zero weights."""
    stim = Stimulus(cfg)
    rows, cols = cfg.rows, cfg.cols
    xlo, xhi = cfg.act_range
    wpos, wneg = _extreme_weights(cfg)
    lo, hi = cfg.term_range
    rest = cfg.max_k - rows
    xmin = np.full((1, rows), xlo)
    xmax = np.full((1, rows), xhi)
    if cfg.pe == "adder":
        # -|xlo - whi| is the most negative term; the sum reaches acc_range's low end.
        stim.add(np.full((rows, cols), wpos), np.vstack([xmin, xmax]),
                 np.array([[rest * lo] * cols, [0] * cols]))
        stim.add(np.full((rows, cols), wneg), np.vstack([xmax, xmin]),
                 np.array([[rest * lo] * cols, [rest * lo] * cols]))
    else:
        # x = most negative with the negative extreme weight gives the largest term, with the
        # positive one the most negative term; psums push the sums to the bounds.
        stim.add(np.full((rows, cols), wneg), np.vstack([xmin, xmin, xmax]),
                 np.array([[rest * hi] * cols, [0] * cols, [rest * lo] * cols]))
        stim.add(np.full((rows, cols), wpos), np.vstack([xmin, xmax]),
                 np.array([[rest * lo] * cols, [rest * hi] * cols]))
    # Zero weights: every zero code there is, with extreme activations. Shift and mult terms
    # are then 0, so the partial sums may sit at the accumulator's bounds; an adder's zero
    # weight is just w = 0.
    zeros = [0, 1 << (cfg.code_width - 1)] if cfg.pe == "shift" else [0]
    w = np.resize(np.array(zeros), rows * cols).reshape(rows, cols)
    psum_lo, psum_hi = (rest * lo, 0) if cfg.pe == "adder" else cfg.acc_range
    stim.add(w, np.vstack([xmin, xmax]), np.array([[psum_lo] * cols, [psum_hi] * cols]))
    # Alternating signs and shifts: a checkerboard of extremes.
    checker = np.where((np.arange(rows)[:, None] + np.arange(cols)) % 2, wpos, wneg)
    stim.add(checker, np.vstack([xmin, xmax, xmin]), np.zeros((3, cols), dtype=np.int64))
    return stim


class PipelineRoom(Monitor):
    """The array's flow control against a model of its pipeline, every cycle.

    The pipeline advances when the output register is free or being emptied (``y.valid`` low
    or ``y.ready`` high); an input vector then enters unless it starts a tile whose ``rows``
    weight beats have not all arrived. So an offered vector must be taken whenever the model
    says there is room, and never while the output is stalled. The model follows the weight
    and input handshakes (``x_last``: the ``last`` bit of an input payload).
    """

    def __init__(self, dut, rows, x_last, name="array"):
        self.dut, self.rows, self.x_last = dut, rows, x_last
        self._reset()
        super().__init__(dut.clk, dut.rst, name)

    def _reset(self):
        self.starts_tile, self.pending, self.loaded = True, False, 0

    def _sample(self):
        d = self.dut
        x_valid, x_ready = str(d.x__valid.value) == "1", str(d.x__ready.value) == "1"
        y_valid, y_ready = str(d.y__valid.value) == "1", str(d.y__ready.value) == "1"
        room = not y_valid or y_ready
        weights = not self.starts_tile or self.pending
        if x_valid and room and weights and not x_ready:
            self._fail("x refused while the pipeline has room (output "
                       f"{'free' if not y_valid else 'leaving'}, tile weights loaded)")
        if x_ready and not room:
            self._fail("x.ready high while the output is stalled")
        if str(d.w__valid.value) == "1" and str(d.w__ready.value) == "1":
            self.loaded += 1
            if self.loaded == self.rows:
                self.loaded, self.pending = 0, True
        if x_valid and x_ready:
            if self.starts_tile:
                self.pending = False
            self.starts_tile = bool(self.x_last(d.x__payload.value.to_unsigned()))


class TB:
    """Clock, reset, the three stream interfaces of one array and their checkers."""

    def __init__(self, dut):
        self.dut = dut
        self.manifest = json.loads(open(os.environ["MULFREE_MANIFEST"]).read())
        self.cfg = ArrayConfig(**self.manifest["parameters"])
        ports = {p["name"]: p for p in self.manifest["ports"]}
        self.x_fields = StructPacker(ports["x__payload"]["fields"])
        self.y_fields = StructPacker(ports["y__payload"]["fields"])
        self.acc = self.manifest["derived"]["acc_width"]
        self.code_width = self.manifest["derived"]["code_width"]
        self.cycle = 0
        # The bus rules on every cycle; run() queues each tile's length for x's and y's last.
        clk, rst = dut.clk, dut.rst

        def last_of(fields):
            return lambda beat: fields.field(beat[0], "last")
        self.w_check = StreamChecker(clk, rst, dut.w__valid, dut.w__ready, dut.w__payload,
                                     name="w")
        self.x_check = StreamChecker(clk, rst, dut.x__valid, dut.x__ready, dut.x__payload,
                                     name="x", last=last_of(self.x_fields))
        self.y_check = StreamChecker(clk, rst, dut.y__valid, dut.y__ready, dut.y__payload,
                                     name="y", last=last_of(self.y_fields))
        self.room = PipelineRoom(dut, self.cfg.rows,
                                 lambda word: self.x_fields.field(word, "last"))
        cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())

    def check_protocol(self):
        """Raise the first violation of any checker."""
        for checker in (self.w_check, self.x_check, self.y_check, self.room):
            checker.check()

    async def reset(self, cycles=2):
        d = self.dut
        d.rst.value = 1
        d.w__valid.value = 0
        d.x__valid.value = 0
        d.y__ready.value = 0
        for _ in range(cycles):
            await RisingEdge(d.clk)
        d.rst.value = 0

    def _w_beats(self, stim):
        for w, _, _ in stim.tiles:
            for r in range(self.cfg.rows):
                yield pack(w[r], self.code_width)

    def _x_beats(self, stim):
        a = self.cfg.act_bits
        for _, x, p in stim.tiles:
            for m in range(len(x)):
                yield self.x_fields.pack(data=pack(x[m], a), psum=pack(p[m], self.acc),
                                         last=int(m == len(x) - 1))

    async def run(self, stim, *, in_idle="none", out_stall="none", w_idle="none",
                  max_cycles=None, stop_after=None):
        """Stream ``stim`` through the design; return the collected output beats.

        ``stop_after``: return after this many cycles (for a reset mid-stream), with whatever
        arrived. Each output is ``(cycle, y[cols], last)``.
        """
        d = self.dut
        cols, acc = self.cfg.cols, self.acc
        w_beats, x_beats = self._w_beats(stim), self._x_beats(stim)
        n_out = sum(len(x) for _, x, _ in stim.tiles)
        max_cycles = max_cycles or 50 * (n_out + self.cfg.rows * len(stim.tiles) + 100)
        in_pat = pattern(in_idle, 1 + self.cycle)
        w_pat = pattern(w_idle, 2 + self.cycle)
        out_pat = pattern(out_stall, 3 + self.cycle)
        w_cur = next(w_beats, None)
        x_cur = next(x_beats, None)
        lengths = [len(x) for _, x, _ in stim.tiles]
        self.w_check.tolerate_drop = self.x_check.tolerate_drop = False
        self.x_check.expect(*lengths)
        self.y_check.expect(*lengths)
        y_before = len(self.y_check.beats)
        outputs, accepted = [], []
        w_show = x_show = False
        for cycle in range(max_cycles):
            await RisingEdge(d.clk)
            self.cycle += 1
            if stop_after is not None and cycle >= stop_after:
                # An abort: withdraw the shown beats now, before this cycle's edge (left up,
                # a beat accepted last cycle would be taken a second time).
                for checker in (self.w_check, self.x_check):
                    checker.tolerate_drop = True
                d.w__valid.value = 0
                d.x__valid.value = 0
                break
            # Drive this cycle's beats: a beat once shown stays until accepted (AXI rule).
            w_show = w_cur is not None and (w_show or bool(next(w_pat)))
            x_show = x_cur is not None and (x_show or bool(next(in_pat)))
            d.w__valid.value = int(w_show)
            if w_show:
                d.w__payload.value = w_cur
            d.x__valid.value = int(x_show)
            if x_show:
                d.x__payload.value = x_cur
            d.y__ready.value = next(out_pat)
            await ReadOnly()
            if w_show and d.w__ready.value:
                w_cur, w_show = next(w_beats, None), False
            if x_show and d.x__ready.value:
                accepted.append(self.cycle)
                x_cur, x_show = next(x_beats, None), False
            if d.y__valid.value and d.y__ready.value:
                word = d.y__payload.value.to_unsigned()
                outputs.append((self.cycle, unpack(self.y_fields.field(word, "data"), acc, cols),
                                self.y_fields.field(word, "last")))
                if len(outputs) == n_out:
                    break
        else:
            if stop_after is None:
                raise AssertionError(f"timeout after {max_cycles} cycles: {len(outputs)} of "
                                     f"{n_out} outputs, {len(accepted)} inputs accepted")
        await RisingEdge(d.clk)
        self.cycle += 1
        d.w__valid.value = 0
        d.x__valid.value = 0
        self.accepted = accepted
        if stop_after is None:
            seen = [self.y_fields.field(b[0], "data") for b in self.y_check.beats[y_before:]]
            got = [pack(y, acc) for _, y, _ in outputs]
            assert seen == got, f"y carried {len(seen)} beats, the testbench took {len(got)}"
            self.check_protocol()
        return outputs


def _report(label, outputs, cycles):
    path = os.environ.get("MULFREE_TB_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"scenario": label, "outputs": outputs, "cycles": cycles}) + "\n")


def check(stim, outputs, label=""):
    """Compare outputs with the golden model; the message names vector, column, got, expected."""
    expected = stim.expected()
    assert len(outputs) == len(expected), \
        f"{label}: {len(outputs)} outputs, expected {len(expected)}"
    for i, ((tile, m, want), (cycle, got, last)) in enumerate(zip(expected, outputs)):
        bad = np.flatnonzero(got != want)
        if bad.size:
            c = int(bad[0])
            raise AssertionError(
                f"{label}: output {i} (tile {tile}, vector {m}, cycle {cycle}), column {c}: "
                f"got {int(got[c])}, expected {int(want[c])} ({bad.size} column(s) differ)")
        want_last = int(m == len(stim.tiles[tile][1]) - 1)
        assert last == want_last, f"{label}: output {i}: last={last}, expected {want_last}"
    _report(label, len(outputs), outputs[-1][0] - outputs[0][0] + 1 if outputs else 0)


def _rng():
    seed = int(os.environ.get("MULFREE_TB_SEED", cocotb.RANDOM_SEED))
    return np.random.default_rng(seed)


def _vectors():
    return int(os.environ.get("MULFREE_TB_VECTORS", "400"))


@cocotb.test()
async def random_data(dut):
    """Random tiles, codes, activations and partial sums, no stalls."""
    tb = TB(dut)
    await tb.reset()
    stim = random_tiles(tb.cfg, _rng(), _vectors(), tiles=4)
    check(stim, await tb.run(stim), "random")


@cocotb.test()
async def corner_cases(dut):
    """Most negative activations, largest shifts and weights, accumulator bounds, zero codes."""
    tb = TB(dut)
    await tb.reset()
    stim = corner_tiles(tb.cfg)
    check(stim, await tb.run(stim), "corners")


@cocotb.test()
async def idle_and_backpressure(dut):
    """Idle cycles on the inputs and backpressure on the output, in several combinations;
    short tiles back to back under backpressure."""
    tb = TB(dut)
    await tb.reset()
    rng = _rng()
    for in_idle, out_stall, w_idle in [("light", "none", "heavy"), ("none", "light", "none"),
                                       ("heavy", "heavy", "light"), ("none", "heavy", "heavy"),
                                       ("random", "random", "random")]:
        stim = random_tiles(tb.cfg, rng, max(8, _vectors() // 4), tiles=3)
        outputs = await tb.run(stim, in_idle=in_idle, out_stall=out_stall, w_idle=w_idle)
        check(stim, outputs, f"in={in_idle} out={out_stall} w={w_idle}")
    # Short tiles back to back, the next tile's weights offered on every cycle: they load while
    # the current tile's first vector still travels down the rows (its swap token in flight)
    # and the output stalls. Loading then must wait for the token, or a row takes the next
    # tile's weights.
    for out_stall in ("heavy", "random"):
        stim = Stimulus(tb.cfg)
        for m in rng.integers(1, tb.cfg.rows + 3, size=12):
            stim.add(random_codes(tb.cfg, rng, (tb.cfg.rows, tb.cfg.cols)),
                     rng.integers(*tb.cfg.act_range, size=(m, tb.cfg.rows), endpoint=True),
                     random_psums(tb.cfg, rng, (m, tb.cfg.cols)))
        check(stim, await tb.run(stim, out_stall=out_stall), f"back to back, out={out_stall}")


@cocotb.test()
async def reset_mid_stream(dut):
    """A reset while tiles are in flight drops them; the next tiles come out right."""
    tb = TB(dut)
    await tb.reset()
    rng = _rng()
    cfg = tb.cfg
    for stop_after in (cfg.rows // 2 + 1, cfg.rows + 3, 3 * cfg.rows + 7):
        stim = random_tiles(cfg, rng, 40, tiles=2)
        await tb.run(stim, in_idle="random", out_stall="random", w_idle="random",
                     stop_after=stop_after)
        await tb.reset(cycles=random.Random(stop_after).randint(1, 3))
        # Nothing may come out after a reset until new data goes in.
        for _ in range(cfg.latency + 2):
            await RisingEdge(dut.clk)
            await ReadOnly()
            assert not dut.y__valid.value, "output valid after reset with no new input"
        stim = random_tiles(cfg, rng, 20, tiles=2)
        check(stim, await tb.run(stim, in_idle="light", out_stall="light"),
              f"after reset at cycle {stop_after}")


@cocotb.test()
async def latency_and_throughput(dut):
    """Latency equals the manifest's; one vector per cycle in steady state."""
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    stim = random_tiles(cfg, _rng(), 1, tiles=1)
    outputs = await tb.run(stim)
    check(stim, outputs, "latency")
    latency = outputs[0][0] - tb.accepted[0]
    assert latency == tb.manifest["timing"]["latency"], \
        f"latency {latency} cycles, manifest says {tb.manifest['timing']['latency']}"
    # Two tiles back to back: the second tile's weights load while the first computes.
    rng, n = _rng(), 4 * cfg.rows + 16
    stim = Stimulus(cfg)
    for _ in range(2):
        stim.add(random_codes(cfg, rng, (cfg.rows, cfg.cols)),
                 rng.integers(*cfg.act_range, size=(n, cfg.rows), endpoint=True),
                 random_psums(cfg, rng, (n, cfg.cols)))
    outputs = await tb.run(stim)
    check(stim, outputs, "throughput")
    span = tb.accepted[-1] - tb.accepted[0] + 1
    assert span == 2 * n, f"{2 * n} vectors took {span} input cycles, expected one per cycle"
