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


def base_model_revision(name: str) -> dict[str, str]:
    """Which weights the base model was: the snapshot commit of a hub model in the
    Hugging Face cache; else a sha256 over its config, its weight index and each weight
    file's name, size and content sampled at 64 evenly spaced 64 KiB chunks (new weights
    change nearly every byte; reading all of a 14 GB model would take a while), so two
    runs show when the weights changed."""
    folder = Path(name).expanduser()
    if not folder.is_dir():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(name, "config.json")
        except Exception:  # a name the hub library rejects
            cached = None
        if not isinstance(cached, str):
            return {"kind": "unknown", "reason": "not a local folder and not in the Hugging Face cache"}
        folder = Path(cached).parent
    if folder.parent.name == "snapshots" and folder.parent.parent.name.startswith("models--"):
        return {"kind": "hub snapshot", "commit": folder.name}
    digest = hashlib.sha256()
    for file in sorted(folder.iterdir()):
        if file.name == "config.json" or file.name.endswith(".index.json"):
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
        elif file.suffix in (".safetensors", ".bin", ".gguf", ".pt"):
            digest.update(f"{file.name}\0{file.stat().st_size}\0".encode())
            _update_sampled(digest, file)
    return {"kind": "local folder", "sha256": digest.hexdigest()}


def _update_sampled(digest, path: Path, chunks: int = 64, chunk: int = 64 << 10) -> None:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        if size <= chunks * chunk:
            digest.update(handle.read())
            return
        for index in range(chunks):
            handle.seek(index * (size - chunk) // (chunks - 1))
            digest.update(handle.read(chunk))


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
