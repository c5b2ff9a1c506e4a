"""Generate N synthetic chat rows (OpenAI `messages` format) for benchmarks.

Deterministic for a seed. A share of rows are planted near-duplicates (a word
or two changed) and exact duplicates, so dataset rules have work to do.

    python bench/generate.py 100000 -o bench/out/chat-100k.jsonl
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import orjson

WORDS = (
    "account billing refund order shipping delivery password login error update install device battery screen "
    "network router invoice charge subscription plan upgrade downgrade cancel renew address email phone support "
    "ticket issue problem request question answer policy warranty return exchange product service customer agent "
    "manager payment card bank transfer balance statement report data export import file folder backup restore "
    "settings profile security privacy notification message chat call meeting schedule calendar reminder task "
    "project team member role permission access token key server database query table index cache memory disk "
    "cpu usage limit quota price discount coupon promotion gift loyalty points reward level status pending "
    "approved rejected failed success retry timeout connection speed slow fast quickly today tomorrow week month"
).split()
FILLER = "the a an to of for with on in and or but please can could would should my your our this that it is was".split()


def sentence(rng: random.Random, length: int) -> str:
    words = [rng.choice(WORDS) if rng.random() < 0.6 else rng.choice(FILLER) for _ in range(length)]
    return " ".join(words).capitalize() + "."


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng, rng.randint(6, 18)) for _ in range(sentences))


def make_row(rng: random.Random) -> dict:
    messages = [{"role": "system", "content": "You are a helpful support assistant."}] if rng.random() < 0.3 else []
    for _ in range(rng.choice((1, 1, 1, 2))):
        messages.append({"role": "user", "content": paragraph(rng, rng.randint(1, 3))})
        messages.append({"role": "assistant", "content": paragraph(rng, rng.randint(1, 6))})
    return {"messages": messages}


def perturb(row: dict, rng: random.Random) -> dict:
    """A near-duplicate: one or two words of one turn changed."""
    messages = [dict(message) for message in row["messages"]]
    target = rng.choice([m for m in messages if m["role"] != "system"])
    words = target["content"].split()
    for _ in range(rng.randint(1, 2)):
        words[rng.randrange(len(words))] = rng.choice(WORDS)
    target["content"] = " ".join(words)
    return {"messages": messages}


def generate(n: int, seed: int = 0, near_dup_share: float = 0.05, exact_dup_share: float = 0.02):
    rng = random.Random(seed)
    recent: list[dict] = []
    for _ in range(n):
        roll = rng.random()
        if recent and roll < exact_dup_share:
            row = rng.choice(recent)
        elif recent and roll < exact_dup_share + near_dup_share:
            row = perturb(rng.choice(recent), rng)
        else:
            row = make_row(rng)
            recent.append(row)
            if len(recent) > 1000:
                recent.pop(0)
        yield row


def write(path: Path, n: int, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        for row in generate(n, seed):
            handle.write(orjson.dumps(row) + b"\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rows", type=int)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write(args.output, args.rows, args.seed)


if __name__ == "__main__":
    main()
