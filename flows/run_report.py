"""What ``mulfree run`` reports: the figures of a run, per node, as a dict and as text.

:func:`build_report` gathers the batches' :class:`~mulfree.host.run_result.RunResult` into the
JSON-ready report ``mulfree run --json`` writes: the core, the inputs, the accuracy, speed and
PE use from the core's counters, and per node of the program (``"nodes"``) its kind, where it
ran, its runs, busy cycles (measured) and estimated cycles (the cycle model), counters, useful
terms, the elements and terms the host computed, the bytes sent to the core and received,
and both utilizations. The core's images/s is given at a clock that names its source
(:mod:`~mulfree.flows.clock`: 100 MHz assumed, ``--clock-mhz``, or a place-and-route result). ``"layers"`` keeps
the core nodes alone, as before graphs. :func:`format_report` is the text it prints.
"""

import numpy as np

from .clock import clock_note, core_clock


__all__ = ["build_report", "format_report", "NODE_FIELDS", "compile_document", "COMPILE_JSON"]

#: Per node, the fields summed over the batches.
NODE_FIELDS = ("runs", "busy_cycles", "estimated_cycles", "terms", "useful_terms",
               "host_elements", "host_terms", "stall_in_cycles", "stall_out_cycles",
               "bytes_in", "bytes_out")
_LAYER_FIELDS = ("runs", "busy_cycles", "terms", "stall_in_cycles", "stall_out_cycles")


def _ratio(num, den, digits=4):
    return round(num / den, digits) if den else 0.0


def _nodes(results, pes, images):
    nodes = {}
    for r in results:
        for n in r.nodes:
            d = nodes.setdefault(n.index, {"index": n.index, "name": n.name, "kind": n.kind,
                                           "placement": n.placement, "seconds": 0.0,
                                           "fused_into": n.fused_into,
                                           **{k: 0 for k in NODE_FIELDS}})
            for k in NODE_FIELDS:
                d[k] += getattr(n, k)
            d["seconds"] += n.seconds
    for d in nodes.values():
        d["seconds"] = round(d["seconds"], 4)
        d["cycles_per_image"] = round(d["busy_cycles"] / images, 1) if images else 0
        d["pe_utilization"] = _ratio(d["terms"], d["busy_cycles"] * pes)
        d["useful_utilization"] = _ratio(d["useful_terms"], d["busy_cycles"] * pes)
    return list(nodes.values())


def build_report(args, model, program, source, results, outputs, y, open_seconds):
    """The report dict of a ``mulfree run`` (before the golden comparison and the identity).

    ``_predictions`` holds the predictions as an array (removed before writing JSON).
    """
    e = program.core.engine
    pes = e.rows * e.cols
    busy = sum(r.busy_cycles for r in results)
    terms = sum(r.terms for r in results)
    seconds = sum(r.seconds for r in results)
    images = int(len(outputs))
    sim = [r.sim_cycles for r in results if r.sim_cycles is not None]
    preds = np.concatenate([r.predictions for r in results]) \
        if model.output == "argmax" else None
    nodes = _nodes(results, pes, images)
    layers = []
    for d in nodes:
        if d["placement"] == "core" and d["fused_into"] is None:
            layers.append({"layer": d["index"], "kind": d["kind"],
                           **{k: d[k] for k in _LAYER_FIELDS},
                           "cycles_per_image": d["cycles_per_image"],
                           "pe_utilization": d["pe_utilization"]})
    useful = sum(d["useful_terms"] for d in nodes if d["placement"] == "core")
    clock = core_clock(args, program.core.top_name)
    report = {
        "model": {"path": str(args.model), "name": model.name, "input": list(model.input.shape)},
        "device": args.device,
        "core": {"top": program.core.top_name, "pe": e.pe, "rows": e.rows, "cols": e.cols,
                 "act_bits": e.act_bits, "weight_bits": e.code_width, "max_k": e.max_k,
                 "stream_width": program.core.stream_width},
        "host_fallback": program.host_fallback,
        "inputs": source, "images": images, "open_seconds": round(open_seconds, 2),
        "seconds": round(seconds, 3),
        "images_per_second": round(images / seconds, 2) if seconds else 0.0,
        "busy_cycles": busy, "cycles_per_image": round(busy / images, 1) if images else 0,
        "estimated_cycles": sum(d["estimated_cycles"] for d in nodes),
        "images_per_second_at_100mhz": round(100e6 * images / busy, 1) if busy else 0.0,
        "core_clock": clock,
        "images_per_second_at_core_clock": round(clock["mhz"] * 1e6 * images / busy, 1)
        if busy else 0.0,
        "pe_utilization": _ratio(terms, busy * pes),
        "useful_utilization": _ratio(useful, busy * pes),
        "useful_terms": useful,
        "host_elements": sum(d["host_elements"] for d in nodes),
        "host_terms": sum(d["host_terms"] for d in nodes),
        "bytes_to_core": sum(d["bytes_in"] for d in nodes),
        "bytes_from_core": sum(d["bytes_out"] for d in nodes),
        "layers": layers,
        "nodes": nodes,
        "_predictions": preds,
    }
    if sim:
        report["sim_cycles"] = int(sum(sim))
        report["sim_cycles_per_second"] = round(sum(sim) / seconds, 1) if seconds else 0.0
    if preds is not None:
        report["predictions"] = preds.tolist()
        if y is not None:
            correct = int((preds == y).sum())
            report["accuracy"] = round(correct / images, 6) if images else 0.0
            report["correct"] = correct
    return report


def _node_line(d, images):
    head = f"  {d['index']:>3} {d['name']:<14} {d['kind']:<14} {d['placement']:<4}"
    if d.get("fused_into") is not None:
        return f"{head} {'':>10} in the runs of layers.{d['fused_into']} (post-processing)"
    if d["placement"] == "core":
        est = d["estimated_cycles"] / images if images else 0
        runs = f"{d['runs']} run{'s' if d['runs'] != 1 else ''}"
        return (f"{head} {runs:>10} {d['cycles_per_image']:>11,.1f} cycles/image "
                f"(model {est:,.1f})  PE use {100 * d['pe_utilization']:5.1f} %, useful "
                f"{100 * d['useful_utilization']:5.1f} %  stalls in {d['stall_in_cycles']:,} "
                f"out {d['stall_out_cycles']:,}")
    per = d["host_elements"] / images if images else 0
    line = f"{head} {per:>13,.0f} elements/image"
    if d["host_terms"]:
        line += f", {d['host_terms'] / images:,.0f} terms/image"
    return line


def format_report(report):
    """The lines ``mulfree run`` prints."""
    c = report["core"]
    lines = [f"model       {report['model']['path']}  (input {tuple(report['model']['input'])})",
             f"core        {c['top']} on {report['device']}: {c['rows']}x{c['cols']} "
             f"{c['pe']} PEs, act {c['act_bits']} b, weight code {c['weight_bits']} b "
             f"(opened in {report['open_seconds']:.1f} s)",
             f"inputs      {report['images']} images ({report['inputs']})"]
    if "accuracy" in report:
        lines.append(f"accuracy    {100 * report['accuracy']:.2f} % "
                     f"({report['correct']} / {report['images']})")
    g = report.get("golden")
    if g:
        if g["bit_exact"]:
            lines.append(f"golden      bit-exact: all {g['integers']} output integers of "
                         f"{g['images']} images equal the golden model's"
                         + (", and so do the predictions" if g.get("predictions_equal")
                            else ""))
        else:
            lines.append(f"golden      MISMATCH: {g['mismatches']} of {g['images']} images "
                         f"differ from the golden model (first: {g['mismatched_images']})")
    speed = (f"speed       {report['cycles_per_image']:,.0f} core cycles per image; "
             f"{report['images_per_second']:,.1f} images/s here")
    if "sim_cycles_per_second" in report:
        speed += f" (simulated at {report['sim_cycles_per_second']:,.0f} cycles/s)"
    lines.append(speed)
    clock = report.get("core_clock") or core_clock(None, c["top"])
    per_second = report.get("images_per_second_at_core_clock",
                            report["images_per_second_at_100mhz"])
    lines.append(f"            {per_second:,.0f} images/s for the core alone at "
                 f"{clock_note(clock)}")
    pes = c["rows"] * c["cols"]
    lines.append(f"PE use      {100 * report['pe_utilization']:.1f} % of PE-cycles computed "
                 f"a term (TERMS / (BUSY_CYCLES x {pes} PEs)); "
                 f"{100 * report.get('useful_utilization', 0.0):.1f} % a useful one (real "
                 f"channels and pixels)")
    if "bytes_to_core" in report and report["images"]:
        images = report["images"]
        lines.append(f"traffic     {report['bytes_to_core'] / images:,.0f} B per image to the "
                     f"core, {report['bytes_from_core'] / images:,.0f} B back (every packet "
                     f"sent and every result byte received)")
    nodes = report.get("nodes", [])
    host = [d for d in nodes if d["placement"] == "host"]
    if host:
        lines.append(f"host        {len(host)} node{'s' if len(host) != 1 else ''}: "
                     f"{report['host_elements']:,} elements"
                     + (f", {report['host_terms']:,} terms of weight nodes"
                        if report.get("host_terms") else ""))
    lines.append("nodes")
    lines.append(f"  {'#':>3} {'name':<14} {'kind':<14} where")
    for d in nodes:
        lines.append(_node_line(d, report["images"]))
    return "\n".join(lines)


#: What ``mulfree compile --json`` adds to the common keys (its help text says it).
COMPILE_JSON = ("core (top, parameters: the core's, as resolved), program (batch, runs: core "
                "runs of the batch, nodes: per node index, name, kind, placement, runs, "
                "cycles, useful_terms, host_elements, host_terms, bytes_in, bytes_out as "
                "Program.costs gives them, totals: their sums per placement)")


def compile_document(program, batch):
    """The figures of ``mulfree compile --json``: the core and the program's costs for a batch
    of ``batch`` images (:meth:`~mulfree.host.program.Program.costs`)."""
    from dataclasses import asdict
    nodes = [asdict(c) for c in program.costs(batch)]
    sums = ("runs", "cycles", "useful_terms", "host_elements", "host_terms", "bytes_in",
            "bytes_out")
    totals = {where: {"nodes": sum(n["placement"] == where for n in nodes),
                      **{k: sum(n[k] for n in nodes if n["placement"] == where)
                         for k in sums}}
              for where in ("core", "host")}
    cfg = program.core
    return {"core": {"top": cfg.top_name, "parameters": cfg.params()},
            "program": {"batch": batch, "runs": program.runs_for(batch), "nodes": nodes,
                        "totals": totals}}
