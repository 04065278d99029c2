"""Depthwise convolutions (``groups == in_channels``) of :class:`ShiftConv2d` and
:class:`AdderConv2d` against slow references written from the definitions.

A depthwise output channel ``o`` sees only input channel ``o // m`` (``m = out // in``), the
weight has PyTorch's shape ``[O, 1, kh, kw]``; the adder conv is ``-sum |x - w|`` over that
channel's zero-padded window (a padded pixel contributes ``|w|``), with AdderNet's gradients.
"""

import numpy as np
import pytest

import torch
from torch import nn
from torch.nn import functional as F

from mulfree.host.adder_layers import adder_bmm
from mulfree.host.layer_args import check_groups, conv_args
from mulfree.host.layers import AdderConv2d, ShiftConv2d, max_shift
from mulfree.params import golden


def np64(t):
    return t.detach().double().numpy()


def slow_depthwise_adder(x, w, bias, stride, padding):
    """``y[n, o, oy, ox] = -sum_{i,j} |xpad[n, o // m, oy*sy + i, ox*sx + j] - w[o, 0, i, j]|``,
    one output element at a time."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    m = o // c
    (sy, sx), (py, px) = stride, padding
    xp = np.zeros((n, c, h + 2 * py, wd + 2 * px))
    xp[:, :, py:py + h, px:px + wd] = x
    oh, ow = (h + 2 * py - kh) // sy + 1, (wd + 2 * px - kw) // sx + 1
    y = np.zeros((n, o, oh, ow))
    for b in range(n):
        for ch in range(o):
            for oy in range(oh):
                for ox in range(ow):
                    total = 0.0
                    for i in range(kh):
                        for j in range(kw):
                            total += abs(xp[b, ch // m, oy * sy + i, ox * sx + j]
                                         - w[ch, 0, i, j])
                    y[b, ch, oy, ox] = -total + (0.0 if bias is None else bias[ch])
    return y


@pytest.mark.parametrize("c,o,k,stride,padding", [
    (3, 3, 3, 1, 1), (4, 8, 3, 2, 1), (2, 6, (3, 2), (2, 1), (1, 0)), (1, 1, 3, 1, 0),
    (5, 5, 5, 2, 2),
])
def test_depthwise_adder_matches_slow_loop(c, o, k, stride, padding):
    torch.manual_seed(c * 10 + o)
    layer = AdderConv2d(c, o, k, stride, padding, groups=c)
    assert layer.weight.shape == (o, 1, *layer.kernel_size) and layer.groups == c
    x = torch.randn(2, c, 7, 6)
    y = layer(x)
    ref = slow_depthwise_adder(np64(x), np64(layer.weight), np64(layer.bias), layer.stride,
                               layer.padding)
    assert y.shape == ref.shape
    np.testing.assert_allclose(np64(y), ref, rtol=1e-5, atol=1e-5)


def test_depthwise_adder_gradients_are_adder_nets_per_channel():
    """The depthwise conv is the dense adder conv applied to each channel with its own
    filters: forward and AdderNet's gradients (``x - w``, ``HardTanh(w - x)``) agree."""
    torch.manual_seed(7)
    c, m = 3, 2
    layer = AdderConv2d(c, c * m, 3, stride=2, padding=1, groups=c, bias=False)
    x = (torch.randn(2, c, 6, 5) * 2).requires_grad_()
    r = torch.randn(2, c * m, 3, 3)
    (layer(x) * r).sum().backward()
    xs = x.detach().clone().requires_grad_()
    parts, weights = [], []
    for g in range(c):
        dense = AdderConv2d(1, m, 3, stride=2, padding=1, bias=False)
        with torch.no_grad():
            dense.weight.copy_(layer.weight[g * m:(g + 1) * m])
        weights.append(dense.weight)
        parts.append(dense(xs[:, g:g + 1]))
    (torch.cat(parts, 1) * r).sum().backward()
    torch.testing.assert_close(torch.cat([w.grad for w in weights]), layer.weight.grad)
    torch.testing.assert_close(xs.grad, x.grad)


def test_adder_bmm_and_its_gradients():
    torch.manual_seed(8)
    x = torch.randn(3, 5, 4, requires_grad=True)
    w = torch.randn(3, 2, 4, requires_grad=True)
    r = torch.randn(3, 5, 2)
    (adder_bmm(x, w) * r).sum().backward()
    xn, wn, rn = np64(x), np64(w), np64(r)
    diff = xn[:, :, None, :] - wn[:, None]                  # [g, n, o, k]
    np.testing.assert_allclose(np64(adder_bmm(x, w)), -np.abs(diff).sum(-1), rtol=1e-6)
    np.testing.assert_allclose(np64(w.grad), (diff * rn[..., None]).sum(1), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(np64(x.grad), (np.clip(-diff, -1, 1) * rn[..., None]).sum(2),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match=r"shapes \[G, N, K\] and \[G, O, K\], not "
                                         r"\(3, 5, 4\) and \(2, 2, 4\)"):
        adder_bmm(x, w[:2])


def test_depthwise_adder_padding_counts_w():
    layer = AdderConv2d(2, 2, 3, padding=1, groups=2, bias=False)
    y = layer(torch.zeros(1, 2, 4, 4))
    # Every window of a zero map, padded or not, is all zeros: -sum |w| per channel.
    np.testing.assert_allclose(np64(y[0, :, 0, 0]), -np64(layer.weight.abs().sum((1, 2, 3))),
                               rtol=1e-6)


@pytest.mark.parametrize("mode", ["q", "ps"])
@pytest.mark.parametrize("c,o", [(3, 3), (2, 4)])
def test_depthwise_shift_conv_is_grouped_conv_with_shift_weights(mode, c, o):
    torch.manual_seed(9)
    layer = ShiftConv2d(c, o, 3, stride=2, padding=1, groups=c, mode=mode)
    assert layer.groups == c
    x = torch.randn(2, c, 7, 7)
    w = layer.effective_weight()
    assert w.shape == (o, 1, 3, 3)
    p = np.log2(np.abs(np64(w)[np64(w) != 0]))
    assert np.all(p == np.round(p)) and p.min() >= -layer.max_shift and p.max() <= 0
    torch.testing.assert_close(layer(x), F.conv2d(x, w, layer.bias, 2, 1, groups=c))
    # The slow definition: output channel ch correlates input channel ch // m only.
    m = o // c
    y, xn, wn = np64(layer(x)), np64(F.pad(x, (1, 1, 1, 1))), np64(w)
    for ch in range(o):
        for oy in range(4):
            for ox in range(4):
                window = xn[:, ch // m, 2 * oy:2 * oy + 3, 2 * ox:2 * ox + 3]
                ref = (window * wn[ch, 0]).sum((1, 2)) + np64(layer.bias)[ch]
                np.testing.assert_allclose(y[:, ch, oy, ox], ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits", [3, 5])
def test_depthwise_weight_codes_keep_the_shape(bits):
    torch.manual_seed(bits)
    layer = ShiftConv2d(4, 8, 3, groups=4, weight_bits=bits)
    codes = layer.weight_codes()
    assert codes.shape == (8, 1, 3, 3)
    sign, p_hw = golden.decode_shift(codes, bits)
    np.testing.assert_array_equal(sign * (np.int64(1) << p_hw),
                                  np64(layer.effective_weight()) * 2.0 ** max_shift(bits))


def test_dense_layers_unchanged_by_groups_one():
    torch.manual_seed(3)
    a = ShiftConv2d(3, 4, 3, padding=1)
    torch.manual_seed(3)
    b = ShiftConv2d(3, 4, 3, padding=1, groups=1)
    assert a.shift.shape == (4, 3, 3, 3) and torch.equal(a.shift, b.shift)
    x = torch.randn(1, 3, 5, 5)
    assert torch.equal(a(x), b(x))
    assert "groups" not in repr(a) and "groups=3" in repr(ShiftConv2d(3, 3, 3, groups=3))


def test_depthwise_trains():
    torch.manual_seed(2)
    model = nn.Sequential(AdderConv2d(2, 4, 3, padding=1, groups=2, bias=False),
                          nn.BatchNorm2d(4), nn.ReLU(),
                          ShiftConv2d(4, 4, 3, padding=1, groups=4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 25, 3))
    x, t = torch.randn(32, 2, 5, 5), torch.randint(0, 3, (32,))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), t)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("make,message", [
    (lambda: ShiftConv2d(4, 4, 3, groups=2),
     r"groups must be 1 or in_channels = 4 \(depthwise\), not 2"),
    (lambda: AdderConv2d(4, 8, 3, groups=8),
     r"groups must be 1 or in_channels = 4 \(depthwise\), not 8"),
    (lambda: AdderConv2d(4, 6, 3, groups=4),
     r"out_channels must be a multiple of in_channels = 4 for a depthwise convolution "
     r"\(groups = in_channels\), not 6"),
    (lambda: ShiftConv2d(4, 4, 3, groups=True), r"groups must be 1 or in_channels = 4"),
    (lambda: check_groups(4.0, 4, 4), r"groups must be 1 or in_channels = 4"),
    (lambda: conv_args(3, 1, 0, 1, 4, "zeros"), r"groups must be 1 \(grouped"),
])
def test_bad_groups(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_conv_args_signature_kept():
    assert conv_args(3, 1, "same", 1, 1, "zeros") == ((3, 3), (1, 1), (1, 1))
    assert conv_args(3, 2, 1, 1, 4, "zeros", in_channels=4, out_channels=8) == \
        ((3, 3), (2, 2), (1, 1))
