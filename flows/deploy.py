"""``mulfree deploy``: put a finished build on a Zynq board, load it, check the core.

From a build folder (:mod:`mulfree.gen.build_folder`, written by ``mulfree build``) whose
bitstream Vivado has made, deploy

1. compiles the overlay ``mulfree.dtso`` to ``mulfree.dtbo`` with ``dtc -@`` (here if ``dtc``
   is installed, else on the board);
2. copies the ``.bit.bin``, the overlay, ``zynq.json`` and the core's manifest to the board's
   firmware folder (``scp`` to ``--host``, or ``cp`` when run on the board itself);
3. loads it through the Linux FPGA manager: a configfs device tree overlay
   (``mkdir /sys/kernel/config/device-tree/overlays/mulfree``, then the ``.dtbo`` written to
   its ``dtbo`` file; the overlay's ``firmware-name`` makes the FPGA region program the
   bitstream, then its UIO and u-dma-buf nodes appear), or Xilinx's ``fpgautil -b BIT -o
   DTBO`` with ``--loader fpgautil``;
4. checks the core's identity registers against the manifest on the board
   (``python3 -m mulfree.host.zynq --check``, i.e. ``open_device("zynq", manifest)``).

Every command is printed before it runs; ``--dry-run`` prints them and runs nothing. Before
any step is planned, the options are checked against allow-lists and ``build.json`` and every
file it names that is copied are checked (inside the folder, regular files, their SHA-256);
docs/security.md says what is trusted and why.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ..gen.build_record import BUILD_MARKER, check_build_file, read_build
from ..gen.overlay import OVERLAY_BLOB, OVERLAY_SOURCE, ZYNQ_JSON
from ..gen.vivado_project import VIVADO_ARGS
from ..params.safe_io import FileCheckError, read_json
from .options import UsageError, option_message


__all__ = ["add_parser", "command", "DeployError", "DeployFailed", "Step", "plan_deploy",
           "run_steps",
           "check_host", "check_python", "check_remote_dir",
           "CONFIGFS_OVERLAYS", "OVERLAY_NAME", "FIRMWARE_DIR", "LOADERS",
           "add_deploy_options", "run_deploy", "DEPLOY_OPTIONS"]

#: Where configfs device tree overlays live (Xilinx and Raspberry Pi kernels).
CONFIGFS_OVERLAYS = "/sys/kernel/config/device-tree/overlays"
#: The overlay's name under :data:`CONFIGFS_OVERLAYS`.
OVERLAY_NAME = "mulfree"
#: Where the kernel's firmware loader looks, and so where the FPGA region finds the bitstream.
FIRMWARE_DIR = "/lib/firmware"
LOADERS = ("configfs", "fpgautil")

# Allow-lists. Whatever the user gives lands in an ssh/scp argv and in a command the board's
# shell reads, so each value is refused unless it is made of characters that mean nothing to
# ssh, scp (which also reads ':' and '@') or a shell, and cannot start with '-'.
_USER = r"[A-Za-z_][A-Za-z0-9_.-]{0,31}"
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST = re.compile(rf"(?:(?P<user>{_USER})@)?(?:(?P<name>{_LABEL}(?:\.{_LABEL})*)"
                   rf"|\[(?P<ipv6>[0-9A-Fa-f:.]{{2,45}}(?:%[A-Za-z0-9_.-]{{1,15}})?)\])")
_MAX_HOST = 255
#: A program on the board: a bare name looked up on its PATH, or an absolute path.
_PYTHON = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,127}|(?:/[A-Za-z0-9_.+-]{1,255}){1,32}")
#: An absolute folder on the board: '/'-separated names of plain characters.
_REMOTE_DIR = re.compile(r"(?:/[A-Za-z0-9_.+-]{1,255}){1,32}/?")
_MAX_PATH = 1024


class DeployError(ValueError):
    """A deploy input that cannot be used; ``param`` names the parameter."""

    def __init__(self, param, message):
        super().__init__(message)
        self.param = param


class DeployFailed(RuntimeError):
    """A step's command failed. ``step`` is the :class:`Step`, ``returncode`` its status."""

    def __init__(self, message, step, returncode):
        super().__init__(message)
        self.step = step
        self.returncode = returncode


@dataclass(frozen=True)
class Step:
    """One command of a deployment.

    Attributes
    ----------
    what : str
        What it does, for the printout.
    argv : tuple of str
        The command as run here (``ssh -- HOST 'CMD'`` for a command on the board).
    """

    what: str
    argv: tuple

    def __str__(self):
        return shlex.join(self.argv)


def _short(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def check_host(host):
    """``(ssh destination, scp destination prefix)`` of ``[user@]board``, or :class:`DeployError`.

    The board is a host name or IPv4 address (letters, digits, ``_ - .``; no label starts or
    ends with ``-``) or an IPv6 address in brackets; the user a POSIX user name. ssh takes an
    IPv6 address bare, scp in brackets (``user@[fe80::1]:/dir/``).
    """
    match = _HOST.fullmatch(host) if isinstance(host, str) else None
    if match is None or len(host) > _MAX_HOST:
        raise DeployError("host", f"host must be [user@]hostname, [user@]IPv4 or "
                                  f"[user@][IPv6] (letters, digits, _ . - and no leading -, at "
                                  f"most {_MAX_HOST} characters), not {_short(host)}")
    user = f"{match['user']}@" if match["user"] else ""
    if match["ipv6"]:
        return f"{user}{match['ipv6']}", f"{user}[{match['ipv6']}]"
    return host, host


def check_python(python):
    """``python`` if it can name the board's Python (a bare name or an absolute path)."""
    if not isinstance(python, str) or not _PYTHON.fullmatch(python) \
            or len(python) > _MAX_PATH or any(p in (".", "..") for p in python.split("/")[1:]):
        raise DeployError("python", f"python must be a program name (letters, digits, _ . + -, "
                                    f"not starting with -) or an absolute path of such names, "
                                    f"not {_short(python)}")
    return python


def check_remote_dir(remote_dir):
    """``remote_dir`` without a trailing ``/`` if it is a plain absolute folder on the board.

    Its names are letters, digits and ``_ . + -`` (no ``.`` or ``..``): scp's legacy protocol
    hands the target path to the board's shell unquoted, so no quoting could make other
    characters safe there.
    """
    if not isinstance(remote_dir, str) or not _REMOTE_DIR.fullmatch(remote_dir) \
            or len(remote_dir) > _MAX_PATH \
            or any(p in (".", "..") for p in remote_dir.strip("/").split("/")):
        raise DeployError("remote_dir", f"remote_dir must be an absolute path on the board "
                                        f"made of names of letters, digits and _ . + - (not . "
                                        f"or ..), not {_short(remote_dir)}")
    return remote_dir.rstrip("/")


def _sh(command, host):
    """A shell command on the board: through ``ssh`` to ``host``, or ``sh -c`` here.

    ``--`` ends ssh's options, so the destination can never be read as one.
    """
    return ("ssh", "--", host, command) if host else ("sh", "-c", command)


def _check_text(folder, name, param):
    """Refuse a device tree source that pulls in other files when compiled.

    ``dtc`` follows ``/include/`` and ``/incbin/`` (and cpp's ``#include`` if preprocessed):
    a planted overlay could copy any file readable here into the blob sent to the board.
    mulfree's overlay uses none of them.
    """
    try:
        text = (Path(folder) / name).read_bytes()
    except OSError as exc:
        raise FileCheckError(param, f"{param} {str(folder)!r}: {name} cannot be read: "
                                    f"{exc.strerror or exc}") from None
    for word in (b"/include/", b"/incbin/", b"#include"):
        if word in text:
            raise FileCheckError(param, f"{param} {str(folder)!r}: {name} contains "
                                        f"{word.decode()}, which mulfree's overlay never "
                                        f"does; refusing to compile it")


def plan_deploy(build_dir, *, host=None, remote_dir=FIRMWARE_DIR, loader="configfs",
                python="python3", dtc=None, require_bitstream=True):
    """The steps that deploy ``build_dir``, and notes for the user.

    Every option is checked against an allow-list and every file the folder names is checked
    (inside the folder, a regular file, its SHA-256 as recorded in ``build.json``) before a
    step is planned; values that reach a shell on the board are quoted for it as well.

    Parameters
    ----------
    build_dir : path
        A finished build folder (with ``build.json``).
    host : str, optional
        ``[user@]board`` to reach over ``ssh``/``scp``; ``None`` when running on the board.
    remote_dir : str
        Absolute folder on the board for the files (default ``/lib/firmware``, where the
        FPGA manager looks; another folder is added to the firmware search path).
    loader : str
        ``"configfs"`` (default) or ``"fpgautil"``.
    python : str
        The board's Python for the identity check (local default: this interpreter).
    dtc : str, optional
        The device tree compiler here (default: ``dtc`` from PATH, if any).
    require_bitstream : bool
        Refuse a folder without the ``.bit.bin`` (``False``: only note it, for a dry run).

    Returns
    -------
    (list of Step, list of str)

    Raises
    ------
    DeployError
        For a bad host, folder, loader or Python, a folder that is not a finished build or
        has no bitstream yet, a missing ``dtc`` when deploying locally.
    FileCheckError
        For a ``build.json`` that is not valid, or a file it names that left the folder, is
        not a regular file or does not match its recorded SHA-256.
    """
    if host is not None:
        ssh_host, scp_host = check_host(host)
    else:
        ssh_host = scp_host = None
    remote_dir = check_remote_dir(remote_dir)
    if loader not in LOADERS:
        raise DeployError("loader", f"loader must be one of {', '.join(LOADERS)}, "
                                    f"not {_short(loader)}")
    python = check_python(python)
    if not isinstance(build_dir, (str, os.PathLike)) or not str(build_dir) \
            or "\0" in str(build_dir):
        raise DeployError("build_dir", f"build_dir must be a folder path, not "
                                       f"{_short(build_dir)}")
    folder = Path(build_dir).resolve()
    if not folder.is_dir():
        raise DeployError("build_dir", f"build_dir {str(build_dir)!r} is not a folder")
    param = "BUILD_DIR"
    doc = read_build(folder, param)
    if doc is None:
        raise DeployError("build_dir", f"build_dir {str(build_dir)!r} is not a finished mulfree "
                                       f"build folder (no {BUILD_MARKER}; make one with "
                                       f"mulfree build)")
    notes = []
    bitbin = doc["products"]["bin"]
    manifest = doc["manifest"]
    if not os.path.lexists(folder / bitbin):
        message = (f"{folder} has no {bitbin}: run Vivado first (cd {shlex.quote(str(folder))} "
                   f"&& vivado {' '.join(VIVADO_ARGS)}, or mulfree build ... --run)")
        if require_bitstream:
            raise DeployError("build_dir", f"build_dir {message}")
        notes.append(f"note: {message}; a real deploy stops here")
    else:
        recorded = (doc["vivado"] or {}).get("products", {}).get(bitbin)
        check_build_file(folder, bitbin, param, entry=recorded, what="the bitstream")
        if recorded is None:
            notes.append(f"note: build.json records no SHA-256 for {bitbin} (Vivado was run "
                         f"outside mulfree build --run); copying it as it is")
    # What is copied and read on the board must be what mulfree build wrote.
    for name in (manifest, ZYNQ_JSON, OVERLAY_SOURCE):
        check_build_file(folder, name, param, entry=doc["files"][name])
    _check_text(folder, OVERLAY_SOURCE, param)
    if read_json(folder / ZYNQ_JSON, param, what="ZynqConfig") != doc["zynq"]:
        raise FileCheckError(param, f"{param} {str(folder)!r}: {ZYNQ_JSON} differs from the "
                                    f"zynq field of {BUILD_MARKER}")
    if read_json(folder / manifest, param, what="core manifest").get("top") != doc["top"]:
        raise FileCheckError(param, f"{param} {str(folder)!r}: {manifest} is not the manifest "
                                    f"of the core {doc['top']}")
    steps = []
    dtc = dtc if dtc is not None else shutil.which("dtc")
    dtbo, dtso = folder / OVERLAY_BLOB, folder / OVERLAY_SOURCE
    # dtc writes the blob: a link there, even to a file in the folder, would be written through.
    if os.path.lexists(dtbo) and (os.path.islink(dtbo) or not dtbo.is_file()):
        raise FileCheckError(param, f"{param} {str(folder)!r}: {OVERLAY_BLOB} is not a regular "
                                    f"file")
    compile_remote = False
    if dtc:
        steps.append(Step("compile the device tree overlay",
                          (dtc, "-@", "-I", "dts", "-O", "dtb", "-o", str(dtbo), str(dtso))))
    elif dtbo.is_file() and dtbo.stat().st_mtime >= dtso.stat().st_mtime:
        notes.append(f"note: dtc is not installed here; using the compiled {dtbo}")
    elif host:
        compile_remote = True
        notes.append("note: dtc is not installed here: the overlay is compiled on the board "
                     "(which then needs dtc)")
    else:
        raise DeployError("dtc", "dtc (the device tree compiler) is not on PATH: install it "
                                 "(Debian: apt-get install device-tree-compiler) or compile "
                                 f"the overlay elsewhere: dtc -@ -I dts -O dtb -o {OVERLAY_BLOB} "
                                 f"{OVERLAY_SOURCE}")
    files = [bitbin, OVERLAY_SOURCE if compile_remote else OVERLAY_BLOB, ZYNQ_JSON, manifest]
    q = shlex.quote
    rdir = q(remote_dir)
    remote = {name: f"{remote_dir}/{name}" for name in files + [OVERLAY_BLOB]}
    # Local paths are absolute (they start with '/', so no tool reads them as an option, and
    # scp never as host:path); '--' ends the options of every tool that takes it anyway.
    if host:
        steps.append(Step("make the folder on the board", _sh(f"mkdir -p -- {rdir}", ssh_host)))
        steps.append(Step("copy the bitstream, overlay and configs to the board",
                          ("scp", "--", *(str(folder / f) for f in files),
                           f"{scp_host}:{remote_dir}/")))
    elif Path(remote_dir).resolve() != folder:
        steps.append(Step("make the firmware folder", ("mkdir", "-p", "--", remote_dir)))
        steps.append(Step("copy the bitstream, overlay and configs",
                          ("cp", "--", *(str(folder / f) for f in files), remote_dir + "/")))
    if compile_remote:
        steps.append(Step("compile the device tree overlay on the board",
                          _sh(f"dtc -@ -I dts -O dtb -o {q(remote[OVERLAY_BLOB])} "
                              f"{q(remote[OVERLAY_SOURCE])}", ssh_host)))
    if remote_dir != FIRMWARE_DIR:
        steps.append(Step(f"let the firmware loader look in {remote_dir} (not {FIRMWARE_DIR})",
                          _sh(f"printf %s {rdir} > /sys/module/firmware_class/parameters/path",
                              ssh_host)))
    overlay = f"{CONFIGFS_OVERLAYS}/{OVERLAY_NAME}"
    if loader == "configfs":
        steps += [
            Step("mount configfs if needed",
                 _sh(f"test -d {CONFIGFS_OVERLAYS} || mount -t configfs configfs "
                     f"/sys/kernel/config", ssh_host)),
            Step("remove an earlier mulfree overlay (if any)",
                 _sh(f"if [ -d {overlay} ]; then rmdir {overlay}; fi", ssh_host)),
            Step("create the overlay", _sh(f"mkdir {overlay}", ssh_host)),
            Step("apply it: the FPGA region loads the bitstream, then UIO and u-dma-buf appear",
                 _sh(f"cat {q(remote[OVERLAY_BLOB])} > {overlay}/dtbo", ssh_host)),
            Step("check that the overlay is applied",
                 _sh(f"test \"$(cat {overlay}/status)\" = applied", ssh_host)),
        ]
    else:
        steps.append(Step("load the bitstream and apply the overlay with fpgautil",
                          _sh(f"fpgautil -b {q(remote[bitbin])} -o {q(remote[OVERLAY_BLOB])}",
                              ssh_host)))
    check = ("-m", "mulfree.host.zynq", "--check", "--manifest", remote[manifest],
             "--zynq-config", remote[ZYNQ_JSON])
    if host:
        steps.append(Step("check the core's identity registers on the board",
                          _sh(shlex.join((python, *check)), ssh_host)))
    else:
        steps.append(Step("check the core's identity registers",
                          (python if python != "python3" else sys.executable, *check)))
    return steps, notes


def run_steps(steps, *, dry_run=False, out=None):
    """Print each step's command and, unless ``dry_run``, run it; stop at the first failure.

    Raises
    ------
    DeployFailed
        Naming the step, its command and its exit status.
    """
    out = out or sys.stdout
    for i, step in enumerate(steps, 1):
        print(f"# {i}/{len(steps)} {step.what}", file=out)
        print(f"$ {step}", file=out, flush=True)
        if dry_run:
            continue
        try:
            result = subprocess.run(step.argv)
        except OSError as exc:
            raise DeployFailed(f"step {i} ({step.what}) could not start {step.argv[0]!r}: "
                               f"{exc.strerror or exc}", step, None) from None
        if result.returncode != 0:
            raise DeployFailed(f"step {i} ({step.what}) failed with exit status "
                               f"{result.returncode}: {step}", step, result.returncode)


def add_deploy_options(parser):
    """Options of ``mulfree deploy``."""
    parser.add_argument("build_dir", metavar="BUILD_DIR",
                        help="a build folder of mulfree build, after Vivado made its bitstream")
    parser.add_argument("--host", default=None, metavar="USER@BOARD",
                        help="the board, reached with ssh/scp (as root, or a user allowed to "
                             "load overlays); default: run on this machine, the board")
    parser.add_argument("--remote-dir", default=FIRMWARE_DIR, metavar="DIR",
                        help=f"folder on the board for the files (default: {FIRMWARE_DIR}, "
                             "where the FPGA manager finds the bitstream)")
    parser.add_argument("--loader", default="configfs", metavar="HOW",
                        help=f"{' or '.join(LOADERS)}: a configfs device tree overlay "
                             "(default), or Xilinx's fpgautil -b BIT -o DTBO")
    parser.add_argument("--python", default="python3", metavar="EXE",
                        help="the board's Python for the identity check (default: python3; "
                             "on the board itself: this Python)")
    parser.add_argument("--dry-run", action="store_true",
                        help="print every command, run none")


#: Parameter of a :class:`DeployError` -> the option (or program) it names.
DEPLOY_OPTIONS = {"build_dir": "BUILD_DIR", "host": "--host", "remote_dir": "--remote-dir",
                  "loader": "--loader", "python": "--python", "dtc": "dtc"}


def add_parser(subparsers):
    """Add the ``deploy`` command to the ``mulfree`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``add_subparsers`` of the ``mulfree`` parser returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``deploy`` parser; its ``func`` default is :func:`command`.
    """
    p = subparsers.add_parser(
        "deploy", help="load a built bitstream on a Zynq board and check the core",
        description="Copy a build's .bit.bin, compiled overlay and configs to the board (scp "
                    "with --host, else locally), load them through the Linux FPGA manager "
                    "(configfs device tree overlay, or fpgautil), and check the core's identity "
                    "registers there. Every command is printed; --dry-run runs none.")
    add_deploy_options(p)
    p.set_defaults(func=command)
    return p


def command(args):
    """``mulfree deploy`` with its errors as one-line usage errors.

    Parameters
    ----------
    args : argparse.Namespace
        The options of the command :func:`add_parser` defines.

    Returns
    -------
    int
        Exit status: 0, or 1 if a step on the board fails.

    Raises
    ------
    mulfree.flows.options.UsageError
        A bad option or a folder that is not a finished build.
    mulfree.params.safe_io.FileCheckError
        A ``build.json`` or a file it names that is not what ``mulfree build`` wrote.
    """
    try:
        return run_deploy(args)
    except DeployError as e:
        raise UsageError(option_message(e, DEPLOY_OPTIONS)) from None


def run_deploy(args):
    """``mulfree deploy``: the exit status; raises :class:`DeployError` for bad input."""
    steps, notes = plan_deploy(args.build_dir, host=args.host, remote_dir=args.remote_dir,
                               loader=args.loader, python=args.python,
                               require_bitstream=not args.dry_run)
    for note in notes:
        print(note)
    where = args.host or "this machine"
    print(f"deploying {Path(args.build_dir).resolve()} to {where}"
          + (" (dry run: nothing is run)" if args.dry_run else ""))
    try:
        run_steps(steps, dry_run=args.dry_run)
    except DeployFailed as exc:
        print(f"mulfree deploy: {exc}", file=sys.stderr)
        return 1
    if not args.dry_run:
        print(f"deployed: the core answers at its addresses on {where}")
    return 0
