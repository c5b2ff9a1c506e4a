"""Training examples: read rows, split off eval, render with the model's chat template
and label the assistant tokens.

Labels come from the template's `{% generation %}` markers when it has them;
otherwise from rendering conversation prefixes: for assistant turn k, the text
rendered for the turns before it with `add_generation_prompt=True` (exactly what
inference renders) must be a prefix of the whole conversation, and what follows
it up to and including the first special token (the end-of-turn token) is
trained. Nothing from system, user or tool turns is trained.

Each example keeps the character spans of its assistant turns and the character
offset of every token, so the mask audit (audit.py) can check the labels against
the rendered text independently of how they were made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curate.formats import normalize
from curate.io import read_rows
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


def read_conversations(path: str | Path) -> tuple[list[TrainingRow], int]:
    """Usable conversations of a data file, and how many rows were not usable (lint reports why)."""
    conversations, skipped = [], 0
    for raw in read_rows(path):
        conversation = normalize(raw.obj) if raw.ok else None
        if conversation is None or not all(m.valid for m in conversation.messages) or conversation.last_assistant_index is None:
            skipped += 1
            continue
        conversations.append(TrainingRow(raw.path, raw.line, conversation.template_messages()))
    return conversations, skipped


def split_eval(conversations: list[TrainingRow], fraction: float, seed: int) -> tuple[list[TrainingRow], list[TrainingRow]]:
    """A seeded random split: (train, eval). At least one eval row when the fraction is positive."""
    if fraction <= 0 or len(conversations) < 2:
        return conversations, []
    count = min(len(conversations) - 1, max(1, round(len(conversations) * fraction)))
    order = np.random.default_rng(seed).permutation(len(conversations))
    held_out = set(order[:count].tolist())
    train = [c for i, c in enumerate(conversations) if i not in held_out]
    evaluation = [c for i, c in enumerate(conversations) if i in held_out]
    return train, evaluation


def special_token_strings(tokenizer: Any) -> list[str]:
    """Every special token's text, longest first (so `<|im_end|>` wins over a prefix of it)."""
    added = [token.content for token in tokenizer.added_tokens_decoder.values() if token.special]
    return sorted(set(added) | set(tokenizer.all_special_tokens), key=len, reverse=True)


def render(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def prompt_text(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """What inference renders for these turns: the generation prompt for the next assistant turn."""
    return render(tokenizer, messages, add_generation_prompt=True)


def assistant_spans(tokenizer: Any, messages: list[dict[str, str]], special: re.Pattern) -> tuple[str, list[AssistantSpan]]:
    """The rendered text and the spans of its assistant turns, by prefix rendering.

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
        if not text.startswith(through) or len(through) < len(prompt):
            raise ValueError(f"template parity: the conversation up to assistant turn {turn} renders differently once later turns follow")
        match = special.search(text, len(prompt), len(through)) if special.pattern else None
        end = match.end() if match else len(text[: len(through)].rstrip())
        spans.append(AssistantSpan(len(prompt), end, len(through), match.group() if match else None))
    return text, spans


def _segments(text: str, spans: list[AssistantSpan]) -> list[tuple[int, int, bool]]:
    """(start, end, trained) pieces of the text up to the last trained character."""
    pieces, position = [], 0
    for span in spans:
        pieces.append((position, span.start, False))
        pieces.append((span.start, span.end, True))
        position = span.end
    return pieces


def tokenize(tokenizer: Any, conversations: list[TrainingRow], max_seq_length: int) -> Dataset:
    """Render, tokenize and label every conversation (one batched tokenizer call)."""
    special = re.compile("|".join(re.escape(token) for token in special_token_strings(tokenizer)))
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
    if markers:
        examples = [_tokenize_with_markers(tokenizer, *item) for item in rendered]
    else:
        examples = _tokenize_by_segments(tokenizer, rendered)
    dataset = Dataset([], problems)
    for example in examples:
        _truncate(example, max_seq_length)
        if example.trained_tokens == 0 and example.truncated:
            dataset.cut_by_truncation.append(example)
        else:
            dataset.examples.append(example)
    return dataset


def _tokenize_by_segments(tokenizer: Any, rendered: list[tuple[TrainingRow, str, list[AssistantSpan]]]) -> list[Example]:
    # Prompt and answer pieces are tokenized separately, so the prompt's tokens are exactly
    # what inference gets from tokenizing the generation prompt, never merged across the boundary.
    pieces = [(index, piece) for index, (_, text, spans) in enumerate(rendered) for piece in _segments(text, spans)]
    texts = [rendered[index][1][start:end] for index, (start, end, _) in pieces]
    encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True) if texts else {"input_ids": [], "offset_mapping": []}
    per_example: list[tuple[list[int], list[int], list[int]]] = [([], [], []) for _ in rendered]
    for (index, (start, _end, trained)), ids, offsets in zip(pieces, encoded["input_ids"], encoded["offset_mapping"]):
        token_ids, labels, starts = per_example[index]
        token_ids += ids
        labels += ids if trained else [IGNORE_INDEX] * len(ids)
        starts += [start + begin for begin, _ in offsets]
    examples = []
    for (conversation, text, spans), (token_ids, labels, starts) in zip(rendered, per_example):
        stop = spans[-1].end if spans else len(text)
        examples.append(_example(conversation, text, spans, token_ids, labels, [*starts, stop]))
    return examples


def _tokenize_with_markers(tokenizer: Any, conversation: TrainingRow, text: str, spans: list[AssistantSpan]) -> Example:
    encoded = tokenizer.apply_chat_template(conversation.messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    token_ids = list(encoded["input_ids"])
    mask = list(encoded["assistant_masks"])
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    labels = [token if trained else IGNORE_INDEX for token, trained in zip(token_ids, mask)]
    return _example(conversation, text, spans, token_ids, labels, [begin for begin, _ in offsets] + [len(text)])


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
