"""A batch of rows as every rule sees it: raw rows, normalized conversations, and a
lazily built polars frame of all messages for vectorized checks."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from curate.formats import PREFERENCE_FORMATS, ROLELESS_FORMATS, Conversation, Message, RowFormat, detect_format, field_texts, has_roles, normalize, rejected_side
from curate.io import RawRow

if TYPE_CHECKING:
    import polars as pl


@dataclass(slots=True)
class Row:
    """A row with its parse result and, when its shape is known, its conversation."""

    raw: RawRow
    format: RowFormat | None
    conversation: Conversation | None
    #: "rejected" for the rejected side of a preference row (row rules check both sides).
    side: str = ""

    @property
    def path(self) -> str:
        return self.raw.path

    @property
    def line(self) -> int:
        return self.raw.line

    @property
    def obj(self) -> Any:
        return self.raw.obj

    @classmethod
    def from_raw(cls, raw: RawRow) -> Row:
        if raw.error is not None or raw.oversized:  # not `raw.ok`: a property call per row
            return cls(raw, None, None)
        obj = raw.obj
        fmt = detect_format(obj)
        return cls(raw, fmt, normalize(obj, fmt) if fmt else None)


class Batch:
    """Rows read together; rules may loop over `rows` or query `messages` vectorized."""

    def __init__(self, rows: list[Row]):
        self.rows = rows

    @classmethod
    def from_raw(cls, raw_rows: list[RawRow]) -> Batch:
        from_raw = Row.from_raw
        return cls([from_raw(raw) for raw in raw_rows])

    def __len__(self) -> int:
        return len(self.rows)

    def rejected_sides(self) -> Batch | None:
        """The rejected sides of the batch's preference rows, as a batch for the row rules, or None."""
        if PREFERENCE_FORMATS.isdisjoint(self.format_counts):
            return None
        sides = [
            Row(row.raw, row.format, rejected_side(row.raw.obj, row.format), "rejected")
            for row in self.rows
            if row.format in PREFERENCE_FORMATS and row.conversation is not None
        ]
        return Batch(sides) if sides else None

    def without_preference_rows(self) -> tuple[Batch, int]:
        """(the batch without preference rows, how many were left out)."""
        if PREFERENCE_FORMATS.isdisjoint(self.format_counts):
            return self, 0
        kept = [row for row in self.rows if row.format not in PREFERENCE_FORMATS]
        return (self, 0) if len(kept) == len(self.rows) else (Batch(kept), len(self.rows) - len(kept))

    def with_roles(self) -> tuple[Batch, int]:
        """(the batch without rows whose turns have no roles, how many were left out)."""
        if ROLELESS_FORMATS.isdisjoint(self.format_counts):
            return self, 0
        kept = [row for row in self.rows if row.conversation is None or has_roles(row.conversation)]
        return (self, 0) if len(kept) == len(self.rows) else (Batch(kept), len(self.rows) - len(kept))

    @cached_property
    def row_formats(self) -> list[RowFormat | None]:
        """Each row's format (None: unparsed, or of no known shape)."""
        return [row.format for row in self.rows]

    @cached_property
    def format_counts(self) -> dict[RowFormat | None, int]:
        """How many rows have each format, formats in the order they first appear: each format's
        rows counted by `list.count` (a batch mostly has one format), ~10x cheaper than a
        counter's update per row."""
        formats = self.row_formats
        return {fmt: formats.count(fmt) for fmt in dict.fromkeys(formats)}

    @cached_property
    def conversation_count(self) -> int:
        """How many rows have a conversation (counted once for every rule that asks)."""
        return len(self.rows) - [row.conversation for row in self.rows].count(None)

    @property
    def conversations(self) -> list[tuple[Row, Conversation]]:
        return [(row, row.conversation) for row in self.rows if row.conversation is not None]

    @cached_property
    def messages(self) -> pl.DataFrame:
        """One row per valid message: `row` (position in batch), `msg` (position in
        conversation), `role`, `content`, and what else the chat template renders of it:
        `calls` (its tool calls, canonical: `name({"arg":value})` a line per call, see
        `canonical_tool_calls`) and `fields` (name, reasoning), both "" when absent.
        Built once per batch and shared by rules."""
        import polars as pl

        row_ids: list[int] = []
        msg_ids: list[int] = []
        roles: list[str] = []
        contents: list[str] = []
        fielded: list[tuple[int, Message]] = []  # (frame position, message) of messages with template fields
        for position, row in enumerate(self.rows):
            conversation = row.conversation
            if conversation is None:
                continue
            if conversation.plain:  # every turn valid, no fields: the common case, a list at a time
                turn_roles, turn_contents = conversation.plain_turns()
                msg_ids += range(len(turn_roles))
                row_ids += [position] * len(turn_roles)
                roles += turn_roles
                contents += turn_contents
                continue
            for msg_position, message in enumerate(conversation.messages):
                if message.valid:
                    if message.fields:
                        fielded.append((len(roles), message))
                    row_ids.append(position)
                    msg_ids.append(msg_position)
                    roles.append(message.role)
                    contents.append(message.content)
        calls = [""] * len(roles)
        fields = [""] * len(roles)
        for index, message in fielded:
            calls[index], fields[index] = field_texts(message.fields)
        return pl.DataFrame(
            {"row": row_ids, "msg": msg_ids, "role": roles, "content": contents, "calls": calls, "fields": fields},
            schema={"row": pl.Int32, "msg": pl.Int32, "role": pl.String, "content": pl.String, "calls": pl.String, "fields": pl.String},
        )
