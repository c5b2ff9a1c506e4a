"""Export a run: copy its LoRA adapter (default), or merge it into its base model, in
full precision, as a plain transformers model folder (`--merge`). Either is written to a
staging folder and renamed into place.

QLoRA trains the adapter against the 4-bit base; merging it into the original
full-precision weights is the usual way to ship it, and what vLLM, llama.cpp
converters and `AutoModelForCausalLM.from_pretrained` expect.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from curate.train.manifest import read_manifest

class ExportError(Exception):
    """One line that says what is wrong with the run folder or the target."""


def check_run(run: Path) -> dict:
    if not run.is_dir():
        raise ExportError(f"{run}: no such run folder")
    if not (run / "adapter_config.json").is_file() or not (run / "manifest.json").is_file():
        raise ExportError(f"{run}: not a finished `curate train` run (no adapter_config.json or manifest.json)")
    return read_manifest(run)


#: Files of a run folder that are not part of the adapter (training records, checkpoints).
NOT_ADAPTER = frozenset({"metrics.jsonl", "loss.png"})


def copy_adapter(run: Path, output: Path) -> dict:
    """Copy the adapter (adapter_config.json, weights), the tokenizer with its training chat
    template, and manifest.json: a folder `PeftModel.from_pretrained(base, output)` loads."""
    manifest = check_run(run)
    _check_target(output)
    staging = output.with_name(f".{output.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    files = sorted(path for path in run.iterdir() if path.is_file() and not path.is_symlink() and path.name not in NOT_ADAPTER)
    for path in files:
        shutil.copy2(path, staging / path.name)
    if output.exists():
        output.rmdir()
    os.replace(staging, output)
    return {"base_model": manifest["base_model"], "files": [path.name for path in files]}


def _check_target(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ExportError(f"{output} exists and is not an empty folder; choose a new -o")


def merge(run: Path, output: Path, dtype: str = "auto") -> dict:
    """Write the merged model and the run's tokenizer (with its training chat template) to `output`."""
    manifest = check_run(run)
    _check_target(output)
    from curate.train.model import quiet_libraries

    quiet_libraries()
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_name = manifest["base_model"]
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    try:
        base = AutoModelForCausalLM.from_pretrained(base_name, dtype=torch_dtype)
    except Exception as exc:
        raise ExportError(f"cannot load the base model `{base_name}` recorded in {run}/manifest.json: {str(exc).splitlines()[0]}") from None
    model = PeftModel.from_pretrained(base, str(run)).merge_and_unload()
    tokenizer = AutoTokenizer.from_pretrained(str(run))
    staging = output.with_name(f".{output.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    if output.exists():
        output.rmdir()
    os.replace(staging, output)
    return {"base_model": base_name, "dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "parameters": sum(p.numel() for p in model.parameters())}
