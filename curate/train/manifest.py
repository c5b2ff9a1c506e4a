"""manifest.json: what a run was trained on, how, with what, and how it went."""

from __future__ import annotations

import hashlib
import platform
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import orjson

from curate import __version__
from curate.io import atomic_write_bytes

LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate")


def base_model_revision(name: str) -> dict[str, str]:
    """Which weights the base model was: the snapshot commit of a hub model in the
    Hugging Face cache; else a sha256 over its config, its weight index and each weight
    file's name, size and content sampled at 64 evenly spaced 64 KiB chunks (new weights
    change nearly every byte; reading all of a 14 GB model would take a while), so two
    runs show when the weights changed."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
        except Exception:  # a name the hub library rejects
            cached = None
        if not isinstance(cached, str):
            return {"kind": "unknown", "reason": "not a local folder and not in the Hugging Face cache"}
        folder = Path(cached).parent
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return {"kind": "hub snapshot", "commit": folder.name}
    digest = hashlib.sha256()
    for file in sorted(folder.iterdir()):
        if file.name == "config.json" or file.name.endswith(".index.json"):
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
        elif file.suffix in (".safetensors", ".bin", ".gguf", ".pt"):
            digest.update(f"{file.name}\0{file.stat().st_size}\0".encode())
            _update_sampled(digest, file)
    return {"kind": "local folder", "sha256": digest.hexdigest()}


def _update_sampled(digest, path: Path, chunks: int = 64, chunk: int = 64 << 10) -> None:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if size <= chunks * chunk:
            digest.update(handle.read())
            return
        for index in range(chunks):
            handle.seek(index * (size - chunk) // (chunks - 1))
            digest.update(handle.read(chunk))


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"curate": __version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def write_manifest(path: Path, manifest: dict) -> None:
    atomic_write_bytes(path, orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")


def read_manifest(run: Path) -> dict:
    return orjson.loads((run / "manifest.json").read_bytes())


def build_manifest(run: Any, *, adapter_step: int | None, final_eval: float | None, check: Any, evaluation: dict | None,
                   peak_memory: tuple[int | None, str]) -> dict:
    """manifest.json of a finished `curate.train.recipe.Run`: what it was trained on, how, with what, and how it went."""
    config = run.config
    return {
        "curate_train": 1,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": run.command,
        "data": _data(run),
        "lint": run.gate.to_manifest() if run.gate else None,
        "forced": bool(run.gate and run.gate.forced),
        "config": config.model_dump(),
        "seed": config.seed,
        "base_model": run.base_path,
        "base_model_revision": base_model_revision(config.model),
        "versions": versions(),
        "device": {"type": run.device.type, "name": run.device.name, "compute_dtype": str(run.device.compute_dtype).removeprefix("torch."),
                   "processes": run.accelerator.num_processes if run.accelerator else 1},
        "training": _training(run, adapter_step),
        "mask_audit": {
            "examples": run.audit.examples,
            "assistant_turns": run.audit.assistant_turns,
            "end_of_turn_trained": run.audit.turns_with_end_of_turn_trained,
            "end_of_turn_tokens": run.audit.end_of_turn_tokens,
            "partly_truncated_turns": run.audit.partly_truncated,
        },
        "results": _results(run, final_eval),
        "stop_check": check.to_manifest() if check else None,
        "eval": evaluation,
        "performance": _performance(run, peak_memory),
    }


def _data(run: Any) -> dict:
    data = run.data
    return {
        "path": run.data_path,
        "sha256": run.data.sha256,
        "rows": data.conversations + data.unusable_rows,
        "unusable_rows": data.unusable_rows,
        "train_examples": len(data.train.examples),
        "eval_examples": len(data.evaluation.examples),
        "eval_source": data.eval_source,
        "eval_lines": None if run.config.eval_file else [c.line for c in data.eval_conversations],
        "tokens": data.train.tokens,
        "trained_tokens": data.train.trained_tokens,
        "cut_by_truncation": len(data.train.cut_by_truncation),
    }


def _training(run: Any, adapter_step: int | None) -> dict:
    state, schedule = run.state, run.schedule
    return {
        "packing": "padding-free" if run.packing else "length-grouped padding",
        "batching": run.batching,
        "attn_implementation": run.model.config._attn_implementation,
        "steps": state.step,
        "total_steps": schedule.total_steps,
        "adapter_step": adapter_step,
        "stopped_early": state.stopped_early,
        "epochs": round(state.step * schedule.micro_batches_per_step / schedule.micro_batches_per_epoch, 4),
        "trainable_params": sum(p.numel() for p in run.model.parameters() if p.requires_grad),
    }


def _results(run: Any, final_eval: float | None) -> dict:
    train_losses = [m["loss"] for m in run.state.metrics if "loss" in m]
    return {
        "final_train_loss": train_losses[-1] if train_losses else None,
        "final_eval_loss": final_eval,
        "best_eval_loss": run.state.best_eval_loss,
        "base_eval_loss": run.state.base_eval_loss,
    }


def _performance(run: Any, peak_memory: tuple[int | None, str]) -> dict:
    state = run.state
    return {
        "wall_time_s": round(time.time() - run.started, 2),
        "train_time_s": round(state.train_seconds, 2),
        "tokens": state.tokens_seen,
        "tokens_per_s": round(state.tokens_seen / state.train_seconds, 1) if state.train_seconds else None,
        "mfu": run.mean_mfu(),
        "peak_memory_bytes": peak_memory[0],
        "peak_memory_kind": peak_memory[1],
    }
