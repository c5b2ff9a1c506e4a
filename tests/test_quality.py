"""Quality-rule behaviour that case files cannot express: redaction in every output
format, the fix helper for control characters, and the planted sample problems."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from curate.text.secrets import luhn_valid, redact
from curate.rules.quality import strip_control_characters
from tests.conftest import ROOT, SAMPLES, write_jsonl

SECRETS = {
    "openai": "sk-proj-4f9KxB2mQ7vLr8TzP1wYcN3dE6hJ0aSg",
    "github": "ghp_8fK2mQ9xLr4TzP1wYcN3dE6hJ0aSgB7vUq5W",
    "aws": "AKIAZ7QK3LMN4PRS2TUV",
    "email": "dana.whitfield@gmail.com",
    "card": "4111 1111 1111 1111",
    "phone": "+49 30 9018 2731",
}


def lint_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate", "lint", "--isolated", *args], capture_output=True, text=True, cwd=ROOT)


@pytest.mark.parametrize("fmt", ["text", "json", "github", "sarif"])
def test_reports_never_contain_a_full_secret(tmp_path, fmt):
    rows = [{"messages": [{"role": "user", "content": f"here: {secret}"}, {"role": "assistant", "content": "Thanks."}]} for secret in SECRETS.values()]
    data = write_jsonl(tmp_path / "secrets.jsonl", rows)
    result = lint_cli(str(data), "--select", "QL006", "--format", fmt)
    assert result.returncode in (0, 1), result.stderr
    assert result.stdout.count("QL006") >= len(SECRETS)
    for secret in SECRETS.values():
        assert secret not in result.stdout
        assert secret.replace(" ", "") not in result.stdout


def test_json_data_holds_kinds_and_previews_only(tmp_path):
    data = write_jsonl(tmp_path / "one.jsonl", [{"messages": [{"role": "user", "content": f"key {SECRETS['openai']}"}, {"role": "assistant", "content": "ok"}]}])
    finding = json.loads(lint_cli(str(data), "--select", "QL006", "--format", "json").stdout)["findings"][0]
    assert finding["data"]["kinds"] == ["api-key"]
    assert finding["data"]["previews"] == ["sk-pr…aSg"]
    assert finding["data"]["message_index"] == 0 and finding["data"]["role"] == "user"


def test_redact_keeps_short_values_short():
    assert redact("sk-proj-4f9KxB2mQ7vLr8TzP1wYcN3dE6hJ0aSg") == "sk-pr…aSg"
    assert redact("abcdefghij") == "ab…"


def test_luhn():
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert luhn_valid("378282246310005")


def test_strip_control_characters_keeps_text_whitespace_and_emoji():
    text = "\x1b[31mError\x1b[0m:\tdisk\x00 full\u202e\nnext line \U0001F468\u200d\U0001F469"
    assert strip_control_characters(text) == "Error:\tdisk full\nnext line \U0001F468\u200d\U0001F469"


def test_samples_show_the_planted_quality_problems():
    result = lint_cli(str(SAMPLES / "support-chat.jsonl"), str(SAMPLES / "alpaca-tasks.jsonl"), "--select", "QL", "--format", "json")
    findings = json.loads(result.stdout)["findings"]
    found = {(f["path"].rsplit("/", 1)[-1], f["code"]) for f in findings}
    expected = {("support-chat.jsonl", code) for code in ("QL001", "QL002", "QL003", "QL005", "QL006")}
    expected |= {("alpaca-tasks.jsonl", code) for code in ("QL001", "QL003", "QL004")}
    assert expected <= found
    secret_rows = [f for f in findings if f["code"] == "QL006"]
    assert {tuple(f["data"]["kinds"]) for f in secret_rows} == {("card", "email"), ("api-key",)}


def test_clean_sample_has_no_findings():
    result = lint_cli(str(SAMPLES / "clean-chat.jsonl"), "--format", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["findings"] == []


@pytest.mark.parametrize("code", ["QL001", "QL002", "QL003", "QL004", "QL005", "QL006"])
def test_documented_example_fires(code, tmp_path):
    """The `## Example` block of each row rule's documentation is a row the rule reports."""
    import re

    from curate.engine.rule import load_builtin_rules
    from tests.conftest import lint_rows

    doc = load_builtin_rules()[code].documentation()
    example = re.search(r"## Example\s*```jsonl\n(.*?)```", doc, re.S).group(1)
    rows = [line for line in example.splitlines() if line.strip()]
    result = lint_rows(tmp_path, rows, select=[code])
    assert sorted({f.line for f in result.findings}) == list(range(1, len(rows) + 1)), [f.message for f in result.findings]
