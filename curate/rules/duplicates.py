"""Duplicate rules (DU): exact copies, near-duplicates and conflicting answers across all input files.

Each rule observes every batch, keeping only compact per-row data (64-bit
keys, LSH band hashes, sorted 32-bit shingle sets), and reports at the end.
Findings point (`related`) at the first row of their cluster, the row a
cleaner keeps, and carry the whole cluster in `data["cluster"]`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field, field_validator

from curate.engine.batch import Batch
from curate.engine.findings import Finding, Location, Severity
from curate.engine.rule import DatasetRule, RuleOptions, RunContext
from curate.formats import CANONICAL_ROLES
from curate.text.minhash import LshBands, MinHasher, candidate_pairs
from curate.text.rows import batch_features, batch_tokens, number_keys
from curate.text.shingles import fold32, pair_jaccards, shingle_hashes, unique_row_shingles

#: How far below the verification threshold the LSH bands are tuned, so pairs just above it are found.
LSH_MARGIN = 0.2
#: Lines named in a message before "and N more".
NAMED_LINES = 5
#: Cluster members listed in a finding's data (the size is always given).
CLUSTER_IN_DATA = 50
#: In a group of rows sharing one prompt, each row is compared with at most this many others (DU003).
COMPARED_ANSWERS = 50


class RowLocations:
    """(path, line) of every row a rule kept, by a global row id, stored as arrays, not tuples."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self._path_ids: dict[str, int] = {}
        self._path_parts: list[np.ndarray] = []
        self._line_parts: list[np.ndarray] = []
        self.count = 0

    def add(self, batch: Batch, positions: np.ndarray) -> np.ndarray:
        """Record the rows at `positions` of `batch`; returns their global ids."""
        rows = batch.rows
        path_ids = np.fromiter((self._path_id(rows[p].path) for p in positions), dtype=np.int32, count=len(positions))
        lines = np.fromiter((rows[p].line for p in positions), dtype=np.int64, count=len(positions))
        self._path_parts.append(path_ids)
        self._line_parts.append(lines)
        ids = np.arange(self.count, self.count + len(positions), dtype=np.int64)
        self.count += len(positions)
        return ids

    def _path_id(self, path: str) -> int:
        if path not in self._path_ids:
            self._path_ids[path] = len(self.paths)
            self.paths.append(path)
        return self._path_ids[path]

    def freeze(self) -> None:
        self.path_of = np.concatenate(self._path_parts) if self._path_parts else np.zeros(0, np.int32)
        self.line_of = np.concatenate(self._line_parts) if self._line_parts else np.zeros(0, np.int64)

    def location(self, row_id: int) -> Location:
        return Location(self.paths[int(self.path_of[row_id])], int(self.line_of[row_id]))


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
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    group_start = np.concatenate(([True], ordered[1:] != ordered[:-1])) if len(keys) else np.zeros(0, bool)
    group_of = np.cumsum(group_start) - 1
    first_of = np.empty(len(keys), dtype=np.int64)
    first_of[order] = order[group_start][group_of]
    return first_of, first_of == np.arange(len(keys))


class ExactDuplicate(DatasetRule):
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
    fixable = True

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

    def finish(self) -> Iterable[Finding]:
        self.locations.freeze()
        if not self.keys:
            return
        first_of, is_first = first_occurrences(np.concatenate(self.keys))
        repeats = np.flatnonzero(~is_first)
        members: dict[int, list[int]] = {}
        for row_id in repeats:
            members.setdefault(int(first_of[row_id]), []).append(int(row_id))
        for first, copies in members.items():
            cluster = [self.locations.location(first)] + [self.locations.location(c) for c in copies]
            data = {"jaccard": 1.0, **cluster_data(cluster)}
            for copy in cluster[1:]:
                text = f"exact duplicate of {describe(cluster[0], copy.path)}"
                if len(cluster) > 2:
                    text += f" (also {describe_many(other_members(cluster[1:], copy), copy.path, total=len(cluster) - 2)})"
                yield self.finding(copy.path, copy.line, text, related=[cluster[0]], data=dict(data))


class NearDuplicateOptions(RuleOptions):
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="Jaccard similarity of word shingles at or above which two rows are near-duplicates.")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations (more finds borderline pairs more reliably, slower).")
    shingle_size: int = Field(2, ge=1, le=10, description="Words per shingle. 2 keeps a dropped or repeated word from hiding a copy; larger is stricter.")
    roles: list[str] = Field(default_factory=lambda: ["user", "assistant"], description="Roles whose text is compared (system prompts are often shared by design).")
    numbers_must_match: bool = Field(True, description="Rows that mention different numbers are different examples (math problems with other values), not near-duplicates.")

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

    def freeze(self) -> None:
        self.values = np.concatenate(self.parts) if self.parts else np.zeros(0, np.uint32)
        self.counts = np.concatenate(self.count_parts) if self.count_parts else np.zeros(0, np.int64)
        self.starts = np.cumsum(self.counts) - self.counts
        self.parts, self.count_parts = [], []


class NearDuplicate(DatasetRule):
    """Row is almost the same as an earlier row (MinHash LSH, Jaccard >= threshold).

    ## What it does
    Cuts the text of the compared roles (user and assistant by default) into
    normalized word shingles (2 words by default), finds candidate pairs with
    MinHash LSH across all input files, and confirms each candidate with the
    exact Jaccard similarity of the two shingle sets. Rows are clustered in file
    order: a row similar to a kept row joins its cluster, and the finding names
    the kept row and the score. Rows that mention different numbers are
    distinct examples, not near-duplicates (option `numbers-must-match`); exact
    copies are left to DU001 when it runs.

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
    fixable = True
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
        hashes, per_row = shingle_hashes(tokens.hashes, tokens.counts, self.options.shingle_size)
        values, counts = unique_row_shingles(fold32(hashes), per_row)
        if len(positions) == 0:
            return
        self.locations.add(batch, positions)
        self.shingles.add(values, counts)
        self.band_parts.append(self.lsh.hashes(self.hasher.signatures(values, counts)))
        if "DU001" in shared_state(self.context).active:  # exact copies are DU001's: keep keys to skip them
            features = batch_features(batch)
            key_of_row = np.zeros(len(batch), dtype=np.uint64)
            key_of_row[features["row"].to_numpy()] = features["conversation_key"].to_numpy()
            self.key_parts.append(key_of_row[positions])
        self.number_parts.append(number_keys(positions, tokens))

    def finish(self) -> Iterable[Finding]:
        self.locations.freeze()
        self.shingles.freeze()
        if not self.band_parts:
            return
        pairs = self._candidates()
        edges = self._verified(pairs)
        yield from self._report(cluster_in_file_order(edges))

    def _candidates(self) -> np.ndarray:
        bands = np.concatenate(self.band_parts)
        self.band_parts = []
        pairs = candidate_pairs(bands)
        if self.options.numbers_must_match and len(pairs):
            numbers = np.concatenate(self.number_parts)
            pairs = pairs[numbers[pairs[:, 0]] == numbers[pairs[:, 1]]]
        if "DU001" in shared_state(self.context).active and len(pairs):
            _, is_first = first_occurrences(np.concatenate(self.key_parts))
            pairs = pairs[is_first[pairs[:, 0]] & is_first[pairs[:, 1]]]
        return pairs

    def _verified(self, pairs: np.ndarray) -> list[tuple[int, int, float]]:
        """Candidate pairs whose exact shingle Jaccard reaches the threshold, with the score."""
        store = self.shingles
        scores = pair_jaccards(store.values, store.starts, store.counts, pairs)
        keep = scores >= self.options.threshold
        return list(zip(pairs[keep, 0].tolist(), pairs[keep, 1].tolist(), scores[keep].tolist()))

    def _report(self, clusters: dict[int, list[tuple[int, float]]]) -> Iterator[Finding]:
        for kept, members in clusters.items():
            cluster = [self.locations.location(kept)] + [self.locations.location(member) for member, _ in members]
            shared = cluster_data(cluster)
            for location, (_, score) in zip(cluster[1:], members):
                text = f"near-duplicate of {describe(cluster[0], location.path)} (Jaccard {score:.2f})"
                if len(cluster) > 2:
                    text += f"; same cluster as {describe_many(other_members(cluster[1:], location), location.path, total=len(cluster) - 2)}"
                yield self.finding(location.path, location.line, text, related=[cluster[0]], data={"jaccard": round(score, 4), **shared})


def cluster_in_file_order(edges: list[tuple[int, int, float]]) -> dict[int, list[tuple[int, float]]]:
    """Greedy clustering as a cleaner reads the file: a row joins the most similar earlier *kept* row.

    A row whose only similar rows were themselves dropped stays (its own copy
    survives nowhere else). Returns kept row -> [(member, Jaccard to the kept row)]."""
    earlier: dict[int, list[tuple[int, float]]] = {}
    for first, second, score in edges:
        earlier.setdefault(second, []).append((first, score))
    joined: dict[int, int] = {}
    clusters: dict[int, list[tuple[int, float]]] = {}
    for row in sorted(earlier):
        kept = [(score, -other, other) for other, score in earlier[row] if other not in joined]
        if kept:
            score, _, leader = max(kept)
            joined[row] = leader
            clusters.setdefault(leader, []).append((row, score))
    return clusters


class ConflictingResponsesOptions(RuleOptions):
    short_answer_words: int = Field(6, ge=1, le=50, description="Answers of at most this many words are compared word by word.")


class ConflictingResponses(DatasetRule):
    """Same prompt, materially different answers.

    ## What it does
    Groups rows whose prompt (every turn before the last assistant turn,
    normalized to words) is the same, and compares their final answers. Two
    answers conflict when:
    - both end on a number (within their last few words) and the numbers
      differ (`within 5 days.` vs `within 30 days.`, `#### 72` vs `#### 74`);
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

    COLUMNS = ("prompt_key", "answer_key", "answer_number", "answer_short", "answer_polarity")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.locations = RowLocations()
        self.parts: list = []

    def observe(self, batch: Batch) -> None:
        import polars as pl

        features = batch_features(batch).filter(pl.col("prompt_key").is_not_null())
        if features.height == 0:
            return
        ids = self.locations.add(batch, batch_positions(features["row"]))
        self.parts.append(features.select(*self.COLUMNS).with_columns(row_id=pl.Series(ids)))

    def finish(self) -> Iterable[Finding]:
        import polars as pl

        self.locations.freeze()
        if not self.parts:
            return
        rows = pl.concat(self.parts)
        self.parts = []
        shared = rows.filter((pl.len().over("prompt_key") > 1) & (pl.col("answer_key").n_unique().over("prompt_key") > 1))
        for _, group in shared.sort("row_id").group_by("prompt_key", maintain_order=True):
            yield from self._group_findings(group.to_dicts())

    def _group_findings(self, answers: list[dict]) -> Iterator[Finding]:
        cluster = [self.locations.location(answer["row_id"]) for answer in answers]
        shared = cluster_data(cluster)
        for index, answer in enumerate(answers):
            # A prompt asked thousands of times ("Hi") would make all pairs quadratic: compare
            # each row with the first COMPARED_ANSWERS others of its group.
            compared = (other for other_index, other in enumerate(answers[: COMPARED_ANSWERS + 1]) if other_index != index)
            conflicts = [(other, reason) for other in compared if (reason := self.conflict(answer, other))][:COMPARED_ANSWERS]
            if not conflicts:
                continue
            here = cluster[index]
            others = [self.locations.location(other["row_id"]) for other, _ in conflicts]
            text = f"same prompt as {describe_many(others, here.path)} with a different answer ({conflicts[0][1]})"
            yield self.finding(here.path, here.line, text, related=others, data={**shared, "reason": conflicts[0][1]})

    def conflict(self, first: dict, second: dict) -> str | None:
        """Why two answers to the same prompt disagree, or None when they do not."""
        if first["answer_key"] == second["answer_key"]:
            return None
        if first["answer_number"] is not None and second["answer_number"] is not None:
            if first["answer_number"] != second["answer_number"]:
                return f"{first['answer_number']} vs {second['answer_number']}"
            return None
        if first["answer_polarity"] and second["answer_polarity"] and first["answer_polarity"] != second["answer_polarity"]:
            return f"{first['answer_polarity']} vs {second['answer_polarity']}"
        return self._short_answer_conflict(first["answer_short"], second["answer_short"])

    def _short_answer_conflict(self, first: str | None, second: str | None) -> str | None:
        if first is None or second is None:
            return None
        limit = self.options.short_answer_words
        first_words, second_words = set(first.split()), set(second.split())
        if len(first.split()) > limit or len(second.split()) > limit:
            return None
        if first_words <= second_words or second_words <= first_words:
            return None
        return f"`{first}` vs `{second}`"
