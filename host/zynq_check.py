"""The on-board self-check: is the core on this Zynq board the one its manifest describes?

``python3 -m mulfree.host.zynq --check --manifest <top>.json [--zynq-config zynq.json]``
(:mod:`mulfree.host.zynq` runs :func:`check_main`); ``mulfree deploy`` runs it on the board
after loading a build.

NumPy and the standard library only: this module runs on the board.
"""

import argparse
import sys

from .zynq_config import ZynqConfigError, load_zynq_config


__all__ = ["check_main"]


def _one_line(exc):
    """``exc``'s message on one line."""
    return " ".join(str(exc).split())


def check_main(argv=None):
    """``python3 -m mulfree.host.zynq --check``: is the core on this board the manifest's?

    Opens the device (``open_device("zynq", manifest)``, which reads the identity registers and
    compares them with the manifest) and prints what it found. ``mulfree deploy`` runs it on
    the board after loading a build.

    Parameters
    ----------
    argv : list of str, optional
        The arguments (default: the command line's).

    Returns
    -------
    int
        0 if the identity registers match, 1 if they do not or a device is missing, 2 for bad
        arguments.
    """
    from ..params.safe_io import FileCheckError
    from . import runtime
    parser = argparse.ArgumentParser(
        prog="python3 -m mulfree.host.zynq",
        description="Check that the core on this Zynq board is the one a manifest describes.")
    parser.add_argument("--check", action="store_true", required=True,
                        help="open the core and compare its identity registers with the manifest")
    parser.add_argument("--manifest", required=True, metavar="FILE",
                        help="the core's manifest (<top>.json of the build folder)")
    parser.add_argument("--zynq-config", default=None, metavar="FILE",
                        help="ZynqConfig fields as JSON (zynq.json of the build folder); default: "
                             "the defaults for the manifest")
    args = parser.parse_args(argv)
    prog = parser.prog
    options = {}
    if args.zynq_config is not None:
        try:
            options["config"] = load_zynq_config(args.zynq_config, "--zynq-config")
        except FileCheckError as exc:
            print(f"{prog}: error: {_one_line(exc)}", file=sys.stderr)
            return 2
    try:
        with runtime.open_device("zynq", args.manifest, **options) as dev:
            ident = dev.identity()
            top = dev.manifest.get("top")
    except (FileCheckError, ZynqConfigError) as exc:        # a manifest or config refused
        print(f"{prog}: error: --manifest: {_one_line(exc)}", file=sys.stderr)
        return 2
    except (runtime.DeviceError, OSError, ValueError) as exc:
        print(f"{prog}: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1
    version = ident["VERSION"]
    print(f"{prog}: the core is {top}: ID {ident['ID']:#010x}, version "
          f"{version >> 16}.{version & 0xFFFF}, identity registers match the manifest")
    return 0

