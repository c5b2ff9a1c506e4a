"""List every rule (code, name, severity, summary), or print one rule's documentation and where it is defined."""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rule", nargs="?", metavar="CODE_OR_NAME", help="show this rule's documentation")
    parser.add_argument("--format", choices=("text", "json"), default="text")


def run(args: argparse.Namespace) -> int:
    import orjson
    from rich.console import Console
    from rich.markdown import Markdown
    from rich.table import Table

    from curate.config import suggest
    from curate.engine.rule import load_builtin_rules
    from curate.engine.settings import rule_by_key

    registry = load_builtin_rules()
    console = Console(highlight=False)
    if args.rule:
        rule = rule_by_key(args.rule, registry)
        if rule is None:
            choices = set(registry) | {r.name for r in registry.values()}
            sys.stderr.write(f"curate: error: unknown rule `{args.rule}`{suggest(args.rule, choices)}\n")
            return 2
        if args.format == "json":
            print(orjson.dumps(rule_info(rule, full=True), option=orjson.OPT_INDENT_2).decode())
            return 0
        console.print(f"[bold]{rule.code} {rule.name}[/bold] [{rule.severity.value}]")
        fixing = "`curate fix` drops or repairs its rows" if rule.fixable else "`curate fix` leaves its findings for review"
        console.print(f"defined in {rule.source()}; {fixing}\n", markup=False)
        console.print(Markdown(rule.documentation() + options_doc(rule)))
        return 0
    if args.format == "json":
        print(orjson.dumps([rule_info(r) for _, r in sorted(registry.items())], option=orjson.OPT_INDENT_2).decode())
        return 0
    table = Table(box=None, header_style="bold")
    for column in ("code", "name", "severity", "needs"):
        table.add_column(column, no_wrap=True)
    table.add_column("summary", ratio=1)
    for code, rule in sorted(registry.items()):
        table.add_row(code, rule.name, rule.severity.value, ", ".join(f"--{need}" for need in rule.requires), rule.summary())
    console.print(table)
    return 0


def rule_info(rule, full: bool = False) -> dict:
    info = {"code": rule.code, "name": rule.name, "severity": rule.severity.value, "summary": rule.summary(), "requires": list(rule.requires),
            "fixable": rule.fixable}
    if full:
        info["source"] = rule.source()
        info["documentation"] = rule.documentation()
        info["options"] = rule.Options.model_json_schema().get("properties", {})
    return info


def options_doc(rule) -> str:
    """A markdown `## Options` section generated from the rule's pydantic options model."""
    fields = rule.Options.model_fields
    if not fields:
        return ""
    lines = ["", "", "## Options", ""]
    for name, field in fields.items():
        key = field.alias or name
        lines.append(f"- `{key}` ({default_text(field)}): {field.description or ''}")
    return "\n".join(lines)


def default_text(field) -> str:
    """`default 0.85`, `default ["id", "label"]` (from a default factory too), or `required`."""
    if field.is_required():
        return "required"
    import json

    value = field.get_default(call_default_factory=True)
    try:
        shown = json.dumps(value, ensure_ascii=False)
    except TypeError:
        shown = repr(value)
    return f"default `{shown}`"
