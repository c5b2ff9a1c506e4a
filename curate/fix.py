"""`curate fix`: the cleaning decisions a reviewer would make, made without the TUI.

Generic over findings: each rule says what becomes of a finding's row (`Rule.fix`: drop it,
rewrite it with a function, keep the first of a duplicate group, or None to leave it for
review), so a rule added later needs no change here. What the rules decide today:

- rows with an error-level schema (SC) finding are dropped (they cannot be trained on),
  except that a role alias in a `messages` row (SC004 `bot`, `Assistant`) is renamed;
- of every group of exact or near duplicates (DU001/DU002/PF005, joined through
  `related` and `data["cluster"]`) the first row in file order is kept and the rest dropped;
- rows with eval leakage (LK) are dropped with the rules' `drop` option (`--drop-leaked`);
- personal data and secrets (QL006) are replaced by typed tokens (`[EMAIL]`, `[API_KEY]`, ...)
  with its `redact` option (`--redact-pii`), with the rule's own detectors and options;
- control characters are stripped from rows with QL002 findings; rows whose turn is
  only a placeholder (QL001) are dropped, and a placeholder Alpaca `input` is cleared;
- unexpected keys (SC008) are removed, and when a file mixes row formats
  (SC010) its rows are rewritten in the `messages` format;
- a review journal beside the data is applied first (read-only): the reviewer's
  drop, keep, edit and waive win over the automatic choices, except that a keep does
  not save a row that cannot be trained on, a row that cannot be parsed is never written,
  and a kept or edited row is still redacted (only waiving its QL006 finding exempts it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from curate.decisions import DecisionJournal, ReplayReport, ReviewState, journal_holder, journal_path
from curate.engine.findings import Finding
from curate.engine.rule import Fix, Rule
from curate.engine.runner import LintResult
from curate.io import InputError, RawRow, iter_rows
from curate.rules.duplicates import duplicate_groups
from curate.sources import apply_column_mapping, output_format_for, write_rows

REVIEW = "review"
UNPARSED = "unparsed"

Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class FixOptions:
    apply_journal: bool = True
    #: `--columns` (mapped rows are written in the canonical format), how to read the sources,
    #: and the output format per input ("jsonl" or "parquet"; default: `output_format_for`).
    columns: dict[str, str] = field(default_factory=dict)
    source_options: Any = None
    output_formats: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class RowFix:
    """What to do with one row; `drop` names the reason (a rule code, or "review")."""

    drop: str | None = None
    #: (rule code, fix) rewrites, applied by stage, then in this order.
    rewrites: list[tuple[str, Fix]] = field(default_factory=list)
    protected: bool = False  # the reviewer kept or edited this row
    edited: Any = None
    has_edit: bool = False

    def takes(self, rule: Rule, action: Fix) -> bool:
        """Whether the reviewer's keep or edit leaves room for this fix."""
        if not rule.settled_by_keep:
            return True
        return not (self.has_edit or (self.protected and action.undone_by_keep))


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

    @property
    def written(self) -> int:
        return self.rows_out

    @property
    def dropped(self) -> int:
        return sum(count for (code, verb), count in self.actions.items() if verb == "dropped" and code != UNPARSED)

    @property
    def edited(self) -> int:
        return self.actions[(REVIEW, "edited")]

    @property
    def unreadable(self) -> int:
        """Rows that were never parsed (invalid JSON, over max-row-bytes) and cannot be carried over."""
        return self.actions[(UNPARSED, "dropped")]


# -- deciding ------------------------------------------------------------------------------


def finding_fix(finding: Finding, fixers: dict[str, Rule]) -> tuple[Rule, Fix] | None:
    """The configured rule of a finding and what its fix does, or None when it leaves the row for review."""
    rule = fixers.get(finding.code)
    action = rule.fix(finding) if rule is not None else None
    return None if action is None else (rule, action)


def plan_row_fixes(result: LintResult, states: dict[str, ReviewState]) -> dict[Key, RowFix]:
    """Decide, from the findings, their rules' fixes and the review journals, what happens to each row."""
    fixes = journal_fixes(states)

    def fix_of(key: Key) -> RowFix:
        return fixes.setdefault(key, RowFix())

    file_fixes: dict[tuple[str, str], tuple[Rule, Fix]] = {}
    duplicates: list[Finding] = []
    for finding in live_findings(result, states):
        fix = fix_of((finding.path, finding.line)) if finding.line is not None else None
        planned = finding_fix(finding, result.fixers)
        if planned is None:
            continue
        rule, action = planned
        if action.scope == "file":
            file_fixes.setdefault((finding.path, finding.code), planned)
        elif fix is None:
            continue
        elif action.scope == "duplicates":
            duplicates.append(finding)
        elif fix.takes(rule, action):
            if action.drops:
                fix.drop = fix.drop or finding.code
            else:
                fix.rewrites.append((finding.code, action))
    for (path, code), (rule, action) in file_fixes.items():
        for line in _lines_of(result, path):
            fix = fix_of((path, line))
            if fix.takes(rule, action):
                fix.rewrites.append((code, action))
    _drop_duplicates(duplicates, fixes, fix_of)
    return fixes


def journal_fixes(states: dict[str, ReviewState]) -> dict[Key, RowFix]:
    """The reviewer's decisions as row fixes: drops, and keeps and edits that protect a row."""
    fixes: dict[Key, RowFix] = {}
    for path, state in states.items():
        for line, row_state in state.rows.items():
            fix = fixes.setdefault((path, line), RowFix())
            if row_state.dropped:
                fix.drop = REVIEW
            elif row_state.action is not None:
                fix.protected = True
                fix.edited, fix.has_edit = row_state.edited, row_state.has_edit
    return fixes


def live_findings(result: LintResult, states: dict[str, ReviewState]) -> list[Finding]:
    """The findings the reviewer did not waive."""
    return [f for f in result.findings if not (f.line is not None and f.path in states and states[f.path].is_waived(f.line, f.code))]


def _lines_of(result: LintResult, path: str) -> Iterator[int]:
    return (line for (row_path, line) in result.row_hashes if row_path == path)


def _drop_duplicates(findings: list[Finding], fixes: dict[Key, RowFix], fix_of) -> None:
    """In each duplicate group keep the first row not dropped for another reason (and any row
    the reviewer kept); drop the others, naming the duplicate rule that flagged them."""
    code_of: dict[Key, str] = {}
    for finding in findings:
        key = (finding.path, finding.line)
        code_of[key] = min(code_of.get(key, finding.code), finding.code)
    for group in duplicate_groups(findings):
        survivors = [key for key in group if not (key in fixes and fixes[key].drop)]
        for key in survivors[1:]:
            fix = fix_of(key)
            if not fix.protected:
                fix.drop = code_of.get(key) or code_of.get(group[-1]) or min(code_of[member] for member in group if member in code_of)


# -- writing -------------------------------------------------------------------------------


def fixed_line(row: RawRow, fix: RowFix | None, actions: Counter[tuple[str, str]]) -> bytes | None:
    """The output line of a row (None when it is dropped), counting what was done."""
    if fix is not None and fix.drop:
        actions[(fix.drop, "dropped")] += 1
        return None
    if fix is not None and fix.has_edit:
        actions[(REVIEW, "edited")] += 1
        return orjson.dumps(apply_rewrites(fix.edited, fix.rewrites, actions))
    if not row.ok:
        # Unparsed rows are always SC findings and dropped above; be safe if SC is deselected.
        actions[(UNPARSED, "dropped")] += 1
        return None
    if fix is None or not fix.rewrites:
        return row.text.encode("utf-8", "surrogatepass") if row.text is not None else orjson.dumps(row.obj)
    return orjson.dumps(apply_rewrites(row.obj, fix.rewrites, actions))


def apply_rewrites(obj: Any, rewrites: list[tuple[str, Fix]], actions: Counter[tuple[str, str]]) -> Any:
    """The row after its rewrites (by stage, then in order); each (code, verb) that changed it counts once."""
    done = set()
    for code, action in sorted(rewrites, key=lambda item: item[1].stage):
        rewritten = action.function(obj)
        if rewritten is not obj:
            done.add((code, action.verb))
        obj = rewritten
    actions.update(done)
    return obj


def cleaned_lines(rows: Iterable[RawRow], fixes: dict[Key, RowFix], report: FileFix) -> list[bytes]:
    """The lines of a cleaned file: every row through its fixes (what `curate fix` and
    `curate review`'s save both write), counting into `report`."""
    lines: list[bytes] = []
    for row in rows:
        report.rows_in += 1
        line = fixed_line(row, fixes.get((row.path, row.line)), report.actions)
        if line is not None:
            lines.append(line + b"\n")
    report.rows_out = len(lines)
    return lines


def fix_file(path: str, output: str | None, fixes: dict[Key, RowFix], report: FileFix, options: FixOptions | None = None) -> None:
    """Stream one input file through its fixes; write `output` atomically unless it is None (dry run).
    A file whose every row would be dropped is not written (InputError): an empty output is never a result."""
    options = options or FixOptions()
    lines = cleaned_lines(_read(path, options), fixes, report)
    if report.rows_in and not lines:
        raise InputError(f"{path}: all {report.rows_in} rows would be dropped; nothing written (run `curate lint {path}` to see why)")
    if output is not None:
        write_rows(output, lines, options.output_formats.get(path) or output_format_for(path, output))


def _read(path: str, options: FixOptions) -> Iterator[RawRow]:
    for row in iter_rows(path, options=options.source_options):
        if options.columns:
            apply_column_mapping([row], options.columns)
        yield row


def save_reviewed(result: LintResult, path: str, rows: Iterable[RawRow], state: ReviewState, output: str) -> FileFix:
    """`curate review`'s save: the file `curate fix` would write from the same lint and journal
    (rows already read and mapped; always JSON Lines), written atomically."""
    report = FileFix(path, output)
    lines = cleaned_lines(rows, plan_row_fixes(result, {path: state}), report)
    write_rows(output, lines, "jsonl")
    return report


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


def left_findings(result: LintResult, fixes: dict[Key, RowFix], states: dict[str, ReviewState]) -> list[Finding]:
    """Findings that fix neither dropped nor repaired nor the reviewer settled: what still needs a human."""
    left = []
    for finding in result.findings:
        if finding.path in states and states[finding.path].is_waived(finding.line, finding.code):
            continue
        fix = fixes.get((finding.path, finding.line)) if finding.line is not None else None
        planned = finding_fix(finding, result.fixers)
        rule = result.fixers.get(finding.code)
        if fix is not None and (fix.drop or (fix.protected and (rule is None or rule.settled_by_keep))):
            continue
        if planned is not None and planned[1].scope != "duplicates" and (planned[1].scope == "file" or finding.line is not None):
            continue
        left.append(finding)
    return left


def findings_left(result: LintResult, fixes: dict[Key, RowFix], states: dict[str, ReviewState]) -> Counter[str]:
    """`left_findings` counted by code."""
    return Counter(finding.code for finding in left_findings(result, fixes, states))


def run_fix(result: LintResult, outputs: dict[str, str], options: FixOptions, dry_run: bool = False) -> FixRun:
    """Fix every linted file into its output (a dict input -> output path); nothing is written on a dry run."""
    states, reports = load_review_states(outputs, result) if options.apply_journal else ({}, {})
    fixes = plan_row_fixes(result, states)
    done = []
    for path, output in outputs.items():
        report = FileFix(path, output, journal=reports.get(path), journal_path=str(journal_path(path)) if path in reports else None,
                         journal_holder=journal_holder(path) if path in reports else None)
        fix_file(path, None if dry_run else output, fixes, report, options)
        done.append(report)
    return FixRun(done, findings_left(result, fixes, states))


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
