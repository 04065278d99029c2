"""Layer chaining in the compiler (:mod:`mulfree.host.chaining`), without a simulator.

A chained program runs on the NumPy model of the core (``emulate_program``), which computes a
resident input or shortcut from the contents of its model of the core's banks, not from the
host's copy: a wrong plan gives wrong numbers. Outputs are the logits (``output="none"``),
compared with the golden model of the whole network; traffic is compared with the program's
unchained form.
"""

import dataclasses

import numpy as np
import pytest

from mulfree.host.compiler import CompileError, compile_model, core_for_model, emulate_program
from mulfree.host.steps import CoreStep
from mulfree.params.model_golden import run_int_model, quantize_input


@pytest.fixture(scope="module")
def resnet8():
    """A captured, quantized DeepShift ResNet-8 of the zoo (option-A shortcuts, global pool),
    its logits as the output, and two quantized images."""
    import torch
    from mulfree.host.quant import quantize
    from mulfree.host.zoo import build_zoo_model
    torch.manual_seed(0)
    net = build_zoo_model("resnet8", "shift", widths=(4, 8, 8)).eval()
    x = torch.rand(8, 3, 16, 16)
    model = dataclasses.replace(quantize(net, x), output="none")
    return model, quantize_input(model, x[:3].numpy())


def _core(model, **options):
    return core_for_model(model, rows=4, cols=4, **options)


def test_resnet8_chained_equals_golden(resnet8):
    model, xq = resnet8
    cfg = _core(model)
    assert cfg.fmap_banks == 2
    program = compile_model(model, cfg, chain="on")
    core = program.core_steps
    assert len(program.segments) == 1 and all(s.per_image for s in core)
    # The stem streams its input; every later step finds its input in a bank; the residual
    # steps find their shortcut in the other bank and write in place over it; only the
    # classifier's output is sent.
    assert not core[0].acts_resident and all(s.acts_resident for s in core[1:])
    # The stem may take its kernel taps on the rows (its input is streamed anyway); a step
    # reading a bank runs its own convolution (host/patches.py).
    assert all(s.patches is None for s in core[1:])
    residual = [s for s in core if s.residual is not None]
    assert len(residual) == 3 and all(s.short_resident and s.keep for s in residual)
    assert all(s.keep and s.quiet for s in core[:-1]) and not core[-1].keep
    for prev, s in zip(core, core[1:]):
        assert s.in_bank == 1 - prev.in_bank
    y = emulate_program(program, xq)
    assert np.array_equal(y, run_int_model(model, xq))
    plain = compile_model(model, cfg, chain="off")
    assert plain.segments == () and not any(s.per_image for s in plain.core_steps)
    assert np.array_equal(emulate_program(plain, xq), y)


def test_chaining_halves_the_traffic(resnet8):
    """Per image at batch 1: the chained program sends the weights, the input image and the
    logits; the unchained one every activation and shortcut both ways."""
    model, _ = resnet8
    cfg = _core(model)
    moved = {}
    for chain in ("off", "on"):
        costs = compile_model(model, cfg, chain=chain).costs(1)
        moved[chain] = sum(c.bytes_in + c.bytes_out for c in costs)
    assert moved["on"] * 2 <= moved["off"]
    # auto weighs the batch: at batch 1 chaining pays here.
    assert compile_model(model, cfg, chain="auto", batch=1).segments != ()


def test_describe_says_what_stays_on_chip(resnet8):
    model, _ = resnet8
    text = compile_model(model, _core(model), chain="on").describe()
    assert "chained: input in bank" in text and "output kept in bank" in text
    assert "shortcut in bank" in text and "weights" in text and "with every image" in text


def test_one_bank_core_chains_nothing(resnet8):
    model, xq = resnet8
    program = compile_model(model, _core(model, fmap_banks=1), chain="on")
    assert program.segments == () and not any(s.per_image for s in program.core_steps)
    assert np.array_equal(emulate_program(program, xq), run_int_model(model, xq))


@pytest.mark.parametrize("option, value, message", [
    ("chain", "yes", "chain must be one of auto, on, off, not 'yes'"),
    ("batch", 0, "batch must be an integer >= 1, not 0"),
])
def test_bad_options(resnet8, option, value, message):
    model, _ = resnet8
    with pytest.raises(CompileError, match=message):
        compile_model(model, _core(model), **{option: value})



def _digits_like():
    """The digits CNN's shapes (conv 1->16, max pool, conv 16->32, max pool, linear), random
    codes: its unchained convolutions and pools stack their images."""
    from random_models import random_codes, random_post
    from mulfree.host.export_format import (IntConv2d, IntFlatten, IntInput, IntLinear,
                                            IntMaxPool2d, IntModel)
    rng = np.random.default_rng(0)

    def conv(o, c):
        return IntConv2d("shift", random_codes(rng, "shift", 5, 8, (o, c, 3, 3)),
                         padding=(1, 1), act_bits=8, weight_bits=5, out_scale_exp=-3,
                         **random_post(rng, "shift", o, c * 9, 8))

    def pool():
        return IntMaxPool2d(kernel=(2, 2), stride=(2, 2), padding=(0, 0))
    model = IntModel(IntInput((1, 8, 8), 8, -6), [
        conv(16, 1), pool(), conv(32, 16), pool(), IntFlatten(),
        IntLinear("shift", random_codes(rng, "shift", 5, 8, (128, 10)), act_bits=8,
                  weight_bits=5, **random_post(rng, "shift", 10, 128, 8))], output="none")
    model.graph()
    return model


@pytest.mark.parametrize("net", ["resnet8", "digits"])
def test_auto_weighs_the_unchained_runs_as_they_run(resnet8, net):
    """``chain="auto"`` chains when the chained segment moves fewer bytes than the unchained
    runs do, counted over the batch as the device runs them (stacked images share a run's
    packets, weights go once): the same sums as the programs' costs. The digits network
    chains at batch 1 and 8, not at 128 (per image, chained 7,169 B, unchained 6,997)."""
    model = resnet8[0] if net == "resnet8" else _digits_like()
    cfg = core_for_model(model) if net == "digits" else _core(model)
    for images in (1, 2, 8, 64, 128):
        moved = {chain: sum(c.bytes_in + c.bytes_out for c in compile_model(
                     model, cfg, chain=chain, batch=images).costs(images))
                 for chain in ("off", "on")}
        auto = compile_model(model, cfg, chain="auto", batch=images)
        assert (auto.segments != ()) == (moved["on"] < moved["off"]), (images, moved)


def test_stacked_segment_equals_golden():
    """A segment whose steps' stacked maps are plain concatenations (the digits CNN with its
    convolutions as patches: 1x1, no gap; 2x2 pools of stride 2 on even heights) runs
    ``chain_images`` images at a time: each pool reads the stacked map its convolution kept
    in a bank. Equal to the golden model for batches ending in a shorter chunk."""
    from mulfree.host.stacking import concatenates
    model = _digits_like()
    cfg = core_for_model(model)
    program = compile_model(model, cfg, chain="auto", batch=128)
    # Cut before the second convolution (patches: its input comes from the host).
    assert program.segments == ((0, 1), (2, 3))
    seg = program.core_steps[:4]
    sizes = [s.chain_images for s in seg]
    assert sizes[0] == sizes[1] > 1 and sizes[2] == sizes[3] > 1 and all(s.per_image for s in seg)
    assert [s.patches is not None for s in seg] == [True, False, True, False]
    assert [s.acts_resident for s in seg] == [False, True, False, True]
    assert [s.keep and s.quiet for s in seg] == [True, False, True, False]
    plain = compile_model(model, cfg, chain="off")
    assert all(concatenates(s) for s in plain.core_steps[:4])
    # Fewer cycles and bytes than unchained (the pools read no ACTS, the convolutions send
    # no results).
    for key in ("cycles", "bytes_in", "bytes_out"):
        assert sum(getattr(c, key) for c in program.costs(128)) \
            < sum(getattr(c, key) for c in plain.costs(128)), key
    assert f"one run per {sizes[2]} images (stacked" in program.describe()
    rng = np.random.default_rng(5)
    for images in (sizes[2] + 3, sizes[0] + 1):
        x = rng.integers(-128, 128, (images, 1, 8, 8))
        assert np.array_equal(emulate_program(program, x), run_int_model(model, x))


def test_segment_that_does_not_concatenate_runs_image_by_image():
    """Without patches the digits CNN's 3x3 convolutions stack with a gap row: its segment
    chains image by image only."""
    model = _digits_like()
    program = compile_model(model, core_for_model(model), chain="on", batch=128,
                            patches="off")
    assert program.segments and all(s.chain_images == 1 for s in program.core_steps)
    x = np.random.default_rng(6).integers(-128, 128, (5, 1, 8, 8))
    assert np.array_equal(emulate_program(program, x), run_int_model(model, x))
