"""What an evaluation leaves behind: eval.json (versioned), generations.jsonl (every prompt,
each candidate's output and verdicts; failures open in `curate review`), a rich side-by-side
table, and chart.png (rates per candidate with 95% intervals)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from curate.evaluate.items import EvalError
from curate.evaluate.metrics import MEANS, RATES
from curate.io import atomic_write_bytes, atomic_write_jsonl

SCHEMA_VERSION = 1
REPORT_NAME, GENERATIONS_NAME, CHART_NAME = "eval.json", "generations.jsonl", "chart.png"


def write_report(folder: Path, report: dict[str, Any], rows: list[dict[str, Any]], chart: bool = True) -> list[str]:
    """Write the output folder's files (each atomically); returns their names."""
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / REPORT_NAME, orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")
    atomic_write_jsonl(folder / GENERATIONS_NAME, rows)
    names = [REPORT_NAME, GENERATIONS_NAME]
    if chart and report["candidates"]:
        write_chart(folder / CHART_NAME, report)
        names.append(CHART_NAME)
    return names


def read_report(path: Path) -> dict[str, Any]:
    """eval.json back as written; a file of another version or shape is a one-line error."""
    try:
        report = orjson.loads(Path(path).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise EvalError(f"{path}: cannot read the eval report: {exc}") from None
    if not isinstance(report, dict) or report.get("curate_eval") != SCHEMA_VERSION:
        raise EvalError(f"{path}: not a curate eval report of version {SCHEMA_VERSION}")
    return report


def _cell(entry: dict[str, Any] | None, rate: bool) -> str:
    if entry is None:
        return "-"
    if rate:
        return f"{entry['value']:.0%} [{entry['low']:.0%}-{entry['high']:.0%}] {entry['k']}/{entry['n']}"
    return f"{entry['value']:.2f} [{entry['low']:.2f}-{entry['high']:.2f}]"


def summary_table(report: dict[str, Any]):
    """Metrics (rows) by candidate (columns), with intervals; cost at the bottom."""
    from rich.table import Table

    candidates = report["candidates"]
    table = Table(title=f"curate eval: {report['data']['prompts']} prompts from {report['data']['source']}", title_justify="left")
    table.add_column("metric")
    for candidate in candidates:
        table.add_column(candidate["name"], justify="right")
    names = [n for n in [*RATES, *MEANS] if any(n in c["metrics"] for c in candidates)]
    for name in names:
        table.add_row(name, *(_cell(c["metrics"].get(name), name in RATES) for c in candidates))
    table.add_section()
    table.add_row("prompt tokens", *(f"{c['cost']['prompt_tokens_mean']:.0f}" for c in candidates))
    table.add_row("new tokens", *(f"{c['cost']['new_tokens_mean']:.0f}" for c in candidates))
    table.add_row("tokens/s", *(f"{c['cost']['tokens_per_s'] or 0:,.0f}" for c in candidates))
    return table


def comparison_lines(report: dict[str, Any]) -> list[str]:
    """One line per paired test, saying plainly when a difference is not significant."""
    lines = []
    for test in report["comparisons"]:
        if not (test["first_only"] or test["second_only"]) and test["metric"] != "passed":
            continue
        verdict = "significant" if test["significant"] else "NOT significant"
        lines.append(f"{test['metric']}: {test['second']} vs {test['first']}: {test['second_only']} prompts only {test['second']} passes, "
                     f"{test['first_only']} only {test['first']} (McNemar p={test['p_value']:.3g}, {verdict} at 5%)")
    return lines


def terminal_report(report: dict[str, Any], console) -> None:
    console.print(summary_table(report))
    for line in comparison_lines(report):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    hygiene = report.get("hygiene") or {}
    if hygiene.get("contaminated"):
        console.print(f"contamination: {len(hygiene['contaminated'])} of {hygiene['checked']} eval prompts are in the training data "
                      f"({', '.join(e['where'] + ' ' + '/'.join(e['rules']) for e in hygiene['contaminated'][:3])}); their scores measure memory",
                      markup=False, highlight=False)
    regressions = report.get("regressions")
    if regressions:
        failures = regressions["failures"]
        console.print(f"regressions: {len(failures)} of {regressions['prompts']} regression prompts pass with base and fail with the adapter", markup=False)
        for failure in failures[:10]:
            console.print(f"  {failure['where']} ({failure['candidate']}): {failure['prompt'][:80]!r}", markup=False, highlight=False)


def write_chart(path: Path, report: dict[str, Any]) -> None:
    """Grouped bars: each rate metric per candidate, Wilson 95% intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    candidates = report["candidates"]
    names = [n for n in RATES if any(n in c["metrics"] for c in candidates)]
    figure, axes = plt.subplots(figsize=(max(6, 1.4 * len(names) * max(1, len(candidates)) / 2 + 2), 4))
    width = 0.8 / max(1, len(candidates))
    positions = np.arange(len(names))
    for offset, candidate in enumerate(candidates):
        entries = [candidate["metrics"].get(n) for n in names]
        values = [e["value"] if e else 0 for e in entries]
        errors = [[(e["value"] - e["low"]) if e else 0 for e in entries], [(e["high"] - e["value"]) if e else 0 for e in entries]]
        axes.bar(positions + offset * width, values, width, yerr=errors, capsize=3, label=candidate["name"])
    axes.set_xticks(positions + width * (len(candidates) - 1) / 2, names, rotation=20, ha="right")
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("rate (95% Wilson interval)")
    axes.set_title(f"{report['data']['prompts']} prompts: {report['data']['source']}")
    axes.legend()
    figure.tight_layout()
    from io import BytesIO

    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
