"""Walk the findings of one data file in a terminal UI and keep, drop, edit or waive rows.

Lint runs in the background when the app opens. Every decision is written at once
to `<file>.curate-review.jsonl` beside the data, so nothing is lost on a crash;
reopening the same file resumes. One session per file: a second one is refused
with the pid of the first. `s` writes the cleaned file (default
`<name>.clean.jsonl`): the file `curate fix` writes from the same journal, which
`curate fix` applies without the UI. The input is never changed.

Exit codes: 0 closed normally, 2 usage, configuration or input error.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from curate.commands.common import add_lint_options, error, lint_inputs, plan_from_args, refuse_overwriting_inputs


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="FILE", help="data file to review (.jsonl, .json, .parquet, optionally .gz)")
    add_lint_options(parser, with_paths=False)
    out = parser.add_argument_group("output")
    out.add_argument("--output", "-o", default=None, metavar="FILE", help="where `s` writes the cleaned file (default: <name>.clean.jsonl)")


def check_paths(path: str) -> str | None:
    """One sentence about what is wrong with the paths, or None; checked before the UI starts."""
    from curate.io import InputError, check_input_file

    data = Path(path)
    try:
        check_input_file(data)
    except InputError as exc:
        return str(exc)
    folder = Path(os.path.realpath(data)).parent
    if not os.access(folder, os.W_OK):
        return f"{folder}: not writable, so the review journal cannot be kept beside {data.name}; copy the file somewhere writable"
    from curate.decisions import in_use_message, journal_holder, journal_path

    holder = journal_holder(path)
    if holder is not None:
        return in_use_message(journal_path(path), holder)
    return None


def run(args: argparse.Namespace) -> int:
    problem = check_paths(args.path)
    if problem:
        error(problem)
        return 2
    plan = plan_from_args(args, paths=[args.path])
    if plan is None or refuse_overwriting_inputs([args.output], lint_inputs(plan)):
        return 2
    from curate.tui.app import build_app  # Textual is imported only when the UI really starts

    build_app(args.path, plan, args.output).run()
    return 0
