"""What several rules share: candidate messages, final answers, locating a hit in an Alpaca
prompt, previews and percentages, dataset counters, and the row edits their fixes make.

Rules import from here, never from each other, so a rule module can change without breaking
another one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

import orjson

from curate.engine.batch import Batch, Row
from curate.engine.findings import Location
from curate.formats import Message, RowFormat, conversation_to_record, normalize
from curate.text.secrets import excerpt

if TYPE_CHECKING:
    import numpy as np
    import polars as pl


# -- finding what to check --------------------------------------------------------------------


def candidate_messages(
    batch: Batch, *predicates: pl.Expr, roles: tuple[str, ...] = (), screen: str | None = None
) -> Iterator[tuple[Row, Message]]:
    """(row, message) pairs whose content passes polars prefilters, in file order.
    `screen` is a regex the content must match, matched through `screened_messages`;
    predicates apply one after the other, so put the cheapest, most selective first."""
    import polars as pl

    frame = batch.messages if screen is None else screened_messages(batch, screen)
    if roles:
        frame = frame.filter(pl.col("role").is_in(roles))
    for predicate in predicates:
        frame = frame.filter(predicate)
    return frame_messages(batch, frame)


def frame_messages(batch: Batch, frame: pl.DataFrame) -> Iterator[tuple[Row, Message]]:
    """(row, message) of each row of a frame taken from `batch.messages`, in the frame's order."""
    for row_pos, msg_pos in zip(frame["row"].to_list(), frame["msg"].to_list()):
        row = batch.rows[row_pos]
        yield row, row.conversation.messages[msg_pos]


#: The content regexes declared by the rules set up in this process (`declare_screen`), in order.
_SCREENS: dict[str, None] = {}
#: Per batch: the screens matched, and the messages their union let through.
_SCREENED: WeakKeyDictionary[Batch, tuple[tuple[str, ...], pl.DataFrame]] = WeakKeyDictionary()


def declare_screen(pattern: str) -> str:
    """Declare (at a rule's setup) a content regex the rule screens messages with, so one pass
    over each batch matches every rule's screen at once (`screened_messages`). Returns it."""
    _SCREENS.setdefault(pattern, None)
    return pattern


#: Message text a batch needs before its screens are matched as one union (`screened_messages`):
#: compiling the union costs ~27 ms once per process, against ~15 ms for the screens alone, and
#: it saves ~7 ms a MB of text scanned, so a small input (a 1k-row pre-commit file, ~0.5 MB) scans
#: each screen alone.
SCREEN_UNION_MIN_BYTES = 1 << 20
#: Whether this process has matched a union already (its compiled regex is cached by polars).
_UNION_COMPILED = False


def screened_messages(batch: Batch, pattern: str) -> pl.DataFrame:
    """The rows of `batch.messages` whose content matches `pattern`. Scanning text is what costs,
    so in a batch of SCREEN_UNION_MIN_BYTES or more the union of all declared screens is matched
    once, and `pattern` only on the few messages the union lets through: the same rows as
    filtering on `pattern` alone, which is what a smaller batch does."""
    import polars as pl

    global _UNION_COMPILED
    declare_screen(pattern)
    matches = pl.col("content").str.contains(pattern)
    screened = _SCREENED.get(batch)
    if screened is None or pattern not in screened[0]:
        messages = batch.messages
        if not _UNION_COMPILED and messages["content"].str.len_bytes().sum() < SCREEN_UNION_MIN_BYTES:
            return messages.filter(matches)
        patterns = tuple(_SCREENS)
        union = "|".join(f"(?:{screen})" for screen in patterns)  # inline flags stay inside their group
        screened = _SCREENED[batch] = (patterns, messages.filter(pl.col("content").str.contains(union)))
        _UNION_COMPILED = True
    return screened[1].filter(matches)


_FINAL_ANSWERS: WeakKeyDictionary[Batch, pl.DataFrame] = WeakKeyDictionary()


def final_answers(batch: Batch) -> pl.DataFrame:
    """`row`, `content` of each row's last non-empty assistant turn (built once per batch)."""
    answers = _FINAL_ANSWERS.get(batch)
    if answers is None:
        answers = _FINAL_ANSWERS[batch] = _select_final_answers(batch)
    return answers


def _select_final_answers(batch: Batch) -> pl.DataFrame:
    """The last assistant message with a non-space character of each row: the message frame is in
    row order, so it is the last such message before the row changes (no group-by, and no
    stripped copy of every answer to test)."""
    import numpy as np
    import polars as pl

    messages = batch.messages
    answered = messages.select((pl.col("role") == "assistant") & pl.col("content").str.contains(r"\S")).to_series().to_numpy()
    positions = np.flatnonzero(answered)
    if len(positions):
        rows = messages["row"].to_numpy()[positions]
        positions = positions[np.append(rows[1:] != rows[:-1], True)]  # the last of each row's run
    return messages.select("row", "content")[positions]


def is_alpaca_prompt(row: Row, message: Message) -> bool:
    """The Alpaca user turn is `instruction` and `input` joined; rules check those fields one by one."""
    return row.format is RowFormat.ALPACA and message.container == "instruction"


def locate(row: Row, message: Message, offset: int) -> tuple[Message, int]:
    """The message a finding at `offset` should name, and the offset in it. For the
    Alpaca prompt (`instruction` + blank line + `input`) a hit past the instruction
    names the `input` field, so the user knows which field to edit."""
    if is_alpaca_prompt(row, message):
        instruction = row.obj.get("instruction", "")
        start = len(instruction) + 2
        if offset >= start and message.content.startswith(instruction) and len(message.content) > len(instruction):
            return replace(message, content=message.content[start:], container="input"), offset - start
    return message, offset


# -- where rows are: compact locations for rules that report rows at the end ---------------------


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
        import numpy as np

        paths, path_index, lines = batch_locations(batch)
        chosen = path_index[positions]
        # Only the paths of the recorded rows get an id, so `paths` names no file without rows here.
        ids_of_paths = np.full(len(paths), -1, dtype=np.int32)
        for index in np.unique(chosen).tolist():
            ids_of_paths[index] = self._path_id(paths[index])
        self._path_parts.append(ids_of_paths[chosen])
        self._line_parts.append(lines[positions])
        ids = np.arange(self.count, self.count + len(positions), dtype=np.int64)
        self.count += len(positions)
        return ids

    def _path_id(self, path: str) -> int:
        if path not in self._path_ids:
            self._path_ids[path] = len(self.paths)
            self.paths.append(path)
        return self._path_ids[path]

    def extend(self, later: RowLocations) -> None:
        """Append the rows `later` recorded (in another process, on the rows after these: see
        `DatasetRule.merge`); their ids follow on from this one's."""
        import numpy as np

        own_ids = np.array([self._path_id(path) for path in later.paths], dtype=np.int32)
        self._path_parts += [own_ids[part] for part in later._path_parts]
        self._line_parts += later._line_parts
        self.count += later.count

    def freeze(self) -> None:
        import numpy as np

        self.path_of = np.concatenate(self._path_parts) if self._path_parts else np.zeros(0, np.int32)
        self.line_of = np.concatenate(self._line_parts) if self._line_parts else np.zeros(0, np.int64)

    def locations(self, row_ids: list[int]) -> list[Location]:
        """(path, line) of each of `row_ids`, looked up together."""
        paths = self.paths
        return [Location(paths[path], line) for path, line in zip(self.path_of[row_ids].tolist(), self.line_of[row_ids].tolist())]

    def grouped_locations(self, groups: list[list[int]]) -> list[list[Location]]:
        """`locations` of each group of row ids (a cluster's), all looked up in one pass: at 1M rows
        ~65k clusters of mostly two rows, where numpy's cost per call was most of each lookup."""
        found = self.locations([row_id for group in groups for row_id in group])
        grouped, start = [], 0
        for group in groups:
            grouped.append(found[start : start + len(group)])
            start += len(group)
        return grouped


_LOCATIONS: WeakKeyDictionary[Batch, tuple[list[str], np.ndarray, np.ndarray]] = WeakKeyDictionary()


def batch_locations(batch: Batch) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(the batch's distinct paths, each row's index into them, each row's line), built once per
    batch for every dataset rule that keeps row locations."""
    found = _LOCATIONS.get(batch)
    if found is None:
        import numpy as np

        raws = [row.raw for row in batch.rows]
        paths = list(dict.fromkeys(raw.path for raw in raws))
        index = {path: position for position, path in enumerate(paths)}
        path_index = np.zeros(len(raws), dtype=np.int32) if len(paths) == 1 else np.array([index[raw.path] for raw in raws], dtype=np.int32)
        lines = np.array([raw.line for raw in raws], dtype=np.int64)
        found = _LOCATIONS[batch] = (paths, path_index, lines)
    return found


class LocationsByKey:
    """Rows grouped by a key (their format, say), each group a `RowLocations`: 12 bytes a row
    instead of a (path, line) tuple's ~100, which at a million rows is the difference between
    12 MB and 100 MB per rule. Keys keep the order they were first seen in."""

    def __init__(self) -> None:
        self.groups: dict[str, RowLocations] = {}

    def add(self, batch: Batch, keys: list[str], positions: list[int]) -> None:
        """Record the batch's rows at `positions` under their `keys` (one key per position)."""
        import numpy as np

        by_key: dict[str, list[int]] = {}
        for position, key in zip(positions, keys):
            by_key.setdefault(key, []).append(position)
        for key, chosen in by_key.items():
            self.add_group(batch, key, np.asarray(chosen, dtype=np.int64))

    def add_group(self, batch: Batch, key: str, positions: np.ndarray) -> None:
        """Record the batch's rows at `positions`, all under `key`."""
        if key not in self.groups:
            self.groups[key] = RowLocations()
        self.groups[key].add(batch, positions)

    def extend(self, later: LocationsByKey) -> None:
        """Append the groups of `later` (the rows after these), new keys after the known ones."""
        for key, group in later.groups.items():
            self.groups.setdefault(key, RowLocations()).extend(group)

    def frozen(self) -> dict[str, RowLocations]:
        """The groups, with their arrays built (`RowLocations.freeze`)."""
        for group in self.groups.values():
            group.freeze()
        return self.groups


# -- what messages say --------------------------------------------------------------------------


def quoted(text: str, limit: int = 40) -> str:
    """A short, single-line, quoted preview of `text` for a message, secrets masked (`excerpt`)."""
    return f'"{excerpt(text, limit)}"'


def percent(share: float) -> str:
    """`72%`, or `99.2%` / `0.4%` where rounding to a whole percent would hide the point."""
    whole = round(share * 100)
    if whole in (0, 100) and 0 < share < 1:
        return f"{share:.1%}"
    return f"{whole}%"


class DatasetCounter:
    """Rows with a conversation, and the first file seen (where dataset-level findings point)."""

    def __init__(self) -> None:
        self.rows = 0
        self.path: str | None = None

    def add(self, batch: Batch) -> None:
        self.rows += batch.conversation_count
        if self.path is None and batch.rows:
            self.path = batch.rows[0].path

    def extend(self, later: DatasetCounter) -> None:
        """Count the rows `later` counted (the rows after these)."""
        self.rows += later.rows
        self.path = self.path if self.path is not None else later.path


# -- the row edits fixes make (each returns a new value; the row as read is never changed) ------

_SOURCE_PATTERN = re.compile(r"^(\w+)\[(\d+)\]$")


def map_strings(value: Any, transform: Callable[[str], str], *, keys: bool = False) -> Any:
    """A copy of a JSON value with `transform` applied to every string in it (and to keys if asked)."""
    if isinstance(value, str):
        return transform(value)
    if isinstance(value, list):
        return [map_strings(item, transform, keys=keys) for item in value]
    if isinstance(value, dict):
        return {(transform(key) if keys else key): map_strings(item, transform, keys=keys) for key, item in value.items()}
    return value


def redact_strings(value: Any, redact: Callable[[str], tuple[str, int]]) -> tuple[Any, int]:
    """The value with `redact` applied to every string in it (not to keys), and the items replaced."""
    replaced = 0

    def redact_one(text: str) -> str:
        nonlocal replaced
        text, count = redact(text)
        replaced += count
        return text

    return map_strings(value, redact_one), replaced


def _target(obj: dict, source: str | None) -> Any:
    """The top level (source None) or the message named by a source such as `messages[2]`."""
    if source is None:
        return obj
    match = _SOURCE_PATTERN.match(source)
    items = obj.get(match.group(1)) if match else None
    index = int(match.group(2)) if match else -1
    return items[index] if isinstance(items, list) and 0 <= index < len(items) else None


def remove_key(obj: dict, source: str | None, key: str) -> dict:
    """A copy of the row without one top-level (source None) or message-level key."""
    obj = orjson.loads(orjson.dumps(obj))  # deep copy: the caller's row stays as read
    target = _target(obj, source)
    if isinstance(target, dict):
        target.pop(key, None)
    return obj


def rename_role(obj: dict, source: str, role: str) -> dict:
    """A copy of the row with the `role` of the message named by `source` set to `role`."""
    obj = orjson.loads(orjson.dumps(obj))
    target = _target(obj, source)
    if isinstance(target, dict) and "role" in target:
        target["role"] = role
    return obj


def clear_field(obj: Any, key: str) -> Any:
    """A copy of the row with a top-level field set to "" (a placeholder Alpaca `input`)."""
    return {**obj, key: ""} if isinstance(obj, dict) else obj


def as_messages_record(obj: dict) -> dict:
    """The row in the OpenAI `messages` format (meta keys kept)."""
    conversation = normalize(obj)
    return obj if conversation is None else conversation_to_record(conversation)
