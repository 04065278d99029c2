"""Graphs on the simulated board: the runtime (:meth:`Device.run`), its per-node records, the
cycle model against the core's ``BUSY_CYCLES``, and ``mulfree run --host-fallback --json``.

The devices are the 4x4 shift core and the 3x5 adder core with a 128-bit stream of
``tests/cores.py`` (Verilog under Verilator, built once per session). Every output is compared
with the golden model of the whole network (``run_int_model``). The tests need Verilator:
without it they fail (``SimulatorMissing``), they never skip.
"""

import json

import numpy as np
import pytest

from cores import ADDER_3X5_S128, SHIFT_4X4, generated
from random_models import random_codes, random_post
from test_compiler_graph import PLACES, WINDOW_PLACES, graph_model, inputs

from mulfree.gen.core_manifest import core_manifest
from mulfree.host.compiler import compile_model
from mulfree.host.export_format import IntConv2d, IntInput, IntLinear, IntModel, write_export
from mulfree.host.runtime import Device
from mulfree.host.steps import step_geometry
from mulfree.params.model_golden import run_int_model
from mulfree.sim.backend import SimBackend
from mulfree.sim.board import SimCore, build_sim_core


#: The cycle model's tolerance: ``|estimate - BUSY_CYCLES| <= TOLERANCE * BUSY_CYCLES`` per
#: node (measured: exact on these cores for most layers, 4.2 % at worst on a short block).
TOLERANCE = 0.05

#: Today's keys of a core step in ``RunResult.summary()["steps"]``.
STEP_KEYS = {"index", "kind", "runs", "busy_cycles", "stall_in_cycles", "stall_out_cycles",
             "terms", "seconds"}


def _design(cfg, board_cache):
    _, j_path = generated(cfg)
    return j_path, build_sim_core(j_path, build_dir=board_cache)


@pytest.fixture(scope="session")
def shift_design(board_cache):
    """``(manifest path, library)`` of the 4x4 shift core."""
    return _design(SHIFT_4X4, board_cache)


@pytest.fixture(scope="session")
def adder_design(board_cache):
    """``(manifest path, library)`` of the 3x5 adder core (128-bit stream)."""
    return _design(ADDER_3X5_S128, board_cache)


def _device(design, cfg):
    j_path, lib = design
    core = SimCore(lib, core_manifest(cfg))
    core.reset()
    manifest = json.loads(j_path.read_text())
    return Device(SimBackend(core, manifest), manifest, timeout=10.0)


@pytest.fixture
def shift_device(shift_design):
    with _device(shift_design, SHIFT_4X4) as dev:
        yield dev


@pytest.fixture
def adder_device(adder_design):
    with _device(adder_design, ADDER_3X5_S128) as dev:
        yield dev


def _run(device, model, b, *, host_fallback=False, seed=1):
    program = compile_model(model, device.core, max_packet_bytes=device.max_packet_bytes,
                            host_fallback=host_fallback)
    device.load(program)
    x = inputs(model, b, seed)
    return program, x, device.run(x)


def _fused(n):
    """A node the core computes inside another's runs (a residual add, a clamp)."""
    return n.placement == "core" and n.kind in ("add", "clamp")


def _check_estimates(result):
    for n in result.nodes:
        if _fused(n):
            assert n.busy_cycles == n.estimated_cycles == n.terms == n.runs == 0
        elif n.placement == "core":
            assert n.busy_cycles > 0 and n.estimated_cycles > 0
            assert abs(n.estimated_cycles - n.busy_cycles) <= TOLERANCE * n.busy_cycles, \
                (n.name, n.estimated_cycles, n.busy_cycles)
        else:
            assert n.busy_cycles == n.estimated_cycles == n.terms == n.runs == 0


def test_graph_batch_equals_golden(shift_device):
    """Every node kind on the simulated board: outputs equal the golden model; one record per
    node, the core's with its counters, the host's with its elements. The 4x4 core has the
    lane unit: the max pool, the depthwise convolution and the 2x2 average are window runs."""
    model = graph_model(11, "shift")
    program, x, result = _run(shift_device, model, 3)
    golden = run_int_model(model, x)
    assert np.array_equal(result.outputs, golden) and np.ptp(golden) > 0
    assert np.array_equal(result.predictions, np.argmax(golden, axis=-1))
    assert [(n.name, n.placement) for n in result.nodes] == list(WINDOW_PLACES.items())
    assert [s.index for s in result.steps] == [s.index for s in program.core_steps]
    assert sorted(s.window for s in program.core_steps if s.window) == ["depthwise", "max",
                                                                          "sum"]
    infos = {i.name: i for i in model.graph()}
    for n in result.nodes:
        if n.placement == "host":
            assert n.host_elements == 3 * int(np.prod(infos[n.name].out_shape))
        elif _fused(n):
            assert n.host_elements == n.useful_terms == 0
        else:
            # TERMS: rows x cols per vector the core's walk issues, M x NT x KT per run; a
            # window run's lane unit: cols per vector, M x NT x kk per run.
            step = next(s for s in program.core_steps if s.index == n.index)
            g = step_geometry(program.core, step, 1 if n.kind != "linear" else 3)
            assert n.runs == (3 if n.kind != "linear" else 1)
            assert n.terms == n.runs * g["M"] * g["NT"] * g["KT"] * (4 if step.window else 16)
            if step.window in ("max", "sum"):
                assert n.useful_terms == 0          # no PE terms: comparisons and additions
            else:
                assert 0 < n.useful_terms <= n.terms
    _check_estimates(result)
    doc = result.summary()
    assert [set(s) for s in doc["steps"]] == [STEP_KEYS] * len(program.core_steps)
    assert [d["name"] for d in doc["nodes"]] == list(WINDOW_PLACES)
    assert 0 < doc["useful_utilization"] <= doc["pe_utilization"] <= 1
    assert doc["useful_terms"] == sum(n.useful_terms for n in result.steps)
    assert doc["useful_utilization"] == round(
        result.useful_terms / (result.busy_cycles * 16), 4)


def test_mixed_model_with_host_fallback(adder_device):
    """Mult and shift nodes on the host beside an adder core (128-bit stream)."""
    model = graph_model(12, "adder", pw_pe="mult", fc_pe="shift")
    with pytest.raises(Exception, match="--host-fallback"):
        compile_model(model, adder_device.core)
    program, x, result = _run(adder_device, model, 2, host_fallback=True)
    golden = run_int_model(model, x)
    assert np.array_equal(result.outputs, golden) and np.ptp(golden) > 0
    assert {n.name for n in result.nodes if n.host_terms} == {"pw", "dw", "fc"}
    assert [n.name for n in result.steps] == ["conv1", "conv2", "conv3"]
    _check_estimates(result)


def _layer_models(pe, ab=8):
    """Single layers of other geometries: strides, a shift table, many channels, short blocks
    (fewer pixels than the hazard window), a linear layer over a batch."""
    rng = np.random.default_rng(7)
    wb = {"shift": 5, "adder": None}[pe]

    def conv(c, h, w, o, k, **fields):
        return IntModel(IntInput((c, h, w), ab, -3), [IntConv2d(
            pe, random_codes(rng, pe, wb, ab, (o, c, k, k)), act_bits=ab, weight_bits=wb,
            **random_post(rng, pe, o, c * k * k, ab), **fields)], output="none")
    return [
        conv(3, 12, 12, 8, 3, stride=2, padding=1, shifts=rng.integers(-1, 2, (3, 2))),
        conv(12, 6, 6, 9, 1),
        conv(7, 5, 4, 6, 3),                                   # 6 pixels: short blocks
        IntModel(IntInput((20,), ab, -3), [IntLinear(
            pe, random_codes(rng, pe, wb, ab, (20, 7)), act_bits=ab, weight_bits=wb,
            **random_post(rng, pe, 7, 20, ab))], output="none"),
    ]


@pytest.mark.parametrize("which", ["shift", "adder"])
def test_cycle_model_matches_busy_cycles(which, shift_device, adder_device):
    """The cycle model's estimate of each core node is within TOLERANCE of BUSY_CYCLES; a
    second batch of a one-layer model, whose weights the core still holds, too."""
    device = {"shift": shift_device, "adder": adder_device}[which]
    for model in _layer_models(which):
        b = 40 if model.layers[0].kind == "linear" else 2
        _, x, result = _run(device, model, b)
        assert np.array_equal(result.outputs, run_int_model(model, x))
        _check_estimates(result)
        again = device.run(x)
        _check_estimates(again)
        assert again.nodes[0].estimated_cycles < result.nodes[0].estimated_cycles


# mulfree run on graphs -------------------------------------------------------------------------

def test_run_cli_graph(shift_design, tmp_path, run_main, capsys, monkeypatch):
    """``mulfree run --host-fallback --json``: per node its kind, where it ran, cycles
    (measured and estimated), useful terms and host elements; without the flag, one line."""
    j_path, lib = shift_design
    model = graph_model(13, "shift", pw_pe="mult")
    write_export(model, tmp_path / "model")
    x = inputs(model, 5, seed=3)
    np.save(tmp_path / "x.npy", x)
    monkeypatch.setenv("MULFREE_CACHE", str(lib.parent.parent.parent))
    argv = ["run", str(tmp_path / "model"), "--config", str(j_path), "--input",
            str(tmp_path / "x.npy"), "--build-dir", str(lib.parent.parent), "--batch", "2"]
    status, out, err = run_main(argv, capsys)
    assert status == 2 and err.count("\n") == 1
    assert "layers.5 (pw, mult conv2d) has weights of another PE kind than this core's shift " \
           "PEs; --host-fallback" in err
    status, out, err = run_main(argv + ["--host-fallback", "--json",
                                        str(tmp_path / "r.json")], capsys)
    assert status == 0, err
    assert "golden      bit-exact: all 15 output integers of 5 images" in out
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["host_fallback"] is True and report["golden"]["bit_exact"]
    infos = model.graph()
    assert [d["name"] for d in report["nodes"]] == [i.name for i in infos]
    for d, info in zip(report["nodes"], infos):
        assert d["kind"] == info.kind
        where = "host" if info.name == "pw" else WINDOW_PLACES[info.name]
        assert d["placement"] == where
        assert f"  {info.index:>3} {info.name:<14} {info.kind:<14} {where:<4}" in out
        if info.name == "res":                      # fused into conv2's runs
            assert d["fused_into"] == 1 and d["runs"] == d["busy_cycles"] == 0
            assert d["host_elements"] == d["useful_terms"] == 0
            assert "in the runs of layers.1 (post-processing)" in out
        elif where == "core":
            # Batches of 2: the linear node and the chained segment of avg and conv3 (their
            # stacked maps concatenate: host/chaining.py) take a batch per run, the other
            # steps (chained image by image, or unstackable) an image per run.
            stacked = info.kind == "linear" or info.name in ("avg", "conv3")
            assert d["runs"] == (3 if stacked else 5)
            assert abs(d["estimated_cycles"] - d["busy_cycles"]) <= TOLERANCE * d["busy_cycles"]
            if info.kind in ("maxpool2d", "avgpool2d"):     # the lane unit: no PE terms
                assert d["useful_utilization"] == d["useful_terms"] == 0
                assert 0 < d["pe_utilization"] <= 1
            else:
                assert 0 < d["useful_utilization"] <= d["pe_utilization"] <= 1
                assert d["useful_terms"] > 0
            assert d["host_elements"] == 0
        else:
            assert d["busy_cycles"] == d["runs"] == 0
            assert d["host_elements"] == 5 * int(np.prod(info.out_shape))
    assert [d["layer"] for d in report["layers"]] == [i.index for i in infos
                                                      if WINDOW_PLACES[i.name] == "core"
                                                      and i.name not in ("pw", "res")]
    assert report["useful_terms"] == sum(d["useful_terms"] for d in report["nodes"]
                                         if d["placement"] == "core")
    assert report["host_terms"] == sum(d["host_terms"] for d in report["nodes"]) > 0
    # The bytes every run sent and received, counted by the device, equal the program's costs
    # (computed from the packets' sizes alone) per batch of 2, 2 and 1 images, for the program
    # mulfree run compiled (for --batch 2: chaining weighs the batch).
    from mulfree.host.compiler import core_from_manifest
    program = compile_model(model, core_from_manifest(json.loads(j_path.read_text())),
                            host_fallback=True, batch=2)
    costs = [program.costs(n) for n in (2, 2, 1)]
    for d in report["nodes"]:
        mine = [next(c for c in batch if c.index == d["index"]) for batch in costs]
        assert (d["bytes_in"], d["bytes_out"]) == (sum(c.bytes_in for c in mine),
                                                   sum(c.bytes_out for c in mine)), d["name"]
    assert report["bytes_to_core"] == sum(d["bytes_in"] for d in report["nodes"]) > 0
    assert f"traffic     {report['bytes_to_core'] / 5:,.0f} B per image to the core" in out
