"""The lint runner: one streaming read of every file feeds every rule.

Row rules see each batch and return findings at once; dataset rules observe
each batch and report when all files are read. Findings are sorted stably.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from curate.engine.batch import Batch
from curate.engine.findings import Finding, Severity
from curate.engine.rule import DatasetRule, Rule, RowRule, RuleSetupError
from curate.engine.settings import LintPlan, severity_fails
from curate.io import InputError, RawRow, file_size, iter_batches, row_hash

DEFAULT_BATCH_SIZE = 20_000


@dataclass(frozen=True, slots=True)
class Progress:
    """A progress event: `phase` is "read" (done/total in bytes) or "finish" (rules done/total)."""

    phase: str
    done: int
    total: int
    rows: int
    detail: str = ""


ProgressCallback = Callable[[Progress], None]


@dataclass
class LintResult:
    findings: list[Finding]
    rows: int
    files: list[str]
    #: One-line problems that stopped a file or a rule (exit code 2), e.g. a missing model.
    errors: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    stats: dict[str, dict[str, int]] = field(default_factory=dict)
    waived: int = 0
    seconds: float = 0.0
    #: (path, line) -> content hash; filled only when asked (baseline, review).
    row_hashes: dict[tuple[str, int], str] = field(default_factory=dict)
    rules: list[type[Rule]] = field(default_factory=list)

    def count(self, severity: Severity) -> int:
        return sum(1 for finding in self.findings if finding.severity is severity)

    @property
    def by_code(self) -> dict[str, int]:
        return dict(sorted(Counter(finding.code for finding in self.findings).items()))

    def exit_code(self, fail_on: str) -> int:
        if self.errors:
            return 2
        return 1 if any(severity_fails(f.severity, fail_on) for f in self.findings) else 0


def _set_up(rules: list[Rule], errors: list[str]) -> list[Rule]:
    ready = []
    for rule in rules:
        try:
            rule.setup()
        except RuleSetupError as exc:
            message = str(exc)
            if message not in errors:
                errors.append(message)
            continue
        ready.append(rule)
    return ready


@contextmanager
def cyclic_gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector: rows are acyclic and freed by reference counting,
    and with millions of live objects the collector's passes took half the lint time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def run_lint(
    plan: LintPlan,
    on_progress: ProgressCallback | None = None,
    keep_row_hashes: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_rows: Callable[[list[RawRow]], None] | None = None,
) -> LintResult:
    """Lint every file of the plan. `on_rows` sees each batch of raw rows as read, for callers
    that need the rows too (review) without reading the files a second time."""
    with cyclic_gc_paused():
        return _run_lint(plan, on_progress, keep_row_hashes, batch_size, on_rows)


def _run_lint(
    plan: LintPlan,
    on_progress: ProgressCallback | None,
    keep_row_hashes: bool,
    batch_size: int,
    on_rows: Callable[[list[RawRow]], None] | None,
) -> LintResult:
    started = time.perf_counter()
    errors: list[str] = []
    rules = _set_up(plan.rules, errors)
    row_rules = [rule for rule in rules if isinstance(rule, RowRule)]
    dataset_rules = [rule for rule in rules if isinstance(rule, DatasetRule)]
    findings: list[Finding] = []
    formats: Counter[str] = Counter()
    row_hashes: dict[tuple[str, int], str] = {}
    rows = 0
    total_bytes = sum(file_size(path) for path in plan.paths)
    done_bytes = 0
    files_read = []
    for path in plan.paths:
        try:
            for raw_rows in iter_batches(path, batch_size, plan.max_row_bytes):
                batch = Batch.from_raw(raw_rows)
                rows += len(batch)
                for rule in list(row_rules):
                    try:
                        findings.extend(rule.check_batch(batch))
                    except RuleSetupError as exc:  # the rule cannot go on (a template over its run budget)
                        row_rules.remove(rule)
                        if str(exc) not in errors:
                            errors.append(str(exc))
                for rule in dataset_rules:
                    rule.observe(batch)
                formats.update(str(row.format) if row.format else "unknown" for row in batch.rows)
                if keep_row_hashes:
                    row_hashes.update(((raw.path, raw.line), row_hash(raw)) for raw in raw_rows)
                if on_rows:
                    on_rows(raw_rows)
                done_bytes += sum(raw.size for raw in raw_rows)
                if on_progress:
                    on_progress(Progress("read", min(done_bytes, total_bytes), total_bytes, rows, path))
            files_read.append(path)
        except InputError as exc:
            errors.append(str(exc))
    stats: dict[str, dict[str, int]] = {"row formats": dict(formats.most_common())} if rows else {}
    for position, rule in enumerate(dataset_rules, start=1):
        if on_progress:
            on_progress(Progress("finish", position - 1, len(dataset_rules), rows, f"{rule.code} {rule.name}"))
        try:
            findings.extend(rule.finish())
        except RuleSetupError as exc:
            errors.append(str(exc))
        stats.update(rule.stats())
    if on_progress:
        on_progress(Progress("finish", len(dataset_rules), len(dataset_rules), rows, "done"))
    findings.sort(key=Finding.sort_key)
    return LintResult(
        findings=findings,
        rows=rows,
        files=files_read,
        errors=errors,
        skipped=plan.skipped,
        stats=stats,
        seconds=time.perf_counter() - started,
        row_hashes=row_hashes,
        rules=[type(rule) for rule in rules],
    )
