"""Detectors of personal data and credentials, and the one masker every quoted excerpt goes through.

QL006 (`curate/rules/pii.py`) reports what these find and `curate fix --redact-pii` replaces it;
`excerpt` is how any finding quotes content (a secret in a quoted answer shows as `sk-pr…aSg`),
and `mask_secrets` is applied to every finding's message and data as they are made, so no report
format prints a full key, card number or address.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["email", "phone", "card", "api-key", "private-key"]
KINDS: tuple[str, ...] = ("email", "phone", "card", "api-key", "private-key")

#: Cheap Rust-regex test for "might hold any of the below"; precise checks run only on its hits.
PII_PREFILTER = r"@\w|\d[\d ().-]{6,}\d|sk-|[sr]k_(?:live|test)_|AKIA|ASIA|gh[pousr]_|github_pat_|xox[baprs]-|-----BEGIN|AIza"

EMAIL_RE = re.compile(r"(?<![\w.%+-])[A-Za-z0-9][A-Za-z0-9._%+-]*@((?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,})\b")
INTERNATIONAL_PHONE_RE = re.compile(r"(?<![\w+])\+(?:\d[ .()-]{0,2}){7,14}\d(?!\w)")
US_PHONE_RE = re.compile(r"(?<![\w.+/-])(?:1[ .-])?(?:\([2-9]\d{2}\) ?|[2-9]\d{2}[ .-])[2-9]\d{2}[ .-]\d{4}(?![\w/-]|\.\d)")
CARD_RE = re.compile(r"(?<![\d.-])\d(?:[ -]?\d){12,18}(?![\d-]|\.\d)")
CARD_ISSUER_RE = re.compile(r"4|5[1-5]|2[2-7]|3[47]|3[068]|35|6(?:011|5|4[4-9]|2)")
#: Words right before a number that make it an identifier, not a phone number ("order 212-555-0187").
IDENTIFIER_WORDS = r"order|invoice|ticket|case|ref|reference|tracking|transaction|confirmation|account|serial|sku|isbn|imei|id"
IDENTIFIER_CONTEXT = re.compile(rf"(?:{IDENTIFIER_WORDS}|#|no\.)\W{{0,3}}$", re.I)
#: For card-shaped numbers only the words count: "card #4111 ..." is still a card.
CARD_IDENTIFIER_CONTEXT = re.compile(rf"\b(?:{IDENTIFIER_WORDS})\W{{0,3}}(?:number\W{{0,3}}|no\.\W{{0,2}}|#\W{{0,2}})?$", re.I)
API_KEYS = (
    ("API key", re.compile(r"(?<![\w-])sk-(?:proj-|svcacct-|admin-|ant-(?:api\d\d-)?)?[A-Za-z0-9_-]{20,}")),
    ("Stripe key", re.compile(r"\b[sr]k_(?:live|test)_[0-9A-Za-z]{16,}")),
    ("AWS access key", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})")),
    ("Slack token", re.compile(r"\bxox[baprs]-[A-Za-z0-9-]{10,}")),
    ("Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}(?![\w-])")),
)
PRIVATE_KEY_RE = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")
#: The whole block, for redaction: the key material runs to the END line (or the end of the text).
PRIVATE_KEY_BLOCK_RE = re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)", re.S)
#: What `curate fix --redact-pii` writes in place of each kind.
REDACTION_TOKENS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD_NUMBER]", "api-key": "[API_KEY]", "private-key": "[PRIVATE_KEY]"}
DUMMY_MARKERS = ("example", "xxxx", "your", "dummy", "fake", "redacted", "placeholder", "<", "...", "…")
#: RFC 2606 / 6761 reserved names: addresses there are examples by definition.
RESERVED_DOMAINS = ["example.com", "example.org", "example.net", "example.edu", "example", "test", "invalid", "localhost"]
#: SSH remotes look like addresses but name no person.
GIT_REMOTES = ["git@github.com", "git@gitlab.com", "git@bitbucket.org"]


@dataclass(frozen=True, slots=True)
class Hit:
    """One detected item: where it is, what it is, and a preview safe to print."""

    start: int
    end: int
    kind: str
    label: str
    preview: str


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def redact(secret: str, head: int = 5, tail: int = 3) -> str:
    """`sk-pr…aSg`: enough to find the secret in the data, never enough to use it."""
    if len(secret) <= head + tail + 2:
        return secret[:2] + "…"
    return f"{secret[:head]}…{secret[-tail:]}"


def looks_like_dummy(value: str) -> bool:
    """`sk-xxxx…`, `AKIAIOSFODNN7EXAMPLE`, `ghp_your_token_here`: documentation, not a leak."""
    lowered = value.lower()
    return any(marker in lowered for marker in DUMMY_MARKERS) or len(set(value[-16:])) <= 3


def find_emails(text: str) -> Iterator[Hit]:
    for match in EMAIL_RE.finditer(text):
        address = match.group()
        local = address.split("@", 1)[0]
        shown = local[: min(2, len(local) - 1)]  # never the whole local part, even for `ab@...`
        yield Hit(match.start(), match.end(), "email", "email address", f"{shown}…@{match.group(1)}")


def find_phones(text: str) -> Iterator[Hit]:
    for pattern, digit_range in ((INTERNATIONAL_PHONE_RE, range(8, 16)), (US_PHONE_RE, range(10, 12))):
        for match in pattern.finditer(text):
            digits = re.sub(r"\D", "", match.group())
            if len(digits) not in digit_range or IDENTIFIER_CONTEXT.search(text, max(0, match.start() - 24), match.start()):
                continue
            if pattern is US_PHONE_RE and digits[-7:-4] == "555" and digits[-4:-2] == "01":
                continue  # 555-0100..0199 are reserved for fiction
            plus = "+" if match.group().startswith("+") else ""
            yield Hit(match.start(), match.end(), "phone", "phone number", f"{plus}{digits[:2]}…{digits[-2:]}")


def find_cards(text: str) -> Iterator[Hit]:
    for match in CARD_RE.finditer(text):
        number = match.group()
        digits = re.sub(r"\D", "", number)
        separators = set(re.sub(r"\d", "", number))
        if len(digits) < 13 or len(separators) > 1 or not CARD_ISSUER_RE.match(digits) or not luhn_valid(digits):
            continue
        if CARD_IDENTIFIER_CONTEXT.search(text, max(0, match.start() - 32), match.start()):
            continue
        yield Hit(match.start(), match.end(), "card", "card number", f"…{digits[-4:]}")


def find_api_keys(text: str) -> Iterator[Hit]:
    for label, pattern in API_KEYS:
        for match in pattern.finditer(text):
            key = match.group()
            if looks_like_dummy(key) or (label == "API key" and not (re.search(r"\d", key[3:]) and re.search(r"[A-Za-z]", key[3:]))):
                continue
            name = "Anthropic API key" if key.startswith("sk-ant-") else "OpenAI API key" if label == "API key" else label
            yield Hit(match.start(), match.end(), "api-key", name, redact(key))


def find_private_keys(text: str) -> Iterator[Hit]:
    for match in PRIVATE_KEY_RE.finditer(text):
        yield Hit(match.start(), match.end(), "private-key", "private key block", match.group())


FINDERS: dict[str, Callable[[str], Iterator[Hit]]] = {
    "email": find_emails,
    "phone": find_phones,
    "card": find_cards,
    "api-key": find_api_keys,
    "private-key": find_private_keys,
}


class Detector:
    """The detectors of `kinds`, with accepted values (reserved example domains, git SSH remotes,
    and `allow`: a domain and its subdomains, or an exact value)."""

    def __init__(self, kinds: Iterable[str] = KINDS, allow: Iterable[str] = ()):
        self.finders = [FINDERS[kind] for kind in KINDS if kind in set(kinds)]
        self.allowed = {value.lower() for value in [*RESERVED_DOMAINS, *GIT_REMOTES, *allow]}

    def _found(self, text: str) -> list[Hit]:
        return sorted((hit for finder in self.finders for hit in finder(text)), key=lambda hit: (hit.start, -hit.end))

    def hits(self, text: str) -> list[Hit]:
        """Non-overlapping, allowed-filtered hits in text order, each value once."""
        kept: list[Hit] = []
        seen: set[str] = set()
        for hit in self._found(text):
            value = text[hit.start : hit.end]
            if (kept and hit.start < kept[-1].end) or value in seen or self.is_allowed(value, hit.kind):
                continue
            seen.add(value)
            kept.append(hit)
        return kept

    def replace(self, text: str, replacement: Callable[[Hit], str]) -> tuple[str, int]:
        """`text` with every detected item (each occurrence, allowed values kept) replaced, and how many."""
        if not PREFILTER_RE.search(text):
            return text, 0
        pieces: list[str] = []
        position = replaced = 0
        for hit in self._found(text):
            if hit.start < position or self.is_allowed(text[hit.start : hit.end], hit.kind):
                continue
            end = hit.end
            if hit.kind == "private-key":
                block = PRIVATE_KEY_BLOCK_RE.match(text, hit.start)
                end = block.end() if block else end
            pieces += [text[position : hit.start], replacement(hit)]
            position, replaced = end, replaced + 1
        return "".join(pieces) + text[position:], replaced

    def redact_text(self, text: str) -> tuple[str, int]:
        """`text` with every detected item replaced by a typed token such as `[EMAIL]`, and how
        many were replaced; what `curate fix --redact-pii` writes."""
        return self.replace(text, lambda hit: REDACTION_TOKENS[hit.kind])

    def mask(self, text: str) -> str:
        """`text` with every detected item replaced by its safe preview (`sk-pr…aSg`, `jo…@outlook.com`)."""
        return self.replace(text, lambda hit: hit.preview)[0]

    def is_allowed(self, value: str, kind: str) -> bool:
        lowered = value.lower()
        if lowered in self.allowed:
            return True
        if kind == "email":
            domain = lowered.rsplit("@", 1)[1]
            parts = domain.split(".")
            return any(".".join(parts[i:]) in self.allowed for i in range(len(parts)))
        return False


PREFILTER_RE = re.compile(PII_PREFILTER)
_MASKER = Detector()


def mask_secrets(value: Any) -> Any:
    """A string, or the strings of a JSON value, with every personal data item and credential
    replaced by its safe preview. Applied to every finding's message and data."""
    if isinstance(value, str):
        return _MASKER.mask(value)
    if isinstance(value, list):
        return [mask_secrets(item) for item in value]
    if isinstance(value, dict):
        return {key: mask_secrets(item) for key, item in value.items()}
    return value


def excerpt(text: str, limit: int) -> str:
    """How a finding quotes content: secrets masked first (so a cut cannot leave most of a key),
    whitespace runs collapsed to one line, at most `limit` characters."""
    flat = " ".join(_MASKER.mask(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
