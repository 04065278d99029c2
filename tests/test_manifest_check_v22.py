"""Manifests of interface 2.2 (layer chaining) and the 2.1 manifests before it
(:mod:`mulfree.host.manifest_check`), without a simulator.

A 2.2 manifest carries ``parameters.fmap_banks``, ``core.buffers.fmap.count``, the register
``FMAP_BANKS``, error ``RESIDENT`` and the chaining flags; a 2.1 manifest has none of them and
describes a core of one bank. :func:`as_interface_2_1` turns a regenerated manifest into what
the 2.1 generator wrote: checked here against the SHA-256 of that generator's manifests.
"""

import copy

import pytest

from manifest_docs import SHIFT_VALUE_2_3, digest as _digest, manifest, refused, reg as _reg

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CORE_VERSION, CoreConfig
from mulfree.host.manifest_check import as_interface_2_1, check_manifest


SHIFT = ArrayConfig(pe="shift", rows=4, cols=6, act_bits=6, weight_bits=5, max_k=128)
ADDER = ArrayConfig(pe="adder", rows=4, cols=6, act_bits=6, max_k=128)
MULT = ArrayConfig(pe="mult", arch="tree", rows=4, cols=6, act_bits=6, weight_bits=4,
                   max_k=128)
#: Cores as interface 2.1 knew them (one bank, no lane unit).
CONFIGS_2_1 = [
    CoreConfig(ArrayConfig(pe="shift", rows=4, cols=4), fmap_banks=1, window_ops=False),
    CoreConfig(SHIFT, extra_engines=(ADDER, MULT), engine_cols=(6, 6, 2), stream_width=32),
]
#: SHA-256 of each config's manifest as interface 2.1's generator (commit c9d05cd) wrote it,
#: through JSON, without ``mulfree_version``, keys sorted.
DIGESTS_2_1 = ["b69efb699b62545926498d269c1b88134fa251fe310c11708850e461f2c38cad",
               "471454c5248917c20b235204e98c1053b83e1491a09d7ff05f1abb0494994bff"]
#: Errors REUSE's and TOO_BIG's meanings before 2.2 (2.2 added the engine to REUSE and the
#: chaining sizes to TOO_BIG), DESCRIPTOR's before 2.3 (the window rules).
OLD_MEANINGS = {"core_errors": {
    "SHIFT_VALUE": SHIFT_VALUE_2_3,
    "DESCRIPTOR": {"meaning": (
        "the descriptor is inconsistent: a zero size, reserved bits set, padding >= kernel, "
        "out_h/out_w not the convolution's output size, clamp_lo > clamp_hi or either "
        "outside the activation range, a residual shift out of range, a residual's short_c = "
        "0, short_stride = 0 or short_off + short_c > out_c, pool_shift out of range, or a "
        "clamp, residual or pool field set without its flag")},
    "REUSE": {"meaning": (
        "reuse_weights, but the previous run did not end well, or its weight rows, out_c or "
        "shift-table vectors differ from this layer's")},
    "TOO_BIG": {"meaning": (
        "the layer does not fit the core: K = in_c*kernel_h*kernel_w > max_k, "
        "out_c > max_channels, in_c > max_channels with a shift, m_block > "
        "acc_entries, a tensor larger than its buffer (a residual's shortcut: "
        "out_h*out_w*ceil(out_c/cols) > shortcut_vectors), a residual whose "
        "shortcut map is 65536 or more pixels wide (out_w*short_stride >= 65536), "
        "or a global pool over out_h*out_w > pool_pixels")}}}


def test_a_2_2_manifest_names_its_banks():
    square = CoreConfig(ArrayConfig(pe="shift", rows=4, cols=4))
    doc = manifest(square)
    _, cfg = check_manifest(copy.deepcopy(doc))
    assert cfg.fmap_banks == 2 and doc["parameters"]["fmap_banks"] == 2
    assert _reg(doc, "FMAP_BANKS")["reset"] == 2
    assert _reg(doc, "VERSION")["reset"] == 2 << 16 | CORE_VERSION[1]
    assert doc["registers"]["core_errors"]["RESIDENT"]["code"] == 11
    _, one = check_manifest(manifest(CoreConfig(ArrayConfig(pe="shift", rows=4, cols=4),
                                                fmap_banks=1)))
    assert one.fmap_banks == 1


@pytest.mark.parametrize("i", range(len(CONFIGS_2_1)))
def test_a_2_1_manifest_is_a_one_bank_core(i):
    """What the 2.1 generator wrote (``as_interface_2_1`` of the regenerated manifest, its
    digest the 2.1 generator's) is accepted as a core of one bank."""
    cfg = CONFIGS_2_1[i]
    doc = as_interface_2_1(manifest(cfg), meanings=OLD_MEANINGS)
    assert _digest(doc) == DIGESTS_2_1[i]
    _, got = check_manifest(copy.deepcopy(doc))
    assert got == cfg and got.fmap_banks == 1


EDITS = [
    ("fmap_banks in a 2.1 manifest", lambda d: d["parameters"].update(fmap_banks=1),
     ["parameters.fmap_banks is not a core parameter"]),
    ("FMAP_BANKS in a 2.1 manifest", lambda d: d["registers"]["registers"].insert(
        -1, _reg(manifest(CONFIGS_2_1[0]), "FMAP_BANKS")), ["registers.registers (entries)"]),
    ("RESIDENT in a 2.1 manifest", lambda d: d["registers"]["core_errors"].update(
        RESIDENT=manifest(CONFIGS_2_1[0])["registers"]["core_errors"]["RESIDENT"]),
     ["registers.core_errors.RESIDENT is not a field"]),
    ("a chaining flag in a 2.1 manifest", lambda d: d["stream"]["descriptor"]["flags"].update(
        keep=8), ["stream.descriptor.flags.keep is not a field"]),
    ("2.1 edited to 2.2", lambda d: _reg(d, "VERSION").update(reset=0x2_0002),
     ["parameters.fmap_banks is missing"]),
]


@pytest.mark.parametrize("what, edit, texts", EDITS, ids=[e[0] for e in EDITS])
def test_a_2_1_manifest_with_2_2_fields_is_refused(what, edit, texts):
    doc = as_interface_2_1(manifest(CONFIGS_2_1[0]), meanings=OLD_MEANINGS)
    check_manifest(copy.deepcopy(doc))
    edit(doc)
    refused(doc, *texts)


def test_edits_of_a_2_2_manifest_are_refused():
    doc = manifest(CoreConfig(ArrayConfig(pe="shift", rows=4, cols=4)))
    for edit, texts in (
            (lambda d: d["parameters"].pop("fmap_banks"), ["parameters.fmap_banks is missing"]),
            (lambda d: d["parameters"].update(fmap_banks=1),
             ["registers.registers[FMAP_BANKS].reset is 2 but the parameters give 1"]),
            (lambda d: d["parameters"].update(fmap_banks=3), ["parameters.fmap_banks"]),
            (lambda d: _reg(d, "FMAP_BANKS").update(reset=1), ["FMAP_BANKS"])):
        bad = copy.deepcopy(doc)
        edit(bad)
        refused(bad, *texts)
