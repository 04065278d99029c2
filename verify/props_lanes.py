"""Formal properties of the lane unit (``rtl/lanes.py``, interface 2.3 window runs).

The harness (:func:`lanes_harness`) drives a :class:`~mulfree.rtl.lanes.LaneUnit` with free
streams: every cycle a free input beat (``x.valid``, activations, partial sums, ``last``), a
free weight row (``w.valid``, ``C`` codes) and a free ``y.ready``. The run's ``op`` (one window
flag) and ``engine`` (one of the core's) are free but held, as during a run. Beside the unit
the harness keeps its own model, written from ``docs/interface.md`` / ``params/window_golden.py``
and not from the unit's signals:

* a scoreboard: at each accepted input beat, the expected result of every lane from the
  definition — ``max(psum, x)``, ``psum + x`` or ``psum + term_k(x, w)`` with ``term_k`` the
  numerics.md case analysis of engine ``k`` (:func:`~.props_pe.spec_term`: one case per shift
  exponent, ``-|x - w|``, ``x * w``) in widened arithmetic — and the beat's ``last``, in order;
* the weight rows accepted on ``w`` and not yet bound to a tile, the tile's row (bound by the
  beat that starts a tile: the first beat, then each beat after one with ``last``).

Assumed: the exact result of a beat fits ``acc_width`` (every partial sum of a run does: the
window holds at most ``max_k`` terms); nothing else. Checked (:data:`PROPERTIES`):

``lanes_<design>`` (bmc, :data:`BMC_DEPTH`): every output beat is the scoreboard's head, data
and ``last`` (results in order, one per accepted input); no output without an accepted input
inside; at most ``WINDOW_LATENCY`` vectors inside; an input accepted with ``y.ready`` high in
the next cycle is the output ``WINDOW_LATENCY`` cycles after it; depthwise: a beat starting a
tile is taken only with a row already accepted (it waits for it), every tile binds exactly one
row, and no row is accepted while one is still unbound; max and sum never wait for a row (with
``y.ready`` high the input is ready), and their results ignore ``w`` (free throughout). The
unit's contract for ``w`` on a max or sum run: ``w.ready`` does not look at ``op`` (a cover
reaches a row taken on a max run; it is never used); the core offers none there (the feeder's
``wrows`` is 0, WEIGHTS of such a run are OVERRUN) and the datapath is reset between runs.

``lanes_<design>_stream`` (prove): ``y.valid``, data and ``last`` held while ``valid`` and not
``ready``; no ``y.valid`` in the cycle after a reset.

``lanes_<design>_cover`` (cover): a depthwise run of two tiles of two beats, with a stall of
the output, reaches its second ``last`` output; likewise max and sum.
"""

from amaranth.hdl import Assert, Assume, Cat, Cover, Module, Mux, ResetSignal, Signal, signed

from ..params.config import ArrayConfig, int_range
from ..params.core_config import CoreConfig, WINDOW_LATENCY
from ..rtl.lanes import LANE_OPS, LaneUnit
from .props_pe import spec_term


__all__ = ["PROPERTIES", "DESIGNS", "BMC_DEPTH", "lanes_harness"]


def _core(*engines):
    return CoreConfig(engine=engines[0], extra_engines=tuple(engines[1:]), fmap_vectors=16,
                      weight_rows=16, acc_entries=4)


#: The cores proven: a 2x2 shift engine (4-bit activations), and a 2x2 core of three engines
#: (shift, adder, mult) so that every kind of depthwise term is covered.
DESIGNS = {
    "shift2": _core(ArrayConfig(pe="shift", rows=2, cols=2, act_bits=4, weight_bits=4,
                                max_k=16)),
    "multi2": _core(ArrayConfig(pe="shift", rows=2, cols=2, act_bits=4, weight_bits=3,
                                max_k=16),
                    ArrayConfig(pe="adder", rows=2, cols=2, act_bits=4, max_k=16),
                    ArrayConfig(pe="mult", rows=2, cols=2, act_bits=4, weight_bits=3,
                                max_k=16)),
}
#: Cycles of the bounded checks: two tiles of two beats each with a stall and the pipeline.
BMC_DEPTH = 10
STREAM_PROVE_DEPTH = 6
COVER_DEPTH = 12
#: Scoreboard entries (one more than the unit may hold, so that a third shows).
_SLOTS = WINDOW_LATENCY + 1


def _lane(value, j, bits):
    return value.word_select(j, bits).as_signed()


def lanes_harness(cfg: CoreConfig, *, dut=None, cover=False):
    """The lane unit of ``cfg`` (or ``dut``) against the model; asserts, or covers."""
    C, a, A, W = cfg.engine.cols, cfg.engine.act_bits, cfg.acc_width, cfg.code_width
    m = Module()
    m.submodules.dut = dut = LaneUnit(cfg) if dut is None else dut
    x_valid, w_valid, ready = Signal(name="x_valid"), Signal(name="w_valid"), \
        Signal(name="y_ready")
    x_data, x_psum = Signal(C * a, name="x_data"), Signal(C * A, name="x_psum")
    x_last = Signal(name="x_last")
    w_data = Signal(C * W, name="w_data")
    op, engine = Signal(len(LANE_OPS), name="op"), Signal(4, name="engine")
    m.d.comb += [
        dut.x.valid.eq(x_valid), dut.x.payload.data.eq(x_data),
        dut.x.payload.psum.eq(x_psum), dut.x.payload.last.eq(x_last),
        dut.w.valid.eq(w_valid), dut.w.payload.eq(w_data),
        dut.y.ready.eq(ready), dut.op.eq(op), dut.engine.eq(engine),
    ]
    ports = [x_valid, x_data, x_psum, x_last, w_valid, w_data, ready, op, engine]
    # The run's settings: one window flag, one of the core's engines, held.
    is_max, is_sum, depthwise = op[0], op[1], op[2]
    static = Cat(op, engine)
    past_static = Signal.like(static, name="past_static")
    started = Signal(name="started")
    m.d.sync += [past_static.eq(static), started.eq(1)]
    m.d.comb += [
        Assume(~started | (static == past_static)),
        Assume((op == 1) | (op == 2) | (op == 4)),
        Assume(engine < len(cfg.engines)),
    ]
    push = dut.x.valid & dut.x.ready
    pop = dut.y.valid & dut.y.ready
    w_take = dut.w.valid & dut.w.ready

    # Weight rows: accepted and unbound (at most one), the tile's row, where a tile starts.
    spare = Signal(C * W, name="spare_row")
    spares = Signal(range(3), name="spare_rows")
    tile_row = Signal(C * W, name="tile_row")
    starts = Signal(init=1, name="starts_tile")
    bind = push & depthwise & starts
    row = Mux(bind, spare, tile_row)
    with m.If(push):
        m.d.sync += starts.eq(x_last)
    with m.If(bind):
        m.d.sync += tile_row.eq(spare)
    with m.If(w_take):
        m.d.sync += spare.eq(w_data)
    m.d.sync += spares.eq(spares + w_take - bind)

    # The definition, lane by lane, in widened arithmetic.
    lo, hi = int_range(A)
    want, fits = [], []
    for j in range(C):
        x, p, code = _lane(x_data, j, a), _lane(x_psum, j, A), row.word_select(j, W)
        dw = 0
        for k, e in enumerate(cfg.engines):
            dw = Mux(engine == k, p + spec_term(e, x, code[:e.code_width]), dw)
        value = Signal(signed(A + 2 * a + 8), name=f"spec_lane_{j}")
        m.d.comb += value.eq(Mux(is_max, Mux(p >= x, p, x), Mux(is_sum, p + x, dw)))
        want.append(value[:A])
        fits.append((value >= lo) & (value <= hi))
    m.d.comb += Assume(~push | Cat(fits).all())

    # The scoreboard: expected (data, last) of the vectors inside, oldest first.
    entry = Cat(*want, x_last)
    slots = [Signal(len(entry), name=f"board_{i}") for i in range(_SLOTS)]
    count = Signal(range(_SLOTS + 2), name="inside")
    kept = count - pop
    for i in range(_SLOTS):
        shifted = slots[i + 1] if i + 1 < _SLOTS else slots[i]
        m.d.sync += slots[i].eq(Mux(push & (kept == i), entry, Mux(pop, shifted, slots[i])))
    m.d.sync += count.eq(kept + push)

    # The latency: an input accepted with y.ready high in the next cycle is the output
    # WINDOW_LATENCY = 2 cycles after it (behind it only a vector accepted in that next cycle).
    took, took_ready = Signal(name="took"), Signal(name="took_ready")
    m.d.sync += [took.eq(push), took_ready.eq(took & ready)]
    assert WINDOW_LATENCY == 2

    # The cover's run: the lasts of the first four outputs (two tiles of two beats: 0101).
    outputs = Signal(range(6), name="outputs")
    lasts = Signal(4, name="output_lasts")
    stalled = Signal(name="stalled")
    with m.If(pop & (outputs < 5)):
        m.d.sync += [outputs.eq(outputs + 1), lasts.eq(Cat(lasts[1:], dut.y.payload.last))]
    with m.If(dut.y.valid & ~ready):
        m.d.sync += stalled.eq(1)
    if cover:
        two = (outputs == 3) & pop & dut.y.payload.last & (lasts[1:] == 0b010) & stalled
        m.d.comb += [Cover(two & depthwise), Cover(two & is_max), Cover(two & is_sum)]
        return m, ports

    out = Cat(dut.y.payload.data, dut.y.payload.last)
    m.d.comb += [
        Assert(~dut.y.valid | (count >= 1)),
        Assert(count <= WINDOW_LATENCY),
        Assert(~dut.y.valid | (out == slots[0])),
        Assert(~took_ready | (dut.y.valid & (count == 1 + took))),
        # Depthwise: a tile's first beat waits for its row; one row at most ahead.
        Assert(~bind | (spares >= 1)),
        Assert(spares <= 1),
        # Max and sum never wait for a row; depthwise only at a tile's start without one.
        Assert(~ready | dut.x.ready | (depthwise & starts & (spares == 0))),
    ]
    return m, ports


def stream_harness(cfg: CoreConfig, *, dut=None):
    """The output stream's rules with every input free (``op``, ``engine`` too)."""
    m = Module()
    m.submodules.dut = dut = LaneUnit(cfg) if dut is None else dut
    inputs = [dut.x.valid, dut.x.payload.as_value(), dut.w.valid, dut.w.payload, dut.y.ready,
              dut.op, dut.engine]
    frees = [Signal(len(v), name=f"free_{n}") for n, v in enumerate(inputs)]
    m.d.comb += [v.eq(f) for v, f in zip(inputs, frees)]
    past_rst = Signal(reset_less=True)
    m.d.sync += past_rst.eq(ResetSignal())
    waited = Signal()
    past_out = Signal(len(dut.y.payload.as_value()))
    m.d.sync += [waited.eq(dut.y.valid & ~dut.y.ready), past_out.eq(dut.y.payload.as_value())]
    m.d.comb += [
        Assert(~waited | (dut.y.valid & (dut.y.payload.as_value() == past_out))),
        Assert(~past_rst | ~dut.y.valid),
    ]
    return m, frees


def _kinds(cfg):
    return "/".join(e.pe for e in cfg.engines)


def _data(key):
    def build():
        cfg = DESIGNS[key]
        m, ports = lanes_harness(cfg)
        return m, ports, "bmc", BMC_DEPTH, (
            f"lane unit ({cfg.engine.cols} lanes, {_kinds(cfg)}, a={cfg.engine.act_bits}): "
            f"results in order = max/sum/psum+term of the beat, latency, at most "
            f"{WINDOW_LATENCY} inside, one weight row per depthwise tile")
    return build


def _stream(key):
    def build():
        cfg = DESIGNS[key]
        m, ports = stream_harness(cfg)
        return m, ports, "prove", STREAM_PROVE_DEPTH, (
            "lane unit output: valid and payload held until ready, none after reset")
    return build


def _cover(key):
    def build():
        cfg = DESIGNS[key]
        m, ports = lanes_harness(cfg, cover=True)
        return m, ports, "cover", COVER_DEPTH, (
            "lane unit: two tiles with a stalled output reach the second last output "
            "(depthwise, max, sum)")
    return build


#: name -> build(): (module, ports, mode, depth, description)
PROPERTIES = {}
for _key in DESIGNS:
    PROPERTIES[f"lanes_{_key}"] = _data(_key)
    PROPERTIES[f"lanes_{_key}_stream"] = _stream(_key)
PROPERTIES["lanes_multi2_cover"] = _cover("multi2")
