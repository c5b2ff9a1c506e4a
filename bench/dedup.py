"""Benchmark the duplicate and leakage pass (DU001-DU003, LK001-LK002) against the naive datasketch loop.

For each size, a fresh subprocess builds synthetic chat rows (bench/generate.py:
5% near-duplicates, 2% exact copies) in batches as the lint runner does,
then times the rules' observe + finish over all batches (the "pass"), with
1,000 eval rows (their user turns as questions, some planted in the data).
Peak memory is the subprocess's ru_maxrss. The baseline is the textbook loop
`MinHash(num_perm=128).update(shingle)` per shingle + `MinHashLSH.insert`
per row on the same rows and shingles (user + assistant word pairs), run on a
subset and extrapolated per row; it does less than our pass (no exact,
conflict or leakage checks, no candidate verification), so the ratio is
conservative.

The second baseline is a near-duplicate pipeline on rensa (Rust MinHash,
`pip install rensa`, a dev dependency): the same vectorized shingling as
DU002 (curate's word hashing and shingle sets), `RMinHash`'s digest matrix
from the flat shingle hashes, `RMinHashLSH` (the band count nearest DU002's
that divides 128) to flag the rows that share a band with another, the pairs
among the flagged rows by grouping their band values, then the exact Jaccard
check. rensa's LSH has no matrix query that returns keys (`query_all` takes
`RMinHash` objects, which cannot be built from pre-hashed shingles), hence the
flags + grouping. It does less than DU002 (no boilerplate, numbers or
clustering), so the ratio against it is conservative too. The rensa pipeline
runs twice: with curate's numpy shingling (`shingle_hashes` +
`unique_row_shingles`, the vectorized shingler a rensa user would write; the
issue's baseline; its words are cut by numpy too, so that process never loads
the compiled kernels) and with curate's compiled one (`row_shingle_sets`, the
kernels DU002 itself uses on large batches, word cutting included), which
leaves only the MinHash + LSH + verify stages to compare.

The third baseline is datasketch's batch API on the same shingle sets
(`MinHash(hashfunc=int).update_batch` + `MinHashLSH.insert` per row), like
the naive loop measured on a subset and extrapolated per row.

Near-duplicate detection alone (DU002 against the baselines) runs in fresh
processes, alternating, best of 2 by CPU time (once at 1M rows). DU002 runs
with its kernels compiled ahead of time as `make install` leaves them
(`curate.text.aot`: loading them takes under a millisecond, where starting
numba took ~0.5 s of CPU); one more DU002 run with empty caches
(`CURATE_CACHE_DIR` and `NUMBA_CACHE_DIR` set to a new folder) shows what the
very first large lint pays to build them (in a child process: wall time).

    .venv/bin/python bench/dedup.py            # 10k and 100k rows
    .venv/bin/python bench/dedup.py --million  # also 1M rows (a few minutes)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

RULES = ("DU001", "DU002", "DU003", "LK001", "LK002")
BATCH_SIZE = 20_000
NAIVE_ROWS = 5_000
EVAL_ROWS = 1_000


class Stopwatch:
    """Wall and CPU seconds (process_time: every thread of the process) of the timed sections, summed.
    The machine is shared: CPU time shows the work done, wall time what a user waits."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def __enter__(self) -> "Stopwatch":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *_) -> None:
        self.wall += time.perf_counter() - self._wall
        self.cpu += time.process_time() - self._cpu


def synthetic_batches(count: int):
    from bench.generate import generate
    from curate.engine.batch import Batch
    from curate.io import RawRow

    batch = []
    for line, row in enumerate(generate(count, seed=0), start=1):
        if line % 500 == 0 and line // 500 <= EVAL_ROWS // 10:  # plant a few eval questions in the data
            row = {"messages": [{"role": "user", "content": eval_question(line // 500)}, {"role": "assistant", "content": "Done."}]}
        batch.append(RawRow("train.jsonl", line, None, obj=row))
        if len(batch) == BATCH_SIZE:
            yield Batch.from_raw(batch)
            batch = []
    if batch:
        yield Batch.from_raw(batch)


def eval_rows() -> list[dict]:
    from bench.generate import generate

    rows = []
    for row in generate(EVAL_ROWS, seed=12345, near_dup_share=0.0, exact_dup_share=0.0):
        user = next(m["content"] for m in row["messages"] if m["role"] == "user")
        answer = next(m["content"] for m in row["messages"] if m["role"] == "assistant")
        rows.append({"question": user, "answer": answer})
    return rows


_EVAL_CACHE: list[dict] = []


def eval_question(index: int) -> str:
    if not _EVAL_CACHE:
        _EVAL_CACHE.extend(eval_rows())
    return _EVAL_CACHE[index]["question"]


def run_pass(count: int, eval_path: str, codes: tuple[str, ...] = RULES) -> dict:
    """Time observe + finish of the `codes` rules over `count` synthetic rows (in this process)."""
    import gc

    from curate.engine.rule import RunContext, load_builtin_rules

    registry = load_builtin_rules()
    context = RunContext(eval_paths=[eval_path])
    rules = [registry[code](None, context) for code in codes]
    gc.disable()
    prepare, whole = Stopwatch(), Stopwatch()
    per_rule = dict.fromkeys(codes, 0.0)
    with whole:
        started = time.perf_counter()
        for rule in rules:
            rule.setup()
        per_rule["setup"] = time.perf_counter() - started
    batches = synthetic_batches(count)
    findings = []
    while True:
        with prepare:
            batch = next(batches, None)
            if batch is not None:
                batch.messages  # built once per batch by the engine for every rule; not part of this pass
        if batch is None:
            break
        for rule in rules:
            with whole:
                started = time.perf_counter()
                rule.observe(batch)
                per_rule[rule.code] += time.perf_counter() - started
    for rule in rules:
        with whole:
            started = time.perf_counter()
            findings.extend(rule.finish())
            per_rule[rule.code] += time.perf_counter() - started
    counts = {code: sum(1 for f in findings if f.code == code) for code in codes}
    return {
        "rows": count,
        "pass_s": whole.wall,
        "pass_cpu_s": whole.cpu,
        "prepare_s": prepare.wall,
        "per_rule_s": per_rule,
        "findings": counts,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def naive_seconds_per_row(rows: int) -> float:
    """The baseline: per-shingle MinHash.update and MinHashLSH.insert, as in datasketch's README."""
    import re

    from datasketch import MinHash, MinHashLSH

    from bench.generate import generate

    word = re.compile(r"\w+")
    texts = [
        " ".join(m["content"] for m in row["messages"] if m["role"] in ("user", "assistant"))
        for row in generate(rows, seed=0)
    ]
    started = time.perf_counter()
    lsh = MinHashLSH(threshold=0.6, num_perm=128)
    for key, text in enumerate(texts):
        tokens = word.findall(text.lower())
        minhash = MinHash(num_perm=128)
        for shingle in {" ".join(tokens[i : i + 2]) for i in range(max(len(tokens) - 1, 1))}:
            minhash.update(shingle.encode("utf-8"))
        lsh.insert(key, minhash)
    return (time.perf_counter() - started) / rows


def datasketch_batch_seconds_per_row(rows: int) -> float:
    """datasketch's batch API on curate's shingle sets: `update_batch` of each row's pre-hashed
    shingles into a `MinHash(hashfunc=int)` (bit-identical to DU002's signature) + `MinHashLSH.insert`."""
    from datasketch import MinHash, MinHashLSH

    from curate.text.rows import batch_tokens
    from curate.text.shingles import row_shingle_sets

    batch = next(synthetic_batches(rows))
    batch.messages
    started = time.perf_counter()
    _, tokens = batch_tokens(batch).select(("user", "assistant"))
    values, counts = row_shingle_sets(tokens.hashes, tokens.counts, 2)
    lsh = MinHashLSH(threshold=0.6, num_perm=128)
    ends = counts.cumsum()
    with lsh.insertion_session() as session:
        for key, (start, end) in enumerate(zip((ends - counts).tolist(), ends.tolist())):
            minhash = MinHash(num_perm=128, hashfunc=int)
            minhash.update_batch(values[start:end].tolist())
            session.insert(key, minhash)
    return (time.perf_counter() - started) / len(counts)


def rensa_pass(count: int, compiled_shingling: bool = False) -> dict:
    """The rensa baseline (bench/rensa_baseline.py) over the same batches, timed like `run_pass`."""
    import gc

    import curate.text.shingles
    from curate.text.rows import batch_tokens
    from rensa_baseline import RensaNearDuplicates

    gc.disable()
    if not compiled_shingling:  # numpy throughout, words too: this pipeline never loads the compiled kernels
        curate.text.shingles.COMPILED_MIN_SHINGLES = sys.maxsize
    prepare, whole = Stopwatch(), Stopwatch()
    with whole:
        pipeline = RensaNearDuplicates(compiled_shingling)
    batches = synthetic_batches(count)
    while True:
        with prepare:
            batch = next(batches, None)
            if batch is not None:
                batch.messages
        if batch is None:
            break
        with whole:
            pipeline.add(batch_tokens(batch).select(("user", "assistant"))[1])
    with whole:
        found = pipeline.finish()
    return {
        "rows": count,
        "pass_s": whole.wall,
        "pass_cpu_s": whole.cpu,
        "prepare_s": prepare.wall,
        **found,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def worker(args: argparse.Namespace) -> None:
    if args.rensa:
        print(json.dumps(rensa_pass(args.rows, args.compiled_shingling)))
    elif args.naive:
        print(json.dumps({"naive_s_per_row": naive_seconds_per_row(args.rows)}))
    elif args.datasketch_batch:
        print(json.dumps({"s_per_row": datasketch_batch_seconds_per_row(args.rows)}))
    else:
        print(json.dumps(run_pass(args.rows, args.eval, tuple(args.rules.split(",")))))


def spawn(*extra: str, env: dict | None = None) -> dict:
    output = subprocess.run([sys.executable, __file__, "--worker", *extra], check=True, capture_output=True, text=True, cwd=ROOT,
                            env={**os.environ, **(env or {})})
    return json.loads(output.stdout.strip().splitlines()[-1])


def compare_alone(size: int, eval_path: Path, naive: float, batch_api: float) -> None:
    """Near-duplicate detection alone: DU002 against rensa and datasketch, in fresh processes,
    alternating, best of 2 by CPU time (1 at a million rows)."""
    pipelines = {
        "DU002": ("--rows", str(size), "--eval", str(eval_path), "--rules", "DU002"),
        "rensa, numpy shingling": ("--rows", str(size), "--rensa"),
        "rensa, compiled shingling": ("--rows", str(size), "--rensa", "--compiled-shingling"),
    }
    runs: dict[str, list[dict]] = {name: [] for name in pipelines}
    for _ in range(1 if size >= 1_000_000 else 2):
        for name, extra in pipelines.items():
            runs[name].append(spawn(*extra))
    best = {name: min(results, key=lambda run: run["pass_cpu_s"]) for name, results in runs.items()}
    with tempfile.TemporaryDirectory() as empty_cache:
        first = spawn(*pipelines["DU002"], env={"NUMBA_CACHE_DIR": empty_cache, "CURATE_CACHE_DIR": empty_cache})
    ours = best["DU002"]
    print(f"{'':>10} near-duplicates alone, {size:,} rows (fresh processes, alternating, best by CPU of {len(runs['DU002'])}):")
    print(f"{'':>12}{'pipeline':<44}{'wall':>8}{'CPU':>8}{'peak RSS':>11}   {'DU002 is faster by (wall / CPU)':<32} found")
    print(f"{'':>12}{'DU002 (every stage, clustering included)':<44}{ours['pass_s']:>7.2f}s{ours['pass_cpu_s']:>7.2f}s"
          f"{ours['peak_rss_mib']:>7,.0f} MiB   {'':<32} {ours['findings']['DU002']} findings")
    for name in ("rensa, numpy shingling", "rensa, compiled shingling"):
        peer = best[name]
        print(f"{'':>12}{name + ' (' + peer['bands'] + ' bands)':<44}{peer['pass_s']:>7.2f}s{peer['pass_cpu_s']:>7.2f}s"
              f"{peer['peak_rss_mib']:>7,.0f} MiB   {peer['pass_s'] / ours['pass_s']:>5.2f}x / {peer['pass_cpu_s'] / ours['pass_cpu_s']:.2f}x{'':<19} "
              f"{peer['rows_with_earlier_similar']} rows with an earlier similar row")
    for name, per_row in (("datasketch update_batch + insert (extrap.)", batch_api), ("datasketch naive loop (extrap.)", naive)):
        print(f"{'':>12}{name:<44}{per_row * size:>7.1f}s{'':>8}{'':>11}   {per_row * size / ours['pass_s']:>5.1f}x by wall")
    print(f"{'':>12}DU002's first large lint on a machine (empty caches: builds the kernels in a child process): "
          f"{first['pass_s']:.2f}s wall (+{first['pass_s'] - ours['pass_s']:.2f}s, once)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--million", action="store_true", help="also run 1,000,000 rows")
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--naive", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--datasketch-batch", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rensa", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--compiled-shingling", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--eval", default="", help=argparse.SUPPRESS)
    parser.add_argument("--rules", default=",".join(RULES), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    from curate.io import atomic_write_jsonl

    out = ROOT / "bench" / "out"
    eval_path = out / "dedup-eval.jsonl"
    atomic_write_jsonl(eval_path, eval_rows())
    sizes = args.sizes or [10_000, 100_000] + ([1_000_000] if args.million else [])
    naive = spawn("--naive", "--rows", str(NAIVE_ROWS))["naive_s_per_row"]
    batch_api = spawn("--datasketch-batch", "--rows", str(NAIVE_ROWS))["s_per_row"]
    print(f"cores: {os.cpu_count()}   eval rows: {EVAL_ROWS}   batch size: {BATCH_SIZE}")
    print(f"datasketch, measured on {NAIVE_ROWS:,} rows: naive loop (MinHash.update per shingle + MinHashLSH.insert) "
          f"{1 / naive:,.0f} rows/s; batch API on curate's shingle sets (update_batch + insertion session) {1 / batch_api:,.0f} rows/s")
    print()
    print(f"{'rows':>10} {'DU+LK pass':>11} {'rows/s':>10} {'naive (extrap.)':>16} {'ratio':>7} {'peak RSS':>10}   findings")
    for size in sizes:
        result = spawn("--rows", str(size), "--eval", str(eval_path))
        naive_total = naive * size
        print(f"{size:>10,} {result['pass_s']:>10.2f}s {size / result['pass_s']:>10,.0f} {naive_total:>15.1f}s "
              f"{naive_total / result['pass_s']:>6.1f}x {result['peak_rss_mib']:>8,.0f} MiB   "
              + " ".join(f"{code}={n}" for code, n in result["findings"].items()))
        print(f"{'':>10} CPU time of the pass (process_time, all threads): {result['pass_cpu_s']:.2f}s")
        print(f"{'':>10} per rule: " + ", ".join(f"{code} {seconds:.2f}s" for code, seconds in result["per_rule_s"].items())
              + f"; building batches (engine, shared by all rules, not in the pass): {result['prepare_s']:.1f}s")
        if size >= 100_000:  # like for like: near-duplicate detection alone, which is all the baselines do
            compare_alone(size, eval_path, naive, batch_api)


if __name__ == "__main__":
    main()
