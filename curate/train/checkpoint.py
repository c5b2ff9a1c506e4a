"""Resumable checkpoints: LoRA weights, optimizer and scheduler state, RNG state and the
trainer's counters, written to a temporary folder and renamed into place, so a
checkpoint is either complete or absent.

A run folder is data people share, so a checkpoint holds no pickle: tensors go to
safetensors files and everything else to JSON (`trainer.safetensors` + `trainer.json`
for the optimizer, scheduler and RNG state). Loading parses both strictly and refuses,
with one line, anything that does not parse, including an old pickled `trainer.pt`,
which is never opened."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import orjson

from curate.io import atomic_write_bytes

CHECKPOINTS = "checkpoints"
#: Settings that may change between a run and its resumption without changing what is trained.
RESUMABLE_CHANGES = frozenset({"save_every", "keep_checkpoints", "stop_check_prompts", "stop_check_max_new_tokens"})
TRAINER_TENSORS = "trainer.safetensors"
TRAINER_JSON = "trainer.json"
#: What checkpoints of curate before 0.x held: a pickle. Never unpickled; only named in the refusal.
LEGACY_PICKLE = "trainer.pt"
#: Keys `state.json` must have for a resume.
STATE_KEYS = ("config", "data_sha256", "step", "metrics", "best_eval_loss", "best_step", "evals_since_best",
              "base_eval_loss", "train_seconds", "tokens_seen", "trained_tokens_seen")


class CheckpointError(Exception):
    """A checkpoint that cannot be resumed from; the message is one line naming it."""


def to_json_tree(value, tensors: dict) -> object:
    """`value` (optimizer/scheduler state dicts: dicts with int keys, tuples, tensors, floats)
    as JSON: tensors are moved into `tensors` and referenced by name, and the containers JSON
    lacks are tagged, so `from_json_tree` gives back the same types and values."""
    import torch

    if isinstance(value, torch.Tensor):
        name = f"t{len(tensors)}"
        tensors[name] = value.detach().contiguous()
        return {"tensor": name}
    if isinstance(value, dict):
        return {"dict": [[to_json_tree(key, tensors), to_json_tree(item, tensors)] for key, item in value.items()]}
    if isinstance(value, tuple):
        return {"tuple": [to_json_tree(item, tensors) for item in value]}
    if isinstance(value, list):
        return [to_json_tree(item, tensors) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": repr(value)}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError(f"cannot store a {type(value).__name__} in a checkpoint")


def from_json_tree(value, tensors: dict) -> object:
    """The inverse of `to_json_tree`; anything else is a CheckpointError."""
    if isinstance(value, list):
        return [from_json_tree(item, tensors) for item in value]
    if isinstance(value, dict):
        if len(value) != 1:
            raise CheckpointError("unexpected object")
        (tag, body), = value.items()
        if tag == "tensor" and isinstance(body, str) and body in tensors:
            return tensors[body]
        if tag == "dict" and isinstance(body, list) and all(isinstance(pair, list) and len(pair) == 2 for pair in body):
            return {_hashable(from_json_tree(key, tensors)): from_json_tree(item, tensors) for key, item in body}
        if tag == "tuple" and isinstance(body, list):
            return tuple(from_json_tree(item, tensors) for item in body)
        if tag == "float" and body in ("inf", "-inf", "nan"):
            return float(body)
        raise CheckpointError(f"unexpected `{tag}` entry")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise CheckpointError("unexpected value")


def _hashable(key: object) -> object:
    if isinstance(key, (str, int, float, bool, tuple)) or key is None:
        return key
    raise CheckpointError("unexpected dict key")


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
    tensors: dict = {}
    tree = to_json_tree({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": rng}, tensors)
    save_file({name: tensor.cpu() for name, tensor in tensors.items()}, str(staging / TRAINER_TENSORS))
    atomic_write_bytes(staging / TRAINER_JSON, json.dumps(tree).encode("utf-8"))
    atomic_write_bytes(staging / "state.json", orjson.dumps(state, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    for old in sorted((run / CHECKPOINTS).glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path) -> dict[str, Any]:
    """State, LoRA (and best LoRA) weights, optimizer, scheduler and RNG state of a checkpoint;
    CheckpointError (one line naming it) when any part is missing or does not parse."""
    try:
        return _load_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"--resume: checkpoint {path} cannot be used: {exc}; start a new run with another -o") from None


def _load_checkpoint(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not (path / TRAINER_JSON).is_file() and (path / LEGACY_PICKLE).exists():
        raise CheckpointError(f"it holds a pickled {LEGACY_PICKLE}, which curate never loads (a pickle can run code)")
    try:
        state = json.loads((path / "state.json").read_bytes())
        tree = json.loads((path / TRAINER_JSON).read_bytes())
        lora = load_file(str(path / "lora.safetensors"))
        best = path / "best_lora.safetensors"
        best_lora = load_file(str(best)) if best.is_file() else None
        tensors = load_file(str(path / TRAINER_TENSORS))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{Path(exc.filename).name} is missing" if exc.filename else "a file is missing") from None
    except (OSError, ValueError, RecursionError, SafetensorError) as exc:  # JSONDecodeError, UnicodeDecodeError: ValueErrors
        raise CheckpointError(" ".join(str(exc).split())[:200]) from None
    if not isinstance(state, dict) or any(key not in state for key in STATE_KEYS) or not isinstance(state["config"], dict):
        raise CheckpointError("state.json is not a curate checkpoint state")
    try:
        trainer = from_json_tree(tree, tensors)
    except RecursionError:
        raise CheckpointError(f"{TRAINER_JSON} is nested too deeply") from None
    if not isinstance(trainer, dict) or not all(isinstance(trainer.get(key), dict) for key in ("optimizer", "scheduler", "rng")):
        raise CheckpointError(f"{TRAINER_JSON} lacks the optimizer, scheduler or RNG state")
    return {"state": state, "lora": lora, "best_lora": best_lora, **trainer}


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
