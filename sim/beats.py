"""Stream beats as integers and as bytes: the two forms of a ``tdata`` sequence.

The simulated board (:class:`mulfree.sim.sim_core.SimCore`) and an AXI DMA move beats as
bytes, little-endian per beat (byte ``j`` of a beat is ``tdata[8j+7:8j]``); testbenches and
golden models write them as integers.
"""

import numpy as np


__all__ = ["beats_to_bytes", "bytes_to_beats"]


def beats_to_bytes(beats, beat_bytes):
    """``tdata`` integers as a uint8 array ``[n, beat_bytes]``, little-endian per beat.

    Raises
    ------
    ValueError
        If a beat is negative or does not fit ``beat_bytes`` bytes.
    """
    beats = list(beats)
    try:
        raw = b"".join(int(b).to_bytes(beat_bytes, "little") for b in beats)
    except OverflowError:
        bad = next(b for b in beats if not 0 <= int(b) < 1 << (8 * beat_bytes))
        raise ValueError(f"beats must be integers in [0, 2**{8 * beat_bytes}), not "
                         f"{int(bad):#x}") from None
    return np.frombuffer(bytearray(raw), dtype=np.uint8).reshape(len(beats), beat_bytes)


def bytes_to_beats(data):
    """The ``tdata`` integers of a uint8 array ``[n, beat_bytes]`` (little-endian per beat)."""
    data = np.ascontiguousarray(data, dtype=np.uint8)
    if data.ndim != 2:
        raise ValueError(f"data must have shape [n, beat_bytes], not {data.shape}")
    if data.shape[1] == 8:
        return [int(v) for v in data.view("<u8").ravel()]
    return [int.from_bytes(row, "little") for row in map(bytes, data)]
