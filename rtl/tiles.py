"""Weight-tile sequencing shared by the engines (the array and the adder tree).

Both engines take weight tiles on their ``w`` stream (``beats`` rows per tile) and input
vectors on their ``x`` stream, where ``last`` ends a tile's vectors. The rules are the same:
a tile is *pending* once its last row is in, ``w`` then waits until it is taken into use; the
input beat that starts a tile (the first after reset or after ``last``) waits for a pending
tile, and takes it.
"""

from amaranth.hdl import Signal


__all__ = ["tile_sequencer"]


def tile_sequencer(m, *, w, x, advance, beats, load_blocked=0):
    """Add the tile bookkeeping to module ``m``; return ``(take, swap, w_load)``.

    Parameters
    ----------
    w, x : stream interfaces
        The engine's weight and input streams; this drives ``w.ready`` and ``x.ready``.
    advance : Value
        The pipeline advances this cycle.
    beats : int
        Weight rows per tile.
    load_blocked : Value
        High while the shadow tile must not change yet (the array's swap still travelling).

    Returns
    -------
    take : Signal
        An input beat is accepted.
    swap : Signal
        The accepted beat starts a tile: the pending tile becomes the active one.
    w_load : Signal
        A weight row is accepted: the shadow tile shifts it in.
    """
    starts_tile = Signal(init=1)    # the next input beat is the first of a tile
    pending = Signal()              # the shadow tile is complete
    loaded = Signal(range(max(beats, 2)))
    take, swap, w_load = Signal(), Signal(), Signal()
    m.d.comb += [
        x.ready.eq(advance & (~starts_tile | pending)),
        take.eq(x.valid & x.ready),
        swap.eq(take & starts_tile),
        w.ready.eq(~pending & ~load_blocked),
        w_load.eq(w.valid & w.ready),
    ]
    with m.If(take):
        m.d.sync += starts_tile.eq(x.payload.last)
    with m.If(w_load):
        with m.If(loaded == beats - 1):
            m.d.sync += [loaded.eq(0), pending.eq(1)]
        with m.Else():
            m.d.sync += loaded.eq(loaded + 1)
    with m.If(swap):
        m.d.sync += pending.eq(0)
    return take, swap, w_load
