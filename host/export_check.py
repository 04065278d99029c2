"""The file form of an export: the graph the writer writes, its digest, and the loader.

:func:`model_graph` is the ``model.json`` graph of a model and :func:`graph_digest` its
``integrity.sha256``; :func:`~mulfree.host.export_format.write_export` writes them, and the
loader compares what it reads with them.

:func:`load_export` trusts nothing in the export folder. In this order it checks, and refuses
with an :class:`~mulfree.host.export_format.ExportError` whose message is one line naming the
file, the field (``layers.2.weight_bits``), the value and what is allowed:

1. the folder and both files, each inside the folder (no symbolic link out of it);
2. ``model.json`` as strict JSON (:func:`mulfree.params.safe_io.read_json`: no NaN or Infinity,
   no duplicate keys, bounded size and nesting), its format name and version (``2.0``; a 1.x
   export predates the digest and must be exported again);
3. every field of the graph: no unknown and no missing key, each value's JSON type (a boolean
   is not an integer, ``8.0`` is not ``8``) and range;
4. ``model.safetensors``: the file ``tensors_file`` names (the format has exactly one), its
   size and sha256, its header (strict JSON, metadata, signed integer dtypes only), then each
   tensor against the graph (present, dtype, shape, nothing unlisted);
5. the model those fields and tensors make (:func:`~mulfree.host.export_format.layer_shapes`):
   the layer chain, value ranges of codes, biases, shifts and table shifts for the declared
   widths;
6. every field the writer derives (shapes, ``max_k``, ``acc_width``, encodings, tensor dtypes,
   the fields of flatten and pooling...) equal to what the writer writes for that model;
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

from ..params.config import PE_KINDS, WEIGHT_BITS_LIMITS
from ..params.post_config import bias_range, shift_range
from ..params.safe_io import (MAX_JSON_DEPTH, FileCheckError, inside, json_depth, read_json,
                           strict_loads)
from ..params.int_model import (DTYPES, FORMAT_NAME, FORMAT_VERSION, LAYER_KINDS, MAX_DIM,
                            MAX_NAME_LENGTH, MAX_PADDING, MAX_STRIDE, MODEL_JSON,
                            MODEL_TENSORS, OUTPUTS, SCALE_EXP_LIMITS, SHIFT_OFFSETS,
                            ExportError, IntConv2d, IntInput, IntLinear, IntModel, code_range,
                            layer_config, layer_shapes)


__all__ = ["load_export", "write_export", "model_graph", "graph_digest", "MAX_TENSOR_BYTES", "LAYER_FIELDS"]


#: Largest ``model.safetensors`` read (the demo models' tensors are a few hundred KiB).
MAX_TENSOR_BYTES = 1 << 31

_HEX64 = re.compile(r"[0-9a-f]{64}")
#: safetensors' names of the dtypes an export may hold.
_ST_DTYPES = {"I8": "int8", "I16": "int16", "I32": "int32", "I64": "int64"}
#: The tensors of a layer with weights; ``shifts`` only for a conv2d with ``input_shift``.
_TENSOR_FIELDS = ("codes", "bias", "shift", "relu", "shifts")

_TOP = ("format", "version", "name", "input", "layers", "output", "tensors_file", "integrity")
_INPUT = ("shape", "act_bits", "scale_exp", "quantization")
_COMMON = ("index", "kind", "in_shape", "out_shape", "act_bits", "out_scale_exp", "tensors")
_WEIGHTED = ("pe", "weight_bits", "max_k", "acc_width", "weight_encoding")
#: The fields of a layer's JSON object, by kind (exactly these: no more, no fewer).
LAYER_FIELDS = {
    "linear": _COMMON + _WEIGHTED,
    "conv2d": _COMMON + _WEIGHTED + ("stride", "padding", "padding_mode", "input_shift"),
    "maxpool2d": _COMMON + ("kernel", "stride", "padding", "ceil_mode"),
    "flatten": _COMMON + ("order",),
}


# Messages -----------------------------------------------------------------------------------

def _show(value, limit=60):
    """``value`` as JSON on one line, shortened (a planted value may be long or multi-line)."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value).replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _fail(param, message, file=MODEL_JSON):
    raise ExportError(param, f"{file}: {message}")


def _path(where, key):
    return f"{where}.{key}" if where else str(key)


# The graph the writer writes -----------------------------------------------------------------

def _dtype_for(lo, hi):
    """Narrowest dtype of :data:`DTYPES` holding ``[lo, hi]``."""
    for name in DTYPES:
        info = np.iinfo(name)
        if info.min <= lo and hi <= info.max:
            return name
    raise AssertionError(f"[{lo}, {hi}] does not fit int64")


def _tensor_ranges(layer, cfg):
    """``{field: (lo, hi)}`` of the arrays a layer stores."""
    ranges = {"codes": code_range(cfg), "bias": bias_range(cfg), "shift": shift_range(cfg),
              "relu": (0, 1)}
    if getattr(layer, "shifts", None) is not None:
        ranges["shifts"] = SHIFT_OFFSETS
    return ranges


def _layer_json(i, layer, in_shape, out_shape, bits, scale):
    entry = {"index": i, "kind": layer.kind, "in_shape": list(in_shape),
             "out_shape": list(out_shape)}
    tensors = {}
    if layer.kind in ("linear", "conv2d"):
        cfg = layer_config(layer, f"layers.{i}")
        entry.update(pe=layer.pe, act_bits=int(layer.act_bits),
                     weight_bits=int(layer.weight_bits), max_k=cfg.max_k,
                     acc_width=cfg.acc_width, out_scale_exp=int(layer.out_scale_exp))
        entry["weight_encoding"] = {
            "shift": {"kind": "shift_code", "layout": "s<<(weight_bits-1) | e; e=0 is zero; "
                      "weight = (-1)^s * 2^(e-1)", "scale_log2": cfg.weight_scale_log2},
            "adder": {"kind": "signed", "scale": "activation"},
            "mult": {"kind": "signed", "scale_log2": 0},
        }[layer.pe]
        if layer.kind == "conv2d":
            entry.update(stride=list(layer.stride), padding=list(layer.padding),
                         padding_mode="zeros", input_shift=layer.shifts is not None)
        for name, (lo, hi) in _tensor_ranges(layer, cfg).items():
            arr = np.asarray(getattr(layer, name))
            tensors[name] = {"name": f"layers.{i}.{name}", "dtype": _dtype_for(lo, hi),
                             "shape": list(arr.shape)}
    else:
        entry.update(act_bits=bits, out_scale_exp=scale)
        if layer.kind == "maxpool2d":
            entry.update(kernel=[2, 2], stride=[2, 2], padding=[0, 0], ceil_mode=False)
        else:
            entry.update(order="c_major")
    entry["tensors"] = tensors
    return entry


def model_graph(model):
    """The JSON graph :func:`~mulfree.host.export_format.write_export` writes for ``model``
    (without ``tensors_file`` and ``integrity``), and the arrays to store, by tensor name.

    The loader compares every field of a graph it reads with this one.
    """
    shapes = model.validate()
    layers, arrays = [], {}
    scale = int(model.input.scale_exp)
    for i, (layer, (in_shape, out_shape, bits)) in enumerate(zip(model.layers, shapes)):
        if layer.kind in ("linear", "conv2d"):
            scale = int(layer.out_scale_exp)
        entry = _layer_json(i, layer, in_shape, out_shape, bits, scale)
        for name, spec in entry["tensors"].items():
            arrays[spec["name"]] = np.ascontiguousarray(
                np.asarray(getattr(layer, name)).astype(spec["dtype"]))
        layers.append(entry)
    graph = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "name": model.name,
        "input": {"shape": list(model.input.shape), "act_bits": int(model.input.act_bits),
                  "scale_exp": int(model.input.scale_exp),
                  "quantization": "q = clamp(floor(x * 2^-scale_exp + 1/2), act_range)"},
        "layers": layers,
        "output": model.output,
    }
    return graph, arrays


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

def _keys(obj, where, keys):
    """``obj`` is an object with exactly the fields ``keys``."""
    if not isinstance(obj, dict):
        _fail(where, f"{where} must be an object, not {_show(obj)}")
    for key in obj:
        if key not in keys:
            _fail(_path(where, key), f"{where or 'the graph'} has the unknown field "
                                     f"{_show(key)} (the format has {', '.join(keys)})")
    for key in keys:
        if key not in obj:
            _fail(_path(where, key), f"{where or 'the graph'} lacks the field {key!r}")
    return obj


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _int(obj, key, where, lo, hi):
    value = obj[key]
    if not _is_int(value) or not lo <= value <= hi:
        p = _path(where, key)
        allowed = f"{lo}" if lo == hi else f"an integer in [{lo}, {hi}]"
        _fail(p, f"{p} must be {allowed}, not {_show(value)}")
    return value


def _choice(obj, key, where, allowed):
    value = obj[key]
    if not isinstance(value, str) or value not in allowed:
        p = _path(where, key)
        _fail(p, f"{p} must be one of {', '.join(map(repr, allowed))}, not {_show(value)}")
    return value


def _int_list(obj, key, where, lengths, lo, hi):
    value = obj[key]
    if not (isinstance(value, list) and len(value) in lengths
            and all(_is_int(v) and lo <= v <= hi for v in value)):
        p = _path(where, key)
        n = " or ".join(map(str, lengths)) if len(lengths) < 3 else \
            f"{lengths[0]} to {lengths[-1]}"
        _fail(p, f"{p} must be a list of {n} integers in [{lo}, {hi}], not {_show(value)}")
    return value


def _hex(obj, key, where):
    value = obj[key]
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        p = _path(where, key)
        _fail(p, f"{p} must be 64 lowercase hexadecimal digits (a sha256), not {_show(value)}")
    return value


def _check_layer(i, entry):
    """The fields of ``layers[i]``: keys, types and ranges (the chain is checked later)."""
    where = f"layers.{i}"
    if not isinstance(entry, dict):
        _fail(where, f"{where} must be an object, not {_show(entry)}")
    if "kind" not in entry:
        _fail(f"{where}.kind", f"{where} lacks the field 'kind'")
    kind = _choice(entry, "kind", where, tuple(LAYER_KINDS))
    _keys(entry, where, LAYER_FIELDS[kind])
    _int(entry, "index", where, i, i)
    for key in ("in_shape", "out_shape"):
        _int_list(entry, key, where, (1, 3), 1, MAX_DIM)
    _int(entry, "act_bits", where, 2, 16)
    _int(entry, "out_scale_exp", where, *SCALE_EXP_LIMITS)
    fields = ()
    if kind in ("linear", "conv2d"):
        pe = _choice(entry, "pe", where, PE_KINDS)
        if pe == "adder":
            # AdderNet: weights share the activations' scale and width.
            if entry["weight_bits"] != entry["act_bits"] or not _is_int(entry["weight_bits"]):
                _fail(f"{where}.weight_bits", f"{where}.weight_bits of an adder layer must "
                                              f"equal its act_bits = {entry['act_bits']}, not "
                                              f"{_show(entry['weight_bits'])}")
        else:
            _int(entry, "weight_bits", where, *WEIGHT_BITS_LIMITS[pe])
        _int(entry, "max_k", where, 1, 1 << 31)
        _int(entry, "acc_width", where, 1, 63)
        fields = _TENSOR_FIELDS[:4]
        if kind == "conv2d":
            _int_list(entry, "stride", where, (2,), 1, MAX_STRIDE)
            _int_list(entry, "padding", where, (2,), 0, MAX_PADDING)
            if not isinstance(entry["input_shift"], bool):
                _fail(f"{where}.input_shift", f"{where}.input_shift must be true or false, "
                                              f"not {_show(entry['input_shift'])}")
            if entry["input_shift"]:
                fields = _TENSOR_FIELDS
    specs = _keys(entry["tensors"], f"{where}.tensors", fields)
    for name in fields:
        at = f"{where}.tensors.{name}"
        spec = _keys(specs[name], at, ("name", "dtype", "shape"))
        if spec["name"] != f"layers.{i}.{name}":
            _fail(f"{at}.name", f"{at}.name must be 'layers.{i}.{name}', "
                                f"not {_show(spec['name'])}")
        _choice(spec, "dtype", at, DTYPES)
        _int_list(spec, "shape", at, range(1, 5), 1, MAX_DIM)
    return kind


def _check_fields(graph):
    """Every field of the graph: keys, JSON types, ranges."""
    _keys(graph, "", _TOP)
    name = graph["name"]
    if name is not None and (not isinstance(name, str) or len(name) > MAX_NAME_LENGTH
                             or not name.isprintable()):
        _fail("name", f"name must be null or a printable string of at most "
                      f"{MAX_NAME_LENGTH} characters, not {_show(name)}")
    inp = _keys(graph["input"], "input", _INPUT)
    _int_list(inp, "shape", "input", (1, 3), 1, MAX_DIM)
    _int(inp, "act_bits", "input", 2, 16)
    _int(inp, "scale_exp", "input", *SCALE_EXP_LIMITS)
    _choice(graph, "output", "", OUTPUTS)
    layers = graph["layers"]
    if not isinstance(layers, list) or not layers:
        _fail("layers", f"layers must be a non-empty list of layers, not {_show(layers)}")
    for i, entry in enumerate(layers):
        _check_layer(i, entry)
    spec = _keys(graph["tensors_file"], "tensors_file", ("name", "sha256", "size"))
    if spec["name"] != MODEL_TENSORS:
        _fail("tensors_file.name", f"tensors_file.name must be {MODEL_TENSORS!r} (an export "
                                   f"has one tensor file, next to {MODEL_JSON}), not "
                                   f"{_show(spec['name'])}")
    _hex(spec, "sha256", "tensors_file")
    _int(spec, "size", "tensors_file", 8, MAX_TENSOR_BYTES)
    _hex(_keys(graph["integrity"], "integrity", ("sha256",)), "sha256", "integrity")


def _read_graph(folder):
    """``model.json``: strict JSON, this format and version."""
    try:
        path = inside(folder, MODEL_JSON, MODEL_JSON)
        graph = read_json(path, MODEL_JSON, what="export graph")
    except FileCheckError as exc:
        raise ExportError(MODEL_JSON, f"not a usable mulfree export: {exc}") from None
    found = graph.get("format")
    if found != FORMAT_NAME:
        _fail("format", f"not a mulfree export: format is {_show(found)}, "
                        f"expected {FORMAT_NAME!r}")
    version = graph.get("version")
    if version != FORMAT_VERSION:
        old = isinstance(version, str) and re.fullmatch(r"1\.\d+", version)
        why = ("was written before exports carried a digest of their graph" if old
               else "is not supported")
        _fail("version", f"format version {_show(version)} {why} (this mulfree reads "
                         f"{FORMAT_VERSION}); export the model again (mulfree export)")
    return graph


# model.safetensors --------------------------------------------------------------------------

def _check_header(data):
    """The safetensors header: strict JSON, our metadata, signed integer tensors only."""
    def bad(why):
        _fail(MODEL_TENSORS, f"not a valid safetensors file ({why})", MODEL_TENSORS)

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
    want = {"format": FORMAT_NAME, "version": FORMAT_VERSION}
    if meta != want:
        _fail(f"{MODEL_TENSORS}.__metadata__", f"the metadata is {_show(meta)}, an export's is "
                                               f"{_show(want)}", MODEL_TENSORS)
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if dtype not in _ST_DTYPES:
            _fail(name, f"tensor {_show(name)} has dtype {_show(dtype)}; an export holds "
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
        _fail(MODEL_TENSORS, f"not a mulfree export: {str(folder)!r} has no {MODEL_TENSORS}",
              MODEL_TENSORS)
    try:
        with open(path, "rb") as f:
            data = f.read(spec["size"] + 1)
            actual = os.fstat(f.fileno()).st_size
    except OSError as exc:
        _fail(MODEL_TENSORS, f"cannot be read: {exc.strerror or exc}", MODEL_TENSORS)
    if len(data) != spec["size"] or hashlib.sha256(data).hexdigest() != spec["sha256"]:
        raise ExportError(MODEL_TENSORS, f"{MODEL_TENSORS} is truncated or modified (sha256 "
                                         f"mismatch: {actual} bytes, {MODEL_JSON} expects "
                                         f"{spec['size']})")
    _check_header(data)
    try:
        return load(data)
    except (SafetensorError, ValueError, TypeError, OverflowError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        _fail(MODEL_TENSORS, f"not a valid safetensors file ({first})", MODEL_TENSORS)


def _take(arrays, spec, used):
    """The array a tensor spec names, with the spec's dtype and shape, as int64."""
    name = spec["name"]
    if name not in arrays:
        _fail(name, f"has no tensor {name} (listed in {MODEL_JSON})", MODEL_TENSORS)
    arr = arrays[name]
    if str(arr.dtype) != spec["dtype"]:
        _fail(name, f"{name} has dtype {arr.dtype}, {MODEL_JSON} says {spec['dtype']}",
              MODEL_TENSORS)
    if list(arr.shape) != spec["shape"]:
        _fail(name, f"{name} has shape {list(arr.shape)}, {MODEL_JSON} says {spec['shape']}",
              MODEL_TENSORS)
    used.add(name)
    return arr.astype(np.int64)


def _build(graph, arrays):
    """The :class:`IntModel` the checked fields and arrays make (not validated yet)."""
    used, layers = set(), []
    for i, entry in enumerate(graph["layers"]):
        kind = entry["kind"]
        if kind in ("flatten", "maxpool2d"):
            layers.append(LAYER_KINDS[kind]())
            continue
        got = {name: _take(arrays, spec, used) for name, spec in entry["tensors"].items()}
        relu = got["relu"]
        if np.any((relu != 0) & (relu != 1)):
            _fail(f"layers.{i}.relu", f"layers.{i}.relu must hold 0 or 1 only, not "
                                      f"{int(relu[(relu != 0) & (relu != 1)][0])}",
                  MODEL_TENSORS)
        args = dict(pe=entry["pe"], codes=got["codes"], bias=got["bias"], shift=got["shift"],
                    relu=relu.astype(bool), act_bits=entry["act_bits"],
                    weight_bits=entry["weight_bits"], out_scale_exp=entry["out_scale_exp"])
        if kind == "conv2d":
            layers.append(IntConv2d(stride=tuple(entry["stride"]),
                                    padding=tuple(entry["padding"]),
                                    shifts=got.get("shifts"), **args))
        else:
            layers.append(IntLinear(**args))
    extra = sorted(set(arrays) - used)
    if extra:
        _fail(extra[0], f"holds tensors {MODEL_JSON} does not list: "
                        f"{_show(', '.join(extra))}", MODEL_TENSORS)
    inp = graph["input"]
    return IntModel(IntInput(tuple(inp["shape"]), inp["act_bits"], inp["scale_exp"]), layers,
                    output=graph["output"], name=graph["name"])


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
                return _first_difference(want[key], got[key], _path(path, key))
    # Into lists of objects (layers), not of numbers: "in_shape is [7, 7, 5]" reads better.
    if isinstance(want, list) and isinstance(got, list) and len(want) == len(got) \
            and all(isinstance(w, dict) for w in want):
        for i, (w, g) in enumerate(zip(want, got)):
            if not _same(w, g):
                # layers.2 as in the tensors' names; other lists index with brackets.
                at = f"{path}.{i}" if path == "layers" else f"{path}[{i}]"
                return _first_difference(w, g, at)
    return path, got, want


def _check_derived(graph, model):
    """Every field of the graph equals what the writer writes for ``model``."""
    want, _ = model_graph(model)
    want = json.loads(json.dumps(want))             # tuples -> lists, as read back
    got = {key: graph[key] for key in want}
    if not _same(want, got):
        path, value, expected = _first_difference(want, got, "")
        _fail(path, f"{path} is {_show(value)}, but the rest of the export makes it "
                    f"{_show(expected)}")


def load_export(path) -> IntModel:
    """Read the export folder ``path`` and check every byte of it (see the module docstring).

    Returns
    -------
    IntModel
        The model, valid (:meth:`~mulfree.host.export_format.IntModel.validate`).

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
    _check_fields(graph)
    arrays = _read_tensors(folder, graph)
    model = _build(graph, arrays)
    try:
        layer_shapes(model)
    except ExportError as exc:
        # Fields named after a tensor hold the tensor's values; the others come from the JSON.
        file = MODEL_TENSORS if exc.param.rsplit(".", 1)[-1] in _TENSOR_FIELDS else MODEL_JSON
        raise ExportError(exc.param, f"{file}: {exc}") from None
    _check_derived(graph, model)
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


def write_export(model: IntModel, path):
    """Validate ``model`` and write it to the directory ``path`` (created if missing).

    Writes ``model.safetensors`` then ``model.json``, each to a temporary file renamed into
    place, so a reader never sees half a file. ``model.json`` is written last and carries the
    sha256 of the tensors and the digest of itself with them
    (:func:`graph_digest`): a crash
    between the two renames leaves at worst a stale or missing ``model.json`` whose checksum
    no longer matches, which :func:`load_export` refuses, as it refuses a graph edited after
    the export. Any error raises before ``model.json`` is replaced.

    Raises
    ------
    ExportError
        If the model is invalid (nothing is written).
    """
    from safetensors.numpy import save

    graph, arrays = model_graph(model)
    data = save(arrays, metadata={"format": FORMAT_NAME, "version": FORMAT_VERSION})
    graph["tensors_file"] = {"name": MODEL_TENSORS, "sha256": hashlib.sha256(data).hexdigest(),
                             "size": len(data)}
    graph["integrity"] = {"sha256": graph_digest(graph)}
    text = json.dumps(graph, indent=1) + "\n"
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    _atomic_write(os.path.join(path, MODEL_TENSORS), data)
    _atomic_write(os.path.join(path, MODEL_JSON), text.encode())
