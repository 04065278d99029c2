"""Layer chaining: which core runs keep their output on-chip for the next ones.

A core with two feature-map banks (``fmap_banks = 2``, interface 2.2) can keep a run's output
in the bank its input is not in (``keep``), let a later run read its input from a bank
(``acts_resident``) and a residual's shortcut from the other bank (``short_resident``), and
leave out the result beats nobody on the host reads (``quiet``). :func:`plan_chains` decides
this for a compiled program, and the program then runs each *segment* (consecutive core
steps with a chained tensor between them) image by image instead of node by node
(:func:`mulfree.host.program.run_steps`).

The plan follows the core's bank rules (``docs/interface.md``, "Layer chaining"): a run that
ends well leaves bank ``in_bank`` holding its input and, with ``keep``, the other bank its
output; so the planner walks the segment with a model of the two banks holding *tensors*
(node indices, after the fused nodes that only pass the core step's output on).

* A step whose input is in a bank reads it there (``in_bank`` = that bank). Otherwise its
  ACTS are streamed into a bank: the one not holding its shortcut, else one whose tensor is
  not read again.
* A residual step whose shortcut is in the other bank reads it there.
* A step keeps its output when a later core step of the segment reads it and the other bank's
  tensor is not read again (a residual that reads its shortcut there writes in place over
  it: the core's interlock makes that safe).
* A kept output is ``quiet`` when every reader reads it from the bank and it is not the
  model's output.

Whether chaining pays is a trade the compiler makes per segment (:func:`chain_pays`): a
chained segment runs image by image, so the weights of its steps are sent for every image,
while an unchained one sends them once per batch and moves every activation through DDR.
"""

import dataclasses

from .core_layer import LayerError, check_layer
from .stacking import concatenates
from .steps import CoreStep, FusedStep, HostStep, run_chunks, run_x_shape, step_layer

import numpy as np


__all__ = ["CHAIN_MODES", "tensor_keys", "segments", "plan_chains", "chain_pays",
           "CHAIN_FLAGS", "without_patches_inside", "segment_bytes"]

#: ``compile_model(chain=...)``: ``"auto"`` chains a segment when it moves fewer bytes for
#: the batch (:func:`chain_pays`), ``"on"`` whenever the core can, ``"off"`` never.
CHAIN_MODES = ("auto", "on", "off")
#: The chaining fields of a :class:`~mulfree.host.steps.CoreStep` (and of its runs' layers).
CHAIN_FLAGS = ("in_bank", "acts_resident", "keep", "quiet", "short_resident")


def tensor_keys(steps):
    """``{node index: tensor}``: the node whose run produced each node's value (a fused node
    passes its core step's output on; ``-1`` is the model's input)."""
    keys = {-1: -1}
    for step in steps:
        if isinstance(step, FusedStep) and step.sources:
            keys[step.index] = keys[step.sources[0]]
        else:
            keys[step.index] = step.index
    return keys


def segments(steps):
    """Positions in ``steps`` of the runs of core steps with no host step between them:
    ``[[position, ...], ...]``, core steps only, each with at least two."""
    out, current = [], []
    for pos, step in enumerate(steps):
        if isinstance(step, HostStep):
            if len(current) > 1:
                out.append(current)
            current = []
        elif isinstance(step, CoreStep):
            current.append(pos)
    if len(current) > 1:
        out.append(current)
    return out


def _fits(cfg, step, images=1):
    """Whether one chained run of ``step`` on ``images`` images passes the core's checks that
    need no state."""
    try:
        check_layer(cfg, step_layer(step, np.zeros(run_x_shape(step, images), dtype=np.int64),
                                    reuse=False))
    except LayerError:
        return False
    return True


def _plan_segment(cfg, steps, seg, keys, readers, outside, images=1):
    """The chaining fields of the core steps at positions ``seg``: ``{position: dict}``."""
    order = [steps[p] for p in seg]
    uses = []                       # per step: the tensors it reads (input, shortcut)
    for s in order:
        used = [keys[s.sources[0]]]
        if s.residual is not None:
            used.append(keys[s.sources[1]])
        uses.append(used)

    def read_after(i, tensor):
        return tensor in outside or any(tensor in u for u in uses[i + 1:])

    banks = [None, None]
    flags = []
    for i, s in enumerate(order):
        inp = uses[i][0]
        short = uses[i][1] if s.residual is not None else None
        f = dict.fromkeys(CHAIN_FLAGS, False)
        if inp in banks and s.patches is None:      # patches come from the host
            f["in_bank"] = banks.index(inp)
            f["acts_resident"] = True
        elif short is not None and short in banks:
            f["in_bank"] = 1 - banks.index(short)
        else:
            free = [b for b in (0, 1) if banks[b] is None or not read_after(i - 1, banks[b])]
            f["in_bank"] = free[0] if free else 0
        b = f["in_bank"]
        f["short_resident"] = short is not None and banks[1 - b] == short
        other = banks[1 - b]
        wanted = any(s.index in u for u in uses[i + 1:])
        room = other is None or not read_after(i, other)
        f["keep"] = wanted and room
        f["in_bank"] = int(b)
        trial = dataclasses.replace(s, per_image=True, chain_images=images, **f)
        if (f["acts_resident"] or f["short_resident"] or f["keep"]) \
                and not _fits(cfg, trial, images):
            # A size a chained run cannot take: its ACTS are streamed, nothing is kept.
            f = dict.fromkeys(CHAIN_FLAGS, False)
            f["in_bank"] = int(b)
        banks[b] = inp if s.patches is None else ("patches", inp)
        if f["keep"]:
            banks[1 - b] = s.index
        flags.append(f)
    # Quiet: every reader of a kept output reads it from a bank.
    for i, s in enumerate(order):
        f = flags[i]
        if not f["keep"] or s.index in outside:
            continue
        resident = True
        for j in range(i + 1, len(order)):
            g = flags[j]
            if uses[j][0] == s.index and not g["acts_resident"]:
                resident = False
            if len(uses[j]) > 1 and uses[j][1] == s.index and not g["short_resident"]:
                resident = False
        f["quiet"] = resident and readers.get(s.index, set()) <= {order[j].index
                                                                  for j in range(i + 1, len(order))}
    return dict(zip(seg, flags))


def without_patches_inside(steps, unpatched):
    """``steps`` for the chaining plan: a step with kernel taps on rows (``patches``, whose
    input the host expands and streams) whose input another core step of its segment computes
    is replaced by ``unpatched[position]``, its own convolution, which can read that input
    from a bank. The first step of a segment, and one reading a tensor from outside it, keep
    their patches (their input is streamed anyway)."""
    keys = tensor_keys(steps)
    out = list(steps)
    for seg in segments(steps):
        inside = set()
        for p in seg:
            if p in unpatched and keys[steps[p].sources[0]] in inside:
                out[p] = unpatched[p]
            inside.add(steps[p].index)
    return out


def _patch_parts(steps, segs):
    """``segs`` cut before each step with ``patches``: the parts of two steps or more."""
    out = []
    for seg in segs:
        part = []
        for p in seg:
            if steps[p].patches is not None and part:
                out.append(part)
                part = []
            part.append(p)
        out.append(part)
    return [part for part in out if len(part) > 1]


def plan_chains(cfg, steps, output_node, *, stacked=False):
    """The chained steps of a program: ``(steps, segments)``.

    ``steps`` with the chaining fields set (new :class:`CoreStep` objects), and the segments
    (positions) that run image by image: those with at least one step reading a resident
    tensor. A core with one feature-map bank chains nothing. ``stacked``: only the segments
    whose every step :func:`~mulfree.host.stacking.concatenates`, cut before each step with
    ``patches`` (its input comes from the host), each part running as many images at a time
    (``chain_images``) as the smallest ``images_per_run`` of its steps, at least 2.
    """
    if getattr(cfg, "fmap_banks", 1) < 2:
        return list(steps), []
    keys = tensor_keys(steps)
    readers = {}
    for step in steps:
        if isinstance(step, FusedStep):
            continue
        for j in step.sources:
            readers.setdefault(keys[j], set()).add(step.index)
    out = list(steps)
    chained = []
    for seg in (_patch_parts(steps, segments(steps)) if stacked else segments(steps)):
        inside = {steps[p].index for p in seg}
        outside = {t for t, rs in readers.items() if rs - inside} | {keys[output_node]}
        n = 1
        if stacked:
            n = min(steps[p].images_per_run for p in seg)
            if n < 2 or not all(concatenates(steps[p]) for p in seg):
                continue
        plan = _plan_segment(cfg, steps, seg, keys, readers, outside, n)
        if not any(f["acts_resident"] or f["short_resident"] for f in plan.values()):
            continue
        for p, f in plan.items():
            out[p] = dataclasses.replace(steps[p], per_image=True, chain_images=n, **f)
        chained.append(tuple(seg))
    return out, chained


def chain_pays(cfg, steps, seg, chained_steps, images, max_packet_bytes):
    """Whether the chained segment moves fewer bytes than the unchained one for a batch of
    ``images`` images: chained, every image sends every step's weights; unchained, the
    weights go once and every run (of as many images as the step takes, ``run_chunks``:
    stacked images share a run's packets) its activations, shortcut and results."""
    return segment_bytes(cfg, chained_steps, seg, images, max_packet_bytes) \
        < segment_bytes(cfg, steps, seg, images, max_packet_bytes)


def segment_bytes(cfg, steps, seg, images, max_packet_bytes):
    """Bytes the steps at positions ``seg`` move both ways over a batch of ``images``, run as
    they run (``run_chunks``; weights with the first run, or with every run in a chained
    segment)."""
    from .schedule import run_traffic
    sizes = {}

    def moved(step, n, reuse):
        if (step.index, n, reuse) not in sizes:
            sizes[step.index, n, reuse] = sum(run_traffic(cfg, step, max_packet_bytes,
                                                          reuse=reuse, images=n))
        return sizes[step.index, n, reuse]
    return sum(moved(steps[p], n, i > 0 and not steps[p].per_image) for p in seg
               for i, n in enumerate(run_chunks(steps[p], images)))
