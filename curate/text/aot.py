"""The numba kernels (`curate.text.kernels`) compiled ahead of time into an extension module of
their own (`numba.pycc`), which a large lint loads in under a millisecond.

Starting numba in a lint process (its import, then loading the kernels from its on-disk cache)
costs ~0.5 s of CPU and ~105 MiB of memory, in every process: at 1M rows both lint processes
pay it, ~140 MiB of the run's peak (PSS). The compiled module is a plain C extension: no numba
and no LLVM are loaded to run it. Its functions are the kernels' own code, compiled by numba
(the same bits: the tests compare them with numpy), and release the GIL as `nogil` kernels do.

The module is built once per kernel source and machine: its name carries a key of `kernels.py`,
this file, the Python version, the platform and the CPU it is compiled for (`module_name`), so a
changed kernel is built anew, and a stale module, or one built on another machine that shares
the cache folder, is never loaded. A child process builds it (`python -m curate.text.aot [DIR]`,
which `make install` runs), so numba never loads into the process that asked; a large lint that
finds none builds it then (~9 s, once), holding a lock so that a run's processes build it once.
Where there is no C compiler, or the build fails, `load` returns None and the caller uses the
JIT kernels; a failed build is remembered (`NAME.failed` beside it, with its error) and not
tried again for that source.

It is kept where numba keeps its cache: the package's `__pycache__` when writable, else the
user's cache folder; `CURATE_CACHE_DIR` picks another.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

#: The exported kernels and their argument types, as the callers pass them (C-contiguous arrays).
EXPORTS = {
    "shingle_sets_into": "int64(uint64[::1], int64[::1], int64[::1], int64, int64, int64, uint32[::1], int64, int64[::1])",
    "signatures_into": "void(uint32[::1], int64[::1], int64[::1], uint32[::1], uint32[::1], int64, int64, uint32[:, ::1])",
    "band_keys_into": "void(uint32[::1], int64[::1], int64[::1], uint32[::1], uint32[::1], int64, uint64[::1], int64, int64, uint64[:, ::1])",
    "ascii_words_into": "UniTuple(int64, 2)(uint8[::1], int64[::1], int64[::1], uint8[::1], uint8[::1], int64[::1], int64[::1])",
    "pair_shared_into": "void(uint32[::1], int64[::1], int64[::1], int64[::1], int64[::1], int64, int64, int64[::1])",
    "sequence_sums_into": "void(uint64[::1], int64[::1], uint64[::1], uint64[::1])",
}
#: How long a build may take before it counts as failed (it takes ~9 s).
BUILD_TIMEOUT_S = 600


def cache_dir() -> Path:
    """Where the compiled module is kept (see the module docstring)."""
    chosen = os.environ.get("CURATE_CACHE_DIR")
    if chosen:
        return Path(chosen).expanduser()
    beside = Path(__file__).parent / "__pycache__"
    if os.access(beside if beside.is_dir() else beside.parent, os.W_OK):
        return beside
    from curate.io import user_cache_home

    return user_cache_home() / "curate"


def module_name() -> str:
    """`curate_kernels_` and a key of everything the built module depends on: the sources, the
    Python version and platform, and the CPU it is compiled for (`target_cpu`)."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for source in (here / "kernels.py", Path(__file__)):
        digest.update(source.read_bytes())
    digest.update(f"{sys.version}|{sys.platform}|{os.uname().machine if hasattr(os, 'uname') else ''}".encode())
    digest.update(host_cpu_description().encode())
    return f"curate_kernels_{digest.hexdigest()[:16]}"


def host_cpu_description() -> str:
    """The CPU's model and instruction-set flags (Linux: `/proc/cpuinfo`'s first processor), or ""
    where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            first = cpuinfo.read(1 << 16).split("\n\n", 1)[0]
    except OSError:
        return ""
    wanted = ("model name", "flags", "Features", "CPU part", "CPU implementer")
    return "|".join(line.strip() for line in first.splitlines() if line.split(":", 1)[0].strip() in wanted)


def target_cpu() -> str:
    """What the module is compiled for: this CPU ("host": its vector instructions make the MinHash
    kernel ~4x faster than generic x86-64 code) where `host_cpu_description` names it, so a
    module built on one machine is never loaded on another (the key differs); generic code
    where it cannot be told."""
    return "host" if host_cpu_description() else ""


def module_path(directory: Path, name: str) -> Path:
    return directory / (name + importlib.machinery.EXTENSION_SUFFIXES[0])


def load(build: bool = True) -> ModuleType | None:
    """The compiled kernels, built first when `build` and there are none yet; None where they
    cannot be had (no C compiler, a failed build, nowhere to write)."""
    name = module_name()
    directory = cache_dir()
    path = module_path(directory, name)
    if not path.exists():
        if not build or not can_build(directory, name):
            return None
        if not build_once(directory, name):
            return None
    return _import(name, path)


def _import(name: str, path: Path) -> ModuleType | None:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except ImportError:  # a broken or foreign file: the JIT kernels it is
        del sys.modules[name]
        return None
    return module


def can_build(directory: Path, name: str) -> bool:
    """A C compiler is on the PATH and no earlier build of this source failed."""
    import shutil
    import sysconfig

    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    return shutil.which(compiler) is not None and not (directory / f"{name}.failed").exists()


def build_once(directory: Path, name: str) -> bool:
    """Build the module in a child process unless another process did while this one waited for
    the lock; a failure is written to `NAME.failed`. Returns whether the module is there."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        lock = open(directory / f"{name}.lock", "a")  # noqa: SIM115 (held until the build is done)
    except OSError:
        return False
    with lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: two processes may both build; each renames a whole module into place
            pass
        if module_path(directory, name).exists():
            return True
        if (directory / f"{name}.failed").exists():
            return False
        print("curate: compiling the kernels for large inputs (once for this version, ~10 s)", file=sys.stderr)
        try:
            done = subprocess.run([sys.executable, "-m", "curate.text.aot", str(directory)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
            error = None if done.returncode == 0 else (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        except (OSError, subprocess.TimeoutExpired) as exc:
            error = f"{type(exc).__name__}: {exc}"
        if error is None and module_path(directory, name).exists():
            return True
        try:
            (directory / f"{name}.failed").write_text(f"{error}\n")
        except OSError:
            pass  # tried again next time
        print(f"curate: could not compile the kernels ahead of time ({error}); numba's JIT is used instead", file=sys.stderr)
        return False


def build(directory: Path) -> Path:
    """Compile the kernels into `directory` (in a folder of its own first, then renamed into
    place, so that a half-written module is never loaded). Runs numba: a child process's work."""
    import tempfile

    sys.modules.setdefault("scipy", None)  # type: ignore[arg-type]  # numba's BLAS probe imports scipy (the kernels use no BLAS)
    import numba.pycc.compiler
    from numba.pycc import CC

    from curate.text import kernels

    class NoGilFlags(numba.pycc.compiler.Flags):
        """pycc's wrappers keep the GIL; the kernels are `nogil`, and callers run them in threads."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.release_gil = True

    numba.pycc.compiler.Flags = NoGilFlags
    name = module_name()
    directory.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=directory, prefix=f".{name}.") as scratch:
        compiler = CC(name)
        compiler.output_dir = scratch
        compiler.target_cpu = target_cpu()
        for export, signature in EXPORTS.items():
            compiler.export(export, signature)(getattr(kernels, export).py_func)
        compiler.compile()
        target = module_path(directory, name)
        os.replace(module_path(Path(scratch), name), target)
    return target


if __name__ == "__main__":
    import warnings

    warnings.simplefilter("ignore")  # pycc's pending deprecation
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else cache_dir()))
