"""Tests of core interface 2.1 in :mod:`mulfree.host.layer_stream`: multi-engine cores.

A multi-engine core (``CoreConfig.extra_engines``) runs each layer on the engine its
descriptor names (``Layer.engine``, word 7 [31:28]). The packing of a single-engine core is
checked byte for byte against digests of what interface 2.0's packers wrote (commit
35bd91c); the packing of a multi-engine core against a bit-level packing written here from
the spec (WEIGHTS slots of ``cfg.code_width`` bits holding the engine's code in the low bits,
PARAMS at the widest accumulator's widths); the emulator's results on each engine (shift,
adder, mult; a folded one too) against the golden model of the layer on that engine; every
refusal (ENGINE on host and emulator, in the core's order; the weight codes of the engine's
kind; the shortcut source map's 16-bit sizes) is one line naming its parameter.
"""

import hashlib
from dataclasses import replace

import numpy as np
import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig, DESC_FIELDS, PACKET_TYPES
from mulfree.params.golden import terms
from mulfree.params.layer_golden import PostParams, ResidualParams, conv2d_acc, postprocess
from mulfree.params.post_config import shift_width
from mulfree.host import layer_stream as ls
from mulfree.host import stream_pack
from mulfree.host.core_layer import Layer
from mulfree.host.stream_format import descriptor_words_unchecked

from test_layer_stream import random_layer, seed
from test_layer_stream_tail import _desc_beats, _stream_with


# Interface 2.0's packing, unchanged on a single-engine core -----------------------------------

# --- v2.0 cases (begin) ---
def v20_cases():
    """Single-engine cores and layers whose packing interface 2.0 fixed: ``[(name, cfg,
    layer)]``, random from fixed seeds (shift tables, residuals with strides and offsets,
    pools, reuse, several stream widths)."""
    cases = []
    engines = [ArrayConfig(pe="shift", rows=3, cols=5, act_bits=6),
               ArrayConfig(pe="adder", rows=4, cols=4, act_bits=5),
               ArrayConfig(pe="mult", rows=3, cols=5, act_bits=7, weight_bits=5),
               ArrayConfig(pe="mult", arch="tree", rows=5, cols=3, act_bits=6)]
    for i, e in enumerate(engines):
        for width in (32, 64, 128):
            rng = np.random.default_rng(1000 * i + width)
            cfg = CoreConfig(e, stream_width=width, max_channels=256)
            lo, hi = e.act_range
            in_c, out_c, size = int(rng.integers(2, 9)), int(rng.integers(2, 12)), 6
            x = rng.integers(lo, hi + 1, (in_c, size, size))
            if e.pe == "shift":
                w = rng.integers(0, 1 << e.code_width, (out_c, in_c, 3, 3))
            else:
                w = rng.integers(e.weight_range[0], e.weight_range[1] + 1, (out_c, in_c, 3, 3))
            bias = rng.integers(-50, 50, out_c)
            post = PostParams(bias, rng.integers(0, 6, out_c), rng.integers(0, 2, out_c) == 1)
            shifts = rng.integers(-1, 2, (in_c, 2)) if width != 64 else None
            short_c, stride = int(rng.integers(1, out_c + 1)), int(rng.integers(1, 3))
            offset = int(rng.integers(0, out_c - short_c + 1))
            res = ResidualParams(1, 0, 1, True, stride, offset)
            out = (size + 2 - 3) // 1 + 1
            short = rng.integers(lo, hi + 1, (short_c, out * stride, out * stride))
            base = Layer(x, w, post, padding=1, shifts=shifts, m_block=int(rng.integers(3, 20)))
            cases += [(f"{i}/{width}/plain", cfg, base),
                      (f"{i}/{width}/residual", cfg, replace(base, shortcut=short, residual=res,
                                                             clamp=(lo + 1, hi - 1))),
                      (f"{i}/{width}/pool_reuse", cfg, replace(base, pool=3,
                                                               reuse_weights=True))]
    return cases
# --- v2.0 cases (end) ---


#: SHA-256 of each type's vector beats (headers left out, types in ``PACKET_TYPES`` order) of
#: ``pack_layer`` and of ``stream_pack.layer_packets`` (``max_bytes=200``) of
#: :func:`v20_cases`: the digest of the interface-2.0 packers' vectors (computed at commit
#: c9d05cd, whose bytes were 2.0's: the digests of the whole streams, ``b2bfea5e...`` and
#: ``7bc4189e...``, held there). Interface 2.2's stream order interleaves a residual's packets
#: differently (``stream_format.stream_order``); every type's vectors stay 2.0's.
V20_DIGESTS = ("07027fff0ef8e03d08c81eae04d7e76ae7d3abaf8887f11e2e4c29321087acb2",
               "07027fff0ef8e03d08c81eae04d7e76ae7d3abaf8887f11e2e4c29321087acb2")


def _type_digest(digest, cfg, packets):
    """Update ``digest`` with the vector beats of ``packets`` (``[(type, beats bytes)]``,
    headers included) type by type."""
    bb = cfg.stream_width // 8
    for t in PACKET_TYPES:
        for kind, data in packets:
            if kind == t:
                digest.update(data[bb:])


def test_single_engine_packing_is_byte_identical_to_2_0():
    cases = v20_cases()
    assert len(cases) == 36
    beats, packed = hashlib.sha256(), hashlib.sha256()
    for name, cfg, layer in cases:
        assert cfg.code_width == cfg.engine.code_width and cfg.post_engine is cfg.engine
        bb = cfg.stream_width // 8
        _type_digest(beats, cfg, [(p.type, b"".join(b.to_bytes(bb, "little") for b in p.beats))
                                  for p in ls.pack_layer(cfg, layer)])
        types = {v: k for k, v in PACKET_TYPES.items()}
        _type_digest(packed, cfg, [(types[int(p[0, 0]) & 0xF], p.tobytes())
                                   for p in stream_pack.layer_packets(cfg, layer, max_bytes=200)])
    assert (beats.hexdigest(), packed.hexdigest()) == V20_DIGESTS


# A multi-engine core --------------------------------------------------------------------------

SHIFT = ArrayConfig(pe="shift", rows=4, cols=6, act_bits=6, weight_bits=5, max_k=128)
ADDER = ArrayConfig(pe="adder", rows=4, cols=6, act_bits=6, max_k=128)
MULT = ArrayConfig(pe="mult", rows=4, cols=6, act_bits=6, weight_bits=3, max_k=128, arch="tree")


def three_engines(width=64, cols=(), **kwargs):
    """Shift (28-bit accumulator, 5-bit codes), adder (6-bit codes: the slot), mult (3-bit
    codes in 6-bit slots); ``cols=(6, 6, 2)`` folds the mult engine."""
    return CoreConfig(SHIFT, extra_engines=(ADDER, MULT), engine_cols=cols, stream_width=width,
                      max_channels=256, shortcut_vectors=512, pool_pixels=64, **kwargs)


def engine_layer(cfg, k, rng, *args, **kwargs):
    """A random layer of engine ``k``'s kind (its codes and post-processing) on engine ``k``."""
    return replace(random_layer(cfg.engines[k], rng, *args, **kwargs), engine=k)


def test_the_core_of_the_tests():
    cfg = three_engines()
    assert cfg.code_width == 6 and cfg.acc_width == 28 and cfg.post_engine is SHIFT
    assert cfg.vector_bits["WEIGHTS"] == 6 * 6 and cfg.vector_bits["PARAMS"] == 28 + 6 + 1


def _bits(value, lo, width):
    return (value >> lo) & ((1 << width) - 1)


@pytest.mark.parametrize("k", [0, 1, 2])
def test_multi_engine_packing_bit_by_bit(k):
    """DESC word 7 [31:28] holds the engine; WEIGHTS vector ``(nt*KT + kt)*R + r`` holds in
    slot ``j`` (bits ``[6j, 6j+6)``) the code of output channel ``nt*C + j``, input channel
    ``ct*R + r`` at ``(ky, kx)`` in its low ``code_width`` bits and 0 above; PARAMS hold bias
    in 28 bits, the shift in 6, relu above; the byte packer agrees."""
    cfg = three_engines(width=32)
    rng = np.random.default_rng(seed("bits", k))
    layer = engine_layer(cfg, k, rng, 5, 4, 5, 8, (2, 3), 1, 1)
    e, R, C = cfg.engines[k], 4, 6
    packets = ls.pack_layer(cfg, layer)
    vectors = {}
    for p in packets:
        per = cfg.beats(cfg.vector_bits[p.type])
        for i in range(p.count):
            chunk = p.beats[1 + i * per:1 + (i + 1) * per]
            vectors.setdefault(p.type, []).append(
                sum(b << (32 * j) for j, b in enumerate(chunk)))
    desc = vectors["DESC"][0]
    assert _bits(desc, 7 * 32 + 28, 4) == k
    w = np.asarray(layer.w_codes)
    out_c, in_c, kh, kw = w.shape
    ct_n, nt_n = -(-in_c // R), -(-out_c // C)
    kt_n = kh * kw * ct_n
    assert len(vectors["WEIGHTS"]) == nt_n * kt_n * R
    for nt in range(nt_n):
        for kt in range(kt_n):
            ky, rest = divmod(kt, kw * ct_n)
            kx, ct = divmod(rest, ct_n)
            for r in range(R):
                vec = vectors["WEIGHTS"][(nt * kt_n + kt) * R + r]
                assert vec >> (C * 6) == 0
                for j in range(C):
                    o, c = nt * C + j, ct * R + r
                    code = int(w[o, c, ky, kx]) if o < out_c and c < in_c else 0
                    slot = _bits(vec, 6 * j, 6)
                    assert slot == code % (1 << e.code_width), (nt, kt, r, j, slot, code)
                    assert slot >> e.code_width == 0
    bias, shift = np.asarray(layer.post.bias), np.asarray(layer.post.shift)
    relu = np.broadcast_to(layer.post.relu, (out_c,))
    assert [_bits(v, 0, 28) for v in vectors["PARAMS"]] == [int(b) % (1 << 28) for b in bias]
    assert [_bits(v, 28, 6) for v in vectors["PARAMS"]] == [int(s) % 64 for s in shift]
    assert [v >> 34 for v in vectors["PARAMS"]] == [int(r) for r in relu]
    assert shift_width(cfg.post_engine) == 6
    data = b"".join(b.to_bytes(4, "little") for p in packets for b in p.beats)
    assert b"".join(p.tobytes() for p in stream_pack.layer_packets(cfg, layer)) == data


SHAPES = {
    "conv3x3_p1": dict(args=(5, 5, 4, 8, (3, 3), 1, 1)),
    "conv1x1_shift": dict(args=(7, 4, 3, 13), kwargs=dict(shifts=True, m_block=5)),
    "conv2x3_s2": dict(args=(4, 6, 7, 6, (2, 3), 2, (1, 0))),
}


@pytest.mark.parametrize("cols", [(), (6, 6, 2), (6, 3, 1)], ids=["full", "mult_c2", "folded"])
@pytest.mark.parametrize("width", [32, 128])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("k", [0, 1, 2], ids=["shift", "adder", "mult"])
def test_emulator_on_each_engine_matches_golden(k, shape, width, cols):
    """One core, a layer on each engine: the emulator (which parses the engine from the
    descriptor and reads the weight slots as that engine's codes) gives the golden output of
    the layer on that engine's PE kind, which is also ``conv2d_acc`` on the engine alone,
    post-processed."""
    cfg = three_engines(width, cols)
    rng = np.random.default_rng(seed("emu", k, shape, width))
    layer = engine_layer(cfg, k, rng, *SHAPES[shape]["args"], **SHAPES[shape].get("kwargs", {}))
    beats = ls.expected_beats(cfg, layer)
    assert ls.emulate_core(cfg, ls.pack_layer(cfg, layer)) == beats
    out = ls.expected_output(cfg, layer)
    if layer.shifts is None:
        acc = conv2d_acc(cfg.engines[k], layer.x, layer.w_codes, layer.stride, layer.padding)
        want = postprocess(cfg.engines[k], np.moveaxis(acc, 0, -1), layer.post)
        assert np.array_equal(out, np.moveaxis(want, -1, 0))


def test_the_engine_chooses_the_kind():
    """Codes valid for two kinds (small ones) run on the adder and on the mult engine give
    the terms of each kind: ``-|x - w|`` and ``x * w``; both through the emulator."""
    cfg = three_engines()
    rng = np.random.default_rng(seed("kind"))
    x = rng.integers(-32, 32, (3, 4, 4))
    w = rng.integers(-4, 4, (6, 3, 1, 1))
    post = PostParams(np.zeros(6, np.int64), np.zeros(6, np.int64))
    outs = {}
    for k in (1, 2):
        layer = Layer(x, w, post, engine=k)
        outs[k] = ls.expected_output(cfg, layer)
        assert ls.emulate_core(cfg, ls.pack_layer(cfg, layer)) == ls.expected_beats(cfg, layer)
        by_hand = terms(cfg.engines[k], x[None, :, :, :], w[:, :, 0, 0, None, None]).sum(axis=1)
        assert np.array_equal(outs[k], np.clip(by_hand, -32, 31)), k
    assert not np.array_equal(outs[1], outs[2])


def test_post_processing_takes_the_widest_accumulator():
    """A layer on the adder engine (14-bit accumulator) may have a bias of the core's 28 bits
    and a shift up to the shift engine's 29: the emulator agrees with the golden output; one
    past the core's range is refused, naming post.bias or post.shift."""
    cfg = three_engines()
    rng = np.random.default_rng(seed("post"))
    layer = engine_layer(cfg, 1, rng, 3, 3, 3, 4)
    big = PostParams(np.array([1 << 20, -(1 << 27), (1 << 27) - 1, 5]),
                     np.array([20, 29, 27, -6]), True)
    layer = replace(layer, post=big)
    assert ls.emulate_core(cfg, ls.pack_layer(cfg, layer)) == ls.expected_beats(cfg, layer)
    for bias, shift, param in (([1 << 27, 0, 0, 0], [0] * 4, "post.bias"),
                               ([0] * 4, [30, 0, 0, 0], "post.shift")):
        bad = replace(layer, post=PostParams(np.array(bias), np.array(shift)))
        with pytest.raises(ls.LayerError) as info:
            ls.check_layer(cfg, bad)
        assert info.value.param == param and "\n" not in str(info.value)


def test_weight_codes_of_the_engines_kind():
    """A mult code 3 bits wide: 4 is refused on the mult engine (naming the engine), taken
    on the adder engine; a shift code of 5 bits: 31 taken on engine 0, refused on the mult
    engine; -1, a signed code, taken on the adder engine, refused on the shift engine."""
    cfg = three_engines()
    post = PostParams(np.zeros(2, np.int64), np.zeros(2, np.int64))
    x = np.zeros((2, 2, 2), np.int64)
    for codes, good, bad in ((4, 1, 2), (-5, 1, 2), (31, 0, 2), (-1, 1, 0)):
        w = np.full((2, 2, 1, 1), codes)
        ls.check_layer(cfg, Layer(x, w, post, engine=good))
        with pytest.raises(ls.LayerError) as info:
            ls.check_layer(cfg, Layer(x, w, post, engine=bad))
        message = str(info.value)
        assert info.value.param == "w_codes" and "\n" not in message
        assert f"{cfg.engines[bad].pe} codes of engine {bad}" in message, message


# Error ENGINE ---------------------------------------------------------------------------------

def test_engine_refused_on_the_host():
    """An engine the core lacks (3 .. 15 on three engines, 1 on one) is LayerError ENGINE; an
    index the 4-bit field cannot hold is refused with no core error; the core's order:
    DESCRIPTOR first, ENGINE before TOO_BIG."""
    rng = np.random.default_rng(seed("refuse"))
    for cfg, n in ((three_engines(), 3), (CoreConfig(SHIFT), 1)):
        layer = engine_layer(cfg, 0, rng, 3, 3, 3, 4)
        for engine in (n, 15):
            with pytest.raises(ls.LayerError) as info:
                ls.check_layer(cfg, replace(layer, engine=engine))
            message = str(info.value)
            assert info.value.param == "engine" and info.value.core_error == "ENGINE"
            assert f"engine must be in [0, {n - 1}]" in message and f"not {engine}" in message
            assert "\n" not in message
        for engine in (-1, 16, 1.0, True, "1", None):
            with pytest.raises(ls.LayerError) as info:
                ls.check_layer(cfg, replace(layer, engine=engine))
            assert info.value.param == "engine" and info.value.core_error is None, engine
        bad = replace(layer, engine=n)
        with pytest.raises(ls.LayerError) as info:         # clamp out of range: DESCRIPTOR
            ls.check_layer(cfg, replace(bad, clamp=(5, 2)))
        assert info.value.core_error == "DESCRIPTOR"
        with pytest.raises(ls.LayerError) as info:         # m_block > acc_entries: TOO_BIG
            ls.check_layer(cfg, replace(bad, m_block=cfg.acc_entries + 1))
        assert info.value.core_error == "ENGINE"


def _with_engine(cfg, packets, engine):
    words = [_bits(sum(b << (cfg.stream_width * i) for i, b in enumerate(packets[0].beats[1:])),
                   32 * w, 32) for w in range(8)]
    return _stream_with(cfg, packets, 7, words[7] & 0x0FFF_FFFF | engine << 28)


def test_engine_refused_by_the_emulator():
    """The emulated core stops on a descriptor naming a missing engine with ENGINE (code 10),
    drops the loaded weights like any error (a reuse then is REUSE), and runs the next good
    layer; DESCRIPTOR wins over ENGINE, ENGINE over TOO_BIG."""
    cfg = three_engines()
    rng = np.random.default_rng(seed("emu_refuse"))
    layer = engine_layer(cfg, 1, rng, 3, 4, 4, 5)
    state = ls.CoreState()
    assert ls.emulate_core(cfg, ls.pack_layer(cfg, layer), state=state) == \
        ls.expected_beats(cfg, layer)
    assert state.loaded is not None
    packets = ls.pack_layer(cfg, layer)
    for engine in (3, 15):
        with pytest.raises(ls.CoreError, match=r"^ENGINE \(core error 10\)") as info:
            ls.emulate_core(cfg, _with_engine(cfg, packets, engine), state=state)
        assert info.value.code == 10 and info.value.name == "ENGINE"
        assert state.loaded is None
    reuse = replace(layer, reuse_weights=True)
    with pytest.raises(ls.CoreError, match="^REUSE"):
        ls.emulate_core(cfg, ls.pack_layer(cfg, reuse), state=state)
    assert ls.emulate_core(cfg, packets, state=state) == ls.expected_beats(cfg, layer)
    g = ls.layer_geometry(cfg, layer)
    for edit, name in ((dict(pad_h=3), "DESCRIPTOR"), (dict(m_block=cfg.acc_entries + 1),
                                                       "ENGINE")):
        words = descriptor_words_unchecked(replace(layer, engine=3), dict(g, **edit))
        desc = [ls.Packet("DESC", 1, [0x101] + _desc_beats(cfg, words))]
        with pytest.raises(ls.CoreError, match=f"^{name} "):
            ls.emulate_core(cfg, desc)
    # A single-engine core: any non-zero engine field.
    one = CoreConfig(SHIFT)
    plain = engine_layer(one, 0, rng, 3, 4, 4, 5)
    with pytest.raises(ls.CoreError, match="^ENGINE "):
        ls.emulate_core(one, _with_engine(one, ls.pack_layer(one, plain), 1))


def test_engine_field_is_word_7_top_bits():
    assert ("engine" in [n for _, _, _, n in DESC_FIELDS]
            and (7, 28, 4, "engine") in DESC_FIELDS)


# The shortcut source map's sizes in 16 bits ---------------------------------------------------

def _wide(out, stride, along):
    """A 1x1 layer of one channel whose output is ``out`` pixels along ``along`` ("h" or
    "w"), with a residual of stride ``stride`` (its source map ``out * stride`` along it)."""
    shape = (1, out, 1) if along == "h" else (1, 1, out)
    x = np.zeros(shape, np.int64)
    post = PostParams(np.zeros(1, np.int64), np.zeros(1, np.int64))
    short = np.zeros((1, shape[1] * stride, shape[2] * stride), np.int8)
    return Layer(x, np.zeros((1, 1, 1, 1), np.int64), post, m_block=64, shortcut=short,
                 residual=ResidualParams(stride=stride))


def test_shortcut_source_map_of_16_bits():
    """``out_w * short_stride`` of 65535 is taken, 65536 (and more) is TOO_BIG on the host,
    naming the shortcut and the sizes, and on the emulated core (its descriptor alone); the
    same sizes along ``out_h`` are taken (the setup's wide operand), as the core does."""
    cfg = CoreConfig(SHIFT, fmap_vectors=1 << 16, shortcut_vectors=1 << 16)

    def waits(layer):
        ls.check_layer(cfg, layer)
        g = ls.layer_geometry(cfg, layer)
        desc = [ls.Packet("DESC", 1, [0x101] + _desc_beats(
            cfg, descriptor_words_unchecked(layer, g)))]
        with pytest.raises(ValueError, match="ends before"):   # accepted: waits for data
            ls.emulate_core(cfg, desc)

    waits(_wide(13107, 5, "w"))                   # 65535
    for out, stride in ((32768, 2), (13108, 5), (4370, 15)):
        layer = _wide(out, stride, "w")
        with pytest.raises(ls.LayerError) as info:
            ls.check_layer(cfg, layer)
        message = str(info.value)
        assert info.value.core_error == "TOO_BIG" and info.value.param == "shortcut"
        assert f"out_w * residual.stride = {out} * {stride} = {out * stride}" in message
        assert "\n" not in message
        g = ls.layer_geometry(cfg, layer)
        desc = [ls.Packet("DESC", 1, [0x101] + _desc_beats(
            cfg, descriptor_words_unchecked(layer, g)))]
        with pytest.raises(ls.CoreError, match="^TOO_BIG .*out_w\\*short_stride"):
            ls.emulate_core(cfg, desc)
        waits(_wide(out, stride, "h"))


@pytest.mark.parametrize("k", [0, 1, 2], ids=["shift", "adder", "mult"])
def test_fused_tails_on_each_engine(k):
    """An aligned residual (offset inside a vector, stride 2) with a clamp and a shift table,
    and a pool, on each engine of a core whose mult engine is folded: the emulator equals the
    golden output."""
    from test_layer_stream_v2 import with_tail
    cfg = three_engines(64, (6, 6, 3))
    e = cfg.engines[k]
    rng = np.random.default_rng(seed("tails", k))
    layers = [with_tail(e, rng, random_layer(e, rng, 5, 8, 8, 14, (3, 3), 2, 1, shifts=True),
                        short_c=7, offset=5, stride=2, clamp=True),
              with_tail(e, rng, random_layer(e, rng, 4, 8, 8, 9, (1, 1)), pool=True)]
    for layer in layers:
        layer = replace(layer, engine=k)
        ls.check_layer(cfg, layer)
        assert ls.emulate_core(cfg, ls.pack_layer(cfg, layer)) == ls.expected_beats(cfg, layer)
