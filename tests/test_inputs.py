"""Every input kind a user has: directories, stdin, CSV/TSV, Arrow, Hugging Face datasets
(saved with save_to_disk, a local dataset folder, hf:// offline), and column mapping."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time

import pytest

from curate.engine.runner import run_lint
from curate.engine.settings import LintRequest, plan_lint
from curate.io import InputError, read_rows
from tests.conftest import ROOT, write_jsonl

GSM8K = [
    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether?",
     "answer": "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May.\n#### 72"},
    {"question": "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
     "answer": "Weng earns 12/60 = $0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $10.\n#### 10"},
]
CHAT = [
    {"messages": [{"role": "user", "content": "How do I reset my password?"}, {"role": "assistant", "content": "Open Settings > Account and choose Reset password."}]},
    {"messages": [{"role": "user", "content": "Can I change my plan mid-month?"}, {"role": "assistant", "content": ""}]},
]


def run_cli(*args: str, cwd=None, stdin: str | None = None, env=None) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, "-m", "curate", *args], capture_output=True, text=True, cwd=cwd, input=stdin, timeout=120, env=environment)


def lint_paths(paths, **kwargs):
    kwargs.setdefault("isolated", True)
    return run_lint(plan_lint(LintRequest(paths=[str(p) for p in paths], **kwargs)))


def codes(result):
    return sorted({(f.code, f.path.rsplit("/", 1)[-1], f.line) for f in result.findings})


def test_directory_is_walked_skipping_hidden_ignored_and_excluded_files(tmp_path):
    data = tmp_path / "data"
    (data / "shards").mkdir(parents=True)
    (data / ".cache").mkdir()
    write_jsonl(data / "shards" / "part-0.jsonl", CHAT)
    with gzip.open(data / "shards" / "part-1.jsonl.gz", "wt") as handle:
        handle.write(json.dumps(CHAT[0]) + "\n")
    write_jsonl(data / ".cache" / "hidden.jsonl", ["{broken"])
    write_jsonl(data / "scratch.jsonl", ["{broken"])  # git-ignored below
    write_jsonl(data / "old.jsonl", ["{broken"])  # excluded by the config
    (data / "notes.txt").write_text("not data\n")
    (data / "data.jsonl.curate-review.jsonl").write_text("{}\n")
    (data / "tiny-model").mkdir()  # a model folder beside the data is not data
    (data / "tiny-model" / "config.json").write_text('{"model_type": "llama"}')
    write_jsonl(data / "tiny-model" / "metrics.jsonl", [{"step": 1, "loss": 2.3}])
    (data / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    (tmp_path / ".gitignore").write_text("scratch.jsonl\n")
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "curate.toml").write_text('extend-exclude = ["old.jsonl"]\n')
    plan = plan_lint(LintRequest(paths=[str(data)], select=["SC"]))
    assert [p.removeprefix(str(data) + "/") for p in plan.paths] == ["shards/part-0.jsonl", "shards/part-1.jsonl.gz"]
    result = run_lint(plan)
    assert result.rows == 3 and not result.errors
    assert codes(result) == [("SC005", "part-0.jsonl", 2)]
    # the same folder without git, and with `exclude` replacing the defaults
    (tmp_path / "curate.toml").write_text('exclude = []\n')
    subprocess.run(["rm", "-rf", str(tmp_path / ".git")], check=True)
    plan = plan_lint(LintRequest(paths=[str(data)], select=["SC"]))
    names = [p.removeprefix(str(data) + "/") for p in plan.paths]
    assert "scratch.jsonl" in names and "old.jsonl" in names and "data.jsonl.curate-review.jsonl" in names
    assert not any(".cache" in name or name.endswith(".txt") for name in names)


def test_unsupported_extension_is_one_exit_2_line_not_parsed_as_jsonl(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text(json.dumps(CHAT[0]) + "\n")
    good = write_jsonl(tmp_path / "good.jsonl", CHAT[:1])
    proc = run_cli("lint", str(path), str(good), "--isolated", "--select", "SC")
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "unsupported file type (.txt)" in proc.stderr and str(path) in proc.stderr
    assert "SC001" not in proc.stdout and "Traceback" not in proc.stderr


def test_stdin_with_stdin_filename(tmp_path):
    (tmp_path / "curate.toml").write_text('select = ["SC005"]\n')
    lines = "\n".join(json.dumps(row) for row in CHAT) + "\n"
    proc = run_cli("lint", "-", "--stdin-filename", str(tmp_path / "chat.jsonl"), stdin=lines, cwd=ROOT)
    assert proc.returncode == 1, proc.stderr
    assert f"{tmp_path / 'chat.jsonl'}:2: SC005" in proc.stdout
    assert "SC00" not in proc.stdout.replace("SC005", "")  # only the config's selection ran: it was found from --stdin-filename
    proc = run_cli("lint", "-", "--isolated", "--select", "SC", stdin="{broken\n" + lines)
    assert "-:1: SC001" in proc.stdout and "-:3: SC005" in proc.stdout


def test_csv_and_tsv_with_json_text_message_columns(tmp_path):
    import polars as pl

    pl.DataFrame({"question": [r["question"] for r in GSM8K], "answer": [r["answer"] for r in GSM8K]}).write_csv(tmp_path / "gsm8k.csv")
    frame = pl.DataFrame({"messages": [json.dumps(row["messages"]) for row in CHAT], "source": ["faq", "faq"]})
    frame.write_csv(tmp_path / "chat.tsv", separator="\t")
    rows = read_rows(tmp_path / "chat.tsv")
    assert rows[0].obj == {**CHAT[0], "source": "faq"} and [row.line for row in rows] == [1, 2]
    result = lint_paths([tmp_path / "chat.tsv"], select=["SC"])
    assert codes(result) == [("SC005", "chat.tsv", 2)]
    assert result.findings[0].data["row_index"] == 1
    mapped = lint_paths([tmp_path / "gsm8k.csv"], select=["SC"], columns={"question": "user", "answer": "assistant"})
    assert mapped.rows == 2 and mapped.findings == []
    assert {f.code for f in lint_paths([tmp_path / "gsm8k.csv"], select=["SC"]).findings} == {"SC002"}


def test_arrow_file_and_save_to_disk_folders(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [*CHAT, {"prompt": "What is 2+2?", "chosen": "4", "rejected": "4"}]
    rows = [{"messages": r.get("messages"), "prompt": r.get("prompt"), "chosen": r.get("chosen"), "rejected": r.get("rejected")} for r in rows]
    single = datasets.Dataset.from_list(rows)
    single.save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": single, "test": datasets.Dataset.from_list(rows[:1])}).save_to_disk(str(tmp_path / "saved_dict"))
    arrow = next((tmp_path / "saved").glob("*.arrow"))
    for source in (tmp_path / "saved", arrow):
        result = lint_paths([source], select=["SC005", "PF"])
        assert result.rows == 3 and not result.errors, result.errors
        assert [(f.code, f.line, f.data["row_index"]) for f in result.findings] == [("SC005", 2, 1), ("PF001", 3, 2)]
    result = lint_paths([tmp_path / "saved_dict"], select=["SC"])
    assert result.rows == 4
    assert {f.path for f in result.findings} == {f"{tmp_path / 'saved_dict'}/train"}
    assert lint_paths([tmp_path / "saved_dict"], select=["SC"], split="test").rows == 1
    # a folder holding a saved dataset beside other files: the walk reads it as one dataset
    (tmp_path / "project").mkdir()
    single.save_to_disk(str(tmp_path / "project" / "dpo"))
    write_jsonl(tmp_path / "project" / "sft.jsonl", CHAT[:1])
    assert [p.rsplit("/", 1)[-1] for p in plan_lint(LintRequest(paths=[str(tmp_path / "project")], isolated=True)).paths] == ["dpo", "sft.jsonl"]


def test_local_dataset_folder_loaded_with_load_dataset(tmp_path):
    from curate.sources import SourceOptions, iter_loaded

    repo = tmp_path / "gsm8k-repo"
    (repo / "data").mkdir(parents=True)
    write_jsonl(repo / "data" / "train.jsonl", GSM8K)
    write_jsonl(repo / "data" / "test.jsonl", GSM8K[:1])
    rows = list(iter_loaded(str(repo), "hf://datasets/openai/gsm8k@main", SourceOptions(split="train")))
    assert [(row.path, row.line) for row in rows] == [("hf://datasets/openai/gsm8k@main/train", 1), ("hf://datasets/openai/gsm8k@main/train", 2)]
    assert rows[1].obj == GSM8K[1]
    every = list(iter_loaded(str(repo), "local", SourceOptions()))
    assert sorted({row.path for row in every}) == ["local/test", "local/train"]


def test_hub_dataset_offline_is_one_line_fast(tmp_path):
    started = time.perf_counter()
    proc = run_cli("lint", "hf://datasets/nobody/missing-dataset@v1", "--isolated", env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert time.perf_counter() - started < 60
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "hf://datasets/nobody/missing-dataset@v1" in proc.stderr


def test_hub_url_is_validated():
    from curate.sources import parse_hf_url

    assert parse_hf_url("hf://datasets/openai/gsm8k@main").label == "hf://datasets/openai/gsm8k@main"
    assert parse_hf_url("hf://datasets/openai/gsm8k").revision is None
    with pytest.raises(InputError, match="expected hf://datasets/ORG/NAME"):
        parse_hf_url("hf://datasets/a/b/c")


def test_lint_imports_no_datasets_for_plain_files(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", CHAT)
    code = ("import sys; from curate.cli import main; main(['lint', %r, '--isolated', '--no-progress', '-o', %r]); "
            "print(sorted(m for m in ('datasets', 'torch', 'transformers') if m in sys.modules))") % (str(path), str(tmp_path / "r.txt"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stderr


def test_pretty_printed_json_reports_where_each_object_starts(tmp_path):
    path = tmp_path / "alpaca.json"
    rows = [{"instruction": "Name a primary color.", "input": "", "output": "Red."}, {"instruction": "Say hi.", "input": "", "output": " "}]
    path.write_text(json.dumps(rows, indent=4))
    result = lint_paths([path], select=["SC"])
    finding = next(f for f in result.findings if f.code == "SC005")
    start = path.read_text().splitlines()[finding.line - 1]
    assert finding.line == 7 and start.strip() == "{" and finding.data["row_index"] == 1


def test_fix_writes_the_format_it_read_and_the_canonical_format_of_mapped_rows(tmp_path):
    import polars as pl

    pl.DataFrame({"question": [r["question"] for r in GSM8K], "answer": [r["answer"] for r in GSM8K]}).write_csv(tmp_path / "gsm8k.csv")
    proc = run_cli("fix", str(tmp_path / "gsm8k.csv"), "--isolated", "--columns", "question=user,answer=assistant")
    assert proc.returncode == 0, proc.stderr
    written = [json.loads(line) for line in (tmp_path / "gsm8k.clean.jsonl").read_text().splitlines()]
    assert written[0] == {"messages": [{"role": "user", "content": GSM8K[0]["question"]}, {"role": "assistant", "content": GSM8K[0]["answer"]}]}
    pl.DataFrame({"prompt": ["2+2?", "3+3?", "3+3?"], "completion": ["4", "6", "6"]}).write_parquet(tmp_path / "pc.parquet")
    proc = run_cli("fix", str(tmp_path / "pc.parquet"), "--isolated")
    assert proc.returncode == 0, proc.stderr
    assert pl.read_parquet(tmp_path / "pc.clean.parquet").to_dicts() == [{"prompt": "2+2?", "completion": "4"}, {"prompt": "3+3?", "completion": "6"}]
    proc = run_cli("fix", str(tmp_path / "pc.parquet"), "--isolated", "--output-format", "jsonl", "-o", str(tmp_path / "pc.jsonl"))
    assert proc.returncode == 0 and len((tmp_path / "pc.jsonl").read_text().splitlines()) == 2


def test_fix_never_writes_an_empty_output_for_rows_it_dropped(tmp_path):
    import polars as pl

    pl.DataFrame({"question": [r["question"] for r in GSM8K], "answer": [r["answer"] for r in GSM8K]}).write_csv(tmp_path / "gsm8k.csv")
    proc = run_cli("fix", str(tmp_path / "gsm8k.csv"), "--isolated")
    assert proc.returncode == 2 and "all 2 rows would be dropped; nothing written" in proc.stderr
    assert not (tmp_path / "gsm8k.clean.jsonl").exists()


def test_text_rows_skip_the_role_rules_and_say_so_while_other_rules_apply(lint):
    rows = [{"text": "The quick brown fox jumps over the lazy dog.\x1b[31m"}, {"text": "Photosynthesis turns light into chemical energy."}]
    result = lint(rows, select=["SC", "QL002"])
    assert [(f.code, f.line) for f in result.findings] == [("QL002", 1)]
    assert result.skipped["SC007"] == "2 rows have no roles (TRL text format)"
    assert "SC005" not in result.skipped


def test_both_sides_of_a_preference_pair_go_through_the_row_rules(lint):
    rows = [
        {"prompt": "Summarize: the meeting moved to 3pm.", "chosen": "The meeting is now at 3pm.", "rejected": " "},
        {"prompt": [{"role": "user", "content": "Say hi"}], "chosen": [{"role": "assistant", "content": "Hi!"}],
         "rejected": [{"role": "assistant", "content": "Hi"}, {"role": "assistant", "content": "again"}]},
        {"prompt": "", "chosen": "Hello", "rejected": "Go away"},
    ]
    result = lint(rows, select=["SC005", "SC007"])
    found = sorted((f.code, f.line, f.message) for f in result.findings)
    assert found == [
        ("SC005", 1, "rejected (assistant): empty content"),
        ("SC005", 3, "prompt (user): empty content"),  # the shared prompt: reported once, not per side
        ("SC007", 2, "rejected[1] (assistant): two assistant turns in a row"),
    ]


def test_fix_of_a_mixed_file_never_turns_preference_pairs_into_messages(tmp_path):
    pair = {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}
    chats = [{"conversations": [{"from": "human", "value": f"Hi, I am user {i}"}, {"from": "gpt", "value": f"Hello user {i}!"}]} for i in range(3)]
    alpaca = {"instruction": "Say hi.", "input": "", "output": "Hi!"}
    path = write_jsonl(tmp_path / "mixed.jsonl", [pair, *chats, alpaca])
    proc = run_cli("fix", str(path), "--isolated", "--select", "SC010")
    assert proc.returncode == 0, proc.stderr
    written = [json.loads(line) for line in (tmp_path / "mixed.clean.jsonl").read_text().splitlines()]
    assert written[0] == pair
    assert written[1] == {"messages": [{"role": "user", "content": "Hi, I am user 0"}, {"role": "assistant", "content": "Hello user 0!"}]}
    assert written[4] == {"messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "Hi!"}]}


def test_columns_from_the_config_and_a_bad_target_is_a_config_error(tmp_path):
    from curate.config import ConfigError

    path = write_jsonl(tmp_path / "qa.jsonl", [{"query": "How do I export my data?", "response": "Settings > Privacy > Export."}])
    (tmp_path / "pyproject.toml").write_text('[tool.curate]\nselect = ["SC"]\n\n[tool.curate.columns]\nquery = "user"\nresponse = "assistant"\n')
    result = run_lint(plan_lint(LintRequest(paths=[str(path)])))
    assert result.rows == 1 and result.findings == [] and result.stats["row formats"] == {"messages": 1}
    with pytest.raises(ConfigError, match="`query` maps to `asker`"):
        plan_lint(LintRequest(paths=[str(path)], columns={"query": "asker"}))


def test_duplicate_rules_leave_preference_rows_to_the_pf_rules_and_fix_drops_repeats(tmp_path):
    rows = [
        {"prompt": "Translate 'thank you' to French.", "chosen": "Merci.", "rejected": "Gracias."},
        {"prompt": "Translate 'thank you' to French.", "chosen": "Merci.", "rejected": "Danke."},
        {"prompt": "Translate 'thank you' to French.", "chosen": "Merci.", "rejected": "Danke."},
        {"prompt": "How many legs does a spider have?", "chosen": "Eight.", "rejected": "Eight."},
    ]
    path = write_jsonl(tmp_path / "dpo.jsonl", rows)
    result = lint_paths([path], select=["DU", "PF"])
    assert [(f.code, f.line) for f in result.findings] == [("PF005", 3), ("PF001", 4)]
    assert result.skipped["DU001"] == "4 preference rows are compared by the PF rules instead"
    proc = run_cli("fix", str(path), "--isolated", "--select", "DU,PF")
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line) for line in (tmp_path / "dpo.clean.jsonl").read_text().splitlines()] == rows[:2]


def test_row_formats_are_counted_with_unparsed_and_shapeless_rows(tmp_path):
    """The report's row-format counts: every row once, rows that do not parse or have no known
    shape as `unknown`, formats in the order the file shows them."""
    path = tmp_path / "mixed.jsonl"
    chat = json.dumps({"messages": [{"role": "user", "content": "Add 4 and 4."}, {"role": "assistant", "content": "8"}]})
    alpaca = json.dumps({"instruction": "Add 9 and 1.", "input": "", "output": "10"})
    path.write_text("\n".join([alpaca, chat, '{"messages": [', json.dumps({"question": "2+2?"}), chat, alpaca, chat]) + "\n")
    result = run_lint(plan_lint(LintRequest(paths=[str(path)], select=["SC"])))
    assert result.rows == 7
    assert list(result.stats["row formats"].items()) == [("messages", 3), ("alpaca", 2), ("unknown", 2)]
