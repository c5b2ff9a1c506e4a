"""Export a trained LoRA adapter, or merge it into its base model.

`curate export RUN_DIR -o DIR` copies the adapter with the tokenizer and the chat
template used in training (load it with `PeftModel.from_pretrained(base, DIR)`).
`curate export RUN_DIR --merge -o DIR` loads the base model recorded in the run's
manifest in full precision, merges the adapter and writes a model folder that
loads with plain `AutoModelForCausalLM.from_pretrained(DIR)`, with the tokenizer
and the exact chat template used in training.

Exit codes: 0 written, 2 usage, run-folder or model-loading error."""

from __future__ import annotations

import argparse
from pathlib import Path

from curate.commands.common import error, refuse_overwriting_inputs

DTYPES = ("auto", "float32", "bfloat16", "float16")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a `curate train` run folder")
    parser.add_argument("--merge", action="store_true", help="merge the adapter into the full-precision base weights")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the adapter or the merged model (must not exist or be empty)")
    parser.add_argument("--dtype", choices=DTYPES, default="auto", help="weight dtype of the merged model (default: the base model's)")


def run(args: argparse.Namespace) -> int:
    from curate.train.export import ExportError, copy_adapter, merge

    if refuse_overwriting_inputs([args.output], [args.run_dir], folders=True):
        return 2
    try:
        if not args.merge:
            copied = copy_adapter(Path(args.run_dir), Path(args.output))
            print(f"wrote {args.output}: the LoRA adapter for {copied['base_model']} with its tokenizer and chat template "
                  f"({len(copied['files'])} files; load with PeftModel.from_pretrained(base, {args.output!r}), or pass --merge for a merged model)")
            return 0
        info = merge(Path(args.run_dir), Path(args.output), args.dtype)
    except ExportError as exc:
        error(str(exc))
        return 2
    print(f"wrote {args.output}: {info['base_model']} + adapter from {args.run_dir}, merged ({info['parameters'] / 1e6:,.1f}M parameters, {info['dtype']})")
    return 0
