"""Verilog of the ShiftNet / AddressNet block (:mod:`mulfree.rtl.block`): one file, columns as
submodules. Its ``amaranth.sim`` runs are :mod:`mulfree.sim.shift_sim`.
"""

from amaranth.back import verilog

from ..params.config import ArrayConfig
from ..params.shift_config import ShiftUnitConfig


__all__ = ["build_shift_block", "shift_block_name", "convert_shift_block_verilog"]


def build_shift_block(shift_cfg: ShiftUnitConfig, array_cfg: ArrayConfig, **kwargs):
    from ..rtl.block import ShiftBlock
    return ShiftBlock(shift_cfg, array_cfg, **kwargs)


def shift_block_name(shift_cfg: ShiftUnitConfig, array_cfg: ArrayConfig):
    """Top module name: the two components' names joined."""
    return f"mulfree_shiftblock__{shift_cfg.top_name}__{array_cfg.top_name}"


def convert_shift_block_verilog(shift_cfg: ShiftUnitConfig, array_cfg: ArrayConfig, *,
                                name=None, **kwargs):
    block = build_shift_block(shift_cfg, array_cfg, **kwargs)
    return verilog.convert(block, name=name or shift_block_name(shift_cfg, array_cfg),
                           emit_src=False)
