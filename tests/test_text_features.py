"""The shared per-batch text features (curate/text/rows.py) and their fast paths: each must agree
with the plain regex / string-join definition on the text where they could differ (non-ASCII,
NFKC, odd whitespace, empty turns, tool calls, Alpaca `<noinput>`)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from curate.engine.batch import Batch
from curate.io import read_rows
from curate.text import normalize
from curate.text.answers import MAY_STATE_VALUE, polarities, polarity_expr, stated_answers, with_final_answers
from curate.text.normalize import WORD_PATTERN, ascii_word_bytes, contains, flat_words, words, words_expr
from curate.text.rows import (
    NO_INPUT_PATTERN,
    batch_features,
    batch_short_answers,
    batch_user_keys,
    conversation_features,
    normalize_messages,
    collapse_whitespace,
    join_runs,
    sequence_keys,
)
from tests.conftest import write_jsonl

#: Text where a byte-level or ASCII shortcut could go wrong.
ODD_TEXTS = [
    "", " ", "  two  spaces  ", "tab\there", "line\nbreak\r\n", "\x0bvertical\x0cfeed", "nul\x00byte", "ctrl\x1c\x1d\x1e\x1f",
    "snake_case and CamelCase 42x v1.2", "__dunder__", "a" * 300, "Hi, world!!", "—dash— ‘quotes’ …",
    "café naïve résumé", "ｆｕｌｌ ｗｉｄｔｈ １２", "ﬁne ﬂour", "İstanbul", "नमस्ते दुनिया", "日本語のテキスト、です。",
    "e\u0301 combining", "nbsp\u00a0here", "em\u2003space", "nel\u0085here", "Ⅻ Ⓐ ℌ", "٣ apples", "K kelvin", "yeſ",
]


def regex_words(texts: pl.Series) -> tuple[list[str], list[int]]:
    lists = texts.str.extract_all(WORD_PATTERN)
    return lists.explode().drop_nulls().to_list(), lists.list.len().fill_null(0).to_list()


@pytest.mark.parametrize("texts", [ODD_TEXTS, [t for t in ODD_TEXTS if t.isascii()], [t for t in ODD_TEXTS if not t.isascii()], [], [""] * 3])
def test_flat_words_are_the_regex_words(texts):
    series = pl.Series(texts, dtype=pl.String)
    for column in (series, pl.select(words_expr(pl.lit(series)).list.join(" ")).to_series(), series.str.to_lowercase()):
        words, counts = flat_words(column)
        assert (words.to_list(), counts.tolist()) == regex_words(column)


@pytest.mark.parametrize("chunk_bytes", [1, 7, 64, 1 << 20])
def test_flat_words_keep_text_order_when_ascii_and_other_texts_alternate(monkeypatch, chunk_bytes):
    monkeypatch.setattr(normalize, "WORDS_CHUNK_BYTES", chunk_bytes)  # texts longer than a chunk, and many chunks
    rng = np.random.default_rng(3)
    alphabet = list("ab_9 ,.\n\t\x00é日-Z")
    texts = ["".join(rng.choice(alphabet, size=rng.integers(0, 15))) for _ in range(400)] + ["word " * 30]
    words, counts = flat_words(pl.Series(texts))
    assert (words.to_list(), counts.tolist()) == regex_words(pl.Series(texts))


def test_ascii_word_bytes_are_the_regex_word_characters():
    every_ascii = pl.Series([chr(code) for code in range(128)])
    expected = every_ascii.str.contains(r"^\w$").to_numpy()
    assert (ascii_word_bytes(np.arange(128, dtype=np.uint8)) == expected).all()


@pytest.mark.parametrize(
    ("pattern", "ascii_pattern"),
    [(r"\d", "[0-9]"), (r"[^\S ]", r"[\t-\r]"), (r"(?i)^\W*(?:yes|no)\b", r"(?i)^[^0-9A-Za-z_]*(?:yes|no)(?:[^0-9A-Za-z_]|$)")],
)
def test_ascii_twins_of_patterns_agree_with_them(pattern, ascii_pattern):
    texts = pl.Series([*ODD_TEXTS, *(chr(code) for code in range(128)), "Yes, sure", "no.", "NO", "nope", "  ¡yes!", "yes_no", None])
    assert contains(texts, pattern, ascii_pattern).to_list() == texts.str.contains(pattern).fill_null(False).to_list()


def test_collapse_whitespace_is_the_regex_replacement():
    texts = pl.Series(ODD_TEXTS)
    assert collapse_whitespace(texts).to_list() == texts.str.replace_all(r"\s+", " ").to_list()


def test_join_runs_is_a_join_per_run():
    strings = ["a", "", "bb", "ç", "", "d e", "f"]
    counts = np.array([0, 2, 1, 0, 3, 1, 0])
    expected, at = [], 0
    for count in counts:
        expected.append(" ".join(strings[at : at + count]))
        at += count
    assert join_runs(pl.Series(strings), counts).to_list() == expected
    assert join_runs(pl.Series([], dtype=pl.String), np.array([0, 0])).to_list() == ["", ""]


def test_sequence_keys_tell_apart_order_length_and_content():
    hashes = np.array([1, 2, 2, 1, 1, 2, 1, 2, 0, 1, 2], dtype=np.uint64)
    counts = np.array([2, 2, 3, 2, 0, 2])  # [1 2] [2 1] [1 2 1] [2 0] [] [1 2]
    keys = sequence_keys(hashes, counts).tolist()
    assert keys[0] == keys[5]
    assert len(set(keys[:5])) == 5


POLAR_TEXTS = [
    "Yes, the plan works.", "NO. Never.", "no", "  \"yes\" is right", "yeſ it is", "Yes_no", "Nope", "¿No?", "nein", "", None,
    "Answer: yes", "The answer is no.", "\\boxed{yes}", "`answer: yes` is the syntax", "answer\n\nfinally, yes", "ANSWER: NO",
    "She has 8 apples left.", "٣ apples", "ｆｉｎａｌ ａｎｓｗｅｒ： ｙｅｓ", "#### 1,000", "No code: `x = 5`", "Use python('2+2') for no reason",
]


def test_final_answers_on_the_cheap_path_agree_with_every_rule():
    frame = pl.DataFrame({"answer": POLAR_TEXTS}, schema={"answer": pl.String})
    full = stated_answers(frame.select(pl.col("answer").str.normalize("NFKC").alias("_nfkc")), "answer", numbers=True)
    fast = with_final_answers(frame, "answer", "answer", numbers=True)
    for column in ("answer_final", "answer_marked", "answer_numbers"):
        assert fast[column].to_list() == full[column].to_list(), column
    # The cheap path was taken for some of these texts, and the prefilter is a superset of MAY_STATE_VALUE.
    may = frame["answer"].str.normalize("NFKC").str.contains(MAY_STATE_VALUE).fill_null(False)
    assert 0 < may.sum() < len(POLAR_TEXTS)


def test_polarities_are_polarity_expr():
    texts = pl.Series(POLAR_TEXTS + ODD_TEXTS)
    assert polarities(texts).to_list() == pl.select(polarity_expr(pl.lit(texts))).to_series().to_list()


def chat(*turns, **extra) -> dict:
    return {"messages": [{"role": role, "content": content, **extra} for role, content in turns]}


def tool_row(arguments: str, answer: str = "Done.") -> dict:
    call = {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "search", "arguments": arguments}}]}
    return {"messages": [{"role": "user", "content": "Search the weather."}, call, {"role": "tool", "tool_call_id": "c", "content": "{}"}, {"role": "assistant", "content": answer}]}


ROWS = [
    chat(("user", "What is the capital of Australia?"), ("assistant", "Canberra.")),
    chat(("user", "What is the CAPITAL of Australia ?"), ("assistant", "Canberra.")),  # same words, another text
    chat(("user", "What  is the capital\tof Australia?"), ("assistant", "Canberra.")),  # same text, collapsed
    chat(("user", "Ｗｈａｔ is the capital of Australia?"), ("assistant", "Sydney.")),  # NFKC
    chat(("user", "What is the capital of Australia"), ("assistant", "canberra")),
    chat(("user", "What is the capital"), ("user", "of Australia?"), ("assistant", "Canberra.")),
    chat(("user", "What is the capital"), ("user", ""), ("user", "of Australia?"), ("assistant", "Canberra.")),
    chat(("user", "What is the capital of Australia?")),  # no answer
    chat(("assistant", "Hello!"), ("user", "What is the capital of Australia?")),  # nothing before the answer
    chat(("system", "Be brief."), ("user", "What is the capital of Australia?"), ("assistant", "Canberra.")),
    chat(("user", "Name a colour.\n\n<noinput>"), ("assistant", "Blue.")),
    chat(("user", "Name a colour.\n\n"), ("assistant", "Red.")),
    chat(("user", "Name a colour. < No_Input >"), ("assistant", "Green.")),
    chat(("user", "नमस्ते, क्या हाल है?"), ("assistant", "ठीक हूँ।")),
    chat(("user", "नमस्ते क्या हाल है"), ("assistant", "मैं ठीक हूँ")),
    chat(("user", ""), ("assistant", "")),
    chat(("user", ""), ("assistant", "Yes, it is.")),
    tool_row('{"q": "weather", "city": "Oslo"}'),
    tool_row('{"city":"Oslo","q":"weather"}'),
    tool_row('{"q": "weather", "city": "Bergen"}'),
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!", "name": "Bot"}]},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!", "name": "Other"}]},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]},
]


def string_keys(batch: Batch) -> pl.DataFrame:
    """The features' keys as plain strings, joined per row the way they are defined (the oracle)."""
    frame = batch.messages
    text = pl.when(pl.col("calls") == "").then(pl.col("content")).otherwise(pl.concat_str([pl.col("content"), pl.col("calls")], separator="\n"))
    norm = text.str.normalize("NFKC").str.to_lowercase().str.replace_all(r"\s+", " ").str.strip_chars(" ")
    norm = pl.when(pl.col("fields") == "").then(norm).otherwise(pl.concat_str([norm, pl.col("fields").str.normalize("NFKC").str.to_lowercase().str.replace_all(r"\s+", " ")], separator="\x1f"))
    words = words_expr(text).list.join(" ")
    prompt_words = pl.when(pl.col("content").str.contains(NO_INPUT_PATTERN)).then(words_expr(pl.col("content").str.replace_all(NO_INPUT_PATTERN, "")).list.join(" ")).otherwise(words)
    frame = frame.with_columns(norm=norm, words=words, prompt_words=prompt_words)
    last = frame.filter(pl.col("role") == "assistant").group_by("row").agg(last=pl.col("msg").max())
    frame = frame.join(last, on="row", how="left")
    tagged = pl.col("role") + "\x1f"
    return frame.group_by("row", maintain_order=True).agg(
        conversation=(tagged + pl.col("norm")).str.join("\x1e"),
        prompt=(tagged + pl.col("prompt_words")).filter(pl.col("msg") < pl.col("last")).str.join("\x1e"),
        answer=pl.col("words").filter(pl.col("msg") == pl.col("last")).first(),
        user=pl.col("words").filter(pl.col("role") == "user").str.join(" "),
    )


def same_classes(keys: list, strings: list) -> bool:
    """keys[i] == keys[j] exactly when strings[i] == strings[j]."""
    return all((keys[i] == keys[j]) == (strings[i] == strings[j]) for i in range(len(keys)) for j in range(len(keys)))


def test_keys_are_equal_exactly_when_the_joined_texts_are(tmp_path):
    batch = Batch.from_raw(list(read_rows(write_jsonl(tmp_path / "data.jsonl", ROWS))))
    features, oracle = batch_features(batch), string_keys(batch)
    assert features["row"].to_list() == oracle["row"].to_list()
    assert same_classes(features["conversation_key"].to_list(), oracle["conversation"].to_list())
    answered = oracle["answer"].is_not_null() & (oracle["prompt"] != "")
    assert features["prompt_key"].is_not_null().to_list() == answered.to_list()
    assert same_classes(features["prompt_key"].filter(answered).to_list(), oracle["prompt"].filter(answered).to_list())
    assert same_classes(features["answer_key"].filter(answered).to_list(), oracle["answer"].filter(answered).to_list())
    # LK001 compares the user text's hash with an eval text's, so its values (not only its classes) are fixed.
    user = batch_user_keys(batch)
    assert user["user_key"].to_list() == oracle["user"].hash(seed=0xD0D0).to_list()
    # The cases the rows were written for.
    keys = features["conversation_key"].to_list()
    assert keys[0] == keys[2] != keys[1] and keys[17] == keys[18] != keys[19] and len({keys[20], keys[21], keys[22]}) == 3
    prompts = features["prompt_key"].to_list()
    assert prompts[0] == prompts[1] == prompts[3] == prompts[4] and len({prompts[0], prompts[5], prompts[6], prompts[9]}) == 4
    assert prompts[10] == prompts[11] == prompts[12] and prompts[13] == prompts[14]  # `<noinput>` says nothing; punctuation
    assert prompts[7] is None and prompts[8] is None


def test_answer_features_of_odd_rows(tmp_path):
    batch = Batch.from_raw(list(read_rows(write_jsonl(tmp_path / "data.jsonl", ROWS))))
    features = batch_features(batch)
    assert features["answer"][7] is None and features["answer_call"][17] == ""
    assert features["answer_polarity"].to_list()[15:17] == [None, "yes"]
    short = batch_short_answers(batch, 2).to_list()
    assert short[:5] == ["canberra", "canberra", "canberra", "sydney", "canberra"]
    assert short[7] is None and short[15] == "" and short[16] is None  # no answer; no words; three words
    assert short[13] == " ".join(words("ठीक हूँ।"))
    assert batch_short_answers(batch, 3)[16] == "yes it is"


def test_features_do_not_depend_on_the_order_of_the_message_frame(tmp_path):
    batch = Batch.from_raw(list(read_rows(write_jsonl(tmp_path / "data.jsonl", ROWS))))
    expected = conversation_features(normalize_messages(batch.messages))
    shuffled = batch.messages.sample(fraction=1.0, shuffle=True, seed=4)
    assert not shuffled["row"].is_sorted()
    assert conversation_features(normalize_messages(shuffled)).equals(expected)


def test_a_row_s_final_answer_is_its_last_assistant_turn_with_a_visible_character():
    """`toolkit.final_answers` (BL001's labels, the OF rules' formats): per row, the last assistant
    turn holding a non-space character; blank turns (any Unicode space) are skipped, rows with none
    have no answer, and a character that is not White_Space (a zero-width space, U+001F) counts."""
    from curate.engine.batch import Batch
    from curate.engine.batch import Row as BatchRow
    from curate.formats import normalize as to_conversation
    from curate.io import RawRow
    from curate.rules.toolkit import final_answers

    def chat(*turns: str) -> dict:
        return {"messages": [{"role": "user" if i % 2 == 0 else "assistant", "content": text} for i, text in enumerate(turns)]}

    rows = [
        chat("q", "first", "q2", "last"),
        chat("q", "kept", "q2", " \u00a0\u2003\t\n\u3000\u0085 "),  # blank in every Unicode space: the earlier turn counts
        chat("q", "   "),  # no answer at all
        chat("q", "\u200b"),  # zero-width space is not White_Space: an answer
        chat("q", "\x1f"),
        {"messages": [{"role": "user", "content": "only a question"}]},
        chat("q", "a1", "q2", "a2", "q3", ""),
    ]
    batch = Batch([BatchRow(RawRow("f.jsonl", line, b"", obj, None, 0, 1), None, to_conversation(obj)) for line, obj in enumerate(rows, 1)])
    answers = final_answers(batch)
    assert answers.rows() == [(0, "last"), (1, "kept"), (3, "\u200b"), (4, "\x1f"), (6, "a2")]


@pytest.mark.parametrize("system", [False, True])
def test_selected_words_and_number_keys_are_those_of_the_chosen_turns(tmp_path, system):
    """`MessageTokens.select` (DU002's words: user and assistant turns) gives each row's words of
    the chosen turns in order, whether every turn is chosen (its shortcut) or a system turn is
    left out; `number_keys` is the same for rows with the same set of numbers, whatever their
    order, and differs where a number differs."""
    from curate.text.rows import batch_tokens, number_keys

    prompts = ["Add 12 and 30.", "Add 30 and 12 please.", "Add 12 and 31.", "No numbers here.", "", "Take 7 from 9, then 9 from 7."]
    rows = [[{"role": "user", "content": prompt}, {"role": "assistant", "content": "Done."}] for prompt in prompts]
    if system:
        rows = [[{"role": "system", "content": "Be brief, 99 words."}, *turns] for turns in rows]
    batch = Batch.from_raw(list(read_rows(write_jsonl(tmp_path / "rows.jsonl", [{"messages": turns} for turns in rows]))))
    positions, tokens = batch_tokens(batch).select(["user", "assistant"])
    assert positions.tolist() == list(range(len(prompts)))
    for index, turns in enumerate(rows):
        expected = [word for turn in turns if turn["role"] != "system" for word in words(turn["content"])]
        assert tokens.words_of(index) == expected
    keys = number_keys(positions, tokens).tolist()  # the system turn's 99 is not a chosen word
    assert keys[0] == keys[1] and keys[3] == keys[4] == 0
    assert len({keys[0], keys[2], keys[5], 0}) == 4


def test_ascii_words_of_one_batch_survive_the_next_batch():
    """`ascii_words` writes each batch's word offsets into one reused buffer (`scratch_offsets`),
    which polars only reads: the words of an earlier batch, short (inline in polars' views) and
    long (in the shared bytes), stay what they were after later batches are cut."""
    from curate.text.normalize import ascii_words, scratch_offsets

    first_texts = pl.Series(["tiny words and extraordinarily_long_identifiers_here", "x " * 50])
    expected = regex_words(first_texts)
    words, counts = ascii_words(first_texts)
    buffer = scratch_offsets(1)
    later, _ = ascii_words(pl.Series(["other text entirely " * 40, "more_words_than_before " * 30]))
    assert scratch_offsets(1) is buffer  # the same buffer served the later batch
    assert (words.to_list(), counts.tolist()) == expected and later.len() == 150
