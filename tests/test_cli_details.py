"""Small things users hit: rule option defaults, key suggestions, the train lint gate's summary."""

from __future__ import annotations

import io

from curate.engine.rule import load_builtin_rules


def test_rules_show_real_defaults_for_every_option():
    from curate.commands.rules import options_doc

    registry = load_builtin_rules()
    for rule in registry.values():
        assert "PydanticUndefined" not in options_doc(rule), rule.code
    text = options_doc(registry["SC008"])
    assert '`allowed` (default `["id", "label"' in text
    assert "`threshold` (default `0.85`)" in options_doc(registry["DU002"]) or "(default `0.8" in options_doc(registry["DU002"])


def test_key_suggestions_never_name_a_key_already_there(lint):
    result = lint([{"prompt": "2+2?", "completion": "4", "complettion": "5"},
                   {"messages": [{"role": "user", "content": "hi", "contnet": "x"}, {"role": "assistant", "content": "Hello"}]},
                   {"promt": "2+2?", "completion": "4"}], select=["SC002", "SC008"])
    messages = {f.line: f.message for f in result.findings}
    assert "did you mean" not in messages[1] and "did you mean" not in messages[2]
    assert "`promt` (did you mean `prompt`?)" in messages[3] and "`completion` (did you mean" not in messages[3]


def test_train_lint_gate_prints_a_summary_not_every_finding(tmp_path):
    from curate.engine.settings import LintRequest, plan_lint
    from curate.train.gate import lint_gate
    from tests.conftest import write_jsonl

    rows = [{"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": ""}]} for i in range(40)]
    data = write_jsonl(tmp_path / "train.jsonl", rows + ["{broken"])
    plan = plan_lint(LintRequest(paths=[str(data)], isolated=True, select=["SC"]))
    out = io.StringIO()
    outcome, result = lint_gate(plan, force=False, report_to=out)
    text = out.getvalue()
    assert not outcome.passed and len(result.findings) == 41
    assert "SC005 empty-content [error]: 40" in text and "SC001 invalid-json [error]: 1" in text
    assert f"see every finding with: curate lint {data}" in text
    assert "Question 7" not in text and ":12:" not in text and len(text.splitlines()) < 6
