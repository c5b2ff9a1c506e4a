"""Eval hygiene before any generation: the leakage rules (LK001 exact prompt, LK002 long shared
span or near-copy) of the eval prompts against the training rows. A contaminated eval is the
most common way an adapter "helps": it scores by memory.

The check runs the lint engine itself on temporary copies (the training conversations, and the
eval prompts as chat rows), so what it reports is exactly what `curate lint --eval` would.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from curate.evaluate.items import EvalItem
from curate.io import atomic_write_jsonl
from curate.train.data import TrainingRow


def contamination(items: list[EvalItem], train: list[TrainingRow]) -> dict[str, Any]:
    """{"checked", "train_rows", "contaminated": [{"where", "rules", "train", "message"}]}, one entry per eval item."""
    from curate.engine.runner import run_lint
    from curate.engine.settings import LintRequest, plan_lint

    summary: dict[str, Any] = {"checked": len(items), "train_rows": len(train), "contaminated": []}
    if not items or not train:
        return summary
    with tempfile.TemporaryDirectory(prefix="curate-eval-") as folder:
        train_path, eval_path = Path(folder) / "train.jsonl", Path(folder) / "eval.jsonl"
        atomic_write_jsonl(train_path, ({"messages": c.messages} for c in train))
        atomic_write_jsonl(eval_path, ({"messages": item.messages} for item in items))
        plan = plan_lint(LintRequest(paths=[str(train_path)], select=["LK"], eval=[str(eval_path)], isolated=True))
        result = run_lint(plan)
    if result.errors:
        summary["errors"] = result.errors
    found: dict[int, dict[str, Any]] = {}
    for finding in result.findings:
        location = next((loc for loc in finding.related if loc.line is not None and loc.path == str(eval_path)), None)
        if location is None or finding.line is None:
            continue
        item = items[location.line - 1]
        message = finding.message.replace(f"{eval_path}:{location.line}", item.where)
        entry = found.setdefault(location.line, {"where": item.where, "rules": [], "train": train[finding.line - 1].where, "message": message})
        if finding.code not in entry["rules"]:
            entry["rules"].append(finding.code)
    summary["contaminated"] = [found[line] for line in sorted(found)]
    return summary


def contaminated_lines(summary: dict[str, Any]) -> set[str]:
    return {entry["where"] for entry in summary["contaminated"]}
