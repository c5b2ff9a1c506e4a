"""Load a tokenizer's chat template the way transformers does, without importing transformers.

What a chat model's folder (or its Hugging Face cache snapshot) says about chat:
- the template: `chat_template.jinja` and `additional_chat_templates/*.jinja` (transformers 5
  prefers these files), else `tokenizer_config.json`'s `chat_template` (a string, or a list of
  `{"name", "template"}` tables), else a processor's legacy `chat_template.json`;
- the named special tokens (`bos_token`, `eos_token`, ...) the template sees as variables, and
  the added tokens the tokenizer treats as control tokens;
- `model_max_length`.

Templates are rendered in jinja2's ImmutableSandboxedEnvironment with the globals, filters and
extensions of transformers' `chat_template_utils` (`raise_exception`, `strftime_now`, the
`tojson` filter with its options, `loopcontrols`, `{% generation %}` span tracking), so a row
renders here exactly as `apply_chat_template(tokenize=False)` renders it. Each template is
compiled once per process; tokens are counted with the `tokenizers` library in batches.

A hub name is looked up only in the local Hugging Face cache: linting never touches the network.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2
    from tokenizers import Encoding, Tokenizer

TOKENIZER_CONFIG = "tokenizer_config.json"
TOKENIZER_FILE = "tokenizer.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"
CHAT_TEMPLATE_DIR = "additional_chat_templates"
LEGACY_CHAT_TEMPLATE_JSON = "chat_template.json"

#: The named special tokens transformers passes to every template (`special_tokens_map`).
NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
#: transformers' "no limit" `model_max_length` (VERY_LARGE_INTEGER is 1e30).
UNBOUNDED_LENGTH = int(1e29)
#: What CT003 assumes when the tokenizer gives no usable `model_max_length`, and its cap.
DEFAULT_MAX_LENGTH = 4096

#: Pre-tokenizers that only split text (never add to it), so byte-level BPE keeps tokens <= bytes.
TEXT_PRESERVING_PRE_TOKENIZERS = frozenset({"ByteLevel", "Split", "Digits", "Punctuation", "Whitespace", "WhitespaceSplit"})
#: Normalizers that leave ASCII text unchanged.
UNICODE_NORMALIZERS = frozenset({"NFC", "NFD", "NFKC", "NFKD"})

GENERATION_MARKER = re.compile(r"\{%-?\s*generation\s*-?%\}")


def has_generation_markers(source: str | None) -> bool:
    """A chat template source wraps assistant text in `{% generation %}` (masks come from spans)."""
    return bool(source) and bool(GENERATION_MARKER.search(source))
#: Message keys a template reads for reasoning; transformers copies the first one found to
#: `thinking` and `reasoning_content` so either spelling reaches the template.
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
#: A hub repo id: `name` or `owner/name`.
HUB_NAME = re.compile(r"^[\w.-]+(/[\w.-]+)?$")

Span = tuple[int, int]

#: Probe turns whose contents are words no template writes, so the text between them in a
#: rendering is the template's own: its turn markers. Two probes: templates that refuse a
#: system turn still render the second.
PROBE_CONTENT = {"system": "qzxprobesystemqzx", "user": "qzxprobeuserqzx", "assistant": "qzxprobeassistantqzx"}
PROBE_CONVERSATIONS = (
    ("system", "user", "assistant", "user", "assistant"),
    ("user", "assistant", "user", "assistant"),
)
#: A turn marker has one of these (`[INST]`, `<<SYS>>`, `### Instruction:`, `USER:`); role names
#: and prose the template writes around turns (`user`, a default system prompt) are not markers.
MARKER_CHARACTER = re.compile(r"[\[\]<>|#:/=*{}]")
MAX_MARKER_CHARS = 40


class TemplateError(Exception):
    """A chat template that cannot be loaded or compiled; the message is one line that says what to do."""


class RenderError(TemplateError):
    """The template raised while rendering one conversation (its own `raise_exception`, a
    sandbox violation, a type error). `line` is the template line, when jinja knows it."""

    def __init__(self, message: str, line: int | None = None, kind: str = "error"):
        super().__init__(message)
        self.line = line
        self.kind = kind


# --------------------------------------------------------------------------- render budget


@dataclass(frozen=True)
class RenderBudget:
    """What rendering one chat template may cost (`[tool.curate.template-budget]`).

    A template from a hub tokenizer is code from a stranger: rows get a CPU-time and an
    output-size cap, the whole run another, and the template source a size cap."""

    row_seconds: float = 2.0
    row_chars: int = 4 * 1024 * 1024
    run_seconds: float = 300.0
    run_chars: int = 4 * 1024**3
    template_bytes: int = 1024 * 1024
    #: A template that blows its budget on this many rows before rendering any within it is
    #: broken for the whole run (one error line instead of a finding per row).
    failures_before_giving_up: int = 3


class BudgetExceeded(Exception):
    """Raised inside the sandbox when one render goes over its budget."""


class TemplateBudgetExhausted(TemplateError):
    """The template cannot render this run within its budget (every row tried, or the run's total)."""


#: How many sandbox events (calls, attribute reads, loop iterations, output blocks) pass
#: between two reads of the CPU clock.
_CLOCK_EVERY = 64
#: Integers beyond this many bits are refused as operands of `*` and `**` (CPU-bound bignums).
_MAX_INT_BITS = 1 << 16
_DIGIT_RUN = re.compile(r"\d{6,}")


class _Meter:
    """The budget of the render in progress: a CPU deadline and a character allowance."""

    __slots__ = ("deadline", "seconds", "chars", "used", "ticks")

    def __init__(self, seconds: float, chars: int):
        self.seconds = seconds
        self.deadline = time.thread_time() + seconds
        self.chars = chars
        self.used = 0
        self.ticks = _CLOCK_EVERY

    def tick(self) -> None:
        self.ticks -= 1
        if self.ticks <= 0:
            self.ticks = _CLOCK_EVERY
            if time.thread_time() > self.deadline:
                raise BudgetExceeded(f"rendering took over {self.seconds:g} s of CPU time (template-budget.row-seconds)")

    def too_large(self, what: str, size: int) -> BudgetExceeded:
        return BudgetExceeded(f"{what} of {size:,} characters is over the {self.chars:,}-character cap (template-budget.row-chars)")

    def output(self, size: int) -> None:
        self.used += size
        if self.used > self.chars:
            raise self.too_large("output", self.used)
        self.tick()

    def value(self, value: Any, what: str = "a value") -> Any:
        """Refuse a string or container larger than the row's output cap."""
        if isinstance(value, (str, bytes, list, tuple, dict)) and len(value) > self.chars:
            raise self.too_large(what, len(value))
        return value

    def size(self, size: int, what: str) -> None:
        if size > self.chars:
            raise self.too_large(what, size)

    def arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        for value in (*args, *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) > self.chars:
                raise BudgetExceeded(f"argument {value:,} is over the {self.chars:,}-character cap (template-budget.row-chars)")

    def format_spec(self, text: Any) -> None:
        """A `%` or `.format` string whose widths would pad past the cap (`%999999999d`)."""
        if isinstance(text, str):
            for run in _DIGIT_RUN.findall(text):
                if int(run) > self.chars:
                    raise BudgetExceeded(f"format width {int(run):,} is over the {self.chars:,}-character cap (template-budget.row-chars)")

    def replacement(self, text: Any, old: Any, new: Any) -> None:
        if isinstance(text, str) and isinstance(old, str) and isinstance(new, str):
            hits = text.count(old) if old else len(text) + 1
            self.size(len(text) + hits * len(new), "a replace() result")


_METER: ContextVar[_Meter | None] = ContextVar("curate_render_meter", default=None)


def _check_call(function: Any, args: Sequence[Any], kwargs: Mapping[str, Any], meter: _Meter) -> None:
    """Budget checks before a call the sandbox lets through: size-like integers, and the str
    methods whose result can dwarf their inputs."""
    meter.tick()
    meter.arguments(args, kwargs)
    bound = getattr(getattr(function, "__wrapped__", function), "__self__", None)
    if isinstance(bound, str):
        name = getattr(function, "__name__", "")
        if name in ("format", "format_map"):
            meter.format_spec(bound)
        elif name == "replace" and len(args) >= 2:
            meter.replacement(bound, args[0], args[1])
        elif name == "join" and args and isinstance(args[0], (list, tuple)):
            meter.size(len(bound) * len(args[0]) + sum(len(item) for item in args[0] if isinstance(item, str)), "a join() result")
        elif name == "expandtabs":
            meter.size(bound.count("\t") * int(args[0] if args else kwargs.get("tabsize", 8)) + len(bound), "an expandtabs() result")


def _budgeted_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """A jinja filter that checks the render budget before and after it runs."""
    import functools

    skip = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0

    @functools.wraps(function)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        meter = _METER.get()
        if meter is None:  # jinja folds constant filter calls while compiling: not outside a budget
            raise BudgetExceeded("filters run only while rendering")
        meter.tick()
        meter.arguments(args[skip + 1 :], kwargs)
        value = args[skip] if len(args) > skip else None
        rest = args[skip + 1 :]
        if name == "indent" and isinstance(value, str):
            width = rest[0] if rest else kwargs.get("width", 4)
            meter.size(len(value) + (value.count("\n") + 1) * (width if isinstance(width, int) else len(str(width))), "an indent() result")
        elif name == "replace" and len(rest) >= 2:
            meter.replacement(str(value), rest[0], rest[1])
        elif name == "format":
            meter.format_spec(value)
        elif name == "join" and value is not None and not isinstance(value, (str, jinja2_undefined())):
            items = list(value)
            separator = rest[0] if rest else kwargs.get("d", "")
            meter.size(len(items) * len(str(separator)) + sum(len(item) for item in items if isinstance(item, str)), "a join result")
            args = (*args[:skip], items, *rest)
        result = function(*args, **kwargs)
        meter.value(result, f"the {name} filter's result")
        return result

    return guarded


def jinja2_undefined() -> type:
    import jinja2

    return jinja2.Undefined


def _loop_guard(iterable: Any) -> Any:
    """What every `{% for %}` iterates over: the same items, with the budget checked per item."""
    return _GuardedIterable(iterable)


class _GuardedIterable:
    __slots__ = ("_iterable",)

    def __init__(self, iterable: Any):
        self._iterable = iterable

    def __len__(self) -> int:
        return len(self._iterable)

    def __iter__(self) -> Iterator[Any]:
        meter = _METER.get()
        for item in self._iterable:
            if meter is not None:
                meter.tick()
            yield item


#: `tojson`'s indent and separators are capped: json.dumps cannot be interrupted.
MAX_JSON_INDENT = 64


def _check_binop(operator: str, left: Any, right: Any, meter: _Meter) -> None:
    if operator == "*":
        for sequence, count in ((left, right), (right, left)):
            if isinstance(count, int) and isinstance(sequence, (str, bytes, list, tuple)):
                meter.size(len(sequence) * max(count, 0), "a repeated sequence (*)")
        if isinstance(left, int) and isinstance(right, int) and max(left.bit_length(), right.bit_length()) > _MAX_INT_BITS:
            raise BudgetExceeded("an integer product too large to compute")
    elif operator == "**":
        if isinstance(left, int) and isinstance(right, int) and right > 0 and max(left.bit_length(), 1) * right > _MAX_INT_BITS:
            raise BudgetExceeded("a power too large to compute")
    elif operator == "%":
        meter.format_spec(left)
    elif operator == "+" and isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
        meter.size(len(left) + len(right), "a sum (+)")


# --------------------------------------------------------------------------- jinja environment


_TRACKING: ContextVar[tuple[list[str], list[Span]] | None] = ContextVar("curate_generation_tracker", default=None)


@lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    """The one sandboxed environment every template compiles in (transformers' settings)."""
    import jinja2
    import jinja2.ext
    import jinja2.nodes
    import jinja2.utils
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class AssistantTracker(jinja2.ext.Extension):
        """`{% generation %}...{% endgeneration %}`: records where assistant text starts and ends."""

        tags = {"generation"}

        def parse(self, parser: Any) -> jinja2.nodes.Node:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_generation_support"), [], [], body).set_lineno(lineno)

        @jinja2.pass_eval_context
        def _generation_support(self, context: Any, caller: Any) -> str:
            text = caller()
            tracking = _TRACKING.get()
            if tracking is not None:
                blocks, spans = tracking
                start = len("".join(blocks))
                spans.append((start, start + len(text)))
            return text

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False) -> str:
        # transformers' override: jinja's own tojson escapes HTML characters.
        width = indent if isinstance(indent, int) else len(str(indent or ""))
        if width > MAX_JSON_INDENT or any(len(str(part)) > MAX_JSON_INDENT for part in separators or ()):
            raise BudgetExceeded(f"tojson indent or separators over {MAX_JSON_INDENT} characters")
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(format: str) -> str:
        return datetime.now().strftime(format)

    class TemplateDict:
        """`dict(...)` without the class itself, so templates cannot reach its attributes."""

        def __call__(self, *args: Any, **kwargs: Any) -> dict:
            return dict(*args, **kwargs)

        def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
            return dict.fromkeys(*args, **kwargs)

    class TemplateNamespace(jinja2.utils.Namespace):
        """A namespace that refuses underscore attributes (a path to Python internals)."""

        def __init__(*args: Any, **kwargs: Any) -> None:
            self, args = args[0], args[1:]
            attrs = dict(*args, **kwargs)
            for name in attrs:
                TemplateNamespace._check_name(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name: str, value: Any) -> None:
            TemplateNamespace._check_name(name)
            meter = _METER.get()
            if meter is not None:
                meter.tick()
                meter.value(value, f"namespace value `{name}`")
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot store underscore attributes on a namespace ({name!r})")

    class BudgetedSandbox(ImmutableSandboxedEnvironment):
        """transformers' sandbox, metered: every call, attribute read, loop iteration, string
        concatenation and risky operator checks the render budget of the row being rendered
        (`_METER`), and operations whose result would dwarf the budget are refused before they
        run, since one C-level operation cannot be interrupted."""

        intercepted_binops = frozenset({"*", "**", "%", "+"})

        def _parse(self, source: str, name: str | None, filename: str | None) -> jinja2.nodes.Template:
            tree = super()._parse(source, name, filename)
            for loop in list(tree.find_all(jinja2.nodes.For)):
                loop.iter = jinja2.nodes.Call(jinja2.nodes.EnvironmentAttribute("loop_guard"), [loop.iter], [], None, None, lineno=loop.lineno)
            for concat in list(tree.find_all(jinja2.nodes.Concat)):
                concat.nodes = [jinja2.nodes.Call(jinja2.nodes.EnvironmentAttribute("concat_guard"), list(concat.nodes), [], None, None, lineno=concat.lineno)]
            return tree

        loop_guard = staticmethod(_loop_guard)

        @staticmethod
        def concat_guard(*parts: Any) -> str:
            texts = [str(part) for part in parts]
            meter = _METER.get()
            if meter is not None:
                meter.size(sum(map(len, texts)), "a concatenation (~)")
            return "".join(texts)

        def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (jinja's signature)
            meter = _METER.get()
            if meter is not None:
                _check_call(__obj, args, kwargs, meter)
            result = ImmutableSandboxedEnvironment.call(__self, __context, __obj, *args, **kwargs)
            if meter is not None:
                meter.value(result, "a call's result")
            return result

        def getattr(self, obj: Any, attribute: str) -> Any:
            meter = _METER.get()
            if meter is not None:
                meter.tick()
            return super().getattr(obj, attribute)

        def getitem(self, obj: Any, argument: Any) -> Any:
            meter = _METER.get()
            if meter is not None:
                meter.tick()
            return super().getitem(obj, argument)

        def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
            meter = _METER.get()
            if meter is not None:
                meter.tick()
                _check_binop(operator, left, right, meter)
            return super().call_binop(context, operator, left, right)

    def lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # noqa: A002 (jinja's names)
        meter = _METER.get()
        if meter is not None:
            meter.size(int(n) * int(max) * 12, "lipsum() text")
        return jinja2.utils.generate_lorem_ipsum(n, html, min, max)

    # optimized=False: jinja's optimizer folds constant expressions (filters included) while
    # compiling, outside any budget; `{{ 'x'|center(10**9) }}` would run at load time.
    environment = BudgetedSandbox(trim_blocks=True, lstrip_blocks=True, optimized=False, extensions=[AssistantTracker, jinja2.ext.loopcontrols])
    environment.filters["tojson"] = tojson
    environment.filters = {name: _budgeted_filter(name, function) for name, function in environment.filters.items()}
    environment.globals["lipsum"] = lipsum
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = strftime_now
    environment.globals["dict"] = TemplateDict()
    environment.globals["namespace"] = TemplateNamespace
    return environment


@lru_cache(maxsize=64)
def compile_template(source: str) -> jinja2.Template:
    """Compile a template once per process; a syntax error becomes a TemplateError naming its line."""
    import jinja2

    try:
        return _environment().from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"syntax error at template line {exc.lineno}: {exc.message}") from None


@contextmanager
def _tracking_generation(blocks: list[str], spans: list[Span]) -> Iterator[None]:
    token = _TRACKING.set((blocks, spans))
    try:
        yield
    finally:
        _TRACKING.reset(token)


def _template_line(exc: BaseException) -> int | None:
    """The template line a render error came from: jinja rewrites tracebacks so that frames
    of template code carry the file name `<template>` and the template's line numbers."""
    line = getattr(exc, "lineno", None)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<template>":
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _render_error(exc: Exception) -> RenderError:
    import jinja2

    if isinstance(exc, jinja2.exceptions.SecurityError):
        kind, text = "sandbox", f"sandbox violation: {exc}"
    elif type(exc) is jinja2.exceptions.TemplateError:  # raise_exception(...): the template's own words
        kind, text = "raised", str(exc)
    else:
        kind, text = "error", f"{type(exc).__name__}: {exc}"
    return RenderError(" ".join(text.split()), _template_line(exc), kind)


# --------------------------------------------------------------------------- template data


def template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages as transformers hands them to a template: keys whose value is None dropped
    (OpenAI's `content: null`), reasoning copied to both names templates read."""
    prepared = []
    for message in messages:
        clean = {key: value for key, value in message.items() if value is not None}
        reasoning = next((clean[key] for key in REASONING_FIELDS if key in clean), None)
        if reasoning is not None:
            clean = {"thinking": reasoning, **clean, "reasoning_content": reasoning}
        prepared.append(clean)
    return prepared


def _token_text(value: Any) -> str | None:
    """A special token from a config: a string, or an AddedToken table with `content`."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return value["content"] or None
    return None


@dataclass(frozen=True)
class SpecialTokens:
    """The tokenizer's tokens as a chat template and a linter care about them.

    `named`: `bos_token`, `eos_token`, ... -> text; passed to the template as variables.
    `control`: every token the tokenizer reads as a control token (special tokens, plus added
    tokens the template itself writes), longest first; user text containing one of them is
    tokenized as that control token, not as text.
    """

    named: dict[str, str]
    control: tuple[str, ...]


#: Tokenizer JSON files larger than this are refused unread (real ones are a few MB).
MAX_CONFIG_BYTES = 64 * 1024 * 1024


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise TemplateError(f"{path}: {what} is over {MAX_CONFIG_BYTES // 2**20} MB; refusing to read it")
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise TemplateError(f"{path}:{exc.lineno}: {what} is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise TemplateError(f"{path}: {what} must be a JSON object")
    return value


def _template_literals(source: str) -> str:
    """The literal text of a template (raw text and string constants), NUL-joined so a search
    cannot match across two literals: transformers' way of telling which added tokens the
    template writes itself."""
    import jinja2.nodes

    tree = _environment().parse(source)
    literals = {node.data for node in tree.find_all(jinja2.nodes.TemplateData)}
    literals |= {node.value for node in tree.find_all(jinja2.nodes.Const) if isinstance(node.value, str)}
    return "\0".join(literals)


# --------------------------------------------------------------------------- locating a model


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved with huggingface_hub's environment variables."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HUGGINGFACE_HUB_CACHE"):
        return Path(os.environ["HUGGINGFACE_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from curate.io import user_cache_home

    return user_cache_home() / "huggingface" / "hub"


def cached_snapshot(repo_id: str, revision: str = "main", cache: Path | None = None) -> Path | None:
    """The snapshot folder of a hub repo already in the local cache, or None. Never downloads."""
    repo = (cache or hub_cache_dir()) / f"models--{repo_id.replace('/', '--')}"
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    ref = repo / "refs" / revision
    if ref.is_file():
        commit = ref.read_text(encoding="utf-8").strip()
        if (snapshots / commit).is_dir():
            return snapshots / commit
    if (snapshots / revision).is_dir():  # a commit hash given as the revision
        return snapshots / revision
    candidates = sorted((p for p in snapshots.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    return candidates[0] if candidates else None


def resolve_model_folder(name_or_path: str | os.PathLike[str]) -> Path:
    """A local folder for a model: the path itself, or its snapshot in the Hugging Face cache."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise TemplateError(f"model `{text}` is a file; pass the folder that holds tokenizer_config.json")
    if not HUB_NAME.match(text) or text.startswith("."):
        raise TemplateError(f"model folder `{text}` does not exist")
    snapshot = cached_snapshot(text)
    if snapshot is None:
        raise TemplateError(
            f"model `{text}` is not a local folder and not in the Hugging Face cache ({hub_cache_dir()}); "
            f"download it first with `huggingface-cli download {text}` or pass a local path"
        )
    return snapshot


# --------------------------------------------------------------------------- the template


class ChatTemplate:
    """A chat template with its tokenizer's special tokens, ready to render many conversations."""

    def __init__(
        self,
        source: str,
        *,
        origin: str = "<template>",
        named_tokens: Mapping[str, str] | None = None,
        extra_special_tokens: Sequence[str] = (),
        added_tokens: Mapping[str, bool] | None = None,
        model_max_length: int | None = None,
        tokenizer_file: Path | None = None,
        budget: RenderBudget | None = None,
    ):
        self.source = source
        self.origin = origin
        self.budget = budget or RenderBudget()
        if len(source) > self.budget.template_bytes:
            raise TemplateError(
                f"{origin}: chat template is {len(source):,} characters, over the {self.budget.template_bytes:,} "
                "limit (template-budget.max-template-bytes); real chat templates are a few KB"
            )
        self._spent_seconds = 0.0
        self._spent_chars = 0
        self._rendered = 0
        self._over_budget = 0
        self._exhausted: str | None = None
        try:
            self._compiled = compile_template(source)
        except TemplateError as exc:
            raise TemplateError(f"{origin}: chat template {exc}") from None
        self._named = {key: value for key, value in (named_tokens or {}).items() if value}
        self._extra_special = tuple(extra_special_tokens)
        self._added_from_config = dict(added_tokens or {})
        self.model_max_length = model_max_length
        self.tokenizer_file = tokenizer_file

    # ----------------------------------------------------------------- loading

    @classmethod
    def load(cls, name_or_path: str | os.PathLike[str], template_name: str | None = None, budget: RenderBudget | None = None) -> ChatTemplate:
        """Load from a local model folder or a hub name already in the local cache.

        `template_name` picks one of several named templates (default: `default`)."""
        folder = resolve_model_folder(name_or_path)
        config_path = folder / TOKENIZER_CONFIG
        config = _read_json(config_path, "tokenizer config") if config_path.is_file() else {}
        budget = budget or RenderBudget()
        source, origin = _pick_template(folder, config, template_name, str(name_or_path), budget.template_bytes)
        special_map_path = folder / SPECIAL_TOKENS_MAP
        special_map = _read_json(special_map_path, "special tokens map") if special_map_path.is_file() else {}
        named = {}
        for key in NAMED_SPECIAL_TOKENS:
            value = _token_text(config.get(key)) if key in config else _token_text(special_map.get(key))
            if value:
                named[key] = value
        extra: list[str] = []
        for key in ("additional_special_tokens", "extra_special_tokens"):
            for table in (config, special_map):
                values = table.get(key)
                if isinstance(values, list):
                    extra += [text for text in map(_token_text, values) if text]
        decoder = config.get("added_tokens_decoder")
        added = {}
        if isinstance(decoder, Mapping):
            for entry in decoder.values():
                text = _token_text(entry)
                if text:
                    added[text] = bool(entry.get("special", False)) if isinstance(entry, Mapping) else False
        length = config.get("model_max_length")
        tokenizer_file = folder / TOKENIZER_FILE
        return cls(
            source,
            origin=origin,
            named_tokens=named,
            extra_special_tokens=extra,
            added_tokens=added,
            model_max_length=int(length) if isinstance(length, (int, float)) and 0 < length < UNBOUNDED_LENGTH else None,
            tokenizer_file=tokenizer_file if tokenizer_file.is_file() else None,
            budget=budget,
        )

    # ----------------------------------------------------------------- properties

    @cached_property
    def has_generation_markers(self) -> bool:
        """The template wraps assistant text in `{% generation %}`, so masks come from spans."""
        return has_generation_markers(self.source)

    @property
    def max_length(self) -> int:
        """The tokenizer's `model_max_length`, capped at 4096 (and 4096 when it gives none)."""
        return min(self.model_max_length or DEFAULT_MAX_LENGTH, DEFAULT_MAX_LENGTH)

    @cached_property
    def tokenizer(self) -> Tokenizer:
        """The `tokenizers` tokenizer, with any truncation or padding saved in the file turned
        off (transformers turns them off too when asked for untruncated ids)."""
        if self.tokenizer_file is None:
            raise TemplateError(f"{self.origin}: no {TOKENIZER_FILE} next to the template, so tokens cannot be counted")
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(str(self.tokenizer_file))
        except Exception as exc:  # the Rust side raises plain Exception for a malformed file
            raise TemplateError(f"{self.tokenizer_file}: cannot load the tokenizer ({' '.join(str(exc).split())})") from None
        tokenizer.no_truncation()
        tokenizer.no_padding()
        return tokenizer

    @cached_property
    def special_tokens(self) -> SpecialTokens:
        added = dict(self._added_from_config)
        if self.tokenizer_file is not None:
            try:
                added.update((token.content, token.special) for token in self.tokenizer.get_added_tokens_decoder().values())
            except TemplateError:
                pass
        literals = _template_literals(self.source)
        control = set(self._named.values()) | set(self._extra_special)
        control |= {text for text, special in added.items() if special or (text in literals and not text.isspace())}
        control = {text for text in control if text and not text.isspace()}
        return SpecialTokens(named=dict(self._named), control=tuple(sorted(control, key=lambda t: (-len(t), t))))

    @cached_property
    def turn_markers(self) -> tuple[str, ...]:
        """The literal text this template writes around turns (`[INST]`, `[/INST]`, `<<SYS>>`,
        `### Instruction:`, `USER:`), found by rendering probe conversations and taking what lies
        between their contents; the tokenizer's control tokens are left out (they are
        `special_tokens.control`). Longest first. Content holding one of them renders a turn
        boundary that is not there, whatever the tokenizer registers."""
        sentinel = re.compile("|".join(PROBE_CONTENT.values()))
        control = self.special_tokens.control
        literals = _template_literals(self.source)
        markers: set[str] = set()
        for roles in PROBE_CONVERSATIONS:
            messages = [{"role": role, "content": PROBE_CONTENT[role]} for role in roles]
            try:
                text = self.render(messages, add_generation_prompt=True)
            except RenderError:
                continue
            for segment in sentinel.split(text):
                for token in control:
                    segment = segment.replace(token, " ")
                markers |= {piece for piece in _marker_pieces(segment) if piece in literals}
        return tuple(sorted(markers, key=lambda marker: (-len(marker), marker)))

    # ----------------------------------------------------------------- rendering

    def _variables(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool, tools: list | None) -> dict[str, Any]:
        return {
            "messages": template_messages(messages),
            "tools": tools,
            "documents": None,
            "add_generation_prompt": add_generation_prompt,
            **self._named,
        }

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False, tools: list | None = None) -> str:
        """The text `apply_chat_template(messages, tokenize=False)` gives; RenderError if the template
        raises or goes over its budget, TemplateBudgetExhausted when it cannot render this run."""
        blocks: list[str] = []
        self._generate(self._variables(messages, add_generation_prompt, tools), blocks)
        return "".join(blocks)

    def render_with_spans(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False, tools: list | None = None
    ) -> tuple[str, list[Span]]:
        """The rendered text and the character spans the template marked with `{% generation %}`
        (empty when it has no markers): what transformers' assistant masks are built from."""
        blocks: list[str] = []
        spans: list[Span] = []
        with _tracking_generation(blocks, spans):
            self._generate(self._variables(messages, add_generation_prompt, tools), blocks)
        return "".join(blocks), spans

    def _generate(self, variables: dict[str, Any], blocks: list[str]) -> None:
        """Render into `blocks` under the row's budget (what is left of the run's, if less)."""
        budget = self.budget
        if self._exhausted is None and (self._spent_seconds >= budget.run_seconds or self._spent_chars >= budget.run_chars):
            self._exhausted = (
                f"{self.origin}: rendering used the run's budget ({budget.run_seconds:g} s of CPU, "
                f"{budget.run_chars:,} characters; template-budget.run-seconds / run-chars) after {self._rendered:,} rows"
            )
        if self._exhausted is not None:
            raise TemplateBudgetExhausted(self._exhausted)
        meter = _Meter(min(budget.row_seconds, budget.run_seconds - self._spent_seconds), min(budget.row_chars, budget.run_chars - self._spent_chars))
        token = _METER.set(meter)
        started = time.thread_time()
        try:
            for block in self._compiled.generate(variables):
                meter.output(len(block))
                blocks.append(block)
        except BudgetExceeded as exc:
            self._over_budget += 1
            if not self._rendered and self._over_budget >= budget.failures_before_giving_up:
                self._exhausted = f"{self.origin}: the chat template goes over its render budget on every row tried ({exc})"
                raise TemplateBudgetExhausted(self._exhausted) from None
            raise RenderError(f"render budget exceeded: {exc}", _template_line(exc), "budget") from None
        except Exception as exc:  # anything else the template raises is about this conversation
            raise _render_error(exc) from None
        finally:
            _METER.reset(token)
            self._spent_seconds += time.thread_time() - started
            self._spent_chars += meter.used
        self._rendered += 1

    # ----------------------------------------------------------------- tokens

    def encode_batch(self, texts: Sequence[str]) -> list[Encoding]:
        """Encodings of rendered texts (no extra special tokens: the template wrote them)."""
        return self.tokenizer.encode_batch(list(texts), add_special_tokens=False)

    def token_upper_bound(self, text: str) -> int | None:
        """A number of tokens `text` cannot exceed, without tokenizing it, or None when the
        tokenizer gives no such guarantee. Lets length checks skip the rows that fit anyway."""
        bound = self._upper_bound
        return None if bound is None else bound(text)

    @cached_property
    def _upper_bound(self) -> Callable[[str], int | None] | None:
        """For byte-level BPE (GPT-2, Llama 3, Qwen, Mistral Nemo...): every token covers at least
        one UTF-8 byte of the normalized text, and nothing adds text (no prefix space), so
        tokens <= bytes. Unicode normalizers leave ASCII unchanged; other text is then unknown."""
        tokenizer = self.tokenizer
        if type(tokenizer.model).__name__ != "BPE":
            return None
        pre_tokenizers = _components(tokenizer.pre_tokenizer, "pretokenizers")
        byte_level = [part for part in pre_tokenizers if part.get("type") == "ByteLevel"]
        if not byte_level or any(part.get("add_prefix_space") for part in byte_level):
            return None
        if any(part.get("type") not in TEXT_PRESERVING_PRE_TOKENIZERS for part in pre_tokenizers):
            return None
        normalizers = {part.get("type") for part in _components(tokenizer.normalizer, "normalizers")}
        if not normalizers:
            return lambda text: len(text) if text.isascii() else len(text.encode("utf-8"))
        if normalizers <= UNICODE_NORMALIZERS:
            return lambda text: len(text) if text.isascii() else None
        return None


def _marker_pieces(segment: str) -> set[str]:
    """Candidate turn markers in text a template wrote between two turns: the pieces right next
    to the turns (the first and the last; a header such as `Today Date: ...` in between is no
    marker), split at whitespace with a letterless piece joined to the next (`###` +
    `Instruction:`), kept when they have a marker character and are at most MAX_MARKER_CHARS long."""
    pieces: list[str] = []
    pending = ""
    for word in segment.split():
        if not any(char.isalpha() for char in word):
            pending = f"{pending} {word}".strip()
            continue
        pieces.append(f"{pending} {word}".strip())
        pending = ""
    ends = {pieces[0], pieces[-1]} if pieces else set()
    return {piece for piece in ends if len(piece) <= MAX_MARKER_CHARS and MARKER_CHARACTER.search(piece)}


def _components(component: Any, children_key: str) -> list[dict[str, Any]]:
    """The parts of a tokenizers normalizer or pre-tokenizer, `Sequence`s flattened, as dicts."""
    if component is None:
        return []
    state = json.loads(component.__getstate__())
    stack, parts = [state], []
    while stack:
        part = stack.pop()
        if part is None:
            continue
        if part.get("type") == "Sequence":
            stack.extend(part.get(children_key) or [])
        else:
            parts.append(part)
    return parts


def _pick_template(folder: Path, config: Mapping[str, Any], template_name: str | None, shown: str, max_bytes: int) -> tuple[str, str]:
    """(template source, where it came from), by transformers' precedence: template files
    override `tokenizer_config.json`; a named set picks `template_name` or `default`."""
    templates: dict[str, tuple[str, str]] = {}
    default_file = folder / CHAT_TEMPLATE_FILE
    if default_file.is_file():
        templates["default"] = (_read_text(default_file, max_bytes), str(default_file))
    extra_dir = folder / CHAT_TEMPLATE_DIR
    if extra_dir.is_dir():
        for path in sorted(extra_dir.glob("*.jinja")):
            templates[path.name.removesuffix(".jinja")] = (_read_text(path, max_bytes), str(path))
    if not templates:
        templates = _config_templates(config, str(folder / TOKENIZER_CONFIG))
    if not templates and (folder / LEGACY_CHAT_TEMPLATE_JSON).is_file():
        legacy = _read_json(folder / LEGACY_CHAT_TEMPLATE_JSON, "chat template file")
        if isinstance(legacy.get("chat_template"), str):
            templates["default"] = (legacy["chat_template"], str(folder / LEGACY_CHAT_TEMPLATE_JSON))
    if not templates:
        if not (folder / TOKENIZER_CONFIG).is_file():
            raise TemplateError(f"model `{shown}` has no {TOKENIZER_CONFIG} and no {CHAT_TEMPLATE_FILE}; pass a tokenizer folder")
        raise TemplateError(
            f"model `{shown}` has no chat template ({TOKENIZER_CONFIG} has no `chat_template` and there is no "
            f"{CHAT_TEMPLATE_FILE}); use the tokenizer of a chat or instruct model"
        )
    wanted = template_name or "default"
    if wanted not in templates:
        names = ", ".join(sorted(templates))
        if template_name:
            raise TemplateError(f"model `{shown}` has no chat template named `{template_name}`; it has: {names}")
        raise TemplateError(f"model `{shown}` has several chat templates and none is named `default`; pick one of: {names}")
    source, origin = templates[wanted]
    return source, origin if wanted == "default" else f"{origin} ({wanted})"


def _config_templates(config: Mapping[str, Any], origin: str) -> dict[str, tuple[str, str]]:
    value = config.get("chat_template")
    if isinstance(value, str):
        return {"default": (value, origin)}
    if isinstance(value, list):
        templates = {}
        for entry in value:
            if not (isinstance(entry, Mapping) and isinstance(entry.get("name"), str) and isinstance(entry.get("template"), str)):
                raise TemplateError(f"{origin}: `chat_template` list entries must be tables with string `name` and `template`")
            templates[entry["name"]] = (entry["template"], origin)
        return templates
    if value is not None:
        raise TemplateError(f"{origin}: `chat_template` must be a string or a list of named templates, not {type(value).__name__}")
    return {}


def _read_text(path: Path, max_bytes: int) -> str:
    """A template file, refused unread when it is larger than the template size cap."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise TemplateError(
                f"{path}: chat template is {size:,} bytes, over the {max_bytes:,} limit "
                "(template-budget.max-template-bytes); real chat templates are a few KB"
            )
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read {path}: {exc}") from None
