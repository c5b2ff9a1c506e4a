"""Resumable checkpoints: LoRA weights, optimizer and scheduler state, RNG state and the
trainer's counters, written to a temporary folder and renamed into place, so a
checkpoint is either complete or absent."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import orjson

from curate.io import atomic_write_bytes

CHECKPOINTS = "checkpoints"
#: Settings that may change between a run and its resumption without changing what is trained.
RESUMABLE_CHANGES = frozenset({"save_every", "keep_checkpoints", "stop_check_prompts", "stop_check_max_new_tokens"})


def checkpoint_dir(run: Path, step: int) -> Path:
    return run / CHECKPOINTS / f"step-{step:07d}"


def latest_checkpoint(run: Path) -> Path | None:
    folder = run / CHECKPOINTS
    if not folder.is_dir():
        return None
    complete = sorted(path for path in folder.glob("step-*") if (path / "state.json").is_file())
    return complete[-1] if complete else None


def save_checkpoint(run: Path, step: int, *, lora: dict, best_lora: dict | None, optimizer, scheduler, rng: dict, state: dict, keep: int) -> Path:
    import torch
    from safetensors.torch import save_file

    final = checkpoint_dir(run, step)
    staging = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file(lora, str(staging / "lora.safetensors"))
    if best_lora is not None:
        save_file(best_lora, str(staging / "best_lora.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng}, staging / "trainer.pt")
    atomic_write_bytes(staging / "state.json", orjson.dumps(state, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    for old in sorted((run / CHECKPOINTS).glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    loaded: dict[str, Any] = {"state": orjson.loads((path / "state.json").read_bytes())}
    loaded["lora"] = load_file(str(path / "lora.safetensors"))
    best = path / "best_lora.safetensors"
    loaded["best_lora"] = load_file(str(best)) if best.is_file() else None
    loaded.update(torch.load(path / "trainer.pt", map_location="cpu", weights_only=False))
    return loaded


def config_differences(saved: dict, current: dict) -> list[str]:
    return [
        f"{key.replace('_', '-')} {saved.get(key)!r} -> {current.get(key)!r}"
        for key in sorted(set(saved) | set(current))
        if key not in RESUMABLE_CHANGES and saved.get(key) != current.get(key)
    ]


def rng_state() -> dict:
    import torch

    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
