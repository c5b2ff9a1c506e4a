"""Output-format (OF) and balance (BL) rules on datasets too big for a case file, the output
classifier on realistic answers, and the shipped samples."""

from __future__ import annotations

import io
import random

import pytest

from curate.engine.report import write_text
from curate.engine.runner import run_lint
from curate.engine.settings import LintRequest, plan_lint
from curate.rules.output_format import DominantSchema, OutputFormat, classify_outputs, json_shape
from tests.conftest import SAMPLES, write_jsonl

PROSE = [
    "Your order shipped this morning and should arrive on Friday.",
    "You can change the billing name under Settings, then Billing, then Invoice details.",
    "Codes sometimes land in spam. I have switched your account to app verification.",
    "Annual plans can be refunded in full within 30 days of purchase.",
]


def chat(answer: str, **extra) -> dict:
    return {**extra, "messages": [{"role": "user", "content": "Help me, please."}, {"role": "assistant", "content": answer}]}


def codes(result, code: str) -> list:
    return [finding for finding in result.findings if finding.code == code]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"order_id": 48213, "status": "shipped", "eta_days": 2}', "json"),
        ('[{"sku": "A1", "qty": 2}, {"sku": "B7", "qty": 1}]', "json"),
        ('  \n{"nested": {"a": [1, 2, {"b": null}]}}\n', "json"),
        ("[1, 2, 3]", "json"),
        ('{"order_id": 48213, "status": "shipped",}', "json-like"),
        ('{"plan": "family", "seats": 5,', "json-like"),
        ("{'plan': 'family', 'seats': 5}", "json-like"),
        ('{plan: "family"}', "json-like"),
        ('{"status": "ok"}\nLet me know if you need anything else!', "json-like"),
        ("```python\ndef add(a, b):\n    return a + b\n```", "code"),
        ('```json\n{"status": "shipped"}\n```', "code"),
        ("Here it is:\n```js\nconst total = items.reduce((a, b) => a + b, 0);\nconsole.log(total);\n```", "code"),
        ("import os\n\nfor name in os.listdir('.'):\n    print(name)", "code"),
        ("SELECT id, email\nFROM users\nWHERE active = 1;", "code"),
        ('<ul class="menu">\n  <li>Home</li>\n</ul>', "code"),
        ("| Plan | Seats | Price |\n|------|------:|------:|\n| Solo | 1 | 5 |\n| Team | 10 | 40 |", "markdown"),
        ("## Steps\nOpen the app and sign in again.", "markdown"),
        ("Try these:\n\n1. Restart the router.\n2. Update the firmware.\n3. Call us if it still drops.", "markdown"),
        ("- Keep the receipt\n- Pack the device in its box", "markdown"),
        ("Run the command below, then restart the service so the new settings load and the cache is rebuilt from scratch.\n\n```\nsudo systemctl restart acme\n```", "markdown"),
        ("Wrap the variable in {braces} like {name}, and the template fills it in.", "prose"),
        ("[1] Annual report 2023, page 4, shows revenue rising.", "prose"),
        ("See [the help center](https://example.com/help) for details.", "prose"),
        ("<No Output>", "prose"),
        ("Return the form by Friday; we process it the same day.\nThanks for your patience.", "prose"),
        (PROSE[0], "prose"),
    ],
)
def test_classify_output_on_realistic_answers(text, expected):
    formats, _ = classify_outputs([text])
    assert OutputFormat(formats[0]) is OutputFormat(expected)


def test_batch_classifier_keeps_order_and_parses_only_json():
    texts = ['{"a": 1}', PROSE[0], "[1, 2]", '{"a": 1,}', "- a\n- b"]
    formats, parsed = classify_outputs(texts)
    assert formats == ["json", "prose", "json", "json-like", "markdown"]
    assert parsed == {0: {"a": 1}, 2: [1, 2]}


def lint_file(tmp_path, rows, select, batch_size=20_000, **kwargs):
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    plan = plan_lint(LintRequest(paths=[str(path)], isolated=True, select=select, **kwargs))
    return run_lint(plan, batch_size=batch_size)


def prose_rows(count: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [chat(f"{rng.choice(PROSE)} Ticket {number}.") for number in range(count)]


def test_stray_json_answers_in_a_prose_set_are_flagged_across_batches(tmp_path):
    rows = prose_rows(300)
    for line in (17, 150, 299):
        rows[line - 1] = chat(f'{{"order_id": {line}, "status": "shipped"}}')
    result = lint_file(tmp_path, rows, ["OF"], batch_size=64)
    flagged = codes(result, "OF001")
    assert [f.line for f in flagged] == [17, 150, 299]
    assert flagged[0].message == "assistant output is json; 99% of outputs are prose"
    assert not codes(result, "OF002") and not codes(result, "OF003")
    assert result.stats["output formats"] == {"prose": 297, "json": 3}


def test_prose_in_a_json_set_is_flagged_and_mix_is_summarized(tmp_path):
    rows = [chat(f'{{"order_id": {n}, "status": "shipped"}}') for n in range(72)] + prose_rows(28)
    result = lint_file(tmp_path, rows, ["OF001"])
    per_row = [f for f in codes(result, "OF001") if f.line is not None]
    summary = [f for f in codes(result, "OF001") if f.line is None]
    assert len(per_row) == 28 and per_row[0].message == "assistant output is prose; 72% of outputs are json"
    assert len(summary) == 1 and summary[0].data["distribution"] == {"json": 72, "prose": 28}


def test_invalid_json_and_schema_drift_in_a_json_set(tmp_path):
    rows = [chat(f'{{"order_id": {n}, "status": "shipped", "eta_days": {n % 5}}}') for n in range(40)]
    rows[4] = chat('{"order_id": "4", "status": "shipped"}')
    rows[9] = chat('{"order_id": 9, "status": "shipped", "eta_days": 1, "eta": "soon"}')
    trailing_comma = '{"order_id": 14, "status": "shipped", "eta_days": 2,}'
    rows[14] = chat(trailing_comma)
    result = lint_file(tmp_path, rows, ["OF"])
    invalid = codes(result, "OF002")
    assert [f.line for f in invalid] == [15]
    # The parser stops at the closing brace after the trailing comma: the last character.
    assert invalid[0].data["column"] == len(trailing_comma) and "Expecting property name" in invalid[0].message
    drift = {f.line: f.message for f in codes(result, "OF003")}
    assert drift == {5: 'missing "eta_days"; "order_id" is string, expected number', 10: 'extra "eta"'}
    assert not codes(result, "OF001")


def test_dominant_schema_follows_nested_objects_and_arrays():
    good = {"order": {"id": 1, "items": [{"sku": "A", "qty": 1}]}}
    bad = {"order": {"id": 2, "items": [{"sku": "B", "qty": "2"}, {"sku": "C"}]}}
    shapes = {json_shape(good): 19, json_shape(bad): 1}
    schema = DominantSchema.infer(shapes, share=0.9, min_rows=10)
    drift = schema.drift(json_shape(bad))
    assert drift["missing"] == ["order.items[].qty"]
    assert drift["types"] == [("order.items[].qty", "string", "number")]
    assert schema.drift(json_shape(good)) == {"missing": [], "extra": [], "types": []}


def labelled(counts: dict[str, int]) -> list[dict]:
    rows = []
    for label, count in counts.items():
        rows += [chat(f"{PROSE[n % 4]} Case {label}-{n}.", label=label) for n in range(count)]
    random.Random(3).shuffle(rows)
    return rows


def test_imbalanced_labels_fire_and_are_charted(tmp_path):
    result = lint_file(tmp_path, labelled({"yes": 285, "no": 15}), ["BL001"])
    (finding,) = codes(result, "BL001")
    assert finding.line is None and finding.data["distribution"] == {"yes": 285, "no": 15}
    assert 'minority class "no" 5% (below 10%)' in finding.message
    assert result.stats["labels"] == {"yes": 285, "no": 15}
    buffer = io.StringIO()
    write_text(result, buffer, color=False)
    chart_line = next(line for line in buffer.getvalue().splitlines() if line.strip().startswith("yes"))
    assert "█" in chart_line and "95.0%" in chart_line


@pytest.mark.parametrize(
    "counts",
    [
        {"yes": 150, "no": 150},
        {f"intent-{n}": 25 for n in range(12)},  # twelve even classes: 8.3% each is balance, not a minority
        {"billing": 120, "account": 100, "technical": 80},
    ],
)
def test_balanced_labels_do_not_fire(tmp_path, counts):
    result = lint_file(tmp_path, labelled(counts), ["BL001"])
    assert not codes(result, "BL001")
    assert sum(result.stats["labels"].values()) == sum(counts.values())


def test_short_answers_are_read_as_labels_but_free_text_is_not(tmp_path):
    sentiment = [chat("Positive.") for _ in range(190)] + [chat("negative") for _ in range(10)]
    (finding,) = codes(lint_file(tmp_path, sentiment, ["BL001"]), "BL001")
    assert finding.data["source"] == "assistant answers" and finding.data["distribution"] == {"positive": 190, "negative": 10}
    free_text = prose_rows(300) + [chat("Yes.") for _ in range(5)]
    result = lint_file(tmp_path, free_text, ["BL001"])
    assert not codes(result, "BL001") and "labels" not in result.stats


def test_too_few_labelled_rows_to_judge(tmp_path):
    assert not codes(lint_file(tmp_path, labelled({"yes": 45, "no": 2}), ["BL001"]), "BL001")


def test_refusal_share(tmp_path):
    refusals = ["I'm sorry, but I can't help with that request.", "As an AI language model, I cannot browse the web.", "I’m unable to assist with that."]
    rows = prose_rows(200)
    for n in range(0, 200, 3):  # 67 of 200 rows
        rows[n] = chat(refusals[n % 3])
    (finding,) = codes(lint_file(tmp_path, rows, ["BL002"]), "BL002")
    assert finding.data["refusals"] == 67 and finding.message.startswith("34% of rows (67 of 200)")
    assert [location.line for location in finding.related] == [1, 4, 7, 10, 13]
    rows = prose_rows(200)
    for n in range(0, 200, 10):  # 10%
        rows[n] = chat(refusals[0])
    rows[5] = chat("Sorry for the wait, here is the tracking link.")
    assert not codes(lint_file(tmp_path, rows, ["BL002"]), "BL002")


def test_row_count_threshold(tmp_path):
    (finding,) = codes(lint_file(tmp_path, prose_rows(199), ["BL003"]), "BL003")
    assert finding.message == "only 199 rows; a useful fine-tune needs at least 200" and finding.line is None
    assert not codes(lint_file(tmp_path, prose_rows(200), ["BL003"]), "BL003")


def test_clean_sample_gets_no_output_format_or_balance_findings():
    plan = plan_lint(LintRequest(paths=[str(SAMPLES / "clean-chat.jsonl")], isolated=True, select=["ALL"]))
    result = run_lint(plan)
    assert result.findings == []
    assert set(result.stats["output formats"]) == {"prose"}


def test_support_sample_shows_planted_output_formats_and_label_imbalance():
    plan = plan_lint(LintRequest(paths=[str(SAMPLES / "support-chat.jsonl")], isolated=True, select=["OF", "BL"]))
    result = run_lint(plan)
    lines = (SAMPLES / "support-chat.jsonl").read_text(encoding="utf-8").splitlines()
    planted = [number for number, line in enumerate(lines, start=1) if "as JSON." in line]
    assert [f.line for f in codes(result, "OF001")] == planted
    (imbalance,) = codes(result, "BL001")
    assert imbalance.data["minority"] == ["escalate"]


def test_the_last_non_empty_assistant_turn_is_the_answer_classified(tmp_path):
    def row(number: int) -> dict:
        turns = [("user", "Status?"), ("assistant", "Let me check."), ("user", f"Order {number}."), ("assistant", f'{{"order_id": {number}}}'), ("assistant", "  ")]
        return {"messages": [{"role": role, "content": content} for role, content in turns]}

    result = lint_file(tmp_path, [row(number) for number in range(12)], ["OF"])
    assert result.stats["output formats"] == {"json": 12} and not result.findings
