"""``mulfree gen``: the Verilog and manifest of an engine, an address-shift unit or a core.

The flow: its options (the engine's and the core's from :mod:`mulfree.flows.core_options`, the
shift unit's here), the config they make, and the writers of :mod:`mulfree.gen` called with
their errors spelt as options. Nothing is elaborated before every option and the output
folder are checked.
"""

import json
import logging

from ..params.config import ConfigError
from ..params.safe_io import check_output_dir
from ..params.shift_config import MAX_CAPACITY, MAX_OFFSET, SHIFT_LIMITS, ShiftUnitConfig
from .core_options import (OPTION, add_array_options, add_core_options, config_from_args,
                           core_config_from_args)
from .options import UsageError, add_json_option, option_message, write_json_document


__all__ = ["add_parser", "command", "SHIFT_OPTION", "add_shift_unit_options",
           "shift_unit_config_from_args", "GEN_JSON", "manifest_summary"]


log = logging.getLogger(__name__)

#: What ``mulfree gen --json`` adds to the common keys (its help text says it).
GEN_JSON = ("manifest (kind, top, manifest_version, parameters, derived, timing, engines "
            "where the manifest has them, ports: count, input_bits, output_bits), summary "
            "(the line printed)")


#: Python parameter name -> command-line option of the shift unit, for error messages.
SHIFT_OPTION = {"channels": "--channels", "height": "--height", "width": "--width",
                "act_bits": "--act-bits", "depth": "--depth", "kernel": "--kernel",
                "max_shift": "--max-shift", "name": "--name"}


def add_shift_unit_options(parser):
    """The options that make a :class:`~mulfree.params.shift_config.ShiftUnitConfig`
    (``mulfree gen --unit shift``).

    ``--act-bits`` and ``--name`` are left out when ``parser`` already has them (the array's
    options); :func:`shift_unit_config_from_args` reads them from the same attributes.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        Gets the argument group ``shift unit (--unit shift)``.
    """
    def r(param):
        lo, hi = SHIFT_LIMITS[param]
        return f"{lo}..{hi}"

    existing = {a for action in parser._actions for a in action.option_strings}
    g = parser.add_argument_group("shift unit (--unit shift)")
    g.add_argument("--channels", type=int, default=16,
                   help=f"largest number of channels C of a map ({r('channels')}, default: 16)")
    g.add_argument("--height", type=int, default=8,
                   help=f"largest map height H ({r('height')}, default: 8)")
    g.add_argument("--width", type=int, default=8,
                   help=f"largest map width W ({r('width')}, default: 8)")
    if "--act-bits" not in existing:
        g.add_argument("--act-bits", type=int, default=8,
                       help=f"signed activation width ({r('act_bits')}, default: 8)")
    g.add_argument("--depth", type=int, default=None,
                   help=f"buffer words, channels*height*width..{MAX_CAPACITY} (default: "
                        "channels*height*width; more lets several maps, e.g. both halves of a "
                        "shortcut concatenation plus the next map, live in the buffer)")
    g.add_argument("--kernel", type=int, default=3,
                   help=f"largest Shift kernel k, odd, radius (k-1)/2 at most "
                        f"min({MAX_OFFSET}, max(height, width)) (default: 3)")
    g.add_argument("--max-shift", type=int, default=1,
                   help=f"shift-table range R: entries (dy, dx) in [-R, R], 0..min({MAX_OFFSET}, "
                        "max(height, width)) (default: 1)")
    if "--name" not in existing:
        g.add_argument("--name", default=None,
                       help="top module name (default: derived from the parameters)")


def shift_unit_config_from_args(args):
    """The :class:`~mulfree.params.shift_config.ShiftUnitConfig` of parsed options.

    Parameters
    ----------
    args : argparse.Namespace
        The options :func:`add_shift_unit_options` defines.

    Returns
    -------
    mulfree.params.shift_config.ShiftUnitConfig

    Raises
    ------
    mulfree.params.config.ConfigError
        With the message rewritten to name the command-line option (``--max-shift must be
        ...``) instead of the parameter.
    """
    try:
        return ShiftUnitConfig(channels=args.channels, height=args.height, width=args.width,
                               act_bits=args.act_bits, depth=args.depth, kernel=args.kernel,
                               max_shift=args.max_shift, name=getattr(args, "name", None))
    except ConfigError as e:
        message = str(e)
        option = SHIFT_OPTION.get(e.param)
        if option and message.startswith(e.param):
            message = option + message[len(e.param):]
        raise ConfigError(e.param, message) from None


def add_parser(subparsers):
    """Add the ``gen`` command to the ``mulfree`` parser.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``add_subparsers`` of the ``mulfree`` parser returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``gen`` parser; its ``func`` default is :func:`command`.
    """
    p = subparsers.add_parser(
        "gen", help="generate the Verilog and manifest of an engine, a shift unit or a core",
        description="Generate a rows x cols PE array (or, with --arch tree, cols adder trees "
                    "of rows inputs) as Verilog (<top>.v) and its manifest "
                    "(<top>.json). Files are written atomically: a failed run leaves nothing "
                    "half-written.")
    p.add_argument("--unit", default="engine", choices=["engine", "shift", "core"],
                   help="what to generate: the compute engine (--arch array or tree, the "
                        "default), the address-shift pointer unit (shift), or the whole "
                        "accelerator core (core, also --core)")
    add_array_options(p)
    add_core_options(p)
    add_shift_unit_options(p)
    p.add_argument("-o", "--output", default="out", metavar="DIR",
                   help="output folder, created if missing (default: out)")
    add_json_option(p, GEN_JSON)
    p.set_defaults(func=command)
    return p


def command(args):
    """``mulfree gen``: write ``<top>.v`` and ``<top>.json`` of the unit ``args.unit`` names.

    Parameters
    ----------
    args : argparse.Namespace
        The options :func:`add_parser` defines.

    Returns
    -------
    int
        Exit status 0 (every failure raises).

    Raises
    ------
    mulfree.flows.options.UsageError, mulfree.params.safe_io.FileCheckError
        A bad option or an output folder that cannot be written; one line naming the option.
    """
    from ..gen.emit import write_design
    # The folder first: a design can take minutes to elaborate, and is then not written.
    check_output_dir(args.output, "-o/--output")
    if args.unit == "shift":
        return _gen_shift_unit(args)
    if args.unit == "core":
        return _gen_core(args)
    cfg = config_from_args(args)
    paths = _write(write_design, cfg, args.output)
    shape = (f"{cfg.rows}x{cfg.cols} {cfg.pe} array" if cfg.arch == "array" else
             f"{cfg.cols} adder trees of {cfg.rows} {cfg.pe} terms "
             f"({cfg.tree_levels_per_stage} level(s) per stage)")
    _done(args, cfg, paths, [f"{shape}, act {cfg.act_bits} bits, weights "
                             f"{cfg.weight_bits} bits, accumulator {cfg.acc_width} bits "
                             f"(max_k={cfg.max_k}), latency {cfg.latency} cycles"])
    return 0


def manifest_summary(path):
    """The ``manifest`` figures of ``mulfree gen --json``, read back from the manifest
    ``path`` the command wrote."""
    with open(path, encoding="utf-8") as f:
        doc = json.load(f)
    summary = {k: doc[k] for k in ("kind", "top", "manifest_version", "parameters",
                                   "derived", "timing", "engines") if k in doc}
    ports = doc.get("ports", [])
    summary["ports"] = {
        "count": len(ports),
        **{f"{d}_bits": sum(p["width"] for p in ports if p["direction"] == d)
           for d in ("input", "output")}}
    return summary


def _done(args, cfg, paths, lines):
    """Print the summary ``lines``; write the ``--json`` document."""
    for line in lines:
        print(line)
    log.debug(f"parameters: {cfg.params()}")
    manifest = next(p for p in paths if str(p).endswith(".json"))
    write_json_document(args, {"unit": args.unit, "output": str(args.output),
                               "config": cfg.params()},
                        paths, manifest=manifest_summary(manifest), summary=lines)


def _gen_core(args):
    from ..gen.core_manifest import write_core_design
    cfg = core_config_from_args(args)
    paths = _write(write_core_design, cfg, args.output)
    e = cfg.engine
    lines = [f"core: {e.rows}x{e.cols} {e.pe} {e.arch}, act {e.act_bits} bits, weights "
             f"{e.weight_bits} bits, accumulator {e.acc_width} bits; AXI4-Stream "
             f"{cfg.stream_width} bits; buffers: fmap {cfg.fmap_vectors} vectors, weights "
             f"{cfg.weight_rows} rows, accumulator {cfg.acc_entries} entries, "
             f"{cfg.max_channels} channels"]
    for k, x in enumerate(cfg.extra_engines, 1):
        cols = "" if cfg.folds(k) == 1 else f", folded to {cfg.physical_cols(k)} columns"
        lines.append(f"engine {k}: {x.pe} {x.arch}, weights {x.weight_bits} bits, "
                     f"accumulator {x.acc_width} bits{cols}")
    if cfg.extra_engines:
        lines.append(f"engines share WEIGHTS slots of {cfg.code_width} bits and accumulators "
                     f"of {cfg.acc_width} bits")
    _done(args, cfg, paths, lines)
    return 0


def _gen_shift_unit(args):
    from ..gen.shift_emit import write_shift_unit
    try:
        cfg = shift_unit_config_from_args(args)
    except ConfigError as e:
        raise UsageError(option_message(e, OPTION)) from None
    paths = _write(write_shift_unit, cfg, args.output)
    _done(args, cfg, paths, [
        f"address-shift unit: buffer of {cfg.depth} x {cfg.act_bits}-bit words for maps up "
        f"to {cfg.channels}x{cfg.height}x{cfg.width}, Shift kernel up to {cfg.kernel}, "
        f"table shifts within +-{cfg.max_shift}"])
    return 0


def _write(write, cfg, output):
    """``write(cfg, output)`` with its errors as one-line usage errors; log what it wrote and
    return the paths."""
    from ..gen.emit import OutputError
    try:
        paths = write(cfg, output)
    except OutputError as e:
        raise UsageError(option_message(e, OPTION)) from None
    except OSError as e:
        raise UsageError(f"{OPTION['output']} {str(output)!r} cannot be written: "
                         f"{e.strerror or e}") from None
    for path in paths:
        log.info(f"wrote {path}")
    return paths
