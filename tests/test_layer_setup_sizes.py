""":class:`mulfree.rtl.layer_setup.LayerSetup` against the host, and its arithmetic's ends.

* the host's :mod:`mulfree.host.layer_stream` (``layer_geometry``, ``check_layer``,
  ``descriptor_words``) on random :class:`~mulfree.host.layer_stream.Layer` objects, with and
  without a fused tail: the same error, the same sizes;
* the largest field values (every product and quotient exact), weight rows beyond 32 bits, and
  the setup's cycles against the manifest's ``setup_cycles``.
"""

import dataclasses
import random

import numpy as np
import pytest

from mulfree.params.core_config import DESC_SIGNED, RES_MAX_SHIFT, res_shift_range
from mulfree.gen.core_manifest import core_manifest
from mulfree.host import layer_stream as ls
from mulfree.host.core_layer import tail_fields
from mulfree.rtl.layer_setup import SIZES, STEPS
from mulfree.params.layer_golden import PostParams, ResidualParams

from test_layer_setup import (BASE, CLAMP, CODES, CONFIGS, DESCRIPTOR, RESIDUAL, RES_RELU,
                              REUSE_FLAG, SHIFT, TAIL_FIELDS, TOO_BIG, WIDTHS, cdiv, conv_out,
                              core, desc_from_words, random_valid_desc, ref_error, ref_sizes,
                              run_setup, with_out, words_with)


# Against the host's layer_stream --------------------------------------------------------------

def random_layer(cfg, rng, mode):
    """A random small :class:`Layer`. ``mode``: ``"valid"`` keeps it within ``cfg`` (mostly),
    ``"big"`` then crosses one of the core's limits, ``"random"`` draws sizes from 0 up,
    ``"tail"`` is a valid layer with a tail field out of range. Half have a fused tail."""
    e = cfg.engine
    shift = rng.random() < 0.4
    if mode in ("valid", "big", "tail"):
        kh, kw = rng.randint(1, 4), rng.randint(1, 3)
        in_c = rng.randint(1, max(1, min(3 * e.rows + 2, e.max_k // (kh * kw))))
        out_c = rng.randint(1, min(3 * e.cols + 2, cfg.max_channels))
        in_h, in_w = rng.randint(kh, kh + 5), rng.randint(kw, kw + 5)
        pad = (rng.randint(0, kh - 1), rng.randint(0, kw - 1))
        stride = (rng.randint(1, 4), rng.randint(1, 4))
        m_block = rng.choice((None, rng.randint(1, cfg.acc_entries)))
    else:
        kh, kw = rng.randint(0, 6), rng.randint(0, 6)
        in_c, out_c = rng.randint(0, 4 * e.rows + 3), rng.randint(0, 4 * e.cols + 3)
        in_h, in_w = rng.randint(0, 12), rng.randint(0, 12)
        pad = (rng.randint(0, 6), rng.randint(0, 6))
        stride = (rng.randint(0, 4), rng.randint(0, 4))
        m_block = rng.choice((None, rng.randint(0, cfg.acc_entries + 2)))
    if mode == "big":
        limit = rng.choice(("max_k", "max_channels", "shift", "acc_entries", "fmap_vectors",
                            "weight_rows", "shortcut_vectors"))
        if limit == "max_k":
            in_c = e.max_k // (kh * kw) + 1
        elif limit == "max_channels":
            out_c = cfg.max_channels + 1
        elif limit == "shift":
            in_c, shift = cfg.max_channels + 1, True
        elif limit == "acc_entries":
            m_block = cfg.acc_entries + 1
        elif limit == "fmap_vectors":
            in_h = cfg.fmap_vectors // (in_w * cdiv(in_c, e.rows)) + 1
        elif limit == "weight_rows":
            out_c = (cfg.weight_rows // (kh * kw * cdiv(in_c, e.rows) * e.rows) + 1) * e.cols
        else:
            # A residual whose shortcut (out_h*out_w*NT vectors) outgrows its buffer.
            out_w = conv_out(in_w, kw, stride[1], pad[1])
            in_h = stride[0] * (cfg.shortcut_vectors // (out_w * cdiv(out_c, e.cols))) + kh
    shifts = np.zeros((in_c, 2), np.int64) if shift else None
    layer = ls.Layer(np.zeros((in_c, in_h, in_w), np.int64),
                     np.zeros((out_c, in_c, kh, kw), np.int64),
                     PostParams(np.zeros(out_c, np.int64), np.zeros(out_c, np.int64), False),
                     stride=stride, padding=pad, shifts=shifts, m_block=m_block,
                     reuse_weights=rng.random() < 0.3)
    if mode == "big" and limit == "shortcut_vectors":
        return dataclasses.replace(layer, residual=ResidualParams(), shortcut=np.zeros(
            [ls.layer_geometry(cfg, layer)[k] for k in ("out_c", "out_h", "out_w")], np.int64))
    return random_tail_layer(cfg, layer, rng, bad=mode == "tail")


def random_tail_layer(cfg, layer, rng, *, bad=False):
    """``layer`` with a random fused tail: often none, a residual (its shortcut of the layer's
    output shape), a clamp; ``bad``: one of the tail's fields out of its range."""
    a = cfg.engine.act_bits
    lo, hi = cfg.engine.act_range
    s_lo, s_hi = res_shift_range(a)
    out = [ls.layer_geometry(cfg, layer)[k] for k in ("out_c", "out_h", "out_w")]
    if min(out) < 1 or (rng.random() < 0.5 and not bad):
        return layer
    residual = clamp = shortcut = None
    if rng.random() < 0.6 or bad:
        # The shortcut's source: often the identity, else a stride and a channel offset
        # (sometimes one channel past out_c: DESCRIPTOR).
        c, s, off = out[0], 1, 0
        if rng.random() < 0.5:
            s, c = rng.randint(1, 3), rng.randint(1, out[0])
            off = rng.randint(0, out[0] - c + (rng.random() < 0.2))
        residual = ResidualParams(rng.randint(0, RES_MAX_SHIFT), rng.randint(0, RES_MAX_SHIFT),
                                  rng.randint(s_lo, s_hi), rng.random() < 0.5, stride=s,
                                  offset=off)
        shortcut = np.zeros((c, out[1] * s, out[2] * s), np.int64)
    if rng.random() < 0.6:
        clamp = tuple(sorted(rng.randint(lo, hi) for _ in range(2)))
    if bad:
        which = rng.choice(("main_shift", "short_shift", "shift", "clamp"))
        if which == "clamp":
            clamp = rng.choice(((lo - 1, hi), (lo, hi + 1), (1, 0)))
        else:
            value = rng.choice((-1, RES_MAX_SHIFT + 1) if which != "shift"
                               else (s_lo - 1, s_hi + 1))
            residual = dataclasses.replace(residual, **{which: value})
    return dataclasses.replace(layer, residual=residual, clamp=clamp, shortcut=shortcut)


def layer_cases(cfg, rng, n_valid, n_refused):
    """``(desc, reuse, geometry or None, host code)``: layers check_layer accepts (words from
    descriptor_words) and layers it refuses with DESCRIPTOR or TOO_BIG (their fields written
    over the words of an accepted layer)."""
    valid, refused, template = [], [], None
    while len(valid) < n_valid or len(refused) < n_refused:
        mode = "valid" if len(valid) < n_valid and rng.random() < 0.6 else rng.choice(
            ("big", "random", "tail"))
        layer = random_layer(cfg, rng, mode)
        try:
            ls.check_layer(cfg, layer)
        except ls.LayerError as exc:
            if len(refused) >= n_refused or template is None:
                continue
            assert exc.core_error in ("DESCRIPTOR", "TOO_BIG"), exc
            g = ls.layer_geometry(cfg, layer)
            fields = {name: g[name] for name in WIDTHS if name in g}
            for out in ("out_h", "out_w"):
                fields[out] = max(fields[out], 1)   # the kernel does not fit: claim 1
            tail = tail_fields(layer)
            fields["flags"] = (SHIFT * (layer.shifts is not None)
                               | REUSE_FLAG * layer.reuse_weights | RESIDUAL * tail["residual"]
                               | RES_RELU * tail["res_relu"] | CLAMP * tail["clamp"])
            fields["engine"] = 0
            for name in TAIL_FIELDS:            # two's complement, as the words carry them
                fields[name] = tail[name] + (tail[name] < 0 and name in DESC_SIGNED) * (
                    1 << WIDTHS[name])
            if any(not 0 <= v < 1 << WIDTHS[k] for k, v in fields.items()):
                continue
            d = desc_from_words(words_with(template, **fields))
            assert d == fields
            refused.append((d, None, None, CODES[exc.core_error]))
            continue
        if len(valid) >= n_valid:
            continue
        words = ls.descriptor_words(cfg, layer)
        template = template or words
        d = desc_from_words(words)
        g = ls.layer_geometry(cfg, layer)
        sent = ls.layer_geometry(cfg, dataclasses.replace(layer, reuse_weights=False))
        # With reuse_weights, the previous run loaded this layer's weights and shift table.
        reuse = ({"valid": 1, "rows": sent["counts"]["WEIGHTS"], "channels": g["out_c"],
                  "tiles": sent["counts"]["SHIFT"]} if layer.reuse_weights else None)
        valid.append((d, reuse, dict(g, counts=sent["counts"]), 0))
    return valid + refused


@pytest.mark.parametrize("name", ["r5c3", "r8c6", "r1c4", "r7c16", "tree3x2"])
def test_against_layer_stream(name):
    cfg, rng = CONFIGS[name], random.Random(f"layers-{name}")
    cases = layer_cases(cfg, rng, 60, 60)
    results = run_setup(cfg, [(d, r) for d, r, _, _ in cases])
    bad = []
    for (d, reuse, g, want), res in zip(cases, results):
        if res.error != want:
            bad.append(f"error {res.error}, layer_stream says {want}: {d}")
            continue
        assert ref_error(cfg, d, reuse) == want, d     # the two references agree
        if g is None:
            continue
        s = res.sizes
        got = {"CT": s["ct"], "NT": s["nt"], "KT": s["kt"], "K": s["k"], "M": s["m"],
               "WEIGHTS": s["wrows"], "ACTS": s["acts"]}
        ref = {"CT": g["CT"], "NT": g["NT"], "KT": g["KT"], "K": g["K"], "M": g["M"],
               "WEIGHTS": g["counts"]["WEIGHTS"], "ACTS": g["counts"]["ACTS"]}
        if got != ref:
            bad.append(f"sizes {got}, layer_geometry {ref}: {d}")
    assert not bad, "\n".join(bad[:20])
    assert {w for _, _, _, w in cases} == {0, DESCRIPTOR, TOO_BIG}


# Arithmetic widths and timing -----------------------------------------------------------------

def test_extreme_fields():
    """The largest field values: every product and quotient exact (weight rows aside, see
    ``test_weight_rows_beyond_32_bits``)."""
    fmax = (1 << 16) - 1
    d = {"in_h": fmax, "in_w": fmax, "in_c": fmax, "out_c": fmax, "kernel_h": 255,
         "kernel_w": 255, "stride_h": 15, "stride_w": 15, "pad_h": 15, "pad_w": 15,
         "m_block": fmax, "flags": SHIFT | REUSE_FLAG}
    d = with_out(d)
    small = dict(d, in_h=1, in_w=1, in_c=1, out_c=1, kernel_h=1, kernel_w=1, pad_h=0, pad_w=0,
                 stride_h=1, stride_w=1)
    small = with_out(small)
    odd = with_out(dict(d, in_c=fmax - 1, out_c=fmax - 2, kernel_h=254, kernel_w=253,
                        stride_h=14, stride_w=13, in_h=40000, in_w=50000))
    for cfg in (CONFIGS["big1x1"], CONFIGS["r1024c1000"], core(7, 3), core(1023, 1024)):
        results = run_setup(cfg, [(x, None) for x in (d, small, odd)])
        for x, res in zip((d, small, odd), results):
            ref = ref_sizes(cfg, x)
            skip = {"wrows"} if ref["nkt"] >= 1 << 32 else set()
            diff = {k: (res.sizes[k], ref[k]) for k in SIZES
                    if k not in skip and res.sizes[k] != ref[k]}
            assert not diff, f"rows={cfg.engine.rows}: (rtl, ref) {diff} for {x}"
            assert res.error == ref_error(cfg, x), (res.error, x)


def test_weight_rows_beyond_32_bits():
    """A 1x1 core with max_k >= 65538: kernel 1x2, in_c 32769, out_c 65535 gives
    NT*KT = 65535 * 65538 = 2^32 + 65534 weight tiles, far more than weight_rows = 2^20. The
    other limits hold (K = 65538, acts = 65538, out_c <= max_channels), so only the weight
    rows make the layer TOO_BIG."""
    cfg = core(1, 1, act_bits=2, weight_bits=2, max_k=1 << 17, fmap_vectors=1 << 20,
               weight_rows=1 << 20, max_channels=1 << 16)
    d = with_out({"in_h": 1, "in_w": 2, "in_c": 32769, "out_c": 65535, "kernel_h": 1,
                  "kernel_w": 2, "stride_h": 1, "stride_w": 1, "pad_h": 0, "pad_w": 0,
                  "m_block": 1, "flags": 0})
    assert ref_sizes(cfg, d)["wrows"] == (1 << 32) + 65534
    assert ref_error(cfg, d) == TOO_BIG
    [res] = run_setup(cfg, [(d, None)])
    assert (res.error, res.sizes["wrows"]) == (TOO_BIG, (1 << 32) + 65534)


def test_setup_cycles():
    """Start to done within the manifest's ``setup_cycles`` (and a few hundred), whatever the
    descriptor: random ones, errors, and the largest fields on engines whose divisions are
    not shifts (the slowest case)."""
    fmax = (1 << 16) - 1
    extreme = with_out({"in_h": fmax, "in_w": fmax, "in_c": fmax, "out_c": fmax,
                        "kernel_h": 255, "kernel_w": 255, "stride_h": 15, "stride_w": 15,
                        "pad_h": 15, "pad_w": 15, "m_block": fmax, "flags": SHIFT})
    measured = {}
    for name, cfg in (("r5c3", CONFIGS["r5c3"]), ("r7c16", CONFIGS["r7c16"]),
                      ("r1023c1000", core(1023, 1000)), ("r1c1", CONFIGS["big1x1"])):
        rng = random.Random(f"cycles-{name}")
        cases = [(random_valid_desc(cfg, rng), None) for _ in range(10)]
        cases += [(dict(BASE, in_h=0), None), (dict(BASE, out_c=1000), None),
                  (extreme, None), (dict(extreme, kernel_h=1, kernel_w=1, pad_h=0, pad_w=0),
                                    None),
                  (dict(extreme, flags=SHIFT | RESIDUAL, short_c=fmax, short_stride=15),
                   None)]
        results = run_setup(cfg, cases)
        bound = core_manifest(cfg)["core"]["setup_cycles"]
        measured[name] = max(res.cycles for res in results)
        # 20 steps since interface 2.0 (the shortcut's source sizes): under 400.
        assert measured[name] <= min(bound, len(STEPS) * 18 + 2) < 400, (name, measured, bound)
        assert all(res.pulse_ok for res in results)
