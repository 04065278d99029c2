"""The default core's stream width chosen by the cycle model (``mulfree.host.stream_choice``).

On a network with the digits CNN's shapes the patch convolutions stream 16-lane vectors: at
64 bits each takes two beats, so a wider stream pays; past the width at which the engine, not
the stream, is the bottleneck it does not. The choice is checked against cycle estimates
computed here, compiling the model for each width.
"""

import pytest

from mulfree.host.compiler import CompileError, compile_model, core_for_model
from mulfree.host.stream_choice import STREAM_CANDIDATES, choose_stream_width

from test_chaining import _digits_like


def _estimate(model, width, batch):
    program = compile_model(model, core_for_model(model, stream_width=width), batch=batch)
    return sum(c.cycles for c in program.costs(batch))


@pytest.mark.parametrize("batch", [1, 64])
def test_the_narrowest_width_within_the_tolerance(batch):
    model = _digits_like()
    width, cycles = choose_stream_width(model, batch=batch)
    want = {w: _estimate(model, w, batch) for w in STREAM_CANDIDATES}
    assert cycles == want
    best = min(want.values())
    fits = [w for w in sorted(want) if want[w] <= best * 1.02]
    assert width == fits[0]
    # The shapes make the stream matter: 32 and 64 bits are slower than the choice by more
    # than the tolerance, and the choice is not the widest.
    assert want[32] > want[64] > best * 1.02 and width == 128


def test_zero_tolerance_takes_the_fastest_and_a_bad_one_is_refused():
    model = _digits_like()
    width, cycles = choose_stream_width(model, batch=64, tolerance=0.0)
    assert cycles[width] == min(cycles.values())
    assert all(cycles[w] > cycles[width] for w in cycles if w < width)
    with pytest.raises(CompileError, match="tolerance must be in"):
        choose_stream_width(model, tolerance=1.0)


def test_the_command_line_chooses_and_refuses(tmp_path, run_main, capsys):
    from mulfree.host.export_format import write_export
    write_export(_digits_like(), tmp_path / "m")
    status, out, err = run_main(["compile", str(tmp_path / "m"), "--stream-width", "auto",
                                 "--batch", "64"], capsys)
    assert status == 0, err
    assert "_s128" in out
    status, out, err = run_main(["compile", str(tmp_path / "m"), "--stream-width", "96"],
                                capsys)
    assert status == 2 and err.count("\n") == 1
    assert "--stream-width must be one of 32, 64, 128, 256, auto, not '96'" in err
