"""The simulated board: the runtime's backend on the core's Verilog under Verilator.

:class:`SimBackend` drives a :class:`mulfree.sim.sim_core.SimCore` (the generated Verilog
compiled by Verilator with a small C++ harness, loaded with ctypes) at the register and stream
level: a register access is one AXI4-Lite transaction, a run's packets go into the harness's
``s_axis`` queue at once, and the clock runs in C++ until the core raises ``irq`` — no Python
per cycle. It is what ``open_device("sim", …)`` and ``mulfree run --device sim`` use when no
board is attached: the runtime finds :func:`open_sim` through its backend table
(:data:`mulfree.host.runtime.BACKENDS`) and imports this module only then.

A simulated device belongs to the process that opened it, so it takes no lock.
"""

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from ..gen.cache import build_once, cache_root, generator_digest
from ..params.core_config import CoreConfig
from ..params.safe_io import check_output_dir
from ..host.compiler import core_from_manifest


__all__ = ["SimBackend", "SimBusError", "open_sim", "design_for", "default_cache_dir"]

#: Clock cycles the harness runs between two looks at the wall clock.
CHUNK_CYCLES = 50_000


class SimBusError(RuntimeError):
    """An AXI4-Lite access the simulated core answered with SLVERR."""


def default_cache_dir():
    """``$MULFREE_CACHE`` or ``~/.cache/mulfree``: where designs and simulators are kept."""
    return cache_root()


class SimBackend:
    """The runtime's backend on a :class:`~mulfree.sim.sim_core.SimCore`."""

    name = "sim"
    lock_path = None
    max_packet_bytes = None

    def __init__(self, core, manifest):
        self.core = core
        self.manifest = manifest
        self.beat_bytes = core.beat_bytes

    @property
    def cycles(self):
        """Clock cycles simulated since the core was created."""
        return self.core.cycles

    def read32(self, offset):
        """The register word at byte ``offset``; :class:`SimBusError` on SLVERR."""
        data, resp = self.core.axil_read(offset)
        if resp:
            raise SimBusError(f"reading offset 0x{offset:03x} answered SLVERR (no register "
                              f"there)")
        return data

    def write32(self, offset, value):
        """Write ``value`` to the register at byte ``offset``; :class:`SimBusError` on SLVERR."""
        resp = self.core.axil_write(offset, value)
        if resp:
            raise SimBusError(f"writing 0x{value:08x} to offset 0x{offset:03x} answered SLVERR "
                              f"(the write was ignored; ERROR.reg_code says why)")

    def transfer(self, packets, out_nbytes, timeout):
        """Queue every packet, accept ``out_nbytes`` of results, run until the core is done.

        Returns the result bytes received (fewer than ``out_nbytes`` if the core stopped with
        an error). Raises ``TimeoutError`` when the core is not done after ``timeout`` seconds
        of simulation.
        """
        bb = self.beat_bytes
        data = np.concatenate([np.asarray(p, dtype=np.uint8).reshape(-1, bb) for p in packets])
        last = np.zeros(len(data), dtype=bool)
        last[np.cumsum([len(np.asarray(p).reshape(-1, bb)) for p in packets]) - 1] = True
        self.core.push(data, last)
        want = out_nbytes // bb
        self.core.arm_sink(want)
        deadline = time.monotonic() + timeout
        chunks = []
        while True:
            self.core.run(CHUNK_CYCLES, until=("irq",))
            beats, _ = self.core.pop()
            chunks.append(beats)
            if self.core.irq:
                break
            if time.monotonic() > deadline:
                got = sum(len(c) for c in chunks)
                raise TimeoutError(f"after {timeout:g} s of simulation "
                                   f"{self.core.in_pending()} of {len(data)} input beats were "
                                   f"still queued and {got} of {want} result beats had come")
        beats, _ = self.core.pop()
        chunks.append(beats)
        return np.concatenate(chunks).reshape(-1) if chunks else np.zeros(0, np.uint8)

    def wait_done(self, timeout):
        """Run the clock until ``irq`` rises: True, or False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.core.irq:
            if time.monotonic() > deadline:
                return False
            self.core.run(CHUNK_CYCLES, until=("irq",))
        return True

    def abort(self):
        """Drop queued input beats and stop accepting results."""
        self.core.clear_input()
        self.core.disarm_sink()
        self.core.pop()

    def close(self):
        """Free the simulated core (idempotent)."""
        if self.core is not None:
            self.core.close()
            self.core = None


def design_for(cfg: CoreConfig, cache_dir=None, progress=None):
    """The folder holding ``cfg``'s generated core (written on first use, then reused).

    Keyed by the config's parameters and the generator's sources; written once
    (:func:`mulfree.gen.cache.build_once`: to a temporary folder, renamed when complete, one
    writer at a time), so a half written design is never taken for a finished one. Its
    manifest is checked again whenever it is loaded (a cache can be edited too).
    """
    from ..gen.core_manifest import write_core_design
    digest = hashlib.sha256(json.dumps(cfg.params(), sort_keys=True).encode())
    digest.update(generator_digest().encode())
    key = digest.hexdigest()[:16]
    root = Path(cache_dir or default_cache_dir()) / "designs"
    name, manifest = f"{cfg.top_name}-{key}", f"{cfg.top_name}.json"

    def generate(tmp, _modes):
        if progress:
            progress(f"generating {cfg.top_name} into {root / name}")
        write_core_design(cfg, tmp)

    final, _ = build_once(root, name, lambda path: (path / manifest).is_file(), generate)
    return final


def open_sim(manifest=None, *, build_dir=None, cache_dir=None, progress=None, jobs=2):
    """Build (once) and open the simulated core; return ``(SimBackend, manifest dict)``.

    Parameters
    ----------
    manifest : CoreConfig, dict, path or None
        A :class:`CoreConfig` (generated into the cache), or a core's manifest (a dict, a
        ``.json`` file or its design folder: the Verilog next to it is simulated). ``None``:
        the default ``CoreConfig()``.
    build_dir : path or None
        Where the simulator is compiled and cached (default ``<cache>/sim``).
    progress : callable or None
        Called with a line of text when a long step (generation, compilation) starts.
    """
    from .board_build import build_sim_core
    from .sim_core import SimCore
    from ..host.manifest_check import load_manifest, verilog_path
    if build_dir is not None:
        check_output_dir(build_dir, "build_dir")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or not 1 <= jobs <= 256:
        raise ValueError(f"jobs must be an integer in [1, 256], not {jobs!r}")
    cache = Path(cache_dir or default_cache_dir())
    if manifest is None or isinstance(manifest, CoreConfig):
        cfg = manifest or CoreConfig()
        design = design_for(cfg, cache, progress)
        path = design / f"{cfg.top_name}.json"
    else:
        # Checked before anything is generated or compiled: a manifest that disagrees with
        # its parameters, or names a Verilog file outside its folder, is refused here.
        doc = load_manifest(manifest, param="manifest")
        path = Path(doc["_path"]) if "_path" in doc else None
        if path is None or not verilog_path(doc).is_file():
            # A manifest without its Verilog: generate the same core again.
            cfg = core_from_manifest(doc)
            path = design_for(cfg, cache, progress) / f"{cfg.top_name}.json"
    doc = load_manifest(path, param="manifest")
    lib = build_sim_core(path, build_dir=build_dir or cache / "sim", jobs=jobs,
                         progress=progress)
    core = SimCore(lib, doc)
    core.reset()
    return SimBackend(core, doc), doc
