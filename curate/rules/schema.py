"""Schema rules (SC): is each row a well-formed conversation in a known format?"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from curate.engine.batch import Batch, Row
from curate.engine.findings import Finding, Severity
from curate.engine.rule import DatasetRule, Fix, RowRule, RuleOptions
from curate.formats import CANONICAL_ROLES, CONVERTIBLE_TO_MESSAGES, FORMAT_KEYS, MESSAGE_KEYS, OPENAI_ROLE_FORMATS, RowFormat, detect_format, raw_message_items
from curate.config import suggest
from curate.lightmodel import Field
from curate.rules.toolkit import LocationsByKey, as_messages_record, remove_key, rename_role

if TYPE_CHECKING:
    import numpy as np


class DropsBrokenRows:
    """Mixin of the schema rules whose rows cannot be trained on as written: `curate fix` drops
    them, even when a reviewer kept them (only an edit saves the row). At a severity lowered
    below error the finding is left for review."""

    def fix(self, finding: Finding) -> Fix | None:
        return Fix.drop() if finding.severity is Severity.ERROR else None


class InvalidJson(DropsBrokenRows, RowRule):
    """Line is not valid JSON (or not valid UTF-8).

    ## What it does
    Reports a line that does not decode as UTF-8 or does not parse as JSON,
    with the parser's message and column.

    ## Why is this bad
    Loaders either crash on the line or, worse, skip it silently, so the data
    you train on is not the data you reviewed.

    ## Example
    ```jsonl
    {"messages": [{"role": "user", "content": "hi"}
    ```

    ## Use instead
    ```jsonl
    {"messages": [{"role": "user", "content": "hi"}]}
    ```
    """

    code = "SC001"
    name = "invalid-json"
    severity = Severity.ERROR
    needs_conversation = False

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        for row in batch.rows:
            if row.raw.error:
                yield from self.check(row)

    def check(self, row: Row) -> Iterable[Finding]:
        if row.raw.error:
            yield self.row_finding(row, row.raw.error)


class UnknownRowFormat(DropsBrokenRows, RowRule):
    """Row has none of the messages / conversations / instruction / prompt shapes.

    ## What it does
    Reports a parsed row that is not a JSON object, or an object without the
    keys of a supported format: OpenAI `messages`, ShareGPT `conversations`,
    Alpaca `instruction`/`input`/`output`, or `prompt`/`completion`.

    ## Why is this bad
    Trainers drop or crash on rows they cannot map to a conversation; a typo in
    the top-level key (`mesages`) silently removes the row from training.

    ## Example
    ```jsonl
    {"mesages": [{"role": "user", "content": "hi"}]}
    ["user", "hi"]
    ```

    ## Use instead
    ```jsonl
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]}
    ```
    """

    code = "SC002"
    name = "unknown-row-format"
    severity = Severity.ERROR
    needs_conversation = False

    KNOWN_KEYS = ("messages", "conversations", "instruction", "input", "output", "prompt", "completion", "chosen", "rejected", "text")

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        for row in batch.rows:
            if row.format is None:
                yield from self.check(row)

    def check(self, row: Row) -> Iterable[Finding]:
        if not row.raw.ok or row.format is not None:
            return
        obj = row.obj
        if not isinstance(obj, dict):
            kind = {list: "an array", str: "a string", int: "a number", float: "a number", bool: "a boolean"}.get(type(obj), "null")
            yield self.row_finding(row, f"row is {kind}, expected a JSON object with `messages`, `conversations`, `instruction` or `prompt`")
            return
        hints = [f"`{key}`{'' if key in self.KNOWN_KEYS else suggest(key, set(self.KNOWN_KEYS) - set(obj))}" for key in sorted(obj)][:5]
        yield self.row_finding(row, f"no known row format; keys are {', '.join(hints) or 'none'}")


class InvalidMessage(DropsBrokenRows, RowRule):
    """Message is not an object with a string role and string content.

    ## What it does
    Checks every message of a `messages` / `conversations` row (and message-list
    prompts and completions): it must be an object, carry the format's role key
    (`role` or `from`) as a string and its content key (`content` or `value`) as a
    string or a list of text parts. An assistant turn that only has `tool_calls`
    may have null content. For Alpaca and prompt/completion rows the text fields
    must be strings.

    ## Why is this bad
    Chat templates index `message['content']`; a missing key or a number raises
    at tokenization time, hours into a job, or renders `None` into the prompt.

    ## Example
    ```jsonl
    {"messages": [{"role": "user", "text": "hi"}, {"role": "assistant", "content": 42}]}
    ```

    ## Use instead
    ```jsonl
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "42"}]}
    ```
    """

    code = "SC003"
    name = "invalid-message"
    severity = Severity.ERROR

    LIST_CONTAINERS = {RowFormat.MESSAGES: "messages", RowFormat.SHAREGPT: "conversations"}

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        for row in rows_with_unplain_turns(batch):
            yield from self.check(row)

    def check(self, row: Row) -> Iterable[Finding]:
        obj, fmt = row.obj, row.format
        container = self.LIST_CONTAINERS.get(fmt)
        if container and not isinstance(obj.get(container), list):
            yield self.row_finding(row, f"`{container}` must be a list of messages, not {type(obj.get(container)).__name__}")
            return
        invalid = [message for message in row.conversation.messages if not message.valid]
        if not invalid:
            return
        if fmt in MESSAGE_KEYS:
            role_key, content_key, _ = MESSAGE_KEYS[fmt]
            for source, item in raw_message_items(obj, fmt):
                problem = self._message_problem(item, role_key, content_key)
                if problem:
                    yield self.finding(row.path, row.line, f"{source}: {problem}", data={"source": source})
        for message in invalid:
            if message.position < 0:  # a plain text field (Alpaca, prompt/completion strings)
                value = obj.get(message.container)
                kind = type(value).__name__ if value is not None else "null"
                yield self.finding(row.path, row.line, f"`{message.container}` must be a string, not {kind}", data={"source": message.container})

    @staticmethod
    def _message_problem(item, role_key: str, content_key: str) -> str | None:
        if not isinstance(item, dict):
            return f"message must be an object, not {type(item).__name__}"
        missing = [key for key in (role_key, content_key) if key not in item and not (key == content_key and item.get("tool_calls"))]
        if missing:
            present = ", ".join(f"`{key}`" for key in item) or "none"
            return f"missing {' and '.join(f'`{key}`' for key in missing)} (keys: {present})"
        if not isinstance(item[role_key], str):
            return f"`{role_key}` must be a string, not {type(item[role_key]).__name__}"
        content = item.get(content_key)
        if content is None and item.get("tool_calls"):
            return None
        if isinstance(content, str):
            return None
        if isinstance(content, list) and all(isinstance(part, dict) and isinstance(part.get("text", ""), str) for part in content):
            return None
        return f"`{content_key}` must be a string, not {type(content).__name__ if content is not None else 'null'}"


class UnknownRoleOptions(RuleOptions):
    extra_roles: list[str] = Field(default_factory=list, description="Roles to accept besides system, user, assistant and tool (and ShareGPT aliases).")


class UnknownRole(DropsBrokenRows, RowRule):
    """Role is not system, user, assistant or tool.

    ## What it does
    Reports messages whose role is not one of system, user, assistant, tool, or a
    role added with the `extra-roles` option. ShareGPT's `from` values (`human`,
    `gpt`, `function`, ...) are aliases by design and are mapped; in OpenAI-style
    `messages` (and conversational prompt/completion) rows an alias such as `bot`,
    `gpt`, `human`, `model`, `Assistant` or `bot ` is reported with the role it
    stands for ("did you mean `assistant`?"), and `curate fix` renames it.

    ## Why is this bad
    Chat templates branch on the role string as written: an unknown role
    (`customer`) or an alias (`Assistant`, `bot `) is rendered as a new role
    (`<|im_start|>bot`), raises, or is silently dropped from the rendered prompt.

    ## Example
    ```jsonl
    {"messages": [{"role": "customer", "content": "hi"}, {"role": "agent", "content": "Hello!"}]}
    {"messages": [{"role": "human", "content": "hi"}, {"role": "bot", "content": "Hello!"}]}
    ```

    ## Use instead
    ```jsonl
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]}
    ```
    """

    code = "SC004"
    name = "unknown-role"
    severity = Severity.ERROR
    Options = UnknownRoleOptions

    def fix(self, finding: Finding) -> Fix | None:
        """An alias in a `messages` row (`bot`, `Assistant`) is renamed; other unknown roles drop the row."""
        source, role = finding.data.get("source"), finding.data.get("rename")
        if role:
            return Fix.rewrite("roles renamed", lambda obj: rename_role(obj, source, role))
        return super().fix(finding)

    def setup(self) -> None:
        self.extra = set(self.options.extra_roles)
        self.allowed = set(CANONICAL_ROLES) | self.extra

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        for row in rows_with_unplain_turns(batch):
            yield from self.check(row)

    def check(self, row: Row) -> Iterable[Finding]:
        openai_roles = row.format in OPENAI_ROLE_FORMATS
        for message in row.conversation.messages:
            if not message.valid or message.raw_role in self.extra:
                continue
            if message.role not in self.allowed:
                hint = suggest(message.raw_role.lower(), self.allowed)
                yield self.message_finding(row, message, f"unknown role `{message.raw_role}`{hint}")
            elif openai_roles and message.raw_role != message.role:
                yield self.message_finding(
                    row,
                    message,
                    f"unknown role `{message.raw_role}` (did you mean `{message.role}`?); chat templates render the role as written",
                    data={"source": message.source, "role": message.raw_role, "rename": message.role},
                )


class EmptyContent(DropsBrokenRows, RowRule):
    """Message content is empty or only whitespace.

    ## What it does
    Reports messages whose content is empty or whitespace-only. Assistant turns
    that only call tools are exempt.

    ## Why is this bad
    An empty assistant turn teaches the model to answer with nothing; an empty
    user turn trains on an answer to no question.

    ## Example
    ```jsonl
    {"messages": [{"role": "user", "content": "Reset my password"}, {"role": "assistant", "content": "  "}]}
    ```

    ## Use instead
    Write the missing answer, or drop the row.
    """

    code = "SC005"
    name = "empty-content"
    severity = Severity.ERROR

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        import polars as pl

        frame = batch.messages
        hits = frame.filter(pl.col("content").str.strip_chars().str.len_bytes() == 0)
        for row_pos, msg_pos in hits.select("row", "msg").iter_rows():
            row = batch.rows[row_pos]
            message = row.conversation.messages[msg_pos]
            if not _calls_tools(row, message):
                yield self.message_finding(row, message, "empty content")


def _calls_tools(row: Row, message) -> bool:
    """An OpenAI assistant turn that only calls tools legitimately has no content."""
    if message.container != "messages" or message.position < 0:
        return False
    item = row.obj["messages"][message.position]
    return isinstance(item, dict) and bool(item.get("tool_calls"))


class MissingAssistantTurn(DropsBrokenRows, RowRule):
    """Row has no turns, no assistant message, or does not end with one.

    ## What it does
    Reports empty conversations (`{"messages": []}`, `{"conversations": []}`),
    conversations with no assistant turn, and conversations whose last turn is
    not the assistant's (a trailing user or tool turn).

    ## Why is this bad
    Supervised fine-tuning trains on assistant tokens: a row without one trains
    on nothing (or, with loss on all tokens, teaches the model to write user
    turns); a trailing user turn is a question never answered.

    ## Example
    ```jsonl
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Thanks"}]}
    ```

    ## Use instead
    End every conversation with the assistant turn to learn from.
    """

    code = "SC006"
    name = "missing-assistant-turn"
    severity = Severity.ERROR
    needs_roles = True

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        for row in batch.rows:
            conversation = row.conversation
            if conversation is None:
                continue
            if conversation.plain and conversation.plain_roles()[-1] == "assistant":
                continue  # valid turns ending with the assistant's: nothing to report, the common case
            yield from self.check(row)

    def check(self, row: Row) -> Iterable[Finding]:
        if row.format is RowFormat.PROMPT_ONLY:
            return  # prompt-only data (GRPO, online DPO) has no completion by design
        if not row.conversation.messages:
            container = InvalidMessage.LIST_CONTAINERS.get(row.format)
            if container is None or isinstance(row.obj.get(container), list):  # SC003 reports a non-list
                yield self.row_finding(row, "empty conversation: no turns at all, nothing to train on")
            return
        messages = [m for m in row.conversation.messages if m.valid]
        if not messages:
            return
        if not any(m.role == "assistant" for m in messages):
            yield self.row_finding(row, "no assistant turn to train on")
        elif messages[-1].role != "assistant":
            yield self.message_finding(row, messages[-1], "conversation ends with a non-assistant turn")


class RoleOrder(DropsBrokenRows, RowRule):
    """System not first, or user and assistant turns do not alternate.

    ## What it does
    Checks the turn order: at most one system message and only as the first
    turn; the first non-system turn is the user's; user and assistant turns
    alternate (tool results may follow an assistant turn, and an assistant turn
    may follow a tool result).

    ## Why is this bad
    Many chat templates (Llama 2, Mistral, Gemma) raise on non-alternating roles;
    others render two user turns back to back, a shape the model never sees at
    inference.

    ## Example
    ```jsonl
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "user", "content": "Hello?"}, {"role": "assistant", "content": "Hi!"}]}
    ```

    ## Use instead
    Merge consecutive turns of the same role, and put the system prompt first.
    """

    code = "SC007"
    name = "role-order"
    severity = Severity.ERROR
    needs_roles = True

    ALLOWED_NEXT = {
        None: {"system", "user"},
        "system": {"user"},
        "user": {"assistant"},
        "assistant": {"user", "tool"},
        "tool": {"assistant", "tool"},
    }
    #: How many role sequences found in order are remembered per rule (most files use a handful).
    MAX_KNOWN_ORDERS = 4096

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.in_order: set[tuple[str, ...]] = set()

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        """Rows whose turns are plain (valid, canonical roles) and whose role sequence was already
        found in order are skipped; every other row is walked by `check`."""
        in_order = self.in_order
        for row in batch.rows:
            conversation = row.conversation
            if conversation is None:
                continue
            if not conversation.plain:
                yield from self.check(row)
                continue
            roles = tuple(conversation.plain_roles())
            if roles in in_order:
                continue
            found = list(self.check(row))
            if found:
                yield from found
            elif len(in_order) < self.MAX_KNOWN_ORDERS:
                in_order.add(roles)

    def check(self, row: Row) -> Iterable[Finding]:
        messages = row.conversation.messages
        if any(not m.valid or m.role not in CANONICAL_ROLES for m in messages):
            return  # the order of unknown or broken turns is meaningless; SC003/SC004 report them
        previous = None
        for message in messages:
            if message.role not in self.ALLOWED_NEXT[previous]:
                if message.role == "system":
                    text = "system message must be the first turn"
                elif previous == message.role:
                    text = f"two {message.role} turns in a row"
                elif previous is None:
                    text = f"conversation starts with {_article(message.role)} {message.role} turn"
                else:
                    text = f"{message.role} turn follows {_article(previous)} {previous} turn"
                yield self.message_finding(row, message, text)
                return  # one finding per row: later positions are off by the same cause
            previous = message.role


def rows_with_unplain_turns(batch: Batch) -> Iterator[Row]:
    """The rows with a conversation whose turns are not all plain (`Conversation.plain`): the
    only ones where a message can be malformed or carry an unknown or misspelt role."""
    for row in batch.rows:
        conversation = row.conversation
        if conversation is not None and not conversation.plain:
            yield row


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


class UnexpectedKey(RowRule):
    """Row or message has keys outside its format (often a typo).

    ## What it does
    Reports top-level keys that the row's format does not define, and
    message-level keys outside role/content (and the format's optional keys),
    with a suggestion when the key looks like a typo of a known one. Keys listed
    in the `allowed` option (ids, labels, sources) are accepted.

    ## Why is this bad
    A typo such as `complettion` or `contnet` means the real field is missing
    and the trainer silently uses a default; unknown keys are also dropped by
    most loaders, so metadata you rely on may not survive.

    ## Example
    ```jsonl
    {"prompt": "2+2?", "completion": "4", "complettion": "5"}
    ```

    ## Use instead
    Fix the typo, or add the key to `allowed` if it is intended metadata.
    """

    code = "SC008"
    name = "unexpected-key"
    severity = Severity.WARNING

    class Options(RuleOptions):
        allowed: list[str] = Field(
            default_factory=lambda: ["id", "label", "labels", "category", "source", "metadata", "meta", "split", "tags", "text"],
            description="Top-level keys accepted as metadata in any format.",
        )

    def fix(self, finding: Finding) -> Fix | None:
        """The unexpected key is removed."""
        if "key" not in finding.data:
            return None
        source, key = finding.data.get("source"), finding.data["key"]
        return Fix.rewrite("keys removed", lambda obj: remove_key(obj, source, key))

    def setup(self) -> None:
        self.known_keys = {fmt: keys | set(self.options.allowed) for fmt, keys in FORMAT_KEYS.items()}
        self.message_known = {fmt: {role, content} | optional for fmt, (role, content, optional) in MESSAGE_KEYS.items()}

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        known_keys = self.known_keys
        for row in batch.rows:
            conversation = row.conversation
            # Plain turns hold only their role and content keys, and a row without `meta` (keys
            # besides its format's, mostly an empty dict) has no other key: a cheaper test than the
            # row's own keys, one more cache miss away.
            if conversation is None or (conversation.plain and (not conversation.meta or known_keys[row.format].issuperset(row.obj))):
                continue
            yield from self.check(row)

    def check(self, row: Row) -> Iterable[Finding]:
        fmt = row.format
        known = self.known_keys[fmt]
        if known.issuperset(row.obj):
            return self._message_keys(row, fmt)
        return self._all_keys(row, fmt, known)

    def _all_keys(self, row: Row, fmt: RowFormat, known: set[str]) -> Iterator[Finding]:
        for key in row.obj:
            if key not in known:
                yield self.row_finding(row, f"unexpected key `{key}` for the {fmt} format{suggest(key, FORMAT_KEYS[fmt] - row.obj.keys())}", data={"key": key})
        yield from self._message_keys(row, fmt)

    def _message_keys(self, row: Row, fmt: RowFormat) -> Iterator[Finding]:
        if fmt in self.message_known:
            known_keys = self.message_known[fmt]
            for source, item in raw_message_items(row.obj, fmt):
                if isinstance(item, dict) and not known_keys.issuperset(item):
                    for key in item:
                        if key not in known_keys:
                            yield self.finding(row.path, row.line, f"{source}: unexpected key `{key}`{suggest(key, known_keys - item.keys())}", data={"key": key, "source": source})


class OversizedRow(DropsBrokenRows, RowRule):
    """Row is larger than `max-row-bytes` and was not parsed.

    ## What it does
    Reports rows (lines) bigger than the `max-row-bytes` setting (default
    10 MiB). They are not parsed, so the rest of the file is still checked
    quickly and memory stays bounded.

    ## Why is this bad
    A multi-megabyte row is almost always an export accident (a whole document
    or a base64 blob pasted into a message); it will be truncated at training
    time and can exhaust memory in tokenization.

    ## Example
    A 50 MB line holding a PDF as base64 in `content`.

    ## Use instead
    Remove the row, or split the document into sensible examples.
    """

    code = "SC009"
    name = "oversized-row"
    severity = Severity.ERROR
    needs_conversation = False

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        for row in batch.rows:
            if row.raw.oversized:
                yield from self.check(row)

    def check(self, row: Row) -> Iterable[Finding]:
        if row.raw.oversized:
            size_mb = row.raw.oversized / 2**20
            yield self.row_finding(row, f"row is {size_mb:.1f} MiB, over the max-row-bytes limit; not parsed", data={"bytes": row.raw.oversized})


class MixedRowFormats(DatasetRule):
    """File mixes row formats (e.g. `messages` and Alpaca rows).

    ## What it does
    Counts the detected format of every row of each file and reports the rows
    whose format differs from the file's dominant one.

    ## Why is this bad
    Trainers pick one formatting function per dataset; rows of another format
    are dropped, crash the loader, or are rendered without their system prompt.
    Mixed formats usually mean two exports were concatenated by hand.

    ## Example
    ```jsonl
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]}
    {"instruction": "Say hi", "input": "", "output": "Hello!"}
    ```

    ## Use instead
    Convert every row to one format (`curate fix` writes `messages` rows).
    """

    code = "SC010"
    name = "mixed-row-formats"
    severity = Severity.WARNING

    def fix(self, finding: Finding) -> Fix | None:
        """Every row of the file is rewritten in the `messages` format, after the other fixes."""
        return Fix.rewrite("converted to messages", to_messages, stage=2, scope="file")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.rows_by_format = LocationsByKey()

    def observe(self, batch: Batch) -> None:
        """The rows grouped by format, in the order the formats first appear: one pass that reads
        each row's format, then a group per format (a batch mostly has one)."""
        import numpy as np

        formats = batch.row_formats
        kinds = [fmt for fmt in batch.format_counts if fmt is not None]
        uniform = len(batch.format_counts) == 1
        for fmt in kinds:
            if uniform:
                positions = np.arange(len(formats), dtype=np.int64)
            else:
                positions = np.flatnonzero(np.fromiter((row_format is fmt for row_format in formats), dtype=bool, count=len(formats)))
            self.rows_by_format.add_group(batch, str(fmt), positions)

    def merge(self, later: MixedRowFormats) -> None:
        self.rows_by_format.extend(later.rows_by_format)

    def finish(self) -> Iterable[Finding]:
        lines_by_file: dict[str, dict[str, np.ndarray]] = {}  # path -> format -> its lines, in the order read
        for fmt, group in self.rows_by_format.frozen().items():
            for path_id, path in enumerate(group.paths):
                lines_by_file.setdefault(path, {})[fmt] = group.line_of[group.path_of == path_id]
        for path, formats in lines_by_file.items():
            if len(formats) < 2:
                continue
            # The most common format; on a tie the one the file shows first.
            dominant = max(formats, key=lambda fmt: (len(formats[fmt]), -int(formats[fmt][0])))
            message = f"{len(formats[dominant])} of {sum(map(len, formats.values()))} rows in this file use {dominant}"
            for fmt, lines in formats.items():
                if fmt != dominant:
                    for line in lines.tolist():
                        yield self.finding(path, line, f"row is in the {fmt} format; {message}", data={"format": fmt, "dominant": dominant})


def to_messages(obj: object) -> object:
    """A row in a format `messages` can hold, rewritten as a `messages` row; any other row as it is."""
    if isinstance(obj, dict) and detect_format(obj) in CONVERTIBLE_TO_MESSAGES:
        return as_messages_record(obj)
    return obj
