"""Merge a run's LoRA adapter into its base model, in full precision, as a plain
transformers model folder (written to a staging folder and renamed into place).

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


def merge(run: Path, output: Path, dtype: str = "auto") -> dict:
    """Write the merged model and the run's tokenizer (with its training chat template) to `output`."""
    manifest = check_run(run)
    if output.exists() and any(output.iterdir()):
        raise ExportError(f"{output} exists and is not empty; choose a new -o")
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
