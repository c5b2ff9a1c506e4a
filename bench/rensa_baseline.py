"""The rensa near-duplicate pipeline the benchmarks race against, in its strongest form here.

rensa is Rust MinHash with Python bindings (a dev dependency). The pipeline: curate's
vectorized shingling (its word hashing and shingle sets: what DU002 compares), rensa's
`RMinHash` digest matrix from the flat shingle hashes, `RMinHashLSH` (the band count
nearest DU002's that divides 128) to flag the rows that share a band with another, the
pairs among the flagged rows by grouping their band values, then the exact Jaccard check.
rensa's LSH has no matrix query that returns keys (`query_all` takes `RMinHash` objects,
which cannot be built from pre-hashed shingles), hence flags + grouping. It does less than
DU002 (no boilerplate, numbers or clustering), so a ratio against it is conservative.

`file_pass(path)` runs it on a JSONL file from the first byte: polars' multithreaded
`read_ndjson` per block of lines (the fastest JSONL reader here), messages exploded to one
row per turn, user and assistant words as DU002 takes them (polars' `\w+` extraction),
shingled by curate's compiled kernel (its fastest shingler). It is what a user with rensa
would run instead of `curate lint`'s near-duplicate rule alone.
"""

from __future__ import annotations

import io
import json
import resource
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

THRESHOLD, NUM_PERM, SEED, LSH_THRESHOLD = 0.8, 128, 1, 0.6
BLOCK_ROWS = 20_000


class RensaNearDuplicates:
    """Feed it the selected tokens of each batch (`add`), then `finish` for the pairs."""

    def __init__(self, compiled_shingling: bool = False) -> None:
        import rensa

        from curate.text.minhash import LshBands

        self.rensa = rensa
        bands = LshBands(LSH_THRESHOLD, NUM_PERM)  # DU002's LSH threshold; rensa needs a band count dividing num_perm
        bands.bands = min((b for b in range(1, NUM_PERM + 1) if NUM_PERM % b == 0), key=lambda b: abs(b - bands.bands))
        bands.rows = NUM_PERM // bands.bands
        self.bands = bands
        #: Shingle sets from curate's compiled kernel (`row_shingle_sets`) instead of its numpy path.
        self.compiled_shingling = compiled_shingling
        self.matrices: list = []
        self.value_parts: list[np.ndarray] = []
        self.count_parts: list[np.ndarray] = []

    def add(self, tokens) -> None:
        from curate.text.shingles import fold32, row_shingle_sets, shingle_hashes, unique_row_shingles

        if self.compiled_shingling:
            values, counts = row_shingle_sets(tokens.hashes, tokens.counts, 2)
        else:
            hashes, per_row = shingle_hashes(tokens.hashes, tokens.counts, 2)
            values, counts = unique_row_shingles(fold32(hashes), per_row)
        offsets = np.concatenate(([0], np.cumsum(counts))).astype(np.uint64)
        self.matrices.append(self.rensa.RMinHash.digest_matrix_from_flat_token_hashes(values.astype(np.uint64), offsets, NUM_PERM, SEED))
        self.value_parts.append(values)
        self.count_parts.append(counts)

    def finish(self) -> dict:
        from curate.text.minhash import bucket_pairs, lsh_buckets
        from curate.text.shingles import pair_jaccards

        lsh = self.rensa.RMinHashLSH(LSH_THRESHOLD, NUM_PERM, self.bands.bands)
        first = 0
        for matrix in self.matrices:
            lsh.insert_matrix(matrix, first)
            first += matrix.len()
        flagged_parts, digest_parts = [], []
        for matrix in self.matrices:
            flags = np.asarray(lsh.query_duplicate_flags_matrix(matrix), dtype=bool)
            flagged_parts.append(flags)
            digest_parts.append(np.asarray(matrix.to_rows(), dtype=np.uint32)[flags])
        flagged = np.flatnonzero(np.concatenate(flagged_parts))
        pairs = bucket_pairs(lsh_buckets(self.bands.hashes(np.concatenate(digest_parts))), len(flagged))
        pairs = flagged[pairs]  # back to global row numbers
        values, counts = np.concatenate(self.value_parts), np.concatenate(self.count_parts)
        scores = pair_jaccards(values, np.cumsum(counts) - counts, counts, pairs)
        similar = pairs[scores >= THRESHOLD]
        return {
            "bands": f"{self.bands.bands}x{self.bands.rows}",
            "candidate_pairs": len(pairs),
            "similar_pairs": len(similar),
            "rows_with_earlier_similar": int(len(np.unique(similar[:, 1]))) if len(similar) else 0,
        }


def line_blocks(path: Path, rows: int = BLOCK_ROWS) -> Iterator[bytes]:
    """The file's lines, `rows` at a time, as bytes."""
    block: list[bytes] = []
    with path.open("rb") as handle:
        for line in handle:
            block.append(line)
            if len(block) == rows:
                yield b"".join(block)
                block = []
    if block:
        yield b"".join(block)


def block_tokens(block: bytes):
    """The user and assistant words of a block of chat rows, hashed as DU002 hashes them."""
    import polars as pl

    from curate.text.rows import MessageTokens
    from curate.text.shingles import tokens_of_lists

    frame = pl.read_ndjson(io.BytesIO(block), schema={"messages": pl.List(pl.Struct({"role": pl.String, "content": pl.String}))})
    messages = frame.with_row_index("row").explode("messages").unnest("messages")
    words = messages["content"].str.to_lowercase().str.extract_all(r"\w+")
    tokens = MessageTokens(tokens_of_lists(words), messages["row"].to_numpy().astype(np.int64), messages["role"].to_numpy(), len(frame))
    return tokens.select(("user", "assistant"))[1]


def file_pass(path: Path) -> dict:
    """The whole rensa pipeline on a JSONL file: wall and CPU seconds from the first byte, peak RSS."""
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    pipeline = RensaNearDuplicates(compiled_shingling=True)  # its strongest form: curate's compiled shingler
    rows = 0
    for block in line_blocks(path):
        tokens = block_tokens(block)
        rows += block.count(b"\n")
        pipeline.add(tokens)
    result = pipeline.finish()
    return {
        **result,
        "rows": rows,
        "wall_s": time.perf_counter() - started_wall,
        "cpu_s": time.process_time() - started_cpu,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


if __name__ == "__main__":
    import sys

    ROOT = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(ROOT))
    print(json.dumps(file_pass(Path(sys.argv[1]))))
