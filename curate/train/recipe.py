"""The training recipe: setup, train, save, cleanup. Read it top to bottom.

    setup   tokenizer -> data (template, labels) -> mask audit (hard gate) -> 4-bit base
            -> LoRA -> probes (packing, output head) -> optimizer, schedule -> resume
    train   micro-batches in a seeded order; loss on assistant tokens; gradient
            accumulation; eval, early stopping, checkpoints; Ctrl-C saves a checkpoint;
            the last step is always checkpointed
    save    adapter + tokenizer (with the exact chat template) and metrics.jsonl first,
            then final eval, "does it stop" check, loss curve, manifest.json; Ctrl-C
            here leaves the adapter and the last checkpoint, and --resume finishes
    cleanup free the model

Data parallel runs come from `accelerate launch -m curate train ...`: every process
builds the same micro-batch order and takes its own share of each step's window.
"""

from __future__ import annotations

import math
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from curate.train import audit as mask_audit
from curate.train.batching import collate, epoch_order, micro_batches_per_epoch, unpack
from curate.train.checkpoint import (
    CheckpointError,
    config_differences,
    latest_checkpoint,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from curate.train.config import TrainConfig
from curate.train.data import Dataset, TrainingRow, read_data_file, split_eval, tokenize
from curate.train.gate import GateOutcome


class TrainError(Exception):
    """The run cannot go on; the message is what the user should read (may span lines
    when it shows an example)."""


class Refused(TrainError):
    """The data cannot be trained on as labelled (mask audit, template parity): exit 1, like the lint gate."""


class Interrupted(Exception):
    """Ctrl-C during training (after the checkpoint was written) or while saving (after the adapter was)."""

    def __init__(self, step: int, checkpoint: Path | None, adapter: Path | None = None):
        if adapter is None:
            message = f"interrupted at step {step}; checkpoint saved to {checkpoint}; continue with --resume"
        else:
            message = (f"interrupted after the last step ({step}) while finishing the run; the adapter is saved in {adapter} "
                       f"and the checkpoint in {checkpoint}; --resume runs the final eval and writes the manifest")
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint
        self.adapter = adapter


@dataclass
class PreparedData:
    conversations: int
    unusable_rows: int
    train: Dataset
    evaluation: Dataset
    eval_conversations: list[TrainingRow]
    eval_source: str
    #: sha256 of the bytes the rows were parsed from (the data file; the eval file or None).
    sha256: str
    eval_sha256: str | None
    #: Duplicate clusters kept wholly on one side of the eval split.
    clusters_kept_together: int = 0


@dataclass
class Schedule:
    micro_batches_per_epoch: int
    micro_batches_per_step: int  # gradient accumulation x processes
    total_steps: int

    @property
    def steps_per_epoch(self) -> float:
        return self.micro_batches_per_epoch / self.micro_batches_per_step


def prepare_data(config: TrainConfig, tokenizer, data_path: str, gate: GateOutcome | None = None) -> PreparedData:
    """Read (each file once: its hash and its rows come from the same bytes), split and tokenize;
    the eval split keeps duplicate clusters together (from the lint gate's duplicate findings,
    or from running the duplicate rules when no gate did)."""
    from curate.io import InputError
    from curate.train.gate import find_duplicate_clusters

    kept_together, eval_file = 0, None
    try:
        data_file = read_data_file(data_path)
        conversations, unusable = data_file.conversations, data_file.unusable
        if config.eval_file:
            eval_file = read_data_file(config.eval_file)
            train_rows, eval_rows, source = conversations, eval_file.conversations, config.eval_file
        else:
            duplicate_of = None
            if config.eval_fraction > 0:
                duplicate_of = gate.duplicate_of if gate and gate.duplicate_of is not None else find_duplicate_clusters(data_path)
            split = split_eval(conversations, config.eval_fraction, config.seed, duplicate_of)
            train_rows, eval_rows, kept_together = split.train, split.evaluation, split.clusters_kept_together
            source = f"held out by eval-fraction {config.eval_fraction}" if eval_rows else "none"
    except InputError as exc:
        raise TrainError(str(exc)) from None
    if not train_rows:
        raise TrainError(f"{data_path}: no usable conversations to train on (run `curate lint {data_path}` to see why)")
    train = tokenize(tokenizer, train_rows, config.max_seq_length)
    evaluation = tokenize(tokenizer, eval_rows, config.max_seq_length)
    return PreparedData(len(conversations), unusable, train, evaluation, eval_rows, source, data_file.sha256,
                        eval_file.sha256 if eval_file else None, kept_together)


def data_refusal(config: TrainConfig, data: PreparedData) -> TrainError | None:
    """Why prepared data must not train, or None: rows the template cannot render as trained
    (a Refused), or truncation that left no assistant token. `Run.setup` and the dry run both ask."""
    if data.train.problems or data.evaluation.problems:
        return Refused(template_problems_text(data))
    if not data.train.examples:
        return TrainError(f"truncation at max-seq-length {config.max_seq_length} cuts every assistant token of every training example; raise --max-seq-length")
    return None


def plan_schedule(config: TrainConfig, train_examples: int, processes: int) -> Schedule:
    per_epoch = micro_batches_per_epoch(train_examples, config.batch_size)
    per_step = config.gradient_accumulation * processes
    total = config.max_steps or max(1, math.ceil(config.epochs * per_epoch / per_step))
    return Schedule(per_epoch, per_step, total)


def micro_batch_stream(lengths: list[int], config: TrainConfig, packing: bool, start: int) -> Iterator[list[int]]:
    """Micro-batches (example indices) from position `start` of the endless, epoch-by-epoch order."""
    per_epoch = micro_batches_per_epoch(len(lengths), config.batch_size)
    epoch, offset = divmod(start, per_epoch)
    while True:
        order = epoch_order(lengths, config.batch_size, config.seed, epoch, packing)
        yield from order[offset:]
        epoch, offset = epoch + 1, 0


def run_audit(data: PreparedData, config: TrainConfig, tokenizer, packing: bool) -> mask_audit.AuditReport:
    """Audit every train and eval example as the collator hands it to the model."""

    def fed(dataset: Dataset, batches: list[list[int]]):
        for indices in batches:
            batch = collate(dataset.examples, indices, packing, tokenizer.pad_token_id)
            for index, input_ids, labels in unpack(batch):
                yield dataset.examples[index], input_ids, labels

    lengths = [len(example) for example in data.train.examples]
    train_batches = epoch_order(lengths, config.batch_size, config.seed, 0, packing)
    eval_batches = eval_order(data.evaluation, config.batch_size)
    report = mask_audit.audit(fed(data.train, train_batches), tokenizer)
    report.add(mask_audit.audit(fed(data.evaluation, eval_batches), tokenizer))
    return report


def eval_order(dataset: Dataset, batch_size: int) -> list[list[int]]:
    indices = list(range(len(dataset.examples)))
    return [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]


def audit_failure_text(report: mask_audit.AuditReport, shown: int = 3) -> str:
    parts = [mask_audit.describe_failure(failure) for failure in report.failures[:shown]]
    if len(report.failures) > shown:
        parts.append(f"... and {len(report.failures) - shown} more examples fail the mask audit")
    parts.append("refusing to train: the labels would not teach what the data says (see above)")
    return "\n".join(parts)


def template_problems_text(data: PreparedData, shown: int = 5) -> str:
    problems = data.train.problems + data.evaluation.problems
    lines = [f"{problem.where}: {problem.message}" for problem in problems[:shown]]
    if len(problems) > shown:
        lines.append(f"... and {len(problems) - shown} more rows")
    lines.append(f"refusing to train: {len(problems)} rows cannot be rendered and labelled with this chat template")
    return "\n".join(lines)


@dataclass
class Reporter:
    """Where a run talks: a progress bar on a terminal, plain lines otherwise; only the main process."""

    main: bool = True
    progress: bool = True
    out: Any = field(default_factory=lambda: sys.stderr)
    #: The progress bar's console while it is drawn; lines go above the bar through it.
    live: Any = None

    def say(self, message: str) -> None:
        if not self.main:
            return
        if self.live is not None:
            self.live.print(message, markup=False, highlight=False)
            return
        self.out.write(message + "\n")
        self.out.flush()


@dataclass
class TrainState:
    """What a run has done so far: the counters a checkpoint saves (`state.json`, with the config
    and data hashes it was made with) and `--resume` restores, listed once."""

    step: int = 0
    metrics: list[dict] = field(default_factory=list)
    best_eval_loss: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    base_eval_loss: float | None = None
    train_seconds: float = 0.0
    tokens_seen: int = 0
    trained_tokens_seen: int = 0
    stopped_early: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> TrainState:
        """The state in a checkpoint's `state.json` (keys a later version added take their defaults)."""
        known = {item.name for item in fields(cls)}
        state = cls(**{key: value for key, value in saved.items() if key in known})
        state.stopped_early = bool(state.stopped_early)
        return state


class Run:
    """One training run, from a resolved config to a run folder."""

    def __init__(self, config: TrainConfig, data_path: str, output: Path, *, gate: GateOutcome | None, resume: bool,
                 reporter: Reporter, command: list[str] | None = None, on_step: Callable[[int], None] | None = None):
        self.config = config
        self.data_path = data_path
        self.output = output
        self.gate = gate
        self.resume = resume
        self.reporter = reporter
        self.command = command or []
        self.on_step = on_step  # called after each optimizer step (tests interrupt runs through it)
        self.state = TrainState()
        self.started = time.time()

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        import torch

        from curate.train import model as builders
        from curate.train.estimate import model_shape, peak_flops

        config = self.config
        builders.quiet_libraries()
        self.accelerator = _accelerator_if_distributed()
        processes = self.accelerator.num_processes if self.accelerator else 1
        self.rank = self.accelerator.process_index if self.accelerator else 0
        self.reporter.main = self.rank == 0
        self.device = builders.pick_device(self.accelerator.local_process_index if self.accelerator else 0)
        if self.device.type == "cpu":
            self.reporter.say("curate: no CUDA device: training on the CPU (slow; fine for samples/tiny-chat, not for a real model)")

        self.tokenizer = builders.load_tokenizer(config.model)
        self.data = prepare_data(config, self.tokenizer, self.data_path, self.gate)
        refusal = data_refusal(config, self.data)
        if refusal is not None:
            raise refusal

        self.base_path = builders.resolve_model_path(config.model)
        attention = builders.default_attention(self.device, config.attn_implementation)
        self.model = builders.load_base_model(config.model, self.device, quantize=config.quantize, attn_implementation=attention)
        self.model.config.use_cache = False
        self.shape = model_shape(self.model.config, config.lora_rank, config.lora_targets)
        self.model = builders.add_lora(self.model, config, quantized=config.quantize, gradient_checkpointing=config.gradient_checkpointing,
                                       seed=config.seed, base_path=self.base_path)
        packing_ok, selective_head = builders.probe(self.model, self.device, self.shape.vocab)
        self.packing, self.batching = builders.packing_plan(config.packing, self.model.config._attn_implementation)
        if self.packing and not packing_ok:
            self.packing, self.batching = False, "length-grouped padding: this model's attention does not keep packed examples apart"
        self.reporter.say(f"batches: {self.batching}")

        # The mask audit gates the run on the batches exactly as they will be collated.
        self.audit = run_audit(self.data, config, self.tokenizer, self.packing)
        if not self.audit.ok:
            raise Refused(audit_failure_text(self.audit))
        for line in mask_audit.summary_lines(self.audit, self.tokenizer, len(self.data.train.cut_by_truncation)):
            self.reporter.say(line)

        self.loss_module = builders.make_loss_module(self.model, selective_head, self.device)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay,
                                           fused=self.device.type == "cuda")
        self.schedule = plan_schedule(config, len(self.data.train.examples), processes)
        from transformers import get_cosine_schedule_with_warmup

        warmup = round(config.warmup_ratio * self.schedule.total_steps)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, warmup, self.schedule.total_steps)
        if self.accelerator:
            self.loss_module, self.optimizer = self.accelerator.prepare(self.loss_module, self.optimizer)
        self.peak_flops = peak_flops(self.device.name) if self.device.type == "cuda" else None

        self.state = TrainState()
        self.best_lora: dict | None = None
        self.checkpointed_step: int | None = None
        if self.resume:
            self._resume()
        elif self.data.evaluation.examples:
            with self.model.disable_adapter():
                self.state.base_eval_loss = self.evaluate()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device.torch_device)

    def _resume(self) -> None:
        from curate.train.model import load_lora_state

        path = latest_checkpoint(self.output)
        if path is None:
            raise TrainError(f"--resume: {self.output} has no checkpoint to resume from; start without --resume")
        try:
            loaded = load_checkpoint(path)
        except CheckpointError as exc:
            raise TrainError(str(exc)) from None
        state = loaded["state"]
        differences = config_differences(state["config"], self.config.model_dump())
        if differences:
            raise TrainError(f"--resume: {self.output} was trained with other settings ({'; '.join(differences)}); use the same settings or a new run folder")
        if state["data_sha256"] != self.data.sha256:
            raise TrainError(f"--resume: {self.data_path} changed since the checkpoint (sha256 differs); resume with the same data or start a new run")
        if state.get("eval_sha256") != self.data.eval_sha256:
            raise TrainError(f"--resume: {self.config.eval_file} changed since the checkpoint (sha256 differs); resume with the same eval file or start a new run")
        load_lora_state(self.model, loaded["lora"])
        self.optimizer.load_state_dict(loaded["optimizer"])
        self.scheduler.load_state_dict(loaded["scheduler"])
        restore_rng(loaded["rng"])
        self.best_lora = loaded["best_lora"]
        self.state = TrainState.from_json(state)
        self.checkpointed_step = self.state.step
        self.reporter.say(f"curate: resuming {self.output} from step {self.state.step} ({path.name})")

    # ------------------------------------------------------------------ train
    def train(self) -> None:
        import torch

        from curate.train.estimate import step_flops

        config, schedule = self.config, self.schedule
        examples = self.data.train.examples
        lengths = [len(example) for example in examples]
        trained = [example.trained_tokens for example in examples]
        stream = micro_batch_stream(lengths, config, self.packing, self.state.step * schedule.micro_batches_per_step)
        accumulation = config.gradient_accumulation
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.loss_module.train()
        rng_at_step_start = rng_state()
        with self._progress() as progress:
            try:
                if self._eval_missed():
                    self._scheduled_eval()  # a Ctrl-C during the last eval: do it now, as a straight run would have
                while self.state.step < schedule.total_steps and not self.state.stopped_early:
                    window = [next(stream) for _ in range(schedule.micro_batches_per_step)]
                    # Normalize by the trained tokens of the whole window (all processes), so every
                    # trained token weighs the same whatever micro-batch it fell in.
                    window_targets = sum(trained[i] for indices in window for i in indices)
                    mine = window[self.rank * accumulation : (self.rank + 1) * accumulation]
                    scale = (self.accelerator.num_processes if self.accelerator else 1) / max(window_targets, 1)
                    started = time.perf_counter()
                    loss_sum = torch.zeros((), device=self.device.torch_device)
                    for position, indices in enumerate(mine):
                        batch = collate(examples, indices, self.packing, self.tokenizer.pad_token_id).to(self.device.torch_device)
                        with self._no_sync(position < len(mine) - 1):
                            micro_loss = self.loss_module(batch.input_ids, batch.labels, batch.position_ids, batch.attention_mask)
                            self._backward(micro_loss * scale)
                        loss_sum += micro_loss.detach()
                    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    loss = self._reduce_sum(loss_sum).item() / max(window_targets, 1)
                    seconds = time.perf_counter() - started
                    self.state.step += 1
                    rng_at_step_start = rng_state()  # what the next step starts from (eval uses no randomness)

                    window_lengths = [lengths[i] for indices in window for i in indices]
                    self.state.tokens_seen += sum(window_lengths)
                    self.state.trained_tokens_seen += window_targets
                    self.state.train_seconds += seconds
                    tokens_per_s = sum(window_lengths) / seconds
                    mfu = step_flops(self.shape, window_lengths, window_targets) / seconds / (self.peak_flops * (self.accelerator.num_processes if self.accelerator else 1)) if self.peak_flops else None
                    record = {
                        "step": self.state.step,
                        "epoch": round(self.state.step * schedule.micro_batches_per_step / schedule.micro_batches_per_epoch, 4),
                        "loss": round(loss, 6),
                        "lr": self.scheduler.get_last_lr()[0],
                        "grad_norm": round(float(grad_norm), 6),
                        "tokens": sum(window_lengths),
                        "trained_tokens": window_targets,
                        "tokens_per_s": round(tokens_per_s, 1),
                        "mfu": round(mfu, 4) if mfu is not None else None,
                        "seconds": round(seconds, 4),
                    }
                    self.state.metrics.append(record)
                    progress(record)

                    if self._eval_due():
                        self._scheduled_eval()
                    if self.on_step:
                        self.on_step(self.state.step)
                    if config.save_every and self.state.step % config.save_every == 0 and self.state.step < schedule.total_steps:
                        self.checkpoint(rng_at_step_start)
                    if self.state.stopped_early:
                        self.reporter.say(f"curate: early stop at step {self.state.step}: eval loss did not improve for {config.patience} evals (best {self.state.best_eval_loss:.4f} at step {self.state.best_step})")
                # The last step is checkpointed too, so a Ctrl-C while saving leaves a run to --resume.
                if self.checkpointed_step != self.state.step:
                    self.checkpoint(rng_at_step_start)
            except KeyboardInterrupt:
                # Weights only change at optimizer steps, so the state after the last full step
                # is consistent; the RNG goes back to where that step left it.
                self.optimizer.zero_grad(set_to_none=True)
                path = self.checkpoint(rng_at_step_start)
                raise Interrupted(self.state.step, path) from None

    def _scheduled_eval(self) -> None:
        eval_loss = self.evaluate()
        self.state.metrics.append({"step": self.state.step, "eval_loss": round(eval_loss, 6)})
        self.reporter.say(f"step {self.state.step}: eval loss {eval_loss:.4f}")
        if self._early_stop(eval_loss):
            self.state.stopped_early = True

    def _eval_missed(self) -> bool:
        """Resumed from a checkpoint written while the eval of its step was interrupted."""
        return bool(self.state.step) and self._eval_due() and not any(m["step"] == self.state.step and "eval_loss" in m for m in self.state.metrics)

    def _eval_due(self) -> bool:
        if not self.data.evaluation.examples:
            return False
        if self.state.step >= self.schedule.total_steps:
            return True
        if self.config.eval_every:
            return self.state.step % self.config.eval_every == 0
        per_step, per_epoch = self.schedule.micro_batches_per_step, self.schedule.micro_batches_per_epoch
        return (self.state.step * per_step) // per_epoch > ((self.state.step - 1) * per_step) // per_epoch

    def _early_stop(self, eval_loss: float) -> bool:
        from curate.train.model import lora_state

        if self.state.best_eval_loss is None or eval_loss < self.state.best_eval_loss:
            self.state.best_eval_loss, self.state.best_step, self.state.evals_since_best = eval_loss, self.state.step, 0
            if self.config.patience:
                self.best_lora = lora_state(self.model)
            return False
        self.state.evals_since_best += 1
        return bool(self.config.patience) and self.state.evals_since_best >= self.config.patience

    def evaluate(self) -> float:
        """Mean loss per trained token of the eval split (every process evaluates all of it)."""
        import torch

        dataset = self.data.evaluation
        total, targets = 0.0, 0
        self.loss_module.eval()
        with torch.no_grad():
            for indices in eval_order(dataset, self.config.batch_size):
                batch = collate(dataset.examples, indices, self.packing, self.tokenizer.pad_token_id).to(self.device.torch_device)
                total += self.loss_module(batch.input_ids, batch.labels, batch.position_ids, batch.attention_mask).item()
                targets += batch.targets
        self.loss_module.train()
        return total / max(targets, 1)

    def checkpoint(self, rng: dict) -> Path | None:
        from curate.train.model import lora_state

        if self.rank != 0:
            return None
        state = {**self.state.to_json(), "config": self.config.model_dump(), "data_sha256": self.data.sha256, "eval_sha256": self.data.eval_sha256}
        path = save_checkpoint(self.output, self.state.step, lora=lora_state(self.model), best_lora=self.best_lora,
                               optimizer=self.optimizer, scheduler=self.scheduler, rng=rng, state=state,
                               keep=self.config.keep_checkpoints)
        self.checkpointed_step = self.state.step
        self._write_metrics()
        return path

    # ------------------------------------------------------------------ save
    def save(self) -> dict:
        """Write the adapter, tokenizer and metrics first, then evaluate, check stopping and write
        the loss curve and manifest; returns the manifest. A Ctrl-C on the way raises Interrupted:
        the checkpoint of the last step (see `train`) lets --resume finish the run."""
        from curate.train.model import load_lora_state

        adapter_saved = False
        try:
            if self.config.patience and self.best_lora is not None:
                load_lora_state(self.model, self.best_lora)
            if self.rank == 0:
                self.output.mkdir(parents=True, exist_ok=True)
                self.model.save_pretrained(self.output, safe_serialization=True)
                # The saved tokenizer carries the exact chat template the labels were made with.
                self.tokenizer.save_pretrained(self.output)
                self._write_metrics()
                adapter_saved = True
            return self._finish()
        except KeyboardInterrupt:
            raise Interrupted(self.state.step, latest_checkpoint(self.output), self.output if adapter_saved else None) from None

    def _finish(self) -> dict:
        """Final eval, stop check, loss curve and manifest, after the adapter is safe on disk."""
        from curate.train.manifest import build_manifest, write_manifest
        from curate.train.plot import write_loss_curve
        from curate.train.stopcheck import stop_check

        config = self.config
        adapter_step = self.state.best_step if config.patience and self.best_lora is not None else self.state.step
        final_eval = self.evaluate() if self.data.evaluation.examples else None
        peak_memory = self._peak_memory()
        end_of_turn_ids = [self.tokenizer.convert_tokens_to_ids(token) for token in self.audit.end_of_turn_tokens]
        check = None
        if config.stop_check_prompts and self.data.eval_conversations:
            from curate.train.model import autocast

            with autocast(self.device):
                check = stop_check(self.model, self.tokenizer, self.data.eval_conversations, end_of_turn_ids,
                                   prompts=config.stop_check_prompts, max_new_tokens=config.stop_check_max_new_tokens,
                                   max_length=config.max_seq_length, device=self.device.torch_device)
            self.reporter.say(check.line())
        if self.rank != 0:
            return {}
        evaluation = self._short_eval() if config.eval_prompts and self.data.eval_conversations else None
        write_loss_curve(self.output / "loss.png", self.state.metrics, f"{Path(self.data_path).name} on {Path(config.model).name}")
        manifest = build_manifest(self, adapter_step=adapter_step, final_eval=final_eval, check=check, evaluation=evaluation, peak_memory=peak_memory)
        write_manifest(self.output / "manifest.json", manifest)
        return manifest

    def _short_eval(self) -> dict:
        """`curate eval` of base vs adapter on the held-out split, with the model in memory (RUN/eval/)."""
        from curate.evaluate.pipeline import after_training
        from curate.train.model import autocast

        with autocast(self.device):
            return after_training(self.model, self.tokenizer, self.device, self.data.eval_conversations, [e.conversation for e in self.data.train.examples],
                                  prompts=self.config.eval_prompts, max_new_tokens=self.config.stop_check_max_new_tokens, output=self.output, say=self.reporter.say)

    def _write_metrics(self) -> None:
        from curate.io import atomic_write_jsonl

        if self.rank == 0:
            atomic_write_jsonl(self.output / "metrics.jsonl", self.state.metrics)

    def mean_mfu(self) -> float | None:
        values = [m["mfu"] for m in self.state.metrics if m.get("mfu") is not None]
        return round(sum(values[1:]) / len(values[1:]), 4) if len(values) > 1 else None  # the first step warms up

    def _peak_memory(self) -> tuple[int, str]:
        import torch

        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device.torch_device)), "cuda max_memory_allocated"
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process peak RSS"

    # ------------------------------------------------------------------ cleanup
    def cleanup(self) -> None:
        import gc

        import torch

        for name in ("loss_module", "model", "optimizer"):
            if hasattr(self, name):
                delattr(self, name)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if self.accelerator:
            self.accelerator.end_training()

    # ------------------------------------------------------------------ helpers
    def _progress(self):
        return _ProgressDisplay(self.reporter, self.schedule.total_steps, self.state.step)

    def _no_sync(self, skip: bool):
        from contextlib import nullcontext

        return self.accelerator.no_sync(self.loss_module) if self.accelerator and skip else nullcontext()

    def _backward(self, loss) -> None:
        if self.accelerator:
            self.accelerator.backward(loss)
        else:
            loss.backward()

    def _reduce_sum(self, value):
        return self.accelerator.reduce(value, reduction="sum") if self.accelerator else value


class _ProgressDisplay:
    """A rich progress bar (loss, lr, tokens/s, MFU, ETA) on a terminal; a line every few
    steps otherwise."""

    def __init__(self, reporter: Reporter, total: int, done: int):
        self.reporter, self.total, self.done = reporter, total, done
        self.bar = None
        self.every = max(1, total // 20)
        self.smoothed: float | None = None

    def __enter__(self):
        if self.reporter.main and self.reporter.progress and self.reporter.out.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]training"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
                                TimeRemainingColumn(), console=Console(file=self.reporter.out), transient=False)
            self.bar.start()
            self.task = self.bar.add_task("train", total=self.total, completed=self.done, status="")
            self.reporter.live = self.bar.console
        return self

    def __call__(self, record: dict) -> None:
        rate = record["tokens_per_s"]
        self.smoothed = rate if self.smoothed is None else 0.8 * self.smoothed + 0.2 * rate
        mfu = f" MFU {record['mfu']:.1%}" if record.get("mfu") is not None else ""
        status = f"loss {record['loss']:.4f} lr {record['lr']:.2e} {self.smoothed:,.0f} tok/s{mfu}"
        if self.bar is not None:
            self.bar.update(self.task, completed=record["step"], status=status)
        elif record["step"] % self.every == 0 or record["step"] == self.total:
            self.reporter.say(f"step {record['step']}/{self.total}: {status}")

    def __exit__(self, *exc_info):
        if self.bar is not None:
            self.bar.stop()
            self.reporter.live = None
        return False


def _accelerator_if_distributed():
    """An accelerate Accelerator when launched with several processes (`accelerate launch`)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    import torch
    from accelerate import Accelerator

    # Without cpu=True, accelerate treats CPU processes as separate single-process runs.
    return Accelerator(cpu=not torch.cuda.is_available())
