"""`curate fix`: the cleaning decisions a reviewer would make, made without the TUI.

Driven only by findings (code, severity, line, related, data), so rules added
later need no change here:

- rows with an error-level schema (SC) finding are dropped (they cannot be trained on),
  except that a role alias in a `messages` row (SC004 `bot`, `Assistant`) is renamed;
- of every group of exact or near duplicates (DU001/DU002, joined through
  `related` and `data["cluster"]`) the first row in file order is kept and the
  rest are dropped;
- rows with eval leakage (LK) are dropped when asked (`--drop-leaked`);
- personal data and secrets (QL006) are replaced by typed tokens (`[EMAIL]`,
  `[API_KEY]`, ...) when asked (`--redact-pii`), with the rule's own detectors and options;
- control characters are stripped from rows with QL002 findings; rows whose turn is
  only a placeholder (QL001) are dropped, and a placeholder Alpaca `input` is cleared;
- unexpected keys (SC008) are removed, and when a file mixes row formats
  (SC010) its rows are rewritten in the `messages` format;
- a review journal beside the data is applied first (read-only): the reviewer's
  drop, keep, edit and waive win over the automatic choices above, except that a
  row that cannot be parsed is never written and a kept or edited row is still
  redacted (only waiving its QL006 finding exempts it).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from curate.decisions import DecisionJournal, ReplayReport, ReviewState, journal_holder, journal_path
from curate.engine.findings import Finding, Severity
from curate.engine.runner import LintResult
from curate.formats import CONVERTIBLE_TO_MESSAGES, RowFormat, conversation_to_record, detect_format, normalize
from curate.io import InputError, RawRow, atomic_write_bytes, iter_rows
from curate.sources import apply_column_mapping, output_format_for, write_rows
from curate.rules.quality import strip_control_characters as strip_controls_from_text

DUPLICATE_CODES = ("DU001", "DU002", "PF005")
#: Preference pairs that cannot teach anything as written: dropped like schema errors.
UNTRAINABLE_PAIR_CODES = ("PF001",)
CONTROL_CODE = "QL002"
PLACEHOLDER_CODE = "QL001"
PII_CODE = "QL006"
UNEXPECTED_KEY_CODE = "SC008"
ROLE_CODE = "SC004"
MIXED_FORMATS_CODE = "SC010"
REVIEW = "review"

_SOURCE_PATTERN = re.compile(r"^(\w+)\[(\d+)\]$")

Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class FixOptions:
    drop_leaked: bool = False
    apply_journal: bool = True
    #: Replaces personal data and secrets in one string: (new text, items replaced). None keeps them.
    redact: Callable[[str], tuple[str, int]] | None = None
    #: `--columns` (mapped rows are written in the canonical format), how to read the sources,
    #: and the output format per input ("jsonl" or "parquet"; default: `output_format_for`).
    columns: dict[str, str] = field(default_factory=dict)
    source_options: Any = None
    output_formats: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class RowFix:
    """What to do with one row; `drop` names the reason (a rule code, or "review")."""

    drop: str | None = None
    strip_controls: bool = False
    redact: bool = False
    #: (message source such as "messages[2]" or None for the top level, key) pairs to remove.
    remove_keys: list[tuple[str | None, str]] = field(default_factory=list)
    #: (message source, canonical role) for role aliases in `messages` rows (SC004's `rename`).
    rename_roles: list[tuple[str, str]] = field(default_factory=list)
    to_messages: bool = False
    #: Top-level prompt fields holding only a placeholder (an Alpaca `input` of "<noinput>").
    clear_fields: list[str] = field(default_factory=list)
    protected: bool = False  # the reviewer kept or edited this row
    edited: Any = None
    has_edit: bool = False


@dataclass
class FileFix:
    """What fixing one file did: counts per (rule code or "review", verb)."""

    path: str
    output: str
    rows_in: int = 0
    rows_out: int = 0
    actions: Counter[tuple[str, str]] = field(default_factory=Counter)
    journal: ReplayReport | None = None
    journal_path: str | None = None
    #: Who is still reviewing the file ("pid 123") when fix read its journal.
    journal_holder: str | None = None


# -- small repairs -------------------------------------------------------------------------


def map_strings(value: Any, transform: Callable[[str], str], *, keys: bool = False) -> Any:
    """A copy of a JSON value with `transform` applied to every string in it (and to keys if asked)."""
    if isinstance(value, str):
        return transform(value)
    if isinstance(value, list):
        return [map_strings(item, transform, keys=keys) for item in value]
    if isinstance(value, dict):
        return {(transform(key) if keys else key): map_strings(item, transform, keys=keys) for key, item in value.items()}
    return value


def strip_control_characters(value: Any) -> Any:
    """The value with QL002's control characters removed from every string in it (keys included)."""
    return map_strings(value, strip_controls_from_text, keys=True)


def _target(obj: dict, source: str | None) -> Any:
    """The top level (source None) or the message named by a source such as `messages[2]`."""
    if source is None:
        return obj
    match = _SOURCE_PATTERN.match(source)
    items = obj.get(match.group(1)) if match else None
    index = int(match.group(2)) if match else -1
    return items[index] if isinstance(items, list) and 0 <= index < len(items) else None


def remove_keys(obj: dict, keys: Iterable[tuple[str | None, str]]) -> dict:
    """A copy of the row without the named top-level or message-level keys."""
    obj = orjson.loads(orjson.dumps(obj))  # deep copy: the caller's row stays as read
    for source, key in keys:
        target = _target(obj, source)
        if isinstance(target, dict):
            target.pop(key, None)
    return obj


def rename_roles(obj: dict, renames: Iterable[tuple[str, str]]) -> dict:
    """A copy of the row with the named messages' `role` set to the canonical role."""
    obj = orjson.loads(orjson.dumps(obj))
    for source, role in renames:
        target = _target(obj, source)
        if isinstance(target, dict) and "role" in target:
            target["role"] = role
    return obj


def as_messages_record(obj: dict) -> dict:
    """The row in the OpenAI `messages` format (meta keys kept)."""
    conversation = normalize(obj)
    return obj if conversation is None else conversation_to_record(conversation)


# -- deciding ------------------------------------------------------------------------------


def duplicate_groups(findings: Iterable[Finding], codes: tuple[str, ...] = DUPLICATE_CODES) -> list[list[Key]]:
    """Rows joined by duplicate findings (the flagged row, its related rows, its cluster),
    as groups sorted by (path, line); a union-find, so chains A~B~C form one group."""
    parent: dict[Key, Key] = {}

    def root(key: Key) -> Key:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for finding in findings:
        if finding.code not in codes or finding.line is None:
            continue
        members = [(finding.path, finding.line)]
        members += [(location.path, location.line) for location in finding.related if location.line is not None]
        for item in finding.data.get("cluster") or []:
            if isinstance(item, dict) and isinstance(item.get("line"), int):
                members.append((str(item.get("path", finding.path)), item["line"]))
        first = root(members[0])
        for member in members[1:]:
            parent[root(member)] = first
    groups: dict[Key, list[Key]] = {}
    for key in parent:
        groups.setdefault(root(key), []).append(key)
    return sorted(sorted(group) for group in groups.values() if len(group) > 1)


def _is_schema_error(finding: Finding) -> bool:
    return finding.code.startswith("SC") and finding.severity is Severity.ERROR


def plan_row_fixes(result: LintResult, states: dict[str, ReviewState], options: FixOptions) -> dict[Key, RowFix]:
    """Decide, from the findings and the review journals, what happens to each row."""
    fixes: dict[Key, RowFix] = {}

    def fix_of(key: Key) -> RowFix:
        return fixes.setdefault(key, RowFix())

    for path, state in states.items():
        for line, row_state in state.rows.items():
            fix = fix_of((path, line))
            if row_state.dropped:
                fix.drop = REVIEW
            elif row_state.action is not None:
                fix.protected = True
                fix.edited, fix.has_edit = row_state.edited, row_state.has_edit
    live = [f for f in result.findings if not (f.line is not None and f.path in states and states[f.path].is_waived(f.line, f.code))]
    mixed_files = {f.path for f in live if f.code == MIXED_FORMATS_CODE}
    for finding in live:
        if finding.line is None:
            continue
        fix = fix_of((finding.path, finding.line))
        if finding.code == ROLE_CODE and finding.data.get("rename") and not fix.has_edit:
            fix.rename_roles.append((finding.data["source"], finding.data["rename"]))
        elif _is_schema_error(finding) and not fix.has_edit:
            fix.drop = fix.drop or finding.code
        elif finding.code in UNTRAINABLE_PAIR_CODES and not fix.protected:
            fix.drop = fix.drop or finding.code
        elif options.drop_leaked and finding.code.startswith("LK") and not fix.protected:
            fix.drop = fix.drop or finding.code
        elif finding.code == CONTROL_CODE:
            fix.strip_controls = True
        elif finding.code == PII_CODE and options.redact is not None:
            # A keep (or an edit) is about the row, not a verdict on its secrets: only waiving
            # the QL006 finding itself (filtered out of `live` above) exempts a row from redaction.
            fix.redact = True
        elif finding.code == PLACEHOLDER_CODE and not fix.protected:
            # A placeholder Alpaca `input` means "no input": clear it. A placeholder turn
            # (an answer of "<No Output>") has nothing to train on: drop the row.
            if finding.data.get("source") == "input":
                fix.clear_fields.append("input")
            else:
                fix.drop = fix.drop or finding.code
        elif finding.code == UNEXPECTED_KEY_CODE and "key" in finding.data:
            fix.remove_keys.append((finding.data.get("source"), finding.data["key"]))
    for path in mixed_files:
        for line in _lines_of(result, path):
            fix_of((path, line)).to_messages = True
    _drop_duplicates(live, fixes, fix_of)
    return fixes


def _lines_of(result: LintResult, path: str) -> Iterator[int]:
    return (line for (row_path, line) in result.row_hashes if row_path == path)


def _drop_duplicates(findings: list[Finding], fixes: dict[Key, RowFix], fix_of) -> None:
    """In each duplicate group keep the first row not dropped for another reason (and any row
    the reviewer kept); drop the others, naming the duplicate rule that flagged them."""
    code_of = {}
    for finding in findings:
        if finding.code in DUPLICATE_CODES and finding.line is not None:
            key = (finding.path, finding.line)
            code_of[key] = min(code_of.get(key, finding.code), finding.code)
    for group in duplicate_groups(findings):
        survivors = [key for key in group if not (key in fixes and fixes[key].drop)]
        for key in survivors[1:]:
            fix = fix_of(key)
            if not fix.protected:
                fix.drop = code_of.get(key) or code_of.get(group[-1]) or DUPLICATE_CODES[0]


# -- writing -------------------------------------------------------------------------------


def redact_strings(value: Any, redact: Callable[[str], tuple[str, int]]) -> tuple[Any, int]:
    """The value with `redact` applied to every string in it (not to keys), and the items replaced."""
    replaced = 0

    def redact_one(text: str) -> str:
        nonlocal replaced
        text, count = redact(text)
        replaced += count
        return text

    return map_strings(value, redact_one), replaced


def fixed_line(row: RawRow, fix: RowFix | None, actions: Counter[tuple[str, str]], redact: Callable[[str], tuple[str, int]] | None = None) -> bytes | None:
    """The output line of a row (None when it is dropped), counting what was done."""
    if fix is not None and fix.drop:
        actions[(fix.drop, "dropped")] += 1
        return None
    if fix is not None and fix.has_edit:
        actions[(REVIEW, "edited")] += 1
        edited = fix.edited
        if fix.redact and redact is not None:
            edited, replaced = redact_strings(edited, redact)
            if replaced:
                actions[(PII_CODE, "redacted")] += 1
        return orjson.dumps(edited)
    if not row.ok:
        # Unparsed rows are always SC findings and dropped above; be safe if SC is deselected.
        actions[("unparsed", "dropped")] += 1
        return None
    if fix is None or not (fix.strip_controls or fix.remove_keys or fix.rename_roles or fix.to_messages or fix.clear_fields or fix.redact):
        return row.text.encode("utf-8", "surrogatepass") if row.text is not None else orjson.dumps(row.obj)
    obj = row.obj
    if fix.clear_fields and isinstance(obj, dict):
        obj = {**obj, **{key: "" for key in fix.clear_fields}}
        actions[(PLACEHOLDER_CODE, "placeholder input cleared")] += 1
    if fix.remove_keys:
        obj = remove_keys(obj, fix.remove_keys)
        actions[(UNEXPECTED_KEY_CODE, "keys removed")] += 1
    if fix.rename_roles:
        obj = rename_roles(obj, fix.rename_roles)
        actions[(ROLE_CODE, "roles renamed")] += 1
    if fix.strip_controls:
        obj = strip_control_characters(obj)
        actions[(CONTROL_CODE, "cleaned")] += 1
    if fix.redact and redact is not None:
        obj, replaced = redact_strings(obj, redact)
        if replaced:
            actions[(PII_CODE, "redacted")] += 1
    if fix.to_messages and isinstance(obj, dict) and detect_format(obj) in CONVERTIBLE_TO_MESSAGES:
        obj = as_messages_record(obj)
        actions[(MIXED_FORMATS_CODE, "converted to messages")] += 1
    return orjson.dumps(obj)


def fix_file(path: str, output: str | None, fixes: dict[Key, RowFix], report: FileFix, redact: Callable[[str], tuple[str, int]] | None = None,
             options: FixOptions | None = None) -> None:
    """Stream one input file through its fixes; write `output` atomically unless it is None (dry run).
    A file whose every row would be dropped is not written (InputError): an empty output is never a result."""
    options = options or FixOptions()
    lines: list[bytes] = []
    for row in iter_rows(path, options=options.source_options):
        report.rows_in += 1
        if options.columns:
            apply_column_mapping([row], options.columns)
        line = fixed_line(row, fixes.get((row.path, row.line)), report.actions, redact)
        if line is not None:
            lines.append(line + b"\n")
    report.rows_out = len(lines)
    if report.rows_in and not lines:
        raise InputError(f"{path}: all {report.rows_in} rows would be dropped; nothing written (run `curate lint {path}` to see why)")
    if output is not None:
        write_rows(output, lines, options.output_formats.get(path) or output_format_for(path, output))


def load_review_states(paths: Iterable[str], result: LintResult) -> tuple[dict[str, ReviewState], dict[str, ReplayReport]]:
    """Replay the review journal of each file that has one."""
    states, reports = {}, {}
    for path in paths:
        if not journal_path(path).exists():
            continue
        hashes = {line: digest for (row_path, line), digest in result.row_hashes.items() if row_path == path}
        # Read-only: fix never takes the review lock nor changes the journal (not even a torn last entry).
        with DecisionJournal.open(path, hashes, read_only=True) as journal:
            states[path], reports[path] = journal.state, journal.report
    return states, reports


@dataclass
class FixRun:
    files: list[FileFix]
    #: Findings on rows that were written unchanged by their rule: code -> count (for review).
    left: Counter[str]


REPAIRED_CODES = (CONTROL_CODE, UNEXPECTED_KEY_CODE, MIXED_FORMATS_CODE, PLACEHOLDER_CODE)


def findings_left(result: LintResult, fixes: dict[Key, RowFix], states: dict[str, ReviewState]) -> Counter[str]:
    """Findings that fix neither dropped nor repaired nor the reviewer waived: what still needs a human."""
    left: Counter[str] = Counter()
    for finding in result.findings:
        if finding.path in states and states[finding.path].is_waived(finding.line, finding.code):
            continue
        fix = fixes.get((finding.path, finding.line)) if finding.line is not None else None
        if fix is not None and (fix.drop or (fix.protected and finding.code != PII_CODE)):
            continue
        if finding.code in REPAIRED_CODES or (finding.line is not None and _is_schema_error(finding)):
            continue
        if finding.code == PII_CODE and fix is not None and fix.redact:
            continue
        left[finding.code] += 1
    return left


def run_fix(result: LintResult, outputs: dict[str, str], options: FixOptions, dry_run: bool = False) -> FixRun:
    """Fix every linted file into its output (a dict input -> output path); nothing is written on a dry run."""
    states, reports = load_review_states(outputs, result) if options.apply_journal else ({}, {})
    fixes = plan_row_fixes(result, states, options)
    done = []
    for path, output in outputs.items():
        report = FileFix(path, output, journal=reports.get(path), journal_path=str(journal_path(path)) if path in reports else None,
                         journal_holder=journal_holder(path) if path in reports else None)
        fix_file(path, None if dry_run else output, fixes, report, options.redact, options)
        done.append(report)
    return FixRun(done, findings_left(result, fixes, states))
