"""Input kinds beyond one JSONL file: what a source is, and a reader for each kind.

A source is what the user typed: a file, a directory (walked like ruff: hidden and
git-ignored paths skipped, `exclude` / `extend-exclude` applied), `-` for stdin,
a folder written by `datasets`' `save_to_disk`, or `hf://datasets/ORG/NAME[@rev]`.
`expand_sources` turns directories into the files (and dataset folders) inside them;
`io.iter_rows` picks the reader with `source_kind`.

Every reader yields `RawRow`s. For tables (Parquet, CSV, Arrow, Hugging Face
datasets) `line` is the 1-based row number; `row_index` gives the 0-based index
a `Dataset` is indexed with. `datasets` is imported only for `hf://` inputs and
dataset folders, so `curate lint` on files stays light.
"""

from __future__ import annotations

import fnmatch
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from curate.io import InputError, RawRow, check_input_file, data_suffix

STDIN = "-"
HF_SCHEME = "hf://datasets/"
#: File types curate reads; `.gz` is accepted on the text ones.
DATA_SUFFIXES = (".jsonl", ".json", ".parquet", ".arrow", ".csv", ".tsv")
GZIP_OK = frozenset({".jsonl", ".json", ".csv", ".tsv"})
#: Never walked into or read when walking a directory (explicitly named files are always read):
#: tool folders, review journals, and the JSON files of model, tokenizer and dataset folders.
DEFAULT_EXCLUDE = (
    "node_modules", "__pycache__", "venv", "*.curate-review.jsonl",
    "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
    "adapter_config.json", "trainer_state.json", "package.json", "package-lock.json", "tsconfig.json",
)
#: A folder holding one of these is a model, adapter or `curate train` run, not data: not walked.
NOT_DATA_MARKERS = ("config.json", "adapter_config.json")
#: Columns of a CSV / TSV file that hold JSON text (message lists) and are parsed.
JSON_TEXT_COLUMNS = ("messages", "conversations", "prompt", "completion", "chosen", "rejected", "history", "tools")


@dataclass(frozen=True, slots=True)
class SourceOptions:
    """How to read sources that need more than a path."""

    split: str | None = None
    subset: str | None = None
    stdin_name: str | None = None


def is_hf_url(source: str) -> bool:
    return source.startswith(HF_SCHEME)


def is_folder(path: Path) -> bool:
    """`path.is_dir()`, False for names the OS cannot even look up (too long, a loop): their reader says why."""
    try:
        return path.is_dir()
    except OSError:
        return False


def is_dataset_folder(path: Path) -> bool:
    """A folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return is_folder(path) and ((path / "state.json").is_file() and (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file())


def source_kind(source: str) -> str:
    """`stdin`, `hf`, `dataset`, `jsonl`, `json`, `parquet`, `arrow`, `csv`, `tsv`, `dir`, or `unsupported`."""
    if source == STDIN:
        return "stdin"
    if is_hf_url(source):
        return "hf"
    path = Path(source)
    if is_folder(path):
        return "dataset" if is_dataset_folder(path) else "dir"
    suffix, gzipped = data_suffix(path)
    if suffix in DATA_SUFFIXES and (not gzipped or suffix in GZIP_OK):
        return suffix.lstrip(".")
    return "unsupported"


def unsupported_message(source: str) -> str:
    suffix = "".join(Path(source).suffixes[-2:]) or "no extension"
    return (f"{source}: unsupported file type ({suffix}); curate reads .jsonl, .json, .parquet, .arrow, .csv, .tsv "
            f"(and .gz of .jsonl, .json, .csv, .tsv), directories, `-` (stdin) and hf://datasets/ORG/NAME")


# --- directories -----------------------------------------------------------------------


def expand_sources(sources: Iterable[str], exclude: Iterable[str] | None = None, extend_exclude: Iterable[str] = ()) -> list[str]:
    """Replace every plain directory by the data files and dataset folders under it, sorted.
    Other sources pass unchanged (their reader reports a missing file or a bad type)."""
    patterns = [*(DEFAULT_EXCLUDE if exclude is None else exclude), *extend_exclude]
    expanded: list[str] = []
    for source in sources:
        if source == STDIN or is_hf_url(source) or not is_folder(Path(source)) or is_dataset_folder(Path(source)):
            expanded.append(source)
            continue
        found = walk_data_files(Path(source), patterns)
        expanded += [str(path) for path in found] or [source]  # an empty folder: its reader says so
    return expanded


def walk_data_files(root: Path, patterns: list[str]) -> list[Path]:
    """Supported files and dataset folders under `root`: hidden, excluded and git-ignored paths skipped."""
    candidates: list[Path] = []
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        keep_dirs = []
        for name in sorted(dirs):
            path = here / name
            if name.startswith(".") or _excluded(path, root, patterns) or any((path / marker).is_file() for marker in NOT_DATA_MARKERS):
                continue
            if is_dataset_folder(path):
                candidates.append(path)
            else:
                keep_dirs.append(name)
        dirs[:] = keep_dirs
        for name in sorted(files):
            path = here / name
            if name.startswith(".") or _excluded(path, root, patterns):
                continue
            if source_kind(str(path)) not in ("unsupported", "dir"):
                candidates.append(path)
    ignored = git_ignored(root, candidates)
    return sorted(path for path in candidates if path not in ignored)


def _excluded(path: Path, root: Path, patterns: list[str]) -> bool:
    """ruff-like matching: a pattern matches the name, or the path relative to the walked root."""
    relative = path.relative_to(root).as_posix()
    return any(fnmatch.fnmatch(path.name, pattern) or fnmatch.fnmatch(relative, pattern.strip("/")) for pattern in patterns)


def git_ignored(root: Path, paths: list[Path]) -> set[Path]:
    """The paths git ignores (`git check-ignore`), or none outside a git work tree or without git."""
    import subprocess

    if not paths:
        return set()
    payload = b"\0".join(str(path.resolve()).encode() for path in paths) + b"\0"
    try:
        proc = subprocess.run(["git", "-C", str(root), "check-ignore", "--stdin", "-z"], input=payload, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return set()
    if proc.returncode not in (0, 1):  # 128: not a git repository
        return set()
    ignored = {Path(item.decode()) for item in proc.stdout.split(b"\0") if item}
    return {path for path in paths if path.resolve() in ignored}


# --- stdin -----------------------------------------------------------------------------


def iter_stdin(name: str, max_row_bytes: int) -> Iterator[Any]:
    """JSON Lines from standard input, bounded like a file; rows are named after `--stdin-filename` (or `-`)."""
    from curate.io import iter_jsonl_stream

    return iter_jsonl_stream(name, sys.stdin.buffer, max_row_bytes)


# --- tables: CSV / TSV, Arrow ----------------------------------------------------------


def iter_table_rows(name: str, records: Iterable[dict]) -> Iterator[Any]:
    """RawRows of table records: nulls dropped (tables unify the schema), `line` = 1-based row number."""
    for index, obj in enumerate(records, start=1):
        yield RawRow(name, index, None, obj={key: value for key, value in obj.items() if value is not None})


def iter_csv(path: Path, separator: str, content: bytes | None = None) -> Iterator[Any]:
    """CSV / TSV through polars, every column read as text; JSON-text columns (`messages`, ...) parsed."""
    import io

    import polars as pl

    try:
        frame = pl.read_csv(path if content is None else io.BytesIO(content), separator=separator, infer_schema=False)
    except Exception as exc:  # polars raises several error types for bad files
        raise InputError(f"{path}: cannot read {'CSV' if separator == ',' else 'TSV'}: {str(exc).splitlines()[0]}") from None
    yield from iter_table_rows(str(path), (parse_json_columns(record) for record in frame.iter_rows(named=True)))


def parse_json_columns(record: dict) -> dict:
    """A CSV cell of a message column holding a JSON list or object becomes that value."""
    for key in JSON_TEXT_COLUMNS:
        value = record.get(key)
        if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
            try:
                record[key] = orjson.loads(value)
            except orjson.JSONDecodeError:
                pass  # left as text; the schema rules report what is wrong with it
    return record


def iter_arrow(path: Path, content: bytes | None = None) -> Iterator[Any]:
    """An Arrow file: the IPC stream format `datasets` writes to its cache, or the IPC file format."""
    import io

    import polars as pl

    frame = None
    for reader in (pl.read_ipc_stream, pl.read_ipc):
        try:
            frame = reader(path if content is None else io.BytesIO(content))
            break
        except Exception:  # not this flavour of Arrow; try the other
            continue
    if frame is None:
        raise InputError(f"{path}: cannot read Arrow: not an Arrow IPC stream or file")
    yield from iter_table_rows(str(path), frame.iter_rows(named=True))


# --- Hugging Face datasets -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HubDataset:
    """`hf://datasets/ORG/NAME@rev`, parsed."""

    repo: str
    revision: str | None

    @property
    def label(self) -> str:
        return f"{HF_SCHEME}{self.repo}" + (f"@{self.revision}" if self.revision else "")


def parse_hf_url(source: str) -> HubDataset:
    rest = source[len(HF_SCHEME) :].strip("/")
    repo, _, revision = rest.partition("@")
    parts = [part for part in repo.split("/") if part]
    if not 1 <= len(parts) <= 2 or any(part in (".", "..") for part in parts):
        raise InputError(f"{source}: expected hf://datasets/ORG/NAME (optionally @revision)")
    return HubDataset("/".join(parts), revision or None)


def hub_offline() -> bool:
    return any(os.environ.get(name, "").upper() in ("1", "ON", "YES", "TRUE") for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> str | None:
    """None when the Hub's host accepts a connection, else why not (one short phrase)."""
    import socket
    from urllib.parse import urlparse

    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname or "huggingface.co", port), timeout=timeout).close()
    except OSError as exc:
        return f"cannot reach {endpoint.hostname} ({exc.strerror or exc})"
    return None


def iter_hub(source: str, options: SourceOptions) -> Iterator[Any]:
    """Rows of `hf://datasets/ORG/NAME[@rev]` through `datasets.load_dataset`, streaming; from the
    local cache when offline. Rows are named `hf://datasets/ORG/NAME@rev/SPLIT` and numbered from 1."""
    dataset = parse_hf_url(source)
    if not hub_offline():
        problem = hub_reachable()
        if problem:
            raise InputError(f"{source}: {problem}; set HF_HUB_OFFLINE=1 to read the dataset from the local cache")
    yield from iter_loaded(dataset.repo, dataset.label, options, revision=dataset.revision, streaming=not hub_offline())


def iter_loaded(name: str, label: str, options: SourceOptions, *, revision: str | None = None, streaming: bool = True) -> Iterator[Any]:
    """Rows of every split (or `options.split`) of `datasets.load_dataset(name)`: a Hub id or a local
    dataset folder (data files with an optional README config)."""
    datasets = _import_datasets()
    try:
        loaded = datasets.load_dataset(name, options.subset, split=options.split, revision=revision, streaming=streaming)
    except Exception as exc:  # datasets raises many types (FileNotFoundError, ConnectionError, ValueError...)
        raise InputError(f"{label}: cannot load the dataset: {_first_line(exc)}") from None
    yield from _iter_splits(loaded, label, options.split)


def iter_saved(path: Path, options: SourceOptions) -> Iterator[Any]:
    """Rows of a `save_to_disk` folder (a Dataset, or a DatasetDict: every split or `--split`)."""
    datasets = _import_datasets()
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as exc:
        raise InputError(f"{path}: cannot load the saved dataset: {_first_line(exc)}") from None
    if isinstance(loaded, datasets.DatasetDict) and options.split:
        if options.split not in loaded:
            raise InputError(f"{path}: no split `{options.split}` (splits: {', '.join(loaded)})")
        loaded = loaded[options.split]
    yield from _iter_splits(loaded, str(path), options.split)


def _iter_splits(loaded: Any, label: str, split: str | None) -> Iterator[Any]:
    splits = loaded.items() if hasattr(loaded, "keys") else [(split or _split_name(loaded), loaded)]
    for name, rows in splits:
        try:
            yield from iter_table_rows(f"{label}/{name}" if name else label, rows)
        except Exception as exc:  # a shard that fails to download or decode mid-stream
            raise InputError(f"{label}/{name}: cannot read the dataset: {_first_line(exc)}") from None


def _split_name(dataset: Any) -> str:
    split = getattr(dataset, "split", None)
    return str(split) if split is not None else ""


def _import_datasets():
    try:
        import datasets
    except ImportError:
        raise InputError("reading Hugging Face datasets needs the `datasets` package (pip install datasets)") from None
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    return datasets


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def iter_source(source: str, max_row_bytes: int, options: SourceOptions, content: bytes | None = None) -> Iterator[Any] | None:
    """The reader for the kinds this module owns, or None for the plain files io.py reads.
    `content`: a data file's bytes, already read, parsed instead of the file."""
    kind = source_kind(source)
    if content is not None and kind in ("stdin", "hf", "dataset", "dir"):
        raise ValueError(f"{source}: a {kind} source has no file bytes to parse")
    if kind == "stdin":
        return iter_stdin(options.stdin_name or STDIN, max_row_bytes)
    if kind == "hf":
        return iter_hub(source, options)
    if kind == "dataset":
        return iter_saved(Path(source), options)
    if kind in ("csv", "tsv", "arrow", "unsupported") and content is None:
        check_input_file(Path(source))  # missing, a FIFO, a device: say that before judging the name
    if kind in ("csv", "tsv"):
        return iter_csv(Path(source), "," if kind == "csv" else "\t", content)
    if kind == "arrow":
        return iter_arrow(Path(source), content)
    if kind == "dir":
        raise InputError(f"{source}: is a directory with no data files (.jsonl, .json, .parquet, .arrow, .csv, .tsv)")
    if kind == "unsupported":
        raise InputError(unsupported_message(source))
    return None


# --- rows read from a JSON array, column mapping ----------------------------------------


def json_record_lines(data: bytes, count: int) -> list[int] | None:
    """The 1-based physical line where each record of a top-level JSON array starts, or None
    when that does not name the records apart (the array is on one line, or records share lines)."""
    if count == 0 or data.count(b"\n") < count:
        return None
    starts = _indented_record_starts(data, count)
    if starts is None:
        starts = _scanned_record_starts(data)
    if len(starts) != count:
        return None
    lines, line, previous = [], 1, 0
    for start in starts:
        line += data.count(b"\n", previous, start)
        previous = start
        lines.append(line)
    return lines if len(set(lines)) == count else None


def _indented_record_starts(data: bytes, count: int) -> list[int] | None:
    """Fast path for pretty-printers: a JSON string cannot hold a raw newline, so a `{` that opens
    a line is a real brace; the records are the one indentation level with exactly `count` of them."""
    by_indent: dict[int, list[int]] = {}
    for match in _LINE_OPENING_BRACE.finditer(b"\n" + data):
        by_indent.setdefault(len(match.group(1)), []).append(match.end() - 2)  # -1 for the "\n" put in front
    levels = [starts for starts in by_indent.values() if len(starts) == count]
    return levels[0] if len(levels) == 1 else None


def _scanned_record_starts(data: bytes) -> list[int]:
    """Offsets of the records' opening brackets, found by scanning strings and brackets."""
    starts: list[int] = []
    record_depth = 2 if data.lstrip()[:1] == b"{" else 1  # an object holding the array of records
    stack: list[bytes] = []
    for match in _JSON_TOKENS.finditer(data):
        token = match.group()
        if token[:1] == b'"':
            continue
        if token in (b"[", b"{"):
            if len(stack) == record_depth and stack[-1] == b"[":
                starts.append(match.start())
            stack.append(token)
        elif stack:
            stack.pop()
    return starts


_LINE_OPENING_BRACE = re.compile(rb"\n([ \t]*)\{")
_JSON_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


class IndexedRow(RawRow):
    """A record of a JSON array: `line` is where its object starts, `index` its 0-based position."""

    __slots__ = ("index",)

    def __init__(self, *args: Any, index: int = -1, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.index = index

    def _fields(self) -> tuple:
        return (*super()._fields(), self.index)


def apply_column_mapping(rows: list[Any], columns: dict[str, str]) -> None:
    """Map each parsed row's fields with `--columns` (in place); a mapped row is no longer its
    source text, so `curate fix` writes it in the canonical format."""
    from curate.formats import apply_columns

    for row in rows:
        if row.obj is not None and row.error is None:
            mapped = apply_columns(row.obj, columns)
            if mapped is not row.obj:
                row.obj, row.text = mapped, None


# --- outputs ---------------------------------------------------------------------------

OUTPUT_FORMATS = ("jsonl", "parquet")


def output_format_for(source: str, output: str | None = None) -> str:
    """What `curate fix` writes for a source: what the output's name says (`.parquet`, `.jsonl`),
    else Parquet for tables (Parquet, Arrow, datasets) and JSONL for the rest."""
    if output is not None:
        suffix, _ = data_suffix(Path(output))
        if suffix == ".parquet":
            return "parquet"
        if suffix in (".jsonl", ".json", ".ndjson"):
            return "jsonl"
    return "parquet" if source_kind(source) in ("parquet", "arrow", "dataset", "hf") else "jsonl"


def write_rows(path: str, lines: list[bytes], fmt: str) -> None:
    """Write JSON lines as JSONL, or as a Parquet table, atomically (temp file + rename)."""
    from curate.io import atomic_write_bytes

    if fmt == "jsonl":
        atomic_write_bytes(path, b"".join(lines))
        return
    import io

    import polars as pl

    records = [orjson.loads(line) for line in lines]
    try:
        frame = pl.DataFrame(records, infer_schema_length=None)
    except Exception as exc:  # rows whose fields do not unify into one table schema
        raise InputError(f"{path}: cannot write these rows as Parquet ({_first_line(exc)}); use --output-format jsonl") from None
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    atomic_write_bytes(path, buffer.getvalue())
