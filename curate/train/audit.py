"""The mask audit: a hard gate before the first optimizer step.

For every example, as it will be fed to the model (after truncation and
collation):

- the tokens are what inference produces: the example's ids equal the tokenization
  of its rendered text, and for each assistant turn the ids of the prompt before it
  equal the tokenization of `apply_chat_template(turns, add_generation_prompt=True)`
  (a mismatch shows both sequences token by token from the first difference);
- each assistant turn's content and its end-of-turn token are trained, and nothing
  else is.

The expectation is worked out here from the messages and the rendered text (where
each assistant message's content lies after its generation prompt, and the special
token that follows it), not from the spans the labeller found, so a labeller that cuts a
turn short, a collator that masks the end-of-turn token (the classic pad == eos bug)
or a template that trains user turns cannot slip through.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curate.train.data import IGNORE_INDEX, Example, encode, prompt_text, special_token_pattern

TRAINED_OPEN, TRAINED_CLOSE = "⟦", "⟧"


@dataclass
class AuditFailure:
    example: Example
    reasons: list[str]
    #: The labels as the model would see them (may differ from example.labels after collation).
    labels: np.ndarray


@dataclass
class AuditReport:
    examples: int = 0
    assistant_turns: int = 0
    turns_with_end_of_turn_trained: int = 0
    partly_truncated: int = 0
    failures: list[AuditFailure] = field(default_factory=list)
    end_of_turn_tokens: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures

    def add(self, other: AuditReport) -> None:
        self.examples += other.examples
        self.assistant_turns += other.assistant_turns
        self.turns_with_end_of_turn_trained += other.turns_with_end_of_turn_trained
        self.partly_truncated += other.partly_truncated
        self.failures += other.failures
        for token, count in other.end_of_turn_tokens.items():
            self.end_of_turn_tokens[token] = self.end_of_turn_tokens.get(token, 0) + count


@dataclass
class ExpectedTurn:
    """What one assistant turn must look like, from its message and the rendered text."""

    #: End of the generation prompt inference renders for this turn.
    prompt_end: int
    prompt: str
    #: Where the message's content starts in the text (None: not found after the prompt).
    content_start: int | None
    content: str
    #: End of the end-of-turn token (of the content when none follows it).
    end: int
    end_of_turn: str | None


def expected_turns(tokenizer: Any, example: Example, special: re.Pattern) -> tuple[list[ExpectedTurn], list[str]]:
    """Each assistant turn's expectation, and reasons when the text does not hold them."""
    messages, text = example.conversation.messages, example.text
    prompts = [(index, prompt_text(tokenizer, messages[:index])) for index, m in enumerate(messages) if m["role"] == "assistant"]
    ends = [len(prompt) for _, prompt in prompts] + [len(text)]
    after = re.compile(r"\s*(" + special.pattern + ")") if special.pattern else None
    turns, reasons = [], []
    for turn, (index, prompt) in enumerate(prompts, start=1):
        if not text.startswith(prompt):
            reasons.append(f"assistant turn {turn}: the text does not start with its generation prompt (template parity)")
        content = messages[index].get("content") or ""
        start = _find_content(text, content, len(prompt), ends[turn])
        found = content if start is None or text.startswith(content, start) else content.strip()
        end = len(prompt) if start is None else start + len(found)
        if after is None or start is None:
            match = None
        elif found.strip():
            match = after.match(text, end)
        else:  # no content (a tool call, say): the turn ends at the first special token after its prompt
            match = after.search(text, end, ends[turn])
        if start is None:
            reasons.append(f"assistant turn {turn}: its content does not appear in the rendered text after its generation prompt")
        turns.append(ExpectedTurn(len(prompt), prompt, start, found, match.end() if match else end, match.group(1) if match else None))
    return turns, reasons


def _find_content(text: str, content: str, begin: int, end: int) -> int | None:
    """Where the content (or, as templates often trim it, its stripped form) starts in text[begin:end]."""
    for candidate in dict.fromkeys((content, content.strip())):
        position = text.find(candidate, begin, end)
        if position >= 0:
            return position
    return None


def token_mismatch(tokenizer: Any, trained: np.ndarray, inference: list[int], what: str) -> str | None:
    """None when `trained` is a prefix of `inference` (or the other way round, for a prompt
    longer than what truncation kept); else both sequences from the first difference."""
    count = min(len(trained), len(inference))
    differ = np.flatnonzero(np.asarray(trained[:count]) != np.asarray(inference[:count], dtype=np.int64))
    if len(differ) == 0:
        return None
    first = int(differ[0])
    low, high = max(0, first - 2), first + 6
    show = lambda ids: " ".join(repr(token) for token in tokenizer.convert_ids_to_tokens([int(i) for i in ids[low:high]]))  # noqa: E731
    return (
        f"{what}: token {first} differs from what inference tokenizes; from token {low}:\n"
        f"      trained:   {show(trained)}\n      inference: {show(inference)}"
    )


def audit_example(example: Example, input_ids: np.ndarray, labels: np.ndarray, report: AuditReport, *, tokenizer: Any,
                  turns: list[ExpectedTurn], text_reasons: list[str], inference_ids: list[int], prompt_ids: list[list[int]]) -> None:
    """Check one example's tokens and labels as fed to the model; add the outcome to `report`."""
    reasons = list(text_reasons)
    if len(input_ids) != len(example.input_ids) or not np.array_equal(input_ids, example.input_ids):
        reasons.append("the tokens fed to the model are not the example's tokens (collation bug)")
    if len(input_ids) > len(inference_ids):
        reasons.append("more tokens are fed than the rendered text tokenizes to")
    for problem in (
        token_mismatch(tokenizer, input_ids, inference_ids, "tokens of the rendered conversation"),
        *(token_mismatch(tokenizer, input_ids, ids, f"prompt of assistant turn {turn}") for turn, ids in enumerate(prompt_ids, start=1)),
    ):
        if problem:
            reasons.append(problem)
    trained = labels != IGNORE_INDEX
    if np.any(labels[trained] != input_ids[trained]):
        reasons.append("some labels differ from the tokens they label")
    starts = example.offsets[:-1][: len(input_ids)]
    ends = example.offsets[1:][: len(input_ids)]
    fed_until = int(example.offsets[-1])  # where the tokens stop (truncation)
    allowed = np.zeros(len(input_ids), dtype=bool)
    report.examples += 1
    for turn, expected in enumerate(turns, start=1):
        report.assistant_turns += 1
        allowed |= (starts >= expected.prompt_end) & (starts < expected.end)
        if expected.content_start is None:
            continue
        if expected.end_of_turn is None:
            reasons.append(f"assistant turn {turn} has no end-of-turn token in the rendered text: the model would never learn to stop")
            continue
        if expected.prompt_end >= fed_until:
            continue  # cut by truncation; reported as a count, not a failure
        must_train = (ends > expected.content_start) & (starts < expected.end)
        if not np.all(trained[must_train]):
            untrained = _decode_positions(example, input_ids, np.flatnonzero(must_train & ~trained))
            shown = _trained_text(example, trained, expected)
            reasons.append(
                f"assistant turn {turn}: tokens of its content or end-of-turn are not trained: {untrained} "
                f"(trained {_short(shown)}, expected {_short(expected.content + expected.end_of_turn)})"
            )
        if expected.end > fed_until:
            report.partly_truncated += 1
            continue
        eot_start = expected.end - len(expected.end_of_turn)
        end_token = np.flatnonzero((starts == eot_start) & (ends == expected.end))
        if len(end_token) != 1:
            reasons.append(f"assistant turn {turn}: the end-of-turn text {expected.end_of_turn!r} is not one token")
        elif not trained[end_token[0]]:
            reasons.append(f"assistant turn {turn}: the end-of-turn token {expected.end_of_turn} is masked: the model would never learn to stop")
        else:
            report.turns_with_end_of_turn_trained += 1
            report.end_of_turn_tokens[expected.end_of_turn] = report.end_of_turn_tokens.get(expected.end_of_turn, 0) + 1
    outside = trained & ~allowed
    if np.any(outside):
        reasons.append(f"tokens outside the assistant turns are trained: {_decode_positions(example, input_ids, np.flatnonzero(outside))}")
    if reasons:
        report.failures.append(AuditFailure(example, reasons, labels))


def audit(fed: Iterable[tuple[Example, np.ndarray, np.ndarray]], tokenizer: Any) -> AuditReport:
    """Audit (example, input_ids, labels) triples taken from the collated batches."""
    fed = list(fed)
    special = special_token_pattern(tokenizer)
    expectations = [expected_turns(tokenizer, example, special) for example, _, _ in fed]
    texts = [text for (example, _, _), (turns, _) in zip(fed, expectations) for text in (example.text, *(t.prompt for t in turns))]
    ids, _ = encode(tokenizer, texts)
    report, position = AuditReport(), 0
    for (example, input_ids, labels), (turns, text_reasons) in zip(fed, expectations):
        inference, prompts = ids[position], ids[position + 1 : position + 1 + len(turns)]
        position += 1 + len(turns)
        audit_example(example, input_ids, labels, report, tokenizer=tokenizer, turns=turns, text_reasons=text_reasons,
                      inference_ids=inference, prompt_ids=prompts)
    return report


def _trained_text(example: Example, trained: np.ndarray, expected: ExpectedTurn) -> str:
    """The text of the trained tokens that start in this turn."""
    starts, ends = example.offsets[:-1][: len(trained)], example.offsets[1:][: len(trained)]
    inside = np.flatnonzero(trained & (starts >= expected.prompt_end) & (starts < expected.end))
    return "".join(example.text[starts[i] : ends[i]] for i in inside)


def _short(text: str, width: int = 120) -> str:
    return repr(text if len(text) <= width else text[: width - 3] + "...")


def _decode_positions(example: Example, input_ids: np.ndarray, positions: np.ndarray, limit: int = 3, width: int = 60) -> str:
    """The text of runs of consecutive token positions, e.g. `'system\\nBe brief.', 'What is'`."""
    runs = np.split(positions, np.flatnonzero(np.diff(positions) != 1) + 1)
    shown = []
    for run in runs[:limit]:
        text = example.text[example.offsets[run[0]] : example.offsets[run[-1] + 1]]
        shown.append(repr(text if len(text) <= width else text[: width - 3] + "..."))
    more = f" and {len(runs) - limit} more spans" if len(runs) > limit else ""
    return ", ".join(shown) + more


def marked_text(example: Example, labels: np.ndarray) -> str:
    """The example's text as fed to the model with trained spans wrapped in ⟦…⟧."""
    trained = labels != IGNORE_INDEX
    pieces = []
    run_start = 0
    for position in range(1, len(trained) + 1):
        if position == len(trained) or trained[position] != trained[run_start]:
            text = example.text[example.offsets[run_start] : example.offsets[position]]
            pieces.append(f"{TRAINED_OPEN}{text}{TRAINED_CLOSE}" if trained[run_start] else text)
            run_start = position
    return "".join(pieces)


def describe_failure(failure: AuditFailure) -> str:
    where = failure.example.conversation.where
    lines = [f"mask audit failed for {where}:"]
    lines += [f"  - {reason}" for reason in failure.reasons]
    lines.append(f"  the example as trained (trained spans marked {TRAINED_OPEN}…{TRAINED_CLOSE}):")
    lines += ["    " + line for line in marked_text(failure.example, failure.labels).splitlines()]
    return "\n".join(lines)


def summary_lines(report: AuditReport, tokenizer: Any, cut_by_truncation: int) -> list[str]:
    """What `--dry-run` and the run log print about the masks."""
    lines = [
        f"mask audit: {report.examples} examples, {report.assistant_turns} assistant turns, "
        f"{len(report.failures)} failing",
    ]
    if report.end_of_turn_tokens:
        names = ", ".join(f"{token} (id {tokenizer.convert_tokens_to_ids(token)})" for token in report.end_of_turn_tokens)
        lines.append(f"  end-of-turn token trained in {report.turns_with_end_of_turn_trained}/{report.assistant_turns} assistant turns: {names}")
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id == tokenizer.eos_token_id:
        lines.append(
            f"  note: pad token == eos token ({tokenizer.eos_token}); padding is masked by position here, "
            "so the end-of-turn token is still trained (checked above)"
        )
    if report.partly_truncated:
        lines.append(f"  {report.partly_truncated} assistant turns cut short by max-seq-length (their end-of-turn token is lost)")
    if cut_by_truncation:
        lines.append(f"  {cut_by_truncation} examples left out: truncation cut all of their assistant tokens")
    return lines
