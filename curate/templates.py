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
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check_name(name: Any) -> None:
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat templates cannot store underscore attributes on a namespace ({name!r})")

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, jinja2.ext.loopcontrols])
    environment.filters["tojson"] = tojson
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


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
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
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


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
    ):
        self.source = source
        self.origin = origin
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
    def load(cls, name_or_path: str | os.PathLike[str], template_name: str | None = None) -> ChatTemplate:
        """Load from a local model folder or a hub name already in the local cache.

        `template_name` picks one of several named templates (default: `default`)."""
        folder = resolve_model_folder(name_or_path)
        config_path = folder / TOKENIZER_CONFIG
        config = _read_json(config_path, "tokenizer config") if config_path.is_file() else {}
        source, origin = _pick_template(folder, config, template_name, str(name_or_path))
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
        )

    # ----------------------------------------------------------------- properties

    @cached_property
    def has_generation_markers(self) -> bool:
        """The template wraps assistant text in `{% generation %}`, so masks come from spans."""
        return bool(GENERATION_MARKER.search(self.source))

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
        """The text `apply_chat_template(messages, tokenize=False)` gives; RenderError if the template raises."""
        try:
            return self._compiled.render(self._variables(messages, add_generation_prompt, tools))
        except Exception as exc:  # anything the template raises is about this conversation
            raise _render_error(exc) from None

    def render_with_spans(
        self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False, tools: list | None = None
    ) -> tuple[str, list[Span]]:
        """The rendered text and the character spans the template marked with `{% generation %}`
        (empty when it has no markers): what transformers' assistant masks are built from."""
        blocks: list[str] = []
        spans: list[Span] = []
        try:
            with _tracking_generation(blocks, spans):
                for block in self._compiled.generate(self._variables(messages, add_generation_prompt, tools)):
                    blocks.append(block)
        except Exception as exc:
            raise _render_error(exc) from None
        return "".join(blocks), spans

    # ----------------------------------------------------------------- tokens

    def encode_batch(self, texts: Sequence[str]) -> list[Encoding]:
        """Encodings of rendered texts (no extra special tokens: the template wrote them)."""
        return self.tokenizer.encode_batch(list(texts), add_special_tokens=False)

    def count_tokens(self, texts: Sequence[str]) -> list[int]:
        return [len(encoding.ids) for encoding in self.encode_batch(texts)]

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


def _pick_template(folder: Path, config: Mapping[str, Any], template_name: str | None, shown: str) -> tuple[str, str]:
    """(template source, where it came from), by transformers' precedence: template files
    override `tokenizer_config.json`; a named set picks `template_name` or `default`."""
    templates: dict[str, tuple[str, str]] = {}
    default_file = folder / CHAT_TEMPLATE_FILE
    if default_file.is_file():
        templates["default"] = (_read_text(default_file), str(default_file))
    extra_dir = folder / CHAT_TEMPLATE_DIR
    if extra_dir.is_dir():
        for path in sorted(extra_dir.glob("*.jinja")):
            templates[path.name.removesuffix(".jinja")] = (_read_text(path), str(path))
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


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"cannot read {path}: {exc}") from None
