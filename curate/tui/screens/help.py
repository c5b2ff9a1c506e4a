"""Every key binding of the review screen, with what it does."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

EXTRA_HELP = (
    ("click a column header", "sort by that column (again: reverse)"),
    ("tab / shift+tab", "move between the search box, the filters and the table"),
    ("ctrl+s / escape", "in the editor: save the edit / cancel"),
)


def key_label(key: str) -> str:
    return " / ".join({"question_mark": "?", "slash": "/"}.get(part.strip(), part.strip()) for part in key.split(","))


class HelpScreen(ModalScreen[None]):
    """Built from the bindings it is given, so it can never drift from the real keys."""

    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, bindings: list[Binding]) -> None:
        super().__init__()
        self.bindings = bindings

    @property
    def rows(self) -> list[tuple[str, str]]:
        """(keys, what they do) for every binding, then the mouse and editor keys."""
        return [(key_label(b.key), b.tooltip or b.description) for b in self.bindings] + list(EXTRA_HELP)

    def compose(self) -> ComposeResult:
        table = Table(title="curate review: keys", title_justify="left", box=None, padding=(0, 2), show_header=False)
        table.add_column("key", style="bold cyan", no_wrap=True)
        table.add_column("action")
        for key, text in self.rows:
            table.add_row(key, text)
        with VerticalScroll(id="help"):
            yield Static(table)
            yield Static("Decisions are saved to the journal as you make them; s writes the cleaned file. Press escape to close.", id="help-footer")

    def action_close(self) -> None:
        self.dismiss(None)
