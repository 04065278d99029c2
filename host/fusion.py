"""Which ``add`` and ``clamp`` nodes the core computes inside the run of the layer before them.

The core's post-processing ends in a tail (``docs/interface.md``, "The layer the core
computes"): a residual add of a shortcut streamed with the layer, then a clamp. A graph's
``conv2d`` on the core followed by the ``add`` of a residual connection (and by a ``clamp``,
ReLU6) is then one run instead of a run and two host steps. :func:`plan_fusion` decides, node
by node, what can be fused; the compiler builds the steps from its plans.

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

and then the only reader of the fused chain's output, if it is a ``clamp``, joins it too. Only
convolutions fuse (a linear node's run takes a batch of images, not one map). Whatever does
not fuse runs as before: the node on the host, exact. NumPy only.
"""

from dataclasses import dataclass

from ..params.core_config import RES_MAX_SHIFT, res_shift_range
from ..params.layer_golden import ResidualParams


__all__ = ["Fusion", "plan_fusion", "shortcut_vectors_needed", "execution_order"]


@dataclass(frozen=True)
class Fusion:
    """The tail fused into one core step.

    Attributes
    ----------
    add : int or None
        The fused ``add`` node's index.
    shortcut : int or None
        The tensor its other input reads (``-1``: the model's input).
    residual : ResidualParams or None
    clamp_node : int or None
        The fused ``clamp`` node's index.
    clamp : (int, int) or None
    """

    add: int | None = None
    shortcut: int | None = None
    residual: ResidualParams | None = None
    clamp_node: int | None = None
    clamp: tuple | None = None

    @property
    def nodes(self):
        """The fused nodes, in order."""
        return tuple(i for i in (self.add, self.clamp_node) if i is not None)


def shortcut_vectors_needed(info, cols):
    """Shortcut vectors of a convolution's output: ``out_h * out_w * ceil(out_c / cols)``."""
    c, h, w = info.out_shape
    return h * w * -(-c // cols)


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
    j = a.sources[other]
    if _depends_on(infos, j, info.index, plans) or tuple(a.in_shapes[other]) != tuple(info.out_shape):
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
    return a.index, j, ResidualParams(main, short, int(node.shift), bool(node.relu))


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
        Check that each shortcut fits ``cfg.shortcut_vectors`` (``False``: every fusion the
        graph allows, to size a core's buffer).
    """
    plans = {}
    for info in infos:
        if places[info.index][0] != "core" or info.kind != "conv2d":
            continue
        add = _residual(cfg, model, infos, info, room, plans)
        last = add[0] if add else info.index
        clamp = _clamp(cfg, model, infos, last)
        if add or clamp:
            plans[info.index] = Fusion(
                add=add[0] if add else None, shortcut=add[1] if add else None,
                residual=add[2] if add else None,
                clamp_node=clamp[0] if clamp else None, clamp=clamp[1] if clamp else None)
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
