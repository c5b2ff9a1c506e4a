"""`curate lint` cold start on 1,000 rows: this tree against a baseline tree, alternating.

Each run is a fresh interpreter (`python -m curate lint FILE --isolated`), as in pre-commit.
The baseline is another checkout of curate (e.g. `git worktree add /tmp/base main`, or
`git archive BASE | tar -x -C /tmp/base`); runs alternate baseline / this tree and repeat,
and the medians are printed with their ratio.

    python bench/coldstart.py --baseline /tmp/base --repeats 7
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def lint_once(tree: Path, data: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "curate", "lint", str(data), "--isolated", "--no-progress"], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"lint failed in {tree}: {proc.stderr.strip()}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of curate to compare against")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE / "bench"))
    from generate import write  # noqa: E402  (bench/generate.py)

    with tempfile.TemporaryDirectory() as folder:
        data = write(Path(folder) / "chat.jsonl", args.rows)
        lint_once(HERE, data)  # warm the file cache and the bytecode caches of both trees
        lint_once(args.baseline, data)
        times: dict[str, list[float]] = {"baseline": [], "this tree": []}
        for _ in range(args.repeats):
            times["baseline"].append(lint_once(args.baseline, data))
            times["this tree"].append(lint_once(HERE, data))
    base, ours = (statistics.median(times[key]) for key in ("baseline", "this tree"))
    for key, values in times.items():
        print(f"{key:>10}: median {statistics.median(values):.3f} s  (min {min(values):.3f}, max {max(values):.3f}, {len(values)} runs)")
    print(f"ratio this tree / baseline: {ours / base:.3f}")


if __name__ == "__main__":
    main()
