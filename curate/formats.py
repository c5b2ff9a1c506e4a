"""Detect a row's format and normalize it to one `Conversation` model.

Supported shapes:
- OpenAI `messages`: `{"messages": [{"role": "user", "content": "..."}, ...]}`
- ShareGPT `conversations`: `{"conversations": [{"from": "human", "value": "..."}, ...]}`
- Alpaca: `{"instruction": ..., "input": ..., "output": ...}` (optional `system`)
- prompt/completion: `{"prompt": "...", "completion": "..."}` (strings or message lists)
- TRL's other formats: language modeling `{"text": ...}`, prompt-only `{"prompt": ...}`,
  preference `{"prompt", "chosen", "rejected"}`, implicit-prompt preference
  `{"chosen", "rejected"}` and unpaired preference `{"prompt", "completion", "label"}` (KTO);
  each in its standard (strings) or conversational (message lists) form.

A preference row normalizes to its chosen side (prompt + chosen); `rejected_side`
gives the other side, so the row rules check both.

Normalization is tolerant: a malformed message is kept with `valid=False`, so the
schema rules can report it and the other rules skip it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import Enum
from typing import Any


class RowFormat(str, Enum):
    MESSAGES = "messages"
    SHAREGPT = "sharegpt"
    ALPACA = "alpaca"
    PROMPT_COMPLETION = "prompt-completion"
    TEXT = "text"
    PROMPT_ONLY = "prompt-only"
    PREFERENCE = "preference"
    IMPLICIT_PREFERENCE = "implicit-preference"
    UNPAIRED_PREFERENCE = "unpaired-preference"

    def __str__(self) -> str:
        return self.value


CANONICAL_ROLES = ("system", "user", "assistant", "tool")

#: ShareGPT `from` values and common aliases mapped to canonical roles.
ROLE_ALIASES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
    "ipython": "tool",
}

#: Keys each format defines at the top level; anything else is SC008's business.
FORMAT_KEYS: dict[RowFormat, frozenset[str]] = {
    RowFormat.MESSAGES: frozenset({"messages", "tools"}),
    RowFormat.SHAREGPT: frozenset({"conversations", "system", "tools"}),
    RowFormat.ALPACA: frozenset({"instruction", "input", "output", "system", "history"}),
    RowFormat.PROMPT_COMPLETION: frozenset({"prompt", "completion"}),
    RowFormat.TEXT: frozenset({"text"}),
    RowFormat.PROMPT_ONLY: frozenset({"prompt"}),
    RowFormat.PREFERENCE: frozenset({"prompt", "chosen", "rejected", "score_chosen", "score_rejected", "prompt_id", "messages"}),
    RowFormat.IMPLICIT_PREFERENCE: frozenset({"chosen", "rejected", "score_chosen", "score_rejected"}),
    RowFormat.UNPAIRED_PREFERENCE: frozenset({"prompt", "completion", "label"}),
}

#: Supervised chat formats `curate fix` may rewrite as `messages` rows without losing anything
#: (a preference pair, a text row or a KTO label has no `messages` equivalent).
CONVERTIBLE_TO_MESSAGES = frozenset({RowFormat.SHAREGPT, RowFormat.ALPACA, RowFormat.PROMPT_COMPLETION})
#: Formats whose rows may have no roles (TRL's language modeling text; implicit-prompt pairs of
#: texts, not of message lists), decided per row by `has_roles`: the rules about roles skip those.
ROLELESS_FORMATS = frozenset({RowFormat.TEXT, RowFormat.IMPLICIT_PREFERENCE})
#: Formats of paired preference rows (a chosen and a rejected side).
PREFERENCE_FORMATS = frozenset({RowFormat.PREFERENCE, RowFormat.IMPLICIT_PREFERENCE})
#: Keys whose values may be message lists, per format (schema checks walk them).
MESSAGE_LIST_KEYS: dict[RowFormat, tuple[str, ...]] = {
    RowFormat.PROMPT_COMPLETION: ("prompt", "completion"),
    RowFormat.UNPAIRED_PREFERENCE: ("prompt", "completion"),
    RowFormat.PROMPT_ONLY: ("prompt",),
    RowFormat.PREFERENCE: ("prompt", "chosen", "rejected"),
    RowFormat.IMPLICIT_PREFERENCE: ("chosen", "rejected"),
}

#: Message-level keys per format (role key, content key, other allowed keys).
MESSAGE_KEYS: dict[RowFormat, tuple[str, str, frozenset[str]]] = {
    RowFormat.MESSAGES: ("role", "content", frozenset({"name", "tool_calls", "tool_call_id", "weight", "thinking", "reasoning_content", "reasoning"})),
    RowFormat.SHAREGPT: ("from", "value", frozenset({"name", "weight"})),
}
for _fmt in MESSAGE_LIST_KEYS:
    MESSAGE_KEYS[_fmt] = MESSAGE_KEYS[RowFormat.MESSAGES]

#: Formats whose message lists use OpenAI's roles: there, an alias (`bot`, `gpt`, `Assistant`) is not
#: a role a chat template knows (SC004), where ShareGPT's `from` values are aliases by design.
OPENAI_ROLE_FORMATS = frozenset({RowFormat.MESSAGES, *MESSAGE_LIST_KEYS})

#: Message keys besides role and content that chat templates render (tool calls, the speaker's or the
#: tool's name, the id a tool result answers, reasoning), kept on the message as `fields`.
TEMPLATE_FIELDS = frozenset({"name", "tool_calls", "tool_call_id", "thinking", "reasoning_content", "reasoning"})


@dataclass(slots=True)
class Message:
    """One turn. `role` is canonical when known, else the raw role string."""

    role: str
    content: str
    index: int
    raw_role: str = ""
    valid: bool = True
    #: The key the turn came from in the source row (`messages`, `output`, ...) ...
    container: str = ""
    #: ... and its position in that list, or -1 for a plain field.
    position: int = -1
    #: The other keys of the source message a chat template renders (TEMPLATE_FIELDS), or None.
    fields: dict[str, Any] | None = None

    @property
    def source(self) -> str:
        """Where the turn came from in the source row, e.g. `messages[2]` or `output`."""
        return f"{self.container}[{self.position}]" if self.position >= 0 else self.container

    @property
    def where(self) -> str:
        """`messages[2] (assistant)`: how findings name a message."""
        return f"{self.source} ({self.role})"


class Conversation:
    """A row's turns in one model: `messages`, its `format`, the row's other keys (`meta`) and
    `tools`. When every turn is plain (`plain`: it came from a message-list item holding just
    the format's role and content keys, both strings, the role one of CANONICAL_ROLES as
    written), the Message objects are only built when `messages` is first read: the message
    frame and the schema rules take what they need from the items (`plain_turns`)."""

    __slots__ = ("_messages", "_head", "_turns", "_key", "format", "meta", "tools", "plain")

    def __init__(
        self, messages: list[Message] | None, format: RowFormat, meta: dict[str, Any] | None = None, tools: list | None = None,
        plain: bool = False, head: list[Message] | None = None, turns: tuple[list[str], list[str]] | None = None, key: str = "",
    ):
        #: Either the turns, or (plain conversations) None, with `head` (turns from plain fields,
        #: ShareGPT's `system`) and `turns`: the roles and contents of head + the `key` list.
        self._messages = messages
        self._head, self._turns, self._key = head or [], turns, key
        self.format = format
        self.meta = {} if meta is None else meta
        self.tools = tools
        #: The schema rules about message shapes, keys and roles have nothing to say about its turns.
        self.plain = plain

    @property
    def messages(self) -> list[Message]:
        messages = self._messages
        if messages is None:
            head, key, (roles, contents) = self._head, self._key, self._turns
            start = len(head)
            messages = self._messages = head + [
                Message(role, content, start + offset, role, True, key, offset, None)
                for offset, (role, content) in enumerate(zip(roles[start:], contents[start:]))
            ]
        return messages

    @messages.setter
    def messages(self, messages: list[Message]) -> None:
        self._messages, self._turns = messages, None
        self.plain = False  # turns set by hand may be anything

    def plain_roles(self) -> list[str]:
        """The roles of a plain conversation's turns, without building its messages."""
        if self._turns is None:
            return [message.role for message in self.messages]
        return self._turns[0]

    def plain_turns(self) -> tuple[list[str], list[str]]:
        """(roles, contents) of a plain conversation's turns, without building its messages."""
        if self._turns is None:
            return [message.role for message in self.messages], [message.content for message in self.messages]
        return self._turns

    def __repr__(self) -> str:
        return f"Conversation({self.messages!r}, {self.format!s}, meta={self.meta!r}, tools={self.tools!r}, plain={self.plain})"

    @property
    def last_assistant_index(self) -> int | None:
        for position in range(len(self.messages) - 1, -1, -1):
            if self.messages[position].role == "assistant":
                return position
        return None

    @property
    def final_answer(self) -> str | None:
        last = self.last_assistant_index
        return None if last is None else self.messages[last].content

    @property
    def renderable(self) -> bool:
        """Has turns and every one is well formed: a chat template can render it (the schema rules
        report the others)."""
        return bool(self.messages) and all(m.valid for m in self.messages)

    def template_messages(self) -> list[dict[str, Any]]:
        """The messages a chat template renders for this conversation: canonical role, text content,
        and every other field templates read (tool calls, names, tool call ids, reasoning). The one
        source of what is trained: the CT rules render it, the trainer tokenizes it, `curate fix`
        writes it when converting a row to `messages`."""
        records = []
        for message in self.messages:
            record: dict[str, Any] = {"role": message.role, "content": message.content}
            if message.fields:
                record.update(message.fields)
            records.append(record)
        return records


def detect_format(obj: Any) -> RowFormat | None:
    """The row format of a parsed row, or None when it has no known shape."""
    if not isinstance(obj, dict):
        return None
    if "chosen" in obj and "rejected" in obj:
        return RowFormat.PREFERENCE if "prompt" in obj else RowFormat.IMPLICIT_PREFERENCE
    if "messages" in obj:
        return _MESSAGES
    if "conversations" in obj:
        return _SHAREGPT
    if "instruction" in obj or ("output" in obj and "input" in obj):
        return _ALPACA
    return _detect_trl_format(obj)


#: The formats of most rows, as plain names: reading an Enum member off its class costs ~140 ns,
#: a lot for functions that run once per row.
_MESSAGES, _SHAREGPT, _ALPACA = RowFormat.MESSAGES, RowFormat.SHAREGPT, RowFormat.ALPACA
#: The formats whose turns are one message list, and its key.
_MESSAGE_LIST = {RowFormat.MESSAGES: "messages", RowFormat.SHAREGPT: "conversations"}


def _detect_trl_format(obj: dict) -> RowFormat | None:
    """prompt/completion (with a boolean `label`: KTO's unpaired preference), prompt-only, text."""
    if "prompt" in obj and "completion" in obj:
        return RowFormat.UNPAIRED_PREFERENCE if isinstance(obj.get("label"), bool) else RowFormat.PROMPT_COMPLETION
    if "prompt" in obj and not obj.keys() & {"chosen", "rejected"}:
        return RowFormat.PROMPT_ONLY
    if "text" in obj and isinstance(obj["text"], str):
        return RowFormat.TEXT
    return None


def _content_text(content: Any) -> str | None:
    """Plain text of a message content: a string, or OpenAI content parts of type text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(part, dict) for part in content):
        texts = [part.get("text") for part in content if part.get("type", "text") == "text"]
        if all(isinstance(text, str) for text in texts):
            return "".join(texts)
    return None


_CANONICAL_ROLE_SET = frozenset(CANONICAL_ROLES)


def plain_turns(items: Any, role_key: str, content_key: str, head: list[Message]) -> tuple[list[str], list[str]] | None:
    """(roles, contents) of `head` and a message list whose items are all plain (see
    `Conversation`), or None when the list is empty, not a list, or has an item that is not
    (`_normalize_message_list` handles those). The common shape, taken in one cheap pass."""
    if type(items) is not list or not items:
        return None
    canonical = _CANONICAL_ROLE_SET
    roles: list[str] = []
    contents: list[str] = []
    for item in items:
        if type(item) is not dict or len(item) != 2:
            return None
        role, content = item.get(role_key), item.get(content_key)
        if type(role) is not str or role not in canonical or type(content) is not str:
            return None
        roles.append(role)
        contents.append(content)
    if head:
        roles[:0] = [message.role for message in head]
        contents[:0] = [message.content for message in head]
    return roles, contents


def _normalize_message_list(items: Any, fmt: RowFormat, key: str, start: int = 0) -> list[Message]:
    role_key, content_key, _ = MESSAGE_KEYS[fmt]
    messages: list[Message] = []
    if not isinstance(items, list):
        return messages
    alias = ROLE_ALIASES.get
    for offset, item in enumerate(items):
        index = start + offset
        if type(item) is dict:
            raw_role, content = item.get(role_key), item.get(content_key)
            fields = _template_fields(item) if len(item) > 2 else None
            if type(raw_role) is str and type(content) is str:  # the common case, kept cheap
                role = alias(raw_role) or alias(raw_role.strip().lower(), raw_role)
                messages.append(Message(role, content, index, raw_role, True, key, offset, fields))
                continue
            text = _content_text(content)
            valid = isinstance(raw_role, str) and (text is not None or _is_tool_call_turn(item, content))
            role = alias(raw_role.strip().lower(), raw_role) if isinstance(raw_role, str) else "?"
            messages.append(Message(role, text or "", index, raw_role if isinstance(raw_role, str) else "", valid, key, offset, fields))
        else:
            messages.append(Message("?", "", index, "", False, key, offset))
    return messages


def _template_fields(item: dict) -> dict[str, Any] | None:
    """The keys of a source message, besides role and content, that a chat template renders."""
    fields = {name: value for name, value in item.items() if name in TEMPLATE_FIELDS and value is not None}
    return fields or None


def _is_tool_call_turn(item: dict, content: Any) -> bool:
    """An assistant turn that only calls tools may have null content (OpenAI format)."""
    return content is None and bool(item.get("tool_calls"))


def _text_field(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) else None


def normalize(obj: Any, fmt: RowFormat | None = None) -> Conversation | None:
    """Normalize a parsed row to a Conversation, or None when its format is unknown."""
    fmt = fmt or detect_format(obj)
    if fmt is None:
        return None
    format_keys = FORMAT_KEYS[fmt]
    meta = {} if format_keys.issuperset(obj) else {key: value for key, value in obj.items() if key not in format_keys}
    tools = obj.get("tools") if "tools" in format_keys else None
    tools = tools if isinstance(tools, list) else None
    key = _MESSAGE_LIST.get(fmt)
    if key is not None:
        head = []
        if fmt is _SHAREGPT:
            system = _text_field(obj, "system")
            if system is not None:
                head.append(Message("system", system, 0, "system", True, "system"))
        role_key, content_key, _ = MESSAGE_KEYS[fmt]
        items = obj.get(key)
        turns = plain_turns(items, role_key, content_key, head)
        if turns is not None:
            return Conversation(None, fmt, meta, tools, True, head, turns, key)
        messages = head + _normalize_message_list(items, fmt, key, len(head))
    elif fmt is _ALPACA:
        messages = _normalize_alpaca(obj)
    elif fmt in (RowFormat.PROMPT_COMPLETION, RowFormat.UNPAIRED_PREFERENCE):
        messages = _normalize_prompt_completion(obj)
    else:
        messages = _normalize_trl(obj, fmt)
    return Conversation(messages, fmt, meta, tools)


def _normalize_trl(obj: dict, fmt: RowFormat) -> list[Message]:
    """Text rows are one roleless turn; prompt-only rows the prompt; preference rows the chosen side."""
    if fmt is RowFormat.TEXT:
        return [_alpaca_turn("assistant", obj.get("text"), 0, "text")]
    if fmt is RowFormat.PROMPT_ONLY:
        return _side(obj.get("prompt"), "prompt", "user", 0)
    pair = preference_pair(obj, fmt)
    return pair.prompt + pair.chosen


def _side(value: Any, key: str, role: str, start: int) -> list[Message]:
    """A string field as one turn of `role`, or a message list."""
    if isinstance(value, list):
        return _normalize_message_list(value, RowFormat.MESSAGES, key, start)
    return [_alpaca_turn(role, value, start, key)]


@dataclass(slots=True)
class PreferencePair:
    """A preference row cut into its shared prompt and its two completions."""

    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]
    #: The prompt is implicit: the longest shared start of `chosen` and `rejected`.
    implicit: bool
    #: Implicit-prompt text pairs (strings) have no roles.
    roleless: bool = False

    def side(self, name: str) -> list[Message]:
        return self.chosen if name == "chosen" else self.rejected


def preference_pair(obj: dict, fmt: RowFormat) -> PreferencePair:
    if fmt is RowFormat.PREFERENCE:
        prompt = _side(obj.get("prompt"), "prompt", "user", 0)
        return PreferencePair(
            prompt, _side(obj.get("chosen"), "chosen", "assistant", len(prompt)), _side(obj.get("rejected"), "rejected", "assistant", len(prompt)), False
        )
    chosen_value, rejected_value = obj.get("chosen"), obj.get("rejected")
    if isinstance(chosen_value, list) and isinstance(rejected_value, list):
        chosen = _normalize_message_list(chosen_value, RowFormat.MESSAGES, "chosen")
        rejected = _normalize_message_list(rejected_value, RowFormat.MESSAGES, "rejected")
        shared = 0
        while shared < min(len(chosen), len(rejected)) - 1 and _same_turn(chosen[shared], rejected[shared]):
            shared += 1
        return PreferencePair(chosen[:shared], chosen[shared:], rejected[shared:], True)
    chosen = [_alpaca_turn("assistant", chosen_value, 0, "chosen")]
    rejected = [_alpaca_turn("assistant", rejected_value, 0, "rejected")]
    return PreferencePair([], chosen, rejected, True, roleless=True)


def _same_turn(left: Message, right: Message) -> bool:
    return left.valid and right.valid and left.role == right.role and left.content == right.content


def rejected_side(obj: dict, fmt: RowFormat) -> Conversation:
    """The rejected side of a preference row as a conversation (prompt + rejected)."""
    pair = preference_pair(obj, fmt)
    meta = {key: value for key, value in obj.items() if key not in FORMAT_KEYS[fmt]}
    return Conversation(pair.prompt + pair.rejected, fmt, meta)


def has_roles(conversation: Conversation) -> bool:
    """False for TRL's language-modeling text and implicit-prompt text pairs: no turns, no roles."""
    if conversation.format is RowFormat.TEXT:
        return False
    if conversation.format is RowFormat.IMPLICIT_PREFERENCE:
        return not (conversation.messages and conversation.messages[0].position < 0)
    return True


#: What `--columns` may map a field onto: a role (the field becomes that turn) or a format key.
COLUMN_ROLES = ("system", "user", "assistant")
COLUMN_KEYS = ("messages", "conversations", "instruction", "input", "output", "prompt", "completion", "chosen", "rejected", "text", "label", "system")


def column_problems(columns: dict[str, str]) -> list[str]:
    """One line per mapping whose target is neither a role nor a format key."""
    allowed = set(COLUMN_ROLES) | set(COLUMN_KEYS)
    return [
        f"columns: `{field}` maps to `{target}`, which is not a role ({', '.join(COLUMN_ROLES)}) or a format key ({', '.join(COLUMN_KEYS)})"
        for field, target in columns.items()
        if target not in allowed
    ]


def apply_columns(obj: Any, columns: dict[str, str]) -> Any:
    """A row with `columns` applied: fields mapped to roles become a `messages` list (system, user,
    assistant), fields mapped to format keys are renamed. Rows without the mapped fields are kept."""
    if not isinstance(obj, dict) or not columns or columns.keys().isdisjoint(obj):
        return obj
    roles = {target: field for field, target in columns.items() if target in COLUMN_ROLES and field in obj and target != "system"}
    system_field = next((field for field, target in columns.items() if target == "system" and field in obj), None)
    if roles:
        turns = ([("system", system_field)] if system_field else []) + [(role, roles[role]) for role in COLUMN_ROLES if role in roles]
        used = {field for _, field in turns}
        rest = {key: value for key, value in obj.items() if key not in used}
        return {"messages": [{"role": role, "content": obj[field]} for role, field in turns], **rest}
    return {columns.get(key, key): value for key, value in obj.items()}


def _alpaca_turn(role: str, value: Any, index: int, source: str) -> Message:
    valid = isinstance(value, str)
    return Message(role, value if valid else "", index, role, valid, source)


def _normalize_alpaca(obj: dict) -> list[Message]:
    messages: list[Message] = []
    if "system" in obj:
        messages.append(_alpaca_turn("system", obj["system"], 0, "system"))
    history = obj.get("history")
    if isinstance(history, list):
        for turn_index, pair in enumerate(history):
            if isinstance(pair, list) and len(pair) == 2:
                messages.append(_alpaca_turn("user", pair[0], len(messages), f"history[{turn_index}][0]"))
                messages.append(_alpaca_turn("assistant", pair[1], len(messages), f"history[{turn_index}][1]"))
    instruction = obj.get("instruction", "")
    extra_input = obj.get("input", "")
    if isinstance(instruction, str) and isinstance(extra_input, str):
        prompt = instruction if not extra_input.strip() else f"{instruction}\n\n{extra_input}"
        messages.append(Message("user", prompt, len(messages), "user", True, "instruction"))
    else:
        bad = "instruction" if not isinstance(instruction, str) else "input"
        messages.append(Message("user", "", len(messages), "user", False, bad))
    if "output" in obj:
        messages.append(_alpaca_turn("assistant", obj["output"], len(messages), "output"))
    return messages


def _normalize_prompt_completion(obj: dict) -> list[Message]:
    prompt, completion = obj.get("prompt"), obj.get("completion")
    if isinstance(prompt, list):
        messages = _normalize_message_list(prompt, RowFormat.PROMPT_COMPLETION, "prompt")
    else:
        messages = [_alpaca_turn("user", prompt, 0, "prompt")]
    if isinstance(completion, list):
        messages += _normalize_message_list(completion, RowFormat.PROMPT_COMPLETION, "completion", len(messages))
    else:
        messages.append(_alpaca_turn("assistant", completion, len(messages), "completion"))
    return messages


def raw_message_items(obj: dict, fmt: RowFormat) -> list[tuple[str, Any]]:
    """(source, raw message) pairs of a list-based row, for schema checks."""
    if fmt is RowFormat.MESSAGES:
        return [(f"messages[{i}]", item) for i, item in enumerate(_as_list(obj.get("messages")))]
    if fmt is RowFormat.SHAREGPT:
        return [(f"conversations[{i}]", item) for i, item in enumerate(_as_list(obj.get("conversations")))]
    if fmt in MESSAGE_LIST_KEYS:
        pairs = []
        for key in MESSAGE_LIST_KEYS[fmt]:
            if isinstance(obj.get(key), list):
                pairs += [(f"{key}[{i}]", item) for i, item in enumerate(obj[key])]
        return pairs
    return []


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def conversation_to_record(conversation: Conversation) -> dict[str, Any]:
    """An OpenAI `messages` record for a conversation (meta keys and `tools` preserved)."""
    record = {"messages": conversation.template_messages(), **conversation.meta}
    if conversation.tools is not None:
        record["tools"] = conversation.tools
    return record


def canonical_tool_calls(calls: Any) -> str:
    """Tool calls as one comparable text, a line per call: `name(arguments)` with the arguments
    parsed (OpenAI sends them as a JSON string) and written back as JSON with sorted keys and no
    spaces, so the same call written with another key order or spacing reads the same, and calls
    to other functions or with other arguments differ. Call ids are left out (they name a call,
    they do not say what it does)."""
    lines = []
    for call in calls if isinstance(calls, list) else [calls]:
        function = _function_of(call)
        if not isinstance(function, dict):
            lines.append(_canonical_json(function))
            continue
        arguments = function.get("arguments", function.get("parameters"))
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments)
            except ValueError:
                arguments = " ".join(arguments.split())
        name = function.get("name")
        lines.append(f"{name if isinstance(name, str) else _canonical_json(name)}({_canonical_json(arguments)})")
    return "\n".join(lines)


def tool_call_names(calls: Any) -> list[str]:
    """The function names of a message's tool calls (OpenAI `{"function": {"name": ...}}` or a bare `{"name": ...}`)."""
    names = []
    for call in calls if isinstance(calls, list) else [calls]:
        function = _function_of(call)
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            names.append(name)
    return names


def _function_of(call: Any) -> Any:
    """What a tool call calls: OpenAI's `function` table, or the call itself when it is bare."""
    return call.get("function", call) if isinstance(call, dict) else call


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def field_texts(fields: dict[str, Any] | None) -> tuple[str, str]:
    """(tool calls, other fields) of a message's template fields as comparable text (empty when
    absent): what duplicate and leakage keys add to the content, since the template renders them."""
    if not fields:
        return "", ""
    calls = canonical_tool_calls(fields["tool_calls"]) if "tool_calls" in fields else ""
    others = [f"{name}={value if isinstance(value, str) else _canonical_json(value)}" for name, value in sorted(fields.items()) if name not in ("tool_calls", "tool_call_id")]
    return calls, "\n".join(others)
