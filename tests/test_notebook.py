"""``examples/quickstart.ipynb``: stored clean, and executed top to bottom with nbclient.

The notebook runs in a temporary working folder on ipykernel's ``python3`` kernel, which
jupyter_client starts as this very interpreter (the spec's ``python`` is replaced by
``sys.executable``), so it sees the same ``mulfree`` install as the tests. ``$MULFREE_CACHE``
is the session's cache (``board_cache`` is its ``sim``): the notebook's core is generated and
built with Verilator there (about a minute; the cell timeout allows for a loaded machine). A cell that
raises (the notebook asserts its board outputs are bit-exact) fails the test with the cell and
its traceback. Missing nbclient, nbformat or ipykernel fail the test; they are in the ``dev``
extra.
"""

import sys
from pathlib import Path

import pytest


NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "quickstart.ipynb"

#: Seconds one cell may run: the Verilator build of the core on a busy 2-core machine.
CELL_TIMEOUT = 1800


def _notebook_tools():
    """``(nbclient, nbformat)``; the test fails (never skips) when they are missing."""
    try:
        import ipykernel  # noqa: F401  (the kernel the notebook runs on)
        import nbclient
        import nbformat
    except ImportError as exc:
        pytest.fail(f"executing {NOTEBOOK.name} needs nbclient, nbformat and ipykernel (the "
                    f"dev extra): .venv/bin/pip install nbclient nbformat ipykernel "
                    f"-c constraints.txt ({exc})")
    return nbclient, nbformat


def _code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _stream_text(nb):
    return "".join(out.get("text", "") for cell in _code_cells(nb) for out in cell.outputs
                   if out.output_type == "stream")


def test_notebook_is_stored_without_outputs():
    _, nbformat = _notebook_tools()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for i, cell in enumerate(_code_cells(nb)):
        assert cell.outputs == [] and cell.execution_count is None, \
            f"code cell {i} is stored with outputs; clear them before committing"


def test_python3_kernel_is_this_interpreter():
    _notebook_tools()
    from jupyter_client.kernelspec import KernelSpecManager
    spec = KernelSpecManager().get_kernel_spec("python3")
    major, minor = sys.version_info[:2]
    # jupyter_client runs these names as sys.executable; anything else is another Python.
    assert spec.argv[0] in ("python", f"python{major}", f"python{major}.{minor}",
                            sys.executable), \
        f"the python3 kernelspec in {spec.resource_dir} runs {spec.argv[0]!r}, not this " \
        f"interpreter {sys.executable!r}"


def test_quickstart_runs_bit_exact_on_the_simulated_board(tmp_path, board_cache,
                                                          monkeypatch):
    nbclient, nbformat = _notebook_tools()
    monkeypatch.setenv("MULFREE_CACHE", str(board_cache.parent))   # the kernel inherits it
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT,
                                     startup_timeout=120,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()                    # raises CellExecutionError naming the failing cell
    text = _stream_text(nb)
    assert f"kernel python: {sys.executable}\n" in text, text[:500]
    assert "bit-exact: all 200 output integers of 20 images equal the golden model's" \
        in text, text
    assert "core cycles per image" in text
    # The core was generated and built in the shared cache, the export and plots in tmp_path.
    assert any(board_cache.iterdir()) and any((board_cache.parent / "designs").iterdir())
    work = tmp_path / "out" / "quickstart"
    assert (work / "export" / "model.json").is_file()
    for name in ("training", "cycles", "predictions"):
        assert (work / f"{name}.png").stat().st_size > 1000
    images = [out for cell in _code_cells(nb) for out in cell.outputs
              if "image/png" in out.get("data", {})]
    assert len(images) == 3
    errors = [out for cell in _code_cells(nb) for out in cell.outputs
              if out.output_type == "error"]
    assert not errors
