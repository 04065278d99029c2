"""The compiler's taps runs (interface 2.4, :func:`mulfree.host.window_steps.taps_fit`), without a
simulator: which depthwise nodes run on the array with the tap window instead of the lane
unit, and that programs with them equal the golden model of the whole network
(``run_int_model``) on the NumPy model of the core. The RTL's taps runs are
tests/test_core_taps_sim.py's and tests/test_cycle_model_v24.py's."""

import dataclasses

import numpy as np
import pytest

from test_compiler_graph import _conv, inputs
from test_compiler_window import mobile_model

from mulfree.host.compiler import compile_model, core_for_model, emulate_program
from mulfree.host.export_format import IntAdd, IntInput, IntModel
from mulfree.host.window_steps import tap_line_needed, taps_fit
from mulfree.params.model_golden import run_int_model


def _steps(program):
    return {s.name: s for s in program.steps}


@pytest.mark.parametrize("pe", ["shift", "adder", "mult"])
def test_depthwise_nodes_run_on_the_array(pe):
    """On a 9x9 core (a 3x3 tap window by default) the 3x3 stride-2 depthwise node is a taps
    run on its engine, its clamp fused; the pools stay on the lane unit; the program equals
    the golden model, with and without chaining."""
    model = mobile_model(11, pe, ab=6 if pe == "adder" else 8)
    cfg = core_for_model(model, rows=9, cols=9)
    assert cfg.taps == 9 and cfg.tap_side == 3 and cfg.engine_index(pe) in cfg.tap_engines
    program = compile_model(model, cfg)
    steps = _steps(program)
    assert steps["dw"].window == "depthwise" and steps["dw"].taps
    assert steps["dw"].clamp is not None and steps["dw"].engine == cfg.engine_index(pe)
    assert not steps["pool"].taps and not steps["avg"].taps
    x = inputs(model, 3)
    golden = run_int_model(model, x)
    assert np.ptp(golden) > 0
    assert np.array_equal(emulate_program(program, x), golden)
    assert np.array_equal(emulate_program(compile_model(model, cfg, chain="off"), x), golden)


def test_a_core_without_a_tap_window_keeps_depthwise_on_the_lane_unit():
    model = mobile_model(12)
    small = core_for_model(model, rows=4, cols=4)           # 4 rows: no 3x3 window (taps 0)
    off = core_for_model(model, rows=9, cols=9, taps=0)
    for cfg in (small, off):
        assert cfg.taps == 0
        step = _steps(compile_model(model, cfg))["dw"]
        assert step.window == "depthwise" and not step.taps
    x = inputs(model, 2)
    assert np.array_equal(emulate_program(compile_model(model, off), x), run_int_model(model, x))


def test_a_line_longer_than_the_line_buffers_stays_on_the_lane_unit():
    """The compiler sizes tap_line for the network; a core given shorter line buffers (here 4
    pixels: the 6x6 map's stride-2 depthwise reads a 7-pixel line) runs it on the lane unit."""
    model = mobile_model(13)
    cfg = core_for_model(model, rows=9, cols=9)
    assert cfg.tap_line >= tap_line_needed((3, 3), (2, 2), (3, 3)) == 7
    short = dataclasses.replace(cfg, tap_line=4)
    program = compile_model(model, short)
    assert not _steps(program)["dw"].taps
    x = inputs(model, 2)
    assert np.array_equal(emulate_program(program, x), run_int_model(model, x))


def test_taps_fit_rules():
    model = mobile_model(14)
    cfg = core_for_model(model, rows=9, cols=9)
    k = cfg.engine_index("shift")
    assert taps_fit(cfg, k, (3, 3), (1, 1), (8, 8))
    assert taps_fit(cfg, k, (1, 3), (1, 1), (8, 8))
    assert not taps_fit(cfg, k, (5, 5), (1, 1), (8, 8))                 # beyond the side
    assert not taps_fit(cfg, k, (3, 3), (1, 1), (cfg.tap_line, cfg.tap_line))   # the line
    assert not taps_fit(cfg, k, (3, 3), (1, 1), (8, 8), fused_residual=True)
    assert not taps_fit(cfg, k, (3, 3), (1, 1), (8, 8), fused_pool=True)
    assert not taps_fit(dataclasses.replace(cfg, taps=0), k, (3, 3), (1, 1), (8, 8))


def test_a_depthwise_node_with_a_residual_add_stays_on_the_lane_unit():
    """A residual add fused into a depthwise run: a taps run refuses it (DESCRIPTOR), so the
    node runs on the lane unit with the add fused; the program stays exact."""
    rng = np.random.default_rng(15)
    c = 4
    layers = [
        _conv(rng, "shift", c, c, 3, 8, padding=1, relu=True, name="conv1"),
        _conv(rng, "shift", c, c, 3, 8, groups=c, padding=1, name="dw"),
        IntAdd(in_shifts=(0, 0), shift=1, relu=True, act_bits=8, out_scale_exp=-2,
               name="add", inputs=("dw", "conv1")),
    ]
    model = IntModel(IntInput((4, 8, 8), 8, -3), layers, name="dw_residual", output="none")
    model.graph()
    cfg = core_for_model(model, rows=9, cols=9)
    program = compile_model(model, cfg)
    dw = _steps(program)["dw"]
    assert dw.window == "depthwise" and dw.residual is not None and not dw.taps
    x = inputs(model, 2)
    assert np.array_equal(emulate_program(program, x), run_int_model(model, x))
