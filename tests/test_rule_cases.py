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
    fixed = ['''{"messages": [...]}''']   # optional: the rows `curate fix` writes (parsed JSON compared);
                                     # re-linting them must not fire the rule; [] means every row is dropped

A fixable rule (one that defines `fix`) needs a case with `fixed`.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from curate.engine.rule import load_builtin_rules
from curate.engine.runner import run_lint
from curate.engine.settings import LintRequest, plan_lint
from curate.fix import FixOptions, run_fix
from curate.io import InputError
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
    data = write_jsonl(tmp_path / "data.jsonl", case["rows"])
    result = run_lint(plan_lint(LintRequest(paths=[str(data)], isolated=True, **kwargs)), keep_row_hashes=True)
    assert not result.errors, result.errors
    fired = sorted({f.line or 0 for f in result.findings if f.code == code})
    assert fired == sorted(case["fire"]), [f"{f.line}: {f.message}" for f in result.findings]
    for finding in result.findings:
        assert finding.code == code
        if "message" in case:
            assert case["message"] in finding.message
    if "fixed" in case:
        assert REGISTRY[code].fixable, f"{code} has a `fixed` case but no fix"
        check_fixed(code, case, result, data, tmp_path, kwargs)


def check_fixed(code: str, case: dict, result, data: Path, tmp_path: Path, kwargs: dict) -> None:
    """`curate fix` writes the case's `fixed` rows, and linting them again does not fire the rule."""
    output = tmp_path / "fixed.jsonl"
    expected = [json.loads(row) for row in case["fixed"]]
    if not expected:
        with pytest.raises(InputError, match="rows would be dropped"):
            run_fix(result, {str(data): str(output)}, FixOptions(apply_journal=False))
        return
    run_fix(result, {str(data): str(output)}, FixOptions(apply_journal=False))
    written = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert written == expected
    relint_dir = tmp_path / "relint"
    relint_dir.mkdir()
    again = lint_rows(relint_dir, output.read_text(encoding="utf-8").splitlines(), **kwargs)
    assert not [f"{f.line}: {f.message}" for f in again.findings if f.code == code]


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
        if REGISTRY[code].fixable and not any(case.get("fixed") for case in cases):
            missing.append(f"{code}: fixable, but no case with the `fixed` rows")
    assert not missing, missing
