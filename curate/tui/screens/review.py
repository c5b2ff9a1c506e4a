"""The main review screen: summary, filters, findings table, detail pane, and the actions.

Lint runs in a thread worker that only talks back through `post_message`;
every action is a call on the headless `ReviewSession`, then a redraw.
"""

from __future__ import annotations

from pathlib import Path

import orjson
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import Footer, Header, Input, ProgressBar, Static
from textual.worker import get_current_worker

from curate.decisions import Action, JournalWriteError
from curate.engine.findings import Finding
from curate.engine.runner import Progress
from curate.io import InputError
from curate.tui.screens.confirm import ConfirmScreen
from curate.tui.screens.edit import EditScreen
from curate.tui.screens.help import HelpScreen
from curate.tui.session import SORT_KEYS, Loaded, ReviewSession
from curate.tui.widgets.detail import DetailPane
from curate.tui.widgets.filter_bar import FilterBar
from curate.tui.widgets.findings_table import FindingsTable
from curate.tui.widgets.summary import SummaryPane


class LintProgress(Message):
    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress


class LintFinished(Message):
    """Lint is done, rows read, journal replayed: the worker hands the data to the UI thread."""

    def __init__(self, loaded: Loaded) -> None:
        super().__init__()
        self.loaded = loaded


class LintFailed(Message):
    def __init__(self, problem: str) -> None:
        super().__init__()
        self.problem = problem


class _Cancelled(Exception):
    """Raised from the progress callback to stop a lint whose worker was cancelled."""


class ReviewScreen(Screen):
    BINDINGS = [
        Binding("k", "keep", "Keep", tooltip="keep the row (the finding is accepted)"),
        Binding("d", "drop", "Drop", tooltip="drop the row from the cleaned file"),
        Binding("e", "edit", "Edit", tooltip="edit the row's JSON (invalid rows are refused)"),
        Binding("w", "waive", "Waive", tooltip="waive this finding's rule for this row"),
        Binding("u", "undo", "Undo", tooltip="undo the last decision"),
        Binding("ctrl+r,U", "redo", "Redo", tooltip="redo the last undone decision"),
        Binding("n", "next", "Next", tooltip="next finding"),
        Binding("p", "previous", "Prev", tooltip="previous finding"),
        Binding("c", "cluster", "Cluster", tooltip="duplicates: keep the first row of the cluster, drop the rest"),
        Binding("s", "save", "Save", tooltip="write the cleaned file (the input is never changed)"),
        Binding("question_mark", "help", "Help", tooltip="show this help"),
        Binding("q", "quit_review", "Quit", tooltip="quit (asks to save unsaved decisions)"),
        Binding("slash", "focus_search", "Search", show=False, tooltip="search finding messages"),
        Binding("o", "cycle_sort", "Sort", show=False, tooltip="sort by line, severity, rule, message"),
        Binding("escape", "focus_table", "Table", show=False, tooltip="back to the findings table"),
    ]

    #: Seconds the cursor must rest on a finding before the detail pane redraws.
    DETAIL_DELAY = 0.05

    def __init__(self, session: ReviewSession) -> None:
        super().__init__()
        self.session = session
        self._pending_detail: Finding | None = None
        self._detail_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="loading"):
            yield Static(f"Linting {self.session.data_name} ...", id="loading-label")
            yield ProgressBar(id="lint-progress", show_eta=False)
        with Horizontal(id="body"):
            yield SummaryPane(id="summary")
            with Vertical(id="main"):
                yield FilterBar(id="filters")
                yield FindingsTable(id="findings")
                yield DetailPane(id="detail")
        yield Static("", id="status")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#body").display = False
        self.load_session()

    # -- loading -----------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="lint")
    def load_session(self) -> None:
        worker = get_current_worker()

        def progress(event: Progress) -> None:
            if worker.is_cancelled:
                raise _Cancelled
            self.post_message(LintProgress(event))

        try:
            loaded = self.session.read(progress)
        except _Cancelled:
            return
        except InputError as exc:
            self.post_message(LintFailed(str(exc)))
            return
        self.post_message(LintFinished(loaded))

    @on(LintProgress)
    def _progress(self, message: LintProgress) -> None:
        event = message.progress
        bar = self.query_one("#lint-progress", ProgressBar)
        label = self.query_one("#loading-label", Static)
        if event.phase == "read":
            bar.update(total=max(event.total, 1), progress=event.done)
            label.update(f"Reading {self.session.data_name}: {event.rows:,} rows")
        else:
            bar.update(total=max(event.total, 1), progress=event.done)
            label.update(f"Checking {event.detail} ({event.rows:,} rows)")

    @on(LintFailed)
    def _failed(self, message: LintFailed) -> None:
        self.query_one("#loading-label", Static).update(f"[b red]{message.problem}[/]")

    @on(LintFinished)
    def _finished(self, message: LintFinished) -> None:
        session = self.session
        session.attach(message.loaded)
        self.query_one("#loading").display = False
        self.query_one("#body").display = True
        self.query_one(SummaryPane).show_result(session.result)
        self.query_one(FilterBar).set_rules(sorted(session.counts_by_code().items()))
        table = self.query_one(FindingsTable)
        table.show(session.visible, session.status_of)
        table.focus()
        self._resume_position()
        for problem in session.journal.report.problems() if session.journal else []:
            self.notify(problem, title="Review journal", severity="warning", timeout=8)
        self._refresh_side_panes()

    def _resume_position(self) -> None:
        """Reopened with decisions: put the cursor on the first open finding after the last decision."""
        journal = self.session.journal
        # Steps whose rows changed in the data are empty after replay (reported as stale).
        last = next((step[-1] for step in reversed(journal.applied) if step), None) if journal else None
        if last is None:
            return
        last_line = last.line
        visible = self.session.visible
        after = [i for i, f in enumerate(visible) if f.line is not None and f.line > last_line and not self.session.status_of(f)]
        index = after[0] if after else next((i for i, f in enumerate(visible) if not self.session.status_of(f)), None)
        if index is not None:
            self._move_to(index)
        self.notify(f"Resumed {journal.decision_count} decisions from {self.session.journal_name}", timeout=4)

    # -- redrawing ---------------------------------------------------------------------------

    @on(FindingsTable.Highlighted)
    def _highlighted(self, message: FindingsTable.Highlighted) -> None:
        """Redraw the detail pane once the cursor rests: holding n or the arrow keys moves
        only the table (cheap), not a relayout of the chat turns on every row passed."""
        if not self.session.ready:
            return
        self._pending_detail = message.finding
        if self._detail_timer is not None:
            self._detail_timer.stop()
        if self.DETAIL_DELAY <= 0:
            self._show_pending_detail()
        else:
            self._detail_timer = self.set_timer(self.DETAIL_DELAY, self._show_pending_detail)

    def _show_pending_detail(self) -> None:
        self._detail_timer = None
        self.query_one(DetailPane).show(self.session, self._pending_detail)

    def _refresh_side_panes(self) -> None:
        self.query_one(SummaryPane).show_decisions(self.session.decision_counts())
        self.query_one("#status", Static).update(self.status_text())

    def status_text(self) -> str:
        session = self.session
        decisions = session.journal.decision_count if session.journal else 0
        unsaved = " · unsaved" if session.unsaved else ""
        return (
            f"{decisions} decision{'s' if decisions != 1 else ''} · journal {session.journal_name} · "
            f"output {Path(session.output).name} · {len(session.visible):,}/{len(session.findings):,} findings{unsaved}"
        )

    def _after_change(self, lines: set[int]) -> None:
        table = self.query_one(FindingsTable)
        if self.session.filter.status != "all":
            self.session.refilter()
            table.show(self.session.visible, self.session.status_of, keep_cursor=True)
        else:
            table.refresh_status(lines)
        self.query_one(DetailPane).show(self.session, table.current)
        self._refresh_side_panes()

    def _move_to(self, index: int | None) -> None:
        if index is None:
            return
        table = self.query_one(FindingsTable)
        if index >= table.loaded:
            table.load_more(index + 1 - table.loaded)
        table.move_cursor(row=index, animate=False)

    # -- filters and sorting -----------------------------------------------------------------

    @on(FilterBar.Changed)
    def _filter(self, message: FilterBar.Changed) -> None:
        if not self.session.ready:
            return
        self.session.set_filter(**{message.field: message.value})
        self.query_one(FindingsTable).show(self.session.visible, self.session.status_of)
        self._refresh_side_panes()

    @on(FindingsTable.SortRequested)
    def _sort(self, message: FindingsTable.SortRequested) -> None:
        self._sort_by(message.key)

    def _sort_by(self, key: str) -> None:
        if not self.session.ready:
            return
        self.session.sort_by(key)
        self.query_one(FindingsTable).show(self.session.visible, self.session.status_of)
        direction = "descending" if self.session.sort_reverse else "ascending"
        self.notify(f"Sorted by {key} ({direction})", timeout=2)

    def action_cycle_sort(self) -> None:
        keys = list(SORT_KEYS)
        self._sort_by(keys[(keys.index(self.session.sort_key) + 1) % len(keys)])

    def action_focus_search(self) -> None:
        self.query_one("#search", Input).focus()

    def action_focus_table(self) -> None:
        self.query_one(FindingsTable).focus()

    # -- decisions ---------------------------------------------------------------------------

    def _current(self) -> Finding | None:
        if not self.session.ready:
            return None
        return self.query_one(FindingsTable).current

    def _decide(self, finding: Finding | None, action: Action, row: object = None, advance: bool = True) -> None:
        if finding is None:
            return
        try:
            decided = self.session.decide(finding, action, row)
        except OSError as exc:
            self._journal_failed(exc)
            return
        if not decided:
            self.notify("This is a dataset-level finding: there is no row to decide on.", severity="warning")
            return
        self._after_change({finding.line})
        # With the "open" filter the decided finding left the list and the cursor already rests on the next one.
        if advance and self.session.filter.status != "open":
            self._move_to(self.query_one(FindingsTable).next_index(1, skip_line=finding.line))

    def action_keep(self) -> None:
        self._decide(self._current(), Action.KEEP)

    def action_drop(self) -> None:
        self._decide(self._current(), Action.DROP)

    def action_waive(self) -> None:
        self._decide(self._current(), Action.WAIVE)

    def action_edit(self) -> None:
        finding = self._current()
        if finding is None:
            return
        row = self.session.row_of(finding)
        if row is None:
            self.notify("This finding has no row in the data file to edit.", severity="warning")
            return
        obj = self.session.current_row_object(finding.line)
        text = orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() if obj is not None else (row.text or "")
        line = finding.line

        def check(edited: str):
            return self.session.check_edit(edited, line)

        def done(result: object) -> None:
            if result is not None:
                self._decide(finding, Action.EDIT, result, advance=False)
                self.notify(f"Line {line} edited.", timeout=2)

        self.app.push_screen(EditScreen(text, check, f"Edit line {line} of {self.session.data_name}"), done)

    def _journal_failed(self, exc: OSError) -> None:
        """A journal write failed: the journal already cut the entry back (or says it could not), so nothing changed."""
        message = str(exc) if isinstance(exc, JournalWriteError) else f"Could not write the journal {self.session.journal_name}: {exc}. Nothing was recorded."
        self.notify(message[:1].upper() + message[1:] + ".", title="Not recorded", severity="error", timeout=10)

    def action_undo(self) -> None:
        self._replay_step(self.session.undo, "undo")

    def action_redo(self) -> None:
        self._replay_step(self.session.redo, "redo")

    def _replay_step(self, move, verb: str) -> None:
        try:
            step = move()
        except OSError as exc:
            self._journal_failed(exc)
            return
        if step is None:
            self.notify(f"Nothing to {verb}.", timeout=2)
            return
        if not step:
            self.notify(f"{verb.capitalize()}: a step whose rows changed in the data since it was made (nothing to show).", timeout=3)
            return
        lines = {decision.line for decision in step}
        self._after_change(lines)
        self._move_to(self.query_one(FindingsTable).index_of_line(min(lines)))
        self.notify(f"{verb.capitalize()}: {len(step)} decision{'s' if len(step) != 1 else ''} on line {', '.join(map(str, sorted(lines)))}", timeout=3)

    def action_cluster(self) -> None:
        finding = self._current()
        if finding is None:
            return
        try:
            outcome = self.session.apply_to_cluster(finding)
        except OSError as exc:
            self._journal_failed(exc)
            return
        if outcome is None:
            self.notify("Not a duplicate finding with a cluster (DU001/DU002).", severity="warning")
            return
        kept, dropped = outcome
        self._after_change({kept, *dropped})
        self.notify(f"Kept line {kept}, dropped {len(dropped)} duplicate{'s' if len(dropped) != 1 else ''}.", timeout=3)

    def action_next(self) -> None:
        self._move_to(self.query_one(FindingsTable).next_index(1))

    def action_previous(self) -> None:
        self._move_to(self.query_one(FindingsTable).next_index(-1))

    # -- saving and quitting -----------------------------------------------------------------

    def action_save(self) -> bool:
        if not self.session.ready:
            return False
        try:
            summary = self.session.save()
        except OSError as exc:
            self.notify(f"Could not write {self.session.output}: {exc}", severity="error", timeout=10)
            return False
        extra = f", {summary.unreadable} unparsed rows left out" if summary.unreadable else ""
        self.notify(
            f"Wrote {summary.written:,} rows to {Path(self.session.output).name} ({summary.dropped:,} dropped, {summary.edited:,} edited{extra}).",
            title="Saved",
            timeout=5,
        )
        errors = self.session.unresolved_errors()
        if errors:
            self.notify(f"{errors} error finding{'s' if errors != 1 else ''} remain on rows the cleaned file keeps; drop or edit them.", severity="warning", timeout=6)
        self._refresh_side_panes()
        return True

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(self.BINDINGS))

    def action_quit_review(self) -> None:
        if not self.session.unsaved:
            self.app.exit()
            return

        def answered(save: bool | None) -> None:
            if save is None:
                return
            if save and not self.action_save():
                return
            self.app.exit()

        question = (
            f"Write the cleaned file {Path(self.session.output).name} before quitting?\n"
            f"(Your decisions are kept in {self.session.journal_name} either way.)"
        )
        self.app.push_screen(ConfirmScreen(question, yes="Save and quit", no="Quit"), answered)
