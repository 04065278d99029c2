"""Tests of the fusion of residual adds, clamps, option-A shortcuts and global pools into core
runs (:mod:`mulfree.host.fusion`).

Every program runs on the NumPy model of the core (``emulate_program``: the runs, packets and
result bytes a device sees) and is compared with the golden model of the whole network
(``run_int_model``), which computes the add and the clamp as separate nodes.
"""

import numpy as np
import pytest

from random_models import random_codes, random_post

from mulfree.host.compiler import compile_model, core_for_model, emulate_program
from mulfree.host.export_format import (IntAdd, IntClamp, IntConv2d, IntFlatten,
                                        IntGlobalAvgPool, IntInput, IntLinear, IntMaxPool2d,
                                        IntModel, IntPad)
from mulfree.host.steps import CoreStep, FusedStep, HostStep
from mulfree.params.model_golden import run_int_model


WB = {"shift": 4, "adder": None, "mult": 6}


def _conv(rng, pe, o, c, k, ab, *, padding=0, relu=False, exp=-3, **fields):
    wb = WB[pe]
    post = random_post(rng, pe, o, c * k * k, ab)
    post["relu"] = np.full(o, relu) if relu is not None else post["relu"]
    return IntConv2d(pe, random_codes(rng, pe, wb, ab, (o, c, k, k)), padding=padding,
                     act_bits=ab, weight_bits=wb, out_scale_exp=exp, **post, **fields)


def _model(layers, ab=8, shape=(6, 6, 5)):
    model = IntModel(IntInput(shape, ab, -3), layers, output="none")
    model.graph()
    return model


def _inputs(model, b=3, seed=1):
    lo, hi = -(1 << (model.input.act_bits - 1)), (1 << (model.input.act_bits - 1)) - 1
    return np.random.default_rng(seed).integers(lo, hi + 1, (b, *model.input.shape))


def _check(model, cfg=None):
    """Compile on a 4x4 core, run on the core model, compare with the golden model; return
    the (unchained) program and ``{name: step type}``. The chained program (every tensor the
    core can keep on-chip) must equal the golden model too."""
    cfg = cfg or core_for_model(model, rows=4, cols=4)
    program = compile_model(model, cfg, chain="off")
    x = _inputs(model)
    y = emulate_program(program, x)
    golden = run_int_model(model, x)
    assert np.array_equal(y, golden)
    assert np.ptp(golden) > 0
    assert np.array_equal(emulate_program(compile_model(model, cfg, chain="on"), x), golden)
    return program, {s.name: type(s) for s in program.steps}


def _block(rng, pe, ab, *, e1=-3, e2=-4, shift=1, relu=True, clamp=(0, 50)):
    """conv1 (relu) -> conv2 -> add(conv2, conv1) -> clamp: a ResNet basic block with ReLU6.
    The add's in_shifts align the scales ``2^e2``, ``2^e1`` onto the finer one."""
    g = min(e1, e2)
    layers = [
        _conv(rng, pe, 6, 6, 3, ab, padding=1, relu=True, exp=e1, name="conv1"),
        _conv(rng, pe, 6, 6, 3, ab, padding=1, relu=False, exp=e2, name="conv2"),
        IntAdd(in_shifts=(e2 - g, e1 - g), shift=shift, relu=relu, act_bits=ab,
               out_scale_exp=g + shift, name="res", inputs=("conv2", "conv1")),
    ]
    if clamp is not None:
        layers.append(IntClamp(lo=clamp[0], hi=clamp[1], name="relu6"))
    return layers


@pytest.mark.parametrize("pe", ["shift", "adder", "mult"])
def test_basic_block_add_and_clamp_run_in_the_core(pe):
    """The add and the clamp become part of conv2's runs; the result is the golden model's."""
    ab = 6 if pe == "adder" else 8
    rng = np.random.default_rng(2)
    model = _model(_block(rng, pe, ab, clamp=(0, (1 << (ab - 1)) // 3)), ab)
    program, kinds = _check(model)
    assert kinds == {"conv1": CoreStep, "conv2": CoreStep, "res": FusedStep,
                     "relu6": FusedStep}
    conv2 = program.steps[1]
    assert conv2.fused == (2, 3) and conv2.sources == (0, 0)
    assert conv2.residual.main_shift == 0 and conv2.residual.short_shift == 1
    assert conv2.residual.shift == 1 and conv2.residual.relu
    assert conv2.clamp == (0, (1 << (ab - 1)) // 3)
    assert [s.into for s in program.steps[2:]] == [1, 1]
    # conv1 (no residual) takes the three images stacked in one run (host/stacking.py);
    # conv2, carrying the residual add, runs once per image.
    assert program.steps[0].images_per_run >= 3 and program.steps[1].images_per_run == 1
    assert program.runs_for(3) == 1 + 3
    text = program.describe()
    assert "residual add of layers.0 and clamp in its post-processing" in text
    assert "core: fused into layers.1" in text


def test_shortcut_is_the_model_input_and_clamp_alone():
    """The model's input as the shortcut (tensor -1); a clamp right after a convolution
    (ReLU6 of MobileNet) fuses without an add; a negative add shift (left) too."""
    rng = np.random.default_rng(3)
    model = _model([
        _conv(rng, "shift", 6, 6, 3, 8, padding=1, relu=None, exp=-1, name="conv"),
        IntAdd(in_shifts=(2, 0), shift=-1, relu=False, act_bits=8, out_scale_exp=-4,
               name="res", inputs=("conv", "input")),
        _conv(rng, "shift", 5, 6, 1, 8, relu=None, name="pw"),
        IntClamp(lo=-3, hi=20, name="clip"),
        IntFlatten(name="flat"),
        IntLinear("shift", random_codes(rng, "shift", 4, 8, (5 * 6 * 5, 4)), act_bits=8,
                  weight_bits=4, name="fc", **random_post(rng, "shift", 4, 150, 8)),
    ])
    program, kinds = _check(model)
    assert kinds == {"conv": CoreStep, "res": FusedStep, "pw": CoreStep, "clip": FusedStep,
                     "flat": HostStep, "fc": CoreStep}
    assert program.steps[0].sources == (-1, -1) and program.steps[0].residual.shift == -1
    assert program.steps[2].residual is None and program.steps[2].clamp == (-3, 20)


def test_add_of_two_branches_fuses_into_the_first():
    """add(a, b) of two branches: a's runs take b as the shortcut, and b runs first."""
    rng = np.random.default_rng(4)
    model = _model([
        _conv(rng, "mult", 6, 6, 3, 8, padding=1, relu=True, name="stem"),
        _conv(rng, "mult", 6, 6, 1, 8, relu=None, name="a"),
        _conv(rng, "mult", 6, 6, 3, 8, padding=1, relu=None, name="b", inputs=("stem",)),
        IntAdd(in_shifts=(0, 0), shift=1, relu=True, act_bits=8, out_scale_exp=-2,
               name="res", inputs=("a", "b")),
    ])
    program, kinds = _check(model)
    assert [s.name for s in program.steps] == ["stem", "b", "a", "res"]
    assert kinds["res"] is FusedStep and program.steps[3].into == 1
    assert program.steps[2].sources == (0, 2) and not program.steps[1].fused
    assert program.last_use == {-1: 0, 0: 1, 2: 1, 1: 3}


def _down_block(rng, shape, pads=(2, 2, 0, 0, 0, 0), sub=None):
    """ResNet's downsampling block as torch.fx traces it: conv1 (stride 2), conv2, then the
    shortcut (subsample, zero channels), then the add."""
    return _model([
        _conv(rng, "shift", 4, 6, 3, 8, padding=1, relu=True, name="stem"),
        IntConv2d("shift", random_codes(rng, "shift", 4, 8, (8, 4, 3, 3)), stride=2, padding=1,
                  act_bits=8, weight_bits=4, out_scale_exp=-3, name="conv1",
                  **dict(random_post(rng, "shift", 8, 36, 8), relu=np.ones(8, bool))),
        _conv(rng, "shift", 8, 8, 3, 8, padding=1, relu=False, name="conv2"),
        sub or IntMaxPool2d(kernel=1, stride=2, name="sub", inputs=("stem",)),
        IntPad(pads=pads, name="pad"),
        IntAdd(in_shifts=(0, 0), shift=0, relu=True, act_bits=8, out_scale_exp=-3,
               name="res", inputs=("conv2", "pad")),
    ], shape=shape)


@pytest.mark.parametrize("pads", [(2, 2), (0, 4), (3, 1)])
def test_option_a_shortcut_is_aligned_by_the_core(pads):
    """The subsampling and the channel pad of an option-A shortcut become part of conv2's run:
    the core receives the block's input and aligns it (stride 2, the pad's front channels as
    the offset, also one that is no multiple of the 4 lanes); they compute nothing and no
    longer move before conv2; the program equals the golden model."""
    rng = np.random.default_rng(7)
    model = _down_block(rng, (6, 6, 6), pads=pads + (0, 0, 0, 0))
    program, kinds = _check(model)
    assert [s.name for s in program.steps] == ["stem", "conv1", "conv2", "sub", "pad", "res"]
    assert kinds == {"stem": CoreStep, "conv1": CoreStep, "sub": FusedStep, "pad": FusedStep,
                     "conv2": CoreStep, "res": FusedStep}
    conv2 = program.steps[2]
    assert conv2.sources == (1, 0) and conv2.short_shape == (4, 6, 6)
    assert (conv2.residual.stride, conv2.residual.offset) == (2, pads[0])
    assert conv2.fused == (5, 3, 4) and program.steps[3].sources == ()
    assert "every 2th pixel" in program.describe()


@pytest.mark.parametrize("case", ["odd_map", "spatial_pad", "pool_kernel"])
def test_shortcut_chains_the_core_cannot_align_stay_on_the_host(case):
    """A map that is no multiple of the stride (5x5 -> 3x3), a pad of pixels, a subsampling
    that is a real max pool: those nodes run on their own (the pad on the host, the max pool
    on the core's lane unit as a window run), and the add still fuses with their output as an
    identity shortcut."""
    rng = np.random.default_rng(9)
    shape = (6, 5, 5) if case == "odd_map" else (6, 6, 6)
    pads = (2, 2, 0, 0, 0, 0)
    sub = None
    if case == "spatial_pad":
        pads, sub = (2, 2, 1, 0, 1, 0), IntMaxPool2d(kernel=1, stride=3, name="sub",
                                                    inputs=("stem",))
    if case == "pool_kernel":
        sub = IntMaxPool2d(kernel=2, stride=2, name="sub", inputs=("stem",))
    program, kinds = _check(_down_block(rng, shape, pads, sub))
    sub_step = next(s for s in program.steps if s.name == "sub")
    assert kinds["sub"] is CoreStep and sub_step.window == "max"
    assert kinds["pad"] is HostStep and kinds["res"] is FusedStep
    conv2 = program.steps[-2]
    assert conv2.sources == (1, 4) and conv2.residual.stride == 1
    assert conv2.residual.offset == 0


def _pool_head(rng, shape, pool_shift=-1, ab=8):
    """conv -> global average pool -> flatten -> linear: a classifier's head."""
    return _model([
        _conv(rng, "shift", 6, shape[0], 3, ab, padding=1, relu=True, name="conv"),
        IntGlobalAvgPool(shift=pool_shift, act_bits=ab, name="gap"),
        IntFlatten(name="flat"),
        IntLinear("shift", random_codes(rng, "shift", 4, ab, (6, 5)), act_bits=ab,
                  weight_bits=4, out_scale_exp=-3, name="fc",
                  **random_post(rng, "shift", 5, 6, ab)),
    ], ab, shape)


@pytest.mark.parametrize("pool_shift", [-3, -1, 0, 2])
def test_global_pool_and_flatten_run_in_the_core(pool_shift):
    """A global average pool over 4x4 pixels (and the flatten after it) becomes part of the
    convolution's run: it returns one pixel; the program equals the golden model."""
    rng = np.random.default_rng(10 + pool_shift)
    program, kinds = _check(_pool_head(rng, (5, 4, 4), pool_shift))
    assert kinds == {"conv": CoreStep, "gap": FusedStep, "flat": FusedStep, "fc": CoreStep}
    conv = program.steps[0]
    assert conv.pool == 4 + pool_shift and conv.fused == (1, 2)
    assert conv.result_shape == (6, 1, 1)
    assert "global average pool in its post-processing" in program.describe()
    # The run returns 2 result vectors (6 channels, 4 lanes) instead of 16 * 2.
    assert program.costs(1)[0].bytes_out == 2 * 8


@pytest.mark.parametrize("case", ["not_pow2", "small_unit", "no_unit"])
def test_global_pools_the_core_cannot_do_run_on_the_host(case):
    """A map of 4x5 pixels (no power of two), a core whose pool unit is too small or absent:
    the pool and the flatten are host steps, exact."""
    rng = np.random.default_rng(11)
    model = _pool_head(rng, (5, 4, 5) if case == "not_pow2" else (5, 4, 4))
    options = {"small_unit": dict(pool_pixels=8), "no_unit": dict(pool_pixels=0)}.get(case, {})
    program, kinds = _check(model, core_for_model(model, rows=4, cols=4, **options))
    assert kinds["gap"] is HostStep and kinds["flat"] is HostStep
    assert program.steps[0].pool is None


@pytest.mark.parametrize("case", ["two_readers", "shift_too_far", "in_shift_too_far",
                                  "wider_add", "no_buffer", "small_buffer"])
def test_what_does_not_fuse_runs_on_the_host(case):
    """Each condition of the fusion rule, broken once: the add stays a host step, exact."""
    rng = np.random.default_rng(5)
    kw = {"shift_too_far": dict(shift=-9), "in_shift_too_far": dict(e2=13)}
    layers = _block(rng, "shift", 8, clamp=None, **kw.get(case, {}))
    if case == "two_readers":
        layers.append(IntAdd(in_shifts=(1, 0), act_bits=8, out_scale_exp=-4, name="again",
                             inputs=("res", "conv2")))
    if case == "wider_add":
        layers[2] = IntAdd(in_shifts=(0, 1), shift=1, act_bits=10, out_scale_exp=-3,
                           name="res", inputs=("conv2", "conv1"))
    model = _model(layers)
    options = {"no_buffer": dict(shortcut_vectors=0),
               "small_buffer": dict(shortcut_vectors=6 * 5 * 2 - 1)}.get(case, {})
    cfg = core_for_model(model, rows=4, cols=4, **options)
    assert cfg.engine.act_bits == 8
    program, kinds = _check(model, cfg)
    assert kinds["res"] is HostStep
    assert program.steps[1].residual is None and program.steps[1].fused == ()


def test_core_for_model_sizes_the_shortcut_buffer():
    """A shortcut larger than the default buffer: the generated core's buffer is the next
    power of two; the add fuses."""
    rng = np.random.default_rng(6)
    model = _model(_block(rng, "shift", 8, clamp=None), shape=(6, 40, 30))
    cfg = core_for_model(model, rows=4, cols=4)
    assert cfg.shortcut_vectors == 4096              # 40 * 30 * 2 = 2400 vectors
    program = compile_model(model, cfg, chain="off")
    assert isinstance(program.steps[2], FusedStep)
    assert core_for_model(_model(_block(rng, "shift", 8))).shortcut_vectors == 1024


def test_traffic_counts_every_byte_a_device_moves():
    """The costs' bytes in and out equal the packets and results of every run the NumPy core
    model is given (weights in the first run of each step only), and the residual's shortcut
    is part of them."""
    from mulfree.host.compiler import encode_run
    rng = np.random.default_rng(8)
    model = _model(_block(rng, "shift", 8))
    program = compile_model(model, core_for_model(model, rows=4, cols=4), chain="off")
    costs = {c.index: c for c in program.costs(3)}
    for step in program.core_steps:
        sent = got = 0
        # The device's runs: chunks of images_per_run images (a stacked run takes [n, ...]
        # images, a run of one image [C, H, W]).
        n = min(3, step.images_per_run)
        chunks = [n] * (3 // n) + ([3 % n] if 3 % n else [])
        for i, n in enumerate(chunks):
            x = np.zeros(((n,) if n > 1 else ()) + step.in_shape, np.int64)
            short = np.zeros(step.short_shape, np.int64) if step.residual else None
            packets, nbytes, _ = encode_run(program, step, x, reuse=i > 0, shortcut=short)
            sent += sum(p.nbytes for p in packets)
            got += nbytes
        assert (costs[step.index].bytes_in, costs[step.index].bytes_out) == (sent, got)
    # Without the add, conv2 would take its kernel taps on the rows (host/patches.py: it
    # stacks then, which a residual run cannot); off here, so that the SHORTCUT alone differs.
    plain = compile_model(model, core_for_model(model, rows=4, cols=4, shortcut_vectors=0),
                          chain="off", patches="off")
    assert program.core_steps[1].patches is None
    fused, host = program.costs(1)[1], plain.costs(1)[1]
    # 6x6x5 pixels, 2 tiles of 4 lanes: 60 SHORTCUT vectors of 32 bits, one beat each, and
    # a header per extra packet: the SHORTCUT's, and the WEIGHTS' second one (the first
    # block's shortcut comes after the first tile's weights).
    def packets(prog):
        step = prog.core_steps[1]
        short = np.zeros(step.short_shape, np.int64) if step.residual else None
        return encode_run(prog, step, np.zeros(step.in_shape, np.int64), reuse=False,
                          shortcut=short)[0]
    kinds = [int(p[0][0]) & 0xF for p in packets(program)]
    assert kinds.count(6) == 1 and kinds.count(4) == 2
    extra = len(packets(program)) - len(packets(plain))
    assert extra == 2
    assert fused.bytes_in - host.bytes_in == (60 + extra) * 8
    assert "host<->core traffic:" in program.describe()
