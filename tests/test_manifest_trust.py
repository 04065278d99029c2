"""What the runtime trusts: core manifests, the device lock and the Zynq configuration.

A core manifest repeats numbers that follow from its ``parameters``; the compiler packs from the
parameters and the device checks its identity registers against the register section, so an
edited manifest must be refused before anything is generated, built, opened or sent, with one
line naming the file and the field (:mod:`mulfree.host.manifest_check`). The tables below edit
every section of a generated manifest (values, types, deleted keys, extra keys, lists, deep
nesting, paths outside the folder) and check the refusal through ``load_manifest``, the
compiler, ``Device``, both backends, the simulator build and ``mulfree compile/run --config``.
No test here needs a simulator: every refusal happens before one would start.
"""

import copy
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cores import SHIFT_4X4
from random_models import conv_model

from mulfree.gen.core_manifest import core_manifest, write_core_design
from mulfree.params.safe_io import FileCheckError
from mulfree.host import zynq, zynq_backend
from mulfree.host.compiler import CompileError, compile_model
from mulfree.host.device_lock import DeviceLock, check_lock_dir
from mulfree.host.manifest_check import ManifestError, check_manifest
from mulfree.host.runtime import (Device, DeviceBusy, DeviceError, InputError, load_manifest,
                                  open_device)
from mulfree.host.zynq import ZynqConfig, ZynqConfigError, load_zynq_config


CORE = SHIFT_4X4
TOP = CORE.top_name


@pytest.fixture(scope="session")
def pristine(tmp_path_factory):
    """A generated core (``<top>.v`` and ``<top>.json``), written once."""
    folder = tmp_path_factory.mktemp("pristine-core")
    write_core_design(CORE, folder)
    return folder


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """An exported model that fits :data:`CORE`, and inputs for it."""
    from mulfree.host.export_format import write_export
    folder = tmp_path_factory.mktemp("trust-model")
    model = conv_model(11, "shift", ab=8)
    write_export(model, folder / "model")
    x = np.random.default_rng(5).uniform(-8, 8, (3, *model.input.shape)).astype(np.float32)
    np.save(folder / "x.npy", x)
    return model, folder


def _copy(pristine, dest):
    dest.mkdir(parents=True, exist_ok=True)
    for name in (f"{TOP}.v", f"{TOP}.json"):
        (dest / name).write_bytes((pristine / name).read_bytes())
    return dest / f"{TOP}.json"


def _reg(doc, name):
    return next(r for r in doc["registers"]["registers"] if r["name"] == name)


def _field(doc, reg, name):
    return next(f for f in _reg(doc, reg)["fields"] if f["name"] == name)


def _set(*path, value):
    def edit(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


def _delete(*path):
    def edit(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return edit


def _reg_set(reg, key, value):
    def edit(doc):
        _reg(doc, reg)[key] = value
    return edit


def _port_width(doc):
    doc["ports"][2]["width"] += 1


# (id, edit of the manifest dict, regex the one-line message must match)
EDITS = [
    # The two examples: only the parameters edited.
    ("max_k edited", _set("parameters", "engine", "max_k", value=1024),
     r"registers\.registers\[WIDTHS\]\.reset is \d+ \(0x[0-9a-f]+\) but the parameters give "
     r"\d+"),
    # Interface 2.2: the core's two banks need rows == cols, so the parameters themselves
    # disagree now (before 2.2: the ARRAY register, 262148 against 262152).
    ("rows edited", _set("parameters", "engine", "rows", value=8),
     r"parameters\.fmap_banks: fmap_banks=2 \(layer chaining\) needs rows == cols .* not "
     r"8x4"),
    ("pe edited", _set("parameters", "engine", "pe", value="mult"),
     r"parameters\.engine\.weight_bits|registers\.registers\[ENGINE\]\.reset"),
    ("fmap_vectors edited", _set("parameters", "fmap_vectors", value=1024),
     r"registers\.registers\[FMAP_VECTORS\]\.reset is 512 but the parameters give 1024"),
    ("stream_width edited", _set("parameters", "stream_width", value=128),
     r"registers\.registers\[STREAM_WIDTH\]\.reset is 64 but the parameters give 128"),
    # Identity registers edited.
    ("ARRAY reset edited", _reg_set("ARRAY", "reset", 0x0008_0008),
     r"registers\.registers\[ARRAY\]\.reset is 524296 \(0x80008\) but the parameters give "
     r"262148"),
    ("MAX_K reset edited", _reg_set("MAX_K", "reset", 64), r"registers\.registers\[MAX_K\]"
                                                          r"\.reset is 64 but the parameters "
                                                          r"give 256"),
    ("ID reset a string", _reg_set("ID", "reset", "0x4D554C46"),
     r"registers\.registers\[ID\]\.reset is a string \"0x4D554C46\", but the parameters give "
     r"an integer"),
    ("reset a boolean", _reg_set("CONTROL", "reset", False),
     r"registers\.registers\[CONTROL\]\.reset is a boolean false, but the parameters give an "
     r"integer 0"),
    ("field bits edited", lambda d: _field(d, "CONTROL", "start").update(bits=[1, 1]),
     r"registers\.registers\[CONTROL\]\.fields\[start\]\.bits\[0\] is 1 but the parameters "
     r"give 0"),
    # Offsets: negative, huge, strings, floats.
    ("negative offset", _reg_set("STATUS", "offset", -4),
     r"registers\.registers\[STATUS\]\.offset is -4 but the parameters give 12"),
    ("2^40 offset", _reg_set("STATUS", "offset", 1 << 40),
     r"registers\.registers\[STATUS\]\.offset is 1099511627776 \(0x10000000000\)"),
    ("string offset", _reg_set("STATUS", "offset", "12"),
     r"registers\.registers\[STATUS\]\.offset is a string \"12\", but the parameters give an "
     r"integer 12"),
    ("float offset", _reg_set("STATUS", "offset", 12.0),
     r"registers\.registers\[STATUS\]\.offset is 12\.0 but the parameters give 12"),
    ("addr_width edited", _set("registers", "addr_width", value=16),
     r"registers\.addr_width is 16 but the parameters give 12"),
    # Sections, registers and keys deleted or added.
    ("registers deleted", _delete("registers"), r": registers is missing"),
    ("files deleted", _delete("files"), r": files is missing"),
    ("core_errors deleted", _delete("registers", "core_errors"),
     r"registers\.core_errors is missing"),
    ("core error renamed", lambda d: d["registers"]["core_errors"].update(
        PACKETS=d["registers"]["core_errors"].pop("PACKET")),
     r"registers\.core_errors\.PACKET is missing"),
    ("STATUS deleted", lambda d: d["registers"]["registers"].remove(_reg(d, "STATUS")),
     r"registers\.registers \(entries\) is \d+ but the parameters give \d+"),
    ("STATUS renamed", _reg_set("STATUS", "name", "STATE"),
     r"registers\.registers\[STATUS\]\.name is \"STATE\" but the parameters give \"STATUS\""),
    ("registers a list", _set("registers", value=[]),
     r"registers is a list \[\], but the parameters give an object"),
    ("register list a dict", _set("registers", "registers", value={}),
     r"registers\.registers is an object"),
    ("extra register key", _reg_set("ID", "secret", 1),
     r"registers\.registers\[ID\]\.secret is not a field of a core manifest"),
    ("extra top-level key", _set("x", value=1), r": x is not a field of a core manifest"),
    ("_path in the file", _set("_path", value="/etc"), r"_path is not a field"),
    ("engine derived edited", _set("engine", "derived", "acc_width", value=40),
     r"engine\.derived\.acc_width is 40 but the parameters give \d+"),
    ("stream width edited", _set("stream", "width", value=32),
     r"stream\.width is 32 but the parameters give 64"),
    ("vector beats edited", _set("stream", "vector_beats", "ACTS", value=2),
     r"stream\.vector_beats\.ACTS is 2 but the parameters give 1"),
    ("buffer depth edited", _set("core", "buffers", "fmap", "depth", value=4096),
     r"core\.buffers\.fmap\.depth is 4096 but the parameters give 512"),
    ("hazard window edited", _set("core", "hazard_window", value=1),
     r"core\.hazard_window is 1 but the parameters give \d+"),
    ("port width edited", _port_width, r"ports\[\w+\]\.width is \d+ but the parameters give"),
    ("clock edited", _set("clock", value="clk2"), r"clock is \"clk2\" but the parameters give"),
    ("manifest_version edited", _set("manifest_version", value=2),
     r"manifest_version is 2 but the parameters give 1"),
    # Parameters: types, keys, ranges.
    ("stream_width a float", _set("parameters", "stream_width", value=64.0),
     r"parameters\.stream_width must be an integer, not a number 64\.0"),
    ("rows a boolean", _set("parameters", "engine", "rows", value=True),
     r"parameters\.engine\.rows must be an integer, not a boolean true"),
    ("rows a string", _set("parameters", "engine", "rows", value="4"),
     r"parameters\.engine\.rows must be an integer, not a string \"4\""),
    ("pe an integer", _set("parameters", "engine", "pe", value=0),
     r"parameters\.engine\.pe must be a string, not an integer 0"),
    ("pe unknown", _set("parameters", "engine", "pe", value="div"),
     r"parameters\.engine\.pe: pe must be one of shift, adder, mult, not 'div'"),
    ("max_k 2^40", _set("parameters", "engine", "max_k", value=1 << 40),
     r"parameters\.engine\.max_k: max_k must be an integer in \[4, \d+\], not 1099511627776"),
    ("negative buffer", _set("parameters", "acc_entries", value=-1),
     r"parameters\.acc_entries: acc_entries must be an integer in \[1, 65536\], not -1"),
    ("parameters a list", _set("parameters", value=[1, 2]),
     r"parameters must be an object, not a list"),
    ("engine null", _set("parameters", "engine", value=None),
     r"parameters\.engine must be an object, not null"),
    ("parameter deleted", _delete("parameters", "fmap_vectors"),
     r"parameters\.fmap_vectors is missing"),
    ("parameter added", _set("parameters", "engine", "depth", value=3),
     r"parameters\.engine\.depth is not a core parameter"),
    ("parameters deleted", _delete("parameters"), r": parameters is missing"),
    # Informational fields.
    ("kind edited", _set("kind", value="array"), r"is not a core manifest .* but kind 'array'"),
    ("kind deleted", _delete("kind"), r"is not a core manifest .* but kind null"),
    ("top a keyword", _set("top", value="module"),
     r"top must not be a Verilog/SystemVerilog keyword"),
    ("top a path", _set("top", value="../x"), r"top must be a Verilog identifier"),
    ("top a number", _set("top", value=7), r"top must be a Verilog identifier"),
    ("version a number", _set("mulfree_version", value=1),
     r"mulfree_version must be a version string"),
    ("verilog outside", _set("files", "verilog", value="../secret.v"),
     r"files\.verilog is \"\.\./secret\.v\" but the parameters give"),
    ("verilog absolute", _set("files", "verilog", value="/etc/passwd"),
     r"files\.verilog is \"/etc/passwd\" but the parameters give"),
    ("files a string", _set("files", value="x.v"), r"files is a string \"x\.v\", but the "
                                                   r"parameters give an object"),
]

# (id, file text, regex)
TEXTS = [
    ("invalid JSON", "{", r"the core manifest is not valid JSON"),
    ("a JSON list", "[1, 2]", r"the core manifest must be a JSON object, not a list"),
    ("a JSON string", '"core"', r"must be a JSON object, not a string"),
    ("deep nesting", "[" * 100_000 + "]" * 100_000, r"nests deeper than 32 levels"),
    ("deep object", '{"a":' * 5000 + "1" + "}" * 5000, r"nests deeper than 32 levels"),
    ("NaN", '{"kind": NaN}', r"NaN is not a number JSON allows"),
    ("duplicate key", '{"kind": "core", "kind": "core"}', r"key 'kind' appears twice"),
    ("empty file", "", r"not valid JSON"),
    ("not UTF-8", b"\xff\xfe{}", r"not UTF-8"),
    ("float overflow", '{"kind": 1e999}', r"overflows a 64-bit float"),
]


def _edited(pristine, tmp_path, edit):
    path = _copy(pristine, tmp_path / "design")
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return path, doc


def _one_line(message, regex):
    import re
    assert "\n" not in message, message
    assert re.search(regex, message), message


@pytest.mark.parametrize("name, edit, regex", EDITS, ids=[e[0] for e in EDITS])
def test_edited_manifest_is_refused_by_the_loader(pristine, tmp_path, name, edit, regex):
    path, doc = _edited(pristine, tmp_path, edit)
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    _one_line(str(info.value), regex)
    assert str(info.value).startswith(f"--config {str(path)!r}")
    assert info.value.param == "--config"
    if "_path" in doc:
        return                          # the runtime's own key: allowed in a dict it made
    # The same document as a dict: the compiler and the device refuse it too.
    with pytest.raises(ManifestError) as info:
        check_manifest(doc)
    _one_line(str(info.value), regex)
    with pytest.raises(CompileError) as info:
        compile_model(None, doc)
    _one_line(str(info.value), regex)


@pytest.mark.parametrize("name, text, regex", TEXTS, ids=[t[0] for t in TEXTS])
def test_unreadable_manifest_is_refused(tmp_path, name, text, regex):
    path = tmp_path / "core.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    _one_line(str(info.value), regex)
    assert str(info.value).startswith(f"--config {str(path)!r}")


@pytest.mark.parametrize("value, regex", [
    (None, r"--config must be a core manifest: a dict, a \.json file or its folder, not "
           r"NoneType"),
    (3, r"not int"),
    ("", r"--config must name a core manifest file or folder, not ''"),
    ("a\0b", r"--config must name a core manifest file or folder"),
    ("/nonexistent/core.json", r"--config '/nonexistent/core.json': no such core manifest"),
])
def test_manifest_argument_is_checked(value, regex):
    with pytest.raises(ManifestError) as info:
        load_manifest(value)
    _one_line(str(info.value), regex)


def test_unedited_manifest_round_trips(pristine, tmp_path):
    """The generated manifest loads (file and folder), and so does a renamed core's."""
    doc = load_manifest(pristine / f"{TOP}.json")
    assert doc["_path"] == str(pristine / f"{TOP}.json")
    assert load_manifest(pristine)["top"] == TOP
    assert check_manifest(core_manifest(CORE))[1] == CORE
    named = CORE.__class__.from_params({**CORE.params(), "name": "mycore"})
    _, j_path = write_core_design(named, tmp_path)
    doc, cfg = check_manifest(load_manifest(j_path))
    assert cfg.top_name == "mycore" and cfg == CORE


def test_folder_with_broken_files(pristine, tmp_path):
    """Invalid JSON, lists and other kinds in a folder are skipped (and named when nothing
    is found); several core manifests are named; a link out of the folder is not followed."""
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.json").write_text("{")
    (folder / "b.json").write_text("[1]")
    (folder / "c.json").write_text('{"kind": "array"}')
    (folder / "d.json").write_text("[" * 10_000)
    with pytest.raises(ManifestError) as info:
        load_manifest(folder)
    _one_line(str(info.value), r"holds no core manifest .*; skipped: a\.json .*b\.json .*"
                               r"c\.json \(kind \"array\"\)")
    (folder / "e.json").symlink_to(pristine / f"{TOP}.json")
    with pytest.raises(ManifestError, match="holds no core manifest"):
        load_manifest(folder)
    _copy(pristine, folder)
    assert load_manifest(folder)["top"] == TOP
    (folder / "z.json").write_text((pristine / f"{TOP}.json").read_text())
    with pytest.raises(ManifestError) as info:
        load_manifest(folder)
    _one_line(str(info.value), r"holds 2 core manifests .*; name one")


def test_verilog_outside_the_folder_via_a_symlink(pristine, tmp_path):
    """``<top>.v`` may not be a link out of the manifest's folder: the loader, the simulated
    board's build and ``open_device`` refuse it before anything is compiled."""
    from mulfree.sim.board import build_sim_core
    secret = tmp_path / "secret.v"
    secret.write_text("// not yours\n")
    path = _copy(pristine, tmp_path / "design")
    (tmp_path / "design" / f"{TOP}.v").unlink()
    (tmp_path / "design" / f"{TOP}.v").symlink_to(secret)
    regex = r"files\.verilog '\w+\.v' leads outside"
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    _one_line(str(info.value), regex)
    never = tmp_path / "never"
    with pytest.raises(ManifestError, match=regex):
        build_sim_core(path, build_dir=never)
    with pytest.raises(ManifestError, match=regex):
        open_device("sim", path, build_dir=never, cache_dir=never)
    assert not never.exists()


def test_verilog_must_be_a_regular_file(pristine, tmp_path):
    from mulfree.sim.board import build_sim_core
    path = _copy(pristine, tmp_path / "design")
    (tmp_path / "design" / f"{TOP}.v").unlink()
    (tmp_path / "design" / f"{TOP}.v").mkdir()
    with pytest.raises(ManifestError, match=r"must be a regular file"):
        build_sim_core(path, build_dir=tmp_path / "never")
    assert not (tmp_path / "never").exists()


# Both backends, the device and the simulated board refuse before touching anything -----------

class RecordingBackend:
    """A backend whose registers read what the core's manifest says; records every access."""

    name, lock_path, max_packet_bytes, beat_bytes, cycles = "fake", None, None, 8, None

    def __init__(self, manifest):
        self.values = {r["offset"]: r["reset"] for r in manifest["registers"]["registers"]}
        self.accesses = []
        self.closed = False

    def read32(self, offset):
        self.accesses.append(("r", offset))
        return self.values.get(offset, 0)

    def write32(self, offset, value):
        self.accesses.append(("w", offset, value))

    def abort(self):
        self.accesses.append(("abort",))

    def close(self):
        self.closed = True


@pytest.mark.parametrize("name, edit, regex", EDITS[:20:3], ids=[e[0] for e in EDITS[:20:3]])
def test_backends_refuse_before_touching_anything(pristine, tmp_path, name, edit, regex):
    from mulfree.host.zynq import DmaBuffer, ZynqBackend, open_zynq
    from mulfree.sim.board import SimCore, build_sim_core
    path, doc = _edited(pristine, tmp_path, edit)
    never = tmp_path / "never"
    backend = RecordingBackend(core_manifest(CORE))
    with pytest.raises(ManifestError, match=regex):
        Device(backend, doc)
    assert backend.accesses == [] and backend.closed
    with pytest.raises(ManifestError, match=regex):
        open_device("sim", path, build_dir=never, cache_dir=never)
    with pytest.raises(ManifestError, match=regex):
        open_device("zynq", path, sysfs_root=never, dev_root=never)
    with pytest.raises(ManifestError, match=regex):
        open_zynq(doc, sysfs_root=never, dev_root=never)
    core, dma = RecordingBackend(core_manifest(CORE)), RecordingBackend(core_manifest(CORE))
    with pytest.raises(ManifestError, match=regex):
        ZynqBackend(core, dma, DmaBuffer(np.zeros(4096, np.uint8), 0x1000), manifest=doc)
    assert core.accesses == dma.accesses == []
    with pytest.raises(ManifestError, match=regex):
        build_sim_core(path, build_dir=never)
    with pytest.raises(ManifestError, match=regex):
        SimCore(never / "lib.so", doc)
    assert not never.exists()


@pytest.mark.parametrize("name, edit, regex", EDITS[::4], ids=[e[0] for e in EDITS[::4]])
def test_cli_refuses_edited_manifests(pristine, exported, tmp_path, run_main, capsys, name,
                                      edit, regex):
    """``mulfree compile`` and ``mulfree run --config``: exit 2, one line, nothing built."""
    model, folder = exported
    path, _ = _edited(pristine, tmp_path, edit)
    never = tmp_path / "never"
    for argv in (["compile", str(folder / "model"), "--config", str(path)],
                 ["run", str(folder / "model"), "--config", str(path), "--input",
                  str(folder / "x.npy"), "--no-check", "--build-dir", str(never)]):
        status, out, err = run_main(argv, capsys)
        assert status == 2, err
        assert err.count("\n") == 1, err
        _one_line(err.strip(), regex)
        assert f"--config {str(path)!r}" in err
    assert not never.exists()


@pytest.mark.parametrize("name, text, regex", TEXTS[:4], ids=[t[0] for t in TEXTS[:4]])
def test_cli_refuses_unreadable_manifests(exported, tmp_path, run_main, capsys, name, text,
                                          regex):
    model, folder = exported
    design = tmp_path / "d"
    design.mkdir()
    (design / "core.json").write_text(text)
    for config in (design / "core.json", design):
        status, out, err = run_main(["compile", str(folder / "model"), "--config",
                                     str(config)], capsys)
        assert status == 2, err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert "--config" in err


def test_cli_accepts_the_unedited_manifest(pristine, exported, run_main, capsys):
    model, folder = exported
    status, out, err = run_main(["compile", str(folder / "model"), "--config",
                                 str(pristine / f"{TOP}.json")], capsys)
    assert status == 0, err


# The Device API ---------------------------------------------------------------------------------

@pytest.fixture
def fake_device():
    manifest = core_manifest(CORE)
    backend = RecordingBackend(manifest)
    dev = Device(backend, manifest)
    return dev, backend


@pytest.mark.parametrize("call", [
    lambda d: d.read("ID"), lambda d: d.write("SCRATCH", 1), lambda d: d.status(),
    lambda d: d.counters(), lambda d: d.identity(), lambda d: d.check_identity(),
    lambda d: d.soft_reset(), lambda d: d.field("STATUS", "idle"),
    lambda d: d.load(None), lambda d: d.run(np.zeros((1, 7, 6, 5), np.int64)),
    lambda d: d.infer(np.zeros((1, 7, 6, 5))), lambda d: d.execute([], 8),
    lambda d: d.write_field("CONTROL", "start", 1),
])
def test_closed_device_says_so(fake_device, call):
    dev, backend = fake_device
    dev.close()
    dev.close()                                     # idempotent
    seen = len(backend.accesses)
    with pytest.raises(DeviceError, match="^the device is closed$"):
        call(dev)
    assert len(backend.accesses) == seen and dev.closed


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf"), "5", True])
def test_bad_timeouts_are_refused(fake_device, timeout):
    dev, backend = fake_device
    for value in (timeout, None):
        with pytest.raises(InputError, match="timeout must be a finite number of seconds > 0"):
            Device(RecordingBackend(core_manifest(CORE)), core_manifest(CORE), timeout=value)
    seen = len(backend.accesses)
    with pytest.raises(InputError, match="timeout must be a finite number of seconds > 0"):
        dev.execute([], 8, timeout=timeout)
    assert len(backend.accesses) == seen
    with pytest.raises(InputError, match="timeout must be"):
        open_device("sim", CORE, timeout=timeout, cache_dir="/nonexistent/never")


@pytest.mark.parametrize("call, param, regex", [
    (lambda d: d.read("NOPE"), "name", "name must be a register"),
    (lambda d: d.read(["ID"]), "name", "name must be a register"),
    (lambda d: d.write("SCRATCH", -1), "value", r"value must be an integer in \[0, 0xffffffff\]"),
    (lambda d: d.write("SCRATCH", 1 << 32), "value", "value must be an integer"),
    (lambda d: d.write("SCRATCH", 1.5), "value", "value must be an integer"),
    (lambda d: d.field("STATUS", "nope"), "field_name", "field_name must be a field of STATUS"),
    (lambda d: d.field("STATUS", "idle", "3"), "value", "value must be an integer"),
    (lambda d: d.write_field("CONTROL", "start", None), "value", "value must be an integer"),
    (lambda d: d.load("program"), "program", "program must be a Program"),
    (lambda d: d.execute([], -1), "out_nbytes", "out_nbytes must be an integer >= 0"),
    (lambda d: d.execute([["a"]], 8), "packets", "packets must be a list of byte arrays"),
])
def test_device_api_refusals(fake_device, call, param, regex):
    dev, backend = fake_device
    seen = len(backend.accesses)
    with pytest.raises(InputError, match=regex) as info:
        call(dev)
    assert info.value.param == param and "\n" not in str(info.value)
    assert len(backend.accesses) == seen


def test_open_device_kind_is_checked():
    with pytest.raises(InputError, match=r"device must be one of sim, zynq, not \['sim'\]"):
        open_device(["sim"], CORE)


# The device lock ------------------------------------------------------------------------------

def test_lock_refuses_a_planted_symlink(tmp_path):
    """A symbolic link at the lock path is never followed: its target is not truncated."""
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    (locks / "dev.lock").symlink_to(target)
    with pytest.raises(DeviceError, match="is a symbolic link; refusing to follow it"):
        DeviceLock(locks / "dev.lock")
    assert target.read_text() == "keep me\n"
    (locks / "dev.lock").unlink()
    (locks / "dev.lock").symlink_to(tmp_path / "missing")       # dangling: not created either
    with pytest.raises(DeviceError, match="symbolic link"):
        DeviceLock(locks / "dev.lock")
    assert not (tmp_path / "missing").exists()


def test_lock_refuses_hard_links_and_other_files(tmp_path):
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    os.link(target, locks / "dev.lock")
    with pytest.raises(DeviceError, match="has 2 hard links; refusing"):
        DeviceLock(locks / "dev.lock")
    assert target.read_text() == "keep me\n"
    (locks / "dev.lock").unlink()
    (locks / "dev.lock").mkdir()
    with pytest.raises(DeviceError, match="cannot open the lock file|not a regular file"):
        DeviceLock(locks / "dev.lock")
    os.rmdir(locks / "dev.lock")
    os.mkfifo(locks / "dev.lock")
    with pytest.raises(DeviceError, match="not a regular file"):
        DeviceLock(locks / "dev.lock")


def test_lock_refuses_a_file_of_another_user(tmp_path, monkeypatch):
    """A lock file owned by someone else is neither truncated nor used."""
    import tempfile
    from mulfree.host import device_lock
    if os.geteuid() == 0:
        locks = tmp_path / "locks"
        locks.mkdir(mode=0o700)
        path = locks / "dev.lock"
        path.write_text("4242\n")
        os.chown(path, 4242, 4242)
    else:
        # The same branch seen as another user: our file in the shared sticky folder (owned
        # by root, so the folder check passes whatever the user).
        path = Path(tempfile.gettempdir()) / f"mulfree-test-{os.getpid()}.lock"
        path.write_text("4242\n")
        monkeypatch.setattr(device_lock.os, "geteuid", lambda: os.getuid() + 1)
    try:
        with pytest.raises(DeviceError, match=r"belongs to uid \d+, not to this user, and "
                                              r"nobody holds it"):
            DeviceLock(path)
        assert path.read_text() == "4242\n"
    finally:
        if path.parent != tmp_path / "locks":
            path.unlink()


def test_lock_folder_is_checked(tmp_path):
    folder = tmp_path / "new"
    check_lock_dir(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(DeviceError, match=r"writable by other users without the sticky bit "
                                          r"\(mode 0777\)"):
        DeviceLock(open_dir / "dev.lock")
    assert not (open_dir / "dev.lock").exists()
    open_dir.chmod(0o1777)                         # like /tmp and /run/lock: accepted
    DeviceLock(open_dir / "dev.lock").release()
    (tmp_path / "file").write_text("")
    with pytest.raises(DeviceError, match="is not a folder"):
        DeviceLock(tmp_path / "file" / "dev.lock")


def test_lock_holds_the_pid_and_is_removed_on_release(tmp_path):
    path = tmp_path / "locks" / "dev.lock"
    lock = DeviceLock(path)
    assert path.read_text() == f"{os.getpid()}\n"
    assert stat.S_IMODE(path.stat().st_mode) & 0o022 == 0
    # A second open in this process is refused and leaves the holder's PID in place.
    with pytest.raises(DeviceBusy, match=f"in use by another process \\(pid {os.getpid()}"):
        DeviceLock(path)
    assert path.read_text() == f"{os.getpid()}\n"
    lock.release()
    lock.release()
    assert not path.exists()
    with DeviceLock(path):
        assert path.exists()
    assert not path.exists()


def test_lock_survives_a_holder_that_was_killed(tmp_path):
    path = tmp_path / "dev.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from mulfree.host.device_lock import DeviceLock
            DeviceLock({str(path)!r})
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DeviceBusy, match=f"pid {holder.pid}"):
            DeviceLock(path)
    finally:
        holder.kill()
        holder.wait()
    DeviceLock(path).release()                      # its stale file is ours: reused


# The Zynq configuration ------------------------------------------------------------------------

@pytest.mark.parametrize("change, regex", [
    ({"core_base": 0, "core_size": 1 << 31}, r"core_size must be an integer in \[0x4, "
                                             r"0x40000000\], not 2147483648"),
    ({"core_base": 0}, r"core_base 0x0 with core_size 0x1000 must lie inside the programmable "
                       r"logic's address range"),
    ({"core_base": 0x0010_0000}, r"must lie inside the programmable logic"),
    ({"core_base": 0xFFFF_F000}, r"must lie inside the programmable logic"),
    ({"core_base": 0x4040_0000, "core_size": 0x1_0000}, r"the core's window 0x40400000\+0x10000 "
                                                        r"overlaps the DMA's"),
    ({"core_base": 0x4040_8000}, r"overlaps the DMA's"),
    ({"core_base": 1 << 40}, r"core_base must be an integer in \[0x0, 0xffffffff\]"),
    ({"core_base": -4096}, r"core_base must be an integer"),
    ({"core_base": "0x43c00000"}, r"core_base must be an integer"),
    ({"core_base": 0x43C0_0000 * 1.0}, r"core_base must be an integer"),
    ({"core_size": True}, r"core_size must be an integer"),
    ({"core_size": 0x1800}, r"core_size must be a power of two, not 0x1800"),
    ({"dma_size": 0x40}, r"dma_size must be at least 0x5c"),
    ({"dma_base": 0x4040_0100}, r"dma_base must be a multiple of dma_size"),
    ({"dma_length_bits": 27}, r"dma_length_bits must be an integer in \[8, 26\], not 27"),
    ({"core_uio": "../mem"}, r"core_uio must be a device name"),
    ({"core_uio": ".."}, r"core_uio must be a device name"),
    ({"dma_uio": "a/b"}, r"dma_uio must be a device name"),
    ({"udmabuf": "../../dev/mem"}, r"udmabuf must be a device name"),
    ({"udmabuf": "x" * 65}, r"udmabuf must be a device name"),
    ({"udmabuf": 0}, r"udmabuf must be a device name"),
    ({"dma_uio": "mulfree-core"}, r"dma_uio must name another UIO device than core_uio"),
    ({"use_devmem": 1}, r"use_devmem must be True or False"),
])
def test_zynq_config_refusals(tmp_path, change, regex):
    with pytest.raises(ZynqConfigError, match=regex) as info:
        ZynqConfig(**change)
    assert "\n" not in str(info.value)
    path = tmp_path / "zynq.json"
    path.write_text(json.dumps({**ZynqConfig().as_dict(), **change}))
    with pytest.raises(FileCheckError, match=regex) as info:
        load_zynq_config(path)
    assert str(info.value).startswith(f"--zynq-config {str(path)!r}: ")
    assert info.value.param == "--zynq-config"


@pytest.mark.parametrize("text, regex", [
    ("{", r"the Zynq config is not valid JSON"),
    ("[]", r"must be a JSON object, not a list"),
    ("[" * 50_000, r"nests deeper than 32 levels"),
    ('{"core_base": 1, "core_base": 2}', r"appears twice"),
    ('{"core_bass": 1}', r"'core_bass' is not a ZynqConfig field \(allowed: core_base, "),
    ('{"core_base": {"a": 1}}', r"core_base must be an integer"),
    ('{"core_base": 1.5e300}', r"core_base must be an integer"),
])
def test_zynq_config_file_refusals(tmp_path, text, regex):
    path = tmp_path / "zynq.json"
    path.write_text(text)
    with pytest.raises(FileCheckError, match=regex) as info:
        load_zynq_config(path, "--zynq-config")
    assert "\n" not in str(info.value) and str(info.value).startswith("--zynq-config ")
    status = zynq.check_main(["--check", "--manifest", "m.json", "--zynq-config", str(path)])
    assert status == 2


def test_zynq_config_round_trip(tmp_path):
    path = tmp_path / "zynq.json"
    cfg = ZynqConfig(core_base=0x8000_0000, use_devmem=True)
    path.write_text(json.dumps(cfg.as_dict()))
    assert load_zynq_config(path) == cfg
    path.write_text("{}")
    assert load_zynq_config(path) == ZynqConfig()


def test_open_zynq_checks_the_window_against_the_manifest(tmp_path):
    """A core window smaller than the register map is refused before any device is opened."""
    from mulfree.host.zynq import open_zynq
    manifest = core_manifest(CORE)
    size = manifest["registers"]["size"]
    assert size == CORE.register_map.size > 0x80
    with pytest.raises(ZynqConfigError, match=f"core_size 0x80 does not cover the core's "
                                              f"register map of {size:#x} bytes"):
        open_zynq(manifest, ZynqConfig(core_size=0x80), sysfs_root=tmp_path / "none",
                  dev_root=tmp_path / "none")


def test_check_main_refuses_an_edited_manifest(pristine, tmp_path, capsys):
    path, _ = _edited(pristine, tmp_path, _set("parameters", "engine", "max_k", value=1024))
    status = zynq.check_main(["--check", "--manifest", str(path)])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert "registers.registers[WIDTHS].reset" in err


def test_lock_folder_of_the_zynq_backend_is_safe(tmp_path, monkeypatch):
    """The backend's lock folder is a shared one only if others cannot replace files in it."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    assert not zynq_backend._safe_shared_dir(shared)
    shared.chmod(0o1777)
    assert zynq_backend._safe_shared_dir(shared)
    assert not zynq_backend._safe_shared_dir(tmp_path / "missing")
    monkeypatch.setattr(zynq_backend.tempfile, "gettempdir", lambda: str(tmp_path / "missing"))
    monkeypatch.setattr(zynq_backend, "_safe_shared_dir", lambda folder: False)
    assert zynq_backend._lock_dir() == Path.home() / ".cache" / "mulfree" / "lock"


def test_checking_leaves_the_dict_unchanged():
    """Checking leaves the caller's dict as it was (no keys added or removed)."""
    doc = core_manifest(CORE)
    before = copy.deepcopy(doc)
    check_manifest(doc)
    assert doc == before


@pytest.mark.parametrize("name", ["../mem", "..", "", "a/b", "x" * 32, None, "buf@0", "a:b", ".x"])
def test_udmabuf_name_is_a_plain_device_name(tmp_path, name):
    from mulfree.host.zynq import UdmaBuf
    with pytest.raises(ValueError, match="name must be a device name"):
        UdmaBuf(name, sysfs_root=tmp_path, dev_root=tmp_path)
