"""``mulfree deploy``: put a finished build on a Zynq board, load it, check the core.

From a build folder (:mod:`mulfree.gen.build_flow`) whose bitstream Vivado has made, deploy

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

Every command is printed before it runs; ``--dry-run`` prints them and runs nothing.
"""

import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .build_flow import (BUILD_MARKER, OVERLAY_BLOB, OVERLAY_SOURCE, VIVADO_ARGS, ZYNQ_JSON,
                         _sha256, read_build)


__all__ = ["DeployError", "DeployFailed", "Step", "plan_deploy", "run_steps",
           "CONFIGFS_OVERLAYS", "OVERLAY_NAME", "FIRMWARE_DIR", "LOADERS",
           "add_deploy_options", "run_deploy"]

#: Where configfs device tree overlays live (Xilinx and Raspberry Pi kernels).
CONFIGFS_OVERLAYS = "/sys/kernel/config/device-tree/overlays"
#: The overlay's name under :data:`CONFIGFS_OVERLAYS`.
OVERLAY_NAME = "mulfree"
#: Where the kernel's firmware loader looks, and so where the FPGA region finds the bitstream.
FIRMWARE_DIR = "/lib/firmware"
LOADERS = ("configfs", "fpgautil")
_HOST = re.compile(r"[A-Za-z0-9_.@:\[\]%-]+")


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
        The command as run here (``ssh HOST 'CMD'`` for a command on the board).
    """

    what: str
    argv: tuple

    def __str__(self):
        return shlex.join(self.argv)


def _sh(command, host):
    """A shell command on the board: through ``ssh`` to ``host``, or ``sh -c`` here."""
    return ("ssh", host, command) if host else ("sh", "-c", command)


def plan_deploy(build_dir, *, host=None, remote_dir=FIRMWARE_DIR, loader="configfs",
                python="python3", dtc=None, require_bitstream=True):
    """The steps that deploy ``build_dir``, and notes for the user.

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
        For a folder that is not a finished build or has no bitstream yet, a bad host, folder
        or loader, a missing ``dtc`` when deploying locally.
    """
    folder = Path(build_dir).resolve()
    doc = read_build(folder)
    if doc is None:
        raise DeployError("build_dir", f"build_dir {str(build_dir)!r} is not a finished mulfree "
                                       f"build folder (no {BUILD_MARKER}; make one with "
                                       f"mulfree build)")
    if host is not None and (not _HOST.fullmatch(host) or host.startswith("-")):
        raise DeployError("host", f"host must be [user@]hostname, not {host!r}")
    if not isinstance(remote_dir, str) or not remote_dir.startswith("/") \
            or any(c in remote_dir for c in "\n\0"):
        raise DeployError("remote_dir", f"remote_dir must be an absolute path on the board, "
                                        f"not {remote_dir!r}")
    remote_dir = remote_dir.rstrip("/") or "/"
    if loader not in LOADERS:
        raise DeployError("loader", f"loader must be one of {', '.join(LOADERS)}, "
                                    f"not {loader!r}")
    notes = []
    bitbin = doc["products"]["bin"]
    manifest = doc["manifest"]
    if not (folder / bitbin).is_file():
        message = (f"{folder} has no {bitbin}: run Vivado first (cd {folder} && vivado "
                   f"{' '.join(VIVADO_ARGS)}, or mulfree build ... --run)")
        if require_bitstream:
            raise DeployError("build_dir", f"build_dir {message}")
        notes.append(f"note: {message}; a real deploy stops here")
    for name, entry in doc["files"].items():
        path = folder / name
        if name in (OVERLAY_SOURCE, ZYNQ_JSON, manifest) and path.is_file() \
                and _sha256(path) != entry["sha256"]:
            notes.append(f"note: {name} was changed after mulfree build; deploying it as it is")
    steps = []
    dtc = dtc if dtc is not None else shutil.which("dtc")
    dtbo, dtso = folder / OVERLAY_BLOB, folder / OVERLAY_SOURCE
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
    if host:
        steps.append(Step("make the folder on the board", _sh(f"mkdir -p {rdir}", host)))
        steps.append(Step("copy the bitstream, overlay and configs to the board",
                          ("scp", *(str(folder / f) for f in files),
                           f"{host}:{remote_dir}/")))
    elif Path(remote_dir) != folder:
        steps.append(Step("make the firmware folder", ("mkdir", "-p", remote_dir)))
        steps.append(Step("copy the bitstream, overlay and configs",
                          ("cp", *(str(folder / f) for f in files), remote_dir + "/")))
    if compile_remote:
        steps.append(Step("compile the device tree overlay on the board",
                          _sh(f"dtc -@ -I dts -O dtb -o {q(remote[OVERLAY_BLOB])} "
                              f"{q(remote[OVERLAY_SOURCE])}", host)))
    if remote_dir != FIRMWARE_DIR:
        steps.append(Step(f"let the firmware loader look in {remote_dir} (not {FIRMWARE_DIR})",
                          _sh(f"printf %s {rdir} > /sys/module/firmware_class/parameters/path",
                              host)))
    overlay = f"{CONFIGFS_OVERLAYS}/{OVERLAY_NAME}"
    if loader == "configfs":
        steps += [
            Step("mount configfs if needed",
                 _sh(f"test -d {CONFIGFS_OVERLAYS} || mount -t configfs configfs "
                     f"/sys/kernel/config", host)),
            Step("remove an earlier mulfree overlay (if any)",
                 _sh(f"if [ -d {overlay} ]; then rmdir {overlay}; fi", host)),
            Step("create the overlay", _sh(f"mkdir {overlay}", host)),
            Step("apply it: the FPGA region loads the bitstream, then UIO and u-dma-buf appear",
                 _sh(f"cat {q(remote[OVERLAY_BLOB])} > {overlay}/dtbo", host)),
            Step("check that the overlay is applied",
                 _sh(f"test \"$(cat {overlay}/status)\" = applied", host)),
        ]
    else:
        steps.append(Step("load the bitstream and apply the overlay with fpgautil",
                          _sh(f"fpgautil -b {q(remote[bitbin])} -o {q(remote[OVERLAY_BLOB])}",
                              host)))
    check = (f"-m mulfree.host.zynq --check --manifest {q(remote[manifest])} "
             f"--zynq-config {q(remote[ZYNQ_JSON])}")
    if host:
        steps.append(Step("check the core's identity registers on the board",
                          _sh(f"{python} {check}", host)))
    else:
        steps.append(Step("check the core's identity registers",
                          (python if python != "python3" else sys.executable,
                           *shlex.split(check))))
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


_OPTION = {"build_dir": "BUILD_DIR", "host": "--host", "remote_dir": "--remote-dir",
           "loader": "--loader"}


def _option_message(exc):
    message = str(exc)
    option = _OPTION.get(exc.param)
    if option and message.startswith(exc.param + " "):
        return option + message[len(exc.param):]
    return message


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
