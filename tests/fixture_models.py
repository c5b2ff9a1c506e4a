"""Tiny tokenizer folders with real-world chat template shapes, built locally for tests.

`build_fixture_model(name, tmp_path)` writes `tokenizer.json` (a byte-level BPE trained in
milliseconds on a fixed corpus, plus the fixture's special tokens), `tokenizer_config.json`
and, for some fixtures, `chat_template.jinja`. transformers' AutoTokenizer loads every folder,
so tests can compare our rendering and token counts with `apply_chat_template`.

SentencePiece-style fixtures (llama2, mistral-sp, phi3, zephyr) use a BPE with a Metaspace
pre-tokenizer (`▁` for spaces, prepended to the start of the text only), the shape of
transformers' Llama/Gemma tokenizer.json files: a word tokenizes differently at the start
of a text (`▁Open`) than after a newline or a special token (`O`, `pen`).

Fixtures: chatml, chatml-tools (renders tool calls), llama2 and alpaca (turn markers that are plain text), llama3 (raise_exception on bad roles and order, strftime_now, tools through
tojson), gemma (raises on a system turn), mistral ([INST] tokens), generation (ChatML with
`{% generation %}`), drops-system (renders only user and assistant turns), syntax-error, sandbox-escape, no-template, template-list,
jinja-file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password? Open Settings, choose Security, then Reset password.",
    "You are a helpful assistant. Answer briefly and clearly.",
    "What is the capital of France? The capital of France is Paris.",
    "Summarize the text in one sentence. Translate the sentence into French.",
    '{"answer": "yes", "score": 0.9} def add(a, b): return a + b',
]

CHATML_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

GENERATION = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

DROPS_SYSTEM = (
    "{% for message in messages %}"
    "{% if message['role'] in ['user', 'assistant'] %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

LLAMA3 = """{{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = strftime_now("%d %b %Y") %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] | trim %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
    {%- set loop_messages = messages %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none %}
    {{- "You can call these functions:\\n" }}
    {%- for tool in tools %}
        {{- tool | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in loop_messages %}
    {%- if message['role'] not in ['user', 'assistant', 'tool'] %}
        {{- raise_exception("Unsupported role '" + message['role'] + "': only system, user, assistant and tool") }}
    {%- endif %}
    {%- if loop.first and message['role'] != 'user' %}
        {{- raise_exception("The first message after the system prompt must come from the user") }}
    {%- endif %}
    {%- if message['role'] == 'tool' %}{% set role = 'ipython' %}{% else %}{% set role = message['role'] %}{% endif %}
    {{- '<|start_header_id|>' + role + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

GEMMA = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}"
)

MISTRAL = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
    "{% endfor %}"
)

#: Llama 2 chat: `[INST]` and `<<SYS>>` are plain text to its sentencepiece tokenizer (only <s>, </s>, <unk> are special).
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
)

#: Alpaca's prompt format as a chat template: `### Instruction:` and `### Response:` are plain text.
ALPACA = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}{% set loop_messages = messages[1:] %}"
    "{% else %}{{ 'Below is an instruction that describes a task. Write a response that appropriately completes the request.\\n\\n' }}"
    "{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if message['role'] == 'user' %}{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '### Response:\\n' + message['content'] + eos_token + '\\n\\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"
)

#: ChatML that renders tool calls the way Qwen 2.5 does (`<tool_call>` + the function as JSON).
CHATML_TOOLS = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}{% if message['content'] %}{{ message['content'] }}{% endif %}"
    "{% if message['tool_calls'] is defined %}{% for call in message['tool_calls'] %}"
    "{{ '<tool_call>\\n' }}{{ call['function'] | tojson }}{{ '\\n</tool_call>' }}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Phi-3-mini-4k-instruct's template: eos after the last turn unless a generation prompt follows.
PHI3 = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# Zephyr's template; its role tags are plain text, not special tokens.
ZEPHYR = (
    "{% for message in messages %}\n"
    "{% if message['role'] == 'user' %}\n{{ '<|user|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'system' %}\n{{ '<|system|>\n' + message['content'] + eos_token }}\n"
    "{% elif message['role'] == 'assistant' %}\n{{ '<|assistant|>\n'  + message['content'] + eos_token }}\n"
    "{% endif %}\n"
    "{% if loop.last and add_generation_prompt %}\n{{ '<|assistant|>' }}\n{% endif %}\n"
    "{% endfor %}"
)

SYNTAX_ERROR = "{% for message in messages %}\n{{ message['content'] }\n{% endfor %}"

SANDBOX_ESCAPE = "{{ ''.__class__.__mro__[1].__subclasses__() }}" + CHATML


SENTENCEPIECE_TOKENS = ("<unk>", "<s>", "</s>")
SENTENCEPIECE_NAMED = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
#: Characters the SentencePiece-style fixtures know (others become <unk>).
METASPACE_ALPHABET = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,?!:;'\"{}()[]<>_-+=/\\|#@*&%$\n▁")


@dataclass(frozen=True)
class Fixture:
    """What one fixture folder holds."""

    template: str | list[dict[str, str]] | None
    special_tokens: tuple[str, ...] = CHATML_TOKENS
    named: dict[str, str] = field(default_factory=lambda: {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"})
    #: Written to chat_template.jinja instead of the config (which then carries `config_template`).
    jinja_file: bool = False
    config_template: str | None = None
    model_max_length: int = 512
    #: "byte-level" (GPT-2/Llama-3/Qwen style) or "metaspace" (SentencePiece style).
    tokenizer: str = "byte-level"


FIXTURES: dict[str, Fixture] = {
    "chatml": Fixture(CHATML),
    "generation": Fixture(GENERATION),
    "chatml-tools": Fixture(CHATML_TOOLS),
    "drops-system": Fixture(DROPS_SYSTEM),
    "llama3": Fixture(
        LLAMA3,
        special_tokens=("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        named={"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
        model_max_length=8192,
    ),
    "gemma": Fixture(
        GEMMA,
        special_tokens=("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>"),
        named={"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"},
    ),
    "mistral": Fixture(
        MISTRAL,
        special_tokens=("<unk>", "<s>", "</s>", "[INST]", "[/INST]"),
        named={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
    ),
    "llama2": Fixture(LLAMA2, special_tokens=SENTENCEPIECE_TOKENS, named=SENTENCEPIECE_NAMED, tokenizer="metaspace"),
    "alpaca": Fixture(ALPACA, special_tokens=("<unk>", "<s>", "</s>"), named={"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}),
    "mistral-sp": Fixture(MISTRAL, special_tokens=(*SENTENCEPIECE_TOKENS, "[INST]", "[/INST]"), named=SENTENCEPIECE_NAMED, tokenizer="metaspace"),
    "phi3": Fixture(
        PHI3,
        special_tokens=(*SENTENCEPIECE_TOKENS, "<|endoftext|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"),
        named={"bos_token": "<s>", "eos_token": "<|endoftext|>", "unk_token": "<unk>"},
        tokenizer="metaspace",
    ),
    "zephyr": Fixture(ZEPHYR, special_tokens=SENTENCEPIECE_TOKENS, named=SENTENCEPIECE_NAMED, tokenizer="metaspace"),
    "syntax-error": Fixture(SYNTAX_ERROR),
    "sandbox-escape": Fixture(SANDBOX_ESCAPE),
    "no-template": Fixture(None),
    "template-list": Fixture([{"name": "default", "template": CHATML}, {"name": "tool_use", "template": DROPS_SYSTEM}]),
    # The file wins over the config's template, as in transformers 5.
    "jinja-file": Fixture(CHATML, jinja_file=True, config_template="{{ raise_exception('the config template must not be used') }}"),
}


@lru_cache(maxsize=None)
def tokenizer_json(special_tokens: tuple[str, ...]) -> str:
    """A byte-level BPE tokenizer (every string encodes) with these special tokens, as JSON."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 3, trainer=trainer)
    return tokenizer.to_str()


@lru_cache(maxsize=None)
def metaspace_tokenizer_json(special_tokens: tuple[str, ...]) -> str:
    """A SentencePiece-style BPE (Metaspace pre-tokenizer and decoder, `▁` prepended to the
    first piece of a text only) with these special tokens, as JSON."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(special_tokens), initial_alphabet=METASPACE_ALPHABET, show_progress=False)
    tokenizer.train_from_iterator(CORPUS * 3, trainer=trainer)
    return tokenizer.to_str()


def build_fixture_model(name: str, tmp_path: Path) -> Path:
    """Write fixture `name` to `tmp_path/model-<name>` and return the folder."""
    fixture = FIXTURES[name]
    folder = Path(tmp_path) / f"model-{name}"
    folder.mkdir(parents=True, exist_ok=True)
    make_json = metaspace_tokenizer_json if fixture.tokenizer == "metaspace" else tokenizer_json
    (folder / "tokenizer.json").write_text(make_json(fixture.special_tokens), encoding="utf-8")
    added = {
        str(index): {"content": token, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
        for index, token in enumerate(fixture.special_tokens)
    }
    config: dict = {
        "added_tokens_decoder": added,
        **fixture.named,
        "clean_up_tokenization_spaces": False,
        "model_max_length": fixture.model_max_length,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if fixture.jinja_file:
        (folder / "chat_template.jinja").write_text(fixture.template, encoding="utf-8")
        if fixture.config_template is not None:
            config["chat_template"] = fixture.config_template
    elif fixture.template is not None:
        config["chat_template"] = fixture.template
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return folder
