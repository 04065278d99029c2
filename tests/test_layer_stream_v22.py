"""Interface 2.2 (layer chaining) in the host's layer and packers, without a simulator: the
descriptor's chaining flags, the packets a resident input or shortcut leaves out, no result
beats when quiet, every RESIDENT rule of ``check_layer`` in the core's order (after ENGINE,
before TOO_BIG) and the emulator stopping on the same descriptors with the same code; REUSE
compares the engine.
"""

from dataclasses import replace

import numpy as np
import pytest

from test_bank_state import CFG, ENGINE, chain, conv

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import DESC_FLAGS, CoreConfig
from mulfree.params.layer_golden import ResidualParams
from mulfree.host import layer_stream as ls
from mulfree.host import stream_pack
from mulfree.host.bank_state import BankState
from mulfree.host.stream_format import descriptor_words_unchecked


ONE_BANK = replace(CFG, fmap_banks=1)


def base(**kw):
    rng = np.random.default_rng(4)
    return conv(rng, rng.integers(-32, 32, (4, 6, 6)), 8, **kw)


def residual(**kw):
    return base(shortcut=np.zeros((8, 6, 6), np.int64), residual=ResidualParams(), **kw)


def test_flags_in_the_descriptor():
    assert CFG.fmap_banks == 2 and ONE_BANK.fmap_banks == 1
    layer = residual(in_bank=1, acts_resident=True, keep=True, quiet=True, short_resident=True)
    words = ls.descriptor_words(CFG, layer)
    flags = words[4] >> 16
    for name in ("in_bank", "acts_resident", "keep", "quiet", "short_resident", "residual"):
        assert flags >> DESC_FLAGS[name] & 1, name
    assert flags >> 6 == 0b11111
    assert ls.descriptor_words(CFG, residual())[4] >> 22 == 0


def test_resident_packets_are_left_out():
    """No ACTS with acts_resident, no SHORTCUT with short_resident, both packers; no result
    beats with quiet (``expected_beats`` empty, ``unpack_results`` refuses)."""
    layer = residual(m_block=9)
    kinds = lambda lay: [p.type for p in ls.pack_layer(CFG, lay)]          # noqa: E731
    assert "ACTS" in kinds(layer) and "SHORTCUT" in kinds(layer)
    counts = lambda lay: {t: sum(p.count for p in ls.pack_layer(CFG, lay) if p.type == t)
                          for t in ls.PACKET_TYPES}                       # noqa: E731
    assert counts(replace(layer, acts_resident=True)) == dict(counts(layer), ACTS=0)
    assert counts(replace(layer, short_resident=True)) == dict(counts(layer), SHORTCUT=0)
    assert kinds(replace(layer, short_resident=True)) == ["DESC", "PARAMS", "ACTS", "WEIGHTS",
                                                          "ACTS"]
    both = replace(layer, acts_resident=True, short_resident=True, reuse_weights=True)
    assert kinds(both) == ["DESC"]
    for lay in (replace(layer, acts_resident=True), replace(layer, short_resident=True)):
        ints = b"".join(b"".join(int(b).to_bytes(8, "little") for b in p.beats)
                        for p in ls.pack_layer(CFG, lay))
        fast = b"".join(p.tobytes() for p in stream_pack.layer_packets(CFG, lay))
        assert ints == fast
    g = ls.layer_geometry(CFG, replace(layer, acts_resident=True, short_resident=True))
    assert g["counts"]["ACTS"] == g["counts"]["SHORTCUT"] == 0 and g["scv"] == 72
    quiet = replace(layer, keep=True, quiet=True)
    assert ls.expected_beats(CFG, quiet) == []
    assert ls.expected_beats(CFG, replace(quiet, quiet=False)) == ls.expected_beats(CFG, layer)
    with pytest.raises(ValueError, match="quiet layer sends no results"):
        ls.unpack_results(CFG, quiet, [])


#: (what, core, change, param, core error): every condition check_layer refuses for layer
#: chaining, with no bank state.
BAD = [
    ("in_bank on one bank", ONE_BANK, dict(in_bank=1), "in_bank", "RESIDENT"),
    ("keep on one bank", ONE_BANK, dict(keep=True), "keep", "RESIDENT"),
    ("acts_resident on one bank", ONE_BANK, dict(acts_resident=True), "acts_resident",
     "RESIDENT"),
    ("short_resident on one bank", ONE_BANK, dict(short_resident=True), "short_resident",
     "RESIDENT"),
    ("quiet on one bank (without keep)", ONE_BANK, dict(quiet=True), "quiet", "RESIDENT"),
    ("quiet without keep", CFG, dict(quiet=True), "quiet", "RESIDENT"),
    ("short_resident without residual", CFG, dict(short_resident=True, residual=None,
                                                  shortcut=None), "short_resident",
     "RESIDENT"),
    ("kept results beyond fmap_vectors", replace(CFG, fmap_vectors=71), dict(keep=True),
     "keep", "TOO_BIG"),
    ("resident shortcut beyond fmap_vectors", replace(CFG, fmap_vectors=71),
     dict(short_resident=True, x=np.zeros((4, 4, 4), np.int64), padding=2,
          w_codes=np.zeros((8, 4, 3, 3), np.int64)), "short_resident", "TOO_BIG"),
    ("in_bank 2", CFG, dict(in_bank=2), "in_bank", None),
    ("keep not a bool", CFG, dict(keep=1), "keep", None),
]


@pytest.mark.parametrize("what, cfg, change, param, core_error", BAD,
                         ids=[b[0] for b in BAD])
def test_check_layer_refuses(what, cfg, change, param, core_error):
    layer = replace(residual(), **change)
    with pytest.raises(ls.LayerError) as info:
        ls.check_layer(cfg, layer)
    assert (info.value.param, info.value.core_error) == (param, core_error), str(info.value)
    assert "\n" not in str(info.value) and param in str(info.value)
    if core_error is None or (core_error == "TOO_BIG" and "short_resident" in change):
        return        # the emulator's banks are empty: RESIDENT comes first (tested below)
    # The emulator stops on the same descriptor with the same code, before any data.
    g = ls.layer_geometry(cfg, layer)
    words = descriptor_words_unchecked(layer, g)
    desc = ls.Packet("DESC", 1, [0x101] + [words[j] | words[j + 1] << 32
                                           for j in range(0, 8, 2)])
    with pytest.raises(ls.CoreError, match=f"^{core_error} "):
        ls.emulate_core(cfg, [desc])
    # A chaining flag off on a one-bank core is the 2.1 layer.
    if cfg is ONE_BANK:
        ls.check_layer(ONE_BANK, residual())


def test_resident_in_the_cores_order():
    """ENGINE before RESIDENT before TOO_BIG (m_block > acc_entries), with and without the
    bank state; the emulator alike."""
    big = dict(m_block=CFG.acc_entries + 1)
    cases = [(dict(engine=1, quiet=True), None, "ENGINE"),
             (dict(quiet=True, **big), None, "RESIDENT"),
             (dict(acts_resident=True, **big), BankState(), "RESIDENT"),
             (dict(acts_resident=True, engine=1), BankState(), "ENGINE"),
             (dict(acts_resident=True, **big), None, "TOO_BIG")]
    for change, banks, name in cases:
        layer = replace(residual(), **change)
        with pytest.raises(ls.LayerError) as info:
            ls.check_layer(CFG, layer, banks=banks)
        assert info.value.core_error == name, (change, str(info.value))
        if banks is None and "acts_resident" in change:
            continue                   # the emulator always has a state: its banks empty
        g = ls.layer_geometry(CFG, layer)
        words = descriptor_words_unchecked(layer, g)
        desc = ls.Packet("DESC", 1, [0x101] + [words[j] | words[j + 1] << 32
                                               for j in range(0, 8, 2)])
        with pytest.raises(ls.CoreError, match=f"^{name} "):
            ls.emulate_core(CFG, [desc])


def test_check_layer_with_the_bank_state():
    """``check_layer(..., banks=)`` refuses a resident tensor the banks do not hold; the
    emulator, with the same state, stops with RESIDENT; with the right state both run."""
    l1, l2, *_ = chain(np.random.default_rng(6))
    banks, state = BankState(), ls.CoreState()
    for layer, field in ((l2, "acts_resident"), (replace(l2, acts_resident=False),
                                                 "short_resident")):
        with pytest.raises(ls.LayerError) as info:
            ls.check_layer(CFG, layer, banks=banks)
        assert (info.value.param, info.value.core_error) == (field, "RESIDENT")
        with pytest.raises(ls.CoreError, match="^RESIDENT "):
            ls.emulate_core(CFG, ls.pack_layer(CFG, layer), state=state)
    ls.check_layer(CFG, l1, banks=banks)
    banks.after(l1, True)
    ls.emulate_core(CFG, ls.pack_layer(CFG, l1), state=state)
    ls.check_layer(CFG, l2, banks=banks)
    assert ls.emulate_core(CFG, ls.pack_layer(CFG, l2), state=state) == \
        ls.expected_beats(CFG, l2)


def test_reuse_compares_the_engine():
    """On a core with two engines of equal sizes, weights loaded on engine 0 are not reused
    on engine 1 (REUSE, the state cleared); on engine 0 they are."""
    cfg = CoreConfig(ENGINE, extra_engines=(ArrayConfig(pe="mult", rows=4, cols=4,
                                                        act_bits=6, weight_bits=4,
                                                        max_k=256),),
                     stream_width=64, shortcut_vectors=256, pool_pixels=64)
    layer = replace(base(), w_codes=np.asarray(base().w_codes) & 7)
    state = ls.CoreState()
    ls.emulate_core(cfg, ls.pack_layer(cfg, layer), state=state)
    again = replace(layer, reuse_weights=True)
    assert ls.emulate_core(cfg, ls.pack_layer(cfg, again), state=state) == \
        ls.expected_beats(cfg, again)
    with pytest.raises(ls.CoreError, match="^REUSE .*'engine': 1.*'engine': 0"):
        ls.emulate_core(cfg, ls.pack_layer(cfg, replace(again, engine=1)), state=state)
    assert state.loaded is None
