"""Quality rules (QL): rows that parse and have the right shape but teach the wrong thing.

Every row rule here follows one pattern so 100k rows stay fast: a cheap
vectorized prefilter over `batch.messages` (polars, one Rust regex or a length
test per rule) picks the few candidate messages, and precise Python checks run
only on those. Patterns are compiled once at import.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from curate.engine.batch import Batch, Row
from curate.engine.findings import Finding, Severity
from curate.engine.rule import DatasetRule, Fix, RowRule, RuleOptions
from curate.formats import Message, RowFormat
from curate.lightmodel import Field
from curate.rules.toolkit import candidate_messages, clear_field, declare_screen, frame_messages, is_alpaca_prompt, locate, map_strings, quoted, screened_messages

if TYPE_CHECKING:
    import numpy as np
    import polars as pl


FENCED_CODE = re.compile(r"```.*?(?:```|\Z)", re.S)


def blank_code_blocks(text: str) -> str:
    """`text` with fenced code blocks blanked out (offsets kept): quoted templates and
    repetitive code are material being discussed, not the turn's own words."""
    if "```" not in text:
        return text
    return FENCED_CODE.sub(lambda block: " " * len(block.group()), text)


def alpaca_prompt_fields(row: Row) -> Iterator[tuple[str, str]]:
    """(field, text) of an Alpaca row's prompt fields that are strings."""
    for key in ("instruction", "input"):
        value = row.obj.get(key)
        if isinstance(value, str):
            yield key, value


def alpaca_rows(batch: Batch) -> Iterator[tuple[Row, Message]]:
    """Alpaca rows with their (valid) user turn."""
    for row in batch.rows:
        if row.format is RowFormat.ALPACA and row.conversation is not None:
            for message in row.conversation.messages:
                if message.container == "instruction" and message.valid:
                    yield row, message


# --------------------------------------------------------------------------- QL001

#: Normalized spellings (lower case, only letters, digits and `/`) of content that stands in for missing data.
PLACEHOLDERS = frozenset({
    "nooutput", "noinput", "noresponse", "noanswer", "n/a", "null", "undefined",
    "todo", "tbd", "fixme", "placeholder", "inputnone", "outputnone",
})
#: Forum-export markers; only with their brackets, since "Deleted." is a fair answer.
BRACKETED_PLACEHOLDERS = frozenset({"[deleted]", "[removed]"})
#: Words that are placeholders in a prompt but a fair answer from the assistant ("Which are prime: 4, 6, 8?" "None.").
PROMPT_ONLY_PLACEHOLDERS = frozenset({"none", "nan", "empty", "blank"})
PUNCTUATION_ONLY = re.compile(r"[\s.…\-–—_*]+")
#: A fenced code block with nothing in it (```` ```python\n``` ````): an answer that was never filled in.
EMPTY_CODE_BLOCK = r"^\s*(?:```|~~~)[\w+#.-]*[ \t]*\n?\s*(?:```|~~~)\s*$"
EMPTY_CODE_BLOCK_RE = re.compile(EMPTY_CODE_BLOCK)
NOT_PLACEHOLDER_CHARS = re.compile(r"[^a-z0-9/]+")


def normalize_placeholder(text: str) -> str:
    return NOT_PLACEHOLDER_CHARS.sub("", text.lower())


class PlaceholderOptions(RuleOptions):
    extra: list[str] = Field(default_factory=list, description="More placeholder texts (matched case- and punctuation-insensitively, any turn).")
    allowed: list[str] = Field(default_factory=list, description="Built-in placeholders to accept, e.g. [\"None\"] or [\"N/A\"].")


class PlaceholderContent(RowRule):
    """Content is a placeholder such as `<No Output>`, `N/A` or `<noinput>`.

    ## What it does
    Reports a message (or an Alpaca `instruction` / `input` field) whose whole
    content, compared case- and punctuation-insensitively, is a placeholder:
    `<No Output>`, `<nooutput>`, `No input`, `<noinput>`, `N/A`, `null`,
    `undefined`, `TODO`, `TBD`, `placeholder`, `[deleted]`, only dots and
    dashes (`...`, `—`), or an empty fenced code block (```` ```python ````,
    newline, ```` ``` ````). `None`, `NaN`, `empty` and `blank` count in prompt
    turns only, since "None." is a fair answer to "Which of 4, 6 and 8 are
    prime?". A placeholder inside a sentence ("write N/A if unknown") is fine.

    ## Why is this bad
    Self-instruct and spreadsheet exports fill missing fields with these
    markers. The model learns to answer `<No Output>`, or sees `<noinput>` as
    part of every prompt although no user ever types it.

    ## Example
    ```jsonl
    {"instruction": "Name the capital of Australia.", "input": "<noinput>", "output": "Canberra."}
    {"messages": [{"role": "user", "content": "Describe the feedback form."}, {"role": "assistant", "content": "<No Output>"}]}
    ```

    ## Use instead
    Leave an absent Alpaca `input` empty (`""`); write the missing answer or
    drop the row. Options: `extra` adds placeholders, `allowed` accepts
    built-in ones.
    """

    code = "QL001"
    name = "placeholder-content"
    severity = Severity.WARNING
    Options = PlaceholderOptions

    def fix(self, finding: Finding) -> Fix | None:
        """A placeholder Alpaca `input` means "no input": it is cleared. A placeholder turn
        (an answer of "<No Output>") has nothing to train on: the row is dropped. A reviewer's
        keep turns both off."""
        if finding.data.get("source") == "input":
            return Fix.rewrite("placeholder input cleared", lambda obj: clear_field(obj, "input"), undone_by_keep=True)
        return Fix.drop(undone_by_keep=True)

    def setup(self) -> None:
        self.allowed = allowed = {normalize_placeholder(text) for text in self.options.allowed}
        extra = {normalize_placeholder(text) for text in self.options.extra} - {""}
        self.anywhere = (PLACEHOLDERS | extra) - allowed
        self.prompt_only = PROMPT_ONLY_PLACEHOLDERS - allowed
        self.punctuation_is_placeholder = "" not in allowed  # `allowed = ["..."]` accepts dot- and dash-only content
        self.max_bytes = max([64, *(4 * len(text) for text in self.options.extra)])

    def is_placeholder(self, text: str, role: str) -> bool:
        stripped = text.strip()
        if not stripped:
            return False  # empty content is SC005's finding
        if PUNCTUATION_ONLY.fullmatch(stripped):
            return self.punctuation_is_placeholder
        if EMPTY_CODE_BLOCK_RE.match(stripped):
            return True
        key = normalize_placeholder(stripped)
        if stripped.lower() in BRACKETED_PLACEHOLDERS:
            return key not in self.allowed
        return key in self.anywhere or (role != "assistant" and key in self.prompt_only)

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        import polars as pl

        content = pl.col("content").str.strip_chars()
        key = content.str.to_lowercase().str.replace_all(NOT_PLACEHOLDER_CHARS.pattern, "")
        short = pl.col("content").str.len_bytes() <= self.max_bytes
        bracketed = {normalize_placeholder(text) for text in BRACKETED_PLACEHOLDERS}
        known = key.is_in(list(self.anywhere | self.prompt_only | bracketed | {""})) | content.str.contains(EMPTY_CODE_BLOCK)  # `key` once
        for row, message in candidate_messages(batch, short, known):
            if not is_alpaca_prompt(row, message) and self.is_placeholder(message.content, message.role):
                yield self.message_finding(row, message, f"placeholder {quoted(message.content.strip())}")
        for row, message in alpaca_rows(batch):
            for key, text in alpaca_prompt_fields(row):
                if len(text) <= self.max_bytes and self.is_placeholder(text, "user"):
                    yield self.finding(row.path, row.line, f"{key} (user): placeholder {quoted(text.strip())}",
                                       data={"message_index": message.index, "role": "user", "source": key})


# --------------------------------------------------------------------------- QL002

#: C0 controls except tab, newline and carriage return; DEL and C1 controls; the zero-width space,
#: the byte-order mark inside text, bidi embeddings/overrides/isolates; lone surrogates.
CONTROL_CLASS = "\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\u202a-\u202e\u2066-\u2069\ufeff"
CONTROL_RE = re.compile(f"[{CONTROL_CLASS}\ud800-\udfff]")
#: QL002's prefilter (polars strings hold no lone surrogates).
CONTROL_SCREEN = f"[{CONTROL_CLASS}]"
ANSI_SEQUENCE_RE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
C0_NAMES = ("NUL SOH STX ETX EOT ENQ ACK BEL BS HT LF VT FF CR SO SI DLE DC1 DC2 DC3 DC4 NAK SYN ETB CAN EM SUB ESC FS GS RS US").split()


def control_character_name(char: str) -> str:
    """`U+001B ESC`, `U+202E RIGHT-TO-LEFT OVERRIDE`, `U+0085 C1 control`."""
    point = ord(char)
    if point < 0x20:
        label = C0_NAMES[point]
    elif point == 0x7F:
        label = "DEL"
    elif 0x80 <= point <= 0x9F:
        label = "C1 control"
    elif 0xD800 <= point <= 0xDFFF:
        label = "lone surrogate"
    else:
        label = unicodedata.name(char, "format character")
    return f"U+{point:04X} {label}"


def strip_control_characters(text: str) -> str:
    """`text` without ANSI escape sequences and the characters QL002 reports (what `curate fix` writes)."""
    return CONTROL_RE.sub("", ANSI_SEQUENCE_RE.sub("", text))


def strip_row_control_characters(value: object) -> object:
    """A JSON value with QL002's control characters removed from every string in it (keys included)."""
    return map_strings(value, strip_control_characters, keys=True)


class ControlCharacters(RowRule):
    r"""Content holds control characters, ANSI escapes or invisible bidi/zero-width characters.

    ## What it does
    Reports messages containing C0 control characters other than tab, newline
    and carriage return (NUL, ESC, form feed, ...), DEL, C1 controls
    (U+0080-U+009F, usually mis-decoded Windows-1252 text), ANSI escape
    sequences from terminal logs, the zero-width space and a byte-order mark
    inside text, bidi embeddings, overrides and isolates (U+202A-U+202E,
    U+2066-U+2069, the "Trojan Source" characters), and lone surrogates.
    Zero-width joiners and left-to-right/right-to-left marks are not reported:
    emoji sequences and right-to-left scripts use them legitimately. The
    message names the first character and its offset in the content.

    ## Why is this bad
    These characters are invisible in most viewers but real tokens for the
    model: it learns to emit escape codes and NULs, and tokenizers map some of
    them to unknown or byte-fallback tokens. Bidi overrides make text read
    differently from how it is stored.

    ## Example
    ```jsonl
    {"messages": [{"role": "user", "content": "Why is it red?"}, {"role": "assistant", "content": "\u001b[31mError\u001b[0m: disk full"}]}
    ```

    ## Use instead
    Strip them (`curate fix` does): `Error: disk full`.
    """

    code = "QL002"
    name = "control-characters"
    severity = Severity.WARNING

    def fix(self, finding: Finding) -> Fix | None:
        """The characters are stripped from every string of the row, keys included."""
        return Fix.rewrite("cleaned", strip_row_control_characters, stage=1)

    def setup(self) -> None:
        declare_screen(CONTROL_SCREEN)

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        for row, message in candidate_messages(batch, screen=CONTROL_SCREEN):
            yield from self.check_message(row, message)

    def check_message(self, row: Row, message: Message) -> Iterator[Finding]:
        hits = list(CONTROL_RE.finditer(message.content))
        if not hits:
            return
        first = hits[0]
        named, offset = locate(row, message, first.start())
        text = f"{control_character_name(first.group())} at offset {offset}"
        sequence = ANSI_SEQUENCE_RE.match(message.content, first.start())
        if sequence:
            text += f" (ANSI escape sequence {quoted(sequence.group().replace(chr(27), 'ESC'))})"
        if len(hits) > 1:
            text += f", {len(hits)} control characters in all"
        yield self.message_finding(row, named, text, data={"offset": offset, "codepoint": ord(first.group()), "count": len(hits)})


# --------------------------------------------------------------------------- QL003

#: Markers that alone show a second example inside a content: prompt-template headers and chat-template tags.
EXAMPLE_MARKERS = re.compile(
    r"(?im)^[ \t]*#{1,4}[ \t]*(?:instruction|response)[ \t]*:"
    r"|^[ \t]*\d{1,3}[ \t]*[.)][ \t]*instruction[ \t]*:"
    r"|<\|im_start\|>|<\|im_end\|>|<\|start_header_id\|>|<\|eot_id\|>|<\|endoftext\|>"
    r"|<\|(?:user|assistant|system)\|>|\[/?INST\]|<start_of_turn>|<end_of_turn>"
)
#: Numbered self-instruct fields (`18. Input:`): a merge when one number has two different fields.
NUMBERED_FIELD = re.compile(r"(?im)^[ \t]*(\d{1,3})[ \t]*[.)][ \t]*(input|output)[ \t]*:")
#: Speaker labels at a line start; case-sensitive so "user: the person..." in prose does not count.
SPEAKER_LABEL = re.compile(r"(?m)^[ \t]*(?:#{1,4}[ \t]*)?(Human|User|USER|HUMAN|Assistant|ASSISTANT|GPT)[ \t]*:")
USER_SPEAKERS = frozenset({"Human", "User", "USER", "HUMAN"})
MERGED_PREFILTER = (
    r"(?im)^[ \t]*(?:#{1,4}[ \t]*)?(?:instruction|response|human|user|assistant|gpt|\d{1,3}[ \t]*[.)][ \t]*(?:instruction|input|output))[ \t]*:"
    r"|<\|[a-z_]+\|>|\[/?INST\]|<(?:start|end)_of_turn>"
)


def merged_example_marker(text: str, role: str) -> re.Match | None:
    """The first marker that shows `text` carries another example, or None.

    Speaker labels count when both sides speak (`Human:` ... `Assistant:`) or
    when a later line starts with the other side's label (an assistant turn
    that goes on to write `User:`)."""
    text = blank_code_blocks(text)
    strong = EXAMPLE_MARKERS.search(text)
    if strong:
        return strong
    fields: dict[str, set[str]] = {}
    for match in NUMBERED_FIELD.finditer(text):
        fields.setdefault(match.group(1), set()).add(match.group(2).lower())
        if len(fields[match.group(1)]) > 1:
            return match
    labels = list(SPEAKER_LABEL.finditer(text))
    sides = {"user" if match.group(1) in USER_SPEAKERS else "assistant" for match in labels}
    if len(sides) > 1:
        return labels[0]
    other_side = "user" if role == "assistant" else "assistant" if role == "user" else None
    for match in labels:
        side = "user" if match.group(1) in USER_SPEAKERS else "assistant"
        if side == other_side and match.start() > 0:
            return match
    return None


class MergedInstructions(RowRule):
    r"""Content carries another example (`### Instruction:`, `18. Input:`, role tags).

    ## What it does
    Reports messages that contain the skeleton of another training example:
    prompt-template headers (`### Instruction:`, `### Response:`), numbered
    self-instruct fields (`18. Instruction:`, or `18. Input:` with
    `18. Output:`), chat-template tags (`<|im_start|>user`, `[INST]`,
    `<start_of_turn>`, `<|eot_id|>`), and speaker labels at line starts
    (`Human:` and `Assistant:` together, or an assistant turn that goes on with
    `User:`). Prose that mentions "the instructions" or "the user" is fine,
    and so is a template quoted in a fenced code block.

    ## Why is this bad
    Generation scripts that did not stop at the end of an example leave the
    next prompt in the answer. The model learns to keep talking past its turn
    and to invent the user's next message.

    ## Example
    ```jsonl
    {"instruction": "List two primary colors.", "input": "", "output": "Red and blue.\n\n18. Instruction: Give an antonym of 'hot'.\n18. Output: Cold."}
    ```

    ## Use instead
    Cut the content at the marker: `{"output": "Red and blue."}`.
    """

    code = "QL003"
    name = "merged-instructions"
    severity = Severity.WARNING

    def setup(self) -> None:
        declare_screen(MERGED_PREFILTER)

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        for row, message in candidate_messages(batch, screen=MERGED_PREFILTER):
            marker = merged_example_marker(message.content, message.role)
            if marker:
                label = quoted(marker.group().strip())
                named, offset = locate(row, message, marker.start())
                yield self.message_finding(row, named, f"carries another example: {label} at offset {offset}",
                                           data={"marker": marker.group().strip(), "offset": offset})


# --------------------------------------------------------------------------- QL004

VISUAL = r"(?:image|picture|pic|photo(?:graph)?|screen ?shot|diagram|chart|graph|drawing|painting|illustration|video|gif|scan)s?"
LINK = r"(?:link|url|hyperlink|website|web ?page)s?"
DOCUMENT = r"(?:file|attachment|document|pdf|spreadsheet|slide deck|slides|recording|audio|voice (?:note|message)|article)s?"
ANY_SOURCE = f"(?:{VISUAL}|{LINK}|{DOCUMENT})"
MEDIA_PLACEHOLDER = (
    r"[<\[(]\s*(?:attached\s+)?(?:image|picture|pic|photo|img|video|audio|screen ?shot|chart|diagram|attachment)s?"
    r"(?:\s+(?:attached|here|below|omitted|removed|not\s+shown|\d{1,2}))?\s*[>\])]"
)
#: Rows carrying media beside the text (LLaVA-style `image` fields): there `<image>` is the image's place, not a stand-in.
MEDIA_FIELDS = ("image", "images", "video", "videos", "audio", "audios")
#: (kind, pattern): kind says what would make the reference seeable.
UNSEEABLE_REFERENCES = tuple(
    (kind, re.compile(pattern, re.I))
    for kind, pattern in (
        ("attachment", rf"\b(?:attached|enclosed|accompanying)\s+(?:\w+\s+){{0,2}}?{ANY_SOURCE}\b"),
        # "the uploaded image" points at an upload; "a YouTuber uploads videos" or "who uploaded a video" does not.
        ("attachment", rf"\b(?:the|this|these|my|your)\s+(?:recently\s+|just\s+)?uploaded\s+(?:\w+\s+)?{ANY_SOURCE}\b"),
        # An export's stand-in for a missing image: `<Picture Attached>`, `<image>`, `[image]`, `(photo attached)`.
        ("visual", MEDIA_PLACEHOLDER),
        ("attachment", r"\b(?:the|this|my|an?)\s+attachments?\b|\bsee\s+attached\b"),
        ("attachment", r"\bI(?:'ve|\s+have)\s+(?:just\s+|also\s+)?(?:attached|enclosed|uploaded)\b"),
        ("attachment", rf"\bI\s+(?:just\s+|also\s+)?(?:attached|enclosed|uploaded)\s+(?:(?:a|an|the|my|this|these|some|two|three)\s+)?(?:\w+\s+)?{ANY_SOURCE}\b"),
        ("attachment", rf"\b{ANY_SOURCE}\s+(?:that\s+)?I(?:'ve|\s+have)?\s+(?:just\s+)?(?:attached|uploaded|sent|shared|posted|pasted)\b"),
        ("visual", rf"\b(?:the|this|these|that)\s+(?:\w+\s+)?{VISUAL}\s+(?:above|below)\b|\bthe\s+following\s+{VISUAL}\b"),
        ("visual", rf"\b(?:describe|caption|analy[sz]e|interpret|look\s+at|what(?:'s|\s+is|\s+are)\s+(?:in|on|shown\s+in))\s+(?:the|this|these|that|my)\s+{VISUAL}\b"),
        ("visual", rf"\b(?:in|on|from|of)\s+(?:this|these)\s+{VISUAL}\b|\b(?:in|on|from|of)\s+(?:the|my)\s+screen ?shots?\b"),
        ("link", rf"\b(?:this|these|the\s+following|the\s+above|the\s+below)\s+{LINK}\b|\b(?:the|this)\s+{LINK}\s+(?:above|below)\b"),
        ("document", r"\b(?:the|this|these)\s+(?:file|document|pdf|spreadsheet|article)s?\s+(?:above|below)\b"),
    )
)
#: The same patterns as one Rust regex (they use no Python-only syntax), so only real hits reach Python.
ATTACHMENT_PREFILTER = "(?i)" + "|".join(f"(?:{pattern.pattern})" for _, pattern in UNSEEABLE_REFERENCES)
URL_OR_MEDIA = re.compile(r"https?://|\bwww\.\w|!\[[^\]]*\]\(|<img\s[^>]*\bsrc\b|data:image/", re.I)
#: Text long enough after the reference to be the referenced document itself ("Summarize the article below: ...").
INLINE_DOCUMENT_CHARS = 200


def unseeable_reference(row: Row, message: Message) -> re.Match | None:
    """The first reference in `message` to something the row does not contain, or None."""
    if has_media(row):
        return None
    text = message.content
    for kind, pattern in UNSEEABLE_REFERENCES:
        for match in pattern.finditer(text):
            if match.start() and text[match.start() - 1].isalnum():
                continue  # `List<Image>`, `images[image]`: code, not a stand-in for an image
            if not document_is_inline(kind, text, match):
                return match
            break
    return None


def has_media(row: Row) -> bool:
    """A URL, a markdown or HTML image, a non-text content part or a media field anywhere in the row."""
    if any(URL_OR_MEDIA.search(message.content) for message in row.conversation.messages):
        return True
    if any(row.obj.get(key) for key in MEDIA_FIELDS):
        return True
    items = row.obj.get("messages") if isinstance(row.obj, dict) else None
    return isinstance(items, list) and any(
        isinstance(item, dict) and isinstance(item.get("content"), list)
        and any(isinstance(part, dict) and part.get("type", "text") != "text" for part in item["content"])
        for item in items
    )


def document_is_inline(kind: str, text: str, match: re.Match) -> bool:
    """Files, articles and attachments may be pasted right after the reference; images and links cannot."""
    if kind in ("visual", "link"):
        return False
    return "```" in text or len(text) - match.end() >= INLINE_DOCUMENT_CHARS


class UnseeableReference(RowRule):
    """User turn refers to an attachment, image, file or link that the row does not contain.

    ## What it does
    Reports user turns that point at something outside the text: "the attached
    image", "I've uploaded the file", "see attached", "describe this photo",
    "the screenshot below", "this link", "the PDF above". It stays quiet when
    the row does carry something to see: a URL, a markdown or HTML image, a
    non-text content part (`image_url`), or, for files and articles, the text
    pasted after the reference or in a code block.

    ## Why is this bad
    The answer was written by someone who saw the attachment; the model never
    will. It learns to describe images it cannot see, which is hallucination
    by training.

    ## Example
    ```jsonl
    {"instruction": "Explain what the chart in the attached image shows.", "input": "", "output": "The chart shows sales rising every quarter."}
    ```

    ## Use instead
    Put the content in the row (paste the text, add the image as a content
    part for a vision model), or drop the row.
    """

    code = "QL004"
    name = "unseeable-reference"
    severity = Severity.INFO

    def setup(self) -> None:
        declare_screen(ATTACHMENT_PREFILTER)

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        for row, message in candidate_messages(batch, roles=("user",), screen=ATTACHMENT_PREFILTER):
            reference = unseeable_reference(row, message)
            if reference:
                named, _ = locate(row, message, reference.start())
                yield self.message_finding(row, named, f"refers to {quoted(reference.group())} but the row has no attachment, image or link",
                                           data={"reference": reference.group()})


# --------------------------------------------------------------------------- QL005

WORD_RE = re.compile(r"\w+(?:['’]\w+)?")
LONG_TOKEN = r"\S{40,}"
#: The shortest text any QL005 check can report (8 two-letter words in a row).
MIN_REPETITION_BYTES = 23


class RepetitionOptions(RuleOptions):
    ngram: int = Field(4, ge=2, le=8, description="Word n-gram length for the repeated-phrase measure.")
    max_repeated_share: float = Field(0.6, gt=0, le=1, description="Report when repeated n-grams cover at least this share of the words.")
    min_words: int = Field(16, ge=4, description="Texts shorter than this many words are not measured for repeated phrases.")
    max_word_run: int = Field(8, ge=3, description="Report a word repeated this many times in a row (`no no no ...`).")
    max_char_run: int = Field(12, ge=4, description="Report a 1-4 character unit with a letter or digit repeated this many times in a row (`hahaha...`), at least 40 characters long.")
    max_line_repeats: int = Field(5, ge=2, description="Report a line that appears this many times when repeated lines are at least half of all lines.")


def repeated_share(words: list[str], n: int) -> tuple[float, tuple[str, ...], int]:
    """Share of words inside repeated phrases (n-grams that occur more than once and are mostly
    words, not numbers), the most repeated such phrase, and its count. Worked arithmetic repeats
    its numbers and operators by nature (`3 * 10 = 30 ... 3 * 10 = 30`); a loop repeats words."""
    grams = list(zip(*(words[i:] for i in range(n))))
    counts = Counter(gram for gram in grams if 2 * sum(not word.isdigit() for word in gram) > n)
    if not counts:
        return 0.0, tuple(words[:n]), 0
    top, top_count = counts.most_common(1)[0]
    if top_count < 2:
        return 0.0, top, top_count
    covered = bytearray(len(words))
    for position, gram in enumerate(grams):
        if counts.get(gram, 0) > 1:
            covered[position : position + n] = b"\x01" * n
    return sum(covered) / len(words), top, top_count


#: What repetition is not measured on: URLs (a tool call's URL spells out the query it was given
#: once) and GSM8K calculator annotations (`<<48/2=24>>`, a machine copy of the expression before it).
NOT_MEASURED = re.compile(r"https?://\S+|\bwww\.\S+|<<[^<>\n]{1,200}>>")


def measured_text(text: str) -> str:
    """The text QL005 measures: code blocks, URLs and calculator annotations blanked (offsets kept)."""
    text = blank_code_blocks(text)
    if "://" not in text and "www." not in text and "<<" not in text:
        return text
    return NOT_MEASURED.sub(lambda match: " " * len(match.group()), text)


def repeats_a_probe(starts: tuple[float, ...]) -> pl.Expr:
    """Prefilter: a short slice of the content, taken at each of `starts` (fractions of
    its length), occurs in it twice or more, or the slice at its end occurs before it.

    A repeated region covering more than half of a text contains its middle; a
    loop that runs to the cut-off contains its end. Searching a literal slice is a
    fast Rust substring search, where splitting every text into words was not."""
    import polars as pl

    content = pl.col("content")
    chars = content.str.len_chars().cast(pl.Int64)
    probe = (chars // 4).clip(3, 24)
    tail = content.str.slice(-probe)
    tests = [content.str.slice(0, (chars - probe).clip(0)).str.contains(tail, literal=True)]
    tests += [content.str.count_matches(content.str.slice((chars * start).cast(pl.Int64), probe), literal=True) >= 2 for start in starts]
    return pl.any_horizontal(tests)


class Repetition(RowRule):
    """Content repeats itself: looping phrases, lines, words or characters.

    ## What it does
    Reports messages with degenerate repetition, the way a model stuck in a
    loop writes:
    - repeated phrases: word n-grams (default 4 words) that occur more than
      once cover at least `max-repeated-share` (60%) of a text of at least
      `min-words` (16) words;
    - the same line `max-line-repeats` (5) times, repeated lines being at least
      half of all lines;
    - one word `max-word-run` (8) times in a row, or a 1-4 character unit
      `max-char-run` (12) times in a row (`hahaha...`, `zzzz...`), 40
      characters or more (lines of `=` or `-` are markdown, not loops).

    Numbered lists, tables and poems with a refrain stay well under these
    thresholds; fenced code blocks, URLs and GSM8K calculator annotations
    (`<<3*10=30>>`) are not measured (code repeats itself legitimately, a URL
    spells out the query it was given once), and phrases that are mostly
    numbers do not count as repeated phrases (worked arithmetic repeats
    `3 * 10 = 30` by nature).

    ## Why is this bad
    One looping example teaches the model that looping is a way to end a
    turn; repetition is also the most common sign of a broken generation
    pipeline upstream.

    ## Example
    ```jsonl
    {"messages": [{"role": "user", "content": "Summarize my ticket history."}, {"role": "assistant", "content": "I am checking your ticket history now. I am checking your ticket history now. I am checking your ticket history now. I am checking your ticket history now."}]}
    ```

    ## Use instead
    Regenerate or rewrite the answer, or drop the row.
    """

    code = "QL005"
    name = "repetition"
    severity = Severity.WARNING
    Options = RepetitionOptions

    def setup(self) -> None:
        options = self.options
        self.word_run = re.compile(rf"\b([^\W\d_]\w*)(?:\W+\1\b){{{options.max_word_run - 1},}}", re.I)  # words, not `0, 0, 0`
        self.char_run = re.compile(rf"(\S{{1,4}}?)\1{{{options.max_char_run - 1},}}")
        # At half or below, a repeated region need not hold the middle: probe the start and quarters too.
        self.probe_starts = (0.5,) if options.max_repeated_share > 0.5 else (0.0, 0.25, 0.5, 0.75)
        declare_screen(LONG_TOKEN)

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        import polars as pl

        long_enough = pl.col("content").str.len_bytes() >= MIN_REPETITION_BYTES
        probed = batch.messages.filter(long_enough).filter(repeats_a_probe(self.probe_starts))
        long_tokens = screened_messages(batch, LONG_TOKEN).filter(long_enough)
        either = pl.concat([probed.lazy(), long_tokens.lazy()]).unique(subset=["row", "msg"]).sort("row", "msg").collect()
        for row, message in frame_messages(batch, either):
            problem = self.repetition_problem(message.content)
            if problem:
                yield self.message_finding(row, message, problem)

    def repetition_problem(self, text: str) -> str | None:
        """A sentence describing the worst repetition in `text`, or None."""
        text = measured_text(text)
        run = self.word_run.search(text)
        if run:
            count = len(WORD_RE.findall(run.group()))
            return f"{quoted(run.group(1))} {count} times in a row at offset {run.start()}"
        for run in self.char_run.finditer(text):
            if len(run.group()) >= 40 and WORD_RE.search(run.group(1)):  # `=====` and `-----` are markdown rules
                return f"{quoted(run.group(1))} repeated {len(run.group()) // len(run.group(1))} times at offset {run.start()}"
        return self.repeated_lines(text) or self.repeated_phrases(text)

    def repeated_lines(self, text: str) -> str | None:
        lines = [line.strip() for line in text.splitlines() if WORD_RE.search(line)]
        if len(lines) < self.options.max_line_repeats:
            return None
        counts = Counter(lines)
        line, count = counts.most_common(1)[0]
        repeated = sum(c for c in counts.values() if c > 1)
        if count >= self.options.max_line_repeats and repeated * 2 >= len(lines):
            return f"line {quoted(line)} repeated {count} times ({repeated} of {len(lines)} lines are repeats)"
        return None

    def repeated_phrases(self, text: str) -> str | None:
        words = WORD_RE.findall(text.lower())
        n = self.options.ngram
        if len(words) < max(self.options.min_words, n + 1):
            return None
        share, top, count = repeated_share(words, n)
        if share >= self.options.max_repeated_share:
            return f"{share:.0%} of the words are in repeated {n}-word phrases ({quoted(' '.join(top))} {count} times)"
        return None


# --------------------------------------------------------------------------- QL007


class LengthOutlierOptions(RuleOptions):
    min_rows: int = Field(50, ge=5, description="Datasets with fewer rows are too small for a length distribution; nothing is reported.")
    fence: float = Field(3.0, gt=0, description="How many interquartile ranges (of log length) beyond the quartiles count as far outside.")
    min_ratio: float = Field(8.0, ge=1, description="An outlier must also be this many times longer (or shorter) than the median.")


class LengthOutlier(DatasetRule):
    """Assistant text far longer or shorter than the rest of the dataset.

    ## What it does
    Measures each row's assistant text in characters (all assistant turns
    together) and reports rows far outside the distribution: beyond Tukey's
    far-out fences on the log length (quartiles ± `fence` (3) interquartile
    ranges) and also at least `min-ratio` (8) times longer or shorter than
    the median. Log lengths make the fences fit the skewed shape of text
    lengths; the ratio test keeps a tight distribution (every answer 95-105
    characters) from flagging a 120-character answer. Datasets under
    `min-rows` (50) rows are not judged. The length histogram is shown with
    `--stats`.

    ## Why is this bad
    A 40,000-character answer in a set of short replies is usually a pasted
    document or a runaway generation; a two-word answer among essays is
    usually truncated. Both shift the learned answer length and, past the
    max sequence length, are silently cut.

    ## Example
    A support set whose answers are 200-800 characters, with one 25,000
    character answer holding a pasted log file.

    ## Use instead
    Look at the reported rows: cut or split the long ones, complete or drop
    the short ones.
    """

    code = "QL007"
    name = "length-outlier"
    severity = Severity.INFO
    Options = LengthOutlierOptions

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        #: path -> per-batch arrays of (line numbers, assistant characters); each file is its own distribution.
        self.by_path: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}

    def observe(self, batch: Batch) -> None:
        import numpy as np
        import polars as pl

        per_row = (
            batch.messages.filter(pl.col("role") == "assistant")
            .group_by("row")
            .agg(pl.col("content").str.strip_chars().str.len_chars().sum().alias("chars"))
            .filter(pl.col("chars") > 0)  # blank answers are SC005's, not a length question
            .sort("row")
        )
        rows = [batch.rows[position] for position in per_row["row"].to_list()]
        for path in dict.fromkeys(row.path for row in rows):  # a batch holds one file; stay correct if not
            keep = np.array([row.path == path for row in rows])
            lines = np.array([row.line for row in rows], dtype=np.int64)[keep]
            self.by_path.setdefault(path, []).append((lines, per_row["chars"].to_numpy().astype(np.int64)[keep]))

    def merge(self, later: LengthOutlier) -> None:
        for path, parts in later.by_path.items():
            self.by_path.setdefault(path, []).extend(parts)

    def finish(self) -> Iterable[Finding]:
        import numpy as np

        for path, parts in self.by_path.items():
            lines = np.concatenate([part[0] for part in parts])
            lengths = np.concatenate([part[1] for part in parts])
            if len(lengths) >= self.options.min_rows:
                yield from self.outliers(path, lines, lengths)

    def outliers(self, path: str, lines: np.ndarray, lengths: np.ndarray) -> Iterator[Finding]:
        import numpy as np

        log_lengths = np.log1p(lengths)
        q1, median, q3 = np.percentile(log_lengths, [25, 50, 75])
        spread = (q3 - q1) * self.options.fence
        ratio = math.log(self.options.min_ratio)
        too_long = (log_lengths > q3 + spread) & (log_lengths - median >= ratio)
        too_short = (log_lengths < q1 - spread) & (median - log_lengths >= ratio)
        median_chars = math.expm1(median)
        for position in np.flatnonzero(too_long | too_short):
            chars = int(lengths[position])
            times = chars / max(median_chars, 1) if too_long[position] else median_chars / max(chars, 1)
            relation = "longer" if too_long[position] else "shorter"
            yield self.finding(
                path, int(lines[position]),
                f"assistant text is {chars:,} characters, {times:.0f}x {relation} than this file's median of {median_chars:,.0f}",
                data={"chars": chars, "median": round(median_chars, 1)},
            )

    def stats(self) -> dict[str, dict[str, int]]:
        import numpy as np

        if not self.by_path:
            return {}
        lengths = np.concatenate([part[1] for parts in self.by_path.values() for part in parts])
        edges = [0, 16, 64, 256, 1024, 4096, 16384]
        labels = ["<16", "16-63", "64-255", "256-1k", "1k-4k", "4k-16k", ">=16k"]
        counts = np.bincount(np.searchsorted(edges, lengths, side="right") - 1, minlength=len(labels))
        return {"assistant length (characters)": {label: int(count) for label, count in zip(labels, counts) if count}}
