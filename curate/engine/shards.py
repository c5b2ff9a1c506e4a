"""Linting large JSON Lines input on every core.

One Python process uses little more than one core: reading and the per-row work of the rules
hold the GIL. So the input's bytes are cut into contiguous shards at line boundaries, about
equal in size, and each shard past the first is linted by a process of its own, started fresh
(`spawn`: a forked child of a process that has used polars deadlocks in polars' thread pool).
A worker runs the same `LintPass` as the main process, on its rules built from the same
options, and sends back its row findings, its counts and its dataset rules' observations; the
main process merges them in shard order (`DatasetRule.merge`), so every dataset rule reports
what one rule reading every row in order would, and the report is the same as a one-process
run's. What travels is the workers' own results over their private pipes (pickle protocol 5,
arrays out of band, received straight into their final buffers); nothing read from the input
is ever unpickled.

Sharding applies only where it cannot change a result: plain (not gzipped) JSONL files that
start as UTF-8, large enough to pay for a worker's start-up (`MIN_SHARD_BYTES` each), every
dataset rule mergeable, and no chat template to render (its render budget is per run).
"""

from __future__ import annotations

import os
import pickle
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from curate.engine.findings import Finding
from curate.engine.rule import DatasetRule, Rule, RuleOptions, RunContext
from curate.io import anonymous_buffer, encoding_problem, file_size, line_start_after
from curate.sources import source_kind

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from curate.engine.settings import LintPlan

#: The fewest bytes a worker is given: below ~27k bench rows its start-up (a fresh interpreter
#: importing polars and numpy, ~0.4 s of CPU) costs more than the core it adds saves.
MIN_SHARD_BYTES = 16 * 1024 * 1024


#: The main process's shard against a worker's: a worker starts ~0.6 s later (a fresh interpreter,
#: its imports and setup, counting the lines before its shard) and its result takes ~1 s to
#: arrive at 1M rows, so its shard is smaller (measured: bench/lint.py's 1M race).
MAIN_SHARD_WEIGHT = 1.1


@dataclass(frozen=True)
class ByteRange:
    """The lines of `path` from byte `start` up to `end`, both line boundaries."""

    path: str
    start: int
    end: int


def shardable_paths(paths: list[str]) -> bool:
    """Every input is a plain JSON Lines file that starts as UTF-8 (a UTF-16 file is one error)."""
    for path in paths:
        if source_kind(path) != "jsonl" or path.lower().endswith(".gz") or not os.path.isfile(path):
            return False
        try:
            with open(path, "rb") as handle:
                if encoding_problem(path, handle.read(4)):
                    return False
        except OSError:
            return False
    return True


def plan_shards(plan: LintPlan, rules: list[Rule], jobs: int) -> list[list[ByteRange]] | None:
    """The input cut into shards, one per process (the first is the main process's), each of at
    least MIN_SHARD_BYTES, or None when one process should read it all (see the module docstring)."""
    if jobs < 2 or plan.context.model is not None or os.name != "posix":  # results move over pipe descriptors
        return None
    if not all(rule.mergeable() for rule in rules if isinstance(rule, DatasetRule)):
        return None
    if not plan.paths or not shardable_paths(plan.paths):
        return None
    sizes = [(path, file_size(path)) for path in plan.paths]
    total = sum(size for _, size in sizes)
    count = min(jobs, total // max(MIN_SHARD_BYTES, 1))
    if count < 2:
        return None
    return cut_into_shards(sizes, count, MAIN_SHARD_WEIGHT)


def cut_into_shards(sizes: list[tuple[str, int]], count: int, first_weight: float = 1.0) -> list[list[ByteRange]]:
    """`count` runs of consecutive byte ranges, cut at line starts (fewer runs when lines are
    longer than a share): the first `first_weight` times the size of each of the others."""
    total = sum(size for _, size in sizes)
    first = total * first_weight / (first_weight + count - 1)
    targets = [int(first + (total - first) * k / (count - 1)) for k in range(count - 1)]
    shards: list[list[ByteRange]] = [[]]
    base = 0
    for path, size in sizes:
        cuts = sorted({line_start_after(path, target - base) for target in targets if base <= target < base + size})
        start = 0
        for cut in cuts:
            if cut > start:
                shards[-1].append(ByteRange(path, start, cut))
            start = cut
            shards.append([])
        if start < size:
            shards[-1].append(ByteRange(path, start, size))
        base += size
    return [shard for shard in shards if shard]


@dataclass
class ShardTask:
    """What a worker needs to lint its shard as the main process would."""

    ranges: list[ByteRange]
    rules: list[tuple[str, RuleOptions]]
    context: RunContext
    max_row_bytes: int
    columns: dict[str, str]
    batch_size: int


@dataclass
class ShardResult:
    """What a worker found and observed of its shard."""

    findings: list[Finding] = field(default_factory=list)
    rows: int = 0
    rows_by_path: Counter[str] = field(default_factory=Counter)
    failed: set[str] = field(default_factory=set)
    formats: Counter[str] = field(default_factory=Counter)
    roleless: Counter[str] = field(default_factory=Counter)
    left_out: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    dataset_rules: dict[str, DatasetRule] = field(default_factory=dict)
    #: Why the worker stopped (a one-line error), or None when it finished.
    crashed: str | None = None


def shard_task(plan: LintPlan, rules: list[Rule], ranges: list[ByteRange], batch_size: int) -> ShardTask:
    context = replace(plan.context, _resources={})  # resources are built by each process's own setup
    return ShardTask(ranges, [(rule.code, rule.options) for rule in rules], context, plan.max_row_bytes, dict(plan.columns), batch_size)


def run_shard(task: ShardTask, conn: Connection, done_bytes: Any) -> None:
    """A worker's main: lint the shard, send the result (or why it could not) and exit."""
    try:
        views = pickled(lint_shard(task, lambda size: _add(done_bytes, size)))
    except BaseException as exc:  # noqa: BLE001 (the main process reads the shard itself instead)
        views = pickled(ShardResult(crashed=f"{type(exc).__name__}: {exc}"))
    send_views(conn, views)
    conn.close()


def lint_shard(task: ShardTask, on_bytes: Callable[[int], None]) -> ShardResult:
    from curate.engine.runner import LintPass, cyclic_gc_paused

    with cyclic_gc_paused():
        lint_pass = LintPass.for_shard(task, on_bytes)
        try:
            for byte_range in task.ranges:
                lint_pass.read_range(byte_range, task.max_row_bytes)
            lint_pass.wait()
        finally:
            lint_pass.close()
        return lint_pass.shard_result()


def _add(counter: Any, size: int) -> None:
    counter.value += size


def pickled(result: ShardResult) -> list[memoryview]:
    """The result as pickle protocol 5: its arrays' buffers as they are (not copied into the
    pickle), then the pickle. The caller should hold no other reference to the result, so that
    `send_views` frees each array once it is sent."""
    buffers: list[pickle.PickleBuffer] = []
    header = pickle.dumps(result, protocol=5, buffer_callback=buffers.append)
    return [buffer.raw() for buffer in buffers] + [memoryview(header)]


def send_views(conn: Connection, views: list[memoryview]) -> None:
    """Write the buffers to the pipe after their sizes, freeing each once written (through a
    widened pipe, ~700 MB/s; Connection.send_bytes moves ~150 MB/s through a 64 KiB one)."""
    conn.send([len(view) for view in views])
    descriptor = conn.fileno()
    views.reverse()
    while views:
        view = views.pop()
        while view:
            view = view[os.write(descriptor, view) :]


def receive_result(conn: Connection) -> ShardResult:
    """What `send_views` sent, each array read straight into a mapping of its own (writable; freed
    to the OS as soon as the array is: no heap to trim)."""
    descriptor = conn.fileno()
    buffers = []
    for size in conn.recv():
        buffer = anonymous_buffer(size)
        view, done = memoryview(buffer), 0
        while done < size:
            read = os.readv(descriptor, [view[done:]])
            if not read:
                raise EOFError("the worker's pipe closed early")
            done += read
        buffers.append(buffer)
    header = buffers.pop()
    return pickle.loads(header, buffers=buffers)


def widen_pipe(conn: Connection) -> None:
    """Let the pipe hold 1 MiB (Linux `F_SETPIPE_SZ`; the default 64 KiB costs a context switch per
    64 KiB moved). Elsewhere, or above the system's limit, the pipe stays as it is."""
    try:
        import fcntl

        fcntl.fcntl(conn.fileno(), getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_BYTES)
    except (ImportError, OSError):
        pass


#: How much a worker's pipe holds (`widen_pipe`): 1 MiB, the Linux default limit for any user.
PIPE_BYTES = 1024 * 1024


class ShardWorkers:
    """The worker processes of one run, in shard order. A thread per worker receives its result
    as soon as it is sent (reading a pipe releases the GIL), while this process still reads its
    own shard; `results` yields each worker's task and result, or None for a worker that failed
    (its shard is then the caller's to read)."""

    def __init__(self, tasks: list[ShardTask]):
        import multiprocessing
        import threading

        context = multiprocessing.get_context("spawn")
        self.tasks = tasks
        self.done_bytes = [context.Value("q", 0, lock=False) for _ in tasks]
        self.received: list[ShardResult | None] = [None] * len(tasks)
        self.processes = []
        self.receivers = []
        for position, (task, counter) in enumerate(zip(tasks, self.done_bytes)):
            receiver, sender = context.Pipe(duplex=False)
            widen_pipe(receiver)
            process = context.Process(target=run_shard, args=(task, sender, counter), daemon=True, name="curate-shard")
            process.start()
            sender.close()
            thread = threading.Thread(target=self._receive, args=(position, receiver), daemon=True, name="curate-receive")
            thread.start()
            self.processes.append(process)
            self.receivers.append(thread)

    def _receive(self, position: int, receiver: Connection) -> None:
        try:
            result = receive_result(receiver)
            self.received[position] = result if result.crashed is None else None
        except (EOFError, OSError, pickle.UnpicklingError):
            pass  # the worker died: its shard stays None
        finally:
            receiver.close()

    def bytes_done(self) -> int:
        return sum(counter.value for counter in self.done_bytes)

    def results(self, waiting: Callable[[], None]) -> Iterator[tuple[ShardTask, ShardResult | None]]:
        for position, (task, thread, process) in enumerate(zip(self.tasks, self.receivers, self.processes)):
            while thread.is_alive():
                thread.join(0.2)
                waiting()
            process.join()
            result, self.received[position] = self.received[position], None
            yield task, result

    def close(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
            process.join()
