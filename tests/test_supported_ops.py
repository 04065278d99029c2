"""Tests of ``docs/supported_ops.md`` (:mod:`mulfree.host.ops_table`): the document is the
rendering of the code's registries, every rule and node kind has a row, and a sample of the
rows' claims hold: what a row refuses, ``quantize`` refuses in one line naming the node; what
it runs on the core, ``compile_model`` (as ``mulfree compile`` calls it) makes a core run or
fuses into one; what it runs on the host, the program computes on the host (a weight layer
of another PE kind only with ``host_fallback``). No simulator: the programs are only
compiled."""

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mulfree.host import capture_registry as registry
from mulfree.host import ops_table
from mulfree.host.compiler import CompileError, compile_model, core_for_model
from mulfree.host.layers import AddressShift2d, ChannelShift, Shift2d, ShiftConv2d
from mulfree.host.quant import QuantizeError, quantize
from mulfree.host.steps import CoreStep, FusedStep, HostStep
from mulfree.params.int_layers import LAYER_KINDS


pytestmark = pytest.mark.usefixtures("one_torch_thread")

from test_capture import Fn  # noqa: E402 -- the capture tests' one-function model

DOC = Path(__file__).resolve().parents[1] / "docs" / "supported_ops.md"


def _rows():
    return {r.key: r for r in ops_table.capture_rows() + ops_table.refusal_rows()
            + ops_table.node_rows() + ops_table.numeric_rows()}


# The document -----------------------------------------------------------------------------

def test_the_document_is_the_rendering():
    assert DOC.read_text() == ops_table.render(), \
        "docs/supported_ops.md differs from the code: python -m mulfree.host.ops_table " \
        "docs/supported_ops.md"


def test_every_rule_target_and_node_kind_has_a_row():
    rules = {r for _, r, _ in registry.MODULE_OPS} | set(registry.FUNCTION_OPS.values()) \
        | set(registry.METHOD_OPS.values())
    assert rules == set(registry.RULES)
    text = " ".join(r.what for r in ops_table.capture_rows())
    names = [registry.module_name(t) for ts, _, _ in registry.MODULE_OPS for t in ts] \
        + [registry.function_name(f) for f in registry.FUNCTION_OPS] \
        + [f"x.{m}()" for m in registry.METHOD_OPS]
    assert [n for n in names if f"`{n}`" not in text] == []
    assert [r.key for r in ops_table.capture_rows() if not r.what] == []
    kinds = {r.node for r in ops_table.node_rows()}
    assert kinds == set(LAYER_KINDS)


def test_main_writes_and_refuses(tmp_path, capsys):
    out = tmp_path / "ops.md"
    assert ops_table.main([str(out)]) == 0
    assert out.read_text() == ops_table.render()
    assert ops_table.main([str(tmp_path)]) == 2
    assert ops_table.main(["a", "b"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "OUTPUT" in err[0] and "usage" in err[1]


# Refused ----------------------------------------------------------------------------------

def _conv(cin=4, cout=4, **kw):
    torch.manual_seed(0)
    return nn.Conv2d(cin, cout, 3, **{"padding": 1, **kw})


X = torch.randn(8, 4, 8, 8)

#: row key -> (model, a fragment of the message, the node's target named in it)
REFUSED = {
    "other": (Fn(lambda s, x: torch.sigmoid(s.c(x)), c=_conv()), "is not supported",
              "torch.sigmoid"),
    "other/module": (nn.Sequential(_conv(), nn.GELU()), "is not supported", "GELU"),
    "conv-bad": (Fn(lambda s, x: s.c(x), c=_conv(dilation=2, padding=2)), "dilation=1",
                 "Conv2d"),
    "get_attr": (Fn(lambda s, x: F.conv2d(s.c(x), s.c.weight), c=_conv()),
                 "is a parameter or buffer", "c_weight"),
    "maxpool": (nn.Sequential(_conv(), nn.MaxPool2d(2, ceil_mode=True), nn.Flatten()),
                "ceil_mode False", "MaxPool2d"),
    "adaptive": (nn.Sequential(_conv(), nn.AdaptiveAvgPool2d(2)), "pools to", "AdaptiveAvg"),
    "subsample": (Fn(lambda s, x: s.c(x)[:, 0], c=_conv()), "indexes", "operator.getitem"),
    "add": (Fn(lambda s, x: s.c(x) + 1.0, c=_conv()), "adds the constant", "operator.add"),
    "concat": (Fn(lambda s, x: torch.cat([s.c(x), x], dim=2), c=_conv()), "dimension 2",
               "torch.cat"),
    "no_weights": (nn.Sequential(nn.ReLU(), nn.Flatten()), "no weight layer", ""),
}


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_a_refused_row_is_refused_in_one_line(key):
    model, fragment, target = REFUSED[key]
    row = _rows()[key.split("/")[0]]
    assert "REFUSED" in row.where or "REFUSED" in row.conditions
    with pytest.raises(QuantizeError) as info:
        quantize(model, X)
    text = str(info.value)
    assert "\n" not in text and fragment in text and target in text


# On the core and on the host --------------------------------------------------------------

def _program(model, x=X, *, host_fallback=False, **core):
    int_model = quantize(model, x)
    return compile_model(int_model, core_for_model(int_model, **core),
                         host_fallback=host_fallback)


def _placed(program):
    """``{kind: {"core", "fused", "host"}}`` over the program's steps."""
    out = {}
    for s in program.steps:
        where = "fused" if isinstance(s, FusedStep) else \
            "core" if isinstance(s, CoreStep) else "host"
        out.setdefault(s.kind, set()).add(where)
    return out


def _core_says(key, claim):
    row = _rows()[key]
    assert claim in row.where, f"{key}: {row.where!r} does not say {claim!r}"


class _Residual(nn.Module):
    """conv (stride 2) + option-A shortcut (subsample, channel pad) + ReLU6, then a global
    average pool, flatten and a classifier: every tail fused into the convolutions' runs."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.c1 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        y = self.c1(x) + F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 2, 2))
        y = F.relu6(y)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def test_core_rows_compile_to_core_runs():
    placed = _placed(_program(_Residual()))
    assert placed["conv2d"] == {"core"} and placed["linear"] == {"core"}
    for kind in ("add", "clamp", "pad", "maxpool2d", "global_avgpool", "flatten"):
        assert placed[kind] == {"fused"}, (kind, placed)
    for key in ("conv2d", "linear"):
        _core_says(key, "CORE")
    for key in ("add", "relu6", "pad", "subsample", "adaptive"):
        _core_says(key, "CORE")


def test_window_rows_run_on_the_core():
    torch.manual_seed(2)
    model = Fn(lambda s, x: s.fc(torch.flatten(s.avg(F.max_pool2d(s.dw(s.c(x)), 2)), 1)),
               c=_conv(), dw=nn.Conv2d(4, 4, 3, padding=1, groups=4),
               avg=nn.AvgPool2d(2), fc=nn.Linear(16, 3))
    program = _program(model)
    runs = [(s.kind, s.window) for s in program.steps if isinstance(s, CoreStep)]
    assert runs == [("conv2d", None), ("conv2d", "depthwise"), ("maxpool2d", "max"),
                    ("avgpool2d", "sum"), ("linear", None)]
    assert not any(isinstance(s, HostStep) for s in program.steps if s.kind != "flatten")
    for key in ("depthwise", "maxpool", "avgpool"):
        _core_says(key, "CORE")


def test_a_folded_shift2d_is_the_convolutions_shift_table():
    torch.manual_seed(3)
    model = Fn(lambda s, x: s.c(s.sh(x)).flatten(1), sh=Shift2d(4, 3),
               c=ShiftConv2d(4, 4, 1))
    program = _program(model)
    core = [s for s in program.steps if isinstance(s, CoreStep)]
    assert [s.kind for s in program.steps] == ["conv2d", "flatten"]
    assert core[0].shifts is not None
    _core_says("shift2d", "CORE (folded)")


def test_host_rows_run_on_the_host():
    torch.manual_seed(4)
    model = Fn(lambda s, x: s.c2(s.ch(s.addr(torch.cat([s.c(x), x], 1)))).flatten(1),
               c=_conv(), addr=AddressShift2d(8), ch=ChannelShift(8, 1), c2=_conv(8, 2))
    placed = _placed(_program(model))
    for kind in ("concat", "address_shift", "channel_shift"):
        assert placed[kind] == {"host"}, (kind, placed)
    for key in ("concat", "address_shift", "channel_shift"):
        assert _rows()[key].where == _rows()[f"node:{key}"].where == "HOST"
    avg3 = _placed(_program(nn.Sequential(_conv(), nn.AvgPool2d(3, 1, 1), nn.Flatten())))
    assert avg3["avgpool2d"] == {"host"}
    assert "a 3x3 average: HOST" in _rows()["node:avgpool2d"].conditions


def test_another_pe_kind_runs_on_the_host_only_with_host_fallback():
    torch.manual_seed(5)
    model = Fn(lambda s, x: s.fc(torch.flatten(s.b(s.a(x)), 1)),
               a=ShiftConv2d(4, 8, 3, padding=1), b=ShiftConv2d(8, 8, 3, padding=1),
               fc=nn.Linear(8 * 8 * 8, 3))
    int_model = quantize(model, X)
    core = core_for_model(int_model, engines="one")
    with pytest.raises(CompileError) as info:
        compile_model(int_model, core)
    text = str(info.value)
    assert "\n" not in text and "mult linear" in text and "--host-fallback" in text
    placed = _placed(compile_model(int_model, core, host_fallback=True))
    assert placed["linear"] == {"host"} and placed["conv2d"] == {"core"}
    for key in ("linear", "conv2d"):
        assert "HOST with `--host-fallback`" in _rows()[key].where
    assert "HOST with `--host-fallback`" in _rows()["node:linear"].where
    assert "--host-fallback" in _rows()["num:pe"].where
