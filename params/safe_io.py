"""Files we do not trust, and places we are about to write: checked before any work.

Everything mulfree reads back from disk (exports, manifests, build folders, board configs) may
have been edited, truncated or planted. The helpers here turn every way such a file can be
wrong into a :class:`FileCheckError` whose message is one line naming the parameter (or the
file and field), the value and what is allowed:

- :func:`read_json`: size-limited, strict JSON (no NaN/Infinity, no duplicate keys, no float
  overflow, bounded nesting), optionally required to be an object;
- :func:`inside`: a path named by a file resolves inside that file's folder (no absolute
  paths, no ``..``, no symbolic link out of it);
- :func:`check_output_file` / :func:`check_output_dir`: a place we will write to is usable,
  probed with a real temporary file *before* the long work starts, leaving nothing behind;
- :func:`check_verilog_name`: a module name that is a plain identifier and no Verilog or
  SystemVerilog keyword;
- :func:`write_atomic`: all or nothing.

The module uses the standard library alone, so the board runtime can import it.
"""

import json
import math
import os
import re
import tempfile
from pathlib import Path


__all__ = ["FileCheckError", "read_json", "strict_loads", "json_depth", "inside", "check_output_file",
           "check_output_dir", "check_verilog_name", "VERILOG_KEYWORDS", "write_atomic",
           "MAX_JSON_BYTES", "MAX_JSON_DEPTH"]


#: Largest JSON file read (manifests and exports' graphs are a few hundred KiB).
MAX_JSON_BYTES = 64 << 20
#: Deepest nesting of arrays and objects accepted (mulfree's own files nest under 10).
MAX_JSON_DEPTH = 32


class FileCheckError(ValueError):
    """A file or path that cannot be used; the message is one line naming what and why.

    ``param`` names the parameter (command-line option or API argument) it came from.
    """

    def __init__(self, param, message):
        super().__init__(message)
        self.param = param


# Reading ------------------------------------------------------------------------------------

def _no_constant(name):
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} overflows a 64-bit float")
    return value


def _unique_keys(pairs):
    doc = {}
    for key, value in pairs:
        if key in doc:
            raise ValueError(f"key {key!r} appears twice in one object")
        doc[key] = value
    return doc


def strict_loads(text):
    """``json.loads`` without NaN/Infinity, float overflow or duplicate keys.

    Raises ``ValueError`` for any of them (and for invalid JSON), ``RecursionError`` for
    nesting deeper than the interpreter's stack: callers turn both into one-line errors.
    """
    return json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant,
                      parse_float=_finite_float)


def json_depth(doc, limit=MAX_JSON_DEPTH):
    """The nesting depth of ``doc`` (a scalar is 0), counted without recursion up to ``limit``+1."""
    depth, level = 0, [(doc, 0)]
    while level:
        node, d = level.pop()
        if isinstance(node, (dict, list)):
            d += 1
            depth = max(depth, d)
            if depth > limit:
                return depth
            level.extend((v, d) for v in (node.values() if isinstance(node, dict) else node))
    return depth


def read_json(path, param, *, what="file", kind=dict, max_bytes=MAX_JSON_BYTES,
              max_depth=MAX_JSON_DEPTH):
    """Parse the JSON file ``path`` strictly; raise :class:`FileCheckError` on anything odd.

    Parameters
    ----------
    path : path
        The file.
    param : str
        The parameter that named it, for the message (``"--config"``, ``"MODEL"``…).
    what : str
        What the file should be, for the message (``"core manifest"``).
    kind : type or None
        The type the top level must have (default: an object); ``None`` accepts any.
    """
    path = Path(path)
    try:
        if not path.is_file():
            why = ("is a folder, not a" if path.is_dir() else
                   "is not a regular file, so no" if path.exists() else "no such")
            raise FileCheckError(param, f"{param} {str(path)!r}: {why} {what}")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise FileCheckError(param, f"{param} {str(path)!r} cannot be read: "
                                    f"{exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise FileCheckError(param, f"{param} {str(path)!r}: the {what} is larger than "
                                    f"{max_bytes >> 20} MiB")
    try:
        doc = strict_loads(data.decode("utf-8"))
    except RecursionError:
        raise FileCheckError(param, f"{param} {str(path)!r}: the {what} nests deeper than "
                                    f"{max_depth} levels") from None
    except UnicodeDecodeError as exc:
        raise FileCheckError(param, f"{param} {str(path)!r}: the {what} is not UTF-8 text "
                                    f"(byte {exc.start})") from None
    except ValueError as exc:       # JSONDecodeError, and the hooks' refusals
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FileCheckError(param, f"{param} {str(path)!r}: the {what} is not valid JSON: "
                                    f"{first}") from None
    if json_depth(doc, max_depth) > max_depth:
        raise FileCheckError(param, f"{param} {str(path)!r}: the {what} nests deeper than "
                                    f"{max_depth} levels")
    if kind is not None and not isinstance(doc, kind):
        raise FileCheckError(param, f"{param} {str(path)!r}: the {what} must be a JSON "
                                    f"{'object' if kind is dict else kind.__name__}, not "
                                    f"{_json_type(doc)}")
    return doc


def _json_type(value):
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), "?")


def inside(folder, name, param):
    """``folder / name`` resolved, refused unless it stays inside ``folder``.

    ``name`` comes from a file we read: it must be a non-empty relative path string without
    NUL bytes; after resolving symbolic links it must lie inside the resolved ``folder``.
    """
    if not isinstance(name, str) or not name or "\0" in name:
        raise FileCheckError(param, f"{param} must be a file name inside {str(folder)!r}, not "
                                    f"{name!r}")
    if os.path.isabs(name) or name.startswith("~"):
        raise FileCheckError(param, f"{param} {name!r} must be a path relative to "
                                    f"{str(folder)!r}, not an absolute one")
    base = Path(folder).resolve()
    target = (base / name).resolve()
    if target != base and base not in target.parents:
        raise FileCheckError(param, f"{param} {name!r} leads outside {str(base)!r} (to "
                                    f"{str(target)!r}); files a folder names must lie inside it")
    return target


# Writing ------------------------------------------------------------------------------------

def _nearest_existing(path):
    for p in (path, *path.parents):
        if os.path.lexists(p):
            return p
    return Path(".")


def _probe_dir(folder, param, shown):
    """Create and remove a temporary file in ``folder``: the only test that cannot lie."""
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".mulfree-probe-")
    except OSError as exc:
        raise FileCheckError(param, f"{param} {shown!r} cannot be written: "
                                    f"{exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(tmp)


def check_output_file(path, param):
    """Refuse ``path`` as a file to write, before any work, unless it can be written.

    It may exist (a regular file, replaced later) or not; its folder may be missing (created
    later) as long as the nearest existing ancestor is a writable folder. Nothing is left
    behind.
    """
    shown = str(path)
    if not shown or "\0" in shown:
        raise FileCheckError(param, f"{param} must be a file path, not {shown!r}")
    path = Path(path)
    if path.is_dir():
        raise FileCheckError(param, f"{param} {shown!r} is a folder; name a file")
    if os.path.lexists(path) and not path.is_file():
        raise FileCheckError(param, f"{param} {shown!r} exists and is not a regular file")
    parent = path.parent
    existing = _nearest_existing(parent)
    if not existing.is_dir():
        raise FileCheckError(param, f"{param} {shown!r} cannot be written: {str(existing)!r} "
                                    f"is not a folder")
    _probe_dir(existing, param, shown)
    return path


def check_output_dir(path, param):
    """Refuse ``path`` as a folder to write into, before any work, unless it can be."""
    shown = str(path)
    if not shown or "\0" in shown:
        raise FileCheckError(param, f"{param} must be a folder path, not {shown!r}")
    path = Path(path)
    existing = _nearest_existing(path)
    if not existing.is_dir():
        what = "exists and is not a folder" if existing == path else \
            f"cannot be created: {str(existing)!r} is not a folder"
        raise FileCheckError(param, f"{param} {shown!r} {what}")
    _probe_dir(existing, param, shown)
    return path


def write_atomic(path, text, *, mode=None):
    """Write ``text`` (str or bytes) to ``path`` through a temporary file and a rename.

    Either the whole new file is there afterwards or the old one is untouched. ``mode``:
    the permission bits (default: what an ordinary write gives under the umask).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(text, bytes) else "w") as f:
            f.write(text)
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


# Names --------------------------------------------------------------------------------------

#: Verilog-2005 and SystemVerilog-2017 (IEEE 1800-2017 Annex B) reserved words: none may name
#: a module, or the generated Verilog does not parse.
VERILOG_KEYWORDS = frozenset("""
accept_on alias always always_comb always_ff always_latch and assert assign assume automatic
before begin bind bins binsof bit break buf bufif0 bufif1 byte case casex casez cell chandle
checker class clocking cmos config const constraint context continue cover covergroup
coverpoint cross deassign default defparam design disable dist do edge else end endcase
endchecker endclass endclocking endconfig endfunction endgenerate endgroup endinterface
endmodule endpackage endprimitive endprogram endproperty endspecify endsequence endtable
endtask enum event eventually expect export extends extern final first_match for force
foreach forever fork forkjoin function generate genvar global highz0 highz1 if iff ifnone
ignore_bins illegal_bins implements implies import incdir include initial inout input inside
instance int integer interconnect interface intersect join join_any join_none large let
liblist library local localparam logic longint macromodule matches medium modport module nand
negedge nettype new nexttime nmos nor noshowcancelled not notif0 notif1 null or output
package packed parameter pmos posedge primitive priority program property protected pull0
pull1 pulldown pullup pulsestyle_ondetect pulsestyle_onevent pure rand randc randcase
randsequence rcmos real realtime ref reg reject_on release repeat restrict return rnmos rpmos
rtran rtranif0 rtranif1 s_always s_eventually s_nexttime s_until s_until_with scalared
sequence shortint shortreal showcancelled signed small soft solve specify specparam static
string strong strong0 strong1 struct super supply0 supply1 sync_accept_on sync_reject_on
table tagged task this throughout time timeprecision timeunit tran tranif0 tranif1 tri tri0
tri1 triand trior trireg type typedef union unique unique0 unsigned until until_with untyped
use uwire var vectored virtual void wait wait_order wand weak weak0 weak1 while wildcard wire
with within wor xnor xor
""".split())

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Longest module name accepted (tools and file systems stay well within it).
MAX_NAME_LENGTH = 128


def check_verilog_name(name, param="name"):
    """``name`` if it can name a Verilog module; else :class:`ValueError` with ``param``.

    A plain ASCII identifier (letters, digits, ``_``; not starting with a digit), at most
    :data:`MAX_NAME_LENGTH` characters, and no Verilog or SystemVerilog keyword.
    """
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise FileCheckError(param, f"{param} must be a Verilog identifier (letters, digits "
                                    f"and _, not starting with a digit), not {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise FileCheckError(param, f"{param} must be at most {MAX_NAME_LENGTH} characters, "
                                    f"not {len(name)}")
    if name in VERILOG_KEYWORDS:
        raise FileCheckError(param, f"{param} must not be a Verilog/SystemVerilog keyword, "
                                    f"not {name!r}")
    return name
