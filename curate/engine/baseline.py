"""Baselines: waive today's findings so a team can adopt curate on an old dataset.

JSONL has no comments, so findings are keyed by the row's content hash and the
rule code (not the line number): a waived row stays waived when rows above it
move, and stops being waived when it is edited. Dataset-level findings are keyed
by the file name.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from curate.engine.findings import Finding
from curate.io import InputError, atomic_write_bytes

BASELINE_VERSION = 1


def finding_key(finding: Finding, row_hashes: dict[tuple[str, int], str]) -> str:
    if finding.line is None:
        return f"{finding.code}:dataset:{Path(finding.path).name}"
    return f"{finding.code}:{row_hashes.get((finding.path, finding.line), '?')}"


def write_baseline(path: str, findings: list[Finding], row_hashes: dict[tuple[str, int], str]) -> int:
    keys = sorted({finding_key(finding, row_hashes) for finding in findings})
    document = {"version": BASELINE_VERSION, "waived": keys}
    atomic_write_bytes(path, orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
    return len(keys)


def read_baseline(path: str) -> set[str]:
    try:
        document = orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise InputError(f"{path}: baseline file not found (create it with --write-baseline {path})") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a baseline file") from None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InputError(f"{path}: cannot read baseline: {exc}") from None
    if not isinstance(document, dict) or document.get("version") != BASELINE_VERSION:
        raise InputError(f"{path}: not a curate baseline (expected version {BASELINE_VERSION})")
    waived = document.get("waived", [])
    if not isinstance(waived, list) or not all(isinstance(key, str) for key in waived):
        raise InputError(f"{path}: `waived` must be a list of finding keys (strings); rewrite it with --write-baseline {path}")
    return set(waived)


def apply_baseline(
    findings: list[Finding], waived: set[str], row_hashes: dict[tuple[str, int], str]
) -> tuple[list[Finding], int]:
    """Findings that the baseline does not waive, and how many it waived."""
    kept = [finding for finding in findings if finding_key(finding, row_hashes) not in waived]
    return kept, len(findings) - len(kept)
