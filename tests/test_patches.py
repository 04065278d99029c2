"""Kernel taps on the array's rows: a convolution as a 1x1 convolution of host-expanded
patches (host/patches.py).

The golden convolution of the patches by the reshaped weights equals the golden convolution
of the image (AdderNet included: a padding pixel is a zero in a patch as in the padded map);
compiled programs that use patches equal the golden model; the mode is checked.
"""

import numpy as np
import pytest

from test_compiler import conv_model, small_core

from mulfree.host.compiler import CompileError, compile_model, emulate_program
from mulfree.host.patches import Patches, expand_patches, patch_shape, patch_weights
from mulfree.params.config import ArrayConfig
from mulfree.params.layer_golden import conv2d_acc
from mulfree.params.model_golden import run_int_model


@pytest.mark.parametrize("pe", ["shift", "adder", "mult"])
@pytest.mark.parametrize("geometry", [((3, 3), (1, 1), (1, 1)), ((3, 3), (2, 2), (1, 1)),
                                      ((2, 1), (2, 1), (1, 0)), ((5, 3), (1, 2), (2, 0)),
                                      ((1, 1), (1, 1), (0, 0))])
def test_patch_convolution_equals_the_convolution(pe, geometry):
    (kh, kw), stride, pad = geometry
    rng = np.random.default_rng(kh * 31 + kw * 7 + stride[0] + pad[0])
    c, h, w, n = 3, 9, 7, 2
    bits = {"shift": dict(weight_bits=4), "mult": dict(weight_bits=6), "adder": {}}[pe]
    cfg = ArrayConfig(pe=pe, rows=4, cols=4, act_bits=8, max_k=256, **bits)
    codes = rng.integers(0, 16, size=(5, c, kh, kw)) if pe == "shift" \
        else rng.integers(-20, 21, size=(5, c, kh, kw))
    x = rng.integers(-128, 128, size=(n, c, h, w))
    p = Patches(kh, kw, stride, pad)
    patches = expand_patches(x, p)
    assert patches.shape == (n,) + patch_shape((c, h, w), p)
    for i in range(n):
        want = conv2d_acc(cfg, x[i], codes, stride, pad)
        got = conv2d_acc(cfg, patches[i], patch_weights(codes), 1, 0)
        assert np.array_equal(got, want)


@pytest.mark.parametrize("pe", ["shift", "adder", "mult"])
@pytest.mark.parametrize("mode", ["on", "auto", "off"])
def test_programs_with_patches_equal_golden(pe, mode):
    model = conv_model(4, pe)
    program = compile_model(model, small_core(pe), chain="off", patches=mode)
    used = [s.patches is not None for s in program.core_steps]
    if mode == "off":
        assert not any(used)
    if mode == "on":
        assert any(used)
        assert "kernel taps on the rows" in program.describe()
    x = np.random.default_rng(3).integers(-32, 32, (7, *model.input.shape))
    assert np.array_equal(emulate_program(program, x), run_int_model(model, x))


def test_patches_mode_is_checked():
    model = conv_model(4, "shift")
    with pytest.raises(CompileError, match="patches must be one of auto, on, off, not 'yes'"):
        compile_model(model, small_core("shift"), patches="yes")
