"""``mulfree bench networks``: a zoo network exported, compiled and run on the simulated board.

The benchmark's own comparison is checked here against the golden model computed apart, and
its options are refused in one line before any work.
"""

from types import SimpleNamespace

import pytest

from mulfree.flows import cli
from mulfree.flows.bench_networks import _depthwise, bench_networks, format_networks


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
        assert r["taps"] == 9 and r["depthwise_runs"] == "none"      # no depthwise node
    assert all(c["pass"] for c in result["checks"])
    assert "resnet8" in format_networks(result)


@pytest.mark.parametrize("argv, fragment", [
    (["bench", "networks", "--networks", "resnet21"], "networks must be among"),
    (["bench", "networks", "--forms", "shift,fft"], "forms must be among"),
    (["bench", "networks", "--images", "0"], "--images"),
    (["bench", "networks", "--taps", "5"], "--taps must be one of 0, 4, 9, 16"),
    (["bench", "networks", "--rows", "8", "--cols", "8", "--taps", "9"], "--taps must be one"),
])
def test_bad_options_are_one_line(argv, fragment, capsys):
    try:
        status = cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_the_depthwise_share_counts_measured_cycles_and_useful_terms():
    """``_depthwise`` sums the depthwise nodes' measured busy cycles and useful terms (a clamp
    fused into one carries no counters of its own), over cycles x PEs."""
    steps = [SimpleNamespace(name="dw1", window="depthwise", taps=True),
             SimpleNamespace(name="dw2", window="depthwise", taps=False),
             SimpleNamespace(name="pool", window="max", taps=False),
             SimpleNamespace(name="conv", window=None, taps=False)]
    nodes = [SimpleNamespace(name="dw1", busy_cycles=100, useful_terms=6_400),
             SimpleNamespace(name="dw2", busy_cycles=300, useful_terms=3_200),
             SimpleNamespace(name="pool", busy_cycles=50, useful_terms=0),
             SimpleNamespace(name="conv", busy_cycles=1_000, useful_terms=200_000)]
    share = _depthwise(SimpleNamespace(steps=steps), SimpleNamespace(nodes=nodes), 256)
    assert share == {"runs": "lanes+taps", "cycles": 400,
                     "utilization": (6_400 + 3_200) / (400 * 256)}
    none = _depthwise(SimpleNamespace(steps=steps[2:]), SimpleNamespace(nodes=nodes), 256)
    assert none == {"runs": "none", "cycles": 0, "utilization": 0.0}
