"""The best-effort multiplier's parameters (issue 17): ``mult_pack`` and ``dsp_cols``.

Packing two products into one DSP multiplication is exact only while the lower product fits
its field: checked here by brute force over every int8 activation and weight, independently of
the RTL (which ``tests/test_array_sim.py`` and the formal proof check).
"""

import itertools

import pytest

from mulfree.params.config import ArrayConfig, ConfigError


def _one_line(exc, *words):
    text = str(exc.value)
    assert "\n" not in text
    for word in words:
        assert word in text, text


@pytest.mark.parametrize("value", [0, 3, -1, "2", True, 2.0])
def test_mult_pack_invalid(value):
    with pytest.raises(ConfigError) as exc:
        ArrayConfig(pe="mult", mult_pack=value)
    assert exc.value.param == "mult_pack"
    _one_line(exc, "mult_pack", repr(value))


@pytest.mark.parametrize("pe", ["shift", "adder"])
def test_mapping_needs_mult(pe):
    with pytest.raises(ConfigError) as exc:
        ArrayConfig(pe=pe, mult_pack=2)
    assert exc.value.param == "mult_pack"
    with pytest.raises(ConfigError) as exc:
        ArrayConfig(pe=pe, dsp_cols=1)
    assert exc.value.param == "dsp_cols"
    _one_line(exc, "dsp_cols", "pe='mult'")


def test_mapping_needs_array():
    with pytest.raises(ConfigError) as exc:
        ArrayConfig(pe="mult", arch="tree", mult_pack=2)
    _one_line(exc, "mult_pack", "arch='array'")


@pytest.mark.parametrize("value", [-1, 9, "4", 2.5])
def test_dsp_cols_invalid(value):
    with pytest.raises(ConfigError) as exc:
        ArrayConfig(pe="mult", cols=8, dsp_cols=value)
    assert exc.value.param == "dsp_cols"
    _one_line(exc, "dsp_cols", "[0, 8]")


@pytest.mark.parametrize("act_bits, weight_bits, param_word", [
    (16, 16, "A port"), (11, 8, "A port"), (8, 12, "A port")])
def test_pack_too_wide_for_dsp48e1(act_bits, weight_bits, param_word):
    with pytest.raises(ConfigError) as exc:
        ArrayConfig(pe="mult", act_bits=act_bits, weight_bits=weight_bits, mult_pack=2)
    assert exc.value.param == "mult_pack"
    _one_line(exc, "mult_pack=2", param_word)


def test_widest_pack_fits():
    assert ArrayConfig(pe="mult", act_bits=10, weight_bits=8, mult_pack=2).pack_width == 25


def test_int8_packing_rule():
    cfg = ArrayConfig(pe="mult", mult_pack=2)
    assert cfg.weight_range == (-127, 127)
    assert cfg.pack_shift == 15 and cfg.pack_width == 23
    assert cfg.term_range == (-16256, 16256)
    # Without packing, -128 stays a weight.
    assert ArrayConfig(pe="mult").weight_range == (-128, 127)


def test_defaults_unchanged():
    cfg = ArrayConfig(pe="mult", rows=4, cols=6)
    assert cfg.params() == {"pe": "mult", "rows": 4, "cols": 6, "act_bits": 8,
                            "weight_bits": 8, "max_k": 1024}
    assert cfg.top_name == "mulfree_array_mult_4x6_a8w8k1024"
    assert cfg.column_groups == [("dsp", c, 1) for c in range(6)]
    assert cfg.dsp_count == 24
    assert ArrayConfig(pe="shift").dsp_count == 0


def test_column_groups_and_dsps():
    cfg = ArrayConfig(pe="mult", rows=3, cols=7, mult_pack=2, dsp_cols=5)
    assert cfg.column_groups == [("pair", 0, 2), ("pair", 2, 2), ("dsp", 4, 1),
                                 ("lut", 5, 1), ("lut", 6, 1)]
    assert cfg.dsp_count == 3 * 3
    assert ArrayConfig(**cfg.params()) == cfg
    assert cfg.top_name.endswith("_p2_d5")
    assert ArrayConfig(pe="mult", cols=4, dsp_cols=0).dsp_count == 0


def _split(product, k):
    """The RTL's split of ``product``: the low signed field, and the high part + sign bit."""
    low = product & ((1 << k) - 1)
    low -= (low >> (k - 1)) << k
    return low, (product >> k) + ((product >> (k - 1)) & 1)


@pytest.mark.parametrize("act_bits, weight_bits", [(8, 8), (4, 5), (5, 3)])
def test_packing_exhaustive(act_bits, weight_bits):
    cfg = ArrayConfig(pe="mult", act_bits=act_bits, weight_bits=weight_bits, mult_pack=2)
    k, (wlo, whi), (xlo, xhi) = cfg.pack_shift, cfg.weight_range, cfg.act_range
    for x in range(xlo, xhi + 1):
        for a, b in itertools.product(range(wlo, whi + 1), repeat=2):
            assert _split(x * (a + b * (1 << k)), k) == (x * a, x * b), (x, a, b)


def test_minus_128_would_collide():
    """The reason for the rule: with a -128 weight the lower field overflows k bits."""
    k = ArrayConfig(pe="mult", mult_pack=2).pack_shift
    assert _split(-128 * (-128 + 0 * (1 << k)), k) != (16384, 0)


# Where weights enter a packed core: the host's layer check ----------------------------------

def _packed_core(**kwargs):
    from mulfree.params.core_config import CoreConfig
    return CoreConfig(engine=ArrayConfig(pe="mult", rows=4, cols=4, mult_pack=2, max_k=64),
                      **kwargs)


def test_minus_128_weight_refused_on_packed_core():
    import numpy as np
    from mulfree.host import layer_stream as ls
    from mulfree.params.layer_golden import PostParams
    cfg = _packed_core()
    x = np.zeros((3, 8), np.int64)
    post = PostParams(np.zeros(4, np.int64), np.zeros(4, np.int64))
    w = np.full((8, 4), 127, np.int64)
    w[5, 2] = -127
    ls.check_layer(cfg, ls.Layer.matmul(x, w, post))
    w[5, 2] = -128
    with pytest.raises(ls.LayerError) as exc:
        ls.check_layer(cfg, ls.Layer.matmul(x, w, post))
    assert exc.value.param == "w_codes"
    _one_line(exc, "= -128", "[-127, 127]", "mult_pack=2")


def test_packed_core_has_no_taps():
    cfg = _packed_core()
    assert cfg.tap_engines == () and cfg.taps == 0
    with pytest.raises(ConfigError) as exc:
        _packed_core(taps=4)
    _one_line(exc, "taps=4", "packed")


# The command line ------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, text", [
    (["--pe", "shift", "--mult-pack", "2"], "--mult-pack applies to pe='mult'"),
    (["--pe", "mult", "--cols", "8", "--dsp-cols", "9"], "--dsp-cols must be an integer in [0, 8]"),
    (["--pe", "mult", "--mult-pack", "3"], "--mult-pack must be one of 1, 2, not 3"),
    (["--pe", "mult", "--act-bits", "16", "--weight-bits", "16", "--mult-pack", "2"],
     "the DSP's A port"),
    (["--core", "--pe", "shift,mult", "--mult-pack", "0"],
     "engine 1 (mult): --mult-pack must be one of 1, 2, not 0"),
])
def test_cli_refuses_bad_mapping(argv, text, tmp_path, capsys):
    from mulfree.flows.cli import main
    assert main(["gen", *argv, "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and text in err, err


def test_cli_builds_the_mapping():
    from mulfree.flows.core_options import config_from_args, core_config_from_args
    from mulfree.flows.cli import build_parser
    args = build_parser().parse_args(["gen", "--pe", "mult", "--cols", "6", "--mult-pack", "2",
                                      "--dsp-cols", "4"])
    cfg = config_from_args(args)
    assert (cfg.mult_pack, cfg.dsp_cols, cfg.dsp_count) == (2, 4, 8 * 2)
    args = build_parser().parse_args(["gen", "--core", "--pe", "shift,mult", "--rows", "4",
                                      "--cols", "4", "--mult-pack", "2"])
    core = core_config_from_args(args)
    assert core.engine.mult_pack == 1 and core.extra_engines[0].mult_pack == 2
    assert core.top_name.endswith("_multp2_s64")


def test_build_plan_counts_packed_dsps():
    """The Vivado plan's DSP estimate (no synthesis): one DSP per two packed PEs."""
    from mulfree.gen.vivado_plan import estimate_resources
    from mulfree.params.core_config import CoreConfig
    from mulfree.params.manifest import core_manifest
    plain = CoreConfig(engine=ArrayConfig(pe="mult", rows=4, cols=6))
    packed = CoreConfig(engine=ArrayConfig(pe="mult", rows=4, cols=6, mult_pack=2, dsp_cols=5))
    hybrid = CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=6),
                        extra_engines=(ArrayConfig(pe="mult", rows=4, cols=6, mult_pack=2),))
    assert estimate_resources(core_manifest(plain))["dsp"] == 24
    assert estimate_resources(core_manifest(packed))["dsp"] == 4 * 3   # 2 pairs + 1 lone
    assert estimate_resources(core_manifest(hybrid))["dsp"] == 4 * 3
