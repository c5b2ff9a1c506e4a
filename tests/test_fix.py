"""`curate fix`: what it drops, repairs and prints, and that its output lints clean."""

from __future__ import annotations

import json

import pytest

from curate.cli import main
from curate.decisions import Action, Decision, DecisionJournal, journal_path
from curate.engine.findings import Finding, Location, Severity
from curate.engine.rule import load_builtin_rules
from curate.engine.runner import LintResult
from curate.fix import plan_row_fixes
from curate.rules.duplicates import duplicate_groups
from curate.rules.quality import strip_row_control_characters
from curate.io import read_rows, row_hash
from tests.conftest import write_jsonl

REGISTRY = load_builtin_rules()


def chat(user: str, answer: str, **extra) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}], **extra}


def lines_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def fix(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["fix", "--isolated", "--no-progress", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


BROKEN_ROWS = [
    chat("How do I reset my password?", "Open settings, then choose reset."),
    '{"messages": [{"role": "user", "content": "cut off"',
    {"messages": [{"role": "user", "content": "no answer here"}]},
    chat("What is the refund window?", "Thirty days from delivery."),
    {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "empty question"}]},
]


def test_fix_drops_broken_rows_prints_counts_and_leaves_input(tmp_path, capsys):
    data = write_jsonl(tmp_path / "data.jsonl", BROKEN_ROWS)
    original = data.read_bytes()
    code, out, _ = fix(capsys, str(data))
    assert code == 0
    clean = tmp_path / "data.clean.jsonl"
    assert [row["messages"][0]["content"] for row in lines_of(clean)] == ["How do I reset my password?", "What is the refund window?"]
    assert data.read_bytes() == original
    for rule in ("SC001  invalid-json", "SC005  empty-content", "SC006  missing-assistant-turn"):
        assert rule in out
    assert f"wrote 2 rows to {clean}" in out
    result = _lint_file(clean)
    assert not [f for f in result.findings if f.code.startswith("SC")]


def _lint_file(path):
    from curate.engine.runner import run_lint
    from curate.engine.settings import LintRequest, plan_lint

    return run_lint(plan_lint(LintRequest(paths=[str(path)], isolated=True)))


def test_fix_removes_unexpected_keys_and_unifies_mixed_formats(tmp_path, capsys):
    rows = [
        chat("Where is my order?", "It ships tomorrow.", id=1),
        chat("Can I change my address?", "Yes, under account settings.", sorce="crm"),
        chat("Do you ship abroad?", "To 30 countries."),
        {"instruction": "Translate to French", "input": "good morning", "output": "bonjour"},
    ]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    code, out, _ = fix(capsys, str(data), "-o", str(tmp_path / "out.jsonl"))
    assert code == 0
    written = lines_of(tmp_path / "out.jsonl")
    assert "sorce" not in written[1] and written[0]["id"] == 1
    assert written[3]["messages"][-1] == {"role": "assistant", "content": "bonjour"}
    assert "keys removed" in out and "converted to messages" in out
    assert not [f for f in _lint_file(tmp_path / "out.jsonl").findings if f.code.startswith("SC")]


def test_fix_keeps_rows_that_differ_only_in_their_tool_calls(tmp_path, capsys):
    def calling(name: str, arguments: str) -> dict:
        return {"messages": [
            {"role": "user", "content": "Free up some disk space."},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": name, "arguments": arguments}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true}'},
            {"role": "assistant", "content": "Done."},
        ]}

    rows = [calling("archive_files", '{"older_than_days": 30}'), calling("delete_all_files", '{"path": "/"}'), calling("archive_files", '{"older_than_days":30}')]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    code, _, _ = fix(capsys, str(data), "--select", "DU", "-o", str(tmp_path / "out.jsonl"))
    assert code == 0
    written = lines_of(tmp_path / "out.jsonl")
    assert [row["messages"][1]["tool_calls"][0]["function"]["name"] for row in written] == ["archive_files", "delete_all_files"]


def test_fix_renames_role_aliases_in_messages_rows_and_drops_empty_conversations(tmp_path, capsys):
    rows = [
        {"messages": [{"role": "human", "content": "Where is my order?"}, {"role": "bot ", "content": "It ships tomorrow."}]},
        {"messages": [{"role": "user", "content": "Do you ship abroad?"}, {"role": "Assistant", "content": "To 30 countries."}]},
        {"messages": []},
        {"messages": [{"role": "user", "content": "Can I pay by card?"}, {"role": "assistant", "content": "Yes, every major card."}]},
    ]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    code, out, _ = fix(capsys, str(data), "-o", str(tmp_path / "out.jsonl"))
    assert code == 0
    written = lines_of(tmp_path / "out.jsonl")
    assert [[m["role"] for m in row["messages"]] for row in written[:2]] == [["user", "assistant"], ["user", "assistant"]]
    assert written[2] == rows[3]
    assert "roles renamed" in out
    assert not [f for f in _lint_file(tmp_path / "out.jsonl").findings if f.code.startswith("SC")]


@pytest.mark.skipif("DU001" not in REGISTRY, reason="duplicate rules (DU001/DU002) are not registered yet")
def test_fix_output_has_no_duplicates_on_relint(tmp_path, capsys):
    base = "Restart the router, wait thirty seconds, then reconnect the device and check the status light on the front panel"
    rows = [
        chat("My internet keeps dropping every evening, what should I do?", base),
        chat("How long does shipping take to Canada?", "Usually five to seven business days."),
        chat("My internet keeps dropping every evening, what should I do?", base),
        chat("My internet keeps dropping every single evening, what should I do?", base + "."),
        chat("Which payment cards do you accept?", "Visa, Mastercard and American Express."),
    ]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    code, out, _ = fix(capsys, str(data))
    assert code == 0 and "DU00" in out
    clean = tmp_path / "data.clean.jsonl"
    written = lines_of(clean)
    assert written[0] == rows[0] and rows[2] not in written[1:]
    codes = {f.code for f in _lint_file(clean).findings}
    assert not codes & {"DU001", "DU002"} and not any(code.startswith("SC") for code in codes)


def test_fix_applies_the_review_journal(tmp_path, capsys):
    rows = [chat(f"question {i}", f"answer {i}") for i in range(1, 5)]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    hashes = {row.line: row_hash(row) for row in read_rows(data)}
    with DecisionJournal.open(data, hashes) as journal:
        journal.record([Decision(Action.DROP, 2, hashes[2])])
        journal.record([Decision(Action.EDIT, 3, hashes[3], row=chat("question 3", "a reviewed answer"))])
    code, out, _ = fix(capsys, str(data))
    assert code == 0 and "applied the review journal data.jsonl.curate-review.jsonl" in out
    written = lines_of(tmp_path / "data.clean.jsonl")
    assert [row["messages"][1]["content"] for row in written] == ["answer 1", "a reviewed answer", "answer 4"]
    code, out, _ = fix(capsys, str(data), "--no-journal", "-o", str(tmp_path / "raw.jsonl"))
    assert len(lines_of(tmp_path / "raw.jsonl")) == 4


def test_fix_reads_the_journal_of_a_review_still_open_and_says_so(tmp_path, capsys):
    import os

    data = write_jsonl(tmp_path / "data.jsonl", [chat(f"question {i}", f"answer {i}") for i in range(1, 5)])
    hashes = {row.line: row_hash(row) for row in read_rows(data)}
    with DecisionJournal.open(data, hashes) as journal:
        journal.record([Decision(Action.DROP, 2, hashes[2])])
        code, out, _ = fix(capsys, str(data))
        assert code == 0 and f"`curate review` (pid {os.getpid()}) still has it open" in out
        assert len(lines_of(tmp_path / "data.clean.jsonl")) == 3
        journal.record([Decision(Action.DROP, 3, hashes[3])])  # the session goes on unharmed


def test_dry_run_writes_nothing(tmp_path, capsys):
    data = write_jsonl(tmp_path / "data.jsonl", BROKEN_ROWS)
    code, out, _ = fix(capsys, str(data), "--dry-run")
    assert code == 0 and "would write 2 rows" in out
    assert not (tmp_path / "data.clean.jsonl").exists()


def test_output_choices_are_checked_before_linting(tmp_path, capsys):
    one = write_jsonl(tmp_path / "one.jsonl", BROKEN_ROWS[:1])
    two = write_jsonl(tmp_path / "two.jsonl", BROKEN_ROWS[3:4])
    code, _, err = fix(capsys, str(one), str(two), "-o", str(tmp_path / "out.jsonl"))
    assert code == 2 and "--output-dir" in err and len(err.strip().splitlines()) == 1
    code, _, err = fix(capsys, str(one), "-o", str(one))
    assert code == 2 and "overwrite the input" in err
    code, out, _ = fix(capsys, str(one), str(two), "--output-dir", str(tmp_path / "clean"))
    assert code == 0 and (tmp_path / "clean" / "one.clean.jsonl").exists() and (tmp_path / "clean" / "two.clean.jsonl").exists()


def test_missing_input_is_one_line(tmp_path, capsys):
    code, _, err = fix(capsys, str(tmp_path / "nope.jsonl"))
    assert code == 2 and "no such file" in err and "Traceback" not in err


# -- planning from synthetic findings: works for whatever rules exist --------------------------


def finding(code: str, line: int, *, related: list[int] = (), severity=Severity.WARNING, path="d.jsonl", **data) -> Finding:
    return Finding(code, code.lower(), severity, path, line, "m", [Location(path, r) for r in related], data)


def result_of(findings: list[Finding], rows: int = 10, options: dict[str, dict] | None = None) -> LintResult:
    """A lint result with the fixable rules configured as `options` says (e.g. {"LK001": {"drop": True}})."""
    options = options or {}
    fixers = {code: rule(rule.Options(**options.get(code, {}))) for code, rule in REGISTRY.items() if rule.fixable}
    return LintResult(findings=findings, rows=rows, files=["d.jsonl"], row_hashes={("d.jsonl", line): f"h{line}" for line in range(1, rows + 1)}, fixers=fixers)


def rewrites(fix) -> list[tuple[str, str]]:
    return [(code, action.verb) for code, action in fix.rewrites]


def test_duplicate_groups_join_chains_and_clusters():
    findings = [
        finding("DU002", 5, related=[2]),
        finding("DU002", 9, related=[5]),
        finding("DU001", 7, related=[3], cluster=[{"path": "d.jsonl", "line": 3}, {"path": "d.jsonl", "line": 8}]),
        finding("QL001", 4),
    ]
    assert duplicate_groups(findings) == [[("d.jsonl", 2), ("d.jsonl", 5), ("d.jsonl", 9)], [("d.jsonl", 3), ("d.jsonl", 7), ("d.jsonl", 8)]]


def test_plan_keeps_first_survivor_and_honours_the_reviewer():
    from curate.decisions import ReviewState

    findings = [finding("DU001", 5, related=[2]), finding("DU001", 8, related=[2]), finding("SC006", 2, severity=Severity.ERROR)]
    fixes = plan_row_fixes(result_of(findings), {})
    # row 2 is broken, so the first surviving copy (5) is kept and 8 dropped
    assert fixes[("d.jsonl", 2)].drop == "SC006" and not fixes[("d.jsonl", 5)].drop and fixes[("d.jsonl", 8)].drop == "DU001"
    state = ReviewState()
    state.apply(Decision(Action.KEEP, 8, "h8"))
    state.apply(Decision(Action.WAIVE, 2, "h2", code="SC006"))
    fixes = plan_row_fixes(result_of(findings), {"d.jsonl": state})
    assert not fixes[("d.jsonl", 2)].drop and fixes[("d.jsonl", 5)].drop == "DU001" and not fixes[("d.jsonl", 8)].drop


def test_plan_drops_leaks_only_when_asked_and_strips_controls():
    findings = [finding("LK001", 3, related=[1], severity=Severity.ERROR), finding("QL002", 4)]
    assert not plan_row_fixes(result_of(findings), {}).get(("d.jsonl", 3), None).drop
    fixes = plan_row_fixes(result_of(findings, options={"LK001": {"drop": True}}), {})
    assert fixes[("d.jsonl", 3)].drop == "LK001" and rewrites(fixes[("d.jsonl", 4)]) == [("QL002", "cleaned")]


def test_strip_control_characters_keeps_newlines_and_tabs():
    dirty = {"messages": [{"role": "user", "content": "a\x00b\x1b[31mred\x1b[0m\tc\nd\x7f\x85e"}]}
    assert strip_row_control_characters(dirty) == {"messages": [{"role": "user", "content": "abred\tc\nde"}]}


def test_plan_drops_placeholder_answers_and_clears_placeholder_inputs():
    findings = [finding("QL001", 2, role="assistant", message_index=1), finding("QL001", 3, source="input", role="user")]
    fixes = plan_row_fixes(result_of(findings), {})
    assert fixes[("d.jsonl", 2)].drop == "QL001"
    assert not fixes[("d.jsonl", 3)].drop and rewrites(fixes[("d.jsonl", 3)]) == [("QL001", "placeholder input cleared")]


PII_ROWS = [
    chat("Confirm my billing email?", "Invoices go to dana.whitfield@gmail.com; cc dana.whitfield@gmail.com too."),
    chat("Why does my integration fail?", "Your key sk-proj-4f9KxB2mQ7vLr8TzP1wYcN3dE6hJ0aSg is valid; fix the URL. Docs: help@example.com"),
    chat("Here is my server key", "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq\n-----END RSA PRIVATE KEY-----\nNever paste keys."),
    chat("What is the refund window?", "Thirty days from delivery."),
]


def test_fix_redacts_pii_only_when_asked(tmp_path, capsys):
    data = write_jsonl(tmp_path / "data.jsonl", PII_ROWS)
    fix(capsys, str(data), "--select", "QL006", "-o", str(tmp_path / "kept.jsonl"))
    assert "dana.whitfield@gmail.com" in (tmp_path / "kept.jsonl").read_text()

    code, out, _ = fix(capsys, str(data), "--select", "QL006", "--redact-pii", "-o", str(tmp_path / "redacted.jsonl"))
    assert code == 0
    answers = [row["messages"][1]["content"] for row in lines_of(tmp_path / "redacted.jsonl")]
    assert answers[0] == "Invoices go to [EMAIL]; cc [EMAIL] too."  # every occurrence, not just the first
    assert answers[1] == "Your key [API_KEY] is valid; fix the URL. Docs: help@example.com"  # reserved domain kept
    assert answers[2] == "[PRIVATE_KEY]\nNever paste keys."  # the whole block, not only its header
    assert answers[3] == "Thirty days from delivery."
    assert "QL006  pii-or-secret  redacted" in out and out.split("redacted")[1].split()[0] == "3"
    assert not [f for f in _lint_file(tmp_path / "redacted.jsonl").findings if f.code == "QL006"]


def journal_with(data, *decisions: tuple) -> None:
    hashes = {row.line: row_hash(row) for row in read_rows(data)}
    with DecisionJournal.open(data, hashes) as journal:
        for action, line, *rest in decisions:
            kwargs = rest[0] if rest else {}
            journal.record([Decision(action, line, hashes[line], **kwargs)])


def test_a_reviewers_keep_does_not_turn_off_redaction_nor_hide_secrets(tmp_path, capsys):
    rows = [*PII_ROWS, chat("How do I reach billing?", "Mail dana.whitfield@gmail.com or call.")]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    # k on row 1 and 2 (for another finding, say), an edit of row 5 that keeps the address
    journal_with(data, (Action.KEEP, 1), (Action.KEEP, 2), (Action.EDIT, 5, {"row": chat("How do I reach billing?", "Write to dana.whitfield@gmail.com.")}))
    code, out, _ = fix(capsys, str(data), "--select", "QL006", "--redact-pii", "-o", str(tmp_path / "redacted.jsonl"))
    assert code == 0
    answers = [row["messages"][1]["content"] for row in lines_of(tmp_path / "redacted.jsonl")]
    assert answers[0] == "Invoices go to [EMAIL]; cc [EMAIL] too." and answers[1].startswith("Your key [API_KEY]")
    assert answers[4] == "Write to [EMAIL]."
    assert "dana.whitfield" not in (tmp_path / "redacted.jsonl").read_text()
    code, out, _ = fix(capsys, str(data), "--select", "QL006", "-o", str(tmp_path / "kept.jsonl"))
    assert "findings left for `curate review`: QL006 4" in out  # kept rows still show their secrets


def test_only_waiving_the_secret_itself_exempts_a_row_from_redaction(tmp_path, capsys):
    data = write_jsonl(tmp_path / "data.jsonl", PII_ROWS)
    journal_with(data, (Action.WAIVE, 1, {"code": "QL006"}))
    fix(capsys, str(data), "--select", "QL006", "--redact-pii", "-o", str(tmp_path / "out.jsonl"))
    answers = [row["messages"][1]["content"] for row in lines_of(tmp_path / "out.jsonl")]
    assert "dana.whitfield@gmail.com" in answers[0] and "[API_KEY]" in answers[1]


def test_dry_run_leaves_the_journal_byte_for_byte(tmp_path, capsys):
    data = write_jsonl(tmp_path / "data.jsonl", BROKEN_ROWS)
    journal_with(data, (Action.DROP, 1), (Action.KEEP, 4))
    path = journal_path(data)
    with path.open("ab") as handle:
        handle.write(b'{"op": "decide", "decisions": [{"action": "dr')  # a review killed mid-write
    before = path.read_bytes()
    code, out, _ = fix(capsys, str(data), "--dry-run")
    assert code == 0 and "would write 1 rows" in out and "incomplete" in out
    assert path.read_bytes() == before and not (tmp_path / "data.clean.jsonl").exists()
    code, out, _ = fix(capsys, str(data))  # a real run does not change the review's journal either
    assert code == 0 and path.read_bytes() == before


def test_a_fix_killed_mid_write_leaves_a_temp_that_the_next_run_removes(tmp_path, capsys):
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    data = write_jsonl(tmp_path / "data.jsonl", BROKEN_ROWS)
    script = (
        "import os, signal\n"
        "from curate.cli import main\n"
        "os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)  # die between the temp and the rename\n"
        f"main(['fix', {str(data)!r}, '--isolated', '--no-progress'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == -signal.SIGKILL
    left = list(tmp_path.glob(".data.clean.jsonl.*.tmp"))
    assert len(left) == 1 and not (tmp_path / "data.clean.jsonl").exists()
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
        busy = tmp_path / f".data.clean.jsonl.{alive.pid}.abcd1234.tmp"  # a write still in progress
        busy.write_text("partial")
        foreign = tmp_path / ".data.clean.jsonl.backup.tmp"  # not a name we make
        foreign.write_text("someone's file")
        code, out, _ = fix(capsys, str(data))
        alive.kill()
    assert code == 0 and len(lines_of(tmp_path / "data.clean.jsonl")) == 2
    assert not left[0].exists() and busy.exists() and foreign.exists()


def test_the_lint_report_counts_the_findings_fix_will_change(tmp_path, capsys):
    rows = [
        chat("What is the capital of Peru?", "Lima."),
        {"messages": [{"role": "assistant", "content": "Welcome!"}, {"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hi"}]},
        {"messages": [{"role": "user", "content": "What is the capital of Chile?"}, {"role": "bot", "content": "Santiago."}]},
        chat("Summarize the attached PDF for me.", "It covers the refund policy."),
    ]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    main(["lint", "--isolated", "--select", "SC004,SC007,QL004", str(data)])
    out = capsys.readouterr().out
    # SC007 (dropped) and SC004 (renamed) are fixed; QL004 is for a reviewer.
    assert "SC007" in out and "SC004" in out and "QL004" in out
    assert "2 can be fixed with `curate fix`" in out


def test_fixable_is_derived_from_the_fix_hook_and_cannot_be_claimed():
    from curate.engine.rule import RowRule

    doc = "Claims.\n\n## What it does\nx\n## Why is this bad\nx\n## Example\nx\n## Use instead\nx\n"
    with pytest.raises(TypeError, match="fixable is derived from `fix`"):
        type("ClaimsAFix", (RowRule,), {"__doc__": doc, "code": "ZZ901", "name": "claims-a-fix", "fixable": True})
    assert not REGISTRY["QL004"].fixable and REGISTRY["SC007"].fixable
