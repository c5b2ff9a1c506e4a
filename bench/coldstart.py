"""`curate` cold start: this tree against a baseline tree, alternating, in fresh interpreters.

Each run is a fresh interpreter (`python -m curate ...`), as in pre-commit. Three commands:

- `lint 1k`: `curate lint FILE --isolated --no-progress` on 1,000 rows of bench/lint.py's
  `write_rows` (bench/generate.py rows with planted quality problems);
- `lint nosuchfile`: the same command on a missing file (an error before any row is read);
- `--help`: `curate --help`.

The baseline is another checkout of curate (e.g. `git worktree add /tmp/base main`, or
`git archive BASE | tar -x -C /tmp/base`); runs alternate baseline / this tree and repeat,
and the medians of wall and CPU (user + sys of the child) are printed with their ratios.
Bytecode caches are allowed (PYTHONDONTWRITEBYTECODE is dropped for the children): an
installed curate is byte-compiled, and a first run of each tree warms them.

    python bench/coldstart.py --baseline /tmp/base --repeats 7
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def run_once(tree: Path, arguments: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one `python -m curate ARGUMENTS` with `tree` first on the path."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPATH"] = str(tree)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # cwd is the tree: `python -m` puts the working directory first on sys.path, before PYTHONPATH
    proc = subprocess.run([sys.executable, "-m", "curate", *arguments], env=env, cwd=tree, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1, 2) or "Traceback" in proc.stderr:
        raise SystemExit(f"curate {' '.join(arguments)} failed in {tree}: {proc.stderr.strip()[-2000:]}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of curate to compare against")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--only", choices=("lint", "missing", "help"), action="append", help="run only these commands (repeatable)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE / "bench"))
    from lint import write_rows  # noqa: E402  (bench/lint.py)

    trees = {"baseline": args.baseline.resolve(), "this tree": HERE}
    with tempfile.TemporaryDirectory() as folder:
        data = write_rows(Path(folder) / "chat.jsonl", args.rows)
        commands = {
            "lint": (f"lint {args.rows // 1000}k" if args.rows % 1000 == 0 else f"lint {args.rows}", ["lint", str(data), "--isolated", "--no-progress"]),
            "missing": ("lint nosuchfile", ["lint", str(Path(folder) / "nosuchfile.jsonl"), "--isolated", "--no-progress"]),
            "help": ("--help", ["--help"]),
        }
        for key in args.only or list(commands):
            label, arguments = commands[key]
            for tree in trees.values():  # warm the file cache and the bytecode caches of both trees
                run_once(tree, arguments)
            times: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
            for _ in range(args.repeats):
                for name, tree in trees.items():
                    times[name].append(run_once(tree, arguments))
            print(f"{label}:")
            medians = {}
            for name, values in times.items():
                walls, cpus = [v[0] for v in values], [v[1] for v in values]
                medians[name] = (statistics.median(walls), statistics.median(cpus))
                print(f"  {name:>10}: wall median {medians[name][0]:.3f} s (min {min(walls):.3f}, max {max(walls):.3f}), CPU median {medians[name][1]:.3f} s, {len(values)} runs")
            (base_wall, base_cpu), (our_wall, our_cpu) = medians["baseline"], medians["this tree"]
            print(f"  this tree / baseline: wall {our_wall / base_wall:.3f}, CPU {our_cpu / base_cpu:.3f}")


if __name__ == "__main__":
    main()
