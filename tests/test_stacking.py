"""Several images per convolution run, stacked along the height (host/stacking.py).

The stacked run is checked against the golden model image by image: the convolution of the
stacked map, cut back into images, equals the convolution of each image; a compiled program
whose steps stack equals the golden model; the steps that cannot stack are refused.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from test_compiler_window import mobile_model

from mulfree.host.compiler import compile_model, core_for_model, emulate_program
from mulfree.host.stacking import (MAX_STACK, concatenates, stack_gap, stack_images,
                                   stacked_height, unstack_output)
from mulfree.params.config import ArrayConfig
from mulfree.params.layer_golden import conv2d_acc, conv_output_size
from mulfree.params.model_golden import run_int_model


def _step(c, h, w, k, stride, pad, **extra):
    oh = conv_output_size(h, k, stride, pad)
    ow = conv_output_size(w, k, stride, pad)
    fields = dict(kind="conv2d", residual=None, pool=None, per_image=False, window=None,
                  shifts=None, padding=(pad, pad), stride=(stride, stride), in_shape=(c, h, w),
                  out_shape=(5, oh, ow), w_codes=np.zeros((5, c, k, k), dtype=np.int64))
    fields.update(extra)
    return SimpleNamespace(**fields)


def test_gap_covers_the_padding_and_keeps_the_stride_phase():
    # 3x3, padding 1, stride 1: one zero row is the padding below one image and above the next.
    assert stack_gap(_step(2, 8, 8, 3, 1, 1)) == 1
    # No padding, 3x3 on 8 rows: the last output row reads rows 5..7, inside the image.
    assert stack_gap(_step(2, 8, 8, 3, 1, 0)) == 0
    # Stride 2 on 8 rows with padding 1: one row for the padding, one more so that the next
    # image starts on an even row (period 10 = 5 output rows).
    assert stack_gap(_step(2, 8, 8, 3, 2, 1)) == 2
    # 7 rows, 3x3, stride 2, no padding: output rows 0..2 read up to row 6; period 8 is even.
    assert stack_gap(_step(2, 7, 7, 3, 2, 0)) == 1
    assert stacked_height(_step(2, 8, 8, 3, 2, 1), 3) == 3 * 8 + 2 * 2
    assert stacked_height(_step(2, 8, 8, 3, 2, 1), 1) == 8


@pytest.mark.parametrize("pe", ["shift", "adder", "mult"])
@pytest.mark.parametrize("geometry", [(3, 1, 1), (3, 2, 1), (1, 1, 0), (3, 1, 0), (3, 2, 0),
                                      (2, 2, 0), (5, 1, 2), (4, 3, 1)])
def test_stacked_convolution_equals_each_image(pe, geometry):
    """The golden convolution of the stacked map, unstacked, is the golden convolution of each
    image (AdderNet included: a zero gap row adds -|w| exactly like a padding row)."""
    k, stride, pad = geometry
    rng = np.random.default_rng(k * 100 + stride * 10 + pad)
    c, h, w, n = 3, 9, 7, 5
    bits = {"shift": dict(weight_bits=4), "mult": dict(weight_bits=6), "adder": {}}[pe]
    cfg = ArrayConfig(pe=pe, rows=4, cols=4, act_bits=8, max_k=256, **bits)
    codes = rng.integers(0, 16, size=(5, c, k, k)) if pe == "shift" \
        else rng.integers(-20, 21, size=(5, c, k, k))
    step = _step(c, h, w, k, stride, pad, w_codes=codes)
    x = rng.integers(-128, 128, size=(n, c, h, w))
    stacked = stack_images(step, x)
    assert stacked.shape == (c, stacked_height(step, n), w)
    y = conv2d_acc(cfg, stacked, codes, stride, pad)
    got = unstack_output(step, y, n)
    want = np.stack([conv2d_acc(cfg, x[i], codes, stride, pad) for i in range(n)])
    assert np.array_equal(got, want)


def test_steps_that_cannot_stack_are_refused():
    base = dict(c=2, h=8, w=8, k=3, stride=1, pad=1)
    args = tuple(base.values())
    assert stack_gap(_step(*args, kind="linear")) is None
    assert stack_gap(_step(*args, residual=object())) is None
    assert stack_gap(_step(*args, pool=object())) is None
    assert stack_gap(_step(*args, per_image=True)) is None
    # A max pool's padding is the smallest activation, not a zero row.
    assert stack_gap(_step(*args, window="max")) is None
    assert stack_gap(_step(2, 8, 8, 3, 1, 0, window="max")) == 0
    # A shift table that moves rows would read the neighbouring image through the gap.
    assert stack_gap(_step(*args, shifts=np.array([[1, 0], [0, 0]]))) is None
    assert stack_gap(_step(*args, shifts=np.array([[0, 1], [0, -1]]))) == 1


@pytest.mark.parametrize("pe", ["shift", "adder", "mult"])
def test_program_with_stacked_runs_equals_golden(pe):
    """A MobileNet-like model on a 4x4 core, chaining off: the convolutions and window runs
    that can stack take several images per run, the program equals the golden model for a
    batch that ends in a shorter run."""
    model = mobile_model(3, pe, ab=6 if pe == "adder" else 8)
    program = compile_model(model, core_for_model(model, rows=4, cols=4), chain="off")
    stacked = {s.name: s.images_per_run for s in program.core_steps
               if s.kind != "linear" and s.images_per_run > 1}
    assert "conv1" in stacked and "dw" in stacked, stacked
    assert all(1 < n <= MAX_STACK for n in stacked.values())
    # The max pool pads (padding 1): it runs once per image.
    assert {s.name: s.images_per_run for s in program.core_steps}["pool"] == 1
    n = stacked["conv1"] + 3
    rng = np.random.default_rng(7)
    lo, hi = -(1 << (model.input.act_bits - 1)), (1 << (model.input.act_bits - 1)) - 1
    x = rng.integers(lo, hi + 1, size=(n,) + tuple(model.input.shape))
    y = emulate_program(program, x)
    assert np.array_equal(y, run_int_model(model, x))
    assert program.runs_for(n) < sum(n for s in program.core_steps if s.kind != "linear")


def test_concatenating_steps():
    """A chained segment stacks only steps whose stacked maps are the images' concatenation."""
    assert concatenates(_step(9, 8, 8, 1, 1, 0))                  # a patch step
    assert concatenates(_step(16, 8, 8, 2, 2, 0, window="max"))   # 2x2 pool, stride 2
    assert not concatenates(_step(2, 8, 8, 3, 1, 1))              # one gap row
    assert not concatenates(_step(2, 8, 8, 3, 1, 0))              # 6 output rows of 8
    assert not concatenates(_step(16, 7, 7, 2, 2, 0, window="max"))   # gap for the stride
    assert not concatenates(_step(2, 8, 8, 1, 1, 0, kind="linear"))
