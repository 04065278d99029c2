"""``mulfree bench board``: speed of the simulated board (:mod:`mulfree.sim.board`).

The generated core runs under Verilator inside the C++ harness, driven from Python through
ctypes with no Python per clock cycle. The benchmark builds the core (reporting the build time,
or the original one when the library comes from the cache), then streams real layers through it
round robin — a 3x3 convolution 16 -> 32 channels on 8x8, a matrix product 128x128 . 128x64
and a shifted 1x1 convolution 64 -> 64 on 16x16 by default — until about ``target_cycles``
clock cycles have run, and checks every result beat against
:func:`~mulfree.host.layer_stream.expected_beats`.

Speeds reported (cycles are core clock cycles):

* ``run``: cycles inside :meth:`SimCore.run` / the wall time of those calls (the harness alone);
  ``run_cpu`` the same per CPU second of this process, which other processes on a shared
  machine disturb less (the load average is reported too);
* ``loop``: all cycles (register accesses included) / the wall time of the whole loop (register
  accesses, ``push``, ``run``, ``pop``, the byte conversion and the bit-exact comparison);
* ``with_packing``: the same, also charging each run the time Python takes to pack its layer
  (:func:`~mulfree.host.layer_stream.pack_layer`, :func:`stream_beats`, bytes) as if every run
  packed afresh; the golden model (:func:`expected_beats`) is timed apart, it is not the
  board's cost;
* ``clock_only``: :meth:`SimCore.run` with no data, the core idle.
"""

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ..params.config import ArrayConfig
from ..params.core_config import CoreConfig
from .options import table


__all__ = ["BOARD_WORKLOADS", "BOARD_SPEED_TARGET", "board_layer", "bench_board",
           "format_board"]

#: Cycles per second the board must reach on the default 16x16 shift core while streaming.
BOARD_SPEED_TARGET = 100_000

#: The default layers: ``kind`` ``conv`` (in_c, h, w, out_c, kernel, padding, shift) or
#: ``matmul`` (m, k, n).
BOARD_WORKLOADS = {
    "conv3x3_16to32_8x8": {"kind": "conv", "in_c": 16, "h": 8, "w": 8, "out_c": 32,
                           "kernel": 3, "padding": 1},
    "matmul_128x128x64": {"kind": "matmul", "m": 128, "k": 128, "n": 64},
    "shift1x1_c64_16x16": {"kind": "conv", "in_c": 64, "h": 16, "w": 16, "out_c": 64,
                           "kernel": 1, "shift": True},
}


def board_layer(cfg: CoreConfig, spec, rng):
    """A random :class:`~mulfree.host.layer_stream.Layer` of ``params`` for ``cfg``'s engine."""
    from ..host.layer_stream import Layer
    from ..params.layer_golden import PostParams
    e = cfg.engine
    if spec["kind"] == "matmul":
        in_c, h, w, out_c, k, pad = spec["k"], 1, spec["m"], spec["n"], 1, 0
    elif spec["kind"] == "conv":
        in_c, h, w, out_c = spec["in_c"], spec["h"], spec["w"], spec["out_c"]
        k, pad = spec.get("kernel", 3), spec.get("padding", 0)
    else:
        raise ValueError(f"spec kind must be 'conv' or 'matmul', not {spec['kind']!r}")
    lo, hi = e.act_range
    x = rng.integers(lo, hi + 1, (in_c, h, w))
    if e.pe == "shift":
        w_codes = rng.integers(0, 1 << e.code_width, (out_c, in_c, k, k))
    else:
        wlo, whi = e.weight_range
        w_codes = rng.integers(wlo, whi + 1, (out_c, in_c, k, k))
    post = PostParams(bias=rng.integers(-500, 500, out_c), shift=rng.integers(2, 8, out_c),
                      relu=rng.integers(0, 2, out_c).astype(bool))
    shifts = rng.integers(-1, 2, (in_c, 2)) if spec.get("shift") else None
    return Layer(x=x, w_codes=w_codes, post=post, padding=(pad, pad), shifts=shifts)


def bench_board(rows=16, cols=16, *, pe="shift", act_bits=8, weight_bits=5, max_k=256,
                stream_width=64, core=None, workloads=None, target_cycles=1_500_000,
                clock_cycles=500_000, build_dir=None, work_dir=None, jobs=2, seed=1,
                progress=print):
    """Build the core, stream layers through the simulated board, return speeds and checks.

    Parameters
    ----------
    rows, cols, pe, act_bits, weight_bits, max_k, stream_width
        The core (:class:`CoreConfig` with default buffers); ``weight_bits`` is ignored for
        the adder PE.
    core : CoreConfig, optional
        The whole core instead (the parameters above are then ignored).
    workloads : dict, optional
        ``{name: spec}`` as :data:`BOARD_WORKLOADS` (the default).
    target_cycles : int
        Run the layers round robin until at least this many cycles have run.
    clock_cycles : int
        Cycles of the clock-only measurement.
    build_dir : path, optional
        The library cache (default :func:`mulfree.sim.board.default_build_dir`).
    work_dir : path, optional
        Where the design is generated (default: a temporary folder).

    Returns
    -------
    dict
        ``params``, ``build`` (seconds of this call, the library's original build seconds,
        cached or not), ``layers`` (per layer: beats, packing and golden seconds, runs,
        cycles), ``speed`` (cycles/s: ``run``, ``loop``, ``with_packing``, ``clock_only``),
        ``checks``.
    """
    from ..host.layer_stream import expected_beats, pack_layer, stream_beats
    from ..sim.board import MARKER, SimCore, beats_to_bytes, build_sim_core, bytes_to_beats
    from ..gen.core_manifest import core_manifest, write_core_design

    if core is None:
        engine = dict(pe=pe, rows=rows, cols=cols, act_bits=act_bits, max_k=max_k)
        if pe != "adder":
            engine["weight_bits"] = weight_bits
        cfg = CoreConfig(engine=ArrayConfig(**engine), stream_width=stream_width)
    else:
        cfg = core
    e = cfg.engine
    workloads = dict(BOARD_WORKLOADS if workloads is None else workloads)
    temporary = work_dir is None
    work = Path(work_dir or tempfile.mkdtemp(prefix="mulfree-bench-board-")).resolve()
    try:
        work.mkdir(parents=True, exist_ok=True)
        progress(f"generating {cfg.top_name} in {work}")
        t0 = time.perf_counter()
        _, j_path = write_core_design(cfg, work)
        gen_s = time.perf_counter() - t0
        progress("building the simulated core (Verilator + harness; cached after the first "
                 "time)")
        t0, started = time.perf_counter(), time.time()
        lib = build_sim_core(j_path, build_dir=build_dir, jobs=jobs, progress=progress)
        build_s = time.perf_counter() - t0
    finally:
        # The library is built into the cache (build_dir); the design was only its source.
        if temporary:
            shutil.rmtree(work, ignore_errors=True)
    marker = json.loads((lib.parent / MARKER).read_text())
    # Finished during this call (by this process, or by another one this call waited for).
    fresh = (lib.parent / MARKER).stat().st_mtime >= started - 1

    rng = np.random.default_rng(seed)
    prepared = {}
    for name, spec in workloads.items():
        layer = board_layer(cfg, spec, rng)
        t0 = time.perf_counter()
        beats = stream_beats(pack_layer(cfg, layer))
        data = beats_to_bytes([b for b, _ in beats], cfg.stream_width // 8)
        last = np.array([flag for _, flag in beats], dtype=bool)
        pack_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        want = expected_beats(cfg, layer)
        golden_s = time.perf_counter() - t0
        prepared[name] = (data, last, want)
        progress(f"{name}: {len(data)} input beats, {len(want)} result beats "
                 f"(packed in {pack_s:.3f} s, golden model {golden_s:.3f} s)")
        workloads[name] = {"spec": spec, "input_beats": len(data), "result_beats": len(want),
                           "pack_seconds": pack_s, "golden_seconds": golden_s,
                           "runs": 0, "cycles": 0, "mismatched_runs": 0, "errors": 0}

    with SimCore(lib, core_manifest(cfg)) as core:
        ctrl, status, error = (core.register_offset(n) for n in ("CONTROL", "STATUS", "ERROR"))
        irq_enable_start, done_bit = 0b101, 0b100
        start_cycles = core.cycles
        run_cycles, run_s, run_cpu, pack_charge = 0, 0.0, 0.0, 0.0
        load_before = os.getloadavg()
        loop_t0 = time.perf_counter()
        names = list(prepared)
        i = 0
        while core.cycles - start_cycles < target_cycles:
            name = names[i % len(names)]
            i += 1
            data, last, want = prepared[name]
            entry = workloads[name]
            c0 = core.cycles
            assert core.axil_write(ctrl, irq_enable_start) == 0, "start refused"
            core.push(data, last)
            core.arm_sink(len(want))
            t0, c0_cpu = time.perf_counter(), time.process_time()
            n, reason = core.run(50 * (len(data) + len(want)) + 100_000,
                                 until=("irq", "sink_done"))
            run_s += time.perf_counter() - t0
            run_cpu += time.process_time() - c0_cpu
            run_cycles += n
            got, _ = core.pop()
            if reason != "irq+sink_done" or core.axil_read(error)[0] & 0xFF:
                entry["errors"] += 1
                core.reset()
            elif bytes_to_beats(got) != want:
                entry["mismatched_runs"] += 1
            core.axil_write(status, done_bit)
            entry["runs"] += 1
            entry["cycles"] += core.cycles - c0
            pack_charge += entry["pack_seconds"]
        loop_s = time.perf_counter() - loop_t0
        total = core.cycles - start_cycles
        t0 = time.perf_counter()
        core.run(clock_cycles)
        clock_s = time.perf_counter() - t0
        load_after = os.getloadavg()

    speed = {"run": run_cycles / run_s, "run_cpu": run_cycles / max(run_cpu, 1e-9),
             "loop": total / loop_s,
             "with_packing": total / (loop_s + pack_charge),
             "clock_only": clock_cycles / clock_s}
    runs = sum(w["runs"] for w in workloads.values())
    bad = sum(w["mismatched_runs"] + w["errors"] for w in workloads.values())
    checks = [
        {"name": "every result beat equals expected_beats", "value": f"{runs - bad}/{runs} runs",
         "limit": "all runs", "pass": bad == 0 and runs > 0},
        {"name": f"{e.rows}x{e.cols} {e.pe} core: cycles/s while streaming (run)",
         "value": round(speed["run"]), "limit": f">= {BOARD_SPEED_TARGET}",
         "pass": speed["run"] >= BOARD_SPEED_TARGET},
    ]
    return {
        "params": {"core": cfg.params(), "top": cfg.top_name, "target_cycles": target_cycles,
                   "seed": seed},
        "build": {"generate_seconds": gen_s, "seconds": build_s,
                  "library_build_seconds": marker["seconds"], "cached": not fresh,
                  "library": str(lib), "flags": marker["flags"],
                  "verilator": marker["verilator"]},
        "layers": workloads,
        "cycles": {"total": total, "in_run": run_cycles, "runs": runs},
        "seconds": {"run": run_s, "run_cpu": run_cpu, "loop": loop_s,
                    "packing_charged": pack_charge, "clock_only": clock_s},
        # Other processes slow the wall-clock figures down; run_cpu much above run says so.
        "machine": {"cpus": os.cpu_count(), "load_average_before": load_before[0],
                    "load_average_after": load_after[0]},
        "speed": speed,
        "checks": checks,
    }


def format_board(result):
    """The board benchmark as text: build, layers, speeds."""
    b, p = result["build"], result["params"]
    e = p["core"]["engine"]
    lines = [f"{e['rows']}x{e['cols']} {e['pe']} core, stream {p['core']['stream_width']} bits "
             f"({p['top']})",
             f"build: {b['seconds']:.1f} s this call; "
             + (f"cached, the library took {b['library_build_seconds']:.1f} s to build"
                if b["cached"] else f"Verilator and the C++ compiler took "
                                    f"{b['library_build_seconds']:.1f} s")
             + f"; design generated in {b['generate_seconds']:.1f} s",
             f"flags: {' '.join(b['flags'])}"]
    rows = [(name, w["input_beats"], w["result_beats"], f"{w['pack_seconds'] * 1e3:.1f}",
             f"{w['golden_seconds'] * 1e3:.1f}", w["runs"],
             round(w["cycles"] / max(w["runs"], 1)),
             "yes" if not (w["mismatched_runs"] or w["errors"]) else "NO")
            for name, w in result["layers"].items()]
    lines.append(table(("layer", "in beats", "out beats", "pack ms", "golden ms", "runs",
                         "cycles/run", "exact"), rows))
    s, c = result["speed"], result["cycles"]
    lines.append(f"{c['total']:,} cycles in {c['runs']} runs; cycles per second:")
    lines.append(table(("measure", "cycles/s"), [
        ("run (harness, inside SimCore.run)", f"{s['run']:,.0f}"),
        ("run, per CPU second of this process", f"{s['run_cpu']:,.0f}"),
        ("loop (+ registers, push, pop, bit-exact check)", f"{s['loop']:,.0f}"),
        ("with packing (+ pack_layer per run)", f"{s['with_packing']:,.0f}"),
        ("clock only (idle core, no data)", f"{s['clock_only']:,.0f}"),
    ]))
    mach = result["machine"]
    lines.append(f"load average {mach['load_average_before']:.1f} -> "
                 f"{mach['load_average_after']:.1f} on {mach['cpus']} CPUs (wall-clock figures "
                 f"drop when other processes share them)")
    return "\n".join(lines)
