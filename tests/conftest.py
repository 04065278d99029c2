"""Fixtures shared by the test modules."""

import pytest

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
