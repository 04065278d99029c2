"""The exclusive lock a device's users take, safe in a folder others can write to.

The lock file's path is predictable (``/run/lock/mulfree-<device>.lock``), and ``/run/lock``
or the temporary folder are writable by every user, so another user may plant a symbolic link
or a file of their own there before us. :class:`DeviceLock` therefore:

* refuses a lock folder that is group- or world-writable without the sticky bit, or owned by
  someone other than this user or root, and creates a missing one ``0700``;
* opens the file with ``O_NOFOLLOW | O_CLOEXEC`` (a symbolic link is refused, never followed)
  and refuses anything but a regular file with one link owned by this user;
* writes (truncates) nothing before it holds the ``flock`` and has checked that the path still
  names the file it locked, and removes the file again on release, so no stale file is left
  for the next user.
"""

import errno
import fcntl
import os
import stat
from pathlib import Path

from .device_errors import DeviceBusy, DeviceError


__all__ = ["DeviceLock", "check_lock_dir"]

#: Attempts to lock when the file is replaced between our open and our flock.
_ATTEMPTS = 5


def check_lock_dir(folder):
    """Create ``folder`` (``0700``) if missing; refuse it unless only trusted users can write.

    Raises
    ------
    DeviceError
        If it is not a folder, is owned by another user (not root), or is group- or
        world-writable without the sticky bit.
    """
    folder = Path(folder)
    try:
        folder.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    except OSError as exc:
        raise DeviceError(f"the lock folder {str(folder)!r} cannot be created: "
                          f"{exc.strerror or exc}") from None
    try:
        st = os.stat(folder)
    except OSError as exc:
        raise DeviceError(f"the lock folder {str(folder)!r} cannot be used: "
                          f"{exc.strerror or exc}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise DeviceError(f"the lock folder {str(folder)!r} is not a folder")
    if st.st_uid not in (os.geteuid(), 0):
        raise DeviceError(f"the lock folder {str(folder)!r} belongs to uid {st.st_uid}, not to "
                          f"this user or root; refusing to keep a lock file there")
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
        raise DeviceError(f"the lock folder {str(folder)!r} is writable by other users without "
                          f"the sticky bit (mode {stat.S_IMODE(st.st_mode):04o}); refusing to "
                          f"keep a lock file there")
    return folder


class DeviceLock:
    """An exclusive, non-blocking ``flock`` on ``path``, released on :meth:`release`.

    The file holds the owner's PID, so the error a second process gets names it.

    Raises
    ------
    DeviceBusy
        If another process holds the lock.
    DeviceError
        If the folder or the file at ``path`` cannot be trusted (see the module docstring).
    """

    def __init__(self, path, what="the device"):
        self._fd = None
        self.path = Path(path)
        if not str(path) or "\0" in str(path):
            raise DeviceError(f"the lock path must be a file path, not {str(path)!r}")
        check_lock_dir(self.path.parent)
        for _ in range(_ATTEMPTS):
            fd = self._open(what)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                owner = _read_pid(fd)
                os.close(fd)
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    raise DeviceBusy(f"{what} is in use by another process (pid {owner}; lock "
                                     f"{self.path}); wait for it to finish or stop it") from None
                raise DeviceError(f"cannot lock {self.path}: {exc.strerror or exc}") from None
            if self._still_named(fd):
                break
            # The file was removed or replaced between open and flock (its holder released
            # it): lock the one the path names now.
            os.close(fd)
        else:
            raise DeviceError(f"the lock file {self.path} keeps being replaced; is another "
                              f"program removing it?")
        self._fd = fd
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def _open(self, what):
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise DeviceError(f"the lock file {self.path} is a symbolic link; refusing to "
                                  f"follow it (remove it)") from None
            if exc.errno in (errno.EACCES, errno.EPERM):
                # Someone else's file (which protected_regular also forbids us to open for
                # writing): busy if they hold it, else a stale file we may not touch.
                self._foreign(what)
            raise DeviceError(f"cannot open the lock file {self.path}: "
                              f"{exc.strerror or exc}") from None
        try:
            self._check_file(fd, what)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _check_file(self, fd, what):
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DeviceError(f"the lock file {self.path} is not a regular file; refusing to "
                              f"use it")
        if st.st_uid != os.geteuid():
            self._foreign(what, fd)
        if st.st_nlink != 1:
            raise DeviceError(f"the lock file {self.path} has {st.st_nlink} hard links; "
                              f"refusing to use it (remove it)")

    def _foreign(self, what, fd=None):
        """Raise for a lock file owned by another user: busy if it is held, else stale."""
        own = fd is None
        if own:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as exc:
                raise DeviceError(f"cannot open the lock file {self.path}: "
                                  f"{exc.strerror or exc}") from None
        try:
            st = os.fstat(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
                held = False
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                held = True
            if held and stat.S_ISREG(st.st_mode):
                raise DeviceBusy(f"{what} is in use by another process (pid {_read_pid(fd)}, "
                                 f"uid {st.st_uid}; lock {self.path}); wait for it to finish "
                                 f"or stop it")
            raise DeviceError(f"the lock file {self.path} belongs to uid {st.st_uid}, not to "
                              f"this user, and nobody holds it; refusing to use it (remove it "
                              f"if no one uses the device)")
        finally:
            if own:
                os.close(fd)

    def _still_named(self, fd):
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (st.st_dev, st.st_ino) == (mine.st_dev, mine.st_ino)

    def release(self):
        """Remove the lock file (if it is still ours) and unlock (idempotent)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._still_named(fd):
                os.unlink(self.path)
        except OSError:
            pass                        # the lock is released with the descriptor anyway
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


def _read_pid(fd):
    try:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    except OSError:
        return "?"
    return text if text.isdigit() else "?"
