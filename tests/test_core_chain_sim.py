"""Layer chaining (interface 2.2) under cocotbext-axi: the scenarios of
:mod:`mulfree.sim.tb_core_chain` on the generated Verilog of two cores with two feature-map
banks, on Verilator and Icarus: a 4x4 shift array (64-bit stream) and an 8x8 adder tree with
a mult engine folded to 2 columns (32-bit stream; the chain's first and last layers run on
the folded engine). Every result is compared with the golden model of the whole chain. A
missing simulator fails the test.
"""

import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.sim.runner import build_verilog, run_cocotb
from mulfree.sim.tb_core_chain import SCENARIOS

from cores import generated


_SMALL = dict(fmap_vectors=128, weight_rows=1024, acc_entries=32, max_channels=32,
              out_vectors=8, shortcut_vectors=128, pool_pixels=16)
DESIGNS = {
    "shift_4x4_s64": CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=4, max_k=256),
                                **_SMALL),
    "adder_tree_multc2_8x8_s32": CoreConfig(
        engine=ArrayConfig(pe="adder", rows=8, cols=8, act_bits=6, arch="tree", max_k=256),
        extra_engines=(ArrayConfig(pe="mult", rows=8, cols=8, act_bits=6, weight_bits=6,
                                   max_k=256),),
        engine_cols=(8, 2), stream_width=32, **_SMALL),
}


@pytest.mark.parametrize("design,simulator", [(d, s) for d in DESIGNS
                                              for s in ("verilator", "icarus")])
def test_core_chain(design, simulator, tmp_path_factory):
    cfg = DESIGNS[design]
    assert cfg.fmap_banks == 2
    build_dir = tmp_path_factory.mktemp(f"chain-{simulator}-{design}")
    v_path, j_path = generated(cfg)
    runner = build_verilog(v_path, cfg.top_name, simulator, build_dir,
                           verilator_args=["-Wno-CASEINCOMPLETE"])
    result = run_cocotb(runner, j_path, "mulfree.sim.tb_core_chain", seed=1234)
    assert result.ok, result.summary()
    assert sorted(result.tests) == sorted(SCENARIOS), f"ran {sorted(result.tests)}"


@pytest.mark.parametrize("design", sorted(DESIGNS))
def test_spec_packer_equals_host_packer(design):
    """The testbench's packets of every run of the chain (the chaining flags packed from
    ``docs/interface.md`` by ``pack_engine_layer``) carry the same descriptor and the same
    vectors of every type (none of a resident type) as the host's
    (:func:`mulfree.host.layer_stream.pack_layer` with the ``Layer``'s chaining fields), and
    the host's golden beats of each run are the testbench's (none for a quiet run)."""
    import dataclasses

    import numpy as np

    from mulfree.host.layer_stream import expected_beats, pack_layer
    from mulfree.sim.tb_core_chain import _image, chain_layers
    from mulfree.sim.tb_core_engines import engine_view, pack_engine_layer

    def data(packets):
        out = {}
        for p in packets:
            out.setdefault(p.type, []).extend(p.beats[1:])
        return out

    cfg = DESIGNS[design]
    rng = np.random.default_rng(3)
    runs = chain_layers(cfg, rng, _image(cfg, rng), send_first=True)
    assert {k for _, _, flags in runs for k, v in flags.items() if v} == {
        "in_bank", "acts_resident", "keep", "quiet", "short_resident"}
    for what, layer, flags in runs:
        k = layer.engine
        mine = pack_engine_layer(cfg, dataclasses.replace(layer, engine=0), k, chain=flags)
        chained = dataclasses.replace(layer, **{n: v if n == "in_bank" else bool(v)
                                                for n, v in flags.items()})
        host = pack_layer(cfg, chained)
        assert data(mine) == data(host), what
        assert mine[0].beats == host[0].beats, f"{what}: descriptor"
        want = [] if flags.get("quiet") else expected_beats(
            engine_view(cfg, k), dataclasses.replace(layer, engine=0))
        assert expected_beats(cfg, chained) == want, what
