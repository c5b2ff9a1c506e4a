"""Eval rows as prompts and references.

An eval item is one row of the eval file: the turns before its last assistant turn are the
prompt, that turn's text is the reference. Regression rows may carry no reference and an
`expect` object of checks instead (`{"json": true}`, `{"answer": "42"}`, `{"format": "prose"}`,
`{"label": "billing"}`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.formats import normalize
from curate.io import InputError, read_rows

#: Checks a regression row may ask for in `expect`.
EXPECT_KEYS = ("json", "answer", "format", "label", "contains")


class EvalError(Exception):
    """The evaluation cannot go on; one line naming the file (and line) and what to do."""


@dataclass
class EvalItem:
    """One eval prompt: where it came from, its turns, the reference answer, optional checks."""

    path: str
    line: int
    messages: list[dict[str, str]]
    reference: str | None
    expect: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    @property
    def user_text(self) -> str:
        return "\n".join(m["content"] for m in self.messages if m["role"] == "user")


@dataclass
class ItemSet:
    items: list[EvalItem]
    #: Rows that could not be used (no readable conversation, no prompt, no reference or checks).
    skipped: int = 0


def item_of(path: str, line: int, obj: Any, *, need_reference: bool) -> EvalItem | None:
    conversation = normalize(obj) if isinstance(obj, dict) else None
    if conversation is None or not all(m.valid for m in conversation.messages):
        return None
    last = conversation.last_assistant_index
    prompt = conversation.messages if last is None else conversation.messages[:last]
    messages = [{"role": m.role, "content": m.content} for m in prompt]
    if not any(m["role"] == "user" for m in messages):
        return None
    expect = obj.get("expect") if isinstance(obj.get("expect"), dict) else {}
    expect = {key: value for key, value in expect.items() if key in EXPECT_KEYS}
    reference = conversation.messages[last].content if last is not None else None
    if reference is None and (need_reference or not expect):
        return None
    return EvalItem(path, line, messages, reference, expect)


def read_items(path: str | Path, *, need_reference: bool = True, lines: set[int] | None = None) -> ItemSet:
    """The usable eval items of a file (only `lines` when given); raises EvalError for a file
    that cannot be read at all."""
    try:
        rows = read_rows(path)
    except InputError as exc:
        raise EvalError(str(exc)) from None
    items, skipped = [], 0
    for raw in rows:
        if lines is not None and raw.line not in lines:
            continue
        item = item_of(str(path), raw.line, raw.obj, need_reference=need_reference) if raw.ok else None
        if item is None:
            skipped += 1
        else:
            items.append(item)
    return ItemSet(items, skipped)


def limit_items(items: list[EvalItem], limit: int | None) -> list[EvalItem]:
    """The first `limit` items (file order, so two evals of one file compare the same prompts)."""
    return items if not limit else items[:limit]
