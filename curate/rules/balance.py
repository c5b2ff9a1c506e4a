"""Balance rules (BL): is the dataset big enough, and are its classes and refusals in proportion?

All three are dataset rules: they count while the rows stream by and report once,
with `line: null` and the distribution in the finding's `data` (the text report
draws it as a bar chart). Several files linted together count as one dataset.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from curate.engine.batch import Batch
from curate.engine.findings import Finding, Location, Severity
from curate.engine.rule import DatasetRule, RuleOptions
from curate.formats import FORMAT_KEYS
from curate.lightmodel import Field, field_validator
from curate.rules.toolkit import DatasetCounter, final_answers, percent

if TYPE_CHECKING:
    import polars as pl

#: A label field with more distinct values than this is an identifier or free text, not classes.
MAX_TRACKED_LABELS = 1000
#: Whitespace allowed around a short answer before it is taken for free text without a closer look.
SURROUNDING_WHITESPACE_BYTES = 64


class BoundedCounter(Counter):
    """A Counter that gives up (and empties) once it holds more than `limit` keys."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.overflowed = False

    def add(self, values: dict[str, int]) -> None:
        if self.overflowed:
            return
        self.update(values)
        if len(self) > self.limit:
            self.overflowed = True
            self.clear()

    def __reduce__(self):  # Counter's pickles the counts as the first argument, here the limit
        return type(self), (self.limit,), {"overflowed": self.overflowed}, None, iter(self.items())

    def extend(self, later: BoundedCounter) -> None:
        """Count what `later` counted (the rows after these): given up if either gave up, or if
        together they hold more than `limit` keys, as one counter over all the rows would be."""
        if later.overflowed:
            self.overflowed = True
            self.clear()
        else:
            self.add(later)


def label_values(value: Any) -> list[str]:
    """The class labels in a label field: a scalar, or a list of scalars (multi-label)."""
    if isinstance(value, bool):
        return [str(value).lower()]
    if isinstance(value, (str, int, float)):
        text = str(value).strip()
        return [text] if text else []
    if isinstance(value, list):
        return [label for item in value if not isinstance(item, (list, dict)) for label in label_values(item)]
    return []


def answer_labels(answers: pl.Series, options: ClassImbalanceOptions) -> pl.Series:
    """Each answer as a class label (stripped, trailing `.`/`!` dropped, lower case), or null
    when it is too long to be one. A byte-length test first drops the long answers, so only
    short ones are normalized. BL001 counts these; `curate eval` compares them."""
    import polars as pl

    most_bytes = 4 * options.max_answer_chars + SURROUNDING_WHITESPACE_BYTES
    label = pl.col("content").str.strip_chars().str.strip_chars_end(".!").str.strip_chars().str.to_lowercase()
    short = (pl.col("label").str.len_chars() <= options.max_answer_chars) & (pl.col("label").str.count_matches(r"\S+") <= options.max_answer_words)
    frame = pl.DataFrame({"content": answers}, schema={"content": pl.String})
    frame = frame.with_columns(label=pl.when(pl.col("content").str.len_bytes() <= most_bytes).then(label))
    return frame.select(pl.when(short).then(pl.col("label"))).to_series().rename("label")


def label_set(distribution: dict[str, int], answers: int, options: ClassImbalanceOptions) -> bool:
    """Do these short-answer counts read as classes? BL001's test: at least two and at most
    `max-classes` distinct labels, covering `min-coverage` of the answers."""
    short = sum(distribution.values())
    return bool(answers) and short >= options.min_coverage * answers and 2 <= len(distribution) <= options.max_classes


class ClassImbalanceOptions(RuleOptions):
    label_fields: list[str] = Field(["label", "labels", "category", "class"], description="Top-level row fields that hold a class label (the one present in most rows is used).")
    min_share: float = Field(0.10, gt=0.0, lt=0.5, description="A class below this share of labelled rows is a minority; with many classes the bar is lowered to half an even share.")
    max_share: float = Field(0.9, gt=0.0, le=1.0, description="A class above this share of labelled rows dominates.")
    min_rows: int = Field(50, ge=2, description="Fewer labelled rows than this: too few to judge the balance.")
    max_classes: int = Field(20, ge=2, description="Assistant answers are read as labels only when they take at most this many distinct values.")
    max_answer_words: int = Field(4, ge=1, description="Assistant answers longer than this many words are free text, not labels.")
    max_answer_chars: int = Field(32, ge=1, description="Assistant answers longer than this many characters are free text, not labels.")
    min_coverage: float = Field(0.9, gt=0.0, le=1.0, description="Share of answers that must be short for the answers to be read as labels.")


class ClassImbalance(DatasetRule):
    """Class labels are heavily imbalanced.

    ## What it does
    Finds the dataset's class labels: a top-level `label`, `labels`, `category`
    or `class` field (see `label-fields`; lists count as several labels), or,
    when there is none, final assistant answers drawn from a small set of short
    values (at most `max-classes` distinct answers of at most `max-answer-words`
    words, covering `min-coverage` of the rows, as in classification data).
    Reports the distribution and fires when a class holds less than `min-share`
    (default 10%, lowered to half an even share when there are many classes, so
    twelve balanced classes are fine) or the largest more than `max-share`.
    Stays quiet on free-text answers and below `min-rows` labelled rows.

    ## Why is this bad
    A fine-tune learns the prior of its data: a class seen in 2% of rows is
    rarely predicted, and a 95/5 split lets the model score 95% by always
    answering the majority class.

    ## Example
    ```jsonl
    {"label": "billing", "messages": [...]}    (x 240)
    {"label": "escalate", "messages": [...]}   (x 3)
    ```

    ## Use instead
    Collect or synthesize more rows of the minority classes, downsample the
    majority, or weight the loss; then lint again.
    """

    code = "BL001"
    name = "class-imbalance"
    severity = Severity.WARNING
    Options = ClassImbalanceOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dataset = DatasetCounter()
        self.field_labels = {name: BoundedCounter(MAX_TRACKED_LABELS) for name in self.options.label_fields}
        self.field_rows: Counter[str] = Counter()
        self.answer_labels = BoundedCounter(self.options.max_classes)
        self.answers = 0
        self.short_answers = 0

    def observe(self, batch: Batch) -> None:
        self.dataset.add(batch)
        self._observe_fields(batch)
        self._observe_answers(batch)

    def _observe_fields(self, batch: Batch) -> None:
        """One pass over the rows; most rows have none of the label fields, and a set test says so:
        on the conversation's `meta` (the row's keys besides its format's, mostly an empty dict,
        a cache miss nearer than the row's own keys), unless a label field is a key of the row's
        format itself (KTO's `label`)."""
        names = set(self.field_labels)
        format_named = {fmt for fmt, keys in FORMAT_KEYS.items() if not names.isdisjoint(keys)}
        found: dict[str, Counter[str]] = {name: Counter() for name in names}
        for row in batch.rows:
            conversation = row.conversation
            if conversation is None or ((not conversation.meta or names.isdisjoint(conversation.meta)) and row.format not in format_named):
                continue
            obj = row.obj
            if not isinstance(obj, dict) or names.isdisjoint(obj):
                continue
            for name in names.intersection(obj):
                labels = label_values(obj[name])
                if labels:
                    self.field_rows[name] += 1
                    found[name].update(set(labels))
        for name, counts in found.items():
            if counts:
                self.field_labels[name].add(counts)

    def _observe_answers(self, batch: Batch) -> None:
        """Count short final answers, normalized (case, trailing period) so `Positive.` is `positive`.
        A byte-length test first drops the long answers, so only short ones are normalized."""
        import polars as pl

        answers = final_answers(batch)
        short = answer_labels(answers["content"], self.options).drop_nulls().to_frame("label")
        self.answers += answers.height
        self.short_answers += short.height
        if short.height:
            self.answer_labels.add(dict(short["label"].value_counts().iter_rows()))

    def labels(self) -> tuple[str, dict[str, int], int] | None:
        """(source, distribution, labelled rows): a label field if any row has one, else short answers."""
        fields = [(rows, name) for name, rows in self.field_rows.items() if rows and not self.field_labels[name].overflowed]
        if fields:
            rows, name = max(fields, key=lambda item: (item[0], -self.options.label_fields.index(item[1])))
            return f"`{name}`", dict(self.field_labels[name].most_common()), rows
        if not self.answer_labels.overflowed and label_set(self.answer_labels, self.answers, self.options):
            return "assistant answers", dict(self.answer_labels.most_common()), self.short_answers
        return None

    def merge(self, later: ClassImbalance) -> None:
        self.dataset.extend(later.dataset)
        for name, labels in self.field_labels.items():
            labels.extend(later.field_labels[name])
        self.field_rows.update(later.field_rows)
        self.answer_labels.extend(later.answer_labels)
        self.answers += later.answers
        self.short_answers += later.short_answers

    def finish(self) -> Iterator[Finding]:
        found = self.labels()
        if found is None:
            return
        source, distribution, rows = found
        if rows < self.options.min_rows or len(distribution) < 2:
            return
        threshold = min(self.options.min_share, 0.5 / len(distribution))
        minorities = [(label, count) for label, count in distribution.items() if count < threshold * rows]
        top_label, top_count = next(iter(distribution.items()))
        problems = []
        if minorities:
            named = ", ".join(f'"{label}" {percent(count / rows)}' for label, count in sorted(minorities, key=lambda item: item[1])[:3])
            more = f" and {len(minorities) - 3} more" if len(minorities) > 3 else ""
            problems.append(f"minority {'class' if len(minorities) == 1 else 'classes'} {named}{more} (below {percent(threshold)})")
        if top_count > self.options.max_share * rows:
            problems.append(f'"{top_label}" holds {percent(top_count / rows)} (above {percent(self.options.max_share)})')
        if not problems:
            return
        message = f"labels in {source} are imbalanced over {rows} rows: " + "; ".join(problems)
        if minorities and top_count <= self.options.max_share * rows:
            message += f'; largest "{top_label}" {percent(top_count / rows)}'
        yield self.finding(
            self.dataset.path or "",
            None,
            message,
            data={
                "distribution": distribution,
                "source": source.strip("`"),
                "rows": rows,
                "minority": [label for label, _ in minorities],
                "threshold": round(threshold, 4),
            },
        )

    def stats(self) -> dict[str, dict[str, int]]:
        found = self.labels()
        return {"labels": found[1]} if found else {}


#: Phrases that open or carry a refusal. Verbs are listed so that "I'm unable to find your
#: order" (an answer) and "Sorry for the wait, here is..." (an apology) do not match.
REFUSAL_VERBS = r"(?:help|assist|provide|comply|fulfil+|do that|answer|share|create|generate|write|engage|support that)"
DEFAULT_REFUSAL_PATTERNS = [
    r"\bI(?:['’]m| am) (?:so |very |really )?sorry,? but I (?:can(?:not|['’]t)|am unable|won['’]t|(?:['’]m|am) not able)",
    r"\bI (?:can(?:not|['’]t)|won['’]t|will not) " + REFUSAL_VERBS + r"\b",
    r"\bI(?:['’]m| am) (?:unable|not able) to " + REFUSAL_VERBS + r"\b",
    r"\bI(?:['’]m| am) not (?:allowed|permitted) to\b",
    r"\bas an AI\b",
    r"\bI (?:must|have to) (?:decline|refuse)\b",
    r"\b(?:against|violates?) (?:my|our|the) (?:guidelines|policies|policy|programming|usage polic(?:y|ies))\b",
]


def refusal_pattern(patterns: list[str] | None = None) -> str | None:
    """One case-insensitive regex for the refusal patterns (default: BL002's), or None if empty."""
    patterns = DEFAULT_REFUSAL_PATTERNS if patterns is None else patterns
    return "(?i)(?:" + "|".join(f"(?:{pattern})" for pattern in patterns) + ")" if patterns else None


class RefusalOverrepresentationOptions(RuleOptions):
    patterns: list[str] = Field(default_factory=lambda: list(DEFAULT_REFUSAL_PATTERNS), description="Regular expressions (case-insensitive) that mark a refusal in an assistant turn.")
    extra_patterns: list[str] = Field(default_factory=list, description="More refusal patterns, added to `patterns`.")
    max_share: float = Field(0.2, ge=0.0, le=1.0, description="Share of rows with a refusal above which the rule fires.")
    min_rows: int = Field(20, ge=1, description="Fewer rows with an assistant turn than this: too few to judge.")
    examples: int = Field(5, ge=1, le=50, description="How many refusing rows the finding names.")

    @field_validator("patterns", "extra_patterns")
    @classmethod
    def _compiles(cls, patterns: list[str]) -> list[str]:
        import polars as pl

        probe = pl.Series([""])
        for pattern in patterns:
            try:
                probe.str.contains(pattern)
            except pl.exceptions.ComputeError as exc:
                reasons = [line.removeprefix("error: ") for line in str(exc).splitlines() if line.startswith("error: ")]
                reason = reasons[0] if reasons else "not a valid Rust regex"
                raise ValueError(f"invalid regular expression {pattern!r}: {reason}") from None
        return patterns


class RefusalOverrepresentation(DatasetRule):
    """Too many rows where the assistant refuses.

    ## What it does
    Looks for refusals in every assistant turn ("I'm sorry, but I can't",
    "I cannot help with", "As an AI", "I'm unable to assist", "against my
    guidelines"; see `patterns` and `extra-patterns`) and fires when the share of
    rows with one is above `max-share` (default 20%), naming a few of them.
    Apologies that go on to help ("Sorry for the wait, here is...") do not count.

    ## Why is this bad
    Refusal-heavy data (often distilled from a cautious model) teaches the
    fine-tune to refuse harmless requests; the effect is well documented as
    over-refusal and is hard to train away afterwards.

    ## Example
    ```jsonl
    {"messages": [{"role": "user", "content": "Summarize this contract."}, {"role": "assistant", "content": "I'm sorry, but I can't help with legal documents."}]}
    ```

    ## Use instead
    Keep refusals for requests that deserve them and replace the rest with real
    answers, or drop them.
    """

    code = "BL002"
    name = "refusal-overrepresentation"
    severity = Severity.WARNING
    Options = RefusalOverrepresentationOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pattern = refusal_pattern([*self.options.patterns, *self.options.extra_patterns])
        self.dataset = DatasetCounter()
        self.rows = 0
        self.refusals = 0
        self.examples: list[tuple[str, int, str]] = []

    def observe(self, batch: Batch) -> None:
        import polars as pl

        assistant = batch.messages.filter(pl.col("role") == "assistant")
        self.rows += assistant["row"].n_unique()
        self.dataset.add(batch)
        if self.pattern is None or assistant.height == 0:
            return
        hits = (
            assistant.lazy()
            .filter(pl.col("content").str.contains(self.pattern))
            .unique(subset="row", keep="first", maintain_order=True)
            .select("row", phrase=pl.col("content").str.extract(self.pattern, 0))
            .collect()
        )
        self.refusals += hits.height
        for position, phrase in hits.head(self.options.examples - len(self.examples)).iter_rows():
            row = batch.rows[position]
            self.examples.append((row.path, row.line, phrase))

    def merge(self, later: RefusalOverrepresentation) -> None:
        self.dataset.extend(later.dataset)
        self.rows += later.rows
        self.refusals += later.refusals
        self.examples = (self.examples + later.examples)[: self.options.examples]

    def finish(self) -> Iterator[Finding]:
        if self.rows < self.options.min_rows or not self.refusals:
            return
        share = self.refusals / self.rows
        if share <= self.options.max_share:
            return
        lines = ", ".join(str(line) for _, line, _ in self.examples)
        _, first_line, first_phrase = self.examples[0]
        yield self.finding(
            self.dataset.path or "",
            None,
            f"{percent(share)} of rows ({self.refusals} of {self.rows}) have a refusal in an assistant turn, "
            f"above {percent(self.options.max_share)}; e.g. lines {lines} (line {first_line}: \"{first_phrase}\")",
            related=[Location(path, line) for path, line, _ in self.examples],
            data={
                "share": round(share, 4),
                "refusals": self.refusals,
                "rows": self.rows,
                "examples": [{"path": path, "line": line, "text": phrase} for path, line, phrase in self.examples],
                "distribution": {"refusal": self.refusals, "answer": self.rows - self.refusals},
            },
        )


class TooFewExamplesOptions(RuleOptions):
    min_rows: int = Field(200, ge=1, description="Rows (with a readable conversation) a useful fine-tune needs at least.")


class TooFewExamples(DatasetRule):
    """Fewer rows than a useful fine-tune needs.

    ## What it does
    Counts the rows that hold a readable conversation and fires when there are
    fewer than `min-rows` (default 200).

    ## Why is this bad
    With a few dozen examples a LoRA fine-tune either barely moves the model or
    memorizes the rows; the eval split is too small to tell which happened.

    ## Example
    A `train.jsonl` with 60 conversations.

    ## Use instead
    Collect more rows (a few hundred at least; thousands for a new skill), or
    lower `min-rows` when a tiny set is deliberate (a smoke test).
    """

    code = "BL003"
    name = "too-few-examples"
    severity = Severity.WARNING
    Options = TooFewExamplesOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.dataset = DatasetCounter()

    def observe(self, batch: Batch) -> None:
        self.dataset.add(batch)

    def merge(self, later: TooFewExamples) -> None:
        self.dataset.extend(later.dataset)

    def finish(self) -> Iterator[Finding]:
        rows, minimum = self.dataset.rows, self.options.min_rows
        if self.dataset.path is None:
            return  # nothing was read; the runner reports empty or unreadable input itself
        if rows < minimum:
            yield self.finding(
                self.dataset.path or "",
                None,
                f"only {rows} {'row' if rows == 1 else 'rows'}; a useful fine-tune needs at least {minimum}",
                data={"rows": rows, "min_rows": minimum},
            )
