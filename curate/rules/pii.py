"""QL006 pii-or-secret: personal data and credentials in training text.

The detectors (phone shapes, Luhn, key formats, redaction, the masker every quoted excerpt goes
through) are a small library of their own in `curate/text/secrets.py`. Findings never carry a
full secret: messages and `data` hold redacted previews only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from curate.engine.batch import Batch, Row
from curate.engine.findings import Finding, Severity
from curate.engine.rule import Fix, RowRule, RuleOptions
from curate.formats import Message
from curate.lightmodel import Field
from curate.rules.toolkit import candidate_messages, declare_screen, locate, redact_strings
from curate.text.secrets import KINDS, PII_PREFILTER, PREFILTER_RE, Detector, Hit, Kind


class PiiOptions(RuleOptions):
    kinds: list[Kind] = Field(default_factory=lambda: list(KINDS), description="What to look for: email, phone, card, api-key, private-key.")
    allow: list[str] = Field(
        default_factory=list,
        description="Accepted values besides the reserved example domains and git SSH remotes: an email domain (and its subdomains), or an exact email, number or key.",
    )
    redact: bool = Field(False, description="`curate fix` replaces what is found by typed tokens such as [EMAIL] and [API_KEY] (`curate fix --redact-pii` sets it).")


class PiiOrSecret(RowRule):
    """Content holds personal data or a credential: email, phone, card number, API key.

    ## What it does
    Reports messages containing email addresses, phone numbers (international
    `+44 20 7946 0958` and US `(415) 555-2671` / `415-555-2671` shapes; not
    dates, versions, IP addresses, or numbers labelled as order, ticket or
    account ids), payment card numbers (13-19 digits, a known issuer prefix,
    Luhn-checked), API keys and tokens (OpenAI and Anthropic `sk-`, Stripe
    `sk_live_`, AWS `AKIA`, GitHub `ghp_` / `github_pat_`, Slack `xox?-`,
    Google `AIza`) and private key blocks, in every string the chat template
    renders (content, tool call arguments, names, reasoning) and in the row's
    other fields (ids, metadata). Obvious placeholders
    (`sk-xxxx...`, AWS's `AKIAIOSFODNN7EXAMPLE`), addresses at reserved example
    domains and the fictional 555-0100..0199 numbers are not reported. Findings
    show a redacted preview (`sk-pr…aSg`), never the full value.

    ## Why is this bad
    Models memorize rare strings: a fine-tune can repeat a customer's email
    or a live key verbatim to anyone who prompts the right way, and shipping
    personal data in a training set may break privacy law on its own.

    ## Example
    ```jsonl
    {"messages": [{"role": "user", "content": "Confirm my email"}, {"role": "assistant", "content": "Invoices now go to jonas.berg@outlook.com."}]}
    ```

    ## Use instead
    Replace with placeholders that keep the shape: `Invoices now go to
    customer@example.com.` Rotate any real key that reached the data. Options:
    `kinds` limits what is searched; `allow` accepts domains or exact values.
    """

    code = "QL006"
    name = "pii-or-secret"
    severity = Severity.WARNING
    Options = PiiOptions
    #: A keep is about the row, not a verdict on its secrets: a kept or edited row is still
    #: redacted, and only waiving the finding itself exempts it.
    settled_by_keep = False

    def fix(self, finding: Finding) -> Fix | None:
        """With the `redact` option every string of the row is redacted with this rule's detectors."""
        return Fix.rewrite("redacted", self.redact_row, stage=1) if self.options.redact else None

    def redact_row(self, obj: Any) -> Any:
        redacted, replaced = redact_strings(obj, self.redact_text)
        return redacted if replaced else obj

    def setup(self) -> None:
        self.detector = Detector(self.options.kinds, self.options.allow)
        self.hits = self.detector.hits
        self.redact_text = self.detector.redact_text
        declare_screen(PII_PREFILTER)

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        import polars as pl

        for row, message in candidate_messages(batch, screen=PII_PREFILTER):
            yield from self.check_message(row, message)
        rendered_fields = (pl.col("calls") + pl.col("fields")).str.contains(PII_PREFILTER)
        for row, message in candidate_messages(batch, (pl.col("calls") != "") | (pl.col("fields") != ""), rendered_fields):
            for name, value in (message.fields or {}).items():
                yield from self.check_value(row, f"{message.where}: {name}", value, {"message_index": message.index, "role": message.role})
        for row, extra in rows_with_extra_fields_matching(batch, PII_PREFILTER):
            for name, value in extra.items():
                yield from self.check_value(row, f"`{name}`", value, {})

    def check_message(self, row: Row, message: Message) -> Iterator[Finding]:
        hits = self.hits(message.content)
        if hits:
            named, _ = locate(row, message, hits[0].start)
            yield self.message_finding(row, named, self.describe(hits), data=self.hit_data(hits))

    def check_value(self, row: Row, where: str, value: Any, data: dict[str, Any]) -> Iterator[Finding]:
        """A finding for the strings of a JSON value (tool call arguments, metadata) holding PII."""
        texts = [text for text in strings_of(value) if PREFILTER_RE.search(text)]
        hits = [hit for text in texts for hit in self.hits(text)]
        if hits:
            yield self.row_finding(row, f"{where}: {self.describe(hits)}", data={**data, **self.hit_data(hits), "source": where})

    @staticmethod
    def describe(hits: list[Hit]) -> str:
        listed = ", ".join(f"{hit.label} {hit.preview}" for hit in hits[:3])
        return listed + (f" and {len(hits) - 3} more" if len(hits) > 3 else "")

    @staticmethod
    def hit_data(hits: list[Hit]) -> dict[str, Any]:
        return {"kinds": sorted({hit.kind for hit in hits}), "previews": [hit.preview for hit in hits]}


def rows_with_extra_fields_matching(batch: Batch, pattern: str) -> Iterator[tuple[Row, dict[str, Any]]]:
    """(row, its extra fields: meta keys and `tools`) for the rows whose extra fields, as JSON,
    match `pattern`; one orjson dump per row and one vectorized polars search for the batch."""
    import orjson
    import polars as pl

    rows, extras, texts = [], [], []
    for row in batch.rows:
        conversation = row.conversation
        if conversation is not None and (conversation.meta or conversation.tools):
            extra = {**conversation.meta, "tools": conversation.tools} if conversation.tools else conversation.meta
            rows.append(row)
            extras.append(extra)
            texts.append(orjson.dumps(extra, default=str).decode())
    if not texts:
        return
    for position in pl.Series(texts, dtype=pl.String).str.contains(pattern).arg_true().to_list():
        yield rows[position], extras[position]


def strings_of(value: Any) -> Iterator[str]:
    """Every string in a JSON value (keys left out)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from strings_of(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_of(item)
