"""What every command-line flow shares: the one-line usage error, the checks of option values,
the one-line argument parser, and the writers of tables, JSON reports and figures.

Nothing here imports another flow, so every flow can import it.
"""

import argparse
import json
import os
from pathlib import Path

from ..params.safe_io import write_atomic


__all__ = ["UsageError", "MAX_SECONDS", "check_int", "check_seconds", "check_input_file",
           "option_message", "Parser", "table", "write_json", "save_figure"]


class UsageError(Exception):
    """A bad command line; the message is one line."""


#: Longest time any ``--timeout`` / ``--time-limit`` may ask for: ten days. Larger numbers
#: (1e300, inf) overflow the clocks and ``poll`` calls they end up in.
MAX_SECONDS = 864_000.0


def check_int(option, value, lo, hi=None):
    """``value`` if it is an integer in ``lo..hi`` (``hi`` None: no upper bound), else
    :class:`UsageError` ("--rows must be in 1..1024, not 0")."""
    if value is None or isinstance(value, bool) or not isinstance(value, int) \
            or value < lo or (hi is not None and value > hi):
        allowed = f"in {lo}..{hi}" if hi is not None else f"an integer >= {lo}"
        raise UsageError(f"{option} must be {allowed}, not {value}")
    return value


def check_seconds(option, value, hi=MAX_SECONDS):
    """``value`` if it is a finite number of seconds in (0, ``hi``], else :class:`UsageError`."""
    import math
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not 0 < value <= hi:
        raise UsageError(f"{option} must be a number of seconds in (0, {hi:g}], not {value}")
    return float(value)


def check_input_file(path, option, what="file"):
    """Refuse a file to read that is missing, a folder, empty-named or unreadable."""
    shown = str(path)
    if not shown or "\0" in shown:
        raise UsageError(f"{option} must name a {what}, not {shown!r}")
    p = Path(path)
    if p.is_dir():
        raise UsageError(f"{option} {shown!r} is a folder; name a {what}")
    if not p.is_file():
        if os.path.lexists(p):
            raise UsageError(f"{option} {shown!r} is not a regular file; name a {what}")
        raise UsageError(f"{option} {shown!r}: no such {what}")
    if not os.access(p, os.R_OK):
        raise UsageError(f"{option} {shown!r} cannot be read: permission denied")
    return p


def option_message(exc, options):
    """The message of ``exc`` (an error with a ``param``) with its parameter spelt as the
    option ``options[param]`` names (``rows must be ...`` -> ``--rows must be ...``)."""
    message = str(exc)
    option = options.get(exc.param)
    if option and message.startswith(exc.param):
        return option + message[len(exc.param):]
    return message


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (argparse adds the usage block)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def table(header, rows):
    """``header`` and ``rows`` as aligned text columns: the first left, the rest right."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).rjust(w) if i else str(c).ljust(w)
                       for i, (c, w) in enumerate(zip(line, widths)))
             for line in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path, doc):
    """Write ``doc`` to ``path`` as indented JSON, atomically (folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(doc, indent=2) + "\n")
    return path


def save_figure(fig, path):
    """Lay out ``fig`` (a :class:`matplotlib.figure.Figure`, never pyplot's: the caller's
    backend is left alone), write it to ``path`` (120 dpi, the format of its suffix, PNG
    without one; folders created), return the path.

    Written to a temporary file renamed over ``path``: an interrupted run leaves the old
    figure or none, never half of one.
    """
    import os
    import tempfile
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = path.suffix.lstrip(".").lower() or "png"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, format=fmt)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)     # mkstemp's 0600 is for the temporary only
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
