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
import threading
import unicodedata
from typing import TYPE_CHECKING

import numpy as np

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




def contains(texts: pl.Series, pattern: str, ascii_pattern: str) -> pl.Series:
    """`texts.str.contains(pattern)` (False for null), with `ascii_pattern` run on the ASCII texts
    instead: the same regex for ASCII text written with ASCII classes (`[0-9]` for `\\d`), which the
    regex engine scans ~10x faster than Unicode ones. `pattern` runs only on the other texts."""
    import polars as pl

    text = pl.col(texts.name)
    ascii = (text.str.len_bytes() == text.str.len_chars()).fill_null(False)
    # One query for the ASCII search and the texts left (each polars call costs ~0.1 ms, a lot per batch).
    searched = texts.to_frame().select(found=text.str.contains(ascii_pattern).fill_null(False) & ascii, other=text.is_not_null() & ~ascii)
    found = searched["found"]
    others = searched["other"].arg_true()
    if len(others):
        found.scatter(others, texts.gather(others).str.contains(pattern))
    return found.alias(texts.name)


def flat_words(texts: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """The words (`WORD_PATTERN` matches) of every text, flat in text order, and the number of words
    of each text: `texts.str.extract_all(WORD_PATTERN)` exploded, without building the lists
    (`words_expr` is NFKC and lower case, then this).

    ASCII texts are cut in numpy (on ASCII text `\\w` is `[0-9A-Za-z_]`), which is
    ~10x cheaper than a regex match per word; texts with other characters go through the regex."""
    import polars as pl

    texts = texts.fill_null("")
    ascii = (texts.str.len_bytes() == texts.str.len_chars()).to_numpy()
    if ascii.all():
        return ascii_words(texts)
    lists = texts.filter(pl.Series(~ascii)).str.extract_all(WORD_PATTERN)
    other_words, other_counts = lists.explode().drop_nulls(), lists.list.len().to_numpy().astype(np.int64)
    if not ascii.any():
        return other_words, other_counts
    plain_words, plain_counts = ascii_words(texts.filter(pl.Series(ascii)))
    counts = np.empty(len(texts), dtype=np.int64)
    counts[ascii], counts[~ascii] = plain_counts, other_counts
    # Where each text's words are in [plain words, other words], and where they go.
    source = np.empty(len(texts), dtype=np.int64)
    source[ascii] = np.cumsum(plain_counts) - plain_counts
    source[~ascii] = len(plain_words) + np.cumsum(other_counts) - other_counts
    order = np.repeat(source - (np.cumsum(counts) - counts), counts) + np.arange(int(counts.sum()), dtype=np.int64)
    return pl.concat([plain_words, other_words]).gather(order), counts


#: `ascii_words` cuts this many bytes of text at a time, so its temporary arrays stay small.
WORDS_CHUNK_BYTES = 1 << 20
#: About how many bytes of chat text make a word (and a shingle): the work `ascii_words` counts
#: towards `curate.text.shingles.COMPILED_MIN_SHINGLES` (the bench rows have 6.1).
BYTES_PER_WORD = 6


def ascii_words(texts: pl.Series) -> tuple[pl.Series, np.ndarray]:
    """`flat_words` of texts that are all ASCII: runs of word bytes found in the joined bytes
    (by the compiled kernel once the input is large, `ascii_words_into`: one pass instead of numpy
    passes that each make an array of the batch's size; 26 -> 15 ms for a 5k-row batch, most of
    what is left being the join and polars' copy of the words)."""
    import polars as pl

    from curate.text.shingles import compiled_kernels

    lengths = texts.str.len_bytes().to_numpy().astype(np.int64)
    # Texts joined by a non-word byte, so no word runs across two texts; a text may hold that byte too.
    data = np.frombuffer(texts.str.join("\x00").cast(pl.Binary).item(), dtype=np.uint8)
    text_starts = np.cumsum(lengths + 1) - (lengths + 1)
    kernels = compiled_kernels(len(data) // BYTES_PER_WORD)
    if kernels is not None:
        values, offsets, counts = np.empty(len(data), np.uint8), scratch_offsets(len(data) // 2 + 2), np.empty(len(texts), np.int64)
        words, written = kernels.ascii_words_into(data, text_starts, lengths, _WORD_BYTE_TABLE, values, offsets, counts)
        return strings_from_buffers(values[:written], offsets[: words + 1]), counts
    # Whole texts at a time, about WORDS_CHUNK_BYTES each.
    bounds = np.unique(np.concatenate(([0], np.searchsorted(text_starts, np.arange(WORDS_CHUNK_BYTES, len(data), WORDS_CHUNK_BYTES)), [len(texts)])))
    word_lengths, counts, values = [], [], []
    for first, last in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
        start, stop = int(text_starts[first]), int(text_starts[last - 1] + lengths[last - 1])
        chunk = data[start:stop]
        word = ascii_word_bytes(chunk)
        # Words start and end where word and non-word bytes meet: alternately, as the bytes are padded by non-word ones.
        padded = np.zeros(len(chunk) + 2, dtype=bool)
        padded[1:-1] = word
        edges = np.flatnonzero(padded[1:] != padded[:-1])
        starts = edges[0::2]
        word_lengths.append(edges[1::2] - starts)
        counts.append(np.diff(np.searchsorted(starts, np.append(text_starts[first:last] - start, len(chunk) + 1))))
        values.append(np.compress(word, chunk))
    offsets = np.zeros(sum(len(part) for part in word_lengths) + 1, dtype=np.int64)
    if word_lengths:
        np.cumsum(np.concatenate(word_lengths), out=offsets[1:])
    total = np.concatenate(counts).astype(np.int64) if counts else np.zeros(len(texts), dtype=np.int64)
    return strings_from_buffers(np.concatenate(values) if values else np.zeros(0, np.uint8), offsets), total


_SCRATCH = threading.local()


def scratch_offsets(size: int) -> np.ndarray:
    """An int64 buffer of at least `size` for this thread, the same one call after call (grown as
    needed): the words' offsets `ascii_words` writes, which polars reads into its own views and
    does not keep (unlike the words' bytes, which it shares). A fresh one each batch (4 bytes per
    byte of text, ~3 MB touched) cost ~800 page faults, and a page fault on this VM 1-100 µs."""
    buffer = getattr(_SCRATCH, "offsets", None)
    if buffer is None or len(buffer) < size:
        buffer = _SCRATCH.offsets = np.empty(max(size, 1 << 16), np.int64)
    return buffer


def ascii_word_bytes(data: np.ndarray) -> np.ndarray:
    """Which bytes of ASCII text are `\\w` (letters, digits, `_`): a few vectorized compares, ~3x
    cheaper than a table lookup (`| 0x20` folds upper-case letters onto lower-case ones)."""
    word = np.subtract(data | np.uint8(0x20), ord("a"), dtype=np.uint8) < 26
    word |= np.subtract(data, ord("0"), dtype=np.uint8) < 10
    word |= data == ord("_")
    return word


#: `ascii_word_bytes` of every byte value, as 0/1 (the compiled `ascii_words_into` looks bytes up in it).
_WORD_BYTE_TABLE = ascii_word_bytes(np.arange(256, dtype=np.uint8)).astype(np.uint8)


def strings_from_buffers(values: np.ndarray, offsets: np.ndarray) -> pl.Series:
    """A polars String series from UTF-8 bytes and int64 offsets (string `i` is
    `values[offsets[i]:offsets[i + 1]]`), through the Arrow C data interface (nanoarrow): ~6x cheaper
    than splitting one joined string."""
    import polars as pl

    if len(offsets) <= 1:
        return pl.Series("words", [], dtype=pl.String)
    import nanoarrow

    array = nanoarrow.c_array_from_buffers(nanoarrow.large_string(), len(offsets) - 1, [None, offsets, values])
    return pl.Series("words", array)
