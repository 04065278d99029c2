"""Data sets the demo and ``mulfree run --dataset`` use (NumPy and scikit-learn, no torch).

* ``"digits"``: scikit-learn's 8x8 digits, ``[N, 1, 8, 8]``, ``x = pixel / 16``.
* ``"digits16"``, ``"digits32x3"``: the same images enlarged for residual networks, ``[N, 1,
  16, 16]`` and ``[N, 3, 32, 32]`` (:func:`digits_split` ``size`` and ``channels``): each pixel
  repeated (nearest neighbour, exact: the values stay ``k/16``), the plane repeated on three
  channels.
* ``"cifar10"``: CIFAR-10's binary distribution in a folder the caller names
  (:func:`mulfree.host.cifar.load_cifar10`: ``[N, 3, 32, 32]``, ``x = pixel / 256``, every file
  checked as untrusted).

The second half reads the input files of ``mulfree run`` (``.npy`` / ``.npz``), checked before
anything is allocated.
"""

import math
import os
from pathlib import Path

import numpy as np


__all__ = ["DIGITS_SCALE", "DIGITS_SIZES", "DATASETS", "digits_split", "load_dataset",
           "MAX_ARRAY_BYTES", "InputFileError", "read_array", "open_inputs"]


#: Pixels of the digits data are integers 0..16; ``x = pixel * DIGITS_SCALE`` lies in [0, 1].
#: A power of two, so every input is exact on a fixed-point grid of 4 or more fraction bits
#: (8-bit activations with scale 2^-6 hold all 17 values exactly).
DIGITS_SCALE = 1 / 16

#: Sides :func:`digits_split` makes of the 8x8 digits (by repeating each pixel).
DIGITS_SIZES = (8, 16, 32)

#: Names ``load_dataset`` knows.
DATASETS = ("digits", "digits16", "digits32x3", "cifar10")

#: ``load_dataset``'s digits variants: ``(size, channels)`` of :func:`digits_split`.
_DIGITS_FORMS = {"digits": (8, 1), "digits16": (16, 1), "digits32x3": (32, 3)}


def digits_split(seed=0, test_size=0.2, size=8, channels=1):
    """The digits data set, split into stratified training and test sets.

    Parameters
    ----------
    seed : int
        Seed of the split (``train_test_split(random_state=seed)``).
    test_size : float
        Fraction held out for testing; 0.2 gives 1437 training and 360 test images.
    size : 8, 16 or 32
        The images' side: each 8x8 pixel becomes a ``size/8`` square of copies (nearest
        neighbour by ``np.repeat``, exact: every value stays a multiple of ``DIGITS_SCALE``).
        The split does not depend on it.
    channels : 1 or 3
        The plane repeated on ``channels`` channels (3 for networks built for RGB).

    Returns
    -------
    dict
        ``x_train``, ``x_test``: float32 arrays ``(N, channels, size, size)`` with values
        ``pixel * DIGITS_SCALE`` in [0, 1] (flatten them for an MLP; the demo MLP starts with
        ``nn.Flatten`` and takes the same images); ``y_train``, ``y_test``: int64 labels.
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) \
            or size not in DIGITS_SIZES:
        raise ValueError(f"size must be 8, 16 or 32, not {size!r}")
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)) \
            or channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels!r}")
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise ImportError("the digits data set needs scikit-learn: "
                          "pip install 'mulfree[sim]'") from None
    digits = load_digits()
    x = (digits.images * DIGITS_SCALE).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y)
    return {"x_train": _enlarge(x_train, size, channels), "y_train": y_train,
            "x_test": _enlarge(x_test, size, channels), "y_test": y_test}


def _enlarge(x, size, channels):
    """``[N, 1, 8, 8]`` to ``[N, channels, size, size]`` by repeating pixels and the plane."""
    factor = int(size) // 8
    if factor > 1:
        x = np.repeat(np.repeat(x, factor, axis=2), factor, axis=3)
    if channels > 1:
        x = np.repeat(x, int(channels), axis=1)
    return np.ascontiguousarray(x)


def load_dataset(name, split="test", folder=None, *, limit=None):
    """``(x, y)`` of a named data set's split: float32 images and int64 labels.

    Parameters
    ----------
    name : str
        One of :data:`DATASETS`.
    split : ``"test"`` or ``"train"``
    folder : str or path, optional
        ``"cifar10"`` only, and required for it: the folder of CIFAR-10's binary files
        (``cifar-10-batches-bin``), read by :func:`mulfree.host.cifar.load_cifar10`.
    limit : int, optional
        Only the first ``limit`` images (CIFAR-10 then reads no more).

    Returns
    -------
    x : ndarray of float32 ``[N, C, H, W]``
    y : ndarray of int64 ``[N]``
    """
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, not {name!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, not {split!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int)
                              or limit < 1):
        raise ValueError(f"limit must be None or a positive integer, not {limit!r}")
    if name == "cifar10":
        if folder is None:
            raise ValueError("folder must name the folder of CIFAR-10's binary files "
                             "(cifar-10-batches-bin) for dataset 'cifar10', not None")
        from .cifar import load_cifar10
        return load_cifar10(folder, split, limit)
    if folder is not None:
        raise ValueError(f"folder is for dataset 'cifar10' only, not for {name!r} "
                         f"(given {str(folder)!r})")
    data = digits_split(size=_DIGITS_FORMS[name][0], channels=_DIGITS_FORMS[name][1])
    x, y = data[f"x_{split}"], data[f"y_{split}"]
    return (x, y) if limit is None else (x[:limit], y[:limit])


# Input files of ``mulfree run`` ---------------------------------------------------------------

#: Largest array read from an input file (a ``.npy`` file or one member of a ``.npz``); the
#: digits test split is 180 KiB as float64. ``--limit`` reads only the images it keeps.
MAX_ARRAY_BYTES = 1 << 30

#: Array kinds an input file may hold: signed and unsigned integers and real floats.
_NUMBER_KINDS = {"i": "integer", "u": "integer", "f": "float"}


class InputFileError(ValueError):
    """An input file that cannot be used; the message is one line naming the option.

    ``param`` is the option (``"--input"``, ``"--labels"``).
    """

    def __init__(self, param, message):
        super().__init__(message)
        self.param = param


def _header(stream, param, shown):
    """``(shape, fortran_order, dtype)`` of the ``.npy`` stream, positioned after the header.

    The header is parsed by NumPy's own reader but nothing it says is trusted yet: the caller
    checks the shape against the bytes really there before any array is allocated.
    """
    try:
        version = np.lib.format.read_magic(stream)
    except (ValueError, OSError, EOFError) as exc:
        raise InputFileError(param, f"{param} {shown}: not a .npy array (no NumPy magic "
                                    f"string: {_first_line(exc)})") from None
    if version not in ((1, 0), (2, 0)):
        # Version 3.0 only exists for structured dtypes with non-Latin-1 names: refused anyway.
        raise InputFileError(param, f"{param} {shown}: not a .npy file NumPy writes (format "
                                    f"version {version[0]}.{version[1]}; 1.0 or 2.0 are read)")
    reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
        np.lib.format.read_array_header_2_0
    try:
        return reader(stream)
    except Exception as exc:        # noqa: BLE001 -- NumPy parses the header with ast/tokenize:
        # ValueError, SyntaxError, TokenError, MemoryError... all mean "a broken header".
        raise InputFileError(param, f"{param} {shown}: the .npy header is not valid "
                                    f"({type(exc).__name__}: {_first_line(exc)})") from None


def _first_line(exc):
    text = " ".join(str(exc).split())
    return text[:200] if text else type(exc).__name__


def _check_dtype(dtype, param, shown, kinds):
    if dtype.hasobject:
        raise InputFileError(param, f"{param} {shown}: holds Python objects (dtype "
                                    f"{dtype.str}); only {_kinds(kinds)} arrays are read, "
                                    f"never pickles")
    if dtype.names is not None or dtype.subdtype is not None:
        raise InputFileError(param, f"{param} {shown}: holds a structured array (dtype "
                                    f"{_dtype_text(dtype)}); it must be a plain "
                                    f"{_kinds(kinds)} array")
    if dtype.kind not in kinds:
        raise InputFileError(param, f"{param} {shown}: must hold {_kinds(kinds)} numbers, not "
                                    f"{_dtype_text(dtype)}")


def _dtype_text(dtype):
    text = " ".join(str(dtype).split())[:80]
    return text if text in (dtype.str, dtype.str[1:]) else f"{text} ({dtype.str})"


def _kinds(kinds):
    names = dict.fromkeys("integer" if k in "iu" else _NUMBER_KINDS[k] for k in kinds)
    return " or ".join(names)


def read_array(stream, size, param, shown, *, kinds="iuf", limit=None, item_shape=None,
               max_bytes=MAX_ARRAY_BYTES):
    """The array of a ``.npy`` stream of ``size`` bytes, checked before it is allocated.

    Parameters
    ----------
    stream : binary file
        Positioned at the start of the ``.npy`` data (a file, or a member of a ``.npz``).
    size : int
        Bytes the stream holds (the file's size, or the member's uncompressed size).
    param, shown : str
        The option and the file, for messages.
    kinds : str
        NumPy dtype kinds allowed (default integers and floats).
    limit : int or None
        Read only the first ``limit`` entries along the first axis.
    item_shape : tuple or None
        The shape of one entry: the array must be ``(B, *item_shape)`` or ``item_shape`` (one
        entry, returned as a batch of one). ``None``: any shape of at least one axis.
    max_bytes : int
        Most bytes read into memory.

    Returns
    -------
    array : numpy.ndarray
        A fresh array (not a memory map) in native byte order, ``shape[0]`` cut to ``limit``.
    count : int
        Entries in the file (before ``limit``).

    Raises
    ------
    InputFileError
        For a broken or lying header, a refused dtype, a 0-d array, a file shorter than its
        header says, or an array larger than ``max_bytes``.
    """
    shape, fortran, dtype = _header(stream, param, shown)
    _check_dtype(dtype, param, shown, kinds)
    shape = tuple(int(n) for n in shape)
    if item_shape is not None:
        item_shape = tuple(item_shape)
        if shape == item_shape:
            shape_b = (1, *shape)
        elif len(shape) == len(item_shape) + 1 and shape[1:] == item_shape:
            shape_b = shape
        else:
            raise InputFileError(param, f"{param} {shown}: the model takes inputs of shape "
                                        f"{item_shape} (a batch [B, "
                                        f"{', '.join(map(str, item_shape))}]), not "
                                        f"{_shape_text(shape)}")
    elif not shape:
        raise InputFileError(param, f"{param} {shown}: holds a single number (a 0-d array); "
                                    f"it must be an array of at least one axis")
    else:
        shape_b = shape
    # Python integers: the product of a lying shape cannot overflow.
    need = math.prod(shape) * dtype.itemsize
    have = size - stream.tell()
    if need > have:
        raise InputFileError(param, f"{param} {shown}: the .npy header promises shape "
                                    f"{_shape_text(shape)} of {dtype.name} ({need:,} bytes) but "
                                    f"the file holds {max(have, 0):,}: truncated or corrupt")
    keep = shape_b[0] if limit is None else min(shape_b[0], limit)
    rows_shape = (keep, *shape_b[1:])
    read = math.prod(rows_shape) * dtype.itemsize if not fortran else need
    if read > max_bytes:
        raise InputFileError(param, f"{param} {shown}: {_shape_text(rows_shape)} of "
                                    f"{dtype.name} is {read:,} bytes, more than the "
                                    f"{max_bytes >> 20} MiB read at once (--limit reads fewer "
                                    f"images)")
    try:
        data = stream.read(read)
        if read == need:
            # A member of a .npz has its CRC checked when its end is read.
            stream.read(1)
    except OSError as exc:
        raise InputFileError(param, f"{param} {shown} cannot be read: "
                                    f"{exc.strerror or _first_line(exc)}") from None
    if len(data) != read:
        raise InputFileError(param, f"{param} {shown}: ended after {len(data):,} of the "
                                    f"{read:,} bytes its header promises")
    if fortran:
        array = np.frombuffer(data, dtype).reshape(shape[::-1]).transpose()
        array = array.reshape(shape_b)[:keep]
    else:
        array = np.frombuffer(data, dtype).reshape(rows_shape)
    # Native byte order and our own writable copy: nothing downstream sees the file's layout.
    return np.array(array, dtype=dtype.newbyteorder("="), order="C"), shape_b[0]


def _shape_text(shape):
    text = str(tuple(shape))
    return text if len(text) <= 80 else text[:76] + " ...)"


def open_inputs(path, param, *, limit=None, kinds="iuf", item_shape=None, labels=True,
                max_bytes=MAX_ARRAY_BYTES):
    """``(x, y, count)`` from a ``.npy`` (``y`` None) or ``.npz`` file (members ``x``, ``y``).

    Everything is checked before it is loaded (see :func:`read_array`, which ``limit``,
    ``kinds`` and ``item_shape`` go to); ``count`` is the number of entries in the file
    before ``limit``. A ``.npz`` with a bad CRC, a broken zip directory, a ``y`` of another
    length than ``x`` or a member other than a plain array is refused. ``labels=False``
    reads a ``.npy`` only (the ``--labels`` file).

    Raises
    ------
    InputFileError
        With one line naming ``param``, the file and what is wrong.
    """
    import zipfile
    import zlib
    shown = repr(str(path))
    p = Path(path)
    if not str(path):
        raise InputFileError(param, f"{param} must name a file, not ''")
    try:
        if p.is_dir():
            raise InputFileError(param, f"{param} {shown} is a folder; name a .npy "
                                        + ("or .npz " if labels else "") + "file")
        if not p.is_file():
            if os.path.lexists(p):      # a device, FIFO or socket: its "size" means nothing
                raise InputFileError(param, f"{param} {shown} is not a regular file")
            raise InputFileError(param, f"{param} {shown}: no such file")
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                raise InputFileError(param, f"{param} {shown} is empty; it must be a .npy "
                                            + ("or .npz " if labels else "") + "file")
            magic = f.read(6)
            f.seek(0)
            if magic.startswith(b"PK") and labels:
                return _open_npz(f, param, shown, limit, kinds, item_shape, max_bytes)
            if magic != b"\x93NUMPY":
                raise InputFileError(param, f"{param} {shown} is not a .npy "
                                            + ("or .npz " if labels else "") + "file (it "
                                            "starts with neither NumPy's magic string"
                                            + (" nor a zip header)" if labels else ")"))
            x, count = read_array(f, size, param, shown, kinds=kinds, limit=limit,
                                  item_shape=item_shape, max_bytes=max_bytes)
            return x, None, count
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError,
            NotImplementedError, RuntimeError) as exc:
        # zipfile's ways of saying corrupt (bad CRC, truncated), unsupported or encrypted.
        raise InputFileError(param, f"{param} {shown}: not a readable .npz file "
                                    f"({type(exc).__name__}: {_first_line(exc)})") from None
    except OSError as exc:
        raise InputFileError(param, f"{param} {shown} cannot be read: "
                                    f"{exc.strerror or _first_line(exc)}") from None


def _open_npz(f, param, shown, limit, kinds, item_shape, max_bytes):
    import zipfile
    with zipfile.ZipFile(f) as zf:
        members = {info.filename: info for info in zf.infolist()}
        names = [n[:-4] if n.endswith(".npy") else n for n in members]
        if "x.npy" not in members:
            found = ", ".join(repr(n[:40]) for n in names[:8]) + (", ..." if len(names) > 8
                                                                     else "")
            raise InputFileError(param, f"{param} {shown}: a .npz input must hold an array "
                                        f"named x (and optionally y, the labels); found "
                                        f"{found or 'nothing'}")
        info = members["x.npy"]
        with zf.open(info) as member:
            x, count = read_array(member, info.file_size, param, f"{shown} member x",
                                  kinds=kinds, limit=limit, item_shape=item_shape,
                                  max_bytes=max_bytes)
        y = None
        info = members.get("y.npy")
        if info is not None:
            with zf.open(info) as member:
                y, n = read_array(member, info.file_size, param, f"{shown} member y",
                                  kinds="iu", limit=limit, max_bytes=max_bytes)
            if y.ndim != 1 or n != count:
                raise InputFileError(param, f"{param} {shown} member y: the labels must be "
                                            f"{count} integers (one per image of x), not "
                                            f"shape {_shape_text((n, *y.shape[1:]))}")
    return x, y, count
