"""The ops of a captured graph, one builder per kind: :class:`OpBuilder`.

:mod:`mulfree.host.capture` walks the fx graph and calls these builders with the fx node
and its arguments; each checks what the integer format holds, folds what it can into the op
it reads (BatchNorm, ReLU, clamps' calibration bounds, ``Shift2d`` into a convolution) and
adds the op (:class:`~mulfree.host.capture.CapturedGraph` lists the fields). Part of
:mod:`mulfree.host.quant`.
"""

import numpy as np
import torch.fx
from torch import nn

from ..params import shift_golden
from ..params.int_layers import (INPUT_NAME, MAX_DIM, MAX_INPUTS, MAX_KERNEL, MAX_NAME_LENGTH,
                                 MAX_PADDING, MAX_POOL_KERNEL, MAX_POOL_WINDOW, MAX_SHIFT2D,
                                 MAX_STRIDE)
from .quant_parse import CONV_TYPES, SUPPORTED, QuantizeError, conv_geometry, weight_pe
from .zero_flop_layers import AddressShift2d, Shift2d


__all__ = ["MOVES", "RESCALING", "OpBuilder", "pair", "supported", "shape_text"]


#: Op kinds that keep their input's scale and only move or select values (zero fill): a ReLU
#: or a saturation commutes with them.
MOVES = ("maxpool2d", "flatten", "pad", "shift2d", "address_shift", "channel_shift")
#: Op kinds that choose their output's scale.
RESCALING = ("weight", "add", "concat", "avgpool2d", "global_avgpool")


def pair(v):
    """``(a, b)`` of an integer or a pair of integers (one-element lists too); None else."""
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v), int(v)
    if isinstance(v, (tuple, list)) and len(v) == 1:
        return pair(v[0])
    if isinstance(v, (tuple, list)) and len(v) == 2 and all(
            isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in v):
        return int(v[0]), int(v[1])
    return None



def shape_text(shape):
    """A batch's shape in a message, ``[B, 4, 8, 8]`` (the sample's batch size is no fact of
    the model)."""
    return "[" + ", ".join(["B"] + [str(d) for d in shape[1:]]) + "]"


def supported():
    """``"quantize supports: ..."``, the end of every capture message."""
    return f"quantize supports: {', '.join(SUPPORTED)}"


class OpBuilder:
    """The ops of a captured graph (``ops``: name -> op, in order; ``handle``: fx node -> the
    op name holding its value) and one builder per kind.

    A subclass provides the facts about fx nodes: ``where(n)`` (the node in a message),
    ``shape(n)`` (its tensor's shape, or None), ``readers(n)`` (how many ops read it) and
    ``bound(n)`` (its arguments by name, shape arithmetic replaced by its values).
    """

    def __init__(self):
        self.ops = {}
        self.handle = {}

    def fail(self, n, why="is not supported"):
        """The one-line :class:`QuantizeError` for fx node ``n``."""
        return QuantizeError(f"{self.where(n)} {why}; {supported()}")

    def new_op(self, n, kind, inputs, name=None, **fields):
        """Add an op of ``kind`` for fx node ``n`` reading the ops ``inputs``; returns it."""
        name = self.unique(name or n.name)
        op = dict(kind=kind, name=name, inputs=list(inputs), where=self.where(n),
                  readers=self.readers(n), relu=False, clip=None)
        op.update(fields)
        self.ops[name] = op
        self.handle[n] = name
        return op

    def unique(self, name):
        """``name``, made a valid node name no op has yet (not ``input``, not too long)."""
        if name == INPUT_NAME or len(name) > MAX_NAME_LENGTH - 8:
            name = f"n{len(self.ops)}_{name[-(MAX_NAME_LENGTH - 24):]}"
        base, i = name, 1
        while name in self.ops:
            name, i = f"{base}_{i}", i + 1
        return name

    def alias(self, n, name):
        """``n``'s value is op ``name``'s (a folded node); its readers are the op's now."""
        self.handle[n] = name
        if name in self.ops:
            self.ops[name]["readers"] = self.readers(n)

    def tensor_in(self, n, arg):
        """The op name holding tensor ``arg`` that ``n`` reads; an error for a constant."""
        if isinstance(arg, torch.fx.Node) and arg in self.handle:
            return self.handle[arg]
        raise self.fail(n, f"reads {arg!r:.60}, which is not a tensor computed from the "
                           f"model's input (a constant, a parameter or a Python value)")

    def fold_target(self, name):
        """The op setting the scale of op ``name``'s output, when every op from it to
        ``name`` only moves values (:data:`MOVES`) and has no other reader; else None."""
        op = self.ops.get(name)
        while op is not None and op["readers"] == 1:
            if op["kind"] in RESCALING:
                return op
            if op["kind"] not in MOVES:
                return None
            op = self.ops.get(op["inputs"][0])
        return None

    def shift_op(self, n, m, x):
        """A ``Shift2d``, ``AddressShift2d`` or ``ChannelShift`` module's op."""
        if isinstance(m, Shift2d):
            off = np.asarray(m.offsets, dtype=np.int64).reshape(-1, 2)
            if np.abs(off).max(initial=0) > MAX_SHIFT2D:
                raise self.fail(n, f"has kernel {m.kernel}; a shift moves a channel by at "
                                   f"most {MAX_SHIFT2D} pixels (kernel up to "
                                   f"{2 * MAX_SHIFT2D + 1})")
            return self.new_op(n, "shift2d", [self.tensor_in(n, x)], offsets=off, module=m,
                               path=f"model.{n.target}")
        if isinstance(m, AddressShift2d):
            dy, dx = shift_golden.address_groups(m.channels, m.group)
            off = np.stack([np.asarray(dy), np.asarray(dx)], axis=1).astype(np.int64)
            return self.new_op(n, "address_shift", [self.tensor_in(n, x)], offsets=off)
        return self.new_op(n, "channel_shift", [self.tensor_in(n, x)], r=int(m.r))

    def rank(self, n, x, want):
        """``x``'s shape, which must have ``want`` dimensions (with the batch)."""
        shape = self.shape(x)
        if shape is None or len(shape) != want:
            need = "[B, C, H, W]" if want == 4 else "[B, features]"
            raise self.fail(n, f"reads a tensor of shape {shape_text(shape or (0,))}; it needs "
                               f"{need}")
        return shape

    def weight(self, n, m, x):
        """A linear or convolution module: a weight op (a ``Shift2d`` op before it folded)."""
        conv = isinstance(m, CONV_TYPES)
        path = f"model.{n.target}"
        name = self.tensor_in(n, x)
        self.rank(n, x, 4 if conv else 2)
        item = dict(path=path, module=m, pe=weight_pe(m), conv=conv, bn=None, shift2d=None)
        if conv:
            item["geometry"] = conv_geometry(path, m, depthwise=True, node=n.name)
            (kh, kw), stride, padding = item["geometry"]
            if max(kh, kw) > MAX_KERNEL or max(stride) > MAX_STRIDE \
                    or padding[0] >= kh or padding[1] >= kw or max(padding) > MAX_PADDING:
                raise self.fail(n, f"has kernel {(kh, kw)}, stride {stride}, padding "
                                   f"{padding}; the format holds kernels up to {MAX_KERNEL}, "
                                   f"strides up to {MAX_STRIDE} and padding below the kernel "
                                   f"and up to {MAX_PADDING}")
            src = self.ops.get(name)
            # Any Shift2d the format holds folds (offsets up to MAX_SHIFT2D: the convolution's
            # shift table); the compiler runs it on the core when the core's shift_reach covers
            # it, else on the host.
            if src is not None and src["kind"] == "shift2d" and src.get("module") is not None \
                    and src["readers"] == 1:
                item["shift2d"] = (src["path"], src["module"])
                name = src["inputs"][0]
                del self.ops[src["name"]]
        return self.new_op(n, "weight", [name], **item)

    def batchnorm(self, n, m, x):
        """BatchNorm folded into the weight op it directly follows."""
        name = self.tensor_in(n, x)
        op = self.ops.get(name)
        want = nn.BatchNorm2d if op is not None and op.get("conv") else nn.BatchNorm1d
        if op is None or op["kind"] != "weight" or op["readers"] != 1 or op["bn"] is not None \
                or op["relu"] or op["clip"] is not None or not isinstance(m, want):
            raise self.fail(n, "must directly follow a weight layer that nothing else reads "
                               "(BatchNorm1d a linear one, BatchNorm2d a convolution)")
        if m.running_mean is None or m.running_var is None:
            raise self.fail(n, "has no running statistics (track_running_stats=False)")
        op["bn"] = (f"model.{n.target}", m)
        self.alias(n, name)

    def relu(self, n, x):
        """ReLU folded into the weight op or add setting its input's scale, else a clamp."""
        name = self.tensor_in(n, x)
        target = self.fold_target(name)
        if target is not None and target["kind"] in ("weight", "add"):
            target["relu"] = True
            return self.alias(n, name)
        return self.new_op(n, "clamp", [name], lo_real=0.0, hi_real=None)

    def clamp(self, n, x, lo, hi):
        """A clamp op to real bounds ``[lo, hi]`` (None: unbounded); calibrates its producer."""
        for v in (lo, hi):
            if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool)
                                      and np.isfinite(v)):
                raise self.fail(n, f"clamps to {v!r:.60}; the bounds must be finite numbers "
                                   f"(or None)")
        if lo is None and hi is None or (lo is not None and hi is not None and lo > hi):
            raise self.fail(n, f"clamps to [{lo}, {hi}]; it needs lo <= hi, one of them set")
        lo = None if lo is None else float(lo)
        hi = None if hi is None else float(hi)
        if lo == 0.0 and hi is None:
            return self.relu(n, x)
        name = self.tensor_in(n, x)
        target = self.fold_target(name)
        if target is not None:
            old = target["clip"] or (None, None)
            target["clip"] = (max((v for v in (old[0], lo) if v is not None), default=None),
                              min((v for v in (old[1], hi) if v is not None), default=None))
            if lo is not None and lo >= 0 and target["kind"] in ("weight", "add"):
                target["relu"] = True
        return self.new_op(n, "clamp", [name], lo_real=lo, hi_real=hi)

    def add(self, n, b):
        """The residual sum of two tensors of one shape (``b``: the bound arguments)."""
        a, other = b.get("input"), b.get("other")
        if b.get("alpha", 1) != 1 or b.get("out") is not None:
            raise self.fail(n, "scales or writes its result (alpha, out); only x + y is "
                               "supported")
        for v in (a, other):
            if not isinstance(v, torch.fx.Node) or self.shape(v) is None:
                raise self.fail(n, f"adds the constant {v!r:.40}; only the sum of two "
                                   f"tensors (a residual) is supported")
        names = [self.tensor_in(n, a), self.tensor_in(n, other)]
        if self.shape(a) != self.shape(n) or self.shape(other) != self.shape(n):
            raise self.fail(n, f"adds tensors of shapes {shape_text(self.shape(a))} and "
                               f"{shape_text(self.shape(other))} (broadcasting); they must "
                               f"agree")
        return self.new_op(n, "add", names)

    def concat(self, n, b):
        """``torch.cat`` of 2..8 tensors along the channels."""
        tensors, dim = b.get("tensors"), b.get("dim", 0)
        if not isinstance(tensors, (list, tuple)) or not 2 <= len(tensors) <= MAX_INPUTS:
            count = len(tensors) if isinstance(tensors, (list, tuple)) else repr(tensors)[:40]
            raise self.fail(n, f"joins {count} tensors; 2..{MAX_INPUTS} are supported")
        names = [self.tensor_in(n, t) for t in tensors]
        rank = len(self.shape(n))
        if rank not in (2, 4) or not isinstance(dim, int) or dim % rank != 1:
            raise self.fail(n, f"joins along dimension {dim!r} of a {rank}-d tensor; only the "
                               f"channels (dim=1) of [B, C, H, W] or [B, features]")
        return self.new_op(n, "concat", names)

    def window(self, n, kernel, stride, padding, kmax):
        """A pooling window as pairs ``(kernel, stride, padding)``, checked."""
        default = stride is None or (isinstance(stride, (tuple, list)) and not stride)
        k, s = pair(kernel), pair(kernel if default else stride)
        p = pair(padding)
        if k is None or s is None or p is None or not (1 <= min(k) and max(k) <= kmax) \
                or not 1 <= min(s) <= max(s) <= MAX_STRIDE or min(p) < 0 \
                or p[0] > k[0] // 2 or p[1] > k[1] // 2:
            raise self.fail(n, f"has kernel {kernel!r}, stride {stride!r}, padding "
                               f"{padding!r}; kernels up to {kmax}, strides up to "
                               f"{MAX_STRIDE}, padding at most half the kernel are supported")
        return k, s, p

    def maxpool(self, n, x, kernel, stride, padding, dilation, ceil_mode, return_indices):
        """Max pooling (dilation 1, floor mode)."""
        name = self.tensor_in(n, x)
        self.rank(n, x, 4)
        if pair(dilation) != (1, 1) or ceil_mode or return_indices:
            raise self.fail(n, "must have dilation 1, ceil_mode False and no indices")
        k, s, p = self.window(n, kernel, stride, padding, MAX_POOL_KERNEL)
        return self.new_op(n, "maxpool2d", [name], kernel=k, stride=s, padding=p)

    def avgpool(self, n, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor):
        """Average pooling counting padded zeros; a window of the whole map is global."""
        name = self.tensor_in(n, x)
        _, _, h, w = self.rank(n, x, 4)
        if ceil_mode or not count_include_pad or divisor is not None:
            raise self.fail(n, "must have ceil_mode False, count_include_pad True and no "
                               "divisor_override")
        if pair(kernel) == (h, w) and pair(padding) == (0, 0) and h * w <= MAX_POOL_WINDOW:
            return self.new_op(n, "global_avgpool", [name])
        k, s, p = self.window(n, kernel, stride, padding, MAX_POOL_KERNEL)
        return self.new_op(n, "avgpool2d", [name], kernel=k, stride=s, padding=p)

    def global_pool(self, n, x, name=None):
        """Global average pooling ``[C, H, W] -> [C, 1, 1]``."""
        _, _, h, w = self.rank(n, x, 4)
        if h * w > MAX_POOL_WINDOW:
            raise self.fail(n, f"averages a {h}x{w} map; at most {MAX_POOL_WINDOW} pixels")
        return self.new_op(n, "global_avgpool", [self.tensor_in(n, x)], name=name)

    def adaptive(self, n, x, size):
        """Adaptive average pooling to 1x1: global average pooling."""
        if pair(size) != (1, 1):
            raise self.fail(n, f"pools to {size!r}; only output size 1 (global average "
                               f"pooling) is supported")
        return self.global_pool(n, x)

    def mean(self, n, b):
        """The spatial mean: global average pooling, then a flatten unless ``keepdim``."""
        x, dim = b.get("input"), b.get("dim")
        dims = dim if isinstance(dim, (tuple, list)) else (dim,)
        if self.shape(x) is None or len(self.shape(x)) != 4 or b.get("dtype") is not None \
                or not all(isinstance(d, int) for d in dims) \
                or sorted(d % 4 for d in dims) != [2, 3]:
            raise self.fail(n, f"averages over {dim!r}; only the spatial mean of [B, C, H, "
                               f"W] (dim (2, 3) or (-2, -1)) is supported")
        if b.get("keepdim", False):
            return self.global_pool(n, x)
        pool = self.global_pool(n, x, name=f"{n.name}_pool")
        pool["readers"] = 1
        return self.new_op(n, "flatten", [pool["name"]])

    def reshape(self, n, x):
        """A flatten of ``[B, C, H, W]`` to ``[B, C*H*W]``, recognised by the shapes."""
        name = self.tensor_in(n, x)
        shape, out = self.shape(x), self.shape(n)
        if len(shape) != 4 or out != (shape[0], int(np.prod(shape[1:]))):
            raise self.fail(n, f"reshapes a batch of shape {list(shape)} to {list(out)}; only "
                               f"a flatten of [B, C, H, W] to [B, -1] is supported")
        return self.new_op(n, "flatten", [name])

    def pad(self, n, x, pad, mode, value):
        """Zero padding, ``F.pad``'s ``(left, right, top, bottom, front, back)``."""
        name = self.tensor_in(n, x)
        self.rank(n, x, 4)
        pads = tuple(pad) if isinstance(pad, (tuple, list)) else None
        ok = pads is not None and len(pads) in (2, 4, 6) and all(
            isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in pads)
        if not ok or mode != "constant" or value not in (None, 0, 0.0):
            raise self.fail(n, f"pads by {pad!r:.60} (mode {mode!r}, value {value!r}); only "
                               f"zero padding by non-negative amounts is supported")
        le, r, t, bo, c0, c1 = pads + (0,) * (6 - len(pads))
        if max(le, r, t, bo) > MAX_PADDING or max(c0, c1) > MAX_DIM:
            raise self.fail(n, f"pads by {list(pads)}; at most {MAX_PADDING} pixels on a "
                               f"side and {MAX_DIM} channels")
        return self.new_op(n, "pad", [name], pads=(c0, c1, t, bo, le, r))

    def subsample_steps(self, n):
        """``(sy, sx)`` of ``x[:, :, ::sy, ::sx]`` (full ranges), or None."""
        b = self.bound(n)
        shape = self.shape(b.get("input"))
        index = b.get("index")
        items = index if isinstance(index, tuple) else (index,)
        if shape is None or len(shape) != 4 or sum(i is Ellipsis for i in items) > 1:
            return None
        if Ellipsis in items:
            at = items.index(Ellipsis)
            items = items[:at] + (slice(None),) * (4 - len(items) + 1) + items[at + 1:]
        items = items + (slice(None),) * (4 - len(items))
        if len(items) != 4 or not all(isinstance(i, slice) for i in items):
            return None
        steps = []
        for i, (sl, size) in enumerate(zip(items, shape)):
            step = 1 if sl.step is None else sl.step
            if not all(isinstance(v, (int, type(None))) for v in (sl.start, sl.stop, sl.step)) \
                    or sl.start not in (None, 0) or not (sl.stop is None or sl.stop >= size) \
                    or step < 1 or (i < 2 and step != 1):
                return None
            steps.append(step)
        return steps[2], steps[3]

    def subsample(self, n, x):
        """``x[:, :, ::sy, ::sx]``: max pooling with kernel 1 and stride ``(sy, sx)``."""
        name = self.tensor_in(n, x)
        steps = self.subsample_steps(n)
        if steps is None or max(steps) > MAX_STRIDE:
            index = self.bound(n).get("index")
            raise self.fail(n, f"indexes {index!r:.80}; only x[:, :, ::s, ::s] (every "
                               f"channel, whole rows and columns, steps up to {MAX_STRIDE}) "
                               f"is supported")
        return self.new_op(n, "maxpool2d", [name], kernel=(1, 1), stride=steps, padding=(0, 0))


