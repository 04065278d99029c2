"""Tests of the Zynq-7000 backend (:mod:`mulfree.host.zynq`) and the emulated board.

(a) The register windows, the DMA buffer and the device discovery against fake sysfs and
``/dev`` trees in ``tmp_path`` (``mmap`` works on regular files). (b) The AXI DMA driver
against the DMA model of :mod:`mulfree.sim.emulated_board`: its exact register sequences, its
refusals and the decoded error bits. (c) Whole layers through :class:`ZynqBackend` on the
emulated board, with the core's Verilog under Verilator (built once per session; the tests
fail, never skip, without Verilator), compared bit for bit with
:func:`mulfree.host.layer_stream.expected_beats`.
"""

import json
import mmap
import time
from pathlib import Path

import numpy as np
import pytest

from cores import SHIFT_4X4
from mulfree.params.core_config import CORE_MAGIC, CoreConfig
from mulfree.gen.core_manifest import core_manifest, write_core_design
from mulfree.host import layer_stream as ls
from mulfree.host import zynq, zynq_backend
from mulfree.host.zynq import (DMA_REGS, AxiDma, DevMemWindow, DmaBuffer, DmaError,
                               TransferTimeout, UdmaBuf, UioWindow, ZynqBackend, ZynqConfig,
                               decode_dmasr, open_zynq)
from mulfree.sim.board import SimCore, build_sim_core
from mulfree.sim.emulated_board import DmaModelError, EmulatedBoard
from mulfree.params.layer_golden import PostParams, conv2d_acc


CFG = SHIFT_4X4
BB = CFG.stream_width // 8
R = DMA_REGS
IOC = 1 << 12


# Fake sysfs and /dev trees --------------------------------------------------------------------

def fake_uio(tmp_path, devices, size=0x1000):
    """``sys/class/uio/uioN`` folders named ``devices`` and ``dev/uioN`` files of ``size``."""
    sys_root, dev_root = tmp_path / "sys" / "class", tmp_path / "dev"
    dev_root.mkdir(parents=True, exist_ok=True)
    for n, name in enumerate(devices):
        d = sys_root / "uio" / f"uio{n}"
        (d / "maps" / "map0").mkdir(parents=True)
        (d / "name").write_text(name + "\n")
        (d / "maps" / "map0" / "size").write_text(f"0x{size:08x}\n")
        (d / "maps" / "map0" / "addr").write_text(f"0x{0x43C0_0000 + n * 0x10000:08x}\n")
        (dev_root / f"uio{n}").write_bytes(bytes(size))
    return sys_root, dev_root


def fake_udmabuf(tmp_path, name="udmabuf0", size=1 << 16, phys=0x3800_0000,
                 cls="u-dma-buf"):
    sys_root, dev_root = tmp_path / "sys" / "class", tmp_path / "dev"
    d = sys_root / cls / name
    d.mkdir(parents=True)
    (d / "phys_addr").write_text(f"0x{phys:016x}\n")
    (d / "size").write_text(f"{size}\n")
    dev_root.mkdir(parents=True, exist_ok=True)
    (dev_root / name).write_bytes(bytes(size))
    return sys_root, dev_root


# (a) Windows, buffers, discovery --------------------------------------------------------------

def test_uio_window_maps_the_named_device(tmp_path):
    sys_root, dev_root = fake_uio(tmp_path, ["axi-pmon", "mulfree-core", "mulfree-dma"])
    data = bytearray(0x1000)
    data[0x40:0x44] = (0x1234_5678).to_bytes(4, "little")
    (dev_root / "uio1").write_bytes(data)
    with UioWindow("mulfree-core", sysfs_root=sys_root / "uio", dev_root=dev_root) as w:
        assert (w.device, w.size, w.phys_addr, w.lock_id) == ("uio1", 0x1000, 0x43C1_0000,
                                                              "mulfree-core")
        assert w.read32(0x40) == 0x1234_5678
        w.write32(0xFFC, 0xDEAD_BEEF)
        w.write32(0, 0)
    raw = (dev_root / "uio1").read_bytes()
    assert raw[0xFFC:] == (0xDEAD_BEEF).to_bytes(4, "little")
    assert (dev_root / "uio0").read_bytes() == bytes(0x1000)


@pytest.mark.parametrize("offset", [2, 0x1000, -4, 0x1_0000])
def test_window_refuses_bad_offsets(tmp_path, offset):
    sys_root, dev_root = fake_uio(tmp_path, ["mulfree-core"])
    w = UioWindow("mulfree-core", sysfs_root=sys_root / "uio", dev_root=dev_root)
    for access in (lambda: w.read32(offset), lambda: w.write32(offset, 1)):
        with pytest.raises(ValueError, match=r"offset must be a multiple of 4 in \[0, 0x1000\) "
                                             r"of UIO device 'mulfree-core'") as info:
            access()
        assert f"{offset:#x}" in str(info.value)
    for value in (-1, 1 << 32, 1.5):
        with pytest.raises(ValueError, match="value must be an integer in"):
            w.write32(0, value)
    w.close()
    w.close()
    with pytest.raises(ValueError, match="closed"):
        w.read32(0)


def test_uio_discovery_errors(tmp_path):
    sys_root, dev_root = fake_uio(tmp_path, ["axi-pmon", "mulfree-core", "mulfree-core"])
    with pytest.raises(FileNotFoundError, match=r"no UIO device named 'mulfree-dma' under "
                                                r".*uio \(found: uio0 'axi-pmon', uio1 "
                                                r"'mulfree-core', uio2 'mulfree-core'\); "
                                                r"load the overlay: mulfree deploy"):
        UioWindow("mulfree-dma", sysfs_root=sys_root / "uio", dev_root=dev_root)
    with pytest.raises(FileNotFoundError, match="several UIO devices named 'mulfree-core'.*"
                                                "uio1, uio2"):
        UioWindow("mulfree-core", sysfs_root=sys_root / "uio", dev_root=dev_root)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        UioWindow("mulfree-core", sysfs_root=tmp_path / "nothing", dev_root=dev_root)
    (dev_root / "uio0").unlink()
    with pytest.raises(FileNotFoundError, match=r"uio0 does not exist \(UIO device 'axi-pmon'"):
        UioWindow("axi-pmon", sysfs_root=sys_root / "uio", dev_root=dev_root)


def test_devmem_window_is_restricted_to_its_window(tmp_path):
    page = mmap.PAGESIZE
    mem = tmp_path / "mem"
    mem.write_bytes(bytes(3 * page))
    base = page + 0x100
    with DevMemWindow(base, 0x200, dev=mem) as w:
        assert w.size == 0x200 and w.lock_id == f"mem-{base:08x}"
        w.write32(0, 0x0102_0304)
        w.write32(0x1FC, 0xFFFF_FFFF)
        assert w.read32(0) == 0x0102_0304
        with pytest.raises(ValueError, match=r"in \[0, 0x200\) of .*mem window "
                                             r"0x00001100\+0x200, not 0x200"):
            w.read32(0x200)
    raw = mem.read_bytes()
    assert raw[base:base + 4] == (0x0102_0304).to_bytes(4, "little")
    assert raw[base + 0x1FC:base + 0x200] == b"\xff" * 4
    assert np.count_nonzero(np.frombuffer(raw, np.uint8)) == 8     # nothing else written
    with pytest.raises(ValueError, match="multiples of 4"):
        DevMemWindow(base + 2, 0x200, dev=mem)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DevMemWindow(base, 0x200, dev=tmp_path / "no-mem")


def test_udmabuf_reads_sysfs_and_maps_the_device(tmp_path):
    sys_root, dev_root = fake_udmabuf(tmp_path, size=8192, phys=0x3800_0000)
    with UdmaBuf("udmabuf0", sysfs_root=sys_root, dev_root=dev_root) as buf:
        assert (buf.phys_addr, buf.size, buf.array.dtype, buf.array.shape) == \
            (0x3800_0000, 8192, np.uint8, (8192,))
        buf.array[100:104] = [1, 2, 3, 4]
        buf.sync_for_device(0, 8192)               # O_SYNC: no-ops that check their range
        buf.sync_for_cpu(8000, 192)
        assert not (buf.sysfs_dir / "sync_for_cpu").exists()
        with pytest.raises(ValueError, match="offset and n must be integers"):
            buf.sync_for_cpu(8000, 193)
    assert (dev_root / "udmabuf0").read_bytes()[100:104] == bytes([1, 2, 3, 4])
    buf = UdmaBuf("udmabuf0", sysfs_root=sys_root, dev_root=dev_root)
    view = buf.array[:16]
    buf.close()                                   # a view outlives the buffer: no error
    buf.close()
    assert view.sum() == 0 and buf.array is None


def test_udmabuf_older_class_and_cached_syncs(tmp_path):
    sys_root, dev_root = fake_udmabuf(tmp_path, name="udmabuf3", cls="udmabuf", size=4096,
                                      phys=0x1000_0000)
    buf = UdmaBuf("udmabuf3", sysfs_root=sys_root, dev_root=dev_root, o_sync=False)
    assert buf.sysfs_dir == sys_root / "udmabuf" / "udmabuf3"
    buf.sync_for_device(64, 128)
    d = buf.sysfs_dir
    assert [(d / f).read_text() for f in ("sync_offset", "sync_size", "sync_direction",
                                          "sync_for_device")] == ["64\n", "128\n", "1\n", "1\n"]
    buf.sync_for_cpu(0, 4096)
    assert [(d / f).read_text() for f in ("sync_offset", "sync_size", "sync_direction",
                                          "sync_for_cpu")] == ["0\n", "4096\n", "2\n", "1\n"]
    buf.close()
    with pytest.raises(FileNotFoundError, match=r"no u-dma-buf device named 'udmabuf0' "
                                                r"\(looked for .*u-dma-buf/udmabuf0 and "
                                                r".*udmabuf/udmabuf0\)"):
        UdmaBuf("udmabuf0", sysfs_root=sys_root, dev_root=dev_root)


def test_dma_buffer_checks_its_array():
    buf = DmaBuffer(np.zeros(64, np.uint8), 0x1000)
    assert (buf.size, buf.phys_addr) == (64, 0x1000)
    with pytest.raises(ValueError, match="array must be a 1-D uint8 NumPy array"):
        DmaBuffer(np.zeros(64, np.int32), 0)
    with pytest.raises(ValueError, match="phys_addr must be an integer"):
        DmaBuffer(np.zeros(64, np.uint8), -1)


def test_zynq_config():
    c = zynq.ZYNQ_DEFAULTS
    assert (c.core_base, c.core_size, c.dma_base, c.dma_size, c.dma_length_bits,
            c.core_uio, c.dma_uio, c.udmabuf, c.use_devmem) == \
        (0x43C0_0000, 0x1000, 0x4040_0000, 0x1_0000, 26, "mulfree-core", "mulfree-dma",
         "udmabuf0", False)
    assert c.max_transfer_bytes == (1 << 26) - 1
    small = CoreConfig(engine=CFG.engine, axil_addr_width=10)
    assert ZynqConfig.for_manifest(core_manifest(small)).core_size == 0x400
    assert ZynqConfig.for_manifest(core_manifest(small), use_devmem=True).use_devmem
    assert c.replace(udmabuf="udmabuf1").as_dict()["udmabuf"] == "udmabuf1"
    bad = [({"dma_length_bits": 27}, r"dma_length_bits must be an integer in \[8, 26\], not 27"),
           ({"core_size": 0x1800}, "core_size must be a power of two, not 0x1800"),
           ({"core_base": 0x43C0_0100}, "core_base must be a multiple of core_size"),
           ({"dma_size": 0x40}, "dma_size must be at least 0x5c"),
           ({"core_uio": ""}, "core_uio must be a device name"),
           ({"use_devmem": 1}, "use_devmem must be True or False")]
    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            ZynqConfig(**change)


def test_open_zynq_errors_name_what_was_looked_for(tmp_path):
    manifest = core_manifest(CFG)
    sys_root, dev_root = fake_uio(tmp_path, ["mulfree-core"])
    with pytest.raises(FileNotFoundError, match=r"no UIO device named 'mulfree-dma' under "
                                                r".*uio \(found: uio0 'mulfree-core'\)"):
        open_zynq(manifest, sysfs_root=sys_root, dev_root=dev_root)
    sys_root, dev_root = fake_uio(tmp_path / "b", ["mulfree-core", "mulfree-dma"],
                                  size=0x1_0000)
    with pytest.raises(FileNotFoundError, match="no u-dma-buf device named 'udmabuf0'"):
        open_zynq(manifest, sysfs_root=sys_root, dev_root=dev_root)
    small = fake_uio(tmp_path / "c", ["mulfree-core", "mulfree-dma"], size=0x40)
    with pytest.raises(ValueError, match="the core's window .* is 0x40 bytes; its register "
                                         "map needs 0x[0-9a-f]+"):
        open_zynq(manifest, sysfs_root=small[0], dev_root=small[1])
    with pytest.raises(ValueError, match="config must be a ZynqConfig"):
        open_zynq(manifest, {"core_base": 0})


@pytest.fixture
def quiet_dma(monkeypatch):
    """A DMA whose reset and start touch nothing: plain files cannot clear the Reset bit."""
    monkeypatch.setattr(AxiDma, "reset", lambda self, timeout=1.0: None)
    monkeypatch.setattr(AxiDma, "start", lambda self: None)


def test_open_zynq_over_uio(tmp_path, quiet_dma):
    manifest = core_manifest(CFG)
    sys_root, dev_root = fake_uio(tmp_path, ["mulfree-dma", "mulfree-core"], size=0x1_0000)
    fake_udmabuf(tmp_path, size=1 << 16)
    raw = bytearray(0x1_0000)
    raw[0:4] = CORE_MAGIC.to_bytes(4, "little")
    (dev_root / "uio1").write_bytes(raw)
    with open_zynq(manifest, sysfs_root=sys_root, dev_root=dev_root) as be:
        assert be.name == "zynq" and be.cycles is None
        assert be.read32(0) == CORE_MAGIC
        assert (be.core.device, be.dma.window.device) == ("uio1", "uio0")
        assert be.beat_bytes == BB
        assert be.max_packet_bytes == (1 << 15)
        assert Path(be.lock_path).name == "mulfree-mulfree-core.lock"
        assert Path(be.lock_path).parent in (Path("/run/lock"),
                                             Path(zynq_backend.tempfile.gettempdir()))


def test_open_zynq_over_devmem(tmp_path, quiet_dma):
    manifest = core_manifest(CFG)
    sys_root, dev_root = fake_udmabuf(tmp_path, size=1 << 16)
    cfg = ZynqConfig(use_devmem=True)
    with open(dev_root / "mem", "wb") as f:                  # sparse: 1.1 GB of holes
        f.truncate(cfg.core_base + cfg.core_size)
    with open_zynq(manifest, cfg, sysfs_root=sys_root, dev_root=dev_root) as be:
        be.write32(0x18, 0xA5A5_5A5A)
        assert be.core.size == 0x1000 and be.dma.window.size == 0x1_0000
        assert Path(be.lock_path).name == "mulfree-mem-43c00000.lock"
    with open(dev_root / "mem", "rb") as f:
        f.seek(cfg.core_base + 0x18)
        assert f.read(4) == (0xA5A5_5A5A).to_bytes(4, "little")


def test_decode_dmasr():
    assert decode_dmasr(0x4011) == ["Halted", "DMAIntErr", "Err_Irq"]
    assert decode_dmasr(0x1002) == ["Idle", "IOC_Irq"]
    assert decode_dmasr(0) == []


# The simulated core ---------------------------------------------------------------------------

@pytest.fixture(scope="session")
def design(tmp_path_factory):
    """The small core's manifest, written with its Verilog into a temporary folder."""
    out = tmp_path_factory.mktemp("zynq_core")
    write_core_design(CFG, out)
    return out, json.loads((out / f"{CFG.top_name}.json").read_text())


@pytest.fixture(scope="session")
def sim_lib(design, board_cache):
    """The core under Verilator with the board harness (fails if Verilator is missing)."""
    return build_sim_core(design[0], build_dir=board_cache, jobs=2)


@pytest.fixture
def sim(sim_lib, design):
    core = SimCore(sim_lib, design[1])
    yield core
    core.close()


@pytest.fixture
def board(sim):
    return EmulatedBoard(sim)


@pytest.fixture
def backend(board, design):
    be = ZynqBackend(board.core_window, board.dma_window, board.buffer, manifest=design[1])
    board.clear_log()
    yield be
    be.close()


def reg(manifest, name, field=None):
    """Offset of register ``name``, or ``(offset, bit mask)`` of one of its fields."""
    r = next(r for r in manifest["registers"]["registers"] if r["name"] == name)
    if field is None:
        return r["offset"]
    hi, lo = next(f for f in r["fields"] if f["name"] == field)["bits"]
    return r["offset"], ((1 << (hi - lo + 1)) - 1) << lo


def control(manifest, *fields):
    offset = reg(manifest, "CONTROL")
    return offset, sum(reg(manifest, "CONTROL", f)[1] for f in fields)


def as_bytes(beats):
    return np.frombuffer(b"".join(int(b).to_bytes(BB, "little") for b in beats), np.uint8)


def random_post(e, rng, acc):
    """Post-processing scaled to the accumulators' spread, so few results saturate."""
    spread = int(np.abs(acc).max()) + 1
    base = max(0, spread.bit_length() - (e.act_bits - 1))
    out_c = acc.shape[0]
    return PostParams(rng.integers(-(1 << base + 1), (1 << base + 1) + 1, out_c),
                      np.full(out_c, base), rng.integers(0, 2, out_c).astype(bool))


def random_layer(rng, in_c, hw, out_c, kernel, padding=0, stride=1):
    e = CFG.engine
    lo, hi = e.act_range
    x = rng.integers(lo, hi + 1, (in_c, *hw))
    w = rng.integers(0, 1 << e.code_width, (out_c, in_c, kernel, kernel))
    post = random_post(e, rng, conv2d_acc(e, x, w, stride, padding))
    return ls.Layer(x, w, post, stride=stride, padding=padding)


def random_matmul(rng, m, k, n):
    e = CFG.engine
    lo, hi = e.act_range
    x = rng.integers(lo, hi + 1, (m, k))
    w = rng.integers(0, 1 << e.code_width, (k, n))
    post = random_post(e, rng, conv2d_acc(e, x.T[:, None, :], w.T[:, :, None, None]))
    return ls.Layer.matmul(x, w, post)


def run_layer(backend, manifest, layer, *, packets=None, timeout=20.0):
    """What the runtime does for one run: CONTROL.start, transfer, wait_done, acknowledge."""
    if packets is None:
        packets = [as_bytes(p.beats) for p in ls.pack_layer(CFG, layer)]
    expected = as_bytes(ls.expected_beats(CFG, layer))
    backend.write32(*control(manifest, "irq_enable", "start"))
    out = backend.transfer(packets, expected.size, timeout)
    assert backend.wait_done(5.0)
    status = backend.read32(reg(manifest, "STATUS"))
    assert status & reg(manifest, "STATUS", "error")[1] == 0, f"STATUS {status:#x}"
    backend.write32(reg(manifest, "STATUS"), reg(manifest, "STATUS", "done")[1])
    return out, expected


def split_packets(packets, max_bytes):
    """Cut each packet into packets of at most ``max_bytes`` (a header per chunk)."""
    out = []
    for p in packets:
        vb = CFG.beats(CFG.vector_bits[p.type])
        per = (max_bytes // BB - 1) // vb
        vectors = p.beats[1:]
        for start in range(0, p.count, per):
            chunk = vectors[start * vb:(start + per) * vb]
            header = ls.PACKET_TYPES[p.type] | (len(chunk) // vb) << 8
            out.append(as_bytes([header, *chunk]))
    return out


# (b) The AXI DMA driver against the model -----------------------------------------------------

def dma_log(board):
    return [a[1:] for a in board.accesses if a[0] == "dma"]


def test_dma_reset_and_start_sequences(board):
    dma = AxiDma(board.dma_window)
    dma.reset()
    assert dma_log(board) == [("w", 0x00, 0x4), ("w", 0x30, 0x4),
                              ("r", 0x00, 0x4), ("r", 0x00, 0x0), ("r", 0x30, 0x0)]
    board.clear_log()
    dma.start()
    assert dma_log(board) == [("w", 0x00, 0x1), ("w", 0x30, 0x1),
                              ("r", 0x04, 0x0), ("r", 0x34, 0x0)]


def test_dma_send_and_recv_sequences(board, design):
    """A one-beat matmul's descriptor, params, weights and acts; the result comes back."""
    manifest = design[1]
    layer = random_matmul(np.random.default_rng(3), 1, 1, 1)
    stream = [as_bytes(p.beats) for p in ls.pack_layer(CFG, layer)]
    expected = as_bytes(ls.expected_beats(CFG, layer))
    dma, base = AxiDma(board.dma_window), board.buffer.phys_addr
    dma.reset()
    dma.start()
    board.core_window.write32(*control(manifest, "start"))
    board.clear_log()
    dma.recv(base + 0x8000, expected.size)
    assert dma_log(board) == [("r", R["S2MM_DMASR"], 0x0), ("w", R["S2MM_DA"], base + 0x8000),
                              ("w", R["S2MM_LENGTH"], expected.size)]
    for packet in stream:
        board.memory[:packet.size] = packet
        board.clear_log()
        dma.send(base, packet.size)
        dma.wait_send(5.0)
        log = dma_log(board)
        assert log[:3] == [("r", R["MM2S_DMASR"], log[0][2]), ("w", R["MM2S_SA"], base),
                           ("w", R["MM2S_LENGTH"], packet.size)]
        assert log[0][2] & 0b111_0001 == 0              # running, no error before the send
        polls = log[3:-1]
        assert polls and all(a[:2] == ("r", R["MM2S_DMASR"]) for a in polls)
        assert polls[-1][2] == 0x1002                   # Idle, IOC_Irq
        assert log[-1] == ("w", R["MM2S_DMASR"], IOC)    # acknowledged
    board.clear_log()
    assert dma.wait_recv(5.0) == expected.size
    log = dma_log(board)
    assert log[-3:] == [("r", R["S2MM_DMASR"], 0x1002), ("w", R["S2MM_DMASR"], IOC),
                        ("r", R["S2MM_LENGTH"], expected.size)]
    assert np.array_equal(board.memory[0x8000:0x8000 + expected.size], expected)
    assert dma.status("MM2S") == dma.status("S2MM") == 0x2    # IOC cleared (W1C), Idle


def test_dma_refusals_touch_nothing(board):
    dma = AxiDma(board.dma_window)
    dma.reset()
    dma.start()
    board.clear_log()
    base = board.buffer.phys_addr
    for call, nbytes in ((dma.send, 0), (dma.recv, 0), (dma.send, 1 << 26),
                         (dma.recv, 1 << 26), (dma.send, 1.0)):
        with pytest.raises(DmaError, match=r"nbytes must be an integer in \[1, 67108863\] "
                                           r"\(the length register has 26 bits\)") as info:
            call(base, nbytes)
        assert info.value.channel in ("MM2S", "S2MM")
    with pytest.raises(DmaError, match="phys must be an address .*32-bit addressing"):
        dma.send(0xFFFF_FFF0, 0x20)
    with pytest.raises(DmaError, match="MM2S: no transfer to wait for"):
        dma.wait_send(0.1)
    assert board.accesses == []
    short = AxiDma(board.dma_window, length_bits=12)
    with pytest.raises(DmaError, match=r"\[1, 4095\]"):
        short.send(base, 4096)
    with pytest.raises(ValueError, match=r"length_bits must be an integer in \[8, 26\], not 27"):
        AxiDma(board.dma_window, length_bits=27)


def test_dma_with_scatter_gather_is_refused(sim, design):
    board = EmulatedBoard(sim, sg=True)
    dma = AxiDma(board.dma_window)
    dma.reset()
    with pytest.raises(DmaError, match=r"built with scatter-gather \(DMASR.SGIncld = 1.*"
                                       r"simple \(direct register\) mode") as info:
        dma.start()
    assert info.value.channel == "MM2S" and "SGIncld" in info.value.bits
    with pytest.raises(DmaError, match="scatter-gather"):
        ZynqBackend(board.core_window, board.dma_window, board.buffer, manifest=design[1])


def test_dma_errors_are_decoded(board, design):
    dma = AxiDma(board.dma_window)
    dma.reset()
    dma.start()
    # An address outside the buffer: DMADecErr, the channel halts.
    dma.send(board.buffer.phys_addr + board.buffer.size - 8, 16)
    with pytest.raises(DmaError, match=r"AXI DMA MM2S error during a transfer of 16 bytes: "
                                       r"DMASR=0x00004041 \(Halted, DMADecErr, Err_Irq\); "
                                       r"DMADecErr: decode error") as info:
        dma.wait_send(1.0)
    assert (info.value.channel, info.value.dmasr, info.value.bits) == \
        ("MM2S", 0x4041, ["Halted", "DMADecErr", "Err_Irq"])
    # A halted channel is refused before its registers are written.
    board.clear_log()
    with pytest.raises(DmaError, match=r"MM2S error before a transfer: .*reset\(\) and "
                                       r"start\(\)"):
        dma.send(board.buffer.phys_addr, 8)
    assert dma_log(board) == [("r", R["MM2S_DMASR"], 0x4041)]
    # A length wider than the model's register: DMAIntErr.
    dma.reset()
    dma.start()
    narrow = EmulatedBoard(board.sim, dma_length_bits=10)
    wide = AxiDma(narrow.dma_window)
    wide.reset()
    wide.start()
    wide.recv(narrow.buffer.phys_addr, 1024)
    with pytest.raises(DmaError, match=r"S2MM error .*\(Halted, DMAIntErr, Err_Irq\); "
                                       r"DMAIntErr: internal error") as info:
        wide.wait_recv(1.0)
    assert info.value.channel == "S2MM"
    # A result packet longer than the length written: DMAIntErr on S2MM.
    manifest = design[1]
    layer = random_matmul(np.random.default_rng(4), 5, 3, 2)
    dma.reset()
    dma.start()
    board.core_window.write32(*control(manifest, "start"))
    dma.recv(board.buffer.phys_addr + 0x8000, 2 * BB)
    for p in ls.pack_layer(CFG, layer):
        board.memory[:len(p.beats) * BB] = as_bytes(p.beats)
        dma.send(board.buffer.phys_addr, len(p.beats) * BB)
        dma.wait_send(5.0)
    with pytest.raises(DmaError, match=r"S2MM error .*DMAIntErr.*a packet longer than the "
                                       r"length written"):
        dma.wait_recv(5.0)


def test_dma_wait_times_out_and_model_refuses_driver_bugs(board):
    dma = AxiDma(board.dma_window)
    dma.reset()
    dma.start()
    board.memory[:8] = as_bytes([0x101])
    dma.send(board.buffer.phys_addr, 8)           # the core was not started: it never takes it
    t0 = time.monotonic()
    with pytest.raises(TransferTimeout, match=r"MM2S: the transfer of 8 bytes did not complete "
                                              r"within 0.2 s \(DMASR=0x00000000") as info:
        dma.wait_send(0.2)
    assert time.monotonic() - t0 < 2.0
    assert info.value.stage == "MM2S" and info.value.dmasr == {"MM2S": 0}
    assert isinstance(info.value, TimeoutError)
    with pytest.raises(DmaError, match="a transfer of 8 bytes is in progress"):
        dma.send(board.buffer.phys_addr, 8)
    with pytest.raises(DmaModelError, match="MM2S_LENGTH written while a transfer"):
        board.dma_window.write32(R["MM2S_LENGTH"], 8)
    dma.reset()                                   # drops the beat and the pending transfer
    assert board.sim.in_pending() == 0 and dma.pending("MM2S") is None
    with pytest.raises(DmaModelError, match="halted"):
        board.dma_window.write32(R["S2MM_LENGTH"], 8)


# (c) Layers through ZynqBackend ---------------------------------------------------------------

def test_backend_identity_and_attributes(backend, board, design):
    manifest = design[1]
    assert backend.name == "zynq" and backend.cycles is None
    assert backend.beat_bytes == BB
    assert backend.max_packet_bytes == board.buffer.size // 2
    assert backend.read32(reg(manifest, "ID")) == CORE_MAGIC
    array = backend.read32(reg(manifest, "ARRAY"))
    assert (array & 0xFFFF, array >> 16) == (CFG.engine.rows, CFG.engine.cols)
    assert backend.read32(reg(manifest, "STREAM_WIDTH")) == CFG.stream_width
    assert backend.read32(reg(manifest, "MAX_K")) == CFG.engine.max_k
    backend.write32(reg(manifest, "SCRATCH"), 0x1234_ABCD)
    assert backend.read32(reg(manifest, "SCRATCH")) == 0x1234_ABCD
    assert backend.lock_path is None              # the emulated board needs no lock file
    assert board.bus_errors == []
    assert not backend.wait_done(0.05)            # no run: STATUS.done stays 0


@pytest.mark.parametrize("kind", ["matmul", "conv3x3_pad1"])
def test_backend_runs_layers_bit_exact(backend, board, design, kind):
    rng = np.random.default_rng(11)
    layer = (random_matmul(rng, 37, 11, 7) if kind == "matmul"
             else random_layer(rng, 5, (9, 7), 6, 3, padding=1))
    out, expected = run_layer(backend, design[1], layer)
    assert out.dtype == np.uint8 and out.shape == expected.shape
    assert np.array_equal(out, expected), f"first difference at byte " \
        f"{int(np.argmax(out != expected))}"
    assert board.bus_errors == []
    # The driver's order: S2MM armed before the first MM2S transfer, one transfer per packet.
    writes = [a[2:] for a in board.accesses if a[0] == "dma" and a[1] == "w"]
    lengths = [v for off, v in writes if off in (R["MM2S_LENGTH"], R["S2MM_LENGTH"])]
    packets = ls.pack_layer(CFG, layer)
    assert writes[0][0] == R["S2MM_DA"]
    assert lengths == [expected.size] + [len(p.beats) * BB for p in packets]


def test_backend_sends_in_rounds_when_the_buffer_is_small(sim, design):
    board = EmulatedBoard(sim, buffer_size=1024)
    backend = ZynqBackend(board.core_window, board.dma_window, board.buffer,
                          manifest=design[1])
    assert backend.max_packet_bytes == 512
    layer = random_layer(np.random.default_rng(5), 6, (6, 6), 4, 3, padding=1)
    packets = split_packets(ls.pack_layer(CFG, layer), backend.max_packet_bytes)
    assert len(packets) > 4 and sum(p.size for p in packets) > 2 * 512
    board.clear_log()
    out, expected = run_layer(backend, design[1], layer, packets=packets)
    assert np.array_equal(out, expected)
    sa = [a[3] - board.buffer.phys_addr for a in board.accesses
          if a[:3] == ("dma", "w", R["MM2S_SA"])]
    assert len(sa) == len(packets) and max(sa) < 512 and sa.count(0) > 2   # areas reused


def test_backend_refuses_packets_it_cannot_move(backend, board, design):
    too_big = np.zeros(backend.max_packet_bytes + BB, np.uint8)
    with pytest.raises(ValueError, match=r"packets\[1\] \(packet 2 of 2\) has 524296 bytes; "
                                         r"this device moves at most max_packet_bytes = 524288"):
        backend.transfer([np.zeros(BB, np.uint8), too_big], BB, 1.0)
    with pytest.raises(ValueError, match=r"packets\[0\] has 12 bytes; a packet must be a "
                                         r"positive number of 8-byte beats"):
        backend.transfer([np.zeros(12, np.uint8)], BB, 1.0)
    with pytest.raises(ValueError, match=r"packets\[0\] must be a 1-D uint8 array"):
        backend.transfer([np.zeros(8, np.int64)], BB, 1.0)
    with pytest.raises(ValueError, match="out_nbytes must be a multiple of 8"):
        backend.transfer([np.zeros(BB, np.uint8)], 12, 1.0)
    with pytest.raises(ValueError, match="out_nbytes must be .* up to 524288"):
        backend.transfer([np.zeros(BB, np.uint8)], 1 << 20, 1.0)
    assert board.accesses == []


def test_backend_timeout_abort_and_recovery(backend, board, design):
    manifest = design[1]
    rng = np.random.default_rng(7)
    layer = random_layer(rng, 5, (6, 6), 4, 3, padding=1)
    packets = [as_bytes(p.beats) for p in ls.pack_layer(CFG, layer)]
    expected = as_bytes(ls.expected_beats(CFG, layer))
    # Only the descriptor: the core takes it, then waits for data forever.
    backend.write32(*control(manifest, "irq_enable", "start"))
    t0 = time.monotonic()
    with pytest.raises(TransferTimeout, match=r"transfer: receive did not complete within "
                                              r"0.5 s \(MM2S DMASR=0x00000002 \(Idle\), S2MM "
                                              r"DMASR=0x00000000") as info:
        backend.transfer(packets[:1], expected.size, 0.5)
    assert 0.5 <= time.monotonic() - t0 < 2.5
    assert info.value.stage == "receive" and info.value.dmasr == {"MM2S": 0x2, "S2MM": 0x0}
    assert not backend.wait_done(0.05)
    with pytest.raises(DmaError, match=r"the previous transfer did not finish \(S2MM "
                                       rf"\({expected.size} bytes\) still pending after a "
                                       r"timeout\); abort\(\) before the next transfer"):
        backend.transfer(packets, expected.size, 0.5)
    # What the runtime does: soft-reset the core, reset the DMA; then the next layer runs.
    backend.write32(*control(manifest, "irq_enable", "soft_reset"))
    backend.abort()
    out, expected = run_layer(backend, manifest, layer)
    assert np.array_equal(out, expected)
    # A core that was not started takes nothing: the first send times out.
    with pytest.raises(TransferTimeout, match=r"send packet 1 of \d+ did not complete") as info:
        backend.transfer(packets, expected.size, 0.3)
    assert info.value.stage == f"send packet 1 of {len(packets)}"
    backend.write32(*control(manifest, "soft_reset"))
    backend.abort()
    layer2 = random_matmul(rng, 20, 9, 6)
    out, expected = run_layer(backend, manifest, layer2)
    assert np.array_equal(out, expected)
    assert board.bus_errors == []


class SlowWindow:
    """A DMA window whose MM2S_DMASR reads take ``delay`` seconds (a busy bus)."""

    def __init__(self, window, delay):
        self.window, self.delay = window, delay

    def read32(self, offset):
        if offset == R["MM2S_DMASR"]:
            time.sleep(self.delay)
        return self.window.read32(offset)

    def write32(self, offset, value):
        self.window.write32(offset, value)


def test_backend_deadline_covers_the_whole_transfer(board, design):
    """Each send is quick but slow to observe: the overall deadline stops the transfer."""
    manifest = design[1]
    backend = ZynqBackend(board.core_window, SlowWindow(board.dma_window, 0.05),
                          board.buffer, manifest=manifest)
    layer = random_matmul(np.random.default_rng(9), 40, 6, 5)
    packets = [as_bytes(p.beats) for p in ls.pack_layer(CFG, layer)]
    assert len(packets) >= 5
    backend.write32(*control(manifest, "start"))
    t0 = time.monotonic()
    with pytest.raises(TransferTimeout, match=r"send packet \d of 5 did not complete within "
                                              r"0.25 s") as info:
        backend.transfer(packets, len(ls.expected_beats(CFG, layer)) * BB, 0.25)
    assert time.monotonic() - t0 < 0.25 + 1.0
    assert info.value.stage.startswith("send packet")


def test_backend_result_length_mismatch(backend, board, design):
    manifest = design[1]
    layer = random_matmul(np.random.default_rng(8), 12, 5, 3)
    packets = [as_bytes(p.beats) for p in ls.pack_layer(CFG, layer)]
    n = len(ls.expected_beats(CFG, layer)) * BB
    backend.write32(*control(manifest, "start"))
    with pytest.raises(DmaError, match=rf"result packet had {n} bytes, {n + BB} expected"):
        backend.transfer(packets, n + BB, 5.0)
    assert backend.wait_done(1.0)
    backend.write32(*control(manifest, "soft_reset"))
    backend.abort()
    backend.write32(*control(manifest, "start"))
    with pytest.raises(DmaError, match="S2MM error .*DMAIntErr"):
        backend.transfer(packets, n - BB, 5.0)
    backend.write32(*control(manifest, "soft_reset"))
    backend.abort()
    out, expected = run_layer(backend, manifest, layer)
    assert np.array_equal(out, expected)
