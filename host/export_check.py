"""The file form of an export: writing it, its digest, and the strict loader.

:func:`~mulfree.host.export_nodes.model_graph` is the ``model.json`` graph of a model (each
node kind's fields are :mod:`mulfree.host.export_nodes`'s) and :func:`graph_digest` its
``integrity.sha256``; :func:`write_export` writes them, and the loader compares what it reads
with them.

:func:`load_export` reads format 3.0 (a graph of named nodes) and 2.0 (a chain) and trusts
nothing in the export folder. In this order it checks, and refuses with an
:class:`~mulfree.host.export_format.ExportError` whose message is one line naming the file,
the field (``layers.2.weight_bits``), the value and what is allowed:

1. the folder and both files, each inside the folder (no symbolic link out of it);
2. ``model.json`` as strict JSON (:func:`mulfree.params.safe_io.read_json`: no NaN or Infinity,
   no duplicate keys, bounded size and nesting), its format name and version (``3.0`` or
   ``2.0``; a 1.x export predates the digest and must be exported again);
3. every field of the graph: no unknown and no missing key, each value's JSON type (a boolean
   is not an integer, ``8.0`` is not ``8``, a name is a string) and range; a node of a kind
   the version does not have is refused naming the kinds it has;
4. ``model.safetensors``: the file ``tensors_file`` names (the format has exactly one), its
   size and sha256, its header (strict JSON, metadata, signed integer dtypes only), then each
   tensor against the graph (present, dtype, shape, nothing unlisted);
5. the model those fields and tensors make (:func:`~mulfree.params.int_model.graph_nodes`):
   names unique, every input an earlier node or the model's input (no dangling input, no
   cycle), every node but the last read, each kind's arity, shapes, widths and scales (an
   add's ``in_shifts`` and a concat's ``shifts`` align its inputs), value ranges of codes,
   biases, shifts, table shifts and offsets for the declared widths;
6. every field the writer derives (shapes, ``act_bits`` and ``out_scale_exp`` of the nodes
   that keep their input's, ``max_k``, ``acc_width``, encodings, tensor dtypes, constant
   fields...) equal to what the writer writes for that model;
7. last, ``integrity.sha256``, the digest of the whole graph with the tensors' sha256
   (:func:`graph_digest`): a graph that passes every check but was edited after the export
   (``input.scale_exp`` -6 -> -5, a weight code) is refused.

The digest does not replace the checks (anyone can recompute it): whatever passes steps 1-6
computes the same in the golden model, the compiler and the core.
"""

import hashlib
import json
import os
import re
import tempfile

import numpy as np

from ..params.int_model import (FORMAT_NAME, FORMAT_VERSION, FORMAT_VERSIONS, MAX_DIM,
                                MAX_NAME_LENGTH, MODEL_JSON, MODEL_TENSORS, OUTPUTS,
                                SCALE_EXP_LIMITS, ExportError, IntInput, IntModel, graph_nodes)
from ..params.safe_io import (MAX_JSON_DEPTH, FileCheckError, inside, json_depth, read_json,
                              strict_loads)
from .export_nodes import (CHAIN_FIELDS, TENSOR_FIELDS, build_node, check_keys,
                           check_node_fields, default_inputs, fail, field_path, json_choice,
                           json_int, json_int_list, model_graph, show)


__all__ = ["load_export", "write_export", "model_graph", "graph_digest", "MAX_TENSOR_BYTES",
           "LAYER_FIELDS"]


#: Largest ``model.safetensors`` read (the demo models' tensors are a few hundred KiB).
MAX_TENSOR_BYTES = 1 << 31
#: The fields of a layer of format 2.0, by kind (those of 3.0: ``export_nodes.NODE_FIELDS``).
LAYER_FIELDS = CHAIN_FIELDS

_HEX64 = re.compile(r"[0-9a-f]{64}")
#: safetensors' names of the dtypes an export may hold.
_ST_DTYPES = {"I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64"}
_TOP = ("format", "version", "name", "input", "layers", "output", "tensors_file", "integrity")
_INPUT = ("shape", "act_bits", "scale_exp", "quantization")


def graph_digest(graph):
    """The ``integrity.sha256`` of a ``model.json`` graph: sha256 of its canonical JSON.

    Canonical: every field but ``integrity`` itself, keys sorted, no whitespace, ASCII only;
    ``tensors_file.sha256`` is among the fields, so the digest covers the tensors too. Layout
    and key order of the file do not change it; any value does.
    """
    body = {k: v for k, v in graph.items() if k != "integrity"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


# Fields of model.json -----------------------------------------------------------------------

def _hex(obj, key, where):
    value = obj[key]
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        p = field_path(where, key)
        fail(p, f"{p} must be 64 lowercase hexadecimal digits (a sha256), not {show(value)}")
    return value


def _check_fields(graph, version):
    """Every field of the graph: keys, JSON types, ranges."""
    check_keys(graph, "", _TOP)
    name = graph["name"]
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME_LENGTH
                             or not name.isprintable()):
        fail("name", f"name must be null or a printable string of at most "
                     f"{MAX_NAME_LENGTH} characters, not {show(name)}")
    inp = check_keys(graph["input"], "input", _INPUT)
    json_int_list(inp, "shape", "input", (1, 3), 1, MAX_DIM)
    json_int(inp, "act_bits", "input", 2, 16)
    json_int(inp, "scale_exp", "input", *SCALE_EXP_LIMITS)
    json_choice(graph, "output", "", OUTPUTS)
    layers = graph["layers"]
    if not isinstance(layers, list) or not layers:
        fail("layers", f"layers must be a non-empty list of layers, not {show(layers)}")
    for i, entry in enumerate(layers):
        check_node_fields(i, entry, version)
    spec = check_keys(graph["tensors_file"], "tensors_file", ("name", "sha256", "size"))
    if spec["name"] != MODEL_TENSORS:
        fail("tensors_file.name", f"tensors_file.name must be {MODEL_TENSORS!r} (an export "
                                  f"has one tensor file, next to {MODEL_JSON}), not "
                                  f"{show(spec['name'])}")
    _hex(spec, "sha256", "tensors_file")
    json_int(spec, "size", "tensors_file", 8, MAX_TENSOR_BYTES)
    _hex(check_keys(graph["integrity"], "integrity", ("sha256",)), "sha256", "integrity")


def _read_graph(folder):
    """``model.json``: strict JSON, this format and one of its versions."""
    try:
        path = inside(folder, MODEL_JSON, MODEL_JSON)
        graph = read_json(path, MODEL_JSON, what="export graph")
    except FileCheckError as exc:
        raise ExportError(MODEL_JSON, f"not a usable mulfree export: {exc}") from None
    found = graph.get("format")
    if found != FORMAT_NAME:
        fail("format", f"not a mulfree export: format is {show(found)}, "
                       f"expected {FORMAT_NAME!r}")
    version = graph.get("version")
    if not isinstance(version, str) or version not in FORMAT_VERSIONS:
        old = isinstance(version, str) and re.fullmatch(r"1\.\d+", version)
        why = ("was written before exports carried a digest of their graph" if old
               else "is not supported")
        fail("version", f"format version {show(version)} {why} (this mulfree reads "
                        f"{' and '.join(FORMAT_VERSIONS)}); export the model again "
                        f"(mulfree export)")
    return graph


# model.safetensors --------------------------------------------------------------------------

def _check_header(data, version):
    """The safetensors header: strict JSON, our metadata, signed integer tensors only."""
    def bad(why):
        fail(MODEL_TENSORS, f"not a valid safetensors file ({why})", MODEL_TENSORS)

    if len(data) < 8:
        bad(f"{len(data)} bytes, shorter than the 8-byte header length")
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        bad(f"the header length {n} runs past the end of the file")
    try:
        header = strict_loads(data[8:8 + n].decode("utf-8"))
    except RecursionError:
        bad(f"the header nests deeper than {MAX_JSON_DEPTH} levels")
    except (UnicodeDecodeError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        bad(f"the header is not valid JSON: {first[:100]}")
    if json_depth(header) > MAX_JSON_DEPTH:
        bad(f"the header nests deeper than {MAX_JSON_DEPTH} levels")
    if not isinstance(header, dict):
        bad("the header is not an object")
    meta = header.get("__metadata__")
    want = {"format": FORMAT_NAME, "version": version}
    if meta != want:
        fail(f"{MODEL_TENSORS}.__metadata__", f"the metadata is {show(meta)}, this export's "
                                              f"is {show(want)}", MODEL_TENSORS)
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if dtype not in _ST_DTYPES:
            fail(name, f"tensor {show(name)} has dtype {show(dtype)}; an export holds "
                       f"signed integers only ({', '.join(_ST_DTYPES)})", MODEL_TENSORS)


def _read_tensors(folder, graph):
    """The arrays of the tensor file, after its size, sha256 and header are checked."""
    from safetensors import SafetensorError
    from safetensors.numpy import load

    spec = graph["tensors_file"]
    try:
        path = inside(folder, spec["name"], "tensors_file.name")
    except FileCheckError as exc:
        raise ExportError("tensors_file.name", f"{MODEL_JSON}: {exc}") from None
    if not path.is_file():
        fail(MODEL_TENSORS, f"not a mulfree export: {str(folder)!r} has no {MODEL_TENSORS}",
             MODEL_TENSORS)
    try:
        with open(path, "rb") as f:
            data = f.read(spec["size"] + 1)
            actual = os.fstat(f.fileno()).st_size
    except OSError as exc:
        fail(MODEL_TENSORS, f"cannot be read: {exc.strerror or exc}", MODEL_TENSORS)
    if len(data) != spec["size"] or hashlib.sha256(data).hexdigest() != spec["sha256"]:
        raise ExportError(MODEL_TENSORS, f"{MODEL_TENSORS} is truncated or modified (sha256 "
                                         f"mismatch: {actual} bytes, {MODEL_JSON} expects "
                                         f"{spec['size']})")
    _check_header(data, graph["version"])
    try:
        return load(data)
    except (SafetensorError, ValueError, TypeError, OverflowError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        fail(MODEL_TENSORS, f"not a valid safetensors file ({first})", MODEL_TENSORS)


def _take(arrays, spec, used):
    """The array a tensor spec names, with the spec's dtype and shape, as int64."""
    name = spec["name"]
    if name not in arrays:
        fail(name, f"has no tensor {name} (listed in {MODEL_JSON})", MODEL_TENSORS)
    arr = arrays[name]
    if str(arr.dtype) != spec["dtype"]:
        fail(name, f"{name} has dtype {arr.dtype}, {MODEL_JSON} says {spec['dtype']}",
             MODEL_TENSORS)
    if list(arr.shape) != spec["shape"]:
        fail(name, f"{name} has shape {list(arr.shape)}, {MODEL_JSON} says {spec['shape']}",
             MODEL_TENSORS)
    used.add(name)
    return arr.astype(np.int64)


def _build(graph, arrays):
    """The :class:`IntModel` the checked fields and arrays make (not validated yet).

    A 3.0 node named ``layers.<i>`` (its own index) gets ``name=None``, and one reading the
    previous node (the first: the input) ``inputs=None``: what those defaults mean, so a chain
    reads back as the chain it was written from.
    """
    version = graph["version"]
    entries = graph["layers"]
    names = [f"layers.{i}" if version == "2.0" else e["name"] for i, e in enumerate(entries)]
    used, layers = set(), []
    for i, entry in enumerate(entries):
        got = {field: _take(arrays, spec, used) for field, spec in entry["tensors"].items()}
        name = inputs = None
        if version != "2.0":
            name = None if names[i] == f"layers.{i}" else names[i]
            inputs = tuple(entry["inputs"])
            inputs = None if inputs == default_inputs(names, i) else inputs
        layers.append(build_node(entry, got, name, inputs, version))
    extra = sorted(set(arrays) - used)
    if extra:
        fail(extra[0], f"holds tensors {MODEL_JSON} does not list: {show(', '.join(extra))}",
             MODEL_TENSORS)
    inp = graph["input"]
    return IntModel(IntInput(tuple(inp["shape"]), inp["act_bits"], inp["scale_exp"]), layers,
                    output=graph["output"], name=graph["name"])


def _validate(graph, model):
    """:func:`graph_nodes` of the model, its error naming the file the field came from."""
    try:
        return graph_nodes(model)
    except ExportError as exc:
        # layers.<i>.<field>: from the tensor file if the node stores that field there.
        parts = exc.param.split(".")
        file = MODEL_JSON
        if len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit() \
                and parts[2] in TENSOR_FIELDS \
                and parts[2] in graph["layers"][int(parts[1])]["tensors"]:
            file = MODEL_TENSORS
        raise ExportError(exc.param, f"{file}: {exc}") from None


# Derived fields and the digest --------------------------------------------------------------

def _same(a, b):
    """JSON equality that tells ``true`` from ``1`` and ``1.0`` from ``1``."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _first_difference(want, got, path):
    """The path, written value and expected value of the first field that differs."""
    if isinstance(want, dict) and isinstance(got, dict) and want.keys() == got.keys():
        for key in want:
            if not _same(want[key], got[key]):
                return _first_difference(want[key], got[key], field_path(path, key))
    # Into lists of objects (layers), not of numbers: "in_shape is [7, 7, 5]" reads better.
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got) \
            and all(isinstance(w, dict) for w in want):
        for i, (w, g) in enumerate(zip(want, got)):
            if not _same(w, g):
                # layers.2 as in the tensors' names; other lists index with brackets.
                at = f"{path}.{i}" if path == "layers" else f"{path}[{i}]"
                return _first_difference(w, g, at)
    return path, got, want


def _check_derived(graph, model, infos):
    """Every field of the graph equals what the writer writes for ``model``."""
    want, _ = model_graph(model, graph["version"], infos)
    want = json.loads(json.dumps(want))             # tuples -> lists, as read back
    got = {key: graph[key] for key in want}
    if not _same(want, got):
        path, value, expected = _first_difference(want, got, "")
        fail(path, f"{path} is {show(value)}, but the rest of the export makes it "
                   f"{show(expected)}")


def load_export(path) -> IntModel:
    """Read the export folder ``path`` (format 3.0 or 2.0) and check every byte of it (see
    the module docstring).

    Returns
    -------
    IntModel
        The model, valid (:func:`~mulfree.params.int_model.graph_nodes`). Nodes named
        ``layers.<i>`` and reading the previous node come back with ``name`` and ``inputs``
        ``None`` (what those defaults mean).

    Raises
    ------
    ExportError
        One line naming the file, the field, the value and what is allowed; ``param`` is the
        field's path (``layers.2.weight_bits``, ``input.scale_exp``, ``integrity.sha256``).
    """
    try:
        folder = os.fspath(path)
    except TypeError:
        raise ExportError("path", f"path must name an export folder (a str or path), not "
                                  f"{type(path).__name__}") from None
    if isinstance(folder, bytes):
        folder = os.fsdecode(folder)
    if not folder or "\0" in folder:
        raise ExportError("path", f"path must name an export folder, not {folder!r}")
    if not os.path.isdir(folder):
        raise ExportError("path", f"not a mulfree export: {folder!r} is not a directory")
    for name in (MODEL_JSON, MODEL_TENSORS):
        if not os.path.lexists(os.path.join(folder, name)):
            raise ExportError(name, f"not a mulfree export: {folder!r} has no {name}")
    graph = _read_graph(folder)
    _check_fields(graph, graph["version"])
    arrays = _read_tensors(folder, graph)
    model = _build(graph, arrays)
    _check_derived(graph, model, _validate(graph, model))
    if graph_digest(graph) != graph["integrity"]["sha256"]:
        raise ExportError("integrity.sha256", f"{MODEL_JSON} was edited after export (digest "
                                              f"mismatch); re-export it (mulfree export)")
    return model


# Files -------------------------------------------------------------------------------------

def _atomic_write(path, data):
    """Write ``data`` to a temporary file next to ``path``, fsync it, then rename it over."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def write_export(model: IntModel, path, *, version=FORMAT_VERSION):
    """Validate ``model`` and write it to the directory ``path`` (created if missing).

    Writes ``model.safetensors`` then ``model.json``, each to a temporary file renamed into
    place, so a reader never sees half a file. ``model.json`` is written last and carries the
    sha256 of the tensors and the digest of itself with them (:func:`graph_digest`): a crash
    between the two renames leaves at worst a stale or missing ``model.json`` whose checksum
    no longer matches, which :func:`load_export` refuses, as it refuses a graph edited after
    the export. Any error raises before anything is written.

    Parameters
    ----------
    model : IntModel
    path : str or path
    version : str
        ``"3.0"`` (the default, any model) or ``"2.0"``: the previous format, for a model
        whose :attr:`~mulfree.params.int_model.IntModel.is_chain` is true (so that tests can
        write 2.0 files and prove they still load).

    Raises
    ------
    ExportError
        If the model is invalid, or ``version`` is unknown or cannot hold the model (nothing
        is written).
    """
    from safetensors.numpy import save

    if not isinstance(version, str) or version not in FORMAT_VERSIONS:
        raise ExportError("version", f"version must be one of "
                                     f"{', '.join(map(repr, FORMAT_VERSIONS))}, "
                                     f"not {version!r:.80}")
    infos = graph_nodes(model)
    if version == "2.0" and not model.is_chain:
        raise ExportError("version", "version '2.0' holds only chains (linear, conv2d with "
                                     "groups 1, flatten, 2x2 maxpool2d; one PE kind; no names "
                                     "or inputs); this model is not one: write version "
                                     f"{FORMAT_VERSION!r}")
    graph, arrays = model_graph(model, version, infos)
    data = save(arrays, metadata={"format": FORMAT_NAME, "version": version})
    graph["tensors_file"] = {"name": MODEL_TENSORS, "sha256": hashlib.sha256(data).hexdigest(),
                             "size": len(data)}
    graph["integrity"] = {"sha256": graph_digest(graph)}
    text = json.dumps(graph, indent=1) + "\n"
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    _atomic_write(os.path.join(path, MODEL_TENSORS), data)
    _atomic_write(os.path.join(path, MODEL_JSON), text.encode())

