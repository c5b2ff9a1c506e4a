"""Training data without a model: assistant-only labels for ChatML and Llama-3-style templates,
generation markers, template parity, truncation, the mask audit, batching and the config."""

from __future__ import annotations

import numpy as np
import pytest

from curate.config import ConfigError
from curate.train.audit import TRAINED_CLOSE, TRAINED_OPEN, audit, describe_failure
from curate.train.batching import collate, epoch_order, unpack
from curate.train.config import is_train_only_table, resolve_train_config
from curate.train.data import IGNORE_INDEX, TrainingRow, split_eval, tokenize
from tests.conftest import SAMPLES, write_jsonl


TINY = SAMPLES / "tiny-chat"

LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

CHATML_WITH_MARKERS = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}"
    "{{- '<|im_start|>assistant\\n' }}{% generation %}{{ message.content + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

CONVERSATIONS = [
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 plus 2?"},
        {"role": "assistant", "content": "2 plus 2 is 4."},
    ],
    [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "  Teal, a blue-green.  "},
        {"role": "user", "content": "And a fruit? 🍐 ünïcode"},
        {"role": "assistant", "content": "A pear 🍐."},
    ],
]


def chatml_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(TINY)


def llama3_tokenizer():
    tokenizer = chatml_tokenizer()
    tokenizer.add_special_tokens(
        {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}
    )
    tokenizer.chat_template = LLAMA3_TEMPLATE
    return tokenizer


def conversations(rows=CONVERSATIONS):
    return [TrainingRow("data.jsonl", line, messages) for line, messages in enumerate(rows, start=1)]


def trained_runs(tokenizer, example) -> list[str]:
    """The decoded text of each contiguous run of trained tokens."""
    runs, current = [], []
    for token, label in zip(example.input_ids.tolist(), example.labels.tolist()):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(tokenizer.decode(current))
            current = []
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def untrained_text(tokenizer, example) -> str:
    return tokenizer.decode([t for t, label in zip(example.input_ids.tolist(), example.labels.tolist()) if label == IGNORE_INDEX])


@pytest.mark.parametrize(
    ("make_tokenizer", "end_of_turn", "strip"),
    [(chatml_tokenizer, "<|im_end|>", False), (llama3_tokenizer, "<|eot_id|>", True)],
    ids=["chatml", "llama3"],
)
def test_labels_cover_exactly_the_assistant_content_and_its_end_of_turn(make_tokenizer, end_of_turn, strip):
    tokenizer = make_tokenizer()
    dataset = tokenize(tokenizer, conversations(), max_seq_length=512)
    assert not dataset.problems and len(dataset.examples) == 2
    for example, messages in zip(dataset.examples, CONVERSATIONS):
        answers = [m["content"].strip() if strip else m["content"] for m in messages if m["role"] == "assistant"]
        assert trained_runs(tokenizer, example) == [answer + end_of_turn for answer in answers]
        prompt_side = untrained_text(tokenizer, example)
        for message in messages:
            if message["role"] != "assistant":
                assert message["content"].strip() in prompt_side
        assert example.labels[0] == IGNORE_INDEX


def test_generation_markers_give_the_same_trained_text_as_prefix_rendering():
    prefix = tokenize(chatml_tokenizer(), conversations(), 512)
    marked_tokenizer = chatml_tokenizer()
    marked_tokenizer.chat_template = CHATML_WITH_MARKERS
    marked = tokenize(marked_tokenizer, conversations(), 512)
    for by_prefix, by_marker in zip(prefix.examples, marked.examples):
        assert trained_runs(marked_tokenizer, by_marker) == trained_runs(marked_tokenizer, by_prefix)
    assert audit(((e, e.input_ids, e.labels) for e in marked.examples), marked_tokenizer).ok


def test_prompt_tokens_are_what_inference_tokenizes_for_the_generation_prompt():
    tokenizer = chatml_tokenizer()
    example = tokenize(tokenizer, conversations(), 512).examples[1]
    first_trained = int(np.flatnonzero(example.labels != IGNORE_INDEX)[0])
    prompt = tokenizer.apply_chat_template(CONVERSATIONS[1][:1], tokenize=False, add_generation_prompt=True)
    assert example.input_ids[:first_trained].tolist() == tokenizer(prompt, add_special_tokens=False)["input_ids"]


def test_a_template_that_renders_earlier_turns_differently_breaks_parity():
    tokenizer = chatml_tokenizer()
    # Drops the content of every assistant turn but the last: inference would see other prompts.
    tokenizer.chat_template = (
        "{%- for message in messages %}{{- '<|im_start|>' + message.role + '\\n' }}"
        "{%- if message.role == 'assistant' and not loop.last %}(earlier answer){% else %}{{ message.content }}{% endif %}"
        "{{- '<|im_end|>\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
    )
    dataset = tokenize(tokenizer, conversations(), 512)
    assert [e.conversation.line for e in dataset.examples] == [1]
    assert len(dataset.problems) == 1 and dataset.problems[0].where == "data.jsonl:2"
    assert "template parity" in dataset.problems[0].message


def test_truncation_that_cuts_every_assistant_token_is_reported_not_trained():
    tokenizer = chatml_tokenizer()
    long_prompt = [{"role": "user", "content": "word " * 300}, {"role": "assistant", "content": "Short answer."}]
    dataset = tokenize(tokenizer, conversations([long_prompt, CONVERSATIONS[0]]), max_seq_length=64)
    assert [e.conversation.line for e in dataset.cut_by_truncation] == [1]
    assert [e.conversation.line for e in dataset.examples] == [2]
    partly = tokenize(tokenizer, conversations([[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "word " * 300}]]), 64)
    example = partly.examples[0]
    assert example.truncated and len(example) == 64 and example.trained_tokens > 0
    report = audit(((e, e.input_ids, e.labels) for e in partly.examples), tokenizer)
    assert report.ok and report.partly_truncated == 1


def test_audit_passes_correct_labels_and_counts_end_of_turn_tokens():
    tokenizer = chatml_tokenizer()
    dataset = tokenize(tokenizer, conversations(), 512)
    report = audit(((e, e.input_ids, e.labels) for e in dataset.examples), tokenizer)
    assert report.ok
    assert report.assistant_turns == 3 and report.turns_with_end_of_turn_trained == 3
    assert report.end_of_turn_tokens == {"<|im_end|>": 3}


def test_audit_stops_a_masked_end_of_turn_token_and_shows_the_example():
    tokenizer = chatml_tokenizer()
    example = tokenize(tokenizer, conversations(), 512).examples[0]
    # The classic collator bug: pad == eos, and "mask the padding" masks every eos.
    labels = np.where(example.input_ids == tokenizer.convert_tokens_to_ids("<|im_end|>"), IGNORE_INDEX, example.labels)
    report = audit([(example, example.input_ids, labels)], tokenizer)
    assert not report.ok
    text = describe_failure(report.failures[0])
    assert "data.jsonl:1" in text and "never learn to stop" in text
    assert f"{TRAINED_OPEN}2 plus 2 is 4.{TRAINED_CLOSE}<|im_end|>" in text


def test_audit_stops_trained_user_tokens():
    tokenizer = chatml_tokenizer()
    example = tokenize(tokenizer, conversations(), 512).examples[0]
    labels = example.input_ids.copy()
    labels[0] = IGNORE_INDEX
    report = audit([(example, example.input_ids, labels)], tokenizer)
    assert not report.ok
    assert any("outside the assistant turns are trained: 'system\\nBe brief." in reason for reason in report.failures[0].reasons), report.failures[0].reasons


def test_audit_stops_a_template_without_an_end_of_turn_token():
    tokenizer = chatml_tokenizer()
    tokenizer.chat_template = (
        "{%- for message in messages %}{{- message.role + ': ' + message.content + '\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- 'assistant: ' }}{%- endif %}"
    )
    dataset = tokenize(tokenizer, conversations(), 512)
    report = audit(((e, e.input_ids, e.labels) for e in dataset.examples), tokenizer)
    assert len(report.failures) == 2
    assert any("no end-of-turn token" in reason for reason in report.failures[0].reasons)


@pytest.mark.parametrize("packing", [True, False])
def test_collation_feeds_every_example_unchanged(packing):
    tokenizer = chatml_tokenizer()
    examples = tokenize(tokenizer, conversations(CONVERSATIONS * 3), 512).examples
    batch = collate(examples, [4, 1, 2], packing, tokenizer.pad_token_id)
    if packing:
        assert batch.input_ids.shape == (1, sum(len(examples[i]) for i in (4, 1, 2)))
        assert batch.attention_mask is None
        assert batch.position_ids[0].tolist().count(0) == 3
    else:
        assert batch.input_ids.shape == (3, max(len(examples[i]) for i in (4, 1, 2)))
    fed = list(unpack(batch))
    assert [index for index, _, _ in fed] == [4, 1, 2]
    for index, input_ids, labels in fed:
        assert np.array_equal(input_ids, examples[index].input_ids) and np.array_equal(labels, examples[index].labels)
    assert batch.targets == sum(examples[i].trained_tokens for i in (4, 1, 2))


def test_epoch_order_is_seeded_complete_and_length_grouped_without_packing():
    lengths = [5, 50, 7, 48, 6, 52, 9, 47] * 10
    first = epoch_order(lengths, 4, seed=1, epoch=0, packing=True)
    assert first == epoch_order(lengths, 4, seed=1, epoch=0, packing=True)
    assert first != epoch_order(lengths, 4, seed=1, epoch=1, packing=True)
    assert sorted(i for batch in first for i in batch) == list(range(80))
    grouped = epoch_order(lengths, 4, seed=1, epoch=0, packing=False)
    assert sorted(i for batch in grouped for i in batch) == list(range(80))
    spread = lambda batches: np.mean([max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches])  # noqa: E731
    assert spread(grouped) < spread(first) / 4


def test_eval_split_is_seeded_and_disjoint():
    rows = conversations([CONVERSATIONS[0]] * 40)
    split = split_eval(rows, 0.1, seed=3)
    train, held_out = split.train, split.evaluation
    assert len(held_out) == 4 and len(train) == 36
    assert {c.line for c in train}.isdisjoint(c.line for c in held_out)
    assert [c.line for c in held_out] == [c.line for c in split_eval(rows, 0.1, seed=3).evaluation]
    empty = split_eval(rows, 0.0, seed=3)
    assert (empty.train, empty.evaluation) == (rows, [])


def gsm8k_rows(distinct: int, copies: int) -> list[dict]:
    """Word problems with `#### N` answers; the first `copies` problems appear four times more."""
    rows = []
    for n in range(distinct):
        question = f"A shop sells {n + 3} boxes of {n + 7} pencils each. How many pencils does it sell?"
        answer = f"Each box has {n + 7} pencils, so {n + 3} boxes have {(n + 3) * (n + 7)} pencils.\n#### {(n + 3) * (n + 7)}"
        rows.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
    return rows + [row for row in rows[:copies] for _ in range(4)]


def test_eval_split_keeps_every_duplicate_cluster_on_one_side(lint, tmp_path):
    """80 exact copies (20 problems, each four more times): the lint gate's DU001 clusters keep
    every copy on the side of its original, so no eval row has a copy in train."""
    import json

    from curate.train.data import read_conversations
    from curate.train.gate import duplicate_clusters

    rows = gsm8k_rows(100, 20)
    result = lint(rows)
    conversations_, _ = read_conversations(tmp_path / "data.jsonl")
    key = lambda conversation: json.dumps(conversation.messages)  # noqa: E731
    leaks = lambda split: sum(1 for c in split.evaluation if key(c) in {key(t) for t in split.train})  # noqa: E731
    assert leaks(split_eval(conversations_, 0.2, seed=1)) > 0  # a plain random split leaks
    duplicate_of = duplicate_clusters(result, str(tmp_path / "data.jsonl"))
    assert len(set(duplicate_of.values())) == 20
    for seed in range(5):
        split = split_eval(conversations_, 0.2, seed=seed, duplicate_of=duplicate_of)
        assert leaks(split) == 0
        assert len(split.evaluation) == 36 and len(split.train) == 144
        assert split.clusters_kept_together == 20


def test_config_flags_win_over_the_file_and_paths_resolve_beside_it(tmp_path):
    table = {"epochs": 2, "learning-rate": 1e-4, "eval-file": "eval.jsonl", "lora-targets": ["q_proj", "v_proj"]}
    config = resolve_train_config(table, tmp_path / "curate.toml", {"learning_rate": 5e-4, "epochs": None})
    assert config.epochs == 2 and config.learning_rate == 5e-4
    assert config.eval_file == str(tmp_path / "eval.jsonl")
    assert config.lora_targets == ["q_proj", "v_proj"]


def test_config_problems_are_all_reported_with_suggestions(tmp_path):
    with pytest.raises(ConfigError) as caught:
        resolve_train_config({"learning-rat": 1e-4, "batch-size": 0, "lora-targets": "everything"}, tmp_path / "curate.toml", {})
    text = "\n".join(caught.value.problems)
    assert "unknown key `learning-rat` (did you mean `learning-rate`?)" in text
    assert "batch_size" in text or "batch-size" in text
    assert is_train_only_table({"epochs": 1, "seed": 3})
    assert not is_train_only_table({"select": ["SC"], "train": {"epochs": 1}})


# ---------------------------------------------------------------- token-exact parity, every tokenizer family
SUPPORT_CHAT = [
    {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
    {"role": "user", "content": "How do I reset my password?"},
    {"role": "assistant", "content": "Open Settings, choose Security, then Reset password."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
]
NO_SYSTEM = SUPPORT_CHAT[1:]
#: (fixture, conversation it takes, end-of-turn token)
FAMILIES = [
    ("llama3", SUPPORT_CHAT, "<|eot_id|>"),
    ("gemma", NO_SYSTEM, "<end_of_turn>"),
    ("llama2", SUPPORT_CHAT, "</s>"),
    ("mistral-sp", NO_SYSTEM, "</s>"),
    ("phi3", SUPPORT_CHAT, "<|end|>"),
    ("zephyr", SUPPORT_CHAT, "</s>"),
    ("generation", SUPPORT_CHAT, "<|im_end|>"),
]


def fixture_tokenizer(name, tmp_path):
    from transformers import AutoTokenizer

    from tests.fixture_models import build_fixture_model

    return AutoTokenizer.from_pretrained(build_fixture_model(name, tmp_path))


@pytest.mark.parametrize(("name", "messages", "end_of_turn"), FAMILIES, ids=[family[0] for family in FAMILIES])
def test_trained_ids_are_exactly_what_inference_tokenizes(name, messages, end_of_turn, tmp_path):
    """The ids are `tokenizer(rendered text)`, every generation prompt's ids are a prefix of
    them, and the trained text is each answer and its end-of-turn token (SentencePiece-style
    tokenizers used to get an extra `▁` at every piece: `▁Open` where inference has `Op`,`en`)."""
    from curate.train.data import prompt_text

    tokenizer = fixture_tokenizer(name, tmp_path)
    dataset = tokenize(tokenizer, conversations([messages]), 512)
    assert not dataset.problems, dataset.problems
    example = dataset.examples[0]
    assert example.input_ids.tolist() == tokenizer(example.text, add_special_tokens=False)["input_ids"]
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt_ids = tokenizer(prompt_text(tokenizer, messages[:index]), add_special_tokens=False)["input_ids"]
            assert example.input_ids[: len(prompt_ids)].tolist() == prompt_ids
    trained = [example.text[example.offsets[i] : example.offsets[i + 1]] for i in np.flatnonzero(example.labels != IGNORE_INDEX)]
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    assert "".join(trained).split(end_of_turn)[:-1] == [answer if name != "llama2" else f" {answer} " for answer in answers][: len(answers)]
    report = audit([(example, example.input_ids, example.labels)], tokenizer)
    assert report.ok, describe_failure(report.failures[0])
    assert report.turns_with_end_of_turn_trained == len(answers)


def test_audit_refuses_pieces_tokenized_apart_and_shows_both_token_sequences(tmp_path):
    """Ids made by tokenizing prompt and answer separately (what a SentencePiece tokenizer
    turns into `▁Open`) are not what inference feeds the model: the audit refuses and shows
    both sequences token by token from the first difference."""
    from curate.train.data import Example

    tokenizer = fixture_tokenizer("phi3", tmp_path)
    example = tokenize(tokenizer, conversations([NO_SYSTEM[:2]]), 512).examples[0]
    start = example.spans[0].start
    pieces = [tokenizer(piece, add_special_tokens=False, return_offsets_mapping=True) for piece in (example.text[:start], example.text[start:])]
    ids = pieces[0]["input_ids"] + pieces[1]["input_ids"]
    offsets = [b for b, _ in pieces[0]["offset_mapping"]] + [start + b for b, _ in pieces[1]["offset_mapping"]] + [len(example.text)]
    labels = np.array([IGNORE_INDEX] * len(pieces[0]["input_ids"]) + pieces[1]["input_ids"])
    labels[-2:] = IGNORE_INDEX  # "\n<|endoftext|>" after the end-of-turn token
    apart = Example(example.conversation, example.text, example.spans, np.array(ids), labels, np.array(offsets))
    report = audit([(apart, apart.input_ids, apart.labels)], tokenizer)
    assert not report.ok
    reason = next(r for r in report.failures[0].reasons if r.startswith("tokens of the rendered conversation"))
    trained_line, inference_line = reason.splitlines()[1:]
    assert "'▁Open'" in trained_line and "'Op' 'en'" in inference_line
    assert audit([(example, example.input_ids, example.labels)], tokenizer).ok


def test_special_token_text_inside_an_answer_does_not_cut_the_turn():
    tokenizer = chatml_tokenizer()
    answer = "Close the block with <|im_end|> and then stop writing."
    rows = [[{"role": "user", "content": "How do I close a ChatML turn?"}, {"role": "assistant", "content": answer}]]
    example = tokenize(tokenizer, conversations(rows), 512).examples[0]
    assert trained_runs(tokenizer, example) == [answer + "<|im_end|>"]
    assert audit([(example, example.input_ids, example.labels)], tokenizer).ok


def test_audit_catches_a_turn_cut_at_special_text_in_its_content():
    """The audit works out the turn from the message, not from the labeller's spans: labels
    that stop at the first `<|im_end|>` inside the answer leave the rest untrained and fail."""
    tokenizer = chatml_tokenizer()
    answer = "Close the block with <|im_end|> and then stop writing."
    rows = [[{"role": "user", "content": "How do I close a ChatML turn?"}, {"role": "assistant", "content": answer}]]
    example = tokenize(tokenizer, conversations(rows), 512).examples[0]
    cut_at = example.text.index("<|im_end|>", example.spans[0].start) + len("<|im_end|>")
    labels = np.where(example.offsets[:-1] < cut_at, example.labels, IGNORE_INDEX)
    report = audit([(example, example.input_ids, labels)], tokenizer)
    assert not report.ok
    reason = report.failures[0].reasons[0]
    assert "assistant turn 1: tokens of its content or end-of-turn are not trained: ' and then stop writing.<|im_end|>'" in reason
    assert "expected 'Close the block with <|im_end|> and then stop writing.<|im_end|>'" in reason


def test_manifest_base_revision_is_the_hub_snapshot_or_changes_with_the_weights(tmp_path):
    from curate.train.manifest import base_model_revision

    snapshot = tmp_path / "hub" / "models--org--chat" / "snapshots" / "0123abcd" / "config.json"
    snapshot.parent.mkdir(parents=True)
    snapshot.write_text("{}")
    assert base_model_revision(str(snapshot.parent)) == {"kind": "hub snapshot", "commit": "0123abcd"}
    local = tmp_path / "model"
    local.mkdir()
    (local / "config.json").write_text('{"hidden_size": 64}')
    weights = bytearray(range(256)) * 40_000  # 10 MB: sampled, not read whole
    (local / "model.safetensors").write_bytes(bytes(weights))
    first = base_model_revision(str(local))
    assert first["kind"] == "local folder" and first == base_model_revision(str(local))
    # Updated weights of the same shape: the same size, other bytes throughout.
    (local / "model.safetensors").write_bytes(bytes(weights[1:] + weights[:1]))
    assert base_model_revision(str(local))["sha256"] != first["sha256"]
    (local / "model.safetensors").write_bytes(bytes(weights))
    assert base_model_revision(str(local)) == first
    (local / "config.json").write_text('{"hidden_size": 65}')
    assert base_model_revision(str(local))["sha256"] != first["sha256"]
    assert base_model_revision("org/not-in-any-cache")["kind"] == "unknown"


def test_chunked_linear_cross_entropy_equals_the_plain_loss_and_gradient():
    """The chunked head loss (logits never whole in memory) gives the loss and the gradient of
    `cross_entropy(hidden @ W.T)`; chunks of 7 rows over 50 rows, and in eval (no grad)."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    from curate.train.model import linear_cross_entropy

    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(300, 16, generator=generator, dtype=torch.float64)
    targets = torch.randint(0, 300, (50,), generator=generator)
    hidden = torch.randn(50, 16, generator=generator, dtype=torch.float64, requires_grad=True)
    expected = F.cross_entropy(hidden @ weight.t(), targets, reduction="sum")
    (expected_grad,) = torch.autograd.grad(expected * 0.5, hidden)
    chunked = linear_cross_entropy(hidden, weight, targets, chunk_elements=7 * 300)
    (grad,) = torch.autograd.grad(chunked * 0.5, hidden)
    assert torch.allclose(chunked, expected.float(), rtol=1e-6)
    assert torch.allclose(grad, expected_grad, rtol=1e-5, atol=1e-6)  # the logits are float32
    with torch.no_grad():
        assert torch.allclose(linear_cross_entropy(hidden, weight, targets, chunk_elements=7 * 300), expected.float(), rtol=1e-6)


def test_language_modeling_text_rows_are_not_trained_as_assistant_turns(tmp_path):
    """TRL's `{"text": ...}` rows pass the role rules (they skip them), but have no assistant turn:
    the trainer must count them unusable instead of training the text as an answer to nothing."""
    from curate.train.data import read_conversations

    rows = [
        {"text": "The mitochondria is the powerhouse of the cell."},
        {"messages": [{"role": "user", "content": "What is 2 + 2?"}, {"role": "assistant", "content": "4"}]},
    ]
    conversations, unusable = read_conversations(write_jsonl(tmp_path / "mixed.jsonl", rows))
    assert [c.line for c in conversations] == [2]
    assert unusable == 1


def test_train_state_is_what_a_checkpoint_saves_and_resume_restores():
    import json

    from curate.train.recipe import TrainState

    state = TrainState(step=7, metrics=[{"step": 7, "loss": 1.5}], best_eval_loss=0.9, best_step=5, evals_since_best=1,
                       base_eval_loss=1.2, train_seconds=3.5, tokens_seen=900, trained_tokens_seen=400, stopped_early=True)
    saved = json.loads(json.dumps({**state.to_json(), "config": {"epochs": 1}, "data_sha256": "ab12", "eval_sha256": None}))
    assert TrainState.from_json(saved) == state
    assert TrainState.from_json({"step": 3, "metrics": []}) == TrainState(step=3)  # an older state.json


def test_dry_run_and_training_refuse_truncation_that_leaves_nothing_with_one_message(tmp_path, capsys):
    """The dry run and `Run.setup` ask `data_refusal` the same question, in the same words."""
    from curate.cli import main
    from curate.train.model import load_tokenizer
    from curate.train.recipe import data_refusal, prepare_data

    rows = [{"messages": [{"role": "user", "content": f"Tell me about the number {i} in one long sentence, please."},
                          {"role": "assistant", "content": f"The number {i} is a number."}]} for i in range(12)]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    code = main(["train", str(data), "--model", str(TINY), "--dry-run", "--max-seq-length", "16", "--isolated"])
    err = capsys.readouterr().err
    from curate.train.config import TrainConfig

    config = TrainConfig(model=str(TINY), max_seq_length=16)
    expected = data_refusal(config, prepare_data(config, load_tokenizer(config.model), str(data)))
    assert code == 2 and expected is not None
    assert f"curate: error: {expected}" in err


@pytest.mark.parametrize("name", ["rows.jsonl", "rows.jsonl.gz", "rows.json", "rows.json.gz", "rows.parquet", "rows.csv", "rows.csv.gz", "rows.tsv", "rows.arrow"])
def test_read_data_file_hashes_and_parses_the_same_bytes_in_every_format(tmp_path, name):
    """The trainer's one read of a file (sha256 + rows from the same bytes) gives the rows the
    path readers give, in every format train accepts."""
    import gzip
    import hashlib
    import json

    import polars as pl

    from curate.train.data import read_conversations, read_data_file

    chats = [[{"role": "user", "content": f"What is {n} + {n}?"}, {"role": "assistant", "content": f"{n} + {n} = {2 * n}.\n#### {2 * n}"}]
             for n in range(1, 6)] + [[{"role": "user", "content": "no answer yet"}]]
    path = tmp_path / name
    suffix = name.removeprefix("rows").removesuffix(".gz")
    if suffix == ".jsonl":
        payload = "\n".join(json.dumps({"messages": chat}) for chat in chats).encode() + b"\n"
    elif suffix == ".json":
        payload = json.dumps([{"messages": chat} for chat in chats], indent=2).encode()
    else:
        table = tmp_path / f"table{suffix}"
        if suffix in (".parquet", ".arrow"):
            frame = pl.DataFrame({"messages": chats})
            frame.write_parquet(table) if suffix == ".parquet" else frame.write_ipc(table)
        else:
            pl.DataFrame({"messages": [json.dumps(chat) for chat in chats]}).write_csv(table, separator="," if suffix == ".csv" else "\t")
        payload = table.read_bytes()
    path.write_bytes(gzip.compress(payload) if name.endswith(".gz") else payload)
    snapshot = read_data_file(path)
    assert (snapshot.conversations, snapshot.unusable) == read_conversations(path)
    assert len(snapshot.conversations) == 5 and snapshot.unusable == 1
    assert snapshot.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_read_data_file_reads_datasets_and_hashes_their_rows(tmp_path):
    """A save_to_disk folder trains like a file: its rows are read once and hashed as rows (the
    same rows give the same hash, a changed answer another); stdin and a missing file are one line."""
    import datasets

    from curate.io import InputError
    from curate.train.data import read_data_file

    chat = [{"messages": [{"role": "user", "content": f"What is {n} + {n}?"}, {"role": "assistant", "content": f"{n + n}"}]} for n in range(4)]
    datasets.Dataset.from_list(chat).save_to_disk(str(tmp_path / "saved"))
    changed = [*chat[:3], {"messages": [chat[3]["messages"][0], {"role": "assistant", "content": "7"}]}]
    datasets.Dataset.from_list(changed).save_to_disk(str(tmp_path / "changed"))
    first, again, other = (read_data_file(tmp_path / name) for name in ("saved", "saved", "changed"))
    assert [row.messages[-1]["content"] for row in first.conversations] == ["0", "2", "4", "6"]
    assert first.sha256 == again.sha256 != other.sha256 and len(first.sha256) == 64
    with pytest.raises(InputError, match=r"not stdin"):
        read_data_file("-")
    with pytest.raises(InputError, match=r"missing.jsonl: no such file"):
        read_data_file(tmp_path / "missing.jsonl")
