"""Tests of the PyTorch layers in :mod:`mulfree.host.layers` against NumPy references.

The references are written from ``SEEDS.md`` and ``docs/numerics.md``; the shift primitives
are compared with the golden model :mod:`mulfree.params.shift_golden`, the weight codes with
:func:`mulfree.params.golden.decode_shift`.
"""

import math

import numpy as np
import pytest

import torch

from mulfree.host.layers import (AdderConv2d, AdderLinear, AdderLRScaler, AddressShift2d,
                                 ChannelShift, Shift2d, ShiftConv2d, ShiftLinear, max_shift)
from mulfree.params import golden, shift_golden


torch.set_default_dtype(torch.float32)


def np64(t):
    return t.detach().double().numpy()


def ref_conv_cols(x, kh, kw, stride, padding):
    """im2col of one map ``x[C, H, W]`` (zero padded): ``[OH*OW, C*kh*kw]``, k = (c*kh+ky)*kw+kx."""
    (sy, sx), (py, px) = stride, padding
    c, h, w = x.shape
    xp = np.zeros((c, h + 2 * py, w + 2 * px))
    xp[:, py:py + h, px:px + w] = x
    oh, ow = (h + 2 * py - kh) // sy + 1, (w + 2 * px - kw) // sx + 1
    cols = np.empty((oh * ow, c * kh * kw))
    for oy in range(oh):
        for ox in range(ow):
            cols[oy * ow + ox] = xp[:, oy * sy:oy * sy + kh, ox * sx:ox * sx + kw].ravel()
    return cols, oh, ow


# Shift layers -------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["q", "ps"])
@pytest.mark.parametrize("bits", [2, 3, 5, 6])
def test_shift_linear_forward_is_matmul_with_powers_of_two(mode, bits):
    torch.manual_seed(bits)
    layer = ShiftLinear(7, 5, mode=mode, weight_bits=bits)
    x = torch.randn(4, 3, 7)
    w = np64(layer.effective_weight())
    m = max_shift(bits)
    nonzero = w[w != 0]
    p = np.log2(np.abs(nonzero))
    assert np.all(p == np.round(p)) and p.min() >= -m and p.max() <= 0
    expected = np64(x) @ w.T + np64(layer.bias)
    np.testing.assert_allclose(np64(layer(x)), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", ["q", "ps"])
def test_shift_conv_forward(mode):
    torch.manual_seed(1)
    layer = ShiftConv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 0), mode=mode)
    x = torch.randn(2, 3, 6, 5)
    w = np64(layer.effective_weight()).reshape(4, -1)
    y = np64(layer(x))
    for n in range(2):
        cols, oh, ow = ref_conv_cols(np64(x[n]), 3, 2, (2, 1), (1, 0))
        ref = (cols @ w.T + np64(layer.bias)).T.reshape(4, oh, ow)
        np.testing.assert_allclose(y[n], ref, rtol=1e-5, atol=1e-5)


def test_q_rounding_rules():
    layer = ShiftLinear(1, 9, bias=False, mode="q", weight_bits=4)   # max_shift 6
    values = [0.0, 0.75, -0.3, 3.0, 1e-9, -1e-9, 2 ** -1.5, 2 ** -2.5, 2 ** -6.4]
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(values)[:, None])
    # 2^-1.5 and 2^-2.5 are irrational: their float32 values both lie just below the
    # midpoints (a float log2 returns exactly -1.5 / -2.5 and torch.round's ties to even would
    # give 2^-2 twice); the exact rule rounds both down.
    expected = [0.0, 1.0, -0.25, 1.0, 2 ** -6, -2 ** -6,
                2 ** -2,            # float32(2^-1.5) < 2^-1.5: down to 2^-2
                2 ** -3,            # float32(2^-2.5) < 2^-2.5: down to 2^-3
                2 ** -6]
    assert layer.effective_weight()[:, 0].tolist() == expected
    assert torch.equal(layer._weight().detach(), layer.effective_weight())


def test_q_straight_through_gradient():
    torch.manual_seed(2)
    layer = ShiftLinear(6, 3, bias=False, mode="q")
    x, r = torch.randn(5, 6), torch.randn(5, 3)
    (layer(x) * r).sum().backward()
    # dL/dw_q = r^T x, passed straight to the float weight.
    np.testing.assert_allclose(np64(layer.weight.grad), np64(r).T @ np64(x), rtol=1e-5)


def test_ps_straight_through_gradient_and_clamp():
    torch.manual_seed(3)
    layer = ShiftLinear(6, 3, bias=False, mode="ps", weight_bits=3)   # max_shift 2
    with torch.no_grad():
        layer.shift.uniform_(-4, 1)
        layer.sign.uniform_(-1.4, 1.4)
    x, r = torch.randn(5, 6), torch.randn(5, 3)
    (layer(x) * r).sum().backward()
    shift = np64(layer.shift)
    assert shift.min() >= -2 and shift.max() <= 0            # clamped in place
    s = np.sign(np.round(np64(layer.sign)))
    p = np.round(shift)
    gw = np64(r).T @ np64(x)
    np.testing.assert_allclose(np64(layer.effective_weight()), s * 2.0 ** p)
    np.testing.assert_allclose(np64(layer.shift.grad), gw * s * math.log(2) * 2.0 ** p,
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np64(layer.sign.grad), gw, rtol=1e-5)


def test_ps_sign_three_values():
    layer = ShiftLinear(1, 4, bias=False, mode="ps")
    with torch.no_grad():
        layer.shift.fill_(-1.2)
        layer.sign.copy_(torch.tensor([[0.3], [-0.6], [1.7], [-0.4]]))
    assert layer.effective_weight()[:, 0].tolist() == [0.0, -0.5, 0.5, -0.0]


@pytest.mark.parametrize("mode", ["q", "ps"])
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6])
def test_weight_codes_round_trip(mode, bits):
    torch.manual_seed(bits)
    layer = ShiftConv2d(3, 4, 3, mode=mode, weight_bits=bits)
    with torch.no_grad():                                   # make some zeros and tiny weights
        if mode == "q":
            layer.weight.mul_(4)
            layer.weight[0, 0] = 0
            layer.weight[1, 0] = 1e-12
        else:
            layer.shift.uniform_(-40, 1)
            layer.sign[0, 0] = 0.2
    codes = layer.weight_codes()
    assert codes.shape == (4, 3, 3, 3) and codes.dtype == np.int64
    assert codes.min() >= 0 and codes.max() < 2 ** bits
    sign, p_hw = golden.decode_shift(codes, bits)
    m = max_shift(bits)
    value = sign * (np.int64(1) << p_hw)
    np.testing.assert_array_equal(value, np64(layer.effective_weight()) * 2.0 ** m)
    assert np.all(codes[sign == 0] == 0)                    # canonical zero code
    assert np.any(sign == 0)


def test_weight_codes_mapping_examples():
    layer = ShiftLinear(1, 3, bias=False, mode="ps", weight_bits=5)   # max_shift 14
    with torch.no_grad():
        layer.shift.copy_(torch.tensor([[0.0], [-14.0], [-3.0]]))
        layer.sign.copy_(torch.tensor([[1.0], [1.0], [-1.0]]))
    # e = p + max_shift + 1; sign bit on top (16).
    assert layer.weight_codes()[:, 0].tolist() == [15, 1, 16 + 12]


# Adder layers -------------------------------------------------------------------------------

def test_adder_linear_forward_and_gradients():
    torch.manual_seed(4)
    layer = AdderLinear(5, 3)
    x = (torch.randn(2, 4, 5) * 2).requires_grad_()
    r = torch.randn(2, 4, 3)
    y = layer(x)
    xn, wn, rn = np64(x).reshape(-1, 5), np64(layer.weight), np64(r).reshape(-1, 3)
    ref = np.array([[-sum(abs(xn[n, k] - wn[o, k]) for k in range(5)) for o in range(3)]
                    for n in range(8)]) + np64(layer.bias)
    np.testing.assert_allclose(np64(y).reshape(-1, 3), ref, rtol=1e-5, atol=1e-5)
    (y * r).sum().backward()
    diff = xn[:, None, :] - wn[None]                         # [n, o, k]
    grad_w = (diff * rn[:, :, None]).sum(0)                  # X - W
    grad_x = (np.clip(-diff, -1, 1) * rn[:, :, None]).sum(1)  # HardTanh(W - X)
    np.testing.assert_allclose(np64(layer.weight.grad), grad_w, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np64(x.grad).reshape(-1, 5), grad_x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np64(layer.bias.grad), rn.sum(0), rtol=1e-5)


def test_adder_conv_forward_padding_and_gradients():
    torch.manual_seed(5)
    layer = AdderConv2d(2, 3, 3, stride=2, padding=1, bias=False)
    x = torch.randn(2, 2, 5, 4, requires_grad=True)
    y = layer(x)
    assert y.shape == (2, 3, 3, 2)
    r = torch.randn_like(y)
    (y * r).sum().backward()
    wn = np64(layer.weight).reshape(3, -1)
    grad_w = np.zeros_like(wn)
    for n in range(2):
        cols, oh, ow = ref_conv_cols(np64(x[n]), 3, 3, (2, 2), (1, 1))
        ref = -np.abs(cols[:, None, :] - wn[None]).sum(-1)   # [L, o]
        np.testing.assert_allclose(np64(y[n]).reshape(3, -1).T, ref, rtol=1e-5, atol=1e-5)
        rn = np64(r[n]).reshape(3, -1).T
        grad_w += ((cols[:, None, :] - wn[None]) * rn[:, :, None]).sum(0)
    np.testing.assert_allclose(np64(layer.weight.grad).reshape(3, -1), grad_w,
                               rtol=1e-4, atol=1e-4)
    # A padded pixel is x = 0: the corner output of an all-zero input is -sum|w| over the
    # kernel, with padding included.
    zero = layer(torch.zeros(1, 2, 5, 4))
    np.testing.assert_allclose(np64(zero[0, :, 0, 0]), -np.abs(wn).sum(1), rtol=1e-5)


def test_adder_conv_input_gradient_is_clipped():
    torch.manual_seed(6)
    layer = AdderConv2d(1, 2, 3, padding=1, bias=False)
    x = (torch.randn(1, 1, 4, 4) * 3).requires_grad_()
    r = torch.randn(1, 2, 4, 4)
    (layer(x) * r).sum().backward()
    wn, xn, rn = np64(layer.weight), np64(x)[0, 0], np64(r)[0]
    ref = np.zeros((4, 4))
    for o in range(2):
        for oy in range(4):
            for ox in range(4):
                for ky in range(3):
                    for kx in range(3):
                        iy, ix = oy + ky - 1, ox + kx - 1
                        if 0 <= iy < 4 and 0 <= ix < 4:
                            ref[iy, ix] += rn[o, oy, ox] * np.clip(
                                wn[o, 0, ky, kx] - xn[iy, ix], -1, 1)
    np.testing.assert_allclose(np64(x.grad)[0, 0], ref, rtol=1e-5, atol=1e-5)


def test_adder_lr_scaler():
    torch.manual_seed(7)
    model = torch.nn.Sequential(AdderConv2d(2, 3, 3), torch.nn.Flatten(),
                                AdderLinear(3 * 2 * 2, 4), torch.nn.Linear(4, 2))
    model(torch.randn(3, 2, 4, 4)).sum().backward()
    before = {n: p.grad.clone() for n, p in model.named_parameters()}
    AdderLRScaler(model, eta=0.2).scale_grads()
    for name, p in model.named_parameters():
        if name in ("0.weight", "2.weight"):
            assert math.isclose(p.grad.norm().item(), 0.2 * math.sqrt(p.numel()), rel_tol=1e-5)
            cos = torch.nn.functional.cosine_similarity(p.grad.flatten(),
                                                        before[name].flatten(), dim=0)
            assert cos.item() > 0.9999
        else:
            assert torch.equal(p.grad, before[name])


# Shift and AddressNet -----------------------------------------------------------------------

@pytest.mark.parametrize("channels,kernel,group", [
    (10, 3, None), (9, 3, None), (20, 3, None), (5, 3, None), (27, 5, None), (12, 3, 1),
    (7, 1, None), (30, 5, 1),
])
def test_shift2d_matches_golden(channels, kernel, group):
    rng = np.random.default_rng(channels * 10 + kernel)
    fmaps = rng.integers(-100, 100, size=(2, channels, 4, 5))
    out = Shift2d(channels, kernel, group)(torch.as_tensor(fmaps, dtype=torch.float64))
    for n in range(2):
        np.testing.assert_array_equal(out[n].numpy().astype(np.int64),
                                      shift_golden.shift_cvpr(fmaps[n], kernel, group))


def test_shift2d_gradient_is_the_reverse_shift():
    x = torch.randn(1, 9, 4, 4, requires_grad=True)
    layer = Shift2d(9)
    r = torch.randn(1, 9, 4, 4)
    (layer(x) * r).sum().backward()
    # <S x, r> = <x, S^T r>: check against finite sums with a one-hot x.
    for c, y, xx in [(0, 0, 0), (4, 2, 1), (8, 3, 3), (2, 3, 0)]:
        e = torch.zeros(1, 9, 4, 4)
        e[0, c, y, xx] = 1
        assert math.isclose(x.grad[0, c, y, xx].item(), (layer(e) * r).sum().item(),
                            abs_tol=1e-6)


@pytest.mark.parametrize("channels,group", [(8, None), (6, None), (3, None), (9, 1), (8, 0)])
def test_address_shift_matches_golden(channels, group):
    rng = np.random.default_rng(channels)
    h, w = 3, 4
    fmaps = rng.integers(-100, 100, size=(2, channels, h, w))
    out = AddressShift2d(channels, group)(torch.as_tensor(fmaps, dtype=torch.float64))
    for n in range(2):
        ref = shift_golden.address_shift(fmaps[n].ravel(), 0, (channels, h, w), group)
        np.testing.assert_array_equal(out[n].numpy().astype(np.int64), ref)


@pytest.mark.parametrize("r", [0, 1, 3, 5])
def test_channel_shift_matches_golden(r):
    fmap = np.random.default_rng(r).integers(-9, 9, size=(5, 2, 3))
    out = ChannelShift(5, r)(torch.as_tensor(fmap[None], dtype=torch.float64))
    np.testing.assert_array_equal(out[0].numpy().astype(np.int64),
                                  shift_golden.channel_shift(fmap, r))


# Errors -------------------------------------------------------------------------------------

@pytest.mark.parametrize("make,message", [
    (lambda: ShiftLinear(3, 4, weight_bits=7), "weight_bits must be an integer in 2..6, not 7"),
    (lambda: ShiftLinear(3, 4, mode="x"), "mode must be 'q' or 'ps', not 'x'"),
    (lambda: ShiftLinear(0, 4), "in_features must be a positive integer, not 0"),
    (lambda: ShiftConv2d(3, 4, 3, dilation=2), "dilation must be 1"),
    (lambda: ShiftConv2d(4, 4, 3, groups=2), "groups must be 1"),
    (lambda: AdderConv2d(4, 4, 3, padding_mode="reflect"), "padding_mode must be 'zeros'"),
    (lambda: AdderConv2d(4, 4, 2, padding="same"), "padding 'same' is supported"),
    (lambda: AdderConv2d(4, 4, 3, stride=0), "stride must be an integer >= 1"),
    (lambda: Shift2d(4, kernel=2), "kernel must be an odd positive integer, not 2"),
    (lambda: ChannelShift(4, 5), r"r must be an integer in \[0, channels\] = \[0, 4\], not 5"),
    (lambda: AdderLRScaler(torch.nn.Linear(1, 1), eta=0), "eta must be a positive number"),
])
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_wrong_input_shape():
    with pytest.raises(ValueError, match=r"input must have shape \[N, 3, H, W\]"):
        AdderConv2d(3, 2, 3)(torch.zeros(1, 2, 5, 5))
    with pytest.raises(ValueError, match=r"input must have shape \[N, 9, H, W\]"):
        Shift2d(9)(torch.zeros(1, 8, 5, 5))


# Training smoke tests -----------------------------------------------------------------------

def _train(model, steps, lr, scaler=None, optimizer="adam"):
    torch.manual_seed(0)
    x = torch.randn(64, 1, 6, 6)
    target = torch.randint(0, 3, (64,))
    opt = (torch.optim.Adam(model.parameters(), lr=lr) if optimizer == "adam"
           else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9))
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), target)
        loss.backward()
        if scaler is not None:
            scaler.scale_grads()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("kind", ["shift_q", "shift_ps", "adder", "shift2d"])
def test_training_reduces_loss(kind):
    torch.manual_seed(1)
    nn = torch.nn
    scaler = None
    if kind.startswith("shift_"):
        mode = kind[-1] if kind == "shift_q" else "ps"
        model = nn.Sequential(ShiftConv2d(1, 8, 3, padding=1, mode=mode), nn.ReLU(),
                              nn.Flatten(), ShiftLinear(8 * 36, 3, mode=mode))
        # A PS shift must move by 1/2 before its rounded weight changes.
        lr = 0.01 if mode == "q" else 0.1
    elif kind == "adder":
        model = nn.Sequential(AdderConv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8),
                              nn.ReLU(), nn.Flatten(), AdderLinear(8 * 36, 3, bias=False),
                              nn.BatchNorm1d(3))
        scaler = AdderLRScaler(model)
        lr = 0.01
    else:
        model = nn.Sequential(nn.Conv2d(1, 9, 1), Shift2d(9), nn.ReLU(), nn.Conv2d(9, 4, 1),
                              nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 3))
        lr = 0.01
    losses = _train(model, 30, lr, scaler)
    assert losses[-1] < 0.8 * losses[0], losses
