"""Tests of compiled graphs (:mod:`mulfree.host.compiler`, :mod:`mulfree.host.schedule`,
:mod:`mulfree.host.program`) and of ``mulfree compile`` on them, without a simulator.

Every program runs on the NumPy model of the core (``emulate_program``: the same runs, packets
and result bytes a device sees; the host's nodes computed by their golden functions) and is
compared with the golden model of the whole network (``run_int_model``). Costs are compared
with counts computed here from the shapes.
"""

import re
import weakref

import numpy as np
import pytest

from random_models import random_codes, random_post

from mulfree.host.compiler import CompileError, compile_model, core_for_model, emulate_program
from mulfree.host.export_format import (IntAdd, IntAddressShift, IntAvgPool2d, IntChannelShift,
                                        IntClamp, IntConcat, IntConv2d, IntFlatten,
                                        IntGlobalAvgPool, IntInput, IntLinear, IntMaxPool2d,
                                        IntModel, IntPad, IntShift2d)
from mulfree.host.program import run_steps
from mulfree.host.steps import CoreStep, FusedStep, HostStep
from mulfree.params.model_golden import run_int_model


WB = {"shift": 4, "adder": None, "mult": 6}


def _conv(rng, pe, o, c, k, ab, *, groups=1, padding=0, relu=False, exp=-3, **fields):
    wb = WB[pe]
    post = random_post(rng, pe, o, c // groups * k * k, ab)
    if relu:
        post["relu"] = np.ones(o, bool)
    return IntConv2d(pe, random_codes(rng, pe, wb, ab, (o, c // groups, k, k)), groups=groups,
                     padding=padding, act_bits=ab, weight_bits=wb, out_scale_exp=exp,
                     **post, **fields)


def graph_model(seed, pe="shift", *, ab=8, pw_pe=None, fc_pe=None):
    """Every node kind, in a graph: a residual add whose input (conv1) stays alive across a
    branch, max pooling 3/2/1, a depthwise convolution (host), a pointwise one (core), a
    concat of two branches on different scales, clamp, pad, the three shift kinds, average
    pooling, global average pooling, flatten and a classifier. ``pw_pe`` and ``fc_pe`` give
    the pointwise convolution and the classifier another PE kind (a mixed model)."""
    rng = np.random.default_rng(seed)
    pw_pe, fc_pe = pw_pe or pe, fc_pe or pe
    hi = (1 << (ab - 1)) - 1
    layers = [
        _conv(rng, pe, 4, 4, 3, ab, padding=1, relu=True, name="conv1"),
        _conv(rng, pe, 4, 4, 3, ab, padding=1, name="conv2"),
        IntAdd(in_shifts=(0, 0), shift=1, relu=True, act_bits=ab, out_scale_exp=-2,
               name="res", inputs=("conv2", "conv1")),
        IntMaxPool2d(kernel=3, stride=2, padding=1, name="pool"),              # (4, 4, 4)
        _conv(rng, pe, 4, 4, 3, ab, groups=4, padding=1, exp=-2, name="dw"),
        _conv(rng, pw_pe, 6, 4, 1, ab, exp=-1, name="pw"),
        IntConcat(shifts=(0, 1), act_bits=ab, out_scale_exp=-1, name="cat",
                  inputs=("pw", "pool")),                                       # (10, 4, 4)
        IntClamp(lo=0, hi=hi // 2, name="relu6"),
        IntPad(pads=(1, 1, 1, 1, 0, 0), name="pad"),                            # (12, 6, 4)
        IntShift2d(offsets=rng.integers(-2, 3, (12, 2)), name="shift"),
        IntAddressShift(offsets=rng.integers(-1, 2, (12, 2)), name="addr"),
        IntChannelShift(r=5, name="chan"),
        IntAvgPool2d(kernel=2, stride=2, shift=0, act_bits=ab, name="avg"),    # (12, 3, 2)
        _conv(rng, pe, 5, 12, 1, ab, exp=-1, name="conv3"),
        IntGlobalAvgPool(shift=-1, act_bits=ab, name="gap"),                    # (5, 1, 1)
        IntFlatten(name="flat"),
        IntLinear(fc_pe, random_codes(rng, fc_pe, WB[fc_pe], ab, (5, 3)), act_bits=ab,
                  weight_bits=WB[fc_pe], name="fc", **random_post(rng, fc_pe, 3, 5, ab)),
    ]
    model = IntModel(IntInput((4, 8, 8), ab, -3), layers, name=f"graph_{pe}")
    model.graph()
    return model


#: Where each node of graph_model runs when every weight node has the core's kind (the
#: residual add "res" fused into conv2's runs), on a core without the lane unit
#: (``window_ops=False``: the tests here keep pooling and depthwise nodes on the host; the
#: lane unit's window runs are tests/test_compiler_window.py's).
PLACES = {"conv1": "core", "conv2": "core", "res": "core", "pool": "host", "dw": "host",
          "pw": "core", "cat": "host", "relu6": "host", "pad": "host", "shift": "host",
          "addr": "host", "chan": "host", "avg": "host", "conv3": "core", "gap": "host",
          "flat": "host", "fc": "core"}
#: The same with the lane unit (interface 2.3): max pooling, the depthwise convolution and
#: the 2x2 average run on the core.
WINDOW_PLACES = dict(PLACES, pool="core", dw="core", avg="core")


def inputs(model, b, seed=1):
    lo, hi = -(1 << (model.input.act_bits - 1)), (1 << (model.input.act_bits - 1)) - 1
    return np.random.default_rng(seed).integers(lo, hi + 1, (b, *model.input.shape))


def _terms(node, out_shape):
    """Terms of one image, counted from the node's fields (not the compiler's)."""
    if node.kind == "linear":
        return out_shape[0] * np.shape(node.codes)[0]
    o, c_per, kh, kw = np.shape(node.codes)
    return out_shape[0] * out_shape[1] * out_shape[2] * c_per * kh * kw


@pytest.mark.parametrize("window_ops", [False, True])
@pytest.mark.parametrize("pe", ["shift", "adder", "mult"])
def test_graph_program_equals_golden(pe, window_ops):
    """Every node kind on a 4x4 core of each PE kind, with and without the lane unit: the
    program equals the golden model and each node runs where the placement rule says."""
    model = graph_model(3, pe, ab=6 if pe == "adder" else 8)
    program = compile_model(model, core_for_model(model, rows=4, cols=4,
                                                  window_ops=window_ops))
    places = WINDOW_PLACES if window_ops else PLACES
    assert {s.name: s.placement for s in program.steps} == places
    assert [type(s) for s in program.steps] == [
        FusedStep if s.name == "res" else CoreStep if places[s.name] == "core" else HostStep
        for s in program.steps]
    x = inputs(model, 4)
    y = emulate_program(program, x)
    golden = run_int_model(model, x)
    assert np.array_equal(y, golden)
    assert np.ptp(golden) > 0
    # The chained segment (conv1, conv2 and, with the lane unit, everything up to conv3) runs
    # once per image; the other convolutions take the four images stacked in one run; one
    # linear run.
    chained = 7 if window_ops else 2
    assert program.runs_for(4) == 4 * chained + (0 if window_ops else 2) + 1


def test_mixed_kinds_need_host_fallback():
    """A weight node of another PE kind is refused, all of them named in one line; with
    host_fallback the host computes them exactly and counts their terms."""
    model = graph_model(5, "shift", pw_pe="mult", fc_pe="adder")
    cfg = core_for_model(model, rows=4, cols=4, window_ops=False, engines="one")
    assert cfg.engine.pe == "shift" and cfg.extra_engines == ()
    with pytest.raises(CompileError) as info:
        compile_model(model, cfg)
    assert str(info.value) == (
        "layers.5 (pw, mult conv2d), layers.16 (fc, adder linear) have weights of another PE "
        "kind than this core's shift PEs; --host-fallback (host_fallback=True) runs them on "
        "the host")
    assert info.value.param == "layers.5.pe"
    program = compile_model(model, cfg, host_fallback=True)
    assert {s.name: s.reason for s in program.host_steps if s.node.kind in ("linear",
                                                                             "conv2d")} == {
        "dw": "depthwise", "pw": "mult PEs, host fallback", "fc": "adder PEs, host fallback"}
    assert [s.name for s in program.core_steps] == ["conv1", "conv2", "conv3"]
    x = inputs(model, 3)
    y, records = emulate_program(program, x, records=True)
    assert np.array_equal(y, run_int_model(model, x))
    infos = {i.name: i for i in model.graph()}
    for r in records:
        node = model.layers[r.index]
        terms = 3 * _terms(node, infos[r.name].out_shape) \
            if node.kind in ("linear", "conv2d") else 0
        assert r.useful_terms == terms, r.name
        assert r.host_terms == (terms if r.placement == "host" else 0), r.name
        assert r.host_elements == (3 * int(np.prod(infos[r.name].out_shape))
                                   if r.placement == "host" else 0), r.name
        # conv1 and conv2 are a chained segment (a run per image); conv3 stacks the three
        # images into one run.
        runs = {"conv1": 3, "conv2": 3, "conv3": 1}.get(r.name, 0)
        assert r.runs == (runs if r.placement == "core" else 0), r.name


def test_mixed_kinds_on_a_multi_engine_core():
    """The default core of a model of three PE kinds has an engine per kind: every weight node
    but the depthwise one runs on the core, each on its kind's engine, equal to the golden
    model."""
    model = graph_model(5, "shift", pw_pe="mult", fc_pe="adder")
    cfg = core_for_model(model, rows=4, cols=4, window_ops=False)
    assert [e.pe for e in cfg.engines] == ["shift", "mult", "adder"]
    program = compile_model(model, cfg)
    assert {s.name: s.reason for s in program.host_steps
            if s.node.kind in ("linear", "conv2d")} == {"dw": "depthwise"}
    assert {s.name: cfg.engines[s.engine].pe for s in program.core_steps} == {
        "conv1": "shift", "conv2": "shift", "conv3": "shift", "pw": "mult", "fc": "adder"}
    x = inputs(model, 3)
    assert np.array_equal(emulate_program(program, x), run_int_model(model, x))


def test_no_node_for_the_core():
    """A model whose only weight nodes are depthwise (host) has nothing for the core."""
    rng = np.random.default_rng(0)
    model = IntModel(IntInput((4, 5, 5), 8, -3),
                     [_conv(rng, "shift", 4, 4, 3, 8, groups=4, padding=1), IntFlatten()],
                     output="none")
    with pytest.raises(CompileError, match="no node of the model runs on this core"):
        compile_model(model, core_for_model(graph_model(0), rows=4, cols=4, window_ops=False))
    with pytest.raises(CompileError, match=r"no linear or conv2d \(groups 1\) node"):
        core_for_model(model)


def test_last_use_keeps_a_residual_input_alive():
    """A tensor lives until its last reader: conv1's output across conv2 up to the add; then
    it is released (weak references to the core steps' outputs tell). The walk feeds every
    node its inputs: with each core node computed by its golden function, the result is the
    golden model's."""
    model = graph_model(6)
    # No shortcut buffer: the add runs on the host, conv1's output is read by two nodes.
    program = compile_model(model, core_for_model(model, rows=4, cols=4, window_ops=False, shortcut_vectors=0),
                            chain="off")
    readers = {}
    for info in model.graph():
        for j in info.sources:
            readers.setdefault(j, []).append(info.index)
    assert program.last_use == {j: max(r) for j, r in readers.items()}
    assert program.last_use[0] == 2 and program.last_use[-1] == 0
    refs, alive = {}, {}

    def run_core(step, x, stats):
        # The golden model of the node alone: the walk's wiring is checked, not the core.
        alive[step.name] = {name: ref() is not None for name, ref in refs.items()}
        out = np.asarray(run_int_model(_single(model, step), x), dtype=np.int64).copy()
        refs[step.name] = weakref.ref(out)
        return out
    x = inputs(model, 2)
    y, records = run_steps(program, x, run_core)
    assert np.array_equal(y, run_int_model(model, x))
    assert [r.name for r in records] == list(PLACES)
    assert records[2].placement == "host"
    assert alive["conv2"] == {"conv1": True}
    assert alive["pw"] == {"conv1": False, "conv2": False}
    assert alive["conv3"]["pw"] is False


def _single(model, step):
    """The model of one weight node alone (its input as the model's input: the node's own
    input shape, not the patches a step with kernel taps on rows streams)."""
    layer = model.layers[step.index]
    fields = {k: getattr(layer, k) for k in layer.__dataclass_fields__}
    fields.update(name=None, inputs=None)
    shape = {i.index: i for i in model.graph()}[step.index].in_shapes[0]
    return IntModel(IntInput(tuple(shape), 8, -3), [type(layer)(**fields)], "none")


def test_costs_count_what_the_nodes_compute():
    """Useful terms (B x outputs x K), host elements and runs, against counts made here."""
    model = graph_model(7)
    program = compile_model(model, core_for_model(model, rows=4, cols=4, window_ops=False), chain="off")
    infos = {i.index: i for i in model.graph()}
    for images in (1, 5):
        costs = program.costs(images)
        assert [c.index for c in costs] == list(range(len(model.layers)))
        for c in costs:
            node, info = model.layers[c.index], infos[c.index]
            weight = node.kind in ("linear", "conv2d")
            assert c.useful_terms == (images * _terms(node, info.out_shape) if weight else 0)
            if c.index in program.core_steps[1].fused:        # "res", in conv2's runs
                assert (c.placement, c.runs, c.cycles, c.host_elements) == ("core", 0, 0, 0)
            elif c.placement == "core":
                assert c.host_elements == 0 and c.cycles > 0
                # conv2 carries the residual add (a run per image); the other convolutions
                # stack the batch into one run, like the linear node.
                assert c.runs == (images if c.name == "conv2" else 1)
            else:
                assert c.host_elements == images * int(np.prod(info.out_shape))
                assert c.cycles == 0 and c.runs == 0
        one, five = program.costs(1), program.costs(5)
        for a, b in zip(one, five):
            if a.placement == "core" and a.kind == "conv2d":
                assert a.cycles < b.cycles < 5 * a.cycles      # later runs reuse the weights


def test_describe_lists_every_node():
    model = graph_model(8, "shift", pw_pe="mult")
    program = compile_model(model, core_for_model(model, rows=4, cols=4, window_ops=False, engines="one"),
                            host_fallback=True)
    text = program.describe(2)
    lines = text.splitlines()
    assert lines[2].startswith("  costs for a batch of 2 images")
    costs = program.costs(2)
    for step, cost in zip(program.steps, costs):
        line = next(l for l in lines if re.match(rf" +{step.index}  {re.escape(step.name)} ", l))
        fields = line.split()
        assert fields[2:4] == [step.kind, step.placement]
        if isinstance(step, FusedStep):
            assert f"core: fused into layers.{step.into}" in line
        elif step.placement == "core":
            assert f"{cost.cycles:,}" in fields and "tiles" in line
        else:
            assert f"{cost.host_elements:,}" in fields and "host: " in line
    assert "host: mult PEs, host fallback" in text and "host: depthwise" in text
    core = [c for c in costs if c.placement == "core"]
    assert (f"total: {len(core)} nodes on the core (1 fused into a run), "
            f"{sum(c.cycles for c in core):,} cycles, "
            f"{sum(c.useful_terms for c in core):,} useful terms") in text
    assert "residual add of layers.0 in its post-processing" in text
    assert text.endswith("output: argmax on the host")


# mulfree compile and the options of mulfree run ---------------------------------------------

@pytest.fixture
def mixed_export(tmp_path):
    from mulfree.host.export_format import write_export
    model = graph_model(9, "shift", pw_pe="mult", fc_pe="adder")
    write_export(model, tmp_path / "mixed")
    return model, tmp_path / "mixed"


def test_compile_cli_lists_the_placement(mixed_export, run_main, capsys):
    model, path = mixed_export
    status, out, err = run_main(["compile", str(path), "--rows", "4", "--cols", "4"], capsys)
    assert status == 0, err
    assert "4x4 shift + mult (1 columns, 4 passes) + adder (1 columns, 4 passes) engines" in out
    for info in model.graph():
        assert re.search(rf"\n +{info.index}  {re.escape(info.name)} +{info.kind} +"
                         rf"{WINDOW_PLACES[info.name]} ", out), (info.name, out)
    status, out, err = run_main(["compile", str(path), "--rows", "4", "--cols", "4",
                                 "--engines", "one"], capsys)
    assert status == 2 and err.count("\n") == 1
    assert "layers.5 (pw, mult conv2d), layers.16 (fc, adder linear) have weights of another " \
           "PE kind" in err and "--host-fallback" in err
    status, out, err = run_main(["compile", str(path), "--rows", "4", "--cols", "4",
                                 "--engines", "one", "--host-fallback", "--batch", "3"], capsys)
    assert status == 0, err
    assert "costs for a batch of 3 images" in out
    for info in model.graph():
        where = "host" if info.name in ("pw", "fc") else WINDOW_PLACES[info.name]
        assert re.search(rf"\n +{info.index}  {re.escape(info.name)} +{info.kind} +{where} ",
                         out), (info.name, out)
    status, out, err = run_main(["compile", str(path), "--batch", "0"], capsys)
    assert status == 2 and err.count("\n") == 1 and "--batch must be an integer >= 1, not 0" \
        in err


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "cifar10"], r"--dataset cifar10 needs --data-dir DIR"),
    (["--dataset", "cifar10", "--data-dir", "{t}/nowhere"], r"--data-dir must be a folder"),
    (["--dataset", "digits", "--data-dir", "{t}"], r"--data-dir goes with --dataset cifar10, "
                                                   r"not with --dataset digits"),
    (["--dataset", "cifar10", "--data-dir", "{t}"], r"--data-dir '.*' has no file "
                                                    r"'test_batch.bin'"),
    (["--dataset", "digits16"], r"--dataset digits16: its images have shape \(1, 16, 16\), "
                                r"MODEL '.*' takes \(4, 8, 8\)"),
    (["--dataset", "imagenet"], r"invalid choice: 'imagenet'"),
])
def test_run_dataset_options_are_checked_first(mixed_export, tmp_path, run_main, capsys, argv,
                                               message):
    """Bad ``--dataset`` / ``--data-dir``: exit 2, one line, before any core is built."""
    model, path = mixed_export
    never = tmp_path / "never"
    t = tmp_path / "t"
    t.mkdir()
    status, out, err = run_main(["run", str(path), "--build-dir", str(never)]
                                + [a.format(t=t) for a in argv], capsys)
    assert status == 2 and re.search(message, err), err
    assert err.strip().count("\n") == 0 or "usage:" in err
    assert not never.exists()


def test_run_takes_every_dataset_name():
    from mulfree.flows.cli import build_parser
    from mulfree.host.datasets import DATASETS
    parser = build_parser()
    for name in DATASETS:
        args = parser.parse_args(["run", "m", "--dataset", name])
        assert args.dataset == name and args.data_dir is None and not args.host_fallback
    assert parser.parse_args(["compile", "m", "--host-fallback"]).host_fallback


def test_run_reads_cifar10_from_data_dir(mixed_export, tmp_path, run_main, capsys):
    """``--dataset cifar10 --data-dir DIR`` reads the binary files there (here: three records;
    the model takes other images, so the run stops there, before any core is built)."""
    model, path = mixed_export
    data = tmp_path / "cifar" / "cifar-10-batches-bin"
    data.mkdir(parents=True)
    records = np.zeros((3, 1 + 3 * 32 * 32), np.uint8)
    records[:, 0] = [3, 7, 9]
    (data / "test_batch.bin").write_bytes(records.tobytes())
    never = tmp_path / "never"
    status, out, err = run_main(["run", str(path), "--dataset", "cifar10", "--data-dir",
                                 str(tmp_path / "cifar"), "--limit", "2", "--build-dir",
                                 str(never)], capsys)
    assert status == 2 and err.count("\n") == 1
    assert re.search(r"--dataset cifar10: its images have shape \(3, 32, 32\), MODEL '.*' "
                     r"takes \(4, 8, 8\)", err), err
    assert not never.exists()


@pytest.mark.parametrize("form", ["shift", "adder"])
def test_zoo_resnet8_captured_and_quantized(form):
    """A captured, quantized ResNet-8 of the zoo (option-A shortcuts; the adder form keeps mult
    ends, which run on the core's folded mult engine, or on the host with host_fallback on a
    one-engine core) on the NumPy core model equals the golden model; every residual add runs
    in the runs of its block's second convolution, the option-A shortcuts' subsampling and
    pads and the global pool with its flatten too: no node is left for the host."""
    import torch
    from mulfree.host.quant import quantize
    from mulfree.host.zoo import build_zoo_model
    from mulfree.params.model_golden import quantize_input
    torch.manual_seed(0)
    net = build_zoo_model("resnet8", form, widths=(4, 8, 8)).eval()
    x = torch.rand(8, 3, 16, 16)
    model = quantize(net, x)
    cfg = core_for_model(model, rows=4, cols=4, window_ops=False)
    assert [e.pe for e in cfg.engines] == ([form] if form == "shift" else ["adder", "mult"])
    xq = quantize_input(model, x[:2].numpy())
    if form == "adder":
        one = core_for_model(model, rows=4, cols=4, window_ops=False, engines="one")
        with pytest.raises(CompileError, match=r"mult conv2d\).*mult linear\) have weights"):
            compile_model(model, one)
        fallback = compile_model(model, one, host_fallback=True)
        assert {s.kind for s in fallback.host_steps} == {"conv2d", "linear"}
        assert np.array_equal(emulate_program(fallback, xq), run_int_model(model, xq))
    program = compile_model(model, cfg)
    assert not program.host_steps
    adds = [s for s in program.steps if s.kind == "add"]
    assert len(adds) == 3 and all(isinstance(s, FusedStep) for s in adds)
    for kind in ("global_avgpool", "flatten", "pad", "maxpool2d"):
        assert all(isinstance(s, FusedStep) for s in program.steps if s.kind == kind), kind
    y = emulate_program(program, xq)
    assert np.array_equal(y, run_int_model(model, xq))
