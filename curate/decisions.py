"""Review decisions: an append-only journal beside the data (`curate.fix` applies it).

Every decision a reviewer makes (keep, drop, edit, waive) is appended to
`<data>.curate-review.jsonl` and fsynced before the UI moves on, so a crash,
Ctrl-C or a closed terminal loses nothing. Undo and redo are journal entries
too: replaying the file from the top reproduces the state exactly.

Decisions name a row by its line, its content hash (`curate.io.row_hash`), and
which copy it is among the rows with that hash (`occurrence` of `copies`), so a
decision can only ever land on the row it was made on, even when the data holds
identical rows. On reopen each decision is checked against the current data:
a row that moved (lines inserted or removed around it) is found again as the
same copy of the same content; a decision whose row changed, or whose content
now has a different number of copies (so which copy it meant is unclear), is
reported as stale and not applied.

One review session at a time: opening a journal for writing takes an exclusive,
non-blocking lock (`<journal>.lock`, holding the pid). A write that fails is
undone (the journal is cut back to its last complete entry) and reported, so a
decision the UI reported as failed is never replayed later.

This module is headless (no Textual) and only keeps the journal: the cleaned file both
`curate review` and `curate fix` write, and the check of an edited row, are in `curate.fix`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import orjson

from curate.io import InputError

JOURNAL_SUFFIX = ".curate-review.jsonl"
JOURNAL_VERSION = 1
_DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".ndjson")


class Action(str, Enum):
    KEEP = "keep"
    DROP = "drop"
    EDIT = "edit"
    WAIVE = "waive"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Decision:
    """One decision about one row. `row` is the new row object of an edit, `code` the waived rule."""

    action: Action
    line: int
    hash: str
    row: Any = None
    code: str | None = None
    #: Which of the rows with this hash it is (0-based, file order), and how many there were,
    #: when the decision was made; None in entries written before copies were counted.
    occurrence: int | None = None
    copies: int | None = None

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"action": self.action.value, "line": self.line, "hash": self.hash}
        if self.occurrence is not None:
            entry["occurrence"], entry["copies"] = self.occurrence, self.copies
        if self.action is Action.EDIT:
            entry["row"] = self.row
        if self.code is not None:
            entry["code"] = self.code
        return entry

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> Decision:
        occurrence, copies = entry.get("occurrence"), entry.get("copies")
        if occurrence is not None or copies is not None:
            occurrence, copies = int(occurrence), int(copies)
            if not 0 <= occurrence < copies:
                raise ValueError("occurrence out of range")
        return cls(Action(entry["action"]), int(entry["line"]), str(entry["hash"]), entry.get("row"), entry.get("code"), occurrence, copies)

    def pinned(self, line: int, occurrence: int | None, copies: int | None) -> Decision:
        """The same decision, named by its row's place in the current data."""
        return Decision(self.action, line, self.hash, self.row, self.code, occurrence, copies)


@dataclass(slots=True)
class RowState:
    """What the decisions so far say about one row."""

    hash: str
    #: KEEP or DROP; None while the reviewer only waived findings. An edit implies KEEP.
    action: Action | None = None
    edited: Any = None
    has_edit: bool = False
    waived: set[str] = field(default_factory=set)

    @property
    def dropped(self) -> bool:
        return self.action is Action.DROP

    @property
    def label(self) -> str:
        """A short word for tables: dropped / edited / kept / waived."""
        if self.action is Action.DROP:
            return "dropped"
        if self.has_edit:
            return "edited"
        if self.action is Action.KEEP:
            return "kept"
        return "waived" if self.waived else ""


@dataclass
class ReviewState:
    """The fold of all applied decisions: line -> RowState."""

    rows: dict[int, RowState] = field(default_factory=dict)

    def apply(self, decision: Decision) -> None:
        state = self.rows.setdefault(decision.line, RowState(decision.hash))
        if decision.action is Action.WAIVE:
            if decision.code:
                state.waived.add(decision.code)
        elif decision.action is Action.EDIT:
            state.action, state.edited, state.has_edit = Action.KEEP, decision.row, True
        else:
            state.action = decision.action

    def get(self, line: int | None) -> RowState | None:
        return None if line is None else self.rows.get(line)

    def is_waived(self, line: int | None, code: str) -> bool:
        state = self.get(line)
        return state is not None and code in state.waived

    def counts(self) -> dict[str, int]:
        """How many rows are dropped, edited, kept and have waivers (for status lines)."""
        counts = {"dropped": 0, "edited": 0, "kept": 0, "waived": 0}
        for state in self.rows.values():
            if state.label in ("dropped", "edited", "kept"):
                counts[state.label] += 1
            if state.waived:
                counts["waived"] += 1
        return counts


@dataclass
class ReplayReport:
    """What reopening a journal found; `problems()` are sentences for the user."""

    steps: int = 0
    moved: list[tuple[int, int]] = field(default_factory=list)
    #: Decisions whose row changed (no row has its content any more).
    stale: list[Decision] = field(default_factory=list)
    #: Decisions whose content now has a different number of identical copies: which one was meant is unclear.
    ambiguous: list[Decision] = field(default_factory=list)
    bad_lines: list[int] = field(default_factory=list)
    truncated_tail: bool = False

    def problems(self) -> list[str]:
        notes = []
        if self.truncated_tail:
            notes.append("the journal's last entry was incomplete (interrupted while writing) and was ignored")
        if self.bad_lines:
            notes.append(f"journal lines {', '.join(map(str, self.bad_lines))} are not valid entries and were ignored")
        if self.moved:
            notes.append(f"{len(self.moved)} decided rows moved in the data and were found again by content")
        if self.stale:
            notes.append(f"{len(self.stale)} decisions were not applied because their rows changed (lines {_listing(self.stale)})")
        if self.ambiguous:
            notes.append(
                f"{len(self.ambiguous)} decisions were not applied because the number of identical copies of their row changed, "
                f"so which copy they meant is unclear (lines {_listing(self.ambiguous)}); decide those rows again"
            )
        return notes


def _listing(decisions: list[Decision], shown: int = 8) -> str:
    return ", ".join(str(d.line) for d in decisions[:shown]) + (" ..." if len(decisions) > shown else "")


def journal_path(data_path: str | os.PathLike) -> Path:
    """`data.jsonl` -> `data.jsonl.curate-review.jsonl` (beside the data)."""
    data_path = Path(data_path)
    return data_path.with_name(data_path.name + JOURNAL_SUFFIX)


def default_clean_path(data_path: str | os.PathLike) -> Path:
    """`data.jsonl` -> `data.clean.jsonl`; `data.json.gz` -> `data.clean.jsonl`."""
    data_path = Path(data_path)
    name = data_path.name
    if name.lower().endswith(".gz"):
        name = name[:-3]
    for suffix in _DATA_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return data_path.with_name(name + ".clean.jsonl")


class JournalLocked(InputError):
    """Another process holds the journal's lock (another review session of the same file)."""


class JournalWriteError(OSError):
    """Writing a journal entry failed; the message says whether the journal was restored."""


def lock_path(journal: Path) -> Path:
    return journal.with_name(journal.name + ".lock")


def journal_holder(data_path: str | os.PathLike) -> str | None:
    """Who holds the review lock of `data_path`'s journal ("pid 123"), or None when nobody does."""
    import fcntl

    path = lock_path(journal_path(data_path))
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return _holder_of(fd)
    finally:
        os.close(fd)  # closing releases a shared lock we got
    return None


def in_use_message(journal: Path, holder: str) -> str:
    return f"{journal}: another `curate review` ({holder}) has this journal open; close that session first"


def _holder_of(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


def _acquire_lock(journal: Path) -> int:
    """An exclusive flock on `<journal>.lock` (non-blocking), with our pid written in it."""
    import fcntl

    path = lock_path(journal)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise InputError(f"{path}: cannot create the review lock: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _holder_of(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise InputError(f"{path}: cannot lock the review journal: {exc.strerror}") from None
            raise JournalLocked(in_use_message(journal, holder)) from None
        # A session that closed between our open and flock unlinked the file we locked: lock the new one.
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class DecisionJournal:
    """The append-only decision log of one data file, with undo/redo.

    Open it with `DecisionJournal.open(data_path, hashes)` where `hashes` maps the
    current file's line numbers to row hashes; `state` is the replayed result.
    A journal opened for writing holds the review lock until `close()`; one opened
    `read_only` (what `curate fix` does) takes no lock and never changes the file.
    """

    def __init__(self, path: Path, data_name: str, hashes: Mapping[int, str] | None = None, *, read_only: bool = False):
        self.path = path
        self.data_name = data_name
        self.read_only = read_only
        self.applied: list[list[Decision]] = []
        self.undone: list[list[Decision]] = []
        self.state = ReviewState()
        self.report = ReplayReport()
        self._hashes: Mapping[int, str] = hashes or {}
        self._lines_by_hash: dict[str, list[int]] = {}
        for line in sorted(self._hashes):
            self._lines_by_hash.setdefault(self._hashes[line], []).append(line)
        self._fd: int | None = None
        self._lock_fd: int | None = None
        self._damaged: str | None = None

    # -- opening and replay ----------------------------------------------------------------

    @classmethod
    def open(cls, data_path: str | os.PathLike, hashes: Mapping[int, str], *, read_only: bool = False) -> DecisionJournal:
        """Replay the journal beside `data_path` (if any) against the current row hashes.
        Unless `read_only`, first take the review lock (JournalLocked names who holds it)."""
        journal = cls(journal_path(data_path), Path(data_path).name, hashes, read_only=read_only)
        if not read_only:
            journal._lock_fd = _acquire_lock(journal.path)
        try:
            if journal.path.exists():
                journal._replay()
        except BaseException:
            journal.close()
            raise
        return journal

    def _replay(self) -> None:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read the review journal: {exc}") from None
        complete, _, tail = data.rpartition(b"\n")
        if tail.strip():
            # A crash mid-write leaves a partial last line; cut it so later appends start clean.
            self.report.truncated_tail = True
            if not self.read_only:
                self._truncate(len(complete) + 1 if complete else 0)
        for number, raw in enumerate(complete.split(b"\n") if complete else [], start=1):
            if raw.strip():
                self._replay_entry(number, raw)
        self.report.steps = len(self.applied)
        self._reconcile()

    def _truncate(self, size: int) -> None:
        with self.path.open("r+b") as handle:
            handle.truncate(size)
            handle.flush()
            os.fsync(handle.fileno())

    def _replay_entry(self, number: int, raw: bytes) -> None:
        try:
            entry = orjson.loads(raw)
            op = entry["op"]
            if op == "header":
                if entry.get("version") != JOURNAL_VERSION:
                    raise InputError(f"{self.path}: review journal version {entry.get('version')} is not supported (expected {JOURNAL_VERSION})")
            elif op == "decide":
                self._push([Decision.from_dict(item) for item in entry["decisions"]])
            elif op == "undo":
                self._undo_step()
            elif op == "redo":
                self._redo_step()
            else:
                raise ValueError(op)
        except InputError:
            raise
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            self.report.bad_lines.append(number)

    def _reconcile(self) -> None:
        """Point every decision at its row in the current data; set aside those whose row is gone or unclear."""
        for steps in (self.applied, self.undone):
            for position, step in enumerate(steps):
                steps[position] = [found for decision in step if (found := self._locate(decision)) is not None]
        self._rebuild_state()

    def _locate(self, decision: Decision) -> Decision | None:
        lines = self._lines_by_hash.get(decision.hash, [])
        if not lines:
            self.report.stale.append(decision)
            return None
        if decision.copies is None:
            # An entry that does not say which copy it meant stays on its own line or nowhere.
            if self._hashes.get(decision.line) == decision.hash:
                return self.pin(decision)
            self.report.ambiguous.append(decision)
            return None
        if len(lines) != decision.copies:
            self.report.ambiguous.append(decision)
            return None
        line = lines[decision.occurrence]
        if line != decision.line:
            self.report.moved.append((decision.line, line))
        return decision.pinned(line, decision.occurrence, decision.copies)

    def pin(self, decision: Decision) -> Decision:
        """The decision with the copy of its row it names in the data the journal was opened with."""
        lines = self._lines_by_hash.get(decision.hash, [])
        if decision.line not in lines:
            return decision
        return decision.pinned(decision.line, lines.index(decision.line), len(lines))

    # -- recording -------------------------------------------------------------------------

    def record(self, decisions: Iterable[Decision]) -> None:
        """Append one undoable step (one or more decisions, e.g. a whole duplicate cluster)."""
        step = [self.pin(decision) for decision in decisions]
        if not step:
            return
        self._append({"op": "decide", "decisions": [decision.to_dict() for decision in step]}, "decision")
        self._push(step)
        for decision in step:
            self.state.apply(decision)

    def undo(self) -> list[Decision] | None:
        """Undo the last step; returns its decisions (None when there is nothing to undo)."""
        if not self.applied:
            return None
        self._append({"op": "undo"}, "undo")
        step = self._undo_step()
        self._rebuild_state()
        return step

    def redo(self) -> list[Decision] | None:
        if not self.undone:
            return None
        self._append({"op": "redo"}, "redo")
        step = self._redo_step()
        for decision in step:
            self.state.apply(decision)
        return step

    def _push(self, step: list[Decision]) -> None:
        self.applied.append(step)
        self.undone.clear()

    def _undo_step(self) -> list[Decision]:
        return _move_last(self.applied, self.undone, "undo")

    def _redo_step(self) -> list[Decision]:
        return _move_last(self.undone, self.applied, "redo")

    def _rebuild_state(self) -> None:
        self.state = ReviewState()
        for step in self.applied:
            for decision in step:
                self.state.apply(decision)

    def _append(self, entry: dict[str, Any], what: str) -> None:
        """Write one line and fsync it before returning: the decision survives a crash.
        If any part fails, cut the journal back to where it was, so the entry is never replayed."""
        if self.read_only:
            raise JournalWriteError(f"{self.path}: the review journal was opened read-only")
        if self._damaged:
            raise JournalWriteError(self._damaged)
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            good = os.fstat(self._fd).st_size
        except OSError as exc:
            raise JournalWriteError(f"could not open the review journal {self.path}: {exc.strerror}; the {what} was not recorded") from exc
        payload = orjson.dumps(entry) + b"\n"
        if good == 0:
            payload = orjson.dumps({"op": "header", "version": JOURNAL_VERSION, "data": self.data_name}) + b"\n" + payload
        try:
            _write_all(self._fd, payload)
            os.fsync(self._fd)
        except OSError as exc:
            raise self._restore(good, exc, what) from exc

    def _restore(self, good: int, exc: OSError, what: str) -> JournalWriteError:
        reason = exc.strerror or str(exc)
        try:
            assert self._fd is not None
            os.ftruncate(self._fd, good)
            os.fsync(self._fd)
        except OSError:
            self._damaged = (
                f"the review journal {self.path} could not be written ({reason}) nor cut back; it may hold a partial entry. "
                "Quit and reopen the review to see which decisions it holds"
            )
            return JournalWriteError(self._damaged)
        return JournalWriteError(f"could not write the review journal {self.path} ({reason}); the journal is unchanged and the {what} was not recorded")

    @property
    def decision_count(self) -> int:
        return sum(len(step) for step in self.applied)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if self._lock_fd is not None:
            # Unlink while still holding the lock: a waiting opener re-checks the inode (see _acquire_lock).
            lock_path(self.path).unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __del__(self) -> None:
        # A journal dropped without close() (a test, a crash path) must not keep the lock.
        if getattr(self, "_fd", None) is not None or getattr(self, "_lock_fd", None) is not None:
            self.close()

    def __enter__(self) -> DecisionJournal:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _move_last(source: list[list[Decision]], target: list[list[Decision]], verb: str) -> list[Decision]:
    """Move the last step between the applied and undone stacks (a journal `undo` with
    nothing to undo is a corrupt entry: the ValueError makes replay report it)."""
    if not source:
        raise ValueError(f"nothing to {verb}")
    step = source.pop()
    target.append(step)
    return step
