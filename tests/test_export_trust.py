"""Trust in an export's files (:mod:`mulfree.host.export_check`): every edit of ``model.json`` or
``model.safetensors`` that changes what the model computes is refused in one line.

Each row edits one thing in a real export (format 3.0; ``test_export_graph.py`` has the rows
of 2.0) written to ``tmp_path`` (``random_models.conv_model``:
a convolution with a table shift, max pooling, a strided convolution, flatten, two linear
layers). Unless a row says otherwise the edit is *forged*: the tensors' sha256 and the graph's
digest are recomputed afterwards, as anyone who reads the format can do, so the refusal must
come from the field checks and not from the digest. The rows of ``DIGEST`` are not forged:
those edits pass every field check and only the digest can tell.
"""

import hashlib
import json
import os

import numpy as np
import pytest
from safetensors.numpy import load, save

from random_models import conv_model

from mulfree.params.core_config import DESC_FIELDS
from mulfree.host import export_format as ef
from mulfree.host.export_check import graph_digest
from mulfree.host.export_format import ExportError, load_export, write_export


# Editing an export ----------------------------------------------------------------------------

def _graph(path):
    return json.loads((path / "model.json").read_text())


def _put_graph(path, graph, forge=True):
    if forge and isinstance(graph.get("integrity"), dict):
        graph["integrity"]["sha256"] = graph_digest(graph)
    (path / "model.json").write_text(json.dumps(graph, indent=1))


def js(edit, forge=True):
    """A row's edit of the graph: ``edit(graph)`` changes it in place."""
    def tamper(path):
        graph = _graph(path)
        edit(graph)
        _put_graph(path, graph, forge)
    return tamper


def put(*keys_and_value, forge=True):
    """Set (or with ``DELETE``, remove) the field at a path of keys and indices."""
    *keys, value = keys_and_value

    def edit(graph):
        node = graph
        for key in keys[:-1]:
            node = node[key]
        if value is DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
    return js(edit, forge)


DELETE = object()


def _put_tensors(path, arrays, metadata=None):
    """Write ``arrays`` as the tensor file and forge the JSON's sha256, size and digest."""
    data = save(arrays, metadata=metadata or {"format": ef.FORMAT_NAME,
                                              "version": ef.FORMAT_VERSION})
    _put_bytes(path, data)


def _put_bytes(path, data):
    (path / "model.safetensors").write_bytes(data)
    graph = _graph(path)
    graph["tensors_file"].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    _put_graph(path, graph)


def ts(edit, metadata=None):
    """A row's edit of the tensors: ``edit(arrays, graph)`` changes both in place."""
    def tamper(path):
        arrays = load((path / "model.safetensors").read_bytes())
        graph = _graph(path)
        edit(arrays, graph)
        _put_graph(path, graph)
        _put_tensors(path, arrays, metadata)
    return tamper


def element(name, value, index=0):
    """Set one element of a tensor, widening its dtype (file and JSON) if it must."""
    def edit(arrays, graph):
        arr = arrays[name].astype(np.int64)
        arr.reshape(-1)[index] = value
        info = np.iinfo(arrays[name].dtype)
        if info.min <= value <= info.max:
            arr = arr.astype(arrays[name].dtype)
        else:
            _, i, field = name.split(".")
            graph["layers"][int(i)]["tensors"][field]["dtype"] = "int64"
        arrays[name] = arr
    return ts(edit)


def text(edit):
    """A row's edit of ``model.json`` as text (what JSON-level edits cannot express)."""
    def tamper(path):
        (path / "model.json").write_bytes(edit((path / "model.json").read_text()))
    return tamper


@pytest.fixture
def export(tmp_path):
    path = tmp_path / "m"
    write_export(conv_model(3, "shift"), path)
    return path


def _refused(path, param, message):
    with pytest.raises(ExportError) as info:
        load_export(path)
    text = str(info.value)
    assert "\n" not in text and "Traceback" not in text
    assert message in text, text
    assert info.value.param == param, (info.value.param, text)
    return text


# The rows ------------------------------------------------------------------------------------

TYPES_AND_RANGES = [
    ("weight_bits float", put("layers", 0, "weight_bits", 4.0), "layers.0.weight_bits",
     "model.json: layers.0.weight_bits must be an integer in [2, 6], not 4.0"),
    ("weight_bits 7", put("layers", 4, "weight_bits", 7), "layers.4.weight_bits",
     "layers.4.weight_bits must be an integer in [2, 6], not 7"),
    ("act_bits bool", put("layers", 0, "act_bits", True), "layers.0.act_bits",
     "layers.0.act_bits must be an integer in [2, 16], not true"),
    ("stride bool", put("layers", 0, "stride", [True, 1]), "layers.0.stride",
     "layers.0.stride must be a list of 2 integers in [1, 15], not [true, 1]"),
    ("index bool", put("layers", 1, "index", True), "layers.1.index",
     "layers.1.index must be 1, not true"),
    ("act_bits string", put("input", "act_bits", "6"), "input.act_bits",
     'input.act_bits must be an integer in [2, 16], not "6"'),
    ("act_bits 1", put("input", "act_bits", 1), "input.act_bits", "[2, 16], not 1"),
    ("act_bits 17", put("layers", 5, "act_bits", 17), "layers.5.act_bits", "[2, 16], not 17"),
    ("scale_exp 5000", put("input", "scale_exp", 5000), "input.scale_exp",
     "input.scale_exp must be an integer in [-1074, 1008], not 5000"),
    ("scale_exp 1e30", put("input", "scale_exp", 1e30), "input.scale_exp",
     "input.scale_exp must be an integer in [-1074, 1008], not 1e+30"),
    ("scale_exp huge int", put("input", "scale_exp", -10 ** 40), "input.scale_exp",
     "not -10000000000000000000000000000000000000000"),
    ("out_scale_exp", put("layers", 2, "out_scale_exp", -2000), "layers.2.out_scale_exp",
     "layers.2.out_scale_exp must be an integer in [-1074, 1008], not -2000"),
    ("out_scale_exp null", put("layers", 2, "out_scale_exp", None), "layers.2.out_scale_exp",
     "not null"),
    ("input shape 0", put("input", "shape", [7, 0, 5]), "input.shape",
     "input.shape must be a list of 1 or 3 integers in [1, 65535], not [7, 0, 5]"),
    ("input shape 2-d", put("input", "shape", [7, 6]), "input.shape", "not [7, 6]"),
    ("input shape huge", put("input", "shape", [7, 1 << 40, 5]), "input.shape",
     "[1, 65535]"),
    ("stride 0", put("layers", 2, "stride", [0, 1]), "layers.2.stride",
     "layers.2.stride must be a list of 2 integers in [1, 15], not [0, 1]"),
    ("stride 16", put("layers", 2, "stride", [16, 1]), "layers.2.stride", "[1, 15]"),
    ("stride one number", put("layers", 2, "stride", 2), "layers.2.stride", "not 2"),
    ("padding -1", put("layers", 0, "padding", [-1, 1]), "layers.0.padding",
     "layers.0.padding must be a list of 2 integers in [0, 15], not [-1, 1]"),
    ("padding >= kernel", put("layers", 2, "padding", [2, 0]), "layers.2.padding",
     "model.json: layers.2.padding = [2, 0] must be smaller than the 2x1 kernel"),
    ("input_shift 1", put("layers", 0, "input_shift", 1), "layers.0.input_shift",
     "layers.0.input_shift must be true or false, not 1"),
    ("pe unknown", put("layers", 0, "pe", "xor"), "layers.0.pe",
     "layers.0.pe must be one of 'shift', 'adder', 'mult', not \"xor\""),
    ("kind unknown", put("layers", 1, "kind", "upsample"), "layers.1.kind",
     "layers.1.kind must be one of 'linear', 'conv2d', 'flatten', 'maxpool2d', 'avgpool2d', "
     "'global_avgpool', 'add', 'concat', 'clamp', 'pad', 'shift2d', 'address_shift', "
     "'channel_shift', not \"upsample\""),
    ("kind another", put("layers", 1, "kind", "avgpool2d"), "layers.1.count_include_pad",
     "layers.1 lacks the field 'count_include_pad'"),
    ("output", put("output", "softmax"), "output",
     "output must be one of 'argmax', 'none', not \"softmax\""),
    ("index", put("layers", 3, "index", 4), "layers.3.index", "layers.3.index must be 3, not 4"),
    ("name not text", put("name", 5), "name", "name must be null or a printable string"),
    ("name newline", put("name", "a\nb"), "name", 'not "a\\nb"'),
    ("name too long", put("name", "n" * 200), "name", "at most 128 characters"),
    ("layers empty", put("layers", []), "layers", "layers must be a non-empty list"),
    ("layer a list", put("layers", 1, [1]), "layers.1", "layers.1 must be an object, not [1]"),
    ("sha256 upper case", put("tensors_file", "sha256", "A" * 64), "tensors_file.sha256",
     "tensors_file.sha256 must be 64 lowercase hexadecimal digits"),
    ("size negative", put("tensors_file", "size", -1), "tensors_file.size",
     "tensors_file.size must be an integer in [8, 2147483648], not -1"),
    ("integrity a string", put("integrity", "x"), "integrity",
     'integrity must be an object, not "x"'),
]

KEYS = [
    ("unknown top field", put("comment", "hi"), "comment",
     "model.json: the graph has the unknown field \"comment\""),
    ("unknown input field", put("input", "zero_point", 3), "input.zero_point",
     "input has the unknown field \"zero_point\" (the format has shape, act_bits, scale_exp, "
     "quantization)"),
    ("unknown layer field", put("layers", 4, "groups", 2), "layers.4.groups",
     "layers.4 has the unknown field \"groups\""),
    ("unknown spec field", put("layers", 4, "tensors", "codes", "offset", 0),
     "layers.4.tensors.codes.offset", "has the unknown field \"offset\""),
    ("unknown tensors_file field", put("tensors_file", "path", "/etc/passwd"),
     "tensors_file.path", "tensors_file has the unknown field \"path\""),
    ("unknown integrity field", put("integrity", "md5", "0"), "integrity.md5",
     "integrity has the unknown field"),
    ("missing output", put("output", DELETE), "output", "the graph lacks the field 'output'"),
    ("missing scale_exp", put("input", "scale_exp", DELETE), "input.scale_exp",
     "input lacks the field 'scale_exp'"),
    ("missing pe", put("layers", 0, "pe", DELETE), "layers.0.pe",
     "layers.0 lacks the field 'pe'"),
    ("missing kind", put("layers", 0, "kind", DELETE), "layers.0.kind", "lacks the field 'kind'"),
    ("missing dtype", put("layers", 0, "tensors", "bias", "dtype", DELETE),
     "layers.0.tensors.bias.dtype", "layers.0.tensors.bias lacks the field 'dtype'"),
    ("missing integrity", put("integrity", DELETE), "integrity",
     "the graph lacks the field 'integrity'"),
    ("linear made conv2d", put("layers", 4, "kind", "conv2d"), "layers.4.groups",
     "layers.4 lacks the field 'groups'"),
    ("shifts unlisted", js(lambda g: g["layers"][0]["tensors"].pop("shifts")),
     "layers.0.tensors.shifts", "layers.0.tensors lacks the field 'shifts'"),
    ("input_shift false", put("layers", 0, "input_shift", False), "layers.0.tensors.shifts",
     "layers.0.tensors has the unknown field \"shifts\""),
    ("shifts added", js(lambda g: g["layers"][2]["tensors"].update(
        shifts={"name": "layers.2.shifts", "dtype": "int8", "shape": [6, 2]})),
     "layers.2.tensors.shifts", "layers.2.tensors has the unknown field \"shifts\""),
]

# Fields the writer derives from the others: each must be what it writes.
DERIVED = [
    ("acc_width", put("layers", 0, "acc_width", 20), "layers.0.acc_width",
     "model.json: layers.0.acc_width is 20, but the rest of the export makes it 18"),
    ("max_k", put("layers", 4, "max_k", 64), "layers.4.max_k", "is 64, but"),
    ("weight_bits 4 -> 5", put("layers", 0, "weight_bits", 5), "layers.0.acc_width",
     "layers.0.acc_width is 18, but the rest of the export makes it 26"),
    ("scale_log2", put("layers", 0, "weight_encoding", "scale_log2", 0),
     "layers.0.weight_encoding.scale_log2", "is 0, but the rest of the export makes it -6"),
    ("encoding kind", put("layers", 0, "weight_encoding", "kind", "signed"),
     "layers.0.weight_encoding.kind", 'is "signed", but'),
    ("encoding text", put("layers", 0, "weight_encoding", "layout", "e<<1 | s"),
     "layers.0.weight_encoding.layout", 'is "e<<1 | s", but'),
    ("quantization text", put("input", "quantization", "q = round(x)"), "input.quantization",
     'input.quantization is "q = round(x)", but'),
    ("padding_mode", put("layers", 0, "padding_mode", "reflect"), "layers.0.padding_mode",
     'is "reflect", but the rest of the export makes it "zeros"'),
    ("pool kernel", put("layers", 1, "kernel", [3, 3]), "layers.1.out_shape",
     "layers.1.out_shape is [6, 3, 2], but the rest of the export makes it [6, 2, 2]"),
    ("pool ceil_mode", put("layers", 1, "ceil_mode", True), "layers.1.ceil_mode", "is true"),
    ("pool ceil_mode 1", put("layers", 1, "ceil_mode", 1), "layers.1.ceil_mode",
     "layers.1.ceil_mode must be true or false, not 1"),
    ("pool stride", put("layers", 1, "stride", [1, 1]), "layers.4.codes",
     "model.safetensors: layers.4.codes must have shape (60, N) for the input (60,)"),
    ("flatten order", put("layers", 3, "order", "hw_major"), "layers.3.order", "is \"hw_major\""),
    ("flatten act_bits", put("layers", 3, "act_bits", 8), "layers.3.act_bits",
     "layers.3.act_bits is 8, but the rest of the export makes it 6"),
    ("pool out_scale_exp", put("layers", 1, "out_scale_exp", 3), "layers.1.out_scale_exp",
     "is 3, but the rest of the export makes it 0"),
    ("out_shape", put("layers", 3, "out_shape", [21]), "layers.3.out_shape",
     "layers.3.out_shape is [21], but the rest of the export makes it [20]"),
    ("in_shapes element", put("layers", 0, "in_shapes", 0, 1, 7), "layers.0.in_shapes",
     "layers.0.in_shapes is [[7, 7, 5]], but the rest of the export makes it [[7, 6, 5]]"),
    ("tensor dtype widened", js(lambda g: g["layers"][4]["tensors"]["relu"].update(
        dtype="int16")), "layers.4.relu", "layers.4.relu has dtype int8, model.json says int16"),
]

# The layer chain: the shapes must flow from the input to the output.
CHAIN = [
    ("input channels", put("input", "shape", [8, 6, 5]), "layers.0.codes",
     "model.safetensors: layers.0.codes must have shape (O, 8, kh, kw) for the input (8, 6, 5)"),
    ("input height", put("input", "shape", [7, 8, 5]), "layers.4.codes",
     "layers.4.codes must have shape (30, N) for the input (30,)"),
    ("flatten removed", js(lambda g: (g["layers"].pop(3), [l.update(index=i) for i, l in
                                                           enumerate(g["layers"])])),
     "layers.3.tensors.codes.name", "layers.3.tensors.codes.name must be 'layers.3.codes', "
                                     "not \"layers.4.codes\""),
    ("argmax of a map", ts(lambda a, g: (g.update(layers=g["layers"][:3]),
                                         [a.pop(k) for k in list(a) if k[7] in "45"])),
     "output", "model.json: output = 'argmax' needs a vector at the end, not the shape "
               "(5, 2, 2)"),
    ("input act_bits wider than a layer's", put("input", "act_bits", 8), "layers.0.act_bits",
     "model.json: layers.0.act_bits = 6 is narrower than its input's 8 bits"),
]

TENSORS = [
    ("shift code 16", element("layers.0.codes", 16), "layers.0.codes",
     "model.safetensors: layers.0.codes[0, 0, 0, 0] = 16 is outside the allowed [0, 15]"),
    ("shift code -1", element("layers.4.codes", -1, 3), "layers.4.codes",
     "layers.4.codes[0, 3] = -1 is outside the allowed [0, 15]"),
    ("codes of a narrower weight_bits", put("layers", 4, "weight_bits", 3), "layers.4.codes",
     "is outside the allowed [0, 7]"),
    ("bias beyond acc_width", element("layers.5.bias", 1 << 15), "layers.5.bias",
     "layers.5.bias[0] = 32768 is outside the allowed [-32768, 32767]"),
    ("bias huge", element("layers.5.bias", -(1 << 62)), "layers.5.bias",
     "= -4611686018427387904 is outside"),
    ("shift below -act_bits", element("layers.0.shift", -7), "layers.0.shift",
     "layers.0.shift[0] = -7 is outside the allowed [-6, 19]"),
    ("shift above acc_width + 1", element("layers.0.shift", 20), "layers.0.shift",
     "= 20 is outside the allowed [-6, 19]"),
    ("relu 2", element("layers.4.relu", 2), "layers.4.relu",
     "model.safetensors: layers.4.relu must hold 0 or 1 only, not 2"),
    ("table shift 8", element("layers.0.shifts", 8), "layers.0.shifts",
     "layers.0.shifts[0, 0] = 8 is outside the allowed [-7, 7]"),
    ("float tensor", ts(lambda a, g: a.update({"layers.4.codes": a["layers.4.codes"]
                                               .astype(np.float32)})), "layers.4.codes",
     "model.safetensors: tensor \"layers.4.codes\" has dtype \"F32\"; an export holds signed "
     "integers only"),
    ("unsigned tensor", ts(lambda a, g: a.update({"layers.4.codes": a["layers.4.codes"]
                                                  .astype(np.uint8)})), "layers.4.codes",
     "has dtype \"U8\""),
    ("dtype changed in both", ts(lambda a, g: (
        a.update({"layers.4.codes": a["layers.4.codes"].astype(np.int16)}),
        g["layers"][4]["tensors"]["codes"].update(dtype="int16"))),
     "layers.4.tensors.codes.dtype", "is \"int16\", but the rest of the export makes it "
                                      "\"int8\""),
    ("dtype changed in the file", ts(lambda a, g: a.update(
        {"layers.4.bias": a["layers.4.bias"].astype(np.int64)})), "layers.4.bias",
     "layers.4.bias has dtype int64, model.json says int32"),
    ("shape changed in both", ts(lambda a, g: (
        a.update({"layers.4.bias": a["layers.4.bias"][None]}),
        g["layers"][4]["tensors"]["bias"].update(shape=[1, 9]))), "layers.4.bias",
     "layers.4.bias must have shape (9,), not (1, 9)"),
    ("codes transposed in both", ts(lambda a, g: (
        a.update({"layers.4.codes": np.ascontiguousarray(a["layers.4.codes"].T)}),
        g["layers"][4]["tensors"]["codes"].update(shape=[9, 20]))), "layers.4.codes",
     "layers.4.codes must have shape (20, N) for the input (20,), not (9, 20)"),
    ("shape lie", put("layers", 4, "tensors", "codes", "shape", [9, 20]), "layers.4.codes",
     "layers.4.codes has shape [20, 9], model.json says [9, 20]"),
    ("missing tensor", ts(lambda a, g: a.pop("layers.2.relu")), "layers.2.relu",
     "model.safetensors: has no tensor layers.2.relu (listed in model.json)"),
    ("extra tensor", ts(lambda a, g: a.update({"layers.9.codes": np.zeros(2, np.int8)})),
     "layers.9.codes", "model.safetensors: holds tensors model.json does not list: "
                       "\"layers.9.codes\""),
    ("tensor named like a path", ts(lambda a, g: a.update({"../x": np.zeros(2, np.int8)})),
     "../x", "does not list: \"../x\""),
    ("spec names another tensor", put("layers", 5, "tensors", "bias", "name", "layers.4.bias"),
     "layers.5.tensors.bias.name", "must be 'layers.5.bias', not \"layers.4.bias\""),
    ("metadata", ts(lambda a, g: None, metadata={"format": "mulfree-export", "version": "1.0"}),
     "model.safetensors.__metadata__", "model.safetensors: the metadata is {"),
]

FILES = [
    ("second tensor file", put("tensors_file", "name", "other.safetensors"), "tensors_file.name",
     "model.json: tensors_file.name must be 'model.safetensors' (an export has one tensor "
     "file, next to model.json), not \"other.safetensors\""),
    ("absolute path", put("tensors_file", "name", "/etc/passwd"), "tensors_file.name",
     "not \"/etc/passwd\""),
    ("parent path", put("tensors_file", "name", "../m/model.safetensors"), "tensors_file.name",
     "not \"../m/model.safetensors\""),
    ("size lie", put("tensors_file", "size", 100), "model.safetensors",
     "model.safetensors is truncated or modified (sha256 mismatch: "),
    ("sha256 lie", put("tensors_file", "sha256", "0" * 64), "model.safetensors",
     "sha256 mismatch"),
    ("truncated", lambda p: (p / "model.safetensors").write_bytes(
        (p / "model.safetensors").read_bytes()[:-7]), "model.safetensors", "sha256 mismatch"),
    ("garbage with its sha", lambda p: _put_bytes(p, b"\x01" * 20), "model.safetensors",
     "model.safetensors: not a valid safetensors file (the header length"),
    ("short file with its sha", lambda p: _put_bytes(p, b"\x01" * 4), "tensors_file.size",
     "tensors_file.size must be an integer in [8, 2147483648], not 4"),
    ("header not JSON", lambda p: _put_bytes(p, (3).to_bytes(8, "little") + b"{x}"),
     "model.safetensors", "not a valid safetensors file (the header is not valid JSON"),
    ("header duplicate key", lambda p: _put_bytes(p, _raw_header(
        '{"layers.0.codes": {"dtype": "I8", "shape": [1], "data_offsets": [0, 1]}, '
        '"layers.0.codes": {"dtype": "I8", "shape": [1], "data_offsets": [0, 1]}}', 1)),
     "model.safetensors", "appears twice in one object"),
    ("header deep", lambda p: _put_bytes(p, _raw_header('{"a": ' + "[" * 5000 + "]" * 5000
                                                        + "}", 0)),
     "model.safetensors", "the header nests deeper than 32 levels"),
    ("bytes after the data", lambda p: _put_bytes(
        p, (p / "model.safetensors").read_bytes() + b"\0" * 8), "model.safetensors",
     "model.safetensors: not a valid safetensors file"),
]

JSON_TEXT = [
    ("NaN", text(lambda s: s.replace('"act_bits": 6', '"act_bits": NaN', 1).encode()),
     "NaN is not a number JSON allows"),
    ("Infinity", text(lambda s: s.replace('"scale_exp": -3', '"scale_exp": -Infinity', 1)
                      .encode()), "-Infinity is not a number JSON allows"),
    ("float overflow", text(lambda s: s.replace('"scale_exp": -3', '"scale_exp": 1e400', 1)
                            .encode()), "1e400 overflows a 64-bit float"),
    ("duplicate key", text(lambda s: s.replace('"act_bits": 6', '"act_bits": 6, "act_bits": 7',
                                               1).encode()),
     "key 'act_bits' appears twice in one object"),
    ("deep nesting", text(lambda s: s.replace('"name": "conv_shift"',
                                              '"name": ' + "[" * 100000 + "]" * 100000)
                          .encode()), "the export graph nests deeper than 32 levels"),
    ("not UTF-8", text(lambda s: s.replace("conv_shift", "conv_\xe9").encode("latin-1")),
     "the export graph is not UTF-8 text"),
    ("not an object", text(lambda s: b"[]"), "the export graph must be a JSON object"),
    ("trailing data", text(lambda s: (s + "{}").encode()), "Extra data"),
    ("1.0 export", js(lambda g: (g.update(version="1.0"), g.pop("integrity")), forge=False),
     'model.json: format version "1.0" was written before exports carried a digest of their '
     "graph (this mulfree reads 2.0 and 3.0); export the model again (mulfree export)"),
    ("version 4.0", put("version", "4.0"), 'format version "4.0" is not supported'),
    ("version a number", put("version", 2), "format version 2 is not supported"),
    ("format", put("format", "onnx"), "not a mulfree export: format is \"onnx\", expected "
                                      "'mulfree-export'"),
]

# Edits every field check passes (the model is valid, only different): the digest refuses them.
DIGEST = [
    ("weight_bits 4 -> 5, derived fields too", js(lambda g: g["layers"][0].update(
        weight_bits=5, acc_width=26, weight_encoding=dict(g["layers"][0]["weight_encoding"],
                                                          scale_log2=-14)), forge=False)),
    ("input scale_exp", put("input", "scale_exp", 7, forge=False)),
    ("out_scale_exp", put("layers", 4, "out_scale_exp", -9, forge=False)),
    ("stride (same output shape)", put("layers", 2, "stride", 0, 3, forge=False)),
    ("name", put("name", "other", forge=False)),
    ("input act_bits narrower", put("input", "act_bits", 4, forge=False)),
    ("a code", lambda p: _put_tensors_keep_digest(p, lambda a: a["layers.4.codes"].__setitem__(
        (0, 0), (a["layers.4.codes"][0, 0] + 1) % 16))),
    ("a bias", lambda p: _put_tensors_keep_digest(p, lambda a: a["layers.5.bias"].__setitem__(
        0, a["layers.5.bias"][0] + 1))),
]


def _put_tensors_keep_digest(path, edit):
    arrays = load((path / "model.safetensors").read_bytes())
    edit(arrays)
    data = save(arrays, metadata={"format": ef.FORMAT_NAME, "version": ef.FORMAT_VERSION})
    (path / "model.safetensors").write_bytes(data)
    graph = _graph(path)
    graph["tensors_file"].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    _put_graph(path, graph, forge=False)


def _raw_header(header, n_data):
    raw = header.encode()
    return len(raw).to_bytes(8, "little") + raw + b"\0" * n_data


ROWS = TYPES_AND_RANGES + KEYS + DERIVED + CHAIN + TENSORS + FILES


@pytest.mark.parametrize("case, tamper, param, message", ROWS, ids=[r[0] for r in ROWS])
def test_edit_is_refused(export, case, tamper, param, message):
    tamper(export)
    _refused(export, param, message)


@pytest.mark.parametrize("case, tamper, message", JSON_TEXT, ids=[r[0] for r in JSON_TEXT])
def test_json_text_is_refused(export, case, tamper, message):
    tamper(export)
    with pytest.raises(ExportError) as info:
        load_export(export)
    assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
    assert info.value.param in ("model.json", "format", "version")


@pytest.mark.parametrize("case, tamper", DIGEST, ids=[r[0] for r in DIGEST])
def test_digest_refuses_valid_edits(export, case, tamper):
    tamper(export)
    _refused(export, "integrity.sha256", "model.json was edited after export (digest "
                                         "mismatch); re-export it")
    # Forged, the same edit is a valid model: only the digest could refuse it.
    graph = _graph(export)
    _put_graph(export, graph)
    load_export(export)


def test_unchanged_layout_loads(export):
    """Whitespace, key order and escapes do not change a value: the export still loads."""
    model = load_export(export)
    graph = _graph(export)
    reordered = {k: graph[k] for k in reversed(list(graph))}
    (export / "model.json").write_text(json.dumps(reordered, separators=(",", ":")))
    assert load_export(export) == model
    raw = json.dumps(graph, indent="\t ", separators=(" ,", " :  "))
    (export / "model.json").write_text("\n " + raw.replace('"conv_shift"', '"\\u0063onv_shift"'))
    assert load_export(export) == model


def test_symlink_out_of_the_folder_is_refused(export, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    os.replace(export / "model.safetensors", outside)
    os.symlink(outside, export / "model.safetensors")
    _refused(export, "tensors_file.name", "leads outside")


def test_every_row_fails_through_the_cli(export, capsys, run_main):
    """``mulfree compile`` of an edited export: exit 2 and one line on stderr, for a row of each
    table."""
    pristine = {p.name: p.read_bytes() for p in export.iterdir()}
    status, out, err = run_main(["compile", str(export)], capsys)
    assert status == 0, err
    rows = {r[0]: r[1] for r in ROWS + JSON_TEXT + DIGEST}
    picks = ["scale_exp 1e30", "unknown top field", "weight_bits 4 -> 5", "input channels",
             "shift code 16", "second tensor file", "deep nesting", "1.0 export",
             "weight_bits 4 -> 5, derived fields too", "header deep"]
    for case in picks:
        tamper = rows[case]
        for name, data in pristine.items():
            (export / name).write_bytes(data)
        tamper(export)
        status, out, err = run_main(["compile", str(export)], capsys)
        assert status == 2 and out == "" and err.count("\n") == 1, err
        assert "model.json" in err or "model.safetensors" in err, err


OTHER_KINDS = [
    ("adder", put("layers", 4, "weight_bits", 4), "layers.4.weight_bits",
     "layers.4.weight_bits of an adder layer must equal its act_bits = 6, not 4"),
    ("adder", put("layers", 4, "act_bits", 8), "layers.4.weight_bits",
     "layers.4.weight_bits of an adder layer must equal its act_bits = 8, not 6"),
    ("adder", element("layers.5.codes", 32), "layers.5.codes",
     "layers.5.codes[0, 0] = 32 is outside the allowed [-32, 31]"),
    ("adder", put("layers", 0, "weight_encoding", "scale", "weight"),
     "layers.0.weight_encoding.scale", 'is "weight", but the rest of the export makes it '
                                       '"activation"'),
    ("mult", element("layers.2.codes", -17), "layers.2.codes",
     "layers.2.codes[0, 0, 0, 0] = -17 is outside the allowed [-16, 15]"),
    ("mult", put("layers", 2, "weight_bits", 17), "layers.2.weight_bits",
     "layers.2.weight_bits must be an integer in [2, 16], not 17"),
    ("mult", put("layers", 2, "pe", "shift"), "layers.2.codes",
     "layers.2.codes[0, 0, 0, 0] = -12 is outside the allowed [0, 31]"),
    ("mult", put("layers", 5, "pe", "adder"), "layers.5.weight_bits",
     "must equal its act_bits = 6, not 5"),
]


@pytest.mark.parametrize("pe, tamper, param, message", OTHER_KINDS)
def test_adder_and_mult_fields(tmp_path, pe, tamper, param, message):
    path = tmp_path / pe
    write_export(conv_model(3, pe), path)
    load_export(path)
    tamper(path)
    _refused(path, param, message)


def test_valid_extremes_compute_the_same_in_golden_and_compiler(export):
    """Forged edits to the ends of the allowed ranges load, and the golden model and the
    compiled program (run on the core's NumPy emulation) agree on them."""
    from mulfree.host.compiler import compile_model, core_for_model, emulate_program
    from mulfree.params.model_golden import quantize_input, run_int_model
    graph = _graph(export)
    ends = {"bias": lambda e: (-(1 << (e["acc_width"] - 1)), (1 << (e["acc_width"] - 1)) - 1),
            "shift": lambda e: (-e["act_bits"], e["acc_width"] + 1),
            "codes": lambda e: (0, (1 << e["weight_bits"]) - 1)}
    rng = np.random.default_rng(0)
    for i in (0, 2, 4, 5):
        for field, bounds in ends.items():
            for value in bounds(graph["layers"][i]):
                ts(lambda a, g: a[f"layers.{i}.{field}"].__setitem__(..., value))(export)
                model = load_export(export)
                x = quantize_input(model, rng.normal(0, 4, (2, 7, 6, 5)))
                program = compile_model(model, core_for_model(model, rows=4, cols=4))
                np.testing.assert_array_equal(emulate_program(program, x),
                                              run_int_model(model, x))
    for exp in ef.SCALE_EXP_LIMITS:
        put("input", "scale_exp", exp)(export)
        model = load_export(export)
        with np.errstate(over="ignore"):        # 3 * 2^1074 is inf in float64: it saturates
            q = quantize_input(model, np.full((7, 6, 5), 3.0))
        assert q.dtype == np.int64 and np.all(np.abs(q) <= 32)


def test_format_limits_are_the_descriptor_fields():
    """The format's geometry limits are what the core's layer descriptor can carry."""
    widths = {name: width for _, _, width, name in DESC_FIELDS}
    assert ef.MAX_DIM == (1 << widths["in_h"]) - 1 == (1 << widths["out_c"]) - 1
    assert ef.MAX_KERNEL == (1 << widths["kernel_h"]) - 1
    assert ef.MAX_STRIDE == (1 << widths["stride_w"]) - 1
    assert ef.MAX_PADDING == (1 << widths["pad_h"]) - 1


@pytest.mark.parametrize("path", [None, 3, "", "a\0b", b"/nonexistent"])
def test_load_export_refuses_a_path_that_is_no_folder(path):
    from mulfree.host.export_format import ExportError, load_export
    with pytest.raises(ExportError) as exc:
        load_export(path)
    assert "\n" not in str(exc.value) and exc.value.param == "path"
