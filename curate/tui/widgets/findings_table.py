"""The findings table: a DataTable fed page by page as the cursor or scrollbar nears the end.

A 100k-finding dataset must open instantly, so the table never holds more rows
than the reviewer has scrolled past plus one page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rich.text import Text
from textual import on
from textual.message import Message
from textual.widgets import DataTable

from curate.engine.findings import Finding, Severity

PAGE_SIZE = 200
SEVERITY_STYLES = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "blue"}
STATUS_STYLES = {"dropped": "red", "edited": "magenta", "kept": "green", "waived": "dim"}
#: column key -> (label, session sort key)
COLUMNS = {"line": ("Line", "line"), "severity": ("Sev", "severity"), "code": ("Rule", "code"), "status": ("Status", "line"), "message": ("Message", "message")}
#: Fixed widths, so a column never resizes when a later page or a decision arrives.
WIDTHS = {"line": 7, "severity": 3, "code": 6, "status": 7, "message": None}


class FindingsTable(DataTable):
    """Findings, one per row; posts `FindingsTable.Highlighted` and `FindingsTable.SortRequested`."""

    class Highlighted(Message):
        """The cursor moved to a finding (None when the table is empty)."""

        def __init__(self, finding: Finding | None) -> None:
            super().__init__()
            self.finding = finding

    class SortRequested(Message):
        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self._findings: Sequence[Finding] = ()
        self._status_of: Callable[[Finding], str] = lambda finding: ""
        self._loaded = 0

    def on_mount(self) -> None:
        for key, (label, _) in COLUMNS.items():
            self.add_column(label, key=key, width=WIDTHS[key])

    # -- feeding -----------------------------------------------------------------------------

    def show(self, findings: Sequence[Finding], status_of: Callable[[Finding], str], keep_cursor: bool = False) -> None:
        """Replace the contents with `findings` (only the first page is built)."""
        row = self.cursor_row if keep_cursor else 0
        self._findings, self._status_of = findings, status_of
        self.clear()
        self._loaded = 0
        self.load_more(max(PAGE_SIZE, row + 1))
        if findings:
            self.move_cursor(row=min(row, len(findings) - 1), animate=False)
        self._update_subtitle()
        self.post_message(self.Highlighted(self.current))

    def load_more(self, count: int = PAGE_SIZE) -> None:
        end = min(self._loaded + count, len(self._findings))
        if end <= self._loaded:
            return
        self.add_rows((self._cells(finding) for finding in self._findings[self._loaded : end]))
        self._loaded = end
        self._update_subtitle()

    def _cells(self, finding: Finding) -> tuple:
        status = self._status_of(finding)
        return (
            Text(str(finding.line) if finding.line is not None else "-", justify="right"),
            Text(finding.severity.letter, style=SEVERITY_STYLES[finding.severity]),
            Text(finding.code, style=SEVERITY_STYLES[finding.severity]),
            Text(status, style=STATUS_STYLES.get(status, "")),
            Text(finding.message, no_wrap=True, overflow="ellipsis"),
        )

    def _update_subtitle(self) -> None:
        total = len(self._findings)
        shown = f"{self._loaded:,} of {total:,} loaded" if self._loaded < total else f"{total:,} findings"
        self.border_subtitle = shown

    def refresh_status(self, lines: set[int]) -> None:
        """Re-render the status cells of loaded rows on `lines` (after a decision or undo)."""
        for index in range(self._loaded):
            finding = self._findings[index]
            if finding.line in lines:
                status = self._status_of(finding)
                self.update_cell_at((index, 3), Text(status, style=STATUS_STYLES.get(status, "")))

    # -- reading -----------------------------------------------------------------------------

    @property
    def current(self) -> Finding | None:
        if not self._findings or self.cursor_row >= self._loaded:
            return None
        return self._findings[self.cursor_row]

    @property
    def loaded(self) -> int:
        return self._loaded

    def index_of_line(self, line: int) -> int | None:
        """Position of the first finding on `line`, loading pages until it is reached."""
        for index, finding in enumerate(self._findings):
            if finding.line == line:
                if index >= self._loaded:
                    self.load_more(index + 1 - self._loaded + PAGE_SIZE)
                return index
        return None

    def next_index(self, step: int, skip_line: int | None = None) -> int | None:
        """The position `step` rows away, skipping rows on `skip_line` (auto-advance after a decision)."""
        index = self.cursor_row + step
        while 0 <= index < len(self._findings):
            if index >= self._loaded:
                self.load_more()
            if skip_line is None or self._findings[index].line != skip_line:
                return index
            index += step
        return None

    # -- events ------------------------------------------------------------------------------

    @on(DataTable.RowHighlighted)
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.cursor_row >= self._loaded - PAGE_SIZE // 4:
            self.load_more()
        self.post_message(self.Highlighted(self.current))

    @on(DataTable.HeaderSelected)
    def _header(self, event: DataTable.HeaderSelected) -> None:
        event.stop()
        self.post_message(self.SortRequested(COLUMNS[str(event.column_key.value)][1]))

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if new_value >= self.max_scroll_y - 2 and self._loaded < len(self._findings):
            self.load_more()
