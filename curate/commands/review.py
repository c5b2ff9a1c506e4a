"""Not built yet."""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs="*")


def run(args: argparse.Namespace) -> int:
    sys.stderr.write("curate: error: `curate review` is not available in this build yet\n")
    return 2
