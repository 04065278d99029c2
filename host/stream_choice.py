"""The stream width a model's default core gets, chosen by the cycle model.

A narrow AXI4-Stream costs beats: at 64 bits an 8-bit vector of 16 channels takes two, so
layers that stream their inputs (first convolutions as patches, linear layers) wait on the
stream, not on the engine. :func:`choose_stream_width` compiles the model for the default core
(:func:`~mulfree.host.compiler.core_for_model`) at each candidate width and keeps the narrowest
whose estimated core cycles for the batch (:meth:`~mulfree.host.program.Program.costs`, the
cycle model the simulated board matches) are within ``tolerance`` of the fastest width's: a
wider stream costs wires, a wider DMA and memory bandwidth, so it must pay for itself.

The estimate is of the core alone: a width the board's memory port cannot feed at the core's
clock (the ZC706's 64-bit HP ports carry 8 bytes per cycle at the fabric clock) gives its
cycle count only if the DMA's memory side runs faster or uses more ports.
"""

from .compiler import CompileError, compile_model, core_for_model


__all__ = ["STREAM_CANDIDATES", "STREAM_TOLERANCE", "choose_stream_width"]

#: Widths tried, narrowest first.
STREAM_CANDIDATES = (32, 64, 128, 256)
#: A wider stream must cut the estimated cycles by more than this share of the fastest's.
STREAM_TOLERANCE = 0.02


def choose_stream_width(model, *, batch=1, candidates=STREAM_CANDIDATES,
                        tolerance=STREAM_TOLERANCE, **core_options):
    """The narrowest of ``candidates`` within ``tolerance`` of the fewest estimated cycles.

    Parameters
    ----------
    model : IntModel
    batch : int
        Images per batch the program is compiled and costed for (stacking depends on it).
    candidates : sequence of int
        Stream widths, each one :data:`~mulfree.params.core_config.STREAM_WIDTHS` allows.
    tolerance : float
        In [0, 1).
    core_options
        Passed to :func:`~mulfree.host.compiler.core_for_model` (``rows``, ``cols``, ...).

    Returns
    -------
    (int, dict)
        The width and ``{width: estimated core cycles of the batch}``.

    Raises
    ------
    CompileError
        The model cannot be compiled for the default core at any width.
    """
    if not 0 <= tolerance < 1:
        raise CompileError("stream_width", f"tolerance must be in [0, 1), not {tolerance!r}")
    cycles = {}
    for width in sorted(candidates):
        core = core_for_model(model, stream_width=width, **core_options)
        program = compile_model(model, core, batch=batch)
        cycles[width] = sum(c.cycles for c in program.costs(batch))
    best = min(cycles.values())
    width = next(w for w in sorted(cycles) if cycles[w] <= best * (1 + tolerance))
    return width, cycles
