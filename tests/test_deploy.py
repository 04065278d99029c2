"""mulfree deploy: the commands it runs, with fake ssh/scp (and fpgautil) that log their arguments.

No board here: ``ssh`` and ``scp`` on PATH are scripts that append their arguments to a log,
so the tests see exactly what would reach the board. ``python3 -m mulfree.host.zynq --check``
is tested with a stand-in device.
"""

import hashlib
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from mulfree.flows import deploy
from mulfree.gen.build_folder import write_build
from mulfree.gen.build_record import BUILD_MARKER
from mulfree.gen.overlay import OVERLAY_BLOB, ZYNQ_JSON
from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A build folder after a (pretend) Vivado run: it holds a .bit.bin."""
    folder, plan = write_build(CoreConfig(engine=ArrayConfig(rows=4, cols=4)), "zc706",
                               tmp_path_factory.mktemp("d") / "build")
    (folder / plan.products["bin"]).write_bytes(b"\xaa\x99\x55\x66" * 16)
    return folder, plan


@pytest.fixture
def build(built, tmp_path):
    folder = tmp_path / "build"
    shutil.copytree(built[0], folder)
    return folder, built[1]


@pytest.fixture
def fake_bin(tmp_path, monkeypatch):
    """``ssh``, ``scp`` and ``fpgautil`` that log ``name args...`` (one shell word each) to
    ``log``. ``fail_on`` (a file) makes ssh exit 3 when its command contains that text."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.log"
    fail = tmp_path / "fail_on"
    for name in ("ssh", "scp", "fpgautil"):
        script = bin_dir / name
        script.write_text(
            f"#!{sys.executable}\n"
            "import shlex, sys\n"
            f"open({str(log)!r}, 'a').write(shlex.join([{name!r}] + sys.argv[1:]) + '\\n')\n"
            "try:\n"
            f"    needle = open({str(fail)!r}).read()\n"
            "except OSError:\n"
            "    needle = None\n"
            "sys.exit(3 if needle and needle in ' '.join(sys.argv[1:]) else 0)\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    class Fake:
        path = bin_dir

        @staticmethod
        def calls():
            return [shlex.split(line) for line in log.read_text().splitlines()] \
                if log.exists() else []

        @staticmethod
        def fail_on(text):
            fail.write_text(text)
    return Fake


def test_dry_run_prints_every_command_and_runs_none(run_main, capsys, build, fake_bin):
    folder, plan = build
    status, out, err = run_main(["deploy", str(folder), "--host", "root@zc706", "--dry-run"],
                                capsys)
    assert status == 0, err
    assert fake_bin.calls() == [] and not (folder / OVERLAY_BLOB).exists()
    commands = [line[2:] for line in out.splitlines() if line.startswith("$ ")]
    bitbin = plan.products["bin"]
    assert commands[0].endswith(f"dtc -@ -I dts -O dtb -o {folder / OVERLAY_BLOB} "
                                f"{folder / 'mulfree.dtso'}")
    assert f"scp -- {folder / bitbin} {folder / OVERLAY_BLOB} {folder / ZYNQ_JSON} " \
           f"{folder / (plan.top + '.json')} root@zc706:/lib/firmware/" in commands
    overlay = "/sys/kernel/config/device-tree/overlays/mulfree"
    assert f"ssh -- root@zc706 'mkdir {overlay}'" in commands
    assert f"ssh -- root@zc706 'cat /lib/firmware/mulfree.dtbo > {overlay}/dtbo'" in commands
    assert commands[-1] == (f"ssh -- root@zc706 'python3 -m mulfree.host.zynq --check --manifest "
                            f"/lib/firmware/{plan.top}.json --zynq-config "
                            f"/lib/firmware/zynq.json'")


def test_deploy_over_ssh(run_main, capsys, build, fake_bin):
    folder, plan = build
    status, out, err = run_main(["deploy", str(folder), "--host", "me@board"], capsys)
    assert status == 0, err
    calls = fake_bin.calls()
    assert calls[0] == ["ssh", "--", "me@board", "mkdir -p -- /lib/firmware"]
    assert calls[1] == ["scp", "--", str(folder / plan.products["bin"]),
                        str(folder / OVERLAY_BLOB),
                        str(folder / ZYNQ_JSON), str(folder / f"{plan.top}.json"),
                        "me@board:/lib/firmware/"]
    remote = [c[3] for c in calls[2:]]
    assert all(c[:3] == ["ssh", "--", "me@board"] and len(c) == 4 for c in calls[2:])
    overlay = "/sys/kernel/config/device-tree/overlays/mulfree"
    assert remote == [
        "test -d /sys/kernel/config/device-tree/overlays || mount -t configfs configfs "
        "/sys/kernel/config",
        f"if [ -d {overlay} ]; then rmdir {overlay}; fi",
        f"mkdir {overlay}",
        f"cat /lib/firmware/mulfree.dtbo > {overlay}/dtbo",
        f'test "$(cat {overlay}/status)" = applied',
        f"python3 -m mulfree.host.zynq --check --manifest /lib/firmware/{plan.top}.json "
        "--zynq-config /lib/firmware/zynq.json",
    ]
    # The overlay was compiled here, for real.
    assert (folder / OVERLAY_BLOB).read_bytes()[:4] == b"\xd0\x0d\xfe\xed"
    assert "$ scp " in out


def test_a_failing_step_stops_the_deploy(run_main, capsys, build, fake_bin):
    folder, _ = build
    fake_bin.fail_on("--check")
    status, _, err = run_main(["deploy", str(folder), "--host", "me@board"], capsys)
    assert status == 1
    assert "step 9 (check the core's identity registers on the board) failed with exit " \
           "status 3" in err
    fake_bin.fail_on("mkdir /sys")
    before = len(fake_bin.calls())
    status, _, err = run_main(["deploy", str(folder), "--host", "me@board"], capsys)
    assert status == 1 and "(create the overlay) failed" in err
    assert not any("--check" in " ".join(c) for c in fake_bin.calls()[before:])


def test_without_dtc_the_board_compiles_the_overlay(run_main, capsys, build, fake_bin,
                                                    monkeypatch):
    folder, plan = build
    monkeypatch.setenv("PATH", str(fake_bin.path))        # no dtc
    status, out, err = run_main(["deploy", str(folder), "--host", "me@board"], capsys)
    assert status == 0, err
    assert "dtc is not installed here: the overlay is compiled on the board" in out
    calls = fake_bin.calls()
    assert str(folder / "mulfree.dtso") in calls[1] and str(folder / OVERLAY_BLOB) not in calls[1]
    assert calls[2] == ["ssh", "--", "me@board", "dtc -@ -I dts -O dtb -o "
                                                 "/lib/firmware/mulfree.dtbo "
                                                 "/lib/firmware/mulfree.dtso"]
    # On the board itself, without dtc and without a compiled overlay: a clear error.
    status, _, err = run_main(["deploy", str(folder), "--dry-run"], capsys)
    assert status == 2 and "dtc (the device tree compiler) is not on PATH" in err
    assert "apt-get install device-tree-compiler" in err


def test_fpgautil_and_another_folder(run_main, capsys, build, fake_bin):
    folder, plan = build
    status, _, err = run_main(["deploy", str(folder), "--host", "me@board", "--loader",
                               "fpgautil", "--remote-dir", "/opt/mulfree"], capsys)
    assert status == 0, err
    remote = [c[3] for c in fake_bin.calls() if c[0] == "ssh"]
    assert "printf %s /opt/mulfree > /sys/module/firmware_class/parameters/path" in remote
    assert f"fpgautil -b /opt/mulfree/{plan.products['bin']} -o /opt/mulfree/mulfree.dtbo" \
        in remote
    assert not any("configfs" in c for c in remote)


def test_on_the_board_itself(run_main, capsys, build):
    folder, plan = build
    status, out, err = run_main(["deploy", str(folder), "--dry-run"], capsys)
    assert status == 0, err
    commands = [line[2:] for line in out.splitlines() if line.startswith("$ ")]
    assert f"cp -- {folder / plan.products['bin']} {folder / OVERLAY_BLOB} " \
           f"{folder / ZYNQ_JSON} {folder / (plan.top + '.json')} /lib/firmware/" in commands
    assert "sh -c 'mkdir /sys/kernel/config/device-tree/overlays/mulfree'" in commands
    assert commands[-1] == shlex.join([sys.executable, "-m", "mulfree.host.zynq", "--check",
                                       "--manifest", f"/lib/firmware/{plan.top}.json",
                                       "--zynq-config", "/lib/firmware/zynq.json"])


def test_refuses_a_folder_without_bitstream_or_build(run_main, capsys, build, tmp_path,
                                                     fake_bin):
    folder, plan = build
    (folder / plan.products["bin"]).unlink()
    status, _, err = run_main(["deploy", str(folder), "--host", "me@board"], capsys)
    assert status == 2 and f"has no {plan.products['bin']}: run Vivado first" in err
    assert fake_bin.calls() == []
    status, out, _ = run_main(["deploy", str(folder), "--host", "me@board", "--dry-run"],
                              capsys)
    assert status == 0 and "a real deploy stops here" in out
    (tmp_path / "empty").mkdir()
    status, _, err = run_main(["deploy", str(tmp_path / "empty")], capsys)
    assert status == 2 and "is not a finished mulfree build folder" in err


# The identity check the board runs ----------------------------------------------------------

class _FakeDevice:
    manifest = {"top": "mycore"}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def identity(self):
        return {"ID": 0x4D554C46, "VERSION": 0x0000_0001}


def test_check_main(monkeypatch, capsys, build):
    from mulfree.host import runtime, zynq
    folder, plan = build
    seen = {}

    def fake_open(kind, manifest, **options):
        seen.update(kind=kind, manifest=manifest, **options)
        return _FakeDevice()
    monkeypatch.setattr(runtime, "open_device", fake_open)
    status = zynq.check_main(["--check", "--manifest", str(folder / f"{plan.top}.json"),
                              "--zynq-config", str(folder / ZYNQ_JSON)])
    out = capsys.readouterr().out
    assert status == 0 and "the core is mycore: ID 0x4d554c46, version 0.1" in out
    assert seen["kind"] == "zynq" and seen["config"] == plan.zynq

    def mismatch(kind, manifest, **options):
        raise runtime.DeviceMismatch("register ID reads 0x00000000")
    monkeypatch.setattr(runtime, "open_device", mismatch)
    status = zynq.check_main(["--check", "--manifest", "m.json"])
    assert status == 1 and "DeviceMismatch: register ID reads" in capsys.readouterr().err
    status = zynq.check_main(["--check", "--manifest", "m.json", "--zynq-config",
                              str(Path(folder) / "nope.json")])
    assert status == 2


def test_steps_are_printed_before_they_run(tmp_path):
    marker = tmp_path / "ran"
    steps = [deploy.Step("touch", ("touch", str(marker))),
             deploy.Step("fail", ("false",)), deploy.Step("never", ("touch", str(tmp_path / "x")))]
    import io
    out = io.StringIO()
    with pytest.raises(deploy.DeployFailed, match=r"step 2 \(fail\) failed with exit status 1"):
        deploy.run_steps(steps, out=out)
    assert marker.exists() and not (tmp_path / "x").exists()
    assert out.getvalue().splitlines() == ["# 1/3 touch", f"$ touch {marker}", "# 2/3 fail",
                                           "$ false"]


# Bad input: one line, exit status 2, nothing run, nothing written ----------------------------

def _snapshot(folder):
    """``{relative path: (kind, bytes)}`` of everything under ``folder`` (links not followed)."""
    snap = {}
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            path = Path(root) / name
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                snap[rel] = ("link", os.readlink(path))
            elif path.is_file():
                snap[rel] = ("file", path.read_bytes())
            else:
                snap[rel] = ("other", None)
    return snap


def _refused(run_main, capsys, argv, fake_bin, folder, option):
    """Run ``mulfree deploy argv``; assert one line naming ``option``, status 2, nothing run."""
    before = _snapshot(folder)
    status, out, err = run_main(["deploy", *argv], capsys)
    lines = err.splitlines()
    assert status == 2, (status, out, err)
    assert len(lines) == 1 and lines[0].startswith("mulfree deploy: error: "), err
    assert option in lines[0], lines[0]
    assert "Traceback" not in err and "$ " not in out
    assert fake_bin.calls() == []
    assert _snapshot(folder) == before
    return lines[0]


LONG = "a" * 300

BAD_OPTIONS = [
    # --host: an ssh option in the host slot, shell and scp metacharacters, odd text.
    ("--host=-oProxyCommand=touch /tmp/pwned", "--host"),
    ("--host=-oProxyCommand=sh", "--host"),
    ("--host=-l", "--host"),
    ("--host=root@-oProxyCommand=x", "--host"),
    ("--host=root@board;touch X", "--host"),
    ("--host=root@board|id", "--host"),
    ("--host=root@board&", "--host"),
    ("--host=root@$(id)", "--host"),
    ("--host=root@`id`", "--host"),
    ("--host=board>x", "--host"),
    ("--host=board<x", "--host"),
    ("--host=root@board\nid", "--host"),
    ("--host=root@board x", "--host"),
    ("--host='board'", "--host"),
    ('--host="board"', "--host"),
    ("--host=bo\x00ard", "--host"),
    ("--host=böard", "--host"),
    ("--host=board:/tmp", "--host"),
    ("--host=me@board@other", "--host"),
    ("--host=board-", "--host"),
    ("--host=[::1];id", "--host"),
    ("--host=", "--host"),
    (f"--host={LONG}.{LONG}", "--host"),
    # --python: the issue's example and its relatives.
    ("--python=python3; touch X", "--python"),
    ("--python=-oProxyCommand=x", "--python"),
    ("--python=-c", "--python"),
    ("--python=python3 -c 'import os'", "--python"),
    ("--python=$(id)", "--python"),
    ("--python=`id`", "--python"),
    ("--python=py|thon", "--python"),
    ("--python=python3&", "--python"),
    ("--python=python3>x", "--python"),
    ("--python=python3\nid", "--python"),
    ("--python=../bin/python3", "--python"),
    ("--python=/usr/bin/../../tmp/x", "--python"),
    ("--python=/usr/bin/python3 ", "--python"),
    ("--python=pythön", "--python"),
    ("--python=py\x00thon", "--python"),
    ("--python=" + "p" * 200, "--python"),
    ("--python=", "--python"),
    # --remote-dir: quoted for ssh before, but not in scp's target (a shell reads it there).
    ("--remote-dir=lib/firmware", "--remote-dir"),
    ("--remote-dir=/lib/firmware; touch X", "--remote-dir"),
    ("--remote-dir=/tmp/a b", "--remote-dir"),
    ("--remote-dir=/tmp/$(id)", "--remote-dir"),
    ("--remote-dir=/tmp/`id`", "--remote-dir"),
    ("--remote-dir=/tmp/x'y", "--remote-dir"),
    ('--remote-dir=/tmp/x"y', "--remote-dir"),
    ("--remote-dir=/tmp/a|b", "--remote-dir"),
    ("--remote-dir=/tmp/a&b", "--remote-dir"),
    ("--remote-dir=/tmp/a>b", "--remote-dir"),
    ("--remote-dir=/tmp/a\nb", "--remote-dir"),
    ("--remote-dir=/tmp/a\x00b", "--remote-dir"),
    ("--remote-dir=/tmp/a:b", "--remote-dir"),
    ("--remote-dir=/tmp/../etc", "--remote-dir"),
    ("--remote-dir=/tmp/./x", "--remote-dir"),
    ("--remote-dir=//lib", "--remote-dir"),
    ("--remote-dir=/", "--remote-dir"),
    ("--remote-dir=~/fw", "--remote-dir"),
    ("--remote-dir=-oProxyCommand=x", "--remote-dir"),
    ("--remote-dir=/tmp/ü", "--remote-dir"),
    ("--remote-dir=" + "/abcdefgh" * 130, "--remote-dir"),
    ("--remote-dir=", "--remote-dir"),
    # --loader
    ("--loader=jtag", "--loader"),
    ("--loader=configfs;id", "--loader"),
    ("--loader=CONFIGFS", "--loader"),
    ("--loader=", "--loader"),
]


@pytest.mark.parametrize("option, name", BAD_OPTIONS, ids=[repr(o)[:40] for o, _ in BAD_OPTIONS])
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry"])
def test_bad_options_are_refused_before_anything_runs(run_main, capsys, build, fake_bin, option,
                                                      name, dry_run):
    folder, _ = build
    host = [] if option.startswith("--host") else ["--host", "me@board"]
    line = _refused(run_main, capsys, [str(folder), *host, option, *(["--dry-run"] * dry_run)],
                    fake_bin, folder, name)
    assert "must be" in line and " not " in line


def test_bad_options_on_the_board_itself(run_main, capsys, build, fake_bin, tmp_path):
    """Without --host the same values reach cp, sh -c and the local Python: refused too."""
    folder, _ = build
    target = tmp_path / "fw; touch X"
    for option, name in [("--python=python3; touch X", "--python"),
                         ("--python=-c", "--python"),
                         (f"--remote-dir={target}", "--remote-dir"),
                         (f"--remote-dir={tmp_path}/a b", "--remote-dir"),
                         ("--remote-dir=-x", "--remote-dir")]:
        _refused(run_main, capsys, [str(folder), option], fake_bin, folder, name)
    # The local mkdir and cp never ran.
    assert not target.exists() and not (tmp_path / "a b").exists()


@pytest.mark.parametrize("argv, fragment", [
    (["{missing}"], "is not a folder"),
    (["{file}"], "is not a folder"),
    (["{empty}"], "is not a finished mulfree build folder"),
    ([""], "BUILD_DIR must be a folder path"),
    (["bad\x00dir"], "BUILD_DIR must be a folder path"),
])
def test_bad_build_dir(run_main, capsys, fake_bin, tmp_path, argv, fragment):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    paths = {k: str(tmp_path / k) for k in ("missing", "file", "empty")}
    argv = [a.format(**paths) for a in argv]
    line = _refused(run_main, capsys, [*argv, "--host", "me@board"], fake_bin, tmp_path,
                    "BUILD_DIR")
    assert fragment in line


# build.json and the files it names ----------------------------------------------------------

def _set(path, value):
    def edit(doc):
        *parents, last = path
        for key in parents:
            doc = doc[key]
        if value is _DELETE:
            del doc[last]
        else:
            doc[last] = value
    return edit


_DELETE = object()
SHA = "0" * 64

BAD_DOCS = [
    # The issue's example: a product name that leaves the folder, in every spelling.
    (_set(["products", "bin"], "../../../../etc/shadow"), "products"),
    (_set(["products", "bin"], "/etc/shadow"), "products"),
    (_set(["products", "bin"], "-oProxyCommand=x"), "products"),
    (_set(["manifest"], "../x.json"), "manifest"),
    (_set(["manifest"], "/etc/passwd"), "manifest"),
    (_set(["top"], "a;touch X"), "top"),
    (_set(["top"], "module"), "top"),
    (_set(["top"], "../x"), "top"),
    (_set(["top"], 5), "top"),
    (_set(["files", "../../etc/passwd"], {"sha256": SHA, "bytes": 1}), "files"),
    (_set(["files", "/etc/passwd"], {"sha256": SHA, "bytes": 1}), "files"),
    (_set(["files", "-rf"], {"sha256": SHA, "bytes": 1}), "files"),
    (_set(["files", "a b"], {"sha256": SHA, "bytes": 1}), "files"),
    (_set(["files", ZYNQ_JSON, "sha256"], "zz"), "sha256"),
    (_set(["files", ZYNQ_JSON, "sha256"], None), "sha256"),
    (_set(["files", ZYNQ_JSON, "sha256"], _DELETE), "sha256"),
    (_set(["files", ZYNQ_JSON, "bytes"], -1), "bytes"),
    (_set(["files", ZYNQ_JSON, "bytes"], 10 ** 30), "bytes"),
    (_set(["files", ZYNQ_JSON, "bytes"], "12"), "bytes"),
    (_set(["files", ZYNQ_JSON, "bytes"], 1.5), "bytes"),
    (_set(["files", ZYNQ_JSON], "abc"), "files"),
    (_set(["files", ZYNQ_JSON], _DELETE), "zynq.json"),
    (_set(["files"], []), "files"),
    (_set(["files"], {}), "files"),
    (_set(["products"], _DELETE), "products is missing"),
    (_set(["products"], "x"), "products"),
    (_set(["kind"], _DELETE), "kind is missing"),
    (_set(["kind"], "other"), "kind"),
    (_set(["clock_mhz"], "fast"), "clock_mhz"),
    (_set(["clock_mhz"], 1e308), "clock_mhz"),
    (_set(["clock_mhz"], -5), "clock_mhz"),
    (_set(["clock_mhz"], True), "clock_mhz"),
    (_set(["clock_mhz"], _DELETE), "clock_mhz"),
    (_set(["stream_width"], 7), "stream_width"),
    (_set(["stream_width"], "64"), "stream_width"),
    (_set(["board", "name"], "zc707"), "board.name"),
    (_set(["board", "name"], ["zc706"]), "board.name"),
    (_set(["board"], None), "board"),
    (_set(["part"], "xc7z045ffg900-2; id"), "part"),
    (_set(["zynq", "core_uio"], 'x"; }; evil {'), "zynq"),
    (_set(["zynq", "udmabuf"], "a\nb"), "zynq"),
    (_set(["zynq", "core_base"], "0x43c00000"), "zynq"),
    (_set(["zynq", "surprise"], 1), "zynq"),
    (_set(["addresses", "core_base"], -1), "addresses.core_base"),
    (_set(["addresses", "dma_range"], 2 ** 70), "addresses.dma_range"),
    (_set(["dma", "mode"], "sg"), "dma.mode"),
    (_set(["interrupts", "core", "gic_spi"], 99), "interrupts"),
    (_set(["resources_estimate", "dsp"], -3), "resources_estimate.dsp"),
    (_set(["overlay", "blob"], "../../x.dtbo"), "overlay"),
    (_set(["vivado_command"], ["sh", "-c", "id"]), "vivado_command"),
    (_set(["vivado"], "done"), "vivado"),
    (_set(["vivado"], {"returncode": 0, "log": "vivado.log", "products": {}}),
     "vivado.products"),
    (_set(["mulfree_version"], "1.0; id"), "mulfree_version"),
]


@pytest.mark.parametrize("edit, fragment", BAD_DOCS, ids=[f"{i}-{f}" for i, (_, f)
                                                          in enumerate(BAD_DOCS)])
def test_malformed_build_json_is_refused(run_main, capsys, build, fake_bin, edit, fragment):
    folder, _ = build
    doc = json.loads((folder / BUILD_MARKER).read_text())
    edit(doc)
    (folder / BUILD_MARKER).write_text(json.dumps(doc))
    line = _refused(run_main, capsys, [str(folder), "--host", "me@board"], fake_bin, folder,
                    "BUILD_DIR")
    assert BUILD_MARKER in line and fragment in line, line


@pytest.mark.parametrize("text, fragment", [
    ("{", "not valid JSON"),
    ("", "not valid JSON"),
    ("[]", "must be a JSON object"),
    ('"build"', "must be a JSON object"),
    ('{"kind": NaN}', "not valid JSON"),
    ('{"kind": 1e999}', "not valid JSON"),
    ('{"kind": "a", "kind": "b"}', "appears twice"),
    ("[" * 100 + "]" * 100, "nests deeper"),
    (b"{\"kind\": \"\xff\"}", "not UTF-8"),
    ('{"kind": "mulfree_vivado_build"}', "is missing"),
    (" " * (2 << 20) + "{}", "larger than"),
])
def test_unreadable_build_json_is_refused(run_main, capsys, build, fake_bin, text, fragment):
    folder, _ = build
    path = folder / BUILD_MARKER
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    line = _refused(run_main, capsys, [str(folder), "--host", "me@board"], fake_bin, folder,
                    "BUILD_DIR")
    assert fragment in line, line


def _record(folder, name):
    """Record ``name``'s current digest in build.json, as if mulfree build had written it."""
    doc = json.loads((folder / BUILD_MARKER).read_text())
    data = (folder / name).read_bytes()
    doc["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (folder / BUILD_MARKER).write_text(json.dumps(doc))


def _bad_files():
    def changed(name):
        def edit(folder, plan):
            with open(folder / name.format(top=plan.top), "a") as f:
                f.write("\n")
        return edit

    def link(name, target):
        def edit(folder, plan):
            path = folder / name.format(top=plan.top, bin=plan.products["bin"])
            path.unlink(missing_ok=True)
            path.symlink_to(target.format(top=plan.top))
        return edit

    def fifo(name):
        def edit(folder, plan):
            (folder / name).unlink()
            os.mkfifo(folder / name)
        return edit

    def include(folder, plan):
        path = folder / "mulfree.dtso"
        path.write_text(path.read_text() + '/include/ "/etc/passwd"\n')
        _record(folder, "mulfree.dtso")

    def incbin(folder, plan):
        path = folder / "mulfree.dtso"
        path.write_text(path.read_text().replace('compatible = "generic-uio";',
                                                 'x = /incbin/("/etc/shadow");', 1))
        _record(folder, "mulfree.dtso")

    def other_zynq(folder, plan):
        doc = json.loads((folder / ZYNQ_JSON).read_text())
        doc["udmabuf"] = "udmabuf7"
        (folder / ZYNQ_JSON).write_text(json.dumps(doc))
        _record(folder, ZYNQ_JSON)

    def other_manifest(folder, plan):
        doc = json.loads((folder / f"{plan.top}.json").read_text())
        doc["top"] = "someone_else"
        (folder / f"{plan.top}.json").write_text(json.dumps(doc))
        _record(folder, f"{plan.top}.json")

    def bad_bit_digest(folder, plan):
        doc = json.loads((folder / BUILD_MARKER).read_text())
        doc["vivado"] = {"returncode": 0, "log": "vivado.log", "products": {
            name: {"sha256": SHA, "bytes": 64} for name in plan.products.values()}}
        (folder / BUILD_MARKER).write_text(json.dumps(doc))

    def marker_link(folder, plan):
        outside = folder.parent / "elsewhere.json"
        outside.write_text((folder / BUILD_MARKER).read_text())
        (folder / BUILD_MARKER).unlink()
        (folder / BUILD_MARKER).symlink_to(outside)

    return [
        (changed(ZYNQ_JSON), "zynq.json does not match the SHA-256"),
        (changed("{top}.json"), "does not match the SHA-256"),
        (changed("mulfree.dtso"), "mulfree.dtso does not match the SHA-256"),
        (include, "contains /include/"),
        (incbin, "contains /incbin/"),
        (other_zynq, "zynq.json differs from the zynq field"),
        (other_manifest, "is not the manifest of the core"),
        (bad_bit_digest, "does not match the SHA-256"),
        (link("{bin}", "/etc/passwd"), "leads outside"),
        (link("{bin}", "../../../../etc/shadow"), "leads outside"),
        (link("{bin}", ZYNQ_JSON), "is a symbolic link"),
        (link(ZYNQ_JSON, "/etc/hostname"), "leads outside"),
        (link(OVERLAY_BLOB, "/tmp/mulfree-deploy-test-target"), "mulfree.dtbo is not a "
                                                                 "regular file"),
        (link(OVERLAY_BLOB, ZYNQ_JSON), "mulfree.dtbo is not a regular file"),
        (fifo(ZYNQ_JSON), "zynq.json is not a regular file"),
        (marker_link, "build.json"),
    ]


BAD_FILES = _bad_files()


@pytest.mark.parametrize("edit, fragment", BAD_FILES, ids=[f"{i}-{f[:30]}" for i, (_, f)
                                                           in enumerate(BAD_FILES)])
@pytest.mark.parametrize("dry_run", [False, True], ids=["run", "dry"])
def test_files_are_checked_before_copying(run_main, capsys, build, fake_bin, edit, fragment,
                                          dry_run):
    folder, plan = build
    edit(folder, plan)
    line = _refused(run_main, capsys, [str(folder), "--host", "me@board",
                                       *(["--dry-run"] * dry_run)], fake_bin, folder,
                    "BUILD_DIR")
    assert fragment in line, line
    assert not Path("/tmp/mulfree-deploy-test-target").exists()


def test_recorded_bitstream_digest_is_used(run_main, capsys, build, fake_bin):
    folder, plan = build
    status, out, err = run_main(["deploy", str(folder), "--host", "me@board", "--dry-run"],
                                capsys)
    assert status == 0 and "records no SHA-256 for" in out
    doc = json.loads((folder / BUILD_MARKER).read_text())
    doc["vivado"] = {"returncode": 0, "log": "vivado.log", "products": {}}
    for name in plan.products.values():
        (folder / name).write_bytes(name.encode()) if name != plan.products["bin"] else None
        data = (folder / name).read_bytes()
        doc["vivado"]["products"][name] = {"sha256": hashlib.sha256(data).hexdigest(),
                                           "bytes": len(data)}
    (folder / BUILD_MARKER).write_text(json.dumps(doc))
    status, out, err = run_main(["deploy", str(folder), "--host", "me@board", "--dry-run"],
                                capsys)
    assert status == 0 and "records no SHA-256" not in out, err


# Valid but unusual input: the exact argv, and no user value where an option could go ---------

GOOD = [
    ("root@192.168.1.10", "root@192.168.1.10", "root@192.168.1.10"),
    ("board", "board", "board"),
    ("me.x@zc706.lan", "me.x@zc706.lan", "me.x@zc706.lan"),
    ("u@[fe80::1%eth0]", "u@fe80::1%eth0", "u@[fe80::1%eth0]"),
    ("[::1]", "::1", "[::1]"),
]


@pytest.mark.parametrize("host, ssh_host, scp_host", GOOD)
def test_argv_is_exact_for_valid_input(run_main, capsys, build, fake_bin, tmp_path, host,
                                       ssh_host, scp_host):
    folder, plan = build
    # A local folder with shell metacharacters: it only ever is one argv element here.
    odd = tmp_path / "my build; $(touch X) 'q'"
    folder.rename(odd)
    python, rdir = "/opt/py-3.11/bin/python3.11", "/opt/mul-free_1.0/fw/"
    status, out, err = run_main(["deploy", str(odd), "--host", host, "--python", python,
                                 "--remote-dir", rdir, "--loader", "fpgautil"], capsys)
    assert status == 0, err
    calls = fake_bin.calls()
    rd = rdir.rstrip("/")
    bitbin, manifest = plan.products["bin"], f"{plan.top}.json"
    assert calls[0] == ["ssh", "--", ssh_host, f"mkdir -p -- {rd}"]
    assert calls[1] == ["scp", "--", *(str(odd / n) for n in (bitbin, OVERLAY_BLOB, ZYNQ_JSON,
                                                                manifest)),
                        f"{scp_host}:{rd}/"]
    for call in calls[2:]:
        assert call[:3] == ["ssh", "--", ssh_host] and len(call) == 4
    remote = [shlex.split(c[3]) for c in calls[2:]]
    assert remote[-1] == [python, "-m", "mulfree.host.zynq", "--check", "--manifest",
                          f"{rd}/{manifest}", "--zynq-config", f"{rd}/{ZYNQ_JSON}"]
    assert ["fpgautil", "-b", f"{rd}/{bitbin}", "-o", f"{rd}/{OVERLAY_BLOB}"] in remote
    # The slot after '--' (ssh's destination) and every scp source never start with '-'.
    assert not any(c[2].startswith("-") for c in calls)
    assert not any(a.startswith("-") for a in calls[1][2:])
    assert not (tmp_path / "X").exists() and not Path("X").exists()


def test_a_long_valid_name_still_fits_one_line(run_main, capsys, build, fake_bin):
    folder, _ = build
    host = "me@" + ".".join(["abcdefghij"] * 20)
    status, _, err = run_main(["deploy", str(folder), "--host", host, "--dry-run"], capsys)
    assert status == 0, err
