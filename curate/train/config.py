"""`curate train` options: one documented pydantic model, fed from `[tool.curate.train]`
(or `[train]` in curate.toml, or a train-only TOML passed with `--config`) and
overridden by command-line flags. No heavy imports here: the CLI parses with it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from curate.config import ConfigError, kebab, model_fields, resolve_relative, validation_problems


class TrainConfig(BaseModel):
    """Everything that decides what a training run does; recorded in full in manifest.json."""

    model_config = ConfigDict(extra="forbid", alias_generator=kebab, populate_by_name=True)

    model: str | None = Field(None, description="Base model: a local folder or a Hugging Face hub name.")
    epochs: float = Field(3.0, gt=0, description="Passes over the training split (ignored when max-steps is set).")
    max_steps: int | None = Field(None, gt=0, description="Stop after this many optimizer steps instead of counting epochs.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate of the cosine schedule.")
    warmup_ratio: float = Field(0.03, ge=0, lt=1, description="Share of the steps spent warming the learning rate up linearly.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay on the LoRA weights.")
    max_grad_norm: float = Field(1.0, gt=0, description="Clip the gradient norm to this value.")
    batch_size: int = Field(4, gt=0, description="Examples per micro-batch (per device).")
    gradient_accumulation: int = Field(4, gt=0, description="Micro-batches per optimizer step.")
    max_seq_length: int = Field(2048, gt=8, description="Tokens per example after templating; longer examples are cut at the end.")
    lora_rank: int = Field(16, gt=0, description="LoRA rank r.")
    lora_alpha: float = Field(32.0, gt=0, description="LoRA scaling alpha (the update is scaled by alpha / r).")
    lora_dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA input.")
    lora_targets: list[str] | str = Field("all-linear", description='Module names to adapt, or "all-linear" for every linear layer but the output head.')
    eval_fraction: float = Field(0.05, ge=0, lt=1, description="Share of rows held out for eval loss when no eval file is given.")
    eval_file: str | None = Field(None, description="A separate eval file (same formats as the data); replaces eval-fraction.")
    eval_every: int = Field(0, ge=0, description="Evaluate every N optimizer steps; 0 evaluates at the end of each epoch.")
    patience: int = Field(0, ge=0, description="Stop after this many evals without a better eval loss; 0 never stops early.")
    save_every: int = Field(100, ge=0, description="Write a resumable checkpoint every N optimizer steps; 0 only on Ctrl-C.")
    keep_checkpoints: int = Field(2, gt=0, description="How many of the newest checkpoints to keep.")
    seed: int = Field(42, description="Seed for the split, the data order, LoRA init and dropout.")
    packing: bool | Literal["auto"] = Field("auto", description='Padding-free packing of each micro-batch (position ids keep examples apart). "auto" packs when the attention kernel handles variable-length rows (flash-attention, flex attention) and pads length-grouped batches otherwise; true always packs; false always pads.')
    quantize: bool = Field(True, description="Load the base in 4-bit NF4 (QLoRA); false trains plain LoRA on a full-precision base.")
    gradient_checkpointing: bool = Field(True, description="Recompute activations in the backward pass to save memory.")
    attn_implementation: str | None = Field(None, description='Attention kernel passed to transformers ("sdpa", "eager", "flash_attention_2"); default: the library\'s choice.')
    stop_check_prompts: int = Field(8, ge=0, description='Held-out prompts for the "does it stop" check after training; 0 skips it.')
    stop_check_max_new_tokens: int = Field(128, gt=0, description='Longest generation in the "does it stop" check.')
    eval_prompts: int = Field(64, ge=0, description="Held-out prompts for the short `curate eval` (base vs adapter) after training; 0 skips it (`--no-eval`).")

    @model_validator(mode="after")
    def _check_lora_targets(self) -> TrainConfig:
        if isinstance(self.lora_targets, str) and self.lora_targets != "all-linear":
            raise ValueError('lora-targets must be "all-linear" or a list of module names, e.g. ["q_proj", "v_proj"]')
        return self


#: Fields that a flag sets; the flag's dest is the field name.
FIELDS = tuple(TrainConfig.model_fields)

#: Fields whose values are paths, resolved against the config file's folder.
PATH_FIELDS = ("eval_file",)


def _where(path: Path | None) -> str:
    if path is None:
        return "train config"
    return f"{path} [tool.curate.train]" if path.name == "pyproject.toml" else f"{path} [train]"


def is_train_only_table(table: dict[str, Any]) -> bool:
    """A TOML file given to `--config` that holds train options at the top level
    (`epochs = 2`) rather than a curate config with a `[train]` table. Keys both
    kinds share (`model`, `max-seq-length`) decide nothing; unknown keys are left
    for validation to report with a suggestion."""
    from curate.config import CurateConfig

    train_keys = model_fields(TrainConfig)
    curate_only = model_fields(CurateConfig) - train_keys
    return not any(key in curate_only for key in table) and any(key in train_keys for key in table)


def resolve_train_config(table: dict[str, Any], config_path: Path | None, overrides: dict[str, Any]) -> TrainConfig:
    """Defaults < config table < flags (`overrides` holds only flags the user gave).
    Raises ConfigError listing every problem."""
    base = config_path.parent if config_path else Path.cwd()
    merged: dict[str, Any] = {}
    for key, value in table.items():
        field = key.replace("-", "_")
        if field in PATH_FIELDS and isinstance(value, str):
            value = resolve_relative(value, base)
        elif field == "model" and isinstance(value, str):
            value = resolve_relative(value, base, may_be_hub_name=True)
        merged[field if field in TrainConfig.model_fields else key] = value
    merged.update({key: value for key, value in overrides.items() if value is not None})
    try:
        return TrainConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(validation_problems(exc, _where(config_path), model_fields(TrainConfig))) from None


