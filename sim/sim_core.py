"""The simulated board driven from Python: a built core library loaded with :mod:`ctypes`.

:class:`SimCore` loads a library from :func:`mulfree.sim.board_build.build_sim_core` (the
core's generated Verilog under Verilator with the C++ harness ``harness.cpp``). The harness
holds what the board around the core would: an AXI4-Lite master for the registers, an input
queue that feeds ``s_axis`` like an MM2S DMA channel, and a sink that takes ``m_axis`` like an
S2MM channel. The clock runs in C++ (:meth:`SimCore.run`) until a stop condition, so no Python
runs per cycle.

Every handshake is AXI-correct: a ``valid`` is held, with its data stable, until the rising edge
at which ``ready`` is high too; a transfer happens at that edge. The harness checks the core's
side of the buses on every cycle (``m_axis`` stable while stalled, ``tlast`` against the
lengths given to :meth:`SimCore.expect_packets`, one B per write and one R per read, never
early); a violation raises :class:`ProtocolError` from the call that ran the clock.
"""

import ctypes
from pathlib import Path

import numpy as np


__all__ = ["UNTIL", "ProtocolError", "SimCore"]

#: Stop conditions of :meth:`SimCore.run`, and their flag bits in the harness.
UNTIL = {"irq": 1, "input_empty": 2, "sink_done": 4}

# Cycles an AXI4-Lite transaction may take before it counts as hung.
_AXIL_TIMEOUT = 10_000
# Cycles per harness call in run(): a long run still answers Ctrl-C between calls.
_RUN_CHUNK = 200_000

#: Loaded libraries by resolved path (a library is loaded once per process).
_LIBS = {}
_u64, _p = ctypes.c_uint64, ctypes.c_void_p
_SIGNATURES = {
    "mf_top_name": ([], ctypes.c_char_p),
    "mf_beat_bytes": ([], ctypes.c_int),
    "mf_create": ([], _p),
    "mf_destroy": ([_p], None),
    "mf_cycles": ([_p], _u64),
    "mf_irq": ([_p], ctypes.c_int),
    "mf_reset": ([_p, _u64], None),
    "mf_axil_write": ([_p, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, _u64,
                       ctypes.POINTER(_u64)], ctypes.c_int),
    "mf_axil_read": ([_p, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32), _u64,
                      ctypes.POINTER(_u64)], ctypes.c_int),
    "mf_push": ([_p, _p, _p, _u64], None),
    "mf_in_pending": ([_p], _u64),
    "mf_clear_input": ([_p], None),
    "mf_arm_sink": ([_p, _u64], None),
    "mf_sink_left": ([_p], _u64),
    "mf_disarm_sink": ([_p], None),
    "mf_out_count": ([_p], _u64),
    "mf_pop": ([_p, _p, _p, _u64], None),
    "mf_run": ([_p, _u64, ctypes.c_int, ctypes.POINTER(ctypes.c_int)], _u64),
    "mf_expect_packets": ([_p, _p, _u64], None),
    "mf_forget_packets": ([_p], None),
    "mf_violations": ([_p], _u64),
    "mf_violation": ([_p], ctypes.c_char_p),
    "mf_clear_violations": ([_p], None),
}


class ProtocolError(RuntimeError):
    """The simulated core broke a bus rule (the harness's checks); one line naming it."""


def _load_library(lib_path):
    """The library at ``lib_path`` loaded with its functions' signatures (once per path)."""
    path = Path(lib_path).resolve()
    if path not in _LIBS:
        if not path.is_file():
            raise FileNotFoundError(f"lib_path: no such library: {path}")
        lib = ctypes.CDLL(str(path))
        for name, (args, res) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
        _LIBS[path] = lib
    return _LIBS[path]


def _check_uint(param, value, bits):
    """``value`` as an int in ``[0, 2**bits)``, else ``ValueError`` naming ``param``."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) \
            or not 0 <= value < 1 << bits:
        raise ValueError(f"{param} must be an integer in [0, 2**{bits}), not {value!r}")
    return int(value)


class SimCore:
    """One simulated core with its board: registers, an input queue and an output sink.

    Creating one resets the core (:meth:`reset`). Several instances, of the same library or of
    different ones, are independent (each has its own Verilator context). The harness calls
    release the GIL, so distinct instances may run in distinct threads; one instance must not
    be used by two threads at once.

    Parameters
    ----------
    lib_path : str or Path
        A library from :func:`build_sim_core`.
    manifest : dict
        The core's manifest (``<top>.json``); its ``top`` and stream width must be the
        library's.
    """

    def __init__(self, lib_path, manifest: dict):
        from ..host.manifest_check import check_manifest
        self._h = None
        # The register offsets and the stream width below come from a manifest that equals
        # what its parameters give (ManifestError, a ValueError, otherwise).
        manifest, _ = check_manifest(manifest, param="manifest")
        self._lib = _load_library(lib_path)
        self.manifest = manifest
        top = self._lib.mf_top_name().decode()
        if top != manifest["top"]:
            raise ValueError(f"lib_path: the library simulates {top}, the manifest describes "
                             f"{manifest['top']}")
        self._beat_bytes = int(self._lib.mf_beat_bytes())
        width = int(manifest["parameters"]["stream_width"])
        if self._beat_bytes * 8 != width:
            raise ValueError(f"lib_path: the library's stream is {self._beat_bytes * 8} bits, "
                             f"the manifest's {width}")
        self._addr_bits = int(manifest["registers"]["addr_width"])
        self._regs = {r["name"]: r["offset"] for r in manifest["registers"]["registers"]}
        self._h = self._lib.mf_create()
        if not self._h:
            raise MemoryError("the harness could not create the model")
        self.reset()

    # Life cycle

    def close(self):
        """Free the model; the object is unusable afterwards. Idempotent."""
        if self._h:
            self._lib.mf_destroy(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _handle(self):
        if not self._h:
            raise ValueError("this SimCore is closed")
        return self._h

    # Properties

    @property
    def top(self):
        """The core's top module name."""
        return self.manifest["top"]

    @property
    def stream_width(self):
        """``tdata`` bits of ``s_axis`` and ``m_axis``."""
        return self._beat_bytes * 8

    @property
    def beat_bytes(self):
        """Bytes per stream beat (``stream_width // 8``)."""
        return self._beat_bytes

    @property
    def cycles(self):
        """Clock cycles since creation (resets included)."""
        return int(self._lib.mf_cycles(self._handle()))

    @property
    def irq(self):
        """The current value of the core's ``irq`` output (bool)."""
        return bool(self._lib.mf_irq(self._handle()))

    # Reset and registers

    def reset(self, cycles=4):
        """Hold ``rst`` high for ``cycles`` cycles; empty the input queue, the captured output
        and the sink's arming; abandon any register transaction."""
        if not isinstance(cycles, int) or isinstance(cycles, bool) or cycles < 1:
            raise ValueError(f"cycles must be a positive integer, not {cycles!r}")
        self._lib.mf_reset(self._handle(), cycles)
        self._check_protocol()

    def _check_protocol(self):
        """Raise :class:`ProtocolError` for violations the harness saw since the last call."""
        h = self._handle()
        n = int(self._lib.mf_violations(h))
        if n:
            first = self._lib.mf_violation(h).decode()
            self._lib.mf_clear_violations(h)
            raise ProtocolError(f"{self.manifest['top']}: {n} protocol violation(s), the "
                                f"first at {first}")

    def expect_packets(self, lengths):
        """Check ``tlast`` of the next result packets against ``lengths`` (beats each), beat
        by beat; later packets are not checked. Cleared by :meth:`forget_packets` (call it
        after a run ends early: an error or a soft reset may cut a packet) and by reset."""
        lengths = np.asarray([int(n) for n in lengths], dtype=np.uint64)
        if (lengths == 0).any():
            raise ValueError(f"lengths must be positive, not {lengths.tolist()}")
        self._lib.mf_expect_packets(self._handle(), lengths.ctypes.data, len(lengths))

    def forget_packets(self):
        """Drop the expected packet lengths and the packet under way."""
        self._lib.mf_forget_packets(self._handle())

    def _addr(self, addr):
        return _check_uint("addr", addr, self._addr_bits)

    def axil_write(self, addr, data, *, strb=0b1111):
        """Write ``data`` at byte address ``addr``: AW and W, then B; the clock runs meanwhile.

        Returns
        -------
        int
            BRESP: 0 (OKAY) or 2 (SLVERR).

        Raises
        ------
        TimeoutError
            If no response comes within 10,000 cycles.
        """
        h = self._handle()
        addr = self._addr(addr)
        data = _check_uint("data", data, 32)
        strb = _check_uint("strb", strb, 4)
        used = _u64()
        resp = self._lib.mf_axil_write(h, addr, data, strb, _AXIL_TIMEOUT, ctypes.byref(used))
        self._check_protocol()
        if resp < 0:
            raise TimeoutError(f"AXI4-Lite write to 0x{addr:x}: no response within "
                               f"{_AXIL_TIMEOUT} cycles")
        return resp

    def axil_read(self, addr):
        """Read byte address ``addr``: AR, then R; the clock runs meanwhile.

        Returns
        -------
        (int, int)
            The data and RRESP (0 OKAY, 2 SLVERR).

        Raises
        ------
        TimeoutError
            If no response comes within 10,000 cycles.
        """
        h = self._handle()
        addr = self._addr(addr)
        data, used = ctypes.c_uint32(), _u64()
        resp = self._lib.mf_axil_read(h, addr, ctypes.byref(data), _AXIL_TIMEOUT,
                                      ctypes.byref(used))
        self._check_protocol()
        if resp < 0:
            raise TimeoutError(f"AXI4-Lite read of 0x{addr:x}: no response within "
                               f"{_AXIL_TIMEOUT} cycles")
        return int(data.value), resp

    def register_offset(self, name):
        """The byte offset of register ``name`` (from the manifest's ``registers``)."""
        try:
            return self._regs[name]
        except KeyError:
            raise ValueError(f"name must be a register of the manifest "
                             f"({', '.join(self._regs)}), not {name!r}") from None

    def read_reg(self, name):
        """Read register ``name``; raise :class:`RuntimeError` unless the response is OKAY."""
        data, resp = self.axil_read(self.register_offset(name))
        if resp != 0:
            raise RuntimeError(f"reading {name} answered SLVERR")
        return data

    def write_reg(self, name, value):
        """Write register ``name``; return BRESP (a refused write answers 2, SLVERR)."""
        return self.axil_write(self.register_offset(name), value)

    # Streams

    def push(self, data, last):
        """Queue beats for ``s_axis``; they are driven (``tvalid``) while the queue is not empty.

        Parameters
        ----------
        data : array of uint8, shape ``[n, beat_bytes]``
            Beat ``i``'s byte ``j`` is ``tdata[8j+7:8j]`` (an AXI DMA's memory layout).
        last : array of bool, shape ``[n]``
            ``tlast`` of each beat.
        """
        h = self._handle()
        data = np.asarray(data)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != self._beat_bytes:
            raise ValueError(f"data must be a uint8 array of shape [n, {self._beat_bytes}], "
                             f"not {data.dtype} {data.shape}")
        last = np.asarray(last)
        if last.shape != (data.shape[0],) or last.dtype.kind not in "bui":
            raise ValueError(f"last must be a bool array of shape ({data.shape[0]},), not "
                             f"{last.dtype} {last.shape}")
        if not data.shape[0]:
            return
        data = np.ascontiguousarray(data)
        flags = np.ascontiguousarray(last != 0, dtype=np.uint8)
        self._lib.mf_push(h, data.ctypes.data, flags.ctypes.data, data.shape[0])

    def in_pending(self):
        """Beats queued for ``s_axis`` and not yet accepted."""
        return int(self._lib.mf_in_pending(self._handle()))

    def clear_input(self):
        """Drop the input queue (like resetting an MM2S channel: ``tvalid`` falls)."""
        self._lib.mf_clear_input(self._handle())

    def arm_sink(self, max_beats):
        """Accept (``tready = 1``) up to ``max_beats`` more beats on ``m_axis``, stopping after
        a beat with ``tlast`` (like an S2MM channel given a buffer)."""
        if not isinstance(max_beats, (int, np.integer)) or isinstance(max_beats, bool) \
                or max_beats < 0:
            raise ValueError(f"max_beats must be a non-negative integer, not {max_beats!r}")
        self._lib.mf_arm_sink(self._handle(), int(max_beats))

    def sink_armed(self):
        """Whether ``m_axis.tready`` is high: beats left and no ``tlast`` seen since arming."""
        return bool(self._lib.mf_sink_left(self._handle()))

    def disarm_sink(self):
        """Stop accepting ``m_axis`` beats (``tready = 0``)."""
        self._lib.mf_disarm_sink(self._handle())

    def pop(self):
        """Return and remove the captured ``m_axis`` beats.

        Returns
        -------
        (array of uint8 ``[n, beat_bytes]``, array of bool ``[n]``)
        """
        h = self._handle()
        n = int(self._lib.mf_out_count(h))
        data = np.empty((n, self._beat_bytes), dtype=np.uint8)
        last = np.empty(n, dtype=np.uint8)
        if n:
            self._lib.mf_pop(h, data.ctypes.data, last.ctypes.data, n)
        return data, last.astype(bool)

    # The clock

    def run(self, max_cycles, *, until=None):
        """Run the clock until the stop conditions hold, or for ``max_cycles`` cycles.

        Parameters
        ----------
        max_cycles : int
            The most cycles to run.
        until : str or sequence of str, optional
            Keys of :data:`UNTIL`: ``"irq"`` (the ``irq`` output is high), ``"input_empty"``
            (the input queue is drained), ``"sink_done"`` (the sink is no longer armed: its
            count was reached or a beat with ``tlast`` arrived). With several, stop when all
            hold. Checked before the first cycle and after each one. ``None`` runs
            ``max_cycles``.

        Returns
        -------
        (int, str)
            The cycles run and why it stopped: the conditions joined by ``"+"`` (in the
            order given), or ``"max_cycles"``.
        """
        h = self._handle()
        if not isinstance(max_cycles, (int, np.integer)) or isinstance(max_cycles, bool) \
                or max_cycles < 0:
            raise ValueError(f"max_cycles must be a non-negative integer, not {max_cycles!r}")
        names = [until] if isinstance(until, str) else list(until or ())
        flags = 0
        for name in names:
            if name not in UNTIL:
                raise ValueError(f"until must name conditions among {', '.join(UNTIL)}, "
                                 f"not {name!r}")
            flags |= UNTIL[name]
        done, stopped = 0, ctypes.c_int()
        while True:
            chunk = min(int(max_cycles) - done, _RUN_CHUNK)
            done += int(self._lib.mf_run(h, chunk, flags, ctypes.byref(stopped)))
            self._check_protocol()
            if stopped.value:
                return done, "+".join(dict.fromkeys(names))
            if done >= max_cycles:
                return done, "max_cycles"
