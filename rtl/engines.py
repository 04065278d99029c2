"""The core's engines and the routing of the issue unit's streams to the run's engine.

A core holds one engine per PE kind (interface 2.1) and, with ``cfg.window_ops`` (interface
2.3), the lane unit (:class:`~.lanes.LaneUnit`) of window runs. The issue unit's input vectors
and the feeder's weight rows (core-wide widths) go to one of them only — the lane unit on a
window run, else the engine the descriptor's ``engine`` field names — and the results come
back from it, each lane sign-extended to the core's ``acc_width``. A taps run (interface 2.4)
is a depthwise window run that goes to the engine instead of the lane unit, with the issue
unit's taps: the engines of ``cfg.tap_engines`` are built with the tap ports.
"""

from amaranth.hdl import Signal, Cat, Const, Mux
from amaranth.lib import stream, wiring

from ..params.core_config import CoreConfig
from .array import PEArray, enable_plan, output_layout
from .tree import TreeEngine


__all__ = ["column_modules", "build_engine", "route_engines", "sext", "skid_buffer",
           "ready_copy_count"]


def column_modules(cfg: CoreConfig, column_module):
    """The column module name of each engine: ``column_module`` is None, a name (engine 0's)
    or one name (or None) per engine; folded engines and trees get None."""
    n = len(cfg.engines)
    names = (column_module,) + (None,) * (n - 1) if column_module is None or isinstance(
        column_module, str) else tuple(column_module)
    if len(names) != n:
        raise ValueError(f"column_module: one name per engine ({n}), not {column_module!r}")
    return tuple(None if cfg.engines[k].arch == "tree" or cfg.folds(k) > 1 else names[k]
                 for k in range(n))


def build_engine(cfg: CoreConfig, k, column_module=None):
    """Engine ``k`` of ``cfg``: a :class:`~.tree.TreeEngine`, a :class:`~.array.PEArray` (with
    ``cfg.taps`` tap rows if ``k`` is in ``cfg.tap_engines``, and ``y_ready_copies``), or with
    ``cfg.folds(k) > 1`` a :class:`~.fold.FoldedEngine` of ``cfg.physical_cols(k)`` columns.
    Its ports are those of the engine's own config (its ``code_width`` and ``acc_width``)."""
    e = cfg.engines[k]
    if cfg.folds(k) > 1:
        from .fold import FoldedEngine
        return FoldedEngine(e, cfg.physical_cols(k))
    if e.arch == "tree":
        return TreeEngine(e)
    return PEArray(e, column_module=column_module,
                   taps=cfg.taps if k in cfg.tap_engines else 0, ready_copies=True)


def ready_copy_count(cfg: CoreConfig):
    """How many copies of the result stream's ready the engines take (``y_ready_copies``: the
    most any array engine of ``cfg`` takes; bit ``k`` goes to copy ``k`` of every array)."""
    return max((enable_plan(e, cfg.taps if k in cfg.tap_engines else 0)[1]
                for k, e in enumerate(cfg.engines)
                if e.arch != "tree" and cfg.folds(k) == 1), default=0)


def sext(v, width):
    """``v`` (a signed lane as raw bits) sign-extended to ``width`` bits."""
    return Cat(v, v[-1].replicate(width - len(v)))


def route_engines(m, cfg: CoreConfig, names, x, w, sel, lanes=None, windowed=Const(0),
                  x_taps=None, taps_run=Const(0), ready_copies=None):
    """Add every engine of ``cfg`` (column modules ``names``, :func:`column_modules`) to
    ``m``; ``x`` and ``w`` (core-wide widths) go to engine ``sel`` only, or to ``lanes`` (the
    lane unit, already a submodule) while ``windowed`` and not ``taps_run`` (a taps run goes
    to engine ``sel`` with the taps ``x_taps``, which the tap engines take with ``x``).
    Returns the result stream (core-wide widths). A single-engine core without a lane unit
    connects its engine directly. ``ready_copies`` (``ready_copy_count(cfg)`` bits, each equal
    to the returned stream's ``ready`` in every cycle: :func:`skid_buffer` drives them) go to
    the arrays' ``y_ready_copies``; None: each array takes its ``y.ready`` for every copy."""
    C, A, W = cfg.engine.cols, cfg.acc_width, cfg.code_width
    engines = [build_engine(cfg, k, names[k]) for k in range(len(cfg.engines))]
    if len(engines) == 1 and lanes is None:
        m.submodules.engine = engines[0]
        wiring.connect(m, x, engines[0].x)
        wiring.connect(m, w, engines[0].w)
        _ready_copies(m, engines[0], ready_copies, engines[0].y.ready)
        return engines[0].y
    y = stream.Signature(output_layout(cfg.post_engine)).create()
    x_ready, w_ready, y_valid = Const(0), Const(0), Const(0)
    y_data, y_last = Const(0, C * A), Const(0)
    targets = []
    for k, (e, eng) in enumerate(zip(cfg.engines, engines)):
        m.submodules[f"engine_{k}" if k else "engine"] = eng
        on = Signal(name=f"engine_{k}_on")
        m.d.comb += on.eq((sel == k) & (~windowed | taps_run))
        targets.append((eng, on, e.acc_width, e.code_width))
        if k in cfg.tap_engines:
            m.d.comb += [eng.taps.eq(x_taps), eng.taps_on.eq(taps_run)]
    if lanes is not None:
        on = Signal(name="lanes_on")
        m.d.comb += on.eq(windowed & ~taps_run)
        targets.append((lanes, on, A, W))
    for eng, on, a, c in targets:
        m.d.comb += [
            eng.x.valid.eq(x.valid & on),
            eng.x.payload.data.eq(x.payload.data),
            eng.x.payload.psum.eq(Cat(x.payload.psum.word_select(j, A)[:a] for j in range(C))),
            eng.x.payload.last.eq(x.payload.last),
            eng.w.valid.eq(w.valid & on),
            eng.w.payload.eq(Cat(w.payload.word_select(j, W)[:c] for j in range(C))),
            eng.y.ready.eq(y.ready & on),
        ]
        _ready_copies(m, eng, ready_copies, y.ready & on, on)
        x_ready = Mux(on, eng.x.ready, x_ready)
        w_ready = Mux(on, eng.w.ready, w_ready)
        y_valid = Mux(on, eng.y.valid, y_valid)
        y_data = Mux(on, Cat(sext(eng.y.payload.data.word_select(j, a), A) for j in range(C)),
                     y_data)
        y_last = Mux(on, eng.y.payload.last, y_last)
    m.d.comb += [x.ready.eq(x_ready), w.ready.eq(w_ready), y.valid.eq(y_valid),
                 y.payload.data.eq(y_data), y.payload.last.eq(y_last)]
    return y


def _ready_copies(m, eng, copies, ready, on=Const(1)):
    """Drive ``eng.y_ready_copies`` (an array's) from ``copies`` gated by ``on``, or with no
    ``copies`` from ``ready``."""
    if not isinstance(eng, PEArray):
        return
    n = eng.enable_copies
    m.d.comb += eng.y_ready_copies.eq(ready.replicate(n) if copies is None else
                                      copies[:n] & on.replicate(n))


def skid_buffer(m, y, layout, name="skid", ready_copies=None):
    """``y`` behind a one-entry skid buffer whose ``ready`` towards ``y`` is a register.

    The result stream's consumer decides late in a cycle (post-processing, the pool, the
    output FIFO, the banks), and every register of the engine advances on ``y.ready``: without
    the buffer that decision would drive the engine's whole pipeline in the same cycle. Here
    ``y.ready`` is ``~full``; a vector offered while the consumer refuses it is kept, the
    engine stops the next cycle, and the kept vector goes first. No latency: while the buffer
    is empty ``y`` passes through unregistered; the consumer sees the same stream.

    ``ready_copies`` (a Signal, or None): bit ``k`` is ``~full_k``, a duplicate of ``full``
    (same next state, kept apart by synthesis), so it equals ``y.ready`` in every cycle and
    each copy of the engines' enable (:func:`route_engines`) has a register of its own.

    Returns the buffered stream (its ``ready`` is the consumer's).
    """
    out = stream.Signature(layout).create()
    full = Signal(name=f"{name}_full")
    buf = Signal(layout, name=f"{name}_data", reset_less=True)
    m.d.comb += [
        y.ready.eq(~full),
        out.valid.eq(full | y.valid),
        out.payload.eq(Mux(full, buf.as_value(), y.payload.as_value())),
    ]
    with m.If(full):
        with m.If(out.ready):
            m.d.sync += full.eq(0)
    with m.Elif(y.valid & ~out.ready):
        m.d.sync += [full.eq(1), buf.eq(y.payload)]
    for k in range(0 if ready_copies is None else len(ready_copies)):
        copy = Signal(name=f"{name}_full_{k}", attrs={"keep": 1})
        m.d.comb += ready_copies[k].eq(~copy)
        with m.If(copy):
            with m.If(out.ready):
                m.d.sync += copy.eq(0)
        with m.Elif(y.valid & ~out.ready):
            m.d.sync += copy.eq(1)
    return out
