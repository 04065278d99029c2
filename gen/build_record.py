"""``build.json``, the record of a finished build folder: reading it back and checking it.

:func:`~mulfree.gen.build_folder.write_build` writes ``build.json`` last: what was generated,
with each file's SHA-256 and size. Its presence marks a finished folder. A folder is untrusted
when it is read back (``mulfree build --run``, ``mulfree deploy``, a build folder being
replaced): :func:`read_build` reads the record strictly and :func:`check_build_doc` refuses
anything :func:`~mulfree.gen.build_folder.write_build` would not have written;
:func:`check_build_file` checks a file it names against its recorded digest.
"""

import hashlib
import json
import os
import re
from pathlib import Path

from ..params.safe_io import FileCheckError, check_verilog_name, inside, read_json
from .overlay import DT_NAME, OVERLAY_BLOB, OVERLAY_SOURCE, ZYNQ_JSON
from .vivado_plan import (CLOCK_MHZ_RANGE, DMA_MM_MIN_WIDTH, IRQ_LINES, MIN_RANGE,
                          short_repr)
from .vivado_project import VIVADO_ARGS


__all__ = ["BUILD_MARKER", "BUILD_KIND", "MAX_BUILD_JSON_BYTES", "MAX_BUILD_FILE_BYTES",
           "sha256_file", "read_build", "check_build_doc", "check_build_file"]

#: The record of a finished build folder, written last.
BUILD_MARKER = "build.json"
#: Its ``kind``.
BUILD_KIND = "mulfree_vivado_build"
#: Largest ``build.json`` read (mulfree writes a few KiB).
MAX_BUILD_JSON_BYTES = 1 << 20
#: Largest file a build folder may name (a ZC706 ``.bit.bin`` is 13 MiB).
MAX_BUILD_FILE_BYTES = 1 << 30


def sha256_file(path):
    """The SHA-256 of the file at ``path``, as 64 lowercase hexadecimal digits."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: A file name a build folder may name: flat (no folders), plain characters, not starting with
#: ``-`` (an option to scp, cp or dtc) or ``.`` (hidden, ``..``).
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")
#: Upper bound of the resource estimate's counts (no Zynq-7000 has a million of anything).
_MAX_COUNT = 1_000_000


def read_build(folder, param="build_dir"):
    """The checked ``build.json`` of a build folder, or ``None`` if the folder has none.

    Parameters
    ----------
    folder : path
    param : str
        The parameter that named the folder, for messages (``"BUILD_DIR"``, ``"output"``).

    Raises
    ------
    FileCheckError
        One line, for a ``build.json`` that is not one :func:`write_build` writes: not strict
        JSON, a missing field, a value of the wrong type or out of range, a file name that
        leaves the folder (:func:`check_build_doc`).
    """
    folder = Path(folder)
    if not os.path.lexists(folder / BUILD_MARKER):
        return None
    path = inside(folder, BUILD_MARKER, param)
    if os.path.islink(folder / BUILD_MARKER):
        raise FileCheckError(param, f"{param} {str(folder / BUILD_MARKER)!r} is a symbolic "
                                    f"link; a build folder's files are regular files")
    doc = read_json(path, param, what=BUILD_MARKER, max_bytes=MAX_BUILD_JSON_BYTES)
    check_build_doc(doc, folder, param)
    return doc


def check_build_doc(doc, folder, param="build_dir"):
    """Refuse a ``build.json`` document that :func:`write_build` would not have written.

    Every field is checked for presence, type and range; the fields derived from others
    (products, manifest, overlay, Vivado command, interrupts, the board's part) must equal what
    the generator derives; every file name is a flat name (:data:`_FILE_NAME`) that stays in
    ``folder`` (:func:`~mulfree.params.safe_io.inside`), with a SHA-256 and a size. Extra fields
    are ignored. Nothing is read but ``doc`` and the folder's directory entries.

    Raises
    ------
    FileCheckError
        One line: ``<param> '<folder>/build.json': <field> must be <allowed>, not <value>``.
    """
    from ..host.zynq import ZynqConfig
    where = f"{param} {str(Path(folder) / BUILD_MARKER)!r}"

    def fail(field, allowed, value):
        raise FileCheckError(param, f"{where}: {field} must be {allowed}, not "
                                    f"{short_repr(value)}")

    def get(parent, key, field):
        if key not in parent:
            raise FileCheckError(param, f"{where}: {field} is missing (not a build.json of "
                                        f"mulfree build)")
        return parent[key]

    def obj(parent, key, field):
        value = get(parent, key, field)
        if not isinstance(value, dict):
            fail(field, "a JSON object", value)
        return value

    def integer(parent, key, field, lo, hi):
        value = get(parent, key, field)
        if type(value) is not int or not lo <= value <= hi:
            fail(field, f"an integer in [{lo}, {hi}]", value)
        return value

    def number(parent, key, field, lo, hi):
        value = get(parent, key, field)
        if type(value) not in (int, float) or not lo <= value <= hi:
            fail(field, f"a number in [{lo:g}, {hi:g}]", value)
        return value

    def same(value, expected, field):
        if isinstance(expected, dict) and isinstance(value, dict):
            # Field by field, so the message shows the one that is wrong.
            for key in expected:
                same(get(value, key, f"{field}.{key}"), expected[key], f"{field}.{key}")
            if set(value) != set(expected):
                fail(f"the keys of {field}", ", ".join(expected), ", ".join(value))
        # json.dumps compares types too (True is not 1, 1.0 is not 1).
        elif json.dumps(value, sort_keys=True) != json.dumps(expected, sort_keys=True):
            fail(field, short_repr(expected, 120), value)

    def equal(parent, key, field, expected):
        value = get(parent, key, field)
        same(value, expected, field)
        return value

    def digest(entry, field):
        if not isinstance(entry, dict):
            fail(field, "an object with sha256 and bytes", entry)
        value = get(entry, "sha256", f"{field}.sha256")
        if not isinstance(value, str) or not _SHA256.fullmatch(value):
            fail(f"{field}.sha256", "64 lowercase hexadecimal digits", value)
        integer(entry, "bytes", f"{field}.bytes", 0, MAX_BUILD_FILE_BYTES)

    if not isinstance(doc, dict):
        fail("the document", "a JSON object", doc)
    equal(doc, "kind", "kind", BUILD_KIND)
    version = get(doc, "mulfree_version", "mulfree_version")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        fail("mulfree_version", "a version string", version)
    top = get(doc, "top", "top")
    try:
        check_verilog_name(top, "top")
    except FileCheckError:
        fail("top", "a Verilog identifier (the core's module name)", top)
    equal(doc, "manifest", "manifest", f"{top}.json")
    products = {"bit": f"{top}.bit", "bin": f"{top}.bit.bin", "xsa": f"{top}.xsa"}
    equal(doc, "products", "products", products)
    equal(doc, "overlay", "overlay", {"source": OVERLAY_SOURCE, "blob": OVERLAY_BLOB})
    equal(doc, "vivado_command", "vivado_command", ["vivado", *VIVADO_ARGS])

    from .board import BOARDS
    board = obj(doc, "board", "board")
    name = get(board, "name", "board.name")
    if not isinstance(name, str) or name not in BOARDS:
        fail("board.name", f"one of {', '.join(sorted(BOARDS))}", name)
    equal(board, "part", "board.part", BOARDS[name].part)
    equal(doc, "part", "part", BOARDS[name].part)
    number(doc, "clock_mhz", "clock_mhz", *CLOCK_MHZ_RANGE)
    from ..params.core_config import STREAM_WIDTHS
    width = get(doc, "stream_width", "stream_width")
    if type(width) is not int or width not in STREAM_WIDTHS:
        fail("stream_width", f"one of {', '.join(map(str, STREAM_WIDTHS))}", width)

    zynq = obj(doc, "zynq", "zynq")
    try:
        z = ZynqConfig(**zynq)
    except (TypeError, ValueError) as exc:
        raise FileCheckError(param, f"{where}: zynq is not a valid ZynqConfig: "
                                    f"{' '.join(str(exc).split())}") from None
    for field in ("core_uio", "dma_uio", "udmabuf"):
        if not DT_NAME.fullmatch(getattr(z, field)):
            fail(f"zynq.{field}", "a device tree node name (A-Z a-z 0-9 , . _ + -)",
                 getattr(z, field))
    addresses = obj(doc, "addresses", "addresses")
    for key in ("core_base", "dma_base"):
        equal(addresses, key, f"addresses.{key}", getattr(z, key))
    for key in ("core_range", "dma_range"):
        integer(addresses, key, f"addresses.{key}", MIN_RANGE, 1 << 30)
    dma = obj(doc, "dma", "dma")
    equal(dma, "mode", "dma.mode", "simple")
    equal(dma, "length_bits", "dma.length_bits", z.dma_length_bits)
    equal(dma, "stream_width", "dma.stream_width", width)
    equal(dma, "mm_width", "dma.mm_width", max(DMA_MM_MIN_WIDTH, width))
    from .board import irq_f2p_spi
    equal(doc, "interrupts", "interrupts", {line: {"irq_f2p": i, "gic_spi": irq_f2p_spi(i)}
                                            for i, line in enumerate(IRQ_LINES)})
    res = obj(doc, "resources_estimate", "resources_estimate")
    integer(res, "dsp", "resources_estimate.dsp", 0, _MAX_COUNT)
    integer(res, "ramb18", "resources_estimate.ramb18", 0, _MAX_COUNT)
    number(res, "bram36", "resources_estimate.bram36", 0, _MAX_COUNT)

    files = obj(doc, "files", "files")
    if not 1 <= len(files) <= 64:
        fail("files", "1 to 64 entries", f"{len(files)} entries")
    for name, entry in files.items():
        if not _FILE_NAME.fullmatch(name) or name == BUILD_MARKER:
            fail("a name in files", "a plain file name in the folder (letters, digits, _ . -; "
                 "not starting with . or -)", name)
        inside(folder, name, param)
        digest(entry, f"files[{name!r}]")
    for need in (f"{top}.json", ZYNQ_JSON, OVERLAY_SOURCE):
        if need not in files:
            raise FileCheckError(param, f"{where}: files has no entry for {need} (not a "
                                        f"build.json of mulfree build)")

    vivado = get(doc, "vivado", "vivado")
    if vivado is not None:
        if not isinstance(vivado, dict):
            fail("vivado", "null or a JSON object", vivado)
        equal(vivado, "returncode", "vivado.returncode", 0)
        equal(vivado, "log", "vivado.log", "vivado.log")
        recorded = obj(vivado, "products", "vivado.products")
        if set(recorded) != set(products.values()):
            fail("vivado.products", f"entries for {', '.join(products.values())}",
                 sorted(recorded))
        for name, entry in recorded.items():
            digest(entry, f"vivado.products[{name!r}]")
    return doc


def check_build_file(folder, name, param, *, entry=None, what="file"):
    """``folder / name`` as a regular file in ``folder`` that matches its recorded digest.

    Parameters
    ----------
    folder : path
    name : str
        A file name from ``build.json`` (already checked by :func:`check_build_doc`).
    param : str
        The parameter that named the folder, for the message.
    entry : dict, optional
        ``{"sha256", "bytes"}`` recorded for it; ``None``: only the file's kind is checked.

    Returns
    -------
    Path

    Raises
    ------
    FileCheckError
        If it is missing, a symbolic link (one inside the folder could make a command write
        through it), not a regular file (a FIFO would hang the digest), or differs from
        ``entry``.
    """
    path = Path(folder) / name
    inside(folder, name, param)
    if os.path.islink(path):
        raise FileCheckError(param, f"{param} {str(folder)!r}: {name} is a symbolic link; a "
                                    f"build folder's files are regular files")
    if not path.is_file():
        raise FileCheckError(param, f"{param} {str(folder)!r}: {name} is "
                                    + ("not a regular file" if os.path.lexists(path)
                                       else "missing") + f" ({what})")
    if entry is not None:
        try:
            same = (path.stat().st_size == entry["bytes"]
                    and sha256_file(path) == entry["sha256"])
        except OSError as exc:
            raise FileCheckError(param, f"{param} {str(folder)!r}: {name} cannot be read: "
                                        f"{exc.strerror or exc}") from None
        if not same:
            raise FileCheckError(param, f"{param} {str(folder)!r}: {name} does not match the "
                                        f"SHA-256 and size build.json records for it (changed "
                                        f"after it was written); run mulfree build again")
    return path
