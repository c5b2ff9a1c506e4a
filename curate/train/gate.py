"""The lint gate: before any model is loaded, lint the training data with the same model's
chat template (and the eval file for leakage); any error-level finding, or a rule that
could not run, refuses the run unless `--force`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO

from curate.engine.runner import LintResult
from curate.engine.settings import LintPlan


@dataclass
class GateOutcome:
    passed: bool
    forced: bool
    summary: dict
    #: Rules that could not run (a tokenizer that did not load, an unreadable eval file).
    setup_errors: list[str] = field(default_factory=list)

    def to_manifest(self) -> dict:
        return {"passed": self.passed, "forced": self.forced, "summary": self.summary, "setup_errors": self.setup_errors}


def lint_gate(plan: LintPlan, *, force: bool, report_to: IO[str] | None) -> tuple[GateOutcome, LintResult]:
    """Run lint with `plan`; print the report to `report_to` when the gate refuses (or is forced)."""
    from curate.engine.findings import Severity
    from curate.engine.report import summary_dict, write_report
    from curate.engine.runner import run_lint

    result = run_lint(plan)
    errors = result.count(Severity.ERROR)
    passed = errors == 0 and not result.errors
    outcome = GateOutcome(passed=passed, forced=force and not passed, summary=summary_dict(result), setup_errors=list(result.errors))
    if not passed and report_to is not None:
        write_report(result, "text", report_to, color=False)
        for problem in result.errors:
            report_to.write(f"lint could not run: {problem}\n")
    return outcome, result


def refusal_message(outcome: GateOutcome, data_path: str) -> str:
    errors = outcome.summary["errors"]
    if outcome.setup_errors and not errors:
        reason = "lint could not check it (see above)"
    else:
        reason = f"lint found {errors} error{'s' if errors != 1 else ''}"
    return (
        f"refusing to train on {data_path}: {reason}; fix the data (`curate fix`, `curate review`) "
        "or pass --force to train anyway (recorded in manifest.json)"
    )
