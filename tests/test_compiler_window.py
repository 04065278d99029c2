"""The compiler's window runs (interface 2.3, :mod:`mulfree.host.window_steps`), without a
simulator: which pooling and depthwise nodes run on the core's lane unit, the runs they become,
and that programs with them equal the golden model of the whole network
(``run_int_model``) on the NumPy model of the core. The lane unit's RTL runs are
tests/test_core_window_sim.py's and tests/test_run_graph.py's."""

import numpy as np
import pytest

from random_models import random_codes, random_post
from test_compiler_graph import _conv, inputs

from mulfree.host.compiler import CompileError, compile_model, core_for_model, emulate_program
from mulfree.host.export_format import (IntAvgPool2d, IntClamp, IntConv2d, IntFlatten,
                                        IntInput, IntLinear, IntMaxPool2d, IntModel)
from mulfree.host.steps import CoreStep, HostStep
from mulfree.params.model_golden import run_int_model


def mobile_model(seed, pe="shift", *, ab=8, avg_kernel=2, avg_shift=0, dw_pe=None,
                 multiplier=1, c=6):
    """conv 3x3 -> max pool 3/2/1 -> depthwise 3x3 (stride 2, ReLU6 clamp) -> pointwise ->
    average pool -> flatten -> linear: a MobileNet-like stack of every window run."""
    rng = np.random.default_rng(seed)
    dw_pe = dw_pe or pe
    hi = (1 << (ab - 1)) - 1
    layers = [
        _conv(rng, pe, c, 3, 3, ab, padding=1, relu=True, name="conv1"),          # (c, 12, 12)
        IntMaxPool2d(kernel=3, stride=2, padding=1, name="pool"),                 # (c, 6, 6)
        _conv(rng, dw_pe, c * multiplier, c, 3, ab, groups=c, padding=1, stride=2,
              exp=-2, name="dw"),                                                 # (c, 3, 3)
        IntClamp(lo=0, hi=hi // 2, name="relu6"),
        _conv(rng, pe, 8, c * multiplier, 1, ab, exp=-1, name="pw"),              # (8, 3, 3)
        IntAvgPool2d(kernel=avg_kernel, stride=1, shift=avg_shift, act_bits=ab, name="avg"),
        IntFlatten(name="flat"),
    ]
    side = 3 - avg_kernel + 1
    layers.append(IntLinear(pe, random_codes(rng, pe, {"shift": 4, "adder": None,
                                                       "mult": 6}[pe], ab, (8 * side * side, 3)),
                            act_bits=ab, weight_bits={"shift": 4, "adder": None, "mult": 6}[pe],
                            name="fc", **random_post(rng, pe, 3, 8 * side * side, ab)))
    model = IntModel(IntInput((3, 12, 12), ab, -3), layers, name=f"mobile_{pe}")
    model.graph()
    return model


def _steps(program):
    return {s.name: s for s in program.steps}


@pytest.mark.parametrize("pe", ["shift", "adder", "mult"])
def test_window_nodes_run_on_the_lane_unit(pe):
    """Max pool, depthwise (with its clamp fused) and the 2x2 average are window runs of the
    right kind, on the right engine, and the program equals the golden model."""
    model = mobile_model(1, pe, ab=6 if pe == "adder" else 8)
    cfg = core_for_model(model, rows=4, cols=4)
    assert cfg.window_ops
    program = compile_model(model, cfg)
    steps = _steps(program)
    assert {n: steps[n].window for n in ("pool", "dw", "avg")} == {
        "pool": "max", "dw": "depthwise", "avg": "sum"}
    assert steps["dw"].clamp is not None and steps["relu6"].placement == "core"
    assert steps["dw"].engine == cfg.engine_index(pe)
    # The average of 4 positions divides by a post-processing shift of 2; max passes through.
    assert set(steps["avg"].post.shift) == {2} and not steps["avg"].post.bias.any()
    assert set(steps["pool"].post.shift) == {0} and not steps["pool"].post.relu.any()
    # Depthwise weights are (C, 1, kh, kw); the pools send none, the depthwise sends kk rows.
    assert steps["dw"].w_codes.shape == (6, 1, 3, 3) and steps["dw"].k == 9
    assert steps["pool"].reuses_weights is False and steps["dw"].reuses_weights is True
    x = inputs(model, 3)
    golden = run_int_model(model, x)
    assert np.ptp(golden) > 0
    assert np.array_equal(emulate_program(program, x), golden)
    # Chaining keeps the stack on-chip: conv1 -> pool -> dw -> pw is one segment.
    assert any(len(seg) >= 4 for seg in program.segments)
    assert np.array_equal(emulate_program(compile_model(model, cfg, chain="off"), x), golden)


def test_costs_count_depthwise_terms_not_pool_comparisons():
    model = mobile_model(2)
    program = compile_model(model, core_for_model(model, rows=4, cols=4))
    costs = {c.name: c for c in program.costs(2)}
    assert costs["pool"].useful_terms == costs["avg"].useful_terms == 0
    assert costs["pool"].cycles > 0 and costs["avg"].cycles > 0
    # Depthwise: every output element is a sum of kh*kw terms of its own channel.
    assert costs["dw"].useful_terms == 2 * 6 * 3 * 3 * 9
    assert costs["dw"].host_elements == 0


def test_without_the_lane_unit_the_window_nodes_stay_on_the_host():
    model = mobile_model(3)
    cfg = core_for_model(model, rows=4, cols=4, window_ops=False)
    assert not cfg.window_ops
    program = compile_model(model, cfg)
    steps = _steps(program)
    assert all(isinstance(steps[n], HostStep) for n in ("pool", "dw", "avg", "relu6"))
    assert steps["pool"].reason == "no weights (the core has no lane unit)"
    assert steps["dw"].reason == "depthwise"
    x = inputs(model, 2)
    assert np.array_equal(emulate_program(program, x), run_int_model(model, x))


@pytest.mark.parametrize("case, reason", [
    ("avg3", "a 3x3 average: 9 is no power of two, the division no shift"),
    ("multiplier", "depthwise with a channel multiplier of 2: the lane unit takes 1"),
    ("foreign", "mult PEs, host fallback"),
])
def test_window_nodes_the_lane_unit_cannot_run(case, reason):
    """A 3x3 average (a division by 9), a channel multiplier, a depthwise node of a kind the
    core has no engine for: those run on the host, saying why; the program stays exact."""
    kw = dict(avg_kernel=3) if case == "avg3" else dict(multiplier=2) if case == "multiplier" \
        else dict(dw_pe="mult")
    model = mobile_model(4, **kw)
    cfg = core_for_model(model, rows=4, cols=4, engines="one")
    name = "avg" if case == "avg3" else "dw"
    if case == "foreign":
        with pytest.raises(CompileError, match="layers.2 .dw, mult conv2d. has weights of "
                                               "another PE kind"):
            compile_model(model, cfg)
    program = compile_model(model, cfg, host_fallback=case == "foreign")
    step = _steps(program)[name]
    assert isinstance(step, HostStep) and step.reason == reason
    assert isinstance(_steps(program)["pool"], CoreStep)
    x = inputs(model, 2)
    assert np.array_equal(emulate_program(program, x), run_int_model(model, x))


def test_an_average_whose_shift_the_core_cannot_hold_stays_on_the_host():
    """avgpool's post-processing shift ``k + shift`` below the core's range (``-act_bits``):
    a host step that names the reason; the program stays exact."""
    model = mobile_model(5, avg_shift=-11)           # 2 - 11 = -9 < -8
    cfg = core_for_model(model, rows=4, cols=4)
    program = compile_model(model, cfg)
    step = _steps(program)["avg"]
    assert isinstance(step, HostStep) and "shift -9 is outside the core's [-8, " in step.reason
    x = inputs(model, 2)
    assert np.array_equal(emulate_program(program, x), run_int_model(model, x))


def test_a_pool_too_big_for_the_buffers_stays_on_the_host():
    model = mobile_model(6)
    cfg = core_for_model(model, rows=4, cols=4)
    import dataclasses
    # The max pool reads a 12x12 map of 2 channel tiles (288 vectors): a 256-vector buffer
    # does not hold it; conv1 (3 channels: 144 vectors) still fits.
    tight = dataclasses.replace(cfg, fmap_vectors=256)
    program = compile_model(model, tight)
    step = _steps(program)["pool"]
    assert isinstance(step, HostStep) and step.reason.startswith("the lane unit cannot run it")
    assert "fmap_vectors" in step.reason or "buffer" in step.reason
    x = inputs(model, 2)
    assert np.array_equal(emulate_program(program, x), run_int_model(model, x))
