"""Tolerant readers for JSONL / JSON / Parquet (optionally gzipped) and atomic writers.

Readers never raise on a bad row: a row that does not decode or parse carries its
error so the SC001 rule can report it, and lint goes on. Problems with a whole
file (missing, a directory, empty, UTF-16, a JSON array that does not parse)
raise `InputError`, a one-line message that names the file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import mmap
import os
import re
import stat
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from functools import cache
from itertools import islice, repeat
from pathlib import Path
from typing import IO, Any

import orjson

#: Rows larger than this are reported (SC009) instead of parsed.
DEFAULT_MAX_ROW_BYTES = 10 * 1024 * 1024

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_UTF32_BOMS = (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff")
#: A gzipped JSON document (read whole) may decompress to this many times its size, plus
#: `GZIP_FLOOR_BYTES`; beyond that it is refused as a likely gz bomb.
GZIP_MAX_RATIO = 50
GZIP_FLOOR_BYTES = 64 * 1024 * 1024
#: How much of an oversized line is read at a time while skipping to its end.
_SKIP_CHUNK = 1024 * 1024


class InputError(Exception):
    """A problem with a whole input file; the message is one line naming the file."""


class OutputError(InputError):
    """An output that cannot be written (a directory, a full disk, a file-size limit); one line naming it."""


class RawRow:
    """One physical row of an input file, before normalization.

    `line` is the 1-based physical line for JSONL, the 1-based row index for
    Parquet and JSON arrays. Exactly one of `obj` / `error` is meaningful:
    `error` is set when the row could not be decoded or parsed. `text` may be
    given as the line's bytes when they are known to be UTF-8 (orjson parsed
    them): they are decoded when `text` is first read, which lint rarely does.
    """

    __slots__ = ("path", "line", "_text", "obj", "error", "oversized", "size")

    def __init__(
        self, path: str, line: int, text: str | bytes | None, obj: Any = None, error: str | None = None, oversized: int = 0, size: int = 0
    ):
        self.path = path
        self.line = line
        self._text = text
        self.obj = obj
        self.error = error
        self.oversized = oversized  # byte size when the row was too large to parse
        self.size = size  # bytes this row took in the file (progress reporting)

    @property
    def text(self) -> str | None:
        text = self._text
        if type(text) is bytes:
            text = self._text = text.decode("utf-8")
        return text

    @text.setter
    def text(self, text: str | None) -> None:
        self._text = text

    @property
    def ok(self) -> bool:
        return self.error is None and not self.oversized

    def _fields(self) -> tuple:
        return self.path, self.line, self.text, self.obj, self.error, self.oversized, self.size

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._fields() == other._fields()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  (mutable, like the dataclass it was)

    def __repr__(self) -> str:
        path, line, text, obj, error, oversized, size = self._fields()
        return f"{type(self).__name__}(path={path!r}, line={line}, text={text!r}, obj={obj!r}, error={error!r}, oversized={oversized}, size={size})"


def row_hash(row: RawRow) -> str:
    """A content hash of the row that survives re-formatting of the JSON (baseline key)."""
    if row.obj is not None and row.error is None:
        payload = orjson.dumps(row.obj, option=orjson.OPT_SORT_KEYS)
    else:
        payload = (row.text or "").encode("utf-8", "surrogatepass")
    return hashlib.blake2b(payload, digest_size=8).hexdigest()


def check_input_file(path: Path) -> None:
    """Refuse, before opening it, anything but a regular file: a FIFO would block on open, a
    device (/dev/zero) never ends, a directory is not data."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as exc:  # a symlink loop, a name too long, no permission
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise InputError(f"{path}: is a directory; pass the data files inside it")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file"
        raise InputError(f"{path}: is {kind}, not a regular file; pass a data file (or - for stdin)")


def encoding_problem(name: str, head: bytes) -> str | None:
    """What is wrong with a file that starts with `head`, when it is not UTF-8 (or UTF-8 with a BOM)."""
    for boms, label in ((_UTF32_BOMS, "UTF-32"), (_UTF16_BOMS, "UTF-16")):
        if head.startswith(boms):
            return f"{name}: file is {label} encoded; convert it to UTF-8 (iconv -f {label} -t UTF-8 {name} > out.jsonl)"
    return None


#: How much of a stream is read at a time; lines are split out of each block in one pass.
_READ_BLOCK = 1024 * 1024


def iter_line_blocks(handle: IO[bytes], max_bytes: int, block: int = 0) -> Iterator[tuple[list[bytes | int], bool, bool]]:
    """The lines of a binary stream, a block at a time: (lines, whether they ended with a newline,
    whether the block is clean). Each line is its bytes without the newline (a CR before it kept),
    or, when the line holds more than `max_bytes` (CRs before the newline aside), its size in
    bytes as an int: such a line is never held in memory; reading skips to its newline. Only a
    last block holding the stream's unterminated last line alone is not newline-terminated; a
    clean block has no CR and no oversized line. Memory stays bounded by `max_bytes` plus one
    block whatever the stream holds (one 4 GB line in a .gz)."""
    cap = max_bytes + 3  # the row, a CRLF, and one byte that says "longer"
    block = block or _READ_BLOCK
    read = handle.read
    pending = b""
    skipped = -1  # bytes of an oversized line read so far, -1 when not in one
    while True:
        chunk = read(block)
        if not chunk:
            break
        lines: list[bytes | int] = []
        if skipped >= 0:
            end = chunk.find(b"\n")
            if end < 0:
                skipped += len(chunk)
                continue
            lines.append(skipped + end + 1)
            skipped = -1
            data = chunk[end + 1 :]
        else:
            data = pending + chunk if pending else chunk
        parts = data.split(b"\n")
        pending = parts.pop()
        clean = not lines and b"\r" not in data
        if parts and max(map(len, parts)) > max_bytes:
            clean = False
            lines += [_bounded(line, max_bytes, cap) for line in parts]
        elif lines:
            lines += parts
        else:
            lines = parts  # type: ignore[assignment]
        if len(pending) >= cap:
            skipped, pending = len(pending), b""
        if lines:
            yield lines, True, clean
    if skipped >= 0:
        yield [skipped], False, False
    elif pending:
        yield [_bounded(pending, max_bytes, cap, newline=0)], False, False


def _bounded(line: bytes, max_bytes: int, cap: int, newline: int = 1) -> bytes | int:
    """The line, or its size when it is over `max_bytes` (see `iter_line_blocks`)."""
    if len(line) >= cap or (len(line) > max_bytes and len(line.rstrip(b"\r")) > max_bytes):
        return len(line) + newline
    return line


def _open_binary(path: Path, content: bytes | None = None) -> IO[bytes]:
    """The file's bytes as a stream (gunzipped for .gz); from `content` when the caller already read it."""
    if content is not None:
        handle: IO[bytes] = io.BytesIO(content)
        return gzip.GzipFile(fileobj=handle, mode="rb") if path.suffix == ".gz" else handle
    if path.suffix == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def data_suffix(path: Path) -> tuple[str, bool]:
    """(the data suffix, lowercased; whether the file is gzipped)."""
    suffixes = [s.lower() for s in path.suffixes]
    gzipped = bool(suffixes) and suffixes[-1] == ".gz"
    if gzipped:
        suffixes = suffixes[:-1]
    return (suffixes[-1] if suffixes else ""), gzipped


def _parse_line(path: str, line_no: int, raw: bytes | None, size: int) -> RawRow:
    if raw is None:
        return RawRow(path, line_no, None, oversized=size, size=size)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        bad = raw[exc.start : exc.start + 1].hex()
        return RawRow(
            path,
            line_no,
            raw.decode("utf-8", "replace"),
            error=f"line is not valid UTF-8 (byte 0x{bad} at column {exc.start + 1})",
            size=size,
        )
    try:
        return RawRow(path, line_no, text, obj=orjson.loads(raw), size=size)
    except orjson.JSONDecodeError as exc:
        return RawRow(path, line_no, text, error=f"invalid JSON: {_short_json_error(exc)}", size=size)


def _short_json_error(exc: orjson.JSONDecodeError) -> str:
    message = str(exc.msg) if hasattr(exc, "msg") else str(exc)
    column = getattr(exc, "colno", None)
    return f"{message} (column {column})" if column else message


def iter_jsonl(path: Path, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES, content: bytes | None = None) -> Iterator[RawRow]:
    """Yield every non-blank line of a JSONL file as a RawRow (BOM and CRLF tolerated)."""
    for chunk in iter_jsonl_chunks(path, max_row_bytes, content):
        yield from chunk


def iter_jsonl_chunks(path: Path, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES, content: bytes | None = None) -> Iterator[list[RawRow]]:
    """`iter_jsonl`'s rows, a list per block read."""
    name = str(path)
    try:
        with _open_binary(path, content) as handle:
            yield from iter_jsonl_stream_chunks(name, handle, max_row_bytes)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(f"{name}: cannot read: {exc}") from None


def iter_jsonl_stream(name: str, handle: IO[bytes], max_row_bytes: int = DEFAULT_MAX_ROW_BYTES) -> Iterator[RawRow]:
    """The rows of a JSON Lines byte stream (a file, stdin), never holding a line over `max_row_bytes`."""
    for chunk in iter_jsonl_stream_chunks(name, handle, max_row_bytes):
        yield from chunk


def iter_jsonl_stream_chunks(name: str, handle: IO[bytes], max_row_bytes: int = DEFAULT_MAX_ROW_BYTES,
                             line_no: int = 0) -> Iterator[list[RawRow]]:
    """`iter_jsonl_stream`'s rows, a list per block of lines: blank lines skipped (their line
    numbers still count), the first line checked for a UTF-16/32 BOM and stripped of a UTF-8 one.
    A line that parses takes the fast path (orjson validates UTF-8 itself); any other goes
    through `_parse_line`, which says what is wrong with it. `line_no`: the lines before the
    stream's first (a stream that starts inside a file, `iter_jsonl_range_chunks`)."""
    start = line_no
    for lines, terminated, clean in iter_line_blocks(handle, max_row_bytes):
        if line_no == start == 0:
            first = lines[0]
            head = first if type(first) is bytes else b""
            problem = encoding_problem(name, head)
            if problem:
                raise InputError(problem)
            rows = _parse_lines(name, lines, line_no, terminated, len(_UTF8_BOM) if head.startswith(_UTF8_BOM) else 0)
        elif clean:
            rows = _parse_clean_lines(name, lines, line_no)
        else:
            rows = _parse_lines(name, lines, line_no, terminated)
        line_no += len(lines)
        if rows:
            yield rows


class _ByteRange:
    """A binary file read from `start` up to (not past) `end`, for `iter_line_blocks`."""

    def __init__(self, handle: IO[bytes], start: int, end: int):
        handle.seek(start)
        self.handle, self.left = handle, end - start

    def read(self, size: int) -> bytes:
        data = self.handle.read(min(size, self.left)) if self.left > 0 else b""
        self.left -= len(data)
        return data


def iter_jsonl_range_chunks(path: str, start: int, end: int, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES) -> Iterator[list[RawRow]]:
    """The rows of the lines of a JSONL file (not .gz) between byte offsets `start` and `end`,
    each a line boundary (0, the file's size, or just after a newline: `line_start_after`),
    numbered as in the whole file. Reading every range of a cut in turn gives the rows of
    `iter_jsonl_chunks`, so processes can each read one range (`curate.engine.shards`)."""
    try:
        with open(path, "rb") as handle:
            line_no = count_newlines(handle, start)
            yield from iter_jsonl_stream_chunks(path, _ByteRange(handle, start, end), max_row_bytes, line_no)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None


def count_newlines(handle: IO[bytes], end: int) -> int:
    """Newlines in the first `end` bytes of a binary file."""
    handle.seek(0)
    count, left = 0, end
    while left > 0:
        block = handle.read(min(left, 16 * _READ_BLOCK))
        if not block:
            break
        count += block.count(b"\n")
        left -= len(block)
    return count


def line_start_after(path: str, offset: int) -> int:
    """The offset of the first line that starts at or after `offset` (the file's size if none)."""
    if offset <= 0:
        return 0
    with open(path, "rb") as handle:
        position = offset - 1  # a line starts at `offset` when the byte before it is a newline
        handle.seek(position)
        while block := handle.read(_READ_BLOCK):
            newline = block.find(b"\n")
            if newline >= 0:
                return position + newline + 1
            position += len(block)
        return position


def _parse_clean_lines(name: str, lines: list[bytes], line_no: int) -> list[RawRow]:
    """The rows of a clean block (`iter_line_blocks`) after `line_no`: when every line parses,
    all at once (orjson checks the UTF-8 itself); else line by line (`_parse_lines`)."""
    try:
        objs = list(map(orjson.loads, lines))
    except orjson.JSONDecodeError:  # a blank line, bad JSON or bad UTF-8 somewhere in the block
        return _parse_lines(name, lines, line_no, True)
    count = len(lines)
    sizes = [size + 1 for size in map(len, lines)]
    return list(map(RawRow, repeat(name, count), range(line_no + 1, line_no + count + 1), lines, objs, repeat(None, count), repeat(0, count), sizes))


def _parse_lines(name: str, lines: list[bytes | int], line_no: int, terminated: bool, bom: int = 0) -> list[RawRow]:
    """The rows of a block of lines after `line_no`, one at a time: blank lines skipped, CRs
    before the newline dropped, `bom` bytes (a UTF-8 BOM) taken off the first line. A line that
    parses takes the fast path; any other goes through `_parse_line`, which says what is wrong."""
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    rows: list[RawRow] = []
    append = rows.append
    if bom:
        lines[0] = lines[0][bom:]  # type: ignore[index]
    for position, line in enumerate(lines, start=line_no + 1):
        if type(line) is int:
            append(RawRow(name, position, None, None, None, line, line))
            continue
        size = len(line) + terminated + bom  # an unterminated block holds only the stream's last line
        bom = 0
        if line[-1:] == b"\r":
            line = line.rstrip(b"\r")
        if not line or line.isspace():
            continue
        try:
            append(RawRow(name, position, line, loads(line), None, 0, size))  # orjson checked the UTF-8
        except decode_error:
            append(_parse_line(name, position, line, size))
    return rows


def iter_json(path: Path, content: bytes | None = None) -> Iterator[RawRow]:
    """Yield the records of a JSON file: a top-level array, or an object holding one array of records.

    A `.json` file that is really JSON Lines is read as JSONL.
    """
    name = str(path)
    limit = None
    if path.suffix == ".gz":
        limit = (file_size(path) if content is None else len(content)) * GZIP_MAX_RATIO + GZIP_FLOOR_BYTES
    try:
        with _open_binary(path, content) as handle:
            data = handle.read() if limit is None else handle.read(limit + 1)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise InputError(f"{name}: cannot read: {exc}") from None
    if limit is not None and len(data) > limit:
        raise InputError(
            f"{name}: decompresses to over {limit:,} bytes ({GZIP_MAX_RATIO}x its size); refusing a likely gz bomb "
            "(store large data as JSON Lines, which is read line by line)"
        )
    problem = encoding_problem(name, data[:4])
    if problem:
        raise InputError(problem)
    if data.startswith(_UTF8_BOM):
        data = data[len(_UTF8_BOM) :]
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if data.lstrip().startswith(b"{") and b"\n" in data.strip():  # JSON Lines named .json
            yield from iter_jsonl(path, content=content)
            return
        line = data[: exc.pos].count(b"\n") + 1
        raise InputError(f"{name}:{line}: invalid JSON: {exc.msg}") from None
    records = _records_of(document)
    if records is None:
        raise InputError(
            f"{name}: expected a JSON array of records (or an object with one array of records)"
        )
    yield from json_records(name, data, records)


def json_records(name: str, data: bytes, records: list) -> Iterator[RawRow]:
    """The records of a JSON array; `line` is where each object starts when the array is
    pretty-printed (editors jump there), else the 1-based record number."""
    from curate.sources import IndexedRow, json_record_lines

    lines = json_record_lines(data, len(records)) if isinstance(records, list) and records is not None else None
    for index, obj in enumerate(records):
        yield IndexedRow(name, lines[index] if lines else index + 1, None, obj=obj, index=index)


def _records_of(document: Any) -> list | None:
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        lists = [value for value in document.values() if isinstance(value, list)]
        if len(lists) == 1:
            return lists[0]
        if any(key in document for key in ("messages", "conversations", "instruction", "prompt")):
            return [document]
    return None


def iter_parquet(path: Path, content: bytes | None = None) -> Iterator[RawRow]:
    """Yield Parquet rows as RawRows; `line` is the 1-based row index."""
    import polars as pl

    name = str(path)
    try:
        frame = pl.read_parquet(path if content is None else io.BytesIO(content))
    except Exception as exc:  # polars raises several error types for bad files
        raise InputError(f"{name}: cannot read Parquet: {str(exc).splitlines()[0]}") from None
    unusual = {column for column, dtype in frame.schema.items() if any(kind in str(dtype) for kind in _NON_JSON_DTYPES)}
    for index, obj in enumerate(frame.iter_rows(named=True), start=1):
        if unusual:
            obj = {key: (jsonable(value) if key in unusual else value) for key, value in obj.items()}
        yield RawRow(name, index, None, obj=_drop_nulls(obj))


#: Parquet types whose Python values JSON cannot hold (bytes, Decimal, timedelta, objects).
_NON_JSON_DTYPES = ("Binary", "Decimal", "Duration", "Object")


def jsonable(value: Any) -> Any:
    """A Parquet value as JSON can hold it: bytes as text (base64 when not UTF-8), Decimal and
    durations as strings, containers converted item by item."""
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            import base64

            return "base64:" + base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list):
        return [jsonable(item) for item in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    try:
        orjson.dumps(value)
        return value
    except TypeError:
        return str(value)


def _drop_nulls(obj: dict) -> dict:
    # Parquet unifies the schema across rows, so absent keys come back as null.
    return {key: value for key, value in obj.items() if value is not None}


def iter_rows(path: str | os.PathLike, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES, options: Any = None,
              content: bytes | None = None) -> Iterator[RawRow]:
    """Yield every row of a source, choosing the reader by input kind (see `curate.sources`):
    JSONL / JSON / Parquet here (`.gz` allowed), the other kinds in `curate.sources`.
    `content`: a data file's bytes, already read (`read_file_bytes`), parsed instead of the
    file, so one read gives both a hash and the rows of the same bytes."""
    for chunk in iter_row_chunks(path, max_row_bytes, options, content):
        yield from chunk


def iter_row_chunks(path: str | os.PathLike, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES, options: Any = None,
                    content: bytes | None = None) -> Iterator[list[RawRow]]:
    """`iter_rows`'s rows in lists (a block of JSON Lines, or `_CHUNK_ROWS` rows of other kinds)."""
    from curate.sources import SourceOptions, iter_source

    rows: Iterable[RawRow] | None = iter_source(str(path), max_row_bytes, options or SourceOptions(), content)
    chunks: Iterable[list[RawRow]]
    if rows is None:
        path = Path(path)
        if content is None:
            check_input_file(path)
        suffix, _ = data_suffix(path)
        if suffix == ".parquet":
            chunks = _chunked(iter_parquet(path, content))
        elif suffix == ".json":
            chunks = _chunked(iter_json(path, content))
        else:
            chunks = iter_jsonl_chunks(path, max_row_bytes, content)
    else:
        chunks = _chunked(rows)
    empty = True
    for chunk in chunks:
        empty = False
        yield chunk
    if empty:
        raise InputError(empty_file_error(str(path)))


def empty_file_error(path: str) -> str:
    return f"{path}: file is empty (no rows); nothing to lint"


#: Rows per list when a reader yields rows one at a time.
_CHUNK_ROWS = 4096


def _chunked(rows: Iterable[RawRow]) -> Iterator[list[RawRow]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, _CHUNK_ROWS)):
        yield chunk


def iter_batches(
    path: str | os.PathLike, batch_size: int, max_row_bytes: int = DEFAULT_MAX_ROW_BYTES, options: Any = None
) -> Iterator[list[RawRow]]:
    """Group `iter_rows` into lists of at most `batch_size` rows."""
    return batched(iter_row_chunks(path, max_row_bytes, options), batch_size)


def batched(chunks: Iterable[list[RawRow]], batch_size: int) -> Iterator[list[RawRow]]:
    """Lists of rows regrouped into lists of `batch_size` rows (the last one shorter)."""
    batch: list[RawRow] = []
    for chunk in chunks:
        batch += chunk
        while len(batch) >= batch_size:
            yield batch[:batch_size]
            batch = batch[batch_size:]
    if batch:
        yield batch


def read_rows(path: str | os.PathLike) -> list[RawRow]:
    """All rows of a file in memory (for review, fix and train; lint streams)."""
    return list(iter_rows(path))


def read_file_bytes(path: str | os.PathLike) -> bytes:
    """All bytes of a data file (a regular file; InputError otherwise), to hash and parse the same read."""
    path = Path(path)
    check_input_file(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None


def anonymous_buffer(size: int) -> mmap.mmap | bytearray:
    """A writable, zeroed buffer of `size` bytes on an anonymous private mapping of its own, where
    there is one: it goes back to the OS when freed (no heap to trim), and numpy's huge-page
    advice, which made first touch ~4x slower on a VM whose kernel compacts memory for it
    (THP `defrag=madvise`, the default), does not apply. A bytearray elsewhere."""
    try:
        return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (AttributeError, OSError, ValueError):  # not Unix, or size 0
        return bytearray(size)


#: Polars' allocator settings for a run (polars' own jemalloc reads `_RJEM_MALLOC_CONF` when polars
#: loads): freed pages are kept 10 s, jemalloc's default, instead of the 0.5 s and 1 s polars builds
#: it with. A lint frees each batch's frames and allocates the next batch's well within a second,
#: and every page handed back to the OS in between faults on its next use (1M bench rows: 895k ->
#: 594k page faults and 8.5 -> 6.7 s of system time, for 15 MiB more peak memory).
POLARS_ALLOCATOR = "dirty_decay_ms:10000,muzzy_decay_ms:10000"


def configure_native_libraries() -> None:
    """Set up the native libraries a lint loads, before it loads them (a setting the user made
    stays, and worker processes inherit these):

    - polars' allocator keeps freed pages (POLARS_ALLOCATOR);
    - numpy asks for no transparent huge pages on its large arrays (`NUMPY_MADVISE_HUGEPAGE=0`):
      where the kernel compacts memory to serve such a request on the first touch (`defrag`
      set to `madvise`, the usual default), each fresh 2 MB page of a batch's arrays waits for
      it (1M rows, two alternating pairs: 37.8 and 35.4 s against 43.5 and 39.3 s, system time
      4.2 against 5.9 s, though more, smaller page faults);
    - numpy's OpenBLAS starts no thread of its own (`OPENBLAS_NUM_THREADS`: a lint does no
      linear algebra, and the idle thread still spins ~0.1 s of CPU per 100k rows)."""
    os.environ.setdefault("_RJEM_MALLOC_CONF", POLARS_ALLOCATOR)
    os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def release_freed_memory() -> None:
    """Hand the memory of freed per-batch arrays back to the OS (glibc's `malloc_trim`, as Dask's
    workers do). The per-batch parts live in the C heap; once concatenated and freed, glibc keeps
    their pages (0.4 GB at 1M rows) unless asked. Does nothing where there is no glibc."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@cache
def _malloc_trim():
    """glibc's `malloc_trim`, looked up once (`find_library` runs `ldconfig -p` each time), or None."""
    import ctypes
    import ctypes.util

    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def user_cache_home() -> Path:
    """The user's cache folder: `XDG_CACHE_HOME`, else `~/.cache`."""
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg).expanduser() if xdg else Path.home() / ".cache"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def file_size(path: str | os.PathLike) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temp files that earlier writes of `path` left behind when their process died
    (kill -9, power loss). Only ours: named `.<name>.<pid>.<random>.tmp` by `atomic_write_bytes`,
    with a pid that is no longer running; anything else in the folder is left alone."""
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)\.[a-z0-9_]+\.tmp")
    removed = []
    try:
        entries = [entry.name for entry in os.scandir(path.parent) if entry.name.startswith(f".{path.name}.")]
    except OSError:
        return removed
    for name in entries:
        match = pattern.fullmatch(name)
        if match and not _pid_alive(int(match.group(1))):
            try:
                (path.parent / name).unlink()
            except OSError:
                continue
            removed.append(path.parent / name)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or not a pid we can judge: keep the file
    return True


def current_umask() -> int:
    """The process umask, read without changing it (from /proc where there is one)."""
    try:
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` through a temp file in the same folder and a rename.
    The temp's name carries our pid, so the next write cleans it up if we are killed mid-write."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; name a file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~current_umask())  # mkstemp makes 0600; outputs get the user's umask
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # EFBIG under `ulimit -f`, ENOSPC, EISDIR...
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"{path}: cannot write: {exc.strerror or exc}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_jsonl(path: str | os.PathLike, records: Iterable[Any]) -> int:
    """Write records as JSON Lines atomically; returns the number written."""
    chunks = [orjson.dumps(record) + b"\n" for record in records]
    atomic_write_bytes(path, b"".join(chunks))
    return len(chunks)
