"""Chat template rules (CT): does each row survive the model's chat template intact?

They need `--model` (a tokenizer folder or a hub name already in the local cache). The template
is loaded and compiled once per run (a shared resource), each batch is rendered once for all CT
row rules, and the rendered texts a cheap bound cannot rule out for CT003 are tokenized with one
`encode_batch` per batch.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import Field

from curate.engine.batch import Batch, Row
from curate.engine.findings import Finding, Severity
from curate.engine.rule import DatasetRule, RowRule, RuleOptions, RuleSetupError, RunContext
from curate.formats import MESSAGE_KEYS, Message
from curate.templates import ChatTemplate, RenderError, Span, TemplateBudgetExhausted, TemplateError

if TYPE_CHECKING:
    from tokenizers import Encoding

PREVIEW_CHARS = 60


def load_chat_template(context: RunContext) -> ChatTemplate:
    """The run's chat template, loaded once; a problem becomes one RuleSetupError for every CT rule."""

    def load() -> ChatTemplate:
        try:
            return ChatTemplate.load(context.model, budget=context.template_budget)
        except TemplateError as exc:
            raise RuleSetupError(f"--model: {exc}") from None

    return context.resource("chat-template", load)


def template_messages_of(row: Row) -> list[dict[str, Any]] | None:
    """What the trainer renders for a row: canonical roles and text content, plus the extra keys
    of OpenAI-style messages (tool calls, names, reasoning) that templates read. None when the
    row has no complete conversation (the schema rules report those)."""
    conversation = row.conversation
    if conversation is None or not conversation.messages or not all(m.valid for m in conversation.messages):
        return None
    extra_keys = MESSAGE_KEYS[conversation.format][2] if conversation.format in MESSAGE_KEYS else frozenset()
    messages = []
    for message in conversation.messages:
        record: dict[str, Any] = {"role": message.role, "content": message.content}
        if extra_keys and message.position >= 0:
            raw = row.obj[message.container][message.position]
            record.update((key, value) for key, value in raw.items() if key in extra_keys)
        messages.append(record)
    return messages


@dataclass(slots=True)
class RenderedRow:
    row: Row
    messages: list[dict[str, Any]]
    tools: list | None
    text: str | None
    error: RenderError | None


class BatchRenderer:
    """Renders each batch once for every CT rule (rules run one after another on the same batch)."""

    def __init__(self, template: ChatTemplate):
        self.template = template
        self._batch: Batch | None = None
        self._rendered: list[RenderedRow] = []

    def rendered(self, batch: Batch) -> list[RenderedRow]:
        if self._batch is not batch:
            self._batch, self._rendered = batch, self._render(batch)
        return self._rendered

    def _render(self, batch: Batch) -> list[RenderedRow]:
        render = self.template.render
        out = []
        for row in batch.rows:
            messages = template_messages_of(row)
            if messages is None:
                continue
            tools = row.obj.get("tools") if isinstance(row.obj.get("tools"), list) else None
            try:
                out.append(RenderedRow(row, messages, tools, render(messages, tools=tools), None))
            except RenderError as exc:
                out.append(RenderedRow(row, messages, tools, None, exc))
            except TemplateBudgetExhausted as exc:  # the template cannot render this run: one error line
                raise RuleSetupError(f"--model: {exc}") from None
        return out

    @cached_property
    def _control_token(self) -> re.Pattern[str] | None:
        tokens = self.template.special_tokens.control
        return re.compile("|".join(map(re.escape, tokens))) if tokens else None

    def assistant_spans(self, rendered: RenderedRow) -> list[Span]:
        """Character spans of what training learns: the template's `{% generation %}` spans when
        it has them, else each assistant turn's content up to and including the first control
        token after it (its end-of-turn token), as `curate train` labels them."""
        if self.template.has_generation_markers:
            return self.template.render_with_spans(rendered.messages, tools=rendered.tools)[1]
        text = rendered.text or ""
        spans = []
        for start, end in located_spans(text, rendered.messages, role="assistant"):
            end_of_turn = self._control_token.search(text, end) if self._control_token else None
            spans.append((start, end_of_turn.end() if end_of_turn else end))
        return spans


def located_spans(text: str, messages: list[dict[str, Any]], role: str) -> list[Span]:
    """Spans of the content of `role` turns, found in order in `text` (stripped, as templates often trim)."""
    spans, cursor = [], 0
    for message in messages:
        content = message["content"].strip()
        if not content:
            continue
        start = text.find(content, cursor)
        if start < 0:
            continue
        cursor = start + len(content)
        if message["role"] == role:
            spans.append((start, cursor))
    return spans


def batch_renderer(context: RunContext) -> BatchRenderer:
    return context.resource("chat-template-renderer", lambda: BatchRenderer(load_chat_template(context)))


def squeezed(text: str) -> str:
    """Text with whitespace runs collapsed, so a template that trims or re-indents still matches."""
    return " ".join(text.split())


def preview(text: str) -> str:
    flat = squeezed(text)
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"


class RenderedRowRule(RowRule):
    """A CT row rule: works on the batch as the shared renderer rendered it."""

    requires = ("model",)

    def setup(self) -> None:
        self.renderer = batch_renderer(self.context)
        self.template = self.renderer.template


class TemplateRenderError(RenderedRowRule):
    """The model's chat template raises on this row.

    ## What it does
    Renders every conversation with the model's chat template, exactly as transformers'
    `apply_chat_template` would (same sandbox, globals and filters), and reports the rows it
    raises on, with the template's own message: a `raise_exception("Conversation roles must
    alternate ...")`, a system turn a Gemma-style template refuses, a sandbox violation.

    ## Why is this bad
    The trainer renders every row with this template; one row it raises on stops tokenization
    (often hours into a job), or is silently dropped by a loader that catches the error.

    ## Example
    With a Gemma-style template (no system role):
    ```jsonl
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]}
    ```

    ## Use instead
    Fold the system prompt into the first user turn, fix the turn order, or train a model whose
    template supports the roles you use:
    ```jsonl
    {"messages": [{"role": "user", "content": "Be brief.\\n\\nhi"}, {"role": "assistant", "content": "Hello!"}]}
    ```
    """

    code = "CT001"
    name = "template-render-error"
    severity = Severity.ERROR

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        for rendered in self.renderer.rendered(batch):
            error = rendered.error
            if error is None:
                continue
            where = f" (template line {error.line})" if error.line else ""
            yield self.row_finding(
                rendered.row,
                f"the chat template raises: {error}{where}",
                data={"error": str(error), "kind": error.kind, "template_line": error.line},
            )


class SpecialTokenOptions(RuleOptions):
    extra_tokens: list[str] = Field(
        default_factory=list,
        description="More strings to treat as control tokens, e.g. the markers of a prompt format the tokenizer does not know.",
    )


class SpecialTokenInContent(RowRule):
    """Message content contains one of the tokenizer's special or control tokens.

    ## What it does
    Reports messages whose text contains a special token of the tokenizer (`<|im_end|>`,
    `<|eot_id|>`, `[INST]`, `<s>` where those are tokens), or an added token the chat template
    writes itself, naming the token.

    ## Why is this bad
    The tokenizer turns the string into the control token, not into text: a `<|im_end|>` inside
    an answer ends the turn early, and the model learns to emit end-of-turn in mid-sentence or
    to trust role markers typed by users (a prompt injection the template cannot undo). Usually
    a sign of data scraped from rendered chats.

    ## Example
    ```jsonl
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!<|im_end|>\\n<|im_start|>user\\nthanks"}]}
    ```

    ## Use instead
    Split the scraped turns into messages, or remove the control tokens from the text:
    ```jsonl
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "thanks"}]}
    ```
    """

    code = "CT002"
    name = "special-token-in-content"
    severity = Severity.ERROR
    requires = ("model",)
    Options = SpecialTokenOptions

    def setup(self) -> None:
        template = load_chat_template(self.context)
        tokens = set(template.special_tokens.control) | {token for token in self.options.extra_tokens if token}
        self.tokens = sorted(tokens, key=lambda token: (-len(token), token))

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        import polars as pl

        if not self.tokens:
            return
        hits = batch.messages.filter(pl.col("content").str.contains_any(self.tokens))
        for row_pos, msg_pos, content in hits.select("row", "msg", "content").iter_rows():
            found = [token for token in self.tokens if token in content]
            # Name only the longest of nested tokens (`<s>` inside `<s>[INST]`-style combined tokens).
            found = [token for token in found if not any(token != other and token in other for other in found)]
            row = batch.rows[row_pos]
            named = ", ".join(f"`{token}`" for token in found)
            what = "special token {}; the tokenizer reads it as a control token" if len(found) == 1 else "special tokens {}; the tokenizer reads them as control tokens"
            yield self.message_finding(
                row,
                row.conversation.messages[msg_pos],
                f"content contains the {what.format(named)}, not as text",
                data={"tokens": found},
            )


class ExceedsMaxLength(RenderedRowRule):
    """Rendered conversation is longer than the max sequence length.

    ## What it does
    Tokenizes the rendered conversations (one `encode_batch` per batch; rows a byte-level BPE
    tokenizer provably fits, fewer UTF-8 bytes than the limit, are skipped) and reports rows with
    more tokens than `max-seq-length` (`--max-seq-length`, the config, else the tokenizer's
    `model_max_length` capped at 4096), saying how many tokens are over and how many assistant
    tokens right-side truncation would cut from training.

    ## Why is this bad
    Trainers truncate from the right: the tail of the conversation, usually the answer you want
    the model to learn, is dropped. A row cut before its answer trains on nothing, or on half an
    answer that ends mid-sentence without an end-of-turn token.

    ## Example
    A support transcript of 12,000 tokens with `max-seq-length = 4096`.

    ## Use instead
    Raise `max-seq-length` if the model and memory allow, split the conversation into shorter
    rows that each end with an assistant turn, or drop the row.
    """

    code = "CT003"
    name = "exceeds-max-length"
    severity = Severity.WARNING

    def setup(self) -> None:
        super().setup()
        try:
            self.template.tokenizer  # noqa: B018 - load now so a missing tokenizer.json is one setup error
        except TemplateError as exc:
            raise RuleSetupError(f"--model: {exc}") from None
        self.limit = self.context.max_seq_length or self.template.max_length

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        limit, bound = self.limit, self.template.token_upper_bound
        # Tokenize (one encode_batch) only the rows a cheap bound cannot rule out.
        candidates = []
        for rendered in self.renderer.rendered(batch):
            if rendered.text is not None:
                most = bound(rendered.text)
                if most is None or most > limit:
                    candidates.append(rendered)
        if not candidates:
            return
        for rendered, encoding in zip(candidates, self.template.encode_batch([r.text for r in candidates])):
            tokens = len(encoding.ids)
            if tokens > limit:
                yield self._finding(rendered, encoding, tokens, limit)

    def _finding(self, rendered: RenderedRow, encoding: Encoding, tokens: int, limit: int) -> Finding:
        import numpy as np

        spans = self.renderer.assistant_spans(rendered)
        offsets = np.asarray(encoding.offsets, dtype=np.int64).reshape(-1, 2)
        in_assistant = np.zeros(len(offsets), dtype=bool)
        for start, end in spans:
            in_assistant |= (offsets[:, 0] < end) & (offsets[:, 1] > start)
        assistant = int(in_assistant.sum())
        cut = int(in_assistant[limit:].sum())
        outcome = " (nothing left to train on)" if assistant and cut == assistant else ""
        return self.row_finding(
            rendered.row,
            f"renders to {tokens:,} tokens, {tokens - limit:,} over max-seq-length {limit:,}; "
            f"truncating from the right cuts {cut:,} of {assistant:,} assistant tokens{outcome}",
            data={"tokens": tokens, "max_seq_length": limit, "over": tokens - limit, "assistant_tokens": assistant, "assistant_tokens_cut": cut},
        )


class ContentDroppedByTemplate(RenderedRowRule):
    """A message's content does not appear in the rendered text.

    ## What it does
    Renders each conversation and checks that every message's content is in the result
    (comparing with whitespace runs collapsed, since templates may trim). Reports the messages
    the template left out.

    ## Why is this bad
    Some templates silently drop what they do not support: a system prompt (templates that
    only keep a default one), tool turns, or earlier turns. The model then trains on answers to
    a context it never saw, and the data you reviewed is not the data you train on.

    ## Example
    With a template that renders only user and assistant turns:
    ```jsonl
    {"messages": [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Bonjour !"}]}
    ```

    ## Use instead
    Move the instruction into a turn the template keeps (the first user turn), or use a model
    whose template renders system and tool turns.
    """

    code = "CT004"
    name = "content-dropped-by-template"
    severity = Severity.ERROR

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        for rendered in self.renderer.rendered(batch):
            if rendered.text is None:
                continue
            text, flat = rendered.text, None
            for message in rendered.row.conversation.messages:
                content = message.content
                if content in text or not content.strip():
                    continue
                flat = flat if flat is not None else squeezed(text)
                if squeezed(content) not in flat:
                    yield self._finding(rendered.row, message)

    def _finding(self, row: Row, message: Message) -> Finding:
        return self.message_finding(
            row,
            message,
            f"content does not appear in the rendered text; the chat template drops it (`{preview(message.content)}`)",
        )


class NoGenerationMarkers(DatasetRule):
    """The chat template has no `{% generation %}` markers.

    ## What it does
    Reports once per run when the model's chat template does not wrap assistant text in
    `{% generation %}` ... `{% endgeneration %}`.

    ## Why is this bad
    Assistant-only loss needs to know which tokens the assistant wrote. With markers,
    transformers returns that mask directly (`return_assistant_tokens_mask`, TRL's
    `assistant_only_loss`); without them those options fail or train on every token, and
    `curate train` derives the mask by rendering conversation prefixes, which works when each
    prefix renders as a prefix of the whole conversation (`curate train` checks this).

    ## Example
    A ChatML template such as `{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}`.

    ## Use instead
    Nothing to fix in the data. To use trainers that need the markers, add them to a copy of
    the template: `{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}`.
    """

    code = "CT005"
    name = "no-generation-markers"
    severity = Severity.INFO
    requires = ("model",)

    def setup(self) -> None:
        self.template = load_chat_template(self.context)
        self.path: str | None = None

    def observe(self, batch: Batch) -> None:
        if self.path is None and batch.rows:
            self.path = batch.rows[0].path

    def finish(self) -> Iterable[Finding]:
        if self.template.has_generation_markers or self.path is None:
            return []
        message = (
            f"the chat template of `{self.context.model}` has no {{% generation %}} markers; "
            "assistant masks come from rendering conversation prefixes (curate train does this; "
            "return_assistant_tokens_mask and TRL's assistant_only_loss need the markers)"
        )
        return [self.finding(self.path, None, message, data={"model": str(self.context.model), "template": self.template.origin})]
