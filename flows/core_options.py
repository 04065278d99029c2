"""The options that describe an engine (``--pe``, ``--rows``, ...) and a core (``--core``,
``--stream-width``, ...), shared by every flow that builds one, and their errors spelt as
options.
"""

from ..params.config import (ArrayConfig, ConfigError, ARCHS, LIMITS, PE_KINDS, WEIGHT_BITS_LIMITS,
                           DEFAULT_WEIGHT_BITS)
from .options import UsageError, option_message


__all__ = ["OPTION", "CORE_OPTIONS", "add_array_options", "config_from_args", "add_core_options",
           "core_config_from_args", "core_error_message"]


# Python parameter name -> command-line option, for error messages.
OPTION = {"pe": "--pe", "rows": "--rows", "cols": "--cols", "act_bits": "--act-bits",
          "weight_bits": "--weight-bits", "max_k": "--max-k", "name": "--name",
          "arch": "--arch", "tree_levels_per_stage": "--levels-per-stage",
          "output": "-o/--output"}


def _range(param):
    lo, hi = LIMITS[param]
    return f"{lo}..{hi}"


def add_array_options(parser):
    """The options that make an :class:`ArrayConfig`, shared by every command that builds one."""
    g = parser.add_argument_group("design")
    g.add_argument("--pe", default="shift", metavar="KIND",
                   help=f"operator of every PE: {', '.join(PE_KINDS)} (default: shift). "
                        "shift = DeepShift sign*(x<<p), adder = AdderNet -|x-w|, "
                        "mult = multiplier baseline x*w")
    g.add_argument("--rows", type=int, default=8,
                   help=f"PE rows = input vector length = reduction length of one tile "
                        f"({_range('rows')}, default: 8)")
    g.add_argument("--cols", type=int, default=8,
                   help=f"PE columns = output vector length ({_range('cols')}, default: 8)")
    g.add_argument("--act-bits", type=int, default=8,
                   help=f"signed activation width ({_range('act_bits')}, default: 8)")
    shift_lo, shift_hi = WEIGHT_BITS_LIMITS["shift"]
    mult_lo, mult_hi = WEIGHT_BITS_LIMITS["mult"]
    g.add_argument("--weight-bits", type=int, default=None,
                   help=f"weight code width. shift: {shift_lo}..{shift_hi} (default "
                        f"{DEFAULT_WEIGHT_BITS['shift']}; max shift = 2^(bits-1)-2, 1 sign "
                        f"bit, zero representable); mult: {mult_lo}..{mult_hi} signed (default "
                        f"{DEFAULT_WEIGHT_BITS['mult']}); adder: does not apply (weights use "
                        "--act-bits)")
    g.add_argument("--max-k", type=int, default=1024,
                   help="longest reduction (chained tiles) the accumulator holds without "
                        "overflow; sets the accumulator width (>= rows, default: 1024)")
    g.add_argument("--name", default=None,
                   help="top module name (default: derived from the parameters)")
    g.add_argument("--arch", default="array", metavar="ARCH",
                   help=f"organisation: {', '.join(ARCHS)} (default: array). array = 2-D "
                        "weight-stationary PE array; tree = one pipelined adder tree per "
                        "output (rows = inputs per tree, cols = trees); same ports and protocol")
    g.add_argument("--levels-per-stage", type=int, default=1, metavar="N",
                   help=f"tree only: combinational levels between pipeline registers "
                        f"({_range('tree_levels_per_stage')}, default: 1 = fully pipelined)")


def config_from_args(args):
    """The :class:`ArrayConfig` of parsed options; raises :class:`UsageError`."""
    try:
        return ArrayConfig(pe=args.pe, rows=args.rows, cols=args.cols, act_bits=args.act_bits,
                           weight_bits=args.weight_bits, max_k=args.max_k, name=args.name,
                           arch=args.arch, tree_levels_per_stage=args.levels_per_stage)
    except ConfigError as e:
        raise UsageError(option_message(e, OPTION)) from None


CORE_OPTIONS = {"stream_width": "--stream-width", "fmap_vectors": "--fmap-vectors",
                "acc_entries": "--acc-entries", "weight_rows": "--weight-rows",
                "max_channels": "--max-channels", "out_vectors": "--out-vectors",
                "shortcut_vectors": "--shortcut-vectors", "pool_pixels": "--pool-pixels",
                "axil_addr_width": "--axil-addr-width"}


def add_core_options(parser):
    """The options that make a :class:`~mulfree.params.core_config.CoreConfig` (``--core``)."""
    from ..params.core_config import CoreConfig, CORE_LIMITS, STREAM_WIDTHS
    d = CoreConfig()
    g = parser.add_argument_group("accelerator core (--core)")
    g.add_argument("--core", dest="unit", action="store_const", const="core",
                   help="generate the whole accelerator core (same as --unit core): the engine "
                        "behind AXI4-Lite registers and AXI4-Stream data ports")
    helps = {
        "stream_width": f"AXI4-Stream tdata bits: {', '.join(map(str, STREAM_WIDTHS))}",
        "fmap_vectors": "feature-map buffer depth in vectors of rows activations",
        "acc_entries": "accumulator buffer depth in entries of cols sums (largest m_block)",
        "weight_rows": "weight buffer depth in rows of cols codes",
        "max_channels": "largest out_c of a layer (and in_c of a layer with a shift)",
        "out_vectors": "output buffer depth in result vectors",
        "shortcut_vectors": "shortcut buffer depth in vectors of cols activations: a residual "
                            "layer's out_h*out_w*ceil(out_c/cols) must fit; 0 builds no buffer "
                            "and no residual add",
        "pool_pixels": "largest out_h*out_w of a layer with a global average pool (the width "
                       "of the pool unit's sums); 0 builds no pool unit",
        "axil_addr_width": "AXI4-Lite byte-address bits",
    }
    for param, option in CORE_OPTIONS.items():
        lo, hi = CORE_LIMITS.get(param, (None, None))
        rng = f"{lo}..{hi}, " if lo is not None else ""
        g.add_argument(option, dest=f"core_{param}", type=int, default=getattr(d, param),
                       help=f"{helps[param]} ({rng}default: {getattr(d, param)})")


def core_config_from_args(args):
    from ..params.core_config import CoreConfig
    engine = config_from_args(args)
    try:
        return CoreConfig(engine=engine, name=args.name,
                          **{p: getattr(args, f"core_{p}") for p in CORE_OPTIONS})
    except ConfigError as e:
        option = CORE_OPTIONS.get(e.param)
        message = str(e)
        if option and message.startswith(e.param):
            message = option + message[len(e.param):]
        raise UsageError(message) from None


def core_error_message(exc, prefix=""):
    """A :class:`ConfigError` of a core built from options, with its parameter spelt as the
    option (``rows must be an integer in [1, 1024], not 0`` -> ``--rows must be ...``)."""
    option = OPTION.get(exc.param) or CORE_OPTIONS.get(exc.param)
    message = str(exc)
    if option and message.startswith(exc.param):
        return option + message[len(exc.param):]
    return prefix + message
