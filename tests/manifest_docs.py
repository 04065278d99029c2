"""Helpers of the manifest-version tests (tests/test_manifest_check_v2*.py): a regenerated
manifest as JSON, its digest, a register of it, and the check that refuses an edited one."""

import hashlib
import json

import pytest

from mulfree.params.manifest import core_manifest
from mulfree.host.manifest_check import ManifestError, check_manifest


#: Error SHIFT_VALUE's meaning before 2.4 (2.4's shift table has a reach).
SHIFT_VALUE_2_3 = {"meaning": "a shift-table entry of -2 (dy and dx must be -1, 0 or 1)"}


def manifest(cfg):
    """``cfg``'s manifest as a JSON round trip (what a file holds)."""
    return json.loads(json.dumps(core_manifest(cfg)))


def digest(doc):
    """SHA-256 of ``doc`` without ``mulfree_version``, keys sorted."""
    doc = dict(doc)
    doc.pop("mulfree_version")
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def reg(doc, name):
    """The register ``name`` of ``doc``."""
    return next(r for r in doc["registers"]["registers"] if r["name"] == name)


def refused(doc, *texts):
    """``check_manifest`` refuses ``doc`` in one line holding every one of ``texts``."""
    with pytest.raises(ManifestError) as info:
        check_manifest(doc)
    message = str(info.value)
    assert "\n" not in message, message
    for text in texts:
        assert text in message, message
