"""Taps runs (interface 2.4) in the host's layer, packers and emulator, without a simulator.

The results are compared with :func:`mulfree.params.window_golden.window_acc` (depthwise, the
same numbers as on the lane unit) followed by the layer golden model's post-processing and
clamp (``test_window_layer.gold``) — never with the emulator's own numbers. Also: the
descriptor's flags (``depthwise | taps``) and ``m_block = out_h*out_w``, the WEIGHTS layout
(built here from the spec's formula: PE ``(r, c)`` of tile ``nt`` holds ``w[nt*C + c, ky,
kx]``, ``r = ky*kernel_w + kx``), every taps rule of ``check_layer`` with its parameter and
core error in the core's order, the emulator stopping on the same descriptors with the same
code, REUSE across the taps flag, and ``TERMS`` (``rows*cols`` per emitted vector).
"""

from dataclasses import replace

import numpy as np
import pytest

from test_window_layer import _desc, codes, run

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import DESC_FLAGS, CoreConfig
from mulfree.params.layer_golden import PostParams, ResidualParams
from mulfree.host import layer_stream as ls
from mulfree.host import stream_pack
from mulfree.host.stream_format import unpack_vector


def _engine(pe, n=9, **kw):
    bits = {} if pe == "adder" else {"weight_bits": 5 if pe == "shift" else 4}
    return ArrayConfig(pe=pe, rows=n, cols=n, act_bits=6, max_k=64, **bits, **kw)


def _core(engine, **kw):
    kw = {"stream_width": 64, "fmap_vectors": 1024, "weight_rows": 512, "acc_entries": 16,
          "max_channels": 64, **kw}
    return CoreConfig(engine, **kw)


#: 9x9 cores of each PE kind: 9 tap rows (3x3 kernels) by default; a 4x4 one of 4 (2x2).
CORES = {pe: _core(_engine(pe)) for pe in ("shift", "adder", "mult")}
SMALL = _core(_engine("shift", 4), taps=4)
#: Three engines: engine 0 an array (it takes taps runs), 1 a tree and 2 a folded array
#: (neither does).
MULTI = _core(_engine("shift"), extra_engines=(_engine("adder", arch="tree"), _engine("mult")),
              engine_cols=(9, 9, 3))
NO_TAPS = replace(CORES["shift"], taps=0)


def taps(rng, cfg=CORES["shift"], c=11, h=5, w=7, kernel=3, engine=0, **kw):
    """A taps run on a random ``(c, h, w)`` map with random post-processing."""
    e = cfg.engines[engine]
    kh, kw_ = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = rng.integers(e.act_range[0], e.act_range[1] + 1, (c, h, w))
    post = PostParams(rng.integers(-20, 20, c), rng.integers(0, 4, c), rng.random(c) < .5)
    kw.setdefault("padding", 1)
    return ls.Layer(x, codes(rng, e, (c, 1, kh, kw_)), post, window="depthwise", taps=True,
                    engine=engine, **kw)


SHAPES = [dict(), dict(c=4, kernel=2, stride=2, padding=0),
          dict(c=9, kernel=(3, 2), stride=(2, 1), padding=(1, 1)),
          dict(c=3, h=6, w=6, kernel=3, stride=3, padding=(2, 0)),
          dict(c=19, h=1, w=9, kernel=(1, 3), padding=(0, 1)),
          dict(c=5, h=4, w=4, kernel=1, padding=0, clamp=(-3, 9))]


@pytest.mark.parametrize("pe", list(CORES))
@pytest.mark.parametrize("shape", range(len(SHAPES)))
def test_taps_runs_equal_the_golden_model(pe, shape):
    rng = np.random.default_rng(shape)
    run(CORES[pe], taps(rng, CORES[pe], **SHAPES[shape]))


@pytest.mark.parametrize("kernel, padding", [(2, 0), (2, 1), ((1, 2), (0, 1)), (1, 0)])
def test_taps_runs_on_a_2x2_tap_window(kernel, padding):
    rng = np.random.default_rng(11)
    run(SMALL, taps(rng, SMALL, c=6, h=5, w=6, kernel=kernel, padding=padding))


def test_the_same_numbers_as_the_lane_unit():
    rng = np.random.default_rng(12)
    layer = taps(rng, c=13, h=6, w=5, stride=(1, 2))
    lanes = replace(layer, taps=False)
    cfg = CORES["shift"]
    got = ls.unpack_results(cfg, layer, ls.emulate_core(cfg, ls.pack_layer(cfg, layer)))
    assert np.array_equal(got, ls.unpack_results(cfg, lanes, ls.emulate_core(
        cfg, ls.pack_layer(cfg, lanes))))


def test_descriptor_flags_weights_and_counts():
    rng = np.random.default_rng(13)
    cfg = CORES["mult"]
    layer = taps(rng, cfg, c=11, h=5, w=7, kernel=(3, 2))      # NT 2, out 5x8 = 40 pixels
    g = ls.layer_geometry(cfg, layer)
    assert (g["taps"], g["KT"], g["m_block"], g["wrows"]) == (1, 1, 40, 2 * 9)
    packets = ls.pack_layer(cfg, layer)
    words = ls.descriptor_words(cfg, layer)
    flags = words[4] >> 16
    assert flags == 1 << DESC_FLAGS["depthwise"] | 1 << DESC_FLAGS["taps"]
    e = cfg.engine
    weights = [p for p in packets if p.type == "WEIGHTS"]
    per = cfg.beats(cfg.vector_bits["WEIGHTS"])
    got = []
    for p in weights:
        for i in range(p.count):
            value = sum(b << (k * cfg.stream_width)
                        for k, b in enumerate(p.beats[1 + i * per:1 + (i + 1) * per]))
            got.append(unpack_vector(value, e.cols, cfg.code_width, True))
    want = np.zeros((2 * e.rows, e.cols), np.int64)
    for nt in range(2):
        for c in range(e.cols):
            for ky in range(3):
                for kx in range(2):
                    if nt * e.cols + c < 11:
                        want[nt * e.rows + ky * 2 + kx, c] = layer.w_codes[nt * e.cols + c, 0,
                                                                           ky, kx]
    assert np.array_equal(np.array(got), want)
    # The fast packer (the compiler's) sends the same bytes.
    ints = b"".join(b"".join(int(b).to_bytes(8, "little") for b in p.beats) for p in packets)
    assert ints == b"".join(p.tobytes() for p in stream_pack.layer_packets(cfg, layer))


def test_a_taps_run_has_no_m_block_limit():
    """M = 35 > acc_entries = 16: a taps run takes no partial sums; a lane run of the same
    block is TOO_BIG."""
    rng = np.random.default_rng(14)
    layer = taps(rng)
    cfg = CORES["shift"]
    assert ls.layer_geometry(cfg, layer)["m_block"] == 35 > cfg.acc_entries
    run(cfg, layer)
    with pytest.raises(ls.LayerError) as info:
        ls.check_layer(cfg, replace(layer, taps=False, m_block=35))
    assert info.value.core_error == "TOO_BIG"


def test_layer_refuses_taps_without_depthwise():
    rng = np.random.default_rng(15)
    layer = taps(rng)
    for change in (dict(window="sum"), dict(window=None), dict(taps=1), dict(taps="yes")):
        with pytest.raises(ls.LayerError) as info:
            replace(layer, **change)
        assert info.value.param == "taps" and "\n" not in str(info.value), str(info.value)


def _residual(layer):
    g = ls.layer_geometry(CORES["shift"], layer)
    short = np.zeros((g["out_c"], g["out_h"], g["out_w"]), np.int64)
    return dict(residual=ResidualParams(0, 0, 0, False), shortcut=short)


#: (what, core, change, param, core error): every taps rule check_layer refuses.
BAD = [
    ("a residual", CORES["shift"], "residual", "residual", "DESCRIPTOR"),
    ("a global pool", CORES["shift"], dict(pool=0), "pool", "DESCRIPTOR"),
    ("kernel_h > side", CORES["shift"], dict(kernel=(4, 3)), "w_codes", "DESCRIPTOR"),
    ("kernel_w > side", SMALL, dict(kernel=(1, 3), c=4, padding=(0, 1)), "w_codes",
     "DESCRIPTOR"),
    ("m_block != out_h*out_w", CORES["shift"], dict(m_block=5), "m_block", "DESCRIPTOR"),
    ("no tap window", NO_TAPS, dict(), "taps", "WINDOW"),
    ("a tree engine", MULTI, dict(engine=1), "taps", "WINDOW"),
    ("a folded engine", MULTI, dict(engine=2), "taps", "WINDOW"),
    ("a line longer than tap_line", replace(CORES["shift"], tap_line=8), dict(), "x",
     "TOO_BIG"),
    ("weight rows", replace(CORES["shift"], weight_rows=17), dict(), "w_codes", "TOO_BIG"),
]


@pytest.mark.parametrize("what, cfg, change, param, core_error", BAD,
                         ids=[b[0] for b in BAD])
def test_check_layer_refuses(what, cfg, change, param, core_error):
    rng = np.random.default_rng(16)
    if change == "residual":
        base = taps(rng, cfg)
        layer = replace(base, **_residual(base))
    else:
        change = dict(change)
        shape = {k: change.pop(k) for k in ("kernel", "c", "padding") if k in change}
        layer = replace(taps(rng, cfg, engine=change.get("engine", 0), **shape), **change)
    with pytest.raises(ls.LayerError) as info:
        ls.check_layer(cfg, layer)
    assert (info.value.param, info.value.core_error) == (param, core_error), str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(ls.CoreError, match=f"^{core_error} "):
        ls.emulate_core(cfg, [_desc(layer, ls.layer_geometry(cfg, layer), cfg=cfg)])


def test_the_line_limit_is_inclusive():
    """(out_w-1)*stride_w + kernel_w = 6*1 + 3 = 9 pixels: tap_line 9 takes it."""
    rng = np.random.default_rng(17)
    cfg = replace(CORES["shift"], tap_line=9)
    run(cfg, taps(rng, cfg))


def test_the_rules_in_the_cores_order():
    """DESCRIPTOR before ENGINE before WINDOW before RESIDENT before TOO_BIG; a kernel
    beyond the side is WINDOW on a core without a tap window (the side is checked on a core
    with one); taps without depthwise (a hand-made descriptor) is DESCRIPTOR."""
    rng = np.random.default_rng(18)
    cases = [(NO_TAPS, dict(m_block=5), "DESCRIPTOR"),
             (NO_TAPS, dict(kernel=4), "WINDOW"),
             (replace(MULTI, tap_line=4), dict(engine=2), "WINDOW"),
             (replace(NO_TAPS, fmap_banks=1), dict(keep=True), "WINDOW"),
             (replace(CORES["shift"], fmap_banks=1, tap_line=4), dict(keep=True), "RESIDENT"),
             (replace(CORES["shift"], tap_line=4), dict(engine=0), "TOO_BIG"),
             (replace(CORES["shift"], max_channels=8), dict(), "TOO_BIG")]
    for cfg, change, name in cases:
        change = dict(change)
        shape = {k: change.pop(k) for k in ("kernel",) if k in change}
        layer = replace(taps(rng, cfg, engine=change.get("engine", 0), **shape), **change)
        with pytest.raises(ls.LayerError) as info:
            ls.check_layer(cfg, layer)
        assert info.value.core_error == name, (change, str(info.value))
        with pytest.raises(ls.CoreError, match=f"^{name} "):
            ls.emulate_core(cfg, [_desc(layer, ls.layer_geometry(cfg, layer), cfg=cfg)])
    cfg = CORES["shift"]
    conv = ls.Layer(np.zeros((4, 5, 5), np.int64), np.zeros((4, 4, 3, 3), np.int64),
                    PostParams(np.zeros(4, np.int64), np.zeros(4, np.int64), False))
    with pytest.raises(ls.CoreError, match="^DESCRIPTOR .*taps without depthwise"):
        ls.emulate_core(cfg, [_desc(conv, ls.layer_geometry(cfg, conv), 1 << DESC_FLAGS["taps"],
                                    cfg=cfg)])


def test_reuse_compares_the_taps_flag():
    """A 3x3 kernel on 9 rows: a lane depthwise run's weight rows (NT*9) equal a taps run's
    (NT*rows), but the layouts differ: REUSE names the taps flag."""
    rng = np.random.default_rng(19)
    cfg = CORES["adder"]
    layer = taps(rng, cfg, c=11)
    lanes = replace(layer, taps=False, m_block=16)
    assert ls.layer_geometry(cfg, layer)["wrows"] == ls.layer_geometry(cfg, lanes)["wrows"]
    state = ls.CoreState()
    run(cfg, layer, state)
    again = replace(layer, x=np.flip(layer.x, 2).copy(), reuse_weights=True)
    run(cfg, again, state)
    ls.check_layer(cfg, again, previous=layer)
    with pytest.raises(ls.LayerError) as info:
        ls.check_layer(cfg, again, previous=lanes)
    assert info.value.core_error == "REUSE" and "taps 1 (loaded: 0)" in str(info.value)
    run(cfg, lanes, state)
    with pytest.raises(ls.CoreError, match="^REUSE .*'taps': 1.*'taps': 0"):
        ls.emulate_core(cfg, ls.pack_layer(cfg, again), state=state)
    run(cfg, layer, state)
    with pytest.raises(ls.CoreError, match="^REUSE .*'taps': 0.*'taps': 1"):
        ls.emulate_core(cfg, ls.pack_layer(cfg, replace(lanes, reuse_weights=True)),
                        state=state)


def test_terms_grow_by_the_array_per_emitted_vector():
    """TERMS: rows*cols per emitted vector, NT*M of them (not per read)."""
    rng = np.random.default_rng(20)
    cfg = CORES["shift"]
    state = ls.CoreState()
    layer = taps(rng, cfg, c=11, h=5, w=7, stride=2)       # NT 2, out 3x4
    ls.emulate_core(cfg, ls.pack_layer(cfg, layer), state=state)
    assert state.terms == 2 * 12 * 9 * 9
    ls.emulate_core(cfg, ls.pack_layer(cfg, replace(layer, taps=False)), state=state)
    assert state.terms == 2 * 12 * 9 * 9 + 2 * 9 * 12 * 9
