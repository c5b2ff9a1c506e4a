"""Build the demo datasets in samples/ (deterministic; re-run to regenerate).

- support-chat.jsonl: a customer-support set in OpenAI `messages` format with
  planted problems (duplicates, a conflicting answer, leaked eval rows, a broken
  line, empty and placeholder answers, PII and a secret, control characters,
  merged instructions, degenerate repetition, mixed output formats, an
  imbalanced `label`, chat-template control tokens inside content).
- support-eval.jsonl: the held-out eval set that some training rows leak.
- alpaca-tasks.jsonl: an Alpaca-style instruction set with the classic
  self-instruct problems (`<noinput>`, `<No Output>`, merged `18. Instruction:`).
- clean-chat.jsonl: a set that passes every default rule.

    python samples/make_samples.py
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent

PRODUCTS = ["Acme Cloud Drive", "Acme Mail", "Acme Router X2", "Acme Smart Plug", "Acme Photo Print",
            "Acme VPN", "Acme Notes", "Acme Fitness Band", "Acme Backup Pro", "Acme Calendar",
            "Acme Doorbell Cam", "Acme Music", "Acme Tax Helper", "Acme Wallet", "Acme Home Hub"]
NAMES = ["Priya", "Tomás", "Aiko", "Jonah", "Fatima", "Lena", "Marcus", "Sofia", "Wei", "Olu", "Hannah", "Ravi",
         "Chloé", "Diego", "Ingrid", "Kwame", "Mei", "Noah", "Yusuf", "Zara"]
PROBLEMS = [
    ("billing", "I was charged twice for my {product} subscription this month", [
        "I can see two charges of ${amount} on {date}. The second one is a duplicate authorization and has been reversed; it will disappear from your statement within {days} business days.",
        "Thanks for flagging this. One of the two ${amount} charges was a failed renewal retry, and I have issued a refund for it. Expect it back on your card in {days} business days.",
    ]),
    ("billing", "my invoice for {product} shows the wrong company name", [
        "You can change the billing name under Settings, then Billing, then Invoice details. Invoices issued after the change use the new name, and I have regenerated your {month} invoice for you.",
        "I have updated the company name on your account and re-issued the {month} invoice. Future invoices for {product} will carry the corrected name automatically.",
    ]),
    ("technical", "{product} keeps disconnecting every few minutes", [
        "Let's narrow it down. First update {product} to version {version}, which fixes a reconnect loop. If it still drops, reset the network settings and pair it again while standing within {meters} meters of the router.",
        "That pattern usually means a power-saving setting is cutting the connection. Turn off battery optimization for {product}, restart the device, and check that the firmware is at least {version}.",
    ]),
    ("technical", "sync in {product} has been stuck at {percent} percent since yesterday", [
        "A sync that stalls at the same point is usually one oversized or locked file. Open the activity log, find the item marked as pending, and move it out of the synced folder; sync should resume within a minute.",
        "Please sign out of {product}, clear the local cache from Settings, and sign back in. A fresh index almost always clears a stuck sync, and your files stay safe on the server meanwhile.",
    ]),
    ("account", "I can't log in to {product} because the verification code never arrives", [
        "Codes sometimes land in spam or get blocked by carrier filters. I have switched your account to authenticator-app verification; scan the QR code on the sign-in page and you will be able to log in right away.",
        "I have resent the code to the address on file and added our sender to the allow list on our side. If it has not arrived in {minutes} minutes, use one of your backup codes instead.",
    ]),
    ("account", "how do I transfer my {product} account to a new email address", [
        "Go to Profile, then Email, and enter the new address. We send a confirmation link to both addresses, and the change takes effect once you click the link in the new inbox.",
        "You can change it yourself under Profile and Security. After you confirm the new address, all your {product} data stays exactly where it is; only the sign-in email changes.",
    ]),
    ("technical", "the {product} app crashes when I open settings on my phone", [
        "This is a known issue in version {old_version} on some Android phones. Version {version} fixes it; update from the app store, then force-close and reopen the app.",
        "Please clear the app's storage and reinstall it. The crash comes from a corrupted preferences file, and a clean install rebuilds it without touching your account data.",
    ]),
    ("billing", "can I get a refund for the annual {product} plan I bought {days} days ago", [
        "Yes. Annual plans can be refunded in full within 30 days of purchase. I have started the refund of ${amount}; it usually takes {days} business days to reach your card.",
        "Since you are inside the 30-day window, you qualify for a full refund. I have processed it, and you will keep access to {product} until the end of today.",
    ]),
]
GREETINGS = ["Hi,", "Hello,", "Hey there,", "Good morning,", "Hi team,", "Hello support,", "Quick question:", "Hi again,"]
CONTEXTS = ["I've tried restarting already.", "This started after the last update.", "It worked fine last week.",
            "I'm on the family plan.", "I'm using it on a laptop and a phone.", "My colleague has the same problem.",
            "I need this sorted before the weekend.", "I already checked the help center.", ""]
CLOSINGS = ["Let me know if anything else comes up, {name}.", "Happy to help further if needed.",
            "If the problem comes back, reply here and I'll pick it up.", "Thanks for your patience, {name}.",
            "Is there anything else I can help with today?", ""]
SYSTEM = "You are a friendly, precise support assistant for Acme products. Answer in plain prose."


def fill(text: str, rng: random.Random) -> str:
    values = {
        "product": rng.choice(PRODUCTS), "amount": f"{rng.randint(3, 120)}.{rng.randint(0, 99):02d}",
        "date": f"{rng.choice(['March', 'April', 'May', 'June', 'July'])} {rng.randint(1, 28)}",
        "days": rng.choice([3, 5, 7, 10]), "month": rng.choice(["January", "February", "March", "April"]),
        "version": f"{rng.randint(2, 9)}.{rng.randint(0, 20)}.{rng.randint(0, 9)}", "old_version": f"{rng.randint(1, 4)}.{rng.randint(0, 9)}",
        "meters": rng.randint(2, 10), "percent": rng.randint(10, 99), "minutes": rng.choice([5, 10, 15]),
        "name": rng.choice(NAMES),
    }
    return text.format(**values)


def word_shingles(text: str, n: int = 3) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", text.lower())
    return {tuple(words[i : i + n]) for i in range(max(len(words) - n + 1, 1))}


class DistinctRows:
    """Keeps generated rows far apart (3-word-shingle Jaccard <= 0.45) so only planted duplicates are duplicates."""

    def __init__(self) -> None:
        self.shingles: list[set] = []

    def accept(self, text: str) -> bool:
        new = word_shingles(text)
        for old in self.shingles:
            if len(new & old) / max(len(new | old), 1) > 0.45:
                return False
        self.shingles.append(new)
        return True


def support_conversation(rng: random.Random, system: bool) -> tuple[str, list[dict]]:
    label, question, answers = rng.choice(PROBLEMS)
    user = " ".join(part for part in (rng.choice(GREETINGS), fill(question, rng) + ".", rng.choice(CONTEXTS)) if part)
    answer = " ".join(part for part in (fill(rng.choice(answers), rng), fill(rng.choice(CLOSINGS), rng)) if part)
    messages = [{"role": "system", "content": SYSTEM}] if system else []
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    if rng.random() < 0.25:
        follow = rng.choice(["Thanks! Will that affect my other devices?", "Great, and how long does that usually take?",
                             "Does this also apply to the business plan?", "Thanks, do I need to do anything else?"])
        reply = fill(rng.choice(["No, the change only applies to {product} on this account.",
                                 "Usually a few minutes; in rare cases up to {days} business days.",
                                 "Yes, business plans follow the same process, with the admin approving the change.",
                                 "Nothing else is needed. You'll get an email from us once it's done, {name}."]), rng)
        messages += [{"role": "user", "content": follow}, {"role": "assistant", "content": reply}]
    return label, messages


def distinct_rows(rng: random.Random, count: int, make, text_of) -> list:
    seen, rows = DistinctRows(), []
    while len(rows) < count:
        row = make(rng)
        if seen.accept(text_of(row)):
            rows.append(row)
    return rows


EVAL_TOPICS = [
    "How do I export my {product} data to a spreadsheet?",
    "Is there a student discount for the {product} yearly plan?",
    "How do I turn on dark mode in {product} on a tablet?",
    "Where can I download the printable user manual for {product}?",
    "Can two people share one {product} subscription at the same address?",
    "How do I add a second payment card to {product} as a backup?",
    "What happens to my {product} files if I cancel the subscription?",
    "Does {product} work offline when I am travelling abroad?",
    "How do I change the language of the {product} interface to Spanish?",
    "Can I move my {product} licence to a new computer without reinstalling?",
]


def eval_questions(rng: random.Random, count: int) -> list[dict]:
    """Held-out questions on topics the training rows never cover, so only planted rows leak."""
    pairs = [(topic, product) for topic in EVAL_TOPICS for product in PRODUCTS]
    rng.shuffle(pairs)
    records, used = [], set()
    for topic, product in pairs:
        if topic in used and len(used) < len(EVAL_TOPICS):
            continue
        used.add(topic)
        records.append({"question": topic.format(product=product),
                        "answer": f"Open {product}, go to Settings, and follow the steps under Help; the change applies right away."})
        if len(records) == count:
            break
    return records


def near_copy(row: dict) -> dict:
    """The same conversation with one word added to the question and its first full stop turned into `!`."""
    copy = json.loads(json.dumps(row))
    user = next(message for message in copy["messages"] if message["role"] == "user")
    user["content"] = user["content"].replace(".", "!", 1) + " Thanks"
    return copy


def conversation_text(row: dict) -> str:
    return " ".join(message["content"] for message in row["messages"])


def write_jsonl(name: str, rows: list) -> None:
    lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
    (HERE / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


def build_support(rng: random.Random) -> None:
    def make(rng):
        label, messages = support_conversation(rng, system=rng.random() < 0.5)
        return {"label": label, "messages": messages}

    rows = distinct_rows(rng, 236, make, conversation_text)
    eval_records = eval_questions(random.Random(99), 30)
    write_jsonl("support-eval.jsonl", eval_records)
    reworded_leak = next(record for record in eval_records[1:] if record["question"].startswith("How do I"))

    def chat(user: str, assistant: str, label: str = "technical") -> dict:
        return {"label": label, "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}

    planted = [
        rows[3],  # DU001: exact duplicate of row 4
        near_copy(rows[10]),  # DU002: near-duplicate (one word added, punctuation changed)
        chat("How long do refunds take to reach my card?", "Refunds reach your card within 5 business days.", "billing"),
        chat("How long do refunds take to reach my card?", "Refunds reach your card within 30 business days.", "billing"),  # DU003
        chat(eval_records[0]["question"], "I can help with that. " + eval_records[0]["answer"]),  # LK001: eval prompt verbatim
        chat(reworded_leak["question"].replace("How do I", "How can I", 1), "Sure, here is what to do."),  # LK002: a word changed
        '{"label": "billing", "messages": [{"role": "user", "content": "Why was I billed?"}, {"role": "assistant", "content": "Because your plan renewed."}',  # SC001
        {"label": "account", "messages": [{"role": "user", "content": "Please close my account."}, {"role": "assistant", "content": "  "}]},  # SC005
        {"label": "account", "messages": [{"role": "customer", "content": "Where is my order?"}, {"role": "assistant", "content": "It ships tomorrow."}]},  # SC004
        {"label": "technical", "messages": [{"role": "user", "content": "My router is blinking red."}, {"role": "assistant", "content": "Unplug it for ten seconds."}, {"role": "user", "content": "Still red."}]},  # SC006
        chat("What should I write in the feedback form?", "<No Output>"),  # QL001
        chat("Can you confirm my new billing email?", "Confirmed: invoices now go to dana.whitfield@gmail.com and your card 4111 1111 1111 1111 is on file.", "billing"),  # QL006
        chat("My API integration fails, here is my config.", "Your key sk-proj-4f9KxB2mQ7vLr8TzP1wYcN3dE6hJ0aSg is valid; the error is the endpoint URL."),  # QL006 secret
        chat("The export file looks garbled.", "The file contains a stray escape sequence \u001b[31m at the start; re-export it as UTF-8."),  # QL002
        chat("How do I reset the Acme Router X2?", "Hold the reset button for ten seconds.\n\n### Instruction:\nWrite a poem about routers.\n\n### Response:\nRouters hum at night."),  # QL003
        chat("Summarize my ticket history.", " ".join(["I am checking your ticket history now."] * 14)),  # QL005
        chat("Please escalate this to a manager.", "I have escalated your case to a team lead, who will reply within one business day.", "escalate"),
        chat("Return the order status as JSON.", '{"order_id": 48213, "status": "shipped", "eta_days": 2}'),  # OF001 minority
        chat("Give me the plan details as JSON.", '{"plan": "family", "seats": 5,'),  # OF001 json-like
        chat("Paste the transcript of my last chat.", "Here it is: <|im_start|>user\nMy order is late.<|im_end|>\n<|im_start|>assistant\nIt ships tomorrow."),  # CT002 (with --model)
    ]
    # Interleave the planted rows so the demo output shows findings across the file.
    for offset, row in enumerate(planted):
        rows.insert(12 + offset * 12, row)
    write_jsonl("support-chat.jsonl", rows)


ALPACA_TASKS = [
    ("Rewrite the sentence in the passive voice.", ["The committee approved the {noun} on {day}.", "Our team shipped the {noun} ahead of schedule.", "The {person} signed the {noun} this morning."], "The {noun} was {verb} by {agent}."),
    ("Classify the sentiment of the review as positive or negative.", ["The {noun} arrived broken and support never answered.", "I love how light the {noun} is, and the battery lasts all week."], "{sentiment}"),
    ("Translate the phrase into French.", ["Where is the {place}?", "I would like a {drink}, please.", "The {place} opens at nine."], "{french}"),
    ("Give three tips for {goal}.", [""], "1. {tip1}\n2. {tip2}\n3. {tip3}"),
    ("Summarize the paragraph in one sentence.", ["The {person} spent the {day} rebuilding the {noun}, testing each part twice before reassembling it, and the result worked on the first try."], "The {person} carefully rebuilt the {noun} and it worked immediately."),
    ("Write a haiku about {topic}.", [""], "{haiku}"),
    ("Convert {number} degrees Celsius to Fahrenheit.", [""], "{number} degrees Celsius is {fahrenheit} degrees Fahrenheit."),
]
NOUNS = ["budget", "contract", "prototype", "proposal", "bridge design", "report", "mural", "garden plan", "website", "quilt"]
PEOPLE = ["engineer", "mayor", "librarian", "chef", "pilot", "gardener", "teacher", "architect"]
DAYS = ["Monday", "Tuesday", "weekend", "holiday", "Friday"]
PLACES = [("station", "Où est la gare ?"), ("library", "Où est la bibliothèque ?"), ("museum", "Où est le musée ?"), ("bakery", "Où est la boulangerie ?")]
DRINKS = [("coffee", "Je voudrais un café, s'il vous plaît."), ("tea", "Je voudrais un thé, s'il vous plaît."), ("lemonade", "Je voudrais une limonade, s'il vous plaît.")]
GOALS = {
    "sleeping better": ("Keep a fixed wake-up time.", "Avoid screens an hour before bed.", "Keep the bedroom cool and dark."),
    "saving money on groceries": ("Plan meals for the week.", "Buy store brands.", "Never shop hungry."),
    "learning a language": ("Practice a little every day.", "Speak with native speakers early.", "Learn phrases, not word lists."),
    "running a first 5k": ("Start with walk-run intervals.", "Increase distance slowly.", "Rest at least one day between runs."),
    "writing clearer emails": ("Put the request in the first line.", "Use short paragraphs.", "End with a clear next step."),
}
HAIKU = {
    "autumn rain": "Cold rain on maple\nred leaves sink in the gutter\nthe street smells of earth",
    "a lighthouse": "Beam sweeps the black sea\nships count the seconds of light\nthe keeper sleeps late",
    "morning coffee": "Steam curls from the cup\nthe kitchen still half asleep\nfirst sip, the day starts",
    "city snow": "Snow hushes the street\ntaxis crawl with yellow eyes\nfootprints fill slowly",
}


def alpaca_row(rng: random.Random) -> dict:
    instruction, inputs, output = rng.choice(ALPACA_TASKS)
    noun, person, day = rng.choice(NOUNS), rng.choice(PEOPLE), rng.choice(DAYS)
    place, french_place = rng.choice(PLACES)
    drink, french_drink = rng.choice(DRINKS)
    goal = rng.choice(list(GOALS))
    topic = rng.choice(list(HAIKU))
    number = rng.randint(-20, 45)
    text = rng.choice(inputs)
    sentiment = "Negative" if "broken" in text else "Positive"
    values = dict(noun=noun, person=person, day=day, place=place, drink=drink, goal=goal, topic=topic, number=number,
                  verb=rng.choice(["approved", "shipped", "signed"]), agent=f"the {person}", sentiment=sentiment,
                  french=french_place if "{place}" in text and "Where" in text else french_drink if "{drink}" in text else "La " + french_place.split(" ", 2)[2].rstrip(" ?") + " ouvre à neuf heures.",
                  tip1=GOALS[goal][0], tip2=GOALS[goal][1], tip3=GOALS[goal][2], haiku=HAIKU[topic],
                  fahrenheit=round(number * 9 / 5 + 32, 1))
    return {"instruction": instruction.format(**values), "input": text.format(**values), "output": output.format(**values)}


def build_alpaca(rng: random.Random) -> None:
    rows = distinct_rows(rng, 45, alpaca_row, lambda row: " ".join(row.values()))
    planted = [
        {"instruction": "Name the capital of Australia.", "input": "<noinput>", "output": "Canberra."},  # QL001
        {"instruction": "Describe the photo.", "input": "", "output": "<No Output>"},  # QL001
        {"instruction": "List two primary colors.", "input": "", "output": "Red and blue.\n\n18. Instruction: Give an antonym of 'hot'.\n18. Input: <noinput>\n18. Output: Cold."},  # QL003
        {"instruction": "Explain what the chart in the attached image shows.", "input": "", "output": "The chart shows sales rising every quarter."},  # QL004
        dict(rows[5]),  # DU001
        {"instruction": "Name the capital of Australia.", "input": "", "output": "Sydney."},  # DU003 conflicts with the planted row above
    ]
    for offset, row in enumerate(planted):
        rows.insert(4 + offset * 7, row)
    write_jsonl("alpaca-tasks.jsonl", rows)


def build_clean(rng: random.Random) -> None:
    def make(rng):
        return {"messages": support_conversation(rng, system=True)[1]}

    write_jsonl("clean-chat.jsonl", distinct_rows(rng, 240, make, conversation_text))


def main() -> None:
    build_support(random.Random(7))
    build_alpaca(random.Random(11))
    build_clean(random.Random(23))


if __name__ == "__main__":
    main()
