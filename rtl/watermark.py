"""The activation watermark's comparison.

The issue unit may read a feature-map vector once it has arrived: ``far < ptr``, where ``far``
is the farthest address the next read touches (a signed register of the walk: padding makes
it negative) and ``ptr`` the loader's count of vectors written (unsigned, ``SIZE_BITS``, read as
signed). The comparison runs on ``far``'s width, a narrow carry chain: ``ptr``'s bits above it
decide alone when ``ptr`` is beyond ``far``'s range.
"""

__all__ = ["below"]


def below(far, ptr):
    """``far < ptr`` with ``far`` signed (``A`` bits) and ``ptr``'s bits read as signed, on
    ``A`` bits: a ``ptr`` beyond ``A``'s range decides alone (above it: true; below: false)."""
    width = len(far)
    p = ptr.as_signed()
    hi = ptr[width - 1:]
    above = ~p[-1] & hi.any()
    under = p[-1] & ~hi.all()
    return above | (~under & (far < ptr[:width].as_signed()))
