"""Benchmark the lint pass: rows/s for the SC rules and SC+QL at 10k and 100k rows,
the QL rules against a naive per-message Python loop measured in the same run,
the whole `curate lint` (every default rule, JSON report, a fresh process; by default a shard
per core, and with `--jobs 1` in one process, whose reports must be identical) and `curate lint
--select DU002` against the rensa near-duplicate pipeline alone on the same file, from the
file's first byte to the findings (bench/rensa_baseline.py; issue 16 asks the whole lint to be
the faster at 100k rows), with each run's CPU (every process), the peak RSS of its largest
process and the peak memory of all its processes together (their PSS added up, so shared
library pages count once); and the wall time of `curate lint` on 1k rows in a fresh interpreter.

    .venv/bin/python bench/lint.py                 # 10k and 100k rows
    .venv/bin/python bench/lint.py --sizes 10000   # quicker
    .venv/bin/python bench/lint.py --sizes 1000 --full-sizes 100000 1000000 --repeats 2   # the 1M race (~10 min)

Rows come from bench/generate.py, with 1% replaced by rows that carry a quality
problem (placeholder, PII, a key, control characters, a merged example,
a loop, an attachment reference) so the precise checks have work to do.

The naive baseline is what the QL rules would be without their vectorized
prefilters: every message of every row goes through the same precise Python
checks (`is_placeholder`, `CONTROL_RE`, `merged_example_marker`,
`unseeable_reference`, `repetition_problem`, the PII finders) one by one.
Both sides run on the same parsed batches, so reading and parsing are not in
the ratio; the full-pass figures include them.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from generate import generate  # noqa: E402

OUT = ROOT / "bench" / "out"
PLANTED_SHARE = 0.01
PLANTS = (
    ("user", "What did the survey say?", "<No Output>"),
    ("assistant", "Confirm my email?", "Invoices go to dana.whitfield@gmail.com and card 4111 1111 1111 1111 is on file."),
    ("assistant", "Is my key right?", "Your key sk-proj-4f9KxB2mQ7vLr8TzP1wYcN3dE6hJ0aSg works."),
    ("assistant", "Why is the log red?", "It starts with \x1b[31m, a terminal color code."),
    ("assistant", "Reset the router?", "Hold the button.\n\n### Instruction:\nWrite a poem.\n\n### Response:\nRouters hum."),
    ("assistant", "Any update?", " ".join(["I am checking your ticket history now."] * 12)),
    ("user", "What does the chart in the attached image show?", "Sales rise every quarter."),
)


def write_rows(path: Path, n: int, seed: int = 0) -> Path:
    """bench/generate.py rows, with PLANTED_SHARE of them swapped for a row with a quality problem."""
    rng = random.Random(seed + 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for row in generate(n, seed):
            if rng.random() < PLANTED_SHARE:
                _, question, answer = rng.choice(PLANTS)
                row = {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}
            handle.write(orjson.dumps(row) + b"\n")
    return path


def lint_seconds(path: Path, select: list[str], repeats: int = 2) -> tuple[float, int]:
    """Best-of seconds for an in-process lint pass (read, parse, rules, sort) and its finding count.
    The machine is shared, so the best run is the one least disturbed by others."""
    from curate.engine.runner import run_lint
    from curate.engine.settings import LintRequest, plan_lint

    times = []
    for _ in range(repeats):
        plan = plan_lint(LintRequest(paths=[str(path)], select=select, isolated=True))
        started = time.perf_counter()
        result = run_lint(plan)
        times.append(time.perf_counter() - started)
    return min(times), len(result.findings)


def read_batches(path: Path) -> list:
    from curate.engine.batch import Batch
    from curate.engine.runner import DEFAULT_BATCH_SIZE
    from curate.io import DEFAULT_MAX_ROW_BYTES, iter_batches

    batches = [Batch.from_raw(raw) for raw in iter_batches(str(path), DEFAULT_BATCH_SIZE, DEFAULT_MAX_ROW_BYTES)]
    for batch in batches:
        batch.messages  # built once per batch and shared by every rule in a real run; not part of either side
    return batches


def quality_rules() -> list:
    from curate.engine.rule import RowRule, load_builtin_rules

    rules = [cls() for code, cls in sorted(load_builtin_rules().items()) if code.startswith("QL") and issubclass(cls, RowRule)]
    for rule in rules:
        rule.setup()
    return rules


def vectorized_seconds(batches: list, rules: list) -> tuple[float, int]:
    started = time.perf_counter()
    found = sum(1 for batch in batches for rule in rules for _ in rule.check_batch(batch))
    return time.perf_counter() - started, found


def naive_seconds(batches: list, rules: list, limit: int) -> tuple[float, int, int]:
    """The same precise checks, applied to every message of the first `limit` rows in a
    Python loop: seconds, hits, and rows measured (the loop is too slow to run on all)."""
    from curate.rules.quality import CONTROL_RE, merged_example_marker, unseeable_reference

    by_code = {rule.code: rule for rule in rules}
    placeholder, repetition, pii = by_code["QL001"], by_code["QL005"], by_code["QL006"]
    rows = [row for batch in batches for row in batch.rows][:limit]
    started = time.perf_counter()
    found = 0
    for row in rows:
        if row.conversation is None:
            continue
        for message in row.conversation.messages:
            text, role = message.content, message.role
            found += placeholder.is_placeholder(text, role)
            found += CONTROL_RE.search(text) is not None
            found += merged_example_marker(text, role) is not None
            found += role == "user" and unseeable_reference(row, message) is not None
            found += repetition.repetition_problem(text) is not None
            found += bool(pii.hits(text))
    return time.perf_counter() - started, found, len(rows)


def cli_seconds(path: Path, repeats: int = 3) -> tuple[float, float]:
    """Best-of wall time of `python -m curate lint` on `path` (run as bench/coldstart.py runs it:
    bytecode cached, as an installed curate has it), and of a bare interpreter start."""
    from coldstart import run_once

    lint = min(run_once(ROOT, ["lint", "--isolated", str(path)])[0] for _ in range(repeats))
    bare = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], capture_output=True, check=False)
        bare.append(time.perf_counter() - started)
    return lint, min(bare)


def measured_process(command: list[str]) -> dict:
    """Wall seconds, CPU seconds (user + sys, every thread, and the worker processes it waited
    for), the peak RSS of its largest process (`peak_mib`, from wait4) and the peak of the memory
    of it and its children together (`peak_total_mib`: their PSS added up, `tree_pss_kib`,
    sampled every 50 ms from /proc; at least the largest process's peak RSS)."""
    import threading

    started = time.perf_counter()
    child = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    total_peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            total_peak[0] = max(total_peak[0], tree_pss_kib(child.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout = child.stdout.read() if child.stdout else b""
    _, status, usage = os.wait4(child.pid, 0)
    done.set()
    sampler.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} exited {child.returncode}")
    return {"wall_s": time.perf_counter() - started, "cpu_s": usage.ru_utime + usage.ru_stime,
            "peak_mib": usage.ru_maxrss / 1024, "peak_total_mib": max(total_peak[0], usage.ru_maxrss) / 1024, "stdout": stdout.decode()}


def tree_pss_kib(pid: int) -> int:
    """The proportional set size (PSS) of a process and its children, added up (0 where /proc
    cannot tell): each page counts once across them, a page two processes share half in each.
    Adding their RSS instead would count twice the shared library pages (polars, numpy: ~25 MB)
    that every process maps."""
    total = 0
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for process in [str(pid), *children]:
        try:
            rollup = Path(f"/proc/{process}/smaps_rollup").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")), 0)
    return total


#: The race's curate runs: name -> extra `curate lint` arguments.
CURATE_RUNS = {
    "curate lint, all default rules": [],
    "the same, --jobs 1 (one process)": ["--jobs", "1"],
    "curate lint --select DU002 (near-duplicates alone)": ["--select", "DU002"],
}


def full_lint_vs_rensa(path: Path, repeats: int) -> tuple[dict[str, dict], dict]:
    """`curate lint` with every default rule (JSON report, as CI runs it), as it runs by default
    (a shard per core) and in one process (`--jobs 1`), and with DU002 alone, against the rensa
    near-duplicate pipeline alone on the same file; each a fresh process from the first byte,
    alternating; the best run of each by wall time (the machine is shared). The sharded and the
    one-process reports must be identical."""
    reports = {name: OUT / f"{path.stem}-report-{number}.json" for number, name in enumerate(CURATE_RUNS)}
    runs: dict[str, list[dict]] = {name: [] for name in [*CURATE_RUNS, "rensa"]}
    for _ in range(repeats):
        for name, extra in CURATE_RUNS.items():
            command = [sys.executable, "-m", "curate", "lint", "--isolated", "--format", "json", "-o", str(reports[name]), *extra, str(path)]
            runs[name].append(measured_process(command))
        rensa = measured_process([sys.executable, str(ROOT / "bench" / "rensa_baseline.py"), str(path)])
        runs["rensa"].append({**rensa, **orjson.loads(rensa["stdout"].strip().splitlines()[-1])})
    sharded, single = (reports[name].read_bytes() for name in list(CURATE_RUNS)[:2])
    if sharded != single:
        raise SystemExit(f"{path}: the sharded report differs from the one-process report")
    best = {name: min(measured, key=lambda run: run["wall_s"]) for name, measured in runs.items()}
    for name in CURATE_RUNS:
        best[name]["findings"] = len(orjson.loads(reports[name].read_bytes())["findings"])
    return {name: best[name] for name in CURATE_RUNS}, best["rensa"]


def print_full_lint_vs_rensa(n: int, curate: dict[str, dict], rensa: dict) -> None:
    lint, single, alone = curate.values()
    for label, run in curate.items():
        print(f"{n:>8}  {label}: {run['wall_s']:.2f} s wall, {run['cpu_s']:.2f} s CPU, {run['peak_mib']:,.0f} MiB peak "
              f"({run['peak_total_mib']:,.0f} MiB all processes), {run['findings']:,} findings ({n / run['wall_s']:,.0f} rows/s)")
    print(f"{'':>8}  rensa near-duplicate pipeline alone ({rensa['bands']} bands): {rensa['wall_s']:.2f} s wall, "
          f"{rensa['cpu_s']:.2f} s CPU, {rensa['peak_mib']:,.0f} MiB peak, {rensa['rows_with_earlier_similar']:,} rows with an earlier similar row")
    print(f"{'':>8}  -> every default rule vs rensa's one: {rensa['wall_s'] / lint['wall_s']:.2f}x by wall, "
          f"{rensa['cpu_s'] / lint['cpu_s']:.2f}x by CPU (above 1: the whole lint is faster); "
          f"shards vs one process: {single['wall_s'] / lint['wall_s']:.2f}x by wall, identical reports")
    print(f"{'':>8}  -> DU002 alone vs rensa, file to findings: {rensa['wall_s'] / alone['wall_s']:.2f}x by wall, "
          f"{rensa['cpu_s'] / alone['cpu_s']:.2f}x by CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--naive-rows", type=int, default=20_000, help="rows the naive loop runs on (it takes minutes on 100k)")
    parser.add_argument("--full-sizes", type=int, nargs="*", default=[100_000],
                        help="sizes for the whole-lint vs rensa race (add 1000000 for the 1M figure: ~5 min)")
    parser.add_argument("--repeats", type=int, default=2, help="alternating runs per side in the race")
    args = parser.parse_args()

    small = write_rows(OUT / "lint-1000.jsonl", 1000)
    lint_seconds(small, ["SC", "QL"], repeats=1)  # warm-up: lazy imports (polars, numpy) are not part of any figure below

    print(f"{'rows':>8}  {'pass':<28} {'seconds':>8} {'rows/s':>10} {'findings':>9}")
    for n in args.sizes:
        path = write_rows(OUT / f"lint-{n}.jsonl", n)
        for label, select in (("lint, SC rules", ["SC"]), ("lint, SC + QL rules", ["SC", "QL"])):
            seconds, findings = lint_seconds(path, select)
            print(f"{n:>8}  {label:<28} {seconds:>8.2f} {n / seconds:>10,.0f} {findings:>9}")
        batches, rules = read_batches(path), quality_rules()
        fast, fast_found = vectorized_seconds(batches, rules)
        slow, slow_found, slow_rows = naive_seconds(batches, rules, args.naive_rows)
        print(f"{n:>8}  {'QL rows, vectorized':<28} {fast:>8.2f} {n / fast:>10,.0f} {fast_found:>9}")
        print(f"{slow_rows:>8}  {'QL rows, naive Python loop':<28} {slow:>8.2f} {slow_rows / slow:>10,.0f} {slow_found:>9}")
        print(f"{'':>8}  -> vectorized QL row rules: {(n / fast) / (slow_rows / slow):.1f}x the naive loop's rows/s")
        del batches

    print()
    for n in args.full_sizes:
        print_full_lint_vs_rensa(n, *full_lint_vs_rensa(write_rows(OUT / f"lint-{n}.jsonl", n), args.repeats))

    wall, bare = cli_seconds(small)
    print(f"\n`curate lint` on 1,000 rows, subprocess wall (best of 3): {wall:.2f} s "
          f"(target < 0.6 s; bare `python -c pass`: {bare:.2f} s, so curate adds {wall - bare:.2f} s)")


if __name__ == "__main__":
    main()
