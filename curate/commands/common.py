"""Options and helpers shared by commands that lint (lint, review, fix, train)."""

from __future__ import annotations

import argparse
import sys
import tomllib

from curate.config import ConfigError
from curate.engine.settings import LintPlan, LintRequest, plan_lint


def add_lint_options(parser: argparse.ArgumentParser, *, with_paths: bool = True) -> None:
    if with_paths:
        parser.add_argument("paths", nargs="+", metavar="INPUT", help="data files (.jsonl, .json, .parquet, .arrow, .csv, .tsv; .gz of the text ones), directories, - (stdin), save_to_disk folders or hf://datasets/ORG/NAME[@REV]")
    group = parser.add_argument_group("rule selection and configuration")
    group.add_argument("--select", type=_csv, default=None, metavar="RULES", help="comma-separated codes, prefixes or names to enable (replaces the config)")
    group.add_argument("--extend-select", type=_csv, default=[], metavar="RULES", help="rules to enable in addition")
    group.add_argument("--ignore", type=_csv, default=[], metavar="RULES", help="rules to disable")
    group.add_argument("--model", default=None, metavar="PATH_OR_NAME", help="tokenizer folder or hub name whose chat template to check (CT rules)")
    group.add_argument("--eval", action="append", default=None, metavar="FILE", help="eval file to check for leakage (repeatable; LK rules)")
    group.add_argument("--max-seq-length", type=int, default=None, metavar="N", help="token budget per row")
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
    for item in _csv(value):
        field, sep, target = item.partition("=")
        if not sep or not field.strip() or not target.strip():
            raise argparse.ArgumentTypeError(f"expected FIELD=TARGET pairs, e.g. question=user,answer=assistant (got `{item}`)")
        columns[field.strip()] = target.strip()
    return columns


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def parse_rule_options(items: list[str]) -> dict[str, dict]:
    """`DU002.threshold=0.9` -> {"DU002": {"threshold": 0.9}}; values are TOML literals or bare strings."""
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


def request_from_args(args: argparse.Namespace, paths: list[str] | None = None) -> LintRequest:
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
        rule_options=parse_rule_options(args.rule_options),
        split=getattr(args, "split", None),
        subset=getattr(args, "subset", None),
        stdin_filename=getattr(args, "stdin_filename", None),
        columns=getattr(args, "columns", None),
    )


def plan_from_args(args: argparse.Namespace, paths: list[str] | None = None) -> LintPlan | None:
    """The lint plan, or None after printing every config problem (the caller exits 2)."""
    try:
        return plan_lint(request_from_args(args, paths))
    except ConfigError as exc:
        for problem in exc.problems:
            error(problem)
        return None


def error(message: str) -> None:
    sys.stderr.write(f"curate: error: {message}\n")
