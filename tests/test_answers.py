"""Final-answer extraction (curate/text/answers.py) and DU003 conflicts built on it."""

from __future__ import annotations

import pytest

from curate.text.answers import final_answer, final_answers
from tests.gsm8k_rows import equivalent_answers, gsm8k_row, planted_conflicts

GSM8K_DUCKS = (
    "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
    "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer's market.\n#### 18"
)
PLUMS = "She had 18 plums and gave away 6, 4 and 2: 18-6-4-2=<<18-6-4-2=6>>6 plums. \n#### 13"

CASES = [
    (GSM8K_DUCKS, "18"),
    (PLUMS, "13"),  # the marker, not the 6 the annotation and the last step end on
    ("#### 1,000", "1000"),
    ("\\boxed{42}", "42"),
    ("She has 12 - 4 = 8 apples left. The answer is 8.", "8"),
    ("The answer is: $1,200", "1200"),
    ("**Answer:** -3", "-3"),
    ("Final answer: yes", "yes"),
    ("The answer is simple: multiply 5 by 3 to get 15.", "15"),  # a phrase marker needs a value after it
    ("Twelve minus four leaves 8", "8"),
    ("Refunds reach your card within 5 business days.", "5"),
    ("Water boils at 100 degrees Celsius at sea level, which is 212 degrees Fahrenheit.", "212"),
    ("The total is $1,000.50.", "1000.5"),
    ("It costs 12.50 dollars", "12.5"),
    ("The 3 boys had 12.0 each.", "12"),
    ("It went from 5 to -3.", "-3"),
    ("The meeting starts at 10:30.", "10:30"),
    ("Step one uses 4 cups.\nStep two uses 7 cups.", "7"),  # the last line
    ("Yes, the family plan works in every country we serve.", "yes"),
    ("No. You need a new plan.", "no"),
    # not final answers: code, tool calls, expressions, numbers glued to words, earlier sentences
    ("python('50*1.8+32')", None),
    ("The temperature is python('(50 * 9 / 5) + 32') degrees.", None),
    ("<tool_call>{\"name\": \"convert\", \"arguments\": {\"celsius\": 50}}</tool_call>", None),
    ("Run `sleep 30` and then:\n```python\nprint(7)\n```", None),
    ("Pages 10-15.", None),
    ("So 8 are left. Hope this helps!", None),
    ("I bought 5km of rope", None),
    ("Tips: 1) Sleep well, 2) Eat breakfast, and 3) Keep a routine.", None),  # enumerators
    ("Steps:\n1. Mix the flour.\n2. Bake for 25 minutes.", "25"),
    ("Canberra.", None),
    ("", None),
]


@pytest.mark.parametrize(("text", "expected"), CASES)
def test_final_answer(text, expected):
    assert final_answer(text) == expected


def test_vectorized_form_agrees_with_the_scalar_one():
    texts = [text for text, _ in CASES] + [None]
    assert final_answers(texts) == [expected for _, expected in CASES] + [None]


def du003_lines(lint, rows):
    result = lint(rows, select=["DU003"])
    return sorted(f.line for f in result.findings), result.findings


def test_gsm8k_marker_conflict_fires_although_the_steps_share_the_number(lint):
    lines, findings = du003_lines(lint, [gsm8k_row("How many plums are left?", PLUMS), gsm8k_row("How many plums are left?", "#### 6")])
    assert lines == [1, 2]
    assert "(13 vs 6)" in findings[0].message


def test_planted_gsm8k_conflicts_are_all_found(lint):
    pairs = planted_conflicts()
    assert len(pairs) >= 20
    rows = [row for pair in pairs for row in pair]
    lines, _ = du003_lines(lint, rows)
    found = {(line - 1) // 2 for line in lines if line % 2 == 0}  # the changed copy of each pair
    missed = [index for index in range(len(pairs)) if index not in found]
    assert missed == [], f"found {len(found)} of {len(pairs)} planted conflicts"


def test_equivalent_answers_to_gsm8k_problems_do_not_conflict(lint):
    rows = [row for pair in equivalent_answers() for row in pair]
    assert du003_lines(lint, rows)[0] == []


def test_the_same_fact_in_other_units_is_not_a_conflict(lint):
    question = "At what temperature does water boil at sea level?"
    rows = [
        gsm8k_row(question, "Water boils at 100 degrees Celsius at sea level, which is 212 degrees Fahrenheit."),
        gsm8k_row(question, "At sea level, water boils at 212 °F, that is 100 °C."),
    ]
    assert du003_lines(lint, rows)[0] == []


def test_tool_call_arguments_are_not_final_answers(lint):
    question = "Convert 50 degrees Celsius to Fahrenheit."
    rows = [gsm8k_row(question, "python('50*1.8+32')"), gsm8k_row(question, "python('(50 * 9 / 5) + 32')")]
    assert du003_lines(lint, rows)[0] == []


def test_different_unmarked_results_still_conflict(lint):
    question = "A box holds 12 eggs. How many eggs are in 4 boxes?"
    rows = [gsm8k_row(question, "4 boxes hold 4 * 12 = 48 eggs."), gsm8k_row(question, "Four boxes hold 44 eggs.")]
    lines, findings = du003_lines(lint, rows)
    assert lines == [1, 2]
    assert "(48 vs 44)" in findings[0].message


def test_short_answers_are_compared_word_by_word_up_to_the_option(lint):
    question = "Which city hosts the head office?"
    rows = [
        {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": "The head office is in Oslo, Norway."}]},
        {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": "The head office is in Bergen, Norway."}]},
    ]
    assert lint(rows, select=["DU003"]).findings == []  # 7 words: longer than the default 6
    findings = lint(rows, select=["DU003"], rule_options={"DU003": {"short-answer-words": 7}}).findings
    assert sorted(f.line for f in findings) == [1, 2]
    assert "`the head office is in oslo norway` vs `the head office is in bergen norway`" in findings[0].message
