"""The bad-input catalog: what strangers' files, templates, configs and run folders do to curate.

One table. Each case builds its inputs in a temp folder and runs one command (in this process,
or in a subprocess when its peak memory, a hang or a signal is what is tested) and asserts:
the exit code; for an error, exactly one `error:` line that names the file (or flag); no
traceback; every input byte unchanged; and, where it matters, a peak-RSS bound (generous, for
CI) and a time bound. Sizes are small (a 256 MB line compresses to ~250 KB of gzip, written
streaming), so the whole module runs in well under a minute.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle
import resource
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_jsonl
from tests.fixture_models import CHATML, CHATML_TOKENS, SANDBOX_ESCAPE, SYNTAX_ERROR, tokenizer_json

ROWS = [
    {"messages": [{"role": "user", "content": "Natalia sold clips to 48 of her friends in April, and then half as many in May. How many did she sell?"},
                  {"role": "assistant", "content": "In May she sold 48 / 2 = 24 clips, so 48 + 24 = 72 in all.\n#### 72"}]},
    {"messages": [{"role": "system", "content": "You answer in one short sentence."}, {"role": "user", "content": "What is the capital of Hungary?"},
                  {"role": "assistant", "content": "The capital of Hungary is Budapest."}]},
    {"instruction": "Give three tips for staying healthy.", "input": "", "output": "Eat vegetables, sleep eight hours and walk every day."},
    {"messages": [{"role": "user", "content": "Translate 'good morning' to French."}, {"role": "assistant", "content": "Bonjour."},
                  {"role": "user", "content": "And to Spanish?"}, {"role": "assistant", "content": "Buenos días."}]},
]
CHAT_ROWS = [row for row in ROWS if "messages" in row]

#: A runner for subprocess cases: the child reports its own peak RSS (KiB) when it exits. VmHWM
#: is this process image's high-water mark; `ru_maxrss` is not: Linux carries the forked copy of
#: the (large) test process across exec into it, so it measured pytest, not curate.
RUNNER = (
    "import os, re, sys\n"
    "from curate.cli import main\n"
    "try:\n"
    "    code = main(sys.argv[1:])\n"
    "finally:\n"
    "    with open('/proc/self/status') as status, open(os.environ['CURATE_TEST_RSS'], 'w') as f:\n"
    "        f.write(re.search(r'VmHWM:\\s+(\\d+)', status.read()).group(1))\n"
    "sys.exit(code)\n"
)


@dataclass
class Outcome:
    code: int
    out: str
    err: str
    peak_mb: float | None = None
    seconds: float = 0.0


@dataclass
class Case:
    """One catalog entry. `build(tmp)` writes the inputs and returns the argv after `curate`."""

    id: str
    build: Callable[[Path], list[str]]
    code: int
    #: Text the one error line (exit 2) or the report (exit 0/1) must contain; `{tmp}` is the folder.
    says: str
    #: Run in a subprocess, with these bounds (MB of peak RSS, seconds).
    subprocess: bool = False
    max_mb: float | None = None
    max_seconds: float = 60
    #: Files (names in tmp) the command may create; everything else must be byte-identical.
    outputs: tuple[str, ...] = ()
    limits: dict = field(default_factory=dict)
    check: Callable[[Path, Outcome], None] | None = None


# --------------------------------------------------------------------------- builders


def data(tmp: Path, rows=ROWS, name="data.jsonl") -> Path:
    return write_jsonl(tmp / name, rows)


def raw_file(name: str, content: bytes) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        (tmp / name).write_bytes(content)
        return ["lint", str(tmp / name), "--isolated"]

    return build


def jsonl_bytes(rows=ROWS, newline=b"\n") -> bytes:
    return b"".join(json.dumps(row, ensure_ascii=False).encode() + newline for row in rows)


def gzip_with_one_huge_line(path: Path, line_bytes: int) -> None:
    """A .jsonl.gz whose second line is `line_bytes` long, written streaming (a few hundred KB)."""
    with gzip.open(path, "wb", compresslevel=1) as handle:
        handle.write(jsonl_bytes(ROWS[:1]))
        handle.write(b'{"text": "')
        chunk = b"a" * (1 << 20)
        for _ in range(line_bytes >> 20):
            handle.write(chunk)
        handle.write(b'"}\n')
        handle.write(jsonl_bytes(ROWS[1:]))


def gz_bomb_json(path: Path, decompressed: int) -> None:
    """A .json.gz of one array that decompresses to `decompressed` bytes of spaces."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    with path.open("wb") as handle:
        handle.write(compressor.compress(b"["))
        chunk = b" " * (1 << 20)
        for _ in range(decompressed >> 20):
            handle.write(compressor.compress(chunk))
        handle.write(compressor.compress(b"]"))
        handle.write(compressor.flush())


def model(tmp: Path, template: str, name: str = "model", as_file: bool = False) -> Path:
    """A tokenizer folder (byte-level BPE, ChatML tokens) with this chat template."""
    folder = tmp / name
    folder.mkdir()
    (folder / "tokenizer.json").write_text(tokenizer_json(CHATML_TOKENS), encoding="utf-8")
    config = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "model_max_length": 512, "tokenizer_class": "PreTrainedTokenizerFast",
              "added_tokens_decoder": {str(i): {"content": t, "special": True} for i, t in enumerate(CHATML_TOKENS)}}
    if as_file:
        (folder / "chat_template.jinja").write_text(template, encoding="utf-8")
    else:
        config["chat_template"] = template
    (folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return folder


BUDGET = "[template-budget]\nrow-seconds = 0.3\n"


def template_case(template: str, *, config: str = BUDGET, rows=CHAT_ROWS, as_file: bool = False) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        folder = model(tmp, template, as_file=as_file)
        (tmp / "curate.toml").write_text(config, encoding="utf-8")
        return ["lint", str(data(tmp, rows)), "--model", str(folder), "--config", str(tmp / "curate.toml"), "--select", "CT"]

    return build


def config_case(text: str, name: str = "curate.toml") -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        (tmp / name).write_text(text, encoding="utf-8")
        return ["lint", str(data(tmp)), "--config", str(tmp / name)]

    return build


def argv_case(*argv: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        data(tmp)
        data(tmp, ROWS[:2], "eval.jsonl")
        return [arg.format(tmp=tmp) for arg in argv]

    return build


def symlink_loop(tmp: Path) -> list[str]:
    (tmp / "a.jsonl").symlink_to(tmp / "b.jsonl")
    (tmp / "b.jsonl").symlink_to(tmp / "a.jsonl")
    return ["lint", str(tmp / "a.jsonl"), "--isolated"]


def fifo(tmp: Path) -> list[str]:
    os.mkfifo(tmp / "pipe.jsonl")
    return ["lint", str(tmp / "pipe.jsonl"), "--isolated"]


def non_utf8_name(output_format: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        name = os.fsdecode(b"caf\xe9.jsonl")
        data(tmp, ROWS, name)
        return ["lint", str(tmp / name), "--isolated", "--format", output_format]

    return build


def parquet_with_binary_and_decimal(command: list[str]) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        from decimal import Decimal

        import polars as pl

        messages = [row["messages"] for row in CHAT_ROWS]
        frame = pl.DataFrame({"messages": messages, "blob": [b"\xff\x00", b"ok", b"\x00"], "price": [Decimal("1.50"), Decimal("2.00"), Decimal("0.10")]})
        frame.write_parquet(tmp / "data.parquet")
        return [part.format(tmp=tmp) for part in command]

    return build


def hard_link_output(tmp: Path) -> list[str]:
    os.link(data(tmp), tmp / "alias.jsonl")
    return ["lint", str(tmp / "data.jsonl"), "--isolated", "-o", str(tmp / "alias.jsonl")]


def symlink_output(tmp: Path) -> list[str]:
    (tmp / "report.txt").symlink_to(data(tmp))
    return ["lint", str(tmp / "data.jsonl"), "--isolated", "-o", str(tmp / "report.txt")]


def train_into_model_folder(tmp: Path) -> list[str]:
    folder = model(tmp, CHATML)
    return ["train", str(data(tmp)), "--model", str(folder), "-o", str(folder), "--isolated"]


def baseline_in_use(tmp: Path) -> list[str]:
    (tmp / "baseline.json").write_text('{"version": 1, "waived": []}\n', encoding="utf-8")
    return ["lint", str(data(tmp)), "--isolated", "--baseline", str(tmp / "baseline.json"), "-o", str(tmp / "baseline.json")]


def review_journal(command: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        path = data(tmp)
        journal = tmp / "data.jsonl.curate-review.jsonl"
        journal.write_text('{"version": 1, "kind": "header"}\n', encoding="utf-8")
        return [command, str(path), "--isolated", "-o", str(journal)]

    return build


def many_sharing_one_prompt(tmp: Path) -> list[str]:
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": f"Hello number {i} friend"}]} for i in range(300)]
    return ["lint", str(data(tmp, rows)), "--isolated", "--format", "json", "--select", "DU"]


def check_capped(tmp: Path, outcome: Outcome) -> None:
    findings = json.loads(outcome.out)["findings"]
    assert findings and all(len(f["related"]) <= 10 for f in findings)
    assert all(len(value) <= 10 for f in findings for value in f["data"].values() if isinstance(value, list))
    assert any(f["data"].get("cluster_left_out", 0) + f.get("related_left_out", 0) > 0 for f in findings)
    assert len(outcome.out) < 300 * 4000


def check_valid_json_names_file(tmp: Path, outcome: Outcome) -> None:
    document = json.loads(outcome.out)
    text = json.dumps(document)
    assert "caf\\\\xe9.jsonl" in text


def check_cleaned_parquet(tmp: Path, outcome: Outcome) -> None:
    rows = [json.loads(line) for line in (tmp / "clean.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [row["messages"] for row in rows] == [row["messages"] for row in CHAT_ROWS]


def check_mode(expected: int) -> Callable[[Path, Outcome], None]:
    def check(tmp: Path, outcome: Outcome) -> None:
        assert (tmp / "report.txt").stat().st_mode & 0o777 == expected

    return check


def check_one_row_over_budget(tmp: Path, outcome: Outcome) -> None:
    lines = [line for line in outcome.out.splitlines() if ": CT001 " in line]
    assert len(lines) == 1 and "data.jsonl:2:" in lines[0] and "render budget" in lines[0]


BOOM = (
    "{% for m in messages %}{% if m.content.startswith('What is the capital') %}"
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{% endif %}"
    "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
)


CASES = [
    # ---- data files: rows that are findings, files that are one error line
    Case("malformed-json-line", raw_file("data.jsonl", jsonl_bytes(ROWS[:1]) + b'{"messages": [\n' + jsonl_bytes(ROWS[1:])), 1, "data.jsonl:2: SC001"),
    Case("array-and-string-lines", raw_file("data.jsonl", jsonl_bytes(ROWS[:1]) + b"[1, 2]\n\"text\"\n"), 1, "data.jsonl:3: SC"),
    Case("invalid-utf8-line", raw_file("data.jsonl", jsonl_bytes(ROWS[:1]) + b'{"text": "caf\xe9"}\n'), 1, "data.jsonl:2: SC001"),
    Case("binary-file", raw_file("data.jsonl", bytes(range(256)) * 64), 1, "data.jsonl:1: SC001"),
    Case("utf8-bom", raw_file("data.jsonl", b"\xef\xbb\xbf" + jsonl_bytes()), 0, "4 rows"),
    Case("crlf", raw_file("data.jsonl", jsonl_bytes(newline=b"\r\n")), 0, "4 rows"),
    Case("empty-file", raw_file("data.jsonl", b""), 2, "data.jsonl: file is empty"),
    Case("blank-lines-only", raw_file("data.jsonl", b"\n \n\r\n"), 2, "data.jsonl: file is empty"),
    Case("utf16", raw_file("data.jsonl", jsonl_bytes().decode().encode("utf-16")), 2, "data.jsonl: file is UTF-16"),
    Case("utf32-is-not-called-utf16", raw_file("data.jsonl", jsonl_bytes().decode().encode("utf-32")), 2, "data.jsonl: file is UTF-32"),
    Case("missing-file", lambda tmp: ["lint", str(tmp / "nope.jsonl"), "--isolated"], 2, "nope.jsonl: no such file"),
    Case("directory", lambda tmp: ["lint", str(tmp), "--isolated"], 2, "is a directory"),
    Case("symlink-loop", symlink_loop, 2, "a.jsonl: cannot read"),
    Case("name-over-255-bytes", lambda tmp: ["lint", str(tmp / ("x" * 300 + ".jsonl")), "--isolated"], 2, "xxxx.jsonl: cannot read"),
    Case("fifo-without-writer", fifo, 2, "pipe.jsonl: is a FIFO", subprocess=True, max_seconds=30),
    Case("dev-zero", lambda tmp: ["lint", "/dev/zero", "--isolated"], 2, "/dev/zero: is a device", subprocess=True, max_mb=400, max_seconds=30),
    Case("truncated-gzip", raw_file("data.jsonl.gz", gzip.compress(jsonl_bytes() * 50)[:300]), 2, "data.jsonl.gz: cannot read"),
    Case("huge-line", raw_file("data.jsonl", jsonl_bytes(ROWS[:1]) + b'{"text": "' + b"a" * (11 << 20) + b'"}\n'), 1, "data.jsonl:2: SC009",
         subprocess=True, max_mb=400),
    Case("gz-with-a-256mb-line", lambda tmp: (gzip_with_one_huge_line(tmp / "data.jsonl.gz", 256 << 20), ["lint", str(tmp / "data.jsonl.gz"), "--isolated"])[1],
         1, "data.jsonl.gz:2: SC009", subprocess=True, max_mb=400),
    Case("gz-bomb-json", lambda tmp: (gz_bomb_json(tmp / "data.json.gz", 160 << 20), ["lint", str(tmp / "data.json.gz"), "--isolated"])[1],
         2, "data.json.gz: decompresses to over", subprocess=True, max_mb=400),
    Case("non-utf8-file-name-json", non_utf8_name("json"), 0, "caf", check=check_valid_json_names_file),
    Case("non-utf8-file-name-sarif", non_utf8_name("sarif"), 0, "caf", check=check_valid_json_names_file),
    Case("parquet-binary-decimal-fix", parquet_with_binary_and_decimal(["fix", "{tmp}/data.parquet", "--isolated", "-o", "{tmp}/clean.jsonl"]), 0,
         "wrote 3 rows", outputs=("clean.jsonl",), check=check_cleaned_parquet),
    Case("parquet-binary-decimal-baseline", parquet_with_binary_and_decimal(["lint", "{tmp}/data.parquet", "--isolated", "--write-baseline", "{tmp}/b.json"]),
         0, "", outputs=("b.json",)),
    # ---- models and templates
    Case("missing-model", argv_case("lint", "{tmp}/data.jsonl", "--isolated", "--model", "{tmp}/no-model"), 2, "no-model` does not exist"),
    Case("template-syntax-error", template_case(SYNTAX_ERROR), 2, "tokenizer_config.json: chat template syntax error at template line 2"),
    Case("template-sandbox-escape", template_case(SANDBOX_ESCAPE), 1, "sandbox violation"),
    Case("template-nested-range-loops", template_case("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}" + CHATML), 2,
         "tokenizer_config.json: the chat template goes over its render budget on every row tried", subprocess=True, max_seconds=30, max_mb=500),
    Case("template-one-row-over-budget", template_case(BOOM), 1, "CT001", check=check_one_row_over_budget),
    Case("template-lipsum", template_case("{{ lipsum(n=10**6) }}" + CHATML), 2, "lipsum() text", subprocess=True, max_mb=500, max_seconds=30),
    Case("template-tojson-indent", template_case("{{ messages|tojson(indent=10**8) }}" + CHATML), 2, "over the", subprocess=True, max_mb=500, max_seconds=30),
    Case("template-1gb-output", template_case("{% for i in range(100000) %}{{ 'x' * 10000 }}{% endfor %}" + CHATML), 2, "output of", subprocess=True,
         max_mb=500, max_seconds=30),
    Case("template-string-times-huge", template_case("{{ 'x' * 10**9 }}" + CHATML), 2, "repeated sequence", subprocess=True, max_mb=500, max_seconds=30),
    Case("template-filter-width", template_case("{{ 'x'|center(10**9) }}" + CHATML), 2, "over the", subprocess=True, max_mb=500, max_seconds=30),
    Case("template-doubling-namespace", template_case("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}" + CHATML),
         2, "concatenation", subprocess=True, max_mb=500, max_seconds=30),
    Case("template-50mb", template_case("{# " + "x" * (50 << 20) + " #}" + CHATML, as_file=True), 2, "chat_template.jinja: chat template is 52,429,",
         subprocess=True, max_mb=500, max_seconds=30),
    # ---- hostile configs, flags and baselines
    Case("toml-nested-3000", config_case("a = " + "[" * 3000 + "]" * 3000 + "\n"), 2, "curate.toml: invalid TOML"),
    Case("toml-invalid", config_case("select = [\n"), 2, "curate.toml: invalid TOML"),
    Case("config-unknown-key", config_case("selct = ['SC']\n"), 2, "curate.toml: unknown key `selct` (did you mean `select`?)"),
    Case("config-negative-row-limit", config_case("max-row-bytes = -5\n"), 2, "curate.toml: `max-row-bytes`"),
    Case("config-negative-budget", config_case("[template-budget]\nrow-seconds = -1\n"), 2, "curate.toml: `template-budget.row-seconds`"),
    Case("max-seq-length-negative", argv_case("lint", "{tmp}/data.jsonl", "--isolated", "--max-seq-length", "-1"), 2, "--max-seq-length: must be above 0"),
    Case("baseline-waived-not-a-list", lambda tmp: ((tmp / "b.json").write_text('{"version": 1, "waived": 5}'), ["lint", str(data(tmp)), "--isolated", "--baseline", str(tmp / "b.json")])[1],
         2, "b.json: `waived` must be a list"),
    Case("baseline-not-json", lambda tmp: ((tmp / "b.json").write_bytes(b"\x00\xff"), ["lint", str(data(tmp)), "--isolated", "--baseline", str(tmp / "b.json")])[1],
         2, "b.json: cannot read baseline"),
    # ---- outputs never overwrite an input
    Case("lint-o-data", argv_case("lint", "{tmp}/data.jsonl", "--isolated", "-o", "{tmp}/data.jsonl"), 2, "data.jsonl: the output would overwrite the input"),
    Case("lint-write-baseline-data", argv_case("lint", "{tmp}/data.jsonl", "--isolated", "--write-baseline", "{tmp}/data.jsonl"), 2, "would overwrite the input"),
    Case("lint-o-the-baseline-in-use", baseline_in_use, 2, "baseline.json: the output would overwrite the input"),
    Case("lint-o-hard-link-of-data", hard_link_output, 2, "alias.jsonl: the output would overwrite the input"),
    Case("lint-o-symlink-to-data", symlink_output, 2, "report.txt: the output would overwrite the input"),
    Case("lint-o-directory", argv_case("lint", "{tmp}/data.jsonl", "--isolated", "-o", "{tmp}"), 2, "is a directory"),
    Case("fix-o-eval", argv_case("fix", "{tmp}/data.jsonl", "--isolated", "--eval", "{tmp}/eval.jsonl", "-o", "{tmp}/eval.jsonl"), 2, "eval.jsonl: the output would overwrite the input"),
    Case("fix-o-journal", review_journal("fix"), 2, "curate-review.jsonl: the output would overwrite the input"),
    Case("review-o-journal", review_journal("review"), 2, "curate-review.jsonl: the output would overwrite the input"),
    Case("train-o-model-folder", train_into_model_folder, 2, "the output would overwrite the input"),
    Case("export-o-run-folder", lambda tmp: (tmp.joinpath("run").mkdir(), ["export", str(tmp / "run"), "--merge", "-o", str(tmp / "run")])[1], 2,
         "run: the output would overwrite the input"),
    Case("output-over-file-size-limit", argv_case("lint", "{tmp}/data.jsonl", "--isolated", "-o", "{tmp}/report.txt"), 2, "report.txt: cannot write: File too large",
         subprocess=True, limits={resource.RLIMIT_FSIZE: 200}),
    Case("output-gets-the-umask-022", argv_case("lint", "{tmp}/data.jsonl", "--isolated", "-o", "{tmp}/report.txt"), 0, "", outputs=("report.txt",),
         subprocess=True, limits={"umask": 0o022}, check=check_mode(0o644)),
    Case("output-gets-the-umask-027", argv_case("lint", "{tmp}/data.jsonl", "--isolated", "-o", "{tmp}/report.txt"), 0, "", outputs=("report.txt",),
         subprocess=True, limits={"umask": 0o027}, check=check_mode(0o640)),
    # ---- reports stay linear in the rows
    Case("report-caps-related-and-data-lists", many_sharing_one_prompt, 1, '"cluster_size": 300', check=check_capped),
]


def snapshot(folder: Path) -> dict[str, str]:
    """name -> sha256 of every regular file under `folder` (not following symlinks)."""
    hashes = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        hashes[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def run_in_process(argv: list[str], capsys) -> Outcome:
    from curate.cli import main

    started = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return Outcome(code, out, err, seconds=time.perf_counter() - started)


def run_in_subprocess(argv: list[str], tmp: Path, case: Case) -> Outcome:
    rss_file = tmp.parent / f"{tmp.name}.rss"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CURATE_TEST_RSS": str(rss_file), "NO_COLOR": "1"}

    def limit() -> None:
        for key, value in case.limits.items():
            if key == "umask":
                os.umask(value)
            else:
                resource.setrlimit(key, (value, value))

    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", RUNNER, *argv], capture_output=True, text=True, errors="replace", env=env, cwd=tmp,
                              timeout=case.max_seconds, preexec_fn=limit)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{case.id}: still running after {case.max_seconds} s (a hang)")
    seconds = time.perf_counter() - started
    peak = int(rss_file.read_text()) / 1024 if rss_file.exists() else None
    return Outcome(proc.returncode, proc.stdout, proc.stderr, peak, seconds)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, tmp_path: Path, capsys) -> None:
    tmp = tmp_path / "in"
    tmp.mkdir()
    argv = case.build(tmp)
    before = snapshot(tmp)
    outcome = run_in_subprocess(argv, tmp, case) if case.subprocess else run_in_process(argv, capsys)

    assert "Traceback" not in outcome.err + outcome.out, outcome.err[-2000:]
    assert outcome.code == case.code, f"exit {outcome.code}\n{outcome.err[-1500:]}\n{outcome.out[-1500:]}"
    if case.code == 2:
        errors = [line for line in outcome.err.splitlines() if "error:" in line]
        assert len(errors) == 1, outcome.err
        assert case.says in errors[0], errors[0]
    else:
        assert case.says in outcome.out, outcome.out[-2000:]
    if case.max_mb is not None:
        assert outcome.peak_mb is not None, "the child did not exit normally"
        assert outcome.peak_mb < case.max_mb, f"peak RSS {outcome.peak_mb:.0f} MB"
    after = snapshot(tmp)
    assert {name: digest for name, digest in after.items() if name not in case.outputs} == before, "an input changed or an output appeared"
    if case.check:
        case.check(tmp, outcome)


# --------------------------------------------------------------------------- run folders (no pickle)


class _CreatesAFile:
    """What a crafted pickle does when loaded: here, create a file (could be any command)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def crafted_checkpoint(tmp: Path) -> tuple[Path, Path]:
    """A run folder whose checkpoint holds a malicious trainer.pt, as older curate wrote it."""
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    from curate.train.checkpoint import STATE_KEYS, checkpoint_dir

    marker = tmp / "pwned"
    checkpoint = checkpoint_dir(tmp / "run", 3)
    checkpoint.mkdir(parents=True)
    state = {key: 0 for key in STATE_KEYS} | {"config": {}, "metrics": []}
    (checkpoint / "state.json").write_text(json.dumps(state), encoding="utf-8")
    save_file({"w": torch.zeros(2)}, str(checkpoint / "lora.safetensors"))
    torch.save({"optimizer": _CreatesAFile(marker), "scheduler": {}, "rng": {}}, checkpoint / "trainer.pt")
    return checkpoint, marker


def test_a_crafted_pickle_in_a_checkpoint_is_refused_and_never_runs(tmp_path):
    torch = pytest.importorskip("torch")
    from curate.train.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint

    checkpoint, marker = crafted_checkpoint(tmp_path)
    assert latest_checkpoint(tmp_path / "run") == checkpoint
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(checkpoint)
    message = str(refused.value)
    assert "\n" not in message and str(checkpoint) in message and "pickle" in message
    assert not marker.exists()
    # The file is live: what curate used to do with it (torch.load, weights_only=False) runs it.
    torch.load(checkpoint / "trainer.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    "damage",
    [
        lambda cp: (cp / "trainer.json").write_text("{", encoding="utf-8"),
        lambda cp: (cp / "trainer.json").write_text('{"dict": [[{"tensor": "missing"}, 1]]}', encoding="utf-8"),
        lambda cp: (cp / "trainer.json").write_text('{"object": "os.system"}', encoding="utf-8"),
        lambda cp: (cp / "trainer.json").write_text("[" * 100000 + "]" * 100000, encoding="utf-8"),
        lambda cp: (cp / "trainer.safetensors").write_bytes(b"\xff" * 64),
        lambda cp: (cp / "state.json").write_text('{"step": 1}', encoding="utf-8"),
        lambda cp: (cp / "lora.safetensors").unlink(),
    ],
    ids=["json-truncated", "unknown-tensor", "unknown-tag", "nested-deep", "safetensors-garbage", "state-incomplete", "lora-missing"],
)
def test_a_checkpoint_that_does_not_parse_is_refused_with_one_line(tmp_path, damage):
    torch = pytest.importorskip("torch")
    from curate.train.checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint
    from curate.train.checkpoint import STATE_KEYS

    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([parameter], lr=0.1)
    parameter.sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    state = {key: 0 for key in STATE_KEYS} | {"config": {}, "metrics": []}
    checkpoint = save_checkpoint(tmp_path, 1, lora={"w": parameter.detach()}, best_lora=None, optimizer=optimizer, scheduler=scheduler,
                                 rng=rng_state(), state=state, keep=1)
    loaded = load_checkpoint(checkpoint)  # intact, it loads, with the same optimizer state
    assert torch.equal(loaded["optimizer"]["state"][0]["exp_avg"], optimizer.state_dict()["state"][0]["exp_avg"])
    damage(checkpoint)
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(checkpoint)
    assert "\n" not in str(refused.value) and str(checkpoint) in str(refused.value)


def test_checkpoint_files_are_safetensors_and_json_only(tmp_path):
    torch = pytest.importorskip("torch")
    from curate.train.checkpoint import STATE_KEYS, rng_state, save_checkpoint

    parameter = torch.nn.Parameter(torch.ones(3))
    optimizer = torch.optim.AdamW([parameter], lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    state = {key: 0 for key in STATE_KEYS} | {"config": {}, "metrics": []}
    checkpoint = save_checkpoint(tmp_path, 1, lora={"w": parameter.detach()}, best_lora=None, optimizer=optimizer, scheduler=scheduler,
                                 rng=rng_state(), state=state, keep=1)
    names = sorted(path.name for path in checkpoint.iterdir())
    assert names == ["lora.safetensors", "state.json", "trainer.json", "trainer.safetensors"]
    for path in checkpoint.iterdir():
        assert not path.read_bytes().startswith(b"PK") and b"\x80\x02" not in path.read_bytes()[:2]  # no zip/pickle


@pytest.mark.slow
def test_lora_targets_the_model_lacks_are_refused_by_the_dry_run(tmp_path, capsys):
    from curate.cli import main
    from tests.conftest import SAMPLES

    rows = [json.loads(line) for line in (SAMPLES / "train-demo.jsonl").read_text(encoding="utf-8").splitlines()[:48]]
    path = write_jsonl(tmp_path / "train.jsonl", rows)
    code = main(["train", str(path), "--model", str(SAMPLES / "tiny-chat"), "--dry-run", "--lora-targets", "q_proj,nosuch", "--isolated"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "no linear layer named nosuch" in errors[0] and "q_proj" in errors[0]
