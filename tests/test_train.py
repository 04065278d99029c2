"""Tests of :mod:`mulfree.host.train` and ``mulfree train``: data, models, reproducibility, CLI.

Fast only: one-epoch trainings. The real accuracies are measured by ``mulfree train``.
"""

import numpy as np
import pytest

import torch
import sklearn  # noqa: F401 -- a dev dependency: missing, the suite fails
import tqdm  # noqa: F401 -- a dev dependency: missing, the suite fails

from torch import nn

from mulfree.host import train
from mulfree.host.layers import AdderConv2d, AdderLinear, Shift2d, ShiftConv2d, ShiftLinear


WEIGHT_LAYERS = (ShiftLinear, ShiftConv2d, AdderLinear, AdderConv2d)
ALLOWED = WEIGHT_LAYERS + (nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, nn.Flatten, nn.MaxPool2d,
                           Shift2d, nn.Dropout)


@pytest.fixture(scope="module")
def data():
    return train.digits_split()


def test_split_shapes_and_values(data):
    assert data["x_train"].shape == (1437, 1, 8, 8)
    assert data["x_test"].shape == (360, 1, 8, 8)
    assert data["y_train"].shape == (1437,) and data["y_test"].shape == (360,)
    assert data["x_train"].dtype == np.float32 and data["y_train"].dtype == np.int64
    for x in (data["x_train"], data["x_test"]):
        assert x.min() == 0 and x.max() <= 1
        # pixel * 1/16 with integer pixels 0..16: exact on the 2^-4 grid
        assert np.array_equal(x * 16, np.round(x * 16))
    # stratified: every class in the test split, in proportion
    counts = np.bincount(data["y_test"], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37


def test_split_is_deterministic(data):
    again = train.digits_split(seed=0)
    for key in data:
        assert np.array_equal(data[key], again[key]), key
    other = train.digits_split(seed=1)
    assert not np.array_equal(data["y_test"], other["y_test"])


SEQUENTIAL_MODELS = [n for n in train.MODELS if not n.startswith("resnet8")]


@pytest.mark.parametrize("name", SEQUENTIAL_MODELS)
def test_model_builds_and_runs(name, data):
    model = train.build_model(name)
    assert isinstance(model, nn.Sequential)
    previous = None
    for i, m in enumerate(model):
        assert isinstance(m, ALLOWED), f"{name}[{i}] is {type(m).__name__}"
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            assert isinstance(previous, WEIGHT_LAYERS), f"{name}[{i}]: BN not after a weight layer"
        if isinstance(m, nn.MaxPool2d):
            assert m.kernel_size in (2, (2, 2)) and m.stride in (2, (2, 2))
        previous = m
    assert any(isinstance(m, WEIGHT_LAYERS) for m in model)
    model.eval()
    with torch.no_grad():
        y = model(torch.as_tensor(data["x_test"][:5]))
    assert y.shape == (5, 10) and torch.isfinite(y).all()


@pytest.mark.parametrize("name,kinds", [
    ("resnet8_shift", {"ShiftConv2d", "ShiftLinear"}),
    ("resnet8_adder", {"Conv2d", "AdderConv2d", "Linear"}),
    ("resnet8_shiftadd", {"Conv2d", "ShiftConv2d", "AdderConv2d", "Linear"})])
def test_residual_models_are_resnet8_in_each_form(name, kinds):
    from mulfree.host.models import RESNET8_WIDTHS, model_data
    model = train.build_model(name)
    weights = [m for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear, ShiftConv2d, AdderConv2d, ShiftLinear))]
    assert {type(m).__name__ for m in weights} == kinds
    # The AdderNet and ShiftAddNet forms keep the first convolution and the classifier.
    if name != "resnet8_shift":
        assert type(model.conv1) is nn.Conv2d and type(model.fc) is nn.Linear
    x = torch.as_tensor(model_data(name)["x_test"][:3])
    assert x.shape == (3, 1, 16, 16)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (3, 10)
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, ShiftConv2d, AdderConv2d))]
    assert max(m.out_channels for m in convs) == RESNET8_WIDTHS[-1]
    # Every BatchNorm after an adder layer is found through the residual graph.
    pairs = train.weight_bn_pairs(model, x[:2])
    adders = [m for m in model.modules() if isinstance(m, AdderConv2d)]
    assert {id(a) for a, _ in pairs} >= {id(a) for a in adders}


def test_adder_models_put_bn_after_every_adder_layer():
    for name in ("adder_cnn", "shiftadd_cnn"):
        model = train.build_model(name)
        for i, m in enumerate(model):
            if isinstance(m, (AdderLinear, AdderConv2d)):
                assert isinstance(model[i + 1], (nn.BatchNorm1d, nn.BatchNorm2d)), (name, i)


def test_shiftadd_is_shift_then_adder():
    kinds = [type(m) for m in train.build_model("shiftadd_cnn")
             if isinstance(m, (ShiftConv2d, AdderConv2d))]
    assert kinds == [ShiftConv2d, AdderConv2d] * (len(kinds) // 2)


def test_unknown_model_is_refused():
    with pytest.raises(ValueError, match="model must be one of"):
        train.build_model("resnet")
    with pytest.raises(ValueError, match="epochs must be"):
        train.train_model("deepshift_mlp", epochs=0)


@pytest.mark.parametrize("name", ["deepshift_mlp", "shiftadd_cnn"])
def test_training_is_reproducible(name, data):
    small = {k: v[:200] if k.endswith("train") else v[:50] for k, v in data.items()}
    state = torch.random.get_rng_state()
    threads = torch.get_num_threads()
    a, ma = train.train_model(name, epochs=1, seed=3, progress=False, data=small)
    # The caller's thread count does not reach the weights (training uses TRAIN_THREADS).
    torch.set_num_threads(2 if threads == 1 else 1)
    try:
        b, mb = train.train_model(name, epochs=1, seed=3, progress=False, data=small)
        assert torch.get_num_threads() == (2 if threads == 1 else 1)    # restored
    finally:
        torch.set_num_threads(threads)
    c, _ = train.train_model(name, epochs=1, seed=4, progress=False, data=small)
    # the caller's random state is left alone
    assert torch.equal(state, torch.random.get_rng_state())
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key
    assert any(not torch.equal(sa[k], sc[k]) for k in sa if sa[k].is_floating_point())
    assert ma["float_accuracy"] == mb["float_accuracy"]
    assert {"model", "seed", "epochs", "float_accuracy", "seconds"} <= ma.keys()
    assert not a.training
    for bn in train._adder_bns(a):
        assert bn.weight.min() >= train._MIN_ADDER_BN_SCALE


@pytest.mark.parametrize("argv, message", [
    (["--model", "resnet"], "--model must be one of"),
    (["--epochs", "0"], "--epochs must be in 1..10000, not 0"),
    (["--seed", "-1"], "--seed must be in 0..4294967295, not -1"),
    (["--epochs", "two"], "--epochs"),
])
def test_cli_bad_input(argv, message, tmp_path, capsys, run_main):
    status, out, err = run_main(["train", *argv, "-o", str(tmp_path)], capsys)
    assert status == 2
    assert err.count("\n") == 1 and message in err, err
    assert out == ""
    assert list(tmp_path.iterdir()) == []


def test_cli_train_writes_metrics(tmp_path, capsys, monkeypatch, run_main):
    import json
    monkeypatch.setattr(train, "_quant_module", lambda: None)
    status, out, err = run_main(["train", "--model", "deepshift_mlp", "--epochs", "1",
                                 "-o", str(tmp_path)], capsys)
    assert status == 0, err
    assert "not available: float metrics only" in out
    assert "deepshift_mlp: float accuracy" in out
    metrics = json.loads((tmp_path / "deepshift_mlp" / "metrics.json").read_text())
    assert metrics["epochs"] == 1 and metrics["seed"] == 0
    assert 0 <= metrics["float_accuracy"] <= 1
    assert "int_accuracy" not in metrics and "not run" in metrics["quantized"]


def test_cli_train_exports_when_quant_is_there(tmp_path, capsys, run_main):
    import json
    from mulfree.host.export_format import load_export
    status, out, err = run_main(["train", "--model", "deepshift_mlp", "--epochs", "1",
                                 "--seed", "2", "-o", str(tmp_path)], capsys)
    assert status == 0, err
    assert "integer" in out and "golden" in out
    folder = tmp_path / "deepshift_mlp"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["seed"] == 2
    for key in ("float_accuracy", "int_accuracy", "golden_accuracy"):
        assert 0 <= metrics[key] <= 1
    # int_forward is bit-exact with the golden model
    assert metrics["int_golden_agreement"] == 1.0
    assert load_export(folder).output == "argmax"


def test_snap_bn_scales_gives_powers_of_two():
    torch.manual_seed(0)
    model = train.build_model("adder_cnn")
    for m in model:
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean.uniform_(-50, -5)
            m.running_var.uniform_(1, 400)
            m.weight.data.uniform_(0.3, 2)
    means = [m.running_mean.clone() for m in model if isinstance(m, nn.BatchNorm2d)]
    snapped = train.snap_bn_scales(model)
    assert len(snapped) == 3
    for bn in snapped:
        s = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double()
        assert torch.allclose(torch.exp2(torch.round(torch.log2(s))), s, rtol=1e-6)
    # running statistics are untouched: the output stays centred on beta
    assert all(torch.equal(a, m.running_mean)
               for a, m in zip(means, [m for m in model if isinstance(m, nn.BatchNorm2d)]))


def test_long_training_ends_with_power_of_two_bn(data):
    small = {k: v[:128] if k.endswith("train") else v[:20] for k, v in data.items()}
    model, metrics = train.train_model("deepshift_cnn", epochs=4, seed=0, progress=False,
                                       data=small)
    assert metrics["pow2_bn_epochs"] == 1
    for m in model:
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            s = (m.weight / torch.sqrt(m.running_var + m.eps)).detach().double()
            assert torch.allclose(torch.exp2(torch.round(torch.log2(s.abs()))), s.abs(),
                                  rtol=1e-6)
