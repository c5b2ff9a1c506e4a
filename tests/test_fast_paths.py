"""The fast paths of reading and batching agree with the slow ones they stand in for: the block
reader with a line-at-a-time reader, plain turns with the general normalizer, the message frame
with a message-at-a-time build, and the schema rules' batch shortcuts with their per-row checks."""

from __future__ import annotations

import gzip
import io
import tomllib
from pathlib import Path

import orjson
import pytest

import curate.io as curate_io
from curate.engine.batch import Batch
from curate.engine.rule import RowRule, load_builtin_rules
from curate.formats import MESSAGE_KEYS, RowFormat, _normalize_message_list, detect_format, field_texts, normalize, plain_turns
from curate.io import RawRow, iter_jsonl_stream, iter_line_blocks, iter_rows

CASES = Path(__file__).parent / "rule_cases"
MAX = 40  # max-row-bytes in the reader tests: small, so lines around the limit are cheap to write


def line_at_a_time(data: bytes, max_bytes: int) -> list[tuple]:
    """What `iter_jsonl_stream` gave before the block reader: `readline` with a cap, the first
    line checked for a BOM, blank lines skipped, every line through `_parse_line`."""
    handle, cap, rows = io.BytesIO(data), max_bytes + 3, []
    for line_no, raw in enumerate(iter(lambda: handle.readline(cap), b""), start=1):
        size = len(raw)
        if len(raw) == cap and not raw.endswith(b"\n"):
            while True:
                chunk = handle.readline(1024)
                size += len(chunk)
                if not chunk or chunk.endswith(b"\n"):
                    break
            raw = None
        else:
            raw = raw.rstrip(b"\r\n")
            raw = raw if len(raw) <= max_bytes else None
        if line_no == 1 and raw and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        if raw is not None and not raw.strip():
            continue
        rows.append(as_tuple(curate_io._parse_line("x", line_no, raw, size)))
    return rows


def as_tuple(row: RawRow) -> tuple:
    return row.line, row.text, row.obj, row.error, row.oversized, row.size


GOOD = b'{"messages": [{"role": "user", "content": "hi"}]}'  # 50 bytes: over MAX
SHORT = b'{"text": "caf\xc3\xa9 \xe2\x9c\x93"}'
EDGE_STREAMS = {
    "crlf": SHORT + b"\r\n" + b'{"a": 1}\r\n',
    "last line without newline": SHORT + b"\n" + b'{"a": 1}',
    "last line CR only": SHORT + b"\n" + b'{"a": 1}\r',
    "blank lines": b"\n \n\t\r\n" + SHORT + b"\n\n\n" + SHORT + b"\n   ",
    "bom": b"\xef\xbb\xbf" + SHORT + b"\n" + SHORT + b"\n",
    "bom only line": b"\xef\xbb\xbf\n" + SHORT + b"\n",
    "bom on line two is data": SHORT + b"\n\xef\xbb\xbf" + SHORT + b"\n",
    "invalid utf-8": SHORT + b"\n" + b'{"text": "\xff\xfe bad"}\n' + b'{"text": "\xed\xa0\x80"}\n' + SHORT,
    "invalid json": b'{"a": \n' + SHORT + b"\n" + b"[1, 2\n",
    "over max-row-bytes": GOOD + b"\n" + SHORT + b"\n" + GOOD * 50 + b"\n" + SHORT,
    "over max-row-bytes at the end": SHORT + b"\n" + GOOD * 3,
    "oversized first line": GOOD * 3 + b"\n" + SHORT + b"\n",
    "empty": b"",
    "many good lines around a bad one": (SHORT + b"\n") * 30 + b'{"text": "\xff"}\n' + (SHORT + b"\n") * 30 + b"\n" + (SHORT + b"\n") * 30,
    "only newlines": b"\n\n\n",
}
# Lines of every length around the limit, with and without CRs before the newline and at the end.
for length in range(MAX - 2, MAX + 5):
    for ending in (b"\n", b"\r\n", b"\r\r\n", b"\r\r\r", b""):
        body = b'"' + b"x" * (length - 2) + b'"'
        EDGE_STREAMS[f"{length} bytes + {ending!r}"] = SHORT + b"\n" + body + ending


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 0])
@pytest.mark.parametrize("name", list(EDGE_STREAMS))
def test_block_reader_agrees_with_line_at_a_time(name, block, monkeypatch):
    data = EDGE_STREAMS[name]
    monkeypatch.setattr(curate_io, "_READ_BLOCK", block or 1024 * 1024)
    rows = [as_tuple(row) for row in iter_jsonl_stream("x", io.BytesIO(data), MAX)]
    assert rows == line_at_a_time(data, MAX)
    # the line blocks account for every physical line and every byte of it
    sizes = [line if type(line) is int else len(line) + terminated
             for lines, terminated, _ in iter_line_blocks(io.BytesIO(data), MAX) for line in lines]
    assert sum(sizes) == len(data)
    assert len(sizes) == data.count(b"\n") + (not data.endswith(b"\n") and bool(data))


def test_block_reader_never_holds_an_oversized_line(monkeypatch):
    """A line far over the limit is skipped block by block: no block the reader keeps grows past
    the limit plus one block."""
    monkeypatch.setattr(curate_io, "_READ_BLOCK", 64)
    seen: list[int] = []

    class Watched(io.BytesIO):
        def read(self, size=-1):
            chunk = super().read(size)
            seen.append(len(chunk))
            return chunk

    data = SHORT + b"\n" + b"x" * 100_000 + b"\n" + SHORT + b"\n"
    lines = list(curate_io.iter_line_blocks(Watched(data), MAX))
    flat = [line for block, *_ in lines for line in block]
    assert flat == [SHORT, 100_001, SHORT]
    assert max(seen) <= 64


def test_gzipped_jsonl_reads_like_plain(tmp_path, monkeypatch):
    data = b"".join(EDGE_STREAMS[name] + b"\n" for name in ("crlf", "blank lines", "invalid utf-8", "over max-row-bytes"))
    plain, packed = tmp_path / "rows.jsonl", tmp_path / "rows.jsonl.gz"
    plain.write_bytes(data)
    packed.write_bytes(gzip.compress(data))
    monkeypatch.setattr(curate_io, "_READ_BLOCK", 5)
    from_plain = [(row.line, row.text, row.obj, row.error, row.oversized) for row in iter_rows(plain, MAX)]
    from_gz = [(row.line, row.text, row.obj, row.error, row.oversized) for row in iter_rows(packed, MAX)]
    assert from_gz == from_plain
    assert [row[:4] for row in from_plain] == [row[:4] for row in line_at_a_time(data, MAX)]


def case_rows() -> list[bytes]:
    """Every row of every rule's fixture cases: malformed messages, odd roles, tool calls, every format."""
    rows = []
    for path in sorted(CASES.glob("*.toml")):
        for case in tomllib.loads(path.read_text()).get("case", []):
            rows += [row.encode() if isinstance(row, str) else orjson.dumps(row) for row in case.get("rows", [])]
    return rows


def case_batch(repeat: int = 1) -> Batch:
    """The fixture rows, and a row over max-row-bytes at the end."""
    lines = case_rows() * repeat
    raws = list(iter_jsonl_stream("cases.jsonl", io.BytesIO(b"\n".join(lines))))
    return Batch.from_raw([*raws, RawRow("cases.jsonl", len(lines) + 1, None, oversized=11 << 20, size=11 << 20)])


def test_plain_turns_normalize_like_the_general_path():
    plain_rows = 0
    for row in case_batch().rows:
        obj = row.obj
        fmt = detect_format(obj)
        if fmt not in (RowFormat.MESSAGES, RowFormat.SHAREGPT):
            continue
        conversation = normalize(obj, fmt)
        key = "messages" if fmt is RowFormat.MESSAGES else "conversations"
        role_key, content_key, _ = MESSAGE_KEYS[fmt]
        assert conversation.plain == (plain_turns(obj.get(key), role_key, content_key, []) is not None)
        if not conversation.plain:
            continue
        plain_rows += 1
        assert conversation._messages is None
        turns = [m for m in conversation.messages if m.container == key]
        assert turns == _normalize_message_list(obj[key], fmt, key, len(conversation.messages) - len(turns))
        assert all(item.keys() == {role_key, content_key} for item in obj[key])
    assert plain_rows > 50
    for items in ([{"role": "Assistant", "content": "hi"}], [{"role": "user", "content": "hi", "name": "x"}], [{"role": "user", "content": ["hi"]}], [], None):
        assert plain_turns(items, "role", "content", []) is None


def test_plain_conversation_builds_its_messages_on_first_read():
    row = {"system": "Be brief.", "conversations": [{"from": "user", "value": "hi"}, {"from": "assistant", "value": "Hello"}]}
    conversation = normalize(row)
    assert conversation.plain and conversation._messages is None
    assert conversation.plain_turns() == (["system", "user", "assistant"], ["Be brief.", "hi", "Hello"])
    assert [(m.role, m.content, m.index, m.source) for m in conversation.messages] == [
        ("system", "Be brief.", 0, "system"), ("user", "hi", 1, "conversations[0]"), ("assistant", "Hello", 2, "conversations[1]")
    ]
    assert conversation.plain_turns() == (["system", "user", "assistant"], ["Be brief.", "hi", "Hello"])
    general = normalize({**row, "conversations": [*row["conversations"], {"from": "gpt", "value": "Bye"}]})
    assert not general.plain and general.messages[-1].role == "assistant"


def test_message_frame_agrees_with_a_message_at_a_time_build():
    batch = case_batch()
    expected = [
        (position, msg_position, message.role, message.content, *field_texts(message.fields))
        for position, row in enumerate(batch.rows)
        if row.conversation is not None
        for msg_position, message in enumerate(row.conversation.messages)
        if message.valid
    ]
    assert batch.messages.rows() == expected
    assert any(calls for *_, calls, _ in expected) and len({row for row, *_ in expected}) > 100


def findings_of(found) -> list[tuple]:
    return [(f.code, f.line, f.message, orjson.dumps(f.data, option=orjson.OPT_SORT_KEYS)) for f in found]


@pytest.mark.parametrize("code", ["SC001", "SC002", "SC003", "SC004", "SC006", "SC007", "SC008", "SC009"])
def test_schema_rule_shortcuts_agree_with_their_per_row_checks(code):
    """Twice the fixture rows, so rows met again (SC007's known role orders) take the shortcut too."""
    batch = case_batch(repeat=2)
    rule = load_builtin_rules()[code]()
    rule.setup()
    reference = type(rule)()
    reference.setup()
    fast = findings_of(rule.check_batch(batch))
    slow = findings_of(RowRule.check_batch(reference, batch))
    assert fast == slow
    assert fast, f"{code} fires on its own fixture rows"


@pytest.mark.parametrize("union", [True, False], ids=["union", "each-alone"])
def test_screened_messages_are_the_messages_each_screen_matches(monkeypatch, union):
    """The union of every declared screen (inline flags and all) lets through exactly what each
    screen matches alone, whichever screen is asked for first; a batch with less text than
    SCREEN_UNION_MIN_BYTES (in a process that has not compiled the union) matches each screen alone."""
    import polars as pl

    from curate.rules import toolkit
    from curate.rules.quality import ATTACHMENT_PREFILTER, CONTROL_SCREEN, LONG_TOKEN, MERGED_PREFILTER
    from curate.rules.toolkit import declare_screen, screened_messages
    from curate.text.secrets import PII_PREFILTER

    monkeypatch.setattr(toolkit, "SCREEN_UNION_MIN_BYTES", 0 if union else 1 << 40)
    monkeypatch.setattr(toolkit, "_UNION_COMPILED", False)
    screens = [CONTROL_SCREEN, MERGED_PREFILTER, ATTACHMENT_PREFILTER, PII_PREFILTER, LONG_TOKEN, r"(?i)^hello"]
    for screen in screens[:-1]:
        declare_screen(screen)
    batch = case_batch()
    for screen in reversed(screens):  # the last one was never declared: the union is widened for it
        alone = batch.messages.filter(pl.col("content").str.contains(screen))
        assert screened_messages(batch, screen).rows() == alone.rows()
        assert alone.height > 0, screen
    assert (batch in toolkit._SCREENED) is union  # only the union's survivors are kept for the batch
    assert toolkit._UNION_COMPILED is union


def test_screen_union_once_compiled_serves_small_batches(monkeypatch):
    """Once a process has matched the union (its regex is compiled and cached), a small batch uses
    it too: the compile was what made the union dear."""
    from curate.rules import toolkit
    from curate.rules.quality import CONTROL_SCREEN

    monkeypatch.setattr(toolkit, "_UNION_COMPILED", True)
    batch = case_batch()
    toolkit.screened_messages(batch, CONTROL_SCREEN)
    assert batch in toolkit._SCREENED


def test_repetition_candidates_are_the_probe_or_a_long_token():
    """QL005 takes the messages its probe picks and the long-token screen picks, merged in file
    order: the same findings as one filter on the probe or the token."""
    import polars as pl

    from curate.rules.quality import LONG_TOKEN, MIN_REPETITION_BYTES, Repetition, repeats_a_probe
    from curate.rules.toolkit import candidate_messages

    rule = Repetition()
    rule.setup()
    batch = case_batch(repeat=2)
    long_enough = pl.col("content").str.len_bytes() >= MIN_REPETITION_BYTES
    expected = [
        rule.message_finding(row, message, problem)
        for row, message in candidate_messages(batch, long_enough, repeats_a_probe(rule.probe_starts) | pl.col("content").str.contains(LONG_TOKEN))
        if (problem := rule.repetition_problem(message.content))
    ]
    assert findings_of(rule.check_batch(batch)) == findings_of(expected)
    assert len(expected) > 3


def test_raw_row_text_is_decoded_when_first_read(tmp_path):
    """A parsed line keeps its bytes; `text` is the decoded line (what `curate fix` writes back),
    and a mapped row (`--columns`) can drop it."""
    line = '{"text": "café ✓"}'
    row = next(iter_jsonl_stream("x", io.BytesIO(line.encode() + b"\n")))
    assert row._text == line.encode()
    assert row.text == line and row._text == line
    assert row == RawRow("x", 1, line, {"text": "café ✓"}, size=len(line.encode()) + 1)
    row.text = None
    assert row.text is None and row.ok


def test_setting_messages_by_hand_makes_a_conversation_unplain():
    conversation = normalize({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"}]})
    assert conversation.plain
    conversation.messages = conversation.messages[:1]
    assert not conversation.plain and conversation.plain_turns() == (["user"], ["hi"])
