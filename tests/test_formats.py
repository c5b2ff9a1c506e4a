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


@pytest.mark.parametrize("row", [[], "text", 3, None, {"txt": "no chat shape"}, {"text": 3}, {"prompt": "a prompt", "chosen": "no rejected side"}])
def test_unknown_shapes(row):
    assert detect_format(row) is None
    assert normalize(row) is None


USER = {"role": "user", "content": "What is 2+2?"}


def conv(row):
    return [(m.role, m.content, m.source) for m in normalize(row).messages]


@pytest.mark.parametrize(
    ("row", "fmt", "chosen", "rejected"),
    [
        ({"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}, RowFormat.PREFERENCE,
         [("user", "What is 2+2?", "prompt"), ("assistant", "4", "chosen")], [("user", "What is 2+2?", "prompt"), ("assistant", "5", "rejected")]),
        ({"prompt": [USER], "chosen": [{"role": "assistant", "content": "4"}], "rejected": [{"role": "assistant", "content": "5"}]}, RowFormat.PREFERENCE,
         [("user", "What is 2+2?", "prompt[0]"), ("assistant", "4", "chosen[0]")], [("user", "What is 2+2?", "prompt[0]"), ("assistant", "5", "rejected[0]")]),
        ({"chosen": [USER, {"role": "assistant", "content": "4"}], "rejected": [USER, {"role": "assistant", "content": "5"}]}, RowFormat.IMPLICIT_PREFERENCE,
         [("user", "What is 2+2?", "chosen[0]"), ("assistant", "4", "chosen[1]")], [("user", "What is 2+2?", "chosen[0]"), ("assistant", "5", "rejected[1]")]),
    ],
    ids=["standard", "conversational", "implicit-prompt"],
)
def test_preference_rows_normalize_to_both_sides(row, fmt, chosen, rejected):
    from curate.formats import preference_pair, rejected_side

    assert detect_format(row) is fmt
    assert conv(row) == chosen
    assert [(m.role, m.content, m.source) for m in rejected_side(row, fmt).messages] == rejected
    pair = preference_pair(row, fmt)
    assert [m.content for m in pair.prompt] == ["What is 2+2?"] and [m.content for m in pair.chosen] == ["4"]


def test_trl_text_prompt_only_and_kto_rows():
    from curate.formats import has_roles

    text = normalize({"text": "The sky is blue."})
    assert text.format is RowFormat.TEXT and not has_roles(text) and text.messages[0].content == "The sky is blue."
    prompt_only = {"prompt": [{"role": "user", "content": "Which is bigger, 9.11 or 9.9?"}]}
    assert detect_format(prompt_only) is RowFormat.PROMPT_ONLY and conv(prompt_only) == [("user", "Which is bigger, 9.11 or 9.9?", "prompt[0]")]
    kto = {"prompt": "What is 2+2?", "completion": "5", "label": False}
    assert detect_format(kto) is RowFormat.UNPAIRED_PREFERENCE and conv(kto)[-1] == ("assistant", "5", "completion")
    assert detect_format({"prompt": "q", "completion": "a", "label": "math"}) is RowFormat.PROMPT_COMPLETION
    assert has_roles(normalize(prompt_only)) and not has_roles(normalize({"chosen": "Q: hi A: hello", "rejected": "Q: hi A: go away"}))


def test_column_mapping_builds_messages_or_renames_keys():
    from curate.formats import apply_columns, column_problems

    gsm8k = {"question": "Natalia sold 48 clips...", "answer": "She sold 72.\n#### 72", "id": 3}
    mapped = apply_columns(gsm8k, {"question": "user", "answer": "assistant"})
    assert mapped == {"messages": [{"role": "user", "content": gsm8k["question"]}, {"role": "assistant", "content": gsm8k["answer"]}], "id": 3}
    assert apply_columns({"input": "2+2?", "target": "4"}, {"input": "prompt", "target": "completion"}) == {"prompt": "2+2?", "completion": "4"}
    assert apply_columns({"messages": []}, {"question": "user"}) == {"messages": []}
    assert column_problems({"question": "asker"}) and not column_problems({"q": "user", "a": "completion"})


def test_mixed_row_formats_are_counted_per_file(tmp_path):
    """SC010 takes each file's dominant format on its own: a file of Alpaca rows with one chat row
    beside a file of chat rows with one Alpaca row flags one row in each."""
    from curate.engine.runner import run_lint
    from curate.engine.settings import LintRequest, plan_lint
    from tests.conftest import write_jsonl

    chat = {"messages": [{"role": "user", "content": "What is 6 times 7?"}, {"role": "assistant", "content": "42"}]}
    alpaca = {"instruction": "What is 6 times 7?", "input": "", "output": "42"}
    first = write_jsonl(tmp_path / "a.jsonl", [alpaca, alpaca, chat, alpaca])
    second = write_jsonl(tmp_path / "b.jsonl", [chat, alpaca, chat, chat, chat])
    result = run_lint(plan_lint(LintRequest(paths=[str(first), str(second)], select=["SC010"], isolated=True)), batch_size=2)
    assert [(f.path, f.line, f.data["format"], f.data["dominant"]) for f in result.findings] == [
        (str(first), 3, "messages", "alpaca"),
        (str(second), 2, "alpaca", "messages"),
    ]
    assert "3 of 4 rows in this file use alpaca" in result.findings[0].message


def test_mixed_row_formats_in_one_batch_of_two_files(tmp_path):
    """Rows of two files in one batch (a dataset's splits): a format seen in only one of them
    counts in that one."""
    from curate.engine.batch import Batch
    from curate.engine.rule import load_builtin_rules
    from curate.io import RawRow

    chat = {"messages": [{"role": "user", "content": "What is 6 times 7?"}, {"role": "assistant", "content": "42"}]}
    alpaca = {"instruction": "What is 6 times 7?", "input": "", "output": "42"}
    rows = [("a", chat), ("a", chat), ("a", alpaca), ("b", chat), ("b", chat)]
    rule = load_builtin_rules()["SC010"]()
    rule.observe(Batch.from_raw([RawRow(path, line, None, obj=obj) for line, (path, obj) in enumerate(rows, start=1)]))
    assert [(f.path, f.line) for f in rule.finish()] == [("a", 3)]
