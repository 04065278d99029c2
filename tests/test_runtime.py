"""Tests of the runtime (:mod:`mulfree.host.runtime`) on the simulated board, and of
``mulfree run``.

The device is a 4x4 shift core's Verilog under Verilator (the C++ harness of
:mod:`mulfree.sim.board`), built once per session into a cache shared by the xdist workers.
Every output is compared with the golden model of the whole network (``run_int_model``). The
tests need Verilator: without it they fail (``SimulatorMissing``), they never skip.
"""

import json
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from cores import SHIFT_4X4, SMALL_BUFFERS, generated
from random_models import conv_model

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.gen.core_manifest import core_manifest, write_core_design
from mulfree.host.compiler import compile_model, encode_run
from mulfree.host.export_format import write_export
from mulfree.host import runtime
from mulfree.host.runtime import (BackendMissing, CoreRunError, Device, DeviceBusy, DeviceError,
                                  DeviceLock, DeviceMismatch, DeviceTimeout, InputError,
                                  open_device)
from mulfree.sim.backend import SimBackend
from mulfree.sim.board import SimCore, build_sim_core
from mulfree.params.model_golden import run_int_model


_SMALL = SMALL_BUFFERS
CORE = SHIFT_4X4


@pytest.fixture(scope="session")
def design(board_cache):
    """``(manifest path, library)`` of the 4x4 shift core, built on first use."""
    _, j_path = generated(CORE)
    return j_path, build_sim_core(j_path, build_dir=board_cache)


@pytest.fixture
def device(design):
    j_path, lib = design
    core = SimCore(lib, core_manifest(CORE))
    core.reset()
    manifest = json.loads(j_path.read_text())
    with Device(SimBackend(core, manifest), manifest, timeout=5.0) as dev:
        yield dev


def _model(seed=11):
    return conv_model(seed, "shift", ab=8)


def _inputs(model, b, seed=1):
    return np.random.default_rng(seed).integers(-128, 128, (b, *model.input.shape))


def _program(dev, model=None):
    program = compile_model(model or _model(), dev.core, max_packet_bytes=dev.max_packet_bytes)
    dev.load(program)
    return program


def test_identity_and_counters(device):
    ident = device.identity()
    assert ident["ID"] == 0x4D554C46
    regs = {r["name"]: r for r in device.manifest["registers"]["registers"]}
    for name in ("ARRAY", "WIDTHS", "MAX_K", "FMAP_VECTORS"):
        assert ident[name] == regs[name]["reset"]
    assert ident["ARRAY"] == 4 | 4 << 16
    assert set(device.counters()) == {"BUSY_CYCLES", "STALL_IN_CYCLES", "STALL_OUT_CYCLES",
                                      "TERMS"}
    assert device.status()["idle"] == 1


def test_batch_equals_golden(device):
    """Every output integer of a batch equals the golden model; the counters add up."""
    model = _model()
    program = _program(device, model)
    x = _inputs(model, 6)
    done = []
    result = device.run(x, progress=done.append)
    golden = run_int_model(model, x)
    assert np.array_equal(result.outputs, golden)
    assert np.ptp(golden) > 0
    assert np.array_equal(result.predictions, np.argmax(golden, axis=-1))
    # Chained (the default core has two banks, and chaining moves fewer bytes here): every
    # step runs once per image, the linear ones too; the max pool is a window run on the
    # lane unit (interface 2.3), so four convolutions and linear layers and one pool.
    assert [s.window for s in program.core_steps].count("max") == 1
    assert program.segments and len(done) == program.runs_for(6) == 5 * 6
    assert [s.runs for s in result.steps] == [6] * 5
    assert 0 < result.utilization <= 1
    assert result.busy_cycles > 0 and result.sim_cycles >= result.busy_cycles
    # A second batch reuses nothing stale: the same inputs give the same outputs.
    again = device.run(x[::-1])
    assert np.array_equal(again.outputs, golden[::-1])


def test_single_image_and_infer(device):
    model = _model(12)
    _program(device, model)
    x = _inputs(model, 1)[0]
    assert np.array_equal(device.run(x).outputs, run_int_model(model, x[None]))
    real = np.random.default_rng(3).uniform(-1, 1, (2, *model.input.shape))
    from mulfree.params.model_golden import quantize_input
    assert np.array_equal(device.infer(real).outputs,
                          run_int_model(model, quantize_input(model, real)))


@pytest.mark.parametrize("x, message", [
    (np.zeros((2, 7, 6), np.int64), r"x must have shape \(7, 6, 5\) or \(B, 7, 6, 5\), "
                                    r"not \(2, 7, 6\)"),
    (np.zeros((2, 7, 6, 5), np.float32), "x must hold integers"),
    (np.full((1, 7, 6, 5), 200), r"x must lie in \[-128, 127\]"),
    (np.zeros((0, 7, 6, 5), np.int64), r"x must hold at least one input \(B >= 1\), not an "
                                       r"empty batch"),
    (np.zeros((1, 7, 6, 5), bool), "x must hold integers"),
    ([[1, 2], [3]], "x must "),
    ("seven", "x must hold integers"),
])
def test_bad_inputs_are_refused_before_sending(device, x, message):
    _program(device)
    cycles = device.backend.cycles
    with pytest.raises(InputError, match=message) as info:
        device.run(x)
    assert info.value.param == "x" and "\n" not in str(info.value)
    assert device.backend.cycles == cycles


@pytest.mark.parametrize("x, message", [
    (np.full((2, 7, 6, 5), np.nan), r"x_float must hold finite numbers, not nan"),
    (np.full((1, 7, 6, 5), -np.inf), r"x_float must hold finite numbers, not -inf"),
    (np.zeros((0, 7, 6, 5)), r"x_float must hold at least one input"),
    (np.zeros((2, 7, 6)), r"x_float must have shape \(7, 6, 5\)"),
    (np.zeros((1, 7, 6, 5), complex), r"x_float must hold real numbers"),
])
def test_bad_real_inputs_are_refused_before_sending(device, x, message):
    _program(device)
    cycles = device.backend.cycles
    with pytest.raises(InputError, match=message) as info:
        device.infer(x)
    assert info.value.param == "x_float"
    assert device.backend.cycles == cycles


def test_closed_and_unloaded_device(device):
    """Before a load the device says what is missing; once closed, that it is closed."""
    cycles = device.backend.cycles
    with pytest.raises(DeviceError, match="no program loaded"):
        device.run(np.zeros((1, 7, 6, 5), np.int64))
    assert device.backend.cycles == cycles
    backend = device.backend
    device.close()
    for call in (device.identity, device.status, lambda: device.load(None),
                 lambda: device.run(np.zeros((1, 7, 6, 5), np.int64))):
        with pytest.raises(DeviceError, match="^the device is closed$"):
            call()
    assert backend.core is None                  # the simulator itself was released


def test_program_for_another_core_is_refused(device):
    other = CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=4, act_bits=8,
                                          weight_bits=5, max_k=512), **_SMALL)
    program = compile_model(_model(), other)
    cycles = device.backend.cycles
    with pytest.raises(DeviceMismatch, match="engine.max_k 512 vs 256"):
        device.load(program)
    assert device.backend.cycles == cycles


def test_identity_mismatch(design):
    j_path, lib = design
    other = CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=8, act_bits=8,
                                          weight_bits=5, max_k=256), **_SMALL)
    core = SimCore(lib, core_manifest(CORE))
    core.reset()
    with pytest.raises(DeviceMismatch, match="register ARRAY .* reads 0x00040004"):
        Device(SimBackend(core, core_manifest(other)), core_manifest(other))


def test_timeout_resets_and_device_stays_usable(device):
    """A run whose activations never come times out with the status, then the device works."""
    model = _model()
    program = _program(device, model)
    step = program.core_steps[0]
    x = _inputs(model, 1)
    packets, nbytes, _ = encode_run(program, step, x[0], reuse=False)
    t0 = time.monotonic()
    with pytest.raises(DeviceTimeout, match="did not finish within 0.5 s") as info:
        device.execute(packets[:3], nbytes, timeout=0.5)
    assert time.monotonic() - t0 < 5
    assert info.value.status["busy"] == 1 and info.value.status["core_code"] == 0
    assert info.value.status["BUSY_CYCLES"] > 0
    assert device.status()["idle"] == 1
    assert np.array_equal(device.run(x).outputs, run_int_model(model, x))


def test_core_error_is_named_and_device_stays_usable(device):
    model = _model()
    program = _program(device, model)
    x = _inputs(model, 2)
    packets, nbytes, _ = encode_run(program, program.core_steps[0], x[0], reuse=False)
    bad = [p.copy() for p in packets]
    bad[1][0, 0] = (bad[1][0, 0] & 0xF0) | 9               # a header of unknown type 9
    with pytest.raises(CoreRunError, match="error 1 PACKET") as info:
        device.execute(bad, nbytes)
    assert info.value.name == "PACKET"
    # reuse_weights right after a failed run would be refused (REUSE): the device must
    # have forgotten the loaded step and send the weights again.
    assert np.array_equal(device.run(x).outputs, run_int_model(model, x))


def test_lock_refuses_a_second_process(tmp_path):
    """A device held by another process cannot be opened: DeviceBusy names the holder."""
    lock = tmp_path / "dev.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from mulfree.host.runtime import DeviceLock
            DeviceLock({str(lock)!r})
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"

        class Backend:
            name, lock_path = "zynq", lock
            closed = False

            def close(self):
                self.closed = True
        backend = Backend()
        with pytest.raises(DeviceBusy, match=f"in use by another process \\(pid {holder.pid}"):
            Device(backend, core_manifest(CORE))
        assert backend.closed
    finally:
        holder.kill()
        holder.wait()
    DeviceLock(lock).release()                      # free again once the holder is gone


def test_open_device_builds_from_a_config(design, tmp_path):
    """``open_device("sim", CoreConfig)`` generates and builds (cached) the core itself."""
    j_path, lib = design
    with open_device("sim", CORE, build_dir=lib.parent.parent, cache_dir=tmp_path) as dev:
        assert dev.core == CORE
        assert dev.identity()["ID"] == 0x4D554C46
    with pytest.raises(ValueError, match="device must be one of sim, zynq"):
        open_device("fpga", CORE)


def test_a_missing_backend_names_its_extra(monkeypatch):
    """A backend module that is not installed is a one-line DeviceError naming the extra."""
    entry = runtime.BACKENDS["sim"]
    monkeypatch.setitem(runtime.BACKENDS, "sim",
                        entry._replace(module="mulfree.sim.no_such_backend"))
    with pytest.raises(BackendMissing) as info:
        open_device("sim", CORE)
    assert str(info.value) == ("the simulated board needs the [sim] extra: pip install "
                               "'mulfree[sim]' (missing: mulfree.sim.no_such_backend)")
    assert isinstance(info.value, DeviceError) and isinstance(info.value, ImportError)
    # Bad arguments are still refused first.
    with pytest.raises(InputError, match="timeout must be"):
        open_device("sim", CORE, timeout=0)


def test_a_missing_package_while_opening_names_the_extra(monkeypatch):
    """An optional package of the entry missing while the backend opens (Amaranth, to
    generate the core) is the same one-line error; any other missing module is not."""
    from mulfree.sim import backend

    def no_package(name):
        def open_sim(manifest, **options):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return open_sim
    monkeypatch.setattr(backend, "open_sim", no_package("amaranth.back"))
    with pytest.raises(BackendMissing, match=r"^the simulated board needs the \[sim\] extra: "
                                             r"pip install 'mulfree\[sim\]' \(missing: "
                                             r"amaranth.back\)$"):
        open_device("sim", CORE)
    monkeypatch.setattr(backend, "open_sim", no_package("elsewhere"))
    with pytest.raises(ModuleNotFoundError) as info:
        open_device("sim", CORE)
    assert not isinstance(info.value, BackendMissing)


# mulfree run ---------------------------------------------------------------------------------

@pytest.fixture
def exported(tmp_path):
    model = _model(21)
    write_export(model, tmp_path / "model")
    x = np.random.default_rng(5).uniform(-8, 8, (9, *model.input.shape)).astype(np.float32)
    from mulfree.params.model_golden import predict, quantize_input
    y = predict(model, quantize_input(model, x))
    y[0] = (y[0] + 1) % 3                          # one wrong label: accuracy 8/9
    np.savez(tmp_path / "inputs.npz", x=x, y=y)
    return model, tmp_path


def test_run_cli(design, exported, run_main, capsys, monkeypatch):
    j_path, lib = design
    model, path = exported
    monkeypatch.setenv("MULFREE_CACHE", str(lib.parent.parent.parent))
    status, out, err = run_main(
        ["run", str(path / "model"), "--config", str(j_path), "--input",
         str(path / "inputs.npz"), "--build-dir", str(lib.parent.parent), "--batch", "4",
         "--json", str(path / "report.json")], capsys)
    assert status == 0, err
    assert "accuracy    88.89 % (8 / 9)" in out
    assert "golden      bit-exact: all 27 output integers of 9 images" in out
    report = json.loads((path / "report.json").read_text())
    assert report["golden"]["bit_exact"] and report["images"] == 9
    assert report["busy_cycles"] > 0 and 0 < report["pe_utilization"] <= 1
    # The first conv (its shift table moves rows: it cannot stack) runs once per image; the
    # max pool (a window run, stacked) and the second conv (a 1x1 convolution of its patches,
    # stacked) take each batch of up to 4 images in one run, as the two linear layers do.
    assert [d["runs"] for d in report["layers"]] == [9, 3, 3, 3, 3]


def test_run_cli_without_the_backend(exported, run_main, capsys, monkeypatch):
    """``mulfree run`` reports a missing backend in one line and exits 1."""
    model, path = exported
    entry = runtime.BACKENDS["sim"]
    monkeypatch.setitem(runtime.BACKENDS, "sim", entry._replace(module="mulfree.sim.nowhere"))
    status, out, err = run_main(["run", str(path / "model"), "--input",
                                 str(path / "inputs.npz")], capsys)
    assert status == 1
    assert err.strip().splitlines()[-1] == (
        "mulfree run: BackendMissing: the simulated board needs the [sim] extra: pip install "
        "'mulfree[sim]' (missing: mulfree.sim.nowhere)")


@pytest.mark.parametrize("argv, message", [
    (["--input", "{path}/missing.npy"], "--input '.*missing.npy': no such file"),
    (["--input", "{path}/wrong.npy"], r"the model takes inputs of shape \(7, 6, 5\)"),
    (["--device", "zynq", "--input", "{path}/inputs.npz"], "--device zynq needs --config"),
    (["--input", "{path}/inputs.npz", "--batch", "0"], "--batch must be an integer >= 1, not 0"),
])
def test_run_cli_refuses(exported, run_main, capsys, argv, message):
    import re
    model, path = exported
    np.save(path / "wrong.npy", np.zeros((3, 7, 6), np.float32))
    status, out, err = run_main(["run", str(path / "model")]
                                + [a.format(path=path) for a in argv], capsys)
    assert status == 2
    assert re.search(message, err), err


def test_run_cli_model_that_does_not_fit(exported, run_main, capsys, tmp_path):
    """A model for another PE kind is refused before the core is built or opened."""
    model, path = exported
    other = CoreConfig(engine=ArrayConfig(pe="adder", rows=4, cols=4, act_bits=8,
                                          max_k=256), **_SMALL)
    _, other_json = write_core_design(other, path / "adder")
    status, out, err = run_main(["run", str(path / "model"), "--config", str(other_json),
                                 "--input", str(path / "inputs.npz"), "--build-dir",
                                 str(tmp_path / "never")], capsys)
    assert status == 2
    assert "does not fit the core" in err
    assert ("layers.0 (shift conv2d), layers.2 (shift conv2d), layers.4 (shift linear), "
            "layers.5 (shift linear) have weights of another PE kind than this core's adder "
            "PEs; --host-fallback") in err and err.count("\n") == 1
    assert not (tmp_path / "never").exists()


# The Zynq backend on the emulated board --------------------------------------------------------

@pytest.fixture
def zynq_device(design):
    """The runtime's Zynq driver (UIO-style windows, AXI DMA, DMA buffer) on the emulated
    board: an AXI DMA model and a register file feeding the simulated core."""
    from mulfree.host.zynq import ZynqBackend
    from mulfree.sim.emulated_board import EmulatedBoard
    j_path, lib = design
    manifest = json.loads(j_path.read_text())
    core = SimCore(lib, manifest)
    core.reset()
    board = EmulatedBoard(core, buffer_size=1 << 16)
    backend = ZynqBackend(board.core_window, board.dma_window, board.buffer, manifest=manifest)
    with Device(backend, manifest, timeout=5.0) as dev:
        yield dev, board
    core.close()


def test_zynq_backend_runs_programs(zynq_device):
    """The same program through the Zynq driver's register sequences equals the golden model;
    every input packet is one MM2S transfer and every result one S2MM transfer."""
    dev, board = zynq_device
    model = _model(13)
    program = compile_model(model, dev.core, max_packet_bytes=dev.max_packet_bytes)
    assert program.max_packet_bytes == dev.max_packet_bytes <= (1 << 16) // 2
    dev.load(program)
    board.clear_log()
    x = _inputs(model, 3)
    result = dev.run(x)
    assert np.array_equal(result.outputs, run_int_model(model, x))
    assert result.sim_cycles is None and result.busy_cycles > 0
    writes = [(off, val) for win, rw, off, val in board.accesses if win == "dma" and rw == "w"]
    mm2s = [v for off, v in writes if off == 0x28]
    s2mm = [v for off, v in writes if off == 0x58]
    # A quiet chained run keeps its output in a bank: no S2MM transfer is armed for it.
    assert any(s.quiet for s in program.core_steps)
    assert sum(r.runs for r in result.steps) == program.runs_for(3)
    assert len(s2mm) == sum(r.runs for r, s in zip(result.steps, program.core_steps)
                            if not s.quiet)
    sent = sum(len(encode_run(program, s, np.zeros(s.in_shape if s.kind != "linear"
                                                    else (3, s.in_shape[0]), np.int64),
                              reuse=False)[0]) for s in program.core_steps)
    assert len(mm2s) >= sent


def test_zynq_small_packets_and_core_error(zynq_device):
    """A program packed for a small DMA limit still runs; a core error over the DMA path is
    named, and the device (core and DMA) is usable after it."""
    dev, board = zynq_device
    model = _model(14)
    program = compile_model(model, dev.core, max_packet_bytes=64)
    dev.load(program)
    x = _inputs(model, 2)
    assert np.array_equal(dev.run(x).outputs, run_int_model(model, x))
    packets, nbytes, _ = encode_run(program, program.core_steps[0], x[0], reuse=False)
    bad = [p.copy() for p in packets]
    bad[0][0, 0] = (bad[0][0, 0] & 0xF0) | 9
    with pytest.raises(CoreRunError, match="PACKET"):
        dev.execute(bad, nbytes, timeout=30.0)
    assert np.array_equal(dev.run(x).outputs, run_int_model(model, x))
