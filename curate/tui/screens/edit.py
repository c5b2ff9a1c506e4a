"""Edit one row's JSON; refuses to save invalid JSON or a row that breaks the schema rules."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static, TextArea

#: text -> (row object, problems); the row is saved only without problems.
RowCheck = Callable[[str], tuple[Any, list[str]]]


class EditScreen(ModalScreen[Any]):
    """Returns the edited row object, or None when cancelled."""

    # Priority: the TextArea would otherwise take escape (it leaves an indenting editor).
    BINDINGS = [Binding("ctrl+s", "save", "Save edit", priority=True), Binding("escape", "cancel", "Cancel", priority=True)]

    def __init__(self, text: str, check: RowCheck, title: str) -> None:
        super().__init__()
        self.text, self.check, self.title_text = text, check, title

    def compose(self) -> ComposeResult:
        with Vertical(id="editor"):
            yield Static(Text(self.title_text, style="bold"), id="edit-title")
            area = TextArea(self.text, id="row-json", show_line_numbers=True, tab_behavior="indent")
            if "json" in area.available_languages:
                area.language = "json"
            yield area
            yield Static("ctrl+s saves, escape cancels", id="edit-problems")
            with Horizontal(id="edit-buttons"):
                yield Button("Save", variant="primary", id="save")
                yield Button("Cancel", id="cancel")

    def on_mount(self) -> None:
        self.query_one(TextArea).focus()

    @on(Button.Pressed, "#save")
    def action_save(self) -> None:
        obj, problems = self.check(self.query_one(TextArea).text)
        if problems:
            self.query_one("#edit-problems", Static).update(Text("Not saved: " + "\n".join(problems), style="bold red"))
            self.add_class("invalid")
            return
        self.dismiss(obj)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)
