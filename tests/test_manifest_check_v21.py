"""The manifest check and core interface 2.1: multi-engine cores (``parameters.extra_engines``,
``engine_cols``, registers ``ENGINES`` and ``ENGINE_0..2``), and 2.0 manifests still accepted
as single-engine cores (the minor-version rule: 2.1 only added registers and fields).

The 2.0 manifests are the ones interface 2.0's generator wrote: this file turns a 2.1 manifest
into its 2.0 form by its own edits, and the result is checked against digests of what the
generator of commit 35bd91c wrote for the same parameters.
"""

import copy
import hashlib
import json

import pytest

from manifest_docs import SHIFT_VALUE_2_3
from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CORE_VERSION, CoreConfig
from mulfree.params.manifest import core_manifest
from mulfree.host.manifest_check import ManifestError, as_interface_2_0, check_manifest


SHIFT = ArrayConfig(pe="shift", rows=4, cols=6, act_bits=6, weight_bits=5, max_k=128)
ADDER = ArrayConfig(pe="adder", rows=4, cols=6, act_bits=6, max_k=128)
MULT = ArrayConfig(pe="mult", rows=4, cols=6, act_bits=6, weight_bits=3, max_k=128, arch="tree")


def manifest(cfg):
    return json.loads(json.dumps(core_manifest(cfg)))


def multi():
    return manifest(CoreConfig(SHIFT, extra_engines=(ADDER, MULT), engine_cols=(6, 6, 2)))


def _reg(doc, name):
    return next(r for r in doc["registers"]["registers"] if r["name"] == name)


def refused(doc, *texts):
    with pytest.raises(ManifestError) as info:
        check_manifest(doc)
    message = str(info.value)
    assert "\n" not in message and info.value.param == "manifest", message
    for text in texts:
        assert text in message, message
    return message


def test_a_multi_engine_manifest_passes():
    assert CORE_VERSION[0] == 2 and CORE_VERSION[1] >= 2
    doc = multi()
    _, cfg = check_manifest(doc)
    assert cfg.engines == (SHIFT, ADDER, MULT) and cfg.engine_cols == (6, 6, 2)
    assert cfg.folds(2) == 3 and cfg.code_width == 6 and cfg.acc_width == SHIFT.acc_width
    assert _reg(doc, "ENGINES")["reset"] & 0xF == 3
    assert _reg(doc, "ENGINE_2")["reset"] >> 20 == 2 and _reg(doc, "ENGINE_2")["reset"] & 0xF == 2
    assert _reg(doc, "VERSION")["reset"] == 2 << 16 | CORE_VERSION[1]
    # A single-engine 2.1 manifest: empty lists.
    _, one = check_manifest(manifest(CoreConfig(SHIFT)))
    assert one.engines == (SHIFT,)


def _set(path, value):
    def edit(doc):
        *head, last = path
        node = doc
        for key in head:
            node = node[key]
        node[last] = value
    return edit


P = ("parameters",)
EDITS = [
    # (what, edit, texts in the message)
    ("extra_engines missing", lambda d: d["parameters"].pop("extra_engines"),
     ["parameters.extra_engines is missing"]),
    ("engine_cols missing", lambda d: d["parameters"].pop("engine_cols"),
     ["parameters.engine_cols is missing"]),
    ("extra_engines an object", _set(P + ("extra_engines",), {}),
     ["parameters.extra_engines must be a list, not an object"]),
    ("engine_cols a string", _set(P + ("engine_cols",), "6,6,2"),
     ["parameters.engine_cols must be a list, not a string"]),
    ("an engine a list", _set(P + ("extra_engines", 0), [1]),
     ["parameters.extra_engines[0] must be an object, not a list"]),
    ("an engine without rows", lambda d: d["parameters"]["extra_engines"][1].pop("rows"),
     ["parameters.extra_engines[1].rows is missing"]),
    ("an engine with a stray field", _set(P + ("extra_engines", 0, "speed"), 3),
     ["parameters.extra_engines[0].speed is not a core parameter"]),
    ("an engine's pe a number", _set(P + ("extra_engines", 0, "pe"), 1),
     ["parameters.extra_engines[0].pe must be a string, not an integer"]),
    ("an engine of no kind", _set(P + ("extra_engines", 0, "pe"), "xor"),
     ["parameters.extra_engines[0].pe:"]),
    ("an engine's weight bits out of range", _set(P + ("extra_engines", 1, "weight_bits"), 99),
     ["parameters.extra_engines[1].weight_bits:"]),
    ("two engines of one kind", _set(P + ("extra_engines", 0, "pe"), "mult"),
     ["parameters.extra_engines:", "must differ"]),
    ("the first engine's kind again", _set(P + ("extra_engines", 0, "pe"), "shift"),
     ["parameters.extra_engines:", "must differ"]),
    ("rows not shared", _set(P + ("extra_engines", 0, "rows"), 5),
     ["parameters.extra_engines:", "share rows=4"]),
    ("act_bits not shared", _set(P + ("extra_engines", 1, "act_bits"), 8),
     ["parameters.extra_engines:", "share act_bits=6"]),
    ("max_k not shared", _set(P + ("extra_engines", 1, "max_k"), 64),
     ["parameters.extra_engines:", "share max_k=128"]),
    ("four engines", lambda d: d["parameters"]["extra_engines"].append(
        dict(d["parameters"]["extra_engines"][0])),
     ["parameters.extra_engines must have at most 2 entries", "not 3"]),
    ("physical cols not dividing", _set(P + ("engine_cols", 2), 4),
     ["parameters.engine_cols:", "must divide cols=6"]),
    ("engine 0 folded", _set(P + ("engine_cols",), [3, 6, 2]),
     ["parameters.engine_cols:", "engine 0 is never folded"]),
    ("engine_cols of the wrong length", _set(P + ("engine_cols",), [6, 6]),
     ["parameters.engine_cols:", "one integer per engine (3)"]),
    ("engine_cols holding a string", _set(P + ("engine_cols", 1), "6"),
     ["parameters.engine_cols[1] must be an integer, not a string"]),
    ("engine_cols holding a bool", _set(P + ("engine_cols", 1), True),
     ["parameters.engine_cols[1] must be an integer, not a boolean"]),
    ("ENGINES edited", lambda d: _reg(d, "ENGINES").update(reset=2),
     ["registers.registers[ENGINES].reset"]),
    ("ENGINE_1 edited", lambda d: _reg(d, "ENGINE_1").update(reset=0),
     ["registers.registers[ENGINE_1].reset"]),
    ("ENGINE_2 deleted", lambda d: d["registers"]["registers"].remove(_reg(d, "ENGINE_2")),
     ["registers.registers (entries)"]),
    ("the ENGINE error deleted", lambda d: d["registers"]["core_errors"].pop("ENGINE"),
     ["registers.core_errors.ENGINE is missing"]),
    ("the engines section deleted", lambda d: d.pop("engines"), ["engines is missing"]),
    ("the engines section's folds edited", _set(("engines", "list", 2, "folds"), 1),
     ["engines.list[2].folds is 1 but the parameters give 3"]),
    ("an error's meaning edited", lambda d: d["registers"]["core_errors"]["ENGINE"].update(
        meaning="no engine"), ["registers.core_errors.ENGINE.meaning"]),
    ("an engine's weight bits edited alone", _set(P + ("extra_engines", 1, "weight_bits"), 4),
     ["the parameters give"]),
    ("the engine field renamed", _set(("stream", "descriptor", "fields", 23, "name"),
                                      "reserved"),
     ["stream.descriptor.fields[engine].name"]),
    ("a newer minor interface", lambda d: _reg(d, "VERSION").update(
        reset=2 << 16 | CORE_VERSION[1] + 1),
     [f"register interface 2.{CORE_VERSION[1] + 1}",
      f"newer than this mulfree's 2.{CORE_VERSION[1]}"]),
    ("another major interface", lambda d: _reg(d, "VERSION").update(reset=3 << 16 | 1),
     ["register interface 3.1", f"this mulfree 2.{CORE_VERSION[1]}"]),
]


@pytest.mark.parametrize("what, edit, texts", EDITS, ids=[e[0] for e in EDITS])
def test_edits_of_the_2_1_fields_are_refused(what, edit, texts):
    doc = multi()
    check_manifest(copy.deepcopy(doc))
    edit(doc)
    refused(doc, *texts)


# 2.0 manifests --------------------------------------------------------------------------------

CONFIGS_2_0 = [                  # cores of one feature-map bank and no lane unit, as before 2.2
    CoreConfig(fmap_banks=1, window_ops=False),
    CoreConfig(ArrayConfig(pe="mult", arch="tree", rows=5, cols=3, act_bits=6), stream_width=128,
               pool_pixels=64, shortcut_vectors=100),
    CoreConfig(ArrayConfig(pe="adder", rows=4, cols=4, act_bits=5), stream_width=32,
               pool_pixels=0, shortcut_vectors=0, fmap_banks=1, window_ops=False),
]
#: Error REUSE's meaning before interface 2.2 (2.2 added the engine).
REUSE_2_1 = ("reuse_weights, but the previous run did not end well, or its weight rows, "
             "out_c or shift-table vectors differ from this layer's")
#: SHA-256 of each config's manifest as interface 2.0's generator (commit 35bd91c) wrote it,
#: through JSON, without ``mulfree_version``, keys sorted.
DIGESTS_2_0 = ["a38476848e6b2e380f270ed86e7563b5dbd303f539c03dbf8578af370d147451",
               "f0c8e9448be6a4139a1b5ffa42db540ad39d305335ada294f598bd3fd57924b5",
               "73d1069cfe8abcccb4b6074282423f7c8d90eede3844a303ef9b946ab47b1c58"]


#: Error DESCRIPTOR's meaning before interface 2.3 (2.3 added the window rules).
DESCRIPTOR_2_2 = (
    "the descriptor is inconsistent: a zero size, reserved bits set, padding >= kernel, "
    "out_h/out_w not the convolution's output size, clamp_lo > clamp_hi or either outside "
    "the activation range, a residual shift out of range, a residual's short_c = 0, "
    "short_stride = 0 or short_off + short_c > out_c, pool_shift out of range, or a clamp, "
    "residual or pool field set without its flag")
#: Error TOO_BIG's meaning in interface 2.0's manifests (2.1 reworded it).
TOO_BIG_2_0 = ("the layer does not fit the core: K = in_c*kernel_h*kernel_w > max_k, out_c > "
               "max_channels, in_c > max_channels with a shift, m_block > acc_entries, a "
               "tensor larger than its buffer (a residual's shortcut: "
               "out_h*out_w*ceil(out_c/cols) > shortcut_vectors), or a global pool over "
               "out_h*out_w > pool_pixels")


def written_by_2_0(cfg):
    """The 2.0 generator's manifest of single-engine ``cfg``, by this file's own edits."""
    doc = manifest(cfg)
    # Interface 2.4's additions (taps runs, the shift table's reach) first: none of them in
    # a 2.0 manifest.
    del doc["parameters"]["taps"], doc["parameters"]["tap_line"]
    del doc["parameters"]["shift_reach"]
    for name in ("taps", "tap_side", "tap_line", "tap_engines", "shift_reach"):
        del doc["core"][name]
    doc["core"]["setup_cycles"] -= 18                          # the ntr step
    if doc["core"]["pool_latency"]:
        doc["core"]["pool_latency"] = 2                        # the pool's one output register
    doc["core"]["post_latency"] = {4: 3, 7: 5}[doc["core"]["post_latency"]]  # no window stages
    doc["registers"]["registers"].remove(_reg(doc, "TAPS"))
    doc["registers"]["registers"].remove(_reg(doc, "SHIFT_TABLE"))
    doc["registers"]["core_errors"]["SHIFT_VALUE"].update(SHIFT_VALUE_2_3)
    del doc["stream"]["descriptor"]["flags"]["taps"]
    # Interface 2.3's additions (window runs): none of them in a 2.0 manifest.
    del doc["parameters"]["window_ops"], doc["core"]["window"]
    doc["core"]["setup_cycles"] -= 18                          # the nkk step
    del doc["registers"]["core_errors"]["WINDOW"]
    doc["registers"]["core_errors"]["DESCRIPTOR"]["meaning"] = DESCRIPTOR_2_2
    doc["registers"]["registers"].remove(_reg(doc, "WINDOW"))
    doc["registers"]["size"] = 0xA0                            # WINDOW was the last
    for name in ("win_max", "win_sum", "depthwise"):
        del doc["stream"]["descriptor"]["flags"][name]
    # Interface 2.2's additions (layer chaining).
    del doc["parameters"]["fmap_banks"], doc["core"]["buffers"]["fmap"]["count"]
    del doc["registers"]["core_errors"]["RESIDENT"]
    doc["registers"]["core_errors"]["REUSE"]["meaning"] = REUSE_2_1
    doc["registers"]["registers"].remove(_reg(doc, "FMAP_BANKS"))
    for name in ("in_bank", "acts_resident", "keep", "quiet", "short_resident"):
        del doc["stream"]["descriptor"]["flags"][name]
    del doc["parameters"]["extra_engines"], doc["parameters"]["engine_cols"]
    doc.pop("engines", None)
    del doc["registers"]["core_errors"]["ENGINE"]
    doc["registers"]["core_errors"]["TOO_BIG"]["meaning"] = TOO_BIG_2_0
    regs = doc["registers"]["registers"]
    for name in ("ENGINES", "ENGINE_0", "ENGINE_1", "ENGINE_2"):
        regs.remove(_reg(doc, name))
    version = _reg(doc, "VERSION")
    version["reset"] = 0x2_0000
    minor = next(f for f in version["fields"] if f["name"] == "minor")
    minor["reset"] = minor["value"] = 0
    fields = doc["stream"]["descriptor"]["fields"]
    assert fields[-1]["name"] == "engine" and fields[-1]["bits"] == [31, 28]
    fields[-1]["name"] = "reserved"
    return doc


def _digest(doc):
    doc = dict(doc)
    doc.pop("mulfree_version")
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


@pytest.mark.parametrize("i", range(len(CONFIGS_2_0)))
def test_a_2_0_manifest_is_a_single_engine_core(i):
    """What the 2.0 generator wrote is accepted (the minor-version rule) and describes the
    same core, of one engine; ``as_interface_2_0`` gives that document."""
    cfg = CONFIGS_2_0[i]
    doc = written_by_2_0(cfg)
    assert _digest(doc) == DIGESTS_2_0[i]
    assert as_interface_2_0(manifest(cfg), meanings=doc["registers"]) == doc
    _, got = check_manifest(copy.deepcopy(doc))
    assert got == cfg and got.engines == (cfg.engine,)


EDITS_2_0 = [
    ("extra_engines in a 2.0 manifest", lambda d: d["parameters"].update(extra_engines=[]),
     ["parameters.extra_engines is not a core parameter"]),
    ("engine_cols in a 2.0 manifest", lambda d: d["parameters"].update(engine_cols=[8]),
     ["parameters.engine_cols is not a core parameter"]),
    ("ENGINES in a 2.0 manifest", lambda d: d["registers"]["registers"].insert(
        -1, _reg(multi(), "ENGINES")), ["registers.registers (entries)"]),
    ("the ENGINE error in a 2.0 manifest", lambda d: d["registers"]["core_errors"].update(
        ENGINE=multi()["registers"]["core_errors"]["ENGINE"]),
     ["registers.core_errors.ENGINE is not a field"]),
    ("the engine field in a 2.0 manifest", _set(("stream", "descriptor", "fields", 23, "name"),
                                                "engine"),
     ["stream.descriptor.fields[reserved].name"]),
    ("2.0 edited to 2.1", lambda d: _reg(d, "VERSION").update(reset=0x2_0001),
     ["parameters.extra_engines is missing"]),
    ("an error code edited", lambda d: d["registers"]["core_errors"]["TOO_BIG"].update(code=4),
     ["registers.core_errors.TOO_BIG.code is 4 but the parameters give 3"]),
    ("an error deleted", lambda d: d["registers"]["core_errors"].pop("SHORT"),
     ["registers.core_errors.SHORT is missing"]),
    ("an engines section in a 2.0 manifest", lambda d: d.update(engines=multi()["engines"]),
     ["engines is not a field of a core manifest"]),
]


@pytest.mark.parametrize("what, edit, texts", EDITS_2_0, ids=[e[0] for e in EDITS_2_0])
def test_a_2_0_manifest_with_2_1_fields_is_refused(what, edit, texts):
    doc = written_by_2_0(CONFIGS_2_0[0])
    edit(doc)
    refused(doc, *texts)
