"""How the benchmarks of ``mulfree bench`` write: progress lines on stderr, numbers in tables.

Shared by :mod:`~mulfree.flows.bench` and the benchmarks it runs
(:mod:`~mulfree.flows.bench_gen`, :mod:`~mulfree.flows.bench_synth`,
:mod:`~mulfree.flows.bench_tree`); it imports none of them.
"""

import sys


__all__ = ["stderr_progress", "fmt_number"]


def stderr_progress(message):
    """Write ``message`` as one line on stderr, at once.

    Parameters
    ----------
    message : str
        One line of progress, without its newline.

    Notes
    -----
    One write per line: synthesis jobs report from several threads.
    """
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def fmt_number(value, digits=1):
    """A table cell: ``-`` for None, a float with ``digits`` decimals, anything else as text.

    Parameters
    ----------
    value : object
        The number (or None, or text) to show.
    digits : int
        Decimals of a float.

    Returns
    -------
    str
    """
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
