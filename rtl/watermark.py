"""The activation watermark, decided a cycle ahead.

The issue unit may read a feature-map vector once it has arrived: ``far < ptr``, where ``far``
is the farthest address the next read touches (a register of the walk) and ``ptr`` the
loader's count of vectors written. Compared in the cycle it is used, that comparison sits
between the loader's pointer and every register the issue decision enables (the walk's
addresses), a carry chain in front of another (timing).

Both operands only move in known ways, so the comparison is made the cycle before, for each
value ``far`` may take, and registered:

* ``ptr`` is 0 at reset (the datapath's flush resets the loader and the issue unit together)
  and moves only by ``+1`` in a cycle its strobe ``we`` is high, so ``ptr' = ptr + we``;
* ``far`` takes one of a few candidate values named by conditions (go, issue), each computed
  from registers alone, or keeps its value.

``arrived(t) == (far(t) < ptr(t))`` in every cycle, exactly as the unregistered comparison:
no cycle changes. ``ptr`` is unsigned on the loader's side and compared signed (``far`` may be
negative: padding); the comparison runs on ``far``'s width, ``ptr``'s bits above it deciding
alone (:func:`below`).
"""

from amaranth.hdl import Signal, Mux


__all__ = ["below", "watermark_ahead"]


def below(far, ptr):
    """``far < ptr`` with ``far`` signed (``A`` bits) and ``ptr``'s bits read as signed, on
    ``A`` bits: a ``ptr`` beyond ``A``'s range decides alone (above it: true; below: false)."""
    width = len(far)
    p = ptr.as_signed()
    hi = ptr[width - 1:]
    above = ~p[-1] & hi.any()
    under = p[-1] & ~hi.all()
    return above | (~under & (far < ptr[:width].as_signed()))


def watermark_ahead(m, far, ptr, we, moves, name="arrived"):
    """A register equal to ``far < ptr`` (:func:`below`) in every cycle, compared a cycle
    ahead.

    Parameters
    ----------
    m : Module
        Where the comparators and the register go.
    far : Signal
        The register compared (signed).
    ptr : Value
        The pointer (unsigned), 0 when ``far``'s register is at its reset value (0), moving
        only by ``+1`` in a cycle ``we`` is high.
    we : Value
        ``ptr``'s strobe.
    moves : list of (Value, Value)
        ``(condition, value)``: ``far``'s next value when ``condition`` holds, the first
        condition that holds winning, ``far`` kept when none does; each ``value`` computed
        from registers (the conditions only select).
    name : str
        The register's name.

    Returns
    -------
    Signal
        The registered comparison.
    """
    arrived = Signal(name=name)
    # ptr + 1 on ptr's width, read as signed as ptr is (the loader's pointer never reaches
    # its top bit: the sizes are far smaller).
    ptr1 = Signal(len(ptr), name=f"{name}_ptr1")
    m.d.comb += ptr1.eq(ptr + 1)

    def next_below(value):
        return Mux(we, below(value, ptr1), below(value, ptr))

    nxt = next_below(far)
    for cond, value in reversed(moves):
        nxt = Mux(cond, next_below(value), nxt)
    m.d.sync += arrived.eq(nxt)
    return arrived
