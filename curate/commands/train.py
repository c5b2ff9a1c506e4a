"""QLoRA fine-tune a chat model on data that passes lint.

Lints the data with the model's chat template first and refuses on any error
(`--force` overrides; recorded in manifest.json), audits the assistant-token
masks, then trains LoRA on a 4-bit NF4 base and writes the adapter, tokenizer,
metrics.jsonl, loss.png and manifest.json to the run folder.

Options come from `[tool.curate.train]` in pyproject.toml (`[train]` in
curate.toml, or a train-only TOML given with --config); flags win.
Multi-GPU: `accelerate launch --multi_gpu --num_processes N -m curate train ...`
(the same form runs N ranks on CPUs, over gloo).

Exit codes: 0 trained (or a dry run that would train), 1 refused by the lint
gate or the mask audit, 2 usage, configuration, input or model-loading error,
130 interrupted (a checkpoint was saved; continue with --resume)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from curate.commands.common import add_lint_options, csv_list, error, model_files, refuse_overwriting_inputs, request_from_args

EXIT_OK, EXIT_REFUSED, EXIT_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", metavar="FILE", help="training data (.jsonl, .json, .parquet, optionally .gz)")
    parser.add_argument("-o", "--output", metavar="RUN_DIR", default=None, help="run folder for the adapter, metrics and manifest (required unless --dry-run)")
    run = parser.add_argument_group("run control")
    run.add_argument("--dry-run", action="store_true", help="print rows, tokens, trained tokens, the mask audit, steps and a memory estimate; do not train")
    run.add_argument("--force", action="store_true", help="train even when lint finds errors (recorded in the manifest)")
    run.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    run.add_argument("--no-progress", action="store_true", help="log plain lines instead of a progress bar")
    run.add_argument("--no-eval", dest="eval_prompts", action="store_const", const=0, default=None, help="skip the short base-vs-adapter eval after training")
    train = parser.add_argument_group("training (override the config file)")
    train.add_argument("--epochs", type=float, default=None, help="passes over the training split (default 3)")
    train.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps (overrides --epochs)")
    train.add_argument("--learning-rate", "--lr", dest="learning_rate", type=float, default=None, help="peak learning rate (default 2e-4)")
    train.add_argument("--batch-size", type=int, default=None, help="examples per micro-batch (default 4)")
    train.add_argument("--gradient-accumulation", "--grad-accum", dest="gradient_accumulation", type=int, default=None, help="micro-batches per step (default 4)")
    train.add_argument("--lora-rank", type=int, default=None, help="LoRA rank (default 16)")
    train.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default 32)")
    train.add_argument("--lora-dropout", type=float, default=None, help="LoRA dropout (default 0.05)")
    train.add_argument("--lora-targets", type=csv_list, default=None, metavar="NAMES", help="comma-separated module names (default: all linear layers)")
    train.add_argument("--eval-fraction", type=float, default=None, help="share of rows held out for eval (default 0.05)")
    train.add_argument("--eval-file", default=None, metavar="FILE", help="separate eval file (also checked for leakage)")
    train.add_argument("--eval-every", type=int, default=None, metavar="STEPS", help="eval interval in steps (default: each epoch)")
    train.add_argument("--patience", type=int, default=None, help="early stop after N evals without improvement (default 0: off)")
    train.add_argument("--save-every", type=int, default=None, metavar="STEPS", help="checkpoint interval (default 100)")
    train.add_argument("--seed", type=int, default=None, help="seed for split, order and init (default 42)")
    train.add_argument("--packing", dest="packing", action="store_true", default=None, help="always use padding-free packing (default: when the attention kernel handles it)")
    train.add_argument("--no-packing", dest="packing", action="store_false", help="always use length-grouped padding")
    train.add_argument("--quantize", dest="quantize", action="store_true", default=None, help="4-bit NF4 base (default)")
    train.add_argument("--no-quantize", dest="quantize", action="store_false", help="plain LoRA on a full-precision base (no bitsandbytes)")
    train.add_argument("--attn-implementation", default=None, help='attention kernel: "sdpa", "eager", "flash_attention_2"')
    add_lint_options(parser, with_paths=False)


def run(args: argparse.Namespace) -> int:
    from curate.config import ConfigError
    from curate.train.config import FIELDS

    if not args.output and not args.dry_run:
        error("pass -o RUN_DIR for the run folder (or --dry-run to see what would happen)")
        return EXIT_ERROR
    try:
        config, lint = _resolve_config(args, {name: getattr(args, name, None) for name in FIELDS})
    except ConfigError as exc:
        for problem in exc.problems:
            error(problem)
        return EXIT_ERROR
    if not config.model:
        error("no model: pass --model PATH_OR_NAME or set `model` in [tool.curate.train]")
        return EXIT_ERROR
    output = Path(args.output) if args.output else None
    if refuse_overwriting_inputs([output], [args.data, config.eval_file, *model_files(config.model)], folders=True):
        return EXIT_ERROR
    if output is not None and not args.dry_run:
        problem = _output_problem(output, args.resume)
        if problem:
            error(problem)
            return EXIT_ERROR
    from curate.io import InputError, check_input_file

    for path in (args.data, config.eval_file):
        if path and not _readable_source(path):
            try:
                check_input_file(Path(path))  # says why: missing, a directory, a FIFO, ...
            except InputError as exc:
                error(str(exc))
            else:
                error(f"{path}: not a data file curate can read")
            return EXIT_ERROR

    note = single_process_launch_note(os.environ)
    if note and _is_main_process():
        sys.stderr.write(f"curate: {note}\n")
    gate = _lint_gate(args, config, lint)
    if gate is None:
        return EXIT_ERROR
    if not gate.passed and not args.force and not args.dry_run:
        from curate.train.gate import refusal_message

        if _is_main_process():
            error(refusal_message(gate, args.data))
        return EXIT_REFUSED
    if args.dry_run:
        return _dry_run(args, config, gate)
    return _train(args, config, gate, output)


def _readable_source(path: str) -> bool:
    """A data file, a `save_to_disk` folder or an hf://datasets input (what lint reads too)."""
    from curate.sources import source_kind

    return Path(path).is_file() or source_kind(path) in ("hf", "dataset")


def _is_main_process() -> bool:
    """Rank 0 of a data-parallel launch (or the only process): the one that talks."""
    return os.environ.get("RANK", "0") == "0"


def single_process_launch_note(environ) -> str | None:
    """One line when `accelerate launch --num_processes N` (N > 1) ended up starting a single
    process: without --multi_gpu and without GPUs, accelerate runs its single-process
    launcher, which sets MASTER_ADDR for the N processes it does not start."""
    launched_by_accelerate = "ACCELERATE_DYNAMO_BACKEND" in environ or "ACCELERATE_MIXED_PRECISION" in environ
    if launched_by_accelerate and "MASTER_ADDR" in environ and int(environ.get("WORLD_SIZE", "1")) <= 1 and "LOCAL_RANK" not in environ:
        return (
            "accelerate launch asked for several processes but started one (no --multi_gpu and no GPUs): "
            "this trains as 1 process, with 1 process's share of the global batch; for N ranks (CPUs too, over gloo) use "
            "`accelerate launch --multi_gpu --num_processes N -m curate train ...`"
        )
    return None


def _resolve_config(args: argparse.Namespace, flags: dict):
    """(TrainConfig, the lint options of the gate): defaults < config file < flags, each config
    file read once; the lint request carries its parsed config, so the gate reads none again."""
    from dataclasses import replace

    from curate.config import CurateConfig, load_config, resolve_relative, table_of
    from curate.engine.settings import requested_config_path
    from curate.train.config import is_train_only_table, resolve_train_config

    lint = request_from_args(args, paths=[args.data])
    path = requested_config_path(lint)
    table = table_of(path) if path is not None and path.is_file() else None
    if table is not None and path.name != "pyproject.toml" and is_train_only_table(table):
        # A train-only file says nothing about lint: the gate discovers its config as usual.
        train_table, curate_config = table, CurateConfig()
        lint_config, lint_path = load_config(requested_config_path(replace(lint, config_path=None)))
    else:
        curate_config, path = load_config(path, table)
        train_table, lint_config, lint_path = curate_config.train, curate_config, path
    base = path.parent if path else Path.cwd()
    if args.model:
        flags["model"] = args.model
    elif "model" not in train_table and curate_config.model:
        flags["model"] = resolve_relative(curate_config.model, base, may_be_hub_name=True)
    if args.max_seq_length:
        flags["max_seq_length"] = args.max_seq_length
    elif "max-seq-length" not in train_table and "max_seq_length" not in train_table and curate_config.max_seq_length:
        flags["max_seq_length"] = curate_config.max_seq_length
    lint = replace(lint, config=lint_config, config_path=str(lint_path) if lint_path else None)
    return resolve_train_config(train_table, path, flags), lint


def _output_problem(output: Path, resume: bool) -> str | None:
    from curate.train.checkpoint import latest_checkpoint

    if output.exists() and not output.is_dir():
        return f"{output} exists and is not a folder; choose another -o"
    finished = (output / "manifest.json").is_file()
    has_run = finished or latest_checkpoint(output) is not None
    if resume and finished:
        return f"--resume: the run in {output} already finished (manifest.json exists); start a new run with another -o"
    if resume and latest_checkpoint(output) is None:
        return f"--resume: {output} has no checkpoint to resume from; start without --resume"
    if has_run and not resume:
        return f"{output} already holds a run; pass --resume to continue it or choose a new -o"
    return None


def _lint_gate(args: argparse.Namespace, config, lint):
    """Lint the data with the training model's template; None after a config error was printed."""
    from curate.config import ConfigError
    from curate.engine.settings import plan_lint
    from curate.train.gate import gate_request, lint_gate

    try:
        plan = plan_lint(gate_request(config, args.data, lint))
    except ConfigError as exc:
        for problem in exc.problems:
            error(problem)
        return None
    main = _is_main_process()
    outcome, _ = lint_gate(plan, force=args.force, report_to=sys.stderr if main else None)
    summary = outcome.summary
    verdict = "passed" if outcome.passed else ("FAILED, forced" if args.force else "FAILED")
    line = f"lint gate: {verdict} ({summary['rows']} rows, {summary['errors']} errors, {summary['warnings']} warnings)"
    if main:
        print(line, file=sys.stdout if args.dry_run else sys.stderr)
    return outcome


def _dry_run(args: argparse.Namespace, config, gate) -> int:
    from curate.train.dryrun import dry_run_report
    from curate.train.model import ModelLoadError, load_tokenizer, quiet_libraries
    from curate.train.recipe import Refused, TrainError, audit_failure_text, data_refusal, prepare_data

    quiet_libraries()
    try:
        tokenizer = load_tokenizer(config.model)
        data = prepare_data(config, tokenizer, args.data, gate)
    except (ModelLoadError, TrainError) as exc:
        error(str(exc))
        return EXIT_ERROR
    if not gate.passed:
        print(f"lint gate: training would be refused{' (--force given: it would train anyway)' if args.force else ''}")
    refusal = data_refusal(config, data)
    if isinstance(refusal, Refused):  # the template cannot render rows as trained: nothing to plan
        print(refusal)
        return EXIT_REFUSED
    try:
        lines, audit, _ = dry_run_report(config, tokenizer, data)
    except TrainError as exc:
        error(str(exc))
        return EXIT_ERROR
    print("\n".join(lines))
    if refusal is not None:
        error(str(refusal))
        return EXIT_ERROR
    if not audit.ok:
        print(audit_failure_text(audit))
        return EXIT_REFUSED
    return EXIT_OK if gate.passed or args.force else EXIT_REFUSED


def _train(args: argparse.Namespace, config, gate, output: Path) -> int:
    from curate.train.model import ModelLoadError
    from curate.train.recipe import Interrupted, Refused, Reporter, Run, TrainError

    run = Run(config, args.data, output, gate=gate, resume=args.resume, reporter=Reporter(progress=not args.no_progress),
              command=["curate", *sys.argv[1:]])
    try:
        run.setup()
        run.train()
        manifest = run.save()
    except (ModelLoadError, TrainError) as exc:
        if _is_main_process():
            error(str(exc))
        return EXIT_REFUSED if isinstance(exc, Refused) else EXIT_ERROR
    except Interrupted as exc:
        sys.stderr.write(f"curate: {exc}\n")
        return EXIT_INTERRUPTED
    finally:
        run.cleanup()
    if manifest:
        _print_summary(output, manifest)
    return EXIT_OK


def _print_summary(output: Path, manifest: dict) -> None:
    results, performance = manifest["results"], manifest["performance"]
    fmt = lambda value: "n/a" if value is None else f"{value:.4f}"  # noqa: E731
    print(f"trained {manifest['training']['steps']} steps on {manifest['data']['train_examples']} examples "
          f"({manifest['training']['packing']}) in {performance['train_time_s']:.1f} s, {performance['tokens_per_s'] or 0:,.0f} tokens/s"
          + (f", MFU {performance['mfu']:.1%}" if performance.get("mfu") else ""))
    print(f"loss: train {fmt(results['final_train_loss'])}, eval {fmt(results['final_eval_loss'])} (base model {fmt(results['base_eval_loss'])})")
    print(f"wrote {output}/: adapter_model.safetensors, tokenizer, metrics.jsonl, loss.png, manifest.json")
