"""Linting in shards (curate.engine.shards): cut the input at line starts, lint each shard in its
own process, merge in order. The report must be the one a single process writes."""

from __future__ import annotations

import pickle
import random
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from curate.engine import runner, shards
from curate.engine.rule import DatasetRule, load_builtin_rules
from curate.engine.runner import LintPass, run_lint
from curate.engine.settings import LintRequest, plan_lint
from curate.engine.shards import ByteRange, ShardResult, ShardTask, ShardWorkers, cut_into_shards, lint_shard, pickled
from curate.io import iter_jsonl_chunks, iter_jsonl_range_chunks, line_start_after
from curate.rules.balance import BoundedCounter
from curate.rules.toolkit import RowLocations
from tests.conftest import write_jsonl
from tests.test_rule_cases import CASES_DIR

REGISTRY = load_builtin_rules()


class InlineWorkers:
    """ShardWorkers without processes: each shard is linted here, after the main one, by
    `lint_shard` (a worker's own function), and its result goes through the same pickling as the
    pipe; so a test can cut a file into dozens of shards cheaply."""

    #: (rows, final) of every part the last InlineWorkers' shards sent, shard after shard.
    sent: list[tuple[int, bool]] = []

    def __init__(self, tasks: list[ShardTask]):
        self.tasks = tasks
        InlineWorkers.sent = []

    def bytes_done(self) -> int:
        return 0

    def results(self, waiting):
        for task in self.tasks:
            parts = []
            parts.append(through_the_pipe(lint_shard(task, lambda size: None, lambda part: parts.append(through_the_pipe(part)))))
            InlineWorkers.sent += [(part.rows, part.final) for part in parts]
            yield task, parts

    def close(self) -> None:
        pass


def through_the_pipe(result: ShardResult) -> ShardResult:
    """`result` as the main process receives it: pickled with its arrays out of band, the buffers copied."""
    views = pickled(result)
    header = views.pop()
    return pickle.loads(header, buffers=[bytearray(view) for view in views])


def report(result) -> tuple:
    """Everything a lint result reports, comparable."""
    return ([finding.to_dict() for finding in result.findings], result.rows, result.files, result.errors, result.skipped, result.stats)


def sharded_and_single(monkeypatch, request: LintRequest, jobs: int, workers=InlineWorkers, shards_expected: int | None = None, batch_size: int | None = None):
    """(the one-process result, the result of the run cut into shards, read `batch_size` rows at a
    time when given); the second run must have started workers (`shards_expected` - 1 of them,
    when given), or it proves nothing."""
    single = run_lint(plan_lint(request), jobs=1)
    monkeypatch.setattr(shards, "MIN_SHARD_BYTES", 1)
    started: list[int] = []
    monkeypatch.setattr(runner, "ShardWorkers", lambda tasks: started.append(len(tasks)) or workers(tasks))
    sharded = run_lint(plan_lint(request), jobs=jobs, **({"batch_size": batch_size} if batch_size else {}))
    assert started and started[0] >= 1, "the run was not sharded"
    assert shards_expected is None or started[0] + 1 == shards_expected
    return single, sharded


def test_every_dataset_rule_merges_so_the_default_rules_can_shard():
    assert [code for code, rule in sorted(REGISTRY.items()) if issubclass(rule, DatasetRule) and not rule.mergeable()] == []


def _cases():
    for path in sorted(CASES_DIR.glob("*.toml")):
        for number, case in enumerate(tomllib.loads(path.read_text(encoding="utf-8")).get("case", []), start=1):
            if "model" not in case and len(case["rows"]) > 1:  # a chat template is rendered in one process only
                yield pytest.param(path.stem, case, id=f"{path.stem}-{number}")


def case_request(code: str, case: dict, tmp_path: Path) -> tuple[LintRequest, Path]:
    """A lint of one rule case's rows (and eval rows), with its options."""
    kwargs = {"select": [code], "rule_options": {code: case["options"]} if "options" in case else {}}
    if "eval_rows" in case:
        kwargs["eval"] = [str(write_jsonl(tmp_path / "eval.jsonl", case["eval_rows"]))]
    if "max_row_bytes" in case:
        kwargs["max_row_bytes"] = case["max_row_bytes"]
    data = write_jsonl(tmp_path / "data.jsonl", case["rows"])
    return LintRequest(paths=[str(data)], isolated=True, **kwargs), data


@pytest.mark.parametrize(("code", "case"), list(_cases()))
def test_every_rule_case_reports_the_same_cut_into_a_shard_per_row(code, case, tmp_path, monkeypatch):
    request, data = case_request(code, case, tmp_path)
    jobs = data.stat().st_size  # a cut at every byte: a shard starts at every line
    single, sharded = sharded_and_single(monkeypatch, request, jobs=jobs, shards_expected=len(data.read_bytes().splitlines()))
    assert report(sharded) == report(single)


@pytest.mark.parametrize(("code", "case"), list(_cases()))
def test_every_rule_case_reports_the_same_from_a_worker_sending_a_part_per_row(code, case, tmp_path, monkeypatch):
    request, data = case_request(code, case, tmp_path)
    monkeypatch.setattr(shards, "PART_BYTES", 1)
    monkeypatch.setattr(shards, "MAIN_SHARD_WEIGHT", 2 / data.stat().st_size)  # the main process reads the first row, the worker the others
    single, sharded = sharded_and_single(monkeypatch, request, jobs=2, shards_expected=2, batch_size=1)
    rows = sum(rows for rows, _ in InlineWorkers.sent)
    assert rows and InlineWorkers.sent == [(1, False)] * rows + [(0, True)]  # a part per row read, then the empty last one
    assert report(sharded) == report(single)


def mixed_corpus(tmp_path: Path) -> list[str]:
    """Three files whose findings cross every cut: copies, near copies, conflicting answers and
    repeated preference pairs far apart, labels, refusals, JSON answers and row formats mixed;
    and `eval.jsonl`, holding the first chat's prompt."""
    rng = random.Random(7)
    chats, prefs, tasks = [], [], []
    topics = ["router", "invoice", "password", "refund", "printer", "backup", "vpn", "calendar", "badge", "laptop"]
    for index in range(240):
        topic = topics[index % len(topics)]
        words = " ".join(rng.choice(["please", "quickly", "today", "again", "now", "kindly"]) for _ in range(6))
        answer = rng.choice([f"Restart the {topic} and wait {index % 7 + 2} minutes.", "I'm sorry, but I can't help with that.",
                             *["I'm sorry, but I can't help with that."] * 4, f"```python\nprint('{topic}')\n```"])
        chats.append({"messages": [{"role": "user", "content": f"How do I fix the {topic} {words} (ticket {index})?"},
                                   {"role": "assistant", "content": answer}], "label": "escalate" if index % 19 == 0 else "resolve"})
        if index % 30 == 0:
            chats.append({"instruction": f"Summarize ticket {index}.", "input": "", "output": "Customer asked about the " + topic + "."})
        prefs.append({"prompt": f"Which {topic} plan is best for {index % 12}?", "chosen": f"Plan {index % 5} " + "because " * (index % 9 + 3),
                      "rejected": f"Plan {index % 3}."})
        tasks.append({"messages": [{"role": "user", "content": f"Extract the order {index}."},
                                   {"role": "assistant", "content": '{"order": %d, "items": [%d]}' % (index, index % 4) if index % 23 else '{"order": %d, "items": [' % index}]})
    chats += [chats[3], chats[11], {"messages": [chats[5]["messages"][0], {"role": "assistant", "content": "Restart the printer and wait 9 minutes!"}]}]
    chats += [{"messages": [chats[7]["messages"][0], {"role": "assistant", "content": "No."}]}, {"messages": [chats[7]["messages"][0], {"role": "assistant", "content": "Yes."}]}]
    chats.append({"messages": [{"role": "user", "content": "Tell me everything."}, {"role": "assistant", "content": "word " * 5000}]})
    prefs += [prefs[2], {"prompt": prefs[4]["prompt"], "chosen": prefs[4]["rejected"], "rejected": prefs[4]["chosen"]}]
    tasks += [{"messages": [{"role": "user", "content": "Extract the order 999."}, {"role": "assistant", "content": '{"id": "999", "lines": null}'}]}] * 3
    write_jsonl(tmp_path / "eval.jsonl", [{"messages": [chats[0]["messages"][0], {"role": "assistant", "content": "Restart it."}]}])
    return [str(write_jsonl(tmp_path / name, rows)) for name, rows in (("chats.jsonl", chats), ("prefs.jsonl", prefs), ("tasks.jsonl", tasks))]


def test_every_default_rule_reports_the_same_from_three_processes(tmp_path, monkeypatch):
    request = LintRequest(paths=mixed_corpus(tmp_path), isolated=True, eval=[str(tmp_path / "eval.jsonl")])
    single, sharded = sharded_and_single(monkeypatch, request, jobs=3, workers=ShardWorkers)  # real worker processes
    codes = Counter(finding.code for finding in single.findings)
    for code in ("DU001", "DU002", "DU003", "BL001", "BL002", "LK001", "OF001", "OF003", "PF002", "PF004", "PF005", "QL007", "SC010"):
        assert codes[code], f"the corpus does not make {code} fire: {codes}"
    assert report(sharded) == report(single)


def test_many_inline_shards_of_the_default_rules_report_the_same(tmp_path, monkeypatch):
    single, sharded = sharded_and_single(monkeypatch, LintRequest(paths=mixed_corpus(tmp_path), isolated=True), jobs=40)
    assert report(sharded) == report(single)


def test_a_failed_worker_s_shard_is_read_by_the_main_process(tmp_path, monkeypatch):
    class FailingWorkers(InlineWorkers):
        def results(self, waiting):
            for task in self.tasks:
                yield task, None

    single, sharded = sharded_and_single(monkeypatch, LintRequest(paths=mixed_corpus(tmp_path), isolated=True), jobs=4, workers=FailingWorkers)
    assert report(sharded) == report(single)


def test_a_worker_that_cannot_build_its_rules_reports_no_result(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}])
    plan = plan_lint(LintRequest(paths=[str(data)], isolated=True, select=["DU001"]))
    task = shards.shard_task(plan, plan.rules, [ByteRange(str(data), 0, data.stat().st_size)], 100)
    task.rules = [("XX999", None)]  # no such rule in the worker
    workers = ShardWorkers([task])
    try:
        assert [result for _, result in workers.results(lambda: None)] == [None]
    finally:
        workers.close()


def test_a_shard_whose_rules_differ_is_not_merged(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}])
    plan = plan_lint(LintRequest(paths=[str(data)], isolated=True, select=["DU001", "DU002"]))
    lint_pass = LintPass(plan.rules, [], 100, {})
    later = ShardResult(rows=5, dataset_rules={"DU001": plan.rules[0]})
    assert not lint_pass.merge([later]) and lint_pass.result.rows == 0


def test_cuts_fall_on_line_starts_and_cover_every_byte_once(tmp_path):
    rng = random.Random(1)
    paths = []
    for number in range(3):
        lines = ["{" + '"k": "' + "x" * rng.randint(0, 300) + '"}' for _ in range(rng.randint(0, 40))]
        path = tmp_path / f"f{number}.jsonl"
        path.write_text("\n".join(lines) + ("\n" if rng.random() < 0.5 else ""))
        paths.append(str(path))
    sizes = [(path, Path(path).stat().st_size) for path in paths]
    for count in (2, 3, 7):
        cut = cut_into_shards(sizes, count, first_weight=1.1)
        ranges = [byte_range for shard in cut for byte_range in shard]
        assert len(cut) <= count
        for path, size in sizes:
            mine = [(r.start, r.end) for r in ranges if r.path == path]
            assert [start for start, _ in mine] == [0, *[end for _, end in mine[:-1]]] and (not size or mine[-1][1] == size)
            data = Path(path).read_bytes()
            assert all(start == 0 or data[start - 1 : start] == b"\n" for start, _ in mine)


def test_reading_the_ranges_of_a_cut_gives_the_rows_of_the_file(tmp_path):
    rng = random.Random(3)
    for trial in range(150):
        parts = [rng.choice([b'{"a": %d}' % i, b"", b"  ", b'{"b": "x\\ny"}\r', b"not json", b'{"c":' + b"1" * rng.randint(0, 50) + b"}"])
                 for i in range(rng.randint(1, 30))]
        data = (b"\xef\xbb\xbf" if rng.random() < 0.3 else b"") + b"\n".join(parts) + (b"\n" if rng.random() < 0.5 else b"")
        path = tmp_path / f"t{trial}.jsonl"
        path.write_bytes(data)

        def rows(chunks):
            return [(r.line, r.text, r.obj, r.error, r.oversized, r.size) for chunk in chunks for r in chunk]

        cuts = sorted({line_start_after(str(path), rng.randint(0, len(data))) for _ in range(rng.randint(1, 4))} | {0, len(data)})
        pieces = [row for start, end in zip(cuts, cuts[1:]) for row in rows(iter_jsonl_range_chunks(str(path), start, end, 40))]
        assert pieces == rows(iter_jsonl_chunks(path, 40)), (data, cuts)


def test_bounded_counters_merge_as_one_counter_over_all_rows_would_count():
    def counted(*parts, limit=3):
        counter = BoundedCounter(limit)
        for part in parts:
            counter.add(part)
        return counter, counter.overflowed

    first, _ = counted({"a": 2, "b": 1})
    second, _ = counted({"c": 1, "d": 1})
    first.extend(second)
    assert first.overflowed and not first  # four labels together: more than the limit
    kept, _ = counted({"a": 2})
    kept.extend(counted({"a": 1, "b": 4})[0])
    assert not kept.overflowed and kept == Counter({"a": 3, "b": 4})


def test_row_locations_merge_with_paths_in_another_order():
    from curate.engine.batch import Batch, Row
    from curate.io import RawRow

    def batch(*where):
        return Batch([Row(RawRow(path, line, "{}", {}, None, 0, 3), None, None) for path, line in where])

    import numpy as np

    first, later = RowLocations(), RowLocations()
    first.add(batch(("a.jsonl", 1), ("a.jsonl", 2)), np.array([0, 1]))
    later.add(batch(("b.jsonl", 7), ("a.jsonl", 9)), np.array([1, 0]))
    first.extend(later)
    first.freeze()
    assert [(where.path, where.line) for where in first.locations(list(range(first.count)))] == [("a.jsonl", 1), ("a.jsonl", 2), ("a.jsonl", 9), ("b.jsonl", 7)]
    groups = [[3, 0], [], [2], [1, 2, 3]]  # the clusters of one finish, looked up in one pass
    assert first.grouped_locations(groups) == [first.locations(group) for group in groups]
    assert first.grouped_locations([]) == []


def test_a_bounded_counter_survives_the_trip_to_the_main_process():
    counter = BoundedCounter(5)
    counter.add({"billing": 10, "escalate": 1})
    back = pickle.loads(pickle.dumps(counter, protocol=5))
    assert (back, back.limit, back.overflowed) == (Counter({"billing": 10, "escalate": 1}), 5, False)


def test_curate_lint_jobs_shards_and_writes_the_same_report(tmp_path, monkeypatch, capsys):
    from curate.cli import main

    paths = mixed_corpus(tmp_path)
    monkeypatch.setattr(shards, "MIN_SHARD_BYTES", 1)
    started = []
    monkeypatch.setattr(runner, "ShardWorkers", lambda tasks: started.append(len(tasks)) or InlineWorkers(tasks))
    reports = {}
    for jobs in ("1", "3"):
        out = tmp_path / f"report-{jobs}.json"
        assert main(["lint", *paths, "--isolated", "--format", "json", "-o", str(out), "--jobs", jobs]) == 1
        reports[jobs] = out.read_bytes()
    assert started == [2] and reports["1"] == reports["3"]


def test_curate_lint_refuses_zero_jobs(tmp_path, capsys):
    from curate.cli import main

    with pytest.raises(SystemExit) as stopped:
        main(["lint", str(write_jsonl(tmp_path / "data.jsonl", [{"text": "hi"}])), "--jobs", "0"])
    assert stopped.value.code == 2 and "--jobs" in capsys.readouterr().err


def test_workers_sending_a_part_after_every_batch_report_the_same(tmp_path, monkeypatch):
    """Parts (a worker sends what it holds and goes on with its rules as setup left them) cut each
    shard again; two real worker processes send a part per 7-row batch."""
    request = LintRequest(paths=mixed_corpus(tmp_path), isolated=True, eval=[str(tmp_path / "eval.jsonl")])
    single = run_lint(plan_lint(request), jobs=1)
    monkeypatch.setattr(shards, "MIN_SHARD_BYTES", 1)
    monkeypatch.setattr(shards, "PART_BYTES", 1)
    received: list[int] = []

    class CountingWorkers(ShardWorkers):
        def results(self, waiting):
            for task, parts in super().results(waiting):
                received.append(len(parts))
                yield task, parts

    monkeypatch.setattr(runner, "ShardWorkers", CountingWorkers)
    sharded = run_lint(plan_lint(request), jobs=3, batch_size=7)
    assert len(received) == 2 and min(received) > 10, received
    assert report(sharded) == report(single)


def test_a_worker_sends_one_part_per_part_bytes_each_holding_only_its_own_rows(tmp_path):
    rows = [{"messages": [{"role": "user", "content": f"Reset router {index}"}, {"role": "assistant", "content": "Hold the button."}]} for index in range(10)]
    rows += [rows[0]]  # an exact copy of the first row, in the last part
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    plan = plan_lint(LintRequest(paths=[str(data)], isolated=True, select=["DU001", "SC"]))
    task = shards.shard_task(plan, plan.rules, [ByteRange(str(data), 0, data.stat().st_size)], batch_size=2)
    task.part_bytes = 1
    parts: list[ShardResult] = []
    parts.append(lint_shard(task, lambda size: None, lambda part: parts.append(through_the_pipe(part))))
    assert [part.rows for part in parts] == [2, 2, 2, 2, 2, 1, 0]  # the last part is what follows the last batch's part: nothing
    assert [part.final for part in parts] == [False] * 6 + [True]
    assert [len(part.dataset_rules["DU001"].keys) for part in parts] == [1] * 6 + [0]  # one batch of keys each: nothing carried over
    main = LintPass(runner._set_up(plan.rules, []), [], 2, {})
    assert main.merge(parts) and main.result.rows == 11
    duplicates = list(next(rule for rule in main.dataset_rules if rule.code == "DU001").finish())
    assert [(finding.line, finding.related[0].line) for finding in duplicates] == [(11, 1)]  # found across parts


def test_set_up_copies_share_what_setup_built_and_hold_no_observation(tmp_path):
    row = {"messages": [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]}
    eval_file, train_file = write_jsonl(tmp_path / "eval.jsonl", [row]), write_jsonl(tmp_path / "train.jsonl", [row])
    plan = plan_lint(LintRequest(paths=[str(train_file)], isolated=True, select=["LK001", "LK002"], eval=[str(eval_file)]))
    rules = [rule for rule in plan.rules if isinstance(rule, DatasetRule)]
    for rule in rules:
        rule.setup()
    set_up = shards.SetUpRules(rules)
    first, second = set_up.copies(), set_up.copies()
    for rule, copy, other in zip(rules, first, second):
        assert type(copy) is type(rule) and copy is not rule and copy.context is rule.context
        assert rule.built_by_setup and all(getattr(copy, name) is getattr(rule, name) for name in rule.built_by_setup)
        assert vars(copy).keys() == vars(rule).keys()
    lint_pass = LintPass(first, [], 100, {}, observe_in_background=False)
    lint_pass.read(str(train_file), [next(iter_jsonl_chunks(train_file))])
    assert lint_pass.result.rows == 1 and first[0].findings
    assert [pickle.dumps(copy) for copy in first] != [pickle.dumps(copy) for copy in second]  # the copy read a row
    assert [pickle.dumps(copy) for copy in set_up.copies()] == [pickle.dumps(copy) for copy in second]  # observing one copy left the others as they were


def test_a_worker_that_crashes_after_sending_parts_counts_as_failed(tmp_path):
    import multiprocessing

    workers = ShardWorkers([])
    workers.received = [None]
    receiver, sender = multiprocessing.Pipe(duplex=False)
    shards.send_result(sender, ShardResult(rows=5, final=False))
    shards.send_result(sender, ShardResult(crashed="MemoryError: "))
    sender.close()
    workers._receive(0, receiver)
    assert workers.received == [None]
    receiver, sender = multiprocessing.Pipe(duplex=False)
    shards.send_result(sender, ShardResult(rows=5, final=False))
    shards.send_result(sender, ShardResult(rows=2))
    sender.close()
    workers._receive(0, receiver)
    assert [part.rows for part in workers.received[0]] == [5, 2]


def test_a_worker_exits_at_once_after_sending_its_last_part(tmp_path, monkeypatch):
    """The worker ends with `os._exit(0)` once its last part is in the pipe, skipping the
    interpreter's shutdown (which frees its objects one by one while the main process waits)."""
    import multiprocessing

    data = write_jsonl(tmp_path / "data.jsonl", [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}])
    plan = plan_lint(LintRequest(paths=[str(data)], isolated=True, select=["DU001"]))
    task = shards.shard_task(plan, plan.rules, [ByteRange(str(data), 0, data.stat().st_size)], 100)
    exits: list[int] = []

    class Exited(Exception):
        pass

    def exit_now(code: int) -> None:
        exits.append(code)
        raise Exited

    monkeypatch.setattr(shards.os, "_exit", exit_now)
    receiver, sender = multiprocessing.Pipe(duplex=False)
    with pytest.raises(Exited):
        shards.run_shard(task, sender, multiprocessing.Value("q", 0, lock=False))
    assert exits == [0]
    last = shards.receive_result(receiver)
    assert last.final and last.rows == 1 and last.crashed is None


def _report_polars_threads(queue) -> None:
    import polars

    queue.put(polars.thread_pool_size())


def polars_threads_of_a_worker() -> int:
    import multiprocessing

    from curate.engine.shards import worker_environment

    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_report_polars_threads, args=(queue,))
    with worker_environment():
        process.start()
    threads = queue.get(timeout=120)
    process.join()
    return threads


def test_a_worker_starts_with_one_polars_thread_unless_the_user_chose(monkeypatch):
    """A process per core keeps the cores busy: a worker's polars pool is one thread (an extra
    pool per process only adds threads that take turns); a POLARS_MAX_THREADS the user set wins,
    and this process's environment is left as it was."""
    import os

    monkeypatch.delenv("POLARS_MAX_THREADS", raising=False)
    assert polars_threads_of_a_worker() == 1
    assert "POLARS_MAX_THREADS" not in os.environ
    monkeypatch.setenv("POLARS_MAX_THREADS", "3")
    assert polars_threads_of_a_worker() == 3 and os.environ["POLARS_MAX_THREADS"] == "3"
