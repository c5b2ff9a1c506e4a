"""Build samples/tiny-chat: a tiny chat model that loads offline with plain transformers.

    .venv/bin/python samples/make_tiny_model.py [OUT_DIR]

Deterministic: a byte-level BPE tokenizer (vocabulary 1024) trained on a fixed
English/support-chat corpus in this file, so any text encodes; a ChatML chat
template like Qwen2.5's (without `{% generation %}` markers); and a seeded
random LlamaForCausalLM (hidden 64, 2 layers, 4 heads, 2 KV heads, tied
embeddings) of a few hundred KB. It knows nothing; it exists so lint, train and
export can run end to end on a CPU without downloading anything.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

VOCAB_SIZE = 1024
MODEL_MAX_LENGTH = 2048
SEED = 20240611
IM_START, IM_END, END_OF_TEXT = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
SPECIAL_TOKENS = [END_OF_TEXT, IM_START, IM_END]

# The same template shape as Qwen2.5-Instruct (system prompt default, tool calls
# left out), written without `{% generation %}` so trainers must mask by prefixes.
CHAT_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if not (message.role == 'system' and loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

_TOPICS = [
    ("reset my password", "Open Settings, choose Security, then Reset password. We email you a link that works for one hour."),
    ("change my email address", "Go to Account, choose Email, enter the new address and confirm it from the message we send."),
    ("cancel my subscription", "Open Billing and choose Cancel plan. You keep access until the end of the paid period."),
    ("get a refund", "Refunds go back to the original card within five to ten business days after we approve them."),
    ("track my order", "Use the tracking number in your shipping email on the carrier's site; updates can take a day."),
    ("update my billing card", "Open Billing, choose Payment method, add the new card and set it as the default."),
    ("export my data", "Open Privacy and choose Export. We prepare a zip file and email a download link."),
    ("turn on two-factor login", "Open Security, choose Two-factor, scan the code with an authenticator app and enter the six digits."),
    ("delete my account", "Open Privacy and choose Delete account. This removes your data after a thirty-day grace period."),
    ("contact a human agent", "Type agent in this chat or call us Monday to Friday, nine to five, and we will connect you."),
]

_PROSE = """
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.
How vexingly quick daft zebras jump! Sphinx of black quartz, judge my vow.
A helpful assistant answers the question that was asked, clearly and briefly, and stops.
Please summarize the following text in one sentence. Translate this sentence into French.
Write a short poem about the sea. What is the capital of France? The capital of France is Paris.
Explain why the sky is blue. Sunlight is scattered by the air, and blue light is scattered the most.
List three fruits: apple, banana, cherry. Count from one to ten: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10.
Numbers like 42, 3.14, 1,000 and 2024-06-11 appear in data. Emails look like name@example.com.
Code appears too: def add(a, b): return a + b. JSON looks like {"answer": "yes", "score": 0.9}.
Thank you for contacting support. I am sorry for the trouble. Is there anything else I can help with?
Your ticket number is 12345. We will get back to you within 24 hours. Have a great day!
Customers ask about shipping, delivery, returns, invoices, passwords, accounts, settings and subscriptions.
My package arrived damaged and the screen is cracked. Could you send a replacement or refund the purchase?
The application crashes every time I upload a photo from my phone, even after reinstalling it twice.
Why was my payment declined yesterday when the balance on my bank account was sufficient?
Our company would like an enterprise plan with single sign-on, audit logs and priority support.
Weather, history, science, mathematics, geography, literature, music, cooking and travel are common subjects.
Water boils at one hundred degrees Celsius at sea level; it freezes at zero degrees.
Photosynthesis turns light, water and carbon dioxide into sugar and oxygen inside green leaves.
Knowledge, wisdom, journey, quality, rhythm, oxygen, jazz, puzzle, vivid, awkward, zigzag, yacht.
"""


def training_corpus() -> list[str]:
    """A fixed corpus: support conversations rendered with the template, plus general prose."""
    lines = [line.strip() for line in _PROSE.strip().splitlines()]
    for topic, answer in _TOPICS:
        question = f"Hi, how do I {topic}?"
        lines += [question, answer, f"{IM_START}user\n{question}{IM_END}\n{IM_START}assistant\n{answer}{IM_END}\n"]
    return lines * 4


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        # The full byte alphabet keeps every string encodable (no unknown token).
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(training_corpus(), trainer=trainer)
    return tokenizer


def write_tokenizer(out: Path) -> int:
    tokenizer = build_tokenizer()
    tokenizer.save(str(out / "tokenizer.json"))
    added = {
        str(tokenizer.token_to_id(token)): {
            "content": token, "lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True,
        }
        for token in SPECIAL_TOKENS
    }
    config = {
        "added_tokens_decoder": added,
        "additional_special_tokens": [IM_START, IM_END],
        "bos_token": None,
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": IM_END,
        "pad_token": END_OF_TEXT,
        "model_max_length": MODEL_MAX_LENGTH,
        "split_special_tokens": False,
        "tokenizer_class": "PreTrainedTokenizerFast",
        "unk_token": None,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    special_map = {"eos_token": IM_END, "pad_token": END_OF_TEXT, "additional_special_tokens": [IM_START, IM_END]}
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n", encoding="utf-8")
    return tokenizer.get_vocab_size()


def write_model(out: Path, vocab_size: int, eos_id: int, pad_id: int) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MODEL_MAX_LENGTH,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        rope_theta=10000.0,
        torch_dtype="float32",
    )
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id, do_sample=False, max_new_tokens=64)
    model.save_pretrained(out, safe_serialization=True)


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent / "tiny-chat"
    out.mkdir(parents=True, exist_ok=True)
    vocab_size = write_tokenizer(out)
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    write_model(out, vocab_size, tokenizer.token_to_id(IM_END), tokenizer.token_to_id(END_OF_TEXT))
    (out / "README.md").write_text(
        "# tiny-chat\n\nA random-weight LlamaForCausalLM (hidden 64, 2 layers) with a ChatML template,\n"
        "generated by `samples/make_tiny_model.py` for offline demos and tests. It knows nothing.\n",
        encoding="utf-8",
    )
    print(f"wrote {out} (vocab {vocab_size})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
