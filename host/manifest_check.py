"""What a core manifest must be before the runtime, the compiler or the simulator trusts it.

A core manifest (``mulfree gen --core`` or ``mulfree build`` writes ``<top>.json``) repeats,
for the host's convenience, numbers that all follow from its ``parameters``: the register map
with the identity registers' reset values, the stream formats, the buffer sizes, the ports. The
compiler packs from the parameters and the device compares the identity registers with the
register section, so a manifest whose sections disagree (one field edited by hand, a file
from another generator) would make the two halves talk about different cores.

:func:`check_manifest` therefore rebuilds the :class:`~mulfree.params.core_config.CoreConfig`
from ``parameters`` (every field type-checked), regenerates the whole manifest from it with
:func:`mulfree.params.manifest.core_manifest` (NumPy-free, no Amaranth) and requires the document to equal it field
for field (types included: ``true`` is not ``1``). Only ``mulfree_version`` (a short version
string) and ``top`` (any Verilog identifier: ``mulfree build`` names cores) are free;
``files.verilog`` must be ``<top>.v`` and resolve inside the manifest's folder.
:func:`load_manifest` reads a file (or finds the one core manifest of a folder) with the
strict JSON reader of :mod:`mulfree.params.safe_io` and checks it. A manifest of another major
register interface (``VERSION``'s reset value: a 1.x core, before the 8-word descriptor, the
aligned shortcut and the pool) is refused first, in one line, and so is one of a newer minor
interface than this mulfree's. Interface 2.1 added multi-engine cores: ``parameters`` carry
``extra_engines`` (a list of engine objects, each type-checked like ``engine``) and
``engine_cols`` (a list of integers), the registers ``ENGINES`` and ``ENGINE_0..2``, error
``ENGINE`` and the descriptor's ``engine`` field; whether the engines go together (distinct
kinds, shared ``rows``, ``cols``, ``act_bits``, ``max_k``, physical columns dividing ``cols``)
is :class:`~mulfree.params.core_config.CoreConfig`'s check, named by field. A 2.0 manifest
(a single-engine core; none of those fields) is still accepted, as the minor-version rule
says (registers added, none changed): it is compared with the 2.0 form of the regenerated
manifest (:func:`as_interface_2_0`) and describes a core of one engine. Interface 2.2 (layer chaining) added ``parameters.fmap_banks``,
``core.buffers.fmap.count``, the register ``FMAP_BANKS``, error ``RESIDENT`` and the
descriptor's chaining flags; a 2.1 manifest (none of them) is compared with
:func:`as_interface_2_1` of the regenerated one and describes a core of one bank
(``fmap_banks = 1``), and so does a 2.0 one. Interface 2.3 (window runs on the lane unit)
added ``parameters.window_ops``, ``core.window``, the register ``WINDOW``, error ``WINDOW``,
the descriptor's window flags and the setup's ``nkk`` step (``core.setup_cycles``); a 2.2
manifest (none of them) is compared with :func:`as_interface_2_2` of the regenerated one
and describes a core without the lane unit (``window_ops = False``), and so do the older
ones. Interface 2.4 (taps runs: depthwise convolutions on an array engine) added
``parameters.taps`` and ``parameters.tap_line``, ``core.taps``, ``core.tap_side``,
``core.tap_line``, ``core.tap_engines``, the register ``TAPS``, the descriptor's ``taps`` flag
and the setup's ``ntr`` step, and the shift table's reach (``parameters.shift_reach``,
``core.shift_reach``, the register ``SHIFT_TABLE``; ``stream.shift_entry_bits`` follows it); a
2.3 manifest (none of them) is compared with :func:`as_interface_2_3` of the regenerated one
and describes a core without the tap window (``taps = 0``) whose shift entries reach 1, and so
do the older ones. Every refusal is a
:class:`ManifestError`: one line naming the file (or the parameter), the field, its value and
what the parameters say.
"""

import json
import os
import re
from pathlib import Path

from ..params.config import ArrayConfig, ConfigError
from ..params.core_config import CORE_VERSION, MAX_ENGINES, TAP_FLAG, WINDOW_FLAGS, CoreConfig
from ..params.manifest import core_manifest
from ..params.safe_io import FileCheckError, check_verilog_name, inside, read_json


__all__ = ["ManifestError", "check_manifest", "load_manifest", "config_from_parameters",
           "REGENERATE", "as_interface_2_0", "as_interface_2_1", "as_interface_2_2",
           "as_interface_2_3", "TAPS_FIELDS",
           "ENGINE_REGISTERS", "CHAIN_FLAG_NAMES"]

#: The end of every message about a section that disagrees with the parameters.
REGENERATE = "the manifest was edited or written by another generator; regenerate it with " \
             "mulfree gen --core (or mulfree build)"

#: Top-level fields compared with the regenerated manifest, in this order (the identity the
#: device checks first, the informational sections last).
_SECTIONS = ("manifest_version", "top", "files", "parameters", "registers", "engine", "engines",
             "stream",
             "core", "ports", "clock", "reset")

#: ``parameters``: name -> type of every field (``engine`` nested). Optional engine fields
#: appear only for trees (``ArrayConfig.params``).
_CORE_FIELDS = {"engine": dict, "stream_width": int, "fmap_vectors": int, "acc_entries": int,
                "weight_rows": int, "max_channels": int, "out_vectors": int,
                "shortcut_vectors": int, "pool_pixels": int, "axil_addr_width": int}
#: ``parameters`` fields of interface 2.1 (a 2.0 manifest has neither).
_CORE_FIELDS_2_1 = {"extra_engines": list, "engine_cols": list}
#: ``parameters`` field of interface 2.2 (a 2.0 or 2.1 manifest has none: one bank).
_CORE_FIELDS_2_2 = {"fmap_banks": int}
#: ``parameters`` field of interface 2.3 (an older manifest has none: no lane unit).
_CORE_FIELDS_2_3 = {"window_ops": bool}
#: ``parameters`` fields of interface 2.4 (an older manifest has neither: no tap window).
_CORE_FIELDS_2_4 = {"taps": int, "tap_line": int, "shift_reach": int}
#: ``core`` fields of interface 2.4 (:func:`mulfree.params.manifest.taps_fields`).
TAPS_FIELDS = ("taps", "tap_side", "tap_line", "tap_engines")
#: Descriptor flags interface 2.2 added (layer chaining).
CHAIN_FLAG_NAMES = ("in_bank", "acts_resident", "keep", "quiet", "short_resident")
#: Registers interface 2.1 added.
ENGINE_REGISTERS = ("ENGINES", "ENGINE_0", "ENGINE_1", "ENGINE_2")
_ENGINE_FIELDS = {"pe": str, "rows": int, "cols": int, "act_bits": int, "weight_bits": int,
                  "max_k": int}
_ENGINE_OPTIONAL = {"arch": str, "tree_levels_per_stage": int}

_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")
#: Files of a folder looked at when searching it for its core manifest.
_MAX_FOLDER_FILES = 256


class ManifestError(FileCheckError):
    """A core manifest that cannot be trusted (one line: where, the field, value, allowed).

    ``param`` names the parameter the manifest came from (``"--config"``, ``"manifest"``).
    """


def _show(value, limit=60):
    """A value as the message shows it: JSON, integers of 16 bits and more in hex too."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1 << 16:
        return f"{value} ({value:#x})"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + " ..."


def _json_type(value):
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value),
                                                                          type(value).__name__)


def _check_fields(doc, spec, optional, path, where, param):
    if not isinstance(doc, dict):
        raise ManifestError(param, f"{where}: {path} must be an object, not {_json_type(doc)}")
    for name in doc:
        if name not in spec and name not in optional:
            raise ManifestError(param, f"{where}: {path}.{name} is not a core parameter "
                                       f"(allowed: {', '.join([*spec, *optional])})")
    for name, kind in spec.items():
        if name not in doc:
            raise ManifestError(param, f"{where}: {path}.{name} is missing; {REGENERATE}")
    for name, kind in {**spec, **optional}.items():
        if name in doc and type(doc[name]) is not kind:
            what = {int: "an integer", str: "a string", dict: "an object", list: "a list",
                    bool: "a boolean"}[kind]
            raise ManifestError(param, f"{where}: {path}.{name} must be {what}, not "
                                       f"{_json_type(doc[name])} {_show(doc[name])}")


def config_from_parameters(params, *, where="manifest", param="manifest", name=None,
                           minor=None):
    """The :class:`CoreConfig` of a manifest's ``parameters`` (every field type-checked).

    ``minor``: the minor register interface the manifest describes; 0 (a 2.0 manifest) has no
    ``extra_engines`` and ``engine_cols``, any other value (None: unknown) requires both; 0
    and 1 have no ``fmap_banks`` (the core has one feature-map bank), 2 and later and None
    require it; 0 to 2 have no ``window_ops`` (no lane unit), 3 and later and None require
    it; 0 to 3 have no ``taps``, ``tap_line`` and ``shift_reach`` (no tap window, shift
    entries of -1..1), 4 and None require them.

    Raises
    ------
    ManifestError
        Naming the field for a missing, unknown or mistyped field, or a value the generator
        refuses (out of range, inconsistent: ``parameters.extra_engines`` for engines that do
        not go together, ``parameters.extra_engines[i].<field>`` for a bad engine).
    """
    multi = minor != 0
    chain = minor is None or minor >= 2
    lanes = minor is None or minor >= 3
    taps = minor is None or minor >= 4
    spec = {**_CORE_FIELDS, **(_CORE_FIELDS_2_1 if multi else {}),
            **(_CORE_FIELDS_2_2 if chain else {}), **(_CORE_FIELDS_2_3 if lanes else {}),
            **(_CORE_FIELDS_2_4 if taps else {})}
    _check_fields(params, spec, {}, "parameters", where, param)
    engines = [("engine", params["engine"])]
    if multi:
        extra, cols = params["extra_engines"], params["engine_cols"]
        for field, values, most in (("extra_engines", extra, MAX_ENGINES - 1),
                                    ("engine_cols", cols, MAX_ENGINES)):
            if len(values) > most:
                raise ManifestError(param, f"{where}: parameters.{field} must have at most "
                                           f"{most} entries (a core has at most "
                                           f"{MAX_ENGINES} engines), not {len(values)}")
        engines += [(f"extra_engines[{i}]", e) for i, e in enumerate(extra)]
        for i, c in enumerate(cols):
            if type(c) is not int:
                raise ManifestError(param, f"{where}: parameters.engine_cols[{i}] must be an "
                                           f"integer, not {_json_type(c)} {_show(c)}")
    for path, engine in engines:
        _check_fields(engine, _ENGINE_FIELDS, _ENGINE_OPTIONAL, f"parameters.{path}", where,
                      param)
        try:
            ArrayConfig(**engine)
        except ConfigError as exc:
            raise ManifestError(param, f"{where}: parameters.{path}.{exc.param}: "
                                       f"{exc}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise ManifestError(param, f"{where}: parameters.{path} is invalid: "
                                       f"{' '.join(str(exc).split())}") from None
    if not chain:
        params = {**params, "fmap_banks": 1}        # before 2.2: one feature-map buffer
    if not lanes:
        params = {**params, "window_ops": False}    # before 2.3: no lane unit
    if not taps:
        # Before 2.4: no tap window, shift entries of -1..1.
        params = {**params, "taps": 0, "shift_reach": 1}
    try:
        cfg = CoreConfig.from_params(params)
        if name is not None and name != cfg.top_name:
            cfg = CoreConfig.from_params({**params, "name": name})
    except ConfigError as exc:
        field = exc.param if exc.param in params else f"engine.{exc.param}"
        raise ManifestError(param, f"{where}: parameters.{field}: {exc}") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise ManifestError(param, f"{where}: parameters are invalid: "
                                   f"{' '.join(str(exc).split())}") from None
    return cfg


def _interface_version(doc):
    """``(major, minor)`` of the register interface the manifest describes (the reset value of
    its ``VERSION`` register), or None if the registers section does not say."""
    regs = doc.get("registers")
    regs = regs.get("registers") if isinstance(regs, dict) else None
    for entry in regs if isinstance(regs, list) else ():
        if isinstance(entry, dict) and entry.get("name") == "VERSION":
            reset = entry.get("reset")
            if isinstance(reset, int) and not isinstance(reset, bool) and 0 <= reset < 1 << 32:
                return reset >> 16, reset & 0xFFFF
    return None


def _check_interface_version(doc, where, param):
    """Refuse a core of another major register interface (1.x: the 7-word descriptor, the
    shortcut in the output's layout, no pool) or of a newer minor one before its parameters
    are compared; return the version (None if the registers do not say)."""
    version = _interface_version(doc)
    if version is not None and version[0] != CORE_VERSION[0]:
        raise ManifestError(param, f"{where}: the core speaks register interface "
                                   f"{version[0]}.{version[1]} (registers VERSION), this "
                                   f"mulfree {CORE_VERSION[0]}.{CORE_VERSION[1]}; regenerate "
                                   f"the core with mulfree gen --core (or mulfree build)")
    if version is not None and version[1] > CORE_VERSION[1]:
        raise ManifestError(param, f"{where}: the core speaks register interface "
                                   f"{version[0]}.{version[1]} (registers VERSION), newer than "
                                   f"this mulfree's {CORE_VERSION[0]}.{CORE_VERSION[1]}; "
                                   f"update mulfree or regenerate the core with this one")
    return version


def _old_meanings(regs, meanings):
    """Replace the error meanings of ``regs`` with those of ``meanings`` (a manifest's
    ``registers`` section) where it has them."""
    given = meanings.get("core_errors") if isinstance(meanings, dict) else None
    for name, entry in regs["core_errors"].items():
        old = given.get(name) if isinstance(given, dict) else None
        if isinstance(old, dict) and isinstance(old.get("meaning"), str):
            entry["meaning"] = old["meaning"]


def _set_minor(regs, minor):
    for reg in regs["registers"]:
        if reg["name"] == "VERSION":
            reg["reset"] = CORE_VERSION[0] << 16 | minor
            for f in reg["fields"]:
                if f["name"] == "minor":
                    f["reset"] = f["value"] = minor


def as_interface_2_3(doc, meanings=None):
    """The manifest a 2.3 generator wrote for the core without a tap window whose 2.4 manifest
    is ``doc`` (JSON-ready; a new dict): no ``parameters.taps``, ``tap_line`` and
    ``shift_reach``, no ``core.taps``, ``tap_side``, ``tap_line``, ``tap_engines``,
    ``shift_reach``, no registers ``TAPS`` and ``SHIFT_TABLE`` (the map's ``size`` ends at the
    last register before them), no ``taps`` flag in the descriptor, the
    setup without its ``ntr`` step (``core.setup_cycles`` 18 fewer), the global pool's one
    output register (``core.pool_latency`` 2, not 4, with a pool unit), post-processing
    without its window stages (``core.post_latency`` 3, not 4; 5, not 7, with a shortcut
    buffer), ``VERSION`` 2.3.
    ``meanings``: as :func:`as_interface_2_0` (DESCRIPTOR's, TOO_BIG's, WINDOW's and
    SHIFT_VALUE's were reworded in 2.4)."""
    doc = json.loads(json.dumps(doc))
    for name in _CORE_FIELDS_2_4:
        doc["parameters"].pop(name, None)
    core = doc.get("core")
    if isinstance(core, dict):
        for name in TAPS_FIELDS + ("shift_reach",):
            core.pop(name, None)
        if isinstance(core.get("setup_cycles"), int):
            core["setup_cycles"] -= 18            # one step: at most 16 bits, store, issue
        if core.get("pool_latency"):
            core["pool_latency"] = 2              # before the pool's emission was pipelined
        if core.get("post_latency") in (4, 7):    # before post-processing's window stages
            core["post_latency"] = {4: 3, 7: 5}[core["post_latency"]]
    regs = doc["registers"]
    _old_meanings(regs, meanings)
    regs["registers"] = [r for r in regs["registers"] if r["name"] not in ("TAPS",
                                                                           "SHIFT_TABLE")]
    regs["size"] = max(r["offset"] for r in regs["registers"]) + 4
    _set_minor(regs, 3)
    flags = doc["stream"]["descriptor"].get("flags")
    if isinstance(flags, dict):
        flags.pop(TAP_FLAG, None)
    return doc


def as_interface_2_2(doc, meanings=None):
    """The manifest a 2.2 generator wrote for the core without a lane unit whose 2.4 manifest
    is ``doc`` (JSON-ready; a new dict; :func:`as_interface_2_3` of it first): no ``parameters.window_ops``, no ``core.window``, no
    register ``WINDOW`` (the map's ``size`` ends at the last register before it), no error
    ``WINDOW``, no window flags in the descriptor, the setup without its ``nkk`` step
    (``core.setup_cycles`` 18 fewer), ``VERSION`` 2.2. ``meanings``:
    as :func:`as_interface_2_0` (DESCRIPTOR's, TOO_BIG's and REUSE's were reworded in 2.3)."""
    doc = as_interface_2_3(doc, meanings)
    doc["parameters"].pop("window_ops", None)
    core = doc.get("core")
    if isinstance(core, dict):
        core.pop("window", None)
        if isinstance(core.get("setup_cycles"), int):
            core["setup_cycles"] -= 18            # one step: at most 16 bits, store, issue
    regs = doc["registers"]
    regs["core_errors"].pop("WINDOW", None)
    _old_meanings(regs, meanings)
    regs["registers"] = [r for r in regs["registers"] if r["name"] != "WINDOW"]
    # The map ends where its last register does (WINDOW was the last, at 0x0A0).
    regs["size"] = max(r["offset"] for r in regs["registers"]) + 4
    _set_minor(regs, 2)
    flags = doc["stream"]["descriptor"].get("flags")
    for name in WINDOW_FLAGS if isinstance(flags, dict) else ():
        flags.pop(name, None)
    return doc


def as_interface_2_1(doc, meanings=None):
    """The manifest a 2.1 generator wrote for the one-bank core whose 2.4 manifest is ``doc``
    (JSON-ready; a new dict; :func:`as_interface_2_2` of it first): no
    ``parameters.fmap_banks``, no ``core.buffers.fmap.count``, no register ``FMAP_BANKS``, no
    error ``RESIDENT``, no chaining flags in the descriptor, ``VERSION`` 2.1. ``meanings``:
    as :func:`as_interface_2_0` (REUSE's was reworded in 2.2)."""
    doc = as_interface_2_2(doc, meanings)
    doc["parameters"].pop("fmap_banks", None)
    fmap = doc.get("core", {}).get("buffers", {}).get("fmap")
    if isinstance(fmap, dict):
        fmap.pop("count", None)
    regs = doc["registers"]
    regs["core_errors"].pop("RESIDENT", None)
    _old_meanings(regs, meanings)
    regs["registers"] = [r for r in regs["registers"] if r["name"] != "FMAP_BANKS"]
    _set_minor(regs, 1)
    flags = doc["stream"]["descriptor"].get("flags")
    for name in CHAIN_FLAG_NAMES if isinstance(flags, dict) else ():
        flags.pop(name, None)
    return doc


def as_interface_2_0(doc, meanings=None):
    """The manifest a 2.0 generator wrote for the single-engine core whose 2.1 manifest is
    ``doc`` (JSON-ready; a new dict; :func:`as_interface_2_1` of it first): no
    ``parameters.extra_engines`` and ``engine_cols``, no
    ``engines`` section, no registers ``ENGINES`` and ``ENGINE_0..2``, no error ``ENGINE``,
    ``VERSION`` 2.0, and word 7's bits 31:28 the descriptor's ``reserved`` field.

    ``meanings``: a manifest's ``registers`` section whose ``core_errors`` meanings (prose,
    reworded from one minor version to the next: TOO_BIG's names the shortcut map's width
    since 2.1) replace the regenerated ones; the codes and names are still compared."""
    doc = as_interface_2_1(doc, meanings)
    for name in _CORE_FIELDS_2_1:
        doc["parameters"].pop(name, None)
    doc.pop("engines", None)
    regs = doc["registers"]
    regs["core_errors"].pop("ENGINE", None)
    regs["registers"] = [r for r in regs["registers"] if r["name"] not in ENGINE_REGISTERS]
    _set_minor(regs, 0)
    for f in doc["stream"]["descriptor"]["fields"]:
        if f["name"] == "engine":
            f["name"] = "reserved"
    return doc


def _label(entry, index):
    """How a list entry is named in a message: its ``name`` if it has one, else its index."""
    if isinstance(entry, dict) and isinstance(entry.get("name"), str):
        return entry["name"]
    return str(index)


def _first_difference(got, want, path):
    """``(path, got, want)`` of the first field where ``got`` differs from ``want``, or None.

    Walks ``want`` (the regenerated manifest, a few levels deep), so an edited file nested
    arbitrarily deep costs no recursion. A missing field has ``got`` :data:`_MISSING`, an
    extra one ``want`` :data:`_EXTRA`.
    """
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return path, got, want
        for key, value in want.items():
            if key not in got:
                return f"{path}.{key}", _MISSING, value
            diff = _first_difference(got[key], value, f"{path}.{key}")
            if diff:
                return diff
        for key in got:
            if key not in want:
                return f"{path}.{key}", got[key], _EXTRA
        return None
    if isinstance(want, list):
        if not isinstance(got, list):
            return path, got, want
        if len(got) != len(want):
            return f"{path} (entries)", len(got), len(want)
        for i, (g, w) in enumerate(zip(got, want)):
            diff = _first_difference(g, w, f"{path}[{_label(w, i)}]")
            if diff:
                return diff
        return None
    if type(got) is not type(want) or got != want:
        return path, got, want
    return None


_MISSING, _EXTRA = object(), object()


def _difference_message(where, diff):
    path, got, want = diff
    if got is _MISSING:
        return f"{where}: {path} is missing (the parameters give {_show(want)}); {REGENERATE}"
    if want is _EXTRA:
        return f"{where}: {path} is not a field of a core manifest; {REGENERATE}"
    if type(got) is not type(want) and not (isinstance(got, (int, float))
                                            and isinstance(want, (int, float))
                                            and not isinstance(got, bool)):
        return (f"{where}: {path} is {_json_type(got)} {_show(got)}, but the parameters give "
                f"{_json_type(want)} {_show(want)}; {REGENERATE}")
    return f"{where}: {path} is {_show(got)} but the parameters give {_show(want)}; {REGENERATE}"


def _regenerated(cfg):
    # Through JSON, as the file went: tuples become lists, keys strings.
    return json.loads(json.dumps(core_manifest(cfg)))


def check_manifest(doc, *, param="manifest", source=None):
    """Check a core manifest against its own parameters; return ``(doc, CoreConfig)``.

    Parameters
    ----------
    doc : dict
        The manifest (as read from JSON). A ``_path`` key (the file it was read from, set by
        :func:`load_manifest`) is allowed and gives the folder ``files.verilog`` must stay in.
    param : str
        The parameter it came from, for the messages.
    source : path or None
        The file it was read from (named in the messages; its folder holds the Verilog).

    Raises
    ------
    ManifestError
        At the first field that is not what the parameters give, with a one-line message.
    """
    if source is None and isinstance(doc, dict) and isinstance(doc.get("_path"), str):
        source = doc["_path"]
    where = f"{param} {str(source)!r}" if source is not None else param
    if not isinstance(doc, dict):
        raise ManifestError(param, f"{where}: a core manifest must be a JSON object, not "
                                   f"{_json_type(doc)}")
    if doc.get("kind") != "core":
        kind = doc.get("kind")
        kind = repr(kind[:40]) if isinstance(kind, str) else _show(kind)
        raise ManifestError(param, f"{where} is not a core manifest (kind 'core', from mulfree "
                                   f"gen --core or mulfree build) but kind {kind}")
    if "_path" in doc and not isinstance(doc["_path"], str):
        raise ManifestError(param, f"{where}: _path must be a string, not "
                                   f"{_json_type(doc['_path'])}")
    version = doc.get("mulfree_version")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ManifestError(param, f"{where}: mulfree_version must be a version string (letters, "
                                   f"digits, . + _ -; at most 64), not {_show(version)}")
    for name in ("parameters", "top"):
        if name not in doc:
            raise ManifestError(param, f"{where}: {name} is missing; {REGENERATE}")
    try:
        top = check_verilog_name(doc["top"], "top")
    except FileCheckError as exc:
        raise ManifestError(param, f"{where}: {exc}") from None
    version = _check_interface_version(doc, where, param)
    minor = version[1] if version is not None else None
    cfg = config_from_parameters(doc["parameters"], where=where, param=param, name=top,
                                 minor=minor)
    want = _regenerated(cfg)
    if minor == 0:
        want = as_interface_2_0(want, meanings=doc.get("registers"))
    elif minor == 1:
        want = as_interface_2_1(want, meanings=doc.get("registers"))
    elif minor == 2:
        want = as_interface_2_2(want, meanings=doc.get("registers"))
    elif minor == 3:
        want = as_interface_2_3(want, meanings=doc.get("registers"))
    sections = [n for n in _SECTIONS if n in want]
    sections += [n for n in want if n not in sections and n not in ("mulfree_version", "kind")]
    for name in sections:
        diff = _first_difference(doc.get(name, _MISSING), want[name], name)
        if diff:
            raise ManifestError(param, _difference_message(where, diff))
    for name in doc:
        if name not in want and name != "_path":
            raise ManifestError(param, f"{where}: {name} is not a field of a core manifest; "
                                       f"{REGENERATE}")
    if source is not None:
        folder = Path(source).parent
        try:
            inside(folder, doc["files"]["verilog"], f"{where}: files.verilog")
        except FileCheckError as exc:
            raise ManifestError(param, str(exc)) from None
    return doc, cfg


def verilog_path(doc, param="manifest"):
    """The manifest's Verilog file, resolved inside the manifest's folder (``_path``)."""
    source = doc.get("_path")
    if not isinstance(source, str):
        raise ManifestError(param, f"{param}: the manifest was not read from a file, so it "
                                   f"names no Verilog file")
    try:
        return inside(Path(source).parent, doc["files"]["verilog"],
                      f"{param} {source!r}: files.verilog")
    except FileCheckError as exc:
        raise ManifestError(param, str(exc)) from None


def _find_in_folder(folder, param):
    """The one core manifest among the ``*.json`` files of ``folder``."""
    found, skipped = [], []
    names = sorted(p.name for p in folder.iterdir() if p.name.endswith(".json"))
    for name in names[:_MAX_FOLDER_FILES]:
        try:
            path = inside(folder, name, param)
            doc = read_json(folder / name, param, what="JSON file")
        except FileCheckError as exc:
            skipped.append(f"{name} ({str(exc).rsplit(': ', 1)[-1]})")
            continue
        if doc.get("kind") == "core":
            found.append(path)
        else:
            skipped.append(f"{name} (kind {_show(doc.get('kind'), 20)})")
    if len(found) == 1:
        return found[0]
    if found:
        raise ManifestError(param, f"{param} {str(folder)!r} holds {len(found)} core manifests "
                                   f"({', '.join(p.name for p in found[:5])}); name one")
    seen = f"; skipped: {', '.join(skipped[:4])}" + (" ..." if len(skipped) > 4 else "") \
        if skipped else ""
    raise ManifestError(param, f"{param} {str(folder)!r} holds no core manifest (mulfree gen "
                               f"--core writes <top>.json){seen}")


def load_manifest(manifest, *, param="--config"):
    """A checked core manifest from a dict, a ``.json`` file or a design folder holding one.

    The document is read strictly (:func:`mulfree.params.safe_io.read_json`) and checked by
    :func:`check_manifest`; the returned dict has ``_path`` set to the file it came from.

    Raises
    ------
    ManifestError
        One line naming ``param``, the file and what is wrong.
    """
    if isinstance(manifest, dict):
        return check_manifest(manifest, param="manifest" if param == "--config" else param)[0]
    if not isinstance(manifest, (str, os.PathLike)):
        raise ManifestError(param, f"{param} must be a core manifest: a dict, a .json file or "
                                   f"its folder, not {type(manifest).__name__}")
    text = os.fspath(manifest)
    if not text or "\0" in str(text):
        raise ManifestError(param, f"{param} must name a core manifest file or folder, not "
                                   f"{text!r}")
    path = Path(text)
    try:
        if path.is_dir():
            path = _find_in_folder(path, param)
        doc = read_json(path, param, what="core manifest")
    except ManifestError:
        raise
    except FileCheckError as exc:
        raise ManifestError(param, str(exc)) from None
    except OSError as exc:
        raise ManifestError(param, f"{param} {text!r} cannot be read: "
                                   f"{exc.strerror or exc}") from None
    if "_path" in doc:
        # The runtime's own key (where the file was read from): a file must not set it.
        raise ManifestError(param, f"{param} {str(path)!r}: _path is not a field of a core "
                                   f"manifest; {REGENERATE}")
    doc, _ = check_manifest(doc, param=param, source=path)
    doc["_path"] = str(path)
    return doc
