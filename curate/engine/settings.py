"""Turn what a caller asked for (CLI flags or API arguments) plus the config file
into a lint plan: the rule instances with their options, and the run context."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from curate.config import (
    ConfigError,
    CurateConfig,
    find_config,
    load_config,
    resolve_relative,
    suggest,
    validated,
)
from curate.engine.findings import Severity
from curate.engine.rule import REGISTRY, Rule, RunContext, load_builtin_rules
from curate.engine.selection import explicitly_named, select_codes, unknown_selectors
from curate.formats import column_problems
from curate.sources import STDIN, SourceOptions, expand_sources, is_hf_url


@dataclass
class LintRequest:
    """What the caller asked for; None or empty means: take it from the config file."""

    paths: list[str]
    config_path: str | None = None
    isolated: bool = False
    select: list[str] | None = None
    extend_select: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    fail_on: str | None = None
    model: str | None = None
    eval: list[str] | None = None
    max_seq_length: int | None = None
    baseline: str | None = None
    max_row_bytes: int | None = None
    #: Per-rule option overrides, e.g. {"DU002": {"threshold": 0.9}}.
    rule_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Hugging Face dataset split / config (subset) to read; stdin's name for messages and config.
    split: str | None = None
    subset: str | None = None
    stdin_filename: str | None = None
    #: Field name -> role or format key, e.g. {"question": "user", "answer": "assistant"}.
    columns: dict[str, str] | None = None
    #: The config of `config_path` (None: no file), when the caller already read it (`curate train`):
    #: then neither discovery nor the file is read again.
    config: CurateConfig | None = None


@dataclass
class LintPlan:
    paths: list[str]
    config: CurateConfig
    config_path: Path | None
    rules: list[Rule]
    #: Rules left out because the run lacks what they need: code -> reason.
    skipped: dict[str, str]
    context: RunContext
    fail_on: str
    baseline: str | None
    max_row_bytes: int
    source_options: SourceOptions = field(default_factory=SourceOptions)
    columns: dict[str, str] = field(default_factory=dict)


def rule_by_key(key: str, registry: dict[str, type[Rule]]) -> type[Rule] | None:
    if key.upper() in registry:
        return registry[key.upper()]
    return next((rule for rule in registry.values() if rule.name == key), None)


def _rule_options(config: CurateConfig, request: LintRequest, where: str, registry: dict[str, type[Rule]], problems: list[str]) -> dict[str, Any]:
    merged: dict[str, dict[str, Any]] = {}
    for source, tables in ((where, config.rules), ("--set", request.rule_options)):
        for key, values in tables.items():
            rule = rule_by_key(key, registry)
            if rule is None:
                choices = set(registry) | {r.name for r in registry.values()}
                problems.append(f"{source}: unknown rule `{key}` in rule options{suggest(key, choices)}")
                continue
            if not isinstance(values, dict):
                problems.append(f"{source}: options of {rule.code} must be a table")
                continue
            merged.setdefault(rule.code, {}).update(values)
    options = {}
    for code, values in merged.items():
        rule = registry[code]
        try:
            options[code] = validated(rule.Options, values, f"rule {code} ({rule.name}) options")
        except ConfigError as exc:
            problems += exc.problems
    return options


def render_budget(config: CurateConfig):
    """The chat template's render budget from `[tool.curate.template-budget]`."""
    from curate.templates import RenderBudget

    budget = config.template_budget
    return RenderBudget(budget.row_seconds, budget.row_chars, budget.run_seconds, budget.run_chars, budget.max_template_bytes)


def plan_lint(request: LintRequest) -> LintPlan:
    """Resolve config + request into a plan; raises ConfigError listing every problem."""
    registry = load_builtin_rules()
    if request.config is not None:
        config, config_path = request.config, Path(request.config_path) if request.config_path else None
    else:
        config, config_path = load_config(requested_config_path(request))
    where = str(config_path) if config_path else "config"
    base = config_path.parent if config_path else Path.cwd()
    problems: list[str] = []

    select = request.select if request.select is not None else config.select
    extend = [*config.extend_select, *request.extend_select]
    ignore = [*config.ignore, *request.ignore]
    problems += unknown_selectors([*(select or []), *extend, *ignore], registry)
    codes = select_codes(registry, [*(select if select is not None else ["ALL"]), *extend], ignore)

    model = request.model or (resolve_relative(config.model, base, may_be_hub_name=True) if config.model else None)
    if request.eval is not None and request.eval:
        eval_paths = list(request.eval)
    else:
        eval_paths = [resolve_relative(path, base) for path in config.eval]
    baseline = request.baseline or (resolve_relative(config.baseline, base) if config.baseline else None)
    fail_on = request.fail_on or config.fail_on
    if fail_on not in ("error", "warning", "info", "never"):
        problems.append(f"--fail-on must be error, warning, info or never, not `{fail_on}`")
    context = RunContext(
        model=model,
        eval_paths=eval_paths,
        max_seq_length=request.max_seq_length or config.max_seq_length,
        root=base,
        template_budget=render_budget(config),
    )
    options = _rule_options(config, request, where, registry, problems)
    columns = request.columns if request.columns is not None else dict(config.columns)
    problems += column_problems(columns)
    rules: list[Rule] = []
    skipped: dict[str, str] = {}
    for code in codes:
        rule_class = registry[code]
        missing = [need for need in rule_class.requires if not context.has(need)]
        if missing:
            reason = " and ".join({"model": "--model", "eval": "--eval"}[need] for need in missing)
            if select is not None and explicitly_named(select, rule_class):
                problems.append(f"{code} ({rule_class.name}) needs {reason}")
            skipped[code] = f"needs {reason}"
            continue
        rules.append(rule_class(options.get(code), context))
    if problems:
        raise ConfigError(problems)
    return LintPlan(
        paths=expand_sources(request.paths, config.exclude, config.extend_exclude),
        config=config,
        config_path=config_path,
        rules=rules,
        skipped=skipped,
        context=context,
        fail_on=fail_on,
        baseline=baseline,
        max_row_bytes=request.max_row_bytes or config.max_row_bytes,
        source_options=SourceOptions(split=request.split, subset=request.subset, stdin_name=request.stdin_filename),
        columns=columns,
    )


def requested_config_path(request: LintRequest) -> Path | None:
    """The config file a request names, or the one discovery finds (None: isolated, or none found)."""
    if request.isolated:
        return None
    if request.config_path:
        return Path(request.config_path)
    return find_config(config_start(request))


def config_start(request: LintRequest) -> Path:
    """Where config discovery starts: the first local input (stdin: `--stdin-filename`), else cwd."""
    for source in request.paths:
        if source == STDIN:
            return Path(request.stdin_filename) if request.stdin_filename else Path.cwd()
        if not is_hf_url(source):
            return Path(source)
    return Path.cwd()


def severity_fails(severity: Severity, fail_on: str) -> bool:
    if fail_on == "never":
        return False
    return severity.rank >= Severity.parse(fail_on).rank
