"""DU002 at scale: large LSH buckets, shared boilerplate, and `curate fix` then `curate lint`."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from curate.cli import main
from tests.conftest import write_jsonl

VOCABULARY = (
    "account billing refund order shipping delivery password login error update install device battery screen network "
    "router invoice charge subscription plan upgrade cancel renew address email phone support ticket issue request "
    "policy warranty return exchange product service customer agent payment card bank transfer balance statement report "
    "export import file folder backup restore settings profile security privacy notification message schedule calendar "
    "reminder project team member permission access token server database cache memory disk price discount coupon gift"
).split()
FILLER = "the a to of for with on in and or but please can could would should my your our this that it is was".split()
#: A tool header in the style of GPTeacher Toolformer instructions, shared by every row of such a file (about 60 words).
TOOL_HEADER = (
    "You have access to the following tools. Calculator(expression) evaluates an arithmetic expression and returns the "
    "result. Search(query) looks a query up on the web and returns the first snippet. Calendar() returns today's date. "
    "WikiSearch(term) returns the opening paragraph of the encyclopedia article for a term. Use a tool by writing its "
    "call where its result belongs, then continue the answer. Task:"
)
TASKS = [
    ("Who was Albert Einstein?", "A theoretical physicist."),
    ("Where is Machu Picchu?", "High in the Peruvian Andes."),
    ("What does a barometer measure?", "Air pressure."),
    ("How do bees make honey?", "From flower nectar."),
    ("Why is the sky blue?", "Air scatters blue light."),
    ("What is the capital of Canada?", "Ottawa."),
]
#: A longer task, as in rows that really repeat under the header.
LONG_TASK = (
    "Our team is planning a week of hiking in the Scottish Highlands in late September and wants to know what the "
    "weather is usually like, how much daylight there is, and which three items of clothing matter most.",
    "Expect changeable weather with frequent rain, highs around twelve degrees and roughly twelve hours of daylight; "
    "pack a waterproof jacket, warm layers and broken-in boots.",
)


def sentence(rng: random.Random, length: int) -> str:
    return " ".join(rng.choice(VOCABULARY) if rng.random() < 0.7 else rng.choice(FILLER) for _ in range(length)).capitalize() + "."


def chat(user: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def random_row(rng: random.Random) -> dict:
    return chat(" ".join(sentence(rng, rng.randint(8, 16)) for _ in range(2)), " ".join(sentence(rng, rng.randint(8, 16)) for _ in range(4)))


def edited(row: dict, rng: random.Random, edits: int) -> dict:
    """A near copy: `edits` words of one turn replaced, dropped or inserted."""
    messages = [dict(message) for message in row["messages"]]
    target = rng.choice(messages)
    words = target["content"].split(" ")
    for _ in range(edits):
        at = rng.randrange(len(words))
        kind = rng.choice(("replace", "drop", "insert"))
        if kind == "replace":
            words[at] = rng.choice(VOCABULARY)
        elif kind == "drop" and len(words) > 2:
            del words[at]
        else:
            words.insert(at, rng.choice(VOCABULARY))
    target["content"] = " ".join(words)
    return {"messages": messages}


def corpus_with_copies(seed: int) -> list[dict]:
    """Distinct rows, 10% exact copies and 15% near copies with 1-3 word edits, shuffled."""
    rng = random.Random(seed)
    rows = [random_row(rng) for _ in range(400)]
    rows += [dict(rng.choice(rows)) for _ in range(40)]
    rows += [edited(rng.choice(rows), rng, rng.randint(1, 3)) for _ in range(60)]
    rng.shuffle(rows)
    return rows


def corpus_with_big_clusters(seed: int) -> list[dict]:
    """Two clusters of 300+ near copies (copies of a few copies, 1-3 edits each) among 600 distinct rows."""
    rng = random.Random(seed)
    rows = [random_row(rng) for _ in range(600)]
    for size in (320, 350):
        cluster = [random_row(rng)]
        while len(cluster) < size:
            cluster.append(edited(rng.choice(cluster[:5]), rng, rng.randint(1, 3)))
        rows += cluster
    rng.shuffle(rows)
    return rows


def corpus_with_shared_header(seed: int) -> list[dict]:
    """Toolformer-like rows: one tool header, distinct short tasks, some near copies under the header."""
    rng = random.Random(seed)
    rows = []
    for index in range(240):
        question, answer = TASKS[index % len(TASKS)]
        topic = " ".join(rng.choice(VOCABULARY) for _ in range(6))
        rows.append(chat(f"{TOOL_HEADER} {question} Mention {topic}.", f"{answer} {sentence(rng, 10)}"))
    rows += [edited(rng.choice(rows), rng, rng.randint(1, 3)) for _ in range(40)]
    rng.shuffle(rows)
    return rows


CORPORA = {
    "exact and near copies": corpus_with_copies,
    "big clusters of near copies": corpus_with_big_clusters,
    "shared tool header": corpus_with_shared_header,
}


def lint_file(path, select=("DU001", "DU002")):
    from curate.engine.runner import run_lint
    from curate.engine.settings import LintRequest, plan_lint

    return run_lint(plan_lint(LintRequest(paths=[str(path)], select=list(select), isolated=True)))


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_lint_of_fix_output_has_no_duplicates(tmp_path, capsys, corpus, seed):
    rows = CORPORA[corpus](seed)
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    assert main(["fix", "--isolated", "--no-progress", "--select", "DU001,DU002", str(data)]) == 0
    capsys.readouterr()
    clean = tmp_path / "data.clean.jsonl"
    kept = len(clean.read_text().splitlines())
    assert 0 < kept < len(rows)  # the corpus had duplicates and fix dropped them
    left = [(f.code, f.line, f.message) for f in lint_file(clean).findings]
    assert left == []


def test_rows_left_unflagged_hold_no_near_duplicate_pair(tmp_path):
    """Whatever the bucket sizes: no two rows a cleaner keeps (no DU001/DU002 finding) that share
    an LSH bucket reach the threshold, and none at all reach 0.9 (where LSH misses one pair in
    100,000), checked by brute force over all pairs of kept rows."""
    import polars as pl

    from curate.text.minhash import LshBands, MinHasher
    from curate.text.shingles import pair_jaccards, row_shingle_sets, tokenize

    rows = corpus_with_big_clusters(3)
    result = lint_file(write_jsonl(tmp_path / "data.jsonl", rows))
    kept = [line for line in range(1, len(rows) + 1) if line not in {f.line for f in result.findings}]
    assert len(kept) < 700  # the two clusters collapsed
    tokens = tokenize(pl.Series([" ".join(m["content"] for m in rows[line - 1]["messages"]) for line in kept]))
    values, counts = row_shingle_sets(tokens.hashes, tokens.counts, 2)
    pairs = np.stack(np.triu_indices(len(kept), k=1), axis=1)
    scores = pair_jaccards(values, np.cumsum(counts) - counts, counts, pairs)
    bands = LshBands(0.6, 128).hashes(MinHasher(128).signatures(values, counts))  # DU002's bands at its defaults
    share_bucket = (bands[pairs[:, 0]] == bands[pairs[:, 1]]).any(axis=1)
    close = [(kept[a], kept[b], round(float(score), 2)) for (a, b), score, shared in zip(pairs.tolist(), scores, share_bucket)
             if score >= 0.9 or (shared and score >= 0.8)]
    assert close == []


def header_rows(tasks: list[tuple[str, str]]) -> list[dict]:
    return [chat(f"{TOOL_HEADER} {question}", answer) for question, answer in tasks]


def unrelated_tasks(count: int, seed: int) -> list[tuple[str, str]]:
    """Short, unrelated tasks as Toolformer rows have them: the header is most of each row."""
    rng = random.Random(seed)
    made = list(TASKS)
    while len(made) < count:
        made.append((f"Explain {' '.join(rng.choice(VOCABULARY) for _ in range(3))}.", " ".join(rng.choice(VOCABULARY) for _ in range(4)).capitalize() + "."))
    return made


def test_a_shared_header_does_not_make_unrelated_tasks_near_duplicates(lint):
    rows = header_rows(unrelated_tasks(150, seed=4))
    assert "Einstein" in rows[0]["messages"][0]["content"] and "Machu" in rows[1]["messages"][0]["content"]
    assert [(f.line, f.message) for f in lint(rows, select=["DU002"]).findings] == []


def test_near_duplicates_under_a_shared_header_are_still_found(lint):
    question, answer = LONG_TASK
    rows = header_rows([*unrelated_tasks(150, seed=5), LONG_TASK, (question.replace("late September", "September"), answer)])
    (finding,) = lint(rows, select=["DU002"]).findings
    assert (finding.line, finding.related[0].line) == (152, 151)
    assert "ignoring" in finding.message and "boilerplate shingles" in finding.message
    assert finding.data["boilerplate_shingles"] > 40


def test_boilerplate_is_only_what_most_rows_share(lint):
    """Kept when asked, and not looked for in small files (two copies share 100% of their shingles)."""
    rows = header_rows(unrelated_tasks(150, seed=4))
    assert len(lint(rows, select=["DU002"], rule_options={"DU002": {"ignore-boilerplate": False}}).findings) > 100
    small = header_rows([LONG_TASK, LONG_TASK[:1] + (LONG_TASK[1] + " Enjoy.",)])
    (finding,) = lint(small, select=["DU002"]).findings
    assert "boilerplate" not in finding.message
