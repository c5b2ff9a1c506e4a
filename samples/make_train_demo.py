"""Build samples/train-demo.jsonl: short, distinct, clean chat rows for `curate train` demos.

    .venv/bin/python samples/make_train_demo.py

Deterministic. Short answers in a few task families (arithmetic, capitals,
opposites, spelling, word lengths, small how-tos), some rows with two
exchanges, so the tiny sample model can learn the pattern and learn to stop
within a few minutes on a CPU.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 7
ROWS = 320

CAPITALS = {
    "France": "Paris", "Spain": "Madrid", "Italy": "Rome", "Germany": "Berlin", "Portugal": "Lisbon",
    "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Poland": "Warsaw", "Austria": "Vienna",
    "Greece": "Athens", "Ireland": "Dublin", "Japan": "Tokyo", "Kenya": "Nairobi", "Egypt": "Cairo",
    "Peru": "Lima", "Chile": "Santiago", "Canada": "Ottawa", "Mexico": "Mexico City", "India": "New Delhi",
    "Thailand": "Bangkok", "Vietnam": "Hanoi", "Ghana": "Accra", "Cuba": "Havana", "Iceland": "Reykjavik",
    "Hungary": "Budapest", "Denmark": "Copenhagen", "Belgium": "Brussels", "Nepal": "Kathmandu", "Morocco": "Rabat",
}
OPPOSITES = {
    "hot": "cold", "early": "late", "empty": "full", "heavy": "light", "open": "closed", "quiet": "loud",
    "rich": "poor", "wet": "dry", "young": "old", "fast": "slow", "high": "low", "inside": "outside",
    "begin": "end", "accept": "refuse", "buy": "sell", "win": "lose", "push": "pull", "sharp": "blunt",
    "brave": "afraid", "cheap": "expensive", "rough": "smooth", "thick": "thin", "wide": "narrow", "tame": "wild",
}
WORDS = [
    "garden", "planet", "window", "silver", "rocket", "pencil", "forest", "bridge", "castle", "dragon",
    "marble", "orange", "pepper", "rabbit", "saddle", "tunnel", "violin", "wallet", "yellow", "zipper",
    "anchor", "basket", "candle", "doctor", "engine", "falcon", "guitar", "harbor", "island", "jacket",
]
HOWTOS = [
    ("restart the router", "Unplug it, wait ten seconds, plug it back in and wait for the light to turn green."),
    ("reset my password", "Choose Forgot password on the sign-in page and follow the link we email you."),
    ("change the display language", "Open Settings, choose Language and pick one from the list."),
    ("download an invoice", "Open Billing, find the month and choose Download PDF."),
    ("turn on dark mode", "Open Settings, choose Appearance and switch Dark mode on."),
    ("add a second user", "Open Team, choose Invite and enter their email address."),
    ("pause my subscription", "Open Billing and choose Pause; it restarts on the date you pick."),
    ("export my contacts", "Open Contacts, choose Export and save the CSV file."),
    ("update the app", "Open the app store, find the app and tap Update."),
    ("clear the cache", "Open Settings, choose Storage and tap Clear cache."),
]


def arithmetic(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    if rng.random() < 0.5:
        return f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."
    a, b = max(a, b), min(a, b)
    return f"What is {a} minus {b}?", f"{a} minus {b} is {a - b}."


def capital(rng: random.Random) -> tuple[str, str]:
    country = rng.choice(sorted(CAPITALS))
    return f"What is the capital of {country}?", f"The capital of {country} is {CAPITALS[country]}."


def opposite(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(sorted(OPPOSITES))
    return f"Give the opposite of '{word}'.", f"The opposite of '{word}' is '{OPPOSITES[word]}'."


def backwards(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS)
    return f"Spell '{word}' backwards.", f"'{word}' backwards is '{word[::-1]}'."


def letters(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(WORDS + sorted(OPPOSITES))
    return f"How many letters does '{word}' have?", f"'{word}' has {len(word)} letters."


def howto(rng: random.Random) -> tuple[str, str]:
    task, answer = rng.choice(HOWTOS)
    return f"How do I {task}?", answer


FAMILIES = (arithmetic, capital, opposite, backwards, letters, howto)


def rows() -> list[dict]:
    rng = random.Random(SEED)
    seen: set[str] = set()
    out = []
    while len(out) < ROWS:
        exchanges = 2 if rng.random() < 0.25 else 1
        pairs = [rng.choice(FAMILIES)(rng) for _ in range(exchanges)]
        key = "|".join(question for question, _ in pairs)
        if key in seen or len({question for question, _ in pairs}) < exchanges:
            continue
        seen.add(key)
        messages = [{"role": "system", "content": "You answer in one short sentence."}] if rng.random() < 0.3 else []
        for question, answer in pairs:
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        out.append({"messages": messages})
    return out


def main() -> None:
    path = HERE / "train-demo.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows()), encoding="utf-8")
    print(f"wrote {path} ({ROWS} rows)")


if __name__ == "__main__":
    main()
