"""Tests of the compiler (:mod:`mulfree.host.compiler`) and the byte packing
(:mod:`mulfree.host.stream_pack`), without a simulator.

A compiled program is run on the NumPy model of the core (``emulate_program``: the same runs,
packets and result bytes a device sees) and compared with the golden model of the whole
network (``run_int_model``), which shares no code with it. The byte packing is compared with
``layer_stream``'s integer packer.
"""

import numpy as np
import pytest

from random_models import conv_model, random_codes as _codes, random_post as _post

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.gen.core_manifest import core_manifest
from mulfree.host import stream_pack
from mulfree.host.compiler import (CompileError, CoreStep, compile_model, core_for_model,
                                   core_from_manifest, decode_run, emulate_program,
                                   encode_run)
from mulfree.host.export_format import IntConv2d, IntInput, IntLinear, IntModel
from mulfree.host.layer_stream import Layer, expected_beats, pack_layer
from mulfree.params.model_golden import run_int_model


def small_core(pe, **options):
    """A 4x4 core; without the lane unit unless ``window_ops=True`` (pooling on the host: the
    window runs are tests/test_compiler_window.py's)."""
    wb = {"shift": 5, "adder": None, "mult": 6}[pe]
    engine = ArrayConfig(pe=pe, rows=4, cols=4, act_bits=6, weight_bits=wb, max_k=64)
    options.setdefault("window_ops", False)
    return CoreConfig(engine=engine, stream_width=options.pop("stream_width", 64), **options)


def _inputs(model, b, seed=1):
    lo, hi = -(1 << (model.input.act_bits - 1)), (1 << (model.input.act_bits - 1)) - 1
    return np.random.default_rng(seed).integers(lo, hi + 1, (b, *model.input.shape))


@pytest.mark.parametrize("pe", ["shift", "adder", "mult"])
def test_program_equals_golden(pe):
    """The whole program on the core's NumPy model equals the network's golden model."""
    model = conv_model(3, pe)
    program = compile_model(model, small_core(pe))
    x = _inputs(model, 5)
    y = emulate_program(program, x)
    assert np.array_equal(y, run_int_model(model, x))
    assert np.ptp(y) > 0                     # not all saturated or zero: the test can fail


def test_linear_batches_are_chunked_and_packets_limited():
    """A batch larger than the feature-map buffer takes several linear runs; packets obey a
    transfer limit; results still equal the golden model."""
    model = conv_model(4, "shift")
    cfg = small_core("shift", fmap_vectors=64)         # linear: K = 20 -> 5 channel tiles
    program = compile_model(model, cfg, max_packet_bytes=256, chain="off")
    linear = [s for s in program.steps if isinstance(s, CoreStep) and s.kind == "linear"]
    assert linear[0].images_per_run == 64 // 5
    assert linear[1].images_per_run == 64 // 3                  # K = 9 -> 3 tiles
    # The convolutions stack images along the height while their input fits the 64-vector
    # buffer: layer 0 (7 channels = 2 tiles, 6x5 pixels, 1 zero row between images) holds one
    # image (60 vectors; two need 2 * 13 * 5 = 130). Layer 2 (2x1 kernel, stride (2, 1),
    # padding (1, 0)) runs as a 1x1 convolution of its patches (host/patches.py): 6 * 2 = 12
    # channels = 3 tiles, 2x2 pixels, no gap, five images (3 * 10 * 2 = 60; six need 72).
    # Without patches: 6 channels = 2 tiles, 3x2 pixels, 1 zero row between images, four
    # (2 * 15 * 2 = 60; five need 2 * 19 * 2 = 76).
    off = compile_model(model, cfg, max_packet_bytes=256, chain="off", patches="off")
    assert [s.patches is not None for s in program.core_steps[:2]] == [False, True]
    assert [s.images_per_run for s in program.core_steps[:2]] == [1, 5]
    assert [s.images_per_run for s in off.core_steps[:2]] == [1, 4]
    assert program.runs_for(30) == 30 + 6 + 3 + 2
    assert off.runs_for(30) == 30 + 8 + 3 + 2
    x = _inputs(model, 30)
    assert np.array_equal(emulate_program(program, x), run_int_model(model, x))
    assert np.array_equal(emulate_program(off, x), run_int_model(model, x))
    step = program.core_steps[0]
    packets, _, _ = encode_run(program, step, x[0], reuse=False)
    assert max(p.nbytes for p in packets) <= 256
    assert len(packets) > 5


def test_narrower_shift_codes_are_reencoded():
    """4-bit shift codes on a 6-bit core: the sign moves to the new top bit, values stay."""
    model = conv_model(5, "shift", wb=4)
    engine = ArrayConfig(pe="shift", rows=4, cols=4, act_bits=6, weight_bits=6, max_k=64)
    program = compile_model(model, CoreConfig(engine=engine))
    code = np.asarray(model.layers[0].codes)
    step = program.core_steps[0]
    assert np.array_equal(step.w_codes >> 5, code >> 3)
    assert np.array_equal(step.w_codes & 31, code & 7)
    x = _inputs(model, 2)
    assert np.array_equal(emulate_program(program, x), run_int_model(model, x))


def test_steps_and_describe():
    program = compile_model(conv_model(1, "mult"), small_core("mult"))
    kinds = [(type(s).__name__, s.kind) for s in program.steps]
    assert kinds == [("CoreStep", "conv2d"), ("HostStep", "maxpool2d"),
                     ("CoreStep", "conv2d"), ("HostStep", "flatten"),
                     ("CoreStep", "linear"), ("CoreStep", "linear")]
    text = program.describe()
    import re
    assert re.search(r"\n +0  layers\.0 +conv2d +core +\(7, 6, 5\) -> \(6, 6, 5\) +[0-9,]+ +11,340 ",
                     text), text
    assert re.search(r"\n +1  layers\.1 +maxpool2d +host +\(6, 6, 5\) -> \(6, 3, 2\) +- +- +36 ",
                     text), text
    assert "argmax" in text and "total: 4 nodes on the core" in text


def test_core_from_manifest_round_trip():
    cfg = small_core("adder", stream_width=128)
    assert core_from_manifest(core_manifest(cfg)) == cfg
    with pytest.raises(CompileError, match="kind 'array'"):
        core_from_manifest({"kind": "array", "parameters": {}})


def test_core_for_model_covers_the_model():
    model = conv_model(2, "shift")
    cfg = core_for_model(model, rows=4, cols=4)
    assert cfg.engine.pe == "shift" and cfg.engine.act_bits == 6
    assert cfg.engine.weight_bits == 4 and cfg.engine.max_k == 64      # K = 63 -> 64
    x = _inputs(model, 3)
    assert np.array_equal(emulate_program(compile_model(model, cfg), x), run_int_model(model, x))


def test_core_for_model_picks_the_kind_with_most_terms():
    """A mixed model's default core has the PE kind with the most weight terms; its widths
    come from that kind's nodes alone; the other kind's nodes need host_fallback."""
    model = conv_model(2, "shift")
    rng = np.random.default_rng(0)
    model.layers[-1] = IntLinear("adder", _codes(rng, "adder", None, 8, (9, 3)), act_bits=8,
                                 **_post(rng, "adder", 3, 9, 8))
    cfg = core_for_model(model, rows=4, cols=4, engines="one")
    assert cfg.engine.pe == "shift" and cfg.engine.act_bits == 6 and cfg.engine.max_k == 64
    assert cfg.extra_engines == ()
    # The adder layer's activations are wider than the shift layers': no adder engine.
    assert core_for_model(model, rows=4, cols=4).extra_engines == ()
    with pytest.raises(CompileError) as info:
        compile_model(model, cfg)
    assert str(info.value) == ("layers.5 (adder linear) has weights of another PE kind than "
                               "this core's shift PEs; --host-fallback (host_fallback=True) "
                               "runs it on the host")
    assert info.value.param == "layers.5.pe"
    # The adder layer alone has more terms than the rest: then the core is an adder core.
    model.layers[-1] = IntLinear("adder", _codes(rng, "adder", None, 8, (9, 2000)),
                                 act_bits=8, **_post(rng, "adder", 2000, 9, 8))
    assert core_for_model(model, rows=4, cols=4).engine.pe == "adder"


def test_core_for_model_builds_an_engine_per_kind():
    """A mixed model at one activation width gets a multi-engine core: the most-used kind is
    engine 0, the other kind (a few terms) a folded engine; every node runs on the core and the
    program equals the golden model."""
    model = conv_model(2, "shift", ab=8)
    rng = np.random.default_rng(1)
    model.layers[-1] = IntLinear("mult", _codes(rng, "mult", 6, 8, (9, 3)), act_bits=8,
                                 weight_bits=6,
                                 **_post(rng, "mult", 3, 9, 8))
    cfg = core_for_model(model, rows=4, cols=4)
    assert [e.pe for e in cfg.engines] == ["shift", "mult"]
    assert cfg.extra_engines[0].weight_bits == 6 and cfg.engine_cols == (4, 1)
    program = compile_model(model, cfg)
    steps = [s for s in program.steps if isinstance(s, CoreStep)]
    assert [s.engine for s in steps] == [0] * (len(steps) - 1) + [1]
    assert all(s.placement == "core" for s in program.steps if s.kind in ("conv2d", "linear"))
    x = _inputs(model, 3)
    assert np.array_equal(emulate_program(program, x), run_int_model(model, x))
    assert "4x4 shift + mult (1 columns, 4 passes) engines" in program.describe()
    with pytest.raises(CompileError, match="engines must be 'all' or 'one'"):
        core_for_model(model, engines="two")


def _with(model, i, **changes):
    layer = model.layers[i]
    fields = {k: getattr(layer, k) for k in layer.__dataclass_fields__}
    fields.update(changes)
    model.layers[i] = type(layer)(**fields)
    return model


@pytest.mark.parametrize("case, param, message", [
    ("pe", "layers.0.pe", r"^layers.0 \(adder conv2d\) has weights of another PE kind than "
                          r"this core's shift PEs; --host-fallback"),
    ("act_bits", "layers.0.act_bits", "has 8-bit activations; this core's are 6 bits"),
    ("weight_bits", "layers.0.weight_bits", "6-bit weight codes; this core takes at most 5"),
    ("max_k", "layers.0.K", "must be at most max_k = 32"),
    ("max_channels", "layers.0.in_c", "input channels of a layer with a shift must be at most "
                                      "max_channels = 4"),
    ("fmap", "layers.0.in_shape", "must be at most fmap_vectors = 32"),
    ("weight_rows", "layers.0.codes", "must be at most weight_rows = 64"),
    ("bias", "layers.0.bias", "is outside"),
    ("input", "input.act_bits", "input has 8-bit activations"),
])
def test_misfits_are_named(case, param, message):
    model = conv_model(7, "shift")
    cfg = small_core("shift")
    rng = np.random.default_rng(0)
    if case == "pe":
        model = IntModel(model.input, [IntConv2d("adder", _codes(rng, "adder", None, 6,
                                                                 (6, 7, 3, 3)), padding=1,
                                                 act_bits=6, **_post(rng, "adder", 6, 63, 6))])
        model.output = "none"
    elif case == "act_bits":
        for i in (0, 2, 4, 5):
            model = _with(model, i, act_bits=8)
    elif case == "weight_bits":
        model = _with(model, 0, weight_bits=6, codes=_codes(rng, "shift", 6, 6, (6, 7, 3, 3)))
    elif case == "max_k":
        cfg = CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=4, act_bits=6,
                                            weight_bits=5, max_k=32))
    elif case == "max_channels":
        cfg = small_core("shift", max_channels=4)
    elif case == "fmap":
        cfg = small_core("shift", fmap_vectors=32)          # 6 x 5 pixels x 2 tiles = 60
    elif case == "weight_rows":
        cfg = small_core("shift", weight_rows=64)           # 2 x 9 x 2 x 4 = 144 rows
    elif case == "bias":
        bias = np.array(model.layers[0].bias)
        bias[2] = 1 << 40
        model = _with(model, 0, bias=bias)
    elif case == "input":
        model.input = IntInput(model.input.shape, 8, -3)
        for i in (0, 2, 4, 5):
            model = _with(model, i, act_bits=8)
    with pytest.raises(CompileError, match=message) as info:
        compile_model(model, cfg)
    assert info.value.param == param


def test_packet_limit_too_small():
    with pytest.raises(CompileError, match="cannot hold a header and one"):
        compile_model(conv_model(1, "shift"), small_core("shift"), max_packet_bytes=8)


# Byte packing against layer_stream's integer packer -------------------------------------------

@pytest.mark.parametrize("width", [32, 64, 128, 256])
@pytest.mark.parametrize("pe", ["shift", "adder", "mult"])
def test_packets_equal_layer_stream(pe, width):
    """``encode_run`` sends the bytes of ``pack_layer``'s beats, whatever the stream width;
    ``decode_run`` reads ``expected_beats`` back to the golden output."""
    rng = np.random.default_rng(width)
    cfg = small_core(pe, stream_width=width)
    model = conv_model(width, pe)
    program = compile_model(model, cfg)
    step = program.core_steps[0]
    x = _inputs(model, 1)[0]
    for reuse in (False, True):
        packets, nbytes, layer = encode_run(program, step, x, reuse=reuse)
        ref = pack_layer(cfg, Layer(x, step.w_codes, step.post, padding=1, shifts=step.shifts,
                                    reuse_weights=reuse))
        assert [p.tobytes() for p in packets] == [
            b"".join(int(b).to_bytes(width // 8, "little") for b in p.beats) for p in ref]
        beats = expected_beats(cfg, layer)
        data = np.frombuffer(b"".join(b.to_bytes(width // 8, "little") for b in beats),
                             np.uint8)
        assert data.size == nbytes
        from mulfree.host.layer_stream import expected_output
        assert np.array_equal(decode_run(program, layer, data), expected_output(cfg, layer))
    assert rng is not None


def test_decode_refuses_bad_results():
    from mulfree.host.layer_stream import layer_geometry
    program = compile_model(conv_model(2, "shift"), small_core("shift"))
    step = program.core_steps[0]
    _, nbytes, layer = encode_run(program, step, _inputs(program.model, 1)[0], reuse=False)
    with pytest.raises(ValueError, match="not 7"):
        decode_run(program, layer, np.zeros(7, np.uint8))
    # out_c = 6 on 4 columns: lanes 2 and 3 of tile 1 must be 0. One vector is one 8-byte
    # beat here (4 lanes x 6 bits); tile 1's first vector follows the block's m_block
    # vectors of tile 0; lane 2 starts at bit 12.
    mb = layer_geometry(program.core, layer)["m_block"]
    bad = np.zeros(nbytes, np.uint8)
    bad[mb * 8 + 1] = 0x10
    with pytest.raises(ValueError, match="result lane of channel 6 >= out_c = 6"):
        decode_run(program, layer, bad)
    bad = np.zeros(nbytes, np.uint8)
    bad[7] = 0x80                                   # bit 63, above the 24-bit vector
    with pytest.raises(ValueError, match="bits set above"):
        decode_run(program, layer, bad)


def test_header_and_element_packing():
    cfg = small_core("shift", stream_width=32)
    beat = stream_pack.header_beat(cfg, "ACTS", 0x123456)
    assert int.from_bytes(beat.tobytes(), "little") == (0x123456 << 8) | 5
    with pytest.raises(ValueError, match="count must be in"):
        stream_pack.header_beat(cfg, "ACTS", 0)
    values = np.array([[-1, 2, -3], [7, -8, 0]])
    data = stream_pack.pack_elements(cfg, values, 4)
    assert data.shape == (2, 4)
    back, extra = stream_pack.unpack_elements(cfg, data, 3, 4)
    assert np.array_equal(back, values) and not extra.any()
    assert int.from_bytes(data[0].tobytes(), "little") == 0xD2F


def test_compile_cli(tmp_path, run_main, capsys):
    from mulfree.host.export_format import write_export
    write_export(conv_model(8, "adder", ab=8), tmp_path / "m")
    status, out, err = run_main(["compile", str(tmp_path / "m"), "--rows", "4", "--cols",
                                 "4"], capsys)
    assert status == 0, err
    assert "4x4 adder engine" in out and " linear " in out and " flatten " in out
    model = conv_model(8, "shift", ab=8)
    model.layers[-1] = IntLinear("adder", _codes(np.random.default_rng(0), "adder", None, 8,
                                                 (9, 3)), act_bits=8,
                                 **_post(np.random.default_rng(0), "adder", 3, 9, 8))
    write_export(model, tmp_path / "mixed")
    status, out, err = run_main(["compile", str(tmp_path / "mixed")], capsys)
    assert status == 0, err
    assert "16x16 shift + adder (4 columns, 4 passes) engines" in out
    status, out, err = run_main(["compile", str(tmp_path / "mixed"), "--engines", "one"],
                                capsys)
    assert status == 2 and err.count("\n") == 1
    assert "layers.5 (adder linear) has weights of another PE kind than this core's shift PEs; "\
           "--host-fallback" in err
    status, out, err = run_main(["compile", str(tmp_path / "nothing")], capsys)
    assert status == 2 and "MODEL" in err
