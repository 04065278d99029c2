"""What a batch on a device reports: per-node records and the figures derived from them.

:meth:`mulfree.host.device.Device.run` returns a :class:`RunResult` holding the model's final
activations, its predictions and one :class:`NodeStats` per node of the program: for a core
node the deltas of the core's 64-bit performance counters (``docs/interface.md``, "64-bit
counters"), for every node its useful terms, the elements and terms the host computed, the
cycle model's estimate and the wall time. :attr:`RunResult.steps` keeps the core nodes alone
(a :class:`NodeStats` is a :class:`StepStats`), as before graphs.
"""

from dataclasses import dataclass, field, fields

import numpy as np


__all__ = ["StepStats", "NodeStats", "RunResult"]


@dataclass
class StepStats:
    """Counters of one core step over a batch (deltas of the core's 64-bit counters).

    Attributes
    ----------
    index : int
        The step's index in the program (its node's index in the model).
    kind : str
        The step's node kind (``"conv2d"``, ``"linear"``, ...).
    runs : int
        Core runs the step took over the batch.
    busy_cycles, stall_in_cycles, stall_out_cycles, terms : int
        Deltas of ``BUSY_CYCLES``, ``STALL_IN_CYCLES``, ``STALL_OUT_CYCLES`` and ``TERMS``.
    seconds : float
        Wall time of the step on this host.
    """

    index: int
    kind: str
    runs: int = 0
    busy_cycles: int = 0
    stall_in_cycles: int = 0
    stall_out_cycles: int = 0
    terms: int = 0
    seconds: float = 0.0


@dataclass
class NodeStats(StepStats):
    """What one node of the program did over a batch: :class:`StepStats` and more.

    Attributes
    ----------
    name : str
        The node's name.
    placement : str
        ``"core"`` or ``"host"`` (a host node has no runs and no counters).
    useful_terms : int
        ``B x output elements x K`` for a weight node (real channels and pixels), else 0.
    host_elements : int
        Output elements the host computed (host nodes), else 0.
    host_terms : int
        Terms the host computed (a weight node on the host), else 0.
    estimated_cycles : int
        Busy cycles the cycle model expected (:mod:`mulfree.host.cycle_model`); 0 on the host.
    fused_into : int or None
        For a node the core computes inside another node's runs (a residual add, a clamp):
        that node's index; its runs and counters are that node's.
    bytes_in, bytes_out : int
        Bytes its runs sent to the core (every packet, headers included) and received.
    """

    name: str = ""
    placement: str = "core"
    useful_terms: int = 0
    host_elements: int = 0
    host_terms: int = 0
    estimated_cycles: int = 0
    fused_into: int | None = None
    bytes_in: int = 0
    bytes_out: int = 0


_STEP_FIELDS = tuple(f.name for f in fields(StepStats))


def _ratio(num, den):
    return num / den if den else 0.0


@dataclass
class RunResult:
    """What :meth:`mulfree.host.device.Device.run` returns.

    Attributes
    ----------
    outputs : int64 array ``[B, ...]``
        The model's final integer activations (the last node's outputs).
    predictions : int64 array ``[B]`` or None
        ``argmax`` of ``outputs`` for a model whose output is ``argmax``.
    images : int
        Inputs in the batch (``B``).
    steps : list of StepStats
        Per core step: runs and counter deltas.
    seconds : float
        Wall time of the batch on this host (packing, transfers, waiting, the host's nodes).
    sim_cycles : int or None
        Clock cycles a simulator ran (including idle cycles between runs), or None on a board.
    pes : int
        ``rows * cols`` of the core.
    nodes : list of NodeStats
        Per node of the program, core and host, in order.
    """

    outputs: np.ndarray
    predictions: np.ndarray | None
    images: int
    steps: list = field(default_factory=list)
    seconds: float = 0.0
    sim_cycles: int | None = None
    pes: int = 1
    nodes: list = field(default_factory=list)

    def _total(self, name):
        return sum(getattr(s, name) for s in self.steps)

    @property
    def busy_cycles(self):
        """Core busy cycles of the batch (``BUSY_CYCLES`` summed over the steps)."""
        return self._total("busy_cycles")

    @property
    def terms(self):
        """Terms the PEs computed over the batch (``TERMS`` summed over the steps)."""
        return self._total("terms")

    @property
    def useful_terms(self):
        """Useful terms of the core's nodes (``B x output elements x K`` summed)."""
        return sum(n.useful_terms for n in self.nodes if n.placement == "core")

    @property
    def host_elements(self):
        """Output elements the host computed over the batch."""
        return sum(n.host_elements for n in self.nodes)

    @property
    def host_terms(self):
        """Terms the host computed over the batch (weight nodes on the host)."""
        return sum(n.host_terms for n in self.nodes)

    @property
    def estimated_cycles(self):
        """Busy cycles the cycle model expected for the batch."""
        return sum(n.estimated_cycles for n in self.nodes)

    @property
    def cycles_per_image(self):
        """Core busy cycles per image (``BUSY_CYCLES`` over the batch / images)."""
        return self.busy_cycles / self.images if self.images else 0.0

    @property
    def images_per_second(self):
        """Images per wall-clock second on this host (simulated or real)."""
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def utilization(self):
        """``TERMS / (BUSY_CYCLES * rows * cols)``: the share of PE-cycles that computed a term
        (including the lanes of channels beyond a layer's, which compute on zeros)."""
        return _ratio(self.terms, self.busy_cycles * self.pes)

    @property
    def useful_utilization(self):
        """``useful terms / (BUSY_CYCLES * rows * cols)``: the share of PE-cycles that computed
        a term of the model (real channels and pixels only)."""
        return _ratio(self.useful_terms, self.busy_cycles * self.pes)

    def images_per_second_at(self, clock_hz):
        """Images per second of the core alone at ``clock_hz`` (busy cycles only)."""
        return clock_hz / self.cycles_per_image if self.cycles_per_image else 0.0

    def node_summary(self, node):
        """A JSON-ready dict of one :class:`NodeStats`, with its utilizations."""
        doc = {k: getattr(node, k) for k in ("index", "name", "kind", "placement", "runs",
                                             "busy_cycles", "estimated_cycles",
                                             "stall_in_cycles", "stall_out_cycles", "terms",
                                             "useful_terms", "host_elements", "host_terms",
                                             "fused_into", "bytes_in", "bytes_out")}
        busy = node.busy_cycles * self.pes
        doc["pe_utilization"] = round(_ratio(node.terms, busy), 4)
        doc["useful_utilization"] = round(_ratio(node.useful_terms, busy), 4)
        doc["seconds"] = round(node.seconds, 4)
        return doc

    def summary(self):
        """A JSON-ready dict of the figures (no arrays)."""
        doc = {"images": self.images, "seconds": round(self.seconds, 4),
               "images_per_second": round(self.images_per_second, 2),
               "busy_cycles": self.busy_cycles, "terms": self.terms,
               "useful_terms": self.useful_terms, "estimated_cycles": self.estimated_cycles,
               "host_elements": self.host_elements, "host_terms": self.host_terms,
               "cycles_per_image": round(self.cycles_per_image, 1),
               "pe_utilization": round(self.utilization, 4),
               "useful_utilization": round(self.useful_utilization, 4),
               "images_per_second_at_100mhz": round(self.images_per_second_at(100e6), 1),
               "images_per_second_at_100mhz_clock": "100 MHz assumed, not measured",
               "steps": [{k: getattr(s, k) for k in _STEP_FIELDS}
                         | {"seconds": round(s.seconds, 4)} for s in self.steps],
               "nodes": [self.node_summary(n) for n in self.nodes]}
        if self.sim_cycles is not None:
            doc["sim_cycles"] = self.sim_cycles
            doc["sim_cycles_per_second"] = round(self.sim_cycles / self.seconds, 1) \
                if self.seconds else 0.0
        return doc
