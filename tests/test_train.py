"""`curate train` and `curate export` on the CPU with the tiny sample model: 4-bit base,
LoRA updates, falling loss, packing, resume, the lint gate, adapter reload and merge."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from curate.train.config import TrainConfig
from tests.conftest import SAMPLES, write_jsonl

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # it looks for an optional CPU kernel package on import
import bitsandbytes  # noqa: F401  (a missing install must fail, not skip)
import torch

pytestmark = pytest.mark.slow

TINY = str(SAMPLES / "tiny-chat")
DEMO_ROWS = [json.loads(line) for line in (SAMPLES / "train-demo.jsonl").read_text(encoding="utf-8").splitlines()[:48]]


def config(**overrides) -> TrainConfig:
    settings = {
        "model": TINY, "max_steps": 6, "learning_rate": 5e-3, "batch_size": 4, "gradient_accumulation": 2,
        "eval_fraction": 0.125, "save_every": 0, "stop_check_prompts": 2, "stop_check_max_new_tokens": 8, "seed": 5,
        "eval_prompts": 0,  # the short eval after training is proven in test_eval_proof.py
    }
    return TrainConfig(**{**settings, **overrides})


def make_run(tmp_path: Path, name: str, rows=DEMO_ROWS, **overrides):
    from curate.train.recipe import Reporter, Run

    data = write_jsonl(tmp_path / f"{name}.jsonl", rows)
    return Run(config(**overrides), str(data), tmp_path / name, gate=None, resume=False, reporter=Reporter(progress=False, out=io.StringIO()))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run, kept in memory for inspection: (run, base weights before training, LoRA before)."""
    tmp_path = tmp_path_factory.mktemp("trained")
    run = make_run(tmp_path, "run", max_steps=30, gradient_accumulation=1, learning_rate=1e-2, lora_dropout=0.0, packing=True)
    run.setup()
    frozen_before = {name: tensor.detach().clone() for name, tensor in run.model.state_dict().items() if "lora_" not in name}
    lora_before = {name: p.detach().clone() for name, p in run.model.named_parameters() if p.requires_grad}
    run.train()
    manifest = run.save()
    yield run, frozen_before, lora_before, manifest
    run.cleanup()


def test_base_loads_as_bitsandbytes_4bit_nf4_with_double_quantization(trained):
    import bitsandbytes as bnb

    run = trained[0]
    layer = run.model.get_base_model().model.layers[0].self_attn.q_proj
    assert isinstance(layer.base_layer, bnb.nn.Linear4bit)
    assert layer.base_layer.weight.dtype == torch.uint8
    state = layer.base_layer.weight.quant_state
    assert state.quant_type == "nf4" and state.nested
    quantized = [m for m in run.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(quantized) == 2 * 7  # q, k, v, o, gate, up, down per layer


def test_lora_weights_change_and_base_weights_do_not(trained):
    run, frozen_before, lora_before, _ = trained
    after = run.model.state_dict()
    for name, before in frozen_before.items():
        assert torch.equal(after[name], before), name
    changed = [name for name, p in run.model.named_parameters() if p.requires_grad and not torch.equal(p.detach(), lora_before[name])]
    assert len(changed) == len(lora_before) > 0


def test_loss_falls_and_beats_the_base_model_on_eval(trained):
    manifest = trained[3]
    losses = [m["loss"] for m in trained[0].state.metrics if "loss" in m]
    assert len(losses) == 30
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.3
    results = manifest["results"]
    assert results["final_eval_loss"] < results["base_eval_loss"]


def test_run_folder_holds_adapter_tokenizer_metrics_curve_and_manifest(trained):
    run, *_, manifest = trained
    names = {path.name for path in run.output.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "metrics.jsonl", "loss.png", "manifest.json"} <= names
    assert (run.output / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((run.output / "metrics.jsonl").read_text().splitlines()) == len(run.state.metrics)
    assert manifest["data"]["sha256"] == __import__("hashlib").sha256(Path(run.data_path).read_bytes()).hexdigest()
    assert manifest["config"]["learning_rate"] == 1e-2 and manifest["seed"] == 5
    assert set(manifest["versions"]) >= {"torch", "transformers", "peft", "bitsandbytes"}
    assert manifest["device"]["type"] == "cpu" and manifest["training"]["packing"] == "padding-free"
    assert manifest["stop_check"]["prompts"] == 2 and 0 <= manifest["stop_check"]["adapter_stop_share"] <= 1
    assert manifest["performance"]["tokens_per_s"] > 0 and manifest["performance"]["peak_memory_bytes"] > 0
    revision = manifest["base_model_revision"]
    assert revision["kind"] == "local folder" and len(revision["sha256"]) == 64


def test_saved_tokenizer_carries_the_training_template_and_prompts_match_inference(trained):
    from transformers import AutoTokenizer

    from curate.train.data import prompt_text

    run = trained[0]
    saved = AutoTokenizer.from_pretrained(run.output)
    assert saved.chat_template == AutoTokenizer.from_pretrained(TINY).chat_template
    example = run.data.train.examples[0]
    turns = example.conversation.messages
    first_answer = next(i for i, m in enumerate(turns) if m["role"] == "assistant")
    rendered_for_inference = saved.apply_chat_template(turns[:first_answer], tokenize=False, add_generation_prompt=True)
    assert prompt_text(run.tokenizer, turns[:first_answer]) == rendered_for_inference
    assert example.text[: example.spans[0].start] == rendered_for_inference


def test_adapter_reloads_with_the_same_outputs(trained):
    from peft import PeftModel

    from curate.train.model import load_base_model, pick_device, quiet_libraries

    quiet_libraries()
    run = trained[0]
    ids = torch.tensor([run.data.train.examples[0].input_ids.tolist()])
    run.model.eval()
    with torch.no_grad():
        expected = run.model(input_ids=ids).logits
    reloaded = PeftModel.from_pretrained(load_base_model(TINY, pick_device(), quantize=True), str(run.output)).eval()
    with torch.no_grad():
        actual = reloaded(input_ids=ids).logits
    assert torch.allclose(actual, expected, atol=1e-4)
    with torch.no_grad(), reloaded.disable_adapter():
        assert not torch.allclose(reloaded(input_ids=ids).logits, expected, atol=1e-3)


def test_merged_export_matches_base_plus_adapter_and_loads_with_plain_transformers(trained, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curate.cli import main

    run = trained[0]
    out = tmp_path / "merged"
    assert main(["export", str(run.output), "--merge", "-o", str(out)]) == 0
    merged = AutoModelForCausalLM.from_pretrained(out).eval()
    assert not any("lora" in name for name, _ in merged.named_parameters())
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(TINY), str(run.output)).eval()
    ids = torch.tensor([run.data.train.examples[1].input_ids.tolist()])
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, reference(input_ids=ids).logits, atol=1e-4)
    assert AutoTokenizer.from_pretrained(out).chat_template == AutoTokenizer.from_pretrained(run.output).chat_template
    assert main(["export", str(run.output), "--merge", "-o", str(out)]) == 2  # never overwrites


def test_export_without_merge_copies_a_peft_loadable_adapter_with_tokenizer_and_template(trained, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curate.cli import main

    run = trained[0]
    out = tmp_path / "adapter"
    assert main(["export", str(run.output), "-o", str(out)]) == 0
    assert (out / "adapter_config.json").is_file() and (out / "manifest.json").is_file()
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(TINY), str(run.output)).eval()
    copied = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(TINY), str(out)).eval()
    ids = torch.tensor([run.data.train.examples[0].input_ids.tolist()])
    with torch.no_grad():
        assert torch.allclose(copied(input_ids=ids).logits, reference(input_ids=ids).logits)
    assert AutoTokenizer.from_pretrained(out).chat_template == AutoTokenizer.from_pretrained(run.output).chat_template
    assert main(["export", str(run.output), "-o", str(out)]) == 2  # never overwrites


def test_packing_gives_the_same_per_example_loss_as_unpacked_batches(trained):
    import torch.nn.functional as F

    from curate.train.batching import collate
    from curate.train.data import IGNORE_INDEX

    run = trained[0]
    examples = run.data.train.examples
    chosen = [0, 1, 2, 3]
    run.model.eval()

    def per_example_losses(batch) -> list[float]:
        with torch.no_grad():
            logits = run.model(input_ids=batch.input_ids, position_ids=batch.position_ids, attention_mask=batch.attention_mask, use_cache=False).logits
        losses = []
        rows = [(0, sum(batch.lengths[:k]), n) for k, n in enumerate(batch.lengths)] if batch.attention_mask is None else [(k, 0, n) for k, n in enumerate(batch.lengths)]
        for row, begin, length in rows:
            targets = batch.labels[row, begin + 1 : begin + length]
            keep = targets != IGNORE_INDEX
            losses.append(F.cross_entropy(logits[row, begin : begin + length - 1][keep], targets[keep]).item())
        return losses

    packed = per_example_losses(collate(examples, chosen, True, run.tokenizer.pad_token_id))
    padded = per_example_losses(collate(examples, chosen, False, run.tokenizer.pad_token_id))
    alone = [per_example_losses(collate(examples, [i], True, run.tokenizer.pad_token_id))[0] for i in chosen]
    assert packed == pytest.approx(alone, abs=1e-4)
    assert padded == pytest.approx(alone, abs=1e-4)
    assert len(set(round(x, 3) for x in alone)) > 1  # distinct examples, so a mix-up would show


def test_loss_module_with_selective_head_equals_the_full_forward(trained):
    from curate.train.batching import collate
    from curate.train.model import make_loss_module

    run = trained[0]
    batch = collate(run.data.train.examples, [0, 1, 2], True, run.tokenizer.pad_token_id)
    run.model.eval()
    with torch.no_grad():
        selective = make_loss_module(run.model, True)(batch.input_ids, batch.labels, batch.position_ids)
        full = make_loss_module(run.model, False)(batch.input_ids, batch.labels, batch.position_ids)
    assert selective.item() == pytest.approx(full.item(), rel=1e-5)


def test_interrupt_saves_a_checkpoint_and_resume_continues_to_the_same_result(tmp_path):
    from curate.train.model import lora_state
    from curate.train.recipe import Interrupted

    straight = make_run(tmp_path, "straight", save_every=3)
    straight.setup()
    straight.train()
    expected = lora_state(straight.model)
    expected_losses = [m["loss"] for m in straight.state.metrics if "loss" in m]
    straight.cleanup()

    def interrupt(step: int) -> None:
        if step == 4:
            raise KeyboardInterrupt

    first = make_run(tmp_path, "resumed", save_every=3)
    first.on_step = interrupt
    first.setup()
    with pytest.raises(Interrupted) as caught:
        first.train()
    assert caught.value.step == 4 and caught.value.checkpoint.name == "step-0000004"
    first.cleanup()

    from curate.train.recipe import Reporter, Run

    second = Run(config(save_every=3), first.data_path, first.output, gate=None, resume=True, reporter=Reporter(progress=False, out=io.StringIO()))
    second.setup()
    assert second.state.step == 4
    second.train()
    assert second.state.step == 6
    assert [m["step"] for m in second.state.metrics if "loss" in m] == [1, 2, 3, 4, 5, 6]
    assert [m["loss"] for m in second.state.metrics if "loss" in m] == pytest.approx(expected_losses, abs=1e-5)
    for name, tensor in lora_state(second.model).items():
        assert torch.allclose(tensor, expected[name], atol=1e-6), name
    second.cleanup()


def test_resume_refuses_changed_settings(tmp_path):
    from curate.train.recipe import Interrupted, Reporter, Run, TrainError

    run = make_run(tmp_path, "run", save_every=2)
    run.on_step = lambda step: (_ for _ in ()).throw(KeyboardInterrupt) if step == 2 else None
    run.setup()
    with pytest.raises(Interrupted):
        run.train()
    run.cleanup()
    changed = Run(config(learning_rate=1e-3), run.data_path, run.output, gate=None, resume=True, reporter=Reporter(progress=False, out=io.StringIO()))
    with pytest.raises(TrainError, match=r"learning-rate 0.005 -> 0.001"):
        changed.setup()


def _losses(metrics: list[dict]) -> list[tuple]:
    return [(m["step"], "loss" if "loss" in m else "eval", m.get("loss", m.get("eval_loss"))) for m in metrics]


def _ctrl_c(*args, **kwargs):
    raise KeyboardInterrupt


def test_ctrl_c_after_the_last_step_leaves_a_run_that_resume_finishes(tmp_path, monkeypatch):
    """save-every 0 (any run shorter than save-every): Ctrl-C in the stop check, in the final eval,
    or in the last step's eval still leaves the adapter and a checkpoint, and --resume completes
    the run exactly as a straight one."""
    from curate.train import stopcheck
    from curate.train.model import lora_state
    from curate.train.recipe import Interrupted, Reporter, Run

    straight = make_run(tmp_path, "straight")
    straight.setup()
    straight.train()
    expected, expected_metrics = lora_state(straight.model), _losses(straight.state.metrics)
    monkeypatch.setattr(stopcheck, "stop_check", _ctrl_c)
    with pytest.raises(Interrupted) as caught:
        straight.save()
    monkeypatch.undo()
    straight.cleanup()
    assert caught.value.step == 6 and caught.value.checkpoint.name == "step-0000006" and "--resume" in str(caught.value)
    assert (straight.output / "adapter_model.safetensors").exists() and not (straight.output / "manifest.json").exists()

    def resumed(run) -> Run:
        again = Run(config(), run.data_path, run.output, gate=None, resume=True, reporter=Reporter(progress=False, out=io.StringIO()))
        again.setup()
        return again

    finishing = resumed(straight)
    assert finishing.state.step == 6
    finishing.train()  # nothing left to train
    monkeypatch.setattr(finishing, "evaluate", _ctrl_c)
    with pytest.raises(Interrupted, match="adapter is saved"):
        finishing.save()
    monkeypatch.undo()
    manifest = finishing.save()
    assert manifest["training"]["steps"] == 6 and manifest["results"]["final_eval_loss"] is not None and manifest["stop_check"]
    assert (straight.output / "manifest.json").exists() and _losses(finishing.state.metrics) == pytest.approx(expected_metrics)
    for name, tensor in lora_state(finishing.model).items():
        assert torch.equal(tensor, expected[name]), name
    finishing.cleanup()

    cut = make_run(tmp_path, "cut")
    cut.setup()
    evaluate = cut.evaluate
    monkeypatch.setattr(cut, "evaluate", lambda: _ctrl_c() if cut.state.step == 6 else evaluate())
    with pytest.raises(Interrupted) as caught:
        cut.train()  # Ctrl-C in the eval of the last step
    monkeypatch.undo()
    cut.cleanup()
    assert caught.value.checkpoint.name == "step-0000006"
    again = resumed(cut)
    again.train()  # the missed eval is made up for, nothing is trained twice
    assert _losses(again.state.metrics) == pytest.approx(expected_metrics)
    for name, tensor in lora_state(again.model).items():
        assert torch.allclose(tensor, expected[name], atol=1e-6), name
    again.cleanup()


def test_resume_refuses_a_changed_eval_file(tmp_path):
    from curate.train.recipe import Interrupted, Reporter, Run, TrainError

    eval_file = write_jsonl(tmp_path / "eval.jsonl", DEMO_ROWS[40:])
    run = make_run(tmp_path, "run", rows=DEMO_ROWS[:40], save_every=2, eval_file=str(eval_file))
    run.on_step = lambda step: _ctrl_c() if step == 2 else None
    run.setup()
    with pytest.raises(Interrupted):
        run.train()
    run.cleanup()
    write_jsonl(eval_file, DEMO_ROWS[41:])
    changed = Run(config(save_every=2, eval_file=str(eval_file)), run.data_path, run.output, gate=None, resume=True,
                  reporter=Reporter(progress=False, out=io.StringIO()))
    with pytest.raises(TrainError, match=r"eval.jsonl changed since the checkpoint"):
        changed.setup()


def test_lint_gate_refuses_data_with_errors_before_loading_a_model(tmp_path, capsys):
    from curate.cli import main

    rows = DEMO_ROWS[:20] + ['{"messages": [{"role": "user", "content": "hi"}', {"messages": [{"role": "user", "content": "no answer"}]}]
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    out = tmp_path / "run"
    code = main(["train", str(data), "--model", TINY, "-o", str(out), "--isolated"])
    captured = capsys.readouterr()
    assert code == 1
    assert "SC001" in captured.err and "SC006" in captured.err
    assert "refusing to train on" in captured.err and "--force" in captured.err
    assert not out.exists()


def test_force_trains_anyway_and_is_recorded(tmp_path, capsys):
    from curate.cli import main

    rows = DEMO_ROWS[:24] + ['{"messages": oops']
    data = write_jsonl(tmp_path / "bad.jsonl", rows)
    out = tmp_path / "run"
    code = main(["train", str(data), "--model", TINY, "-o", str(out), "--isolated", "--force", "--max-steps", "2",
                 "--batch-size", "4", "--grad-accum", "1", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["forced"] is True and manifest["lint"]["summary"]["errors"] == 1
    assert manifest["data"]["unusable_rows"] == 1 and manifest["training"]["steps"] == 2
    assert "training on the CPU" in captured.err
    assert "trained 2 steps" in captured.out
    assert main(["train", str(data), "--model", TINY, "-o", str(out), "--isolated", "--force"]) == 2
    assert "already holds a run" in capsys.readouterr().err


def test_the_gate_lints_as_the_config_files_say_each_read_once_and_args_stay_as_given(tmp_path, capsys, monkeypatch):
    """`--config train.toml` (train options only) leaves lint to the curate.toml beside the data:
    its `ignore` lets a row without an answer (SC006) through the gate of the dry run and of the
    real run alike. Each config file is read once per run; the parsed arguments are not changed."""
    from curate import config as config_module
    from curate.cli import build_parser, main
    from curate.commands import train as train_command

    data = write_jsonl(tmp_path / "data.jsonl", DEMO_ROWS[:12] + [{"messages": [{"role": "user", "content": "what is 2 + 2?"}]}])
    (tmp_path / "curate.toml").write_text('ignore = ["SC006"]\n')
    (tmp_path / "train.toml").write_text(f'model = "{TINY}"\nmax-steps = 1\ngradient-accumulation = 1\neval-fraction = 0.0\nstop-check-prompts = 0\n')
    read = config_module._read_toml
    reads: list[str] = []
    monkeypatch.setattr(config_module, "_read_toml", lambda path: reads.append(path.name) or read(path))
    for how in (["--dry-run"], ["-o", str(tmp_path / "run"), "--no-progress"]):
        args = build_parser().parse_args(["train", str(data), "--config", str(tmp_path / "train.toml"), *how])
        given = dict(vars(args))
        reads.clear()
        code = train_command.run(args)
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert "lint gate: passed (13 rows, 0 errors" in captured.out + captured.err
        assert sorted(reads) == ["curate.toml", "train.toml"]
        assert vars(args) == given
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["lint"]["passed"] and manifest["data"]["unusable_rows"] == 1
    (tmp_path / "curate.toml").write_text("")  # without the ignore, the same row refuses the run
    assert main(["train", str(data), "--config", str(tmp_path / "train.toml"), "--dry-run"]) == 1


def test_gate_request_checks_the_data_as_the_run_trains_it_and_keeps_the_lint_options():
    from curate.engine.settings import LintRequest
    from curate.train.gate import gate_request

    lint = LintRequest(paths=["other.jsonl"], select=["SC", "CT"], ignore=["SC006"], columns={"question": "user", "answer": "assistant"})
    request = gate_request(config(max_seq_length=64, eval_file="held-out.jsonl"), "data.jsonl", lint)
    assert (request.paths, request.model, request.max_seq_length, request.eval) == (["data.jsonl"], TINY, 64, ["held-out.jsonl"])
    assert (request.select, request.ignore, request.columns) == (["SC", "CT"], ["SC006"], {"question": "user", "answer": "assistant"})
    assert lint.paths == ["other.jsonl"] and lint.model is None and lint.eval is None  # a new request; the options are untouched
    assert gate_request(config(eval_file="held-out.jsonl"), "data.jsonl", LintRequest(paths=[], eval=["mine.jsonl"])).eval == ["mine.jsonl"]


def test_each_data_file_is_read_once_and_the_manifest_hash_is_of_the_bytes_trained_on(tmp_path, monkeypatch):
    """The sha256 in manifest.json and the rows trained on come from one read of each file:
    rewriting the data while the run loads the tokenizer cannot make it train rows other than
    the ones it hashed."""
    import builtins
    import hashlib

    from curate.train import model as builders

    eval_file = write_jsonl(tmp_path / "eval.jsonl", DEMO_ROWS[40:44])
    run = make_run(tmp_path, "run", rows=DEMO_ROWS[:16], eval_file=str(eval_file))
    data = Path(run.data_path)
    original = data.read_bytes()
    opened: list[str] = []
    real_open, load_tokenizer = builtins.open, builders.load_tokenizer

    def counting_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and Path(file).name in ("run.jsonl", "eval.jsonl") and "r" in mode:
            opened.append(Path(file).name)
        return real_open(file, mode, *args, **kwargs)

    def rewrite_then_load(*args, **kwargs):
        write_jsonl(data, DEMO_ROWS[16:40])
        return load_tokenizer(*args, **kwargs)

    monkeypatch.setattr(builtins, "open", counting_open)
    monkeypatch.setattr(io, "open", counting_open)  # what pathlib opens with
    monkeypatch.setattr(builders, "load_tokenizer", rewrite_then_load)
    run.setup()
    monkeypatch.undo()
    run.cleanup()
    assert sorted(opened) == ["eval.jsonl", "run.jsonl"]
    trained_on = original if len(run.data.train.examples) == 16 else data.read_bytes()
    assert len(run.data.train.examples) in (16, 24)
    assert run.data.sha256 == hashlib.sha256(trained_on).hexdigest()
    assert run.data.eval_sha256 == hashlib.sha256(eval_file.read_bytes()).hexdigest()


def test_dry_run_prints_tokens_audit_steps_and_memory_without_training(tmp_path, capsys):
    from curate.cli import main

    data = write_jsonl(tmp_path / "data.jsonl", DEMO_ROWS[:40])
    code = main(["train", str(data), "--model", TINY, "--dry-run", "--isolated", "--epochs", "2", "--batch-size", "4", "--grad-accum", "2",
                 "--eval-fraction", "0.125"])
    out = capsys.readouterr().out
    assert code == 0
    assert "train 35 examples, eval 5" in out
    assert "steps: 9 micro-batches of 4 per epoch, 2 per step -> 4.5 steps per epoch, 9 steps in all (2 epochs)" in out
    assert "mask audit: 40 examples" in out and "0 failing" in out and "<|im_end|> (id 2)" in out
    assert "batches: length-grouped padding: with sdpa" in out  # no variable-length attention kernel on a CPU
    assert "estimated peak" in out and "LoRA + AdamW state" in out
    assert not list(tmp_path.glob("*/manifest.json"))


def test_dry_run_says_how_many_duplicate_clusters_the_split_kept_together(tmp_path, capsys):
    """The gate's DU001 findings reach the split: four rows copied three times more are four
    clusters kept on one side."""
    from curate.cli import main

    data = write_jsonl(tmp_path / "data.jsonl", DEMO_ROWS[:30] + [row for row in DEMO_ROWS[:4] for _ in range(3)])
    code = main(["train", str(data), "--model", TINY, "--dry-run", "--isolated", "--eval-fraction", "0.25"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "; 4 duplicate clusters kept on one side of the split" in out


def test_dry_run_shows_the_audit_failure_of_a_template_without_end_of_turn(tmp_path, capsys):
    import shutil

    from curate.cli import main

    model = tmp_path / "no-eot-model"
    shutil.copytree(TINY, model)
    settings = json.loads((model / "tokenizer_config.json").read_text())
    settings["chat_template"] = "{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
    (model / "tokenizer_config.json").write_text(json.dumps(settings))
    (model / "chat_template.jinja").unlink(missing_ok=True)
    data = write_jsonl(tmp_path / "data.jsonl", DEMO_ROWS[:8])
    code = main(["train", str(data), "--model", str(model), "--dry-run", "--isolated"])
    out = capsys.readouterr().out
    assert code == 1
    assert "never learn to stop" in out and "⟦" in out and "refusing to train" in out


def test_a_hub_name_that_cannot_be_fetched_fails_with_one_line(tmp_path):
    data = write_jsonl(tmp_path / "data.jsonl", DEMO_ROWS[:8])
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "curate", "train", str(data), "--model", "curate-tests/no-such-model", "-o", str(tmp_path / "run"), "--isolated", "--force"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("curate: error: cannot load model `curate-tests/no-such-model`: it is not a local folder")


def test_train_options_come_from_the_config_file_and_flags_win(tmp_path, capsys):
    from curate.cli import main

    data = write_jsonl(tmp_path / "data.jsonl", DEMO_ROWS[:40])
    (tmp_path / "curate.toml").write_text(f'model = "{TINY}"\n\n[train]\nepochs = 1\nbatch-size = 2\ngradient-accumulation = 1\n')
    assert main(["train", str(data), "--dry-run"]) == 0
    assert "19 steps in all (1 epochs)" in capsys.readouterr().out
    assert main(["train", str(data), "--dry-run", "--batch-size", "4"]) == 0
    assert "10 steps in all (1 epochs)" in capsys.readouterr().out
    (tmp_path / "train.toml").write_text("max-steps = 3\nlearning-rat = 0.1\n")
    assert main(["train", str(data), "--dry-run", "--config", str(tmp_path / "train.toml")]) == 2
    assert "unknown key `learning-rat` (did you mean `learning-rate`?)" in capsys.readouterr().err


def test_an_eval_pass_does_not_change_later_gradients(trained):
    """bitsandbytes repacks 4-bit weights for CPU inference on an eval forward, after which
    backward ran through a kernel without autograd; the trainer turns that off."""
    from curate.train.batching import collate
    from curate.train.model import make_loss_module

    run = trained[0]
    batch = collate(run.data.train.examples, [0, 1], True, run.tokenizer.pad_token_id)
    loss_module = make_loss_module(run.model, True)
    parameters = [p for p in run.model.parameters() if p.requires_grad]

    def gradients():
        run.model.train()
        for p in parameters:
            p.grad = None
        loss_module(batch.input_ids, batch.labels, batch.position_ids).backward()
        return [p.grad.clone() for p in parameters]

    before = gradients()
    run.model.eval()
    with torch.no_grad():
        run.model(input_ids=batch.input_ids[:, :16])
    after = gradients()
    for p in parameters:
        p.grad = None
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(before, after))


ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch"]


def test_data_parallel_processes_train_like_one_process_with_the_same_window(tmp_path, capsys):
    """Two ranks on the CPU (the README's `accelerate launch --multi_gpu` form, gloo) with
    accumulation 2 take the same steps as one process with accumulation 4; the lint gate and
    the plan are printed once."""
    from curate.cli import main

    data = write_jsonl(tmp_path / "data.jsonl", DEMO_ROWS[:24])
    (tmp_path / "curate.toml").write_text("[train]\nlora-dropout = 0.0\nstop-check-prompts = 0\nmax-steps = 2\nbatch-size = 2\n")
    common = ["train", str(data), "--model", TINY, "--no-progress", "--no-eval"]
    launch = [*ACCELERATE, "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517"]
    proc = subprocess.run([*launch, "-m", "curate", *common, "-o", str(tmp_path / "ddp"), "--grad-accum", "2"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp_output = proc.stdout + proc.stderr
    assert main([*common, "-o", str(tmp_path / "single"), "--grad-accum", "4"]) == 0, capsys.readouterr().err  # the one-process reference, in this process
    losses = {name: [json.loads(line).get("loss") for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()] for name in ("ddp", "single")}
    assert len([loss for loss in losses["single"] if loss is not None]) == 2
    assert losses["ddp"] == pytest.approx(losses["single"], abs=1e-5)
    assert json.loads((tmp_path / "ddp" / "manifest.json").read_text())["device"]["processes"] == 2
    assert json.loads((tmp_path / "single" / "manifest.json").read_text())["device"]["processes"] == 1
    assert ddp_output.count("lint gate: passed") == 1 and ddp_output.count("mask audit:") == 1
    assert "started one" not in ddp_output


def test_accelerate_launch_that_starts_one_process_says_so(tmp_path, capsys):
    """`accelerate launch --num_processes 2` without --multi_gpu on a CPU machine starts one
    process (accelerate's single-process launcher): one line says so; a plain start says nothing."""
    from curate.cli import main

    data = write_jsonl(tmp_path / "data.jsonl", DEMO_ROWS[:8])
    arguments = ["train", str(data), "--model", TINY, "--dry-run", "--isolated"]
    command = [*ACCELERATE, "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "curate", *arguments]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    notes = [line for line in proc.stderr.splitlines() if "started one" in line]
    assert len(notes) == 1 and "--multi_gpu --num_processes N" in notes[0]
    assert proc.stdout.count("lint gate: passed") == 1
    assert main(arguments) == 0  # the same command, not launched by accelerate (this process)
    captured = capsys.readouterr()
    assert "lint gate: passed" in captured.out and "started one" not in captured.err


def test_early_stopping_keeps_the_best_adapter(tmp_path):
    """A learning rate far too high makes eval loss rise after the first eval; patience 2 stops
    two evals later and the saved adapter is the one from the best eval."""
    from safetensors.torch import load_file

    run = make_run(tmp_path, "run", max_steps=40, learning_rate=0.5, eval_every=1, patience=2, gradient_accumulation=1, lora_dropout=0.0)
    run.setup()
    run.train()
    manifest = run.save()
    evals = [m for m in run.state.metrics if "eval_loss" in m]
    best = min(evals, key=lambda m: m["eval_loss"])
    assert run.state.stopped_early and run.state.step < 40
    assert run.state.step == evals[-1]["step"] and run.state.step - best["step"] == 2
    assert manifest["training"]["adapter_step"] == best["step"]
    assert manifest["results"]["final_eval_loss"] == pytest.approx(best["eval_loss"], abs=1e-6)
    saved = load_file(str(run.output / "adapter_model.safetensors"))
    assert len(saved) == len(run.best_lora)
    run.cleanup()
