"""The summary pane: rows, findings per rule, decisions, and the distributions as bar charts."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from curate.engine.charts import bar_chart
from curate.engine.findings import Severity
from curate.engine.rule import REGISTRY
from curate.engine.runner import LintResult

SEVERITY_STYLES = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "blue"}


class SummaryPane(VerticalScroll):
    """Read-only; the screen calls `show_result` once and `show_decisions` after each change."""

    def compose(self) -> ComposeResult:
        yield Static("linting ...", id="summary-counts")
        yield Static("", id="summary-decisions")
        yield Static("", id="summary-charts")

    def show_result(self, result: LintResult) -> None:
        self.query_one("#summary-counts", Static).update(rules_table(result))
        charts = [bar_chart(title, counts, width=8, limit=8) for title, counts in result.stats.items() if counts]
        self.query_one("#summary-charts", Static).update(Group(*charts) if charts else "")

    def show_decisions(self, counts: dict[str, int]) -> None:
        table = Table(title="Decisions", title_justify="left", show_header=False, box=None, padding=(0, 1))
        table.add_column("what")
        table.add_column("rows", justify="right")
        for label, count in counts.items():
            table.add_row(label, str(count))
        self.query_one("#summary-decisions", Static).update(table)


def rules_table(result: LintResult) -> Table:
    rows_with = len({(f.path, f.line) for f in result.findings if f.line is not None})
    table = Table(title=f"{result.rows:,} rows, {rows_with:,} flagged", title_justify="left", show_header=False, box=None, padding=(0, 1))
    table.add_column("code", no_wrap=True)
    table.add_column("name", no_wrap=True, max_width=22, overflow="ellipsis")
    table.add_column("count", justify="right")
    severities = {f.code: f.severity for f in result.findings}
    for code, count in result.by_code.items():
        name = REGISTRY[code].name if code in REGISTRY else ""
        table.add_row(Text(code, style=SEVERITY_STYLES[severities[code]]), name, f"{count:,}")
    if not result.findings:
        table.add_row("", Text("no findings", style="green"), "")
    for problem in result.errors:
        table.add_row("", Text(problem, style="red"), "")
    return table
