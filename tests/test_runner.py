"""The lint runner: dataset rules observe in a second thread, and that changes nothing a user sees."""

from __future__ import annotations

import threading

import pytest

from curate.engine.runner import run_lint
from curate.engine.settings import LintRequest, plan_lint
from tests.conftest import SAMPLES, lint_rows


def findings_of(result) -> list[tuple]:
    return [(f.code, f.path, f.line, f.message, sorted(map(str, f.data.items()))) for f in result.findings]


def test_findings_do_not_depend_on_the_batch_size_with_dataset_rules_in_a_second_thread():
    """Small batches make every dataset rule observe dozens of batches while the row rules run on
    the next ones; the findings must equal one batch holding every row."""
    paths = [str(SAMPLES / "support-chat.jsonl"), str(SAMPLES / "alpaca-tasks.jsonl")]
    whole = run_lint(plan_lint(LintRequest(paths=paths, isolated=True)))
    assert {f.code for f in whole.findings} >= {"DU001", "DU002", "DU003", "OF001"}  # dataset rules have work to do
    for batch_size in (7, 50):
        small = run_lint(plan_lint(LintRequest(paths=paths, isolated=True)), batch_size=batch_size)
        assert findings_of(small) == findings_of(whole)
        assert small.stats == whole.stats and small.rows == whole.rows


def test_dataset_rules_observe_every_batch_in_order_off_the_main_thread():
    plan = plan_lint(LintRequest(paths=[str(SAMPLES / "support-chat.jsonl")], select=["DU001", "SC001"], isolated=True))
    rule = next(rule for rule in plan.rules if rule.code == "DU001")
    seen: list[tuple[int, str]] = []
    observe = rule.observe

    def recording(batch):
        seen.append((batch.rows[0].line, threading.current_thread().name))
        observe(batch)

    rule.observe = recording
    result = run_lint(plan, batch_size=10)
    starts = [line for line, _ in seen]
    assert starts == sorted(starts) and len(starts) == -(-result.rows // 10)
    assert all(name != threading.main_thread().name for _, name in seen)


def test_an_error_in_a_dataset_rule_reaches_the_caller():
    plan = plan_lint(LintRequest(paths=[str(SAMPLES / "support-chat.jsonl")], select=["DU001"], isolated=True))
    rule = plan.rules[0]
    calls = 0

    def failing(batch):
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ValueError("observe failed on the second batch")

    rule.observe = failing
    with pytest.raises(ValueError, match="second batch"):
        run_lint(plan, batch_size=10)


def test_a_finished_rule_s_observations_are_freed_before_the_next_rule_finishes(tmp_path, monkeypatch):
    """At 1M rows DU002 holds ~350 MB of shingle sets and locations once it has reported: the
    next rules' finishes and the report must not carry them (`LintPass.finishing`). The rule
    left to fix the findings is a copy as `setup` left it, and fixes them as the rule would."""
    import random
    import weakref

    from curate.rules.duplicates import ConflictingResponses, NearDuplicate
    from tests.test_dedup import clean_rows, planted_copy

    observed, alive_at_next_finish = [], []
    near_finish, conflict_finish = NearDuplicate.finish, ConflictingResponses.finish

    def finish_near(self):
        observed.append(weakref.ref(self))
        yield from near_finish(self)

    def finish_conflicts(self):
        alive_at_next_finish.append(observed[0]() is not None)
        yield from conflict_finish(self)

    monkeypatch.setattr(NearDuplicate, "finish", finish_near)
    monkeypatch.setattr(ConflictingResponses, "finish", finish_conflicts)
    rng = random.Random(5)
    rows = clean_rows() + [planted_copy(row, rng) for row in clean_rows()[:30]]
    result = lint_rows(tmp_path, rows, select=["DU002", "DU003"])
    near = [finding for finding in result.findings if finding.code == "DU002"]
    assert near and alive_at_next_finish == [False]
    fixer = result.fixers["DU002"]
    assert isinstance(fixer, NearDuplicate) and not fixer.band_parts and fixer.fix(near[0]) == NearDuplicate.fix(fixer, near[0])
