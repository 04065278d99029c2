"""The adder-tree engine's configuration, widths, manifest and command line.

Node ranges are checked against brute force: every activation with every weight code, the leaf
value and carry written from ``docs/numerics.md`` (section 9) in plain Python integers.
"""

import json
import re

import pytest

from mulfree.flows.cli import main
from mulfree.params.config import ArrayConfig, ConfigError, tree_level_counts
from mulfree.gen.emit import convert_verilog
from mulfree.gen.manifest import manifest


# Validation -----------------------------------------------------------------------------------

def _one_line(excinfo, param, value, *allowed):
    err = excinfo.value
    assert err.param == param
    message = str(err)
    assert "\n" not in message and message.startswith(param), message
    assert repr(value) in message, message
    for text in allowed:
        assert text in message, message


@pytest.mark.parametrize("value", ["Tree", "", None, 1, "systolic"])
def test_arch_unknown(value):
    with pytest.raises(ConfigError) as excinfo:
        ArrayConfig(arch=value)
    _one_line(excinfo, "arch", value, "array", "tree")


@pytest.mark.parametrize("value", [0, -1, 65, 2.0, "2", True, None])
def test_levels_per_stage_invalid(value):
    with pytest.raises(ConfigError) as excinfo:
        ArrayConfig(arch="tree", tree_levels_per_stage=value)
    _one_line(excinfo, "tree_levels_per_stage", value, "[1, 64]")


def test_levels_per_stage_only_for_trees():
    with pytest.raises(ConfigError) as excinfo:
        ArrayConfig(arch="array", tree_levels_per_stage=2)
    _one_line(excinfo, "tree_levels_per_stage", 2, "arch='tree'")


@pytest.mark.parametrize("rows", [0, 1025])
def test_tree_geometry_invalid(rows):
    with pytest.raises(ConfigError) as excinfo:
        ArrayConfig(arch="tree", rows=rows, max_k=2048)
    _one_line(excinfo, "rows", rows, "[1, 1024]")


def test_array_parameters_unchanged():
    # An array's manifest parameters are what they were before trees existed.
    assert set(ArrayConfig().params()) == {"pe", "rows", "cols", "act_bits", "weight_bits",
                                           "max_k"}
    cfg = ArrayConfig(arch="tree", tree_levels_per_stage=3)
    assert ArrayConfig(**cfg.params()) == cfg
    assert cfg.top_name == "mulfree_tree_shift_8x8_a8w4k1024_l3"
    assert ArrayConfig(pe="adder", rows=16, cols=16, arch="tree").top_name == \
        "mulfree_tree_adder_16x16_a8w8k1024"
    assert ArrayConfig().top_name == "mulfree_array_shift_8x8_a8w4k1024"


# Structure and latency ----------------------------------------------------------------------

@pytest.mark.parametrize("k", [1, 2, 3, 5, 16, 17, 31, 64, 100])
def test_level_counts(k):
    levels = tree_level_counts(k)
    assert levels[0] == [1] * k and levels[-1] == [k]
    assert len(levels) - 1 == (k - 1).bit_length()          # ceil(log2 k) adder levels
    for below, above in zip(levels, levels[1:]):
        assert sum(above) == k and len(above) == (len(below) + 1) // 2


@pytest.mark.parametrize("k, g, latency, registered", [
    (16, 1, 7, [0, 1, 2, 3, 4, 5]),      # input reg + term + 4 adder levels + root
    (16, 2, 4, [1, 3, 5]),
    (16, 3, 3, [2, 5]),
    (16, 6, 2, [5]),
    (16, 64, 2, [5]),
    (17, 1, 8, [0, 1, 2, 3, 4, 5, 6]),
    (1, 1, 3, [0, 1]),
    (1, 2, 2, [1]),
    (3, 2, 3, [1, 3]),
])
def test_latency(k, g, latency, registered):
    cfg = ArrayConfig(pe="adder", rows=k, arch="tree", tree_levels_per_stage=g, max_k=1024)
    assert cfg.tree_registered_levels == registered
    assert cfg.latency == latency == 1 + -(-(cfg.tree_depth + 2) // g)


# Exact widths against brute force ------------------------------------------------------------

def _leaves(pe, a, b):
    """Every ``(term, value, carry)`` a leaf can produce, from the spec in Python integers."""
    out = set()
    xs = range(-2 ** (a - 1), 2 ** (a - 1))
    if pe == "adder":
        for x in xs:
            for w in xs:
                d = x - w
                n = int(d < 0)
                out.add((-abs(d), d ^ -n if n else d, n))    # v = d XOR N as a bits
    elif pe == "shift":
        for x in xs:
            for code in range(2 ** b):
                s, e = code >> (b - 1), code & (2 ** (b - 1) - 1)
                t = 0 if e == 0 else x * 2 ** (e - 1)
                out.add(((-1) ** s * t, ~t if s else t, s))     # v = t XOR S
    else:
        for x in xs:
            for w in range(-2 ** (b - 1), 2 ** (b - 1)):
                out.add((x * w, x * w, 0))
    return out


@pytest.mark.parametrize("pe, a, b", [("adder", 2, None), ("adder", 5, None), ("shift", 4, 3),
                                      ("shift", 3, 4), ("shift", 5, 2), ("mult", 4, 3),
                                      ("mult", 3, 5)])
def test_node_widths_brute_force(pe, a, b):
    cfg = ArrayConfig(pe=pe, rows=17, act_bits=a, weight_bits=b, arch="tree", max_k=1024)
    leaves = _leaves(pe, a, b)
    for term, value, carry in leaves:
        # The identity the tree relies on: term = v + c (adder: -|d| = -(v + c)).
        assert (-(value + carry) if pe == "adder" else value + carry) == term
    # A node over m leaves holds m - 1 terms plus one leaf's value (its carry is pending).
    magnitudes = [value + carry for _, value, carry in leaves] if pe == "adder" else \
        [term for term, _, _ in leaves]
    values = [value for _, value, _ in leaves]
    for m in range(1, 18):
        lo = (m - 1) * min(magnitudes) + min(values)
        hi = (m - 1) * max(magnitudes) + max(values)
        assert cfg.tree_node_range(m) == (lo, hi), (m, cfg.tree_node_range(m), (lo, hi))
        width = cfg.tree_node_width(m)
        if cfg.tree_signed:
            assert -2 ** (width - 1) <= lo and hi < 2 ** (width - 1)
            assert not (-2 ** (width - 2) <= lo and hi < 2 ** (width - 2))
        else:
            assert lo >= 0 and hi < 2 ** width and hi >= 2 ** (width - 1)
        # Never wider than the sum's own exact width: the tree saves, never spends.
        assert width <= ArrayConfig(pe=pe, rows=m, act_bits=a, weight_bits=b,
                                    max_k=1024).term_width + (m - 1).bit_length()


# Emission and the command line -------------------------------------------------------------

def test_manifest_tree():
    cfg = ArrayConfig(pe="adder", rows=17, cols=3, arch="tree", tree_levels_per_stage=2)
    doc = manifest(cfg)
    assert doc["kind"] == "tree"
    assert doc["timing"]["latency"] == cfg.latency
    assert doc["tree"]["level_widths"][1] == [9] * 8 + [8]
    assert doc["tree"]["registered_levels"] == [1, 3, 5, 6]
    assert manifest(ArrayConfig())["kind"] == "array"


def test_tree_is_one_module():
    text = convert_verilog(ArrayConfig(pe="mult", rows=3, cols=2, arch="tree"))
    assert re.findall(r"^module (\w+)", text, re.M) == ["mulfree_tree_mult_3x2_a8w8k1024"]


def test_cli_gen_tree(tmp_path, capsys):
    status = main(["gen", "--arch", "tree", "--pe", "adder", "--rows", "5", "--cols", "3",
                   "--levels-per-stage", "2", "-o", str(tmp_path)])
    out = capsys.readouterr()
    cfg = ArrayConfig(pe="adder", rows=5, cols=3, arch="tree", tree_levels_per_stage=2)
    # stderr holds the status lines only (logging, INFO): the files written
    assert (status, out.err.splitlines()) == (0, [f"wrote {tmp_path / cfg.top_name}{s}"
                                                  for s in (".v", ".json")])
    doc = json.loads((tmp_path / f"{cfg.top_name}.json").read_text())
    assert doc["parameters"] == cfg.params()
    assert f"latency {cfg.latency} cycles" in out.out
    assert (tmp_path / f"{cfg.top_name}.v").read_text().startswith("/*")


@pytest.mark.parametrize("args, option, value", [
    (["--arch", "tree", "--levels-per-stage", "0"], "--levels-per-stage", "0"),
    (["--arch", "tree", "--levels-per-stage", "65"], "--levels-per-stage", "65"),
    (["--levels-per-stage", "2"], "--levels-per-stage", "2"),
    (["--arch", "grid"], "--arch", "grid"),
    (["--arch", "tree", "--rows", "0"], "--rows", "0"),
])
def test_cli_bad_input(args, option, value, tmp_path, capsys):
    status = main(["gen", *args, "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2
    assert len(err.splitlines()) == 1 and option in err and value in err, err
    assert not (tmp_path / "out").exists()


# Benchmark -----------------------------------------------------------------------------------

def test_bench_tree_tiny(tmp_path):
    from mulfree.flows.bench_tree import bench_tree, format_tree
    result = bench_tree(2, 3, act_bits=2, max_k=4, variants=["adder", "mult"], jobs=2,
                        work_dir=tmp_path, progress=None)
    adder = result["variants"]["adder"]
    assert adder["totals"]["lut"] > 0 and adder["totals"]["dsp"] == 0
    assert adder["per_term"]["lut"] == adder["totals"]["lut"] / 6
    assert adder["lut_sites"] >= adder["totals"]["lut"] + adder["totals"]["srl"]
    assert result["variants"]["mult"]["totals"]["dsp"] == 6
    assert [c["pass"] for c in result["checks"]] == [True, True]
    assert "LUT sites" in format_tree(result)
