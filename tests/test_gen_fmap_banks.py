"""``mulfree gen --core --fmap-banks``: the layer-chaining banks chosen on the command line."""

import json

import pytest

from mulfree.flows import cli


def _main(argv, capsys):
    try:
        status = cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    return status, capsys.readouterr()


@pytest.mark.parametrize("rows, cols, banks, want", [(4, 4, 1, 1), (4, 3, None, 1)])
def test_banks_in_the_manifest(tmp_path, capsys, rows, cols, banks, want):
    argv = ["gen", "--core", "--rows", str(rows), "--cols", str(cols), "-o", str(tmp_path)]
    if banks is not None:
        argv += ["--fmap-banks", str(banks)]
    status, out = _main(argv, capsys)
    assert status == 0, out.err
    manifest = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert manifest["parameters"]["fmap_banks"] == want


@pytest.mark.parametrize("argv, fragment", [
    (["--rows", "4", "--cols", "3", "--fmap-banks", "2"], "--fmap-banks=2 (layer chaining) "
                                                          "needs rows == cols"),
    (["--fmap-banks", "3"], "--fmap-banks must be an integer in [1, 2], not 3"),
])
def test_bad_banks_are_one_line(tmp_path, capsys, argv, fragment):
    status, out = _main(["gen", "--core", "-o", str(tmp_path)] + argv, capsys)
    assert status == 2 and fragment in out.err and out.err.count("\n") == 1
    assert not any(tmp_path.iterdir())
