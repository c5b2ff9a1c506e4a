"""Review decisions: an append-only journal beside the data, and applying it.

Every decision a reviewer makes (keep, drop, edit, waive) is appended to
`<data>.curate-review.jsonl` and fsynced before the UI moves on, so a crash,
Ctrl-C or a closed terminal loses nothing. Undo and redo are journal entries
too: replaying the file from the top reproduces the state exactly.

Decisions name a row by its line AND its content hash (`curate.io.row_hash`).
On reopen each decision is checked against the current data: a row that moved
(lines inserted above it) is found again by its hash; a row whose content
changed is reported as stale and its decision is not applied.

This module is headless (no Textual): `curate fix` applies journals too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import orjson

from curate.io import InputError, RawRow, atomic_write_bytes

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

    def to_dict(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"action": self.action.value, "line": self.line, "hash": self.hash}
        if self.action is Action.EDIT:
            entry["row"] = self.row
        if self.code is not None:
            entry["code"] = self.code
        return entry

    @classmethod
    def from_dict(cls, entry: dict[str, Any]) -> Decision:
        return cls(Action(entry["action"]), int(entry["line"]), str(entry["hash"]), entry.get("row"), entry.get("code"))

    def moved_to(self, line: int) -> Decision:
        return Decision(self.action, line, self.hash, self.row, self.code)


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
    stale: list[Decision] = field(default_factory=list)
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
            lines = ", ".join(str(d.line) for d in self.stale[:8]) + (" ..." if len(self.stale) > 8 else "")
            notes.append(f"{len(self.stale)} decisions were not applied because their rows changed (lines {lines})")
        return notes


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


class DecisionJournal:
    """The append-only decision log of one data file, with undo/redo.

    Open it with `DecisionJournal.open(data_path, hashes)` where `hashes` maps the
    current file's line numbers to row hashes; `state` is the replayed result.
    """

    def __init__(self, path: Path, data_name: str):
        self.path = path
        self.data_name = data_name
        self.applied: list[list[Decision]] = []
        self.undone: list[list[Decision]] = []
        self.state = ReviewState()
        self.report = ReplayReport()
        self._handle: Any = None

    # -- opening and replay ----------------------------------------------------------------

    @classmethod
    def open(cls, data_path: str | os.PathLike, hashes: Mapping[int, str]) -> DecisionJournal:
        """Replay the journal beside `data_path` (if any) against the current row hashes."""
        journal = cls(journal_path(data_path), Path(data_path).name)
        if journal.path.exists():
            journal._replay(hashes)
        return journal

    def _replay(self, hashes: Mapping[int, str]) -> None:
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise InputError(f"{self.path}: cannot read the review journal: {exc}") from None
        complete, _, tail = data.rpartition(b"\n")
        if tail.strip():
            # A crash mid-write leaves a partial last line; cut it so later appends start clean.
            self.report.truncated_tail = True
            self._truncate(len(complete) + 1 if complete else 0)
        for number, raw in enumerate(complete.split(b"\n") if complete else [], start=1):
            if raw.strip():
                self._replay_entry(number, raw)
        self.report.steps = len(self.applied)
        self._reconcile(hashes)

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

    def _reconcile(self, hashes: Mapping[int, str]) -> None:
        """Point every decision at the row that has its hash now; drop those whose row changed."""
        lines_by_hash: dict[str, list[int]] = {}
        for line, digest in hashes.items():
            lines_by_hash.setdefault(digest, []).append(line)
        for steps in (self.applied, self.undone):
            for position, step in enumerate(steps):
                steps[position] = [moved for decision in step if (moved := self._locate(decision, hashes, lines_by_hash)) is not None]
        self._rebuild_state()

    def _locate(self, decision: Decision, hashes: Mapping[int, str], lines_by_hash: dict[str, list[int]]) -> Decision | None:
        if hashes.get(decision.line) == decision.hash:
            return decision
        candidates = lines_by_hash.get(decision.hash)
        if not candidates:
            self.report.stale.append(decision)
            return None
        nearest = min(candidates, key=lambda line: (abs(line - decision.line), line))
        self.report.moved.append((decision.line, nearest))
        return decision.moved_to(nearest)

    # -- recording -------------------------------------------------------------------------

    def record(self, decisions: Iterable[Decision]) -> None:
        """Append one undoable step (one or more decisions, e.g. a whole duplicate cluster)."""
        step = list(decisions)
        if not step:
            return
        self._append({"op": "decide", "decisions": [decision.to_dict() for decision in step]})
        self._push(step)
        for decision in step:
            self.state.apply(decision)

    def undo(self) -> list[Decision] | None:
        """Undo the last step; returns its decisions (None when there is nothing to undo)."""
        if not self.applied:
            return None
        self._append({"op": "undo"})
        step = self._undo_step()
        self._rebuild_state()
        return step

    def redo(self) -> list[Decision] | None:
        if not self.undone:
            return None
        self._append({"op": "redo"})
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

    def _append(self, entry: dict[str, Any]) -> None:
        """Write one line and fsync it before returning: the decision survives a crash."""
        if self._handle is None:
            is_new = not self.path.exists() or self.path.stat().st_size == 0
            self._handle = self.path.open("ab")
            if is_new:
                self._handle.write(orjson.dumps({"op": "header", "version": JOURNAL_VERSION, "data": self.data_name}) + b"\n")
        self._handle.write(orjson.dumps(entry) + b"\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    @property
    def decision_count(self) -> int:
        return sum(len(step) for step in self.applied)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None

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


# -- applying decisions --------------------------------------------------------------------


@dataclass
class SaveSummary:
    written: int = 0
    dropped: int = 0
    edited: int = 0
    #: Rows that were never parsed (over max-row-bytes) cannot be carried over.
    unreadable: int = 0


def reviewed_lines(rows: Iterable[RawRow], state: ReviewState, summary: SaveSummary) -> Iterator[bytes]:
    """The JSONL lines of the cleaned file: dropped rows left out, edits applied,
    untouched rows copied byte for byte (their text) so nothing else changes."""
    for row in rows:
        decision = state.get(row.line)
        if decision is not None and decision.dropped:
            summary.dropped += 1
            continue
        if decision is not None and decision.has_edit:
            summary.edited += 1
            line = orjson.dumps(decision.edited)
        elif row.text is not None:
            line = row.text.encode("utf-8", "surrogatepass")
        elif row.obj is not None or row.ok:
            line = orjson.dumps(row.obj)
        else:
            summary.unreadable += 1
            continue
        summary.written += 1
        yield line + b"\n"


def write_reviewed(rows: Iterable[RawRow], state: ReviewState, output: str | os.PathLike) -> SaveSummary:
    """Write the data with the decisions applied to `output`, atomically (the input is never touched)."""
    summary = SaveSummary()
    atomic_write_bytes(output, b"".join(reviewed_lines(rows, state, summary)))
    return summary


# -- validating an edited row --------------------------------------------------------------


def schema_row_rules(rules: Iterable[Any]) -> list[Any]:
    """The schema (SC) row rules of a plan, ready to check one edited row."""
    from curate.engine.rule import RowRule

    chosen = [rule for rule in rules if isinstance(rule, RowRule) and rule.code.startswith("SC")]
    for rule in chosen:
        rule.setup()  # cheap and idempotent for schema rules; the plan's rules may not have run yet
    return chosen


def check_edited_row(text: str, path: str, line: int, rules: Iterable[Any]) -> tuple[Any, list[str]]:
    """Parse an edited row and run the schema row rules on it.

    Returns (row object, problems); the edit may be saved only when problems is empty,
    so a reviewer can never write a row that `curate lint` would reject as malformed.
    """
    from curate.engine.batch import Batch

    try:
        obj = orjson.loads(text.encode("utf-8", "surrogatepass"))
    except orjson.JSONDecodeError as exc:
        return None, [f"invalid JSON: {exc}"]
    raw = RawRow(path, line, text, obj=obj)
    batch = Batch.from_raw([raw])
    problems = [f"{finding.code} {finding.name}: {finding.message}" for rule in rules for finding in rule.check_batch(batch)]
    return obj, problems
