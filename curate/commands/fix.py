"""Write a cleaned copy of data files, making the decisions a reviewer would make.

Lints the files, then: drops rows with schema errors, keeps the first row of every
group of exact or near duplicates and drops the rest, strips control characters,
drops rows whose turn is only a placeholder (and clears placeholder Alpaca inputs),
removes unexpected keys, rewrites files that mix row formats as `messages` rows,
optionally drops rows that leak eval data (--drop-leaked) and redacts personal data
(--redact-pii), and applies the review journal written by `curate review` when there is
one. Each rule decides what becomes of its findings' rows (`curate rules CODE` says);
the two flags set the rules' own options (`LK001.drop`, `LK002.drop`, `QL006.redact`).
Input files are never changed.

One output per input: `-o FILE` with one input, otherwise `<name>.clean.jsonl`
beside each input (or in --output-dir). Outputs keep the input's kind of format: JSON Lines
for JSONL, JSON, CSV and stdin, Parquet for Parquet, Arrow and datasets (`--output-format`
chooses). With `--columns`, rows are written in the canonical format they map to. A file
whose every row would be dropped is not written (exit 2).
Exit codes: 0 written, 2 usage, configuration or input error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from curate.commands.common import add_lint_options, error, lint_inputs, plan_from_args, refuse_overwriting_inputs


def configure(parser: argparse.ArgumentParser) -> None:
    add_lint_options(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--output", "-o", default=None, metavar="FILE", help="cleaned file (one input only; default: <name>.clean.jsonl beside the input)")
    out.add_argument("--output-dir", default=None, metavar="DIR", help="write <name>.clean.jsonl for every input into DIR")
    out.add_argument("--output-format", choices=("jsonl", "parquet"), default=None, help="format of the cleaned files (default: JSONL, or Parquet for Parquet, Arrow and dataset inputs)")
    out.add_argument("--drop-leaked", action="store_true", help="also drop rows that leak eval data (LK findings; needs --eval)")
    out.add_argument("--redact-pii", action="store_true", help="replace emails, phone and card numbers, API keys and private keys (QL006) by [EMAIL], [API_KEY], ...")
    out.add_argument("--no-journal", action="store_true", help="ignore the review journals (<file>.curate-review.jsonl)")
    out.add_argument("--dry-run", action="store_true", help="print what would be done; write nothing")
    out.add_argument("--no-progress", action="store_true", help="never show a progress bar")


def output_paths(args: argparse.Namespace, paths: list[str] | None = None) -> dict[str, str] | None:
    """input -> output path, or None after printing why the outputs are not usable."""
    from curate.sources import STDIN, is_hf_url

    paths = list(args.paths) if paths is None else paths
    if STDIN in paths:
        error("curate fix reads its input twice (lint, then write) and cannot re-read stdin; save it to a file first")
        return None
    if not args.output and any(is_hf_url(path) for path in paths):
        error("pass -o FILE to fix an hf://datasets input")
        return None
    if args.output and len(paths) > 1:
        error("--output takes one input file; with several inputs use --output-dir DIR (or the default <name>.clean.jsonl)")
        return None
    if args.output:
        outputs = {paths[0]: args.output}
    elif args.output_dir:
        outputs = {path: str(Path(args.output_dir) / clean_path(path, args.output_format).name) for path in paths}
    else:
        outputs = {path: str(clean_path(path, args.output_format)) for path in paths}
    targets = [Path(output).resolve() for output in outputs.values()]
    if len(set(targets)) < len(targets):
        error("two inputs would be written to the same output name; use -o for one file at a time")
        return None
    return outputs


def clean_path(path: str, output_format: str | None) -> Path:
    """`<name>.clean.jsonl`, or `<name>.clean.parquet` when the output is Parquet."""
    from curate.io import data_suffix
    from curate.sources import output_format_for

    source = Path(path.rstrip("/"))
    suffix, gzipped = data_suffix(source)
    stem = source.name[: len(source.name) - len(suffix) - (3 if gzipped else 0)] if suffix else source.name
    extension = ".parquet" if (output_format or output_format_for(path)) == "parquet" else ".jsonl"
    return source.with_name(f"{stem}.clean{extension}")


def run(args: argparse.Namespace) -> int:
    from curate.commands.lint import progress_bar
    from curate.engine.runner import run_lint
    from curate.fix import FixOptions, run_fix
    from curate.io import InputError

    if args.drop_leaked and not args.eval:
        sys.stderr.write("curate: note: --drop-leaked without --eval drops only what the config's eval files find\n")
    plan = plan_from_args(args, rule_options=flag_rule_options(args))
    if plan is None:
        return 2
    outputs = output_paths(args, plan.paths)
    if outputs is None or refuse_overwriting_inputs(outputs.values(), lint_inputs(plan)):
        return 2
    with progress_bar(sys.stderr.isatty() and not args.no_progress) as on_progress:
        result = run_lint(plan, on_progress=on_progress, keep_row_hashes=True)
    if result.errors:
        for problem in result.errors:
            error(problem)
        error("nothing written: fix the problems above first")
        return 2
    try:
        options = FixOptions(apply_journal=not args.no_journal, columns=plan.columns, source_options=plan.source_options,
                             output_formats={path: args.output_format for path in outputs if args.output_format})
        fixed = run_fix(result, outputs, options, dry_run=args.dry_run)
    except InputError as exc:
        error(str(exc))
        return 2
    print_report(fixed, dry_run=args.dry_run)
    return 0


#: Flags that set an option on every rule that has it: `--drop-leaked` is `drop = true` on the
#: LK rules, `--redact-pii` is `redact = true` on QL006.
FLAG_OPTIONS = {"drop_leaked": "drop", "redact_pii": "redact"}


def flag_rule_options(args: argparse.Namespace) -> list[str]:
    """The `--set RULE.OPTION=true` items the fix flags stand for."""
    from curate.engine.rule import load_builtin_rules

    rules = load_builtin_rules()
    return [f"{code}.{option}=true" for flag, option in FLAG_OPTIONS.items() if getattr(args, flag)
            for code, rule in sorted(rules.items()) if option in rule.Options.model_fields]


def print_report(fixed, *, dry_run: bool, out=None) -> None:
    """Per file: a small table of what each rule made fix do, then the output path."""
    from curate.engine.rule import REGISTRY

    out = out or sys.stdout
    for report in fixed.files:
        out.write(f"{report.path}: {report.rows_in} rows read\n")
        if report.journal is not None:
            out.write(f"  applied the review journal {Path(report.journal_path).name}\n")
            if report.journal_holder:
                out.write(f"  note: a `curate review` ({report.journal_holder}) still has it open; applied the decisions recorded so far\n")
            for problem in report.journal.problems():
                out.write(f"  note: {problem}\n")
        rows = [(code, REGISTRY[code].name if code in REGISTRY else "", verb, count) for (code, verb), count in sorted(report.actions.items())]
        if rows:
            widths = [max(len(str(row[i])) for row in rows) for i in range(3)]
            for code, name, verb, count in rows:
                out.write(f"  {code:<{widths[0]}}  {name:<{widths[1]}}  {verb:<{widths[2]}}  {count:>7}\n")
        else:
            out.write("  nothing to fix\n")
        verb = "would write" if dry_run else "wrote"
        out.write(f"{verb} {report.rows_out} rows to {report.output}\n")
    if fixed.left:
        listing = ", ".join(f"{code} {count}" for code, count in sorted(fixed.left.items()))
        out.write(f"{sum(fixed.left.values())} findings left for `curate review`: {listing}\n")
