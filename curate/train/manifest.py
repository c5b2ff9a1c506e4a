"""manifest.json: what a run was trained on, how, with what, and how it went."""

from __future__ import annotations

import hashlib
import platform
from importlib import metadata
from pathlib import Path

import orjson

from curate import __version__
from curate.io import atomic_write_bytes

LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate")


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"curate": __version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def write_manifest(path: Path, manifest: dict) -> None:
    atomic_write_bytes(path, orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY) + b"\n")


def read_manifest(run: Path) -> dict:
    return orjson.loads((run / "manifest.json").read_bytes())
