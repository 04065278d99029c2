"""``mulfree demo``: generate an array, simulate its Verilog, check it against the golden model.

The main job for now: it exercises the whole chain (config -> Amaranth -> Verilog ->
Verilator/Icarus via cocotb -> bit-exact comparison with the NumPy golden model) and prints a
short report. Simulator logs go to files in the output folder.
"""

import json
import sys
import time
from pathlib import Path

from .core_options import config_from_args
from .options import UsageError, check_int
from ..gen.emit import check_output_dir, OutputError
from ..sim.runner import build_design, run_cocotb, SimulatorMissing


__all__ = ["run_demo", "MAX_VECTORS"]

#: Most random vectors ``mulfree demo engine`` simulates per tile (about an hour at 16x16).
MAX_VECTORS = 1_000_000


def _step(message):
    print(f"[mulfree demo] {message}", file=sys.stderr, flush=True)


def run_demo(args):
    """``mulfree demo engine``: generate the array, simulate it, print the report.

    Parameters
    ----------
    args : argparse.Namespace
        The options of ``mulfree demo`` (:func:`mulfree.flows.demo.add_parser`), with
        ``rows``, ``cols`` and ``output`` set.

    Returns
    -------
    int
        Exit status: 0 if every scenario is bit-exact, 1 if one fails or the simulator is
        missing.

    Raises
    ------
    mulfree.flows.options.UsageError
        A bad option or output folder.
    """
    cfg = config_from_args(args)
    check_int("--vectors", args.vectors, 1, MAX_VECTORS)
    try:
        out = check_output_dir(args.output).resolve()
    except OutputError as e:
        raise UsageError(f"-o/--output{str(e)[len(e.param):]}") from None
    out.mkdir(parents=True, exist_ok=True)
    report_path = out / "scenarios.jsonl"
    report_path.unlink(missing_ok=True)

    _step(f"generating {cfg.top_name} and compiling it with {args.simulator} "
          f"(Verilator takes 10-60 s; log: {out / 'build.log'})")
    t0 = time.perf_counter()
    try:
        runner, manifest_path = build_design(cfg, args.simulator, out,
                                             log_file=out / "build.log")
    except SimulatorMissing as e:
        print(f"mulfree demo: error: {e}", file=sys.stderr)
        return 1
    t_build = time.perf_counter() - t0

    _step(f"simulating 5 scenarios, {args.vectors} random vectors in the largest "
          f"(log: {out / 'sim.log'})")
    t0 = time.perf_counter()
    result = run_cocotb(runner, manifest_path, "mulfree.sim.tb_array",
                        extra_env={"MULFREE_TB_VECTORS": str(args.vectors),
                                   "MULFREE_TB_REPORT": str(report_path)},
                        log_file=out / "sim.log")
    t_sim = time.perf_counter() - t0

    manifest = json.loads(Path(manifest_path).read_text())
    scenarios = [json.loads(line) for line in report_path.read_text().splitlines()] \
        if report_path.exists() else []
    outputs = sum(s["outputs"] for s in scenarios)
    cycles = sum(s["cycles"] for s in scenarios)
    d = manifest["derived"]
    print(f"design      {cfg.top_name}  ({manifest['files']['verilog']} in {out})")
    shape = (f"{cfg.rows}x{cfg.cols} {cfg.pe} PEs" if cfg.arch == "array" else
             f"{cfg.cols} adder trees of {cfg.rows} {cfg.pe} terms")
    print(f"            {shape}, term {d['term']}, "
          f"act {cfg.act_bits} b, weight code {d['code_width']} b, "
          f"accumulator {d['acc_width']} b for max_k={cfg.max_k}")
    print(f"            latency {manifest['timing']['latency']} cycles, "
          f"one vector per cycle")
    print(f"simulator   {args.simulator}: build {t_build:.1f} s, run {t_sim:.1f} s")
    for name, failure in result.tests.items():
        print(f"  {'PASS' if failure is None else 'FAIL'}  {name}"
              + (f": {failure}" if failure else ""))
    print(f"checked     {outputs} output vectors = {outputs * cfg.cols} results against the "
          f"golden model over {cycles} cycles: "
          + ("all bit-exact" if result.ok else f"{len(result.failed)} scenario(s) FAILED"))
    return 0 if result.ok else 1
