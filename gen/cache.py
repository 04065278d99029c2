"""Where mulfree keeps what it builds, and the key that says when a build is stale.

Generated cores, simulator libraries and synthesis results are cached under one root,
``$MULFREE_CACHE``, else ``$XDG_CACHE_HOME/mulfree``, else ``~/.cache/mulfree`` (``designs/``,
``sim/``, ``synth/``). Caches keyed
on a core's parameters also take :func:`generator_digest`, so a new generator makes new
entries.

Entries are the user's alone (folders ``0700``, files ``0600``: a build log holds the Verilog's
paths) unless the folder they go into is group-writable: a cache a team shares (``chgrp team
DIR; chmod 2770 DIR``: setgid, so entries take the folder's group) gives the group what the
owner has (:func:`entry_modes`).
"""

import fcntl
import hashlib
import os
import shutil
import tempfile
from pathlib import Path


__all__ = ["cache_root", "generator_digest", "entry_modes", "make_folder", "open_lock",
           "build_once", "GENERATOR_FILES"]

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


def entry_modes(folder):
    """``(folder mode, file mode)`` for what is created in ``folder`` (a cache's subfolder):
    ``0770``/``0660`` when ``folder`` (or, before it exists, the nearest folder above it) is
    group-writable, else ``0700``/``0600``. Created entries are ``chmod``-ed to them, not
    left to the umask (``tempfile.mkdtemp`` makes ``0700`` whatever the umask)."""
    p = Path(folder)
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        shared = bool(p.stat().st_mode & 0o020)
    except OSError:
        shared = False
    return (0o770, 0o660) if shared else (0o700, 0o600)


def make_folder(folder, mode):
    """Create ``folder`` (and its parents) if missing, with ``mode`` exactly (not the umask's
    cut of it); an existing folder is left as it is."""
    folder = Path(folder)
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(folder, mode)
        except OSError:
            pass                        # made by someone else meanwhile: theirs to set


def open_lock(path, mode):
    """A descriptor of the lock file ``path`` for ``flock`` (created ``mode`` if missing,
    never through a symbolic link, nothing truncated); read-only when another user's lock
    cannot be opened for writing (``flock`` needs no write access)."""
    flags = os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, os.O_RDWR | flags, mode)
    except PermissionError:
        return os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_uid == os.getuid():
            os.fchmod(fd, mode)
    except OSError:
        pass
    return fd


def build_once(root, name, done, build):
    """The cache entry ``root/name``: an existing one when ``done(path)`` says it is finished,
    else built by ``build(tmp, (folder mode, file mode))`` into a temporary folder of ``root``
    and renamed to ``name`` once ``build`` returns. Returns ``(path, built)``.

    One builder per entry at a time (pytest-xdist workers, two shells): the others wait on a
    lock (``root/.<name>.lock``), then find the finished entry; the OS drops the lock of a
    killed builder. A half-built entry never has the final name; an unfinished leftover under
    it is replaced. ``root`` is created with :func:`entry_modes`; when ``build`` raises, its
    temporary folder is removed and the exception passes on.
    """
    root = Path(root)
    final = root / name
    if done(final):
        return final, False
    modes = entry_modes(root)       # the user's alone, or the group's in a shared cache
    make_folder(root, modes[0])
    fd = open_lock(root / f".{name}.lock", modes[1])
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if done(final):
            return final, False
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
        try:
            build(tmp, modes)
            if os.path.lexists(final):
                if final.is_dir() and not final.is_symlink():
                    shutil.rmtree(final)
                else:
                    final.unlink()
            os.chmod(tmp, modes[0])
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        os.close(fd)
    return final, True
