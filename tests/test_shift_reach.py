"""The shift table's reach (``CoreConfig.shift_reach``, interface 2.4), without a simulator.

A core of reach ``r`` takes SHIFT entries of ``2*(r.bit_length() + 1)`` bits with ``dy`` and
``dx`` in ``[-r, r]`` (reach 1: the 2.3 format); the register ``SHIFT_TABLE`` and the manifest
say so. The NumPy core model (``emulate_core``) equals the golden model
(:func:`~mulfree.host.stream_results.expected_output`: ``table_shift`` then the convolution)
for shifts up to the reach and refuses an entry beyond it with ``SHIFT_VALUE``. A PyTorch model
with ``Shift2d(kernel=5)`` before a convolution quantizes (the chain reader and the graph
capture fold the shift into the convolution's table), exports, and compiles onto a core whose
reach :func:`~mulfree.host.compiler.core_for_model` sizes to 2; the program equals
:func:`~mulfree.params.model_golden.run_int_model`. On a reach-1 core the convolution runs on
the host, saying why.
"""

import copy
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from manifest_docs import manifest, refused, reg

from mulfree.host import layer_stream as ls
from mulfree.host.compiler import compile_model, core_for_model, emulate_program
from mulfree.host.core_emulator import CoreError
from mulfree.host.core_layer import LayerError
from mulfree.host.export_format import load_export, write_export
from mulfree.host.layers import Shift2d, ShiftConv2d
from mulfree.host.manifest_check import as_interface_2_3, check_manifest
from mulfree.host.quant import quantize
from mulfree.host.steps import CoreStep, HostStep
from mulfree.params.config import ArrayConfig, ConfigError
from mulfree.params.core_config import SHIFT_ENTRY_BITS, CoreConfig
from mulfree.params.layer_golden import PostParams
from mulfree.params.model_golden import quantize_input, run_int_model


def core(reach, **over):
    return CoreConfig(ArrayConfig(pe="shift", rows=4, cols=3, act_bits=6, weight_bits=5,
                                  max_k=256), fmap_vectors=1024, weight_rows=512,
                      acc_entries=64, max_channels=64, shift_reach=reach, **over)


def shifted_conv(cfg, rng, *, c, h, w, out_c, kernel=1, stride=1, padding=0, m_block=None,
                 reach=None):
    e = cfg.engine
    lo, hi = e.act_range
    r = cfg.shift_reach if reach is None else reach
    return ls.Layer(x=rng.integers(lo, hi + 1, (c, h, w)),
                    w_codes=rng.integers(0, 1 << e.code_width, (out_c, c, kernel, kernel)),
                    post=PostParams(bias=rng.integers(-300, 300, out_c),
                                    shift=rng.integers(0, 6, out_c),
                                    relu=rng.integers(0, 2, out_c).astype(bool)),
                    stride=(stride, stride), padding=(padding, padding),
                    shifts=rng.integers(-r, r + 1, (c, 2)), m_block=m_block)


# The config, the register, the stream format ----------------------------------------------------

@pytest.mark.parametrize("reach, bits", [(1, 4), (2, 6), (3, 6), (4, 8), (7, 8)])
def test_entry_bits_and_register(reach, bits):
    cfg = core(reach)
    assert cfg.shift_entry_bits == bits and cfg.vector_bits["SHIFT"] == 4 * bits
    rmap = cfg.register_map
    r = next(x for x in rmap if x.name == "SHIFT_TABLE")
    assert r.offset == next(x for x in rmap if x.name == "TAPS").offset + 4
    assert r.reset == reach | bits << 8
    assert core(1).shift_entry_bits == SHIFT_ENTRY_BITS == 4


@pytest.mark.parametrize("value", [0, 8, -1, True, 2.0])
def test_reach_out_of_range_is_refused(value):
    with pytest.raises(ConfigError) as info:
        core(value)
    assert info.value.param == "shift_reach" and "[1, 7]" in str(info.value)


def test_shift_vectors_by_hand():
    """Reach 3: 6-bit entries, dy in bits [0, 3) and dx in [3, 6) of each, two's complement."""
    cfg = core(3)
    layer = shifted_conv(cfg, np.random.default_rng(0), c=5, h=4, w=4, out_c=2)
    layer = ls.Layer(**{**layer.__dict__, "shifts": np.array([[-3, 2], [3, -1], [0, 0],
                                                              [1, -3], [-2, 3]])})
    shift = next(p for p in ls.pack_layer(cfg, layer) if p.type == "SHIFT")
    vectors = [sum(b << (64 * i) for i, b in enumerate(shift.beats[1 + v:2 + v]))
               for v in range(2)]
    want = [(-3 & 7) | (2 << 3), 3 | (-1 & 7) << 3, 0, 1 | (-3 & 7) << 3]
    assert vectors[0] == sum(e << (6 * j) for j, e in enumerate(want))
    assert vectors[1] == (-2 & 7) | 3 << 3              # channel 4, then 0 beyond in_c


@pytest.mark.parametrize("reach", [1, 2, 3, 7])
def test_emulator_equals_golden(reach):
    cfg = core(reach)
    rng = np.random.default_rng(reach)
    for layer in (shifted_conv(cfg, rng, c=5, h=6, w=7, out_c=4),
                  shifted_conv(cfg, rng, c=9, h=2 * reach + 3, w=2 * reach + 2, out_c=5,
                               kernel=3, stride=2, padding=1, m_block=5),
                  shifted_conv(cfg, rng, c=3, h=3, w=2, out_c=3, kernel=2, m_block=1)):
        got = ls.emulate_core(cfg, ls.pack_layer(cfg, layer))
        assert got == ls.expected_beats(cfg, layer)
        assert np.array_equal(ls.unpack_results(cfg, layer, got),
                              ls.expected_output(cfg, layer))


def test_shifts_beyond_the_reach():
    """The host refuses the layer (naming the reach); a hand-made entry beyond it is the core
    model's SHIFT_VALUE, at every reach, for dy and dx."""
    rng = np.random.default_rng(1)
    with pytest.raises(LayerError) as info:
        ls.pack_layer(core(2), shifted_conv(core(2), rng, c=4, h=5, w=5, out_c=2, reach=3))
    assert info.value.param == "shifts" and "shift_reach 2" in str(info.value)
    for reach in (1, 2, 3, 4):
        cfg = core(reach)
        half = cfg.shift_entry_bits // 2
        for h, name in ((0, "dy"), (half, "dx")):
            packets = ls.pack_layer(cfg, shifted_conv(cfg, rng, c=4, h=5, w=5, out_c=2))
            sh = next(p for p in packets if p.type == "SHIFT")
            bad = reach + 1 if reach + 1 < 1 << (half - 1) else -(reach + 1)
            mask = ((1 << half) - 1) << (h + cfg.shift_entry_bits)       # channel 1
            sh.beats[1] = (sh.beats[1] & ~mask) | (bad << (h + cfg.shift_entry_bits) & mask)
            with pytest.raises(CoreError) as info:
                ls.emulate_core(cfg, packets)
            assert info.value.name == "SHIFT_VALUE"
            assert f"channel 1: {name} = {bad}" in str(info.value), str(info.value)


# The manifest ---------------------------------------------------------------------------------

def test_manifest_round_trip():
    cfg = core(3)
    doc = manifest(cfg)
    assert doc["parameters"]["shift_reach"] == 3 == doc["core"]["shift_reach"]
    assert doc["stream"]["shift_entry_bits"] == 6
    assert doc["core"]["buffers"]["shift_table"]["width"] == 4 * 6
    assert reg(doc, "SHIFT_TABLE")["reset"] == 3 | 6 << 8
    assert check_manifest(copy.deepcopy(doc))[1] == cfg
    # A 2.3 manifest has none of it and reads as reach 1.
    old = as_interface_2_3(manifest(core(1)))
    assert "shift_reach" not in old["parameters"] and "shift_reach" not in old["core"]
    assert all(r["name"] != "SHIFT_TABLE" for r in old["registers"]["registers"])
    assert check_manifest(old)[1].shift_reach == 1
    # Edited fields are refused by name.
    edited = copy.deepcopy(doc)
    edited["stream"]["shift_entry_bits"] = 8
    refused(edited, "stream.shift_entry_bits")
    edited = copy.deepcopy(doc)
    edited["core"]["shift_reach"] = 2
    refused(edited, "core.shift_reach")
    edited = copy.deepcopy(doc)
    edited["parameters"]["shift_reach"] = 9
    refused(edited, "parameters.shift_reach", "[1, 7]")
    edited = copy.deepcopy(doc)
    del edited["parameters"]["shift_reach"]
    refused(edited, "parameters.shift_reach")


def test_cli_shift_reach(tmp_path):
    cmd = [sys.executable, "-m", "mulfree.flows.cli", "gen", "--core", "--rows", "4", "--cols",
           "4", "-o", str(tmp_path)]
    bad = subprocess.run(cmd + ["--shift-reach", "8"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines()[-1].endswith(
        "--shift-reach must be an integer in [1, 7], not 8"), bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    good = subprocess.run(cmd + ["--shift-reach", "3"], capture_output=True, text=True)
    assert good.returncode == 0, good.stderr
    doc = check_manifest(next(iter(
        __import__("json").loads(p.read_text()) for p in tmp_path.glob("*.json"))))[1]
    assert doc.shift_reach == 3


# PyTorch to the core ----------------------------------------------------------------------------

class Net(nn.Module):
    """Conv, Shift2d(kernel=5), a 1x1 shift convolution, pooled to a classifier (not a
    Sequential: torch.fx captures it)."""

    def __init__(self):
        super().__init__()
        self.conv = ShiftConv2d(3, 8, 3, padding=1)
        self.shift = Shift2d(8, 5, group=1)
        self.pw = ShiftConv2d(8, 8, 1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.pw(self.shift(torch.relu(self.conv(x)))))
        return self.fc(y.mean((2, 3)))


def _sequential():
    return nn.Sequential(ShiftConv2d(3, 8, 3, padding=1), nn.ReLU(), Shift2d(8, 5, group=1),
                         ShiftConv2d(8, 8, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 4))


@pytest.mark.parametrize("build", [Net, _sequential], ids=["capture", "chain"])
def test_a_kernel_5_shift2d_runs_on_the_core(build, tmp_path):
    torch.manual_seed(0)
    model = build().eval()
    x = torch.randn(16, 3, 6, 6)
    im = quantize(model, x)
    kinds = [layer.kind for layer in im.layers]
    assert "shift2d" not in kinds, kinds
    shifted = [layer for layer in im.layers if getattr(layer, "shifts", None) is not None]
    assert len(shifted) == 1 and np.abs(shifted[0].shifts).max() == 2
    np.testing.assert_array_equal(shifted[0].shifts, np.asarray(model_shift(model).offsets))
    write_export(im, tmp_path)
    im = load_export(tmp_path)
    index = next(i for i, layer in enumerate(im.layers)
                 if getattr(layer, "shifts", None) is not None)
    xq = quantize_input(im, x[:3].numpy())
    golden = run_int_model(im, xq)
    assert np.ptp(golden) > 0
    cfg = core_for_model(im, rows=4, cols=4)
    assert cfg.shift_reach == 2
    program = compile_model(im, cfg)
    step = next(s for s in program.steps if s.index == index)
    assert isinstance(step, CoreStep) and np.abs(step.shifts).max() == 2
    assert np.array_equal(emulate_program(program, xq), golden)
    # A core of reach 1 runs that convolution on the host and says why.
    narrow = compile_model(im, core_for_model(im, rows=4, cols=4, shift_reach=1))
    step = next(s for s in narrow.steps if s.index == index)
    assert isinstance(step, HostStep)
    assert step.reason == "shift table reaches 2 pixels, the core's shift_reach is 1"
    assert step.name in narrow.describe() and "shift_reach is 1" in narrow.describe()
    assert np.array_equal(emulate_program(narrow, xq), golden)


def model_shift(model):
    return next(m for m in model.modules() if isinstance(m, Shift2d))
