"""A compiled model (:class:`Program`) and the walk that runs it (:func:`run_steps`).

A :class:`Program` (made by :func:`mulfree.host.compiler.compile_model`) holds one step per node
of the model's graph, in the graph's order (:mod:`mulfree.host.steps`): a
:class:`~mulfree.host.steps.CoreStep` for a node the core computes, a
:class:`~mulfree.host.steps.HostStep` for one the host computes exactly.

:func:`run_steps` walks the steps for a batch, keeping each tensor until its last reader has
run (a residual's input stays alive across its branch), and records per node what it did
(:class:`~mulfree.host.run_result.NodeStats`). The device (:meth:`mulfree.host.device.Device.run`)
and the NumPy model of the core (:func:`mulfree.host.compiler.emulate_program`) both run
programs through it; they differ only in how a core step's runs are executed.

NumPy only.
"""

import time
from dataclasses import dataclass, field

import numpy as np

from ..params.core_config import CoreConfig
from .export_format import IntModel
from .run_result import NodeStats
from .schedule import describe_program, node_costs
from .steps import CoreStep, HostStep, run_chunks


__all__ = ["Program", "run_steps"]


@dataclass(frozen=True, eq=False)
class Program:
    """A compiled model: what the runtime sends, computes and returns.

    Attributes
    ----------
    core : CoreConfig
        The core the program was compiled for; a device refuses a program for another core.
    model : IntModel
    steps : list of CoreStep, FusedStep and HostStep
        One per node, in the order they run: the graph's, except that the nodes computing a
        fused residual's shortcut run before the core step that streams it
        (:func:`mulfree.host.fusion.execution_order`).
    max_packet_bytes : int or None
        The packet size limit the program was packed for (a DMA's transfer limit).
    last_use : dict
        ``{tensor: index of its last reader}``; tensors are node indices, ``-1`` the input.
    host_fallback : bool
        Whether weight nodes of another PE kind were allowed on the host.
    segments : tuple of tuple of int
        Positions in ``steps`` of the chained segments (:mod:`mulfree.host.chaining`): their
        core steps run image by image, passing tensors through the core's banks.
    """

    core: CoreConfig
    model: IntModel
    steps: list
    max_packet_bytes: int | None = None
    last_use: dict = field(default_factory=dict)
    host_fallback: bool = False
    segments: tuple = ()

    @property
    def input_shape(self):
        """Shape of one input image."""
        return tuple(self.model.input.shape)

    @property
    def output(self):
        """What the model does with its final activations (``"argmax"`` or ``"none"``)."""
        return self.model.output

    @property
    def core_steps(self):
        """The :class:`CoreStep` of the program, in order."""
        return [s for s in self.steps if isinstance(s, CoreStep)]

    @property
    def host_steps(self):
        """The :class:`HostStep` of the program, in order."""
        return [s for s in self.steps if isinstance(s, HostStep)]

    def runs_for(self, images):
        """Core runs a batch of ``images`` images takes."""
        return sum(len(run_chunks(s, images)) for s in self.core_steps)

    def costs(self, images=1):
        """One :class:`NodeCost` per node for a batch of ``images`` images."""
        return node_costs(self, images)

    def describe(self, images=1):
        """A table of the nodes: where each runs, its shapes and its costs for a batch of
        ``images`` images, with totals."""
        return describe_program(self, images)


def run_steps(program: Program, x, run_core):
    """Run ``program``'s steps on the batch ``x`` ``[B, *input_shape]`` (int64).

    Parameters
    ----------
    program : Program
    x : int64 array
    run_core : callable
        ``run_core(step, x, stats, shortcut=None)`` runs a :class:`CoreStep` on its input
        batch (and the batch of its shortcut, for a step with a fused residual add) and
        returns its output batch, counting its runs and counters into ``stats`` (a
        :class:`~mulfree.host.run_result.NodeStats`).

    Returns
    -------
    (int64 array, list of NodeStats)
        The last node's output batch, and one record per node: where it ran, its runs and
        counters (core), the elements and terms the host computed, its useful terms, the
        estimated cycles and the wall time.
    """
    images = int(x.shape[0])
    costs = {c.index: c for c in program.costs(images)}
    values = {-1: x}
    stats = {}
    for step in program.steps:
        cost = costs[step.index]
        stats[step.index] = NodeStats(
            step.index, step.kind, name=step.name, placement=step.placement,
            useful_terms=cost.useful_terms, host_elements=cost.host_elements,
            host_terms=cost.host_terms, estimated_cycles=cost.cycles,
            fused_into=getattr(step, "into", None))
    starts = {seg[0]: seg for seg in program.segments}
    pos = 0
    while pos < len(program.steps):
        if pos in starts:
            # A chained segment: its core steps chunk by chunk (``chain_images`` images, one
            # or stacked), the fused nodes between them pass their outputs on; tensors kept
            # on-chip and not sent are None here.
            seg = starts[pos]
            block = program.steps[pos:seg[-1] + 1]
            t0 = time.perf_counter()
            n = program.steps[pos].chain_images
            per_image = [_run_block(block, {j: (None if v is None else v[b:b + n])
                                            for j, v in values.items()},
                                    stats, run_core, min(n, images - b))
                         for b in range(0, images, n)]
            share = (time.perf_counter() - t0) / len(block)
            for step in block:
                outs = [o[step.index] for o in per_image]
                values[step.index] = None if outs[0] is None else np.concatenate(outs)
                stats[step.index].seconds = share
                _release(program, values, step)
            pos = seg[-1] + 1
            continue
        step = program.steps[pos]
        inputs = [values[j] for j in step.sources]
        t0 = time.perf_counter()
        values[step.index] = _run_step(step, inputs, stats[step.index], run_core)
        stats[step.index].seconds = time.perf_counter() - t0
        _release(program, values, step)
        pos += 1
    records = [stats[step.index] for step in program.steps]
    return values[len(program.model.layers) - 1], records        # the last node's: the model's


def _run_step(step, inputs, stats, run_core):
    if isinstance(step, CoreStep) and step.residual is not None:
        return run_core(step, inputs[0], stats, shortcut=inputs[1])
    if isinstance(step, CoreStep):
        return run_core(step, inputs[0], stats)
    return step.apply(*inputs)


def _run_block(block, values, stats, run_core, n=1):
    """``n`` images through a chained segment's steps; ``{index: output [n, ...] or None}``.
    An input the core's bank holds (None here) is given as ``n`` images of zeros."""
    values = dict(values)
    for step in block:
        inputs = [values[j] for j in step.sources]
        if isinstance(step, CoreStep) and inputs[0] is None:
            shape = (step.in_shape[0],) if step.kind == "linear" else tuple(step.in_shape)
            inputs[0] = np.zeros((n,) + shape, dtype=np.int64)
        values[step.index] = _run_step(step, inputs, stats[step.index], run_core)
    return {step.index: values[step.index] for step in block}


def _release(program, values, step):
    """Forget the tensors whose last reader ``step`` was."""
    for j in set(step.sources):
        if program.last_use.get(j) == step.index:
            values.pop(j, None)
