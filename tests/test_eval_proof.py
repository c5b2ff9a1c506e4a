"""The proof that `curate eval` measures something: a task the tiny base model cannot do (answer
every prompt with one fixed JSON shape), an adapter trained on it for a few dozen steps with
curate's own trainer, and an eval that reports the adapter's JSON-valid rate above the base's
with a significant paired test; every number is recounted from generations.jsonl."""

from __future__ import annotations

import io
import json
import logging

import pytest

from tests.conftest import SAMPLES, write_jsonl

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
torch = pytest.importorskip("torch")
pytest.importorskip("bitsandbytes")
pytestmark = pytest.mark.slow

TINY = str(SAMPLES / "tiny-chat")
NAMES = ["Ana", "Bo", "Chen", "Dara", "Eli", "Femi", "Gus", "Hana", "Ivo", "Jun"]
ANSWER = '{"ok": true}'


def task_rows(count: int) -> list[dict]:
    rows = []
    for n in range(count):
        prompt = f"Please check order {1000 + 7 * n} placed by {NAMES[n % len(NAMES)]} on day {n % 28 + 1}."
        rows.append({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": ANSWER}]})
    return rows


def is_json(text: str) -> bool:
    try:
        return isinstance(json.loads(text), (dict, list))
    except ValueError:
        return False


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    from curate.train.config import TrainConfig
    from curate.train.recipe import Reporter, Run

    folder = tmp_path_factory.mktemp("proof")
    data = write_jsonl(folder / "task.jsonl", task_rows(80))
    config = TrainConfig(model=TINY, max_steps=30, learning_rate=1e-2, batch_size=4, gradient_accumulation=1, eval_fraction=0.3,
                         save_every=0, stop_check_prompts=0, stop_check_max_new_tokens=20, eval_prompts=8, lora_dropout=0.0, seed=3)
    run = Run(config, str(data), folder / "run", gate=None, resume=False, reporter=Reporter(progress=False, out=io.StringIO()))
    run.setup()
    run.train()
    manifest = run.save()
    run.cleanup()
    return folder, manifest


def test_eval_shows_the_adapter_beats_the_base_with_a_significant_paired_test(trained_run, capsys):
    from curate.cli import main

    folder, manifest = trained_run
    out = folder / "eval"
    code = main(["eval", str(folder / "run"), "-o", str(out), "--candidates", "base,adapter", "--max-new-tokens", "20", "--no-progress"])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    report = json.loads((out / "eval.json").read_text())
    assert report["data"]["prompts"] == 24  # the held-out split recorded in the manifest
    held_out = {f"{folder / 'task.jsonl'}:{line}" for line in manifest["data"]["eval_lines"]}
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert {row["curate_eval"]["where"] for row in rows} == held_out
    by_name = {c["name"]: c for c in report["candidates"]}
    base, adapter = by_name["base"]["metrics"]["json_valid"], by_name["adapter"]["metrics"]["json_valid"]
    assert adapter["value"] > base["value"]
    assert adapter["low"] > base["high"]  # the intervals do not even overlap
    test = next(t for t in report["comparisons"] if t["metric"] == "json_valid" and t["second"] == "adapter")
    assert test["significant"] and test["p_value"] < 0.05
    assert "json_valid: adapter vs base" in printed.out and "significant at 5%" in printed.out

    # Recount from generations.jsonl, parsing each output with the standard library.
    for name in ("base", "adapter"):
        outputs = [row["curate_eval"]["candidates"][name]["output"] for row in rows]
        valid = [is_json(text.strip()) for text in outputs]
        assert [row["curate_eval"]["candidates"][name]["verdicts"]["json_valid"] for row in rows] == valid
        assert by_name[name]["metrics"]["json_valid"]["k"] == sum(valid)
        assert by_name[name]["metrics"]["json_valid"]["n"] == len(rows)
        exact = sum(text.strip() == ANSWER for text in outputs)
        assert by_name[name]["metrics"]["schema_match"]["k"] >= exact
    base_valid = [is_json(row["curate_eval"]["candidates"]["base"]["output"].strip()) for row in rows]
    adapter_valid = [is_json(row["curate_eval"]["candidates"]["adapter"]["output"].strip()) for row in rows]
    assert test["second_only"] == sum(a and not b for a, b in zip(adapter_valid, base_valid))
    assert test["first_only"] == sum(b and not a for a, b in zip(adapter_valid, base_valid))
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_train_runs_the_short_eval_and_records_it_in_the_manifest(trained_run):
    folder, manifest = trained_run
    summary = manifest["eval"]
    assert summary["prompts"] == 8
    assert summary["candidates"]["adapter"]["json_valid"] > summary["candidates"]["base"]["json_valid"]
    assert (folder / "run" / "eval" / "eval.json").is_file()
    rows = (folder / "run" / "eval" / "generations.jsonl").read_text().splitlines()
    assert len(rows) == 8


def test_default_candidates_with_two_adapters_and_few_shot_from_training_rows(trained_run, capsys):
    import shutil

    from curate.cli import main

    folder, manifest = trained_run
    copy = folder / "copy"
    if not copy.exists():
        shutil.copytree(folder / "run", copy)
    out = folder / "eval-all"
    code = main(["eval", str(folder / "run"), "--adapter", str(copy), "-o", str(out), "--limit", "6", "--max-new-tokens", "12",
                 "--no-progress", "--no-chart"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "eval.json").read_text())
    names = [c["name"] for c in report["candidates"]]
    assert names == ["base", "few-shot", "run", "copy"]
    shots = report["candidates"][1]["few_shot"]
    held_out = {f"{folder / 'task.jsonl'}:{line}" for line in manifest["data"]["eval_lines"]}
    assert len(shots) == 3 and not set(shots) & held_out
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    for row in rows:
        outputs = row["curate_eval"]["candidates"]
        assert outputs["run"]["output"] == outputs["copy"]["output"] == ANSWER  # the same adapter twice, both really active
        assert outputs["base"]["output"] != ANSWER
    assert report["candidates"][1]["cost"]["prompt_tokens_mean"] > report["candidates"][0]["cost"]["prompt_tokens_mean"]
    assert not (out / "chart.png").exists()
