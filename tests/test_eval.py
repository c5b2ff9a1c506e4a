"""`curate eval` pieces on hand-written outputs: each metric (passing and failing), intervals and
McNemar, few-shot examples never drawn from eval rows, the contamination check, the regression
list, the eval.json round trip, and batched generation against one prompt at a time."""

from __future__ import annotations

import json

import pytest

from curate.evaluate.candidates import Candidate, few_shot_pool, pick_shots
from curate.evaluate.generation import Generation, split_output
from curate.evaluate.items import EvalError, EvalItem, read_items
from curate.evaluate.metrics import aggregate, expect_checks, score, task_profile
from curate.evaluate.pipeline import paired_tests, regression_failures
from curate.evaluate.stats import bootstrap_mean, mcnemar, wilson
from curate.text.answers import final_answer
from curate.train.data import TrainingRow
from tests.conftest import SAMPLES, write_jsonl


def item(question: str, reference: str | None, line: int = 1, expect: dict | None = None) -> EvalItem:
    return EvalItem("eval.jsonl", line, [{"role": "user", "content": question}], reference, expect or {})


def out(text: str, stopped: bool = True) -> Generation:
    return Generation(text, prompt_tokens=10, new_tokens=len(text.split()) + stopped, stopped=stopped)


def verdicts_for(references: list[str], outputs: list[str], train_answers: list[str] | None = None, stopped=None):
    items = [item(f"question {i}", ref, i + 1) for i, ref in enumerate(references)]
    profile = task_profile(references, train_answers)
    gens = [out(text, True if stopped is None else stopped[i]) for i, text in enumerate(outputs)]
    return profile, score(profile, items, gens)


def test_final_answer_markers_win_over_the_last_number():
    assert final_answer("She had 3 boxes of 4, so 12.\n#### 12") == "12"
    assert final_answer("First 5 then \\boxed{1,250} and 7 more words") == "1250"
    assert final_answer("The answer is 42. Checked with 41 and 43") == "42"
    assert final_answer("Natalia sold 48 + 24 = 72 clips in all.") == "72"
    assert final_answer("Yes, it is.") == "yes"
    assert final_answer("It depends on the weather.") is None


def test_exact_match_on_gsm8k_style_references_passes_and_fails():
    references = ["48 / 2 = 24 in May, 48 + 24 = 72.\n#### 72", "#### 5", "Paris is the capital."]
    _, verdicts = verdicts_for(references, ["So she sold 72 clips.", "The answer is 6.", "Paris."])
    assert [v["exact_match"] for v in verdicts] == [True, False, None]  # no final value in the third reference
    assert verdicts[0]["passed"] is True and verdicts[1]["passed"] is False


def test_json_validity_schema_match_and_format():
    train = [json.dumps({"order_id": n, "status": "shipped"}) for n in range(12)]
    references = [json.dumps({"order_id": 7, "status": "late"})] * 4
    outputs = ['{"order_id": 7, "status": "late"}', '{"order_id": "7"}', '```json\n{"order_id": 7, "status": "late"}\n```', "{'order_id': 7,}"]
    profile, verdicts = verdicts_for(references, outputs, train)
    assert profile.schema is not None
    assert [v["json_valid"] for v in verdicts] == [True, True, False, False]  # fenced JSON is code, single quotes do not parse
    assert [v["schema_match"] for v in verdicts] == [True, False, False, False]  # missing "status", "order_id" a string
    assert [v["format"] for v in verdicts] == ["json", "json", "code", "json-like"]
    assert [v["format_match"] for v in verdicts] == [True, True, False, True]
    _, prose = verdicts_for(["Your order shipped today."], ['{"status": "shipped"}'])
    assert prose[0]["json_valid"] is None and prose[0]["format_match"] is False


def test_refusals_stop_length_and_chrf():
    references = ["Open Settings, choose Security, then Reset password."] * 4
    outputs = ["I'm sorry, but I can't help with that.", "Sorry for the wait, here is how: open Settings, choose Security.",
               "Open Settings, choose Security, then Reset password.", "   "]
    _, verdicts = verdicts_for(references, outputs, stopped=[True, True, True, False])
    assert [v["refusal"] for v in verdicts] == [True, False, False, False]
    assert [v["stopped"] for v in verdicts] == [True, True, True, False]
    assert verdicts[2]["chrf"] == 100.0 and verdicts[2]["length_ratio"] == 1.0
    assert verdicts[0]["chrf"] < 30 and verdicts[3]["chrf"] == 0.0
    assert verdicts[3]["format_match"] is False  # a blank answer matches no format


def test_label_accuracy_with_per_label_precision_recall_and_confusion():
    references = ["billing", "billing", "shipping", "shipping", "refund", "Refund."]
    outputs = ["Billing.", "shipping", "shipping", "shipping", "refund", "I think this is about a refund for the order"]
    profile, verdicts = verdicts_for(references, outputs)
    assert profile.labels == ["billing", "refund", "shipping"]
    assert [v["label_correct"] for v in verdicts] == [True, False, True, True, True, False]
    summary = aggregate(verdicts, profile, references, seconds=1.0)
    table = summary["labels"]
    assert table["confusion"]["billing"] == {"billing": 1, "shipping": 1}
    assert table["confusion"]["refund"] == {"refund": 1, "(other)": 1}
    assert table["per_label"]["shipping"] == {"precision": pytest.approx(2 / 3, abs=1e-4), "recall": 1.0, "support": 2}
    assert table["per_label"]["billing"]["recall"] == 0.5
    label_rate = summary["metrics"]["label_correct"]
    assert (label_rate["k"], label_rate["n"]) == (4, 6)
    assert label_rate["low"] < 4 / 6 < label_rate["high"]
    _, free_text = verdicts_for(["The capital of France is Paris, a city on the Seine."] * 3, ["Paris"] * 3)
    assert free_text[0]["label_correct"] is None


def test_cost_is_counted_per_candidate():
    profile, verdicts = verdicts_for(["a b"] * 2, ["one two three", "four"])
    cost = aggregate(verdicts, profile, ["a b"] * 2, seconds=2.0)["cost"]
    assert cost["new_tokens_mean"] == 3.0 and cost["prompt_tokens_mean"] == 10 and cost["tokens_per_s"] == 3.0


def test_split_output_stops_at_the_first_end_of_turn_token():
    assert split_output([5, 6, 2, 7, 2], {2}) == ([5, 6], True)
    assert split_output([5, 6, 7], {2}) == ([5, 6, 7], False)


def test_wilson_bootstrap_and_mcnemar():
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    assert wilson(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)
    assert wilson(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    mean, lo, hi = bootstrap_mean([1.0, 2.0, 3.0, 4.0], seed=1)
    assert mean == 2.5 and lo < mean < hi and bootstrap_mean([1.0, 2.0, 3.0, 4.0], seed=1) == (mean, lo, hi)
    test = mcnemar([False] * 8 + [True, None], [True] * 8 + [True, True])
    assert (test.pairs, test.first_only, test.second_only) == (9, 0, 8)
    assert test.p_value == pytest.approx(2 / 2**8) and test.significant
    close = mcnemar([True, False, True, False], [False, True, True, False])
    assert close.p_value == 1.0 and not close.significant


def test_paired_tests_say_when_a_difference_is_not_significant():
    from curate.evaluate.report import comparison_lines

    candidates = [Candidate("base", "base", "m"), Candidate("adapter", "adapter", "m", adapter="run")]
    verdicts = {"base": [{"passed": i < 3, "json_valid": i < 3} for i in range(10)], "adapter": [{"passed": i < 5, "json_valid": i < 5} for i in range(10)]}
    tests = paired_tests(candidates, verdicts)
    assert {t["metric"] for t in tests} == {"passed", "json_valid"}
    assert all(t["second_only"] == 2 and not t["significant"] for t in tests)
    lines = comparison_lines({"comparisons": tests})
    assert any("NOT significant" in line for line in lines)


def conversations(rows: list[tuple[str, str]], path: str = "train.jsonl") -> list[TrainingRow]:
    return [TrainingRow(path, i + 1, [{"role": "user", "content": q}, {"role": "assistant", "content": a}]) for i, (q, a) in enumerate(rows)]


def test_few_shot_examples_never_come_from_eval_rows():
    train = conversations([(f"How do I reset password number {i}?", f"Step {i}.") for i in range(20)], path="data.jsonl")
    items = [EvalItem("data.jsonl", 3, train[2].messages[:1], "Step 2."),  # the held-out row itself
             item("how do I RESET password number 5", "Step 5.")]  # the same prompt, written differently, in another file
    pool = few_shot_pool(train, items)
    assert len(pool) == 18 and all(c.line not in (3, 6) for c in pool)
    for seed in range(30):
        shots = pick_shots(train, items, 3, seed)
        assert len(shots) == 3 and not {c.line for c in shots} & {3, 6}
    assert [c.line for c in pick_shots(train, items, 3, 7)] == [c.line for c in pick_shots(train, items, 3, 7)]
    with pytest.raises(EvalError, match="no training rows"):
        pick_shots(train[2:3], items, 3, 0)


def test_candidate_prompts_replace_the_system_prompt_and_put_shots_before_the_question():
    question = EvalItem("e", 1, [{"role": "system", "content": "old"}, {"role": "user", "content": "Q?"}], "A")
    shot = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]
    few = Candidate("few-shot", "few-shot", "m", system_prompt="Be brief.", shots=[shot])
    assert few.prompt(question) == [{"role": "system", "content": "Be brief."}, *shot, {"role": "user", "content": "Q?"}]
    assert Candidate("adapter", "adapter", "m").prompt(question) == question.messages


def test_contamination_check_reports_eval_prompts_in_the_training_data():
    from curate.evaluate.hygiene import contamination

    train = conversations([("What is the capital of Australia and why was it chosen?", "Canberra, as a compromise."),
                           ("Write a haiku about the sea at night.", "Dark waves...")] +
                          [(f"Unrelated training question about topic {i} in depth", "ok") for i in range(5)])
    items = [item("what is the capital of australia and why was it chosen", "Canberra.", 1),
             item("Name three prime numbers larger than one hundred.", "101, 103, 107.", 2)]
    summary = contamination(items, train)
    assert summary["checked"] == 2
    assert [(e["where"], e["rules"], e["train"]) for e in summary["contaminated"]] == [("eval.jsonl:1", ["LK001"], "train.jsonl:1")]
    assert "eval.jsonl:1" in summary["contaminated"][0]["message"] and "curate-eval-" not in summary["contaminated"][0]["message"]


def test_regression_list_names_prompts_the_base_passes_and_the_adapter_fails():
    items = [item("a", None, 1, {"json": True}), item("b", None, 2, {"json": True}), item("c", None, 3, {"json": True})]
    candidates = [Candidate("base", "base", "m"), Candidate("few-shot", "few-shot", "m"), Candidate("adapter", "adapter", "m", adapter="r")]
    profile = task_profile(["", "", ""])
    verdicts = {
        "base": score(profile, items, [out('{"a": 1}'), out("prose"), out('{"c": 3}')]),
        "few-shot": score(profile, items, [out("prose")] * 3),
        "adapter": score(profile, items, [out('{"a": 1}'), out('{"b": 2}'), out("Sure! Here it is: {}")]),
    }
    failures = regression_failures(candidates, items, verdicts)
    assert [(f["where"], f["candidate"]) for f in failures] == [("eval.jsonl:3", "adapter")]
    assert failures[0]["checks"] == {"json": False}


def test_expect_checks():
    verdict: dict = {}
    assert expect_checks({"answer": "#### 42"}, "so 42", verdict, "prose") == {"answer": True}
    assert expect_checks({"format": "markdown"}, "x", verdict, "prose") == {"format": True}  # one text family
    assert expect_checks({"label": "Billing."}, "billing", verdict, "prose") == {"label": True}
    assert expect_checks({"contains": "Paris", "json": False}, "in paris", verdict, "prose") == {"contains": True, "json": True}


def test_read_items_uses_prompts_with_references_and_regression_rows_with_checks(tmp_path):
    path = write_jsonl(tmp_path / "e.jsonl", [
        {"messages": [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}]},
        {"instruction": "Add 2 and 3.", "input": "", "output": "#### 5"},
        {"messages": [{"role": "user", "content": "Q3"}], "expect": {"json": True}},
        '{"messages": [',
        {"messages": [{"role": "assistant", "content": "no question"}]},
    ])
    strict = read_items(path)
    assert [i.line for i in strict.items] == [1, 2] and strict.skipped == 3
    assert strict.items[1].reference == "#### 5" and strict.items[1].user_text == "Add 2 and 3."
    loose = read_items(path, need_reference=False)
    assert [i.line for i in loose.items] == [1, 2, 3] and loose.items[2].expect == {"json": True}
    with pytest.raises(EvalError, match="no such file"):
        read_items(tmp_path / "missing.jsonl")


def test_eval_json_round_trips_and_other_versions_are_refused(tmp_path):
    from curate.evaluate.report import read_report, write_report

    profile, verdicts = verdicts_for(["#### 4"], ["4"])
    report = {"curate_eval": 1, "data": {"source": "x", "prompts": 1}, "comparisons": [],
              "candidates": [{"name": "base", **aggregate(verdicts, profile, ["#### 4"], 1.0)}]}
    names = write_report(tmp_path / "out", report, [{"messages": [], "curate_eval": {"index": 0}}])
    assert names == ["eval.json", "generations.jsonl", "chart.png"]
    assert read_report(tmp_path / "out" / "eval.json") == report
    (tmp_path / "old.json").write_text(json.dumps({**report, "curate_eval": 99}))
    with pytest.raises(EvalError, match="version 1"):
        read_report(tmp_path / "old.json")


def test_cli_errors_are_one_line(tmp_path, capsys):
    from curate.cli import main

    assert main(["eval", "-o", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == "curate: error: nothing to evaluate: pass a run folder, --adapter PATH --model BASE, --merged DIR or --model BASE"
    assert main(["eval", str(tmp_path), "-o", str(tmp_path / "o")]) == 2
    assert "not a finished `curate train` run" in capsys.readouterr().err
    previous = write_jsonl(tmp_path / "o" / "generations.jsonl", [{"messages": []}]) if (tmp_path / "o").mkdir() is None else None
    before = previous.read_bytes()
    assert main(["eval", "--model", "m", "--data", str(previous), "-o", str(tmp_path / "o")]) == 2
    assert "holds the input" in capsys.readouterr().err and previous.read_bytes() == before
    run = tmp_path / "runs" / "first"
    run.mkdir(parents=True)
    assert main(["eval", str(run), "-o", str(tmp_path / "runs")]) == 2  # a folder holding the run folder
    assert "holds the input" in capsys.readouterr().err
    assert main(["eval", "--model", "m", "--data", str(run), "-o", str(tmp_path / "elsewhere")]) == 2  # a folder is no data file
    assert "is a directory" in capsys.readouterr().err
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        assert main(["eval", "--model", "m", "--engine", "vllm", "-o", str(tmp_path / "o")]) == 2
        assert "vLLM is not installed" in capsys.readouterr().err


def test_batched_generation_matches_one_prompt_at_a_time():
    """Left padding and the attention mask must not change a greedy answer."""
    torch = pytest.importorskip("torch")
    from curate.evaluate.generation import encode_prompts, generate, stop_token_ids
    from curate.train.model import load_tokenizer, quiet_libraries

    quiet_libraries()
    tiny = str(SAMPLES / "tiny-chat")
    tokenizer = load_tokenizer(tiny)
    from transformers import AutoConfig, AutoModelForCausalLM

    # The sample model's seeded weights answer every prompt with newlines; wider random weights
    # answer each prompt differently, so a padding mistake would show.
    config = AutoConfig.from_pretrained(tiny)
    config.initializer_range = 0.6
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    rows = [json.loads(line) for line in (SAMPLES / "train-demo.jsonl").read_text().splitlines()[:12]]
    prompts = [row["messages"][:-1] for row in rows]
    batched = generate(model, tokenizer, prompts, max_new_tokens=12, batch_size=5)
    stops = stop_token_ids(tokenizer)
    assert len({o.text for o in batched.outputs}) > 6
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in stops
    assert len({len(ids) for ids in encode_prompts(tokenizer, prompts)}) > 3  # lengths differ, so rows really are padded
    for prompt, output in zip(prompts, batched.outputs):
        ids = torch.tensor([encode_prompts(tokenizer, [prompt])[0]])
        with torch.no_grad():
            alone = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                                   eos_token_id=stops, pad_token_id=tokenizer.pad_token_id)
        tokens, _ = split_output(alone[0, ids.shape[1]:].tolist(), set(stops))
        assert output.text == tokenizer.decode(tokens, skip_special_tokens=True)
        assert output.prompt_tokens == ids.shape[1]


def test_several_adapters_get_distinct_candidate_names():
    from curate.commands.eval import adapter_names

    assert adapter_names(["runs/a"]) == {"adapter": "runs/a"}
    assert adapter_names(["runs/a", "other/a", "runs/b"]) == {"a": "runs/a", "a-2": "other/a", "b": "runs/b"}


def test_a_run_from_before_eval_lines_were_recorded_redoes_its_seeded_split(tmp_path):
    """Manifests written before `eval_lines` existed: the held-out rows are the seeded split
    again, and the rest are the training rows (this path raised a TypeError)."""
    import hashlib

    from curate.evaluate.pipeline import read_run
    from curate.train.data import read_data_file, split_eval

    rows = [{"messages": [{"role": "user", "content": f"What is {n} times 3?"}, {"role": "assistant", "content": f"#### {3 * n}"}]} for n in range(40)]
    data = write_jsonl(tmp_path / "task.jsonl", rows)
    run = tmp_path / "run"
    run.mkdir()
    (run / "adapter_config.json").write_text("{}")
    manifest = {"curate_train": 1, "base_model": "samples/tiny-chat", "config": {"eval_fraction": 0.2, "seed": 7},
                "data": {"path": str(data), "sha256": hashlib.sha256(data.read_bytes()).hexdigest()}}
    (run / "manifest.json").write_text(json.dumps(manifest))
    found = read_run(run)
    expected = split_eval(read_data_file(data).conversations, 0.2, 7)
    assert found.held_out_lines == {row.line for row in expected.evaluation} and len(found.held_out_lines) == 8
    assert sorted(row.line for row in found.train) == sorted(row.line for row in expected.train)
