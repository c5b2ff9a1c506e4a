"""Benchmark `curate train` against TRL's SFTTrainer, fairly: the same model, data, LoRA,
4-bit NF4 base, gradient checkpointing, examples per micro-batch, accumulation and steps;
TRL in its strongest setup for the machine (length-grouped sampling, and padding-free
batches as a second contender); every trainer in its own process, alternating over rounds;
torch threads pinned; medians reported.

    .venv/bin/python bench/train.py                          # tiny, ~50M and ~0.5B, 2 rounds
    .venv/bin/python bench/train.py --sizes 50m,0.5b --trainers curate,trl-grouped \
        --steps 3 --warmup-steps 1 --batch-size 2 --grad-accum 1       # larger sizes on a busy 2-core CPU
    .venv/bin/python bench/train.py --sizes 0.5b --rows 2000 --steps 40 --batch-size 8   # on a GPU

Models are built from a config with random weights (nothing is downloaded) and take the
tiny sample model's tokenizer (its ids are a subset of every vocabulary; compute per token
is what is measured). Figures count real (non-padding) tokens over the steps after
--warmup-steps: CPU-s per 1k tokens (process CPU time; steadier than wall time on a busy
machine), tokens/s (wall), and peak memory during training (`torch.cuda.max_memory_allocated`
on a GPU; on a CPU the process's peak RSS from the start of training, after the model is
loaded, freed memory handed back, /proc/self/clear_refs resetting it). On a shared machine
wall time swings with the load; CPU-s per 1k tokens is the figure to compare. TRL gets a copy of the template with
`{% generation %}` markers so that it, too, computes the loss on assistant tokens only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
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

#: Model sizes built from a config with random weights (nothing can be downloaded).
SIZES = {
    # samples/tiny-chat's shape: 0.1M parameters.
    "tiny": dict(model_type="llama", hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1024, max_position_embeddings=2048, tie_word_embeddings=True),
    # ~48M: a Llama of 10 layers, hidden 512, vocabulary 32k.
    "50m": dict(model_type="llama", hidden_size=512, intermediate_size=1536, num_hidden_layers=10, num_attention_heads=8,
                num_key_value_heads=4, vocab_size=32000, max_position_embeddings=4096, tie_word_embeddings=True),
    # Qwen2-0.5B's shape: ~494M.
    "0.5b": dict(model_type="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                 num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True),
}

#: The contenders: curate with its defaults, TRL length-grouped (padded) and TRL padding-free.
TRAINERS = ("curate", "trl-grouped", "trl-padding-free")


def build_model(size: str, folder: Path) -> Path:
    """A random-weight model of `size`, with the tiny model's tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    settings = dict(SIZES[size])
    config = AutoConfig.for_model(settings.pop("model_type"), **settings, eos_token_id=2, pad_token_id=0, bos_token_id=None)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    for tokenizer_file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (TINY / tokenizer_file).is_file():
            shutil.copy(TINY / tokenizer_file, folder / tokenizer_file)
    return folder


def make_data(source: Path, rows: int, folder: Path) -> Path:
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    out = folder / "bench-data.jsonl"
    out.write_text("\n".join(lines[i % len(lines)] for i in range(rows)) + "\n", encoding="utf-8")
    return out


# ---------------------------------------------------------------- measuring (inside a worker)
class Meter:
    """Wall and CPU clocks at each optimizer step, and the peak memory of training."""

    def __init__(self):
        import torch

        self.walls: list[float] = []
        self.cpus: list[float] = []
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        else:
            release_freed_memory()
            try:
                Path("/proc/self/clear_refs").write_text("5")  # reset the peak RSS (VmHWM) to the current RSS
            except OSError:
                pass
        self.start_wall, self.start_cpu = time.perf_counter(), time.process_time()

    def step(self) -> None:
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.walls.append(time.perf_counter())
        self.cpus.append(time.process_time())

    def result(self, step_tokens: list[int], warmup: int) -> dict:
        tokens = sum(step_tokens[warmup:])
        wall = self.walls[-1] - (self.walls[warmup - 1] if warmup else self.start_wall)
        cpu = self.cpus[-1] - (self.cpus[warmup - 1] if warmup else self.start_cpu)
        memory, kind = peak_memory()
        return {"tokens": tokens, "tokens_per_s": tokens / wall, "cpu_s_per_1k": 1000 * cpu / tokens, "peak_memory": memory, "memory_kind": kind}


def release_freed_memory() -> None:
    """Hand memory freed during set-up (model loading, quantization) back to the OS, in every
    worker alike, so the peak RSS of training is training's own."""
    import gc

    from curate.io import release_freed_memory as trim_heap

    gc.collect()
    trim_heap()


def peak_memory() -> tuple[int, str]:
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated()), "GPU max allocated"
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024, "peak RSS during training"
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS"


# ---------------------------------------------------------------- workers (one process each)
def worker_curate(args: argparse.Namespace) -> dict:
    import io

    from curate.train.config import TrainConfig
    from curate.train.recipe import Reporter, Run

    config = TrainConfig(
        model=args.model, max_steps=args.steps, batch_size=args.batch_size, gradient_accumulation=args.grad_accum,
        max_seq_length=args.max_seq_length, learning_rate=2e-4, lora_rank=args.lora_rank, lora_alpha=2 * args.lora_rank,
        lora_dropout=0.05, eval_fraction=0.0, save_every=0, stop_check_prompts=0, seed=0,
    )
    meter: Meter | None = None
    run = Run(config, args.data, Path(args.workdir) / "curate", gate=None, resume=False,
              reporter=Reporter(progress=False, out=io.StringIO()), on_step=lambda _step: meter.step())
    run.setup()
    meter = Meter()
    run.train()
    steps = [m for m in run.state.metrics if "loss" in m]
    return {**meter.result([m["tokens"] for m in steps], args.warmup_steps), "batching": run.batching, "device": run.device.describe()}


def worker_trl(args: argparse.Namespace, padding_free: bool) -> dict:
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
    step_tokens: list[int] = []
    state: dict = {}

    class CountingCollator:
        def __init__(self, inner):
            self.inner = inner

        def __call__(self, features):
            batch = self.inner(features)
            mask = batch.get("attention_mask")
            seen["tokens"] += int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())
            return batch

    class Timer(TrainerCallback):
        def on_train_begin(self, *_, **__):
            state["meter"] = Meter()
            state["last"] = 0

        def on_step_end(self, *_, **__):
            state["meter"].step()
            step_tokens.append(seen["tokens"] - state["last"])
            state["last"] = seen["tokens"]

    config = SFTConfig(
        output_dir=str(Path(args.workdir) / "trl"), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
        gradient_accumulation_steps=args.grad_accum, learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=0.03,
        logging_steps=10**6, save_strategy="no", report_to="none", bf16=device.bf16, gradient_checkpointing=True,
        gradient_checkpointing_kwargs={"use_reentrant": False}, assistant_only_loss=True,
        # Padding-free batches do not truncate (TRL refuses a max_length there); the rows are far shorter.
        max_length=None if padding_free else args.max_seq_length,
        train_sampling_strategy="group_by_length", padding_free=padding_free,
        dataset_num_proc=1, seed=0, use_cpu=device.type == "cpu", disable_tqdm=True, dataloader_num_workers=0,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=lora_config(args.lora_rank, 2 * args.lora_rank, 0.05, "all-linear"), callbacks=[Timer()])
    trainer.data_collator = CountingCollator(trainer.data_collator)
    trainer.train()
    batching = "padding-free, length-grouped sampler" if padding_free else "padded to the longest, length-grouped sampler"
    return {**state["meter"].result(step_tokens, args.warmup_steps), "batching": batching, "device": device.describe()}


WORKERS = {
    "curate": worker_curate,
    "trl-grouped": lambda args: worker_trl(args, padding_free=False),
    "trl-padding-free": lambda args: worker_trl(args, padding_free=True),
}


# ---------------------------------------------------------------- driver
def run_worker(name: str, args: argparse.Namespace, model: str, data: str) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--model", model, "--data", data, "--workdir", args.workdir,
               "--steps", str(args.steps), "--warmup-steps", str(args.warmup_steps), "--batch-size", str(args.batch_size),
               "--grad-accum", str(args.grad_accum), "--max-seq-length", str(args.max_seq_length), "--lora-rank", str(args.lora_rank),
               "--threads", str(args.threads)]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_size(size: str, args: argparse.Namespace, data: str) -> dict[str, list[dict]]:
    """Every trainer once per round, the order reversed every other round."""
    model = str(build_model(size, Path(args.workdir) / size))
    results: dict[str, list[dict]] = {name: [] for name in args.trainers}
    for round_index in range(args.rounds):
        order = args.trainers if round_index % 2 == 0 else list(reversed(args.trainers))
        for name in order:
            results[name].append(run_worker(name, args, model, data))
            line = results[name][-1]
            print(f"  {size} round {round_index + 1}: {name:18} {line['tokens_per_s']:>9,.0f} tokens/s {line['cpu_s_per_1k']:>8.3f} CPU-s/1k tokens "
                  f"{line['peak_memory'] / 2**20:>8,.0f} MiB", flush=True)
        shutil.rmtree(Path(args.workdir) / "curate", ignore_errors=True)
    shutil.rmtree(model, ignore_errors=True)
    return results


def report(size: str, results: dict[str, list[dict]]) -> None:
    median = lambda runs, key: statistics.median(run[key] for run in runs)  # noqa: E731
    trl = [name for name in results if name.startswith("trl")]
    best = max(trl, key=lambda name: median(results[name], "tokens_per_s")) if trl else None
    print(f"{size}: medians of {len(next(iter(results.values())))} rounds; baseline = the faster TRL setup ({best})")
    print(f"  {'trainer':18} {'tokens/s':>10} {'x TRL':>7} {'CPU-s/1k tok':>13} {'TRL / this':>11} {'peak memory':>12} {'x TRL':>7}")
    for name, runs in results.items():
        speed, cpu, memory = median(runs, "tokens_per_s"), median(runs, "cpu_s_per_1k"), median(runs, "peak_memory")
        ratios = ("", "", "")
        if best:
            ratios = (f"{speed / median(results[best], 'tokens_per_s'):.2f}x", f"{median(results[best], 'cpu_s_per_1k') / cpu:.2f}x",
                      f"{memory / median(results[best], 'peak_memory'):.2f}x")
        print(f"  {name:18} {speed:>10,.0f} {ratios[0]:>7} {cpu:>13.3f} {ratios[1]:>11} {memory / 2**20:>8,.0f} MiB {ratios[2]:>7}")
    for name, runs in results.items():
        print(f"  {name}: {runs[0]['batching']}")
    print(f"  device: {next(iter(results.values()))[0]['device']}; memory: {next(iter(results.values()))[0]['memory_kind']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,50m,0.5b", help="comma-separated: " + ", ".join(SIZES))
    parser.add_argument("--trainers", default=",".join(TRAINERS), help="comma-separated: " + ", ".join(TRAINERS))
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--rows", type=int, default=240)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup-steps", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--max-seq-length", type=int, default=2048)
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in every worker (pinned, so runs compare)")
    parser.add_argument("--model", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=sorted(WORKERS), default=None, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        import torch

        torch.set_num_threads(args.threads)
        print(json.dumps(WORKERS[args.worker](args)))
        return

    args.trainers = [name.strip() for name in args.trainers.split(",") if name.strip()]
    sizes = [size.strip() for size in args.sizes.split(",") if size.strip()]
    with tempfile.TemporaryDirectory(prefix="curate-bench-") as workdir:
        args.workdir = workdir
        data = str(make_data(Path(args.data), args.rows, Path(workdir)))
        print(f"{args.rows} rows of {Path(args.data).name}; {args.steps} steps (first {args.warmup_steps} not timed), "
              f"micro-batch {args.batch_size} x {args.grad_accum} accumulation, LoRA r={args.lora_rank} on all linear layers, "
              f"4-bit NF4 base, gradient checkpointing, {args.threads} torch thread(s); {args.rounds} rounds, order alternating", flush=True)
        for size in sizes:
            report(size, bench_size(size, args, data))


if __name__ == "__main__":
    main()
