"""Prove the adapter helps: generate with several candidates on the same held-out prompts and
compare them with intervals and paired tests.

    curate eval RUN [RUN ...] [--data heldout.jsonl] -o evals/NAME
    curate eval --adapter PATH --model BASE --data heldout.jsonl -o evals/NAME

Candidates (`--candidates`, default base,few-shot,adapter and merged when --merged is given):
base (the prompt as in the data, or --system-prompt FILE), few-shot (K training examples,
never eval rows, as prior turns), adapter (each run's LoRA adapter), merged (an exported
folder). Without --data the run's own held-out split (from its manifest) is used. Before
generating, the eval prompts are checked against the training data with the LK rules
(--strict refuses a contaminated eval). Writes eval.json, generations.jsonl (open the
failures with `curate review DIR/generations.jsonl`) and chart.png.

Exit codes: 0 evaluated, 1 refused (--strict and contaminated eval rows), 2 usage, input or
model-loading error."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from curate.commands.common import error, model_files, overwrite_problem

EXIT_OK, EXIT_REFUSED, EXIT_ERROR = 0, 1, 2
CANDIDATE_KINDS = ("base", "few-shot", "adapter", "merged")


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="*", metavar="RUN", help="`curate train` run folders (several: compare their adapters)")
    parser.add_argument("--data", default=None, metavar="FILE", help="eval rows (default: the run's held-out split)")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for eval.json, generations.jsonl and chart.png")
    models = parser.add_argument_group("models and candidates")
    models.add_argument("--adapter", action="append", default=[], metavar="PATH", help="any peft adapter folder (with --model BASE)")
    models.add_argument("--model", default=None, metavar="PATH_OR_NAME", help="base model (default: the run's)")
    models.add_argument("--merged", action="append", default=[], metavar="DIR", help="an exported (merged) model folder")
    models.add_argument("--candidates", type=_csv, default=None, metavar="LIST", help=f"comma-separated, of {', '.join(CANDIDATE_KINDS)}")
    models.add_argument("--system-prompt", default=None, metavar="FILE", help="system prompt for base and few-shot (the best prompt you have)")
    models.add_argument("--few-shot", type=int, default=3, metavar="K", help="examples for the few-shot candidate (default 3)")
    models.add_argument("--train", default=None, metavar="FILE", help="training data to draw few-shot examples from and to check for contamination (default: the run's)")
    gen = parser.add_argument_group("generation")
    gen.add_argument("--limit", type=int, default=None, metavar="N", help="evaluate the first N prompts only")
    gen.add_argument("--max-new-tokens", type=int, default=256, metavar="N", help="longest answer (default 256)")
    gen.add_argument("--batch-size", type=int, default=16, metavar="N", help="prompts per generate call (default 16)")
    gen.add_argument("--engine", choices=("transformers", "vllm"), default="transformers", help="generation engine (vllm needs vLLM and a CUDA GPU)")
    gen.add_argument("--seed", type=int, default=0, help="seed for few-shot examples and bootstrap intervals")
    gen.add_argument("--no-progress", action="store_true", help="no progress bar")
    checks = parser.add_argument_group("checks")
    checks.add_argument("--regression", default=None, metavar="FILE", help="prompts the base already handles (a reference or an `expect` object); lists each the adapter fails")
    checks.add_argument("--strict", action="store_true", help="refuse to evaluate when eval prompts are in the training data")
    checks.add_argument("--no-chart", action="store_true", help="do not draw chart.png")


def adapter_names(paths: list[str]) -> dict[str, str]:
    """Candidate name -> adapter folder: `adapter` for one, the folder names for several
    (`-2`, `-3` appended where two folders share a name)."""
    if len(paths) == 1:
        return {"adapter": paths[0]}
    names: dict[str, str] = {}
    for path in paths:
        name = base = Path(path).resolve().name
        number = 1
        while name in names:
            number += 1
            name = f"{base}-{number}"
        names[name] = path
    return names


def run(args: argparse.Namespace) -> int:
    from curate.evaluate.items import EvalError

    try:
        return _run(args)
    except EvalError as exc:
        error(str(exc))
        return EXIT_ERROR


def _run(args: argparse.Namespace) -> int:
    from curate.evaluate.candidates import build_candidates
    from curate.evaluate.generation import EngineUnavailable, check_vllm
    from curate.evaluate.items import EvalError, limit_items, read_items
    from curate.evaluate.pipeline import read_run
    from curate.io import InputError, check_input_file
    from curate.train.data import read_conversations

    if args.engine == "vllm":
        try:
            check_vllm()
        except EngineUnavailable as exc:
            error(str(exc))
            return EXIT_ERROR
    if not args.runs and not args.adapter and not args.merged and not args.model:
        raise EvalError("nothing to evaluate: pass a run folder, --adapter PATH --model BASE, --merged DIR or --model BASE")
    output = Path(args.output)
    if output.exists() and not output.is_dir():
        raise EvalError(f"{output} exists and is not a folder; choose another -o")
    for path in (args.data, args.regression, args.system_prompt, args.train):
        if path:
            try:
                check_input_file(Path(path))  # missing, a directory, a FIFO: the readers' own check
            except InputError as exc:
                raise EvalError(str(exc)) from None
    inputs = [args.data, args.regression, args.system_prompt, args.train, *args.runs, *args.adapter, *args.merged, *model_files(args.model)]
    problem = overwrite_problem([output], [path for path in inputs if path], folders=True)  # the one guard every command uses
    if problem:
        raise EvalError(problem)

    runs = [read_run(folder) for folder in args.runs]
    bases = {run.base_model for run in runs}
    if len(bases) > 1:
        raise EvalError(f"the runs were trained on different base models ({', '.join(sorted(bases))}); evaluate them separately")
    base = args.model or (runs[0].base_model if runs else None)
    adapters = adapter_names([str(run.folder) for run in runs] + list(args.adapter))
    if adapters and base is None:
        raise EvalError("--adapter needs --model BASE (the base model the adapter was trained on)")

    if args.data:
        item_set = read_items(args.data)
        source = args.data
    elif runs and runs[0].held_out_path:
        item_set = read_items(runs[0].held_out_path, lines=runs[0].held_out_lines)
        source = f"held-out split of {runs[0].held_out_path}" if runs[0].held_out_lines is not None else runs[0].held_out_path
    else:
        raise EvalError("no eval rows: pass --data FILE (the run has no held-out split)")
    items = limit_items(item_set.items, args.limit)
    if not items:
        raise EvalError(f"{source}: no usable eval rows (a prompt and a reference answer)")
    train = read_conversations(args.train)[0] if args.train else (runs[0].train if runs else [])

    kinds = args.candidates or [k for k in CANDIDATE_KINDS if k != "merged" or args.merged]
    unknown = [k for k in kinds if k not in CANDIDATE_KINDS]
    if unknown:
        raise EvalError(f"--candidates: unknown {', '.join(unknown)} (choose from {', '.join(CANDIDATE_KINDS)})")
    if "few-shot" in kinds and not train:
        if args.candidates:
            raise EvalError("few-shot needs training rows: pass --train FILE or a run folder")
        kinds = [k for k in kinds if k != "few-shot"]
    if not adapters:
        kinds = [k for k in kinds if k != "adapter"]
    if (("base" in kinds or "few-shot" in kinds) and base is None) or not kinds:
        raise EvalError("no candidate to evaluate: pass --model BASE for base and few-shot, a run or --adapter, or --merged DIR")
    system_prompt = Path(args.system_prompt).read_text(encoding="utf-8").strip() if args.system_prompt else None
    candidates = build_candidates(kinds, base=base or "", adapters=adapters, merged=args.merged, train=train, items=items,
                                  system_prompt=system_prompt, shots=args.few_shot, seed=args.seed)
    regression = None
    if args.regression:
        regression_set = read_items(args.regression, need_reference=False)
        if not regression_set.items:
            raise EvalError(f"{args.regression}: no usable regression rows (a prompt, and a reference or an `expect` object)")
        regression = (args.regression, regression_set.items)
    return _evaluate(args, candidates, items, item_set.skipped, source, train, regression, output)


def _evaluate(args, candidates, items, skipped, source, train, regression, output: Path) -> int:
    from rich.console import Console

    from curate.evaluate.candidates import Models
    from curate.evaluate.hygiene import contamination
    from curate.evaluate.pipeline import EvalSettings, evaluate
    from curate.evaluate.report import terminal_report, write_report
    from curate.train.model import pick_device

    say = lambda message: print(message, file=sys.stderr)  # noqa: E731
    if skipped:
        say(f"curate: {skipped} rows of {source} have no usable prompt and reference; evaluating {len(items)}")
    hygiene = contamination(items, train) if train else None
    if not train:
        say("curate: no training rows (pass --train FILE or a run folder): eval contamination not checked")
    if hygiene and hygiene["contaminated"]:
        count = len(hygiene["contaminated"])
        first = hygiene["contaminated"][0]
        message = f"{count} of {len(items)} eval prompts are in the training data (LK rules), e.g. {first['where']} ~ {first['train']}: {first['message']}"
        if args.strict:
            error(f"{message}; refusing (--strict); drop them from the eval or the training data")
            return EXIT_REFUSED
        say(f"curate: warning: {message}")
    device = pick_device()
    if device.type == "cpu":
        say("curate: no CUDA device: generating on the CPU")
    models = Models(device)
    if args.engine == "vllm":
        from curate.evaluate.generation import VllmEngine

        models.vllm = VllmEngine()
    models.load(candidates)
    settings = EvalSettings(max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, engine=args.engine, seed=args.seed,
                            progress=not args.no_progress)
    report, rows = evaluate(models, candidates, items, settings, source=source, hygiene=hygiene, regression=regression,
                            train_answers=[c.messages[-1]["content"] for c in train], command=["curate", *sys.argv[1:]], say=say)
    report["data"]["skipped"] = skipped
    names = write_report(output, report, rows, chart=not args.no_chart)
    terminal_report(report, Console())
    print(f"wrote {output}/: {', '.join(names)}")
    return EXIT_OK
