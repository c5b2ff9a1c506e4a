"""CPU seconds per stage of the per-row work of a lint pass: reading, `Batch.from_raw`,
`Batch.messages` and each row rule, on one JSONL file, best of `--repeats`. The rules share
work (the message frame, the screens of `curate.rules.toolkit.screened_messages`): the first
rule to need a shared piece is charged for it.

    PYTHONPATH=. .venv/bin/python bench/rows.py FILE            # this checkout
    bench/rows.py FILE --against /work/main                      # alternate with another checkout

With `--against`, the two checkouts run in fresh interpreters one after the other,
`--repeats` times each, and the best of each is printed with the ratio old/new.
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


def stages(path: str, batch_size: int) -> dict[str, float]:
    """CPU seconds of each stage over the whole file, in this interpreter."""
    from curate.engine.batch import Batch
    from curate.engine.rule import RowRule, load_builtin_rules
    from curate.io import DEFAULT_MAX_ROW_BYTES, iter_batches

    clock = time.process_time
    times: dict[str, float] = {}
    started = clock()
    raw_batches = list(iter_batches(path, batch_size, DEFAULT_MAX_ROW_BYTES))
    times["read"] = clock() - started
    started = clock()
    batches = [Batch.from_raw(raw) for raw in raw_batches]
    times["Batch.from_raw"] = clock() - started
    started = clock()
    for batch in batches:
        batch.messages
    times["Batch.messages"] = clock() - started
    rules = [cls() for code, cls in sorted(load_builtin_rules().items()) if issubclass(cls, RowRule) and code[:2] in ("SC", "QL")]
    for rule in rules:  # all set up before the first batch, as in a lint run
        rule.setup()
    for rule in rules:
        started = clock()
        for batch in batches:
            for _ in rule.check_batch(batch):
                pass
        times[rule.code] = clock() - started
    return times


def best_of(root: str, path: str, batch_size: int, repeats: int) -> list[dict[str, float]]:
    env = {**os.environ, "PYTHONPATH": root}
    command = [sys.executable, str(ROOT / "bench" / "rows.py"), path, "--batch-size", str(batch_size), "--json"]
    return [json.loads(subprocess.run(command, env=env, capture_output=True, check=True, text=True).stdout) for _ in range(repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path")
    parser.add_argument("--batch-size", type=int, default=20_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--against", help="another checkout to compare with, run alternately")
    parser.add_argument("--json", action="store_true", help="one run, its figures as JSON")
    args = parser.parse_args()
    if args.json:
        import gc

        import polars  # noqa: F401  (lazy imports are not part of any figure)

        gc.disable()  # as in `run_lint`

        print(json.dumps(stages(args.path, args.batch_size)))
        return
    if not args.against:
        runs = [stages(args.path, args.batch_size) for _ in range(args.repeats)]
        for stage in runs[0]:
            print(f"{stage:16} {min(run[stage] for run in runs):7.3f} s")
        return
    old_runs, new_runs = [], []
    for _ in range(args.repeats):
        old_runs += best_of(args.against, args.path, args.batch_size, 1)
        new_runs += best_of(str(ROOT), args.path, args.batch_size, 1)
    print(f"{'stage':16} {'old':>8} {'new':>8} {'old/new':>8}")
    total_old = total_new = 0.0
    for stage in new_runs[0]:
        old = min(run.get(stage, float("nan")) for run in old_runs)
        new = min(run[stage] for run in new_runs)
        total_old += old
        total_new += new
        print(f"{stage:16} {old:8.3f} {new:8.3f} {old / new if new else float('inf'):8.2f}")
    print(f"{'total':16} {total_old:8.3f} {total_new:8.3f} {total_old / total_new:8.2f}")


if __name__ == "__main__":
    main()
