"""Training examples: read rows, split off eval, render with the model's chat template
and label the assistant tokens.

Labels come from the template's `{% generation %}` markers when it has them;
otherwise from rendering conversation prefixes: for assistant turn k, the text
rendered for the turns before it with `add_generation_prompt=True` (exactly what
inference renders) must be a prefix of the whole conversation, and what follows
it up to and including the first special token the template writes after the
content (the end-of-turn token) is trained. Nothing from system, user or tool turns is trained.

The whole rendered conversation is tokenized once, so the ids trained on are exactly
`tokenizer(rendered_text)`, what inference feeds the model; labels come from the
character offsets of the tokens. Tokenizing pieces separately would not be: a
SentencePiece (Metaspace) tokenizer starts every piece with `▁`.

Each example keeps the character spans of its assistant turns and the character
offset of every token; the mask audit (audit.py) checks the labels and the tokens
against the rendered text and the messages, independently of how they were made.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curate.formats import has_roles, normalize
from curate.io import RawRow, read_rows
from curate.templates import has_generation_markers

IGNORE_INDEX = -100


@dataclass
class TrainingRow:
    """One usable row: where it came from and its OpenAI-style messages."""

    path: str
    line: int
    messages: list[dict[str, str]]

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class AssistantSpan:
    """Character spans of one assistant turn in the rendered text.

    `start`: where generation starts (end of the generation prompt);
    `end`: end of the end-of-turn token, or of the turn when the template emits none;
    `limit`: end of the turn as the template renders it (trailing newline and all).
    """

    start: int
    end: int
    limit: int
    end_of_turn: str | None


@dataclass
class Example:
    conversation: TrainingRow
    text: str
    spans: list[AssistantSpan]
    input_ids: np.ndarray
    labels: np.ndarray
    #: Character offset of each token in `text`; one extra entry: where the tokens stop.
    offsets: np.ndarray
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def trained_tokens(self) -> int:
        return int((self.labels != IGNORE_INDEX).sum())


@dataclass
class Problem:
    """An example that cannot be trained on as rendered (template parity, render errors)."""

    where: str
    message: str


@dataclass
class Dataset:
    examples: list[Example]
    problems: list[Problem] = field(default_factory=list)
    #: Examples left out because truncation cut every assistant token.
    cut_by_truncation: list[Example] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(len(example) for example in self.examples)

    @property
    def trained_tokens(self) -> int:
        return sum(example.trained_tokens for example in self.examples)


@dataclass
class DataFile:
    """One read of a data file: the sha256 of its bytes and the conversations parsed from those
    same bytes, so the hash in the manifest is the hash of what was trained on."""

    path: str
    sha256: str
    conversations: list[TrainingRow]
    unusable: int


def read_data_file(path: str | Path) -> DataFile:
    """Read a data source once. A file: the sha256 of its bytes and the rows parsed from those
    bytes. A dataset (a `save_to_disk` folder, `hf://datasets/...`): it has no one file to hash,
    so the sha256 is of its rows as read, each as sorted-key JSON on a line (`rows_sha256`)."""
    import hashlib

    from curate.io import InputError, iter_rows, read_file_bytes
    from curate.sources import source_kind

    kind = source_kind(str(path))
    if kind == "stdin":
        raise InputError("-: curate train reads a data file or dataset, not stdin (its sha256 goes in manifest.json)")
    if kind in ("hf", "dataset"):
        rows = list(iter_rows(path))
        conversations, unusable = usable_conversations(rows)
        return DataFile(str(path), rows_sha256(rows), conversations, unusable)
    content = read_file_bytes(path)
    conversations, unusable = usable_conversations(iter_rows(path, content=content))
    return DataFile(str(path), hashlib.sha256(content).hexdigest(), conversations, unusable)


def rows_sha256(rows: Iterable[RawRow]) -> str:
    """sha256 of rows as sorted-key JSON Lines: the same rows in the same order give the same hash
    whatever their storage (Arrow shards, a hub snapshot)."""
    import hashlib

    import orjson

    digest = hashlib.sha256()
    for raw in rows:
        digest.update(orjson.dumps(raw.obj if raw.ok else raw.text, option=orjson.OPT_SORT_KEYS) + b"\n")
    return digest.hexdigest()


def read_conversations(path: str | Path) -> tuple[list[TrainingRow], int]:
    """Usable conversations of a data file, and how many rows were not usable."""
    return usable_conversations(read_rows(path))


def usable_conversations(rows: Iterable[RawRow]) -> tuple[list[TrainingRow], int]:
    """The usable conversations of rows, and how many rows were not usable (lint reports why).
    Rows without roles (TRL's language-modeling `text`) have no assistant turn to train: unusable."""
    conversations, skipped = [], 0
    for raw in rows:
        conversation = normalize(raw.obj) if raw.ok else None
        if (conversation is None or not has_roles(conversation) or not all(m.valid for m in conversation.messages)
                or conversation.last_assistant_index is None):
            skipped += 1
            continue
        conversations.append(TrainingRow(raw.path, raw.line, conversation.template_messages()))
    return conversations, skipped


@dataclass
class Split:
    train: list[TrainingRow]
    evaluation: list[TrainingRow]
    #: Duplicate clusters (two rows or more) kept wholly on one side of the split.
    clusters_kept_together: int = 0


def split_eval(conversations: list[TrainingRow], fraction: float, seed: int, duplicate_of: dict[int, int] | None = None) -> Split:
    """A seeded random split by duplicate cluster: every copy of a row (`duplicate_of`: line ->
    its cluster's representative line) lands on the same side, so no eval row has a copy in
    train. About `fraction` of the rows are held out; at least one when it is positive."""
    if fraction <= 0 or len(conversations) < 2:
        return Split(conversations, [])
    duplicate_of = duplicate_of or {}
    groups: dict[int, list[int]] = {}
    for index, conversation in enumerate(conversations):
        groups.setdefault(duplicate_of.get(conversation.line, conversation.line), []).append(index)
    members = list(groups.values())
    target = min(len(conversations) - 1, max(1, round(len(conversations) * fraction)))
    held_out: set[int] = set()
    for group in np.random.default_rng(seed).permutation(len(members)).tolist():
        size = len(members[group])
        if len(held_out) + size <= target or (not held_out and size < len(conversations)):
            held_out.update(members[group])
        if len(held_out) >= target:
            break
    train = [c for i, c in enumerate(conversations) if i not in held_out]
    evaluation = [c for i, c in enumerate(conversations) if i in held_out]
    return Split(train, evaluation, sum(1 for group in members if len(group) > 1))


def special_token_strings(tokenizer: Any) -> list[str]:
    """Every special token's text, longest first (so `<|im_end|>` wins over a prefix of it)."""
    added = [token.content for token in tokenizer.added_tokens_decoder.values() if token.special]
    return sorted(set(added) | set(tokenizer.all_special_tokens), key=len, reverse=True)


def special_token_pattern(tokenizer: Any) -> re.Pattern:
    return re.compile("|".join(re.escape(token) for token in special_token_strings(tokenizer)))


def render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def prompt_text(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """What inference renders for these turns: the generation prompt for the next assistant turn."""
    return render(tokenizer, messages, add_generation_prompt=True)


def encode(tokenizer: Any, texts: list[str]) -> tuple[list[list[int]], list[list[int]]]:
    """(ids, token start offsets) of each text, tokenized as inference tokenizes a rendered
    chat (`apply_chat_template(tokenize=True)`: the template writes the special tokens)."""
    if not texts:
        return [], []
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True)
    return encoded["input_ids"], [[begin for begin, _ in offsets] for offsets in encoded["offset_mapping"]]


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]], special: re.Pattern) -> tuple[str, list[AssistantSpan]]:
    """The rendered text and the spans of its assistant turns, by prefix rendering.

    A turn runs from the end of its generation prompt to the end of the first special token
    the template writes after the content (its end-of-turn token): special-token text inside
    the content is counted and skipped, so it does not cut the turn short.

    Raises ValueError with a one-line reason when the template breaks parity."""
    text = render(tokenizer, messages)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        turn = sum(1 for m in messages[: index + 1] if m["role"] == "assistant")
        prompt = prompt_text(tokenizer, messages[:index])
        through = render(tokenizer, messages[: index + 1])
        if not text.startswith(prompt):
            raise ValueError(
                f"template parity: the prompt rendered for assistant turn {turn} with add_generation_prompt=True "
                "is not how the full conversation renders it, so training would see a different prompt than inference"
            )
        found = list(special.finditer(through, len(prompt))) if special.pattern and len(through) >= len(prompt) else []
        # Special-token text inside the content comes first; the template's end-of-turn token follows it.
        inside = len(special.findall(message.get("content") or "")) if special.pattern else 0
        match = found[inside] if len(found) > inside else None
        end = match.end() if match else len(through.rstrip())
        # What follows the end-of-turn token may change (Phi-3 writes eos after the last turn only).
        if len(through) < len(prompt) or not text.startswith(through[:end]):
            raise ValueError(f"template parity: the conversation up to assistant turn {turn} renders differently once later turns follow")
        spans.append(AssistantSpan(len(prompt), end, len(through), match.group() if match else None))
    return text, spans


def tokenize(tokenizer: Any, conversations: list[TrainingRow], max_seq_length: int) -> Dataset:
    """Render, tokenize and label every conversation.

    Each rendered conversation is tokenized once, whole (one batched call), so the trained
    ids are exactly what the tokenizer makes of the rendered text; a token is trained when it
    starts inside an assistant span (character offsets)."""
    special = special_token_pattern(tokenizer)
    markers = has_generation_markers(tokenizer.chat_template)
    rendered, problems = [], []
    for conversation in conversations:
        try:
            text, spans = assistant_spans(tokenizer, conversation.messages, special)
        except ValueError as exc:
            problems.append(Problem(conversation.where, str(exc)))
            continue
        except Exception as exc:  # a chat template can raise anything (jinja errors, raise_exception)
            problems.append(Problem(conversation.where, f"the chat template fails on this row: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"))
            continue
        rendered.append((conversation, text, spans))
    all_ids, all_starts = encode(tokenizer, [text for _, text, _ in rendered])
    dataset = Dataset([], problems)
    for (conversation, text, spans), ids, starts in zip(rendered, all_ids, all_starts):
        if markers:
            trained = _marker_mask(tokenizer, conversation, ids)
            if trained is None:
                dataset.problems.append(Problem(conversation.where, "template parity: apply_chat_template(tokenize=True) gives other tokens than tokenizing the rendered text"))
                continue
        else:
            trained = _span_mask(starts, spans)
        labels = np.where(trained, np.asarray(ids, dtype=np.int64), IGNORE_INDEX)
        example = _example(conversation, text, spans, ids, labels, [*starts, len(text)])
        _truncate(example, max_seq_length)
        if example.trained_tokens == 0 and example.truncated:
            dataset.cut_by_truncation.append(example)
        else:
            dataset.examples.append(example)
    return dataset


def _span_mask(starts: list[int], spans: list[AssistantSpan]) -> np.ndarray:
    """Tokens that start inside an assistant span (generation start to end-of-turn)."""
    begins = np.asarray(starts, dtype=np.int64)
    trained = np.zeros(len(begins), dtype=bool)
    for span in spans:
        trained |= (begins >= span.start) & (begins < span.end)
    return trained


def _marker_mask(tokenizer: Any, conversation: TrainingRow, ids: list[int]) -> np.ndarray | None:
    """The `{% generation %}` mask, or None when the template's own tokenization is not `ids`."""
    encoded = tokenizer.apply_chat_template(conversation.messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    if list(encoded["input_ids"]) != list(ids):
        return None
    return np.asarray(encoded["assistant_masks"], dtype=bool)


def _example(conversation: TrainingRow, text: str, spans: list[AssistantSpan], token_ids: list[int], labels: list[int], offsets: list[int]) -> Example:
    labels_array = np.asarray(labels, dtype=np.int64)
    if len(labels_array):
        labels_array[0] = IGNORE_INDEX  # nothing predicts the first token
    return Example(
        conversation=conversation,
        text=text,
        spans=spans,
        input_ids=np.asarray(token_ids, dtype=np.int64),
        labels=labels_array,
        offsets=np.asarray(offsets, dtype=np.int64),
    )


def _truncate(example: Example, max_seq_length: int) -> None:
    if len(example.input_ids) <= max_seq_length:
        return
    example.input_ids = example.input_ids[:max_seq_length]
    example.labels = example.labels[:max_seq_length]
    example.offsets = example.offsets[: max_seq_length + 1]
    example.truncated = True
