"""Bad input never produces a traceback: a finding for a bad row, one line naming the file for a bad file."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest

from curate.io import InputError, atomic_write_jsonl, iter_rows, read_rows
from tests.conftest import write_jsonl

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"}]}
GOOD_LINE = json.dumps(GOOD).encode()


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate", *args], capture_output=True, text=True, cwd=cwd, timeout=120)


def assert_no_traceback(proc: subprocess.CompletedProcess) -> None:
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr


def test_malformed_line_is_a_finding_and_lint_goes_on(lint):
    result = lint([GOOD, '{"messages": [', GOOD], select=["SC"])
    assert [(f.code, f.line) for f in result.findings] == [("SC001", 2)]
    assert result.rows == 3


def test_array_and_string_lines_are_unknown_format(lint):
    result = lint(['["a", "b"]', '"text"', GOOD], select=["SC"])
    assert [(f.code, f.line) for f in result.findings] == [("SC002", 1), ("SC002", 2)]
    assert "array" in result.findings[0].message and "string" in result.findings[1].message


def test_invalid_utf8_is_reported_with_its_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(GOOD_LINE + b"\n" + b'{"prompt": "caf\xe9", "completion": "x"}\n' + GOOD_LINE + b"\n")
    rows = read_rows(path)
    assert [row.line for row in rows] == [1, 2, 3]
    assert rows[1].error and "UTF-8" in rows[1].error and "0xe9" in rows[1].error
    assert rows[0].ok and rows[2].ok


def test_bom_and_crlf_are_tolerated(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD_LINE + b"\r\n" + GOOD_LINE + b"\r\n")
    rows = read_rows(path)
    assert len(rows) == 2 and all(row.ok for row in rows)
    assert rows[0].obj == GOOD


def test_blank_lines_keep_physical_line_numbers(tmp_path):
    path = tmp_path / "gaps.jsonl"
    path.write_bytes(GOOD_LINE + b"\n\n   \n" + b"{oops\n")
    rows = read_rows(path)
    assert [row.line for row in rows] == [1, 4]


@pytest.mark.parametrize(
    ("setup", "expected"),
    [
        (lambda p: p.write_bytes(b""), "file is empty"),
        (lambda p: p.write_bytes(b"\n\n"), "file is empty"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: None, "no such file"),
        (lambda p: p.write_bytes("\ufeff{}".encode("utf-16")), "UTF-16"),
    ],
    ids=["empty", "only-blank-lines", "directory", "missing", "utf16"],
)
def test_file_level_problems_are_one_line_errors(tmp_path, setup, expected):
    path = tmp_path / "data.jsonl"
    setup(path)
    with pytest.raises(InputError, match=expected) as info:
        list(iter_rows(path))
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    proc = run_cli("lint", str(path), "--isolated")
    assert proc.returncode == 2
    assert_no_traceback(proc)
    assert expected in proc.stderr and str(path) in proc.stderr


def test_other_files_are_still_linted_when_one_is_missing(tmp_path):
    good = write_jsonl(tmp_path / "good.jsonl", [GOOD, "{broken"])
    proc = run_cli("lint", str(tmp_path / "missing.jsonl"), str(good), "--isolated", "--select", "SC")
    assert proc.returncode == 2
    assert f"{good}:2: SC001" in proc.stdout
    assert "no such file" in proc.stderr


def test_huge_single_line_is_reported_not_parsed(tmp_path):
    path = tmp_path / "huge.jsonl"
    blob = "x" * (50 * 1024 * 1024)
    path.write_bytes(GOOD_LINE + b"\n" + json.dumps({"prompt": "p", "completion": blob}).encode() + b"\n" + GOOD_LINE + b"\n")
    proc = run_cli("lint", str(path), "--isolated", "--select", "SC", "--format", "json")
    assert_no_traceback(proc)
    report = json.loads(proc.stdout)
    assert [(f["code"], f["line"]) for f in report["findings"]] == [("SC009", 2)]
    assert report["summary"]["rows"] == 3
    assert proc.returncode == 1


def test_json_array_gzip_and_parquet_inputs(tmp_path):
    import polars as pl

    records = [GOOD, {"prompt": "2+2?", "completion": "4"}]
    (tmp_path / "data.json").write_text(json.dumps(records))
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": records}))
    with gzip.open(tmp_path / "data.jsonl.gz", "wt") as handle:
        handle.write("\n".join(json.dumps(r) for r in records) + "\n")
    pl.DataFrame({"prompt": ["2+2?", "3+3?"], "completion": ["4", "6"]}).write_parquet(tmp_path / "data.parquet")
    (tmp_path / "lines.json").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    for name in ("data.json", "wrapped.json", "data.jsonl.gz", "data.parquet", "lines.json"):
        rows = read_rows(tmp_path / name)
        assert len(rows) == 2 and all(row.ok for row in rows), name
        assert [row.line for row in rows] == [1, 2]


def test_json_file_that_does_not_parse_names_the_line(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('[\n {"prompt": "a", "completion": "b"},\n {"prompt": }\n]')
    with pytest.raises(InputError, match=r"bad\.json:3: invalid JSON"):
        read_rows(path)


def test_corrupt_gzip_is_a_one_line_error(tmp_path):
    path = tmp_path / "data.jsonl.gz"
    path.write_bytes(b"not gzip at all")
    proc = run_cli("lint", str(path), "--isolated")
    assert proc.returncode == 2
    assert_no_traceback(proc)
    assert str(path) in proc.stderr


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "out.jsonl"
    target.write_text("old\n")
    assert atomic_write_jsonl(target, [{"a": 1}, {"b": 2}]) == 2
    assert target.read_text() == '{"a":1}\n{"b":2}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["out.jsonl"]


def test_lint_never_modifies_its_input(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [GOOD, "{broken", GOOD])
    before = path.read_bytes()
    proc = run_cli("lint", str(path), "--isolated")
    assert proc.returncode == 1, proc.stderr  # it really linted: the broken line is an SC001 error
    assert "SC001" in proc.stdout
    assert path.read_bytes() == before
