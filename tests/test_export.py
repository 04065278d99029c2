"""Tests of :mod:`mulfree.host.export` and ``mulfree export``: the integer export round trip,
the float-weights file (round trip and refusals) and the command line, end to end.

Fast only: tiny models, one-epoch training.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

import torch
import sklearn  # noqa: F401 -- a dev dependency: missing, the suite fails
import tqdm  # noqa: F401 -- a dev dependency: missing, the suite fails

from safetensors.torch import save_file
from torch import nn

from mulfree.flows import cli
from mulfree.host import train
from mulfree.host.export import (FLOAT_FILE, FLOAT_FORMAT, FloatWeightsError, export,
                                 identify_model, load_float, save_float)
from mulfree.host.export_format import MODEL_JSON, MODEL_TENSORS, load_export
from mulfree.host.layers import ShiftLinear
from mulfree.host.models import SHIFT_WEIGHT_BITS
from mulfree.host.shift_layers import max_shift
from mulfree.host.quant import QuantizeError, int_forward
from mulfree.params.model_golden import predict, quantize_input


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def data():
    return train.digits_split()


def _perturbed(name, seed=0):
    """A fresh demo model with random non-trivial BN statistics (no training needed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = train.build_model(name)
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


# export() ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["deepshift_mlp", "adder_cnn"])
def test_export_round_trip(name, data, tmp_path):
    model = _perturbed(name)
    x = data["x_test"][:40]
    int_model = export(model, tmp_path, torch.as_tensor(data["x_train"][:300]), act_bits=6)
    assert {p.name for p in tmp_path.iterdir()} == {MODEL_TENSORS, MODEL_JSON}
    loaded = load_export(tmp_path)
    assert loaded == int_model
    assert loaded.input.act_bits == 6 and loaded.output == "argmax"
    x_int = quantize_input(loaded, x)
    logits = int_forward(int_model, x_int)
    assert np.array_equal(predict(loaded, x_int), logits.argmax(-1).numpy())


def test_export_passes_quantize_errors_through(data, tmp_path):
    model = nn.Sequential(nn.Flatten(), ShiftLinear(64, 10, mode="q"),
                          nn.Sequential(nn.Tanh()))
    with pytest.raises(QuantizeError, match=r"model\.2\.0"):
        export(model, tmp_path / "out", torch.as_tensor(data["x_train"][:10]))
    with pytest.raises(ValueError, match="act_bits must be an integer in 2..16"):
        export(train.build_model("deepshift_mlp"), tmp_path / "out",
               torch.as_tensor(data["x_train"][:10]), act_bits=1)
    assert not (tmp_path / "out").exists()


def test_export_is_lazy_and_callable():
    # import mulfree.host stays torch-free, and mulfree.host.export is callable both ways
    code = ("import sys, mulfree.host as h; assert 'torch' not in sys.modules; "
            "e = h.export; assert callable(e) and callable(e.save_float); "
            "import mulfree.host.export as m; assert m is e is h.export; "
            "from mulfree.host import export, save_float; assert export is e")
    subprocess.run([sys.executable, "-c", code], check=True)
    import mulfree.host
    assert mulfree.host.save_float is save_float


# Float weights -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(train.MODELS))
def test_float_round_trip(name, data, tmp_path):
    model = _perturbed(name, seed=1)
    assert identify_model(model) == name
    path = tmp_path / FLOAT_FILE
    state = torch.random.get_rng_state()
    save_float(model, path)
    again = load_float(name, path)
    assert torch.equal(state, torch.random.get_rng_state())
    assert not again.training
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    x = torch.as_tensor(data["x_test"][:16])
    with torch.no_grad():
        assert torch.equal(model(x), again(x))
    # plain safetensors, no pickle: the format and the architecture are in the metadata
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"format": FLOAT_FORMAT, "model": name}


def test_save_float_refuses_other_models(tmp_path):
    with pytest.raises(ValueError, match="not one of the demo models"):
        save_float(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), tmp_path / "f.safetensors")
    with pytest.raises(ValueError, match="model is not a deepshift_cnn"):
        save_float(train.build_model("deepshift_mlp"), tmp_path / "f.safetensors",
                   name="deepshift_cnn")
    assert list(tmp_path.iterdir()) == []


def _write(path, tensors, model="deepshift_mlp", fmt=FLOAT_FORMAT):
    metadata = {k: v for k, v in (("format", fmt), ("model", model)) if v is not None}
    save_file(tensors, str(path), metadata=metadata)
    return path


@pytest.fixture
def mlp_state():
    return {k: v.clone() for k, v in train.build_model("deepshift_mlp").state_dict().items()}


def test_load_float_refusals(tmp_path, mlp_state):
    good = _write(tmp_path / "good.safetensors", mlp_state)
    load_float("deepshift_mlp", good)

    with pytest.raises(ValueError, match="model must be one of"):
        load_float("resnet", good)
    with pytest.raises(FloatWeightsError, match="no such file"):
        load_float("deepshift_mlp", tmp_path / "missing.safetensors")
    with pytest.raises(FloatWeightsError, match="not a file"):
        load_float("deepshift_mlp", tmp_path)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(good.read_bytes()[:-10])
    with pytest.raises(FloatWeightsError, match="not a readable safetensors file"):
        load_float("deepshift_mlp", corrupt)
    (tmp_path / "junk").write_bytes(b"\x80\x04 not safetensors at all")
    with pytest.raises(FloatWeightsError, match="not a readable safetensors file"):
        load_float("deepshift_mlp", tmp_path / "junk")
    with pytest.raises(FloatWeightsError, match=r"holds the weights of 'deepshift_mlp', "
                                                r"not 'deepshift_cnn'"):
        load_float("deepshift_cnn", good)
    bare = _write(tmp_path / "bare.safetensors", mlp_state, model=None, fmt=None)
    with pytest.raises(FloatWeightsError, match="not mulfree float weights"):
        load_float("deepshift_mlp", bare)


@pytest.mark.parametrize("change, message", [
    (lambda s: s.pop("5.bias"), r"lacks tensor '5\.bias' of deepshift_mlp \(1 missing\)"),
    (lambda s: s.update(extra=torch.zeros(2)), "holds tensor 'extra', which deepshift_mlp"),
    (lambda s: s.update({"1.weight": torch.zeros(64, 32)}),
     r"tensor '1\.weight' has shape \[64, 32\], deepshift_mlp needs \[64, 64\]"),
    (lambda s: s.update({"1.weight": torch.zeros(64, 64, dtype=torch.float64)}),
     r"tensor '1\.weight' has dtype torch.float64, deepshift_mlp needs torch.float32"),
    (lambda s: s["2.running_var"].__setitem__(3, float("nan")),
     r"tensor '2\.running_var' holds NaN or infinity"),
])
def test_load_float_checks_tensors(change, message, tmp_path, mlp_state):
    change(mlp_state)
    path = _write(tmp_path / "w.safetensors", mlp_state)
    with pytest.raises(FloatWeightsError, match=message) as info:
        load_float("deepshift_mlp", path)
    assert info.value.path == str(path) and str(path) in str(info.value)


# mulfree export -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``mulfree train`` of a one-epoch deepshift_mlp: its output folder."""
    folder = tmp_path_factory.mktemp("train")
    assert cli.main(["train", "--model", "deepshift_mlp", "--epochs", "1", "-o",
                     str(folder)]) == 0
    return folder / "deepshift_mlp"


def test_train_saves_float_weights(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["float_weights"] == FLOAT_FILE
    model = load_float("deepshift_mlp", trained / FLOAT_FILE)
    data = train.digits_split()
    assert train.evaluate(model, data["x_test"], data["y_test"]) == metrics["float_accuracy"]


def test_cli_export_end_to_end(trained, tmp_path, capsys, run_main):
    out_dir = tmp_path / "export"
    status, out, err = run_main(["export", "--model", "deepshift_mlp", "--float",
                                 str(trained / FLOAT_FILE), "--act-bits", "6", "-o",
                                 str(out_dir)], capsys)
    assert status == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("deepshift_mlp (6-bit activations), digits test split "
                               "(360 images): float ")
    assert "integer " in lines[0] and "golden " in lines[0]
    assert lines[1:] == []
    # the files written are status lines (logging, INFO) on stderr
    assert err.splitlines() == [f"wrote {out_dir / name}" for name in (MODEL_TENSORS, MODEL_JSON)]
    loaded = load_export(out_dir)
    assert loaded.input.act_bits == 6 and loaded.output == "argmax"
    # the printed golden accuracy is the golden model's on the loaded export
    data = train.digits_split()
    golden = np.mean(predict(loaded, quantize_input(loaded, data["x_test"])) == data["y_test"])
    assert f"golden {100 * golden:.2f}%" in lines[0]
    # the 8-bit re-export of the trained weights is what mulfree train exported
    status, out, err = run_main(["export", "--model", "deepshift_mlp", "--float",
                                 str(trained / FLOAT_FILE), "-o", str(tmp_path / "e8")],
                                capsys)
    assert status == 0, err
    assert load_export(tmp_path / "e8") == load_export(trained)


#: layers.1's accumulator width with 6-bit weights (shifts up to 30), and as trained
#: (:data:`SHIFT_WEIGHT_BITS`): each bit of shift widens it by one.
_ACC_6 = 45
_ACC_TRAINED = _ACC_6 - (max_shift(6) - max_shift(SHIFT_WEIGHT_BITS))


def _weight_bits_6(graph):
    """The trained weight_bits -> 6 with the JSON fields it derives (the biases would need
    int64)."""
    for layer in graph["layers"]:
        if layer["kind"] == "linear":
            layer.update(weight_bits=6, acc_width=layer["acc_width"]
                         + max_shift(6) - max_shift(layer["weight_bits"]))
            layer["weight_encoding"]["scale_log2"] = -max_shift(6)


@pytest.mark.parametrize("edit, message", [
    (lambda g: g["layers"][1].update(weight_bits=6),
     f"model.json: layers.1.acc_width is {_ACC_TRAINED}, but the rest of the export makes "
     f"it {_ACC_6}"),
    (_weight_bits_6, "model.json: layers.1.tensors.bias.dtype is \"int32\", but the rest of "
                     "the export makes it \"int64\""),
    (lambda g: g["layers"][2].update(out_scale_exp=g["layers"][2]["out_scale_exp"] + 1),
     "model.json was edited after export (digest mismatch); re-export it"),
    (lambda g: g["input"].update(scale_exp=5000),
     "model.json: input.scale_exp must be an integer in [-1074, 1008], not 5000"),
    (lambda g: g["input"].update(scale_exp=1e30),
     "model.json: input.scale_exp must be an integer in [-1074, 1008], not 1e+30"),
])
def test_cli_refuses_an_edited_export(edit, message, trained, tmp_path, capsys, run_main):
    """What ``mulfree train`` exported, edited by hand: ``mulfree compile`` says why in one
    line and exits 2 (the export's JSON is checked and digested like its tensors)."""
    folder = tmp_path / "edited"
    folder.mkdir()
    for name in (MODEL_JSON, MODEL_TENSORS):
        (folder / name).write_bytes((trained / name).read_bytes())
    status, out, err = run_main(["compile", str(folder)], capsys)
    assert status == 0, err
    graph = json.loads((folder / MODEL_JSON).read_text())
    edit(graph)
    (folder / MODEL_JSON).write_text(json.dumps(graph, indent=1))
    status, out, err = run_main(["compile", str(folder)], capsys)
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and message in err, err


@pytest.mark.parametrize("argv, message", [
    (["--model", "resnet"], "--model must be one of deepshift_mlp, deepshift_cnn, "
                            "adder_cnn, shiftadd_cnn, resnet8_shift, resnet8_adder, "
                            "resnet8_shiftadd, not 'resnet'"),
    (["--model", "deepshift_cnn"], "holds the weights of 'deepshift_mlp', not "
                                   "'deepshift_cnn'"),
    (["--act-bits", "1"], "--act-bits must be in 2..16, not 1"),
    (["--act-bits", "17"], "--act-bits must be in 2..16, not 17"),
    (["--act-bits", "eight"], "--act-bits"),
    (["--float", "MISSING"], "no such safetensors file"),
    (["--float", "CORRUPT"], "not a readable safetensors file"),
])
def test_cli_export_bad_input(argv, message, trained, tmp_path, capsys, run_main):
    good = str(trained / FLOAT_FILE)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"{}")
    argv = [{"MISSING": str(tmp_path / "missing.safetensors"), "CORRUPT": str(corrupt)}.get(a, a)
            for a in argv]
    full = ["export", "--model", "deepshift_mlp", "--float", good, "-o",
            str(tmp_path / "out")]
    status, out, err = run_main(full + argv, capsys)     # a repeated option replaces the first
    assert status == 2
    assert err.count("\n") == 1 and message in err, err
    if "--float" in argv:
        assert "--float " in err
    assert out == ""
    assert not (tmp_path / "out").exists()


def test_cli_export_unwritable_output(trained, tmp_path, capsys, run_main):
    blocker = tmp_path / "file"
    blocker.write_text("")
    status, out, err = run_main(["export", "--model", "deepshift_mlp", "--float",
                                 str(trained / FLOAT_FILE), "-o", str(blocker / "x")], capsys)
    assert status == 2
    assert err.count("\n") == 1 and "-o/--output" in err and "cannot be created" in err, err
