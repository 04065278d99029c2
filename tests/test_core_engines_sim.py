"""Multi-engine cores (interface 2.1) under cocotbext-axi: the scenarios of
:mod:`mulfree.sim.tb_core_engines` on the generated Verilog, on Verilator and Icarus.

Designs: a shift array with a mult engine folded to one physical column
(:class:`~mulfree.rtl.fold.FoldedEngine`, three passes per vector), and an adder tree with a
mult array (different accumulator and code widths: the mult engine's are the core's), and a
shift array with a packed-DSP + LUT mult engine. Every result is compared with
the golden model of the engine the descriptor names. A missing simulator fails the test.
"""

import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.sim.runner import build_verilog, run_cocotb
from mulfree.sim.tb_core_engines import SCENARIOS

from cores import generated


_SMALL = dict(fmap_vectors=128, weight_rows=256, acc_entries=16, max_channels=16,
              out_vectors=4, shortcut_vectors=0, pool_pixels=0)
DESIGNS = {
    "shift_multc1_4x3_s64": CoreConfig(
        engine=ArrayConfig(pe="shift", rows=4, cols=3, max_k=128),
        extra_engines=(ArrayConfig(pe="mult", rows=4, cols=3, weight_bits=6, max_k=128),),
        engine_cols=(3, 1), **_SMALL),
    "adder_tree_mult_5x4_s32": CoreConfig(
        engine=ArrayConfig(pe="adder", rows=5, cols=4, act_bits=6, arch="tree", max_k=128),
        extra_engines=(ArrayConfig(pe="mult", rows=5, cols=4, act_bits=6, weight_bits=8,
                                   max_k=128),),
        stream_width=32, **_SMALL),
    # The best-effort multiplier beside a shift array (the max-fit's hybrid, issue 17): one
    # packed DSP pair (weights in [-127, 127]) and two LUT-multiplier columns.
    "shift_multp2d2_4x4_s64": CoreConfig(
        engine=ArrayConfig(pe="shift", rows=4, cols=4, max_k=128),
        extra_engines=(ArrayConfig(pe="mult", rows=4, cols=4, max_k=128, mult_pack=2,
                                   dsp_cols=2),),
        **_SMALL),
}


@pytest.mark.parametrize("design,simulator", [("shift_multc1_4x3_s64", "verilator"),
                                              ("adder_tree_mult_5x4_s32", "verilator"),
                                              ("shift_multp2d2_4x4_s64", "verilator"),
                                              ("shift_multc1_4x3_s64", "icarus"),
                                              ("adder_tree_mult_5x4_s32", "icarus"),
                                              ("shift_multp2d2_4x4_s64", "icarus")])
def test_core_engines(design, simulator, tmp_path_factory):
    cfg = DESIGNS[design]
    build_dir = tmp_path_factory.mktemp(f"engines-{simulator}-{design}")
    v_path, j_path = generated(cfg)
    runner = build_verilog(v_path, cfg.top_name, simulator, build_dir,
                           verilator_args=["-Wno-CASEINCOMPLETE"])
    result = run_cocotb(runner, j_path, "mulfree.sim.tb_core_engines", seed=1234)
    assert result.ok, result.summary()
    assert sorted(result.tests) == sorted(SCENARIOS), f"ran {sorted(result.tests)}"


@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_spec_packer_equals_host_packer(design):
    """The testbench's packets (built from ``docs/interface.md``) and the host's
    (:func:`mulfree.host.layer_stream.pack_layer` with ``Layer.engine``) carry the same
    descriptor and the same vectors of every type, in the same order, on every engine."""
    import dataclasses

    import numpy as np

    from mulfree.host.layer_stream import pack_layer
    from mulfree.sim.tb_core_engines import engine_layer, pack_engine_layer

    cfg = DESIGNS[design]
    rng = np.random.default_rng(7)

    def data(packets):
        out = {}
        for p in packets:
            out.setdefault(p.type, []).extend(p.beats[1:])
        return out

    for k in range(len(cfg.engines)):
        for kind, over in (("matmul", {}), ("conv", {"padding": (1, 1), "stride": (2, 1)}),
                           ("shift", {"in_c": 7})):
            layer = engine_layer(cfg, rng, k, kind, **over)
            mine = pack_engine_layer(cfg, layer, k)
            host = pack_layer(cfg, dataclasses.replace(layer, engine=k))
            assert data(mine) == data(host), f"engine {k}, {kind}"
            assert mine[0].beats == host[0].beats
