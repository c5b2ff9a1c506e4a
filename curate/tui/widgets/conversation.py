"""A conversation rendered as chat turns, one bordered block per message, styled by role."""

from __future__ import annotations

from typing import Any

import orjson
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from curate.text.diff import Span
from curate.formats import Message, normalize
from curate.io import RawRow

KNOWN_ROLES = ("system", "user", "assistant", "tool")


def messages_of(obj: Any) -> list[Message] | None:
    """The row's turns, or None when the row has no known shape."""
    conversation = normalize(obj) if isinstance(obj, dict) else None
    return conversation.messages if conversation is not None else None


def turn_widget(message: Message, spans: list[Span] = (), highlight: str = "") -> Static:
    text = Text(message.content or "(empty)", style="" if message.content else "dim italic")
    for start, end in spans:
        text.stylize(highlight, start, end)
    role = message.role if message.role in KNOWN_ROLES else "other"
    widget = Static(text, classes=f"turn role-{role}", markup=False)
    widget.border_title = f"{message.role} · {message.source}" if message.source else message.role
    return widget


def raw_widget(text: str, note: str) -> Static:
    widget = Static(Text(text), classes="turn raw", markup=False)
    widget.border_title = note
    return widget


class ConversationView(VerticalScroll):
    """One row as chat turns; `show` replaces the contents."""

    def compose(self) -> ComposeResult:
        yield Static("", classes="placeholder")

    def show(self, obj: Any, raw: RawRow | None = None, spans: list[list[Span]] | None = None, highlight: str = "",
             titles: list[str] | None = None) -> None:
        """Show a row; existing turn blocks are updated in place (a remount relayouts the screen).
        `titles` replaces the turns' border titles (the eval view names each candidate)."""
        fresh = self.widgets_for(obj, raw, spans, highlight)
        for widget, title in zip(fresh, titles or []):
            widget.border_title = title
        current = list(self.query_children(Static))
        for widget, new in zip(current, fresh):
            widget.update(new.content)
            widget.set_classes(new.classes)
            widget.border_title = new.border_title
        if len(current) > len(fresh):
            for widget in current[len(fresh) :]:
                widget.remove()
        elif len(fresh) > len(current):
            self.mount_all(fresh[len(current) :])
        self.scroll_home(animate=False)

    @staticmethod
    def widgets_for(obj: Any, raw: RawRow | None, spans: list[list[Span]] | None, highlight: str) -> list[Static]:
        if raw is not None and not raw.ok and obj is None:
            note = raw.error or "row too large to parse"
            return [raw_widget(raw.text or "", f"unparsed: {note}")]
        messages = messages_of(obj)
        if messages is None:
            shown = orjson.dumps(obj, option=orjson.OPT_INDENT_2).decode() if obj is not None else "(no row)"
            return [raw_widget(shown, "no known row format")]
        if not messages:
            return [raw_widget("", "no messages")]
        spans = spans or [[] for _ in messages]
        return [turn_widget(message, spans[index] if index < len(spans) else [], highlight) for index, message in enumerate(messages)]
