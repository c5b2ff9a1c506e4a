"""Output-format rules (OF): do the assistant's answers follow one output convention?

Every row's final answer (its last non-empty assistant turn) is classified as
json, json-like, code, markdown or prose by `classify_outputs`, vectorized over
a batch with polars; only answers that start like JSON are parsed in Python.

Why the last assistant turn: it is the answer a fine-tune is usually judged on,
and the turn a structured-output dataset formats; earlier turns of a multi-turn
chat are often clarifying questions in prose.

Why a fenced ```json block is `code`, not `json`: a model trained on fenced
JSON emits fences, and `json.loads` downstream fails on them; a dataset that
mixes raw and fenced JSON teaches both, which is exactly what OF001 reports.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import orjson

from curate.engine.batch import Batch
from curate.engine.findings import Finding, Severity
from curate.engine.rule import DatasetRule, RuleOptions
from curate.lightmodel import Field
from curate.rules.toolkit import LocationsByKey, final_answers, percent

if TYPE_CHECKING:
    import polars as pl


class OutputFormat(str, Enum):
    JSON = "json"
    JSON_LIKE = "json-like"
    CODE = "code"
    MARKDOWN = "markdown"
    PROSE = "prose"

    def __str__(self) -> str:
        return self.value


#: Formats a reader treats as one convention. Prose and markdown mix naturally in chat
#: answers (a list here, a heading there); json-like is JSON that failed, which is OF002's
#: business, so it counts with JSON rather than as a format of its own. Code fits a text
#: convention (see MixedOutputFormats.convention), not the other way round.
FAMILIES = {"json": "json", "json-like": "json", "code": "code", "markdown": "text", "prose": "text"}

#: Starts like a JSON object or array of structured values: `{"`, `{'`, `{}`, `{key:`, `[{`, `[[`, `["`, `[]`.
#: `[1] See the footnote` and `[a link](url)` do not; a number array is json only when it parses.
JSON_LIKE_START = r"""^(?:\{\s*(?:["'}]|[A-Za-z_][\w-]*["']?\s*:)|\[\s*[\[{"\]])"""
FENCED_BLOCK = r"(?s)(?:```|~~~).*?(?:```|~~~|\z)"
#: One line of source code: a keyword that opens a statement, a decorator, a tag, a closing
#: bracket, a call, or a line ending in `;` or `{`. Case-sensitive, so prose sentences
#: ("Return the form", "Let me check") do not match.
CODE_LINE = (
    r"^[ \t]*(?:"
    r"(?:def|class|import|return|elif|except|async|await|fn|func|function|const|let|var|public|private|protected|"
    r"static|package|using|namespace|SELECT|INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|WITH)\b"
    r"|#include\b|#define\b|from\s+[\w.]+\s+import\b|@\w+|[})\]]+[;,]?[ \t]*$"
    r"|</?[a-z][\w:-]*(?:\s+[\w:-]+=(?:\"[^\"]*\"|'[^']*'))*\s*/?>"
    r"|[\w.]+\([^)]*\)[;,]?[ \t]*$|.*[;{][ \t]*$)"
)
HEADING = r"(?m)^#{1,6}[ \t]+\S"
TABLE_SEPARATOR = r"(?m)^[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*\|[ \t|:-]*$"
LIST_ITEM = r"(?m)^[ \t]*(?:[-*+]|\d{1,3}[.)])[ \t]+\S"
#: An answer whose fenced blocks hold at least this share of its characters is code.
CODE_BLOCK_SHARE = 0.5
#: An unfenced answer of at least CODE_MIN_LINES non-blank lines, at least this share of them
#: code lines, is code. One line is not enough to tell `<noinput>` or `x = 1;` from a snippet.
CODE_LINE_SHARE = 0.6
CODE_MIN_LINES = 2


def classify_outputs(texts: pl.Series | list[str]) -> tuple[list[str], dict[int, Any]]:
    """Format of each text (`OutputFormat` values) and the parsed value of each json one, by index.

    Cheap polars string tests bucket most texts; only texts starting with `{` or `[`
    are parsed (orjson), and only answers with a code-looking line are split into lines.
    """
    import polars as pl

    frame = pl.DataFrame({"text": texts}, schema={"text": pl.String}).with_columns(pl.col("text").str.strip_chars())
    parsed, json_kinds = _json_kinds(frame["text"])
    frame = frame.lazy().with_row_index("i").with_columns(
        json_kind=pl.Series(json_kinds, dtype=pl.String),
        heading=pl.col("text").str.contains(HEADING),
        table=pl.col("text").str.contains(TABLE_SEPARATOR),
        list_items=pl.col("text").str.count_matches(LIST_ITEM),
        fenced=pl.col("text").str.contains("```|~~~"),
    ).collect()  # lazy chains are one polars call each, not one per step (~0.1 ms each, per batch)
    code = _code_rows(frame)
    kinds = frame.select(
        pl.when(pl.col("json_kind").is_not_null())
        .then(pl.col("json_kind"))
        .when(pl.col("i").is_in(code.implode()))
        .then(pl.lit("code"))
        .when(pl.col("heading") | pl.col("table") | (pl.col("list_items") >= 2) | pl.col("fenced"))
        .then(pl.lit("markdown"))
        .otherwise(pl.lit("prose"))
    ).to_series()
    return kinds.to_list(), parsed


def _json_kinds(texts: pl.Series) -> tuple[dict[int, Any], list[str | None]]:
    """Parse the texts that start with `{` or `[`: json when they parse to an object or array,
    json-like when they look like JSON but fail, None (classified later) otherwise."""
    import polars as pl

    kinds: list[str | None] = [None] * len(texts)
    parsed: dict[int, Any] = {}
    starts = pl.col("text").str.starts_with("{") | pl.col("text").str.starts_with("[")
    candidates = (
        pl.LazyFrame({"text": texts})
        .with_row_index("i")
        .filter(starts)
        .with_columns(looks=pl.col("text").str.contains(JSON_LIKE_START))
        .collect()
    )
    for index, text, looks_like_json in candidates.iter_rows():
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            if looks_like_json:
                kinds[index] = "json-like"
            continue
        if isinstance(value, (dict, list)):
            kinds[index] = "json"
            parsed[index] = value
    return parsed, kinds


def _code_rows(frame: pl.DataFrame) -> pl.Series:
    """Indexes of code answers: mostly fenced blocks, or (unfenced) mostly code lines."""
    import polars as pl

    undecided = frame.lazy().filter(pl.col("json_kind").is_null())
    fenced = (
        undecided.filter(pl.col("fenced"))
        .with_columns(
            block_chars=pl.col("text").str.extract_all(FENCED_BLOCK).list.eval(pl.element().str.len_chars()).list.sum(),
            chars=pl.col("text").str.len_chars(),
        )
        .filter(pl.col("block_chars") >= CODE_BLOCK_SHARE * pl.col("chars"))
    )
    lines = (
        undecided.filter(~pl.col("fenced") & pl.col("text").str.contains("(?m)" + CODE_LINE))
        .select("i", line=pl.col("text").str.split("\n"))
        .explode("line")
        .filter(pl.col("line").str.strip_chars() != "")
        .group_by("i")
        .agg(share=pl.col("line").str.contains(CODE_LINE).mean(), lines=pl.len())
        .filter((pl.col("share") >= CODE_LINE_SHARE) & (pl.col("lines") >= CODE_MIN_LINES))
    )
    return pl.concat([fenced.select("i"), lines.select("i")]).collect().to_series()


@dataclass
class BatchOutputs:
    """The final answers of one batch: their batch positions, formats and parsed JSON."""

    rows: list[int]
    formats: list[str]
    #: Position in `rows` -> parsed JSON value, for json answers.
    parsed: dict[int, Any] = field(default_factory=dict)


_BATCH_OUTPUTS: WeakKeyDictionary[Batch, BatchOutputs] = WeakKeyDictionary()


def batch_outputs(batch: Batch) -> BatchOutputs:
    """Classify a batch's final answers once, shared by every OF rule (and freed with the batch)."""
    cached = _BATCH_OUTPUTS.get(batch)
    if cached is None:
        cached = _BATCH_OUTPUTS[batch] = _classify_batch(batch)
    return cached


def _classify_batch(batch: Batch) -> BatchOutputs:
    answers = final_answers(batch)
    formats, parsed = classify_outputs(answers["content"])
    return BatchOutputs(answers["row"].to_list(), formats, parsed)


def distribution_text(counts: dict[str, int]) -> str:
    total = sum(counts.values()) or 1
    return ", ".join(f"{name} {percent(count / total)}" for name, count in sorted(counts.items(), key=lambda item: -item[1]))


class FormatCounts:
    """Format counts of the final answers seen so far, and the file each first came from."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.first_path: str | None = None

    def add(self, batch: Batch, outputs: BatchOutputs) -> None:
        self.counts.update(outputs.formats)
        if self.first_path is None and batch.rows:
            self.first_path = batch.rows[0].path

    def extend(self, later: FormatCounts) -> None:
        """Count what `later` counted (the answers after these)."""
        self.counts.update(later.counts)
        self.first_path = self.first_path if self.first_path is not None else later.first_path

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def share(self, formats: Iterable[str]) -> float:
        return sum(self.counts[fmt] for fmt in formats) / (self.total or 1)


class MixedOutputFormatsOptions(RuleOptions):
    dominant_share: float = Field(0.9, gt=0.5, le=1.0, description="Share of answers the dominant convention needs for the dataset to count as consistent.")
    min_outputs: int = Field(10, ge=2, description="Fewer final answers than this: too few to speak of a convention; the rule stays quiet.")
    separate_markdown: bool = Field(False, description="Count markdown and prose as different formats (by default they are one `text` convention).")
    code_in_text: bool = Field(True, description="Code answers fit a prose/markdown convention (chat assistants answer coding questions with code); prose still breaks a code convention.")


def or_list(names: list[str]) -> str:
    """`prose`, `prose or markdown`, `prose, markdown or code`."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


class MixedOutputFormats(DatasetRule):
    """Assistant answers are split across JSON, code, markdown and prose.

    ## What it does
    Classifies every row's final answer (the last assistant turn) as json,
    json-like (starts like JSON, does not parse), code (mostly a fenced block or
    code lines), markdown (headings, lists, tables) or prose. The most common
    family sets the dataset's convention: `text` (prose and markdown, which mix
    naturally; code answers fit it too, see `code-in-text`), `json` (json-like
    counts with it; OF002 reports those) or `code`. When the convention holds
    most answers, each answer outside it is reported, naming the convention and
    its share. When it covers less than `dominant-share` (default 90%), one
    dataset-level finding also gives the distribution. A fenced ```json block
    counts as code: a model trained on it emits the fences.

    ## Why is this bad
    A fine-tune copies the output format of its data. A handful of JSON answers
    in a prose support set, or prose apologies in a JSON extraction set, teach
    the model to switch format unpredictably, and the parser downstream breaks.

    ## Example
    ```jsonl
    {"messages": [{"role": "user", "content": "Order status?"}, {"role": "assistant", "content": "Your order shipped today."}]}
    {"messages": [{"role": "user", "content": "Order status?"}, {"role": "assistant", "content": "{\\"status\\": \\"shipped\\"}"}]}
    ```

    ## Use instead
    Pick one output format per dataset (or per clearly separated task) and
    rewrite the stray answers into it.
    """

    code = "OF001"
    name = "mixed-output-formats"
    severity = Severity.WARNING
    Options = MixedOutputFormatsOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen = FormatCounts()
        self.locations = LocationsByKey()  # by output format

    def family(self, fmt: str) -> str:
        if self.options.separate_markdown and fmt in ("prose", "markdown"):
            return fmt
        return FAMILIES[fmt]

    def convention(self) -> list[str]:
        """The formats the dataset's convention accepts, most common first: the largest family,
        plus code when that family is text and `code-in-text` is on."""
        counts = self.seen.counts
        families: Counter[str] = Counter()
        for fmt, count in counts.items():
            families[self.family(fmt)] += count
        dominant = families.most_common(1)[0][0]
        fits_text = dominant in ("text", "prose", "markdown") and self.options.code_in_text
        return [fmt for fmt, _ in counts.most_common() if self.family(fmt) == dominant or (fmt == "code" and fits_text)]

    def observe(self, batch: Batch) -> None:
        outputs = batch_outputs(batch)
        self.seen.add(batch, outputs)
        self.locations.add(batch, outputs.formats, outputs.rows)

    def merge(self, later: MixedOutputFormats) -> None:
        self.seen.extend(later.seen)
        self.locations.extend(later.locations)

    def finish(self) -> Iterator[Finding]:
        total = self.seen.total
        if total < self.options.min_outputs:
            return
        accepted = self.convention()
        share = self.seen.share(accepted)
        if share == 1:
            return
        formats = dict(self.seen.counts.most_common())
        if share > 0.5:
            for fmt, locations in self.locations.frozen().items():
                if fmt in accepted:
                    continue
                shown = f"{fmt} (does not parse)" if fmt == "json-like" else fmt
                message = f"assistant output is {shown}; {percent(share)} of outputs are {or_list(accepted)}"
                data = {"format": fmt, "convention": accepted, "share": round(share, 4), "formats": formats}
                for path_id, line in zip(locations.path_of.tolist(), locations.line_of.tolist()):
                    yield self.finding(locations.paths[path_id], line, message, data=data)
        if share < self.options.dominant_share:
            yield self.finding(
                self.seen.first_path or "",
                None,
                f"no output format reaches {percent(self.options.dominant_share)} of {total} answers: {distribution_text(formats)}",
                data={"distribution": formats, "dominant_share": self.options.dominant_share},
            )

    def stats(self) -> dict[str, dict[str, int]]:
        return {"output formats": dict(self.seen.counts.most_common())} if self.seen.total else {}


class InvalidJsonOutputOptions(RuleOptions):
    json_share: float = Field(0.5, gt=0.0, le=1.0, description="Share of final answers that must be json or json-like for the dataset to count as JSON-output.")


class InvalidJsonOutput(DatasetRule):
    """In a JSON-output dataset, an answer that starts like JSON but does not parse.

    ## What it does
    When at least `json-share` (default 50%) of final answers are JSON or look
    like it, reports each answer that starts like a JSON object or array but
    fails to parse, with the parser's message and its line, column and character
    position: truncated objects, trailing commas, single quotes, unquoted keys,
    text after the closing brace.

    ## Why is this bad
    The model learns the broken syntax along with the rest, and the application
    that parses its output fails on exactly the cases the data taught.

    ## Example
    ```jsonl
    {"messages": [{"role": "user", "content": "Plan?"}, {"role": "assistant", "content": "{\\"plan\\": \\"family\\", \\"seats\\": 5,}"}]}
    ```

    ## Use instead
    ```jsonl
    {"messages": [{"role": "user", "content": "Plan?"}, {"role": "assistant", "content": "{\\"plan\\": \\"family\\", \\"seats\\": 5}"}]}
    ```
    """

    code = "OF002"
    name = "invalid-json-output"
    severity = Severity.ERROR
    Options = InvalidJsonOutputOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seen = FormatCounts()
        self.broken: list[tuple[str, int, str, dict[str, Any]]] = []

    def observe(self, batch: Batch) -> None:
        outputs = batch_outputs(batch)
        self.seen.add(batch, outputs)
        broken = [position for position, fmt in zip(outputs.rows, outputs.formats) if fmt == "json-like"]
        for position in broken:
            row = batch.rows[position]
            message, data = json_error(_last_answer(row).strip())
            self.broken.append((row.path, row.line, message, data))

    def merge(self, later: InvalidJsonOutput) -> None:
        self.seen.extend(later.seen)
        self.broken += later.broken

    def finish(self) -> Iterator[Finding]:
        share = self.seen.share(("json", "json-like"))
        if not self.broken or share < self.options.json_share:
            return
        for path, line, message, data in self.broken:
            yield self.finding(path, line, message, data={**data, "json_share": round(share, 4)})


def _last_answer(row) -> str:
    """The text the classifier saw: the last non-empty assistant turn."""
    for message in reversed(row.conversation.messages):
        if message.valid and message.role == "assistant" and message.content.strip():
            return message.content
    return ""


def json_error(text: str) -> tuple[str, dict[str, Any]]:
    """The standard library parser's complaint about `text`, as a message and data."""
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return (
            f"assistant output is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno} (char {exc.pos})",
            {"error": exc.msg, "line": exc.lineno, "column": exc.colno, "char": exc.pos},
        )
    # orjson is stricter than json (NaN, Infinity, lone surrogates); say what it rejects.
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        return f"assistant output is not valid JSON: {exc.msg} (char {exc.pos})", {"error": exc.msg, "char": exc.pos}
    return "assistant output is not valid JSON", {}


JSON_TYPES: dict[type, str] = {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
#: How deep the schema of an answer is followed, and how many items of an array are looked at.
MAX_SCHEMA_DEPTH = 4
MAX_ARRAY_ITEMS = 50


@dataclass(frozen=True, slots=True)
class JsonShape:
    """The schema of one JSON answer: the type at every path (`order.items[].sku`) and the
    key set of every object. Hashable, so answers with one schema share one entry."""

    types: frozenset[tuple[str, str]]
    keys: frozenset[tuple[str, frozenset[str]]]


def json_shape(value: Any) -> JsonShape:
    types: set[tuple[str, str]] = set()
    keys: set[tuple[str, frozenset[str]]] = set()
    _walk_json(value, "", 0, types, keys)
    return JsonShape(frozenset(types), frozenset(keys))


def _walk_json(value: Any, path: str, depth: int, types: set, keys: set) -> None:
    kind = JSON_TYPES.get(type(value), "string")
    types.add((path, kind))
    if depth >= MAX_SCHEMA_DEPTH:
        return
    if kind == "object":
        keys.add((path, frozenset(value)))
        for key, item in value.items():
            _walk_json(item, f"{path}.{key}" if path else key, depth + 1, types, keys)
    elif kind == "array":
        for item in value[:MAX_ARRAY_ITEMS]:
            _walk_json(item, f"{path}[]", depth + 1, types, keys)


def child_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def shown_path(path: str) -> str:
    return f'"{path}"' if path else "the output"


@dataclass
class DominantSchema:
    """What most JSON answers agree on: the expected type of each path, and per object path
    the keys nearly every answer has (`required`) and the keys nearly none has (`rare`)."""

    types: dict[str, str] = field(default_factory=dict)
    required: dict[str, set[str]] = field(default_factory=dict)
    rare: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def infer(cls, shapes: dict[JsonShape, int], share: float, min_rows: int) -> DominantSchema:
        """Count rows per path, type and key (each answer once), then keep what `share` of them agree on.
        Paths seen in fewer than `min_rows` answers are too rare to have an expectation."""
        path_rows: Counter[str] = Counter()
        type_rows: Counter[tuple[str, str]] = Counter()
        object_rows: Counter[str] = Counter()
        key_rows: Counter[tuple[str, str]] = Counter()
        for shape, rows in shapes.items():
            for path, kind in shape.types:
                type_rows[path, kind] += rows
            for path in {path for path, _ in shape.types}:
                path_rows[path] += rows
            keys_by_path: dict[str, set[str]] = {}
            for path, keys in shape.keys:
                keys_by_path.setdefault(path, set()).update(keys)
            for path, keys in keys_by_path.items():
                object_rows[path] += rows
                for key in keys:
                    key_rows[path, key] += rows
        schema = cls()
        for (path, kind), rows in type_rows.items():
            if path_rows[path] >= min_rows and rows >= share * path_rows[path]:
                schema.types[path] = kind
        for (path, key), rows in key_rows.items():
            if object_rows[path] < min_rows:
                continue
            if rows >= share * object_rows[path]:
                schema.required.setdefault(path, set()).add(key)
            elif rows <= (1 - share) * object_rows[path]:
                schema.rare.setdefault(path, set()).add(key)
        return schema

    def drift(self, shape: JsonShape) -> dict[str, list]:
        """Missing and extra keys and changed types of one answer, as sorted lists (empty: no drift)."""
        missing: set[str] = set()
        extra: set[str] = set()
        for path, keys in shape.keys:
            missing.update(child_path(path, key) for key in self.required.get(path, set()) - keys)
            extra.update(child_path(path, key) for key in self.rare.get(path, set()) & keys)
        changed = sorted(
            (path, kind, self.types[path]) for path, kind in shape.types if path in self.types and kind != self.types[path]
        )
        return {"missing": sorted(missing), "extra": sorted(extra), "types": changed}


def drift_message(drift: dict[str, list]) -> str:
    """`missing "eta_days"; "order_id" is string, expected number`."""
    parts = []
    if drift["missing"]:
        parts.append("missing " + ", ".join(f'"{path}"' for path in drift["missing"]))
    if drift["extra"]:
        parts.append("extra " + ", ".join(f'"{path}"' for path in drift["extra"]))
    parts += [f"{shown_path(path)} is {kind}, expected {expected}" for path, kind, expected in drift["types"]]
    return "; ".join(parts)


class JsonSchemaDriftOptions(RuleOptions):
    dominant_share: float = Field(0.9, gt=0.5, le=1.0, description="Share of JSON answers that must agree on a key or a type for it to be part of the dominant schema; keys in at most 1 - this share are extra.")
    min_outputs: int = Field(10, ge=2, description="Fewer parsed JSON answers (or objects at a path) than this: no schema is inferred.")


class JsonSchemaDrift(DatasetRule):
    """JSON answers whose keys or value types differ from the dataset's dominant schema.

    ## What it does
    Infers the schema most JSON answers share: the type at every path (nested
    objects and the elements of arrays included, e.g. `items[].sku`), the keys
    at least `dominant-share` (default 90%) of objects carry, and the keys almost
    none carry. Reports each answer that misses an expected key, carries a rare
    extra key, or holds another type (a number as a string, an object as null),
    naming the keys. Keys in between are optional and never reported.

    ## Why is this bad
    A fine-tune for structured output learns the schema from its data; a few
    rows with `"order_id": "48213"` or `eta` for `eta_days` teach it to drift, and
    the consumer's validation fails in production.

    ## Example
    ```jsonl
    {"messages": [{"role": "user", "content": "Status?"}, {"role": "assistant", "content": "{\\"order_id\\": 48213, \\"eta_days\\": 2}"}]}
    {"messages": [{"role": "user", "content": "Status?"}, {"role": "assistant", "content": "{\\"order_id\\": \\"48214\\"}"}]}
    ```

    ## Use instead
    Make every answer follow the one schema (validate with a JSON Schema when
    generating the data).
    """

    code = "OF003"
    name = "json-schema-drift"
    severity = Severity.WARNING
    Options = JsonSchemaDriftOptions

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shapes: dict[JsonShape, list[tuple[str, int]]] = {}

    def observe(self, batch: Batch) -> None:
        outputs = batch_outputs(batch)
        for index, value in outputs.parsed.items():
            row = batch.rows[outputs.rows[index]]
            self.shapes.setdefault(json_shape(value), []).append((row.path, row.line))

    def merge(self, later: JsonSchemaDrift) -> None:
        for shape, rows in later.shapes.items():
            self.shapes.setdefault(shape, []).extend(rows)

    def finish(self) -> Iterator[Finding]:
        counts = {shape: len(locations) for shape, locations in self.shapes.items()}
        if sum(counts.values()) < self.options.min_outputs:
            return
        schema = DominantSchema.infer(counts, self.options.dominant_share, self.options.min_outputs)
        for shape, locations in self.shapes.items():
            drift = schema.drift(shape)
            if not any(drift.values()):
                continue
            message = drift_message(drift)
            data = {
                "missing": drift["missing"],
                "extra": drift["extra"],
                "types": [{"key": path, "found": kind, "expected": expected} for path, kind, expected in drift["types"]],
            }
            for path, line in locations:
                yield self.finding(path, line, message, data=data)
