"""Benchmark the chat-template checks (CT001-CT005) against transformers' per-row
`apply_chat_template(tokenize=True)`, measured in the same run.

    .venv/bin/python bench/templates.py                      # 10k and 100k rows, tiny-chat
    .venv/bin/python bench/templates.py --rows 10000 --model samples/tiny-chat --baseline-rows 5000

Ours: `curate lint FILE --select CT --model MODEL` end to end through the engine (reading,
parsing and normalizing the file included, which the baseline is spared): each batch is
rendered once with the compiled template; rows that a proven bound (byte-level BPE: tokens <=
UTF-8 bytes) cannot rule out are tokenized with one `encode_batch`. A second figure turns the
bound off, so every row is tokenized, to show what tokenization alone costs.
Baseline: `AutoTokenizer.from_pretrained(MODEL).apply_chat_template(messages, tokenize=True)`
per row on already-parsed messages (a subset of the rows: its cost per row is flat).
Each figure is the best of --repeats runs, since the CPU may be shared.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.generate import generate, write  # noqa: E402


def ours(path: Path, model: str, tokenize_every_row: bool = False) -> tuple[float, int, dict[str, int]]:
    """Seconds, rows and findings by code for the CT rules over the file."""
    from curate.engine.runner import run_lint
    from curate.engine.settings import LintRequest, plan_lint
    from curate.templates import ChatTemplate

    plan = plan_lint(LintRequest(paths=[str(path)], isolated=True, select=["CT"], model=model))
    bound = ChatTemplate.token_upper_bound
    if tokenize_every_row:
        ChatTemplate.token_upper_bound = lambda self, text: None  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        result = run_lint(plan)
        seconds = time.perf_counter() - started
    finally:
        ChatTemplate.token_upper_bound = bound  # type: ignore[method-assign]
    if result.errors:
        raise SystemExit(f"lint failed: {result.errors}")
    return seconds, result.rows, result.by_code


def baseline(rows: int, model: str, repeats: int) -> tuple[float, int]:
    """Best-of-`repeats` seconds and rows for transformers' apply_chat_template(tokenize=True),
    one row at a time."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    conversations = [row["messages"] for row in generate(rows, seed=1)]
    tokenizer.apply_chat_template(conversations[0], tokenize=True)  # compile the template outside the timing
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for messages in conversations:
            tokenizer.apply_chat_template(messages, tokenize=True)
        best = min(best, time.perf_counter() - started)
    return best, len(conversations)


def best_of(repeats: int, path: Path, model: str, tokenize_every_row: bool) -> tuple[float, int, dict[str, int]]:
    runs = [ours(path, model, tokenize_every_row) for _ in range(repeats)]
    return min(runs, key=lambda run: run[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--model", default=str(ROOT / "samples" / "tiny-chat"))
    parser.add_argument("--baseline-rows", type=int, default=3_000)
    parser.add_argument("--repeats", type=int, default=3, help="report the best of this many runs (the CPU may be shared)")
    args = parser.parse_args()

    base_seconds, base_rows = baseline(args.baseline_rows, args.model, args.repeats)
    base_rate = base_rows / base_seconds
    print(f"model: {args.model}")
    title = "baseline  transformers apply_chat_template(tokenize=True) per row:"
    print(f"{title:<68}{base_rows:>7,} rows in {base_seconds:6.2f} s = {base_rate:>9,.0f} rows/s ({1e6 / base_rate:.0f} us/row)")
    with tempfile.TemporaryDirectory() as folder:
        for count in args.rows:
            path = write(Path(folder) / f"chat-{count}.jsonl", count, seed=1)
            for label, every_row in (("", False), (", every row tokenized", True)):
                seconds, rows, by_code = best_of(args.repeats, path, args.model, every_row)
                rate = rows / seconds
                title = f"curate    lint --select CT (CT001-CT005){label}:"
                print(
                    f"{title:<68}{rows:>7,} rows in {seconds:6.2f} s = {rate:>9,.0f} rows/s "
                    f"({1e6 / rate:.0f} us/row)  ratio {rate / base_rate:4.1f}x  findings {by_code}"
                )


if __name__ == "__main__":
    main()
