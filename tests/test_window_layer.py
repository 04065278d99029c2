"""Window runs (interface 2.3) in the host's layer, packers and emulator, without a simulator.

The results are compared with :mod:`mulfree.params.window_golden` (max, sum and depthwise
from their definitions, checked there against torch) followed by the layer golden model's
post-processing and fused tail — never with the emulator's own numbers: the emulator's
beats, unpacked, must equal that golden; ``expected_beats`` too. Also: the descriptor's
window flags, the WEIGHTS layout of a depthwise run (built here from the spec's formula),
every rule of ``check_layer`` with its parameter and core error in the core's order, the
emulator stopping on the same descriptors with the same code, OVERRUN for weights sent to a
max run, REUSE across window kinds, ``TERMS`` and a chain of window runs through the banks.
"""

from dataclasses import replace

import numpy as np
import pytest

from mulfree.params.config import ArrayConfig, int_range
from mulfree.params.core_config import DESC_FLAGS, CoreConfig
from mulfree.params.layer_golden import (PostParams, ResidualParams, conv2d_acc, fused_tail,
                                         postprocess, shortcut_source)
from mulfree.params.window_golden import avgpool_post_shift, window_acc
from mulfree.host import layer_stream as ls
from mulfree.host import stream_pack
from mulfree.host.bank_state import BankState
from mulfree.host.stream_format import (descriptor_words_unchecked, pack_vector,
                                        unpack_vector, vector_beats)


ENGINE = ArrayConfig(pe="shift", rows=4, cols=4, act_bits=6, weight_bits=5, max_k=64)
CFG = CoreConfig(ENGINE, stream_width=64, shortcut_vectors=256, pool_pixels=64,
                 fmap_vectors=512, weight_rows=512, acc_entries=64, max_channels=64)
#: Three engines: a depthwise run on each (the adder's padding adds -|w|; the mult folded).
MULTI = CoreConfig(ENGINE, extra_engines=(
    ArrayConfig(pe="adder", rows=4, cols=4, act_bits=6, max_k=64),
    ArrayConfig(pe="mult", rows=4, cols=4, act_bits=6, weight_bits=4, max_k=64)),
    engine_cols=(4, 4, 2), stream_width=32, shortcut_vectors=256, pool_pixels=64)
NO_LANES = replace(CFG, window_ops=False)


def codes(rng, e, shape):
    if e.pe == "shift":
        return rng.integers(0, 1 << e.code_width, shape)
    return rng.integers(e.weight_range[0], e.weight_range[1] + 1, shape)


def window(rng, kind, c=6, h=5, w=7, kernel=3, cfg=CFG, engine=0, **kw):
    """A window run of ``kind`` on a random ``(c, h, w)`` map with random post-processing."""
    e = cfg.engines[engine]
    lo, hi = e.act_range
    kh, kw_ = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = rng.integers(lo, hi + 1, (c, h, w))
    wc = codes(rng, e, (c, 1, kh, kw_)) if kind == "depthwise" else np.zeros((c, 1, kh, kw_),
                                                                            np.int64)
    post = PostParams(rng.integers(-20, 20, c), rng.integers(0, 4, c), rng.random(c) < .5)
    kw.setdefault("padding", 1)
    return ls.Layer(x, wc, post, window=kind, engine=engine, **kw)


def gold(cfg, layer):
    """``window_acc`` of the golden model (a convolution's ``conv2d_acc``), post-processing
    and the fused tail."""
    wc = np.asarray(layer.w_codes)
    acc = conv2d_acc(cfg.engines[layer.engine], layer.x, wc, layer.stride, layer.padding) \
        if layer.window is None else window_acc(cfg.engines[layer.engine], layer.window, layer.x, wc.shape[2:],
                     layer.stride, layer.padding,
                     wc[:, 0] if layer.window == "depthwise" else None)
    lanes = int_range(cfg.acc_width) if layer.window in ("max", "sum") else None
    out = np.moveaxis(postprocess(cfg.post_engine, np.moveaxis(acc, 0, -1), layer.post,
                                  acc_range=lanes), -1, 0)
    short = None if layer.residual is None else shortcut_source(
        layer.shortcut, out.shape[0], layer.residual.stride, layer.residual.offset)
    return fused_tail(cfg.engine.act_bits, out, shortcut=short, residual=layer.residual,
                      clamp=layer.clamp, pool=layer.pool)


def run(cfg, layer, state=None):
    beats = ls.emulate_core(cfg, ls.pack_layer(cfg, layer), state=state)
    want = gold(cfg, layer)
    assert np.array_equal(ls.expected_output(cfg, layer), want)
    if layer.quiet:
        assert beats == []
        return want
    assert np.array_equal(ls.unpack_results(cfg, layer, beats), want)
    assert beats == ls.expected_beats(cfg, layer)
    return want


SHAPES = [dict(), dict(c=4, kernel=2, stride=2, padding=0), dict(c=9, kernel=(3, 2),
                                                                  stride=(2, 1), padding=(1, 1)),
          dict(c=3, h=6, w=6, kernel=3, stride=3, padding=1, m_block=5),
          dict(c=5, h=1, w=9, kernel=(1, 3), padding=(0, 1), m_block=4)]


@pytest.mark.parametrize("kind", ["max", "sum", "depthwise"])
@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_window_runs_equal_the_golden_model(kind, shape):
    rng = np.random.default_rng(shape)
    run(CFG, window(rng, kind, **SHAPES[shape]))


def test_max_and_sum_on_an_adder_core():
    """An AdderNet engine's own sums are <= 0, a max or sum run's lanes any value: positive
    maxima and sums are post-processed like any acc_width-bit value."""
    cfg = CoreConfig(ArrayConfig(pe="adder", rows=4, cols=4, act_bits=6, max_k=64),
                     pool_pixels=64)
    rng = np.random.default_rng(30)
    for kind in ("max", "sum", "depthwise"):
        layer = window(rng, kind, cfg=cfg)
        assert kind == "depthwise" or gold(cfg, layer).max() > 0
        run(cfg, layer)


@pytest.mark.parametrize("engine", [0, 1, 2])
def test_depthwise_on_every_engine(engine):
    """The descriptor's engine names the terms: shift, adder (padding adds -|w|), folded
    mult; and max and sum on a core of three engines."""
    rng = np.random.default_rng(10 + engine)
    run(MULTI, window(rng, "depthwise", c=7, cfg=MULTI, engine=engine))
    run(MULTI, window(rng, "max", c=7, cfg=MULTI, engine=engine, m_block=6))


def test_the_tail_after_a_window_run():
    """A residual (option A: stride 2, offset), a clamp, a global pool after window runs."""
    rng = np.random.default_rng(20)
    lo, hi = ENGINE.act_range
    res = ResidualParams(1, 0, 1, True, stride=2, offset=2)
    layer = window(rng, "depthwise", c=6, h=6, w=6, shortcut=rng.integers(lo, hi, (4, 12, 12)),
                   residual=res, clamp=(-3, 9), m_block=7)
    run(CFG, layer)
    run(CFG, window(rng, "sum", c=6, h=4, w=4, pool=2))
    run(CFG, window(rng, "max", c=6, h=4, w=4, clamp=(0, 6), pool=4, padding=0, kernel=2,
                    stride=2))


def test_avgpool_is_a_sum_with_the_shift():
    """AvgPool2d(2) of the graph (``docs/numerics.md``: round half up of the mean, shift s)
    is a sum run with PARAMS bias 0, shift ``avgpool_post_shift(2, s)``, relu 0."""
    rng = np.random.default_rng(21)
    x = rng.integers(-32, 32, (5, 6, 6))
    shift = avgpool_post_shift(2, 0)
    post = PostParams(np.zeros(5, np.int64), np.full(5, shift), np.zeros(5, bool))
    layer = ls.Layer(x, np.zeros((5, 1, 2, 2), np.int64), post, stride=2, window="sum")
    out = ls.unpack_results(CFG, layer, ls.emulate_core(CFG, ls.pack_layer(CFG, layer)))
    sums = x.reshape(5, 3, 2, 3, 2).sum(axis=(2, 4))
    assert shift == 2 and np.array_equal(out, (sums + 2) >> 2)


def test_descriptor_flags_and_counts():
    rng = np.random.default_rng(1)
    for kind, flag in (("max", "win_max"), ("sum", "win_sum"), ("depthwise", "depthwise")):
        layer = window(rng, kind)
        flags = ls.descriptor_words(CFG, layer)[4] >> 16
        assert flags == 1 << DESC_FLAGS[flag], (kind, hex(flags))
        g = ls.layer_geometry(CFG, layer)
        assert (g["K"], g["KT"], g["NT"], g["window"]) == (9, 9, 2, kind)
        assert g["counts"]["WEIGHTS"] == (18 if kind == "depthwise" else 0)
        assert g["counts"]["PARAMS"] == 6 and g["counts"]["SHIFT"] == 0
        kinds = {p.type for p in ls.pack_layer(CFG, layer)}
        assert ("WEIGHTS" in kinds) == (kind == "depthwise")
    assert ls.descriptor_words(CFG, replace(layer, window=None, w_codes=np.zeros(
        (6, 6, 3, 3), np.int64)))[4] >> 16 == 0


def test_depthwise_weights_layout():
    """WEIGHTS vector ``nt*kk + ky*kernel_w + kx``, code ``j`` the weight of channel ``nt*C +
    j`` at ``(ky, kx)``, 0 beyond out_c; the runtime's byte packer sends the same bytes."""
    rng = np.random.default_rng(2)
    layer = window(rng, "depthwise", c=6, kernel=(2, 3), padding=(1, 1))
    rows = [v for p in ls.pack_layer(CFG, layer) if p.type == "WEIGHTS"
            for v in _vectors(CFG, p)]
    c, kh, kw = CFG.engine.cols, 2, 3
    assert len(rows) == 2 * kh * kw
    wc = np.asarray(layer.w_codes)
    for nt in range(2):
        for ky in range(kh):
            for kx in range(kw):
                got = unpack_vector(rows[nt * kh * kw + ky * kw + kx], c, CFG.code_width, False)
                want = [wc[nt * c + j, 0, ky, kx] if nt * c + j < 6 else 0 for j in range(c)]
                assert list(got) == want, (nt, ky, kx)
    ints = b"".join(b"".join(int(b).to_bytes(8, "little") for b in p.beats)
                    for p in ls.pack_layer(CFG, layer))
    assert ints == b"".join(p.tobytes() for p in stream_pack.layer_packets(CFG, layer))


def _vectors(cfg, packet):
    per = cfg.beats(cfg.vector_bits[packet.type])
    out = []
    for i in range(packet.count):
        value = 0
        for k, beat in enumerate(packet.beats[1 + i * per:1 + (i + 1) * per]):
            value |= beat << (k * cfg.stream_width)
        out.append(value)
    return out


#: (what, core, kind, change, param, core error): every window rule check_layer refuses.
BAD = [
    ("window not a run", CFG, "max", dict(window="avg"), "window", None),
    ("in_c != out_c", CFG, "sum", dict(w_codes=np.zeros((5, 1, 3, 3), np.int64)), "w_codes",
     "DESCRIPTOR"),
    ("w_codes not (C, 1, kh, kw)", CFG, "sum", dict(w_codes=np.zeros((6, 6, 3, 3), np.int64)),
     "w_codes", None),
    ("a shift table", CFG, "depthwise", dict(shifts=np.zeros((6, 2), np.int64)), "shifts",
     "DESCRIPTOR"),
    ("max reusing", CFG, "max", dict(reuse_weights=True), "reuse_weights", "DESCRIPTOR"),
    ("sum reusing", CFG, "sum", dict(reuse_weights=True), "reuse_weights", "DESCRIPTOR"),
    ("max 2*pad_h > kernel_h", CFG, "max", dict(padding=(2, 1)), "pad_h", "DESCRIPTOR"),
    ("max 2*pad_w > kernel_w", CFG, "max", dict(padding=(1, 2)), "pad_w", "DESCRIPTOR"),
    ("no lane unit", NO_LANES, "depthwise", dict(), "window", "WINDOW"),
    ("kk > max_k", replace(CFG, engine=replace(ENGINE, max_k=8)), "sum", dict(), "K",
     "TOO_BIG"),
    ("depthwise rows > weight_rows", replace(CFG, weight_rows=17), "depthwise", dict(),
     "w_codes", "TOO_BIG"),
    ("out_c > max_channels", replace(CFG, max_channels=5), "max", dict(), "out_c", "TOO_BIG"),
]


@pytest.mark.parametrize("what, cfg, kind, change, param, core_error", BAD,
                         ids=[b[0] for b in BAD])
def test_check_layer_refuses(what, cfg, kind, change, param, core_error):
    base = window(np.random.default_rng(3), kind)
    with pytest.raises(ls.LayerError) as info:
        layer = replace(base, **change)
        ls.check_layer(cfg, layer)
    assert (info.value.param, info.value.core_error) == (param, core_error), str(info.value)
    assert "\n" not in str(info.value) and param in str(info.value)
    if core_error is None:
        return
    with pytest.raises(ls.CoreError, match=f"^{core_error} "):
        ls.emulate_core(cfg, [_desc(layer, ls.layer_geometry(cfg, layer), cfg=cfg)])


def _desc(layer, g, extra_flags=0, cfg=CFG):
    words = descriptor_words_unchecked(layer, g)
    words[4] |= extra_flags << 16
    return ls.Packet("DESC", 1, [0x101] + vector_beats(cfg, pack_vector(words, 32), 256))


def test_the_rules_in_the_cores_order():
    """DESCRIPTOR before ENGINE before WINDOW before RESIDENT before TOO_BIG, in check_layer
    and in the emulator; two window flags are DESCRIPTOR (only a hand-made descriptor has
    them)."""
    rng = np.random.default_rng(4)
    big = dict(m_block=CFG.acc_entries + 1)
    cases = [(NO_LANES, dict(padding=(2, 1)), "DESCRIPTOR"),
             (NO_LANES, dict(engine=1), "ENGINE"),
             (NO_LANES, dict(quiet=True), "WINDOW"),
             (NO_LANES, dict(**big), "WINDOW"),
             (CFG, dict(quiet=True, **big), "RESIDENT"),
             (CFG, dict(**big), "TOO_BIG")]
    for cfg, change, name in cases:
        layer = replace(window(rng, "max"), **change)
        with pytest.raises(ls.LayerError) as info:
            ls.check_layer(cfg, layer)
        assert info.value.core_error == name, (change, str(info.value))
        with pytest.raises(ls.CoreError, match=f"^{name} "):
            ls.emulate_core(cfg, [_desc(layer, ls.layer_geometry(cfg, layer), cfg=cfg)])
    layer = window(rng, "sum")
    for other in ("win_max", "depthwise"):
        with pytest.raises(ls.CoreError, match="^DESCRIPTOR .*more than one window flag"):
            ls.emulate_core(CFG, [_desc(layer, ls.layer_geometry(CFG, layer),
                                        1 << DESC_FLAGS[other])])


def test_weights_sent_to_a_max_run_overrun():
    rng = np.random.default_rng(5)
    layer = window(rng, "max")
    dw = window(rng, "depthwise")
    packets = ls.pack_layer(CFG, layer)
    weights = [p for p in ls.pack_layer(CFG, dw) if p.type == "WEIGHTS"]
    with pytest.raises(ls.CoreError, match="^OVERRUN .*WEIGHTS"):
        ls.emulate_core(CFG, packets[:2] + weights + packets[2:])


def test_reuse_compares_the_window_flags():
    """A depthwise run reuses a depthwise run's weights (same engine, rows, out_c); a
    convolution's weights, even of the same rows, are REUSE, and so are a depthwise run's
    for a convolution."""
    rng = np.random.default_rng(6)
    dw = window(rng, "depthwise", c=4, kernel=2, padding=0)         # 1 tile x 4 = 4 rows
    state = ls.CoreState()
    run(CFG, dw, state)
    again = replace(dw, x=rng.integers(-32, 32, (4, 5, 7)), reuse_weights=True)
    run(CFG, again, state)
    # A 1x1 convolution of 4 channels on 4 outputs: 1 tile x 1 x 1 tile x 4 rows = 4 rows.
    conv = ls.Layer(dw.x, rng.integers(0, 32, (4, 4, 1, 1)), dw.post)
    assert ls.layer_geometry(CFG, conv)["wrows"] == ls.layer_geometry(CFG, dw)["wrows"] == 4
    ls.emulate_core(CFG, ls.pack_layer(CFG, conv), state=state)
    with pytest.raises(ls.CoreError, match="^REUSE .*'window': 'depthwise'.*'window': None"):
        ls.emulate_core(CFG, ls.pack_layer(CFG, again), state=state)
    # check_layer, told the previous run's layer, says the same.
    ls.check_layer(CFG, again, previous=dw)
    for previous, param in ((conv, "window 'depthwise' (loaded: None)"),
                            (replace(dw, engine=0, w_codes=np.zeros((4, 1, 3, 3), np.int64),
                                     padding=1), "weight rows 4 (loaded: 9)")):
        with pytest.raises(ls.LayerError) as info:
            ls.check_layer(CFG, again, previous=previous)
        assert (info.value.param, info.value.core_error) == ("reuse_weights", "REUSE")
        assert param in str(info.value), str(info.value)
    run(CFG, dw, state)
    with pytest.raises(ls.CoreError, match="^REUSE "):
        ls.emulate_core(CFG, ls.pack_layer(CFG, replace(conv, reuse_weights=True)),
                        state=state)


def test_terms_grow_by_the_lanes():
    """TERMS: C per vector the lane unit takes (NT*kk*M of them), rows*cols per vector of a
    convolution (NT*KT*M)."""
    rng = np.random.default_rng(7)
    state = ls.CoreState()
    layer = window(rng, "sum", c=6, h=5, w=7)          # NT 2, kk 9, M 35
    ls.emulate_core(CFG, ls.pack_layer(CFG, layer), state=state)
    assert state.terms == 2 * 9 * 35 * 4
    conv = ls.Layer(layer.x, rng.integers(0, 32, (6, 6, 3, 3)), layer.post, padding=1)
    ls.emulate_core(CFG, ls.pack_layer(CFG, conv), state=state)
    assert state.terms == 2 * 9 * 35 * 4 + 2 * 18 * 35 * 16


def test_a_chain_of_window_runs_through_the_banks():
    """conv (keep, quiet) -> 2x2 max pool of its output from bank 1 (keep, quiet) ->
    depthwise from bank 0 adding the conv's output (stride 2) from bank 1 in place (keep) ->
    sum from bank 1: every output equals the golden chain's; the emulator computes from the
    banks' contents (a depthwise run given a wrong x and shortcut answers the right beats)."""
    rng = np.random.default_rng(8)
    lo, hi = ENGINE.act_range
    x0 = rng.integers(lo, hi + 1, (6, 6, 6))
    conv = ls.Layer(x0, rng.integers(0, 32, (6, 6, 3, 3)),
                    PostParams(rng.integers(-9, 9, 6), np.full(6, 4), True), padding=1,
                    keep=True, quiet=True)
    banks, state = BankState(), ls.CoreState()
    y1 = run(CFG, conv, state)
    banks.after(conv, True)
    pool = replace(window(rng, "max", kernel=2, padding=0, stride=2), x=y1, in_bank=1,
                   acts_resident=True, keep=True, quiet=True)
    ls.check_layer(CFG, pool, banks=banks)
    y2 = run(CFG, pool, state)
    banks.after(pool, True)
    dw = replace(window(rng, "depthwise", h=3, w=3), x=y2, acts_resident=True, keep=True,
                 short_resident=True, shortcut=y1,
                 residual=ResidualParams(1, 0, 1, True, stride=2))
    ls.check_layer(CFG, dw, banks=banks)
    state2 = ls.CoreState()
    for layer in (conv, pool):
        ls.emulate_core(CFG, ls.pack_layer(CFG, layer), state=state2)
    y3 = run(CFG, dw, state)
    banks.after(dw, True)
    wrong = replace(dw, x=np.zeros_like(y2), shortcut=np.zeros_like(y1))
    assert ls.emulate_core(CFG, ls.pack_layer(CFG, wrong), state=state2) == \
        ls.expected_beats(CFG, dw)
    last = replace(window(rng, "sum", h=3, w=3), x=y3, in_bank=1, acts_resident=True)
    ls.check_layer(CFG, last, banks=banks)
    run(CFG, last, state)
    assert banks.shapes == state.banks.shapes == [(6, 3, 3), (6, 3, 3)]


def test_random_window_runs():
    """60 random window runs (kind, engine, channels, map, kernel, stride, padding, block,
    tail) on the three-engine core: the emulator's beats equal the golden model's, and every
    layer check_layer refuses is refused by the emulator with the same code."""
    rng = np.random.default_rng(40)
    refused = 0
    for i in range(60):
        kind = ["max", "sum", "depthwise"][i % 3]
        kh, kw_ = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        kw = dict(c=int(rng.integers(1, 10)), h=int(rng.integers(kh, 7)),
                  w=int(rng.integers(kw_, 7)), kernel=(kh, kw_),
                  stride=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
                  padding=(int(rng.integers(0, kh)), int(rng.integers(0, kw_))),
                  m_block=int(rng.integers(1, 20)), engine=int(rng.integers(0, 3)))
        if rng.random() < .3:
            kw["clamp"] = (-5, 10)
        if rng.random() < .2:
            kw["pool"] = 2
        layer = window(rng, kind, cfg=MULTI, **kw)
        try:
            ls.check_layer(MULTI, layer)
        except ls.LayerError as exc:
            refused += 1
            with pytest.raises(ls.CoreError, match=f"^{exc.core_error} "):
                ls.emulate_core(MULTI, [_desc(layer, ls.layer_geometry(MULTI, layer), cfg=MULTI)])
            continue
        run(MULTI, layer)
    assert 0 < refused < 20, refused
