"""The review session: data, findings, filters and decisions, without any Textual.

The app's widgets only render what this object says, and every user action is a
method here, so the behaviour is testable headless and the UI stays thin.
Importing this module must not import Textual (the app imports it, not the reverse).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.decisions import Action, Decision, DecisionJournal, default_clean_path
from curate.fix import FileFix, check_edited_row, left_findings, plan_row_fixes, save_reviewed, schema_row_rules
from curate.text.diff import CompareMode
from curate.engine.findings import Finding, Location, Severity
from curate.engine.runner import LintResult, ProgressCallback, run_lint
from curate.engine.settings import LintPlan
from curate.rules.duplicates import duplicate_groups, is_duplicate_finding
from curate.io import InputError, RawRow, read_rows

SORT_KEYS: dict[str, Callable[[Finding], Any]] = {
    "line": lambda f: (f.line is None, f.line or 0, f.code),
    "severity": lambda f: (-f.severity.rank, f.line or 0),
    "code": lambda f: (f.code, f.line or 0),
    "message": lambda f: (f.message, f.line or 0),
}
STATUS_FILTERS = ("all", "open", "decided")


@dataclass
class FindingFilter:
    code: str | None = None
    severity: Severity | None = None
    text: str = ""
    #: all / open (no decision on the row, finding not waived) / decided.
    status: str = "all"


@dataclass(frozen=True, slots=True)
class Counterpart:
    """The other row a finding points at (a near duplicate, the eval row it leaks)."""

    location: Location
    row: RawRow | None
    mode: CompareMode


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a session needs after the slow start: lint result, rows by line, the replayed journal."""

    result: LintResult
    rows: dict[int, RawRow]
    journal: DecisionJournal


class ReviewSession:
    """Everything `curate review` knows about one data file."""

    def __init__(self, data_path: str, plan: LintPlan, output: str | None = None):
        self.data_path = data_path
        self.plan = plan
        self.output = output or str(default_clean_path(data_path))
        self.result: LintResult | None = None
        self.rows: dict[int, RawRow] = {}
        self.journal: DecisionJournal | None = None
        self.findings: list[Finding] = []
        self.visible: list[Finding] = []
        self.filter = FindingFilter()
        self.sort_key = "line"
        self.sort_reverse = False
        self.changes_since_save = 0
        self._other_files: dict[str, dict[int, RawRow]] = {}
        self._groups: dict[tuple[str, int], list[tuple[str, int]]] | None = None

    # -- loading (runs in a worker thread) ---------------------------------------------------

    def read(self, on_progress: ProgressCallback | None = None) -> Loaded:
        """Lint, read the rows, and replay the journal, without touching the session.
        Slow: the app calls it in a worker thread and hands the result back in a message."""
        rows: dict[int, RawRow] = {}

        def keep_rows(raw_rows: list[RawRow]) -> None:
            rows.update((raw.line, raw) for raw in raw_rows if raw.path == self.data_path)

        result = run_lint(self.plan, on_progress=on_progress, keep_row_hashes=True, on_rows=keep_rows)
        if self.data_path not in result.files:  # unreadable: show no half-read rows
            rows = {}
        hashes = {line: digest for (path, line), digest in result.row_hashes.items() if path == self.data_path}
        return Loaded(result, rows, DecisionJournal.open(self.data_path, hashes))

    def attach(self, loaded: Loaded) -> None:
        """Take what `read` produced (on the UI thread)."""
        self.result, self.rows, self.journal = loaded.result, loaded.rows, loaded.journal
        self.findings = list(loaded.result.findings)
        self.refilter()

    def load(self, on_progress: ProgressCallback | None = None) -> None:
        """`read` then `attach`, for callers without threads (tests, scripts)."""
        self.attach(self.read(on_progress))

    @property
    def ready(self) -> bool:
        return self.result is not None

    @property
    def data_name(self) -> str:
        return Path(self.data_path).name

    @property
    def journal_name(self) -> str:
        return self.journal.path.name if self.journal else Path(self.data_path).name + ".curate-review.jsonl"

    # -- filtering and sorting ---------------------------------------------------------------

    def refilter(self) -> None:
        wanted = self.filter
        text = wanted.text.lower()
        chosen = [
            f
            for f in self.findings
            if (wanted.code is None or f.code == wanted.code)
            and (wanted.severity is None or f.severity is wanted.severity)
            and (not text or text in f.message.lower() or text in f.code.lower() or text in f.name)
            and (wanted.status == "all" or (self.status_of(f) == "") == (wanted.status == "open"))
        ]
        if self.sort_key != "line" or self.sort_reverse:
            chosen.sort(key=SORT_KEYS[self.sort_key], reverse=self.sort_reverse)
        self.visible = chosen

    def set_filter(self, **changes: Any) -> None:
        for key, value in changes.items():
            setattr(self.filter, key, value)
        self.refilter()

    def sort_by(self, key: str) -> None:
        """Sort by `key`; choosing the current key again reverses the order."""
        self.sort_reverse = not self.sort_reverse if key == self.sort_key else False
        self.sort_key = key
        self.refilter()

    # -- reading -----------------------------------------------------------------------------

    def status_of(self, finding: Finding) -> str:
        """dropped / edited / kept / waived / "" (open) for a finding's row."""
        if self.journal is None or finding.line is None or finding.path != self.data_path:
            return ""
        state = self.journal.state.get(finding.line)
        if state is None:
            return ""
        if state.action is None:
            return "waived" if finding.code in state.waived else ""
        return state.label

    def row_of(self, finding: Finding) -> RawRow | None:
        return self.rows.get(finding.line) if finding.path == self.data_path and finding.line is not None else None

    def current_row_object(self, line: int) -> Any:
        """The row as the reviewer last left it (an edit, else the original)."""
        state = self.journal.state.get(line) if self.journal else None
        if state is not None and state.has_edit:
            return state.edited
        row = self.rows.get(line)
        return row.obj if row is not None else None

    def findings_on(self, line: int | None) -> list[Finding]:
        return [f for f in self.findings if f.line == line and f.path == self.data_path] if line is not None else []

    def counterpart(self, finding: Finding) -> Counterpart | None:
        """The related row to show side by side: from this file (duplicates, conflicts: show
        differences) or another file such as the eval set (leakage: show the overlap)."""
        location = next((loc for loc in finding.related if loc.line is not None), None)
        if location is None:
            return None
        if location.path == finding.path:
            rows = self.rows if location.path == self.data_path else self._rows_of(location.path)
            return Counterpart(location, rows.get(location.line), CompareMode.DIFF)
        return Counterpart(location, self._rows_of(location.path).get(location.line), CompareMode.OVERLAP)

    def _rows_of(self, path: str) -> dict[int, RawRow]:
        if path not in self._other_files:
            try:
                self._other_files[path] = {row.line: row for row in read_rows(path)}
            except InputError:
                self._other_files[path] = {}
        return self._other_files[path]

    # -- deciding ----------------------------------------------------------------------------

    def _decision(self, action: Action, line: int, **kwargs: Any) -> Decision | None:
        assert self.result is not None
        digest = self.result.row_hashes.get((self.data_path, line))
        return None if digest is None else Decision(action, line, digest, **kwargs)

    def decide(self, finding: Finding, action: Action, row: Any = None) -> bool:
        """Record keep/drop/edit/waive for the finding's row; False when it names no row here."""
        if finding.line is None or finding.path != self.data_path or self.journal is None:
            return False
        decision = self._decision(action, finding.line, row=row, code=finding.code if action is Action.WAIVE else None)
        if decision is None:
            return False
        self.journal.record([decision])
        self.changes_since_save += 1
        return True

    def cluster_of(self, finding: Finding) -> list[int]:
        """Lines of this file in the duplicate group of the finding's row (empty if none)."""
        if self._groups is None:
            self._groups = {key: group for group in duplicate_groups(self.findings) for key in group}
        group = self._groups.get((finding.path, finding.line), []) if finding.line is not None else []
        return [line for path, line in group if path == self.data_path]

    def apply_to_cluster(self, finding: Finding) -> tuple[int, list[int]] | None:
        """Keep the first row of the finding's duplicate group and drop the rest, as one undo step."""
        if not is_duplicate_finding(finding) or self.journal is None:
            return None
        lines = self.cluster_of(finding)
        if len(lines) < 2:
            return None
        decisions = [self._decision(Action.KEEP, lines[0])] + [self._decision(Action.DROP, line) for line in lines[1:]]
        self.journal.record([d for d in decisions if d is not None])
        self.changes_since_save += 1
        return lines[0], lines[1:]

    def undo(self) -> list[Decision] | None:
        step = self.journal.undo() if self.journal else None
        self.changes_since_save += step is not None
        return step

    def redo(self) -> list[Decision] | None:
        step = self.journal.redo() if self.journal else None
        self.changes_since_save += step is not None
        return step

    def check_edit(self, text: str, line: int) -> tuple[Any, list[str]]:
        return check_edited_row(text, self.data_path, line, schema_row_rules(self.plan.rules))

    # -- saving ------------------------------------------------------------------------------

    def save(self) -> FileFix:
        """Write the cleaned file `curate fix` would write from this lint and journal (atomic;
        the input is never touched)."""
        assert self.journal is not None and self.result is not None
        rows = sorted(self.rows.values(), key=lambda row: row.line)
        summary = save_reviewed(self.result, self.data_path, rows, self.journal.state, self.output)
        self.changes_since_save = 0
        return summary

    def unresolved_errors(self) -> int:
        """Error findings the cleaned file still carries: neither its rule's fix nor the reviewer settled them."""
        if self.result is None or self.journal is None:
            return 0
        states = {self.data_path: self.journal.state}
        left = left_findings(self.result, plan_row_fixes(self.result, states), states)
        return sum(1 for f in left if f.severity is Severity.ERROR and f.line is not None)

    @property
    def unsaved(self) -> bool:
        return self.changes_since_save > 0

    def decision_counts(self) -> dict[str, int]:
        return self.journal.state.counts() if self.journal else {}

    def counts_by_code(self) -> Counter[str]:
        return Counter(f.code for f in self.findings)

    def close(self) -> None:
        if self.journal is not None:
            self.journal.close()
