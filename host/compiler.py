"""The compiler: an exported integer model and a core's manifest become a program.

A :class:`Program` is what the runtime (:mod:`mulfree.host.runtime`) executes:

* the host's part: input quantization (``q = clamp(floor(x * 2^-scale_exp + 1/2))``), max
  pooling and flattening between core layers (they only select and move integers), and the
  final ``argmax``;
* the core's part: one :class:`CoreStep` per layer with weights. A convolution runs once per
  image; a linear layer runs once per chunk of up to ``images_per_run`` images as the matrix
  product ``[B, K] . [K, N]`` (the images are the product's ``M`` pixels), so a batch pays
  for the weights once. Within a step the first run sends the post-processing parameters, the
  shift table and the weights, packed here once; the following runs set ``reuse_weights`` and
  send only the descriptor and the activations.

:func:`compile_model` checks that every layer fits the core before anything is sent, and says
precisely what does not (the layer, the parameter, the value and the core's limit).
:func:`encode_run` and :func:`decode_run` turn one run into the packets ``s_axis`` takes and
the result bytes ``m_axis`` gives back (``docs/interface.md``, "Stream formats"), with the
fast byte packing of :mod:`mulfree.host.stream_pack`.

NumPy only: a board needs nothing else to run a program.
"""

from dataclasses import dataclass, field

import numpy as np

from ..params.config import ArrayConfig, ConfigError
from ..params.core_config import CoreConfig
from ..params.layer_golden import PostParams
from ..params.model_golden import maxpool2x2
from . import stream_pack
from .export_format import ExportError, IntModel
from .core_layer import Layer, LayerError, check_layer, layer_geometry
from .stream_format import (act_rows, descriptor_words_unchecked, first_block_acts,
                            params_vectors, shift_vectors, weight_rows)


__all__ = ["CompileError", "CoreStep", "HostStep", "Program", "compile_model",
           "core_for_model", "core_from_manifest", "encode_run", "decode_run", "step_layer",
           "emulate_program"]


class CompileError(ValueError):
    """A model that the core cannot run, or a model or core that is invalid.

    ``param`` names what is wrong, as a path into the model (``layers.2.out_c``) or the core
    (``core.max_k``); the message gives the value and what the core allows.
    """

    def __init__(self, param, message):
        super().__init__(message)
        self.param = param


@dataclass(frozen=True, eq=False)
class HostStep:
    """A layer the host computes: ``maxpool2d`` (2x2, stride 2) or ``flatten``."""

    index: int
    kind: str
    in_shape: tuple
    out_shape: tuple

    def apply(self, x):
        """The layer on a batch ``[B, *in_shape]`` of integers."""
        if self.kind == "flatten":
            return x.reshape(x.shape[0], -1)
        return maxpool2x2(x)


@dataclass(frozen=True, eq=False)
class CoreStep:
    """A layer the core computes: a convolution, or a linear layer as a matrix product.

    Attributes
    ----------
    index : int
        The layer's position in the model.
    kind : str
        ``"conv2d"`` or ``"linear"``.
    w_codes : int64 array ``[out_c, in_c, kernel_h, kernel_w]``
        Weight codes in the core's encoding (a linear layer's ``[K, N]`` codes as ``N x K``
        1x1 kernels; shift codes re-encoded for a wider ``weight_bits``).
    post : PostParams
    stride, padding : pair of int
    shifts : int64 array ``[in_c, 2]`` or None
    in_shape, out_shape : tuple
        Per image: ``(C, H, W)`` for a convolution, ``(K,)`` and ``(N,)`` for a linear layer.
    images_per_run : int
        Images one run takes: 1 for a convolution; for a linear layer as many as the
        feature-map buffer and the descriptor's 16-bit ``in_w`` allow.
    weight_packets : list of uint8 arrays
        PARAMS, SHIFT and WEIGHTS packets, ``[beats, beat_bytes]`` each: what the first run of
        a batch sends.
    weight_bytes : int
        Their size.
    """

    index: int
    kind: str
    w_codes: np.ndarray
    post: PostParams
    stride: tuple
    padding: tuple
    shifts: np.ndarray | None
    in_shape: tuple
    out_shape: tuple
    images_per_run: int
    weight_packets: list = field(default_factory=list)
    weight_bytes: int = 0

    @property
    def k(self):
        """Terms per sum: ``in_c * kernel_h * kernel_w``."""
        return int(np.prod(self.w_codes.shape[1:]))

    @property
    def out_c(self):
        return int(self.w_codes.shape[0])


@dataclass(frozen=True, eq=False)
class Program:
    """A compiled model: what the runtime sends, computes and returns.

    Attributes
    ----------
    core : CoreConfig
        The core the program was compiled for; a device refuses a program for another core.
    model : IntModel
    steps : list of CoreStep and HostStep, in model order.
    max_packet_bytes : int or None
        The packet size limit the program was packed for (a DMA's transfer limit).
    """

    core: CoreConfig
    model: IntModel
    steps: list
    max_packet_bytes: int | None = None

    @property
    def input_shape(self):
        return tuple(self.model.input.shape)

    @property
    def output(self):
        return self.model.output

    @property
    def core_steps(self):
        return [s for s in self.steps if isinstance(s, CoreStep)]

    def runs_for(self, images):
        """Core runs a batch of ``images`` images takes."""
        return sum(images if s.kind == "conv2d" else -(-images // s.images_per_run)
                   for s in self.core_steps)

    def describe(self):
        """A table of the steps: where each runs, its shapes and what it sends."""
        e = self.core.engine
        lines = [f"program for {self.core.top_name}: {e.rows}x{e.cols} {e.pe} engine, "
                 f"act {e.act_bits} b, weight code {e.code_width} b, max_k {e.max_k}, "
                 f"stream {self.core.stream_width} b",
                 f"  input {self.input_shape}: quantized on the host "
                 f"(x * 2^{-self.model.input.scale_exp}, round half up, {e.act_bits} b)"]
        for s in self.steps:
            if isinstance(s, HostStep):
                lines.append(f"  {s.index:>2}  host  {s.kind:<9} {str(s.in_shape):<14} -> "
                             f"{s.out_shape}")
                continue
            g = self._geometry(s)
            what = (f"K {s.k}, {g['CT']}x{g['NT']} tiles (in x out), weights "
                    f"{s.weight_bytes} B sent once per batch")
            per = ("one run per image" if s.kind == "conv2d"
                   else f"one run per {s.images_per_run} images (M = images)")
            lines.append(f"  {s.index:>2}  core  {s.kind:<9} {str(s.in_shape):<14} -> "
                         f"{str(s.out_shape):<12} {what}; {per}")
        if self.output == "argmax":
            lines.append("  output: argmax on the host")
        return "\n".join(lines)

    def _geometry(self, step):
        x = np.zeros(_run_x_shape(step, 1), dtype=np.int64)
        return layer_geometry(self.core, step_layer(step, x, reuse=False))


def _run_x_shape(step, images):
    if step.kind == "linear":
        return (step.in_shape[0], 1, images)
    return step.in_shape


def step_layer(step: CoreStep, x, *, reuse):
    """The :class:`~mulfree.host.core_layer.Layer` of one run of ``step``.

    ``x`` is one image ``[C, H, W]`` for a convolution, or the run's ``[B, K]`` images for a
    linear layer (or already the ``[K, 1, B]`` map).
    """
    x = np.asarray(x, dtype=np.int64)
    if step.kind == "linear" and x.ndim == 2:
        x = np.ascontiguousarray(x.T[:, None, :])
    return Layer(x, step.w_codes, step.post, stride=step.stride, padding=step.padding,
                 shifts=step.shifts, reuse_weights=reuse)


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


def _pow2_at_least(n):
    return 1 << max(0, int(n) - 1).bit_length()


def core_for_model(model: IntModel, *, rows=16, cols=16, stream_width=64, **core_options):
    """The core :func:`mulfree run <compile_model>` generates when none is given.

    A ``rows x cols`` array of the model's PE kind at its activation and weight widths, with
    ``max_k`` the smallest power of two covering the longest reduction, and buffers (feature
    map, weights, channels) the smallest powers of two the model needs, at least the
    defaults of :class:`CoreConfig`. ``core_options`` override any :class:`CoreConfig` field.

    Raises
    ------
    CompileError
        If the model mixes PE kinds (one core has one kind) or has no layer with weights.
    """
    _validate(model)
    layers = [(i, l) for i, l in enumerate(model.layers) if l.kind in ("linear", "conv2d")]
    if not layers:
        raise CompileError("layers", "the model has no linear or conv2d layer: nothing runs on "
                                     "the core")
    kinds = sorted({l.pe for _, l in layers})
    if len(kinds) > 1:
        where = ", ".join(f"layers.{i} {l.pe}" for i, l in layers)
        raise CompileError("layers", f"the model mixes PE kinds {' and '.join(kinds)} "
                                     f"({where}); a core has one kind, so no single core runs "
                                     f"it")
    pe = kinds[0]
    act_bits = max(l.act_bits for _, l in layers)
    weight_bits = None if pe == "adder" else max(l.weight_bits for _, l in layers)
    ks = [int(np.prod(np.shape(l.codes)[1:])) if l.kind == "conv2d"
          else int(np.shape(l.codes)[0]) for _, l in layers]
    max_k = max(_pow2_at_least(max(ks)), _pow2_at_least(rows))
    engine = ArrayConfig(pe=pe, rows=rows, cols=cols, act_bits=act_bits,
                         weight_bits=weight_bits, max_k=max_k)
    base = CoreConfig(engine=engine, stream_width=stream_width)
    need = {"fmap_vectors": base.fmap_vectors, "weight_rows": base.weight_rows,
            "max_channels": base.max_channels}
    shapes = model.validate()
    for (i, layer), k in zip(layers, ks):
        in_shape = shapes[i][0]
        ct = -(-(in_shape[0]) // rows)
        pixels = in_shape[1] * in_shape[2] if layer.kind == "conv2d" else 1
        out_c = np.shape(layer.codes)[0 if layer.kind == "conv2d" else 1]
        need["fmap_vectors"] = max(need["fmap_vectors"], _pow2_at_least(pixels * ct))
        kt = (k // in_shape[0]) * ct                     # kernel positions x channel tiles
        need["weight_rows"] = max(need["weight_rows"],
                                  _pow2_at_least(-(-out_c // cols) * kt * rows))
        need["max_channels"] = max(need["max_channels"], _pow2_at_least(max(out_c,
                                                                             in_shape[0])))
    need.update(core_options)
    try:
        return CoreConfig(engine=engine, stream_width=stream_width, **need)
    except ConfigError as exc:
        raise CompileError(f"core.{exc.param}", str(exc)) from None


# Compiling ------------------------------------------------------------------------------------

def _validate(model):
    if not isinstance(model, IntModel):
        raise CompileError("model", f"model must be an IntModel (load_export), "
                                    f"not {type(model).__name__}")
    try:
        return model.validate()
    except ExportError as exc:
        raise CompileError(exc.param, f"the model is invalid: {exc}") from None


def _describe(i, layer, in_shape, out_shape):
    return f"layers.{i} ({layer.kind} {in_shape} -> {out_shape})"


def _engine_codes(layer, engine: ArrayConfig, where):
    """The layer's codes in the engine's encoding, or a CompileError saying why they don't fit."""
    codes = np.asarray(layer.codes, dtype=np.int64)
    if layer.pe != engine.pe:
        raise CompileError(f"{where}.pe", f"{where} is a {layer.pe} layer; this core's PEs are "
                                          f"{engine.pe}")
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
        layer = step_layer(step, np.zeros(_run_x_shape(step, images), dtype=np.int64),
                           reuse=False)
        try:
            check_layer(cfg, layer)
        except LayerError as exc:
            param = {"x": "in_shape", "w_codes": "codes", "post.bias": "bias",
                     "post.shift": "shift", "post.relu": "relu"}.get(exc.param, exc.param)
            raise CompileError(f"{where}.{param}", f"{describe} does not fit the core: "
                                                   f"{exc}") from None


def _linear_images(cfg, k):
    """Images one run of a linear layer with ``k`` inputs can take."""
    ct = -(-k // cfg.engine.rows)
    return max(1, min(cfg.fmap_vectors // ct, (1 << 16) - 1))


def _weight_packets(cfg, step, max_bytes):
    """PARAMS, SHIFT and WEIGHTS packets of ``step`` (sent by its first run)."""
    e = cfg.engine
    layer = step_layer(step, np.zeros(_run_x_shape(step, 1), dtype=np.int64), reuse=False)
    g = layer_geometry(cfg, layer)
    params = _ints_to_beats(cfg, params_vectors(cfg, layer, g), "PARAMS")
    out = stream_pack.packets(cfg, "PARAMS", params, max_bytes)
    if step.shifts is not None:
        vectors = shift_vectors(cfg, layer, g)
        out += stream_pack.packets(cfg, "SHIFT", _ints_to_beats(cfg, vectors, "SHIFT"),
                                   max_bytes)
    rows = weight_rows(cfg, step.w_codes, g)
    out += stream_pack.packets(cfg, "WEIGHTS", stream_pack.pack_elements(cfg, rows,
                                                                         e.code_width),
                               max_bytes)
    return out


def _ints_to_beats(cfg, vectors, type_name):
    """Python-integer vectors as beats (the few vectors packed by ``stream_format``)."""
    beats = cfg.beats(cfg.vector_bits[type_name])
    nbytes = beats * cfg.stream_width // 8
    data = b"".join(int(v).to_bytes(nbytes, "little") for v in vectors)
    return np.frombuffer(data, dtype=np.uint8).reshape(len(vectors) * beats, -1).copy()


def compile_model(model: IntModel, core, *, max_packet_bytes=None):
    """Compile ``model`` for ``core``.

    Parameters
    ----------
    model : IntModel
        An exported integer model (:func:`mulfree.host.export_format.load_export`).
    core : CoreConfig or dict
        The core, or its manifest.
    max_packet_bytes : int or None
        Largest packet (header included) a transfer may carry: the runtime's backend says
        (a DMA's length register). ``None``: only the header's 24-bit count limits.

    Returns
    -------
    Program

    Raises
    ------
    CompileError
        Naming the first layer and parameter that does not fit: a PE kind other than the
        core's, activations of another width, wider weight codes, a reduction longer than
        ``max_k``, more channels than ``max_channels``, a map larger than the feature-map
        buffer, weights larger than the weight buffer, post-processing values outside the
        core's ranges.
    """
    cfg = core if isinstance(core, CoreConfig) else core_from_manifest(core)
    shapes = _validate(model)
    e = cfg.engine
    if model.input.act_bits > e.act_bits:
        raise CompileError("input.act_bits", f"the model's input has {model.input.act_bits}-bit "
                                             f"activations; this core's are {e.act_bits} bits")
    steps = []
    for i, (layer, (in_shape, out_shape, _)) in enumerate(zip(model.layers, shapes)):
        if layer.kind in ("flatten", "maxpool2d"):
            steps.append(HostStep(i, layer.kind, tuple(in_shape), tuple(out_shape)))
            continue
        where, describe = f"layers.{i}", _describe(i, layer, in_shape, out_shape)
        if layer.act_bits != e.act_bits:
            raise CompileError(f"{where}.act_bits",
                               f"{describe} has {layer.act_bits}-bit activations; this core's "
                               f"are {e.act_bits} bits (its outputs saturate there)")
        codes = _engine_codes(layer, e, where)
        if layer.kind == "linear":
            w = np.ascontiguousarray(codes.T[:, :, None, None])
            stride, padding, shifts = (1, 1), (0, 0), None
            images = _linear_images(cfg, codes.shape[0])
        else:
            w = codes
            stride, padding = tuple(layer.stride), tuple(layer.padding)
            shifts = None if layer.shifts is None else np.asarray(layer.shifts, dtype=np.int64)
            images = 1
        post = PostParams(np.asarray(layer.bias, dtype=np.int64),
                          np.asarray(layer.shift, dtype=np.int64),
                          np.asarray(layer.relu, dtype=bool))
        step = CoreStep(i, layer.kind, w, post, stride, padding, shifts, tuple(in_shape),
                        tuple(out_shape), images)
        _check_step(cfg, step, where, describe)
        try:
            packets = _weight_packets(cfg, step, max_packet_bytes)
        except ValueError as exc:
            raise CompileError("max_packet_bytes", str(exc)) from None
        object.__setattr__(step, "weight_packets", packets)
        object.__setattr__(step, "weight_bytes", sum(p.nbytes for p in packets))
        steps.append(step)
    if not any(isinstance(s, CoreStep) for s in steps):
        raise CompileError("layers", "the model has no linear or conv2d layer: nothing runs on "
                                     "the core")
    return Program(cfg, model, steps, max_packet_bytes)


# Runs -----------------------------------------------------------------------------------------

def encode_run(program: Program, step: CoreStep, x, *, reuse):
    """The packets of one run of ``step`` on ``x``, and the bytes of its result.

    The order overlaps loading and computing (``docs/interface.md``): DESC; then, for the
    first run, PARAMS and SHIFT, the ACTS the first block reads, WEIGHTS, the other ACTS;
    with ``reuse`` (weights kept from the previous run of the same step), DESC and ACTS.

    Returns
    -------
    (list of uint8 arrays, int, Layer)
        The packets (``[beats, beat_bytes]`` each), the result's size in bytes, and the run's
        :class:`~mulfree.host.core_layer.Layer` (for :func:`decode_run`).
    """
    cfg = program.core
    layer = step_layer(step, x, reuse=reuse)
    g = layer_geometry(cfg, layer)
    limit = program.max_packet_bytes
    desc = stream_pack.pack_elements(cfg, np.array([descriptor_words_unchecked(layer, g)]), 32)
    acts = stream_pack.pack_elements(cfg, act_rows(cfg, layer.x, g), cfg.engine.act_bits)
    packets = stream_pack.packets(cfg, "DESC", desc)
    if reuse:
        packets += stream_pack.packets(cfg, "ACTS", acts, limit)
    else:
        per = cfg.beats(cfg.vector_bits["ACTS"])
        first = first_block_acts(layer, g) * per
        packets += [p for p in step.weight_packets if _type_of(p) in (2, 3)]
        packets += stream_pack.packets(cfg, "ACTS", acts[:first], limit)
        packets += [p for p in step.weight_packets if _type_of(p) == 4]
        packets += stream_pack.packets(cfg, "ACTS", acts[first:], limit)
    out_beats = g["M"] * g["NT"] * cfg.beats(cfg.vector_bits["OUT"])
    return packets, out_beats * cfg.stream_width // 8, layer


def _type_of(packet):
    return int(packet[0, 0]) & 0xF


def decode_run(program: Program, layer: Layer, data):
    """The run's outputs ``[out_c, out_h, out_w]`` (int64) from its result bytes.

    Raises
    ------
    ValueError
        If ``data`` has the wrong size, or a bit the format says is 0 (above a vector, or a
        lane of a channel at or beyond ``out_c``) is set.
    """
    cfg = program.core
    e = cfg.engine
    g = layer_geometry(cfg, layer)
    per = cfg.beats(cfg.vector_bits["OUT"])
    beat_bytes = cfg.stream_width // 8
    n = g["M"] * g["NT"]
    data = np.asarray(data, dtype=np.uint8).reshape(-1)
    if data.size != n * per * beat_bytes:
        raise ValueError(f"the results of this run are {n} vectors of {per * beat_bytes} "
                         f"bytes = {n * per * beat_bytes} bytes, not {data.size}")
    values, extra = stream_pack.unpack_elements(cfg, data.reshape(n * per, beat_bytes),
                                                e.cols, e.act_bits)
    if extra.any():
        raise ValueError(f"result vector {int(np.argmax(extra))} has bits set above its "
                         f"{cfg.vector_bits['OUT']} bits")
    # Result order: for each block, for nt, for each pixel of the block.
    lanes = np.zeros((g["NT"], e.cols, g["M"]), dtype=np.int64)
    i = 0
    for start in range(0, g["M"], g["m_block"]):
        stop = min(start + g["m_block"], g["M"])
        block = values[i:i + g["NT"] * (stop - start)].reshape(g["NT"], stop - start, e.cols)
        lanes[:, :, start:stop] = block.transpose(0, 2, 1)
        i += g["NT"] * (stop - start)
    lanes = lanes.reshape(g["NT"] * e.cols, g["M"])
    if np.any(lanes[g["out_c"]:]):
        c, m = np.argwhere(lanes[g["out_c"]:])[0]
        raise ValueError(f"result lane of channel {g['out_c'] + c} >= out_c = {g['out_c']} "
                         f"(pixel {m}) is {lanes[g['out_c'] + c, m]}, not 0")
    return lanes[:g["out_c"]].reshape(g["out_c"], g["out_h"], g["out_w"])


# The program on the NumPy core model ----------------------------------------------------------

def emulate_program(program: Program, x):
    """Run ``program`` on quantized inputs ``x`` ``[B, *input_shape]`` with the NumPy model of
    the core (:func:`mulfree.host.core_emulator.emulate_core`), exactly as a device would: the
    same runs, the same packets (weights sent by a step's first run, then reused), the same
    result bytes. It shares no code with the golden model of the whole network
    (:func:`mulfree.params.model_golden.run_int_model`), so comparing the two checks the compiler
    without a simulator. Returns the final int64 activations ``[B, ...]``.
    """
    from .core_emulator import CoreState, emulate_core
    cfg, state, loaded = program.core, CoreState(), None
    bb = cfg.stream_width // 8
    x = np.asarray(x, dtype=np.int64)
    for step in program.steps:
        if not isinstance(step, CoreStep):
            x = step.apply(x)
            continue
        outs = []
        chunk = 1 if step.kind == "conv2d" else step.images_per_run
        for start in range(0, len(x), chunk):
            part = x[start] if step.kind == "conv2d" else x[start:start + chunk]
            packets, nbytes, layer = encode_run(program, step, part, reuse=loaded is step)
            pairs = [(int.from_bytes(beat.tobytes(), "little"), i == len(p) - 1)
                     for p in packets for i, beat in enumerate(p)]
            beats = emulate_core(cfg, pairs, state=state)
            data = np.frombuffer(b"".join(b.to_bytes(bb, "little") for b in beats), np.uint8)
            if data.size != nbytes:
                raise ValueError(f"the emulated core sent {data.size} bytes, not {nbytes}")
            out = decode_run(program, layer, data)
            outs.append(out[None] if step.kind == "conv2d" else out[:, 0, :].T)
            loaded = step
        x = np.concatenate(outs)
    return x
