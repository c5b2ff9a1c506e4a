"""Eval sets as lists of texts, for leakage checks.

An eval file may hold rows in any supported chat format (the prompt is the
user turns, the answer the final assistant turn) or plain records such as
`{"question": ..., "answer": ...}` or `{"text": ...}`, of which every string
field (nested ones included) is a text.

Texts are marked as answers (a chat row's final turn; fields such as
`answer`, `output`, `solution`) or not. Leakage is matched on the rest: the
question identifies an eval item, while reference answers are often phrased
like many legitimate training replies (templated support answers, "The
answer is ...").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from curate.engine.findings import Location
from curate.formats import detect_format, has_roles, normalize
from curate.io import InputError, iter_rows


class EvalSetError(Exception):
    """An eval file cannot be used; the message is one line naming the file (and line)."""


@dataclass(frozen=True, slots=True)
class EvalText:
    path: str
    line: int
    #: Where the text came from in the eval row: `prompt`, `answer`, or a field path such as `question`.
    field: str
    text: str
    answer: bool = False

    @property
    def location(self) -> Location:
        return Location(self.path, self.line)

    def describe(self) -> str:
        return f"{self.path}:{self.line} ({self.field})"


def load_eval_texts(paths: Iterable[str]) -> list[EvalText]:
    """Every non-empty text of every eval file, in file order."""
    texts: list[EvalText] = []
    for path in paths:
        try:
            for raw in iter_rows(path):
                if not raw.ok:
                    problem = raw.error or "row too large"
                    raise EvalSetError(f"{path}:{raw.line}: {problem}; fix the eval file (leakage rules need every eval row)")
                texts.extend(
                    EvalText(path, raw.line, name, text, is_answer_field(name)) for name, text in row_texts(raw.obj) if text.strip()
                )
        except InputError as exc:
            raise EvalSetError(f"eval file {exc}") from None
    return texts


def row_texts(obj: Any) -> list[tuple[str, str]]:
    """(field, text) pairs of one eval row."""
    fmt = detect_format(obj)
    conversation = normalize(obj, fmt) if fmt else None
    if conversation is not None and conversation.messages and has_roles(conversation):
        prompt = "\n".join(m.content for m in conversation.messages if m.role == "user" and m.valid)
        pairs = [("prompt", prompt)]
        answer = conversation.final_answer
        if answer:
            pairs.append(("answer", answer))
        return pairs
    return list(string_fields(obj, ""))


#: Field names (the last key of a field path) that hold reference answers rather than eval inputs.
ANSWER_FIELDS = frozenset({"answer", "answers", "output", "outputs", "completion", "response", "solution", "target",
                           "targets", "label", "labels", "final_answer", "chosen", "rejected", "reference", "explanation"})


def is_answer_field(field: str) -> bool:
    last = field.rsplit(".", 1)[-1].split("[", 1)[0].lower()
    return last in ANSWER_FIELDS


def string_fields(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where or "text", value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from string_fields(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from string_fields(item, f"{where}[{index}]")
