"""mulfree deploy: the commands it runs, with fake ssh/scp (and fpgautil) that log their arguments.

No board here: ``ssh`` and ``scp`` on PATH are scripts that append their arguments to a log,
so the tests see exactly what would reach the board. ``python3 -m mulfree.host.zynq --check``
is tested with a stand-in device.
"""

import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import pytest

from mulfree.gen import deploy
from mulfree.gen.build_flow import BUILD_MARKER, OVERLAY_BLOB, ZYNQ_JSON, write_build
from mulfree.gen.config import ArrayConfig
from mulfree.gen.core_config import CoreConfig


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
