"""Duplicate detection: recall on planted near-copies, no false positives on look-alikes,
and agreement of the vectorized MinHash/LSH with datasketch."""

from __future__ import annotations

import json
import random

import numpy as np
import polars as pl
import pytest

from curate.text.diff import CompareMode, compare_messages
from curate.text.minhash import KNOWN_OPTIMAL_BANDS, LshBands, MinHasher, affine32_permutations, bucket_pairs, computed_optimal_bands, lsh_buckets, optimal_bands, query_pairs
from curate.text.normalize import words, words_expr
from curate.text.shingles import fold32, row_shingle_sets, shingle_hashes, tokenize, unique_row_shingles
from tests.conftest import SAMPLES, lint_rows


def clean_rows() -> list[dict]:
    """240 distinct, realistic support conversations (the shipped clean sample)."""
    return [json.loads(line) for line in (SAMPLES / "clean-chat.jsonl").read_text(encoding="utf-8").splitlines()]


def edit_once(text: str, rng: random.Random) -> str:
    """One paraphrase-like edit: drop a word, repeat a word, change case, or add a comma."""
    tokens = text.split(" ")
    at = rng.randrange(len(tokens))
    kind = rng.choice(["drop", "repeat", "case", "comma"])
    if kind == "drop" and len(tokens) > 1:
        del tokens[at]
    elif kind == "repeat":
        tokens.insert(at, tokens[at])
    elif kind == "case":
        tokens[at] = tokens[at].swapcase()
    else:
        tokens[at] = tokens[at] + ","
    return " ".join(tokens)


def planted_copy(row: dict, rng: random.Random) -> dict:
    messages = [dict(m) for m in row["messages"]]
    editable = [m for m in messages if m["role"] != "system"]
    for _ in range(rng.randint(1, 3)):
        target = rng.choice(editable)
        target["content"] = edit_once(target["content"], rng)
    return {"messages": messages}


def test_near_duplicate_recall_on_planted_edits(tmp_path):
    rng = random.Random(5)
    originals = clean_rows()
    chosen = rng.sample(range(len(originals)), 120)
    rows = originals + [planted_copy(originals[i], rng) for i in chosen]
    result = lint_rows(tmp_path, rows, select=["DU001", "DU002"])
    original_lines = set(range(1, len(originals) + 1))
    by_line = {f.line: f for f in result.findings}
    assert not original_lines & set(by_line), "an original row was reported as a duplicate"
    found = 0
    for offset, source in enumerate(chosen):
        finding = by_line.get(len(originals) + offset + 1)
        if finding is not None:
            assert finding.related[0].line == source + 1, finding.message  # points at its own original
            found += 1
    assert found / len(chosen) >= 0.95, f"recall {found}/{len(chosen)}"


def word_problem(rng: random.Random, name: str, numbers: tuple[int, int, int]) -> dict:
    templates = [
        "{n} has {a} {thing}. {p} gives {b} {thing} to a friend and buys {c} more at the market. How many {thing} does {p2} have now?",
        "{n} reads {a} pages on Monday and {b} pages on Tuesday. The book has {c} pages. How many pages does {p2} still have to read?",
        "A farmer named {n} plants {a} rows of {thing} with {b} plants in each row, and {c} plants die. How many plants are left?",
        "{n} saves {a} dollars a week for {b} weeks and then spends {c} dollars on {thing}. How much money does {p2} have left?",
    ]
    pronoun = rng.choice([("She", "she"), ("He", "he")])
    a, b, c = numbers
    text = rng.choice(templates).format(n=name, a=a, b=b, c=c, p=pronoun[0], p2=pronoun[1], thing=rng.choice(["apples", "marbles", "stickers", "books"]))
    return {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": f"The answer is {a + b - c}."}]}


def test_no_false_positives_on_look_alike_word_problems(tmp_path):
    rng = random.Random(11)
    names = ["Janet", "Marco", "Aiko", "Liam", "Fatima", "Olu", "Sofia", "Wei", "Ravi", "Ingrid"]
    seen: set[tuple[int, int, int]] = set()
    rows = []
    while len(rows) < 120:
        numbers = (rng.randint(5, 90), rng.randint(2, 40), rng.randint(1, 30))
        if numbers not in seen:
            seen.add(numbers)
            rows.append(word_problem(rng, rng.choice(names), numbers))
    result = lint_rows(tmp_path, rows, select=["DU"])
    assert result.findings == [], [f.message for f in result.findings[:5]]


def test_no_false_positives_on_distinct_conversations(tmp_path):
    result = lint_rows(tmp_path, clean_rows(), select=["DU"], rule_options={"DU002": {"numbers_must_match": False}})
    assert result.findings == [], [f.message for f in result.findings[:5]]


def test_cluster_points_at_first_row_across_files(tmp_path):
    from curate.engine.runner import run_lint
    from curate.engine.settings import LintRequest, plan_lint
    from tests.conftest import write_jsonl

    row = clean_rows()[0]
    copy = planted_copy(row, random.Random(1))
    first = write_jsonl(tmp_path / "a.jsonl", [clean_rows()[1], row])
    second = write_jsonl(tmp_path / "b.jsonl", [copy, row])
    result = run_lint(plan_lint(LintRequest(paths=[str(first), str(second)], isolated=True, select=["DU001", "DU002"])))
    by_code = {f.code: f for f in result.findings}
    assert set(by_code) == {"DU001", "DU002"}
    for finding in by_code.values():
        assert finding.path == str(second)
        assert (finding.related[0].path, finding.related[0].line) == (str(first), 2)
        assert {"path": str(first), "line": 2} == finding.data["cluster"][0]
        assert f"{first}:2" in finding.message


def random_texts(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    vocabulary = [f"w{i}" for i in range(300)]
    return [" ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 60))) for _ in range(count)]


def shingle_sets(texts: list[str], size: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """The shingle sets DU002 and the leakage rules compare (`row_shingle_sets`)."""
    tokens = tokenize(pl.Series(texts))
    return row_shingle_sets(tokens.hashes, tokens.counts, size)


def test_signatures_equal_datasketch_minhash():
    from datasketch import MinHash

    texts = random_texts(40, seed=3)
    values, counts = shingle_sets(texts)
    hasher = MinHasher(num_perm=64, seed=7)
    signatures = hasher.signatures(values, counts)
    starts = np.cumsum(counts) - counts
    for index, text in enumerate(texts):
        reference = MinHash(num_perm=64, seed=7, hashfunc=int)
        reference.update_batch(values[starts[index] : starts[index] + counts[index]].tolist())
        assert np.array_equal(reference.hashvalues, signatures[index])
        assert np.array_equal(values[starts[index] : starts[index] + counts[index]], shingle_sets([text])[0])  # alone = in a batch
    lean = [hasher.to_lean_minhash(signature) for signature in signatures[:2]]
    # DU002 screens large buckets with the share of equal values: datasketch's estimate.
    assert lean[0].jaccard(lean[1]) == pytest.approx(float(np.mean(signatures[0] == signatures[1])))


def test_signatures_do_not_depend_on_the_chunk_size(monkeypatch):
    """Rows are cut into chunks of about CHUNK_SHINGLES shingles: any chunk size gives the same bits."""
    import curate.text.minhash as minhash

    values, counts = shingle_sets(random_texts(300, seed=5))
    hasher = MinHasher(num_perm=128)
    whole = hasher.signatures(values, counts)
    for chunk in (1, 7, 100, 1 << 20):
        monkeypatch.setattr(minhash, "CHUNK_SHINGLES", chunk)
        assert np.array_equal(hasher.signatures(values, counts), whole), chunk


def test_lsh_buckets_of_a_subset_give_pairs_in_file_order():
    """Buckets are built band by band with an unstable sort; pairs still come out (earlier, later)
    and only among the rows asked for."""
    base = random_texts(50, seed=11)
    texts = [text for pair in zip(base, base) for text in pair]  # every text twice, the copy next to it
    values, counts = shingle_sets(texts)
    bands = LshBands(0.6, 128).hashes(MinHasher(num_perm=128).signatures(values, counts))
    every = bucket_pairs(lsh_buckets(bands), len(texts))
    assert {(2 * i, 2 * i + 1) for i in range(50)} <= set(map(tuple, every.tolist()))
    assert (every[:, 0] < every[:, 1]).all()
    subset = np.arange(0, len(texts), 2)[::-1]  # the first copies only, asked for in reverse order
    assert bucket_pairs(lsh_buckets(bands, subset), len(texts)).tolist() == [pair for pair in every.tolist() if pair[0] % 2 == 0 and pair[1] % 2 == 0]


def test_lsh_candidates_equal_datasketch_minhashlsh():
    from datasketch import MinHashLSH

    base = random_texts(60, seed=9)
    texts = base + [edit_once(text, random.Random(i)) for i, text in enumerate(base[:30])]
    values, counts = shingle_sets(texts)
    hasher = MinHasher(num_perm=128)
    signatures = hasher.signatures(values, counts)
    bands = LshBands(0.6, 128)
    ours = {tuple(pair) for pair in bucket_pairs(lsh_buckets(bands.hashes(signatures)), len(signatures)).tolist()}
    index = MinHashLSH(num_perm=128, params=(bands.bands, bands.rows))
    minhashes = [hasher.to_minhash(signature) for signature in signatures]
    for key, minhash in enumerate(minhashes):
        index.insert(key, minhash)
    theirs = {(min(i, j), max(i, j)) for i, minhash in enumerate(minhashes) for j in index.query(minhash) if i != j}
    assert ours == theirs
    assert len(ours) >= 30  # the planted edits are found
    queried = {tuple(pair) for pair in query_pairs(bands.hashes(signatures[60:]), bands.hashes(signatures[:60])).tolist()}
    assert queried == {(i - 60, j) for i in range(60, 90) for j in index.query(minhashes[i]) if j < 60}


def test_polars_normalization_agrees_with_python():
    samples = ["Héllo  WORLD,\tﬁne  ", "Ｆｕｌｌ width", "İstanbul ß and 3.5 apples", ""]
    frame = pl.DataFrame({"text": samples})
    assert frame.select(words_expr(pl.col("text"))).to_series().to_list() == [words(s) for s in samples]


def test_whitespace_collapse_equals_the_regex_replacement():
    from curate.text.rows import collapse_whitespace

    texts = ["one space only", "two  spaces", "tab\there", "line\nbreak\r\n", "nbsp\u00a0and em\u2003space", " lead", "trail ", "", "   ", "a \n b"]
    ours = collapse_whitespace(pl.Series(texts * 3)).to_list()
    assert ours == pl.Series(texts * 3).str.replace_all(r"\s+", " ").to_list()
    assert ours[1] == "two spaces" and ours[4] == "nbsp and em space"


def test_shingles_of_short_and_empty_texts():
    tokens = tokenize(pl.Series(["one", "", "a b c d"]))
    hashes, per_text = shingle_hashes(tokens.hashes, tokens.counts, 3)
    assert per_text.tolist() == [1, 0, 2]
    assert len(hashes) == 3


def test_word_spans_for_side_by_side_highlighting():
    first = "Hold the reset button for ten seconds."
    second = "hold the RESET button for 10 seconds, then wait"
    left, right = compare_messages([first], [second], CompareMode.DIFF)
    assert [first[a:b] for a, b in left.spans[0]] == ["ten"]
    assert [second[a:b] for a, b in right.spans[0]] == ["10", "then wait"]
    left, right = compare_messages([first], [second], CompareMode.OVERLAP)
    assert [first[a:b] for a, b in left.spans[0]] == ["Hold the reset button for"]
    assert [second[a:b] for a, b in right.spans[0]] == ["hold the RESET button for"]


@pytest.mark.parametrize(("num_perm", "seed"), [(16, 1), (128, 1), (128, 7), (256, 3)])
def test_permutations_equal_datasketch(num_perm, seed):
    from datasketch import MinHash

    expected_a, expected_b = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
    a, b = affine32_permutations(num_perm, seed)
    assert np.array_equal(a, expected_a) and np.array_equal(b, expected_b)


@pytest.mark.parametrize("num_perm", [64, 128])
def test_band_parameters_equal_datasketch(num_perm):
    from datasketch.lsh import _optimal_param

    thresholds = [round(0.3 + 0.05 * step, 2) for step in range(14)]
    assert [computed_optimal_bands(t, num_perm) for t in thresholds] == [_optimal_param(t, num_perm, 0.5, 0.5) for t in thresholds]
    assert [optimal_bands(t, num_perm) for t in thresholds] == [_optimal_param(t, num_perm, 0.5, 0.5) for t in thresholds]


@pytest.mark.parametrize(("threshold", "num_perm"), sorted(KNOWN_OPTIMAL_BANDS))
def test_known_band_parameters_are_what_datasketch_computes(threshold, num_perm):
    """The table that spares every lint the computation holds datasketch's answers, also for
    thresholds reached by subtraction (DU002 tunes its bands to 0.8 - 0.2)."""
    from datasketch.lsh import _optimal_param

    assert KNOWN_OPTIMAL_BANDS[(threshold, num_perm)] == _optimal_param(threshold, num_perm, 0.5, 0.5)
    assert optimal_bands(threshold + 1e-15, num_perm) == computed_optimal_bands(threshold + 1e-15, num_perm)



def test_pair_jaccards_equal_one_pair_at_a_time(monkeypatch):
    """The numpy path (its sort, in chunks, and the binary search of `jaccards_with`) against one
    `intersect1d` per pair; `test_compiled_pair_jaccards_equal_numpy` holds the kernels to it."""
    import curate.text.shingles as shingles
    from curate.text.shingles import exact_jaccard, jaccards_with, pair_jaccards

    monkeypatch.setattr(shingles, "COMPILED_MIN_SHINGLES", 10**18)
    monkeypatch.setattr(shingles, "SMALL_INPUTS_USE_BUILT_KERNELS", False)
    rng = np.random.default_rng(0)
    sets = [np.unique(rng.integers(0, 60, rng.integers(0, 40)).astype(np.uint32)) for _ in range(200)]
    counts = np.array([len(s) for s in sets])
    pairs = rng.integers(0, len(sets), (1000, 2))
    scores = pair_jaccards(np.concatenate(sets), np.cumsum(counts) - counts, counts, pairs)
    assert np.array_equal(scores, [exact_jaccard(sets[a], sets[b]) for a, b in pairs])
    monkeypatch.setattr(shingles, "PAIR_CHUNK", 7)  # many chunks, the last one short
    assert np.array_equal(pair_jaccards(np.concatenate(sets), np.cumsum(counts) - counts, counts, pairs), scores)
    values, starts = np.concatenate(sets), np.cumsum(counts) - counts
    for one in (0, 1, int(np.argmin(counts))):  # includes an empty set
        others = np.arange(len(sets))
        assert np.array_equal(jaccards_with(values, starts, counts, one, others), [exact_jaccard(sets[one], sets[b]) for b in others])


def test_drain_concatenate_equals_concatenate_and_empties_the_parts():
    from curate.rules.duplicates import drain_concatenate

    rng = np.random.default_rng(1)
    parts = [rng.integers(0, 1 << 60, (int(n), 3), dtype=np.uint64) for n in rng.integers(0, 50, 20)]
    expected = np.concatenate(parts)
    assert np.array_equal(drain_concatenate(parts, np.uint64), expected)
    assert parts == []
    assert drain_concatenate([], np.uint32).dtype == np.uint32


def test_a_huge_cluster_stays_linear_and_cut_in_data(lint):
    """3,000 copies of one row: one finding per copy, each naming a few lines and the cluster
    size, not the 3,000 locations (which would make the report quadratic)."""
    row = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help you today?"}]}
    near = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help you today, friend?"}]}
    result = lint([row] * 3000 + [near] * 3000, select=["DU001", "DU002"])
    exact = [f for f in result.findings if f.code == "DU001"]
    assert len(exact) == 2 * 2999  # every copy but the first of each group
    for finding in exact[:3] + exact[-3:]:
        assert len(finding.data["cluster"]) <= 50 and finding.data["cluster_size"] in (3000,)
        assert "more" in finding.message
    assert all(f.related[0].line in (1, 3001) for f in exact)
    near_findings = [f for f in result.findings if f.code == "DU002"]
    assert [(f.line, f.related[0].line) for f in near_findings] == [(3001, 1)]  # copies are DU001's


# The compiled kernels (curate.text.kernels, numba) that large inputs use must give the numpy
# path's bits exactly: every test below runs both paths on the same input and compares.

EDGE_TEXTS = [
    "",
    "one",
    "two words",
    "the the the the the the the the",  # every shingle the same
    "Héllo  WORLD,\tﬁne  Ｆｕｌｌ width İstanbul ß 3.5 apples",  # non-ASCII, odd whitespace
    'Search("weather in Paris") -> {"temp": 12} then Calculator(12 * 9 / 5 + 32)',  # a tool call
    "<noinput>",
    "   \n\t  ",
    "#### 72",
]


@pytest.fixture(params=["ahead-of-time", "jit"])
def kernels(request):
    """The compiled kernels, both builds: `curate.text.aot`'s extension module (what large inputs
    load) and numba's JIT dispatchers (what they fall back to)."""
    from curate.text import aot
    from curate.text.shingles import jit_kernels

    module = aot.load() if request.param == "ahead-of-time" else jit_kernels()
    assert module is not None, f"the {request.param} kernels did not load (numba and a C compiler are installed)"
    return module


def both_paths(monkeypatch, kernels, compute):
    """(numpy result, result with `kernels`) of `compute()`, the compiled one split over threads."""
    import curate.text.shingles as shingles

    monkeypatch.setattr(shingles, "COMPILED_MIN_SHINGLES", 10**18)
    monkeypatch.setattr(shingles, "SMALL_INPUTS_USE_BUILT_KERNELS", False)
    reference = compute()
    monkeypatch.setattr(shingles, "COMPILED_MIN_SHINGLES", 0)
    monkeypatch.setattr(shingles, "THREAD_MIN_SHINGLES", 1)
    monkeypatch.setattr(shingles, "_load_kernels", lambda: kernels)
    assert shingles.compiled_kernels(0) is kernels
    return reference, compute()


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_compiled_shingle_sets_equal_numpy(monkeypatch, kernels, size):
    texts = EDGE_TEXTS + random_texts(300, seed=size) + [" ".join(f"w{i % 700}" for i in range(5000))]  # one long row
    tokens = tokenize(pl.Series(texts))

    def compute():
        return row_shingle_sets(tokens.hashes, tokens.counts, size)

    (values, counts), (compiled_values, compiled_counts) = both_paths(monkeypatch, kernels, compute)
    hashes, per_text = shingle_hashes(tokens.hashes, tokens.counts, size)
    expected_values, expected_counts = unique_row_shingles(fold32(hashes), per_text)  # the numpy path is the reference
    assert np.array_equal(values, expected_values) and np.array_equal(counts, expected_counts)
    assert compiled_values.dtype == np.uint32 and compiled_counts.dtype == np.int64
    assert np.array_equal(compiled_counts, counts) and np.array_equal(compiled_values, values)
    assert counts[0] == 0 and counts[3] == 1  # the empty text has no shingle; a repeated word one


@pytest.mark.parametrize("num_perm", [16, 37, 128])
def test_compiled_signatures_and_band_keys_equal_numpy(monkeypatch, kernels, num_perm):
    values, counts = shingle_sets(EDGE_TEXTS[1:3] + random_texts(400, seed=num_perm))  # rows of 1 to 60 shingles
    hasher, lsh = MinHasher(num_perm=num_perm, seed=3), LshBands(0.6, num_perm)

    def compute():
        return hasher.signatures(values, counts), hasher.band_keys(values, counts, lsh)

    (signatures, keys), (compiled_signatures, compiled_keys) = both_paths(monkeypatch, kernels, compute)
    assert np.array_equal(keys, lsh.hashes(signatures))
    assert np.array_equal(compiled_signatures, signatures)
    assert np.array_equal(compiled_keys, keys)
    with pytest.raises(ValueError, match="at least one shingle"):
        hasher.signatures(values, np.where(np.arange(len(counts)) == 5, 0, counts))


def test_compiled_pair_jaccards_equal_numpy(monkeypatch, kernels):
    """The compiled merge scores every pair as the numpy sort does, to the bit: pairs of a set with
    itself, with an empty set, two empty sets, disjoint sets, and many pairs of random rows (split
    over threads), and one row against many (`jaccards_with`, large buckets)."""
    from curate.text.shingles import exact_jaccard, jaccards_with, pair_jaccards

    values, counts = shingle_sets(EDGE_TEXTS + random_texts(400, seed=5))
    starts = np.cumsum(counts) - counts
    empty = np.flatnonzero(counts == 0)
    assert len(empty) >= 1
    rng = np.random.default_rng(7)
    pairs = np.concatenate(
        [
            [[5, 5], [int(empty[0]), 6], [int(empty[0]), int(empty[0])], [3, 4]],
            rng.integers(0, len(counts), size=(5000, 2)),
            np.arange(0, len(counts) - 1, 2)[:, None] + [0, 1],  # neighbours
        ]
    ).astype(np.int64)

    def compute():
        return pair_jaccards(values, starts, counts, pairs), jaccards_with(values, starts, counts, 9, np.arange(len(counts)))

    kernel, calls = kernels.pair_shared_into, []
    monkeypatch.setattr(kernels, "pair_shared_into", lambda *args: calls.append(args[6] - args[5]) or kernel(*args))
    (scores, with_one), (compiled_scores, compiled_with_one) = both_paths(monkeypatch, kernels, compute)
    assert sum(calls) == len(pairs) + len(counts)  # the kernel scored every pair of both calls, and numpy none
    exact = [exact_jaccard(values[starts[a] : starts[a] + counts[a]], values[starts[b] : starts[b] + counts[b]]) for a, b in pairs[:300].tolist()]
    assert scores[:300].tolist() == exact  # the numpy path is the reference
    assert scores[0] == 1.0 and scores[1] == 0.0 and scores[2] == 1.0
    assert 0.0 < scores.max() and (scores[4:] < 1.0).any()
    assert compiled_scores.tobytes() == scores.tobytes()
    assert compiled_with_one.tobytes() == with_one.tobytes()


def test_compiled_sequence_keys_equal_numpy(monkeypatch, kernels):
    """The compiled run sums give `sequence_keys` numpy's keys to the bit: empty runs, one-element
    runs, a run longer than the weights first grown (1,024), hashes with the top bits set (the
    products wrap), and the word keys of real texts; the keys still tell runs apart."""
    from curate.text.rows import sequence_keys

    rng = np.random.default_rng(11)
    counts = np.concatenate([[0, 1, 0, 3, 2500], rng.integers(0, 40, size=2000), [0]]).astype(np.int64)
    hashes = rng.integers(0, 2**64, size=int(counts.sum()), dtype=np.uint64) | np.uint64(1 << 63)
    tokens = tokenize(pl.Series(EDGE_TEXTS + random_texts(300, seed=2)))

    def compute():
        return sequence_keys(hashes, counts), sequence_keys(tokens.hashes, tokens.counts)

    kernel, calls = kernels.sequence_sums_into, []
    monkeypatch.setattr(kernels, "sequence_sums_into", lambda *args: calls.append(len(args[1])) or kernel(*args))
    (keys, word_keys), (compiled_keys, compiled_word_keys) = both_paths(monkeypatch, kernels, compute)
    assert calls == [len(counts), len(tokens.counts)]  # the kernel summed both calls' runs, and numpy none
    assert compiled_keys.tobytes() == keys.tobytes() and compiled_word_keys.tobytes() == word_keys.tobytes()
    assert keys[0] == keys[2] == keys[-1] and keys[0] != keys[1]  # empty runs alike, a one-element run not
    assert len(np.unique(keys[counts > 0])) == int((counts > 0).sum())


@pytest.mark.parametrize("chunk_bytes", [7, 1 << 20])
def test_compiled_ascii_words_equal_numpy(monkeypatch, kernels, chunk_bytes):
    """The kernel cuts ASCII text into the numpy path's words, text by text: separators inside a
    text (NUL, control bytes), words at a text's edges, texts without words, every byte value."""
    from curate.text import normalize

    monkeypatch.setattr(normalize, "WORDS_CHUNK_BYTES", chunk_bytes)
    every_byte = "".join(chr(code) for code in range(128))
    texts = [text for text in EDGE_TEXTS if text.isascii()] + [every_byte, "nul\x00byte_\x01x", "_", "a", "", "9z ", " z9"]
    texts += [text.lower() for text in random_texts(300, seed=chunk_bytes)] + ["word " * 3000]
    series = pl.Series(texts, dtype=pl.String)

    def compute():
        words, counts = normalize.ascii_words(series)
        return words.to_list(), counts.tolist()

    kernel, calls = kernels.ascii_words_into, []
    monkeypatch.setattr(kernels, "ascii_words_into", lambda *args: calls.append(len(args[0])) or kernel(*args))
    reference, compiled = both_paths(monkeypatch, kernels, compute)
    assert len(calls) == 1, "the compiled path did not cut the words"  # and the numpy path did not call it
    lists = series.str.extract_all(r"\w+")
    assert reference == (lists.explode().drop_nulls().to_list(), lists.list.len().to_list())  # the regex's words
    assert compiled == reference


def test_compiled_sort_stays_correct_and_bounded_on_crafted_hashes():
    """Hashes sharing their top bits defeat the bucket pass (all in one bucket, in reverse order):
    the kernel must then switch to its heapsort and still sort them."""
    kernels = pytest.importorskip("curate.text.kernels")
    rng = np.random.default_rng(0)
    crafted = np.sort(rng.integers(0, 1 << 16, 5000).astype(np.uint32))[::-1].copy()  # top 16 bits all zero
    spread = rng.integers(0, 1 << 32, 5000, dtype=np.uint64).astype(np.uint32)
    for source, heap_sorted in ((crafted, True), (spread, False), (np.full(300, 7, np.uint32), False)):
        bits = int(np.ceil(np.log2(len(source))))
        out = np.zeros_like(source)
        assert kernels._bucket_sort(source, bits, np.zeros((1 << bits) + 1, np.int64), out) == heap_sorted
        assert np.array_equal(out, np.sort(source))
    for length in (0, 1, 2, 3, 10, 1001):
        values = rng.integers(0, 50, length).astype(np.uint32)
        expected = np.sort(values)
        kernels._heapsort(values)
        assert np.array_equal(values, expected)


def test_near_duplicate_findings_equal_on_both_paths(monkeypatch, kernels, tmp_path):
    """DU002 end to end (boilerplate, numbers, a large bucket): the same findings either way."""
    from tests.test_near_duplicates import corpus_with_big_clusters, corpus_with_shared_header

    corpora = [corpus_with_big_clusters(2), corpus_with_shared_header(4), clean_rows()]

    def compute():
        return [[(f.code, f.line, f.message, f.data) for f in lint_rows(tmp_path, rows, select=["DU001", "DU002"]).findings] for rows in corpora]

    reference, compiled = both_paths(monkeypatch, kernels, compute)
    assert len(reference[0]) > 600 and any("boilerplate" in message for _, _, message, _ in reference[1])
    assert compiled == reference


def test_a_thousand_row_lint_never_builds_the_kernels_or_imports_numba(tmp_path):
    """A pre-commit lint of 1,000 rows runs the kernels compiled ahead of time where they are built
    (loading them costs under a millisecond) and numpy where they are not, with the same report:
    it never builds them, never starts numba, and reads the default MinHash permutations rather
    than drawing them with numpy.random (~10 ms to import)."""
    import os
    import subprocess
    import sys

    from curate.text import aot
    from tests.conftest import ROOT, write_jsonl

    assert aot.load() is not None  # built (by `make install`, or here) in the default cache
    rng = random.Random(2)
    rows = [planted_copy(row, rng) for row in clean_rows() for _ in range(4)] + clean_rows()[:40]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    script = (
        "import sys\nfrom curate.cli import main\n"
        f"code = main(['lint', {str(data)!r}, '--isolated', '--format', 'json', '-o', sys.argv[1]])\n"
        "print('LOADED=' + ','.join(m for m in sys.modules if m in ('numba', 'llvmlite', 'curate.text.kernels', 'numpy.random') or m.startswith('curate_kernels_')), 'EXIT=' + str(code))\n"
    )
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    reports = []
    for cache, loaded in ((None, aot.module_name()), (empty, "")):
        env = {key: value for key, value in os.environ.items() if key != "CURATE_CACHE_DIR"}
        if cache is not None:
            env["CURATE_CACHE_DIR"] = str(cache)  # nothing built there
        out = tmp_path / f"out-{loaded or 'numpy'}.json"
        proc = subprocess.run([sys.executable, "-c", script, str(out)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
        assert f"LOADED={loaded} EXIT=0" in proc.stdout, proc.stdout[-500:] + proc.stderr[-2000:]  # warnings only
        reports.append(json.loads(out.read_text())["findings"])
    assert not list(empty.iterdir())  # no build was started
    assert len(rows) == 1000 and any(finding["code"] == "DU002" for finding in reports[0]) and reports[0] == reports[1]


def test_lsh_buckets_keep_keys_apart_that_differ_only_in_their_low_bits():
    """Band keys are sorted with the row position packed into their low bits; keys equal above
    those bits but not below must still land in separate buckets (and equal keys in one)."""
    prefix = np.uint64(0xABCDEF) << np.uint64(20)
    keys = np.array([[prefix | np.uint64(1)], [prefix | np.uint64(2)], [prefix | np.uint64(1)], [7], [prefix | np.uint64(2)]], dtype=np.uint64)
    buckets = lsh_buckets(keys)
    assert sorted(sorted(buckets.rows[start : start + size].tolist()) for start, size in zip(buckets.starts, buckets.sizes)) == [[0, 2], [1, 4]]


def test_number_words_are_the_words_the_digit_regex_matches_whole():
    import re

    from curate.text.rows import number_words
    from curate.text.shingles import Tokens

    texts = ["Order 12 of ٣٤ items, ticket 007", "x1 12a ß9 1٣ 12", "#### 72", "", "12 apples and 12 pears", "३ 3.5"]
    tokens = tokenize(pl.Series(texts))
    words_list = tokens.words.to_list()
    expected = [re.fullmatch(r"\d+", word) is not None for word in words_list]
    assert any(expected) and not all(expected)
    assert number_words(tokens).tolist() == expected
    chosen = np.array([index for index, word in enumerate(words_list) if index % 3 != 1])  # a selection, as MessageTokens.select makes
    selected = Tokens(tokens.words, tokens.hashes[chosen], np.array([len(chosen)]), chosen)
    assert number_words(selected).tolist() == [expected[index] for index in chosen]


@pytest.mark.parametrize("low_bit_twins", [False, True])
def test_first_occurrences_name_the_earliest_row_of_each_key(low_bit_twins):
    """The packed sort (`sort_keys(stable=True)`) must give what a stable argsort gives: the first
    row of a key is its smallest row id, also when keys differ only in the low bits the packed
    sort replaces (they are then argsorted)."""
    from curate.rules.duplicates import first_occurrences
    from curate.text.minhash import sort_keys

    rng = np.random.default_rng(7)
    keys = rng.choice(rng.integers(0, 2**63, 300, dtype=np.uint64), 5000)  # many copies of each key
    if low_bit_twins:
        keys[::7] = np.uint64(1 << 40) | (keys[::7] & np.uint64(1))  # two keys alike but for the lowest bit
    first_of, is_first = first_occurrences(keys)
    expected = {}
    for row, key in enumerate(keys.tolist()):
        expected.setdefault(key, row)
    assert first_of.tolist() == [expected[key] for key in keys.tolist()]
    assert is_first.tolist() == [expected[key] == row for row, key in enumerate(keys.tolist())]
    order, ordered = sort_keys(keys, stable=True)
    assert np.array_equal(order, np.argsort(keys, kind="stable")) and np.array_equal(ordered, np.sort(keys))
