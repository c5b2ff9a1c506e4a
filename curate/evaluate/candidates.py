"""Candidates: which model and which prompt each one answers with.

    base      the base model with the prompt as written in the data, or `--system-prompt FILE`
    few-shot  the base model with K training examples (never eval rows) as prior turns
    adapter   the base model with a run's LoRA adapter, on the prompt used in training
    merged    an exported model folder (`curate export --merge`)

Every candidate answers the same prompts. The base and its adapters share one loaded model:
peft switches adapters, and `disable_adapter()` gives the base back without a second copy.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from curate.evaluate.items import EvalError, EvalItem
from curate.train.data import TrainingRow

KINDS = ("base", "few-shot", "adapter", "merged")
DEFAULT_SHOTS = 3


@dataclass
class Candidate:
    name: str
    kind: str
    #: The model folder (base or merged) and the adapter folder, as given.
    model: str
    adapter: str | None = None
    system_prompt: str | None = None
    shots: list[list[dict[str, str]]] = field(default_factory=list)
    #: Where each few-shot example came from (`path:line`).
    shot_sources: list[str] = field(default_factory=list)

    def prompt(self, item: EvalItem) -> list[dict[str, str]]:
        """The turns this candidate is given for the item."""
        messages = list(item.messages)
        system = [m for m in messages[:1] if m["role"] == "system"]
        rest = messages[len(system) :]
        if self.system_prompt is not None:
            system = [{"role": "system", "content": self.system_prompt}]
        return [*system, *(turn for shot in self.shots for turn in shot), *rest]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "model": self.model, "adapter": self.adapter,
                "system_prompt": self.system_prompt, "few_shot": self.shot_sources}


def shot_turns(conversation: TrainingRow) -> list[dict[str, str]]:
    """An example's turns without its system prompt, through its last assistant turn."""
    messages = conversation.messages
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return [m for m in messages[: last + 1] if m["role"] != "system"]


def few_shot_pool(train: list[TrainingRow], items: list[EvalItem]) -> list[TrainingRow]:
    """Training conversations that may serve as examples: not an eval row (same file and line)
    and not asking an eval prompt (LK001's normalized comparison of the user text)."""
    import polars as pl

    from curate.rules.leakage import text_keys

    eval_rows = {(item.path, item.line) for item in items}
    eval_keys = set(text_keys(pl.Series([item.user_text for item in items], dtype=pl.String)).tolist()) if items else set()
    candidates = [c for c in train if (c.path, c.line) not in eval_rows]
    if not candidates:
        return []
    user_texts = ["\n".join(m["content"] for m in c.messages if m["role"] == "user") for c in candidates]
    keys = text_keys(pl.Series(user_texts, dtype=pl.String)).tolist()
    return [c for c, key in zip(candidates, keys) if key not in eval_keys]


def pick_shots(train: list[TrainingRow], items: list[EvalItem], count: int, seed: int) -> list[TrainingRow]:
    """`count` examples drawn with `seed` (the same every run), in training-file order."""
    pool = few_shot_pool(train, items)
    if not pool:
        raise EvalError("few-shot: no training rows to draw examples from (every one is an eval row); pass --train FILE or drop few-shot from --candidates")
    chosen = np.random.default_rng(seed).choice(len(pool), size=min(count, len(pool)), replace=False)
    return [pool[i] for i in sorted(chosen.tolist())]


def build_candidates(kinds: list[str], *, base: str, adapters: dict[str, str], merged: list[str], train: list[TrainingRow],
                     items: list[EvalItem], system_prompt: str | None, shots: int, seed: int) -> list[Candidate]:
    """The candidates asked for, in a fixed order: base, few-shot, each adapter, each merged model."""
    chosen: list[Candidate] = []
    if "base" in kinds:
        chosen.append(Candidate("base", "base", base, system_prompt=system_prompt))
    if "few-shot" in kinds:
        examples = pick_shots(train, items, shots, seed)
        chosen.append(Candidate("few-shot", "few-shot", base, system_prompt=system_prompt,
                                shots=[shot_turns(c) for c in examples], shot_sources=[c.where for c in examples]))
    if "adapter" in kinds:
        for name, path in adapters.items():
            chosen.append(Candidate(name, "adapter", base, adapter=path))
    if "merged" in kinds:
        for path in merged:
            chosen.append(Candidate(f"merged:{Path(path).name}" if len(merged) > 1 else "merged", "merged", path))
    return chosen


class Models:
    """The loaded models: one base (with every adapter attached, named by candidate) and each
    merged folder; `use(candidate)` yields (model, tokenizer) with the right adapter active."""

    def __init__(self, device: Any):
        self.device = device  # a DeviceInfo (curate.train.model)
        self.loaded: dict[str, Any] = {}
        self.tokenizers: dict[str, Any] = {}
        #: candidate name -> peft adapter name
        self.attached: dict[str, str] = {}
        #: A VllmEngine when generating with vLLM: then only tokenizers are loaded here.
        self.vllm: Any = None

    @property
    def device_torch(self) -> Any:
        return self.device.torch_device

    @classmethod
    def of(cls, model: Any, tokenizer: Any, device: Any, adapters: dict[str, str]) -> Models:
        """Models around one already-loaded peft model, as `curate train` has it in memory."""
        models = cls(device)
        models.loaded["base"] = model
        models.tokenizers["base"] = tokenizer
        models.attached = dict(adapters)
        return models

    def load(self, candidates: list[Candidate]) -> None:
        from curate.train.model import ModelLoadError, load_base_model, load_tokenizer, quiet_libraries

        quiet_libraries()
        if self.vllm is not None:
            self.load_tokenizers(candidates)
            return
        try:
            for candidate in candidates:
                if candidate.kind == "merged":
                    if candidate.model not in self.loaded:
                        self.loaded[candidate.model] = load_base_model(candidate.model, self.device, quantize=False).eval()
                        self.tokenizers[candidate.model] = load_tokenizer(candidate.model)
                    continue
                if "base" not in self.loaded:
                    self.loaded["base"] = load_base_model(candidate.model, self.device, quantize=False).eval()
                    self.tokenizers["base"] = load_tokenizer(candidate.model)
                if candidate.adapter:
                    self._attach(candidate)
        except ModelLoadError as exc:
            raise EvalError(str(exc)) from None

    def load_tokenizers(self, candidates: list[Candidate]) -> None:
        from curate.train.model import ModelLoadError, load_tokenizer

        try:
            for candidate in candidates:
                key = candidate.model if candidate.kind == "merged" else "base"
                if key not in self.tokenizers:
                    self.tokenizers[key] = load_tokenizer(candidate.model)
                if candidate.adapter and (Path(candidate.adapter) / "tokenizer_config.json").is_file():
                    self.tokenizers[candidate.name] = load_tokenizer(candidate.adapter)
        except ModelLoadError as exc:
            raise EvalError(str(exc)) from None

    def _attach(self, candidate: Candidate) -> None:
        from peft import PeftModel

        from curate.train.model import load_tokenizer

        name = f"a{len(self.attached)}"
        try:
            if isinstance(self.loaded["base"], PeftModel):
                self.loaded["base"].load_adapter(candidate.adapter, adapter_name=name)
            else:
                self.loaded["base"] = PeftModel.from_pretrained(self.loaded["base"], candidate.adapter, adapter_name=name).eval()
        except Exception as exc:  # a foreign or broken adapter folder: one line, no traceback
            raise EvalError(f"cannot load the adapter in {candidate.adapter}: {(str(exc).strip().splitlines() or [type(exc).__name__])[0]}") from None
        self.attached[candidate.name] = name
        # The run's tokenizer carries the exact chat template the adapter was trained with.
        if (Path(candidate.adapter) / "tokenizer_config.json").is_file():
            self.tokenizers[candidate.name] = load_tokenizer(candidate.adapter)

    @contextlib.contextmanager
    def use(self, candidate: Candidate) -> Iterator[tuple[Any, Any]]:
        if self.vllm is not None:  # vLLM holds the weights; only the tokenizer renders prompts here
            key = candidate.model if candidate.kind == "merged" else "base"
            yield None, self.tokenizers.get(candidate.name, self.tokenizers[key])
            return
        if candidate.kind == "merged":
            yield self.loaded[candidate.model], self.tokenizers[candidate.model]
            return
        model = self.loaded["base"]
        tokenizer = self.tokenizers.get(candidate.name, self.tokenizers["base"])
        if candidate.kind == "adapter":
            model.set_adapter(self.attached[candidate.name])
            yield model, tokenizer
        elif hasattr(model, "disable_adapter"):
            with model.disable_adapter():
                yield model, tokenizer
        else:
            yield model, tokenizer
