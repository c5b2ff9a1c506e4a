"""Leakage rules (LK): training rows that contain eval items (`--eval FILE`, or `eval = [...]` in config).

The eval set is read once per run (`RunContext.resource`) and indexed as
numpy arrays: 64-bit keys of normalized eval texts (LK001), sorted hashed
word n-grams and MinHash LSH bands (LK002). Each batch of training rows is
checked against the index as it is read, with vectorized set operations; only
the few rows that hit are looked at one by one, to name the eval row and the
overlapping words.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from curate.engine.batch import Batch
from curate.engine.findings import Finding, Severity
from curate.engine.rule import DatasetRule, Fix, RuleOptions, RuleSetupError, RunContext
from curate.lightmodel import Field
from curate.text.evalset import EvalSetError, EvalText, load_eval_texts
from curate.text.minhash import LshBands, MinHasher, query_pairs
from curate.text.normalize import words_expr
from curate.text.rows import KEY_SEED, batch_tokens, batch_user_keys
from curate.text.secrets import excerpt
from curate.text.shingles import Tokens, exact_jaccard, member_of, row_shingle_sets, shingle_hashes, sorted_unique, tokenize

#: Eval texts shorter than this (in words) are ignored: answers such as `B` or `Yes` match everything.
MIN_EVAL_WORDS = 3
#: Word shingles used to find near-copies of eval texts.
NEAR_COPY_SHINGLE = 2
#: Candidate pairs below this shingle Jaccard are dropped before the word alignment check.
NEAR_COPY_PREFILTER = 0.25
SPAN_CHARS = 80


def eval_texts(context: RunContext) -> list[EvalText]:
    """The eval texts (questions and other inputs, not reference answers) of this run, read once for LK001 and LK002."""

    def load() -> list[EvalText]:
        try:
            texts = [text for text in load_eval_texts(context.eval_paths) if not text.answer]
        except EvalSetError as exc:
            raise RuleSetupError(str(exc)) from None
        if not texts:
            raise RuleSetupError(f"eval files {', '.join(context.eval_paths)} hold no text to check against")
        return texts

    return context.resource("eval:texts", load)


def text_keys(texts) -> np.ndarray:
    """64-bit keys of texts compared as word sequences (case, punctuation and spacing ignored)."""
    import polars as pl

    return pl.select(words_expr(pl.lit(texts)).list.join(" ").hash(seed=KEY_SEED)).to_series().to_numpy()


class LeakOptions(RuleOptions):
    drop: bool = Field(False, description="`curate fix` drops the rows that leak eval data (`curate fix --drop-leaked` sets it).")


class DropsLeakedRows:
    """Mixin of the LK rules: with the `drop` option, `curate fix` drops leaked rows a reviewer did not keep."""

    def fix(self, finding: Finding) -> Fix | None:
        return Fix.drop(undone_by_keep=True) if self.options.drop else None


@dataclass
class ExactIndex:
    """Sorted keys of the eval texts, with the text each key came from (first in file order)."""

    keys: np.ndarray
    owners: np.ndarray
    texts: list[EvalText]

    @classmethod
    def build(cls, texts: list[EvalText]) -> ExactIndex:
        import polars as pl

        all_texts = pl.Series([t.text for t in texts], dtype=pl.String)
        long_enough = tokenize(all_texts).counts >= MIN_EVAL_WORDS
        usable = [text for text, keep in zip(texts, long_enough.tolist()) if keep]
        keys, first = np.unique(text_keys(all_texts.filter(pl.Series(long_enough))), return_index=True)
        return cls(keys, first, usable)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """Index into `texts` for each key, or -1 when the key is not an eval text."""
        if len(self.keys) == 0:
            return np.full(len(keys), -1, dtype=np.int64)
        position = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return np.where(self.keys[position] == keys, self.owners[position], -1)


def prompt_matches(batch: Batch, index: ExactIndex) -> dict[int, EvalText]:
    """Rows (batch positions) whose prompt (user turns joined) equals an eval text."""
    keys = batch_user_keys(batch)
    owners = index.lookup(keys["user_key"].to_numpy())
    rows = keys["row"].to_numpy()[owners >= 0].tolist()
    return {int(row): index.texts[owner] for row, owner in zip(rows, owners[owners >= 0].tolist())}


class EvalExactMatch(DropsLeakedRows, DatasetRule):
    """Row's prompt is an eval prompt (after normalization).

    ## What it does
    Compares the prompt of every row (its user turns) with the eval texts of
    the files given with `--eval` (or `eval = [...]` in the config), ignoring
    case, punctuation, spacing and Unicode form. Eval rows may be chat rows
    (their user turns) or plain records (every string field, such as
    `question` or `text`). Reference answers (a chat row's final turn, fields
    such as `answer`, `output`, `solution`) are not matched, since training
    replies often share their phrasing; eval texts under three words are ignored.

    ## Why is this bad
    A model trained on the test questions scores well on them by memory: the
    eval no longer measures what the fine-tune learned.

    ## Example
    eval.jsonl: `{"question": "What is the capital of Australia?", "answer": "Canberra"}`
    ```jsonl
    {"messages": [{"role": "user", "content": "what is the capital of australia"}, {"role": "assistant", "content": "Canberra."}]}
    ```

    ## Use instead
    Drop the row from the training set (or the item from the eval set).
    """

    code = "LK001"
    built_by_setup = ("index",)
    name = "eval-exact-match"
    severity = Severity.ERROR
    requires = ("eval",)
    Options = LeakOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.findings: list[Finding] = []

    def setup(self) -> None:
        self.index = self.context.resource("eval:exact", lambda: ExactIndex.build(eval_texts(self.context)))
        self.context.resource("leakage:rules", set).add(self.code)

    def observe(self, batch: Batch) -> None:
        for position, match in prompt_matches(batch, self.index).items():
            row = batch.rows[position]
            text = f"prompt equals eval {match.describe()}: \"{excerpt(match.text, SPAN_CHARS)}\""
            data = {"eval": {**match.location.to_dict(), "field": match.field}}
            self.findings.append(self.row_finding(row, text, related=[match.location], data=data))

    def merge(self, later: EvalExactMatch) -> None:
        self.findings += later.findings

    def finish(self) -> Iterable[Finding]:
        return self.findings


class EvalOverlapOptions(LeakOptions):
    ngram: int = Field(13, ge=5, le=100, description="Words in a shared span that counts as leakage (13 as in GPT-3 and lm-evaluation-harness).")
    similarity: float = Field(0.8, gt=0.0, le=1.0, description="Share of words aligned (difflib ratio over words) at or above which a row's user text is a near-copy of an eval text.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations used to find near-copy candidates.")


@dataclass
class OverlapIndex:
    """Hashed n-grams and near-copy LSH bands of the eval texts."""

    texts: list[EvalText]
    ngram_keys: np.ndarray  # sorted unique n-gram hashes
    ngram_owners: np.ndarray  # text index of each n-gram (first text that has it)
    near_ids: np.ndarray  # text index of each near-copy entry
    near_bands: np.ndarray  # (entries, bands) LSH keys
    near_shingles: list[np.ndarray]
    near_words: list[list[str]]
    near_universe: np.ndarray  # sorted unique shingles of all near-copy entries

    @classmethod
    def build(cls, texts: list[EvalText], ngram: int, hasher: MinHasher, lsh: LshBands) -> OverlapIndex:
        import polars as pl

        tokens = tokenize(pl.Series([t.text for t in texts], dtype=pl.String))
        grams, owners = long_ngrams(tokens, ngram)
        ngram_keys, first = np.unique(grams, return_index=True)
        near = np.flatnonzero(tokens.counts >= max(MIN_EVAL_WORDS, NEAR_COPY_SHINGLE))
        values, counts = row_shingle_sets(tokens.hashes, tokens.counts, NEAR_COPY_SHINGLE)
        ends = np.cumsum(counts)
        shingles = [values[ends[i] - counts[i] : ends[i]] for i in near]
        kept_values = np.concatenate(shingles) if shingles else np.zeros(0, np.uint32)
        bands = hasher.band_keys(kept_values, counts[near], lsh) if len(near) else np.zeros((0, lsh.bands), np.uint64)
        universe = sorted_unique(kept_values)
        return cls(texts, ngram_keys, owners[first], near, bands, shingles, [tokens.words_of(int(i)) for i in near], universe)


def long_ngrams(tokens: Tokens, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every `size`-word n-gram of texts with at least `size` words, and the text of each."""
    hashes, per_text = shingle_hashes(tokens.hashes, tokens.counts, size)
    text_of = np.repeat(np.arange(len(per_text)), per_text)
    long_enough = tokens.counts[text_of] >= size
    return hashes[long_enough], text_of[long_enough]


@dataclass(frozen=True, slots=True)
class Overlap:
    """How a training row overlaps one eval text."""

    match: EvalText
    span: str
    words: int
    similarity: float | None = None


class EvalOverlap(DropsLeakedRows, DatasetRule):
    """Row shares a long word span with an eval text, or is a near-copy of one.

    ## What it does
    Reports a row when either
    - any of its turns shares a run of `ngram` words (13 by default, as in the
      GPT-3 paper and lm-evaluation-harness decontamination) with an eval
      question (any eval text but reference answers, as for LK001), after
      normalizing case, punctuation and spacing; or
    - its user text is a near-copy of an eval text: MinHash LSH on word pairs
      finds candidates, and a word-by-word alignment keeps those whose
      `similarity` (difflib ratio over words, 0.8 by default) is high. A
      question with a word or two dropped, added or changed is caught; a row
      that only shares common phrasing ("How many ... does she have left?") is not.
    The message names the eval file, line and field, and the overlapping words.
    Rows that LK001 reports are not reported again.

    ## Why is this bad
    Eval items leak in paraphrased or embedded form more often than verbatim
    (scraped solutions, lightly edited copies, a test question inside a longer
    prompt); the eval then rewards memorization.

    ## Example
    eval.jsonl: `{"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did she sell?"}`
    ```jsonl
    {"messages": [{"role": "user", "content": "Natalia sold clips to 48 of her friends in April and then sold half as many clips in May. How many clips did she sell?"}, {"role": "assistant", "content": "72"}]}
    ```

    ## Use instead
    Drop the row, or replace it with a problem that is not in the eval set.
    """

    code = "LK002"
    built_by_setup = ("hasher", "lsh", "index", "exact_index", "leakage_rules")
    name = "eval-overlap"
    severity = Severity.ERROR
    requires = ("eval",)
    Options = EvalOverlapOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.findings: list[Finding] = []

    def setup(self) -> None:
        options = self.options
        self.hasher = MinHasher(options.num_perm)
        self.lsh = LshBands(max(options.similarity - 0.4, 0.3), options.num_perm)
        key = f"eval:overlap:{options.ngram}:{options.num_perm}:{self.lsh.bands}x{self.lsh.rows}"
        self.index = self.context.resource(key, lambda: OverlapIndex.build(eval_texts(self.context), options.ngram, self.hasher, self.lsh))
        self.exact_index = self.context.resource("eval:exact", lambda: ExactIndex.build(eval_texts(self.context)))
        self.leakage_rules = self.context.resource("leakage:rules", set)

    def observe(self, batch: Batch) -> None:
        skip = set(prompt_matches(batch, self.exact_index)) if "LK001" in self.leakage_rules else set()
        tokens = batch_tokens(batch)
        overlaps = self._shared_spans(*tokens.select())
        for position, overlap in self._near_copies(*tokens.select(["user"])).items():
            overlaps.setdefault(position, overlap)
        for position in sorted(overlaps):
            if position not in skip:
                self.findings.append(self._finding(batch, position, overlaps[position]))

    def merge(self, later: EvalOverlap) -> None:
        self.findings += later.findings

    def finish(self) -> Iterable[Finding]:
        return self.findings

    def _shared_spans(self, positions: np.ndarray, tokens: Tokens) -> dict[int, Overlap]:
        """Rows with an n-gram in common with the eval set, and the longest shared run of words."""
        size = self.options.ngram
        if len(self.index.ngram_keys) == 0:
            return {}
        grams, text_of = long_ngrams(tokens, size)
        hit = member_of(grams, self.index.ngram_keys)
        if not hit.any():
            return {}
        gram_index = np.arange(len(grams))
        first_gram = np.concatenate(([0], np.cumsum(np.bincount(text_of, minlength=len(positions)))[:-1]))
        overlaps = {}
        for text_index in np.unique(text_of[hit]).tolist():
            mine = hit & (text_of == text_index)
            start, length = longest_run(gram_index[mine] - first_gram[text_index])
            run_key = grams[first_gram[text_index] + start]
            owner = self.index.ngram_owners[np.searchsorted(self.index.ngram_keys, run_key)]
            span_words = tokens.words_of(text_index)[start : start + length + size - 1]
            overlaps[int(positions[text_index])] = Overlap(self.index.texts[int(owner)], " ".join(span_words), len(span_words))
        return overlaps

    def _near_copies(self, positions: np.ndarray, tokens: Tokens) -> dict[int, Overlap]:
        """Rows whose user text aligns word by word with an eval text at `similarity` or more."""
        if len(self.index.near_ids) == 0:
            return {}
        values, counts = row_shingle_sets(tokens.hashes, tokens.counts, NEAR_COPY_SHINGLE)
        ends = np.cumsum(counts)
        usable = self._could_reach_prefilter(values, counts)
        if len(usable) == 0:
            return {}
        selected = np.zeros(len(counts), dtype=bool)
        selected[usable] = True
        kept = values[np.repeat(selected, counts)]
        bands = self.hasher.band_keys(kept, counts[usable], self.lsh)
        best: dict[int, Overlap] = {}
        for query, entry in query_pairs(bands, self.index.near_bands).tolist():
            text_index = int(usable[query])
            mine = values[ends[text_index] - counts[text_index] : ends[text_index]]
            if exact_jaccard(mine, self.index.near_shingles[entry]) < NEAR_COPY_PREFILTER:
                continue
            row_words = tokens.words_of(text_index)
            eval_words = self.index.near_words[entry]
            matcher = difflib.SequenceMatcher(None, row_words, eval_words, autojunk=False)
            similarity = matcher.ratio()
            position = int(positions[text_index])
            if similarity >= self.options.similarity and similarity > (best[position].similarity if position in best else 0.0):
                block = max(matcher.get_matching_blocks(), key=lambda b: b.size)
                span = " ".join(row_words[block.a : block.a + block.size])
                match = self.index.texts[int(self.index.near_ids[entry])]
                best[position] = Overlap(match, span, block.size, similarity)
        return best

    def _could_reach_prefilter(self, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Texts (indexes) whose shingles could reach NEAR_COPY_PREFILTER Jaccard with some eval text.

        Jaccard(A, B) <= |A & B| / |A| <= |A & U| / |A| for the union U of all eval
        shingles, so texts with too few shingles in U are skipped before MinHash:
        exact (no lost recall), and most training rows never get a signature."""
        in_universe = member_of(values, self.index.near_universe)
        owner = np.repeat(np.arange(len(counts)), counts)
        shared = np.bincount(owner, weights=in_universe, minlength=len(counts))
        return np.flatnonzero((counts > 0) & (shared >= NEAR_COPY_PREFILTER * counts))

    def _finding(self, batch: Batch, position: int, overlap: Overlap) -> Finding:
        row = batch.rows[position]
        match = overlap.match
        quoted = excerpt(overlap.span, SPAN_CHARS)
        if overlap.similarity is None:
            text = f"shares {overlap.words} words with eval {match.describe()}: \"{quoted}\""
        else:
            text = f"near-copy of eval {match.describe()} ({overlap.similarity:.0%} of words aligned): \"{quoted}\""
        data = {"eval": {**match.location.to_dict(), "field": match.field}, "span": overlap.span, "words": overlap.words}
        if overlap.similarity is not None:
            data["similarity"] = round(overlap.similarity, 4)
        return self.row_finding(row, text, related=[match.location], data=data)


def longest_run(sorted_positions: np.ndarray) -> tuple[int, int]:
    """(start, length) of the longest run of consecutive integers in a sorted array."""
    breaks = np.flatnonzero(np.diff(sorted_positions) != 1) + 1
    starts = np.concatenate(([0], breaks))
    lengths = np.diff(np.concatenate((starts, [len(sorted_positions)])))
    longest = int(np.argmax(lengths))
    return int(sorted_positions[starts[longest]]), int(lengths[longest])

