"""The manifest of a generated engine, with its ports checked against the elaborated RTL.

The manifest itself is computed from the config alone (:mod:`mulfree.params.manifest`, no
Amaranth), so a host can check one on a board. Before the generator writes it next to the
Verilog, the ports it lists are compared with the component's Amaranth signature
(:func:`port_list`): a difference is a bug of the generator, never written out.
"""

from amaranth.hdl import Shape
from amaranth.lib import data, wiring

from ..params.config import ArrayConfig
from ..params.manifest import MANIFEST_VERSION, engine_manifest
from ..params.ports import FIELD_MEANING, PORT_MEANING


__all__ = ["MANIFEST_VERSION", "manifest", "port_list", "check_ports"]


def _fields(port, shape):
    if not isinstance(shape, data.StructLayout):
        return None
    return [{"name": name, "offset": f.offset, "width": Shape.cast(f.shape).width,
             "meaning": FIELD_MEANING.get((port, name), "")}
            for name, f in shape]


def port_list(signature: wiring.Signature):
    """Top-level ports as Amaranth names them in Verilog: ``clk``, ``rst``, then the signature."""
    ports = [
        {"name": "clk", "direction": "input", "width": 1, "meaning": PORT_MEANING["clk"]},
        {"name": "rst", "direction": "input", "width": 1, "meaning": PORT_MEANING["rst"]},
    ]
    for path, member in signature.members.flatten():
        if not member.is_port:
            continue
        name = "__".join(str(p) for p in path)
        entry = {
            "name": name,
            "direction": "input" if member.flow == wiring.In else "output",
            "width": Shape.cast(member.shape).width,
            "meaning": PORT_MEANING.get(name, ""),
        }
        fields = _fields(path[0], member.shape)
        if fields:
            entry["fields"] = fields
        ports.append(entry)
    return ports


def check_ports(ports, signature, top):
    """Raise :class:`RuntimeError` if ``ports`` (a manifest's) differ from those of the
    elaborated ``signature``: the spec and the RTL disagree, which is a generator bug."""
    rtl = port_list(signature)
    if ports != rtl:
        names = {p["name"] for p in ports} ^ {p["name"] for p in rtl}
        diff = ", ".join(sorted(names)) or next(
            p["name"] for p, q in zip(ports, rtl) if p != q)
        raise RuntimeError(f"{top}: the manifest's ports differ from the RTL's signature "
                           f"({diff}); mulfree.params.ports and mulfree.rtl disagree")


def manifest(cfg: ArrayConfig):
    """The manifest of the design ``cfg`` (an array or a tree) as a JSON-ready dict, its ports
    checked against :func:`mulfree.rtl.array.array_signature`."""
    from ..rtl.array import array_signature
    doc = engine_manifest(cfg)
    check_ports(doc["ports"], array_signature(cfg), cfg.top_name)
    return doc
