"""No report prints a secret: every quoted excerpt goes through QL006's masker, and QL006 scans every
string the chat template renders (tool call arguments) and every extra field."""

from __future__ import annotations

import json

import pytest

from curate.cli import main
from tests.conftest import write_jsonl
from tests.fixture_models import build_fixture_model

KEY = "sk-proj-T3kq9ZpL2mXv8RwYb4NcQa7HsJd1EfGu"
OTHER_KEY = "sk-proj-Wn5Bx2Kc8VmLq4ZrTy7PaHs3Dg6FjEu1"


def chat(*turns: tuple[str, str], **extra) -> dict:
    return {"messages": [{"role": role, "content": content} for role, content in turns], **extra}


SECRET_ROWS = [
    # CT004 quotes the dropped system prompt.
    chat(("system", f"Use the key {KEY} for every request to the billing API."), ("user", "Which key do I use?"), ("assistant", "The one in your settings.")),
    # DU003 quotes the two short answers.
    chat(("user", "What is the staging API key?"), ("assistant", f"It is {KEY} now")),
    chat(("user", "What is the staging API key?"), ("assistant", f"It is {OTHER_KEY} now")),
    # QL005 quotes the repeated line.
    chat(("user", "Print the config."), ("assistant", "\n".join([f"OPENAI_API_KEY={KEY}"] * 6))),
]


@pytest.mark.parametrize("fmt", ["text", "json", "github", "sarif"])
def test_no_report_format_prints_a_full_key(tmp_path, capsys, fmt):
    data = write_jsonl(tmp_path / "data.jsonl", SECRET_ROWS)
    model = build_fixture_model("drops-system", tmp_path)
    main(["lint", "--isolated", "--no-progress", "--select", "CT004,DU003,QL005", "--model", str(model), "--format", fmt, str(data)])
    out = capsys.readouterr().out
    for code in ("CT004", "DU003", "QL005"):
        assert code in out  # the findings that quote the content are there ...
    assert KEY not in out and OTHER_KEY not in out  # ... with the key masked
    assert KEY[:5] + "…" + KEY[-3:] in out


TOOL_ROW = {
    "id": "support-0042",
    "metadata": {"agent": "jonas.berg@outlook.com"},
    "messages": [
        {"role": "user", "content": "Send the monthly invoice to the customer."},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "send_invoice", "arguments": json.dumps({"to": "dana.whitfield@gmail.com", "api_key": KEY})}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "sent"}'},
        {"role": "assistant", "content": "The invoice is on its way."},
    ],
    "tools": [{"type": "function", "function": {"name": "send_invoice", "description": "Send an invoice; support: +44 20 7946 0958."}}],
}


def test_ql006_reports_tool_call_arguments_and_extra_fields(lint):
    result = lint([TOOL_ROW], select=["QL006"])
    messages = sorted(f.message for f in result.findings)
    assert any(m.startswith("messages[1] (assistant): tool_calls: ") and "email address da…@gmail.com" in m and "OpenAI API key sk-pr…" in m for m in messages), messages
    assert any(m.startswith("`metadata`: email address jo…@outlook.com") for m in messages), messages
    assert any(m.startswith("`tools`: phone number +44…58") for m in messages), messages
    assert all(KEY not in m for m in messages)


def test_fix_redact_pii_redacts_tool_call_arguments_and_extra_fields(tmp_path, capsys):
    data = write_jsonl(tmp_path / "data.jsonl", [TOOL_ROW])
    code = main(["fix", "--isolated", "--no-progress", "--select", "QL006", "--redact-pii", str(data), "-o", str(tmp_path / "out.jsonl")])
    capsys.readouterr()
    assert code == 0
    row = json.loads((tmp_path / "out.jsonl").read_text())
    assert json.loads(row["messages"][1]["tool_calls"][0]["function"]["arguments"]) == {"to": "[EMAIL]", "api_key": "[API_KEY]"}
    assert row["metadata"] == {"agent": "[EMAIL]"}
    assert row["tools"][0]["function"]["description"] == "Send an invoice; support: [PHONE]."


@pytest.mark.parametrize("name", ["calls 555 234 5678.jsonl", "ops@example.com.jsonl"])
def test_duplicate_findings_name_the_earlier_file_as_it_is(tmp_path, capsys, name):
    """DU001 and DU002 messages are made of locations and numbers only, so the masker leaves
    them alone: a file name it would take for a phone number or an email address is named whole
    (it used to read `calls 55…78.jsonl`, a file that does not exist)."""
    answer = "Open Settings, then Billing, then Invoices, and pick the month you need to download as a PDF file."
    first = write_jsonl(tmp_path / name, [chat(("user", "How do I get an invoice?"), ("assistant", answer))])
    second = write_jsonl(
        tmp_path / "later.jsonl",
        [chat(("user", "How do I get an invoice?"), ("assistant", answer)), chat(("user", "How do I get my invoice?"), ("assistant", answer))],
    )
    main(["lint", "--isolated", "--no-progress", "--select", "DU001,DU002", "--format", "json", str(first), str(second)])
    findings = json.loads(capsys.readouterr().out)["findings"]
    assert sorted(finding["code"] for finding in findings) == ["DU001", "DU002"]
    for finding in findings:
        assert f"{first}:1" in finding["message"], finding["message"]
