"""Prompts/s of `curate eval`'s batched greedy generation against one-prompt-at-a-time
`model.generate` (what the training stop check does), on the tiny sample model, in the same
process, alternating, repeated; prints the ratio (target: at least 4x on CPU at batch 16).

    python bench/eval.py [--prompts 48] [--batch-size 16] [--max-new-tokens 32] [--repeats 3] [--threads 1]
    python bench/eval.py --model Qwen/Qwen2.5-0.5B-Instruct   # on a GPU, if the model is local

Both sides generate exactly `max-new-tokens` tokens per prompt (no stop token), so they do the
same work and only the batching differs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def one_at_a_time(model, tokenizer, prompts, max_new_tokens: int, device) -> float:
    import torch

    from curate.evaluate.generation import encode_prompts

    encoded = encode_prompts(tokenizer, prompts)
    started = time.perf_counter()
    with torch.inference_mode():
        for ids in encoded:
            tensor = torch.tensor([ids], device=device)
            model.generate(input_ids=tensor, attention_mask=torch.ones_like(tensor), max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                           do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=None)
    return time.perf_counter() - started


def batched(model, tokenizer, prompts, max_new_tokens: int, batch_size: int, device) -> float:
    from curate.evaluate.generation import generate

    # stop_ids of a token that never comes: every prompt gets the full budget, as on the other side.
    run = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size, stop_ids=[len(tokenizer) + 10 ** 6], device=device)
    return run.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "samples" / "tiny-chat"))
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: on a shared 2-core machine two threads spend their time waiting for each other)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    from curate.train.model import load_base_model, load_tokenizer, pick_device, quiet_libraries

    quiet_libraries()
    device = pick_device()
    tokenizer = load_tokenizer(args.model)
    model = load_base_model(args.model, device, quantize=False).eval()
    rows = [json.loads(line) for line in (ROOT / "samples" / "train-demo.jsonl").read_text().splitlines()]
    prompts = [row["messages"][:-1] for row in rows[: args.prompts]]
    print(f"{args.model} on {device.describe()}, {torch.get_num_threads()} CPU threads: {len(prompts)} prompts, {args.max_new_tokens} new tokens each, batch {args.batch_size}")
    batched(model, tokenizer, prompts[:4], 4, args.batch_size, device.torch_device)  # warm up
    single_times, batch_times = [], []
    for repeat in range(args.repeats):
        single_times.append(one_at_a_time(model, tokenizer, prompts, args.max_new_tokens, device.torch_device))
        batch_times.append(batched(model, tokenizer, prompts, args.max_new_tokens, args.batch_size, device.torch_device))
        print(f"  run {repeat + 1}: one at a time {len(prompts) / single_times[-1]:.1f} prompts/s, batched {len(prompts) / batch_times[-1]:.1f} prompts/s")
    single, batch = statistics.median(single_times), statistics.median(batch_times)
    print(f"one prompt at a time: {len(prompts) / single:.1f} prompts/s ({len(prompts) * args.max_new_tokens / single:,.0f} tokens/s)")
    print(f"batched (batch {args.batch_size}): {len(prompts) / batch:.1f} prompts/s ({len(prompts) * args.max_new_tokens / batch:,.0f} tokens/s)")
    print(f"ratio: {single / batch:.2f}x (target >= 4x)")


if __name__ == "__main__":
    main()
