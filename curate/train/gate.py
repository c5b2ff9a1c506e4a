"""The lint gate: before any model is loaded, lint the training data with the same model's
chat template (and the eval file for leakage); any error-level finding, or a rule that
could not run, refuses the run unless `--force`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import IO

from curate.engine.runner import LintResult
from curate.engine.settings import LintPlan, LintRequest
from curate.train.config import TrainConfig

#: The rules whose clusters the eval split keeps on one side (exact and near duplicates).
DUPLICATE_CODES = ("DU001", "DU002")


@dataclass
class GateOutcome:
    passed: bool
    forced: bool
    summary: dict
    #: Rules that could not run (a tokenizer that did not load, an unreadable eval file).
    setup_errors: list[str] = field(default_factory=list)
    #: line -> line of its duplicate cluster's kept row, for the data file; None when the gate
    #: did not run both duplicate rules over all findings (deselected, or a baseline waived some).
    duplicate_of: dict[int, int] | None = None

    def to_manifest(self) -> dict:
        return {"passed": self.passed, "forced": self.forced, "summary": self.summary, "setup_errors": self.setup_errors}


def gate_request(config: TrainConfig, data_path: str, lint: LintRequest) -> LintRequest:
    """The gate's lint request, a new one: the lint options and config the user gave (`lint`),
    on the data file, checked as this run trains it: the training model's chat template, its
    max-seq-length, and the eval file for leakage unless `--eval` names others. The dry run
    and the real run both lint with it."""
    from dataclasses import replace

    eval_paths = lint.eval or ([config.eval_file] if config.eval_file else None)
    return replace(lint, paths=[data_path], model=config.model, max_seq_length=config.max_seq_length, eval=eval_paths)


def lint_gate(plan: LintPlan, *, force: bool, report_to: IO[str] | None) -> tuple[GateOutcome, LintResult]:
    """Run lint with `plan`; print a summary (findings per rule, and the command that lists
    them) to `report_to` when the gate refuses (or is forced)."""
    from curate.engine.findings import Severity
    from curate.engine.report import summary_dict
    from curate.engine.runner import run_lint

    result = run_lint(plan)
    errors = result.count(Severity.ERROR)
    passed = errors == 0 and not result.errors
    outcome = GateOutcome(passed=passed, forced=force and not passed, summary=summary_dict(result), setup_errors=list(result.errors))
    ran = {rule.code for rule in result.rules}
    if set(DUPLICATE_CODES) <= ran and not result.waived and plan.paths:
        outcome.duplicate_of = duplicate_clusters(result, plan.paths[0])
    if not passed and report_to is not None:
        report_to.write(gate_summary(result, plan))
        for problem in result.errors:
            report_to.write(f"lint could not run: {problem}\n")
    return outcome, result


def gate_summary(result: LintResult, plan: LintPlan) -> str:
    """Findings per rule, worst first, and the `curate lint` command that lists every finding."""
    import shlex

    from curate.engine.rule import REGISTRY

    if not result.findings:
        return ""
    severities: dict[str, str] = {}
    for finding in result.findings:
        severities.setdefault(finding.code, finding.severity.value)
    order = {"error": 0, "warning": 1, "info": 2}
    lines = [f"lint found {len(result.findings)} findings in {result.rows} rows:"]
    for code, count in sorted(result.by_code.items(), key=lambda item: (order[severities[item[0]]], -item[1], item[0])):
        name = REGISTRY[code].name if code in REGISTRY else ""
        lines.append(f"  {code} {name} [{severities[code]}]: {count}")
    command = ["curate", "lint", *plan.paths]
    if plan.context.model:
        command += ["--model", plan.context.model]
    for path in plan.context.eval_paths:
        command += ["--eval", path]
    lines.append(f"see every finding with: {shlex.join(command)}")
    return "\n".join(lines) + "\n"


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


def duplicate_clusters(result: LintResult, path: str) -> dict[int, int]:
    """line -> the first line of its duplicate cluster, from the DU001/DU002 findings of `path`
    (the duplicate rules' own groups: an exact copy of a row that is itself a near duplicate
    joins that row's cluster)."""
    from curate.rules.duplicates import duplicate_groups

    findings = [finding for finding in result.findings if finding.code in DUPLICATE_CODES and finding.path == path]
    clusters = {}
    for group in duplicate_groups(findings):
        lines = [line for member_path, line in group if member_path == path]
        clusters.update((line, lines[0]) for line in lines)
    return clusters


def find_duplicate_clusters(path: str) -> dict[int, int]:
    """The duplicate clusters of a data file by running only the duplicate rules (when no gate ran them)."""
    from curate.engine.runner import run_lint
    from curate.engine.settings import LintRequest, plan_lint

    return duplicate_clusters(run_lint(plan_lint(LintRequest(paths=[path], isolated=True, select=list(DUPLICATE_CODES)))), path)
