"""The steps of a compiled program: a node the core computes, or one the host computes.

* :class:`CoreStep`: a ``linear`` node, or a ``conv2d`` with ``groups == 1``, of the core's PE
  kind (or a window run). A step runs once per chunk of up to ``images_per_run`` images: a
  linear node's images are the ``M`` pixels of the matrix product ``[B, K] . [K, N]``; a
  convolution's are stacked along the height with zero rows between them
  (:mod:`mulfree.host.stacking`), or it runs once per image. The first run of a batch sends
  the weights, the following runs reuse them.
* :class:`FusedStep`: an ``add`` or ``clamp`` node the core computes inside the run of the
  core step before it (:mod:`mulfree.host.fusion`): the residual add and the clamp of the
  core's post-processing tail. Its output is that step's.
* :class:`HostStep`: every other node. The host computes the node's specification exactly,
  in NumPy integers (:func:`mulfree.params.graph_golden.node_forward`): nodes without
  weights, depthwise convolutions, and (with ``host_fallback``) weight nodes of another PE
  kind.

:class:`mulfree.host.program.Program` holds one step per node. NumPy only.
"""

from dataclasses import dataclass, field

import numpy as np

from ..params.graph_golden import node_forward
from ..params.layer_golden import PostParams, ResidualParams
from .core_layer import Layer, layer_geometry
from .patches import expand_patches
from .stacking import stack_images, stacked_height, unstack_output


__all__ = ["CompileError", "CoreStep", "HostStep", "FusedStep", "step_layer", "run_x_shape",
           "chained_input", "step_geometry", "run_chunks", "run_part", "run_images",
           "PLACEMENTS"]

#: Where a node runs.
PLACEMENTS = ("core", "host")


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
    """A node the host computes exactly: its golden function on NumPy integers.

    Attributes
    ----------
    index : int
        The node's position in the model.
    kind : str
        The node's kind (``"maxpool2d"``, ``"add"``, ``"conv2d"``...).
    in_shape, out_shape : tuple
        Shapes per image of its first input and of its output.
    node : a node of :mod:`mulfree.params.int_layers`
    name : str
        The node's name (``layers.<index>`` when it has none).
    sources : tuple of int
        The nodes it reads (``-1``: the model's input).
    in_shapes : tuple of tuple
        Shapes per image of all its inputs.
    reason : str
        Why the host runs it (``"no weights"``, ``"depthwise"``, ``"mult PEs (host
        fallback)"``).
    """

    index: int
    kind: str
    in_shape: tuple
    out_shape: tuple
    node: object = None
    name: str = ""
    sources: tuple = ()
    in_shapes: tuple = ()
    reason: str = "no weights"

    placement = "host"

    def apply(self, *inputs):
        """The node on its input batches ``[B, *shape]`` (int64): its exact integer output."""
        return node_forward(self.node, [np.asarray(x, dtype=np.int64) for x in inputs],
                            f"layers.{self.index}")


@dataclass(frozen=True, eq=False)
class CoreStep:
    """A node the core computes: a convolution, or a linear node as a matrix product.

    Attributes
    ----------
    index : int
        The node's position in the model.
    kind : str
        ``"conv2d"`` or ``"linear"``; a window run's ``"maxpool2d"``, ``"avgpool2d"`` or
        ``"conv2d"`` (depthwise).
    w_codes : int64 array ``[out_c, in_c, kernel_h, kernel_w]``
        Weight codes in the core's encoding (a linear node's ``[K, N]`` codes as ``N x K``
        1x1 kernels; shift codes re-encoded for a wider ``weight_bits``).
    post : PostParams
    stride, padding : pair of int
    shifts : int64 array ``[in_c, 2]`` or None
    in_shape, out_shape : tuple
        Per image: ``(C, H, W)`` for a convolution, ``(K,)`` and ``(N,)`` for a linear node.
    images_per_run : int
        Images one run takes: for a linear node as many as the feature-map buffer and the
        descriptor's 16-bit ``in_w`` allow; for a convolution or window run that can be
        stacked (:func:`~mulfree.host.stacking.stack_gap`) as many as fit the core, up to
        :data:`~mulfree.host.stacking.MAX_STACK`; else 1.
    weight_packets : list of uint8 arrays
        PARAMS, SHIFT and WEIGHTS packets, ``[beats, beat_bytes]`` each: what the first run of
        a batch sends.
    weight_bytes : int
        Their size.
    name : str
        The node's name.
    sources : tuple of int
        The node it reads (``-1``: the model's input), then, with ``residual``, the shortcut's.
    residual : ResidualParams or None
        A residual add fused into the run (the add node ``fused[0]``): the shortcut is the
        tensor ``sources[1]`` (``short_shape``), which the core aligns to the output
        (``residual.stride``, ``residual.offset``).
    clamp : (int, int) or None
        A clamp fused into the run, after the residual add.
    fused : tuple of int
        The nodes fused into this step (:class:`FusedStep`): the chain after the layer in
        order, then the option-A pad / subsampling the alignment replaces.
    pool : int or None
        A global average pool fused into the run (``pool_shift``): the run returns one pixel,
        :attr:`result_shape`.
    short_shape : tuple or None
        The shortcut tensor's shape per image, with ``residual``.
    engine : int
        The engine the runs choose (the descriptor's ``engine``): the core's engine of the
        node's PE kind.
    in_bank, acts_resident, keep, quiet, short_resident :
        Layer chaining (:mod:`mulfree.host.chaining`, interface 2.2): the feature-map bank of
        the input, whether it is already there (no ACTS sent), whether the output stays in the
        other bank, whether it is not sent, whether the residual's shortcut is read from the
        other bank (no SHORTCUT sent).
    per_image : bool
        The step is part of a chained segment: its runs take ``chain_images`` images each
        (one, or stacked), between the runs of the segment's other steps, and send its
        weights every time.
    chain_images : int
        Images one run of a chained segment takes (every step of the segment the same): 1,
        or several stacked when every step's stacked map is the images' plain concatenation
        (:func:`~mulfree.host.stacking.concatenates`).
    window : str or None
        A window run on the lane unit (interface 2.3, :mod:`mulfree.host.window_steps`):
        ``"max"``, ``"sum"`` or ``"depthwise"``; ``w_codes`` is then ``[C, 1, kh, kw]``.
    taps : bool
        A depthwise window run on the engine's array instead of the lane unit (a taps run,
        interface 2.4, :func:`~mulfree.host.window_steps.taps_fit`).
    patches : Patches or None
        The node's kernel taps on the array's rows (:mod:`mulfree.host.patches`): the host
        sends the patches of each image, ``in_shape``, ``w_codes``, ``stride`` and ``padding``
        are those of the 1x1 convolution over them, ``patches`` the node's own kernel,
        stride and padding.
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
    name: str = ""
    sources: tuple = ()
    residual: ResidualParams | None = None
    clamp: tuple | None = None
    fused: tuple = ()
    pool: int | None = None
    short_shape: tuple | None = None
    engine: int = 0
    in_bank: int = 0
    acts_resident: bool = False
    keep: bool = False
    quiet: bool = False
    short_resident: bool = False
    per_image: bool = False
    chain_images: int = 1
    window: str | None = None
    taps: bool = False
    patches: tuple | None = None

    placement = "core"

    @property
    def result_shape(self):
        """Shape per image of what a run returns: ``out_shape``, or one pixel with ``pool``."""
        return self.out_shape if self.pool is None else (self.out_shape[0], 1, 1)

    @property
    def k(self):
        """Terms per sum: ``in_c * kernel_h * kernel_w``."""
        return int(np.prod(self.w_codes.shape[1:]))

    @property
    def out_c(self):
        """Output channels (a linear node's ``N``)."""
        return int(self.w_codes.shape[0])

    @property
    def reuses_weights(self):
        """Whether a run may keep the previous run's PARAMS and weights (``reuse_weights``):
        not a max or sum window run, which has no weights (the core refuses the flag there,
        DESCRIPTOR) and sends its PARAMS with every run."""
        return self.window not in ("max", "sum")

    @property
    def in_shapes(self):
        """Shapes per image of its inputs: the input, and the shortcut with ``residual``."""
        return (self.in_shape,) + ((self.short_shape or self.out_shape,)
                                   if self.residual is not None else ())


@dataclass(frozen=True, eq=False)
class FusedStep:
    """A node the core computes inside the run of the core step ``into`` (its residual add,
    clamp, global pool or flatten); its output is that step's output, which the run already
    produced. The option-A pad and subsampling of a fused shortcut are fused steps without
    sources: the core aligns the shortcut itself, and nothing reads their output.

    Attributes
    ----------
    index : int
    kind : str
        ``"add"``, ``"clamp"``, ``"global_avgpool"``, ``"flatten"``, ``"pad"`` or
        ``"maxpool2d"``.
    out_shape : tuple
    node : the node (:mod:`mulfree.params.int_layers`)
    name : str
    sources : tuple of int
        The node before it in the fused chain (whose output is already the fused result);
        empty for a shortcut's pad or subsampling.
    into : int
        The index of the :class:`CoreStep` that computes it.
    """

    index: int
    kind: str
    out_shape: tuple
    node: object = None
    name: str = ""
    sources: tuple = ()
    into: int = -1

    placement = "core"

    @property
    def in_shape(self):
        return self.out_shape

    @property
    def in_shapes(self):
        return (self.out_shape,)

    @property
    def reason(self):
        return f"fused into layers.{self.into}"

    def apply(self, *xs):
        """The fused chain's output, already computed by the core step: ``x`` itself, in this
        node's shape when it has as many elements (a flatten's; a node before a fused pool
        passes the pooled pixel on: only the chain's last node has readers); ``None`` for a
        shortcut's pad or subsampling."""
        if not xs or xs[0] is None:
            return None             # or a chained output the core kept and did not send
        x = xs[0]
        if x[0].size != int(np.prod(self.out_shape)):
            return x
        return x.reshape((x.shape[0],) + tuple(self.out_shape))


def chained_input(step, x):
    """A core step's input batch as its runs take it: ``x`` (its patches for a step with
    ``patches``), or one image of zeros for a chained run whose input the host does not hold
    (it stays in the core's bank: only its shape is needed)."""
    if x is not None:
        return x if step.patches is None else expand_patches(x, step.patches)
    shape = (step.in_shape[0],) if step.kind == "linear" else tuple(step.in_shape)
    return np.zeros((1,) + shape, dtype=np.int64)


def run_x_shape(step, images):
    """Shape of the input of one run of ``step`` taking ``images`` images, as the core sees
    it: ``(C, H, W)`` for a convolution (``H`` of the stacked images), ``(K, 1, images)`` for
    a linear node."""
    if step.kind == "linear":
        return (step.in_shape[0], 1, images)
    c, _, w = step.in_shape
    return (c, stacked_height(step, images), w)


def run_chunks(step, images):
    """The images each run of ``step`` takes over a batch of ``images``: chunks of
    ``images_per_run``, the last one shorter; in a chained segment, of ``chain_images``."""
    per = step.chain_images if step.per_image else step.images_per_run
    full, rest = divmod(images, per)
    return [per] * full + ([rest] if rest else [])


def run_part(step, x, start, n):
    """The input of the run taking images ``start .. start + n - 1`` of the batch ``x``, as
    :func:`step_layer` takes it: one image ``[C, H, W]``, or ``[n, ...]`` images."""
    return x[start] if step.kind != "linear" and n == 1 else x[start:start + n]


def run_images(step, out, n):
    """A run's decoded output as its ``n`` images ``[n, *result_shape]``."""
    if step.kind == "linear":
        return out[:, 0, :].T
    return unstack_output(step, out, n)


def step_layer(step: CoreStep, x, *, reuse, shortcut=None):
    """The :class:`~mulfree.host.core_layer.Layer` of one run of ``step``.

    ``x`` is one image ``[C, H, W]`` for a convolution (or the run's ``[n, C, H, W]``
    images, stacked here), or the run's ``[B, K]`` images for a linear node (or already the
    ``[K, 1, B]`` map). ``shortcut`` is the image's shortcut
    tensor (``short_shape``) of a step with ``residual`` (zeros when ``None``: for checks
    and estimates). ``reuse`` (the core holds this step's weights) sets ``reuse_weights``
    unless the step has none to reuse (:attr:`CoreStep.reuses_weights`).
    """
    x = np.asarray(x, dtype=np.int64)
    if step.kind == "linear" and x.ndim == 2:
        x = np.ascontiguousarray(x.T[:, None, :])
    elif step.kind != "linear" and x.ndim == 4:
        x = stack_images(step, x)
    if step.residual is not None:
        shortcut = np.zeros(step.short_shape or step.out_shape, dtype=np.int64) \
            if shortcut is None else np.asarray(shortcut, dtype=np.int64)
    else:
        shortcut = None
    chained = {} if not step.per_image else dict(
        in_bank=step.in_bank, acts_resident=step.acts_resident, keep=step.keep,
        quiet=step.quiet, short_resident=step.short_resident)
    return Layer(x, step.w_codes, step.post, stride=step.stride, padding=step.padding,
                 shifts=step.shifts, reuse_weights=reuse and step.reuses_weights,
                 shortcut=shortcut,
                 residual=step.residual, clamp=step.clamp, pool=step.pool,
                 engine=step.engine, **({"window": step.window} if step.window else {}),
                 **({"taps": True} if step.taps else {}), **chained)


def step_geometry(cfg, step, images=1, *, reuse=False):
    """:func:`~mulfree.host.core_layer.layer_geometry` of a run of ``step`` on ``images``."""
    x = np.zeros(run_x_shape(step, images), dtype=np.int64)
    return layer_geometry(cfg, step_layer(step, x, reuse=reuse))
