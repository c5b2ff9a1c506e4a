"""Report writers: text, json, github, sarif. Output formats are public API."""

from __future__ import annotations

import io
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import orjson

from curate import __version__
from curate.engine.findings import Finding, Location, Severity
from curate.engine.rule import REGISTRY
from curate.engine.runner import LintResult

JSON_VERSION = 1
SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
#: What one finding carries in a report: at most this many related locations and items per
#: `data` list; what is cut is counted in `related_left_out` / `<key>_left_out`, so 200k rows
#: that share one prompt make a report that grows linearly, not with the square.
MAX_ITEMS_PER_FINDING = 10


def capped_items(items: list, limit: int = MAX_ITEMS_PER_FINDING) -> tuple[list, int]:
    """The first `limit` items and how many were left out."""
    return (items, 0) if len(items) <= limit else (items[:limit], len(items) - limit)


def capped_data(data: dict) -> dict:
    """A finding's `data` with each list cut to MAX_ITEMS_PER_FINDING, plus `<key>_left_out` counts."""
    for value in data.values():  # a loop, not any() over a generator: ~2x faster on 87k findings
        if isinstance(value, list) and len(value) > MAX_ITEMS_PER_FINDING:
            break
    else:
        return data
    capped: dict = {}
    for key, value in data.items():
        if isinstance(value, list):
            value, left_out = capped_items(value)
            capped[key] = value
            if left_out:
                capped[f"{key}_left_out"] = left_out
        else:
            capped[key] = value
    return capped


def finding_dict(finding: Finding) -> dict | Finding:
    """A finding as the JSON report writes it: `Finding.to_dict` with its lists capped. A finding
    with nothing to cap is passed as it is: orjson writes the dataclass (its fields are the
    dict's keys, in order) in C, ~10x faster than building the dict here."""
    related, left_out = capped_items(finding.related)
    data = capped_data(finding.data)
    if not left_out and data is finding.data:
        return finding
    document = {  # `Finding.to_dict`'s keys; orjson writes the Location dataclasses and the Severity enum itself
        "code": finding.code,
        "name": finding.name,
        "severity": finding.severity,
        "path": finding.path,
        "line": finding.line,
        "message": finding.message,
        "related": related,
        "data": data,
    }
    if left_out:
        document["related_left_out"] = left_out
    return document


def dumps(document: object) -> str:
    """Indented JSON text; a non-UTF-8 file name (a surrogate escape) is written backslash-escaped."""
    return dumps_bytes(document).decode()


def dumps_bytes(document: object, option: int = 0) -> bytes:
    """`dumps` as UTF-8 bytes (orjson's own output), with orjson's `option` flags added."""
    try:
        return orjson.dumps(document, option=orjson.OPT_INDENT_2 | option)
    except TypeError:
        return orjson.dumps(printable(document), option=orjson.OPT_INDENT_2 | option)


def printable(value: object) -> object:
    """`value` with every string made valid UTF-8 (undecodable bytes of file names as `\\xff`)."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogateescape" if _only_escapes(value) else "backslashreplace").decode("utf-8", "backslashreplace")
    if isinstance(value, dict):
        return {printable(key): printable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [printable(item) for item in value]
    if isinstance(value, (Location, Finding)):
        return printable(value.to_dict())
    if isinstance(value, Severity):
        return value.value
    return value


def _only_escapes(text: str) -> bool:
    return all(not 0xD800 <= ord(char) <= 0xDFFF or 0xDC80 <= ord(char) <= 0xDCFF for char in text)


def summary_dict(result: LintResult) -> dict:
    return {
        "rows": result.rows,
        "errors": result.count(Severity.ERROR),
        "warnings": result.count(Severity.WARNING),
        "by_code": result.by_code,
    }


def json_report(result: LintResult) -> bytes:
    """The JSON report, one line feed after it, as UTF-8 bytes (61 MB at 1M rows: writing them as
    they come from orjson skips a decode, a str copy and an encode, ~0.3 s there)."""
    document = {
        "version": JSON_VERSION,
        "findings": [finding_dict(finding) for finding in result.findings],
        "summary": summary_dict(result),
    }
    return dumps_bytes(document, orjson.OPT_APPEND_NEWLINE)


def write_json(result: LintResult, out: IO[str]) -> None:
    out.write(json_report(result).decode())


def _github_escape(text: str, *, property_value: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if property_value:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


GITHUB_LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}


def write_github(result: LintResult, out: IO[str]) -> None:
    """GitHub Actions workflow commands: one annotation per finding."""
    for finding in result.findings:
        props = [f"file={_github_escape(finding.path, property_value=True)}"]
        if finding.line is not None:
            props.append(f"line={finding.line}")
        props.append(f"title={_github_escape(f'{finding.code} {finding.name}', property_value=True)}")
        out.write(f"::{GITHUB_LEVELS[finding.severity]} {','.join(props)}::{_github_escape(finding.message)}\n")


SARIF_LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}


def _sarif_location(path: str, line: int | None) -> dict:
    physical: dict = {"artifactLocation": {"uri": Path(path).as_posix()}}
    if line is not None:
        physical["region"] = {"startLine": line}
    return {"physicalLocation": physical}


def _sarif_rule(code: str, name: str, severity: Severity) -> dict:
    rule = REGISTRY.get(code)
    entry = {"id": code, "name": name, "defaultConfiguration": {"level": SARIF_LEVELS[severity]}, "properties": {"tags": [code[:2]]}}
    if rule is not None:
        entry["shortDescription"] = {"text": rule.summary()}
        entry["fullDescription"] = {"text": rule.documentation()}
    return entry


def sarif_document(result: LintResult) -> dict:
    declared = {rule.code: (rule.name, rule.severity) for rule in result.rules}
    declared.update({f.code: (f.name, REGISTRY[f.code].severity if f.code in REGISTRY else f.severity) for f in result.findings})
    codes = sorted(declared)
    index = {code: position for position, code in enumerate(codes)}
    rules = [_sarif_rule(code, *declared[code]) for code in codes]
    results = []
    for finding in result.findings:
        item = {
            "ruleId": finding.code,
            "ruleIndex": index[finding.code],
            "level": SARIF_LEVELS[finding.severity],
            "message": {"text": finding.message},
            "locations": [_sarif_location(finding.path, finding.line)],
        }
        related, left_out = capped_items(finding.related)
        if related:
            item["relatedLocations"] = [
                {"id": position, **_sarif_location(loc.path, loc.line)}
                for position, loc in enumerate(related)
            ]
        if finding.data or left_out:
            item["properties"] = {**capped_data(finding.data), **({"related_left_out": left_out} if left_out else {})}
        results.append(item)
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "curate",
                        "version": __version__,
                        "informationUri": "https://github.com/curate-dev/curate",
                        "rules": rules,
                    }
                },
                "results": results,
            }
        ],
    }


def write_sarif(result: LintResult, out: IO[str]) -> None:
    out.write(dumps(sarif_document(result)) + "\n")


SEVERITY_STYLES = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "blue"}


#: One line of the text report: (text, rich style) pieces; or a chart: (title, counts, whether a
#: blank line follows it).
Line = list[tuple[str, str]]
Chart = tuple[str, dict[str, int], bool]


def write_text(result: LintResult, out: IO[str], *, show_stats: bool = False, color: bool | None = None) -> None:
    """Human report: one line per finding, charts for distributions, then a summary. A report
    without colour, charts or unprintable characters (to a pipe or a file: pre-commit, CI) is
    written as plain lines, the same characters rich would write there, without importing rich
    (~22 ms of a 1k-row lint)."""
    items = text_report_items(result, show_stats)
    if _colored(out, color) or not all(isinstance(item, list) and all(text.isprintable() for text, _ in item) for item in items):
        write_items_with_rich(items, out, color)  # rich also strips CR, BEL and the like, and expands tabs
    else:
        out.write("".join("".join(text for text, _ in item) + "\n" for item in items))  # type: ignore[union-attr]


def write_items_with_rich(items: list[Line | Chart], out: IO[str], color: bool | None) -> None:
    from rich.console import Console
    from rich.text import Text

    console = Console(file=out, force_terminal=color, no_color=color is False, highlight=False, soft_wrap=True)
    for item in items:
        if isinstance(item, tuple):
            from curate.engine.charts import bar_chart  # rich's tables load only for a chart

            title, counts, blank_after = item
            console.print(bar_chart(title, counts), *([""] if blank_after else []))
        else:
            console.print(Text.assemble(*item))


def _colored(out: IO[str], color: bool | None) -> bool:
    """Whether rich would style the report: asked to, or writing to a terminal (rich's own test:
    its environment variables first, then `isatty`)."""
    if color is not None:
        return color
    import os

    if any(os.environ.get(name) for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "JUPYTER_COLUMNS", "JUPYTER_LINES")):
        return True
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty())


def text_report_items(result: LintResult, show_stats: bool = False) -> list[Line | Chart]:
    """The text report's lines and charts, in order (`write_text` renders them)."""
    items: list[Line | Chart] = []
    for finding in result.findings:
        where = f"{finding.path}:{finding.line}" if finding.line is not None else finding.path
        items.append([(where, "bold"), (": ", ""), (finding.code, SEVERITY_STYLES[finding.severity]), (f" [{finding.severity.value}] ", ""), (finding.message, "")])
        distribution = finding.data.get("distribution")
        if isinstance(distribution, dict) and distribution:
            items.append((f"  {finding.code} distribution", distribution, True))
    if show_stats:
        items += [(title, counts, False) for title, counts in result.stats.items() if counts]
    return items + [[(text, style)] for text, style in summary_lines(result)]


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 or noun == "info" else f"{count} {noun}s"


def summary_lines(result: LintResult) -> Iterator[tuple[str, str]]:
    """The text report's closing lines, each with its rich style."""
    files = plural(len(result.files), "file")
    if result.findings:
        counts = ", ".join(
            plural(count, label)
            for count, label in (
                (result.count(Severity.ERROR), "error"),
                (result.count(Severity.WARNING), "warning"),
                (result.count(Severity.INFO), "info"),
            )
            if count
        )
        yield "", ""
        yield f"Found {plural(len(result.findings), 'finding')} in {plural(result.rows, 'row')} ({files}): {counts}.", "bold"
        width = max(len(REGISTRY[code].name) if code in REGISTRY else 0 for code in result.by_code)
        for code, count in result.by_code.items():
            name = REGISTRY[code].name if code in REGISTRY else ""
            yield f"  {code} {name:<{width}} {count:>6}", ""
    elif result.errors:
        yield f"No findings in {plural(result.rows, 'row')} ({files}), but the run was incomplete: {plural(len(result.errors), 'error')} above.", "bold red"
    else:
        yield f"No problems found in {plural(result.rows, 'row')} ({files}).", "bold green"
    if result.waived:
        yield f"{plural(result.waived, 'finding')} waived by the baseline.", "dim"
    if result.skipped:
        groups: dict[str, list[str]] = {}
        for code, reason in result.skipped.items():
            groups.setdefault(reason, []).append(code)
        for reason, codes in groups.items():
            yield f"Skipped {', '.join(codes)}: {reason}.", "dim"
    fixable = result.fixable
    if fixable:
        yield f"{fixable} can be fixed with `curate fix` or reviewed with `curate review`.", "dim"


WRITERS: dict[str, Callable[..., None]] = {
    "text": write_text,
    "json": write_json,
    "github": write_github,
    "sarif": write_sarif,
}


def report_bytes(result: LintResult, output_format: str, **options) -> bytes:
    """The report in `output_format` as UTF-8 bytes, for a file (JSON straight from `json_report`)."""
    if output_format == "json":
        return json_report(result)
    buffer = io.StringIO()
    write_report(result, output_format, buffer, **options)
    return buffer.getvalue().encode("utf-8")


def write_report(result: LintResult, output_format: str, out: IO[str] | None = None, **options) -> None:
    out = out or sys.stdout
    if output_format == "text":
        write_text(result, out, **options)
    else:
        WRITERS[output_format](result, out)
