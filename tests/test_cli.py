"""Tests of ``mulfree gen``: files, manifest against the Verilog, errors, atomicity.

The command runs both in-process (:func:`mulfree.flows.cli.main`) and as the installed
``mulfree`` console script.
"""

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mulfree.gen import emit

from mulfree.flows import cli
from mulfree.params import safe_io
from mulfree.params.config import ArrayConfig


MULFREE = Path(sys.executable).parent / "mulfree"

PORT_RE = re.compile(r"^\s*(input|output)\s+(?:signed\s+)?(?:\[(\d+):(\d+)\]\s*)?(\w+)\s*;",
                     re.MULTILINE)


def run_command(argv, cwd):
    proc = subprocess.run([str(MULFREE), *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def verilog_ports(text, module):
    """``{name: (direction, width)}`` of the ``input``/``output`` declarations of ``module``."""
    match = re.search(rf"^module\s+{re.escape(module)}\s*\((.*?)^endmodule", text,
                      re.MULTILINE | re.DOTALL)
    assert match, f"module {module} not found"
    ports = {}
    for direction, msb, lsb, name in PORT_RE.findall(match.group(1)):
        width = int(msb) - int(lsb) + 1 if msb else 1
        assert name not in ports
        ports[name] = (direction, width)
    return ports


def listing(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def wrote(out, top):
    """What ``mulfree gen`` logs on stderr: the two files it wrote."""
    return "".join(f"wrote {Path(out) / top}{suffix}\n" for suffix in (".v", ".json"))


def gen_args(cfg, out):
    args = ["gen", "--pe", cfg.pe, "--rows", str(cfg.rows), "--cols", str(cfg.cols),
            "--act-bits", str(cfg.act_bits), "--max-k", str(cfg.max_k), "-o", str(out)]
    if cfg.pe != "adder":
        args += ["--weight-bits", str(cfg.weight_bits)]
    return args


CONFIGS = [
    ArrayConfig(pe="shift", rows=3, cols=2, act_bits=8, weight_bits=4, max_k=1024),
    ArrayConfig(pe="adder", rows=2, cols=3, act_bits=6, max_k=50),
    ArrayConfig(pe="mult", rows=2, cols=2, act_bits=5, weight_bits=7, max_k=2 ** 20),
]


def check_design(cfg, folder):
    """The two files exist, and the manifest agrees with the config and the Verilog."""
    assert listing(folder) == sorted([f"{cfg.top_name}.v", f"{cfg.top_name}.json"])
    text = (folder / f"{cfg.top_name}.v").read_text()
    doc = json.loads((folder / f"{cfg.top_name}.json").read_text())

    assert doc["top"] == cfg.top_name
    assert doc["files"]["verilog"] == f"{cfg.top_name}.v"
    assert doc["parameters"] == {"pe": cfg.pe, "rows": cfg.rows, "cols": cfg.cols,
                                 "act_bits": cfg.act_bits, "weight_bits": cfg.weight_bits,
                                 "max_k": cfg.max_k}
    assert doc["derived"]["acc_width"] == cfg.acc_width
    assert doc["derived"]["acc_range"] == list(cfg.acc_range)
    assert doc["derived"]["term_range"] == list(cfg.term_range)
    assert doc["timing"]["latency"] == cfg.latency

    ports = {p["name"]: (p["direction"], p["width"]) for p in doc["ports"]}
    assert ports == verilog_ports(text, cfg.top_name)
    # Payload widths, from the packing rule: element i of b-bit values in [i*b, (i+1)*b).
    assert ports["w__payload"] == ("input", cfg.cols * cfg.weight_bits)
    assert ports["x__payload"] == ("input", cfg.rows * cfg.act_bits + cfg.cols * cfg.acc_width
                                   + 1)
    assert ports["y__payload"] == ("output", cfg.cols * cfg.acc_width + 1)
    for port in doc["ports"]:
        if "fields" in port:
            offset = 0
            for field in port["fields"]:
                assert field["offset"] == offset, (port["name"], field)
                offset += field["width"]
            assert offset == port["width"]
    return doc


# Success ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.pe)
def test_gen_in_process(cfg, tmp_path, capsys, run_main):
    out = tmp_path / "new" / "folder"
    status, stdout, stderr = run_main(gen_args(cfg, out), capsys)
    # stderr holds the status lines only (logging, INFO): the files written
    assert (status, stderr) == (0, wrote(out, cfg.top_name))
    assert f"accumulator {cfg.acc_width} bits" in stdout
    check_design(cfg, out)


def test_gen_command(tmp_path):
    cfg = ArrayConfig(pe="shift", rows=2, cols=3, act_bits=4, weight_bits=3, max_k=16)
    status, stdout, stderr = run_command(gen_args(cfg, "out"), cwd=tmp_path)
    assert (status, stderr) == (0, wrote("out", cfg.top_name)), stderr
    check_design(cfg, tmp_path / "out")


def test_gen_name_and_default_output(tmp_path, capsys, monkeypatch, run_main):
    monkeypatch.chdir(tmp_path)
    status, _, stderr = run_main(["gen", "--rows", "2", "--cols", "2", "--max-k", "4",
                                  "--name", "my_top"], capsys)
    assert (status, stderr) == (0, wrote("out", "my_top"))
    cfg = ArrayConfig(rows=2, cols=2, max_k=4, name="my_top")
    assert check_design(cfg, tmp_path / "out")["top"] == "my_top"


def test_gen_overwrites_previous(tmp_path, capsys, run_main):
    cfg = CONFIGS[0]
    (tmp_path / f"{cfg.top_name}.v").write_text("previous\n")
    (tmp_path / f"{cfg.top_name}.json").write_text("{}\n")
    assert run_main(gen_args(cfg, tmp_path), capsys)[0] == 0
    check_design(cfg, tmp_path)


def test_help_mentions_every_option(capsys, run_main):
    status, stdout, _ = run_main(["gen", "--help"], capsys)
    assert status == 0
    for option in ("--pe", "--rows", "--cols", "--act-bits", "--weight-bits", "--max-k",
                   "--name", "-o", "--output"):
        assert re.search(rf"(?<![\w-]){re.escape(option)}\b", stdout), option


def test_bench_help_describes_every_benchmark(capsys, run_main):
    """``bench --help`` describes each benchmark it accepts, one line each, before the options."""
    from mulfree.flows.bench import _which
    status, stdout, _ = run_main(["bench", "--help"], capsys)
    assert status == 0
    described = stdout.split("positional arguments")[0]
    names = [w for w in ("gen", "synth", "tree", "shiftunit", "core", "coresynth", "board",
                         "networks", "pnr") if _which(w)]
    for name in names:
        assert re.search(rf"^  {name} +\S", described, re.M), name
    with pytest.raises(argparse.ArgumentTypeError):
        _which("everything")

BAD = [
    (["--rows", "0"], "--rows", "0"),
    (["--cols", "-3"], "--cols", "-3"),
    (["--act-bits", "17"], "--act-bits", "17"),
    (["--pe", "shift", "--weight-bits", "9"], "--weight-bits", "9"),
    (["--pe", "foo"], "--pe", "foo"),
    (["--max-k", "0"], "--max-k", "0"),
    (["--rows", "abc"], "--rows", "abc"),
    (["--pe", "adder", "--weight-bits", "4"], "--weight-bits", "4"),
    (["--pe", "shift", "--act-bits", "16", "--weight-bits", "6", "--max-k", "2147483648"],
     "--max-k", "2147483648"),
    (["--name", "1top"], "--name", "1top"),
]


def check_error(status, stdout, stderr, option, value):
    assert status == 2
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert option in lines[0], lines[0]
    assert re.search(rf"(?<![\w-]){re.escape(value)}(?!\w)", lines[0]), lines[0]
    assert "wrote" not in stdout


@pytest.mark.parametrize("args, option, value", BAD, ids=lambda a: " ".join(a)
                         if isinstance(a, list) else None)
def test_bad_input_in_process(args, option, value, tmp_path, capsys, run_main):
    status, stdout, stderr = run_main(["gen", *args, "-o", str(tmp_path / "out")], capsys)
    check_error(status, stdout, stderr, option, value)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("args, option, value", BAD[:7], ids=lambda a: " ".join(a)
                         if isinstance(a, list) else None)
def test_bad_input_command(args, option, value, tmp_path):
    status, stdout, stderr = run_command(["gen", *args, "-o", "out"], cwd=tmp_path)
    check_error(status, stdout, stderr, option, value)
    assert listing(tmp_path) == []


@pytest.mark.parametrize("sub", [None, "below"])
def test_output_is_a_file(sub, tmp_path, capsys, run_main):
    existing = tmp_path / "existing"
    existing.write_text("keep\n")
    target = existing if sub is None else existing / sub
    status, stdout, stderr = run_main(["gen", "--rows", "2", "-o", str(target)], capsys)
    check_error(status, stdout, stderr, "--output", repr(str(existing)))
    assert listing(tmp_path) == ["existing"]
    assert existing.read_text() == "keep\n"


def test_output_is_a_file_command(tmp_path):
    (tmp_path / "existing").write_text("keep\n")
    status, stdout, stderr = run_command(["gen", "-o", "existing"], cwd=tmp_path)
    check_error(status, stdout, stderr, "--output", "'existing'")
    assert listing(tmp_path) == ["existing"]


# Atomicity ----------------------------------------------------------------------------------

def _boom(*args, **kwargs):
    raise RuntimeError("generation failed on purpose")


@pytest.mark.parametrize("step", ["convert_verilog", "manifest"])
def test_failed_generation_keeps_previous(step, tmp_path, capsys, monkeypatch):
    # The failure itself, not main's one-line report of it (see test_cli_hardening).
    monkeypatch.setenv("MULFREE_TRACEBACK", "1")
    cfg = CONFIGS[0]
    previous = tmp_path / f"{cfg.top_name}.v"
    previous.write_text("// previous design\n")
    monkeypatch.setattr(emit, step, _boom)
    with pytest.raises(RuntimeError, match="on purpose"):
        cli.main(gen_args(cfg, tmp_path))
    assert listing(tmp_path) == [previous.name]
    assert previous.read_text() == "// previous design\n"


def test_failed_generation_creates_no_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MULFREE_TRACEBACK", "1")
    monkeypatch.setattr(emit, "convert_verilog", _boom)
    with pytest.raises(RuntimeError):
        cli.main(gen_args(CONFIGS[1], tmp_path / "new"))
    assert listing(tmp_path) == []


def test_failed_write_leaves_no_temporary(tmp_path, monkeypatch):
    # The rename of the second file (the manifest) fails: its temporary must be removed.
    cfg = CONFIGS[2]
    real_replace = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if str(dst).endswith(".json"):
            raise OSError(28, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(safe_io.os, "replace", replace)
    with pytest.raises(OSError):
        emit.write_design(cfg, tmp_path)
    assert len(calls) == 2
    assert listing(tmp_path) == [f"{cfg.top_name}.v"]


def test_failed_write_is_one_line_error(tmp_path, capsys, monkeypatch, run_main):
    def replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safe_io.os, "replace", replace)
    status, stdout, stderr = run_main(gen_args(CONFIGS[1], tmp_path), capsys)
    check_error(status, stdout, stderr, "--output", repr(str(tmp_path)))
    assert "No space left on device" in stderr
    assert listing(tmp_path) == []


# --- mulfree gen --unit shift --------------------------------------------------------------

def test_gen_shift_unit_writes_design(tmp_path, capsys):
    main = cli.main
    from mulfree.params.shift_config import ShiftUnitConfig
    assert main(["gen", "--unit", "shift", "--channels", "6", "--height", "3", "--width", "5",
                 "--act-bits", "4", "-o", str(tmp_path)]) == 0
    cfg = ShiftUnitConfig(channels=6, height=3, width=5, act_bits=4)
    doc = json.loads((tmp_path / f"{cfg.top_name}.json").read_text())
    assert doc["parameters"]["channels"] == 6 and doc["parameters"]["act_bits"] == 4
    verilog = (tmp_path / f"{cfg.top_name}.v").read_text()
    assert f"module {cfg.top_name}(" in verilog


@pytest.mark.parametrize(("argv", "option", "value"), [
    (["--channels", "0"], "--channels", "0"),
    (["--height", "-2"], "--height", "-2"),
    (["--max-shift", "99"], "--max-shift", "99"),
    (["--kernel", "4"], "--kernel", "4"),
])
def test_gen_shift_unit_bad_input(tmp_path, capsys, argv, option, value):
    main = cli.main
    out = tmp_path / "o"
    assert main(["gen", "--unit", "shift", *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0] and value in err[0], err
    assert not out.exists()


# --- mulfree gen --core ----------------------------------------------------------------------

def test_gen_core_writes_design(tmp_path, capsys):
    from mulfree.params.core_config import CoreConfig
    from mulfree.params.config import ArrayConfig
    assert cli.main(["gen", "--core", "--pe", "adder", "--rows", "3", "--cols", "2",
                     "--stream-width", "32", "--fmap-vectors", "64", "--weight-rows", "16",
                     "--acc-entries", "8", "--max-channels", "8", "--out-vectors", "4",
                     "-o", str(tmp_path)]) == 0
    cfg = CoreConfig(engine=ArrayConfig(pe="adder", rows=3, cols=2), stream_width=32,
                     fmap_vectors=64, weight_rows=16, acc_entries=8, max_channels=8,
                     out_vectors=4)
    doc = json.loads((tmp_path / f"{cfg.top_name}.json").read_text())
    assert CoreConfig.from_params(doc["parameters"]) == cfg
    verilog = (tmp_path / f"{cfg.top_name}.v").read_text()
    assert f"module {cfg.top_name}(" in verilog and f"module {cfg.top_name}_column(" in verilog
    assert "s_axis__tdata" in verilog and "m_axis__tlast" in verilog
    assert cli.main(["gen", "--unit", "core", "--arch", "tree", "-o", str(tmp_path / "t")]) == 0


@pytest.mark.parametrize(("argv", "option", "value"), [
    (["--stream-width", "48"], "--stream-width", "48"),
    (["--fmap-vectors", "3"], "--fmap-vectors", "3"),
    (["--acc-entries", "0"], "--acc-entries", "0"),
    (["--max-channels", "-1"], "--max-channels", "-1"),
    (["--rows", "0"], "--rows", "0"),
])
def test_gen_core_bad_input(tmp_path, capsys, argv, option, value):
    out = tmp_path / "o"
    assert cli.main(["gen", "--core", *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0] and value in err[0], err
    assert not out.exists()
