"""The final answer of a worked answer: the value an exact-match check compares.

A minimal version for `curate eval` (the duplicates work replaces it with the
shared extraction DU003 uses; the signature stays): an explicit marker wins
(`#### 72`, `\\boxed{72}`, `The answer is 72`), else the last number of the
closing part, else a leading yes/no.
"""

from __future__ import annotations

import re

MARKERS = (
    re.compile(r"####\s*([^\n]+)"),
    re.compile(r"\\boxed\{([^{}]+)\}"),
    re.compile(r"(?i)\bthe (?:final )?answer is[:\s]*([^\n]+)"),
)
NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
POLAR = re.compile(r"(?i)^\W*(yes|no)\b")
#: The closing part: the last this many characters (a worked answer ends on its result).
CLOSING_CHARS = 120


def _normal_number(text: str) -> str:
    value = text.replace(",", "")
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value or "0"


def _normal_value(text: str) -> str | None:
    numbers = NUMBER.findall(text)
    if numbers:
        return _normal_number(numbers[0])
    value = text.strip().strip(".!$ ").lower()
    return value or None


def final_answer(text: str) -> str | None:
    """The normalized final value of `text`, or None when it states none."""
    if not text:
        return None
    for marker in MARKERS:
        found = marker.findall(text)
        if found:
            return _normal_value(found[-1])
    closing = text[-CLOSING_CHARS:]
    numbers = NUMBER.findall(closing)
    if numbers:
        return _normal_number(numbers[-1])
    polar = POLAR.match(text)
    return polar.group(1).lower() if polar else None
