"""The checks on files we read and places we write (params/safe_io.py)."""

import json
import os

import pytest

from mulfree.params.config import ArrayConfig, ConfigError
from mulfree.params.core_config import CoreConfig
from mulfree.params.safe_io import (FileCheckError, MAX_JSON_DEPTH, VERILOG_KEYWORDS,
                                 check_output_dir, check_output_file, check_verilog_name,
                                 inside, read_json, write_atomic)


def _write(tmp_path, text, name="f.json"):
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


@pytest.mark.parametrize("text, needle", [
    ("", "not valid JSON"),
    ("{", "not valid JSON"),
    ("[1, 2]", "must be a JSON object, not a list"),
    ('"x"', "must be a JSON object, not a string"),
    ("null", "must be a JSON object, not null"),
    ('{"a": NaN}', "NaN is not a number JSON allows"),
    ('{"a": Infinity}', "Infinity is not a number JSON allows"),
    ('{"a": -Infinity}', "-Infinity is not a number JSON allows"),
    ('{"a": 1e400}', "overflows a 64-bit float"),
    ('{"a": 1, "a": 2}', "key 'a' appears twice"),
    ('{"a": ' + "[" * 100000 + "]" * 100000 + "}", "nests deeper"),
    ('{"a": ' + "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1) + "}", "nests deeper"),
    ('{"a": ' + "1" * 5000 + "}", "not valid JSON"),
    (b'{"a": "\xff"}', "not UTF-8"),
])
def test_read_json_refuses_in_one_line(tmp_path, text, needle):
    path = _write(tmp_path, text)
    with pytest.raises(FileCheckError) as exc:
        read_json(path, "--config", what="core manifest")
    message = str(exc.value)
    assert needle in message
    assert message.startswith("--config ") and "\n" not in message
    assert exc.value.param == "--config"


def test_read_json_accepts_strict_json(tmp_path):
    doc = {"a": [1, 2.5, {"b": None}], "c": "text", "d": True}
    assert read_json(_write(tmp_path, json.dumps(doc)), "p") == doc
    assert read_json(_write(tmp_path, "[1]"), "p", kind=list) == [1]
    depth_ok = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert read_json(_write(tmp_path, depth_ok), "p", kind=None)


def test_read_json_missing_folder_and_size(tmp_path):
    with pytest.raises(FileCheckError, match="no such file"):
        read_json(tmp_path / "nope.json", "p")
    with pytest.raises(FileCheckError, match="is a folder, not a file"):
        read_json(tmp_path, "p")
    os.mkfifo(tmp_path / "fifo.json")       # reading it would block for ever
    with pytest.raises(FileCheckError, match="is not a regular file, so no file"):
        read_json(tmp_path / "fifo.json", "p")
    big = _write(tmp_path, '{"a": "' + "x" * 2000 + '"}')
    with pytest.raises(FileCheckError, match="larger than"):
        read_json(big, "p", max_bytes=1000)


def test_inside_keeps_paths_in_their_folder(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.v").write_text("x")
    assert inside(tmp_path / "d", "a.v", "files.verilog") == (tmp_path / "d" / "a.v").resolve()
    for bad in ["../a.v", "/etc/passwd", "~/x", "", None, 3, "a\0b", "sub/../../x"]:
        with pytest.raises(FileCheckError) as exc:
            inside(tmp_path / "d", bad, "files.verilog")
        assert str(exc.value).startswith("files.verilog") and "\n" not in str(exc.value)
    os.symlink("/etc/passwd", tmp_path / "d" / "link.v")
    with pytest.raises(FileCheckError, match="leads outside"):
        inside(tmp_path / "d", "link.v", "files.verilog")


def test_output_checks_probe_without_leaving_anything(tmp_path):
    before = sorted(tmp_path.iterdir())
    assert check_output_file(tmp_path / "new" / "deeper" / "r.json", "--json")
    assert check_output_dir(tmp_path / "out" / "x", "-o")
    assert sorted(tmp_path.iterdir()) == before       # nothing created, no probe left
    (tmp_path / "file").write_text("x")
    cases = [
        (check_output_file, tmp_path, "is a folder"),
        (check_output_file, tmp_path / "file" / "r.json", "is not a folder"),
        (check_output_file, "/proc/nope/r.json", "cannot be written"),
        (check_output_dir, tmp_path / "file", "exists and is not a folder"),
        (check_output_dir, tmp_path / "file" / "sub", "is not a folder"),
        (check_output_file, "", "must be a file path"),
    ]
    for check, path, needle in cases:
        with pytest.raises(FileCheckError, match=needle):
            check(path, "--json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".mulfree-probe")] == []


def test_write_atomic_all_or_nothing(tmp_path):
    path = tmp_path / "r.json"
    write_atomic(path, "old")

    with pytest.raises(TypeError):
        write_atomic(path, 3)
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
    write_atomic(path, b"new", mode=0o600)
    assert path.read_bytes() == b"new" and (path.stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize("name", ["module", "wire", "logic", "always_ff", "endmodule", "int"])
def test_keywords_cannot_name_a_module(name):
    assert name in VERILOG_KEYWORDS
    with pytest.raises(FileCheckError, match="keyword"):
        check_verilog_name(name)
    for make in (lambda: ArrayConfig(name=name), lambda: CoreConfig(name=name)):
        with pytest.raises(ConfigError, match="keyword") as exc:
            make()
        assert exc.value.param == "name"


@pytest.mark.parametrize("name", ["1abc", "a-b", "a b", "é", "a$b", "", "x" * 129, "a\nb"])
def test_names_must_be_plain_identifiers(name):
    with pytest.raises(FileCheckError):
        check_verilog_name(name)


def test_plain_names_pass():
    assert check_verilog_name("my_core_2") == "my_core_2"
    assert ArrayConfig(name="Module").top_name == "Module"    # Verilog is case-sensitive


def test_gen_refuses_keyword_name(run_main, tmp_path, capsys):
    code, out, err = run_main(["gen", "--name", "module", "-o", str(tmp_path / "o")], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "--name" in err and "keyword" in err
    assert not (tmp_path / "o").exists()


def test_main_turns_an_unexpected_failure_into_one_line(run_main, monkeypatch, capsys):
    from mulfree.flows import generate

    def boom(args):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(generate, "command", boom)
    monkeypatch.delenv("MULFREE_TRACEBACK", raising=False)
    code, out, err = run_main(["gen"], capsys)
    assert code == 1
    assert err.strip() == ("mulfree gen: internal error: RecursionError: maximum recursion depth "
                           "exceeded (set MULFREE_TRACEBACK=1 to see where)")


def test_main_ctrl_c_is_one_line(run_main, monkeypatch, capsys):
    from mulfree.flows import generate

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "command", interrupted)
    code, out, err = run_main(["gen"], capsys)
    assert code == 130
    assert err.strip().count("\n") == 0 and "interrupted" in err
