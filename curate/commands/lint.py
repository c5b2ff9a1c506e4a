"""Check chat fine-tuning data files for problems before training.

Exit codes: 0 no findings at or above --fail-on, 1 findings at or above it,
2 usage, configuration or input error."""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager

from curate.commands.common import add_lint_options, error, lint_inputs, plan_from_args, positive_int, refuse_overwriting_inputs

FORMATS = ("text", "json", "github", "sarif")


def configure(parser: argparse.ArgumentParser) -> None:
    add_lint_options(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--format", choices=FORMATS, default="text", help="report format (default: text)")
    out.add_argument("--output", "-o", default=None, metavar="FILE", help="write the report to FILE instead of stdout")
    out.add_argument("--fail-on", choices=("error", "warning", "info", "never"), default=None, help="lowest severity that makes lint exit 1 (default: error)")
    out.add_argument("--stats", action="store_true", help="also chart the row-format, label, output-format and length distributions")
    out.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    parser.add_argument("--jobs", "-j", type=positive_int, default=None, metavar="N",
                        help="processes that read large JSONL input, a shard each (default: one per core; 1: this process only)")
    base = parser.add_argument_group("baseline")
    base.add_argument("--baseline", default=None, metavar="FILE", help="waive the findings recorded in FILE")
    base.add_argument("--write-baseline", default=None, metavar="FILE", help="record the current findings in FILE and exit 0")


@contextmanager
def progress_bar(enabled: bool):
    """A rich progress bar on stderr, or a no-op callback."""
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(), TextColumn("{task.fields[rows]} rows"), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("reading", total=None, rows=0)

        def update(event) -> None:
            if event.phase == "read":
                progress.update(task, completed=event.done, total=event.total, rows=event.rows)
            else:
                progress.update(task, description=f"checking {event.detail}", completed=event.total, total=event.total)

        yield update


def run(args: argparse.Namespace) -> int:
    from curate.engine.baseline import apply_baseline, read_baseline, write_baseline
    from curate.engine.report import report_bytes, write_report
    from curate.engine.runner import run_lint
    from curate.io import InputError, atomic_write_bytes

    plan = plan_from_args(args)
    if plan is None:
        return 2
    if args.output or args.write_baseline:  # a plain lint writes nothing: no inputs to list (pre-commit start-up)
        inputs = lint_inputs(plan)
        if refuse_overwriting_inputs([args.output, args.write_baseline], inputs) or refuse_overwriting_inputs(
            [args.write_baseline], [path for path in inputs if path != plan.baseline]
        ):
            return 2
    baseline = None
    try:
        if plan.baseline and not args.write_baseline:
            baseline = read_baseline(plan.baseline)
    except InputError as exc:
        error(str(exc))
        return 2
    with progress_bar(sys.stderr.isatty() and not args.no_progress) as on_progress:
        result = run_lint(plan, on_progress=on_progress, keep_row_hashes=bool(args.write_baseline or baseline is not None), jobs=args.jobs)
    for problem in result.errors:
        error(problem)
    if args.write_baseline:
        count = write_baseline(args.write_baseline, result.findings, result.row_hashes)
        sys.stderr.write(f"curate: wrote {count} waivers for {len(result.findings)} findings to {args.write_baseline}\n")
        return 2 if result.errors else 0
    if baseline is not None:
        result.findings, result.waived = apply_baseline(result.findings, baseline, result.row_hashes)
    if args.output:
        atomic_write_bytes(args.output, report_bytes(result, args.format, **({"show_stats": args.stats, "color": False} if args.format == "text" else {})))
    elif args.format == "json" and hasattr(sys.stdout, "buffer"):
        sys.stdout.flush()
        sys.stdout.buffer.write(report_bytes(result, args.format))
        sys.stdout.buffer.flush()
    else:
        write_report(result, args.format, sys.stdout, **({"show_stats": args.stats} if args.format == "text" else {}))
    return result.exit_code(plan.fail_on)
