"""Tests of the integer model format (:mod:`mulfree.host.export_format`) and its golden model
(:mod:`mulfree.params.model_golden`).

The inference reference below is plain Python on Python integers, written from
``docs/numerics.md`` (shift codes, AdderNet, "Post-processing and layers", table shift) and the
format's docstring; it shares no code with the golden model.
"""

import hashlib
import json
import os

import numpy as np
import pytest
from safetensors.numpy import load, save

from mulfree.host import export_format as ef
from mulfree.host.export_format import (
    ExportError, IntConv2d, IntFlatten, IntInput, IntLinear, IntMaxPool2d, IntModel,
    load_export, write_export,
)
from mulfree.host.export_check import graph_digest
from mulfree.params.model_golden import predict, quantize_input, run_int_model


# Random models ------------------------------------------------------------------------------

def _codes(rng, pe, wb, ab, shape):
    if pe == "shift":
        return rng.integers(0, 1 << wb, shape)
    bits = ab if pe == "adder" else wb
    return rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), shape)


#: Right shifts that bring each kind's sums back to a few activations' worth (so that the
#: outputs vary rather than all saturate); -1 (a left shift) now and then.
SHIFTS = {"shift": (5, 10), "adder": (0, 4), "mult": (3, 7)}


def _post(rng, n, lo=-40, hi=40, center=0, pe="mult"):
    shift = rng.integers(*SHIFTS[pe], n)
    shift[rng.random(n) < 0.1] = -1
    return dict(bias=center + rng.integers(lo, hi, n), shift=shift,
                relu=rng.integers(0, 2, n).astype(bool))


def _center(pe, k, ab):
    """AdderNet sums are all <= 0, about -k * 2^a / 3: a bias that brings them back near 0."""
    return k * (1 << ab) // 3 if pe == "adder" else 0


WB = {"shift": 4, "adder": None, "mult": 5}


def conv_model(rng, pe, ab=6, shifts=True, output="argmax"):
    """conv (+shifts, padding) -> maxpool -> conv (stride 2) -> flatten -> linear."""
    wb = WB[pe]
    return IntModel(IntInput((3, 7, 6), ab, -3), [
        IntConv2d(pe, _codes(rng, pe, wb, ab, (4, 3, 3, 3)), padding=1, act_bits=ab,
                  weight_bits=wb, shifts=rng.integers(-1, 2, (3, 2)) if shifts else None,
                  out_scale_exp=-2, **_post(rng, 4, center=_center(pe, 27, ab), pe=pe)),
        IntMaxPool2d(),
        IntConv2d(pe, _codes(rng, pe, wb, ab, (2, 4, 2, 1)), stride=(2, 1), padding=(1, 0),
                  act_bits=ab, weight_bits=wb, out_scale_exp=-1,
                  **_post(rng, 2, center=_center(pe, 8, ab), pe=pe)),
        IntFlatten(),
        IntLinear(pe, _codes(rng, pe, wb, ab, (2 * 2 * 3, 5)), act_bits=ab, weight_bits=wb,
                  out_scale_exp=0, **_post(rng, 5, center=_center(pe, 12, ab), pe=pe)),
    ], output=output, name="tiny")


def mlp_model(rng, pe, ab=8):
    wb = WB[pe]
    return IntModel(IntInput((10,), ab, -5), [
        IntLinear(pe, _codes(rng, pe, wb, ab, (10, 7)), act_bits=ab, weight_bits=wb,
                  **_post(rng, 7, -1000, 1000, _center(pe, 10, ab), pe)),
        IntLinear(pe, _codes(rng, pe, wb, ab, (7, 3)), act_bits=ab, weight_bits=wb,
                  **_post(rng, 3, center=_center(pe, 7, ab), pe=pe)),
    ])


def random_model(seed):
    rng = np.random.default_rng(seed)
    pe = ("shift", "adder", "mult")[seed % 3]
    return conv_model(rng, pe) if seed % 2 else mlp_model(rng, pe)


# Reference ---------------------------------------------------------------------------------

def ref_weight(pe, wb, code):
    if pe != "shift":
        return code
    e, s = code & ((1 << (wb - 1)) - 1), code >> (wb - 1)
    return 0 if e == 0 else (-1) ** s * 2 ** (e - 1)


def ref_term(pe, wb, x, code):
    w = ref_weight(pe, wb, code)
    return -abs(x - w) if pe == "adder" else x * w


def ref_post(acc, bias, shift, relu, ab):
    y = acc + bias
    if shift > 0:
        y = (y + 2 ** (shift - 1)) // 2 ** shift
    elif shift < 0:
        y = y * 2 ** -shift
    if relu:
        y = max(y, 0)
    return min(max(y, -2 ** (ab - 1)), 2 ** (ab - 1) - 1)


def ref_layer(layer, x):
    """One sample through one layer, Python ints in nested lists / dicts."""
    if layer.kind == "flatten":
        return [v for plane in x for row in plane for v in row]
    if layer.kind == "maxpool2d":
        return [[[max(p[2 * y][2 * xx], p[2 * y][2 * xx + 1], p[2 * y + 1][2 * xx],
                      p[2 * y + 1][2 * xx + 1]) for xx in range(len(p[0]) // 2)]
                 for y in range(len(p) // 2)] for p in x]
    pe, ab = layer.pe, layer.act_bits
    wb = ab if pe == "adder" else layer.weight_bits
    codes = layer.codes.tolist()
    post = list(zip(layer.bias.tolist(), layer.shift.tolist(), layer.relu.tolist()))
    if layer.kind == "linear":
        return [ref_post(sum(ref_term(pe, wb, x[k], codes[k][n]) for k in range(len(x))),
                         *post[n], ab) for n in range(len(codes[0]))]
    c_in, h, w = len(x), len(x[0]), len(x[0][0])
    if layer.shifts is not None:
        sh = layer.shifts.tolist()
        x = [[[x[c][y + sh[c][0]][xx + sh[c][1]]
               if 0 <= y + sh[c][0] < h and 0 <= xx + sh[c][1] < w else 0
               for xx in range(w)] for y in range(h)] for c in range(c_in)]
    (sy, sx), (py, px) = layer.stride, layer.padding
    kh, kw = len(codes[0][0]), len(codes[0][0][0])
    oh, ow = (h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1

    def pix(c, y, xx):
        y, xx = y - py, xx - px
        return x[c][y][xx] if 0 <= y < h and 0 <= xx < w else 0

    return [[[ref_post(sum(ref_term(pe, wb, pix(c, oy * sy + ky, ox * sx + kx), codes[o][c][ky][kx])
                           for c in range(c_in) for ky in range(kh) for kx in range(kw)),
                       *post[o], ab)
              for ox in range(ow)] for oy in range(oh)] for o in range(len(codes))]


def ref_model(model, x):
    out = []
    for sample in x.tolist():
        for layer in model.layers:
            sample = ref_layer(layer, sample)
        out.append(sample)
    return np.array(out, dtype=np.int64)


# Round trip and inference -----------------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_round_trip(tmp_path, seed):
    model = random_model(seed)
    write_export(model, tmp_path / "m")
    loaded = load_export(tmp_path / "m")
    assert loaded == model
    assert sorted(os.listdir(tmp_path / "m")) == ["model.json", "model.safetensors"]
    x = np.random.default_rng(seed).integers(-32, 32, (2, *model.input.shape))
    np.testing.assert_array_equal(run_int_model(loaded, x), run_int_model(model, x))


def test_round_trip_every_kind_and_the_json(tmp_path):
    rng = np.random.default_rng(1)
    model = conv_model(rng, "shift")
    model.layers.insert(3, IntConv2d("adder", _codes(rng, "adder", None, 6, (2, 2, 1, 1)),
                                     act_bits=6, **_post(rng, 2)))
    model.layers[-1] = IntLinear("mult", _codes(rng, "mult", 5, 6, (12, 5)), act_bits=6,
                                 weight_bits=5, **_post(rng, 5))
    write_export(model, tmp_path)
    assert load_export(tmp_path) == model
    graph = json.loads((tmp_path / "model.json").read_text())
    assert (graph["format"], graph["version"]) == ("mulfree-export", "3.0")
    assert graph["integrity"] == {"sha256": graph_digest(graph)}
    assert [e["kind"] for e in graph["layers"]] == \
        ["conv2d", "maxpool2d", "conv2d", "conv2d", "flatten", "linear"]
    # Names and inputs are explicit in 3.0, and each node states its inputs' shapes.
    assert [(e["name"], e["inputs"]) for e in graph["layers"]] == \
        [("layers.0", ["input"])] + [(f"layers.{i}", [f"layers.{i - 1}"]) for i in range(1, 6)]
    assert [e["in_shapes"] for e in graph["layers"][:2]] == [[[3, 7, 6]], [[4, 7, 6]]]
    assert graph["layers"][1]["kernel"] == graph["layers"][1]["stride"] == [2, 2]
    assert [graph["layers"][i]["pe"] for i in (0, 2, 3, 5)] == ["shift", "shift", "adder",
                                                                  "mult"]
    conv = graph["layers"][0]
    assert conv["groups"] == 1 and conv["padding"] == [1, 1]
    assert conv["tensors"]["codes"] == {"name": "layers.0.codes", "dtype": "int8",
                                        "shape": [4, 3, 3, 3]}
    assert conv["weight_encoding"]["scale_log2"] == -6
    assert conv["input_shift"] and conv["tensors"]["shifts"]["shape"] == [3, 2]
    assert graph["layers"][1]["out_scale_exp"] == conv["out_scale_exp"] == -2
    assert graph["layers"][4]["out_shape"] == [12]
    data = (tmp_path / "model.safetensors").read_bytes()
    assert graph["tensors_file"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert all(v.dtype.kind == "i" for v in load(data).values())


@pytest.mark.parametrize("pe", ["shift", "adder", "mult"])
def test_inference_against_reference(pe):
    rng = np.random.default_rng(["shift", "adder", "mult"].index(pe))
    for model in (conv_model(rng, pe), conv_model(rng, pe, shifts=False), mlp_model(rng, pe)):
        lo, hi = -(1 << (model.input.act_bits - 1)), 1 << (model.input.act_bits - 1)
        x = rng.integers(lo, hi, (3, *model.input.shape))
        want = ref_model(model, x)
        np.testing.assert_array_equal(run_int_model(model, x), want)
        np.testing.assert_array_equal(run_int_model(model, x[0]), want[0])
        np.testing.assert_array_equal(predict(model, x), np.argmax(want, axis=1))


def test_inference_saturates_and_refuses_wide_inputs():
    model = IntModel(IntInput((2,), 4, 0), [
        IntLinear("mult", [[7], [7]], bias=[0], shift=[0], act_bits=4, weight_bits=4)],
        output="none")
    np.testing.assert_array_equal(run_int_model(model, [[7, 7], [-8, -8]]), [[7], [-8]])
    with pytest.raises(ValueError, match=r"x_int must lie in \[-8, 7\]"):
        run_int_model(model, [8, 0])
    with pytest.raises(ExportError, match="predict needs output = 'argmax'"):
        predict(model, [1, 1])


def test_quantize_input():
    model = IntModel(IntInput((6,), 4, -1), [IntFlatten()], output="none")
    x = np.array([[1.25, -1.25, 0.24999999999999997, 100.0, -np.inf, -3.75]])
    # x * 2 = 2.5 -> 3, -2.5 -> -2 (half up), 0.4999... -> 0, saturation to [-8, 7].
    np.testing.assert_array_equal(quantize_input(model, x), [[3, -2, 0, 7, -8, -7]])
    assert quantize_input(model, x[0]).shape == (6,)
    with pytest.raises(ValueError, match="NaN"):
        quantize_input(model, [0, 0, 0, 0, 0, np.nan])
    with pytest.raises(ValueError, match="shape"):
        quantize_input(model, [0.0] * 5)


# Validation ---------------------------------------------------------------------------------

def _bad(model, mutate):
    mutate(model)
    return model


@pytest.mark.parametrize("mutate, param, message", [
    (lambda m: setattr(m.layers[0], "act_bits", 5), "layers.0.act_bits",
     "narrower than its input's 6 bits"),
    (lambda m: setattr(m.layers[0], "weight_bits", 7), "layers.0.weight_bits",
     "weight_bits must be an integer in [2, 6], not 7"),
    (lambda m: m.layers[0].codes.__setitem__((1, 2, 0, 0), 16), "layers.0.codes",
     r"layers.0.codes[1, 2, 0, 0] = 16 is outside the allowed [0, 15]"),
    (lambda m: m.layers[0].shifts.__setitem__((2, 1), 8), "layers.0.shifts",
     "layers.0.shifts[2, 1] = 8 is outside the allowed [-7, 7]"),
    (lambda m: m.layers[4].bias.__setitem__(0, 1 << 40), "layers.4.bias", "is outside"),
    (lambda m: m.layers[4].shift.__setitem__(1, 99), "layers.4.shift",
     "layers.4.shift[1] = 99 is outside"),
    (lambda m: m.layers.pop(3), "layers.3.codes", "a linear layer needs a vector"),
    (lambda m: m.layers.__delitem__(slice(3, None)), "output", "'argmax' needs a vector"),
    (lambda m: setattr(m.layers[2], "stride", (0, 1)), "layers.2.stride",
     "must be an integer in [1, 15] or a pair of them, not (0, 1)"),
    (lambda m: setattr(m.layers[2], "stride", (1, 16)), "layers.2.stride", "[1, 15]"),
    (lambda m: setattr(m.layers[2], "padding", (0, 1)), "layers.2.padding",
     "layers.2.padding = [0, 1] must be smaller than the 2x1 kernel"),
    (lambda m: setattr(m.layers[0], "padding", 16), "layers.0.padding", "[0, 15]"),
    (lambda m: setattr(m.input, "scale_exp", 5000), "input.scale_exp",
     "input.scale_exp must be an integer in [-1074, 1008], not 5000"),
    (lambda m: setattr(m.input, "scale_exp", 1e30), "input.scale_exp", "not 1e+30"),
    (lambda m: setattr(m.layers[4], "out_scale_exp", -1075), "layers.4.out_scale_exp",
     "[-1074, 1008], not -1075"),
    (lambda m: setattr(m.input, "shape", (3, 70000, 6)), "input.shape",
     "input.shape: the input (3, 70000, 6) has a dimension larger than 65535"),
    (lambda m: setattr(m, "name", "a\tb"), "name", "name must be None or a printable string"),
    (lambda m: setattr(m, "name", 3), "name", "not 3"),
    (lambda m: setattr(m, "output", ["argmax"]), "output", "not ['argmax']"),
    (lambda m: setattr(m.layers[0], "pe", "xor"), "layers.0.pe", "one of shift, adder, mult"),
    (lambda m: setattr(m.input, "act_bits", 17), "input.act_bits", "[2, 16], not 17"),
    (lambda m: m.layers.insert(0, IntLinear("mult", [[1]], [0], [0])), "layers.0.codes",
     "must have shape"),
])
def test_validate_refuses(mutate, param, message):
    model = conv_model(np.random.default_rng(5), "shift")
    mutate(model)
    with pytest.raises(ExportError) as info:
        model.validate()
    assert info.value.param == param
    assert message in str(info.value)


def test_adder_weight_bits():
    model = mlp_model(np.random.default_rng(0), "adder")
    assert model.layers[0].weight_bits == 8
    model.layers[0].weight_bits = 4
    with pytest.raises(ExportError, match="must equal its act_bits = 8"):
        model.validate()


def test_invalid_model_writes_nothing(tmp_path):
    model = conv_model(np.random.default_rng(0), "mult")
    model.layers[0].codes[0, 0, 0, 0] = 100
    with pytest.raises(ExportError, match="outside the allowed"):
        write_export(model, tmp_path / "m")
    assert not (tmp_path / "m").exists()


# Loader refusals ----------------------------------------------------------------------------

@pytest.fixture
def export(tmp_path):
    path = tmp_path / "m"
    write_export(conv_model(np.random.default_rng(3), "shift"), path)
    return path


def _edit_json(path, edit):
    """Edit the graph and recompute its digest: the field checks alone must refuse the edit."""
    graph = json.loads((path / "model.json").read_text())
    edit(graph)
    if isinstance(graph.get("integrity"), dict):
        graph["integrity"]["sha256"] = graph_digest(graph)
    (path / "model.json").write_text(json.dumps(graph))


def _edit_tensors(path, edit):
    """Rewrite the tensors and put their true sha256 in the JSON: only the content is wrong."""
    tensors = load((path / "model.safetensors").read_bytes())
    edit(tensors)
    _edit_tensors_raw(path, save(tensors, metadata={"format": ef.FORMAT_NAME,
                                                    "version": ef.FORMAT_VERSION}))


def _flip_byte(path):
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-3] ^= 0x01
    (path / "model.safetensors").write_bytes(bytes(data))


def _truncate(path):
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[:len(data) - 7])


def _set(key, value):
    return lambda g: g.__setitem__(key, value)


def _tensor_spec(layer, name, key, value):
    return lambda g: g["layers"][layer]["tensors"][name].__setitem__(key, value)


REFUSALS = [
    ("no json", lambda p: (p / "model.json").unlink(), "model.json",
     "not a mulfree export: '{p}' has no model.json"),
    ("no tensors", lambda p: (p / "model.safetensors").unlink(), "model.safetensors",
     "has no model.safetensors"),
    ("bad json", lambda p: (p / "model.json").write_text("{\"format\": "), "model.json",
     "model.json '{p}/model.json': the export graph is not valid JSON"),
    ("json list", lambda p: (p / "model.json").write_text("[]"), "model.json",
     "the export graph must be a JSON object, not a list"),
    ("format", lambda p: _edit_json(p, _set("format", "onnx")), "format",
     "model.json: not a mulfree export: format is \"onnx\", expected 'mulfree-export'"),
    ("version 4", lambda p: _edit_json(p, _set("version", "4.0")), "version",
     "format version \"4.0\" is not supported (this mulfree reads 2.0 and 3.0)"),
    ("version 1", lambda p: _edit_json(p, _set("version", "1.0")), "version",
     "format version \"1.0\" was written before exports carried a digest of their graph"),
    ("version junk", lambda p: _edit_json(p, _set("version", 1)), "version",
     "format version 1 is not supported"),
    ("truncated", _truncate, "model.safetensors",
     "model.safetensors is truncated or modified (sha256 mismatch"),
    ("flipped byte", _flip_byte, "model.safetensors",
     "model.safetensors is truncated or modified (sha256 mismatch"),
    ("garbage with right sha", lambda p: _edit_tensors_raw(p, b"\x01" * 20), "model.safetensors",
     "model.safetensors: not a valid safetensors file"),
    ("shape lie", lambda p: _edit_json(p, _tensor_spec(4, "codes", "shape", [5, 12])),
     "layers.4.codes", "model.safetensors: layers.4.codes has shape [12, 5], model.json says "
                       "[5, 12]"),
    ("dtype lie", lambda p: _edit_json(p, _tensor_spec(0, "bias", "dtype", "int16")),
     "layers.0.bias", "layers.0.bias has dtype int32, model.json says int16"),
    ("dtype float", lambda p: _edit_json(p, _tensor_spec(0, "bias", "dtype", "float32")),
     "layers.0.tensors.bias.dtype", "layers.0.tensors.bias.dtype must be one of 'int8', "
                                    "'int16', 'int32', 'int64', not \"float32\""),
    ("code out of range",
     lambda p: _edit_tensors(p, lambda t: t["layers.2.codes"].__setitem__((1, 3, 1, 0), 16)),
     "layers.2.codes", "layers.2.codes[1, 3, 1, 0] = 16 is outside the allowed [0, 15]"),
    ("extra tensor",
     lambda p: _edit_tensors(p, lambda t: t.__setitem__("layers.9.codes", np.zeros(2, "i1"))),
     "layers.9.codes", "holds tensors model.json does not list: \"layers.9.codes\""),
    ("missing tensor", lambda p: _edit_tensors(p, lambda t: t.pop("layers.0.shifts")),
     "layers.0.shifts", "model.safetensors: has no tensor layers.0.shifts"),
    ("unlisted shifts", lambda p: _edit_json(p, lambda g: g["layers"][0]["tensors"].pop("shifts")),
     "layers.0.tensors.shifts", "layers.0.tensors lacks the field 'shifts'"),
    ("relu not 0/1",
     lambda p: _edit_tensors(p, lambda t: t["layers.0.relu"].__setitem__(0, 2)),
     "layers.0.relu", "layers.0.relu must hold 0 or 1 only"),
    ("out_shape lie", lambda p: _edit_json(p, lambda g: g["layers"][3].update(out_shape=[13])),
     "layers.3.out_shape", "layers.3.out_shape is [13], but the rest of the export makes it "
                           "[12]"),
    ("unknown kind", lambda p: _edit_json(p, lambda g: g["layers"][1].update(kind="avgpool")),
     "layers.1.kind", "layers.1.kind must be one of 'linear', 'conv2d', 'flatten', "
                      "'maxpool2d', 'avgpool2d', 'global_avgpool', 'add', 'concat', 'clamp', "
                      "'pad', 'shift2d', 'address_shift', 'channel_shift', not \"avgpool\""),
    # A 3x3 window: the pooled map is 3x2, no longer 3x3, and the chain after it breaks.
    ("pool 3x3", lambda p: _edit_json(p, lambda g: g["layers"][1].update(kernel=[3, 3])),
     "layers.4.codes", "model.safetensors: layers.4.codes must have shape (8, N) for the "
                       "input (8,)"),
    ("missing key", lambda p: _edit_json(p, lambda g: g["layers"][0].pop("pe")),
     "layers.0.pe", "model.json: layers.0 lacks the field 'pe'"),
    ("unknown key", lambda p: _edit_json(p, lambda g: g.update(future_field={"x": 1})),
     "future_field", "the graph has the unknown field \"future_field\""),
    ("edited after export", lambda p: (p / "model.json").write_text(
        (p / "model.json").read_text().replace('"scale_exp": -3', '"scale_exp": -4')),
     "integrity.sha256", "model.json was edited after export (digest mismatch); re-export it"),
]


def _edit_tensors_raw(path, data):
    (path / "model.safetensors").write_bytes(data)
    _edit_json(path, lambda g: g["tensors_file"].update(sha256=hashlib.sha256(data).hexdigest(),
                                                        size=len(data)))


@pytest.mark.parametrize("case, tamper, param, message", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_load_refuses(export, case, tamper, param, message):
    tamper(export)
    with pytest.raises(ExportError) as info:
        load_export(export)
    assert message.format(p=export) in str(info.value)
    assert info.value.param == param


def test_load_refuses_a_file(tmp_path):
    (tmp_path / "f").write_text("x")
    for path in (tmp_path / "f", tmp_path / "missing"):
        with pytest.raises(ExportError, match="not a mulfree export: .* is not a directory"):
            load_export(path)


# Atomicity ----------------------------------------------------------------------------------

def test_failure_mid_write_leaves_no_partial_file(tmp_path, monkeypatch):
    model = conv_model(np.random.default_rng(0), "adder")
    path = tmp_path / "m"

    # The JSON's data is written, then the disk fails before it is renamed into place.
    real_fsync = os.fsync
    calls = []

    def failing_fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError("disk full")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        write_export(model, path)
    assert sorted(os.listdir(path)) == ["model.safetensors"]     # no model.json, no temp file
    with pytest.raises(ExportError, match="has no model.json"):
        load_export(path)
    monkeypatch.undo()

    # Over an existing export: a failure leaves the old model.json whole; it no longer matches
    # the new tensors, and the loader says so rather than mixing the two models.
    write_export(model, path)
    old_json = (path / "model.json").read_bytes()
    other = conv_model(np.random.default_rng(1), "adder")
    renames = []

    def failing_replace(src, dst):
        renames.append(dst)
        if str(dst).endswith("model.json"):
            raise OSError("crash")
        os.rename(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="crash"):
        write_export(other, path)
    assert (path / "model.json").read_bytes() == old_json
    assert sorted(os.listdir(path)) == ["model.json", "model.safetensors"]
    with pytest.raises(ExportError, match="sha256 mismatch"):
        load_export(path)
    monkeypatch.undo()
    write_export(other, path)
    assert load_export(path) == other
