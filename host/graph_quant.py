"""Post-training quantization of a captured graph (:mod:`mulfree.host.capture`) into an
:class:`~mulfree.host.export_format.IntModel`.

:func:`quantize_graph` follows the rules of :mod:`mulfree.host.ptq` ("Quantization rules",
graphs included): the ops are quantized in topological order, each calibrated on the outputs
of the already-quantized integer graph (:func:`~mulfree.host.int_inference.run_node`), every
scale a power of two. Part of :mod:`mulfree.host.quant`; :func:`mulfree.host.ptq.quantize` is
the entry point.
"""

from fractions import Fraction

import numpy as np
import torch

from ..params.int_layers import (ADD_SHIFT_LIMITS, ALIGN_SHIFT_LIMITS, INPUT_NAME,
                                 POOL_SHIFT_LIMITS)
from ..params.model_golden import quantize_input
from .capture import MOVES
from .export_format import (IntAdd, IntAddressShift, IntAvgPool2d, IntChannelShift, IntClamp,
                            IntConcat, IntFlatten, IntGlobalAvgPool, IntInput, IntMaxPool2d,
                            IntModel, IntPad, IntShift2d)
from .int_inference import pool_sums, run_node
from .quant_parse import QuantizeError
from .quant_weights import adder_weight_exp, exp_for, round_half_up, weight_node


__all__ = ["quantize_graph", "adder_requirements"]


#: Kinds whose output keeps the input's scale (an adder layer's weight requirement passes
#: through them to the op that sets the scale).
_KEEP_SCALE = MOVES + ("clamp",)


def adder_requirements(ops, act_bits):
    """``{op name or "input": smallest output exponent}`` that adder layers need.

    An adder layer's input must hold its weights on one scale (``max|w| <= (2^(a-1) - 1)
    2^E``). The requirement goes back through the ops that keep the scale (:data:`MOVES`,
    clamps) to the op that sets it (a weight layer, add, concat, average pooling) or the
    model's input, which then picks at least that exponent.
    """
    by_name = {op["name"]: op for op in ops}
    required = {}
    for op in ops:
        if op["kind"] != "weight" or op["pe"] != "adder":
            continue
        need = adder_weight_exp(op, act_bits)
        if need is None:
            continue
        src = op["inputs"][0]
        while src != INPUT_NAME and by_name[src]["kind"] in _KEEP_SCALE:
            src = by_name[src]["inputs"][0]
        required[src] = max(required.get(src, need), need)
    return required


def _clip(real, clip):
    if clip is None:
        return real
    return real.clamp(*clip)


def _clipped_top(lo, hi, clip):
    """``max |v|`` over real values in ``[lo, hi]`` (exact ``Fraction`` ends) once clamped to
    ``clip`` (``None`` ends unbounded)."""
    if clip is not None:
        c_lo, c_hi = (None if c is None else Fraction(c) for c in clip)
        lo, hi = (v if c_lo is None else max(v, c_lo) for v in (lo, hi))
        lo, hi = (v if c_hi is None else min(v, c_hi) for v in (lo, hi))
    return max(abs(lo), abs(hi))


def _bound(v, exp, lo, hi, default):
    """A real clamp bound on the grid ``2^exp``: round half up, saturated to ``[lo, hi]``."""
    if v is None:
        return default
    q = round_half_up(torch.ldexp(torch.tensor(float(v), dtype=torch.float64),
                                  torch.tensor(-exp)))
    return int(q.clamp(lo, hi))


class _Quantizer:
    """The exponents and widths chosen so far, and one node quantized at a time."""

    def __init__(self, act_bits, required):
        self.act_bits = act_bits
        self.qmax = (1 << (act_bits - 1)) - 1
        self.required = required
        self.exps = {}
        self.bits = {}

    def pick(self, maxabs, name, fallback):
        """The output exponent of op ``name`` for the largest real magnitude ``maxabs``: the
        smallest holding it (``fallback`` when everything is 0), at least what adder
        layers reading it need."""
        e = exp_for(maxabs, self.qmax)
        need = self.required.get(name)
        if e is None:
            e = fallback if need is None else need
        return e if need is None else max(e, need)

    def node(self, op, xs):
        """``(node, its int64 output, its exponent)`` of ``op`` on its integer inputs."""
        kind, name, a = op["kind"], op["name"], self.act_bits
        exps = [self.exps[i] for i in op["inputs"]]
        e = exps[0]
        if kind == "weight":
            layer, out = weight_node(op, xs[0], e, a, lambda m: self.pick(m, name, 0),
                                     op["clip"])
            return layer, out, layer.out_scale_exp
        if kind == "add":
            g = min(exps)
            in_shifts = tuple(int(ei - g) for ei in exps)
            if max(in_shifts) > ADD_SHIFT_LIMITS[1]:
                raise QuantizeError(f"{op['where']} adds tensors whose scales 2^{exps} are "
                                    f"more than 2^{ADD_SHIFT_LIMITS[1]} apart")
            y = sum(x << s for x, s in zip(xs, in_shifts))
            real = torch.ldexp(y.to(torch.float64), torch.tensor(g))
            if op["relu"]:
                real = real.clamp(min=0)
            out_exp = self.pick(_clip(real, op["clip"]).abs().max(), name, g)
            shift = int(np.clip(out_exp - g, *ALIGN_SHIFT_LIMITS))
            layer = IntAdd(in_shifts=in_shifts, shift=shift, relu=bool(op["relu"]),
                           act_bits=a, out_scale_exp=g + shift)
            return layer, run_node(layer, xs), g + shift
        if kind == "concat":
            lo = min(Fraction(int(x.min())) * Fraction(2) ** ei for x, ei in zip(xs, exps))
            hi = max(Fraction(int(x.max())) * Fraction(2) ** ei for x, ei in zip(xs, exps))
            out_exp = self.pick(_clipped_top(lo, hi, op["clip"]), name, max(exps))
            # An input far coarser than the others (all zeros in the calibration) still
            # needs its shift in range.
            out_exp = max(out_exp, max(exps) + ALIGN_SHIFT_LIMITS[0])
            shifts = tuple(int(out_exp - ei) for ei in exps)
            if max(shifts) > ALIGN_SHIFT_LIMITS[1]:
                raise QuantizeError(f"{op['where']} joins tensors whose scales 2^{exps} are "
                                    f"more than 2^{ALIGN_SHIFT_LIMITS[1]} apart")
            layer = IntConcat(shifts=shifts, act_bits=a, out_scale_exp=int(out_exp))
            return layer, run_node(layer, xs), int(out_exp)
        if kind in ("avgpool2d", "global_avgpool"):
            fields = dict(shift=0, act_bits=a)
            layer = IntAvgPool2d(kernel=op["kernel"], stride=op["stride"],
                                 padding=op["padding"], **fields) \
                if kind == "avgpool2d" else IntGlobalAvgPool(**fields)
            sums, n = pool_sums(layer, xs[0])
            scale = Fraction(2) ** e / n                  # the real average of S is S 2^e / N
            top = _clipped_top(int(sums.min()) * scale, int(sums.max()) * scale, op["clip"])
            out_exp = self.pick(top, name, e)
            layer.shift = int(np.clip(out_exp - e, *POOL_SHIFT_LIMITS))
            return layer, run_node(layer, xs), e + layer.shift
        if kind == "clamp":
            lo_a, hi_a = -(1 << (self.bits[op["inputs"][0]] - 1)), \
                (1 << (self.bits[op["inputs"][0]] - 1)) - 1
            lo = _bound(op["lo_real"], e, lo_a, hi_a, lo_a)
            hi = _bound(op["hi_real"], e, lo_a, hi_a, hi_a)
            layer = IntClamp(lo=lo, hi=hi)
        elif kind == "maxpool2d":
            layer = IntMaxPool2d(kernel=op["kernel"], stride=op["stride"],
                                 padding=op["padding"])
        elif kind == "flatten":
            layer = IntFlatten()
        elif kind == "pad":
            layer = IntPad(pads=tuple(op["pads"]))
        elif kind == "shift2d":
            layer = IntShift2d(offsets=op["offsets"])
        elif kind == "address_shift":
            layer = IntAddressShift(offsets=op["offsets"])
        elif kind == "channel_shift":
            layer = IntChannelShift(r=op["r"])
        else:
            raise QuantizeError(f"{op['where']}: no integer node for the op kind {kind!r}")
        return layer, run_node(layer, xs), e


def quantize_graph(graph, x, *, act_bits=8, input_scale_exp=None):
    """Quantize a :class:`~mulfree.host.capture.CapturedGraph` on calibration inputs ``x``.

    Parameters
    ----------
    graph : CapturedGraph
    x : float64 tensor ``[B, *graph.input_shape]``
        Calibration inputs.
    act_bits : int
        Width of every activation (checked by the caller).
    input_scale_exp : int, optional
        The input's exponent; default: from ``x`` (and the adder layers reading it).

    Returns
    -------
    IntModel
        Validated. A chain (every op reading the one before) has unnamed nodes without
        ``inputs``, as :func:`mulfree.host.ptq.quantize` makes for an ``nn.Sequential``;
        otherwise every node is named after its fx node and names its inputs. ``output`` is
        ``"argmax"`` if the model ends with a vector, else ``"none"``.

    Raises
    ------
    QuantizeError
        For a BN that cannot be folded, a NaN bias, or scales too far apart to align.
    """
    ops = graph.ops
    required = adder_requirements(ops, act_bits)
    q = _Quantizer(act_bits, required)
    if input_scale_exp is None:
        in_exp = q.pick(x.abs().max(), INPUT_NAME, 0)
    else:
        in_exp = int(input_scale_exp)
    model_input = IntInput(tuple(graph.input_shape), act_bits, in_exp)
    probe = IntModel(model_input, [IntFlatten()])       # only its input is used
    values = {INPUT_NAME: torch.as_tensor(quantize_input(probe, x.numpy()))}
    q.exps[INPUT_NAME], q.bits[INPUT_NAME] = in_exp, act_bits
    last_use = {}
    for i, op in enumerate(ops):
        for name in op["inputs"]:
            last_use[name] = i
    layers = []
    for i, op in enumerate(ops):
        layer, out, exp = q.node(op, [values[n] for n in op["inputs"]])
        for name in set(op["inputs"]):
            if last_use[name] == i:
                del values[name]
        values[op["name"]] = out
        q.exps[op["name"]] = int(exp)
        q.bits[op["name"]] = getattr(layer, "act_bits", None) or q.bits[op["inputs"][0]]
        layers.append(layer)
    chain = all(op["inputs"] == [ops[i - 1]["name"] if i else INPUT_NAME]
                for i, op in enumerate(ops))
    if not chain:
        for layer, op in zip(layers, ops):
            layer.name = op["name"]
            layer.inputs = tuple(op["inputs"])
    final = values[ops[-1]["name"]]
    int_model = IntModel(model_input, layers, output="argmax" if final.dim() == 2 else "none")
    int_model.validate()
    return int_model
