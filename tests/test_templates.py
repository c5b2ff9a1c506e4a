"""curate.templates renders, marks and counts exactly like transformers, and fails in one line.

transformers is imported here only, as the reference; `curate lint` itself never imports it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from curate.templates import ChatTemplate, RenderError, TemplateError
from tests.conftest import ROOT, SAMPLES, lint_rows
from tests.fixture_models import build_fixture_model

TINY_CHAT = SAMPLES / "tiny-chat"

CONVERSATIONS = {
    "single turn": [{"role": "user", "content": "How do I reset my password?"}, {"role": "assistant", "content": "Open Settings, choose Security."}],
    "system and two turns": [
        {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
        {"role": "assistant", "content": "Rome."},
    ],
    "whitespace and unicode": [
        {"role": "user", "content": "  Traduis « bonjour » en 日本語, s'il te plaît.\n\n"},
        {"role": "assistant", "content": "こんにちは 🙂  \n"},
    ],
    "tool turn": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "tool", "content": '{"temp": 21, "sky": "sunny"}'},
        {"role": "assistant", "content": "Sunny, 21 degrees."},
    ],
    "prompt only": [{"role": "user", "content": "Write a short poem about the sea."}],
}

#: Templates whose rendering must match transformers' on every conversation above.
EQUIVALENCE_MODELS = ["tiny-chat", "chatml", "chatml-tools", "llama2", "alpaca", "llama3", "gemma", "mistral", "generation", "template-list", "jinja-file"]


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    built = {name: build_fixture_model(name, folder) for name in EQUIVALENCE_MODELS if name != "tiny-chat"}
    return {"tiny-chat": TINY_CHAT, **built}


@pytest.fixture(scope="module")
def reference(models):
    """transformers' tokenizers for the same folders (the reference implementation)."""
    import transformers
    return {name: transformers.AutoTokenizer.from_pretrained(str(path)) for name, path in models.items()}


def reference_render(tokenizer, messages, **kwargs):
    """transformers' text, or the template's error message."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)
    except Exception as exc:  # the template's own exception, compared by message
        return f"error: {exc}"


def our_render(template: ChatTemplate, messages, **kwargs):
    try:
        return template.render(messages, **kwargs)
    except RenderError as exc:
        return f"error: {exc}"


@pytest.mark.parametrize("name", EQUIVALENCE_MODELS)
@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_rendering_equals_transformers(name, add_generation_prompt, models, reference):
    template = ChatTemplate.load(models[name])
    outputs = []
    for messages in CONVERSATIONS.values():
        ours = our_render(template, messages, add_generation_prompt=add_generation_prompt)
        theirs = reference_render(reference[name], messages, add_generation_prompt=add_generation_prompt)
        assert ours == theirs, (name, messages)
        outputs.append(ours)
    assert any(not output.startswith("error:") for output in outputs)


def test_templates_raise_their_own_messages(models, reference):
    gemma = ChatTemplate.load(models["gemma"])
    with pytest.raises(RenderError, match="System role not supported") as raised:
        gemma.render(CONVERSATIONS["system and two turns"])
    assert raised.value.kind == "raised" and raised.value.line == 1
    llama = ChatTemplate.load(models["llama3"])
    bad_role = [{"role": "narrator", "content": "Once"}, {"role": "assistant", "content": "upon"}]
    assert our_render(llama, bad_role) == reference_render(reference["llama3"], bad_role)
    with pytest.raises(RenderError, match="Unsupported role 'narrator'") as raised:
        llama.render(bad_role)
    assert raised.value.line is not None and raised.value.line > 1  # a multi-line template: the raising line


def test_tools_render_through_tojson_like_transformers(models, reference):
    tools = [{"type": "function", "function": {"name": "weather", "description": "Weather «now»", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    messages = CONVERSATIONS["tool turn"]
    ours = ChatTemplate.load(models["llama3"]).render(messages, tools=tools)
    assert ours == reference["llama3"].apply_chat_template(messages, tools=tools, tokenize=False)
    assert '    "name": "weather"' in ours and "«now»" in ours  # indent=4, ensure_ascii=False


@pytest.mark.parametrize("name", EQUIVALENCE_MODELS)
def test_token_counts_equal_transformers(name, models, reference):
    template = ChatTemplate.load(models[name])
    texts, expected = [], []
    for messages in CONVERSATIONS.values():
        try:
            texts.append(template.render(messages))
        except RenderError:
            continue
        expected.append(len(reference[name].apply_chat_template(messages, tokenize=True, return_dict=False)))
    assert texts
    assert [len(encoding.ids) for encoding in template.encode_batch(texts)] == expected


@pytest.mark.parametrize("add_generation_prompt", [False, True])
def test_generation_spans_equal_transformers_assistant_mask(add_generation_prompt, models, reference):
    template = ChatTemplate.load(models["generation"])
    assert template.has_generation_markers
    tokenizer = reference["generation"]
    for messages in CONVERSATIONS.values():
        text, spans = template.render_with_spans(messages, add_generation_prompt=add_generation_prompt)
        assert text == template.render(messages, add_generation_prompt=add_generation_prompt)
        assistant = [m["content"] + "<|im_end|>" for m in messages if m["role"] == "assistant"]
        assert [text[start:end] for start, end in spans] == assistant
        out = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True, add_generation_prompt=add_generation_prompt
        )
        encoding = template.encode_batch([text])[0]
        ours = [int(any(start < span_end and end > span_start for span_start, span_end in spans)) for start, end in encoding.offsets]
        assert ours == list(out["assistant_masks"])


def test_templates_without_markers_have_no_spans(models):
    template = ChatTemplate.load(models["chatml"])
    assert not template.has_generation_markers
    text, spans = template.render_with_spans(CONVERSATIONS["single turn"])
    assert spans == [] and text == template.render(CONVERSATIONS["single turn"])


def test_special_tokens_and_max_length(models, reference):
    tiny = ChatTemplate.load(TINY_CHAT)
    assert tiny.special_tokens.named == {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    assert set(tiny.special_tokens.control) == {"<|im_start|>", "<|im_end|>", "<|endoftext|>"}
    assert tiny.model_max_length == 2048 and tiny.max_length == 2048
    llama = ChatTemplate.load(models["llama3"])
    assert llama.special_tokens.named["bos_token"] == "<|begin_of_text|>"
    assert set(reference["llama3"].all_special_tokens) <= set(llama.special_tokens.control)
    assert llama.max_length == 4096  # 8192 capped


def test_control_tokens_include_added_tokens_the_template_writes(tmp_path):
    folder = build_fixture_model("chatml", tmp_path)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["added_tokens_decoder"]["1"]["special"] = False  # <|im_start|>: added, not special, written by the template
    config["added_tokens_decoder"]["99"] = {"content": "<tool>", "special": False}  # added, never written
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    control = ChatTemplate.load(folder).special_tokens.control
    assert "<|im_start|>" in control and "<tool>" not in control


def test_template_list_picks_default_or_a_named_template(tmp_path):
    folder = build_fixture_model("template-list", tmp_path)
    messages = CONVERSATIONS["system and two turns"]
    assert "You are a helpful assistant" in ChatTemplate.load(folder).render(messages)
    assert "You are a helpful assistant" not in ChatTemplate.load(folder, template_name="tool_use").render(messages)
    with pytest.raises(TemplateError, match="no chat template named `nope`; it has: default, tool_use"):
        ChatTemplate.load(folder, template_name="nope")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["chat_template"] = [entry for entry in config["chat_template"] if entry["name"] != "default"] + [{"name": "rag", "template": "x"}]
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(TemplateError, match="none is named `default`; pick one of: rag, tool_use"):
        ChatTemplate.load(folder)


def test_additional_chat_template_files(tmp_path):
    folder = build_fixture_model("jinja-file", tmp_path)
    (folder / "additional_chat_templates").mkdir()
    (folder / "additional_chat_templates" / "short.jinja").write_text("{{ messages[0]['content'] }}")
    assert ChatTemplate.load(folder, template_name="short").render(CONVERSATIONS["single turn"]) == "How do I reset my password?"
    assert ChatTemplate.load(folder).render(CONVERSATIONS["single turn"]).startswith("<|im_start|>user")


def test_hub_name_resolves_from_the_local_cache_only(tmp_path, monkeypatch):
    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    with pytest.raises(TemplateError) as raised:
        ChatTemplate.load("acme/chat-7b")
    message = str(raised.value)
    assert "\n" not in message and "huggingface-cli download acme/chat-7b" in message and str(cache) in message
    repo = cache / "models--acme--chat-7b"
    snapshot = repo / "snapshots" / ("a" * 40)
    shutil.copytree(build_fixture_model("chatml", tmp_path), snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("a" * 40)
    template = ChatTemplate.load("acme/chat-7b")
    assert template.render(CONVERSATIONS["single turn"]).startswith("<|im_start|>user")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("no-template", "has no chat template"),
        ("syntax-error", "syntax error at template line 2"),
    ],
)
def test_unusable_templates_are_one_line_errors(name, expected, tmp_path):
    with pytest.raises(TemplateError) as raised:
        ChatTemplate.load(build_fixture_model(name, tmp_path))
    assert expected in str(raised.value) and "\n" not in str(raised.value)


def test_missing_folder_and_file_errors(tmp_path):
    with pytest.raises(TemplateError, match="does not exist"):
        ChatTemplate.load(tmp_path / "nowhere")
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(TemplateError, match="is a file"):
        ChatTemplate.load(tmp_path / "file.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TemplateError, match="no tokenizer_config.json and no chat_template.jinja"):
        ChatTemplate.load(tmp_path / "empty")
    broken = build_fixture_model("chatml", tmp_path)
    (broken / "tokenizer_config.json").write_text('{"chat_template": ')
    with pytest.raises(TemplateError, match=r"tokenizer_config.json:1: tokenizer config is not valid JSON"):
        ChatTemplate.load(broken)


SCHEMA_BAD_ROW = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}]}'
GOOD_ROW = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello!"}]}'


@pytest.mark.parametrize("name", ["no-template", "syntax-error"])
def test_setup_errors_leave_the_other_rules_running(name, tmp_path):
    model = build_fixture_model(name, tmp_path)
    result = lint_rows(tmp_path, [GOOD_ROW, SCHEMA_BAD_ROW], model=str(model))
    assert len(result.errors) == 1 and "\n" not in result.errors[0]
    codes = {f.code for f in result.findings}
    assert "SC005" in codes and not any(code.startswith("CT") for code in codes)
    assert not any(rule.code.startswith("CT") for rule in result.rules)


def test_sandbox_violation_is_a_finding_and_other_rules_run(tmp_path):
    model = build_fixture_model("sandbox-escape", tmp_path)
    result = lint_rows(tmp_path, [GOOD_ROW, SCHEMA_BAD_ROW], model=str(model))
    assert not result.errors
    ct001 = [f for f in result.findings if f.code == "CT001"]
    assert [f.line for f in ct001] == [1, 2] and "sandbox violation" in ct001[0].message
    assert any(f.code == "SC005" for f in result.findings)


def test_cli_missing_model_is_exit_2_with_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "curate", "lint", str(SAMPLES / "clean-chat.jsonl"), "--isolated", "--model", str(tmp_path / "no-such-model")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    problem = [line for line in proc.stderr.splitlines() if "no-such-model" in line]
    assert len(problem) == 1 and "does not exist" in problem[0]
    assert "No problems found" not in proc.stdout and "incomplete" in proc.stdout


def test_lint_with_a_model_imports_no_heavy_library(tmp_path):
    model = build_fixture_model("generation", tmp_path)
    data = tmp_path / "data.jsonl"
    data.write_text(GOOD_ROW + "\n", encoding="utf-8")
    script = (
        "import sys\n"
        "from curate.cli import main\n"
        f"code = main(['lint', {str(data)!r}, '--isolated', '--model', {str(model)!r}, '--max-seq-length', '8'])\n"
        "print('HEAVY=' + ','.join(m for m in ('torch', 'transformers', 'huggingface_hub') if m in sys.modules))\n"
        "print('EXIT=' + str(code))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert "HEAVY=\n" in proc.stdout and "EXIT=0" in proc.stdout, proc.stdout + proc.stderr
    assert "CT003" in proc.stdout  # the template was loaded, rendered and tokenized


BOUND_TEXTS = [
    "",
    "plain ascii text with    spaces\n\n\tand tabs",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "ünïcödé · 日本語のテキスト · emoji 🙂👍🏽 · RTL עברית",
    "\x00\x1b[31m control \u2028 separators \ufeff",
    "a" * 500 + " " + "🙂" * 50,
]


@pytest.mark.parametrize("name", ["tiny-chat", "llama3", "mistral"])
def test_token_upper_bound_never_undercounts(name, models):
    template = ChatTemplate.load(models[name])
    counts = [len(encoding.ids) for encoding in template.encode_batch(BOUND_TEXTS)]
    bounds = [template.token_upper_bound(text) for text in BOUND_TEXTS]
    assert all(bound is not None and bound >= count for bound, count in zip(bounds, counts)), list(zip(bounds, counts))


def test_token_upper_bound_is_none_when_it_cannot_be_proven(tmp_path):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    folder = build_fixture_model("chatml", tmp_path)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.normalizer = normalizers.NFKC()
    tokenizer.save(str(folder / "tokenizer.json"))
    nfkc = ChatTemplate.load(folder)
    assert nfkc.token_upper_bound("ascii only") == len("ascii only")
    assert nfkc.token_upper_bound("ﬁ ligature") is None  # NFKC may expand it
    word_level = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Metaspace()
    word_level.save(str(folder / "tokenizer.json"))
    assert ChatTemplate.load(folder).token_upper_bound("any text") is None


def test_exceeds_max_length_counts_assistant_tokens_like_transformers_mask(tmp_path, reference, models):
    messages = CONVERSATIONS["system and two turns"]
    row = json.dumps({"messages": messages})
    limit = 20
    result = lint_rows(tmp_path, [row], model=str(models["generation"]), select=["CT003"], max_seq_length=limit)
    (finding,) = result.findings
    mask = reference["generation"].apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)["assistant_masks"]
    assert finding.data["tokens"] == len(mask) and finding.data["over"] == len(mask) - limit
    assert finding.data["assistant_tokens"] == sum(mask) and finding.data["assistant_tokens_cut"] == sum(mask[limit:])
    assert f"{len(mask) - limit:,} over max-seq-length {limit}" in finding.message


def test_exceeds_max_length_counts_assistant_tokens_as_curate_train_labels_them(tmp_path):
    import transformers
    from curate.train.data import TrainingRow, tokenize

    conversations = [messages for messages in CONVERSATIONS.values() if messages[-1]["role"] == "assistant"]
    rows = [json.dumps({"messages": messages}) for messages in conversations]
    result = lint_rows(tmp_path, rows, model=str(TINY_CHAT), select=["CT003"], max_seq_length=4)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(TINY_CHAT))
    dataset = tokenize(tokenizer, [TrainingRow("x", line, messages) for line, messages in enumerate(conversations, 1)], 100_000)
    assert [f.data["assistant_tokens"] for f in result.findings] == [example.trained_tokens for example in dataset.examples]


@pytest.mark.parametrize(
    ("fixture", "markers"),
    [
        ("llama2", ("<</SYS>>", "<<SYS>>", "[/INST]", "[INST]")),
        ("alpaca", ("### Instruction:", "### Response:")),
        ("chatml", ()),  # its markers are registered control tokens (CT002), and role names are no markers
        ("llama3", ()),  # `Today Date: ...` is a header the template writes, not a marker around turns
        ("gemma", ()),  # raises on the system probe; the probe without one still renders
    ],
)
def test_turn_markers_come_from_rendering_probe_conversations(tmp_path, fixture, markers):
    template = ChatTemplate.load(build_fixture_model(fixture, tmp_path))
    assert template.turn_markers == markers


def test_turn_markers_of_a_vicuna_style_template_are_its_speaker_labels():
    source = "{% for m in messages %}{% if m['role'] == 'user' %}USER: {{ m['content'] }} {% else %}ASSISTANT: {{ m['content'] }}</s>{% endif %}{% endfor %}"
    template = ChatTemplate(source, named_tokens={"eos_token": "</s>"}, extra_special_tokens=["</s>"])
    assert template.turn_markers == ("ASSISTANT:", "USER:")


def test_tool_call_conversations_render_like_transformers_and_keep_the_call(models, reference):
    from curate.formats import normalize

    row = {"messages": [
        {"role": "user", "content": "Free up some disk space."},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "archive_files", "arguments": '{"older_than_days": 30}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"archived": 112}'},
        {"role": "assistant", "content": "I archived 112 old files."},
    ]}
    messages = normalize(row).template_messages()
    for name in ("chatml-tools", "chatml"):
        ours = our_render(ChatTemplate.load(models[name]), messages)
        assert ours == reference_render(reference[name], messages), name
    assert '"name": "archive_files"' in our_render(ChatTemplate.load(models["chatml-tools"]), messages)
