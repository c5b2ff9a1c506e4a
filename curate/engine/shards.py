"""Linting large JSON Lines input on every core.

One Python process uses little more than one core: reading and the per-row work of the rules
hold the GIL. So the input's bytes are cut into contiguous shards at line boundaries, about
equal in size, and each shard past the first is linted by a process of its own, started fresh
(`spawn`: a forked child of a process that has used polars deadlocks in polars' thread pool).
A worker runs the same `LintPass` as the main process, on its rules built from the same
options, and sends back its row findings, its counts and its dataset rules' observations in
parts, one per PART_BYTES of its shard, going on after each with its rules as `setup` left
them (`SetUpRules`): so a worker holds one part's observations at a time, not its shard's, and
the parts arrive while the main process still reads. The main process merges them in shard
order (`DatasetRule.merge`), so every dataset rule reports what one rule reading every row in
order would, and the report is the same as a one-process run's. What travels is the workers'
own results over their private pipes (pickle protocol 5, arrays out of band, received straight
into their final buffers); nothing read from the input is ever unpickled.

Sharding applies only where it cannot change a result: plain (not gzipped) JSONL files that
start as UTF-8, large enough to pay for a worker's start-up (`MIN_SHARD_BYTES` each), every
dataset rule mergeable, and no chat template to render (its render budget is per run).
"""

from __future__ import annotations

import os
import pickle
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from curate.engine.findings import Finding
from curate.engine.rule import DatasetRule, Rule, RuleOptions, RunContext
from curate.io import anonymous_buffer, encoding_problem, file_size, line_start_after, release_freed_memory
from curate.sources import source_kind

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from curate.engine.settings import LintPlan

#: The fewest bytes a worker is given: below ~27k bench rows its start-up (a fresh interpreter
#: importing polars and numpy, ~0.4 s of CPU) costs more than the core it adds saves.
MIN_SHARD_BYTES = 16 * 1024 * 1024


#: The main process's shard against a worker's. A worker starts ~0.6 s later (a fresh interpreter,
#: its imports and setup, counting the lines before its shard), and the main process spends
#: about as long receiving the worker's parts as it reads (measured at 1M rows, the worker's last
#: part against the main process's end of reading: at 1.06 the worker was done 1.4-1.5 s before
#: it, at 1.0 it waited 0.4-0.9 s for the worker; between them, 1.02 has the two end together).
MAIN_SHARD_WEIGHT = 1.02

#: A worker sends what it has found and observed each time it has read this many bytes of its
#: shard (~50k chat rows, ~35 MB of observations) and goes on with emptied rules, so that it
#: holds one part at a time: at 1M rows, a whole shard held until the end (~340 MB) had both
#: processes together at 1,389-1,511 MiB (PSS), against 1,167-1,205 MiB in parts.
PART_BYTES = 32 * 1024 * 1024


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
    #: Bytes read between two parts sent (PART_BYTES when the task was made).
    part_bytes: int


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
    #: Whether this is the shard's last part (a worker sends one per PART_BYTES read).
    final: bool = True


class SetUpRules:
    """Dataset rules as `setup` left them, before they observe a batch: a worker goes on with
    fresh copies (`copies`) after each part it sends. What `setup` built (`built_by_setup`: an
    eval index) and the run context are shared by the copies, not copied."""

    def __init__(self, rules: list[DatasetRule]):
        self.states = [pickle.dumps(rule, protocol=5) for rule in rules]  # `__getstate__`: no context, nothing setup built
        self.shared = [{"context": rule.context, **{name: getattr(rule, name) for name in rule.built_by_setup if hasattr(rule, name)}} for rule in rules]

    @classmethod
    def if_picklable(cls, rules: list[DatasetRule]) -> SetUpRules | None:
        """SetUpRules of `rules`, or None where one cannot be pickled (a rule class defined in a
        function, or one holding a lock)."""
        try:
            return cls(rules)
        except (pickle.PicklingError, AttributeError, TypeError):
            return None

    def copies(self) -> list[DatasetRule]:
        copies = []
        for state, shared in zip(self.states, self.shared):
            rule = pickle.loads(state)  # this process's own pickle, made in __init__
            vars(rule).update(shared)
            copies.append(rule)
        return copies


def shard_task(plan: LintPlan, rules: list[Rule], ranges: list[ByteRange], batch_size: int) -> ShardTask:
    context = replace(plan.context, _resources={})  # resources are built by each process's own setup
    return ShardTask(ranges, [(rule.code, rule.options) for rule in rules], context, plan.max_row_bytes, dict(plan.columns), batch_size, PART_BYTES)


def run_shard(task: ShardTask, conn: Connection, done_bytes: Any) -> None:
    """A worker's main: lint the shard, sending its parts as they are ready, then the last one (or
    why it could not), and exit at once (`os._exit`): the interpreter's own shutdown frees its
    objects one by one, 0.4 s at 1M rows, while this process's memory still counts and the main
    process waits for it."""
    try:
        send_result(conn, lint_shard(task, lambda size: _add(done_bytes, size), lambda part: send_result(conn, part)))
    except BaseException as exc:  # noqa: BLE001 (the main process reads the shard itself instead)
        send_result(conn, ShardResult(crashed=f"{type(exc).__name__}: {exc}"))
    conn.close()
    os._exit(0)


def send_result(conn: Connection, result: ShardResult) -> None:
    """Send one part (`pickled`, `send_views`), freeing it as it goes and handing its memory back."""
    views = pickled(result)
    del result
    send_views(conn, views)
    release_freed_memory()


def lint_shard(task: ShardTask, on_bytes: Callable[[int], None], send_part: Callable[[ShardResult], None]) -> ShardResult:
    """Lint the shard, handing `send_part` a part (`LintPass.take_part`) each `task.part_bytes`
    read; returns the last part."""
    from curate.engine.runner import LintPass, cyclic_gc_paused

    unsent = 0

    def on_batch(raw_rows: list) -> None:
        nonlocal unsent
        size = sum(raw.size for raw in raw_rows)
        on_bytes(size)
        unsent += size
        if unsent >= task.part_bytes:
            unsent = 0
            send_part(lint_pass.take_part())

    with cyclic_gc_paused():
        lint_pass = LintPass.for_shard(task, on_batch)
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


@contextmanager
def worker_environment() -> Iterator[None]:
    """The environment a worker starts with (`spawn` copies this process's): polars' thread pool
    of one thread (`POLARS_MAX_THREADS`, read when polars is imported), unless the user set one.
    With a process per core the cores are busy already, and a pool per process only adds threads
    that take turns (1M rows: 36.9 s against 39.7 s median wall, 64 s against 68 s CPU, over four
    alternating pairs; 34.8 against 36.0 s over twelve in an earlier round)."""
    if "POLARS_MAX_THREADS" in os.environ:
        yield
        return
    os.environ["POLARS_MAX_THREADS"] = "1"
    try:
        yield
    finally:
        del os.environ["POLARS_MAX_THREADS"]


class ShardWorkers:
    """The worker processes of one run, in shard order. A thread per worker receives its parts as
    soon as they are sent (reading a pipe releases the GIL), while this process still reads its
    own shard; `results` yields each worker's task and parts, or None for a worker that failed
    (its shard is then the caller's to read)."""

    def __init__(self, tasks: list[ShardTask]):
        import multiprocessing
        import threading

        context = multiprocessing.get_context("spawn")
        self.tasks = tasks
        self.done_bytes = [context.Value("q", 0, lock=False) for _ in tasks]
        self.received: list[list[ShardResult] | None] = [None] * len(tasks)
        self.processes = []
        self.receivers = []
        for position, (task, counter) in enumerate(zip(tasks, self.done_bytes)):
            receiver, sender = context.Pipe(duplex=False)
            widen_pipe(receiver)
            process = context.Process(target=run_shard, args=(task, sender, counter), daemon=True, name="curate-shard")
            with worker_environment():
                process.start()
            sender.close()
            thread = threading.Thread(target=self._receive, args=(position, receiver), daemon=True, name="curate-receive")
            thread.start()
            self.processes.append(process)
            self.receivers.append(thread)

    def _receive(self, position: int, receiver: Connection) -> None:
        parts: list[ShardResult] = []
        try:
            while not parts or not parts[-1].final:
                parts.append(receive_result(receiver))
                if parts[-1].crashed is not None:
                    return  # its shard stays None, and the parts received are dropped
            self.received[position] = parts
        except (EOFError, OSError, pickle.UnpicklingError):
            pass  # the worker died: its shard stays None
        finally:
            receiver.close()

    def bytes_done(self) -> int:
        return sum(counter.value for counter in self.done_bytes)

    def results(self, waiting: Callable[[], None]) -> Iterator[tuple[ShardTask, list[ShardResult] | None]]:
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
