"""The lint runner: one streaming read of every file feeds every rule.

Row rules see each batch and return findings at once; dataset rules observe
each batch and report when all files are read. Findings are sorted stably.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field

from curate.engine.batch import Batch
from curate.engine.findings import Finding, Severity
from curate.engine.rule import DatasetRule, Rule, RowRule, RuleSetupError
from curate.engine.settings import LintPlan, severity_fails
from curate.engine.shards import ByteRange, SetUpRules, ShardResult, ShardTask, ShardWorkers, plan_shards, shard_task
from curate.io import InputError, RawRow, batched, empty_file_error, file_size, iter_batches, iter_jsonl_range_chunks, row_hash, usable_cores
from curate.sources import IndexedRow, apply_column_mapping, source_kind

#: Rows per batch. 20k-row batches held ~10 KB of transient Python objects and arrays per row
#: (~200 MB, two batches in flight with the observer thread); 5k rows use the same CPU time
#: (100k rows: 8.3-8.6 s vs 8.9-9.0 s) at about half the peak (334 MB vs 619 MB).
DEFAULT_BATCH_SIZE = 5_000


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
    #: The configured rules that can fix their findings, by code (what `curate fix` applies).
    fixers: dict[str, Rule] = field(default_factory=dict, repr=False)

    @property
    def fixable(self) -> int:
        """Findings whose rule's fix, as configured, changes or drops their row."""
        return sum(1 for finding in self.findings if finding.code in self.fixers and self.fixers[finding.code].fix(finding) is not None)

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


class BatchViews:
    """Filtered views of one batch (`with_roles`, `without_preference_rows`), each built once;
    `view` counts the rows a rule did not see, per rule code, for the lint summary."""

    def __init__(self, batch: Batch):
        self.batch = batch
        self._built: dict[str, tuple[Batch, int]] = {}

    def view(self, name: str, code: str, left_out: Counter[str]) -> Batch:
        if name not in self._built:
            self._built[name] = getattr(self.batch, name)()
        view, count = self._built[name]
        if count:
            left_out[code] += count
        return view


def check_row_rules(row_rules: list[RowRule], batch: Batch, roleless: Counter[str], errors: list[str]) -> list[Finding]:
    """Every row rule on the batch, and on the rejected sides of its preference rows (a finding
    the rejected side shares with the chosen side, such as one about the prompt, is kept once).
    Rules that need roles skip roleless rows; `roleless` counts them per rule. A rule that cannot
    go on (RuleSetupError: a template over its run budget) leaves `row_rules`, its reason in `errors`."""
    views = BatchViews(batch)
    found: list[Finding] = []
    for rule in list(row_rules):
        found.extend(_checked(rule, views.view("with_roles", rule.code, roleless) if rule.needs_roles else batch, row_rules, errors))
    rejected = batch.rejected_sides()
    if rejected is not None:
        seen = {(f.code, f.line, f.message) for f in found}
        for rule in list(row_rules):
            side = rejected.with_roles()[0] if rule.needs_roles else rejected
            found.extend(f for f in _checked(rule, side, row_rules, errors) if (f.code, f.line, f.message) not in seen)
    return found


def _checked(rule: RowRule, batch: Batch, row_rules: list[RowRule], errors: list[str]) -> list[Finding]:
    try:
        return list(rule.check_batch(batch))
    except RuleSetupError as exc:
        row_rules.remove(rule)
        if str(exc) not in errors:
            errors.append(str(exc))
        return []


def observe_dataset_rules(dataset_rules: list[DatasetRule], batch: Batch, left_out: Counter[str]) -> None:
    """Every dataset rule observes the batch; rules that skip preference rows see it without them."""
    views = BatchViews(batch)
    for rule in dataset_rules:
        rule.observe(views.view("without_preference_rows", rule.code, left_out) if rule.skips_preference_rows else batch)


class BackgroundObserver:
    """Dataset rules observe each batch in a second thread while the main thread reads the next
    batch and runs the row rules on this one. Most of a rule's observe is polars and numpy work,
    which releases the GIL, so the two threads use both cores. Batches are observed one at a
    time and in order (each `observe` first waits for the previous batch), so every rule sees
    exactly the batches, in the order, a serial run would; an exception in a rule is raised in
    the main thread at the next `observe` or `wait`. With `in_background` False the rules observe
    in the calling thread: where a process per core already keeps the cores busy (a sharded
    run), the second thread only added GIL hand-offs (1M rows: 1.3 s less sys time without it,
    and 31.3 s against 32.8 s wall over five alternating pairs)."""

    def __init__(self, dataset_rules: list[DatasetRule], left_out: Counter[str], in_background: bool = True):
        self.dataset_rules = dataset_rules
        self.left_out = left_out
        self.in_background = in_background
        self._executor: ThreadPoolExecutor | None = None
        self._pending: Future[None] | None = None

    def observe(self, batch: Batch) -> None:
        self.wait()
        if not self.dataset_rules:
            return
        if not self.in_background:
            observe_dataset_rules(self.dataset_rules, batch, self.left_out)
            return
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="curate-observe")
        batch.messages  # built once here, before both threads ask for it
        self._pending = self._executor.submit(observe_dataset_rules, self.dataset_rules, batch, self.left_out)

    def wait(self) -> None:
        """Block until the last batch is observed (re-raising what its rules raised)."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None


def add_row_indexes(findings: list[Finding], json_indexes: dict[tuple[str, int], int]) -> None:
    """Findings on rows that are not JSONL lines carry the row's 0-based `row_index` too: JSON
    arrays (whose `line` is where the object starts) and tables (Parquet, CSV, Arrow, datasets)."""
    tables: dict[str, bool] = {}
    for finding in findings:
        if finding.line is None or "row_index" in finding.data:
            continue
        index = json_indexes.get((finding.path, finding.line))
        if index is None:
            table = tables.get(finding.path)
            if table is None:
                table = tables[finding.path] = source_kind(finding.path) not in ("jsonl", "json", "stdin")
            index = finding.line - 1 if table else None
        if index is not None:
            finding.data["row_index"] = index


class LintPass:
    """One process's share of a run: it reads sources batch by batch, runs the row rules on each
    batch and has the dataset rules observe it (`BackgroundObserver`: in a second thread, or in
    this one when the run is sharded). A run is one pass, or one pass per shard of its input
    (`curate.engine.shards`), merged in order."""

    def __init__(self, rules: list[Rule], errors: list[str], batch_size: int, columns: dict[str, str],
                 keep_row_hashes: bool = False, on_batch: Callable[[list[RawRow]], None] | None = None,
                 observe_in_background: bool = True):
        self.row_rules = [rule for rule in rules if isinstance(rule, RowRule)]
        self.dataset_rules = [rule for rule in rules if isinstance(rule, DatasetRule)]
        self.errors = errors
        self.batch_size = batch_size
        self.columns = columns
        self.keep_row_hashes = keep_row_hashes
        self.on_batch = on_batch
        self.result = ShardResult(errors=errors)
        self.json_indexes: dict[tuple[str, int], int] = {}
        self.row_hashes: dict[tuple[str, int], str] = {}
        self.observer = BackgroundObserver(self.dataset_rules, self.result.left_out, observe_in_background)
        #: The dataset rules as setup left them: a shard's pass goes on with copies after each part it
        #: sends (`take_part`), and a finished rule is replaced by one (`finishing`). None where a
        #: rule cannot be pickled (see `SetUpRules.if_picklable`).
        self.set_up_rules = SetUpRules.if_picklable(self.dataset_rules)

    @classmethod
    def for_shard(cls, task: ShardTask, on_batch: Callable[[list[RawRow]], None]) -> LintPass:
        """A worker's pass: its rules built from the task's options, set up in this process;
        `on_batch` sees each batch's raw rows once it is linted (and may `take_part`)."""
        from curate.engine.rule import REGISTRY, load_builtin_rules

        load_builtin_rules()
        errors: list[str] = []
        rules = _set_up([REGISTRY[code](options, task.context) for code, options in task.rules], errors)
        return cls(rules, errors, task.batch_size, task.columns, on_batch=on_batch, observe_in_background=False)

    def read(self, path: str, batches: Iterable[list[RawRow]]) -> None:
        """Lint the batches of one source; an InputError ends the source, its message in `errors`."""
        try:
            for raw_rows in batches:
                result = self.result  # a new one after each part a shard's pass sends (`take_part`)
                if self.columns:
                    apply_column_mapping(raw_rows, self.columns)
                batch = Batch.from_raw(raw_rows)
                result.rows += len(batch)
                result.rows_by_path[path] += len(batch)
                self.observer.observe(batch)
                result.findings.extend(check_row_rules(self.row_rules, batch, result.roleless, self.errors))
                for fmt, count in batch.format_counts.items():
                    result.formats[str(fmt) if fmt else "unknown"] += count
                if IndexedRow in set(map(type, raw_rows)):  # rows of JSON arrays (a type test in C per row)
                    self.json_indexes.update(((raw.path, raw.line), raw.index) for raw in raw_rows if isinstance(raw, IndexedRow))
                if self.keep_row_hashes:
                    self.row_hashes.update(((raw.path, raw.line), row_hash(raw)) for raw in raw_rows)
                if self.on_batch:
                    self.on_batch(raw_rows)
        except InputError as exc:
            self.result.failed.add(path)
            self.errors.append(str(exc))

    def read_range(self, byte_range: ByteRange, max_row_bytes: int) -> None:
        chunks = iter_jsonl_range_chunks(byte_range.path, byte_range.start, byte_range.end, max_row_bytes)
        self.read(byte_range.path, batched(chunks, self.batch_size))

    def wait(self) -> None:
        """Block until the dataset rules have observed every batch read."""
        self.observer.wait()

    def close(self) -> None:
        self.observer.close()

    def shard_result(self) -> ShardResult:
        """What this pass found and observed, for the process that merges the shards."""
        self.result.dataset_rules = {rule.code: rule for rule in self.dataset_rules}
        return self.result

    def take_part(self) -> ShardResult:
        """What this pass found and observed since its last part (`shard_result`, not final); it
        goes on with fresh copies of its rules as `setup` left them (a shard's pass only)."""
        self.wait()
        part = self.shard_result()
        part.final = False
        assert self.set_up_rules is not None, "a shard's rules are sent back pickled, so they pickle"
        self.dataset_rules[:] = self.set_up_rules.copies()  # the observer's list too
        self.result = ShardResult(errors=self.errors)
        self.observer.left_out = self.result.left_out
        return part

    def finishing(self, holders: Iterable[list[Rule]] = ()) -> Iterator[DatasetRule]:
        """The dataset rules, one at a time, for the caller to `finish` (and take its `stats`). Once
        the caller asks for the next, the last is replaced, here and in `holders` (the plan's
        rules), by its copy as `setup` left it (which fixes findings as it would): what it observed
        is freed then, so the next finishes and the report do not carry it (at 1M rows DU002's
        shingle sets and locations, ~350 MB). Rules that cannot be pickled are kept as they are."""
        if self.set_up_rules is None:
            yield from self.dataset_rules
            return
        holders = [self.dataset_rules, *holders]
        for position, copy in enumerate(self.set_up_rules.copies()):
            rule = self.dataset_rules[position]
            yield rule
            for holder in holders:
                holder[:] = [copy if held is rule else held for held in holder]
            del rule

    def merge(self, parts: list[ShardResult]) -> bool:
        """Take in the parts of a later shard, in order (see `DatasetRule.merge`); False, with
        nothing taken, when their rules are not this pass's (one failed to set up in one process
        only)."""
        codes = {rule.code for rule in self.dataset_rules}
        if any(set(part.dataset_rules) != codes for part in parts):
            return False
        result = self.result
        for later in parts:
            result.findings += later.findings
            result.rows += later.rows
            result.rows_by_path.update(later.rows_by_path)
            result.failed |= later.failed
            result.formats.update(later.formats)
            result.roleless.update(later.roleless)
            result.left_out.update(later.left_out)
            self.errors += [error for error in later.errors if error not in self.errors]
            for rule in self.dataset_rules:
                rule.merge(later.dataset_rules.pop(rule.code))  # type: ignore[arg-type]
        return True  # the parts' rules are gone: what they held is held here only, and freed as used


def run_lint(
    plan: LintPlan,
    on_progress: ProgressCallback | None = None,
    keep_row_hashes: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_rows: Callable[[list[RawRow]], None] | None = None,
    jobs: int | None = 1,
) -> LintResult:
    """Lint every file of the plan. `on_rows` sees each batch of raw rows as read, for callers
    that need the rows too (review) without reading the files a second time. `jobs`: processes
    to read with (None: one per core; `curate lint` passes its `--jobs`); large JSONL input is
    then cut into shards, one per process (`curate.engine.shards`), with the same report as one
    process gives. Workers are started with multiprocessing's `spawn`, which imports the main
    module in each: call with jobs other than 1 from under `if __name__ == "__main__":`."""
    with cyclic_gc_paused():
        return _run_lint(plan, on_progress, keep_row_hashes, batch_size, on_rows, usable_cores() if jobs is None else jobs)


def _run_lint(
    plan: LintPlan,
    on_progress: ProgressCallback | None,
    keep_row_hashes: bool,
    batch_size: int,
    on_rows: Callable[[list[RawRow]], None] | None,
    jobs: int,
) -> LintResult:
    started = time.perf_counter()
    errors: list[str] = []
    rules = _set_up(plan.rules, errors)
    shards = plan_shards(plan, rules, jobs) if not keep_row_hashes and on_rows is None else None
    total_bytes = sum(file_size(path) for path in plan.paths)
    read_bytes = 0
    workers: ShardWorkers | None = None

    def report(path: str) -> None:
        if on_progress:
            done = read_bytes + (workers.bytes_done() if workers else 0)
            on_progress(Progress("read", min(done, total_bytes), total_bytes, lint_pass.result.rows, path))

    def on_batch(raw_rows: list[RawRow]) -> None:
        nonlocal read_bytes
        if on_rows:
            on_rows(raw_rows)
        read_bytes += sum(raw.size for raw in raw_rows)
        report(raw_rows[0].path if raw_rows else "")

    lint_pass = LintPass(rules, errors, batch_size, plan.columns, keep_row_hashes, on_batch, observe_in_background=shards is None)
    try:
        if shards is None:
            for path in plan.paths:
                lint_pass.read(path, iter_batches(path, batch_size, plan.max_row_bytes, plan.source_options))
        else:
            workers = ShardWorkers([shard_task(plan, rules, ranges, batch_size) for ranges in shards[1:]])
            for byte_range in shards[0]:
                lint_pass.read_range(byte_range, plan.max_row_bytes)
            for task, parts in workers.results(lambda: report("")):
                lint_pass.wait()
                if parts is None or not lint_pass.merge(parts):  # the worker failed: read its shard here
                    for byte_range in task.ranges:
                        lint_pass.read_range(byte_range, plan.max_row_bytes)
                del parts
            for path in plan.paths:
                if not lint_pass.result.rows_by_path[path] and path not in lint_pass.result.failed:
                    lint_pass.result.failed.add(path)
                    errors.append(empty_file_error(path))
        lint_pass.wait()
    finally:
        lint_pass.close()
        if workers is not None:
            workers.close()
    result = lint_pass.result
    findings, rows, roleless, left_out, formats = result.findings, result.rows, result.roleless, result.left_out, result.formats
    files_read = [path for path in plan.paths if path not in result.failed]
    row_hashes, json_indexes = lint_pass.row_hashes, lint_pass.json_indexes
    rule_types = [type(rule) for rule in rules]
    del rules  # the observed rules are freed one by one as they finish (`LintPass.finishing`)
    skipped = dict(plan.skipped)
    for code, count in roleless.items():
        skipped[code] = f"{count} {'row has' if count == 1 else 'rows have'} no roles (TRL text format)"
    for code, count in left_out.items():
        skipped[code] = f"{count} preference {'row is' if count == 1 else 'rows are'} compared by the PF rules instead"
    stats: dict[str, dict[str, int]] = {"row formats": dict(formats.most_common())} if rows else {}
    finishes = len(lint_pass.dataset_rules)
    for position, rule in enumerate(lint_pass.finishing(holders=[plan.rules]), start=1):
        if on_progress:
            on_progress(Progress("finish", position - 1, finishes, rows, f"{rule.code} {rule.name}"))
        try:
            findings.extend(rule.finish())
        except RuleSetupError as exc:
            errors.append(str(exc))
        stats.update(rule.stats())
        del rule
    if on_progress:
        on_progress(Progress("finish", finishes, finishes, rows, "done"))
    findings.sort(key=Finding.sort_key)
    add_row_indexes(findings, json_indexes)
    return LintResult(
        findings=findings,
        rows=rows,
        files=files_read,
        errors=errors,
        skipped=skipped,
        stats=stats,
        seconds=time.perf_counter() - started,
        row_hashes=row_hashes,
        rules=rule_types,
        fixers={rule.code: rule for rule in [*lint_pass.row_rules, *lint_pass.dataset_rules] if rule.fixable},
    )
