"""Vectorized MinHash signatures and LSH banding, compatible with datasketch.

datasketch's default scheme (`affine32`, datasketch >= 2.0) maps a 32-bit
shingle hash `h` through the MurmurHash3 finalizer, then through `num_perm`
permutations `a * h + b mod 2**32` and keeps the minimum per permutation. We
take the permutation parameters from datasketch itself (same seed, same
`num_perm`), apply them to all shingles of many rows at once as one numpy
broadcast, and reduce per row with `np.minimum.reduceat`. A signature is
therefore bit-for-bit the `hashvalues` of a `datasketch.MinHash` fed the same
32-bit shingle hashes (`to_minhash` builds one; tests check the equality), and
Jaccard estimates and LSH buckets agree with datasketch.

Where the kernels are built (`curate.text.aot`), or once a process has worked on a million
shingles (a large input), the same arithmetic runs row by row in numba kernels
(`curate.text.kernels`, through `curate.text.shingles.compiled_kernels`),
band keys straight from the shingles without storing signatures; tests check both paths give
the same bits.

The LSH index uses datasketch's band/row parameters (`_optimal_param`) but
buckets all rows with one sort instead of a dict insert per row and band.

Both the permutation parameters and the band/row choice are recomputed here
with numpy, bit-for-bit as datasketch derives them (tests compare the two):
importing datasketch pulls in scipy, about 0.3 s that a pre-commit run of
`curate lint` on a small file should not pay. datasketch stays the reference
and the interchange format (`to_minhash`, `to_lean_minhash`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import combinations
from pathlib import Path

import numpy as np

from curate.text.shingles import compiled_kernels, in_threads, mix64, sorted_unique

#: Shingles per chunk: the (num_perm, chunk) uint32 scratch array is 4 MiB at 128 perms, small
#: enough to stay in cache between the multiply, the add and the per-row minimum (32,768, a
#: 16 MiB scratch, was 1.7x slower on a 20k-row batch; 2,048 is slower again, per-chunk overhead).
CHUNK_SHINGLES = 8_192
#: Buckets up to this size give all their pairs; in larger ones a row meets only the kept rows.
ALL_PAIRS_BUCKET = 24

_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35), np.uint32(16))


def fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer, as datasketch applies it before the permutations."""
    s1, m1, s2, m2, s3 = _FMIX32
    values = values ^ (values >> s1)
    values = values * m1
    values = values ^ (values >> s2)
    values = values * m2
    return values ^ (values >> s3)


def affine32_permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's `affine32` permutation parameters (`MinHash._init_permutations`): an odd
    multiplier `a` and an offset `b` per permutation, drawn from `RandomState(seed)` in its order.
    The defaults' are read from the package (KNOWN_PERMUTATIONS): `numpy.random` costs a
    pre-commit lint ~10 ms to import."""
    known = KNOWN_PERMUTATIONS.get((num_perm, seed))
    if known is not None:
        values = np.fromfile(Path(__file__).with_name(known), dtype="<u4").astype(np.uint32)
        return values[:num_perm], values[num_perm:]
    generator = np.random.RandomState(seed)
    a = generator.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = generator.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


#: `affine32_permutations` of the defaults (128 permutations, seed 1: every MinHash rule's), as
#: `a` then `b`, little-endian uint32, in a file beside this one. A test draws them again.
KNOWN_PERMUTATIONS: dict[tuple[int, int], str] = {(128, 1): "affine32-128-seed1.u32"}


#: Integration grid for the LSH error probabilities; fine enough to pick the same (bands, rows) as scipy's quad.
_GRID = 4097


#: `optimal_bands` of the defaults (DU002: 0.8 - 0.2; LK002: 0.8 - 0.4; 128 permutations; equal
#: weights), which every lint would otherwise compute again at start-up (0.13-0.3 s of a 1k-row
#: pre-commit run). A test recomputes every entry.
KNOWN_OPTIMAL_BANDS: dict[tuple[float, int], tuple[int, int]] = {(0.6, 128): (18, 7), (0.4, 128): (32, 4)}


def optimal_bands(threshold: float, num_perm: int, false_positive_weight: float = 0.5, false_negative_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) minimizing the weighted false positive + false negative probability mass,
    as datasketch's `lsh._optimal_param` computes it (`computed_optimal_bands`); the defaults'
    answers are known (`KNOWN_OPTIMAL_BANDS`)."""
    if false_positive_weight == false_negative_weight == 0.5:
        known = KNOWN_OPTIMAL_BANDS.get((round(threshold, 12), num_perm))
        if known is not None:
            return known
    return computed_optimal_bands(threshold, num_perm, false_positive_weight, false_negative_weight)


@lru_cache(maxsize=64)
def computed_optimal_bands(threshold: float, num_perm: int, false_positive_weight: float = 0.5, false_negative_weight: float = 0.5) -> tuple[int, int]:
    """`optimal_bands` computed: vectorized over every (bands, rows) choice."""
    choices = np.array([(bands, rows) for bands in range(1, num_perm + 1) for rows in range(1, num_perm // bands + 1)], dtype=np.float64)
    bands, rows = choices[:, :1], choices[:, 1:]

    def collision_mass(low: float, high: float) -> np.ndarray:
        similarity = np.linspace(low, high, _GRID)[None, :]
        collision = 1.0 - (1.0 - similarity**rows) ** bands
        return _simpson(collision, (high - low) / (_GRID - 1))

    false_positive = collision_mass(0.0, threshold)
    false_negative = (1.0 - threshold) - collision_mass(threshold, 1.0)
    error = false_positive * false_positive_weight + false_negative * false_negative_weight
    best = int(np.argmin(error))  # first minimum, like datasketch's strict `<` scan in the same order
    return int(choices[best, 0]), int(choices[best, 1])


def _simpson(values: np.ndarray, step: float) -> np.ndarray:
    """Composite Simpson's rule along the last axis (an odd number of evenly spaced samples)."""
    return step / 3.0 * (values[:, 0] + values[:, -1] + 4.0 * values[:, 1:-1:2].sum(axis=1) + 2.0 * values[:, 2:-1:2].sum(axis=1))


class MinHasher:
    """Computes datasketch-compatible MinHash signatures for many rows at once."""

    def __init__(self, num_perm: int = 128, seed: int = 1):
        self.num_perm = num_perm
        self.seed = seed

    @cached_property
    def permutations(self) -> tuple[np.ndarray, np.ndarray]:
        return affine32_permutations(self.num_perm, self.seed)

    def signatures(self, hashes32: np.ndarray, per_row: np.ndarray) -> np.ndarray:
        """(rows, num_perm) uint32 signatures of rows whose 32-bit shingle hashes are laid out flat.

        Every row must have at least one shingle (an empty set has no MinHash)."""
        if np.any(per_row <= 0):
            raise ValueError("every row needs at least one shingle")
        kernels = compiled_kernels(len(hashes32))
        if kernels is not None:
            out = np.empty((len(per_row), self.num_perm), dtype=np.uint32)
            self._in_kernel(kernels.signatures_into, hashes32, per_row, out)
            return out
        a, b = self.permutations
        mixed = fmix32(hashes32.astype(np.uint32))
        ends = np.cumsum(per_row)
        starts = ends - per_row
        out = np.empty((self.num_perm, len(per_row)), dtype=np.uint32)
        # One scratch buffer for all chunks, written in place: a fresh temporary per chunk
        # costs page faults that took 4x longer than the arithmetic itself.
        scratch = np.empty((self.num_perm, CHUNK_SHINGLES + int(per_row.max())), dtype=np.uint32)
        first_row = 0
        while first_row < len(per_row):
            # Take whole rows until the chunk holds about CHUNK_SHINGLES shingles (at least one row).
            last_row = max(int(np.searchsorted(ends, starts[first_row] + CHUNK_SHINGLES, side="right")), first_row + 1)
            lo, hi = int(starts[first_row]), int(ends[last_row - 1])
            # Permutation-major layout: the per-row minimum then runs along contiguous memory (5x faster).
            permuted = scratch[:, : hi - lo]
            np.multiply(a[:, None], mixed[None, lo:hi], out=permuted)
            np.add(permuted, b[:, None], out=permuted)
            out[:, first_row:last_row] = np.minimum.reduceat(permuted, starts[first_row:last_row] - lo, axis=1)
            first_row = last_row
        out = np.ascontiguousarray(out.T)
        return out

    def band_keys(self, hashes32: np.ndarray, per_row: np.ndarray, lsh: LshBands) -> np.ndarray:
        """`lsh.hashes(self.signatures(hashes32, per_row))`; for large inputs in one compiled pass
        that never stores the signatures."""
        kernels = compiled_kernels(len(hashes32))
        if kernels is None or np.any(per_row <= 0):
            return lsh.hashes(self.signatures(hashes32, per_row))
        out = np.empty((len(per_row), lsh.bands), dtype=np.uint64)
        self._in_kernel(kernels.band_keys_into, hashes32, per_row, out, lsh.rows, lsh.salts)
        return out

    def _in_kernel(self, kernel, hashes32: np.ndarray, per_row: np.ndarray, out: np.ndarray, *extra) -> None:
        """Run a row kernel (values, starts, counts, a, b, *extra, first_row, end_row, out) over all rows, in threads."""
        values = np.ascontiguousarray(hashes32, dtype=np.uint32)
        counts = np.ascontiguousarray(per_row, dtype=np.int64)
        starts = np.cumsum(counts) - counts
        a, b = self.permutations
        in_threads(lambda first, end: kernel(values, starts, counts, a, b, *extra, first, end, out), counts)

    def to_minhash(self, signature: np.ndarray):
        """A `datasketch.MinHash` holding this signature (for Jaccard estimates or a MinHashLSH)."""
        from datasketch import MinHash

        a, b = self.permutations
        return MinHash(seed=self.seed, hashvalues=signature, permutations=(a, b), scheme="affine32")

    def to_lean_minhash(self, signature: np.ndarray):
        """A compact, serializable `datasketch.LeanMinHash` of this signature."""
        from datasketch import LeanMinHash

        return LeanMinHash(self.to_minhash(signature))


class LshBands:
    """Splits signatures into `bands` bands of `rows` values and hashes each band.

    Two rows whose signatures agree on every value of some band share a bucket
    and become a candidate pair. The parameters come from datasketch's
    `_optimal_param` for `threshold`; callers pass a threshold below the one
    they verify with, so that pairs just above it are still found."""

    def __init__(self, threshold: float, num_perm: int):
        self.bands, self.rows = optimal_bands(threshold, num_perm)

    def hashes(self, signatures: np.ndarray) -> np.ndarray:
        """(n, bands) uint64 bucket keys: each band's values rolled into one mixed 64-bit hash."""
        used = signatures[:, : self.bands * self.rows].astype(np.uint64).reshape(len(signatures), self.bands, self.rows)
        rolled = np.zeros((len(signatures), self.bands), dtype=np.uint64)
        for column in range(self.rows):
            rolled = mix64(rolled * np.uint64(0x100000001B3) + used[:, :, column])
        return rolled ^ self.salts[None, :]

    @property
    def salts(self) -> np.ndarray:
        """One salt per band, so that equal values in different bands do not collide."""
        return mix64(np.arange(self.bands, dtype=np.uint64) + np.uint64(1))


@dataclass(frozen=True)
class Buckets:
    """The LSH buckets holding two or more rows: bucket `k` is `rows[starts[k]:starts[k] + sizes[k]]`
    (int32 row ids, in no particular order within a bucket; buckets in no particular order)."""

    rows: np.ndarray
    starts: np.ndarray
    sizes: np.ndarray

    def of_rows(self) -> dict[int, np.ndarray]:
        """Row -> the buckets it is in."""
        bucket_of = np.repeat(np.arange(len(self.sizes), dtype=np.int64), self.sizes)
        order = np.argsort(self.rows, kind="stable")
        rows, bucket_of = self.rows[order], bucket_of[order]
        starts = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1]))) if len(rows) else np.zeros(0, np.int64)
        return dict(zip(rows[starts].tolist(), np.split(bucket_of, starts[1:])))

    def select(self, chosen: np.ndarray) -> Buckets:
        """Only the buckets `k` where `chosen[k]`."""
        sizes = self.sizes[chosen]
        slots = np.repeat(self.starts[chosen] - (np.cumsum(sizes) - sizes), sizes) + np.arange(int(sizes.sum()))
        return Buckets(self.rows[slots], np.cumsum(sizes) - sizes, sizes)


def lsh_buckets(band_hashes: np.ndarray, rows: np.ndarray | None = None) -> Buckets:
    """Group `rows` (all rows when None) by their key in every band, one band at a time: keys are
    salted per band, so buckets never cross bands, and the transient arrays are one band's
    (at 1M rows and 18 bands, 18x smaller than sorting all bands at once). With 100k rows or
    more, two bands are sorted at a time in threads (numpy's sort releases the GIL)."""
    count, bands = band_hashes.shape
    rows = np.arange(count, dtype=np.int32) if rows is None else rows.astype(np.int32)

    def band_buckets(band: int) -> tuple[np.ndarray, np.ndarray] | None:
        order, keys = sort_keys(band_hashes[rows, band])
        run_starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        run_sizes = np.diff(np.concatenate((run_starts, [len(keys)])))
        shared = run_sizes > 1
        if not shared.any():
            return None
        sizes = run_sizes[shared]
        slots = np.repeat(run_starts[shared] - (np.cumsum(sizes) - sizes), sizes) + np.arange(int(sizes.sum()))
        return rows[order[slots]], sizes

    if len(rows) < 2:
        found = []
    elif len(rows) >= THREADED_BUCKET_ROWS:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2, thread_name_prefix="curate-bands") as pool:
            found = [part for part in pool.map(band_buckets, range(bands)) if part is not None]
    else:
        found = [part for part in map(band_buckets, range(bands)) if part is not None]
    if not found:
        return Buckets(np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0, np.int64))
    sizes = np.concatenate([sizes for _, sizes in found])
    return Buckets(np.concatenate([members for members, _ in found]), np.cumsum(sizes) - sizes, sizes)


#: Rows from which `lsh_buckets` sorts two bands at a time.
THREADED_BUCKET_ROWS = 100_000


def sort_keys(keys: np.ndarray, stable: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(order, keys[order]) for uint64 keys, equal keys in no particular order unless `stable`
    (pairs are put in (earlier, later) order later; a stable argsort is ~2x slower). numpy sorts
    plain uint64 values ~3x faster than it argsorts them, so each key's position replaces its low
    bits and the packed values are sorted: equal keys then come in position order, as a stable
    sort puts them. Exact: keys that differ only in those bits (about 1 band in 10 at 1M rows)
    would land in one run, so such keys are argsorted instead."""
    bits = np.uint64(max(int(len(keys) - 1).bit_length(), 1))
    low = (np.uint64(1) << bits) - np.uint64(1)
    packed = np.sort((keys & ~low) | np.arange(len(keys), dtype=np.uint64))
    order = (packed & low).astype(np.int64)
    ordered = keys[order]
    prefix = packed >> bits
    if np.any((prefix[1:] == prefix[:-1]) & (ordered[1:] != ordered[:-1])):
        order = np.argsort(keys, kind="stable" if stable else None)
        return order, keys[order]
    return order, ordered


def bucket_pairs(buckets: Buckets, width: int) -> np.ndarray:
    """Every pair within every bucket, unique, as (i < j)."""
    pairs = [_pairs_in_buckets(buckets, size) for size in np.unique(buckets.sizes)]
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64)
    return _unique_pairs(np.concatenate(pairs), width)


def _pairs_in_buckets(buckets: Buckets, size: int) -> np.ndarray:
    """All pairs within every bucket of exactly `size` members, as (earlier, later)."""
    members = np.sort(buckets.rows[buckets.starts[buckets.sizes == size][:, None] + np.arange(size)[None, :]], axis=1).astype(np.int64)
    index_pairs = np.array(list(combinations(range(size), 2)), dtype=np.int64)
    return np.stack([members[:, index_pairs[:, 0]].reshape(-1), members[:, index_pairs[:, 1]].reshape(-1)], axis=1)


def query_pairs(query_bands: np.ndarray, index_bands: np.ndarray) -> np.ndarray:
    """(k, 2) pairs (query row, index row) sharing a bucket in some band: LSH queries, vectorized."""
    found = []
    for band in range(index_bands.shape[1]):
        order = np.argsort(index_bands[:, band], kind="stable")
        sorted_keys = index_bands[order, band]
        left = np.searchsorted(sorted_keys, query_bands[:, band], side="left")
        right = np.searchsorted(sorted_keys, query_bands[:, band], side="right")
        hits = np.flatnonzero(right > left)
        for extra in range(int((right - left)[hits].max()) if len(hits) else 0):
            more = hits[left[hits] + extra < right[hits]]
            found.append(np.stack([more, order[left[more] + extra]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    return _unique_pairs(np.concatenate(found).astype(np.int64), len(index_bands))


def _unique_pairs(pairs: np.ndarray, width: int) -> np.ndarray:
    """Sorted unique rows of a (k, 2) pair array (encoded as one int64 each: faster than axis=0)."""
    codes = sorted_unique(pairs[:, 0] * width + pairs[:, 1])
    return np.stack([codes // width, codes % width], axis=1)
