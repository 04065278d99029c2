"""Manifests of interface 2.4 (taps runs: depthwise convolutions on an array engine) and the
2.3 manifests before it (:mod:`mulfree.host.manifest_check`), without a simulator; ``mulfree
gen --core --taps N --tap-line N``.

A 2.4 manifest carries ``parameters.taps`` and ``parameters.tap_line``, ``core.taps``,
``core.tap_side``, ``core.tap_line``, ``core.tap_engines``, the register ``TAPS``, the
descriptor's ``taps`` flag and the setup's ``ntr`` step; a 2.3 manifest has none of them and
describes a core without the tap window. :func:`as_interface_2_3` turns a regenerated
manifest into what the 2.3 generator wrote: checked here against the SHA-256 of that
generator's manifests (commit c3acff3, the last before interface 2.4).
"""

import copy
import json

import pytest

from manifest_docs import SHIFT_VALUE_2_3, digest as _digest, manifest, refused, reg as _reg

from mulfree.flows import cli
from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CORE_VERSION, DESC_FLAGS, SETUP_STEPS, CoreConfig
from mulfree.host.manifest_check import as_interface_2_3, check_manifest


SHIFT = ArrayConfig(pe="shift", rows=4, cols=4, act_bits=6, weight_bits=5, max_k=128)
ADDER = ArrayConfig(pe="adder", rows=4, cols=4, act_bits=6, max_k=128)
MULT = ArrayConfig(pe="mult", arch="tree", rows=4, cols=4, act_bits=6, weight_bits=4,
                   max_k=128)
#: Cores as interface 2.3 knew them (no tap window; the 9x9 one has the lane unit).
CONFIGS_2_3 = [
    CoreConfig(ArrayConfig(pe="shift", rows=4, cols=4), taps=0),
    CoreConfig(SHIFT, extra_engines=(ADDER, MULT), engine_cols=(4, 4, 2), stream_width=32,
               taps=0),
    CoreConfig(ArrayConfig(pe="adder", rows=9, cols=9), taps=0),
]
#: SHA-256 of each config's manifest as interface 2.3's generator (commit c3acff3) wrote it,
#: through JSON, without ``mulfree_version``, keys sorted.
DIGESTS_2_3 = ["8ffc5d4fd86e351cc3afb280412a3c28cf6cd8749948643e2a008437a67cee0a",
               "62c49ad1e055be66198299340794e1c0518e480ccad044a6ab6e17bd3591483a",
               "0e6e90565a5fe779ab73d3bc18458381ecffb54b7f4f84af52a2a5a7430b33d4"]
#: Errors DESCRIPTOR's, TOO_BIG's, WINDOW's and SHIFT_VALUE's meanings in 2.3 (2.4 added the
#: taps rules and the shift table's reach).
MEANINGS_2_3 = {"core_errors": {
    "SHIFT_VALUE": SHIFT_VALUE_2_3,
    "DESCRIPTOR": {"meaning": (
        "the descriptor is inconsistent: a zero size, reserved bits set, padding >= kernel, "
        "out_h/out_w not the convolution's output size, clamp_lo > clamp_hi or either "
        "outside the activation range, a residual shift out of range, a residual's short_c = "
        "0, short_stride = 0 or short_off + short_c > out_c, pool_shift out of range, a "
        "clamp, residual or pool field set without its flag, or (window runs) more than one "
        "window flag, a window flag with in_c != out_c or with flags.shift, win_max or "
        "win_sum with reuse_weights, or win_max with 2*pad_h > kernel_h or 2*pad_w > "
        "kernel_w")},
    "TOO_BIG": {"meaning": (
        "the layer does not fit the core: K = in_c*kernel_h*kernel_w (a window run: "
        "kernel_h*kernel_w) > max_k, out_c > max_channels, in_c > max_channels with a shift, "
        "m_block > acc_entries, a tensor larger than its buffer (a residual's shortcut: "
        "out_h*out_w*ceil(out_c/cols) > shortcut_vectors), a residual whose shortcut map is "
        "65536 or more pixels wide (out_w*short_stride >= 65536), a global pool over "
        "out_h*out_w > pool_pixels, or (chaining) kept results (out_h*out_w*ceil(out_c/cols), "
        "ceil(out_c/cols) with a pool) or a resident shortcut source larger than "
        "fmap_vectors")},
    "WINDOW": {"meaning": (
        "a window flag (win_max, win_sum, depthwise) on a core without the lane unit "
        "(WINDOW.lanes = 0)")}}}
NINE = ArrayConfig(pe="shift", rows=9, cols=9)


def test_a_2_4_manifest_names_its_tap_window():
    doc = manifest(CoreConfig(NINE, tap_line=80))
    _, cfg = check_manifest(copy.deepcopy(doc))
    assert CORE_VERSION == (2, 4) and _reg(doc, "VERSION")["reset"] == 0x2_0004
    assert cfg.taps == 9 and cfg.tap_line == 80
    assert doc["parameters"]["taps"] == 9 and doc["parameters"]["tap_line"] == 80
    assert {n: doc["core"][n] for n in ("taps", "tap_side", "tap_line", "tap_engines")} == \
        {"taps": 9, "tap_side": 3, "tap_line": 80, "tap_engines": [0]}
    taps = _reg(doc, "TAPS")
    assert taps["offset"] == 0xA4 and taps["reset"] == 9 | 3 << 8 | 1 << 12 | 80 << 16
    assert doc["registers"]["size"] == 0xAC             # SHIFT_TABLE follows TAPS
    assert doc["stream"]["descriptor"]["flags"]["taps"] == DESC_FLAGS["taps"] == 14
    assert SETUP_STEPS[-1][0] == "ntr"
    assert doc["core"]["setup_cycles"] == 18 * len(SETUP_STEPS) + 2
    small = manifest(CoreConfig(ArrayConfig(pe="shift", rows=4, cols=4)))
    assert small["core"]["taps"] == 0 and small["core"]["tap_line"] == 0
    assert small["core"]["tap_engines"] == [] and _reg(small, "TAPS")["reset"] == 0
    _, got = check_manifest(small)
    assert got.taps == 0


@pytest.mark.parametrize("i", range(len(CONFIGS_2_3)))
def test_a_2_3_manifest_is_a_core_without_taps(i):
    """What the 2.3 generator wrote (``as_interface_2_3`` of the regenerated manifest, its
    digest the 2.3 generator's) is accepted as a core without the tap window."""
    cfg = CONFIGS_2_3[i]
    doc = as_interface_2_3(manifest(cfg), meanings=MEANINGS_2_3)
    assert _digest(doc) == DIGESTS_2_3[i]
    _, got = check_manifest(copy.deepcopy(doc))
    assert got == cfg and got.taps == 0


EDITS = [
    ("taps in a 2.3 manifest", lambda d: d["parameters"].update(taps=0),
     ["parameters.taps is not a core parameter"]),
    ("tap_line in a 2.3 manifest", lambda d: d["parameters"].update(tap_line=64),
     ["parameters.tap_line is not a core parameter"]),
    ("TAPS in a 2.3 manifest", lambda d: d["registers"]["registers"].append(
        _reg(manifest(CONFIGS_2_3[0]), "TAPS")), ["registers.registers (entries)"]),
    ("the taps flag in a 2.3 manifest", lambda d: d["stream"]["descriptor"]["flags"].update(
        taps=14), ["stream.descriptor.flags.taps is not a field"]),
    ("core.tap_side in a 2.3 manifest", lambda d: d["core"].update(tap_side=0),
     ["core.tap_side is not a field"]),
    ("2.4's setup cycles in a 2.3 manifest", lambda d: d["core"].update(
        setup_cycles=d["core"]["setup_cycles"] + 18), ["core.setup_cycles"]),
    ("2.3 edited to 2.4", lambda d: _reg(d, "VERSION").update(reset=0x2_0004),
     ["parameters.taps is missing"]),
]


@pytest.mark.parametrize("what, edit, texts", EDITS, ids=[e[0] for e in EDITS])
def test_a_2_3_manifest_with_2_4_fields_is_refused(what, edit, texts):
    doc = as_interface_2_3(manifest(CONFIGS_2_3[2]), meanings=MEANINGS_2_3)
    check_manifest(copy.deepcopy(doc))
    edit(doc)
    refused(doc, *texts)


def test_edits_of_a_2_4_manifest_are_refused():
    doc = manifest(CoreConfig(NINE))
    for edit, texts in (
            (lambda d: d["parameters"].pop("taps"), ["parameters.taps is missing"]),
            (lambda d: d["parameters"].pop("tap_line"), ["parameters.tap_line is missing"]),
            (lambda d: d["parameters"].update(taps=True),
             ["parameters.taps must be an integer, not a boolean true"]),
            (lambda d: d["parameters"].update(tap_line="64"),
             ["parameters.tap_line must be an integer, not a string"]),
            (lambda d: d["parameters"].update(taps=5),
             ["parameters.taps: taps must be one of 0, 4, 9"]),
            (lambda d: d["parameters"].update(taps=16),
             ["parameters.taps: taps must be one of 0, 4, 9"]),
            (lambda d: d["parameters"].update(tap_line=1), ["parameters.tap_line"]),
            (lambda d: d["parameters"].update(tap_line=4096), ["parameters.tap_line"]),
            (lambda d: d["parameters"].update(window_ops=False),
             ["parameters.taps: taps=9 (depthwise runs on the array) needs window_ops"]),
            (lambda d: d["parameters"].update(taps=4),
             ["registers.registers[TAPS].reset is", "but the parameters give"]),
            (lambda d: d["core"].update(tap_side=2), ["core.tap_side is 2 but the parameters "
                                                      "give 3"]),
            (lambda d: d["core"].update(tap_line=65), ["core.tap_line"]),
            (lambda d: d["core"].update(tap_engines=[0, 1]), ["core.tap_engines (entries)"]),
            (lambda d: d["core"].pop("taps"), ["core.taps is missing"]),
            (lambda d: _reg(d, "TAPS").update(reset=0), ["TAPS"])):
        bad = copy.deepcopy(doc)
        edit(bad)
        refused(bad, *texts)


def _main(argv, capsys):
    try:
        status = cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    return status, capsys.readouterr()


@pytest.mark.parametrize("rows, flags, taps, line", [
    (9, [], 9, 64), (9, ["--taps", "4"], 4, 64), (9, ["--taps", "0"], 0, 0),
    (9, ["--tap-line", "130"], 9, 130), (4, [], 0, 0), (4, ["--taps", "4", "--tap-line", "9"],
                                                        4, 9)])
def test_taps_in_the_manifest(tmp_path, capsys, monkeypatch, rows, flags, taps, line):
    """``gen --core``'s tap flags reach the manifest. The manifest is what is checked: the
    Verilog is not converted here (half a minute per core; the taps cores' Verilog runs in
    tests/test_core_taps_sim.py)."""
    from mulfree.gen import core_manifest
    monkeypatch.setattr(core_manifest, "convert_core_verilog", lambda cfg: "// not converted\n")
    argv = ["gen", "--core", "--rows", str(rows), "--cols", str(rows), "-o", str(tmp_path),
            *flags]
    status, out = _main(argv, capsys)
    assert status == 0, out.err
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert doc["parameters"]["taps"] == taps
    assert doc["core"]["taps"] == taps and doc["core"]["tap_line"] == line
    check_manifest(doc)


@pytest.mark.parametrize("flags, texts", [
    (["--taps", "5"], ["--taps must be one of 0, 4, 9"]),
    (["--taps", "x"], ["--taps"]),
    (["--taps", "9", "--no-window-ops"], ["--taps=9 (depthwise runs on the array) needs "
                                          "--window-ops"]),
    (["--tap-line", "1"], ["--tap-line must be an integer in [2, 4095], not 1"]),
    (["--tap-line", "-3"], ["--tap-line"]),
])
def test_bad_taps_are_one_line(tmp_path, capsys, flags, texts):
    status, out = _main(["gen", "--core", "--rows", "9", "--cols", "9", "-o", str(tmp_path),
                         *flags], capsys)
    assert status == 2 and out.err.count("\n") == 1, out.err
    for text in texts:
        assert text in out.err, out.err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("command", [["report", "--core"], ["build", "--board", "arty_z7_20"]])
@pytest.mark.parametrize("flags, text", [
    (["--taps", "5"], "--taps must be one of 0, 4, 9 (a square number of rows, at most "
                      "rows=9), not 5"),
    (["--tap-line", "1"], "--tap-line must be an integer in [2, 4095], not 1")])
def test_report_and_build_refuse_bad_taps(tmp_path, capsys, command, flags, text):
    out_dir = tmp_path / "out"
    status, out = _main([*command, "--rows", "9", "--cols", "9", *flags, "-o", str(out_dir)],
                        capsys)
    assert status == 2 and out.err.count("\n") == 1 and text in out.err, out.err
    assert not out_dir.exists()
