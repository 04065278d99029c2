"""Which ``add``, ``clamp``, ``global_avgpool`` and ``flatten`` nodes (and the ``maxpool2d`` /
``pad`` of an option-A shortcut) the core computes inside the run of the layer before them.

The core's post-processing ends in a tail (``docs/interface.md``, "The layer the core
computes"): a residual add of a shortcut streamed with the layer and aligned by the core
(every ``short_stride``-th pixel, ``short_off`` zero channels in front), then a clamp, then a
global average pool. A graph's ``conv2d`` on the core followed by the ``add`` of a residual
connection (and by a ``clamp``, ReLU6, and a global pool with its ``flatten``) is then one run
instead of a run and up to four host steps. :func:`plan_fusion` decides, node by node, what can
be fused; the compiler builds the steps from its plans.

A layer ``L`` on the core takes its reader ``A`` into its run when

* ``A`` is ``L``'s only reader, an ``add`` of two inputs, one of them ``L`` and the other (the
  shortcut) a tensor that does not depend on ``L`` (the model's input, an earlier node, or a
  later one that :func:`execution_order` moves before ``L``: ResNet's option-A shortcut is
  traced after the block's convolutions), of ``L``'s output shape, at most the core's
  activation width;
* ``A``'s output width is the core's, its ``in_shifts`` are at most ``RES_MAX_SHIFT`` and its
  ``shift`` inside ``res_shift_range``;
* the shortcut, ``out_h * out_w * ceil(out_c / cols)`` vectors, fits the core's shortcut
  buffer (``shortcut_vectors``);

The shortcut's tensor is the add's other input, or, when that input is a ``pad`` of channels
only (read by the add alone) of a ``maxpool2d`` with a 1x1 kernel, no padding and a square
stride ``s`` (read by the pad alone) — ResNet's option-A ``F.pad(x[:, :, ::2, ::2], ...)`` —
or either of the two alone, the tensor ``x`` they read: the core receives ``x`` (a map ``s``
times the output's) and aligns it itself; the pad and the pooling become fused nodes that
compute nothing.

Then the only reader of the fused chain's output, if it is a ``clamp``, joins it; then, if it
is a ``global_avgpool`` over ``2^k <= pool_pixels`` pixels with the core's width whose shift
``k + shift`` is inside ``pool_shift_range``, it joins, and a ``flatten`` reading it alone
(the pooled pixel is already the flat vector). Only convolutions fuse (a linear node's run
takes a batch of images, not one map). Whatever does not fuse runs as before: the node on the
host, exact. NumPy only.
"""

from dataclasses import dataclass

from ..params.core_config import RES_MAX_SHIFT, pool_shift_range, res_shift_range
from ..params.layer_golden import ResidualParams


__all__ = ["Fusion", "plan_fusion", "shortcut_vectors_needed", "pool_pixels_needed",
           "execution_order"]


@dataclass(frozen=True)
class Fusion:
    """The tail fused into one core step.

    Attributes
    ----------
    add : int or None
        The fused ``add`` node's index.
    shortcut : int or None
        The tensor its other input reads (``-1``: the model's input).
        The tensor the core receives as the shortcut (``-1``: the model's input).
    residual : ResidualParams or None
        With ``stride`` and ``offset``: how the core aligns ``shortcut``.
    short_nodes : tuple of int
        The ``maxpool2d`` / ``pad`` nodes between ``shortcut`` and the add, which the
        alignment replaces.
    short_shape : tuple or None
        ``shortcut``'s shape per image, ``(short_c, out_h*stride, out_w*stride)``.
    clamp_node : int or None
        The fused ``clamp`` node's index.
    clamp : (int, int) or None
    pool_node : int or None
        The fused ``global_avgpool`` node's index.
    pool : int or None
        Its ``pool_shift`` (``log2(H*W) + shift``).
    flatten_node : int or None
        The fused ``flatten`` after the pool.
    """

    add: int | None = None
    shortcut: int | None = None
    residual: ResidualParams | None = None
    short_nodes: tuple = ()
    short_shape: tuple | None = None
    clamp_node: int | None = None
    clamp: tuple | None = None
    pool_node: int | None = None
    pool: int | None = None
    flatten_node: int | None = None

    @property
    def nodes(self):
        """The fused nodes of the chain after the layer, in order (each reads the one
        before)."""
        return tuple(i for i in (self.add, self.clamp_node, self.pool_node, self.flatten_node)
                     if i is not None)


def shortcut_vectors_needed(info, cols):
    """Shortcut vectors of a convolution's output: ``out_h * out_w * ceil(out_c / cols)``."""
    c, h, w = info.out_shape
    return h * w * -(-c // cols)


def pool_pixels_needed(info):
    """Pixels a global pool after a convolution averages: ``out_h * out_w``."""
    return info.out_shape[1] * info.out_shape[2]


def _only_reader(infos, j, reader):
    return j >= 0 and tuple(infos[j].consumers) == (reader,)


def _aligned_shortcut(model, infos, j, reader, out_shape):
    """``(tensor, stride, offset, absorbed nodes)``: what the core receives for the shortcut
    ``j`` the add ``reader`` reads (``out_shape``: the layer's), following an option-A pad and
    subsampling; ``None`` if ``j``'s chain cannot be aligned by the core."""
    stride, offset, absorbed = 1, 0, []
    if _only_reader(infos, j, reader) and infos[j].kind == "pad":
        c0, c1, *spatial = (int(p) for p in model.layers[j].pads)
        if any(spatial) or c0 < 0 or c1 < 0:
            return None
        offset, absorbed, reader, j = c0, [j], j, infos[j].sources[0]
    if _only_reader(infos, j, reader) and infos[j].kind == "maxpool2d":
        node = model.layers[j]
        kernel, (sy, sx), padding = tuple(node.kernel), tuple(node.stride), tuple(node.padding)
        if kernel != (1, 1) or padding != (0, 0) or sy != sx:
            return None
        stride, absorbed, j = sy, absorbed + [j], infos[j].sources[0]
    c, h, w = out_shape
    shape = tuple(infos[j].out_shape) if j >= 0 else tuple(model.input.shape)
    if len(shape) != 3 or shape[1:] != (h * stride, w * stride) or offset + shape[0] > c:
        return None
    return j, stride, offset, tuple(sorted(absorbed)), shape


def _depends_on(infos, j, i, plans):
    """Whether tensor ``j`` is ``i`` or is computed after it (``-1``: the model's input): from
    it, or from a core node whose fused shortcut is (the plans so far order those first)."""
    seen, todo = set(), [j]
    while todo:
        k = todo.pop()
        if k == i:
            return True
        if k >= 0 and k not in seen:
            seen.add(k)
            todo.extend(infos[k].sources)
            if k in plans and plans[k].shortcut is not None:
                todo.append(plans[k].shortcut)
    return False


def _residual(cfg, model, infos, info, room, plans):
    """``(add index, shortcut tensor, ResidualParams)`` if ``info``'s reader is a fusable add,
    else None. ``room``: the shortcut buffer's size is checked (False when sizing a core)."""
    e = cfg.engine
    if len(info.consumers) != 1:
        return None
    a = infos[info.consumers[0]]
    node = model.layers[a.index]
    if a.kind != "add" or len(a.sources) != 2 or a.sources.count(info.index) != 1:
        return None
    mine = a.sources.index(info.index)
    other = 1 - mine
    if tuple(a.in_shapes[other]) != tuple(info.out_shape):
        return None
    aligned = _aligned_shortcut(model, infos, a.sources[other], a.index, info.out_shape) or \
        (a.sources[other], 1, 0, (), tuple(info.out_shape))
    j, stride, offset, absorbed, shape = aligned
    if _depends_on(infos, j, info.index, plans):
        return None
    if a.in_bits[other] > e.act_bits or node.act_bits != e.act_bits:
        return None
    main, short = int(node.in_shifts[mine]), int(node.in_shifts[other])
    lo, hi = res_shift_range(e.act_bits)
    if not (0 <= main <= RES_MAX_SHIFT and 0 <= short <= RES_MAX_SHIFT
            and lo <= int(node.shift) <= hi):
        return None
    if room and shortcut_vectors_needed(info, e.cols) > cfg.shortcut_vectors:
        return None
    return a.index, j, ResidualParams(main, short, int(node.shift), bool(node.relu),
                                      stride, offset), absorbed, shape


def _clamp(cfg, model, infos, last):
    """``(clamp index, (lo, hi))`` if the only reader of node ``last`` is a clamp."""
    info = infos[last]
    if len(info.consumers) != 1:
        return None
    c = infos[info.consumers[0]]
    if c.kind != "clamp":
        return None
    node = model.layers[c.index]
    lo, hi = cfg.engine.act_range
    if not lo <= int(node.lo) <= int(node.hi) <= hi:
        return None
    return c.index, (int(node.lo), int(node.hi))


def _pool(cfg, model, infos, last, conv, room):
    """``(pool index, pool_shift, flatten index or None)`` if the only reader of node ``last``
    is a global pool the core can fuse after the convolution ``conv``."""
    info = infos[last]
    if len(info.consumers) != 1:
        return None
    p = infos[info.consumers[0]]
    if p.kind != "global_avgpool":
        return None
    node, e = model.layers[p.index], cfg.engine
    n = pool_pixels_needed(conv)
    if n & (n - 1) or node.act_bits != e.act_bits or (room and n > cfg.pool_pixels):
        return None
    shift = (n.bit_length() - 1) + int(node.shift)
    lo, hi = pool_shift_range(e.act_bits, cfg.pool_pixels if room else n)
    if not lo <= shift <= hi:
        return None
    flat = None
    if len(p.consumers) == 1 and infos[p.consumers[0]].kind == "flatten":
        flat = p.consumers[0]
    return p.index, shift, flat


def plan_fusion(cfg, model, infos, places, *, room=True):
    """``{core node index: Fusion}`` for every core convolution with something to fuse.

    Parameters
    ----------
    cfg : CoreConfig
    model : IntModel
    infos : list of NodeInfo
        ``model.graph()``.
    places : dict
        :func:`mulfree.host.schedule.place_nodes`'s placements; only ``"core"`` nodes fuse.
    room : bool
        Check that each shortcut fits ``cfg.shortcut_vectors`` and each pooled map
        ``cfg.pool_pixels`` (``False``: every fusion the graph allows, to size a core).
    """
    plans = {}
    for info in infos:
        if places[info.index][0] != "core" or info.kind != "conv2d":
            continue
        add = _residual(cfg, model, infos, info, room, plans)
        last = add[0] if add else info.index
        clamp = _clamp(cfg, model, infos, last)
        last = clamp[0] if clamp else last
        pool = _pool(cfg, model, infos, last, info, room)
        if add or clamp or pool:
            plans[info.index] = Fusion(
                add=add[0] if add else None, shortcut=add[1] if add else None,
                residual=add[2] if add else None, short_nodes=add[3] if add else (),
                short_shape=add[4] if add else None,
                clamp_node=clamp[0] if clamp else None, clamp=clamp[1] if clamp else None,
                pool_node=pool[0] if pool else None, pool=pool[1] if pool else None,
                flatten_node=pool[2] if pool else None)
    return plans


def execution_order(infos, plans):
    """The order the program runs the nodes in: the graph's, except that the nodes a fused
    shortcut needs move before the core node that streams it. A stable topological order
    (the lowest index first among the nodes ready) of the graph with one more edge per plan,
    shortcut -> core node; the last node, the model's output, stays last."""
    needs = {info.index: set(j for j in info.sources if j >= 0) for info in infos}
    for i, plan in plans.items():
        if plan.shortcut is not None and plan.shortcut >= 0:
            needs[i].add(plan.shortcut)
    order, done = [], set()
    while len(order) < len(infos):
        ready = min(k for k in needs if k not in done and needs[k] <= done)
        order.append(ready)
        done.add(ready)
    return order
