"""Configuration: `[tool.curate]` in pyproject.toml, or a `curate.toml`.

The config file is found by walking up from the first data file's folder (like
ruff): the first `curate.toml`, or `pyproject.toml` that has a `[tool.curate]`
table, wins. CLI flags override it. Unknown keys are errors with a suggestion,
and every error is collected before failing, so one run shows them all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from curate.io import DEFAULT_MAX_ROW_BYTES
from curate.lightmodel import ConfigDict, Field, LightModel

if TYPE_CHECKING:
    from pydantic import BaseModel, ValidationError

FailOn = Literal["error", "warning", "info", "never"]


def kebab(name: str) -> str:
    """`max_seq_length` -> `max-seq-length`: how option names are written in config files."""
    return name.replace("_", "-")


class ConfigError(Exception):
    """One or more configuration problems; each line of the message is one problem."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class TemplateBudgetConfig(LightModel):
    """`[tool.curate.template-budget]`: what rendering an untrusted chat template may cost."""

    model_config = ConfigDict(extra="forbid", alias_generator=kebab, populate_by_name=True)

    row_seconds: float = Field(2.0, gt=0, description="CPU seconds one row may take to render (over: CT001).")
    row_chars: int = Field(4 * 1024 * 1024, gt=0, description="Characters one row may render to (over: CT001; never tokenized).")
    run_seconds: float = Field(300.0, gt=0, description="CPU seconds rendering may take in one run (over: exit 2).")
    run_chars: int = Field(4 * 1024**3, gt=0, description="Characters rendered in one run (over: exit 2).")
    max_template_bytes: int = Field(1024 * 1024, gt=0, description="Largest chat template accepted.")


class CurateConfig(LightModel):
    """The `[tool.curate]` table."""

    model_config = ConfigDict(extra="forbid", alias_generator=kebab, populate_by_name=True)

    select: list[str] | None = Field(None, description="Rule codes, prefixes or names to enable (default: all).")
    extend_select: list[str] = Field(default_factory=list, description="Added to `select`.")
    ignore: list[str] = Field(default_factory=list, description="Rule codes, prefixes or names to disable.")
    fail_on: FailOn = Field("error", description="Lowest severity that makes lint exit 1.")
    model: str | None = Field(None, description="Tokenizer path or hub name whose chat template to check.")
    eval: list[str] = Field(default_factory=list, description="Eval files to check for leakage.")
    max_seq_length: int | None = Field(None, gt=0, description="Token budget per row (CT003, train).")
    baseline: str | None = Field(None, description="Baseline file of waived findings.")
    max_row_bytes: int = Field(DEFAULT_MAX_ROW_BYTES, gt=0, description="Rows larger than this are not parsed (SC009).")
    template_budget: TemplateBudgetConfig = Field(default_factory=TemplateBudgetConfig, description="Render budget of the chat template (CT rules).")
    rules: dict[str, dict[str, Any]] = Field(default_factory=dict, description="Per-rule options by code or name.")
    exclude: list[str] | None = Field(None, description="Glob patterns skipped when walking a directory (replaces the defaults).")
    extend_exclude: list[str] = Field(default_factory=list, description="Glob patterns skipped when walking a directory, added to `exclude`.")
    columns: dict[str, str] = Field(default_factory=dict, description="Field name -> role or format key, e.g. question = \"user\".")
    train: dict[str, Any] = Field(default_factory=dict, description="`curate train` options (validated by the trainer).")


def find_config(start: Path) -> Path | None:
    """The nearest curate.toml, or pyproject.toml with [tool.curate], from `start` upwards."""
    try:
        folder = start.resolve()
        if folder.is_file() or not folder.exists():
            folder = folder.parent
    except (OSError, RuntimeError):  # a symlink loop or a name too long: the reader reports it
        folder = Path(os.path.abspath(start)).parent
    for candidate in (folder, *folder.parents):
        own = candidate / "curate.toml"
        if own.is_file():
            return own
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file() and "curate" in _read_toml(pyproject).get("tool", {}):
            return pyproject
    return None


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib  # only when a config file is read (not with --isolated, nor for `--help`)

    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: invalid TOML: {exc}"]) from None
    except RecursionError:
        raise ConfigError([f"{path}: invalid TOML: nested too deeply"]) from None


def table_of(path: Path) -> dict[str, Any]:
    """The curate table of a config file (top level of curate.toml, [tool.curate] of pyproject)."""
    document = _read_toml(path)
    if path.name == "pyproject.toml":
        return document.get("tool", {}).get("curate", {})
    return document


def suggest(word: str, choices: list[str] | set[str]) -> str:
    """' (did you mean `x`?)' or ''."""
    import difflib

    match = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean `{match[0]}`?)" if match else ""


def validation_problems(exc: ValidationError, where: str, fields: set[str]) -> list[str]:
    """Readable one-line problems from a pydantic error, with suggestions for unknown keys."""
    problems = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            problems.append(f"{where}: unknown key `{location}`{suggest(str(error['loc'][-1]), fields)}")
        else:
            problems.append(f"{where}: `{location}`: {error['msg']}")
    return problems


def model_fields(model: type[BaseModel] | type[LightModel]) -> set[str]:
    return {alias for name, field in model.model_fields.items() for alias in (name, field.alias or name)}


def validated(model: type[LightModel], table: dict[str, Any], where: str) -> Any:
    """`model` validated from `table`, or ConfigError with one readable line per problem
    (pydantic is imported only here, when there is something to validate)."""
    if not table:
        return model.model_validate(table)
    from pydantic import ValidationError

    try:
        return model.model_validate(table)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, where, model_fields(model))) from None


def parse_config(table: dict[str, Any], where: str) -> CurateConfig:
    return validated(CurateConfig, table, where)


def load_config(path: Path | None, table: dict[str, Any] | None = None) -> tuple[CurateConfig, Path | None]:
    """Parse a config file (or defaults when `path` is None); `table`: its `table_of`, when the caller already read it."""
    if path is None:
        return CurateConfig(), None
    if table is None and not path.is_file():
        raise ConfigError([f"{path}: config file not found"])
    label = f"{path} [tool.curate]" if path.name == "pyproject.toml" else str(path)
    return parse_config(table_of(path) if table is None else table, label), path


def resolve_relative(value: str, base: Path, *, may_be_hub_name: bool = False) -> str:
    """Config paths are relative to the config file's folder. A model may also be a hub
    name (`org/name`): it stays as written unless such a folder exists beside the config."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    candidate = base / path
    if may_be_hub_name and not candidate.exists() and not value.startswith("."):
        return value
    return str(candidate)
