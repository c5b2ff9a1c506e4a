"""The `curate` command line. Each subcommand lives in `curate.commands.<name>`
with `configure(parser)` and `run(args) -> exit code`; heavy libraries are
imported inside `run`, so `curate lint` stays light enough for pre-commit."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import NoReturn

from curate import __version__

#: name -> (module, one-line help)
COMMANDS = {
    "lint": ("curate.commands.lint", "check data files for problems before training"),
    "rules": ("curate.commands.rules", "list rules, or show one rule's documentation"),
    "fix": ("curate.commands.fix", "write a cleaned copy: drop duplicates and broken rows, apply review decisions"),
    "review": ("curate.commands.review", "walk the findings in a terminal UI and keep/drop/edit rows"),
    "train": ("curate.commands.train", "QLoRA fine-tune a model on data that passes lint"),
    "export": ("curate.commands.export", "merge a trained adapter into its base model"),
    "eval": ("curate.commands.eval", "compare base, few-shot and adapter on held-out prompts, with intervals and paired tests"),
}

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # exit 2 with one line, like ruff
        self.print_usage(sys.stderr)
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="curate", description="Find what is wrong with chat fine-tuning data, then train on it.")
    parser.add_argument("--version", action="version", version=f"curate {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub = subparsers.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip())
        module.configure(sub)
        sub.set_defaults(run=module.run)
    return parser


#: Commands that read whole data files, for which `main` sets up the native libraries first
#: (`curate.io.configure_native_libraries`).
NATIVE_TUNED_COMMANDS = frozenset({"lint", "fix"})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return EXIT_USAGE
    from curate.io import InputError, configure_native_libraries

    if args.command in NATIVE_TUNED_COMMANDS:
        configure_native_libraries()
    try:
        return int(args.run(args) or 0)
    except InputError as exc:  # a file problem no command caught itself (an output over `ulimit -f`): one line
        sys.stderr.write(f"curate: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("curate: interrupted\n")
        return 130
    except BrokenPipeError:
        return 0


#: Commands after which `entry` ends the process without the interpreter's teardown.
QUICK_EXIT_COMMANDS = frozenset({"lint"})


def entry() -> NoReturn:
    """The `curate` executable: `main`, then exit. After a command of QUICK_EXIT_COMMANDS, whose
    output is all written by then, the exit handlers run and the process ends without freeing
    its objects one by one (`os._exit`): a 1M-row lint spent 0.45 s there."""
    code = main()
    if sys.argv[1:2] and sys.argv[1] in QUICK_EXIT_COMMANDS:
        import atexit
        import os

        atexit._run_exitfuncs()  # multiprocessing's clean-up, anything else registered
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (BrokenPipeError, ValueError):
            pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
