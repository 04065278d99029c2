"""The generated Verilog of PE arrays, simulated by cocotb on Verilator and Icarus.

Each parameter set builds its own design and runs every scenario of ``mulfree.sim.tb_array``
(random data, corner cases, idle and backpressure, reset mid-stream, latency and throughput),
each output checked bit-exactly against the golden model. A missing simulator fails the test.
"""

import pytest

from mulfree.params.config import ArrayConfig
from mulfree.sim.runner import build_design, run_cocotb


# (pe, rows, cols, act_bits, weight_bits, max_k): all three PE kinds, square and non-square,
# 1x1 and odd sizes, narrow and wide operands.
DESIGNS = [
    ("shift", 8, 8, 8, 4, 1024),
    ("shift", 1, 1, 2, 2, 1),
    ("shift", 5, 3, 16, 6, 4096),
    ("shift", 3, 7, 4, 3, 9),
    ("shift", 2, 3, 4, 3, 9),
    ("adder", 8, 8, 8, None, 1024),
    ("adder", 1, 1, 16, None, 65536),
    ("adder", 3, 7, 4, None, 3),
    ("mult", 8, 8, 8, 8, 1024),
    ("mult", 1, 1, 2, 2, 1),
    ("mult", 4, 6, 16, 16, 1 << 20),
]
# The best-effort multiplier (issue 17): two products per DSP (mult_pack=2, weights in
# [-127, 127], x = -128 among the corners), LUT multipliers past dsp_cols (every weight code,
# -128 included), and a mix of packed pairs, a lone DSP column and LUT columns.
MULT_MAPPINGS = [
    ("mult", 4, 6, 8, 8, 1024, {"mult_pack": 2}),
    ("mult", 3, 5, 8, 8, 64, {"mult_pack": 2, "dsp_cols": 3}),
    ("mult", 4, 3, 8, 8, 1024, {"dsp_cols": 0}),
    ("mult", 2, 4, 5, 6, 9, {"mult_pack": 2, "dsp_cols": 2}),
]
VERILATOR_ONLY = [
    ("shift", 16, 16, 8, 4, 1024),
    ("adder", 16, 5, 8, None, 100000),
]


def _id(design):
    pe, rows, cols, a, w, k, *more = design
    extra = "".join(f"-{key}{value}" for key, value in (more[0] if more else {}).items())
    return f"{pe}-{rows}x{cols}-a{a}" + (f"w{w}" if w else "") + f"-k{k}{extra}"


def _run(design, simulator, tmp_path_factory, vectors):
    pe, rows, cols, a, w, k, *more = design
    cfg = ArrayConfig(pe=pe, rows=rows, cols=cols, act_bits=a, weight_bits=w, max_k=k,
                      **(more[0] if more else {}))
    build_dir = tmp_path_factory.mktemp(f"{simulator}-{_id(design)}")
    runner, manifest = build_design(cfg, simulator, build_dir)
    result = run_cocotb(runner, manifest, "mulfree.sim.tb_array", seed=1234,
                        extra_env={"MULFREE_TB_VECTORS": str(vectors)})
    assert result.ok, result.summary()
    assert len(result.tests) == 5, f"expected 5 scenarios, ran {sorted(result.tests)}"


@pytest.mark.parametrize("design", DESIGNS + MULT_MAPPINGS + VERILATOR_ONLY, ids=_id)
def test_verilator(design, tmp_path_factory):
    _run(design, "verilator", tmp_path_factory, vectors=1000)


@pytest.mark.parametrize("design", DESIGNS + MULT_MAPPINGS, ids=_id)
def test_icarus(design, tmp_path_factory):
    _run(design, "icarus", tmp_path_factory, vectors=200)
