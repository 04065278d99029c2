"""The nodes of an export's ``model.json``: each kind's fields, as written and as read.

:func:`model_graph` is the graph :func:`~mulfree.host.export_format.write_export` writes
(format 3.0, or 2.0 for a chain); :func:`check_node_fields` checks one node's JSON object
(keys, JSON types, ranges) and :func:`build_node` makes the node it describes. The files, the
order of the checks and the digest are :mod:`mulfree.host.export_check`'s.

**Format 3.0**: every node has :data:`COMMON_FIELDS` (``name`` and ``inputs`` explicit, the
shapes of its inputs and output, the width and scale exponent of its output), then its kind's
fields (:data:`NODE_FIELDS`); arrays (``codes``, ``bias``, ``shift``, ``relu``, a
convolution's ``shifts``, a shift kind's ``offsets``) are tensors ``layers.<i>.<field>``.
**Format 2.0** (:data:`CHAIN_FIELDS`): a chain of linear, conv2d, flatten and 2x2 max pooling,
no names, no inputs, one ``in_shape``.
"""

import json

import numpy as np

from ..params.config import PE_KINDS, WEIGHT_BITS_LIMITS
from ..params.int_model import (ADD_SHIFT_LIMITS, ALIGN_SHIFT_LIMITS, DTYPES, FORMAT_NAME,
                                FORMAT_VERSION, INPUT_NAME, LAYER_KINDS, MAX_DIM, MAX_INPUTS,
                                MAX_NAME_LENGTH, MAX_PADDING, MAX_POOL_KERNEL, MAX_SHIFT2D,
                                MAX_STRIDE, MODEL_JSON, POOL_SHIFT_LIMITS, SCALE_EXP_LIMITS,
                                SHIFT_OFFSETS, WEIGHT_KINDS, ExportError, code_range,
                                graph_nodes, layer_config)
from ..params.post_config import bias_range, shift_range


__all__ = [
    "model_graph", "check_node_fields", "build_node", "NODE_FIELDS", "CHAIN_FIELDS",
    "CHAIN_KINDS", "COMMON_FIELDS", "TENSOR_FIELDS", "QUANTIZATION", "show", "fail",
    "field_path", "check_keys", "json_int", "json_choice", "json_int_list", "is_json_int",
    "default_inputs",
]


#: The kinds format 2.0 holds (max pooling only 2x2, stride 2).
CHAIN_KINDS = ("linear", "conv2d", "flatten", "maxpool2d")
#: Every array a node may store, each a tensor ``layers.<i>.<field>``.
TENSOR_FIELDS = ("codes", "bias", "shift", "relu", "shifts", "offsets")
#: The input's quantization rule, as the JSON states it.
QUANTIZATION = "q = clamp(floor(x * 2^-scale_exp + 1/2), act_range)"

_WEIGHTED = ("pe", "weight_bits", "max_k", "acc_width", "weight_encoding")
_CONV = ("stride", "padding", "padding_mode", "input_shift")
_COMMON2 = ("index", "kind", "in_shape", "out_shape", "act_bits", "out_scale_exp", "tensors")
#: The fields of a layer of format 2.0, by kind (exactly these: no more, no fewer).
CHAIN_FIELDS = {
    "linear": _COMMON2 + _WEIGHTED,
    "conv2d": _COMMON2 + _WEIGHTED + _CONV,
    "flatten": _COMMON2 + ("order",),
    "maxpool2d": _COMMON2 + ("kernel", "stride", "padding", "ceil_mode"),
}
assert tuple(CHAIN_FIELDS) == CHAIN_KINDS
#: The fields every node of format 3.0 has.
COMMON_FIELDS = ("index", "kind", "name", "inputs", "in_shapes", "out_shape", "act_bits",
                 "out_scale_exp", "tensors")
_POOL = ("kernel", "stride", "padding", "ceil_mode")
#: The fields of a node of format 3.0, by kind (exactly these: no more, no fewer).
NODE_FIELDS = {kind: COMMON_FIELDS + extra for kind, extra in {
    "linear": _WEIGHTED,
    "conv2d": _WEIGHTED + ("groups",) + _CONV,
    "flatten": ("order",),
    "maxpool2d": _POOL,
    "avgpool2d": _POOL + ("count_include_pad", "shift"),
    "global_avgpool": ("shift",),
    "add": ("in_shifts", "shift", "relu"),
    "concat": ("shifts",),
    "clamp": ("lo", "hi"),
    "pad": ("pads",),
    "shift2d": (),
    "address_shift": (),
    "channel_shift": ("r",),
}.items()}
assert tuple(NODE_FIELDS) == tuple(LAYER_KINDS)


# Messages and JSON fields -------------------------------------------------------------------

def show(value, limit=60):
    """``value`` as JSON on one line, shortened (a planted value may be long or multi-line)."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value).replace("\n", "\\n")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def fail(param, message, file=MODEL_JSON):
    """Raise the :class:`ExportError` of field ``param``: ``"<file>: <message>"``."""
    raise ExportError(param, f"{file}: {message}")


def field_path(where, key):
    """``where.key`` (``key`` alone at the top), ``where[key]`` for an index into a list."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


def check_keys(obj, where, keys):
    """``obj`` is an object with exactly the fields ``keys``; returns it."""
    if not isinstance(obj, dict):
        fail(where, f"{where} must be an object, not {show(obj)}")
    for key in obj:
        if key not in keys:
            fail(field_path(where, key), f"{where or 'the graph'} has the unknown field "
                                         f"{show(key)} (the format has {', '.join(keys)})")
    for key in keys:
        if key not in obj:
            fail(field_path(where, key), f"{where or 'the graph'} lacks the field {key!r}")
    return obj


def is_json_int(value):
    """A JSON integer: an ``int``, not a bool (``8.0`` and ``true`` are not ``8`` and ``1``)."""
    return isinstance(value, int) and not isinstance(value, bool)


def json_int(obj, key, where, lo, hi):
    """``obj[key]``, an integer in ``[lo, hi]``."""
    value = obj[key]
    if not is_json_int(value) or not lo <= value <= hi:
        p = field_path(where, key)
        allowed = f"{lo}" if lo == hi else f"an integer in [{lo}, {hi}]"
        fail(p, f"{p} must be {allowed}, not {show(value)}")
    return value


def json_choice(obj, key, where, allowed):
    """``obj[key]``, one of the strings ``allowed``."""
    value = obj[key]
    if not isinstance(value, str) or value not in allowed:
        p = field_path(where, key)
        fail(p, f"{p} must be one of {', '.join(map(repr, allowed))}, not {show(value)}")
    return value


def json_int_list(obj, key, where, lengths, lo, hi):
    """``obj[key]``, a list of ``len(...) in lengths`` integers in ``[lo, hi]``."""
    value = obj[key]
    if not (isinstance(value, list) and len(value) in lengths
            and all(is_json_int(v) and lo <= v <= hi for v in value)):
        p = field_path(where, key)
        n = " or ".join(map(str, lengths)) if len(lengths) < 3 else \
            f"{lengths[0]} to {lengths[-1]}"
        fail(p, f"{p} must be a list of {n} integers in [{lo}, {hi}], not {show(value)}")
    return value


def _bool(obj, key, where):
    if not isinstance(obj[key], bool):
        p = field_path(where, key)
        fail(p, f"{p} must be true or false, not {show(obj[key])}")


def _name(obj, key, where, what):
    value = obj[key]
    if not (isinstance(value, str) and 1 <= len(value) <= MAX_NAME_LENGTH
            and value.isprintable()):
        p = field_path(where, key)
        fail(p, f"{p} must be {what} (a printable string of 1 to {MAX_NAME_LENGTH} "
                f"characters), not {show(value)}")
    return value


# The graph the writer writes -----------------------------------------------------------------

def _dtype_for(lo, hi):
    """Narrowest dtype of :data:`DTYPES` holding ``[lo, hi]``."""
    for name in DTYPES:
        info = np.iinfo(name)
        if info.min <= lo and hi <= info.max:
            return name
    raise AssertionError(f"[{lo}, {hi}] does not fit int64")


def _tensor_ranges(layer):
    """``{field: (lo, hi)}`` of the arrays a node stores (their allowed ranges)."""
    if layer.kind in WEIGHT_KINDS:
        cfg = layer_config(layer)
        ranges = {"codes": code_range(cfg), "bias": bias_range(cfg),
                  "shift": shift_range(cfg), "relu": (0, 1)}
        if getattr(layer, "shifts", None) is not None:
            ranges["shifts"] = SHIFT_OFFSETS
        return ranges
    if layer.kind == "shift2d":
        return {"offsets": (-MAX_SHIFT2D, MAX_SHIFT2D)}
    if layer.kind == "address_shift":
        return {"offsets": (-1, 1)}
    return {}


def _weight_fields(layer, where, version):
    cfg = layer_config(layer, where)
    entry = {"pe": layer.pe}
    if version == "2.0":
        entry["act_bits"] = int(layer.act_bits)
    entry.update(weight_bits=int(layer.weight_bits), max_k=cfg.max_k, acc_width=cfg.acc_width)
    if version == "2.0":
        entry["out_scale_exp"] = int(layer.out_scale_exp)
    entry["weight_encoding"] = {
        "shift": {"kind": "shift_code", "layout": "s<<(weight_bits-1) | e; e=0 is zero; "
                  "weight = (-1)^s * 2^(e-1)", "scale_log2": cfg.weight_scale_log2},
        "adder": {"kind": "signed", "scale": "activation"},
        "mult": {"kind": "signed", "scale_log2": 0},
    }[layer.pe]
    if layer.kind == "conv2d":
        if version != "2.0":
            entry["groups"] = int(layer.groups)
        entry.update(stride=list(layer.stride), padding=list(layer.padding),
                     padding_mode="zeros", input_shift=layer.shifts is not None)
    return entry


def _ints(values):
    return [int(v) for v in values]


def _kind_fields(layer):
    """The fields of a node without weights (format 3.0)."""
    kind = layer.kind
    if kind == "flatten":
        return {"order": "c_major"}
    if kind in ("maxpool2d", "avgpool2d"):
        entry = {"kernel": _ints(layer.kernel), "stride": _ints(layer.stride),
                 "padding": _ints(layer.padding), "ceil_mode": False}
        if kind == "avgpool2d":
            entry.update(count_include_pad=True, shift=int(layer.shift))
        return entry
    if kind == "global_avgpool":
        return {"shift": int(layer.shift)}
    if kind == "add":
        return {"in_shifts": _ints(layer.in_shifts), "shift": int(layer.shift),
                "relu": bool(layer.relu)}
    if kind == "concat":
        return {"shifts": _ints(layer.shifts)}
    if kind == "clamp":
        return {"lo": int(layer.lo), "hi": int(layer.hi)}
    if kind == "pad":
        return {"pads": _ints(layer.pads)}
    if kind == "channel_shift":
        return {"r": int(layer.r)}
    return {}


def _tensor_specs(i, layer):
    return {name: {"name": f"layers.{i}.{name}", "dtype": _dtype_for(lo, hi),
                   "shape": list(np.shape(getattr(layer, name)))}
            for name, (lo, hi) in _tensor_ranges(layer).items()}


def _chain_json(i, layer, in_shape, out_shape, bits, scale):
    """A layer of format 2.0."""
    entry = {"index": i, "kind": layer.kind, "in_shape": list(in_shape),
             "out_shape": list(out_shape)}
    if layer.kind in WEIGHT_KINDS:
        entry.update(_weight_fields(layer, f"layers.{i}", "2.0"))
    else:
        entry.update(act_bits=bits, out_scale_exp=scale)
        if layer.kind == "maxpool2d":
            entry.update(kernel=_ints(layer.kernel), stride=_ints(layer.stride),
                         padding=_ints(layer.padding), ceil_mode=False)
        else:
            entry.update(order="c_major")
    entry["tensors"] = _tensor_specs(i, layer)
    return entry


def _node_json(layer, info):
    """A node of format 3.0."""
    i = info.index
    entry = {"index": i, "kind": layer.kind, "name": info.name, "inputs": list(info.inputs),
             "in_shapes": [list(s) for s in info.in_shapes], "out_shape": list(info.out_shape),
             "act_bits": int(info.act_bits), "out_scale_exp": int(info.scale_exp)}
    if layer.kind in WEIGHT_KINDS:
        entry.update(_weight_fields(layer, f"layers.{i}", FORMAT_VERSION))
    else:
        entry.update(_kind_fields(layer))
    entry["tensors"] = _tensor_specs(i, layer)
    return entry


def model_graph(model, version=FORMAT_VERSION, infos=None):
    """The JSON graph :func:`~mulfree.host.export_format.write_export` writes for ``model``
    (without ``tensors_file`` and ``integrity``), and the arrays to store, by tensor name.

    Parameters
    ----------
    model : IntModel
        Validated here (:func:`~mulfree.params.int_model.graph_nodes`).
    version : str
        ``"3.0"`` (a graph) or ``"2.0"`` (the layout of a chain; the caller makes sure the
        model is one: the loader of a 2.0 file rebuilds it as written).
    infos : list of NodeInfo, optional
        :func:`~mulfree.params.int_model.graph_nodes` of the model, if the caller has it.

    Returns
    -------
    (dict, dict)
        The graph, and ``{tensor name: array}`` in the dtypes the graph names. The loader
        compares every field of a graph it reads with this one.
    """
    infos = graph_nodes(model) if infos is None else infos
    layers, arrays = [], {}
    for info, layer in zip(infos, model.layers):
        if version == "2.0":
            entry = _chain_json(info.index, layer, info.in_shapes[0], info.out_shape,
                                info.act_bits, info.scale_exp)
        else:
            entry = _node_json(layer, info)
        for name, spec in entry["tensors"].items():
            arrays[spec["name"]] = np.ascontiguousarray(
                np.asarray(getattr(layer, name)).astype(spec["dtype"]))
        layers.append(entry)
    graph = {
        "format": FORMAT_NAME,
        "version": version,
        "name": model.name,
        "input": {"shape": list(model.input.shape), "act_bits": int(model.input.act_bits),
                  "scale_exp": int(model.input.scale_exp), "quantization": QUANTIZATION},
        "layers": layers,
        "output": model.output,
    }
    return graph, arrays


# Fields of a node, read -----------------------------------------------------------------------

def _pair(lo, hi):
    return lambda e, k, w: json_int_list(e, k, w, (2,), lo, hi)


def _integer(lo, hi):
    return lambda e, k, w: json_int(e, k, w, lo, hi)


def _shift_list(lo, hi):
    return lambda e, k, w: json_int_list(e, k, w, range(2, MAX_INPUTS + 1), lo, hi)


def _pads(entry, key, where):
    value, limits = entry[key], (MAX_DIM,) * 2 + (MAX_PADDING,) * 4
    if not (isinstance(value, list) and len(value) == 6
            and all(is_json_int(p) and 0 <= p <= m for p, m in zip(value, limits))):
        p = field_path(where, key)
        fail(p, f"{p} must be a list of 6 integers (channels before, after in [0, {MAX_DIM}], "
                f"top, bottom, left, right in [0, {MAX_PADDING}]), not {show(value)}")


_ACT = 1 << 15
_WINDOW = {"kernel": _pair(1, MAX_POOL_KERNEL), "stride": _pair(1, MAX_STRIDE),
           "padding": _pair(0, MAX_PADDING), "ceil_mode": _bool}
#: Type and range of each stored field of a node of format 3.0 (how the values relate to the
#: node's inputs is :func:`~mulfree.params.int_model.graph_nodes`'s to check).
_FIELD_CHECKS = {
    "conv2d": {"groups": _integer(1, MAX_DIM), "stride": _pair(1, MAX_STRIDE),
               "padding": _pair(0, MAX_PADDING), "input_shift": _bool},
    "maxpool2d": _WINDOW,
    "avgpool2d": {**_WINDOW, "count_include_pad": _bool,
                  "shift": _integer(*POOL_SHIFT_LIMITS)},
    "global_avgpool": {"shift": _integer(*POOL_SHIFT_LIMITS)},
    "add": {"in_shifts": _shift_list(*ADD_SHIFT_LIMITS),
            "shift": _integer(*ALIGN_SHIFT_LIMITS), "relu": _bool},
    "concat": {"shifts": _shift_list(*ALIGN_SHIFT_LIMITS)},
    "clamp": {"lo": _integer(-_ACT, _ACT - 1), "hi": _integer(-_ACT, _ACT - 1)},
    "pad": {"pads": _pads},
    "channel_shift": {"r": _integer(0, MAX_DIM)},
}
_V2_CHECKS = {"conv2d": {"stride": _pair(1, MAX_STRIDE), "padding": _pair(0, MAX_PADDING),
                         "input_shift": _bool}}


def _check_weighted(entry, where):
    pe = json_choice(entry, "pe", where, PE_KINDS)
    if pe == "adder":
        # AdderNet: weights share the activations' scale and width.
        if entry["weight_bits"] != entry["act_bits"] or not is_json_int(entry["weight_bits"]):
            fail(f"{where}.weight_bits", f"{where}.weight_bits of an adder layer must "
                                         f"equal its act_bits = {entry['act_bits']}, not "
                                         f"{show(entry['weight_bits'])}")
    else:
        json_int(entry, "weight_bits", where, *WEIGHT_BITS_LIMITS[pe])
    json_int(entry, "max_k", where, 1, 1 << 31)
    json_int(entry, "acc_width", where, 1, 63)


def _check_common(i, entry, where, version):
    json_int(entry, "index", where, i, i)
    if version == "2.0":
        json_int_list(entry, "in_shape", where, (1, 3), 1, MAX_DIM)
    else:
        _name(entry, "name", where, "a node name")
        inputs = entry["inputs"]
        if not (isinstance(inputs, list) and 1 <= len(inputs) <= MAX_INPUTS):
            fail(f"{where}.inputs", f"{where}.inputs must be a list of 1 to {MAX_INPUTS} "
                                    f"names, not {show(inputs)}")
        for j in range(len(inputs)):
            _name(inputs, j, f"{where}.inputs", "a node name or 'input'")
        shapes = entry["in_shapes"]
        if not (isinstance(shapes, list) and 1 <= len(shapes) <= MAX_INPUTS):
            fail(f"{where}.in_shapes", f"{where}.in_shapes must be a list of 1 to "
                                       f"{MAX_INPUTS} shapes, not {show(shapes)}")
        for j in range(len(shapes)):
            json_int_list(shapes, j, f"{where}.in_shapes", (1, 3), 1, MAX_DIM)
    json_int_list(entry, "out_shape", where, (1, 3), 1, MAX_DIM)
    json_int(entry, "act_bits", where, 2, 16)
    json_int(entry, "out_scale_exp", where, *SCALE_EXP_LIMITS)


def _tensor_fields(kind, entry):
    if kind in WEIGHT_KINDS:
        return TENSOR_FIELDS[:5] if kind == "conv2d" and entry["input_shift"] \
            else TENSOR_FIELDS[:4]
    return ("offsets",) if kind in ("shift2d", "address_shift") else ()


def check_node_fields(i, entry, version=FORMAT_VERSION):
    """Check the fields of ``layers[i]`` of a graph of format ``version``; return its kind.

    Exactly the kind's fields (:data:`NODE_FIELDS`, 2.0: :data:`CHAIN_FIELDS`), each of its
    JSON type and range, and its tensors' specs (name, dtype, shape). How the node fits its
    inputs is checked later, on the model (:func:`~mulfree.params.int_model.graph_nodes`).

    Raises
    ------
    ExportError
        One line naming ``model.json``, the field (``layers.3.kernel``), its value and what
        is allowed; an unknown kind names the kinds of the format.
    """
    where = f"layers.{i}"
    if not isinstance(entry, dict):
        fail(where, f"{where} must be an object, not {show(entry)}")
    if "kind" not in entry:
        fail(f"{where}.kind", f"{where} lacks the field 'kind'")
    table = CHAIN_FIELDS if version == "2.0" else NODE_FIELDS
    kind = json_choice(entry, "kind", where, tuple(table))
    check_keys(entry, where, table[kind])
    _check_common(i, entry, where, version)
    if kind in WEIGHT_KINDS:
        _check_weighted(entry, where)
    for key, check in (_V2_CHECKS if version == "2.0" else _FIELD_CHECKS).get(kind, {}).items():
        check(entry, key, where)
    fields = _tensor_fields(kind, entry)
    specs = check_keys(entry["tensors"], f"{where}.tensors", fields)
    for name in fields:
        at = f"{where}.tensors.{name}"
        spec = check_keys(specs[name], at, ("name", "dtype", "shape"))
        if spec["name"] != f"layers.{i}.{name}":
            fail(f"{at}.name", f"{at}.name must be 'layers.{i}.{name}', "
                               f"not {show(spec['name'])}")
        json_choice(spec, "dtype", at, DTYPES)
        json_int_list(spec, "shape", at, range(1, 5), 1, MAX_DIM)
    return kind


# The node a checked entry describes ------------------------------------------------------------

def build_node(entry, arrays, name=None, inputs=None, version=FORMAT_VERSION):
    """The node of the checked JSON object ``entry`` (not validated yet).

    Parameters
    ----------
    entry : dict
        Passed :func:`check_node_fields`.
    arrays : dict
        Its tensors, by field (``codes``...), int64, with the dtypes and shapes ``entry``
        names.
    name, inputs
        The node's ``name`` and ``inputs`` (``None``: the defaults, ``layers.<i>`` and the
        previous node).
    version : str
        The format: a 2.0 max pooling is the 2x2 one whatever its (derived) fields say.
    """
    kind = entry["kind"]
    graph = dict(name=name, inputs=inputs)
    if kind in WEIGHT_KINDS:
        relu = arrays["relu"]
        bad = (relu != 0) & (relu != 1)
        if np.any(bad):
            param = f"layers.{entry['index']}.relu"
            fail(param, f"{param} must hold 0 or 1 only, not {int(relu[bad][0])}",
                 "model.safetensors")
        args = dict(pe=entry["pe"], codes=arrays["codes"], bias=arrays["bias"],
                    shift=arrays["shift"], relu=relu.astype(bool), act_bits=entry["act_bits"],
                    weight_bits=entry["weight_bits"], out_scale_exp=entry["out_scale_exp"],
                    **graph)
        if kind == "linear":
            return LAYER_KINDS[kind](**args)
        return LAYER_KINDS[kind](stride=tuple(entry["stride"]), padding=tuple(entry["padding"]),
                                 shifts=arrays.get("shifts"), groups=entry.get("groups", 1),
                                 **args)
    if version == "2.0" or kind == "flatten":
        return LAYER_KINDS[kind](**graph)
    if kind in ("shift2d", "address_shift"):
        return LAYER_KINDS[kind](offsets=arrays["offsets"], **graph)
    fields = {key: tuple(value) if isinstance(value, list) else value
              for key, value in entry.items() if key in _FIELD_CHECKS.get(kind, {})
              and key not in ("ceil_mode", "count_include_pad")}
    if kind in ("avgpool2d", "global_avgpool", "add", "concat"):
        fields["act_bits"] = entry["act_bits"]
    if kind in ("add", "concat"):
        fields["out_scale_exp"] = entry["out_scale_exp"]
    return LAYER_KINDS[kind](**fields, **graph)


def default_inputs(names, i):
    """The inputs node ``i`` reads when its ``inputs`` is None, given every node's name."""
    return (INPUT_NAME,) if i == 0 else (names[i - 1],)
