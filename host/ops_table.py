"""The supported layers and ops, as ``docs/supported_ops.md`` lists them: :func:`render`.

The rows come from the lists the capture and the compiler use: the PyTorch targets from
:mod:`mulfree.host.capture_registry` (the capture dispatches through the same registries, so a
target missing there is missing here and refused there), the skipped modules from
:data:`~mulfree.host.quant_parse.SKIPPED`, the graph node kinds from
:data:`~mulfree.params.int_layers.LAYER_KINDS`, the core's weight and window kinds from
:data:`~mulfree.params.int_layers.WEIGHT_KINDS` and
:data:`~mulfree.host.window_steps.WINDOW_KINDS`, and every limit from the constant the check
reads. The words about each rule are this module's; ``tests/test_supported_ops.py`` holds the
document equal to :func:`render` and checks a sample of the claims against the capture and the
compiler.

``python -m mulfree.host.ops_table`` prints the document; ``python -m mulfree.host.ops_table
docs/supported_ops.md`` writes it.
"""

import sys
from dataclasses import dataclass

from ..params.config import DEFAULT_WEIGHT_BITS, LIMITS, PE_KINDS, WEIGHT_BITS_LIMITS
from ..params.core_config import CORE_LIMITS, RES_MAX_SHIFT
from ..params.int_layers import (LAYER_KINDS, MAX_DIM, MAX_INPUTS, MAX_KERNEL, MAX_PADDING,
                                 MAX_POOL_KERNEL, MAX_POOL_WINDOW, MAX_SHIFT2D, MAX_STRIDE,
                                 WEIGHT_KINDS)
from ..params.post_config import MAX_POST_ACC_WIDTH
from .capture_ops import MOVES
from .capture_registry import (ALIAS_METHODS, DROPOUT_FNS, FUNCTION_OPS, METHOD_OPS,
                               MODULE_OPS, RULES, SHAPE_ATTRS, SHAPE_METHODS, function_name,
                               module_name)
from .compiler import FOLD, FOLD_SHARE
from .quant_parse import CONV_TYPES, LINEAR_TYPES, SKIPPED
from .stacking import MAX_STACK
from .window_steps import WINDOW_KINDS
from .zero_flop_layers import AddressShift2d, ChannelShift, Shift2d


__all__ = ["OpRow", "capture_rows", "node_rows", "numeric_rows", "refusal_rows", "render",
           "main"]


@dataclass(frozen=True)
class OpRow:
    """One row of a table: ``key`` (for the tests, not shown: a rule's name, ``node:<kind>``,
    ``num:<what>``), the PyTorch targets or the graph node, ``node`` (what it becomes), ``where`` (CORE, HOST, SKIPPED, REFUSED and when)
    and ``conditions``."""

    key: str
    what: str
    node: str
    where: str
    conditions: str


def _names(rule, types=None, qualifier=""):
    """The targets of ``rule``: its module types (``types``: only these), its functions and
    its ``Tensor`` methods, from the registries."""
    mods = [module_name(t) for ts, r, _ in MODULE_OPS if r == rule for t in ts
            if types is None or t in types]
    fns = [function_name(f) for f, r in FUNCTION_OPS.items() if r == rule] if types is None \
        else []
    meths = [f"x.{m}()" for m, r in METHOD_OPS.items() if r == rule] if types is None else []
    found = ", ".join(f"`{n}`" for n in mods + fns + meths)
    return found + (f" ({qualifier})" if qualifier and found else "")


_FOLD_MOVES = ", ".join(k for k in MOVES)
_PES = "/".join(PE_KINDS)

#: ``(key, rule, module types or None, qualifier, node, where, conditions)`` per row of the
#: PyTorch table; every rule of :data:`~mulfree.host.capture_registry.RULES` has one or more.
_CAPTURE = (
    ("linear", "weight", LINEAR_TYPES, "", "`linear`", "CORE; HOST with `--host-fallback`",
     "PE kind from the module (Shift* shift, Adder* adder, nn.* mult); runs on the core's "
     "engine of that kind, a batch of images per run (see `linear` below)"),
    ("conv2d", "weight", CONV_TYPES, "groups=1", "`conv2d`", "CORE; HOST with "
     "`--host-fallback`", f"kernel up to {MAX_KERNEL}, stride up to {MAX_STRIDE}, padding below "
     f"the kernel and up to {MAX_PADDING}, dilation 1, padding_mode 'zeros' ('same': odd "
     f"kernel, stride 1); see `conv2d` below"),
    ("depthwise", "weight", CONV_TYPES, "groups=in_channels", "`conv2d` (groups C)",
     "CORE (window run); HOST", "a taps run on the array or a lane-unit run when the core has "
     "them and the channel multiplier is 1; see `conv2d` (depthwise) below"),
    ("conv-bad", "weight", CONV_TYPES, "other groups, dilation, padding_mode", "-", "REFUSED",
     "\"must have groups 1 or in_channels (depthwise), dilation=1 and padding_mode 'zeros'\"; "
     f"a kernel over {MAX_KERNEL}, stride over {MAX_STRIDE} or padding >= kernel: \"the format "
     f"holds kernels up to ...\""),
    ("batchnorm", "batchnorm", None, "", "folded", "CORE (in the weight layer)",
     "folded into the linear / convolution it directly follows (a per-channel power-of-two "
     "scale and bias); REFUSED elsewhere (\"must directly follow a weight layer that nothing "
     "else reads\") or without running statistics"),
    ("relu", "relu", None, "", "folded, else `clamp`", "CORE (folded or fused); HOST",
     f"folded into the weight layer or add it follows, also through {_FOLD_MOVES} (they "
     f"commute with it); otherwise a `clamp` node (lo 0)"),
    ("relu6", "relu6", None, "", "`clamp`", "CORE (fused); HOST",
     "a `clamp` to [0, 6]; the op before it calibrates on the clamped values and takes the "
     "ReLU"),
    ("hardtanh", "hardtanh", None, "", "`clamp`", "CORE (fused); HOST",
     "nn.ReLU6 is one; a `clamp` to [min_val, max_val]"),
    ("clamp", "clamp", None, "", "`clamp` (ReLU for min=0 alone)", "CORE (fused); HOST",
     "finite bounds, lo <= hi, at least one set; else REFUSED (\"clamps to ...\")"),
    ("add", "add", None, "", "`add`", "CORE (fused residual); HOST",
     "the sum of two tensors of one shape; a constant, alpha, out= or broadcasting is "
     "REFUSED (\"only x + y is supported\", \"adds the constant ...\")"),
    ("concat", "concat", None, "", "`concat`", "HOST",
     f"2..{MAX_INPUTS} tensors along dim=1 of [B, C, H, W] or [B, features]; else REFUSED; one "
     f"tensor: SKIPPED"),
    ("maxpool", "maxpool", None, "", "`maxpool2d`", "CORE (lane unit); HOST",
     f"kernel and stride up to {MAX_POOL_KERNEL} / {MAX_STRIDE}, padding at most half the "
     f"kernel, dilation 1, ceil_mode False, no indices; else REFUSED"),
    ("avgpool", "avgpool", None, "", "`avgpool2d` (`global_avgpool` over the whole map)",
     "CORE (lane unit) for 2^k positions; HOST", "ceil_mode False, count_include_pad True, no "
     "divisor_override; else REFUSED"),
    ("adaptive", "adaptive", None, "", "`global_avgpool`", "CORE (fused); HOST",
     f"output size 1 only (else REFUSED: \"pools to ...\"), at most {MAX_POOL_WINDOW} pixels"),
    ("mean", "mean", None, "", "`global_avgpool` + `flatten`", "CORE (fused); HOST",
     "the spatial mean (dim (2, 3) or (-2, -1)) of [B, C, H, W]; keepdim keeps the pool alone; "
     "other dims REFUSED"),
    ("reshape", "reshape", None, "", "`flatten`", "CORE (fused); HOST",
     "a flatten of [B, C, H, W] to [B, -1] (found from the shapes); one that keeps the shape "
     "is SKIPPED; any other reshape REFUSED (\"only a flatten ... is supported\")"),
    ("subsample", "subsample", None, "", "`maxpool2d` (kernel 1, stride s)",
     "CORE (option-A shortcut, lane unit); HOST", f"only `x[:, :, ::s, ::s]` (every channel, "
     f"whole rows and columns, s up to {MAX_STRIDE}); `x[:, :, :, :]` is SKIPPED; any other "
     f"index REFUSED"),
    ("pad", "pad", None, "", "`pad`", "CORE (option-A shortcut); HOST",
     f"zeros only, at most {MAX_PADDING} pixels a side and {MAX_DIM} channels; else REFUSED"),
    ("shift2d", "shift", (Shift2d,), "", "folded, else `shift2d`", "CORE (folded); HOST",
     f"folded into the convolution that alone reads it as its shift table (the core's "
     f"`--shift-reach` covers offsets up to {CORE_LIMITS['shift_reach'][1]}); otherwise a "
     f"`shift2d` node; a kernel over {2 * MAX_SHIFT2D + 1} is REFUSED"),
    ("address_shift", "shift", (AddressShift2d,), "", "`address_shift`", "HOST",
     "AddressNet's shift: its border reads cross into the neighbouring channel's map"),
    ("channel_shift", "shift", (ChannelShift,), "", "`channel_shift`", "HOST",
     "a rotation of the channels"),
)


def capture_rows():
    """The PyTorch table: one row per rule (and variant) of the capture's registries, then the
    targets it skips."""
    rows = [OpRow(key, _names(rule, types, qual), node, where, cond)
            for key, rule, types, qual, node, where, cond in _CAPTURE]
    skipped = ", ".join([f"`{module_name(t)}`" for t in SKIPPED]
                        + [f"`{function_name(f)}`" for f in DROPOUT_FNS]
                        + [f"`x.{m}()`" for m in ALIAS_METHODS])
    rows.append(OpRow("skipped", skipped, "-", "SKIPPED", "identities at inference"))
    shape = ", ".join([f"`x.{m}()`" for m in SHAPE_METHODS] + [f"`x.{a}`" for a in SHAPE_ATTRS])
    rows.append(OpRow("shape", shape, "-", "SKIPPED", "shape arithmetic (reads no values)"))
    return rows


def refusal_rows():
    """What the capture refuses besides a rule's own conditions (message gists)."""
    return [
        OpRow("other", "any other module, function or method (`nn.Sigmoid`, `nn.GELU`, "
                       "`nn.LeakyReLU`, `nn.Conv1d`, `torch.mul`, `x.permute()`...)", "-",
              "REFUSED", "\"<fx node> (<target>) is not supported; quantize supports: ...\""),
        OpRow("get_attr", "`F.linear`, `F.conv2d` on a parameter", "-", "REFUSED",
              "\"is a parameter or buffer computed with directly ...; use the layer "
              "modules\""),
        OpRow("values", "a tensor's values read as a Python value (`x.tolist()`)", "-",
              "REFUSED", "\"turns a tensor's values into a Python value\""),
        OpRow("trace", "data-dependent control flow", "-", "REFUSED",
              "\"cannot be traced by torch.fx\""),
        OpRow("inputs", "a second input tensor", "-", "REFUSED",
              "\"is a second input; the model must take one tensor\""),
        OpRow("inplace", "an in-place op on a tensor other nodes read", "-", "REFUSED",
              "\"works in place on ..., which other nodes also read\""),
        OpRow("no_weights", "a model without a weight layer", "-", "REFUSED",
              "\"model has no weight layer\""),
    ]


#: Where each graph node kind runs: ``kind -> (where, conditions)``; every kind of
#: :data:`~mulfree.params.int_layers.LAYER_KINDS` has one.
_NODES = {
    "linear": ("CORE; HOST with `--host-fallback`; else REFUSED",
               "on the engine of its PE kind; a run takes up to the feature map's room of "
               "images (M = images); K <= max_k, out features <= max_channels; a core without "
               "an engine of its kind refuses it (\"has weights of another PE kind than this "
               "core's ... PEs; --host-fallback ... runs it on the host\")"),
    "conv2d": ("CORE; HOST (shift reach, `--host-fallback`); else REFUSED",
               f"groups 1: in_c*kh*kw <= max_k, channels <= max_channels, the map within "
               f"fmap_vectors, the weights within weight_rows (up to {MAX_STACK} images "
               f"stacked a run); with few input channels the host may expand patches (kernel "
               f"taps on the rows); a folded Shift2d table wider than the core's shift_reach "
               f"runs on the host (\"shift table reaches N pixels\"); depthwise: below"),
    "conv2d (depthwise)": ("CORE (window run); HOST",
                           "groups = in_c = out_c (channel multiplier 1), a PE kind the core "
                           "has, no shift table: a taps run on the array (a square core of 9+ "
                           "rows has a 3x3 tap window, `--taps`; kernel within its side, "
                           "padded line within tap_line, no fused residual or pool), else a "
                           "lane-unit run (a square core, `--no-window-ops` removes it); "
                           "otherwise HOST saying why"),
    "maxpool2d": ("CORE (lane unit, or fused); HOST",
                  "a `win_max` run when the core has the lane unit and the run fits; kernel 1, "
                  "stride s, no padding before an option-A residual: fused (the core aligns "
                  "the shortcut); else HOST"),
    "avgpool2d": ("CORE (lane unit); HOST",
                  "a `win_sum` run when kh*kw is a power of two (the division is the "
                  "post-processing shift, in the core's range); a 3x3 average: HOST"),
    "global_avgpool": ("CORE (fused); HOST",
                       "fused into the run of the convolution it follows (through a fused "
                       "add and clamp) when H*W is a power of two within pool_pixels, its "
                       "width the core's and pool_shift in range; else HOST"),
    "flatten": ("CORE (fused); HOST", "fused after a fused global pool; else HOST"),
    "add": ("CORE (fused); HOST",
            f"fused into the run of a convolution that is one input and nothing else reads, "
            f"the other (shortcut) independent of it, of its shape, at most the core's "
            f"act_bits; in_shifts <= {RES_MAX_SHIFT}, shift within the residual range, the "
            f"shortcut within shortcut_vectors; else HOST"),
    "concat": ("HOST", "exact integer NumPy step (MobileNet's ConcatDown)"),
    "clamp": ("CORE (fused); HOST",
              "fused after a core convolution (or its fused add) with bounds inside the "
              "activation range; else HOST"),
    "pad": ("CORE (fused); HOST",
            "channel padding only, read by a fused residual add alone (option-A shortcut: the "
            "core puts short_off zero channels in front); else HOST"),
    "shift2d": ("HOST", "a Shift2d not folded into a convolution (folded: the convolution's "
                        "shift table, on the core)"),
    "address_shift": ("HOST", "border reads cross into the neighbouring channel's map"),
    "channel_shift": ("HOST", "exact integer NumPy step"),
}


def node_rows():
    """The graph table: each node kind of the export (a depthwise convolution apart) and
    where the compiler runs it."""
    rows = []
    for kind in LAYER_KINDS:
        for name in (kind, f"{kind} (depthwise)") if kind == "conv2d" else (kind,):
            where, cond = _NODES[name]
            tags = (["weights"] if kind in WEIGHT_KINDS else []) + \
                (["window run"] if kind in WINDOW_KINDS and name != "conv2d" else [])
            rows.append(OpRow(f"node:{name}", f"`{kind}`" + name[len(kind):]
                              + (f" ({', '.join(tags)})" if tags else ""), kind, where, cond))
    return rows


def numeric_rows():
    """The quantization and width conditions that decide where a layer runs."""
    lo, hi = LIMITS["act_bits"]
    wb = ", ".join(f"{pe} {a}..{b}" for pe, (a, b) in WEIGHT_BITS_LIMITS.items())
    default = ", ".join(f"{pe} {b}" for pe, b in DEFAULT_WEIGHT_BITS.items())
    reach = CORE_LIMITS["shift_reach"]
    return [
        OpRow("num:act_bits", "activations", "-", "REFUSED if not equal",
              f"quantize's act_bits {lo}..{hi}; a core layer's act_bits must equal its "
              f"engine's (\"has N-bit activations; this core's are M bits\"); the model's "
              f"input at most the core's"),
        OpRow("num:weight_bits", "weight codes", "-", "REFUSED if wider",
              f"a layer's weight_bits at most its engine's (\"has N-bit weight codes; this "
              f"core takes at most M (weight_bits)\"); engine widths {wb} (defaults {default}); "
              f"shift codes are re-encoded (sign to the top bit); adder codes are activations "
              f"(no weight_bits)"),
        OpRow("num:accumulator", "accumulator", "-", "REFUSED if too wide",
              f"acc_width holds max_k terms exactly; acc + bias must fit 64 bits (acc_width "
              f"<= {MAX_POST_ACC_WIDTH}: a max_k limit per PE kind and widths); bias a signed "
              f"acc_width-bit integer, shift within the post-processing range"),
        OpRow("num:max_k", "reduction length", "-", "REFUSED if longer",
              "K (in_c*kh*kw, or in features) <= max_k; the default core takes the smallest "
              "power of two covering the longest"),
        OpRow("num:shift_reach", "shift table", "-", "HOST if wider",
              f"folded Shift2d offsets up to {MAX_SHIFT2D}; the core's shift_reach "
              f"{reach[0]}..{reach[1]} (the default core's covers the widest table)"),
        OpRow("num:pe", "PE kind", "-", "HOST with `--host-fallback`, else REFUSED",
              f"{_PES}: each weight layer runs on the engine of its kind (`--engines all` "
              f"gives the default core one per kind; a kind with under {FOLD_SHARE:.0%} of the "
              f"terms gets an engine folded to cols/{FOLD})"),
        OpRow("num:sizes", "buffers", "-", "REFUSED if larger",
              "max_channels, fmap_vectors, weight_rows, shortcut_vectors, pool_pixels, "
              "acc_entries: \"<node> does not fit the core: <param> ... must be at most ...\" "
              "(the default core is sized to the model)"),
    ]


def _table(head, rows):
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for r in rows:
        cells = (r.what, r.node, r.where, r.conditions) if len(head) == 4 else \
            (r.what, r.where, r.conditions)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def render():
    """``docs/supported_ops.md``, from :func:`capture_rows`, :func:`refusal_rows`,
    :func:`node_rows` and :func:`numeric_rows`."""
    out = [
        "# Supported layers and ops",
        "",
        "Generated from the code by `python -m mulfree.host.ops_table docs/supported_ops.md`",
        "(`host/ops_table.py`: the capture's registries in `host/capture_registry.py`, the",
        "node kinds and limits the compiler checks); `tests/test_supported_ops.py` keeps this",
        "file equal to it and checks a sample of the claims. Do not edit by hand.",
        "",
        "**CORE**: runs on the generated core (its own run, a window run, or fused into the",
        "run of the convolution before it, or folded into a layer); **HOST**: an exact",
        "integer NumPy step of the program (`mulfree compile` prints each node's place and",
        "why); **SKIPPED**: an identity; **REFUSED**: `quantize` / `export` or `compile`",
        "stops with one line naming the fx node or layer (quoted: the message's gist).",
        "",
        "## PyTorch modules, functions and methods (the capture)",
        "",
        "`quantize` / `export` read a `nn.Sequential` of these, or any model `torch.fx` traces.",
        "",
    ]
    out += _table(("PyTorch", "graph node", "where", "conditions"), capture_rows())
    out += ["", "## Refused", ""]
    out += _table(("what", "where", "message"), refusal_rows())
    out += ["", "## Graph nodes (the compiler)", "",
            "Where `compile_model` (`mulfree compile`, `mulfree run`) places each node of an",
            "export; a node that does not fit the core is refused naming the layer, the",
            "parameter and the core's limit, never moved to the host silently.", ""]
    out += _table(("node", "where", "conditions"), node_rows())
    out += ["", "## Numbers that decide it", ""]
    out += _table(("what", "where", "conditions"), numeric_rows())
    return "\n".join(out) + "\n"


def main(argv=None):
    """Print :func:`render`, or write it to the one path given."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) > 1 or (argv and argv[0].startswith("-")):
        print(f"usage: python -m mulfree.host.ops_table [OUTPUT.md], not {' '.join(argv)}",
              file=sys.stderr)
        return 2
    if not argv:
        sys.stdout.write(render())
        return 0
    from ..params.safe_io import FileCheckError, check_output_file, write_atomic
    try:
        check_output_file(argv[0], "OUTPUT")
    except FileCheckError as exc:
        print(exc, file=sys.stderr)
        return 2
    write_atomic(argv[0], render())
    return 0

if __name__ == "__main__":
    sys.exit(main())
