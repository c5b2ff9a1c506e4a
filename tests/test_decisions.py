"""The review journal: append, replay, undo/redo, resume, crash safety, and writing the cleaned file."""

from __future__ import annotations

import json

import orjson
import pytest

from curate.decisions import Action, Decision, DecisionJournal, default_clean_path, journal_path
from curate.engine.runner import LintResult
from curate.fix import check_edited_row, save_reviewed, schema_row_rules
from curate.engine.rule import load_builtin_rules
from curate.io import OutputError, read_rows, row_hash
from tests.conftest import write_jsonl


def write_reviewed(rows, state, out):
    """Review's save of `rows` (no findings: only the journal's decisions apply)."""
    rows = list(rows)
    path = rows[0].path if rows else ""
    result = LintResult(findings=[], rows=len(rows), files=[path], row_hashes={(row.path, row.line): row_hash(row) for row in rows})
    return save_reviewed(result, path, rows, state, str(out))


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


# -- decisions stay on the row they were made on, duplicates included --------------------------


def sixty_rows() -> list[dict]:
    """60 support rows where line 51 is a copy of line 1 (a real dataset's duplicate)."""
    rows = [chat(f"How do I change setting {i}?", f"Open the menu and pick option {i}.") for i in range(1, 61)]
    rows[50] = rows[0]
    return rows


def test_a_decision_on_a_copy_never_lands_on_the_other_copy(tmp_path, capsys):
    from curate.cli import main

    rows = sixty_rows()
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    hashes = hashes_of(data)
    assert hashes[1] == hashes[51]
    with DecisionJournal.open(data, hashes) as journal:
        decide(journal, hashes, Action.DROP, 51)
    rows[50] = chat("How do I change setting 1?", "Someone rewrote this copy by hand.")
    write_jsonl(data, rows)
    with DecisionJournal.open(data, hashes_of(data)) as reopened:
        assert reopened.state.rows == {}  # line 1 is untouched
        assert [d.line for d in reopened.report.ambiguous] == [51]
        assert any("identical copies" in problem and "51" in problem for problem in reopened.report.problems())
    assert main(["fix", str(data), "--isolated", "--no-progress", "--select", "SC001", "-o", str(tmp_path / "out.jsonl")]) == 0
    written = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(written) == 60 and written[0] == rows[0]
    assert "identical copies" in capsys.readouterr().out


def test_decisions_on_both_copies_follow_their_rows_when_rows_are_inserted_above(tmp_path):
    rows = sixty_rows()
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    hashes = hashes_of(data)
    with DecisionJournal.open(data, hashes) as journal:
        decide(journal, hashes, Action.DROP, 1)
        decide(journal, hashes, Action.EDIT, 51, row=chat("How do I change setting 1?", "The reviewed answer."))
    inserted = [chat(f"A new question {i}", f"A new answer {i}") for i in range(30)]
    write_jsonl(data, inserted + rows)
    with DecisionJournal.open(data, hashes_of(data)) as reopened:
        assert sorted(reopened.state.rows) == [31, 81]
        assert reopened.state.rows[31].dropped and reopened.state.rows[81].has_edit
        assert sorted(reopened.report.moved) == [(1, 31), (51, 81)] and not reopened.report.ambiguous


def test_copies_moved_by_deletions_and_edits_elsewhere_keep_their_decisions(tmp_path):
    same = chat("Where is my order?", "It ships within two days.")
    rows = [chat("Hello", "Hi, how can I help?"), same, chat("Do you ship abroad?", "Yes."), chat("Refunds?", "Thirty days."), same]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    hashes = hashes_of(data)
    with DecisionJournal.open(data, hashes) as journal:
        decide(journal, hashes, Action.KEEP, 2)
        decide(journal, hashes, Action.DROP, 5)
        decide(journal, hashes, Action.DROP, 3)
    # line 1 deleted, line 4 edited: the copies are now lines 1 and 4, in the same order
    write_jsonl(data, [same, chat("Do you ship abroad?", "Yes."), chat("Refunds?", "Within thirty days."), same])
    with DecisionJournal.open(data, hashes_of(data)) as reopened:
        state = reopened.state
        assert state.rows[1].action is Action.KEEP and state.rows[4].dropped and state.rows[2].dropped
        assert sorted(state.rows) == [1, 2, 4]


def test_a_new_copy_of_a_decided_row_makes_the_decision_stale_not_doubled(tmp_path):
    rows = [chat(f"question {i}", f"answer {i}") for i in range(1, 6)]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    hashes = hashes_of(data)
    with DecisionJournal.open(data, hashes) as journal:
        decide(journal, hashes, Action.DROP, 2)
        decide(journal, hashes, Action.DROP, 4)
    write_jsonl(data, [rows[1]] + rows)  # a copy of line 2 inserted on top
    with DecisionJournal.open(data, hashes_of(data)) as reopened:
        assert sorted(reopened.state.rows) == [5]  # line 4 moved to 5; neither copy of line 2 is dropped
        assert [d.line for d in reopened.report.ambiguous] == [2]


def test_entries_without_copy_counts_apply_only_on_their_own_line(data):
    hashes = hashes_of(data)
    entries = [{"op": "header", "version": 1, "data": "data.jsonl"},
               {"op": "decide", "decisions": [{"action": "drop", "line": 2, "hash": hashes[2]}]},
               {"op": "decide", "decisions": [{"action": "drop", "line": 5, "hash": hashes[3]}]}]
    journal_path(data).write_bytes(b"".join(orjson.dumps(entry) + b"\n" for entry in entries))
    with DecisionJournal.open(data, hashes) as reopened:
        assert sorted(reopened.state.rows) == [2] and [d.line for d in reopened.report.ambiguous] == [5]


# -- one session at a time; a failed write is never replayed -----------------------------------


def test_a_second_session_is_refused_and_told_who_holds_the_journal(data, capsys):
    import os

    from curate.cli import main
    from curate.decisions import JournalLocked, journal_holder

    hashes = hashes_of(data)
    first = DecisionJournal.open(data, hashes)
    decide(first, hashes, Action.DROP, 1)
    with pytest.raises(JournalLocked, match=f"pid {os.getpid()}"):
        DecisionJournal.open(data, hashes)
    assert journal_holder(data) == f"pid {os.getpid()}"
    assert main(["review", str(data), "--isolated"]) == 2
    err = capsys.readouterr().err
    assert f"pid {os.getpid()}" in err and "close that session" in err and err.count("\n") == 1
    with DecisionJournal.open(data, hashes, read_only=True) as reader:  # curate fix may still read it
        assert reader.state.rows[1].dropped
    first.undo()  # only the lock holder can pop a step
    first.close()
    assert journal_holder(data) is None
    with DecisionJournal.open(data, hashes) as second:
        assert second.state.rows == {} and second.undo() is None


class FailingWrites:
    """os.write / os.fsync that fail on chosen calls (counted from 1); a failing write first
    writes half its bytes, as a full disk does."""

    def __init__(self, monkeypatch, fail_writes=(), fail_fsyncs=(), fail_truncate=False):
        import os

        self.writes = self.fsyncs = 0
        self.fail_writes, self.fail_fsyncs = set(fail_writes), set(fail_fsyncs)
        real_write, real_fsync, real_ftruncate = os.write, os.fsync, os.ftruncate

        def write(fd, data):
            self.writes += 1
            if self.writes in self.fail_writes:
                real_write(fd, bytes(data)[: max(1, len(data) // 2)])
                raise OSError(28, "No space left on device")
            return real_write(fd, data)

        def fsync(fd):
            self.fsyncs += 1
            if self.fsyncs in self.fail_fsyncs:
                raise OSError(5, "Input/output error")
            return real_fsync(fd)

        def ftruncate(fd, size):
            if fail_truncate:
                raise OSError(5, "Input/output error")
            return real_ftruncate(fd, size)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "ftruncate", ftruncate)


def test_a_failed_write_leaves_the_journal_as_it_was_and_is_never_replayed(data, monkeypatch):
    from curate.decisions import JournalWriteError

    hashes = hashes_of(data)
    with DecisionJournal.open(data, hashes) as journal:
        decide(journal, hashes, Action.DROP, 1)
        before = journal_path(data).read_bytes()
        faults = FailingWrites(monkeypatch, fail_writes={1}, fail_fsyncs={2})
        with pytest.raises(JournalWriteError, match="journal is unchanged"):
            decide(journal, hashes, Action.DROP, 2)  # the write fails half way
        assert journal_path(data).read_bytes() == before and 2 not in journal.state.rows
        with pytest.raises(JournalWriteError, match="undo was not recorded"):
            journal.undo()  # written, but the fsync fails
        assert journal_path(data).read_bytes() == before and journal.state.rows[1].dropped
        decide(journal, hashes, Action.DROP, 3)  # the disk is back
        assert faults.writes == 3
    reopened = DecisionJournal.open(data, hashes)
    assert sorted(reopened.state.rows) == [1, 3] and reopened.report.problems() == []
    reopened.close()


def test_a_journal_that_cannot_be_cut_back_refuses_further_writes(data, monkeypatch):
    from curate.decisions import JournalWriteError

    hashes = hashes_of(data)
    with DecisionJournal.open(data, hashes) as journal:
        decide(journal, hashes, Action.DROP, 1)
        FailingWrites(monkeypatch, fail_writes={1}, fail_truncate=True)
        with pytest.raises(JournalWriteError, match="nor cut back"):
            decide(journal, hashes, Action.DROP, 2)
        with pytest.raises(JournalWriteError, match="Quit and reopen"):
            decide(journal, hashes, Action.DROP, 3)
        assert sorted(journal.state.rows) == [1]
    monkeypatch.undo()
    with DecisionJournal.open(data, hashes) as reopened:  # the torn entry is cut on reopen, never applied
        assert sorted(reopened.state.rows) == [1] and reopened.report.truncated_tail


# -- fault injection: fail every write, crash at every byte; replay holds what was acknowledged --


FAULT_ROWS = [
    chat("Where is my order?", "It ships within two days."),
    chat("Can I pay by card?", "Visa and Mastercard."),
    chat("Where is my order?", "It ships within two days."),
    {"instruction": "Summarise", "input": "<noinput>", "output": "N/A"},
    chat("Do you ship abroad?", "To 30 countries."),
]


def fault_sequence(hashes: dict[int, str]) -> list[tuple]:
    """decide / undo / redo / save steps, with a multi-row step and a write of the cleaned file in between."""
    return [
        ("decide", [Decision(Action.DROP, 3, hashes[3])]),
        ("decide", [Decision(Action.KEEP, 1, hashes[1]), Decision(Action.DROP, 3, hashes[3])]),
        ("undo",),
        ("save",),
        ("decide", [Decision(Action.EDIT, 4, hashes[4], row=chat("Summarise", "A summary."))]),
        ("undo",),
        ("redo",),
        ("decide", [Decision(Action.WAIVE, 5, hashes[5], code="QL001")]),
        ("save",),
        ("undo",),
        ("decide", [Decision(Action.DROP, 2, hashes[2])]),
    ]


class Model:
    """An independent model of what acknowledged steps mean: two stacks of steps."""

    def __init__(self):
        self.applied: list[list[Decision]] = []
        self.undone: list[list[Decision]] = []

    def ack(self, op: tuple) -> None:
        if op[0] == "decide":
            self.applied.append(op[1])
            self.undone.clear()
        elif op[0] == "undo" and self.applied:
            self.undone.append(self.applied.pop())
        elif op[0] == "redo" and self.undone:
            self.applied.append(self.undone.pop())

    def rows(self) -> dict:
        rows: dict[int, dict] = {}
        for step in self.applied:
            for decision in step:
                row = rows.setdefault(decision.line, {"action": None, "edited": None, "waived": set()})
                if decision.action is Action.WAIVE:
                    row["waived"].add(decision.code)
                elif decision.action is Action.EDIT:
                    row["action"], row["edited"] = Action.KEEP, decision.row
                else:
                    row["action"] = decision.action
        return rows


def observed(journal: DecisionJournal) -> dict:
    return {line: {"action": s.action, "edited": s.edited, "waived": s.waived} for line, s in journal.state.rows.items()}


def run_sequence(data, hashes, ops, model: Model, on_ack=None) -> int:
    """Run `ops`; a step that raises was not acknowledged and must leave no trace. Returns the failures."""
    out, failures = default_clean_path(data), 0
    with DecisionJournal.open(data, hashes) as journal:
        for op in ops:
            try:
                if op[0] == "decide":
                    journal.record(op[1])
                elif op[0] == "undo":
                    journal.undo()
                elif op[0] == "redo":
                    journal.redo()
                else:
                    write_reviewed(read_rows(data), journal.state, out)
            except (OSError, OutputError):  # a journal write (OSError) or the cleaned file (OutputError, one line)
                assert observed(journal) == model.rows()  # the UI's state did not move either
                failures += 1
                continue
            model.ack(op)
            assert observed(journal) == model.rows()
            if on_ack is not None:
                on_ack(op)
    return failures


@pytest.mark.parametrize("fault", ["write", "fsync"])
def test_failing_any_single_write_loses_nothing_acknowledged_and_replays_nothing_else(tmp_path, monkeypatch, fault):
    data = write_jsonl(tmp_path / "data.jsonl", FAULT_ROWS)
    hashes = hashes_of(data)
    ops = fault_sequence(hashes)
    counter = FailingWrites(monkeypatch)
    assert run_sequence(data, hashes, ops, Model()) == 0  # count the calls of a run without faults
    total = counter.writes if fault == "write" else counter.fsyncs
    assert total >= len(ops) - 2  # one per journal entry (and per saved file for fsync)
    monkeypatch.undo()
    for n in range(1, total + 1):
        journal_path(data).unlink()
        default_clean_path(data).unlink(missing_ok=True)
        FailingWrites(monkeypatch, **{f"fail_{fault}s": {n}})
        model = Model()
        assert run_sequence(data, hashes, ops, model) == 1, f"{fault} {n} was not reported as a failure"
        monkeypatch.undo()
        with DecisionJournal.open(data, hashes) as reopened:
            assert observed(reopened) == model.rows(), f"{fault} {n} failed"
            assert reopened.report.problems() == []


def test_a_crash_at_any_byte_replays_exactly_the_acknowledged_steps(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", FAULT_ROWS)
    hashes = hashes_of(data)
    model = Model()
    checkpoints = [(0, {})]  # (journal size when a step was acknowledged, state then)

    def acknowledged(op) -> None:
        checkpoints.append((journal_path(data).stat().st_size, model.rows()))

    run_sequence(data, hashes, fault_sequence(hashes), model, acknowledged)
    written = journal_path(data).read_bytes()
    for size in range(len(written) + 1):
        journal_path(data).write_bytes(written[:size])  # what a kill -9 after `size` bytes leaves
        expected = [state for end, state in checkpoints if end <= size][-1]
        with DecisionJournal.open(data, hashes) as reopened:
            assert observed(reopened) == expected, f"crash after {size} bytes"
