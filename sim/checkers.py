"""Protocol checkers: cocotb monitors that assert the bus rules on every cycle of a simulation.

Each checker samples from the moment it is built: after every rising edge of its clock it
reads its signals in the read-only phase (the values the next edge will see) and checks them,
ignoring cycles in reset. The checkers on one clock share one coroutine (one wake-up per cycle,
not one per checker: most of a testbench's Python time per cycle on a fast simulator). The
first violation raises :class:`ProtocolViolation` inside that coroutine, which fails the
running cocotb test with a one-line message naming the bus, the cycle and the rule; it is also
kept in ``violations``, so a scenario can ``checker.check()`` at its end (which also checks
what can only be judged at the end, such as a missing response).

* :class:`StreamChecker`: a ready/valid stream (AXI4-Stream or ``amaranth.lib.stream``).
  Once ``valid`` is high it stays high with the same payload until ``ready``; every accepted
  beat is recorded (so a scenario can compare them with what its BFM sent or received: no
  beat lost or duplicated); ``last`` is checked beat by beat against the expected packet
  lengths.
* :class:`AxiLiteChecker`: an AXI4-Lite slave port. All five channels are stable while
  stalled (AW, W and AR check the master, B and R the slave); a B comes only for a write
  whose AW and W were both accepted, exactly one per write; an R only for an accepted AR, one
  per AR, in order. Transactions and their response codes are recorded.

The rules are those of ``docs/interface.md`` ("Bus rules", "Stream formats").
"""

import collections

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge


__all__ = ["ProtocolViolation", "Monitor", "StreamChecker", "AxiLiteChecker", "check_all"]


class ProtocolViolation(AssertionError):
    """A bus broke a protocol rule; the message names bus, cycle and rule."""


def _value(sig):
    """A signal's value as an int, or its string (with X/Z) when not resolvable."""
    v = sig.value
    try:
        return int(v)
    except ValueError:
        return str(v)


def _show(value):
    return f"{value:#x}" if isinstance(value, int) else value


def _high(sig):
    return str(sig.value) == "1"


class Monitor:
    """Base of the checkers: the sampling coroutine, the cycle count, the violations.

    A subclass implements ``_sample`` (a cycle out of reset, in the read-only phase) and
    ``_reset`` (a cycle in reset), and calls ``_fail(message)`` on a violation.
    """

    def __init__(self, clk, rst, name):
        self.clk, self.rst, self.name = clk, rst, name
        self.cycle = 0
        self.violations = []
        self._sampler = _Sampler.of(clk)
        self._sampler.monitors.append(self)

    @property
    def ok(self):
        """No rule broken so far."""
        return not self.violations

    def _fail(self, msg):
        message = f"{self.name}: cycle {self.cycle}: {msg}"
        self.violations.append(message)
        raise ProtocolViolation(message)

    def check(self):
        """Raise the first violation seen, if any (call at the end of a scenario)."""
        if self.violations:
            raise ProtocolViolation(self.violations[0])

    def stop(self):
        """Stop watching (the checker keeps what it recorded)."""
        if self in self._sampler.monitors:
            self._sampler.monitors.remove(self)

    def _tick(self):
        """One cycle, in the read-only phase after a rising edge."""
        self.cycle += 1
        if self.rst is not None and str(self.rst.value) != "0":
            self._reset()
        else:
            self._sample()

    def _reset(self):
        raise NotImplementedError

    def _sample(self):
        raise NotImplementedError


class _Sampler:
    """The coroutine that samples every checker on one clock, once per cycle, in the order
    they were built. One per clock and cocotb test: a test's end cancels it, and the next
    checker on that clock starts a new one."""

    _running = {}                   # clock handle -> its sampler (of the running test)

    @classmethod
    def of(cls, clk):
        sampler = cls._running.get(clk)
        if sampler is None or sampler.task.done():
            sampler = cls._running[clk] = cls(clk)
        return sampler

    def __init__(self, clk):
        self.clk = clk
        self.monitors = []
        self.task = cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await RisingEdge(self.clk)
            await ReadOnly()
            for monitor in tuple(self.monitors):
                monitor._tick()


class _Channel:
    """One valid/ready channel's stability rule: a shown beat stays, unchanged, until ready."""

    def __init__(self, monitor, label, valid, ready, payload):
        self.monitor, self.label = monitor, label
        self.vname = getattr(valid, "_name", "valid").rpartition("__")[2]
        self.valid, self.ready, self.payload = valid, ready, tuple(payload)
        self.names = tuple(getattr(p, "_name", str(i)) for i, p in enumerate(self.payload))
        self.held = None            # the payload of a beat shown but not yet accepted
        self.tolerate_drop = False

    def reset(self):
        self.held = None

    def sample(self):
        """Check this cycle; return ``(shown, accepted, payload)``."""
        if not _high(self.valid):
            if self.held is not None and not self.tolerate_drop:
                self.monitor._fail(f"{self.label}{self.vname} fell before its handshake "
                                   f"(beat {self.held})")
            self.held = None
            return False, False, None
        beat = tuple(_value(p) for p in self.payload)
        new = self.held is None
        if not new and beat != self.held:
            diff = [f"{n} {_show(a)}->{_show(b)}" for n, a, b in
                    zip(self.names, self.held, beat) if a != b]
            self.monitor._fail(f"{self.label}payload changed while stalled: {', '.join(diff)}")
        accepted = _high(self.ready)
        self.held = None if accepted else beat
        return new, accepted, beat


class StreamChecker(Monitor):
    """The rules of one ready/valid stream, checked on every cycle.

    Parameters
    ----------
    clk, rst : signal handles
        The stream's clock and its active-high reset (``None``: never in reset).
    valid, ready : signal handles
    payload : signal handles
        Every payload signal (data, last, keep, user...): all must stay stable while stalled.
        The recorded beats are tuples of their values, in this order.
    name : str
        The stream's name in messages.
    last : signal handle or callable, optional
        The packet end: a signal (usually also in ``payload``), or a function of the beat's
        payload tuple returning 0 or 1. ``None``: no packets.
    packets : iterable of int or callable, optional
        Expected packet lengths in order, or ``packets(index)`` returning packet ``index``'s
        length (``None``: unknown). More can be queued with :meth:`expect`. A packet whose
        length is unknown is recorded but its ``last`` is not checked.
    strict : bool
        A beat that starts a packet when no length is expected is a violation (default: it
        starts a packet of unknown length).
    """

    def __init__(self, clk, rst, valid, ready, *payload, name, last=None, packets=None,
                 strict=False):
        self._channel = _Channel(self, "", valid, ready, payload)
        if last is not None and not callable(last):
            handle = last
            if handle in payload:
                index = list(payload).index(handle)
                last = (lambda beat, i=index: beat[i])
            else:
                self._channel.payload += (handle,)
                self._channel.names += ("last",)
                last = (lambda beat: beat[-1])
        self._last = last
        self._expected = collections.deque()
        self._length_of = packets if callable(packets) else None
        if packets is not None and not callable(packets):
            self._expected.extend(int(n) for n in packets)
        self.strict = strict
        self.handshakes = 0
        self.beats = []             # every accepted beat's payload tuple, in order
        self.packets = []           # completed packets: lists of beats
        self._packet = []           # the packet being received
        self._length = None         # its expected length, None if unknown
        self._started = 0           # packets started so far
        self.on_beat = None         # optional callback(beat) for testbench models
        super().__init__(clk, rst, name)

    @property
    def tolerate_drop(self):
        """While True, ``valid`` may fall before ``ready``: an abort (soft reset, core error)."""
        return self._channel.tolerate_drop

    @tolerate_drop.setter
    def tolerate_drop(self, value):
        self._channel.tolerate_drop = bool(value)

    def expect(self, *lengths):
        """Queue the lengths of the next packets."""
        self._expected.extend(int(n) for n in lengths)

    def abort(self):
        """Forget the packet under way and the queued lengths (after an aborted transfer)."""
        self._packet, self._length = [], None
        self._expected.clear()
        self._channel.held = None

    def take(self):
        """The beats accepted since the last call (and forget them)."""
        beats, self.beats = self.beats, []
        return beats

    def _reset(self):
        # A reset aborts every packet under way and every packet expected.
        self._channel.reset()
        self._packet, self._length = [], None
        self._expected.clear()

    def _next_length(self):
        if self._expected:
            return self._expected.popleft()
        if self._length_of is not None:
            return self._length_of(self._started)
        if self.strict:
            self._fail(f"beat {self.handshakes} starts packet {self._started}, which is "
                       f"not expected")
        return None

    def _sample(self):
        _, accepted, beat = self._channel.sample()
        if not accepted:
            return
        index = self.handshakes
        self.handshakes += 1
        self.beats.append(beat)
        if self.on_beat is not None:
            self.on_beat(beat)
        if self._last is None:
            return
        if not self._packet:
            self._length = self._next_length()
            self._started += 1
        self._packet.append(beat)
        last, pos, n = int(self._last(beat)), len(self._packet) - 1, self._length
        packet = self._started - 1
        if n is not None:
            if last and pos != n - 1:
                self._fail(f"last on beat {pos} of packet {packet} (stream beat {index}), "
                           f"expected on beat {n - 1} (packet length {n})")
            if not last and pos == n - 1:
                self._fail(f"no last on beat {pos}, the end of packet {packet} (stream beat "
                           f"{index}, packet length {n})")
        if last:
            self.packets.append(self._packet)
            self._packet, self._length = [], None


class AxiLiteChecker(Monitor):
    """The rules of an AXI4-Lite slave port (``<prefix><sep>awvalid`` ...), every cycle.

    Records ``writes`` as ``[addr, data, strb, resp]`` and ``reads`` as ``[addr, data, resp]``,
    in order (``resp`` is ``None`` until the response is accepted); ``counts`` holds the
    handshakes per channel.
    """

    def __init__(self, clk, rst, dut, prefix="s_axil", separator="__", name=None):
        def sig(n):
            return getattr(dut, f"{prefix}{separator}{n}")

        def channel(ch, payload):
            return _Channel(self, f"{ch.upper()}: ", sig(f"{ch}valid"), sig(f"{ch}ready"),
                            [sig(p) for p in payload])

        self.aw = channel("aw", ["awaddr", "awprot"])
        self.w = channel("w", ["wdata", "wstrb"])
        self.b = channel("b", ["bresp"])
        self.ar = channel("ar", ["araddr", "arprot"])
        self.r = channel("r", ["rdata", "rresp"])
        self.counts = dict.fromkeys("aw w b ar r".split(), 0)
        self.writes, self.reads = [], []
        self._aw, self._w = collections.deque(), collections.deque()
        super().__init__(clk, rst, name or prefix)

    def outstanding(self):
        """(writes with AW and W accepted and no B yet, reads with AR and no R yet)."""
        c = self.counts
        return min(c["aw"], c["w"]) - c["b"], c["ar"] - c["r"]

    def check(self, idle=True):
        """Raise the first violation; with ``idle``, also any write or read left unanswered
        or half sent (call when the master has nothing in flight)."""
        super().check()
        if idle:
            c = self.counts
            writes, reads = self.outstanding()
            if writes or reads or c["aw"] != c["w"]:
                self._fail(f"{writes} write(s) without B, {reads} read(s) without R, "
                           f"{c['aw']} AW for {c['w']} W ({self.summary()})")

    def summary(self):
        return ", ".join(f"{k.upper()} {v}" for k, v in self.counts.items())

    def _reset(self):
        for ch in (self.aw, self.w, self.b, self.ar, self.r):
            ch.reset()
        self.counts = dict.fromkeys(self.counts, 0)
        self._aw.clear()
        self._w.clear()

    def _sample(self):
        c = self.counts
        # Responses first: they may only answer transactions accepted at earlier edges.
        new, accepted, beat = self.b.sample()
        if new and min(c["aw"], c["w"]) <= c["b"]:
            self._fail(f"B: bvalid with no write to answer (AW {c['aw']}, W {c['w']} "
                       f"accepted, B {c['b']} given)")
        if accepted:
            self.writes[c["b"]][3] = beat[0]
            c["b"] += 1
        new, accepted, beat = self.r.sample()
        if new and c["ar"] <= c["r"]:
            self._fail(f"R: rvalid with no read to answer (AR {c['ar']} accepted, R {c['r']} "
                       f"given)")
        if accepted:
            self.reads[c["r"]][1:] = beat
            c["r"] += 1
        _, accepted, beat = self.aw.sample()
        if accepted:
            c["aw"] += 1
            self._aw.append(beat[0])
        _, accepted, beat = self.w.sample()
        if accepted:
            c["w"] += 1
            self._w.append(beat)
        while self._aw and self._w:
            data, strb = self._w.popleft()
            self.writes.append([self._aw.popleft(), data, strb, None])
        _, accepted, beat = self.ar.sample()
        if accepted:
            c["ar"] += 1
            self.reads.append([beat[0], None, None])


def check_all(*checkers):
    """Raise the first violation of any of ``checkers`` (each checked with its defaults)."""
    for checker in checkers:
        checker.check()
