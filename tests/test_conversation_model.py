"""The conversation model keeps what a chat template renders, and lint, dedup and train all use it."""

from __future__ import annotations

import json

from curate.engine.batch import Batch
from curate.formats import canonical_tool_calls, normalize
from curate.io import read_rows
from curate.rules.template import BatchRenderer
from curate.templates import ChatTemplate
from curate.text.rows import batch_features
from curate.train.data import read_conversations
from tests.conftest import write_jsonl

TOOLS = [{"type": "function", "function": {"name": "archive_files", "description": "Archive old files.",
                                           "parameters": {"type": "object", "properties": {"older_than_days": {"type": "integer"}}}}}]


def tool_call_row(name: str = "archive_files", arguments: str = '{"older_than_days": 30}', call_id: str = "call_7Qx2") -> dict:
    """An OpenAI tool-call conversation: the call (arguments as a JSON string), the tool turn, the answer."""
    return {
        "messages": [
            {"role": "system", "content": "You manage the user's files."},
            {"role": "user", "content": "My disk is almost full. Free up some space, please."},
            {"role": "assistant", "content": None, "reasoning_content": "Old files can go to the archive.",
             "tool_calls": [{"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": call_id, "name": name, "content": '{"archived": 112, "freed_mb": 840}'},
            {"role": "assistant", "content": "I archived 112 files older than 30 days and freed 840 MB."},
        ],
        "tools": TOOLS,
    }


def test_template_messages_keep_tool_calls_ids_names_and_reasoning():
    conversation = normalize(tool_call_row())
    messages = conversation.template_messages()
    assert messages[2]["tool_calls"][0]["function"] == {"name": "archive_files", "arguments": '{"older_than_days": 30}'}
    assert messages[2]["reasoning_content"] == "Old files can go to the archive."
    assert messages[3] == {"role": "tool", "content": '{"archived": 112, "freed_mb": 840}', "tool_call_id": "call_7Qx2", "name": "archive_files"}
    assert conversation.tools == TOOLS


def test_trainer_and_template_rules_render_the_same_messages(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [tool_call_row()])
    trained, skipped = read_conversations(path)
    template = ChatTemplate("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}{{ m.get('tool_calls', '') }}\n{% endfor %}")
    rendered = BatchRenderer(template).rendered(Batch.from_raw(list(read_rows(path))))
    assert skipped == 0
    assert trained[0].messages == rendered[0].messages == normalize(tool_call_row()).template_messages()
    assert "archive_files" in rendered[0].text
    assert rendered[0].tools == TOOLS


def test_canonical_tool_calls_ignore_key_order_spacing_and_ids():
    first = [{"id": "a", "type": "function", "function": {"name": "search", "arguments": '{"q": "weather", "city": "Oslo"}'}}]
    second = [{"id": "b", "type": "function", "function": {"name": "search", "arguments": '{ "city":"Oslo",\n "q" : "weather" }'}}]
    other = [{"id": "a", "type": "function", "function": {"name": "search", "arguments": '{"q": "weather", "city": "Bergen"}'}}]
    assert canonical_tool_calls(first) == canonical_tool_calls(second) == 'search({"city":"Oslo","q":"weather"})'
    assert canonical_tool_calls(other) != canonical_tool_calls(first)


def test_conversation_keys_include_tool_calls_and_tool_results(tmp_path):
    rows = [tool_call_row(), tool_call_row("delete_all_files", '{"path": "/"}'), tool_call_row(arguments='{"older_than_days":30}', call_id="x")]
    result_changed = json.loads(json.dumps(tool_call_row()))
    result_changed["messages"][3]["content"] = '{"archived": 0, "freed_mb": 0}'
    path = write_jsonl(tmp_path / "data.jsonl", [*rows, result_changed])
    features = batch_features(Batch.from_raw(list(read_rows(path))))
    keys = features["conversation_key"].to_list()
    assert keys[0] == keys[2]  # the same call, respelled
    assert len({keys[0], keys[1], keys[3]}) == 3  # another function; another tool result
