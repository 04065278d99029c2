"""Layer chaining (interface 2.2) on the host's models, without a simulator: the bank state
(:class:`~mulfree.host.bank_state.BankState`), and the emulator running a chain of layers
whose tensors stay in the two banks, compared layer by layer with the golden output.

The emulator computes from the banks' *contents* (the ACTS it wrote, the results it kept),
not from ``Layer.x`` or ``Layer.shortcut``: a chain whose layer names the wrong input gives
the golden output of the right one.
"""

from dataclasses import replace

import numpy as np
import pytest

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig
from mulfree.params.layer_golden import PostParams, ResidualParams
from mulfree.host import layer_stream as ls
from mulfree.host.bank_state import BankState, layer_shapes


ENGINE = ArrayConfig(pe="shift", rows=4, cols=4, act_bits=6, weight_bits=5, max_k=256)
CFG = CoreConfig(ENGINE, stream_width=64, shortcut_vectors=256, pool_pixels=64)


def conv(rng, x, out_c, kernel=3, engine=ENGINE, **kw):
    """A layer on ``x`` with random weight codes and post-processing (ReLU on half)."""
    in_c = np.shape(x)[0]
    w = rng.integers(0, 1 << engine.code_width, (out_c, in_c, kernel, kernel))
    post = PostParams(rng.integers(-40, 40, out_c), np.full(out_c, 5), rng.random(out_c) < .5)
    return ls.Layer(x, w, post, padding=kernel // 2, **kw)


def _conv_on(engine):
    return lambda *args, **kw: conv(*args, engine=engine, **kw)


def chain(rng, cfg=CFG):
    """conv -> conv with a residual in place -> stride-2 conv -> conv with an option-A
    residual (stride 2, 2 zero channels in front) in place -> 1x1 conv with a global pool ->
    linear; every tensor but the first input stays in a bank. Returns the layers, each with
    the golden tensors of the true chain as ``x`` and ``shortcut``."""
    e = cfg.engine
    a = e.act_range
    x0 = rng.integers(a[0], a[1] + 1, (4, 6, 6))
    gold = lambda layer: ls.expected_output(cfg, layer)            # noqa: E731
    conv = _conv_on(e)

    l1 = conv(rng, x0, 4, keep=True, quiet=True)                                  # A -> B
    y1 = gold(l1)
    l2 = conv(rng, y1, 4, in_bank=1, acts_resident=True, keep=True, short_resident=True,
              shortcut=x0, residual=ResidualParams(1, 0, 1, True))                # B -> A
    y2 = gold(l2)
    l3 = conv(rng, y2, 8, stride=2, acts_resident=True, keep=True, quiet=True)    # A -> B
    y3 = gold(l3)
    l4 = conv(rng, y3, 8, in_bank=1, acts_resident=True, keep=True, quiet=True,
              short_resident=True, shortcut=y2,
              residual=ResidualParams(1, 1, 1, True, stride=2, offset=2))          # B -> A
    y4 = gold(l4)
    l5 = conv(rng, y4, 8, kernel=1, acts_resident=True, keep=True, pool=3)        # A -> B
    y5 = gold(l5)
    l6 = conv(rng, y5, 10, kernel=1, in_bank=1, acts_resident=True)               # B
    return [l1, l2, l3, l4, l5, l6]


def emulate(state, layer, cfg=CFG):
    return ls.emulate_core(cfg, ls.pack_layer(cfg, layer), state=state)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_chain_equals_the_golden_model_layer_by_layer(seed):
    layers = chain(np.random.default_rng(seed))
    state = ls.CoreState()
    banks = BankState()                     # the host's model, next to the emulator's
    for i, layer in enumerate(layers):
        ls.check_layer(CFG, layer, banks=banks)
        got = emulate(state, layer)
        assert got == ls.expected_beats(CFG, layer), i
        assert bool(got) != layer.quiet, i
        banks.after(layer, True)
        assert banks.shapes == state.banks.shapes, i
    # Only the ACTS of the first layer were sent.
    acts = [sum(p.count for p in ls.pack_layer(CFG, layer) if p.type == "ACTS")
            for layer in layers]
    assert acts[0] == 36 and not any(acts[1:])
    assert not any(p.type == "SHORTCUT" for layer in layers for p in ls.pack_layer(CFG, layer))
    out = ls.unpack_results(CFG, layers[-1], emulate_last(layers))
    assert np.ptp(out) > 0                                    # not all saturated or zero
    # Bank B holds the pooled (8, 1, 1) at 0..NT-1, bank A the last block's input.
    assert state.banks.shapes == [(8, 3, 3), (8, 1, 1)]


def emulate_last(layers):
    state = ls.CoreState()
    for layer in layers:
        beats = emulate(state, layer)
    return beats


def test_the_emulator_reads_the_banks_not_the_layer():
    """The second layer names the first layer's *input* as its ``x`` (same shape): the
    emulator still computes from the bank, so its beats are the golden output of the true
    input, not of the named one; a residual's named shortcut alike."""
    l1, l2, *_ = chain(np.random.default_rng(5))
    state = ls.CoreState()
    emulate(state, l1)
    wrong = replace(l2, x=l1.x)
    got = emulate(state, wrong)
    assert got == ls.expected_beats(CFG, l2) != ls.expected_beats(CFG, wrong)
    state = ls.CoreState()
    emulate(state, l1)
    wrong = replace(l2, shortcut=l2.x)
    assert emulate(state, wrong) == ls.expected_beats(CFG, l2) != \
        ls.expected_beats(CFG, wrong)


def test_keep_writes_results_at_pixel_times_nt():
    """Bank ``1 - in_bank`` holds vector ``p*NT + nt`` = channels ``nt*C ..`` of pixel ``p``;
    a pooled run's NT vectors at 0..NT-1; the input bank the ACTS layout."""
    rng = np.random.default_rng(8)
    a = ENGINE.act_range
    x = rng.integers(a[0], a[1] + 1, (5, 3, 4))
    layer = conv(rng, x, 7, keep=True)
    state = ls.CoreState()
    emulate(state, layer)
    y = ls.expected_output(CFG, layer)                          # (7, 3, 4): NT = 2
    bank = state.banks.data[1]
    for p in range(12):
        for nt in range(2):
            want = np.zeros(4, np.int64)
            chans = y[nt * 4:min(nt * 4 + 4, 7), p // 4, p % 4]
            want[:len(chans)] = chans
            assert np.array_equal(bank[p * 2 + nt], want), (p, nt)
    ct = 2
    for p in range(12):
        for t in range(ct):
            want = np.zeros(4, np.int64)
            chans = x[t * 4:min(t * 4 + 4, 5), p // 4, p % 4]
            want[:len(chans)] = chans
            assert np.array_equal(state.banks.data[0][p * ct + t], want)
    pooled = replace(conv(rng, x, 7, kernel=1, keep=True, pool=2), in_bank=1)
    emulate(state, pooled)
    y = ls.expected_output(CFG, pooled)[:, 0, 0]
    assert np.array_equal(state.banks.data[0][:2].reshape(-1)[:7], y)
    assert state.banks.shapes == [(7, 1, 1), (5, 3, 4)]


def test_the_bank_rules():
    s = BankState()
    x = np.zeros((4, 6, 6), np.int64)
    layer = conv(np.random.default_rng(0), x, 8, stride=2)
    assert layer_shapes(layer) == ((4, 6, 6), (8, 3, 3), None)
    s.after(layer, True)                          # streamed, not kept: bank 0 the input
    assert s.shapes == [(4, 6, 6), None]
    s.after(replace(layer, keep=True, pool=1), True)
    assert s.shapes == [(4, 6, 6), (8, 1, 1)]
    s.after(replace(layer, in_bank=1, x=np.zeros((2, 6, 6), np.int64),
                    w_codes=np.zeros((8, 2, 3, 3), np.int64)), True)
    assert s.shapes == [(4, 6, 6), (2, 6, 6)]     # bank 0 kept: the run did not write it
    s.after(layer, False)
    assert s.shapes == [None, None]
    s.shapes = [(4, 6, 6), (8, 3, 3)]
    s.check(CFG, replace(layer, acts_resident=True))
    with pytest.raises(ls.LayerError) as info:
        s.check(CFG, replace(layer, acts_resident=True, in_bank=1))
    assert (info.value.param, info.value.core_error) == ("acts_resident", "RESIDENT")
    assert "bank 1 to hold the input (in_c, in_h, in_w) = (4, 6, 6), but it holds (8, 3, 3)" \
        in str(info.value)
    short = replace(layer, stride=1, residual=ResidualParams(stride=2),
                    shortcut=np.zeros((8, 3, 3), np.int64))       # out 6x6 -> source 12x12
    with pytest.raises(ls.LayerError, match=r"bank 1 to hold the shortcut source .* "
                                            r"\(8, 12, 12\)") as info:
        s.check(CFG, replace(short, short_resident=True, shortcut=np.zeros((8, 12, 12),
                                                                           np.int64)))
    assert info.value.param == "short_resident"
    s.clear()
    with pytest.raises(ls.LayerError, match="holds nothing valid"):
        s.check(CFG, replace(layer, acts_resident=True))


def test_errors_and_soft_reset_clear_the_banks():
    """A run that stops with an error leaves both banks invalid (and no weights): a resident
    run after it is RESIDENT; a soft reset (``CoreState.reset``) alike."""
    l1, l2, *_ = chain(np.random.default_rng(3))
    state = ls.CoreState()
    emulate(state, l1)
    packets = ls.pack_layer(CFG, l1)
    extra = [p for p in packets if p.type == "ACTS"][-1]
    bad = packets + [extra]                       # one ACTS packet too many: OVERRUN
    with pytest.raises(ls.CoreError, match="^OVERRUN "):
        ls.emulate_core(CFG, bad, state=state)
    assert state.banks.shapes == [None, None] and state.loaded is None
    with pytest.raises(ls.CoreError, match="^RESIDENT .*holds nothing valid"):
        emulate(state, l2)
    emulate(state, l1)
    assert emulate(state, l2) == ls.expected_beats(CFG, l2)
    state.reset()
    with pytest.raises(ls.CoreError, match="^RESIDENT "):
        emulate(state, l2)
