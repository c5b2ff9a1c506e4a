"""Eval leakage: paraphrased copies of eval questions are caught, look-alikes are not,
eval files in several shapes are read, and a bad eval file is a one-line error."""

from __future__ import annotations

import json
import random

import pytest

from tests.conftest import lint_rows, write_jsonl
from tests.test_dedup import edit_once

EVAL_QUESTIONS = [
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?",
    "Weng earns 12 dollars an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?",
    "Betty is saving money for a new wallet which costs 100 dollars. Betty has only half of the money she needs. How much more money does Betty need?",
    "James writes a 3-page letter to 2 different friends twice a week. How many pages does he write a year?",
    "Mark has a garden with flowers. He planted plants of three different colors in it. Ten of them are yellow, and there are 80% more of those in purple.",
    "Albert is wondering how much pizza he can eat in one day. He buys 2 large pizzas and 2 small pizzas. A large pizza has 16 slices and a small pizza has 8 slices.",
    "Ken created a care package to send to his brother, who was away at boarding school. Ken placed a box on a scale and poured in enough jelly beans to bring the weight to 2 pounds.",
    "Alexis is applying for a new job and bought a new set of business clothes to wear to the interview. She went to a department store with a budget of 200 dollars.",
]

LOOK_ALIKES = [
    "Maria sold pens to 36 of her classmates in June, and then she sold a third as many pens in July. How many pens did she sell in total?",
    "Omar earns 15 dollars an hour mowing lawns. Last week he worked 3 hours. How much did he earn?",
    "Lena is saving for a bicycle that costs 250 dollars. She has saved 90 dollars so far. How much more does she need?",
    "Priya writes a 5-page report for 4 different clients every month. How many pages does she write in a year?",
    "How many apples does she have left if she started with 10 and ate 2?",
]


def chat(user: str, assistant: str = "Let me work through it.") -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


@pytest.fixture
def eval_file(tmp_path):
    return write_jsonl(tmp_path / "eval.jsonl", [{"question": q, "answer": "42"} for q in EVAL_QUESTIONS])


def test_paraphrased_eval_questions_are_caught_once(tmp_path, eval_file):
    rng = random.Random(3)
    edited = []
    for question in EVAL_QUESTIONS:
        text = question
        for _ in range(rng.randint(1, 2)):
            text = edit_once(text, rng)
        edited.append(text)
    edited.append("Hi! " + EVAL_QUESTIONS[0].replace("altogether ", ""))
    result = lint_rows(tmp_path, [chat(text) for text in edited], eval=[str(eval_file)], select=["LK"])
    lines = [f.line for f in result.findings]
    assert sorted(lines) == list(range(1, len(edited) + 1)), [f.message for f in result.findings]  # each row once
    for finding in result.findings:
        question_line = EVAL_QUESTIONS.index(EVAL_QUESTIONS[0]) + 1 if finding.line > len(EVAL_QUESTIONS) else finding.line
        assert finding.related[0].line == question_line
        assert finding.data["eval"] == {"path": str(eval_file), "line": question_line, "field": "question"}


def test_look_alike_problems_and_shared_answers_are_not_leaks(tmp_path, eval_file):
    rows = [chat(text, "42") for text in LOOK_ALIKES]
    result = lint_rows(tmp_path, rows, eval=[str(eval_file)], select=["LK"])
    assert result.findings == [], [f.message for f in result.findings]


def test_overlap_message_names_eval_line_and_span(tmp_path, eval_file):
    prompt = "Solve this: " + EVAL_QUESTIONS[6] + " Explain each step."
    result = lint_rows(tmp_path, [chat(prompt)], eval=[str(eval_file)], select=["LK002"])
    (finding,) = result.findings
    assert f"{eval_file}:7 (question)" in finding.message
    assert "ken created a care package" in finding.message
    assert finding.data["words"] >= 30


@pytest.mark.parametrize("shape", ["json-array", "chat", "text"])
def test_eval_files_in_other_shapes(tmp_path, shape):
    question = EVAL_QUESTIONS[1]
    if shape == "json-array":
        path = tmp_path / "eval.json"
        path.write_text(json.dumps([{"id": 1, "item": {"prompt": question}}]), encoding="utf-8")
    elif shape == "chat":
        path = write_jsonl(tmp_path / "eval.jsonl", [chat(question, "She earned 10 dollars.")])
    else:
        path = write_jsonl(tmp_path / "eval.jsonl", [{"text": question}])
    result = lint_rows(tmp_path, [chat(question.lower())], eval=[str(path)], select=["LK"])
    assert [f.code for f in result.findings] == ["LK001"]


def test_bad_eval_file_is_one_line_error(tmp_path):
    bad = tmp_path / "eval.jsonl"
    bad.write_text('{"question": "fine question here"}\n{"question": \n', encoding="utf-8")
    result = lint_rows(tmp_path, [chat("hello there friend")], eval=[str(bad)], select=["LK"])
    assert result.errors and all("\n" not in error for error in result.errors)
    assert f"{bad}:2" in result.errors[0]
    missing = lint_rows(tmp_path, [chat("hello there friend")], eval=[str(tmp_path / "nope.jsonl")], select=["LK001"])
    assert "no such file" in missing.errors[0]
