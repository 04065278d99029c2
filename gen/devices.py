"""The FPGA devices a core is measured against, and the accounting of its resources.

The device table (:data:`DEVICES`, the boards' devices by :func:`board_devices`), the
resources a 7-series device counts from a synthesis' cells (:func:`resources_from_cells`),
their share of a device (:func:`device_share`) and whether they fit it (:func:`check_fit`).
Used by ``mulfree report`` and by the build plan, which refuses a core its board cannot hold.
"""

from dataclasses import dataclass


__all__ = ["ReportError", "FitError", "Device", "DEVICES", "REPORT_ONLY_BOARDS",
           "board_devices", "device_for", "RESOURCES", "FIT_LIMITS", "resources_from_cells",
           "device_share", "check_fit", "format_number"]


class ReportError(ValueError):
    """A bad input of the report (the message names the parameter, value and what is allowed).

    Raised by the device table, the energy model (:mod:`mulfree.gen.energy`) and the
    ``mulfree report`` flow. ``param`` holds the parameter's name (``"board"``,
    ``"energy_table.mult.FIX8"``...).
    """

    def __init__(self, param, message):
        super().__init__(message)
        self.param = param


class FitError(Exception):
    """The design does not fit the device; the message names every resource that overflows."""

    def __init__(self, message, overflows):
        super().__init__(message)
        self.overflows = overflows


# Devices -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Device:
    """The programmable-logic resources of one Xilinx 7-series device.

    ``slices`` bounds the ``CARRY4`` cells (one per slice); ``bram36`` counts 36 Kb block RAMs
    (a RAMB18E1 is half of one); ``lut`` counts every 6-input LUT site, logic, shift register
    and distributed RAM alike.
    """

    name: str
    lut: int
    ff: int
    slices: int
    bram36: int
    dsp: int


#: Zynq-7000 programmable logic. Source: Xilinx DS190, "Zynq-7000 SoC Data Sheet: Overview"
#: (v1.11.1, 2018), Table 3 "Zynq-7000 SoC Family" (the Z-7045 and Z-7020 columns): logic
#: cells' LUTs and flip-flops, "Block RAM (# 36 Kb Blocks)" and "DSP Slices"; slices = LUTs / 4
#: (four 6-input LUTs and one CARRY4 per 7-series slice, UG474).
DEVICES = {
    "xc7z045": Device("xc7z045", lut=218_600, ff=437_200, slices=54_650, bram36=545, dsp=900),
    "xc7z020": Device("xc7z020", lut=53_200, ff=106_400, slices=13_300, bram36=140, dsp=220),
}

#: Boards the report knows besides :data:`mulfree.gen.board.BOARDS` (which can also build for
#: its boards): boards with a device of :data:`DEVICES` but no build flow yet.
REPORT_ONLY_BOARDS = {"pynq_z1": "xc7z020", "zedboard": "xc7z020"}


def board_devices():
    """``{board: device name}``: :data:`mulfree.gen.board.BOARDS`, then :data:`REPORT_ONLY_BOARDS`.

    Imported here, not at the top: the board registry loads amaranth-boards' platforms.
    """
    from .board import BOARDS
    return {**REPORT_ONLY_BOARDS,
            **{name: board.device.lower() for name, board in BOARDS.items()}}


def device_for(board=None, device=None):
    """The :class:`Device` of a board name or a device (part) name.

    Parameters
    ----------
    board : str or None
        A board of :func:`board_devices` (``"zc706"``, ``"arty_z7_20"``...).
    device : str or None
        A device of :data:`DEVICES`; wins over ``board``. A full part name
        (``xc7z045ffg900-2``) is accepted: its package and speed grade are ignored.

    Raises
    ------
    ReportError
        If the board or device is unknown; the message lists the known ones.
    """
    if device is not None:
        key = str(device).lower()
        for name in DEVICES:
            if key.startswith(name):
                return DEVICES[name]
        raise ReportError("device", f"device must be one of {', '.join(DEVICES)}, "
                                    f"not {device!r}")
    boards = board_devices()
    if board not in boards:
        raise ReportError("board", f"board must be one of {', '.join(sorted(boards))}, "
                                   f"not {board!r}")
    name = boards[board]
    for known in DEVICES:
        if name.startswith(known):
            return DEVICES[known]
    raise ReportError("board", f"board {board!r} has device {name!r}, which has no resource "
                               f"table here (known devices: {', '.join(DEVICES)})")


# Resources ----------------------------------------------------------------------------------

#: The resources reported, in order: ``(key, label, device field)``.
RESOURCES = (("lut", "LUT", "lut"), ("ff", "FF", "ff"), ("carry4", "CARRY4", "slices"),
             ("bram36", "BRAM36", "bram36"), ("dsp", "DSP48E1", "dsp"))

#: The share of each resource ``--max-fit`` allows: LUTs and block RAM keep room for routing
#: and for the rest of the system (DMA, interconnect); the others may be used up.
FIT_LIMITS = {"lut": 0.70, "ff": 1.0, "carry4": 1.0, "bram36": 0.80, "dsp": 1.0}

# LUT sites a distributed-RAM cell takes; an SRL16E/SRLC32E takes one.
_LUTRAM_SITES = {"RAM32M": 4, "RAM64M": 4, "RAM32X1D": 2, "RAM64X1D": 2, "RAM128X1D": 4,
                 "RAM32X1S": 1, "RAM64X1S": 1, "RAM128X1S": 2, "RAM256X1S": 4}


def resources_from_cells(cells):
    """The resources a device counts, from Xilinx cell counts ``{cell type: count}``.

    Returns
    -------
    dict
        ``lut``: LUT sites (LUT1..LUT6 and INV, plus the sites of shift registers and
        distributed RAM, which occupy SLICEM LUTs); ``lut_logic``, ``lut_srl``, ``lut_ram``:
        its parts; ``ff``; ``carry4``; ``bram36``: RAMB36E1 + RAMB18E1 / 2; ``ramb36``,
        ``ramb18``; ``dsp``: DSP48E1.
    """
    from .synth import classify_cells
    totals = classify_cells(cells)
    lut_ram = sum(count * _LUTRAM_SITES.get(name, 1) for name, count in cells.items()
                  if name.startswith("RAM") and not name.startswith("RAMB"))
    ramb36, ramb18 = cells.get("RAMB36E1", 0), cells.get("RAMB18E1", 0)
    return {"lut": totals["lut"] + totals["srl"] + lut_ram, "lut_logic": totals["lut"],
            "lut_srl": totals["srl"], "lut_ram": lut_ram, "ff": totals["ff"],
            "carry4": totals["carry4"], "bram36": ramb36 + ramb18 / 2, "ramb36": ramb36,
            "ramb18": ramb18, "dsp": totals["dsp"]}


def device_share(resources, device: Device):
    """``{resource: used / available}`` for the keys of :data:`RESOURCES` (1.0 = full)."""
    return {key: resources[key] / getattr(device, field) for key, _, field in RESOURCES}


def check_fit(resources, device: Device, limits=None, what="the design"):
    """Raise :class:`FitError` naming every resource above ``limits`` (default: 100 %).

    Parameters
    ----------
    resources : dict
        As :func:`resources_from_cells` returns.
    device : Device
    limits : dict or None
        ``{resource: largest allowed share}``; missing keys allow 100 %.
    what : str
        The design's name, for the message.
    """
    limits = limits or {}
    over = []
    for key, label, field in RESOURCES:
        available = getattr(device, field)
        allowed = limits.get(key, 1.0) * available
        used = resources[key]
        if used > allowed:
            num = format_number
            bound = (f"{num(available)} available" if limits.get(key, 1.0) == 1.0 else
                     f"{num(allowed)} ({limits[key]:.0%} of {num(available)})")
            over.append({"resource": key, "used": used, "allowed": allowed,
                         "available": available, "over": used - allowed,
                         "text": f"{label} {num(used)} > {bound}: {num(used - allowed)} "
                                 f"over ({used / available:.1%} of the device)"})
    if over:
        raise FitError(f"{what} does not fit {device.name}: "
                       + "; ".join(o["text"] for o in over), over)


def format_number(value):
    """``value`` as text with thousands separators: one decimal for a fractional float
    (``4.5`` -> ``"4.5"``), none otherwise (``60000`` -> ``"60,000"``)."""
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{int(value):,}"

