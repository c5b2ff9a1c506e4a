"""Where two texts agree and differ, word by word, with character offsets.

Review shows near-duplicates and eval overlaps side by side; it highlights the
spans this module returns. Words are compared after normalization (case,
NFKC), so a case change is not a difference, but offsets point into the
original strings, so the highlight lands on what the user wrote.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

_TOKEN_RE = re.compile(r"\w+")

SpanKind = Literal["equal", "replace", "delete", "insert"]


@dataclass(frozen=True, slots=True)
class WordSpan:
    """One aligned stretch: `kind` says how `first[a_start:a_end]` relates to `second[b_start:b_end]`.

    `delete` spans are empty in `second`, `insert` spans are empty in `first`."""

    kind: SpanKind
    a_start: int
    a_end: int
    b_start: int
    b_end: int


def _tokens(text: str) -> tuple[list[str], list[tuple[int, int]]]:
    matches = list(_TOKEN_RE.finditer(text))
    return [unicodedata.normalize("NFKC", m.group()).lower() for m in matches], [m.span() for m in matches]


def word_spans(first: str, second: str) -> list[WordSpan]:
    """Align two texts word by word; returns spans covering every word of both, in order.

    Character offsets run from the first word of a span to the end of its last
    word (the punctuation between spans is not part of any span)."""
    a_words, a_offsets = _tokens(first)
    b_words, b_offsets = _tokens(second)
    matcher = difflib.SequenceMatcher(None, a_words, b_words, autojunk=False)
    spans = []
    for kind, a_lo, a_hi, b_lo, b_hi in matcher.get_opcodes():
        spans.append(WordSpan(kind, *_char_range(a_offsets, a_lo, a_hi), *_char_range(b_offsets, b_lo, b_hi)))
    return spans


def _char_range(offsets: list[tuple[int, int]], lo: int, hi: int) -> tuple[int, int]:
    if lo == hi:  # an empty side: anchor at the start of the next word (or the end)
        anchor = offsets[lo][0] if lo < len(offsets) else (offsets[-1][1] if offsets else 0)
        return anchor, anchor
    return offsets[lo][0], offsets[hi - 1][1]


def longest_shared_span(first: str, second: str) -> tuple[int, int, int, int] | None:
    """Character ranges (a_start, a_end, b_start, b_end) of the longest run of shared words, or None."""
    best = max((span for span in word_spans(first, second) if span.kind == "equal"), key=lambda s: s.a_end - s.a_start, default=None)
    return None if best is None else (best.a_start, best.a_end, best.b_start, best.b_end)


def shorten(text: str, limit: int = 80) -> str:
    """One line of at most `limit` characters, cut at a word boundary with an ellipsis."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1].rsplit(" ", 1)[0]
    return (cut or flat[: limit - 1]) + "…"
