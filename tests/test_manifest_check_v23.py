"""Manifests of interface 2.3 (window runs on the lane unit) and the 2.2 manifests before it
(:mod:`mulfree.host.manifest_check`), without a simulator; ``mulfree gen --core
--window-ops/--no-window-ops``.

A 2.3 manifest carries ``parameters.window_ops``, ``core.window``, the register ``WINDOW``,
error ``WINDOW``, the window flags and the setup's ``nkk`` step; a 2.2 manifest has none of
them and describes a core without the lane unit. :func:`as_interface_2_2` turns a
regenerated manifest into what the 2.2 generator wrote: checked here against the SHA-256 of
that generator's manifests (commit 73ed5a8, the last before interface 2.3).
"""

import copy
import json

import pytest

from manifest_docs import SHIFT_VALUE_2_3, digest as _digest, manifest, refused, reg as _reg

from mulfree.flows import cli
from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import (CORE_VERSION, DESC_FLAGS, WINDOW_LATENCY, CoreConfig)
from mulfree.host.manifest_check import as_interface_2_2, check_manifest


SHIFT = ArrayConfig(pe="shift", rows=4, cols=4, act_bits=6, weight_bits=5, max_k=128)
ADDER = ArrayConfig(pe="adder", rows=4, cols=4, act_bits=6, max_k=128)
MULT = ArrayConfig(pe="mult", arch="tree", rows=4, cols=4, act_bits=6, weight_bits=4,
                   max_k=128)
#: Cores as interface 2.2 knew them (no lane unit).
CONFIGS_2_2 = [
    CoreConfig(ArrayConfig(pe="shift", rows=4, cols=4), window_ops=False),
    CoreConfig(SHIFT, extra_engines=(ADDER, MULT), engine_cols=(4, 4, 2), stream_width=32,
               window_ops=False),
    CoreConfig(ArrayConfig(pe="adder", rows=4, cols=6), fmap_banks=1),
]
#: SHA-256 of each config's manifest as interface 2.2's generator (commit 73ed5a8) wrote it,
#: through JSON, without ``mulfree_version``, keys sorted.
DIGESTS_2_2 = ["66202e49c95c86047d6d2a1b3f091c264e32d2b6e14e108f0c42d235e6bb0212",
               "f0a31a97028e172017da634ea5aa181cc2084b0df651414e617e1771294f1978",
               "0aa5d7d7c47cabe9ca23dd4650008a62329f163b3f99276edc61027bd04a146c"]
#: Errors DESCRIPTOR's, TOO_BIG's and REUSE's meanings in 2.2 (2.3 added the window rules).
MEANINGS_2_2 = {"core_errors": {
    "SHIFT_VALUE": SHIFT_VALUE_2_3,
    "DESCRIPTOR": {"meaning": (
        "the descriptor is inconsistent: a zero size, reserved bits set, padding >= kernel, "
        "out_h/out_w not the convolution's output size, clamp_lo > clamp_hi or either "
        "outside the activation range, a residual shift out of range, a residual's short_c = "
        "0, short_stride = 0 or short_off + short_c > out_c, pool_shift out of range, or a "
        "clamp, residual or pool field set without its flag")},
    "TOO_BIG": {"meaning": (
        "the layer does not fit the core: K = in_c*kernel_h*kernel_w > max_k, out_c > "
        "max_channels, in_c > max_channels with a shift, m_block > acc_entries, a tensor "
        "larger than its buffer (a residual's shortcut: out_h*out_w*ceil(out_c/cols) > "
        "shortcut_vectors), a residual whose shortcut map is 65536 or more pixels wide "
        "(out_w*short_stride >= 65536), a global pool over out_h*out_w > pool_pixels, or "
        "(chaining) kept results (out_h*out_w*ceil(out_c/cols), ceil(out_c/cols) with a pool) "
        "or a resident shortcut source larger than fmap_vectors")},
    "REUSE": {"meaning": (
        "reuse_weights, but the previous run did not end well, or its engine, weight rows, "
        "out_c or shift-table vectors differ from this layer's")}}}


def test_a_2_3_manifest_names_its_lane_unit():
    doc = manifest(CoreConfig(ArrayConfig(pe="shift", rows=4, cols=4)))
    _, cfg = check_manifest(copy.deepcopy(doc))
    # Interface 2.4 kept all of it (minor versions add registers).
    assert CORE_VERSION >= (2, 3) and _reg(doc, "VERSION")["reset"] == 0x2_0000 | CORE_VERSION[1]
    assert cfg.window_ops is True and doc["parameters"]["window_ops"] is True
    assert doc["core"]["window"] == {"lanes": 4, "latency": WINDOW_LATENCY}
    window = _reg(doc, "WINDOW")
    assert window["offset"] == 0xA0 and window["reset"] == 4
    assert doc["registers"]["size"] >= 0xA4
    assert doc["registers"]["core_errors"]["WINDOW"]["code"] == 12
    assert {n: doc["stream"]["descriptor"]["flags"][n] for n in
            ("win_max", "win_sum", "depthwise")} == {"win_max": 11, "win_sum": 12,
                                                     "depthwise": 13}
    _, off = check_manifest(manifest(CoreConfig(ArrayConfig(pe="shift", rows=4, cols=4),
                                                window_ops=False)))
    assert off.window_ops is False
    rect = manifest(CoreConfig(ArrayConfig(pe="shift", rows=4, cols=6)))
    assert rect["parameters"]["window_ops"] is False and rect["core"]["window"]["lanes"] == 0
    assert _reg(rect, "WINDOW")["reset"] == 0


@pytest.mark.parametrize("i", range(len(CONFIGS_2_2)))
def test_a_2_2_manifest_is_a_core_without_lanes(i):
    """What the 2.2 generator wrote (``as_interface_2_2`` of the regenerated manifest, its
    digest the 2.2 generator's) is accepted as a core without the lane unit."""
    cfg = CONFIGS_2_2[i]
    doc = as_interface_2_2(manifest(cfg), meanings=MEANINGS_2_2)
    assert _digest(doc) == DIGESTS_2_2[i]
    _, got = check_manifest(copy.deepcopy(doc))
    assert got == cfg and got.window_ops is False


EDITS = [
    ("window_ops in a 2.2 manifest", lambda d: d["parameters"].update(window_ops=False),
     ["parameters.window_ops is not a core parameter"]),
    ("WINDOW in a 2.2 manifest", lambda d: d["registers"]["registers"].append(
        _reg(manifest(CONFIGS_2_2[0]), "WINDOW")), ["registers.registers (entries)"]),
    ("the WINDOW error in a 2.2 manifest", lambda d: d["registers"]["core_errors"].update(
        WINDOW=manifest(CONFIGS_2_2[0])["registers"]["core_errors"]["WINDOW"]),
     ["registers.core_errors.WINDOW is not a field"]),
    ("a window flag in a 2.2 manifest", lambda d: d["stream"]["descriptor"]["flags"].update(
        win_max=11), ["stream.descriptor.flags.win_max is not a field"]),
    ("core.window in a 2.2 manifest", lambda d: d["core"].update(
        window={"lanes": 0, "latency": 2}), ["core.window is not a field"]),
    ("2.3's setup cycles in a 2.2 manifest", lambda d: d["core"].update(
        setup_cycles=d["core"]["setup_cycles"] + 18), ["core.setup_cycles"]),
    ("2.2 edited to 2.3", lambda d: _reg(d, "VERSION").update(reset=0x2_0003),
     ["parameters.window_ops is missing"]),
]


@pytest.mark.parametrize("what, edit, texts", EDITS, ids=[e[0] for e in EDITS])
def test_a_2_2_manifest_with_2_3_fields_is_refused(what, edit, texts):
    doc = as_interface_2_2(manifest(CONFIGS_2_2[0]), meanings=MEANINGS_2_2)
    check_manifest(copy.deepcopy(doc))
    edit(doc)
    refused(doc, *texts)


def test_edits_of_a_2_3_manifest_are_refused():
    doc = manifest(CoreConfig(ArrayConfig(pe="shift", rows=4, cols=4)))
    for edit, texts in (
            (lambda d: d["parameters"].pop("window_ops"), ["parameters.window_ops is missing"]),
            (lambda d: d["parameters"].update(window_ops=1),
             ["parameters.window_ops must be a boolean, not an integer 1"]),
            (lambda d: d["parameters"].update(window_ops=False),
             ["registers.registers[WINDOW].reset is 4 but the parameters give 0"]),
            (lambda d: (d["parameters"]["engine"].update(cols=8),
                        d["parameters"].update(fmap_banks=1)),
             ["parameters.window_ops: window_ops (pooling and depthwise runs on the lane unit) "
              "needs rows == cols"]),
            (lambda d: d["core"]["window"].update(latency=3), ["core.window.latency"]),
            (lambda d: _reg(d, "WINDOW").update(reset=0), ["WINDOW"])):
        bad = copy.deepcopy(doc)
        edit(bad)
        refused(bad, *texts)


def _main(argv, capsys):
    try:
        status = cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    return status, capsys.readouterr()


@pytest.mark.parametrize("rows, cols, flag, want", [(4, 4, None, True), (4, 4, "--no-window-ops",
                                                                         False),
                                                    (4, 3, None, False),
                                                    (4, 4, "--window-ops", True)])
def test_window_ops_in_the_manifest(tmp_path, capsys, rows, cols, flag, want):
    argv = ["gen", "--core", "--rows", str(rows), "--cols", str(cols), "-o", str(tmp_path)]
    if flag is not None:
        argv.append(flag)
    status, out = _main(argv, capsys)
    assert status == 0, out.err
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert doc["parameters"]["window_ops"] is want
    assert doc["core"]["window"]["lanes"] == (cols if want else 0)


def test_window_ops_on_a_non_square_engine_is_one_line(tmp_path, capsys):
    status, out = _main(["gen", "--core", "--rows", "4", "--cols", "3", "--window-ops", "-o",
                         str(tmp_path)], capsys)
    assert status == 2 and out.err.count("\n") == 1, out.err
    assert "--window-ops (pooling and depthwise runs on the lane unit) needs rows == cols" \
        in out.err, out.err
    assert not any(tmp_path.iterdir())
    assert DESC_FLAGS["win_max"] == 11
