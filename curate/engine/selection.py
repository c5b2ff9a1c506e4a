"""Rule selection: `select` / `ignore` by code, code prefix, name, or ALL.

As in ruff, the most specific selector wins: `--select SC --ignore SC008` keeps
SC001-SC007, and `--ignore SC --select SC004` keeps only SC004. On a tie, ignore wins.
"""

from __future__ import annotations

from collections.abc import Iterable

from curate.config import suggest
from curate.engine.rule import Rule


def _specificity(selector: str, rule: type[Rule]) -> int | None:
    """How specifically `selector` names `rule` (higher is more specific), or None."""
    upper = selector.upper()
    if upper == "ALL":
        return 0
    if selector == rule.name or upper == rule.code:
        return 100
    if rule.code.startswith(upper) and upper[:1].isalpha():
        return len(upper)
    return None


def unknown_selectors(selectors: Iterable[str], registry: dict[str, type[Rule]]) -> list[str]:
    """Problems for selectors that match no rule, with a suggestion each."""
    choices = set(registry) | {rule.name for rule in registry.values()}
    problems = []
    for selector in selectors:
        if not any(_specificity(selector, rule) is not None for rule in registry.values()):
            problems.append(f"unknown rule selector `{selector}`{suggest(selector, choices)}")
    return problems


def select_codes(
    registry: dict[str, type[Rule]],
    select: Iterable[str] | None,
    ignore: Iterable[str] = (),
) -> list[str]:
    """The codes enabled by `select` (default ALL) minus `ignore`, in code order."""
    select = list(select) if select is not None else ["ALL"]
    ignore = list(ignore)
    enabled = []
    for code, rule in sorted(registry.items()):
        best_select = max((s for s in (_specificity(x, rule) for x in select) if s is not None), default=None)
        if best_select is None:
            continue
        best_ignore = max((s for s in (_specificity(x, rule) for x in ignore) if s is not None), default=None)
        if best_ignore is None or best_select > best_ignore:
            enabled.append(code)
    return enabled


def explicitly_named(selectors: Iterable[str], rule: type[Rule]) -> bool:
    """True when a selector names this rule by code or name (not a prefix or ALL)."""
    return any(_specificity(s, rule) == 100 for s in selectors)
