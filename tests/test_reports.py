"""Output formats are public API: the JSON contract, SARIF 2.1.0, GitHub annotations, text."""

from __future__ import annotations

import io
import json

import jsonschema

from curate.engine.findings import Finding, Location, Severity
from curate.engine.report import write_github, write_json, write_sarif, write_text
from curate.engine.runner import LintResult

ROWS = [
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"}]},
    "{broken",
    {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]},
    {"instruction": "Say hi", "input": "", "output": "Hello", "colour": "red"},
]

# The parts of the SARIF 2.1.0 schema (sarif-schema-2.1.0.json) that a consumer such as
# GitHub code scanning requires: required properties, enums and types along the result path.
SARIF_REQUIRED = {
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "version": {"const": "2.1.0"},
        "$schema": {"type": "string"},
        "runs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["tool"],
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {
                            "driver": {
                                "type": "object",
                                "required": ["name"],
                                "properties": {
                                    "name": {"type": "string"},
                                    "rules": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["id"],
                                            "properties": {
                                                "id": {"type": "string"},
                                                "shortDescription": {"type": "object", "required": ["text"]},
                                                "fullDescription": {"type": "object", "required": ["text"]},
                                                "defaultConfiguration": {
                                                    "type": "object",
                                                    "properties": {"level": {"enum": ["none", "note", "warning", "error"]}},
                                                },
                                            },
                                        },
                                    },
                                },
                            }
                        },
                    },
                    "results": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["message"],
                            "properties": {
                                "ruleId": {"type": "string"},
                                "ruleIndex": {"type": "integer", "minimum": 0},
                                "level": {"enum": ["none", "note", "warning", "error"]},
                                "message": {"type": "object", "anyOf": [{"required": ["text"]}, {"required": ["id"]}]},
                                "locations": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "physicalLocation": {
                                                "type": "object",
                                                "anyOf": [{"required": ["artifactLocation"]}, {"required": ["address"]}],
                                                "properties": {
                                                    "artifactLocation": {"type": "object", "properties": {"uri": {"type": "string"}}},
                                                    "region": {"type": "object", "properties": {"startLine": {"type": "integer", "minimum": 1}}},
                                                },
                                            }
                                        },
                                    },
                                },
                                "relatedLocations": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "integer", "minimum": -1}}}},
                            },
                        },
                    },
                },
            },
        },
    },
}


def render(writer, result: LintResult) -> str:
    buffer = io.StringIO()
    writer(result, buffer)
    return buffer.getvalue()


def dataset_level_result() -> LintResult:
    findings = [
        Finding("DU002", "near-duplicate", Severity.WARNING, "data.jsonl", 17, "near-duplicate of line 5 (Jaccard 0.91)", [Location("data.jsonl", 5)], {"jaccard": 0.91}),
        Finding("BL003", "too-few-examples", Severity.WARNING, "data.jsonl", None, "only 20 rows", [], {"rows": 20}),
    ]
    return LintResult(findings=findings, rows=20, files=["data.jsonl"])


def test_json_contract_exactly(lint):
    result = lint(ROWS, select=["SC"], ignore=["SC010"])
    document = json.loads(render(write_json, result))
    assert set(document) == {"version", "findings", "summary"}
    assert document["version"] == 1
    assert set(document["summary"]) == {"rows", "errors", "warnings", "by_code"}
    assert document["summary"]["rows"] == 4
    assert document["summary"]["errors"] == 2 and document["summary"]["warnings"] == 1
    assert document["summary"]["by_code"] == {"SC001": 1, "SC005": 1, "SC008": 1}
    for finding in document["findings"]:
        assert list(finding) == ["code", "name", "severity", "path", "line", "message", "related", "data"]
    assert [(f["code"], f["line"]) for f in document["findings"]] == [("SC001", 2), ("SC005", 3), ("SC008", 4)]


def test_json_dataset_level_findings_have_null_line_and_related_locations():
    document = json.loads(render(write_json, dataset_level_result()))
    near, dataset = document["findings"]
    assert near["related"] == [{"path": "data.jsonl", "line": 5}] and near["data"] == {"jaccard": 0.91}
    assert dataset["line"] is None


def test_sarif_is_valid_2_1_0(lint):
    result = lint(ROWS, select=["SC"], ignore=["SC010"])
    document = json.loads(render(write_sarif, result))
    jsonschema.validate(document, SARIF_REQUIRED)
    run = document["runs"][0]
    rule_ids = [rule["id"] for rule in run["tool"]["driver"]["rules"]]
    for item in run["results"]:
        assert rule_ids[item["ruleIndex"]] == item["ruleId"]
    assert {item["level"] for item in run["results"]} == {"error", "warning"}
    assert run["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] == 2


def test_sarif_dataset_level_and_related_locations():
    document = json.loads(render(write_sarif, dataset_level_result()))
    jsonschema.validate(document, SARIF_REQUIRED)
    near, dataset = document["runs"][0]["results"]
    assert near["relatedLocations"][0]["physicalLocation"]["region"]["startLine"] == 5
    assert "region" not in dataset["locations"][0]["physicalLocation"]


def test_github_annotations(lint):
    result = lint(ROWS, select=["SC"], ignore=["SC010"])
    lines = render(write_github, result).splitlines()
    assert lines[0].startswith("::error file=") and ",line=2,title=SC001 invalid-json::" in lines[0]
    assert lines[2].startswith("::warning ")
    dataset = render(write_github, dataset_level_result()).splitlines()[1]
    assert dataset == "::warning file=data.jsonl,title=BL003 too-few-examples::only 20 rows"


def test_github_escapes_newlines_and_percent():
    finding = Finding("SC001", "invalid-json", Severity.ERROR, "a,b.jsonl", 1, "50% broken\nline two")
    text = render(write_github, LintResult(findings=[finding], rows=1, files=["a,b.jsonl"]))
    assert text == "::error file=a%2Cb.jsonl,line=1,title=SC001 invalid-json::50%25 broken%0Aline two\n"


def test_text_report_lines_summary_and_chart(lint):
    result = lint(ROWS, select=["SC"], ignore=["SC010"])
    buffer = io.StringIO()
    write_text(result, buffer, color=False)
    text = buffer.getvalue()
    assert f"{result.findings[0].path}:2: SC001 [error] invalid JSON" in text
    assert "Found 3 findings in 4 rows (1 file): 2 errors, 1 warning." in text
    chart_result = dataset_level_result()
    chart_result.findings[1].data["distribution"] = {"billing": 90, "escalate": 3}
    buffer = io.StringIO()
    write_text(chart_result, buffer, color=False)
    assert "billing" in buffer.getvalue() and "█" in buffer.getvalue() and "96.8%" in buffer.getvalue()


def test_clean_text_report(lint):
    result = lint([ROWS[0]], select=["SC"])
    buffer = io.StringIO()
    write_text(result, buffer, color=False)
    assert buffer.getvalue().strip() == "No problems found in 1 row (1 file)."


def test_a_plain_text_report_has_the_characters_rich_writes(lint, tmp_path):
    """Without colour or charts the report is written without rich (`curate lint` to a pipe skips
    its import); it must be what rich writes there, character for character: findings of every
    severity with brackets and escapes in their messages, the counts, skipped rules, fixable rows."""
    from curate.engine.report import text_report_items, write_items_with_rich
    from tests.conftest import SAMPLES

    results = [lint(ROWS, select=["SC"], ignore=["SC010"]), lint([ROWS[0]], select=["SC"])]
    results.append(lint((SAMPLES / "support-chat.jsonl").read_text(encoding="utf-8").splitlines(), ignore=["BL"]))  # raw lines, a broken one too; BL draws charts
    results[-1].waived = 2
    odd = lint(ROWS, select=["SC"], ignore=["SC010"])
    odd.findings[0].message += " with\ta tab,\r a CR and a \x07 bell"  # rich strips CR and BEL, expands tabs
    results.insert(0, odd)
    for result in results:
        assert not any(isinstance(item, tuple) for item in text_report_items(result))  # no chart: the plain path
        plain, rich = io.StringIO(), io.StringIO()
        write_text(result, plain)
        write_items_with_rich(text_report_items(result), rich, color=False)
        assert plain.getvalue() == rich.getvalue()
    assert "Skipped" in plain.getvalue() and "waived by the baseline" in plain.getvalue() and "[warning]" in plain.getvalue()
