"""Per-row text features of a batch, computed once with polars and shared by rules.

The duplicate and leakage rules all need the same things of every row: a key
of the whole normalized conversation, a key of its prompt, its final answer,
its user text. `batch_features` computes them in one vectorized pass over the
batch's message frame and caches the result on the batch (weakly, so it goes
away with the batch), whichever rule asks first.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from curate.text.answers import CODE_OR_CALL_PATTERN, polarity_expr, with_final_answers
from curate.text.normalize import WORD_PATTERN, words_expr
from curate.text.shingles import Tokens, mix64, sorted_unique, tokens_of_lists

if TYPE_CHECKING:
    import polars as pl

#: Final answers of at most this many words keep their words for DU003's word-by-word comparison.
SHORT_ANSWER_WORDS = 50
#: Alpaca placeholders for "no input": `<noinput>` and `` prompts are the same prompt.
NO_INPUT_PATTERN = r"(?i)<\s*no[\s_-]*input\s*>"
KEY_SEED = 0xD0D0

_FEATURES: weakref.WeakKeyDictionary[Any, pl.DataFrame] = weakref.WeakKeyDictionary()
_TOKENS: weakref.WeakKeyDictionary[Any, MessageTokens] = weakref.WeakKeyDictionary()


def batch_features(batch: Any) -> pl.DataFrame:
    """`conversation_features` of the batch, computed once per batch."""
    features = _FEATURES.get(batch)
    if features is None:
        features = _FEATURES[batch] = conversation_features(_normalized_messages(batch))
    return features


def batch_tokens(batch: Any) -> MessageTokens:
    """The words of every message of the batch, hashed once per batch."""
    tokens = _TOKENS.get(batch)
    if tokens is None:
        frame = _normalized_messages(batch)
        tokens = _TOKENS[batch] = MessageTokens(
            tokens_of_lists(frame["words"]), frame["row"].to_numpy().astype(np.int64), frame["role"].to_numpy(), len(batch)
        )
    return tokens


_NORMALIZED: weakref.WeakKeyDictionary[Any, pl.DataFrame] = weakref.WeakKeyDictionary()


def _normalized_messages(batch: Any) -> pl.DataFrame:
    frame = _NORMALIZED.get(batch)
    if frame is None:
        frame = _NORMALIZED[batch] = normalize_messages(batch.messages)
    return frame


def normalize_messages(messages: pl.DataFrame) -> pl.DataFrame:
    """Add `norm` (NFKC, lower case, whitespace collapsed) and `words` to a message frame.

    They cover what the chat template renders of a message: `words` its content and its tool
    calls (`calls` of the batch frame, canonical), so rows that differ only in a tool call are
    different rows to every key and tool-call answers compare by call; `norm` (the exact
    duplicate key) also its other fields (`fields`: names, reasoning), which are not part of
    an answer's words. NFKC runs only on messages with non-ASCII text (ASCII is already in
    NFKC form)."""
    import polars as pl

    content = pl.col("content")
    if "calls" in messages.columns:
        content = pl.when(pl.col("calls") == "").then(content).otherwise(pl.concat_str([content, pl.col("calls")], separator="\n"))
    lowered = pl.when(content.str.len_bytes() == content.str.len_chars()).then(content).otherwise(content.str.normalize("NFKC")).str.to_lowercase()
    frame = messages.with_columns(lowered=lowered)
    frame = frame.with_columns(collapsed=collapse_whitespace(frame["lowered"]))
    norm = pl.col("collapsed").str.strip_chars(" ")
    if "fields" in messages.columns:
        fields = pl.col("fields").str.normalize("NFKC").str.to_lowercase().str.replace_all(r"\s+", " ")
        norm = pl.when(pl.col("fields") == "").then(norm).otherwise(pl.concat_str([norm, fields], separator="\x1f"))
    return frame.with_columns(norm=norm, words=pl.col("lowered").str.extract_all(WORD_PATTERN)).drop("lowered", "collapsed")


#: Text whose whitespace `\s+ -> " "` would change: a whitespace character other than a space, or two spaces.
_UNCOLLAPSED = r"[^\S ]|  "


def collapse_whitespace(texts: pl.Series) -> pl.Series:
    r"""`texts.str.replace_all(r"\s+", " ")`, with the regex replacement run only on the texts it
    changes (a search is ~5x cheaper than a replacement that copies every text)."""
    changed = texts.str.contains(_UNCOLLAPSED).arg_true()
    if len(changed) == 0:
        return texts
    collapsed = texts.clone()
    collapsed.scatter(changed, texts.gather(changed).str.replace_all(r"\s+", " "))
    return collapsed


@dataclass
class MessageTokens:
    """Hashed words of every message of a batch (message order), selectable by role."""

    tokens: Tokens
    rows: np.ndarray  # batch row of each message
    roles: np.ndarray  # role of each message
    batch_rows: int

    def select(self, roles: Iterable[str] | None = None) -> tuple[np.ndarray, Tokens]:
        """(batch positions, Tokens) of the rows having words in turns of `roles` (all turns when None)."""
        counts = self.tokens.counts
        chosen = np.ones(len(counts), dtype=bool) if roles is None else np.isin(self.roles, list(roles))
        per_row = np.bincount(self.rows, weights=counts * chosen, minlength=self.batch_rows).astype(np.int64)
        positions = np.flatnonzero(per_row > 0)
        flat = np.repeat(chosen, counts)
        selected = Tokens(self.tokens.words, self.tokens.hashes[flat], per_row[positions], np.flatnonzero(flat))
        return positions, selected


def conversation_features(messages: pl.DataFrame) -> pl.DataFrame:
    """One row per conversation of a normalized message frame (`normalize_messages`):

    - `conversation_key`: hash of every turn (role and NFKC/case/whitespace-normalized text);
    - `prompt_key`: hash of the words of every turn before the last assistant turn
      (null without an assistant turn or without a prompt);
    - `answer`: the last assistant turn's text, and its features for DU003:
      `answer_key` (hash of its words), `answer_final` (its final answer, `curate.text.answers`),
      `answer_marked` (stated by an explicit marker such as `#### 72`), `answer_numbers` (every
      number it writes, for rows with a final answer), `answer_short` (its words, if at most
      SHORT_ANSWER_WORDS and it holds no code or tool call), `answer_polarity` (leading yes/no),
      `answer_call` (its canonical tool calls, "" when it calls none);
    - `user_key`: hash of the words of the user turns (LK001's prompt).
    """
    import polars as pl

    tagged = pl.col("role") + pl.lit("\x1f")
    frame = messages.with_columns(
        word_text=pl.when(pl.col("content").str.contains(NO_INPUT_PATTERN))
        .then(words_expr(pl.col("content").str.replace_all(NO_INPUT_PATTERN, "")))
        .otherwise(pl.col("words"))
        .list.join(" ")
    )
    last = frame.filter(pl.col("role") == "assistant").group_by("row").agg(pl.col("msg").max().alias("last"))
    frame = frame.join(last, on="row", how="left")
    in_prompt = pl.col("msg") < pl.col("last")
    is_answer = pl.col("msg") == pl.col("last")
    per_row = frame.group_by("row", maintain_order=True).agg(
        conversation_key=(tagged + pl.col("norm")).str.join("\x1e").hash(seed=KEY_SEED),
        prompt=(tagged + pl.col("word_text")).filter(in_prompt).str.join("\x1e"),
        answer=pl.col("content").filter(is_answer).first(),
        answer_call=pl.col("calls").filter(is_answer).first() if "calls" in frame.columns else pl.lit(None, pl.String),
        answer_words=pl.col("words").filter(is_answer).first(),
        user_key=pl.col("words").filter(pl.col("role") == "user").list.join(" ").str.join(" ").hash(seed=KEY_SEED),
    )
    answer_words = pl.col("answer_words")
    per_row = with_final_answers(per_row, "answer", "answer", numbers=True)
    return per_row.with_columns(
        prompt_key=pl.when(pl.col("answer").is_not_null() & (pl.col("prompt").str.len_bytes() > 0))
        .then(pl.col("prompt").hash(seed=KEY_SEED)),
        answer_key=answer_words.list.join(" ").hash(seed=KEY_SEED),
        answer_short=pl.when((answer_words.list.len() <= SHORT_ANSWER_WORDS) & ~pl.col("answer").str.contains(CODE_OR_CALL_PATTERN))
        .then(answer_words.list.join(" ")),
        answer_polarity=polarity_expr(answer_words.list.first()),
    ).drop("prompt", "answer_words")


def number_words(words: pl.Series) -> np.ndarray:
    """Whether each word is a number (all digits): the regex runs once per distinct word, then a
    hash-set lookup marks every occurrence (0.034 s instead of 0.039 s on a 20k-row batch)."""
    distinct = words.unique()
    numbers = distinct.filter(distinct.str.contains(r"^\d+$"))
    return words.is_in(numbers.implode()).to_numpy()


def number_keys(positions: np.ndarray, tokens: Tokens) -> np.ndarray:
    """Per selected row, an order-free hash of the set of its number words (0 without numbers):
    rows that differ in a number are different examples."""
    digits = number_words(tokens.words)
    flat = digits[tokens.word_index] if tokens.word_index is not None else digits
    owner = np.repeat(np.arange(len(positions), dtype=np.uint64), tokens.counts)
    keyed = sorted_unique((owner[flat] << np.uint64(40)) | (tokens.hashes[flat] >> np.uint64(24)))
    keys = np.zeros(len(positions), dtype=np.uint64)
    np.add.at(keys, (keyed >> np.uint64(40)).astype(np.int64), mix64(keyed & np.uint64((1 << 40) - 1)))
    return keys
