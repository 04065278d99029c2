"""``mulfree bench networks``: a zoo network exported, compiled and run on the simulated board.

The benchmark's own comparison is checked here against the golden model computed apart, and
its options are refused in one line before any work.
"""

import pytest

from mulfree.flows import cli
from mulfree.flows.bench_networks import bench_networks, format_networks


def test_resnet8_runs_bit_exact_on_the_simulated_board():
    result = bench_networks(("resnet8",), ("shift", "adder"), images=2, rows=16, cols=16,
                            seed=3)
    rows = {r["form"]: r for r in result["rows"]}
    assert rows["shift"]["core_pe"] == "shift" and rows["adder"]["core_pe"] == "adder+mult"
    # ResNet-8: 7 convolutions and a classifier (the AdderNet form's first and last on the
    # mult engine), the three residual adds, the global pool and its flatten, and the two
    # option-A shortcuts (a subsampling and a channel pad each) the core aligns itself: every
    # node on the core, chained through the feature-map banks.
    for r in rows.values():
        assert r["core_nodes"] == 8 + 3 + 2 + 2 * 2 == r["nodes"] and r["host_nodes"] == 0
        assert r["chained_segments"] == 1
        assert 2 * r["bytes_per_image"] <= r["bytes_per_image_unchained"]
        assert r["golden_equal"] and r["torch_equal"] and r["outputs_compared"] == 2 * 10
        assert r["busy_cycles_per_image"] > 0 and 0 < r["useful_utilization"] <= 1
    assert all(c["pass"] for c in result["checks"])
    assert "resnet8" in format_networks(result)


@pytest.mark.parametrize("argv, fragment", [
    (["bench", "networks", "--networks", "resnet21"], "networks must be among"),
    (["bench", "networks", "--forms", "shift,fft"], "forms must be among"),
    (["bench", "networks", "--images", "0"], "--images"),
])
def test_bad_options_are_one_line(argv, fragment, capsys):
    try:
        status = cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1
