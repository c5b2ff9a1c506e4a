"""Evaluation rules (EV): rows of a `curate eval` generations file where a candidate failed.

`curate eval` writes every prompt as a chat row (the prompt and the reference answer) with
each candidate's output and verdicts under `curate_eval`. Linting or reviewing that file
turns each failure into a finding, so `curate review evals/NAME/generations.jsonl` walks the
failures with the reference and the candidates' answers side by side.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from curate.engine.batch import Batch, Row
from curate.engine.findings import Finding, Severity
from curate.engine.rule import RowRule

#: The key of the record `curate eval` writes on each generations row.
EVAL_RECORD = "curate_eval"
#: The verdicts a failure names (cost and length are measurements, not checks).
CHECKS = ("exact_match", "label_correct", "json_valid", "schema_match", "format_match", "stopped")


def failed_checks(verdicts: dict[str, Any]) -> list[str]:
    named = [name for name in CHECKS if verdicts.get(name) is False]
    named += [f"expect.{key}" for key, passed in (verdicts.get("expect") or {}).items() if passed is False]
    if verdicts.get("refusal"):
        named.append("refusal")
    return named


class EvalFailure(RowRule):
    """A `curate eval` generations row where a candidate fails its check.

    ## What it does
    Reads the `curate_eval` record that `curate eval` writes on every row of
    `generations.jsonl` and reports each row where a candidate (base,
    few-shot, adapter, merged) failed the prompt's check: the final answer,
    the label, JSON validity or schema, the output format, or a regression
    row's `expect` checks. The message names the failing candidates and
    checks, and which candidates passed. Rows of ordinary data files carry no
    such record and are never reported.

    ## Why is this bad
    A failure is where the adapter still does not do what the data should
    have taught it (or does worse than the base): the place to look for
    missing, contradictory or too few training rows.

    ## Example
    ```jsonl
    {"messages": [{"role": "user", "content": "Plan?"}, {"role": "assistant", "content": "{\\"plan\\": \\"family\\"}"}], "curate_eval": {"failed": ["adapter"], "candidates": {"adapter": {"output": "family", "verdicts": {"json_valid": false, "passed": false}}}}}
    ```

    ## Use instead
    Open the file with `curate review`, compare the reference with each
    candidate's answer, then fix or add training rows and train again.
    """

    code = "EV001"
    name = "eval-failure"
    severity = Severity.WARNING

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        """Only the rows that hold an eval record are checked: a key test per row instead of a call
        (ordinary data has none; 0.8 s of a 1M-row lint went to calls that found nothing). The test
        looks in the conversation's `meta` (the row's keys besides its format's), mostly an empty
        dict, rather than in the row itself, whose key table is one more cache miss away."""
        for row in [row for row in batch.rows if row.conversation is not None and EVAL_RECORD in row.conversation.meta]:
            yield from self.check(row)

    def check(self, row: Row) -> Iterable[Finding]:
        obj = row.obj
        record = obj.get(EVAL_RECORD) if isinstance(obj, dict) else None
        if not isinstance(record, dict) or not record.get("failed") or not isinstance(record.get("candidates"), dict):
            return
        candidates = record["candidates"]
        parts, passed = [], []
        for name, entry in candidates.items():
            verdicts = entry.get("verdicts") if isinstance(entry, dict) else None
            if not isinstance(verdicts, dict):
                continue
            if verdicts.get("passed") is False:
                parts.append(f"{name} fails {', '.join(failed_checks(verdicts)) or 'its check'}")
            elif verdicts.get("passed"):
                passed.append(name)
        if not parts:
            return
        suite = "regression prompt" if record.get("suite") == "regression" else "eval prompt"
        message = f"{suite}: {'; '.join(parts)}" + (f" (passes with {', '.join(passed)})" if passed else "")
        yield self.row_finding(row, message, data={"failed": [p.split(" fails")[0] for p in parts], "passed": passed,
                                                   "where": record.get("where")})


def candidate_outputs(obj: Any) -> list[tuple[str, str, bool | None]] | None:
    """(candidate, output, passed) of a generations row, for side-by-side display; None for other rows."""
    record = obj.get(EVAL_RECORD) if isinstance(obj, dict) else None
    candidates = record.get("candidates") if isinstance(record, dict) else None
    if not isinstance(candidates, dict):
        return None
    shown = []
    for name, entry in candidates.items():
        if isinstance(entry, dict) and isinstance(entry.get("output"), str):
            verdicts = entry.get("verdicts") if isinstance(entry.get("verdicts"), dict) else {}
            shown.append((str(name), entry["output"], verdicts.get("passed")))
    return shown or None
