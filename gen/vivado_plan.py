"""The plan of a Vivado build for a core on a Zynq-7000 board: every number its files use.

:func:`plan_build` checks a core against a board before anything is written: the fit of its
DSPs and block RAM on the board's device (:func:`check_fit`, from the manifest alone:
:func:`estimate_resources`), the clock, and the address windows of
:class:`~mulfree.host.zynq.ZynqConfig`. The resulting :class:`BuildPlan` is what every
generated file (:mod:`mulfree.gen.vivado_project`, :mod:`mulfree.gen.overlay`,
:mod:`mulfree.gen.build_folder`) is made from. :func:`core_config_from_manifest` reads the core
of a build from a manifest file (``mulfree build --config``).
"""

from dataclasses import dataclass

from ..params.safe_io import FileCheckError, check_verilog_name, read_json


__all__ = ["BuildError", "BuildPlan", "plan_build", "estimate_resources", "check_fit",
           "core_config_from_manifest", "short_repr", "CLOCK_MHZ_RANGE", "IRQ_LINES",
           "MIN_RANGE", "GP0_WINDOW", "DMA_MM_MIN_WIDTH", "DMA_BRAM36_RESERVE",
           "LUTRAM_MAX_DEPTH"]

#: FCLK_CLK0 range (MHz): the PS7's PL clocks go up to 250 MHz (DS190/DS191).
CLOCK_MHZ_RANGE = (10.0, 250.0)
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
#: RAMB18E1 shapes (depth, width), simple dual port (UG473).
_RAMB18_SHAPES = ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36))


class BuildError(ValueError):
    """A build input that cannot be used; ``param`` names the parameter."""

    def __init__(self, param, message):
        super().__init__(message)
        self.param = param


# The plan: every number the generated files use -------------------------------------------

@dataclass(frozen=True)
class BuildPlan:
    """What one build folder describes. Built by :func:`plan_build`.

    Attributes
    ----------
    board : mulfree.gen.board.Board
    cfg : mulfree.params.core_config.CoreConfig
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
        from .board import irq_f2p_spi
        return {name: irq_f2p_spi(i) for i, name in enumerate(IRQ_LINES)}


def _ram18(depth, width):
    """RAMB18s for one ``depth x width`` memory: the cheapest shape."""
    return min(-(-width // w) * -(-depth // d) for d, w in _RAMB18_SHAPES)


def estimate_resources(manifest):
    """DSP48E1 and block RAM of a core, from its manifest (no synthesis).

    DSPs: one per PE for multiplier cores (measured, docs: TOOLCHAIN.md; one per two packed
    PEs, none for LUT multipliers: ``ArrayConfig.dsp_count``), none otherwise (the
    layer set-up multiplies by shift-and-add). Block RAM: every buffer of the manifest's
    ``core.buffers`` at least :data:`LUTRAM_MAX_DEPTH` deep, each in its cheapest RAMB18
    shape (``count`` copies: the feature-map banks), two RAMB18s per 36 Kb block. An estimate of the core only; ``mulfree report``
    synthesizes for real.

    Returns
    -------
    dict
        ``dsp``, ``ramb18``, ``bram36`` (float) and ``memories``: ``[(name, depth, width,
        ramb18)]``.
    """
    dsp = sum(e["dsp"] for e in _mult_engines(manifest))
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
        n *= b.get("count", 1)          # fmap: two feature-map banks (interface 2.2)
        memories.append((name, depth, width, n))
    ramb18 = sum(m[3] for m in memories)
    return {"dsp": dsp, "ramb18": ramb18, "bram36": ramb18 / 2, "memories": memories}


def _mult_engines(manifest):
    """``[{"rows", "cols", "dsp"}]`` of the core's mult engines: every engine of a 2.1
    manifest's ``engines`` section, else the one engine. ``dsp``: one DSP48E1 per physical PE,
    one per two with ``mult_pack=2``, none past ``dsp_cols`` (``ArrayConfig.dsp_count``; a
    folded engine packs nothing)."""
    from ..params.config import ArrayConfig
    params = manifest["parameters"]["engine"]
    if "engines" not in manifest:
        return [{"rows": params["rows"], "cols": params["cols"],
                 "dsp": ArrayConfig(**params).dsp_count}] if params["pe"] == "mult" else []
    every = [params, *manifest["parameters"].get("extra_engines", [])]
    out = []
    for e in manifest["engines"]["list"]:
        if e["pe"] != "mult":
            continue
        cfg = ArrayConfig(**every[e["index"]])
        folded = e["physical_cols"] != cfg.cols
        out.append({"rows": cfg.rows, "cols": e["physical_cols"],
                    "dsp": cfg.rows * e["physical_cols"] if folded else cfg.dsp_count})
    return out


def check_fit(manifest, board, resources=None):
    """Raise :class:`BuildError` (``param="board"``) if the core cannot fit ``board``'s device.

    Checks DSP48E1 (multiplier cores) and block RAM (the core's buffers plus
    :data:`DMA_BRAM36_RESERVE`) against the device table of :mod:`mulfree.gen.devices`.
    """
    from .devices import device_for
    device = device_for(board=None, device=board.device)
    res = resources if resources is not None else estimate_resources(manifest)
    over = []
    if res["dsp"] > device.dsp:
        engines = _mult_engines(manifest)
        shapes = " + ".join(f"{e['rows']}x{e['cols']}" for e in engines)
        each = ("one each" if all(e["dsp"] == e["rows"] * e["cols"] for e in engines) else
                "one each, one per two packed, none on LUT multipliers")
        over.append(f"DSP48E1: {res['dsp']} needed ({shapes} mult PEs, {each}), "
                    f"{device.dsp} on the device: {res['dsp'] - device.dsp} too many")
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
    from .board import BoardError, get_board
    from .core_manifest import core_manifest
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

    The file is untrusted: it is read strictly (:func:`~mulfree.params.safe_io.read_json`) and
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
                                   f"{short_repr(doc.get('kind'))}")
    from ..params.config import ConfigError
    from ..params.core_config import CoreConfig
    params, top = doc.get("parameters"), doc.get("top")
    if not isinstance(params, dict) or not isinstance(params.get("engine"), dict):
        raise BuildError("config", f"config {str(path)!r}: parameters must be an object with "
                                   f"an engine object, not {short_repr(params)}")
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
    # A 2.0 manifest has no extra_engines / engine_cols: a one-engine core either way.
    optional = {"extra_engines", "engine_cols"} if not cfg.extra_engines else set()
    missing = [k for k in canonical if k not in params and k not in optional] + \
        [f"engine.{k}" for k in canonical["engine"] if k not in params["engine"]]
    if missing:
        raise BuildError("config", f"config {str(path)!r}: parameters must list every "
                                   f"parameter, missing {', '.join(missing)}")
    return cfg, doc


def short_repr(value, limit=60):
    """``repr(value)`` cut to ``limit`` characters, for one-line messages about file contents.

    Parameters
    ----------
    value : object
    limit : int
        Characters kept; a longer ``repr`` ends in ``...``.

    Returns
    -------
    str
    """
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."
