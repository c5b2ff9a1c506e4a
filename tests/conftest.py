"""Shared fixtures: paths, and a helper to lint rows written to a temp file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"


def write_jsonl(path: Path, rows: list) -> Path:
    """Write rows (dicts are JSON-encoded, strings written as raw lines)."""
    lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def lint_rows(tmp_path: Path, rows: list, **request_kwargs):
    """Lint rows in a temp JSONL file (config files ignored) and return the LintResult."""
    from curate.engine.runner import run_lint
    from curate.engine.settings import LintRequest, plan_lint

    data = write_jsonl(tmp_path / "data.jsonl", rows)
    request_kwargs.setdefault("isolated", True)
    plan = plan_lint(LintRequest(paths=[str(data)], **request_kwargs))
    return run_lint(plan)


@pytest.fixture
def lint(tmp_path):
    def run(rows: list, **kwargs):
        return lint_rows(tmp_path, rows, **kwargs)

    return run
