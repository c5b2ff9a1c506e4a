"""Findings: what rules return, and severities."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class Severity(str, Enum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"error": 3, "warning": 2, "info": 1}[self.value]

    @property
    def letter(self) -> str:
        return self.value[0].upper()

    def __str__(self) -> str:
        return self.value

    @classmethod
    def parse(cls, text: str) -> Severity:
        aliases = {"e": "error", "w": "warning", "warn": "warning", "i": "info"}
        return cls(aliases.get(text.lower(), text.lower()))


@dataclass(frozen=True, slots=True)
class Location:
    path: str
    line: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "line": self.line}


@dataclass(slots=True)
class Finding:
    """One problem. `line` is None for dataset-level findings."""

    code: str
    name: str
    severity: Severity
    path: str
    line: int | None
    message: str
    related: list[Location] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def sort_key(self) -> tuple:
        # Row findings in file order first, dataset-level findings (line None) after them.
        return (self.path, self.line is None, self.line or 0, self.code, self.message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "severity": self.severity.value,
            "path": self.path,
            "line": self.line,
            "message": self.message,
            "related": [location.to_dict() for location in self.related],
            "data": self.data,
        }
