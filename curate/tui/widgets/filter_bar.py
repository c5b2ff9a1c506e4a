"""Filter controls above the findings table: text search, rule, severity, status."""

from __future__ import annotations

from collections.abc import Iterable

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Input, Select

from curate.engine.findings import Severity
from curate.tui.session import STATUS_FILTERS


class FilterBar(Horizontal):
    """Posts `FilterBar.Changed` with the field that changed; the screen applies it."""

    class Changed(Message):
        def __init__(self, field: str, value: object) -> None:
            super().__init__()
            self.field = field
            self.value = value

    def compose(self) -> ComposeResult:
        yield Input(placeholder="/ search", id="search")
        yield Select[str]([], prompt="rule", id="rule-filter")
        yield Select[str]([(s.value, s.value) for s in Severity], prompt="severity", id="severity-filter")
        yield Select[str]([(s, s) for s in STATUS_FILTERS], value="all", allow_blank=False, id="status-filter")

    def set_rules(self, codes: Iterable[tuple[str, int]]) -> None:
        """Offer the rules that have findings, with their counts."""
        self.query_one("#rule-filter", Select).set_options([(f"{code} ({count})", code) for code, count in codes])

    @on(Input.Changed, "#search")
    def _search(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(self.Changed("text", event.value))

    @on(Select.Changed)
    def _select(self, event: Select.Changed) -> None:
        event.stop()
        value = None if event.value is Select.NULL else event.value
        field = {"rule-filter": "code", "severity-filter": "severity", "status-filter": "status"}[event.select.id or ""]
        if field == "severity" and value is not None:
            value = Severity(value)
        self.post_message(self.Changed(field, value if value is not None or field != "status" else "all"))
