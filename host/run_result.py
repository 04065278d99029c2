"""What a batch on a device reports: per-step counters and the figures derived from them.

:meth:`mulfree.host.device.Device.run` returns a :class:`RunResult` holding the model's final
activations, its predictions and one :class:`StepStats` per core step (deltas of the core's
64-bit performance counters, ``docs/interface.md``, "64-bit counters").
"""

from dataclasses import dataclass, field

import numpy as np


__all__ = ["StepStats", "RunResult"]


@dataclass
class StepStats:
    """Counters of one step over a batch (deltas of the core's 64-bit counters).

    Attributes
    ----------
    index : int
        The step's index in the program.
    kind : str
        The step's layer kind (``"conv2d"``, ``"linear"``, ...).
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
class RunResult:
    """What :meth:`mulfree.host.device.Device.run` returns.

    Attributes
    ----------
    outputs : int64 array ``[B, ...]``
        The model's final integer activations (the last layer's outputs).
    predictions : int64 array ``[B]`` or None
        ``argmax`` of ``outputs`` for a model whose output is ``argmax``.
    images : int
        Inputs in the batch (``B``).
    steps : list of StepStats
        Per core step: runs and counter deltas.
    seconds : float
        Wall time of the batch on this host (packing, transfers, waiting, the host's layers).
    sim_cycles : int or None
        Clock cycles a simulator ran (including idle cycles between runs), or None on a board.
    pes : int
        ``rows * cols`` of the core.
    """

    outputs: np.ndarray
    predictions: np.ndarray | None
    images: int
    steps: list = field(default_factory=list)
    seconds: float = 0.0
    sim_cycles: int | None = None
    pes: int = 1

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
    def cycles_per_image(self):
        """Core busy cycles per image (``BUSY_CYCLES`` over the batch / images)."""
        return self.busy_cycles / self.images if self.images else 0.0

    @property
    def images_per_second(self):
        """Images per wall-clock second on this host (simulated or real)."""
        return self.images / self.seconds if self.seconds else 0.0

    @property
    def utilization(self):
        """``TERMS / (BUSY_CYCLES * rows * cols)``: the share of PE-cycles that computed."""
        busy = self.busy_cycles
        return self.terms / (busy * self.pes) if busy else 0.0

    def images_per_second_at(self, clock_hz):
        """Images per second of the core alone at ``clock_hz`` (busy cycles only)."""
        return clock_hz / self.cycles_per_image if self.cycles_per_image else 0.0

    def summary(self):
        """A JSON-ready dict of the figures (no arrays)."""
        doc = {"images": self.images, "seconds": round(self.seconds, 4),
               "images_per_second": round(self.images_per_second, 2),
               "busy_cycles": self.busy_cycles, "terms": self.terms,
               "cycles_per_image": round(self.cycles_per_image, 1),
               "pe_utilization": round(self.utilization, 4),
               "images_per_second_at_100mhz": round(self.images_per_second_at(100e6), 1),
               "steps": [vars(s) | {"seconds": round(s.seconds, 4)} for s in self.steps]}
        if self.sim_cycles is not None:
            doc["sim_cycles"] = self.sim_cycles
            doc["sim_cycles_per_second"] = round(self.sim_cycles / self.seconds, 1) \
                if self.seconds else 0.0
        return doc
