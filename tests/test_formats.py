"""Every supported row format normalizes to the same conversation."""

from __future__ import annotations

import pytest

from curate.formats import RowFormat, detect_format, normalize

EXPECTED = [("user", "What is 2+2?"), ("assistant", "4")]


@pytest.mark.parametrize(
    ("row", "fmt"),
    [
        ({"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]}, RowFormat.MESSAGES),
        ({"conversations": [{"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "4"}]}, RowFormat.SHAREGPT),
        ({"instruction": "What is 2+2?", "input": "", "output": "4"}, RowFormat.ALPACA),
        ({"prompt": "What is 2+2?", "completion": "4"}, RowFormat.PROMPT_COMPLETION),
        ({"prompt": [{"role": "user", "content": "What is 2+2?"}], "completion": [{"role": "assistant", "content": "4"}]}, RowFormat.PROMPT_COMPLETION),
        ({"messages": [{"role": "user", "content": [{"type": "text", "text": "What is "}, {"type": "text", "text": "2+2?"}]}, {"role": "assistant", "content": "4"}]}, RowFormat.MESSAGES),
    ],
    ids=["messages", "sharegpt", "alpaca", "prompt-completion", "conversational-prompt-completion", "content-parts"],
)
def test_formats_normalize_to_one_model(row, fmt):
    assert detect_format(row) is fmt
    conversation = normalize(row)
    assert [(m.role, m.content) for m in conversation.messages] == EXPECTED
    assert all(m.valid for m in conversation.messages)
    assert conversation.final_answer == "4"


def test_alpaca_input_joins_instruction_and_system_and_history_are_kept():
    row = {"system": "Be terse.", "history": [["Hi", "Hello"]], "instruction": "Add the numbers.", "input": "2 and 2", "output": "4"}
    conversation = normalize(row)
    assert [(m.role, m.content) for m in conversation.messages] == [
        ("system", "Be terse."),
        ("user", "Hi"),
        ("assistant", "Hello"),
        ("user", "Add the numbers.\n\n2 and 2"),
        ("assistant", "4"),
    ]
    assert conversation.messages[-1].source == "output"


def test_sharegpt_system_field_becomes_first_turn_and_meta_is_kept():
    row = {"id": 7, "system": "Be kind.", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hey"}]}
    conversation = normalize(row)
    assert [m.role for m in conversation.messages] == ["system", "user", "assistant"]
    assert conversation.meta == {"id": 7}
    assert conversation.messages[1].where == "conversations[0] (user)"


def test_malformed_messages_are_kept_but_marked_invalid():
    conversation = normalize({"messages": ["hi", {"role": "assistant", "content": 5}, {"role": "user", "content": "ok"}]})
    assert [m.valid for m in conversation.messages] == [False, False, True]


@pytest.mark.parametrize("row", [[], "text", 3, None, {"text": "no chat shape"}, {"prompt": "only a prompt"}])
def test_unknown_shapes(row):
    assert detect_format(row) is None
    assert normalize(row) is None
