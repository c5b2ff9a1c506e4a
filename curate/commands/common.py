"""Options and helpers shared by commands that lint (lint, review, fix, train)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the config and the rules load when a command runs, not when `--help` builds the parser
    from curate.engine.settings import LintPlan, LintRequest


def add_lint_options(parser: argparse.ArgumentParser, *, with_paths: bool = True) -> None:
    if with_paths:
        parser.add_argument("paths", nargs="+", metavar="INPUT", help="data files (.jsonl, .json, .parquet, .arrow, .csv, .tsv; .gz of the text ones), directories, - (stdin), save_to_disk folders or hf://datasets/ORG/NAME[@REV]")
    group = parser.add_argument_group("rule selection and configuration")
    group.add_argument("--select", type=csv_list, default=None, metavar="RULES", help="comma-separated codes, prefixes or names to enable (replaces the config)")
    group.add_argument("--extend-select", type=csv_list, default=[], metavar="RULES", help="rules to enable in addition")
    group.add_argument("--ignore", type=csv_list, default=[], metavar="RULES", help="rules to disable")
    group.add_argument("--model", default=None, metavar="PATH_OR_NAME", help="tokenizer folder or hub name whose chat template to check (CT rules)")
    group.add_argument("--eval", action="append", default=None, metavar="FILE", help="eval file to check for leakage (repeatable; LK rules)")
    group.add_argument("--max-seq-length", type=positive_int, default=None, metavar="N", help="token budget per row")
    group.add_argument("--set", dest="rule_options", action="append", default=[], metavar="RULE.KEY=VALUE", help="set a rule option, e.g. --set DU002.threshold=0.9")
    group.add_argument("--config", default=None, metavar="FILE", help="config file (default: nearest curate.toml or pyproject.toml with [tool.curate])")
    group.add_argument("--isolated", action="store_true", help="ignore config files")
    add_input_options(parser)


def add_input_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("inputs")
    group.add_argument("--stdin-filename", default=None, metavar="NAME", help="name of the data read from `-` (in messages, and where config discovery starts)")
    group.add_argument("--split", default=None, metavar="SPLIT", help="split of a Hugging Face dataset to read (default: every split)")
    group.add_argument("--subset", default=None, metavar="NAME", help="config (subset) of a Hugging Face dataset")
    group.add_argument("--columns", type=parse_columns, default=None, metavar="FIELD=TARGET,...", help="map fields onto roles or format keys, e.g. question=user,answer=assistant")


def parse_columns(value: str) -> dict[str, str]:
    """`question=user,answer=assistant` -> {"question": "user", "answer": "assistant"}."""
    columns = {}
    for item in csv_list(value):
        field, sep, target = item.partition("=")
        if not sep or not field.strip() or not target.strip():
            raise argparse.ArgumentTypeError(f"expected FIELD=TARGET pairs, e.g. question=user,answer=assistant (got `{item}`)")
        columns[field.strip()] = target.strip()
    return columns


def positive_int(value: str) -> int:
    """An argparse type: a whole number above zero."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, not `{value}`") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {number}")
    return number


def csv_list(value: str) -> list[str]:
    """An argparse type: `a, b,,c` -> ["a", "b", "c"]."""
    return [part.strip() for part in value.split(",") if part.strip()]


def parse_rule_options(items: list[str]) -> dict[str, dict]:
    """`DU002.threshold=0.9` -> {"DU002": {"threshold": 0.9}}; values are TOML literals or bare strings."""
    if not items:
        return {}
    import tomllib

    from curate.config import ConfigError

    options: dict[str, dict] = {}
    problems = []
    for item in items:
        key, sep, raw_value = item.partition("=")
        rule, dot, option = key.strip().partition(".")
        if not sep or not dot or not option:
            problems.append(f"--set {item}: expected RULE.KEY=VALUE, e.g. DU002.threshold=0.9")
            continue
        try:
            value = tomllib.loads(f"v = {raw_value.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw_value.strip()
        options.setdefault(rule, {})[option.strip()] = value
    if problems:
        raise ConfigError(problems)
    return options


def request_from_args(args: argparse.Namespace, paths: list[str] | None = None, rule_options: Iterable[str] = ()) -> LintRequest:
    """The lint request of a command's arguments; `rule_options` are more `--set` items (set by flags)."""
    from curate.engine.settings import LintRequest

    return LintRequest(
        paths=paths if paths is not None else list(args.paths),
        config_path=args.config,
        isolated=args.isolated,
        select=args.select,
        extend_select=args.extend_select,
        ignore=args.ignore,
        fail_on=getattr(args, "fail_on", None),
        model=args.model,
        eval=args.eval,
        max_seq_length=args.max_seq_length,
        baseline=getattr(args, "baseline", None),
        rule_options=parse_rule_options([*args.rule_options, *rule_options]),
        split=getattr(args, "split", None),
        subset=getattr(args, "subset", None),
        stdin_filename=getattr(args, "stdin_filename", None),
        columns=getattr(args, "columns", None),
    )


def plan_from_args(args: argparse.Namespace, paths: list[str] | None = None, rule_options: Iterable[str] = ()) -> LintPlan | None:
    """The lint plan, or None after printing every config problem (the caller exits 2)."""
    from curate.config import ConfigError
    from curate.engine.settings import plan_lint

    try:
        return plan_lint(request_from_args(args, paths, rule_options))
    except ConfigError as exc:
        for problem in exc.problems:
            error(problem)
        return None


def error(message: str) -> None:
    sys.stderr.write(f"curate: error: {message}\n")


def refuse_overwriting_inputs(outputs: Iterable[str | os.PathLike | None], inputs: Iterable[str | os.PathLike | None], *, folders: bool = False) -> bool:
    """Print one error line and return True when an output would destroy an input: it resolves
    (symlinks, `..`, hard links) to one of `inputs`, or a file output is a directory. With
    `folders`, outputs are folders a command writes into, and no input may be inside one.
    Every command calls this before writing anything; `inputs` are all the files it reads
    (see `lint_inputs`)."""
    problem = overwrite_problem([o for o in outputs if o], [i for i in inputs if i], folders=folders)
    if problem:
        error(problem)
    return problem is not None


def overwrite_problem(outputs: list, inputs: list, *, folders: bool = False) -> str | None:
    known = [(str(path), *_identity(path)) for path in inputs]
    seen: dict[str, str] = {}
    for output in outputs:
        real, inode = _identity(output)
        if not folders and os.path.isdir(real):
            return f"{output}: is a directory; name a file to write"
        if real in seen:
            return f"{output}: given for two outputs ({seen[real]} too); choose another name"
        seen[real] = str(output)
        for shown, input_real, input_inode in known:
            if real == input_real or (inode is not None and inode == input_inode):
                return f"{output}: the output would overwrite the input {shown}; choose another name"
            if folders and input_real.startswith(real.rstrip(os.sep) + os.sep):
                return f"{output}: holds the input {shown}, which writing the output could overwrite; choose another folder"
    return None


def _identity(path: str | os.PathLike) -> tuple[str, tuple[int, int] | None]:
    """(real path, (device, inode) when it exists): what two names of one file share."""
    try:
        real = os.path.realpath(path)
    except (OSError, ValueError):
        real = os.path.abspath(path)
    try:
        info = os.stat(real)
    except (OSError, ValueError):
        return real, None
    return real, (info.st_dev, info.st_ino)


def lint_inputs(plan: LintPlan) -> list[str]:
    """Every file a lint plan reads: data, eval files, the model's files, the baseline, and
    the review journal beside each data file."""
    from curate.decisions import journal_path

    return [
        *plan.paths,
        *(str(journal_path(path)) for path in plan.paths),
        *plan.context.eval_paths,
        *model_files(plan.context.model),
        *([plan.baseline] if plan.baseline else []),
    ]


def model_files(model: str | None) -> list[str]:
    """A model folder and the files in it (a hub name: its local cache snapshot), or []."""
    if not model:
        return []
    from curate.templates import TemplateError, resolve_model_folder

    try:
        folder = resolve_model_folder(model)
    except TemplateError:
        return []
    try:
        return [str(folder), *(str(path) for path in folder.rglob("*") if not path.is_dir())]
    except OSError:
        return [str(folder)]
