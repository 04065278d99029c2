"""The README's training table is what ``make readme-figures`` measures.

The quick models (a few seconds each on one thread) are retrained here with the seeds and
defaults ``mulfree train`` uses and their float, integer and golden accuracies compared with
the README's rows, printed the way scripts/readme_figures.py prints them. The ResNet-8 AdderNet
and ShiftAddNet forms take minutes: ``scripts/readme_figures.py --check`` compares them too.
"""

import importlib.util
from pathlib import Path

from mulfree.host.models import MODELS
from mulfree.host.train import run_train

ROOT = Path(__file__).resolve().parent.parent
QUICK = ("deepshift_mlp", "deepshift_cnn", "adder_cnn", "resnet8_shift")


def _script():
    spec = importlib.util.spec_from_file_location("readme_figures",
                                                  ROOT / "scripts" / "readme_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_table_names_every_model():
    figures = _script()
    rows = figures.accuracy_rows(figures.readme_block((ROOT / "README.md").read_text()).group(1))
    assert list(rows) == list(MODELS)


def test_readme_accuracies_are_the_measured_ones(tmp_path):
    figures = _script()
    readme = figures.accuracy_rows(
        figures.readme_block((ROOT / "README.md").read_text()).group(1))
    measured = figures.accuracy_rows(figures.table(
        run_train(list(QUICK), output=str(tmp_path), progress=False, echo=lambda line: None)))
    assert {m: readme[m] for m in QUICK} == measured
