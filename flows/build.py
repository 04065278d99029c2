"""The Vivado build flow: a self-contained batch project that puts a core on a Zynq-7000 board.

:func:`write_build` writes one folder holding everything needed to make a bitstream on a
machine with Vivado and to load it on the board:

* ``<top>.v``, ``<top>.json``: the core's Verilog and manifest (:func:`write_core_design`);
* ``<top>_bd.v``: a wrapper that renames the core's ports and gives them Vivado interface
  attributes (why: :func:`wrapper_verilog`);
* ``constraints.xdc``: the PL constraints (none are needed, the file says why);
* ``block_design.tcl``: the project and the block design: PS7, AXI DMA in simple mode,
  interconnects, reset, interrupts and the address map of :class:`~mulfree.host.zynq.ZynqConfig`;
* ``build.tcl``: synthesis, implementation, bitstream, XSA and the ``.bit.bin`` the Linux FPGA
  manager loads; ``run_vivado.sh`` and ``Makefile`` hold the exact command;
* ``mulfree.dtso``: the device tree overlay (FPGA region, two UIO devices, the DMA buffer);
* ``zynq.json``: the :class:`ZynqConfig` the runtime uses (``mulfree run --zynq-config``);
* ``README.txt``; and, written last, ``build.json``: what was generated, with each file's
  SHA-256. Its presence marks a finished folder.

The folder is generated in a temporary sibling and renamed into place, so a failed run never
leaves a half-written folder under the requested name. :func:`run_vivado` runs Vivado on a
finished folder and records the products.

Every address and name comes from :class:`ZynqConfig` (``mulfree.host.zynq``), the same object
the board runtime uses, so the hardware, the overlay and the runtime cannot disagree.
"""

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..spec.safe_io import (FileCheckError, check_output_dir, check_verilog_name, inside, read_json,
                      write_atomic)


__all__ = ["BuildError", "VivadoMissing", "VivadoFailed", "BuildPlan", "plan_build",
           "estimate_resources", "check_fit", "core_config_from_manifest", "wrapper_verilog",
           "constraints_xdc", "block_design_tcl", "build_tcl", "run_vivado_sh", "makefile",
           "overlay_dts", "zynq_json", "readme", "write_build", "read_build", "run_vivado",
           "first_error", "check_build_doc", "check_build_file", "BUILD_MARKER", "BUILD_KIND",
           "OVERLAY_SOURCE", "OVERLAY_BLOB", "ZYNQ_JSON", "VIVADO_ARGS", "CLOCK_MHZ_RANGE", "IP_VLNV", "IRQ_LINES",
           "add_build_options", "run_build"]

BUILD_MARKER = "build.json"
BUILD_KIND = "mulfree_vivado_build"
OVERLAY_SOURCE = "mulfree.dtso"
OVERLAY_BLOB = "mulfree.dtbo"
ZYNQ_JSON = "zynq.json"
#: The Vivado command, run in the build folder (``run_vivado.sh``, ``Makefile``, ``--run``).
VIVADO_ARGS = ("-mode", "batch", "-nojournal", "-log", "vivado.log", "-source", "build.tcl")
#: FCLK_CLK0 range (MHz): the PS7's PL clocks go up to 250 MHz (DS190/DS191).
CLOCK_MHZ_RANGE = (10.0, 250.0)
#: Vivado IP versions. These have not changed since Vivado 2015 through 2024.x.
IP_VLNV = {
    "processing_system7": "xilinx.com:ip:processing_system7:5.5",
    "axi_dma": "xilinx.com:ip:axi_dma:7.1",
    "axi_interconnect": "xilinx.com:ip:axi_interconnect:2.1",
    "xlconcat": "xilinx.com:ip:xlconcat:2.1",
    "proc_sys_reset": "xilinx.com:ip:proc_sys_reset:5.0",
}
#: What drives each ``IRQ_F2P`` line (through an xlconcat, in this order).
IRQ_LINES = ("core", "mm2s", "s2mm")
#: The smallest address range Vivado assigns.
MIN_RANGE = 0x1000
#: The GP0 master's address window on Zynq-7000 (UG585, "System Addresses").
GP0_WINDOW = (0x4000_0000, 0x8000_0000)
#: Width of the DMA's memory-mapped side at least: the S_AXI_HP port is 64 bits wide. PG021:
#: a stream may not be wider than the memory-mapped side, so a wider stream widens it too.
DMA_MM_MIN_WIDTH = 64
#: Block RAMs (36 Kb) kept free for the AXI DMA's buffers and the interconnects: a margin, not
#: a measurement (PG021's resource tables show a few at most for simple mode).
DMA_BRAM36_RESERVE = 4
#: Memories shallower than this go to LUTs (Vivado's distributed RAM), not block RAM.
LUTRAM_MAX_DEPTH = 64
#: Largest ``build.json`` read (mulfree writes a few KiB).
MAX_BUILD_JSON_BYTES = 1 << 20
#: Largest file a build folder may name (a ZC706 ``.bit.bin`` is 13 MiB).
MAX_BUILD_FILE_BYTES = 1 << 30
#: RAMB18E1 shapes (depth, width), simple dual port (UG473).
_RAMB18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))


class BuildError(ValueError):
    """A build input that cannot be used; ``param`` names the parameter."""

    def __init__(self, param, message):
        super().__init__(message)
        self.param = param


class VivadoMissing(RuntimeError):
    """``vivado`` is not on PATH. ``command`` is what to run, ``folder`` where."""

    def __init__(self, message, command, folder):
        super().__init__(message)
        self.command = command
        self.folder = folder


class VivadoFailed(RuntimeError):
    """Vivado ran and failed. ``error`` is the log's first ``ERROR:`` line (or None)."""

    def __init__(self, message, error, log):
        super().__init__(message)
        self.error = error
        self.log = log


# The plan: every number the generated files use -------------------------------------------

@dataclass(frozen=True)
class BuildPlan:
    """What one build folder describes. Built by :func:`plan_build`.

    Attributes
    ----------
    board : mulfree.gen.board.Board
    cfg : mulfree.spec.core_config.CoreConfig
    manifest : dict
        The core's manifest.
    clock_mhz : float
        Requested ``FCLK_CLK0`` frequency.
    zynq : mulfree.host.zynq.ZynqConfig
        Addresses and device names (``core_size`` from the manifest).
    core_range, dma_range : int
        Bytes of the two address windows in the block design.
    dma_mm_width : int
        Data width of the DMA's memory-mapped ports.
    resources : dict
        :func:`estimate_resources` of the manifest.
    """

    board: object
    cfg: object
    manifest: dict
    clock_mhz: float
    zynq: object
    core_range: int
    dma_range: int
    dma_mm_width: int
    resources: dict

    @property
    def top(self):
        return self.manifest["top"]

    @property
    def stream_width(self):
        return self.cfg.stream_width

    @property
    def wrapper(self):
        """Module name of the block-design wrapper."""
        return f"{self.top}_bd"

    @property
    def products(self):
        """What Vivado writes: ``{"bit", "bin", "xsa"}`` file names."""
        return {"bit": f"{self.top}.bit", "bin": f"{self.top}.bit.bin", "xsa": f"{self.top}.xsa"}

    @property
    def irq_spi(self):
        """``{line: GIC SPI number}`` for :data:`IRQ_LINES` (IRQ_F2P[0], [1], ...)."""
        from ..gen.board import irq_f2p_spi
        return {name: irq_f2p_spi(i) for i, name in enumerate(IRQ_LINES)}


def _ram18(depth, width):
    """RAMB18s for one ``depth x width`` memory: the cheapest shape."""
    return min(-(-width // w) * -(-depth // d) for d, w in _RAMB18_SHAPES)


def estimate_resources(manifest):
    """DSP48E1 and block RAM of a core, from its manifest (no synthesis).

    DSPs: one per PE for multiplier cores (measured, docs: TOOLCHAIN.md), none otherwise (the
    layer set-up multiplies by shift-and-add). Block RAM: every buffer of the manifest's
    ``core.buffers`` at least :data:`LUTRAM_MAX_DEPTH` deep, each in its cheapest RAMB18
    shape, two RAMB18s per 36 Kb block. An estimate of the core only; ``mulfree report``
    synthesizes for real.

    Returns
    -------
    dict
        ``dsp``, ``ramb18``, ``bram36`` (float) and ``memories``: ``[(name, depth, width,
        ramb18)]``.
    """
    params = manifest["parameters"]["engine"]
    pes = params["rows"] * params["cols"]
    dsp = pes if params["pe"] == "mult" else 0
    buffers = manifest["core"]["buffers"]
    vector_bits = manifest["stream"]["vector_bits"]
    memories = []
    for name, b in buffers.items():
        if name == "post_table":
            depth, width, banks = b["channels"], vector_bits["PARAMS"], 1
        else:
            depth, width, banks = b["depth"], b["width"], b.get("banks", 1)
        if banks > 1:
            width //= banks
        n = banks * _ram18(depth, width) if depth >= LUTRAM_MAX_DEPTH else 0
        memories.append((name, depth, width, n))
    ramb18 = sum(m[3] for m in memories)
    return {"dsp": dsp, "ramb18": ramb18, "bram36": ramb18 / 2, "memories": memories}


def check_fit(manifest, board, resources=None):
    """Raise :class:`BuildError` (``param="board"``) if the core cannot fit ``board``'s device.

    Checks DSP48E1 (multiplier cores) and block RAM (the core's buffers plus
    :data:`DMA_BRAM36_RESERVE`) against the device table of :mod:`mulfree.flows.report`.
    """
    from .report import device_for
    device = device_for(board=None, device=board.device)
    res = resources if resources is not None else estimate_resources(manifest)
    p = manifest["parameters"]["engine"]
    over = []
    if res["dsp"] > device.dsp:
        over.append(f"DSP48E1: {res['dsp']} needed ({p['rows']}x{p['cols']} mult PEs, one "
                    f"each), {device.dsp} on the device: {res['dsp'] - device.dsp} too many")
    bram = -(-res["ramb18"] // 2) + DMA_BRAM36_RESERVE
    if bram > device.bram36:
        biggest = max(res["memories"], key=lambda m: m[3])
        over.append(f"block RAM: about {bram} BRAM36 needed (the core's buffers, largest "
                    f"{biggest[0]} {biggest[1]}x{biggest[2]} bits, plus {DMA_BRAM36_RESERVE} "
                    f"for the DMA), {device.bram36} on the device: {bram - device.bram36} too "
                    f"many")
    if over:
        raise BuildError("board", f"the core {manifest['top']} does not fit {board.name} "
                                  f"({board.part}): " + "; ".join(over))


def _zynq_config(manifest):
    from ..host.zynq import ZynqConfig
    try:
        return ZynqConfig.for_manifest(manifest)
    except ValueError as exc:
        raise BuildError("axil_addr_width", f"axil_addr_width "
                         f"{manifest['registers']['addr_width']} gives a register window the "
                         f"board's address map cannot hold: {exc}") from None


def plan_build(cfg, board, clock_mhz=None, manifest=None):
    """The :class:`BuildPlan` of ``cfg`` on ``board``; checks the fit, the clock and addresses.

    Parameters
    ----------
    cfg : CoreConfig
    board : mulfree.gen.board.Board or str
    clock_mhz : float, optional
        ``FCLK_CLK0`` in MHz (default: the board's, 100).
    manifest : dict, optional
        The core's manifest (default: built from ``cfg``, which is cheap: no elaboration).

    Raises
    ------
    BuildError
    """
    from ..gen.board import BoardError, get_board
    from ..gen.core_manifest import core_manifest
    if isinstance(board, str):
        try:
            board = get_board(board)
        except BoardError as exc:
            raise BuildError("board", str(exc)) from None
    if clock_mhz is None:
        clock_mhz = board.fclk0_mhz
    lo, hi = CLOCK_MHZ_RANGE
    if not isinstance(clock_mhz, (int, float)) or isinstance(clock_mhz, bool) \
            or not lo <= clock_mhz <= hi:
        raise BuildError("clock_mhz", f"clock_mhz must be a number in [{lo:g}, {hi:g}] (the "
                                      f"PS7's FCLK_CLK0 range), not {clock_mhz!r}")
    if manifest is None:
        manifest = core_manifest(cfg)
    resources = estimate_resources(manifest)
    check_fit(manifest, board, resources)
    zynq = _zynq_config(manifest)
    core_range = max(zynq.core_size, MIN_RANGE)
    dma_range = max(zynq.dma_size, MIN_RANGE)
    windows = [("core_base", zynq.core_base, core_range), ("dma_base", zynq.dma_base, dma_range)]
    for name, base, size in windows:
        if base % size or not GP0_WINDOW[0] <= base and base + size <= GP0_WINDOW[1]:
            raise BuildError("axil_addr_width", f"the {name} window {base:#x}+{size:#x} must "
                             f"be aligned to its size and inside the GP0 window "
                             f"[{GP0_WINDOW[0]:#x}, {GP0_WINDOW[1]:#x}); lower "
                             f"axil_addr_width (now {manifest['registers']['addr_width']})")
    (_, b0, s0), (_, b1, s1) = windows
    if b0 < b1 + s1 and b1 < b0 + s0:
        raise BuildError("axil_addr_width", f"the core's window {b0:#x}+{s0:#x} overlaps the "
                         f"DMA's {b1:#x}+{s1:#x}; lower axil_addr_width (now "
                         f"{manifest['registers']['addr_width']})")
    return BuildPlan(board=board, cfg=cfg, manifest=manifest, clock_mhz=float(clock_mhz),
                     zynq=zynq, core_range=core_range, dma_range=dma_range,
                     dma_mm_width=max(DMA_MM_MIN_WIDTH, cfg.stream_width), resources=resources)


def core_config_from_manifest(path):
    """``(CoreConfig, manifest)`` of a core manifest file (``mulfree gen --core``).

    The file is untrusted: it is read strictly (:func:`~mulfree.spec.safe_io.read_json`) and
    only its ``top`` (a Verilog identifier, checked) and ``parameters`` (checked by
    :class:`CoreConfig`) are used; everything generated comes from this generator.

    Raises
    ------
    BuildError
        ``param="config"``, one line, for a file that cannot be read or used.
    """
    try:
        doc = read_json(path, "config", what="core manifest")
    except FileCheckError as exc:
        raise BuildError("config", str(exc)) from None
    if doc.get("kind") != "core":
        raise BuildError("config", f"config must be a core manifest (kind 'core', from mulfree "
                                   f"gen --core), not {str(path)!r} of kind "
                                   f"{_short(doc.get('kind'))}")
    from ..spec.config import ConfigError
    from ..spec.core_config import CoreConfig
    params, top = doc.get("parameters"), doc.get("top")
    if not isinstance(params, dict) or not isinstance(params.get("engine"), dict):
        raise BuildError("config", f"config {str(path)!r}: parameters must be an object with "
                                   f"an engine object, not {_short(params)}")
    try:
        check_verilog_name(top, "top")
        cfg = CoreConfig.from_params(params)
        cfg = CoreConfig(**{**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__},
                            "name": top})
    # TypeError: unknown or missing parameters; ValueError (ConfigError, FileCheckError): a
    # value out of range or of the wrong type. Nothing else reaches the user as a traceback.
    except (ConfigError, FileCheckError, KeyError, TypeError, ValueError, OverflowError) as exc:
        first = " ".join(str(exc).split()) or type(exc).__name__
        raise BuildError("config", f"config {str(path)!r} has parameters this generator "
                                   f"cannot build: {first}") from None
    # A key left out would silently take its default: a different core than the file's.
    canonical = cfg.params()
    missing = [k for k in canonical if k not in params] + \
        [f"engine.{k}" for k in canonical["engine"] if k not in params["engine"]]
    if missing:
        raise BuildError("config", f"config {str(path)!r}: parameters must list every "
                                   f"parameter, missing {', '.join(missing)}")
    return cfg, doc


def _short(value, limit=60):
    """``repr(value)`` cut to ``limit`` characters, for one-line messages about file contents."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# Formatting helpers --------------------------------------------------------------------------

def _hex(value):
    return f"0x{value:08X}"


def _range(size):
    """A Vivado address range: ``4K``, ``64K``, ``1M``, ``1G``."""
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return str(size)


#: A device tree node name (the Devicetree Specification's characters, at most 31).
_DT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9,._+-]{0,30}")


def _tcl_word(value):
    """``value`` as one Tcl word (braced when it holds spaces or special characters)."""
    text = str(value)
    if text and re.fullmatch(r"[A-Za-z0-9_.:/*+-]+", text):
        return text
    if "{" in text or "}" in text or "\\" in text:
        raise BuildError("value", f"cannot quote {text!r} for Tcl")
    return "{" + text + "}"


def _header(plan, comment, what):
    return [f"{comment} Generated by mulfree {__version__} for {plan.board.name} "
            f"({plan.board.part}): {what}",
            f"{comment} Core {plan.top}; do not edit, regenerate with mulfree build."]


def _mhz(value):
    return f"{value:g}"


# The wrapper ---------------------------------------------------------------------------------

_BUSES = {
    "s_axil": ("xilinx.com:interface:aximm:1.0", "PROTOCOL AXI4LITE, DATA_WIDTH 32"),
    "s_axis": ("xilinx.com:interface:axis:1.0", None),
    "m_axis": ("xilinx.com:interface:axis:1.0", None),
}


def wrapper_verilog(plan):
    """``<top>_bd.v``: the core with Vivado interface attributes on renamed ports.

    Amaranth names ports ``<bus>__<signal>`` and cannot put attributes on them. Vivado's IP
    integrator, adding a module reference (``create_bd_cell -type module -reference``),
    groups ports into bus interfaces from ``X_INTERFACE_INFO`` attributes (UG994, "Inferring
    Interfaces from HDL"): explicit and independent of name-guessing, so it works the same in
    batch mode. This wrapper declares ``s_axil_*``, ``s_axis_*``, ``m_axis_*`` with those
    attributes, the clock with ``ASSOCIATED_BUSIF``, the reset as active high and ``irq`` as a
    level-high interrupt, and instantiates the core. It adds ``s_axis_tkeep`` (ignored: the
    DMA sends whole beats) and ``m_axis_tkeep`` (all ones: the core sends whole beats), so
    the DMA's TKEEP ports are driven instead of left to Vivado's defaults.
    """
    ports = plan.manifest["ports"]
    names = {p["name"] for p in ports}
    for p in ports:
        bus = p["name"].split("__")[0]
        if p["name"] not in ("clk", "rst", "irq") and bus not in _BUSES:
            raise BuildError("config", f"the core's port {p['name']!r} belongs to no interface "
                                       f"the block design knows (clk, rst, irq, "
                                       f"{', '.join(b + '__*' for b in _BUSES)})")
    for need in ("clk", "rst", "irq", "s_axil__awaddr", "s_axis__tdata", "m_axis__tdata"):
        if need not in names:
            raise BuildError("config", f"the core has no port {need!r}: not a mulfree core "
                                       f"manifest")
    keep = plan.stream_width // 8
    decl, conns = [], []
    seen = set()

    def port(attrs, direction, width, name):
        rng = f"[{width - 1}:0] " if width > 1 else ""
        decl.append("".join(f"    (* {a} *)\n" for a in attrs)
                    + f"    {direction} wire {rng}{name}")

    for p in ports:
        name, width = p["name"], p["width"]
        direction = "input" if p["direction"] == "input" else "output"
        if name == "clk":
            port(['X_INTERFACE_INFO = "xilinx.com:signal:clock:1.0 clk CLK"',
                  'X_INTERFACE_PARAMETER = "ASSOCIATED_BUSIF s_axil:s_axis:m_axis, '
                  'ASSOCIATED_RESET rst"'], direction, width, "clk")
            conns.append((name, "clk"))
            continue
        if name == "rst":
            port(['X_INTERFACE_INFO = "xilinx.com:signal:reset:1.0 rst RST"',
                  'X_INTERFACE_PARAMETER = "POLARITY ACTIVE_HIGH"'], direction, width, "rst")
            conns.append((name, "rst"))
            continue
        if name == "irq":
            port(['X_INTERFACE_INFO = "xilinx.com:signal:interrupt:1.0 irq INTERRUPT"',
                  'X_INTERFACE_PARAMETER = "SENSITIVITY LEVEL_HIGH"'], direction, width, "irq")
            conns.append((name, "irq"))
            continue
        bus, signal = name.split("__", 1)
        vlnv, param = _BUSES[bus]
        attrs = [f'X_INTERFACE_INFO = "{vlnv} {bus} {signal.upper()}"']
        if bus not in seen:
            seen.add(bus)
            if param:
                attrs.append(f'X_INTERFACE_PARAMETER = "{param}"')
        port(attrs, direction, width, f"{bus}_{signal}")
        conns.append((name, f"{bus}_{signal}"))
        if name == "s_axis__tlast":
            port([f'X_INTERFACE_INFO = "{_BUSES["s_axis"][0]} s_axis TKEEP"'], "input", keep,
                 "s_axis_tkeep")
        if name == "m_axis__tlast":
            port([f'X_INTERFACE_INFO = "{_BUSES["m_axis"][0]} m_axis TKEEP"'], "output", keep,
                 "m_axis_tkeep")
    lines = _header(plan, "//", "the core with Vivado interface attributes")
    lines += [
        "// Amaranth names the core's ports <bus>__<signal>; Vivado's IP integrator groups",
        "// ports into interfaces from X_INTERFACE_INFO attributes, which this wrapper adds.",
        f"module {plan.wrapper} (",
        ",\n".join(decl),
        ");",
        "    // The core sends whole beats; the DMA's S2MM needs every byte marked valid.",
        f"    assign m_axis_tkeep = {{{keep}{{1'b1}}}};",
        "",
        f"    {plan.top} core (",
        ",\n".join(f"        .{inner}({outer})" for inner, outer in conns),
        "    );",
        "endmodule",
        "",
    ]
    return "\n".join(lines)


# Constraints ---------------------------------------------------------------------------------

def constraints_xdc(plan):
    """``constraints.xdc``: none are needed; the file says why, for the next reader."""
    from ..gen.board import PL_CLOCK
    lines = _header(plan, "#", "PL constraints")
    lines += [
        "#",
        "# The accelerator uses no PL package pins: its registers, data and interrupts all",
        f"# go through the processing system ({plan.board.gp_port}, {plan.board.hp_port}, "
        "IRQ_F2P), so",
        "# nothing needs a location or an I/O standard here.",
        f"# Its clock is the PS7's {PL_CLOCK} at {_mhz(plan.clock_mhz)} MHz (requested); the "
        "processing_system7",
        "# IP's own constraints create that clock (clk_fpga_0), so no create_clock is needed.",
        "# Everything (core, DMA, interconnects) is on that one clock: no clock crossings.",
        f"# The board's PL pins (oscillator, LEDs, buttons) are in mulfree.gen.board "
        f"({plan.board.platform.__name__}).",
        "",
    ]
    return "\n".join(lines)


# The block design ----------------------------------------------------------------------------

def block_design_tcl(plan):
    """``block_design.tcl``: the Vivado project and the block design (see module docstring)."""
    from ..gen.board import PL_CLOCK, PL_RESET
    b, z = plan.board, plan.zynq
    gp, hp = b.gp_port, b.hp_port
    clocks = [f"ps7/{gp}_ACLK", f"ps7/{hp}_ACLK", "rst_fclk0/slowest_sync_clk", "core/clk",
              "dma/s_axi_lite_aclk", "dma/m_axi_mm2s_aclk", "dma/m_axi_s2mm_aclk",
              "gp0_ic/ACLK", "gp0_ic/S00_ACLK", "gp0_ic/M00_ACLK", "gp0_ic/M01_ACLK",
              "hp0_ic/ACLK", "hp0_ic/S00_ACLK", "hp0_ic/S01_ACLK", "hp0_ic/M00_ACLK"]
    peripheral_resets = ["gp0_ic/S00_ARESETN", "gp0_ic/M00_ARESETN", "gp0_ic/M01_ARESETN",
                         "hp0_ic/S00_ARESETN", "hp0_ic/S01_ARESETN", "hp0_ic/M00_ARESETN",
                         "dma/axi_resetn"]
    preset = " \\\n    ".join(f"CONFIG.{k} {_tcl_word(v)}" for k, v in b.ps7_preset)
    lines = _header(plan, "#", "the Vivado project and block design")
    lines += [
        "# Sourced by build.tcl; can also be sourced alone (Vivado's Tcl console) to open the",
        "# block design. Needs Vivado 2020.2 or newer (assign_bd_address -offset/-range).",
        "",
        "set mulfree_dir [file normalize [file dirname [info script]]]",
        f"set mulfree_top {plan.top}",
        f"set mulfree_part {b.part}",
        f"set mulfree_clock_mhz {_mhz(plan.clock_mhz)}",
        "",
        f"create_project -force mulfree_{b.name} [file join $mulfree_dir vivado] "
        "-part $mulfree_part",
        "# With the board's Vivado board files installed, apply the board's PS7 preset "
        "(DDR, MIO);",
        "# without them, the DDR and reference clock below (the PL image does not depend on "
        "them).",
        f"set mulfree_board_part [lindex [get_board_parts -quiet -latest_file_version "
        f"{_tcl_word(b.board_part)}] 0]",
        'if {$mulfree_board_part ne ""} {',
        "    set_property board_part $mulfree_board_part [current_project]",
        "}",
        "add_files -norecurse [list [file join $mulfree_dir $mulfree_top.v] "
        "[file join $mulfree_dir ${mulfree_top}_bd.v]]",
        "add_files -fileset constrs_1 -norecurse [file join $mulfree_dir constraints.xdc]",
        "update_compile_order -fileset sources_1",
        "",
        "create_bd_design system",
        "",
        "# Processing system: the core's clock and reset come from here "
        f"({PL_CLOCK}, {PL_RESET}).",
        f"create_bd_cell -type ip -vlnv {IP_VLNV['processing_system7']} ps7",
        'set mulfree_preset [expr {$mulfree_board_part ne "" ? 1 : 0}]',
        "apply_bd_automation -rule xilinx.com:bd_rule:processing_system7 -config [list "
        'make_external "FIXED_IO, DDR" apply_board_preset $mulfree_preset Master Disable '
        "Slave Disable] [get_bd_cells ps7]",
        "if {!$mulfree_preset} {",
        f"    set_property -dict [list \\\n    {preset} \\\n    ] [get_bd_cells ps7]",
        "}",
        "set_property -dict [list \\",
        "    CONFIG.PCW_FPGA0_PERIPHERAL_FREQMHZ $mulfree_clock_mhz \\",
        "    CONFIG.PCW_EN_CLK0_PORT 1 \\",
        "    CONFIG.PCW_EN_RST0_PORT 1 \\",
        f"    CONFIG.PCW_USE_{gp} 1 \\",
        f"    CONFIG.PCW_USE_{hp} 1 \\",
        f"    CONFIG.PCW_{hp}_DATA_WIDTH 64 \\",
        "    CONFIG.PCW_USE_FABRIC_INTERRUPT 1 \\",
        "    CONFIG.PCW_IRQ_F2P_INTR 1 \\",
        "    ] [get_bd_cells ps7]",
        "",
        f"# Reset: {PL_RESET} (asynchronous, active low) synchronized to {PL_CLOCK}.",
        f"create_bd_cell -type ip -vlnv {IP_VLNV['proc_sys_reset']} rst_fclk0",
        "",
        "# The core (a module reference of the wrapper in <top>_bd.v).",
        f"create_bd_cell -type module -reference {plan.wrapper} core",
        "",
        "# AXI DMA in simple (direct register) mode: MM2S feeds the core, S2MM takes its results.",
        f"create_bd_cell -type ip -vlnv {IP_VLNV['axi_dma']} dma",
        "set_property -dict [list \\",
        "    CONFIG.c_include_sg 0 \\",
        f"    CONFIG.c_sg_length_width {z.dma_length_bits} \\",
        f"    CONFIG.c_m_axis_mm2s_tdata_width {plan.stream_width} \\",
        f"    CONFIG.c_s_axis_s2mm_tdata_width {plan.stream_width} \\",
        f"    CONFIG.c_m_axi_mm2s_data_width {plan.dma_mm_width} \\",
        f"    CONFIG.c_m_axi_s2mm_data_width {plan.dma_mm_width} \\",
        "    CONFIG.c_include_mm2s_dre 0 \\",
        "    CONFIG.c_include_s2mm_dre 0 \\",
        "    CONFIG.c_mm2s_burst_size 16 \\",
        "    CONFIG.c_s2mm_burst_size 16 \\",
        "    ] [get_bd_cells dma]",
        "",
        f"# {gp} -> the core's registers and the DMA's registers.",
        f"create_bd_cell -type ip -vlnv {IP_VLNV['axi_interconnect']} gp0_ic",
        "set_property -dict [list CONFIG.NUM_SI 1 CONFIG.NUM_MI 2] [get_bd_cells gp0_ic]",
        f"connect_bd_intf_net [get_bd_intf_pins ps7/{gp}] [get_bd_intf_pins gp0_ic/S00_AXI]",
        "connect_bd_intf_net [get_bd_intf_pins gp0_ic/M00_AXI] [get_bd_intf_pins core/s_axil]",
        "connect_bd_intf_net [get_bd_intf_pins gp0_ic/M01_AXI] "
        "[get_bd_intf_pins dma/S_AXI_LITE]",
        "",
        f"# The DMA's two memory masters -> {hp} (DDR).",
        f"create_bd_cell -type ip -vlnv {IP_VLNV['axi_interconnect']} hp0_ic",
        "set_property -dict [list CONFIG.NUM_SI 2 CONFIG.NUM_MI 1] [get_bd_cells hp0_ic]",
        "connect_bd_intf_net [get_bd_intf_pins dma/M_AXI_MM2S] [get_bd_intf_pins hp0_ic/S00_AXI]",
        "connect_bd_intf_net [get_bd_intf_pins dma/M_AXI_S2MM] [get_bd_intf_pins hp0_ic/S01_AXI]",
        f"connect_bd_intf_net [get_bd_intf_pins hp0_ic/M00_AXI] [get_bd_intf_pins ps7/{hp}]",
        "",
        "# Streams.",
        "connect_bd_intf_net [get_bd_intf_pins dma/M_AXIS_MM2S] [get_bd_intf_pins core/s_axis]",
        "connect_bd_intf_net [get_bd_intf_pins core/m_axis] [get_bd_intf_pins dma/S_AXIS_S2MM]",
        "",
        f"# Interrupts -> IRQ_F2P[{len(IRQ_LINES) - 1}:0]: " + ", ".join(
            f"[{i}] {name}" for i, name in enumerate(IRQ_LINES)) + ".",
        f"create_bd_cell -type ip -vlnv {IP_VLNV['xlconcat']} irq_concat",
        f"set_property -dict [list CONFIG.NUM_PORTS {len(IRQ_LINES)}] [get_bd_cells irq_concat]",
        "connect_bd_net [get_bd_pins core/irq] [get_bd_pins irq_concat/In0]",
        "connect_bd_net [get_bd_pins dma/mm2s_introut] [get_bd_pins irq_concat/In1]",
        "connect_bd_net [get_bd_pins dma/s2mm_introut] [get_bd_pins irq_concat/In2]",
        "connect_bd_net [get_bd_pins irq_concat/dout] [get_bd_pins ps7/IRQ_F2P]",
        "",
        f"# One clock, {PL_CLOCK}, for everything.",
        f"connect_bd_net [get_bd_pins ps7/{PL_CLOCK}] [get_bd_pins [list \\",
        *[f"    {c} \\" for c in clocks],
        "    ]]",
        f"connect_bd_net [get_bd_pins ps7/{PL_RESET}] [get_bd_pins rst_fclk0/ext_reset_in]",
        "connect_bd_net [get_bd_pins rst_fclk0/interconnect_aresetn] "
        "[get_bd_pins [list gp0_ic/ARESETN hp0_ic/ARESETN]]",
        "connect_bd_net [get_bd_pins rst_fclk0/peripheral_aresetn] [get_bd_pins [list \\",
        *[f"    {r} \\" for r in peripheral_resets],
        "    ]]",
        "connect_bd_net [get_bd_pins rst_fclk0/peripheral_reset] [get_bd_pins core/rst]",
        "",
        "# Addresses: mulfree.host.zynq.ZynqConfig, the same the runtime and the overlay use.",
        f"assign_bd_address -offset {_hex(z.core_base)} -range {_range(plan.core_range)} "
        "-target_address_space [get_bd_addr_spaces ps7/Data] "
        "[get_bd_addr_segs core/s_axil/*] -force",
        f"assign_bd_address -offset {_hex(z.dma_base)} -range {_range(plan.dma_range)} "
        "-target_address_space [get_bd_addr_spaces ps7/Data] "
        "[get_bd_addr_segs dma/S_AXI_LITE/Reg] -force",
        "assign_bd_address -target_address_space [get_bd_addr_spaces dma/Data_MM2S] "
        f"[get_bd_addr_segs ps7/{hp}/{b.hp_segment}] -force",
        "assign_bd_address -target_address_space [get_bd_addr_spaces dma/Data_S2MM] "
        f"[get_bd_addr_segs ps7/{hp}/{b.hp_segment}] -force",
        "",
        "validate_bd_design",
        "save_bd_design",
        'puts "mulfree: FCLK_CLK0 requested $mulfree_clock_mhz MHz, the PS7 gives '
        '[get_property CONFIG.PCW_ACT_FPGA0_PERIPHERAL_FREQMHZ [get_bd_cells ps7]] MHz"',
        "set mulfree_wrapper [make_wrapper -files [get_files system.bd] -top]",
        "add_files -norecurse $mulfree_wrapper",
        "set_property top system_wrapper [current_fileset]",
        "update_compile_order -fileset sources_1",
        "",
    ]
    return "\n".join(lines)


def build_tcl(plan):
    """``build.tcl``: the block design, then synthesis to ``.bit``, ``.xsa`` and ``.bit.bin``."""
    p = plan.products
    lines = _header(plan, "#", "synthesis, implementation, bitstream, XSA, .bit.bin")
    lines += [
        f"# Run in this folder: vivado {' '.join(VIVADO_ARGS)}",
        "# Vivado jobs: MULFREE_VIVADO_JOBS (default 2).",
        "source [file join [file dirname [info script]] block_design.tcl]",
        "",
        "proc mulfree_fail {message} {",
        '    puts "ERROR: \\[mulfree\\] $message"',
        "    exit 1",
        "}",
        "set mulfree_jobs 2",
        "if {[info exists ::env(MULFREE_VIVADO_JOBS)]} {",
        "    set mulfree_jobs $::env(MULFREE_VIVADO_JOBS)",
        "}",
        "",
        "launch_runs synth_1 -jobs $mulfree_jobs",
        "wait_on_run synth_1",
        'if {[get_property PROGRESS [get_runs synth_1]] ne "100%"} {',
        '    mulfree_fail "synthesis failed: see [file join [get_property DIRECTORY '
        '[get_runs synth_1]] runme.log]"',
        "}",
        "launch_runs impl_1 -to_step write_bitstream -jobs $mulfree_jobs",
        "wait_on_run impl_1",
        'if {[get_property PROGRESS [get_runs impl_1]] ne "100%"} {',
        '    mulfree_fail "implementation failed: see [file join [get_property DIRECTORY '
        '[get_runs impl_1]] runme.log]"',
        "}",
        "open_run impl_1",
        "report_utilization -file [file join $mulfree_dir utilization.rpt]",
        "report_timing_summary -file [file join $mulfree_dir timing.rpt]",
        "set mulfree_wns [get_property SLACK [get_timing_paths -max_paths 1 -nworst 1 -setup]]",
        'if {$mulfree_wns ne "" && $mulfree_wns < 0} {',
        '    mulfree_fail "timing not met at $mulfree_clock_mhz MHz: worst setup slack '
        '$mulfree_wns ns (timing.rpt); build with a lower --clock-mhz"',
        "}",
        "",
        "file copy -force [file join [get_property DIRECTORY [get_runs impl_1]] "
        f"system_wrapper.bit] [file join $mulfree_dir {p['bit']}]",
        "# The XSA (hardware platform with the bitstream) for PetaLinux / Vitis.",
        f"write_hw_platform -fixed -include_bit -force -file [file join $mulfree_dir {p['xsa']}]",
        "# The Linux FPGA manager on Zynq-7000 loads a .bit.bin: the bitstream without its",
        "# header, 32-bit words in SelectMAP order (no bit swap).",
        "write_cfgmem -force -format bin -interface SMAPx32 -disablebitswap "
        f"-loadbit [list up 0x0 [file join $mulfree_dir {p['bit']}]] "
        f"-file [file join $mulfree_dir {p['bin']}]",
        f'puts "mulfree: wrote {p["bit"]}, {p["bin"]} and {p["xsa"]} in $mulfree_dir"',
        "",
    ]
    return "\n".join(lines)


def _vivado_command():
    return "vivado " + " ".join(VIVADO_ARGS)


def run_vivado_sh(plan):
    """``run_vivado.sh``: the Vivado command, from any working directory."""
    return "\n".join([
        "#!/bin/sh",
        *_header(plan, "#", "run Vivado in batch mode on this folder"),
        f"# Writes {', '.join(plan.products.values())} here; the log is vivado.log.",
        "set -e",
        'cd "$(dirname "$0")"',
        f'exec "${{VIVADO:-vivado}}" {" ".join(VIVADO_ARGS)}',
        "",
    ])


def makefile(plan):
    """``Makefile``: ``make`` runs Vivado, ``make dtbo`` compiles the overlay."""
    p = plan.products
    sources = f"build.tcl block_design.tcl constraints.xdc {plan.top}.v {plan.top}_bd.v"
    return "\n".join([
        *_header(plan, "#", "make targets"),
        "VIVADO ?= vivado",
        "DTC ?= dtc",
        "",
        ".PHONY: all dtbo clean",
        f"all: {p['bin']}",
        "",
        f"{p['bin']}: {sources}",
        f"\t$(VIVADO) {' '.join(VIVADO_ARGS)}",
        "",
        f"dtbo: {OVERLAY_BLOB}",
        f"{OVERLAY_BLOB}: {OVERLAY_SOURCE}",
        "\t$(DTC) -@ -I dts -O dtb -o $@ $<",
        "",
        "clean:",
        f"\trm -rf vivado .Xil vivado*.log vivado*.jou {' '.join(p.values())} "
        f"{p['bin'].removesuffix('.bin')}.prm utilization.rpt timing.rpt {OVERLAY_BLOB}",
        "",
    ])


# Linux: the overlay and the runtime's config -------------------------------------------------

def overlay_dts(plan):
    """``mulfree.dtso``: FPGA region (bitstream), two UIO devices (FCLK0 rate), the DMA buffer.

    UIO names come from the node names (``uio_pdrv_genirq`` names a device after its node),
    so the nodes are named after :attr:`ZynqConfig.core_uio` and ``dma_uio``. ``generic-uio``
    binds only with ``uio_pdrv_genirq.of_id=generic-uio`` on the kernel command line (or as a
    module parameter); the buffer needs the u-dma-buf module.
    """
    b, z, lx = plan.board, plan.zynq, plan.board.linux
    # Every name below lands in device tree source: a quote, brace or newline in one would
    # change the overlay's structure, so each must be a plain device tree node name.
    for field in ("core_uio", "dma_uio", "udmabuf"):
        value = getattr(z, field)
        if not isinstance(value, str) or not _DT_NAME.fullmatch(value):
            raise BuildError("zynq", f"zynq {field} must be a device tree node name (1..31 of "
                                     f"A-Z a-z 0-9 , . _ + -), not {_short(value)}")
    check_verilog_name(plan.top, "top")
    spi = plan.irq_spi
    hz = round(plan.clock_mhz * 1e6)
    return "\n".join([
        f"// Generated by mulfree {__version__} for {b.name} ({b.part}): device tree overlay",
        f"// for the core {plan.top}. Compile: dtc -@ -I dts -O dtb -o {OVERLAY_BLOB} "
        f"{OVERLAY_SOURCE}",
        f"// Apply: mulfree deploy (configfs: mkdir /sys/kernel/config/device-tree/overlays/"
        f"mulfree; cat {OVERLAY_BLOB} > .../dtbo).",
        f"// Needs a base device tree built with -@ holding the labels {lx.fpga_region}, "
        f"{lx.bus}, {lx.intc} and {lx.clkc}",
        "// (Xilinx's zynq-7000.dtsi), uio_pdrv_genirq.of_id=generic-uio and the u-dma-buf "
        "module.",
        "/dts-v1/;",
        "/plugin/;",
        "",
        "/ {",
        "\tfragment@0 {",
        f"\t\ttarget = <&{lx.fpga_region}>;",
        "\t\t__overlay__ {",
        f"\t\t\t/* The FPGA manager loads /lib/firmware/{plan.products['bin']}. */",
        f"\t\t\tfirmware-name = \"{plan.products['bin']}\";",
        "\t\t};",
        "\t};",
        "",
        "\tfragment@1 {",
        f"\t\ttarget = <&{lx.bus}>;",
        "\t\t__overlay__ {",
        "\t\t\t#address-cells = <1>;",
        "\t\t\t#size-cells = <1>;",
        "",
        "\t\t\t/* The core's AXI4-Lite registers; irq on IRQ_F2P[0]. */",
        f"\t\t\t{z.core_uio}@{z.core_base:x} {{",
        "\t\t\t\tcompatible = \"generic-uio\";",
        f"\t\t\t\treg = <0x{z.core_base:x} 0x{plan.core_range:x}>;",
        f"\t\t\t\tinterrupt-parent = <&{lx.intc}>;",
        f"\t\t\t\tinterrupts = <0 {spi['core']} 4>;",
        "\t\t\t\t/* FCLK_CLK0, the core's clock: set when this device is probed (the",
        "\t\t\t\t   platform bus applies assigned-clock-rates before a driver binds). */",
        f"\t\t\t\tassigned-clocks = <&{lx.clkc} {lx.fclk0_clock}>;",
        f"\t\t\t\tassigned-clock-rates = <{hz}>;",
        "\t\t\t};",
        "",
        "\t\t\t/* The AXI DMA's registers (simple mode); UIO uses the first interrupt. */",
        f"\t\t\t{z.dma_uio}@{z.dma_base:x} {{",
        "\t\t\t\tcompatible = \"generic-uio\";",
        f"\t\t\t\treg = <0x{z.dma_base:x} 0x{plan.dma_range:x}>;",
        f"\t\t\t\tinterrupt-parent = <&{lx.intc}>;",
        f"\t\t\t\tinterrupts = <0 {spi['mm2s']} 4>, <0 {spi['s2mm']} 4>;",
        "\t\t\t};",
        "\t\t};",
        "\t};",
        "",
        "\tfragment@2 {",
        "\t\ttarget-path = \"/\";",
        "\t\t__overlay__ {",
        "\t\t\t/* The physically contiguous buffer the DMA reads and writes. */",
        f"\t\t\t{z.udmabuf} {{",
        "\t\t\t\tcompatible = \"ikwzm,u-dma-buf\";",
        f"\t\t\t\tdevice-name = \"{z.udmabuf}\";",
        f"\t\t\t\tsize = <0x{lx.udmabuf_size:x}>;",
        "\t\t\t};",
        "\t\t};",
        "\t};",
        "};",
        "",
    ])


def zynq_json(plan):
    """``zynq.json``: the :class:`ZynqConfig` fields the runtime must use on this build."""
    return json.dumps(plan.zynq.as_dict(), indent=2) + "\n"


def readme(plan):
    """``README.txt``: what each file is and the steps from here to a run on the board."""
    b, z, p = plan.board, plan.zynq, plan.products
    e = plan.cfg.engine
    return "\n".join([
        f"mulfree build for {b.title}, Vivado part {b.part}",
        f"core {plan.top}: {e.rows}x{e.cols} {e.pe} {e.arch}, {plan.stream_width}-bit streams, "
        f"clock FCLK_CLK0 at {_mhz(plan.clock_mhz)} MHz",
        "",
        "Files",
        f"  {plan.top}.v, {plan.top}.json  the core's Verilog and manifest",
        f"  {plan.top}_bd.v        wrapper giving the core's ports Vivado interface attributes",
        "  constraints.xdc        PL constraints (none needed; the file says why)",
        "  block_design.tcl       Vivado project + block design: PS7, AXI DMA (simple mode),",
        "                         interconnects, reset, interrupts, addresses",
        "  build.tcl              synthesis, implementation, bitstream, XSA, .bit.bin",
        "  run_vivado.sh, Makefile  the Vivado command",
        f"  {OVERLAY_SOURCE}           device tree overlay: FPGA region, UIO devices, u-dma-buf",
        f"  {ZYNQ_JSON}              the runtime's ZynqConfig (addresses, device names)",
        f"  {BUILD_MARKER}             what was generated (SHA-256 of each file); written last",
        "",
        "Address map (from mulfree.host.zynq.ZynqConfig)",
        f"  core registers  {_hex(z.core_base)} +{_range(plan.core_range)}  UIO "
        f"'{z.core_uio}', irq on IRQ_F2P[0]",
        f"  AXI DMA         {_hex(z.dma_base)} +{_range(plan.dma_range)}  UIO '{z.dma_uio}', "
        "MM2S/S2MM irqs on IRQ_F2P[1]/[2]",
        f"  DMA buffer      u-dma-buf '{z.udmabuf}', {b.linux.udmabuf_size >> 20} MiB; "
        f"DMA on {b.hp_port}, registers on {b.gp_port}",
        "",
        "Steps",
        "  1. On a machine with Vivado 2020.2 or newer, in this folder:",
        f"       {_vivado_command()}",
        "     (or ./run_vivado.sh, or make, or mulfree build ... --run); it",
        f"     writes {p['bit']}, {p['bin']} (for the FPGA manager) and {p['xsa']}.",
        "  2. The board runs Linux with the FPGA manager and configfs device tree overlays",
        "     (a Xilinx/PetaLinux kernel), a base device tree built with -@,",
        "     uio_pdrv_genirq.of_id=generic-uio on the kernel command line, the u-dma-buf",
        "     module, and Python 3 with NumPy and mulfree. Console: " + b.linux.console + ".",
        "  3. From this machine: mulfree deploy THIS_FOLDER --host root@BOARD",
        f"     copies {p['bin']}, {OVERLAY_BLOB}, {ZYNQ_JSON} and {plan.top}.json to "
        "/lib/firmware,",
        "     applies the overlay (which loads the bitstream) and checks the core's identity",
        "     registers. --dry-run prints every command first. On the board itself: omit",
        "     --host.",
        "  4. On the board:",
        f"       mulfree run --device zynq --zynq-config /lib/firmware/{ZYNQ_JSON} "
        f"--config /lib/firmware/{plan.top}.json ...",
        "",
        "Nothing here was checked on hardware or run through Vivado by the generator's tests;",
        "the scripts are checked by running them in tclsh against stubbed Vivado commands.",
        "",
    ])


# Writing the folder --------------------------------------------------------------------------

def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


#: A file name a build folder may name: flat (no folders), plain characters, not starting with
#: ``-`` (an option to scp, cp or dtc) or ``.`` (hidden, ``..``).
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+_-]{0,63}")
#: Upper bound of the resource estimate's counts (no Zynq-7000 has a million of anything).
_MAX_COUNT = 1_000_000


def read_build(folder, param="build_dir"):
    """The checked ``build.json`` of a build folder, or ``None`` if the folder has none.

    Parameters
    ----------
    folder : path
    param : str
        The parameter that named the folder, for messages (``"BUILD_DIR"``, ``"output"``).

    Raises
    ------
    FileCheckError
        One line, for a ``build.json`` that is not one :func:`write_build` writes: not strict
        JSON, a missing field, a value of the wrong type or out of range, a file name that
        leaves the folder (:func:`check_build_doc`).
    """
    folder = Path(folder)
    if not os.path.lexists(folder / BUILD_MARKER):
        return None
    path = inside(folder, BUILD_MARKER, param)
    if os.path.islink(folder / BUILD_MARKER):
        raise FileCheckError(param, f"{param} {str(folder / BUILD_MARKER)!r} is a symbolic "
                                    f"link; a build folder's files are regular files")
    doc = read_json(path, param, what=BUILD_MARKER, max_bytes=MAX_BUILD_JSON_BYTES)
    check_build_doc(doc, folder, param)
    return doc


def check_build_doc(doc, folder, param="build_dir"):
    """Refuse a ``build.json`` document that :func:`write_build` would not have written.

    Every field is checked for presence, type and range; the fields derived from others
    (products, manifest, overlay, Vivado command, interrupts, the board's part) must equal what
    the generator derives; every file name is a flat name (:data:`_FILE_NAME`) that stays in
    ``folder`` (:func:`~mulfree.spec.safe_io.inside`), with a SHA-256 and a size. Extra fields
    are ignored. Nothing is read but ``doc`` and the folder's directory entries.

    Raises
    ------
    FileCheckError
        One line: ``<param> '<folder>/build.json': <field> must be <allowed>, not <value>``.
    """
    from ..host.zynq import ZynqConfig
    where = f"{param} {str(Path(folder) / BUILD_MARKER)!r}"

    def fail(field, allowed, value):
        raise FileCheckError(param, f"{where}: {field} must be {allowed}, not {_short(value)}")

    def get(parent, key, field):
        if key not in parent:
            raise FileCheckError(param, f"{where}: {field} is missing (not a build.json of "
                                        f"mulfree build)")
        return parent[key]

    def obj(parent, key, field):
        value = get(parent, key, field)
        if not isinstance(value, dict):
            fail(field, "a JSON object", value)
        return value

    def integer(parent, key, field, lo, hi):
        value = get(parent, key, field)
        if type(value) is not int or not lo <= value <= hi:
            fail(field, f"an integer in [{lo}, {hi}]", value)
        return value

    def number(parent, key, field, lo, hi):
        value = get(parent, key, field)
        if type(value) not in (int, float) or not lo <= value <= hi:
            fail(field, f"a number in [{lo:g}, {hi:g}]", value)
        return value

    def same(value, expected, field):
        if isinstance(expected, dict) and isinstance(value, dict):
            # Field by field, so the message shows the one that is wrong.
            for key in expected:
                same(get(value, key, f"{field}.{key}"), expected[key], f"{field}.{key}")
            if set(value) != set(expected):
                fail(f"the keys of {field}", ", ".join(expected), ", ".join(value))
        # json.dumps compares types too (True is not 1, 1.0 is not 1).
        elif json.dumps(value, sort_keys=True) != json.dumps(expected, sort_keys=True):
            fail(field, _short(expected, 120), value)

    def equal(parent, key, field, expected):
        value = get(parent, key, field)
        same(value, expected, field)
        return value

    def digest(entry, field):
        if not isinstance(entry, dict):
            fail(field, "an object with sha256 and bytes", entry)
        value = get(entry, "sha256", f"{field}.sha256")
        if not isinstance(value, str) or not _SHA256.fullmatch(value):
            fail(f"{field}.sha256", "64 lowercase hexadecimal digits", value)
        integer(entry, "bytes", f"{field}.bytes", 0, MAX_BUILD_FILE_BYTES)

    if not isinstance(doc, dict):
        fail("the document", "a JSON object", doc)
    equal(doc, "kind", "kind", BUILD_KIND)
    version = get(doc, "mulfree_version", "mulfree_version")
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        fail("mulfree_version", "a version string", version)
    top = get(doc, "top", "top")
    try:
        check_verilog_name(top, "top")
    except FileCheckError:
        fail("top", "a Verilog identifier (the core's module name)", top)
    equal(doc, "manifest", "manifest", f"{top}.json")
    products = {"bit": f"{top}.bit", "bin": f"{top}.bit.bin", "xsa": f"{top}.xsa"}
    equal(doc, "products", "products", products)
    equal(doc, "overlay", "overlay", {"source": OVERLAY_SOURCE, "blob": OVERLAY_BLOB})
    equal(doc, "vivado_command", "vivado_command", ["vivado", *VIVADO_ARGS])

    from ..gen.board import BOARDS
    board = obj(doc, "board", "board")
    name = get(board, "name", "board.name")
    if not isinstance(name, str) or name not in BOARDS:
        fail("board.name", f"one of {', '.join(sorted(BOARDS))}", name)
    equal(board, "part", "board.part", BOARDS[name].part)
    equal(doc, "part", "part", BOARDS[name].part)
    number(doc, "clock_mhz", "clock_mhz", *CLOCK_MHZ_RANGE)
    from ..spec.core_config import STREAM_WIDTHS
    width = get(doc, "stream_width", "stream_width")
    if type(width) is not int or width not in STREAM_WIDTHS:
        fail("stream_width", f"one of {', '.join(map(str, STREAM_WIDTHS))}", width)

    zynq = obj(doc, "zynq", "zynq")
    try:
        z = ZynqConfig(**zynq)
    except (TypeError, ValueError) as exc:
        raise FileCheckError(param, f"{where}: zynq is not a valid ZynqConfig: "
                                    f"{' '.join(str(exc).split())}") from None
    for field in ("core_uio", "dma_uio", "udmabuf"):
        if not _DT_NAME.fullmatch(getattr(z, field)):
            fail(f"zynq.{field}", "a device tree node name (A-Z a-z 0-9 , . _ + -)",
                 getattr(z, field))
    addresses = obj(doc, "addresses", "addresses")
    for key in ("core_base", "dma_base"):
        equal(addresses, key, f"addresses.{key}", getattr(z, key))
    for key in ("core_range", "dma_range"):
        integer(addresses, key, f"addresses.{key}", MIN_RANGE, 1 << 30)
    dma = obj(doc, "dma", "dma")
    equal(dma, "mode", "dma.mode", "simple")
    equal(dma, "length_bits", "dma.length_bits", z.dma_length_bits)
    equal(dma, "stream_width", "dma.stream_width", width)
    equal(dma, "mm_width", "dma.mm_width", max(DMA_MM_MIN_WIDTH, width))
    from ..gen.board import irq_f2p_spi
    equal(doc, "interrupts", "interrupts", {line: {"irq_f2p": i, "gic_spi": irq_f2p_spi(i)}
                                            for i, line in enumerate(IRQ_LINES)})
    res = obj(doc, "resources_estimate", "resources_estimate")
    integer(res, "dsp", "resources_estimate.dsp", 0, _MAX_COUNT)
    integer(res, "ramb18", "resources_estimate.ramb18", 0, _MAX_COUNT)
    number(res, "bram36", "resources_estimate.bram36", 0, _MAX_COUNT)

    files = obj(doc, "files", "files")
    if not 1 <= len(files) <= 64:
        fail("files", "1 to 64 entries", f"{len(files)} entries")
    for name, entry in files.items():
        if not _FILE_NAME.fullmatch(name) or name == BUILD_MARKER:
            fail("a name in files", "a plain file name in the folder (letters, digits, _ . -; "
                 "not starting with . or -)", name)
        inside(folder, name, param)
        digest(entry, f"files[{name!r}]")
    for need in (f"{top}.json", ZYNQ_JSON, OVERLAY_SOURCE):
        if need not in files:
            raise FileCheckError(param, f"{where}: files has no entry for {need} (not a "
                                        f"build.json of mulfree build)")

    vivado = get(doc, "vivado", "vivado")
    if vivado is not None:
        if not isinstance(vivado, dict):
            fail("vivado", "null or a JSON object", vivado)
        equal(vivado, "returncode", "vivado.returncode", 0)
        equal(vivado, "log", "vivado.log", "vivado.log")
        recorded = obj(vivado, "products", "vivado.products")
        if set(recorded) != set(products.values()):
            fail("vivado.products", f"entries for {', '.join(products.values())}",
                 sorted(recorded))
        for name, entry in recorded.items():
            digest(entry, f"vivado.products[{name!r}]")
    return doc


def check_build_file(folder, name, param, *, entry=None, what="file"):
    """``folder / name`` as a regular file in ``folder`` that matches its recorded digest.

    Parameters
    ----------
    folder : path
    name : str
        A file name from ``build.json`` (already checked by :func:`check_build_doc`).
    param : str
        The parameter that named the folder, for the message.
    entry : dict, optional
        ``{"sha256", "bytes"}`` recorded for it; ``None``: only the file's kind is checked.

    Returns
    -------
    Path

    Raises
    ------
    FileCheckError
        If it is missing, a symbolic link (one inside the folder could make a command write
        through it), not a regular file (a FIFO would hang the digest), or differs from
        ``entry``.
    """
    path = Path(folder) / name
    inside(folder, name, param)
    if os.path.islink(path):
        raise FileCheckError(param, f"{param} {str(folder)!r}: {name} is a symbolic link; a "
                                    f"build folder's files are regular files")
    if not path.is_file():
        raise FileCheckError(param, f"{param} {str(folder)!r}: {name} is "
                                    + ("not a regular file" if os.path.lexists(path)
                                       else "missing") + f" ({what})")
    if entry is not None:
        try:
            same = path.stat().st_size == entry["bytes"] and _sha256(path) == entry["sha256"]
        except OSError as exc:
            raise FileCheckError(param, f"{param} {str(folder)!r}: {name} cannot be read: "
                                        f"{exc.strerror or exc}") from None
        if not same:
            raise FileCheckError(param, f"{param} {str(folder)!r}: {name} does not match the "
                                        f"SHA-256 and size build.json records for it (changed "
                                        f"after it was written); run mulfree build again")
    return path


def _check_output(out_dir):
    """``out_dir`` as an absolute path, refused (:class:`BuildError`) unless a build may go there.

    Run before any long work: the folder (or its nearest existing ancestor) and the folder the
    temporary sibling goes in are probed with a real file; an existing folder must be empty
    or hold a valid earlier build (its ``build.json`` checked), which is replaced.
    """
    shown = str(out_dir)
    if not shown or "\0" in shown:
        raise BuildError("output", f"output must be a folder path, not {shown!r}")
    out_dir = Path(os.path.abspath(out_dir))
    for parent in (out_dir, *out_dir.parents):
        if os.path.lexists(parent) and not parent.is_dir():
            raise BuildError("output", f"output must be a folder, not the existing file "
                                       f"{str(parent)!r}")
        if parent.exists():
            break
    if os.path.islink(out_dir):
        # Replacing the folder renames the link, not the folder it points to.
        raise BuildError("output", f"output {shown!r} is a symbolic link; name the folder "
                                   f"itself ({os.path.realpath(out_dir)!r})")
    if out_dir == out_dir.parent:
        raise BuildError("output", f"output {shown!r} is the root folder; name a new folder")
    try:
        check_output_dir(out_dir, "output")
        # The new folder is made next to out_dir and renamed into place.
        check_output_dir(out_dir.parent, "output")
    except FileCheckError as exc:
        raise BuildError("output", str(exc).replace(f"output {str(out_dir)!r}",
                                                    f"output {shown!r}", 1)) from None
    if out_dir.is_dir() and any(out_dir.iterdir()):
        try:
            doc = read_build(out_dir, "output")
        except FileCheckError as exc:
            detail = " ".join(str(exc).split(": ", 1)[-1].split())
            raise BuildError("output", f"output {shown!r} exists and its {BUILD_MARKER} is not "
                                       f"one mulfree build wrote, so it is kept ({detail}); "
                                       f"choose a new folder or remove this one") from None
        if doc is None:
            raise BuildError("output", f"output {shown!r} exists and is not a mulfree build "
                                       f"folder (no {BUILD_MARKER}); choose a new folder or "
                                       f"empty this one")
    return out_dir


def _write_text(folder, name, text, mode=0o644):
    path = folder / name
    path.write_text(text)
    os.chmod(path, mode)
    return path


def write_build(cfg, board, out_dir, *, clock_mhz=None, manifest=None,
                plan=None):
    """Write the build folder of ``cfg`` on ``board`` (see the module docstring).

    Parameters
    ----------
    cfg : CoreConfig
    board : Board or str
    out_dir : path
        Created if missing. An existing build folder (with ``build.json``) is replaced; an
        existing folder with other content is refused.
    clock_mhz : float, optional
    manifest : dict, optional
        The core's manifest when it is already at hand.
    plan : BuildPlan, optional
        A plan made by :func:`plan_build` (then ``cfg``, ``board``, ``clock_mhz`` and
        ``manifest`` are not used).

    Returns
    -------
    (Path, BuildPlan)
        The folder and its plan.

    Raises
    ------
    BuildError
        Before anything is written, for a core that does not fit, a bad clock, an unknown
        board or an output that is not a build folder.
    """
    out_dir = _check_output(out_dir)
    if plan is None:
        plan = plan_build(cfg, board, clock_mhz, manifest)
    from ..gen.core_manifest import write_core_design
    # Folders made for out_dir are removed again if the build does not finish.
    made = [p for p in (out_dir.parent, *out_dir.parent.parents) if not os.path.lexists(p)]
    tmp = None
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.",
                                    suffix=".tmp"))
        v_path, j_path = write_core_design(plan.cfg, tmp)
        if json.loads(j_path.read_text())["top"] != plan.top:
            raise BuildError("config", f"the generated core is {j_path.stem}, the plan says "
                                       f"{plan.top}")
        files = [v_path.name, j_path.name]
        for name, text, mode in (
                (f"{plan.wrapper}.v", wrapper_verilog(plan), 0o644),
                ("constraints.xdc", constraints_xdc(plan), 0o644),
                ("block_design.tcl", block_design_tcl(plan), 0o644),
                ("build.tcl", build_tcl(plan), 0o644),
                ("run_vivado.sh", run_vivado_sh(plan), 0o755),
                ("Makefile", makefile(plan), 0o644),
                (OVERLAY_SOURCE, overlay_dts(plan), 0o644),
                (ZYNQ_JSON, zynq_json(plan), 0o644),
                ("README.txt", readme(plan), 0o644)):
            _write_text(tmp, name, text, mode)
            files.append(name)
        doc = {
            "mulfree_version": __version__,
            "kind": BUILD_KIND,
            "board": plan.board.as_dict(),
            "part": plan.board.part,
            "top": plan.top,
            "manifest": j_path.name,
            "clock_mhz": plan.clock_mhz,
            "stream_width": plan.stream_width,
            "addresses": {"core_base": plan.zynq.core_base, "core_range": plan.core_range,
                          "dma_base": plan.zynq.dma_base, "dma_range": plan.dma_range},
            "dma": {"mode": "simple", "length_bits": plan.zynq.dma_length_bits,
                    "stream_width": plan.stream_width, "mm_width": plan.dma_mm_width},
            "interrupts": {name: {"irq_f2p": i, "gic_spi": plan.irq_spi[name]}
                           for i, name in enumerate(IRQ_LINES)},
            "zynq": plan.zynq.as_dict(),
            "resources_estimate": {k: v for k, v in plan.resources.items() if k != "memories"},
            "overlay": {"source": OVERLAY_SOURCE, "blob": OVERLAY_BLOB},
            "products": plan.products,
            "vivado_command": ["vivado", *VIVADO_ARGS],
            "vivado": None,
            "files": {name: {"sha256": _sha256(tmp / name), "bytes": (tmp / name).stat().st_size}
                      for name in files},
        }
        _write_text(tmp, BUILD_MARKER, json.dumps(doc, indent=2) + "\n")
        os.chmod(tmp, 0o755)
        _install(tmp, out_dir)
    except BaseException:
        # Also on KeyboardInterrupt: neither the temporary sibling nor folders made for it stay.
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in made:
            try:
                os.rmdir(folder)
            except OSError:
                break
        raise
    return out_dir, plan


def _install(tmp, out_dir):
    """Put the finished ``tmp`` folder at ``out_dir``, replacing an earlier build there."""
    if not os.path.lexists(out_dir):
        os.rename(tmp, out_dir)
        return
    _check_output(out_dir)         # again: it may have changed while we generated
    old = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.", suffix=".old"))
    os.rmdir(old)
    os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    # The new build is in place; an interrupt now must not leave the old one half-deleted.
    interrupted = None
    while os.path.lexists(old):
        try:
            shutil.rmtree(old, ignore_errors=True)
            break
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted


# Running Vivado ------------------------------------------------------------------------------

_ERROR_LINE = re.compile(r"^ERROR:.*$", re.MULTILINE)


def first_error(log_path):
    """The first line of ``log_path`` starting with ``ERROR:``, or ``None``."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        return None
    match = _ERROR_LINE.search(text)
    return match.group(0).strip() if match else None


def run_vivado(folder, *, vivado="vivado"):
    """Run Vivado on a finished build folder and record its products in ``build.json``.

    Parameters
    ----------
    folder : path
        A folder written by :func:`write_build`.
    vivado : str
        The Vivado executable (looked up on PATH).

    Returns
    -------
    dict
        ``{kind: path}`` of the products (``bit``, ``bin``, ``xsa``).

    Raises
    ------
    BuildError
        If ``folder`` is not a finished build folder.
    VivadoMissing
        If ``vivado`` is not on PATH (the message says what to run where).
    VivadoFailed
        If Vivado fails or does not write every product (the message holds the log's first
        ``ERROR:`` line).
    """
    folder = Path(folder).resolve()
    doc = read_build(folder, "output")
    if doc is None:
        raise BuildError("output", f"output {str(folder)!r} is not a finished mulfree build "
                                   f"folder (no {BUILD_MARKER})")
    # Vivado runs the folder's Tcl: run it only as mulfree build wrote it.
    for name, entry in doc["files"].items():
        check_build_file(folder, name, "output", entry=entry)
    exe = shutil.which(vivado)
    command = " ".join([vivado, *VIVADO_ARGS])
    if exe is None:
        raise VivadoMissing(f"{vivado} is not on PATH. On a machine with Vivado 2020.2 or "
                            f"newer, run in {shlex.quote(str(folder))}: {command}  (or: "
                            f"make, or ./run_vivado.sh); then mulfree deploy "
                            f"{shlex.quote(str(folder))}",
                            command, str(folder))
    log = folder / "vivado.log"
    result = subprocess.run([exe, *VIVADO_ARGS], cwd=folder)
    products = {kind: folder / name for kind, name in doc["products"].items()}
    missing = [p.name for p in products.values() if os.path.islink(p) or not p.is_file()]
    if result.returncode != 0 or missing:
        error = first_error(log)
        what = (f"exit status {result.returncode}" if result.returncode != 0
                else f"it did not write {', '.join(missing)}")
        detail = error if error else f"no ERROR: line in {log}"
        raise VivadoFailed(f"Vivado failed ({what}): {detail} (log: {log})", error, str(log))
    doc["vivado"] = {"returncode": 0, "log": log.name,
                     "products": {p.name: {"sha256": _sha256(p), "bytes": p.stat().st_size}
                                  for p in products.values()}}
    # A fresh temporary name (a fixed one could be a planted link to a file elsewhere).
    write_atomic(folder / BUILD_MARKER, json.dumps(doc, indent=2) + "\n")
    return products


# Command line --------------------------------------------------------------------------------

def add_build_options(parser):
    """Options of ``mulfree build`` (the core options come from :mod:`mulfree.flows.cli`)."""
    parser.add_argument("--board", required=True, metavar="NAME",
                        help="target board: zc706 or arty_z7_20")
    parser.add_argument("--config", default=None, metavar="MANIFEST",
                        help="the core's manifest (mulfree gen --core); default: the core the "
                             "options below describe (default: a 16x16 shift core)")
    parser.add_argument("--clock-mhz", type=float, default=None, metavar="MHZ",
                        help=f"FCLK_CLK0, the core's clock ({CLOCK_MHZ_RANGE[0]:g}.."
                             f"{CLOCK_MHZ_RANGE[1]:g}, default: 100)")
    parser.add_argument("--run", action="store_true",
                        help="then run Vivado (must be on PATH) and collect the .bit, .bit.bin "
                             "and .xsa; without Vivado, print the command to run and fail")
    parser.add_argument("-o", "--output", default="build", metavar="DIR",
                        help="build folder (default: build); an earlier build folder there is "
                             "replaced, any other non-empty folder refused")


_OPTION = {"board": "--board", "config": "--config", "clock_mhz": "--clock-mhz",
           "output": "-o/--output", "axil_addr_width": "--axil-addr-width"}


def _option_message(exc):
    message = str(exc)
    option = _OPTION.get(exc.param)
    if option and message.startswith(exc.param + " "):
        return option + message[len(exc.param):]
    return message


def run_build(args, parser, core_config_from_args):
    """``mulfree build``: returns the exit status; raises :class:`BuildError` for bad input.

    ``parser`` is the sub-command's parser (to tell options given from defaults) and
    ``core_config_from_args`` the CLI's maker of a :class:`CoreConfig` from core options.
    """
    # The cheap checks of every option come first, so nothing is generated for a bad one.
    from ..gen.board import BoardError, get_board
    try:
        board = get_board(args.board)
    except BoardError as exc:
        raise BuildError("board", str(exc)) from None
    _check_output(args.output)
    if args.config is not None:
        changed = [a.option_strings[-1] for a in parser._actions
                   if a.dest.startswith("core_") or a.dest in (
                       "pe", "rows", "cols", "act_bits", "weight_bits", "max_k", "arch",
                       "levels_per_stage", "name")
                   if getattr(args, a.dest, None) != parser.get_default(a.dest)]
        if changed:
            raise BuildError("config", f"--config takes the core from its manifest; it cannot "
                                       f"be combined with {', '.join(changed)}")
        # The Verilog and manifest are generated again from the manifest's parameters, so
        # the folder's files all come from this generator.
        cfg, _ = core_config_from_manifest(args.config)
    else:
        cfg = core_config_from_args(args)
    plan = plan_build(cfg, board, args.clock_mhz)
    folder, plan = write_build(None, None, args.output, plan=plan)
    res = plan.resources
    print(f"build folder {folder} for {board.name} ({board.part}): core {plan.top}, "
          f"FCLK_CLK0 {_mhz(plan.clock_mhz)} MHz; estimate {res['dsp']} DSP48E1, "
          f"{-(-res['ramb18'] // 2)} BRAM36")
    print(f"core registers at {_hex(plan.zynq.core_base)} (+{_range(plan.core_range)}), "
          f"AXI DMA at {_hex(plan.zynq.dma_base)} (+{_range(plan.dma_range)})")
    # Commands shown to be pasted into a shell: the folder quoted for it.
    shown = shlex.quote(str(folder))
    if not args.run:
        print(f"next: cd {shown} && {_vivado_command()}  (or mulfree build ... --run), then "
              f"mulfree deploy {shown}")
        return 0
    try:
        products = run_vivado(folder)
    except FileCheckError as exc:
        raise BuildError("output", str(exc)) from None
    except (VivadoMissing, VivadoFailed) as exc:
        print(f"mulfree build: {exc}", file=sys.stderr)
        return 1
    for path in products.values():
        print(f"wrote {path}")
    print(f"next: mulfree deploy {shown} --host root@BOARD")
    return 0
