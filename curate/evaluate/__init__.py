"""`curate eval`: generate with several candidates (base + prompt, base + few-shot, adapter,
merged) on the same held-out prompts, score the outputs with what the lint rules know about
the data, and report rates with intervals and paired tests.

    items       eval rows -> prompts and references (and regression checks)
    hygiene     LK rules of the eval prompts against the training data
    candidates  which model and which prompt each candidate uses; few-shot examples
    generation  batched greedy generation (transformers; vLLM behind --engine vllm)
    metrics     per-output verdicts and per-candidate aggregates
    stats       Wilson and bootstrap intervals, McNemar's paired test
    report      eval.json, generations.jsonl, the terminal table, the chart
    pipeline    the whole evaluation, used by `curate eval` and `curate train`

Nothing here is imported by `curate lint`; torch and transformers load inside functions.
"""
