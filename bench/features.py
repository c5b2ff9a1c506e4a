"""Stage timer for the shared per-batch text features (`curate.text.rows`) and DU003.

CPU seconds (`time.process_time`, every thread) per stage over the batches of one file:
`normalize_messages`, `conversation_features`, `batch_tokens` (word hashes), and DU003's
observe and finish, each the best of `--repeats`.

    .venv/bin/python bench/features.py FILE                   # this checkout
    .venv/bin/python bench/features.py FILE --against DIR     # and another checkout, alternating

With `--against`, the same timer runs in fresh interpreters with `PYTHONPATH` set to each
checkout in turn (old, new, old, new, ...) and the best of each is printed with the ratio:
the two versions cannot share one process, since both are the `curate` package.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("normalize_messages", "conversation_features", "batch_tokens", "DU003 observe", "DU003 finish")


def read_batches(path: str, rows: int | None) -> list:
    from curate.engine.batch import Batch
    from curate.engine.runner import DEFAULT_BATCH_SIZE
    from curate.io import DEFAULT_MAX_ROW_BYTES, iter_batches

    batches, seen = [], 0
    for raw in iter_batches(path, DEFAULT_BATCH_SIZE, DEFAULT_MAX_ROW_BYTES):
        batches.append(Batch.from_raw(raw))
        batches[-1].messages  # built once per batch by the runner; not a stage here
        seen += len(raw)
        if rows is not None and seen >= rows:
            break
    return batches


def cpu(work) -> float:
    started = time.process_time()
    work()
    return time.process_time() - started


def stage_seconds(batches: list) -> dict[str, float]:
    """CPU seconds of each stage over all batches (fresh caches)."""
    from curate.engine.batch import Batch
    from curate.rules.duplicates import ConflictingResponses
    from curate.text import rows as text_rows

    fresh = [Batch(batch.rows) for batch in batches]
    for fresh_batch, batch in zip(fresh, batches):
        fresh_batch.__dict__["messages"] = batch.messages
    normalized: list = []
    times = {"normalize_messages": cpu(lambda: normalized.extend(text_rows.normalize_messages(b.messages) for b in fresh))}
    for batch, frame in zip(fresh, normalized):
        text_rows._NORMALIZED[batch] = frame
    times["conversation_features"] = cpu(lambda: [text_rows.batch_features(b) for b in fresh])
    times["batch_tokens"] = cpu(lambda: [text_rows.batch_tokens(b) for b in fresh])
    rule = ConflictingResponses()
    rule.setup()
    times["DU003 observe"] = cpu(lambda: [rule.observe(b) for b in fresh])
    times["DU003 finish"] = cpu(lambda: sum(1 for _ in rule.finish()))
    return times


def measure(path: str, rows: int | None, repeats: int) -> dict[str, float]:
    batches = read_batches(path, rows)
    best: dict[str, float] = {}
    for _ in range(repeats):
        for stage, seconds in stage_seconds(batches).items():
            best[stage] = min(best.get(stage, seconds), seconds)
    best["rows"] = sum(len(batch) for batch in batches)
    return best


def run_in(checkout: str, args) -> dict[str, float]:
    command = [sys.executable, str(Path(__file__).resolve()), args.file, "--repeats", "1", "--json"]
    if args.rows:
        command += ["--rows", str(args.rows)]
    env = {**os.environ, "PYTHONPATH": checkout}
    return json.loads(subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file")
    parser.add_argument("--rows", type=int, default=None, help="stop after this many rows (whole batches)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", help="another checkout to compare with (alternating fresh interpreters)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON (used by --against)")
    args = parser.parse_args()
    if not args.against:
        figures = measure(args.file, args.rows, args.repeats)
        if args.json:
            print(json.dumps(figures))
            return
        per = 100_000 / figures["rows"]
        for stage in STAGES:
            print(f"{stage:24} {figures[stage]:7.3f} s CPU ({figures[stage] * per:.3f} per 100k rows)")
        return
    best: dict[str, dict[str, float]] = {"old": {}, "new": {}}
    for _ in range(args.repeats):
        for name, checkout in (("old", args.against), ("new", str(ROOT))):
            for stage, seconds in run_in(checkout, args).items():
                best[name][stage] = min(best[name].get(stage, seconds), seconds)
    per = 100_000 / best["new"]["rows"]
    print(f"{'stage (CPU s per 100k rows)':28} {'old':>7} {'new':>7} {'ratio':>6}")
    for stage in (*STAGES, "total"):
        old = sum(best["old"][s] for s in STAGES) if stage == "total" else best["old"][stage]
        new = sum(best["new"][s] for s in STAGES) if stage == "total" else best["new"][stage]
        print(f"{stage:28} {old * per:7.3f} {new * per:7.3f} {old / max(new, 1e-9):6.2f}x")


if __name__ == "__main__":
    main()
