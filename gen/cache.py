"""Where mulfree keeps what it builds, and the key that says when a build is stale.

Generated cores, simulator libraries and synthesis results are cached under one root,
``$MULFREE_CACHE``, else ``$XDG_CACHE_HOME/mulfree``, else ``~/.cache/mulfree`` (``designs/``,
``sim/``, ``synth/``). Caches keyed
on a core's parameters also take :func:`generator_digest`, so a new generator makes new
entries.
"""

import hashlib
import os
from pathlib import Path


__all__ = ["cache_root", "generator_digest", "GENERATOR_FILES"]

#: The ``gen/`` modules a core's RTL depends on (with every module of ``params/`` and ``rtl/``).
GENERATOR_FILES = ("core_manifest.py", "emit.py", "manifest.py", "block_emit.py")


def cache_root():
    """``$MULFREE_CACHE``, else ``$XDG_CACHE_HOME/mulfree`` (when set to an absolute path, as
    the XDG base directory specification says), else ``~/.cache/mulfree``: a folder that can
    be written.

    Raises
    ------
    mulfree.params.safe_io.FileCheckError
        If the folder exists and is not one, or cannot be created or written (one line naming
        ``MULFREE_CACHE``); checked here, before anything is generated or built into it.
    """
    from ..params.safe_io import check_output_dir
    if os.environ.get("MULFREE_CACHE"):
        return check_output_dir(os.environ["MULFREE_CACHE"], "MULFREE_CACHE")
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if os.path.isabs(xdg):
        return check_output_dir(Path(xdg) / "mulfree",
                                "$XDG_CACHE_HOME/mulfree (set MULFREE_CACHE to choose another)")
    return check_output_dir(Path.home() / ".cache" / "mulfree",
                            "the cache folder (set MULFREE_CACHE to choose another)")


def generator_digest():
    """A hex digest of the sources the generated RTL comes from: ``params/*.py``, ``rtl/*.py``
    and :data:`GENERATOR_FILES`."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for folder in ("params", "rtl"):
        for path in sorted((root / folder).glob("*.py")):
            digest.update(f"{folder}/{path.name}".encode() + path.read_bytes())
    for name in GENERATOR_FILES:
        path = root / "gen" / name
        if path.exists():
            digest.update(name.encode() + path.read_bytes())
    return digest.hexdigest()
