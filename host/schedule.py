"""Where each node of a graph runs, how long tensors live, and what every node costs.

* **Placement** (:func:`place_nodes`): a ``linear`` node, or a ``conv2d`` with ``groups == 1``,
  whose PE kind is the core's runs on the core, and so do pooling and depthwise nodes the
  core's lane unit takes (``window_ops``, :mod:`mulfree.host.window_steps`); every other node
  runs on the host as an exact
  integer step (:class:`~mulfree.host.steps.HostStep`). A weight node of another PE kind
  runs on the host only when the caller allows it (``host_fallback``): otherwise one
  :class:`~mulfree.host.steps.CompileError` names every such node. A convolution whose shift
  table moves a channel further than the core's ``shift_reach`` runs on the host, saying so.
* **Lifetimes** (:func:`last_uses`): a tensor is kept until its last reader has run.
* **Costs** (:func:`node_costs`): per node, the core's estimated busy cycles
  (:func:`mulfree.host.cycle_model.run_cycles`, per run, summed over the runs of a batch: the
  first sends the weights, the others reuse them), the useful terms of a weight node (``B x
  output elements x K``: real channels and pixels; a depthwise window run's too, a pooling
  run's none), the output elements the host computes,
  and the terms it computes for a weight node on the host, and the bytes a core node's runs
  move each way (:func:`core_step_traffic`). :func:`describe_program` prints them, one line
  per node, with totals.

NumPy only.
"""

from dataclasses import dataclass

import numpy as np

from ..params.int_layers import WEIGHT_KINDS
from .core_layer import layer_geometry
from .cycle_model import run_cycles
from .stacking import stack_gap
from .steps import (CompileError, CoreStep, FusedStep, run_chunks, run_x_shape, step_geometry,
                    step_layer)
from .stream_format import first_block_acts
from .stream_pack import layer_packets
from .window_steps import window_placement


__all__ = ["NodeCost", "place_nodes", "node_label", "last_uses", "weight_terms",
           "core_step_cycles", "run_traffic", "core_step_traffic", "node_costs",
           "describe_program", "shift_reach_needed"]


@dataclass(frozen=True)
class NodeCost:
    """What one node costs over a batch (:meth:`~mulfree.host.program.Program.costs`).

    Attributes
    ----------
    index : int
    name, kind, placement : str
    runs : int
        Core runs (0 on the host).
    cycles : int
        Estimated core busy cycles (:func:`mulfree.host.cycle_model.run_cycles`, summed over
        the runs: the first sends the weights, the others reuse them); 0 on the host.
    useful_terms : int
        For a weight node, ``B x output elements x K`` (real channels and pixels, ``K`` the
        terms of one output); 0 for the others.
    host_elements : int
        Output elements the host computes (``B x`` the output's size); 0 on the core.
    host_terms : int
        Terms the host computes (a weight node on the host: its useful terms); else 0.
    bytes_in, bytes_out : int
        Bytes the core's runs take on ``s_axis`` (every packet, headers included, split as
        the program's ``max_packet_bytes`` says) and give on ``m_axis``; 0 on the host.
    """

    index: int
    name: str
    kind: str
    placement: str
    runs: int = 0
    cycles: int = 0
    useful_terms: int = 0
    host_elements: int = 0
    host_terms: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


def node_label(info, layer):
    """``layers.3 (conv1, mult conv2d)``: a node's path, name, PE kind and kind (the name is
    left out when it is the path)."""
    what = f"{layer.pe} {info.kind}" if info.kind in WEIGHT_KINDS else info.kind
    if info.name == f"layers.{info.index}":
        return f"layers.{info.index} ({what})"
    return f"layers.{info.index} ({info.name}, {what})"


def shift_reach_needed(layer):
    """The largest ``|dy|`` or ``|dx|`` of a weight node's shift table (0 without one): the
    ``shift_reach`` a core needs to run it."""
    shifts = getattr(layer, "shifts", None)
    return 0 if shifts is None else int(np.abs(np.asarray(shifts)).max(initial=0))


def place_nodes(model, infos, pes, *, host_fallback=False, window_ops=False, shift_reach=1):
    """Where each node runs: ``{index: (placement, reason)}``.

    Parameters
    ----------
    model : IntModel
    infos : list of NodeInfo
        ``graph_nodes(model)``.
    pes : str or tuple of str
        The PE kinds of the core's engines (one per engine).
    host_fallback : bool
        Run weight nodes of another PE kind on the host.
    window_ops : bool
        The core has the lane unit (interface 2.3): max and power-of-two average pooling and
        depthwise convolutions of its PE kinds run on the core
        (:func:`mulfree.host.window_steps.window_placement`).
    shift_reach : int
        The core's ``shift_reach``: a convolution whose shift table moves a channel further
        (a folded Shift2d of a wider kernel) runs on the host, saying so.

    Raises
    ------
    CompileError
        Without ``host_fallback``, if a weight node has another PE kind: one line naming every
        such node (``param`` is the first one's ``layers.<i>.pe``).
    """
    pes = (pes,) if isinstance(pes, str) else tuple(pes)
    places, foreign = {}, []
    for info in infos:
        layer = model.layers[info.index]
        window = window_placement(info, layer, pes, window_ops)
        if window is not None and (window[0] == "core" or info.kind not in WEIGHT_KINDS
                                   or layer.pe in pes):
            places[info.index] = window
        elif info.kind not in WEIGHT_KINDS:
            places[info.index] = ("host", "no weights")
        elif layer.pe not in pes:
            foreign.append(info)
            places[info.index] = ("host", f"{layer.pe} PEs, host fallback")
        elif info.kind == "conv2d" and layer.groups != 1:
            places[info.index] = ("host", "depthwise")
        elif shift_reach_needed(layer) > shift_reach:
            places[info.index] = ("host", f"shift table reaches {shift_reach_needed(layer)} "
                                          f"pixels, the core's shift_reach is {shift_reach}")
        else:
            places[info.index] = ("core", "")
    if foreign and not host_fallback:
        names = ", ".join(node_label(info, model.layers[info.index]) for info in foreign)
        verb = "has" if len(foreign) == 1 else "have"
        raise CompileError(f"layers.{foreign[0].index}.pe",
                           f"{names} {verb} weights of another PE kind than this core's "
                           f"{'/'.join(pes)} PEs; --host-fallback (host_fallback=True) runs "
                           f"{'it' if len(foreign) == 1 else 'them'} on the host")
    return places


def last_uses(infos):
    """``{tensor: index of the last node reading it}`` (tensors: node indices, ``-1`` the
    model's input); the last node's output, the model's, is read by none. ``infos`` may be
    the graph's nodes or a program's steps (a core step with a fused residual add reads its
    shortcut; the fused node reads the step before it)."""
    last = {}
    for info in infos:
        for j in info.sources:
            last[j] = info.index
    return last


def weight_terms(node, out_shape):
    """Terms of one image of a weight node: output elements x ``K`` (the terms of one output:
    ``K`` of a linear node, ``C / groups x kh x kw`` of a convolution); 0 for other kinds."""
    if node is None or node.kind not in WEIGHT_KINDS:
        return 0
    codes = np.shape(node.codes)
    k = codes[0] if node.kind == "linear" else int(np.prod(codes[1:]))
    return int(np.prod(out_shape)) * int(k)


def _run_estimate(cfg, step, images, reuse):
    layer = step_layer(step, np.zeros(run_x_shape(step, images), dtype=np.int64), reuse=reuse)
    g = layer_geometry(cfg, layer)
    return run_cycles(cfg, g, reuse=layer.reuse_weights, shift=step.shifts is not None,
                      first_acts=first_block_acts(layer, g))


def core_step_cycles(cfg, step: CoreStep, images, *, loaded=False):
    """``(runs, estimated busy cycles)`` of ``step`` over a batch of ``images`` images.

    The first run sends the weights, the others reuse them (as the runtime runs a batch);
    ``loaded``: the core holds the step's weights already (the previous run was this step's),
    so the first run reuses them too. A linear node runs on chunks of ``images_per_run``
    images, the last one shorter. A step of a chained segment (``per_image``) runs once per
    ``chain_images`` images between the segment's other steps: every run sends its weights.
    """
    if images < 1:
        return 0, 0
    chunks = _chunks(step, images)
    cache = {}

    def est(n, reuse):
        if (n, reuse) not in cache:
            cache[n, reuse] = _run_estimate(cfg, step, n, reuse)
        return cache[n, reuse]
    if step.per_image:
        return len(chunks), int(sum(est(n, False) for n in chunks))
    cycles = est(chunks[0], bool(loaded)) + sum(est(n, True) for n in chunks[1:])
    return len(chunks), int(cycles)


def _chunks(step, images):
    return run_chunks(step, images)


def run_traffic(cfg, step: CoreStep, max_packet_bytes, *, reuse, images=1):
    """``(bytes in, bytes out)`` of one run of ``step`` on ``images`` images: the packets sent
    (with the weights unless ``reuse``; no ACTS or SHORTCUT a chained run finds in a bank) and
    the result bytes received (none for a ``quiet`` run)."""
    layer = step_layer(step, np.zeros(run_x_shape(step, images), dtype=np.int64), reuse=reuse)
    g = layer_geometry(cfg, layer)
    sent = sum(p.nbytes for p in layer_packets(cfg, layer, max_packet_bytes,
                                               weights=step.weight_packets, check=False))
    if step.quiet:
        return int(sent), 0
    vectors = g["NT"] if step.pool is not None else g["M"] * g["NT"]
    return int(sent), vectors * cfg.beats(cfg.vector_bits["OUT"]) * cfg.stream_width // 8


def core_step_traffic(program, step: CoreStep, images):
    """``(bytes in, bytes out)`` of ``step``'s runs over a batch of ``images`` images: the
    packets a device sends (the first run with the weights, the others reusing them, except
    in a chained segment) and the result bytes it receives."""
    sizes = {}

    def size(n, reuse):
        if (n, reuse) not in sizes:
            sizes[n, reuse] = run_traffic(program.core, step, program.max_packet_bytes,
                                          reuse=reuse, images=n)
        return sizes[n, reuse]
    runs = [size(n, i > 0 and not step.per_image) for i, n in enumerate(_chunks(step, images))]
    return sum(r[0] for r in runs), sum(r[1] for r in runs)


def node_costs(program, images=1):
    """One :class:`NodeCost` per node of ``program`` for a batch of
    ``images`` images (module docstring)."""
    out = []
    cfg = program.core
    for step in program.steps:
        elements = images * int(np.prod(step.out_shape))
        if isinstance(step, CoreStep):
            runs, cycles = core_step_cycles(cfg, step, images)
            sent, got = core_step_traffic(program, step, images)
            # A pooling run on the lane unit computes no PE terms (comparisons, additions):
            # none of its work counts as useful PE work; a depthwise run's terms do.
            useful = 0 if step.window in ("max", "sum") else \
                images * step.k * int(np.prod(step.out_shape))
            out.append(NodeCost(step.index, step.name, step.kind, "core", runs, cycles,
                                useful_terms=useful, bytes_in=sent, bytes_out=got))
        elif isinstance(step, FusedStep):
            out.append(NodeCost(step.index, step.name, step.kind, "core"))
        else:
            terms = images * weight_terms(step.node, step.out_shape)
            out.append(NodeCost(step.index, step.name, step.kind, "host",
                                useful_terms=terms, host_elements=elements, host_terms=terms))
    return out


def _num(value):
    return f"{value:,}" if value else "-"


def _shapes(step):
    ins = " + ".join(str(tuple(s)) for s in step.in_shapes)
    out = step.result_shape if isinstance(step, CoreStep) else step.out_shape
    return f"{ins} -> {tuple(out)}"


def _core_note(program, step):
    g = step_geometry(program.core, step)
    n = step.chain_images if step.per_image else step.images_per_run
    per = ("one run per image" if n == 1
           else f"one run per {n} images (M = images)"
           if step.kind == "linear" else
           f"one run per {n} images (stacked, {stack_gap(step)} zero rows "
           f"between)")
    tail = ""
    names = {"add": None, "clamp": "clamp", "global_avgpool": "global average pool",
             "flatten": None}
    what = []
    for i in step.fused:
        kind = program.model.layers[i].kind
        if kind == "add":
            r = step.residual
            how = (f" (every {r.stride}th pixel" if r.stride > 1 else " (") + \
                  (f", {r.offset} zero channels in front)" if r.offset else ")")
            what.append(f"residual add of layers.{step.sources[1]}"
                        f"{how if how != ' ()' else ''}")
        elif names.get(kind):
            what.append(names[kind])
    if what:
        tail = f"; {' and '.join(what)} in its post-processing"
    if step.patches is not None:
        (kh, kw), (sy, sx), (py, px) = step.patches.kernel, step.patches.stride, \
            step.patches.padding
        tail += (f"; kernel taps on the rows: {kh}x{kw} patches (stride {sy}x{sx}, padding "
                 f"{py}x{px}) expanded by the host, run as a 1x1 convolution")
    sent = ("once per batch" if not step.per_image else "with every image"
            if step.chain_images == 1 else "with every run")
    return (f"K {step.k}, {g['CT']}x{g['NT']} tiles (in x out), weights {step.weight_bytes} B "
            f"sent {sent}; {per}{tail}{_chain_note(step)}")


def _chain_note(step):
    """How a chained step's tensors stay on-chip (:mod:`mulfree.host.chaining`)."""
    if not step.per_image:
        return ""
    b = step.in_bank
    what = [f"input {'in' if step.acts_resident else 'sent to'} bank {b}"]
    if step.short_resident:
        what.append(f"shortcut in bank {1 - b}")
    if step.keep:
        what.append(f"output kept in bank {1 - b}" + (", not sent" if step.quiet else ""))
    return "; chained: " + ", ".join(what)


def _engines_text(cfg):
    """``"shift engine"``, or ``"shift + mult (4 columns, 4 passes) engines"``."""
    parts = []
    for k, e in enumerate(cfg.engines):
        fold = cfg.folds(k)
        parts.append(e.pe + (f" ({cfg.physical_cols(k)} columns, {fold} passes)"
                             if fold > 1 else ""))
    return " + ".join(parts) + (" engines" if len(parts) > 1 else " engine")


def describe_program(program, images=1):
    """The lines :meth:`~mulfree.host.program.Program.describe` returns: the core, then one
    line per node (index, name, kind, placement, shapes, estimated core cycles, useful terms,
    host elements, how it runs), then the totals."""
    cfg = program.core
    e = cfg.engine
    model = program.model
    costs = node_costs(program, images)
    lines = [f"program for {cfg.top_name}: {e.rows}x{e.cols} {_engines_text(cfg)}, "
             f"act {e.act_bits} b, weight code {cfg.code_width} b, max_k {e.max_k}, "
             f"stream {cfg.stream_width} b",
             f"  input {program.input_shape}: quantized on the host "
             f"(x * 2^{-model.input.scale_exp}, round half up, {model.input.act_bits} b)",
             f"  costs for a batch of {images} image{'s' if images != 1 else ''}; core cycles "
             f"are the cycle model's estimate (mulfree.host.cycle_model)"]
    name_w = max([4] + [len(s.name) for s in program.steps])
    kind_w = max(len(s.kind) for s in program.steps)
    shape_w = max(len(_shapes(s)) for s in program.steps)
    head = (f"  {'#':>3}  {'name':<{name_w}}  {'kind':<{kind_w}}  where  "
            f"{'in -> out':<{shape_w}}  {'core cycles':>11}  {'useful terms':>13}  "
            f"{'host elements':>13}  notes")
    lines.append(head)
    for step, cost in zip(program.steps, costs):
        if isinstance(step, CoreStep):
            note = _core_note(program, step)
        elif isinstance(step, FusedStep):
            note = f"core: {step.reason}"
        else:
            note = f"host: {step.reason}"
        lines.append(f"  {step.index:>3}  {step.name:<{name_w}}  {step.kind:<{kind_w}}  "
                     f"{step.placement:<5}  {_shapes(step):<{shape_w}}  "
                     f"{_num(cost.cycles):>11}  {_num(cost.useful_terms):>13}  "
                     f"{_num(cost.host_elements):>13}  {note}")
    core = [c for c in costs if c.placement == "core"]
    fused = sum(isinstance(s, FusedStep) for s in program.steps)
    host = [c for c in costs if c.placement == "host"]
    cycles = sum(c.cycles for c in core)
    useful = sum(c.useful_terms for c in core)
    share = useful / (cycles * e.rows * e.cols) if cycles else 0.0
    lines.append(f"  total: {len(core)} node{'s' if len(core) != 1 else ''} on the core"
                 f"{f' ({fused} fused into a run)' if fused else ''}, "
                 f"{cycles:,} cycles, {useful:,} useful terms ({100 * share:.1f} % of the "
                 f"{e.rows * e.cols} PEs' cycles); {len(host)} node"
                 f"{'s' if len(host) != 1 else ''} on the host, "
                 f"{sum(c.host_elements for c in host):,} elements, "
                 f"{sum(c.host_terms for c in host):,} terms")
    lines.append(f"  host<->core traffic: {sum(c.bytes_in for c in core):,} B to the core, "
                 f"{sum(c.bytes_out for c in core):,} B back")
    if program.output == "argmax":
        lines.append("  output: argmax on the host")
    return "\n".join(lines)
