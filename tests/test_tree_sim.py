"""The generated Verilog of adder-tree engines, simulated by cocotb on Verilator and Icarus.

The tree has the array's ports and protocol, so the array's testbench ``mulfree.sim.tb_array``
runs unchanged: every scenario (random data, corner cases, idle and backpressure, reset
mid-stream, latency against the manifest and throughput), each output checked bit-exactly
against the golden model. A missing simulator fails the test.

The designs cover all three terms, tree sizes 1, 3, 16 and 17 (non powers of two pass an odd
node through), 1, 2 and 3 levels per pipeline stage, and narrow to wide operands. Verilator
builds cost 15-30 s each, so the larger designs run there and the small ones on Icarus.
"""

import pytest

from mulfree.params.config import ArrayConfig
from mulfree.sim.runner import build_design, run_cocotb


# (pe, rows = k inputs, cols = n lanes, act_bits, weight_bits, max_k, levels per stage)
VERILATOR = [
    ("adder", 16, 16, 8, None, 1024, 1),     # the benchmark's configuration
    ("adder", 17, 3, 16, None, 65536, 2),
    ("shift", 17, 5, 8, 4, 1024, 1),
    ("shift", 16, 4, 4, 3, 16, 3),
    ("mult", 16, 4, 8, 8, 1024, 2),
    ("mult", 3, 7, 8, 4, 9, 1),
]
ICARUS = [
    ("adder", 1, 1, 2, None, 1, 1),
    ("adder", 3, 4, 4, None, 3, 2),
    ("adder", 17, 2, 8, None, 100, 3),
    ("shift", 1, 3, 8, 2, 1, 1),
    ("shift", 3, 2, 16, 6, 4096, 3),
    ("shift", 16, 2, 6, 5, 16, 2),
    ("mult", 1, 1, 2, 2, 1, 2),
    ("mult", 17, 2, 16, 16, 1 << 20, 1),
]


def _id(design):
    pe, k, n, a, w, max_k, g = design
    return f"{pe}-{k}x{n}-a{a}" + (f"w{w}" if w else "") + f"-k{max_k}-l{g}"


def _run(design, simulator, tmp_path_factory, vectors):
    pe, k, n, a, w, max_k, g = design
    cfg = ArrayConfig(pe=pe, rows=k, cols=n, act_bits=a, weight_bits=w, max_k=max_k,
                      arch="tree", tree_levels_per_stage=g)
    build_dir = tmp_path_factory.mktemp(f"{simulator}-tree-{_id(design)}")
    runner, manifest = build_design(cfg, simulator, build_dir)
    result = run_cocotb(runner, manifest, "mulfree.sim.tb_array", seed=4321,
                        extra_env={"MULFREE_TB_VECTORS": str(vectors)})
    assert result.ok, result.summary()
    assert len(result.tests) == 5, f"expected 5 scenarios, ran {sorted(result.tests)}"


@pytest.mark.parametrize("design", VERILATOR, ids=_id)
def test_verilator(design, tmp_path_factory):
    _run(design, "verilator", tmp_path_factory, vectors=1000)


@pytest.mark.parametrize("design", ICARUS, ids=_id)
def test_icarus(design, tmp_path_factory):
    _run(design, "icarus", tmp_path_factory, vectors=200)
