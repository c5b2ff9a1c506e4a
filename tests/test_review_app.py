"""`curate review` behaviour through Textual's Pilot: navigate, decide, undo, edit, save, resume."""

from __future__ import annotations

import json
import subprocess
from contextlib import asynccontextmanager
import sys

import pytest


from textual.widgets import ContentSwitcher, Input, TextArea  # noqa: E402

from curate.cli import main  # noqa: E402
from curate.decisions import journal_path  # noqa: E402
from curate.engine.settings import LintRequest, plan_lint  # noqa: E402
from curate.tui.app import build_app  # noqa: E402
from curate.tui.screens.confirm import ConfirmScreen  # noqa: E402
from curate.tui.screens.edit import EditScreen  # noqa: E402
from curate.tui.screens.help import HelpScreen  # noqa: E402
from curate.tui.screens.review import ReviewScreen  # noqa: E402
from curate.tui.widgets.findings_table import FindingsTable  # noqa: E402
from tests.conftest import ROOT, write_jsonl  # noqa: E402

SIZE = (120, 40)
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


REVIEW_ROWS = [
    chat("How do I reset my password on the web app?", "Open Settings, choose Security, then Reset password."),
    '{"messages": [{"role": "user", "content": "cut off"',
    chat("What is the refund window for annual plans?", "Thirty days from purchase, in full."),
    chat("How do I reset my password on the web app?", "Open Settings, choose Security, then Reset password."),
    {"messages": [{"role": "user", "content": "Is there a student discount?"}]},
    chat("Which cards do you accept?", "Visa, Mastercard and American Express."),
]
#: Rules whose findings these tests rely on; more rules may exist, the app must not care.
RULES = ["SC001", "SC006", "DU001"]


def make_app(path, **kwargs):
    plan = plan_lint(LintRequest(paths=[str(path)], isolated=True, select=RULES))
    return build_app(str(path), plan, **kwargs)


@pytest.fixture
def data(tmp_path):
    return write_jsonl(tmp_path / "data.jsonl", REVIEW_ROWS)


@asynccontextmanager
async def reviewing(data):
    """A running review app on `data` with lint done: yields (app, pilot, screen, table)."""
    app = make_app(data)
    async with app.run_test(size=SIZE) as pilot:
        screen = await loaded(app, pilot)
        yield app, pilot, screen, screen.query_one(FindingsTable)


async def loaded(app, pilot) -> ReviewScreen:
    await app.workers.wait_for_complete()
    await pilot.pause()
    screen = app.screen
    assert isinstance(screen, ReviewScreen)
    return screen


async def settle(pilot) -> None:
    """Let the debounced detail pane catch up with the cursor, then wait for idle."""
    await pilot.pause(ReviewScreen.DETAIL_DELAY * 3)
    await pilot.pause()


def journal_entries(data) -> list[dict]:
    return [json.loads(line) for line in journal_path(data).read_text().splitlines()]


async def test_lint_runs_in_a_worker_then_fills_the_table(data):
    async with reviewing(data) as (app, pilot, screen, table):
        lines = [f.line for f in app.session.visible]
        assert table.row_count == len(lines) and 2 in lines and 5 in lines
        assert table.current is app.session.visible[0]
        assert "0 decisions" in screen.status_text() and "data.jsonl.curate-review.jsonl" in screen.status_text()


async def test_navigate_with_n_and_p(data):
    async with reviewing(data) as (app, pilot, screen, table):
        await pilot.press("n", "n")
        assert table.cursor_row == 2
        await pilot.press("p")
        await settle(pilot)
        assert table.cursor_row == 1
        header = str(screen.query_one("#detail-header").render())
        assert table.current.code in header


async def test_drop_then_undo_and_redo_are_journalled(data):
    async with reviewing(data) as (app, pilot, screen, table):
        first = table.current
        await pilot.press("d")
        assert app.session.status_of(first) == "dropped"
        assert table.current.line != first.line  # advanced to the next row's finding
        digest = app.session.result.row_hashes[(str(data), first.line)]
        assert journal_entries(data)[-1]["decisions"][0] == {"action": "drop", "line": first.line, "hash": digest, "occurrence": 0, "copies": 1}
        await pilot.press("u")
        assert app.session.status_of(first) == ""
        assert table.current.line == first.line
        await pilot.press("U")
        assert app.session.status_of(first) == "dropped"
        assert [entry["op"] for entry in journal_entries(data)] == ["header", "decide", "undo", "redo"]


async def test_waive_and_keep_mark_the_row(data):
    async with reviewing(data) as (app, pilot, screen, table):
        first = table.current
        await pilot.press("w")
        assert app.session.status_of(first) == "waived"
        second = table.current
        await pilot.press("k")
        assert app.session.status_of(second) == "kept"
        assert "2 decisions" in screen.status_text()


async def test_edit_refuses_invalid_json_and_invalid_rows_then_saves_a_valid_one(data):
    async with reviewing(data) as (app, pilot, screen, table):
        target = next(i for i, f in enumerate(app.session.visible) if f.line == 5)
        table.move_cursor(row=target)
        await pilot.press("e")
        editor = app.screen
        assert isinstance(editor, EditScreen)
        area = editor.query_one(TextArea)
        assert json.loads(area.text) == REVIEW_ROWS[4]
        area.load_text('{"messages": [')
        await pilot.press("ctrl+s")
        assert app.screen is editor and "invalid JSON" in str(editor.query_one("#edit-problems").render())
        area.load_text(json.dumps({"messages": [{"role": "user", "content": "Is there a student discount?"}]}))
        await pilot.press("ctrl+s")
        assert app.screen is editor and "SC006" in str(editor.query_one("#edit-problems").render())
        assert app.session.journal.decision_count == 0
        fixed = chat("Is there a student discount?", "Yes: 30% off with a valid student email.")
        area.load_text(json.dumps(fixed))
        await pilot.press("ctrl+s")
        assert isinstance(app.screen, ReviewScreen)
        assert app.session.current_row_object(5) == fixed
        assert app.session.status_of(app.session.visible[target]) == "edited"


async def test_edit_cancel_records_nothing(data):
    async with reviewing(data) as (app, pilot, screen, table):
        await pilot.press("e")
        assert isinstance(app.screen, EditScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, ReviewScreen) and app.session.journal.decision_count == 0


async def test_save_writes_the_cleaned_file_and_leaves_the_input(data):
    original = data.read_bytes()
    async with reviewing(data) as (app, pilot, screen, table):
        dropped = [f.line for f in app.session.visible]
        assert app.session.unresolved_errors() == 0  # SC001 and SC006 rows are dropped by the save, as by `curate fix`
        for _ in dropped:
            await pilot.press("d")
        await pilot.press("s")
        assert not app.session.unsaved and app.session.unresolved_errors() == 0
    written = [json.loads(line) for line in (data.parent / "data.clean.jsonl").read_text().splitlines()]
    kept = [row for line, row in enumerate(REVIEW_ROWS, start=1) if line not in dropped]
    assert written == kept and data.read_bytes() == original


async def test_review_save_writes_what_curate_fix_writes_from_the_same_journal(data, tmp_path, capsys):
    async with reviewing(data) as (app, pilot, screen, table):
        await pilot.press("k")  # keep the first flagged row; the save still drops what fix drops
        await pilot.press("s")
    saved = (data.parent / "data.clean.jsonl").read_bytes()
    assert main(["fix", "--isolated", "--no-progress", "--select", ",".join(RULES), str(data), "-o", str(tmp_path / "fixed.jsonl")]) == 0
    capsys.readouterr()
    assert saved == (tmp_path / "fixed.jsonl").read_bytes()
    # the broken line (SC001), the answerless row (SC006) and the copy (DU001) are gone
    assert len(saved.splitlines()) == 3


async def test_reopen_resumes_the_decisions_and_position(data):
    async with reviewing(data) as (app, pilot, screen, table):
        first = table.current
        await pilot.press("d")
    async with reviewing(data) as (reopened, pilot, screen, table):
        assert reopened.session.status_of(first) == "dropped"
        current = table.current
        assert current.line > first.line and reopened.session.status_of(current) == ""
        assert "1 decision " in screen.status_text()


async def test_duplicates_compare_side_by_side_and_cluster_keeps_one(data):
    async with reviewing(data) as (app, pilot, screen, table):
        table.move_cursor(row=next(i for i, f in enumerate(app.session.visible) if f.code == "DU001"))
        await settle(pilot)
        assert screen.query_one("#detail-switcher", ContentSwitcher).current == "compare"
        assert "line 1" in screen.query_one("#compare-right").border_title
        await pilot.press("c")
        state = app.session.journal.state
        assert state.rows[1].label == "kept" and state.rows[4].dropped
        await pilot.press("u")
        assert app.session.journal.state.rows == {}


async def test_search_filters_the_table(data):
    async with reviewing(data) as (app, pilot, screen, table):
        await pilot.press("slash")
        assert isinstance(app.focused, Input)
        await pilot.press(*"invalid")
        assert [f.code for f in app.session.visible] == ["SC001"]
        assert table.row_count == 1
        await pilot.press("escape")
        assert isinstance(app.focused, FindingsTable)


async def test_help_lists_every_binding(data):
    async with reviewing(data) as (app, pilot, screen, table):
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        rows = dict(app.screen.rows)
        assert rows["k"].startswith("keep the row") and rows["d"].startswith("drop the row")
        assert rows["ctrl+r / U"].startswith("redo") and "duplicates" in rows["c"] and rows["?"] == "show this help"
        assert len(rows) >= len(ReviewScreen.BINDINGS)
        await pilot.press("escape")
        assert isinstance(app.screen, ReviewScreen)


async def test_quit_with_unsaved_decisions_asks_first(data):
    async with reviewing(data) as (app, pilot, screen, table):
        await pilot.press("d", "q")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, ReviewScreen)
        await pilot.press("q", "y")  # save and quit
    assert (data.parent / "data.clean.jsonl").exists()


def test_cli_errors_are_one_line_before_textual_starts(tmp_path):
    script = (
        "import sys\n"
        "from curate.cli import main\n"
        f"code = main(['review', {str(tmp_path / 'missing.jsonl')!r}, '--isolated'])\n"
        "print('TEXTUAL=' + str('textual' in sys.modules))\n"
        "print('EXIT=' + str(code))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "EXIT=2" in proc.stdout and "TEXTUAL=False" in proc.stdout
    assert proc.stderr.strip().count("\n") == 0 and "no such file" in proc.stderr


def test_cli_rejects_an_output_that_is_the_input(data, capsys):
    assert main(["review", str(data), "-o", str(data), "--isolated"]) == 2
    assert "overwrite the input" in capsys.readouterr().err


def test_compare_marks_differences_for_duplicates_and_shared_runs_for_leaks():
    from curate.text.diff import CompareMode, compare_messages

    left, right = compare_messages(["reset the router now", "ok"], ["reset the modem now", "ok"])
    assert left.spans == [[(10, 16)], []] and right.spans == [[(10, 15)], []]
    train = "please summarise the quarterly report for the board today"
    leaked = "Summarise the quarterly report for the board."
    left, right = compare_messages([train], [leaked], CompareMode.OVERLAP, min_run=3)
    assert [train[a:b] for a, b in left.spans[0]] == ["summarise the quarterly report for the board"]
    assert [leaked[a:b] for a, b in right.spans[0]] == ["Summarise the quarterly report for the board."]


async def test_a_clean_file_opens_with_an_empty_table_and_actions_do_nothing(tmp_path):
    clean = write_jsonl(tmp_path / "clean.jsonl", [REVIEW_ROWS[0], REVIEW_ROWS[2]])
    async with reviewing(clean) as (app, pilot, screen, table):
        assert table.row_count == 0 and table.current is None
        await pilot.press("d", "k", "e", "c", "n", "u")
        assert isinstance(app.screen, ReviewScreen) and app.session.journal.decision_count == 0


def test_leak_findings_compare_against_the_eval_row(tmp_path):
    from curate.text.diff import CompareMode
    from curate.tui.session import ReviewSession

    question = "What is the capital of France and why did it become the capital?"
    data = write_jsonl(tmp_path / "train.jsonl", [chat(question, "Paris."), REVIEW_ROWS[2]])
    evalset = write_jsonl(tmp_path / "eval.jsonl", [chat("Something else entirely here", "No."), chat(question, "Paris, since the 10th century.")])
    plan = plan_lint(LintRequest(paths=[str(data)], isolated=True, select=["LK001"], eval=[str(evalset)]))
    session = ReviewSession(str(data), plan)
    session.load()
    leak = next(f for f in session.findings if f.code == "LK001")
    counterpart = session.counterpart(leak)
    assert counterpart.mode is CompareMode.OVERLAP and counterpart.location.line == 2
    assert counterpart.row.obj["messages"][1]["content"] == "Paris, since the 10th century."
    session.close()


async def test_an_unreadable_journal_is_shown_not_a_traceback(data):
    journal_path(data).write_text('{"op": "header", "version": 99, "data": "data.jsonl"}\n')
    app = make_app(data)
    async with app.run_test(size=SIZE) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        label = str(app.screen.query_one("#loading-label").render())
        assert "version 99 is not supported" in label and not app.session.ready
        await pilot.press("d", "s")  # nothing to act on yet: no crash, nothing written
        assert not (data.parent / "data.clean.jsonl").exists()


async def test_open_filter_hides_decided_findings_without_skipping_the_next(data):
    async with reviewing(data) as (app, pilot, screen, table):
        app.session.set_filter(status="open")
        table.show(app.session.visible, app.session.status_of)
        findings = list(app.session.visible)
        await pilot.press("d")
        assert table.current is findings[1] and findings[0] not in app.session.visible


async def test_a_failed_journal_write_is_reported_and_changes_nothing(data, monkeypatch):
    import os

    async with reviewing(data) as (app, pilot, screen, table):
        await pilot.press("d")
        before = journal_path(data).read_bytes()
        real_write = os.write

        def disk_full(fd, payload):
            real_write(fd, bytes(payload)[:10])
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "write", disk_full)
        current = table.current
        await pilot.press("d")
        await pilot.press("u")
        monkeypatch.undo()
        await pilot.pause()
        messages = [str(n.message) for n in app._notifications]
        assert sum("journal is unchanged" in m and "No space left" in m for m in messages) == 2
        assert any("decision was not recorded" in m for m in messages) and any("undo was not recorded" in m for m in messages)
        assert journal_path(data).read_bytes() == before
        assert app.session.status_of(current) == "" and app.session.journal.decision_count == 1
        assert app.session.changes_since_save == 1  # only the first, acknowledged drop



async def test_reopening_after_a_decided_row_changed_reports_it_and_undo_still_works(data):
    from curate.decisions import Action, Decision, DecisionJournal
    from curate.io import read_rows, row_hash

    hashes = {row.line: row_hash(row) for row in read_rows(data)}
    with DecisionJournal.open(data, hashes) as journal:
        journal.record([Decision(Action.KEEP, 3, hashes[3])])
        journal.record([Decision(Action.DROP, 6, hashes[6])])
    rows = list(REVIEW_ROWS)
    rows[5] = chat("Which cards do you accept?", "Visa and Mastercard only.")  # the dropped row was edited by hand
    write_jsonl(data, rows)
    async with reviewing(data) as (app, pilot, screen, table):
        messages = [str(n.message) for n in app._notifications]
        assert any("rows changed" in m and "6" in m for m in messages)
        assert app.session.journal.decision_count == 1
        await pilot.press("u")  # the emptied step
        await pilot.press("u")  # the keep on line 3
        assert app.session.journal.state.rows == {} and isinstance(app.screen, ReviewScreen)
