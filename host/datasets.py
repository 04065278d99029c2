"""Data sets the demo and ``mulfree run --dataset`` use (NumPy and scikit-learn, no torch)."""

import numpy as np


__all__ = ["DIGITS_SCALE", "DATASETS", "digits_split", "load_dataset"]


#: Pixels of the digits data are integers 0..16; ``x = pixel * DIGITS_SCALE`` lies in [0, 1].
#: A power of two, so every input is exact on a fixed-point grid of 4 or more fraction bits
#: (8-bit activations with scale 2^-6 hold all 17 values exactly).
DIGITS_SCALE = 1 / 16

#: Names ``load_dataset`` knows.
DATASETS = ("digits",)


def digits_split(seed=0, test_size=0.2):
    """The digits data set, split into stratified training and test sets.

    Parameters
    ----------
    seed : int
        Seed of the split (``train_test_split(random_state=seed)``).
    test_size : float
        Fraction held out for testing; 0.2 gives 1437 training and 360 test images.

    Returns
    -------
    dict
        ``x_train``, ``x_test``: float32 arrays ``(N, 1, 8, 8)`` with values
        ``pixel * DIGITS_SCALE`` in [0, 1] (flatten them for an MLP; the demo MLP starts with
        ``nn.Flatten`` and takes the same images); ``y_train``, ``y_test``: int64 labels.
    """
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
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def load_dataset(name, split="test"):
    """``(x, y)`` of a named data set's split: float images and int64 labels."""
    if name not in DATASETS:
        raise ValueError(f"dataset must be one of {', '.join(DATASETS)}, not {name!r}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, not {split!r}")
    data = digits_split()
    return data[f"x_{split}"], data[f"y_{split}"]
