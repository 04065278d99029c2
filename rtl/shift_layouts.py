"""The stream payloads of the address-shift unit: the single definition of every field's
offset and width (``docs/shift_unit.md``), as Amaranth layouts of a
:class:`~mulfree.params.shift_config.ShiftUnitConfig`."""

from amaranth.hdl import unsigned
from amaranth.lib import data

from ..params.config import unsigned_width
from ..params.shift_config import ShiftUnitConfig


__all__ = ["command_layout", "write_layout", "table_layout", "output_layout", "status_layout"]


def command_layout(cfg: ShiftUnitConfig):
    """A read command: which map to read, and how to shift it (see ``docs/shift_unit.md``)."""
    return data.StructLayout({
        "mode": unsigned(3),
        "base": unsigned(cfg.addr_width),
        "channels": unsigned(cfg.count_width),
        "height": unsigned(cfg.height_width),
        "width": unsigned(cfg.width_width),
        "rotate": unsigned(cfg.count_width),
        "radius": unsigned(cfg.radius_width),
        "group": unsigned(cfg.count_width),
        "order": unsigned(1),
    })


def write_layout(cfg: ShiftUnitConfig):
    """A write beat: one element, to ``addr`` if ``seek`` else to the port's next address."""
    return data.StructLayout({
        "data": unsigned(cfg.act_bits),
        "addr": unsigned(cfg.addr_width),
        "seek": unsigned(1),
    })


def table_layout(cfg: ShiftUnitConfig):
    """A shift-table write: channel ``channel`` reads at ``(y + dy, x + dx)`` in table mode."""
    return data.StructLayout({
        "channel": unsigned(cfg.table_channel_width),
        "dy": unsigned(cfg.table_entry_width),
        "dx": unsigned(cfg.table_entry_width),
    })


def output_layout(cfg: ShiftUnitConfig):
    """An output element with its position in the output map and the map's end."""
    return data.StructLayout({
        "data": unsigned(cfg.act_bits),
        "last": unsigned(1),
        "channel": unsigned(cfg.rotate_width),
        "y": unsigned(unsigned_width(cfg.height - 1)),
        "x": unsigned(unsigned_width(cfg.width - 1)),
    })


def status_layout():
    """Sticky error flags; each is set by a refused request and cleared by ``status_clear``."""
    return data.StructLayout({
        "table_error": unsigned(1),
        "cmd_error": unsigned(1),
        "write_error": unsigned(1),
    })
