"""An open accelerator: a backend that moves words and bytes, plus the core's manifest.

A :class:`Device` checks the manifest against its own parameters first
(:mod:`mulfree.host.manifest_check`: every section must be what ``parameters`` give), reads
every register's offset and field from it, checks the identity registers against the register
map of those parameters when it opens, refuses a program compiled for another core and bad
inputs (shape, dtype, range, empty batches, non-finite reals) before sending anything,
soft-resets the core and resets the data movers after a timeout or a core error (so a failed
run leaves the device usable), runs a program node by node (:func:`mulfree.host.program.run_steps`:
the core's nodes on the device, the host's in NumPy, each tensor freed after its last reader),
reads the performance counters around each core node, and raises :class:`DeviceError` ("the
device is closed") for any use after :meth:`Device.close`.

The backend protocol (what a backend provides) is described in :mod:`mulfree.host.runtime`,
whose :func:`~mulfree.host.runtime.open_device` builds the backend of a device kind and wraps
it in a :class:`Device`.
"""

import time

import numpy as np

from .bank_state import BankState
from .compiler import CoreStep, Program, decode_run, encode_run
from .steps import chained_input, run_chunks, run_images, run_part
from .device_checks import as_array, check_timeout, check_word
from .device_errors import CoreRunError, DeviceError, DeviceMismatch, DeviceTimeout, InputError
from .device_lock import DeviceLock
from .manifest_check import ENGINE_REGISTERS, check_manifest
from .program import run_steps
from .schedule import core_step_cycles
from .run_result import RunResult


__all__ = ["Device", "COUNTERS", "IDENTITY"]

#: The 64-bit performance counters (``docs/interface.md``, "64-bit counters").
COUNTERS = ("BUSY_CYCLES", "STALL_IN_CYCLES", "STALL_OUT_CYCLES", "TERMS")
#: Identity registers checked when a device opens (their manifest values are constants).
#: The :class:`~mulfree.host.run_result.StepStats` field of each counter's delta.
_STAT = {"BUSY_CYCLES": "busy_cycles", "STALL_IN_CYCLES": "stall_in_cycles",
         "STALL_OUT_CYCLES": "stall_out_cycles", "TERMS": "terms"}
#: ``ENGINES`` and ``ENGINE_0..2`` (interface 2.1) and ``FMAP_BANKS`` (2.2) are compared when
#: the manifest has them (a 2.0 manifest, a single-engine core, has none; a 2.1 one no
#: ``FMAP_BANKS``).
IDENTITY = ("ID", "ENGINE", "ARRAY", "WIDTHS", "MAX_K", "STREAM_WIDTH", "FMAP_VECTORS",
            "ACC_ENTRIES", "WEIGHT_ROWS", "MAX_CHANNELS", "SHORTCUT_VECTORS", "POOL_PIXELS",
            *ENGINE_REGISTERS, "FMAP_BANKS")


def _registers(manifest):
    """``{name: (offset, {field name: field}, register)}`` of the manifest's registers."""
    regs = {}
    for reg in manifest["registers"]["registers"]:
        regs[reg["name"]] = (reg["offset"], {f["name"]: f for f in reg["fields"]}, reg)
    return regs


class Device:
    """An open accelerator: a backend plus the core's manifest.

    Parameters
    ----------
    backend
        Moves the words and bytes: the protocol of :mod:`mulfree.host.runtime`.
    manifest : dict
        The core's manifest (``mulfree gen --core``); every offset and field comes from it.
    timeout : float
        Seconds a run may take before it is aborted (:class:`DeviceTimeout`).
    check_identity : bool
        Compare the identity registers with the manifest when opening (default).

    Raises
    ------
    ManifestError
        If the manifest disagrees with its own parameters (nothing is read or written; the
        backend is closed).
    InputError
        For a timeout that is not a finite number of seconds > 0.
    DeviceBusy
        If another process holds the device.
    DeviceMismatch
        If an identity register differs from what the manifest's parameters give.
    """

    def __init__(self, backend, manifest, *, timeout=10.0, check_identity=True):
        self.backend = backend
        self._lock = None
        self.program = None
        self._loaded_step = None
        #: What the core's feature-map banks hold (interface 2.2): updated by every run of
        #: :meth:`run_layer`, cleared by :meth:`soft_reset` (after any error or timeout).
        self.banks = BankState()
        try:
            # Checked before the first register access: every offset, field and expected
            # identity value below comes from a manifest that equals its parameters' own.
            self.manifest, self.core = check_manifest(manifest)
            self.timeout = check_timeout("timeout", timeout)
            self._regs = _registers(self.manifest)
            # The manifest's reset values: its parameters' register map (checked above), in
            # the form of its interface version (a 2.0 manifest: VERSION 2.0, no ENGINES).
            self._identity = {name: reg[2]["reset"] for name, reg in self._regs.items()}
            lock_path = getattr(backend, "lock_path", None)
            if lock_path is not None:
                self._lock = DeviceLock(lock_path, f"the {backend.name} device")
            if check_identity:
                self.check_identity()
            self.soft_reset()
            self.write_field("CONTROL", "irq_enable", 1)
        except BaseException:
            self.close()
            raise

    # Registers --------------------------------------------------------------------------------

    def _reg(self, name):
        """Register ``name``'s ``(offset, fields, entry)``, or :class:`InputError`."""
        if not isinstance(name, str) or name not in self._regs:
            raise InputError("name", f"name must be a register of this core's manifest "
                                     f"(ID, STATUS, ...), not {name!r}")
        return self._regs[name]

    def _check_open(self):
        """Raise :class:`DeviceError` after :meth:`close`."""
        if self.backend is None:
            raise DeviceError("the device is closed")

    @property
    def closed(self):
        """Whether :meth:`close` was called."""
        return self.backend is None

    def read(self, name):
        """The 32-bit value of register ``name``."""
        self._check_open()
        return self.backend.read32(self._reg(name)[0])

    def write(self, name, value):
        """Write the 32-bit ``value`` to register ``name``."""
        self._check_open()
        offset = self._reg(name)[0]
        self.backend.write32(offset, check_word("value", value))

    def field(self, name, field_name, value=None):
        """Field ``field_name`` of register ``name`` (from ``value``, or read now)."""
        hi, lo = self._bits(name, field_name)
        value = self.read(name) if value is None else check_word("value", value)
        return (value >> lo) & ((1 << (hi - lo + 1)) - 1)

    def _bits(self, name, field_name):
        """``[hi, lo]`` of field ``field_name`` of register ``name``."""
        _, fields, _ = self._reg(name)
        if field_name not in fields:
            raise InputError("field_name", f"field_name must be a field of {name} "
                                           f"({', '.join(fields)}), not {field_name!r}")
        return fields[field_name]["bits"]

    def _field_value(self, name, field_name, value):
        """``value`` placed in field ``field_name`` of register ``name``."""
        hi, lo = self._bits(name, field_name)
        return (check_word("value", value) & ((1 << (hi - lo + 1)) - 1)) << lo

    def write_field(self, name, field_name, value):
        """Write a register with only ``field_name`` set (W1S/W1C registers, CONTROL)."""
        base = 0
        if name == "CONTROL" and field_name != "irq_enable":
            base = self._field_value("CONTROL", "irq_enable", 1)
        self.write(name, base | self._field_value(name, field_name, value))

    def status(self):
        """``STATUS`` and ``ERROR`` decoded, with the core error's name: a dict."""
        status, error = self.read("STATUS"), self.read("ERROR")
        doc = {f: self.field("STATUS", f, status) for f in self._reg("STATUS")[1]}
        doc.update({f: self.field("ERROR", f, error) for f in self._reg("ERROR")[1]})
        codes = {v["code"]: k for k, v in self.manifest["registers"]["core_errors"].items()}
        doc["core_error"] = codes.get(doc.get("core_code", 0))
        return doc

    def counters(self):
        """The 64-bit performance counters (``_LO`` then ``_HI``: one snapshot each)."""
        out = {}
        for name in COUNTERS:
            lo = self.read(f"{name}_LO")
            hi = self.read(f"{name}_HI")
            out[name] = hi << 32 | lo
        return out

    def identity(self):
        """The identity registers' values: a dict."""
        return {name: self.read(name) for name in IDENTITY + ("VERSION",)
                if name in self._regs}

    def check_identity(self):
        """Raise :class:`DeviceMismatch` unless the identity registers are what the manifest's
        parameters give (the register map of ``CoreConfig.from_params(parameters)``, which the
        manifest's reset values equal): ``ENGINES`` and ``ENGINE_0..2`` too when the manifest
        has them (interface 2.1), and the major version."""
        for name in IDENTITY:
            if name not in self._regs:
                continue
            expected = self._identity[name]
            got = self.read(name)
            if got != expected:
                raise DeviceMismatch(
                    f"register {name} of the {self.backend.name} device reads 0x{got:08x}, "
                    f"the manifest of {self.manifest.get('top')} says 0x{expected:08x}: the "
                    f"device holds another design (regenerate or redeploy)")
        major = self.field("VERSION", "major")
        want = self.field("VERSION", "major", self._identity["VERSION"])
        if major != want:
            raise DeviceMismatch(f"the device's register interface is version {major}.x, this "
                                 f"runtime's manifest {want}.x")

    def soft_reset(self):
        """Abort whatever runs, return the core to idle, and reset the data movers."""
        self.write_field("CONTROL", "soft_reset", 1)
        self.backend.abort()
        self._loaded_step = None
        self.banks.clear()

    @property
    def max_packet_bytes(self):
        """The largest packet the backend moves in bytes, or ``None`` for no limit."""
        return getattr(self.backend, "max_packet_bytes", None)

    # Programs ---------------------------------------------------------------------------------

    def load(self, program: Program):
        """Make ``program`` the one :meth:`run` executes.

        Raises
        ------
        DeviceMismatch
            If it was compiled for another core (nothing is sent).
        """
        self._check_open()
        if not isinstance(program, Program):
            raise InputError("program", f"program must be a Program (compile_model), "
                                        f"not {type(program).__name__}")
        if program.core.params() != self.core.params():
            diff = _diff(program.core.params(), self.core.params())
            raise DeviceMismatch(f"the program was compiled for another core ({diff}); "
                                 f"compile it for this device's manifest")
        limit = self.max_packet_bytes
        if limit is not None and (program.max_packet_bytes is None
                                  or program.max_packet_bytes > limit):
            raise DeviceMismatch(f"the program was packed for packets of up to "
                                 f"{program.max_packet_bytes} bytes; this device moves at most "
                                 f"{limit}: compile_model(..., max_packet_bytes={limit})")
        self.program = program
        self._loaded_step = None

    def _check_input(self, x):
        """``x`` as an int64 batch of the loaded program's input, or :class:`InputError`."""
        program = self.program
        shape = program.input_shape
        x = as_array(x)
        if x.dtype.kind not in "iu":
            raise InputError("x", f"x must hold integers (quantized inputs; use infer() for "
                                  f"real values), not {x.dtype}")
        if x.shape == shape:
            x = x[None]
        if x.ndim != len(shape) + 1 or x.shape[1:] != shape:
            raise InputError("x", f"x must have shape {shape} or (B, "
                                  f"{', '.join(map(str, shape))}), not {x.shape}")
        if not x.shape[0]:
            raise InputError("x", f"x must hold at least one input (B >= 1), not an empty "
                                  f"batch of shape {x.shape}")
        lo, hi = self.core.engine.act_range
        in_lo, in_hi = -(1 << (program.model.input.act_bits - 1)), \
            (1 << (program.model.input.act_bits - 1)) - 1
        if x.size and (x.min() < in_lo or x.max() > in_hi):
            raise InputError("x", f"x must lie in [{in_lo}, {in_hi}] (the model's "
                                  f"{program.model.input.act_bits}-bit input), not "
                                  f"[{x.min()}, {x.max()}]")
        assert lo <= in_lo and in_hi <= hi
        return x.astype(np.int64)

    def infer(self, x_float, **options):
        """Quantize real inputs as the model's input says, then :meth:`run`."""
        from ..params.model_golden import quantize_input
        self._check_open()
        if self.program is None:
            raise DeviceError("no program loaded: call load(compile_model(...)) first")
        x_float = as_array(x_float)
        if x_float.dtype.kind not in "iuf":
            raise InputError("x_float", f"x_float must hold real numbers, not {x_float.dtype}")
        if x_float.dtype.kind == "f" and not np.isfinite(x_float).all():
            bad = np.flatnonzero(~np.isfinite(x_float.reshape(-1)))[0]
            raise InputError("x_float", f"x_float must hold finite numbers, not "
                                        f"{x_float.reshape(-1)[bad]} (flat index {bad})")
        shape = self.program.input_shape
        if x_float.ndim == len(shape) + 1 and x_float.shape[1:] == shape \
                and not x_float.shape[0]:
            raise InputError("x_float", f"x_float must hold at least one input (B >= 1), not "
                                        f"an empty batch of shape {x_float.shape}")
        try:
            x = quantize_input(self.program.model, x_float)
        except ValueError as exc:
            raise InputError("x_float", str(exc).replace("x ", "x_float ", 1)) from None
        return self.run(x, **options)

    def run(self, x, *, progress=None):
        """Run the loaded program on a batch of quantized inputs.

        Parameters
        ----------
        x : int array ``input_shape`` or ``[B, *input_shape]``
        progress : callable or None
            Called with the number of core runs done since the last call (a tqdm's
            ``update``).

        Returns
        -------
        RunResult
            The outputs, and one :class:`~mulfree.host.run_result.NodeStats` per node: for a
            core node its runs and counter deltas, for every node its placement, useful
            terms, host elements and terms, estimated cycles and wall time.

        Raises
        ------
        InputError
            If ``x`` has the wrong shape, dtype or range (nothing is sent).
        DeviceTimeout, CoreRunError
            If a run fails; the device has been reset and stays usable.
        """
        self._check_open()
        if self.program is None:
            raise DeviceError("no program loaded: call load(compile_model(...)) first")
        if progress is not None and not callable(progress):
            raise InputError("progress", f"progress must be callable or None, "
                                         f"not {type(progress).__name__}")
        x = self._check_input(x)
        program, images = self.program, x.shape[0]
        start_cycles = getattr(self.backend, "cycles", None)
        t0 = time.perf_counter()

        def run_core(step, x, stats, shortcut=None):
            x = chained_input(step, x)          # zeros for an input the core's bank holds
            if self._loaded_step is step:       # the core holds this step's weights already
                stats.estimated_cycles = core_step_cycles(self.core, step, len(x),
                                                          loaded=True)[1]
            before = self.counters()
            out = self._run_step(step, x, stats, progress, shortcut)
            after = self.counters()
            for name in COUNTERS:
                # Added up: a chained segment's step runs once per image (program.run_steps).
                delta = (after[name] - before[name]) % (1 << 64)
                setattr(stats, _STAT[name], (getattr(stats, _STAT[name]) or 0) + delta)
            return out

        x, nodes = run_steps(program, x, run_core)
        seconds = time.perf_counter() - t0
        end_cycles = getattr(self.backend, "cycles", None)
        predictions = np.argmax(x, axis=-1).astype(np.int64) if program.output == "argmax" \
            else None
        e = self.core.engine
        core = {s.index for s in program.core_steps}
        return RunResult(x, predictions, images, [n for n in nodes if n.index in core],
                         seconds, None if start_cycles is None else end_cycles - start_cycles,
                         e.rows * e.cols, nodes)

    def _run_step(self, step, x, stats, progress, shortcut=None):
        """Run core step ``step`` over the batch ``x`` (with the batch ``shortcut`` of a
        fused residual add), counting runs into ``stats``."""
        outputs, start = [], 0
        for n in run_chunks(step, x.shape[0]):
            part, start = run_part(step, x, start, n), start + n
            reuse = self._loaded_step is step
            out = self.run_layer(step, part, reuse=reuse,
                                 shortcut=None if shortcut is None else shortcut[start - n],
                                 stats=stats)
            self._loaded_step = step
            stats.runs += 1
            if progress is not None:
                progress(1)
            if out is None:
                continue                        # quiet: kept in a bank, not sent
            outputs.append(run_images(step, out, n))
        return np.concatenate(outputs) if outputs else None

    def run_layer(self, step: CoreStep, x, *, reuse=False, shortcut=None, stats=None):
        """One run of ``step``: encode, send, receive, decode. Returns ``[out_c, oh, ow]``,
        or None for a ``quiet`` run (its output stays in a bank). ``shortcut``: the image's
        shortcut ``[out_c, oh, ow]`` of a step with a fused residual add; ``stats`` (a
        NodeStats) counts the bytes sent and received. A chained run
        (:mod:`mulfree.host.chaining`) whose resident input or shortcut the banks do not hold
        (:attr:`banks`) is refused before it is sent (``LayerError``, core error RESIDENT)."""
        self._check_open()
        if self.program is None:
            raise DeviceError("no program loaded: call load(compile_model(...)) first")
        packets, out_nbytes, layer = encode_run(self.program, step, x, reuse=reuse,
                                                shortcut=shortcut)
        self.banks.check(self.core, layer)
        data = self.execute(packets, out_nbytes)
        self.banks.after(layer, True)
        if stats is not None:
            stats.bytes_in += sum(int(p.nbytes) for p in packets)
            stats.bytes_out += int(np.asarray(data).size)
        return None if layer.quiet else decode_run(self.program, layer, data)

    def execute(self, packets, out_nbytes, *, timeout=None):
        """Start the core, send ``packets``, return the ``out_nbytes`` bytes of its result.

        The low-level run every other call goes through: ``CONTROL.start``, the backend's
        transfer, then ``STATUS.done``. On a timeout or a core error the core is soft-reset
        and the backend's data movers are reset before the exception is raised.
        """
        self._check_open()
        timeout = self.timeout if timeout is None else check_timeout("timeout", timeout)
        if isinstance(out_nbytes, bool) or not isinstance(out_nbytes, (int, np.integer)) \
                or out_nbytes < 0:
            raise InputError("out_nbytes", f"out_nbytes must be an integer >= 0, "
                                           f"not {out_nbytes!r}")
        try:
            packets = [np.ascontiguousarray(p, dtype=np.uint8).reshape(-1) for p in packets]
        except (TypeError, ValueError, OverflowError) as exc:
            raise InputError("packets", f"packets must be a list of byte arrays: "
                                        f"{' '.join(str(exc).split())}") from None
        deadline = time.monotonic() + timeout
        self.write_field("CONTROL", "start", 1)
        try:
            data = self.backend.transfer(packets, out_nbytes, timeout)
            done = self.backend.wait_done(max(0.0, deadline - time.monotonic()))
        except TimeoutError as exc:
            self._fail_timeout(timeout, f"{exc}")
        except Exception as exc:          # a data mover's error (DMA error bits, a bad length)
            self._fail_transfer(exc)
        if not done:
            self._fail_timeout(timeout, "the core did not set STATUS.done")
        status = self.status()
        if status["error"] or status["core_code"]:
            self._fail_core(status)
        self.write_field("STATUS", "done", 1)
        if data is None or len(data) != out_nbytes:
            self.soft_reset()
            got = 0 if data is None else len(data)
            raise DeviceError(f"the core finished but sent {got} result bytes, not "
                              f"{out_nbytes}; the device was reset")
        return data

    def _fail_timeout(self, timeout, why):
        """Reset after a run that did not finish; raise :class:`DeviceTimeout`."""
        try:
            status = self.status() | self.counters()
        except Exception as exc:          # the bus itself may be what failed
            status = {"unreadable": str(exc)}
        if status.get("core_code"):
            # The core stopped with an error and the data movers waited for results that
            # never come: report the error, not the wait.
            self._fail_core(status)
        self.soft_reset()
        raise DeviceTimeout(f"the run did not finish within {timeout:g} s ({why}); "
                            f"status before the soft reset: {_fmt_status(status)}", status)

    def _fail_transfer(self, exc):
        """Reset after a data mover's error; raise :class:`DeviceError`."""
        try:
            status = self.status()
        except Exception:
            status = {}
        if status.get("core_code"):
            self._fail_core(status)
        self.soft_reset()
        raise DeviceError(f"the transfer failed ({type(exc).__name__}: {exc}); the core and "
                          f"the data movers were reset") from exc

    def _fail_core(self, status):
        """Reset after a core error; raise :class:`CoreRunError` naming it."""
        self.soft_reset()
        code, name = status["core_code"], status["core_error"]
        meaning = self.manifest["registers"]["core_errors"].get(name, {}).get("meaning", "")
        raise CoreRunError(f"the core stopped the run with error {code} {name}: {meaning}; "
                           f"the device was reset", code, name, status)

    def close(self):
        """Release the backend and the lock (idempotent); any later use raises
        :class:`DeviceError`."""
        if getattr(self, "backend", None) is not None:
            try:
                self.backend.close()
            finally:
                self.backend = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _fmt_status(status):
    """``status`` as ``name=value`` pairs on one line."""
    return ", ".join(f"{k}={v}" for k, v in status.items())


def _diff(a, b, prefix=""):
    """The entries where the nested parameter dicts ``a`` and ``b`` differ, on one line."""
    out = []
    for key in sorted(set(a) | set(b)):
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out.append(_diff(a[key], b[key], f"{prefix}{key}."))
        elif a.get(key) != b.get(key):
            out.append(f"{prefix}{key} {a.get(key)} vs {b.get(key)}")
    return ", ".join(o for o in out if o)
