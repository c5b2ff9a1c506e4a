"""The kernels compiled ahead of time (curate.text.aot): built once in a child process, loaded
without numba, releasing the GIL, and never in the way when they cannot be built."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from curate.text import aot
from tests.conftest import ROOT, write_jsonl
from tests.test_dedup import clean_rows, planted_copy


def test_the_built_kernels_release_the_gil():
    """pycc's wrappers keep the GIL unless told otherwise (`NoGilFlags`); callers split rows over
    threads, which would then run one after the other. A wrapper that releases it calls
    PyEval_SaveThread (a build without the flag has no such symbol)."""
    assert aot.load() is not None
    assert b"PyEval_SaveThread" in aot.module_path(aot.cache_dir(), aot.module_name()).read_bytes()


def test_a_large_lint_runs_the_built_kernels_without_starting_numba(tmp_path):
    """The point of building them: a large lint loads a plain extension module, not numba and LLVM
    (~0.5 s of CPU and ~105 MiB a process); its findings are the numpy path's."""
    import random

    assert aot.load() is not None  # built (by `make install`, or here)
    rng = random.Random(3)
    rows = [planted_copy(row, rng) for row in clean_rows() for _ in range(3)] + clean_rows()
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    script = (
        "import sys, json\nimport curate.text.shingles as shingles\nfrom curate.cli import main\n"
        "shingles.COMPILED_MIN_SHINGLES = int(sys.argv[1])\n"
        "shingles.SMALL_INPUTS_USE_BUILT_KERNELS = sys.argv[1] == '0'\n"
        f"code = main(['lint', {str(data)!r}, '--isolated', '--select', 'DU', '--format', 'json', '-o', sys.argv[2]])\n"
        "print('LOADED=' + ','.join(sorted(m for m in sys.modules if m in ('numba', 'llvmlite', 'curate.text.kernels') or m.startswith('curate_kernels_'))))\n"
    )
    loaded, reports = [], []
    for threshold in (0, 10**18):  # the compiled kernels from the first batch; numpy throughout
        out = tmp_path / f"out-{threshold}.json"
        proc = subprocess.run([sys.executable, "-c", script, str(threshold), str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
        assert proc.returncode == 0, proc.stderr  # near-duplicates are warnings
        loaded.append(proc.stdout.split("LOADED=")[1].strip())
        reports.append(out.read_text())
    assert loaded[0] == aot.module_name() and loaded[1] == ""
    compiled, numpy_only = (json.loads(report)["findings"] for report in reports)
    assert any(finding["code"] == "DU002" for finding in compiled) and compiled == numpy_only


def test_a_failed_build_is_remembered_and_the_jit_kernels_are_used(monkeypatch, tmp_path, capsys):
    import curate.text.shingles as shingles

    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path))
    builds = []

    def failing_build(command, **kwargs):
        builds.append(command)
        return subprocess.CompletedProcess(command, 1, "", "numba.core.errors.TypingError: no such thing\n")

    monkeypatch.setattr(aot.subprocess, "run", failing_build)
    assert aot.load() is None
    assert (tmp_path / f"{aot.module_name()}.failed").read_text() == "numba.core.errors.TypingError: no such thing\n"
    assert "could not compile the kernels ahead of time (numba.core.errors.TypingError: no such thing)" in capsys.readouterr().err
    assert aot.load() is None and len(builds) == 1  # not tried again for this source
    monkeypatch.setattr(shingles, "_built_kernels", shingles._built_kernels.__wrapped__)  # looked up in this cache, not remembered
    fallback = shingles._load_kernels.__wrapped__()
    assert fallback is not None and fallback.__name__ == "curate.text.kernels"


def test_without_a_c_compiler_nothing_is_built(monkeypatch, tmp_path):
    import sysconfig

    monkeypatch.setenv("CURATE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(sysconfig, "get_config_var", lambda name: "no-such-compiler -pthread" if name == "CC" else None)
    monkeypatch.setattr(aot.subprocess, "run", lambda *args, **kwargs: pytest.fail("a build was started"))
    assert aot.load() is None
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_an_empty_cache_gets_the_module_built_in_a_child_process(tmp_path):
    """The first large lint on a machine builds the module (~9 s) in a child process, renamed into
    place whole, and loads it; the asking process never imports numba."""
    script = "import sys\nfrom curate.text import aot\nmodule = aot.load()\nprint(module.__name__, 'numba' in sys.modules)\n"
    env = {**__import__("os").environ, "CURATE_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [aot.module_name(), "False"]
    names = sorted(path.name for path in (tmp_path / "cache").iterdir())
    assert names == sorted([f"{aot.module_name()}.lock", aot.module_path(tmp_path / "cache", aot.module_name()).name])  # no half-built leftovers


def test_the_module_is_compiled_for_this_cpu_and_named_after_it(monkeypatch):
    """Compiled for the host CPU (its vector instructions make the MinHash kernel ~4x faster than
    generic code), so a module built on another machine (a shared cache folder) must never load
    here: the CPU's model and flags are part of the name."""
    assert aot.host_cpu_description() and aot.target_cpu() == "host"  # Linux: /proc/cpuinfo
    here = aot.module_name()
    monkeypatch.setattr(aot, "host_cpu_description", lambda: "model name\t: Other CPU|flags\t\t: fpu sse sse2")
    assert aot.module_name() != here and aot.target_cpu() == "host"
    monkeypatch.setattr(aot, "host_cpu_description", lambda: "")
    assert aot.target_cpu() == ""  # where the CPU cannot be told: generic code
