"""Preference rules (PF): pairs of chosen and rejected answers (DPO, ORPO, reward models).

Both sides of a pair also go through every row rule (the runner checks the rejected
side as a row of its own); these rules look at the pair itself.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from typing import Any

from curate.engine.batch import Batch, Row
from curate.engine.findings import Finding, Location, Severity
from curate.engine.rule import DatasetRule, Fix, RowRule, RuleOptions
from curate.formats import PREFERENCE_FORMATS, Message, PreferencePair, RowFormat, preference_pair
from curate.lightmodel import Field
from curate.rules.duplicates import KeepsFirstCopy
from curate.rules.toolkit import DatasetCounter, percent
from curate.text.normalize import normalize_text


def side_text(messages: list[Message]) -> str:
    return "\n".join(message.content for message in messages if message.valid)


def pairs_of(rows: Iterable[Row]) -> Iterator[tuple[Row, PreferencePair]]:
    """(row, pair) for every preference row (the chosen side; the runner's rejected copies are skipped)."""
    for row in rows:
        if row.format in PREFERENCE_FORMATS and row.conversation is not None and not row.side:
            yield row, preference_pair(row.obj, row.format)


def _digest(text: str) -> bytes:
    return hashlib.blake2b(normalize_text(text).encode("utf-8", "surrogatepass"), digest_size=8).digest()


def pair_key(pair: PreferencePair) -> tuple[bytes, bytes, bytes]:
    """(prompt, chosen, rejected) digests of the normalized texts."""
    return _digest(side_text(pair.prompt)), _digest(side_text(pair.chosen)), _digest(side_text(pair.rejected))


def _where(path: str, line: int, here: Location) -> str:
    return f"line {line}" if path == here.path else f"{path}:{line}"


class IdenticalPair(RowRule):
    """Chosen and rejected answers are the same.

    ## What it does
    Compares the chosen and the rejected completion of every preference row after
    normalization (Unicode NFKC, case, whitespace) and reports the rows where they
    are the same text.

    ## Why is this bad
    A pair with no difference carries no preference: DPO's loss on it is a constant
    that only adds noise, and it usually means the export copied one column twice
    or the judge returned a tie that was kept.

    ## Example
    ```jsonl
    {"prompt": "What is 2+2?", "chosen": "4", "rejected": "4 "}
    ```

    ## Use instead
    Drop the row, or pair the prompt with a genuinely worse answer.
    """

    code = "PF001"
    name = "identical-preference-pair"
    severity = Severity.ERROR
    def fix(self, finding: Finding) -> Fix | None:
        """A pair that prefers an answer over itself teaches nothing: dropped unless a reviewer kept it."""
        return Fix.drop(undone_by_keep=True)

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        for row, pair in pairs_of(batch.rows):
            chosen, rejected = side_text(pair.chosen), side_text(pair.rejected)
            if chosen.strip() and normalize_text(chosen) == normalize_text(rejected):
                same = "the same text" if chosen == rejected else "the same text after normalization (case, spacing)"
                yield self.row_finding(row, f"chosen and rejected are {same}; the pair teaches no preference")


class PairIndexRule(DatasetRule):
    """A dataset rule that keys every pair by `pair_key` and, at the end, compares each pair with
    the pairs before it (`seen`: the first row of each key)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pairs: list[tuple[tuple[bytes, bytes, bytes], str, int]] = []  # (key, path, line) in reading order
        self.seen: dict[tuple[bytes, bytes, bytes], tuple[str, int]] = {}

    def observe(self, batch: Batch) -> None:
        self.pairs += [(pair_key(pair), row.path, row.line) for row, pair in pairs_of(batch.rows)]

    def merge(self, later: PairIndexRule) -> None:
        self.pairs += later.pairs

    def compare(self, here: Location, key: tuple[bytes, bytes, bytes]) -> Finding | None:
        raise NotImplementedError

    def finish(self) -> Iterable[Finding]:
        for key, path, line in self.pairs:
            finding = self.compare(Location(path, line), key)
            if finding is not None:
                yield finding
            self.seen.setdefault(key, (path, line))


class ContradictoryPreference(PairIndexRule):
    """The same prompt prefers A over B in one row and B over A in another.

    ## What it does
    Keys every preference pair by its normalized prompt, chosen and rejected text and
    reports a row whose prompt and answers appear in an earlier row with chosen and
    rejected swapped, naming that row.

    ## Why is this bad
    The two rows cancel: the model is pushed towards an answer and away from it with
    the same strength, so the pair only costs compute, and it is a sign that two
    annotators (or a judge run twice) disagreed and both verdicts were kept.

    ## Example
    ```jsonl
    {"prompt": "Best sorting for nearly sorted data?", "chosen": "Insertion sort.", "rejected": "Quicksort."}
    {"prompt": "Best sorting for nearly sorted data?", "chosen": "Quicksort.", "rejected": "Insertion sort."}
    ```

    ## Use instead
    Decide which answer is better and keep one row, or drop both.
    """

    code = "PF002"
    name = "contradictory-preference"
    severity = Severity.WARNING

    def compare(self, here: Location, key: tuple[bytes, bytes, bytes]) -> Finding | None:
        prompt, chosen, rejected = key
        earlier = self.seen.get((prompt, rejected, chosen)) if chosen != rejected else None  # equal sides: PF001's
        if earlier is None:
            return None
        path, line = earlier
        return self.finding(here.path, here.line, f"the same prompt prefers the opposite answer at {_where(path, line, here)}; the two rows cancel out",
                            related=[Location(path, line)], data={"other_line": line})


class DuplicatePair(KeepsFirstCopy, PairIndexRule):
    """Preference pair repeats an earlier pair (same prompt, chosen and rejected).

    ## What it does
    Compares the prompt, the chosen and the rejected text of every preference pair after
    normalization (Unicode NFKC, case, whitespace), across all input files, and reports
    each repeat, pointing at the first copy (the one `curate fix` keeps). Pairs that share
    a prompt and a chosen answer but reject different answers are a ranking, not copies
    (the duplicate rules DU001-DU003 leave preference rows to this rule for that reason).

    ## Why is this bad
    A repeated pair is trained on several times per epoch: its preference weighs more
    than the others, and it leaks between train and eval splits made by random sampling.

    ## Example
    ```jsonl
    {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."}
    {"prompt": "capital of France?", "chosen": "Paris.", "rejected": "Lyon."}
    ```

    ## Use instead
    Keep one copy (`curate fix` drops the repeats).
    """

    code = "PF005"
    name = "duplicate-preference-pair"
    severity = Severity.WARNING

    def compare(self, here: Location, key: tuple[bytes, bytes, bytes]) -> Finding | None:
        earlier = self.seen.get(key)
        if earlier is None:
            return None
        path, line = earlier
        return self.finding(here.path, here.line, f"repeats the preference pair at {_where(path, line, here)}", related=[Location(path, line)], data={"first_line": line})


class ImplicitPromptMismatch(RowRule):
    """Implicit-prompt pair whose chosen and rejected do not share the prompt.

    ## What it does
    In rows with only `chosen` and `rejected` (TRL's implicit prompt: the prompt is the
    start both share), checks that the two conversations are the same up to their last
    assistant turn; for text pairs, that they share a leading prompt at all. Reports
    where they part.

    ## Why is this bad
    The trainer takes the longest shared start as the prompt. When the two sides differ
    earlier (another question, an edited system prompt) the "prompt" shrinks to what
    happens to match, and the pair compares answers to different questions.

    ## Example
    ```jsonl
    {"chosen": [{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."}],
     "rejected": [{"role": "user", "content": "Capital of Spain?"}, {"role": "assistant", "content": "Lisbon."}]}
    ```

    ## Use instead
    Give both sides the same turns before the answer, or write the row in the explicit
    `prompt` / `chosen` / `rejected` form.
    """

    code = "PF003"
    name = "implicit-prompt-mismatch"
    severity = Severity.ERROR

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        for row, pair in pairs_of(batch.rows):
            if row.format is not RowFormat.IMPLICIT_PREFERENCE:
                continue
            problem = _text_pair_problem(pair) if pair.roleless else _conversation_pair_problem(pair)
            if problem:
                yield self.row_finding(row, problem)


def _text_pair_problem(pair: PreferencePair) -> str | None:
    """Text pairs must share at least one leading word (the prompt both answers follow)."""
    chosen, rejected = side_text(pair.chosen), side_text(pair.rejected)
    shared = os.path.commonprefix([chosen, rejected])
    if shared in (chosen, rejected):
        return None  # one side contains the other; PF001 reports identical sides
    whole_words = shared[: len(shared) - len(re.split(r"\s", shared)[-1])]
    if not whole_words.strip():
        return "chosen and rejected share no leading prompt text; the implicit prompt is empty"
    return None


def _conversation_pair_problem(pair: PreferencePair) -> str | None:
    """The two sides must agree on every turn before the last assistant turn."""
    chosen, rejected = pair.prompt + pair.chosen, pair.prompt + pair.rejected
    chosen_prompt = chosen[: _last_assistant(chosen)]
    rejected_prompt = rejected[: _last_assistant(rejected)]
    if [(m.role, m.content) for m in chosen_prompt] == [(m.role, m.content) for m in rejected_prompt]:
        return None
    where = len(pair.prompt)
    first = chosen[where].where if where < len(chosen) else "the end of chosen"
    if not pair.prompt:
        return f"chosen and rejected differ from the first turn ({first}); they share no prompt"
    return f"chosen and rejected differ at {first}, before the last assistant turn; the implicit prompt is only the first {where} turn{'s' if where != 1 else ''}"


def _last_assistant(messages: list[Message]) -> int:
    for position in range(len(messages) - 1, -1, -1):
        if messages[position].role == "assistant":
            return position
    return len(messages)


class LengthBiasOptions(RuleOptions):
    max_share: float = Field(0.8, gt=0.5, le=1.0, description="Share of pairs with the longer answer chosen above which the rule fires.")
    min_pairs: int = Field(50, ge=2, description="Fewer preference pairs than this: too few to judge.")


class LengthBias(DatasetRule):
    """Chosen answers are longer than rejected ones in most pairs.

    ## What it does
    Compares the length (characters) of the chosen and the rejected answer of every
    preference pair and fires when the chosen one is longer in more than `max-share`
    (default 80%) of the pairs, with a chart of chosen longer / rejected longer / equal
    and the mean lengths. Quiet below `min-pairs` pairs.

    ## Why is this bad
    Length is the easiest signal to learn: a DPO model (or reward model) trained on such
    pairs learns "longer is better" and grows verbose without getting better, the
    well-documented length exploitation of preference optimization.

    ## Example
    A DPO set where 93% of chosen answers are longer than their rejected answer,
    440 characters on average against 180.

    ## Use instead
    Add pairs where the shorter answer wins, length-match the pairs, or use a
    length-normalized objective (SimPO, length-controlled DPO).
    """

    code = "PF004"
    name = "preference-length-bias"
    severity = Severity.WARNING
    Options = LengthBiasOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dataset = DatasetCounter()
        self.longer = self.shorter = self.equal = 0
        self.chosen_chars = self.rejected_chars = 0

    def observe(self, batch: Batch) -> None:
        self.dataset.add(batch)
        for _, pair in pairs_of(batch.rows):
            chosen, rejected = len(side_text(pair.chosen)), len(side_text(pair.rejected))
            self.chosen_chars += chosen
            self.rejected_chars += rejected
            if chosen > rejected:
                self.longer += 1
            elif chosen < rejected:
                self.shorter += 1
            else:
                self.equal += 1

    def merge(self, later: LengthBias) -> None:
        self.dataset.extend(later.dataset)
        self.longer += later.longer
        self.shorter += later.shorter
        self.equal += later.equal
        self.chosen_chars += later.chosen_chars
        self.rejected_chars += later.rejected_chars

    @property
    def pairs(self) -> int:
        return self.longer + self.shorter + self.equal

    def distribution(self) -> dict[str, int]:
        return {"chosen longer": self.longer, "rejected longer": self.shorter, "same length": self.equal}

    def finish(self) -> Iterator[Finding]:
        pairs = self.pairs
        if pairs < self.options.min_pairs:
            return
        share = self.longer / pairs
        if share <= self.options.max_share:
            return
        mean_chosen, mean_rejected = self.chosen_chars / pairs, self.rejected_chars / pairs
        yield self.finding(
            self.dataset.path or "",
            None,
            f"the chosen answer is longer in {percent(share)} of {pairs} pairs (above {percent(self.options.max_share)}); "
            f"{mean_chosen:,.0f} characters on average against {mean_rejected:,.0f}: a model learns that longer wins",
            data={"share": round(share, 4), "pairs": pairs, "mean_chosen_chars": round(mean_chosen, 1),
                  "mean_rejected_chars": round(mean_rejected, 1), "distribution": self.distribution()},
        )

    def stats(self) -> dict[str, dict[str, int]]:
        return {"preference lengths": self.distribution()} if self.pairs else {}
