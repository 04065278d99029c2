"""The README's whole path with every default: train -> gen --core / build --board zc706 ->
compile -> run on the simulated board, and deploy --dry-run.

What ``mulfree train`` makes must run on what ``mulfree gen --core`` and ``mulfree build``
make without an option that says so (the models' DeepShift layers have the default shift
core's weight width, :data:`mulfree.host.models.SHIFT_WEIGHT_BITS`). The only options given
are the ones the README's commands give: the model to train (all seven take minutes), the
folders, and on ``run`` how many test images (the core is the same for one image or 360);
the simulated board is built in the suite's session cache, ``$MULFREE_CACHE``.
Vivado is not on this machine: the build folder gets a pretend bitstream before the
deploy's dry run, as in tests/test_deploy.py.
"""

import json

from mulfree.gen.vivado_plan import core_config_from_manifest, plan_build
from mulfree.host.export_format import load_export
from mulfree.params.config import DEFAULT_WEIGHT_BITS


def _ok(run_main, capsys, argv):
    status, out, err = run_main(argv, capsys)
    assert status == 0, (argv, status, out, err)
    return out, err


def test_train_build_compile_run_deploy_with_defaults(run_main, capsys, tmp_path):
    train, gen, build = tmp_path / "train", tmp_path / "gen", tmp_path / "build"
    _ok(run_main, capsys, ["train", "--model", "deepshift_cnn", "-o", str(train)])
    model = train / "deepshift_cnn"
    bits = {layer.weight_bits for layer in load_export(model).layers
            if getattr(layer, "pe", None) == "shift"}
    assert bits == {DEFAULT_WEIGHT_BITS["shift"]}, bits

    _ok(run_main, capsys, ["gen", "--core", "-o", str(gen)])
    (manifest,) = gen.glob("*.json")
    cfg, _ = core_config_from_manifest(manifest)
    assert cfg.engine.weight_bits == DEFAULT_WEIGHT_BITS["shift"]
    out, _ = _ok(run_main, capsys, ["compile", str(model), "--config", str(manifest)])
    assert "core" in out

    _ok(run_main, capsys, ["build", "--board", "zc706", "-o", str(build)])
    _ok(run_main, capsys, ["compile", str(model), "--config", str(build)])

    report = tmp_path / "run.json"
    _ok(run_main, capsys, ["run", str(model), "--config", str(manifest), "--dataset", "digits",
                           "--limit", "8", "--json", str(report)])
    result = json.loads(report.read_text())
    assert result["images"] == 8
    assert result["golden"]["bit_exact"] and result["golden"]["images"] == 8, result["golden"]

    (build_manifest,) = build.glob("mulfree_core_*.json")     # the build's own core
    plan = plan_build(core_config_from_manifest(build_manifest)[0], "zc706")
    (build / plan.products["bin"]).write_bytes(b"\xaa\x99\x55\x66" * 16)
    out, _ = _ok(run_main, capsys, ["deploy", str(build), "--host", "root@zc706", "--dry-run"])
    assert "fpga" in out.lower() or "configfs" in out
