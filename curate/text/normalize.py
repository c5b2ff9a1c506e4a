"""Text normalization shared by the duplicate and leakage rules, review and fix.

Two levels, because two questions are asked of text:

- `normalize_text`: is this the *same* text? Unicode NFKC (full-width letters,
  ligatures), case folding and whitespace collapsing; punctuation is kept, so
  `Hi ,` and `Hi,` differ (a near-duplicate, not an exact one).
- `words`: what does the text *say*? The normalized text cut into word tokens
  (`\\w+`, Unicode-aware): punctuation and spacing no longer matter. Shingles,
  n-grams and prompt keys are built from these words.

Each function has a polars expression twin (`*_expr`) so whole batches are
normalized in one vectorized pass; both must agree (tests check they do).
"""

from __future__ import annotations

import re
import unicodedata
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import polars as pl

WORD_PATTERN = r"\w+"
#: A number as written in answers: 42, 3.5, 1,200 (thousands separators kept together).
NUMBER_PATTERN = r"\d+(?:[.,]\d+)*"

_NUMBER_RE = re.compile(NUMBER_PATTERN)
_SPACE_RE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFKC, lower case, runs of whitespace collapsed to one space, ends stripped."""
    return _SPACE_RE.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def words(text: str) -> list[str]:
    """The word tokens of `text` after normalization (punctuation dropped).

    Runs the polars expression on one value: Python's `\\w` and Rust's disagree on
    combining marks (Devanagari vowel signs, a dotted `i̇`), and a scalar caller
    must get exactly the words the vectorized pass hashed."""
    import polars as pl

    return pl.select(words_expr(pl.lit(text, dtype=pl.String))).item().to_list()


def numbers(text: str) -> list[str]:
    """Every number written in `text`, in order (`1,200` and `3.5` stay whole)."""
    return _NUMBER_RE.findall(unicodedata.normalize("NFKC", text))


def words_expr(column: pl.Expr) -> pl.Expr:
    """Polars twin of `words`: a list of word tokens per row."""
    return column.str.normalize("NFKC").str.to_lowercase().str.extract_all(WORD_PATTERN)


