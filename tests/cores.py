"""Cores the simulated-board tests share, so that a session compiles each one once, and
:func:`generated`: a core's Verilog and manifest, generated once per session."""

from mulfree.params.config import ArrayConfig
from mulfree.params.core_config import CoreConfig


__all__ = ["SMALL_BUFFERS", "SHIFT_4X4", "ADDER_3X5_S128", "generated"]

#: Buffers small enough to compile fast, large enough for the tests' layers.
SMALL_BUFFERS = dict(fmap_vectors=512, weight_rows=512, acc_entries=64, max_channels=64,
                     out_vectors=8)
#: A 4x4 shift core with a 64-bit stream.
SHIFT_4X4 = CoreConfig(engine=ArrayConfig(pe="shift", rows=4, cols=4, act_bits=8,
                                          weight_bits=5, max_k=256), **SMALL_BUFFERS)
#: A 3x5 adder core with a 128-bit stream (several beats per header, wide tdata).
ADDER_3X5_S128 = CoreConfig(engine=ArrayConfig(pe="adder", rows=3, cols=5, act_bits=8,
                                               max_k=256), stream_width=128, **SMALL_BUFFERS)


def generated(cfg: CoreConfig):
    """``(<top>.v, <top>.json)`` of the core ``cfg``, generated once per session into the
    session cache's ``designs`` (:func:`mulfree.sim.backend.design_for`, keyed by the config
    and the generator's sources, one writer at a time): the testbenches of one design share
    its files, and through them its simulator builds. Read-only for the tests."""
    from mulfree.sim.backend import design_for
    folder = design_for(cfg)
    return folder / f"{cfg.top_name}.v", folder / f"{cfg.top_name}.json"
