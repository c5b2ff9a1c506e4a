"""Data-driven rule tests: `tests/rule_cases/<CODE>.toml` holds rows that must fire and rows that must not.

Case file format (one `[[case]]` table per case):

    [[case]]
    name = "a short description"
    rows = ['''{"messages": [...]}''', '''...''']   # raw JSONL lines, in order
    fire = [2]            # 1-based indexes into `rows` that must get this rule's finding;
                          # [] means it must not fire; 0 stands for a dataset-level finding (line null)
    message = "substring" # optional: every finding's message contains it
    options = { threshold = 0.9 }   # optional rule options
    eval_rows = ['''...''']          # optional: written to eval.jsonl and passed as --eval
    model = "samples/tiny-chat"      # optional: --model (a path relative to the repo root, or @fixture)
    max_seq_length = 64              # optional
    max_row_bytes = 100              # optional
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from curate.engine.rule import load_builtin_rules
from tests.conftest import ROOT, lint_rows, write_jsonl

CASES_DIR = Path(__file__).parent / "rule_cases"
REGISTRY = load_builtin_rules()


def _cases():
    for path in sorted(CASES_DIR.glob("*.toml")):
        code = path.stem
        for number, case in enumerate(tomllib.loads(path.read_text(encoding="utf-8")).get("case", []), start=1):
            yield pytest.param(code, case, id=f"{code}-{number}-{case.get('name', '')[:40]}")


@pytest.mark.parametrize(("code", "case"), list(_cases()))
def test_rule_case(code, case, tmp_path):
    assert code in REGISTRY, f"case file for unknown rule {code}"
    kwargs = {"select": [code]}
    if "options" in case:
        kwargs["rule_options"] = {code: case["options"]}
    if "eval_rows" in case:
        kwargs["eval"] = [str(write_jsonl(tmp_path / "eval.jsonl", case["eval_rows"]))]
    if "model" in case:
        kwargs["model"] = resolve_model(case["model"], tmp_path)
    for key in ("max_seq_length", "max_row_bytes"):
        if key in case:
            kwargs[key] = case[key]
    result = lint_rows(tmp_path, case["rows"], **kwargs)
    assert not result.errors, result.errors
    fired = sorted({f.line or 0 for f in result.findings if f.code == code})
    assert fired == sorted(case["fire"]), [f"{f.line}: {f.message}" for f in result.findings]
    for finding in result.findings:
        assert finding.code == code
        if "message" in case:
            assert case["message"] in finding.message


def resolve_model(name: str, tmp_path: Path) -> str:
    """A model for a case: a path under the repo, or `@name` for a fixture tokenizer built by tests.fixture_models."""
    if name.startswith("@"):
        from tests.fixture_models import build_fixture_model

        return str(build_fixture_model(name[1:], tmp_path))
    return str(ROOT / name)


def test_every_rule_has_cases_that_fire_and_that_do_not():
    missing = []
    for code in sorted(REGISTRY):
        path = CASES_DIR / f"{code}.toml"
        if not path.exists():
            missing.append(f"{code}: no case file")
            continue
        cases = tomllib.loads(path.read_text(encoding="utf-8")).get("case", [])
        if not any(case["fire"] for case in cases):
            missing.append(f"{code}: no case that fires")
        if not any(not case["fire"] for case in cases):
            missing.append(f"{code}: no case that must not fire")
    assert not missing, missing
