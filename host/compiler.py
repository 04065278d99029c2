"""The compiler: an exported integer model (a graph) and a core's manifest become a program.

A :class:`~mulfree.host.program.Program` is what the runtime (:mod:`mulfree.host.runtime`)
executes, one step per node of the model's graph, in its order:

* the core's part: one :class:`~mulfree.host.steps.CoreStep` per ``linear`` node and per
  ``conv2d`` with ``groups == 1`` whose PE kind is the core's. A convolution runs once per
  image; a linear node runs once per chunk of up to ``images_per_run`` images as the matrix
  product ``[B, K] . [K, N]`` (the images are the product's ``M`` pixels), so a batch pays for
  the weights once. Within a step the first run sends the post-processing parameters, the
  shift table and the weights, packed here once; the following runs set ``reuse_weights``
  and send only the descriptor and the activations;
* the host's part: input quantization (``q = clamp(floor(x * 2^-scale_exp + 1/2))``), one
  :class:`~mulfree.host.steps.HostStep` per other node, computed exactly in NumPy integers by
  the node's golden function (:func:`mulfree.params.graph_golden.node_forward`): pooling,
  flattening, residual adds, concatenation, clamps, padding, the shift kinds, depthwise
  convolutions and, with ``host_fallback``, weight nodes of another PE kind; and the final
  ``argmax``.

A convolution's residual ``add`` and ``clamp`` (ReLU6) run inside its core run when the core's
post-processing tail can compute them (:func:`mulfree.host.fusion.plan_fusion`): they become
:class:`~mulfree.host.steps.FusedStep`, and the run streams the shortcut with the layer.

A tensor lives until its last reader has run (``Program.last_use``).
:func:`compile_model` checks that every core node fits the core before anything is sent, and
says precisely what does not (the node, the parameter, the value and the core's limit).
Placement and costs are :mod:`mulfree.host.schedule`'s, the cycle model
:mod:`mulfree.host.cycle_model`'s, the packets :mod:`mulfree.host.step_packets`'s
(:func:`encode_run`, :func:`decode_run`).

NumPy only: a board needs nothing else to run a program.
"""

import dataclasses

import numpy as np

from ..params.config import ArrayConfig, ConfigError
from ..params.core_config import CORE_LIMITS, CoreConfig
from ..params.int_layers import WEIGHT_KINDS
from ..params.layer_golden import PostParams
from .chaining import (CHAIN_MODES, plan_chains, segment_bytes, without_patches_inside,
                       segments as chain_segments)
from .core_layer import LayerError, check_layer
from .export_format import ExportError, IntModel
from .fusion import (Fusion, execution_order, plan_fusion, pool_pixels_needed,
                     shortcut_vectors_needed)
from .program import Program, run_steps
from .schedule import (core_step_cycles, last_uses, node_label, place_nodes, shift_reach_needed,
                       weight_terms)
from .step_packets import decode_run, encode_run, weight_packets
from .patches import PATCH_MODES, Patches, patch_shape, patch_weights
from .stacking import MAX_STACK, stack_gap
from .steps import (CompileError, CoreStep, FusedStep, HostStep, chained_input, run_chunks,
                    run_images, run_part, run_x_shape, step_layer)
from .window_steps import tap_line_needed, taps_fit, window_op, window_parts


__all__ = ["CompileError", "CoreStep", "HostStep", "Program", "compile_model",
           "core_for_model", "core_from_manifest", "encode_run", "decode_run", "step_layer",
           "emulate_program"]


# Cores ----------------------------------------------------------------------------------------

def core_from_manifest(manifest):
    """The :class:`CoreConfig` of a core's manifest (a dict as ``mulfree gen --core`` writes).

    The manifest is checked first (:func:`mulfree.host.manifest_check.check_manifest`): every
    section must be what its ``parameters`` give, so the program is packed for the core the
    device's identity registers describe.

    Raises
    ------
    CompileError
        If the manifest is not a core's, or it disagrees with itself (``param`` ``"config"``).
    """
    from .manifest_check import ManifestError, check_manifest
    try:
        return check_manifest(manifest)[1]
    except ManifestError as exc:
        raise CompileError("config", str(exc)) from None


#: :func:`core_for_model` folds an extra engine whose kind has under ``FOLD_SHARE`` of the
#: model's weight terms to ``cols / FOLD`` physical columns.
FOLD_SHARE = 0.1
FOLD = 4


def _pow2_at_least(n):
    return 1 << max(0, int(n) - 1).bit_length()


def _core_capable(info, layer):
    return info.kind == "linear" or (info.kind == "conv2d" and layer.groups == 1)


def core_for_model(model: IntModel, *, rows=16, cols=16, stream_width=64, engines="all",
                   **core_options):
    """The core :func:`mulfree run <compile_model>` generates when none is given.

    Engine 0's PE kind is the kind with the most weight terms per image (``output elements x
    K``, the useful multiply-accumulates) over the nodes a core can run (``linear``, and
    ``conv2d`` with ``groups == 1``). With ``engines="all"`` every other kind of those nodes
    gets an engine of its own (a multi-engine core: AdderNet's mult first and last layers run
    on the core) if its nodes' activations are as wide as engine 0's (the engines share
    them); a kind with under :data:`FOLD_SHARE` of the terms gets a folded engine of
    ``cols / FOLD`` columns (it is idle most of the time, so it is made small). With
    ``engines="one"``, or for a kind left out, the nodes of the other kinds need
    ``host_fallback``. ``rows x cols``
    engines at the widest activations and weight codes of their nodes, with ``max_k`` the
    smallest power of two covering the longest reduction, and buffers (feature map, weights,
    channels, the shortcuts of the residual adds it can fuse) the smallest powers of two they
    need, at least the defaults of :class:`CoreConfig`; ``shift_reach`` the largest offset of
    their convolutions' shift tables (a folded Shift2d of kernel ``2*reach + 1``).
    ``core_options`` override any :class:`CoreConfig` field.

    Raises
    ------
    CompileError
        If the model is invalid or has no node a core can run.
    """
    infos = _graph(model)
    capable = [(info, model.layers[info.index]) for info in infos
               if info.kind in WEIGHT_KINDS and _core_capable(info, model.layers[info.index])]
    if not capable:
        raise CompileError("layers", "the model has no linear or conv2d (groups 1) node: "
                                     "nothing runs on the core")
    if engines not in ("all", "one"):
        raise CompileError("engines", f"engines must be 'all' or 'one', not {engines!r}")
    terms = {}
    for info, layer in capable:
        terms[layer.pe] = terms.get(layer.pe, 0) + weight_terms(layer, info.out_shape)
    # The most terms first; a tie goes to the kind met first.
    order = list(dict.fromkeys(layer.pe for _, layer in capable))
    kinds = sorted(order, key=lambda kind: (-terms[kind], order.index(kind)))
    act_bits = max(layer.act_bits for _, layer in capable if layer.pe == kinds[0])
    # The engines share the activations: another kind joins only at engine 0's width.
    kinds = kinds[:1] + [kind for kind in kinds[1:] if engines == "all" and all(
        layer.act_bits == act_bits for _, layer in capable if layer.pe == kind)]
    layers = [(info, layer) for info, layer in capable if layer.pe in kinds]
    ks = [int(np.prod(np.shape(layer.codes)[1:])) if info.kind == "conv2d"
          else int(np.shape(layer.codes)[0]) for info, layer in layers]
    max_k = max(_pow2_at_least(max(ks)), _pow2_at_least(rows))
    built = []
    for kind in kinds:
        bits = None if kind == "adder" else max(layer.weight_bits for _, layer in layers
                                                if layer.pe == kind)
        built.append(ArrayConfig(pe=kind, rows=rows, cols=cols, act_bits=act_bits,
                                 weight_bits=bits, max_k=max_k))
    engine, extra = built[0], tuple(built[1:])
    total = sum(terms.values())
    engine_cols = (cols,) + tuple(
        max(1, cols // FOLD) if terms[e.pe] < FOLD_SHARE * total else cols for e in extra)
    if all(c == cols for c in engine_cols):
        engine_cols = ()
    pes = tuple(kinds)
    base = CoreConfig(engine=engine, extra_engines=extra, engine_cols=engine_cols,
                      stream_width=stream_width)
    need = {"fmap_vectors": base.fmap_vectors, "weight_rows": base.weight_rows,
            "max_channels": base.max_channels}
    window_k = 0
    for (info, layer), k in zip(layers, ks):
        in_shape = info.in_shapes[0]
        ct = -(-(in_shape[0]) // rows)
        pixels = in_shape[1] * in_shape[2] if info.kind == "conv2d" else 1
        out_c = np.shape(layer.codes)[0 if info.kind == "conv2d" else 1]
        need["fmap_vectors"] = max(need["fmap_vectors"], _pow2_at_least(pixels * ct))
        kt = (k // in_shape[0]) * ct                     # kernel positions x channel tiles
        need["weight_rows"] = max(need["weight_rows"],
                                  _pow2_at_least(-(-out_c // cols) * kt * rows))
        need["max_channels"] = max(need["max_channels"], _pow2_at_least(max(out_c,
                                                                             in_shape[0])))
    # The shift table reaches as far as the farthest shift of a convolution the core runs.
    need["shift_reach"] = max([1] + [shift_reach_needed(layer) for _, layer in layers])
    window_ops = core_options.get("window_ops")
    window_ops = rows == cols if window_ops is None else bool(window_ops)
    places = place_nodes(model, infos, pes, host_fallback=True, window_ops=window_ops,
                         shift_reach=core_options.get("shift_reach", need["shift_reach"]))
    for info in infos:
        layer = model.layers[info.index]
        if places[info.index][0] != "core" or window_op(info, layer) is None:
            continue
        c, h, w = info.in_shapes[0]
        kh, kw = np.shape(layer.codes)[2:] if info.kind == "conv2d" else layer.kernel
        need["fmap_vectors"] = max(need["fmap_vectors"], _pow2_at_least(h * w * -(-c // rows)))
        need["max_channels"] = max(need["max_channels"], _pow2_at_least(c))
        need["weight_rows"] = max(need["weight_rows"], _pow2_at_least(-(-c // cols) * kh * kw))
        window_k = max(window_k, kh * kw)
        if window_op(info, layer) == "depthwise":
            # A taps run's weights are one tile of rows rows per output tile, and its padded
            # line must fit the tap window's line buffers.
            need["weight_rows"] = max(need["weight_rows"], _pow2_at_least(-(-c // cols) * rows))
            line = tap_line_needed((kh, kw), layer.stride, info.out_shape[1:])
            line = max(need.get("tap_line", base.tap_line), _pow2_at_least(line))
            need["tap_line"] = min(CORE_LIMITS["tap_line"][1], line)
    plans = plan_fusion(base, model, infos, places, room=False)     # reads the engine only
    shortcuts = [shortcut_vectors_needed(infos[i], cols) for i, f in plans.items()
                 if f.residual is not None]
    need["shortcut_vectors"] = max([base.shortcut_vectors]
                                   + [_pow2_at_least(n) for n in shortcuts])
    need["pool_pixels"] = max([base.pool_pixels] + [pool_pixels_needed(infos[i])
                                                    for i, f in plans.items() if f.pool is not None])
    need.update(core_options)
    if window_k > engine.max_k:
        # The lane unit's reduction (kh*kw) needs max_k too: every engine shares it.
        engine = dataclasses.replace(engine, max_k=_pow2_at_least(window_k))
        extra = tuple(dataclasses.replace(x, max_k=engine.max_k) for x in extra)
    try:
        return CoreConfig(engine=engine, extra_engines=extra, engine_cols=engine_cols,
                          stream_width=stream_width, **need)
    except ConfigError as exc:
        raise CompileError(f"core.{exc.param}", str(exc)) from None


# Compiling ------------------------------------------------------------------------------------

def _graph(model):
    if not isinstance(model, IntModel):
        raise CompileError("model", f"model must be an IntModel (load_export), "
                                    f"not {type(model).__name__}")
    try:
        return model.graph()
    except ExportError as exc:
        raise CompileError(exc.param, f"the model is invalid: {exc}") from None


def _describe(info, layer):
    label = node_label(info, layer)
    return f"{label[:-1]} {tuple(info.in_shapes[0])} -> {tuple(info.out_shape)})"


def _engine_codes(layer, engine: ArrayConfig, where):
    """The node's codes in the engine's encoding, or a CompileError saying why they don't fit."""
    codes = np.asarray(layer.codes, dtype=np.int64)
    if layer.pe == "adder":
        return codes
    if layer.weight_bits > engine.weight_bits:
        raise CompileError(f"{where}.weight_bits",
                           f"{where} has {layer.weight_bits}-bit weight codes; this core "
                           f"takes at most {engine.weight_bits} (weight_bits)")
    if layer.pe == "mult":
        return codes                     # signed weights: the same integers, sign-extended
    b = layer.weight_bits                # shift: {s, e} -> the sign moves to the new top bit
    sign, e = codes >> (b - 1), codes & ((1 << (b - 1)) - 1)
    return (sign << (engine.weight_bits - 1)) | e


def _check_step(cfg, step, where, describe):
    """Check a step's first run (one image, and a full linear batch) with the stream checks."""
    for images in sorted({1, step.images_per_run}):
        layer = step_layer(step, np.zeros(run_x_shape(step, images), dtype=np.int64),
                           reuse=False)
        try:
            check_layer(cfg, layer)
        except LayerError as exc:
            param = {"x": "in_shape", "w_codes": "codes", "post.bias": "bias",
                     "post.shift": "shift", "post.relu": "relu"}.get(exc.param, exc.param)
            raise CompileError(f"{where}.{param}", f"{describe} does not fit the core: "
                                                   f"{exc}") from None


def _linear_images(cfg, k):
    """Images one run of a linear node with ``k`` inputs can take."""
    ct = -(-k // cfg.engine.rows)
    return max(1, min(cfg.fmap_vectors // ct, (1 << 16) - 1))


def _fits(cfg, step, images):
    layer = step_layer(step, np.zeros(run_x_shape(step, images), dtype=np.int64), reuse=False)
    try:
        check_layer(cfg, layer)
    except LayerError:
        return False
    return True


def _stacked_images(cfg, step):
    """Images one run of a convolution or window ``step`` takes: the most, up to
    :data:`~mulfree.host.stacking.MAX_STACK`, whose stacked map the core accepts; 1 for a step
    that cannot be stacked (:func:`~mulfree.host.stacking.stack_gap`)."""
    if stack_gap(step) is None:
        return 1
    lo, hi = 1, MAX_STACK                       # lo fits (checked by _check_step)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        object.__setattr__(step, "images_per_run", mid)
        if _fits(cfg, step, mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


#: Images a batch is assumed to hold when the compiler weighs patches against the map.
PATCH_BATCH = MAX_STACK


def _patch_step(cfg, step, *, forced):
    """``step`` as a 1x1 convolution of its patches (:mod:`mulfree.host.patches`) if the core
    takes it and (unless ``forced``) its estimated cycles over a batch of
    :data:`PATCH_BATCH` images are fewer; else ``step``."""
    p = Patches(*step.w_codes.shape[2:], step.stride, step.padding)
    trial = dataclasses.replace(step, w_codes=patch_weights(step.w_codes), stride=(1, 1),
                                padding=(0, 0), in_shape=patch_shape(step.in_shape, p),
                                patches=p, images_per_run=1)
    if trial.in_shape[1:] != tuple(step.out_shape[1:]) or not _fits(cfg, trial, 1):
        return step
    object.__setattr__(trial, "images_per_run", _stacked_images(cfg, trial))
    if forced:
        return trial
    before = core_step_cycles(cfg, step, PATCH_BATCH)[1]
    return trial if core_step_cycles(cfg, trial, PATCH_BATCH)[1] < before else step


def _core_step(cfg, info, layer, max_packet_bytes, fusion=None, patches="auto"):
    """The checked :class:`CoreStep` of a core node, its weights packed, with the tail
    ``fusion`` (:class:`~mulfree.host.fusion.Fusion`) fused into its runs; a convolution's
    kernel taps on the array's rows when that is faster (``patches``: ``"auto"``, ``"on"``
    where the core takes it, ``"off"``)."""
    fusion = fusion or Fusion()
    op = window_op(info, layer)
    engine = cfg.engine_index(layer.pe) if op in (None, "depthwise") else 0
    e = cfg.engines[engine]
    where, describe = f"layers.{info.index}", _describe(info, layer)
    bits = getattr(layer, "act_bits", e.act_bits)
    if bits != e.act_bits:
        raise CompileError(f"{where}.act_bits",
                           f"{describe} has {bits}-bit activations; this core's "
                           f"are {e.act_bits} bits (its outputs saturate there)")
    codes = _engine_codes(layer, e, where) if op in (None, "depthwise") else None
    window = None
    if op is not None:
        try:
            window, w, post, stride, padding = window_parts(cfg, info, layer, engine, codes)
        except ValueError as exc:
            raise CompileError(f"{where}.shift", f"{describe}: {exc}") from None
        shifts, images = None, 1
    elif info.kind == "linear":
        w = np.ascontiguousarray(codes.T[:, :, None, None])
        stride, padding, shifts = (1, 1), (0, 0), None
        images = _linear_images(cfg, codes.shape[0])
    else:
        w = codes
        stride, padding = tuple(layer.stride), tuple(layer.padding)
        shifts = None if layer.shifts is None else np.asarray(layer.shifts, dtype=np.int64)
        images = 1
    if op is None:
        post = PostParams(np.asarray(layer.bias, dtype=np.int64),
                          np.asarray(layer.shift, dtype=np.int64),
                          np.asarray(layer.relu, dtype=bool))
    sources = tuple(info.sources) + ((fusion.shortcut,) if fusion.residual else ())
    step = CoreStep(info.index, info.kind, w, post, stride, padding, shifts,
                    tuple(info.in_shapes[0]), tuple(info.out_shape), images, name=info.name,
                    sources=sources, residual=fusion.residual, clamp=fusion.clamp,
                    fused=fusion.nodes + fusion.short_nodes, pool=fusion.pool,
                    short_shape=fusion.short_shape, engine=engine, window=window,
                    taps=window == "depthwise" and taps_fit(
                        cfg, engine, tuple(w.shape[2:]), stride, info.out_shape[1:],
                        fusion.residual is not None, fusion.pool is not None))
    _check_step(cfg, step, where, describe)
    if info.kind != "linear":
        object.__setattr__(step, "images_per_run", _stacked_images(cfg, step))
    if op is None and info.kind == "conv2d" and shifts is None and patches != "off":
        step = _patch_step(cfg, step, forced=patches == "on")
    try:
        packets = weight_packets(cfg, step, max_packet_bytes)
    except ValueError as exc:
        raise CompileError("max_packet_bytes", str(exc)) from None
    object.__setattr__(step, "weight_packets", packets)
    object.__setattr__(step, "weight_bytes", sum(p.nbytes for p in packets))
    return step


def compile_model(model: IntModel, core, *, max_packet_bytes=None, host_fallback=False,
                  chain="auto", batch=1, patches="auto"):
    """Compile ``model`` (a graph) for ``core``.

    Parameters
    ----------
    model : IntModel
        An exported integer model (:func:`mulfree.host.export_format.load_export`).
    core : CoreConfig or dict
        The core, or its manifest.
    max_packet_bytes : int or None
        Largest packet (header included) a transfer may carry: the runtime's backend says
        (a DMA's length register). ``None``: only the header's 24-bit count limits.
    host_fallback : bool
        Run the weight nodes whose PE kind is not the core's on the host (exactly, in NumPy
        integers). Without it such a model is refused.
    chain : str
        Layer chaining on a core with two feature-map banks (:mod:`mulfree.host.chaining`):
        ``"auto"`` (default) chains a segment of core steps when that moves fewer bytes for
        a batch of ``batch`` images, ``"on"`` whenever the core can, ``"off"`` never.
    batch : int
        The batch size ``"auto"`` weighs for (a chained segment sends its weights with every
        image).
    patches : str
        Kernel taps on the array's rows (:mod:`mulfree.host.patches`): ``"auto"`` (default)
        runs a convolution (no shift table, not a window run) as a 1x1 convolution of its
        patches, expanded by the host, when its estimated cycles are fewer; ``"on"`` whenever
        the core takes it; ``"off"`` never.

    Returns
    -------
    Program
        One step per node; ``Program.describe()`` lists where each runs and what it costs.

    Raises
    ------
    CompileError
        Naming every weight node of another PE kind (without ``host_fallback``), or the first
        core node and parameter that does not fit: activations of another width, wider weight
        codes, a reduction longer than ``max_k``, more channels than ``max_channels``, a map
        larger than the feature-map buffer, weights larger than the weight buffer,
        post-processing values outside the core's ranges; an input wider than the core's
        activations; a model with no node for the core.
    """
    if chain not in CHAIN_MODES:
        raise CompileError("chain", f"chain must be one of {', '.join(CHAIN_MODES)}, "
                                    f"not {chain!r}")
    if patches not in PATCH_MODES:
        raise CompileError("patches", f"patches must be one of {', '.join(PATCH_MODES)}, "
                                      f"not {patches!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise CompileError("batch", f"batch must be an integer >= 1, not {batch!r}")
    cfg = core if isinstance(core, CoreConfig) else core_from_manifest(core)
    infos = _graph(model)
    e = cfg.engine
    if model.input.act_bits > e.act_bits:
        raise CompileError("input.act_bits", f"the model's input has {model.input.act_bits}-bit "
                                             f"activations; this core's are {e.act_bits} bits")
    pes = tuple(x.pe for x in cfg.engines)
    places = place_nodes(model, infos, pes, host_fallback=host_fallback,
                         window_ops=cfg.window_ops, shift_reach=cfg.shift_reach)
    plans = plan_fusion(cfg, model, infos, places)
    fused = {n: (i, prev) for i, f in plans.items()
             for prev, n in zip((i,) + f.nodes, f.nodes)}
    fused.update({n: (i, None) for i, f in plans.items() for n in f.short_nodes})
    steps, unpatched = [], {}
    for index in execution_order(infos, plans):
        info = infos[index]
        layer = model.layers[info.index]
        where, reason = places[info.index]
        if info.index in fused:
            into, prev = fused[info.index]
            steps.append(FusedStep(info.index, info.kind, tuple(info.out_shape), layer,
                                   info.name, () if prev is None else (prev,), into))
        elif where == "core" and window_op(info, layer) is not None:
            # A pooling or depthwise node runs on the lane unit when its run fits the core;
            # otherwise on the host, as it did before the lane unit (saying why).
            try:
                steps.append(_core_step(cfg, info, layer, max_packet_bytes,
                                        plans.get(info.index)))
            except CompileError as exc:
                if info.index in plans:
                    raise
                steps.append(HostStep(info.index, info.kind, tuple(info.in_shapes[0]),
                                      tuple(info.out_shape), layer, info.name,
                                      tuple(info.sources), tuple(map(tuple, info.in_shapes)),
                                      f"the lane unit cannot run it: {exc}"))
        elif where == "core":
            step = _core_step(cfg, info, layer, max_packet_bytes, plans.get(info.index),
                              patches)
            if step.patches is not None and chain != "off":
                # A chained run reads its input from a bank, where the patches are not:
                # chaining weighs the node's own convolution.
                unpatched[len(steps)] = _core_step(cfg, info, layer, max_packet_bytes,
                                                   plans.get(info.index), "off")
            steps.append(step)
        else:
            steps.append(HostStep(info.index, info.kind, tuple(info.in_shapes[0]),
                                  tuple(info.out_shape), layer, info.name,
                                  tuple(info.sources), tuple(map(tuple, info.in_shapes)),
                                  reason))
    if not any(isinstance(s, CoreStep) for s in steps):
        raise CompileError("layers", f"no node of the model runs on this core: it needs a "
                                     f"linear or conv2d (groups 1) node of "
                                     f"{'/'.join(pes)} PEs")
    segments = []
    if chain != "off":
        # Two plans per segment: image by image (a step reading a bank runs its own
        # convolution), or stacked (chain_images at a time, the steps as compiled); the one
        # moving fewer bytes over the batch, and with "auto" only if fewer than unchained.
        last = len(model.layers) - 1
        options = [plan_chains(cfg, without_patches_inside(steps, unpatched), last),
                   plan_chains(cfg, steps, last, stacked=True)]
        for seg in chain_segments(steps):
            # A plan's chained parts of this segment (the stacked plan may cut it in parts).
            parts = [[f for f in found if set(f) <= set(seg)] for _, found in options]
            moved = [(segment_bytes(cfg, chained, seg, batch, max_packet_bytes), i)
                     for i, (chained, _) in enumerate(options) if parts[i]]
            if not moved:
                continue
            best, i = min(moved)
            if chain == "on" or best < segment_bytes(cfg, steps, seg, batch, max_packet_bytes):
                for p in seg:
                    steps[p] = options[i][0][p]
                segments.extend(parts[i])
    return Program(cfg, model, steps, max_packet_bytes, last_uses(steps), bool(host_fallback),
                   tuple(segments))


# The program on the NumPy core model ----------------------------------------------------------

def emulate_program(program: Program, x, *, records=False):
    """Run ``program`` on quantized inputs ``x`` ``[B, *input_shape]`` with the NumPy model of
    the core (:func:`mulfree.host.core_emulator.emulate_core`), exactly as a device would: the
    same runs, the same packets (weights sent by a step's first run, then reused), the same
    result bytes, the same host steps. The core's part shares no code with the golden model
    of the whole network (:func:`mulfree.params.model_golden.run_int_model`), so comparing
    the two checks the compiler without a simulator.

    Returns
    -------
    int64 array ``[B, ...]``, or ``(outputs, list of NodeStats)`` with ``records``
        The final activations (and, with ``records``, one record per node: runs, useful
        terms, host elements, estimated cycles; no counters: the model keeps none).
    """
    from .core_emulator import CoreState, emulate_core
    cfg, state = program.core, CoreState()
    bb = cfg.stream_width // 8
    loaded = [None]

    def run_core(step, x, stats, shortcut=None):
        x = chained_input(step, x)
        if loaded[0] is step:                   # the core holds this step's weights already
            stats.estimated_cycles = core_step_cycles(cfg, step, len(x), loaded=True)[1]
        outs, start = [], 0
        for n in run_chunks(step, len(x)):
            part = run_part(step, x, start, n)
            sc = None if shortcut is None else shortcut[start]
            start += n
            packets, nbytes, layer = encode_run(program, step, part, reuse=loaded[0] is step,
                                                shortcut=sc)
            pairs = [(int.from_bytes(beat.tobytes(), "little"), i == len(p) - 1)
                     for p in packets for i, beat in enumerate(p)]
            beats = emulate_core(cfg, pairs, state=state)
            stats.bytes_in += sum(int(p.nbytes) for p in packets)
            stats.bytes_out += nbytes
            data = np.frombuffer(b"".join(b.to_bytes(bb, "little") for b in beats), np.uint8)
            if data.size != nbytes:
                raise ValueError(f"the emulated core sent {data.size} bytes, not {nbytes}")
            loaded[0] = step
            stats.runs += 1
            if step.quiet:
                continue                        # kept on-chip, not sent
            out = decode_run(program, layer, data)
            outs.append(run_images(step, out, n))
        return None if step.quiet else np.concatenate(outs)

    y, nodes = run_steps(program, np.asarray(x, dtype=np.int64), run_core)
    return (y, nodes) if records else y
