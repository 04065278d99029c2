"""Fixtures shared by the test modules."""

import os
import sys
from pathlib import Path

import pytest

# Helper modules of the tests (random_models.py) import as top-level modules.
sys.path.insert(0, str(Path(__file__).parent))

from hypothesis import settings

from mulfree.flows import cli


# Property-based tests (tests/test_prop_*.py): one profile for CI and local runs alike.
# derandomize draws the same examples on every run (a failure reproduces, no example
# database is written); deadline=None because two busy cores make timings meaningless;
# print_blob prints the @reproduce_failure line of a failing example.
# MULFREE_HYPOTHESIS_EXAMPLES=1000 runs a deeper local search (docs/verification.md).
_EXAMPLES = os.environ.get("MULFREE_HYPOTHESIS_EXAMPLES", "100")
if not _EXAMPLES.isdigit() or int(_EXAMPLES) < 1:
    raise pytest.UsageError(f"MULFREE_HYPOTHESIS_EXAMPLES must be a positive integer, "
                            f"not {_EXAMPLES!r}")
settings.register_profile(
    "mulfree", derandomize=True, deadline=None, print_blob=True, database=None,
    max_examples=int(_EXAMPLES))
settings.load_profile("mulfree")


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



@pytest.fixture(scope="session", autouse=True)
def shared_sim_builds(tmp_path_factory):
    """One cocotb build folder for the session's xdist workers (``$MULFREE_SIM_BUILDS``,
    :func:`mulfree.sim.runner.build_verilog`): a design that several testbenches run is
    compiled once. A folder already named in the environment (a developer's persistent one)
    is kept."""
    from mulfree.sim.runner import BUILDS_ENV
    if os.environ.get(BUILDS_ENV):
        yield Path(os.environ[BUILDS_ENV])
        return
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    path = base / "sim-builds"
    path.mkdir(exist_ok=True)
    os.environ[BUILDS_ENV] = str(path)
    yield path
    os.environ.pop(BUILDS_ENV, None)


def _session_folder(tmp_path_factory, name):
    """``name`` under the session's temporary folder, shared by its xdist workers."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent
    path = base / name
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session", autouse=True)
def session_cache(tmp_path_factory):
    """``$MULFREE_CACHE`` for the session (unless the environment names one): generated
    designs and simulated boards that tests build through the default cache land in one
    folder the xdist workers share (with :func:`board_cache` as its ``sim``), never in the
    user's ``~/.cache``. ``$MULFREE_SIM_QUICK=1``: the simulated boards are built with the
    per-cycle code at -O1 (``sim/board_build.py``), about half the build time of -O2; tests
    run a few images."""
    from mulfree.sim.board_build import QUICK_ENV
    saved = {name: os.environ.get(name) for name in ("MULFREE_CACHE", QUICK_ENV)}
    if not saved["MULFREE_CACHE"]:
        os.environ["MULFREE_CACHE"] = str(_session_folder(tmp_path_factory, "cache"))
    if saved[QUICK_ENV] is None:
        os.environ[QUICK_ENV] = "1"
    yield Path(os.environ["MULFREE_CACHE"])
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def board_cache(session_cache):
    """A Verilator build cache shared by the xdist workers of this session (builds lock per
    key, so each simulated core is compiled once): the session cache's ``sim``, where the
    default cache puts them too."""
    path = session_cache / "sim"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def one_torch_thread():
    """Torch on one thread for a module of small-tensor tests: intra-op threads only cost
    time there (seconds per unfold on a busy machine). Restored afterwards."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
