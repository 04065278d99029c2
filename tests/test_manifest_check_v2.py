"""The manifest check and core interface 2.0: ``pool_pixels``, ``POOL_PIXELS``, and a 1.x
manifest refused in one line.

The manifests here come from :func:`mulfree.params.manifest.core_manifest` (what the generator
writes, without Amaranth) through JSON; the full tables of edits run in
``tests/test_manifest_trust.py`` on a generated core.
"""

import copy
import json

import pytest

from mulfree.params.core_config import CORE_VERSION, CoreConfig
from mulfree.params.manifest import core_manifest
from mulfree.host.manifest_check import ManifestError, check_manifest


def manifest(**kwargs):
    return json.loads(json.dumps(core_manifest(CoreConfig(**kwargs))))


def _reg(doc, name):
    return next(r for r in doc["registers"]["registers"] if r["name"] == name)


def as_v1(doc):
    """What a 1.0 generator wrote for these parameters, as far as the check looks first: no
    ``pool_pixels``, no ``POOL_PIXELS``, ``VERSION`` 1.0, a 7-word descriptor."""
    doc = copy.deepcopy(doc)
    del doc["parameters"]["pool_pixels"]
    regs = doc["registers"]["registers"]
    regs.remove(_reg(doc, "POOL_PIXELS"))
    version = _reg(doc, "VERSION")
    version["reset"] = 1 << 16
    next(f for f in version["fields"] if f["name"] == "major")["reset"] = 1
    doc["stream"]["descriptor"]["bits"] = 224
    return doc


def test_a_2_0_manifest_passes_and_carries_the_pool():
    assert CORE_VERSION[0] == 2
    doc = manifest(pool_pixels=1024)
    _, cfg = check_manifest(doc)
    assert cfg.pool_pixels == 1024 and doc["parameters"]["pool_pixels"] == 1024
    assert _reg(doc, "POOL_PIXELS")["reset"] == 1024
    assert _reg(doc, "VERSION")["reset"] == 2 << 16 | CORE_VERSION[1]
    assert doc["stream"]["descriptor"]["bits"] == 256
    assert "global_pool" in doc["stream"]["descriptor"]["flags"]
    # No pool unit is a core too.
    assert check_manifest(manifest(pool_pixels=0))[1].pool_pixels == 0


@pytest.mark.parametrize("version", [(1, 0), (1, 3), (3, 0)])
def test_another_major_interface_is_refused_in_one_line(version):
    doc = as_v1(manifest())
    _reg(doc, "VERSION")["reset"] = version[0] << 16 | version[1]
    with pytest.raises(ManifestError) as info:
        check_manifest(doc)
    message = str(info.value)
    assert f"register interface {version[0]}.{version[1]}" in message, message
    assert f"this mulfree 2.{CORE_VERSION[1]}" in message and "mulfree gen --core" in message
    assert "\n" not in message and info.value.param == "manifest"


EDITS = [
    # (what, edit, text in the message)
    ("pool_pixels missing", lambda d: d["parameters"].pop("pool_pixels"),
     "parameters.pool_pixels is missing"),
    ("pool_pixels a string", lambda d: d["parameters"].update(pool_pixels="4096"),
     "parameters.pool_pixels must be an integer"),
    ("pool_pixels out of range", lambda d: d["parameters"].update(pool_pixels=1 << 17),
     "parameters.pool_pixels"),
    ("pool_pixels edited alone", lambda d: d["parameters"].update(pool_pixels=2048),
     "POOL_PIXELS"),
    ("POOL_PIXELS register edited", lambda d: _reg(d, "POOL_PIXELS").update(reset=8192),
     "POOL_PIXELS"),
    ("POOL_PIXELS register deleted",
     lambda d: d["registers"]["registers"].remove(_reg(d, "POOL_PIXELS")), "registers"),
    ("descriptor of 7 words", lambda d: d["stream"]["descriptor"].update(bits=224),
     "stream.descriptor.bits is 224 but the parameters give 256"),
    ("minor version edited", lambda d: _reg(d, "VERSION").update(reset=2 << 16 | 9),
     "VERSION"),
]


@pytest.mark.parametrize("what, edit, text", EDITS, ids=[e[0] for e in EDITS])
def test_edits_of_the_2_0_fields_are_refused(what, edit, text):
    doc = manifest()
    edit(doc)
    with pytest.raises(ManifestError) as info:
        check_manifest(doc)
    message = str(info.value)
    assert text in message and "\n" not in message, message
