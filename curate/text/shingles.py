"""Word tokens, word shingles and hashed n-grams for many rows at once.

Everything here works on a *flat* layout: all words of all rows in one array,
plus per-row offsets, so hashing a batch is a handful of numpy operations
instead of a Python loop per shingle. A shingle (or n-gram, the same thing) of
`size` words is hashed by rolling the 64-bit word hashes, then mixing with the
splitmix64 finalizer so that neighbouring shingles do not share low bits.
`row_shingle_sets` hands large inputs to a numba kernel (`compiled_kernels`) that gives the
same bits.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from curate.io import usable_cores
from curate.text.normalize import words_expr

if TYPE_CHECKING:
    import polars as pl

#: Seeds of polars' word hash; fixed so a run's hashes are reproducible.
_WORD_SEED = 0x5EED_C0DE
_ROLL = np.uint64(0x9E3779B97F4A7C15)


@dataclass(frozen=True, slots=True)
class Tokens:
    """The words of many texts, flattened: text `i` owns `hashes[starts[i]:starts[i] + counts[i]]`.

    `words` holds the word strings; when `word_index` is set, word `k` of the
    flat layout is `words[word_index[k]]` (a selection of a larger token set,
    gathered only for the few texts a rule quotes)."""

    words: pl.Series
    hashes: np.ndarray  # uint64, one per word
    counts: np.ndarray  # int64, words per text
    word_index: np.ndarray | None = None

    @property
    def starts(self) -> np.ndarray:
        return np.cumsum(self.counts) - self.counts

    def words_of(self, text_index: int) -> list[str]:
        start = int(self.starts[text_index])
        stop = start + int(self.counts[text_index])
        if self.word_index is None:
            return self.words.slice(start, stop - start).to_list()
        return self.words.gather(self.word_index[start:stop]).to_list()


def tokenize(texts: pl.Series) -> Tokens:
    """Normalize and cut every text into words, and hash each word (one polars pass)."""
    import polars as pl

    return tokens_of_lists(pl.select(words_expr(pl.lit(texts.fill_null(""))).alias("w")).to_series())


def tokens_of_lists(lists: pl.Series) -> Tokens:
    """Tokens from a polars list-of-words column (one list per text)."""
    return tokens_of_words(lists.explode().drop_nulls(), lists.list.len().fill_null(0).to_numpy().astype(np.int64))


def tokens_of_words(flat: pl.Series, counts: np.ndarray) -> Tokens:
    """Tokens from the words of many texts, flat in text order, and the number of words of each text."""
    return Tokens(flat, flat.hash(seed=_WORD_SEED).to_numpy(), counts)


def hash_words(tokens: list[str]) -> np.ndarray:
    """Hash a list of words exactly as `tokenize` does (for scalar callers and tests)."""
    import polars as pl

    return pl.Series(tokens, dtype=pl.String).hash(seed=_WORD_SEED).to_numpy()


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """`np.unique` by sorting: numpy 2's hash-based unique is ~20x slower on large integer arrays."""
    ordered = np.sort(values)
    if len(ordered) < 2:
        return ordered
    return ordered[np.concatenate(([True], ordered[1:] != ordered[:-1]))]


def mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: a bijection that spreads every input bit over the output."""
    values = values ^ (values >> np.uint64(30))
    values = values * np.uint64(0xBF58476D1CE4E5B9)
    values = values ^ (values >> np.uint64(27))
    values = values * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def fold32(values: np.ndarray) -> np.ndarray:
    """64-bit hashes folded to 32 bits (the input width of datasketch's default MinHash scheme)."""
    return (values ^ (values >> np.uint64(32))).astype(np.uint32)


def shingles_per_text(counts: np.ndarray, size: int) -> np.ndarray:
    """Shingles of `size` words in texts of `counts` words (one for a non-empty text shorter than that)."""
    return np.where(counts >= size, counts - size + 1, np.minimum(counts, 1)).astype(np.int64)


def shingle_hashes(word_hashes: np.ndarray, counts: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Hash every run of `size` consecutive words within each text.

    Returns (hashes uint64, shingles per text). A non-empty text shorter than
    `size` words yields one shingle of all its words, so short rows still compare.
    """
    per_text = shingles_per_text(counts, size)
    if len(word_hashes) == 0:
        return np.zeros(0, np.uint64), per_text
    text_starts = np.cumsum(counts) - counts
    # Index of the first word of every shingle, text by text.
    shingle_offsets = np.arange(int(per_text.sum()), dtype=np.int64) - np.repeat(np.cumsum(per_text) - per_text, per_text)
    first_word = np.repeat(text_starts, per_text) + shingle_offsets
    full = np.repeat(counts >= size, per_text)
    rolled = np.empty(len(first_word), dtype=np.uint64)
    rolled[full] = _roll(word_hashes, first_word[full], np.full(int(full.sum()), size))
    if not full.all():  # texts shorter than `size`: one shingle of all their words
        rolled[~full] = _roll(word_hashes, first_word[~full], counts[(counts > 0) & (counts < size)])
    return mix64(rolled), per_text


def _roll(word_hashes: np.ndarray, first_word: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Polynomial rolling hash of `lengths[i]` words from `first_word[i]` (gathers only, no masks
    for the common case where every run has the same length)."""
    rolled = word_hashes[first_word]
    longest = int(lengths.max()) if len(lengths) else 0
    uniform = bool(len(lengths)) and int(lengths.min()) == longest
    for offset in range(1, longest):
        if uniform:
            rolled = rolled * _ROLL + word_hashes[first_word + offset]
        else:
            inside = offset < lengths
            following = word_hashes[np.where(inside, first_word + offset, first_word)]
            rolled = np.where(inside, rolled * _ROLL + following, rolled)
    return rolled


def unique_row_shingles(hashes32: np.ndarray, per_text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort and de-duplicate the shingles of each text (a set per row, as Jaccard needs).

    Returns (flat uint32 values grouped by text, values per text)."""
    row_ids = np.repeat(np.arange(len(per_text), dtype=np.uint64), per_text)
    keyed = sorted_unique((row_ids << np.uint64(32)) | hashes32.astype(np.uint64))
    rows = (keyed >> np.uint64(32)).astype(np.int64)
    return keyed.astype(np.uint32), np.bincount(rows, minlength=len(per_text)).astype(np.int64)


def row_shingle_sets(word_hashes: np.ndarray, counts: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The shingle set of every text (`shingle_hashes` folded to 32 bits, then `unique_row_shingles`):
    (flat uint32 values, sorted and unique per text, values per text). Large inputs go through
    the compiled kernel, in threads (same bits)."""
    per_text = shingles_per_text(counts, size)
    total = int(per_text.sum())
    kernels = compiled_kernels(total)
    if kernels is None:
        hashes, per_text = shingle_hashes(word_hashes, counts, size)
        return unique_row_shingles(fold32(hashes), per_text)
    word_hashes = np.ascontiguousarray(word_hashes, dtype=np.uint64)
    counts = np.ascontiguousarray(counts, dtype=np.int64)
    word_starts = np.cumsum(counts) - counts
    value_starts = np.cumsum(per_text) - per_text
    values = np.empty(total, dtype=np.uint32)
    per_row = np.empty(len(counts), dtype=np.int64)

    def part(first: int, end: int) -> tuple[int, int]:
        at = int(value_starts[first]) if first < len(counts) else total
        return at, kernels.shingle_sets_into(word_hashes, word_starts, counts, size, first, end, values, at, per_row)

    parts = in_threads(part, per_text)
    if len(parts) == 1:
        return values[: parts[0][1]].copy(), per_row
    return np.concatenate([values[at:end] for at, end in parts]), per_row


#: Once a process has worked on this many shingles (each stage of a batch counts them), its input
#: is large and the compiled kernels run (`curate.text.kernels`, built ahead of time by
#: `curate.text.aot`) even if they must be had first: the first such lint on a machine builds them
#: (~9 s, once), and where they cannot be built numba's JIT starts (~0.4 s of CPU, which numpy
#: spends on ~2M shingles; a 5k-row batch of chat rows has ~0.4M, 100k rows ~8M). Below it, a
#: lint (1k rows: ~80k shingles) runs the kernels only where they are built already
#: (SMALL_INPUTS_USE_BUILT_KERNELS), else numpy. Both paths give the same bits.
COMPILED_MIN_SHINGLES = 1_000_000
#: Whether an input below COMPILED_MIN_SHINGLES runs the kernels when they are built already: they
#: load in under a millisecond and took ~20 ms off a 1k-row lint's ~0.2 s. False keeps it in numpy
#: (tests compare the two paths).
SMALL_INPUTS_USE_BUILT_KERNELS = True
_shingles_seen = 0


def compiled_kernels(shingles: int) -> ModuleType | None:
    """The compiled kernels for a call over `shingles` shingles, or None: use numpy. Until this
    process has seen COMPILED_MIN_SHINGLES (counting this call), only the ahead-of-time module
    that is built already (`_built_kernels`); from then on whatever `_load_kernels` can have."""
    global _shingles_seen
    _shingles_seen += shingles
    if _shingles_seen < COMPILED_MIN_SHINGLES:
        return _built_kernels() if SMALL_INPUTS_USE_BUILT_KERNELS else None
    return _load_kernels()


@cache
def _built_kernels() -> ModuleType | None:
    """The kernels compiled ahead of time where they are built already (`curate.text.aot`: never
    builds them, never starts numba), else None."""
    from curate.text import aot

    return aot.load(build=False)


@cache
def _load_kernels() -> ModuleType | None:
    """The kernels compiled ahead of time (`curate.text.aot`: loaded in under a millisecond, built
    first if need be, once), else numba's JIT kernels (`jit_kernels`)."""
    from curate.text import aot

    return _built_kernels() or aot.load() or jit_kernels()


def jit_kernels() -> ModuleType | None:
    """Import the kernels and start numba. numba's first compile or cache load probes for a
    BLAS by importing scipy (0.3-0.7 s, whenever scipy is installed); the kernels use no BLAS, so
    scipy is hidden from that probe when nothing has imported it yet."""
    hidden = "scipy" not in sys.modules
    if hidden:
        sys.modules["scipy"] = None  # type: ignore[assignment]  # `import scipy` raises ImportError
    try:
        from curate.text import kernels

        kernels.warm_up()
    except ImportError:
        return None
    finally:
        if hidden:
            del sys.modules["scipy"]
    return kernels if kernels.CACHED else None


#: Work (shingles) below which a kernel call is not split over threads.
THREAD_MIN_SHINGLES = 200_000
_Result = TypeVar("_Result")


def in_threads(work: Callable[[int, int], _Result], weights: np.ndarray) -> list[_Result]:
    """`work(first_row, end_row)` over consecutive row ranges of about equal total `weights`, one
    per available core, in threads (the kernels release the GIL); results in row order."""
    total = int(weights.sum())
    parts = max(1, min(usable_cores(), total // THREAD_MIN_SHINGLES, len(weights)))
    if parts == 1:
        return [work(0, len(weights))]
    from concurrent.futures import ThreadPoolExecutor

    cuts = np.searchsorted(np.cumsum(weights), np.arange(1, parts) * total / parts).tolist()
    bounds = list(zip([0, *cuts], [*cuts, len(weights)]))
    with ThreadPoolExecutor(parts) as pool:
        return list(pool.map(lambda bound: work(*bound), bounds))


def member_of(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """`np.isin(values, keys)` through polars' hash-set membership: ~8x faster than numpy's
    sort-based isin (or a binary search) for millions of hashes against a large key set."""
    import polars as pl

    return pl.Series(values).is_in(pl.Series(keys).implode()).to_numpy()


def exact_jaccard(first: np.ndarray, second: np.ndarray) -> float:
    """Jaccard similarity of two sorted unique shingle arrays."""
    if len(first) == 0 and len(second) == 0:
        return 1.0
    shared = len(np.intersect1d(first, second, assume_unique=True))
    return shared / (len(first) + len(second) - shared)


#: Pairs scored per sort in `pair_jaccards`: bounds its transient memory (each pair gathers both sets).
PAIR_CHUNK = 16_384


def pair_jaccards(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Exact Jaccard of many pairs of sorted unique shingle sets at once (float64 per pair); set
    `i` is `values[starts[i]:starts[i] + counts[i]]`. The compiled kernels merge each pair's two
    sets (`merged_pair_jaccards`); numpy sorts them together (`_sorted_pair_jaccards`): one sort for
    all pairs instead of one `intersect1d` per pair. Both give the same floats."""
    if len(pairs) == 0:
        return np.zeros(0, dtype=np.float64)
    merged = merged_pair_jaccards(values, starts, counts, pairs[:, 0], pairs[:, 1])
    return merged if merged is not None else _sorted_pair_jaccards(values, starts, counts, pairs)


def merged_pair_jaccards(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray | None:
    """Jaccard of sets `left[k]` and `right[k]` by the compiled merge (`pair_shared_into`, split over
    threads; at 1M rows ~10x the numpy sort), or None where the kernels do not run."""
    if values.dtype != np.uint32 or not values.flags.c_contiguous:
        return None
    lengths = counts[left] + counts[right]
    kernels = compiled_kernels(int(lengths.sum()))
    if kernels is None:
        return None
    left, right = (np.ascontiguousarray(side, dtype=np.int64) for side in (left, right))  # the kernel's argument types
    counts, starts, lengths = (np.ascontiguousarray(array, dtype=np.int64) for array in (counts, starts, lengths))
    shared = np.empty(len(left), dtype=np.int64)
    in_threads(lambda first, end: kernels.pair_shared_into(values, starts, counts, left, right, first, end, shared), lengths)
    return jaccards_of(shared, lengths - shared)


def jaccards_of(shared: np.ndarray, union: np.ndarray) -> np.ndarray:
    """`shared / union` per pair of sets, and 1.0 for two empty sets."""
    return np.where(union > 0, shared / np.maximum(union, 1), 1.0)


def _sorted_pair_jaccards(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """`pair_jaccards` in numpy: both sets of every pair are tagged with the pair's number and
    sorted together; a value seen twice in a row is shared."""
    if len(pairs) > PAIR_CHUNK:  # the gathered sets of all pairs at once were ~300 MB at 1M rows
        return np.concatenate([_sorted_pair_jaccards(values, starts, counts, pairs[at : at + PAIR_CHUNK]) for at in range(0, len(pairs), PAIR_CHUNK)])
    left, right = pairs[:, 0], pairs[:, 1]
    lengths = np.stack([counts[left], counts[right]], axis=1).reshape(-1)
    firsts = np.stack([starts[left], starts[right]], axis=1).reshape(-1)
    gathered = values[np.repeat(firsts - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum()))]
    pair_of = np.repeat(np.arange(len(pairs), dtype=np.uint64), lengths.reshape(-1, 2).sum(axis=1))
    keyed = np.sort((pair_of << np.uint64(32)) | gathered.astype(np.uint64))
    repeated = keyed[1:] == keyed[:-1]
    shared = np.bincount((keyed[1:][repeated] >> np.uint64(32)).astype(np.int64), minlength=len(pairs))
    return jaccards_of(shared, counts[left] + counts[right] - shared)


def gather_sets(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The sets of `rows` (set `i` is `values[starts[i]:starts[i] + counts[i]]`), flat, in the order given."""
    lengths = counts[rows]
    return values[np.repeat(starts[rows] - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum()))]


#: Rows sampled to find shingle candidates for `common_shingles` (their share is then counted exactly).
COMMON_SAMPLE_ROWS = 2_000


def common_shingles(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """Sorted shingles found in at least `share` of the rows (each row's set is `values[starts[i]:][:counts[i]]`).

    A sample of rows names the candidates (those in at least half the share
    there), then their share over every row is counted exactly, so the cost on
    data without boilerplate is one small sort."""
    rows = len(counts)
    if rows == 0 or share > 1.0:
        return np.zeros(0, dtype=values.dtype)
    if rows <= COMMON_SAMPLE_ROWS:  # every row: what the sorted sample would be, without importing numpy.random
        sample = np.arange(rows)
    else:
        sample = np.sort(np.random.default_rng(seed).choice(rows, size=COMMON_SAMPLE_ROWS, replace=False))
    candidates, seen = _value_counts(gather_sets(values, starts, counts, sample))
    candidates = candidates[seen >= share * len(sample) / 2]
    if len(candidates) == 0:
        return candidates
    found, in_rows = _value_counts(values[member_of(values, candidates)])
    return found[in_rows >= share * rows]


def _value_counts(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values (sorted) and how often each occurs."""
    ordered = np.sort(values)
    if len(ordered) == 0:
        return ordered, np.zeros(0, dtype=np.int64)
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
    return ordered[starts], np.diff(np.concatenate((starts, [len(ordered)])))


def drop_shingles(values: np.ndarray, counts: np.ndarray, dropped: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Remove the `dropped` shingles from every row's set, except from rows made only of them
    (nothing else tells those apart). Returns (values, counts, shingles removed per row)."""
    hit = member_of(values, dropped)
    row_of = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    removed = np.bincount(row_of[hit], minlength=len(counts)).astype(np.int64)
    removed[removed == counts] = 0  # a row of boilerplate only keeps its shingles
    keep = ~hit | (removed[row_of] == 0)
    return values[keep], counts - removed, removed


def jaccards_with(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, one: int, others: np.ndarray) -> np.ndarray:
    """Exact Jaccard of set `one` with each of the sets `others` (the layout of `pair_jaccards`):
    the compiled merge of `merged_pair_jaccards` where the kernels run, else a binary search of the
    others' shingles in the one sorted set, no sort."""
    if len(others) == 0:
        return np.zeros(0, dtype=np.float64)
    merged = merged_pair_jaccards(values, starts, counts, np.full(len(others), one, dtype=np.int64), others)
    if merged is not None:
        return merged
    mine = values[starts[one] : starts[one] + counts[one]]
    lengths = counts[others]
    gathered = gather_sets(values, starts, counts, others)
    found = np.searchsorted(mine, gathered)
    hit = mine[np.minimum(found, max(len(mine) - 1, 0))] == gathered if len(mine) else np.zeros(len(gathered), dtype=bool)
    shared = np.bincount(np.repeat(np.arange(len(others)), lengths)[hit], minlength=len(others))
    return jaccards_of(shared, len(mine) + lengths - shared)
