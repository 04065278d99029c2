"""Fixtures shared by the test modules."""

import sys
from pathlib import Path

import pytest

# Helper modules of the tests (random_models.py) import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))

from mulfree.gen import cli


def _run_main(argv, capsys):
    """``(status, stdout, stderr)`` of ``mulfree`` run in-process."""
    try:
        status = cli.main(argv)
    except SystemExit as e:
        status = e.code
    out, err = capsys.readouterr()
    return status, out, err


@pytest.fixture
def run_main():
    """The ``mulfree`` command run in-process: ``run_main(argv, capsys)``."""
    return _run_main

