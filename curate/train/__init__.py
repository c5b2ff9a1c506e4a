"""The QLoRA trainer behind `curate train` and `curate export`, in small pieces:

config.py     TrainConfig: every option, documented; [tool.curate.train] + flags
gate.py       the lint gate (same model's template; refuse on errors unless --force)
data.py       read, split, render with the chat template, tokenize, assistant labels
audit.py      the mask audit: a hard gate on the labels as the model will see them
batching.py   seeded micro-batch order; padding-free packing or length-grouped padding
model.py      device, tokenizer, 4-bit NF4 base, LoRA, the assistant-token loss
estimate.py   model FLOPs (MFU) and the --dry-run memory estimate
recipe.py     setup -> train -> save -> cleanup
checkpoint.py resumable checkpoints
stopcheck.py  "does it stop": greedy generation on held-out prompts
manifest.py, plot.py, dryrun.py, export.py

Nothing here is imported by `curate lint`; torch and friends load inside functions.
"""
