"""`curate train --dry-run`: what a run would do, without loading the model's weights."""

from __future__ import annotations

from curate.train import audit as mask_audit
from curate.train.config import TrainConfig
from curate.train.estimate import estimate_memory, model_shape
from curate.train.recipe import PreparedData, Schedule, TrainError, plan_schedule, run_audit


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "n/a"


def dry_run_report(config: TrainConfig, tokenizer, data: PreparedData, *, processes: int = 1) -> tuple[list[str], mask_audit.AuditReport, Schedule]:
    """The lines `--dry-run` prints, the mask audit and the step plan."""
    from transformers import AutoConfig

    from curate.train.batching import epoch_order

    from curate.train.model import default_attention, packing_plan, pick_device

    train = data.train
    schedule = plan_schedule(config, len(train.examples), processes)
    packing, batching = packing_plan(config.packing, default_attention(pick_device(), config.attn_implementation))
    audit = run_audit(data, config, tokenizer, packing)
    truncated = sum(1 for example in train.examples if example.truncated)
    lines = [
        f"rows: {data.conversations + data.unusable_rows} read, {data.unusable_rows} unusable; "
        f"train {len(train.examples)} examples, eval {len(data.evaluation.examples)} ({data.eval_source})"
        + (f"; {data.clusters_kept_together} duplicate clusters kept on one side of the split" if data.clusters_kept_together else ""),
        f"after templating: {train.tokens:,} tokens, {train.trained_tokens:,} assistant tokens trained "
        f"({_share(train.trained_tokens, train.tokens)}); {truncated} examples cut at max-seq-length {config.max_seq_length}",
        *mask_audit.summary_lines(audit, tokenizer, len(train.cut_by_truncation)),
        f"steps: {schedule.micro_batches_per_epoch} micro-batches of {config.batch_size} per epoch, "
        f"{schedule.micro_batches_per_step} per step -> {schedule.steps_per_epoch:.1f} steps per epoch, {schedule.total_steps} steps in all"
        + (f" (max-steps {config.max_steps})" if config.max_steps else f" ({config.epochs:g} epochs)"),
    ]
    if not train.examples:
        return lines, audit, schedule
    lengths = [len(example) for example in train.examples]
    batches = epoch_order(lengths, config.batch_size, config.seed, 0, packing)
    if packing:
        widths = [sum(lengths[i] for i in batch) for batch in batches]
    else:
        widths = [max(lengths[i] for i in batch) * len(batch) for batch in batches]
    trained = [sum(train.examples[i].trained_tokens for i in batch) for batch in batches]
    largest = max(range(len(batches)), key=lambda index: widths[index])
    padding = 1 - sum(lengths) / sum(widths)
    lines.append(f"batches: {batching}")
    lines.append(f"micro-batches: largest {widths[largest]:,} tokens, {padding:.1%} of the tokens are padding")
    model_config = AutoConfig.from_pretrained(config.model)
    try:
        shape = model_shape(model_config, config.lora_rank, config.lora_targets)
    except ValueError as exc:  # a --lora-targets name the model lacks
        raise TrainError(str(exc)) from None
    text_config = model_config.get_text_config() if hasattr(model_config, "get_text_config") else model_config
    memory = estimate_memory(
        shape,
        quantized=config.quantize,
        compute_bytes=2,
        gradient_checkpointing=config.gradient_checkpointing,
        micro_batch_tokens=widths[largest],
        micro_batch_trained=max(trained),
        intermediate=getattr(text_config, "intermediate_size", 4 * shape.hidden),
    )
    base = "4-bit NF4 base" if config.quantize else "bf16 base"
    lines.append(
        f"model: {shape.total_params / 1e6:,.1f}M parameters, LoRA r={config.lora_rank} adds {shape.lora_params / 1e6:,.2f}M trainable; "
        f"estimated peak GPU memory ({base}, bf16 compute, largest micro-batch):"
    )
    lines += memory.lines()
    return lines, audit, schedule

