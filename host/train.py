"""Float training of the demo networks on scikit-learn's digits (:mod:`mulfree.host.models`).

Four small ``nn.Sequential`` stacks on the 8x8 digits:

* ``deepshift_mlp`` — DeepShift-Q multilayer perceptron.
* ``deepshift_cnn`` — DeepShift-Q convolutional network. (Q rather than PS: trained from
  scratch on digits, PS ended 2-3 points lower in our runs.)
* ``adder_cnn`` — AdderNet: every weight layer an adder layer followed by BatchNorm (SEEDS.md
  section 2: the authors say the BatchNorm is required), the classifier too.
* ``shiftadd_cnn`` — ShiftAddNet: each convolution is a DeepShift-PS layer then an adder
  layer, and a DeepShift-PS classifier.

and three residual networks (ResNet-8) on the digits upsampled to 16x16: ``resnet8_shift``,
``resnet8_adder`` and ``resnet8_shiftadd`` (DeepShift, AdderNet and ShiftAddNet forms; the
AdderNet and ShiftAddNet forms keep the first convolution and the classifier as
multiplications, as the papers do).

Training (:func:`train_model`) is seeded and reproducible at any thread count: the whole run
happens inside :func:`torch.random.fork_rng` (the caller's random state is left alone) with
deterministic algorithms on :data:`TRAIN_THREADS` threads (so no float reduction's order
depends on the machine), and the minibatch order comes from its own generator. Optimizers: Adam for
ordinary weights, RAdam for DeepShift-PS ``shift`` / ``sign`` (PS needs an RAdam-like
optimizer, SEEDS.md section 1), and AdderNet's rule for adder weights: SGD with momentum on
the gradient rescaled by :class:`~mulfree.host.layers.AdderLRScaler` (``eta = 0.2``); cosine
learning-rate decay for all.

:func:`run_train` is what ``mulfree train`` runs: train, save the float weights
(:func:`mulfree.host.export.save_float`), and, once :mod:`mulfree.host.quant` provides
``quantize`` and ``int_forward``, quantize, export
(:func:`~mulfree.host.export_format.write_export`) and measure the integer and golden-model
accuracies.
"""

import json
import logging
import math
import os
import time

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .datasets import DIGITS_SCALE, digits_split
from ..params.safe_io import write_atomic
from .layers import (AdderConv2d, AdderLinear, AdderLRScaler, ShiftConv2d, ShiftLinear,
                     round_log2)
from .models import MODELS, build_model, check_model_name, evaluate, model_data


__all__ = ["MODELS", "DEFAULT_EPOCHS", "DIGITS_SCALE", "digits_split", "build_model",
           "train_model", "snap_bn_scales", "weight_bn_pairs", "evaluate", "run_train",
           "TRAIN_THREADS"]


log = logging.getLogger(__name__)

#: Epochs ``mulfree train`` uses when ``--epochs`` is not given.
DEFAULT_EPOCHS = {"deepshift_mlp": 20, "deepshift_cnn": 15, "adder_cnn": 15,
                  "shiftadd_cnn": 15, "resnet8_shift": 15, "resnet8_adder": 24,
                  "resnet8_shiftadd": 12}
#: Threads training uses, whatever the machine has (the figures must not depend on it).
TRAIN_THREADS = 1

_BATCH = 64


def _check_count(param, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{param} must be an integer >= {minimum}, not {value!r}")
    return int(value)


# Training -----------------------------------------------------------------------------------

def _optimizers(model, epochs, steps_per_epoch, lr_scale=1.0, skip=frozenset()):
    """The optimizers of ``model`` and their cosine learning-rate schedules.

    Adam for ordinary weights (DeepShift-Q, BatchNorm, biases); RAdam with a large step for
    DeepShift-PS ``shift`` and ``sign`` (they move in units of one power of two / one sign
    step, and PS needs an RAdam-like optimizer, SEEDS.md section 1); SGD with momentum for
    adder weights, whose gradients :class:`AdderLRScaler` rescales (AdderNet's rule).
    """
    adder = [m.weight for m in model.modules() if isinstance(m, (AdderLinear, AdderConv2d))]
    ps = [p for m in model.modules()
          if isinstance(m, (ShiftLinear, ShiftConv2d)) and m.mode == "ps"
          for p in (m.shift, m.sign)]
    special = {id(p) for p in adder + ps} | set(skip)
    rest = [p for p in model.parameters() if id(p) not in special]
    opts = [torch.optim.Adam(rest, lr=1e-2 * lr_scale)]
    if ps:
        opts.append(torch.optim.RAdam(ps, lr=0.1 * lr_scale))
    if adder:
        opts.append(torch.optim.SGD(adder, lr=0.05 * lr_scale, momentum=0.9))
    total = epochs * steps_per_epoch
    scheds = [torch.optim.lr_scheduler.LambdaLR(
        o, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total) / total)))
        for o in opts]
    return opts, scheds


_WEIGHT_LAYERS = (ShiftLinear, ShiftConv2d, AdderLinear, AdderConv2d)


def weight_bn_pairs(model, example=None):
    """The ``(weight layer, BatchNorm)`` pairs where the BatchNorm reads the shift or adder
    layer's output directly, in execution order.

    With ``example`` (a small input batch) the pairs are found by running the model once in
    eval mode (no BatchNorm statistic changes; every module's mode is restored) and matching
    each BatchNorm's input tensor with the output of the layer that produced it, so residual
    networks and nested blocks work. Without it, ``model`` must be an ``nn.Sequential`` (nested
    ones are flattened) and the pairs are its adjacent modules.
    """
    if example is None:
        def flat(module):
            for child in module.children():
                if isinstance(child, nn.Sequential):
                    yield from flat(child)
                else:
                    yield child
        if not isinstance(model, nn.Sequential):
            raise ValueError(f"weight_bn_pairs needs an example input for a "
                             f"{type(model).__name__}, which is not an nn.Sequential")
        mods = list(flat(model))
        return [(a, b) for a, b in zip(mods, mods[1:])
                if isinstance(a, _WEIGHT_LAYERS)
                and isinstance(b, (nn.BatchNorm1d, nn.BatchNorm2d))]
    produced, keep, pairs = {}, [], []

    def after_weight(module, inputs, output):
        produced[id(output)] = module
        keep.append(output)

    def before_bn(module, inputs):
        source = produced.get(id(inputs[0]))
        if source is not None and all(b is not module for _, b in pairs):
            pairs.append((source, module))

    modes = {m: m.training for m in model.modules()}
    handles = []
    for m in model.modules():
        if isinstance(m, _WEIGHT_LAYERS):
            handles.append(m.register_forward_hook(after_weight))
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            handles.append(m.register_forward_pre_hook(before_bn))
    try:
        model.eval()
        with torch.no_grad():
            model(torch.as_tensor(example))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return pairs


def _adder_bns(model, example=None):
    """The affine BatchNorms directly after an adder layer."""
    return [b for a, b in weight_bn_pairs(model, example)
            if isinstance(a, (AdderLinear, AdderConv2d)) and b.affine]


#: Smallest BatchNorm scale after an adder layer (see :func:`train_model`).
_MIN_ADDER_BN_SCALE = 1e-3


def train_model(name, *, epochs=None, seed=0, progress=True, data=None):
    """Train the demo model ``name`` on the digits training split; measure it on the test split.

    Parameters
    ----------
    name : str
        One of :data:`MODELS`.
    epochs : int, optional
        Passes over the training set (default :data:`DEFAULT_EPOCHS`).
    seed : int
        Seeds the initialisation, dropout and minibatch order (the data split is
        ``digits_split(0)`` unless ``data`` is given). The same seed gives the same weights.
    progress : bool
        Show a tqdm progress bar (one step per epoch) on stderr.
    data : dict, optional
        A :func:`digits_split` result, to avoid reloading it.

    Returns
    -------
    (torch.nn.Module, dict)
        The trained model in eval mode, and metrics: ``model``, ``seed``, ``epochs``,
        ``float_train_accuracy``, ``float_accuracy`` (test), ``seconds`` (training time).
    """
    from tqdm.auto import tqdm
    check_model_name(name)
    epochs = DEFAULT_EPOCHS[name] if epochs is None else _check_count("epochs", epochs, 1)
    seed = _check_count("seed", seed, 0)
    data = model_data(name) if data is None else data
    x_train = torch.as_tensor(data["x_train"])
    example = x_train[:2]
    y_train = torch.as_tensor(data["y_train"])
    start = time.perf_counter()
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        # One thread: a float reduction's order (and so the trained weights) must not depend
        # on how many cores the machine has.
        torch.set_num_threads(TRAIN_THREADS)
        torch.use_deterministic_algorithms(True)
        try:
            torch.manual_seed(seed)
            model = build_model(name)
            order = torch.Generator().manual_seed(seed)
            tune = epochs // 4
            main = epochs - tune
            bar = tqdm(total=epochs, desc=name, disable=not progress, leave=True)
            # Closed on the way out too: an interrupted run's bar is drawn before the
            # command's last line ("interrupted"), not after it.
            try:
                _fit(model, x_train, y_train, main, order, bar, frozen=[], lr_scale=1.0,
                     example=example)
                if tune:
                    before = evaluate(model, data["x_test"], data["y_test"])
                    frozen = snap_bn_scales(model, example)
                    snapped = evaluate(model, data["x_test"], data["y_test"])
                    _fit(model, x_train, y_train, tune, order, bar, frozen=frozen,
                         lr_scale=0.1, example=example)
            finally:
                bar.close()
        finally:
            torch.use_deterministic_algorithms(deterministic)
            torch.set_num_threads(threads)
    seconds = time.perf_counter() - start
    model.eval()
    metrics = {
        "model": name, "seed": seed, "epochs": epochs, "pow2_bn_epochs": tune,
        "float_train_accuracy": evaluate(model, data["x_train"], data["y_train"]),
        "float_accuracy": evaluate(model, data["x_test"], data["y_test"]),
        "seconds": round(seconds, 2),
    }
    if tune:
        metrics["float_accuracy_before_pow2_bn"] = before
        metrics["float_accuracy_just_after_snap"] = snapped
    return model, metrics


def _fit(model, x_train, y_train, epochs, order, bar, *, frozen, lr_scale, example=None):
    """``epochs`` passes of minibatch training; the BatchNorms ``frozen`` stay in eval mode
    with their scale fixed."""
    steps = math.ceil(len(x_train) / _BATCH)
    opts, scheds = _optimizers(model, max(epochs, 1), steps, lr_scale,
                               skip={id(bn.weight) for bn in frozen})
    scaler = AdderLRScaler(model, eta=0.2)
    # The integer model cannot negate -sum|x - w| (mulfree.host.quant refuses a BN scale <= 0
    # after an adder layer), so those BN scales are kept positive.
    adder_bns = [bn for bn in _adder_bns(model, example) if bn not in frozen]
    for _ in range(epochs):
        model.train()
        for bn in frozen:
            bn.eval()
        perm = torch.randperm(len(x_train), generator=order)
        total_loss = 0.0
        for i in range(0, len(x_train), _BATCH):
            idx = perm[i:i + _BATCH]
            if len(idx) < 2:         # BatchNorm needs two samples
                continue
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss.backward()
            scaler.scale_grads()
            for o in opts:
                o.step()
            for s in scheds:
                s.step()
            with torch.no_grad():
                for bn in adder_bns:
                    bn.weight.clamp_(min=_MIN_ADDER_BN_SCALE)
            total_loss += float(loss.detach()) * len(idx)
        bar.update()
        bar.set_postfix(loss=f"{total_loss / len(x_train):.4f}")


def snap_bn_scales(model, example=None):
    """Round the scale of every BatchNorm after a shift or adder layer to a power of two.

    The integer model folds such a BN as ``sign(s) 2^round(log2|s|)`` with
    ``s = gamma / sqrt(running_var + eps)`` (:mod:`mulfree.host.quant`): a shift weight cannot
    absorb another factor and ``|x - w|`` does not commute with one. Here ``gamma`` is set so
    that ``s`` is exactly that power of two, keeping ``y = s (z - mean) + beta`` centred, so
    the float model and the integer model agree; :func:`train_model` then fine-tunes the
    other parameters with these BNs frozen. In place.

    ``example`` is a small input batch, needed unless ``model`` is an ``nn.Sequential``
    (:func:`weight_bn_pairs`).

    Returns
    -------
    list of BatchNorm modules
        Those snapped.
    """
    snapped = []
    pairs = weight_bn_pairs(model, example)
    with torch.no_grad():
        for a, b in pairs:
            if b.affine:
                sd = torch.sqrt(b.running_var + b.eps)
                s = b.weight / sd
                # Exactly quant's power (round_log2): a float log2 would pick the other
                # power for a scale a few ulps from 2^(k+1/2), and the snapped model would
                # then disagree with its integer model.
                e = round_log2(torch.where(s == 0, torch.ones_like(s), s)).to(s.dtype)
                b.weight.copy_(torch.where(s == 0, s, torch.sign(s) * torch.exp2(e)) * sd)
                snapped.append(b)
    return snapped


# mulfree train -------------------------------------------------------------------------------

def _quant_module():
    """:mod:`mulfree.host.quant` if it provides ``quantize`` and ``int_forward``, else None."""
    try:
        from . import quant
    except ImportError:
        return None
    if not (callable(getattr(quant, "quantize", None))
            and callable(getattr(quant, "int_forward", None))):
        return None
    return quant


def _integer_metrics(model, data, out_dir):
    """Quantize, export to ``out_dir``, and measure the integer and golden accuracies."""
    from .export import export, measure_accuracies
    int_model = export(model, out_dir, torch.as_tensor(data["x_train"]), act_bits=8)
    return measure_accuracies(int_model, out_dir, data["x_test"], data["y_test"])


def run_train(models="all", *, epochs=None, seed=0, output="out/train", progress=True,
              echo=print):
    """Train ``models`` (a name, a list of names or ``"all"``); export and measure each.

    For every model: train (:func:`train_model`), print its float test accuracy and, if
    :mod:`mulfree.host.quant` provides ``quantize`` and ``int_forward``, quantize with the
    training images as calibration data, write the export to ``output/<model>/``, and measure
    the integer (``int_forward``) and golden-model (:func:`mulfree.params.model_golden.predict`
    on the loaded export) accuracies on the whole test split. The trained float weights are
    saved as ``output/<model>/float.safetensors`` (:func:`mulfree.host.export.save_float`;
    ``mulfree export`` re-exports from them) whether or not the quantizer is there.
    ``output/<model>/metrics.json`` holds the numbers and names the float-weights file
    (``float_weights``, relative to its folder); without the quantizer it holds the float
    metrics only and says so.

    Returns
    -------
    list of dict
        The metrics of each model.

    Raises
    ------
    ValueError
        An unknown model name or a bad ``epochs`` / ``seed`` (before anything is trained).
    """
    names = list(MODELS) if models == "all" else \
        [models] if isinstance(models, str) else list(models)
    for name in names:
        if name not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)} or all, not {name!r}")
    if epochs is not None:
        _check_count("epochs", epochs, 1)
    _check_count("seed", seed, 0)
    from .export import FLOAT_FILE, save_float
    quant = _quant_module()
    if quant is None:
        echo("mulfree.host.quant (quantize, int_forward) is not available: float metrics only")
    results = []
    for name in names:
        data = model_data(name)
        model, metrics = train_model(name, epochs=epochs, seed=seed, progress=progress,
                                     data=data)
        out_dir = os.path.join(output, name)
        os.makedirs(out_dir, exist_ok=True)
        save_float(model, os.path.join(out_dir, FLOAT_FILE), name=name)
        metrics["float_weights"] = FLOAT_FILE
        line = (f"{name}: float accuracy {100 * metrics['float_accuracy']:.2f}% "
                f"({metrics['epochs']} epochs, {metrics['seconds']:.1f} s)")
        if quant is None:
            metrics["quantized"] = "not run: mulfree.host.quant not available"
        else:
            metrics.update(_integer_metrics(model, data, out_dir))
            line += (f", integer {100 * metrics['int_accuracy']:.2f}%, "
                     f"golden {100 * metrics['golden_accuracy']:.2f}%")
        path = os.path.join(out_dir, "metrics.json")
        write_atomic(path, json.dumps(metrics, indent=2) + "\n")
        echo(line)
        log.info(f"wrote {os.path.join(out_dir, FLOAT_FILE)}")
        log.info(f"wrote {path}")
        results.append(metrics)
    return results
