"""Where two conversations agree and differ, word by word, as character spans to highlight.

Side-by-side review needs to show *where* two rows differ (near duplicates,
conflicting answers) or *what* they share (a training row that leaks an eval
row). Both come from one word alignment (difflib over case-folded words with
their edge punctuation dropped, across all turns), returned as (start, end)
spans per message, pointing into the original strings, so a UI can style them.
Headless: no Textual, no rich.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from enum import Enum

_WORD = re.compile(r"\S+")
_PUNCT = re.compile(r"^\W+|\W+$")

Span = tuple[int, int]


class CompareMode(str, Enum):
    #: Highlight words that differ (near duplicates, conflicting answers).
    DIFF = "diff"
    #: Highlight runs of words both sides share (leakage).
    OVERLAP = "overlap"


@dataclass(frozen=True, slots=True)
class _Word:
    message: int
    start: int
    end: int


@dataclass
class SideSpans:
    """Spans to highlight on one side: `spans[i]` belongs to message i."""

    spans: list[list[Span]]

    @property
    def count(self) -> int:
        return sum(len(spans) for spans in self.spans)


def _words(texts: list[str]) -> tuple[list[_Word], list[str]]:
    words, keys = [], []
    for index, text in enumerate(texts):
        for match in _WORD.finditer(text):
            words.append(_Word(index, match.start(), match.end()))
            keys.append(_PUNCT.sub("", match.group().lower()) or match.group())
    return words, keys


def _spans(words: list[_Word], chosen: list[bool], messages: int) -> SideSpans:
    """Merge chosen words into spans per message (neighbouring words join across spaces)."""
    spans: list[list[Span]] = [[] for _ in range(messages)]
    for word, keep in zip(words, chosen):
        if not keep:
            continue
        own = spans[word.message]
        if own and word.start - own[-1][1] <= 1:  # next word after one space: one span
            own[-1] = (own[-1][0], word.end)
        else:
            own.append((word.start, word.end))
    return SideSpans(spans)


def compare_messages(left: list[str], right: list[str], mode: CompareMode = CompareMode.DIFF, min_run: int = 3) -> tuple[SideSpans, SideSpans]:
    """Spans to highlight in each side's messages.

    DIFF marks the words outside the longest common word alignment; OVERLAP marks
    shared runs of at least `min_run` words (so a common "the" is not a leak).
    """
    left_words, left_keys = _words(left)
    right_words, right_keys = _words(right)
    matcher = difflib.SequenceMatcher(None, left_keys, right_keys, autojunk=False)
    in_left = [False] * len(left_words)
    in_right = [False] * len(right_words)
    for block in matcher.get_matching_blocks():
        if block.size and (mode is CompareMode.DIFF or block.size >= min_run):
            in_left[block.a : block.a + block.size] = [True] * block.size
            in_right[block.b : block.b + block.size] = [True] * block.size
    if mode is CompareMode.DIFF:
        in_left = [not shared for shared in in_left]
        in_right = [not shared for shared in in_right]
    return _spans(left_words, in_left, len(left)), _spans(right_words, in_right, len(right))
