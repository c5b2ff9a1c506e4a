"""Per-output verdicts and per-candidate aggregates, from what the lint rules know.

    exact_match    final answers equal (`curate.text.answers.final_answer`, DU003's extraction)
    label_correct  the answer's class label equals the reference's (BL001's labels), when the
                   references read as classes
    json_valid     the output parses as a JSON object or array (OF001's classifier), when the
                   reference is JSON
    schema_match   ... and follows the dominant JSON schema of the data (OF003's inference)
    format_match   the output's format family (prose/markdown, json, code) is the reference's
                   (a blank output matches nothing)
    stopped        ended with the end-of-turn token within the budget
    refusal        BL002's refusal detector fires (lower is better)
    length_ratio   output characters / reference characters
    chrf           chrF of the output against the reference (sacrebleu), 0-100

A verdict is None where the metric does not apply (no JSON reference, no label set, ...);
rates count only the prompts where it applies.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from curate.evaluate.generation import Generation
from curate.evaluate.items import EvalItem
from curate.evaluate.stats import bootstrap_mean, wilson
from curate.rules.balance import ClassImbalanceOptions, answer_labels, label_set, refusal_pattern
from curate.rules.output_format import FAMILIES, DominantSchema, JsonSchemaDriftOptions, classify_outputs, json_shape
from curate.text.answers import final_answer

#: Binary metrics: name -> (what it counts, higher is better).
RATES: dict[str, tuple[str, bool]] = {
    "exact_match": ("final answer equals the reference's", True),
    "label_correct": ("class label equals the reference's", True),
    "json_valid": ("output is valid JSON (reference is JSON)", True),
    "schema_match": ("JSON follows the data's dominant schema", True),
    "format_match": ("output format family is the reference's", True),
    "stopped": ("ends with the end-of-turn token within the budget", True),
    "refusal": ("refuses (BL002's detector)", False),
}
MEANS: dict[str, str] = {
    "chrf": "chrF against the reference (0-100)",
    "length_ratio": "output length / reference length (characters)",
}
#: The check a prompt passes or fails on, in order of preference: the first that applies.
PRIMARY = ("exact_match", "label_correct", "schema_match", "json_valid", "format_match")


@dataclass
class TaskProfile:
    """What the references say about the task: its class labels and its JSON schema, if any."""

    labels: list[str] | None
    schema: DominantSchema | None

    def to_dict(self) -> dict[str, Any]:
        return {"labels": self.labels, "json_schema": self.schema is not None}


def task_profile(references: list[str], train_answers: list[str] | None = None) -> TaskProfile:
    """Class labels when the references read as classes (BL001's test on the eval references and
    the training answers together); the dominant JSON schema of the JSON answers (OF003's)."""
    answers = [*references, *(train_answers or [])]
    options = ClassImbalanceOptions()
    labels = answer_labels(answers, options).drop_nulls()
    counts = dict(Counter(labels.to_list()))
    profile_labels = sorted(counts) if label_set(counts, len(answers), options) else None
    formats, parsed = classify_outputs(answers)
    shapes = Counter(json_shape(value) for value in parsed.values())
    drift = JsonSchemaDriftOptions()
    schema = DominantSchema.infer(dict(shapes), drift.dominant_share, drift.min_outputs) if sum(shapes.values()) >= drift.min_outputs else None
    return TaskProfile(profile_labels, schema)


def score(profile: TaskProfile, items: list[EvalItem], outputs: list[Generation]) -> list[dict[str, Any]]:
    """One verdict dict per output (vectorized: one classifier pass over outputs, one over references)."""
    import polars as pl
    from sacrebleu.metrics import CHRF

    texts = [o.text for o in outputs]
    references = [item.reference or "" for item in items]
    out_formats, out_parsed = classify_outputs(texts)
    ref_formats, _ = classify_outputs(references)
    refusals = pl.Series(texts, dtype=pl.String).str.contains(refusal_pattern()).to_list()
    label_options = ClassImbalanceOptions()
    out_labels = answer_labels(texts, label_options).to_list()
    ref_labels = answer_labels(references, label_options).to_list()
    chrf = CHRF()
    verdicts = []
    for index, (item, output) in enumerate(zip(items, outputs)):
        has_reference = bool(item.reference and item.reference.strip())
        ref_json = has_reference and FAMILIES[ref_formats[index]] == "json"
        is_json = out_formats[index] == "json"
        expected_answer = final_answer(item.reference) if has_reference else None
        verdict: dict[str, Any] = {
            "exact_match": (final_answer(output.text) == expected_answer) if expected_answer is not None else None,
            "label": out_labels[index] if profile.labels else None,
            "label_correct": (out_labels[index] == ref_labels[index]) if profile.labels and ref_labels[index] is not None else None,
            "json_valid": is_json if ref_json else None,
            "schema_match": (is_json and not any(profile.schema.drift(json_shape(out_parsed[index])).values())) if ref_json and profile.schema else None,
            "format": out_formats[index],
            "format_match": bool(output.text.strip()) and FAMILIES[out_formats[index]] == FAMILIES[ref_formats[index]] if has_reference else None,
            "stopped": output.stopped,
            "refusal": bool(refusals[index]),
            "length_ratio": round(len(output.text) / len(item.reference), 4) if has_reference else None,
            "chrf": round(chrf.sentence_score(output.text, [item.reference]).score, 3) if has_reference else None,
            "prompt_tokens": output.prompt_tokens,
            "new_tokens": output.new_tokens,
        }
        checks = expect_checks(item.expect, output.text, verdict, out_formats[index])
        verdict["expect"] = checks or None
        verdict["passed"] = all(checks.values()) if checks else primary(verdict)
        verdicts.append(verdict)
    return verdicts


def primary(verdict: dict[str, Any]) -> bool | None:
    """Pass or fail on the first check of PRIMARY that applies (None: nothing to check)."""
    return next((verdict[name] for name in PRIMARY if verdict.get(name) is not None), None)


def expect_checks(expect: dict[str, Any], text: str, verdict: dict[str, Any], fmt: str) -> dict[str, bool]:
    """A regression row's own checks (`{"json": true}`, `{"answer": "42"}`, ...), each pass/fail."""
    checks: dict[str, bool] = {}
    for key, wanted in expect.items():
        if key == "json":
            checks[key] = (fmt == "json") == bool(wanted)
        elif key == "answer":
            checks[key] = final_answer(text) == final_answer(str(wanted))
        elif key == "format":
            checks[key] = FAMILIES.get(fmt) == FAMILIES.get(str(wanted), str(wanted))
        elif key == "label":
            found = answer_labels([text], ClassImbalanceOptions()).to_list()[0]
            checks[key] = found == str(wanted).strip().rstrip(".!").strip().lower()
        elif key == "contains":
            checks[key] = str(wanted).lower() in text.lower()
    return checks


def aggregate(verdicts: list[dict[str, Any]], profile: TaskProfile, references: list[str | None], seconds: float, seed: int = 0) -> dict[str, Any]:
    """Rates with Wilson intervals, means with bootstrap intervals, cost, and the label table."""
    metrics: dict[str, Any] = {}
    for name in RATES:
        judged = [v[name] for v in verdicts if v.get(name) is not None]
        if judged:
            k, n = sum(judged), len(judged)
            low, high = wilson(k, n)
            metrics[name] = {"value": round(k / n, 4), "low": round(low, 4), "high": round(high, 4), "k": k, "n": n}
    for name in MEANS:
        values = [v[name] for v in verdicts if v.get(name) is not None]
        if values:
            mean, low, high = bootstrap_mean(values, seed)
            metrics[name] = {"value": round(mean, 4), "low": round(low, 4), "high": round(high, 4), "n": len(values)}
    generated = sum(v["new_tokens"] for v in verdicts)
    cost = {
        "prompts": len(verdicts),
        "prompt_tokens_mean": round(sum(v["prompt_tokens"] for v in verdicts) / len(verdicts), 2) if verdicts else 0,
        "new_tokens_mean": round(generated / len(verdicts), 2) if verdicts else 0,
        "seconds": round(seconds, 3),
        "tokens_per_s": round(generated / seconds, 1) if seconds else None,
        "prompts_per_s": round(len(verdicts) / seconds, 3) if seconds else None,
    }
    result: dict[str, Any] = {"metrics": metrics, "cost": cost}
    if profile.labels:
        result["labels"] = label_table(verdicts, references)
    return result


def label_table(verdicts: list[dict[str, Any]], references: list[str | None]) -> dict[str, Any]:
    """Per-label precision and recall and the confusion counts (reference -> predicted)."""
    reference_labels = answer_labels([r or "" for r in references], ClassImbalanceOptions()).to_list()
    confusion: dict[str, Counter[str]] = {}
    for verdict, expected in zip(verdicts, reference_labels):
        if expected is None:
            continue
        confusion.setdefault(expected, Counter())[verdict["label"] if verdict["label"] is not None else "(other)"] += 1
    labels = sorted(set(confusion) | {p for row in confusion.values() for p in row if p != "(other)"})
    per_label = {}
    for label in labels:
        true_positive = confusion.get(label, Counter())[label]
        predicted = sum(row[label] for row in confusion.values())
        actual = sum(confusion.get(label, Counter()).values())
        per_label[label] = {
            "precision": round(true_positive / predicted, 4) if predicted else None,
            "recall": round(true_positive / actual, 4) if actual else None,
            "support": actual,
        }
    return {"per_label": per_label, "confusion": {label: dict(row) for label, row in confusion.items()}}
