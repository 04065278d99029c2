"""``mulfree bench networks``: the networks users bring, exported, compiled and run bit-exact.

For each network of :data:`mulfree.host.zoo.ZOO` named and each form (DeepShift ``shift``;
AdderNet ``adder`` with multiplier ends; ShiftAddNet ``shiftadd`` with multiplier ends), with
seeded random weights and BatchNorm statistics:

1. quantize it (calibrated on seeded random images) and write its export, load it back, and
   compile it for the core (``core_for_model``: a ``rows x cols`` engine of the model's
   most-used PE kind, and an engine for each other kind of its weight nodes, folded when the
   kind has few terms: AdderNet's and ShiftAddNet's mult ends run on the core). The time of
   these steps is measured on their own (the simulator's build is not in it);
2. run ``images`` images on the simulated board (Verilator), and compare every output integer
   with the golden model (:func:`mulfree.params.model_golden.run_int_model`) and with the
   PyTorch integer forward (:func:`mulfree.host.quant.int_forward`).

The program chains the layers the core can keep on-chip (``chain="auto"`` at batch 1); the
row gives the host<->core bytes per image of it and of the unchained program (the costs of
:meth:`~mulfree.host.program.Program.costs`), and the measured useful PE utilization (useful
terms over ``BUSY_CYCLES`` x engine 0's PEs).

Checks: export + compile under :data:`EXPORT_COMPILE_LIMIT` seconds; every output equal to
both references. Everything is seeded; torch runs on one thread while the model is built and
quantized, so the figures do not depend on the machine.
"""

import os
import tempfile
import time

import numpy as np

from .options import table


__all__ = ["NETWORKS", "FORMS", "EXPORT_COMPILE_LIMIT", "bench_networks", "format_networks"]


#: The networks the benchmark knows, with their input shape.
NETWORKS = {"resnet20": (3, 32, 32), "resnet8": (3, 32, 32), "shiftnet": (3, 32, 32),
            "addressnet": (3, 32, 32), "mobilenet_dws": (3, 32, 32)}
#: The forms it runs.
FORMS = ("shift", "adder", "shiftadd")
#: Export + compile of a ResNet-20 must take less than this (seconds, issue target).
EXPORT_COMPILE_LIMIT = 10.0
#: Calibration images.
CALIB_IMAGES = 32


def _random_model(name, form, seed):
    import torch
    from ..host.zoo import build_zoo_model
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_zoo_model(name, form)
        # Random BatchNorm statistics, so the folding is exercised (fresh ones are identity).
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def _bytes(program):
    """Host<->core bytes of one image (a batch of 1), both ways, by the program's costs."""
    return sum(c.bytes_in + c.bytes_out for c in program.costs(1))


def _kinds(core):
    """The core's engines' PE kinds, ``"adder+mult"``."""
    return "+".join(e.pe for e in core.engines)


def bench_networks(networks=("resnet20",), forms=FORMS, *, images=8, rows=16, cols=16,
                   seed=0, taps=None, say=None):
    """Run the benchmark; a JSON-ready dict with ``rows`` (one per network and form) and
    ``checks``.

    Parameters
    ----------
    networks : sequence of str
        Keys of :data:`NETWORKS`.
    forms : sequence of str
        Of :data:`FORMS`.
    images : int
        Images run on the simulated board per network and form.
    rows, cols : int
        The core's array.
    seed : int
        Seeds the weights, the calibration and the images.
    taps : int or None
        The core's tap window (``CoreConfig.taps``; 0: depthwise runs on the lane unit);
        None: the core's default.
    say : callable or None
        Progress lines.
    """
    import torch
    from ..host.compiler import compile_model, core_for_model
    from ..host.export_format import load_export, write_export
    from ..host.quant import int_forward, quantize
    from ..host.runtime import open_device
    from ..params.model_golden import run_int_model
    say = say or (lambda line: None)
    out, checks = [], []
    for name in networks:
        shape = NETWORKS[name]
        rng = np.random.default_rng(seed)
        calib = rng.random((CALIB_IMAGES,) + shape, dtype=np.float32)
        x_float = rng.random((images,) + shape, dtype=np.float32)
        for form in forms:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                model = _random_model(name, form, seed)
                with tempfile.TemporaryDirectory() as tmp:
                    t0 = time.perf_counter()
                    int_model = quantize(model, torch.as_tensor(calib))
                    write_export(int_model, tmp)
                    loaded = load_export(tmp)
                    core = core_for_model(loaded, rows=rows, cols=cols,
                                          **({} if taps is None else {"taps": taps}))
                    program = compile_model(loaded, core, host_fallback=True)
                    seconds = time.perf_counter() - t0
                    plain = compile_model(loaded, core, host_fallback=True, chain="off")
            finally:
                torch.set_num_threads(threads)
            from ..params.model_golden import quantize_input
            x = quantize_input(loaded, x_float)
            golden = run_int_model(loaded, x)
            torch_int = int_forward(loaded, x).numpy()
            say(f"{name} {form}: exported and compiled in {seconds:.2f} s; running "
                f"{images} images on the simulated {_kinds(core)} core")
            with open_device("sim", core, progress=say) as device:
                t1 = time.perf_counter()
                device.load(program)
                result = device.run(x)
                run_seconds = time.perf_counter() - t1
            dw = _depthwise(program, result, rows * cols)
            placements = {}
            for node in result.nodes:
                placements[node.placement] = placements.get(node.placement, 0) + 1
            row = {"network": name, "form": form, "core_pe": _kinds(core),
                   "nodes": len(loaded.layers),
                   "core_nodes": placements.get("core", 0),
                   "host_nodes": placements.get("host", 0),
                   "export_compile_seconds": round(seconds, 3),
                   "images": images,
                   "run_seconds": round(run_seconds, 2),
                   "busy_cycles_per_image": round(result.cycles_per_image, 1),
                   "useful_utilization": round(result.useful_utilization, 4),
                   "chained_segments": len(program.segments),
                   "bytes_per_image": _bytes(program),
                   "bytes_per_image_unchained": _bytes(plain),
                   "golden_equal": bool(np.array_equal(result.outputs, golden)),
                   "torch_equal": bool(np.array_equal(result.outputs, torch_int)),
                   "outputs_compared": int(np.size(golden)),
                   "taps": core.taps,
                   "depthwise_runs": dw["runs"],
                   "depthwise_cycles_per_image": round(dw["cycles"] / images, 1),
                   "depthwise_useful_utilization": round(dw["utilization"], 4)}
            out.append(row)
            if name == "resnet20":
                checks.append({"name": f"{name} {form}: export + compile (s)", "value": seconds,
                               "limit": f"< {EXPORT_COMPILE_LIMIT}",
                               "pass": seconds < EXPORT_COMPILE_LIMIT})
            checks.append({"name": f"{name} {form}: RTL == golden == PyTorch integer",
                           "value": row["outputs_compared"],
                           "limit": "every output integer",
                           "pass": row["golden_equal"] and row["torch_equal"]})
    return {"rows": out, "checks": checks, "seed": seed, "core": f"{rows}x{cols}",
            "machine": os.uname().machine, "cpus": os.cpu_count()}


def _depthwise(program, result, pes):
    """The depthwise nodes' share of a run: ``runs`` ("taps" on the array, "lanes" on the
    lane unit, or "none"), their measured busy ``cycles`` over the batch and their useful
    ``utilization`` (their terms of real channels and pixels over ``cycles x pes``)."""
    steps = {s.name: s for s in program.steps
             if getattr(s, "window", None) == "depthwise"}
    nodes = [n for n in result.nodes if n.name in steps]
    cycles = sum(n.busy_cycles for n in nodes)
    terms = sum(n.useful_terms for n in nodes)
    kinds = {"taps" if s.taps else "lanes" for s in steps.values()}
    return {"runs": "+".join(sorted(kinds)) or "none", "cycles": cycles,
            "utilization": terms / (cycles * pes) if cycles else 0.0}


def format_networks(result):
    """The benchmark's table."""
    head = ["network", "form", "core PE", "nodes (core/host)", "export+compile s", "images",
            "cycles/image", "useful util", "depthwise cycles/image (util)",
            "bytes/image (unchained)", "== golden", "== torch"]
    rows = [[r["network"], r["form"], r["core_pe"],
             f"{r['nodes']} ({r['core_nodes']}/{r['host_nodes']})",
             f"{r['export_compile_seconds']:.2f}", r["images"],
             f"{r['busy_cycles_per_image']:.0f}", f"{100 * r['useful_utilization']:.1f} %",
             "-" if r["depthwise_runs"] == "none" else
             f"{r['depthwise_cycles_per_image']:.0f} ({100 * r['depthwise_useful_utilization']:.1f}"
             f" %, {r['depthwise_runs']})",
             f"{r['bytes_per_image']:,} ({r['bytes_per_image_unchained']:,})",
             "yes" if r["golden_equal"] else "NO",
             "yes" if r["torch_equal"] else "NO"] for r in result["rows"]]
    return table(head, rows)
