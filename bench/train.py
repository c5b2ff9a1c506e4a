"""Benchmark `curate train` against TRL's SFTTrainer: the same model, data, LoRA and
4-bit settings, measured in the same run, each trainer in its own process (so peak
memory is its own).

    .venv/bin/python bench/train.py                          # CPU: the tiny sample model
    .venv/bin/python bench/train.py --build qwen2-0.5b \\
        --rows 2000 --steps 40 --batch-size 8 --grad-accum 2  # GPU: a random-weight ~0.5B Qwen2

Tokens/s counts real (non-padding) tokens over the steps after --warmup-steps.
Peak memory is `torch.cuda.max_memory_allocated` on a GPU, peak RSS on a CPU.
TRL gets a copy of the template with `{% generation %}` markers so that it, too,
computes the loss on assistant tokens only (`assistant_only_loss=True`).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TINY = ROOT / "samples" / "tiny-chat"
DEFAULT_DATA = ROOT / "samples" / "clean-chat.jsonl"

# ChatML as in samples/tiny-chat, with generation markers around each assistant answer.
CHATML_WITH_MARKERS = (
    "{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if not (message.role == 'system' and loop.first) %}"
    "{%- if message.role == 'assistant' %}{{- '<|im_start|>assistant\\n' }}{% generation %}{{- message.content + '<|im_end|>' }}{% endgeneration %}{{- '\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

#: Architectures built from a config with random weights (nothing can be downloaded).
BUILDS = {
    "qwen2-0.5b": dict(
        model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True,
    ),
    "llama-0.5b": dict(
        model_type="llama", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        num_key_value_heads=4, vocab_size=128256, max_position_embeddings=8192, tie_word_embeddings=True,
    ),
}


def build_model(name: str, folder: Path) -> Path:
    """A random-weight model of a real architecture, with the tiny model's tokenizer (its
    ids are a subset of the vocabulary; compute per token is what matters here)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = dict(BUILDS[name])
    config = AutoConfig.for_model(settings.pop("model_type"), **settings, eos_token_id=2, pad_token_id=0, bos_token_id=None)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    for tokenizer_file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(TINY / tokenizer_file, folder / tokenizer_file)
    return folder


def make_data(source: Path, rows: int, folder: Path) -> Path:
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = folder / "bench-data.jsonl"
    out.write_text("\n".join(lines[i % len(lines)] for i in range(rows)) + "\n", encoding="utf-8")
    return out


def peak_memory() -> tuple[int, str]:
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated()), "GPU max allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS"


def rate(step_ends: list[float], step_tokens: list[int], warmup: int) -> float:
    """Tokens per second over the steps after the warm-up steps."""
    return sum(step_tokens[warmup:]) / (step_ends[-1] - step_ends[warmup - 1]) if warmup else sum(step_tokens) / step_ends[-1]


# ---------------------------------------------------------------- workers (one process each)
def worker_curate(args: argparse.Namespace) -> dict:
    import io

    import torch

    from curate.train.config import TrainConfig
    from curate.train.recipe import Reporter, Run

    config = TrainConfig(
        model=args.model, max_steps=args.steps, batch_size=args.batch_size, gradient_accumulation=args.grad_accum,
        max_seq_length=args.max_seq_length, learning_rate=2e-4, lora_rank=args.lora_rank, lora_alpha=2 * args.lora_rank,
        eval_fraction=0.0, save_every=0, stop_check_prompts=0, packing=PACKING[args.packing], seed=0,
    )
    run = Run(config, args.data, Path(args.workdir) / f"curate-{args.packing}", gate=None, resume=False,
              reporter=Reporter(progress=False, out=io.StringIO()))
    run.setup()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    run.train()
    steps = [m for m in run.metrics if "loss" in m]
    ends, elapsed = [], 0.0
    for record in steps:
        elapsed += record["seconds"]
        ends.append(elapsed)
    memory, kind = peak_memory()
    mfus = [m["mfu"] for m in steps[args.warmup_steps:] if m.get("mfu") is not None]
    return {
        "tokens_per_s": rate(ends, [m["tokens"] for m in steps], args.warmup_steps),
        "peak_memory": memory, "memory_kind": kind, "final_loss": steps[-1]["loss"],
        "mfu": sum(mfus) / len(mfus) if mfus else None, "batching": run.batching,
        "device": run.device.describe(),
    }


def worker_trl(args: argparse.Namespace) -> dict:
    import logging

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from curate.train.data import read_conversations
    from curate.train.model import lora_config, pick_device, quantization_config, quiet_libraries

    quiet_libraries()
    logging.getLogger("transformers").setLevel(logging.ERROR)
    device = pick_device()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    tokenizer.chat_template = CHATML_WITH_MARKERS
    conversations, _ = read_conversations(args.data)
    dataset = Dataset.from_list([{"messages": c.messages} for c in conversations])
    model = AutoModelForCausalLM.from_pretrained(args.model, quantization_config=quantization_config(device.compute_dtype),
                                                 dtype=device.compute_dtype, device_map={"": device.torch_device})
    seen = {"tokens": 0}

    class CountingCollator:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, features):
            batch = self.inner(features)
            mask = batch.get("attention_mask")
            seen["tokens"] += int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
            return batch

    ends, tokens = [], []

    class Timer(TrainerCallback):
        def on_train_begin(self, *_, **__):
            self.start = time.perf_counter()
            self.last_tokens = 0

        def on_step_end(self, *_, **__):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            ends.append(time.perf_counter() - self.start)
            tokens.append(seen["tokens"] - self.last_tokens)
            self.last_tokens = seen["tokens"]

    config = SFTConfig(
        output_dir=str(Path(args.workdir) / "trl"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum, learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=0.03,
        logging_steps=10**6, save_strategy="no", report_to="none", bf16=device.bf16, gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False}, max_length=args.max_seq_length, assistant_only_loss=True,
        dataset_num_proc=1, seed=0, use_cpu=device.type == "cpu", disable_tqdm=True,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(args.lora_rank, 2 * args.lora_rank, 0.05, "all-linear"), callbacks=[Timer()])
    trainer.data_collator = CountingCollator(trainer.data_collator)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    memory, kind = peak_memory()
    return {"tokens_per_s": rate(ends, tokens, args.warmup_steps), "peak_memory": memory, "memory_kind": kind,
            "final_loss": None, "mfu": None, "batching": "padded to the longest in each batch", "device": device.describe()}


WORKERS = {"curate": worker_curate, "trl": worker_trl}
PACKING = {"auto": "auto", "on": True, "off": False}


# ---------------------------------------------------------------- driver
def run_worker(name: str, args: argparse.Namespace, packing: str = "auto") -> dict:
    command = [sys.executable, __file__, "--worker", name, "--model", args.model, "--data", args.data, "--workdir", args.workdir,
               "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps), "--batch-size", str(args.batch_size),
               "--grad-accum", str(args.grad_accum), "--max-seq-length", str(args.max_seq_length), "--lora-rank", str(args.lora_rank),
               "--packing", packing]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(TINY))
    parser.add_argument("--build", choices=sorted(BUILDS), default=None, help="build a random-weight model of this architecture and use it")
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--rows", type=int, default=400)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--warmup-steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=2048)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--packing", choices=sorted(PACKING), default="auto", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=sorted(WORKERS), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return

    with tempfile.TemporaryDirectory(prefix="curate-bench-") as workdir:
        args.workdir = workdir
        if args.build:
            args.model = str(build_model(args.build, Path(workdir) / args.build))
        source = Path(args.data)
        args.data = str(make_data(source, args.rows, Path(workdir)))
        print(f"model {args.build or args.model}; {args.rows} rows of {source.name}; {args.steps} steps "
              f"(first {args.warmup_steps} not timed), micro-batch {args.batch_size} x {args.grad_accum} accumulation, "
              f"LoRA r={args.lora_rank} on all linear layers, 4-bit NF4 base")
        results = {
            "TRL SFTTrainer": run_worker("trl", args),
            "curate (default)": run_worker("curate", args, "auto"),
            "curate (packing = true)": run_worker("curate", args, "on"),
        }
    baseline = results["TRL SFTTrainer"]
    print(f"device: {baseline['device']}")
    print(f"{'trainer':34} {'tokens/s':>10} {'x TRL':>7} {'peak memory':>12} {'x TRL':>7} {'MFU':>7}")
    for name, result in results.items():
        mfu = f"{result['mfu']:.1%}" if result.get("mfu") is not None else "n/a"
        print(f"{name:34} {result['tokens_per_s']:>10,.0f} {result['tokens_per_s'] / baseline['tokens_per_s']:>6.2f}x "
              f"{result['peak_memory'] / 2**20:>8,.0f} MiB {result['peak_memory'] / baseline['peak_memory']:>6.2f}x {mfu:>7}")
    print(f"(memory: {baseline['memory_kind']})")
    for name, result in results.items():
        print(f"{name}: {result['batching']}")


if __name__ == "__main__":
    main()
