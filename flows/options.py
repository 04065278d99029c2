"""What every command-line flow shares: the one-line usage error, the checks of option values,
the one-line argument parser, the output options (``-v``/``-q``, ``--json``), and the writers
of tables, JSON reports and figures.

Nothing here imports another flow, so every flow can import it.

Conventions of every command (:func:`add_output_options`, :func:`add_json_option`):

* ``-v/--verbose`` and ``-q/--quiet`` set the level of the ``mulfree`` loggers, which only
  the command line configures (:func:`configure_logging`): status lines ("wrote X",
  "synthesizing ...") go to stderr at INFO, ``-v`` adds DEBUG, ``-q`` keeps warnings and
  errors and hides progress bars. Results (tables, reports) stay on stdout.
* ``--json FILE`` writes one document of what the command computed
  (:func:`write_json_document`): ``command``, ``mulfree_version``, ``parameters`` (as
  resolved, defaults included), ``files`` (each written file's ``path``, ``bytes`` and
  ``sha256``), then the command's own figures. The path is checked before any work
  (:func:`check_json_option`); the file is written atomically after it.
"""

import argparse
import hashlib
import json
import logging
import os
import sys
from pathlib import Path

from ..params.safe_io import check_output_file, write_atomic


__all__ = ["UsageError", "MAX_SECONDS", "check_int", "check_seconds", "check_input_file",
           "option_message", "Parser", "table", "write_json", "save_figure", "LOGGER_NAME",
           "add_output_options", "configure_logging", "show_progress", "JSON_KEYS",
           "add_json_option", "check_json_option", "file_record", "write_json_document"]


#: The logger every module's ``logging.getLogger(__name__)`` descends from (``mulfree``).
LOGGER_NAME = __name__.split(".")[0]

log = logging.getLogger(__name__)


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


# Output options ---------------------------------------------------------------------------

def add_output_options(parser):
    """Add ``-v/--verbose`` and ``-q/--quiet`` (one or the other) to a command's ``parser``.

    Both only change what reaches stderr (:func:`configure_logging`); a command's results
    on stdout are the same.
    """
    group = parser.add_argument_group("output")
    one = group.add_mutually_exclusive_group()
    one.add_argument("-v", "--verbose", action="store_true",
                     help="also debug messages on stderr")
    one.add_argument("-q", "--quiet", action="store_true",
                     help="only warnings and errors on stderr: no status lines, no progress "
                          "bars")


class _StderrHandler(logging.Handler):
    """Plain messages on whatever ``sys.stderr`` is when a record comes (a test's capture,
    a redirected stream), not the one there when the handler was made."""

    def emit(self, record):
        try:
            stream = sys.stderr
            stream.write(self.format(record) + "\n")
            stream.flush()
        except RecursionError:
            raise
        except Exception:           # noqa: BLE001 -- logging's own policy for a handler
            self.handleError(record)


def configure_logging(args):
    """Set the ``mulfree`` loggers from ``args`` (``verbose``, ``quiet``): INFO by default,
    DEBUG with ``-v``, WARNING with ``-q``; plain messages on stderr.

    Called once per command by :func:`mulfree.flows.cli.main`; library code never
    configures logging. Calling it again replaces the handler it added before.
    """
    level = logging.DEBUG if getattr(args, "verbose", False) else \
        logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    logger = logging.getLogger(LOGGER_NAME)
    for handler in list(logger.handlers):
        if isinstance(handler, _StderrHandler):
            logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False        # the command's stderr is the one place its lines go


def show_progress(args):
    """Whether a progress bar may be drawn: not with ``-q``."""
    return not getattr(args, "quiet", False)


#: The keys every ``--json`` document starts with, in this order.
JSON_KEYS = ("command", "mulfree_version", "parameters", "files")


def add_json_option(parser, figures):
    """Add ``--json FILE`` to a command's ``parser``; ``figures`` says, for its help, which
    keys the command adds after :data:`JSON_KEYS`."""
    parser.add_argument(
        "--json", metavar="FILE", default=None,
        help="also write what the command computed as one JSON document (the path is "
             "checked before any work, the file written atomically after it): command, "
             "mulfree_version, parameters (as resolved, defaults included), files (path, "
             f"bytes, sha256 of each file written), {figures}")


def check_json_option(args):
    """Refuse ``--json`` (if given) before any work unless it names a file that can be
    written: one line naming ``--json``, the value and what is allowed
    (:class:`~mulfree.params.safe_io.FileCheckError`); nothing is created."""
    path = getattr(args, "json", None)
    if path is not None:
        check_output_file(path, "--json")
    return path


def file_record(path):
    """``{"path", "bytes", "sha256"}`` of a file written (``path`` as the command names it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return {"path": str(path), "bytes": os.path.getsize(path), "sha256": digest.hexdigest()}


def write_json_document(args, parameters, files=(), **figures):
    """Write the ``--json`` document of ``args.command`` if ``args.json`` is set.

    Parameters
    ----------
    args : argparse.Namespace
        The command's options (``command``, ``json``).
    parameters : dict
        The parameters the command ran with, as resolved.
    files : iterable of path-like
        The files it wrote; each becomes a :func:`file_record`.
    **figures
        The command's own keys, after :data:`JSON_KEYS`.

    Returns
    -------
    pathlib.Path or None
        The file written, or ``None`` without ``--json``.
    """
    from ..params.version import __version__
    path = getattr(args, "json", None)
    if path is None:
        return None
    doc = {"command": getattr(args, "command", None), "mulfree_version": __version__,
           "parameters": parameters, "files": [file_record(f) for f in files], **figures}
    written = write_json(path, doc)
    log.info(f"wrote {written}")
    return written


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
