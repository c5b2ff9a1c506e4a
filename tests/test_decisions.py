"""The review journal: append, replay, undo/redo, resume, crash safety, and writing the cleaned file."""

from __future__ import annotations

import json

import orjson
import pytest

from curate.decisions import (
    Action,
    Decision,
    DecisionJournal,
    check_edited_row,
    default_clean_path,
    journal_path,
    schema_row_rules,
    write_reviewed,
)
from curate.engine.rule import load_builtin_rules
from curate.io import read_rows, row_hash
from tests.conftest import write_jsonl


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


@pytest.fixture
def data(tmp_path):
    return write_jsonl(tmp_path / "data.jsonl", [chat(f"question {i}", f"answer {i}") for i in range(1, 6)])


def hashes_of(path) -> dict[int, str]:
    return {row.line: row_hash(row) for row in read_rows(path)}


def decide(journal: DecisionJournal, hashes: dict[int, str], action: Action, line: int, **kwargs) -> None:
    journal.record([Decision(action, line, hashes[line], **kwargs)])


def test_paths_sit_beside_the_data(data):
    assert journal_path(data).name == "data.jsonl.curate-review.jsonl"
    assert default_clean_path(data).name == "data.clean.jsonl"
    assert default_clean_path(data.with_name("train.json.gz")).name == "train.clean.jsonl"


def test_decisions_are_appended_and_replayed(data):
    hashes = hashes_of(data)
    with DecisionJournal.open(data, hashes) as journal:
        decide(journal, hashes, Action.DROP, 2)
        decide(journal, hashes, Action.KEEP, 3)
        decide(journal, hashes, Action.WAIVE, 4, code="QL001")
        decide(journal, hashes, Action.EDIT, 5, row=chat("question 5", "a better answer"))
    entries = [json.loads(line) for line in journal_path(data).read_text().splitlines()]
    assert entries[0]["op"] == "header" and [e["op"] for e in entries[1:]] == ["decide"] * 4
    reopened = DecisionJournal.open(data, hashes)
    state = reopened.state
    assert state.rows[2].dropped and state.rows[3].label == "kept"
    assert state.is_waived(4, "QL001") and not state.is_waived(4, "QL002")
    assert state.rows[5].has_edit and state.rows[5].edited["messages"][1]["content"] == "a better answer"
    assert reopened.decision_count == 4 and reopened.report.problems() == []


def test_undo_and_redo_are_journal_entries_and_survive_reopen(data):
    hashes = hashes_of(data)
    with DecisionJournal.open(data, hashes) as journal:
        decide(journal, hashes, Action.DROP, 1)
        decide(journal, hashes, Action.DROP, 2)
        assert [d.line for d in journal.undo()] == [2]
        assert journal.state.get(2) is None and journal.state.rows[1].dropped
        assert [d.line for d in journal.redo()] == [2]
        assert journal.state.rows[2].dropped
        journal.undo()
        decide(journal, hashes, Action.KEEP, 3)  # a new decision clears the redo stack
        assert journal.redo() is None
    reopened = DecisionJournal.open(data, hashes)
    assert sorted(reopened.state.rows) == [1, 3]
    assert reopened.state.rows[1].dropped and reopened.state.rows[3].action is Action.KEEP
    assert reopened.undo() is not None and reopened.undo() is not None and reopened.undo() is None


def test_a_multi_row_step_undoes_as_one(data):
    hashes = hashes_of(data)
    with DecisionJournal.open(data, hashes) as journal:
        journal.record([Decision(Action.KEEP, 1, hashes[1]), Decision(Action.DROP, 2, hashes[2]), Decision(Action.DROP, 3, hashes[3])])
        assert journal.state.counts()["dropped"] == 2
        journal.undo()
        assert journal.state.rows == {}


def test_truncated_last_line_is_reported_and_cut(data):
    hashes = hashes_of(data)
    with DecisionJournal.open(data, hashes) as journal:
        decide(journal, hashes, Action.DROP, 1)
        decide(journal, hashes, Action.DROP, 2)
    path = journal_path(data)
    path.write_bytes(path.read_bytes()[:-15])  # the process died in the middle of the second entry
    with DecisionJournal.open(data, hashes) as reopened:
        assert reopened.report.truncated_tail
        assert "incomplete" in reopened.report.problems()[0]
        assert sorted(reopened.state.rows) == [1]
        decide(reopened, hashes, Action.DROP, 3)  # appends start on a clean line
    again = DecisionJournal.open(data, hashes)
    assert sorted(again.state.rows) == [1, 3] and not again.report.truncated_tail


def test_garbage_lines_are_reported_not_fatal(data):
    hashes = hashes_of(data)
    with DecisionJournal.open(data, hashes) as journal:
        decide(journal, hashes, Action.DROP, 1)
    with journal_path(data).open("ab") as handle:
        handle.write(b'{"op": "bogus"}\n' + orjson.dumps({"op": "decide", "decisions": [Decision(Action.DROP, 2, hashes[2]).to_dict()]}) + b"\n")
    reopened = DecisionJournal.open(data, hashes)
    assert reopened.report.bad_lines == [3]
    assert sorted(reopened.state.rows) == [1, 2]


def test_changed_rows_are_reported_and_moved_rows_found_again(data, tmp_path):
    hashes = hashes_of(data)
    with DecisionJournal.open(data, hashes) as journal:
        decide(journal, hashes, Action.DROP, 2)
        decide(journal, hashes, Action.DROP, 4)
    rows = [chat("a new first row", "hi")] + [chat(f"question {i}", f"answer {i}") for i in range(1, 6)]
    rows[4] = chat("question 4", "someone changed this answer")  # was line 4, now line 5
    write_jsonl(data, rows)
    reopened = DecisionJournal.open(data, hashes_of(data))
    assert reopened.report.moved == [(2, 3)]
    assert [d.line for d in reopened.report.stale] == [4]
    assert sorted(reopened.state.rows) == [3]
    assert any("changed" in problem for problem in reopened.report.problems())


def test_write_reviewed_applies_decisions_atomically_and_leaves_input(data):
    original = data.read_bytes()
    hashes = hashes_of(data)
    with DecisionJournal.open(data, hashes) as journal:
        decide(journal, hashes, Action.DROP, 2)
        decide(journal, hashes, Action.EDIT, 3, row=chat("question 3", "edited"))
    out = default_clean_path(data)
    summary = write_reviewed(read_rows(data), journal.state, out)
    assert (summary.written, summary.dropped, summary.edited) == (4, 1, 1)
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["messages"][0]["content"] for row in written] == ["question 1", "question 3", "question 4", "question 5"]
    assert written[1]["messages"][1]["content"] == "edited"
    assert data.read_bytes() == original
    assert not list(data.parent.glob(".data.clean.jsonl.*.tmp"))


def test_write_reviewed_leaves_old_output_when_writing_fails(data, monkeypatch):
    out = default_clean_path(data)
    out.write_text("previous output\n")
    journal = DecisionJournal.open(data, hashes_of(data))

    def broken_rows():
        yield from read_rows(data)[:2]
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_reviewed(broken_rows(), journal.state, out)
    assert out.read_text() == "previous output\n"


def test_check_edited_row_refuses_invalid_json_and_invalid_conversations():
    rules = schema_row_rules([cls() for code, cls in load_builtin_rules().items() if code.startswith("SC")])
    obj, problems = check_edited_row('{"messages": [', "data.jsonl", 3, rules)
    assert obj is None and problems[0].startswith("invalid JSON")
    _, problems = check_edited_row(json.dumps({"messages": [{"role": "user", "content": "hi"}]}), "data.jsonl", 3, rules)
    assert any(problem.startswith("SC006") for problem in problems)
    obj, problems = check_edited_row(json.dumps(chat("hi", "hello")), "data.jsonl", 3, rules)
    assert problems == [] and obj == chat("hi", "hello")


def test_headless_core_and_fix_never_import_textual(tmp_path):
    import subprocess
    import sys

    from tests.conftest import ROOT

    data = write_jsonl(tmp_path / "data.jsonl", [chat("hi", "hello"), chat("hi", "hello")])
    script = (
        "import sys\n"
        "import curate.decisions, curate.fix, curate.text.diff, curate.tui.session\n"
        "from curate.cli import main\n"
        f"code = main(['fix', {str(data)!r}, '--isolated', '--no-progress'])\n"
        "print('TEXTUAL=' + str('textual' in sys.modules))\n"
        "print('EXIT=' + str(code))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "EXIT=0" in proc.stdout and "TEXTUAL=False" in proc.stdout, proc.stdout + proc.stderr[-2000:]
