"""cocotb scenarios of layer chaining (interface 2.2) on a core with two feature-map banks.

A ResNet-like chain runs image by image with its tensors kept on chip between runs
(``docs/interface.md``, "Layer chaining"); every result the core sends is compared with the
golden model of the *whole chain* up to that layer: each layer's input is the golden output
of the layer before it (:func:`mulfree.host.layer_stream.expected_output`, layer by layer),
never what the core computed.

The packets come from the specification (:func:`~mulfree.sim.tb_core_engines.pack_engine_layer`
with the chaining flags in the descriptor; no ACTS with ``acts_resident``, no SHORTCUT with
``short_resident``).

* ``resnet_chain``: per image, conv (ACTS streamed into bank 0, keep, quiet) → conv
  (resident input, keep, quiet) → conv with an identity residual (resident input, resident
  shortcut, keep: written in place over its shortcut) → a 1x1 conv with a stride-1 residual
  of a third of its channels at an offset (in place: the results run ahead of the shortcut's
  reader, the interlock holds them) → a stride-2 conv (keep, quiet) → its option-A residual
  (resident shortcut of fewer channels at an offset, stride 2, in place) → a conv with a global pool (resident input, keep, sent) → a linear layer on the
  pooled vector (resident input, sent); the second image sends its first layer's results
  too (keep and send). Random pauses on ``s_axis`` and backpressure on ``m_axis``;
  ``FMAP_BANKS`` reads 2.
* ``resident_refused``: each RESIDENT rule once (quiet without keep; acts_resident with the
  bank empty or of another shape; short_resident without a residual, with the other bank
  empty or of another shape), each after a good run that filled the banks; an error and a
  soft reset clear the banks' state (a resident run of the right shape is then refused);
  TOO_BIG for kept results beyond ``fmap_vectors``; the run after each error works.

``MULFREE_SEED`` varies the data, never the corners.
"""

import dataclasses

import numpy as np

import cocotb
from cocotb.triggers import ClockCycles, with_timeout

from mulfree.host.layer_stream import expected_beats, expected_output
from mulfree.params.layer_golden import PostParams, ResidualParams, conv2d_layer
from mulfree.params.post_config import bias_range, shift_range
from mulfree.sim.tb_core import TB
from mulfree.sim.tb_core_engines import (engine_layer, engine_view, pack_engine_layer,
                                         run_packets)
from mulfree.sim.tb_core_layers import random_pauses


__all__ = ["SCENARIOS", "chain_layers", "run_chained"]

#: The cocotb tests of this module.
SCENARIOS = ("resnet_chain", "resident_refused")


def _engines(cfg):
    """``(main, edge)``: the engine of the chain's middle layers and of its first and last
    (the last extra engine of a multi-engine core, e.g. a folded mult)."""
    return 0, len(cfg.engines) - 1


def _scaled(cfg, rng, layer):
    """``layer`` with post-processing that keeps its outputs mostly inside the activation
    range (a chain of saturated maps would test little): per channel, a bias near minus the
    accumulators' median (0 for one pixel) and a right shift bringing their spread to about
    ``2^(a-1)``; random ReLUs."""
    p = cfg.post_engine
    acc = conv2d_layer(cfg.engines[layer.engine], layer.x, layer.w_codes, layer.stride,
                       layer.padding)
    acc = acc.reshape(acc.shape[0], -1)
    b_lo, b_hi = bias_range(p)
    s_lo, s_hi = shift_range(p)
    centre = np.median(acc, axis=1) if acc.shape[1] > 1 else np.zeros(len(acc))  # one pixel: 0
    bias = np.clip(-np.round(centre).astype(np.int64), b_lo, b_hi)
    spread = np.abs(acc + bias[:, None]).max(axis=1)
    a = cfg.engine.act_bits
    shift = np.clip([int(v).bit_length() - (a - 1) for v in spread], max(s_lo, 0), s_hi)
    return dataclasses.replace(layer, post=PostParams(
        bias=bias, shift=np.asarray(shift, dtype=np.int64),
        relu=rng.integers(0, 2, len(bias)).astype(bool)))


def _conv(cfg, rng, k, x, out_c, *, stride=1, pool=None, residual=None, shortcut=None,
          kernel=3):
    """A ``kernel`` x ``kernel`` convolution (padding ``kernel // 2``) of ``x`` on engine
    ``k`` with random weights and scaled parameters (:func:`_scaled`)."""
    in_c, h, w = x.shape
    layer = engine_layer(cfg, rng, k, "conv", in_c=in_c, h=h, w=w, out_c=out_c, kh=kernel,
                         kw=kernel, stride=(stride, stride),
                         padding=(kernel // 2, kernel // 2))
    layer = dataclasses.replace(layer, x=x, pool=pool, residual=residual, shortcut=shortcut,
                                engine=k)
    return _scaled(cfg, rng, layer)


def chain_layers(cfg, rng, x, *, send_first=False):
    """The chain of one image: ``[(what, layer, flags)]``, each layer's ``x`` the golden
    output of the one before, ``flags`` its chaining flags."""
    main, edge = _engines(cfg)
    C = cfg.engine.cols
    c1, c2, c3 = C, 2 * C + C // 2 + 2, 3 * C + 3      # NT 1, 3 and 4 (C >= 4)
    out = []

    def add(what, layer, **flags):
        out.append((what, layer, flags))
        return expected_output(engine_view(cfg, layer.engine), dataclasses.replace(
            layer, engine=0))

    res = lambda **kw: ResidualParams(main_shift=1, short_shift=int(rng.integers(0, 2)),  # noqa
                                      shift=1, relu=bool(rng.integers(0, 2)), **kw)
    y1 = add("conv 1 (streamed, bank 0)",
             _conv(cfg, rng, edge, x, c1), in_bank=0, keep=1, quiet=int(not send_first))
    y2 = add("conv 2 (resident, bank 1)", _conv(cfg, rng, main, y1, c1),
             in_bank=1, acts_resident=1, keep=1, quiet=1)
    y3 = add("conv 3 + identity residual (in place)",
             _conv(cfg, rng, main, y2, c1, residual=res(), shortcut=y1),
             in_bank=0, acts_resident=1, short_resident=1, keep=1, quiet=1)
    # A 1x1 conv (one pass per output tile) with three times the source's tiles, stride 1:
    # its results run ahead of the shortcut's reader, the interlock keeps the source intact.
    y3b = add("conv 3b 1x1 + option-A residual (stride 1, offset, in place)",
              _conv(cfg, rng, main, y3, c2, residual=res(offset=c2 - c1 - 1), shortcut=y2,
                    kernel=1),
              in_bank=1, acts_resident=1, short_resident=1, keep=1, quiet=1)
    y4 = add("conv 4 stride 2", _conv(cfg, rng, main, y3b, c2, stride=2),
             in_bank=0, acts_resident=1, keep=1, quiet=1)
    y5 = add("conv 5 + option-A residual (stride 2, offset, in place)",
             _conv(cfg, rng, main, y4, c3, residual=res(stride=2, offset=c3 - c2 - 1),
                   shortcut=y3b),
             in_bank=1, acts_resident=1, short_resident=1, keep=1, quiet=1)
    y6 = add("conv 6 + global pool (sent, kept)",
             _conv(cfg, rng, main, y5, c2, pool=int(rng.integers(3, 5))),
             in_bank=0, acts_resident=1, keep=1)
    # A linear layer's map is (in_c, 1, images): the pooled vector of one image.
    lin = engine_layer(cfg, rng, edge, "matmul", m=1, k=c2, n=C + 1)
    add("linear on the pooled vector",
        _scaled(cfg, rng, dataclasses.replace(lin, x=y6, engine=edge)),
        in_bank=1, acts_resident=1)
    return out


async def run_chained(tb, layer, flags, *, what):
    """Start one run of ``layer`` with the chaining ``flags``; compare its result beats with
    the golden model (none for a quiet run: the run ends when its last result is written)."""
    cfg = tb.cfg
    k = layer.engine
    view_layer = dataclasses.replace(layer, engine=0)
    packets = pack_engine_layer(cfg, view_layer, k, chain=flags)
    quiet = bool(flags.get("quiet"))
    want = [] if quiet else expected_beats(engine_view(cfg, k), view_layer)
    await run_packets(tb, packets, want, what, leftover="a quiet run sent beats")


def _image(cfg, rng):
    lo, hi = cfg.engine.act_range
    return rng.integers(lo, hi + 1, (cfg.engine.rows + 2, 6, 6))


@cocotb.test()
async def resnet_chain(dut):
    tb = TB(dut)
    await tb.reset()
    assert await tb.get("FMAP_BANKS", "count") == 2
    rng = np.random.default_rng(tb.seed)
    tb.pause_streams(random_pauses(tb.seed, 0.3, hold=12), random_pauses(tb.seed + 1, 0.4,
                                                                        hold=20))
    for image in range(2):
        for what, layer, flags in chain_layers(tb.cfg, rng, _image(tb.cfg, rng),
                                               send_first=image == 1):
            await run_chained(tb, layer, flags, what=f"image {image}: {what}")
    tb.pause_streams()
    tb.check_protocol()


async def _refused(tb, layer, flags, name, what):
    """Start a run of ``layer`` with ``flags``; expect error ``name``, done and idle; the rest
    of its packets is dropped, never stuck."""
    packets = pack_engine_layer(tb.cfg, dataclasses.replace(layer, engine=0), layer.engine,
                                chain=flags)
    assert await tb.control("start") == 0
    tb.out_check.tolerate_drop = True
    await tb.send_packets(packets)
    await tb.wait_done(timeout_cycles=20_000)
    code = await tb.get("ERROR", "core_code")
    assert code == tb.core_errors[name], \
        f"{what}: error {code}, expected {name} ({tb.core_errors[name]})"
    assert await tb.get("STATUS", "idle") == 1, f"{what}: not idle after the error"
    await with_timeout(tb.source.wait(), 200_000, "ns")
    await ClockCycles(tb.dut.clk, 10)
    tb.sink.clear()
    tb.out_check.tolerate_drop = False


@cocotb.test()
async def resident_refused(dut):
    tb = TB(dut)
    await tb.reset()
    cfg = tb.cfg
    rng = np.random.default_rng(tb.seed + 5)
    main, _ = _engines(cfg)
    C = cfg.engine.cols
    x = _image(cfg, rng)
    first = _conv(cfg, rng, main, x, C + 1)              # bank 0: x, bank 1: its output
    y = expected_output(engine_view(cfg, main), dataclasses.replace(first, engine=0))
    second = _conv(cfg, rng, main, y, C)
    other_shape = _conv(cfg, rng, main, x[:, :, :5], C)  # x one column narrower
    short = dict(residual=ResidualParams(stride=1), shortcut=y[:C])
    keep = dict(in_bank=0, keep=1, quiet=1)

    async def fill(what):
        await run_chained(tb, first, keep, what=f"{what}: fill the banks")

    good_resident = dict(in_bank=1, acts_resident=1)
    await _refused(tb, second, good_resident, "RESIDENT", "acts_resident after reset")
    await _refused(tb, first, dict(quiet=1), "RESIDENT", "quiet without keep")
    await fill("1")
    await _refused(tb, other_shape, dict(in_bank=0, acts_resident=1), "RESIDENT",
                   "acts_resident, bank of another shape")
    await fill("2")
    await _refused(tb, second, dict(in_bank=0, acts_resident=1), "RESIDENT",
                   "acts_resident, the other bank's shape")
    # short_resident: the other bank (1) holds first's output (C+1, 6, 6).
    await fill("3")
    await _refused(tb, second, dict(in_bank=0, short_resident=1), "RESIDENT",
                   "short_resident without a residual")
    await fill("4")
    await _refused(tb, _conv(cfg, rng, main, x, C, **short), dict(in_bank=0, short_resident=1),
                   "RESIDENT", "short_resident, source of another channel count")
    await _refused(tb, _conv(cfg, rng, main, x, C + 1, residual=ResidualParams(stride=1),
                             shortcut=y), dict(in_bank=0, short_resident=1), "RESIDENT",
                   "short_resident after an error cleared the banks")
    # The good resident run works after a refill; an error, then a soft reset, clear it.
    await fill("5")
    await run_chained(tb, second, good_resident, what="resident after the refill")
    await _refused(tb, first, dict(quiet=1), "RESIDENT", "an error")
    await _refused(tb, second, good_resident, "RESIDENT", "acts_resident after an error")
    await fill("6")
    assert await tb.control("soft_reset") == 0
    await ClockCycles(dut.clk, 4)
    await _refused(tb, second, good_resident, "RESIDENT", "acts_resident after a soft reset")
    # TOO_BIG: kept results beyond fmap_vectors (M * NT).
    nt = cfg.fmap_vectors // 36 + 1
    await _refused(tb, _conv(cfg, rng, main, x, nt * C), dict(keep=1), "TOO_BIG",
                   "kept results beyond fmap_vectors")
    await fill("7")
    await run_chained(tb, second, good_resident, what="after the errors")
    tb.check_protocol()
