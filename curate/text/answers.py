"""The final answer of a response: the value a worked answer ends on.

One definition for the whole product: DU003 compares the final answers of two
responses to one prompt, and `curate eval` scores exact match on them. The
rules live in one polars expression (`final_answer_expr`), run on a whole
column at once; `final_answer` applies the same expression to one text, so the
scalar and the vectorized forms cannot disagree.

What is *not* a final answer, and is removed before looking: fenced code
blocks and inline code, list enumerators (`5) ...`), tool calls (`python('50*1.8+32')`, `<tool_call>...`),
GSM8K calculator annotations (`<<18-6-4-2=6>>`) and arithmetic expressions
(`16 - 3 - 4`, `(50 * 9 / 5) + 32`; the result after `=` stays).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from curate.text.normalize import contains

if TYPE_CHECKING:
    import polars as pl

#: A number as a final answer is written: 42, -3, 1,000 (thousands groups), 12.50, 10:30.
NUMBER = r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?::\d{2})*"
#: A number not glued to a word (`5km`, `mp3`, `v1` are not numbers); `-` is a sign only after a non-word.
NUMBER_TOKEN = rf"(?:(?:^|[^\w.\-])-)?\b{NUMBER}\b"
#: Regions whose numbers are not final answers, removed in this order.
NOT_ANSWER_PATTERNS = (
    r"(?s)```.*?(?:```|$)",  # fenced code (an unclosed fence runs to the end)
    r"`[^`\n]*`",  # inline code
    r"(?s)<(?:tool_call|function_call|functioncall)>.*?(?:</(?:tool_call|function_call|functioncall)>|$)",
    r"<<[^<>\n]*>>",  # GSM8K calculator annotations
    r"\b[A-Za-z_][\w.]*\((?:[^()\n]|\([^()\n]*\))*\)",  # a call written inline: python('...'), Calculator(2+2)
    r"(?m)(?:^[ \t]*\d{1,2}[.)]|\(?\b\d{1,2}\))\s",  # list enumerators: `1. `, `2) `, `and 5) ...`
)
#: Any of them: a text that holds code or a tool call.
CODE_OR_CALL_PATTERN = "|".join(f"(?:{pattern})" for pattern in NOT_ANSWER_PATTERNS)
#: Numbers joined by operators: `16 - 3 - 4`, `$9 * 2`, `(50 * 9 / 5) + 32`, `3 x 4`.
_OPERAND = r"[($]*\d[\d.,]*%?\)*"
EXPRESSION_PATTERN = rf"{_OPERAND}(?:(?:\s*[-+*/×÷^]\s*|\s+x\s+){_OPERAND})+"
#: Explicit final-answer markers and the value written after them. `####` and `\boxed{}`
#: state the final answer outright; the phrases count only when a value follows them.
_LEAD = r"[\s:=*$€£#]*"
_VALUE = rf"(?:{NUMBER_TOKEN}|\byes\b|\bno\b)"
MARKER_PATTERN = (
    rf"(?i)(?:####{_LEAD}|\\boxed\{{\s*\$?|\bthe\s+(?:final\s+)?answer\s+is\b{_LEAD}|\b(?:final\s+)?answer\s*:{_LEAD}){_VALUE}"
)
_VALUE_AT_END = rf"(?i)({_VALUE})$"
#: The closing part of an answer: the last sentence of its last line (a `.!?` followed by a space ends a
#: sentence; `12.5` does not). Anchored at the end, so the regex engine reads it backwards from there.
CLOSING_PATTERN = r"(?:[^.!?\n]|[.!?]+[^.!?\s])*[.!?]*$"
POLAR_WORDS = ("yes", "no")


def final_answer(text: str) -> str | None:
    """The normalized final value of a response, or None when it states none.

    - An explicit marker wins, the last one if several: `#### 72`, `\\boxed{72}`,
      `The answer is 72`, `Answer: 72`, `Final answer: yes`.
    - Otherwise the last number of the closing part (the last sentence of the
      last non-empty line): `... so she has 8 apples left.` -> `8`.
    - Otherwise a leading yes/no: `Yes, the plan works abroad.` -> `yes`.

    Numbers come back canonical (`1,000` -> `1000`, `12.50` -> `12.5`, `$18` -> `18`,
    `-3` keeps its sign); yes/no in lower case. Numbers inside code, list enumerators, tool calls,
    `<<...>>` calculator annotations and arithmetic expressions are never the
    final answer (the result after `=` is). Text is NFKC-normalized first.
    """
    return final_answers([text])[0]


def final_answers(texts: list[str | None]) -> list[str | None]:
    """`final_answer` of many texts at once (one vectorized pass)."""
    import polars as pl

    return with_final_answers(pl.DataFrame({"text": texts}, schema={"text": pl.String}), "text", "answer")["answer_final"].to_list()


def with_final_answers(frame: pl.DataFrame, column: str, prefix: str, numbers: bool = False) -> pl.DataFrame:
    """Add `{prefix}_final` (the `final_answer` of text column `column`) and `{prefix}_marked`
    (whether an explicit marker stated it) to `frame`, vectorized; with `numbers`, also
    `{prefix}_numbers` (`answer_numbers_expr`, for rows with a final answer).

    The regexes that look for a stated value run only on the texts that may hold one
    (`MAY_STATE_VALUE`); the final answer of the others is their leading yes/no, if any."""
    import polars as pl

    text = pl.col(column)
    # NFKC only where there is non-ASCII text (ASCII is already in NFKC form): it is the costly step.
    nfkc = pl.when(text.str.len_bytes() == text.str.len_chars()).then(text).otherwise(text.str.normalize("NFKC"))
    texts = frame.select(pl.int_range(pl.len(), dtype=pl.UInt32).alias("_at"), nfkc.alias("_nfkc"))
    may_state = may_state_value(texts["_nfkc"])
    stated = stated_answers(texts.filter(may_state), prefix, numbers)
    others = texts.filter(~may_state)
    others = others.with_columns(**{f"{prefix}_marked": pl.lit(False), f"{prefix}_final": polarities(others["_nfkc"])})
    if numbers:
        polar = pl.col(f"{prefix}_final").is_not_null()
        others = others.with_columns(**{f"{prefix}_numbers": pl.when(polar).then(pl.lit([], dtype=pl.List(pl.String)))})
    answers = pl.concat([stated, others]).sort("_at").drop("_at", "_nfkc")
    return frame.with_columns(answers.get_columns())


#: Text that may state a final answer other than a leading yes/no: a digit anywhere, or an answer
#: marker's word with a yes/no after it. (Removing code and calls, `answer_text_expr`, only deletes
#: text, so it cannot make a cleaned text match where the whole text does not.)
MAY_STATE_VALUE = r"(?is)\d|(?:answer|####|\\boxed).*\b(?:yes|no)\b"
_MARKER_WORDS = r"answer|####|\\boxed"


def may_state_value(texts: pl.Series) -> pl.Series:
    """Whether each NFKC text matches MAY_STATE_VALUE, through cheaper searches first: a digit
    (`[0-9]` on ASCII text), then a marker word in the lower-cased text (on NFKC text `(?i)` adds
    no letter to these words), and the whole pattern only on the texts that have one."""
    import polars as pl

    found = contains(texts, r"\d", "[0-9]")
    text = pl.col(texts.name)
    marked = pl.DataFrame([texts, found.alias("_found")]).select(~pl.col("_found") & text.str.to_lowercase().str.contains(_MARKER_WORDS).fill_null(False))
    marker = marked.to_series().arg_true()
    if len(marker):
        found.scatter(marker, texts.gather(marker).str.contains(MAY_STATE_VALUE))
    return found


def stated_answers(texts: pl.DataFrame, prefix: str, numbers: bool) -> pl.DataFrame:
    """`with_final_answers`' columns of NFKC texts (`_nfkc`), by every rule of `final_answer`."""
    import polars as pl

    texts = texts.with_columns(_cleaned=answer_text_expr(pl.col("_nfkc")))
    texts = texts.with_columns(**{f"{prefix}_marked": marked_answer_expr(pl.col("_cleaned"))})
    marked = pl.col(f"{prefix}_marked")
    final = pl.coalesce(marked, closing_number_expr(pl.col("_cleaned")), polarity_expr(pl.col("_nfkc")))
    texts = texts.with_columns(**{f"{prefix}_final": final, f"{prefix}_marked": marked.is_not_null()})
    if numbers:
        texts = texts.with_columns(**{f"{prefix}_numbers": pl.when(pl.col(f"{prefix}_final").is_not_null()).then(answer_numbers_expr(pl.col("_nfkc")))})
    return texts.drop("_cleaned")


def answer_text_expr(text: pl.Expr) -> pl.Expr:
    """NFKC text with everything that cannot hold a final answer removed (see the module doc)."""
    cleaned = text
    for pattern in NOT_ANSWER_PATTERNS:
        cleaned = cleaned.str.replace_all(pattern, " ")
    return cleaned.str.replace_all(EXPRESSION_PATTERN, " ")


def marked_answer_expr(cleaned: pl.Expr) -> pl.Expr:
    """The value after the last explicit answer marker of a cleaned text (`answer_text_expr`), or null."""
    return canonical_value_expr(cleaned.str.extract_all(MARKER_PATTERN).list.last().str.extract(_VALUE_AT_END, 1))


def closing_number_expr(cleaned: pl.Expr) -> pl.Expr:
    """The last number of the closing part (last sentence of the last non-empty line), or null."""
    closing = cleaned.str.strip_chars_end().str.extract(CLOSING_PATTERN, 0)
    return canonical_value_expr(closing.str.extract_all(NUMBER_TOKEN).list.last())


def polarity_expr(text: pl.Expr) -> pl.Expr:
    """`yes` / `no` when the (NFKC) text opens with that word, else null."""
    import polars as pl

    first = text.str.extract(r"^\W*(\w+)", 1).str.to_lowercase()
    return pl.when(first.is_in(POLAR_WORDS)).then(first)


#: Text that may open with yes or no (`polarity_expr` is then run on it); and its ASCII twin.
_MAY_BE_POLAR = r"(?i)^\W*(?:yes|no)\b"
_ASCII_MAY_BE_POLAR = r"(?i)^[^0-9A-Za-z_]*(?:yes|no)(?:[^0-9A-Za-z_]|$)"


def polarities(texts: pl.Series) -> pl.Series:
    """`polarity_expr` of each (NFKC) text, with the extraction (a new string per text) run only on
    the texts that may open with yes or no."""
    import polars as pl

    result = pl.Series(texts.name, [None] * len(texts), dtype=pl.String)
    maybe = contains(texts, _MAY_BE_POLAR, _ASCII_MAY_BE_POLAR).arg_true()
    if len(maybe):
        result.scatter(maybe, pl.select(polarity_expr(pl.lit(texts.gather(maybe)))).to_series())
    return result


def canonical_value_expr(value: pl.Expr) -> pl.Expr:
    """A matched value made canonical: lower case, no leading separator, no thousands
    commas, no trailing decimal zeros (`1,000.50` -> `1000.5`, ` -3` -> `-3`)."""
    number = value.str.to_lowercase().str.replace(r"^[^\w\-]+", "").str.replace_all(",", "")
    return number.str.replace(r"^(-?\d+\.\d*?)0+$", "$1").str.replace(r"^(-?\d+)\.$", "$1")


def answer_numbers_expr(text: pl.Expr) -> pl.Expr:
    """Every number the (NFKC) text writes anywhere (code and expressions included), canonical and
    unique: what another answer's final value is looked up in."""
    import polars as pl

    return text.str.extract_all(NUMBER_TOKEN).list.eval(canonical_value_expr(pl.element())).list.unique()
