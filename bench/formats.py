"""Benchmark the output-format (OF) and balance (BL) rules.

1. The output classifier: `classify_outputs` (polars, vectorized; JSON parsed only for
   answers that start like JSON) against a per-row Python classifier with the same
   rules written with `re`, on the same answers. Both must agree on every answer.
2. The lint pass: rows/s of `curate lint --select OF,BL` against `--select SC001`
   (read, parse and normalize only), in the same run, so the difference is what the
   OF and BL rules cost.

The data is bench/generate.py's synthetic chat with a share of final answers replaced
by JSON (some broken, some drifting), fenced code and markdown, so every branch runs.

    .venv/bin/python bench/formats.py --rows 100000
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.generate import generate  # noqa: E402
from curate.rules import output_format as of  # noqa: E402


def mixed_rows(count: int, seed: int) -> list[dict]:
    """Generated chat rows; 8% JSON answers (a tenth broken or drifting), 2% code, 3% markdown."""
    rng = random.Random(seed)
    rows = list(generate(count, seed))
    for number, row in enumerate(rows):
        roll = rng.random()
        if roll < 0.08:
            answer = orjson.dumps({"order_id": number, "status": rng.choice(["shipped", "pending"]), "eta_days": rng.randint(0, 9)}).decode()
            if rng.random() < 0.05:
                answer = answer[:-1] + ",}"
            elif rng.random() < 0.05:
                answer = answer.replace(f'"order_id":{number}', f'"order_id":"{number}"')
        elif roll < 0.10:
            answer = f"```python\ndef total(items):\n    return sum(items) + {number}\n```"
        elif roll < 0.13:
            answer = f"Try these steps:\n\n1. Restart the device.\n2. Update to version {number % 9}.\n3. Sign in again."
        else:
            continue
        row["messages"][-1] = {"role": "assistant", "content": answer}
    return rows


# The baseline: the same rules, one answer at a time, with Python's `re`.
def _python_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern.replace(r"\z", r"\Z"))


JSON_LIKE_START = _python_regex(of.JSON_LIKE_START)
FENCED_BLOCK = _python_regex(of.FENCED_BLOCK)
CODE_LINE = _python_regex(of.CODE_LINE)
HEADING = _python_regex(of.HEADING)
TABLE_SEPARATOR = _python_regex(of.TABLE_SEPARATOR)
LIST_ITEM = _python_regex(of.LIST_ITEM)


def classify_one_by_one(text: str) -> str:
    text = text.strip()
    if text.startswith(("{", "[")):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            if JSON_LIKE_START.search(text):
                return "json-like"
        else:
            if isinstance(value, (dict, list)):
                return "json"
    fenced = "```" in text or "~~~" in text
    if fenced:
        if sum(len(block) for block in FENCED_BLOCK.findall(text)) >= of.CODE_BLOCK_SHARE * len(text):
            return "code"
    else:
        lines = [line for line in text.split("\n") if line.strip()]
        code_lines = sum(1 for line in lines if CODE_LINE.search(line))
        if len(lines) >= of.CODE_MIN_LINES and code_lines >= of.CODE_LINE_SHARE * len(lines):
            return "code"
    if HEADING.search(text) or TABLE_SEPARATOR.search(text) or len(LIST_ITEM.findall(text)) >= 2 or fenced:
        return "markdown"
    return "prose"


def best_of(repeats: int, work) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


def lint_seconds(path: Path, select: list[str], repeats: int) -> tuple[float, int]:
    from curate.engine.runner import run_lint
    from curate.engine.settings import LintRequest, plan_lint

    def run():
        return run_lint(plan_lint(LintRequest(paths=[str(path)], isolated=True, select=select)))

    seconds, result = best_of(repeats, run)
    return seconds, len(result.findings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="Best of this many runs per measurement.")
    args = parser.parse_args()

    rows = mixed_rows(args.rows, args.seed)
    answers = [row["messages"][-1]["content"] for row in rows]
    vector_s, (vector_formats, _) = best_of(args.repeats, lambda: of.classify_outputs(answers))
    python_s, python_formats = best_of(args.repeats, lambda: [classify_one_by_one(text) for text in answers])
    disagree = sum(1 for a, b in zip(vector_formats, python_formats) if a != b)
    print(f"classifier on {len(answers):,} answers (best of {args.repeats}):")
    print(f"  per-row Python (re)   {python_s:7.3f} s  {len(answers) / python_s:12,.0f} answers/s")
    print(f"  vectorized (polars)   {vector_s:7.3f} s  {len(answers) / vector_s:12,.0f} answers/s")
    print(f"  ratio                 {python_s / vector_s:7.1f}x   disagreements: {disagree}")

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mixed.jsonl"
        path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
        read_s, _ = lint_seconds(path, ["SC001"], args.repeats)
        rules_s, findings = lint_seconds(path, ["OF", "BL"], args.repeats)
    print(f"lint of {len(rows):,} rows (best of {args.repeats}):")
    print(f"  --select SC001 (read) {read_s:7.3f} s  {len(rows) / read_s:12,.0f} rows/s")
    print(f"  --select OF,BL        {rules_s:7.3f} s  {len(rows) / rules_s:12,.0f} rows/s  ({findings:,} findings)")
    extra = max(rules_s - read_s, 1e-9)
    print(f"  OF+BL rules alone     {extra:7.3f} s  {len(rows) / extra:12,.0f} rows/s  (lint time ratio {rules_s / read_s:.2f}x of reading)")
    if disagree:
        sys.exit(f"the classifiers disagree on {disagree} answers")


if __name__ == "__main__":
    main()
