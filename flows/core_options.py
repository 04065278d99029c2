"""The options that describe an engine (``--pe``, ``--rows``, ...) and a core (``--core``,
``--stream-width``, ...), shared by every flow that builds one, and their errors spelt as
options.
"""

import argparse

from ..params.config import (ArrayConfig, ConfigError, ARCHS, LIMITS, PE_KINDS, WEIGHT_BITS_LIMITS,
                           DEFAULT_WEIGHT_BITS)
from .options import UsageError, option_message


__all__ = ["OPTION", "CORE_OPTIONS", "add_array_options", "config_from_args", "add_core_options",
           "core_config_from_args", "core_error_message", "parse_pe_list"]


# Python parameter name -> command-line option, for error messages.
OPTION = {"pe": "--pe", "rows": "--rows", "cols": "--cols", "act_bits": "--act-bits",
          "weight_bits": "--weight-bits", "max_k": "--max-k", "name": "--name",
          "arch": "--arch", "tree_levels_per_stage": "--levels-per-stage",
          "mult_pack": "--mult-pack", "dsp_cols": "--dsp-cols", "output": "-o/--output"}


def _range(param):
    lo, hi = LIMITS[param]
    return f"{lo}..{hi}"


def add_array_options(parser, size=8, size_text=None):
    """The options that make an :class:`ArrayConfig`, shared by every command that builds one.
    ``size``: the default of ``--rows`` and ``--cols`` (None: the command chooses it, as
    ``size_text`` says in the help)."""
    shown = size_text or size
    g = parser.add_argument_group("design")
    g.add_argument("--pe", default="shift", metavar="KIND",
                   help=f"operator of every PE: {', '.join(PE_KINDS)} (default: shift). "
                        "shift = DeepShift sign*(x<<p), adder = AdderNet -|x-w|, "
                        "mult = multiplier baseline x*w. With --core, a comma-separated list "
                        "builds a multi-engine core, engine 0 first (e.g. shift,mult:4): "
                        "each further engine is KIND[:COLS[:BITS]], an array of its own kind "
                        "sharing --rows, --cols, --act-bits and --max-k, COLS (a divisor of "
                        "--cols; empty or --cols: not folded) folds it to that many physical "
                        "columns, BITS sets its weight bits (default: the kind's); engine 0 "
                        "takes --arch and --weight-bits and is never folded")
    g.add_argument("--rows", type=int, default=size,
                   help=f"PE rows = input vector length = reduction length of one tile "
                        f"({_range('rows')}, default: {shown})")
    g.add_argument("--cols", type=int, default=size,
                   help=f"PE columns = output vector length ({_range('cols')}, default: "
                        f"{shown})")
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
    g.add_argument("--mult-pack", type=int, default=1, metavar="N",
                   help="mult PEs: products per DSP48E1, 1 or 2. 2 packs columns 2j and 2j+1 "
                        "(they share each row's activation) into one multiplication x*(w_lo + "
                        "w_hi*2^k); weights then lie in [-(2^(b-1)-1), 2^(b-1)-1], e.g. "
                        "[-127, 127] (docs/numerics.md; default: 1)")
    g.add_argument("--dsp-cols", type=int, default=None, metavar="N",
                   help="mult PEs: columns 0..N-1 multiply on DSP48E1s, the others on LUT "
                        "multipliers (0..cols; default: all on DSPs)")


def parse_pe_list(value):
    """``--pe``'s engines: ``[(kind, cols or None, weight_bits or None)]``, engine 0 first.

    ``value`` is ``KIND`` or a comma-separated list ``KIND,KIND[:COLS[:BITS]],...`` (a
    multi-engine core). Only the syntax is checked here (kinds known and distinct, at most
    ``MAX_ENGINES``, integers, engine 0 a bare kind); the sizes are the config's. Raises
    :class:`UsageError` naming ``--pe``, the value and what is allowed.
    """
    from ..params.core_config import MAX_ENGINES
    text = str(value)
    allowed = (f"a kind ({', '.join(PE_KINDS)}) or, with --core, up to {MAX_ENGINES} distinct "
               f"kinds separated by commas, each after the first as KIND[:COLS[:BITS]]")

    def bad(why):
        return UsageError(f"--pe {text!r}: {why}; allowed: {allowed}")

    items = text.split(",")
    if len(items) > MAX_ENGINES:
        raise bad(f"{len(items)} engines, a core has at most {MAX_ENGINES}")
    engines = []
    for k, item in enumerate(items):
        parts = item.strip().split(":")
        if len(parts) > 3:
            raise bad(f"engine {k} {item!r} has more than KIND:COLS:BITS")
        kind = parts[0].strip()
        if kind not in PE_KINDS:
            raise bad(f"engine {k} kind {kind!r} is unknown")
        if k == 0 and len(parts) > 1:
            raise bad(f"engine 0 ({kind}) is never folded and takes --weight-bits; write it "
                      f"as a bare kind")
        numbers = []
        for name, part in zip(("COLS", "BITS"), parts[1:]):
            part = part.strip()
            if part == "":
                numbers.append(None)
            elif part.isdigit() and len(part) <= 6:
                numbers.append(int(part))
            else:
                raise bad(f"engine {k} ({kind}) {name} {part!r} is not a positive integer")
        numbers += [None] * (2 - len(numbers))
        if kind in [e[0] for e in engines]:
            raise bad(f"kind {kind!r} twice (one engine per kind)")
        engines.append((kind, *numbers))
    return engines


def _mult_mapping(args):
    """``--mult-pack`` and ``--dsp-cols`` as ``ArrayConfig`` parameters."""
    return {"mult_pack": getattr(args, "mult_pack", 1), "dsp_cols": getattr(args, "dsp_cols", None)}


def config_from_args(args, *, core=False):
    """The :class:`ArrayConfig` of parsed options (with ``core``, engine 0 of ``--pe``'s
    list); raises :class:`UsageError`. A list in ``--pe`` is refused unless ``core``."""
    if not core and ("," in str(args.pe) or ":" in str(args.pe)):
        raise UsageError(f"--pe {str(args.pe)!r}: several engines (or KIND:COLS) make a "
                         f"core only (--core); an engine is one of {', '.join(PE_KINDS)}")
    kinds = [e[0] for e in parse_pe_list(args.pe)]
    kind = kinds[0]
    # --mult-pack/--dsp-cols go to the mult engine: engine 0, or a further one (_extra_engines).
    mapping = {} if kind != "mult" and "mult" in kinds else _mult_mapping(args)
    try:
        return ArrayConfig(pe=kind, rows=args.rows, cols=args.cols, act_bits=args.act_bits,
                           weight_bits=args.weight_bits, max_k=args.max_k, name=args.name,
                           arch=args.arch, tree_levels_per_stage=args.levels_per_stage,
                           **mapping)
    except ConfigError as e:
        raise UsageError(option_message(e, OPTION)) from None


CORE_OPTIONS = {"stream_width": "--stream-width", "fmap_vectors": "--fmap-vectors",
                "acc_entries": "--acc-entries", "weight_rows": "--weight-rows",
                "max_channels": "--max-channels", "out_vectors": "--out-vectors",
                "shortcut_vectors": "--shortcut-vectors", "pool_pixels": "--pool-pixels",
                "fmap_banks": "--fmap-banks", "window_ops": "--window-ops",
                "taps": "--taps", "tap_line": "--tap-line", "shift_reach": "--shift-reach",
                "axil_addr_width": "--axil-addr-width"}
#: Core options that are switches (``--window-ops`` / ``--no-window-ops``), not integers.
_SWITCHES = ("window_ops",)


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
        "fmap_banks": "feature-map banks of --fmap-vectors each: 2 lets a layer's output "
                      "stay on-chip as the next layer's input (layer chaining; needs rows == "
                      "cols)",
        "taps": "rows of the tap window (interface 2.4): depthwise convolutions run on an "
                "array engine, kernels up to sqrt(N) x sqrt(N) on N rows; a square number "
                "up to rows, or 0 (none); needs --window-ops",
        "tap_line": "pixels of the tap window's line buffers: a taps run's padded line, "
                    "(out_w-1)*stride_w + kernel_w, must fit",
        "shift_reach": "largest |dy| and |dx| of a shift-table entry: a Shift2d of kernel "
                       "2N+1 folded into the convolution after it runs on the core",
    }
    # Options whose default the config derives from the others (None).
    derived = {"fmap_banks": "2 when rows == cols, else 1",
               "taps": "9 with --window-ops on an array engine of 9 rows or more, else 0"}
    for param, option in CORE_OPTIONS.items():
        if param in _SWITCHES:
            continue
        lo, hi = CORE_LIMITS.get(param, (None, None))
        rng = f"{lo}..{hi}, " if lo is not None else ""
        default = None if param in derived else getattr(d, param)
        shown = derived.get(param, default)
        g.add_argument(option, dest=f"core_{param}", type=int, default=default,
                       help=f"{helps[param]} ({rng}default: {shown})")
        if param == "fmap_banks":
            g.add_argument("--window-ops", dest="core_window_ops",
                           action=argparse.BooleanOptionalAction, default=None,
                           help="build the lane unit (interface 2.3): max pooling, the sums "
                                "of average pooling and depthwise convolutions run on the "
                                "core, cols lanes at one vector per cycle; needs rows == cols "
                                "(default: on when rows == cols)")


def _extra_engines(args, engine):
    """The further engines of ``--pe`` and their ``engine_cols`` (empty: none folded)."""
    specs = parse_pe_list(args.pe)
    extra, cols = [], [engine.cols]
    for k, (kind, c, bits) in enumerate(specs[1:], 1):
        try:
            mapping = _mult_mapping(args) if kind == "mult" else {}
            extra.append(ArrayConfig(pe=kind, rows=engine.rows, cols=engine.cols,
                                     act_bits=engine.act_bits, max_k=engine.max_k,
                                     weight_bits=bits, **mapping))
        except ConfigError as e:
            if e.param in ("mult_pack", "dsp_cols"):
                raise UsageError(f"--pe {str(args.pe)!r}: engine {k} ({kind}): "
                                 f"{option_message(e, OPTION)}") from None
            raise UsageError(f"--pe {str(args.pe)!r}: engine {k} ({kind}): {e}") from None
        cols.append(engine.cols if c is None else c)
    folded = any(c != engine.cols for c in cols)
    return tuple(extra), tuple(cols) if folded else ()


def core_config_from_args(args):
    from ..params.core_config import CoreConfig
    engine = config_from_args(args, core=True)
    extra, engine_cols = _extra_engines(args, engine)
    try:
        return CoreConfig(engine=engine, name=args.name, extra_engines=extra,
                          engine_cols=engine_cols,
                          **{p: getattr(args, f"core_{p}") for p in CORE_OPTIONS})
    except ConfigError as e:
        if e.param in ("extra_engines", "engine_cols"):
            raise UsageError(f"--pe {str(args.pe)!r}: {e}") from None
        option = CORE_OPTIONS.get(e.param)
        message = str(e)
        if option and message.startswith(e.param):
            message = option + message[len(e.param):]
        message = message.replace("use window_ops=False", "use --no-window-ops")
        message = message.replace("needs window_ops", "needs --window-ops")
        message = message.replace("use taps=0", "use --taps 0")
        raise UsageError(message) from None


def core_error_message(exc, prefix=""):
    """A :class:`ConfigError` of a core built from options, with its parameter spelt as the
    option (``rows must be an integer in [1, 1024], not 0`` -> ``--rows must be ...``)."""
    option = OPTION.get(exc.param) or CORE_OPTIONS.get(exc.param)
    message = str(exc)
    if option and message.startswith(exc.param):
        return option + message[len(exc.param):]
    return prefix + message
