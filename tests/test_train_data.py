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
from tests.conftest import SAMPLES


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
    assert audit((e, e.input_ids, e.labels) for e in marked.examples).ok


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
    report = audit((e, e.input_ids, e.labels) for e in partly.examples)
    assert report.ok and report.partly_truncated == 1


def test_audit_passes_correct_labels_and_counts_end_of_turn_tokens():
    tokenizer = chatml_tokenizer()
    dataset = tokenize(tokenizer, conversations(), 512)
    report = audit((e, e.input_ids, e.labels) for e in dataset.examples)
    assert report.ok
    assert report.assistant_turns == 3 and report.turns_with_end_of_turn_trained == 3
    assert report.end_of_turn_tokens == {"<|im_end|>": 3}


def test_audit_stops_a_masked_end_of_turn_token_and_shows_the_example():
    tokenizer = chatml_tokenizer()
    example = tokenize(tokenizer, conversations(), 512).examples[0]
    # The classic collator bug: pad == eos, and "mask the padding" masks every eos.
    labels = np.where(example.input_ids == tokenizer.convert_tokens_to_ids("<|im_end|>"), IGNORE_INDEX, example.labels)
    report = audit([(example, example.input_ids, labels)])
    assert not report.ok
    text = describe_failure(report.failures[0])
    assert "data.jsonl:1" in text and "never learn to stop" in text
    assert f"{TRAINED_OPEN}2 plus 2 is 4.{TRAINED_CLOSE}<|im_end|>" in text


def test_audit_stops_trained_user_tokens():
    tokenizer = chatml_tokenizer()
    example = tokenize(tokenizer, conversations(), 512).examples[0]
    labels = example.input_ids.copy()
    labels[0] = IGNORE_INDEX
    report = audit([(example, example.input_ids, labels)])
    assert not report.ok
    assert any("outside the assistant turns are trained: 'system\\nBe brief." in reason for reason in report.failures[0].reasons), report.failures[0].reasons


def test_audit_stops_a_template_without_an_end_of_turn_token():
    tokenizer = chatml_tokenizer()
    tokenizer.chat_template = (
        "{%- for message in messages %}{{- message.role + ': ' + message.content + '\\n' }}{%- endfor %}"
        "{%- if add_generation_prompt %}{{- 'assistant: ' }}{%- endif %}"
    )
    dataset = tokenize(tokenizer, conversations(), 512)
    report = audit((e, e.input_ids, e.labels) for e in dataset.examples)
    assert len(report.failures) == 2
    assert "no end-of-turn token" in report.failures[0].reasons[0]


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
    train, held_out = split_eval(rows, 0.1, seed=3)
    assert len(held_out) == 4 and len(train) == 36
    assert {c.line for c in train}.isdisjoint(c.line for c in held_out)
    assert [c.line for c in held_out] == [c.line for c in split_eval(rows, 0.1, seed=3)[1]]
    assert split_eval(rows, 0.0, seed=3) == (rows, [])


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
