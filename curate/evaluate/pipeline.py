"""The whole evaluation: hygiene, generation per candidate, verdicts, aggregates, paired tests,
regressions; the report and the rows of generations.jsonl. `curate eval` builds the candidates
from run folders and flags; `curate train` calls `after_training` with the model it holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from curate.evaluate.candidates import Candidate, Models
from curate.evaluate.generation import GenerationRun, Progress, generate
from curate.evaluate.items import EvalError, EvalItem
from curate.evaluate.metrics import RATES, TaskProfile, aggregate, score, task_profile
from curate.evaluate.report import SCHEMA_VERSION
from curate.evaluate.stats import mcnemar
from curate.train.data import TrainingRow, read_data_file, split_eval

#: Verdicts compared between candidates with McNemar's test: every rate, and the per-prompt pass.
PAIRED = ("passed", *RATES)


@dataclass
class EvalSettings:
    max_new_tokens: int = 256
    batch_size: int = 16
    engine: str = "transformers"
    seed: int = 0
    progress: bool = True


def item_of_conversation(conversation: TrainingRow) -> EvalItem:
    messages = conversation.messages
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return EvalItem(conversation.path, conversation.line, messages[:last], messages[last]["content"])


# ---------------------------------------------------------------------------- run folders
@dataclass
class RunData:
    """What a `curate train` run folder says about its data: base model, training rows, held-out rows."""

    folder: Path
    manifest: dict[str, Any]
    base_model: str
    train: list[TrainingRow]
    held_out_path: str | None
    held_out_lines: set[int] | None


def read_run(folder: str | Path) -> RunData:
    from curate.train.export import ExportError, check_run

    folder = Path(folder)
    try:
        manifest = check_run(folder)
    except ExportError as exc:
        raise EvalError(str(exc)) from None
    data = manifest.get("data") or {}
    config = manifest.get("config") or {}
    path = data.get("path")
    if not path or not (Path(path).exists() or path.startswith("hf://")):
        raise EvalError(f"{folder}/manifest.json: the training data {path!r} is not there any more; pass --data FILE (and --train FILE for few-shot)")
    trained_on = read_data_file(path)  # one read: the rows checked are the rows hashed
    if data.get("sha256") and trained_on.sha256 != data["sha256"]:
        raise EvalError(f"{path} changed since {folder} was trained on it (sha256 differs); pass --data FILE with the held-out rows")
    conversations = trained_on.conversations
    eval_file = config.get("eval_file")
    if eval_file:
        return RunData(folder, manifest, manifest["base_model"], conversations, eval_file, None)
    lines = data.get("eval_lines")
    if lines is None:  # runs from before the manifest listed them: the split is seeded, so redo it
        held_out = split_eval(conversations, config.get("eval_fraction", 0.05), config.get("seed", 42)).evaluation
        lines = [c.line for c in held_out]
    held = set(lines)
    return RunData(folder, manifest, manifest["base_model"], [c for c in conversations if c.line not in held], path, held)


# ---------------------------------------------------------------------------- evaluation
def generate_all(models: Models, candidates: list[Candidate], items: list[EvalItem], settings: EvalSettings,
                 say: Callable[[str], None]) -> dict[str, GenerationRun]:
    runs = {}
    for candidate in candidates:
        with models.use(candidate) as (model, tokenizer):
            prompts = [candidate.prompt(item) for item in items]
            with Progress(candidate.name, len(prompts), settings.progress) as advance:
                if models.vllm is not None:
                    runs[candidate.name] = models.vllm.generate(candidate.model, candidate.adapter, tokenizer, prompts,
                                                                max_new_tokens=settings.max_new_tokens, on_progress=advance)
                else:
                    runs[candidate.name] = generate(model, tokenizer, prompts, max_new_tokens=settings.max_new_tokens,
                                                    batch_size=settings.batch_size, device=models.device_torch, on_progress=advance)
        run = runs[candidate.name]
        say(f"{candidate.name}: {len(items)} prompts in {run.seconds:.1f} s ({run.prompts_per_s:.1f} prompts/s, {run.tokens_per_s:,.0f} tokens/s)")
    return runs


def paired_tests(candidates: list[Candidate], verdicts: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """McNemar of each later candidate against the first (the base, when it is evaluated)."""
    if len(candidates) < 2:
        return []
    first = candidates[0].name
    tests = []
    for candidate in candidates[1:]:
        for metric in PAIRED:
            a = [v.get(metric) for v in verdicts[first]]
            b = [v.get(metric) for v in verdicts[candidate.name]]
            if all(x is None for x in a) or all(x is None for x in b):
                continue
            test = mcnemar(a, b)
            tests.append({"metric": metric, "first": first, "second": candidate.name, "pairs": test.pairs,
                          "first_only": test.first_only, "second_only": test.second_only,
                          "p_value": test.p_value, "significant": test.significant})
    return tests


def regression_failures(candidates: list[Candidate], items: list[EvalItem], verdicts: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Prompts the base passes and a trained candidate (adapter, merged) fails."""
    base = next((c.name for c in candidates if c.kind == "base"), None)
    if base is None:
        return []
    failures = []
    for candidate in candidates:
        if candidate.kind not in ("adapter", "merged"):
            continue
        for item, before, after in zip(items, verdicts[base], verdicts[candidate.name]):
            if before["passed"] and after["passed"] is False:
                failures.append({"where": item.where, "candidate": candidate.name, "prompt": item.user_text,
                                 "checks": after.get("expect") or {}})
    return failures


def evaluate(models: Models, candidates: list[Candidate], items: list[EvalItem], settings: EvalSettings, *,
             source: str, train_answers: list[str] | None = None, hygiene: dict[str, Any] | None = None,
             regression: tuple[str, list[EvalItem]] | None = None, command: list[str] | None = None,
             say: Callable[[str], None] = lambda _: None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(eval.json report, generations.jsonl rows)."""
    started = time.time()
    profile: TaskProfile = task_profile([item.reference or "" for item in items], train_answers)
    runs = generate_all(models, candidates, items, settings, say)
    verdicts = {c.name: score(profile, items, runs[c.name].outputs) for c in candidates}
    references = [item.reference for item in items]
    report_candidates = []
    for candidate in candidates:
        summary = aggregate(verdicts[candidate.name], profile, references, runs[candidate.name].seconds, settings.seed)
        report_candidates.append({**candidate.describe(), **summary})
    contaminated = {entry["where"]: entry["rules"] for entry in (hygiene or {}).get("contaminated", [])}
    rows = [generation_row(item, candidates, runs, verdicts, index, "eval", contaminated.get(item.where)) for index, item in enumerate(items)]
    report: dict[str, Any] = {
        "curate_eval": SCHEMA_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": command or [],
        "data": {"source": source, "prompts": len(items)},
        "profile": profile.to_dict(),
        "settings": {"max_new_tokens": settings.max_new_tokens, "batch_size": settings.batch_size, "engine": settings.engine, "seed": settings.seed},
        "hygiene": hygiene,
        "candidates": report_candidates,
        "comparisons": paired_tests(candidates, verdicts),
        "regressions": None,
    }
    if regression is not None:
        path, regression_items = regression
        regression_runs = generate_all(models, candidates, regression_items, settings, say)
        regression_profile = task_profile([item.reference or "" for item in regression_items], train_answers)
        regression_verdicts = {c.name: score(regression_profile, regression_items, regression_runs[c.name].outputs) for c in candidates}
        report["regressions"] = {"path": path, "prompts": len(regression_items),
                                 "failures": regression_failures(candidates, regression_items, regression_verdicts)}
        rows += [generation_row(item, candidates, regression_runs, regression_verdicts, index, "regression", None)
                 for index, item in enumerate(regression_items)]
    report["seconds"] = round(time.time() - started, 2)
    return report, rows


def generation_row(item: EvalItem, candidates: list[Candidate], runs: dict[str, GenerationRun], verdicts: dict[str, list[dict[str, Any]]],
                   index: int, suite: str, contaminated: list[str] | None) -> dict[str, Any]:
    """A chat row (prompt + reference answer, so `curate review` and `curate lint` read it) carrying
    each candidate's prompt, output and verdicts under `curate_eval`."""
    messages = list(item.messages) + ([{"role": "assistant", "content": item.reference}] if item.reference is not None else [])
    outputs = {}
    for candidate in candidates:
        outputs[candidate.name] = {"output": runs[candidate.name].outputs[index].text, "verdicts": verdicts[candidate.name][index]}
    failed = [name for name, entry in outputs.items() if entry["verdicts"]["passed"] is False]
    return {"messages": messages, "curate_eval": {"suite": suite, "index": index, "where": item.where, "expect": item.expect or None,
                                                  "contaminated": contaminated, "failed": failed, "candidates": outputs}}


# ---------------------------------------------------------------------------- after training
def after_training(model: Any, tokenizer: Any, device: Any, eval_conversations: list[TrainingRow], train: list[TrainingRow], *,
                   prompts: int, max_new_tokens: int, output: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """The short eval `curate train` runs at the end: base vs adapter on the held-out split, with
    the model still in memory; writes RUN/eval/ and returns the summary for manifest.json."""
    from curate.evaluate.report import comparison_lines, write_report

    items = [item_of_conversation(c) for c in eval_conversations[:prompts]]
    models = Models.of(model, tokenizer, device, {"adapter": model.active_adapter})
    candidates = [Candidate("base", "base", "base"), Candidate("adapter", "adapter", "base", adapter=str(output))]
    settings = EvalSettings(max_new_tokens=max_new_tokens, progress=False)
    report, rows = evaluate(models, candidates, items, settings, source="held-out split", train_answers=[c.messages[-1]["content"] for c in train])
    write_report(output / "eval", report, rows, chart=True)
    for line in comparison_lines(report)[:1]:
        say(f"eval: {line}")
    return summary_of(report)


def summary_of(report: dict[str, Any]) -> dict[str, Any]:
    """The compact form kept in manifest.json: each candidate's rates and the paired tests on pass/fail."""
    return {
        "prompts": report["data"]["prompts"],
        "folder": "eval",
        "candidates": {c["name"]: {name: entry["value"] for name, entry in c["metrics"].items()} for c in report["candidates"]},
        "paired": [t for t in report["comparisons"] if t["metric"] == "passed"],
    }
