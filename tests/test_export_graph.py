"""Export format 3.0, a graph (:mod:`mulfree.host.export_check`, :mod:`mulfree.host.export_nodes`).

A model of every node kind (built by hand below) is written and read back equal, and computes
the same in the golden model; a 2.0 chain (written now with ``version="2.0"``, and a file
written by the 2.0 writer before 3.0 existed) still loads. Each hostile edit of a 3.0 graph is
*forged* (the graph's digest recomputed, as anyone can), so the field and graph checks — not
the digest — must refuse it, naming the field and why.
"""

import base64
import hashlib
import json

import numpy as np
import pytest
from safetensors.numpy import load, save

from mulfree.host.export_check import graph_digest
from mulfree.host.export_format import (
    FORMAT_VERSION, LAYER_KINDS, ExportError, IntAdd, IntAddressShift, IntAvgPool2d,
    IntChannelShift, IntClamp, IntConcat, IntConv2d, IntFlatten, IntGlobalAvgPool, IntInput,
    IntLinear, IntMaxPool2d, IntModel, IntPad, IntShift2d, load_export, write_export)
from mulfree.params.model_golden import run_int_model


# Models --------------------------------------------------------------------------------------

def _post(rng, n, shift, center=0):
    return dict(bias=center + rng.integers(-20, 20, n), shift=np.full(n, shift),
                relu=rng.integers(0, 2, n).astype(bool))


def every_kind(seed=0):
    """conv (shift) -> depthwise conv (adder) -> add with the conv's output (a residual) ->
    clamp -> avgpool 3x3 -> maxpool 3/2/1 -> pad -> shift2d -> address_shift -> channel_shift
    -> concat (with the pad's output) -> global_avgpool -> flatten -> linear (mult).

    Some nodes have names, some not (``layers.<i>``); some read the previous node implicitly.
    """
    rng = np.random.default_rng(seed)
    return IntModel(IntInput((3, 8, 8), 6, -3), [
        IntConv2d("shift", rng.integers(0, 16, (4, 3, 3, 3)), padding=1, act_bits=6,
                  weight_bits=4, out_scale_exp=-2, name="stem", **_post(rng, 4, 8)),
        IntConv2d("adder", rng.integers(-32, 32, (4, 1, 3, 3)), padding=1, act_bits=6,
                  groups=4, out_scale_exp=-3, **_post(rng, 4, 2, center=9 * 64 // 3)),
        IntAdd(in_shifts=(1, 0), shift=1, relu=False, act_bits=7, out_scale_exp=-2,
               name="res", inputs=("stem", "layers.1")),
        IntClamp(lo=0, hi=20, name="relu6"),
        IntAvgPool2d(kernel=3, stride=1, padding=1, shift=0, act_bits=7, name="avg"),
        IntMaxPool2d(kernel=3, stride=2, padding=1, name="pool"),
        IntPad(pads=(0, 2, 1, 1, 1, 1), name="pad"),
        IntShift2d(offsets=rng.integers(-2, 3, (6, 2)), name="sh"),
        IntAddressShift(offsets=rng.integers(-1, 2, (6, 2)), name="as"),
        IntChannelShift(r=2, name="cs"),
        IntConcat(shifts=(1, 1), act_bits=6, out_scale_exp=-1, name="cat",
                  inputs=("cs", "pad")),
        IntGlobalAvgPool(shift=0, act_bits=8, name="gap"),
        IntFlatten(),
        IntLinear("mult", rng.integers(-32, 32, (12, 5)), act_bits=8, weight_bits=6,
                  out_scale_exp=0, name="fc", **_post(rng, 5, 5)),
    ], output="argmax", name="every_kind")


def demo_chain(seed=0):
    """The integer form of ``deepshift_cnn`` (host/models.py): conv 1->16, maxpool, conv
    16->32, maxpool, flatten, linear 128->10, every weight a 4-bit shift code."""
    rng = np.random.default_rng(seed)
    return IntModel(IntInput((1, 8, 8), 8, -4), [
        IntConv2d("shift", rng.integers(0, 16, (16, 1, 3, 3)), padding=1, out_scale_exp=-3,
                  **_post(rng, 16, 9)),
        IntMaxPool2d(),
        IntConv2d("shift", rng.integers(0, 16, (32, 16, 3, 3)), padding=1, out_scale_exp=-2,
                  **_post(rng, 32, 11)),
        IntMaxPool2d(),
        IntFlatten(),
        IntLinear("shift", rng.integers(0, 16, (128, 10)), out_scale_exp=-1,
                  **_post(rng, 10, 11)),
    ], name="deepshift_cnn")


def _inputs(model, n=4, seed=0):
    bits = model.input.act_bits
    return np.random.default_rng(seed).integers(-(1 << (bits - 1)), 1 << (bits - 1),
                                                (n, *model.input.shape))


# Round trips ---------------------------------------------------------------------------------

def test_every_kind_round_trip(tmp_path):
    model = every_kind()
    assert {l.kind for l in model.layers} == set(LAYER_KINDS)
    write_export(model, tmp_path)
    loaded = load_export(tmp_path)
    assert loaded == model
    x = _inputs(model, 8)
    want = run_int_model(model, x)
    np.testing.assert_array_equal(run_int_model(loaded, x), want)
    # The model computes something: not every output saturated or equal.
    assert len(np.unique(want)) > 5


@pytest.mark.parametrize("seed", range(1, 5))
def test_every_kind_round_trip_seeds(tmp_path, seed):
    model = every_kind(seed)
    write_export(model, tmp_path)
    loaded = load_export(tmp_path)
    assert loaded == model
    x = _inputs(model, 3, seed)
    np.testing.assert_array_equal(run_int_model(loaded, x), run_int_model(model, x))


def test_graph_json(tmp_path):
    """Names and inputs explicit, each kind's fields, derived facts, tensors."""
    model = every_kind()
    write_export(model, tmp_path)
    graph = json.loads((tmp_path / "model.json").read_text())
    assert graph["version"] == FORMAT_VERSION == "3.0"
    nodes = graph["layers"]
    assert [n["name"] for n in nodes] == ["stem", "layers.1", "res", "relu6", "avg", "pool",
                                          "pad", "sh", "as", "cs", "cat", "gap", "layers.12",
                                          "fc"]
    assert [n["inputs"] for n in nodes[:4]] == [["input"], ["stem"], ["stem", "layers.1"],
                                                ["res"]]
    assert nodes[10]["inputs"] == ["cs", "pad"] and nodes[13]["inputs"] == ["layers.12"]
    assert nodes[2] == {
        "index": 2, "kind": "add", "name": "res", "inputs": ["stem", "layers.1"],
        "in_shapes": [[4, 8, 8], [4, 8, 8]], "out_shape": [4, 8, 8], "act_bits": 7,
        "out_scale_exp": -2, "in_shifts": [1, 0], "shift": 1, "relu": False, "tensors": {}}
    assert nodes[1]["groups"] == 4 and nodes[1]["pe"] == "adder" and \
        nodes[1]["weight_bits"] == 6 and nodes[1]["max_k"] == 9
    assert nodes[1]["tensors"]["codes"]["shape"] == [4, 1, 3, 3]
    # Pass-through kinds state their input's width and scale; pooling with a shift its own.
    assert [(n["act_bits"], n["out_scale_exp"]) for n in nodes[3:10]] == \
        [(7, -2)] * 7
    assert {k: nodes[4][k] for k in ("kernel", "stride", "padding", "ceil_mode",
                                      "count_include_pad", "shift")} == \
        dict(kernel=[3, 3], stride=[1, 1], padding=[1, 1], ceil_mode=False,
             count_include_pad=True, shift=0)
    assert nodes[5]["out_shape"] == [4, 4, 4] and nodes[6]["pads"] == [0, 2, 1, 1, 1, 1]
    assert nodes[6]["out_shape"] == [6, 6, 6]
    assert nodes[7]["tensors"] == {"offsets": {"name": "layers.7.offsets", "dtype": "int8",
                                               "shape": [6, 2]}}
    assert nodes[9]["r"] == 2 and nodes[3]["lo"] == 0 and nodes[3]["hi"] == 20
    assert nodes[10]["shifts"] == [1, 1] and nodes[10]["out_shape"] == [12, 6, 6]
    assert (nodes[11]["out_shape"], nodes[11]["out_scale_exp"]) == ([12, 1, 1], -1)
    data = (tmp_path / "model.safetensors").read_bytes()
    arrays = load(data)
    np.testing.assert_array_equal(arrays["layers.8.offsets"], model.layers[8].offsets)
    assert sorted(arrays) == sorted(
        [f"layers.{i}.{f}" for i in (0, 1, 13) for f in ("codes", "bias", "shift", "relu")]
        + ["layers.7.offsets", "layers.8.offsets"])
    assert graph["integrity"]["sha256"] == graph_digest(graph)


def test_chain_reads_back_with_default_names(tmp_path):
    """A chain's nodes are written with names ``layers.<i>`` and explicit inputs, and read back
    with ``None`` for both: the defaults, so the chain is the chain it was."""
    model = demo_chain()
    write_export(model, tmp_path)
    graph = json.loads((tmp_path / "model.json").read_text())
    assert graph["layers"][3]["name"] == "layers.3"
    assert graph["layers"][3]["inputs"] == ["layers.2"]
    loaded = load_export(tmp_path)
    assert loaded == model and loaded.is_chain
    assert all(l.name is None and l.inputs is None for l in loaded.layers)


def test_format_2_still_loads(tmp_path):
    """The old demo chain written as 2.0 loads, equal, computing the same."""
    model = demo_chain()
    write_export(model, tmp_path, version="2.0")
    graph = json.loads((tmp_path / "model.json").read_text())
    assert graph["version"] == "2.0" and "in_shape" in graph["layers"][0]
    assert "name" not in graph["layers"][0] and "groups" not in graph["layers"][0]
    loaded = load_export(tmp_path)
    assert loaded == model
    x = _inputs(model, 5)
    np.testing.assert_array_equal(run_int_model(loaded, x), run_int_model(model, x))


#: A 2.0 export written by mulfree's 2.0 writer, before format 3.0 (model.json compacted).
OLD_JSON = (
    '{"format":"mulfree-export","version":"2.0","name":"old","input":{"shape":[3],"act_bits":4,'
    '"scale_exp":-2,"quantization":"q = clamp(floor(x * 2^-scale_exp + 1/2), act_range)"},'
    '"layers":[{"index":0,"kind":"linear","in_shape":[3],"out_shape":[2],"pe":"mult",'
    '"act_bits":5,"weight_bits":4,"max_k":3,"acc_width":10,"out_scale_exp":-1,'
    '"weight_encoding":{"kind":"signed","scale_log2":0},"tensors":{"codes":{"name":'
    '"layers.0.codes","dtype":"int8","shape":[3,2]},"bias":{"name":"layers.0.bias","dtype":'
    '"int16","shape":[2]},"shift":{"name":"layers.0.shift","dtype":"int8","shape":[2]},'
    '"relu":{"name":"layers.0.relu","dtype":"int8","shape":[2]}}}],"output":"argmax",'
    '"tensors_file":{"name":"model.safetensors","sha256":'
    '"ad24a4008e325289e152b6dd642dada4be6a3abfaffaab46a10ec00f57fcf234","size":350},'
    '"integrity":{"sha256":"31c486efd4a5dd790d503c48da190776c384936fb8d6eead06e6673279b7e781"}}')
OLD_TENSORS = (
    "SAEAAAAAAAB7Il9fbWV0YWRhdGFfXyI6eyJ2ZXJzaW9uIjoiMi4wIiwiZm9ybWF0IjoibXVsZnJlZS1leHBvcnQifS"
    "wibGF5ZXJzLjAuYmlhcyI6eyJkdHlwZSI6IkkxNiIsInNoYXBlIjpbMl0sImRhdGFfb2Zmc2V0cyI6WzAsNF19LCJs"
    "YXllcnMuMC5jb2RlcyI6eyJkdHlwZSI6Ikk4Iiwic2hhcGUiOlszLDJdLCJkYXRhX29mZnNldHMiOls0LDEwXX0sIm"
    "xheWVycy4wLnJlbHUiOnsiZHR5cGUiOiJJOCIsInNoYXBlIjpbMl0sImRhdGFfb2Zmc2V0cyI6WzEwLDEyXX0sImxh"
    "eWVycy4wLnNoaWZ0Ijp7ImR0eXBlIjoiSTgiLCJzaGFwZSI6WzJdLCJkYXRhX29mZnNldHMiOlsxMiwxNF19fSAgAw"
    "D//wH+AwD8BQEAAQA=")


def test_a_file_of_the_2_0_writer_loads(tmp_path):
    (tmp_path / "model.json").write_text(OLD_JSON)
    (tmp_path / "model.safetensors").write_bytes(base64.b64decode(OLD_TENSORS))
    want = IntModel(IntInput((3,), 4, -2), [
        IntLinear("mult", [[1, -2], [3, 0], [-4, 5]], bias=[3, -1], shift=[1, 0],
                  relu=[True, False], act_bits=5, weight_bits=4, out_scale_exp=-1)],
        name="old")
    assert load_export(tmp_path) == want
    # The 2.0 writer of today writes the same fields.
    write_export(want, tmp_path / "again", version="2.0")
    again = json.loads((tmp_path / "again" / "model.json").read_text())
    old = json.loads(OLD_JSON)
    for graph in (again, old):
        del graph["integrity"], graph["tensors_file"]["sha256"], graph["tensors_file"]["size"]
    assert again == old


def _not_chains():
    pool = demo_chain()
    pool.layers[1] = IntMaxPool2d(kernel=3, stride=2, padding=1)     # same shape, not 2x2
    named = demo_chain()
    named.layers[2].name = "conv2"
    mixed = demo_chain()
    mixed.layers[5] = IntLinear("mult", np.ones((128, 10), int), bias=np.zeros(10, int),
                                shift=np.zeros(10, int), act_bits=8, weight_bits=4)
    return {"every kind": every_kind(), "3x3 pooling": pool, "a name": named,
            "two PE kinds": mixed}


@pytest.mark.parametrize("case", _not_chains())
def test_version_2_0_refuses_a_graph(tmp_path, case):
    model = _not_chains()[case]
    write_export(model, tmp_path / "ok")                    # 3.0 holds it
    assert load_export(tmp_path / "ok") == model
    with pytest.raises(ExportError) as info:
        write_export(model, tmp_path / "m", version="2.0")
    assert info.value.param == "version"
    assert "version '2.0' holds only chains" in str(info.value)
    assert "write version '3.0'" in str(info.value)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("version", ["1.0", "4.0", 3.0, None])
def test_unknown_version_is_refused(tmp_path, version):
    with pytest.raises(ExportError) as info:
        write_export(demo_chain(), tmp_path / "m", version=version)
    assert info.value.param == "version"
    assert f"version must be one of '2.0', '3.0', not {version!r}" in str(info.value)
    assert not (tmp_path / "m").exists()


# Hostile edits -------------------------------------------------------------------------------

def _graph(path):
    return json.loads((path / "model.json").read_text())


def _put_graph(path, graph, forge=True):
    if forge:
        graph["integrity"]["sha256"] = graph_digest(graph)
    (path / "model.json").write_text(json.dumps(graph, indent=1))


def node(i, **fields):
    """Set fields of node ``i``."""
    return lambda g: g["layers"][i].update(fields)


def drop(i, key):
    return lambda g: g["layers"][i].pop(key)


def offsets(i, value):
    """Set the first offset of node ``i`` in the tensor file (sha256 and digest forged)."""
    def tamper(path):
        arrays = load((path / "model.safetensors").read_bytes())
        arrays[f"layers.{i}.offsets"][0, 0] = value
        data = save(arrays, metadata={"format": "mulfree-export", "version": "3.0"})
        (path / "model.safetensors").write_bytes(data)
        graph = _graph(path)
        graph["tensors_file"].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        _put_graph(path, graph)
    return tamper


KINDS = ("'linear', 'conv2d', 'flatten', 'maxpool2d', 'avgpool2d', 'global_avgpool', 'add', "
         "'concat', 'clamp', 'pad', 'shift2d', 'address_shift', 'channel_shift'")

EDITS = [
    # The graph: names and inputs.
    ("cycle", node(3, inputs=["avg"]), "layers.3.inputs",
     "model.json: layers.3 reads 'avg', which is layers.4: a node may only read nodes before "
     "it (a cycle, or nodes out of order)"),
    ("reads itself", node(3, inputs=["relu6"]), "layers.3.inputs", "which is layers.3"),
    ("dangling", node(2, inputs=["stem", "nowhere"]), "layers.2.inputs",
     "model.json: layers.2 reads 'nowhere', which is no node's name (a dangling input)"),
    ("unused node", node(9, inputs=["sh"]), "layers.8",
     "model.json: layers.8 (as, address_shift): its output is never read"),
    ("add of one input", node(2, inputs=["stem"]), "layers.2.inputs",
     "layers.2 (add) takes 2..8 inputs, not 1"),
    ("clamp of two inputs", node(3, inputs=["res", "stem"]), "layers.3.inputs",
     "layers.3 (clamp) takes exactly one input, not 2"),
    ("inputs a string", node(3, inputs="res"), "layers.3.inputs",
     'layers.3.inputs must be a list of 1 to 8 names, not "res"'),
    ("inputs empty", node(3, inputs=[]), "layers.3.inputs", "not []"),
    ("input name a number", node(3, inputs=[3]), "layers.3.inputs[0]",
     "layers.3.inputs[0] must be a node name or 'input' (a printable string of 1 to 128 "
     "characters), not 3"),
    ("name a number", node(0, name=3), "layers.0.name",
     "layers.0.name must be a node name (a printable string of 1 to 128 characters), not 3"),
    ("name null", node(0, name=None), "layers.0.name", "not null"),
    ("name missing", drop(0, "name"), "layers.0.name", "layers.0 lacks the field 'name'"),
    ("name twice", node(1, name="stem"), "layers.1.name",
     "layers.1.name 'stem' is also the name of layers.0; names must be unique"),
    ("name input", node(0, name="input"), "layers.0.name", "not 'input'"),
    ("name of another index", node(3, name="layers.5"), "layers.3.name",
     "not 'layers.5'"),
    # Scales that do not align.
    ("in_shifts", node(2, in_shifts=[0, 0]), "layers.2.in_shifts",
     "model.json: layers.2.in_shifts [0, 0] do not align the inputs' scale exponents [-2, -3] "
     "onto one grid"),
    ("in_shifts count", node(2, in_shifts=[1, 0, 0]), "layers.2.in_shifts",
     "layers.2.in_shifts must be 2 integers in [0, 32] (one per input), not (1, 0, 0)"),
    ("in_shifts bool", node(2, in_shifts=[True, 0]), "layers.2.in_shifts",
     "layers.2.in_shifts must be a list of 2 to 8 integers in [0, 32], not [true, 0]"),
    ("add out_scale_exp", node(2, out_scale_exp=-1), "layers.2.out_scale_exp",
     "layers.2.out_scale_exp = -1 is not the inputs' grid -3 + shift 1"),
    ("concat shifts", node(10, shifts=[1, 0]), "layers.10.shifts",
     "layers.10.shifts[1] = 0: input 1's exponent -2 + shift must be the out_scale_exp -1"),
    ("concat shapes", node(10, inputs=["cs", "pool"]), "layers.10.inputs",
     "layers.10 (concat) joins along the channels tensors whose other dimensions agree"),
    # Each kind's fields.
    ("groups 2", node(1, groups=2), "layers.1.groups",
     "model.json: layers.1.groups must be 1 or the input's 4 channels (depthwise), not 2"),
    ("groups bool", node(1, groups=True), "layers.1.groups",
     "layers.1.groups must be an integer in [1, 65535], not true"),
    ("groups 1 on depthwise codes", node(1, groups=1), "layers.1.codes",
     "model.safetensors: layers.1.codes must have shape (O, 4, kh, kw) for the input (4, 8, 8)"),
    ("unknown kind", node(5, kind="lppool2d"), "layers.5.kind",
     f"model.json: layers.5.kind must be one of {KINDS}, not \"lppool2d\""),
    ("kind a number", node(5, kind=5), "layers.5.kind", "not 5"),
    ("maxpool made avgpool", node(5, kind="avgpool2d"), "layers.5.count_include_pad",
     "layers.5 lacks the field 'count_include_pad'"),
    ("pad out of range", node(6, pads=[0, 2, 1, 1, 1, 16]), "layers.6.pads",
     "model.json: layers.6.pads must be a list of 6 integers (channels before, after in "
     "[0, 65535], top, bottom, left, right in [0, 15]), not [0, 2, 1, 1, 1, 16]"),
    ("pad negative", node(6, pads=[0, -1, 1, 1, 1, 1]), "layers.6.pads", "not [0, -1, "),
    ("pad five", node(6, pads=[0, 2, 1, 1, 1]), "layers.6.pads", "not [0, 2, 1, 1, 1]"),
    ("pad a float", node(6, pads=[0, 2.0, 1, 1, 1, 1]), "layers.6.pads", "not [0, 2.0, "),
    ("r bool", node(9, r=True), "layers.9.r",
     "layers.9.r must be an integer in [0, 65535], not true"),
    ("r beyond the channels", node(9, r=7), "layers.9.r",
     "layers.9.r must be an integer in [0, 6], not 7"),
    ("add relu 1", node(2, relu=1), "layers.2.relu", "layers.2.relu must be true or false, "
                                                     "not 1"),
    ("add shift float", node(2, shift=1.0), "layers.2.shift",
     "layers.2.shift must be an integer in [-16, 62], not 1.0"),
    ("clamp hi below lo", node(3, lo=5, hi=4), "layers.3.hi",
     "layers.3.hi must be an integer in [5, 63], not 4"),
    ("clamp lo beyond the width", node(3, lo=-65), "layers.3.lo",
     "layers.3.lo must be an integer in [-64, 63], not -65"),
    ("avgpool padding", node(4, padding=[2, 2]), "layers.4.padding",
     "layers.4.padding = [2, 2] must be at most half the 3x3 kernel"),
    ("avgpool kernel 0", node(4, kernel=[0, 3]), "layers.4.kernel",
     "layers.4.kernel must be a list of 2 integers in [1, 15], not [0, 3]"),
    ("avgpool shift", node(4, shift=40), "layers.4.shift",
     "layers.4.shift must be an integer in [-16, 32], not 40"),
    ("count_include_pad", node(4, count_include_pad=False), "layers.4.count_include_pad",
     "layers.4.count_include_pad is false, but the rest of the export makes it true"),
    ("gap shift string", node(11, shift="0"), "layers.11.shift", 'not "0"'),
    ("offsets unlisted", lambda g: g["layers"][7]["tensors"].pop("offsets"),
     "layers.7.tensors.offsets", "layers.7.tensors lacks the field 'offsets'"),
    ("tensor on a clamp", lambda g: g["layers"][3]["tensors"].update(
        codes={"name": "layers.3.codes", "dtype": "int8", "shape": [1]}),
     "layers.3.tensors.codes", "layers.3.tensors has the unknown field \"codes\""),
    ("unknown field", node(9, offsets=[1]), "layers.9.offsets",
     "layers.9 has the unknown field \"offsets\""),
    # Derived facts.
    ("clamp act_bits", node(3, act_bits=8), "layers.3.act_bits",
     "model.json: layers.3.act_bits is 8, but the rest of the export makes it 7"),
    ("avgpool out_scale_exp", node(4, out_scale_exp=-1), "layers.4.out_scale_exp",
     "layers.4.out_scale_exp is -1, but the rest of the export makes it -2"),
    ("gap out_shape", node(11, out_shape=[12]), "layers.11.out_shape",
     "layers.11.out_shape is [12], but the rest of the export makes it [12, 1, 1]"),
    ("in_shapes of an add", node(2, in_shapes=[[4, 8, 8]]), "layers.2.in_shapes",
     "layers.2.in_shapes is [[4, 8, 8]], but the rest of the export makes it "
     "[[4, 8, 8], [4, 8, 8]]"),
    ("in_shapes not shapes", node(2, in_shapes=[[4, 8, 8], 7]), "layers.2.in_shapes[1]",
     "layers.2.in_shapes[1] must be a list of 1 or 3 integers in [1, 65535], not 7"),
    ("pool ceil_mode", node(5, ceil_mode=True), "layers.5.ceil_mode",
     "layers.5.ceil_mode is true, but the rest of the export makes it false"),
    ("depthwise max_k", node(1, max_k=36), "layers.1.max_k",
     "layers.1.max_k is 36, but the rest of the export makes it 9"),
]

TENSOR_EDITS = [
    ("shift2d offset 8", offsets(7, 8), "layers.7.offsets",
     "model.safetensors: layers.7.offsets[0, 0] = 8 is outside the allowed [-7, 7]"),
    ("address_shift offset 2", offsets(8, 2), "layers.8.offsets",
     "model.safetensors: layers.8.offsets[0, 0] = 2 is outside the allowed [-1, 1]"),
]


@pytest.fixture
def export(tmp_path):
    path = tmp_path / "m"
    write_export(every_kind(), path)
    return path


def _refused(path, param, message):
    with pytest.raises(ExportError) as info:
        load_export(path)
    text = str(info.value)
    assert "\n" not in text
    assert message in text, text
    assert info.value.param == param, (info.value.param, text)


@pytest.mark.parametrize("case, edit, param, message", EDITS, ids=[r[0] for r in EDITS])
def test_graph_edit_is_refused(export, case, edit, param, message):
    graph = _graph(export)
    edit(graph)
    _put_graph(export, graph)
    _refused(export, param, message)


@pytest.mark.parametrize("case, tamper, param, message", TENSOR_EDITS,
                         ids=[r[0] for r in TENSOR_EDITS])
def test_tensor_edit_is_refused(export, case, tamper, param, message):
    tamper(export)
    _refused(export, param, message)


def test_renamed_node_needs_the_digest(export):
    """Renaming a node and every input naming it is a valid model (the same computation): only
    the digest tells that it is not the one exported; forged, it loads."""
    graph = _graph(export)
    graph["layers"][9]["name"] = "rot"
    graph["layers"][10]["inputs"] = ["rot", "pad"]
    _put_graph(export, graph, forge=False)
    _refused(export, "integrity.sha256", "model.json was edited after export (digest mismatch)")
    _put_graph(export, graph)
    model = load_export(export)
    assert model.layers[9].name == "rot" and model.layers[10].inputs == ("rot", "pad")
    x = _inputs(model, 3)
    np.testing.assert_array_equal(run_int_model(model, x), run_int_model(every_kind(), x))


def test_explicit_default_inputs_read_back_as_none(export):
    """A node that names the previous node as its input reads back with ``inputs=None``; one
    named ``layers.<i>`` with ``name=None``: the same graph either way."""
    model = load_export(export)
    assert model.layers[3].inputs is None and model.layers[1].name is None
    assert model.layers[2].inputs == ("stem", "layers.1") and model.layers[0].name == "stem"


def _paths(obj, prefix=()):
    if prefix:
        yield prefix
    items = obj.items() if isinstance(obj, dict) else \
        enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        yield from _paths(value, prefix + (key,))


#: Values planted at random places of a graph: every JSON type, names, lists, ends of ranges.
PLANTS = [None, True, False, 0, 1, -1, 2, 7, 65536, 1 << 40, -(1 << 70), 0.5, 8.0, "", "x",
          "input", "stem", "layers.3", [], [1], [1, 2], [[1]], {}, {"a": 1}, [True, 0],
          ["stem"], ["input"], ["stem", "stem"], [0] * 6, [1, 1], [3, 3], [[4, 8, 8]]]


@pytest.mark.parametrize("version", ["3.0", "2.0"])
def test_random_forged_edits_fail_in_one_line(tmp_path, version):
    """Random values planted anywhere in the graph (digest forged): the loader refuses with an
    ExportError of one line, or loads a valid model; it never fails otherwise."""
    model = every_kind() if version == "3.0" else demo_chain()
    write_export(model, tmp_path, version=version)
    original = (tmp_path / "model.json").read_text()
    rng = np.random.default_rng(7)
    graph = json.loads(original)
    places = [p for p in _paths(graph) if p[0] not in ("format", "version", "tensors_file",
                                                       "integrity")]
    refused = 0
    for _ in range(300):
        graph = json.loads(original)
        for _ in range(rng.integers(1, 3)):
            *keys, last = places[rng.integers(len(places))]
            node = graph
            try:
                for key in keys:
                    node = node[key]
                if rng.random() < 0.1 and isinstance(node, dict):
                    del node[last]
                else:
                    node[last] = PLANTS[rng.integers(len(PLANTS))]
            except (KeyError, IndexError, TypeError):
                pass                # an earlier plant removed the place
        _put_graph(tmp_path, graph)
        try:
            loaded = load_export(tmp_path)
        except ExportError as exc:
            assert "\n" not in str(exc) and str(exc).startswith("model."), str(exc)
            refused += 1
        else:
            loaded.validate()
    assert refused > 250


# Format 2.0: a chain, read exactly as before 3.0 ------------------------------------------------

def _metadata(version):
    """Rewrite the tensor file with another version in its metadata (sha256 forged)."""
    def tamper(path):
        data = save(load((path / "model.safetensors").read_bytes()),
                    metadata={"format": "mulfree-export", "version": version})
        (path / "model.safetensors").write_bytes(data)
        graph = _graph(path)
        graph["tensors_file"].update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        _put_graph(path, graph)
    return tamper


def _json(edit, forge=True):
    def tamper(path):
        graph = _graph(path)
        edit(graph)
        _put_graph(path, graph, forge)
    return tamper


V2 = [
    ("kind of 3.0", _json(node(1, kind="avgpool2d")), "layers.1.kind",
     "model.json: layers.1.kind must be one of 'linear', 'conv2d', 'flatten', 'maxpool2d', "
     "not \"avgpool2d\""),
    ("pool kernel", _json(node(1, kernel=[3, 3])), "layers.1.kernel",
     "layers.1.kernel is [3, 3], but the rest of the export makes it [2, 2]"),
    ("pool stride", _json(node(3, stride=[1, 1])), "layers.3.stride", "is [1, 1], but"),
    ("in_shape", _json(node(0, in_shape=[1, 7, 8])), "layers.0.in_shape",
     "layers.0.in_shape is [1, 7, 8], but the rest of the export makes it [1, 8, 8]"),
    ("groups", _json(node(0, groups=1)), "layers.0.groups",
     "layers.0 has the unknown field \"groups\""),
    ("name", _json(node(2, name="conv2")), "layers.2.name",
     "layers.2 has the unknown field \"name\""),
    ("inputs", _json(node(2, inputs=["layers.1"])), "layers.2.inputs",
     "layers.2 has the unknown field \"inputs\""),
    ("read as 3.0", _json(lambda g: g.update(version="3.0")), "layers.0.in_shape",
     "layers.0 has the unknown field \"in_shape\""),
    ("metadata of 3.0", _metadata("3.0"), "model.safetensors.__metadata__",
     "this export's is {\"format\": \"mulfree-export\", \"version\": \"2.0\"}"),
    ("edited after export", _json(lambda g: g["input"].update(scale_exp=7), forge=False),
     "integrity.sha256", "model.json was edited after export (digest mismatch)"),
]


@pytest.mark.parametrize("case, tamper, param, message", V2, ids=[r[0] for r in V2])
def test_format_2_edit_is_refused(tmp_path, case, tamper, param, message):
    model = demo_chain()
    write_export(model, tmp_path, version="2.0")
    assert load_export(tmp_path) == model
    tamper(tmp_path)
    _refused(tmp_path, param, message)


def test_format_3_read_as_2_is_refused(export):
    _json(lambda g: g.update(version="2.0"))(export)
    _refused(export, "layers.0.name", "model.json: layers.0 has the unknown field \"name\"")
    _json(lambda g: g.update(version="3.0"))(export)
    _metadata("2.0")(export)
    _refused(export, "model.safetensors.__metadata__", "this export's is {\"format\": "
                                                       "\"mulfree-export\", \"version\": \"3.0\"}")
