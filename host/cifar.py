"""CIFAR-10 from its *binary* distribution (``cifar-10-batches-bin``), read as untrusted files.

The binary version (not the Python one: nothing here unpickles) holds ``data_batch_1.bin`` ..
``data_batch_5.bin`` (training, 10,000 images each) and ``test_batch.bin`` (10,000). Each file
is a sequence of 3073-byte records: one label byte (0..9), then 3072 pixel bytes, the red
plane, the green plane and the blue plane, each 32x32 row-major.

Images come out as float32 ``[N, 3, 32, 32]`` with ``x = pixel * CIFAR_SCALE``, ``CIFAR_SCALE =
1/256``: a power of two, so every input is exact on a fixed-point grid of 8 or more fraction
bits (and the values lie in ``[0, 255/256]``). No mean or deviation is subtracted; a model
that wants it does it in its first layer.

The folder is checked as every untrusted input is (``DEVELOPERS.md``): each file must resolve
inside it (:func:`mulfree.params.safe_io.inside`, no symbolic link out), be a regular file
whose size is a positive whole number of records, at most :data:`MAX_RECORDS` of them, and
every label read must be 0..9. A failure is a :class:`~mulfree.params.safe_io.FileCheckError`
(a ``ValueError``) of one line naming the file, the value and the rule. NumPy only.
"""

import os
import stat
from pathlib import Path

import numpy as np

from ..params.safe_io import FileCheckError, inside


__all__ = ["CIFAR_SCALE", "CIFAR_CLASSES", "RECORD_BYTES", "MAX_RECORDS", "CIFAR_FILES",
           "load_cifar10"]


#: ``x = pixel * CIFAR_SCALE``: a power of two, exact on a fixed-point grid.
CIFAR_SCALE = 1 / 256

#: The ten labels' names, in label order.
CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                 "ship", "truck")

#: One record: a label byte and 3 x 32 x 32 pixel bytes.
RECORD_BYTES = 1 + 3 * 32 * 32

#: Most records a file may hold (the distribution's files hold exactly this many).
MAX_RECORDS = 10_000

#: The files of each split, in order.
CIFAR_FILES = {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
               "test": ("test_batch.bin",)}

#: The folder the archive unpacks to; accepted inside ``folder`` too.
_SUBFOLDER = "cifar-10-batches-bin"


def _open_record_file(folder, name, param):
    """``(path, open binary file, number of records)``, everything checked."""
    path = inside(folder, name, param)
    shown = repr(str(path))
    try:
        # Non-blocking: a FIFO planted in the folder opens at once (and is refused below)
        # instead of waiting for a writer; no symbolic link is followed after inside().
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_NOFOLLOW", 0))
        f = os.fdopen(fd, "rb")
    except FileNotFoundError:
        raise FileCheckError(param, f"{param} {str(folder)!r} has no file {name!r} (CIFAR-10's "
                                    f"binary distribution, {_SUBFOLDER}, holds "
                                    f"{', '.join(CIFAR_FILES['train'] + CIFAR_FILES['test'])})"
                             ) from None
    except OSError as exc:
        raise FileCheckError(param, f"{param} file {shown} cannot be read: "
                                    f"{exc.strerror or type(exc).__name__}") from None
    try:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise FileCheckError(param, f"{param} file {shown} is not a regular file")
        size = info.st_size
        if size == 0 or size % RECORD_BYTES:
            raise FileCheckError(param, f"{param} file {shown} is {size:,} bytes, not a positive "
                                        f"whole number of {RECORD_BYTES}-byte records (1 label "
                                        f"byte + 3072 pixel bytes)")
        records = size // RECORD_BYTES
        if records > MAX_RECORDS:
            raise FileCheckError(param, f"{param} file {shown} holds {records:,} records, more "
                                        f"than the {MAX_RECORDS:,} of a CIFAR-10 batch file")
    except BaseException:
        f.close()
        raise
    return path, f, records


def load_cifar10(folder, split="test", limit=None, *, param="folder"):
    """CIFAR-10's ``split`` from the binary files in ``folder``.

    Parameters
    ----------
    folder : str or path
        The folder holding ``test_batch.bin`` and ``data_batch_1.bin`` ..
        ``data_batch_5.bin`` (``cifar-10-batches-bin``), or the folder holding that one.
    split : ``"test"`` or ``"train"``
        ``test_batch.bin`` (10,000 images) or the five training files in order (50,000).
    limit : int, optional
        Read only the first ``limit`` images (default: all); later files are not read, but
        every file of the split must be there and well formed.
    param : str
        The parameter named in messages (an API argument or a command-line option).

    Returns
    -------
    x : ndarray of float32, ``[N, 3, 32, 32]``
        ``pixel * CIFAR_SCALE`` (``pixel / 256``), channels R, G, B.
    y : ndarray of int64, ``[N]``
        Labels 0..9 (:data:`CIFAR_CLASSES`).

    Raises
    ------
    FileCheckError
        A ``ValueError`` of one line: a missing or unreadable file, one outside the folder, a
        size that is not a whole number of records, a label outside 0..9.
    ValueError
        A bad ``split`` or ``limit``.
    """
    if split not in CIFAR_FILES:
        raise ValueError(f"split must be train or test, not {split!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise ValueError(f"limit must be None or a positive integer, not {limit!r}")
    if folder is None or not str(folder):
        raise FileCheckError(param, f"{param} must name the folder of CIFAR-10's binary files "
                                    f"({_SUBFOLDER}), not {folder!r}")
    base = Path(folder)
    if not base.is_dir():
        raise FileCheckError(param, f"{param} {str(folder)!r} is not a folder (it must hold "
                                    f"CIFAR-10's binary files, {_SUBFOLDER})")
    if (base / _SUBFOLDER).is_dir():
        base = inside(base, _SUBFOLDER, param)
    opened = []
    try:
        for name in CIFAR_FILES[split]:
            opened.append(_open_record_file(base, name, param))
        xs, ys = [], []
        left = sum(n for _, _, n in opened) if limit is None else limit
        for path, f, records in opened:
            if left == 0:
                break
            take = min(records, left)
            data = f.read(take * RECORD_BYTES)
            if len(data) != take * RECORD_BYTES:
                raise FileCheckError(param, f"{param} file {str(path)!r} ended after "
                                            f"{len(data):,} of {take * RECORD_BYTES:,} bytes")
            rows = np.frombuffer(data, np.uint8).reshape(take, RECORD_BYTES)
            bad = np.flatnonzero(rows[:, 0] > 9)
            if bad.size:
                raise FileCheckError(param, f"{param} file {str(path)!r}: record {bad[0]} "
                                            f"(from 0) has label {rows[bad[0], 0]}; CIFAR-10's "
                                            f"labels are 0..9")
            ys.append(rows[:, 0].astype(np.int64))
            xs.append((rows[:, 1:].astype(np.float32) * np.float32(CIFAR_SCALE))
                      .reshape(take, 3, 32, 32))
            left -= take
    finally:
        for _, f, _ in opened:
            f.close()
    return np.concatenate(xs), np.concatenate(ys)
