"""The command line: exit codes, baseline, rule docs, pre-commit hook, import hygiene."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import yaml

from curate.engine.rule import REGISTRY, load_builtin_rules, missing_doc_sections
from tests.conftest import ROOT, SAMPLES, write_jsonl

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"}]}
WARN_ONLY = {"messages": [{"role": "user", "content": "hi", "nam": "x"}, {"role": "assistant", "content": "Hello"}]}
#: Never imported by `curate lint`: the training stack and the TUI, and scipy (through datasketch,
#: ~0.3 s of start-up a pre-commit run should not pay; curate.text.minhash reproduces what it needs).
HEAVY = ("torch", "transformers", "peft", "datasets", "textual", "bitsandbytes", "accelerate", "datasketch", "scipy")


def curate(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "curate", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_exit_codes(tmp_path):
    clean = write_jsonl(tmp_path / "clean.jsonl", [GOOD])
    warn = write_jsonl(tmp_path / "warn.jsonl", [WARN_ONLY])
    broken = write_jsonl(tmp_path / "broken.jsonl", ["{oops"])
    sc = ("--isolated", "--select", "SC")
    assert curate("lint", str(clean), *sc).returncode == 0
    assert curate("lint", str(warn), *sc).returncode == 0
    assert curate("lint", str(warn), *sc, "--fail-on", "warning").returncode == 1
    assert curate("lint", str(broken), *sc).returncode == 1
    assert curate("lint", str(broken), *sc, "--fail-on", "never").returncode == 0
    usage = curate("lint", str(clean), "--format", "yaml")
    assert usage.returncode == 2 and "invalid choice" in usage.stderr
    unknown = curate("lint", str(clean), "--select", "XX123")
    assert unknown.returncode == 2 and "unknown rule selector `XX123`" in unknown.stderr
    assert curate().returncode == 2


def test_fail_on_from_config(tmp_path):
    warn = write_jsonl(tmp_path / "warn.jsonl", [WARN_ONLY])
    (tmp_path / "curate.toml").write_text('select = ["SC"]\nfail-on = "warning"\n')
    assert curate("lint", str(warn)).returncode == 1
    assert curate("lint", str(warn), "--fail-on", "error").returncode == 0


def test_set_rule_option_on_the_command_line(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", [{"ticket": 1, **GOOD}])
    assert "SC008" in curate("lint", str(data), "--isolated", "--select", "SC008").stdout
    proc = curate("lint", str(data), "--isolated", "--select", "SC008", "--set", 'SC008.allowed=["ticket"]')
    assert proc.returncode == 0 and "No problems found" in proc.stdout
    bad = curate("lint", str(data), "--isolated", "--set", "SC008allowed")
    assert bad.returncode == 2 and "RULE.KEY=VALUE" in bad.stderr


def test_output_file_is_written_atomically(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", ["{oops", GOOD])
    out = tmp_path / "report.json"
    proc = curate("lint", str(data), "--isolated", "--select", "SC", "--format", "json", "-o", str(out))
    assert proc.returncode == 1 and proc.stdout == ""
    assert json.loads(out.read_text())["summary"]["by_code"] == {"SC001": 1}


def test_json_report_is_the_same_on_stdout_and_in_a_file(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", ["{oops", WARN_ONLY, GOOD])
    out = tmp_path / "report.json"
    to_file = curate("lint", str(data), "--isolated", "--select", "SC", "--format", "json", "-o", str(out))
    to_stdout = curate("lint", str(data), "--isolated", "--select", "SC", "--format", "json")
    assert to_file.returncode == to_stdout.returncode == 1
    assert to_stdout.stdout == out.read_text(encoding="utf-8") and to_stdout.stdout.endswith("}\n")
    assert json.loads(to_stdout.stdout)["summary"]["by_code"] == {"SC001": 1, "SC008": 1}


def test_the_executable_ends_a_lint_without_teardown_yet_runs_exit_handlers_and_flushes(tmp_path):
    """`entry` (the `curate` executable) ends a lint with `os._exit`: the lint's exit code, its whole
    report on stdout, and the exit handlers (multiprocessing's clean-up) run first."""
    warn = write_jsonl(tmp_path / "warn.jsonl", [WARN_ONLY] * 3)
    marker = tmp_path / "handler-ran"
    script = (
        "import atexit, sys\n"
        "from curate.cli import entry\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'w').write('ran'))\n"
        f"sys.argv = ['curate', 'lint', {str(warn)!r}, '--isolated', '--select', 'SC', '--fail-on', 'warning', '--format', 'json']\n"
        "entry()\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and marker.read_text() == "ran"
    assert json.loads(proc.stdout)["summary"]["warnings"] == 3


def test_baseline_waives_known_rows_by_content_not_line(tmp_path):
    rows = ["{oops", WARN_ONLY, GOOD]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    baseline = tmp_path / "baseline.json"
    sc = ("--isolated", "--select", "SC", "--fail-on", "warning")
    written = curate("lint", str(data), *sc, "--write-baseline", str(baseline))
    assert written.returncode == 0 and "2 waivers" in written.stderr
    assert json.loads(baseline.read_text())["version"] == 1
    waived = curate("lint", str(data), *sc, "--baseline", str(baseline))
    assert waived.returncode == 0 and "2 findings waived by the baseline" in waived.stdout
    # A new bad row above the old ones shifts every line; only the new row is reported.
    write_jsonl(data, ['{"messages": 5}', *rows])
    shifted = curate("lint", str(data), *sc, "--baseline", str(baseline), "--format", "json")
    report = json.loads(shifted.stdout)
    assert shifted.returncode == 1
    assert [(f["code"], f["line"]) for f in report["findings"]] == [("SC003", 1)]
    # Editing a waived row un-waives it.
    edited = dict(WARN_ONLY, messages=[dict(WARN_ONLY["messages"][0], content="hello"), WARN_ONLY["messages"][1]])
    write_jsonl(data, ["{oops", edited, GOOD])
    report = json.loads(curate("lint", str(data), *sc, "--baseline", str(baseline), "--format", "json").stdout)
    assert [(f["code"], f["line"]) for f in report["findings"]] == [("SC008", 2)]


def test_missing_baseline_is_a_usage_error(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", [GOOD])
    proc = curate("lint", str(data), "--isolated", "--baseline", str(tmp_path / "nope.json"))
    assert proc.returncode == 2 and "--write-baseline" in proc.stderr


def test_rules_list_and_docs():
    listing = curate("rules", "--format", "json")
    assert listing.returncode == 0
    listed = {rule["code"]: rule for rule in json.loads(listing.stdout)}
    assert set(listed) == set(load_builtin_rules())
    doc = curate("rules", "SC007")
    assert doc.returncode == 0
    for section in ("What it does", "Why is this bad", "Example", "Use instead"):
        assert section in doc.stdout
    by_name = curate("rules", "unexpected-key")
    assert "Options" in by_name.stdout and "allowed" in by_name.stdout
    unknown = curate("rules", "SC07")
    assert unknown.returncode == 2 and "did you mean" in unknown.stderr


def test_every_rule_documents_itself():
    for code, rule in load_builtin_rules().items():
        assert not missing_doc_sections(rule.__doc__), code
        assert rule.summary().endswith("."), code


def test_rule_without_doc_sections_is_rejected_at_definition():
    import pytest

    from curate.engine.rule import RowRule

    with pytest.raises(TypeError, match="docstring lacks sections"):

        class Undocumented(RowRule):  # noqa: F841
            """Does things."""

            code = "ZZ901"
            name = "undocumented"

    with pytest.raises(TypeError, match="does not match"):

        class BadCode(RowRule):  # noqa: F841
            """Bad code.

            ## What it does
            ## Why is this bad
            ## Example
            ## Use instead
            """

            code = "Z1"
            name = "bad-code"

    assert "ZZ901" not in REGISTRY


def test_lint_does_not_import_heavy_libraries():
    model = SAMPLES / "tiny-chat"
    model_args = ["--model", str(model)] if model.exists() else []
    eval_args = ["--eval", str(SAMPLES / "support-eval.jsonl")]
    script = (
        "import sys\n"
        "from curate.cli import main\n"
        f"code = main(['lint', {str(SAMPLES / 'support-chat.jsonl')!r}, '--isolated', '--format', 'json', *{model_args + eval_args!r}])\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
        "print('EXIT=' + str(code))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert "EXIT=1" in proc.stdout, proc.stderr[-2000:]
    assert "HEAVY=\n" in proc.stdout, proc.stdout.splitlines()[-2:]


def loaded_after(argv: list[str], modules: tuple[str, ...]) -> tuple[list[str], str]:
    """Which of `modules` a fresh interpreter has imported after `curate ARGV`, and its stderr."""
    script = (
        "import sys\n"
        "from curate.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('LOADED=' + ','.join(m for m in {modules!r} if m in sys.modules))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    line = next((line for line in proc.stdout.splitlines() if line.startswith("LOADED=")), None)
    assert line is not None, proc.stderr[-2000:]
    return [name for name in line.removeprefix("LOADED=").split(",") if name], proc.stderr


def settings_when_loaded(argv: list[str], env: dict[str, str]) -> dict[str, list]:
    """The native library settings (`curate.io.configure_native_libraries`) in the environment at
    the moment a fresh interpreter running `curate ARGV` imports polars, and numpy."""
    script = (
        "import json, os, sys\n"
        "seen = {}\n"
        "class Watch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name in ('polars', 'numpy') and name not in seen:\n"
        "            seen[name] = [os.environ.get(key) for key in ('_RJEM_MALLOC_CONF', 'NUMPY_MADVISE_HUGEPAGE', 'OPENBLAS_NUM_THREADS')]\n"
        "sys.meta_path.insert(0, Watch())\n"
        "from curate.cli import main\n"
        f"main({argv!r})\n"
        "print('SEEN=' + json.dumps(seen))\n"
    )
    clean = {name: value for name, value in os.environ.items() if name not in ("_RJEM_MALLOC_CONF", "NUMPY_MADVISE_HUGEPAGE", "OPENBLAS_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300, env={**clean, **env})
    line = next((line for line in proc.stdout.splitlines() if line.startswith("SEEN=")), None)
    assert line is not None, proc.stderr[-2000:]
    return json.loads(line.removeprefix("SEEN="))


def test_lint_sets_up_the_native_libraries_before_loading_them():
    """polars' allocator, numpy's huge-page advice and its OpenBLAS read their settings once, when they load: `curate
    lint` and `curate fix` set them first, and leave a user's own alone."""
    from curate.io import POLARS_ALLOCATOR

    sample = str(SAMPLES / "support-chat.jsonl")
    tuned = settings_when_loaded(["lint", sample, "--isolated", "--format", "json"], {})
    assert tuned == {"numpy": [POLARS_ALLOCATOR, "0", "1"], "polars": [POLARS_ALLOCATOR, "0", "1"]}
    own_settings = {"_RJEM_MALLOC_CONF": "narenas:1", "NUMPY_MADVISE_HUGEPAGE": "1", "OPENBLAS_NUM_THREADS": "2"}
    own = settings_when_loaded(["lint", sample, "--isolated", "--format", "json"], own_settings)
    assert own["numpy"] == ["narenas:1", "1", "2"]
    fixed = settings_when_loaded(["fix", sample, "--isolated", "--dry-run"], {})
    assert fixed["numpy"] == [POLARS_ALLOCATOR, "0", "1"]


def test_help_and_error_paths_do_not_import_polars_or_pydantic(tmp_path):
    """`--help`, a missing input, a config error and `curate rules` end before any row is read:
    they must not pay for polars (nor pydantic, only needed to validate a table that is set)."""
    assert loaded_after(["--help"], ("polars", "numpy", "pydantic", "rich")) == ([], "")
    assert loaded_after(["lint", "--help"], ("polars", "numpy", "pydantic", "rich"))[0] == []
    missing, stderr = loaded_after(["lint", str(tmp_path / "nosuchfile.jsonl"), "--isolated"], ("polars", "pydantic"))
    assert "nosuchfile.jsonl: no such file" in stderr and missing == []
    unknown, stderr = loaded_after(["lint", str(SAMPLES / "support-chat.jsonl"), "--isolated", "--select", "XX123"], ("polars", "pydantic"))
    assert "unknown rule selector `XX123`" in stderr and unknown == []
    assert loaded_after(["rules"], ("polars", "pydantic"))[0] == []


def test_plain_lint_needs_no_pydantic_and_a_set_option_is_still_validated():
    sample = str(SAMPLES / "support-chat.jsonl")
    assert loaded_after(["lint", sample, "--isolated", "--format", "json"], ("pydantic",))[0] == []
    loaded, stderr = loaded_after(["lint", sample, "--isolated", "--set", "DU002.threshold=1.5"], ("pydantic",))
    assert loaded == ["pydantic"]
    assert "rule DU002 (near-duplicate) options: `threshold`: Input should be less than or equal to 1" in stderr


def test_pre_commit_hook_runs_on_samples():
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    hook = next(h for h in hooks if h["id"] == "curate-lint")
    import re

    assert re.search(hook["files"], "data/train.jsonl") and not re.search(hook["files"], "README.md")
    entry = shlex.split(hook["entry"])
    assert entry[0] == "curate"
    exe = ROOT / ".venv" / "bin" / "curate"
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "curate"]
    clean = subprocess.run([*command, *entry[1:], str(SAMPLES / "clean-chat.jsonl")], capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    dirty = subprocess.run([*command, *entry[1:], str(SAMPLES / "support-chat.jsonl")], capture_output=True, text=True, timeout=300)
    assert dirty.returncode == 1 and "SC001" in dirty.stdout


def test_readme_lists_every_rule():
    """The README's rule table is the user's catalog: a new rule must appear in it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = [code for code in load_builtin_rules() if f"| {code} |" not in readme]
    assert not missing, f"README rule table lacks {missing}"


def test_rule_docs_say_where_the_rule_is_defined():
    doc = curate("rules", "QL006")
    match = re.search(r"defined in (curate/rules/\w+\.py):(\d+)", doc.stdout)
    assert doc.returncode == 0 and match, doc.stdout
    source = (ROOT / match.group(1)).read_text(encoding="utf-8").splitlines()
    assert source[int(match.group(2)) - 1].startswith("class PiiOrSecret(")
    info = json.loads(curate("rules", "SC007", "--format", "json").stdout)
    assert info["source"].startswith("curate/rules/schema.py:") and info["fixable"] is True


def test_a_text_report_to_a_pipe_does_not_import_rich():
    """rich styles a terminal's report and draws charts; a pre-commit lint writing plain lines to
    a pipe does without it (~22 ms)."""
    plain, _ = loaded_after(["lint", str(SAMPLES / "clean-chat.jsonl"), "--isolated", "--no-progress"], ("rich",))
    charted, _ = loaded_after(["lint", str(SAMPLES / "clean-chat.jsonl"), "--isolated", "--no-progress", "--stats"], ("rich",))
    assert plain == [] and charted == ["rich"]
