"""The "does it stop" check: greedy generation on held-out prompts, with and without the
adapter, counting the answers that end with the end-of-turn token within the length limit.
A model trained with its end-of-turn token masked never stops; this makes it visible."""

from __future__ import annotations

from dataclasses import dataclass

from curate.train.data import TrainingRow, prompt_text


@dataclass
class StopCheck:
    prompts: int
    max_new_tokens: int
    base_stopped: int
    adapter_stopped: int

    def to_manifest(self) -> dict:
        share = lambda count: round(count / self.prompts, 4) if self.prompts else None  # noqa: E731
        return {
            "prompts": self.prompts,
            "max_new_tokens": self.max_new_tokens,
            "base_stop_share": share(self.base_stopped),
            "adapter_stop_share": share(self.adapter_stopped),
        }

    def line(self) -> str:
        return (
            f"does it stop: {self.adapter_stopped}/{self.prompts} held-out prompts end with the end-of-turn token "
            f"within {self.max_new_tokens} new tokens with the adapter (base model: {self.base_stopped}/{self.prompts})"
        )


def held_out_prompts(conversations: list[TrainingRow], count: int) -> list[list[dict[str, str]]]:
    """The turns before the last assistant turn of the first `count` held-out conversations."""
    prompts = []
    for conversation in conversations[:count]:
        last = max(i for i, m in enumerate(conversation.messages) if m["role"] == "assistant")
        prompts.append(conversation.messages[:last])
    return prompts


def count_stopped(model, tokenizer, prompts: list[list[dict[str, str]]], stop_ids: list[int], max_new_tokens: int, max_length: int, device) -> int:
    import torch

    stopped = 0
    model.eval()
    for messages in prompts:
        ids = tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False, return_tensors="pt")["input_ids"]
        budget = min(max_new_tokens, max_length - ids.shape[1])
        if budget <= 0:
            continue
        with torch.no_grad():
            output = model.generate(
                input_ids=ids.to(device),
                attention_mask=torch.ones_like(ids).to(device),
                max_new_tokens=budget,
                do_sample=False,
                eos_token_id=stop_ids,
                pad_token_id=tokenizer.pad_token_id,
            )
        new_tokens = output[0, ids.shape[1]:].tolist()
        stopped += any(token in stop_ids for token in new_tokens)
    return stopped


def stop_check(model, tokenizer, conversations: list[TrainingRow], end_of_turn_ids: list[int], *, prompts: int, max_new_tokens: int, max_length: int, device) -> StopCheck:
    chosen = held_out_prompts(conversations, prompts)
    stop_ids = sorted(set(end_of_turn_ids))
    with model.disable_adapter():
        base = count_stopped(model, tokenizer, chosen, stop_ids, max_new_tokens, max_length, device)
    adapter = count_stopped(model, tokenizer, chosen, stop_ids, max_new_tokens, max_length, device)
    return StopCheck(len(chosen), max_new_tokens, base, adapter)
