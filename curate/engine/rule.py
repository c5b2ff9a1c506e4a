"""Rule base classes and the registry.

A rule is one small class found by its code. Metadata is declared as class
attributes and checked when the class is defined (`__init_subclass__`), so a
rule without a valid code, a unique name or a complete docstring fails at import.

Row rules are pure: `check(row)` returns findings for one row. Vectorized row
rules override `check_batch` and query `batch.messages` with polars.
Dataset rules `observe` every batch, then `finish` with findings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

from curate.config import kebab
from curate.engine.batch import Batch, Row
from curate.engine.findings import Finding, Location, Severity
from curate.formats import Message
from curate.lightmodel import ConfigDict, LightModel
from curate.text.secrets import mask_secrets

CODE_PATTERN = re.compile(r"^[A-Z]{2}[0-9]{3}$")
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
DOC_SECTIONS = ("What it does", "Why is this bad", "Example", "Use instead")

REGISTRY: dict[str, type[Rule]] = {}
_NAMES: dict[str, str] = {}


class RuleOptions(LightModel):
    """Base for per-rule options. Fields take `snake_case` or `kebab-case` keys; declared with
    `curate.lightmodel`'s `Field` and `field_validator`, validated by pydantic when set."""

    model_config = ConfigDict(extra="forbid", alias_generator=kebab, populate_by_name=True, frozen=True)


class RuleSetupError(Exception):
    """A rule cannot run (a missing model, an unreadable eval file): one line, no traceback."""


@dataclass
class RunContext:
    """What rules may need beyond the rows: the target model, eval files, shared resources."""

    model: str | None = None
    eval_paths: list[str] = field(default_factory=list)
    max_seq_length: int | None = None
    root: Path = field(default_factory=Path.cwd)
    #: What rendering the chat template may cost (a `curate.templates.RenderBudget`; None: defaults).
    template_budget: Any = None
    _resources: dict[str, Any] = field(default_factory=dict, repr=False)

    def resource(self, key: str, factory: Callable[[], Any]) -> Any:
        """Build a shared resource once per run (a loaded chat template, an eval index).
        A factory that raised RuleSetupError raises the same error for every later caller."""
        if key not in self._resources:
            try:
                self._resources[key] = factory()
            except RuleSetupError as exc:
                self._resources[key] = exc
        value = self._resources[key]
        if isinstance(value, RuleSetupError):
            raise value
        return value

    def has(self, requirement: str) -> bool:
        return {"model": self.model is not None, "eval": bool(self.eval_paths)}[requirement]


def _masked(data: dict[str, Any]) -> dict[str, Any]:
    """Finding data with its strings, and lists of strings, masked (locations and numbers untouched)."""
    return {key: _masked_value(value) for key, value in data.items()}


def _masked_value(value: Any) -> Any:
    """A string masked; a list with its strings masked (the same list when it holds none, as a
    cluster's 50 locations shared by each of its findings do); anything else as it is."""
    if isinstance(value, str):
        return mask_secrets(value)
    if isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                return [mask_secrets(item) if isinstance(item, str) else item for item in value]
    return value


@dataclass(frozen=True, slots=True)
class Fix:
    """What `curate fix` does with the row of one finding; a rule's `fix` returns it (None: the
    row is left for review). Build one with `Fix.drop`, `Fix.rewrite` or `Fix.keep_first`."""

    #: What the fix report says was done ("dropped", "keys removed", ...).
    verb: str
    #: obj -> fixed obj (the obj itself when there was nothing to change); None drops the row.
    function: Callable[[Any], Any] | None = None
    #: "row" (the finding's row), "file" (every row of the finding's file) or "duplicates"
    #: (the finding's duplicate group: the first row is kept, the others dropped).
    scope: str = "row"
    #: A reviewer's keep of the row turns this fix off (a judgement call, not a repair).
    undone_by_keep: bool = False
    #: Rewrites run by stage, then in finding order: 0 edits fields, 1 cleans text, 2 reshapes the row.
    stage: int = 0

    @property
    def drops(self) -> bool:
        return self.function is None

    @classmethod
    def drop(cls, *, undone_by_keep: bool = False) -> Fix:
        return cls("dropped", undone_by_keep=undone_by_keep)

    @classmethod
    def rewrite(cls, verb: str, function: Callable[[Any], Any], *, stage: int = 0, scope: str = "row", undone_by_keep: bool = False) -> Fix:
        return cls(verb, function, scope, undone_by_keep, stage)

    @classmethod
    def keep_first(cls) -> Fix:
        return cls("dropped", scope="duplicates", undone_by_keep=True)


def missing_doc_sections(doc: str | None) -> list[str]:
    text = doc or ""
    return [section for section in DOC_SECTIONS if not re.search(rf"^\s*## {section}\b", text, re.M)]


class Rule:
    """Base of all rules; concrete rules set `code`, `name` and `severity`."""

    code: ClassVar[str] = ""
    name: ClassVar[str] = ""
    severity: ClassVar[Severity] = Severity.WARNING
    #: Context a rule needs: "model" (a tokenizer with a chat template) or "eval" (eval files).
    requires: ClassVar[tuple[str, ...]] = ()
    #: `curate fix` can repair or drop rows with this finding: True when the rule defines `fix`.
    fixable: ClassVar[bool] = False
    #: A reviewer's keep or edit of a row settles this rule's findings on it (no fix, nothing left
    #: to review). False for secrets: a kept or edited row is still redacted, its finding still shown.
    settled_by_keep: ClassVar[bool] = True
    Options: ClassVar[type[RuleOptions]] = RuleOptions

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        declared_fixable = "fixable" in cls.__dict__
        cls.fixable = cls.fix is not Rule.fix
        if not cls.__dict__.get("code"):
            return  # an abstract base such as RowRule
        problems = []
        if declared_fixable:
            problems.append("fixable is derived from `fix`; define `fix` instead of setting it")
        if not CODE_PATTERN.match(cls.code):
            problems.append(f"code {cls.code!r} does not match {CODE_PATTERN.pattern}")
        if not NAME_PATTERN.match(cls.name):
            problems.append(f"name {cls.name!r} is not kebab-case")
        if cls.code in REGISTRY and REGISTRY[cls.code].__qualname__ != cls.__qualname__:
            problems.append(f"code {cls.code} is already used by {REGISTRY[cls.code].__qualname__}")
        if _NAMES.get(cls.name, cls.code) != cls.code:
            problems.append(f"name {cls.name!r} is already used by {_NAMES[cls.name]}")
        missing = missing_doc_sections(cls.__doc__)
        if missing:
            problems.append(f"docstring lacks sections: {', '.join(missing)}")
        if problems:
            raise TypeError(f"rule {cls.__qualname__}: " + "; ".join(problems))
        REGISTRY[cls.code] = cls
        _NAMES[cls.name] = cls.code

    def __init__(self, options: RuleOptions | None = None, context: RunContext | None = None):
        self.options = options if options is not None else self.Options()
        self.context = context or RunContext()

    def setup(self) -> None:
        """Load what the rule needs before the first batch; raise RuleSetupError if it cannot run."""

    def fix(self, finding: Finding) -> Fix | None:
        """What `curate fix` does with the row of `finding` (None: it is left for review)."""
        return None

    @classmethod
    def summary(cls) -> str:
        """The first line of the docstring."""
        return (cls.__doc__ or "").strip().splitlines()[0].strip()

    @classmethod
    def source(cls) -> str:
        """Where the class is defined, as `curate/rules/pii.py:31` (relative to the package's parent
        folder when it is inside it, so a rule's source is one step from its code)."""
        import inspect

        file = Path(inspect.getsourcefile(cls) or "?")
        _, line = inspect.getsourcelines(cls)
        root = Path(__file__).resolve().parents[2]
        try:
            shown = file.resolve().relative_to(root).as_posix()
        except ValueError:
            shown = str(file)
        return f"{shown}:{line}"

    @classmethod
    def documentation(cls) -> str:
        import inspect

        return inspect.cleandoc(cls.__doc__ or "")

    def finding(
        self,
        path: str,
        line: int | None,
        message: str,
        *,
        related: Iterable[Location] = (),
        data: dict[str, Any] | None = None,
        severity: Severity | None = None,
        quotes_rows: bool = True,
    ) -> Finding:
        """A finding of this rule. Its message and data go through the secret masker (a quoted
        answer holding an API key shows `sk-pr…aSg`), so no report format prints a full secret.
        A message and data made of nothing but locations and numbers (`quotes_rows=False`: the
        duplicate rules' clusters) skip it: there is no row text in them to mask, and the masker
        would garble a file name it mistakes for a phone number or an address (the finding's own
        `path` is never masked), for ~7 µs a finding (87k of them at 1M rows)."""
        return Finding(
            code=self.code,
            name=self.name,
            severity=severity or self.severity,
            path=path,
            line=line,
            message=mask_secrets(message) if quotes_rows else message,
            related=list(related),
            data=(_masked(data) if quotes_rows else data) if data else {},
        )

    def row_finding(self, row: Row, message: str, **kwargs: Any) -> Finding:
        return self.finding(row.path, row.line, message, **kwargs)

    def message_finding(self, row: Row, message: Message, text: str, **kwargs: Any) -> Finding:
        """A finding about one message, named the way users read it: `messages[2] (assistant): ...`."""
        data = {"message_index": message.index, "role": message.role, **kwargs.pop("data", {})}
        return self.finding(row.path, row.line, f"{message.where}: {text}", data=data, **kwargs)


class RowRule(Rule):
    """A rule that looks at one row at a time."""

    #: Rows without a conversation (parse errors, unknown shapes) are skipped unless False.
    needs_conversation: ClassVar[bool] = True
    #: Rows whose turns have no roles (TRL's `text` rows) are skipped when True; lint says so.
    needs_roles: ClassVar[bool] = False

    def check(self, row: Row) -> Iterable[Finding]:
        raise NotImplementedError

    def check_batch(self, batch: Batch) -> Iterator[Finding]:
        for row in batch.rows:
            if self.needs_conversation and row.conversation is None:
                continue
            yield from self.check(row)


class DatasetRule(Rule):
    """A rule that observes every batch, then reports once at the end."""

    #: Preference rows are left out when True: rules that compare conversations by prompt and
    #: answer (duplicates) would call two pairs that share a prompt and a chosen answer copies;
    #: the PF rules compare pairs instead. Lint says how many rows were left out.
    skips_preference_rows: ClassVar[bool] = False

    def observe(self, batch: Batch) -> None:
        raise NotImplementedError

    #: What `setup` builds that every process builds for itself (an eval index, a loaded chat
    #: template): left out when a shard's copy of the rule is sent back (`__getstate__`).
    built_by_setup: ClassVar[tuple[str, ...]] = ()

    def finish(self) -> Iterable[Finding]:
        raise NotImplementedError

    def merge(self, later: Self) -> None:
        """Take in what `later`, a copy of this rule with the same options, observed of the rows
        that follow this rule's in reading order (another process read them: `curate.engine.shards`),
        so that `finish` reports what one rule observing every row in order would. Rules that
        cannot merge leave this unimplemented, and lint then reads in one process."""
        raise NotImplementedError

    @classmethod
    def mergeable(cls) -> bool:
        return cls.merge is not DatasetRule.merge

    def __getstate__(self) -> dict[str, Any]:
        """A shard's observations, sent back to the process that merges them: no run context,
        nothing `setup` built."""
        left_out = {"context", *self.built_by_setup}
        return {name: value for name, value in vars(self).items() if name not in left_out}

    def stats(self) -> dict[str, dict[str, int]]:
        """Distributions worth charting (labels, formats, lengths): name -> {bucket: count}."""
        return {}


def load_builtin_rules() -> dict[str, type[Rule]]:
    """Import every module under `curate.rules` so their rules register themselves."""
    import importlib
    import pkgutil

    import curate.rules as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")
    return REGISTRY
