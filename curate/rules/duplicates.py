"""Duplicate rules (DU): exact copies, near-duplicates and conflicting answers across all input files.

Each rule observes every batch, keeping only compact per-row data (64-bit
keys, LSH band hashes, sorted 32-bit shingle sets), and reports at the end.
Findings point (`related`) at the first row of their cluster, the row a
cleaner keeps, and carry the whole cluster in `data["cluster"]`.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from curate.engine.batch import Batch
from curate.engine.findings import Finding, Location, Severity
from curate.engine.rule import REGISTRY, DatasetRule, Fix, RuleOptions, RunContext
from curate.formats import CANONICAL_ROLES
from curate.io import anonymous_buffer, release_freed_memory
from curate.lightmodel import Field, field_validator
from curate.rules.toolkit import RowLocations, percent
from curate.text.answers import POLAR_WORDS
from curate.text.minhash import ALL_PAIRS_BUCKET, Buckets, LshBands, MinHasher, bucket_pairs, lsh_buckets, sort_keys
from curate.text.rows import batch_features, batch_short_answers, batch_tokens, number_keys
from curate.text.shingles import common_shingles, drop_shingles, gather_sets, jaccards_with, pair_jaccards, row_shingle_sets

#: How far below the verification threshold the LSH bands are tuned, so pairs just above it are found.
LSH_MARGIN = 0.2
#: Lines named in a message before "and N more".
NAMED_LINES = 5
#: Cluster members listed in a finding's data (the size is always given).
CLUSTER_IN_DATA = 50
#: Fewer rows than this say nothing about what is boilerplate: every shingle of two copies is in 100% of them.
BOILERPLATE_MIN_ROWS = 100
#: In a large LSH bucket a row is compared with at most this many earlier kept rows (the latest):
#: a bucket of thousands of mutually different rows then costs linear, not quadratic, time.
KEPT_COMPARED = 64
#: Comparisons in large buckets are screened by the MinHash estimate: pairs estimated this far
#: below the threshold are not scored exactly (at 128 permutations and 0.8, 3.4 standard
#: deviations: one pair at the threshold in 3,000 is lost, against 1 in 70 that LSH misses).
SCREEN_MARGIN = 0.12
#: In a group of rows sharing one prompt, each row is compared with at most this many others (DU003).
COMPARED_ANSWERS = 50


#: `drain_concatenate` hands freed parts back to the OS after this many bytes: each `malloc_trim`
#: walks the whole heap (~10 ms at 1M rows), so trimming every 8 parts cost 1.5 s there; this
#: bounds what the peak gains to 64 MB.
DRAIN_RELEASE_BYTES = 64 * 1024 * 1024


def drain_concatenate(parts: list[np.ndarray], dtype) -> np.ndarray:
    """`np.concatenate(parts)` that empties `parts` as it copies and hands their memory back as it
    goes, so the peak is about the result, not the result plus all the parts (at 1M rows the
    shingle sets and band keys are 470 MB)."""
    if not parts:
        return np.zeros(0, dtype)
    out = mapped_empty((sum(len(part) for part in parts), *parts[0].shape[1:]), parts[0].dtype)
    filled = freed = 0
    parts.reverse()
    while parts:
        part = parts.pop()
        out[filled : filled + len(part)] = part
        filled += len(part)
        freed += part.nbytes
        del part
        if freed >= DRAIN_RELEASE_BYTES or not parts:
            release_freed_memory()
            freed = 0
    return out


def mapped_empty(shape: tuple[int, ...], dtype) -> np.ndarray:
    """`np.empty` on a mapping of its own (`anonymous_buffer`): filling a fresh 330 MB array ran
    at ~0.4 GB/s with numpy's huge-page advice and ~1.6 GB/s without, and the 1M-row finish of
    DU002 spent 1.8 s there."""
    nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return np.frombuffer(anonymous_buffer(nbytes), dtype=dtype).reshape(shape)


def describe(location: Location, from_path: str) -> str:
    """`line 5` within the same file, `other.jsonl:5` across files."""
    return f"line {location.line}" if location.path == from_path else f"{location.path}:{location.line}"


def describe_many(locations: list[Location], from_path: str, total: int | None = None) -> str:
    """The first NAMED_LINES locations and "and N more" (of `total`, when only a prefix is passed)."""
    named = [describe(location, from_path) for location in locations[:NAMED_LINES]]
    more = (len(locations) if total is None else total) - len(named)
    return ", ".join(named) + (f" and {more} more" if more > 0 else "")


def other_members(cluster: list[Location], member: Location) -> list[Location]:
    """Enough of the cluster besides `member` to name in a message: never the whole cluster,
    so that a group of 10,000 copies costs linear, not quadratic, time."""
    return [other for other in cluster[: NAMED_LINES + 2] if other is not member][:NAMED_LINES]


def cluster_data(locations: list[Location]) -> dict:
    """`data` for a cluster: its size and its first CLUSTER_IN_DATA rows, the kept row first.
    Every finding's `related[0]` is the kept row, so consumers can join a whole cluster
    from the findings even when the list here is cut."""
    return {"cluster": [location.to_dict() for location in locations[:CLUSTER_IN_DATA]], "cluster_size": len(locations)}


@dataclass
class DuplicateRules:
    """Which duplicate rules run, so that one row gets one duplicate finding (exact copies are DU001's)."""

    active: set[str] = field(default_factory=set)


def shared_state(context: RunContext) -> DuplicateRules:
    return context.resource("duplicates:rules", DuplicateRules)


def batch_positions(frame_rows) -> np.ndarray:
    return frame_rows.to_numpy().astype(np.int64)


def first_occurrences(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row, the id of the first row with the same key; and whether the row is that first one."""
    order, ordered = sort_keys(keys, stable=True)
    group_start = np.concatenate(([True], ordered[1:] != ordered[:-1])) if len(keys) else np.zeros(0, bool)
    group_of = np.cumsum(group_start) - 1
    first_of = np.empty(len(keys), dtype=np.int64)
    first_of[order] = order[group_start][group_of]
    return first_of, first_of == np.arange(len(keys))


Key = tuple[str, int]


class KeepsFirstCopy:
    """Mixin of the rules whose findings join rows into groups of copies (DU001, DU002, PF005):
    `curate fix` keeps the first row of each group and drops the others, `curate review`
    drops a group in one step; a reviewer's keep saves a row."""

    def fix(self, finding: Finding) -> Fix | None:
        return Fix.keep_first()


def is_duplicate_finding(finding: Finding) -> bool:
    rule = REGISTRY.get(finding.code)
    return rule is not None and issubclass(rule, KeepsFirstCopy)


def duplicate_groups(findings: Iterable[Finding]) -> list[list[Key]]:
    """Rows joined by duplicate findings (the flagged row, its related rows, its cluster),
    as groups sorted by (path, line); a union-find, so chains A~B~C form one group."""
    parent: dict[Key, Key] = {}

    def root(key: Key) -> Key:
        parent.setdefault(key, key)
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for finding in findings:
        if finding.line is None or not is_duplicate_finding(finding):
            continue
        members = [(finding.path, finding.line)]
        members += [(location.path, location.line) for location in finding.related if location.line is not None]
        for item in finding.data.get("cluster") or []:
            if isinstance(item, dict) and isinstance(item.get("line"), int):
                members.append((str(item.get("path", finding.path)), item["line"]))
        first = root(members[0])
        for member in members[1:]:
            parent[root(member)] = first
    groups: dict[Key, list[Key]] = {}
    for key in parent:
        groups.setdefault(root(key), []).append(key)
    return sorted(sorted(group) for group in groups.values() if len(group) > 1)


class ExactDuplicate(KeepsFirstCopy, DatasetRule):
    """Row repeats an earlier row exactly (after normalizing unicode, case and whitespace).

    ## What it does
    Compares every conversation, all turns with their roles, after Unicode NFKC
    normalization, lower-casing and collapsing whitespace, across all input
    files. Each repeat is reported once and points at the first copy (the one
    to keep); metadata fields such as `id` or `label` are ignored.

    ## Why is this bad
    Duplicates are trained on several times per epoch: the model memorizes
    them, their weight in the loss grows, and they leak between train and eval
    splits made by random sampling.

    ## Example
    ```jsonl
    {"messages": [{"role": "user", "content": "Reset my password"}, {"role": "assistant", "content": "Click Forgot password."}]}
    {"messages": [{"role": "user", "content": "reset my  password"}, {"role": "assistant", "content": "Click Forgot password."}]}
    ```

    ## Use instead
    Keep one copy (`curate fix` drops the repeats and keeps the first).
    """

    code = "DU001"
    name = "exact-duplicate"
    severity = Severity.WARNING
    skips_preference_rows = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.locations = RowLocations()
        self.keys: list[np.ndarray] = []

    def setup(self) -> None:
        shared_state(self.context).active.add(self.code)

    def observe(self, batch: Batch) -> None:
        features = batch_features(batch)
        self.locations.add(batch, batch_positions(features["row"]))
        self.keys.append(features["conversation_key"].to_numpy())

    def merge(self, later: ExactDuplicate) -> None:
        self.locations.extend(later.locations)
        self.keys += later.keys

    def finish(self) -> Iterable[Finding]:
        self.locations.freeze()
        if not self.keys:
            return
        first_of, is_first = first_occurrences(np.concatenate(self.keys))
        repeats = np.flatnonzero(~is_first)
        members: dict[int, list[int]] = {}
        for row_id, first in zip(repeats.tolist(), first_of[repeats].tolist()):
            members.setdefault(first, []).append(row_id)
        clusters = self.locations.grouped_locations([[first, *copies] for first, copies in members.items()])
        for cluster in clusters:
            data = {"jaccard": 1.0, **cluster_data(cluster)}
            for copy in cluster[1:]:
                text = f"exact duplicate of {describe(cluster[0], copy.path)}"
                if len(cluster) > 2:
                    text += f" (also {describe_many(other_members(cluster[1:], copy), copy.path, total=len(cluster) - 2)})"
                yield self.finding(copy.path, copy.line, text, related=[cluster[0]], data=dict(data), quotes_rows=False)


class NearDuplicateOptions(RuleOptions):
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="Jaccard similarity of word shingles at or above which two rows are near-duplicates.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (more finds borderline pairs more reliably, slower).")
    shingle_size: int = Field(2, ge=1, le=10, description="Words per shingle. 2 keeps a dropped or repeated word from hiding a copy; larger is stricter.")
    roles: list[str] = Field(default_factory=lambda: ["user", "assistant"], description="Roles whose text is compared (system prompts are often shared by design).")
    numbers_must_match: bool = Field(True, description="Rows that mention different numbers are different examples (math problems with other values), not near-duplicates.")
    ignore_boilerplate: bool = Field(True, description="Ignore shingles found in at least `boilerplate-share` of the rows (a shared header, a dataset-wide preamble) when comparing rows.")
    boilerplate_share: float = Field(0.5, gt=0.0, le=1.0, description=f"Share of the rows a shingle must be in to count as boilerplate (with at least {BOILERPLATE_MIN_ROWS} rows).")

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, roles: list[str]) -> list[str]:
        unknown = [role for role in roles if role not in CANONICAL_ROLES]
        if unknown or not roles:
            raise ValueError(f"roles must be a non-empty list of {', '.join(CANONICAL_ROLES)}; got {roles}")
        return roles


@dataclass
class ShingleStore:
    """Sorted unique 32-bit shingles of many rows, appended batch by batch, for exact Jaccard checks."""

    parts: list[np.ndarray] = field(default_factory=list)
    count_parts: list[np.ndarray] = field(default_factory=list)

    def add(self, values: np.ndarray, counts: np.ndarray) -> None:
        self.parts.append(values)
        self.count_parts.append(counts)

    def extend(self, later: ShingleStore) -> None:
        self.parts += later.parts
        self.count_parts += later.count_parts

    def freeze(self) -> None:
        self.values = drain_concatenate(self.parts, np.uint32)
        self.counts = drain_concatenate(self.count_parts, np.int64)
        self.starts = np.cumsum(self.counts) - self.counts
        self.parts, self.count_parts = [], []

    def of(self, rows: np.ndarray) -> np.ndarray:
        """The shingles of `rows`, flat, row after row."""
        return gather_sets(self.values, self.starts, self.counts, rows)


class NearDuplicate(KeepsFirstCopy, DatasetRule):
    """Row is almost the same as an earlier row (MinHash LSH, Jaccard >= threshold).

    ## What it does
    Cuts the text of the compared roles (user and assistant by default) into
    normalized word shingles (2 words by default), finds candidate pairs with
    MinHash LSH across all input files, and confirms each candidate with the
    exact Jaccard similarity of the two shingle sets. Rows are clustered in file
    order: a row similar to a kept row joins its cluster, and the finding names
    the kept row and the score. Every candidate pair counts, however many rows
    share an LSH bucket (in a large bucket a row is compared with the earlier
    kept rows), so the rows a cleaner keeps hold no near-duplicate pair and
    linting `curate fix`'s output finds none. Rows that mention different
    numbers are distinct examples, not near-duplicates (option
    `numbers-must-match`); exact copies are left to DU001 when it runs.

    Shingles found in at least half of the rows (option `boilerplate-share`,
    in files of 100 rows or more) are boilerplate: a tool header every
    instruction repeats, a dataset-wide preamble. They say nothing about which
    example a row is, so they are left out of the comparison, and a finding
    whose rows lost some says how many (`ignoring 58 boilerplate shingles`).
    A cluster of near copies making up half of a file would look like
    boilerplate too; set `ignore-boilerplate = false` for such files.

    ## Why is this bad
    Near-duplicates (a word changed, punctuation added, a template filled the
    same way) over-weight one example just as exact copies do, and are the
    usual way a test item survives exact-match deduplication.

    ## Example
    ```jsonl
    {"messages": [{"role": "user", "content": "How do I reset the router?"}, {"role": "assistant", "content": "Hold the reset button for ten seconds, then wait for the light."}]}
    {"messages": [{"role": "user", "content": "How do I reset the router ?"}, {"role": "assistant", "content": "Hold the reset button for ten seconds then wait for the light!"}]}
    ```

    ## Use instead
    Keep one row per cluster (`curate fix` keeps the first), or make the
    variants differ in substance.
    """

    code = "DU002"
    name = "near-duplicate"
    severity = Severity.WARNING
    skips_preference_rows = True
    Options = NearDuplicateOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.locations = RowLocations()
        self.shingles = ShingleStore()
        self.band_parts: list[np.ndarray] = []
        self.key_parts: list[np.ndarray] = []
        self.number_parts: list[np.ndarray] = []

    def setup(self) -> None:
        self.hasher = MinHasher(self.options.num_perm)
        self.lsh = LshBands(max(self.options.threshold - LSH_MARGIN, 0.3), self.options.num_perm)

    def observe(self, batch: Batch) -> None:
        positions, tokens = batch_tokens(batch).select(self.options.roles)
        if len(positions) == 0:
            return
        values, counts = row_shingle_sets(tokens.hashes, tokens.counts, self.options.shingle_size)
        self.locations.add(batch, positions)
        self.shingles.add(values, counts)
        self.band_parts.append(self.hasher.band_keys(values, counts, self.lsh))
        if "DU001" in shared_state(self.context).active:  # exact copies are DU001's: keep keys to skip them
            features = batch_features(batch)
            key_of_row = np.zeros(len(batch), dtype=np.uint64)
            key_of_row[features["row"].to_numpy()] = features["conversation_key"].to_numpy()
            self.key_parts.append(key_of_row[positions])
        self.number_parts.append(number_keys(positions, tokens))

    def merge(self, later: NearDuplicate) -> None:
        self.locations.extend(later.locations)
        self.shingles.extend(later.shingles)
        self.band_parts += later.band_parts
        self.key_parts += later.key_parts
        self.number_parts += later.number_parts

    def finish(self) -> Iterable[Finding]:
        self.locations.freeze()
        self.shingles.freeze()
        if not self.band_parts:
            return
        bands = drain_concatenate(self.band_parts, np.uint64)
        self.numbers = np.concatenate(self.number_parts) if self.options.numbers_must_match else None
        self.boilerplate = self._drop_boilerplate(bands)
        yield from self._report(self._clusters(bands))

    def _drop_boilerplate(self, bands: np.ndarray) -> np.ndarray:
        """Remove shingles common to `boilerplate-share` of the rows from every row's set and
        redo those rows' signatures (in place in `bands`); returns the count removed per row."""
        store = self.shingles
        none = np.zeros(len(store.counts), dtype=np.int64)
        if not self.options.ignore_boilerplate or len(store.counts) < BOILERPLATE_MIN_ROWS:
            return none
        common = common_shingles(store.values, store.starts, store.counts, self.options.boilerplate_share)
        if len(common) == 0:
            return none
        store.values, store.counts, removed = drop_shingles(store.values, store.counts, common)
        store.starts = np.cumsum(store.counts) - store.counts
        changed = np.flatnonzero(removed > 0)
        if len(changed):
            bands[changed] = self.hasher.band_keys(store.of(changed), store.counts[changed], self.lsh)
        return removed

    def _clusters(self, bands: np.ndarray) -> dict[int, list[tuple[int, float]]]:
        """Cluster in file order over every LSH candidate pair: all pairs of small buckets are
        scored up front; in large buckets a row is scored against the earlier kept rows only."""
        rows = None
        if "DU001" in shared_state(self.context).active:  # exact copies are DU001's: only first copies compete
            _, is_first = first_occurrences(np.concatenate(self.key_parts))
            rows = np.flatnonzero(is_first)
        buckets = lsh_buckets(bands, rows)
        large = buckets.sizes > ALL_PAIRS_BUCKET
        pairs = bucket_pairs(buckets.select(~large), len(bands))
        scores = self._scores(pairs)
        similar = scores >= self.options.threshold
        edges = list(zip(pairs[similar, 0].tolist(), pairs[similar, 1].tolist(), scores[similar].tolist()))
        large_buckets = buckets.select(large)
        if len(large_buckets.sizes):
            self._sketch_rows(np.unique(large_buckets.rows))
        return cluster_in_file_order(edges, large_buckets, self._earlier_similar)

    def _sketch_rows(self, rows: np.ndarray) -> None:
        """MinHash signatures of the rows of large buckets (from the stored shingles, after any
        boilerplate was removed), to screen their many comparisons before exact Jaccard."""
        store = self.shingles
        self.sketches = self.hasher.signatures(store.of(rows), store.counts[rows])
        self.sketch_of = np.full(len(store.counts), -1, dtype=np.int64)
        self.sketch_of[rows] = np.arange(len(rows))

    def _earlier_similar(self, row: int, earlier: np.ndarray) -> list[tuple[int, float]]:
        """(earlier row, Jaccard) of the `earlier` rows that `row` is a near-duplicate of, screened
        by the MinHash estimate first (SCREEN_MARGIN)."""
        estimates = (self.sketches[self.sketch_of[earlier]] == self.sketches[self.sketch_of[row]]).mean(axis=1)
        earlier = earlier[estimates >= self.options.threshold - SCREEN_MARGIN]
        if self.numbers is not None:
            earlier = earlier[self.numbers[earlier] == self.numbers[row]]
        store = self.shingles
        scores = jaccards_with(store.values, store.starts, store.counts, row, earlier)
        similar = scores >= self.options.threshold
        return list(zip(earlier[similar].tolist(), scores[similar].tolist()))

    def _scores(self, pairs: np.ndarray) -> np.ndarray:
        """Exact shingle Jaccard of each pair; -1 where the rows mention different numbers."""
        store = self.shingles
        scores = np.full(len(pairs), -1.0)
        if len(pairs) == 0:
            return scores
        same = np.ones(len(pairs), dtype=bool) if self.numbers is None else self.numbers[pairs[:, 0]] == self.numbers[pairs[:, 1]]
        scores[same] = pair_jaccards(store.values, store.starts, store.counts, pairs[same])
        return scores

    def _report(self, clusters: dict[int, list[tuple[int, float]]]) -> Iterator[Finding]:
        located = self.locations.grouped_locations([[kept, *(member for member, _ in members)] for kept, members in clusters.items()])
        for (kept, members), cluster in zip(clusters.items(), located):
            shared = cluster_data(cluster)
            for location, (member, score) in zip(cluster[1:], members):
                text = f"near-duplicate of {describe(cluster[0], location.path)} (Jaccard {score:.2f}"
                data = {"jaccard": round(score, 4), **shared}
                ignored = int(max(self.boilerplate[kept], self.boilerplate[member]))
                if ignored:
                    text += f", ignoring {ignored} boilerplate shingles found in {percent(self.options.boilerplate_share)}+ of rows"
                    data["boilerplate_shingles"] = ignored
                text += ")"
                if len(cluster) > 2:
                    text += f"; same cluster as {describe_many(other_members(cluster[1:], location), location.path, total=len(cluster) - 2)}"
                yield self.finding(location.path, location.line, text, related=[cluster[0]], data=data, quotes_rows=False)


def cluster_in_file_order(
    edges: list[tuple[int, int, float]],
    large: Buckets | None = None,
    earlier_similar: Callable[[int, np.ndarray], list[tuple[int, float]]] | None = None,
) -> dict[int, list[tuple[int, float]]]:
    """Greedy clustering as a cleaner reads the file: a row joins the most similar earlier *kept* row.

    `edges` are the similar pairs (earlier, later, Jaccard) already scored. Rows
    of `large` buckets are also scored, with `earlier_similar`, against the
    earlier kept rows of their buckets (at most KEPT_COMPARED per bucket), so
    that any two kept rows sharing a bucket have been compared: the kept rows
    hold no near-duplicate pair, and linting a cleaned file finds none. A row
    whose only similar rows were themselves dropped stays (its own copy
    survives nowhere else). Returns kept row -> [(member, Jaccard to the kept row)]."""
    earlier: dict[int, list[tuple[int, float]]] = {}
    for first, second, score in edges:
        earlier.setdefault(second, []).append((first, score))
    buckets_of = large.of_rows() if large is not None and len(large.sizes) else {}
    # The kept rows of each large bucket, in file order, in that bucket's own slots of one array.
    kept_rows = np.zeros(len(large.rows) if buckets_of else 0, dtype=np.int64)
    kept_count = np.zeros(len(large.sizes) if buckets_of else 0, dtype=np.int64)
    joined: dict[int, int] = {}
    clusters: dict[int, list[tuple[int, float]]] = {}
    for row in sorted(earlier.keys() | buckets_of.keys()):
        options = [(score, -other, other) for other, score in earlier.get(row, ()) if other not in joined]
        buckets = buckets_of.get(row)
        if buckets is not None and earlier_similar is not None:
            ends = large.starts[buckets] + kept_count[buckets]
            met = [kept_rows[max(start, end - KEPT_COMPARED) : end] for start, end in zip(large.starts[buckets].tolist(), ends.tolist())]
            candidates = np.unique(np.concatenate(met)) if met else met
            if len(candidates):
                options += [(score, -other, other) for other, score in earlier_similar(row, candidates)]
        if options:
            score, _, leader = max(options)
            joined[row] = leader
            clusters.setdefault(leader, []).append((row, score))
        elif buckets is not None:
            kept_rows[large.starts[buckets] + kept_count[buckets]] = row
            kept_count[buckets] += 1
    return clusters


class ConflictingResponsesOptions(RuleOptions):
    short_answer_words: int = Field(6, ge=1, le=50, description="Answers of at most this many words are compared word by word.")


class ConflictingResponses(DatasetRule):
    """Same prompt, materially different answers.

    ## What it does
    Groups rows whose prompt (every turn before the last assistant turn,
    normalized to words) is the same, and compares their answers. Two answers
    conflict when:
    - their final answers differ and neither answer states the other's value.
      The final answer (`curate.text.answers.final_answer`) is the value after
      an explicit marker (`#### 72`, `\\boxed{72}`, `The answer is 72`,
      `Answer: 72`), else the last number of the answer's closing sentence,
      else a leading yes/no; numbers inside code, tool calls, `<<...>>`
      calculator annotations and arithmetic expressions are never final
      answers. An answer without a marker "states" a value it writes anywhere,
      so `100 °C, which is 212 °F` and `212 °F, that is 100 °C` agree, while
      `#### 13` and `#### 6` conflict whatever numbers their steps share;
    - both open with yes/no and disagree;
    - both are short (at most `short-answer-words` words) and neither contains
      the other's words (`Canberra.` vs `Sydney.`, `Positive` vs `Negative`).
    Longer answers that only differ in wording are not reported: several good
    answers to one open question are a feature, not a conflict. Every row of
    a conflicting group is reported, since either answer may be the wrong one.

    ## Why is this bad
    The model is trained toward two incompatible targets for one input: it
    learns to hedge or to pick one at random, and the wrong label caps accuracy.

    ## Example
    ```jsonl
    {"messages": [{"role": "user", "content": "How long do refunds take?"}, {"role": "assistant", "content": "5 business days."}]}
    {"messages": [{"role": "user", "content": "How long do refunds take?"}, {"role": "assistant", "content": "30 business days."}]}
    ```

    ## Use instead
    Decide which answer is right and fix or drop the others.
    """

    code = "DU003"
    name = "conflicting-responses"
    severity = Severity.ERROR
    skips_preference_rows = True
    Options = ConflictingResponsesOptions

    COLUMNS = ("prompt_key", "answer_key", "answer_final", "answer_marked", "answer_numbers", "answer_short", "answer_polarity", "answer_call")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.locations = RowLocations()
        self.parts: list = []

    def observe(self, batch: Batch) -> None:
        import polars as pl

        features = batch_features(batch)
        if features["prompt_key"].null_count() == features.height:
            return
        short = batch_short_answers(batch, self.options.short_answer_words)
        features = features.with_columns(answer_short=short).filter(pl.col("prompt_key").is_not_null())
        ids = self.locations.add(batch, batch_positions(features["row"]))
        self.parts.append(features.select(*self.COLUMNS).with_columns(row_id=pl.Series(ids)))

    def merge(self, later: ConflictingResponses) -> None:
        import polars as pl

        offset = self.locations.count  # `later`'s row ids count from 0; here they follow on
        self.locations.extend(later.locations)
        self.parts += [part.with_columns(pl.col("row_id") + offset) for part in later.parts]

    def finish(self) -> Iterable[Finding]:
        self.locations.freeze()
        if not self.parts:
            return
        import polars as pl

        rows = pl.concat(self.parts)
        self.parts = []
        shared = rows.filter((pl.len().over("prompt_key") > 1) & (pl.col("answer_key").n_unique().over("prompt_key") > 1))
        # Groups in the order of their first row, each in row order: one sort and one conversion to
        # Python for all of them (a polars group per prompt costs ~30 us each way).
        ordered = shared.sort("row_id").with_columns(first_id=pl.col("row_id").first().over("prompt_key")).sort("first_id", "row_id")
        for _, group in itertools.groupby(ordered.drop("first_id").to_dicts(), key=operator.itemgetter("prompt_key")):
            yield from self._group_findings(list(group))

    def _group_findings(self, answers: list[dict]) -> Iterator[Finding]:
        cluster: list[Location] = []
        shared: dict = {}
        for index, answer in enumerate(answers):
            # A prompt asked thousands of times ("Hi") would make all pairs quadratic: compare
            # each row with the first COMPARED_ANSWERS others of its group.
            compared = ((other_index, other) for other_index, other in enumerate(answers[: COMPARED_ANSWERS + 1]) if other_index != index)
            conflicts = [(other_index, reason) for other_index, other in compared if (reason := self.conflict(answer, other))][:COMPARED_ANSWERS]
            if not conflicts:
                continue
            if not cluster:  # most groups have no conflict: their locations are never looked up
                cluster = self.locations.locations([other["row_id"] for other in answers])
                shared = cluster_data(cluster)
            here = cluster[index]
            others = [cluster[other_index] for other_index, _ in conflicts]
            text = f"same prompt as {describe_many(others, here.path)} with a different answer ({conflicts[0][1]})"
            yield self.finding(here.path, here.line, text, related=others, data={**shared, "reason": conflicts[0][1]})

    def conflict(self, first: dict, second: dict) -> str | None:
        """Why two answers to the same prompt disagree, or None when they do not.

        The comparisons run in order; the first that can decide (returns a reason, or
        AGREE) settles it, so a new kind of answer is one more comparison in the list."""
        if first["answer_key"] == second["answer_key"]:
            return None
        for compare in (tool_call_conflict, final_value_conflict, polarity_conflict, self.short_answer_conflict):
            verdict = compare(first, second)
            if verdict is not UNDECIDED:
                return verdict or None
        return None

    def short_answer_conflict(self, first: dict, second: dict) -> str | None:
        """Short answers (at most `short-answer-words` words, `batch_short_answers`) neither of which
        contains the other's words."""
        first_text, second_text = first["answer_short"], second["answer_short"]
        if first_text is None or second_text is None:
            return UNDECIDED
        first_words, second_words = first_text.split(), second_text.split()
        if set(first_words) <= set(second_words) or set(second_words) <= set(first_words):
            return AGREE
        return f"`{first_text}` vs `{second_text}`"


#: A comparison of two answers returns a reason (they conflict), AGREE, or UNDECIDED (it cannot tell).
AGREE = ""
UNDECIDED = None


def _is_number(value: str) -> bool:
    return value not in POLAR_WORDS


def states(answer: dict, value: str) -> bool:
    """Whether `answer` states `value`: it is its final answer, or, for an answer without an
    explicit marker (whose final answer is only its last number), a number it writes anywhere."""
    if answer["answer_final"] == value:
        return True
    return not answer["answer_marked"] and value in (answer["answer_numbers"] or ())


def tool_call_conflict(first: dict, second: dict) -> str | None:
    """Tool-call answers: the same answer when they call the same functions with the same parsed
    arguments (canonical JSON), whatever the key order, spacing or wording around them."""
    if not first["answer_call"] and not second["answer_call"]:
        return UNDECIDED
    calls = first["answer_call"] or "no tool call", second["answer_call"] or "no tool call"
    return AGREE if calls[0] == calls[1] else f"`{calls[0]}` vs `{calls[1]}`"


def final_value_conflict(first: dict, second: dict) -> str | None:
    """Final answers of the same kind (two numbers, or two yes/no) that neither answer states for the other."""
    mine, theirs = first["answer_final"], second["answer_final"]
    if mine is None or theirs is None or _is_number(mine) != _is_number(theirs):
        return UNDECIDED
    if states(first, theirs) or states(second, mine):
        return AGREE
    return f"{mine} vs {theirs}"


def polarity_conflict(first: dict, second: dict) -> str | None:
    """Answers opening with opposite yes/no (`Yes, it works in 30 countries.` vs `No, ...`)."""
    mine, theirs = first["answer_polarity"], second["answer_polarity"]
    if not mine or not theirs:
        return UNDECIDED
    return AGREE if mine == theirs else f"{mine} vs {theirs}"
