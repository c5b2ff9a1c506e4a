"""The mask audit: a hard gate before the first optimizer step.

For every example, as it will be fed to the model (after truncation and
collation): each assistant turn's content and its end-of-turn token are
trained, and nothing else is. The check works from the rendered text's
character spans and each token's character offset, not from the code that made
the labels, so a collator that masks the end-of-turn token (the classic
pad == eos bug) or a template that trains user turns cannot slip through.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curate.train.data import IGNORE_INDEX, Example

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


def audit_example(example: Example, input_ids: np.ndarray, labels: np.ndarray, report: AuditReport) -> None:
    """Check one example's tokens and labels as fed to the model; add the outcome to `report`."""
    reasons = []
    if len(input_ids) != len(example.input_ids) or not np.array_equal(input_ids, example.input_ids):
        reasons.append("the tokens fed to the model are not the example's tokens (collation bug)")
    trained = labels != IGNORE_INDEX
    if np.any(labels[trained] != input_ids[trained]):
        reasons.append("some labels differ from the tokens they label")
    starts = example.offsets[:-1]
    ends = example.offsets[1:]
    fed_until = int(example.offsets[-1])  # where the tokens stop (truncation)
    allowed = np.zeros(len(input_ids), dtype=bool)
    report.examples += 1
    for turn, span in enumerate(example.spans, start=1):
        report.assistant_turns += 1
        allowed |= (starts >= span.start) & (ends <= span.limit)
        if span.end_of_turn is None:
            reasons.append(f"assistant turn {turn} has no end-of-turn token in the rendered text: the model would never learn to stop")
            continue
        if span.start >= fed_until:
            continue  # cut by truncation; reported as a count, not a failure
        must_train = (ends > span.start) & (starts < span.end)
        if not np.all(trained[must_train]):
            untrained = _decode_positions(example, input_ids, np.flatnonzero(must_train & ~trained))
            reasons.append(f"assistant turn {turn}: tokens of its content or end-of-turn are not trained: {untrained}")
        if span.end > fed_until:
            report.partly_truncated += 1
            continue
        end_token = np.flatnonzero((starts == span.end - len(span.end_of_turn)) & (ends == span.end))
        if len(end_token) != 1:
            reasons.append(f"assistant turn {turn}: the end-of-turn text {span.end_of_turn!r} is not one token")
        elif not trained[end_token[0]]:
            reasons.append(f"assistant turn {turn}: the end-of-turn token {span.end_of_turn} is masked: the model would never learn to stop")
        else:
            report.turns_with_end_of_turn_trained += 1
            report.end_of_turn_tokens[span.end_of_turn] = report.end_of_turn_tokens.get(span.end_of_turn, 0) + 1
    outside = trained & ~allowed
    if np.any(outside):
        reasons.append(f"tokens outside the assistant turns are trained: {_decode_positions(example, input_ids, np.flatnonzero(outside))}")
    if reasons:
        report.failures.append(AuditFailure(example, reasons, labels))


def audit(fed: Iterable[tuple[Example, np.ndarray, np.ndarray]]) -> AuditReport:
    """Audit (example, input_ids, labels) triples taken from the collated batches."""
    report = AuditReport()
    for example, input_ids, labels in fed:
        audit_example(example, input_ids, labels, report)
    return report


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
