"""numba kernels for large inputs: the words of ASCII text, keys of word sequences, shingle
sets, MinHash signatures, LSH band keys and the shared shingles of pairs.

Each kernel computes, row by row in one pass over memory, exactly what the numpy code in
`curate.text.normalize`, `curate.text.shingles` and `curate.text.minhash` computes as
whole-array operations (the same integer arithmetic, wrapping the same way; tests compare the
two on every edge case).
numpy's version makes a full temporary array per step (a gather and a multiply per word of
a shingle, a (perms, shingles) product per chunk); here a shingle's words and a signature's
128 minima stay in registers. Kernels are `nogil`, so callers split the rows over threads.

A lint runs them compiled ahead of time (`curate.text.aot` builds an extension module of
this code once, in a child process), so it never starts numba. This module imports numba
(about 0.4 s, more on the first run while the kernels compile into numba's on-disk cache):
a lint imports it only where the module cannot be built, through `compiled_kernels`, for inputs
large enough to repay that (COMPILED_MIN_SHINGLES in `curate.text.shingles`); a built module
runs on inputs of any size.
"""

from __future__ import annotations

import numba
import numpy as np


#: Whether the compiled kernels are kept in numba's on-disk cache. numba writes them to the
#: package's `__pycache__` when it can, else to the user's cache folder (`NUMBA_CACHE_DIR` picks
#: another); with neither writable, every run would compile them again (seconds), so
#: `curate.text.shingles.compiled_kernels` then keeps to numpy.
CACHED = True


def _jit(function):
    """`numba.njit(nogil=True)`, cached on disk (see CACHED)."""
    global CACHED
    try:
        return numba.njit(nogil=True, cache=True)(function)
    except RuntimeError:  # numba found no writable cache folder
        CACHED = False
        return numba.njit(nogil=True)(function)


_ROLL = np.uint64(0x9E3779B97F4A7C15)
_FNV = np.uint64(0x100000001B3)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S32 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(32)
_LOW32 = np.uint64(0xFFFFFFFF)
_F1 = np.uint32(0x85EBCA6B)
_F2 = np.uint32(0xC2B2AE35)
_T16, _T13 = np.uint32(16), np.uint32(13)
_MAX32 = np.uint32(0xFFFFFFFF)


@_jit
def _mix64(value):
    value = value ^ (value >> _S30)
    value = value * _M1
    value = value ^ (value >> _S27)
    value = value * _M2
    return value ^ (value >> _S31)


@_jit
def _fmix32(value):
    value = value ^ (value >> _T16)
    value = np.uint32(value * _F1)
    value = value ^ (value >> _T13)
    value = np.uint32(value * _F2)
    return value ^ (value >> _T16)


#: Insertion steps per value after the bucket pass beyond which a row is heap-sorted instead:
#: hashes spread evenly, so a row needs about one step per value; crafted ones cannot cost more than this.
SORT_STEPS_PER_VALUE = 8


@_jit
def shingle_sets_into(word_hashes, word_starts, counts, size, first_row, end_row, values, value_start, per_row):
    """Sorted unique 32-bit shingle hashes of rows `first_row:end_row`, written from
    `values[value_start]` on, row after row; `per_row[row]` gets each row's count. Returns
    the end of what was written. A shingle is the rolled hash of `size` words (all the words
    of a non-empty row shorter than that), mixed with splitmix64 and folded to 32 bits."""
    raw = np.empty(0, dtype=np.uint32)
    histogram = np.zeros(0, dtype=np.int64)
    at = value_start
    for row in range(first_row, end_row):
        count = counts[row]
        if count == 0:
            per_row[row] = 0
            continue
        start = word_starts[row]
        length = size if count >= size else count
        shingles = count - size + 1 if count >= size else 1
        if len(raw) < shingles:
            raw = np.empty(max(2 * len(raw), shingles), dtype=np.uint32)
        for index in range(shingles):
            rolled = word_hashes[start + index]
            for offset in range(1, length):
                rolled = rolled * _ROLL + word_hashes[start + index + offset]
            mixed = _mix64(rolled)
            raw[index] = np.uint32((mixed ^ (mixed >> _S32)) & _LOW32)
        bits = 0
        while (1 << bits) < shingles:
            bits += 1
        if len(histogram) < (1 << bits) + 1:
            histogram = np.zeros((1 << bits) + 1, dtype=np.int64)
        row_values = values[at : at + shingles]
        _bucket_sort(raw[:shingles], bits, histogram, row_values)
        kept = 1
        for index in range(1, shingles):
            if row_values[index] != row_values[kept - 1]:
                row_values[kept] = row_values[index]
                kept += 1
        per_row[row] = kept
        at += kept
    return at


@_jit
def _bucket_sort(source, bits, histogram, out):
    """Sort `source` into `out`: scatter by the top `bits` bits (2**bits >= len: about one hash
    per bucket), then insertion-sort the nearly sorted result; heapsort where that takes more
    than SORT_STEPS_PER_VALUE steps per value, so the cost stays O(n log n) on any input.
    Returns whether it fell back to the heapsort."""
    count = len(source)
    buckets = 1 << bits
    shift = np.uint32(32 - bits) if bits > 0 else np.uint32(31)
    histogram[: buckets + 1] = 0
    if bits == 0:  # one value
        out[0] = source[0]
        return False
    for index in range(count):
        histogram[(source[index] >> shift) + 1] += 1
    for bucket in range(buckets):
        histogram[bucket + 1] += histogram[bucket]
    for index in range(count):
        bucket = source[index] >> shift
        out[histogram[bucket]] = source[index]
        histogram[bucket] += 1
    budget = SORT_STEPS_PER_VALUE * count
    for index in range(1, count):
        value = out[index]
        slot = index
        while slot > 0 and out[slot - 1] > value:
            out[slot] = out[slot - 1]
            slot -= 1
        out[slot] = value
        budget -= index - slot
        if budget < 0:
            _heapsort(out)
            return True
    return False


@_jit
def _heapsort(values):
    """In-place heapsort: O(n log n) whatever the input."""
    count = len(values)
    for root in range(count // 2 - 1, -1, -1):
        _sift_down(values, root, count)
    for end in range(count - 1, 0, -1):
        values[0], values[end] = values[end], values[0]
        _sift_down(values, 0, end)


@_jit
def _sift_down(values, root, end):
    while True:
        child = 2 * root + 1
        if child >= end:
            return
        if child + 1 < end and values[child + 1] > values[child]:
            child += 1
        if values[root] >= values[child]:
            return
        values[root], values[child] = values[child], values[root]
        root = child


@_jit
def _row_minima(values, start, count, a, b, minima):
    """The MinHash signature of one row's shingles into `minima`: per permutation, the least
    `a * fmix32(h) + b mod 2**32` (datasketch's affine32 scheme). Four shingles per pass over
    the permutations: `minima` is loaded and stored a quarter as often (2x faster)."""
    minima[:] = _MAX32
    index, end = start, start + count
    while index + 4 <= end:
        first, second = _fmix32(values[index]), _fmix32(values[index + 1])
        third, fourth = _fmix32(values[index + 2]), _fmix32(values[index + 3])
        for perm in range(len(a)):
            multiplier, offset = a[perm], b[perm]
            low = min(np.uint32(multiplier * first + offset), np.uint32(multiplier * second + offset))
            high = min(np.uint32(multiplier * third + offset), np.uint32(multiplier * fourth + offset))
            minima[perm] = min(minima[perm], min(low, high))
        index += 4
    while index < end:
        mixed = _fmix32(values[index])
        for perm in range(len(a)):
            minima[perm] = min(minima[perm], np.uint32(a[perm] * mixed + b[perm]))
        index += 1


@_jit
def signatures_into(values, starts, counts, a, b, first_row, end_row, out):
    """Signatures of rows `first_row:end_row` into the rows of `out` (rows, num_perm)."""
    for row in range(first_row, end_row):
        _row_minima(values, starts[row], counts[row], a, b, out[row])


@_jit
def band_keys_into(values, starts, counts, a, b, rows_per_band, salts, first_row, end_row, out):
    """LSH band keys of rows `first_row:end_row` into `out` (rows, bands), without keeping the
    signatures: each band's values rolled into a mixed 64-bit hash, salted with the band."""
    minima = np.empty(len(a), dtype=np.uint32)
    for row in range(first_row, end_row):
        _row_minima(values, starts[row], counts[row], a, b, minima)
        for band in range(len(salts)):
            rolled = np.uint64(0)
            for column in range(band * rows_per_band, (band + 1) * rows_per_band):
                rolled = _mix64(rolled * _FNV + np.uint64(minima[column]))
            out[row, band] = rolled ^ salts[band]


@_jit
def ascii_words_into(data, text_starts, text_lengths, is_word, values, offsets, counts):
    """The words of ASCII texts (runs of bytes `b` with `is_word[b]` 1) in one pass: text `i` is
    `data[text_starts[i]:text_starts[i] + text_lengths[i]]`; the words' bytes go to `values`, one
    word after the other, word `k` ending at `offsets[k + 1]` (`offsets[0]` is 0); `counts[i]`
    gets text `i`'s number of words. Returns (words, bytes) written. Branch-free per byte (a word
    ends every ~6 bytes, too often for the branch predictor): every byte is stored, and kept by
    moving on only past word bytes; the current word's end is stored at every byte, and kept by
    moving on only where a word ends."""
    words = 0
    written = 0
    offsets[0] = 0
    for text in range(len(text_starts)):
        first = words
        previous = 0
        for at in range(text_starts[text], text_starts[text] + text_lengths[text]):
            byte = data[at]
            word = is_word[byte]
            values[written] = byte
            written += word
            offsets[words + 1] = written
            words += previous & (1 - word)
            previous = word
        words += previous
        counts[text] = words - first
    return words, written


@_jit
def pair_shared_into(values, starts, counts, left, right, first_pair, end_pair, out):
    """How many values the two sets of each pair in `first_pair:end_pair` share (`out[k]` for
    sets `left[k]` and `right[k]`; set `i` is `values[starts[i]:starts[i] + counts[i]]`, sorted
    and unique): one merge of the two sets, branch-free (which side moves on is a 0/1 sum)."""
    for pair in range(first_pair, end_pair):
        at, other = starts[left[pair]], starts[right[pair]]
        end, other_end = at + counts[left[pair]], other + counts[right[pair]]
        shared = 0
        while at < end and other < other_end:
            mine, theirs = values[at], values[other]
            shared += mine == theirs
            at += mine <= theirs
            other += theirs <= mine
        out[pair] = shared


@_jit
def sequence_sums_into(hashes, counts, weights, out):
    """Each run's sum of its elements times the weight of their position, wrapping as numpy's
    uint64 arithmetic does (`curate.text.rows.sequence_keys`): run `i` is the next `counts[i]`
    of `hashes`, and `out[i]` gets its sum. One pass, where numpy builds four arrays of the
    elements' size (positions, their weights, the products, the running sums)."""
    at = 0
    for run in range(len(counts)):
        total = np.uint64(0)
        for offset in range(counts[run]):
            total += hashes[at + offset] * weights[offset]
        at += counts[run]
        out[run] = total


def warm_up() -> None:
    """Load (or, on the first run, compile) every kernel for the argument types callers pass."""
    counts = np.array([3, 1], dtype=np.int64)
    starts = np.cumsum(counts) - counts
    values = np.zeros(3, dtype=np.uint32)
    per_row = np.zeros(2, dtype=np.int64)
    shingle_sets_into(np.arange(4, dtype=np.uint64), starts, counts, 2, 0, 2, values, 0, per_row)
    value_starts = np.cumsum(per_row) - per_row
    a = b = np.ones(4, dtype=np.uint32)
    signatures_into(values, value_starts, per_row, a, b, 0, 2, np.zeros((2, 4), dtype=np.uint32))
    band_keys_into(values, value_starts, per_row, a, b, 2, np.ones(2, dtype=np.uint64), 0, 2, np.zeros((2, 2), dtype=np.uint64))
    text = np.frombuffer(b"hi you", dtype=np.uint8)
    ascii_words_into(text, np.zeros(1, np.int64), np.array([6]), np.ones(256, np.uint8), np.empty(6, np.uint8), np.empty(4, np.int64), np.empty(1, np.int64))
    pairs = np.zeros(1, dtype=np.int64)
    pair_shared_into(values, value_starts, per_row, pairs, pairs + 1, 0, 1, np.zeros(1, dtype=np.int64))
    sequence_sums_into(np.arange(4, dtype=np.uint64), counts, np.ones(3, dtype=np.uint64), np.zeros(2, dtype=np.uint64))
