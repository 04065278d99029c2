"""The conventions every ``mulfree`` command shares (issue 18): ``--json FILE`` and ``-v``/``-q``.

Each command's ``--json`` document is checked against an independent computation: the
digests of the files on disk, the manifest or record read back, the figures recomputed
through the Python API the command calls. A bad ``--json`` is refused in one line (exit 2)
before any work, and an existing file is left as it was. ``-q`` and ``-v`` change what
reaches stderr, never stdout.
"""

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from mulfree.flows import cli, train as train_flow
from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.params.shift_config import ShiftUnitConfig
from mulfree.params.version import __version__

from test_report import core, seed_cache, tiny_model


COMMON = ["command", "mulfree_version", "parameters", "files"]


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def check_common(doc, command, files):
    """The keys every document starts with, and its files: exactly ``files``, each with the
    size and digest of what is on disk now."""
    assert list(doc)[:4] == COMMON
    assert doc["command"] == command and doc["mulfree_version"] == __version__
    assert sorted(str(f) for f in files) == sorted(e["path"] for e in doc["files"])
    for entry in doc["files"]:
        path = Path(entry["path"])
        assert entry["bytes"] == path.stat().st_size, entry
        assert entry["sha256"] == sha256(path), entry


def read(path):
    return json.loads(Path(path).read_text())


# gen ----------------------------------------------------------------------------------------

GEN = [
    (["--rows", "3", "--cols", "2", "--max-k", "16"],
     ArrayConfig(rows=3, cols=2, max_k=16)),
    (["--pe", "adder", "--arch", "tree", "--rows", "4", "--cols", "2"],
     ArrayConfig(pe="adder", arch="tree", rows=4, cols=2)),
    (["--unit", "shift", "--channels", "4", "--height", "4", "--width", "4"],
     ShiftUnitConfig(channels=4, height=4, width=4)),
]


@pytest.mark.parametrize("argv, cfg", GEN, ids=["array", "tree", "shift"])
def test_gen_json(argv, cfg, tmp_path, capsys, run_main):
    out = tmp_path / "out"
    status, stdout, err = run_main(["gen", *argv, "-o", str(out), "--json",
                                    str(tmp_path / "gen.json")], capsys)
    assert status == 0, err
    doc = read(tmp_path / "gen.json")
    files = [out / f"{cfg.top_name}.v", out / f"{cfg.top_name}.json"]
    check_common(doc, "gen", files)
    assert doc["parameters"]["config"] == cfg.params()
    assert doc["parameters"]["output"] == str(out)
    manifest = read(files[1])
    summary = doc["manifest"]
    for key in ("kind", "top", "manifest_version", "parameters", "derived", "timing"):
        assert summary.get(key) == manifest.get(key), key
    assert summary["ports"]["count"] == len(manifest["ports"])
    assert summary["ports"]["input_bits"] == sum(p["width"] for p in manifest["ports"]
                                                 if p["direction"] == "input")
    assert doc["summary"] == stdout.splitlines()
    # the --json file is a status line too, after the design's files
    assert err.splitlines() == [f"wrote {f}" for f in files] + [f"wrote {tmp_path / 'gen.json'}"]


def test_gen_core_json(tmp_path, capsys, run_main):
    out = tmp_path / "core"
    status, _, err = run_main(["gen", "--core", "--rows", "2", "--cols", "2", "-o", str(out),
                               "--json", str(tmp_path / "core.json")], capsys)
    assert status == 0, err
    cfg = CoreConfig(engine=ArrayConfig(rows=2, cols=2))
    doc = read(tmp_path / "core.json")
    check_common(doc, "gen", [out / f"{cfg.top_name}.v", out / f"{cfg.top_name}.json"])
    assert doc["parameters"]["unit"] == "core" and doc["parameters"]["config"] == cfg.params()
    manifest = read(out / f"{cfg.top_name}.json")
    assert doc["manifest"]["engines"] == manifest["engines"]
    assert doc["manifest"]["top"] == cfg.top_name


# compile ------------------------------------------------------------------------------------

def test_compile_json(tmp_path, capsys, run_main):
    from dataclasses import asdict
    from mulfree.host.compiler import compile_model, core_for_model
    from mulfree.host.export_format import load_export, write_export
    write_export(tiny_model(), tmp_path / "m")
    status, stdout, err = run_main(["compile", str(tmp_path / "m"), "--rows", "4", "--cols",
                                    "4", "--batch", "3", "--json",
                                    str(tmp_path / "c.json")], capsys)
    assert status == 0, err
    doc = read(tmp_path / "c.json")
    check_common(doc, "compile", [])
    model = load_export(tmp_path / "m")
    program = compile_model(model, core_for_model(model, rows=4, cols=4), batch=3)
    assert doc["core"] == {"top": program.core.top_name, "parameters": program.core.params()}
    assert doc["program"]["nodes"] == [asdict(c) for c in program.costs(3)]
    assert doc["program"]["runs"] == program.runs_for(3) and doc["program"]["batch"] == 3
    core_nodes = [c for c in program.costs(3) if c.placement == "core"]
    assert doc["program"]["totals"]["core"]["cycles"] == sum(c.cycles for c in core_nodes)
    assert doc["program"]["totals"]["core"]["nodes"] == len(core_nodes)
    assert doc["parameters"]["rows"] == 4 and doc["parameters"]["chain"] == "auto"
    assert stdout.strip() == program.describe(3)


# build --------------------------------------------------------------------------------------

def test_build_zynq_json(tmp_path, capsys, run_main):
    out = tmp_path / "b"
    status, _, err = run_main(["build", "--board", "zc706", "--rows", "4", "--cols", "4",
                               "-o", str(out), "--json", str(tmp_path / "b.json")], capsys)
    assert status == 0, err
    doc = read(tmp_path / "b.json")
    record = read(out / "build.json")
    # every file of the folder, with the digests build.json records for them
    check_common(doc, "build", sorted(p for p in out.iterdir() if p.is_file()))
    digests = {Path(e["path"]).name: e["sha256"] for e in doc["files"]}
    assert {k: v["sha256"] for k, v in record["files"].items()} == \
        {k: v for k, v in digests.items() if k != "build.json"}
    build = doc["build"]
    assert build["kind"] == "zynq" and build["board"] == record["board"]["name"] == "zc706"
    assert (build["part"], build["top"]) == (record["part"], record["top"])
    assert build["clock_mhz"] == record["clock_mhz"] == doc["parameters"]["clock_mhz"] == 100
    estimate = build["resources_estimate"]
    assert {k: estimate[k] for k in record["resources_estimate"]} == record["resources_estimate"]
    assert doc["parameters"]["core"] == CoreConfig(engine=ArrayConfig(rows=4, cols=4)).params()


def test_build_ecp5_json(tmp_path, capsys, run_main, monkeypatch):
    """The ECP5 flow's document from what the build returns (the tools stood in for: a real
    build is tests/test_ecp5_build.py's); its progress lines go through logging."""
    from mulfree.flows import build_ecp5
    from mulfree.gen.ecp5_build import ECP5_RECORD

    def fake(cfg, board, output, progress):
        progress("placing")
        folder = Path(output)
        folder.mkdir()
        (folder / "top.bit").write_bytes(b"\xff\x00bits")
        record = {"kind": "ecp5", "board": board.as_dict(), "top": "top", "bitstream": "top.bit",
                  "core": {"top": cfg.top_name}, "fmax_mhz": 61.5, "constraint_mhz": 12.0,
                  "seed": 1, "critical_path": {"from": "a", "to": "b"},
                  "utilization": {"TRELLIS_COMB": [10, 100, 10]},
                  "files": {"top.bit": {"sha256": sha256(folder / "top.bit"), "bytes": 6}}}
        (folder / ECP5_RECORD).write_text(json.dumps(record))
        return folder, record
    monkeypatch.setattr(build_ecp5, "build_ecp5", fake)
    out = tmp_path / "e"
    argv = ["build", "--board", "ecp5_5g_evn", "--rows", "2", "--cols", "2", "-o", str(out),
            "--json", str(tmp_path / "e.json")]
    status, stdout, err = run_main(argv, capsys)
    assert status == 0, err
    assert err.splitlines() == ["[ecp5] placing", f"wrote {tmp_path / 'e.json'}"]
    doc = read(tmp_path / "e.json")
    check_common(doc, "build", [out / "top.bit", out / ECP5_RECORD])
    record = read(out / ECP5_RECORD)
    assert doc["build"]["kind"] == "ecp5" and doc["build"]["board"] == "ecp5_5g_evn"
    for key in ("fmax_mhz", "constraint_mhz", "seed", "critical_path", "utilization"):
        assert doc["build"][key] == record[key], key
    assert doc["parameters"]["clock_mhz"] == 12.0
    # -q: the progress lines are gone, the results are the same
    (tmp_path / "e.json").unlink()
    import shutil
    shutil.rmtree(out)
    status, quiet_out, err = run_main(argv + ["-q"], capsys)
    assert (status, err, quiet_out) == (0, "", stdout)


# report -------------------------------------------------------------------------------------

def test_report_json(tmp_path, capsys, run_main):
    from mulfree.gen import core_resources
    from mulfree.gen.devices import device_for, device_share
    from mulfree.gen.energy import energy_estimate, load_energy_table
    from mulfree.host.export_format import load_export, write_export
    cfg = core("shift", 16)
    cache = tmp_path / "cache"
    seed_cache(cache, cfg, {"LUT6": 10_000, "FDRE": 5_000})
    write_export(tiny_model(), tmp_path / "model")
    out = tmp_path / "out"
    status, _, err = run_main(["report", "--model", str(tmp_path / "model"), "--cache-dir",
                               str(cache), "-o", str(out), "--json",
                               str(tmp_path / "r.json")], capsys)
    assert status == 0, err
    doc = read(tmp_path / "r.json")
    check_common(doc, "report", [out / "report.json"])
    assert doc["report"] == read(out / "report.json")
    res = core_resources.core_resources(cfg, cache_dir=cache)["resources"]
    assert doc["report"]["resources"] == res
    assert doc["report"]["share"] == pytest.approx(device_share(res, device_for("zc706")))
    energy = energy_estimate(load_export(tmp_path / "model"), load_energy_table(None))
    assert doc["report"]["energy"]["energy_pj"] == pytest.approx(energy["energy_pj"])
    assert doc["parameters"]["board"] == "zc706" and doc["parameters"]["core"] == cfg.params()
    assert doc["parameters"]["cache_dir"] == str(cache)


# train and export ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``mulfree train --json`` of a one-epoch deepshift_mlp: (output folder, document)."""
    folder = tmp_path_factory.mktemp("train")
    assert cli.main(["train", "--model", "deepshift_mlp", "--epochs", "1", "-o",
                     str(folder / "out"), "--json", str(folder / "train.json")]) == 0
    return folder / "out", read(folder / "train.json")


def test_train_json(trained):
    out, doc = trained
    model = out / "deepshift_mlp"
    check_common(doc, "train", [model / n for n in ("float.safetensors", "metrics.json",
                                                    "model.json", "model.safetensors")])
    metrics = read(model / "metrics.json")
    assert doc["models"] == [metrics]
    assert metrics["int_golden_agreement"] == 1.0
    assert doc["parameters"] == {"model": "deepshift_mlp", "models": ["deepshift_mlp"],
                                 "epochs": 1, "epochs_per_model": {"deepshift_mlp": 1},
                                 "seed": 0, "output": str(out)}


def test_export_json(trained, tmp_path, capsys, run_main):
    from mulfree.host.export import load_float
    from mulfree.host.export_format import load_export
    from mulfree.host.models import evaluate, model_data
    from mulfree.params.model_golden import predict, quantize_input
    out, _ = trained
    weights = out / "deepshift_mlp" / "float.safetensors"
    status, _, err = run_main(["export", "--model", "deepshift_mlp", "--float", str(weights),
                               "--act-bits", "6", "-o", str(tmp_path / "e"), "--json",
                               str(tmp_path / "e.json")], capsys)
    assert status == 0, err
    doc = read(tmp_path / "e.json")
    check_common(doc, "export", [tmp_path / "e" / "model.safetensors",
                                 tmp_path / "e" / "model.json"])
    data = model_data("deepshift_mlp")
    loaded = load_export(tmp_path / "e")
    golden = np.mean(predict(loaded, quantize_input(loaded, data["x_test"])) == data["y_test"])
    acc = doc["accuracies"]
    assert acc["golden_accuracy"] == pytest.approx(golden)
    assert acc["float_accuracy"] == evaluate(load_float("deepshift_mlp", weights),
                                             data["x_test"], data["y_test"])
    assert doc["parameters"] == {"model": "deepshift_mlp", "float": str(weights),
                                 "act_bits": 6, "output": str(tmp_path / "e")}


def test_train_quiet_hides_the_progress_bar(tmp_path, capsys, monkeypatch):
    """On a terminal, train draws its bar unless -q; -q also drops its status lines."""
    import sys
    from mulfree.host import train as host_train
    seen = []

    def fake(models, *, epochs, seed, output, progress):
        seen.append(progress)
        logging.getLogger(host_train.__name__).info("wrote somewhere")
        return []
    monkeypatch.setattr(host_train, "run_train", fake)
    for flag, progress, err in (([], True, "wrote somewhere\n"), (["-q"], False, "")):
        capsys.readouterr()
        monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
        status = cli.main(["train", "--model", "deepshift_mlp", "-o", str(tmp_path), *flag])
        assert (status, seen[-1], capsys.readouterr().err) == (0, progress, err)


# Bad --json -----------------------------------------------------------------------------------

#: Per command: the argv (``{t}`` the test's folder) whose work would write under {t}/out.
COMMANDS = {
    "gen": ["gen", "--rows", "2", "--cols", "2", "-o", "{t}/out"],
    "compile": ["compile", "{t}/missing-model"],
    "build": ["build", "--board", "zc706", "--rows", "4", "--cols", "4", "-o", "{t}/out"],
    "report": ["report", "--rows", "2", "--cols", "2", "--cache-dir", "{t}/out/cache",
               "-o", "{t}/out"],
    "train": ["train", "--model", "deepshift_mlp", "--epochs", "1", "-o", "{t}/out"],
    "export": ["export", "--model", "deepshift_mlp", "--float", "{t}/missing.safetensors",
               "-o", "{t}/out"],
    "run": ["run", "{t}/missing-model", "--dataset", "digits"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("where", ["folder", "under a file"])
def test_bad_json_is_refused_before_work(command, where, tmp_path, capsys, run_main):
    """A folder or a path under a regular file: one line naming --json and the value, exit 2,
    before the command reads or writes anything (compile's, run's and export's inputs are
    missing, and their own error would come first were --json not checked before)."""
    (tmp_path / "keep").write_text("keep\n")
    (tmp_path / "dir").mkdir()
    (tmp_path / "dir" / "inside").write_text("inside\n")
    bad = tmp_path / ("dir" if where == "folder" else "keep/report.json")
    argv = [a.replace("{t}", str(tmp_path)) for a in COMMANDS[command]]
    status, out, err = run_main(argv + ["--json", str(bad)], capsys)
    assert status == 2 and out == "", err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"mulfree {command}: error: --json {str(bad)!r} ")
    assert ("is a folder; name a file" if where == "folder" else "is not a folder") in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir", "keep"]
    assert (tmp_path / "keep").read_text() == "keep\n"
    assert [p.name for p in (tmp_path / "dir").iterdir()] == ["inside"]


def test_failed_command_leaves_an_existing_json_alone(tmp_path, capsys, run_main):
    (tmp_path / "g.json").write_text("old\n")
    status, _, err = run_main(["gen", "--rows", "0", "-o", str(tmp_path / "out"), "--json",
                               str(tmp_path / "g.json")], capsys)
    assert status == 2 and "--rows" in err
    assert (tmp_path / "g.json").read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.json"]


# -v / -q --------------------------------------------------------------------------------------

def test_quiet_and_verbose_change_stderr_only(tmp_path, capsys, run_main):
    out = tmp_path / "out"
    argv = ["gen", "--rows", "2", "--cols", "2", "-o", str(out)]
    status, plain_out, plain_err = run_main(argv, capsys)
    assert status == 0 and plain_err.startswith(f"wrote {out}")
    status, quiet_out, quiet_err = run_main(argv + ["-q"], capsys)
    assert (status, quiet_err, quiet_out) == (0, "", plain_out)
    status, verbose_out, verbose_err = run_main(argv + ["-v"], capsys)
    assert status == 0 and verbose_out == plain_out
    lines = verbose_err.splitlines()
    assert lines[0].startswith(f"mulfree {__version__} (Python ")
    assert lines[0].endswith(" ".join(argv + ["-v"]))
    assert "parameters: " in verbose_err and set(plain_err.splitlines()) < set(lines)
    status, _, err = run_main(argv + ["-q", "-v"], capsys)
    assert status == 2 and len(err.splitlines()) == 1 and "not allowed with" in err


def test_every_command_takes_the_output_options(capsys, run_main):
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(COMMANDS) < set(commands)
    for name in commands:
        status, out, _ = run_main([name, "--help"], capsys)
        assert status == 0
        assert "-v, --verbose" in out and "-q, --quiet" in out, name
        if name in COMMANDS:
            assert "--json FILE" in out and "sha256" in out or name == "run", name


def test_run_and_demo_keep_quiet_as_no_progress_bar():
    parser = cli.build_parser()
    args = parser.parse_args(["run", "m", "--dataset", "digits", "-q"])
    assert args.quiet and not args.verbose
    from mulfree.flows.run import _progress
    assert _progress(10, args.quiet) is None
    assert parser.parse_args(["demo", "-q"]).quiet
    assert not parser.parse_args(["demo"]).quiet


def test_library_code_does_not_configure_logging():
    """Only the command line sets handlers or levels (flows/options.py)."""
    root = Path(train_flow.__file__).parent.parent
    calls = ("basicConfig(", "addHandler(", ".setLevel(", "logging.config")
    offenders = [str(p.relative_to(root)) for p in root.rglob("*.py")
                 if ".venv" not in p.parts and "tests" not in p.parts
                 and p.relative_to(root).as_posix() != "flows/options.py"
                 and any(c in p.read_text(encoding="utf-8") for c in calls)]
    assert offenders == []


def test_help_states_the_array_size_each_command_uses():
    """``--rows`` / ``--cols`` help gives the default the command really takes: the parser's
    default where it has one (gen 8, build and report 16), the demo's choice (16 for a
    network, 8 for an engine) where the command decides."""
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    seen = {}
    for name, sub in commands.items():
        for action in sub._actions:
            if action.dest in ("rows", "cols"):
                seen.setdefault(name, {})[action.dest] = action
                if action.default is not None:
                    assert f"default: {action.default})" in " ".join(action.help.split()), \
                        (name, action.dest, action.help)
    assert {n: seen[n]["rows"].default for n in ("gen", "build", "report")} == \
        {"gen": 8, "build": 16, "report": 16}
    demo = seen["demo"]["rows"]
    assert demo.default is None and "16 for network, 8 for engine" in demo.help
    from mulfree.flows.demo import array_size
    for argv, size in ((["demo"], (16, 16)), (["demo", "engine"], (8, 8)),
                       (["demo", "engine", "--rows", "4"], (4, 8))):
        assert array_size(parser.parse_args(argv)) == size, argv
