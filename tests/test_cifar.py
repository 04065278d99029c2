"""The data sets of :func:`mulfree.host.datasets.load_dataset`: CIFAR-10's binary files
(:mod:`mulfree.host.cifar`, read as untrusted input) and the digits enlarged for residual
networks.

The CIFAR-10 files are written here, a few records in the distribution's format: one label
byte, then the red, green and blue planes, each 32x32 row-major.
"""

import os

import numpy as np
import pytest

from mulfree.host import cifar
from mulfree.host.cifar import CIFAR_SCALE, RECORD_BYTES, load_cifar10
from mulfree.host.datasets import DATASETS, DIGITS_SCALE, digits_split, load_dataset
from mulfree.params.safe_io import FileCheckError


def record(label, r, g, b):
    """One 3073-byte record from three 32x32 planes of bytes."""
    planes = [np.broadcast_to(np.asarray(p, np.uint8), (32, 32)).ravel() for p in (r, g, b)]
    return bytes([label]) + np.concatenate(planes).tobytes()


RAMP = (np.arange(1024) % 256).reshape(32, 32)


def write(folder, name, *records):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(b"".join(records))
    return folder / name


def full_folder(folder, counts=(2, 1, 3, 1, 2), test=3):
    """Training file ``i`` holds ``counts[i]`` records labelled ``i``, pixel values ``10 j + i``
    (``j`` the record in its file); the test file holds ``test`` records labelled 9."""
    for i, n in enumerate(counts):
        write(folder, f"data_batch_{i + 1}.bin",
              *[record(i, 10 * j + i, 0, 0) for j in range(n)])
    write(folder, "test_batch.bin", *[record(9, 1, 2, 3) for _ in range(test)])
    return folder


def test_pixels_land_where_the_format_says(tmp_path):
    one = np.zeros((32, 32), np.uint8)
    one[1, 2] = 200                                         # row 1, column 2
    write(tmp_path, "test_batch.bin", record(3, RAMP, 255 - RAMP, 7), record(9, 0, one, 0),
          record(0, 255, 255, 255))
    for name in cifar.CIFAR_FILES["train"]:
        write(tmp_path, name, record(1, 0, 0, 0))
    x, y = load_cifar10(tmp_path)
    assert x.dtype == np.float32 and x.shape == (3, 3, 32, 32)
    assert y.dtype == np.int64 and y.tolist() == [3, 9, 0]
    np.testing.assert_array_equal(x[0, 0], RAMP / 256)     # the R plane comes first
    np.testing.assert_array_equal(x[0, 1], (255 - RAMP) / 256)
    np.testing.assert_array_equal(x[0, 2], np.full((32, 32), 7 / 256))
    assert x[1, 1, 1, 2] == 200 / 256 and np.count_nonzero(x[1]) == 1
    assert x[2].max() == 255 / 256 and CIFAR_SCALE == 2.0 ** -8
    assert np.array_equal(x * 256, np.round(x * 256))       # exact on a 2^-8 grid


def test_train_split_reads_the_five_files_in_order(tmp_path):
    full_folder(tmp_path)
    x, y = load_cifar10(tmp_path, "train")
    assert y.tolist() == [0, 0, 1, 2, 2, 2, 3, 4, 4]
    assert (x[:, 0, 0, 0] * 256).tolist() == [0, 10, 1, 2, 12, 22, 3, 4, 14]
    x, y = load_cifar10(tmp_path, "train", limit=4)
    assert y.tolist() == [0, 0, 1, 2] and x.shape == (4, 3, 32, 32)
    x, y = load_cifar10(tmp_path, "test", limit=10)
    assert y.tolist() == [9, 9, 9]


def test_the_archives_folder_inside(tmp_path):
    full_folder(tmp_path / "cifar-10-batches-bin")
    x, y = load_cifar10(tmp_path)
    assert len(y) == 3 and x[0, 1, 0, 0] == 2 / 256


def test_load_dataset(tmp_path):
    full_folder(tmp_path)
    x, y = load_dataset("cifar10", "train", folder=tmp_path, limit=3)
    assert x.shape == (3, 3, 32, 32) and y.tolist() == [0, 0, 1]
    assert load_dataset("cifar10", folder=str(tmp_path))[1].tolist() == [9, 9, 9]
    assert DATASETS == ("digits", "digits16", "digits32x3", "cifar10")
    with pytest.raises(ValueError, match=r"^folder must name the folder of CIFAR-10's binary "
                                         r"files \(cifar-10-batches-bin\) for dataset "
                                         r"'cifar10', not None$"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match=r"folder is for dataset 'cifar10' only, not for "
                                         r"'digits'"):
        load_dataset("digits", folder=tmp_path)
    with pytest.raises(ValueError, match=r"dataset must be one of digits, digits16, "
                                         r"digits32x3, cifar10, not 'mnist'"):
        load_dataset("mnist")


# Errors: one line naming the file, the value and the rule ------------------------------------

def test_missing_file_is_named(tmp_path):
    full_folder(tmp_path)
    os.remove(tmp_path / "data_batch_4.bin")
    load_cifar10(tmp_path, "test")                          # the test split is complete
    with pytest.raises(FileCheckError, match=r"^folder '.*' has no file 'data_batch_4.bin' "
                                             r"\(CIFAR-10's binary distribution"):
        load_cifar10(tmp_path, "train", limit=1)            # checked even when not read


@pytest.mark.parametrize("size", [RECORD_BYTES - 1, 2 * RECORD_BYTES + 5, 0])
def test_size_must_be_whole_records(tmp_path, size):
    (tmp_path / "test_batch.bin").write_bytes(bytes(size))
    with pytest.raises(FileCheckError) as info:
        load_cifar10(tmp_path)
    assert str(info.value) == (
        f"folder file {str(tmp_path / 'test_batch.bin')!r} is {size:,} bytes, not a positive "
        f"whole number of 3073-byte records (1 label byte + 3072 pixel bytes)")
    assert info.value.param == "folder" and isinstance(info.value, ValueError)


def test_label_outside_0_to_9(tmp_path):
    write(tmp_path, "test_batch.bin", record(1, 0, 0, 0), record(2, 0, 0, 0),
          record(10, 0, 0, 0), record(255, 0, 0, 0))
    with pytest.raises(FileCheckError, match=r"test_batch.bin': record 2 \(from 0\) has label "
                                             r"10; CIFAR-10's labels are 0..9$"):
        load_cifar10(tmp_path)
    assert load_cifar10(tmp_path, limit=2)[1].tolist() == [1, 2]


def test_too_many_records(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar, "MAX_RECORDS", 2)
    write(tmp_path, "test_batch.bin", *[record(0, 0, 0, 0)] * 3)
    with pytest.raises(FileCheckError, match=r"holds 3 records, more than the 2 of a CIFAR-10 "
                                             r"batch file"):
        load_cifar10(tmp_path)


def test_no_symbolic_link_out_of_the_folder(tmp_path):
    outside = write(tmp_path / "elsewhere", "secret.bin", record(1, 0, 0, 0))
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "test_batch.bin").symlink_to(outside)
    with pytest.raises(FileCheckError, match=r"folder 'test_batch.bin' leads outside"):
        load_cifar10(folder)
    # A link that stays inside the folder is fine.
    write(folder, "real.bin", record(4, 0, 0, 0))
    os.remove(folder / "test_batch.bin")
    (folder / "test_batch.bin").symlink_to(folder / "real.bin")
    assert load_cifar10(folder)[1].tolist() == [4]


def test_fifo_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "test_batch.bin")
    with pytest.raises(FileCheckError, match=r"test_batch.bin' is not a regular file"):
        load_cifar10(tmp_path)


def test_bad_arguments(tmp_path):
    with pytest.raises(FileCheckError, match=r"folder '.*nope' is not a folder"):
        load_cifar10(tmp_path / "nope")
    with pytest.raises(FileCheckError, match=r"folder must name the folder"):
        load_cifar10("")
    with pytest.raises(FileCheckError, match=r"--cifar10 '.*nope' is not a folder"):
        load_cifar10(tmp_path / "nope", param="--cifar10")
    with pytest.raises(ValueError, match=r"split must be train or test, not 'val'"):
        load_cifar10(tmp_path, "val")
    with pytest.raises(ValueError, match=r"limit must be None or a positive integer, not 0"):
        load_cifar10(tmp_path, limit=0)


# Digits enlarged for residual networks -------------------------------------------------------

def test_digits_default_is_unchanged():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    digits = load_digits()
    x = (digits.images / 16).astype(np.float32)[:, None]
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target, test_size=0.2, random_state=0, stratify=digits.target)
    data = digits_split()
    assert data["x_test"].shape == (360, 1, 8, 8) and data["x_train"].shape == (1437, 1, 8, 8)
    np.testing.assert_array_equal(data["x_test"], x_test)
    np.testing.assert_array_equal(data["y_train"], y_train)


@pytest.mark.parametrize("size,channels", [(16, 1), (32, 3), (8, 3), (32, 1)])
def test_digits_enlarged_exactly(size, channels):
    small, big = digits_split(), digits_split(size=size, channels=channels)
    f = size // 8
    for part in ("train", "test"):
        x, x8 = big[f"x_{part}"], small[f"x_{part}"]
        assert x.shape == (len(x8), channels, size, size) and x.dtype == np.float32
        assert np.array_equal(big[f"y_{part}"], small[f"y_{part}"])
        for c in range(channels):
            for dy in range(f):
                for dx in range(f):
                    assert np.array_equal(x[:, c, dy::f, dx::f], x8[:, 0])
    values = np.unique(big["x_test"] / DIGITS_SCALE)
    assert np.array_equal(values, np.round(values)) and values.max() == 16


def test_load_dataset_digits_variants():
    x, y = load_dataset("digits16")
    assert x.shape == (360, 1, 16, 16) and y.shape == (360,)
    x, y = load_dataset("digits32x3", "train", limit=5)
    assert x.shape == (5, 3, 32, 32) and y.dtype == np.int64
    assert load_dataset("digits")[0].shape == (360, 1, 8, 8)


@pytest.mark.parametrize("kwargs,message", [
    (dict(size=12), "size must be 8, 16 or 32, not 12"),
    (dict(size=16.0), "size must be 8, 16 or 32, not 16.0"),
    (dict(channels=2), "channels must be 1 or 3, not 2"),
    (dict(channels=True), "channels must be 1 or 3, not True"),
])
def test_digits_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        digits_split(**kwargs)
