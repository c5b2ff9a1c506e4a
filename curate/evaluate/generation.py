"""Batched greedy generation with transformers: prompts sorted by length, left padding, the
KV cache, a new-token budget, stop on the end-of-turn token. `vllm_generate` is the same
contract on vLLM, for a GPU with vLLM installed.

One call of `model.generate` per batch instead of per prompt: on a CPU the per-call overhead
and the small matrix products dominate; on a GPU the batch fills the device.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from curate.train.data import prompt_text, special_token_strings

#: End-of-turn tokens of common chat templates (ChatML, Llama 3, Gemma, Phi, Mistral).
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>")


@dataclass
class Generation:
    """One output: its text (up to the stop token, special tokens dropped), token counts and
    whether it ended with an end-of-turn token within the budget."""

    text: str
    prompt_tokens: int
    new_tokens: int
    stopped: bool


@dataclass
class GenerationRun:
    outputs: list[Generation]
    seconds: float

    @property
    def prompts_per_s(self) -> float:
        return len(self.outputs) / self.seconds if self.seconds else 0.0

    @property
    def tokens_per_s(self) -> float:
        return sum(o.new_tokens for o in self.outputs) / self.seconds if self.seconds else 0.0


def stop_token_ids(tokenizer: Any) -> list[int]:
    """End-of-turn ids: the tokenizer's eos and the end-of-turn tokens chat templates use."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    specials = set(special_token_strings(tokenizer))
    vocab = tokenizer.get_vocab()
    ids.update(vocab[token] for token in END_OF_TURN_TOKENS if token in specials and token in vocab)
    return sorted(ids)


def encode_prompts(tokenizer: Any, prompts: list[list[dict[str, str]]]) -> list[list[int]]:
    """Token ids of each rendered generation prompt (one batched tokenizer call)."""
    texts = [prompt_text(tokenizer, messages) for messages in prompts]
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def split_output(tokens: list[int], stop_ids: set[int]) -> tuple[list[int], bool]:
    """The generated tokens up to (not including) the first stop token, and whether one came."""
    for position, token in enumerate(tokens):
        if token in stop_ids:
            return tokens[:position], True
    return tokens, False


class Progress:
    """A rich bar with prompts/s and ETA on a terminal; nothing otherwise."""

    def __init__(self, label: str, total: int, enabled: bool, out=None):
        self.label, self.total = label, total
        self.out = out or sys.stderr
        self.enabled = enabled and self.out.isatty()
        self.bar = None

    def __enter__(self) -> Callable[[int], None]:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TaskProgressColumn, TextColumn, TimeRemainingColumn

            self.bar = Bar(TextColumn(f"[bold]{self.label}"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                           TextColumn("{task.fields[rate]}"), TimeRemainingColumn(), console=Console(file=self.out), transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total, rate="")
            self.started = time.perf_counter()
        return self.advance

    def advance(self, done: int) -> None:
        if self.bar is not None:
            elapsed = time.perf_counter() - self.started
            self.bar.update(self.task, completed=done, rate=f"{done / elapsed:.1f} prompts/s" if elapsed else "")

    def __exit__(self, *exc_info) -> bool:
        if self.bar is not None:
            self.bar.stop()
        return False


def generate(model: Any, tokenizer: Any, prompts: list[list[dict[str, str]]], *, max_new_tokens: int, batch_size: int = 16,
             stop_ids: list[int] | None = None, device: Any = None, on_progress: Callable[[int], None] | None = None) -> GenerationRun:
    """Greedy outputs for every prompt, in the order given."""
    import torch

    stop_ids = stop_ids or stop_token_ids(tokenizer)
    stop_set = set(stop_ids)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stop_ids[0]
    device = device or next(model.parameters()).device
    encoded = encode_prompts(tokenizer, prompts)
    # Longest first: batches of similar lengths waste little padding, and the slowest batch
    # shows up in the ETA at once.
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    outputs: list[Generation | None] = [None] * len(encoded)
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    done = 0
    with torch.inference_mode():
        for begin in range(0, len(order), batch_size):
            chosen = order[begin : begin + batch_size]
            longest = max(len(encoded[i]) for i in chosen)
            input_ids = torch.full((len(chosen), longest), pad_id, dtype=torch.long)
            attention = torch.zeros((len(chosen), longest), dtype=torch.long)
            for row, index in enumerate(chosen):
                ids = encoded[index]
                input_ids[row, longest - len(ids) :] = torch.tensor(ids, dtype=torch.long)
                attention[row, longest - len(ids) :] = 1
            generated = model.generate(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), max_new_tokens=max_new_tokens,
                do_sample=False, num_beams=1, eos_token_id=stop_ids, pad_token_id=pad_id, use_cache=True,
                temperature=None, top_p=None, top_k=None,
            )
            for row, index in enumerate(chosen):
                tokens, stopped = split_output(generated[row, longest:].tolist(), stop_set)
                text = tokenizer.decode(tokens, skip_special_tokens=True)
                outputs[index] = Generation(text, len(encoded[index]), len(tokens) + stopped, stopped)
            done += len(chosen)
            if on_progress:
                on_progress(done)
    model.train(was_training)
    return GenerationRun([o for o in outputs if o is not None], time.perf_counter() - started)


class EngineUnavailable(Exception):
    """The requested generation engine cannot run here; one line saying why."""


def check_vllm() -> None:
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise EngineUnavailable("--engine vllm: vLLM is not installed (pip install vllm, on a machine with a CUDA GPU); the default engine is transformers") from None
    import torch

    if not torch.cuda.is_available():
        raise EngineUnavailable("--engine vllm: no CUDA GPU here; vLLM needs one (drop --engine for batched transformers generation)")


class VllmEngine:
    """Greedy outputs with vLLM, one engine per model folder, serving LoRA adapters directly
    (`enable_lora`). The same contract as `generate`. Written against vLLM's offline API;
    not exercised by the CPU test suite."""

    def __init__(self, max_lora_rank: int = 64):
        check_vllm()
        self.engines: dict[str, Any] = {}
        self.adapters: dict[str, int] = {}
        self.max_lora_rank = max_lora_rank

    def generate(self, model: str, adapter: str | None, tokenizer: Any, prompts: list[list[dict[str, str]]], *, max_new_tokens: int,
                 on_progress: Callable[[int], None] | None = None) -> GenerationRun:
        from vllm import LLM, SamplingParams
        from vllm.lora.request import LoRARequest

        if model not in self.engines:
            self.engines[model] = LLM(model=model, enable_lora=True, max_lora_rank=self.max_lora_rank)
        stop_ids = stop_token_ids(tokenizer)
        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens, stop_token_ids=stop_ids, skip_special_tokens=True)
        request = None
        if adapter:
            self.adapters.setdefault(adapter, len(self.adapters) + 1)
            request = LoRARequest(f"adapter-{self.adapters[adapter]}", self.adapters[adapter], adapter)
        encoded = encode_prompts(tokenizer, prompts)
        started = time.perf_counter()
        results = self.engines[model].generate([{"prompt_token_ids": ids} for ids in encoded], params, lora_request=request, use_tqdm=False)
        seconds = time.perf_counter() - started
        if on_progress:
            on_progress(len(encoded))
        outputs = []
        for ids, result in zip(encoded, results):
            completion = result.outputs[0]
            stopped = completion.finish_reason == "stop"
            outputs.append(Generation(completion.text, len(ids), len(completion.token_ids), stopped))
        return GenerationRun(outputs, seconds)
