"""Post-training integer quantization of PyTorch models into the export format.

:func:`quantize` turns a PyTorch model into an :class:`~mulfree.host.export_format.IntModel`
(``docs/export_format.md``), choosing every scale from calibration data run through the
integer network (:mod:`mulfree.host.int_inference`). An ``nn.Sequential`` that
:func:`~mulfree.host.quant_parse.parse_model` reads becomes a chain of unnamed nodes, exactly
as it always did; any other model (or ``Sequential``) is captured with :mod:`torch.fx`
(:mod:`mulfree.host.capture`) and quantized as a graph (:mod:`mulfree.host.graph_quant`).
Part of :mod:`mulfree.host.quant`, which re-exports it.

Quantization rules
------------------
Every scale is a power of two, so every rescale in the network is a shift (the hardware has
no multiplier anywhere, ``docs/numerics.md``, "Post-processing and layers").

**Activations** are signed ``act_bits`` integers; the tensor after layer ``i`` stands for
``q * 2^O_i``. ``O_i`` is the smallest integer with ``max|v| <= (2^(a-1) - 1) * 2^O_i`` over
the calibration data, ``v`` being the real value the *integer* network produces at that point
(calibration runs through the already-quantized layers, so rounding and the BN approximation
below are accounted for). The input exponent comes from ``calib_x`` the same way unless
``input_scale_exp`` is given. Max pooling, flattening and table shifts keep the scale.

**Weights and accumulators.** With input exponent ``E`` and weight exponent ``w_exp`` the
accumulator counts units of ``2^A``, ``A = E + w_exp``:

* shift layers (:class:`~mulfree.host.layers.ShiftLinear`, ``ShiftConv2d``): the layer's own
  codes (``weight_codes()``), exact; ``w_exp = -max_shift``;
* multiplier baseline (``nn.Linear``, ``nn.Conv2d``): signed 8-bit weights in
  ``[-127, 127]`` (symmetric, so a negation is exact), ``w_exp`` the smallest exponent with
  ``max|w| <= 127 * 2^w_exp`` per layer, rounding half up;
* adder layers (``AdderLinear``, ``AdderConv2d``): AdderNet's L1 distance needs ``x`` and
  ``w`` on the *same* scale, so the weights are quantized with the input's exponent
  (``A = E``, term ``-|x - w|`` on ``2^E``), as signed ``act_bits`` integers. The input's
  exponent is chosen for the activations only. A weight beyond the activations' range
  ``[lo, hi] = [-2^(a-1), 2^(a-1) - 1]`` (on that grid) is clipped to the range's end, and
  exactly: every activation ``x`` lies in ``[lo, hi]``, so ``-|x - v| = -|x - hi| - (v - hi)``
  for ``v > hi`` (and ``-|x - lo| - (lo - v)`` for ``v < lo``), a constant per term that the
  channel's bias takes (``bias += -sum excess``, before the BatchNorm scale). The bias must
  fit its register (``acc_width`` bits): the exponent of the tensor feeding an adder layer is
  raised, if needed, to the smallest one at which every folded bias fits
  (:func:`~mulfree.host.quant_weights.adder_weight_exp`; at the exponent holding the largest
  weight nothing is clipped, as before). AdderNet's weights grow well beyond its
  activations; holding them all instead would leave the activations a few levels (ResNet-8
  on digits: 88.6 % instead of 98.3 % at 8 bits, float 99.2 %).

**Post-processing.** ``out = sat(relu?(round_half_up(acc + bias) >> shift))`` per output
channel (:func:`mulfree.params.layer_golden.postprocess`). The float bias ``b`` becomes
``round_half_up(b * 2^-A)`` on the accumulator grid and ``shift = O - A``. Shifts beyond the
format's range ``[-act_bits, acc_width + 1]`` are clamped (which changes nothing: those ends
already give 0 / saturate every nonzero value); a bias beyond ``acc_width`` bits saturates.

**BatchNorm folding** (BN directly after a weight layer, eval statistics):
``BN(z) = s z + t`` with ``s = gamma / sqrt(var + eps)``, ``t = beta - s * mean`` per channel.

* multiplier layers: folded exactly into the float weights and bias (``w' = s w``,
  ``b' = s b + t``) before weight quantization, the usual BN folding;
* shift and adder layers: a shift weight cannot absorb an arbitrary factor and ``|x - w|``
  does not commute with one, so ``s`` is approximated by ``sign(s) * 2^e``,
  ``e = round(log2|s|)`` (nearest in the log domain, decided exactly by
  :func:`~mulfree.host.layers.round_log2`; relative error of the scale at most
  ``2^(1/2)``), and ``t`` recentred as ``beta - sign(s) 2^e mean`` so the rounding moves no
  channel's centre. That is AdderNet's "BN as a per-channel power-of-two scale plus bias":
  ``bias = round_half_up((sign(s) b + t 2^-e) 2^-A)``, ``shift = O - A - e``. A negative
  ``s`` of a shift layer negates that channel's codes (exact: flip the sign bit); an adder
  layer cannot negate ``-sum|x - w|``, so a BN scale ``<= 0`` on an adder layer is an error.
  A BN scale of exactly 0 on a shift layer zeroes the channel's codes (the output is ``t``).

ReLU sets the ``relu`` flag of the preceding weight layer (through max pooling and
flattening, which commute with it). ``Shift2d`` directly before a convolution becomes the
convolution's per-input-channel table ``shifts`` (kernel 1 or 3 only: the format moves a
channel by at most one pixel). ``nn.Identity`` and dropout are skipped.

Graphs
------
A captured graph (:class:`~mulfree.host.capture.CapturedGraph`) is quantized op by op in
topological order, each op calibrated on the outputs of the already-quantized integer graph.
Every op that *rescales* (a weight layer, an add, a concat, an average pooling) picks its
output exponent ``O`` from the real values it produces, as above; every other op (max pooling,
flattening, padding, clamps, the shifts) keeps its input's exponent and width.

* **Weight layers** follow the rules above, each with its own PE kind (mult first conv and
  classifier with an adder or shift body, shift + adder pairs...); a depthwise convolution
  (``groups = C``) is quantized like a dense one (one weight exponent per layer).
* **Add** of inputs on ``2^e_i``: the common grid is ``g = min e_i`` (the finest input is not
  shifted, nothing is lost before the one rounding), ``in_shifts[i] = e_i - g``, the exact
  sum ``y = sum x_i 2^in_shifts[i]`` stands for ``y 2^g``; ``O`` from ``max|y 2^g|``
  (after the ReLU when the add's only reader is a ReLU, folded as ``relu``), ``shift = O - g``
  (clamped to the format's ``[-16, 62]``, ``O = g + shift``).
* **Concat**: ``O`` from the largest real magnitude of all inputs, ``shifts[i] = O - e_i``.
* **Average pooling** (and global): ``O`` from the real averages ``S 2^E / N`` (exact
  rationals), ``shift = O - E`` (clamped to ``[-16, 32]``).
* **Clamp** (ReLU6, Hardtanh, ``torch.clamp``; a ReLU that cannot be folded is ``lo = 0``):
  each real bound ``b`` becomes ``round_half_up(b 2^-E)`` on the input's grid ``2^E``,
  saturated to the input's range (an absent bound is the range's end). The op that sets the
  clamp's input scale (reached through max pooling, flattening, padding and the shifts, each
  with no other reader) calibrates on the clamped values, since what it saturates beyond them
  is clamped anyway, and takes the ReLU when the lower bound is ``>= 0``.
* **Adder layers' weights** (the exponent at which their folded bias fits, see above) raise
  the exponent of the op that sets their input's scale: the requirement goes back through the
  ops that keep the scale (max pooling, flattening, padding, clamps, the shifts) to the weight
  layer, add, concat, pooling or model input that sets it, which then picks at least that
  exponent. An add or a concat raises its *own* output exponent (its inputs keep theirs, the
  add's ``in_shifts`` and ``shift`` align them). Several adder readers: the largest
  requirement.
* An op whose calibration outputs are all 0 keeps its input's grid (an add: ``g``; a concat:
  its coarsest input's; a weight layer: 0, as in a chain).

No node multiplies: every rescaling is a shift, averaging a sum and an exact rounded division.
A graph that is a chain (every op reads the one before) gets unnamed nodes without
``inputs``; otherwise every node is named after its fx node.
"""

import numpy as np
import torch
from torch import nn

from ..params.int_layers import SCALE_EXP_LIMITS
from ..params.model_golden import quantize_input
from .capture import capture
from .export_format import IntFlatten, IntInput, IntMaxPool2d, IntModel
from .graph_quant import quantize_graph
from .int_inference import run_node
from .quant_parse import QuantizeError, parse_model
from .quant_weights import adder_weight_exp, exp_for, round_half_up, weight_node


__all__ = ["quantize", "round_half_up", "exp_for"]




def _quantize_chain(items, x, act_bits, input_scale_exp):
    """The ``nn.Sequential`` path: :func:`parse_model`'s items, one after the other."""
    qmax = (1 << (act_bits - 1)) - 1

    # The exponent each producer must at least give its output: an adder consumer's weights.
    required = {}                       # item index (-1 = the input) -> minimal exponent
    producer = -1
    for i, it in enumerate(items):
        if it["kind"] != "weight":
            continue
        if it["pe"] == "adder":
            need = adder_weight_exp(it, act_bits)
            if need is not None:
                required[producer] = max(required.get(producer, need), need)
        producer = i

    def pick(maxabs, idx):
        e = exp_for(maxabs, qmax)
        need = required.get(idx)
        if e is None:
            e = need if need is not None else 0
        return e if need is None else max(e, need)

    if input_scale_exp is None:
        in_exp = pick(x.abs().max(), -1)
    else:
        in_exp = int(input_scale_exp)
    model_input = IntInput(tuple(x.shape[1:]), act_bits, in_exp)
    probe = IntModel(model_input, [IntFlatten()])       # only its input is used
    xq = torch.as_tensor(quantize_input(probe, x.numpy()))

    layers, exp = [], in_exp
    for i, it in enumerate(items):
        if it["kind"] == "flatten":
            layer = IntFlatten()
        elif it["kind"] == "maxpool2d":
            layer = IntMaxPool2d()
        else:
            layer, xq = weight_node(it, xq, exp, act_bits, lambda m, i=i: pick(m, i))
            exp = layer.out_scale_exp
            layers.append(layer)
            continue
        layers.append(layer)
        xq = run_node(layer, [xq])

    int_model = IntModel(model_input, layers, output="argmax" if xq.dim() == 2 else "none")
    int_model.validate()
    return int_model


def quantize(model, calib_x, *, act_bits=8, input_scale_exp=None) -> IntModel:
    """Post-training integer quantization of ``model`` into an :class:`IntModel`.

    Parameters
    ----------
    model : torch.nn.Module
        An ``nn.Sequential`` of the modules :func:`~mulfree.host.quant_parse.parse_model`
        reads (nested ``Sequential`` are flattened) becomes a chain exactly as before; any
        other model (or ``Sequential``) is captured with :mod:`torch.fx`
        (:func:`~mulfree.host.capture.capture`) and becomes a graph. What is supported:
        :data:`~mulfree.host.quant_parse.SUPPORTED`. BatchNorm uses its running
        statistics. The model is not modified.
    calib_x : float tensor ``[B, C, H, W]`` or ``[B, features]``
        Calibration inputs; every activation exponent is chosen from them (module docstring).
    act_bits : int
        Width of every activation (2..16).
    input_scale_exp : int, optional
        The input's exponent; default: from ``calib_x``.

    Returns
    -------
    IntModel
        Validated; ``output`` is ``"argmax"`` if the model ends with a vector, else ``"none"``.

    Raises
    ------
    QuantizeError
        For an unsupported module, function or arrangement (naming the module's path, e.g.
        ``model.2.1``, or the fx node and its target), a model torch.fx cannot trace, or a BN
        that cannot be folded.
    ValueError
        For a bad ``act_bits``, ``calib_x`` or ``input_scale_exp``.
    """
    if isinstance(act_bits, bool) or not isinstance(act_bits, int) or not 2 <= act_bits <= 16:
        raise ValueError(f"act_bits must be an integer in 2..16, not {act_bits!r}")
    if input_scale_exp is not None and (
            isinstance(input_scale_exp, bool)
            or not isinstance(input_scale_exp, (int, np.integer))
            or not SCALE_EXP_LIMITS[0] <= input_scale_exp <= SCALE_EXP_LIMITS[1]):
        raise ValueError(f"input_scale_exp must be None or an integer in "
                         f"{list(SCALE_EXP_LIMITS)}, not {input_scale_exp!r}")
    if not isinstance(model, nn.Module):
        raise QuantizeError(f"model must be a torch.nn.Module, not {type(model).__name__}")
    x = torch.as_tensor(calib_x).detach().to(torch.float64)
    if x.dim() not in (2, 4) or x.shape[0] < 1:
        raise ValueError(f"calib_x must be a batch [B, features] or [B, C, H, W], "
                         f"not {tuple(x.shape)}")
    if torch.isnan(x).any():
        raise ValueError("calib_x holds NaN, which has no integer code")
    items = None
    if isinstance(model, nn.Sequential):
        try:
            items = parse_model(model)
        except QuantizeError:
            items = None                  # maybe a graph the chain reader does not know
    if items is not None:
        return _quantize_chain(items, x, act_bits, input_scale_exp)
    # Two samples tell the batch dimension from the others in the propagated shapes.
    graph = capture(model, x[:2] if len(x) > 1 else torch.cat([x, x]))
    if tuple(graph.input_shape) != tuple(x.shape[1:]):
        raise QuantizeError(f"the model's input has shape {list(graph.input_shape)}, "
                            f"calib_x's samples {list(x.shape[1:])}")
    return quantize_graph(graph, x, act_bits=act_bits, input_scale_exp=input_scale_exp)
